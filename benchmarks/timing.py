"""Timing for the throughput benchmarks: medians of passes, and passes of several functions
interleaved so that a shared machine's drift, and what one pass leaves behind for the next, fall on
all of them alike.

    times = interleaved({"ours": ours, "numpy": baseline}, repeat=5)   # {name: median seconds}
"""
from __future__ import annotations

import statistics
import time


def carryover_balanced_orders(k: int) -> list:
    """Orders of range(k) in which each index follows every other equally often (a Williams design:
    k orders for even k, 2k for odd k). Rotating one order would not do: it keeps who follows whom."""
    first, low, high = [0], 1, k - 1
    while low <= high:
        first.append(low)
        low += 1
        if low <= high:
            first.append(high)
            high -= 1
    orders = [[(x + i) % k for x in first] for i in range(k)]
    return orders if k % 2 == 0 else orders + [order[::-1] for order in orders]


def interleaved(fns: dict, repeat: int) -> dict:
    """{name: median wall time} of `repeat` rounds that each call every fn once, after one untimed
    round, at least one round per order of a carry-over balanced design. Under load a pass right
    after an all-threads pass runs slower (the scheduler then favours the process that pass kept
    off its core), and every pass leaves the caches and the TLB holding its own arrays: what comes
    before a pass must fall on every fn alike."""
    names = list(fns)
    for fn in fns.values():
        fn()
    orders = carryover_balanced_orders(len(names))
    times = {name: [] for name in names}
    for r in range(max(repeat, len(orders))):
        for i in orders[r % len(orders)]:
            t0 = time.perf_counter()
            fns[names[i]]()
            times[names[i]].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def timeit(fn, repeat, warmup=True):
    """Median wall time of `repeat` calls, after one untimed call (first-touch page faults and
    cold caches belong to no steady-state epoch)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def paired(ours, baseline, repeat):
    """(our median, the baseline's median) from interleaved passes: a shared machine's speed drifts
    over minutes, and a baseline timed after ours would meet another machine."""
    times = interleaved({"ours": ours, "baseline": baseline}, repeat)
    return times["ours"], times["baseline"]
