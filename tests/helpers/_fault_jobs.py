"""Processes the fault tests start (importable by spawn) and kill: each loops on one operation and
reports its progress through a file, so the test can SIGKILL it mid-operation."""
import os
import time

import numpy as np

from emp_data import Pruner, ScoreStore


def _touch(path):
    with open(path, "w") as f:
        f.write(str(os.getpid()))


def save_forever(folder, n):
    """Writes snapshots of a changing store to one path, again and again."""
    store = ScoreStore(n)
    ready = os.path.join(folder, "ready")
    i = 0
    while True:
        store.update(np.arange(n), np.full(n, float(i), np.float32))
        store.save(os.path.join(folder, "snap.emp"), metadata=str(i).encode())
        if i == 0:
            _touch(ready)
        i += 1


def update_forever(path, n):
    """Updates a memory-mapped store in big batches."""
    store = ScoreStore.open(path, readonly=False)
    rng = np.random.default_rng(os.getpid())
    _touch(path + ".ready")
    while True:
        ids = rng.integers(0, n, 200_000)
        store.update(ids, rng.random(len(ids), dtype=np.float32))


def insert_forever(path, n, tag):
    """Inserts new keys into a shared key table until it is full."""
    from emp_data.webdataset import KeyTable

    table = KeyTable(n, path)
    _touch(f"{path}.ready.{tag}")
    i = 0
    while True:
        try:
            table.id_of(f"shard-{i % 13}.tar", f"{tag}-{i:08d}")
        except ValueError:
            time.sleep(0.01)          # full: wait to be killed
        i += 1


def read_weights_while_selecting(path, expected_keep, seconds, out):
    """A reader in another process: copies every weight again and again under the epoch stamp and
    checks that the keep flags are exactly one epoch's selection. Reports (reads, mismatches)."""
    store = ScoreStore.open(path, readonly=True)
    reads = bad = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        epoch, w = store.read_weights(0, store.num_samples)
        if epoch is None:
            continue
        reads += 1
        bad += int(not np.array_equal(w > 0, expected_keep[epoch]))
    out.put(("locked", reads, bad))


def torn_reads_without_the_lock(path, expected_keep, seconds, out):
    """The same reader on the raw mapped array, no stamp: how often it sees a mixed epoch (shows
    that the writer's passes really do interleave with readers, so the locked test means something)."""
    store = ScoreStore.open(path, readonly=True)
    masks = [m for m in expected_keep]
    reads = torn = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        keep = store.weight > 0
        reads += 1
        torn += int(not any(np.array_equal(keep, m) for m in masks))
    out.put(("raw", reads, torn))


def pruner_job(path, n):
    """A Pruner on a memory-mapped store, selecting epochs in a loop (the writer of the stress test)."""
    pruner = Pruner(n, policy="random", prune_ratio=0.5, seed=3, store=ScoreStore.open(path, readonly=False))
    epoch = 0
    while True:
        pruner.select(epoch % 4)
        epoch += 1
