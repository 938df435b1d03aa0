// Particle cloud-in-cell deposits onto AMR levels (OP-CIC-1, OP-CIC-2).
//
// Particles of one particle grid (the mesh block's twin, BACK-AMREX-11) are
// read through the dataset backend; positions and masses are converted to
// float64 once, and the per-particle math (selection, stencil, bilinear
// shares) comes from kangaroo/kernels/math/cic.h so a device path deposits
// with the same formulas.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "amr_family.h"
#include "kangaroo/core/buffer.h"
#include "kangaroo/core/dataset.h"
#include "kangaroo/core/error.h"
#include "kangaroo/core/kernel.h"
#include "kangaroo/core/params.h"
#include "kangaroo/core/runmeta.h"
#include "kangaroo/kernels/math/cic.h"
#include "kangaroo/kernels/math/overlap.h"
#include "kangaroo/kernels/math/periodic.h"
#include "kernel_support.h"

namespace kangaroo {
namespace {

namespace ks = kernel_support;

constexpr std::array<const char*, 3> kPositionFields{"x", "y", "z"};
// COORD-4 / OP-CIC-1: a missing axis has one unit cell; its particles sit at
// the center of it.
constexpr double kMissingAxisPosition = 0.5;

// Validated task setup shared by both deposits.
struct CicTask {
  const LevelGeom* geom = nullptr;
  IndexBox block;
  // Level domain: the bounding box of the level-0 boxes refined to this
  // level (COV-3), which periodic axes wrap into.
  IndexBox domain;
  int axis = 2;
  int u = 0;
  int v = 1;
  double a_lo = 0.0;
  double a_hi = 0.0;
  // Half-open physical extent of the block on the normal axis.
  double block_a_lo = 0.0;
  double block_a_hi = 0.0;
  bool has_mass_max = false;
  double mass_max = 0.0;
  std::string type;
  std::string mass_field;
  std::int32_t level = 0;
};

// The caller ensures level 0 has boxes.
IndexBox refined_level0_domain(const StepMeta& step, int level) {
  const IndexBox bbox = ks::level0_bounding_box(step);
  const LevelGeom& g0 = step.levels[0].geom;
  const LevelGeom& gl = step.levels[static_cast<std::size_t>(level)].geom;
  IndexBox out;
  for (int a = 0; a < 3; ++a) {
    const std::int64_t r = cumulative_ratio(step, 0, level, a);
    const std::int64_t lo =
        (std::int64_t{bbox.lo[a]} - g0.index_origin[a]) * r + gl.index_origin[a];
    const std::int64_t hi =
        (std::int64_t{bbox.hi[a]} - g0.index_origin[a] + 1) * r + gl.index_origin[a] - 1;
    out.lo[a] = static_cast<std::int32_t>(std::clamp<std::int64_t>(lo, INT32_MIN, INT32_MAX));
    out.hi[a] = static_cast<std::int32_t>(std::clamp<std::int64_t>(hi, INT32_MIN, INT32_MAX));
  }
  return out;
}

// OP-CIC-1 parameter checks (OP-GEN-3), common to both kernels.
template <class Params>
CicTask validate_task(const KernelContext& ctx, const Params& p) {
  CicTask t;
  if (p.particle_type.empty()) fail_kernel_params(ctx.kernel, "empty particle_type");
  t.axis = ks::require_axis(ctx.kernel, p.axis);
  if (p.level_index < 0) {
    fail_kernel_params(ctx.kernel,
                       "level_index must be >= 0 (got " + std::to_string(p.level_index) + ")");
  }
  // The particle grid (level_index, block) is deposited into the task's
  // block, so both must name the same level.
  if (p.level_index != ctx.level) {
    fail_kernel_params(ctx.kernel, "level_index " + std::to_string(p.level_index) +
                                       " differs from the task level " + std::to_string(ctx.level));
  }
  if (p.mass_field.empty()) fail_kernel_params(ctx.kernel, "empty mass_field");
  if (!std::isfinite(p.axis_bounds[0]) || !std::isfinite(p.axis_bounds[1])) {
    fail_kernel_params(ctx.kernel, "axis_bounds must be finite");
  }
  if (p.mass_max && std::isnan(*p.mass_max))
    fail_kernel_params(ctx.kernel, "mass_max must not be NaN");
  if (ctx.runmeta == nullptr) fail_kernel_params(ctx.kernel, "missing run metadata");
  if (ctx.runmeta->coord_sys != 0) {
    fail(ErrorKind::kernel, std::string(ctx.kernel) +
                                ": operator requires Cartesian coordinates (coord_sys=" +
                                std::to_string(ctx.runmeta->coord_sys) + ")");
  }
  t.block = ctx.block_box();
  const StepMeta* step = ctx.runmeta->find_step(ctx.step);
  if (step == nullptr || static_cast<std::size_t>(ctx.level) >= step->levels.size() ||
      step->levels[0].boxes.empty()) {
    fail_kernel_params(ctx.kernel, "step " + std::to_string(ctx.step) + " level " +
                                       std::to_string(ctx.level) + " is not in the run metadata");
  }
  t.geom = &ctx.level_meta->geom;
  for (int a = 0; a < 3; ++a) {
    if (!(t.geom->dx[a] > 0.0) || !std::isfinite(t.geom->dx[a])) {
      fail_kernel_params(ctx.kernel, "level cell sizes must be positive and finite");
    }
  }
  if (ctx.dataset == nullptr)
    fail_kernel_params(ctx.kernel, "no dataset backend to read particles from");
  t.domain = refined_level0_domain(*step, ctx.level);
  const math::PlaneAxes plane = math::plane_axes(t.axis);
  t.u = plane.u;
  t.v = plane.v;
  t.a_lo = std::min(p.axis_bounds[0], p.axis_bounds[1]);
  t.a_hi = std::max(p.axis_bounds[0], p.axis_bounds[1]);
  const LevelGeom& g = *t.geom;
  t.block_a_lo =
      math::cell_edge(g.x0[t.axis], g.dx[t.axis], g.index_origin[t.axis], t.block.lo[t.axis]);
  t.block_a_hi = math::cell_edge(g.x0[t.axis], g.dx[t.axis], g.index_origin[t.axis],
                                 std::int64_t{t.block.hi[t.axis]} + 1);
  t.has_mass_max = p.mass_max.has_value();
  t.mass_max = p.mass_max.value_or(0.0);
  t.type = p.particle_type;
  t.mass_field = p.mass_field;
  t.level = static_cast<std::int32_t>(p.level_index);
  return t;
}

// Positions (x, y, z) and masses of one particle grid, truncated to the
// shortest column; axes beyond the species' dim hold the unit-cell center.
struct ParticleColumns {
  std::array<std::vector<double>, 3> position;
  std::array<bool, 3> present{false, false, false};
  std::vector<double> mass;
  std::size_t count = 0;

