// SeTa: a random subset, k-means of its scores, and a window of clusters sliding easy -> hard.
#include "selection/rules.h"

#include "selection/kmeans.h"

namespace emp {
namespace rules {
namespace {

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
void select_seta_by(Store& store, const Partition& part, const SelectConfig& cfg, const Score& score, uint64_t seed,
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

}  // namespace

void select_seta(Store& store, const Partition& part, const SelectConfig& cfg, uint64_t seed, uint64_t epoch,
                 const Forced& forced, Selection& sel) {
  with_score(cfg, [&](const auto& score) { select_seta_by(store, part, cfg, score, seed, epoch, forced, sel); });
}

}  // namespace rules
}  // namespace emp
