#include "webdataset/key_table.h"

#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <utility>
#include <vector>

#include "core/file_util.h"
#include "core/rng.h"

namespace emp {
namespace {

constexpr char kKeyMagic[8] = {'E', 'M', 'P', 'K', 'E', 'Y', 'T', 'B'};
constexpr uint32_t kEndianMarker = 0x01020304u;
constexpr size_t kKeyTableHeaderBytes = 4096;
// Live counters sit in the header page, each on its own cache line, outside the checksum.
constexpr size_t kCounterOffset = 1024;
constexpr size_t kCounterStride = 64;
// Slot states besides "id + 1": an insert in progress, or one that failed for lack of room.
constexpr uint64_t kWriting = 0;
constexpr uint64_t kOverflow = std::numeric_limits<uint64_t>::max();
constexpr uint64_t kArenaFull = std::numeric_limits<uint64_t>::max() - 1;
// A slot whose insert never finished (its process died), found by recover(): not any key's slot.
constexpr uint64_t kAbandoned = std::numeric_limits<uint64_t>::max() - 2;
// Limits of a table: ids as the store's, keys of at most 64 KiB each on average.
constexpr uint64_t kMaxIds = uint64_t(1) << 48;
constexpr uint64_t kMaxKeyBytes = uint64_t(1) << 16;
constexpr uint64_t kMinArenaBytes = uint64_t(1) << 16;
// Arena disk is reserved in steps of this size as keys arrive (the arena is the sparse part).
constexpr uint64_t kArenaReserveStep = uint64_t(1) << 20;
// How long a reader waits for a half-written entry before calling it abandoned (the fuzz build
// sets 0: a crafted table's half-written slots must not stall it).
#ifndef EMP_KEY_TABLE_PUBLISH_TIMEOUT_MS
#define EMP_KEY_TABLE_PUBLISH_TIMEOUT_MS 10000
#endif
constexpr auto kPublishTimeout = std::chrono::milliseconds(EMP_KEY_TABLE_PUBLISH_TIMEOUT_MS);

struct Slot {
  uint64_t hash;   // 0 = empty; claimed by compare-and-swap
  uint64_t state;  // kWriting, id + 1 (published), kOverflow or kArenaFull
};
static_assert(sizeof(Slot) == 16, "Slot must stay 16 bytes");

// Arena record: url hash, key length, key bytes, padded to 8 bytes.
struct RecordHead {
  uint64_t url_hash;
  uint64_t key_len;
};

uint64_t align8(uint64_t x) { return (x + 7) & ~uint64_t(7); }

// A record {head, key_len bytes} at `offset` lies inside an arena of `limit` bytes (no wrapping).
bool record_fits(uint64_t offset, uint64_t key_len, uint64_t limit) {
  return offset <= limit && sizeof(RecordHead) <= limit - offset && key_len <= limit - offset - sizeof(RecordHead);
}

uint64_t load_acquire(const uint64_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }


uint64_t url_hash_of(const std::string& url) { return hash_bytes(url.data(), url.size(), 0x75726CULL); }

// The layout a header must describe, from its three free parameters; false when a size overflows.
bool layout_of(uint64_t max_ids, uint64_t slot_count, uint64_t arena_bytes, KeyTableHeader& h) {
  h.slots_offset = kKeyTableHeaderBytes;
  return mul_add_fits(slot_count, sizeof(Slot), h.slots_offset, h.entries_offset) &&
         mul_add_fits(max_ids, sizeof(uint64_t), h.entries_offset, h.arena_offset) &&
         mul_add_fits(arena_bytes, 1, h.arena_offset, h.file_bytes) && h.file_bytes < (uint64_t(1) << 62);
}

// Every field of a header read from a file, before anything is computed from it.
void verify_key_table_header(const KeyTableHeader& h, uint64_t size, const std::string& path) {
  if (std::memcmp(h.magic, kKeyMagic, sizeof(kKeyMagic)) != 0)
    throw std::runtime_error("'" + path + "' is not an emp_data key table (bad magic)");
  if (h.endian_marker != kEndianMarker)
    throw std::runtime_error("key table '" + path + "' was written on a machine of the other byte order");
  if (h.version != kKeyTableVersion)
    throw std::runtime_error("key table '" + path + "' has format version " + std::to_string(h.version) +
                             ", this emp_data reads version " + std::to_string(kKeyTableVersion) +
                             "; delete it to renumber");
  if (h.header_checksum != key_table_header_checksum(h))
    throw std::runtime_error("key table '" + path + "' has a corrupt header (checksum mismatch)");
  KeyTableHeader want = h;
  const bool sizes_ok = h.header_bytes == kKeyTableHeaderBytes && h.max_ids >= 1 && h.max_ids <= kMaxIds &&
                        h.slot_count >= 2 * h.max_ids && (h.slot_count & (h.slot_count - 1)) == 0 &&
                        h.arena_bytes / kMaxKeyBytes <= h.max_ids && h.hash_bits >= 1 && h.hash_bits <= 64 &&
                        layout_of(h.max_ids, h.slot_count, h.arena_bytes, want);
  if (!sizes_ok || want.slots_offset != h.slots_offset || want.entries_offset != h.entries_offset ||
      want.arena_offset != h.arena_offset || want.file_bytes != h.file_bytes)
    throw std::runtime_error("key table '" + path + "' has an inconsistent layout (corrupt or crafted header)");
  if (h.file_bytes != size)
    throw std::runtime_error("key table '" + path + "' is truncated or padded: " + std::to_string(size) +
                             " bytes, header says " + std::to_string(h.file_bytes));
}

}  // namespace

uint64_t key_table_header_checksum(const KeyTableHeader& h) {
  // Word by word through memcpy: reading the struct through a uint64_t pointer breaks strict
  // aliasing, and at -O3 the compiler then sums the header before its uint32 fields are written.
  unsigned char bytes[offsetof(KeyTableHeader, header_checksum)];
  std::memcpy(bytes, &h, sizeof(bytes));
  uint64_t sum = 0;
  for (size_t i = 0; i < sizeof(bytes) / 8; ++i) {
    uint64_t word;
    std::memcpy(&word, bytes + 8 * i, 8);
    sum = splitmix64(sum ^ word);
  }
  return sum;
}

uint64_t hash_bytes(const char* data, size_t len, uint64_t seed) {
  uint64_t h = splitmix64(seed ^ (len * 0x9E3779B97F4A7C15ull));
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    std::memcpy(&w, data + i, 8);
    h = splitmix64(h ^ w);
  }
  uint64_t tail = 0;
  std::memcpy(&tail, data + i, len - i);
  return splitmix64(h ^ tail ^ (uint64_t(len - i) << 56));
}

