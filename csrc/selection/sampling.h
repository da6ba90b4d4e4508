// Sampling building blocks: deterministic top-k thresholds over keys computed on the fly,
// compaction of kept ids, a parallel uniform shuffle, and weighted sampling without replacement.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
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
// Several top-k boundaries over one key (ranks ks, every rank's items). The first histogram pass is
// shared by all of them; first_key may store the key it computes in an array that key_of reads, so
// a selection that needs its keys again computes them once. A boundary whose bin is still larger
// than the plan's gather limit narrows on in passes of its own (key_of). Each is left in one radix
// bin, for write_settling to settle in the pass that writes the selection.
// The ranks may also be a function of the eligible count the first pass finds: ks_of(eligible)
// returns them (a budget that depends on how many items are eligible costs no pass of its own).
template <size_t N, class RanksFn, class FirstKeyFn, class KeyFn>
std::array<RadixBoundary, N> topk_boundaries(const Partition& part, RanksFn ks_of, FirstKeyFn first_key, KeyFn key_of,
                                             const RadixPlan& plan);
template <size_t N, class FirstKeyFn, class KeyFn>
std::array<RadixBoundary, N> topk_boundaries(const Partition& part, const std::array<uint64_t, N>& ks, FirstKeyFn first_key,
                                             KeyFn key_of, const RadixPlan& plan) {
  return topk_boundaries<N>(part, [&](uint64_t) { return ks; }, first_key, key_of, plan);
}
template <size_t N, class FirstKeyFn, class KeyFn>
std::array<RadixBoundary, N> topk_boundaries(const Partition& part, const std::array<uint64_t, N>& ks, FirstKeyFn first_key,
                                             KeyFn key_of) {
  return topk_boundaries<N>(part, ks, first_key, key_of, radix_plan_for(part));
}

// The boundary of the k-th best of `eligible` keys that are uniform random draws (coins, permutation
// keys), with no pass at all: the k-th best lies within 8 standard deviations of where the law puts
// it, and the window around that (about 16 sqrt(k) keys) is what write_settling collects. If it
// missed (odds of about 1e-15, or keys that are not uniform), write_settling finds the threshold by
// the histogram passes instead, so the result is exact either way. `eligible` must be the number
// of nonzero keys: k = 0 and k >= eligible are settled at once (none, every eligible key). One
// process only: across ranks the radix passes keep the gathered bin small, so there the boundary
// is computed by topk_boundaries.
template <class KeyFn>
RadixBoundary uniform_keys_boundary(const Partition& part, uint64_t k, uint64_t eligible, KeyFn key_of);

// The pass that writes a selection and settles its thresholds in one read of the items: write(i, g,
// key, t) is called for every item with t[j] the provisional threshold of boundary j (it decides
// every key outside that boundary's bin), and the keys inside a bin are collected on the way. Then
// each boundary is settled from its bin (concatenated over the ranks) and write is called again,
// with the settled thresholds, for the items whose key lay in a bin. `write` must give each item
// its value from (i, g, key, t) alone. A predicted boundary (uniform_keys_boundary) that missed is
// found by topk_threshold, and then every item is written again. Returns the settled thresholds.
template <size_t N, class KeyFn, class WriteFn>
std::array<RankThreshold, N> write_settling(const Partition& part, std::array<RadixBoundary, N>& bounds, KeyFn key_of,
                                            WriteFn write);

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

