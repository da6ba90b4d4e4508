"""Pruner checkpoints: one checksummed store file with the Pruner's state as its metadata, or,
under a sharded partition, one such file per rank and a manifest naming them (written last, so a
save cut anywhere leaves the previous checkpoint whole)."""
from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets

import numpy as np

from .._files import write_atomically
from ..distributed.ownership import Ownership
from ..distributed.partition import ShardedPartition, rank_world
from ..selection.policies import make_policy
from ..store import STORE_FIELDS, ScoreStore, device_of

STATE_VERSION = 1
SHARDED_FORMAT = "emp_data.sharded_pruner"
SHARDED_VERSION = 1


# ------------------------------------------------------------------------------------ state
def meta(pruner) -> dict:
    """The Pruner's configuration and bookkeeping (JSON-able)."""
    pruner.store.check()
    out = {
        "state_version": STATE_VERSION,
        "num_samples": pruner.num_samples,
        "policy": pruner.policy.name,
        "policy_options": pruner.policy.options(),
        "prune_ratio": pruner.prune_ratio,
        "epochs": pruner.epochs,
        "anneal": pruner.anneal,
        "seed": pruner.seed,
        "ema_decay": pruner.ema_decay,
        "nonfinite": pruner.nonfinite,
        "epoch": pruner.epoch,
        "counted_through": pruner._counted_through,
        "kept": {str(k): v for k, v in pruner._rank_kept.items()},          # this rank's share
        "global_kept": {str(k): v for k, v in pruner._kept.items()},        # over all ranks
        "nonfinite_skipped": pruner.nonfinite_skipped,
        "marginal": pruner._memory.marginal.state(),
        "trained": {str(k): v for k, v in pruner._trained.items()},
    }
    if pruner.ownership is not None:
        out["ownership"] = pruner.ownership.describe()
    return out


def apply_meta(pruner, state: dict) -> None:
    pruner.policy = make_policy(state["policy"], **state["policy_options"])
    for name in ("prune_ratio", "epochs", "anneal", "seed", "ema_decay", "nonfinite", "epoch"):
        setattr(pruner, name, state[name])
    pruner._counted_through = state["counted_through"]
    pruner._rank_kept = {int(k): v for k, v in state["kept"].items()}
    pruner._kept = {int(k): v for k, v in state.get("global_kept", state["kept"]).items()}
    pruner._skipped_base = state["nonfinite_skipped"] - pruner.store.skipped
    pruner._memory.marginal.load(state.get("marginal"))
    pruner._trained = {int(k): v for k, v in state.get("trained", {}).items()}


def state_dict(pruner) -> dict:
    state = meta(pruner)
    state["store"] = pruner.store.host_arrays()
    return state


def load_state_dict(pruner, state: dict) -> None:
    if not isinstance(state, dict) or state.get("state_version") != STATE_VERSION:
        raise ValueError(f"not a Pruner state of version {STATE_VERSION}: "
                         f"{state.get('state_version') if isinstance(state, dict) else type(state).__name__}")
    if state["num_samples"] != pruner.num_samples:
        raise ValueError(f"state is for {state['num_samples']} samples, this Pruner has {pruner.num_samples}")
    mine = pruner.ownership.describe() if pruner.ownership is not None else None
    if state.get("ownership") != mine:
        raise ValueError(f"state holds the samples of {state.get('ownership') or 'every rank'}, this Pruner "
                         f"{mine or 'every sample'}")
    for name in STORE_FIELDS:
        src = np.asarray(state["store"][name])
        if src.shape != (len(pruner.store),):
            raise ValueError(f"state store array {name!r} has shape {src.shape}")
    apply_meta(pruner, state)
    pruner.store.restore(state["store"], pruner.epoch)


# ------------------------------------------------------------------------------- one file
def save(pruner, path) -> None:
    if pruner.partition.splits_samples:
        _save_parts(pruner, os.fspath(path))
    else:
        _save_file(pruner, path)


def _save_file(pruner, path) -> None:
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)
    live = pruner.store_path
    if live is not None and os.path.exists(path) and os.path.samefile(path, live):
        raise ValueError(f"cannot save the Pruner onto its live store file '{os.fspath(path)}' (store_path "
                         f"{live!r}); save checkpoints to another path")
    pruner.store.save(path, metadata=json.dumps(meta(pruner)).encode())


def load(cls, path, device=None, store_path=None, group=None):
    if _is_manifest(path):
        return _load_parts(cls, os.fspath(path), group, store_path, device)
    if getattr(cls, "checkpoint_kind", "file") == "manifest":
        raise ValueError(f"'{os.fspath(path)}' is not a ShardedPruner checkpoint manifest")
    store = ScoreStore.load(path)
    state = _file_meta(store, path)
    if store_path is not None and os.path.exists(store_path) and os.path.samefile(path, store_path):
        raise ValueError(f"store_path '{os.fspath(store_path)}' is the checkpoint itself; give the live store "
                         "another file")
    return _restore(cls, store, state, device=device, store_path=store_path)


def _file_meta(store, path) -> dict:
    try:
        state = json.loads(store.metadata.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"'{os.fspath(path)}' is a store file without Pruner state") from None
    if state.get("state_version") != STATE_VERSION:
        raise ValueError(f"'{os.fspath(path)}' holds Pruner state version {state.get('state_version')}, "
                         f"this emp_data reads {STATE_VERSION}")
    return state


