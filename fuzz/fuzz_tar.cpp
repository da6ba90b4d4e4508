// Tar headers and webdataset grouping (build_index's C++ path) on arbitrary bytes: any input must
// give members inside the file, or an error, and never hang, crash or read out of bounds.
#include <cstdlib>

#include "fuzz_input.h"
#include "webdataset/tar_index.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  MemFile file(data, size);
  const emp::TarScan scan = emp::scan_tar(file.path);
  for (const emp::TarMember& m : scan.members)
    if (m.offset > scan.file_size || m.size > scan.file_size - m.offset) std::abort();  // a member outside the file
  const emp::ShardSamples groups = emp::group_samples(scan);
  if (groups.member_offset.size() > scan.members.size()) std::abort();
  return 0;
}
