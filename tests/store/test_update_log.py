"""The store's update log: calls of fewer than 2^16 ids are recorded in a log and written into the
records at the next read (select, scores, save, flush, the store's arrays), when the log is full,
or when a mapped store is closed. These tests check that nothing a user can observe through the
store changes: the records equal a float32 reference of the sequential rule, bit for bit."""
import threading

import numpy as np
import pytest

from emp_data import Pruner, ScoreStore, _C

LOG_CAPACITY = _C.UPDATE_LOG_ENTRIES


def reference(n, calls):
    """The update rule applied call by call, entry by entry, in float32 (the core's arithmetic)."""
    f = np.float32
    loss, mem = np.full(n, np.nan, f), np.full(n, np.nan, f)
    mean, var = np.full(n, np.nan, f), np.zeros(n, f)
    for ids, x, m, decay in calls:
        alpha, decay = f(1) - f(decay), f(decay)
        for j, i in enumerate(ids.tolist()):
            if np.isnan(mean[i]):
                mean[i], var[i] = x[j], f(0)
            else:
                d = f(x[j] - mean[i])
                mean[i] = f(mean[i] + f(alpha * d))
                var[i] = f(decay * f(var[i] + f(f(alpha * d) * d)))
            loss[i] = x[j]
            if m is not None:
                mem[i] = m[j]
    return {"loss": loss, "memory": mem, "loss_mean": mean, "loss_var": var}


def random_calls(rng, n, sizes, decays=(0.8,)):
    calls = []
    for k, size in enumerate(sizes):
        ids = rng.integers(0, n, size)                       # duplicates within and across calls
        x = rng.gamma(2.0, 0.5, size).astype(np.float32)
        m = rng.random(size, dtype=np.float32) if k % 3 else None   # some calls without memory
        calls.append((ids, x, m, decays[k % len(decays)]))
    return calls


def assert_records(store, want):
    for field, values in want.items():
        assert np.array_equal(getattr(store, field), values, equal_nan=True), field


def test_logged_calls_read_back_as_the_sequential_rule():
    rng = np.random.default_rng(0)
    n = 300
    calls = random_calls(rng, n, [1, 7, 64, 4096, 3, 500], decays=(0.8, 0.8, 0.5))
    store = ScoreStore(n)
    for ids, x, m, decay in calls:
        store.update(ids, x, m, ema_decay=decay)
    assert_records(store, reference(n, calls))


@pytest.mark.parametrize("read", ["select", "scores", "arrays", "save", "state"])
def test_every_read_sees_every_call(read, tmp_path):
    rng = np.random.default_rng(1)
    n = 2000
    calls = random_calls(rng, n, [256] * 6)
    want = reference(n, calls)
    pruner = Pruner(n, policy="ucb", prune_ratio=0.5, seed=0)
    same = Pruner(n, policy="ucb", prune_ratio=0.5, seed=0)
    for ids, x, m, decay in calls:
        pruner.store.update(ids, x, m, ema_decay=decay)
    for field, values in want.items():           # `same` holds the reference's records directly
        getattr(same.store, field)[:] = values
    if read == "select":
        for a, b in zip(pruner.select(0), same.select(0)):
            assert np.array_equal(a, b)
    elif read == "scores":
        assert np.array_equal(pruner.scores(), same.scores(), equal_nan=True)
    elif read == "arrays":
        assert_records(pruner.store, want)
    elif read == "save":
        pruner.save(tmp_path / "p.emp")
        assert_records(Pruner.load(tmp_path / "p.emp").store, want)
    else:
        state = pruner.state_dict()
        restored = Pruner(n, policy="ucb", prune_ratio=0.5, seed=0)
        restored.load_state_dict(state)
        assert_records(restored.store, want)


