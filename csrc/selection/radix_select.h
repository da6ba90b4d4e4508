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

// Branch-free: inside a selection pass the answer is a coin flip per item for random keys, and a
// mispredicted branch per item costs more than the comparisons.
EMP_HD inline bool within(uint64_t key, int64_t id, const RankThreshold& t) {
  const bool beats = (key > t.key) | ((key == t.key) & (id <= t.id));
  return (key != 0) & !t.none & (t.all | beats);
}

// `key` when the item is eligible, else 0. Branch-free: eligibility is a coin flip per item for most
// rules (hard or soft, kept by the greedy share or not), and a mispredicted branch per item costs
// more than the hash it would skip.
EMP_HD inline uint64_t key_if(bool eligible, uint64_t key) { return key & (uint64_t(0) - static_cast<uint64_t>(eligible)); }

struct RankCandidate {
  uint64_t key;
  int64_t id;
};

struct RadixPlan {
  int digit_bits;         // key bits examined per data pass, 1..20 (the histogram has 2^digit_bits bins)
  uint64_t gather_limit;  // gather the boundary bin (and finish on the host) once it holds at most this many keys
};

// Where the k-th best (key, id) lies once the histogram passes are done: in the boundary bin, the
// keys in [lo, hi] (a radix bin: those with (key & mask) == prefix), at rank `need` among them. Keys
// above the bin are in, keys below are out, whatever the threshold inside the bin turns out to be.
// A predicted boundary is a window the keys' law makes all but certain to hold the k-th best
// (uniform_keys_boundary in sampling.h): how many keys lie above it, and so `need`, is counted by
// the pass that settles it.
struct RadixBoundary {
  RankThreshold result;  // all, none and eligible from the first pass; key and id once settled
  bool settled = false;  // result is final: k == 0, fewer than k eligible, or the bin was settled
  bool predicted = false;
  uint64_t k = 0;        // the rank wanted among all eligible keys
  uint64_t prefix = 0, mask = 0;
  uint64_t lo = 0, hi = 0;
  uint64_t need = 0;     // 1..in_bin
  uint64_t in_bin = 0;   // eligible keys in the bin
  int shift = 64;        // key bits below the prefix

  // Whether `key` is eligible and in the bin (so only the settled threshold can decide it).
  EMP_HD bool holds(uint64_t key) const { return !settled & (key != 0) & (key >= lo) & (key <= hi); }
  // A threshold that decides every key outside the bin as the settled one will: the bin's lowest
  // key, with an id below every id.
  RankThreshold provisional() const {
    if (settled) return result;
    RankThreshold t = result;
    t.key = lo;
    t.id = -1;
    return t;
  }
};

// A histogram has 2^digit_bits bins: 1..20 bits.
inline void check_radix_plan(const RadixPlan& plan) {
  if (plan.digit_bits < 1 || plan.digit_bits > 20) throw std::invalid_argument("radix_threshold: digit_bits must be 1..20");
}

// Digit width and position of the next histogram of a boundary still narrowing.
inline int radix_next_bits(const RadixBoundary& b, const RadixPlan& plan) { return std::min(plan.digit_bits, b.shift); }

// Takes the histogram of the next digit below the prefix (counts[d] for d < 2^bits). Returns true
// when the boundary needs no further histogram: settled (first pass: k == 0 or too few eligible), or
// its bin holds at most the plan's gather limit, or no key bits are left.
inline bool radix_narrow(RadixBoundary& b, uint64_t k, const RadixPlan& plan, const std::vector<uint64_t>& counts) {
  const int bits = radix_next_bits(b, plan);
  const bool first = b.mask == 0;
  if (first) {
    b.need = k;
    b.result.eligible = 0;
    for (uint64_t c : counts) b.result.eligible += c;
    if (k == 0 || b.result.eligible < k) {
      b.result.none = k == 0;
      b.result.all = k != 0;
      b.settled = true;
      return true;
    }
  }
  b.shift -= bits;
  // The boundary bin: walk down from the largest digit until `need` keys are covered.
  uint64_t above = 0;
  size_t bin = counts.size();
  while (bin-- > 0) {
    if (above + counts[bin] >= b.need) break;
    above += counts[bin];
  }
  if (bin >= counts.size())  // the counts of this pass do not add up to those of the last
    throw std::logic_error("radix_threshold: inconsistent histogram (" + std::to_string(above) + " keys under the prefix, rank " +
                           std::to_string(b.need) + " wanted)");
  b.need -= above;  // 1..counts[bin]
  b.prefix |= static_cast<uint64_t>(bin) << b.shift;
  b.mask |= ((uint64_t(1) << bits) - 1) << b.shift;
  b.lo = b.prefix;
  b.hi = b.prefix | ~b.mask;
  b.in_bin = counts[bin];
  return b.in_bin <= plan.gather_limit || b.shift == 0;
}

// Narrows a boundary to a gatherable bin: histogram(prefix, mask, shift, bits, counts) as in
// radix_threshold. `first_counts`, when given, is the first histogram already made (shared by
// several ranks k over the same keys).
template <class Histogram>
RadixBoundary radix_boundary(uint64_t k, const RadixPlan& plan, Histogram&& histogram,
                             const std::vector<uint64_t>* first_counts = nullptr) {
  check_radix_plan(plan);
  RadixBoundary b;
  b.k = k;
  if (first_counts != nullptr && radix_narrow(b, k, plan, *first_counts)) return b;
  std::vector<uint64_t> counts;
  for (;;) {
    const int bits = radix_next_bits(b, plan);
    counts.assign(size_t(1) << bits, 0);
    histogram(b.prefix, b.mask, b.shift - bits, bits, counts.data());
    if (radix_narrow(b, k, plan, counts)) return b;
  }
}

// Settles a boundary from every eligible (key, id) of its bin, in any order.
inline RankThreshold radix_settle(RadixBoundary& b, std::vector<RankCandidate>& cand) {
  if (b.settled) return b.result;
  if (cand.size() != b.in_bin)
    throw std::logic_error("radix_threshold: gathered " + std::to_string(cand.size()) + " keys, the histogram counted " +
                           std::to_string(b.in_bin));
  // (key, id) pairs are unique, so the nth element does not depend on the gather order.
  auto better = [](const RankCandidate& x, const RankCandidate& y) { return x.key > y.key || (x.key == y.key && x.id < y.id); };
  std::nth_element(cand.begin(), cand.begin() + static_cast<int64_t>(b.need - 1), cand.end(), better);
  b.result.key = cand[b.need - 1].key;
  b.result.id = cand[b.need - 1].id;
  b.settled = true;
  return b.result;
}

// Settles a predicted boundary from the eligible keys counted above its window (every rank's) and
// those in it. Returns false, leaving it unsettled, when the k-th best lies outside the window.
inline bool radix_settle_predicted(RadixBoundary& b, uint64_t above, std::vector<RankCandidate>& cand) {
  if (b.k <= above || b.k - above > cand.size()) return false;
  b.need = b.k - above;
  b.in_bin = cand.size();
  radix_settle(b, cand);
  return true;
}

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
  RadixBoundary b = radix_boundary(k, plan, histogram);
  if (b.settled) return b.result;
  std::vector<RankCandidate> cand = gather(b.prefix, b.mask, b.in_bin);
  return radix_settle(b, cand);
}

}  // namespace emp
