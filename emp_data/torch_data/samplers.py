"""Map-style integration with torch.utils.data (and torchdata's StatefulDataLoader).

    dataset = IndexedDataset(my_dataset)            # items become (id, sample)
    sampler = PrunedSampler(pruner)                 # this epoch's kept ids, epoch advances itself
    loader = DataLoader(dataset, batch_size=256, sampler=sampler, num_workers=2)
    for epoch in range(E):
        for ids, (x, y) in loader:
            logits = model(x)
            pruner.loss(F.cross_entropy(logits, y, reduction="none"), ids, logits=logits).backward()

No torch internals are patched: the sampler is an ordinary Sampler, the loss an ordinary function.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
from torch.utils.data import Dataset, Sampler

from .._validate import as_count
from ..pruner.pruner import Pruner


class IndexedDataset(Dataset):
    """Wraps a map-style dataset so that item i is ``(i, dataset[i])``: the id travels with the
    batch to ``Pruner.loss``."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        return index, self.dataset[index]


class _KeptIdsIterator(Iterator[int]):
    """Iterates one epoch's kept ids from a position; Stateful (state: epoch and position)."""

    def __init__(self, sampler: "PrunedSampler", epoch: int, position: int):
        self._sampler = sampler
        self.epoch = epoch
        self.position = position
        self._ids = None  # computed on first use, so load_state_dict can still change the epoch

    def __iter__(self):
        return self

    def __next__(self) -> int:
        if self._ids is None:
            self._ids = self._sampler._epoch_ids(self.epoch)
        if self.position >= len(self._ids):
            self._sampler._finished(self.epoch)
            raise StopIteration
        value = int(self._ids[self.position])
        self.position += 1
        return value

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = as_count(state["epoch"], "epoch")
        self.position = as_count(state["position"], "position")
        self._ids = None


class PrunedSampler(Sampler[int]):
    """Yields this epoch's kept ids, in the pruner's shuffled order.

    Each ``iter()`` uses ``self.epoch`` (``pruner.select(epoch)``) and, once exhausted, advances
    the epoch by one; ``set_epoch`` sets it explicitly. ``len()`` is the epoch's kept count.
    ``state_dict()`` is a few integers (epoch and position; the scores are saved by
    ``pruner.save``), so torchdata's StatefulDataLoader can checkpoint every step cheaply.
    """

    def __init__(self, pruner: Pruner, start_epoch: int = 0):
        if not isinstance(pruner, Pruner):
            raise TypeError(f"pruner must be an emp_data.Pruner, got {type(pruner).__name__}")
        self.pruner = pruner
        self.epoch = as_count(start_epoch, "start_epoch")
        self._resume_position = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = as_count(epoch, "epoch")
        self._resume_position = 0

    def _epoch_ids(self, epoch: int):
        ids, _ = self.pruner.select(epoch)
        return ids

    def _finished(self, epoch: int) -> None:
        if self.epoch == epoch:
            self.epoch = epoch + 1
            self._resume_position = 0

    def __iter__(self) -> Iterator[int]:
        position, self._resume_position = self._resume_position, 0
        return _KeptIdsIterator(self, self.epoch, position)

    def __len__(self) -> int:
        if self.pruner.epoch != self.epoch:
            self.pruner.select(self.epoch)
        return self.pruner.kept_count(self.epoch)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = as_count(state["epoch"], "epoch")
        self._resume_position = as_count(state.get("position", 0), "position")


class DistributedPrunedSampler(PrunedSampler):
    """PrunedSampler for DDP: every rank computes the same selection from the same store, pads it
    to a multiple of the world size (repeating its head, as DistributedSampler does) or, with
    ``drop_last=True``, drops the tail, and takes every ``num_replicas``-th id from ``rank``.
    Use it with a Pruner whose ``loss`` all-gathers (the default under torch.distributed), so the
    stores stay identical on every rank."""

    def __init__(self, pruner: Pruner, num_replicas: int | None = None, rank: int | None = None,
                 drop_last: bool = False, start_epoch: int = 0):
        super().__init__(pruner, start_epoch)
        if num_replicas is None or rank is None:
            import torch.distributed as dist

            if not (dist.is_available() and dist.is_initialized()):
                raise ValueError("num_replicas and rank are required when torch.distributed is not initialised")
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        self.num_replicas = as_count(num_replicas, "num_replicas", minimum=1)
        self.rank = as_count(rank, "rank", minimum=0, maximum=self.num_replicas - 1)
        self.drop_last = bool(drop_last)

    def _slice(self, ids):
        r = self.num_replicas
        if self.drop_last:
            ids = ids[: len(ids) // r * r]
        elif len(ids) % r:
            ids = np.resize(ids, len(ids) + r - len(ids) % r)  # repeats from the head, cyclically
        return ids[self.rank :: r]

    def _epoch_ids(self, epoch: int):
        return self._slice(super()._epoch_ids(epoch))

    def __len__(self) -> int:
        total = super().__len__()
        r = self.num_replicas
        return total // r if self.drop_last else math.ceil(total / r)
