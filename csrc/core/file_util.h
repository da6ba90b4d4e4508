// Small POSIX file helpers shared by the store and the key table: I/O errors with their errno, a
// descriptor closed on scope exit, and the pieces of an atomic create (temp file + rename).
#pragma once
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace emp {

// A failed system call on a file (disk full, permission, missing file): the bindings raise it as
// Python's OSError with its errno, so callers can tell I/O trouble from a bad file.
struct IoError : std::runtime_error {
  int error_number;
  IoError(const std::string& what, const std::string& path, int err = errno)
      : std::runtime_error(what + " '" + path + "': " + std::strerror(err)), error_number(err) {}
};

// Reserve `bytes` of real disk for a file that is then written through a shared mapping: writes to
// a sparse file on a full disk kill the process with SIGBUS, a failed reservation is an error here.
inline void reserve_file(int fd, uint64_t offset, uint64_t bytes, const std::string& path) {
  if (bytes == 0) return;
  const int err = ::posix_fallocate(fd, static_cast<off_t>(offset), static_cast<off_t>(bytes));
  if (err != 0) throw IoError("cannot reserve " + std::to_string(bytes) + " bytes of disk for", path, err);
}

// a * b + c without wrapping: false when the result would not fit in 64 bits.
inline bool mul_add_fits(uint64_t a, uint64_t b, uint64_t c, uint64_t& out) {
  unsigned __int128 r = static_cast<unsigned __int128>(a) * b + c;
  if (r >> 64) return false;
  out = static_cast<uint64_t>(r);
  return true;
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

// The folder holding `path`, and its name in it.
inline std::string parent_dir(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
}
inline std::string base_name(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Temp files `<path>.tmp.<pid>` left by writers that were killed (SIGKILL, power loss) are removed
// when a later write of `path` succeeds; a temp file of a live process is left alone.
inline void remove_stale_temps(const std::string& path) {
  const std::string dir = parent_dir(path);
  const std::string prefix = base_name(path) + ".tmp.";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.compare(0, prefix.size(), prefix) != 0 || name.size() == prefix.size() || name.size() > prefix.size() + 9)
      continue;
    long pid = 0;
    bool digits = true;
    for (size_t i = prefix.size(); i < name.size(); ++i) {
      digits = digits && name[i] >= '0' && name[i] <= '9';
      pid = pid * 10 + (name[i] - '0');
    }
    if (!digits || pid == ::getpid()) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // its writer may be alive
    ::unlink((dir + "/" + name).c_str());
  }
  ::closedir(d);
}

inline void fsync_parent_dir(const std::string& path) {
  const std::string dir = parent_dir(path);
  Fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY));
  if (d.fd >= 0) ::fsync(d.fd);
}

}  // namespace emp
