"""Dynamic pruning of WebDataset tar shards: a stream that drops pruned samples before any decoder
runs (and, with an index, before their bytes are read).

    import webdataset as wds
    from emp_data import Pruner
    from emp_data.webdataset import PrunedIterableDataset, build_index

    index = build_index("data/shard-{000000..000099}.tar", out="data/index.empidx")
    pruner = Pruner(index.num_samples, policy="emp", prune_ratio=0.7, epochs=E,
                    store_path="data/scores.emp")                    # shared with loader workers
    stream = PrunedIterableDataset("data/shard-{000000..000099}.tar", pruner, index="data/index.empidx")
    pipeline = wds.DataPipeline(stream, wds.decode(), wds.to_tuple("__id__", "npy", "cls"))
    for epoch in range(E):
        stream.set_epoch(epoch)                                      # selects the epoch's samples
        for ids, x, y in DataLoader(pipeline, batch_size=..., num_workers=...):
            ...pruner.loss(per_sample, ids, logits=logits)

The index (`shard_index`) and the key table (`key_table`) live in their own modules; their public
names are importable from here too.
"""
from __future__ import annotations

import collections
import concurrent.futures
import json
import os
import socket
import tarfile
import warnings
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from . import remote
from .key_table import KeyTable
from ._validate import as_count
from .pruner import Pruner
from .ownership import Ownership
from .shard_index import ShardIndex, _is_url_list, _split_name, _write_atomically, build_index, expand_urls
from .sharded import ShardedPruner
from .epoch_weights import EpochWeights, pass_done, passes_done
from .store import ScoreStore
from .wids_index import WidsIndex, looks_like_json

__all__ = ["KeyTable", "PrunedIterableDataset", "ShardIndex", "WidsIndex", "build_index", "expand_urls",
           "shard_ownership"]

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