KeyTable KeyTable::map_new(int fd, const std::string& path, uint64_t max_ids, uint64_t key_bytes, uint32_t hash_bits) {
  if (max_ids == 0 || max_ids > kMaxIds)
    throw std::invalid_argument("a key table needs 1 <= max_ids <= " + std::to_string(kMaxIds) + ", got " +
                                std::to_string(max_ids));
  if (hash_bits == 0 || hash_bits > 64) throw std::invalid_argument("hash_bits must be in 1..64");
  if (key_bytes < 24 || key_bytes > kMaxKeyBytes)
    throw std::invalid_argument("key_bytes must be in 24.." + std::to_string(kMaxKeyBytes) + " per sample, got " +
                                std::to_string(key_bytes));
  uint64_t slots = 2;
  while (slots < 2 * max_ids) slots <<= 1;
  KeyTableHeader h;
  std::memset(&h, 0, sizeof(h));
  std::memcpy(h.magic, kKeyMagic, sizeof(kKeyMagic));
  h.version = kKeyTableVersion;
  h.endian_marker = kEndianMarker;
  h.header_bytes = kKeyTableHeaderBytes;
  h.max_ids = max_ids;
  h.slot_count = slots;
  // At least 64 KiB, so a small table still takes a few long keys (the arena file space is
  // reserved as it fills, so the floor costs nothing until used).
  uint64_t arena = 0;
  const bool fits = mul_add_fits(max_ids, key_bytes, 0, arena) && arena <= (uint64_t(1) << 62);
  h.arena_bytes = fits ? std::max(align8(arena), kMinArenaBytes) : 0;
  if (!fits || !layout_of(max_ids, slots, h.arena_bytes, h))
    throw std::invalid_argument("a key table of " + std::to_string(max_ids) + " ids does not fit in a file");
  h.hash_bits = hash_bits;
  h.header_checksum = key_table_header_checksum(h);

  if (fd >= 0) {
    if (::ftruncate(fd, static_cast<off_t>(h.file_bytes)) != 0) throw IoError("cannot size key table file", path);
    // Header, slots and entries get real blocks now (slots are written at random, so they fill up
    // early anyway); the arena is reserved as it grows. A full disk is then an OSError, not SIGBUS.
    reserve_file(fd, 0, h.arena_offset, path);
  }
  const int flags = fd >= 0 ? MAP_SHARED : (MAP_SHARED | MAP_ANONYMOUS);
  void* p = ::mmap(nullptr, h.file_bytes, PROT_READ | PROT_WRITE, flags | MAP_NORESERVE, fd, 0);
  if (p == MAP_FAILED) throw IoError("cannot map key table", path.empty() ? "<memory>" : path);
  KeyTable t;
  t.base_ = static_cast<unsigned char*>(p);
  t.mapped_bytes_ = h.file_bytes;
  t.path_ = path;
  std::memcpy(t.base_, &h, sizeof(h));  // the rest is zero: empty slots, zero counters
  return t;
}

