"""The store layer: the per-sample state of dynamic pruning (24 bytes a sample) and the selection
run over it, behind one interface (`Store`) with a host implementation (`ScoreStore`, in memory or
memory-mapped for DataLoader workers) and a GPU one (`CudaScoreStore`)."""
from __future__ import annotations

import os

from .cuda import CudaScoreStore
from .host import MAX_SAMPLES, ScoreStore
from .protocol import STORE_FIELDS, Store

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

__all__ = ["CudaScoreStore", "MAX_SAMPLES", "STORE_FIELDS", "ScoreStore", "Store", "create_store"]


def create_store(num_samples: int, device=None, path: str | os.PathLike | None = None, *,
                 partitioned: bool = False) -> Store:
    """A new store for `num_samples` samples: on the host (memory-mapped at `path` when given), or,
    with device="cuda", on the GPU (then `path` names its memory-mapped host copy for workers).
    `partitioned`: the store holds one rank's part of a sharded selection (host memory only)."""
    kind = device_of(device)
    if kind == "cuda" and partitioned:
        raise ValueError("a sharded partition keeps its part of the store in host memory (device='cpu'); a GPU store "
                         "is not partitioned yet")
    if kind == "cuda":
        from . import cuda    # looked up at call time, so a test can stand in for the kernels

        return cuda.CudaScoreStore(num_samples, torch.device(device), mirror_path=path)
    if kind != "cpu":
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return ScoreStore(num_samples, path=path)


def device_of(device) -> str:
    """'cpu' or 'cuda' for a device argument (None: cpu)."""
    return "cpu" if device is None or torch is None else torch.device(device).type
