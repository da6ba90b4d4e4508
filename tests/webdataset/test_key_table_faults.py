"""The key table under failed inserts, crafted headers, kill -9 mid insert and a recovery racing a live writer."""
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


def test_a_failed_insert_takes_no_id_and_no_space(tmp_path):
    table = KeyTable(10, tmp_path / "t.keys", key_bytes=24)   # the 64 KiB arena floor
    assert table.id_of("u", "a" * 8) == 0
    with pytest.raises(RuntimeError, match="arena is full"):
        table.id_of("u", "b" * 70_000)
    assert len(table) == 1                                      # no id for the failed key
    assert [table.id_of("u", k) for k in ("c", "d")] == [1, 2]  # short keys still fit
    assert table.key_of(1) == "c" and table.key_of(2) == "d"
    table.flush()
    assert table.clean and table.recover() == 0


def test_a_key_table_header_with_crafted_sizes_is_refused(tmp_path):
    from emp_data import _C

    path = tmp_path / "t.keys"
    KeyTable(8, path).flush()
    good = path.read_bytes()
    # slot_count not a power of two, slot_count huge, max_ids 0, max_ids huge, arena_bytes huge
    for offset, value in ((32, 48), (32, 2**60), (24, 0), (24, 2**61), (40, 2**63)):
        raw = bytearray(good)
        raw[offset:offset + 8] = value.to_bytes(8, "little")
        raw[88:96] = _C.key_table_header_checksum(bytes(raw[:96])).to_bytes(8, "little")
        path.write_bytes(bytes(raw))
        with pytest.raises(ValueError, match="inconsistent layout|truncated"):
            KeyTable(8, path)


def test_sigkill_mid_insert_then_restart_gives_consistent_ids(tmp_path):
    """Two processes insert keys into one table; both are killed mid-stream. The restarted job's
    PrunedIterableDataset recovers the table: every key found has one id, ids are unique, and
    re-inserting every key gives those same ids."""
    path = str(tmp_path / "t.keys")
    n = 400_000
    KeyTable(n, path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=faults.insert_forever, args=(path, n, tag)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p, tag in zip(procs, ("a", "b")):
        _wait_for(f"{path}.ready.{tag}", p)
    time.sleep(0.5)
    for p in procs:
        os.kill(p.pid, signal.SIGKILL)
        p.join()
    table = KeyTable(n, path)
    assert not table.clean
    table.recover()                                  # what PrunedIterableDataset does on reopen
    count = len(table)
    assert count > 1000
    ids = {}
    for sid in range(count):
        try:
            key = table.key_of(sid)
        except IndexError:
            continue                                 # an id taken by an insert that was killed
        ids[key] = sid
    assert len(set(ids.values())) == len(ids) >= count - 2
    for key, sid in list(ids.items())[::97]:
        tag_i = key.split("-")
        url = f"shard-{int(tag_i[1]) % 13}.tar"
        assert table.id_of(url, key) == sid
    table.flush()
    assert table.clean


def test_recovery_never_scans_a_table_a_live_process_is_inserting_into(tmp_path):
    """A process still inserting (a DataLoader worker of a loader that failed, still alive) while a new
    stream reopens the table: recovery must leave the live table alone, never call it inconsistent;
    once the inserter is killed mid-insert, the next reopen recovers it."""
    path = str(tmp_path / "t.keys")
    n = 400_000
    KeyTable(n, path)
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=faults.insert_forever, args=(path, n, "a"))
    proc.start()
    try:
        _wait_for(f"{path}.ready.a", proc)
        for _ in range(40):                        # each reopen races the inserter's next insert
            time.sleep(0.01)
            table = KeyTable(n, path)
            assert table.recover() == 0            # left to the live process, not scanned
            del table
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    table = KeyTable(n, path)
    table.recover()                                # the inserter is gone: now it runs
    assert len(table) > 1000 and table.id_of("shard-0.tar", "a-00000000") == 0
