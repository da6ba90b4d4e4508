"""Pruner: the epoch loop of dynamic data pruning.

    pruner = Pruner(len(dataset), policy="emp", prune_ratio=0.7, epochs=E)
    for epoch in range(E):
        ids, weights = pruner.select(epoch)          # this epoch's kept ids (shuffled)
        for start in range(0, len(ids), 256):
            batch_ids = ids[start:start + 256]
            logits = model(x[batch_ids])
            per_sample = F.cross_entropy(logits, y[batch_ids], reduction="none")
            pruner.loss(per_sample, batch_ids, logits=logits).backward()
"""
from __future__ import annotations

import json
import math
import os

import numpy as np

from . import _C
from ._validate import as_count, as_ema_decay, as_ids, as_nonfinite_mode, as_ratio
from .policies import Full, Policy, make_policy
from .scores import MarginalPrediction, prediction_entropy, prediction_mi
from .store import ScoreStore

STATE_VERSION = 1

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None


class Pruner:
    """Dynamic data pruning over `num_samples` samples with dense ids 0..N-1.

    Args:
        num_samples: N.
        policy: a name (full, random, infobatch, epsilon_greedy, ucb, emp, weighted, sweep, seta) or a
            Policy.
        prune_ratio: r, the nominal fraction left out per pruned epoch, in [0, 1).
        epochs: planned epochs; with `anneal`, epochs >= anneal * epochs train on the full data
            with weight 1 (InfoBatch's annealing). None: never anneal.
        anneal: delta, the fraction of epochs that are pruned (InfoBatch's 0.875).
        seed: every random draw comes from (seed, epoch); no global RNG is touched.
        store: a ScoreStore to use (e.g. memory-mapped for DataLoader workers); default: a new
            one in memory, or a new memory-mapped file when `store_path` is given. With
            device="cuda" the store is in GPU memory and `store_path` names a memory-mapped host
            copy of it, refreshed by every `select`, for DataLoader workers (`Pruner.store_path`).
        overwrite: with `store_path`, replace a file that is already there. Without it an existing
            file is refused, since a new store would wipe every score in it: to continue from a
            checkpoint use ``Pruner.load(checkpoint, store_path=...)``.
        ema_decay: decay of the running loss mean/variance (ucb, epsilon_greedy).
        nonfinite: "raise" (default) or "skip" NaN/inf losses in `loss()`.
        distributed: all-gather each batch's (ids, values) in `loss()` so that every rank's store
            stays identical. None (default): whenever torch.distributed is initialised with more
            than one rank.
        **policy_options: the policy's own options (e.g. beta=, mode= for emp).
    """

    def __init__(self, num_samples: int, policy="emp", prune_ratio: float = 0.5, epochs: int | None = None,
                 anneal: float = 0.875, seed: int = 0, *, store: ScoreStore | None = None,
                 store_path: str | os.PathLike | None = None, ema_decay: float = 0.8, nonfinite: str = "raise",
                 distributed: bool | None = None, device=None, overwrite: bool = False, **policy_options):
        self.num_samples = as_count(num_samples, "num_samples", minimum=1)
        self.policy: Policy = make_policy(policy, **policy_options)
        self.prune_ratio = as_ratio(prune_ratio, "prune_ratio")
        self.epochs = None if epochs is None else as_count(epochs, "epochs", minimum=1)
        self.anneal = as_ratio(anneal, "anneal", upper_inclusive=True)
        self.seed = as_count(seed, "seed", minimum=0, maximum=2**64 - 1)
        self.ema_decay = as_ema_decay(ema_decay)
        self.nonfinite = as_nonfinite_mode(nonfinite)
        self.distributed = distributed
        if store is not None and store_path is not None:
            raise ValueError("give either store= or store_path=, not both")
        if store_path is not None and not overwrite:
            _refuse_existing_store(store_path, self.num_samples)
        self.device = torch.device(device) if (device is not None and torch is not None) else None
        self.on_gpu = self.device is not None and self.device.type == "cuda"
        # device="cuda" with store_path: a memory-mapped host copy of the GPU store, refreshed by every
        # select, from which DataLoader workers read the epoch's weights.
        self._mirror: ScoreStore | None = None
        if self.on_gpu:
            if store is None:
                from .cuda import CudaScoreStore

                store = CudaScoreStore(self.num_samples, self.device)
            if store_path is not None:
                self._mirror = ScoreStore(self.num_samples, path=store_path)
                store.copy_to(self._mirror, None)
        elif self.device is not None and self.device.type != "cpu":
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if store is None:
            store = ScoreStore(self.num_samples, path=store_path)
        elif len(store) != self.num_samples:
            raise ValueError(f"store has {len(store)} samples, num_samples is {self.num_samples}")
        if store.readonly:
            raise ValueError("the Pruner needs a writable store")
        self.store = store
        self.epoch: int | None = None     # the epoch whose weights are in the store
        self._counted_through = -1       # times_selected has been counted for epochs <= this
        self._kept: dict[int, int] = {}  # epoch -> kept count
        self._last_info: dict = {}
        self._step = 0                   # loss() calls since the current epoch was selected (DDP stamp)
        self.nonfinite_skipped = 0
        self._gpu_skipped_base = 0       # GPU store: skips counted before it was created (resume)
        self._marginal = MarginalPrediction()   # p_bar of emp's memory="mi" (from logits=)
        self._trained: dict[int, int] = {}      # epoch -> samples passed to loss() (every rank's under DDP)

    @property
    def store_path(self) -> str | None:
        """The memory-mapped file DataLoader workers read this epoch's weights from: the store's own
        file on the CPU; with device="cuda", the host copy that every `select` refreshes (None: the
        store is in memory only)."""
        return self._mirror.path if self._mirror is not None else self.store.path

    # --------------------------------------------------------------------------------- schedule
    def is_pruned_epoch(self, epoch: int) -> bool:
        """False for annealing epochs (the last 1 - anneal share of `epochs`), True otherwise."""
        if self.epochs is None:
            return True
        return epoch < self.anneal * self.epochs

    def _config(self, epoch: int):
        if self.prune_ratio == 0.0:
            return Full().config(0.0)
        if not self.is_pruned_epoch(epoch):
            return self.policy.annealing_config(self.prune_ratio)
        return self.policy.config(self.prune_ratio)

    # -------------------------------------------------------------------------------- selection
    def select(self, epoch: int):
        """This epoch's kept ids (int64, shuffled) and their loss weights (float32).

        A pure function of (the recorded scores, seed, epoch): the same on any thread count and on
        a resumed run. It also makes `epoch` current: its weights go into the store (where
        DataLoader workers read them) and, the first time an epoch is selected, each kept sample's
        times_selected is incremented. Selecting the current epoch again (e.g. after resuming
        mid-epoch) returns the same ids and weights, although scores have been updated since.
        """
        epoch = as_count(epoch, "epoch", minimum=0, maximum=2**63 - 1)
        if epoch == self.epoch:
            # Already selected (maybe before a resume): the same ids, rebuilt from the stored
            # weights, not a new draw from scores that training has moved since.
            if self.on_gpu:
                ids, weights = self.store.current_selection(self.seed, epoch)
                return ids.cpu().numpy(), weights.cpu().numpy()
            return self._current_selection(epoch)
        count = epoch > self._counted_through
        if self.on_gpu:
            ids_t, weights_t, info = self.store.select(self._config(epoch), self.seed, epoch, count)
            ids, weights = ids_t.cpu().numpy(), weights_t.cpu().numpy()   # one copy per epoch, for samplers
            if self._mirror is not None:
                self.store.copy_to(self._mirror, epoch)                   # what DataLoader workers read
        else:
            ids, weights, info = self._select_in_store(self._config(epoch), epoch, count)
        if count:
            self._counted_through = epoch
        self.epoch = epoch
        self._step = 0
        self._kept[epoch] = int(len(ids))
        self._last_info = dict(info)
        return ids, weights

    def _select_in_store(self, config, epoch: int, count: bool):
        """(kept ids, weights, info) of the CPU store's selection (ShardedPruner: over all ranks)."""
        return self.store._core.select(config, self.seed, epoch, count)

    def _current_selection(self, epoch: int):
        """The current epoch's (ids, weights), rebuilt from the weights in the CPU store."""
        return self.store._core.current_selection(self.seed, epoch)

    def kept_count(self, epoch: int | None = None) -> int:
        """Kept samples in `epoch` (default: the current one). ValueError for an epoch not selected yet."""
        if epoch is None:
            if self.epoch is None:
                raise ValueError("no epoch selected yet; call select(epoch) first")
            epoch = self.epoch
        if epoch not in self._kept:
            raise ValueError(f"epoch {epoch} has not been selected yet")
        return self._kept[epoch]

    def scores(self) -> np.ndarray:
        """Every sample's current selection score under the policy (NaN: never seen)."""
        cfg = self.policy.config(max(self.prune_ratio, 0.0))
        if self.on_gpu:
            return self.store.scores(cfg).cpu().numpy()
        return self.store._core.scores(cfg)

    # ------------------------------------------------------------------------------------- loss
    def loss(self, per_sample_loss, ids, logits=None, memory=None):
        """Record the batch's scores and return the weighted mean loss to backpropagate.

        per_sample_loss: (B,) tensor from a loss with reduction='none'.
        ids: the batch's sample ids (tensor or array, int64).
        logits: (B, C) model outputs; EMP computes its memory term (prediction entropy) from them.
        memory: (B,) memory term computed by the caller (e.g. `scores.contrastive_...`); wins over
            logits. Policies that need a memory term (emp) raise without one of the two.
        Ids outside the current selection (e.g. an evaluation pass) get weight 1.
        """
        if torch is None or not isinstance(per_sample_loss, torch.Tensor):
            raise TypeError("per_sample_loss must be a torch.Tensor (use reduction='none')")
        if per_sample_loss.ndim != 1:
            raise ValueError(f"per_sample_loss must be 1-D (reduction='none'), got shape {tuple(per_sample_loss.shape)}")
        if not per_sample_loss.dtype.is_floating_point:
            raise TypeError(f"per_sample_loss must be floating point, got {per_sample_loss.dtype}")
        if self.on_gpu:
            return self._loss_on_gpu(per_sample_loss, ids, logits, memory)
        if isinstance(ids, torch.Tensor) and ids.device.type != "cpu":
            ids = ids.cpu()
        ids_arr = as_ids(ids)
        if len(ids_arr) != per_sample_loss.shape[0]:
            raise ValueError(f"per_sample_loss has {per_sample_loss.shape[0]} entries but ids has {len(ids_arr)}")
        memory = self._memory_term(logits, memory, len(ids_arr))
        slots = self._slots(ids_arr)
        detached = per_sample_loss.detach().float()
        if memory is not None:
            values = torch.stack([detached, memory.to(detached.device)], dim=1)
        else:
            values = detached[:, None]
        record_ids = slots
        if self._distributed():
            record_ids, values = self._gather(ids_arr, values, self._stamp())
        self._count_trained(len(record_ids))
        values_np = values.cpu().numpy()  # one device-to-host copy for everything recorded
        loss_np = np.ascontiguousarray(values_np[:, 0])
        mem_np = np.ascontiguousarray(values_np[:, 1]) if values_np.shape[1] > 1 else None
        self.nonfinite_skipped += self.store.update(record_ids, loss_np, mem_np, nonfinite=self.nonfinite,
                                                    ema_decay=self.ema_decay)
        w = self._batch_weights(slots)
        weights = torch.from_numpy(w).to(device=per_sample_loss.device, dtype=per_sample_loss.dtype)
        return (per_sample_loss * weights).mean()

    def _slots(self, ids: np.ndarray) -> np.ndarray:
        """Store slots of a batch's sample ids (the ids themselves here; ShardedPruner maps them)."""
        return ids

    def _batch_weights(self, slots: np.ndarray) -> np.ndarray:
        """The loss weight of each slot: this epoch's weight, 1 for samples outside the selection
        (e.g. an evaluation pass)."""
        w = self.store.weight[slots]
        return np.where(w > 0, w, np.float32(1.0))

    def _memory_term(self, logits, memory, batch: int):
        """The batch's memory term as a detached float tensor (from `memory`, else computed from
        `logits` when the policy needs one), or None; checks its shape against the batch."""
        if memory is None and logits is not None and self.policy.needs_memory:
            normalize = getattr(self.policy, "normalize_entropy", True)
            if getattr(self.policy, "memory", "entropy") == "mi":
                memory = prediction_mi(logits, self._marginal.update(logits), normalize=normalize)
            else:
                memory = prediction_entropy(logits, normalize=normalize)
            if memory.shape[0] != batch:
                raise ValueError(f"logits has {memory.shape[0]} rows but ids has {batch}")
        if memory is None:
            if self.policy.needs_memory:
                raise ValueError(f"policy {self.policy.name!r} needs the memory term: pass logits= (the model's "
                                 "outputs for this batch) or memory= (a per-sample memory term)")
            return None
        if not isinstance(memory, torch.Tensor):
            memory = torch.as_tensor(np.asarray(memory, dtype=np.float32))
        if memory.ndim != 1 or memory.shape[0] != batch:
            raise ValueError(f"memory must have shape ({batch},), got {tuple(memory.shape)}")
        return memory.detach().float()

    def _loss_on_gpu(self, per_sample_loss, ids, logits, memory):
        """The GPU path of `loss`: update and weight gather are kernels on the current stream, with no
        host synchronisation (bad entries surface at the next select/stats/check)."""
        if not isinstance(ids, torch.Tensor):
            ids = torch.as_tensor(np.asarray(ids))
        if ids.ndim != 1 or ids.shape[0] != per_sample_loss.shape[0]:
            raise ValueError(f"per_sample_loss has {per_sample_loss.shape[0]} entries but ids has shape {tuple(ids.shape)}")
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise TypeError(f"ids must be integers, got {ids.dtype}")
        ids = ids.to(self.store.device, dtype=torch.int64, non_blocking=True)
        memory = self._memory_term(logits, memory, ids.shape[0])
        record_ids, loss_values, mem_values = ids, per_sample_loss.detach().float(), memory
        if self._distributed():
            from .distributed import all_gather_varlen

            # One gather of the row counts for all three (the step's one host synchronisation).
            if memory is None:
                record_ids, loss_values = all_gather_varlen(ids, loss_values, stamp=self._stamp())
            else:
                record_ids, loss_values, mem_values = all_gather_varlen(ids, loss_values, memory.to(self.store.device),
                                                                        stamp=self._stamp())
        self._count_trained(int(record_ids.shape[0]))
        self.store.update(record_ids, loss_values, mem_values, nonfinite=self.nonfinite, ema_decay=self.ema_decay)
        weights = self.store.gather_weights(ids).to(per_sample_loss.device, per_sample_loss.dtype)
        return (per_sample_loss * weights).mean()

    def _count_trained(self, samples: int) -> None:
        if self.epoch is not None:
            self._trained[self.epoch] = self._trained.get(self.epoch, 0) + samples

    def _distributed(self) -> bool:
        from .distributed import is_distributed

        return is_distributed() if self.distributed is None else bool(self.distributed)

    def _stamp(self) -> tuple[int, int]:
        """(epoch, step) of this loss call, checked against every rank's in the gather."""
        self._step += 1
        return (-1 if self.epoch is None else self.epoch, self._step)

    @staticmethod
    def _gather(ids_arr: np.ndarray, values: "torch.Tensor", stamp):
        """Every rank's (ids, values), in rank order, so all stores see the same updates."""
        import torch.distributed as dist

        from .distributed import all_gather_varlen

        device = values.device if dist.get_backend() == "nccl" else torch.device("cpu")
        ids_all, values_all = all_gather_varlen(torch.from_numpy(ids_arr).to(device), values.to(device), stamp=stamp)
        return ids_all.cpu().numpy(), values_all

    # ------------------------------------------------------------------------------------ stats
    def planned_steps(self, batch_size: int, drop_last: bool = False) -> int:
        """Optimizer steps over all `epochs`, known before training for rules with a fixed budget
        (random, epsilon_greedy, ucb, emp topk, weighted, and soft rules with exact_budget=True):
        for OneCycle-style schedulers. Soft rules without an exact budget keep a data-dependent
        count; for them this raises."""
        if self.epochs is None:
            raise ValueError("planned_steps needs epochs= on the Pruner")
        batch_size = as_count(batch_size, "batch_size", minimum=1)
        # Half away from zero, as the C++ budget (llround): Python's round() would differ at .5.
        k = math.floor((1 - self.prune_ratio) * self.num_samples + 0.5)
        steps = 0
        for epoch in range(self.epochs):
            cfg = self._config(epoch)
            fixed = cfg.rule in (_C.Rule.TOPK, _C.Rule.WEIGHTED, _C.Rule.FULL, _C.Rule.SWEEP) or cfg.exact_budget
            if not fixed:
                raise ValueError(f"policy {self.policy.name!r} keeps a data-dependent number of samples per epoch; "
                                 "use exact_budget=True for a step count known in advance")
            kept = self.num_samples if cfg.rule == _C.Rule.FULL else k
            steps += kept // batch_size if drop_last else math.ceil(kept / batch_size)
        return steps

    # ------------------------------------------------------------------------------------ stats
    def steps_per_epoch(self, batch_size: int, drop_last: bool = False, epoch: int | None = None) -> int:
        """Optimizer steps in `epoch` (default: current) at `batch_size`."""
        batch_size = as_count(batch_size, "batch_size", minimum=1)
        kept = self.kept_count(epoch)
        return kept // batch_size if drop_last else math.ceil(kept / batch_size)

    def stats(self) -> dict:
        """Kept fraction this epoch, effective pruning so far, times-selected histogram (the EMP
        paper's Fig. 1), and the mean/std of the scores of seen samples. ``trained`` counts the
        samples passed to `loss` since this epoch's select (every rank's under DDP), and ``padding``
        how many of those went beyond the kept ones (the repeats that keep ranks in step)."""
        n = self.num_samples
        self._sync_gpu_counters()
        epochs_done = len(self._kept)
        kept_total = sum(self._kept.values())
        scores = self.scores()
        seen = scores[~np.isnan(scores)]
        kept_now = self._kept.get(self.epoch, 0) if self.epoch is not None else 0
        return {
            "epoch": self.epoch,
            "kept": kept_now,
            "kept_fraction": kept_now / n if self.epoch is not None else float("nan"),
            "nominal_prune_ratio": self.prune_ratio,
            "effective_prune_ratio": 1.0 - kept_total / (n * epochs_done) if epochs_done else float("nan"),
            "sample_passes": kept_total,
            "sample_passes_saved": n * epochs_done - kept_total,
            "times_selected_histogram": np.bincount(self.store.times_selected),
            "score_mean": float(seen.mean()) if seen.size else float("nan"),
            "score_std": float(seen.std()) if seen.size else float("nan"),
            "seen": int(seen.size),
            "above_threshold": int(self._last_info.get("above_threshold", 0)),
            "forced": int(self._last_info.get("forced", 0)),
            "budget_exceeded": bool(self._last_info.get("budget_exceeded", False)),
            "nonfinite_skipped": self.nonfinite_skipped,
            "trained": self._trained.get(self.epoch, 0),
            "padding": max(0, self._trained.get(self.epoch, 0) - kept_now),
        }

    # ------------------------------------------------------------------------------ persistence
    def _sync_gpu_counters(self) -> None:
        """GPU store: raise a bad entry recorded by an update, and bring the skip count to the host."""
        if self.on_gpu:
            self.store.check()
            self.nonfinite_skipped = self._gpu_skipped_base + self.store.skipped

    def _meta(self) -> dict:
        self._sync_gpu_counters()
        return {
            "state_version": STATE_VERSION,
            "num_samples": self.num_samples,
            "policy": self.policy.name,
            "policy_options": self.policy.options(),
            "prune_ratio": self.prune_ratio,
            "epochs": self.epochs,
            "anneal": self.anneal,
            "seed": self.seed,
            "ema_decay": self.ema_decay,
            "nonfinite": self.nonfinite,
            "epoch": self.epoch,
            "counted_through": self._counted_through,
            "kept": {str(k): v for k, v in self._kept.items()},
            "nonfinite_skipped": self.nonfinite_skipped,
            "marginal": self._marginal.state(),
            "trained": {str(k): v for k, v in self._trained.items()},
        }

    def state_dict(self) -> dict:
        """Everything needed to resume: config, epoch bookkeeping and copies of the store arrays."""
        state = self._meta()
        state["store"] = {name: getattr(self.store, name).copy() for name in _STORE_FIELDS}
        return state

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("state_version") != STATE_VERSION:
            raise ValueError(f"not a Pruner state of version {STATE_VERSION}: "
                             f"{state.get('state_version') if isinstance(state, dict) else type(state).__name__}")
        if state["num_samples"] != self.num_samples:
            raise ValueError(f"state is for {state['num_samples']} samples, this Pruner has {self.num_samples}")
        arrays = state["store"]
        for name in _STORE_FIELDS:
            src = np.asarray(arrays[name])
            if src.shape != (len(self.store),):
                raise ValueError(f"state store array {name!r} has shape {src.shape}")
        self._apply_meta(state)
        if self.on_gpu:
            for name in _STORE_FIELDS:
                self.store.set_field(name, np.asarray(arrays[name]))
        else:
            with self.store.writing_weights(self.epoch):     # stream workers see the old state or this one
                for name in _STORE_FIELDS:
                    getattr(self.store, name)[:] = np.asarray(arrays[name])
        if self._mirror is not None:
            self.store.copy_to(self._mirror, self.epoch)

    def _apply_meta(self, meta: dict) -> None:
        self.policy = make_policy(meta["policy"], **meta["policy_options"])
        self.prune_ratio = meta["prune_ratio"]
        self.epochs = meta["epochs"]
        self.anneal = meta["anneal"]
        self.seed = meta["seed"]
        self.ema_decay = meta["ema_decay"]
        self.nonfinite = meta["nonfinite"]
        self.epoch = meta["epoch"]
        self._counted_through = meta["counted_through"]
        self._kept = {int(k): v for k, v in meta["kept"].items()}
        self.nonfinite_skipped = meta["nonfinite_skipped"]
        self._marginal.load(meta.get("marginal"))
        self._trained = {int(k): v for k, v in meta.get("trained", {}).items()}
        if self.on_gpu:
            self._gpu_skipped_base = meta["nonfinite_skipped"] - self.store.skipped

    def save(self, path: str | os.PathLike) -> None:
        """Write config, bookkeeping and the store to one checksummed file, atomically, creating its
        folder if needed. Refuses the live file that DataLoader workers read (`store_path`, under any
        name): replacing it would cut the workers and this process off from each other."""
        live = self._mirror if self._mirror is not None else self.store
        folder = os.path.dirname(os.fspath(path))
        if folder:
            os.makedirs(folder, exist_ok=True)
        if getattr(live, "path", None) is not None and live.is_file(path):
            raise ValueError(f"cannot save the Pruner onto its live store file '{os.fspath(path)}' (store_path "
                             f"{live.path!r}); save checkpoints to another path")
        self.store.save(path, metadata=json.dumps(self._meta()).encode())

    @classmethod
    def load(cls, path: str | os.PathLike, device=None, store_path: str | os.PathLike | None = None) -> "Pruner":
        """A Pruner from a file written by `save`: its store in memory, or on `device`, or, with
        `store_path`, in a memory-mapped file there that stream workers read (replacing the file a
        previous run left there: this is the restore step of a job that uses workers)."""
        store = ScoreStore.load(path)
        try:
            meta = json.loads(store.metadata.decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError(f"'{os.fspath(path)}' is a store file without Pruner state") from None
        if meta.get("state_version") != STATE_VERSION:
            raise ValueError(f"'{os.fspath(path)}' holds Pruner state version {meta.get('state_version')}, "
                             f"this emp_data reads {STATE_VERSION}")
        if store_path is not None and os.path.exists(store_path) and os.path.samefile(path, store_path):
            raise ValueError(f"store_path '{os.fspath(store_path)}' is the checkpoint itself; give the live store "
                             "another file")
        return cls._restore(store, meta, device=device, store_path=store_path)

    @classmethod
    def _restore(cls, store: ScoreStore, meta: dict, device=None, store_path=None, **init) -> "Pruner":
        """A Pruner over a checkpoint's loaded store and state: that store itself, or a store of its own
        (on the GPU, or a memory-mapped file for workers) filled by the resume path. `init`: further
        constructor arguments (a ShardedPruner's ownership and group)."""
        on_gpu = device is not None and torch is not None and torch.device(device).type == "cuda"
        if store_path is None and not on_gpu:
            pruner = cls(meta["num_samples"], policy=meta["policy"], prune_ratio=meta["prune_ratio"], store=store,
                         **init, **meta["policy_options"])
            pruner._apply_meta(meta)            # the loaded store is the Pruner's: no copy
            return pruner
        pruner = cls(meta["num_samples"], policy=meta["policy"], prune_ratio=meta["prune_ratio"], device=device,
                     store_path=store_path, overwrite=True, **init, **meta["policy_options"])
        pruner.load_state_dict(dict(meta, store={name: getattr(store, name) for name in _STORE_FIELDS}))
        return pruner

    def __repr__(self) -> str:
        return (f"Pruner(num_samples={self.num_samples}, policy={self.policy}, prune_ratio={self.prune_ratio}, "
                f"epochs={self.epochs}, anneal={self.anneal}, seed={self.seed})")


_STORE_FIELDS = ("loss", "memory", "loss_mean", "loss_var", "times_selected", "idle", "weight")


def _refuse_existing_store(store_path, num_samples: int) -> None:
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
