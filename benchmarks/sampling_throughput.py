"""Sampling throughput of emp_data's C++ core against baselines measured in the same run.

    python benchmarks/sampling_throughput.py            # N = 1e6 and 1e7
    python benchmarks/sampling_throughput.py --large    # adds N = 1e8
    python benchmarks/sampling_throughput.py --device cuda   # GPU kernels (EMP_DATA_CUDA=1 build), N = 1e7 and 1e8
    python benchmarks/sampling_throughput.py --busy 1   # the same while one process keeps a core busy
    python benchmarks/sampling_throughput.py --busy 2 --load decode   # ... while 2 DataLoader workers decode
    python benchmarks/sampling_throughput.py --big 5e8 --big-dir /data   # a 12 GB memory-mapped store

Baselines: the InfoBatch and SeTa reference `prune()`s (their own code, written out below), the same
rules vectorised in numpy (np.argpartition for top-k, exponential keys for weighted), and
torch.multinomial(replacement=False). Times are the median of --repeat runs after one untimed
warm-up call (the InfoBatch reference and torch.multinomial run once: they take seconds). Prints a markdown table with ratios (baseline / ours).
"""
from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

import emp_data
from emp_data import Pruner, _C, sample_without_replacement
from load import KINDS, busy, stream_read_floor
from timing import interleaved, paired, timeit
from throughput_baselines import (InfoBatchReference, numpy_infobatch, numpy_scatters, numpy_topk, numpy_update,
                                  numpy_weighted, seta_reference)

PRUNE_RATIO = 0.7
KEEP = 1 - PRUNE_RATIO


# --------------------------------------------------------------------------- timing
def in_mode(mode: str, fn):
    """fn run with the store's parallel mode forced to `mode` (AUTO: the library's own choice)."""
    def run():
        _C.set_parallel_mode(getattr(_C.ParallelMode, mode))
        try:
            fn()
        finally:
            _C.set_parallel_mode(_C.ParallelMode.AUTO)
    return run


def update_clocks(size: int, n: int) -> dict:
    """The update's one-thread and all-thread call counts for `size`-id calls and for applying the
    log (a log applied at a read holds fewer entries; the full log's class is where most land)."""
    states = [_C._update_clock_state(count, n) for count in {size, _C.UPDATE_LOG_ENTRIES}]
    return {key: sum(st[key] for st in states) for key in ("calls_one", "calls_all")}


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def selecting(pruner):
    """A call that selects a new epoch each time. Pruner.select(e) for the epoch already selected
    only rebuilds its kept ids from the stored weights (resume), which would time the gather and
    shuffle, not the selection."""
    epochs = itertools.count(1)
    return lambda: pruner.select(next(epochs))


def fmt_time(s):
    return f"{s * 1e3:.1f} ms" if s < 10 else f"{s:.1f} s"


