"""Pruning policies: one validated dataclass each, turned into the C++ selection config.

| name             | score                          | selection                                     | weight |
|------------------|--------------------------------|-----------------------------------------------|--------|
| full             | -                              | every sample                                  | 1 |
| random           | -                              | exactly k = round((1-r)N), uniform            | 1 |
| infobatch        | last loss                      | score >= mean kept; others kept w.p. 1-r      | 1/(1-r) for kept below-mean |
| epsilon_greedy   | running mean of loss           | (1-eps)k best + eps*k uniform among the rest  | 1 |
| ucb              | running mean + c * running std | k best                                        | 1 |
| emp (soft)       | w * loss + beta * memory (w=0) | as infobatch                                  | as infobatch |
| emp (topk)       | w * loss + beta * memory (w=0) | (1-eps)k best + eps*k uniform                 | 1 |
| weighted         | a score s (default: loss + beta*memory) | k without replacement, P ~ s^alpha    | Horvitz-Thompson 1/pi, normalised |
| sweep (RS2)      | -                              | the next k of a seeded permutation; new one per pass | 1 |
| seta             | last loss                      | random k, 1-D k-means of their scores, a window sliding easy -> hard | 1 |

``max_gap=m`` (every rule but full and sweep): a sample not kept in the last m pruned epochs is
forced in, inside the budget, at weight 1; ``max_gap="pass"`` is one RS2 pass, ceil(1 / (1 - r))
epochs (exact for the rule's promise: a forced sample's inclusion
probability is 1). It bounds how long any sample can go untrained, the "low-frequency learning" the
EMP paper describes.

Never-seen samples are always kept by soft rules and ranked first by top-k rules, so the first
epoch trains on everything (soft) or a uniform k (top-k).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

from .. import _C
from .._validate import MAX_ALPHA, MAX_COEFFICIENT, as_count, as_finite, as_ratio

MAX_GAP = 0xFFFF    # the store's idle counts saturate here


def gap_epochs(max_gap, prune_ratio: float) -> int:
    """max_gap in epochs: an int as given, or "pass": one pass of RS2 at this ratio, ceil(1 / (1 - r))
    epochs (the longest a sample waits when every epoch trains the next k of a permutation)."""
    if max_gap != "pass":
        return int(max_gap)
    if prune_ratio <= 0.0:
        return 1
    return min(MAX_GAP, math.ceil(1.0 / (1.0 - prune_ratio) - 1e-9))


@dataclass(frozen=True)
class Policy:
    name: ClassVar[str] = ""
    needs_memory: ClassVar[bool] = False

    def config(self, prune_ratio: float) -> "_C.SelectConfig":
        raise NotImplementedError

    def annealing_config(self, prune_ratio: float) -> "_C.SelectConfig":
        """What annealing epochs (the last 1 - anneal share) train on: every sample at weight 1."""
        return Full().config(0.0)

    def options(self) -> dict:
        return asdict(self)

    @property
    def budget(self) -> str:
        """"exact": every pruned epoch trains k = round((1 - r) N) samples; "soft": InfoBatch's
        semantics, every above-mean sample plus a (1 - r) share of the rest, so more than k."""
        return "soft" if getattr(self, "exact_budget", True) is False and getattr(self, "mode", "soft") == "soft" \
            else "exact"

    def _base(self, rule, score, prune_ratio) -> "_C.SelectConfig":
        cfg = _C.SelectConfig()
        cfg.rule = rule
        cfg.score = score
        cfg.prune_ratio = prune_ratio
        cfg.max_gap = gap_epochs(getattr(self, "max_gap", 0), prune_ratio)
        return cfg

    def _check_gap(self) -> None:
        if isinstance(self.max_gap, str):
            if self.max_gap != "pass":
                raise ValueError(f"max_gap must be an integer >= 0 or 'pass' (one RS2 pass), got {self.max_gap!r}")
            return
        as_count(self.max_gap, "max_gap", minimum=0, maximum=MAX_GAP)


@dataclass(frozen=True)
class Full(Policy):
    """Train on every sample every epoch (the reference)."""
    name: ClassVar[str] = "full"
    budget: ClassVar[str] = "full"

    def config(self, prune_ratio):
        return self._base(_C.Rule.FULL, _C.ScoreKind.LOSS, 0.0)


@dataclass(frozen=True)
class Random(Policy):
    """Exactly round((1-r)N) samples, uniformly without replacement, weight 1 (the loss is already a
    mean, so an unweighted mean over a uniform subset is unbiased)."""
    name: ClassVar[str] = "random"
    max_gap: int | str = 0

    def __post_init__(self):
        self._check_gap()

    def config(self, prune_ratio):
        cfg = self._base(_C.Rule.TOPK, _C.ScoreKind.LOSS, prune_ratio)
        cfg.explore = 1.0
        return cfg


@dataclass(frozen=True)
class InfoBatch(Policy):
    """InfoBatch (Qin et al., ICLR 2024). ``exact_budget=True`` keeps exactly round((1-r)N): every
    above-mean sample plus a uniform draw of the rest, weighted by the inverse draw probability."""
    name: ClassVar[str] = "infobatch"
    exact_budget: bool = False
    max_gap: int | str = 0

    def __post_init__(self):
        self._check_gap()

    def config(self, prune_ratio):
        cfg = self._base(_C.Rule.SOFT, _C.ScoreKind.LOSS, prune_ratio)
        cfg.exact_budget = bool(self.exact_budget)
        return cfg


@dataclass(frozen=True)
class EpsilonGreedy(Policy):
    """Raju et al. 2021: the (1-epsilon) share of k with the highest running-mean loss, plus an
    epsilon share drawn uniformly from the rest."""
    name: ClassVar[str] = "epsilon_greedy"
    epsilon: float = 0.1
    max_gap: int | str = 0

    def __post_init__(self):
        as_ratio(self.epsilon, "epsilon", upper_inclusive=True)
        self._check_gap()

    def config(self, prune_ratio):
        cfg = self._base(_C.Rule.TOPK, _C.ScoreKind.MEAN, prune_ratio)
        cfg.explore = float(self.epsilon)
        return cfg


@dataclass(frozen=True)
class UCB(Policy):
    """Raju et al. 2021: top k by running mean + c * running std of the loss."""
    name: ClassVar[str] = "ucb"
    c: float = 1.0
    max_gap: int | str = 0

    def __post_init__(self):
        as_finite(self.c, "c", minimum=0.0, maximum=MAX_COEFFICIENT)
        self._check_gap()

    def config(self, prune_ratio):
        cfg = self._base(_C.Rule.TOPK, _C.ScoreKind.UCB, prune_ratio)
        cfg.ucb_c = float(self.c)
        return cfg


@dataclass(frozen=True)
class EMP(Policy):
    """EMP (Xiao et al., arXiv 2408.16031): score = loss_weight * loss + beta * memory term.

    The defaults were chosen leave-one-task-out by their worst case against random subsets, fewer
    full epochs and RS2 sweeps (docs/quality.md, "Defaults that generalise"): the memory term alone
    (loss_weight=0, beta=1), InfoBatch's soft rule on it at an exact budget (``exact_budget=True``:
    every pruned epoch trains exactly round((1 - r) N) samples, so prune_ratio means what it says),
    and ``max_gap="pass"`` (no sample waits longer than one RS2 pass, ceil(1 / (1 - r)) epochs).
    ``exact_budget=False`` asks for InfoBatch's own semantics (every above-mean sample plus a (1 - r)
    share of the rest: more than (1 - r) N). The paper's form is loss_weight=1 with a beta to tune;
    loss_weight=1, beta=0, exact_budget=False, max_gap=0 is InfoBatch exactly.

    The memory term comes from the model's prediction (computed from ``logits=`` in
    ``Pruner.loss``), or is given by the caller (``memory=``, e.g. the contrastive term):
      ``memory="entropy"`` (default): H(softmax(logits)), divided by log(C) with
          ``normalize_entropy`` so it lies in [0, 1];
      ``memory="mi"``: the sample's share of the mutual information between inputs and
          predictions, KL(p(y|x) || p_bar) / log(C), with p_bar the running mean prediction.
    ``loss_weight=0`` ranks by the memory term alone (the loss is still recorded; only beta's sign
    matters then). A negative beta prefers samples with a low memory term (the sign is an empirical
    question; see README). ``mode="soft"`` selects as InfoBatch on that score, ``mode="topk"`` keeps
    the top k with an optional ``epsilon`` random share. loss_weight=1, beta=0 reproduces infobatch /
    loss top-k exactly."""
    name: ClassVar[str] = "emp"
    needs_memory: ClassVar[bool] = True
    beta: float = 1.0
    mode: str = "soft"
    epsilon: float = 0.0
    exact_budget: bool = True
    normalize_entropy: bool = True
    max_gap: int | str = "pass"
    loss_weight: float = 0.0
    memory: str = "entropy"

    def __post_init__(self):
        as_finite(self.beta, "beta", minimum=-MAX_COEFFICIENT, maximum=MAX_COEFFICIENT)
        as_finite(self.loss_weight, "loss_weight", minimum=0.0, maximum=MAX_COEFFICIENT)
        if self.mode not in ("soft", "topk"):
            raise ValueError(f"mode must be 'soft' or 'topk', got {self.mode!r}")
        if self.memory not in MEMORY_TERMS:
            raise ValueError(f"memory must be one of {list(MEMORY_TERMS)}, got {self.memory!r}")
        as_ratio(self.epsilon, "epsilon", upper_inclusive=True)
        self._check_gap()

    def config(self, prune_ratio):
        if self.mode == "soft":
            cfg = self._base(_C.Rule.SOFT, _C.ScoreKind.EMP, prune_ratio)
            cfg.exact_budget = bool(self.exact_budget)
        else:
            cfg = self._base(_C.Rule.TOPK, _C.ScoreKind.EMP, prune_ratio)
            cfg.explore = float(self.epsilon)
        cfg.beta = float(self.beta)
        cfg.loss_weight = float(self.loss_weight)
        return cfg


MEMORY_TERMS = ("entropy", "mi")


_SCORES = {"loss": _C.ScoreKind.LOSS, "emp": _C.ScoreKind.EMP, "mean": _C.ScoreKind.MEAN, "ucb": _C.ScoreKind.UCB}


@dataclass(frozen=True)
class Weighted(Policy):
    """k = round((1-r)N) samples without replacement with probability ~ score^alpha (exponential
    keys, Efraimidis-Spirakis), weighted by Horvitz-Thompson 1/pi_i. ``normalize=True`` rescales
    the kept weights to sum to N (Hajek): lower variance, a small bias; False keeps plain 1/pi_i
    (unbiased). ``score`` is one of loss, emp (``loss_weight * loss + beta * memory``), mean, ucb
    (with ``c``); ``score="emp", loss_weight=0, beta=1`` draws by the memory term alone. alpha acts as
    an inverse temperature: 0 is uniform, larger values approach EMP's top-k."""
    name: ClassVar[str] = "weighted"
    alpha: float = 1.0
    score: str = "loss"
    beta: float = 0.0
    c: float = 1.0
    normalize: bool = True
    max_gap: int | str = 0
    loss_weight: float = 1.0

    @property
    def needs_memory(self) -> bool:  # type: ignore[override]
        return self.score == "emp" and self.beta > 0

    def __post_init__(self):
        as_finite(self.alpha, "alpha", minimum=0.0, maximum=MAX_ALPHA)
        as_finite(self.beta, "beta", minimum=0.0, maximum=MAX_COEFFICIENT)
        as_finite(self.loss_weight, "loss_weight", minimum=0.0, maximum=MAX_COEFFICIENT)
        as_finite(self.c, "c", minimum=0.0, maximum=MAX_COEFFICIENT)
        if self.score not in _SCORES:
            raise ValueError(f"score must be one of {sorted(_SCORES)}, got {self.score!r}")
        self._check_gap()

    def config(self, prune_ratio):
        cfg = self._base(_C.Rule.WEIGHTED, _SCORES[self.score], prune_ratio)
        cfg.alpha = float(self.alpha)
        cfg.beta = float(self.beta)
        cfg.loss_weight = float(self.loss_weight)
        cfg.ucb_c = float(self.c)
        cfg.normalize = bool(self.normalize)
        return cfg


