#include "selection/policies.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "core/parallel.h"
#include "core/rng.h"
#include "selection/sampling.h"
#include "selection/kmeans.h"
#include "selection/selection_common.h"

namespace emp {
namespace {

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

void select_full(Store& store) {
  float* w = store.weight();
  for_blocks(store.size(), [&](size_t, size_t begin, size_t end) { std::fill(w + begin, w + end, 1.0f); });
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

Forced forced_set(const Store& store, const Partition& part, const SelectConfig& cfg) {
  Forced f;
  f.idle = store.idle();
  f.gap = cfg.max_gap;
  if (f.gap == 0) return f;
  f.count = part.ranks.sum_one(sum_blocks<uint64_t>(store.size(), [&](size_t begin, size_t end) {
    uint64_t c = 0;
    for (size_t i = begin; i < end; ++i) c += f(i);
    return c;
  }));
  return f;
}

// When the forced samples alone reach the budget k, they are all there is room for: the k idle
// longest (ties by a random draw per global id) are kept at weight 1, and true is returned. With no
// sample forced (k = 0 included) the rule runs as usual, so its counts (above_threshold,
// budget_exceeded) say what the scores were.
bool keep_most_idle(Store& store, const Partition& part, const Forced& forced, uint64_t k, uint64_t seed,
                    uint64_t epoch, Selection& sel) {
  if (forced.gap == 0 || forced.count == 0 || forced.count < k) return false;
  const uint64_t stream = stream_key(seed, epoch, Purpose::Coverage);
  auto key = [&](uint64_t i, uint64_t g) {
    return key_if(forced(i), (uint64_t(forced.idle[i]) << 48) | (draw(stream, g) >> 16) | 1ull);
  };
  std::array<RadixBoundary, 1> bounds = topk_boundaries<1>(part, {k}, key, key);
  float* w = store.weight();
  write_settling(part, bounds, key, [w](uint64_t i, uint64_t g, uint64_t kk, const RankThreshold* t) {
    w[i] = static_cast<float>(within(kk, static_cast<int64_t>(g), t[0]));
  });
  sel.forced = k;
  return true;
}

// The soft rule's coin for global id g: half of draw(stream, g / 2), so ids 2j and 2j+1 share one
// draw (the single-process loop makes one draw per pair) on any rank layout.
inline uint32_t soft_coin(uint64_t stream, uint64_t g) {
  return static_cast<uint32_t>(draw(stream, g >> 1) >> ((g & 1) * 32));
}

template <class Score>
void select_soft(Store& store, const Partition& part, const SelectConfig& cfg, const Score& score, uint64_t seed,
                 uint64_t epoch, const Forced& forced, Selection& sel) {
  const uint64_t n = store.size();
  const SampleStats* stats = store.stats();
  float* w = store.weight();
  const SeenSummary summary = summarise(store, part, score);
  const double mean = summary.mean;
  sel.threshold = mean;
  sel.unseen = part.ids.global_n() - summary.seen;
  const double keep_prob = 1.0 - cfg.prune_ratio;
  // Forced samples (max_gap) are kept at weight 1 and are neither hard nor soft.
  auto is_hard = [&](uint64_t i) {
    const float s = score(stats[i]);
    return !(s < mean) & !forced(i);  // NaN (never seen): hard
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
      // costs more than the arithmetic): w = f + (1 - f) * (hard + (1 - hard) * kept * soft_weight),
      // on 0/1 values (f: forced in by max_gap).
      const float sw = soft_weight;
      const uint64_t below = keep_below;
      const double m = mean;
      const uint64_t stream = keep_stream;
      auto decide = [&](size_t i, uint32_t coin) {
        const float s = score(stats[i]);
        const uint32_t forced_i = static_cast<uint32_t>(forced(i));
        const uint32_t hard_i = static_cast<uint32_t>(!(s < m)) & (1u - forced_i);  // NaN (never seen): hard
        const float kept = static_cast<float>(static_cast<uint64_t>(coin) < below);
        const float hf = static_cast<float>(hard_i);
        const float ff = static_cast<float>(forced_i);
        w[i] = ff + (1.0f - ff) * (hf + (1.0f - hf) * kept * sw);
        h += hard_i;
      };
      if (part.ids.is_identity()) {
        size_t i = begin;  // blocks start at even ids, so pairs (2j, 2j+1) share one draw
        for (; i + 1 < end; i += 2) {
          const uint64_t r = draw(stream, i >> 1);
          decide(i, static_cast<uint32_t>(r));
          decide(i + 1, static_cast<uint32_t>(r >> 32));
        }
        if (i < end) decide(i, static_cast<uint32_t>(draw(stream, i >> 1)));
      } else {
        part.ids.each(begin, end, [&](uint64_t i, uint64_t g) { decide(i, soft_coin(stream, g)); });
      }
      hard[b] = h;
    });
    for (uint64_t h : hard) sel.above_threshold += h;
    sel.above_threshold = part.ranks.sum_one(sel.above_threshold);
    sel.forced = forced.count;
    return;
  }

