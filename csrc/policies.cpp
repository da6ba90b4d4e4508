#include "policies.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "parallel.h"
#include "rng.h"
#include "sampling.h"
#include "selection_common.h"

namespace emp {
namespace {

// Per-sample scores, one type per ScoreKind so the hot loops are compiled once per kind with no
// switch inside them. NaN marks a never-seen sample.
struct LossScore {
  float operator()(const SampleStats& s) const { return s.loss; }
};
struct EmpScore {
  float beta;
  float operator()(const SampleStats& s) const { return std::isnan(s.memory) ? s.loss : s.loss + beta * s.memory; }
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
      return fn(EmpScore{static_cast<float>(cfg.beta)});
    case ScoreKind::Mean:
      return fn(MeanScore{});
    case ScoreKind::Ucb:
      return fn(UcbScore{static_cast<float>(cfg.ucb_c)});
  }
}

// Mean and max score of seen samples, summed in fixed blocks (thread-count independent).
template <class Score>
SeenSummary summarise(const Store& store, const Score& score) {
  const uint64_t n = store.size();
  const SampleStats* stats = store.stats();
  const uint64_t nb = num_blocks(n);
  std::vector<double> sums(nb, 0.0);
  std::vector<uint64_t> counts(nb, 0);
  std::vector<float> maxes(nb, -std::numeric_limits<float>::infinity());
  for_blocks(n, [&](size_t b, size_t begin, size_t end) {
    double s = 0.0;
    uint64_t c = 0;
    float m = -std::numeric_limits<float>::infinity();
    for (size_t i = begin; i < end; ++i) {
      const float v = score(stats[i]);
      if (std::isnan(v)) continue;
      s += v;
      ++c;
      m = std::max(m, v);
    }
    sums[b] = s;
    counts[b] = c;
    maxes[b] = m;
  });
  return combine_seen(nb, sums.data(), counts.data(), maxes.data());
}

void select_full(Store& store) {
  float* w = store.weight();
  for_blocks(store.size(), [&](size_t, size_t begin, size_t end) { std::fill(w + begin, w + end, 1.0f); });
}

template <class Score>
void select_soft(Store& store, const SelectConfig& cfg, const Score& score, uint64_t seed, uint64_t epoch,
                 Selection& sel) {
  const uint64_t n = store.size();
  const SampleStats* stats = store.stats();
  float* w = store.weight();
  const SeenSummary summary = summarise(store, score);
  const double mean = summary.mean;
  sel.threshold = mean;
  sel.unseen = n - summary.seen;
  const double keep_prob = 1.0 - cfg.prune_ratio;
  auto is_hard = [&](uint64_t i) {
    const float s = score(stats[i]);
    return std::isnan(s) || s >= mean;
  };
  const uint64_t keep_stream = stream_key(seed, epoch, Purpose::Keep);

  if (!cfg.exact_budget) {
    const float soft_weight = static_cast<float>(1.0 / keep_prob);
    // A soft sample is kept when its 32-bit coin is below keep_prob * 2^32.
    const uint64_t keep_below = static_cast<uint64_t>(std::ldexp(keep_prob, 32));
    const uint64_t nb = num_blocks(n);
    std::vector<uint64_t> hard(nb, 0);
    for_blocks(n, [&](size_t b, size_t begin, size_t end) {
      uint64_t h = 0;
      // Branch-free (hard/soft and keep/prune are coin flips per sample, and a mispredicted branch
      // costs more than the arithmetic): w = hard + (1 - hard) * kept * soft_weight, on 0/1 values.
      const float sw = soft_weight;
      const uint64_t below = keep_below;
      const double m = mean;
      const uint64_t stream = keep_stream;
      auto decide = [&](size_t i, uint32_t coin) {
        const float s = score(stats[i]);
        const uint32_t hard_i = static_cast<uint32_t>(!(s < m));  // NaN (never seen) counts as hard
        const float kept = static_cast<float>(static_cast<uint64_t>(coin) < below);
        const float hf = static_cast<float>(hard_i);
        w[i] = hf + (1.0f - hf) * kept * sw;
        h += hard_i;
      };
      size_t i = begin;  // blocks start at even ids, so pairs (2j, 2j+1) share one draw
      for (; i + 1 < end; i += 2) {
        const uint64_t r = draw(stream, i >> 1);
        decide(i, static_cast<uint32_t>(r));
        decide(i + 1, static_cast<uint32_t>(r >> 32));
      }
      if (i < end) decide(i, static_cast<uint32_t>(draw(stream, i >> 1)));
      hard[b] = h;
    });
    for (uint64_t h : hard) sel.above_threshold += h;
    return;
  }

  // Exact budget: all hard samples, plus exactly m = k - hard of the soft ones, uniformly, each
  // weighted soft_count / m (the inverse of its inclusion probability).
  const uint64_t k = budget(cfg.prune_ratio, n);
  const uint64_t tie_stream = stream_key(seed, epoch, Purpose::TieBreak);
  const uint64_t hard = sum_blocks<uint64_t>(n, [&](size_t begin, size_t end) {
    uint64_t h = 0;
    for (size_t i = begin; i < end; ++i) h += is_hard(i);
    return h;
  });
  sel.above_threshold = hard;
  if (hard > k) {
    sel.budget_exceeded = true;
    const RankThreshold best = topk_threshold(n, k, [&](uint64_t i) { return score_key(score(stats[i]), tie_stream, i); });
    for_blocks(n, [&](size_t, size_t begin, size_t end) {
      for (size_t i = begin; i < end; ++i)
        w[i] = within(score_key(score(stats[i]), tie_stream, i), static_cast<int64_t>(i), best) ? 1.0f : 0.0f;
    });
    return;
  }
  const uint64_t soft_count = n - hard;
  const uint64_t m = k - hard;
  auto soft_key = [&](uint64_t i) { return is_hard(i) ? 0ull : (draw(keep_stream, i) | 1ull); };
  const RankThreshold pick = topk_threshold(n, m, soft_key);
  const float soft_weight = m > 0 ? static_cast<float>(static_cast<double>(soft_count) / static_cast<double>(m)) : 0.0f;
  for_blocks(n, [&](size_t, size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      if (is_hard(i))
        w[i] = 1.0f;
      else
        w[i] = within(soft_key(i), static_cast<int64_t>(i), pick) ? soft_weight : 0.0f;
    }
  });
}

