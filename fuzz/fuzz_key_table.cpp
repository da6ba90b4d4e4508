// Key-table files (header, counters, slots, entries, arena) on arbitrary bytes: open must refuse an
// inconsistent header; on what it accepts, lookups, inserts, key_of and recover must stay in bounds.
#include <cstring>
#include <exception>
#include <vector>
#include <string>

#include "fuzz_input.h"
#include "webdataset/key_table.h"

// As in fuzz_store.cpp: a valid header checksum, so mutations reach the layout checks and the
// slots, entries and arena behind them.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* raw, size_t size) {
  std::vector<uint8_t> bytes(raw, raw + size);
  if (size >= sizeof(emp::KeyTableHeader)) {
    emp::KeyTableHeader h;
    std::memcpy(&h, bytes.data(), sizeof(h));
    h.header_checksum = emp::key_table_header_checksum(h);
    std::memcpy(bytes.data(), &h, sizeof(h));
  }
  MemFile file(bytes.data(), bytes.size());
  try {
    emp::KeyTable table = emp::KeyTable::open(file.path);
    for (uint64_t id = 0; id < table.size() && id < 16; ++id) {
      try {
        (void)table.key_of(id);
      } catch (const std::exception&) {
      }
    }
    for (int i = 0; i < 4; ++i) {
      try {
        (void)table.find("shard.tar", "k" + std::to_string(i));
        (void)table.id_of("shard.tar", "k" + std::to_string(i));
      } catch (const std::exception&) {
      }
    }
    try {
      (void)table.recover();
    } catch (const std::exception&) {
    }
  } catch (const std::exception&) {
  }
  return 0;
}