  // Exact budget: the forced samples, all hard samples, plus exactly m = k - forced - hard of the
  // soft ones, uniformly, each weighted soft_count / m (the inverse of its inclusion probability).
  const uint64_t k = budget(cfg.prune_ratio, part.ids.global_n());
  if (keep_most_idle(store, part, forced, k, seed, epoch, sel)) return;
  const uint64_t room = k - forced.count;
  sel.forced = forced.count;
  const uint64_t tie_stream = stream_key(seed, epoch, Purpose::TieBreak);
  // Soft samples' keys: a coin; 0 (not eligible) for hard and forced ones. So the first histogram
  // pass counts the soft samples, and the hard ones are the rest: the budget left for soft samples
  // is known before the threshold narrows, with no pass of its own.
  auto soft_key = [&](uint64_t i, uint64_t g) {
    return key_if(!is_hard(i) & !forced(i), draw(keep_stream, g) | 1ull);
  };
  const uint64_t total = part.ids.global_n();
  uint64_t hard = 0;
  std::array<RadixBoundary, 1> pick = topk_boundaries<1>(part, [&](uint64_t soft) {
    hard = total - forced.count - soft;
    return std::array<uint64_t, 1>{hard > room ? 0 : room - hard};
  }, soft_key, soft_key, radix_plan_for(part));
  sel.above_threshold = hard;
  if (hard > room) {
    sel.budget_exceeded = true;
    auto best_key = [&](uint64_t i, uint64_t g) {
      const float s = score(stats[i]);
      return key_if(!(s < mean) & !forced(i), score_key(s, tie_stream, g));
    };
    std::array<RadixBoundary, 1> best = topk_boundaries<1>(part, {room}, best_key, best_key);
    write_settling(part, best, best_key, [&](uint64_t i, uint64_t g, uint64_t kk, const RankThreshold* t) {
      w[i] = static_cast<float>(forced(i) | within(kk, static_cast<int64_t>(g), t[0]));
    });
    return;
  }
  const uint64_t soft_count = total - hard - forced.count;
  const uint64_t m = room - hard;
  const float soft_weight = m > 0 ? static_cast<float>(static_cast<double>(soft_count) / static_cast<double>(m)) : 0.0f;
  // Key 0: hard or forced, kept at weight 1.
  write_settling(part, pick, soft_key, [&](uint64_t i, uint64_t g, uint64_t kk, const RankThreshold* t) {
    const float fixed = static_cast<float>(kk == 0);
    const float in = static_cast<float>(within(kk, static_cast<int64_t>(g), t[0]));
    w[i] = fixed + (1.0f - fixed) * in * soft_weight;
  });
}

template <class Score>
void select_topk(Store& store, const Partition& part, const SelectConfig& cfg, const Score& score, uint64_t seed,
                 uint64_t epoch, const Forced& forced, Selection& sel) {
  const uint64_t n = store.size();
  const SampleStats* stats = store.stats();
  float* w = store.weight();
  const uint64_t k = budget(cfg.prune_ratio, part.ids.global_n());
  auto count_unseen = [&](size_t begin, size_t end) {
    uint64_t u = 0;
    for (size_t i = begin; i < end; ++i) u += std::isnan(stats[i].loss);
    return u;
  };
  if (keep_most_idle(store, part, forced, k, seed, epoch, sel)) {
    sel.unseen = part.ranks.sum_one(sum_blocks<uint64_t>(n, count_unseen));
    return;
  }
  // Forced samples (max_gap) take their share of k first; the rule fills the rest.
  sel.forced = forced.count;
  const uint64_t room = k - forced.count;
  const uint64_t greedy_k = static_cast<uint64_t>(std::llround((1.0 - cfg.explore) * static_cast<double>(room)));
  const uint64_t tie_stream = stream_key(seed, epoch, Purpose::TieBreak);
  const uint64_t explore_stream = stream_key(seed, epoch, Purpose::Explore);
  // The greedy keys are computed once, in the first pass of the greedy threshold, and read by every
  // later pass instead of re-hashing; 0: not eligible. The last threshold is settled in the pass
  // that writes the weights.
  BigVector<uint64_t> keys(n);
  uint64_t* key = keys.data();
  auto stored_key = [key](uint64_t i, uint64_t) { return key[i]; };
  auto greedy_key = [&](uint64_t i, uint64_t g) {
    return key[i] = key_if(!forced(i), score_key(score(stats[i]), tie_stream, g));
  };
  // No explore share (ucb, emp topk): the greedy threshold is the last.
  const bool explores = room > greedy_k;
  if (!explores) {
    std::array<RadixBoundary, 1> bounds = topk_boundaries<1>(part, {greedy_k}, greedy_key, stored_key);
    write_settling(part, bounds, stored_key, [&](uint64_t i, uint64_t g, uint64_t kk, const RankThreshold* t) {
      w[i] = static_cast<float>(forced(i) | within(kk, static_cast<int64_t>(g), t[0]));
    });
  } else {
    RankThreshold greedy;
    greedy.none = true;
    if (greedy_k > 0) greedy = topk_threshold(part, greedy_k, greedy_key, stored_key, radix_plan_for(part));
    // Explore share: uniform among the rest: a coin for every sample that is neither forced nor a
    // greedy pick, 0 for those (both kept). They number N - forced - greedy_k, and the coins are
    // uniform, so the threshold needs no pass of its own (uniform_keys_boundary).
    auto explore_key = [&](uint64_t i, uint64_t g) {
      const bool taken = forced(i) | (greedy_k > 0 && within(key[i], static_cast<int64_t>(g), greedy));
      return key_if(!taken, draw(explore_stream, g) | 1ull);
    };
    const uint64_t others = part.ids.global_n() - forced.count - greedy_k;
    std::array<RadixBoundary, 1> bounds = {uniform_keys_boundary(part, room - greedy_k, others, explore_key)};
    write_settling(part, bounds, explore_key, [&](uint64_t i, uint64_t g, uint64_t kk, const RankThreshold* t) {
      w[i] = static_cast<float>((kk == 0) | within(kk, static_cast<int64_t>(g), t[0]));
    });
  }
  sel.unseen = part.ranks.sum_one(sum_blocks<uint64_t>(n, count_unseen));
}

template <class Score>
void select_weighted(Store& store, const Partition& part, const SelectConfig& cfg, const Score& score, uint64_t seed,
                     uint64_t epoch, const Forced& forced, Selection& sel) {
  const uint64_t n = store.size();
  const SampleStats* stats = store.stats();
  float* w = store.weight();
  const SeenSummary summary = summarise(store, part, score);
  sel.unseen = part.ids.global_n() - summary.seen;
  const uint64_t k = budget(cfg.prune_ratio, part.ids.global_n());
  if (keep_most_idle(store, part, forced, k, seed, epoch, sel)) return;
  sel.forced = forced.count;
  // Never-seen samples are drawn as likely as the highest-scoring seen one; forced samples are not
  // drawn (they are in, with probability 1 and weight 1).
  BigVector<double> sampling_weight(n);
  for_blocks(n, [&](size_t, size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      float s = score(stats[i]);
      if (std::isnan(s)) s = summary.max;
      const double sd = s > 0.0f && !forced(i) ? static_cast<double>(s) : 0.0;
      sampling_weight[i] = cfg.alpha == 1.0 ? sd : (cfg.alpha == 2.0 ? sd * sd : (sd > 0.0 ? std::pow(sd, cfg.alpha) : 0.0));
    }
  });
  // The draw's Horvitz-Thompson weights go straight into the store (select shuffles them after).
  weighted_marks(part, sampling_weight.data(), k - forced.count, seed, epoch, w);
  if (cfg.normalize) {
    // The drawn weights sum to the samples they stand for (N minus the forced ones), exactly over
    // all ranks (so every rank scales by the same factor).
    ExactSum total;
#pragma omp parallel num_threads(team_size())
    {
      ExactSum part_sum;  // exact, so the per-thread split does not change the total
#pragma omp for schedule(static)
      for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) part_sum.add(w[i]);
#pragma omp critical
      total.merge(part_sum);
    }
    total.normalise();
    if (part.ranks.active()) part.ranks.sum(total.words(), ExactSum::kWords);
    const double sum = total.value();
    if (sum > 0.0) {
      const double scale = static_cast<double>(part.ids.global_n() - forced.count) / sum;
      for_blocks(n, [&](size_t, size_t begin, size_t end) {
        for (size_t i = begin; i < end; ++i) w[i] = static_cast<float>(w[i] * scale);
      });
    }
  }
  if (forced.count > 0) {
    for_blocks(n, [&](size_t, size_t begin, size_t end) {
      for (size_t i = begin; i < end; ++i)
        if (forced(i)) w[i] = 1.0f;
    });
  }
}