template <class Score>
void select_topk(Store& store, const SelectConfig& cfg, const Score& score, uint64_t seed, uint64_t epoch,
                 Selection& sel) {
  const uint64_t n = store.size();
  const SampleStats* stats = store.stats();
  float* w = store.weight();
  const uint64_t k = budget(cfg.prune_ratio, n);
  const uint64_t greedy_k = static_cast<uint64_t>(std::llround((1.0 - cfg.explore) * static_cast<double>(k)));
  const uint64_t tie_stream = stream_key(seed, epoch, Purpose::TieBreak);
  const uint64_t explore_stream = stream_key(seed, epoch, Purpose::Explore);
  // Keys computed once: every top-k pass below reads them instead of re-hashing.
  BigVector<uint64_t> keys(n);
  RankThreshold greedy;
  greedy.none = true;
  if (greedy_k > 0) {
    for_blocks(n, [&](size_t, size_t begin, size_t end) {
      for (size_t i = begin; i < end; ++i) keys[i] = score_key(score(stats[i]), tie_stream, i);
    });
    greedy = topk_threshold(n, greedy_k, [&](uint64_t i) { return keys[i]; });
  }
  if (k > greedy_k) {
    // Explore share: uniform among the rest. Re-key in place: 0 for greedy picks, a coin otherwise
    // (random is all explore: no score keys were computed).
    for_blocks(n, [&](size_t, size_t begin, size_t end) {
      for (size_t i = begin; i < end; ++i)
        keys[i] = greedy_k > 0 && within(keys[i], static_cast<int64_t>(i), greedy) ? 0ull
                                                                                   : (draw(explore_stream, i) | 1ull);
    });
  }
  // No explore share (ucb, emp topk): skip the pass that would only count eligible keys for k = 0.
  RankThreshold explore;
  explore.none = true;
  if (k > greedy_k) explore = topk_threshold(n, k - greedy_k, [&](uint64_t i) { return keys[i]; });
  const uint64_t nb = num_blocks(n);
  std::vector<uint64_t> unseen(nb, 0);
  for_blocks(n, [&](size_t b, size_t begin, size_t end) {
    uint64_t u = 0;
    for (size_t i = begin; i < end; ++i) {
      const bool in_greedy = k > greedy_k ? keys[i] == 0 : within(keys[i], static_cast<int64_t>(i), greedy);
      const bool in_explore = k > greedy_k && within(keys[i], static_cast<int64_t>(i), explore);
      w[i] = (in_greedy || in_explore) ? 1.0f : 0.0f;
      u += std::isnan(stats[i].loss);
    }
    unseen[b] = u;
  });
  for (uint64_t u : unseen) sel.unseen += u;
}

