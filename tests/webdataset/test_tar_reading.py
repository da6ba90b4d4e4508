"""Tar members as webdataset reads them: pax sizes, sparse and hostile headers, non-UTF-8 names, repeated members."""
import importlib.util
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from emp_data import Pruner, ScoreStore
from emp_data.webdataset import KeyTable, PrunedIterableDataset, build_index

import _fault_jobs as faults  # noqa: F401
from tar_writers import SEED_WRITERS, _shards, _tar, _wait_for  # noqa: F401


def _pax_size_member(name, payload):
    """A member whose size is only in a pax record (the ustar field says 0)."""
    return SEED_WRITERS.pax_size_member(name, payload)


def test_pax_size_is_honoured_and_a_tar_inside_a_sample_stays_payload(tmp_path):
    inner = _tar([("fake_0001.txt", b"not a sample"), ("fake_0002.txt", b"nor this")])
    body = _pax_size_member("a_0001.tar", inner) + _tar([("a_0001.cls", b"1"), ("a_0002.cls", b"2")], tarfile.USTAR_FORMAT)
    url = tmp_path / "pax.tar"
    url.write_bytes(body)
    with tarfile.open(url) as t:
        expected = [(m.name, t.extractfile(m).read()) for m in t.getmembers()]
    index = build_index([str(url)])
    assert [index.sample_key(i) for i in range(index.num_samples)] == ["a_0001", "a_0002"]
    fields = dict((e, (o, s)) for e, o, s in index.sample_members(0))
    raw = url.read_bytes()
    o, s = fields["tar"]
    assert raw[o:o + s] == inner == expected[0][1]
    # The streamed path (tarfile) and the indexed path give the same samples.
    pruner = Pruner(2, policy="full", store_path=tmp_path / "s.emp")
    for source in (dict(index=index), dict()):
        ds = PrunedIterableDataset([str(url)], pruner, key_table=tmp_path / "k.keys", **source)
        ds.set_epoch(0)
        assert [(s["__key__"], s.get("tar")) for s in ds] == [("a_0001", inner), ("a_0002", None)]


def test_sparse_members_are_refused_clearly(tmp_path):
    sparse = bytearray(_tar([("s_0001.bin", b"x" * 10)], tarfile.GNU_FORMAT))
    sparse[156:157] = b"S"
    sparse[148:156] = b"        "
    sparse[148:156] = b"%06o\0 " % sum(sparse[:512])
    (tmp_path / "sparse.tar").write_bytes(bytes(sparse))
    with pytest.raises(ValueError, match="sparse"):
        build_index([str(tmp_path / "sparse.tar")])


@pytest.mark.parametrize("case", ["base256_size", "pax_minus_one", "pax_huge_length"])
def test_hostile_tar_headers_fail_fast(tmp_path, case):
    if case == "base256_size":
        raw = bytearray(_tar([("a_0.txt", b"x")], tarfile.GNU_FORMAT))
        raw[124:136] = b"\x80" + b"\xff" * 11                  # base-256, ~2^88 truncated to ~2^64
        raw[148:156] = b"        "
        raw[148:156] = b"%06o\0 " % sum(raw[:512])
    else:
        length = b"-1" if case == "pax_minus_one" else b"99999999999999999999999"
        record = length + b" path=a_0.txt\n"
        info = tarfile.TarInfo("././@PaxHeader")
        info.type = tarfile.XHDTYPE
        info.size = len(record)
        raw = bytearray(info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape") + record +
                        b"\0" * (-len(record) % 512) + _tar([("a_0.txt", b"x")], tarfile.USTAR_FORMAT))
    (tmp_path / "bad.tar").write_bytes(bytes(raw))
    code = textwrap.dedent(f"""
        from emp_data.webdataset import build_index
        try:
            build_index([{str(tmp_path / 'bad.tar')!r}])
        except ValueError as exc:
            print("refused:", exc)
    """)
    # cwd outside the checkout: `python -c` puts its cwd first on sys.path, and the source tree's
    # emp_data has no built _C in CI (the package is installed into the venv).
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout and "bad.tar" in done.stdout


def test_non_utf8_member_names_are_samples(tmp_path):
    url = tmp_path / "n.tar"
    url.write_bytes(_tar([("k\udcff1.txt", b"a"), ("k\udcff1.cls", b"1"), ("ok.txt", b"b")]))
    index = build_index([str(url)])
    assert index.num_samples == 2
    pruner = Pruner(2, policy="full", store_path=tmp_path / "s.emp")
    keys = []
    for source in (dict(index=index), dict(key_table=tmp_path / "k.keys")):
        ds = PrunedIterableDataset([str(url)], pruner, **source)
        ds.set_epoch(0)
        keys.append([s["__key__"] for s in ds])
    assert keys[0] == keys[1] == ["k\udcff1", "ok"]


def test_a_repeated_member_is_an_error_in_both_modes_and_handlers_mean_what_webdataset_means(tmp_path):
    import webdataset as wds

    bad = tmp_path / "dup.tar"
    bad.write_bytes(_tar([("a_1.txt", b"x"), ("a_1.cls", b"1"), ("a_1.txt", b"y"), ("b_2.txt", b"z")]))
    good = _shards(str(tmp_path), count=1, per_shard=3)[0]
    with pytest.raises(ValueError, match="duplicate file name in tar file"):
        build_index([str(bad)])
    pruner = Pruner(10, policy="full", store_path=tmp_path / "s.emp")

    def stream(handler):
        ds = PrunedIterableDataset([str(bad), good], pruner, key_table=tmp_path / "k.keys", handler=handler,
                                   shuffle_shards=False)
        ds.set_epoch(0)
        return [s["__key__"] for s in ds]

    with pytest.raises(ValueError, match="duplicate file name in tar file: a_1.txt"):
        stream(None)
    assert stream(wds.warn_and_continue) == ["r00_0000", "r00_0001", "r00_0002"]   # the bad shard skipped
    assert stream(wds.ignore_and_stop) == []                                       # stop quietly
    with pytest.raises(ValueError, match="duplicate"):
        stream(wds.reraise_exception)
