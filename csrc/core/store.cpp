// The store in memory: its layout, its lifetime and the seqlock over the weights that readers in
// other processes see whole. The file format (create_mapped, save, open, load) is store_file.cpp.
#include "core/store.h"

#include <sched.h>
#include <sys/mman.h>

#include <chrono>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>

#include "core/parallel.h"
#include "core/store_internal.h"
#include "core/update.h"

namespace emp {

using store_internal::align_up;
using store_internal::load_u64;

namespace {

// The epoch a stamp names, -1 for none (0, or a value no epoch can have: a damaged file).
int64_t epoch_of_stamp(uint64_t stamp) {
  return stamp == 0 || stamp > uint64_t(INT64_MAX) ? -1 : static_cast<int64_t>(stamp - 1);
}

// Waits while a weights write is in progress; the even sequence number seen.
uint64_t wait_even(const LiveHeader* live, double timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  uint64_t seq;
  for (int spin = 0; ((seq = load_u64(&live->seq)) & 1) != 0; ++spin) {
    if (spin > 64) ::sched_yield();
    if ((spin & 1023) == 0 && std::chrono::steady_clock::now() > deadline)
      throw std::runtime_error("the store's weights have been mid-write for " + std::to_string(timeout_s) +
                               " s: the process selecting an epoch died or hangs");
  }
  return seq;
}

}  // namespace

Store::Layout Store::layout_for(uint64_t n) {
  if (n > kMaxSamples) throw std::length_error("num_samples " + std::to_string(n) + " is above the limit " +
                                               std::to_string(kMaxSamples));
  Layout l;
  l.stats = kHeaderBytes;
  l.times = align_up(l.stats + n * sizeof(SampleStats), 64);
  l.idle = align_up(l.times + n * sizeof(uint16_t), 64);
  l.weight = align_up(l.idle + n * sizeof(uint16_t), 64);
  l.data_end = l.weight + n * sizeof(float);
  return l;
}

Store::Store(Store&& o) noexcept { *this = std::move(o); }

Store& Store::operator=(Store&& o) noexcept {
  if (this != &o) {
    if (mapped_ && !readonly_ && base_ != nullptr) settle(*this);  // as the destructor
    release();
    n_ = o.n_;
    layout_ = o.layout_;
    owned_ = std::move(o.owned_);
    base_ = o.mapped_ ? o.base_ : owned_.data();
    mapped_bytes_ = o.mapped_bytes_;
    mapped_ = o.mapped_;
    readonly_ = o.readonly_;
    file_dev_ = o.file_dev_;
    file_ino_ = o.file_ino_;
    path_ = std::move(o.path_);
    metadata_ = std::move(o.metadata_);
    pending_ = std::move(o.pending_);
    o.pending_ = UpdateLog{};  // empty, with a lock of its own
    o.base_ = nullptr;
    o.mapped_ = false;
    o.mapped_bytes_ = 0;
    o.n_ = 0;
  }
  return *this;
}

Store::~Store() {
  // A mapped store's file gets what its log still holds (an owned store's memory goes with it).
  if (mapped_ && !readonly_ && base_ != nullptr) settle(*this);
  release();
}

void Store::release() noexcept {
  if (mapped_ && base_ != nullptr) ::munmap(base_, mapped_bytes_);
  base_ = nullptr;
  mapped_ = false;
}

void Store::reset() {
  {
    const std::lock_guard<std::mutex> hold(*pending_.lock);
    pending_.clear();  // what was waiting is reset too
  }
  begin_weights_write();
  SampleStats* s = stats();
  uint16_t* t = times_selected();
  uint16_t* g = idle();
  float* w = weight();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for_blocks(n_, [&](size_t, size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      s[i] = SampleStats{nan, nan, nan, 0.0f};
      t[i] = 0;
      g[i] = 0;
      w[i] = 1.0f;
    }
  });
  end_weights_write(-1);
}

Store Store::create(uint64_t num_samples) {
  Store s;
  s.n_ = num_samples;
  s.layout_ = layout_for(num_samples);
  s.owned_.resize(s.layout_.data_end);
  s.base_ = s.owned_.data();
  s.reset();
  return s;
}

void Store::begin_weights_write() {
  if (readonly_) throw std::runtime_error("this store was opened read-only");
  LiveHeader* l = live();
  uint64_t seq = load_u64(&l->seq);
  if (seq & 1) ++seq;  // a writer died mid-write earlier: its stamp is void anyway
  __atomic_store_n(&l->epoch_plus_one, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&l->seq, seq + 1, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);  // readers see `seq` odd before any weight changes
}

void Store::end_weights_write(int64_t epoch) {
  LiveHeader* l = live();
  const uint64_t seq = load_u64(&l->seq);
  __atomic_store_n(&l->epoch_plus_one, epoch < 0 ? 0 : static_cast<uint64_t>(epoch) + 1, __ATOMIC_RELAXED);
  __atomic_store_n(&l->seq, (seq | 1) + 1, __ATOMIC_RELEASE);  // weights and stamp before the even seq
}

int64_t Store::stamped_epoch(double timeout_s) const { return read_weights(0, 0, nullptr, timeout_s); }

int64_t Store::read_weights(uint64_t lo, uint64_t hi, float* out, double timeout_s) const {
  if (lo > hi || hi > n_) throw std::out_of_range("weight range [" + std::to_string(lo) + ", " + std::to_string(hi) +
                                                  ") is outside the store's " + std::to_string(n_) + " samples");
  const LiveHeader* l = live();
  while (true) {
    const uint64_t seq = wait_even(l, timeout_s);
    const uint64_t stamp = __atomic_load_n(&l->epoch_plus_one, __ATOMIC_RELAXED);
    // Relaxed word loads, not memcpy: the writer may be changing these words right now.
    const float* w = weight();
    for (uint64_t i = lo; i < hi; ++i) __atomic_load(&w[i], &out[i - lo], __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (load_u64(&l->seq) == seq) return epoch_of_stamp(stamp);
  }
}

}  // namespace emp
