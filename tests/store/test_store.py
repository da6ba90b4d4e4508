import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from emp_data import ScoreStore


def test_layout_is_24_bytes_per_sample():
    store = ScoreStore(1000)
    assert store.nbytes == 24 * 1000
    assert np.isnan(store.loss).all() and np.isnan(store.memory).all()
    assert (store.weight == 1).all() and (store.times_selected == 0).all()


def test_update_writes_values_and_running_moments():
    store = ScoreStore(10)
    decay = 0.8
    xs = [1.0, 3.0, 2.0, 5.0]
    for x in xs:
        store.update(np.array([4]), np.array([x], dtype=np.float32), np.array([x / 10], dtype=np.float32), ema_decay=decay)
    mean, var = xs[0], 0.0
    for x in xs[1:]:
        d = x - mean
        mean += (1 - decay) * d
        var = decay * (var + (1 - decay) * d * d)
    assert store.loss[4] == 5.0
    assert store.memory[4] == np.float32(0.5)
    assert store.loss_mean[4] == pytest.approx(mean, rel=1e-6)
    assert store.loss_var[4] == pytest.approx(var, rel=1e-5)
    assert np.isnan(store.loss[3])


def test_update_accepts_torch_and_casts_dtypes():
    store = ScoreStore(5)
    store.update(torch.tensor([0, 1], dtype=torch.int32), torch.tensor([0.5, 1.5], dtype=torch.float64))
    store.update(np.array([2], dtype=np.uint16), np.array([2.5], dtype=np.float16))
    assert store.loss[:3].tolist() == [0.5, 1.5, 2.5]


def test_duplicate_ids_last_write_wins_in_parallel_path():
    n = 100_000
    store = ScoreStore(n)
    ids = np.concatenate([np.arange(n), np.arange(n)])  # > 4096 entries: the threaded path
    losses = np.concatenate([np.full(n, 1.0), np.full(n, 2.0)]).astype(np.float32)
    store.update(ids, losses, ema_decay=0.5)
    assert (store.loss == 2.0).all()
    assert np.allclose(store.loss_mean, 1.5)  # both values were seen, in order


@pytest.fixture
def update_path():
    from emp_data import _C

    yield lambda path: _C.set_parallel_mode(getattr(_C.ParallelMode, path))
    _C.set_parallel_mode(_C.ParallelMode.AUTO)


def test_every_update_path_gives_the_same_store(update_path):
    """Calls of >= 4096 ids take the serial or the threaded path, whichever this process measured
    faster (AUTO); all three settings must leave the same bytes (duplicates applied in call order)."""
    rng = np.random.default_rng(3)
    n = 50_000
    calls = [(rng.integers(0, n, size), rng.gamma(2.0, 0.5, size).astype(np.float32),
              rng.random(size, dtype=np.float32)) for size in (4096, 8192, 32768, 5000, 4096, 70_000)]
    stores = {}
    for path in ("SERIAL", "THREADED", "AUTO"):
        update_path(path)
        store = ScoreStore(n)
        for _ in range(3):          # AUTO: the first call of a size is serial, the next threaded
            for ids, loss, mem in calls:
                store.update(ids, loss, mem)
        stores[path] = store
    for field in ("loss", "memory", "loss_mean", "loss_var"):
        want = getattr(stores["SERIAL"], field)
        for path in ("THREADED", "AUTO"):
            assert np.array_equal(getattr(stores[path], field), want, equal_nan=True), (field, path)
    # and the serial path is the sequential rule: the last call's value wins, the mean moves each time
    ids, loss, _ = calls[-1]
    last = {}
    for i, x in zip(ids.tolist(), loss.tolist()):
        last[i] = x
    assert all(stores["SERIAL"].loss[i] == np.float32(x) for i, x in last.items())


@pytest.mark.parametrize("ids,losses,err,match", [
    (np.array([0, 10]), np.ones(2, np.float32), ValueError, r"id out of range: ids\[1\] = 10 is outside \[0, 10\)"),
    (np.array([-1]), np.ones(1, np.float32), ValueError, "id out of range"),
    (np.array([0, 1]), np.ones(3, np.float32), ValueError, "losses has 3 entries but ids has 2"),
    (np.array([0, 1]), np.array([1.0, np.nan], np.float32), ValueError, r"non-finite loss: losses\[1\]"),
    (np.array([0, 1]), np.array([1.0, np.inf], np.float32), ValueError, "non-finite loss"),
    (np.array([0.0, 1.0]), np.ones(2, np.float32), TypeError, "ids must be an integer array"),
    (np.array([0, 1]), np.array([1, 2]), TypeError, "losses must be floating point"),
    (np.zeros((2, 2), np.int64), np.ones(2, np.float32), ValueError, "ids must be 1-D"),
    (torch.tensor([0.0]), np.ones(1, np.float32), TypeError, "integer tensor"),
])
def test_update_rejects_bad_input(ids, losses, err, match):
    store = ScoreStore(10)
    with pytest.raises(err, match=match):
        store.update(ids, losses)
    assert np.isnan(store.loss).all()  # nothing was written