def run(n, repeat, rows, skip_reference):
    rng = np.random.default_rng(0)
    loss = rng.gamma(2.0, 0.5, n).astype(np.float32)
    mem = rng.uniform(0, 1, n).astype(np.float32)
    k = round(KEEP * n)

    before = rss_bytes()
    pruner = Pruner(n, policy="infobatch", prune_ratio=PRUNE_RATIO, seed=0)
    store_bytes = rss_bytes() - before
    rows.append((n, "store memory", f"{store_bytes / n:.1f} B/sample (nbytes {pruner.store.nbytes / n:.0f})",
                 "-", "-", "-"))

    # update: one call with every id once, in random order (scatter-bound), and 4096-id batches
    ids = rng.permutation(n).astype(np.int64)
    t_upd = timeit(lambda: pruner.store.update(ids, loss, mem), repeat)
    np_loss, np_mean, np_var = (np.zeros(n, np.float32) for _ in range(3))
    t_np_upd = timeit(lambda: numpy_update(np_loss, np_mean, np_var, ids, loss[ids]), repeat)
    rows.append((n, "update (N random ids, 1 call)", fmt_time(t_upd), f"{n / t_upd / 1e6:.0f} M ids/s",
                 f"numpy {fmt_time(t_np_upd)}", f"{t_np_upd / t_upd:.1f}x"))
    # The memory system's floor for random ids: one 4-byte store per id, nothing else.
    vals_perm = loss[ids]
    t_floor = timeit(lambda: np_loss.__setitem__(ids, vals_perm), repeat)
    rows.append((n, "", "", "", f"floor: numpy loss[ids] = v, 1 field, {n / t_floor / 1e6:.0f} M ids/s",
                 f"{t_floor / t_upd:.1f}x"))
    # The per-step path: batches of 4096 and 32768 ids (one DDP step gathers world x batch ids)
    # against numpy scattering the same ids into two float32 arrays.
    np_mem = np.zeros(n, np.float32)
    for size in (4096, 32768):
        count = max(1, min(n, 2_000_000) // size)
        batches = [ids[i * size:(i + 1) * size] for i in range(count)]
        vals, mems = [loss[b] for b in batches], [mem[b] for b in batches]
        m = sum(len(b) for b in batches)

        def batched():
            for b, v, mm in zip(batches, vals, mems):
                pruner.store.update(b, v, mm)
            pruner.store.settle()   # what the update log still holds, applied: every entry is counted

        def batched_np():
            for b, v, mm in zip(batches, vals, mems):
                numpy_scatters(np_loss, np_mem, b, v, mm)

        # The automatic choice, each way alone and numpy, passes interleaved so that the machine's
        # state (load, pages the kernel collapses into huge pages meanwhile) weighs on all alike.
        # (the clocks time what applies the update log, whatever the log held, and calls of 2^16 ids or more)
        clock_before = update_clocks(size, n)
        ways = {mode: in_mode(mode, batched) for mode in ("AUTO", "SERIAL", "THREADED")}
        times = interleaved({**ways, "numpy": batched_np}, repeat)
        clock = update_clocks(size, n)
        auto_threaded = clock["calls_all"] - clock_before["calls_all"]
        auto_calls = auto_threaded + clock["calls_one"] - clock_before["calls_one"]
        t_b, t_bn = times["AUTO"], times["numpy"]
        rows.append((n, f"update ({size}-id batches)", f"{t_b / count * 1e6:.0f} us/batch", f"{m / t_b / 1e6:.0f} M ids/s",
                     f"numpy 2 scatters {t_bn / count * 1e6:.0f} us/batch", f"{t_bn / t_b:.2f}x"))
        log_clock = _C._update_clock_state(_C.UPDATE_LOG_ENTRIES, n)
        rows.append((n, "", f"one thread {times['SERIAL'] / count * 1e6:.0f} us, all threads "
                            f"{times['THREADED'] / count * 1e6:.0f} us; auto applied the log {auto_calls} "
                            f"times, {auto_threaded} threaded (its clock: one thread "
                            f"{log_clock['cost_one'] * 1e9:.0f} ns/entry, all {log_clock['cost_all'] * 1e9:.0f})",
                     "", "", ""))

    # The stream-read floor: reading the store's 24 bytes per sample once, with every core.
    t_floor = stream_read_floor(np.ones(pruner.store.nbytes // 8, np.uint64))
    rows.append((n, "stream-read floor (24 B/sample)", fmt_time(t_floor),
                 f"{pruner.store.nbytes / t_floor / 1e9:.1f} GB/s", "-", "-"))

    def vs_floor(t):
        return f"{t / t_floor:.1f}x"

    # infobatch select
    w_out = np.ones(n, np.float32)
    t_ib, t_np = paired(selecting(pruner), lambda: numpy_infobatch(loss, KEEP, rng, w_out), repeat)
    if skip_reference:
        ref_cell, ref_ratio = "skipped", "-"
    else:
        np.random.seed(0)
        ref = InfoBatchReference(loss, KEEP)
        t_ref = timeit(ref.prune, 1, warmup=False)
        ref_cell, ref_ratio = f"InfoBatch ref {fmt_time(t_ref)}", f"{t_ref / t_ib:.0f}x"
    rows.append((n, "select infobatch", fmt_time(t_ib), f"{pruner.kept_count() / n:.2f} kept", ref_cell, ref_ratio,
                 vs_floor(t_ib)))
    rows.append((n, "", "", "", f"numpy {fmt_time(t_np)}", f"{t_np / t_ib:.1f}x"))

    # other policies
    for policy, options in [("random", {}), ("epsilon_greedy", {"epsilon": 0.1}), ("ucb", {}),
                            ("emp", {"beta": 1.0}), ("emp", {"beta": 1.0, "mode": "topk"}), ("weighted", {})]:
        p = Pruner(n, policy=policy, prune_ratio=PRUNE_RATIO, store=pruner.store, **options)
        label = f"select {policy}" + (" topk" if options.get("mode") == "topk" else "")
        scores = p.scores()
        if policy in ("ucb", "epsilon_greedy") or options.get("mode") == "topk":
            name, baseline = "numpy argpartition", lambda: numpy_topk(scores, k, rng)
        elif policy == "random":
            name, baseline = "numpy choice", lambda: rng.choice(n, k, replace=False)
        elif policy == "weighted":
            name, baseline = "numpy exp-keys", lambda: numpy_weighted(loss.astype(np.float64), k, rng)
        else:
            name, baseline = "numpy", lambda: numpy_infobatch(scores, KEEP, rng, w_out)
        t, tb = paired(selecting(p), baseline, repeat)
        base = f"{name} {fmt_time(tb)}"
        rows.append((n, label, fmt_time(t), f"{p.kept_count() / n:.2f} kept", base, f"{tb / t:.1f}x", vs_floor(t)))

    # RS2 sweep: the next k of a seeded permutation; numpy draws one permutation per pass of ceil(N/k)
    # epochs and slices it, so its cost per epoch is a permutation over the pass's epochs.
    p = Pruner(n, policy="sweep", prune_ratio=PRUNE_RATIO, store=pruner.store)
    per_pass = -(-n // k)
    t, tb = paired(selecting(p), lambda: rng.permutation(n)[:k], repeat)
    tb /= per_pass
    rows.append((n, "select sweep", fmt_time(t), f"{p.kept_count() / n:.2f} kept",
                 f"numpy permutation / {per_pass} epochs {fmt_time(tb)}", f"{tb / t:.1f}x", vs_floor(t)))

    # SeTa: against its reference prune() (sklearn KMeans and a Python loop over the subset), run once.
    p = Pruner(n, policy="seta", prune_ratio=PRUNE_RATIO, store=pruner.store)
    t = timeit(selecting(p), repeat)
    if skip_reference:
        ref_cell, ref_ratio = "skipped", "-"
    else:
        t_ref = timeit(lambda: seta_reference(loss, KEEP, 1), 1, warmup=False)
        ref_cell, ref_ratio = f"SeTa ref {fmt_time(t_ref)}", f"{t_ref / t:.0f}x"
    rows.append((n, "select seta", fmt_time(t), f"{p.kept_count() / n:.2f} kept", ref_cell, ref_ratio, vs_floor(t)))

    # max_gap: what forcing idle samples in costs an exact-budget soft rule (the same rule without it
    # as the baseline); idle counts come from the epochs the timing itself selects.
    plain = Pruner(n, policy="infobatch", prune_ratio=PRUNE_RATIO, store=pruner.store, exact_budget=True)
    gapped = Pruner(n, policy="infobatch", prune_ratio=PRUNE_RATIO, store=pruner.store, exact_budget=True, max_gap=4)
    # (Not interleaved: both write the one store's idle counts, which decide what max_gap forces.)
    t_plain = timeit(selecting(plain), repeat)
    t_gap = timeit(selecting(gapped), repeat)
    rows.append((n, "select infobatch exact, max_gap=4", fmt_time(t_gap),
                 f"{gapped.stats()['forced'] / n:.2f} forced", f"without max_gap {fmt_time(t_plain)}",
                 f"{t_plain / t_gap:.1f}x", vs_floor(t_gap)))

    # top-k before any score is known (epoch 0): every rank key ties in its top 32 bits, the hard
    # case for the radix selection (more histogram passes before the boundary bin is small)
    fresh = Pruner(n, policy="ucb", prune_ratio=PRUNE_RATIO, seed=0)
    zeros = np.zeros(n, np.float32)
    t, tb = paired(selecting(fresh), lambda: numpy_topk(zeros, k, rng), repeat)
    rows.append((n, "select ucb, nothing seen yet", fmt_time(t), f"{fresh.kept_count() / n:.2f} kept",
                 f"numpy argpartition {fmt_time(tb)}", f"{tb / t:.1f}x", vs_floor(t)))

    # weighted sampling without replacement
    w64 = loss.astype(np.float64)
    t_swr = timeit(lambda: sample_without_replacement(w64, k, seed=1), repeat)
    if n <= 2**24:
        wt = torch.from_numpy(loss)
        t_mult = timeit(lambda: torch.multinomial(wt, k, replacement=False), 1, warmup=False)
        base, ratio = f"torch.multinomial {fmt_time(t_mult)}", f"{t_mult / t_swr:.1f}x"
    else:
        base, ratio = "torch.multinomial refuses > 2^24", "-"
    rows.append((n, "sample_without_replacement", fmt_time(t_swr), f"k={k}", base, ratio))
    t_npw = timeit(lambda: numpy_weighted(w64, k, rng), repeat)
    rows.append((n, "", "", "", f"numpy exp-keys {fmt_time(t_npw)}", f"{t_npw / t_swr:.1f}x"))


# --------------------------------------------------------------------------- GPU path
def cuda_time(fn, repeat):
    """Median GPU time of fn() in seconds (CUDA events), after one untimed warm-up."""
    fn()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def run_cuda(n, repeat, rows):
    """update and select on the GPU against the same operations written with torch ops."""
    from emp_data.selection import policies
    from emp_data.store.cuda import CudaScoreStore

    dev = torch.device("cuda")
    store = CudaScoreStore(n, dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    batch = 1 << 20
    ids = torch.randint(0, n, (batch,), device=dev, generator=gen)
    values = torch.rand(batch, device=dev, generator=gen) * 3
    store.update(torch.arange(n, device=dev), torch.rand(n, device=dev, generator=gen) * 3)   # every sample seen
    loss_t, mean_t, var_t = (store.stats[:, i].contiguous() for i in (0, 2, 3))

    def torch_update():
        m = mean_t[ids]
        d = values - m
        mean_t[ids] = m + 0.2 * d
        var_t[ids] = 0.8 * (var_t[ids] + 0.2 * d * d)
        loss_t[ids] = values

    t_ours = cuda_time(lambda: store.update(ids, values), repeat)
    t_base = cuda_time(torch_update, repeat)
    rows.append((n, f"update (batch {batch:,}) [cuda]", fmt_time(t_ours), f"{batch / t_ours / 1e6:,.0f} M ids/s",
                 f"torch index ops {fmt_time(t_base)}", f"{t_base / t_ours:.1f}x"))

    keep = 1 - PRUNE_RATIO
    scores = loss_t

    def torch_infobatch():
        hard = scores >= scores.mean()
        kept = hard | (torch.rand(n, device=dev, generator=gen) < keep)
        w = torch.where(hard, 1.0, 1 / keep) * kept
        sel = kept.nonzero().squeeze(1)
        return sel[torch.randperm(sel.numel(), device=dev, generator=gen)], w

    k = round(keep * n)

    def shuffled(sel):
        return sel[torch.randperm(sel.numel(), device=dev, generator=gen)]

    def torch_weighted():   # exponential keys log(u)/w: the k largest, 1/pi weights at the (k+1)-th key, shuffled
        keys = torch.log(torch.rand(n, device=dev, generator=gen)) / scores
        top = torch.topk(keys, k + 1, sorted=False)
        tau = -top.values.min()
        sel = top.indices[top.values > -tau]
        sel = shuffled(sel)
        return sel, 1.0 / -torch.expm1(-scores[sel] * tau)

    def torch_topk():   # the k best, shuffled, weight 1
        sel = shuffled(torch.topk(scores, k, sorted=False).indices)
        return sel, torch.ones(k, device=dev)

    # Exact budget at r = 0.3: at 0.7 the hard half of these uniform scores alone exceeds the budget.
    k_exact = round(0.7 * n)

    def torch_exact_budget():   # every hard sample, then a uniform draw of the rest among the soft ones
        hard = scores >= scores.mean()
        soft = (~hard).nonzero().squeeze(1)
        m = k_exact - int(hard.sum())
        pick = soft[torch.randperm(soft.numel(), device=dev, generator=gen)[:m]]
        sel = torch.cat([hard.nonzero().squeeze(1), pick])
        return sel[torch.randperm(sel.numel(), device=dev, generator=gen)]

    cases = [("infobatch", policies.InfoBatch().config(PRUNE_RATIO), torch_infobatch, "masking + randperm"),
             ("infobatch exact budget r=0.3", policies.InfoBatch(exact_budget=True).config(0.3), torch_exact_budget,
              "masking + randperm"),
             ("weighted", policies.Weighted().config(PRUNE_RATIO), torch_weighted,
              "exp-keys + torch.topk + randperm"),
             ("ucb (top-k)", policies.UCB().config(PRUNE_RATIO), torch_topk, "torch.topk + randperm"),
             ("random", policies.Random().config(PRUNE_RATIO),
              (lambda: torch.multinomial(torch.ones(n, device=dev), k, replacement=False, generator=gen))
              if n <= 2**24 else (lambda: torch.randperm(n, device=dev, generator=gen)[:k]),
              "torch.multinomial" if n <= 2**24 else "torch.randperm[:k]")]
    for name, cfg, baseline, baseline_name in cases:
        epoch = iter(range(1, 10**6))
        # select_on_device: the kept ids (shuffled) and weights stay on the GPU, as the baselines' do.
        t_ours = cuda_time(lambda: store.select_on_device(cfg, 0, next(epoch), False), repeat)
        t_base = cuda_time(baseline, repeat)
        rows.append((n, f"select {name} [cuda]", fmt_time(t_ours), f"{n / t_ours / 1e9:.2f} G samples/s",
                     f"{baseline_name} {fmt_time(t_base)}", f"{t_base / t_ours:.1f}x"))
    # What Pruner.select adds on top: the kept ids and weights copied to host numpy arrays (samplers
    # read them there), here for the last case's selection.
    ids_d, w_d, _ = store.select_on_device(cases[-1][1], 0, 0, False)
    t_copy = cuda_time(lambda: (ids_d.cpu(), w_d.cpu()), repeat)
    nbytes = ids_d.numel() * 12
    rows.append((n, f"host copy of {ids_d.numel():,} kept ids + weights [cuda]", fmt_time(t_copy),
                 f"{nbytes / t_copy / 1e9:.1f} GB/s", "-", "-"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large", action="store_true", help="also run N = 1e8 (needs ~10 GB RAM)")
    ap.add_argument("--sizes", type=float, nargs="*", help="override the sample counts")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-reference", action="store_true", help="skip the slow InfoBatch reference prune()")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cuda: time the GPU kernels against torch ops on the GPU")
    ap.add_argument("--busy", type=int, default=0, metavar="K",
                    help="measure while K processes spin (--load spin) or a DataLoader's K workers decode")
    ap.add_argument("--load", choices=KINDS, default="spin")
    ap.add_argument("--big", type=float, default=None, metavar="N",
                    help="only the per-step update and a job's first four selects of three rules on a "
                         "memory-mapped store of N samples "
                         "(in --big-dir), no numpy baselines: the size one rank of a very large job holds")
    ap.add_argument("--big-dir", default=".")
    args = ap.parse_args(argv)
    if args.device == "cuda":
        return main_cuda(args)
    sizes = [int(s) for s in args.sizes] if args.sizes else [10**6, 10**7] + ([10**8] if args.large else [])
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"# emp_data {emp_data.__version__} sampling throughput: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, {emp_data.get_num_threads()} threads, prune_ratio {PRUNE_RATIO}")
    print(f"# command: python benchmarks/sampling_throughput.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"# load: {'none (idle machine)' if not args.busy else f'{args.busy} {args.load} process(es)'}; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    rows = []
    with busy(args.busy, args.load):
        if args.big:
            run_big(int(args.big), args.repeat, rows, args.big_dir)
        else:
            for n in sizes:
                run(n, args.repeat, rows, args.skip_reference or n > 10**7)
    print("| N | operation | emp_data | throughput | baseline | baseline / emp_data | emp_data / stream-read floor |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        cells = (f"{r[0]:.0e}",) + tuple(r[1:]) + ("",) * (7 - len(r))
        print("| " + " | ".join(str(c) if c != "" else " " for c in cells) + " |")


def run_big(n, repeat, rows, folder):
    """A memory-mapped store of n samples (24n bytes on disk): the per-step update and the first four
    selects of three rules, timed, with the stream-read floor of the same bytes; no numpy baselines
    (they would need as much memory again)."""
    path = os.path.join(folder, f"big_store_{n}.emp")
    rows = _Progress(rows)      # each row also goes to stderr as it is measured: the run is long
    t0 = time.perf_counter()
    pruner = Pruner(n, policy="infobatch", prune_ratio=PRUNE_RATIO, seed=0, store_path=path, overwrite=True)
    rows.append((n, "create memory-mapped store", fmt_time(time.perf_counter() - t0),
                 f"{pruner.store.nbytes / 1e9:.1f} GB file", "-", "-"))
    rng = np.random.default_rng(0)
    chunk = 1 << 24
    t0 = time.perf_counter()
    for lo in range(0, n, chunk):          # every sample seen once, in chunks (the file's first pass)
        ids = np.arange(lo, min(n, lo + chunk), dtype=np.int64)
        pruner.store.update(ids, rng.gamma(2.0, 0.5, len(ids)).astype(np.float32))
    rows.append((n, "first update of every sample (2^24-id chunks)", fmt_time(time.perf_counter() - t0), "-", "-", "-"))
    for size in (4096, 32768):
        batches = [rng.integers(0, n, size) for _ in range(200)]
        vals = rng.random(size, dtype=np.float32)
        t = timeit(lambda: ([pruner.store.update(b, vals) for b in batches], pruner.store.settle()),
                   repeat) / len(batches)
        rows.append((n, f"update ({size}-id batches)", f"{t * 1e6:.0f} us/batch", f"{size / t / 1e6:.3g} M ids/s", "-", "-"))
    t_floor = stream_read_floor(np.memmap(path, np.uint8, mode="r"), repeat=1)
    rows.append((n, "stream-read floor (the store file, page cache)", fmt_time(t_floor),
                 f"{pruner.store.nbytes / t_floor / 1e9:.1f} GB/s", "-", "-"))
    # A job's first selects, in order: the one-thread-or-all clock runs the first on all threads, tries
    # one thread on the second, all threads again on the third, and the faster way from the fourth.
    # The row's time is the fourth (the way the job keeps); the next row lists all four.
    for policy, options in [("infobatch", {}), ("ucb", {}), ("random", {})]:
        p = Pruner(n, policy=policy, prune_ratio=PRUNE_RATIO, store=pruner.store, **options)
        select = selecting(p)
        calls = [timeit(select, 1, warmup=False) for _ in range(4)]
        rows.append((n, f"select {policy}", fmt_time(calls[-1]), f"{p.kept_count() / n:.2f} kept", "-", "-",
                     f"{calls[-1] / t_floor:.1f}x"))
        rows.append((n, "", "a job's first 4 selects: " + ", ".join(fmt_time(t) for t in calls), "", "", ""))
    del pruner, p
    os.remove(path)


class _Progress:
    """`rows`, whose new rows also go to stderr as they are measured."""

    def __init__(self, rows):
        self.rows = rows

    def append(self, row):
        self.rows.append(row)
        print(f"# {time.strftime('%H:%M:%S')} {row}", file=sys.stderr, flush=True)


def main_cuda(args):
    from emp_data.store import cuda as emp_cuda

    if not emp_cuda.available():
        raise SystemExit("--device cuda needs a CUDA GPU and emp_data built with EMP_DATA_CUDA=1")
    sizes = [int(s) for s in args.sizes] if args.sizes else [10**7, 10**8]
    print(f"# emp_data {emp_data.__version__} GPU sampling throughput: {torch.cuda.get_device_name()}, "
          f"torch {torch.__version__}, prune_ratio {PRUNE_RATIO}; select times keep the kept ids on the GPU "
          "(the host copy that Pruner.select adds is its own row)")
    print(f"# command: python benchmarks/sampling_throughput.py {' '.join(sys.argv[1:])}".rstrip())
    rows = []
    for n in sizes:
        run_cuda(n, max(args.repeat, 5), rows)
    print("| N | operation | emp_data | throughput | baseline | baseline / emp_data |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in (f"{r[0]:.0e}",) + r[1:]) + " |")


if __name__ == "__main__":
    main()