  double at(int axis, std::size_t n) const {
    return present[static_cast<std::size_t>(axis)] ? position[static_cast<std::size_t>(axis)][n]
                                                   : kMissingAxisPosition;
  }
};

std::vector<double> read_column(const KernelContext& ctx, const std::string& type,
                                const std::string& field, std::int64_t chunk) {
  const ConstBufferPtr buf = ctx.dataset->read_particle_field(type, field, chunk);
  if (!buf) {
    fail(ErrorKind::not_found, std::string(ctx.kernel) + ": particle field " + type + "/" + field +
                                   " chunk " + std::to_string(chunk) + " is not available");
  }
  const Descriptor& d = buf->descriptor();
  if (d.rank != 1 ||
      (d.scalar != ScalarType::f32 && d.scalar != ScalarType::f64 && d.scalar != ScalarType::i64)) {
    fail(ErrorKind::kernel, std::string(ctx.kernel) + ": particle field " + type + "/" + field +
                                " must be rank-1 f32, f64 or i64 (got " + d.to_string() + ")");
  }
  std::vector<double> out(static_cast<std::size_t>(d.extents[0]));
  if (!out.empty()) ks::gather_linear<double>(*buf, 0, out.size(), out.data());
  return out;
}

ParticleColumns read_particles(const KernelContext& ctx, const CicTask& t) {
  Dataset& ds = *ctx.dataset;
  ds.require_particle_grids_match_mesh(t.type, t.level);
  const std::int64_t chunk = ds.particle_grid_chunk(t.type, t.level, ctx.block);
  const int dim = std::clamp(ds.particle_dim(t.type), 0, 3);
  ParticleColumns cols;
  cols.mass = read_column(ctx, t.type, t.mass_field, chunk);
  cols.count = cols.mass.size();
  for (int a = 0; a < dim; ++a) {
    auto& column = cols.position[static_cast<std::size_t>(a)];
    column = read_column(ctx, t.type, kPositionFields[static_cast<std::size_t>(a)], chunk);
    cols.present[static_cast<std::size_t>(a)] = true;
    cols.count = std::min(cols.count, column.size());
  }
  return cols;
}

// One share of a particle's mass on cell `cell` (level indices).
struct Share {
  std::array<std::int64_t, 3> cell;
  double mass;
};

// Runs the OP-CIC-1 selection and stencil over every particle and calls
// `deposit(share)` for each of the four shares, after periodic wrapping.
template <class Deposit>
void for_each_share(const CicTask& t, const ParticleColumns& cols, Deposit&& deposit) {
  const LevelGeom& g = *t.geom;
  for (std::size_t n = 0; n < cols.count; ++n) {
    const double pu = cols.at(t.u, n);
    const double pv = cols.at(t.v, n);
    const double pa = cols.at(t.axis, n);
    const double m = cols.mass[n];
    if (!math::cic_particle_selected(pu, pv, pa, m, t.has_mass_max, t.mass_max, t.a_lo, t.a_hi))
      continue;
    if (pa < t.block_a_lo || pa >= t.block_a_hi) continue;
    const std::int64_t ia =
        math::coord_to_cell(pa, g.x0[t.axis], g.dx[t.axis], g.index_origin[t.axis]);
    // Rounding can put a particle on the block's edge in the next cell.
    if (ia < t.block.lo[t.axis] || ia > t.block.hi[t.axis]) continue;
    const math::CicAxis su = math::cic_axis(pu, g.x0[t.u], g.dx[t.u], g.index_origin[t.u]);
    const math::CicAxis sv = math::cic_axis(pv, g.x0[t.v], g.dx[t.v], g.index_origin[t.v]);
    double w[4];
    math::cic_weights(su.t, sv.t, w);
    for (int s = 0; s < 4; ++s) {
      Share share;
      share.cell[static_cast<std::size_t>(t.axis)] = ia;
      std::int64_t iu = su.cell + (s & 1);
      std::int64_t iv = sv.cell + (s >> 1);
      if (g.is_periodic[t.u]) iu = math::wrap_index(iu, t.domain.lo[t.u], t.domain.extent(t.u));
      if (g.is_periodic[t.v]) iv = math::wrap_index(iv, t.domain.lo[t.v], t.domain.extent(t.v));
      share.cell[static_cast<std::size_t>(t.u)] = iu;
      share.cell[static_cast<std::size_t>(t.v)] = iv;
      share.mass = m * w[s];
      deposit(share);
    }
  }
}

// COV-2 for cells near the block through a painted mask, and for the rare
// wrapped cell far from it by scanning the list.
class ShareCoverage {
 public:
  ShareCoverage(const IndexBox& near, std::span<const IndexBox> covered)
      : near_(near), mask_(near, covered), covered_(covered) {}
  bool covered(const std::array<std::int64_t, 3>& c) const {
    if (covered_.empty()) return false;
    if (near_.contains(c[0], c[1], c[2])) return mask_.covered(c[0], c[1], c[2]);
    return is_covered(covered_, c[0], c[1], c[2]);
  }

