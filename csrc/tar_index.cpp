#include "tar_index.h"

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

// Numeric header field: octal text, or base-256 (GNU) when the top bit of the first byte is set.
bool parse_number(const unsigned char* field, size_t len, uint64_t& out) {
  if (field[0] & 0x80) {
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

// "path" from pax records "<len> key=value\n".
std::string pax_path(const std::string& records) {
  size_t pos = 0;
  std::string path;
  while (pos < records.size()) {
    const size_t space = records.find(' ', pos);
    if (space == std::string::npos) break;
    const uint64_t len = std::strtoull(records.c_str() + pos, nullptr, 10);
    if (len == 0 || pos + len > records.size()) break;
    const std::string kv = records.substr(space + 1, pos + len - space - 2);  // without '\n'
    if (kv.compare(0, 5, "path=") == 0) path = kv.substr(5);
    pos += len;
  }
  return path;
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
  while (true) {
    const unsigned char* h = reader.at(pos, kBlockSize);
    if (h == nullptr) {
      // Writers (tarfile, webdataset's TarWriter) always end with zero blocks: a file that stops
      // before them was cut short, even if the last member's data is complete.
      scan.error = pos >= scan.file_size ? "truncated tar file (no end-of-archive marker)"
                                         : "truncated tar header (file ends inside it)";
      scan.error_offset = pos;
      break;
    }
    bool zero = true;
    for (size_t i = 0; i < kBlockSize && zero; ++i) zero = h[i] == 0;
    if (zero) break;  // end-of-archive block
    if (!checksum_ok(h)) {
      scan.error = "corrupt tar header (checksum mismatch)";
      scan.error_offset = pos;
      break;
    }
    uint64_t size = 0;
    if (!parse_number(h + 124, 12, size)) {
      scan.error = "corrupt tar header (bad size field)";
      scan.error_offset = pos;
      break;
    }
    const char type = static_cast<char>(h[156]);
    const uint64_t data = pos + kBlockSize;
    const uint64_t next = data + (size + kBlockSize - 1) / kBlockSize * kBlockSize;
    if (data + size > scan.file_size) {
      scan.error = "truncated tar member (data runs past the end of the file)";
      scan.error_offset = pos;
      break;
    }
    if (type == 'L' || type == 'x') {
      const unsigned char* payload = reader.at(data, size);
      if (payload == nullptr) {
        scan.error = "truncated tar member";
        scan.error_offset = pos;
        break;
      }
      const std::string text(reinterpret_cast<const char*>(payload), size);
      long_name = type == 'L' ? field_string(reinterpret_cast<const unsigned char*>(text.data()), text.size())
                              : pax_path(text);
    } else if (type == '0' || type == '\0' || type == '7') {
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
    } else {
      long_name.clear();  // directories, links, pax globals: not samples
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
