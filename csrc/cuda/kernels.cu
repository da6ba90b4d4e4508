// CUDA kernels of the GPU path (see kernels.h). Random draws come from rng.h, the same
// counter-based SplitMix streams the CPU uses, so keep decisions match the CPU bit for bit; score
// and update arithmetic use explicit round-to-nearest intrinsics so nvcc cannot fuse a multiply-add
// the CPU build does not.
#include <cuda_runtime.h>

#include <cub/block/block_reduce.cuh>
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_reduce.cuh>
#include <cub/device/device_scan.cuh>
#include <cub/device/device_segmented_sort.cuh>
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

#include "selection/radix_select.h"
#include "core/rng.h"
#include "selection/sampling.h"
#include "selection/selection_common.h"
#include "cuda/kernels.h"

namespace emp {
namespace cuda {
namespace {

constexpr int kThreads = 256;

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err));
}

cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

// Blocks for a grid-stride loop over n items: enough to fill the GPU (8 blocks of 256 threads per
// SM), never more, so per-block work (a shared histogram, one atomic per block) stays small.
unsigned grid_for(int64_t n) {
  int device = 0, sms = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t(sms) * 8)));
}

// Adds the block's sum of `value` to *total with one atomic per block (every thread must call it).
template <class T>
__device__ void add_block_total(T value, T* total) {
  using Reduce = cub::BlockReduce<T, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  const T sum = Reduce(temp).Sum(value);
  if (threadIdx.x == 0 && sum != T(0)) atomicAdd(total, sum);
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

template <class T>
T read_back(const T* device_value, cudaStream_t s) {
  T host{};
  check(cudaMemcpyAsync(&host, device_value, sizeof(T), cudaMemcpyDeviceToHost, s), "cudaMemcpyAsync");
  check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
  return host;
}

__device__ inline float score_of(const float* stats, int64_t i, ScoreParams p) {
  // One 16-byte load (torch allocations are 256-byte aligned).
  const float4 r = reinterpret_cast<const float4*>(stats)[i];
  const float loss = r.x, memory = r.y, mean = r.z, var = r.w;
  switch (p.kind) {
    case kEmp: {
      const float weighted = __fmul_rn(p.loss_weight, loss);  // the CPU's arithmetic: exact for 1
      return isnan(memory) ? weighted : __fadd_rn(weighted, __fmul_rn(p.beta, memory));
    }
    case kMean:
      return mean;
    case kUcb:
      return __fadd_rn(mean, __fmul_rn(p.c, sqrtf(fmaxf(var, 0.0f))));
    default:
      return loss;
  }
}

__global__ void reset_kernel(float* stats, int32_t* times, float* weight, int64_t n) {
  const float nan = __int_as_float(0x7fc00000);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    stats[4 * i] = stats[4 * i + 1] = stats[4 * i + 2] = nan;
    stats[4 * i + 3] = 0.0f;  // loss_var: 0 as on the CPU (store.cpp reset)
    times[i] = 0;
    weight[i] = 1.0f;
  }
}

