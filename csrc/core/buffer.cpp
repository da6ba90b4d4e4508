#include "core/buffer.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <mutex>

namespace emp {

namespace {
constexpr size_t kHugePage = size_t(2) << 20;
size_t round_to_huge(size_t bytes) { return (bytes + kHugePage - 1) / kHugePage * kHugePage; }
}  // namespace

void* map_huge(size_t bytes) {
  if (bytes < kHugePage) {
    void* p = std::malloc(bytes == 0 ? 1 : bytes);
    if (p == nullptr) throw std::bad_alloc();
    return p;
  }
  const size_t size = round_to_huge(bytes);
  // Map one huge page more and trim both ends, so the block starts on a 2 MiB boundary.
  void* raw = ::mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  const uintptr_t at = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t start = (at + kHugePage - 1) / kHugePage * kHugePage;
  const size_t head = start - at;
  if (head > 0) ::munmap(raw, head);
  if (kHugePage - head > 0) ::munmap(reinterpret_cast<void*>(start + size), kHugePage - head);
  ::madvise(reinterpret_cast<void*>(start), size, MADV_HUGEPAGE);  // advice only: failure is harmless
  return reinterpret_cast<void*>(start);
}

void unmap_huge(void* p, size_t bytes) noexcept {
  if (p == nullptr) return;
  if (bytes < kHugePage) {
    std::free(p);
    return;
  }
  ::munmap(p, round_to_huge(bytes));
}

namespace block_cache {
namespace {

constexpr size_t kBigBlock = size_t(1) << 20;     // smaller requests go to malloc
constexpr size_t kMaxCachedBlocks = 6;
constexpr size_t kMaxCachedBytes = size_t(8) << 30;

struct Block {
  void* ptr;
  size_t bytes;  // mapped size
};

std::mutex& lock() {
  static std::mutex m;
  return m;
}
std::vector<Block>& cache() {
  static std::vector<Block> c;
  return c;
}
size_t& total() {
  static size_t t = 0;
  return t;
}

// Fresh blocks get 1/16 headroom, rounded to 2 MiB, so next epoch's slightly larger request
// (k varies by a few ids between epochs) still fits the cached block.
size_t fresh_size(size_t bytes) {
  constexpr size_t kGrain = size_t(2) << 20;
  return (bytes + bytes / 16 + kGrain - 1) / kGrain * kGrain;
}

}  // namespace

// Big blocks carry their mapped size in a header in front of the memory handed out, so a block
// reused for a smaller request is still unmapped with its true size.
constexpr size_t kHeader = 64;

void* acquire(size_t bytes) {
  if (bytes < kBigBlock) {
    void* p = std::malloc(bytes == 0 ? 1 : bytes);
    if (p == nullptr) throw std::bad_alloc();
    return p;
  }
  const size_t need = bytes + kHeader;
  void* base = nullptr;
  {
    std::lock_guard<std::mutex> g(lock());
    auto& c = cache();
    // Smallest cached block that fits and wastes at most half of itself.
    auto best = c.end();
    for (auto it = c.begin(); it != c.end(); ++it)
      if (it->bytes >= need && it->bytes <= 2 * need && (best == c.end() || it->bytes < best->bytes)) best = it;
    if (best != c.end()) {
      base = best->ptr;
      total() -= best->bytes;
      c.erase(best);
    }
  }
  if (base == nullptr) {
    const size_t size = fresh_size(need);  // a multiple of 2 MiB: map_huge maps exactly this
    base = map_huge(size);
    *static_cast<size_t*>(base) = size;
  }
  return static_cast<unsigned char*>(base) + kHeader;
}

void release(void* p, size_t bytes) noexcept {
  if (p == nullptr) return;
  if (bytes < kBigBlock) {
    std::free(p);
    return;
  }
  void* base = static_cast<unsigned char*>(p) - kHeader;
  const size_t size = *static_cast<size_t*>(base);
  std::lock_guard<std::mutex> g(lock());
  auto& c = cache();
  if (size <= kMaxCachedBytes) {
    c.push_back({base, size});
    total() += size;
  } else {
    unmap_huge(base, size);
  }
  // Evict the oldest blocks beyond the bounds.
  while (!c.empty() && (c.size() > kMaxCachedBlocks || total() > kMaxCachedBytes)) {
    unmap_huge(c.front().ptr, c.front().bytes);
    total() -= c.front().bytes;
    c.erase(c.begin());
  }
}

size_t clear() noexcept {
  std::lock_guard<std::mutex> g(lock());
  size_t freed = 0;
  for (const Block& b : cache()) {
    unmap_huge(b.ptr, b.bytes);
    freed += b.bytes;
  }
  cache().clear();
  total() = 0;
  return freed;
}

size_t cached_bytes() noexcept {
  std::lock_guard<std::mutex> g(lock());
  return total();
}

}  // namespace block_cache
}  // namespace emp
