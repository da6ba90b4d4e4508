// The store's file: creating a memory-mapped store, save (atomic, checksummed), open and load with
// every check of a header and its sizes before any arithmetic on them, and version 1 conversion.
#include "core/store.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/file_util.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "core/store_internal.h"

namespace emp {

using store_internal::align_up;
using store_internal::load_u64;

namespace {

constexpr char kMagic[8] = {'E', 'M', 'P', 'S', 'T', 'O', 'R', 'E'};
constexpr uint32_t kEndianMarker = 0x01020304u;

void write_all(int fd, const void* data, size_t len, const std::string& path) {
  const auto* p = static_cast<const unsigned char*>(data);
  while (len > 0) {
    const ssize_t w = ::write(fd, p, len > (size_t(1) << 30) ? (size_t(1) << 30) : len);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw IoError("cannot write", path);
    }
    p += w;
    len -= static_cast<size_t>(w);
  }
}

void read_all(int fd, void* data, size_t len, uint64_t offset, const std::string& path) {
  auto* p = static_cast<unsigned char*>(data);
  while (len > 0) {
    const ssize_t r = ::pread(fd, p, len > (size_t(1) << 30) ? (size_t(1) << 30) : len, static_cast<off_t>(offset));
    if (r < 0) {
      if (errno == EINTR) continue;
      throw IoError("cannot read", path);
    }
    if (r == 0) throw std::runtime_error("store file '" + path + "' is truncated");
    p += r;
    len -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
}

uint64_t header_checksum(const FileHeader& h) {
  return checksum_bytes(reinterpret_cast<const unsigned char*>(&h), offsetof(FileHeader, header_checksum));
}

// Checks a header read from `path` whose file has `file_size` bytes.
void verify_header(const FileHeader& h, uint64_t file_size, const std::string& path) {
  if (std::memcmp(h.magic, kMagic, sizeof(kMagic)) != 0)
    throw std::runtime_error("'" + path + "' is not an emp_data store file (bad magic)");
  if (h.endian_marker != kEndianMarker)
    throw std::runtime_error("store file '" + path + "' was written on a machine of the other byte order");
  if (h.version != kFormatVersion)
    throw std::runtime_error("store file '" + path + "' has format version " + std::to_string(h.version) +
                             ", this emp_data reads version " + std::to_string(kFormatVersion) +
                             (h.version == 1 ? " (a version 1 snapshot is converted by ScoreStore.load / Pruner.load; save it "
                                               "again to write version 2)"
                                             : ""));
  if (h.header_checksum != header_checksum(h))
    throw std::runtime_error("store file '" + path + "' has a corrupt header (checksum mismatch)");
  if (h.header_bytes != kHeaderBytes || h.bytes_per_sample != kBytesPerSample)
    throw std::runtime_error("store file '" + path + "' has an unexpected layout");
  // Every size is checked before any arithmetic on it: a crafted N must not wrap the layout into
  // a small valid-looking one.
  if (h.num_samples == 0 || h.num_samples > kMaxSamples)
    throw std::runtime_error("store file '" + path + "' has an invalid sample count " + std::to_string(h.num_samples) +
                             " (1.." + std::to_string(kMaxSamples) + ")");
  if (h.data_bytes > file_size || h.metadata_bytes > file_size || h.metadata_offset < h.data_bytes ||
      h.metadata_offset > file_size - h.metadata_bytes)
    throw std::runtime_error("store file '" + path + "' is truncated: " + std::to_string(file_size) +
                             " bytes, header says at least " + std::to_string(std::max(h.data_bytes, h.metadata_offset)));
}

}  // namespace

uint64_t checksum_bytes(const unsigned char* data, size_t len) {
  const size_t words = len / 8;
  const size_t nb = num_blocks(words);
  std::vector<uint64_t> partial(nb, 0);
  for_blocks(words, [&](size_t b, size_t begin, size_t end) {
    uint64_t acc = 0;
    for (size_t i = begin; i < end; ++i) {
      uint64_t w;
      std::memcpy(&w, data + i * 8, 8);
      acc += splitmix64(w ^ (i * 0xD6E8FEB86659FD93ull));
    }
    partial[b] = acc;
  });
  uint64_t total = splitmix64(len);
  for (uint64_t p : partial) total += p;
  for (size_t i = words * 8; i < len; ++i) total += splitmix64(uint64_t(data[i]) ^ (i << 8));
  return splitmix64(total);
}

namespace {

// A store file is updated at random ids. Left to itself, the page cache holds such a file in large
// folios (ext4 and xfs use up to 2 MiB), and writeback then writes a whole folio for one changed
// sample: 512 times the bytes of a 4 KiB page (1.6 million updates of a 12 GB store wrote 2 TB).
// So every map of a store file faults single pages (MADV_RANDOM). A writer opening an existing file
// first drops its clean cached pages (a copy, or a read by an earlier process, may have left large
// folios) and reads it back with large reads that fill page-sized folios (POSIX_FADV_RANDOM makes a
// read fill exactly what it asks for, at order 0): single-page faults from disk would read at a
// small fraction of the disk's speed.
unsigned char* map_store_file(int fd, uint64_t bytes, bool writable, bool reread, const std::string& path) {
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);  // advice only: failure is harmless
  if (reread) {
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    std::vector<unsigned char> chunk(static_cast<size_t>(std::min<uint64_t>(bytes, uint64_t(64) << 20)));
    for (uint64_t off = 0; off < bytes; off += chunk.size())
      read_all(fd, chunk.data(), static_cast<size_t>(std::min<uint64_t>(chunk.size(), bytes - off)), off, path);
  }
  void* p = ::mmap(nullptr, bytes, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) throw IoError("cannot map store file", path);
  ::madvise(p, bytes, MADV_RANDOM);
  return static_cast<unsigned char*>(p);
}

}  // namespace

