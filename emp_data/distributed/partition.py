"""Partitions: which samples this process's store holds, and how the processes agree on them.

A Pruner composes a policy, a store and one partition, and never asks which one it has:
- `WholePartition`: every process holds every sample. Alone, nothing to agree on; under
  torch.distributed each batch's (ids, values) is all-gathered in `loss`, so every rank's store sees
  the same updates and selects the same samples.
- `ShardedPartition`: each rank holds only the samples it owns (an `Ownership`: strided ids for
  map-style data, whole shards for streams). `loss` stays local; the selection reduces its mean,
  budget and thresholds over the ranks, and each rank trains its own kept samples, padded to the
  largest rank's count so every rank runs the same number of batches.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from .collectives import all_gather_varlen, is_distributed
from .ownership import Ownership


def _initialised() -> bool:
    return dist.is_available() and dist.is_initialized()


class WholePartition:
    """Every process holds all `num_samples` samples. `distributed`: gather each batch over the
    ranks; None (default) whenever torch.distributed runs with more than one rank."""

    kind = "whole"
    splits_samples = False    # every process holds all samples: per-rank counts are known in advance

    def __init__(self, num_samples: int, distributed: bool | None = None):
        self.num_samples = self.local_samples = int(num_samples)
        self.distributed = distributed

    @property
    def rank(self) -> int:
        return dist.get_rank() if self.gathers() else 0

    @property
    def world(self) -> int:
        return dist.get_world_size() if self.gathers() else 1

    def gathers(self) -> bool:
        return is_distributed() if self.distributed is None else bool(self.distributed)

    # ------------------------------------------------------------------------------ per step
    def local_slots(self, ids):
        return ids

    def record_batch(self, ids, values: torch.Tensor, stamp):
        """The (ids, values) every store records: every rank's, in rank order, under DDP."""
        if not self.gathers():
            return ids, values
        device = values.device if dist.get_backend() == "nccl" else torch.device("cpu")
        ids_t = ids if isinstance(ids, torch.Tensor) else torch.from_numpy(ids)
        return all_gather_varlen(ids_t.to(device), values.to(device), stamp=stamp)

    def batch_weights(self, slots, weights):
        return weights

    # ------------------------------------------------------------------------------ per epoch
    def select_args(self) -> dict:
        return {}

    def layout_args(self) -> dict:
        return {}

    def lengths(self, kept: int) -> tuple[int, int]:
        """(this rank's batch length, kept over all ranks): every rank selected the same set."""
        return kept, kept

    def pad(self, ids, weights, length: int):
        return ids, weights

    def sum(self, array: np.ndarray) -> np.ndarray:
        return array

    def max(self, array: np.ndarray) -> np.ndarray:
        return array

    def moments(self, seen: np.ndarray, n_seen: int) -> tuple[float, float]:
        """Mean and standard deviation of every seen score: numpy's own, over the one whole store."""
        if not seen.size:
            return float("nan"), float("nan")
        return float(seen.mean()), float(seen.std())

    def describe(self) -> dict:
        return {"kind": "whole", "num_samples": self.num_samples}

    def __repr__(self) -> str:
        return f"WholePartition({self.num_samples} samples)"


