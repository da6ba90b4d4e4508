// Deterministic parallel loops: work is cut into fixed-size blocks whose results are combined in
// block order, so sums and compactions are bit-identical for any number of threads.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace emp {

constexpr size_t kBlock = size_t(1) << 16;

inline size_t num_blocks(size_t n) { return (n + kBlock - 1) / kBlock; }

inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline void set_threads(int n) {
#ifdef _OPENMP
  omp_set_num_threads(n < 1 ? 1 : n);
#else
  (void)n;
#endif
}

// The threads the parallel regions of the current call use: set for one call by CallThreads (0:
// all of max_threads()). Read by the thread that opens each region.
inline int& call_thread_limit() {
  static thread_local int limit = 0;
  return limit;
}

inline int team_size() {
  const int limit = call_thread_limit();
  return limit > 0 ? limit : max_threads();
}

class CallThreads {
 public:
  explicit CallThreads(int threads) : saved_(call_thread_limit()) { call_thread_limit() = threads; }
  ~CallThreads() { call_thread_limit() = saved_; }
  CallThreads(const CallThreads&) = delete;
  CallThreads& operator=(const CallThreads&) = delete;

 private:
  int saved_;
};

// Calls body(block_index, begin, end) for every block, in parallel. Blocks are handed out as
// threads come free (dynamic): when another process holds a core, the thread that has one takes
// the rest, where a static split would wait for the thread that has none. Results are combined by
// block index, so they do not depend on which thread ran a block.
template <class Body>
void for_blocks(size_t n, Body body) {
  const int64_t nb = static_cast<int64_t>(num_blocks(n));
#pragma omp parallel for schedule(dynamic, 1) if (nb > 1) num_threads(team_size())
  for (int64_t b = 0; b < nb; ++b) {
    const size_t begin = static_cast<size_t>(b) * kBlock;
    const size_t end = begin + kBlock < n ? begin + kBlock : n;
    body(static_cast<size_t>(b), begin, end);
  }
}

// The sum over the blocks of [0, n) of block_sum(begin, end), combined in block order: the same
// result (floating point included) for any number of threads.
template <class T, class BlockSum>
T sum_blocks(size_t n, BlockSum block_sum) {
  std::vector<T> part(num_blocks(n), T(0));
  for_blocks(n, [&](size_t b, size_t begin, size_t end) { part[b] = block_sum(begin, end); });
  T total = T(0);
  for (const T& p : part) total += p;
  return total;
}

// Exclusive prefix sum in place; returns the total.
inline uint64_t exclusive_scan(std::vector<uint64_t>& v) {
  uint64_t run = 0;
  for (auto& x : v) {
    const uint64_t c = x;
    x = run;
    run += c;
  }
  return run;
}

}  // namespace emp
