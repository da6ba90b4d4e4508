"""SeTa's clustering in the selection reference: every optimal 1-D k-means of a histogram's bins,
by exhaustive dynamic programming (the reference has to know when the optimum is not unique)."""
from __future__ import annotations

import numpy as np


def possible_clusters(bins: np.ndarray, groups: int, rel_tol: float = 1e-9) -> dict[int, set[int]]:
    """For each occupied bin, every cluster (numbered by ascending centre) it lands in under some
    optimal k-means of the bins (each bin a point at its centre, weighed by its count, clusters
    intervals of bins, possibly empty). Exhaustive dynamic programming, forwards and backwards."""
    occupied, counts = np.unique(bins, return_counts=True)
    x = occupied.astype(np.float64) + 0.5
    m = len(x)
    cw, cs, cq = (np.concatenate([[0.0], np.cumsum(v)]) for v in (counts, counts * x, counts * x * x))
    # cost[i, j]: the sum of squares of points [i, j) about their mean (inf for j < i).
    w = cw[None, :] - cw[:, None]
    s = cs[None, :] - cs[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        cost = np.where(w > 0, np.maximum(0.0, (cq[None, :] - cq[:, None]) - s * s / w), 0.0)
    cost[np.tril_indices(m + 1, -1)] = np.inf
    fwd = np.full((groups + 1, m + 1), np.inf)     # fwd[g, j]: points [0, j) in g clusters
    fwd[0, 0] = 0.0
    for g in range(1, groups + 1):
        fwd[g] = (fwd[g - 1][:, None] + cost).min(axis=0)
    bwd = np.full((groups + 1, m + 1), np.inf)     # bwd[g, i]: points [i, m) in clusters g..groups-1
    bwd[groups, m] = 0.0
    for g in range(groups - 1, -1, -1):
        bwd[g] = (cost + bwd[g + 1][None, :]).min(axis=1)
    best = fwd[groups, m]
    tol = rel_tol * max(best, 1.0)
    out: dict[int, set[int]] = {int(b): set() for b in occupied}
    later = np.triu(np.ones((m + 1, m + 1), bool), 1)     # j > i: cluster g holds points [i, j)
    for g in range(groups):
        feasible = (fwd[g][:, None] + cost + bwd[g + 1][None, :] <= best + tol) & later
        for i in np.flatnonzero(feasible.any(axis=1)):
            last = int(np.flatnonzero(feasible[i])[-1])    # the intervals from i nest: their union is [i, last)
            for p in range(i, last):
                out[int(occupied[p])].add(g)
    return out
