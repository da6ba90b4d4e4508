// CUDA kernels of the GPU path (see kernels.h). Random draws come from rng.h, the same
// counter-based SplitMix streams the CPU uses, so keep decisions match the CPU bit for bit; score
// and update arithmetic use explicit round-to-nearest intrinsics so nvcc cannot fuse a multiply-add
// the CPU build does not.
#include <cuda_runtime.h>

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_reduce.cuh>
#include <cub/device/device_select.cuh>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>
#include <algorithm>

#include "../rng.h"
#include "../sampling.h"
#include "kernels.h"

namespace emp {
namespace cuda {
namespace {

constexpr int kThreads = 256;

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err));
}

cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

unsigned grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 * 32 ? 65535 * 32 : blocks));
}

// Device scratch memory from the stream-ordered pool, freed on scope exit (stream-ordered too).
template <class T>
struct Scratch {
  T* ptr = nullptr;
  cudaStream_t stream;
  // `zeroed`: cleared on the stream (counters that kernels atomically add to).
  Scratch(size_t count, cudaStream_t s, bool zeroed = false) : stream(s) {
    if (count == 0) return;
    check(cudaMallocAsync(reinterpret_cast<void**>(&ptr), count * sizeof(T), s), "cudaMallocAsync");
    if (zeroed) check(cudaMemsetAsync(ptr, 0, count * sizeof(T), s), "cudaMemsetAsync");
  }
  ~Scratch() {
    if (ptr != nullptr) cudaFreeAsync(ptr, stream);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

__device__ inline float score_of(const float* stats, int64_t i, ScoreParams p) {
  const float loss = stats[4 * i], memory = stats[4 * i + 1], mean = stats[4 * i + 2], var = stats[4 * i + 3];
  switch (p.kind) {
    case kEmp:
      return isnan(memory) ? loss : __fadd_rn(loss, __fmul_rn(p.beta, memory));
    case kMean:
      return mean;
    case kUcb:
      return __fadd_rn(mean, __fmul_rn(p.c, sqrtf(fmaxf(var, 0.0f))));
    default:
      return loss;
  }
}

__device__ inline uint32_t monotone_bits_dev(float f) {
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// The CPU's top-k key (policies.cpp score_key): score bits on top, tie-break draw below, never 0.
__device__ inline uint64_t score_key_dev(float score, uint64_t tie_stream, uint64_t i) {
  const uint64_t top = isnan(score) ? 0xFFFFFFFFull : monotone_bits_dev(score);
  return (top << 32) | (draw(tie_stream, i) >> 32) | 1ull;
}

__global__ void reset_kernel(float* stats, int32_t* times, float* weight, int64_t n) {
  const float nan = __int_as_float(0x7fc00000);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    stats[4 * i] = stats[4 * i + 1] = stats[4 * i + 2] = stats[4 * i + 3] = nan;
    times[i] = 0;
    weight[i] = 1.0f;
  }
}

__global__ void update_kernel(const int64_t* ids, const float* loss, const float* memory, int64_t count, float* stats,
                              int64_t n, float ema_decay, bool skip_nonfinite, unsigned long long* error,
                              unsigned long long* skipped) {
  const float alpha = __fsub_rn(1.0f, ema_decay);
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < count; j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t id = ids[j];
    if (id < 0 || id >= n) {
      atomicMin(error, (static_cast<unsigned long long>(j) << 2) | 1ull);
      continue;
    }
    const float x = loss[j];
    const float m = memory != nullptr ? memory[j] : __int_as_float(0x7fc00000);
    const bool bad_loss = !isfinite(x), bad_mem = memory != nullptr && !isfinite(m);
    if (bad_loss || bad_mem) {
      if (skip_nonfinite)
        atomicAdd(skipped, 1ull);
      else
        atomicMin(error, (static_cast<unsigned long long>(j) << 2) | (bad_loss ? 2ull : 3ull));
      continue;
    }
    float* s = stats + 4 * id;
    if (isnan(s[2])) {
      s[2] = x;
      s[3] = 0.0f;
    } else {
      // Same EMA as the CPU (store.cpp), one rounding per operation.
      const float d = __fsub_rn(x, s[2]);
      s[2] = __fadd_rn(s[2], __fmul_rn(alpha, d));
      s[3] = __fmul_rn(ema_decay, __fadd_rn(s[3], __fmul_rn(__fmul_rn(alpha, d), d)));
    }
    s[0] = x;
    if (memory != nullptr) s[1] = m;
  }
}

__global__ void gather_weights_kernel(const float* weight, int64_t n, const int64_t* ids, int64_t count, float* out) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < count; j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t id = ids[j];
    const float w = (id >= 0 && id < n) ? weight[id] : 1.0f;
    out[j] = w > 0.0f ? w : 1.0f;
  }
}