def _restore(cls, store, state: dict, device=None, store_path=None, partition=None):
    """A Pruner over a checkpoint's loaded store: that store itself, or a store of its own (on the
    GPU, or a memory-mapped file for workers) filled from it."""
    options = dict(policy=state["policy"], prune_ratio=state["prune_ratio"], **state["policy_options"])
    if partition is not None:
        options["partition"] = partition
    if store_path is None and device_of(device) == "cpu":
        pruner = cls(state["num_samples"], store=store, **options)
        apply_meta(pruner, state)           # the loaded store is the Pruner's: no copy
        return pruner
    pruner = cls(state["num_samples"], device=device, store_path=store_path, overwrite=True, **options)
    load_state_dict(pruner, dict(state, store={name: getattr(store, name) for name in STORE_FIELDS}))
    return pruner


def refuse_existing_store(store_path, num_samples: int) -> None:
    """A new Pruner(store_path=p) would replace p, and every score in it, without a word."""
    if not os.path.exists(store_path):
        return
    try:
        what = f"a score store of {ScoreStore.open(store_path).num_samples} samples"
    except (ValueError, OSError):
        what = "a file that is not a score store"
    raise ValueError(f"'{os.fspath(store_path)}' already holds {what} (this Pruner has {num_samples}); a new store "
                     "there would replace it. To continue a run, use Pruner.load(checkpoint, store_path=...); to "
                     "start over, pass overwrite=True")


# ------------------------------------------------------------------ one part per rank
def _save_parts(pruner, path: str) -> None:
    """Collective: every rank writes its part (``<path>.<save>.rank<r>-of-<world>``, atomically, named
    by this save), then rank 0 replaces the manifest `path` with one naming them, and each rank
    removes its part of the previous save."""
    part = pruner.partition
    rank, world = part.rank, part.world
    # One name for this save on every rank: rank 0's random number, summed over the ranks.
    token = int(part.sum(np.array([secrets.randbits(62) if rank == 0 else 0], dtype=np.int64))[0])
    save_id = f"{token:016x}"
    failed = np.zeros(1, dtype=np.int64)
    error = None
    try:
        _save_file(pruner, part_path(path, rank, world, save_id))
    except Exception as exc:    # noqa: BLE001 - reported to every rank below, then re-raised here
        failed[0], error = 1, exc
    if int(part.sum(failed)[0]):
        if error is not None:
            raise error
        raise RuntimeError(f"ShardedPruner.save('{path}'): another rank failed to write its part")
    if rank == 0:
        manifest = {"format": SHARDED_FORMAT, "version": SHARDED_VERSION, "world": world,
                    "num_samples": pruner.num_samples,
                    "parts": [os.path.basename(part_path(path, r, world, save_id)) for r in range(world)]}
        write_atomically(path, lambda f: f.write(json.dumps(manifest).encode()))
    part.sum(np.zeros(1, dtype=np.int64))     # a barrier: the manifest exists when save returns
    mine = part_path(path, rank, world, save_id)
    for old in glob.glob(glob.escape(path) + ".*.rank*-of-*"):     # earlier saves' parts
        own = old.endswith(f".rank{rank}-of-{world}")
        other_world = not old.endswith(f"-of-{world}")              # a save before a re-partition
        if old != mine and (own or (rank == 0 and other_world)):
            with contextlib.suppress(OSError):
                os.unlink(old)


def _load_parts(cls, path: str, group, store_path, device):
    """This rank's Pruner from a sharded checkpoint, on any world size. On the same world size each
    rank reads its own part (bit-exact resume). On another, every rank reads the parts and keeps the
    samples it now owns (strided ids, or shards reassigned; each sample keeps its id and state)."""
    if device_of(device) != "cpu":
        raise ValueError("a sharded Pruner keeps its part of the store in host memory (device='cpu')")
    manifest = read_manifest(path)
    rank, world = rank_world(group)
    folder = os.path.dirname(path)
    parts = [os.path.join(folder, name) for name in manifest["parts"]]
    if world == manifest["world"]:
        store = ScoreStore.load(parts[rank])
        state = _file_meta(store, parts[rank])
        ownership = Ownership.from_description(state["ownership"])
        if (ownership.rank, ownership.world) != (rank, world):
            raise ValueError(f"'{parts[rank]}' is rank {ownership.rank} of {ownership.world}'s part, this is rank {rank}")
        partition = ShardedPartition(state["num_samples"], ownership, group)
        return _restore(cls, store, state, store_path=store_path, partition=partition)
    first = ScoreStore.load(parts[0])
    state = _file_meta(first, parts[0])
    ownership = Ownership.from_description(state["ownership"], rank, world)
    pruner = cls(state["num_samples"], policy=state["policy"], prune_ratio=state["prune_ratio"],
                 partition=ShardedPartition(state["num_samples"], ownership, group), store_path=store_path,
                 overwrite=True, **state["policy_options"])
    skipped = 0
    with pruner.store.writing_weights(state["epoch"]):
        for where in parts:
            part = first if where == parts[0] else ScoreStore.load(where)
            part_state = _file_meta(part, where)
            skipped += part_state["nonfinite_skipped"]
            slots = ownership.find_slots(Ownership.from_description(part_state["ownership"]).global_ids())
            mine = slots >= 0
            for name in STORE_FIELDS:
                getattr(pruner.store, name)[slots[mine]] = getattr(part, name)[mine]
    apply_meta(pruner, dict(state, kept={}, nonfinite_skipped=skipped if rank == 0 else 0))
    if pruner.epoch is not None:
        pruner.select(pruner.epoch)    # this rank's share of the current epoch, in the new layout
    return pruner


def part_path(path: str, rank: int, world: int, save_id: str) -> str:
    return f"{path}.{save_id}.rank{rank}-of-{world}"


def _is_manifest(path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(1) == b"{"
    except OSError:
        return False


def read_manifest(path: str) -> dict:
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
