"""Memory signals the defaults study tries in place of EMP's prediction entropy, computed in the
training step and passed to ``pruner.loss(memory=...)`` (the arm's option ``memory_signal``):

  relative     the entropy over the running mean of the entropies recorded before the batch
               (a score relative to the model state it was recorded in)
  rank-mix     the mean of the loss's and the entropy's ranks within the batch, in (0, 1]: a
               rank-based mix of the two that is also relative to the step it was recorded in
  forgetting   forgetting events (Toneva et al., ICLR 2019): how often a sample went from
               correctly to wrongly classified, plus 1 while it was never classified correctly
"""
from __future__ import annotations

import numpy as np
import torch

from emp_data import prediction_entropy

SIGNALS = ("relative", "rank-mix", "forgetting")


class RelativeMemory:
    """Each batch's memory term over the running mean of the memory terms recorded before it (an
    exponential average over recent batches): a score relative to what the model gave at the time
    it was recorded, so samples read early in an epoch (by a less trained model) and late compare
    on one scale."""

    def __init__(self, decay: float = 0.9):
        self.decay, self.mean = decay, None

    def __call__(self, memory):
        batch_mean = float(memory.mean())
        reference = self.mean if self.mean is not None else batch_mean
        self.mean = batch_mean if self.mean is None else self.decay * self.mean + (1 - self.decay) * batch_mean
        return memory / max(reference, 1e-12)


def batch_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..B of `values` within the batch (ties by position), as float."""
    order = torch.argsort(values, stable=True)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(1, len(values) + 1)
    return ranks.float()


class ForgettingEvents:
    """Per-sample forgetting counts over a run (Toneva et al.): a sample classified correctly the
    last time it was seen and wrongly now is forgotten once more."""

    def __init__(self, num_samples: int):
        self.last_correct = np.zeros(num_samples, bool)
        self.ever_correct = np.zeros(num_samples, bool)
        self.forgets = np.zeros(num_samples, np.float32)

    def __call__(self, ids: np.ndarray, correct: np.ndarray) -> torch.Tensor:
        self.forgets[ids] += self.last_correct[ids] & ~correct
        self.last_correct[ids] = correct
        self.ever_correct[ids] |= correct
        return torch.from_numpy(self.forgets[ids] + (~self.ever_correct[ids]).astype(np.float32))


def make_signal(name: str | None, num_samples: int):
    """step(ids, logits, per_sample_loss, targets) -> the batch's memory term, or None for EMP's own."""
    if name is None:
        return None
    if name == "relative":
        relative = RelativeMemory()
        return lambda ids, logits, loss, y: relative(prediction_entropy(logits))
    if name == "rank-mix":
        def rank_mix(ids, logits, loss, y):
            with torch.no_grad():
                both = batch_ranks(loss.detach().float()) + batch_ranks(prediction_entropy(logits))
            return both / (2 * len(loss))
        return rank_mix
    if name == "forgetting":
        events = ForgettingEvents(num_samples)
        return lambda ids, logits, loss, y: events(np.asarray(ids), (logits.argmax(1) == y).numpy())
    raise ValueError(f"unknown memory_signal {name!r}; choose one of {list(SIGNALS)}")
