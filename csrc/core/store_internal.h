// What store.cpp and store_file.cpp share and no one else needs.
#pragma once
#include <cstdint>

namespace emp {
namespace store_internal {

inline uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }
inline uint64_t load_u64(const uint64_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

}  // namespace store_internal
}  // namespace emp