template <class Score>
void select_weighted(Store& store, const SelectConfig& cfg, const Score& score, uint64_t seed, uint64_t epoch,
                     Selection& sel) {
  const uint64_t n = store.size();
  const SampleStats* stats = store.stats();
  float* w = store.weight();
  const SeenSummary summary = summarise(store, score);
  sel.unseen = n - summary.seen;
  // Never-seen samples are drawn as likely as the highest-scoring seen one.
  BigVector<double> sampling_weight(n);
  for_blocks(n, [&](size_t, size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      float s = score(stats[i]);
      if (std::isnan(s)) s = summary.max;
      const double sd = s > 0.0f ? static_cast<double>(s) : 0.0;
      sampling_weight[i] = cfg.alpha == 1.0 ? sd : (cfg.alpha == 2.0 ? sd * sd : (sd > 0.0 ? std::pow(sd, cfg.alpha) : 0.0));
    }
  });
  const uint64_t k = budget(cfg.prune_ratio, n);
  // The draw's Horvitz-Thompson weights go straight into the store (select shuffles them after).
  weighted_marks(sampling_weight.data(), n, k, seed, epoch, w);
  if (cfg.normalize) {
    const double total = sum_blocks<double>(n, [&](size_t begin, size_t end) {
      double t = 0.0;
      for (size_t i = begin; i < end; ++i) t += w[i];
      return t;
    });
    if (total > 0.0) {
      const double scale = static_cast<double>(n) / total;
      for_blocks(n, [&](size_t, size_t begin, size_t end) {
        for (size_t i = begin; i < end; ++i) w[i] = static_cast<float>(w[i] * scale);
      });
    }
  }
}

}  // namespace

Selection select(Store& store, const SelectConfig& cfg, uint64_t seed, uint64_t epoch, bool count) {
  Selection sel;
  switch (cfg.rule) {
    case Rule::Full:
      select_full(store);
      break;
    case Rule::Soft:
      with_score(cfg, [&](const auto& score) { select_soft(store, cfg, score, seed, epoch, sel); });
      break;
    case Rule::TopK:
      with_score(cfg, [&](const auto& score) { select_topk(store, cfg, score, seed, epoch, sel); });
      break;
    case Rule::Weighted:
      with_score(cfg, [&](const auto& score) { select_weighted(store, cfg, score, seed, epoch, sel); });
      break;
  }
  gather_shuffled(store.weight(), store.size(), stream_key(seed, epoch, Purpose::Shuffle),
                  count ? store.times_selected() : nullptr, sel.ids, sel.weights);
  return sel;
}

Selection current_selection(Store& store, uint64_t seed, uint64_t epoch) {
  Selection sel;
  gather_shuffled(store.weight(), store.size(), stream_key(seed, epoch, Purpose::Shuffle), nullptr, sel.ids, sel.weights);
  return sel;
}

void compute_scores(const Store& store, const SelectConfig& cfg, float* out) {
  const SampleStats* stats = store.stats();
  with_score(cfg, [&](const auto& score) {
    for_blocks(store.size(), [&](size_t, size_t begin, size_t end) {
      for (size_t i = begin; i < end; ++i) out[i] = score(stats[i]);
    });
  });
}

}  // namespace emp
