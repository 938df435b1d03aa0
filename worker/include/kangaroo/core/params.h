// Typed kernel parameters (PARAM-1..3). Each alternative is a plain struct;
// a template's parameters are one std::variant alternative identified in the
// plan by its `type` discriminator, never by the kernel name.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace kangaroo {

struct AmrSubboxPackParams {
  std::int64_t input_field = -1, input_version = 0, input_step = 0, input_level = 0;
  std::int64_t halo_cells = 1;
};
struct GradStencilParams {
  std::int64_t input_field = -1, input_version = 0, input_step = 0, input_level = 0;
  std::int64_t stencil_radius = 1;
};
struct PlotfileLoadParams {
  std::string plotfile;
  std::int64_t level = 0, comp = 0;
};
struct FluxSurfaceParams {
  std::vector<double> radii;
  std::vector<std::int64_t> radius_indices;
  std::vector<double> temperature_bins;
  std::uint64_t num_radii = 0;
  double gamma = 5.0 / 3.0;
};
struct CylindricalFluxParams {
  double radius = 0.0;
  std::vector<double> heights;
  std::vector<std::int64_t> height_indices;
  std::vector<double> temperature_bins;
  std::uint64_t num_heights = 0;
  double gamma = 5.0 / 3.0;
};
struct ToomreProfileParams {
  std::vector<double> radial_edges{0.0, 1.0};
  std::array<double, 2> z_bounds{-1.0, 1.0};
  std::array<double, 3> center{0.0, 0.0, 0.0};
};
struct UniformSliceCellParams {
  std::int64_t axis = 2;
  double coord = 0.0;
  std::optional<std::int64_t> plane_index;
  std::array<double, 4> rect{};
  std::array<std::int64_t, 2> resolution{};
};
struct UniformProjectionParams {
  std::int64_t axis = 2;
  std::array<double, 2> axis_bounds{};
  std::array<double, 4> rect{};
  std::array<std::int64_t, 2> resolution{};
};
struct FieldExprParams {
  std::string expression;
  std::vector<std::string> variables;
};
struct UniformSliceParams {
  std::int64_t axis = 2;
  double coord = 0.0;
  std::array<double, 4> rect{};
  std::array<std::int64_t, 2> resolution{};
};
struct Histogram1DParams {
  std::array<double, 2> range{};
  std::int64_t bins = 1;
  std::string weight_mode = "input";
};
struct Histogram2DParams {
  std::array<double, 2> x_range{};
  std::array<double, 2> y_range{};
  std::array<std::int64_t, 2> bins{};
  std::string weight_mode = "input";
};
struct ParticleFieldParams {
  std::string particle_type;
  std::string field_name;
};
struct ParticleCicGridParams {
  std::string particle_type;
  std::int64_t level_index = -1;
  std::int64_t axis = 2;
  std::array<double, 2> axis_bounds{};
  std::string mass_field = "mass";
  std::optional<double> mass_max;
};
struct ParticleCicProjectionParams {
  std::string particle_type;
  std::int64_t level_index = -1;
  std::int64_t axis = 2;
  std::array<double, 2> axis_bounds{};
  std::array<double, 4> rect{};
  std::array<std::int64_t, 2> resolution{};
  std::string mass_field = "mass";
  std::optional<double> mass_max;
};
struct ScalarParams {
  double scalar = 0.0;
};
struct ValuesParams {
  std::vector<double> values;
};
struct FiniteOnlyParams {
  bool finite_only = true;
};
struct ParticleHistogramParams {
  std::vector<double> edges;
  bool density = false;
};
struct TopKModesParams {
  std::int64_t k = 0;
};
struct SliceFinalizeParams {
  double pixel_area = 1.0;
};

// Index 0 is "no parameters". Order matches ParamType.
using KernelParams =
    std::variant<std::monostate, AmrSubboxPackParams, GradStencilParams, PlotfileLoadParams,
                 FluxSurfaceParams, CylindricalFluxParams, ToomreProfileParams,
                 UniformSliceCellParams, UniformProjectionParams, FieldExprParams,
                 UniformSliceParams, Histogram1DParams, Histogram2DParams, ParticleFieldParams,
                 ParticleCicGridParams, ParticleCicProjectionParams, ScalarParams, ValuesParams,
                 FiniteOnlyParams, ParticleHistogramParams, TopKModesParams, SliceFinalizeParams>;

enum class ParamType : std::uint8_t {
  none = 0,
  AmrSubboxPackParams,
  GradStencilParams,
  PlotfileLoadParams,
  FluxSurfaceParams,
  CylindricalFluxParams,
  ToomreProfileParams,
  UniformSliceCellParams,
  UniformProjectionParams,
  FieldExprParams,
  UniformSliceParams,
  Histogram1DParams,
  Histogram2DParams,
  ParticleFieldParams,
  ParticleCicGridParams,
  ParticleCicProjectionParams,
  ScalarParams,
  ValuesParams,
  FiniteOnlyParams,
  ParticleHistogramParams,
  TopKModesParams,
  SliceFinalizeParams,
};

inline ParamType param_type_of(const KernelParams& p) { return static_cast<ParamType>(p.index()); }
// "none" or the alternative name used as the JSON `type` discriminator.
std::string_view param_type_name(ParamType type);
std::optional<ParamType> parse_param_type(std::string_view name);
// Carries coverage (PARAM-1 "+cov").
bool param_type_has_coverage(ParamType type);
// A JSON-Schema fragment describing the alternative's fields (KREG-3).
std::string param_schema_json(ParamType type);

}  // namespace kangaroo
