"""torch.distributed helpers: gathers of (ids, values) with a different count on every rank."""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_gather_varlen(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenation over ranks (in rank order) of each rank's tensor, whose first dimension may
    differ between ranks (last batch, filtering): sizes are gathered first, then padded tensors,
    then each is trimmed. Ids stay int64 throughout; nothing is cast to float."""
    world = dist.get_world_size()
    size = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes_list = [int(s.item()) for s in sizes]
    longest = max(sizes_list)
    padded = torch.zeros((longest,) + tuple(tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:n] for g, n in zip(gathered, sizes_list)])
