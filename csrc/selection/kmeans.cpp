#include "selection/kmeans.h"

#include <algorithm>
#include <cstddef>
#include <limits>

namespace emp {
namespace {

// Prefix sums over the bins, each bin a point at its centre (in bin units, b + 0.5) weighed by its
// count: the within-cluster sum of squares of bins [i, j) in O(1).
struct Prefix {
  std::vector<double> w, s, q;
  explicit Prefix(const std::vector<uint64_t>& counts) : w(counts.size() + 1, 0.0), s(w), q(w) {
    for (size_t b = 0; b < counts.size(); ++b) {
      const double c = static_cast<double>(counts[b]), x = static_cast<double>(b) + 0.5;
      w[b + 1] = w[b] + c;
      s[b + 1] = s[b] + c * x;
      q[b + 1] = q[b] + c * x * x;
    }
  }
  double cost(size_t i, size_t j) const {
    const double n = w[j] - w[i];
    if (n <= 0.0) return 0.0;
    const double sum = s[j] - s[i];
    return std::max(0.0, (q[j] - q[i]) - sum * sum / n);
  }
};

}  // namespace

// The optimal clustering, not a local one: dynamic programming over split points (Wang & Song 2011,
// Ckmeans.1d.dp), D[g][j] = min over i of D[g-1][i] + cost(i, j), with the optimal i nondecreasing in
// j, so each level is solved by divide and conquer in O(bins log bins).
std::vector<uint16_t> histogram_kmeans(const std::vector<uint64_t>& counts, double, double, int groups) {
  const size_t bins = counts.size();
  const Prefix p(counts);
  const size_t levels = static_cast<size_t>(std::max(1, groups));
  std::vector<double> prev(bins + 1), cur(bins + 1);
  std::vector<std::vector<uint32_t>> split(levels, std::vector<uint32_t>(bins + 1, 0));
  for (size_t j = 0; j <= bins; ++j) prev[j] = p.cost(0, j);
  for (size_t g = 1; g < levels; ++g) {
    std::vector<uint32_t>& arg = split[g];
    // Solve cur[j] for j in [jl, jr] knowing the optimal split lies in [il, ir].
    struct Range {
      size_t jl, jr, il, ir;
    };
    std::vector<Range> stack{{0, bins, 0, bins}};
    while (!stack.empty()) {
      const Range r = stack.back();
      stack.pop_back();
      if (r.jl > r.jr) continue;
      const size_t mid = r.jl + (r.jr - r.jl) / 2;
      double best = std::numeric_limits<double>::infinity();
      size_t best_i = r.il;
      for (size_t i = r.il; i <= std::min(mid, r.ir); ++i) {
        const double v = prev[i] + p.cost(i, mid);
        if (v < best) {
          best = v;
          best_i = i;
        }
      }
      cur[mid] = best;
      arg[mid] = static_cast<uint32_t>(best_i);
      if (mid > r.jl) stack.push_back({r.jl, mid - 1, r.il, best_i});
      stack.push_back({mid + 1, r.jr, best_i, r.ir});
    }
    prev.swap(cur);
  }
  // Walk the splits back from the last level: cluster g holds bins [start_g, end_g).
  std::vector<uint16_t> cluster(bins, 0);
  size_t end = bins;
  for (size_t g = levels; g-- > 0;) {
    const size_t start = g == 0 ? 0 : split[g][end];
    for (size_t b = start; b < end; ++b) cluster[b] = static_cast<uint16_t>(g);
    end = start;
  }
  return cluster;
}

}  // namespace emp