// The batch arrives sorted by id (stable, so equal ids keep their call order) with `order` holding
// each entry's position in the caller's batch. The thread at the start of a run of equal ids applies
// the whole run in order: no two threads ever touch one sample, and duplicates (normal with padding
// plus all-gather) are applied exactly as on the CPU, every value seen, the last write winning.
__global__ void update_kernel(const int64_t* ids, const float* loss, const float* memory, const int64_t* order,
                              int64_t count, float* stats, int64_t n, float ema_decay, bool skip_nonfinite,
                              unsigned long long* error, unsigned long long* skipped) {
  const float alpha = __fsub_rn(1.0f, ema_decay);
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < count; j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t id = ids[j];
    if (j > 0 && ids[j - 1] == id) continue;  // inside a run: its first thread applies it
    for (int64_t k = j; k < count && ids[k] == id; ++k) {
      const unsigned long long where = static_cast<unsigned long long>(order[k]);
      if (id < 0 || id >= n) {
        atomicMin(error, (where << 2) | 1ull);
        continue;
      }
      const float x = loss[k];
      const float m = memory != nullptr ? memory[k] : __int_as_float(0x7fc00000);
      const bool bad_loss = !isfinite(x), bad_mem = memory != nullptr && !isfinite(m);
      if (bad_loss || bad_mem) {
        if (skip_nonfinite)
          atomicAdd(skipped, 1ull);
        else
          atomicMin(error, (where << 2) | (bad_loss ? 2ull : 3ull));
        continue;
      }
      float* s = stats + 4 * id;
      if (isnan(s[2])) {
        s[2] = x;
        s[3] = 0.0f;
      } else {
        // Same EMA as the CPU (update.cpp), one rounding per operation.
        const float d = __fsub_rn(x, s[2]);
        s[2] = __fadd_rn(s[2], __fmul_rn(alpha, d));
        s[3] = __fmul_rn(ema_decay, __fadd_rn(s[3], __fmul_rn(__fmul_rn(alpha, d), d)));
      }
      s[0] = x;
      if (memory != nullptr) s[1] = m;
    }
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
  add_block_total(hard, hard_total);
}

// ---------------------------------------------------------------------------------- rank keys
// Every top-k ranks 64-bit keys computed on the fly (key 0 = not eligible), exactly the CPU's keys
// (rule_*.cpp, sampling.cpp), so the shared radix selection finds the same threshold.

// Top-k by score (selection_common.h score_key): score bits on top, a tie-break draw below.
struct ScoreKey {
  const float* stats;
  ScoreParams p;
  uint64_t tie_stream;
  __device__ uint64_t operator()(int64_t i) const {
    return score_key(score_of(stats, i, p), tie_stream, static_cast<uint64_t>(i));
  }
};

// Explore share of a top-k: a uniform draw for every sample the greedy part left out (weight 0).
struct ExploreKey {
  const float* weight;
  uint64_t explore_stream;
  __device__ uint64_t operator()(int64_t i) const {
    return weight[i] > 0.0f ? 0ull : (draw(explore_stream, static_cast<uint64_t>(i)) | 1ull);
  }
};

// Exact-budget soft rule: a uniform draw for soft samples (score < mean), 0 for hard ones.
struct SoftKey {
  const float* stats;
  ScoreParams p;
  double mean;
  uint64_t keep_stream;
  __device__ uint64_t operator()(int64_t i) const {
    const bool is_hard = !(static_cast<double>(score_of(stats, i, p)) < mean);  // NaN (never seen) is hard
    return is_hard ? 0ull : (draw(keep_stream, static_cast<uint64_t>(i)) | 1ull);
  }
};

// The CPU's sampling weight for the weighted rule (rule_topk.cpp select_weighted): the score, with
// never-seen samples as likely as the best seen one, clipped at 0, raised to alpha.
__device__ inline double sampling_weight(float s, float max_seen, double alpha) {
  if (isnan(s)) s = max_seen;
  const double sd = s > 0.0f ? static_cast<double>(s) : 0.0;
  return alpha == 1.0 ? sd : (alpha == 2.0 ? sd * sd : (sd > 0.0 ? pow(sd, alpha) : 0.0));
}

// Efraimidis-Spirakis keys as on the CPU (sampling.cpp): -E/w as order-preserving bits, 0 when w = 0.
struct WeightedKey {
  const float* stats;
  ScoreParams p;
  float max_seen;
  double alpha;
  uint64_t stream;
  __device__ uint64_t operator()(int64_t i) const {
    const double w = sampling_weight(score_of(stats, i, p), max_seen, alpha);
    if (!(w > 0.0)) return 0ull;
    const double rank = -log(1.0 - to_unit(draw(stream, static_cast<uint64_t>(i)))) / w;
    return monotone_bits(-rank);
  }
};

