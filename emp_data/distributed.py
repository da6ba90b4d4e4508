"""torch.distributed helpers: gathers of (ids, values) with a different count on every rank."""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_gather_varlen(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Concatenation over ranks (in rank order) of each rank's tensors, whose first dimension (the
    same for all tensors of one rank) may differ between ranks (last batch, filtering). The row
    counts are gathered once for all tensors: the one host synchronisation of the call, since the
    padded buffers need the longest count. Then each tensor is padded, gathered and trimmed. Ids stay
    int64 throughout; nothing is cast to float."""
    rows = tensors[0].shape[0]
    if any(t.shape[0] != rows for t in tensors):
        raise ValueError(f"all_gather_varlen: tensors have {[t.shape[0] for t in tensors]} rows; they must agree")
    world = dist.get_world_size()
    size = torch.tensor([rows], dtype=torch.int64, device=tensors[0].device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes_list = torch.cat(sizes).tolist()
    longest = max(sizes_list)
    out = []
    for tensor in tensors:
        padded = torch.zeros((longest,) + tuple(tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
        padded[:rows] = tensor
        gathered = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(gathered, padded)
        out.append(torch.cat([g[:n] for g, n in zip(gathered, sizes_list)]))
    return tuple(out)
