// Store files (header, layout, checksums, metadata) on arbitrary bytes: open and load must refuse
// anything inconsistent with an exception; what they accept must be safe to read and update.
#include <cmath>
#include <cstddef>
#include <cstring>
#include <exception>
#include <vector>

#include "fuzz_input.h"
#include "core/store.h"
#include "core/update.h"

// The header checksum guards against bit rot, not against a crafted file: the harness clears the
// snapshot flag and recomputes the header checksum, so mutations reach the size and layout checks
// behind it instead of stopping at the checksum.
std::vector<uint8_t> with_valid_checksum(const uint8_t* data, size_t size) {
  std::vector<uint8_t> bytes(data, data + size);
  if (size >= sizeof(emp::FileHeader)) {
    emp::FileHeader h;
    std::memcpy(&h, bytes.data(), sizeof(h));
    h.flags &= ~emp::kFlagDataChecksum;
    h.header_checksum = emp::checksum_bytes(reinterpret_cast<const unsigned char*>(&h), offsetof(emp::FileHeader, header_checksum));
    std::memcpy(bytes.data(), &h, sizeof(h));
  }
  return bytes;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* raw, size_t raw_size) {
  const std::vector<uint8_t> bytes = with_valid_checksum(raw, raw_size);
  MemFile file(bytes.data(), bytes.size());
  try {
    emp::Store store = emp::Store::load(file.path);
    const uint64_t n = store.size();
    // Touch the first and last sample through every path a caller has.
    const int64_t ids[2] = {0, static_cast<int64_t>(n - 1)};
    const float loss[2] = {1.0f, 2.0f};
    emp::update(store, ids, loss, nullptr, 2, 0.8f, false);
    std::vector<float> w(n < 64 ? n : 64);
    store.read_weights(0, w.size(), w.data(), 1.0);
    // The counts (a version 1 file is converted into them): the last of each array must be readable.
    volatile unsigned counts = store.times_selected()[n - 1] + store.idle()[n - 1];
    (void)counts;
    (void)store.stamped_epoch(1.0);
  } catch (const std::exception&) {
  }
  try {
    emp::Store mapped = emp::Store::open(file.path, true);
    volatile float last = mapped.weight()[mapped.size() - 1];
    (void)last;
  } catch (const std::exception&) {
  }
  return 0;
}
