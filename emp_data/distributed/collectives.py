"""torch.distributed helpers: gathers of (ids, values) with a different count on every rank."""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class RanksOutOfStep(RuntimeError):
    """The ranks reached one collective from different training steps (raised on every rank)."""


def all_gather_varlen(*tensors: torch.Tensor, stamp: tuple[int, int] | None = None) -> tuple[torch.Tensor, ...]:
    """Concatenation over ranks (in rank order) of each rank's tensors, whose first dimension (the
    same for all tensors of one rank) may differ between ranks (last batch, filtering). The row
    counts are gathered once for all tensors: the one host synchronisation of the call, since the
    padded buffers need the longest count. Then each tensor is padded, gathered and trimmed. Ids stay
    int64 throughout; nothing is cast to float.

    `stamp` = (epoch, step) travels with the row counts: if the ranks disagree (one rank ran more
    batches in an epoch than another, so its gathers pair with the other's next epoch), every rank
    raises RanksOutOfStep instead of mixing updates from different steps."""
    rows = tensors[0].shape[0]
    if any(t.shape[0] != rows for t in tensors):
        raise ValueError(f"all_gather_varlen: tensors have {[t.shape[0] for t in tensors]} rows; they must agree")
    world = dist.get_world_size()
    head = [rows] if stamp is None else [rows, int(stamp[0]), int(stamp[1])]
    size = torch.tensor(head, dtype=torch.int64, device=tensors[0].device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    heads = torch.stack(sizes).tolist()
    if stamp is not None and any(h[1:] != heads[0][1:] for h in heads):
        where = ", ".join(f"rank {r}: epoch {h[1]} step {h[2]}" for r, h in enumerate(heads))
        raise RanksOutOfStep(f"torch.distributed ranks are out of step in pruner.loss ({where}): every rank must run "
                             "the same number of batches per epoch (see the README, 'Workers and DDP')")
    sizes_list = [h[0] for h in heads]
    longest = max(sizes_list)
    out = []
    for tensor in tensors:
        padded = torch.zeros((longest,) + tuple(tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
        padded[:rows] = tensor
        gathered = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(gathered, padded)
        out.append(torch.cat([g[:n] for g, n in zip(gathered, sizes_list)]))
    return tuple(out)
