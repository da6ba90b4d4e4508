"""Image-text (CLIP-style) quality benchmark: contrastive pretraining on MNIST-1D signals paired
with generated captions, 20% of them mismatched, under every arm at an equal sample budget.

Pairs: each MNIST-1D signal (the "image") gets the caption "a <size> <digit> on the <place>",
generated from its class and two properties of how mnist1d drew it (its amplitude, from the scale,
and where its energy sits, from the translation). 20% of the training captions are swapped with
those of other random pairs, as mismatched alt-text is common in web data; held-out pairs are
clean. A 1-D CNN image encoder and a tokenizer-free text encoder (hashed bag of words) are trained
with the symmetric CLIP loss and a learned temperature (`emp_data.clip_scores`); `emp` adds
beta times its memory term. Scores: image-to-text recall@1 over the held-out captions, and
zero-shot classification with the prompts "a <digit>". beta is chosen on a validation split of
the training pairs (their captions as they are). Used by `benchmarks/quality_clip.py`.
"""
from __future__ import annotations

import math
import os
import time
import zlib
from dataclasses import dataclass

import numpy as np

from . import arms as arms_mod
from .harness import RunResult, current_task, make_config, pruned_training, run_all, tune
from .report import best_rows, format_table, plot, save_results, summarise
from .supervised import benchmark_arguments
from .tasks import VALIDATION_SHARE

RATIOS = (0.5, 0.7, 0.9)
MISMATCH = 0.2
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
BUCKETS = 512          # hashed vocabulary of the text encoder
EMBED = 32             # joint embedding width
TRAINING = {"batch_size": 256, "lr": 2e-3}
ARMS = arms_mod.BASELINES + (arms_mod.INFOBATCH, arms_mod.EMP_DEFAULT, arms_mod.EMP)


def word_ids(text: str) -> list[int]:
    """Tokenizer-free text: each word hashed (crc32) into BUCKETS ids."""
    return [zlib.crc32(w.encode()) % BUCKETS for w in text.split()]


def captions_for(x: np.ndarray, y: np.ndarray, amplitude_cut: float) -> list[str]:
    """ "a tall seven on the left": the class, the signal's amplitude (mnist1d's scale) against a
    cut, and which third holds its energy centroid (mnist1d's translation)."""
    energy = x ** 2
    centroid = (energy * np.arange(x.shape[1])).sum(1) / energy.sum(1) / x.shape[1]
    place = np.array(["left", "centre", "right"])[np.minimum((centroid * 3).astype(int), 2)]
    size = np.where(np.abs(x).max(1) > amplitude_cut, "tall", "short")
    return [f"a {s} {DIGITS[c]} on the {p}" for c, s, p in zip(y, size, place)]


@dataclass
class PairTask:
    name: str
    x: np.ndarray              # signals (the images)
    captions: list             # training captions as trained on (some mismatched)
    labels: np.ndarray
    x_test: np.ndarray
    captions_test: list        # clean
    labels_test: np.ndarray
    mismatched: np.ndarray     # which training pairs carry another pair's caption

    def split(self, validation: bool):
        """(x, captions, x_eval, captions_eval, labels_eval, mismatched): the validation split is the
        last VALIDATION_SHARE of the training pairs, captions as they are."""
        if not validation:
            return self.x, self.captions, self.x_test, self.captions_test, self.labels_test, self.mismatched
        cut = int(len(self.x) * (1 - VALIDATION_SHARE))
        return (self.x[:cut], self.captions[:cut], self.x[cut:], self.captions[cut:], self.labels[cut:],
                self.mismatched[:cut])


def load_pairs(mismatch: float = MISMATCH, seed: int = 0) -> PairTask:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = 15000
    data = make_dataset(args)
    x, y = data["x"].astype(np.float32), data["y"].astype(np.int64)
    x_test, y_test = data["x_test"].astype(np.float32), data["y_test"].astype(np.int64)
    cut = float(np.median(np.abs(x).max(1)))
    captions, captions_test = captions_for(x, y, cut), captions_for(x_test, y_test, cut)
    rng = np.random.default_rng(seed)
    mismatched = rng.random(len(x)) < mismatch
    donors = rng.permutation(np.flatnonzero(mismatched))     # swapped among themselves, as a shuffle does
    noisy = list(captions)
    for i, j in zip(np.flatnonzero(mismatched), donors):
        noisy[i] = captions[j]
    mismatched = np.array([noisy[i] != captions[i] for i in range(len(x))])
    return PairTask("mnist1d-pairs", x, noisy, y, x_test, captions_test, y_test, mismatched)


def make_image_encoder(length: int):
    """The SimCLR benchmark's 1-D CNN encoder, then a map into the joint space."""
    import torch.nn as nn

    from .ssl import FEATURES, make_encoder

    return nn.Sequential(make_encoder(length), nn.ReLU(), nn.Linear(FEATURES, EMBED))


def make_text_encoder():
    """Hashed bag of words -> mean of word embeddings -> a linear map into the joint space."""
    import torch.nn as nn

    class TextEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.words = nn.EmbeddingBag(BUCKETS, 64, mode="mean")
            self.out = nn.Sequential(nn.ReLU(), nn.Linear(64, EMBED))

        def forward(self, tokens):
            return self.out(self.words(tokens))

    return TextEncoder()


