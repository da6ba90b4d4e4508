"""Dynamic pruning of WebDataset tar shards: a stream that drops pruned samples before any decoder
runs (and, with an index, before their bytes are read).

    import webdataset as wds
    from emp_data import Pruner
    from emp_data.webdataset import PrunedIterableDataset, PrunedPipeline, build_index

    index = build_index("data/train-{00000..00099}.tar", out="data/index.empidx")
    pruner = Pruner(index.num_samples, policy="emp", prune_ratio=0.7, epochs=E,
                    store_path="data/scores.emp")                    # shared with loader workers
    stream = PrunedIterableDataset("data/train-{00000..00099}.tar", pruner, index="data/index.empidx")
    pipeline = PrunedPipeline(stream, wds.decode(), wds.to_tuple("__id__", "npy", "cls"))  # resumes by seeking
    for epoch in range(E):
        stream.set_epoch(epoch)                                      # selects the epoch's samples
        for ids, x, y in DataLoader(pipeline, batch_size=64, num_workers=2):
            logits = model(x)
            pruner.loss(F.cross_entropy(logits, y, reduction="none"), ids, logits=logits).backward()

The index (`shard_index`) and the key table (`key_table`) live in their own modules; their public
names are importable from here too.
"""
from __future__ import annotations

from .key_table import KeyTable
from .index import ShardIndex, build_index, expand_urls
from .wids import WidsIndex
from .pipeline import PrunedPipeline
from .shares import shard_ownership
from .stage import prune
from .stream import PrunedIterableDataset

__all__ = ["KeyTable", "PrunedIterableDataset", "PrunedPipeline", "ShardIndex", "WidsIndex", "build_index", "expand_urls",
           "prune", "shard_ownership"]
