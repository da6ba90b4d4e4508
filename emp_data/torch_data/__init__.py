"""The torch.utils.data layer: map-style datasets and samplers over a Pruner's selection, and a
torchdata.nodes source."""
from .samplers import DistributedPrunedSampler, IndexedDataset, PrunedSampler


def __getattr__(name):
    if name == "PrunedSamplerNode":      # torchdata.nodes is imported only when asked for
        from .nodes import PrunedSamplerNode

        return PrunedSamplerNode
    raise AttributeError(name)


__all__ = ["DistributedPrunedSampler", "IndexedDataset", "PrunedSampler", "PrunedSamplerNode"]
