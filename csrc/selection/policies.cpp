// select(): validates the call, picks one thread or all, runs the rule (rule_*.cpp), and gathers the
// kept ids in shuffled order.
#include "selection/policies.h"

#include <array>
#include <stdexcept>
#include <string>

#include "core/path_clock.h"
#include "selection/rules.h"

namespace emp {
namespace rules {

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

}  // namespace rules

namespace {

using rules::Forced;

// Which of the kinds of selection a config is, for its clock (see select()).
constexpr int kRules = 6, kScores = 4, kOptionSets = 8, kSelectKinds = kRules * kScores * kOptionSets;
int select_kind(const SelectConfig& cfg) {
  const int rule = static_cast<int>(cfg.rule), score = static_cast<int>(cfg.score);
  if (rule < 0 || rule >= kRules || score < 0 || score >= kScores)
    throw std::invalid_argument("select: rule " + std::to_string(rule) + " or score " + std::to_string(score) +
                                " is not one of the known kinds");
  const int options = (cfg.explore > 0.0 ? 1 : 0) | (cfg.exact_budget ? 2 : 0) | (cfg.max_gap > 0 ? 4 : 0);
  return (rule * kScores + score) * kOptionSets + options;
}

void select_full(Store& store) {
  float* w = store.weight();
  for_blocks(store.size(), [&](size_t, size_t begin, size_t end) { std::fill(w + begin, w + end, 1.0f); });
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
  // One thread or all, whichever this process measured faster for this kind of selection at this
  // size: rule, score and options (explore share, exact budget, max_gap) change a call's passes, so
  // each kind has a clock of its own.
  struct SelectClock : PathClock {
    SelectClock() { threads_first = true; }  // a job selects once an epoch: its first selects use every core
  };
  static SelectClock clocks[kSelectKinds][33];
  PathClock& clock = clocks[select_kind(cfg)][log2_floor(store.size()) / 2];
  return with_measured_threads(clock, 1.0, [&] { return select_with_team(store, part, cfg, seed, epoch, count); });
}

Selection select_with_team(Store& store, const Partition& part, const SelectConfig& cfg, uint64_t seed,
                           uint64_t epoch, bool count) {
  Selection sel;
  const Forced forced = cfg.rule == Rule::Full || cfg.rule == Rule::Sweep ? Forced{} : rules::forced_set(store, part, cfg);
  switch (cfg.rule) {
    case Rule::Full:
      select_full(store);
      break;
    case Rule::Soft:
      rules::select_soft(store, part, cfg, seed, epoch, forced, sel);
      break;
    case Rule::TopK:
      rules::select_topk(store, part, cfg, seed, epoch, forced, sel);
      break;
    case Rule::Weighted:
      rules::select_weighted(store, part, cfg, seed, epoch, forced, sel);
      break;
    case Rule::Sweep:
      rules::select_sweep(store, part, cfg, seed, epoch);
      break;
    case Rule::Seta:
      rules::select_seta(store, part, cfg, seed, epoch, forced, sel);
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
  rules::with_score(cfg, [&](const auto& score) {
    for_blocks(store.size(), [&](size_t, size_t begin, size_t end) {
      for (size_t i = begin; i < end; ++i) out[i] = score(stats[i]);
    });
  });
}

}  // namespace emp