class PrunedIterableDataset(IterableDataset):
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
        if source is None and index is None:
            raise ValueError("source=None needs index= (the shards are then the index's); otherwise pass shard urls "
                             "or a webdataset pipeline")
        self.pipeline = None if source is None or _is_url_list(source) else source
        if self.pipeline is not None:
            if not hasattr(source, "__iter__"):
                raise TypeError(f"source must be shard urls or an iterable webdataset pipeline, got {type(source).__name__}")
            if index is not None:
                raise ValueError("index= needs shard urls as the source (it reads members by offset); a pipeline "
                                 "source has read the bytes already, so ids come from the key table")
        self.urls = [] if self.pipeline is not None or source is None else expand_urls(source)
        self.pruner = pruner
        self.store_path = pruner.store_path     # the file workers read weights from (GPU store: its host copy)
        self.seed = pruner.seed
        self.shuffle_shards = bool(shuffle_shards)
        self.handler = handler
        self.epoch_length = epoch_length
        self.index_path = None
        self._index = None           # ShardIndex: ids and member offsets
        self._wids = None            # WidsIndex: ids from per-shard counts, shards streamed
        if index is not None:
            if isinstance(index, (ShardIndex, WidsIndex)):
                loaded = index
            else:
                loaded = WidsIndex.load(index) if looks_like_json(index) else ShardIndex.load(index)
                self.index_path = os.fspath(index) if isinstance(loaded, ShardIndex) else None
            if isinstance(loaded, WidsIndex):
                self._wids, index_urls = loaded, loaded.urls
            else:
                self._index, index_urls = loaded, [s["url"] for s in loaded.shards]
            if source is None:
                self.urls = list(index_urls)
            elif [_normal_url(u) for u in self.urls] != [_normal_url(u) for u in index_urls]:
                raise ValueError("the index was built for other shards (or another order) than `urls`")
            if loaded.num_samples != pruner.num_samples:
                raise ValueError(f"index has {loaded.num_samples} samples, the pruner {pruner.num_samples}")
        self.ownership = None        # a ShardedPruner's: this rank reads only the shards it owns
        self._targets = None         # (epoch, samples per worker for 1..MAX_WORKERS workers), sharded DDP
        if isinstance(pruner, ShardedPruner):
            self._own_shards(pruner.ownership)
        self.key_table = None
        if index is None:
            if isinstance(key_table, KeyTable):
                self.key_table = key_table
            else:
                if key_table is None and pruner.store_path is not None:
                    key_table = pruner.store_path + ".keys"
                self.key_table = KeyTable(pruner.num_samples, key_table)
            if self.key_table.max_samples != pruner.num_samples:
                raise ValueError(f"key table numbers {self.key_table.max_samples} samples, the pruner {pruner.num_samples}")
            if self.key_table.existed:
                # Reopened (a restart, maybe after a crash or a power loss): void what a killed
                # process left half-done and check every id, before any worker starts. Not only when
                # the clean flag is off: after a power loss that flag's page may be older than others.
                repaired = self.key_table.recover()
                if repaired:
                    warnings.warn(f"key table '{self.key_table.path}': {repaired} insert(s) cut short by a crash "
                                  "were voided; those keys get fresh ids", stacklevel=2)
        self.epoch = 0
        self._start = (0, 0)        # (shard position, sample offset) to resume from
        self._position = (0, 0)
        self._finished = None        # the last epoch this copy of the stream read to its end
        self._dist = None            # (rank, world) of the training process, for workers (see _rank_world)
        self.skipped_shards = 0
        self.read_gap = remote.DEFAULT_GAP  # indexed mode: merge kept members closer than this (bytes)
        self.read_ahead = 4                 # indexed mode: requests in flight on a remote shard
        self.bytes_read = 0                 # indexed mode: bytes fetched from shards (this copy of the stream)
        self.shard_bytes = 0                # ...and the sizes of the shards those came from
        self.duplicate_keys = 0      # samples whose (url, key) already appeared in the same shard pass
        self._pass_url, self._pass_ids = None, set()

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

    # --- pickling for DataLoader workers: never the Pruner (its store travels by path)
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
        """Make `epoch` current: selects it in the pruner (main process) and re-shuffles shards."""
        self.epoch = int(epoch)
        self._start = (0, 0)
        self._dist = self._rank_world()          # forked workers copy it from here
        if self.pruner is not None:
            self._select_in_trainer()

    def _select_in_trainer(self) -> None:
        """Select the stream's epoch in the training process (every rank at once under DDP): the
        pruner's selection, the check that ranks share one key table, and for a ShardedPruner the
        per-worker sample targets that keep the ranks in step."""
        if self.pruner.epoch != self.epoch:
            self.pruner.select(self.epoch)
        if self.key_table is not None and self._rank_world()[1] > 1:
            self._check_shared_key_table()
        if self.ownership is not None and self._rank_world()[1] > 1:
            self._publish_targets(EpochWeights(self.epoch, array=self.pruner.store.weight))

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

    def __len__(self):
        if self.epoch_length is None:
            raise TypeError("PrunedIterableDataset has no length unless epoch_length= is given")
        return self.epoch_length

    # --- resume
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "shard": self._position[0], "sample": self._position[1]}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self._start = (int(state["shard"]), int(state["sample"]))
        if self.pruner is not None and get_worker_info() is None:
            self._select_in_trainer()          # stamp the store: workers (persistent ones too) follow it

    # --- iteration
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
            warnings.warn(f"epoch {stamp} is read a second time: the store still holds its selection. Call "
                          "stream.set_epoch(epoch) before each epoch", stacklevel=3)
        return EpochWeights(stamp, store=store)

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

    def _equal_share(self, kept: np.ndarray, workers: int | None = None) -> int:
        """Samples every (rank, DataLoader worker) yields this epoch under torch.distributed: the most
        any of them has kept, so every rank runs the same number of batches (the others repeat kept
        samples of their own, as DistributedSampler pads). Every rank computes the same number from
        the same store, shard order and worker count, with no collective. A ShardedPruner's rank
        sees only its own shards: the training process reduces the maxima over the ranks at select
        (`_publish_targets`) and its workers read them."""
        if workers is None:
            workers = _worker_count()
        if self.ownership is not None:
            return self._worker_target(workers)
        _, world = self._rank_world()
        order = self._shard_order()
        return max(int(kept[_split(order, r, world, w, workers)].sum()) for r in range(world) for w in range(workers))

    def _publish_targets(self, weights) -> None:
        """ShardedPruner under DDP: for every worker count W up to MAX_WORKERS, the most samples any
        worker of any rank keeps this epoch (one all_reduce of MAX_WORKERS integers), kept here and
        written beside this rank's store for its DataLoader workers."""
        if self._targets is not None and self._targets[0] == self.epoch:
            return
        kept = self._kept_per_shard(weights)
        order, _, _ = self._rank_view()
        local = [max(int(kept[order[w::workers]].sum()) for w in range(workers))
                 for workers in range(1, MAX_WORKERS + 1)]
        targets = self.pruner._max(np.array(local, dtype=np.int64)).tolist()
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
        shards = self._my_shards()
        target = kept = None
        if self._rank_world()[1] > 1:
            if self._index is None and self._wids is None:
                raise ValueError("under torch.distributed every rank must run the same number of batches per epoch, "
                                 "and a stream without an index cannot know its count in advance: build an index "
                                 "(build_index) or pass a wids index")
            kept = self._kept_per_shard(weights)
            target = self._equal_share(kept)
        stopped = False
        try:
            for pos in range(start_shard, len(shards)):
                shard = shards[pos]
                first = start_sample if pos == start_shard else 0
                self._position = (pos, first)
                yield from self._shard_samples(pos, shard, first, weights)
        except _StopPass:          # the handler said stop (webdataset's ignore_and_stop)
            stopped = True
        if target is not None and not stopped:
            mine = int(kept[shards].sum())
            padded = start_sample if start_shard >= len(shards) else 0
            yield from self._padding(shards, mine > 0, target - mine, padded, weights)
        self._position = (len(shards), 0)
        self._end_epoch()

    def _shard_samples(self, pos, shard, first, weights):
        if self._index is not None:
            return self._indexed_shard(pos, shard, first, weights)
        return self._streamed_shard(pos, shard, first, weights)

    def _padding(self, shards, kept_any, count, done, weights):
        """`count` repeats of this worker's kept samples, in order and cycling (of every shard's, if
        it kept none), the first `done` of them already yielded before a resume. The position is
        (number of shards, repeats so far)."""
        if kept_any:
            source = shards
        elif self.ownership is not None:
            raise ValueError(f"rank {self.ownership.rank} kept no sample of its shards in epoch {self.epoch}, so it "
                             "has nothing to repeat to stay in step with the other ranks; use a lower prune ratio "
                             "or more, smaller shards per rank")
        else:
            source = self._shard_order().tolist()
        produced = 0
        while produced < count:
            cycle_start = produced
            for shard in source:
                for sample in self._shard_samples(len(shards), shard, 0, weights):
                    produced += 1
                    if produced > done:
                        self._position = (len(shards), produced)
                        yield sample
                    if produced == count:
                        return
            if produced == cycle_start:
                return      # nothing kept anywhere (cannot happen when count > 0): never spin

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

    def _pipeline_samples(self, first, weights):
        """Samples of a user's pipeline, numbered by the key table; the first `first` are skipped
        (resume: the pipeline must repeat an epoch's order, e.g. seeded shuffles)."""
        ordinal = -1
        for ordinal, sample in enumerate(self.pipeline):
            if not isinstance(sample, dict) or "__key__" not in sample:
                got = sorted(sample)[:6] if isinstance(sample, dict) else type(sample).__name__
                raise ValueError(f"sample {ordinal} of the pipeline has no '__key__' (got {got}); "
                                 "PrunedIterableDataset takes raw webdataset samples, before decoding or to_tuple")
            self._position = (0, ordinal + 1)
            if ordinal < first:
                continue
            url = sample.get("__url__", "")
            out = self._keep(url, sample["__key__"], weights)
            if out is not None:
                out.update((k, v) for k, v in sample.items() if k not in out)
                yield out
        self._position = (0, ordinal + 1)

    def _indexed_shard(self, pos, shard, first, weights):
        """The kept samples of one shard, reading only their members' bytes: neighbouring members
        share a request (gap below `read_gap`), a few requests run ahead of the consumer on remote
        shards, and the whole span is one request when that is cheaper (see emp_data.remote)."""
        url = self.urls[shard]
        lo, _ = self._index.shard_range(shard)
        shard_weights = weights.slice(*self._slot_range(shard))
        kept = (np.flatnonzero(shard_weights[first:] > 0) + first).tolist()
        meta = self._index.shards[shard]
        self.shard_bytes += int(meta["size"])
        members = [(j, field, off, size) for j in kept for field, off, size in self._index.sample_members(lo + j)]
        local = remote.is_local(url)      # a pread per member: pruned bytes are never read
        reads = remote.plan_reads([m[2] for m in members], [m[3] for m in members], gap=0 if local else self.read_gap,
                                  shard_size=None if local else int(meta["size"]))
        try:
            yield from self._read_kept(pos, url, lo, meta, members, reads, shard_weights, local)
        except (remote.ShardChanged, remote.RemoteError) as exc:    # as a corrupt shard in streamed mode
            self._handle(ValueError(str(exc)))

    def _read_kept(self, pos, url, lo, meta, members, reads, shard_weights, local):
        with remote.RangeReader(url, meta["size"], meta.get("etag")) as reader:
            samples: dict[int, dict] = {}
            for read, data in _fetch_ahead(reader, reads, 1 if local else self.read_ahead):
                self.bytes_read += len(data)
                for m in read.members:
                    j, field, off, size = members[m]
                    if j not in samples:
                        samples[j] = {"__key__": self._index.sample_key(lo + j), "__url__": url, "__id__": lo + j,
                                      "__weight__": np.float32(shard_weights[j])}
                    samples[j][field] = data[off - read.start:off - read.start + size]
                # Members are in file order, so reads complete samples in order: every sample before
                # the read's last one is whole, and that one too unless its next member is still to come.
                last_m = read.members[-1]
                last_j = members[last_m][0]
                last_whole = last_m + 1 == len(members) or members[last_m + 1][0] != last_j
                for j in sorted(j for j in samples if j < last_j or (j == last_j and last_whole)):
                    self._position = (pos, j + 1)
                    yield samples.pop(j)

    def _streamed_shard(self, pos, shard, first, weights):
        url = self.urls[shard]
        self._pass_url = None
        ids = None if self._wids is None else self._wids.shard_range(shard)   # wids: id = first + ordinal
        ordinal = -1
        try:
            with remote.open_stream(url) as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
                current_key, current = None, None
                for member in _members_with_data(tar):
                    name, data = member
                    key, ext = _split_name(name)
                    if key is None:
                        continue
                    if key != current_key:
                        if current is not None:
                            ordinal += 1
                            out = self._emit(url, current_key, current, ordinal, first, pos, weights, ids)
                            if out is not None:
                                yield out
                        current_key, current = key, {}
                    if ext in current:   # as build_index and webdataset's group_by_keys: an error
                        raise _DuplicateMember(f"duplicate file name in tar file: {name} (sample '{key}' already "
                                               f"has .{ext}) in shard '{url}'")
                    current[ext] = data
                if current is not None:
                    ordinal += 1
                    out = self._emit(url, current_key, current, ordinal, first, pos, weights, ids)
                    if out is not None:
                        yield out
        except (tarfile.TarError, EOFError, OSError, _DuplicateMember) as exc:
            err = exc if isinstance(exc, _DuplicateMember) else \
                ValueError(f"shard '{url}' is corrupt or truncated near sample {ordinal + 1}: {exc}")
            self._handle(err)
            return
        if ids is not None and ordinal + 1 < ids[1] - ids[0]:
            # Ids stay unique (the shard's range is fixed), but the index no longer describes the shard.
            warnings.warn(f"shard '{url}' holds {ordinal + 1} samples, the wids index says {ids[1] - ids[0]}: "
                          "the index is stale; rebuild it", stacklevel=2)

    def _handle(self, err: Exception) -> None:
        """A bad shard, as webdataset's handlers mean it: no handler raises; a handler returning True
        (warn_and_continue) skips the rest of the shard; False (ignore_and_stop) ends the pass
        quietly; a handler may also raise (reraise_exception)."""
        if self.handler is None:
            raise err from None
        if not self.handler(err):
            raise _StopPass()
        self.skipped_shards += 1

    def _emit(self, url, key, fields, ordinal, first, pos, weights, ids=None):
        self._position = (pos, ordinal + 1)
        sid = None
        if ids is not None:
            sid = ids[0] + ordinal
            if sid >= ids[1]:
                raise ValueError(f"shard '{url}' holds more than the {ids[1] - ids[0]} samples its wids index "
                                 "says: the index is stale; rebuild it")
        if ordinal < first:
            return None
        out = self._keep(url, key, weights, sid)
        if out is not None:
            out.update(fields)
        return out

    def _keep(self, url, key, weights, sid=None):
        """The id/weight header of a kept sample, None for a pruned one. `sid` is given by a wids
        index; otherwise it comes from the key table."""
        if sid is None:
            sid = self._key_table_id(url, key)
        w = weights.at(self._slot(sid))
        if not w > 0:
            return None
        return {"__key__": key, "__url__": url, "__id__": sid, "__weight__": np.float32(w)}

    def _key_table_id(self, url, key) -> int:
        try:
            sid = self.key_table.id_of(url, key)
        except ValueError as exc:     # more distinct samples than the pruner has
            raise ValueError(f"{exc} (at '{url}' key {key!r})") from None
        # The same key twice in one shard (non-consecutive members) maps to one id: report it.
        # The set covers one shard at a time, so its memory stays bounded by the shard size.
        if url != self._pass_url:
            self._pass_url, self._pass_ids = url, set()
        if sid in self._pass_ids:
            if self.duplicate_keys == 0:
                warnings.warn(f"key {key!r} occurs more than once in '{url}': its samples share one id and one "
                              "score (counted in duplicate_keys)", stacklevel=4)
            self.duplicate_keys += 1
        self._pass_ids.add(sid)
        return sid

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


