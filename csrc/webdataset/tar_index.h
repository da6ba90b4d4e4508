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

// A shard's samples as webdataset groups them: a member name splits into key and field at the
// first dot of its basename (webdataset's base_plus_ext; names without such a dot are skipped),
// consecutive members with the same key form one sample, fields are lower-cased. Flat arrays:
// sample s has key keys[key_offsets[s]:key_offsets[s+1]] and members
// [sample_first_member[s], sample_first_member[s+1]), member m field exts[ext_offsets[m]:...].
struct ShardSamples {
  std::string keys;
  std::vector<int64_t> key_offsets{0};
  std::string exts;
  std::vector<int64_t> ext_offsets{0};
  std::vector<uint64_t> member_offset, member_size;
  std::vector<int64_t> sample_first_member{0};
  std::string error;  // e.g. a duplicate field inside one sample
};

ShardSamples group_samples(const TarScan& scan);

}  // namespace emp
