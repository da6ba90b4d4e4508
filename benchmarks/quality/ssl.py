"""Self-supervised quality benchmark: SimCLR pretraining on MNIST-1D under every arm, at an equal
sample budget, scored by a linear probe on the frozen encoder.

A small 1-D CNN encoder is pretrained contrastively (NT-Xent over two augmented views: random
shift, amplitude scale, Gaussian noise) with no labels. Each arm decides which samples each epoch
trains on from the per-sample InfoNCE loss; `emp` adds beta times the contrastive memory term (the
entropy of the anchor's softmax row), `emp-mi` the per-sample InfoNCE bound on I(view1; view2)
(`emp_data.contrastive_scores`). Labels are used only by the probe. beta is chosen on a
validation split of the training set, never the test set. Used by `benchmarks/quality_ssl.py`.
"""
from __future__ import annotations

import os
import time

import numpy as np

from . import arms as arms_mod
from .harness import RunResult, current_task, make_config, pruned_training, run_all, tune
from .report import publish
from .supervised import benchmark_arguments
from .tasks import load_task

RATIOS = (0.5, 0.7, 0.9)
FEATURES = 64      # encoder output: what the linear probe sees
PROJECTION = 32    # projection head output: what NT-Xent compares
TEMPERATURE = 0.2
TRAINING = {"batch_size": 256, "lr": 2e-3}
ARMS = arms_mod.BASELINES + (arms_mod.INFOBATCH, arms_mod.SETA, arms_mod.EMP_DEFAULT, arms_mod.EMP, arms_mod.EMP_MI)
QUICK = ("full", "full-short", "random", "sweep", "infobatch", "emp-default", "emp")


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


def pretrain_once(cfg, task=None) -> RunResult:
    """One pretraining run plus its linear probe; every random draw is seeded from cfg.seed."""
    import torch

    from emp_data import contrastive_scores

    task = task or current_task()
    start = time.perf_counter()
    x, y, x_eval, y_eval, _ = task.split(cfg.validation)
    x_t = torch.from_numpy(x)
    torch.manual_seed(cfg.seed)
    views = torch.Generator().manual_seed(cfg.seed + 1000)
    encoder, head = make_encoder(x.shape[1]), make_projection()
    use_mi = cfg.options.get("memory") == "mi"

    def step(batch, pruner):
        xb = x_t[batch]
        out = contrastive_scores(head(encoder(augment(xb, views))), head(encoder(augment(xb, views))), TEMPERATURE)
        return pruner.loss(out.loss, batch, memory=out.mi if use_mi else out.memory)

    # min_batch 2: a contrastive batch needs negatives
    pruner, counts = pruned_training(cfg, len(x), list(encoder.parameters()) + list(head.parameters()), step,
                                     encoder.train, min_batch=2)
    encoder.eval()
    with torch.no_grad():
        train_feats, eval_feats = encoder(x_t), encoder(torch.from_numpy(x_eval))
    accuracy = linear_probe(train_feats, torch.from_numpy(y), eval_feats, torch.from_numpy(y_eval), task.classes)
    return RunResult(cfg, accuracy, counts.passes, len(x) * cfg.reference_epochs, time.perf_counter() - start,
                     pruner.store.times_selected.astype(np.int64))


def untrained_probe(task, seeds: int) -> list[float]:
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


def benchmark(*, epochs: int, seeds: int, ratios=RATIOS, workers: int, out_dir: str, arm_labels=None,
              sweep_ratios=(0.7, 0.9), tuned=None, log=print) -> str:
    t0 = time.perf_counter()
    task = load_task("mnist1d")
    arms = arms_mod.select_arms(ARMS, arm_labels)
    label = "ssl mnist1d"
    log(f"[{label}] {len(task.x)} train / {len(task.x_test)} test samples, SimCLR 1-D CNN, {epochs} epochs, "
        f"{seeds} seeds, ratios {list(ratios)}, {workers} workers, arms {[a.label for a in arms]}")
    tuned = tune(task, arms, dict(tuned or {}), epochs=epochs, ratios=sweep_ratios, workers=workers,
                 fn=pretrain_once, label=label, log=log, **TRAINING)
    floor = np.array(untrained_probe(task, seeds))
    log(f"[{label}] linear probe on randomly initialised encoders (no pretraining): "
        f"{100 * floor.mean():.2f} +- {100 * floor.std(ddof=1) if seeds > 1 else 0.0:.2f}%")
    configs = [make_config(arm, r, s, epochs, tuned=tuned.get(arm.label), **TRAINING)
               for arm in arms for r in ([0.0] if arm.label == "full" else ratios) for s in range(seeds)]
    results = run_all(task, configs, workers, pretrain_once, label)
    return publish(results, label=label, title=f"{label} (SimCLR), {epochs} epochs, equal budget",
                   plot_title="SimCLR on MNIST-1D", png=os.path.join(out_dir, "quality_ssl_mnist1d.png"),
                   ratios=list(ratios), arms=arms, tuned=tuned, log=log, t0=t0, metric="linear-probe test accuracy",
                   plot_metric="linear-probe accuracy")


def main(argv=None):
    ap = benchmark_arguments(__doc__, "15 epochs, fewer arms, beta swept at r = 0.9 only", RATIOS)
    args = ap.parse_args(argv)
    epochs = args.epochs or (15 if args.quick else 30)
    benchmark(epochs=epochs, seeds=args.seeds, ratios=args.ratios, workers=args.workers, out_dir=args.out,
              arm_labels=args.arms or (list(QUICK) if args.quick else None),
              sweep_ratios=(0.9,) if args.quick else (0.7, 0.9))


if __name__ == "__main__":
    main()
