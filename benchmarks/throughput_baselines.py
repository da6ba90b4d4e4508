"""The baselines of benchmarks/sampling_throughput.py: the InfoBatch and SeTa reference `prune()`s
(their own code, written out), and the same operations vectorised in numpy."""
from __future__ import annotations

import numpy as np
import torch


class InfoBatchReference:
    """InfoBatch's own prune(), as in its repository (numpy + Python lists, global RNG)."""

    def __init__(self, scores, keep_ratio):
        self.scores = scores
        self.keep_ratio = keep_ratio
        self.weights = np.ones(len(scores), dtype=np.float32)

    def reset_weights(self):
        self.weights[:] = 1

    def prune(self):
        well_learned_mask = self.scores < self.scores.mean()
        well_learned_indices = np.where(well_learned_mask)[0]
        remained_indices = np.where(~well_learned_mask)[0].tolist()
        selected_indices = np.random.choice(well_learned_indices, int(self.keep_ratio * len(well_learned_indices)),
                                            replace=False)
        self.reset_weights()
        if len(selected_indices) > 0:
            self.weights[selected_indices] = 1 / self.keep_ratio
            remained_indices.extend(selected_indices)
        np.random.shuffle(remained_indices)
        return remained_indices


def numpy_infobatch(scores, keep, rng, weights_out):
    hard = scores >= scores.mean()
    kept = hard | (rng.random(len(scores)) < keep)
    np.copyto(weights_out, np.where(hard, np.float32(1), np.float32(1 / keep)) * kept)
    ids = rng.permutation(np.flatnonzero(kept))
    return ids, weights_out[ids]


def numpy_topk(scores, k, rng):
    ids = np.argpartition(-scores, k - 1)[:k]
    return rng.permutation(ids)


def numpy_weighted(w, k, rng):
    keys = np.log(rng.random(len(w))) / w
    return rng.permutation(np.argpartition(-keys, k - 1)[:k])


def seta_reference(scores, keep_ratio, iteration, num_group=10, window_scale=0.5):
    """SeTa's own prune() (github.com/mrazhou/SeTa, seta.py): torch.randperm subset, sklearn KMeans
    of the subset's scores, a Python loop grouping them, the sliding window."""
    from sklearn.cluster import KMeans

    scores = torch.from_numpy(scores)
    num = int(len(scores) * keep_ratio)
    picked = torch.randperm(len(scores))[:num]
    sub, indices = scores[picked], torch.arange(len(scores))[picked]
    labels = KMeans(n_clusters=num_group, random_state=0).fit(sub.unsqueeze(1)).labels_
    grouped_scores = [[] for _ in range(num_group)]
    grouped_indices = [[] for _ in range(num_group)]
    for score, index, label in zip(sub, indices, labels):
        grouped_scores[label].append(score)
        grouped_indices[label].append(index)
    centres = [np.mean(g) for g in grouped_scores]
    groups = [g for _, g in sorted(zip(centres, grouped_indices), key=lambda t: t[0])]
    window = round(num_group * window_scale)
    start = iteration % (num_group - window + 1)
    kept = [i for g in groups[start:start + window] for i in g]
    np.random.shuffle(kept)
    return np.array(kept)


def numpy_update(loss, mean, var, ids, values, decay=0.8):
    d = values - mean[ids]
    mean[ids] += (1 - decay) * d
    var[ids] = decay * (var[ids] + (1 - decay) * d * d)
    loss[ids] = values


def numpy_scatters(loss, mem, ids, values, memory):
    """The per-step update's floor in numpy: the same ids scattered into two float32 arrays."""
    loss[ids] = values
    mem[ids] = memory
