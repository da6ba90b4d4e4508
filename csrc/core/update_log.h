// Updates a store has accepted but not yet written into its records.
//
// A training step's update writes one record per id at random, and every record must be read first
// (the running mean and variance need the old values). Called once a step, after the forward and
// backward pass have left the caches cold, those scattered reads cost more than the step's other
// writes together (benchmarks/update_calls.py). So a step's validated entries are appended here,
// which is sequential, and the store applies the whole log in one warm pass when it is full and
// before anything reads a record (update.h: settle).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace emp {

struct UpdateLog {
  // Entries in call order; memory is NaN where the call gave none (the record keeps its own).
  std::vector<int64_t> ids;
  std::vector<float> loss;
  std::vector<float> memory;
  float ema_decay = 0.0f;  // the decay every entry was given (a call with another applies the log first)
  // Held by update() and settle(): calls from several threads (the GIL is released) take turns.
  std::unique_ptr<std::mutex> lock = std::make_unique<std::mutex>();

  size_t size() const { return ids.size(); }
  bool empty() const { return ids.empty(); }
  void clear() {
    ids.clear();
    loss.clear();
    memory.clear();
  }
};

}  // namespace emp
