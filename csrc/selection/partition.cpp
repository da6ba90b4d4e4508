#include "selection/partition.h"

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
  // One two's-complement integer, total * 2^150, in base-2^32 digits. Each chain of limbs has a
  // signed top, so the chains must be added up exactly before the sign is known: reading signed
  // limbs into a floating sum would cancel catastrophically for a negative total.
  constexpr int kDigits = kLimbs / 32 + 4;
  constexpr int64_t kBase = int64_t(1) << 32;
  constexpr uint64_t kMask = 0xFFFFFFFFull;
  int64_t digit[kDigits] = {};
  for (int e = 0; e < kLimbs; ++e) {
    const int64_t v = canon.word_[e];
    if (v == 0) continue;
    const int d = e / 32, shift = e % 32;
    const uint64_t low = static_cast<uint64_t>(v) & kMask;             // v = high * 2^32 + low
    const int64_t high = (v - static_cast<int64_t>(low)) / kBase;       // exact, |high| < 2^31
    const uint64_t low_shifted = low << shift;                          // < 2^64
    digit[d] += static_cast<int64_t>(low_shifted & kMask);
    digit[d + 1] += static_cast<int64_t>(low_shifted >> 32);
    const int64_t high_shifted = high * (int64_t(1) << shift);         // |.| < 2^62
    const uint64_t hs_low = static_cast<uint64_t>(high_shifted) & kMask;
    digit[d + 1] += static_cast<int64_t>(hs_low);
    digit[d + 2] += (high_shifted - static_cast<int64_t>(hs_low)) / kBase;
  }
  auto carry = [&] {
    for (int i = 0; i + 1 < kDigits; ++i) {
      const int64_t v = digit[i];
      const int64_t c = v >= 0 ? v / kBase : -((-(v + 1)) / kBase) - 1;  // floor(v / 2^32)
      digit[i] = v - c * kBase;
      digit[i + 1] += c;
    }
  };
  carry();
  const bool negative = digit[kDigits - 1] < 0;
  if (negative) {
    for (int64_t& v : digit) v = -v;
    carry();
  }
  // The magnitude, correctly rounded to double (nearest, ties to even): the same double for the same
  // exact total on every rank and thread count, and the same as Python's math.fsum.
  int top = kDigits - 1;
  while (top >= 0 && digit[top] == 0) --top;
  if (top < 0) return 0.0;
  int top_bits = 0;
  while (top_bits < 32 && (static_cast<uint64_t>(digit[top]) >> top_bits) != 0) ++top_bits;
  const int msb = top * 32 + top_bits - 1;  // index of the highest set bit
  auto bit = [&](int b) { return b >= 0 && ((static_cast<uint64_t>(digit[b / 32]) >> (b % 32)) & 1u) != 0; };
  uint64_t mantissa = 0;  // bits msb .. msb - 52
  for (int b = msb; b > msb - 53; --b) mantissa = (mantissa << 1) | (bit(b) ? 1u : 0u);
  const bool half = bit(msb - 53);
  bool sticky = false;
  for (int b = msb - 54; b >= 0 && !sticky; --b) sticky = bit(b);
  if (half && (sticky || (mantissa & 1u))) ++mantissa;  // 2^53 after a carry is still exact
  const double magnitude = std::ldexp(static_cast<double>(mantissa), msb - 52 - 150);
  return negative ? -magnitude : magnitude;
}

}  // namespace emp
