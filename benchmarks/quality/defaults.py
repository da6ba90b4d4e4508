"""Defaults that generalise: candidate default rules against the cheap baselines on five task/model
pairs (STUDY_TASKS), label noise 0/20/40%, prune ratios 0.5/0.7/0.9 and several seeds, at an equal
sample budget; the default is chosen leave-one-task-out by its worst-case regret against the best
cheap baseline (regret.py), and the issue's targets are measured for it.

Every run is appended to a JSON-lines file as it finishes a (task, noise) group, so a long study
resumes where it stopped (`--results`); `--report-only` rebuilds the tables from that file.
"""
from __future__ import annotations

import argparse
import json
import os
import time

from . import regret
from .arms import EXACT, Arm
from .harness import make_config, run_all
from .supervised import train_once
from .tasks import STUDY_TASKS, load_study_task

MEMORY_ONLY = {"beta": 1.0, "loss_weight": 0.0}
BASELINES = (Arm("full", "full"), Arm("full-short", "full", full_short=True), Arm("random", "random"),
             Arm("sweep", "sweep"))
# label -> (arm, fixed tuned values): the rules a default could be.
CANDIDATES = {
    "emp-exact": (Arm("emp-exact", "emp", EXACT), {}),
    "emp-exact+gap": (Arm("emp-exact+gap", "emp", EXACT), {"gap": 1}),
    "weighted-emp": (Arm("weighted-emp", "weighted", dict(MEMORY_ONLY, score="emp", alpha=1.0)), {}),
    "weighted-emp-a3": (Arm("weighted-emp-a3", "weighted", dict(MEMORY_ONLY, score="emp", alpha=3.0)), {}),
    "weighted-loss": (Arm("weighted-loss", "weighted", {"score": "loss", "alpha": 1.0}), {}),
    "infobatch-exact": (Arm("infobatch-exact", "infobatch", EXACT), {}),
    "weighted-emp+gap": (Arm("weighted-emp+gap", "weighted", dict(MEMORY_ONLY, score="emp", alpha=1.0)), {"gap": 1}),
    # other memory signals (signals.py): relative to recent batches, a rank mix with the loss,
    # forgetting events
    "emp-exact-rel": (Arm("emp-exact-rel", "emp", dict(EXACT, memory_signal="relative")), {}),
    "emp-exact-rel+gap": (Arm("emp-exact-rel+gap", "emp", dict(EXACT, memory_signal="relative")), {"gap": 1}),
    "emp-rankmix+gap": (Arm("emp-rankmix+gap", "emp", dict(EXACT, memory_signal="rank-mix")), {"gap": 1}),
    "emp-forget+gap": (Arm("emp-forget+gap", "emp", dict(EXACT, memory_signal="forgetting")), {"gap": 1}),
}
NOISES = (0.0, 0.2, 0.4)
RATIOS = (0.5, 0.7, 0.9)


def study_configs(arm_labels, ratios, seeds: int, epochs: int) -> list:
    configs = []
    for arm in BASELINES:
        if arm.label not in arm_labels:
            continue
        for r in ([0.0] if arm.label == "full" else ratios):
            configs += [make_config(arm, r, s, epochs) for s in range(seeds)]
    for label in arm_labels:
        if label in CANDIDATES:
            arm, fixed = CANDIDATES[label]
            configs += [make_config(arm, r, s, epochs, tuned=fixed) for r in ratios for s in range(seeds)]
    return configs


