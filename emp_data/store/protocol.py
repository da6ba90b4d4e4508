"""The Store protocol: what a Pruner needs of the per-sample state, whatever holds it.

Two implementations: `ScoreStore` (host memory or a memory-mapped file that DataLoader workers
share) and `CudaScoreStore` (GPU memory, with an optional memory-mapped host copy for workers).
Device differences live behind this interface; the Pruner never asks which one it has.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

# The per-sample fields, in checkpoint order.
STORE_FIELDS = ("loss", "memory", "loss_mean", "loss_var", "times_selected", "idle", "weight")


@runtime_checkable
class Store(Protocol):
    num_samples: int
    readonly: bool
    skipped: int          # entries skipped under nonfinite="skip" since the store was made

    def __len__(self) -> int: ...

    @property
    def path(self) -> str | None:
        """The store's own memory-mapped file, if any."""

    @property
    def worker_path(self) -> str | None:
        """The memory-mapped file DataLoader workers read this epoch's weights from (None: none)."""

    def batch_ids(self, ids):
        """A batch's ids, validated, in the form this store takes (numpy or a device tensor)."""

    def record(self, ids, values, *, nonfinite: str = "raise", ema_decay: float = 0.8) -> None:
        """Record a batch: `values` is a (B, 1) or (B, 2) tensor of rows (loss[, memory term])."""

    def batch_weights(self, ids):
        """This epoch's loss weights of `ids` as a tensor (1 outside the selection)."""

    def select(self, config, seed: int, epoch: int, count: bool, partition=None):
        """(kept ids, weights) as numpy arrays and an info dict, for (seed, epoch)."""

    def current_selection(self, seed: int, epoch: int, partition=None):
        """The current epoch's (ids, weights), rebuilt from the stored weights."""

    def scores(self, config):
        """Every sample's selection score (numpy, NaN: never seen)."""

    def check(self) -> None:
        """Raise a bad entry an asynchronous update recorded."""

    def host_arrays(self) -> dict:
        """Host copies of every field in STORE_FIELDS."""

    def restore(self, arrays: dict, epoch: int | None) -> None:
        """Overwrite every field (resume); `epoch` is the one whose weights they hold."""

    def save(self, path, metadata: bytes = b"") -> None:
        """A checksummed snapshot at `path`, written atomically."""
