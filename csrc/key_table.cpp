#include "key_table.h"

#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <chrono>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <utility>

#include "file_util.h"
#include "rng.h"

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
// How long a reader waits for a half-written entry before calling it abandoned.
constexpr auto kPublishTimeout = std::chrono::seconds(10);

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

uint64_t load_acquire(const uint64_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

uint64_t key_table_header_checksum(const KeyTableHeader& h) {
  uint64_t sum = 0;
  const auto* words = reinterpret_cast<const uint64_t*>(&h);
  for (size_t i = 0; i < offsetof(KeyTableHeader, header_checksum) / 8; ++i) sum = splitmix64(sum ^ words[i]);
  return sum;
}

uint64_t url_hash_of(const std::string& url) { return hash_bytes(url.data(), url.size(), 0x75726CULL); }

}  // namespace

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
  if (max_ids == 0) throw std::invalid_argument("a key table needs max_ids > 0");
  if (hash_bits == 0 || hash_bits > 64) throw std::invalid_argument("hash_bits must be in 1..64");
  if (key_bytes < 24) throw std::invalid_argument("key_bytes must be at least 24 per sample");
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
  h.arena_bytes = align8(max_ids * key_bytes);
  h.slots_offset = kKeyTableHeaderBytes;
  h.entries_offset = h.slots_offset + slots * sizeof(Slot);
  h.arena_offset = h.entries_offset + max_ids * sizeof(uint64_t);
  h.file_bytes = h.arena_offset + h.arena_bytes;
  h.hash_bits = hash_bits;
  h.header_checksum = key_table_header_checksum(h);

  if (fd >= 0 && ::ftruncate(fd, static_cast<off_t>(h.file_bytes)) != 0)
    throw std::runtime_error(errno_text("cannot size key table file", path));
  const int flags = fd >= 0 ? MAP_SHARED : (MAP_SHARED | MAP_ANONYMOUS);
  void* p = ::mmap(nullptr, h.file_bytes, PROT_READ | PROT_WRITE, flags, fd, 0);
  if (p == MAP_FAILED) throw std::runtime_error(errno_text("cannot map key table", path.empty() ? "<memory>" : path));
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
  if (fd.fd < 0) throw std::runtime_error(errno_text("cannot create key table file", tmp));
  try {
    KeyTable t = map_new(fd.fd, path, max_ids, key_bytes, hash_bits);
    if (::msync(t.base_, kKeyTableHeaderBytes, MS_SYNC) != 0) throw std::runtime_error(errno_text("cannot sync", tmp));
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      throw std::runtime_error(errno_text("cannot move key table file into place", path));
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
  if (fd.fd < 0) throw std::runtime_error(errno_text("cannot open key table", path));
  struct stat st;
  if (::fstat(fd.fd, &st) != 0) throw std::runtime_error(errno_text("cannot stat key table", path));
  const auto size = static_cast<uint64_t>(st.st_size);
  KeyTableHeader h;
  if (size < kKeyTableHeaderBytes || ::pread(fd.fd, &h, sizeof(h), 0) != static_cast<ssize_t>(sizeof(h)))
    throw std::runtime_error("'" + path + "' is not an emp_data key table (too short)");
  if (std::memcmp(h.magic, kKeyMagic, sizeof(kKeyMagic)) != 0)
    throw std::runtime_error("'" + path + "' is not an emp_data key table (bad magic)");
  if (h.endian_marker != kEndianMarker)
    throw std::runtime_error("key table '" + path + "' was written on a machine of the other byte order");
  if (h.version != kKeyTableVersion)
    throw std::runtime_error("key table '" + path + "' has format version " + std::to_string(h.version) +
                             ", this emp_data reads version " + std::to_string(kKeyTableVersion));
  if (h.header_checksum != key_table_header_checksum(h))
    throw std::runtime_error("key table '" + path + "' has a corrupt header (checksum mismatch)");
  if (h.file_bytes != size)
    throw std::runtime_error("key table '" + path + "' is truncated or padded: " + std::to_string(size) +
                             " bytes, header says " + std::to_string(h.file_bytes));
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.fd, 0);
  if (p == MAP_FAILED) throw std::runtime_error(errno_text("cannot map key table", path));
  KeyTable t;
  t.base_ = static_cast<unsigned char*>(p);
  t.mapped_bytes_ = size;
  t.path_ = path;
  return t;
}

