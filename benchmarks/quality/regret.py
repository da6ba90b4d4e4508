"""Judging candidate defaults by their worst cell: per-cell means with confidence intervals, each
candidate's regret against the best cheap baseline, and the choice made leave-one-task-out.

A *cell* is (task, noise, ratio). A record is one training run: a dict with task, noise, ratio,
arm, seed and accuracy (a share in [0, 1]). Regret is in accuracy points (percent): the best cheap
baseline's mean over seeds minus the candidate's, so a positive regret is a loss.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

CHEAP = ("random", "full-short", "sweep")

# Two-sided 95% Student t quantiles by degrees of freedom (scipy is not a dependency).
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
        10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t95(dof: int) -> float:
    if dof < 1:
        return math.nan
    known = [d for d in _T95 if d <= dof]
    return _T95[max(known)] if dof <= 30 else 1.96


def cell_stats(records) -> dict:
    """{(task, noise, ratio, arm): {"mean", "std", "ci", "n", "accuracies"}} in points; `full` is
    filed under every ratio its task and noise have (it does not depend on the ratio)."""
    groups = defaultdict(list)
    ratios = defaultdict(set)
    for r in records:
        if r["arm"] != "full":
            ratios[(r["task"], r["noise"])].add(r["ratio"])
    for r in records:
        keys = [r["ratio"]] if r["arm"] != "full" else sorted(ratios[(r["task"], r["noise"])])
        for ratio in keys:
            groups[(r["task"], r["noise"], ratio, r["arm"])].append((r["seed"], 100.0 * r["accuracy"]))
    out = {}
    for key, runs in groups.items():
        acc = np.array([a for _, a in sorted(runs)])
        std = float(acc.std(ddof=1)) if len(acc) > 1 else 0.0
        out[key] = {"mean": float(acc.mean()), "std": std, "n": len(acc), "accuracies": acc,
                    "ci": t95(len(acc) - 1) * std / math.sqrt(len(acc)) if len(acc) > 1 else math.nan}
    return out


def cells(stats: dict) -> list:
    return sorted({key[:3] for key in stats})


def best_cheap(stats: dict, cell) -> tuple[str, float]:
    """The cheap baseline with the highest mean in `cell`, and that mean."""
    present = [(stats[cell + (arm,)]["mean"], arm) for arm in CHEAP if cell + (arm,) in stats]
    if not present:
        raise ValueError(f"no cheap baseline ({', '.join(CHEAP)}) was run in cell {cell}")
    mean, arm = max(present)
    return arm, mean


def regret(stats: dict, arm: str, cell) -> float:
    return best_cheap(stats, cell)[1] - stats[cell + (arm,)]["mean"]


def regrets(stats: dict, arm: str, task_filter=None) -> dict:
    """{cell: regret of `arm`} over the cells whose task passes `task_filter` (all by default)."""
    return {c: regret(stats, arm, c) for c in cells(stats)
            if (task_filter is None or task_filter(c[0])) and c + (arm,) in stats}


def choose(stats: dict, candidates, tasks, *, confidence: float = 0.9, boots: int = 1000, seed: int = 0) -> str:
    """The candidate with the smallest worst-case regret over the cells of `tasks`, where a
    worst-case difference has to be more than noise: every candidate whose worst regret is not
    larger than the best one's in at least `confidence` of `boots` seed bootstraps (each cell's
    seeds resampled, every arm at once) is tied with it, and a tie goes to the smaller mean regret.
    The worst of 45 noisy cell means moves by points from one set of seeds to another, so without
    this a candidate that loses more everywhere could win on the luck of one cell."""
    rs = {arm: regrets(stats, arm, lambda t: t in tasks) for arm in candidates}
    best = lowest_worst(stats, candidates, tasks)
    worse = worse_share(stats, candidates, best, tasks, boots, seed)
    tied = [arm for arm in candidates if arm == best or worse[arm] < confidence]
    return min(tied, key=lambda arm: (float(np.mean(list(rs[arm].values()))), max(rs[arm].values())))


def lowest_worst(stats: dict, candidates, tasks) -> str:
    """The candidate with the smallest worst-case regret over the cells of `tasks`, before noise is
    considered (ties: the smaller mean regret)."""
    def key(arm):
        rs = list(regrets(stats, arm, lambda t: t in tasks).values())
        return max(rs), float(np.mean(rs))
    return min(candidates, key=key)


def worse_share(stats: dict, candidates, best: str, tasks, boots: int = 1000, seed: int = 0) -> dict:
    """{arm: share of seed bootstraps in which arm's worst regret over the cells of `tasks` is
    larger than `best`'s}."""
    rng = np.random.default_rng(seed)
    task_cells = [c for c in cells(stats) if c[0] in tasks]
    arms = sorted(set(candidates) | {best} | set(CHEAP))
    means = {}           # (cell, arm) -> the arm's mean accuracy in each bootstrap
    for c in task_cells:
        for arm in arms:
            if c + (arm,) in stats:
                acc = stats[c + (arm,)]["accuracies"]
                means[c, arm] = acc[rng.integers(0, len(acc), size=(boots, len(acc)))].mean(axis=1)
    worst = {}
    for arm in set(candidates) | {best}:
        per_cell = [np.max([means[c, b] for b in CHEAP if (c, b) in means], axis=0) - means[c, arm]
                    for c in task_cells if (c, arm) in means]
        worst[arm] = np.max(per_cell, axis=0)
    return {arm: float(np.mean(worst[arm] > worst[best])) for arm in candidates}


def leave_one_task_out(stats: dict, candidates) -> list[dict]:
    """For every task: the candidate chosen on the other tasks alone, and how it does on the task
    held out (its worst and mean regret there, and the cell of the worst); also the candidate with
    the lowest worst regret on the other tasks before noise is considered, and the share of seed
    bootstraps in which the chosen one's worst regret there is larger than that one's."""
    tasks = sorted({c[0] for c in cells(stats)})
    if len(tasks) < 2:
        return []           # nothing to choose on without the held-out task
    folds = []
    for held_out in tasks:
        others = [t for t in tasks if t != held_out]
        chosen = choose(stats, candidates, others)
        lowest = lowest_worst(stats, candidates, others)
        on_held = regrets(stats, chosen, lambda t: t == held_out)
        worst_cell = max(on_held, key=on_held.get)
        folds.append({"held_out": held_out, "chosen": chosen, "worst_regret": on_held[worst_cell],
                      "worst_cell": worst_cell, "mean_regret": float(np.mean(list(on_held.values()))),
                      "lowest_worst": lowest,
                      "chosen_worse_share": worse_share(stats, [chosen], lowest, others)[chosen]})
    return folds


def collapses(stats: dict, arm: str, reference: str = "random", sds: float = 3.0) -> list[tuple]:
    """(cell, seed index, accuracy, reference mean) of every run of `arm` more than `sds` standard
    deviations of the reference's seeds below the reference's mean."""
    out = []
    for cell in cells(stats):
        ref, mine = stats.get(cell + (reference,)), stats.get(cell + (arm,))
        if ref is None or mine is None:
            continue
        floor = ref["mean"] - sds * ref["std"]
        out += [(cell, i, float(a), ref["mean"]) for i, a in enumerate(mine["accuracies"]) if a < floor]
    return out


def targets(stats: dict, arm: str) -> dict:
    """The issue's targets for a default, measured: worst gap to random, clean r = 0.7 against the
    best of full-short and sweep per task, and seeds that collapse."""
    below_random = {c: stats[c + ("random",)]["mean"] - stats[c + (arm,)]["mean"] for c in cells(stats)
                    if c + (arm,) in stats and c + ("random",) in stats}
    worst = max(below_random, key=below_random.get)
    clean = {}
    for task, noise, ratio in cells(stats):
        if noise == 0 and math.isclose(ratio, 0.7) and (task, noise, ratio, arm) in stats:
            cell = (task, noise, ratio)
            rival = max(stats[cell + (b,)]["mean"] for b in ("full-short", "sweep") if cell + (b,) in stats)
            clean[task] = stats[cell + (arm,)]["mean"] - rival
    return {"worst_below_random": below_random[worst], "worst_below_random_cell": worst,
            "clean_0.7_margin": clean, "clean_0.7_wins": sum(m >= 0 for m in clean.values()),
            "collapses": collapses(stats, arm)}
