// Large buffers for selection results. Two costs dominate fresh memory on a VM: zero-filling and
// page faults (measured ~2.5 us per 4 KiB page here, more than the selection arithmetic). So the
// allocator below (1) does not zero-fill: every element is written before it is read, and (2) keeps
// a few recently freed big blocks and hands them out again, so epoch e+1's result arrays reuse
// epoch e's already-mapped pages once the caller drops them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace emp {

namespace block_cache {
// Memory of at least `bytes`, from the cache when a block fits, else fresh (mmap).
void* acquire(size_t bytes);
// Give back a block from acquire(); it is cached (bounded) or unmapped.
void release(void* p, size_t bytes) noexcept;
// Unmap every cached block; returns the bytes freed.
size_t clear() noexcept;
size_t cached_bytes() noexcept;
}  // namespace block_cache

template <class T>
struct BigAllocator {
  using value_type = T;
  BigAllocator() = default;
  template <class U>
  BigAllocator(const BigAllocator<U>&) noexcept {}

  T* allocate(size_t count) { return static_cast<T*>(block_cache::acquire(count * sizeof(T))); }
  void deallocate(T* p, size_t count) noexcept { block_cache::release(p, count * sizeof(T)); }

  // Default-initialise (arithmetic types stay unwritten) instead of value-initialise (zero).
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  template <class U>
  bool operator==(const BigAllocator<U>&) const noexcept { return true; }
  template <class U>
  bool operator!=(const BigAllocator<U>&) const noexcept { return false; }
};

template <class T>
using BigVector = std::vector<T, BigAllocator<T>>;

// Memory for random access over large tables (the store's arrays): 2 MiB-aligned and advised for
// transparent huge pages (MADV_HUGEPAGE), so a random read or write costs one TLB entry per 2 MiB
// instead of per 4 KiB: on a store of 1e7 samples a 4 KiB-paged update misses the TLB on nearly every
// id. numpy advises its large arrays the same way. Requests under 2 MiB go to malloc.
void* map_huge(size_t bytes);
void unmap_huge(void* p, size_t bytes) noexcept;

template <class T>
struct HugePageAllocator {
  using value_type = T;
  HugePageAllocator() = default;
  template <class U>
  HugePageAllocator(const HugePageAllocator<U>&) noexcept {}

  T* allocate(size_t count) { return static_cast<T*>(map_huge(count * sizeof(T))); }
  void deallocate(T* p, size_t count) noexcept { unmap_huge(p, count * sizeof(T)); }
  template <class U>
  bool operator==(const HugePageAllocator<U>&) const noexcept { return true; }
  template <class U>
  bool operator!=(const HugePageAllocator<U>&) const noexcept { return false; }
};

}  // namespace emp