Store Store::create_mapped(const std::string& path, uint64_t num_samples) {
  const Layout layout = layout_for(num_samples);
  const std::string tmp = temp_path_for(path);
  Fd fd(::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644));
  if (fd.fd < 0) throw IoError("cannot create store file", tmp);
  try {
    // Real blocks, not a sparse file: a full disk is an error now, not a SIGBUS mid-training.
    reserve_file(fd.fd, 0, layout.data_end, tmp);
    unsigned char* p = map_store_file(fd.fd, layout.data_end, true, false, tmp);
    Store s;
    s.n_ = num_samples;
    s.layout_ = layout;
    s.base_ = p;
    s.mapped_ = true;
    s.mapped_bytes_ = layout.data_end;
    s.path_ = path;
    s.remember_file(fd.fd);
    s.reset();
    FileHeader h = s.make_header("", false);
    std::memcpy(s.base_, &h, sizeof(h));
    if (::msync(s.base_, s.mapped_bytes_, MS_SYNC) != 0) throw IoError("cannot sync", tmp);
    if (::rename(tmp.c_str(), path.c_str()) != 0) throw IoError("cannot move store file into place", path);
    fsync_parent_dir(path);
    return s;
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
}

void Store::remember_file(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) throw IoError("cannot stat", path_);
  file_dev_ = static_cast<uint64_t>(st.st_dev);
  file_ino_ = static_cast<uint64_t>(st.st_ino);
}

bool Store::same_file_as(const std::string& path) const {
  if (!mapped_) return false;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return false;  // not there (yet): another file
  return static_cast<uint64_t>(st.st_dev) == file_dev_ && static_cast<uint64_t>(st.st_ino) == file_ino_;
}

FileHeader Store::make_header(const std::string& metadata, bool with_checksum) const {
  FileHeader h;
  std::memset(&h, 0, sizeof(h));
  std::memcpy(h.magic, kMagic, sizeof(kMagic));
  h.version = kFormatVersion;
  h.endian_marker = kEndianMarker;
  h.header_bytes = kHeaderBytes;
  h.num_samples = n_;
  h.bytes_per_sample = kBytesPerSample;
  h.stats_offset = layout_.stats;
  h.times_offset = layout_.times;
  h.weight_offset = layout_.weight;
  h.data_bytes = layout_.data_end;
  h.metadata_offset = layout_.data_end;
  h.metadata_bytes = metadata.size();
  h.flags = with_checksum ? kFlagDataChecksum : 0;
  h.data_checksum = with_checksum ? data_checksum() : 0;
  h.header_checksum = header_checksum(h);
  return h;
}