namespace detail {

// counts[d] += the eligible keys of the local items with (key & mask) == prefix whose digit (shift,
// bits) is d, summed over the ranks; the first pass (mask 0) counts every key through first_key.
template <class FirstKeyFn, class KeyFn>
void count_digit(const Partition& part, FirstKeyFn& first_key, KeyFn& key_of, uint64_t prefix, uint64_t mask, int shift,
                 int bits, uint64_t* counts) {
  const uint64_t n = part.ids.local_n();
  const uint64_t nb = num_blocks(n);
  const size_t bins = size_t(1) << bits;
  const uint64_t digit = bins - 1;
  // Per-block counting would cost nb * bins counters; per-thread histograms are summed instead
  // (integer sums: the same for any thread count). 32-bit counters keep a 16-bit digit's histogram
  // in half of a 512 KiB L2; they are added up before 2^32 items can have reached one of them.
  constexpr uint64_t kBlocksPerFlush = (uint64_t(1) << 32) / kBlock - 1;
#pragma omp parallel num_threads(team_size())
  {
    std::vector<uint32_t> local(bins, 0);
    std::vector<uint64_t> total(bins, 0);
    uint64_t blocks = 0;
    auto flush = [&] {
      for (size_t j = 0; j < bins; ++j) total[j] += local[j];
      std::fill(local.begin(), local.end(), 0u);
    };
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < static_cast<int64_t>(nb); ++b) {
      const uint64_t begin = static_cast<uint64_t>(b) * kBlock;
      const uint64_t end = begin + kBlock < n ? begin + kBlock : n;
      if (mask == 0) {
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
      if (++blocks == kBlocksPerFlush) {
        flush();
        blocks = 0;
      }
    }
    flush();
#pragma omp critical
    for (size_t j = 0; j < bins; ++j) counts[j] += total[j];
  }
  part.ranks.sum_u64(counts, bins);
}

// Every rank's candidates, in rank order (this rank's alone in one process).
inline void concat_candidates(const Partition& part, std::vector<RankCandidate>& cand) {
  if (!part.ranks.active()) return;
  std::vector<int64_t> flat(2 * cand.size());  // (key, id) pairs
  for (size_t c = 0; c < cand.size(); ++c) {
    flat[2 * c] = static_cast<int64_t>(cand[c].key);
    flat[2 * c + 1] = cand[c].id;
  }
  const std::vector<int64_t> all = part.ranks.concat(flat);
  cand.resize(all.size() / 2);
  for (size_t c = 0; c < cand.size(); ++c) cand[c] = {static_cast<uint64_t>(all[2 * c]), all[2 * c + 1]};
}

}  // namespace detail

template <class FirstKeyFn, class KeyFn>
RankThreshold topk_threshold(const Partition& part, uint64_t k, FirstKeyFn first_key, KeyFn key_of, const RadixPlan& plan) {
  const uint64_t n = part.ids.local_n();
  const uint64_t nb = num_blocks(n);
  auto histogram = [&](uint64_t prefix, uint64_t mask, int shift, int bits, uint64_t* counts) {
    detail::count_digit(part, first_key, key_of, prefix, mask, shift, bits, counts);
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
    detail::concat_candidates(part, cand);
    return cand;
  };
  return radix_threshold(k, plan, histogram, gather);
}

template <size_t N, class RanksFn, class FirstKeyFn, class KeyFn>
std::array<RadixBoundary, N> topk_boundaries(const Partition& part, RanksFn ks_of, FirstKeyFn first_key, KeyFn key_of,
                                             const RadixPlan& plan) {
  check_radix_plan(plan);  // before the first histogram, which radix_boundary does not make here
  auto histogram = [&](uint64_t prefix, uint64_t mask, int shift, int bits, uint64_t* counts) {
    detail::count_digit(part, first_key, key_of, prefix, mask, shift, bits, counts);
  };
  std::vector<uint64_t> first(size_t(1) << plan.digit_bits, 0);
  histogram(0, 0, 64 - plan.digit_bits, plan.digit_bits, first.data());
  uint64_t eligible = 0;
  for (uint64_t c : first) eligible += c;
  const std::array<uint64_t, N> ks = ks_of(eligible);
  std::array<RadixBoundary, N> bounds;
  for (size_t j = 0; j < N; ++j) bounds[j] = radix_boundary(ks[j], plan, histogram, &first);
  return bounds;
}

template <class KeyFn>
RadixBoundary uniform_keys_boundary(const Partition& part, uint64_t k, uint64_t eligible, KeyFn key_of) {
  if (part.ranks.active()) return topk_boundaries<1>(part, std::array<uint64_t, 1>{k}, key_of, key_of)[0];
  RadixBoundary b;
  b.k = k;
  b.result.eligible = eligible;
  if (k == 0 || k >= eligible) {  // none, or every eligible key
    b.settled = true;
    b.result.none = k == 0;
    b.result.all = k != 0;
    return b;
  }
  b.predicted = true;
  // The k-th largest of E uniform keys sits k / (E + 1) of the key range from the top, give or take
  // sd = sqrt(k (E + 1 - k) / (E + 1)) keys' worth of it (a beta law).
  const long double range = 18446744073709551616.0L;  // 2^64
  const long double e = static_cast<long double>(eligible) + 1.0L;
  const long double kk = static_cast<long double>(k);
  const long double centre = range * (1.0L - kk / e);
  const long double sd = std::sqrt(kk * (e - kk) / e);
  const long double half = range * (8.0L * sd + 16.0L) / e;
  auto clamp = [&](long double x) {
    if (x <= 1.0L) return uint64_t(1);
    if (x >= range - 1.0L) return ~uint64_t(0);
    return static_cast<uint64_t>(x);
  };
  b.lo = clamp(centre - half);
  b.hi = clamp(centre + half);
  return b;
}

