#include "kangaroo/core/params.h"

#include <array>
#include <cmath>
#include <optional>

#include "param_fields.h"

namespace kangaroo {

namespace {

constexpr std::array<std::string_view, 22> kParamNames = {
    "none",
    "AmrSubboxPackParams",
    "GradStencilParams",
    "PlotfileLoadParams",
    "FluxSurfaceParams",
    "CylindricalFluxParams",
    "ToomreProfileParams",
    "UniformSliceCellParams",
    "UniformProjectionParams",
    "FieldExprParams",
    "UniformSliceParams",
    "Histogram1DParams",
    "Histogram2DParams",
    "ParticleFieldParams",
    "ParticleCicGridParams",
    "ParticleCicProjectionParams",
    "ScalarParams",
    "ValuesParams",
    "FiniteOnlyParams",
    "ParticleHistogramParams",
    "TopKModesParams",
    "SliceFinalizeParams",
};

}  // namespace

std::string_view param_type_name(ParamType type) { return kParamNames[static_cast<std::size_t>(type)]; }

std::optional<ParamType> parse_param_type(std::string_view name) {
  for (std::size_t i = 1; i < kParamNames.size(); ++i) {
    if (kParamNames[i] == name) return static_cast<ParamType>(i);
  }
  return std::nullopt;
}

bool param_type_has_coverage(ParamType type) {
  switch (type) {
    case ParamType::FluxSurfaceParams:
    case ParamType::CylindricalFluxParams:
    case ParamType::ToomreProfileParams:
    case ParamType::UniformSliceCellParams:
    case ParamType::UniformProjectionParams:
    case ParamType::Histogram1DParams:
    case ParamType::Histogram2DParams:
    case ParamType::ParticleCicGridParams:
    case ParamType::ParticleCicProjectionParams:
      return true;
    default:
      return false;
  }
}

std::string param_schema_json(ParamType type) {
  if (type == ParamType::none) return "";
  std::string s = R"({"type":"object","properties":{"type":{"const":")" +
                  std::string(param_type_name(type)) + "\"}";
  std::string required = "\"type\"";
  for (const auto& f : param_fields::fields_of(type)) {
    s += ",\"" + f.name + "\":" + f.schema;
    if (f.required) required += ",\"" + f.name + "\"";
  }
  s += "},\"required\":[" + required + "],\"additionalProperties\":false}";
  return s;
}

