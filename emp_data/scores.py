"""Per-sample score terms computed from a batch's model outputs (vectorised torch).

The score-function contract: a memory term is a (B,) float tensor, one value per sample of the
batch, larger meaning "keep this sample more"; it is detached (it steers selection, never the
gradient). `Pruner.loss(per_sample_loss, ids, memory=...)` takes any such term:
`prediction_entropy` (supervised), `contrastive_scores(...).memory` (SSL), or your own.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch


def _check_matrix(t, name: str, shape: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D {shape}, got shape {tuple(t.shape)}")
    if not t.dtype.is_floating_point:
        raise TypeError(f"{name} must be floating point, got {t.dtype}")


def prediction_entropy(logits: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """EMP's supervised memory term: entropy of softmax(logits) per row, detached.

    With ``normalize=True`` it is divided by log(C), so it lies in [0, 1] for any class count C
    and beta means the same across tasks.
    """
    _check_matrix(logits, "logits", "(batch, classes)")
    with torch.no_grad():
        logp = torch.log_softmax(logits.detach().float(), dim=1)
        ent = -(logp.exp() * logp).sum(dim=1)
        classes = logits.shape[1]
        if normalize and classes > 1:
            ent = ent / math.log(classes)
    return ent


class ContrastiveScores(NamedTuple):
    """Per-sample outputs of :func:`contrastive_scores` (both shape (B,))."""

    loss: torch.Tensor     # NT-Xent loss per sample, mean of its two anchors; keeps the graph
    memory: torch.Tensor   # entropy of the anchors' softmax rows, mean of the two views; detached


def contrastive_scores(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5,
                       normalize_entropy: bool = True) -> ContrastiveScores:
    """EMP's self-supervised score terms for a SimCLR-style (NT-Xent / InfoNCE) batch.

    z1, z2: (B, D) embeddings of the two views of the same B samples (row i of each is sample i).
    The 2B embeddings are L2-normalised; every anchor takes a softmax over its cosine similarities
    (divided by ``temperature``) to the other 2B-1 embeddings, and its positive is the other view
    of the same sample. Sample i's ``loss`` is the mean of its two anchors' cross-entropies, so
    ``loss.mean()`` equals SimCLR's NT-Xent loss; pass ``loss`` and ``memory`` to
    ``Pruner.loss(loss, ids, memory=memory)``.

    ``memory`` is the entropy of those same softmax rows (mean over the two views), the SSL memory
    term: high when an anchor cannot tell its sample apart from the rest of the batch. With
    ``normalize_entropy`` it is divided by log(2B-1), the largest entropy a row can have, so it lies
    in [0, 1] like the supervised term. Everything is computed with log-softmax (log-sum-exp), so
    small temperatures do not overflow.
    """
    _check_matrix(z1, "z1", "(batch, dim)")
    _check_matrix(z2, "z2", "(batch, dim)")
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.device != z2.device:
        raise ValueError(f"z1 and z2 are on different devices ({z1.device} and {z2.device})")
    batch = z1.shape[0]
    if batch < 2:
        raise ValueError(f"a contrastive batch needs at least 2 samples (negatives), got {batch}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")

    # Low-precision embeddings (fp16/bf16 autocast) are promoted: the logits reach 1/temperature.
    dtype = torch.promote_types(z1.dtype, torch.float32)
    z = torch.nn.functional.normalize(torch.cat([z1, z2]).to(dtype), dim=1)
    logits = (z @ z.T) / temperature
    self_mask = torch.eye(2 * batch, dtype=torch.bool, device=z.device)
    # An anchor never competes with itself: -inf gives it probability exactly 0.
    logp = torch.log_softmax(logits.masked_fill(self_mask, float("-inf")), dim=1)
    positive = torch.arange(2 * batch, device=z.device).roll(batch)   # i <-> i + B
    anchor_loss = -logp.gather(1, positive[:, None]).squeeze(1)
    loss = 0.5 * (anchor_loss[:batch] + anchor_loss[batch:])
    with torch.no_grad():
        plogp = torch.where(self_mask, torch.zeros((), dtype=dtype, device=z.device), logp.exp() * logp)
        entropy = -plogp.sum(dim=1)
        if normalize_entropy:
            entropy = entropy / math.log(2 * batch - 1)
        memory = 0.5 * (entropy[:batch] + entropy[batch:])
    return ContrastiveScores(loss, memory)