KeyTable::KeyTable(KeyTable&& o) noexcept
    : base_(std::exchange(o.base_, nullptr)), mapped_bytes_(std::exchange(o.mapped_bytes_, 0)),
      path_(std::move(o.path_)) {}

KeyTable& KeyTable::operator=(KeyTable&& o) noexcept {
  if (this != &o) {
    release();
    base_ = std::exchange(o.base_, nullptr);
    mapped_bytes_ = std::exchange(o.mapped_bytes_, 0);
    path_ = std::move(o.path_);
  }
  return *this;
}

KeyTable::~KeyTable() { release(); }

void KeyTable::release() noexcept {
  if (base_ != nullptr) ::munmap(base_, mapped_bytes_);
  base_ = nullptr;
}

uint64_t* KeyTable::counter(size_t which) const {
  return reinterpret_cast<uint64_t*>(base_ + kCounterOffset + which * kCounterStride);
}

uint64_t KeyTable::size() const {
  const uint64_t next = load_acquire(counter(0));
  return next < max_ids() ? next : max_ids();
}

uint64_t KeyTable::collisions() const { return load_acquire(counter(2)); }

bool KeyTable::entry_matches(uint64_t id, uint64_t url_hash, const std::string& key) const {
  const KeyTableHeader* h = header();
  const uint64_t offset = reinterpret_cast<const uint64_t*>(base_ + h->entries_offset)[id];
  RecordHead head;
  std::memcpy(&head, base_ + h->arena_offset + offset, sizeof(head));
  return head.url_hash == url_hash && head.key_len == key.size() &&
         std::memcmp(base_ + h->arena_offset + offset + sizeof(head), key.data(), key.size()) == 0;
}

std::string KeyTable::key_of(uint64_t id) const {
  if (id >= size()) throw std::out_of_range("id " + std::to_string(id) + " is not in the key table (" +
                                            std::to_string(size()) + " keys)");
  const KeyTableHeader* h = header();
  const uint64_t offset = reinterpret_cast<const uint64_t*>(base_ + h->entries_offset)[id];
  RecordHead head;
  std::memcpy(&head, base_ + h->arena_offset + offset, sizeof(head));
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
        // Claimed: take an id and arena space, write the record, then publish the id.
        const uint64_t id = __atomic_fetch_add(counter(0), 1, __ATOMIC_ACQ_REL);
        if (id >= h->max_ids) {
          __atomic_store_n(&slot.state, kOverflow, __ATOMIC_RELEASE);
          throw std::length_error("the stream has more distinct samples than the pruner's " +
                                  std::to_string(h->max_ids) + " (new key '" + key + "')");
        }
        const uint64_t need = align8(sizeof(RecordHead) + key.size());
        const uint64_t offset = __atomic_fetch_add(counter(1), need, __ATOMIC_ACQ_REL);
        if (offset + need > h->arena_bytes) {
          __atomic_store_n(&slot.state, kArenaFull, __ATOMIC_RELEASE);
          throw std::runtime_error("key table arena is full (keys longer than key_bytes per sample on average); "
                                   "create the table with a larger key_bytes");
        }
        const RecordHead head{url_hash, key.size()};
        std::memcpy(base_ + h->arena_offset + offset, &head, sizeof(head));
        std::memcpy(base_ + h->arena_offset + offset + sizeof(head), key.data(), key.size());
        reinterpret_cast<uint64_t*>(base_ + h->entries_offset)[id] = offset;
        if (passed_same_hash) __atomic_fetch_add(counter(2), 1, __ATOMIC_ACQ_REL);
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