 private:
  IndexBox near_;
  ks::CoverageMask mask_;
  std::span<const IndexBox> covered_;
};

IndexBox grown_in_plane(const CicTask& t) {
  IndexBox near = t.block;
  for (const int a : {t.u, t.v}) {
    near.lo[a] = near.lo[a] > INT32_MIN ? near.lo[a] - 1 : near.lo[a];
    near.hi[a] = near.hi[a] < INT32_MAX ? near.hi[a] + 1 : near.hi[a];
  }
  return near;
}

// OP-CIC-1.
void cic_grid_kernel(KernelContext& ctx) {
  const auto& p = ctx.param<ParticleCicGridParams>();
  const CicTask t = validate_task(ctx, p);
  Buffer& out = ks::output_at(ctx, ctx.kernel, 0);
  ks::require_block_grid(out, t.block, ctx.kernel, "output 0");
  if (out.scalar() != ScalarType::f64) {
    fail(ErrorKind::kernel, std::string(ctx.kernel) + ": output 0 must be f64 (got " +
                                out.descriptor().to_string() + ")");
  }
  const GridView<double> grid = out.mutable_view<double>(out.rank());
  for (std::int64_t i = 0; i < t.block.extent(0); ++i) {
    for (std::int64_t j = 0; j < t.block.extent(1); ++j) {
      for (std::int64_t k = 0; k < t.block.extent(2); ++k)
        grid(i, j, k) = 0.0;
    }
  }
  const ParticleColumns cols = read_particles(ctx, t);
  const ks::CoverageMask mask(t.block, ctx.covered);
  const LevelGeom& g = *t.geom;
  const double inv_volume = 1.0 / (g.dx[0] * g.dx[1] * g.dx[2]);
  // The block grid has no halo: shares of cells outside the block are lost
  // (OP-CIC-1 documents this under-count along block edges).
  for_each_share(t, cols, [&](const Share& s) {
    const auto& c = s.cell;
    if (!t.block.contains(c[0], c[1], c[2])) return;
    if (mask.any() && mask.covered(c[0], c[1], c[2])) return;
    grid(c[0] - t.block.lo[0], c[1] - t.block.lo[1], c[2] - t.block.lo[2]) += s.mass * inv_volume;
  });
}

// Mass per native (u, v) cell of the level. Cells next to the block live in
// a dense array; a share wrapped to the far side of a periodic domain goes to
// a small ordered map.
class NativeCells {
 public:
  explicit NativeCells(const IndexBox& near, int u, int v)
      : u_lo_(near.lo[u]),
        v_lo_(near.lo[v]),
        nu_(near.extent(u)),
        nv_(near.extent(v)),
        dense_(static_cast<std::size_t>(nu_ * nv_), 0.0) {}