def tokens_of(captions) -> "torch.Tensor":
    import torch

    ids = [word_ids(c) for c in captions]
    width = max(len(i) for i in ids)
    return torch.tensor([i + [i[-1]] * (width - len(i)) for i in ids])   # pad by repeating: a mean of a bag


def evaluate(image_encoder, text_encoder, x_eval, captions_eval, labels_eval) -> dict:
    """Image-to-text recall@1 over the distinct evaluation captions (the image's own caption must
    score highest), and zero-shot accuracy with the prompts "a <digit>"."""
    import torch
    import torch.nn.functional as F

    distinct = sorted(set(captions_eval))
    index = {c: i for i, c in enumerate(distinct)}
    with torch.no_grad():
        img = F.normalize(image_encoder(torch.from_numpy(x_eval)), dim=1)
        txt = F.normalize(text_encoder(tokens_of(distinct)), dim=1)
        recall = float(((img @ txt.T).argmax(1).numpy() == np.array([index[c] for c in captions_eval])).mean())
        prompts = F.normalize(text_encoder(tokens_of([f"a {d}" for d in DIGITS])), dim=1)
        zero_shot = float(((img @ prompts.T).argmax(1).numpy() == labels_eval).mean())
    return {"recall@1": recall, "zero-shot": zero_shot}


def pretrain_once(cfg, task=None) -> RunResult:
    """One CLIP-style pretraining run and its evaluation; every random draw is seeded from cfg.seed."""
    import torch

    from emp_data import clip_scores

    task = task or current_task()
    start = time.perf_counter()
    x, captions, x_eval, captions_eval, labels_eval, mismatched = task.split(cfg.validation)
    x_t, tokens = torch.from_numpy(x), tokens_of(captions)
    torch.manual_seed(cfg.seed)
    image_encoder, text_encoder = make_image_encoder(x.shape[1]), make_text_encoder()
    log_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))   # CLIP's learned temperature

    def step(batch, pruner):
        out = clip_scores(image_encoder(x_t[batch]), text_encoder(tokens[batch]), log_scale.clamp(max=math.log(100)).exp())
        return pruner.loss(out.loss, batch, memory=out.memory)

    def train_mode():
        image_encoder.train()
        text_encoder.train()

    params = list(image_encoder.parameters()) + list(text_encoder.parameters()) + [log_scale]
    pruner, counts = pruned_training(cfg, len(x), params, step, train_mode, min_batch=2)
    image_encoder.eval()
    text_encoder.eval()
    metrics = evaluate(image_encoder, text_encoder, x_eval, captions_eval, labels_eval)
    times = pruner.store.times_selected.astype(np.int64)
    return RunResult(cfg, metrics["recall@1"], counts.passes, len(x) * cfg.reference_epochs, time.perf_counter() - start,
                     times, int(times[mismatched].sum()), metrics)


def benchmark(*, epochs: int, seeds: int, ratios=RATIOS, workers: int, out_dir: str, arm_labels=None,
              sweep_ratios=(0.7, 0.9), tuned=None, log=print) -> str:
    t0 = time.perf_counter()
    task = load_pairs()
    arms = arms_mod.select_arms(ARMS, arm_labels)
    label = "clip mnist1d-pairs"
    log(f"[{label}] {len(task.x)} train pairs ({task.mismatched.mean():.0%} mismatched) / {len(task.x_test)} test, "
        f"{len(set(task.captions_test))} distinct test captions, {epochs} epochs, {seeds} seeds, ratios {list(ratios)}, "
        f"{workers} workers, arms {[a.label for a in arms]}")
    tuned = tune(task, arms, dict(tuned or {}), epochs=epochs, ratios=sweep_ratios, workers=workers,
                 fn=pretrain_once, label=label, log=log, **TRAINING)
    configs = [make_config(arm, r, s, epochs, tuned=tuned.get(arm.label), **TRAINING)
               for arm in arms for r in ([0.0] if arm.label == "full" else ratios) for s in range(seeds)]
    results = run_all(task, configs, workers, pretrain_once, label)
    tables = []
    for metric, name in (("recall@1", "image-to-text recall@1"), ("zero-shot", "zero-shot accuracy")):
        summary = summarise(results, metric)
        tables.append(format_table(f"{label} (CLIP), {epochs} epochs, equal budget", summary, list(ratios), arms, tuned,
                                   metric=name, noisy="mismatched"))
        for line in best_rows(summary, list(ratios), arms):
            log(f"[{label}] {name}: {line}")
    png = os.path.join(out_dir, "quality_clip_mnist1d.png")
    plot(png, "CLIP on MNIST-1D pairs", summarise(results, "recall@1"), list(ratios), results, arms, tuned,
         metric="recall@1")
    save_results(png[:-4] + ".pkl", results, tuned)
    for table in tables:
        log(table)
    log(f"[{label}] plot: {png}; {len(results)} runs in {time.perf_counter() - t0:.0f} s")
    return "\n\n".join(tables)


def main(argv=None):
    ap = benchmark_arguments(__doc__, "15 epochs, beta swept at r = 0.9 only", RATIOS)
    args = ap.parse_args(argv)
    epochs = args.epochs or (15 if args.quick else 30)
    benchmark(epochs=epochs, seeds=args.seeds, ratios=args.ratios, workers=args.workers, out_dir=args.out,
              arm_labels=args.arms, sweep_ratios=(0.9,) if args.quick else (0.7, 0.9))


if __name__ == "__main__":
    main()
