// Counter-based random numbers: every draw is a pure function of (stream key, counter), so a
// selection depends only on (seed, epoch, sample id) and never on thread count or call order.
#pragma once
#include <cstdint>

// The CUDA kernels include this header too, so the GPU draws the very same numbers.
#ifdef __CUDACC__
#define EMP_HD __host__ __device__
#else
#define EMP_HD
#endif

namespace emp {

// SplitMix64 finaliser (Steele, Lea, Flood 2014): a bijective 64-bit mixer that passes BigCrush
// when fed a counter.
EMP_HD inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// What a stream is used for; distinct purposes give independent streams for the same epoch.
enum class Purpose : uint64_t { Keep = 1, TieBreak = 2, Shuffle = 3, ShuffleBucket = 4, Explore = 5, Weighted = 6, Sweep = 7,
                              Coverage = 8, Seta = 9 };

EMP_HD inline uint64_t stream_key(uint64_t seed, uint64_t epoch, Purpose purpose) {
  return splitmix64(splitmix64(splitmix64(seed) ^ epoch) ^ static_cast<uint64_t>(purpose));
}

// The counter-th value of a stream: the SplitMix64 sequence started at `key`.
EMP_HD inline uint64_t draw(uint64_t key, uint64_t counter) {
  return splitmix64(key + counter * 0x9E3779B97F4A7C15ull);
}

// Uniform double in [0, 1) with 53 random bits.
EMP_HD inline double to_unit(uint64_t bits) { return static_cast<double>(bits >> 11) * 0x1.0p-53; }

// Uniform integer in [0, bound) by Lemire's multiply-shift; the bias is below bound / 2^64.
EMP_HD inline uint64_t bounded(uint64_t bits, uint64_t bound) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(bits) * bound) >> 64);
}

}  // namespace emp