def read_records(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def run_study(tasks, noises, ratios, seeds: int, epochs: int, workers: int, results: str, arm_labels,
              size: int, log=print) -> list[dict]:
    records = read_records(results)
    done = {(r["task"], r["noise"], r["arm"], r["ratio"], r["seed"]) for r in records}
    for task_name in tasks:
        for noise in noises:
            configs = [c for c in study_configs(arm_labels, ratios, seeds, epochs)
                       if (task_name, noise, c.arm, c.prune_ratio, c.seed) not in done]
            if not configs:
                continue
            t0 = time.perf_counter()
            task = load_study_task(task_name, noise, size=size)
            group = run_all(task, configs, workers, train_once, f"{task_name} noise {noise:g}")
            new = [{"task": task_name, "noise": noise, "arm": r.config.arm, "ratio": r.config.prune_ratio,
                    "seed": r.config.seed, "accuracy": r.accuracy, "sample_passes": r.sample_passes,
                    "full_passes": r.full_passes, "noisy_passes": r.noisy_passes, "epochs": epochs,
                    "seconds": r.seconds, "keep_spread": r.metrics.get("keep_spread")} for r in group]
            with open(results, "a") as f:      # a whole group at once: a killed run loses one group
                f.write("".join(json.dumps(r) + "\n" for r in new))
            records += new
            log(f"[{task_name} noise {noise:g}] {len(group)} runs in {time.perf_counter() - t0:.0f} s")
    return records


def report(records, candidates, log=print) -> str:
    """Markdown: a table per task and noise level, each candidate's worst regret, the
    leave-one-task-out choices and the targets for the rule chosen most often."""
    stats = regret.cell_stats(records)
    candidates = [c for c in candidates if any(k[3] == c for k in stats)]
    lines = []
    arms = [a for a in ("full", "full-short", "random", "sweep") + tuple(candidates) if any(k[3] == a for k in stats)]
    for task in sorted({c[0] for c in regret.cells(stats)}):
        for noise in sorted({c[1] for c in regret.cells(stats) if c[0] == task}):
            ratios = sorted({c[2] for c in regret.cells(stats) if c[:2] == (task, noise)})
            lines += [f"\n**{task}, {100 * noise:g}% flipped labels** (test accuracy %, mean ± 95% CI over seeds)\n",
                      "| arm | " + " | ".join(f"r={r:g}" for r in ratios) + " |",
                      "|---|" + "---|" * len(ratios)]
            for arm in arms:
                cells = [stats.get((task, noise, r, arm)) for r in ratios]
                lines.append(f"| {arm} | " + " | ".join(
                    "-" if s is None else f"{s['mean']:.2f} ± {s['ci']:.2f}" for s in cells) + " |")
    lines += ["\n**Worst-case regret** (points below the best of random, full-short and sweep, over every cell)\n",
              "| candidate | worst regret | in cell | mean regret | cells losing > 1 point |", "|---|---|---|---|---|"]
    for arm in candidates:
        rs = regret.regrets(stats, arm)
        worst = max(rs, key=rs.get)
        lines.append(f"| {arm} | {rs[worst]:.2f} | {worst[0]}, noise {worst[1]:g}, r={worst[2]:g} | "
                     f"{sum(rs.values()) / len(rs):.2f} | {sum(v > 1 for v in rs.values())} of {len(rs)} |")
    folds = regret.leave_one_task_out(stats, candidates)
    lines += ["\n**Leave one task out** (chosen on the other tasks by worst regret, a lead inside the seed noise "
              "being a tie that the mean regret decides; judged on the task held out)\n",
              "| held-out task | chosen | worst regret there | in cell | mean regret there | lowest raw worst regret "
              "on the others | bootstraps where the chosen one's is larger |", "|---|---|---|---|---|---|---|"]
    for f in folds:
        w = f["worst_cell"]
        lines.append(f"| {f['held_out']} | {f['chosen']} | {f['worst_regret']:.2f} | noise {w[1]:g}, r={w[2]:g} | "
                     f"{f['mean_regret']:.2f} | {f['lowest_worst']} | {100 * f['chosen_worse_share']:.0f}% |")
    for arm in sorted({f["chosen"] for f in folds}):
        lines += regret_table(stats, arm)
    text = "\n".join(lines)
    log(text)
    return text


def regret_table(stats, arm) -> list[str]:
    """`arm`'s mean accuracy minus the best cheap baseline's, per task (rows) and noise and ratio
    (columns), in points: negative is a loss."""
    cells = regret.cells(stats)
    noises = sorted({c[1] for c in cells})
    ratios = sorted({c[2] for c in cells})
    lines = [f"\n**{arm} minus the best of random, full-short and sweep** (points; noise / ratio)\n",
             "| task | " + " | ".join(f"{100 * z:g}% / {r:g}" for z in noises for r in ratios) + " |",
             "|---|" + "---|" * (len(noises) * len(ratios))]
    for task in sorted({c[0] for c in cells}):
        row = []
        for z in noises:
            for r in ratios:
                cell = (task, z, r)
                row.append("-" if cell + (arm,) not in stats else f"{-regret.regret(stats, arm, cell):+.2f}")
        lines.append(f"| {task} | " + " | ".join(row) + " |")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="*", default=list(STUDY_TASKS))
    ap.add_argument("--noises", type=float, nargs="*", default=list(NOISES))
    ap.add_argument("--ratios", type=float, nargs="*", default=list(RATIOS))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--size", type=int, default=8000, help="samples per task, train and test together")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--arms", nargs="*", default=[a.label for a in BASELINES] + list(CANDIDATES))
    ap.add_argument("--results", default="benchmarks/out/defaults_study.jsonl")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
    if args.report_only:
        records = read_records(args.results)
    else:
        records = run_study(args.tasks, args.noises, args.ratios, args.seeds, args.epochs, args.workers,
                            args.results, args.arms, args.size)
    stats = regret.cell_stats(records)
    candidates = [a for a in args.arms if a in CANDIDATES and any(k[3] == a for k in stats)]
    report(records, candidates)
    for arm in candidates:
        t = regret.targets(stats, arm)
        print(f"{arm}: worst below random {t['worst_below_random']:.2f} points ({t['worst_below_random_cell']}); "
              f"clean r=0.7 at or above the best of full-short and sweep on {t['clean_0.7_wins']} of "
              f"{len(t['clean_0.7_margin'])} tasks; collapsed seeds: {len(t['collapses'])}")


if __name__ == "__main__":
    main()
