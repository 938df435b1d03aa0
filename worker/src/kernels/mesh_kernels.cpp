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
#include <utility>
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

// The pixels that each cell of a block overlaps along one image axis, with
// the positive overlap lengths (OP-SLICE-1 index arithmetic). A cell's
// footprint on an in-plane axis depends only on its index on that axis, so
// this is computed once per block and axis; cell n owns entries
// [start[n], start[n + 1]).
struct AxisSpread {
  std::vector<std::size_t> start;
  std::vector<std::int64_t> pixel;
  std::vector<double> overlap;
  // Offsets of the first and last cell that overlap any pixel (first > last
  // when none does).
  std::int64_t first = 0;
  std::int64_t last = -1;

  bool empty(std::int64_t n) const {
    return start[static_cast<std::size_t>(n)] == start[static_cast<std::size_t>(n) + 1];
  }

  // Pixel indices relative to `origin` (a compact image's first row or
  // column); only pixel_range reads them unshifted.
  void rebase(std::int64_t origin) {
    for (auto& p : pixel) p -= origin;
  }

  // Lowest and highest pixel that cells [n_first, n_last] overlap ({0, -1}
  // when none does).
  std::pair<std::int64_t, std::int64_t> pixel_range(std::int64_t n_first,
                                                    std::int64_t n_last) const {
    std::pair<std::int64_t, std::int64_t> r{0, -1};
    if (n_first > n_last) return r;
    const std::size_t e0 = start[static_cast<std::size_t>(n_first)];
    const std::size_t e1 = start[static_cast<std::size_t>(n_last) + 1];
    for (std::size_t e = e0; e < e1; ++e) {
      if (e == e0 || pixel[e] < r.first) r.first = pixel[e];
      if (e == e0 || pixel[e] > r.second) r.second = pixel[e];
    }
    return r;
  }
};

// Bounds of the cells (offsets in the block) a kernel spread into an image.
struct CellRange {
  std::int64_t u_first = std::numeric_limits<std::int64_t>::max();
  std::int64_t u_last = std::numeric_limits<std::int64_t>::min();
  std::int64_t v_first = std::numeric_limits<std::int64_t>::max();
  std::int64_t v_last = std::numeric_limits<std::int64_t>::min();

  void add(std::int64_t un, std::int64_t vn) {
    u_first = std::min(u_first, un);
    u_last = std::max(u_last, un);
    v_first = std::min(v_first, vn);
    v_last = std::max(v_last, vn);
  }
  // The pixels those cells overlap.
  ks::PixelFootprint footprint(const AxisSpread& us, const AxisSpread& vs) const {
    ks::PixelFootprint f;
    if (u_first > u_last || v_first > v_last) return f;
    const auto rows = vs.pixel_range(v_first, v_last);
    const auto cols = us.pixel_range(u_first, u_last);
    f.add(rows.first, rows.second, cols.first, cols.second);
    return f;
  }
};

AxisSpread axis_spread(const std::vector<double>& edges, double origin, double width,
                       std::int64_t count) {
  AxisSpread s;
  const std::size_t cells = edges.size() - 1;
  s.start.reserve(cells + 1);
  s.start.push_back(0);
  for (std::size_t n = 0; n < cells; ++n) {
    const double lo = edges[n];
    const double hi = edges[n + 1];
    const math::PixelSpan span = math::pixel_span(lo, hi, origin, width, count);
    for (std::int64_t i = span.first; i <= span.last; ++i) {
      const double o = math::overlap_length(lo, hi, math::pixel_edge(origin, width, i),
                                            math::pixel_edge(origin, width, i + 1));
      if (!(o > 0.0)) continue;
      s.pixel.push_back(i);
      s.overlap.push_back(o);
    }
    s.start.push_back(s.pixel.size());
    if (s.start[n + 1] != s.start[n]) {
      if (s.first > s.last) s.first = static_cast<std::int64_t>(n);
      s.last = static_cast<std::int64_t>(n);
    }
  }
  return s;
}

