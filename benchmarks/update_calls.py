"""The per-step update call by call, as a training loop makes it: every call timed on its own,
against numpy's two scatters of the same ids, in one process.

    python benchmarks/update_calls.py --size 1e8 --ids 4096                # calls back to back
    python benchmarks/update_calls.py --size 1e8 --ids 4096 --step-ms 20   # a step's work between calls
    python benchmarks/update_calls.py --size 1e7 --ids 4096 --busy 1       # beside a busy core

A call of fewer than 2^16 ids goes to the store's log, and the log is written into the records
when it holds 2^18 entries (csrc/core/update_log.h): every 64th call of 4096 ids pays for that. The
three update ways share one store and differ in how a call that fills the log applies it: the
automatic choice between one thread and all (csrc/core/parallel.h), or each forced; `applied the
log` says how many of a way's calls did, and what the log holds at the end is applied and counted
in the automatic choice's mean (none is left when 3 x calls x ids is a multiple of 2^18, as with
the defaults).

The ways run in blocks of --block calls, in carry-over balanced orders (timing.py), so that the
machine's drift falls on all of them alike. Between two calls, --step-ms of pure-Python work keeps
the main thread busy, as a training step's forward and backward pass would (the other threads, if
any, go idle meanwhile). Prints, for each way, its calls, how many applied the log, how many of
those ran threaded, the median, mean and 90th percentile of one call, and numpy's mean over the
way's mean (above 1: faster than numpy). Two more numpy ways frame it: `records[6 * ids] += loss`
over an array of 24 bytes a sample reads each record before it writes it, as the update must (its
running mean needs the old one), where the two scatters only store; and adding 1 to a one-element
array is what any call costs at that moment, the floor under the others (after a step's work it is
not zero).
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


UPDATE_WAYS = ("AUTO", "SERIAL", "THREADED")


def run(size: int, ids_per_call: int, calls: int, block: int, step_s: float):
    rng = np.random.default_rng(0)
    store = Pruner(size, policy="infobatch", prune_ratio=0.7, seed=0).store
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
    per_call = {way: [] for way in WAYS}     # (seconds, applied the log, ran threaded)
    orders = carryover_balanced_orders(len(WAYS))
    done = {way: 0 for way in WAYS}
    r = 0
    while min(done.values()) < calls:
        for i in orders[r % len(orders)]:
            way = WAYS[i]
            for c in range(block):
                b = (done[way] + c) % len(batches)
                ids = batches[b]
                if way in UPDATE_WAYS:
                    _C.set_parallel_mode(getattr(_C.ParallelMode, way))
                    pending, threaded_before = store._core.pending, threaded_calls(ids_per_call, size)
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
                if way in UPDATE_WAYS:
                    applied = store._core.pending < pending + ids_per_call
                    # a forced way bypasses the clocks: all threads run whatever applies the log
                    threaded = (applied and _C.get_num_threads() > 1 if way == "THREADED"
                                else threaded_calls(ids_per_call, size) > threaded_before)
                    per_call[way].append((elapsed, applied, threaded))
                else:
                    per_call[way].append((elapsed, False, False))
                if step_s:
                    step_work(step_s)
            done[way] += block
        r += 1
    _C.set_parallel_mode(_C.ParallelMode.AUTO)
    t0 = time.perf_counter()
    store.settle()                # what the log still holds, applied by the automatic choice and counted there
    return per_call, {"AUTO": time.perf_counter() - t0}


def threaded_calls(ids_per_call: int, size: int) -> int:
    """Calls the update's clocks ran on all threads so far: a call's own size, and the log's."""
    return sum(_C._update_clock_state(count, size)["calls_all"] for count in (ids_per_call, _C.UPDATE_LOG_ENTRIES))


def summary(per_call: dict, finish: dict, size: float, ids_per_call: int) -> list:
    numpy_mean = statistics.mean(t for t, _, _ in per_call["numpy"])
    rows = []
    for way in WAYS:
        times = np.array([t for t, _, _ in per_call[way]]) * 1e6
        applied = sum(a for _, a, _ in per_call[way])
        threaded = sum(th for _, _, th in per_call[way])
        mean = (times.sum() + finish.get(way, 0.0) * 1e6) / len(times)
        name = {"AUTO": "update, automatic choice", "SERIAL": "update, one thread", "THREADED": "update, all threads",
                "numpy": "numpy, 2 scatters", "numpy_rmw": "numpy, read-modify-write of 24-byte records",
                "floor": "numpy, add to a 1-element array"}[way]
        rows.append((f"{size:.0e}", ids_per_call, name, len(times), applied if way in UPDATE_WAYS else "",
                     threaded if way in UPDATE_WAYS else "", f"{np.median(times):.0f} us", f"{mean:.0f} us",
                     f"{np.percentile(times, 90):.0f} us", f"{numpy_mean * 1e6 / mean:.2f}x"))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=float, default=1e7, help="samples in the store")
    parser.add_argument("--ids", type=int, nargs="+", default=[4096], help="ids per update call")
    parser.add_argument("--calls", type=int, default=1024, help="timed calls per way")
    parser.add_argument("--block", type=int, default=20, help="calls of one way in a row")
    parser.add_argument("--step-ms", type=float, default=0.0, help="milliseconds of Python work between calls")
    parser.add_argument("--busy", type=int, default=0, help="cores kept busy meanwhile (see load.py)")
    parser.add_argument("--load", choices=KINDS, default="spin")
    args = parser.parse_args(argv)
    size = int(args.size)
    print(f"# emp_data update call by call: N={size:.0e}, {args.calls} calls a way in blocks of {args.block}, "
          f"{args.step_ms:g} ms of work between calls, {_C.get_num_threads()} threads; load: "
          f"{f'{args.busy} {args.load}' if args.busy else 'none'}")
    print("| N | ids | way | calls | applied the log | threaded | median | mean | p90 | numpy mean / mean |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with busy(args.busy, args.load):
        for ids in args.ids:
            per_call, finish = run(size, ids, args.calls, args.block, args.step_ms / 1e3)
            for row in summary(per_call, finish, size, ids):
                print("| " + " | ".join(str(c) for c in row) + " |", flush=True)


if __name__ == "__main__":
    main()
