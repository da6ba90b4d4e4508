"""The pruning step in webdataset's own idiom: a pipeline stage.

    pipeline = wds.DataPipeline(wds.SimpleShardList(urls), wds.split_by_worker, wds.tarfile_to_samples(),
                                prune(pruner), wds.decode(), wds.to_tuple("__id__", "npy", "cls"))
    dataset = wds.WebDataset(urls, shardshuffle=False).compose(prune(pruner)).decode()

It is PrunedIterableDataset over the samples the stage receives (its pipeline-source mode: ids from
the key table beside the pruner's store, keep flags and weights from the store), not a second
implementation. Call ``pruner.select(epoch)`` in the training process before each epoch.
"""
from __future__ import annotations

from ..pruner.pruner import Pruner
from .stream import PrunedIterableDataset


class prune:  # noqa: N801 - named like webdataset's stages (wds.decode, wds.shuffle)
    """A webdataset stage that drops the samples `pruner` pruned this epoch and adds ``__id__`` and
    ``__weight__`` to the kept ones. Takes PrunedIterableDataset's key_table= and handler=."""

    def __init__(self, pruner: Pruner, *, key_table=None, handler=None):
        # Made here, in the training process: DataLoader workers get a pickled copy (its store and
        # key table travel by path, as for the stream itself).
        self._stream = PrunedIterableDataset(_Samples(), pruner, key_table=key_table, handler=handler)

    def __call__(self, source):
        stream = self._stream
        stream.pipeline.source = source
        if stream.pruner is not None and stream.pruner.epoch is not None:
            stream.epoch = stream.pruner.epoch     # workers take the epoch from the store's stamp
        return iter(stream)


class _Samples:
    """The samples the stage receives, as the iterable source PrunedIterableDataset reads."""

    source = ()

    def __iter__(self):
        return iter(self.source)
