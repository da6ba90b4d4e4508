// The per-step update of the store's records: what a training step calls with its batch's losses.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/store.h"

namespace emp {

// Result of validating one update call.
struct UpdateResult {
  int64_t bad_index = -1;   // first offending position, -1 when all good
  int error = 0;            // 0 ok, 1 id out of range, 2 non-finite loss, 3 non-finite memory
  uint64_t skipped = 0;     // entries skipped with nonfinite="skip"
};

// The update's one-thread-or-all clock for calls of `count` ids on a store of `n` samples (tests,
// benchmarks and diagnosis): each way's cost per id (seconds; 0: not measured yet), the explore
// ratio, and the calls that ran each way with their total seconds.
struct ClockState {
  double cost[2] = {0.0, 0.0};
  double explore_ratio = 0.0;
  uint64_t calls[2] = {0, 0};
  double seconds[2] = {0.0, 0.0};
};
ClockState update_clock_state(size_t count, uint64_t n);

// Write per-sample losses (and memory terms) for `ids`. Validates first (ids in range, finite
// values). Duplicate ids: applied in call order, so the last write wins for loss and memory and the
// running mean/variance see every value. Deterministic for any thread count: each thread owns a
// contiguous id range and walks the whole call in order.
UpdateResult update(Store& store, const int64_t* ids, const float* loss, const float* memory, size_t count,
                    float ema_decay, bool skip_nonfinite);

}  // namespace emp
