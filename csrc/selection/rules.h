// What the rules (rule_*.cpp) share: the per-sample scores, the summary of the seen scores, the
// samples max_gap forces in, and one entry point per rule. Internal to csrc/selection: users call
// select() (policies.h), which dispatches to the rules.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/parallel.h"
#include "core/rng.h"
#include "core/store.h"
#include "selection/policies.h"
#include "selection/sampling.h"
#include "selection/selection_common.h"

namespace emp {
namespace rules {

// Per-sample scores, one type per ScoreKind so the hot loops are compiled once per kind with no
// switch inside them. NaN marks a never-seen sample.
struct LossScore {
  float operator()(const SampleStats& s) const { return s.loss; }
};
struct EmpScore {
  float beta, loss_weight;
  float operator()(const SampleStats& s) const {
    const float loss = loss_weight * s.loss;  // exact for 1; NaN (never seen) stays NaN
    return std::isnan(s.memory) ? loss : loss + beta * s.memory;
  }
};
struct MeanScore {
  float operator()(const SampleStats& s) const { return s.loss_mean; }
};
struct UcbScore {
  float c;
  float operator()(const SampleStats& s) const { return s.loss_mean + c * std::sqrt(std::max(s.loss_var, 0.0f)); }
};

// Calls fn(score) with the scorer cfg asks for.
template <class Fn>
void with_score(const SelectConfig& cfg, Fn fn) {
  switch (cfg.score) {
    case ScoreKind::Loss:
      return fn(LossScore{});
    case ScoreKind::Emp:
      return fn(EmpScore{static_cast<float>(cfg.beta), static_cast<float>(cfg.loss_weight)});
    case ScoreKind::Mean:
      return fn(MeanScore{});
    case ScoreKind::Ucb:
      return fn(UcbScore{static_cast<float>(cfg.ucb_c)});
  }
}

// Mean, max and count of the seen samples' scores over every rank. The sum is exact (ExactSum),
// so the mean does not depend on how samples are spread over threads or ranks: a partitioned
// selection compares against the very mean a single process computes.
template <class Score>
SeenSummary summarise(const Store& store, const Partition& part, const Score& score) {
  const uint64_t n = store.size();
  const SampleStats* stats = store.stats();
  const int64_t nb = static_cast<int64_t>(num_blocks(n));
  ExactSum total;
  uint64_t seen = 0;
  float mx = -std::numeric_limits<float>::infinity();
#pragma omp parallel num_threads(team_size())
  {
    ExactSum sum;
    uint64_t c = 0;
    float m = -std::numeric_limits<float>::infinity();
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < nb; ++b) {
      const uint64_t begin = static_cast<uint64_t>(b) * kBlock;
      const uint64_t end = std::min<uint64_t>(begin + kBlock, n);
      for (uint64_t i = begin; i < end; ++i) {
        const float v = score(stats[i]);
        if (std::isnan(v)) continue;
        sum.add(v);
        ++c;
        m = std::max(m, v);
      }
    }
#pragma omp critical
    {
      total.merge(sum);
      seen += c;
      mx = std::max(mx, m);
    }
  }
  if (part.ranks.active()) {
    std::vector<int64_t> words(total.words(), total.words() + ExactSum::kWords);
    words.push_back(static_cast<int64_t>(seen));
    part.ranks.sum(words.data(), words.size());
    std::copy(words.begin(), words.begin() + ExactSum::kWords, total.words());
    seen = static_cast<uint64_t>(words.back());
    mx = static_cast<float>(part.ranks.max_one(mx));
  }
  SeenSummary out;
  out.seen = seen;
  out.mean = seen > 0 ? total.value() / static_cast<double>(seen) : 0.0;
  out.max = seen > 0 ? mx : 1.0f;
  return out;
}

// max_gap: a sample not kept in the last `gap` pruned epochs (idle >= gap) is forced in, inside the
// budget. `count` is over all ranks.
struct Forced {
  const uint16_t* idle = nullptr;
  uint32_t gap = 0;
  uint64_t count = 0;
  // gap is the same for every sample, so the branch is free, and with no max_gap the idle counts
  // are never read.
  bool operator()(uint64_t i) const { return gap != 0 && idle[i] >= gap; }
};

Forced forced_set(const Store& store, const Partition& part, const SelectConfig& cfg);

// When the forced samples alone reach the budget k, they are all there is room for: the k idle
// longest (ties by a random draw per global id) are kept at weight 1, and true is returned. With no
// sample forced (k = 0 included) the rule runs as usual, so its counts (above_threshold,
// budget_exceeded) say what the scores were.
bool keep_most_idle(Store& store, const Partition& part, const Forced& forced, uint64_t k, uint64_t seed,
                    uint64_t epoch, Selection& sel);

// The soft rule's coin for global id g: half of draw(stream, g / 2), so ids 2j and 2j+1 share one
// draw (the single-process loop makes one draw per pair) on any rank layout.
inline uint32_t soft_coin(uint64_t stream, uint64_t g) {
  return static_cast<uint32_t>(draw(stream, g >> 1) >> ((g & 1) * 32));
}

// One entry point per rule: each writes this rank's weights into store.weight() (0 = pruned) and
// fills the counts of `sel`; samples `forced` in (max_gap) are kept at weight 1 inside the budget.
void select_soft(Store& store, const Partition& part, const SelectConfig& cfg, uint64_t seed, uint64_t epoch,
                 const Forced& forced, Selection& sel);
void select_topk(Store& store, const Partition& part, const SelectConfig& cfg, uint64_t seed, uint64_t epoch,
                 const Forced& forced, Selection& sel);
void select_weighted(Store& store, const Partition& part, const SelectConfig& cfg, uint64_t seed, uint64_t epoch,
                     const Forced& forced, Selection& sel);
void select_sweep(Store& store, const Partition& part, const SelectConfig& cfg, uint64_t seed, uint64_t epoch);
void select_seta(Store& store, const Partition& part, const SelectConfig& cfg, uint64_t seed, uint64_t epoch,
                 const Forced& forced, Selection& sel);

}  // namespace rules
}  // namespace emp
