// Sampling building blocks: deterministic top-k thresholds over keys computed on the fly,
// compaction of kept ids, a parallel uniform shuffle, and weighted sampling without replacement.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/buffer.h"
#include "core/parallel.h"
#include "selection/partition.h"
#include "selection/radix_select.h"
#include "core/store.h"  // kCountMax

namespace emp {

// Order-preserving map of a float to uint32 (larger float, larger key). Host and device (the GPU
// ranks the same keys).
EMP_HD inline uint32_t monotone_bits(float f) {
  uint32_t b;
  static_assert(sizeof(b) == sizeof(f), "float is 32 bits");
  __builtin_memcpy(&b, &f, sizeof(b));
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

EMP_HD inline uint64_t monotone_bits(double d) {
  uint64_t b;
  __builtin_memcpy(&b, &d, sizeof(b));
  return (b & 0x8000000000000000ull) ? ~b : (b | 0x8000000000000000ull);
}

EMP_HD inline double from_monotone_bits(uint64_t m) {
  const uint64_t b = (m & 0x8000000000000000ull) ? (m & ~0x8000000000000000ull) : ~m;
  double d;
  __builtin_memcpy(&d, &b, sizeof(d));
  return d;
}

// The CPU's radix plan: 16-bit digits (a 512 KiB histogram per thread, cache-resident) and a
// gather of at most max(64Ki, n/8) candidates. Up to 64Ki items the first pass always gathers, so
// it only needs to find the boundary bin: 8-bit digits there spare small calls a large histogram
// to clear and merge.
inline RadixPlan cpu_radix_plan(uint64_t n) {
  const uint64_t gather_limit = std::max<uint64_t>(uint64_t(1) << 16, n / 8);
  return RadixPlan{n <= (uint64_t(1) << 16) ? 8 : 16, gather_limit};
}

// Across ranks every pass is a collective: 11-bit digits (a 16 KiB histogram to sum) and a
// boundary bin gathered once it holds at most 2048 keys (32 KiB concatenated), whatever N is. The
// threshold does not depend on the plan ((key, id) pairs are unique), only the traffic does.
inline RadixPlan ranks_radix_plan() { return RadixPlan{11, 2048}; }

// The one set of samples a selection runs over: this process's store slots, their global ids and
// the ranks that hold the others (none in a single process). `salt` makes each rank's shuffle of
// its kept ids its own stream (0 in a single process).
struct Partition {
  IdMap ids;
  Collective ranks;
  uint64_t salt = 0;
  static Partition whole(uint64_t n) { return Partition{IdMap::identity(n), Collective{}, 0}; }
};

// The threshold for the k best of all items (every rank's) under key_of(i, g) of the local slots i
// (g: the slot's global id), ties going to the smaller global id: radix_threshold with parallel passes, each histogram summed
// over the ranks and the boundary bin concatenated. Usually two passes (histogram of the top key
// bits, gather of the boundary bin), more when the boundary bin is large (many near-equal keys), so
// the gather never holds more than ~n/8 keys (2048 across ranks).
template <class FirstKeyFn, class KeyFn>
RankThreshold topk_threshold(const Partition& part, uint64_t k, FirstKeyFn first_key, KeyFn key_of, const RadixPlan& plan);
template <class KeyFn>
RankThreshold topk_threshold(const Partition& part, uint64_t k, KeyFn key_of, const RadixPlan& plan) {
  return topk_threshold(part, k, key_of, key_of, plan);
}
// The plan for a partition: collective-sized digits across ranks, the CPU plan in one process.
inline RadixPlan radix_plan_for(const Partition& part) {
  return part.ranks.active() ? ranks_radix_plan() : cpu_radix_plan(part.ids.local_n());
}
template <class KeyFn>
RankThreshold topk_threshold(const Partition& part, uint64_t k, KeyFn key_of) {
  return topk_threshold(part, k, key_of, radix_plan_for(part));
}
// One process, items 0..n-1 under key_of(i).
template <class KeyFn>
RankThreshold topk_threshold(uint64_t n, uint64_t k, KeyFn key_of, const RadixPlan& plan) {
  return topk_threshold(Partition::whole(n), k, [&](uint64_t i, uint64_t) { return key_of(i); }, plan);
}
template <class KeyFn>
RankThreshold topk_threshold(uint64_t n, uint64_t k, KeyFn key_of) {
  return topk_threshold(n, k, key_of, cpu_radix_plan(n));
}
// The same threshold over keys the first data pass computes: compute(i, g) is stored in keys[i] as
// it is counted, and the later passes read keys[i]. So a selection that needs its keys again after
// the threshold computes them in the pass that counts them, not in a pass of its own.
template <class ComputeFn>
RankThreshold topk_threshold_storing(const Partition& part, uint64_t k, uint64_t* keys, ComputeFn compute) {
  auto first_key = [&](uint64_t i, uint64_t g) { return keys[i] = compute(i, g); };
  auto stored_key = [&](uint64_t i, uint64_t) { return keys[i]; };
  return topk_threshold(part, k, first_key, stored_key, radix_plan_for(part));
}

// The ids i with weight[i] > 0, with their weights, in uniformly random order, a pure function of
// (weight, key): each kept id goes to a random bucket by a hash of (key, id), buckets are laid out in
// order and each (cache-resident) is Fisher-Yates shuffled. Conditional on the bucket
// sizes every order within a bucket is equally likely, so the permutation is uniform (Sanders 1998).
// With `counts` given, also counts the selection in the same pass: times[i] + 1 for every kept i,
// idle[i] back to 0 for every kept i and + 1 for every other (both saturating at kCountMax).
struct SelectionCounts {
  uint16_t* times = nullptr;  // null: count nothing
  uint16_t* idle = nullptr;
};
void gather_shuffled(const float* weight, uint64_t n, uint64_t key, const SelectionCounts& counts,
                     BigVector<int64_t>& ids, BigVector<float>& weights);

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

// The same draw as marks: mark[i] = 1/pi_i for the k drawn items, 0 for the others (1 for every
// eligible item when at most k are). Returns tau (+inf in that case). For callers that need
// per-id weights rather than a shuffled list (the weighted selection rule). Over a partition, w
// and mark are the local slots', k counts over all ranks, and draws are keyed by global id.
double weighted_marks(const Partition& part, const double* w, uint64_t k, uint64_t seed, uint64_t epoch, float* mark);

// ------------------------------------------------------------------------------------------------

template <class FirstKeyFn, class KeyFn>
RankThreshold topk_threshold(const Partition& part, uint64_t k, FirstKeyFn first_key, KeyFn key_of, const RadixPlan& plan) {
  const uint64_t n = part.ids.local_n();
  const uint64_t nb = num_blocks(n);
  auto histogram = [&](uint64_t prefix, uint64_t mask, int shift, int bits, uint64_t* counts) {
    const size_t bins = size_t(1) << bits;
    const uint64_t digit = bins - 1;
    // Per-block counting would cost nb * bins counters; per-thread histograms are summed instead
    // (integer sums: the same for any thread count).
#pragma omp parallel num_threads(team_size())
    {
      std::vector<uint64_t> local(bins, 0);
#pragma omp for schedule(dynamic, 1)
      for (int64_t b = 0; b < static_cast<int64_t>(nb); ++b) {
        const uint64_t begin = static_cast<uint64_t>(b) * kBlock;
        const uint64_t end = begin + kBlock < n ? begin + kBlock : n;
        if (mask == 0) {  // the first pass (every key counted): first_key
          part.ids.each(begin, end, [&](uint64_t i, uint64_t g) {
            const uint64_t key = first_key(i, g);
            if (key != 0) ++local[(key >> shift) & digit];
          });
        } else {
          part.ids.each(begin, end, [&](uint64_t i, uint64_t g) {
            const uint64_t key = key_of(i, g);
            if (key != 0 && (key & mask) == prefix) ++local[(key >> shift) & digit];
          });
        }
      }
#pragma omp critical
      for (size_t j = 0; j < bins; ++j) counts[j] += local[j];
    }
    part.ranks.sum_u64(counts, bins);
  };
  auto gather = [&](uint64_t prefix, uint64_t mask, uint64_t expected) {
    std::vector<RankCandidate> cand;
    cand.reserve(expected);
#pragma omp parallel num_threads(team_size())
    {
      std::vector<RankCandidate> local;
#pragma omp for schedule(dynamic, 1) nowait
      for (int64_t b = 0; b < static_cast<int64_t>(nb); ++b) {
        const uint64_t begin = static_cast<uint64_t>(b) * kBlock;
        const uint64_t end = begin + kBlock < n ? begin + kBlock : n;
        part.ids.each(begin, end, [&](uint64_t i, uint64_t g) {
          const uint64_t key = key_of(i, g);
          if (key != 0 && (key & mask) == prefix) local.push_back({key, static_cast<int64_t>(g)});
        });
      }
#pragma omp critical
      cand.insert(cand.end(), local.begin(), local.end());
    }
    if (!part.ranks.active()) return cand;
    std::vector<int64_t> flat(2 * cand.size());  // (key, id) pairs of every rank, in rank order
    for (size_t c = 0; c < cand.size(); ++c) {
      flat[2 * c] = static_cast<int64_t>(cand[c].key);
      flat[2 * c + 1] = cand[c].id;
    }
    const std::vector<int64_t> all = part.ranks.concat(flat);
    cand.resize(all.size() / 2);
    for (size_t c = 0; c < cand.size(); ++c) cand[c] = {static_cast<uint64_t>(all[2 * c]), all[2 * c + 1]};
    return cand;
  };
  return radix_threshold(k, plan, histogram, gather);
}

}  // namespace emp
