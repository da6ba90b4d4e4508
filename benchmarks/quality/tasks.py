"""Data sets a package generates, and the models trained on them."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TASKS = ("mnist1d", "mnist1d-noisy", "synthetic")
# The defaults study (benchmarks/quality_defaults.py): task/model pairs that differ in kind, each
# with its own label noise.
STUDY_TASKS = ("mnist1d-cnn", "mnist1d-mlp", "tabular", "text-bow", "digits-cnn")
NOISE = 0.2                 # mnist1d-noisy: share of training labels flipped
VALIDATION_SHARE = 0.15     # the validation split: the last 15% of the training set


@dataclass
class Task:
    name: str
    x: np.ndarray
    y: np.ndarray               # training labels (noisy for mnist1d-noisy; the validation split too)
    x_test: np.ndarray
    y_test: np.ndarray          # always clean
    classes: int
    model: str
    flipped: np.ndarray | None = None   # which training labels were flipped (None: none)

    def split(self, validation: bool):
        """(x, y, x_eval, y_eval, flipped): the training data and what a run is scored on. With
        `validation`, the last VALIDATION_SHARE of the training set (its labels as they are, noisy
        or not) is held out and scored on; the test set is never touched."""
        flipped = self.flipped if self.flipped is not None else np.zeros(len(self.y), bool)
        if not validation:
            return self.x, self.y, self.x_test, self.y_test, flipped
        cut = int(len(self.x) * (1 - VALIDATION_SHARE))
        return self.x[:cut], self.y[:cut], self.x[cut:], self.y[cut:], flipped[:cut]


def flip_labels(y: np.ndarray, classes: int, share: float, seed: int = 0):
    """Symmetric label noise: each label is replaced, with probability `share`, by one of the other
    classes drawn uniformly. Returns (noisy labels, flipped mask)."""
    rng = np.random.default_rng(seed)
    flipped = rng.random(len(y)) < share
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, classes, int(flipped.sum()))) % classes
    return noisy, flipped


def load_task(name: str, seed: int = 0) -> Task:
    if name in ("mnist1d", "mnist1d-noisy"):
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples = 15000
        data = make_dataset(args)
        y = data["y"].astype(np.int64)
        flipped = None
        if name == "mnist1d-noisy":
            y, flipped = flip_labels(y, 10, NOISE, seed)
        return Task(name, data["x"].astype(np.float32), y, data["x_test"].astype(np.float32),
                    data["y_test"].astype(np.int64), 10, "cnn1d", flipped)
    if name == "synthetic":
        from sklearn.datasets import make_classification

        x, y = make_classification(n_samples=20000, n_features=40, n_informative=20, n_redundant=5,
                                   n_classes=10, n_clusters_per_class=2, flip_y=0.05, class_sep=1.5,
                                   random_state=seed)
        x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
        return Task(name, x[:16000], y[:16000].astype(np.int64), x[16000:], y[16000:].astype(np.int64), 10, "mlp")
    raise ValueError(f"unknown task {name!r}; choose one of {list(TASKS)}")


def load_study_task(name: str, noise: float = 0.0, seed: int = 0, size: int = 8000) -> Task:
    """One of STUDY_TASKS with `size` samples in all (train and test), `noise` of the training
    labels flipped (symmetric; the test labels stay clean)."""
    if name in ("mnist1d-cnn", "mnist1d-mlp"):
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples = size
        data = make_dataset(args)
        x, y = data["x"].astype(np.float32), data["y"].astype(np.int64)
        x_test, y_test, classes = data["x_test"].astype(np.float32), data["y_test"].astype(np.int64), 10
        model = "cnn1d" if name == "mnist1d-cnn" else "mlp"
    elif name == "tabular":
        x, y, x_test, y_test, classes = _tabular(size, seed)
        model = "mlp"
    elif name == "text-bow":
        x, y, x_test, y_test, classes = _bag_of_words(size, seed)
        model = "bow"
    elif name == "digits-cnn":
        x, y, x_test, y_test, classes = _jittered_digits(seed)
        model = "cnn2d"
    else:
        raise ValueError(f"unknown task {name!r}; choose one of {list(STUDY_TASKS)}")
    flipped = None
    if noise > 0:
        y, flipped = flip_labels(y, classes, noise, seed)
    return Task(f"{name}@{noise:g}", x, y, x_test, y_test, classes, model, flipped)


def _tabular(size: int, seed: int):
    """make_classification with a third of the columns turned into one-hot categories (quantile
    bins), as tabular data mixes numeric and categorical fields; 6 classes, 3 clusters each."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=size, n_features=24, n_informative=10, n_redundant=4, n_classes=6,
                               n_clusters_per_class=3, class_sep=1.0, random_state=seed + 101)
    numeric, categorical = x[:, :16], x[:, 16:]
    edges = np.quantile(categorical, [0.2, 0.4, 0.6, 0.8], axis=0)
    one_hot = [np.eye(5)[np.searchsorted(edges[:, j], categorical[:, j])] for j in range(categorical.shape[1])]
    numeric = (numeric - numeric.mean(0)) / numeric.std(0)
    x = np.concatenate([numeric] + one_hot, axis=1).astype(np.float32)
    cut = int(0.8 * size)
    return x[:cut], y[:cut].astype(np.int64), x[cut:], y[cut:].astype(np.int64), 6