// RS2 without replacement (Okanovic et al., ICLR 2024): each pass over the data walks a seeded
// permutation in chunks of k; a pass is ceil(N / k) epochs, and its last chunk wraps to the head of
// the same permutation (so it is exactly k, with no repeat inside the epoch), as RS2's reference
// sampler does; the next pass draws a new permutation. A permutation is the order of the keys
// draw(stream(seed, pass), id), so the chunk at positions [a, b) is "in the top b, not in the top
// a", found by the same radix selection as every top-k: no sort of N, and the same over ranks.
void select_sweep(Store& store, const Partition& part, const SelectConfig& cfg, uint64_t seed, uint64_t epoch) {
  const uint64_t n = store.size();
  float* w = store.weight();
  const uint64_t total = part.ids.global_n();
  const uint64_t k = budget(cfg.prune_ratio, total);
  if (k == 0) {
    for_blocks(n, [&](size_t, size_t begin, size_t end) { std::fill(w + begin, w + end, 0.0f); });
    return;
  }
  const uint64_t epochs_per_pass = (total + k - 1) / k;
  const uint64_t pass = epoch / epochs_per_pass;
  const uint64_t a = (epoch % epochs_per_pass) * k;  // the chunk's first position in the permutation
  const uint64_t b = a + k;
  const uint64_t stream = stream_key(seed, pass, Purpose::Sweep);
  auto key = [&](uint64_t, uint64_t g) { return draw(stream, g) | 1ull; };
  // Positions [0, a) and [0, b) (or [0, b - N) when the chunk wraps to [a, N) and [0, b - N)): two
  // thresholds over one key, sharing their histogram pass and settled in the pass that writes.
  const bool wraps = b > total;
  std::array<RadixBoundary, 2> bounds = {uniform_keys_boundary(part, a, total, key),
                                         uniform_keys_boundary(part, wraps ? b - total : b, total, key)};
  write_settling(part, bounds, key, [&](uint64_t i, uint64_t g, uint64_t kk, const RankThreshold* t) {
    const bool before_a = within(kk, static_cast<int64_t>(g), t[0]);
    const bool before_b = within(kk, static_cast<int64_t>(g), t[1]);
    w[i] = static_cast<float>(wraps ? (!before_a | before_b) : (before_b & !before_a));
  });
}