__global__ void scores_kernel(const float* stats, int64_t n, ScoreParams p, float* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = score_of(stats, i, p);
}

__global__ void fill_kernel(float* out, int64_t n, float value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = value;
}

// Per-block partial sums (double) and counts of seen scores; a fixed grid and a fixed final order
// make the mean deterministic run to run.
constexpr unsigned kSumBlocks = 1024;
__global__ void seen_partials_kernel(const float* stats, int64_t n, ScoreParams p, double* sums,
                                     unsigned long long* counts, float* maxes) {
  __shared__ double s_sum[kThreads];
  __shared__ unsigned long long s_cnt[kThreads];
  __shared__ float s_max[kThreads];
  double sum = 0.0;
  unsigned long long cnt = 0;
  float mx = -INFINITY;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float v = score_of(stats, i, p);
    if (!isnan(v)) {
      sum += v;
      ++cnt;
      mx = fmaxf(mx, v);
    }
  }
  s_sum[threadIdx.x] = sum;
  s_cnt[threadIdx.x] = cnt;
  s_max[threadIdx.x] = mx;
  __syncthreads();
  for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      s_sum[threadIdx.x] += s_sum[threadIdx.x + half];
      s_cnt[threadIdx.x] += s_cnt[threadIdx.x + half];
      s_max[threadIdx.x] = fmaxf(s_max[threadIdx.x], s_max[threadIdx.x + half]);
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    sums[blockIdx.x] = s_sum[0];
    counts[blockIdx.x] = s_cnt[0];
    maxes[blockIdx.x] = s_max[0];
  }
}

// Soft rule, one thread per pair (2j, 2j+1) sharing draw(stream, j) as the CPU does.
__global__ void soft_kernel(const float* stats, int64_t n, ScoreParams p, double mean, uint64_t keep_below,
                            float soft_weight, uint64_t keep_stream, float* weight, unsigned long long* hard_total) {
  unsigned long long hard = 0;
  const int64_t pairs = (n + 1) / 2;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < pairs; j += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t r = draw(keep_stream, static_cast<uint64_t>(j));
    for (int half = 0; half < 2; ++half) {
      const int64_t i = 2 * j + half;
      if (i >= n) break;
      const uint32_t coin = half == 0 ? static_cast<uint32_t>(r) : static_cast<uint32_t>(r >> 32);
      const float s = score_of(stats, i, p);
      const bool is_hard = !(static_cast<double>(s) < mean);  // NaN (never seen) is hard
      const bool kept = static_cast<uint64_t>(coin) < keep_below;
      weight[i] = is_hard ? 1.0f : (kept ? soft_weight : 0.0f);
      hard += is_hard;
    }
  }
  if (hard) atomicAdd(hard_total, hard);
}

__global__ void topk_keys_kernel(const float* stats, int64_t n, ScoreParams p, uint64_t tie_stream, uint64_t* keys,
                                 int64_t* ids, unsigned long long* unseen) {
  unsigned long long u = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float s = score_of(stats, i, p);
    keys[i] = score_key_dev(s, tie_stream, static_cast<uint64_t>(i));
    ids[i] = i;
    u += isnan(stats[4 * i]);
  }
  if (u) atomicAdd(unseen, u);
}

// Explore keys: 0 for samples already kept greedily, a uniform draw (never 0) for the rest.
__global__ void explore_keys_kernel(const float* weight, int64_t n, uint64_t explore_stream, uint64_t* keys,
                                    int64_t* ids) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    keys[i] = weight[i] > 0.0f ? 0ull : (draw(explore_stream, static_cast<uint64_t>(i)) | 1ull);
    ids[i] = i;
  }
}

struct IsKept {
  const float* weight;
  __device__ bool operator()(int64_t i) const { return weight[i] > 0.0f; }
};

