// Small POSIX file helpers shared by the store and the key table: error text with errno, a
// descriptor closed on scope exit, and the pieces of an atomic create (temp file + rename).
#pragma once
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace emp {

inline std::string errno_text(const std::string& what, const std::string& path) {
  return what + " '" + path + "': " + std::strerror(errno);
}

// Closes a file descriptor on scope exit.
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

// Unique temp name beside the target so rename() stays on one file system.
inline std::string temp_path_for(const std::string& path) { return path + ".tmp." + std::to_string(::getpid()); }

inline void fsync_parent_dir(const std::string& path) {
  const auto slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  Fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY));
  if (d.fd >= 0) ::fsync(d.fd);
}

}  // namespace emp
