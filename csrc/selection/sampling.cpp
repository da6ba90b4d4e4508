#include "selection/sampling.h"

#include <algorithm>
#include <cmath>

#include "core/rng.h"

namespace emp {

namespace {

// Sequential 32-bit random numbers from one counter-based stream (two per SplitMix64 call).
class Stream32 {
 public:
  explicit Stream32(uint64_t key) : key_(key) {}
  uint32_t next() {
    if (have_) {
      have_ = false;
      return static_cast<uint32_t>(buffered_ >> 32);
    }
    buffered_ = draw(key_, counter_++);
    have_ = true;
    return static_cast<uint32_t>(buffered_);
  }
  // Exactly uniform in [0, bound) (Lemire 2019, with rejection).
  uint32_t below(uint32_t bound) {
    uint64_t m = uint64_t(next()) * bound;
    uint32_t low = static_cast<uint32_t>(m);
    if (low < bound) {
      const uint32_t threshold = static_cast<uint32_t>(-bound) % bound;
      while (low < threshold) {
        m = uint64_t(next()) * bound;
        low = static_cast<uint32_t>(m);
      }
    }
    return static_cast<uint32_t>(m >> 32);
  }

 private:
  uint64_t key_;
  uint64_t counter_ = 0;
  uint64_t buffered_ = 0;
  bool have_ = false;
};

void fisher_yates(int64_t* ids, float* w, uint64_t len, uint64_t key) {
  if (len > UINT32_MAX) {  // never for ~4096-id buckets, but stay exact for any input
    for (uint64_t t = len; t > 1; --t) {
      const uint64_t j = bounded(draw(key, t), t);
      std::swap(ids[t - 1], ids[j]);
      std::swap(w[t - 1], w[j]);
    }
    return;
  }
  // The swap partners come from the stream alone, not from the data, so they are drawn kAhead
  // steps early and their lines prefetched: a bucket lives in L2, and waiting on each random
  // line in turn would cost the swap its L2 latency. Same draws, same order: same permutation.
  constexpr uint32_t kAhead = 16;
  Stream32 rng(key);
  uint32_t partner[kAhead];
  uint32_t t = static_cast<uint32_t>(len);
  auto draw_for = [&](uint32_t step) {  // the partner of step `step` (t = step), prefetched
    const uint32_t j = rng.below(step);
    __builtin_prefetch(ids + j, 1);
    __builtin_prefetch(w + j, 1);
    partner[step % kAhead] = j;
  };
  const uint32_t primed = t > kAhead ? t - kAhead : 1;
  for (uint32_t step = t; step > primed; --step) draw_for(step);
  for (; t > 1; --t) {
    const uint32_t j = partner[t % kAhead];
    if (t > kAhead + 1) draw_for(t - kAhead);
    std::swap(ids[t - 1], ids[j]);
    std::swap(w[t - 1], w[j]);
  }
}

// Fixed segments for the passes below: at most 64 (below 2^37 items), each < 2^31 items so uint32
// counts hold, and independent of the thread count.
struct Segments {
  uint64_t len, count;
  explicit Segments(uint64_t n)
      : len(std::min<uint64_t>(std::max<uint64_t>(kBlock, (n + 63) / 64), uint64_t(1) << 31)),
        count((n + len - 1) / len) {}
  uint64_t begin(uint64_t s) const { return s * len; }
  uint64_t end(uint64_t s, uint64_t n) const { return std::min(n, (s + 1) * len); }
};

}  // namespace

void gather_shuffled(const float* weight, uint64_t n, uint64_t key, const SelectionCounts& counts,
                     BigVector<int64_t>& ids, BigVector<float>& weights) {
  // Every pass is branch-free on the keep flag: kept/pruned is a coin flip per id for soft rules,
  // and a mispredicted branch per id costs more than all the arithmetic here.
  const Segments seg(n);
  const int64_t nseg = static_cast<int64_t>(seg.count);
  // Buckets are chosen from n (k is not known yet): ~n/65536 of them, so the scatter's write
  // streams (two per bucket) stay in L1 and each bucket (<= ~65536 kept ids, 768 KiB with weights)
  // is shuffled in L2.
  int log_buckets = 0;
  while (log_buckets < 24 && (n >> (log_buckets + 16)) > 0) ++log_buckets;
  const uint64_t buckets = uint64_t(1) << log_buckets;
  const int shift = 64 - log_buckets;

  // 1. Compact each segment's kept ids, in id order, into the segment's own region of a scratch
  //    buffer, counting selections on the way; then count the segment's kept ids per bucket (a hash
  //    of (key, id), computed for kept ids only and again in the scatter rather than stored).
  //    The scratch holds each kept id's offset in its segment (segments are < 2^31 long): half the
  //    bytes of a full id written for every item. The compaction writes unconditionally, at most
  //    at the item's own offset, so each segment's region of the scratch is its own slots.
  BigVector<uint32_t> kept(n);
  std::vector<uint64_t> kept_in_segment(seg.count, 0);
  std::vector<uint32_t> count(seg.count * buckets, 0);
  auto bucket_of = [key, shift, log_buckets](uint64_t i) {
    return log_buckets == 0 ? 0u : static_cast<uint32_t>(draw(key, i) >> shift);
  };
#pragma omp parallel for schedule(dynamic, 1) num_threads(team_size())
  for (int64_t s = 0; s < nseg; ++s) {
    const uint64_t begin = seg.begin(s), end = seg.end(s, n);
    if (counts.times != nullptr) {  // a loop of its own, which the compiler vectorises
      uint16_t* times = counts.times;
      uint16_t* idle = counts.idle;
      for (uint64_t i = begin; i < end; ++i) {
        const uint16_t keep = weight[i] > 0.0f;
        times[i] = static_cast<uint16_t>(times[i] + (keep & (times[i] != kCountMax)));
        idle[i] = static_cast<uint16_t>((idle[i] + (idle[i] != kCountMax)) * (1 - keep));
      }
    }
    uint32_t* out = kept.data() + begin;
    uint32_t o = 0;
    for (uint64_t i = begin; i < end; ++i) {
      out[o] = static_cast<uint32_t>(i - begin);
      o += weight[i] > 0.0f;
    }
    kept_in_segment[s] = o;
    uint32_t* c = &count[static_cast<uint64_t>(s) * buckets];
    for (uint32_t j = 0; j < o; ++j) ++c[bucket_of(begin + out[j])];
  }
  uint64_t k = 0;
  for (uint64_t c : kept_in_segment) k += c;

  // 2. Bucket-major, segment-minor offsets; scatter.
  std::vector<uint64_t> offset(seg.count * buckets);
  std::vector<uint64_t> bucket_start(buckets + 1);
  uint64_t run = 0;
  for (uint64_t b = 0; b < buckets; ++b) {
    bucket_start[b] = run;
    for (uint64_t s = 0; s < seg.count; ++s) {
      offset[s * buckets + b] = run;
      run += count[s * buckets + b];
    }
  }
  bucket_start[buckets] = run;
  ids.resize(k);
  weights.resize(k);
#pragma omp parallel for schedule(dynamic, 1) num_threads(team_size())
  for (int64_t s = 0; s < nseg; ++s) {
    uint64_t* o = &offset[static_cast<uint64_t>(s) * buckets];
    const uint64_t begin = seg.begin(s), stop = kept_in_segment[s];
    const uint32_t* in = kept.data() + begin;
    for (uint64_t j = 0; j < stop; ++j) {
      const uint64_t i = begin + in[j];
      const uint64_t dst = o[bucket_of(i)]++;
      ids[dst] = static_cast<int64_t>(i);
      weights[dst] = weight[i];
    }
  }
  // 3. Shuffle inside each bucket.
  const uint64_t perm_key = splitmix64(key ^ 0x5DEECE66Dull);
#pragma omp parallel for schedule(dynamic, 64) num_threads(team_size())
  for (int64_t b = 0; b < static_cast<int64_t>(buckets); ++b) {
    const uint64_t begin = bucket_start[b], end = bucket_start[b + 1];
    fisher_yates(ids.data() + begin, weights.data() + begin, end - begin, splitmix64(perm_key ^ static_cast<uint64_t>(b)));
  }
}

double weighted_marks(const Partition& part, const double* w, uint64_t k, uint64_t seed, uint64_t epoch, float* mark) {
  const uint64_t n = part.ids.local_n();
  const uint64_t stream = stream_key(seed, epoch, Purpose::Weighted);
  // Key: -E_i / w_i (larger is better) as order-preserving bits, computed once (a log per item);
  // 0 = not eligible. E_i is drawn by global id, so the draw is the same on any rank layout.
  BigVector<uint64_t> keys(n);
  for_blocks(n, [&](size_t, size_t begin, size_t end) {
    part.ids.each(begin, end, [&](uint64_t i, uint64_t g) {
      // E = -log(1 - u) ~ Exp(1); 1 - u is exact for u = m * 2^-53, so plain log is accurate.
      const double rank = -std::log(1.0 - to_unit(draw(stream, g))) / w[i];
      keys[i] = w[i] > 0.0 ? monotone_bits(-rank) : 0;
    });
  });
  // One threshold, at the (k+1)-th best: its rank is tau, and the k best are those above it.
  const RankThreshold next = topk_threshold(part, k + 1, [&](uint64_t i, uint64_t) { return keys[i]; });
  if (next.all) {
    // At most k eligible: every one is in, with certainty.
    for_blocks(n, [&](size_t, size_t begin, size_t end) {
      for (size_t i = begin; i < end; ++i) mark[i] = keys[i] != 0 ? 1.0f : 0.0f;
    });
    return INFINITY;
  }
  const double tau = -from_monotone_bits(next.key);
  for_blocks(n, [&](size_t, size_t begin, size_t end) {
    part.ids.each(begin, end, [&](uint64_t i, uint64_t g) {
      const bool in = within(keys[i], static_cast<int64_t>(g), next) &&
                      !(keys[i] == next.key && static_cast<int64_t>(g) == next.id);
      if (!in) {
        mark[i] = 0.0f;
        return;
      }
      const double pi = -std::expm1(-w[i] * tau);
      mark[i] = static_cast<float>(1.0 / std::max(pi, 1e-30));
    });
  });
  return tau;
}

WeightedSample sample_weighted(const double* w, uint64_t n, uint64_t k, uint64_t seed, uint64_t epoch) {
  WeightedSample out;
  BigVector<float> mark(n);
  out.tau = weighted_marks(Partition::whole(n), w, k, seed, epoch, mark.data());
  gather_shuffled(mark.data(), n, stream_key(seed, epoch, Purpose::Shuffle), SelectionCounts{}, out.ids, out.inv_prob);
  return out;
}

}  // namespace emp
