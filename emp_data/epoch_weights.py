"""How a stream reads one epoch's weights: from the training process's own array, or from the
shared store file under its epoch stamp (waiting out a select in another process, refusing a change
of epoch mid-read); and the small pass log that lets DataLoader workers notice an epoch read twice."""
from __future__ import annotations

import fcntl
import json
import os

import numpy as np

from .store import ScoreStore


class EpochWeights:
    """One epoch's loss weights as a stream reads them: the training process's own array, or the
    shared store file, read under its epoch stamp so that a select in another process is waited out
    (never seen half-written) and a change of epoch mid-read is an error, not a silent mix."""

    def __init__(self, epoch: int, *, array: np.ndarray | None = None, store: ScoreStore | None = None):
        self.epoch, self._array, self._store = epoch, array, store

    def slice(self, lo: int, hi: int) -> np.ndarray:
        if self._array is not None:
            return self._array[lo:hi]
        epoch, weights = self._store.read_weights(lo, hi)
        self._check(epoch)
        return weights

    def at(self, sample_id: int) -> float:
        return float(self.slice(sample_id, sample_id + 1)[0])

    def _check(self, epoch):
        if epoch != self.epoch:
            raise RuntimeError(f"the store now holds epoch {epoch}'s selection while this DataLoader worker is still "
                               f"reading epoch {self.epoch}: call stream.set_epoch (or pruner.select) only between "
                               "epochs, after the loader has been read to its end")


# Full passes that DataLoader workers have read of each selection, in a small file beside the store:
# workers of a new epoch that was never selected (a forgotten set_epoch, non-persistent workers)
# find the passes of the last one there and warn. A selection is named by the store file's identity
# and its epoch stamp, so a new store file (a new job) starts afresh.
def _selection_name(store_path: str, epoch: int) -> str:
    st = os.stat(store_path)
    return f"{st.st_dev}:{st.st_ino}:{epoch}"


def passes_done(store_path: str, epoch: int) -> int:
    try:
        with open(store_path + ".passes") as f:
            return int(json.load(f).get(_selection_name(store_path, epoch), 0))
    except (OSError, ValueError):
        return 0


def pass_done(store_path: str, epoch: int) -> None:
    try:
        with open(store_path + ".passes", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)          # workers finish at the same time
            f.seek(0)
            text = f.read()
            counts = json.loads(text) if text else {}
            name = _selection_name(store_path, epoch)
            counts = {name: int(counts.get(name, 0)) + 1}   # only the latest selection matters
            f.seek(0)
            f.truncate()
            json.dump(counts, f)
    except (OSError, ValueError):
        pass                                        # a hint only: never fail a pass over it