uint64_t Store::data_checksum() const {
  return checksum_bytes(base_ + kHeaderBytes, layout_.data_end - kHeaderBytes);
}

void Store::save(const std::string& path, const std::string& metadata) const {
  // By identity, not by spelling: './x', an absolute path or a symlink name the same live file, and
  // renaming a snapshot over it would leave this process writing to an unlinked file.
  if (mapped_ && (path == path_ || same_file_as(path)))
    throw std::runtime_error("cannot save a mapped store onto its own file '" + path + "' (mapped as '" + path_ +
                             "'); use flush()");
  const FileHeader h = make_header(metadata, true);
  LiveHeader stamp{0, __atomic_load_n(&live()->epoch_plus_one, __ATOMIC_ACQUIRE)};
  if (load_u64(&live()->seq) & 1) stamp.epoch_plus_one = 0;
  const std::string tmp = temp_path_for(path);
  try {
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644));
    if (fd.fd < 0) throw IoError("cannot create", tmp);
    std::vector<unsigned char> header_block(kHeaderBytes, 0);
    std::memcpy(header_block.data(), &h, sizeof(h));
    std::memcpy(header_block.data() + kLiveOffset, &stamp, sizeof(stamp));
    write_all(fd.fd, header_block.data(), header_block.size(), tmp);
    write_all(fd.fd, base_ + kHeaderBytes, layout_.data_end - kHeaderBytes, tmp);
    write_all(fd.fd, metadata.data(), metadata.size(), tmp);
    if (::fsync(fd.fd) != 0) throw IoError("cannot sync", tmp);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    throw IoError("cannot move file into place", path);
  }
  fsync_parent_dir(path);
  remove_stale_temps(path);
}

Store Store::from_file(const std::string& path, bool readonly, bool map) {
  Fd fd(::open(path.c_str(), readonly ? O_RDONLY : O_RDWR));
  if (fd.fd < 0) throw IoError("cannot open store file", path);
  struct stat st;
  if (::fstat(fd.fd, &st) != 0) throw IoError("cannot stat", path);
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < sizeof(FileHeader))
    throw std::runtime_error("store file '" + path + "' is truncated (" + std::to_string(file_size) + " bytes)");
  FileHeader h;
  read_all(fd.fd, &h, sizeof(h), 0, path);
  if (!map && h.version == 1 && std::memcmp(h.magic, kMagic, sizeof(kMagic)) == 0)
    return from_version1(fd.fd, h, file_size, path);
  verify_header(h, file_size, path);
  const Layout layout = layout_for(h.num_samples);
  if (layout.data_end != h.data_bytes || layout.stats != h.stats_offset || layout.times != h.times_offset ||
      layout.weight != h.weight_offset)
    throw std::runtime_error("store file '" + path + "' has an unexpected layout");

  Store s;
  s.n_ = h.num_samples;
  s.layout_ = layout;
  s.readonly_ = readonly;
  s.metadata_.resize(h.metadata_bytes);
  if (h.metadata_bytes > 0) read_all(fd.fd, &s.metadata_[0], h.metadata_bytes, h.metadata_offset, path);
  if (map) {
    s.base_ = map_store_file(fd.fd, layout.data_end, !readonly, !readonly, path);
    s.mapped_ = true;
    s.mapped_bytes_ = layout.data_end;
    s.path_ = path;
    s.remember_file(fd.fd);
  } else {
    s.owned_.resize(layout.data_end);
    s.base_ = s.owned_.data();
    read_all(fd.fd, s.base_, layout.data_end, 0, path);  // the header page too: its epoch stamp
  }
  if (!readonly && (load_u64(&s.live()->seq) & 1)) {
    // A writer died mid-write: the weights are a mix of two epochs, so no epoch is stamped.
    s.begin_weights_write();
    s.end_weights_write(-1);
  }
  if ((h.flags & kFlagDataChecksum) && s.data_checksum() != h.data_checksum)
    throw std::runtime_error("store file '" + path + "' is corrupt (data checksum mismatch)");
  if (map && !readonly && (h.flags & kFlagDataChecksum)) {
    // Writes through this map will change the data: the snapshot checksum no longer applies.
    FileHeader live = h;
    live.flags &= ~kFlagDataChecksum;
    live.data_checksum = 0;
    live.header_checksum = header_checksum(live);
    std::memcpy(s.base_, &live, sizeof(live));
  }
  return s;
}

