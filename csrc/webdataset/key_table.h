// KeyTable: sample key -> dense id for WebDataset streams read without an index. Ids are handed
// out in order of first appearance and never change for the life of the table.
//
// The table lives in one memory-mapped file so that several processes (DataLoader workers, a
// restarted job) insert and look up concurrently and agree on every id. It is lock-free: an open
// addressing hash table of 16-byte slots {hash, state}, claimed by compare-and-swap on `hash` and
// published by a release store of `state` = id + 1. The full key of every id is kept in an arena
// (append-only, space reserved by fetch-add), so two keys with the same 64-bit hash are detected
// and given different ids, never merged; such collisions are counted.
//
// A key is (url, key) as webdataset names samples; the url enters as its own 64-bit hash (stored
// with the key and compared too), so a false match needs two independent 64-bit hashes to collide.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace emp {

// 2: entries hold offset + 1 (0 = not written), arena and ids are reserved without overshoot.
constexpr uint32_t kKeyTableVersion = 2;

struct KeyTableHeader {
  char magic[8];             // "EMPKEYTB"
  uint32_t version;          // kKeyTableVersion
  uint32_t endian_marker;    // 0x01020304
  uint64_t header_bytes;     // kKeyTableHeaderBytes
  uint64_t max_ids;          // ids are 0..max_ids-1 (the pruner's sample count)
  uint64_t slot_count;       // power of two, >= 2 * max_ids (load factor <= 0.5)
  uint64_t arena_bytes;      // capacity of the key arena
  uint64_t slots_offset, entries_offset, arena_offset, file_bytes;
  uint32_t hash_bits;        // 64; fewer only in tests, to force collisions
  uint32_t reserved;
  uint64_t header_checksum;  // of every byte above this field
};

class KeyTable {
 public:
  // A new table file at `path`, created atomically (temp file + rename). `key_bytes` is the arena
  // budget per sample (url hash, length and key bytes; the file is sparse, unused space is free).
  static KeyTable create(const std::string& path, uint64_t max_ids, uint64_t key_bytes, uint32_t hash_bits);
  // A table in anonymous memory (one process and the children it forks).
  static KeyTable create_anonymous(uint64_t max_ids, uint64_t key_bytes, uint32_t hash_bits);
  // Map an existing file read-write; checks magic, version, endianness, header checksum and size.
  static KeyTable open(const std::string& path);

  KeyTable(KeyTable&&) noexcept;
  KeyTable& operator=(KeyTable&&) noexcept;
  KeyTable(const KeyTable&) = delete;
  KeyTable& operator=(const KeyTable&) = delete;
  ~KeyTable();

  // The id of (url, key), inserting it if new. Throws std::length_error when more than max_ids
  // distinct keys appear, std::runtime_error when the arena is full or an entry stays half-written
  // (a process died while inserting it).
  uint64_t id_of(const std::string& url, const std::string& key);
  // -1 when (url, key) is not in the table.
  int64_t find(const std::string& url, const std::string& key) const;
  // The key stored for `id` (throws std::out_of_range for an id not handed out).
  std::string key_of(uint64_t id) const;

  // Write the table's pages to its file (msync): what was inserted so far survives a power loss.
  // It also marks the table clean, so that the next open can skip `recover`.
  void flush();
  // After a crash: a slot claimed by an insert that never finished is turned into a tombstone (its
  // key gets a fresh id when it comes again; the id it may have taken stays unused), and every
  // published id is checked (below the id count, written, handed out once). Throws
  // std::runtime_error naming the first inconsistency; returns how many slots were repaired. Only
  // while no other process uses the table (a job's main process, before its workers start).
  uint64_t recover();
  bool clean() const;           // flushed, and nothing inserted since

  uint64_t size() const;        // distinct keys so far
  uint64_t collisions() const;  // distinct keys that share their hash with an earlier key
  uint64_t max_ids() const { return header()->max_ids; }
  uint64_t nbytes() const { return mapped_bytes_; }
  const std::string& path() const { return path_; }

 private:
  KeyTable() = default;
  static KeyTable map_new(int fd, const std::string& path, uint64_t max_ids, uint64_t key_bytes, uint32_t hash_bits);
  const KeyTableHeader* header() const { return reinterpret_cast<const KeyTableHeader*>(base_); }
  // The live counters in the header page, each on its own cache line.
  enum Counter : size_t { kNextId = 0, kArenaUsed = 1, kCollisions = 2, kClean = 3, kArenaReserved = 4 };
  uint64_t* counter(Counter which) const;
  // Claims `amount` of the counter's `limit` without ever moving it past the limit; false if full.
  bool claim(Counter which, uint64_t amount, uint64_t limit, uint64_t& start);
  void reserve_arena(uint64_t end);
  int64_t probe(uint64_t url_hash, const std::string& key, bool insert);
  bool entry_matches(uint64_t id, uint64_t url_hash, const std::string& key) const;
  void release() noexcept;

  unsigned char* base_ = nullptr;
  size_t mapped_bytes_ = 0;
  std::string path_;
  int fd_ = -1;  // kept open to reserve arena disk space as the arena grows (-1: anonymous)
};

// Checksum of a header's fields (every byte above header_checksum).
uint64_t key_table_header_checksum(const KeyTableHeader& h);

// 64-bit hash of a byte string (word-wise multiply-xorshift, SplitMix finaliser).
uint64_t hash_bytes(const char* data, size_t len, uint64_t seed);

}  // namespace emp