namespace param_fields {

using json_util::IssueSink;
using json_util::json;

namespace {

// Value decoders per C++ field type.
bool decode_value(const json& v, const std::string& p, IssueSink& s, std::int64_t& out) {
  return json_util::read_int(v, p, s, out);
}
bool decode_value(const json& v, const std::string& p, IssueSink& s, std::uint64_t& out) {
  std::int64_t t = 0;
  if (!json_util::read_int(v, p, s, t, 0)) return false;
  out = static_cast<std::uint64_t>(t);
  return true;
}
bool decode_value(const json& v, const std::string& p, IssueSink& s, double& out) {
  return json_util::read_double(v, p, s, out);
}
bool decode_value(const json& v, const std::string& p, IssueSink& s, bool& out) {
  return json_util::read_bool(v, p, s, out);
}
bool decode_value(const json& v, const std::string& p, IssueSink& s, std::string& out) {
  return json_util::read_string(v, p, s, out);
}
template <class T>
bool decode_value(const json& v, const std::string& p, IssueSink& s, std::vector<T>& out) {
  if (!json_util::expect_array(v, p, s)) return false;
  out.assign(v.size(), T{});
  bool ok = true;
  for (std::size_t i = 0; i < v.size(); ++i) ok &= decode_value(v[i], json_util::child(p, i), s, out[i]);
  return ok;
}
template <class T, std::size_t N>
bool decode_value(const json& v, const std::string& p, IssueSink& s, std::array<T, N>& out) {
  if (!v.is_array() || v.size() != N) {
    // PARAM-2: wrong-length fixed arrays name the parameter.
    s.add(p, "parameter '" + p.substr(p.rfind('/') + 1) + "' must be an array of exactly " +
                 std::to_string(N) + " values");
    return false;
  }
  bool ok = true;
  for (std::size_t i = 0; i < N; ++i) ok &= decode_value(v[i], json_util::child(p, i), s, out[i]);
  return ok;
}
template <class T>
bool decode_value(const json& v, const std::string& p, IssueSink& s, std::optional<T>& out) {
  if (v.is_null()) {
    out.reset();
    return true;
  }
  T t{};
  if (!decode_value(v, p, s, t)) return false;
  out = t;
  return true;
}

// JSON-Schema fragments per C++ field type.
template <class T>
struct Schema;
template <>
struct Schema<std::int64_t> {
  static std::string text() { return R"({"type":"integer"})"; }
};
template <>
struct Schema<std::uint64_t> {
  static std::string text() { return R"({"type":"integer","minimum":0})"; }
};
template <>
struct Schema<double> {
  static std::string text() { return R"({"type":"number"})"; }
};
template <>
struct Schema<bool> {
  static std::string text() { return R"({"type":["boolean","integer"]})"; }
};
template <>
struct Schema<std::string> {
  static std::string text() { return R"({"type":"string"})"; }
};
template <class T>
struct Schema<std::vector<T>> {
  static std::string text() { return R"({"type":"array","items":)" + Schema<T>::text() + "}"; }
};
template <class T, std::size_t N>
struct Schema<std::array<T, N>> {
  static std::string text() {
    return R"({"type":"array","minItems":)" + std::to_string(N) + ",\"maxItems\":" + std::to_string(N) +
           ",\"items\":" + Schema<T>::text() + "}";
  }
};
template <class T>
struct Schema<std::optional<T>> {
  static std::string text() { return R"({"anyOf":[{"type":"null"},)" + Schema<T>::text() + "]}"; }
};

template <class P, class T>
FieldSpec field(const char* name, T P::*member, bool required) {
  FieldSpec f;
  f.name = name;
  f.required = required;
  f.decode = [member](KernelParams& params, const json& v, const std::string& path, IssueSink& sink) {
    decode_value(v, path, sink, std::get<P>(params).*member);
  };
  f.encode = [member, n = std::string(name)](const KernelParams& params, json& out) {
    const T& value = std::get<P>(params).*member;
    if constexpr (std::is_same_v<T, double>) {
      // JSON has no NaN/inf; keep the document valid.
      out[n] = std::isfinite(value) ? json(value) : json(nullptr);
    } else if constexpr (std::is_same_v<T, std::optional<double>> || std::is_same_v<T, std::optional<std::int64_t>>) {
      out[n] = value ? json(*value) : json(nullptr);
    } else {
      out[n] = value;
    }
  };
  f.schema = Schema<T>::text();
  return f;
}

constexpr bool req = true;
constexpr bool opt = false;

std::vector<std::vector<FieldSpec>> build_table() {
  std::vector<std::vector<FieldSpec>> t(kParamNames.size());
  auto& amr = t[static_cast<std::size_t>(ParamType::AmrSubboxPackParams)];
  amr = {field("input_field", &AmrSubboxPackParams::input_field, opt),
         field("input_version", &AmrSubboxPackParams::input_version, opt),
         field("input_step", &AmrSubboxPackParams::input_step, opt),
         field("input_level", &AmrSubboxPackParams::input_level, opt),
         field("halo_cells", &AmrSubboxPackParams::halo_cells, opt)};
  t[static_cast<std::size_t>(ParamType::GradStencilParams)] = {
      field("input_field", &GradStencilParams::input_field, opt),
      field("input_version", &GradStencilParams::input_version, opt),
      field("input_step", &GradStencilParams::input_step, opt),
      field("input_level", &GradStencilParams::input_level, opt),
      field("stencil_radius", &GradStencilParams::stencil_radius, opt)};
  t[static_cast<std::size_t>(ParamType::PlotfileLoadParams)] = {
      field("plotfile", &PlotfileLoadParams::plotfile, req),
      field("level", &PlotfileLoadParams::level, opt), field("comp", &PlotfileLoadParams::comp, opt)};
  t[static_cast<std::size_t>(ParamType::FluxSurfaceParams)] = {
      field("radii", &FluxSurfaceParams::radii, req),
      field("radius_indices", &FluxSurfaceParams::radius_indices, req),
      field("temperature_bins", &FluxSurfaceParams::temperature_bins, opt),
      field("num_radii", &FluxSurfaceParams::num_radii, req),
      field("gamma", &FluxSurfaceParams::gamma, opt)};
  t[static_cast<std::size_t>(ParamType::CylindricalFluxParams)] = {
      field("radius", &CylindricalFluxParams::radius, req),
      field("heights", &CylindricalFluxParams::heights, req),
      field("height_indices", &CylindricalFluxParams::height_indices, req),
      field("temperature_bins", &CylindricalFluxParams::temperature_bins, opt),
      field("num_heights", &CylindricalFluxParams::num_heights, req),
      field("gamma", &CylindricalFluxParams::gamma, opt)};
  t[static_cast<std::size_t>(ParamType::ToomreProfileParams)] = {
      field("radial_edges", &ToomreProfileParams::radial_edges, opt),
      field("z_bounds", &ToomreProfileParams::z_bounds, opt),
      field("center", &ToomreProfileParams::center, opt)};
  t[static_cast<std::size_t>(ParamType::UniformSliceCellParams)] = {
      field("axis", &UniformSliceCellParams::axis, opt),
      field("coord", &UniformSliceCellParams::coord, req),
      field("plane_index", &UniformSliceCellParams::plane_index, opt),
      field("rect", &UniformSliceCellParams::rect, req),
      field("resolution", &UniformSliceCellParams::resolution, req)};
  t[static_cast<std::size_t>(ParamType::UniformProjectionParams)] = {
      field("axis", &UniformProjectionParams::axis, opt),
      field("axis_bounds", &UniformProjectionParams::axis_bounds, req),
      field("rect", &UniformProjectionParams::rect, req),
      field("resolution", &UniformProjectionParams::resolution, req)};
  t[static_cast<std::size_t>(ParamType::FieldExprParams)] = {
      field("expression", &FieldExprParams::expression, req),
      field("variables", &FieldExprParams::variables, req)};
  t[static_cast<std::size_t>(ParamType::UniformSliceParams)] = {
      field("axis", &UniformSliceParams::axis, opt), field("coord", &UniformSliceParams::coord, req),
      field("rect", &UniformSliceParams::rect, req),
      field("resolution", &UniformSliceParams::resolution, req)};
  t[static_cast<std::size_t>(ParamType::Histogram1DParams)] = {
      field("range", &Histogram1DParams::range, req), field("bins", &Histogram1DParams::bins, opt),
      field("weight_mode", &Histogram1DParams::weight_mode, opt)};
  t[static_cast<std::size_t>(ParamType::Histogram2DParams)] = {
      field("x_range", &Histogram2DParams::x_range, req),
      field("y_range", &Histogram2DParams::y_range, req),
      field("bins", &Histogram2DParams::bins, req),
      field("weight_mode", &Histogram2DParams::weight_mode, opt)};
  t[static_cast<std::size_t>(ParamType::ParticleFieldParams)] = {
      field("particle_type", &ParticleFieldParams::particle_type, req),
      field("field_name", &ParticleFieldParams::field_name, req)};
  t[static_cast<std::size_t>(ParamType::ParticleCicGridParams)] = {
      field("particle_type", &ParticleCicGridParams::particle_type, req),
      field("level_index", &ParticleCicGridParams::level_index, opt),
      field("axis", &ParticleCicGridParams::axis, opt),
      field("axis_bounds", &ParticleCicGridParams::axis_bounds, req),
      field("mass_field", &ParticleCicGridParams::mass_field, opt),
      field("mass_max", &ParticleCicGridParams::mass_max, opt)};
  t[static_cast<std::size_t>(ParamType::ParticleCicProjectionParams)] = {
      field("particle_type", &ParticleCicProjectionParams::particle_type, req),
      field("level_index", &ParticleCicProjectionParams::level_index, opt),
      field("axis", &ParticleCicProjectionParams::axis, opt),
      field("axis_bounds", &ParticleCicProjectionParams::axis_bounds, req),
      field("rect", &ParticleCicProjectionParams::rect, req),
      field("resolution", &ParticleCicProjectionParams::resolution, req),
      field("mass_field", &ParticleCicProjectionParams::mass_field, opt),
      field("mass_max", &ParticleCicProjectionParams::mass_max, opt)};
  t[static_cast<std::size_t>(ParamType::ScalarParams)] = {field("scalar", &ScalarParams::scalar, opt)};
  t[static_cast<std::size_t>(ParamType::ValuesParams)] = {field("values", &ValuesParams::values, req)};
  t[static_cast<std::size_t>(ParamType::FiniteOnlyParams)] = {
      field("finite_only", &FiniteOnlyParams::finite_only, opt)};
  t[static_cast<std::size_t>(ParamType::ParticleHistogramParams)] = {
      field("edges", &ParticleHistogramParams::edges, req),
      field("density", &ParticleHistogramParams::density, opt)};
  t[static_cast<std::size_t>(ParamType::TopKModesParams)] = {field("k", &TopKModesParams::k, req)};
  t[static_cast<std::size_t>(ParamType::SliceFinalizeParams)] = {
      field("pixel_area", &SliceFinalizeParams::pixel_area, opt)};
  return t;
}

template <std::size_t... I>
KernelParams make_default(std::size_t index, std::index_sequence<I...>) {
  KernelParams out;
  ((index == I ? (out.template emplace<I>(), 0) : 0), ...);
  return out;
}

}  // namespace

const std::vector<FieldSpec>& fields_of(ParamType type) {
  static const std::vector<std::vector<FieldSpec>> table = build_table();
  return table[static_cast<std::size_t>(type)];
}

KernelParams default_params(ParamType type) {
  return make_default(static_cast<std::size_t>(type),
                      std::make_index_sequence<std::variant_size_v<KernelParams>>{});
}

}  // namespace param_fields
}  // namespace kangaroo
