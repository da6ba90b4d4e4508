"""Stream throughput of PrunedIterableDataset against plain WebDataset, measured in one run.

    python benchmarks/stream_throughput.py                 # 200k samples x (1 KiB .npy + .cls)
    python benchmarks/stream_throughput.py --samples 50000

Writes the shards into a temp dir, then times (each after one untimed warm pass, so shards are in
the page cache): the index build; one epoch of plain `wds.WebDataset(urls).decode()`; and one epoch
of `PrunedIterableDataset` followed by the same `wds.decode()` stage, at prune ratios 0, 0.5, 0.7,
0.9 (policy `random`: exactly (1-r)N kept), with and without an index. Prints samples/s and epoch
time relative to plain WebDataset.
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import tarfile
import tempfile
import time

import numpy as np
import webdataset as wds

import emp_data
from emp_data import Pruner
from emp_data.webdataset import PrunedIterableDataset, build_index


def write_shards(folder, samples, per_shard):
    urls = []
    payload = io.BytesIO()
    np.save(payload, np.zeros(1024 // 4 - 32, dtype=np.float32))  # ~1 KiB .npy
    npy = payload.getvalue()
    for s in range(0, samples, per_shard):
        url = os.path.join(folder, f"shard-{s // per_shard:06d}.tar")
        with tarfile.open(url, "w") as tar:
            for i in range(s, min(samples, s + per_shard)):
                for ext, data in (("npy", npy), ("cls", str(i % 10).encode())):
                    info = tarfile.TarInfo(f"{i:09d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        urls.append(url)
    return urls


def epoch_time(make_iterable, repeat):
    list(make_iterable())  # warm: page cache, imports
    times, count = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        count = sum(1 for _ in make_iterable())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), count


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=200_000)
    ap.add_argument("--per-shard", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        urls = write_shards(tmp, args.samples, args.per_shard)
        shard_bytes = sum(os.path.getsize(u) for u in urls)
        print(f"# emp_data {emp_data.__version__} stream throughput: {platform.machine()}, {os.cpu_count()} cores; "
              f"{args.samples} samples in {len(urls)} shards, {shard_bytes / 2**20:.0f} MiB, written in "
              f"{time.perf_counter() - t0:.0f} s")
        print(f"# command: python benchmarks/stream_throughput.py {' '.join(sys.argv[1:])}".rstrip())
        index_path = os.path.join(tmp, "index.empidx")
        build_index(urls, out=index_path)   # warm
        builds = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            build_index(urls, out=index_path)
            builds.append(time.perf_counter() - t0)
        t_build = statistics.median(builds)

        def plain():
            return wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode()

        t_plain, n_plain = epoch_time(plain, args.repeat)
        rows = [("plain wds.WebDataset(...).decode()", "-", t_plain, n_plain)]
        for indexed in (False, True):
            for ratio in (0.0, 0.5, 0.7, 0.9):
                pruner = Pruner(args.samples, policy="full" if ratio == 0 else "random", prune_ratio=ratio, seed=0)

                def pruned():
                    ds = PrunedIterableDataset(urls, pruner, index=index_path if indexed else None,
                                               shuffle_shards=False)
                    return wds.DataPipeline(ds, wds.decode())

                t, n = epoch_time(pruned, args.repeat)
                rows.append((f"PrunedIterableDataset {'with' if indexed else 'without'} index + decode", ratio, t, n))
        # The tar-header check's cost (512 bytes read and compared in front of each member): r = 0.7
        # with an index, without it.
        pruner = Pruner(args.samples, policy="random", prune_ratio=0.7, seed=0)

        def unchecked():
            ds = PrunedIterableDataset(urls, pruner, index=index_path, shuffle_shards=False)
            ds.check_headers = False
            return wds.DataPipeline(ds, wds.decode())

        t, n = epoch_time(unchecked, args.repeat)
        rows.append(("PrunedIterableDataset with index + decode, no tar-header check", 0.7, t, n))
        print()
        print(f"index build: {t_build * 1e3:.0f} ms for {shard_bytes / 2**20:.0f} MiB = "
              f"{shard_bytes / t_build / 1e9:.2f} GB/s of shard bytes (page cache)")
        print()
        print("| stream | prune ratio | samples yielded | epoch time | samples/s | epoch time / plain |")
        print("|---|---|---|---|---|---|")
        for name, ratio, t, n in rows:
            print(f"| {name} | {ratio} | {n} | {t:.2f} s | {n / t:,.0f} | {t / t_plain:.2f}x |")


if __name__ == "__main__":
    main()