def _fetch_ahead(reader, reads, ahead: int):
    """(read, bytes) for each planned read, in order, with up to `ahead` requests in flight."""
    if ahead <= 1 or len(reads) <= 1:
        for read in reads:
            yield read, reader.read(read.start, read.end)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=ahead) as pool:
        pending = collections.deque()
        for read in reads:
            pending.append((read, pool.submit(reader.read, read.start, read.end)))
            if len(pending) >= ahead:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


def _normal_url(url: str) -> str:
    """A url as indexes record it: local paths absolute, remote urls as given."""
    return os.path.abspath(remote.local_path(url)) if remote.is_local(url) else url


class _DuplicateMember(ValueError):
    """A member whose field the sample already has (an error, as in webdataset)."""


class _StopPass(Exception):
    """The handler returned False: end this pass quietly."""


def _split(order: np.ndarray, rank: int, world: int, worker: int, workers: int) -> np.ndarray:
    """The shards (from the epoch's order) that one DataLoader worker of one rank reads, as
    wds.split_by_node then wds.split_by_worker assign them."""
    return order[rank::world][worker::workers]


def _worker_count() -> int:
    info = get_worker_info()
    return 1 if info is None else info.num_workers


def _members_with_data(tar):
    for info in tar:
        if not info.isfile():
            continue
        f = tar.extractfile(info)
        yield info.name, f.read() if f is not None else b""
