"""PrunedIterableDataset: WebDataset samples with the pruned ones dropped before any decoder runs."""
from __future__ import annotations

import warnings
from typing import Iterator

from torch.utils.data import IterableDataset, get_worker_info

from .._validate import as_count
from ..pruner.pruner import Pruner
from ..store.host import ScoreStore
from . import remote
from .epoch_weights import EpochWeights
from .index import ShardIndex
from .readers import ShardReaders, _StopPass
from .reports import pass_done, passes_done, report_received, reset_received, workers_received
from .shares import RankShares, _worker_count
from .source import open_key_table, open_source


class PrunedIterableDataset(ShardReaders, RankShares, IterableDataset):
    """Iterates WebDataset samples as dicts with ``__key__``, ``__url__``, ``__id__`` (int64 dense
    id) and ``__weight__`` (float32), dropping the samples the pruner pruned this epoch before any
    later stage (decoder, map) sees them.

    ``source`` is either shard urls (a list or a brace pattern) or an existing webdataset pipeline
    that yields raw samples (e.g. ``wds.WebDataset(urls, shardshuffle=...)`` or
    ``wds.DataPipeline(wds.SimpleShardList(urls), wds.split_by_worker, wds.tarfile_to_samples())``,
    with no decoder yet).

    With urls and ``index=`` (from `build_index`) only kept samples' bytes are read (seek + read per
    member). ``index=`` also takes a wids shard index (``widsindex create`` JSON, or a `WidsIndex`):
    ids are then dense in shard order from its per-shard counts, and shards are streamed. With an
    index, ``source=None`` takes the index's urls. Otherwise ids come from a `KeyTable` (url + key
    -> id in order of first appearance): ``key_table=`` takes a path or a KeyTable; by default it is
    the file ``<store_path>.keys`` beside the pruner's memory-mapped store, shared by DataLoader
    workers and reused by a restarted job.

    With urls, shards are shuffled per epoch with the pruner's seed and split across DDP ranks and
    DataLoader workers like ``wds.split_by_node`` / ``wds.split_by_worker``; a pipeline source does
    its own shuffling and splitting. In DataLoader workers the keep flags and weights are read from
    the pruner's memory-mapped store (``Pruner(store_path=...)``). ``state_dict()`` holds (epoch,
    shard position, sample offset) for exact resume.
    """

    def __init__(self, source, pruner: Pruner, *, index=None, key_table=None, shuffle_shards: bool = True,
                 handler=None, epoch_length: int | None = None):
        if not isinstance(pruner, Pruner):
            raise TypeError(f"pruner must be an emp_data.Pruner, got {type(pruner).__name__}")
        self.pruner = pruner
        self.store_path = pruner.store_path     # the file workers read weights from (GPU store: its host copy)
        self.seed = pruner.seed
        self.shuffle_shards = bool(shuffle_shards)
        self.handler = handler
        self.epoch_length = epoch_length
        self.pipeline, self.urls, self._index, self._wids, self.index_path = open_source(source, index, pruner)
        self.ownership = None        # a sharded partition's: this rank reads only the shards it owns
        self._targets = None         # (epoch, samples per worker for 1..MAX_WORKERS workers), sharded DDP
        if pruner.ownership is not None:
            self._own_shards(pruner.ownership)
        self.key_table = None if index is not None else open_key_table(key_table, pruner)
        self.epoch = 0
        self._start = (0, 0)        # (shard position, sample offset) to resume from
        self._position = (0, 0)
        self._finished = None        # the last epoch this copy of the stream read to its end
        self._numbered_at_select = None  # key-table ids numbered when the last epoch was selected here
        self._last_set = None        # the highest epoch given to set_epoch, and the warnings given once
        self._warned: set[str] = set()
        self._dist = None            # (rank, world) of the training process, for workers (see _rank_world)
        self.skipped_shards = 0
        self.read_gap = remote.DEFAULT_GAP  # indexed mode: merge kept members closer than this (bytes)
        self.read_ahead = 32                # indexed mode: requests in flight on a remote shard
        self.request_cost = None            # indexed mode: bytes one request costs (None: latency bytes / read_ahead)
        self.check_headers = True           # indexed mode: read and check each member's tar header (512 B)
        self._own_bytes = 0                 # bytes this copy of the stream received from shards (see bytes_read)
        self.shard_bytes = 0                # indexed mode: the sizes of the shards those came from
        if self.pruner is not None and self.store_path is not None:
            reset_received(self.store_path)    # DataLoader workers report theirs there
        self.duplicate_keys = 0      # samples whose (url, key) already appeared in the same shard pass
        self._pass_url, self._pass_ids = None, set()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["pruner"] = None
        state["_dist"] = self._rank_world()      # pickled in the training process: its rank
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
        self._warn_unusual_epoch(epoch)
        self.epoch = epoch
        self._start = (0, 0)
        self._dist = self._rank_world()          # forked workers copy it from here
        if self.pruner is not None:
            self._select_in_trainer()

    def _warn_unusual_epoch(self, epoch: int) -> None:
        planned = getattr(self.pruner, "epochs", None)
        if planned is not None and epoch >= planned and "past" not in self._warned:
            self._warned.add("past")
            warnings.warn(f"set_epoch({epoch}) is past the pruner's epochs={planned}: epochs from {planned} on are "
                          "annealing epochs, which train every sample at weight 1", stacklevel=3)
        last = self._last_set
        if last is not None and epoch < last and "back" not in self._warned:
            self._warned.add("back")
            warnings.warn(f"set_epoch({epoch}) after set_epoch({last}): epoch {epoch} is selected again from the "
                          "scores recorded since, so it keeps other samples than it did the first time",
                          stacklevel=3)
        self._last_set = epoch if last is None else max(last, epoch)

    def _select_in_trainer(self) -> None:
        """Select the stream's epoch in the training process (every rank at once under DDP): the
        pruner's selection, the check that ranks share one key table, and for a ShardedPruner the
        per-worker sample targets that keep the ranks in step."""
        if self.pruner.epoch != self.epoch:
            self._check_numbered_all()
            self.pruner.select(self.epoch)
        if self.key_table is not None and self._rank_world()[1] > 1:
            self._check_shared_key_table()
        if self.ownership is not None and self._rank_world()[1] > 1:
            self._publish_targets(EpochWeights(self.epoch, array=self.pruner.store.weight))

    def _check_numbered_all(self) -> None:
        """Without an index the stream numbers samples as it meets them, so the Pruner's size is a
        guess. Once a whole pass is known to be over (this process read one to its end, or an epoch
        went by without a new key), the count is the data's: ids the data never reaches would count
        as never seen and take the budget, so a Pruner larger than the data is refused here."""
        if self.key_table is None or self.pipeline is not None:
            return
        numbered = len(self.key_table)
        before = self._numbered_at_select
        self._numbered_at_select = numbered
        whole_pass = self._finished is not None or (before is not None and before == numbered and numbered > 0)
        if whole_pass and numbered < self.pruner.num_samples:
            raise ValueError(f"the Pruner has {self.pruner.num_samples} samples, but a whole pass of the stream "
                             f"numbered {numbered} (stream.samples_seen): the {self.pruner.num_samples - numbered} ids "
                             "the data never reaches would count as never seen and take the budget. Create the "
                             f"Pruner with num_samples={numbered} (keep the key table, delete the store), or build "
                             "an index (build_index) to know the count before training")

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
        # A worker always reads the shared file: a forked copy of an in-memory store would be a
        # snapshot that silently goes stale (persistent workers).
        if self.store_path is None:
            raise ValueError("DataLoader workers cannot see an in-memory store: create the Pruner with "
                             "store_path= so its keep flags are shared through a memory-mapped file")
        store = ScoreStore.open(self.store_path, readonly=True)
        stamp = store.epoch_stamp()
        if stamp is None:
            raise ValueError(f"no epoch is selected in the store '{self.store_path}': call stream.set_epoch(epoch) "
                             "(or pruner.select(epoch)) in the training process before iterating")
        if stamp != self.epoch:
            # The trainer selected another epoch than this copy of the stream knows (persistent
            # workers, or a resume): the store wins; a saved position only holds for its own epoch.
            self.epoch, self._start = stamp, (0, 0)
        elif self._start == (0, 0) and (self._finished == stamp or
                                         passes_done(self.store_path, stamp) >= _worker_count()):
            warnings.warn(f"epoch {stamp} is read a second time, with the same selection: the store holds no newer "
                          f"epoch. To train the next one, call stream.set_epoch({stamp + 1}) first", stacklevel=3)
        return EpochWeights(stamp, store=store)

    def __iter__(self) -> Iterator[dict]:
        if self._index is None and self.index_path is not None:
            self._index = ShardIndex.load(self.index_path)
        if self._index is None and self._wids is None and self.key_table is None:
            raise ValueError("DataLoader workers cannot share an in-memory key table: create the Pruner with "
                             "store_path= (the table then lives beside it) or pass key_table=<path>")
        weights = self._weights()
        self._pass_url = None        # duplicate-key tracking starts afresh each pass
        start_shard, start_sample = self._start
        self._start = (0, 0)
        if self.pipeline is not None:
            yield from self._pipeline_samples(start_sample, weights)
            self._end_epoch()
            return
        # This (rank, worker)'s share: (shard, first sample, end sample or None) runs of the epoch.
        segments = [(shard, 0, None) for shard in self._my_shards()]
        target, mine = None, 0
        if self._rank_world()[1] > 1:
            if self._index is None and self._wids is None:
                raise ValueError("under torch.distributed every rank must run the same number of batches per epoch, "
                                 "and a stream without an index cannot know its count in advance: build an index "
                                 "(build_index) or pass a wids index")
            kept = self._kept_per_shard(weights)
            segments, mine = self._kept_share(kept, weights)
            target = self._equal_share(kept)
        stopped = False
        try:
            for pos in range(start_shard, len(segments)):
                shard, begin, end = segments[pos]
                first = max(begin, start_sample) if pos == start_shard else begin
                self._position = (pos, first)
                yield from self._shard_samples(pos, shard, first, weights, end)
        except _StopPass:          # the handler said stop (webdataset's ignore_and_stop)
            stopped = True
        if target is not None and not stopped:
            padded = start_sample if start_shard >= len(segments) else 0
            yield from self._padding(segments, mine > 0, target - mine, padded, weights)
        self._position = (len(segments), 0)
        self._end_epoch()

    @property
    def bytes_read(self) -> int:
        """Bytes received from shards: the kept members' reads with an index (a server that ignores
        Range sends whole shards: they count whole), whole remote shards without one. In the training
        process this includes what its DataLoader workers received, which they report beside the
        store (`<store_path>.received`)."""
        if get_worker_info() is None and self.pruner is not None and self.store_path is not None:
            return self._own_bytes + workers_received(self.store_path)
        return self._own_bytes

    def _count_received(self, nbytes: int) -> None:
        self._own_bytes += nbytes
        if get_worker_info() is not None and self.store_path is not None and nbytes:
            report_received(self.store_path, nbytes)

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
