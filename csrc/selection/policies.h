// Per-epoch selection for every pruning policy. select() reads only the samples' statistics (never
// the weights or counts it writes), so a selection is a pure function of (statistics, seed, epoch).
#pragma once
#include <cstdint>
#include <vector>

#include "core/buffer.h"
#include "selection/sampling.h"
#include "core/store.h"

namespace emp {

// How the kept set is drawn from the scores.
enum class Rule {
  Full,      // every sample, weight 1
  Soft,      // InfoBatch: keep scores >= mean; keep the rest with prob 1-r at weight 1/(1-r)
  TopK,      // k = round((1-r)N): (1-explore)k best scores + explore*k uniform among the rest
  Weighted,  // k without replacement, P ~ score^alpha, Horvitz-Thompson weights
  Sweep,     // RS2 without replacement: the next k of a seeded permutation, a new one per pass
  Seta,      // SeTa (CVPR 2025): a random subset, k-means of its scores, a window sliding easy -> hard
};

// Which per-sample score a rule ranks by.
enum class ScoreKind {
  Loss,  // last loss
  Emp,   // loss_weight * last loss + beta * memory term
  Mean,  // running mean of the loss
  Ucb,   // running mean + c * running std
};

struct SelectConfig {
  Rule rule = Rule::Soft;
  ScoreKind score = ScoreKind::Loss;
  double prune_ratio = 0.5;     // r in [0, 1)
  double beta = 0.0;            // Emp: weight of the memory term
  double loss_weight = 1.0;     // Emp: weight of the loss (0: the memory term alone ranks samples)
  double ucb_c = 1.0;           // Ucb: weight of the std
  double explore = 0.0;         // TopK: share of k drawn uniformly from the non-top samples
  double alpha = 1.0;           // Weighted: exponent on the score
  bool exact_budget = false;    // Soft, Seta: keep exactly round((1-r)N)
  bool normalize = true;        // Weighted: scale weights so they sum to N over kept samples
  uint32_t max_gap = 0;         // > 0: a sample idle (not kept) for max_gap pruned epochs is forced in
  uint32_t groups = 10;         // Seta: k-means clusters of the subset's scores
  double window = 0.5;          // Seta: share of the clusters the sliding window covers
};

struct Selection {
  BigVector<int64_t> ids;       // shuffled
  BigVector<float> weights;     // loss weight per kept id
  uint64_t unseen = 0;          // samples never updated (always kept by Soft, ranked first by TopK)
  uint64_t above_threshold = 0; // Soft: samples kept unconditionally (score >= mean, or unseen)
  uint64_t forced = 0;          // max_gap: samples forced in (idle for max_gap pruned epochs)
  double threshold = 0.0;       // Soft: the mean score of seen samples
  bool budget_exceeded = false; // Soft exact budget: more samples than k are above the mean, so the
                                // k best were kept and the rest pruned (no longer unbiased)
};

// Writes this epoch's weight into store.weight() (0 = pruned) and, if `count`, adds one to
// times_selected of every kept sample. Returns the kept ids in shuffled order with their weights.
Selection select(Store& store, const SelectConfig& cfg, uint64_t seed, uint64_t epoch, bool count);

// The same over one rank's part: the store holds the slots of `part.ids`, the rule is decided over
// all ranks' samples (budget, mean, thresholds reduced through `part.ranks`), and this rank's kept
// global ids are returned. Every rank calls it with the same config, seed and epoch; the union of
// their kept (id, weight) pairs is what `select` keeps on one store holding every sample. The
// counts in Selection (unseen, above_threshold) are global.
Selection select(Store& store, const Partition& part, const SelectConfig& cfg, uint64_t seed, uint64_t epoch,
                 bool count);

// The selection `select(store, ., seed, epoch, .)` returned, rebuilt from the weights it wrote
// (updates never touch them), without re-running the policy on scores that have moved since.
Selection current_selection(Store& store, uint64_t seed, uint64_t epoch);
Selection current_selection(Store& store, const Partition& part, uint64_t seed, uint64_t epoch);

// The score each sample has under `cfg` (NaN for never-seen samples).
void compute_scores(const Store& store, const SelectConfig& cfg, float* out);

}  // namespace emp
