// The rules that rank by score: top-k (with an explore share) and the weighted draw.
#include "selection/rules.h"

#include <array>

namespace emp {
namespace rules {
namespace {

template <class Score>
void select_topk_by(Store& store, const Partition& part, const SelectConfig& cfg, const Score& score, uint64_t seed,
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
void select_weighted_by(Store& store, const Partition& part, const SelectConfig& cfg, const Score& score, uint64_t seed,
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

}  // namespace

void select_topk(Store& store, const Partition& part, const SelectConfig& cfg, uint64_t seed, uint64_t epoch,
                 const Forced& forced, Selection& sel) {
  with_score(cfg, [&](const auto& score) { select_topk_by(store, part, cfg, score, seed, epoch, forced, sel); });
}

void select_weighted(Store& store, const Partition& part, const SelectConfig& cfg, uint64_t seed, uint64_t epoch,
                     const Forced& forced, Selection& sel) {
  with_score(cfg, [&](const auto& score) { select_weighted_by(store, part, cfg, score, seed, epoch, forced, sel); });
}

}  // namespace rules
}  // namespace emp
