"""Training-quality benchmark: test accuracy and saved sample-passes of each pruning policy.

Trains small models on data a package generates (no downloads):
  mnist1d    MNIST-1D (mnist1d.make_dataset, 15000 samples: 12000 train / 3000 test), a 1-D CNN
  synthetic  sklearn make_classification (20000 samples, 10 classes, 5% flipped labels), an MLP
for every policy at every pruning ratio and seed, in parallel processes (one torch thread each).
EMP's beta is chosen first by a sweep on a validation split carved out of the training set (the
test set is never used for it). Used by `benchmarks/quality.py` and `emp-data demo`.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field

import numpy as np

POLICIES = ["full", "random", "infobatch", "epsilon_greedy", "ucb", "emp"]
RATIOS = [0.3, 0.5, 0.7, 0.9]
BETAS = [0.25, 0.5, 1.0, 2.0, 4.0]


@dataclass
class Task:
    name: str
    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int
    model: str


def load_task(name: str, seed: int = 0) -> Task:
    if name == "mnist1d":
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples = 15000
        data = make_dataset(args)
        return Task(name, data["x"].astype(np.float32), data["y"].astype(np.int64),
                    data["x_test"].astype(np.float32), data["y_test"].astype(np.int64), 10, "cnn1d")
    if name == "synthetic":
        from sklearn.datasets import make_classification

        x, y = make_classification(n_samples=20000, n_features=40, n_informative=20, n_redundant=5,
                                   n_classes=10, n_clusters_per_class=2, flip_y=0.05, class_sep=1.5,
                                   random_state=seed)
        x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
        return Task(name, x[:16000], y[:16000].astype(np.int64), x[16000:], y[16000:].astype(np.int64), 10, "mlp")
    raise ValueError(f"unknown task {name!r}; choose mnist1d or synthetic")


def make_model(kind: str, features: int, classes: int):
    import torch.nn as nn

    if kind == "cnn1d":
        return nn.Sequential(
            nn.Unflatten(1, (1, features)),
            nn.Conv1d(1, 32, 5, padding=2), nn.ReLU(),
            nn.Conv1d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * math.ceil(features / 4), classes))
    return nn.Sequential(nn.Linear(features, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, classes))


@dataclass
class RunConfig:
    policy: str
    prune_ratio: float
    seed: int
    epochs: int
    beta: float = 1.0
    validation: bool = False      # train on the train split minus a validation part, score on it
    batch_size: int = 128
    lr: float = 3e-3
    exact_budget: bool = False    # soft rules (infobatch, emp) keep exactly round((1-r)N)


@dataclass
class RunResult:
    config: RunConfig
    accuracy: float
    sample_passes: int
    full_passes: int
    seconds: float
    times_selected: np.ndarray = field(repr=False, default=None)


_TASK: Task | None = None


def _init_worker(task: Task):
    global _TASK
    import torch

    torch.set_num_threads(1)
    _TASK = task


def train_once(cfg: RunConfig, task: Task | None = None) -> RunResult:
    """One training run; every random draw is seeded from cfg.seed."""
    import torch
    import torch.nn.functional as F

    task = task or _TASK
    start = time.perf_counter()
    x, y, x_eval, y_eval = task.x, task.y, task.x_test, task.y_test
    if cfg.validation:
        cut = int(len(x) * 0.85)
        x, y, x_eval, y_eval = x[:cut], y[:cut], x[cut:], y[cut:]
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    torch.manual_seed(cfg.seed)
    model = make_model(task.model, x.shape[1], task.classes)

    def step(batch, pruner):
        logits = model(x_t[batch])
        per_sample = F.cross_entropy(logits, y_t[batch], reduction="none")
        return pruner.loss(per_sample, batch, logits=logits)

    pruner, passes = pruned_training(cfg, len(x), model.parameters(), step, model.train)
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(x_eval)).argmax(1).numpy()
    return RunResult(cfg, float((pred == y_eval).mean()), passes, len(x) * cfg.epochs, time.perf_counter() - start,
                     pruner.store.times_selected.copy())


def pruned_training(cfg, num_samples: int, params, step, train_mode, min_batch: int = 1):
    """The loop every quality run shares: Adam with a cosine schedule over cfg.epochs, a Pruner for
    cfg.policy, each epoch's kept ids in batches of cfg.batch_size; step(batch_ids, pruner) returns
    the loss to backpropagate. Returns (pruner, sample passes trained)."""
    import torch

    from .pruner import Pruner

    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    options = {"beta": cfg.beta} if cfg.policy == "emp" else {}
    if getattr(cfg, "exact_budget", False) and cfg.policy in ("infobatch", "emp"):
        options["exact_budget"] = True
    ratio = 0.0 if cfg.policy == "full" else cfg.prune_ratio
    pruner = Pruner(num_samples, policy=cfg.policy, prune_ratio=ratio, epochs=cfg.epochs, seed=cfg.seed, **options)
    passes = 0
    for epoch in range(cfg.epochs):
        ids, _ = pruner.select(epoch)
        passes += len(ids)
        train_mode()
        for batch in torch.from_numpy(ids).split(cfg.batch_size):
            if len(batch) < min_batch:
                continue
            loss = step(batch, pruner)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    return pruner, passes


def run_all(task: Task, configs: list, workers: int, fn=None) -> list[RunResult]:
    """fn(config) -> RunResult for every config, in `workers` spawned processes (train_once by default)."""
    fn = fn or train_once
    if workers <= 1:
        _init_worker(task)
        return [fn(c) for c in configs]
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(task,)) as pool:
        return pool.map(fn, configs, chunksize=1)


def sweep_beta(task: Task, epochs: int, ratios, workers: int, seed: int = 0):
    """EMP's beta by validation accuracy (mean over `ratios`), never the test set."""
    configs = [RunConfig("emp", r, seed, epochs, beta=b, validation=True) for b in BETAS for r in ratios]
    results = run_all(task, configs, workers)
    score = {b: float(np.mean([res.accuracy for res in results if res.config.beta == b])) for b in BETAS}
    return max(score, key=score.get), score


