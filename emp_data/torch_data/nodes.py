"""torchdata.nodes integration: the pruner's kept ids as a source node of a nodes pipeline."""
from __future__ import annotations

from typing import Any, Dict, Optional

from torchdata.nodes import BaseNode

from .._validate import as_count
from ..pruner.pruner import Pruner


class PrunedSamplerNode(BaseNode[int]):
    """Yields one epoch's kept ids (``pruner.select(epoch)``), then ends; ``reset()`` starts the
    next epoch, ``reset(state)`` resumes at the saved epoch and position. State: two integers.

        node = PrunedSamplerNode(pruner)
        node = Mapper(node, lambda i: (i, dataset[i]))
        # Batcher drops a last partial batch by default: drop_last=False trains every kept sample.
        loader = Loader(Batcher(node, batch_size=256, drop_last=False))   # each iteration: one epoch
    """

    EPOCH_KEY = "epoch"
    POSITION_KEY = "position"

    def __init__(self, pruner: Pruner, start_epoch: int = 0):
        super().__init__()
        if not isinstance(pruner, Pruner):
            raise TypeError(f"pruner must be an emp_data.Pruner, got {type(pruner).__name__}")
        self.pruner = pruner
        self._next_epoch = as_count(start_epoch, "start_epoch")
        self._epoch = self._next_epoch
        self._position = 0
        self._ids = None

    def reset(self, initial_state: Optional[Dict[str, Any]] = None):
        super().reset(initial_state)
        if initial_state is not None:
            self._epoch = as_count(initial_state[self.EPOCH_KEY], "epoch")
            self._position = as_count(initial_state[self.POSITION_KEY], "position")
        else:
            self._epoch = self._next_epoch
            self._position = 0
        self._next_epoch = self._epoch + 1
        self._ids, _ = self.pruner.select(self._epoch)

    def next(self) -> int:
        if self._position >= len(self._ids):
            raise StopIteration
        value = int(self._ids[self._position])
        self._position += 1
        return value

    def get_state(self) -> Dict[str, Any]:
        return {self.EPOCH_KEY: self._epoch, self.POSITION_KEY: self._position}
