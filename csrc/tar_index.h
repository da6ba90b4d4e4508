// Scan a tar file's headers (ustar, GNU long names, pax path records) without reading member
// payloads: large payloads are skipped by seeking, small ones are passed over inside one buffered
// sequential read (cheaper than a syscall per header).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace emp {

struct TarMember {
  std::string name;
  uint64_t offset = 0;  // of the member's data in the file
  uint64_t size = 0;
};

struct TarScan {
  std::vector<TarMember> members;  // regular files only, in file order
  uint64_t file_size = 0;
  std::string error;               // empty when the whole file parsed
  uint64_t error_offset = 0;       // where the problem was found
};

TarScan scan_tar(const std::string& path);

}  // namespace emp