struct NonZero {
  __device__ int64_t operator()(uint64_t key) const { return key != 0 ? 1 : 0; }
};

struct KeptFlag {
  const float* weight;
  __device__ int64_t operator()(int64_t i) const { return weight[i] > 0.0f ? 1 : 0; }
};

__global__ void shuffle_keys_kernel(const int64_t* ids, int64_t count, uint64_t shuffle_stream, uint64_t* keys) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < count; j += int64_t(gridDim.x) * blockDim.x)
    keys[j] = draw(shuffle_stream, static_cast<uint64_t>(ids[j]));
}

__global__ void finish_gather_kernel(const int64_t* ids, int64_t count, const float* weight, int32_t* times,
                                     float* weights_out) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < count; j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t id = ids[j];
    weights_out[j] = weight[id];
    if (times != nullptr) times[id] += 1;   // ids are distinct: no race
  }
}

// Exact-budget soft rule: hard samples (unseen, or score >= mean) get key 0 and weight 1; soft
// ones a uniform key (the CPU's per-sample draw) and weight 0 until picked.
__global__ void soft_exact_keys_kernel(const float* stats, int64_t n, ScoreParams p, double mean, uint64_t keep_stream,
                                       uint64_t* keys, int64_t* ids, float* weight, unsigned long long* hard_total) {
  unsigned long long hard = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float s = score_of(stats, i, p);
    const bool is_hard = !(static_cast<double>(s) < mean);
    keys[i] = is_hard ? 0ull : (draw(keep_stream, static_cast<uint64_t>(i)) | 1ull);
    ids[i] = i;
    weight[i] = is_hard ? 1.0f : 0.0f;
    hard += is_hard;
  }
  if (hard) atomicAdd(hard_total, hard);
}

// Marks the first `count` ids of a sorted order with `value`.
__global__ void mark_value_kernel(const int64_t* sorted_ids, int64_t count, float* weight, float value) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < count; j += int64_t(gridDim.x) * blockDim.x)
    weight[sorted_ids[j]] = value;
}

__device__ inline uint64_t monotone_bits_dev(double d) {
  const uint64_t b = static_cast<uint64_t>(__double_as_longlong(d));
  return (b & 0x8000000000000000ull) ? ~b : (b | 0x8000000000000000ull);
}

// The CPU's sampling weight for the weighted rule (policies.cpp select_weighted): the score, with
// never-seen samples as likely as the best seen one, clipped at 0, raised to alpha.
__device__ inline double sampling_weight(float s, float max_seen, double alpha) {
  if (isnan(s)) s = max_seen;
  const double sd = s > 0.0f ? static_cast<double>(s) : 0.0;
  return alpha == 1.0 ? sd : (alpha == 2.0 ? sd * sd : (sd > 0.0 ? pow(sd, alpha) : 0.0));
}

// Efraimidis-Spirakis keys as on the CPU (sampling.cpp): -E/w as order-preserving bits, 0 when w = 0.
__global__ void weighted_keys_kernel(const float* stats, int64_t n, ScoreParams p, float max_seen, double alpha,
                                     uint64_t stream, uint64_t* keys, int64_t* ids) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const double w = sampling_weight(score_of(stats, i, p), max_seen, alpha);
    const double rank = -log(1.0 - to_unit(draw(stream, static_cast<uint64_t>(i)))) / w;
    keys[i] = w > 0.0 ? monotone_bits_dev(-rank) : 0ull;
    ids[i] = i;
  }
}

// Horvitz-Thompson weights 1/pi (pi = 1 - exp(-w tau), rank-conditioned) of the first `count`
// sorted ids; tau = +inf (every eligible item in) gives 1. Also sums them for normalisation.
__global__ void weighted_marks_kernel(const float* stats, const int64_t* sorted_ids, int64_t count, ScoreParams p,
                                      float max_seen, double alpha, double tau, float* weight, double* inv_prob_sum) {
  double local = 0.0;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < count; j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = sorted_ids[j];
    float mark = 1.0f;
    if (!isinf(tau)) {
      const double pi = -expm1(-sampling_weight(score_of(stats, i, p), max_seen, alpha) * tau);
      mark = static_cast<float>(1.0 / fmax(pi, 1e-30));
    }
    weight[i] = mark;
    local += mark;
  }
  atomicAdd(inv_prob_sum, local);
}

