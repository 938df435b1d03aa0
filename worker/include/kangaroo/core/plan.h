// Plan model (PLAN-1..15): stages of templates that the executor expands into
// tasks. Decoding from the JSON document of PLAN-13 lives in plan_json.h.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kangaroo/core/buffer.h"
#include "kangaroo/core/params.h"
#include "kangaroo/core/runmeta.h"

namespace kangaroo {

// The plan document schema this build implements (PLAN-15).
inline constexpr const char* kPlanSchemaId = "kangaroo.plan/1";

enum class Plane : std::uint8_t { chunk, graph, mixed };
enum class DepKind : std::uint8_t { none, face_neighbors };
enum class ShapeKind : std::uint8_t { block, fixed, like_input, dynamic };
enum class BoundKind : std::uint8_t { literal, like_input, backend_chunk, amr_subbox_pack };

struct Domain {
  std::int32_t step = 0;
  std::int32_t level = 0;
  std::optional<std::vector<std::int32_t>> blocks;  // absent: every block of the level
};

struct FieldRef {
  std::int32_t field = 0;
  std::int32_t version = 0;
  std::optional<Domain> domain;  // input domain override (DOM-1..5)
};

struct BufferSpec {
  ScalarType dtype = ScalarType::f64;
  ShapeKind shape = ShapeKind::block;
  std::int64_t components = 1;          // block
  std::vector<std::uint64_t> extents;   // fixed
  std::int64_t input_index = 0;         // like_input
  BoundKind bound = BoundKind::literal; // dynamic
  std::uint64_t literal = 0;            // dynamic literal bound (elements)
  std::int64_t bound_input = 0;         // dynamic like_input / backend_chunk bound
  InitPolicy init = InitPolicy::uninitialized;
};

struct OutputRef {
  std::int32_t field = 0;
  std::int32_t version = 0;
  BufferSpec buffer;
};

// Face order Xm, Xp, Ym, Yp, Zm, Zp.
struct DepRule {
  DepKind kind = DepKind::none;
  std::int32_t width = 0;
  std::array<bool, 6> faces{true, true, true, true, true, true};
  std::vector<std::int32_t> halo_inputs;
};

struct GraphReduceSpec {
  std::int64_t fan_in = 1;
  std::int64_t num_inputs = 0;
  std::int64_t input_base = 0;
  std::int64_t output_base = 0;
  std::vector<std::int32_t> input_blocks;
  std::vector<std::int32_t> output_blocks;
  std::vector<std::int64_t> group_offsets;

  std::int64_t group_count() const;                          // RED-1
  std::pair<std::int64_t, std::int64_t> group_range(std::int64_t g) const;  // RED-2
  std::int32_t output_block(std::int64_t g) const;           // RED-3
  std::int32_t input_block(std::int64_t position) const;     // RED-4
};

struct TaskTemplate {
  std::string name;
  Plane plane = Plane::chunk;
  std::string kernel;
  Domain domain;
  std::vector<FieldRef> inputs;
  std::vector<OutputRef> outputs;
  DepRule deps;
  KernelParams params;
  std::int32_t covered_boxes_ref = -1;
  std::optional<GraphReduceSpec> graph_reduce;
};

struct Stage {
  std::string name;
  Plane plane = Plane::chunk;
  std::vector<std::int32_t> after;
  std::vector<TaskTemplate> templates;
};

struct Plan {
  std::string schema = kPlanSchemaId;
  std::vector<Stage> stages;
  std::vector<std::vector<IndexBox>> shared_covered_boxes;
};

std::string_view plane_name(Plane plane);

}  // namespace kangaroo