// ------------------------------------------------------------------------- radix selection passes
// Digit counts of the eligible keys under a prefix: a shared-memory histogram per block, flushed
// with one atomic per non-empty bin.
template <class KeyFn>
__global__ void digit_histogram_kernel(KeyFn key_of, int64_t n, uint64_t prefix, uint64_t mask, int shift,
                                       uint32_t digit_mask, unsigned long long* counts) {
  extern __shared__ unsigned int bins[];
  for (uint32_t b = threadIdx.x; b <= digit_mask; b += blockDim.x) bins[b] = 0;
  __syncthreads();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t key = key_of(i);
    if (key != 0 && (key & mask) == prefix) atomicAdd(&bins[(key >> shift) & digit_mask], 1u);
  }
  __syncthreads();
  for (uint32_t b = threadIdx.x; b <= digit_mask; b += blockDim.x)
    if (bins[b] != 0) atomicAdd(&counts[b], static_cast<unsigned long long>(bins[b]));
}

// The eligible (key, id) pairs under a prefix, in any order (the host orders them).
template <class KeyFn>
__global__ void gather_candidates_kernel(KeyFn key_of, int64_t n, uint64_t prefix, uint64_t mask, RankCandidate* out,
                                         unsigned long long capacity, unsigned long long* found) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t key = key_of(i);
    if (key != 0 && (key & mask) == prefix) {
      const unsigned long long slot = atomicAdd(found, 1ull);
      if (slot < capacity) out[slot] = RankCandidate{key, i};
    }
  }
}

// 12-bit digits (a 16 KiB shared histogram) and a host-side finish once at most 64Ki keys are left:
// typically two histogram passes and one gather pass over the keys.
constexpr RadixPlan kDevicePlan{12, uint64_t(1) << 16};

// The k-th best (key, id) under key_of on the device: radix_threshold (radix_select.h, the CPU's
// driver) with kernel passes. Synchronises once per pass.
template <class KeyFn>
RankThreshold device_threshold(KeyFn key_of, int64_t n, uint64_t k, cudaStream_t s) {
  const unsigned blocks = grid_for(n);
  Scratch<unsigned long long> counts(size_t(1) << kDevicePlan.digit_bits, s);
  auto histogram = [&](uint64_t prefix, uint64_t mask, int shift, int bits, uint64_t* out) {
    const size_t bins = size_t(1) << bits;
    check(cudaMemsetAsync(counts.ptr, 0, bins * sizeof(unsigned long long), s), "cudaMemsetAsync");
    digit_histogram_kernel<<<blocks, kThreads, bins * sizeof(unsigned int), s>>>(
        key_of, n, prefix, mask, shift, static_cast<uint32_t>(bins - 1), counts.ptr);
    check(cudaGetLastError(), "digit_histogram");
    static_assert(sizeof(unsigned long long) == sizeof(uint64_t), "64-bit counters");
    check(cudaMemcpyAsync(out, counts.ptr, bins * sizeof(uint64_t), cudaMemcpyDeviceToHost, s), "cudaMemcpyAsync");
    check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
  };
  auto gather = [&](uint64_t prefix, uint64_t mask, uint64_t expected) {
    std::vector<RankCandidate> host(expected);
    Scratch<RankCandidate> cand(expected, s);
    Scratch<unsigned long long> found(1, s, true);
    gather_candidates_kernel<<<blocks, kThreads, 0, s>>>(key_of, n, prefix, mask, cand.ptr, expected, found.ptr);
    check(cudaGetLastError(), "gather_candidates");
    const unsigned long long got = read_back(found.ptr, s);
    if (got != expected)
      throw std::logic_error("device radix select: gathered " + std::to_string(got) + " keys, the histogram counted " +
                             std::to_string(expected));
    if (expected > 0) {
      check(cudaMemcpyAsync(host.data(), cand.ptr, expected * sizeof(RankCandidate), cudaMemcpyDeviceToHost, s),
            "cudaMemcpyAsync");
      check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
    }
    return host;
  };
  return radix_threshold(k, kDevicePlan, histogram, gather);
}

