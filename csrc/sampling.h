// Sampling building blocks: deterministic top-k thresholds over keys computed on the fly,
// compaction of kept ids, a parallel uniform shuffle, and weighted sampling without replacement.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "buffer.h"
#include "parallel.h"

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

inline bool within(uint64_t key, int64_t id, const RankThreshold& t) {
  if (key == 0 || t.none) return false;
  if (t.all) return true;
  return key > t.key || (key == t.key && id <= t.id);
}

// Order-preserving map of a float to uint32 (larger float, larger key).
inline uint32_t monotone_bits(float f) {
  uint32_t b;
  static_assert(sizeof(b) == sizeof(f), "float is 32 bits");
  __builtin_memcpy(&b, &f, sizeof(b));
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

inline uint64_t monotone_bits(double d) {
  uint64_t b;
  __builtin_memcpy(&b, &d, sizeof(b));
  return (b & 0x8000000000000000ull) ? ~b : (b | 0x8000000000000000ull);
}

inline double from_monotone_bits(uint64_t m) {
  const uint64_t b = (m & 0x8000000000000000ull) ? (m & ~0x8000000000000000ull) : ~m;
  double d;
  __builtin_memcpy(&d, &b, sizeof(d));
  return d;
}

// The threshold for the k best of items 0..n-1 under key_of(i). O(n): one parallel pass that
// histograms the top 16 key bits, one that gathers the boundary bin, then nth_element on it.
template <class KeyFn>
RankThreshold topk_threshold(uint64_t n, uint64_t k, KeyFn key_of);

// The ids i with weight[i] > 0, with their weights, in uniformly random order, a pure function of
// (weight, key): each kept id goes to a random bucket by a hash of (key, id), buckets are laid out in
// order and each (cache-resident) is Fisher-Yates shuffled. Conditional on the bucket
// sizes every order within a bucket is equally likely, so the permutation is uniform (Sanders 1998).
// With `times` given, also adds one to times[i] of every kept i (saturating), in the same pass.
void gather_shuffled(const float* weight, uint64_t n, uint64_t key, uint32_t* times, BigVector<int64_t>& ids,
                     BigVector<float>& weights);

struct WeightedSample {
  BigVector<int64_t> ids;          // shuffled
  BigVector<float> inv_prob;       // 1 / inclusion probability (Horvitz-Thompson weight)
  double tau = 0.0;                // the (k+1)-th smallest exponential rank E_i / w_i
};

// k items without replacement, P proportional to w (Efraimidis-Spirakis exponential keys). The
// inclusion probability of an included item, given the others, is 1 - exp(-w_i tau) with tau the
// (k+1)-th smallest rank (rank conditioning, Cohen & Kaplan 2008): its inverse makes
// sum_{i in sample} x_i / pi_i an unbiased estimate of sum_i x_i. Items with w <= 0 never appear.
WeightedSample sample_weighted(const double* w, uint64_t n, uint64_t k, uint64_t seed, uint64_t epoch);

// ------------------------------------------------------------------------------------------------

template <class KeyFn>
RankThreshold topk_threshold(uint64_t n, uint64_t k, KeyFn key_of) {
  RankThreshold t;
  constexpr int kBits = 16;
  constexpr size_t kBins = size_t(1) << kBits;
  const uint64_t nb = num_blocks(n);
  // Per-block counting would cost nb*65536 counters; per-thread histograms are summed instead
  // (integer sums: the same for any thread count).
  std::vector<uint64_t> hist(kBins, 0);
#pragma omp parallel
  {
    std::vector<uint64_t> local(kBins, 0);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < static_cast<int64_t>(nb); ++b) {
      const uint64_t begin = static_cast<uint64_t>(b) * kBlock;
      const uint64_t end = begin + kBlock < n ? begin + kBlock : n;
      for (uint64_t i = begin; i < end; ++i) {
        const uint64_t key = key_of(i);
        if (key != 0) ++local[key >> (64 - kBits)];
      }
    }
#pragma omp critical
    for (size_t j = 0; j < kBins; ++j) hist[j] += local[j];
  }
  for (uint64_t c : hist) t.eligible += c;
  if (k == 0) {
    t.none = true;
    return t;
  }
  if (t.eligible < k) {
    t.all = true;
    return t;
  }
  uint64_t above = 0;
  size_t bin = kBins;
  while (bin-- > 0) {
    if (above + hist[bin] >= k) break;
    above += hist[bin];
  }
  const uint64_t need = k - above;  // how many to take from `bin`, 1..hist[bin]

  struct Candidate {
    uint64_t key;
    int64_t id;
  };
  std::vector<Candidate> cand;
  cand.reserve(hist[bin]);
#pragma omp parallel
  {
    std::vector<Candidate> local;
#pragma omp for schedule(static) nowait
    for (int64_t b = 0; b < static_cast<int64_t>(nb); ++b) {
      const uint64_t begin = static_cast<uint64_t>(b) * kBlock;
      const uint64_t end = begin + kBlock < n ? begin + kBlock : n;
      for (uint64_t i = begin; i < end; ++i) {
        const uint64_t key = key_of(i);
        if (key != 0 && (key >> (64 - kBits)) == bin) local.push_back({key, static_cast<int64_t>(i)});
      }
    }
#pragma omp critical
    cand.insert(cand.end(), local.begin(), local.end());
  }
  // (key, id) pairs are unique, so the nth element does not depend on the gather order.
  auto better = [](const Candidate& a, const Candidate& b) { return a.key > b.key || (a.key == b.key && a.id < b.id); };
  std::nth_element(cand.begin(), cand.begin() + static_cast<int64_t>(need - 1), cand.end(), better);
  t.key = cand[need - 1].key;
  t.id = cand[need - 1].id;
  return t;
}

}  // namespace emp
