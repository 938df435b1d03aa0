// Particle cloud-in-cell deposits (OP-CIC-1, OP-CIC-2) over a fake particle
// dataset whose particles sit at known positions. Expected values are the
// bilinear shares of OP-CIC-1 written out by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "kangaroo/core/dataset.h"
#include "kangaroo/core/error.h"
#include "kangaroo/kernels/register.h"
#include "kernel_harness.h"

namespace kangaroo {
namespace {

using test::box_of;
using test::throws_with;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// Particle backend double: one species, columns per (field, chunk), chunk
// index = 100 * level + grid (a level-major numbering like PMETA-1).
class FakeParticles final : public Dataset {
 public:
  int dim = 3;
  bool grids_match = true;
  std::map<std::string, ScalarType> stored_as;  // default f64
  std::map<std::pair<std::string, std::int64_t>, std::vector<double>> columns;
  std::vector<std::int64_t> chunks_read;

  std::string_view kind() const override { return "fake"; }
  const std::string& uri() const override { return uri_; }
  ConstBufferPtr get_chunk(const ChunkId&) override { return nullptr; }
  bool has_chunk(const ChunkId&) const override { return false; }
  std::uint64_t estimate_chunk_bytes(const ChunkId&) const override { return 0; }
  std::string metadata_json(std::int32_t) const override { return "{}"; }
  void register_field(std::int32_t, const std::string&) override {}
  void register_field_component(std::int32_t, std::int32_t) override {}

  int particle_dim(const std::string& type) const override {
    require_type(type);
    return dim;
  }
  std::int64_t particle_grid_chunk(const std::string& type, std::int32_t level,
                                   std::int32_t grid) const override {
    require_type(type);
    return 100 * std::int64_t{level} + grid;
  }
  void require_particle_grids_match_mesh(const std::string& type,
                                         std::int32_t level) const override {
    require_type(type);
    if (!grids_match) {
      fail(ErrorKind::kernel,
           "particle grids do not match mesh blocks on level " + std::to_string(level));
    }
  }
  ConstBufferPtr read_particle_field(const std::string& type, const std::string& field,
                                     std::int64_t chunk) override {
    require_type(type);
    const auto it = columns.find({field, chunk});
    if (it == columns.end())
      fail(ErrorKind::not_found, "particle field not found: " + type + "/" + field);
    chunks_read.push_back(chunk);
    const auto kind_it = stored_as.find(field);
    const ScalarType t = kind_it == stored_as.end() ? ScalarType::f64 : kind_it->second;
    return test::make_filled(t, {it->second.size()}, it->second);
  }

  // Adds particles (x, y, z, mass) to grid `grid` of `level`; positions
  // beyond `dim` are not stored, as a backend would not have them.
  void add(std::int32_t level, std::int32_t grid,
           const std::vector<std::array<double, 4>>& particles,
           const std::string& mass_field = "mass") {
    const std::int64_t chunk = 100 * std::int64_t{level} + grid;
    const char* names[3] = {"x", "y", "z"};
    for (const auto& p : particles) {
      for (int a = 0; a < dim; ++a)
        columns[{names[a], chunk}].push_back(p[static_cast<std::size_t>(a)]);
      columns[{mass_field, chunk}].push_back(p[3]);
    }
  }

 private:
  static void require_type(const std::string& type) {
    if (type != "dm") fail(ErrorKind::not_found, "particle type not found: " + type);
  }
  std::string uri_ = "fake://particles";
};

// Level 0 of 8 x 8 x 4 cells of size (0.5, 0.5, 1) over [0,4) x [0,4) x
// [0,4), split into two blocks along x; cell volume 0.25.
struct CicCase {
  RunMeta meta;
  FakeParticles particles;
  KernelRegistry registry;
  std::vector<BufferPtr> outputs;
  KernelParams params;
  std::vector<IndexBox> covered;
  std::int32_t block = 0;
  std::int32_t level = 0;
  bool with_dataset = true;

  explicit CicCase(std::vector<IndexBox> boxes = {box_of({0, 0, 0}, {3, 7, 3}),
                                                  box_of({4, 0, 0}, {7, 7, 3})},
                   std::array<bool, 3> periodic = {false, false, false},
                   std::array<double, 3> dx = {0.5, 0.5, 1.0}) {
    StepMeta s;
    LevelMeta l;
    l.geom.dx = dx;
    l.geom.is_periodic = periodic;
    l.boxes = std::move(boxes);
    s.levels.push_back(std::move(l));
    meta.steps.push_back(std::move(s));
    register_default_kernels(registry);
  }

