#include "sampling.h"

#include <algorithm>
#include <cmath>

#include "rng.h"

namespace emp {

void compact_kept(const float* weight, uint64_t n, std::vector<int64_t>& ids, std::vector<float>& weights) {
  const uint64_t nb = num_blocks(n);
  std::vector<uint64_t> offset(nb, 0);
  for_blocks(n, [&](size_t b, size_t begin, size_t end) {
    uint64_t c = 0;
    for (size_t i = begin; i < end; ++i) c += weight[i] > 0.0f;
    offset[b] = c;
  });
  const uint64_t total = exclusive_scan(offset);
  ids.resize(total);
  weights.resize(total);
  for_blocks(n, [&](size_t b, size_t begin, size_t end) {
    uint64_t o = offset[b];
    for (size_t i = begin; i < end; ++i) {
      if (weight[i] > 0.0f) {
        ids[o] = static_cast<int64_t>(i);
        weights[o] = weight[i];
        ++o;
      }
    }
  });
}

namespace {

void fisher_yates(int64_t* ids, float* w, uint64_t len, uint64_t key) {
  for (uint64_t t = len; t > 1; --t) {
    const uint64_t j = bounded(draw(key, t), t);
    std::swap(ids[t - 1], ids[j]);
    std::swap(w[t - 1], w[j]);
  }
}

}  // namespace

void shuffle_pairs(std::vector<int64_t>& ids, std::vector<float>& weights, uint64_t key) {
  const uint64_t k = ids.size();
  if (k < 2) return;
  const uint64_t perm_key = splitmix64(key ^ 0x5DEECE66Dull);
  // Buckets of ~4096 pairs (48 KiB) fit in L2, where Fisher-Yates is fast.
  int log_buckets = 0;
  while (log_buckets < 20 && (k >> (log_buckets + 12)) > 0) ++log_buckets;
  if (log_buckets == 0) {
    fisher_yates(ids.data(), weights.data(), k, perm_key);
    return;
  }
  const uint64_t buckets = uint64_t(1) << log_buckets;
  auto bucket_of = [&](uint64_t pos) { return draw(key, pos) >> (64 - log_buckets); };
  // At most 64 fixed segments: the pre-shuffle order inside a bucket depends on k only.
  const uint64_t seg_len = std::max<uint64_t>(kBlock, (k + 63) / 64);
  const uint64_t segs = (k + seg_len - 1) / seg_len;
  std::vector<uint64_t> count(segs * buckets, 0);
#pragma omp parallel for schedule(static)
  for (int64_t s = 0; s < static_cast<int64_t>(segs); ++s) {
    const uint64_t begin = static_cast<uint64_t>(s) * seg_len, end = std::min(k, begin + seg_len);
    uint64_t* c = &count[static_cast<uint64_t>(s) * buckets];
    for (uint64_t p = begin; p < end; ++p) ++c[bucket_of(p)];
  }
  // Offsets: bucket-major, segment-minor.
  std::vector<uint64_t> bucket_start(buckets + 1, 0);
  uint64_t run = 0;
  for (uint64_t b = 0; b < buckets; ++b) {
    bucket_start[b] = run;
    for (uint64_t s = 0; s < segs; ++s) {
      const uint64_t c = count[s * buckets + b];
      count[s * buckets + b] = run;
      run += c;
    }
  }
  bucket_start[buckets] = run;
  std::vector<int64_t> out_ids(k);
  std::vector<float> out_w(k);
#pragma omp parallel for schedule(static)
  for (int64_t s = 0; s < static_cast<int64_t>(segs); ++s) {
    const uint64_t begin = static_cast<uint64_t>(s) * seg_len, end = std::min(k, begin + seg_len);
    uint64_t* o = &count[static_cast<uint64_t>(s) * buckets];
    for (uint64_t p = begin; p < end; ++p) {
      const uint64_t dst = o[bucket_of(p)]++;
      out_ids[dst] = ids[p];
      out_w[dst] = weights[p];
    }
  }
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t b = 0; b < static_cast<int64_t>(buckets); ++b) {
    const uint64_t begin = bucket_start[b], end = bucket_start[b + 1];
    fisher_yates(out_ids.data() + begin, out_w.data() + begin, end - begin, splitmix64(perm_key ^ static_cast<uint64_t>(b)));
  }
  ids.swap(out_ids);
  weights.swap(out_w);
}

WeightedSample sample_weighted(const double* w, uint64_t n, uint64_t k, uint64_t seed, uint64_t epoch) {
  WeightedSample out;
  const uint64_t stream = stream_key(seed, epoch, Purpose::Weighted);
  // Key: -E_i / w_i (larger is better), as order-preserving bits; 0 = not eligible.
  auto rank_of = [&](uint64_t i) { return -std::log1p(-to_unit(draw(stream, i))) / w[i]; };
  auto key_of = [&](uint64_t i) -> uint64_t {
    if (!(w[i] > 0.0)) return 0;
    return monotone_bits(-rank_of(i));
  };
  std::vector<float> mark(n, 0.0f);
  const RankThreshold kth = topk_threshold(n, k, key_of);
  if (kth.eligible <= k) {
    // Every eligible item is in, with certainty.
    out.tau = INFINITY;
    for_blocks(n, [&](size_t, size_t begin, size_t end) {
      for (size_t i = begin; i < end; ++i) mark[i] = key_of(i) != 0 ? 1.0f : 0.0f;
    });
  } else {
    // tau is the rank of the (k+1)-th best; the k best are those at or above the k-th.
    const RankThreshold next = topk_threshold(n, k + 1, key_of);
    out.tau = -from_monotone_bits(next.key);
    for_blocks(n, [&](size_t, size_t begin, size_t end) {
      for (size_t i = begin; i < end; ++i) {
        if (!within(key_of(i), static_cast<int64_t>(i), kth)) continue;
        const double pi = -std::expm1(-w[i] * out.tau);
        mark[i] = static_cast<float>(1.0 / std::max(pi, 1e-30));
      }
    });
  }
  compact_kept(mark.data(), n, out.ids, out.inv_prob);
  shuffle_pairs(out.ids, out.inv_prob, stream_key(seed, epoch, Purpose::Shuffle));
  return out;
}

}  // namespace emp
