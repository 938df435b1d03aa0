// libFuzzer target for the plotfile Header parser (BACK-AMREX-1/2).
//
// Any text must either parse or fail with kangaroo::Error. A parsed Header
// has exactly finest_level + 1 levels, domains, steps and cell sizes, grid
// bound lists of the declared length, non-empty cell-centered domains with
// zero-extent missing axes, positive cell sizes and prob_hi above prob_lo.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "../src/data/amrex/plotfile_format.h"

namespace {

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_amrex_header: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  kangaroo::amrex::PlotfileHeaderText h;
  try {
    h = kangaroo::amrex::parse_plotfile_header(text, "fuzz/Header");
  } catch (const kangaroo::Error&) {
    return 0;
  }
  const auto nlev = static_cast<std::size_t>(h.finest_level) + 1;
  if (h.domains.size() != nlev || h.levels.size() != nlev || h.level_steps.size() != nlev ||
      h.cell_size.size() != nlev)
    finding("per-level lists disagree with finest_level");
  if (h.spacedim < 1 || h.spacedim > 3) finding("spacedim outside 1..3");
  if (h.var_names.empty()) finding("no variables");
  for (const auto& n : h.var_names)
    if (n.empty()) finding("empty variable name");
  for (int a = 0; a < 3; ++a) {
    const auto ua = static_cast<std::size_t>(a);
    if (!(h.prob_hi[ua] > h.prob_lo[ua])) finding("prob_hi not above prob_lo");
    for (std::size_t l = 0; l < nlev; ++l) {
      if (!(h.cell_size[l][ua] > 0.0)) finding("non-positive cell size");
      const auto& d = h.domains[l];
      if (d.empty()) finding("empty domain");
      if (a >= h.spacedim && (d.lo[ua] != 0 || d.hi[ua] != 0)) finding("missing axis with extent");
    }
  }
  for (std::size_t l = 0; l < nlev; ++l) {
    const auto& b = h.levels[l];
    if (b.level != static_cast<int>(l)) finding("level block out of order");
    if (b.grid_lo.size() != static_cast<std::size_t>(b.ngrids) || b.grid_hi.size() != b.grid_lo.size())
      finding("grid bound list length differs from ngrids");
    if (b.mf_prefix.empty()) finding("empty multifab path");
  }
  return 0;
}