  const IndexBox& box() const {
    return meta.steps[0].levels[0].boxes[static_cast<std::size_t>(block)];
  }

  void run(std::string_view kernel) {
    KernelContext ctx;
    ctx.kernel = kernel;
    ctx.runmeta = &meta;
    ctx.level_meta = meta.find_level(0, level);
    ctx.step = 0;
    ctx.level = level;
    ctx.block = block;
    ctx.outputs = outputs;
    ctx.params = &params;
    ctx.covered = covered;
    ctx.dataset = with_dataset ? &particles : nullptr;
    registry.find(kernel).fn(ctx);
  }

  // Runs the grid deposit into a fresh block grid filled with garbage (the
  // kernel must zero it) and returns the values by global cell.
  std::map<std::array<int, 3>, double> grid(ParticleCicGridParams p) {
    params = std::move(p);
    const IndexBox& b = box();
    outputs = {test::make_buffer(ScalarType::f64, {static_cast<std::uint64_t>(b.extent(0)),
                                                   static_cast<std::uint64_t>(b.extent(1)),
                                                   static_cast<std::uint64_t>(b.extent(2))})};
    std::vector<double> garbage(b.cells(), 7.0);
    test::fill_linear(*outputs[0], garbage);
    run("particle_cic_grid_accumulate");
    const std::vector<double> v = test::values_of(*outputs[0]);
    std::map<std::array<int, 3>, double> cells;
    std::size_t n = 0;
    for (int i = b.lo[0]; i <= b.hi[0]; ++i) {
      for (int j = b.lo[1]; j <= b.hi[1]; ++j) {
        for (int k = b.lo[2]; k <= b.hi[2]; ++k, ++n) {
          if (v[n] != 0.0) cells[{i, j, k}] = v[n];
        }
      }
    }
    return cells;
  }

