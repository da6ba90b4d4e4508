"""Tables and plots of quality runs: accuracy (mean +- std over seeds) per arm and ratio with the
share of sample passes saved against full data, the frontier of accuracy against the sample passes
actually trained, and the times-selected histogram (the EMP paper's Fig. 1)."""
from __future__ import annotations

import os
import time

import numpy as np

from .arms import beta_name


def summarise(results, metric: str | None = None) -> dict:
    """{(arm, ratio): dict(mean, std, saved, n, noisy, passes)} of the accuracy, or of
    `metrics[metric]`; `full` is filed under ratio 0."""
    groups: dict = {}
    for r in results:
        key = (r.config.arm, 0.0 if r.config.arm == "full" else r.config.prune_ratio)
        groups.setdefault(key, []).append(r)
    out = {}
    for key, rs in groups.items():
        acc = np.array([r.accuracy if metric is None else r.metrics[metric] for r in rs])
        passes = sum(r.sample_passes for r in rs)
        out[key] = {
            "mean": float(acc.mean()), "std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0, "n": len(acc),
            "saved": 1 - passes / sum(r.full_passes for r in rs),
            "noisy": sum(r.noisy_passes for r in rs) / passes if passes else 0.0,
            "passes": passes / sum(r.full_passes for r in rs),
        }
    return out


def arm_name(label: str, tuned: dict) -> str:
    parts = []
    if "beta" in tuned:
        parts.append(beta_name(tuned["beta"]))
    if "gap" in tuned:
        parts.append(f"gap factor {tuned['gap']}")
    return f"{label} ({', '.join(parts)})" if parts else label


def format_table(title: str, summary: dict, ratios, arms, tuned: dict, metric: str = "test accuracy",
                 noisy: str | None = None) -> str:
    """A markdown table; `noisy` ("flipped", "mismatched") adds each cell's share of passes spent on
    the training samples the task corrupted on purpose."""
    lines = [f"### {title}: {metric} % (mean +- std over seeds), sample passes saved against full"
             + (f", share of passes on {noisy} samples" if noisy else ""),
             "", "| arm | " + " | ".join(f"r = {r}" for r in ratios) + " |", "|---|" + "---|" * len(ratios)]
    for arm in arms:
        cells = []
        for r in ratios:
            s = summary.get((arm.label, 0.0 if arm.label == "full" else r))
            if s is None:
                cells.append("-")
                continue
            extra = f", {100 * s['noisy']:.0f}% {noisy}" if noisy else ""
            cells.append(f"{100 * s['mean']:.2f} +- {100 * s['std']:.2f} ({100 * s['saved']:.0f}% saved{extra})")
        lines.append(f"| {arm_name(arm.label, tuned.get(arm.label, {}))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_rows(summary: dict, ratios, arms, baselines=("full-short", "sweep", "random")) -> list[str]:
    """A plain sentence per ratio: the best arm, and the best arm of ours against the best baseline."""
    out = []
    ours = [a.label for a in arms if a.label not in ("full",) + tuple(baselines)]
    for r in ratios:
        cells = {a.label: summary[(a.label, r)] for a in arms if (a.label, r) in summary and a.label != "full"}
        if not cells:
            continue
        best = max(cells, key=lambda k: cells[k]["mean"])
        base = [b for b in baselines if b in cells]
        mine = [o for o in ours if o in cells]
        line = f"r = {r}: best {best} {100 * cells[best]['mean']:.2f}%"
        if base and mine:
            b = max(base, key=lambda k: cells[k]["mean"])
            m = max(mine, key=lambda k: cells[k]["mean"])
            diff = 100 * (cells[m]["mean"] - cells[b]["mean"])
            line += (f"; best rule {m} {100 * cells[m]['mean']:.2f}% vs best baseline {b} "
                     f"{100 * cells[b]['mean']:.2f}% ({diff:+.2f} points)")
        out.append(line)
    return out


def publish(results, *, label: str, title: str, plot_title: str, png: str, ratios, arms, tuned: dict, log, t0: float,
            metric: str = "test accuracy", plot_metric: str | None = None, noisy: str | None = None) -> str:
    """The end of a benchmark: the table logged, the best-rule lines, the plot and the pickled
    results written; returns the table."""
    summary = summarise(results)
    table = format_table(title, summary, ratios, arms, tuned, metric=metric, noisy=noisy)
    plot(png, plot_title, summary, ratios, results, arms, tuned, metric=plot_metric or metric)
    save_results(png[:-4] + ".pkl", results, tuned)
    log(table)
    for line in best_rows(summary, ratios, arms):
        log(f"[{label}] {line}")
    log(f"[{label}] plot: {png}; {len(results)} runs in {time.perf_counter() - t0:.0f} s")
    return table


def save_results(path: str, results, tuned: dict) -> None:
    """Every run's config and outcome (pickle), so tables and plots can be made again without training."""
    import pickle

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({"results": results, "tuned": tuned}, f)


def plot(path: str, title: str, summary: dict, ratios, results, arms, tuned: dict, metric: str = "test accuracy"):
    """Left: accuracy against the share of full's sample passes actually trained (one line per arm
    through its ratios). Right: how often each sample was trained, at the highest ratio (seed 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    hist_ratio = max(ratios)
    palette = plt.get_cmap("tab20")
    for n, arm in enumerate(arms):
        name = arm_name(arm.label, tuned.get(arm.label, {}))
        style = {"color": palette(n % 20), "ls": "-" if n < 10 else "--"}   # one colour per arm, both panels
        if arm.label == "full":
            s = summary.get(("full", 0.0))
            if s:
                ax1.errorbar([s["passes"]], [100 * s["mean"]], yerr=[100 * s["std"]], marker="*", ms=12, color="k",
                             ls="none", capsize=3, label=name)
            continue
        pts = [summary[(arm.label, r)] for r in ratios if (arm.label, r) in summary]
        if pts:
            ax1.errorbar([p["passes"] for p in pts], [100 * p["mean"] for p in pts],
                         yerr=[100 * p["std"] for p in pts], marker="o", capsize=3, label=name, **style)
        runs = [r for r in results if r.config.arm == arm.label and r.config.prune_ratio == hist_ratio
                and r.config.seed == 0 and r.times_selected is not None]
        if runs and arm.label != "full-short":
            counts = np.bincount(runs[0].times_selected)
            ax2.step(np.arange(len(counts)), counts, where="mid", label=name, **style)
    ax1.set_xlabel("sample passes trained / full's sample passes")
    ax1.set_ylabel(f"{metric} (%)")
    ax1.set_title(f"{title}: {metric} vs passes (ratios {', '.join(map(str, ratios))})")
    ax1.legend(fontsize=7)
    ax2.set_xlabel("times selected over training")
    ax2.set_ylabel("number of samples")
    ax2.set_yscale("log")
    ax2.set_title(f"times-selected histogram at r = {hist_ratio} (EMP paper Fig. 1)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
