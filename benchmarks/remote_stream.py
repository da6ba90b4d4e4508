"""Pruned streams over HTTP against plain WebDataset, with an object-store-like latency and bandwidth.

    python benchmarks/remote_stream.py                       # 20 ms per request, 200 MB/s
    python benchmarks/remote_stream.py --latency-ms 50 --bandwidth-mbs 100

Shards are written to a temp dir and served by a loopback HTTP server in its own process
(tests/helpers/_http_server.py: Range requests, bytes counted server-side) that waits `latency` before
answering each request and sends at most `bandwidth` over all its connections together. Two shard sets: 100 KB samples (image-sized) and 1 KiB samples. For each: one
epoch of plain `wds.WebDataset(http urls)` (webdataset's curl reader), of PrunedIterableDataset
without an index (the whole shards are streamed), and with an index at r = 0, 0.5, 0.7, 0.9
(policy `random`: exactly (1-r)N kept), and at r = 0.7 without the tar-header check (its cost).
Prints epoch time, the bytes the server sent beside the bytes the stream says it received
(`bytes_read`), against plain; once for a server with Range and ETag and once for one that ignores
Range and sends only Last-Modified, as `python -m http.server` does.
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import tarfile
import tempfile
import time

import numpy as np
import webdataset as wds

from emp_data import Pruner  # noqa: E402
from emp_data.webdataset import remote  # noqa: E402
from emp_data.webdataset import PrunedIterableDataset, build_index  # noqa: E402


def write_shards(folder, name, samples, per_shard, payload):
    rng = np.random.default_rng(0)
    blob = rng.bytes(payload)
    names = []
    for s in range(0, samples, per_shard):
        shard = f"{name}-{s // per_shard:04d}.tar"
        with tarfile.open(os.path.join(folder, shard), "w") as tar:
            for i in range(s, min(samples, s + per_shard)):
                for ext, data in (("bin", blob), ("cls", str(i % 10).encode())):
                    info = tarfile.TarInfo(f"{i:08d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        names.append(shard)
    return names


SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "helpers", "_http_server.py")


class Server:
    """tests/helpers/_http_server.py in a process of its own (so the client's threads do not share a GIL with
    it), with its byte and request counts read over HTTP."""

    def __init__(self, folder, latency_ms, bandwidth_mbs, simple=False):
        import subprocess

        self.proc = subprocess.Popen([sys.executable, SERVER, folder, "--latency-ms", str(latency_ms),
                                      "--bandwidth-mbs", str(bandwidth_mbs)] + (["--simple"] if simple else []),
                                     stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()

    def _stats(self, what):
        import json

        return json.loads(remote.http_get(f"{self.url}/{what}").body)

    def reset_counts(self):
        self._stats("__reset__")

    def counts(self):
        stats = self._stats("__stats__")
        return stats["bytes"], stats["gets"]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def timed(server, make_iterable):
    """(seconds, samples, bytes the server sent, GETs, bytes the stream says it received or None)."""
    iterable = make_iterable()
    before = getattr(iterable, "bytes_read", None)
    server.reset_counts()
    t0 = time.perf_counter()
    count = sum(1 for _ in iterable)
    seconds = time.perf_counter() - t0
    received = None if before is None else iterable.bytes_read - before     # this pass only
    return (seconds, count, *server.counts(), received)


def run_set(folder, server, name, samples, per_shard, payload, ratios):
    if not os.path.exists(os.path.join(folder, f"{name}-0000.tar")):
        write_shards(folder, name, samples, per_shard, payload)
    shards = sorted(f for f in os.listdir(folder) if f.startswith(f"{name}-") and f.endswith(".tar"))
    urls = [f"{server.url}/{s}" for s in shards]
    shard_bytes = sum(os.path.getsize(os.path.join(folder, s)) for s in shards)
    t0 = time.perf_counter()
    server.reset_counts()
    build_index(urls, out=os.path.join(folder, f"{name}.empidx"), progress=False)
    index_s = time.perf_counter() - t0
    index_bytes = server.counts()[0]
    rows = []
    base = timed(server, lambda: wds.WebDataset(urls, shardshuffle=False))
    rows.append(("plain wds.WebDataset(http urls)", "-", *base))

    def pruned(ratio, index):
        pruner = Pruner(samples, policy="random", prune_ratio=ratio, seed=1)
        key_table = None if index else os.path.join(folder, f"{name}-{ratio}-{server.url.rsplit(':', 1)[1]}.keys")
        stream = PrunedIterableDataset(urls, pruner, index=index, key_table=key_table)
        if index is None:     # number every sample first: the timed epoch is a pruned one
            stream.set_epoch(0)
            sum(1 for _ in stream)
            pruner.store.update(np.arange(samples), np.ones(samples, np.float32))
        stream.set_epoch(1)
        return stream

    streamed = pruned(0.7, None)          # its numbering pass is not timed
    rows.append(("PrunedIterableDataset, no index", 0.7, *timed(server, lambda: streamed)))
    for ratio in ratios:
        stream = pruned(ratio, os.path.join(folder, f"{name}.empidx"))
        rows.append(("PrunedIterableDataset, index", ratio, *timed(server, lambda: stream)))
    unchecked = pruned(0.7, os.path.join(folder, f"{name}.empidx"))
    unchecked.check_headers = False          # the tar-header check's cost, measured against this row
    rows.append(("index, no tar-header check", 0.7, *timed(server, lambda: unchecked)))
    print(f"\n## {name}: {samples} samples of {payload} B in {len(shards)} shards, {shard_bytes / 1e6:.1f} MB; "
          f"build_index over http: {index_s:.2f} s, {index_bytes / shard_bytes:.2f}x the shard bytes sent")
    print("| stream | r | samples | epoch s | MB sent (server) | MB received (bytes_read) | requests | time / plain "
          "| sent / shard bytes |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, ratio, seconds, count, served, gets, received in rows:
        got = "-" if received is None else f"{received / 1e6:.1f}"
        print(f"| {label} | {ratio} | {count} | {seconds:.2f} | {served / 1e6:.1f} | {got} | {gets} | "
              f"{seconds / base[0]:.2f}x | {served / shard_bytes:.2f} |", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--bandwidth-mbs", type=float, default=200.0)
    ap.add_argument("--large-samples", type=int, default=800)
    ap.add_argument("--small-samples", type=int, default=40000)
    args = ap.parse_args(argv)
    print(f"# remote_stream: loopback HTTP, {args.latency_ms:g} ms per request, {args.bandwidth_mbs:g} MB/s; "
          f"{platform.machine()}, {os.cpu_count()} cores")
    ratios = (0.0, 0.5, 0.7, 0.9)
    with tempfile.TemporaryDirectory() as folder:
        for simple in (False, True):
            kind = "a server that ignores Range (200, whole file; no ETag), as python -m http.server" if simple \
                else "a server with Range and ETag"
            print(f"\n# {kind}")
            with Server(folder, args.latency_ms, args.bandwidth_mbs, simple=simple) as server:
                run_set(folder, server, "large", args.large_samples, 100, 100_000, ratios)
                run_set(folder, server, "small", args.small_samples, 5000, 1024, ratios)
    return 0


if __name__ == "__main__":
    sys.exit(main())
