"""Self-supervised quality benchmark: SimCLR pretraining on MNIST-1D under each pruning policy.

A small 1-D CNN encoder is pretrained contrastively (NT-Xent over two augmented views: random
shift, amplitude scale, Gaussian noise) with no labels. Each policy decides which samples each
epoch trains on, from the per-sample InfoNCE loss (`emp` adds beta times the contrastive memory
term, the entropy of the anchor's softmax row; see `emp_data.scores.contrastive_scores`).
Quality is linear-probe accuracy on frozen encoder features: labels are used only by the probe.
EMP's beta is chosen by a sweep on a validation split of the training set, never the test set.
Used by `benchmarks/quality_ssl.py`.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from .quality import RunResult, Task, benchmark_arguments, load_task, pruned_training, report, run_all

POLICIES = ["full", "random", "infobatch", "emp"]
RATIOS = [0.5, 0.7, 0.9]
BETAS = [0.5, 1.0, 2.0, 4.0]
FEATURES = 64      # encoder output: what the linear probe sees
PROJECTION = 32    # projection head output: what NT-Xent compares


@dataclass
class SSLConfig:
    policy: str
    prune_ratio: float
    seed: int
    epochs: int
    beta: float = 1.0
    validation: bool = False     # pretrain and probe on the train split minus a validation part
    batch_size: int = 256
    lr: float = 2e-3
    temperature: float = 0.2
    exact_budget: bool = False   # soft rules (infobatch, emp) keep exactly round((1-r)N)


def make_encoder(length: int):
    import torch.nn as nn

    return nn.Sequential(
        nn.Unflatten(1, (1, length)),
        nn.Conv1d(1, 32, 5, padding=2), nn.ReLU(),
        nn.Conv1d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv1d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * ((length + 3) // 4), FEATURES))


def make_projection():
    import torch.nn as nn

    return nn.Sequential(nn.ReLU(), nn.Linear(FEATURES, FEATURES), nn.ReLU(), nn.Linear(FEATURES, PROJECTION))


def augment(x, generator):
    """One random view per row: shift by up to 4 steps (edge-padded), scale 0.7-1.3, add noise."""
    import torch

    batch, length = x.shape
    shift = torch.randint(-4, 5, (batch, 1), generator=generator)
    index = (torch.arange(length)[None, :] - shift).clamp_(0, length - 1)
    scale = torch.empty(batch, 1).uniform_(0.7, 1.3, generator=generator)
    noise = torch.randn(x.shape, generator=generator) * 0.15
    return x.gather(1, index) * scale + noise


def linear_probe(train_feats, train_y, eval_feats, eval_y, classes: int, steps: int = 100) -> float:
    """Accuracy of a multinomial logistic regression (L-BFGS, full batch) on frozen features."""
    import torch
    import torch.nn.functional as F

    mean, std = train_feats.mean(0), train_feats.std(0) + 1e-6
    a, b = (train_feats - mean) / std, (eval_feats - mean) / std
    w = torch.zeros(a.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(a @ w + bias, train_y) + 1e-4 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((b @ w + bias).argmax(1) == eval_y).float().mean())


def pretrain_once(cfg: SSLConfig, task: Task | None = None) -> RunResult:
    """One pretraining run plus its linear probe; every random draw is seeded from cfg.seed."""
    import torch

    from . import quality
    from .scores import contrastive_scores

    task = task or quality._TASK
    start = time.perf_counter()
    x, y, x_eval, y_eval = task.x, task.y, task.x_test, task.y_test
    if cfg.validation:
        cut = int(len(x) * 0.85)
        x, y, x_eval, y_eval = x[:cut], y[:cut], x[cut:], y[cut:]
    x_t = torch.from_numpy(x)
    torch.manual_seed(cfg.seed)
    views = torch.Generator().manual_seed(cfg.seed + 1000)
    encoder, head = make_encoder(x.shape[1]), make_projection()

    def step(batch, pruner):
        xb = x_t[batch]
        scores = contrastive_scores(head(encoder(augment(xb, views))), head(encoder(augment(xb, views))),
                                    cfg.temperature)
        return pruner.loss(scores.loss, batch, memory=scores.memory)

    # min_batch 2: a contrastive batch needs negatives
    pruner, passes = pruned_training(cfg, len(x), list(encoder.parameters()) + list(head.parameters()), step,
                                     encoder.train, min_batch=2)
    encoder.eval()
    with torch.no_grad():
        train_feats, eval_feats = encoder(x_t), encoder(torch.from_numpy(x_eval))
    accuracy = linear_probe(train_feats, torch.from_numpy(y), eval_feats, torch.from_numpy(y_eval), task.classes)
    return RunResult(cfg, accuracy, passes, len(x) * cfg.epochs, time.perf_counter() - start,
                     pruner.store.times_selected.copy())


def untrained_probe(task: Task, seeds: int) -> list[float]:
    """Linear-probe accuracy of randomly initialised encoders (no pretraining): the floor that
    pretraining has to beat."""
    import torch

    accuracies = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        encoder = make_encoder(task.x.shape[1]).eval()
        with torch.no_grad():
            train_feats, eval_feats = encoder(torch.from_numpy(task.x)), encoder(torch.from_numpy(task.x_test))
        accuracies.append(linear_probe(train_feats, torch.from_numpy(task.y), eval_feats,
                                       torch.from_numpy(task.y_test), task.classes))
    return accuracies


def _pretrain_in_worker(cfg: SSLConfig) -> RunResult:
    return pretrain_once(cfg)


def sweep_beta(task: Task, epochs: int, ratios, workers: int, betas=BETAS, seed: int = 0):
    """EMP's beta by validation probe accuracy (mean over `ratios`), never the test set."""
    configs = [SSLConfig("emp", r, seed, epochs, beta=b, validation=True) for b in betas for r in ratios]
    results = run_all(task, configs, workers, fn=_pretrain_in_worker)
    score = {b: float(np.mean([res.accuracy for res in results if res.config.beta == b])) for b in betas}
    return max(score, key=score.get), score


