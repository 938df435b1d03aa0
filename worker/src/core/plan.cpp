#include "kangaroo/core/plan.h"

#include "kangaroo/core/plan_json.h"

namespace kangaroo {

std::string_view plane_name(Plane plane) {
  switch (plane) {
    case Plane::chunk: return "chunk";
    case Plane::graph: return "graph";
    case Plane::mixed: return "mixed";
  }
  return "?";
}

std::int64_t GraphReduceSpec::group_count() const {
  if (!group_offsets.empty()) return static_cast<std::int64_t>(group_offsets.size()) - 1;
  if (fan_in < 1 || num_inputs < 1) return 0;
  return num_inputs / fan_in + (num_inputs % fan_in != 0 ? 1 : 0);
}

std::pair<std::int64_t, std::int64_t> GraphReduceSpec::group_range(std::int64_t g) const {
  if (!group_offsets.empty()) {
    return {group_offsets[static_cast<std::size_t>(g)], group_offsets[static_cast<std::size_t>(g) + 1]};
  }
  // Saturating: fan_in may be as large as int64 allows.
  if (g > 0 && fan_in > num_inputs / g) return {num_inputs, num_inputs};
  const std::int64_t start = g * fan_in;
  return {start, start + std::min(fan_in, num_inputs - start)};
}

std::int32_t GraphReduceSpec::output_block(std::int64_t g) const {
  if (!output_blocks.empty()) return output_blocks[static_cast<std::size_t>(g)];
  return static_cast<std::int32_t>(output_base + g);
}

std::int32_t GraphReduceSpec::input_block(std::int64_t position) const {
  if (!input_blocks.empty()) return input_blocks[static_cast<std::size_t>(position)];
  return static_cast<std::int32_t>(input_base + position);
}

std::string PlanIssue::to_string() const {
  std::string s;
  if (stage >= 0) s += "stage " + std::to_string(stage);
  if (template_index >= 0) s += (s.empty() ? "" : " ") + std::string("template ") + std::to_string(template_index);
  if (!path.empty()) s += (s.empty() ? "at " : " at ") + path;
  if (!s.empty()) s += ": ";
  return s + message;
}

namespace {
std::string first_message(const std::vector<PlanIssue>& issues) {
  if (issues.empty()) return "invalid plan";
  std::string m = issues.front().to_string();
  if (issues.size() > 1) m += " (and " + std::to_string(issues.size() - 1) + " more)";
  return m;
}
}  // namespace

PlanError::PlanError(std::vector<PlanIssue> issues)
    : Error(ErrorKind::invalid_plan, first_message(issues)), issues_(std::move(issues)) {}

}  // namespace kangaroo
