#include "partition.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace emp {

IdMap IdMap::identity(uint64_t n) {
  IdMap map;
  map.segments_.push_back(IdSegment{0, 0, n, 1});
  map.local_n_ = map.global_n_ = n;
  map.identity_ = true;
  return map;
}

IdMap::IdMap(std::vector<IdSegment> segments, uint64_t local_n, uint64_t global_n)
    : segments_(std::move(segments)), local_n_(local_n), global_n_(global_n) {
  uint64_t next = 0;
  for (size_t s = 0; s < segments_.size(); ++s) {
    const IdSegment& seg = segments_[s];
    const std::string where = "id map segment " + std::to_string(s);
    if (seg.local_begin != next)
      throw std::invalid_argument(where + " starts at slot " + std::to_string(seg.local_begin) + ", expected " +
                                  std::to_string(next) + " (segments must cover the slots in order)");
    if (seg.length == 0) throw std::invalid_argument(where + " is empty");
    if (seg.stride == 0) throw std::invalid_argument(where + " has stride 0");
    // The last id, global_begin + (length - 1) * stride, must stay below global_n (checked without overflow).
    if (seg.global_begin >= global_n || (seg.length - 1) > (global_n - 1 - seg.global_begin) / seg.stride)
      throw std::invalid_argument(where + " reaches past the " + std::to_string(global_n) + " global ids");
    next += seg.length;
  }
  if (next != local_n)
    throw std::invalid_argument("id map covers " + std::to_string(next) + " slots, the store has " + std::to_string(local_n));
  identity_ = segments_.size() == 1 && local_n == global_n && segments_[0].global_begin == 0 && segments_[0].stride == 1;
}

size_t IdMap::segment_of(uint64_t i) const {
  auto it = std::upper_bound(segments_.begin(), segments_.end(), i,
                             [](uint64_t v, const IdSegment& seg) { return v < seg.local_begin; });
  return static_cast<size_t>(it - segments_.begin()) - 1;
}

uint64_t IdMap::global(uint64_t i) const {
  if (identity_) return i;
  const IdSegment& seg = segments_[segment_of(i)];
  return seg.global_begin + (i - seg.local_begin) * seg.stride;
}

void ExactSum::merge(const ExactSum& other) {
  ExactSum copy = other;
  copy.normalise();
  normalise();
  for (int w = 0; w < kWords; ++w) word_[w] += copy.word_[w];
  normalise();
}

void ExactSum::normalise() {
  constexpr int64_t kBase = int64_t(1) << 32;
  for (int e = 0; e + 32 < kLimbs; ++e) {
    const int64_t v = word_[e];
    const int64_t carry = v >= 0 ? v / kBase : -((-(v + 1)) / kBase) - 1;  // floor(v / 2^32)
    word_[e] = v - carry * kBase;
    word_[e + 32] += carry;
  }
  adds_ = 0;
}

double ExactSum::value() const {
  const int64_t pos_inf = word_[kLimbs], neg_inf = word_[kLimbs + 1];
  if (pos_inf > 0 && neg_inf > 0) return std::numeric_limits<double>::quiet_NaN();
  if (pos_inf > 0) return std::numeric_limits<double>::infinity();
  if (neg_inf > 0) return -std::numeric_limits<double>::infinity();
  ExactSum canon = *this;
  canon.normalise();
  // Low to high in long double: a fixed order over canonical limbs, so the same total gives the
  // same double on every rank and in a single process.
  long double total = 0.0L;
  for (int e = 0; e < kLimbs; ++e)
    if (canon.word_[e] != 0) total += std::ldexp(static_cast<long double>(canon.word_[e]), e - 150);
  return static_cast<double>(total);
}

}  // namespace emp
