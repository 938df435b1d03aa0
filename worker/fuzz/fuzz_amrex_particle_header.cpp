// libFuzzer target for the particle Header and Particle_H parsers
// (BACK-AMREX-11/12).
//
// The input is parsed both as a species Header and as a Particle_H box
// array; each must either parse or fail with kangaroo::Error. A parsed
// Header has a Version_Two_Dot_ version, dim 1..3, one grid list per level
// and non-negative counts; a parsed box array has non-empty boxes with
// zero-extent missing axes.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "../src/data/amrex/plotfile_format.h"

namespace {

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_amrex_particle_header: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const auto h = kangaroo::amrex::parse_particle_header(text, "fuzz/Header");
    if (h.version.find("Version_Two_Dot_") == std::string::npos) finding("version marker missing");
    if (h.dim < 1 || h.dim > 3) finding("dim outside 1..3");
    if (h.grids.size() != static_cast<std::size_t>(h.finest_level) + 1) finding("grid lists differ from levels");
    if (h.total_particles < 0) finding("negative particle count");
    for (const auto& level : h.grids)
      for (const auto& g : level)
        if (g.count < 0 || g.file_number < 0) finding("negative grid entry");
  } catch (const kangaroo::Error&) {
  }
  try {
    const auto boxes = kangaroo::amrex::parse_box_array_text(text, "fuzz/Particle_H");
    for (const auto& b : boxes) {
      if (b.empty()) finding("empty box");
    }
  } catch (const kangaroo::Error&) {
  }
  return 0;
}