  std::vector<double> projection(ParticleCicProjectionParams p) {
    params = p;
    outputs = {test::make_buffer(ScalarType::f64, {static_cast<std::uint64_t>(p.resolution[1]),
                                                   static_cast<std::uint64_t>(p.resolution[0])})};
    run("particle_cic_projection_accumulate");
    return test::values_of(*outputs[0]);
  }
};

ParticleCicGridParams grid_params(std::array<double, 2> bounds = {0.0, 4.0}) {
  ParticleCicGridParams p;
  p.particle_type = "dm";
  p.level_index = 0;
  p.axis = 2;
  p.axis_bounds = bounds;
  return p;
}

ParticleCicProjectionParams projection_params(std::array<std::int64_t, 2> resolution = {8, 8},
                                              std::array<double, 4> rect = {0.0, 0.0, 4.0, 4.0}) {
  ParticleCicProjectionParams p;
  p.particle_type = "dm";
  p.level_index = 0;
  p.axis = 2;
  p.axis_bounds = {0.0, 4.0};
  p.rect = rect;
  p.resolution = resolution;
  return p;
}

double total(const std::map<std::array<int, 3>, double>& cells) {
  double s = 0.0;
  for (const auto& [cell, v] : cells)
    s += v;
  return s;
}

double sum_of(const std::vector<double>& v) {
  return std::accumulate(v.begin(), v.end(), 0.0);
}

// (t, cell) of OP-CIC-1 along an axis with x0 = 0, origin 0.
std::pair<double, int> stencil(double x, double dx) {
  const double s = (x - 0.5 * dx) / dx;
  const double f = std::floor(s);
  return {s - f, static_cast<int>(f)};
}

// ---------------------------------------------------------------------------
// Grid deposit (OP-CIC-1)

TEST(CicGrid, DepositedMassEqualsTotalMassInsideTheBlock_OPCIC1) {
  CicCase c;
  double mass = 0.0;
  std::vector<std::array<double, 4>> ps;
  for (int n = 0; n < 40; ++n) {
    const double x = 0.3 + 1.4 * ((n * 7) % 40) / 40.0;
    const double y = 0.3 + 3.4 * ((n * 13) % 40) / 40.0;
    const double z = 4.0 * ((n * 3) % 40) / 40.0;
    const double m = 0.5 + (n % 5);
    ps.push_back({x, y, z, m});
    mass += m;
  }
  c.particles.add(0, 0, ps);
  const auto cells = c.grid(grid_params());
  EXPECT_NEAR(total(cells) * 0.25, mass, 1e-12 * mass);
  EXPECT_EQ(c.particles.chunks_read, (std::vector<std::int64_t>{0, 0, 0, 0}));
}

TEST(CicGrid, BilinearSharesOfOneParticleAreExact_OPCIC1) {
  CicCase c;
  const double x = 1.375, y = 1.8, z = 2.5, m = 2.0;
  c.particles.add(0, 0, {{x, y, z, m}});
  const auto cells = c.grid(grid_params());
  const auto [tu, iu] = stencil(x, 0.5);
  const auto [tv, iv] = stencil(y, 0.5);
  ASSERT_EQ(iu, 2);
  ASSERT_EQ(iv, 3);
  EXPECT_NEAR(tu, 0.25, 1e-15);
  EXPECT_NEAR(tv, 0.1, 1e-15);
  ASSERT_EQ(cells.size(), 4u);
  EXPECT_DOUBLE_EQ(cells.at({2, 3, 2}), m * (1 - tu) * (1 - tv) / 0.25);
  EXPECT_DOUBLE_EQ(cells.at({3, 3, 2}), m * tu * (1 - tv) / 0.25);
  EXPECT_DOUBLE_EQ(cells.at({2, 4, 2}), m * (1 - tu) * tv / 0.25);
  EXPECT_DOUBLE_EQ(cells.at({3, 4, 2}), m * tu * tv / 0.25);
}

TEST(CicGrid, CoveredCellsAndCellsOutsideTheBlockDropTheirShares_OPCIC1_COV1) {
  CicCase c;
  c.particles.add(0, 0, {{1.375, 1.8, 2.5, 2.0}, {1.9, 0.9, 0.5, 1.0}});
  c.covered = {box_of({3, 3, 0}, {3, 3, 3})};
  const auto cells = c.grid(grid_params());
  const auto [tu, iu] = stencil(1.375, 0.5);
  const auto [tv, iv] = stencil(1.8, 0.5);
  EXPECT_EQ(cells.count({3, 3, 2}), 0u);
  EXPECT_DOUBLE_EQ(cells.at({2, 3, 2}), 2.0 * (1 - tu) * (1 - tv) / 0.25);
  // The second particle's upper-x shares fall in block 1 (x index 4).
  const auto [tu2, iu2] = stencil(1.9, 0.5);
  const auto [tv2, iv2] = stencil(0.9, 0.5);
  ASSERT_EQ(iu2, 3);
  EXPECT_EQ(cells.count({4, iv2, 0}), 0u);
  EXPECT_DOUBLE_EQ(cells.at({3, iv2, 0}), (1 - tu2) * (1 - tv2) / 0.25);
  EXPECT_DOUBLE_EQ(cells.at({3, iv2 + 1, 0}), (1 - tu2) * tv2 / 0.25);
  EXPECT_EQ(cells.size(), 5u);
}

TEST(CicGrid, SelectionSkipsBadMassesNonFiniteValuesAndOutOfRangeNormals_OPCIC1) {
  CicCase c;
  c.particles.add(0, 0,
                  {{1.0, 1.0, 0.5, 1.0},              // kept
                   {1.0, 1.0, 0.5, 3.0},              // kept: equal to mass_max
                   {1.0, 1.0, 0.5, 3.5},              // above mass_max
                   {1.0, 1.0, 0.5, 0.0},              // m <= 0
                   {1.0, 1.0, 0.5, -2.0},             // m <= 0
                   {kNaN, 1.0, 0.5, 1.0},             // non-finite position
                   {1.0, 1.0, kInf, 1.0},             // non-finite normal coordinate
                   {1.0, 1.0, 0.5, kInf},             // non-finite mass
                   {1.0, 1.0, 3.5, 1.0},              // outside axis_bounds
                   {1.0, 1.0, -0.5, 1.0}});           // outside axis_bounds
  ParticleCicGridParams p = grid_params({2.0, 0.0});  // bounds in either order
  p.mass_max = 3.0;
  EXPECT_NEAR(total(c.grid(p)) * 0.25, 4.0, 1e-12);

  // Inside axis_bounds but outside the block's normal extent [0, 4).
  CicCase d;
  d.particles.add(0, 0, {{1.0, 1.0, 4.0, 1.0}, {1.0, 1.0, 3.999, 1.0}});
  EXPECT_NEAR(total(d.grid(grid_params({0.0, 10.0}))) * 0.25, 1.0, 1e-12);
}

TEST(CicGrid, PeriodicAxesWrapSharesIntoTheLevelDomain_OPCIC1) {
  const std::vector<IndexBox> one_block{box_of({0, 0, 0}, {7, 7, 3})};
  CicCase c(one_block, {true, false, false});
  // x = 3.9: cells 7 and 8 -> 8 wraps to 0; x = 0.1: cells -1 -> 7 and 0.
  c.particles.add(0, 0, {{3.9, 1.0, 0.5, 1.0}, {0.1, 1.0, 1.5, 1.0}});
  const auto cells = c.grid(grid_params());
  EXPECT_NEAR(total(cells) * 0.25, 2.0, 1e-12);
  const auto [tu, iu] = stencil(3.9, 0.5);
  const auto [tv, iv] = stencil(1.0, 0.5);
  ASSERT_EQ(iu, 7);
  EXPECT_DOUBLE_EQ(cells.at({0, iv, 0}), tu * (1 - tv) / 0.25);
  EXPECT_DOUBLE_EQ(cells.at({7, iv, 0}), (1 - tu) * (1 - tv) / 0.25);
  const auto [tu2, iu2] = stencil(0.1, 0.5);
  ASSERT_EQ(iu2, -1);
  EXPECT_DOUBLE_EQ(cells.at({7, iv, 1}), (1 - tu2) * (1 - tv) / 0.25);

  CicCase open(one_block);
  open.particles.add(0, 0, {{3.9, 1.0, 0.5, 1.0}});
  EXPECT_NEAR(total(open.grid(grid_params())) * 0.25, 1.0 - tu, 1e-12);
}

TEST(CicGrid, MissingAxesSitAtTheUnitCellCenter_OPCIC1_COORD4) {
  // 2D data: z is one unit cell; the species stores x and y only.
  CicCase c({box_of({0, 0, 0}, {7, 7, 0})}, {false, false, false}, {0.5, 0.5, 1.0});
  c.particles.dim = 2;
  c.particles.add(0, 0, {{1.375, 1.8, 0.0, 2.0}});
  EXPECT_EQ(c.particles.columns.count({"z", 0}), 0u);
  const auto cells = c.grid(grid_params({0.0, 1.0}));
  EXPECT_NEAR(total(cells) * 0.25, 2.0, 1e-12);
  EXPECT_EQ(cells.begin()->first[2], 0);

  // Normal axis x: (u, v) = (y, z), and z = 0.5 puts everything on iv = 0.
  ParticleCicGridParams px = grid_params({0.0, 4.0});
  px.axis = 0;
  const auto by_x = c.grid(px);
  EXPECT_NEAR(total(by_x) * 0.25, 2.0, 1e-12);
  for (const auto& [cell, v] : by_x)
    EXPECT_EQ(cell[0], 2) << v;
}

TEST(CicGrid, MassFieldIsTakenAsGivenAndColumnsMayBeF32OrI64_OPCIC1) {
  CicCase c;
  c.particles.stored_as["x"] = ScalarType::f32;
  c.particles.stored_as["weight"] = ScalarType::i64;
  c.particles.add(0, 0, {{1.0, 1.0, 0.5, 3.0}}, "weight");
  EXPECT_TRUE(
      throws_with([&] { (void)c.grid(grid_params()); }, "particle field not found: dm/mass"));
  ParticleCicGridParams p = grid_params();
  p.mass_field = "weight";
  EXPECT_NEAR(total(c.grid(p)) * 0.25, 3.0, 1e-12);
}

TEST(CicGrid, ColumnsAreTruncatedToTheShortest_OPCIC1) {
  CicCase c;
  c.particles.add(0, 0, {{1.0, 1.0, 0.5, 1.0}, {1.0, 1.0, 0.5, 2.0}});
  c.particles.columns[{"y", 0}].pop_back();
  EXPECT_NEAR(total(c.grid(grid_params())) * 0.25, 1.0, 1e-12);
}

TEST(CicGrid, ReadsTheParticleGridOfTheTaskBlock_OPCIC1_PMETA1) {
  CicCase c;
  c.block = 1;
  c.particles.add(0, 1, {{3.0, 1.0, 0.5, 1.5}});
  EXPECT_NEAR(total(c.grid(grid_params())) * 0.25, 1.5, 1e-12);
  EXPECT_EQ(c.particles.chunks_read.front(), 1);
}

TEST(CicGrid, ErrorPaths_OPCIC1_OPGEN3) {
  CicCase c;
  c.particles.add(0, 0, {{1.0, 1.0, 0.5, 1.0}});
  const auto fails = [&](ParticleCicGridParams p, std::string_view needle) {
    EXPECT_TRUE(throws_with([&] { (void)c.grid(std::move(p)); }, needle)) << needle;
  };
  ParticleCicGridParams p = grid_params();
  p.particle_type = "";
  fails(p, "particle_cic_grid_accumulate: invalid parameters: empty particle_type");
  p = grid_params();
  p.axis = 3;
  fails(p, "invalid parameters: axis must be 0, 1 or 2");
  p = grid_params();
  p.level_index = -1;
  fails(p, "invalid parameters: level_index must be >= 0");
  p = grid_params();
  p.level_index = 1;
  fails(p, "invalid parameters: level_index 1 differs from the task level 0");
  p = grid_params({0.0, kNaN});
  fails(p, "invalid parameters: axis_bounds must be finite");
  p = grid_params();
  p.particle_type = "gas";
  fails(p, "particle type not found: gas");

  c.particles.grids_match = false;
  fails(grid_params(), "particle grids do not match mesh blocks on level 0");
  c.particles.grids_match = true;

  c.with_dataset = false;
  fails(grid_params(), "invalid parameters: no dataset backend");
  c.with_dataset = true;

  c.meta.coord_sys = 2;
  fails(grid_params(), "operator requires Cartesian coordinates (coord_sys=2)");
  c.meta.coord_sys = 0;

  c.params = grid_params();
  c.block = 5;
  c.outputs = {test::make_buffer(ScalarType::f64, {4, 8, 4})};
  EXPECT_TRUE(
      throws_with([&] { c.run("particle_cic_grid_accumulate"); }, "invalid parameters: block 5"));
  c.block = 0;
  c.outputs = {test::make_buffer(ScalarType::f32, {4, 8, 4})};
  EXPECT_TRUE(throws_with([&] { c.run("particle_cic_grid_accumulate"); }, "output 0 must be f64"));
}

// ---------------------------------------------------------------------------
// Projection deposit (OP-CIC-2)

TEST(CicProjection, PixelsHoldTheTotalMassAndFinalizeGivesMassPerArea_OPCIC2_LOW16) {
  CicCase c;
  double mass = 0.0;
  std::vector<std::array<double, 4>> ps;
  for (int n = 0; n < 30; ++n) {
    // Inside the domain but anywhere in block 0, including its edges: the
    // shares that fall into block 1 stay in the image.
    const double x = 0.25 + 1.75 * ((n * 11) % 30) / 30.0;
    const double y = 0.25 + 3.5 * ((n * 7) % 30) / 30.0;
    const double m = 1.0 + 0.25 * (n % 3);
    ps.push_back({x, y, 0.5 + (n % 4), m});
    mass += m;
  }
  c.particles.add(0, 0, ps);
  ParticleCicProjectionParams p = projection_params({5, 3});
  const std::vector<double> image = c.projection(p);
  EXPECT_NEAR(sum_of(image), mass, 1e-12 * mass);

  // The final stage (LOW-16) divides by the pixel area: sum * du * dv = mass.
  const double du = 4.0 / 5, dv = 4.0 / 3;
  KernelContext ctx;
  ctx.kernel = "uniform_slice_finalize";
  const std::vector<ConstBufferPtr> in{c.outputs[0]};
  std::vector<BufferPtr> out{test::make_buffer(ScalarType::f64, {3, 5})};
  const KernelParams fp = SliceFinalizeParams{du * dv};
  ctx.inputs = in;
  ctx.outputs = out;
  ctx.params = &fp;
  c.registry.find("uniform_slice_finalize").fn(ctx);
  EXPECT_NEAR(sum_of(test::values_of(*out[0])) * du * dv, mass, 1e-12 * mass);
}

TEST(CicProjection, NativeCellsMapOntoAlignedPixelsExactly_OPCIC2) {
  CicCase c;
  c.particles.add(0, 0, {{1.375, 1.8, 2.5, 2.0}});
  const std::vector<double> image = c.projection(projection_params({8, 8}));
  const auto [tu, iu] = stencil(1.375, 0.5);
  const auto [tv, iv] = stencil(1.8, 0.5);
  const auto at = [&](int i, int j) { return image[static_cast<std::size_t>(j * 8 + i)]; };
  EXPECT_DOUBLE_EQ(at(iu, iv), 2.0 * (1 - tu) * (1 - tv));
  EXPECT_DOUBLE_EQ(at(iu + 1, iv), 2.0 * tu * (1 - tv));
  EXPECT_DOUBLE_EQ(at(iu, iv + 1), 2.0 * (1 - tu) * tv);
  EXPECT_DOUBLE_EQ(at(iu + 1, iv + 1), 2.0 * tu * tv);
  EXPECT_NEAR(sum_of(image), 2.0, 1e-15);
}

TEST(CicProjection, SharesOutsideTheBlockAreKeptUnlessCoveredOrOutsideTheDomain_OPCIC2) {
  CicCase c;
  // Cells 3 and 4 along x: the second one belongs to block 1.
  c.particles.add(0, 0, {{1.9, 0.9, 0.5, 1.0}});
  const auto [tu, iu] = stencil(1.9, 0.5);
  const auto [tv, iv] = stencil(0.9, 0.5);
  ASSERT_EQ(iu, 3);
  std::vector<double> image = c.projection(projection_params());
  EXPECT_NEAR(sum_of(image), 1.0, 1e-15);
  EXPECT_DOUBLE_EQ(image[static_cast<std::size_t>(iv * 8 + 4)], tu * (1 - tv));

  // Coverage is level-wide: a covered cell in block 1 drops its share.
  c.covered = {box_of({4, iv, 0}, {4, iv, 0})};
  image = c.projection(projection_params());
  EXPECT_NEAR(sum_of(image), 1.0 - tu * (1 - tv), 1e-15);
  // ... but only on the particle's normal cell (the slab is per cell).
  c.covered = {box_of({4, iv, 1}, {4, iv, 3})};
  EXPECT_NEAR(sum_of(c.projection(projection_params())), 1.0, 1e-15);
  c.covered.clear();

  // Past the domain edge on a non-periodic axis the share is lost.
  c.particles.columns.clear();
  c.particles.add(0, 0, {{0.1, 0.9, 0.5, 1.0}});
  const auto [tu2, iu2] = stencil(0.1, 0.5);
  ASSERT_EQ(iu2, -1);
  EXPECT_NEAR(sum_of(c.projection(projection_params())), tu2, 1e-15);
}

TEST(CicProjection, PeriodicWrapKeepsMassAcrossTheBoundary_OPCIC2) {
  CicCase c({box_of({0, 0, 0}, {3, 7, 3}), box_of({4, 0, 0}, {7, 7, 3})}, {true, true, false});
  c.block = 1;
  c.particles.add(0, 1, {{3.9, 3.9, 0.5, 1.0}});
  const std::vector<double> image = c.projection(projection_params());
  EXPECT_NEAR(sum_of(image), 1.0, 1e-15);
  const auto [t, i] = stencil(3.9, 0.5);
  ASSERT_EQ(i, 7);
  EXPECT_DOUBLE_EQ(image[0], t * t);  // (8, 8) -> (0, 0)
  EXPECT_DOUBLE_EQ(image[7 * 8 + 7], (1 - t) * (1 - t));
  EXPECT_DOUBLE_EQ(image[7 * 8 + 0], t * (1 - t));  // (8, 7) -> (0, 7)
}

TEST(CicProjection, PixelsSpreadNativeCellsByOverlap_OPCIC2) {
  CicCase c;
  // A particle exactly at a cell center deposits everything on that cell
  // (cell 1 in x and y: [0.5, 1) x [0.5, 1)).
  c.particles.add(0, 0, {{0.75, 0.75, 0.5, 4.0}});
  // Pixels of 0.4 x 1.0 over [0, 4) x [0, 4).
  const std::vector<double> image = c.projection(projection_params({10, 4}));
  const auto at = [&](int i, int j) { return image[static_cast<std::size_t>(j * 10 + i)]; };
  // The cell spans pixel 1 ([0.4, 0.8)) by 0.3 and pixel 2 ([0.8, 1.2)) by
  // 0.2 along u, and lies in pixel row 0 along v.
  EXPECT_NEAR(at(1, 0), 4.0 * 0.3 * 0.5 / 0.25, 1e-14);
  EXPECT_NEAR(at(2, 0), 4.0 * 0.2 * 0.5 / 0.25, 1e-14);
  EXPECT_NEAR(sum_of(image), 4.0, 1e-14);
}

TEST(CicProjection, HintHoldsEveryDepositedPixel_OPCIC2) {
  CicCase c;
  std::vector<std::array<double, 4>> ps;
  for (int n = 0; n < 12; ++n)
    ps.push_back({0.6 + 0.1 * n, 1.1 + 0.07 * n, 0.5 + (n % 4), 1.0 + n});
  c.particles.add(0, 0, ps);
  for (const std::array<std::int64_t, 2> res :
       {std::array<std::int64_t, 2>{8, 8}, {5, 3}, {13, 11}}) {
    SCOPED_TRACE(testing::Message() << res[0] << " x " << res[1]);
    const std::vector<double> image = c.projection(projection_params(res));
    ASSERT_TRUE(c.outputs[0]->nonzero_rect().has_value());
    const NonzeroRect r = *c.outputs[0]->nonzero_rect();
    EXPECT_FALSE(r.empty());
    // The hint holds every deposited pixel and is no wider than the pixel
    // spans of the cells that received mass: here not the whole image.
    for (std::uint64_t j = 0; j < static_cast<std::uint64_t>(res[1]); ++j) {
      for (std::uint64_t i = 0; i < static_cast<std::uint64_t>(res[0]); ++i) {
        if (image[j * static_cast<std::uint64_t>(res[0]) + i] == 0.0) continue;
        EXPECT_TRUE(j >= r.row_begin && j < r.row_end && i >= r.col_begin && i < r.col_end)
            << i << "," << j;
      }
    }
    EXPECT_LT((r.row_end - r.row_begin) * (r.col_end - r.col_begin),
              static_cast<std::uint64_t>(res[0] * res[1]));
  }
  // Nothing deposited (the only particle lies beyond the slab): an empty hint
  // over an all-zero image.
  c.particles.columns.clear();
  c.particles.add(0, 0, {{2.0, 2.0, 9.5, 1.0}});
  const std::vector<double> empty = c.projection(projection_params());
  EXPECT_TRUE(c.outputs[0]->nonzero_rect()->empty());
  EXPECT_EQ(sum_of(empty), 0.0);
}

TEST(CicProjection, ParameterChecks_OPCIC2_OPGEN3) {
  CicCase c;
  c.particles.add(0, 0, {{1.0, 1.0, 0.5, 1.0}});
  ParticleCicProjectionParams p = projection_params();
  p.resolution = {0, 4};
  c.params = p;
  c.outputs = {test::make_buffer(ScalarType::f64, {4, 1})};
  EXPECT_TRUE(throws_with([&] { c.run("particle_cic_projection_accumulate"); },
                          "particle_cic_projection_accumulate: invalid parameters: resolution"));
  p = projection_params();
  p.particle_type.clear();
  EXPECT_TRUE(
      throws_with([&] { (void)c.projection(p); }, "invalid parameters: empty particle_type"));
  p = projection_params();
  p.axis = -1;
  EXPECT_TRUE(throws_with([&] { (void)c.projection(p); }, "invalid parameters: axis"));
  p = projection_params({8, 8}, {0.0, 1.0, 0.0, 3.0});
  EXPECT_TRUE(throws_with([&] { (void)c.projection(p); }, "invalid parameters: zero pixel size"));
  c.particles.grids_match = false;
  EXPECT_TRUE(throws_with([&] { (void)c.projection(projection_params()); },
                          "particle grids do not match mesh blocks on level 0"));
}

}  // namespace
}  // namespace kangaroo
