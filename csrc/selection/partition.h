// What a selection needs to run on one rank's part of the samples and still decide exactly what a
// single process would decide over all of them:
//   IdMap      - the global id of each local store slot (every random draw and every tie-break is
//                keyed by the global id, so a sample gets the same coin on any rank layout);
//   Collective - sums, maxima and concatenations over the ranks (torch.distributed, supplied from
//                Python); empty in a single process, where every reduction is the identity;
//   ExactSum   - an order-independent, exact sum of floats, so the soft rules' mean is the same
//                number whichever rank holds which sample and whichever order partials combine in.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace emp {

// Local slots [local_begin, local_begin + length) hold the global ids global_begin + j * stride.
struct IdSegment {
  uint64_t local_begin, global_begin, length, stride;
};

class IdMap {
 public:
  // Every slot is its own id (a single process).
  static IdMap identity(uint64_t n);
  // Segments in local order, covering 0..local_n-1 without gaps; every global id below global_n.
  // Throws std::invalid_argument naming the first bad segment.
  IdMap(std::vector<IdSegment> segments, uint64_t local_n, uint64_t global_n);

  uint64_t global_n() const { return global_n_; }
  uint64_t local_n() const { return local_n_; }
  bool is_identity() const { return identity_; }
  uint64_t global(uint64_t i) const;  // the global id of slot i (binary search over segments)

  // f(i, g) for every local slot i in [begin, end), with g its global id, in slot order.
  template <class F>
  void each(uint64_t begin, uint64_t end, F&& f) const {
    if (identity_) {
      for (uint64_t i = begin; i < end; ++i) f(i, i);
      return;
    }
    for (size_t s = segment_of(begin); begin < end; ++s) {
      const IdSegment& seg = segments_[s];
      const uint64_t stop = seg.local_begin + seg.length < end ? seg.local_begin + seg.length : end;
      uint64_t g = seg.global_begin + (begin - seg.local_begin) * seg.stride;
      for (uint64_t i = begin; i < stop; ++i, g += seg.stride) f(i, g);
      begin = stop;
    }
  }

 private:
  IdMap() = default;
  size_t segment_of(uint64_t i) const;
  std::vector<IdSegment> segments_;
  uint64_t local_n_ = 0, global_n_ = 0;
  bool identity_ = false;
};

// Reductions over the ranks. Every rank calls the same ones in the same order (the selection code
// is the same on all ranks and branches only on reduced values). Unset members: one process.
struct Collective {
  std::function<void(int64_t*, size_t)> sum;                                // in place
  std::function<void(double*, size_t)> max;                                 // in place
  std::function<std::vector<int64_t>(const std::vector<int64_t>&)> concat;  // every rank's values, rank order

  bool active() const { return static_cast<bool>(sum); }
  void sum_u64(uint64_t* v, size_t n) const {  // two's complement: unsigned sums survive the int64 trip
    if (sum) sum(reinterpret_cast<int64_t*>(v), n);
  }
  uint64_t sum_one(uint64_t v) const {
    sum_u64(&v, 1);
    return v;
  }
  double max_one(double v) const {
    if (max) max(&v, 1);
    return v;
  }
};

// The exact sum of any number of finite floats, whatever order they are added in. A float is
// m * 2^(e - 150) with |m| < 2^24 and e its biased exponent (1 for subnormals); limb e collects the
// m of exponent e. Normalising carries every limb below the top 32 into [0, 2^32), which is the
// canonical base-2^32 form of each chain of limbs e, e+32, e+64, ..., so the normalised limbs, and
// the double read from them, depend only on the exact total. value() is that total correctly rounded
// to double (nearest, ties to even), as Python's math.fsum computes it.
class ExactSum {
 public:
  static constexpr int kLimbs = 320;            // exponents 0..254, plus room for carries of 2^48 floats
  static constexpr int kWords = kLimbs + 2;     // limbs, then counts of +inf and -inf
  static constexpr uint64_t kAddsBeforeNormalise = uint64_t(1) << 30;  // 2^30 * 2^24 < 2^63

  void add(float v) {
    uint32_t b;
    __builtin_memcpy(&b, &v, sizeof(b));
    const uint32_t e = (b >> 23) & 0xFFu;
    if (e == 0xFFu) {  // inf (NaN never reaches here: it marks a never-seen sample)
      ++word_[(b >> 31) ? kLimbs + 1 : kLimbs];
      return;
    }
    const int64_t m = static_cast<int64_t>(e == 0 ? (b & 0x7FFFFFu) : ((b & 0x7FFFFFu) | 0x800000u));
    word_[e == 0 ? 1 : e] += (b >> 31) ? -m : m;
    if (++adds_ == kAddsBeforeNormalise) normalise();
  }
  void merge(const ExactSum& other);
  void normalise();
  double value() const;  // the exact total, correctly rounded (+-inf, or NaN for inf - inf, as a float sum)
  // The words to add over ranks (normalised first), and the sum read back from their total.
  int64_t* words() { return word_; }

 private:
  int64_t word_[kWords] = {};
  uint64_t adds_ = 0;
};

}  // namespace emp
