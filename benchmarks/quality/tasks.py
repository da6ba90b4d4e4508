"""Data sets a package generates, and the models trained on them."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TASKS = ("mnist1d", "mnist1d-noisy", "synthetic")
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