// SeTa (Zhou, Gao, Wang, CVPR 2025; read from github.com/mrazhou/SeTa, seta.py): a random subset of
// k samples, its scores grouped by 1-D k-means into `groups` clusters ordered easy -> hard, and a
// window of round(groups * window) clusters sliding one cluster per pruned epoch from the easiest to
// the hardest and back to the start (epoch 0: every cluster). Kept: the subset's members in the
// window, weight 1. The reference clusters with sklearn's KMeans (Lloyd's algorithm from k-means++);
// here the optimal 1-D clustering of a 2^14-bin histogram of the scores is computed exactly
// (kmeans.h; the histogram is summed over ranks, so every rank finds the same clusters): no sort of
// N, no random restarts, and never a worse local optimum.
// With exact_budget, the clusters are found over all samples and exactly k are kept: a uniform k of
// the window's members, or all of them topped up uniformly from outside the window.
constexpr int kSetaBins = 1 << 14;

template <class Score>
void select_seta(Store& store, const Partition& part, const SelectConfig& cfg, const Score& score, uint64_t seed,
                 uint64_t epoch, const Forced& forced, Selection& sel) {
  const uint64_t n = store.size();
  const SampleStats* stats = store.stats();
  float* w = store.weight();
  const uint64_t k = budget(cfg.prune_ratio, part.ids.global_n());
  const SeenSummary summary = summarise(store, part, score);
  sel.unseen = part.ids.global_n() - summary.seen;
  if (keep_most_idle(store, part, forced, k, seed, epoch, sel)) return;
  sel.forced = forced.count;
  const uint64_t room = k - forced.count;
  const uint64_t keep_stream = stream_key(seed, epoch, Purpose::Keep);
  const uint64_t window_stream = stream_key(seed, epoch, Purpose::Seta);
  // 1. The random subset (the reference's randperm prefix): the `room` non-forced samples with the
  //    largest draws. With exact_budget every non-forced sample is clustered.
  auto subset_key = [&](uint64_t i, uint64_t g) { return key_if(!forced(i), draw(keep_stream, g) | 1ull); };
  RankThreshold subset;
  subset.all = true;
  if (!cfg.exact_budget) subset = topk_threshold(part, room, subset_key);
  auto in_subset = [&](uint64_t i, uint64_t g) { return within(subset_key(i, g), static_cast<int64_t>(g), subset); };
  // Never-seen samples score as the hardest seen one (the reference starts every score at 3.0,
  // above typical losses).
  const float unseen_score = summary.seen > 0 ? summary.max : 0.0f;
  auto value = [&](uint64_t i) {
    const float s = score(stats[i]);
    return std::isnan(s) ? unseen_score : s;
  };
  // 2. Range, histogram, k-means.
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  {
    std::vector<double> mins(num_blocks(n), lo), maxs(num_blocks(n), hi);
    for_blocks(n, [&](size_t b, size_t begin, size_t end) {
      part.ids.each(begin, end, [&](uint64_t i, uint64_t g) {
        if (!in_subset(i, g)) return;
        const double v = value(i);
        mins[b] = std::min(mins[b], v);
        maxs[b] = std::max(maxs[b], v);
      });
    });
    for (double v : mins) lo = std::min(lo, v);
    for (double v : maxs) hi = std::max(hi, v);
    lo = -part.ranks.max_one(-lo);
    hi = part.ranks.max_one(hi);
  }
  const int groups = static_cast<int>(cfg.groups);
  const int window = std::max(1, static_cast<int>(std::nearbyint(groups * cfg.window)));
  const uint64_t start = epoch % static_cast<uint64_t>(groups - window + 1);
  const bool every_group = epoch == 0 || window >= groups;
  const bool spread = hi > lo;  // all scores equal: the reference chunks the subset instead
  std::vector<uint16_t> cluster;
  const double width = spread ? (hi - lo) / kSetaBins : 1.0;
  auto bin_of = [&](uint64_t i) {
    const double x = (value(i) - lo) / width;
    return static_cast<int>(std::min<double>(kSetaBins - 1, std::max(0.0, x)));
  };
  if (spread && !every_group) {
    std::vector<uint64_t> counts(kSetaBins, 0);
#pragma omp parallel num_threads(team_size())
    {
      std::vector<uint64_t> local(kSetaBins, 0);
#pragma omp for schedule(dynamic, 1)
      for (int64_t b = 0; b < static_cast<int64_t>(num_blocks(n)); ++b) {
        const uint64_t begin = static_cast<uint64_t>(b) * kBlock;
        const uint64_t end = std::min<uint64_t>(begin + kBlock, n);
        part.ids.each(begin, end, [&](uint64_t i, uint64_t g) {
          if (in_subset(i, g)) ++local[bin_of(i)];
        });
      }
#pragma omp critical
      for (int j = 0; j < kSetaBins; ++j) counts[j] += local[j];
    }
    part.ranks.sum_u64(counts.data(), counts.size());
    cluster = histogram_kmeans(counts, lo, hi, groups);
  }
  // 3. The window: clusters [start, start + window) of the ascending order. All scores equal: the
  //    same share of the subset, as positions [start, start + window) / groups of its random order.
  auto in_window = [&](uint64_t i) {
    if (every_group || !spread) return true;  // equal scores, exact budget: no cluster to prefer
    const int c = cluster[bin_of(i)];
    return c >= static_cast<int>(start) && c < static_cast<int>(start) + window;
  };
  if (!spread && !every_group && !cfg.exact_budget) {
    const uint64_t a = room * start / groups, b = room * (start + window) / groups;
    const RankThreshold head = topk_threshold(part, a, subset_key), upto = topk_threshold(part, b, subset_key);
    for_blocks(n, [&](size_t, size_t begin, size_t end) {
      part.ids.each(begin, end, [&](uint64_t i, uint64_t g) {
        const uint64_t key = subset_key(i, g);
        const bool in = within(key, static_cast<int64_t>(g), upto) && !within(key, static_cast<int64_t>(g), head);
        w[i] = forced(i) || in ? 1.0f : 0.0f;
      });
    });
    return;
  }
  if (!cfg.exact_budget) {
    for_blocks(n, [&](size_t, size_t begin, size_t end) {
      part.ids.each(begin, end, [&](uint64_t i, uint64_t g) {
        w[i] = forced(i) || (in_subset(i, g) && in_window(i)) ? 1.0f : 0.0f;
      });
    });
    return;
  }
  // Exact budget: a uniform `room` of the window's members (window first, then the rest).
  auto exact_key = [&](uint64_t i, uint64_t g) {
    if (forced(i)) return 0ull;
    const uint64_t coin = draw(window_stream, g) >> 1;
    return (in_window(i) ? (1ull << 63) : 0ull) | coin | 1ull;
  };
  const RankThreshold pick = topk_threshold(part, room, exact_key);
  for_blocks(n, [&](size_t, size_t begin, size_t end) {
    part.ids.each(begin, end, [&](uint64_t i, uint64_t g) {
      w[i] = forced(i) || within(exact_key(i, g), static_cast<int64_t>(g), pick) ? 1.0f : 0.0f;
    });
  });
}

