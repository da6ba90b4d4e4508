"""Shards over HTTP (a real server on the loopback interface, tests/helpers/_http_server.py) and pipe: urls:
the same samples as local shards, only kept bytes requested, retries and clear errors on faults."""
import io
import os
import shutil
import sys
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _http_server import ShardServer  # noqa: E402

from emp_data import Pruner
from emp_data.webdataset import range_reads, remote  # noqa: E402
from emp_data.webdataset import PrunedIterableDataset, build_index  # noqa: E402

SHARDS, PER_SHARD, PAYLOAD = 4, 10, 100_000     # image-sized samples: pruned ones are never requested


def write_shards(folder, payload=PAYLOAD):
    rng = np.random.default_rng(0)
    for s in range(SHARDS):
        with tarfile.open(os.path.join(folder, f"r-{s}.tar"), "w") as tar:
            for i in range(PER_SHARD):
                for ext, data in (("bin", rng.bytes(payload)), ("cls", str(i % 3).encode())):
                    info = tarfile.TarInfo(f"r{s}_{i:03d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return [os.path.join(folder, f"r-{s}.tar") for s in range(SHARDS)]


@pytest.fixture
def served(tmp_path):
    local = write_shards(str(tmp_path))
    with ShardServer(str(tmp_path)) as server:
        yield local, [f"{server.url}/r-{s}.tar" for s in range(SHARDS)], server


def epoch(urls, index, ratio=0.7, seed=4, policy="random", request_cost=None, **stream_options):
    pruner = Pruner(SHARDS * PER_SHARD, policy=policy, prune_ratio=ratio, seed=seed)
    stream = PrunedIterableDataset(urls, pruner, index=index, **stream_options)
    stream.request_cost = request_cost
    stream.set_epoch(0)
    return [(int(s["__id__"]), s["__key__"], s["bin"], s["cls"]) for s in stream], stream


def test_http_shards_give_the_local_samples_indexed_and_streamed(served, tmp_path):
    local, http, server = served
    local_index = build_index(local, out=tmp_path / "local.empidx")
    http_index = build_index(http, out=tmp_path / "http.empidx", workers=3)
    for name in ("keys", "member_offset", "member_size", "sample_first_member"):
        assert np.array_equal(local_index._a[name], http_index._a[name])
    assert [s["url"] for s in http_index.shards] == http and all(s.get("etag") for s in http_index.shards)
    want, _ = epoch(local, tmp_path / "local.empidx")
    got, stream = epoch(http, tmp_path / "http.empidx")
    assert got == want and len(got) == 12                               # exactly 30% kept, same order
    got_streamed, _ = epoch(http, None, ratio=0.0, policy="full")
    want_streamed, _ = epoch(local, None, ratio=0.0, policy="full")
    assert [g[1:] for g in got_streamed] == [w[1:] for w in want_streamed]


def test_at_r07_only_kept_bytes_are_requested(served, tmp_path):
    local, http, server = served
    index = build_index(http, out=tmp_path / "http.empidx")
    server.reset_counts()
    got, stream = epoch(http, tmp_path / "http.empidx", request_cost=0)   # never the whole span: 1 MB shards
    kept_bytes = sum(len(b) + len(c) for _, _, b, c in got)
    total = sum(s["size"] for s in index.shards)
    # Counted by the server: the kept members, plus the tar headers between neighbours merged into
    # one request (kept samples side by side), nothing of a pruned 100 KB payload.
    assert server.bytes_served() == stream.bytes_read
    assert kept_bytes <= stream.bytes_read <= kept_bytes + 4 * 1024 * len(got)
    assert stream.bytes_read <= 0.35 * total and stream.shard_bytes == total


def test_small_samples_are_coalesced_and_a_mostly_kept_shard_is_one_request(tmp_path):
    folder = tmp_path / "small"
    folder.mkdir()
    write_shards(str(folder), payload=1024)
    with ShardServer(str(folder)) as server:
        http = [f"{server.url}/r-{s}.tar" for s in range(SHARDS)]
        build_index(http, out=tmp_path / "small.empidx")
        server.reset_counts()
        got, stream = epoch(http, tmp_path / "small.empidx", ratio=0.5)
        assert len(got) == 20
        assert server.gets() == SHARDS           # neighbours 2.5 KiB apart: one request per shard


def test_transient_faults_are_retried(served, tmp_path):
    local, http, server = served
    build_index(http, out=tmp_path / "http.empidx")
    want, _ = epoch(local, build_index(local))
    for fault in (("status", 503), ("reset", 5000), ("short", 5000)):
        for s in range(SHARDS):
            server.faults.add(f"/r-{s}.tar", fault)
        got, _ = epoch(http, tmp_path / "http.empidx")
        assert got == want, fault


def test_a_shard_replaced_after_indexing_is_a_clear_error_or_skipped_by_the_handler(served, tmp_path):
    local, http, server = served
    build_index(http, out=tmp_path / "http.empidx")
    shutil.copy(local[0], local[0] + ".bak")
    with tarfile.open(local[0], "a") as tar:                              # a shard that grew
        info = tarfile.TarInfo("extra.bin")
        info.size = 10
        tar.addfile(info, io.BytesIO(b"0123456789"))
    with pytest.raises(ValueError, match=r"r-0\.tar' changed since the index was built.*rebuild"):
        epoch(http, tmp_path / "http.empidx", ratio=0.0, policy="full", shuffle_shards=False)
    skipped = []
    got, stream = epoch(http, tmp_path / "http.empidx", ratio=0.0, policy="full", shuffle_shards=False,
                        handler=lambda exc: skipped.append(exc) or True)
    assert len(skipped) == 1 and stream.skipped_shards == 1 and len(got) == (SHARDS - 1) * PER_SHARD


def test_a_failing_server_is_an_error_naming_the_url(served, tmp_path, monkeypatch):
    local, http, server = served
    build_index(http, out=tmp_path / "http.empidx")
    monkeypatch.setattr(remote, "BACKOFF_S", 0.001)
    server.faults.add("/r-0.tar", *[("status", 503)] * (remote.RETRIES + 1))
    server.faults.add("/r-1.tar", *[("status", 503)] * (remote.RETRIES + 1))
    with pytest.raises(ValueError, match=r"/r-[01]\.tar' \(bytes \d+-\d+\): failed after 6 attempts: HTTP 503"):
        epoch(http, tmp_path / "http.empidx", ratio=0.0, policy="full")


def test_pipe_urls_stream_like_local_files(served, tmp_path):
    local, _, _ = served
    pipes = [f"pipe:cat {u}" for u in local]
    got, _ = epoch(pipes, None, ratio=0.0, policy="full")
    want, _ = epoch(local, None, ratio=0.0, policy="full")
    assert [g[1:] for g in got] == [w[1:] for w in want]
    index = build_index(pipes)
    assert index.num_samples == SHARDS * PER_SHARD


def test_plan_reads_merges_below_the_gap_and_streams_a_mostly_kept_span():
    reads = range_reads.plan_reads([0, 100, 10_000, 200_000], [50, 50, 50, 50], gap=1000)
    assert [(r.start, r.end, r.members) for r in reads] == [(0, 150, [0, 1]), (10_000, 10_050, [2]),
                                                            (200_000, 200_050, [3])]
    whole = range_reads.plan_reads([0, 100, 10_000], [50, 50, 50], gap=1000, shard_size=200)
    assert [(r.start, r.end, r.members) for r in whole] == [(0, 10_050, [0, 1, 2])]


def test_a_remote_wids_index_names_shards_relative_to_itself(served, tmp_path):
    import json

    from emp_data.webdataset import WidsIndex

    local, http, server = served
    spec = {"wids_version": 1, "shardlist": [{"url": f"r-{s}.tar", "nsamples": PER_SHARD} for s in range(SHARDS)]}
    (tmp_path / "train.json").write_text(json.dumps(spec))
    index = WidsIndex.load(f"{server.url}/train.json")
    assert index.urls == http
    got, _ = epoch(None, f"{server.url}/train.json", ratio=0.0, policy="full")
    want, _ = epoch(local, None, ratio=0.0, policy="full")
    assert sorted(g[1:] for g in got) == sorted(w[1:] for w in want)
    (tmp_path / "abs.json").write_text(json.dumps({"wids_version": 1, "shardlist": [
        {"url": "s3://bucket/a.tar", "nsamples": 7}]}))
    assert WidsIndex.load(tmp_path / "abs.json").urls == ["s3://bucket/a.tar"]


def test_a_long_read_is_cut_at_member_boundaries():
    reads = range_reads.plan_reads([0, 100, 200, 300], [100, 100, 100, 100], gap=1000, max_read=150)
    assert [(r.start, r.end, r.members) for r in reads] == [(0, 200, [0, 1]), (200, 400, [2, 3])]
    whole = range_reads.plan_reads([0, 100, 200, 300], [100, 100, 100, 100], gap=1000, max_read=10_000)
    assert [(r.start, r.end, r.members) for r in whole] == [(0, 400, [0, 1, 2, 3])]


def test_build_index_names_a_shard_that_fails_for_good_or_skips_it_with_a_handler(served, tmp_path, monkeypatch):
    local, http, server = served
    monkeypatch.setattr(remote, "BACKOFF_S", 0.001)
    server.faults.add("/r-2.tar", *[("status", 503)] * 20)
    with pytest.raises(ValueError, match=r"shard '.*/r-2\.tar' could not be read: .*HTTP 503"):
        build_index(http, workers=1)
    skipped = []
    index = build_index(http, workers=1, handler=lambda exc: skipped.append(exc) or True)
    assert len(skipped) == 1 and index.shard_range(2) == (20, 20) and index.num_samples == 30


def test_fsspec_urls_read_ranges_and_stream(served, tmp_path):
    """Other protocols go through fsspec (its in-memory filesystem here: no S3-compatible server is
    available on this machine): the same samples in both modes, and an index built from them."""
    import fsspec

    local, _, _ = served
    fs = fsspec.filesystem("memory")
    urls = []
    for path in local:
        name = f"/emp-test/{os.path.basename(path)}"
        fs.pipe(name, open(path, "rb").read())
        urls.append(f"memory://{name}")
    index = build_index(urls, out=tmp_path / "mem.empidx")
    assert all(s["url"].startswith("memory://") for s in index.shards)
    want, _ = epoch(local, build_index(local))
    got, stream = epoch(urls, tmp_path / "mem.empidx")
    assert got == want and stream.bytes_read < 0.35 * stream.shard_bytes
    streamed, _ = epoch(urls, None, ratio=0.0, policy="full")
    assert sorted(s[1] for s in streamed) == sorted(w[1] for w in epoch(local, None, ratio=0.0, policy="full")[0])


@pytest.fixture
def s3_bucket(served, monkeypatch):
    """The shards in a bucket of moto's S3 server on the loopback interface, reached the way a user
    points s3fs at an S3-compatible store: fsspec's FSSPEC_S3_ENDPOINT_URL (and fsspec.config, which
    read the environment when fsspec was imported)."""
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    import boto3
    import fsspec

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1"), ("FSSPEC_S3_ENDPOINT_URL", endpoint)):
        monkeypatch.setenv(name, value)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": endpoint})
    local, _, _ = served
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="shards")
    for path in local:
        client.upload_file(path, "shards", f"train/{os.path.basename(path)}")
    fsspec.filesystem("s3").invalidate_cache()
    try:
        yield local, [f"s3://shards/train/{os.path.basename(p)}" for p in local]
    finally:
        server.stop()


