"""The per-step update call by call, as a training loop makes it: every call timed on its own, the
automatic choice between one thread and all (csrc/core/parallel.h) against each way forced and
against numpy's two scatters of the same ids, in one process.

    python benchmarks/update_calls.py --size 1e8 --ids 4096                # calls back to back
    python benchmarks/update_calls.py --size 1e8 --ids 4096 --step-ms 20   # a step's work between calls
    python benchmarks/update_calls.py --size 1e7 --ids 4096 --busy 1       # beside a busy core

The ways run in blocks of --block calls, in carry-over balanced orders (timing.py), so that the
machine's drift falls on all of them alike. Between two calls, --step-ms of pure-Python work keeps
the main thread busy, as a training step's forward and backward pass would (the other threads, if
any, go idle meanwhile). Prints, for each way, its calls, how many ran threaded, the median, mean
and 90th percentile of one call, and numpy's mean over the way's mean (above 1: faster than numpy);
then the automatic way's threaded calls alone. Two more numpy ways frame it: `records[6 * ids] +=
loss` over an array of 24 bytes a sample reads each record before it writes it, as the update must
(its running mean needs the old one), where the two scatters only store; and adding 1 to a
one-element array is what any call costs at that moment, the floor under the others (after a
step's work it is not zero).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from emp_data import Pruner, _C
from load import KINDS, busy
from timing import carryover_balanced_orders

WAYS = ("AUTO", "SERIAL", "THREADED", "numpy", "numpy_rmw", "floor")


def step_work(seconds: float) -> None:
    """Keeps this thread busy for `seconds` in Python (holding the GIL, like a step's Python side)."""
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        for i in range(200):
            x += i


def run(size: int, ids_per_call: int, calls: int, block: int, step_s: float) -> dict:
    rng = np.random.default_rng(0)
    pruner = Pruner(size, policy="infobatch", prune_ratio=0.7, seed=0)
    store = pruner.store
    store.update(np.arange(size, dtype=np.int64), rng.gamma(2.0, 0.5, size).astype(np.float32),
                 rng.uniform(0, 1, size).astype(np.float32))   # every record written once: no first-touch faults
    np_loss, np_mem = np.zeros(size, np.float32), np.zeros(size, np.float32)
    np_loss[:] = 1.0
    np_mem[:] = 1.0
    records = np.ones(6 * size, np.float32)   # 24 bytes a sample, as the store's records
    batches = [rng.integers(0, size, ids_per_call, dtype=np.int64) for _ in range(64)]
    record_rows = [6 * ids for ids in batches]
    loss = rng.gamma(2.0, 0.5, ids_per_call).astype(np.float32)
    mem = rng.uniform(0, 1, ids_per_call).astype(np.float32)
    one = np.zeros(1)
    per_call = {way: [] for way in WAYS}     # (seconds, ran threaded, the call before it ran threaded or None)
    orders = carryover_balanced_orders(len(WAYS))
    done = {way: 0 for way in WAYS}
    r = 0
    while min(done.values()) < calls:
        for i in orders[r % len(orders)]:
            way = WAYS[i]
            if way in ("AUTO", "SERIAL", "THREADED"):
                _C.set_parallel_mode(getattr(_C.ParallelMode, way))
            previous_threaded = None    # the block's first call follows another way's block
            for c in range(block):
                b = (done[way] + c) % len(batches)
                ids = batches[b]
                before = _C._update_clock_state(ids_per_call, size)["calls_all"]
                t0 = time.perf_counter()
                if way == "numpy":
                    np_loss[ids] = loss
                    np_mem[ids] = mem
                elif way == "numpy_rmw":
                    records[record_rows[b]] += loss
                elif way == "floor":
                    np.add(one, 1.0, out=one)
                else:
                    store.update(ids, loss, mem)
                elapsed = time.perf_counter() - t0
                threaded = way == "THREADED" or _C._update_clock_state(ids_per_call, size)["calls_all"] > before
                per_call[way].append((elapsed, threaded, previous_threaded))
                previous_threaded = threaded
                if step_s:
                    step_work(step_s)
            done[way] += block
        r += 1
    _C.set_parallel_mode(_C.ParallelMode.AUTO)
    return per_call


def summary(per_call: dict, size: float, ids_per_call: int) -> list:
    numpy_mean = statistics.mean(t for t, _, _ in per_call["numpy"])
    rows = []
    for way in WAYS:
        times = np.array([t for t, _, _ in per_call[way]]) * 1e6
        threaded = sum(th for _, th, _ in per_call[way])
        name = {"AUTO": "update, automatic choice", "SERIAL": "update, one thread", "THREADED": "update, all threads",
                "numpy": "numpy, 2 scatters", "numpy_rmw": "numpy, read-modify-write of 24-byte records",
                "floor": "numpy, add to a 1-element array"}[way]
        rows.append((f"{size:.0e}", ids_per_call, name, len(times), threaded, f"{np.median(times):.0f} us",
                     f"{times.mean():.0f} us", f"{np.percentile(times, 90):.0f} us",
                     f"{numpy_mean * 1e6 / times.mean():.2f}x"))
    auto = per_call["AUTO"]
    for label, keep in (("after a threaded call", True), ("after a one-thread call", False)):
        times = [t * 1e6 for t, th, prev in auto if th and prev is keep]
        if times:
            rows.append((f"{size:.0e}", ids_per_call, f"automatic, its threaded calls {label}", len(times), len(times),
                         f"{statistics.median(times):.0f} us", f"{statistics.mean(times):.0f} us", "", ""))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=float, default=1e7, help="samples in the store")
    parser.add_argument("--ids", type=int, nargs="+", default=[4096], help="ids per update call")
    parser.add_argument("--calls", type=int, default=1200, help="timed calls per way")
    parser.add_argument("--block", type=int, default=20, help="calls of one way in a row")
    parser.add_argument("--step-ms", type=float, default=0.0, help="milliseconds of Python work between calls")
    parser.add_argument("--busy", type=int, default=0, help="cores kept busy meanwhile (see load.py)")
    parser.add_argument("--load", choices=KINDS, default="spin")
    args = parser.parse_args(argv)
    size = int(args.size)
    print(f"# emp_data update call by call: N={size:.0e}, {args.calls} calls a way in blocks of {args.block}, "
          f"{args.step_ms:g} ms of work between calls, {_C.get_num_threads()} threads; load: "
          f"{f'{args.busy} {args.load}' if args.busy else 'none'}")
    print("| N | ids | way | calls | threaded | median | mean | p90 | numpy mean / mean |")
    print("|---|---|---|---|---|---|---|---|---|")
    with busy(args.busy, args.load):
        for ids in args.ids:
            for row in summary(run(size, ids, args.calls, args.block, args.step_ms / 1e3), size, ids):
                print("| " + " | ".join(str(c) for c in row) + " |", flush=True)


if __name__ == "__main__":
    main()
