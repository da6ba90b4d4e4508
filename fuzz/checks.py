"""The contract every parser of untrusted bytes keeps, as one function per parser: given any bytes,
it accepts them and what it returns is safe to use, or it raises ValueError (a bad file) or OSError.
Anything else (another exception, a crash, a hang) is a bug. The fuzz targets (atheris) call these,
and tests/test_fuzz_corpus.py replays every saved input through them on each test run; the C++
libFuzzer targets (fuzz_*.cpp) check the same parsers below the Python layer."""
from __future__ import annotations

import io
import json
import os
import tempfile

import numpy as np

from emp_data import ScoreStore, _C
from emp_data.webdataset import KeyTable, ShardIndex, build_index
from emp_data.webdataset import WidsIndex

ACCEPTED_ERRORS = (ValueError, OSError)


def _as_file(data: bytes, folder: str, name: str) -> str:
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def check_tar(data: bytes, folder: str) -> None:
    """A shard's bytes through build_index (C++ header scan + grouping, then the Python index)."""
    path = _as_file(data, folder, "shard.tar")
    names, offsets, sizes, file_size, _error, _where = _C.scan_tar(path)
    assert len(names) == len(offsets) == len(sizes)
    assert all(int(o) + int(s) <= file_size for o, s in zip(offsets, sizes)), "a member outside the file"
    try:
        index = build_index([path], handler=lambda exc: True)
    except ValueError:
        return
    for sid in range(min(index.num_samples, 64)):
        index.sample_key(sid)
        for _field, offset, size in index.sample_members(sid):
            assert offset + size <= file_size


def check_store(data: bytes, folder: str) -> None:
    path = _as_file(data, folder, "scores.emp")
    try:
        store = ScoreStore.load(path)
    except ACCEPTED_ERRORS:
        return
    n = store.num_samples
    store.update(np.array([0, n - 1]), np.array([1.0, 2.0], np.float32))
    store.read_weights(0, min(n, 64), timeout=1.0)
    mapped = ScoreStore.open(path, readonly=True)
    assert mapped.num_samples == n
    float(mapped.weight[n - 1])


def check_key_table(data: bytes, folder: str) -> None:
    path = _as_file(data, folder, "table.keys")
    try:
        table = KeyTable.__new__(KeyTable)
        table.__setstate__({"path": path})     # open as a worker does, whatever its size
    except RuntimeError as exc:               # KeyTable() turns these into ValueError
        raise ValueError(str(exc)) from None
    table.recover()                           # as a job's main process does after a crash
    for sid in range(min(len(table), 16)):
        try:
            table.key_of(sid)
        except (IndexError, ValueError, RuntimeError):
            pass                              # an id whose insert died: a clear error
    for i in range(4):
        try:
            table.id_of("shard.tar", f"k{i}")
        except (ValueError, RuntimeError):    # table full / arena full: a clear error
            pass


def check_shard_index(data: bytes, folder: str) -> None:
    """An index file, loaded without checking shards (they are not there)."""
    path = _as_file(data, folder, "index.empidx")
    index = ShardIndex.load(path, check_shards=False)
    for sid in range(min(index.num_samples, 64)):
        index.sample_key(sid)
        index.sample_members(sid)


def check_wids_json(data: bytes, folder: str) -> None:
    path = _as_file(data, folder, "index.json")
    index = WidsIndex.load(path)
    for shard in range(len(index.urls)):
        lo, hi = index.shard_range(shard)
        assert 0 <= lo <= hi <= index.num_samples


CHECKS = {"tar": check_tar, "store": check_store, "key_table": check_key_table,
          "shard_index": check_shard_index, "wids_json": check_wids_json}


def run(target: str, data: bytes) -> None:
    """One input through one check, in a fresh temp folder; ValueError/OSError are accepted."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            CHECKS[target](data, folder)
        except ACCEPTED_ERRORS:
            pass


def shard_index_from_arrays(fuzz: bytes) -> bytes:
    """An index file whose arrays come from fuzz bytes but whose checksum is right, so that the
    structural checks behind the checksum get fuzzed too (the checksum guards against bit rot, not
    against a crafted file)."""
    from emp_data.webdataset.index import _arrays_checksum

    names = ["keys", "key_offsets", "exts", "ext_offsets", "member_offset", "member_size",
             "sample_first_member", "shard_first_sample"]
    dtypes = [np.uint8, np.int64, np.uint8, np.int64, np.uint64, np.uint64, np.int64, np.int64]
    arrays, pos = {}, 0
    for name, dtype in zip(names, dtypes):
        size = fuzz[pos] % 9 if pos < len(fuzz) else 0
        pos += 1
        raw = fuzz[pos:pos + size * np.dtype(dtype).itemsize]
        pos += len(raw)
        raw = raw[:len(raw) // np.dtype(dtype).itemsize * np.dtype(dtype).itemsize]
        arrays[name] = np.frombuffer(raw, dtype=dtype).copy()
    count = int(fuzz[pos]) % 8 if pos < len(fuzz) else 0
    meta = {"format": "emp_data.shard_index", "version": 1, "num_samples": count,
            "shards": [{"url": "/nonexistent/shard.tar", "size": 1 << 20, "mtime_ns": 0, "num_samples": count}],
            "duplicate_keys": 0, "checksum": _arrays_checksum(arrays)}
    out = io.BytesIO()
    np.savez(out, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    return out.getvalue()
