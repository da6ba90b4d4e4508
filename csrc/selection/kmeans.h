// One-dimensional k-means on a histogram: SeTa's grouping of per-sample scores (rule_seta.cpp), on
// counts that every rank can sum, so that all ranks find the same clusters with no sort of N.
#pragma once
#include <cstdint>
#include <vector>

namespace emp {

// The optimal k-means of the bins of a histogram of [lo, hi) (each bin a point at its centre,
// weighed by its count; the sum of squares does not depend on lo and hi, so they only document the
// range): the clusters are intervals of bins, found exactly by dynamic programming. Returns each
// bin's cluster, numbered by ascending centre. Deterministic. With fewer non-empty bins than groups,
// some clusters hold only empty bins.
std::vector<uint16_t> histogram_kmeans(const std::vector<uint64_t>& counts, double lo, double hi, int groups);

}  // namespace emp