KeyTable KeyTable::create(const std::string& path, uint64_t max_ids, uint64_t key_bytes, uint32_t hash_bits) {
  const std::string tmp = temp_path_for(path);
  Fd fd(::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644));
  if (fd.fd < 0) throw IoError("cannot create key table file", tmp);
  try {
    KeyTable t = map_new(fd.fd, path, max_ids, key_bytes, hash_bits);
    if (::msync(t.base_, kKeyTableHeaderBytes, MS_SYNC) != 0) throw IoError("cannot sync", tmp);
    t.fd_ = ::dup(fd.fd);
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      throw IoError("cannot move key table file into place", path);
    fsync_parent_dir(path);
    return t;
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
}

KeyTable KeyTable::create_anonymous(uint64_t max_ids, uint64_t key_bytes, uint32_t hash_bits) {
  return map_new(-1, "", max_ids, key_bytes, hash_bits);
}

KeyTable KeyTable::open(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDWR));
  if (fd.fd < 0) throw IoError("cannot open key table", path);
  struct stat st;
  if (::fstat(fd.fd, &st) != 0) throw IoError("cannot stat key table", path);
  const auto size = static_cast<uint64_t>(st.st_size);
  KeyTableHeader h;
  if (size < kKeyTableHeaderBytes || ::pread(fd.fd, &h, sizeof(h), 0) != static_cast<ssize_t>(sizeof(h)))
    throw std::runtime_error("'" + path + "' is not an emp_data key table (too short)");
  verify_key_table_header(h, size, path);
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd.fd, 0);
  if (p == MAP_FAILED) throw IoError("cannot map key table", path);
  KeyTable t;
  t.base_ = static_cast<unsigned char*>(p);
  t.mapped_bytes_ = size;
  t.path_ = path;
  t.fd_ = fd.fd;
  fd.fd = -1;
  // The live counters are outside the checksum: bound them before any use.
  const uint64_t next = load_acquire(t.counter(kNextId)), used = load_acquire(t.counter(kArenaUsed));
  if (next > h.max_ids || used > h.arena_bytes || load_acquire(t.counter(kArenaReserved)) > h.arena_bytes)
    throw std::runtime_error("key table '" + path + "' has corrupt counters (" + std::to_string(next) + " ids, " +
                             std::to_string(used) + " arena bytes); delete it to renumber");
  return t;
}

KeyTable::KeyTable(KeyTable&& o) noexcept
    : base_(std::exchange(o.base_, nullptr)), mapped_bytes_(std::exchange(o.mapped_bytes_, 0)),
      path_(std::move(o.path_)), fd_(std::exchange(o.fd_, -1)) {}

KeyTable& KeyTable::operator=(KeyTable&& o) noexcept {
  if (this != &o) {
    release();
    base_ = std::exchange(o.base_, nullptr);
    mapped_bytes_ = std::exchange(o.mapped_bytes_, 0);
    path_ = std::move(o.path_);
    fd_ = std::exchange(o.fd_, -1);
  }
  return *this;
}

KeyTable::~KeyTable() { release(); }

