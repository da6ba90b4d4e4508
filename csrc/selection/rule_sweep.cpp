#include "selection/rules.h"

#include <array>

namespace emp {
namespace rules {

// RS2 without replacement (Okanovic et al., ICLR 2024): each pass over the data walks a seeded
// permutation in chunks of k; a pass is ceil(N / k) epochs, and its last chunk wraps to the head of
// the same permutation (so it is exactly k, with no repeat inside the epoch), as RS2's reference
// sampler does; the next pass draws a new permutation. A permutation is the order of the keys
// draw(stream(seed, pass), id), so the chunk at positions [a, b) is "in the top b, not in the top
// a", found by the same radix selection as every top-k: no sort of N, and the same over ranks.
void select_sweep(Store& store, const Partition& part, const SelectConfig& cfg, uint64_t seed, uint64_t epoch) {
  const uint64_t n = store.size();
  float* w = store.weight();
  const uint64_t total = part.ids.global_n();
  const uint64_t k = budget(cfg.prune_ratio, total);
  if (k == 0) {
    for_blocks(n, [&](size_t, size_t begin, size_t end) { std::fill(w + begin, w + end, 0.0f); });
    return;
  }
  const uint64_t epochs_per_pass = (total + k - 1) / k;
  const uint64_t pass = epoch / epochs_per_pass;
  const uint64_t a = (epoch % epochs_per_pass) * k;  // the chunk's first position in the permutation
  const uint64_t b = a + k;
  const uint64_t stream = stream_key(seed, pass, Purpose::Sweep);
  auto key = [&](uint64_t, uint64_t g) { return draw(stream, g) | 1ull; };
  // Positions [0, a) and [0, b) (or [0, b - N) when the chunk wraps to [a, N) and [0, b - N)): two
  // thresholds over one key, sharing their histogram pass and settled in the pass that writes.
  const bool wraps = b > total;
  std::array<RadixBoundary, 2> bounds = {uniform_keys_boundary(part, a, total, key),
                                         uniform_keys_boundary(part, wraps ? b - total : b, total, key)};
  write_settling(part, bounds, key, [&](uint64_t i, uint64_t g, uint64_t kk, const RankThreshold* t) {
    const bool before_a = within(kk, static_cast<int64_t>(g), t[0]);
    const bool before_b = within(kk, static_cast<int64_t>(g), t[1]);
    w[i] = static_cast<float>(wraps ? (!before_a | before_b) : (before_b & !before_a));
  });
}

}  // namespace rules
}  // namespace emp
