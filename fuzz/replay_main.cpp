// A main() for the libFuzzer harnesses where clang's libFuzzer is missing (`make fuzz-replay`): it
// feeds each file named on the command line to LLVMFuzzerTestOneInput once, so the C++ harnesses
// build with any compiler and replay the saved corpus under the sanitizers.
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::ifstream f(argv[i], std::ios::binary);
    if (!f) {
      std::fprintf(stderr, "cannot read %s\n", argv[i]);
      return 1;
    }
    const std::vector<uint8_t> data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    LLVMFuzzerTestOneInput(data.data(), data.size());
  }
  std::printf("replayed %d inputs\n", argc - 1);
  return 0;
}