template <size_t N, class KeyFn, class WriteFn>
std::array<RankThreshold, N> write_settling(const Partition& part, std::array<RadixBoundary, N>& bounds, KeyFn key_of,
                                            WriteFn write) {
  const uint64_t n = part.ids.local_n();
  std::array<RankThreshold, N> t;
  for (size_t j = 0; j < N; ++j) t[j] = bounds[j].provisional();
  std::array<std::vector<RankCandidate>, N> cand;
  std::array<uint64_t, N> above{};  // eligible keys above each bin (counted for predicted ones)
  std::vector<uint64_t> recheck;    // local slots whose key lay in a bin
#pragma omp parallel num_threads(team_size())
  {
    // Copies of their own, so the loop keeps the thresholds in registers across its stores.
    const std::array<RadixBoundary, N> bin = bounds;
    const std::array<RankThreshold, N> provisional = t;
    std::array<std::vector<RankCandidate>, N> local_cand;
    std::array<uint64_t, N> local_above{};
    std::vector<uint64_t> local_recheck;
    // The items of a bin are noted in a small buffer and collected after each chunk, so the loop
    // over the items calls nothing and keeps its thresholds and pointers in registers.
    constexpr uint64_t kChunk = 512;
    std::array<uint64_t, kChunk> held_slot;
#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t b = 0; b < static_cast<int64_t>(num_blocks(n)); ++b) {
      const uint64_t block_end = std::min<uint64_t>((static_cast<uint64_t>(b) + 1) * kBlock, n);
      for (uint64_t begin = static_cast<uint64_t>(b) * kBlock; begin < block_end; begin += kChunk) {
        const uint64_t end = std::min(begin + kChunk, block_end);
        std::array<uint64_t, N> chunk_above{};
        size_t held = 0;
        part.ids.each(begin, end, [&](uint64_t i, uint64_t g) {
          const uint64_t key = key_of(i, g);
          write(i, g, key, provisional.data());
          bool in_a_bin = false;
          for (size_t j = 0; j < N; ++j) {
            chunk_above[j] += key > bin[j].hi;  // key 0 is never above
            in_a_bin |= bin[j].holds(key);
          }
          held_slot[held] = i;  // one store an item; its id and key are found again if it was held
          held += in_a_bin;
        });
        for (size_t j = 0; j < N; ++j) local_above[j] += chunk_above[j];
        for (size_t h = 0; h < held; ++h) {
          const uint64_t i = held_slot[h], g = part.ids.global(i), key = key_of(i, g);
          for (size_t j = 0; j < N; ++j)
            if (bin[j].holds(key)) local_cand[j].push_back({key, static_cast<int64_t>(g)});
          local_recheck.push_back(i);
        }
      }
    }
#pragma omp critical
    {
      for (size_t j = 0; j < N; ++j) {
        cand[j].insert(cand[j].end(), local_cand[j].begin(), local_cand[j].end());
        above[j] += local_above[j];
      }
      recheck.insert(recheck.end(), local_recheck.begin(), local_recheck.end());
    }
  }
  bool missed = false;
  for (size_t j = 0; j < N; ++j) {
    if (bounds[j].settled) continue;
    detail::concat_candidates(part, cand[j]);
    if (!bounds[j].predicted) {
      t[j] = radix_settle(bounds[j], cand[j]);
    } else if (radix_settle_predicted(bounds[j], part.ranks.sum_one(above[j]), cand[j])) {
      t[j] = bounds[j].result;
    } else {
      t[j] = topk_threshold(part, bounds[j].k, key_of, key_of, radix_plan_for(part));
      bounds[j].result = t[j];
      bounds[j].settled = true;
      missed = true;
    }
  }
  if (missed) {  // the provisional writes of a missed window were wrong anywhere: write every item again
    for_blocks(n, [&](size_t, size_t begin, size_t end) {
      part.ids.each(begin, end, [&](uint64_t i, uint64_t g) { write(i, g, key_of(i, g), t.data()); });
    });
    return t;
  }
  for (uint64_t i : recheck) {
    const uint64_t g = part.ids.global(i);
    write(i, g, key_of(i, g), t.data());
  }
  return t;
}

}  // namespace emp
