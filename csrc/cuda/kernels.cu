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

#include "../rng.h"
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
  Scratch(size_t count, cudaStream_t s) : stream(s) {
    if (count > 0) check(cudaMallocAsync(reinterpret_cast<void**>(&ptr), count * sizeof(T), s), "cudaMallocAsync");
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
                                     unsigned long long* counts) {
  __shared__ double s_sum[kThreads];
  __shared__ unsigned long long s_cnt[kThreads];
  double sum = 0.0;
  unsigned long long cnt = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float v = score_of(stats, i, p);
    if (!isnan(v)) {
      sum += v;
      ++cnt;
    }
  }
  s_sum[threadIdx.x] = sum;
  s_cnt[threadIdx.x] = cnt;
  __syncthreads();
  for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      s_sum[threadIdx.x] += s_sum[threadIdx.x + half];
      s_cnt[threadIdx.x] += s_cnt[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    sums[blockIdx.x] = s_sum[0];
    counts[blockIdx.x] = s_cnt[0];
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

// Marks the first `count` ids of a sorted order as kept (weight 1).
__global__ void mark_kernel(const int64_t* sorted_ids, int64_t count, float* weight) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < count; j += int64_t(gridDim.x) * blockDim.x)
    weight[sorted_ids[j]] = 1.0f;
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

SelectSummary select_soft(const float* stats, int64_t n, ScoreParams score, double prune_ratio, uint64_t seed,
                          uint64_t epoch, float* weight, uintptr_t stream) {
  cudaStream_t s = as_stream(stream);
  Scratch<double> sums(kSumBlocks, s);
  Scratch<unsigned long long> counts(kSumBlocks + 1, s);  // the last slot counts hard samples
  seen_partials_kernel<<<kSumBlocks, kThreads, 0, s>>>(stats, n, score, sums.ptr, counts.ptr);
  check(cudaGetLastError(), "seen_partials");
  double host_sums[kSumBlocks];
  unsigned long long host_counts[kSumBlocks];
  check(cudaMemcpyAsync(host_sums, sums.ptr, sizeof(host_sums), cudaMemcpyDeviceToHost, s), "cudaMemcpyAsync");
  check(cudaMemcpyAsync(host_counts, counts.ptr, sizeof(host_counts), cudaMemcpyDeviceToHost, s), "cudaMemcpyAsync");
  check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
  double total = 0.0;
  uint64_t seen = 0;
  for (unsigned b = 0; b < kSumBlocks; ++b) {
    total += host_sums[b];
    seen += host_counts[b];
  }
  SelectSummary out;
  out.threshold = seen > 0 ? total / static_cast<double>(seen) : 0.0;
  out.unseen = static_cast<uint64_t>(n) - seen;
  const double keep_prob = 1.0 - prune_ratio;
  const uint64_t keep_below = static_cast<uint64_t>(std::ldexp(keep_prob, 32));
  check(cudaMemsetAsync(counts.ptr + kSumBlocks, 0, sizeof(unsigned long long), s), "cudaMemsetAsync");
  soft_kernel<<<grid_for((n + 1) / 2), kThreads, 0, s>>>(stats, n, score, out.threshold, keep_below,
                                                           static_cast<float>(1.0 / keep_prob),
                                                           stream_key(seed, epoch, Purpose::Keep), weight,
                                                           counts.ptr + kSumBlocks);
  check(cudaGetLastError(), "soft");
  out.above_threshold = read_back(counts.ptr + kSumBlocks, s);
  return out;
}

SelectSummary select_topk(const float* stats, int64_t n, ScoreParams score, double prune_ratio, double explore,
                          uint64_t seed, uint64_t epoch, float* weight, uintptr_t stream) {
  cudaStream_t s = as_stream(stream);
  const uint64_t k = budget(prune_ratio, n);
  const uint64_t greedy_k = static_cast<uint64_t>(std::llround((1.0 - explore) * static_cast<double>(k)));
  Scratch<uint64_t> keys(n, s), keys_sorted(n, s);
  Scratch<int64_t> ids(n, s), ids_sorted(n, s);
  Scratch<unsigned long long> unseen(1, s);
  check(cudaMemsetAsync(unseen.ptr, 0, sizeof(unsigned long long), s), "cudaMemsetAsync");
  topk_keys_kernel<<<grid_for(n), kThreads, 0, s>>>(stats, n, score, stream_key(seed, epoch, Purpose::TieBreak),
                                                    keys.ptr, ids.ptr, unseen.ptr);
  check(cudaGetLastError(), "topk_keys");
  fill_kernel<<<grid_for(n), kThreads, 0, s>>>(weight, n, 0.0f);
  if (greedy_k > 0) {  // (random is all explore: no score ranking needed)
    sort_desc(keys.ptr, ids.ptr, keys_sorted.ptr, ids_sorted.ptr, n, s);
    mark_kernel<<<grid_for(greedy_k), kThreads, 0, s>>>(ids_sorted.ptr, greedy_k, weight);
  }
  if (k > greedy_k) {
    explore_keys_kernel<<<grid_for(n), kThreads, 0, s>>>(weight, n, stream_key(seed, epoch, Purpose::Explore),
                                                         keys.ptr, ids.ptr);
    sort_desc(keys.ptr, ids.ptr, keys_sorted.ptr, ids_sorted.ptr, n, s);
    mark_kernel<<<grid_for(k - greedy_k), kThreads, 0, s>>>(ids_sorted.ptr, k - greedy_k, weight);
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