// weight[i] = decide(i, key, within the threshold, old weight) for every i: one pass that turns a
// threshold into this epoch's weights.
template <class KeyFn, class Decide>
__global__ void decide_kernel(KeyFn key_of, int64_t n, RankThreshold t, Decide decide, float* weight) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t key = key_of(i);
    weight[i] = decide(i, key, within(key, i, t), weight[i]);
  }
}

template <class KeyFn, class Decide>
void decide(KeyFn key_of, int64_t n, const RankThreshold& t, Decide d, float* weight, cudaStream_t s) {
  decide_kernel<<<grid_for(n), kThreads, 0, s>>>(key_of, n, t, d, weight);
  check(cudaGetLastError(), "decide");
}

// Weight `value` inside the threshold, 0 outside.
struct Assign {
  float value;
  __device__ float operator()(int64_t, uint64_t, bool in, float) const { return in ? value : 0.0f; }
};

// Adds the explore picks to the greedy ones already marked.
struct AddPicks {
  __device__ float operator()(int64_t, uint64_t, bool in, float old) const { return in ? 1.0f : old; }
};

// Exact-budget soft rule: hard samples (key 0) keep weight 1, picked soft ones soft_count / m.
struct SoftExactWeight {
  float soft_weight;
  __device__ float operator()(int64_t, uint64_t key, bool in, float) const {
    return key == 0 ? 1.0f : (in ? soft_weight : 0.0f);
  }
};

// Weighted rule: the k best are those inside the (k+1)-th threshold except that item itself; their
// weight is the rank-conditioned Horvitz-Thompson 1/pi, pi = 1 - exp(-w tau) (1 when tau = +inf).
struct WeightedMark {
  const float* stats;
  ScoreParams p;
  float max_seen;
  double alpha;
  double tau;
  uint64_t next_key;
  int64_t next_id;
  __device__ float operator()(int64_t i, uint64_t key, bool in, float) const {
    if (!in || (key == next_key && i == next_id)) return 0.0f;
    if (isinf(tau)) return 1.0f;
    const double pi = -expm1(-sampling_weight(score_of(stats, i, p), max_seen, alpha) * tau);
    return static_cast<float>(1.0 / fmax(pi, 1e-30));
  }
};

// --------------------------------------------------------------------------------- counting
struct KeptFlag {
  const float* weight;
  __device__ int64_t operator()(int64_t i) const { return weight[i] > 0.0f ? 1 : 0; }
};

struct UnseenFlag {
  const float* stats;
  __device__ int64_t operator()(int64_t i) const { return isnan(stats[4 * i]) ? 1 : 0; }
};

struct HardFlag {
  SoftKey key;
  __device__ int64_t operator()(int64_t i) const { return key(i) == 0 ? 1 : 0; }
};

struct WeightValue {
  const float* weight;
  __device__ double operator()(int64_t i) const { return static_cast<double>(weight[i]); }
};

// Sum of f(i) over i < n, by a device reduction over values computed on the fly (no N-sized
// buffer; a fixed reduction tree, so the result is the same run to run). Synchronises.
template <class T, class F>
T device_sum(F f, int64_t n, cudaStream_t s) {
  Scratch<T> total(1, s);
  thrust::transform_iterator<F, thrust::counting_iterator<int64_t>> values(thrust::counting_iterator<int64_t>(0), f);
  size_t temp_bytes = 0;
  check(cub::DeviceReduce::Sum(nullptr, temp_bytes, values, total.ptr, n, s), "Reduce (size)");
  Scratch<unsigned char> temp(temp_bytes, s);
  check(cub::DeviceReduce::Sum(temp.ptr, temp_bytes, values, total.ptr, n, s), "Reduce");
  return read_back(total.ptr, s);
}

__global__ void scale_kernel(float* weight, int64_t n, double scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    if (weight[i] > 0.0f) weight[i] = static_cast<float>(weight[i] * scale);
}