@dataclass(frozen=True)
class Sweep(Policy):
    """RS2 without replacement (Okanovic et al., ICLR 2024): every epoch trains on the next k =
    round((1-r)N) samples of a seeded random permutation, so a pass of ceil(N/k) epochs sees every
    sample once (the pass's last chunk tops up from the head of the same permutation); the next pass
    draws a new permutation. Weight 1. Scores are not used: the cheap baseline a score-based rule
    must beat at an equal budget."""
    name: ClassVar[str] = "sweep"

    def config(self, prune_ratio):
        return self._base(_C.Rule.SWEEP, _C.ScoreKind.LOSS, prune_ratio)


@dataclass(frozen=True)
class SeTa(Policy):
    """SeTa (Zhou, Gao, Wang, "Scale Efficient Training for Large Datasets", CVPR 2025), as its
    reference code (github.com/mrazhou/SeTa, seta.py) does it, with its defaults: each pruned epoch
    draws a uniform k = round((1-r)N), groups their last losses by 1-D k-means into ``groups``
    clusters ordered easy -> hard, and keeps the members of a window of round(groups * window)
    clusters that slides one cluster per epoch from the easiest to the hardest, then starts over
    (epoch 0: every cluster). Weight 1. So it keeps about ``window`` * k per epoch, fewer than k;
    ``exact_budget=True`` keeps exactly k (a uniform k of the window's members over all samples,
    topped up from outside the window when it holds fewer). Annealing epochs train on a uniform k
    too (the reference's partial annealing), not on every sample."""
    name: ClassVar[str] = "seta"
    groups: int = 10
    window: float = 0.5
    exact_budget: bool = False
    max_gap: int | str = 0

    def __post_init__(self):
        as_count(self.groups, "groups", minimum=1, maximum=1024)
        as_finite(self.window, "window", minimum=0.0, maximum=1.0)
        if not self.window > 0:
            raise ValueError(f"window must be in (0, 1], got {self.window!r}")
        if round(self.groups * self.window) < 1:
            raise ValueError(f"groups * window must round to at least 1 cluster, got {self.groups} * {self.window}")
        self._check_gap()

    def config(self, prune_ratio):
        cfg = self._base(_C.Rule.SETA, _C.ScoreKind.LOSS, prune_ratio)
        cfg.groups = int(self.groups)
        cfg.window = float(self.window)
        cfg.exact_budget = bool(self.exact_budget)
        return cfg

    def annealing_config(self, prune_ratio):
        return Random().config(prune_ratio)


POLICIES = {cls.name: cls for cls in (Full, Random, InfoBatch, EpsilonGreedy, UCB, EMP, Weighted, Sweep, SeTa)}


def make_policy(policy, **options) -> Policy:
    """A policy from its name and options (or a Policy instance, with no options)."""
    if isinstance(policy, Policy):
        if options:
            raise TypeError(f"options {sorted(options)} given with a Policy instance; set them on the instance")
        return policy
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose one of {sorted(POLICIES)}")
    cls = POLICIES[policy]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        allowed = sorted(known) or "none"
        raise TypeError(f"policy {policy!r} has no option(s) {unknown}; its options: {allowed}")
    return cls(**options)
