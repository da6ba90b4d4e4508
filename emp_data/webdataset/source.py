"""Where a stream's samples come from: shard urls (with or without an index) or a webdataset
pipeline, and, without an index, the key table that numbers samples as the stream meets them."""
from __future__ import annotations

import os
import socket
import warnings

import numpy as np
import torch

from .index import ShardIndex, _is_url_list, expand_urls
from .key_table import KeyTable
from .readers import _normal_url
from .wids import WidsIndex, looks_like_json


def open_source(source, index, pruner):
    """(pipeline or None, shard urls, ShardIndex or None, WidsIndex or None, index file path or None),
    checked against each other and against the pruner's sample count."""
    if source is None and index is None:
        raise ValueError("source=None needs index= (the shards are then the index's); otherwise pass shard urls "
                         "or a webdataset pipeline")
    pipeline = None if source is None or _is_url_list(source) else source
    if pipeline is not None:
        if not hasattr(source, "__iter__"):
            raise TypeError(f"source must be shard urls or an iterable webdataset pipeline, got {type(source).__name__}")
        if index is not None:
            raise ValueError("index= needs shard urls as the source (it reads members by offset); a pipeline "
                             "source has read the bytes already, so ids come from the key table")
    urls = [] if pipeline is not None or source is None else expand_urls(source)
    index_path, shard_index, wids = None, None, None
    if index is not None:
        if isinstance(index, (ShardIndex, WidsIndex)):
            loaded = index
        else:
            loaded = WidsIndex.load(index) if looks_like_json(index) else ShardIndex.load(index)
            index_path = os.fspath(index) if isinstance(loaded, ShardIndex) else None
        if isinstance(loaded, WidsIndex):
            wids, index_urls = loaded, loaded.urls
        else:
            shard_index, index_urls = loaded, [s["url"] for s in loaded.shards]
        if source is None:
            urls = list(index_urls)
        elif [_normal_url(u) for u in urls] != [_normal_url(u) for u in index_urls]:
            raise ValueError("the index was built for other shards (or another order) than `urls`")
        if loaded.num_samples != pruner.num_samples:
            raise ValueError(f"index has {loaded.num_samples} samples, the pruner {pruner.num_samples}")
    return pipeline, urls, shard_index, wids, index_path


def open_key_table(key_table, pruner) -> KeyTable:
    """The key table numbering a stream without an index: `key_table` (a KeyTable or a path), by
    default the file beside the pruner's memory-mapped store; a reopened one is recovered first."""
    if isinstance(key_table, KeyTable):
        table = key_table
    else:
        if key_table is None and pruner.store_path is not None:
            key_table = pruner.store_path + ".keys"
        table = KeyTable(pruner.num_samples, key_table)
    if table.max_samples != pruner.num_samples:
        raise ValueError(f"key table numbers {table.max_samples} samples, the pruner {pruner.num_samples}")
    if table.existed:
        # Reopened (a restart, maybe after a crash or a power loss): void what a killed
        # process left half-done and check every id, before any worker starts. Not only when
        # the clean flag is off: after a power loss that flag's page may be older than others.
        repaired = table.recover()
        if repaired:
            warnings.warn(f"key table '{table.path}': {repaired} insert(s) cut short by a crash "
                          "were voided; those keys get fresh ids", stacklevel=3)
    return table


def shard_bounds(ranges, num_shards: int) -> np.ndarray | None:
    """The first id of every shard and the end id, from a ShardIndex or WidsIndex (None without one)."""
    if ranges is None:
        return None
    firsts = [ranges.shard_range(s)[0] for s in range(num_shards)]
    return np.array(firsts + [ranges.num_samples], dtype=np.int64)


def check_shared_key_table(table: KeyTable, world: int) -> None:
    """Under torch.distributed every rank numbers samples in the key table: that is one table only
    if all ranks map the same file on one machine. Per-machine tables (multi-node) would give one
    id to different samples on different nodes and mix their scores: refused. Collective."""
    st = os.stat(table.path) if table.path else None
    mine = (socket.gethostname(), st.st_dev, st.st_ino) if st else (socket.gethostname(), os.getpid(), None)
    everyone = [None] * world
    torch.distributed.all_gather_object(everyone, mine)
    if any(other != everyone[0] for other in everyone) or everyone[0][2] is None:
        raise ValueError("under torch.distributed the ranks number samples in different key tables (other "
                         "machines, or other files): the same id would name different samples and their scores "
                         "would mix. Build an index (build_index or a wids index), or use a ShardedPruner with "
                         "shard ownership so that each rank scores only its own shards")