// -------------------------------------------------------------------------------- shuffle
// Kept ids are shuffled in two levels, as on the CPU (Sanders 1998): each id goes to a uniformly
// random bucket of ~1Ki ids (a stable sort on the few bucket bits), then each bucket is ordered by
// a random 64-bit key (a segmented sort in on-chip memory). Conditional on the bucket sizes every
// order is equally likely, so the permutation is uniform up to 64-bit key ties (which keep id order,
// so the result is deterministic), at a fraction of the cost of a full 64-bit sort of the kept ids.
constexpr int kLogBucketSize = 10;

__global__ void bucket_of_kernel(const int64_t* ids, int64_t count, uint64_t bucket_stream, int log_buckets,
                                 uint32_t* bucket, unsigned long long* bucket_size) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < count; j += int64_t(gridDim.x) * blockDim.x) {
    const uint32_t b = log_buckets == 0
                           ? 0u
                           : static_cast<uint32_t>(draw(bucket_stream, static_cast<uint64_t>(ids[j])) >> (64 - log_buckets));
    bucket[j] = b;
    atomicAdd(&bucket_size[b], 1ull);
  }
}

__global__ void order_keys_kernel(const int64_t* ids, int64_t count, uint64_t order_stream, uint64_t* keys) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < count; j += int64_t(gridDim.x) * blockDim.x)
    keys[j] = draw(order_stream, static_cast<uint64_t>(ids[j]));
}

__global__ void finish_gather_kernel(const int64_t* ids, int64_t count, const float* weight, int32_t* times,
                                     float* weights_out) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < count; j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t id = ids[j];
    weights_out[j] = weight[id];
    // ids are distinct: no race. Saturating at UINT32_MAX (the bits the CPU's uint32 counter stops at).
    if (times != nullptr && static_cast<uint32_t>(times[id]) != 0xFFFFFFFFu) times[id] += 1;
  }
}

struct IsKept {
  const float* weight;
  __device__ bool operator()(int64_t i) const { return weight[i] > 0.0f; }
};

}  // namespace

void reset(float* stats, int32_t* times, float* weight, int64_t n, uintptr_t stream) {
  reset_kernel<<<grid_for(n), kThreads, 0, as_stream(stream)>>>(stats, times, weight, n);
  check(cudaGetLastError(), "reset");
}

void update(const int64_t* ids, const float* loss, const float* memory, const int64_t* order, int64_t count,
            float* stats, int64_t n, float ema_decay, bool skip_nonfinite, unsigned long long* error,
            unsigned long long* skipped, uintptr_t stream) {
  if (count == 0) return;
  update_kernel<<<grid_for(count), kThreads, 0, as_stream(stream)>>>(ids, loss, memory, order, count, stats, n,
                                                                     ema_decay, skip_nonfinite, error, skipped);
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

// Mean, count and max of the seen samples' scores (partials per block, combined on the host in a
// fixed order, as the CPU combines its blocks). Synchronises.
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
  return combine_seen(kSumBlocks, host_sums.data(), host_counts.data(), host_maxes.data());
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
  const uint64_t k = budget(prune_ratio, static_cast<uint64_t>(n));
  const SoftKey soft_key{stats, score, seen.mean, stream_key(seed, epoch, Purpose::Keep)};
  out.above_threshold = static_cast<uint64_t>(device_sum<int64_t>(HardFlag{soft_key}, n, s));
  if (out.above_threshold > k) {
    // More hard samples than the budget: the k best scores, weight 1 (as the CPU; no longer unbiased).
    out.budget_exceeded = true;
    const ScoreKey best_key{stats, score, stream_key(seed, epoch, Purpose::TieBreak)};
    decide(best_key, n, device_threshold(best_key, n, k, s), Assign{1.0f}, weight, s);
    return out;
  }
  // Exactly m = k - hard of the soft samples, uniformly, each weighted soft_count / m.
  const uint64_t m = k - out.above_threshold;
  const uint64_t soft_count = static_cast<uint64_t>(n) - out.above_threshold;
  const float soft_weight = m > 0 ? static_cast<float>(static_cast<double>(soft_count) / static_cast<double>(m)) : 0.0f;
  decide(soft_key, n, device_threshold(soft_key, n, m, s), SoftExactWeight{soft_weight}, weight, s);
  return out;
}

