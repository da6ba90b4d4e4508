"""ShardedPruner: each torch.distributed rank holds, scores and trains only the samples it owns.

    dist.init_process_group("gloo")               # under torchrun (or "nccl")
    pruner = ShardedPruner(len(dataset), policy="emp", prune_ratio=0.7, epochs=E)
    for epoch in range(E):
        ids, weights = pruner.select(epoch)       # this rank's kept ids; equal length on every rank
        for start in range(0, len(ids), 256):
            batch_ids = ids[start:start + 256]
            logits = model(x[batch_ids])
            per_sample = F.cross_entropy(logits, y[batch_ids], reduction="none")
            pruner.loss(per_sample, batch_ids, logits=logits).backward()   # local: no collective

Memory per rank is 24 bytes x (its samples), N / world for map-style data. `loss()` updates only the
local store. The selection is still global: each rule's mean, budget and thresholds are reduced over
the ranks inside the C++ selection (an exact-sum all_reduce, and a 16 KiB histogram all_reduce per
radix pass), and every random draw is keyed by the global id, so the kept ids and weights over all
ranks are exactly those a single-process Pruner selects from the same scores.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets

import numpy as np
import torch
import torch.distributed as dist

from ._validate import as_count
from .ownership import Ownership
from .pruner import _STORE_FIELDS, Pruner
from .shard_index import _write_atomically
from .store import ScoreStore

SHARDED_FORMAT = "emp_data.sharded_pruner"
SHARDED_VERSION = 1


class ShardedPruner(Pruner):
    """A Pruner whose store is partitioned over the torch.distributed ranks.

    Args (besides Pruner's):
        num_samples: N, over all ranks.
        ownership: which ids this rank owns (an `Ownership`); default: ``Ownership.strided`` (id %
            world == rank) for map-style data. Streams use ``emp_data.webdataset.shard_ownership(index)``.
        group: the process group (default: the global one). Without torch.distributed initialised
            the pruner is a one-rank partition (same results as a Pruner).
        store_path: this rank's memory-mapped store (one file per rank, e.g. with the rank in the
            name), for DataLoader workers.

    Every rank must call `select`, `stats`, `save` and `load` together (they reduce over the
    ranks); `loss` is local. `select(epoch)` returns this rank's kept ids padded to the largest
    rank's count by repeating its own kept ids (as DistributedSampler pads), so every rank runs the
    same number of batches; a rank that kept nothing repeats its own samples with weight 0.
    """

    def __init__(self, num_samples: int, policy="emp", prune_ratio: float = 0.5, epochs: int | None = None,
                 anneal: float = 0.875, seed: int = 0, *, ownership: Ownership | None = None, group=None,
                 store: ScoreStore | None = None, store_path=None, overwrite: bool = False, ema_decay: float = 0.8,
                 nonfinite: str = "raise", device=None, **policy_options):
        if device is not None and torch.device(device).type != "cpu":
            raise ValueError("ShardedPruner keeps its part of the store in host memory (device='cpu'); a GPU store "
                             "is not partitioned yet")
        num_samples = as_count(num_samples, "num_samples", minimum=1)
        self.group = group
        rank, world = _rank_world(group)
        if ownership is None:
            ownership = Ownership.strided(num_samples, rank, world)
        if not isinstance(ownership, Ownership):
            raise TypeError(f"ownership must be an emp_data.ownership.Ownership, got {type(ownership).__name__}")
        if (ownership.rank, ownership.world) != (rank, world):
            raise ValueError(f"ownership is for rank {ownership.rank} of {ownership.world}, this process is rank {rank} "
                             f"of {world}")
        if ownership.num_samples != num_samples:
            raise ValueError(f"ownership covers {ownership.num_samples} samples, num_samples is {num_samples}")
        self.ownership = ownership
        super().__init__(ownership.local_samples, policy, prune_ratio, epochs, anneal, seed, store=store,
                         store_path=store_path, overwrite=overwrite, ema_decay=ema_decay, nonfinite=nonfinite, distributed=False,
                         **policy_options)
        self.num_samples = num_samples              # global; the store holds ownership.local_samples
        self._share: dict[int, tuple[int, int, int]] = {}   # epoch -> (rank batch length, global kept, global padding)
        self._global_kept: dict[int, int] = {}              # epoch -> kept over all ranks
        self._zero_pad_slots = np.zeros(0, dtype=np.int64)  # slots padding a rank that kept nothing (weight 0)
        self.traffic = {"collectives": 0, "bytes": 0}   # of the reductions, since construction

    @property
    def local_samples(self) -> int:
        return self.ownership.local_samples

    # -------------------------------------------------------------------------------- reductions
    def _reduce(self, array: np.ndarray, op) -> np.ndarray:
        if not _active(self.group):
            return array
        device = _device_for(self.group)
        tensor = torch.from_numpy(np.ascontiguousarray(array)).to(device)
        dist.all_reduce(tensor, op=op, group=self.group)
        self._count(tensor.numel() * tensor.element_size())
        return tensor.cpu().numpy()

    def _concat(self, array: np.ndarray) -> np.ndarray:
        if not _active(self.group):
            return array
        from .distributed import all_gather_varlen

        device = _device_for(self.group)
        (out,) = all_gather_varlen(torch.from_numpy(np.ascontiguousarray(array)).to(device))
        # Two all_gathers: the row counts (8 B a rank), then the rows (sent padded to the longest rank's).
        self._count(8 * dist.get_world_size(self.group) + out.element_size() * int(out.numel()), calls=2)
        return out.cpu().numpy()

    def _count(self, nbytes: int, calls: int = 1) -> None:
        self.traffic["collectives"] += calls
        self.traffic["bytes"] += int(nbytes)

    def _sum(self, array):
        return self._reduce(array, dist.ReduceOp.SUM)

    def _max(self, array):
        return self._reduce(array, dist.ReduceOp.MAX)

    # ---------------------------------------------------------------------------------- selection
    def _select_in_store(self, config, epoch: int, count: bool):
        active = _active(self.group)
        return self.store._core.select(config, self.seed, epoch, count, segments=self.ownership.segments,
                                       global_n=self.num_samples, salt=self.ownership.rank + 1,
                                       sum=self._sum if active else None, max=self._max if active else None,
                                       concat=self._concat if active else None)

    def _current_selection(self, epoch: int):
        return self.store._core.current_selection(self.seed, epoch, segments=self.ownership.segments,
                                                  global_n=self.num_samples, salt=self.ownership.rank + 1)

    def select(self, epoch: int):
        """This rank's kept ids (global ids, shuffled) and weights, padded to the same length on every
        rank. Collective: every rank calls it for the same epoch."""
        ids, weights = super().select(epoch)
        epoch = self.epoch
        if epoch not in self._share:
            longest = int(self._max(np.array([len(ids)], dtype=np.int64))[0])
            total = int(self._sum(np.array([len(ids)], dtype=np.int64))[0])
            self._share = {epoch: (longest, total, longest * self.ownership.world - total)}
            self._global_kept[epoch] = total
        longest = self._share[epoch][0]
        self._kept[epoch] = longest
        return self._pad(ids, weights, longest)

    def _pad(self, ids, weights, length):
        self._zero_pad_slots = np.zeros(0, dtype=np.int64)
        if len(ids) >= length:
            return ids, weights
        if len(ids) > 0:    # repeat this rank's own kept ids, from the head, cyclically
            return np.resize(ids, length), np.resize(weights, length)
        # Nothing kept here: run the same number of steps on own samples at weight 0 (no gradient).
        pad = np.resize(self.ownership.global_ids(), length)
        self._zero_pad_slots = np.unique(self.ownership.find_slots(pad))
        return pad, np.zeros(length, dtype=np.float32)

    def _slots(self, ids):
        return self.ownership.slots_of(ids)

    def _batch_weights(self, slots):
        w = super()._batch_weights(slots)
        if self._zero_pad_slots.size:
            w = np.where(np.isin(slots, self._zero_pad_slots), np.float32(0.0), w)
        return w

    def planned_steps(self, batch_size: int, drop_last: bool = False) -> int:
        raise ValueError("a ShardedPruner's steps per epoch depend on how the kept samples fall on the ranks, known "
                         "only at select: use steps_per_epoch(batch_size) after select(epoch)")

    def scores(self) -> np.ndarray:
        """This rank's samples' scores, in slot order (`ownership.global_ids()` gives their ids)."""
        return super().scores()

    # -------------------------------------------------------------------------------------- stats
    def stats(self) -> dict:
        """Global figures (collective): Pruner.stats over every rank's samples, with ``trained`` (the
        samples every rank passed to `loss` this epoch) and ``padding`` (how many of those went beyond
        the kept ones, to keep the ranks in step), plus `rank_batch_samples` (this rank's sampler share)."""
        scores = super().scores()
        seen = scores[~np.isnan(scores)].astype(np.float64)
        hist = np.bincount(self.store.times_selected)
        longest_hist = int(self._max(np.array([len(hist)], dtype=np.int64))[0])
        counts = np.zeros(3 + longest_hist, dtype=np.int64)
        counts[:3] = [seen.size, self.nonfinite_skipped, self._trained.get(self.epoch, 0)]
        counts[3:3 + len(hist)] = hist
        counts = self._sum(counts)
        sums = self._sum(np.array([seen.sum(), np.square(seen).sum()], dtype=np.float64))
        n_seen = int(counts[0])
        mean = sums[0] / n_seen if n_seen else float("nan")
        std = float(np.sqrt(max(sums[1] / n_seen - mean * mean, 0.0))) if n_seen else float("nan")
        share = self._share.get(self.epoch, (0, 0, 0))
        epochs_done = len(self._global_kept)
        kept_total = sum(self._global_kept.values())
        n = self.num_samples
        return {
            "epoch": self.epoch,
            "kept": share[1],
            "kept_fraction": share[1] / n if self.epoch is not None else float("nan"),
            "nominal_prune_ratio": self.prune_ratio,
            "effective_prune_ratio": 1.0 - kept_total / (n * epochs_done) if epochs_done else float("nan"),
            "sample_passes": kept_total,
            "sample_passes_saved": n * epochs_done - kept_total,
            "times_selected_histogram": counts[3:],
            "score_mean": float(mean),
            "score_std": std,
            "seen": n_seen,
            "above_threshold": int(self._last_info.get("above_threshold", 0)),
            "forced": int(self._last_info.get("forced", 0)),
            "budget_exceeded": bool(self._last_info.get("budget_exceeded", False)),
            "nonfinite_skipped": int(counts[1]),
            "trained": int(counts[2]),
            "padding": max(0, int(counts[2]) - share[1]),
            "rank_batch_samples": share[0],
            "rank": self.ownership.rank,
            "world": self.ownership.world,
        }

    # -------------------------------------------------------------------------------- persistence
    def _meta(self) -> dict:
        meta = super()._meta()
        meta["ownership"] = self.ownership.describe()
        meta["global_kept"] = {str(k): v for k, v in self._global_kept.items()}
        meta["share"] = {str(k): list(v) for k, v in self._share.items()}
        return meta

    def _apply_meta(self, meta: dict) -> None:
        super()._apply_meta(meta)
        self._global_kept = {int(k): v for k, v in meta.get("global_kept", {}).items()}
        self._share = {int(k): tuple(v) for k, v in meta.get("share", {}).items()}

    def state_dict(self) -> dict:
        raise TypeError("a ShardedPruner checkpoints with save(path) / ShardedPruner.load(path) on every rank: each "
                        "rank writes its own part")

    def save(self, path: str | os.PathLike) -> None:
        """Collective: every rank writes its part (``<path>.<save>.rank<r>-of-<world>``, atomically, named
        by this save), then rank 0 replaces the manifest `path` with one naming them, and each rank
        removes its part of the previous save. A save cut anywhere leaves the previous checkpoint
        whole: its manifest still names its own parts."""
        path = os.fspath(path)
        rank, world = self.ownership.rank, self.ownership.world
        # One name for this save on every rank: rank 0's random number, summed over the ranks.
        token = int(self._sum(np.array([secrets.randbits(62) if rank == 0 else 0], dtype=np.int64))[0])
        save_id = f"{token:016x}"
        failed = np.zeros(1, dtype=np.int64)
        error = None
        try:
            super().save(_part_path(path, rank, world, save_id))
        except Exception as exc:    # noqa: BLE001 - reported to every rank below, then re-raised here
            failed[0], error = 1, exc
        if int(self._sum(failed)[0]):
            if error is not None:
                raise error
            raise RuntimeError(f"ShardedPruner.save('{path}'): another rank failed to write its part")
        if rank == 0:
            manifest = {"format": SHARDED_FORMAT, "version": SHARDED_VERSION, "world": world,
                        "num_samples": self.num_samples,
                        "parts": [os.path.basename(_part_path(path, r, world, save_id)) for r in range(world)]}
            _write_atomically(path, lambda f: f.write(json.dumps(manifest).encode()))
        self._sum(np.zeros(1, dtype=np.int64))     # a barrier: the manifest exists when save returns
        mine = _part_path(path, rank, world, save_id)
        for old in glob.glob(glob.escape(path) + ".*.rank*-of-*"):     # earlier saves' parts
            own = old.endswith(f".rank{rank}-of-{world}")
            other_world = not old.endswith(f"-of-{world}")              # a save before a re-partition
            if old != mine and (own or (rank == 0 and other_world)):
                with contextlib.suppress(OSError):
                    os.unlink(old)

    @classmethod
    def load(cls, path, group=None, store_path=None, device=None) -> "ShardedPruner":
        """This rank's ShardedPruner from a checkpoint written by `save`, on any world size. On the same
        world size each rank reads its own part (bit-exact resume). On another, every rank reads the
        parts and keeps the samples it now owns: for map-style (strided) ids and for shard ownership
        (shards are reassigned; each sample keeps its id and state)."""
        if device is not None and torch.device(device).type != "cpu":
            raise ValueError("ShardedPruner keeps its part of the store in host memory (device='cpu')")
        path = os.fspath(path)
        manifest = _read_manifest(path)
        rank, world = _rank_world(group)
        folder = os.path.dirname(path)
        parts = [os.path.join(folder, name) for name in manifest["parts"]]
        if world == manifest["world"]:
            return cls._from_part(parts[rank], group, store_path)
        first = ScoreStore.load(parts[0])
        meta = json.loads(first.metadata.decode())
        ownership = Ownership.from_description(meta["ownership"], rank, world)
        pruner = cls(meta["num_samples"], policy=meta["policy"], prune_ratio=meta["prune_ratio"], ownership=ownership,
                     group=group, store_path=store_path, overwrite=True, **meta["policy_options"])
        skipped = 0
        with pruner.store.writing_weights(meta["epoch"]):
            for part_path in parts:
                part = first if part_path == parts[0] else ScoreStore.load(part_path)
                part_meta = json.loads(part.metadata.decode())
                skipped += part_meta["nonfinite_skipped"]
                old = Ownership.from_description(part_meta["ownership"])
                ids = old.global_ids()
                slots = ownership.find_slots(ids)
                mine = slots >= 0
                for name in _STORE_FIELDS:
                    getattr(pruner.store, name)[slots[mine]] = getattr(part, name)[mine]
        meta = dict(meta, share={}, kept={}, nonfinite_skipped=skipped if rank == 0 else 0)
        pruner._apply_meta(meta)
        if pruner.epoch is not None:
            pruner.select(pruner.epoch)    # this rank's share of the current epoch, in the new layout
        return pruner

    @classmethod
    def _from_part(cls, part_path, group, store_path):
        part = ScoreStore.load(part_path)
        meta = json.loads(part.metadata.decode())
        ownership = Ownership.from_description(meta["ownership"])
        rank, world = _rank_world(group)
        if (ownership.rank, ownership.world) != (rank, world):
            raise ValueError(f"'{part_path}' is rank {ownership.rank} of {ownership.world}'s part, this is rank {rank}")
        return cls._restore(part, meta, store_path=store_path, ownership=ownership, group=group)

    def __repr__(self) -> str:
        return (f"ShardedPruner(num_samples={self.num_samples}, {self.ownership}, policy={self.policy}, "
                f"prune_ratio={self.prune_ratio})")



def _part_path(path: str, rank: int, world: int, save_id: str) -> str:
    return f"{path}.{save_id}.rank{rank}-of-{world}"


def _read_manifest(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            manifest = json.loads(f.read().decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"'{path}' is not a ShardedPruner checkpoint manifest") from None
    if not isinstance(manifest, dict) or manifest.get("format") != SHARDED_FORMAT:
        raise ValueError(f"'{path}' is not a ShardedPruner checkpoint manifest")
    if manifest.get("version") != SHARDED_VERSION:
        raise ValueError(f"'{path}' is ShardedPruner checkpoint version {manifest.get('version')}, this emp_data reads "
                         f"{SHARDED_VERSION}")
    folder = os.path.dirname(path)
    missing = [name for name in manifest["parts"] if not os.path.exists(os.path.join(folder, name))]
    if missing:
        raise ValueError(f"checkpoint '{path}' is missing part(s) {missing[:4]}")
    return manifest


def _active(group) -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def _rank_world(group) -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(group), dist.get_world_size(group)
    return 0, 1


def _device_for(group):
    """NCCL reduces CUDA tensors only; gloo (and others) host tensors."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
