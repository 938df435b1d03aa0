// libFuzzer target for the VisMF multifab header parser (Level_<L>/Cell_H,
// BACK-AMREX-3).
//
// The first byte b picks spacedim 1 + b % 3 (ASCII 0, 1, 2 give 1D, 2D, 3D);
// the rest is the Cell_H text. Any input must either parse or fail with
// kangaroo::Error. A parsed header has one FAB entry per box, every FAB file
// index in range, distinct file names, non-empty boxes with zero-extent
// missing axes, and ghost counts only on present axes.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>

#include "../src/data/amrex/plotfile_format.h"

namespace {

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_amrex_cell_h: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const int dim = 1 + data[0] % 3;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  kangaroo::amrex::CellHeader h;
  try {
    h = kangaroo::amrex::parse_cell_header(text, dim, "fuzz/Cell_H");
  } catch (const kangaroo::Error&) {
    return 0;
  }
  if (h.fab_file.size() != h.boxes.size() || h.fab_offset.size() != h.boxes.size())
    finding("FAB entries differ from the box count");
  for (auto f : h.fab_file)
    if (f >= h.files.size()) finding("FAB file index out of range");
  if (std::set<std::string>(h.files.begin(), h.files.end()).size() != h.files.size())
    finding("duplicate data file names");
  if (h.ncomp < 1) finding("ncomp below 1");
  for (int a = 0; a < 3; ++a) {
    const auto ua = static_cast<std::size_t>(a);
    if (h.ngrow[ua] < 0 || (a >= dim && h.ngrow[ua] != 0)) finding("bad ngrow");
    for (const auto& b : h.boxes) {
      if (b.empty()) finding("empty box");
      if (a >= dim && (b.lo[ua] != 0 || b.hi[ua] != 0)) finding("missing axis with extent");
    }
  }
  return 0;
}