// The kept slots in shuffled order (a stream of this rank's own, `part.salt`), as global ids; with
// `count`, each kept slot's times_selected goes up by one.
Selection current_selection_counting(Store& store, const Partition& part, uint64_t seed, uint64_t epoch, bool count,
                                     Selection sel) {
  uint64_t key = stream_key(seed, epoch, Purpose::Shuffle);
  if (part.salt != 0) key = splitmix64(key ^ part.salt);
  const SelectionCounts counts = count ? SelectionCounts{store.times_selected(), store.idle()} : SelectionCounts{};
  gather_shuffled(store.weight(), store.size(), key, counts, sel.ids, sel.weights);
  if (!part.ids.is_identity()) {
    int64_t* ids = sel.ids.data();
    for_blocks(sel.ids.size(), [&](size_t, size_t begin, size_t end) {
      for (size_t j = begin; j < end; ++j) ids[j] = static_cast<int64_t>(part.ids.global(static_cast<uint64_t>(ids[j])));
    });
  }
  return sel;
}

}  // namespace

Selection select_with_team(Store& store, const Partition& part, const SelectConfig& cfg, uint64_t seed,
                           uint64_t epoch, bool count);

Selection select(Store& store, const Partition& part, const SelectConfig& cfg, uint64_t seed, uint64_t epoch,
                 bool count) {
  if (part.ids.local_n() != store.size())
    throw std::invalid_argument("select: the id map has " + std::to_string(part.ids.local_n()) + " slots, the store " +
                                std::to_string(store.size()));
  if (cfg.rule == Rule::Seta && (cfg.groups < 1 || cfg.groups > 1024 || !(cfg.window > 0.0 && cfg.window <= 1.0)))
    throw std::invalid_argument("select: seta needs 1 <= groups <= 1024 and 0 < window <= 1");
  // One thread or all, whichever this process measured faster for this rule at this size.
  static PathClock clocks[8][33];
  static const bool threads_first = [] {  // a job selects once an epoch: its first selects use every core
    for (auto& row : clocks)
      for (PathClock& c : row) c.threads_first = true;
    return true;
  }();
  (void)threads_first;
  PathClock& clock = clocks[static_cast<int>(cfg.rule) & 7][log2_floor(store.size()) / 2];
  return with_measured_threads(clock, 1.0, [&] { return select_with_team(store, part, cfg, seed, epoch, count); });
}

