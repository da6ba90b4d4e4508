"""ShardedPruner: a Pruner whose partition is sharded, so each torch.distributed rank holds, scores
and trains only the samples it owns.

    dist.init_process_group("gloo")               # under torchrun (or "nccl")
    pruner = ShardedPruner(len(dataset), policy="emp", prune_ratio=0.7, epochs=E)
    for epoch in range(E):
        ids, weights = pruner.select(epoch)       # this rank's kept ids; equal length on every rank
        for start in range(0, len(ids), 256):
            batch_ids = ids[start:start + 256]
            logits = model(x[batch_ids])
            per_sample = F.cross_entropy(logits, y[batch_ids], reduction="none")
            pruner.loss(per_sample, batch_ids, logits=logits).backward()   # local: no collective

Memory per rank is 24 bytes x (its samples), N / world for map-style data. `loss()` updates only the
local store. The selection is still global: each rule's mean, budget and thresholds are reduced over
the ranks inside the C++ selection (an exact-sum all_reduce, and a 16 KiB histogram all_reduce per
radix pass), and every random draw is keyed by the global id, so the kept ids and weights over all
ranks are exactly those a single-process Pruner selects from the same scores.
"""
from __future__ import annotations

from ..distributed.ownership import Ownership
from ..distributed.partition import ShardedPartition
from .pruner import Pruner


class ShardedPruner(Pruner):
    """``Pruner(..., partition=ShardedPartition(num_samples, ownership, group))``, spelled short.

    Args (besides Pruner's):
        num_samples: N, over all ranks.
        ownership: which ids this rank owns (an `Ownership`); default: ``Ownership.strided`` (id %
            world == rank) for map-style data. Streams use ``emp_data.webdataset.shard_ownership(index)``.
        group: the process group (default: the global one). Without torch.distributed initialised
            the pruner is a one-rank partition (same results as a Pruner).
        store_path: this rank's memory-mapped store (one file per rank, e.g. with the rank in the
            name), for DataLoader workers.

    Every rank must call `select`, `stats`, `save` and `load` together (they reduce over the
    ranks); `loss` is local. `select(epoch)` returns this rank's kept ids padded to the largest
    rank's count by repeating its own kept ids (as DistributedSampler pads), so every rank runs the
    same number of batches; a rank that kept nothing repeats its own samples with weight 0.
    `save(path)` writes one part per rank and a manifest at `path`; `ShardedPruner.load(path)` (or
    `Pruner.load`) reads it back on any world size.
    """

    checkpoint_kind = "manifest"

    def __init__(self, num_samples: int, policy="emp", prune_ratio: float = 0.5, epochs: int | None = None,
                 anneal: float = 0.875, seed: int = 0, *, ownership: Ownership | None = None, group=None,
                 partition: ShardedPartition | None = None, **options):
        if partition is None:
            partition = ShardedPartition(num_samples, ownership, group)
        super().__init__(num_samples, policy, prune_ratio, epochs, anneal, seed, partition=partition, **options)

    @property
    def group(self):
        return self.partition.group

    @property
    def traffic(self) -> dict:
        """Collectives and bytes the selection's reductions moved since construction."""
        return self.partition.traffic
