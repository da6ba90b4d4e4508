"""Which samples a rank owns under a ShardedPruner, and where they sit in its store.

Two layouts:
- ``strided`` (map-style data sets): rank r owns the dense ids i with i % world == r; slot j of its
  store holds id r + j * world.
- ``shards`` (WebDataset streams with an index): every shard belongs to one rank for the whole run
  (largest shards first, each to the rank with the fewest samples so far), so a rank only ever
  reads, numbers and scores its own shards; its store holds their id ranges one after another.

The C++ selection reads the layout as segments (local_begin, global_begin, length, stride).
"""
from __future__ import annotations

import numpy as np

from .._validate import as_count, as_ids


class Ownership:
    """The global ids one rank owns (see the module docstring for the layouts)."""

    def __init__(self, kind: str, num_samples: int, rank: int, world: int, segments: np.ndarray,
                 shard_ranges: list | None = None, shards: list | None = None):
        self.kind = kind
        self.num_samples = int(num_samples)
        self.rank, self.world = int(rank), int(world)
        self.segments = np.ascontiguousarray(segments, dtype=np.uint64).reshape(-1, 4)
        self.shard_ranges = shard_ranges   # shards: (first id, end id) of every shard, all ranks'
        self.shards = shards               # shards: the shard numbers this rank owns, ascending
        self.local_samples = int(self.segments[:, 2].sum()) if len(self.segments) else 0

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def strided(cls, num_samples: int, rank: int, world: int) -> "Ownership":
        """Rank `rank` of `world` owns the ids i with i % world == rank."""
        num_samples = as_count(num_samples, "num_samples", minimum=1)
        world = as_count(world, "world", minimum=1)
        rank = as_count(rank, "rank", maximum=world - 1)
        if num_samples < world:
            raise ValueError(f"{num_samples} samples cannot be spread over {world} ranks (each needs at least one)")
        count = (num_samples - rank + world - 1) // world
        return cls("strided", num_samples, rank, world, np.array([[0, rank, count, world]]))

    @classmethod
    def for_shards(cls, shard_ranges, rank: int, world: int) -> "Ownership":
        """Shard ownership for a stream: `shard_ranges` is every shard's (first id, end id) in shard
        order (an index's `shard_range`). Shards go to ranks largest first, each to the rank with
        the fewest samples so far (ties: the lower rank), the same on every rank."""
        world = as_count(world, "world", minimum=1)
        rank = as_count(rank, "rank", maximum=world - 1)
        ranges = [(int(lo), int(hi)) for lo, hi in shard_ranges]
        if len(ranges) < world:
            raise ValueError(f"{len(ranges)} shards cannot be spread over {world} ranks: every rank needs a shard of "
                             "its own (write more, smaller shards)")
        load = [0] * world
        owner = [0] * len(ranges)
        for shard in sorted(range(len(ranges)), key=lambda s: (-(ranges[s][1] - ranges[s][0]), s)):
            r = min(range(world), key=lambda q: (load[q], q))
            owner[shard] = r
            load[r] += ranges[shard][1] - ranges[shard][0]
        mine = [s for s in range(len(ranges)) if owner[s] == rank]
        rows, local = [], 0
        for s in mine:
            lo, hi = ranges[s]
            if hi > lo:
                rows.append([local, lo, hi - lo, 1])
                local += hi - lo
        if local == 0:
            raise ValueError(f"rank {rank} owns only empty shards")
        return cls("shards", max(hi for _, hi in ranges), rank, world, np.array(rows), ranges, mine)

    def describe(self) -> dict:
        """JSON-able form (for checkpoints)."""
        out = {"kind": self.kind, "num_samples": self.num_samples, "rank": self.rank, "world": self.world}
        if self.kind == "shards":
            out["shard_ranges"] = self.shard_ranges
        return out

    @classmethod
    def from_description(cls, desc: dict, rank: int | None = None, world: int | None = None) -> "Ownership":
        """The layout `desc` describes, for `rank` of `world` (default: its own)."""
        rank = desc["rank"] if rank is None else rank
        world = desc["world"] if world is None else world
        if desc["kind"] == "strided":
            return cls.strided(desc["num_samples"], rank, world)
        if desc["kind"] == "shards":
            return cls.for_shards(desc["shard_ranges"], rank, world)
        raise ValueError(f"unknown ownership kind {desc['kind']!r}")

    # ----------------------------------------------------------------------------------- lookup
    def global_ids(self) -> np.ndarray:
        """The global id of every slot, in slot order."""
        parts = [np.arange(length, dtype=np.int64) * int(stride) + int(g0)
                 for _, g0, length, stride in self.segments.tolist()]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def find_slots(self, ids: np.ndarray) -> np.ndarray:
        """The slot of each id, -1 where this rank does not own it."""
        ids = np.asarray(ids, dtype=np.int64)
        if self.kind == "strided":
            owned = (ids >= 0) & (ids < self.num_samples) & (ids % self.world == self.rank)
            return np.where(owned, ids // self.world, -1)
        starts = self.segments[:, 1].astype(np.int64)
        seg = np.searchsorted(starts, ids, side="right") - 1
        segc = np.clip(seg, 0, len(starts) - 1)
        offset = ids - starts[segc]
        owned = (seg >= 0) & (offset < self.segments[segc, 2].astype(np.int64))
        return np.where(owned, self.segments[segc, 0].astype(np.int64) + offset, -1)

    def slots_of(self, ids) -> np.ndarray:
        """The slots of a batch's ids; a clear error for an id another rank owns."""
        ids = as_ids(ids)
        slots = self.find_slots(ids)
        bad = np.flatnonzero(slots < 0)
        if bad.size:
            sid = int(ids[bad[0]])
            if not 0 <= sid < self.num_samples:
                raise ValueError(f"ids[{bad[0]}] = {sid} is outside [0, {self.num_samples})")
            raise ValueError(f"ids[{bad[0]}] = {sid} belongs to rank {self.owner_of(sid)}, not to this rank "
                             f"{self.rank}: a sharded Pruner scores only the samples its rank owns (train on "
                             "pruner.select(epoch)'s ids, or a stream over this pruner)")
        return slots

    def owner_of(self, sid: int) -> int:
        if self.kind == "strided":
            return sid % self.world
        for r in range(self.world):
            if Ownership.for_shards(self.shard_ranges, r, self.world).find_slots(np.array([sid]))[0] >= 0:
                return r
        return -1

    def __repr__(self) -> str:
        return (f"Ownership({self.kind}, rank {self.rank} of {self.world}, {self.local_samples} of "
                f"{self.num_samples} samples)")