// Adds `value * ou * ov` (and `ou * ov` to `area` when given) to every pixel
// the footprint of cell (un, vn) overlaps; image rows are `pitch` apart.
inline void spread_cell(const AxisSpread& us, const AxisSpread& vs, std::int64_t un,
                        std::int64_t vn, double value, std::int64_t pitch, double* sum,
                        double* area) {
  const std::size_t u0 = us.start[static_cast<std::size_t>(un)];
  const std::size_t u1 = us.start[static_cast<std::size_t>(un) + 1];
  const std::size_t v1 = vs.start[static_cast<std::size_t>(vn) + 1];
  for (std::size_t b = vs.start[static_cast<std::size_t>(vn)]; b < v1; ++b) {
    const double ov = vs.overlap[b];
    const double t = value * ov;
    const std::size_t row = static_cast<std::size_t>(vs.pixel[b] * pitch);
    double* srow = sum + row;
    if (area != nullptr) {
      double* arow = area + row;
      for (std::size_t a = u0; a < u1; ++a) {
        const auto i = static_cast<std::size_t>(us.pixel[a]);
        srow[i] += t * us.overlap[a];
        arow[i] += ov * us.overlap[a];
      }
    } else {
      for (std::size_t a = u0; a < u1; ++a)
        srow[static_cast<std::size_t>(us.pixel[a])] += t * us.overlap[a];
    }
  }
}

std::int64_t plane_from_coord(const LevelGeom& geom, int axis, double coord,
                              std::string_view kernel) {
  if (!std::isfinite(coord)) fail_kernel_params(kernel, "coord must be finite");
  return math::coord_to_cell(coord, geom.x0[axis], geom.dx[axis], geom.index_origin[axis]);
}

// OP-SLICE-1. Only the plane's cells are read, walked in memory order; each
// uncovered cell is spread with the block's precomputed pixel ranges. Only the
// summation order differs from the v-outer, u-inner order (OP-GEN-2).
void uniform_slice_cellavg_accumulate(KernelContext& ctx) {
  constexpr std::string_view kName = "uniform_slice_cellavg_accumulate";
  const auto& p = ctx.param<UniformSliceCellParams>();
  const int axis = ks::require_axis(kName, p.axis);
  const ks::ImageGrid g = ks::make_image_grid(kName, p.rect, p.resolution);
  ks::require_f64_image_output(ctx, kName, 0, g);
  ks::require_f64_image_output(ctx, kName, 1, g);
  // Nothing to spread: both outputs are all zero (empty compact images).
  const auto all_zero = [&] {
    ks::compact_image_output(ctx, kName, 0, {});
    ks::compact_image_output(ctx, kName, 1, {});
  };
  const LevelGeom& geom = level_geom(ctx, kName);
  const IndexBox& box = ctx.block_box();
  const Buffer& in = ks::input_at(ctx, kName, 0);
  ks::require_block_grid(in, box, kName, "input 0");

  const std::int64_t plane =
      p.plane_index ? *p.plane_index : plane_from_coord(geom, axis, p.coord, kName);
  if (plane < box.lo[axis] || plane > box.hi[axis]) {
    all_zero();
    return;
  }

  const math::PlaneAxes axes = math::plane_axes(axis);
  const int ua = axes.u;
  const int va = axes.v;
  AxisSpread us = axis_spread(block_edges(geom, box, ua), g.umin, g.du, g.nu);
  AxisSpread vs = axis_spread(block_edges(geom, box, va), g.vmin, g.dv, g.nv);
  if (us.first > us.last || vs.first > vs.last) {
    all_zero();
    return;
  }

  IndexBox plane_box = box;
  plane_box.lo[axis] = plane_box.hi[axis] = static_cast<std::int32_t>(plane);
  // Memory order with the normal axis (extent 1 here) outermost.
  std::array<int, 3> order = ks::memory_order(in.descriptor());
  std::stable_partition(order.begin(), order.end(), [&](int a) { return a == axis; });
  const int outer = order[1];
  const int inner = order[2];
  const AxisSpread& os = outer == ua ? us : vs;
  const AxisSpread& is = inner == ua ? us : vs;

  // First the uncovered cells' range (cells finer levels cover add nothing):
  // its footprint is all the outputs store (compact images); then the spread
  // itself.
  CellRange spread;
  ks::for_each_line(plane_box, order, ctx.covered,
                    [&](std::int64_t, std::int64_t o, const std::uint8_t* covered) {
                      if (os.empty(o)) return;
                      std::int64_t t_first = is.first;
                      std::int64_t t_last = is.last;
                      if (covered != nullptr) {
                        while (t_first <= t_last && covered[t_first] != 0) ++t_first;
                        while (t_last >= t_first && covered[t_last] != 0) --t_last;
                      }
                      if (t_first > t_last) return;
                      spread.add(inner == ua ? t_first : o, inner == ua ? o : t_first);
                      spread.add(inner == ua ? t_last : o, inner == ua ? o : t_last);
                    });
  const NonzeroRect rect = spread.footprint(us, vs).rect();
  double* sum = ks::compact_image_output(ctx, kName, 0, rect);
  double* area = ks::compact_image_output(ctx, kName, 1, rect);
  if (rect.empty()) return;
  us.rebase(static_cast<std::int64_t>(rect.col_begin));
  vs.rebase(static_cast<std::int64_t>(rect.row_begin));
  const auto pitch = static_cast<std::int64_t>(rect.col_end - rect.col_begin);
  visit_real(in, in.rank(), [&](auto grid) {
    const std::int64_t si = grid.s[inner];
    ks::for_each_line(plane_box, order, ctx.covered,
                      [&](std::int64_t, std::int64_t o, const std::uint8_t* covered) {
                        if (os.empty(o)) return;
                        const auto* line = grid.base + (plane - box.lo[axis]) * grid.s[axis] +
                                           o * grid.s[outer];
                        for (std::int64_t t = is.first; t <= is.last; ++t) {
                          if (covered != nullptr && covered[t] != 0) continue;
                          const auto value = static_cast<double>(line[t * si]);
                          const std::int64_t un = inner == ua ? t : o;
                          const std::int64_t vn = inner == ua ? o : t;
                          spread_cell(us, vs, un, vn, value, pitch, sum, area);
                        }
                      });
  });
}

