"""A training batch as `Pruner.loss` receives it: the checks on its per-sample losses and the
memory term EMP scores with (given by the caller, or computed from the batch's logits)."""
from __future__ import annotations

import numpy as np
import torch

from ..selection.memory import MarginalPrediction, prediction_entropy, prediction_mi


def check_per_sample_loss(per_sample_loss) -> None:
    if not isinstance(per_sample_loss, torch.Tensor):
        raise TypeError("per_sample_loss must be a torch.Tensor (use reduction='none')")
    if per_sample_loss.ndim != 1:
        raise ValueError(f"per_sample_loss must be 1-D (reduction='none'), got shape {tuple(per_sample_loss.shape)}")
    if not per_sample_loss.dtype.is_floating_point:
        raise TypeError(f"per_sample_loss must be floating point, got {per_sample_loss.dtype}")


class MemoryTerms:
    """The memory term of each batch for a policy: from `memory=`, else from `logits=` (prediction
    entropy, or its mutual information with the running mean prediction, emp's memory="mi")."""

    def __init__(self):
        self.marginal = MarginalPrediction()   # p_bar of memory="mi", checkpointed with the Pruner

    def of_batch(self, policy, logits, memory, batch: int):
        """The batch's memory term as a detached float tensor, or None; checks its shape."""
        if memory is None and logits is not None and policy.needs_memory:
            normalize = getattr(policy, "normalize_entropy", True)
            if getattr(policy, "memory", "entropy") == "mi":
                memory = prediction_mi(logits, self.marginal.update(logits), normalize=normalize)
            else:
                memory = prediction_entropy(logits, normalize=normalize)
            if memory.shape[0] != batch:
                raise ValueError(f"logits has {memory.shape[0]} rows but ids has {batch}")
        if memory is None:
            if policy.needs_memory:
                raise ValueError(f"policy {policy.name!r} needs the memory term: pass logits= (the model's "
                                 "outputs for this batch) or memory= (a per-sample memory term)")
            return None
        if not isinstance(memory, torch.Tensor):
            memory = torch.as_tensor(np.asarray(memory, dtype=np.float32))
        if memory.ndim != 1 or memory.shape[0] != batch:
            raise ValueError(f"memory must have shape ({batch},), got {tuple(memory.shape)}")
        return memory.detach().float()


def batch_rows(per_sample_loss: torch.Tensor, memory) -> torch.Tensor:
    """(B, 1) or (B, 2) rows of (loss[, memory term]) to record, detached, float32."""
    detached = per_sample_loss.detach().float()
    if memory is None:
        return detached[:, None]
    return torch.stack([detached, memory.to(detached.device)], dim=1)
