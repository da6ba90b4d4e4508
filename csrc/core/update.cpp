// The per-step update: validation of a call, then its ids applied to the store's records, on one
// thread or all as the call's clock measured faster.
#include "core/update.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "core/parallel.h"

namespace emp {

namespace {

// The threaded update pays only where its fork-join costs less than the scattered writes it spreads,
// which depends on the call's size and the store's size, and on whether the other threads find a
// free core: each (call size, store size) class keeps a PathClock (core/parallel.h) of time per id.
constexpr size_t kMinThreadedUpdate = 4096;

// One update call's inputs: the caller's arrays and the running mean/variance weights.
struct UpdateInputs {
  const int64_t* ids;
  const float* loss;
  const float* memory;  // nullptr: no memory terms
  size_t count;
  float alpha;          // 1 - ema_decay
  float ema_decay;
};

// Applies the call's ids that fall in [lo, hi), in call order. Each id's record is one cache line
// missed at random, so the record kPrefetch ids ahead is requested first: the walk is bound by how
// many misses are in flight, and 32 ahead keeps the memory system busy at every store size measured
// (benchmarks/sampling_throughput.py).
// `ids`, `loss` and `memory` are the caller's arrays, read without the GIL: another thread may
// change them after the validation pass. So each value is read once, here, and checked where it is
// used; a changed id can then only be skipped, never written out of bounds.
template <bool HasMemory>
void apply_ids(SampleStats* stats, const UpdateInputs& in, int64_t lo, int64_t hi) {
  constexpr size_t kPrefetch = 32;
  // Offsets from lo are unsigned: one compare bounds an id on both sides, and any id wraps without
  // overflow. (The prefetch is written out in the loops: GCC 12 drops a __builtin_prefetch whose
  // address comes from a lambda called inside another lambda.)
  const uint64_t span = static_cast<uint64_t>(hi - lo);
  const uint64_t base = static_cast<uint64_t>(lo);
  SampleStats* records = stats + lo;
  const size_t first = std::min(kPrefetch, in.count);
  for (size_t j = 0; j < first; ++j) {
    const uint64_t ahead = static_cast<uint64_t>(in.ids[j]) - base;
    if (ahead < span) __builtin_prefetch(records + ahead, 1);
  }
  for (size_t j = 0; j < in.count; ++j) {
    if (j + kPrefetch < in.count) {
      const uint64_t ahead = static_cast<uint64_t>(in.ids[j + kPrefetch]) - base;
      if (ahead < span) __builtin_prefetch(records + ahead, 1);
    }
    const uint64_t offset = static_cast<uint64_t>(in.ids[j]) - base;
    if (offset >= span) continue;
    const float x = in.loss[j];
    const float m = HasMemory ? in.memory[j] : 0.0f;
    if (!std::isfinite(x) || (HasMemory && !std::isfinite(m))) continue;  // skipped in validation
    SampleStats& s = records[offset];
    const float mean = s.loss_mean;
    if (std::isnan(mean)) {
      s.loss_mean = x;
      s.loss_var = 0.0f;
    } else {
      // Exponentially weighted mean and variance (West 1979 / Finch 2009).
      const float d = x - mean;
      s.loss_mean = mean + in.alpha * d;
      s.loss_var = in.ema_decay * (s.loss_var + in.alpha * d * d);
    }
    s.loss = x;
    if (HasMemory) s.memory = m;
  }
}

PathClock& update_clock(size_t count, uint64_t n) {
  static PathClock clocks[64][33];
  return clocks[log2_floor(count)][log2_floor(n) / 2];
}

}  // namespace

ClockState update_clock_state(size_t count, uint64_t n) {
  const PathClock& clock = update_clock(count, n);
  ClockState state;
  for (int way = 0; way < 2; ++way) {
    state.cost[way] = clock.cost(way);
    state.calls[way] = clock.calls[way].load(std::memory_order_relaxed);
    state.seconds[way] = clock.total[way].load(std::memory_order_relaxed);
  }
  state.explore_ratio = clock.explore_ratio.load(std::memory_order_relaxed);
  return state;
}

UpdateResult update(Store& store, const int64_t* ids, const float* loss, const float* memory, size_t count,
                    float ema_decay, bool skip_nonfinite) {
  UpdateResult result;
  if (store.readonly()) throw std::runtime_error("this store was opened read-only");
  const int64_t n = static_cast<int64_t>(store.size());
  // Validation pass: one sequential read of the inputs.
  for (size_t j = 0; j < count; ++j) {
    if (ids[j] < 0 || ids[j] >= n) {
      result.bad_index = static_cast<int64_t>(j);
      result.error = 1;
      return result;
    }
    const bool bad_loss = !std::isfinite(loss[j]);
    const bool bad_mem = memory != nullptr && !std::isfinite(memory[j]);
    if (bad_loss || bad_mem) {
      if (skip_nonfinite) {
        ++result.skipped;
        continue;
      }
      result.bad_index = static_cast<int64_t>(j);
      result.error = bad_loss ? 2 : 3;
      return result;
    }
  }

  SampleStats* stats = store.stats();
  const UpdateInputs in{ids, loss, memory, count, 1.0f - ema_decay, ema_decay};
  auto walk = [&](int64_t lo, int64_t hi) {
    if (memory != nullptr)
      apply_ids<true>(stats, in, lo, hi);
    else
      apply_ids<false>(stats, in, lo, hi);
  };
  if (count < kMinThreadedUpdate || max_threads() <= 1) {
    walk(0, n);
    return result;
  }
  // Each thread owns a contiguous id range and walks the whole call in order: no races, and
  // duplicates are applied in call order whatever the thread count (so both ways agree exactly).
  auto run = [&] {
    const int team = team_size();
    if (team <= 1) {
      walk(0, n);
      return 0;
    }
#pragma omp parallel num_threads(team)
    {
#ifdef _OPENMP
      const int t = omp_get_thread_num();
      const int nt = omp_get_num_threads();
#else
      const int t = 0, nt = 1;
#endif
      const int64_t lo = n / nt * t + std::min<int64_t>(t, n % nt);
      walk(lo, lo + n / nt + (t < n % nt ? 1 : 0));
    }
    return 0;
  };
  with_measured_threads(update_clock(count, static_cast<uint64_t>(n)), static_cast<double>(count), run);
  return result;
}

}  // namespace emp