// Sum of line[n * stride] * w[n] over n in [n0, n1], in four interleaved
// partial sums (OP-GEN-2 reassociation) so a unit-stride line pipelines.
template <class T>
double weighted_line_sum(const T* line, std::int64_t stride, const double* w, std::int64_t n0,
                         std::int64_t n1) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  std::int64_t n = n0;
  if (stride == 1) {
    for (; n + 3 <= n1; n += 4) {
      s0 += static_cast<double>(line[n]) * w[n];
      s1 += static_cast<double>(line[n + 1]) * w[n + 1];
      s2 += static_cast<double>(line[n + 2]) * w[n + 2];
      s3 += static_cast<double>(line[n + 3]) * w[n + 3];
    }
  } else {
    for (; n + 3 <= n1; n += 4) {
      s0 += static_cast<double>(line[n * stride]) * w[n];
      s1 += static_cast<double>(line[(n + 1) * stride]) * w[n + 1];
      s2 += static_cast<double>(line[(n + 2) * stride]) * w[n + 2];
      s3 += static_cast<double>(line[(n + 3) * stride]) * w[n + 3];
    }
  }
  for (; n <= n1; ++n)
    s0 += static_cast<double>(line[n * stride]) * w[n];
  return (s0 + s1) + (s2 + s3);
}

