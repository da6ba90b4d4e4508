"""PrunedIterableDataset: WebDataset samples with the pruned ones dropped before any decoder runs."""
from __future__ import annotations

from typing import Iterator

from torch.utils.data import IterableDataset, get_worker_info

from .._validate import as_count
from ..pruner.pruner import Pruner
from . import remote
from .epoch_weights import EpochWeights
from .index import ShardIndex
from .readers import ReadOptions, ReadStats, ShardReader, StopPass
from .epochs import EpochChecks, worker_weights
from .reports import pass_done, reset_received, workers_received
from .shares import Seat, ShardShares, WorkerTargets, padded, split
from .source import check_shared_key_table, open_key_table, open_source, shard_bounds


class PrunedIterableDataset(IterableDataset):
    """Iterates WebDataset samples as dicts with ``__key__``, ``__url__``, ``__id__`` (int64 dense
    id) and ``__weight__`` (float32), dropping the samples the pruner pruned this epoch before any
    later stage (decoder, map) sees them.

    ``source`` is shard urls (a list or a brace pattern) or a webdataset pipeline yielding raw
    samples, with no decoder yet (e.g. ``wds.WebDataset(urls, shardshuffle=...)``).

    With urls and ``index=`` (from `build_index`) only kept samples' bytes are read (seek + read per
    member). ``index=`` also takes a wids shard index (``widsindex create`` JSON, or a `WidsIndex`):
    ids are then dense in shard order, and shards are streamed. With an index, ``source=None`` takes
    the index's urls. Otherwise ids come from a `KeyTable` (url + key -> id in order of first
    appearance): ``key_table=`` takes a path or a KeyTable, by default ``<store_path>.keys`` beside
    the pruner's memory-mapped store, shared by DataLoader workers and reused by a restarted job.

    With urls, shards are shuffled per epoch with the pruner's seed and split across DDP ranks and
    DataLoader workers like ``wds.split_by_node`` / ``wds.split_by_worker``; a pipeline source does
    its own. DataLoader workers read the keep flags and weights from the pruner's memory-mapped
    store (``Pruner(store_path=...)``). ``state_dict()`` holds (epoch, shard position, sample
    offset) for exact resume.
    """

    def __init__(self, source, pruner: Pruner, *, index=None, key_table=None, shuffle_shards: bool = True,
                 handler=None, epoch_length: int | None = None):
        if not isinstance(pruner, Pruner):
            raise TypeError(f"pruner must be an emp_data.Pruner, got {type(pruner).__name__}")
        self.pruner = pruner
        self.store_path = pruner.store_path     # the file workers read weights from (GPU store: its host copy)
        self.handler = handler
        self.epoch_length = epoch_length
        self.pipeline, self.urls, self._index, self._wids, self.index_path = open_source(source, index, pruner)
        # Which shards each (rank, worker) reads; a sharded partition's rank reads only those it owns.
        self.shares = ShardShares(len(self.urls), shard_bounds(self._index or self._wids, len(self.urls)),
                                  pruner.ownership, bool(shuffle_shards), pruner.seed)
        self.targets = WorkerTargets(self.store_path)    # sharded DDP: samples per worker, all ranks'
        self.key_table = None if index is not None else open_key_table(key_table, pruner)
        self._key_table_checked = False
        self.epoch = 0
        self._start = self._position = (0, 0)    # (shard position, sample offset): to resume from, and now
        self._finished = None        # the last epoch this copy of the stream read to its end
        self._checks = EpochChecks()    # epoch sequences to warn about or refuse
        self._dist = None            # (rank, world) of the training process, for workers (see Seat.here)
        self.read_gap = remote.DEFAULT_GAP  # indexed mode: merge kept members closer than this (bytes)
        self.read_ahead = 32                # indexed mode: requests in flight on a remote shard
        self.request_cost = None            # indexed mode: bytes one request costs (None: latency bytes / read_ahead)
        self.check_headers = True           # indexed mode: read and check each member's tar header (512 B)
        self.stats = ReadStats(self.store_path)   # what this copy of the stream really read
        if self.store_path is not None:
            reset_received(self.store_path)    # DataLoader workers report theirs there

    def __getstate__(self):
        state = dict(self.__dict__)
        state["pruner"] = None
        state["_dist"] = (seat := self._seat()).rank, seat.world   # pickled in the training process: its rank
        if self.index_path is not None:
            state["_index"] = None
        if self.key_table is not None and self.key_table.path is None:
            state["key_table"] = None   # anonymous memory: main process only (checked in __iter__)
        return state

    def set_epoch(self, epoch: int) -> None:
        """Make `epoch` current: selects it in the pruner (main process) and re-shuffles shards.
        `epoch` is an int >= 0. Going back to an earlier epoch, or past the pruner's `epochs`, is
        allowed and warned about once (it re-selects from today's scores, or trains every sample)."""
        epoch = as_count(epoch, "epoch")
        self._checks.on_set_epoch(epoch, getattr(self.pruner, "epochs", None))
        self.epoch = epoch
        self._start = (0, 0)
        self._dist = (seat := self._seat()).rank, seat.world       # forked workers copy it from here
        if self.pruner is not None:
            self._select_in_trainer()

    def _select_in_trainer(self) -> None:
        """Select the stream's epoch in the training process (every rank at once under DDP): the
        pruner's selection, the check that ranks share one key table, and for a ShardedPruner the
        per-worker sample targets that keep the ranks in step."""
        if self.pruner.epoch != self.epoch:
            if self.key_table is not None and self.pipeline is None:
                self._checks.check_numbered_all(len(self.key_table), self._finished is not None,
                                                self.pruner.num_samples)
            self.pruner.select(self.epoch)
        seat = self._seat()
        if self.key_table is not None and seat.world > 1 and not self._key_table_checked:
            check_shared_key_table(self.key_table, seat.world)
            self._key_table_checked = True
        if self.shares.ownership is not None and seat.world > 1 and not self.targets.published(self.epoch):
            weights = EpochWeights(self.epoch, array=self.pruner.store.weight)
            order, _, _ = self.shares.rank_view(self.epoch, seat)
            kept_here = int(self.shares.kept_per_shard(weights)[order].sum())
            self.targets.publish(self.epoch, kept_here, self.pruner.partition)

    def _seat(self) -> Seat:
        return Seat.here(self._dist)

    def __len__(self):
        if self.epoch_length is None:
            raise TypeError("PrunedIterableDataset has no length unless epoch_length= is given")
        return self.epoch_length

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "shard": self._position[0], "sample": self._position[1]}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self._start = (int(state["shard"]), int(state["sample"]))
        if self.pruner is not None and get_worker_info() is None:
            self._select_in_trainer()          # stamp the store: workers (persistent ones too) follow it

    def _weights(self) -> "EpochWeights":
        """This epoch's weights. In the training process they are the pruner's (selected here if
        needed). A DataLoader worker reads the pruner's memory-mapped store and takes the epoch from
        its stamp, so persistent workers follow `set_epoch` and a resume made in the main process."""
        in_worker = get_worker_info() is not None
        if self.pruner is not None and not in_worker:
            self._select_in_trainer()
            return EpochWeights(self.epoch, array=self.pruner.store.weight)
        weights = worker_weights(self.store_path, self.epoch, self._start == (0, 0), self._finished,
                                 self._seat().workers)
        if weights.epoch != self.epoch:
            # The trainer selected another epoch than this copy of the stream knows (persistent
            # workers, or a resume): the store wins; a saved position only holds for its own epoch.
            self.epoch, self._start = weights.epoch, (0, 0)
        return weights

    def __iter__(self) -> Iterator[dict]:
        if self._index is None and self.index_path is not None:
            self._index = ShardIndex.load(self.index_path)
        if self._index is None and self._wids is None and self.key_table is None:
            raise ValueError("DataLoader workers cannot share an in-memory key table: create the Pruner with "
                             "store_path= (the table then lives beside it) or pass key_table=<path>")
        weights = self._weights()
        reader = ShardReader(self.urls, self._index, self._wids, self.key_table, self.shares, weights,
                             ReadOptions(self.handler, self.read_gap, self.read_ahead, self.request_cost,
                                         self.check_headers), self.stats)
        start_shard, start_sample = self._start
        self._start = (0, 0)
        if self.pipeline is not None:
            for ordinal, sample in reader.pipeline(self.pipeline, start_sample):
                self._position = (0, ordinal)
                yield sample
            self._end_epoch()
            return
        # This seat's share: (shard, first sample, end sample or None) runs of the epoch.
        seat = self._seat()
        segments = [(shard, 0, None) for shard in self.shares.shards_of(self.epoch, seat)]
        target, mine = None, 0
        if seat.world > 1:
            if self._index is None and self._wids is None:
                raise ValueError("under torch.distributed every rank must run the same number of batches per epoch, "
                                 "and a stream without an index cannot know its count in advance: build an index "
                                 "(build_index) or pass a wids index")
            kept = self.shares.kept_per_shard(weights)
            segments, mine = self.shares.kept_share(kept, weights, self.epoch, seat)
            target = self._equal_share(kept, seat)
        stopped = False
        try:
            for pos in range(start_shard, len(segments)):
                shard, begin, end = segments[pos]
                first = max(begin, start_sample) if pos == start_shard else begin
                self._position = (pos, first)
                for ordinal, sample in reader.shard(shard, first, end):
                    self._position = (pos, ordinal)
                    yield sample
        except StopPass:          # the handler said stop (webdataset's ignore_and_stop)
            stopped = True
        if target is not None and not stopped:
            # Repeats up to the equal share; the position is (number of segments, repeats so far).
            done = start_sample if start_shard >= len(segments) else 0
            source = self.shares.padding_source(segments, mine > 0, self.epoch)
            for repeats, sample in padded(reader.shard, source, target - mine, done):
                self._position = (len(segments), repeats)
                yield sample
        self._position = (len(segments), 0)
        self._end_epoch()

    def _equal_share(self, kept, seat: Seat) -> int:
        """Samples every seat yields this epoch under torch.distributed, so that every rank runs the
        same number of batches (see ShardShares.equal_share and WorkerTargets)."""
        if self.shares.ownership is not None:
            return self.targets.target(self.epoch, seat.workers)
        return self.shares.equal_share(kept, self.epoch, seat)

    @property
    def bytes_read(self) -> int:
        """Bytes received from shards: the kept members' reads with an index (a server that ignores
        Range sends whole shards: they count whole), whole remote shards without one. In the training
        process this includes what its DataLoader workers received, which they report beside the
        store (`<store_path>.received`)."""
        if get_worker_info() is None and self.pruner is not None and self.store_path is not None:
            return self.stats.received + workers_received(self.store_path)
        return self.stats.received

    # What this copy of the stream read: shards a handler skipped (webdataset's warn_and_continue), the
    # sizes of the shards indexed reads came from, and samples whose (url, key) repeated in one shard.
    skipped_shards = property(lambda self: self.stats.skipped_shards)
    shard_bytes = property(lambda self: self.stats.shard_bytes)
    duplicate_keys = property(lambda self: self.stats.duplicate_keys)

    def _end_epoch(self):
        self._finished = self.epoch
        if get_worker_info() is not None:
            pass_done(self.store_path, self.epoch)
        if self.key_table is not None:
            self.key_table.flush()   # the ids of this pass survive a power loss
        if self.pruner is not None and get_worker_info() is None:
            # The training process moves on by itself: a checkpoint taken now resumes at the start
            # of the next epoch, not at the end of this one (which would yield nothing).
            self.epoch += 1
            self._position = (0, 0)

    def steps_per_epoch(self, batch_size: int, num_workers: int = 0, drop_last: bool = False,
                        epoch: int | None = None) -> int:
        """Batches this rank's DataLoader yields in `epoch` (default: the current one), exactly: each
        DataLoader worker batches its own share of the shards, so each ends with its own partial
        batch, and under torch.distributed this is one rank's count (every rank's is the same; see
        'Equal batches'). For LR schedulers and progress bars. Needs an index (counts known in
        advance) and the training process's stream."""
        batch_size = as_count(batch_size, "batch_size", minimum=1)
        workers = max(as_count(num_workers, "num_workers", minimum=0), 1)
        if self._index is None and self._wids is None:
            raise ValueError("steps_per_epoch needs an index (build_index or a wids index): without one the "
                             "number of samples is not known before the pass")
        if self.pruner is None:
            raise ValueError("steps_per_epoch runs in the training process (it reads the pruner's selection)")
        saved = self.epoch
        self.epoch = self.epoch if epoch is None else as_count(epoch, "epoch")
        try:
            self._select_in_trainer()
            kept = self.shares.kept_per_shard(EpochWeights(self.epoch, array=self.pruner.store.weight))
            seat = self._seat()
            if seat.world > 1:
                counts = [self._equal_share(kept, Seat(seat.rank, seat.world, 0, workers))] * workers
            else:
                order, rank, world = self.shares.rank_view(self.epoch, seat)
                counts = [int(kept[split(order, rank, world, w, workers)].sum()) for w in range(workers)]
        finally:
            self.epoch = saved
        return sum(c // batch_size if drop_last else -(-c // batch_size) for c in counts)

    @property
    def samples_seen(self) -> int:
        """Distinct samples numbered so far by the key table (all processes), or the index's count."""
        if self.key_table is not None:
            return len(self.key_table)
        return (self._index or self._wids).num_samples

    @property
    def key_collisions(self) -> int:
        """Distinct keys whose 64-bit hash collided with an earlier key (kept apart; 0 with an index)."""
        return self.key_table.collisions if self.key_table is not None else 0
