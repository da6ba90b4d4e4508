"""emp_data: dynamic data pruning (InfoBatch, UCB, epsilon-greedy, EMP) at pretraining scale."""
import os as _os

try:
    from . import _C  # noqa: F401  (the compiled core)
except ImportError as _exc:
    _here = _os.path.dirname(_os.path.abspath(__file__))
    if _os.path.exists(_os.path.join(_here, "..", "setup.py")):
        # Python put the current folder first on sys.path, and it is the source checkout, which holds
        # no compiled core: the installed package is shadowed.
        raise ImportError(f"emp_data is being imported from its source folder {_here}, which has no compiled "
                          "core (_C). Run from another folder, or use `python -I` (which leaves the current "
                          "folder off sys.path); to work on the source, build in place with "
                          "`python setup.py build_ext --inplace`") from None
    raise

from . import _moved
from .distributed import Ownership, RanksOutOfStep, ShardedPartition, WholePartition
from .pruner import Pruner, ShardedPruner
from .selection import (EMP, UCB, EpsilonGreedy, Full, InfoBatch, MarginalPrediction, Policy, Random, SeTa, Sweep,
                        Weighted, clip_scores, contrastive_scores, get_num_threads, make_policy, prediction_entropy,
                        prediction_mi, sample_without_replacement, set_num_threads)
from .store import CudaScoreStore, ScoreStore, Store
from .torch_data import DistributedPrunedSampler, IndexedDataset, PrunedSampler

__version__ = "0.1.0"

_moved.install()


def __getattr__(name):
    """Old submodule attributes (``emp_data.scores``, ``emp_data.policies``, ...): the moved module,
    with a DeprecationWarning; `PrunedSamplerNode` imported only when asked for (torchdata.nodes)."""
    if f"emp_data.{name}" in _moved.MOVED:
        return _moved.resolve(f"emp_data.{name}")
    if name == "PrunedSamplerNode":
        from .torch_data.nodes import PrunedSamplerNode

        return PrunedSamplerNode
    raise AttributeError(f"module 'emp_data' has no attribute {name!r}")


__all__ = [
    "CudaScoreStore",
    "DistributedPrunedSampler",
    "EMP",
    "EpsilonGreedy",
    "Full",
    "IndexedDataset",
    "InfoBatch",
    "MarginalPrediction",
    "Ownership",
    "Policy",
    "PrunedSampler",
    "PrunedSamplerNode",
    "Pruner",
    "Random",
    "RanksOutOfStep",
    "ScoreStore",
    "SeTa",
    "ShardedPartition",
    "ShardedPruner",
    "Store",
    "Sweep",
    "UCB",
    "Weighted",
    "WholePartition",
    "__version__",
    "clip_scores",
    "contrastive_scores",
    "get_num_threads",
    "make_policy",
    "prediction_entropy",
    "prediction_mi",
    "sample_without_replacement",
    "set_num_threads",
]
