// The soft rule (InfoBatch): samples scoring at or above the mean are kept; the rest by a coin.
#include "selection/rules.h"

#include <array>

namespace emp {
namespace rules {
namespace {

template <class Score>
void select_soft_by(Store& store, const Partition& part, const SelectConfig& cfg, const Score& score, uint64_t seed,
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

}  // namespace

void select_soft(Store& store, const Partition& part, const SelectConfig& cfg, uint64_t seed, uint64_t epoch,
                 const Forced& forced, Selection& sel) {
  with_score(cfg, [&](const auto& score) { select_soft_by(store, part, cfg, score, seed, epoch, forced, sel); });
}

}  // namespace rules
}  // namespace emp