def _bag_of_words(size: int, seed: int, vocab: int = 1000, classes: int = 8, topics: int = 24):
    """Documents from a topic model: each class mixes topics (Dirichlet), each document draws its
    own mixture around its class's and ~40 words from it; features log(1 + count), rows L2-normed."""
    rng = np.random.default_rng(seed + 202)
    topic_words = rng.dirichlet(np.full(vocab, 0.05), topics)
    class_topics = rng.dirichlet(np.full(topics, 0.3), classes)
    y = rng.integers(0, classes, size)
    mixture = rng.gamma(3.0 * class_topics[y] + 1e-3)
    mixture /= mixture.sum(1, keepdims=True)
    counts = rng.multinomial(rng.poisson(40, size) + 5, mixture @ topic_words)
    x = np.log1p(counts).astype(np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)
    cut = int(0.8 * size)
    return x[:cut], y[:cut].astype(np.int64), x[cut:], y[cut:].astype(np.int64), classes


def _jittered_digits(seed: int, copies: int = 4):
    """sklearn's 8x8 digits (1797 images, shipped with the package), each image `copies` times
    shifted by up to a pixel with pixel noise; the split is by original image, so no test image is a
    copy of a training one."""
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(seed + 303)
    digits = load_digits()
    images, labels = digits.images / 16.0, digits.target.astype(np.int64)
    order = rng.permutation(len(images))
    cut = int(0.8 * len(images))

    def jitter(idx):
        out = []
        padded = np.pad(images[idx], ((0, 0), (1, 1), (1, 1)))
        for _ in range(copies):
            shift = rng.integers(0, 3, (len(idx), 2))      # each image its own shift
            shifted = np.empty((len(idx), 8, 8))
            for dy in range(3):
                for dx in range(3):
                    at = (shift[:, 0] == dy) & (shift[:, 1] == dx)
                    shifted[at] = padded[at, dy:dy + 8, dx:dx + 8]
            shifted += rng.normal(0, 0.1, shifted.shape)
            out.append(shifted.reshape(len(idx), 64))
        return np.concatenate(out).astype(np.float32), np.tile(labels[idx], copies)

    x, y = jitter(order[:cut])
    x_test, y_test = jitter(order[cut:])
    return x, y, x_test, y_test, 10


def make_model(kind: str, features: int, classes: int):
    import torch.nn as nn

    if kind == "cnn1d":
        return nn.Sequential(
            nn.Unflatten(1, (1, features)),
            nn.Conv1d(1, 32, 5, padding=2), nn.ReLU(),
            nn.Conv1d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * math.ceil(features / 4), classes))
    if kind == "cnn2d":
        side = math.isqrt(features)
        return nn.Sequential(
            nn.Unflatten(1, (1, side, side)),
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * math.ceil(side / 2) ** 2, classes))
    if kind == "bow":
        return nn.Sequential(nn.Linear(features, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, classes))
    return nn.Sequential(nn.Linear(features, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, classes))
