"""A store under hostile input and hard stops: refused headers and sizes, a caller changing its arrays, kill -9 mid save or update, a full disk."""
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


def test_save_refuses_the_live_file_under_any_name(tmp_path, monkeypatch):
    path = tmp_path / "scores.emp"
    store = ScoreStore(10, path=path)
    os.symlink(path, tmp_path / "link.emp")
    monkeypatch.chdir(tmp_path)
    for other in ("./scores.emp", str(path.resolve()), str(tmp_path / "link.emp"), "../" + tmp_path.name + "/scores.emp"):
        with pytest.raises(ValueError, match="its own file"):
            store.save(other)
    store.update([3], np.array([5.0], np.float32))
    store.flush()                                        # the update reaches the file
    assert ScoreStore.open(path).loss[3] == 5.0          # still the live file, still shared
    store.save(tmp_path / "snapshot.emp")                # any other file is fine
    assert ScoreStore.load(tmp_path / "snapshot.emp").loss[3] == 5.0


def test_absurd_sizes_and_coefficients_are_refused():
    with pytest.raises(ValueError, match="max_samples"):
        KeyTable(2**62)
    with pytest.raises(ValueError, match="key_bytes"):
        KeyTable(10, key_bytes=2**40)
    with pytest.raises(ValueError, match="beta must be <="):
        Pruner(10, policy="emp", beta=1e39)
    with pytest.raises(ValueError, match="alpha must be <="):
        Pruner(10, policy="weighted", alpha=1e6)
    with pytest.raises(ValueError, match="c must be <="):
        Pruner(10, policy="ucb", c=float(np.finfo(np.float32).max))


def test_a_store_header_with_a_huge_n_is_refused(tmp_path):
    from emp_data import _C

    path = tmp_path / "s.emp"
    ScoreStore(4).save(path)
    raw = bytearray(path.read_bytes())
    raw[24:32] = (2**62 + 4).to_bytes(8, "little")              # num_samples
    # A right header checksum, so only the size checks stand between this header and the layout.
    raw[104:112] = _C.checksum_bytes(bytes(raw[:104])).to_bytes(8, "little")
    path.write_bytes(bytes(raw))
    for opener in (ScoreStore.load, ScoreStore.open):
        with pytest.raises(ValueError, match="invalid sample count"):
            opener(path)


def test_update_survives_the_caller_changing_its_arrays(tmp_path):
    """A thread flips ids to out-of-range values while update runs without the GIL: no write may
    land outside the store (run in a child process, so a crash fails the test instead of pytest)."""
    code = textwrap.dedent("""
        import threading, numpy as np
        from emp_data import ScoreStore
        store = ScoreStore(1000)
        ids = np.arange(2_000_000, dtype=np.int64) % 1000
        losses = np.ones(len(ids), np.float32)
        stop = False
        def vandal():
            while not stop:
                ids[::7] = 2**40
                ids[::7] = 3
        t = threading.Thread(target=vandal); t.start()
        for _ in range(30):
            try:
                store.update(ids, losses)
            except ValueError:
                pass
        stop = True; t.join()
        assert np.isfinite(store.loss).all() or np.isnan(store.loss).any()
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr


def test_sigkill_mid_save_leaves_the_old_or_the_new_snapshot(tmp_path):
    ctx = mp.get_context("spawn")
    for trial in range(3):
        folder = tmp_path / f"t{trial}"
        folder.mkdir()
        proc = ctx.Process(target=faults.save_forever, args=(str(folder), 300_000))
        proc.start()
        _wait_for(str(folder / "ready"), proc)
        time.sleep(0.05 + 0.07 * trial)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        snap = ScoreStore.load(folder / "snap.emp")              # checksummed: whole or refused
        i = int(snap.metadata.decode())
        assert np.all(snap.loss == i)
        # The next successful save clears the killed writer's temp file.
        ScoreStore(3).save(folder / "snap.emp")
        assert sorted(os.listdir(folder)) == ["ready", "snap.emp"]


def test_sigkill_mid_update_leaves_a_store_that_opens(tmp_path):
    path = str(tmp_path / "live.emp")
    store = ScoreStore(1_000_000, path=path)
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=faults.update_forever, args=(path, 1_000_000))
    proc.start()
    _wait_for(path + ".ready", proc)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    reopened = ScoreStore.open(path, readonly=False)
    seen = ~np.isnan(reopened.loss)
    assert seen.sum() > 0 and np.all((reopened.loss[seen] >= 0) & (reopened.loss[seen] < 1))
    assert reopened.epoch_stamp(timeout=1) is None
    del store


def test_a_full_disk_is_an_oserror_and_leaves_no_temp_files(small_tmpfs):
    import errno

    big = 200_000                                       # 4.8 MB: more than the 2 MiB file system
    with pytest.raises(OSError) as info:
        ScoreStore(big, path=small_tmpfs / "s.emp")
    assert info.value.errno == errno.ENOSPC
    with pytest.raises(OSError):
        ScoreStore(big).save(small_tmpfs / "snap.emp")
    with pytest.raises(OSError):
        KeyTable(100_000, small_tmpfs / "t.keys")
    index = build_index(_shards(str(small_tmpfs.parent), count=1))
    index._a["keys"] = np.zeros(3_000_000, np.uint8)    # a large index
    with pytest.raises(OSError):
        index.save(small_tmpfs / "i.empidx")
    assert os.listdir(small_tmpfs) == []
    # What fits still works: a small store, shared and saved.
    store = ScoreStore(1000, path=small_tmpfs / "ok.emp")
    store.update([1], np.array([2.0], np.float32))
    store.save(small_tmpfs / "ok_snapshot.emp")
    assert ScoreStore.load(small_tmpfs / "ok_snapshot.emp").loss[1] == 2.0
