// The per-step update: validation of a call, then its entries appended to the store's log
// (update_log.h), or applied to the records at once when the call is large; the log is applied in
// one pass, on one thread or all as its clock measured faster.
#include "core/update.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <stdexcept>

#include "core/path_clock.h"

namespace emp {

namespace {

// The threaded update pays only where its fork-join costs less than the scattered writes it spreads,
// which depends on the call's size and the store's size, and on whether the other threads find a
// free core: each (call size, store size) class keeps a PathClock (core/path_clock.h) of time per id.
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

// Where an entry's memory term comes from: none given, given (finite, checked), or the log's (NaN:
// that entry came without one, and the record keeps its own).
enum class Memory { None, Given, Logged };

// Applies the ids that fall in [lo, hi), in call order. Each id's record is one cache line
// missed at random, so the record kPrefetch ids ahead is requested first: the walk is bound by how
// many misses are in flight, and 32 ahead keeps the memory system busy at every store size measured
// (benchmarks/sampling_throughput.py).
// A direct call's `ids`, `loss` and `memory` are the caller's arrays, read without the GIL: another
// thread may change them after the validation pass. So each value is read once, here, and checked
// where it is used; a changed id can then only be skipped, never written out of bounds.
template <Memory M>
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
    const float m = M == Memory::None ? 0.0f : in.memory[j];
    // Skipped in validation (or changed by the caller since); a logged memory may be NaN (none given).
    if (!std::isfinite(x) || (M == Memory::Given && !std::isfinite(m)) || (M == Memory::Logged && std::isinf(m)))
      continue;
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
    if (M == Memory::Given || (M == Memory::Logged && !std::isnan(m))) s.memory = m;
  }
}

// An update class runs often, or (applying a full log) every 64 calls or more at a few ms each:
// three measured calls of each way cost little and keep one call under load from deciding.
struct UpdateClock : PathClock {
  UpdateClock() { min_measured = 3; }
};

PathClock& update_clock(size_t count, uint64_t n) {
  static UpdateClock clocks[64][33];
  return clocks[log2_floor(count)][log2_floor(n) / 2];
}

// Writes `in` into the store's records, on one thread or all as the clock of `clock_count`-id calls
// measured faster. Each thread owns a contiguous id range and walks all of `in` in order: no races,
// and duplicates are applied in call order whatever the thread count (so both ways agree exactly).
void apply(Store& store, const UpdateInputs& in, Memory kind, size_t clock_count) {
  SampleStats* stats = store.stats();
  const int64_t n = static_cast<int64_t>(store.size());
  auto walk = [&](int64_t lo, int64_t hi) {
    if (kind == Memory::Given)
      apply_ids<Memory::Given>(stats, in, lo, hi);
    else if (kind == Memory::Logged)
      apply_ids<Memory::Logged>(stats, in, lo, hi);
    else
      apply_ids<Memory::None>(stats, in, lo, hi);
  };
  if (in.count < kMinThreadedUpdate || max_threads() <= 1) {
    walk(0, n);
    return;
  }
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
  with_measured_threads(update_clock(clock_count, static_cast<uint64_t>(n)), static_cast<double>(in.count), run);
}

// settle() with the log's lock held.
void settle_locked(Store& store) {
  UpdateLog& log = store.pending();
  if (log.empty()) return;
  const UpdateInputs in{log.ids.data(), log.loss.data(), log.memory.data(), log.size(), 1.0f - log.ema_decay,
                        log.ema_decay};
  // Every application of the log, full or not, shares the full log's clock: a log costs about the
  // same per entry at any length worth threads, and the partial ones (a read before the log is
  // full: once an epoch) are too few to teach a clock of their own.
  apply(store, in, Memory::Logged, kUpdateLogEntries);
  log.clear();
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

  const UpdateInputs in{ids, loss, memory, count, 1.0f - ema_decay, ema_decay};
  UpdateLog& log = store.pending();
  const std::lock_guard<std::mutex> hold(*log.lock);
  if (count >= kUpdateLogEntries / 4) {  // already one warm pass of its own
    settle_locked(store);
    apply(store, in, memory != nullptr ? Memory::Given : Memory::None, count);
    return result;
  }
  if (!log.empty() && (log.ema_decay != ema_decay || log.size() + count > kUpdateLogEntries)) settle_locked(store);
  if (log.ids.capacity() < kUpdateLogEntries) {
    log.ids.reserve(kUpdateLogEntries);
    log.loss.reserve(kUpdateLogEntries);
    log.memory.reserve(kUpdateLogEntries);
  }
  log.ema_decay = ema_decay;
  const float none = std::numeric_limits<float>::quiet_NaN();
  if (result.skipped == 0) {
    // Copied as they are: apply_ids checks every id and value again, so an entry the caller changed
    // since validation is skipped there.
    log.ids.insert(log.ids.end(), ids, ids + count);
    log.loss.insert(log.loss.end(), loss, loss + count);
    if (memory != nullptr)
      log.memory.insert(log.memory.end(), memory, memory + count);
    else
      log.memory.insert(log.memory.end(), count, none);
  } else {
    for (size_t j = 0; j < count; ++j) {
      const float x = loss[j];
      const float m = memory != nullptr ? memory[j] : none;
      if (!std::isfinite(x) || (memory != nullptr && !std::isfinite(m))) continue;  // skipped
      log.ids.push_back(ids[j]);
      log.loss.push_back(x);
      log.memory.push_back(m);
    }
  }
  if (log.size() >= kUpdateLogEntries) settle_locked(store);
  return result;
}

void settle(Store& store) {
  const std::lock_guard<std::mutex> hold(*store.pending().lock);
  settle_locked(store);
}

}  // namespace emp
