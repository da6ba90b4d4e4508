"""Weighted sampling without replacement at any scale (torch.multinomial stops at 2**24 categories)."""
from __future__ import annotations

import numpy as np

from .. import _C
from .._validate import as_count

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None


def sample_without_replacement(weights, k: int, seed: int = 0, epoch: int = 0):
    """Draw k distinct indices with probability proportional to `weights`.

    Efraimidis-Spirakis exponential keys, selected in O(N) (histogram on the key bits +
    nth_element on one bin), in C++ without the GIL. Returns ``(ids, inv_prob)``: int64 ids in
    random order and float32 Horvitz-Thompson weights 1/pi_i, where pi_i = 1 - exp(-w_i tau) is the
    inclusion probability given the other items (rank conditioning), so that
    ``sum(x[ids] * inv_prob)`` is an unbiased estimate of ``sum(x)``. Zero-weight items are never
    drawn; if fewer than k items have positive weight, all of them are returned with weight 1.
    A pure function of (weights, k, seed, epoch).
    """
    if torch is not None and isinstance(weights, torch.Tensor):
        weights = weights.detach().to("cpu", torch.float64).numpy()
    w = np.asarray(weights)
    if w.dtype.kind not in "fiu":
        raise TypeError(f"weights must be numeric, got dtype {w.dtype}")
    if w.ndim != 1:
        raise ValueError(f"weights must be 1-D, got shape {tuple(w.shape)}")
    w = np.ascontiguousarray(w, dtype=np.float64)
    if not np.isfinite(w).all():
        raise ValueError(f"weights must be finite; first bad index {int(np.flatnonzero(~np.isfinite(w))[0])}")
    if (w < 0).any():
        raise ValueError(f"weights must be >= 0; first negative index {int(np.flatnonzero(w < 0)[0])}")
    k = as_count(k, "k", minimum=0, maximum=len(w))
    seed = as_count(seed, "seed", minimum=0, maximum=2**64 - 1)
    epoch = as_count(epoch, "epoch", minimum=0, maximum=2**64 - 1)
    ids, inv_prob, _tau = _C.sample_weighted(w, k, seed, epoch)
    return ids, inv_prob


def set_num_threads(n: int) -> None:
    """Threads used by the C++ core (OpenMP). Results do not depend on it."""
    _C.set_num_threads(as_count(n, "n", minimum=1))


def get_num_threads() -> int:
    return _C.get_num_threads()