// OP-PROJ-1. Each (u, v) column is integrated along the normal axis first
// (sum of value * oa over its uncovered cells with oa > 0), then the column
// integral is spread over the pixels once with the block's precomputed pixel
// ranges: the footprint depends only on (u, v). The input is walked in memory
// order; when the normal axis is not the unit-stride one, whole lines add
// into a row of column sums. Only the summation order differs from the
// per-cell i-j-k order (OP-GEN-2). Columns whose footprint misses the image
// are not read at all.
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
  ks::require_f64_image_output(ctx, kName, 0, g);
  const LevelGeom& geom = level_geom(ctx, kName);
  const IndexBox& box = ctx.block_box();
  const Buffer& in = ks::input_at(ctx, kName, 0);
  ks::require_block_grid(in, box, kName, "input 0");

  const math::PlaneAxes axes = math::plane_axes(axis);
  const int ua = axes.u;
  const int va = axes.v;
  AxisSpread us = axis_spread(block_edges(geom, box, ua), g.umin, g.du, g.nu);
  AxisSpread vs = axis_spread(block_edges(geom, box, va), g.vmin, g.dv, g.nv);
  if (us.first > us.last || vs.first > vs.last) {
    ks::compact_image_output(ctx, kName, 0, {});  // nothing spread: all zero
    return;
  }

  // oa per normal-axis offset; [n0, n1] spans the positive ones. Cells with
  // oa <= 0 inside that range (`gaps`) are skipped individually.
  const std::vector<double> normal_edges = block_edges(geom, box, axis);
  const std::int64_t nn = box.extent(axis);
  std::vector<double> oa(static_cast<std::size_t>(nn));
  std::int64_t n0 = 0, n1 = -1;
  for (std::int64_t n = 0; n < nn; ++n) {
    const auto un = static_cast<std::size_t>(n);
    oa[un] = math::overlap_length(normal_edges[un], normal_edges[un + 1], amin, amax);
    if (oa[un] > 0.0) {
      if (n0 > n1) n0 = n;
      n1 = n;
    }
  }
  if (n0 > n1) {
    ks::compact_image_output(ctx, kName, 0, {});  // nothing spread: all zero
    return;
  }
  bool gaps = false;
  for (std::int64_t n = n0; n <= n1; ++n)
    gaps = gaps || !(oa[static_cast<std::size_t>(n)] > 0.0);

  const std::array<int, 3> order = ks::memory_order(in.descriptor());
  const int inner = order[2];
  const std::int64_t nuc = box.extent(ua);
  const std::int64_t nvc = box.extent(va);
  // Column (un, vn) lives at un * cu + vn * cv, unit stride along the inner
  // axis when that is an in-plane axis.
  const std::int64_t cu = inner == ua ? 1 : nvc;
  const std::int64_t cv = inner == ua ? nuc : 1;
  std::vector<double> column(static_cast<std::size_t>(nuc * nvc), 0.0);
  std::vector<std::uint8_t> hit(column.size(), 0);
  const AxisSpread& inner_spread = inner == ua ? us : vs;

  visit_real(in, in.rank(), [&](auto grid) {
    const std::int64_t si = grid.s[inner];
    std::array<std::int64_t, 3> n{};
    ks::for_each_line(box, order, ctx.covered,
                      [&](std::int64_t a0, std::int64_t a1, const std::uint8_t* covered) {
                        n[order[0]] = a0;
                        n[order[1]] = a1;
                        const auto* line = grid.base + a0 * grid.s[order[0]] + a1 * grid.s[order[1]];
                        if (inner == axis) {
                          // The line is one column.
                          if (us.empty(n[ua]) || vs.empty(n[va])) return;
                          const std::size_t c = static_cast<std::size_t>(n[ua] * cu + n[va] * cv);
                          if (covered == nullptr && !gaps) {
                            column[c] += weighted_line_sum(line, si, oa.data(), n0, n1);
                            hit[c] = 1;
                            return;
                          }
                          double s = 0.0;
                          for (std::int64_t k = n0; k <= n1; ++k) {
                            const double w = oa[static_cast<std::size_t>(k)];
                            if (!(w > 0.0) || (covered != nullptr && covered[k] != 0)) continue;
                            s += static_cast<double>(line[k * si]) * w;
                            hit[c] = 1;
                          }
                          column[c] += s;
                          return;
                        }
                        // The line crosses columns at one normal offset.
                        const double w = oa[static_cast<std::size_t>(n[axis])];
                        if (!(w > 0.0)) return;
                        const int other = inner == ua ? va : ua;
                        if ((other == ua ? us : vs).empty(n[other])) return;
                        const std::int64_t row = n[other] * (other == ua ? cu : cv);
                        double* crow = column.data() + row;
                        std::uint8_t* hrow = hit.data() + row;
                        const std::int64_t t0 = inner_spread.first;
                        const std::int64_t t1 = inner_spread.last;
                        if (covered == nullptr) {
                          if (si == 1) {
                            for (std::int64_t t = t0; t <= t1; ++t)
                              crow[t] += static_cast<double>(line[t]) * w;
                          } else {
                            for (std::int64_t t = t0; t <= t1; ++t)
                              crow[t] += static_cast<double>(line[t * si]) * w;
                          }
                          std::fill(hrow + t0, hrow + t1 + 1, std::uint8_t{1});
                          return;
                        }
                        for (std::int64_t t = t0; t <= t1; ++t) {
                          if (covered[t] != 0) continue;
                          crow[t] += static_cast<double>(line[t * si]) * w;
                          hrow[t] = 1;
                        }
                      });
  });

  CellRange spread;
  for (std::int64_t vn = vs.first; vn <= vs.last; ++vn) {
    for (std::int64_t un = us.first; un <= us.last; ++un) {
      if (hit[static_cast<std::size_t>(un * cu + vn * cv)] != 0) spread.add(un, vn);
    }
  }
  // The output stores only the footprint of the columns spread.
  const NonzeroRect rect = spread.footprint(us, vs).rect();
  double* image = ks::compact_image_output(ctx, kName, 0, rect);
  if (rect.empty()) return;
  us.rebase(static_cast<std::int64_t>(rect.col_begin));
  vs.rebase(static_cast<std::int64_t>(rect.row_begin));
  const auto pitch = static_cast<std::int64_t>(rect.col_end - rect.col_begin);
  for (std::int64_t vn = spread.v_first; vn <= spread.v_last; ++vn) {
    for (std::int64_t un = spread.u_first; un <= spread.u_last; ++un) {
      const std::size_t c = static_cast<std::size_t>(un * cu + vn * cv);
      if (hit[c] != 0) spread_cell(us, vs, un, vn, column[c], pitch, image, nullptr);
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

// Input windows of the slice kernels: both read input 0 on the plane only.
template <class P>
std::optional<IndexBox> slice_plane_window(const InputWindowQuery& q) {
  if (q.input != 0 || q.params == nullptr || q.level == nullptr || !std::holds_alternative<P>(*q.params)) {
    return std::nullopt;
  }
  const P& p = std::get<P>(*q.params);
  if (p.axis < 0 || p.axis > 2 || q.block < 0 || static_cast<std::size_t>(q.block) >= q.level->boxes.size()) {
    return std::nullopt;  // the kernel reports the problem
  }
  const int axis = static_cast<int>(p.axis);
  std::int64_t plane = 0;
  if constexpr (std::is_same_v<P, UniformSliceCellParams>) {
    if (p.plane_index) plane = *p.plane_index;
    else if (!std::isfinite(p.coord)) return std::nullopt;
    else plane = math::coord_to_cell(p.coord, q.level->geom.x0[axis], q.level->geom.dx[axis],
                                     q.level->geom.index_origin[axis]);
  } else {
    if (!std::isfinite(p.coord)) return std::nullopt;
    plane = math::coord_to_cell(p.coord, q.level->geom.x0[axis], q.level->geom.dx[axis],
                                q.level->geom.index_origin[axis]);
  }
  const IndexBox& box = q.level->boxes[static_cast<std::size_t>(q.block)];
  if (plane < box.lo[axis] || plane > box.hi[axis]) return IndexBox{};  // reads nothing
  IndexBox w = box;
  w.lo[axis] = w.hi[axis] = static_cast<std::int32_t>(plane);
  return w;
}

}  // namespace

void register_mesh_kernels(KernelRegistry& registry) {
  // n_inputs is documentation (KREG-3); expressions take one input per variable.
  registry.add(make_kernel("field_expr", ParamType::FieldExprParams, &field_expr, 1, 1));
  registry.add(make_kernel("mesh_compare", ParamType::FieldExprParams, &mesh_compare, 1, 1));
  registry.add(make_kernel("mesh_mask_and", ParamType::none, &mesh_mask_and, 2, 1));
  KernelEntry slice = make_kernel("uniform_slice", ParamType::UniformSliceParams, &uniform_slice, 1, 1);
  slice.input_window = &slice_plane_window<UniformSliceParams>;
  registry.add(std::move(slice));
  KernelEntry cellavg = make_kernel("uniform_slice_cellavg_accumulate", ParamType::UniformSliceCellParams,
                                    &uniform_slice_cellavg_accumulate, 1, 2);
  cellavg.input_window = &slice_plane_window<UniformSliceCellParams>;
  registry.add(std::move(cellavg));
  registry.add(make_kernel("uniform_projection_accumulate", ParamType::UniformProjectionParams,
                           &uniform_projection_accumulate, 1, 1));
}

}  // namespace kangaroo
