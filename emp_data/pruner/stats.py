"""`Pruner.stats()`: what a run really did, from its own counters and the store, reduced over the
ranks by the partition (a no-op when every process holds every sample)."""
from __future__ import annotations

import numpy as np


def pruner_stats(pruner) -> dict:
    """Kept fraction this epoch, effective pruning so far, times-selected histogram (the EMP paper's
    Fig. 1), and the mean/std of the scores of seen samples, over all samples. ``trained`` counts the
    samples passed to `loss` since this epoch's select (every rank's under DDP), ``padding`` how many
    of those went beyond the kept ones (the repeats that keep ranks in step), and
    ``rank_batch_samples`` this process's share of the epoch (its kept samples and their padding).
    ``budget`` says what prune_ratio r promised: "exact" (round((1 - r) N) per pruned epoch) or
    "soft" (InfoBatch's: more, by the above-mean samples; ``effective_prune_ratio`` is what it was)."""
    part, epoch = pruner.partition, pruner.epoch
    pruner.store.check()
    scores = pruner.scores()
    seen = scores[~np.isnan(scores)]
    hist = np.bincount(pruner.store.times_selected)
    longest_hist = int(part.max(np.array([len(hist)], dtype=np.int64))[0])
    counts = np.zeros(3 + longest_hist, dtype=np.int64)
    counts[:3] = [seen.size, pruner.nonfinite_skipped, pruner._trained.get(epoch, 0)]
    counts[3:3 + len(hist)] = hist
    counts = part.sum(counts)
    n_seen, skipped, trained = (int(c) for c in counts[:3])
    mean, std = part.moments(seen, n_seen)
    n = pruner.num_samples
    epochs_done = len(pruner._kept)
    kept_total = sum(pruner._kept.values())
    kept_now = pruner._kept.get(epoch, 0) if epoch is not None else 0
    info = pruner._last_info
    return {
        "epoch": epoch,
        "kept": kept_now,
        "kept_fraction": kept_now / n if epoch is not None else float("nan"),
        "nominal_prune_ratio": pruner.prune_ratio,
        "budget": pruner.policy.budget,
        "effective_prune_ratio": 1.0 - kept_total / (n * epochs_done) if epochs_done else float("nan"),
        "sample_passes": kept_total,
        "sample_passes_saved": n * epochs_done - kept_total,
        "times_selected_histogram": counts[3:],
        "score_mean": mean,
        "score_std": std,
        "seen": n_seen,
        "above_threshold": int(info.get("above_threshold", 0)),
        "forced": int(info.get("forced", 0)),
        "budget_exceeded": bool(info.get("budget_exceeded", False)),
        "nonfinite_skipped": skipped,
        "trained": trained,
        "padding": max(0, trained - kept_now),
        "rank_batch_samples": pruner._rank_kept.get(epoch, 0) if epoch is not None else 0,
        "rank": part.rank,
        "world": part.world,
    }