// A version 1 file (uint32 times_selected, no idle counts) read into a version 2 store: every check
// of a current file (header checksum, sizes before arithmetic, layout, data checksum) on the old
// layout, then converted in place in the new store's own memory (the two layouts are the same size
// but for alignment, so a large snapshot is never held twice): times clamped to uint16, idle 0.
Store Store::from_version1(int fd, const FileHeader& h1, uint64_t file_size, const std::string& path) {
  FileHeader h = h1;
  if (h.header_checksum != header_checksum(h))
    throw std::runtime_error("store file '" + path + "' has a corrupt header (checksum mismatch)");
  h.version = kFormatVersion;  // then every other check exactly as for a current file
  h.header_checksum = header_checksum(h);
  verify_header(h, file_size, path);
  const uint64_t n = h.num_samples;
  const uint64_t times1 = align_up(kHeaderBytes + n * sizeof(SampleStats), 64);
  const uint64_t weight1 = align_up(times1 + n * sizeof(uint32_t), 64);
  const uint64_t end1 = weight1 + n * sizeof(float);
  if (h.stats_offset != kHeaderBytes || h.times_offset != times1 || h.weight_offset != weight1 || h.data_bytes != end1)
    throw std::runtime_error("store file '" + path + "' has an unexpected layout");
  Store s;
  s.n_ = n;
  s.layout_ = layout_for(n);
  s.owned_.resize(std::max(end1, s.layout_.data_end));
  s.base_ = s.owned_.data();
  read_all(fd, s.base_, end1, 0, path);
  if ((h.flags & kFlagDataChecksum) && checksum_bytes(s.base_ + kHeaderBytes, end1 - kHeaderBytes) != h.data_checksum)
    throw std::runtime_error("store file '" + path + "' is corrupt (data checksum mismatch)");
  // Stats stay where they are (same offset). times: uint32 at 4i -> uint16 at 2i, walking forward
  // (each write lands at or below the read that precedes it); then the weights move up to their
  // new offset (never below the old one), and the idle counts are zeroed in the space between.
  static_assert(sizeof(SampleStats) == 16, "layouts differ after the stats");
  unsigned char* t = s.base_ + s.layout_.times;
  for (uint64_t i = 0; i < n; ++i) {
    uint32_t old;
    std::memcpy(&old, t + i * sizeof(uint32_t), sizeof(old));
    const uint16_t clamped = static_cast<uint16_t>(std::min<uint32_t>(old, kCountMax));
    std::memcpy(t + i * sizeof(uint16_t), &clamped, sizeof(clamped));
  }
  std::memmove(s.base_ + s.layout_.weight, s.base_ + weight1, n * sizeof(float));
  std::memset(s.base_ + s.layout_.idle, 0, n * sizeof(uint16_t));
  s.owned_.resize(s.layout_.data_end);
  s.base_ = s.owned_.data();
  std::memset(s.base_, 0, sizeof(FileHeader));  // the header is rebuilt by save; the live page stays
  if (load_u64(&s.live()->seq) & 1) {  // a writer died mid-write: the weights name no epoch
    s.begin_weights_write();
    s.end_weights_write(-1);
  }
  s.metadata_.resize(h.metadata_bytes);
  if (h.metadata_bytes > 0) read_all(fd, &s.metadata_[0], h.metadata_bytes, h.metadata_offset, path);
  return s;
}

Store Store::open(const std::string& path, bool readonly) { return from_file(path, readonly, true); }
Store Store::load(const std::string& path) { return from_file(path, false, false); }

void Store::flush() {
  if (mapped_ && !readonly_ && ::msync(base_, mapped_bytes_, MS_SYNC) != 0)
    throw IoError("cannot sync store file", path_);
}


}  // namespace emp
