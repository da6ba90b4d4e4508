"""The pruning step in webdataset's own idiom: a curried pipeline filter, like ``wds.decode(...)``.

    pipeline = wds.DataPipeline(wds.SimpleShardList(urls), wds.split_by_worker, wds.tarfile_to_samples(),
                                prune(pruner), wds.decode(), wds.to_tuple("__id__", "npy", "cls"))
    dataset = wds.WebDataset(urls, shardshuffle=False).compose(prune(pruner)).decode()

``prune(pruner)`` returns webdataset's ``FilterFunction`` over `_pruned_samples` (what
``wds.pipelinefilter`` makes), so it pickles into DataLoader workers and composes as any stage does.
The filter is PrunedIterableDataset over the samples it receives (its pipeline-source mode: ids from
the key table beside the pruner's store, keep flags and weights from the store), not a second
implementation. Call ``pruner.select(epoch)`` in the training process before each epoch.
"""
from __future__ import annotations

import webdataset as wds

from ..pruner.pruner import Pruner
from .stream import PrunedIterableDataset


def _pruned_samples(samples, stream: PrunedIterableDataset):
    """The kept samples of `samples` with ``__id__`` and ``__weight__`` added, in the order they came."""
    stream.pipeline.source = samples
    if stream.pruner is not None and stream.pruner.epoch is not None:
        stream.epoch = stream.pruner.epoch         # workers take the epoch from the store's stamp
    return iter(stream)


pruned_samples = wds.pipelinefilter(_pruned_samples)


def prune(pruner: Pruner, *, key_table=None, handler=None):
    """A webdataset stage that drops the samples `pruner` pruned this epoch and adds ``__id__`` and
    ``__weight__`` to the kept ones. Takes PrunedIterableDataset's key_table= and handler=.

    The stream behind the stage is made here, in the training process, where the key table beside
    the store is opened (or created) once; DataLoader workers get a pickled copy whose store and key
    table travel by path."""
    return pruned_samples(PrunedIterableDataset(_Samples(), pruner, key_table=key_table, handler=handler))


class _Samples:
    """The samples the stage receives, as the iterable source PrunedIterableDataset reads."""

    source = ()

    def __iter__(self):
        return iter(self.source)

    def __getstate__(self):
        # The samples of the last run (an upstream generator) stay here after it; a copy pickled into
        # DataLoader workers (spawn) starts without them, as the stage does in each run.
        return {}
