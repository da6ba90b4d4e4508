"""The selection layer: the pruning policies (what each rule keeps, as a config the C++ selection
runs), the memory terms EMP scores with, and weighted sampling without replacement."""
from .memory import MarginalPrediction, clip_scores, contrastive_scores, prediction_entropy, prediction_mi
from .policies import (EMP, POLICIES, UCB, EpsilonGreedy, Full, InfoBatch, Policy, Random, SeTa, Sweep, Weighted,
                       make_policy)
from .sampling import get_num_threads, sample_without_replacement, set_num_threads

__all__ = ["EMP", "POLICIES", "UCB", "EpsilonGreedy", "Full", "InfoBatch", "MarginalPrediction", "Policy", "Random",
           "SeTa", "Sweep", "Weighted", "clip_scores", "contrastive_scores", "get_num_threads", "make_policy",
           "prediction_entropy", "prediction_mi", "sample_without_replacement", "set_num_threads"]