SelectSummary select_weighted(const float* stats, int64_t n, ScoreParams score, double prune_ratio, double alpha,
                              bool normalize, uint64_t seed, uint64_t epoch, float* weight, uintptr_t stream) {
  cudaStream_t s = as_stream(stream);
  const SeenSummary seen = summarise_seen(stats, n, score, s);
  SelectSummary out;
  out.unseen = static_cast<uint64_t>(n) - seen.seen;
  const uint64_t k = budget(prune_ratio, static_cast<uint64_t>(n));
  const WeightedKey key{stats, score, seen.max, alpha, stream_key(seed, epoch, Purpose::Weighted)};
  // tau is the rank of the (k+1)-th best; with at most k eligible every eligible item is in (tau = +inf).
  const RankThreshold next = device_threshold(key, n, k + 1, s);
  const double tau = next.all ? INFINITY : -from_monotone_bits(next.key);
  decide(key, n, next, WeightedMark{stats, score, seen.max, alpha, tau, next.all ? 0ull : next.key, next.id},
         weight, s);
  if (normalize && k > 0) {
    const double total = device_sum<double>(WeightValue{weight}, n, s);
    if (total > 0.0) {
      scale_kernel<<<grid_for(n), kThreads, 0, s>>>(weight, n, static_cast<double>(n) / total);
      check(cudaGetLastError(), "scale");
    }
  }
  return out;
}

SelectSummary select_topk(const float* stats, int64_t n, ScoreParams score, double prune_ratio, double explore,
                          uint64_t seed, uint64_t epoch, float* weight, uintptr_t stream) {
  cudaStream_t s = as_stream(stream);
  const uint64_t k = budget(prune_ratio, static_cast<uint64_t>(n));
  const uint64_t greedy_k = static_cast<uint64_t>(std::llround((1.0 - explore) * static_cast<double>(k)));
  SelectSummary out;
  out.unseen = static_cast<uint64_t>(device_sum<int64_t>(UnseenFlag{stats}, n, s));
  if (greedy_k > 0) {
    const ScoreKey key{stats, score, stream_key(seed, epoch, Purpose::TieBreak)};
    decide(key, n, device_threshold(key, n, greedy_k, s), Assign{1.0f}, weight, s);
  } else {  // random is all explore: no score ranking needed
    fill_kernel<<<grid_for(n), kThreads, 0, s>>>(weight, n, 0.0f);
    check(cudaGetLastError(), "fill");
  }
  if (k > greedy_k) {
    const ExploreKey key{weight, stream_key(seed, epoch, Purpose::Explore)};
    decide(key, n, device_threshold(key, n, k - greedy_k, s), AddPicks{}, weight, s);
  }
  return out;
}

uint64_t count_kept(const float* weight, int64_t n, uintptr_t stream) {
  return static_cast<uint64_t>(device_sum<int64_t>(KeptFlag{weight}, n, as_stream(stream)));
}

