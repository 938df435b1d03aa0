// libFuzzer target for the per-FAB ASCII header parser (BACK-AMREX-4/5).
//
// The first byte b picks spacedim 1 + b % 3 (ASCII 0, 1, 2 give 1D, 2D, 3D);
// the rest are the bytes at a FAB's offset. Any input must either parse or
// fail with kangaroo::Error. A parsed header ends with a line feed inside the
// input, names a 32- or 64-bit real format and a non-empty box, and has at
// least one component.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "../src/data/amrex/plotfile_format.h"

namespace {

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_amrex_fab_header: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const int dim = 1 + data[0] % 3;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  kangaroo::amrex::FabHeader h;
  try {
    h = kangaroo::amrex::parse_fab_header(text, dim, "fuzz/Cell_D_00000", 0);
  } catch (const kangaroo::Error&) {
    return 0;
  }
  if (h.header_bytes == 0 || h.header_bytes > text.size() || text[h.header_bytes - 1] != '\n')
    finding("header does not end with a line feed inside the input");
  if (text.substr(0, 4) == "FAB:") finding("accepted the old FAB: form");
  if (h.real.bits != 32 && h.real.bits != 64) finding("unsupported real width accepted");
  if (h.ncomp < 1) finding("ncomp below 1");
  if (h.box.empty()) finding("empty box");
  for (int a = dim; a < 3; ++a) {
    const auto ua = static_cast<std::size_t>(a);
    if (h.box.lo[ua] != 0 || h.box.hi[ua] != 0) finding("missing axis with extent");
  }
  return 0;
}
