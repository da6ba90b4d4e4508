// Top-k thresholds by radix selection: the one algorithm behind every top-k of the CPU and the
// GPU path. Only the two data passes differ (an OpenMP loop on the CPU, kernels on the GPU); the
// driver that narrows the key prefix digit by digit and settles the boundary lives here, so the
// GPU reuses the logic the CPU tests exercise, and both find the same threshold by construction.
#pragma once
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/rng.h"  // EMP_HD

namespace emp {

// Order used by every top-k: a larger key wins; equal keys go to the smaller id. Key 0 means
// "not eligible". The threshold is the k-th best (key, id) pair.
struct RankThreshold {
  uint64_t key = 0;
  int64_t id = -1;
  bool all = false;   // fewer than k eligible: every eligible item is in (no threshold exists)
  bool none = false;  // k == 0
  uint64_t eligible = 0;
};

EMP_HD inline bool within(uint64_t key, int64_t id, const RankThreshold& t) {
  if (key == 0 || t.none) return false;
  if (t.all) return true;
  return key > t.key || (key == t.key && id <= t.id);
}

struct RankCandidate {
  uint64_t key;
  int64_t id;
};

struct RadixPlan {
  int digit_bits;         // key bits examined per data pass, 1..20 (the histogram has 2^digit_bits bins)
  uint64_t gather_limit;  // gather the boundary bin (and finish on the host) once it holds at most this many keys
};

// The k-th best (key, id) among the eligible items, found by narrowing a key prefix one digit at
// a time from the top bit, then gathering the few keys left in the boundary bin and ordering them
// (O(passes * n) work, no sort of n). The backend supplies the data passes:
//   histogram(prefix, mask, shift, bits, counts): counts[d] = number of eligible keys (key != 0)
//     with (key & mask) == prefix and (key >> shift) & (2^bits - 1) == d; counts arrive zeroed.
//   gather(prefix, mask, expected): every eligible (key, id) with (key & mask) == prefix, any order
//     (`expected` is how many the last histogram counted).
// The first histogram sees every eligible key (prefix and mask 0; every later pass has a mask), so
// `eligible` is filled for any k, k = 0 included.
template <class Histogram, class Gather>
RankThreshold radix_threshold(uint64_t k, const RadixPlan& plan, Histogram&& histogram, Gather&& gather) {
  if (plan.digit_bits < 1 || plan.digit_bits > 20) throw std::invalid_argument("radix_threshold: digit_bits must be 1..20");
  RankThreshold t;
  uint64_t prefix = 0, mask = 0;
  uint64_t need = k;  // rank wanted among the keys that match the prefix
  int shift = 64;
  std::vector<uint64_t> counts;
  for (bool first = true;; first = false) {
    const int bits = std::min(plan.digit_bits, shift);
    shift -= bits;
    counts.assign(size_t(1) << bits, 0);
    histogram(prefix, mask, shift, bits, counts.data());
    if (first) {
      for (uint64_t c : counts) t.eligible += c;
      if (k == 0) {
        t.none = true;
        return t;
      }
      if (t.eligible < k) {
        t.all = true;
        return t;
      }
    }
    // The boundary bin: walk down from the largest digit until `need` keys are covered.
    uint64_t above = 0;
    size_t bin = counts.size();
    while (bin-- > 0) {
      if (above + counts[bin] >= need) break;
      above += counts[bin];
    }
    if (bin >= counts.size())  // the counts of this pass do not add up to those of the last
      throw std::logic_error("radix_threshold: inconsistent histogram (" + std::to_string(above) + " keys under the prefix, rank " +
                             std::to_string(need) + " wanted)");
    need -= above;  // 1..counts[bin]
    prefix |= static_cast<uint64_t>(bin) << shift;
    mask |= ((uint64_t(1) << bits) - 1) << shift;
    if (counts[bin] > plan.gather_limit && shift > 0) continue;

    std::vector<RankCandidate> cand = gather(prefix, mask, counts[bin]);
    if (cand.size() != counts[bin])
      throw std::logic_error("radix_threshold: gathered " + std::to_string(cand.size()) + " keys, the histogram counted " +
                             std::to_string(counts[bin]));
    // (key, id) pairs are unique, so the nth element does not depend on the gather order.
    auto better = [](const RankCandidate& a, const RankCandidate& b) {
      return a.key > b.key || (a.key == b.key && a.id < b.id);
    };
    std::nth_element(cand.begin(), cand.begin() + static_cast<int64_t>(need - 1), cand.end(), better);
    t.key = cand[need - 1].key;
    t.id = cand[need - 1].id;
    return t;
  }
}

}  // namespace emp
