// Run metadata (DATA-1..7): the geometry and block layout a plan executes
// against, plus AMR coverage helpers (COV-2..6).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kangaroo {

struct IndexBox {
  std::array<std::int32_t, 3> lo{0, 0, 0};
  std::array<std::int32_t, 3> hi{-1, -1, -1};

  bool empty() const { return hi[0] < lo[0] || hi[1] < lo[1] || hi[2] < lo[2]; }
  std::int64_t extent(int axis) const { return std::int64_t{hi[axis]} - lo[axis] + 1; }
  std::uint64_t cells() const;  // 0 when empty
  bool contains(std::int64_t i, std::int64_t j, std::int64_t k) const {
    return i >= lo[0] && i <= hi[0] && j >= lo[1] && j <= hi[1] && k >= lo[2] && k <= hi[2];
  }
  // Per-axis intersection; may be empty.
  IndexBox intersect(const IndexBox& other) const;
  bool operator==(const IndexBox&) const = default;
  std::string to_string() const;
};

struct LevelGeom {
  std::array<double, 3> dx{1.0, 1.0, 1.0};
  std::array<double, 3> x0{0.0, 0.0, 0.0};
  std::array<std::int32_t, 3> index_origin{0, 0, 0};
  std::array<bool, 3> is_periodic{false, false, false};
  std::array<std::int32_t, 3> ref_ratio{1, 1, 1};
};

struct LevelMeta {
  LevelGeom geom;
  std::vector<IndexBox> boxes;
};

struct StepMeta {
  std::int32_t step = 0;
  std::vector<LevelMeta> levels;
};

struct RunMeta {
  std::vector<StepMeta> steps;
  std::vector<std::pair<std::string, std::int64_t>> particle_species;
  int coord_sys = 0;

  // Label lookup (DATA-6); nullptr when absent.
  const StepMeta* find_step(std::int64_t label) const;
  const LevelMeta* find_level(std::int64_t step, std::int64_t level) const;
};

// Decodes DATA-7 JSON. Throws Error(invalid_plan) naming the missing or
// malformed key with its JSON path. Also checks DATA-5 extents, unique step
// labels (DATA-6), positive ratios and fine-box alignment (COV-3).
RunMeta decode_runmeta(std::string_view json_text);
std::string encode_runmeta(const RunMeta& meta);

// Structural checks of an already-built RunMeta (same rules as decode).
void validate_runmeta(const RunMeta& meta);

// COORD-1/COORD-2 helpers.
double cell_low_edge(const LevelGeom& g, int axis, std::int64_t index);
std::int64_t coord_to_index(const LevelGeom& g, int axis, double x);

// Cumulative refinement ratio from level `coarse` to level `fine` on `axis`.
std::int64_t cumulative_ratio(const StepMeta& step, int coarse, int fine, int axis);
// COV-3: coarsen a box of level `fine` to level `coarse`.
IndexBox coarsen_box(const StepMeta& step, const IndexBox& fine_box, int fine, int coarse);
// COV-4: boxes of every finer level coarsened to `level`.
std::vector<IndexBox> volume_coverage(const StepMeta& step, int level);
// COV-2 membership test.
bool is_covered(std::span<const IndexBox> covered, std::int64_t i, std::int64_t j,
                std::int64_t k);

}  // namespace kangaroo