Selection select_with_team(Store& store, const Partition& part, const SelectConfig& cfg, uint64_t seed,
                           uint64_t epoch, bool count) {
  Selection sel;
  const Forced forced = cfg.rule == Rule::Full || cfg.rule == Rule::Sweep ? Forced{} : forced_set(store, part, cfg);
  switch (cfg.rule) {
    case Rule::Full:
      select_full(store);
      break;
    case Rule::Soft:
      with_score(cfg, [&](const auto& score) { select_soft(store, part, cfg, score, seed, epoch, forced, sel); });
      break;
    case Rule::TopK:
      with_score(cfg, [&](const auto& score) { select_topk(store, part, cfg, score, seed, epoch, forced, sel); });
      break;
    case Rule::Weighted:
      with_score(cfg, [&](const auto& score) { select_weighted(store, part, cfg, score, seed, epoch, forced, sel); });
      break;
    case Rule::Sweep:
      select_sweep(store, part, cfg, seed, epoch);
      break;
    case Rule::Seta:
      with_score(cfg, [&](const auto& score) { select_seta(store, part, cfg, score, seed, epoch, forced, sel); });
      break;
  }
  return current_selection_counting(store, part, seed, epoch, count, sel);
}

Selection select(Store& store, const SelectConfig& cfg, uint64_t seed, uint64_t epoch, bool count) {
  return select(store, Partition::whole(store.size()), cfg, seed, epoch, count);
}

Selection current_selection(Store& store, const Partition& part, uint64_t seed, uint64_t epoch) {
  return current_selection_counting(store, part, seed, epoch, false, Selection{});
}

Selection current_selection(Store& store, uint64_t seed, uint64_t epoch) {
  return current_selection(store, Partition::whole(store.size()), seed, epoch);
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
