"""How a stream reads one epoch's weights: from the training process's own array, or from the
shared store file under its epoch stamp (waiting out a select in another process, refusing a change
of epoch mid-read)."""
from __future__ import annotations

import numpy as np

from ..store.host import ScoreStore


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
