"""Pruner: the epoch loop of dynamic data pruning.

    pruner = Pruner(len(dataset), policy="emp", prune_ratio=0.7, epochs=E)
    for epoch in range(E):
        ids, weights = pruner.select(epoch)          # this epoch's kept ids (shuffled)
        for start in range(0, len(ids), 256):
            batch_ids = ids[start:start + 256]
            logits = model(x[batch_ids])
            per_sample = F.cross_entropy(logits, y[batch_ids], reduction="none")
            pruner.loss(per_sample, batch_ids, logits=logits).backward()

A Pruner composes a policy (what to keep), a store (where the scores live: host, memory-mapped or
GPU) and a partition (which samples this process holds: all, or a rank's part), and asks neither
the store nor the partition what kind it is.
"""
from __future__ import annotations

import math
import os

import numpy as np

from .. import _C
from .._validate import as_count, as_ema_decay, as_nonfinite_mode, as_ratio
from ..distributed.partition import make_partition
from ..selection.policies import Full, Policy, make_policy
from ..store import Store, create_store
from . import checkpoint, stats
from .batch import MemoryTerms, batch_rows, check_per_sample_loss


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
        store: a store to use (e.g. a memory-mapped ScoreStore for DataLoader workers); default: a
            new one in memory, or a new memory-mapped file when `store_path` is given. With
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
        partition: "whole" (default: this process holds every sample), "sharded" (each
            torch.distributed rank holds and scores only the samples it owns; see ShardedPruner),
            or a WholePartition / ShardedPartition.
        **policy_options: the policy's own options (e.g. beta=, mode= for emp).
    """

    def __init__(self, num_samples: int, policy="emp", prune_ratio: float = 0.5, epochs: int | None = None,
                 anneal: float = 0.875, seed: int = 0, *, store: Store | None = None,
                 store_path: str | os.PathLike | None = None, ema_decay: float = 0.8, nonfinite: str = "raise",
                 distributed: bool | None = None, device=None, overwrite: bool = False, partition=None,
                 **policy_options):
        self.num_samples = as_count(num_samples, "num_samples", minimum=1)
        self.partition = make_partition(partition, self.num_samples, distributed)
        self.policy: Policy = make_policy(policy, **policy_options)
        self.prune_ratio = as_ratio(prune_ratio, "prune_ratio")
        self.epochs = None if epochs is None else as_count(epochs, "epochs", minimum=1)
        self.anneal = as_ratio(anneal, "anneal", upper_inclusive=True)
        self.seed = as_count(seed, "seed", minimum=0, maximum=2**64 - 1)
        self.ema_decay = as_ema_decay(ema_decay)
        self.nonfinite = as_nonfinite_mode(nonfinite)
        if store is not None and store_path is not None:
            raise ValueError("give either store= or store_path=, not both")
        if store_path is not None and not overwrite:
            checkpoint.refuse_existing_store(store_path, self.num_samples)
        local = self.partition.local_samples
        if store is None:
            store = create_store(local, device, store_path, partitioned=self.partition.splits_samples)
        elif len(store) != local:
            raise ValueError(f"store has {len(store)} samples, num_samples is {local}")
        if store.readonly:
            raise ValueError("the Pruner needs a writable store")
        self.store = store
        self.epoch: int | None = None     # the epoch whose weights are in the store
        self._counted_through = -1       # times_selected has been counted for epochs <= this
        self._kept: dict[int, int] = {}       # epoch -> kept over all samples
        self._rank_kept: dict[int, int] = {}  # epoch -> this rank's batch share (its kept, padded)
        self._last_info: dict = {}
        self._step = 0                   # loss() calls since the current epoch was selected (DDP stamp)
        self._skipped_base = -store.skipped   # skips counted before this Pruner (or restored from a checkpoint)
        self._memory = MemoryTerms()
        self._trained: dict[int, int] = {}      # epoch -> samples passed to loss() (every rank's under DDP)

    @property
    def store_path(self) -> str | None:
        """The memory-mapped file DataLoader workers read this epoch's weights from: the store's own
        file on the CPU; with device="cuda", the host copy that every `select` refreshes (None: the
        store is in memory only)."""
        return self.store.worker_path

    @property
    def ownership(self):
        """Which samples this process holds (a sharded partition's Ownership; None: all of them)."""
        return getattr(self.partition, "ownership", None)

    @property
    def local_samples(self) -> int:
        return self.partition.local_samples

    @property
    def nonfinite_skipped(self) -> int:
        """Losses skipped under nonfinite="skip" so far, on this process."""
        return self._skipped_base + self.store.skipped

    @property
    def _marginal(self):
        return self._memory.marginal

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
        Under a sharded partition it is collective, and returns this rank's kept ids padded to the
        largest rank's count.
        """
        epoch = as_count(epoch, "epoch", minimum=0, maximum=2**63 - 1)
        if epoch == self.epoch:
            # Already selected (maybe before a resume): the same ids, rebuilt from the stored
            # weights, not a new draw from scores that training has moved since.
            ids, weights = self.store.current_selection(self.seed, epoch, self.partition)
        else:
            count = epoch > self._counted_through
            ids, weights, info = self.store.select(self._config(epoch), self.seed, epoch, count, self.partition)
            if count:
                self._counted_through = epoch
            self.epoch = epoch
            self._step = 0
            self._last_info = dict(info)
        if epoch not in self._rank_kept:
            self._rank_kept[epoch], self._kept[epoch] = self.partition.lengths(len(ids))
        return self.partition.pad(ids, weights, self._rank_kept[epoch])

    def kept_count(self, epoch: int | None = None) -> int:
        """Samples this process trains in `epoch` (default: the current one): the kept ones, and under
        a sharded partition the padding to the largest rank. ValueError for an epoch not selected yet."""
        if epoch is None:
            if self.epoch is None:
                raise ValueError("no epoch selected yet; call select(epoch) first")
            epoch = self.epoch
        if epoch not in self._rank_kept:
            raise ValueError(f"epoch {epoch} has not been selected yet")
        return self._rank_kept[epoch]

    def scores(self) -> np.ndarray:
        """The current selection score of every sample this process holds, under the policy (NaN:
        never seen); in slot order under a sharded partition (`ownership.global_ids()` gives the ids)."""
        return self.store.scores(self.policy.config(max(self.prune_ratio, 0.0)))

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
        check_per_sample_loss(per_sample_loss)
        ids = self.store.batch_ids(ids)
        if len(ids) != per_sample_loss.shape[0]:
            raise ValueError(f"per_sample_loss has {per_sample_loss.shape[0]} entries but ids has {len(ids)}")
        memory = self._memory.of_batch(self.policy, logits, memory, len(ids))
        slots = self.partition.local_slots(ids)
        record_ids, rows = self.partition.record_batch(slots, batch_rows(per_sample_loss, memory), self._stamp())
        if self.epoch is not None:
            self._trained[self.epoch] = self._trained.get(self.epoch, 0) + len(record_ids)
        self.store.record(record_ids, rows, nonfinite=self.nonfinite, ema_decay=self.ema_decay)
        weights = self.partition.batch_weights(slots, self.store.batch_weights(slots))
        return (per_sample_loss * weights.to(per_sample_loss.device, per_sample_loss.dtype)).mean()

    def _stamp(self) -> tuple[int, int]:
        """(epoch, step) of this loss call, checked against every rank's in a gather."""
        self._step += 1
        return (-1 if self.epoch is None else self.epoch, self._step)

    # ------------------------------------------------------------------------------------ sizes
    def planned_steps(self, batch_size: int, drop_last: bool = False) -> int:
        """Optimizer steps over all `epochs`, known before training for rules with a fixed budget
        (random, epsilon_greedy, ucb, emp topk, weighted, and soft rules with exact_budget=True):
        for OneCycle-style schedulers. Soft rules without an exact budget keep a data-dependent
        count, and so does a sharded partition (how the kept samples fall on the ranks): for them
        this raises."""
        if self.epochs is None:
            raise ValueError("planned_steps needs epochs= on the Pruner")
        batch_size = as_count(batch_size, "batch_size", minimum=1)
        if self.partition.splits_samples:
            raise ValueError("under a sharded partition the steps per epoch depend on how the kept samples fall on "
                             "the ranks, known only at select: use steps_per_epoch(batch_size) after select(epoch)")
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

    def steps_per_epoch(self, batch_size: int, drop_last: bool = False, epoch: int | None = None) -> int:
        """Optimizer steps in `epoch` (default: current) at `batch_size`."""
        batch_size = as_count(batch_size, "batch_size", minimum=1)
        kept = self.kept_count(epoch)
        return kept // batch_size if drop_last else math.ceil(kept / batch_size)

    def stats(self) -> dict:
        """What this run really did (collective under a sharded partition): see `stats.pruner_stats`."""
        return stats.pruner_stats(self)

    # ------------------------------------------------------------------------------ persistence
    def state_dict(self) -> dict:
        """Everything needed to resume: config, epoch bookkeeping and copies of the store arrays
        (under a sharded partition, this rank's part and its ownership)."""
        return checkpoint.state_dict(self)

    def load_state_dict(self, state: dict) -> None:
        checkpoint.load_state_dict(self, state)

    def save(self, path: str | os.PathLike) -> None:
        """Write config, bookkeeping and the store to one checksummed file, atomically, creating its
        folder if needed (under a sharded partition, collective: one part per rank and a manifest).
        Refuses the live file that DataLoader workers read (`store_path`, under any name)."""
        checkpoint.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device=None, store_path: str | os.PathLike | None = None,
             group=None) -> "Pruner":
        """A Pruner from a file written by `save`: its store in memory, or on `device`, or, with
        `store_path`, in a memory-mapped file there that stream workers read (replacing the file a
        previous run left there: this is the restore step of a job that uses workers). A sharded
        checkpoint (a manifest) loads on every rank, on any world size."""
        return checkpoint.load(cls, path, device=device, store_path=store_path, group=group)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_samples={self.num_samples}, {self.partition}, policy={self.policy}, "
                f"prune_ratio={self.prune_ratio}, epochs={self.epochs}, anneal={self.anneal}, seed={self.seed})")
