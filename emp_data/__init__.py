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
