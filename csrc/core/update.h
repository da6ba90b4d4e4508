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

// The store's update log (update_log.h) holds up to this many entries, 4 MiB; a call of a quarter
// of it or more is applied at once.
constexpr size_t kUpdateLogEntries = size_t(1) << 18;

// Record per-sample losses (and memory terms) for `ids`. Validates first (ids in range, finite
// values): a bad entry is reported and nothing is recorded. A call of fewer than 2^16 ids goes to
// the store's log (update_log.h) and reaches the records at the next settle(); a larger one is
// applied at once. Either way duplicate ids are applied in call order, so the last write wins for
// loss and memory and the running mean/variance see every value, and the records end up
// bit-identical for any thread count and any split into calls.
UpdateResult update(Store& store, const int64_t* ids, const float* loss, const float* memory, size_t count,
                    float ema_decay, bool skip_nonfinite);

// Apply the store's logged updates to its records, in call order. Everything that reads a record
// (a select, scores, a save, the arrays handed to Python) settles first; the log also settles
// itself when it is full, and a mapped store settles when it is closed.
void settle(Store& store);

}  // namespace emp
