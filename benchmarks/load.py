"""What a training job does to the cores while emp_data runs, for the throughput benchmarks: K
processes that spin, or a real DataLoader whose K workers decode compressed samples; and the
stream-read floor, the time to read an array once at the bandwidth the cores can draw.

    with busy(1, "spin"):        # one core taken, as a DataLoader worker decoding takes it
        ...time things...
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

KINDS = ("spin", "decode")


def _orphaned(parent: int) -> bool:
    """The benchmark that started this load is gone (killed): stop, rather than skew the next run."""
    return os.getppid() != parent


def _spin(stop, parent):
    x = 0
    while not stop.is_set() and not _orphaned(parent):
        for _ in range(100_000):
            x += 1


class _Compressed:
    """A map-style dataset whose samples are zlib-compressed float32 arrays (256 KiB raw): each
    __getitem__ inflates one and normalises it, as an image decoder's worker would."""

    def __init__(self):
        rng = np.random.default_rng(0)
        raw = np.round(rng.normal(size=65536), 2).astype(np.float32)
        self.blob = zlib.compress(raw.tobytes(), 6)

    def __len__(self):
        return 1 << 30

    def __getitem__(self, i):
        import torch

        x = np.frombuffer(zlib.decompress(self.blob), np.float32)
        return torch.from_numpy((x - x.mean()) / (x.std() + 1e-6))


def _decode(workers, stop, parent):
    import torch

    loader = torch.utils.data.DataLoader(_Compressed(), batch_size=8, num_workers=workers, prefetch_factor=4)
    for _ in loader:
        if stop.is_set() or _orphaned(parent):
            return


@contextlib.contextmanager
def busy(k: int, kind: str = "spin"):
    """K busy cores while the block runs: K spinning processes, or one DataLoader with K decoding
    workers (their parent only collects batches)."""
    if k <= 0:
        yield
        return
    if kind not in KINDS:
        raise ValueError(f"load kind must be one of {KINDS}, got {kind!r}")
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    procs = ([ctx.Process(target=_spin, args=(stop, os.getpid()), daemon=True) for _ in range(k)] if kind == "spin"
             else [ctx.Process(target=_decode, args=(k, stop, os.getpid()))])
    for p in procs:
        p.start()
    time.sleep(2.0 if kind == "decode" else 0.5)       # the workers are up and at work
    try:
        yield
    finally:
        stop.set()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()


def stream_read_floor(array: np.ndarray, threads: int | None = None, repeat: int = 3) -> float:
    """Seconds to read every byte of `array` once: a uint64 sum over it in `threads` contiguous
    chunks at once (numpy releases the GIL), the fastest of `repeat` after a warm-up. A scan that
    reads a store can go no faster; a selection's time over this is how far it is from the limit."""
    threads = threads or os.cpu_count() or 1
    words = array.reshape(-1).view(np.uint8)
    words = words[: len(words) // 8 * 8].view(np.uint64)
    chunks = np.array_split(words, threads)
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for i in range(repeat + 1):
            t0 = time.perf_counter()
            list(pool.map(np.add.reduce, chunks))
            if i:
                best = min(best, time.perf_counter() - t0)
    return best
