"""The rows of a quality table ("arms"): a pruning policy with its options, full data, or full data
for fewer epochs. Every pruned arm runs at the same sample budget per pruned epoch,
k = round((1 - r) N) (the soft rules with exact_budget=True), so rows differ only in *which*
samples they train on; `full-short` spends the same number of sample passes on every sample, in
fewer epochs. Some arms choose an option on the validation split first (`tune`)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

MEMORY_ONLY = math.inf          # a beta that means: rank by the memory term alone (loss_weight = 0)
BETAS = (0.5, 2.0, 8.0, 32.0, MEMORY_ONLY)
SIGNED_BETAS = (-MEMORY_ONLY, -8.0, -2.0, 2.0, 8.0, MEMORY_ONLY)   # emp-mi: both signs
GAP_FACTORS = (1, 2, 4)         # max_gap = factor * ceil(1 / (1 - r)): factor 1 is one RS2 pass


@dataclass(frozen=True)
class Arm:
    label: str
    policy: str
    options: dict = field(default_factory=dict)
    tune: str | None = None         # "beta" or "gap": chosen on the validation split
    grid: tuple = ()
    beta_from: str | None = None    # use the beta another arm chose (emp+gap: emp's)
    full_short: bool = False        # full data, as many sample passes as the pruned arms

    def policy_options(self, ratio: float, beta=None, gap_factor=None) -> dict:
        """The Pruner options of this arm at prune ratio `ratio` with its tuned values."""
        options = dict(self.options)
        if beta is not None:
            options.update(beta_options(beta))
        if gap_factor is not None:
            options["max_gap"] = max_gap(gap_factor, ratio)
        return options


def beta_options(beta: float) -> dict:
    """EMP's options for a grid value: the paper's form, loss + beta * memory, or (beta = +-inf) the
    memory term alone with that sign."""
    if math.isinf(beta):
        return {"beta": math.copysign(1.0, beta), "loss_weight": 0.0}
    return {"beta": float(beta), "loss_weight": 1.0}


def beta_name(beta: float) -> str:
    if math.isinf(beta):
        return "memory only" if beta > 0 else "-memory only"
    return f"beta={beta:g}"


def max_gap(factor: int, ratio: float) -> int:
    """The gap that lets a sample wait `factor` RS2 passes (ceil(N/k) epochs each) at most."""
    return int(factor) * math.ceil(1.0 / (1.0 - ratio) - 1e-9)


EXACT = {"exact_budget": True}
# The cheap ways to spend the same compute, which every table holds.
BASELINES = (
    Arm("full", "full"),
    Arm("full-short", "full", full_short=True),
    Arm("random", "random"),
    Arm("sweep", "sweep"),
)
INFOBATCH = Arm("infobatch", "infobatch", EXACT)
SETA = Arm("seta", "seta", EXACT)
EMP_DEFAULT = Arm("emp-default", "emp", EXACT)     # the library's defaults (memory term alone), nothing tuned
EMP = Arm("emp", "emp", EXACT, tune="beta", grid=BETAS)
EMP_MI = Arm("emp-mi", "emp", dict(EXACT, memory="mi"), tune="beta", grid=SIGNED_BETAS)
SUPERVISED = BASELINES + (
    INFOBATCH,
    Arm("epsilon_greedy", "epsilon_greedy"),
    Arm("ucb", "ucb"),
    SETA,
    Arm("infobatch+gap", "infobatch", EXACT, tune="gap", grid=GAP_FACTORS),
    EMP_DEFAULT,
    EMP,
    Arm("emp+gap", "emp", EXACT, tune="gap", grid=GAP_FACTORS, beta_from="emp"),
    EMP_MI,
)
QUICK = ("full", "full-short", "random", "sweep", "infobatch", "seta", "emp-default", "emp")


def select_arms(arms, labels=None):
    if labels is None:
        return list(arms)
    by_label = {a.label: a for a in arms}
    unknown = sorted(set(labels) - set(by_label))
    if unknown:
        raise ValueError(f"unknown arms {unknown}; choose from {list(by_label)}")
    chosen = [by_label[label] for label in by_label if label in labels]
    for arm in list(chosen):                        # emp+gap needs emp's beta
        if arm.beta_from and by_label[arm.beta_from] not in chosen:
            chosen.insert(0, by_label[arm.beta_from])
    return chosen
