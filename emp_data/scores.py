"""Per-sample score terms computed from a batch's model outputs (vectorised torch, detached)."""
from __future__ import annotations

import math

import torch


def prediction_entropy(logits: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """EMP's supervised memory term: entropy of softmax(logits) per row, detached.

    With ``normalize=True`` it is divided by log(C), so it lies in [0, 1] for any class count C
    and beta means the same across tasks.
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.ndim != 2:
        raise ValueError(f"logits must be 2-D (batch, classes), got shape {tuple(logits.shape)}")
    if not logits.dtype.is_floating_point:
        raise TypeError(f"logits must be floating point, got {logits.dtype}")
    with torch.no_grad():
        logp = torch.log_softmax(logits.detach().float(), dim=1)
        ent = -(logp.exp() * logp).sum(dim=1)
        classes = logits.shape[1]
        if normalize and classes > 1:
            ent = ent / math.log(classes)
    return ent
