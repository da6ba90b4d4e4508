#include "webdataset/tar_index.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <vector>

namespace emp {
namespace {

constexpr uint64_t kBlockSize = 512;
constexpr uint64_t kChunk = uint64_t(1) << 20;   // buffered read size
// A GNU long name or a pax record block larger than this is refused (names are short; the bound
// keeps a crafted size from allocating gigabytes).
constexpr uint64_t kMaxExtendedHeader = uint64_t(1) << 20;

// Numeric header field: octal text, or base-256 (GNU) when the top bit of the first byte is set.
bool parse_number(const unsigned char* field, size_t len, uint64_t& out) {
  if (field[0] & 0x80) {
    if (field[0] & 0x40) return false;  // base-256 negative: no size or checksum is negative
    uint64_t v = field[0] & 0x7F;
    for (size_t i = 1; i < len; ++i) {
      if (v >> 56) return false;
      v = (v << 8) | field[i];
    }
    out = v;
    return true;
  }
  uint64_t v = 0;
  size_t i = 0;
  while (i < len && (field[i] == ' ' || field[i] == 0)) ++i;
  bool any = false;
  for (; i < len && field[i] >= '0' && field[i] <= '7'; ++i) {
    v = (v << 3) | static_cast<uint64_t>(field[i] - '0');
    any = true;
  }
  for (; i < len; ++i)
    if (field[i] != ' ' && field[i] != 0) return false;
  out = any ? v : 0;
  return true;
}

bool checksum_ok(const unsigned char* h) {
  uint64_t stored = 0;
  if (!parse_number(h + 148, 8, stored)) return false;
  // Sum every byte (a branch-free loop the compiler vectorises), then count the checksum field
  // itself as spaces, as the format defines.
  uint32_t sum = 0;
  for (size_t i = 0; i < kBlockSize; ++i) sum += h[i];
  for (size_t i = 148; i < 156; ++i) sum -= h[i];
  sum += 8 * ' ';
  return sum == stored;
}

std::string field_string(const unsigned char* f, size_t len) {
  size_t n = 0;
  while (n < len && f[n] != 0) ++n;
  return std::string(reinterpret_cast<const char*>(f), n);
}

// The records of a pax extended header, "<len> <key>=<value>\n" each, as POSIX defines them;
// false for a malformed block (a length that is not a plain decimal, runs past the block, or a
// record without '=' or the closing newline). Only the keys that change how members are read are
// kept: path, size, and whether GNU sparse records are present.
struct PaxRecords {
  std::string path;
  bool has_size = false;
  uint64_t size = 0;
  bool sparse = false;
};

bool parse_pax(const unsigned char* data, uint64_t len, PaxRecords& out) {
  uint64_t pos = 0;
  while (pos < len) {
    if (data[pos] == 0) break;  // zero padding after the last record
    uint64_t rec_len = 0, i = pos;
    for (; i < len && data[i] >= '0' && data[i] <= '9'; ++i) {
      if (rec_len > (len / 10) + 1) return false;  // longer than the block: stop before it wraps
      rec_len = rec_len * 10 + (data[i] - '0');
    }
    if (i == pos || i >= len || data[i] != ' ') return false;
    if (rec_len > len - pos || rec_len < (i - pos) + 3) return false;  // digits, ' ', 'k=', '\n' at least
    const uint64_t end = pos + rec_len;  // one past the record's '\n'
    if (data[end - 1] != '\n') return false;
    const char* kv = reinterpret_cast<const char*>(data + i + 1);
    const size_t kv_len = static_cast<size_t>(end - 1 - (i + 1));
    const void* eq = std::memchr(kv, '=', kv_len);
    if (eq == nullptr) return false;
    const std::string key(kv, static_cast<const char*>(eq) - kv);
    const std::string value(static_cast<const char*>(eq) + 1, kv + kv_len);
    if (key == "path") {
      out.path = value;
    } else if (key == "size") {
      if (value.empty() || value.size() > 19) return false;
      uint64_t v = 0;
      for (char c : value) {
        if (c < '0' || c > '9') return false;
        v = v * 10 + static_cast<uint64_t>(c - '0');
      }
      out.has_size = true;
      out.size = v;
    } else if (key.compare(0, 11, "GNU.sparse.") == 0) {
      out.sparse = true;
    }
    pos = end;
  }
  return true;
}

// Buffered reader over a file: reads in 1 MiB chunks; far jumps become a fresh read at the target.
class Reader {
 public:
  Reader(int fd, uint64_t size) : fd_(fd), size_(size) {}
  // Pointer to `len` bytes at `offset` (valid until the next call), or nullptr past EOF / on error.
  const unsigned char* at(uint64_t offset, uint64_t len) {
    if (offset + len > size_) return nullptr;
    if (offset < start_ || offset + len > start_ + buf_.size()) {
      const uint64_t want = std::max<uint64_t>(kChunk, len);
      const uint64_t n = std::min<uint64_t>(want, size_ - offset);
      buf_.resize(n);
      uint64_t got = 0;
      while (got < n) {
        const ssize_t r = ::pread(fd_, buf_.data() + got, n - got, static_cast<off_t>(offset + got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return nullptr;
        got += static_cast<uint64_t>(r);
      }
      start_ = offset;
    }
    return buf_.data() + (offset - start_);
  }

 private:
  int fd_;
  uint64_t size_;
  uint64_t start_ = 0;
  std::vector<unsigned char> buf_;
};

}  // namespace

TarScan scan_tar(const std::string& path) {
  TarScan scan;
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    scan.error = std::string("cannot open: ") + std::strerror(errno);
    return scan;
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    scan.error = std::string("cannot stat: ") + std::strerror(errno);
    ::close(fd);
    return scan;
  }
  scan.file_size = static_cast<uint64_t>(st.st_size);
  Reader reader(fd, scan.file_size);
  uint64_t pos = 0;
  std::string long_name;  // from a GNU 'L' entry or a pax 'x' record, for the next member
  bool pax_size = false;  // a pax 'x' record gave the next member's size (over 8 GiB: ustar holds 0)
  uint64_t pax_size_value = 0;
  auto fail = [&](const char* what) {
    scan.error = what;
    scan.error_offset = pos;
  };
  while (true) {
    const unsigned char* h = reader.at(pos, kBlockSize);
    if (h == nullptr) {
      // Writers (tarfile, webdataset's TarWriter) always end with zero blocks: a file that stops
      // before them was cut short, even if the last member's data is complete.
      fail(pos >= scan.file_size ? "truncated tar file (no end-of-archive marker)"
                                 : "truncated tar header (file ends inside it)");
      break;
    }
    bool zero = true;
    for (size_t i = 0; i < kBlockSize && zero; ++i) zero = h[i] == 0;
    if (zero) break;  // end-of-archive block
    if (!checksum_ok(h)) {
      fail("corrupt tar header (checksum mismatch)");
      break;
    }
    uint64_t size = 0;
    if (!parse_number(h + 124, 12, size)) {
      fail("corrupt tar header (bad size field)");
      break;
    }
    const char type = static_cast<char>(h[156]);
    const bool is_file = type == '0' || type == '\0' || type == '7';
    if (is_file && pax_size) size = pax_size_value;
    const uint64_t data = pos + kBlockSize;  // <= file_size: the header block was read
    // Checked before any arithmetic with `size`, so a size near 2^64 cannot wrap the next offset.
    if (size > scan.file_size - data) {
      fail("truncated tar member (data runs past the end of the file)");
      break;
    }
    const uint64_t next = data + (size + kBlockSize - 1) / kBlockSize * kBlockSize;
    if (type == 'L' || type == 'K' || type == 'x' || type == 'g') {
      if (size > kMaxExtendedHeader) {
        fail("tar extended header too large (over 1 MiB of long name or pax records)");
        break;
      }
      const unsigned char* payload = reader.at(data, size);
      if (payload == nullptr) {
        fail("truncated tar member");
        break;
      }
      if (type == 'L') {
        long_name = field_string(payload, size);
      } else if (type == 'x') {
        PaxRecords pax;
        if (!parse_pax(payload, size, pax)) {
          fail("corrupt pax extended header (malformed record)");
          break;
        }
        if (pax.sparse) {
          fail("GNU sparse tar member (pax GNU.sparse records) is not supported");
          break;
        }
        if (!pax.path.empty()) long_name = pax.path;
        pax_size = pax.has_size;
        pax_size_value = pax.size;
      } else if (type == 'g') {
        PaxRecords pax;  // global records: checked, not applied (they name no member)
        if (!parse_pax(payload, size, pax)) {
          fail("corrupt pax global header (malformed record)");
          break;
        }
      }
      // 'K' (GNU long link target) names a link's target: links are not samples.
    } else if (type == 'S') {
      fail("GNU sparse tar member is not supported");
      break;
    } else if (is_file) {
      TarMember m;
      if (!long_name.empty()) {
        m.name = long_name;
      } else {
        const std::string prefix = std::memcmp(h + 257, "ustar", 5) == 0 ? field_string(h + 345, 155) : "";
        const std::string name = field_string(h, 100);
        m.name = prefix.empty() ? name : prefix + "/" + name;
      }
      m.offset = data;
      m.size = size;
      scan.members.push_back(std::move(m));
      long_name.clear();
      pax_size = false;
    } else {
      long_name.clear();  // directories, links: not samples
      pax_size = false;
    }
    // A next header beyond the buffered chunk is read fresh at its offset: large payloads are
    // jumped over, never read.
    pos = next;
  }
  ::close(fd);
  return scan;
}

ShardSamples group_samples(const TarScan& scan) {
  ShardSamples out;
  std::string current_key;
  bool open_sample = false;
  size_t sample_member_start = 0;
  for (const TarMember& m : scan.members) {
    const size_t slash = m.name.rfind('/');
    const size_t base = slash == std::string::npos ? 0 : slash + 1;
    const size_t dot = m.name.find('.', base);
    if (dot == std::string::npos || dot == base) continue;  // no key.field split: not a sample member
    const std::string key = m.name.substr(0, dot);
    std::string ext = m.name.substr(dot + 1);
    for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (!open_sample || key != current_key) {
      if (open_sample) out.sample_first_member.push_back(static_cast<int64_t>(out.member_offset.size()));
      out.keys += key;
      out.key_offsets.push_back(static_cast<int64_t>(out.keys.size()));
      current_key = key;
      open_sample = true;
      sample_member_start = out.member_offset.size();
    } else {
      for (size_t j = sample_member_start; j < out.member_offset.size(); ++j) {
        const size_t a = static_cast<size_t>(out.ext_offsets[j]), b = static_cast<size_t>(out.ext_offsets[j + 1]);
        if (out.exts.compare(a, b - a, ext) == 0) {
          out.error = "duplicate file name in tar file: " + m.name + " (sample '" + key + "' already has ." + ext + ")";
          return out;
        }
      }
    }
    out.exts += ext;
    out.ext_offsets.push_back(static_cast<int64_t>(out.exts.size()));
    out.member_offset.push_back(m.offset);
    out.member_size.push_back(m.size);
  }
  if (open_sample) out.sample_first_member.push_back(static_cast<int64_t>(out.member_offset.size()));
  return out;
}

}  // namespace emp