__global__ void scale_kernel(float* weight, int64_t n, double scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    if (weight[i] > 0.0f) weight[i] = static_cast<float>(weight[i] * scale);
}

uint64_t budget(double prune_ratio, int64_t n) {
  return static_cast<uint64_t>(std::llround((1.0 - prune_ratio) * static_cast<double>(n)));
}

// Sorts (key, id) pairs by key descending; equal keys keep ascending ids (the sort is stable and
// ids come in ascending), which is the CPU's tie order. Result in keys_out / ids_out.
void sort_desc(const uint64_t* keys, const int64_t* ids, uint64_t* keys_out, int64_t* ids_out, int64_t n,
               cudaStream_t s) {
  size_t temp_bytes = 0;
  check(cub::DeviceRadixSort::SortPairsDescending(nullptr, temp_bytes, keys, keys_out, ids, ids_out, n, 0, 64, s),
        "SortPairsDescending (size)");
  Scratch<unsigned char> temp(temp_bytes, s);
  check(cub::DeviceRadixSort::SortPairsDescending(temp.ptr, temp_bytes, keys, keys_out, ids, ids_out, n, 0, 64, s),
        "SortPairsDescending");
}

template <class T>
T read_back(const T* device_value, cudaStream_t s) {
  T host{};
  check(cudaMemcpyAsync(&host, device_value, sizeof(T), cudaMemcpyDeviceToHost, s), "cudaMemcpyAsync");
  check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
  return host;
}

}  // namespace

void reset(float* stats, int32_t* times, float* weight, int64_t n, uintptr_t stream) {
  reset_kernel<<<grid_for(n), kThreads, 0, as_stream(stream)>>>(stats, times, weight, n);
  check(cudaGetLastError(), "reset");
}

void update(const int64_t* ids, const float* loss, const float* memory, int64_t count, float* stats, int64_t n,
            float ema_decay, bool skip_nonfinite, unsigned long long* error, unsigned long long* skipped,
            uintptr_t stream) {
  if (count == 0) return;
  update_kernel<<<grid_for(count), kThreads, 0, as_stream(stream)>>>(ids, loss, memory, count, stats, n, ema_decay,
                                                                     skip_nonfinite, error, skipped);
  check(cudaGetLastError(), "update");
}

void gather_weights(const float* weight, int64_t n, const int64_t* ids, int64_t count, float* out, uintptr_t stream) {
  if (count == 0) return;
  gather_weights_kernel<<<grid_for(count), kThreads, 0, as_stream(stream)>>>(weight, n, ids, count, out);
  check(cudaGetLastError(), "gather_weights");
}

void compute_scores(const float* stats, int64_t n, ScoreParams score, float* out, uintptr_t stream) {
  scores_kernel<<<grid_for(n), kThreads, 0, as_stream(stream)>>>(stats, n, score, out);
  check(cudaGetLastError(), "compute_scores");
}

SelectSummary select_full(float* weight, int64_t n, uintptr_t stream) {
  fill_kernel<<<grid_for(n), kThreads, 0, as_stream(stream)>>>(weight, n, 1.0f);
  check(cudaGetLastError(), "select_full");
  return SelectSummary{};
}

// Mean, count and max of the seen samples' scores (partials per block, summed on the host in a fixed
// order). Synchronises.
struct SeenSummary {
  double mean = 0.0;
  uint64_t seen = 0;
  float max = 1.0f;
};