void KeyTable::release() noexcept {
  if (base_ != nullptr) ::munmap(base_, mapped_bytes_);
  base_ = nullptr;
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool KeyTable::claim(Counter which, uint64_t amount, uint64_t limit, uint64_t& start) {
  uint64_t* c = counter(which);
  uint64_t cur = load_acquire(c);
  do {
    if (cur > limit || amount > limit - cur) return false;
  } while (!__atomic_compare_exchange_n(c, &cur, cur + amount, true, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
  start = cur;
  return true;
}

void KeyTable::reserve_arena(uint64_t end) {
  if (fd_ < 0) return;
  uint64_t* reserved = counter(kArenaReserved);
  uint64_t have = load_acquire(reserved);
  if (end <= have) return;
  const uint64_t want = std::min(header()->arena_bytes, (end + kArenaReserveStep - 1) / kArenaReserveStep * kArenaReserveStep);
  reserve_file(fd_, header()->arena_offset + have, want - have, path_);  // idempotent if two processes race
  while (have < want && !__atomic_compare_exchange_n(reserved, &have, want, true, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
  }
}

void KeyTable::flush() {
  if (fd_ < 0) return;
  __atomic_store_n(counter(kClean), 1, __ATOMIC_RELEASE);
  if (::msync(base_, mapped_bytes_, MS_SYNC) != 0) throw IoError("cannot sync key table", path_);
}

bool KeyTable::clean() const { return load_acquire(counter(kClean)) == 1; }

uint64_t KeyTable::recover() {
  const KeyTableHeader* h = header();
  auto* slots = reinterpret_cast<Slot*>(base_ + h->slots_offset);
  const auto* entries = reinterpret_cast<const uint64_t*>(base_ + h->entries_offset);
  const uint64_t next = load_acquire(counter(kNextId)), used = load_acquire(counter(kArenaUsed));
  std::vector<bool> owned(next, false);
  uint64_t repaired = 0;
  auto broken = [&](const std::string& why) {
    return std::runtime_error("key table '" + path_ + "' is inconsistent (" + why +
                              "), e.g. after a power loss since its last flush; delete it to renumber");
  };
  for (uint64_t i = 0; i < h->slot_count; ++i) {
    Slot& slot = slots[i];
    if (load_acquire(&slot.hash) == 0) continue;
    const uint64_t state = load_acquire(&slot.state);
    if (state == kWriting) {
      __atomic_store_n(&slot.state, kAbandoned, __ATOMIC_RELEASE);
      ++repaired;
      continue;
    }
    if (state == kAbandoned || state == kOverflow || state == kArenaFull) continue;
    const uint64_t id = state - 1;
    if (id >= next) throw broken("slot " + std::to_string(i) + " holds id " + std::to_string(id) + " of " + std::to_string(next));
    if (owned[id]) throw broken("id " + std::to_string(id) + " is handed out twice");
    owned[id] = true;
    const uint64_t entry = entries[id];
    RecordHead head;
    if (entry == 0 || !record_fits(entry - 1, 0, used)) throw broken("id " + std::to_string(id) + " has no key record");
    std::memcpy(&head, base_ + h->arena_offset + entry - 1, sizeof(head));
    if (!record_fits(entry - 1, head.key_len, used)) throw broken("id " + std::to_string(id) + " has a cut key record");
  }
  if (repaired > 0) __atomic_store_n(counter(kClean), 0, __ATOMIC_RELEASE);
  return repaired;
}

uint64_t* KeyTable::counter(Counter which) const {
  return reinterpret_cast<uint64_t*>(base_ + kCounterOffset + which * kCounterStride);
}

uint64_t KeyTable::size() const {
  const uint64_t next = load_acquire(counter(kNextId));
  return next < max_ids() ? next : max_ids();
}

uint64_t KeyTable::collisions() const { return load_acquire(counter(kCollisions)); }

bool KeyTable::entry_matches(uint64_t id, uint64_t url_hash, const std::string& key) const {
  const KeyTableHeader* h = header();
  if (id >= h->max_ids) return false;
  const uint64_t entry = __atomic_load_n(reinterpret_cast<const uint64_t*>(base_ + h->entries_offset) + id, __ATOMIC_ACQUIRE);
  if (entry == 0 || !record_fits(entry - 1, key.size(), h->arena_bytes)) return false;
  const uint64_t offset = entry - 1;
  RecordHead head;
  std::memcpy(&head, base_ + h->arena_offset + offset, sizeof(head));
  return head.url_hash == url_hash && head.key_len == key.size() &&
         std::memcmp(base_ + h->arena_offset + offset + sizeof(head), key.data(), key.size()) == 0;
}

std::string KeyTable::key_of(uint64_t id) const {
  if (id >= size()) throw std::out_of_range("id " + std::to_string(id) + " is not in the key table (" +
                                            std::to_string(size()) + " keys)");
  const KeyTableHeader* h = header();
  const uint64_t entry = __atomic_load_n(reinterpret_cast<const uint64_t*>(base_ + h->entries_offset) + id, __ATOMIC_ACQUIRE);
  if (entry == 0)
    throw std::out_of_range("id " + std::to_string(id) + " was taken by an insert that never finished (a process "
                            "died inserting it); it belongs to no key");
  const uint64_t offset = entry - 1;
  const std::string corrupt = "key table '" + path_ + "' has a corrupt key record for id " + std::to_string(id);
  if (!record_fits(offset, 0, h->arena_bytes)) throw std::runtime_error(corrupt);
  RecordHead head;
  std::memcpy(&head, base_ + h->arena_offset + offset, sizeof(head));
  if (!record_fits(offset, head.key_len, h->arena_bytes)) throw std::runtime_error(corrupt);
  return std::string(reinterpret_cast<const char*>(base_ + h->arena_offset + offset + sizeof(head)), head.key_len);
}

int64_t KeyTable::probe(uint64_t url_hash, const std::string& key, bool insert) {
  const KeyTableHeader* h = header();
  auto* slots = reinterpret_cast<Slot*>(base_ + h->slots_offset);
  uint64_t hash = hash_bytes(key.data(), key.size(), url_hash);
  if (h->hash_bits < 64) hash &= (uint64_t(1) << h->hash_bits) - 1;
  if (hash == 0) hash = 1;  // 0 marks an empty slot
  const uint64_t mask = h->slot_count - 1;
  bool passed_same_hash = false;
  for (uint64_t i = splitmix64(hash) & mask, probes = 0; probes < h->slot_count; i = (i + 1) & mask, ++probes) {
    Slot& slot = slots[i];
    uint64_t seen = load_acquire(&slot.hash);
    if (seen == 0) {
      if (!insert) return -1;
      if (__atomic_compare_exchange_n(&slot.hash, &seen, hash, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        // Claimed. Arena space first, then the id, each claimed without moving its counter past
        // its limit: a failed insert takes nothing, so the id count only ever counts written keys
        // and later short keys still fit. The entry is written before the id is published.
        if (load_acquire(counter(kClean)) != 0) __atomic_store_n(counter(kClean), 0, __ATOMIC_RELEASE);  // no longer clean
        const uint64_t need = align8(sizeof(RecordHead) + key.size());
        uint64_t offset = 0, id = 0;
        if (!claim(kArenaUsed, need, h->arena_bytes, offset)) {
          __atomic_store_n(&slot.state, kArenaFull, __ATOMIC_RELEASE);
          throw std::runtime_error("key table arena is full (keys longer than key_bytes per sample on average); "
                                   "create the table with a larger key_bytes");
        }
        try {
          reserve_arena(offset + need);
        } catch (...) {
          __atomic_store_n(&slot.state, kArenaFull, __ATOMIC_RELEASE);
          throw;
        }
        const RecordHead head{url_hash, key.size()};
        std::memcpy(base_ + h->arena_offset + offset, &head, sizeof(head));
        std::memcpy(base_ + h->arena_offset + offset + sizeof(head), key.data(), key.size());
        if (!claim(kNextId, 1, h->max_ids, id)) {
          __atomic_store_n(&slot.state, kOverflow, __ATOMIC_RELEASE);
          throw std::length_error("the stream has more distinct samples than the pruner's " +
                                  std::to_string(h->max_ids) + " (new key '" + key + "')");
        }
        __atomic_store_n(reinterpret_cast<uint64_t*>(base_ + h->entries_offset) + id, offset + 1, __ATOMIC_RELEASE);
        if (passed_same_hash) __atomic_fetch_add(counter(kCollisions), 1, __ATOMIC_ACQ_REL);
        __atomic_store_n(&slot.state, id + 1, __ATOMIC_RELEASE);
        return static_cast<int64_t>(id);
      }
      // Lost the race for this slot: `seen` now holds the winner's hash; examine it below.
    }
    if (seen != hash) continue;
    uint64_t state = load_acquire(&slot.state);
    if (state == kWriting) {
      const auto deadline = std::chrono::steady_clock::now() + kPublishTimeout;
      for (int spin = 0; (state = load_acquire(&slot.state)) == kWriting; ++spin) {
        if (spin > 64) ::sched_yield();
        if ((spin & 1023) == 0 && std::chrono::steady_clock::now() > deadline)
          throw std::runtime_error("key table entry was never finished (a process died while inserting it); "
                                   "delete the key table file '" + path_ + "' and restart the epoch");
      }
    }
    if (state == kOverflow)
      throw std::length_error("the stream has more distinct samples than the pruner's " + std::to_string(h->max_ids));
    if (state == kArenaFull)
      throw std::runtime_error("key table arena is full; create the table with a larger key_bytes");
    if (state == kAbandoned) continue;  // an insert that died: not this key's slot any more
    if (entry_matches(state - 1, url_hash, key)) return static_cast<int64_t>(state - 1);
    passed_same_hash = true;  // a different key with the same hash: keep probing, never merge
  }
  if (!insert) return -1;
  throw std::runtime_error("key table is full");
}

uint64_t KeyTable::id_of(const std::string& url, const std::string& key) {
  return static_cast<uint64_t>(probe(url_hash_of(url), key, true));
}

int64_t KeyTable::find(const std::string& url, const std::string& key) const {
  return const_cast<KeyTable*>(this)->probe(url_hash_of(url), key, false);
}

}  // namespace emp
