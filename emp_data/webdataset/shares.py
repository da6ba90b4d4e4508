"""How a stream's shards are shared: by DDP rank and DataLoader worker (as wds.split_by_node and
wds.split_by_worker do), or by shard ownership under a ShardedPruner; and the sample counts that
keep every rank running the same number of batches."""
from __future__ import annotations

import json
import os
import socket

import numpy as np
import torch
from torch.utils.data import get_worker_info

from ..distributed.ownership import Ownership
from .._validate import as_count
from .._files import write_atomically as _write_atomically
from .epoch_weights import EpochWeights
from .index import ShardIndex
from .wids import WidsIndex, looks_like_json

# Worker counts a ShardedPruner stream publishes per-worker targets for (see _publish_targets).
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


class RankShares:
    """PrunedIterableDataset's part that decides which shards this (rank, worker) reads and how many
    samples it yields (a mixin: it uses the stream's urls, index, pruner, epoch and seed)."""

    def _own_shards(self, ownership) -> None:
        ranges = self._index or self._wids
        if ranges is None:
            raise ValueError("a ShardedPruner stream needs an index (each rank owns whole shards, numbered in "
                             "advance): build it with build_index(urls, out=..., distributed=True) on every rank, "
                             "which scans 1/world of the shards per rank, or pass a wids index")
        shard_ranges = [tuple(ranges.shard_range(s)) for s in range(len(self.urls))]
        if ownership.kind != "shards" or [tuple(r) for r in ownership.shard_ranges] != shard_ranges:
            raise ValueError("the ShardedPruner's ownership was not made for this index: create it with "
                             "ShardedPruner(index.num_samples, ownership=shard_ownership(index), ...)")
        self.ownership = ownership
        self._slot_start = {s: int(ownership.find_slots(np.array([shard_ranges[s][0]]))[0]) for s in ownership.shards}

    def _slot_range(self, shard: int) -> tuple[int, int]:
        """Where shard `shard`'s samples sit in the store: their ids, or this rank's slots (sharded)."""
        lo, hi = (self._index or self._wids).shard_range(shard)
        if self.ownership is None:
            return lo, hi
        start = self._slot_start[shard]
        return start, start + hi - lo

    def _slot(self, sid: int) -> int:
        if self.ownership is None:
            return sid
        return int(self.ownership.find_slots(np.array([sid]))[0])

    def _rank_world(self) -> tuple[int, int]:
        """This process's (rank, world size). A DataLoader worker started by spawn or forkserver has
        no process group: it uses the training process's, recorded when the stream was sent to it
        (without this, every rank's workers would read every shard)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        if get_worker_info() is not None and self._dist is not None:
            return self._dist
        return 0, 1

    def _shard_order(self) -> np.ndarray:
        if self.shuffle_shards:
            return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.urls))
        return np.arange(len(self.urls))

    def _rank_view(self) -> tuple[np.ndarray, int, int]:
        """(shard order, rank, world) that `_split` cuts this rank's workers' shares from: the epoch's
        order of all shards cut by rank, or (ShardedPruner) this rank's own shards, shuffled per
        epoch and rank, cut by worker only."""
        if self.ownership is None:
            return (self._shard_order(), *self._rank_world())
        own = np.array(self.ownership.shards, dtype=np.int64)
        if self.shuffle_shards:
            own = np.random.default_rng([self.seed, self.epoch, self.ownership.rank]).permutation(own)
        return own, 0, 1

    def _my_shards(self) -> list[int]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        return _split(*self._rank_view(), worker, workers).tolist()

    def _kept_per_shard(self, weights) -> np.ndarray:
        """Kept samples per shard (0 for shards another rank owns)."""
        shards = range(len(self.urls)) if self.ownership is None else self.ownership.shards
        kept = np.zeros(len(self.urls), dtype=np.int64)
        for s in shards:
            kept[s] = int(np.count_nonzero(weights.slice(*self._slot_range(s)) > 0))
        return kept

    def _kept_share(self, kept: np.ndarray, weights) -> tuple[list, int]:
        """This (rank, DataLoader worker)'s part of the epoch's kept samples under torch.distributed:
        the kept samples of the shard order (all shards, or a ShardedPruner rank's own), in order, cut
        into one run per (rank, worker) whose lengths differ by at most one. A shard's kept members
        may so be read by two workers (indexed reads are random access; a streamed shard is read up
        to the run's end). Returns the run as (shard, first sample, end sample or None) segments and
        its number of kept samples. Every rank computes every cut from its own identical store."""
        order, rank, world = self._rank_view()
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        parts, part = world * workers, rank * workers + worker
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
                positions = np.flatnonzero(weights.slice(*self._slot_range(shard)) > 0)
            begin = 0 if lo == c0 else int(positions[lo - c0])
            end = None if hi == c1 else int(positions[hi - c0])
            segments.append((shard, begin, end))
        return segments, b - a

    def _equal_share(self, kept: np.ndarray, workers: int | None = None) -> int:
        """Samples every (rank, DataLoader worker) yields this epoch under torch.distributed, so every
        rank runs the same number of batches: the longest run of `_kept_share`, ceil(kept / (world *
        workers)); the shorter runs repeat one sample of their own (as DistributedSampler pads). Every
        rank computes it from its own identical store, with no collective. A ShardedPruner's rank
        sees only its own shards: the training process reduces the maxima over the ranks at select
        (`_publish_targets`) and its workers read them."""
        if workers is None:
            workers = _worker_count()
        if self.ownership is not None:
            return self._worker_target(workers)
        order, _, world = self._rank_view()
        return -(-int(kept[order].sum()) // (world * workers))

    def _publish_targets(self, weights) -> None:
        """ShardedPruner under DDP: for every worker count W up to MAX_WORKERS, the longest run any
        worker of any rank reads this epoch, ceil(rank's kept / W) maximised over the ranks (one
        all_reduce of MAX_WORKERS integers), kept here and written beside this rank's store for its
        DataLoader workers."""
        if self._targets is not None and self._targets[0] == self.epoch:
            return
        kept = self._kept_per_shard(weights)
        order, _, _ = self._rank_view()
        mine = int(kept[order].sum())
        local = [-(-mine // workers) for workers in range(1, MAX_WORKERS + 1)]
        targets = self.pruner.partition.max(np.array(local, dtype=np.int64)).tolist()
        self._targets = (self.epoch, targets)
        if self.store_path is not None:
            _write_atomically(self.store_path + ".targets",
                              lambda f: f.write(json.dumps({"epoch": self.epoch, "targets": targets}).encode()))

    def _worker_target(self, workers: int) -> int:
        if workers > MAX_WORKERS:
            raise ValueError(f"a ShardedPruner stream supports up to {MAX_WORKERS} DataLoader workers, got {workers}")
        if self._targets is None or self._targets[0] != self.epoch:
            try:
                with open(self.store_path + ".targets", "rb") as f:
                    saved = json.loads(f.read().decode())
                self._targets = (saved["epoch"], saved["targets"])
            except (OSError, ValueError, KeyError, TypeError):
                self._targets = None
        if self._targets is None or self._targets[0] != self.epoch:
            raise ValueError(f"no per-worker sample target for epoch {self.epoch} beside '{self.store_path}': call "
                             "stream.set_epoch(epoch) on every rank before iterating")
        return int(self._targets[1][workers - 1])

    def _check_shared_key_table(self) -> None:
        """Under torch.distributed every rank numbers samples in the key table: that is one table only
        if all ranks map the same file on one machine. Per-machine tables (multi-node) would give one
        id to different samples on different nodes and mix their scores: refused."""
        if getattr(self, "_key_table_checked", False):
            return
        st = os.stat(self.key_table.path) if self.key_table.path else None
        mine = (socket.gethostname(), st.st_dev, st.st_ino) if st else (socket.gethostname(), os.getpid(), None)
        everyone = [None] * self._rank_world()[1]
        torch.distributed.all_gather_object(everyone, mine)
        if any(other != everyone[0] for other in everyone) or everyone[0][2] is None:
            raise ValueError("under torch.distributed the ranks number samples in different key tables (other "
                             "machines, or other files): the same id would name different samples and their scores "
                             "would mix. Build an index (build_index or a wids index), or use a ShardedPruner with "
                             "shard ownership so that each rank scores only its own shards")
        self._key_table_checked = True

    def _padding(self, segments, kept_any, count, done, weights):
        """`count` repeats of this worker's kept samples, in order and cycling (of every shard's, if
        it kept none), the first `done` of them already yielded before a resume. The position is
        (number of segments, repeats so far)."""
        if kept_any:
            source = segments
        elif self.ownership is not None:
            raise ValueError(f"rank {self.ownership.rank} kept no sample of its shards in epoch {self.epoch}, so it "
                             "has nothing to repeat to stay in step with the other ranks; use a lower prune ratio "
                             "or more, smaller shards per rank")
        else:
            source = [(shard, 0, None) for shard in self._shard_order().tolist()]
        produced = 0
        while produced < count:
            cycle_start = produced
            for shard, begin, end in source:
                for sample in self._shard_samples(len(segments), shard, begin, weights, end):
                    produced += 1
                    if produced > done:
                        self._position = (len(segments), produced)
                        yield sample
                    if produced == count:
                        return
            if produced == cycle_start:
                return      # nothing kept anywhere (cannot happen when count > 0): never spin

    def steps_per_epoch(self, batch_size: int, num_workers: int = 0, drop_last: bool = False,
                        epoch: int | None = None) -> int:
        """Batches this rank's DataLoader yields in `epoch` (default: the current one), exactly: each
        DataLoader worker batches its own share of the shards, so each ends with its own partial
        batch, and under torch.distributed this is one rank's count (every rank's is the same; see
        'Equal batches'). For LR schedulers and progress bars. Needs an index (counts known in
        advance) and the training process's stream."""
        batch_size = as_count(batch_size, "batch_size", minimum=1)
        num_workers = as_count(num_workers, "num_workers", minimum=0)
        if self._index is None and self._wids is None:
            raise ValueError("steps_per_epoch needs an index (build_index or a wids index): without one the "
                             "number of samples is not known before the pass")
        if self.pruner is None:
            raise ValueError("steps_per_epoch runs in the training process (it reads the pruner's selection)")
        saved = self.epoch
        self.epoch = self.epoch if epoch is None else as_count(epoch, "epoch")
        try:
            self._select_in_trainer()
            kept = self._kept_per_shard(EpochWeights(self.epoch, array=self.pruner.store.weight))
            order, rank, world = self._rank_view()
            workers = max(num_workers, 1)
            counts = [int(kept[_split(order, rank, world, w, workers)].sum()) for w in range(workers)]
            if self._rank_world()[1] > 1:
                counts = [self._equal_share(kept, workers)] * workers
        finally:
            self.epoch = saved
        return sum(c // batch_size if drop_last else -(-c // batch_size) for c in counts)


def _split(order: np.ndarray, rank: int, world: int, worker: int, workers: int) -> np.ndarray:
    """The shards (from the epoch's order) that one DataLoader worker of one rank reads, as
    wds.split_by_node then wds.split_by_worker assign them."""
    return order[rank::world][worker::workers]


def _worker_count() -> int:
    info = get_worker_info()
    return 1 if info is None else info.num_workers
