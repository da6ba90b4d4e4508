"""What every quality run shares: the pruned training loop (Adam, a cosine learning rate over the
optimizer steps the run will take), parallel runs with a progress line, and validation tuning."""
from __future__ import annotations

import math
import multiprocessing as mp
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .arms import Arm

ANNEAL = 0.875      # InfoBatch's annealing: the last 1/8 of the epochs train as the policy's anneal says


@dataclass
class RunConfig:
    arm: str                    # the table row
    policy: str
    options: dict
    prune_ratio: float
    seed: int
    epochs: int                 # epochs this run trains (full-short: fewer)
    reference_epochs: int       # the full run's epochs (the passes "saved" are against it)
    validation: bool = False    # train on the training split minus a validation part, score on it
    batch_size: int = 128
    lr: float = 3e-3
    schedule: str = "step"      # cosine over the run's optimizer steps, or "epoch": stepped once an epoch
    tuned: dict = field(default_factory=dict)   # the validation choices behind `options`, for the report


@dataclass
class TrainingCounts:
    passes: int                 # sample passes trained
    keep_spread: float          # mean over pruned epochs of keep_spread (NaN: none)


@dataclass
class RunResult:
    config: RunConfig
    accuracy: float
    sample_passes: int
    full_passes: int
    seconds: float
    times_selected: np.ndarray = field(repr=False, default=None)
    noisy_passes: int = 0       # sample passes spent on samples whose label was flipped
    metrics: dict = field(default_factory=dict)   # further test metrics (name -> value)


def budget_epochs(epochs: int, ratio: float, anneal: float = ANNEAL) -> int:
    """full-short's epochs: the sample passes of a pruned run at exactly k = round((1 - r) N) per pruned
    epoch and N per annealing epoch, in whole epochs of full data (rounded half up)."""
    pruned = sum(1 for e in range(epochs) if e < anneal * epochs)
    passes = pruned * (1.0 - ratio) + (epochs - pruned)
    return max(1, math.floor(passes + 0.5))


def make_config(arm: Arm, ratio: float, seed: int, epochs: int, validation: bool = False, tuned=None,
                **training) -> RunConfig:
    tuned = dict(tuned or {})
    if arm.policy == "full":
        run_epochs = budget_epochs(epochs, ratio) if arm.full_short else epochs
        return RunConfig(arm.label, "full", {}, 0.0 if not arm.full_short else ratio, seed, run_epochs, epochs,
                         validation, tuned=tuned, **training)
    options = arm.policy_options(ratio, beta=tuned.get("beta"), gap_factor=tuned.get("gap"))
    return RunConfig(arm.label, arm.policy, options, ratio, seed, epochs, epochs, validation, tuned=tuned, **training)


def pruned_training(cfg: RunConfig, num_samples: int, params, step, train_mode, min_batch: int = 1):
    """Adam over cfg.epochs with a cosine learning rate over the run's optimizer steps (planned in
    advance: every arm has a fixed budget; cfg.schedule="epoch" steps it once an epoch instead, the
    usual epoch-based use), a Pruner for cfg.policy; step(batch_ids, pruner) returns the loss to
    backpropagate. Returns (pruner, TrainingCounts)."""
    import torch

    from emp_data import Pruner

    ratio = 0.0 if cfg.policy == "full" else cfg.prune_ratio
    options = {k: v for k, v in cfg.options.items() if k not in HARNESS_OPTIONS}
    pruner = Pruner(num_samples, policy=cfg.policy, prune_ratio=ratio, epochs=cfg.epochs, anneal=ANNEAL,
                    seed=cfg.seed, **options)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    per_step = cfg.schedule == "step"
    total = pruner.planned_steps(cfg.batch_size) if per_step else cfg.epochs
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total))
    passes = 0
    previous = None                     # the order the last epoch trained in
    spreads = []
    for epoch in range(cfg.epochs):
        ids, _ = pruner.select(epoch)
        passes += len(ids)
        if previous is not None and epoch < ANNEAL * cfg.epochs:
            spreads.append(keep_spread(previous, pruner.store.weight > 0))
        previous = ids
        train_mode()
        for batch in torch.from_numpy(ids).split(cfg.batch_size):
            if len(batch) < min_batch:
                continue
            loss = step(batch, pruner)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if per_step:
                sched.step()
        if not per_step:
            sched.step()
    return pruner, TrainingCounts(passes, float(np.mean(spreads)) if spreads else float("nan"))


