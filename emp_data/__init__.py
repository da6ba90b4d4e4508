"""emp_data: dynamic data pruning (InfoBatch, UCB, epsilon-greedy, EMP) at pretraining scale."""
from . import policies, scores
from .policies import EMP, UCB, EpsilonGreedy, Full, InfoBatch, Policy, Random, Sweep, Weighted, make_policy
from .pruner import Pruner
from .torch_data import DistributedPrunedSampler, IndexedDataset, PrunedSampler
from .sampling import get_num_threads, sample_without_replacement, set_num_threads
from .store import ScoreStore

__version__ = "0.1.0"

__all__ = [
    "EMP", "UCB", "DistributedPrunedSampler", "EpsilonGreedy", "Full", "IndexedDataset", "InfoBatch", "Policy",
    "PrunedSampler", "Pruner", "Random", "ScoreStore", "Sweep", "Weighted",
    "__version__", "get_num_threads", "make_policy", "policies", "sample_without_replacement", "scores",
    "set_num_threads",
]