def test_a_full_log_applies_itself_and_a_closed_store_leaves_everything_in_its_file(tmp_path):
    path = tmp_path / "s.emp"
    n = 10_000
    writer = ScoreStore(n, path=path)
    reader = ScoreStore.open(path, readonly=True)   # reads the file's records, not the writer's log
    rng = np.random.default_rng(2)
    calls = random_calls(rng, n, [4096] * (LOG_CAPACITY // 4096 + 1))
    for k, (ids, x, m, decay) in enumerate(calls[:-1]):
        assert writer._core.pending == 4096 * k
        writer.update(ids, x, m, ema_decay=decay)
    assert writer._core.pending == 0
    # the log held exactly its capacity: it applied itself, so the file already has every call
    assert_records(reader, reference(n, calls[:-1]))
    ids, x, m, decay = calls[-1]
    writer.update(ids, x, m, ema_decay=decay)
    del writer                                    # closing the writer applies the rest
    assert_records(reader, reference(n, calls))


@pytest.mark.parametrize("how", ["settle", "flush"])
def test_settle_and_flush_put_the_log_in_the_file(how, tmp_path):
    path = tmp_path / "s.emp"
    writer = ScoreStore(100, path=path)
    reader = ScoreStore.open(path, readonly=True)
    writer.update([3, 4, 3], np.array([1.0, 2.0, 5.0], np.float32))
    assert writer._core.pending == 3
    getattr(writer, how)()
    assert writer._core.pending == 0
    assert reader.loss[3] == 5.0 and reader.loss[4] == 2.0 and reader.loss_mean[3] == np.float32(1.8)


def test_a_rejected_call_leaves_the_logged_ones(tmp_path):
    store = ScoreStore(10)
    store.update([1, 2], np.array([1.0, 2.0], np.float32))
    with pytest.raises(ValueError, match="id out of range"):
        store.update([3, 10], np.array([3.0, 4.0], np.float32))
    skipped = store.update([5, 6], np.array([np.nan, 6.0], np.float32), nonfinite="skip")
    assert skipped == 1
    assert store.loss[1] == 1.0 and store.loss[2] == 2.0 and np.isnan(store.loss[3])
    assert np.isnan(store.loss[5]) and store.loss[6] == 6.0


def test_reset_drops_the_log():
    store = ScoreStore(10)
    store.update([1, 2], np.array([1.0, 2.0], np.float32))
    store.reset()
    assert np.isnan(store.loss).all()
    store.update([2], np.array([3.0], np.float32))
    assert store.loss_mean[2] == 3.0 and store.loss_var[2] == 0.0   # a first sighting again


def test_calls_from_several_threads_take_turns():
    """update releases the GIL: calls from two threads on one store take turns on the log (more
    entries than it holds, so it also applies itself meanwhile), and none is lost. The threads
    update disjoint ids, so any interleaving gives the records of one thread's calls after the other's."""
    n = 20_000
    rng = np.random.default_rng(5)
    per_thread = [[(rng.choice(np.arange(parity, n, 2), 1000), rng.gamma(2.0, 0.5, 1000).astype(np.float32))
                   for _ in range(150)] for parity in (0, 1)]
    sequential = ScoreStore(n)
    for calls in per_thread:
        for ids, x in calls:
            sequential.update(ids, x)
    for _ in range(5):       # a lost entry needs two calls at the same moment: give it several chances
        store = ScoreStore(n)
        threads = [threading.Thread(target=lambda calls=calls: [store.update(ids, x) for ids, x in calls])
                   for calls in per_thread]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for field in ("loss", "loss_mean", "loss_var"):
            assert np.array_equal(getattr(store, field), getattr(sequential, field), equal_nan=True), field


def test_training_steps_fill_the_log_and_a_read_of_the_records_applies_it():
    """pruner.loss reads the batch's weights every step, after recording it: the weights are not
    records, so that read leaves the log to fill; reading a record field applies it."""
    import torch

    n, batch, steps = 100_000, 512, 5
    pruner = Pruner(n, policy="infobatch", prune_ratio=0.5, seed=0)
    pruner.select(0)
    rng = np.random.default_rng(6)
    calls = []
    for _ in range(steps):
        ids = rng.integers(0, n, batch)
        x = rng.gamma(2.0, 0.5, batch).astype(np.float32)
        pruner.loss(torch.from_numpy(x), torch.from_numpy(ids))
        calls.append((ids, x, None, pruner.ema_decay))
    assert pruner.store._core.pending == steps * batch
    assert (pruner.store.weight >= 0).all() and pruner.store._core.pending == steps * batch
    assert_records(pruner.store, reference(n, calls))
    assert pruner.store._core.pending == 0
