// Mesh kernels: field expressions and masks (OP-EXPR-1..5), the nearest-cell
// slice sampler (OP-USLICE-1), and the cell-average slice and projection
// accumulators (OP-SLICE-1, OP-PROJ-1).
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "kangaroo/kernels/expression.h"
#include "kangaroo/kernels/math/overlap.h"
#include "kangaroo/kernels/register.h"
#include "kernel_support.h"

namespace kangaroo {

namespace {

namespace ks = kernel_support;

constexpr std::size_t kMaxExprVariables = 8;
// Elements staged per round when inputs need conversion or re-striding.
constexpr std::size_t kStagingElements = 16 * CompiledExpression::kBlockSize;

const LevelGeom& level_geom(const KernelContext& ctx, std::string_view kernel) {
  if (ctx.level_meta == nullptr) fail_kernel_params(kernel, "missing level metadata");
  return ctx.level_meta->geom;
}

// --- field expressions -----------------------------------------------------

// Validates OP-EXPR-1/3 and returns the compiled expression; inputs are all
// real with input 0's rank and extents afterwards.
std::shared_ptr<const CompiledExpression> prepare_expression(const KernelContext& ctx,
                                                             std::string_view kernel) {
  const auto& p = ctx.param<FieldExprParams>();
  if (p.expression.empty()) fail_kernel_params(kernel, "empty expression");
  if (p.variables.empty()) fail_kernel_params(kernel, "no variables");
  if (p.variables.size() > kMaxExprVariables) {
    fail_kernel_params(kernel, "at most 8 variables are supported (got " +
                                   std::to_string(p.variables.size()) + ")");
  }
  for (std::size_t i = 0; i < p.variables.size(); ++i) {
    if (p.variables[i].empty()) {
      fail_kernel_params(kernel, "variable " + std::to_string(i) + " has an empty name");
    }
  }
  if (ctx.inputs.size() != p.variables.size()) {
    fail_kernel(std::string(kernel) + ": field_expr variables/input size mismatch (" +
                std::to_string(p.variables.size()) + " variable(s), " +
                std::to_string(ctx.inputs.size()) + " input(s))");
  }
  const Descriptor& first = ks::input_at(ctx, kernel, 0).descriptor();
  for (std::size_t i = 0; i < ctx.inputs.size(); ++i) {
    const Buffer& in = ks::input_at(ctx, kernel, i);
    ks::require_real(in, kernel, ks::input_name(i));
    const Descriptor& d = in.descriptor();
    if (d.rank != first.rank || d.extents != first.extents) {
      fail_kernel(std::string(kernel) +
                  ": field_expr inputs must have identical rank and extents (input 0 " +
                  first.to_string() + ", input " + std::to_string(i) + " " + d.to_string() + ")");
    }
  }
  return compile_expression_cached(p.expression, p.variables);
}

void require_element_count(const Buffer& out, std::uint64_t n, std::string_view kernel) {
  if (out.descriptor().element_count() != n) {
    fail_kernel(std::string(kernel) + ": output " + out.descriptor().to_string() + " holds " +
                std::to_string(out.descriptor().element_count()) +
                " elements but the inputs hold " + std::to_string(n));
  }
}

// OP-EXPR-1: logical element p of every input -> logical element p of the
// output. Dense f64 inputs and outputs are used in place; anything else
// (f32, Fortran-order FABs, u8 masks) goes through a staging block.
void run_expression(const CompiledExpression& expr, std::span<const ConstBufferPtr> inputs,
                    Buffer& out, bool as_mask) {
  const std::uint64_t n = inputs[0]->descriptor().element_count();
  const std::size_t nvars = inputs.size();
  std::vector<const double*> direct(nvars, nullptr);
  bool all_direct = true;
  for (std::size_t v = 0; v < nvars; ++v) {
    const Buffer& in = *inputs[v];
    if (in.scalar() == ScalarType::f64 && in.descriptor().is_c_contiguous()) {
      direct[v] = in.elements<double>();
    } else {
      all_direct = false;
    }
  }
  double* out_direct = nullptr;
  if (!as_mask && out.scalar() == ScalarType::f64 && out.descriptor().is_c_contiguous()) {
    out_direct = out.elements<double>();
  }
  if (all_direct && out_direct != nullptr) {
    expr.evaluate(direct, out_direct, static_cast<std::size_t>(n));
    return;
  }
  std::vector<double> staging((nvars + 1) * kStagingElements);
  std::vector<std::uint8_t> mask(as_mask ? kStagingElements : 0);
  std::vector<const double*> args(nvars);
  for (std::uint64_t start = 0; start < n; start += kStagingElements) {
    const auto m = static_cast<std::size_t>(std::min<std::uint64_t>(kStagingElements, n - start));
    for (std::size_t v = 0; v < nvars; ++v) {
      if (direct[v] != nullptr) {
        args[v] = direct[v] + start;
      } else {
        double* slot = staging.data() + v * kStagingElements;
        ks::gather_linear(*inputs[v], start, m, slot);
        args[v] = slot;
      }
    }
    double* result =
        out_direct != nullptr ? out_direct + start : staging.data() + nvars * kStagingElements;
    expr.evaluate(args, result, m);
    if (as_mask) {
      for (std::size_t i = 0; i < m; ++i)
        mask[i] = result[i] != 0.0 ? 1 : 0;
      ks::scatter_linear(out, start, m, mask.data());
    } else if (out_direct == nullptr) {
      ks::scatter_linear(out, start, m, result);
    }
  }
}

void field_expr(KernelContext& ctx) {
  constexpr std::string_view kName = "field_expr";
  const auto expr = prepare_expression(ctx, kName);
  Buffer& out = ks::output_at(ctx, kName, 0);
  if (!ks::is_real(out.scalar())) {
    fail_kernel(std::string(kName) + ": field expression output must be f32 or f64 (got " +
                out.descriptor().to_string() + ")");
  }
  require_element_count(out, ctx.inputs[0]->descriptor().element_count(), kName);
  run_expression(*expr, ctx.inputs, out, false);
}

void mesh_compare(KernelContext& ctx) {
  constexpr std::string_view kName = "mesh_compare";
  const auto expr = prepare_expression(ctx, kName);
  Buffer& out = ks::output_at(ctx, kName, 0);
  if (out.scalar() != ScalarType::u8) {
    fail_kernel(std::string(kName) + ": mesh_compare output must be u8 (got " +
                out.descriptor().to_string() + ")");
  }
  require_element_count(out, ctx.inputs[0]->descriptor().element_count(), kName);
  run_expression(*expr, ctx.inputs, out, true);
}

// OP-EXPR-5.
void mesh_mask_and(KernelContext& ctx) {
  constexpr std::string_view kName = "mesh_mask_and";
  if (ctx.inputs.size() != 2) {
    fail_kernel_params(
        kName, "expects exactly two mask inputs (got " + std::to_string(ctx.inputs.size()) + ")");
  }
  const Buffer& a = ks::input_at(ctx, kName, 0);
  const Buffer& b = ks::input_at(ctx, kName, 1);
  Buffer& out = ks::output_at(ctx, kName, 0);
  for (const Buffer* buf : {&a, &b, static_cast<const Buffer*>(&out)}) {
    if (buf->scalar() != ScalarType::u8) {
      fail_kernel(std::string(kName) + ": masks must be u8 (got " + buf->descriptor().to_string() +
                  ")");
    }
  }
  const Descriptor& da = a.descriptor();
  for (const Descriptor* d : {&b.descriptor(), &out.descriptor()}) {
    if (d->rank != da.rank || d->extents != da.extents) {
      fail_kernel(std::string(kName) +
                  ": inputs and output must have identical rank and extents (" + da.to_string() +
                  " vs " + d->to_string() + ")");
    }
  }
  const std::uint64_t n = da.element_count();
  std::vector<std::uint8_t> x(kStagingElements), y(kStagingElements);
  for (std::uint64_t start = 0; start < n; start += kStagingElements) {
    const auto m = static_cast<std::size_t>(std::min<std::uint64_t>(kStagingElements, n - start));
    ks::gather_linear(a, start, m, x.data());
    ks::gather_linear(b, start, m, y.data());
    for (std::size_t i = 0; i < m; ++i)
      x[i] = (x[i] != 0 && y[i] != 0) ? 1 : 0;
    ks::scatter_linear(out, start, m, x.data());
  }
}

// --- slices and projections --------------------------------------------------

// COORD-1 edges of the block's cells on one axis: edges[n] is the low edge of
// cell lo+n, edges[extent] the high edge of the last cell.
std::vector<double> block_edges(const LevelGeom& geom, const IndexBox& box, int axis) {
  std::vector<double> edges(static_cast<std::size_t>(box.extent(axis)) + 1);
  for (std::size_t n = 0; n < edges.size(); ++n) {
    edges[n] = math::cell_edge(geom.x0[axis], geom.dx[axis], geom.index_origin[axis],
                               box.lo[axis] + static_cast<std::int64_t>(n));
  }
  return edges;
}

// Adds `value * ou * ov * weight` and `ou * ov` (when `area` is given) for
// every pixel the footprint [u_lo, u_hi) x [v_lo, v_hi) overlaps (OP-SLICE-1
// index arithmetic, positive overlaps only).
void deposit_footprint(const ks::ImageGrid& g, double u_lo, double u_hi, double v_lo, double v_hi,
                       double value, double weight, double* sum, double* area) {
  const math::PixelSpan cols = math::pixel_span(u_lo, u_hi, g.umin, g.du, g.nu);
  const math::PixelSpan rows = math::pixel_span(v_lo, v_hi, g.vmin, g.dv, g.nv);
  if (cols.empty() || rows.empty()) return;
  for (std::int64_t j = rows.first; j <= rows.last; ++j) {
    const double ov = math::overlap_length(v_lo, v_hi, math::pixel_edge(g.vmin, g.dv, j),
                                           math::pixel_edge(g.vmin, g.dv, j + 1));
    if (!(ov > 0.0)) continue;
    for (std::int64_t i = cols.first; i <= cols.last; ++i) {
      const double ou = math::overlap_length(u_lo, u_hi, math::pixel_edge(g.umin, g.du, i),
                                             math::pixel_edge(g.umin, g.du, i + 1));
      if (!(ou > 0.0)) continue;
      const std::size_t p = static_cast<std::size_t>(j * g.nu + i);
      if (area != nullptr) {
        sum[p] += value * ou * ov;
        area[p] += ou * ov;
      } else {
        sum[p] += value * ou * ov * weight;
      }
    }
  }
}

std::int64_t plane_from_coord(const LevelGeom& geom, int axis, double coord,
                              std::string_view kernel) {
  if (!std::isfinite(coord)) fail_kernel_params(kernel, "coord must be finite");
  return math::coord_to_cell(coord, geom.x0[axis], geom.dx[axis], geom.index_origin[axis]);
}

// OP-SLICE-1.
void uniform_slice_cellavg_accumulate(KernelContext& ctx) {
  constexpr std::string_view kName = "uniform_slice_cellavg_accumulate";
  const auto& p = ctx.param<UniformSliceCellParams>();
  const int axis = ks::require_axis(kName, p.axis);
  const ks::ImageGrid g = ks::make_image_grid(kName, p.rect, p.resolution);
  double* sum = ks::f64_image_output(ctx, kName, 0, g);
  double* area = ks::f64_image_output(ctx, kName, 1, g);
  const LevelGeom& geom = level_geom(ctx, kName);
  const IndexBox& box = ctx.block_box();
  const Buffer& in = ks::input_at(ctx, kName, 0);
  ks::require_block_grid(in, box, kName, "input 0");

  const std::int64_t plane =
      p.plane_index ? *p.plane_index : plane_from_coord(geom, axis, p.coord, kName);
  if (plane < box.lo[axis] || plane > box.hi[axis]) return;

  const math::PlaneAxes axes = math::plane_axes(axis);
  const int ua = axes.u;
  const int va = axes.v;
  IndexBox plane_box = box;
  plane_box.lo[axis] = plane_box.hi[axis] = static_cast<std::int32_t>(plane);
  const ks::CoverageMask mask(plane_box, ctx.covered);
  const std::vector<double> u_edges = block_edges(geom, box, ua);
  const std::vector<double> v_edges = block_edges(geom, box, va);

  visit_real(in, in.rank(), [&](auto grid) {
    std::array<std::int64_t, 3> cell{};
    cell[axis] = plane;
    for (std::int64_t jv = box.lo[va]; jv <= box.hi[va]; ++jv) {
      cell[va] = jv;
      const auto vn = static_cast<std::size_t>(jv - box.lo[va]);
      for (std::int64_t iu = box.lo[ua]; iu <= box.hi[ua]; ++iu) {
        cell[ua] = iu;
        if (mask.covered(cell[0], cell[1], cell[2])) continue;
        const auto un = static_cast<std::size_t>(iu - box.lo[ua]);
        const double value = grid(cell[0] - box.lo[0], cell[1] - box.lo[1], cell[2] - box.lo[2]);
        deposit_footprint(g, u_edges[un], u_edges[un + 1], v_edges[vn], v_edges[vn + 1], value, 1.0,
                          sum, area);
      }
    }
  });
}

// OP-PROJ-1.
void uniform_projection_accumulate(KernelContext& ctx) {
  constexpr std::string_view kName = "uniform_projection_accumulate";
  const auto& p = ctx.param<UniformProjectionParams>();
  const int axis = ks::require_axis(kName, p.axis);
  const ks::ImageGrid g = ks::make_image_grid(kName, p.rect, p.resolution);
  const double amin = std::min(p.axis_bounds[0], p.axis_bounds[1]);
  const double amax = std::max(p.axis_bounds[0], p.axis_bounds[1]);
  if (!std::isfinite(amin) || !std::isfinite(amax) || !(amax > amin)) {
    fail_kernel_params(kName, "axis_bounds must be finite with hi > lo");
  }
  double* image = ks::f64_image_output(ctx, kName, 0, g);
  const LevelGeom& geom = level_geom(ctx, kName);
  const IndexBox& box = ctx.block_box();
  const Buffer& in = ks::input_at(ctx, kName, 0);
  ks::require_block_grid(in, box, kName, "input 0");

  const math::PlaneAxes axes = math::plane_axes(axis);
  const int ua = axes.u;
  const int va = axes.v;
  const ks::CoverageMask mask(box, ctx.covered);
  const std::array<std::vector<double>, 3> edges{
      block_edges(geom, box, 0), block_edges(geom, box, 1), block_edges(geom, box, 2)};

  // Integrate each (u, v) column along the normal axis first, then spread
  // the column integral over the pixels once: the pixel footprint depends
  // only on (u, v), so this does the overlap arithmetic once per column
  // instead of once per cell. Only the summation order changes (OP-GEN-2).
  const auto nu_cells = static_cast<std::size_t>(box.extent(ua));
  const auto nv_cells = static_cast<std::size_t>(box.extent(va));
  std::vector<double> column(nu_cells * nv_cells, 0.0);
  std::vector<char> hit(nu_cells * nv_cells, 0);
  std::vector<double> oa(static_cast<std::size_t>(box.extent(axis)));
  for (std::size_t a = 0; a < oa.size(); ++a) {
    oa[a] = math::overlap_length(edges[axis][a], edges[axis][a + 1], amin, amax);
  }
  // Walk the input in memory order: outermost the axis of largest stride.
  const Descriptor& d = in.descriptor();
  std::array<int, 3> order{0, 1, 2};
  std::sort(order.begin(), order.end(), [&](int x, int y) { return d.strides[x] > d.strides[y]; });
  visit_real(in, in.rank(), [&](auto grid) {
    std::array<std::int64_t, 3> n{};
    const std::int64_t e0 = box.extent(order[0]), e1 = box.extent(order[1]), e2 = box.extent(order[2]);
    for (std::int64_t a0 = 0; a0 < e0; ++a0) {
      n[order[0]] = a0;
      for (std::int64_t a1 = 0; a1 < e1; ++a1) {
        n[order[1]] = a1;
        for (std::int64_t a2 = 0; a2 < e2; ++a2) {
          n[order[2]] = a2;
          const double w = oa[static_cast<std::size_t>(n[axis])];
          if (!(w > 0.0)) continue;
          if (mask.any() && mask.covered(box.lo[0] + n[0], box.lo[1] + n[1], box.lo[2] + n[2])) continue;
          const std::size_t c = static_cast<std::size_t>(n[ua]) * nv_cells + static_cast<std::size_t>(n[va]);
          column[c] += static_cast<double>(grid(n[0], n[1], n[2])) * w;
          hit[c] = 1;
        }
      }
    }
  });
  for (std::size_t un = 0; un < nu_cells; ++un) {
    for (std::size_t vn = 0; vn < nv_cells; ++vn) {
      const std::size_t c = un * nv_cells + vn;
      if (!hit[c]) continue;
      deposit_footprint(g, edges[ua][un], edges[ua][un + 1], edges[va][vn], edges[va][vn + 1], column[c], 1.0, image,
                        nullptr);
    }
  }
}

// OP-USLICE-1.
void uniform_slice(KernelContext& ctx) {
  constexpr std::string_view kName = "uniform_slice";
  const auto& p = ctx.param<UniformSliceParams>();
  const int axis = ks::require_axis(kName, p.axis);
  const ks::ImageGrid g = ks::make_image_grid(kName, p.rect, p.resolution);
  Buffer& out = ks::output_at(ctx, kName, 0);
  if (!ks::is_real(out.scalar())) {
    fail_kernel(std::string(kName) + ": output must be f32 or f64 (got " +
                out.descriptor().to_string() + ")");
  }
  ks::require_image_shape(out, kName, "output 0", g);
  const LevelGeom& geom = level_geom(ctx, kName);
  const IndexBox& box = ctx.block_box();
  const Buffer& in = ks::input_at(ctx, kName, 0);
  ks::require_block_grid(in, box, kName, "input 0");
  const std::int64_t plane = plane_from_coord(geom, axis, p.coord, kName);

  visit_real_mut(out, 2, [&](auto image) {
    using Out = std::remove_cvref_t<decltype(image(0, 0, 0))>;
    for (std::int64_t j = 0; j < g.nv; ++j) {
      for (std::int64_t i = 0; i < g.nu; ++i)
        image(j, i, 0) = std::numeric_limits<Out>::quiet_NaN();
    }
    if (plane < box.lo[axis] || plane > box.hi[axis]) return;
    const math::PlaneAxes axes = math::plane_axes(axis);
    const int ua = axes.u;
    const int va = axes.v;
    visit_real(in, in.rank(), [&](auto grid) {
      std::array<std::int64_t, 3> cell{};
      cell[axis] = plane;
      for (std::int64_t j = 0; j < g.nv; ++j) {
        const double vc = g.vmin + (static_cast<double>(j) + 0.5) * g.dv;
        cell[va] = math::coord_to_cell(vc, geom.x0[va], geom.dx[va], geom.index_origin[va]);
        if (cell[va] < box.lo[va] || cell[va] > box.hi[va]) continue;
        for (std::int64_t i = 0; i < g.nu; ++i) {
          const double uc = g.umin + (static_cast<double>(i) + 0.5) * g.du;
          cell[ua] = math::coord_to_cell(uc, geom.x0[ua], geom.dx[ua], geom.index_origin[ua]);
          if (cell[ua] < box.lo[ua] || cell[ua] > box.hi[ua]) continue;
          image(j, i, 0) =
              static_cast<Out>(grid(cell[0] - box.lo[0], cell[1] - box.lo[1], cell[2] - box.lo[2]));
        }
      }
    });
  });
}

}  // namespace

void register_mesh_kernels(KernelRegistry& registry) {
  // n_inputs is documentation (KREG-3); expressions take one input per variable.
  registry.add(make_kernel("field_expr", ParamType::FieldExprParams, &field_expr, 1, 1));
  registry.add(make_kernel("mesh_compare", ParamType::FieldExprParams, &mesh_compare, 1, 1));
  registry.add(make_kernel("mesh_mask_and", ParamType::none, &mesh_mask_and, 2, 1));
  registry.add(make_kernel("uniform_slice", ParamType::UniformSliceParams, &uniform_slice, 1, 1));
  registry.add(make_kernel("uniform_slice_cellavg_accumulate", ParamType::UniformSliceCellParams,
                           &uniform_slice_cellavg_accumulate, 1, 2));
  registry.add(make_kernel("uniform_projection_accumulate", ParamType::UniformProjectionParams,
                           &uniform_projection_accumulate, 1, 1));
}

}  // namespace kangaroo
