// Fuzz inputs as files: the parsers under test read paths (they map or pread files), so each input
// becomes an anonymous in-memory file (memfd) named through /proc/self/fd.
#pragma once
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

struct MemFile {
  int fd = -1;
  std::string path;
  MemFile(const uint8_t* data, size_t size) {
    fd = ::memfd_create("emp_fuzz", 0);
    if (fd < 0) __builtin_trap();
    size_t done = 0;
    while (done < size) {
      const ssize_t w = ::write(fd, data + done, size - done);
      if (w <= 0) __builtin_trap();
      done += static_cast<size_t>(w);
    }
    path = "/proc/self/fd/" + std::to_string(fd);
  }
  ~MemFile() { ::close(fd); }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;
};
