// ScoreStore: the per-sample state of dynamic data pruning, 24 bytes a sample, in one memory block
// that is either owned by the process or a shared memory-mapped file (so DataLoader workers, which
// are separate processes, can read the current epoch's keep flags and weights).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/buffer.h"
#include "core/update_log.h"

namespace emp {

// The fields `update` writes for one sample, packed into 16 aligned bytes so that updating a
// random sample costs one cache line, not four (update is scatter-bound).
struct SampleStats {
  float loss;       // last per-sample loss; NaN = never seen
  float memory;     // last memory term (EMP); NaN = never given
  float loss_mean;  // exponentially weighted mean of the loss
  float loss_var;   // exponentially weighted variance of the loss
};
static_assert(sizeof(SampleStats) == 16, "SampleStats must stay 16 bytes");

// Version 2: times_selected became a saturating uint16 and `idle` (pruned epochs since the sample was
// last kept, for max_gap) took the other half of its old uint32; still 24 bytes a sample. Version 1
// snapshots are converted by `load`.
constexpr uint32_t kFormatVersion = 2;
constexpr size_t kHeaderBytes = 4096;
constexpr size_t kBytesPerSample = sizeof(SampleStats) + 2 * sizeof(uint16_t) + sizeof(float);
constexpr uint16_t kCountMax = 0xFFFF;  // times_selected and idle saturate here
// Largest sample count (ids are int64 and every size product must fit in 64 bits with room).
constexpr uint64_t kMaxSamples = uint64_t(1) << 48;

// The live part of the header page, outside the header checksum: which epoch's weights the store
// holds, behind a sequence lock. A writer of weights (select, a resume, the GPU store's host copy)
// makes `seq` odd, writes, stamps the epoch and makes `seq` even again; a reader in another process
// copies what it needs and retries when `seq` was odd or moved, so it sees one whole epoch or waits.
constexpr size_t kLiveOffset = 2048;
struct LiveHeader {
  uint64_t seq;             // odd while weights are being written
  uint64_t epoch_plus_one;  // 0: no epoch selected (or the last write did not finish)
};

// On-disk header at offset 0 (little-endian, as the machine writes it; the endian marker refuses
// a file from a machine of the other byte order).
struct FileHeader {
  char magic[8];               // "EMPSTORE"
  uint32_t version;            // kFormatVersion
  uint32_t endian_marker;      // 0x01020304
  uint64_t header_bytes;       // kHeaderBytes
  uint64_t num_samples;
  uint64_t bytes_per_sample;   // kBytesPerSample
  uint64_t stats_offset, times_offset, weight_offset;  // array offsets from file start (idle: after times)
  uint64_t data_bytes;         // end of the last array
  uint64_t metadata_offset, metadata_bytes;  // opaque blob after the arrays (Pruner config)
  uint64_t flags;              // kFlagDataChecksum: data_checksum is valid (a saved snapshot)
  uint64_t data_checksum;
  uint64_t header_checksum;    // of every byte above this field
};
constexpr uint64_t kFlagDataChecksum = 1;

class Store {
 public:
  // An owned, zero-filled then initialised store.
  static Store create(uint64_t num_samples);
  // A new memory-mapped store file, created atomically (temp file + rename).
  static Store create_mapped(const std::string& path, uint64_t num_samples);
  // Map an existing file; checks magic, version, header checksum, size, and the data checksum of
  // a saved snapshot. A read-write open marks the file live (its data checksum no longer holds).
  static Store open(const std::string& path, bool readonly);
  // Read a file into owned memory (a private copy), with the same checks.
  static Store load(const std::string& path);

  Store(Store&&) noexcept;
  Store& operator=(Store&&) noexcept;
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;
  ~Store();

  // Write a snapshot with a data checksum and `metadata` to `path` atomically.
  void save(const std::string& path, const std::string& metadata) const;
  // Metadata stored in the file this store was opened or loaded from.
  const std::string& metadata() const { return metadata_; }

  uint64_t size() const { return n_; }
  bool readonly() const { return readonly_; }
  bool mapped() const { return mapped_; }
  const std::string& path() const { return path_; }
  static uint64_t bytes_per_sample() { return kBytesPerSample; }
  uint64_t nbytes() const { return n_ * kBytesPerSample; }

  SampleStats* stats() { return reinterpret_cast<SampleStats*>(base_ + layout_.stats); }
  const SampleStats* stats() const { return reinterpret_cast<const SampleStats*>(base_ + layout_.stats); }
  // Epochs each sample was kept in (saturating).
  uint16_t* times_selected() { return reinterpret_cast<uint16_t*>(base_ + layout_.times); }
  const uint16_t* times_selected() const { return reinterpret_cast<const uint16_t*>(base_ + layout_.times); }
  // Pruned epochs since each sample was last kept (0 once kept; saturating): max_gap reads it.
  uint16_t* idle() { return reinterpret_cast<uint16_t*>(base_ + layout_.idle); }
  const uint16_t* idle() const { return reinterpret_cast<const uint16_t*>(base_ + layout_.idle); }
  float* weight() { return reinterpret_cast<float*>(base_ + layout_.weight); }
  const float* weight() const { return reinterpret_cast<const float*>(base_ + layout_.weight); }

  // Entries accepted by update() and not yet applied to the records (update.h: settle).
  UpdateLog& pending() { return pending_; }
  const UpdateLog& pending() const { return pending_; }

  // Bring every sample back to "never seen", weight 1, never selected, not idle.
  void reset();

  // Weights writers bracket their writes (see LiveHeader); `epoch` < 0 stamps "no epoch".
  void begin_weights_write();
  void end_weights_write(int64_t epoch);
  // The stamped epoch (-1: none) once no write is in progress; waits up to `timeout_s` for one.
  int64_t stamped_epoch(double timeout_s) const;
  // A consistent copy of weight[lo, hi) and the epoch it belongs to (waits out a write in progress;
  // an empty range only reads the stamp).
  int64_t read_weights(uint64_t lo, uint64_t hi, float* out, double timeout_s) const;
  // Ids and weights may change: the file's identity, to refuse saving a snapshot over it.
  bool same_file_as(const std::string& path) const;
  // Flush a mapped store to its file (msync).
  void flush();

 private:
  struct Layout {
    uint64_t stats = 0, times = 0, idle = 0, weight = 0, data_end = 0;
  };
  static Layout layout_for(uint64_t n);
  static Store from_file(const std::string& path, bool readonly, bool map);
  static Store from_version1(int fd, const FileHeader& h, uint64_t file_size, const std::string& path);
  FileHeader make_header(const std::string& metadata, bool with_checksum) const;
  uint64_t data_checksum() const;
  void release() noexcept;
  LiveHeader* live() const { return reinterpret_cast<LiveHeader*>(base_ + kLiveOffset); }
  void remember_file(int fd);

  Store() = default;
  uint64_t n_ = 0;
  Layout layout_;
  unsigned char* base_ = nullptr;    // start of the block (header included)
  std::vector<unsigned char, HugePageAllocator<unsigned char>> owned_;  // backing memory when not mapped
  size_t mapped_bytes_ = 0;
  bool mapped_ = false;
  bool readonly_ = false;
  uint64_t file_dev_ = 0, file_ino_ = 0;  // identity of the mapped file
  std::string path_;
  std::string metadata_;
  UpdateLog pending_;
};

// Checksum of arbitrary bytes (word-wise SplitMix mixing, summed: order-independent so it can run
// in parallel blocks and still give one answer).
uint64_t checksum_bytes(const unsigned char* data, size_t len);

}  // namespace emp