def test_nonfinite_memory_and_skip_mode():
    store = ScoreStore(4)
    with pytest.raises(ValueError, match=r"non-finite memory value: memory\[0\]"):
        store.update([0], np.ones(1, np.float32), np.array([np.nan], np.float32))
    skipped = store.update([0, 1, 2], np.array([1.0, np.nan, 3.0], np.float32), nonfinite="skip")
    assert skipped == 1
    assert store.loss[0] == 1.0 and np.isnan(store.loss[1]) and store.loss[2] == 3.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        ScoreStore(0)
    with pytest.raises(TypeError, match="num_samples must be an integer"):
        ScoreStore(1.5)
    with pytest.raises(ValueError, match="nonfinite must be"):
        ScoreStore(3).update([0], np.ones(1, np.float32), nonfinite="ignore")



def test_the_core_update_checks_its_arrays():
    """The binding reads the caller's buffers directly: it refuses mismatched lengths and wrong
    dtypes itself, and converts what pybind11's array casters would (a strided view, int32 ids)."""
    store = ScoreStore(10)
    core = store._core
    with pytest.raises(ValueError, match="same length"):
        core.update(np.array([1, 2]), np.ones(3, np.float32), None, 0.8, False)
    with pytest.raises(ValueError, match="same length"):
        core.update(np.array([1, 2]), np.ones(2, np.float32), np.ones(1, np.float32), 0.8, False)
    with pytest.raises(TypeError, match="ids must be a 1-D array of int64"):
        core.update(np.array([1.0, 2.0]), np.ones(2, np.float32), None, 0.8, False)
    with pytest.raises(TypeError, match="losses must be a 1-D array of float32"):
        core.update(np.array([1, 2]), np.ones(2), None, 0.8, False)
    assert np.isnan(store.loss).all()
    assert core.update(np.arange(8)[::2], np.arange(8, dtype=np.float32)[::2], None, 0.8, False) is None
    assert core.update(np.array([9], np.int32), np.array([7.0], np.float32), None, 0.8, False) is None
    assert store.loss[[0, 2, 4, 6, 9]].tolist() == [0, 2, 4, 6, 7]

def _child_reads(path, queue):
    store = ScoreStore.open(path, readonly=True)
    queue.put((store.loss[:4].tolist(), store.weight[:4].tolist()))


def test_mapped_store_is_shared_across_processes(tmp_path):
    path = tmp_path / "scores.emp"
    store = ScoreStore(100, path=path)
    store.update([0, 1, 2, 3], np.array([1, 2, 3, 4], np.float32))
    store.weight[:4] = [0, 2, 0, 2]
    store.settle()          # the update log reaches the file (a select would do it too)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_reads, args=(str(path), queue))
    proc.start()
    loss, weight = queue.get(timeout=60)
    proc.join(60)
    assert loss == [1, 2, 3, 4] and weight == [0, 2, 0, 2]
    assert not [p for p in os.listdir(tmp_path) if ".tmp." in p]


def test_readonly_store_refuses_writes(tmp_path):
    path = tmp_path / "s.emp"
    ScoreStore(10, path=path)
    ro = ScoreStore.open(path, readonly=True)
    with pytest.raises(ValueError, match="read-only"):
        ro.update([0], np.ones(1, np.float32))
    with pytest.raises(ValueError, match="read-only"):
        ro.weight[0] = 3


def test_save_load_roundtrip_and_metadata(tmp_path):
    store = ScoreStore(1000)
    store.update(np.arange(1000), np.linspace(0, 1, 1000, dtype=np.float32))
    store.save(tmp_path / "snap.emp", metadata=b"hello")
    loaded = ScoreStore.load(tmp_path / "snap.emp")
    assert np.array_equal(loaded.loss, store.loss) and loaded.metadata == b"hello"
    mapped = ScoreStore.open(tmp_path / "snap.emp", readonly=True)
    assert np.array_equal(mapped.loss, store.loss)


