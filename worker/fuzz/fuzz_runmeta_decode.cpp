// libFuzzer target for the RunMeta codec (DATA-1..7) and the coverage
// helpers (COV-3/4, COORD-1/2).
//
// Any text must either decode or fail with kangaroo::Error. A decoded RunMeta
// is valid (validate_runmeta accepts it), re-encodes to a document that
// decodes again, and its coverage and coordinate helpers run without
// sanitizer reports. A fine box coarsened by one level is never empty.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "kangaroo/core/error.h"
#include "kangaroo/core/runmeta.h"

namespace {

[[noreturn]] void finding(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz_runmeta_decode: %s\n%s\n", what, detail.c_str());
  std::abort();
}

// Bounds the per-input work so that large inputs stay fast.
constexpr std::size_t kMaxLevels = 8;
constexpr std::size_t kMaxBoxesPerLevel = 64;

void exercise(const kangaroo::RunMeta& meta) {
  for (const auto& step : meta.steps) {
    if (meta.find_step(step.step) == nullptr)
      finding("find_step misses a decoded label", std::to_string(step.step));
    if (step.levels.size() > kMaxLevels) continue;
    bool small = true;
    for (const auto& lv : step.levels)
      small &= lv.boxes.size() <= kMaxBoxesPerLevel;
    if (!small) continue;
    for (std::size_t l = 0; l < step.levels.size(); ++l) {
      const auto& lv = step.levels[l];
      const int level = static_cast<int>(l);
      if (meta.find_level(step.step, level) == nullptr)
        finding("find_level misses a decoded level", "");
      const auto covered = kangaroo::volume_coverage(step, level);
      for (const auto& box : covered)
        (void)kangaroo::is_covered(covered, box.lo[0], box.lo[1], box.lo[2]);
      if (level >= 1) {
        // Boxes are aligned to the ratio of the next coarser level (COV-3), so
        // one coarsening step keeps at least one whole coarse cell.
        for (const auto& box : lv.boxes) {
          const kangaroo::IndexBox c = kangaroo::coarsen_box(step, box, level, level - 1);
          if (c.empty()) finding("aligned fine box coarsened to an empty box", box.to_string());
        }
      }
      for (int a = 0; a < 3; ++a) {
        for (const auto& box : lv.boxes) {
          const double x = kangaroo::cell_low_edge(lv.geom, a, box.lo[a]);
          (void)kangaroo::coord_to_index(lv.geom, a, x);
        }
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  kangaroo::RunMeta meta;
  try {
    meta = kangaroo::decode_runmeta(text);
  } catch (const kangaroo::Error&) {
    return 0;
  }

  try {
    kangaroo::validate_runmeta(meta);
  } catch (const kangaroo::Error& e) {
    finding("decoded RunMeta fails validation", e.what());
  }

  const std::string encoded = kangaroo::encode_runmeta(meta);
  kangaroo::RunMeta again;
  try {
    again = kangaroo::decode_runmeta(encoded);
  } catch (const kangaroo::Error& e) {
    finding("encoded RunMeta does not decode", std::string(e.what()) + "\n" + encoded);
  }
  if (kangaroo::encode_runmeta(again) != encoded) finding("encoding is not a fixed point", encoded);

  try {
    exercise(meta);
  } catch (const kangaroo::Error&) {
    // An explicit failure (e.g. arithmetic overflow) is acceptable.
  }
  return 0;
}
