"""How a stream's shards are shared: by DDP rank and DataLoader worker (as wds.split_by_node and
wds.split_by_worker do), or by shard ownership under a ShardedPruner; and the sample counts that
keep every rank running the same number of batches."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import get_worker_info

from ..distributed.ownership import Ownership
from .._files import write_atomically
from .index import ShardIndex
from .wids import WidsIndex, looks_like_json

# Worker counts a ShardedPruner stream publishes per-worker targets for (see WorkerTargets).
MAX_WORKERS = 64


def shard_ownership(index, rank: int | None = None, world: int | None = None) -> Ownership:
    """The shards this rank owns for a whole run under a ShardedPruner (`Ownership.for_shards` over
    the index's shards; rank and world default to torch.distributed's)."""
    if isinstance(index, (str, os.PathLike)):
        index = WidsIndex.load(index) if looks_like_json(index) else ShardIndex.load(index)
    if rank is None or world is None:
        initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank = torch.distributed.get_rank() if initialised else 0
        world = torch.distributed.get_world_size() if initialised else 1
    return Ownership.for_shards([index.shard_range(s) for s in range(len(index.urls if isinstance(index, WidsIndex)
                                                                             else index.shards))], rank, world)


@dataclass(frozen=True)
class Seat:
    """Where one copy of a stream reads: DDP rank `rank` of `world`, DataLoader worker `worker` of
    `workers` (0 of 1 in the training process itself)."""
    rank: int = 0
    world: int = 1
    worker: int = 0
    workers: int = 1

    @classmethod
    def here(cls, trainer_rank_world: tuple[int, int] | None = None) -> "Seat":
        """This process's seat. A DataLoader worker started by spawn or forkserver has no process
        group: it takes `trainer_rank_world`, the training process's, recorded when the stream was
        sent to it (without it, every rank's workers would read every shard)."""
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        elif info is not None and trainer_rank_world is not None:
            rank, world = trainer_rank_world
        else:
            rank, world = 0, 1
        return cls(rank, world, worker, workers)


class ShardShares:
    """Which shards (and which of their kept samples) each seat reads in an epoch. `bounds` holds
    the first id of every shard and the end id (from an index; None without one). Under a
    ShardedPruner (`ownership`), a rank reads only the shards it owns, and its store holds their
    samples in its own slots."""

    def __init__(self, num_shards: int, bounds: np.ndarray | None, ownership: Ownership | None,
                 shuffle: bool, seed: int):
        self.num_shards, self.bounds, self.shuffle, self.seed = num_shards, bounds, shuffle, seed
        self.ownership = ownership
        self._slot_start: dict[int, int] = {}
        if ownership is not None:
            self._own(ownership)

    def _own(self, ownership: Ownership) -> None:
        if self.bounds is None:
            raise ValueError("a ShardedPruner stream needs an index (each rank owns whole shards, numbered in "
                             "advance): build it with build_index(urls, out=..., distributed=True) on every rank, "
                             "which scans 1/world of the shards per rank, or pass a wids index")
        ranges = [self.id_range(s) for s in range(self.num_shards)]
        if ownership.kind != "shards" or [tuple(r) for r in ownership.shard_ranges] != ranges:
            raise ValueError("the ShardedPruner's ownership was not made for this index: create it with "
                             "ShardedPruner(index.num_samples, ownership=shard_ownership(index), ...)")
        self._slot_start = {s: int(ownership.find_slots(np.array([ranges[s][0]]))[0]) for s in ownership.shards}

    def id_range(self, shard: int) -> tuple[int, int]:
        """Global ids [first, end) of shard `shard`'s samples."""
        return int(self.bounds[shard]), int(self.bounds[shard + 1])

    def slot_range(self, shard: int) -> tuple[int, int]:
        """Where shard `shard`'s samples sit in the store: their ids, or this rank's slots (sharded)."""
        lo, hi = self.id_range(shard)
        if self.ownership is None:
            return lo, hi
        start = self._slot_start[shard]
        return start, start + hi - lo

    def slot(self, sample_id: int) -> int:
        if self.ownership is None:
            return sample_id
        return int(self.ownership.find_slots(np.array([sample_id]))[0])

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's order of all shards."""
        if self.shuffle:
            return np.random.default_rng([self.seed, epoch]).permutation(self.num_shards)
        return np.arange(self.num_shards)

    def rank_view(self, epoch: int, seat: Seat) -> tuple[np.ndarray, int, int]:
        """(shard order, rank, world) that `split` cuts the seat's share from: the epoch's order of
        all shards cut by rank, or (ShardedPruner) this rank's own shards, shuffled per epoch and
        rank, cut by worker only."""
        if self.ownership is None:
            return self.order(epoch), seat.rank, seat.world
        own = np.array(self.ownership.shards, dtype=np.int64)
        if self.shuffle:
            own = np.random.default_rng([self.seed, epoch, self.ownership.rank]).permutation(own)
        return own, 0, 1

    def shards_of(self, epoch: int, seat: Seat) -> list[int]:
        """The whole shards the seat reads in `epoch`, in order."""
        return split(*self.rank_view(epoch, seat), seat.worker, seat.workers).tolist()

    def kept_per_shard(self, weights) -> np.ndarray:
        """Kept samples per shard (0 for shards another rank owns)."""
        shards = range(self.num_shards) if self.ownership is None else self.ownership.shards
        kept = np.zeros(self.num_shards, dtype=np.int64)
        for s in shards:
            kept[s] = int(np.count_nonzero(weights.slice(*self.slot_range(s)) > 0))
        return kept

    def kept_share(self, kept: np.ndarray, weights, epoch: int, seat: Seat) -> tuple[list, int]:
        """The seat's part of the epoch's kept samples under torch.distributed: the kept samples of
        the shard order (all shards, or a ShardedPruner rank's own), in order, cut into one run per
        (rank, worker) whose lengths differ by at most one. A shard's kept members may so be read by
        two workers (indexed reads are random access; a streamed shard is read up to the run's end).
        Returns the run as (shard, first sample, end sample or None) segments and its number of kept
        samples. Every rank computes every cut from its own identical store."""
        order, rank, world = self.rank_view(epoch, seat)
        parts, part = world * seat.workers, rank * seat.workers + seat.worker
        cum = np.concatenate([[0], np.cumsum(kept[order])])
        total = int(cum[-1])
        a, b = part * total // parts, (part + 1) * total // parts
        segments = []
        for i, shard in enumerate(order.tolist()):
            c0, c1 = int(cum[i]), int(cum[i + 1])
            lo, hi = max(a, c0), min(b, c1)
            if lo >= hi:
                continue
            positions = None
            if lo > c0 or hi < c1:        # a cut inside this shard: where its kept samples sit
                positions = np.flatnonzero(weights.slice(*self.slot_range(shard)) > 0)
            begin = 0 if lo == c0 else int(positions[lo - c0])
            end = None if hi == c1 else int(positions[hi - c0])
            segments.append((shard, begin, end))
        return segments, b - a

    def equal_share(self, kept: np.ndarray, epoch: int, seat: Seat) -> int:
        """Samples every seat yields this epoch under torch.distributed (without shard ownership),
        so every rank runs the same number of batches: the longest run of `kept_share`,
        ceil(kept / (world * workers)); the shorter runs repeat samples of their own (as
        DistributedSampler pads). Every rank computes it from its own identical store, with no
        collective. With ownership a rank sees only its own shards: see WorkerTargets."""
        order, _, world = self.rank_view(epoch, seat)
        return -(-int(kept[order].sum()) // (world * seat.workers))

    def padding_source(self, segments: list, kept_any: bool, epoch: int) -> list:
        """What a seat repeats to reach its equal share: its own kept samples, or every shard's
        when it kept none (a ShardedPruner rank then has nothing it may read: an error)."""
        if kept_any:
            return segments
        if self.ownership is not None:
            raise ValueError(f"rank {self.ownership.rank} kept no sample of its shards in epoch {epoch}, so it has "
                             "nothing to repeat to stay in step with the other ranks; use a lower prune ratio or "
                             "more, smaller shards per rank")
        return [(shard, 0, None) for shard in self.order(epoch).tolist()]


class WorkerTargets:
    """ShardedPruner under DDP: the samples each DataLoader worker of every rank yields in an epoch.
    A rank sees only its own shards, so the training process reduces, for every worker count W up
    to MAX_WORKERS, ceil(rank's kept / W) to its maximum over the ranks (one all_reduce of
    MAX_WORKERS integers) and writes the list beside its store (`<store_path>.targets`), where its
    DataLoader workers read it."""

    def __init__(self, store_path: str | None):
        self.store_path = store_path
        self._targets = None          # (epoch, samples per worker for 1..MAX_WORKERS workers)

    def published(self, epoch: int) -> bool:
        """This process already holds `epoch`'s targets (it reduced them, or read them)."""
        return self._targets is not None and self._targets[0] == epoch

    def publish(self, epoch: int, kept_here: int, partition) -> None:
        """Collective: every rank calls it once per epoch with its own kept count."""
        local = [-(-kept_here // workers) for workers in range(1, MAX_WORKERS + 1)]
        targets = partition.max(np.array(local, dtype=np.int64)).tolist()
        self._targets = (epoch, targets)
        if self.store_path is not None:
            write_atomically(self.store_path + ".targets",
                             lambda f: f.write(json.dumps({"epoch": epoch, "targets": targets}).encode()))

    def target(self, epoch: int, workers: int) -> int:
        if workers > MAX_WORKERS:
            raise ValueError(f"a ShardedPruner stream supports up to {MAX_WORKERS} DataLoader workers, got {workers}")
        if not self.published(epoch):
            try:
                with open(self.store_path + ".targets", "rb") as f:
                    saved = json.loads(f.read().decode())
                self._targets = (saved["epoch"], saved["targets"])
            except (OSError, ValueError, KeyError, TypeError):
                self._targets = None
        if not self.published(epoch):
            raise ValueError(f"no per-worker sample target for epoch {epoch} beside '{self.store_path}': call "
                             "stream.set_epoch(epoch) on every rank before iterating")
        return int(self._targets[1][workers - 1])


def padded(read_shard, source: list, count: int, done: int):
    """(repeats so far, sample) for `count` repeats of the samples of `source`'s (shard, first,
    end) runs, in order and cycling; the first `done` were yielded before a resume and are skipped.
    `read_shard(shard, first, end)` yields (next ordinal, sample) pairs."""
    produced = 0
    while produced < count:
        cycle_start = produced
        for shard, begin, end in source:
            for _, sample in read_shard(shard, begin, end):
                produced += 1
                if produced > done:
                    yield produced, sample
                if produced == count:
                    return
        if produced == cycle_start:
            return      # nothing kept anywhere (cannot happen when count > 0): never spin


def split(order: np.ndarray, rank: int, world: int, worker: int, workers: int) -> np.ndarray:
    """The shards (from the epoch's order) that one DataLoader worker of one rank reads, as
    wds.split_by_node then wds.split_by_worker assign them."""
    return order[rank::world][worker::workers]