def _corrupt(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_wrong_or_damaged_files_are_refused(tmp_path):
    good = tmp_path / "good.emp"
    store = ScoreStore(500)
    store.update(np.arange(500), np.ones(500, np.float32))
    store.save(good)
    raw = good.read_bytes()

    not_store = tmp_path / "other.bin"
    not_store.write_bytes(b"x" * 8192)
    with pytest.raises(ValueError, match="not an emp_data store file"):
        ScoreStore.load(not_store)

    truncated = tmp_path / "trunc.emp"
    truncated.write_bytes(raw[: len(raw) - 100])
    with pytest.raises(ValueError, match="truncated"):
        ScoreStore.open(truncated)

    version = tmp_path / "version.emp"
    version.write_bytes(raw)
    _corrupt(version, 8, (99).to_bytes(4, "little"))
    with pytest.raises(ValueError, match="format version 99"):
        ScoreStore.load(version)

    header = tmp_path / "header.emp"
    header.write_bytes(raw)
    _corrupt(header, 24, (7).to_bytes(8, "little"))  # num_samples
    with pytest.raises(ValueError, match="corrupt header"):
        ScoreStore.load(header)

    data = tmp_path / "data.emp"
    data.write_bytes(raw)
    _corrupt(data, 4096 + 16 * 100, b"\x00\x00\x80\x7f")
    with pytest.raises(ValueError, match="data checksum mismatch"):
        ScoreStore.load(data)

    with pytest.raises(FileNotFoundError, match="cannot open"):   # I/O trouble is OSError, with its errno
        ScoreStore.open(tmp_path / "missing.emp")


def test_mapped_store_cannot_save_onto_itself(tmp_path):
    path = tmp_path / "live.emp"
    store = ScoreStore(10, path=path)
    with pytest.raises(ValueError, match="its own file"):
        store.save(path)
    reopened = ScoreStore.open(path, readonly=False)
    reopened.update([1], np.array([7.0], np.float32))
    reopened.flush()
    assert ScoreStore.open(path).loss[1] == 7.0


DATA = Path(__file__).parent / "data"


def test_a_version_1_snapshot_is_converted_on_load_and_refused_by_open(tmp_path):
    """tests/data/pruner_v1.emp was written by Pruner.save of the format-1 code (uint32 times, no idle
    counts): load converts it, a resumed Pruner selects what the old code selected, and it saves
    as version 2. Mapping it (open) cannot convert in place, so it says how to."""
    from emp_data import Pruner

    store = ScoreStore.load(DATA / "pruner_v1.emp")
    assert np.allclose(store.loss, [0.5, 0.7, 2.0, 0.1, 2.5, 0.2, 1.5])
    assert np.allclose(store.loss_mean, [0.5, 0.94, 2.0, 0.1, 2.9, 0.2, 1.5])
    assert store.times_selected.dtype == np.uint16 and store.times_selected.tolist() == [1, 0, 2, 1, 2, 2, 2]
    assert store.idle.tolist() == [0] * 7 and store.weight.tolist() == [0, 0, 1, 0, 1, 2, 1]
    assert store.epoch_stamp() == 1
    pruner = Pruner.load(DATA / "pruner_v1.emp")
    ids, weights = pruner.select(1)                       # the current epoch, rebuilt from the weights
    assert ids.tolist() == [6, 4, 2, 5] and weights.tolist() == [1, 1, 1, 2]   # as the old code returned
    pruner.save(tmp_path / "v2.emp")
    assert int.from_bytes((tmp_path / "v2.emp").read_bytes()[8:12], "little") == 2
    assert np.array_equal(ScoreStore.open(tmp_path / "v2.emp").loss, store.loss)
    with pytest.raises(ValueError, match=r"format version 1, this emp_data reads version 2 \(a version 1 snapshot "
                                         r"is converted by ScoreStore.load"):
        ScoreStore.open(DATA / "pruner_v1.emp")
    damaged = tmp_path / "damaged_v1.emp"
    raw = bytearray((DATA / "pruner_v1.emp").read_bytes())
    raw[4096 + 20] ^= 0xFF                                # a loss byte: the old data checksum catches it
    damaged.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="data checksum mismatch"):
        ScoreStore.load(damaged)


def test_selection_counts_saturate_and_idle_counts_pruned_epochs():
    from emp_data import Pruner

    pruner = Pruner(100, policy="random", prune_ratio=0.5, epochs=4, anneal=0.5, seed=1)
    pruner.store.times_selected[:3] = 0xFFFF
    pruner.store.idle[3:6] = 0xFFFF
    idle = {}
    for epoch in range(4):
        before = pruner.store.idle.astype(int).copy()
        ids, _ = pruner.select(epoch)
        kept = np.zeros(100, bool)
        kept[ids] = True
        want = np.where(kept, 0, np.minimum(before + 1, 0xFFFF))
        assert np.array_equal(pruner.store.idle, want), epoch
        idle[epoch] = pruner.store.idle.copy()
    assert (pruner.store.times_selected[:3] == 0xFFFF).all()          # saturated, not wrapped
    assert (idle[2] == 0).all() and (idle[3] == 0).all()              # annealing epochs keep every sample
    pruner.select(3)                                                  # the same epoch again: counted once
    assert np.array_equal(pruner.store.idle, idle[3])