HARNESS_OPTIONS = ("memory_signal",)   # arm options the harness applies itself (signals.py), not the Pruner


def keep_spread(order: np.ndarray, kept: np.ndarray, parts: int = 10) -> float:
    """How much the next selection depends on *when* a sample was scored: the samples trained last
    epoch, cut into `parts` by when they were read, and the largest minus the smallest share of each
    part kept now. Unbiased scores keep every part alike (up to sampling noise)."""
    shares = [kept[chunk].mean() for chunk in np.array_split(order, parts) if len(chunk)]
    return float(max(shares) - min(shares))


class Progress:
    """Runs done / total, elapsed and ETA: redrawn in place on a terminal, a line per ~10% elsewhere."""

    def __init__(self, label: str, total: int, stream=None):
        self.label, self.total, self.done = label, total, 0
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self._last_decile = -1

    def tick(self) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        line = f"[{self.label}] {self.done}/{self.total} runs, {_clock(elapsed)} elapsed, ETA {_clock(eta)}"
        if self.tty:
            self.stream.write("\r" + line + ("\n" if self.done == self.total else ""))
        elif self.done * 10 // self.total != self._last_decile or self.done == self.total:
            self._last_decile = self.done * 10 // self.total
            self.stream.write(line + "\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


_TASK = None


def _init_worker(task):
    global _TASK
    import torch

    torch.set_num_threads(1)
    _TASK = task


def current_task():
    return _TASK


def run_all(task, configs: list, workers: int, fn, label: str = "runs") -> list[RunResult]:
    """fn(config) -> RunResult for every config, in `workers` spawned processes (one torch thread
    each), results in config order, with a progress line."""
    progress = Progress(label, len(configs))
    if workers <= 1 or len(configs) <= 1:
        _init_worker(task)
        results = []
        for c in configs:
            results.append(fn(c))
            progress.tick()
        return results
    ctx = mp.get_context("spawn")
    results = [None] * len(configs)
    with ctx.Pool(workers, initializer=_init_worker, initargs=(task,)) as pool:
        for i, res in pool.imap_unordered(_indexed, [(fn, i, c) for i, c in enumerate(configs)]):
            results[i] = res
            progress.tick()
    return results


def _indexed(job):
    fn, i, config = job
    return i, fn(config)


def tune(task, arms, chosen: dict, *, epochs: int, ratios, workers: int, fn, label: str, seed: int = 0,
         log=print, **training) -> dict:
    """For every arm with `tune`, the grid value with the best mean validation score over `ratios`
    (seed `seed`, the validation split only). `chosen` maps arm label -> {"beta": ..., "gap": ...} and
    is extended in place; arms that take another arm's beta (`beta_from`) are tuned after it."""
    for wave in (False, True):
        todo = [a for a in arms if a.tune and a.label not in chosen and bool(a.beta_from) == wave]
        if not todo:
            continue
        configs, keys = [], []
        for arm in todo:
            base = {} if not arm.beta_from else {"beta": chosen[arm.beta_from]["beta"]}
            for value in arm.grid:
                for r in ratios:
                    configs.append(make_config(arm, r, seed, epochs, validation=True,
                                               tuned=dict(base, **{arm.tune: value}), **training))
                    keys.append((arm.label, value))
        results = run_all(task, configs, workers, fn, f"{label}: validation sweep")
        for arm in todo:
            base = {} if not arm.beta_from else {"beta": chosen[arm.beta_from]["beta"]}
            score = {v: float(np.mean([res.accuracy for res, key in zip(results, keys) if key == (arm.label, v)]))
                     for v in arm.grid}
            best = max(score, key=score.get)
            chosen[arm.label] = dict(base, **{arm.tune: best})
            log(f"[{label}] {arm.label}: {arm.tune} on the validation split (mean over r in {list(ratios)}): "
                + ", ".join(f"{_value_name(arm.tune, v)}: {100 * s:.2f}%" for v, s in score.items())
                + f" -> {_value_name(arm.tune, best)}")
    return chosen


def _value_name(kind: str, value) -> str:
    from .arms import beta_name

    return beta_name(value) if kind == "beta" else f"gap factor {value}"