def test_s3_urls_through_a_local_s3_compatible_server(s3_bucket, tmp_path):
    local, urls = s3_bucket
    index = build_index(urls, out=tmp_path / "s3.empidx")
    assert [s["url"] for s in index.shards] == urls and all(s.get("etag") for s in index.shards)
    want, _ = epoch(local, build_index(local))
    got, stream = epoch(urls, tmp_path / "s3.empidx")
    assert got == want and stream.bytes_read < 0.35 * stream.shard_bytes         # only kept bytes fetched
    streamed, _ = epoch(urls, None, ratio=0.0, policy="full")
    assert sorted(s[1] for s in streamed) == sorted(w[1] for w in epoch(local, None, ratio=0.0, policy="full")[0])
    # A shard replaced in the bucket after indexing (same size, new content: a new ETag) is refused.
    import boto3

    client = boto3.client("s3", endpoint_url=os.environ["FSSPEC_S3_ENDPOINT_URL"], region_name="us-east-1")
    data = bytearray(open(local[1], "rb").read())
    data[600] ^= 1
    client.put_object(Bucket="shards", Key="train/r-1.tar", Body=bytes(data))
    import fsspec

    fsspec.filesystem("s3").invalidate_cache()
    with pytest.raises(ValueError, match=r"r-1\.tar' changed since the index was built \(ETag .*rebuild"):
        epoch(urls, tmp_path / "s3.empidx", ratio=0.0, policy="full", shuffle_shards=False)


