"""The pruner layer: the epoch loop (`Pruner`), composed of a policy, a store and a partition; its
sharded spelling (`ShardedPruner`), its statistics and its checkpoints."""
from .pruner import Pruner
from .sharded import ShardedPruner

__all__ = ["Pruner", "ShardedPruner"]