def summarise(results: list[RunResult]):
    """{(policy, ratio): (mean acc, std acc, saved fraction, n)}"""
    table = {}
    for r in results:
        key = (r.config.policy, 0.0 if r.config.policy == "full" else r.config.prune_ratio)
        table.setdefault(key, []).append(r)
    out = {}
    for key, rs in table.items():
        acc = np.array([r.accuracy for r in rs])
        saved = 1 - sum(r.sample_passes for r in rs) / sum(r.full_passes for r in rs)
        out[key] = (acc.mean(), acc.std(ddof=1) if len(acc) > 1 else 0.0, saved, len(acc))
    return out


def format_table(task_name: str, summary, ratios, beta: float, policies=POLICIES,
                 metric: str = "test accuracy") -> str:
    lines = [f"### {task_name}: {metric} % (mean +- std over seeds) and sample-passes saved vs full",
             "", "| policy | " + " | ".join(f"r = {r}" for r in ratios) + " |",
             "|---|" + "---|" * len(ratios)]
    full = summary.get(("full", 0.0))
    if full:
        cell = f"{100 * full[0]:.2f} +- {100 * full[1]:.2f} (0% saved)"
        lines.append("| full | " + " | ".join([cell] * len(ratios)) + " |")
    for policy in policies[1:]:
        cells = []
        for r in ratios:
            s = summary.get((policy, r))
            cells.append("-" if s is None else f"{100 * s[0]:.2f} +- {100 * s[1]:.2f} ({100 * s[2]:.0f}% saved)")
        name = f"emp (beta={beta:g})" if policy == "emp" else policy
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(path: str, task_name: str, summary, ratios, results: list[RunResult], hist_ratio: float,
         policies=POLICIES, metric: str = "test accuracy"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    full = summary.get(("full", 0.0))
    if full:
        ax1.axhline(100 * full[0], color="k", ls="--", label="full")
    for policy in policies[1:]:
        pts = [(r, summary[(policy, r)]) for r in ratios if (policy, r) in summary]
        if pts:
            ax1.errorbar([p[0] for p in pts], [100 * p[1][0] for p in pts], yerr=[100 * p[1][1] for p in pts],
                         marker="o", capsize=3, label=policy)
    ax1.set_xlabel("pruning ratio r")
    ax1.set_ylabel(f"{metric} (%)")
    ax1.set_title(f"{task_name}: {metric} vs pruning ratio")
    ax1.legend()
    for policy in policies[1:]:
        runs = [r for r in results if r.config.policy == policy and r.config.prune_ratio == hist_ratio
                and r.config.seed == 0]
        if runs and runs[0].times_selected is not None:
            counts = np.bincount(runs[0].times_selected)
            ax2.step(np.arange(len(counts)), counts, where="mid", label=policy)
    ax2.set_xlabel("times selected over training")
    ax2.set_ylabel("number of samples")
    ax2.set_title(f"times-selected histogram at r = {hist_ratio} (EMP paper Fig. 1)")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def benchmark(task_name: str, *, epochs: int, seeds: int, ratios, workers: int, out_dir: str,
              sweep_ratios=(0.7, 0.9), beta: float | None = None, log=print, exact_budget: bool = False,
              policies=POLICIES) -> str:
    t0 = time.perf_counter()
    task = load_task(task_name)
    log(f"[{task_name}] {len(task.x)} train / {len(task.x_test)} test samples, model {task.model}, "
        f"{epochs} epochs, {seeds} seeds, ratios {list(ratios)}, {workers} workers")
    if beta is None:
        beta, scores = sweep_beta(task, epochs, sweep_ratios, workers)
        log(f"[{task_name}] beta sweep on validation split (mean val acc over r in {list(sweep_ratios)}): "
            + ", ".join(f"{b:g}: {100 * s:.2f}%" for b, s in scores.items()) + f" -> beta = {beta:g}")
    configs = [RunConfig("full", 0.0, s, epochs) for s in range(seeds)]
    configs += [RunConfig(p, r, s, epochs, beta=beta, exact_budget=exact_budget)
                for p in policies[1:] for r in ratios for s in range(seeds)]
    results = run_all(task, configs, workers)
    suffix = "_exact_budget" if exact_budget else ""
    title = f"{task_name}{' (exact budget)' if exact_budget else ''}"
    return report(results, title, title, list(ratios), beta, os.path.join(out_dir, f"quality_{task_name}{suffix}.png"),
                  log, t0, policies=policies)


def report(results, table_title, plot_title, ratios, beta, png, log, t0, policies=POLICIES,
           metric="test accuracy") -> str:
    """Logs the summary table, writes the plot; returns the table."""
    summary = summarise(results)
    table = format_table(table_title, summary, ratios, beta, policies=policies, metric=metric)
    os.makedirs(os.path.dirname(png) or ".", exist_ok=True)
    plot(png, plot_title, summary, ratios, results, max(ratios), policies=policies, metric=metric)
    log(table)
    log(f"[{table_title}] plot: {png}; {len(results)} runs in {time.perf_counter() - t0:.0f} s")
    return table


def benchmark_arguments(description: str, quick_help: str, ratios) -> argparse.ArgumentParser:
    """The options both quality benchmarks (supervised and SSL) take."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ratios", type=float, nargs="*", default=ratios)
    ap.add_argument("--beta", type=float, default=None, help="skip the sweep and use this beta")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default="benchmarks/out")
    ap.add_argument("--exact-budget", action="store_true",
                    help="infobatch and emp keep exactly round((1-r)N), so every policy trains on the same budget")
    return ap


def main(argv=None):
    ap = benchmark_arguments(__doc__, "fewer epochs, MNIST-1D only (under 10 min on 2 cores)", RATIOS)
    ap.add_argument("--tasks", nargs="*", default=None, help="mnist1d and/or synthetic")
    ap.add_argument("--policies", nargs="*", default=None, help=f"subset of {POLICIES[1:]} (full always runs)")
    args = ap.parse_args(argv)
    policies = ["full"] + [p for p in (args.policies or POLICIES[1:]) if p != "full"]
    unknown = sorted(set(policies) - set(POLICIES))
    if unknown:
        ap.error(f"unknown policies {unknown}; choose from {POLICIES[1:]}")
    tasks = args.tasks or (["mnist1d"] if args.quick else ["mnist1d", "synthetic"])
    epochs = args.epochs or (12 if args.quick else 30)
    for name in tasks:
        benchmark(name, epochs=epochs, seeds=args.seeds, ratios=args.ratios, workers=args.workers, out_dir=args.out,
                  beta=args.beta, exact_budget=args.exact_budget, policies=policies)


if __name__ == "__main__":
    main()