def same_size_replacement(path, seed=7):
    """Rewrites the shard at `path` with other samples of the same sizes and names shifted by one
    (sample i's bytes under key i+1), then restores its mtime: what `rsync -a` or `cp -p` of a
    prepared file leaves."""
    st = os.stat(path)
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    rng = np.random.default_rng(seed)
    names = [n for n, _ in members]
    shifted = names[2:] + names[:2]          # every sample's fields under the next sample's key
    with tarfile.open(path, "w") as tar:
        for name, (_, data) in zip(shifted, members):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(rng.bytes(len(data)) if name.endswith(".bin") else data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size


def test_a_server_that_ignores_range_sends_each_shard_once_and_the_count_says_so(tmp_path):
    """Like `python -m http.server`: 200 and the whole file for a Range request, no ETag."""
    local = write_shards(str(tmp_path))
    total = sum(os.path.getsize(p) for p in local)
    with ShardServer(str(tmp_path), simple=True) as server:
        http = [f"{server.url}/r-{s}.tar" for s in range(SHARDS)]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            index = build_index(http, out=tmp_path / "http.empidx")
            assert server.bytes_served() == total                      # the index build: each shard once
            assert all(s.get("last_modified") and not s.get("etag") for s in index.shards)
            server.reset_counts()
            got, stream = epoch(http, tmp_path / "http.empidx", request_cost=0)
        named = [str(w.message) for w in caught if "ignores Range requests" in str(w.message)]
        assert len(named) == 1 and server.url.split("//")[1] in named[0]   # once per server, naming it
        want, _ = epoch(local, build_index(local))
        assert got == want
        assert server.bytes_served() == total                          # each shard once, not once per range
        assert stream.bytes_read == total                              # what arrived, not what was asked


@pytest.mark.parametrize("simple", [False, True])
def test_a_same_size_replacement_is_caught_by_validators_and_tar_headers(tmp_path, simple):
    """A shard replaced by one of the same size. Over HTTP the server's validator changes (ETag, or
    only Last-Modified on a simple server); with the old mtime restored, or on a local disk, the tar
    header in front of each member no longer names the indexed member."""
    local = write_shards(str(tmp_path))
    with ShardServer(str(tmp_path), simple=simple) as server:
        http = [f"{server.url}/r-{s}.tar" for s in range(SHARDS)]
        build_index(http, out=tmp_path / "http.empidx")
        build_index(local, out=tmp_path / "local.empidx")
        st = os.stat(local[1])
        same_size_replacement(local[1])
        os.utime(local[1], ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))   # a new date: a new validator
        validator = "Last-Modified" if simple else "ETag"
        with pytest.raises(ValueError, match=rf"r-1\.tar' changed since the index was built \({validator}"):
            epoch(http, tmp_path / "http.empidx", ratio=0.0, policy="full", shuffle_shards=False)
        os.utime(local[1], ns=(st.st_atime_ns, st.st_mtime_ns))                     # the old date back
        for urls, index in ((http, "http.empidx"), (local, "local.empidx")):
            with pytest.raises(ValueError, match=r"r-1\.tar' changed since the index was built: the member at byte "
                                                 r"offset \d+ is 'r1_00\d\.(bin|cls)'.*the index has sample 'r1_00"):
                epoch(urls, tmp_path / index, ratio=0.0, policy="full", shuffle_shards=False)


def test_bytes_read_counts_what_dataloader_workers_received(served, tmp_path):
    """The count the training process reads includes its workers' (they report beside the store), and
    it is what the server sent."""
    import torch

    local, http, server = served
    build_index(http, out=tmp_path / "http.empidx")
    pruner = Pruner(SHARDS * PER_SHARD, policy="random", prune_ratio=0.7, seed=4, store_path=tmp_path / "s.emp")
    stream = PrunedIterableDataset(http, pruner, index=tmp_path / "http.empidx")
    stream.set_epoch(0)
    server.reset_counts()
    got = list(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2))
    assert len(got) == 12
    assert stream.bytes_read == server.bytes_served() > 0