  void add(std::int64_t iu, std::int64_t iv, double mass) {
    const std::int64_t du = iu - u_lo_;
    const std::int64_t dv = iv - v_lo_;
    if (du >= 0 && du < nu_ && dv >= 0 && dv < nv_) {
      dense_[static_cast<std::size_t>(dv * nu_ + du)] += mass;
    } else {
      far_[{iv, iu}] += mass;
    }
  }

  // fn(iu, iv, mass) for every cell holding non-zero mass, v outer, u inner.
  template <class Fn>
  void for_each(Fn&& fn) const {
    for (std::int64_t dv = 0; dv < nv_; ++dv) {
      for (std::int64_t du = 0; du < nu_; ++du) {
        const double m = dense_[static_cast<std::size_t>(dv * nu_ + du)];
        if (m != 0.0) fn(u_lo_ + du, v_lo_ + dv, m);
      }
    }
    for (const auto& [key, m] : far_) {
      if (m != 0.0) fn(key.second, key.first, m);
    }
  }

 private:
  std::int64_t u_lo_;
  std::int64_t v_lo_;
  std::int64_t nu_;
  std::int64_t nv_;
  std::vector<double> dense_;
  std::map<std::pair<std::int64_t, std::int64_t>, double> far_;
};

// OP-CIC-2.
void cic_projection_kernel(KernelContext& ctx) {
  const auto& p = ctx.param<ParticleCicProjectionParams>();
  const CicTask t = validate_task(ctx, p);
  const ks::ImageGrid image = ks::make_image_grid(ctx.kernel, p.rect, p.resolution);
  double* pixels = ks::f64_image_output(ctx, ctx.kernel, 0, image);
  const ParticleColumns cols = read_particles(ctx, t);

  const IndexBox near = grown_in_plane(t);
  const ShareCoverage coverage(near, ctx.covered);
  NativeCells cells(near, t.u, t.v);
  // Unlike the grid deposit, a share counts wherever it lands inside the
  // level domain, so no mass is lost along block edges or across periodic
  // boundaries; the coverage list is level-wide.
  for_each_share(t, cols, [&](const Share& s) {
    const auto& c = s.cell;
    if (!t.domain.contains(c[0], c[1], c[2])) return;
    if (coverage.covered(c)) return;
    cells.add(c[static_cast<std::size_t>(t.u)], c[static_cast<std::size_t>(t.v)], s.mass);
  });

  const LevelGeom& g = *t.geom;
  const double cell_area = g.dx[t.u] * g.dx[t.v];
  ks::PixelFootprint footprint;
  cells.for_each([&](std::int64_t iu, std::int64_t iv, double mass) {
    const double u_lo = math::cell_edge(g.x0[t.u], g.dx[t.u], g.index_origin[t.u], iu);
    const double u_hi = math::cell_edge(g.x0[t.u], g.dx[t.u], g.index_origin[t.u], iu + 1);
    const double v_lo = math::cell_edge(g.x0[t.v], g.dx[t.v], g.index_origin[t.v], iv);
    const double v_hi = math::cell_edge(g.x0[t.v], g.dx[t.v], g.index_origin[t.v], iv + 1);
    const math::PixelSpan cols_span = math::pixel_span(u_lo, u_hi, image.umin, image.du, image.nu);
    const math::PixelSpan rows_span = math::pixel_span(v_lo, v_hi, image.vmin, image.dv, image.nv);
    if (cols_span.empty() || rows_span.empty()) return;
    footprint.add(rows_span.first, rows_span.last, cols_span.first, cols_span.last);
    for (std::int64_t j = rows_span.first; j <= rows_span.last; ++j) {
      const double ov = math::overlap_length(v_lo, v_hi, math::pixel_edge(image.vmin, image.dv, j),
                                             math::pixel_edge(image.vmin, image.dv, j + 1));
      if (!(ov > 0.0)) continue;
      for (std::int64_t i = cols_span.first; i <= cols_span.last; ++i) {
        const double ou =
            math::overlap_length(u_lo, u_hi, math::pixel_edge(image.umin, image.du, i),
                                 math::pixel_edge(image.umin, image.du, i + 1));
        if (!(ou > 0.0)) continue;
        pixels[static_cast<std::size_t>(j * image.nu + i)] += mass * ou * ov / cell_area;
      }
    }
  });
  footprint.publish(ctx, ctx.kernel, 0);
}

}  // namespace

namespace amr_family {

void register_cic_kernels(KernelRegistry& registry) {
  registry.add(make_kernel("particle_cic_grid_accumulate", ParamType::ParticleCicGridParams,
                           cic_grid_kernel, 0, 1));
  registry.add(make_kernel("particle_cic_projection_accumulate",
                           ParamType::ParticleCicProjectionParams, cic_projection_kernel, 0, 1));
}

}  // namespace amr_family
}  // namespace kangaroo
