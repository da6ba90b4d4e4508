"""The distributed layer: how processes share the samples (partitions, ownership) and the
collectives they agree through."""
from .collectives import RanksOutOfStep, all_gather_varlen, is_distributed
from .ownership import Ownership
from .partition import ShardedPartition, WholePartition, make_partition

__all__ = ["Ownership", "RanksOutOfStep", "ShardedPartition", "WholePartition", "all_gather_varlen",
           "is_distributed", "make_partition"]