void gather_kept(const float* weight, int64_t n, uint64_t seed, uint64_t epoch, int32_t* times, int64_t* ids_out,
                 float* weights_out, uint64_t kept, uintptr_t stream) {
  if (kept == 0) return;
  cudaStream_t s = as_stream(stream);
  const int64_t count = static_cast<int64_t>(kept);
  // 1. The kept ids, ascending.
  Scratch<int64_t> ordered(kept, s);
  {
    Scratch<int64_t> selected(1, s);
    thrust::counting_iterator<int64_t> ids(0);
    size_t temp_bytes = 0;
    check(cub::DeviceSelect::If(nullptr, temp_bytes, ids, ordered.ptr, selected.ptr, n, IsKept{weight}, s),
          "Select (size)");
    Scratch<unsigned char> temp(temp_bytes, s);
    check(cub::DeviceSelect::If(temp.ptr, temp_bytes, ids, ordered.ptr, selected.ptr, n, IsKept{weight}, s), "Select");
  }
  // 2. A random bucket per id; stable sort by bucket (ids stay ascending inside a bucket).
  int log_buckets = 0;
  while (log_buckets < 30 && (kept >> (log_buckets + 1 + kLogBucketSize)) > 0) ++log_buckets;
  const uint64_t buckets = uint64_t(1) << log_buckets;
  const uint64_t shuffle_key = stream_key(seed, epoch, Purpose::Shuffle);
  Scratch<uint32_t> bucket(kept, s), bucket_sorted(kept, s);
  Scratch<unsigned long long> bucket_size(buckets + 1, s, true);  // the last entry stays 0: the scan's total
  Scratch<int64_t> by_bucket(kept, s);
  bucket_of_kernel<<<grid_for(count), kThreads, 0, s>>>(ordered.ptr, count, shuffle_key, log_buckets, bucket.ptr,
                                                         bucket_size.ptr);
  check(cudaGetLastError(), "bucket_of");
  if (log_buckets > 0) {
    size_t temp_bytes = 0;
    check(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, bucket.ptr, bucket_sorted.ptr, ordered.ptr,
                                          by_bucket.ptr, count, 0, log_buckets, s), "SortPairs (size)");
    Scratch<unsigned char> temp(temp_bytes, s);
    check(cub::DeviceRadixSort::SortPairs(temp.ptr, temp_bytes, bucket.ptr, bucket_sorted.ptr, ordered.ptr,
                                          by_bucket.ptr, count, 0, log_buckets, s), "SortPairs");
  } else {
    check(cudaMemcpyAsync(by_bucket.ptr, ordered.ptr, kept * sizeof(int64_t), cudaMemcpyDeviceToDevice, s),
          "cudaMemcpyAsync");
  }
  // 3. Bucket offsets (exclusive scan of the sizes; offsets[buckets] = kept).
  Scratch<unsigned long long> offsets(buckets + 1, s);
  {
    size_t temp_bytes = 0;
    check(cub::DeviceScan::ExclusiveSum(nullptr, temp_bytes, bucket_size.ptr, offsets.ptr,
                                        static_cast<int64_t>(buckets + 1), s), "ExclusiveSum (size)");
    Scratch<unsigned char> temp(temp_bytes, s);
    check(cub::DeviceScan::ExclusiveSum(temp.ptr, temp_bytes, bucket_size.ptr, offsets.ptr,
                                        static_cast<int64_t>(buckets + 1), s), "ExclusiveSum");
  }
  // 4. Inside each bucket, order by a random key from an independent stream (stable: ties keep id order).
  Scratch<uint64_t> keys(kept, s), keys_sorted(kept, s);
  order_keys_kernel<<<grid_for(count), kThreads, 0, s>>>(by_bucket.ptr, count, splitmix64(shuffle_key ^ 0x5DEECE66Dull),
                                                          keys.ptr);
  check(cudaGetLastError(), "order_keys");
  {
    size_t temp_bytes = 0;
    check(cub::DeviceSegmentedSort::StableSortPairs(nullptr, temp_bytes, keys.ptr, keys_sorted.ptr, by_bucket.ptr,
                                                    ids_out, count, static_cast<int64_t>(buckets), offsets.ptr,
                                                    offsets.ptr + 1, s), "SegmentedSort (size)");
    Scratch<unsigned char> temp(temp_bytes, s);
    check(cub::DeviceSegmentedSort::StableSortPairs(temp.ptr, temp_bytes, keys.ptr, keys_sorted.ptr, by_bucket.ptr,
                                                    ids_out, count, static_cast<int64_t>(buckets), offsets.ptr,
                                                    offsets.ptr + 1, s), "SegmentedSort");
  }
  finish_gather_kernel<<<grid_for(count), kThreads, 0, s>>>(ids_out, count, weight, times, weights_out);
  check(cudaGetLastError(), "finish_gather");
}

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) return 0;
  return count;
}

}  // namespace cuda
}  // namespace emp