SeenSummary summarise_seen(const float* stats, int64_t n, ScoreParams score, cudaStream_t s) {
  Scratch<double> sums(kSumBlocks, s);
  Scratch<unsigned long long> counts(kSumBlocks, s);
  Scratch<float> maxes(kSumBlocks, s);
  seen_partials_kernel<<<kSumBlocks, kThreads, 0, s>>>(stats, n, score, sums.ptr, counts.ptr, maxes.ptr);
  check(cudaGetLastError(), "seen_partials");
  std::vector<double> host_sums(kSumBlocks);
  std::vector<unsigned long long> host_counts(kSumBlocks);
  std::vector<float> host_maxes(kSumBlocks);
  check(cudaMemcpyAsync(host_sums.data(), sums.ptr, kSumBlocks * sizeof(double), cudaMemcpyDeviceToHost, s), "copy");
  check(cudaMemcpyAsync(host_counts.data(), counts.ptr, kSumBlocks * sizeof(unsigned long long),
                        cudaMemcpyDeviceToHost, s), "copy");
  check(cudaMemcpyAsync(host_maxes.data(), maxes.ptr, kSumBlocks * sizeof(float), cudaMemcpyDeviceToHost, s), "copy");
  check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
  SeenSummary out;
  double total = 0.0;
  float mx = -std::numeric_limits<float>::infinity();
  for (unsigned b = 0; b < kSumBlocks; ++b) {
    total += host_sums[b];
    out.seen += host_counts[b];
    mx = std::max(mx, host_maxes[b]);
  }
  out.mean = out.seen > 0 ? total / static_cast<double>(out.seen) : 0.0;
  out.max = out.seen > 0 ? mx : 1.0f;
  return out;
}

// What a soft rule reports before it decides: the mean it compares against, and the unseen count.
SelectSummary soft_summary(const SeenSummary& seen, int64_t n) {
  SelectSummary out;
  out.threshold = seen.mean;
  out.unseen = static_cast<uint64_t>(n) - seen.seen;
  return out;
}

SelectSummary select_soft(const float* stats, int64_t n, ScoreParams score, double prune_ratio, uint64_t seed,
                          uint64_t epoch, float* weight, uintptr_t stream) {
  cudaStream_t s = as_stream(stream);
  const SeenSummary seen = summarise_seen(stats, n, score, s);
  SelectSummary out = soft_summary(seen, n);
  Scratch<unsigned long long> hard(1, s, true);
  const double keep_prob = 1.0 - prune_ratio;
  const uint64_t keep_below = static_cast<uint64_t>(std::ldexp(keep_prob, 32));
  soft_kernel<<<grid_for((n + 1) / 2), kThreads, 0, s>>>(stats, n, score, out.threshold, keep_below,
                                                           static_cast<float>(1.0 / keep_prob),
                                                           stream_key(seed, epoch, Purpose::Keep), weight, hard.ptr);
  check(cudaGetLastError(), "soft");
  out.above_threshold = read_back(hard.ptr, s);
  return out;
}

SelectSummary select_soft_exact(const float* stats, int64_t n, ScoreParams score, double prune_ratio, uint64_t seed,
                                uint64_t epoch, float* weight, uintptr_t stream) {
  cudaStream_t s = as_stream(stream);
  const SeenSummary seen = summarise_seen(stats, n, score, s);
  SelectSummary out = soft_summary(seen, n);
  const uint64_t k = budget(prune_ratio, n);
  Scratch<uint64_t> keys(n, s), keys_sorted(n, s);
  Scratch<int64_t> ids(n, s), ids_sorted(n, s);
  Scratch<unsigned long long> hard(1, s, true);
  soft_exact_keys_kernel<<<grid_for(n), kThreads, 0, s>>>(stats, n, score, seen.mean,
                                                          stream_key(seed, epoch, Purpose::Keep), keys.ptr, ids.ptr,
                                                          weight, hard.ptr);
  check(cudaGetLastError(), "soft_exact_keys");
  out.above_threshold = read_back(hard.ptr, s);
  if (out.above_threshold > k) {
    // More hard samples than the budget: the k best scores, weight 1 (as the CPU; no longer unbiased).
    out.budget_exceeded = true;
    Scratch<unsigned long long> unseen(1, s, true);
    topk_keys_kernel<<<grid_for(n), kThreads, 0, s>>>(stats, n, score, stream_key(seed, epoch, Purpose::TieBreak),
                                                      keys.ptr, ids.ptr, unseen.ptr);
    sort_desc(keys.ptr, ids.ptr, keys_sorted.ptr, ids_sorted.ptr, n, s);
    fill_kernel<<<grid_for(n), kThreads, 0, s>>>(weight, n, 0.0f);
    if (k > 0) mark_value_kernel<<<grid_for(k), kThreads, 0, s>>>(ids_sorted.ptr, k, weight, 1.0f);
    check(cudaGetLastError(), "soft_exact (budget exceeded)");
    return out;
  }
  // Exactly m = k - hard of the soft samples, uniformly, each weighted soft_count / m.
  const uint64_t m = k - out.above_threshold;
  const uint64_t soft_count = static_cast<uint64_t>(n) - out.above_threshold;
  if (m > 0) {
    sort_desc(keys.ptr, ids.ptr, keys_sorted.ptr, ids_sorted.ptr, n, s);
    mark_value_kernel<<<grid_for(m), kThreads, 0, s>>>(
        ids_sorted.ptr, m, weight, static_cast<float>(static_cast<double>(soft_count) / static_cast<double>(m)));
    check(cudaGetLastError(), "soft_exact");
  }
  return out;
}