def benchmark(*, epochs: int, seeds: int, ratios, workers: int, out_dir: str, sweep_ratios=(0.7, 0.9),
              betas=BETAS, beta: float | None = None, log=print, exact_budget: bool = False) -> str:
    t0 = time.perf_counter()
    task = load_task("mnist1d")
    log(f"[ssl mnist1d] {len(task.x)} train / {len(task.x_test)} test samples, SimCLR 1-D CNN, {epochs} epochs, "
        f"{seeds} seeds, ratios {list(ratios)}, {workers} workers")
    if beta is None:
        beta, scores = sweep_beta(task, epochs, sweep_ratios, workers, betas)
        log(f"[ssl mnist1d] beta sweep on validation split (mean val probe acc over r in {list(sweep_ratios)}): "
            + ", ".join(f"{b:g}: {100 * s:.2f}%" for b, s in scores.items()) + f" -> beta = {beta:g}")
    floor = np.array(untrained_probe(task, seeds))
    log(f"[ssl mnist1d] linear probe on randomly initialised encoders (no pretraining): "
        f"{100 * floor.mean():.2f} +- {100 * floor.std(ddof=1) if seeds > 1 else 0.0:.2f}%")
    configs = [SSLConfig("full", 0.0, s, epochs) for s in range(seeds)]
    configs += [SSLConfig(p, r, s, epochs, beta=beta, exact_budget=exact_budget)
                for p in POLICIES[1:] for r in ratios for s in range(seeds)]
    results = run_all(task, configs, workers, fn=_pretrain_in_worker)
    budget = " (exact budget)" if exact_budget else ""
    return report(results, f"ssl mnist1d (SimCLR){budget}", f"SimCLR on MNIST-1D{budget}", list(ratios), beta,
                  os.path.join(out_dir, f"quality_ssl_mnist1d{'_exact_budget' if exact_budget else ''}.png"), log, t0,
                  policies=POLICIES, metric="linear-probe test accuracy")


def main(argv=None):
    ap = benchmark_arguments(__doc__, "fewer epochs and a smaller beta sweep (under 10 min on 2 cores)", RATIOS)
    args = ap.parse_args(argv)
    epochs = args.epochs or (15 if args.quick else 30)
    benchmark(epochs=epochs, seeds=args.seeds, ratios=args.ratios, workers=args.workers, out_dir=args.out,
              sweep_ratios=(0.9,) if args.quick else (0.7, 0.9), beta=args.beta, exact_budget=args.exact_budget)


if __name__ == "__main__":
    main()