class ShardedPartition:
    """This rank's part of `num_samples` samples under torch.distributed (`group`, default the
    global one; without torch.distributed, one rank owning everything).

    ownership: which ids this rank owns; default ``Ownership.strided`` (id % world == rank). Streams
    use ``emp_data.webdataset.shard_ownership(index)``."""

    kind = "sharded"
    splits_samples = True     # how the kept samples fall on the ranks is known only at select

    def __init__(self, num_samples: int, ownership: Ownership | None = None, group=None):
        self.group = group
        rank, world = rank_world(group)
        if ownership is None:
            ownership = Ownership.strided(num_samples, rank, world)
        if not isinstance(ownership, Ownership):
            raise TypeError(f"ownership must be an emp_data.distributed.Ownership, got {type(ownership).__name__}")
        if (ownership.rank, ownership.world) != (rank, world):
            raise ValueError(f"ownership is for rank {ownership.rank} of {ownership.world}, this process is rank {rank} "
                             f"of {world}")
        if ownership.num_samples != num_samples:
            raise ValueError(f"ownership covers {ownership.num_samples} samples, num_samples is {num_samples}")
        self.ownership = ownership
        self.num_samples = int(num_samples)
        self.local_samples = ownership.local_samples
        self.rank, self.world = rank, world
        self.traffic = {"collectives": 0, "bytes": 0}   # of the reductions, since construction
        self._zero_pad_slots = np.zeros(0, dtype=np.int64)  # slots padding a rank that kept nothing (weight 0)

    # ------------------------------------------------------------------------------ per step
    def local_slots(self, ids) -> np.ndarray:
        return self.ownership.slots_of(ids)

    def record_batch(self, ids, values, stamp):
        return ids, values      # each rank scores only its own samples: nothing to gather

    def batch_weights(self, slots, weights):
        if self._zero_pad_slots.size:
            weights = torch.where(torch.from_numpy(np.isin(slots, self._zero_pad_slots)), 0.0, weights)
        return weights

    # ------------------------------------------------------------------------------ per epoch
    def select_args(self) -> dict:
        """The C++ selection's view of this part: its segments, and the reductions over the ranks."""
        active = self._active()
        return dict(self.layout_args(), sum=self.sum if active else None, max=self.max if active else None,
                    concat=self._concat if active else None)

    def layout_args(self) -> dict:
        return {"segments": self.ownership.segments, "global_n": self.num_samples, "salt": self.ownership.rank + 1}

    def lengths(self, kept: int) -> tuple[int, int]:
        """(the longest rank's kept count, which every rank trains; kept over all ranks). Collective."""
        longest = int(self.max(np.array([kept], dtype=np.int64))[0])
        total = int(self.sum(np.array([kept], dtype=np.int64))[0])
        return longest, total

    def pad(self, ids, weights, length: int):
        """This rank's kept ids repeated from the head up to `length` (as DistributedSampler pads); a
        rank that kept nothing runs its own samples at weight 0 (no gradient)."""
        self._zero_pad_slots = np.zeros(0, dtype=np.int64)
        if len(ids) >= length:
            return ids, weights
        if len(ids) > 0:
            return np.resize(ids, length), np.resize(weights, length)
        pad = np.resize(self.ownership.global_ids(), length)
        self._zero_pad_slots = np.unique(self.ownership.find_slots(pad))
        return pad, np.zeros(length, dtype=np.float32)

    # ---------------------------------------------------------------------------- reductions
    def _active(self) -> bool:
        return _initialised() and dist.get_world_size(self.group) > 1

    def _reduce(self, array: np.ndarray, op) -> np.ndarray:
        if not self._active():
            return array
        tensor = torch.from_numpy(np.ascontiguousarray(array)).to(_device_for(self.group))
        dist.all_reduce(tensor, op=op, group=self.group)
        self._count(tensor.numel() * tensor.element_size())
        return tensor.cpu().numpy()

    def sum(self, array: np.ndarray) -> np.ndarray:
        return self._reduce(array, dist.ReduceOp.SUM)

    def max(self, array: np.ndarray) -> np.ndarray:
        return self._reduce(array, dist.ReduceOp.MAX)

    def moments(self, seen: np.ndarray, n_seen: int) -> tuple[float, float]:
        """Mean and standard deviation of every rank's seen scores (`n_seen` of them), from sums
        reduced over the ranks. Collective."""
        seen = seen.astype(np.float64)
        sums = self.sum(np.array([seen.sum(), np.square(seen).sum()], dtype=np.float64))
        if not n_seen:
            return float("nan"), float("nan")
        mean = sums[0] / n_seen
        return float(mean), float(np.sqrt(max(sums[1] / n_seen - mean * mean, 0.0)))

    def _concat(self, array: np.ndarray) -> np.ndarray:
        if not self._active():
            return array
        (out,) = all_gather_varlen(torch.from_numpy(np.ascontiguousarray(array)).to(_device_for(self.group)))
        # Two all_gathers: the row counts (8 B a rank), then the rows (sent padded to the longest rank's).
        self._count(8 * dist.get_world_size(self.group) + out.element_size() * int(out.numel()), calls=2)
        return out.cpu().numpy()

    def _count(self, nbytes: int, calls: int = 1) -> None:
        self.traffic["collectives"] += calls
        self.traffic["bytes"] += int(nbytes)

    def describe(self) -> dict:
        return dict(self.ownership.describe(), partition="sharded")

    def __repr__(self) -> str:
        return f"ShardedPartition({self.ownership})"


def rank_world(group=None) -> tuple[int, int]:
    if _initialised():
        return dist.get_rank(group), dist.get_world_size(group)
    return 0, 1


def _device_for(group):
    """NCCL reduces CUDA tensors only; gloo (and others) host tensors."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def make_partition(partition, num_samples: int, distributed: bool | None = None):
    """The partition a Pruner's `partition=` names: "whole" (default), "sharded", or one made here."""
    if partition is None or partition == "whole":
        return WholePartition(num_samples, distributed)
    if partition == "sharded":
        return ShardedPartition(num_samples)
    if isinstance(partition, (WholePartition, ShardedPartition)):
        if partition.num_samples != num_samples:
            raise ValueError(f"partition covers {partition.num_samples} samples, num_samples is {num_samples}")
        return partition
    raise ValueError(f"partition must be 'whole', 'sharded' or a WholePartition/ShardedPartition, got {partition!r}")