SelectSummary select_weighted(const float* stats, int64_t n, ScoreParams score, double prune_ratio, double alpha,
                              bool normalize, uint64_t seed, uint64_t epoch, float* weight, uintptr_t stream) {
  cudaStream_t s = as_stream(stream);
  const SeenSummary seen = summarise_seen(stats, n, score, s);
  SelectSummary out;
  out.unseen = static_cast<uint64_t>(n) - seen.seen;
  const uint64_t k = budget(prune_ratio, n);
  Scratch<uint64_t> keys(n, s), keys_sorted(n, s);
  Scratch<int64_t> ids(n, s), ids_sorted(n, s);
  weighted_keys_kernel<<<grid_for(n), kThreads, 0, s>>>(stats, n, score, seen.max, alpha,
                                                        stream_key(seed, epoch, Purpose::Weighted), keys.ptr, ids.ptr);
  check(cudaGetLastError(), "weighted_keys");
  sort_desc(keys.ptr, ids.ptr, keys_sorted.ptr, ids_sorted.ptr, n, s);
  // Eligible items (key != 0) come first; tau is the rank of the (k+1)-th best, +inf if there is none.
  uint64_t next_key = 0;
  if (k < static_cast<uint64_t>(n)) next_key = read_back(keys_sorted.ptr + k, s);
  const double tau = next_key != 0 ? -from_monotone_bits(next_key) : INFINITY;
  // With tau = +inf only eligible items are in: count them (keys sorted, zeros last).
  uint64_t take = k;
  if (next_key == 0 && k > 0) {
    Scratch<int64_t> count(1, s);
    thrust::transform_iterator<NonZero, const uint64_t*> flags(keys_sorted.ptr, NonZero{});
    size_t temp_bytes = 0;
    check(cub::DeviceReduce::Sum(nullptr, temp_bytes, flags, count.ptr, n, s), "Reduce (size)");
    Scratch<unsigned char> temp(temp_bytes, s);
    check(cub::DeviceReduce::Sum(temp.ptr, temp_bytes, flags, count.ptr, n, s), "Reduce");
    take = std::min<uint64_t>(k, static_cast<uint64_t>(read_back(count.ptr, s)));
  }
  fill_kernel<<<grid_for(n), kThreads, 0, s>>>(weight, n, 0.0f);
  if (take == 0) return out;
  Scratch<double> inv_prob_sum(1, s, true);
  weighted_marks_kernel<<<grid_for(take), kThreads, 0, s>>>(stats, ids_sorted.ptr, take, score, seen.max, alpha, tau,
                                                            weight, inv_prob_sum.ptr);
  check(cudaGetLastError(), "weighted_marks");
  if (normalize) {
    const double total = read_back(inv_prob_sum.ptr, s);
    scale_kernel<<<grid_for(n), kThreads, 0, s>>>(weight, n, static_cast<double>(n) / total);
    check(cudaGetLastError(), "scale");
  }
  return out;
}

