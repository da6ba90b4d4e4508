// What the CPU selection (rule_*.cpp) and the GPU selection (cuda/kernels.cu) must compute the
// same way to keep the same samples: the budget k, the top-k rank key of a score, and how per-block
// summaries of the seen scores combine. One definition, used by both.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "core/rng.h"       // EMP_HD, draw
#include "selection/sampling.h"  // monotone_bits

namespace emp {

// k = round((1 - r) N), half away from zero.
inline uint64_t budget(double prune_ratio, uint64_t n) {
  return static_cast<uint64_t>(std::llround((1.0 - prune_ratio) * static_cast<double>(n)));
}

// Rank key for top-k by score: score bits on top, a random tie-break below; never-seen samples
// (NaN score) rank above every score. Low bit forced to 1 so the key is never 0 ("ineligible").
EMP_HD inline uint64_t score_key(float score, uint64_t tie_stream, uint64_t i) {
  const bool never_seen = score != score;  // NaN test that compiles the same for host and device
  // + 0.0f turns -0.0 into +0.0: equal scores are tied, whatever their sign bit.
  const uint64_t top = never_seen ? 0xFFFFFFFFull : monotone_bits(score + 0.0f);
  return (top << 32) | (draw(tie_stream, i) >> 32) | 1ull;
}

// Mean, count and max of the seen samples' scores.
struct SeenSummary {
  double mean = 0.0;
  float max = 1.0f;
  uint64_t seen = 0;
};

// Combines per-block partials (sum, count, max of the seen scores) in block order, so the result
// does not depend on how many threads or GPU blocks produced them. With nothing seen, the mean is 0
// and the max 1 (never-seen samples then weigh 1 in the weighted rule).
template <class Count>
SeenSummary combine_seen(size_t blocks, const double* sums, const Count* counts, const float* maxes) {
  SeenSummary out;
  double total = 0.0;
  float mx = -std::numeric_limits<float>::infinity();
  for (size_t b = 0; b < blocks; ++b) {
    total += sums[b];
    out.seen += counts[b];
    mx = std::max(mx, maxes[b]);
  }
  out.mean = out.seen > 0 ? total / static_cast<double>(out.seen) : 0.0;
  out.max = out.seen > 0 ? mx : 1.0f;
  return out;
}

}  // namespace emp