SelectSummary select_topk(const float* stats, int64_t n, ScoreParams score, double prune_ratio, double explore,
                          uint64_t seed, uint64_t epoch, float* weight, uintptr_t stream) {
  cudaStream_t s = as_stream(stream);
  const uint64_t k = budget(prune_ratio, n);
  const uint64_t greedy_k = static_cast<uint64_t>(std::llround((1.0 - explore) * static_cast<double>(k)));
  Scratch<uint64_t> keys(n, s), keys_sorted(n, s);
  Scratch<int64_t> ids(n, s), ids_sorted(n, s);
  Scratch<unsigned long long> unseen(1, s, true);
  topk_keys_kernel<<<grid_for(n), kThreads, 0, s>>>(stats, n, score, stream_key(seed, epoch, Purpose::TieBreak),
                                                    keys.ptr, ids.ptr, unseen.ptr);
  check(cudaGetLastError(), "topk_keys");
  fill_kernel<<<grid_for(n), kThreads, 0, s>>>(weight, n, 0.0f);
  if (greedy_k > 0) {  // (random is all explore: no score ranking needed)
    sort_desc(keys.ptr, ids.ptr, keys_sorted.ptr, ids_sorted.ptr, n, s);
    mark_value_kernel<<<grid_for(greedy_k), kThreads, 0, s>>>(ids_sorted.ptr, greedy_k, weight, 1.0f);
  }
  if (k > greedy_k) {
    explore_keys_kernel<<<grid_for(n), kThreads, 0, s>>>(weight, n, stream_key(seed, epoch, Purpose::Explore),
                                                         keys.ptr, ids.ptr);
    sort_desc(keys.ptr, ids.ptr, keys_sorted.ptr, ids_sorted.ptr, n, s);
    mark_value_kernel<<<grid_for(k - greedy_k), kThreads, 0, s>>>(ids_sorted.ptr, k - greedy_k, weight, 1.0f);
  }
  check(cudaGetLastError(), "topk");
  SelectSummary out;
  out.unseen = read_back(unseen.ptr, s);
  return out;
}

uint64_t count_kept(const float* weight, int64_t n, uintptr_t stream) {
  // A sum over flags computed on the fly: no N-sized buffer for a count.
  cudaStream_t s = as_stream(stream);
  Scratch<int64_t> count(1, s);
  thrust::transform_iterator<KeptFlag, thrust::counting_iterator<int64_t>> flags(thrust::counting_iterator<int64_t>(0),
                                                                                  KeptFlag{weight});
  size_t temp_bytes = 0;
  check(cub::DeviceReduce::Sum(nullptr, temp_bytes, flags, count.ptr, n, s), "Reduce (size)");
  Scratch<unsigned char> temp(temp_bytes, s);
  check(cub::DeviceReduce::Sum(temp.ptr, temp_bytes, flags, count.ptr, n, s), "Reduce");
  return static_cast<uint64_t>(read_back(count.ptr, s));
}

void gather_kept(const float* weight, int64_t n, uint64_t seed, uint64_t epoch, int32_t* times, int64_t* ids_out,
                 float* weights_out, uint64_t kept, uintptr_t stream) {
  if (kept == 0) return;
  cudaStream_t s = as_stream(stream);
  Scratch<int64_t> ordered(kept, s);
  Scratch<int64_t> count(1, s);
  thrust::counting_iterator<int64_t> ids(0);
  size_t temp_bytes = 0;
  check(cub::DeviceSelect::If(nullptr, temp_bytes, ids, ordered.ptr, count.ptr, n, IsKept{weight}, s), "Select (size)");
  {
    Scratch<unsigned char> temp(temp_bytes, s);
    check(cub::DeviceSelect::If(temp.ptr, temp_bytes, ids, ordered.ptr, count.ptr, n, IsKept{weight}, s), "Select");
  }
  // Shuffle: sort the kept ids by a random key per (seed, epoch, id).
  Scratch<uint64_t> keys(kept, s), keys_sorted(kept, s);
  shuffle_keys_kernel<<<grid_for(kept), kThreads, 0, s>>>(ordered.ptr, kept, stream_key(seed, epoch, Purpose::Shuffle),
                                                           keys.ptr);
  check(cudaGetLastError(), "shuffle_keys");
  temp_bytes = 0;
  check(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys.ptr, keys_sorted.ptr, ordered.ptr, ids_out,
                                        static_cast<int64_t>(kept), 0, 64, s), "SortPairs (size)");
  {
    Scratch<unsigned char> temp(temp_bytes, s);
    check(cub::DeviceRadixSort::SortPairs(temp.ptr, temp_bytes, keys.ptr, keys_sorted.ptr, ordered.ptr, ids_out,
                                          static_cast<int64_t>(kept), 0, 64, s), "SortPairs");
  }
  finish_gather_kernel<<<grid_for(kept), kThreads, 0, s>>>(ids_out, kept, weight, times, weights_out);
  check(cudaGetLastError(), "finish_gather");
}

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) return 0;
  return count;
}

}  // namespace cuda
}  // namespace emp
