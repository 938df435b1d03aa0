// Mesh kernels: field_expr / mesh_compare / mesh_mask_and (OP-EXPR-1..5),
// uniform_slice (OP-USLICE-1), uniform_slice_cellavg_accumulate (OP-SLICE-1)
// and uniform_projection_accumulate (OP-PROJ-1).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "kernel_harness.h"

namespace kangaroo {
namespace {

using test::box_of;
using test::KernelHarness;
using test::make_filled;
using test::make_fortran;
using test::make_grid;
using test::throws_with;
using test::values_of;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

std::vector<double> ramp(std::size_t n, double scale, double offset) {
  std::vector<double> v(n);
  for (std::size_t p = 0; p < n; ++p)
    v[p] = scale * static_cast<double>(p) + offset;
  return v;
}

FieldExprParams expr_params(std::string expression, std::vector<std::string> variables) {
  FieldExprParams p;
  p.expression = std::move(expression);
  p.variables = std::move(variables);
  return p;
}

// --- field_expr ---------------------------------------------------------------

TEST(FieldExpr, EvaluatesElementwiseInCOrder_OP_EXPR_1) {
  KernelHarness h;
  const auto a = ramp(24, 0.5, -3.0);
  const auto b = ramp(24, -0.25, 2.0);
  h.inputs = {make_filled(ScalarType::f64, {2, 3, 4}, a),
              make_filled(ScalarType::f64, {2, 3, 4}, b)};
  h.outputs = {test::make_buffer(ScalarType::f64, {2, 3, 4})};
  h.params = expr_params("a * b + 1", {"a", "b"});
  h.run("field_expr");
  const auto out = values_of(*h.outputs[0]);
  for (std::size_t p = 0; p < 24; ++p)
    EXPECT_EQ(out[p], a[p] * b[p] + 1.0) << p;
}

TEST(FieldExpr, MixedLayoutsAndTypesMapByLogicalIndex_OP_EXPR_1) {
  KernelHarness h;
  // Logical element p of each input is what the expression sees, whether the
  // storage is C order, Fortran order (AMReX FABs) or f32.
  const auto a = ramp(60, 1.0, 0.0);
  const auto b = ramp(60, 0.5, 10.0);
  const auto c = ramp(60, -2.0, 7.0);
  h.inputs = {make_fortran(ScalarType::f64, {3, 4, 5}, a),
              make_filled(ScalarType::f32, {3, 4, 5}, b),
              make_fortran(ScalarType::f32, {3, 4, 5}, c)};
  h.outputs = {Buffer::allocate(
      Descriptor::fortran_order(ScalarType::f32, std::vector<std::uint64_t>{3, 4, 5}),
      InitPolicy::zero)};
  h.params = expr_params("a - b * c", {"a", "b", "c"});
  h.run("field_expr");
  const auto out = values_of(*h.outputs[0]);
  for (std::size_t p = 0; p < 60; ++p) {
    const double expected = a[p] - static_cast<double>(static_cast<float>(b[p])) *
                                       static_cast<double>(static_cast<float>(c[p]));
    EXPECT_EQ(out[p], static_cast<double>(static_cast<float>(expected))) << p;
  }
}

TEST(FieldExpr, LargeInputsCrossStagingBlocks_OP_EXPR_1) {
  KernelHarness h;
  const std::size_t n = 20 * 20 * 21;
  const auto a = ramp(n, 0.001, -4.0);
  h.inputs = {make_filled(ScalarType::f32, {20, 20, 21}, a)};
  h.outputs = {test::make_buffer(ScalarType::f64, {20, 20, 21})};
  h.params = expr_params("if(x < 0, -x, x ** 2)", {"x"});
  h.run("field_expr");
  const auto out = values_of(*h.outputs[0]);
  for (std::size_t p = 0; p < n; ++p) {
    const double x = static_cast<double>(static_cast<float>(a[p]));
    ASSERT_EQ(out[p], x < 0 ? -x : x * x) << p;
  }
}

TEST(FieldExpr, OutputMayHaveAnotherRankWithSameElementCount_OP_EXPR_1) {
  KernelHarness h;
  const auto a = ramp(6, 1.0, 1.0);
  h.inputs = {make_filled(ScalarType::f64, {6}, a)};
  h.outputs = {test::make_buffer(ScalarType::f64, {2, 3})};
  h.params = expr_params("a / 2", {"a"});
  h.run("field_expr");
  EXPECT_EQ(values_of(*h.outputs[0]), (std::vector<double>{0.5, 1.0, 1.5, 2.0, 2.5, 3.0}));
}

TEST(FieldExpr, NonFiniteValuesFollowIeee_OP_EXPR_1) {
  KernelHarness h;
  h.inputs = {make_filled(ScalarType::f64, {4}, {0.0, kNaN, kInf, -1.0})};
  h.outputs = {test::make_buffer(ScalarType::f64, {4})};
  h.params = expr_params("1 / a + sqrt(a)", {"a"});
  h.run("field_expr");
  const auto out = values_of(*h.outputs[0]);
  EXPECT_EQ(out[0], kInf);
  EXPECT_TRUE(std::isnan(out[1]));
  EXPECT_EQ(out[2], kInf);
  EXPECT_TRUE(std::isnan(out[3]));
}

TEST(FieldExprErrors, ContractViolations_OP_EXPR_3_ERR_35) {
  auto run_with = [](std::vector<ConstBufferPtr> inputs, BufferPtr output, FieldExprParams params) {
    KernelHarness h;
    h.inputs = std::move(inputs);
    h.outputs = {std::move(output)};
    h.params = std::move(params);
    h.run("field_expr");
  };
  auto f64 = [](std::vector<std::uint64_t> ext) {
    return test::make_buffer(ScalarType::f64, std::move(ext));
  };

  EXPECT_TRUE(throws_with(
      [&] {
        run_with({f64({4}), f64({4})}, f64({4}), expr_params("a", {"a"}));
      },
      "field_expr variables/input size mismatch"));
  EXPECT_TRUE(throws_with(
      [&] {
        run_with({f64({4})}, f64({4}), expr_params("a + b", {"a", "b"}));
      },
      "field_expr variables/input size mismatch"));
  std::vector<std::string> nine{"a", "b", "c", "d", "e", "f", "g", "h", "i"};
  std::vector<ConstBufferPtr> nine_inputs(9, f64({4}));
  EXPECT_TRUE(throws_with([&] { run_with(nine_inputs, f64({4}), expr_params("a", nine)); },
                          "at most 8 variables"));
  EXPECT_TRUE(throws_with([&] { run_with({f64({4})}, f64({4}), expr_params("", {"a"})); },
                          "field_expr: invalid parameters: empty expression"));
  EXPECT_TRUE(throws_with([&] { run_with({}, f64({4}), expr_params("1", {})); }, "no variables"));
  EXPECT_TRUE(
      throws_with([&] { run_with({f64({4})}, f64({4}), expr_params("a", {""})); }, "empty name"));
  EXPECT_TRUE(throws_with(
      [&] {
        run_with({test::make_buffer(ScalarType::u8, {4})}, f64({4}), expr_params("a", {"a"}));
      },
      "real-buffer visitor accepts only f32 and f64 inputs"));
  EXPECT_TRUE(throws_with(
      [&] {
        run_with({test::make_buffer(ScalarType::i64, {4})}, f64({4}), expr_params("a", {"a"}));
      },
      "real-buffer visitor accepts only f32 and f64 inputs"));
  EXPECT_TRUE(throws_with(
      [&] {
        run_with({f64({4}), f64({2, 2})}, f64({4}), expr_params("a+b", {"a", "b"}));
      },
      "identical rank and extents"));
  EXPECT_TRUE(throws_with(
      [&] {
        run_with({f64({4}), f64({5})}, f64({4}), expr_params("a+b", {"a", "b"}));
      },
      "identical rank and extents"));
  EXPECT_TRUE(throws_with(
      [&] {
        run_with({f64({4})}, test::make_buffer(ScalarType::u8, {4}), expr_params("a", {"a"}));
      },
      "field expression output must be f32 or f64"));
  EXPECT_TRUE(throws_with([&] { run_with({f64({4})}, f64({5}), expr_params("a", {"a"})); },
                          "holds 5 elements"));
  EXPECT_TRUE(throws_with([&] { run_with({f64({4})}, f64({4}), expr_params("a +", {"a"})); },
                          "field_expr parse failed"));
  EXPECT_TRUE(throws_with([&] { run_with({f64({4})}, f64({4}), expr_params("a * inf", {"a"})); },
                          "non-finite literal"));
}

TEST(FieldExprErrors, WrongParameterAlternativeOrMissingOutput_OP_GEN_3) {
  KernelHarness h;
  h.inputs = {test::make_buffer(ScalarType::f64, {4})};
  h.outputs = {test::make_buffer(ScalarType::f64, {4})};
  h.params = ScalarParams{};
  EXPECT_TRUE(throws_with([&] { h.run("field_expr"); }, "field_expr: invalid parameters"));
  h.params = expr_params("a", {"a"});
  h.outputs.clear();
  EXPECT_TRUE(throws_with([&] { h.run("field_expr"); },
                          "field_expr: invalid parameters: missing output 0"));
}

// --- mesh_compare / mesh_mask_and ----------------------------------------------

TEST(MeshCompare, WritesOneWhereExpressionIsNonZero_OP_EXPR_4) {
  KernelHarness h;
  const std::vector<double> a{-1.0, 0.5, 2.0, kNaN, 0.75, 3.0};
  const std::vector<double> b{0.0, 0.5, 1.0, 1.0, kNaN, 3.5};
  h.inputs = {make_filled(ScalarType::f64, {2, 3}, a), make_filled(ScalarType::f32, {2, 3}, b)};
  h.outputs = {test::make_buffer(ScalarType::u8, {2, 3})};
  h.params = expr_params("a >= b", {"a", "b"});
  h.run("mesh_compare");
  EXPECT_EQ(values_of(*h.outputs[0]), (std::vector<double>{0, 1, 1, 0, 0, 0}));

  // A value expression: non-zero (NaN included) maps to 1.
  h.params = expr_params("a - b", {"a", "b"});
  h.run("mesh_compare");
  EXPECT_EQ(values_of(*h.outputs[0]), (std::vector<double>{1, 0, 1, 1, 1, 1}));
}

TEST(MeshCompare, OutputMustBeU8_OP_EXPR_4) {
  KernelHarness h;
  h.inputs = {test::make_buffer(ScalarType::f64, {3})};
  h.outputs = {test::make_buffer(ScalarType::f64, {3})};
  h.params = expr_params("a > 0", {"a"});
  EXPECT_TRUE(throws_with([&] { h.run("mesh_compare"); }, "mesh_compare output must be u8"));
  h.outputs = {test::make_buffer(ScalarType::u8, {3})};
  h.inputs = {test::make_buffer(ScalarType::f64, {3}), test::make_buffer(ScalarType::f64, {3})};
  EXPECT_TRUE(
      throws_with([&] { h.run("mesh_compare"); }, "field_expr variables/input size mismatch"));
}

TEST(MeshMaskAnd, AnyNonZeroByteIsTrue_OP_EXPR_5) {
  KernelHarness h;
  h.inputs = {make_filled(ScalarType::u8, {2, 2}, {0, 1, 7, 255}),
              make_filled(ScalarType::u8, {2, 2}, {9, 0, 3, 1})};
  h.outputs = {test::make_filled(ScalarType::u8, {2, 2}, {5, 5, 5, 5})};
  h.run("mesh_mask_and");
  EXPECT_EQ(values_of(*h.outputs[0]), (std::vector<double>{0, 0, 1, 1}));
}

TEST(MeshMaskAnd, ContractViolations_OP_EXPR_5) {
  KernelHarness h;
  auto u8 = [](std::vector<std::uint64_t> e) {
    return test::make_buffer(ScalarType::u8, std::move(e));
  };
  h.inputs = {u8({4})};
  h.outputs = {u8({4})};
  EXPECT_TRUE(throws_with([&] { h.run("mesh_mask_and"); }, "mesh_mask_and: invalid parameters"));
  h.inputs = {u8({4}), u8({2, 2})};
  EXPECT_TRUE(throws_with([&] { h.run("mesh_mask_and"); }, "identical rank and extents"));
  h.inputs = {u8({4}), u8({4})};
  h.outputs = {u8({5})};
  EXPECT_TRUE(throws_with([&] { h.run("mesh_mask_and"); }, "identical rank and extents"));
  h.outputs = {test::make_buffer(ScalarType::f64, {4})};
  EXPECT_TRUE(throws_with([&] { h.run("mesh_mask_and"); }, "masks must be u8"));
  h.outputs = {u8({4})};
  h.inputs = {u8({4}), test::make_buffer(ScalarType::f64, {4})};
  EXPECT_TRUE(throws_with([&] { h.run("mesh_mask_and"); }, "masks must be u8"));
}

// --- slices and projections: brute-force references -----------------------------

// Geometry with anisotropic cells, a shifted origin and a non-zero index origin
// so that every COORD-1 term matters.
LevelGeom test_geom() {
  LevelGeom g;
  g.dx = {0.5, 0.25, 2.0};
  g.x0 = {-1.0, 0.5, 3.0};
  g.index_origin = {2, -1, 0};
  return g;
}

// Block cells: x in [0, 3), y in [0.75, 2.25), z in [5, 11).
IndexBox test_box() {
  return box_of({4, 0, 1}, {9, 5, 3});
}

double cell_value(int i, int j, int k) {
  return 100.0 * i + 10.0 * j + k + 0.5;
}

double low_edge(const LevelGeom& g, int axis, long index) {
  return g.x0[axis] + static_cast<double>(index - g.index_origin[axis]) * g.dx[axis];
}

int plane_u(int axis) {
  return axis == 0 ? 1 : 0;
}
int plane_v(int axis) {
  return axis == 2 ? 1 : 2;
}

struct Image {
  std::vector<double> sum;
  std::vector<double> area;
};

// Every (cell, pixel) pair, with overlaps computed from rectangle edges only:
// no pixel-range arithmetic is shared with the kernel.
Image brute_force(const LevelGeom& g, const IndexBox& box, int axis,
                  const std::function<bool(long)>& in_slab, const std::array<double, 4>& rect,
                  int nu, int nv, const std::vector<IndexBox>& covered,
                  const std::function<double(long)>& normal_weight) {
  const int ua = plane_u(axis), va = plane_v(axis);
  const double umin = std::min(rect[0], rect[2]), umax = std::max(rect[0], rect[2]);
  const double vmin = std::min(rect[1], rect[3]), vmax = std::max(rect[1], rect[3]);
  const double du = (umax - umin) / nu, dv = (vmax - vmin) / nv;
  Image img{std::vector<double>(static_cast<std::size_t>(nu * nv), 0.0),
            std::vector<double>(static_cast<std::size_t>(nu * nv), 0.0)};
  for (int i = box.lo[0]; i <= box.hi[0]; ++i) {
    for (int j = box.lo[1]; j <= box.hi[1]; ++j) {
      for (int k = box.lo[2]; k <= box.hi[2]; ++k) {
        const long idx[3] = {i, j, k};
        if (!in_slab(idx[axis])) continue;
        if (is_covered(covered, i, j, k)) continue;
        const double w = normal_weight(idx[axis]);
        if (!(w > 0.0)) continue;
        const double u0 = low_edge(g, ua, idx[ua]), u1 = low_edge(g, ua, idx[ua] + 1);
        const double v0 = low_edge(g, va, idx[va]), v1 = low_edge(g, va, idx[va] + 1);
        for (int pj = 0; pj < nv; ++pj) {
          const double ov = std::min(v1, vmin + (pj + 1) * dv) - std::max(v0, vmin + pj * dv);
          if (ov <= 0) continue;
          for (int pi = 0; pi < nu; ++pi) {
            const double ou = std::min(u1, umin + (pi + 1) * du) - std::max(u0, umin + pi * du);
            if (ou <= 0) continue;
            img.sum[static_cast<std::size_t>(pj * nu + pi)] += cell_value(i, j, k) * ou * ov * w;
            img.area[static_cast<std::size_t>(pj * nu + pi)] += ou * ov;
          }
        }
      }
    }
  }
  return img;
}

void expect_images_near(const std::vector<double>& got, const std::vector<double>& want,
                        const char* what) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t p = 0; p < got.size(); ++p) {
    EXPECT_NEAR(got[p], want[p], 1e-11 * (1.0 + std::fabs(want[p]))) << what << " pixel " << p;
  }
}

UniformSliceCellParams slice_params(int axis, double coord, std::array<double, 4> rect, int nu,
                                    int nv) {
  UniformSliceCellParams p;
  p.axis = axis;
  p.coord = coord;
  p.rect = rect;
  p.resolution = {nu, nv};
  return p;
}

KernelHarness slice_harness(int nu, int nv, ScalarType input = ScalarType::f64) {
  KernelHarness h(test_geom(), {box_of({0, 0, 0}, {1, 1, 1}), test_box()});
  h.block = 1;
  h.inputs = {make_grid(test_box(), cell_value, input)};
  // Garbage, so the kernel's own zero-fill is observable.
  h.outputs = {
      make_filled(ScalarType::f64, {static_cast<std::uint64_t>(nv), static_cast<std::uint64_t>(nu)},
                  std::vector<double>(static_cast<std::size_t>(nu * nv), 7.0)),
      make_filled(ScalarType::f64, {static_cast<std::uint64_t>(nv), static_cast<std::uint64_t>(nu)},
                  std::vector<double>(static_cast<std::size_t>(nu * nv), 7.0))};
  return h;
}

struct SliceCase {
  int axis;
  double coord;
  long plane;  // COORD-2 of coord on the test geometry
  std::array<double, 4> rect;
};

const SliceCase kSliceCases[] = {
    {2, 7.3, 2, {-0.3, 0.6, 3.4, 2.5}},   // u = x, v = y
    {2, 7.3, 2, {3.4, 2.5, -0.3, 0.6}},   // same rect given reversed (AXIS-3)
    {0, 1.1, 6, {0.6, 4.0, 2.4, 11.5}},   // u = y, v = z
    {1, 1.3, 2, {-0.4, 4.5, 2.7, 12.2}},  // u = x, v = z
};

TEST(SliceCellAvg, MatchesBruteForceOverlapOnEveryAxis_OP_SLICE_1) {
  for (const auto& c : kSliceCases) {
    SCOPED_TRACE(testing::Message()
                 << "axis " << c.axis << " rect " << c.rect[0] << "," << c.rect[1]);
    auto h = slice_harness(7, 5);
    h.params = slice_params(c.axis, c.coord, c.rect, 7, 5);
    h.run("uniform_slice_cellavg_accumulate");
    const auto want = brute_force(
        test_geom(), test_box(), c.axis, [&](long n) { return n == c.plane; }, c.rect, 7, 5, {},
        [](long) { return 1.0; });
    expect_images_near(values_of(*h.outputs[0]), want.sum, "sum");
    expect_images_near(values_of(*h.outputs[1]), want.area, "area");
    // Non-trivial: something was sampled and something was not.
    const auto area = values_of(*h.outputs[1]);
    EXPECT_GT(*std::max_element(area.begin(), area.end()), 0.0) << c.axis;
  }
}

TEST(SliceCellAvg, PlaneIndexOverridesCoord_OP_SLICE_1) {
  auto h = slice_harness(6, 4);
  auto p = slice_params(2, -1000.0, {0.0, 0.75, 3.0, 2.25}, 6, 4);
  p.plane_index = 3;
  h.params = p;
  h.run("uniform_slice_cellavg_accumulate");
  const auto want = brute_force(
      test_geom(), test_box(), 2, [](long n) { return n == 3; }, p.rect, 6, 4, {},
      [](long) { return 1.0; });
  expect_images_near(values_of(*h.outputs[0]), want.sum, "sum");
}

TEST(SliceCellAvg, PixelsInsideOneCellAverageToThatCell_OP_SLICE_2) {
  // 6 x 6 pixels over exactly the block's x-y footprint: each pixel is one
  // cell (du = dx = 0.5, dv = dy = 0.25), so sum / area is that cell's value
  // and area is the pixel area.
  auto h = slice_harness(6, 6);
  h.params = slice_params(2, 5.0, {0.0, 0.75, 3.0, 2.25}, 6, 6);  // z = 5 -> k = 1
  h.run("uniform_slice_cellavg_accumulate");
  const auto sum = values_of(*h.outputs[0]);
  const auto area = values_of(*h.outputs[1]);
  for (int pj = 0; pj < 6; ++pj) {
    for (int pi = 0; pi < 6; ++pi) {
      const std::size_t p = static_cast<std::size_t>(pj * 6 + pi);
      EXPECT_DOUBLE_EQ(area[p], 0.5 * 0.25);
      EXPECT_DOUBLE_EQ(sum[p] / area[p], cell_value(4 + pi, pj, 1)) << pi << "," << pj;
    }
  }
}

TEST(SliceCellAvg, RectBeyondBlockSamplesPartOfThePixel_OP_SLICE_1) {
  // One pixel spanning x in [-1, 5), y in [0, 3): the block covers
  // [0, 3) x [0.75, 2.25), i.e. an area of 4.5.
  auto h = slice_harness(1, 1);
  h.params = slice_params(2, 9.9, {-1.0, 0.0, 5.0, 3.0}, 1, 1);  // k = 3
  h.run("uniform_slice_cellavg_accumulate");
  EXPECT_NEAR(values_of(*h.outputs[1])[0], 4.5, 1e-12);
  double expected = 0.0;
  for (int i = 4; i <= 9; ++i) {
    for (int j = 0; j <= 5; ++j)
      expected += cell_value(i, j, 3) * 0.5 * 0.25;
  }
  EXPECT_NEAR(values_of(*h.outputs[0])[0], expected, 1e-9);
}

TEST(SliceCellAvg, CoveredCellsAreExcluded_OP_SLICE_1_COV_2) {
  const std::vector<IndexBox> covered{box_of({5, 1, 2}, {6, 3, 2}), box_of({4, 0, 3}, {9, 5, 3}),
                                      box_of({100, 100, 2}, {101, 101, 2})};
  auto h = slice_harness(7, 5);
  h.covered = covered;
  h.params = slice_params(2, 7.3, kSliceCases[0].rect, 7, 5);
  h.run("uniform_slice_cellavg_accumulate");
  const auto want = brute_force(
      test_geom(), test_box(), 2, [](long n) { return n == 2; }, kSliceCases[0].rect, 7, 5, covered,
      [](long) { return 1.0; });
  expect_images_near(values_of(*h.outputs[0]), want.sum, "sum");
  expect_images_near(values_of(*h.outputs[1]), want.area, "area");
  // The masked cells really were in view: without coverage the area differs.
  const auto uncovered = brute_force(
      test_geom(), test_box(), 2, [](long n) { return n == 2; }, kSliceCases[0].rect, 7, 5, {},
      [](long) { return 1.0; });
  EXPECT_NE(want.area, uncovered.area);
}

TEST(SliceCellAvg, PlaneOutsideBlockLeavesZeroedOutputs_OP_SLICE_1) {
  for (double coord : {4.9, 11.0, -50.0}) {
    auto h = slice_harness(3, 2);
    h.params = slice_params(2, coord, {0.0, 0.75, 3.0, 2.25}, 3, 2);
    h.run("uniform_slice_cellavg_accumulate");
    EXPECT_EQ(values_of(*h.outputs[0]), std::vector<double>(6, 0.0)) << coord;
    EXPECT_EQ(values_of(*h.outputs[1]), std::vector<double>(6, 0.0)) << coord;
  }
}

TEST(SliceCellAvg, F32InputIsReadAsFloat64_OP_GEN_1) {
  auto h = slice_harness(6, 6, ScalarType::f32);
  h.params = slice_params(2, 5.0, {0.0, 0.75, 3.0, 2.25}, 6, 6);
  h.run("uniform_slice_cellavg_accumulate");
  const auto sum = values_of(*h.outputs[0]);
  EXPECT_DOUBLE_EQ(sum[0] / (0.5 * 0.25),
                   static_cast<double>(static_cast<float>(cell_value(4, 0, 1))));
}

TEST(SliceCellAvgErrors, InvalidParametersAndBuffers_OP_GEN_3) {
  const char* kName = "uniform_slice_cellavg_accumulate";
  auto expect_fail = [&](const std::function<void(KernelHarness&)>& tweak, const char* needle) {
    auto h = slice_harness(4, 3);
    h.params = slice_params(2, 7.3, {0.0, 0.75, 3.0, 2.25}, 4, 3);
    tweak(h);
    EXPECT_TRUE(throws_with([&] { h.run(kName); }, needle)) << needle;
  };
  expect_fail(
      [](KernelHarness& h) {
        std::get<UniformSliceCellParams>(h.params).resolution = {0, 3};
      },
      "uniform_slice_cellavg_accumulate: invalid parameters: resolution");
  expect_fail(
      [](KernelHarness& h) {
        std::get<UniformSliceCellParams>(h.params).resolution = {4, -3};
      },
      "invalid parameters: resolution");
  expect_fail(
      [](KernelHarness& h) {
        std::get<UniformSliceCellParams>(h.params).rect = {1.0, 0.0, 1.0, 2.0};
      },
      "invalid parameters: zero pixel size");
  expect_fail(
      [](KernelHarness& h) {
        std::get<UniformSliceCellParams>(h.params).rect = {0.0, kNaN, 1.0, 2.0};
      },
      "invalid parameters: rect must be finite");
  expect_fail([](KernelHarness& h) { std::get<UniformSliceCellParams>(h.params).axis = 3; },
              "invalid parameters: axis");
  expect_fail([](KernelHarness& h) { std::get<UniformSliceCellParams>(h.params).coord = kNaN; },
              "invalid parameters: coord must be finite");
  expect_fail([](KernelHarness& h) { h.block = 7; }, "invalid parameters: block 7 is out of range");
  expect_fail([](KernelHarness& h) { h.outputs.pop_back(); },
              "invalid parameters: missing output 1");
  expect_fail([](KernelHarness& h) { h.inputs.clear(); }, "invalid parameters: missing input 0");
  expect_fail(
      [](KernelHarness& h) {
        h.outputs[0] = test::make_buffer(ScalarType::f64, {4, 3});
      },
      "is not an image of shape (3, 4)");
  expect_fail(
      [](KernelHarness& h) {
        h.outputs[1] = test::make_buffer(ScalarType::f32, {3, 4});
      },
      "output 1 must be f64");
  expect_fail(
      [](KernelHarness& h) {
        h.inputs[0] = test::make_buffer(ScalarType::f64, {6, 6, 4});
      },
      "is not a block grid");
  expect_fail(
      [](KernelHarness& h) {
        h.inputs[0] = make_grid(
            test_box(), [](int, int, int) { return 1.0; }, ScalarType::u8);
      },
      "real-buffer visitor accepts only f32 and f64 inputs");
  expect_fail([](KernelHarness& h) { h.params = UniformSliceParams{}; }, "invalid parameters");
}

// --- projection ---------------------------------------------------------------------

UniformProjectionParams projection_params(int axis, std::array<double, 2> bounds,
                                          std::array<double, 4> rect, int nu, int nv) {
  UniformProjectionParams p;
  p.axis = axis;
  p.axis_bounds = bounds;
  p.rect = rect;
  p.resolution = {nu, nv};
  return p;
}

KernelHarness projection_harness(int nu, int nv) {
  auto h = slice_harness(nu, nv);
  h.outputs.pop_back();
  return h;
}

// Overlap of cell `n` on `axis` with [lo, hi].
std::function<double(long)> slab_overlap(int axis, double lo, double hi) {
  return [axis, lo, hi](long n) {
    const LevelGeom g = test_geom();
    return std::min(low_edge(g, axis, n + 1), hi) - std::max(low_edge(g, axis, n), lo);
  };
}

TEST(Projection, MatchesBruteForceOnEveryAxis_OP_PROJ_1) {
  struct Case {
    int axis;
    std::array<double, 2> bounds;
    std::array<double, 4> rect;
  };
  const Case cases[] = {
      {2, {6.2, 9.1}, {-0.3, 0.6, 3.4, 2.5}},
      {2, {9.1, 6.2}, {3.4, 2.5, -0.3, 0.6}},  // both given in reverse order
      {0, {0.7, 2.2}, {0.6, 4.0, 2.4, 11.5}},
      {1, {-5.0, 1.6}, {0.2, 4.5, 2.7, 10.2}},
  };
  for (const auto& c : cases) {
    auto h = projection_harness(7, 5);
    h.params = projection_params(c.axis, c.bounds, c.rect, 7, 5);
    h.run("uniform_projection_accumulate");
    const double lo = std::min(c.bounds[0], c.bounds[1]), hi = std::max(c.bounds[0], c.bounds[1]);
    const auto want = brute_force(
        test_geom(), test_box(), c.axis, [](long) { return true; }, c.rect, 7, 5, {},
        slab_overlap(c.axis, lo, hi));
    expect_images_near(values_of(*h.outputs[0]), want.sum, "projection");
  }
}

TEST(Projection, PixelSumsIntegrateTheFieldOverTheSlab_OP_PROJ_2) {
  // With a rect enclosing the block, the pixels sum to the volume integral of
  // the field over the slab, independent of the pixel grid.
  auto h = projection_harness(5, 3);
  h.params = projection_params(2, {6.0, 10.0}, {-0.5, 0.5, 3.5, 2.5}, 5, 3);
  h.run("uniform_projection_accumulate");
  const auto image = values_of(*h.outputs[0]);
  double total = 0.0;
  for (double v : image)
    total += v;
  double expected = 0.0;
  for (int i = 4; i <= 9; ++i) {
    for (int j = 0; j <= 5; ++j) {
      // k = 1: z in [5, 7) -> 1 inside [6, 10]; k = 2: [7, 9) -> 2; k = 3: [9, 11) -> 1.
      expected +=
          0.5 * 0.25 *
          (cell_value(i, j, 1) * 1.0 + cell_value(i, j, 2) * 2.0 + cell_value(i, j, 3) * 1.0);
    }
  }
  EXPECT_NEAR(total, expected, 1e-9 * expected);
}

TEST(Projection, CoveredCellsAreExcluded_OP_PROJ_1_COV_2) {
  const std::vector<IndexBox> covered{box_of({5, 1, 2}, {6, 3, 3}), box_of({0, 0, 0}, {4, 0, 1})};
  auto h = projection_harness(7, 5);
  h.covered = covered;
  h.params = projection_params(2, {4.0, 12.0}, kSliceCases[0].rect, 7, 5);
  h.run("uniform_projection_accumulate");
  const auto want = brute_force(
      test_geom(), test_box(), 2, [](long) { return true; }, kSliceCases[0].rect, 7, 5, covered,
      slab_overlap(2, 4.0, 12.0));
  expect_images_near(values_of(*h.outputs[0]), want.sum, "projection");
  const auto unmasked = brute_force(
      test_geom(), test_box(), 2, [](long) { return true; }, kSliceCases[0].rect, 7, 5, {},
      slab_overlap(2, 4.0, 12.0));
  EXPECT_NE(want.sum, unmasked.sum);
}

TEST(Projection, SlabMissingTheBlockGivesZeros_OP_PROJ_1) {
  auto h = projection_harness(3, 3);
  h.params = projection_params(2, {11.0, 20.0}, {0.0, 0.75, 3.0, 2.25}, 3, 3);
  h.run("uniform_projection_accumulate");
  EXPECT_EQ(values_of(*h.outputs[0]), std::vector<double>(9, 0.0));
}

TEST(ProjectionErrors, InvalidParameters_OP_GEN_3) {
  auto h = projection_harness(3, 3);
  h.params = projection_params(2, {5.0, 5.0}, {0.0, 0.75, 3.0, 2.25}, 3, 3);
  EXPECT_TRUE(throws_with([&] { h.run("uniform_projection_accumulate"); },
                          "uniform_projection_accumulate: invalid parameters: axis_bounds"));
  h.params = projection_params(2, {5.0, kInf}, {0.0, 0.75, 3.0, 2.25}, 3, 3);
  EXPECT_TRUE(throws_with([&] { h.run("uniform_projection_accumulate"); },
                          "invalid parameters: axis_bounds"));
  h.params = projection_params(2, {5.0, 6.0}, {0.0, 0.75, 3.0, 2.25}, 3, 0);
  EXPECT_TRUE(throws_with([&] { h.run("uniform_projection_accumulate"); },
                          "invalid parameters: resolution"));
  h.params = projection_params(-1, {5.0, 6.0}, {0.0, 0.75, 3.0, 2.25}, 3, 3);
  EXPECT_TRUE(
      throws_with([&] { h.run("uniform_projection_accumulate"); }, "invalid parameters: axis"));
  h.params = projection_params(2, {5.0, 6.0}, {0.0, 0.75, 3.0, 2.25}, 3, 3);
  h.outputs = {test::make_buffer(ScalarType::f32, {3, 3})};
  EXPECT_TRUE(throws_with([&] { h.run("uniform_projection_accumulate"); }, "output 0 must be f64"));
}

// The test block's cell values stored in Fortran order (x fastest), as AMReX
// FABs are.
BufferPtr fortran_grid(const IndexBox& box) {
  std::vector<double> values;
  for (int i = box.lo[0]; i <= box.hi[0]; ++i) {
    for (int j = box.lo[1]; j <= box.hi[1]; ++j) {
      for (int k = box.lo[2]; k <= box.hi[2]; ++k)
        values.push_back(cell_value(i, j, k));
    }
  }
  return make_fortran(ScalarType::f64,
                      {static_cast<std::uint64_t>(box.extent(0)),
                       static_cast<std::uint64_t>(box.extent(1)),
                       static_cast<std::uint64_t>(box.extent(2))},
                      values);
}

struct LayoutCase {
  int axis;
  std::array<double, 2> bounds;
  std::array<double, 4> rect;
};

// The normal axis is the unit-stride one in one layout and not in the other,
// so both integration paths are exercised.
const LayoutCase kLayoutCases[] = {
    {2, {6.2, 9.1}, {-0.3, 0.6, 3.4, 2.5}},
    {0, {0.7, 2.2}, {0.6, 4.0, 2.4, 11.5}},
    {1, {-5.0, 1.6}, {0.2, 4.5, 2.7, 10.2}},
};

TEST(Projection, FortranAndCOrderInputsAgree_OP_PROJ_1_OP_GEN_1) {
  for (const auto& c : kLayoutCases) {
    SCOPED_TRACE(testing::Message() << "axis " << c.axis);
    auto hc = projection_harness(7, 5);
    hc.params = projection_params(c.axis, c.bounds, c.rect, 7, 5);
    hc.run("uniform_projection_accumulate");
    auto hf = projection_harness(7, 5);
    hf.inputs = {fortran_grid(test_box())};
    hf.params = hc.params;
    hf.run("uniform_projection_accumulate");
    const auto a = values_of(*hc.outputs[0]);
    const auto b = values_of(*hf.outputs[0]);
    ASSERT_EQ(a.size(), b.size());
    for (std::size_t p = 0; p < a.size(); ++p)
      EXPECT_NEAR(a[p], b[p], 1e-12 * std::fabs(a[p])) << p;
    const auto want = brute_force(
        test_geom(), test_box(), c.axis, [](long) { return true; }, c.rect, 7, 5, {},
        slab_overlap(c.axis, c.bounds[0], c.bounds[1]));
    expect_images_near(b, want.sum, "fortran projection");
    EXPECT_GT(*std::max_element(b.begin(), b.end()), 0.0);
  }
}

TEST(Projection, PartialCoverageInsideTheBlock_OP_PROJ_1_COV_2) {
  // Boxes that cover some cells of some lines in every direction, one of
  // them only partly inside the block.
  const std::vector<IndexBox> covered{box_of({5, 1, 2}, {7, 3, 2}), box_of({8, 4, 1}, {20, 4, 3}),
                                      box_of({6, 5, 3}, {6, 5, 3})};
  for (const auto& c : kLayoutCases) {
    for (const bool fortran : {false, true}) {
      SCOPED_TRACE(testing::Message() << "axis " << c.axis << " fortran " << fortran);
      auto h = projection_harness(7, 5);
      if (fortran) h.inputs = {fortran_grid(test_box())};
      h.covered = covered;
      h.params = projection_params(c.axis, c.bounds, c.rect, 7, 5);
      h.run("uniform_projection_accumulate");
      const auto want = brute_force(
          test_geom(), test_box(), c.axis, [](long) { return true; }, c.rect, 7, 5, covered,
          slab_overlap(c.axis, c.bounds[0], c.bounds[1]));
      expect_images_near(values_of(*h.outputs[0]), want.sum, "projection");
      const auto unmasked = brute_force(
          test_geom(), test_box(), c.axis, [](long) { return true; }, c.rect, 7, 5, {},
          slab_overlap(c.axis, c.bounds[0], c.bounds[1]));
      EXPECT_NE(want.sum, unmasked.sum);
    }
  }
}

TEST(SliceCellAvg, FortranOrderWithPartialCoverage_OP_SLICE_1_COV_2) {
  const std::vector<IndexBox> covered{box_of({5, 1, 0}, {6, 3, 6}), box_of({9, 5, 2}, {12, 9, 2})};
  for (const auto& c : kSliceCases) {
    SCOPED_TRACE(testing::Message() << "axis " << c.axis);
    auto h = slice_harness(7, 5);
    h.inputs = {fortran_grid(test_box())};
    h.covered = covered;
    h.params = slice_params(c.axis, c.coord, c.rect, 7, 5);
    h.run("uniform_slice_cellavg_accumulate");
    const auto want = brute_force(
        test_geom(), test_box(), c.axis, [&](long n) { return n == c.plane; }, c.rect, 7, 5,
        covered, [](long) { return 1.0; });
    expect_images_near(values_of(*h.outputs[0]), want.sum, "sum");
    expect_images_near(values_of(*h.outputs[1]), want.area, "area");
  }
}

// --- nonzero-rectangle hints of the accumulators -----------------------------------

// Bounding rectangle of the nonzero pixels of an (nv, nu) image (empty: none).
NonzeroRect nonzero_bounds(const std::vector<double>& image, int nu, int nv) {
  NonzeroRect r;
  bool any = false;
  for (int pj = 0; pj < nv; ++pj) {
    for (int pi = 0; pi < nu; ++pi) {
      if (image[static_cast<std::size_t>(pj * nu + pi)] == 0.0) continue;
      const auto j = static_cast<std::uint64_t>(pj), i = static_cast<std::uint64_t>(pi);
      r = any ? NonzeroRect{std::min(r.row_begin, j), std::max(r.row_end, j + 1),
                            std::min(r.col_begin, i), std::max(r.col_end, i + 1)}
              : NonzeroRect{j, j + 1, i, i + 1};
      any = true;
    }
  }
  return r;
}

// Zero-allocated (nv, nu) outputs: the accumulators then skip their own fill.
std::vector<BufferPtr> zero_images(int nu, int nv, int count) {
  std::vector<BufferPtr> out;
  for (int n = 0; n < count; ++n) {
    out.push_back(test::make_buffer(
        ScalarType::f64, {static_cast<std::uint64_t>(nv), static_cast<std::uint64_t>(nu)}));
  }
  return out;
}

const std::vector<IndexBox> kHintCoverings[] = {
    {},
    {box_of({5, 1, 0}, {6, 3, 6}), box_of({9, 5, 2}, {12, 9, 2})},
    {box_of({4, 0, 0}, {9, 1, 6}), box_of({4, 0, 0}, {5, 5, 6})},
};

TEST(SliceCellAvg, HintIsTheFootprintOfTheSampledCells_OP_SLICE_1) {
  for (const auto& c : kSliceCases) {
    for (const auto& covered : kHintCoverings) {
      SCOPED_TRACE(testing::Message() << "axis " << c.axis << " covering " << covered.size());
      auto dirty = slice_harness(7, 5);
      dirty.covered = covered;
      dirty.params = slice_params(c.axis, c.coord, c.rect, 7, 5);
      dirty.run("uniform_slice_cellavg_accumulate");
      auto fresh = slice_harness(7, 5);
      fresh.outputs = zero_images(7, 5, 2);
      fresh.covered = covered;
      fresh.params = dirty.params;
      fresh.run("uniform_slice_cellavg_accumulate");
      const auto area = values_of(*dirty.outputs[1]);
      const NonzeroRect want = nonzero_bounds(area, 7, 5);
      EXPECT_FALSE(want.empty());
      EXPECT_EQ(nonzero_bounds(values_of(*dirty.outputs[0]), 7, 5), want);
      for (const auto* h : {&dirty, &fresh}) {
        for (const auto& out : h->outputs) {
          ASSERT_TRUE(out->nonzero_rect().has_value());
          EXPECT_EQ(*out->nonzero_rect(), want);
        }
      }
      EXPECT_EQ(values_of(*fresh.outputs[0]), values_of(*dirty.outputs[0]));
      EXPECT_EQ(values_of(*fresh.outputs[1]), area);
    }
  }
}

TEST(SliceCellAvg, NothingSampledGivesAnEmptyHint_OP_SLICE_1) {
  for (const bool fully_covered : {false, true}) {
    auto h = slice_harness(7, 5);
    h.outputs = zero_images(7, 5, 2);
    if (fully_covered) h.covered = {test_box()};
    h.params = slice_params(2, fully_covered ? 7.3 : 50.0, kSliceCases[0].rect, 7, 5);
    h.run("uniform_slice_cellavg_accumulate");
    for (const auto& out : h.outputs) {
      ASSERT_TRUE(out->nonzero_rect().has_value()) << fully_covered;
      EXPECT_TRUE(out->nonzero_rect()->empty()) << fully_covered;
      EXPECT_EQ(values_of(*out), std::vector<double>(35, 0.0));
    }
  }
}

TEST(Projection, HintIsTheFootprintOfTheIntegratedColumns_OP_PROJ_1) {
  for (const auto& c : kLayoutCases) {
    for (const auto& covered : kHintCoverings) {
      SCOPED_TRACE(testing::Message() << "axis " << c.axis << " covering " << covered.size());
      auto dirty = projection_harness(7, 5);
      dirty.covered = covered;
      dirty.params = projection_params(c.axis, c.bounds, c.rect, 7, 5);
      dirty.run("uniform_projection_accumulate");
      auto fresh = projection_harness(7, 5);
      fresh.outputs = zero_images(7, 5, 1);
      fresh.covered = covered;
      fresh.params = dirty.params;
      fresh.run("uniform_projection_accumulate");
      const auto image = values_of(*dirty.outputs[0]);
      const NonzeroRect want = nonzero_bounds(image, 7, 5);
      EXPECT_FALSE(want.empty());
      for (const auto* h : {&dirty, &fresh}) {
        ASSERT_TRUE(h->outputs[0]->nonzero_rect().has_value());
        EXPECT_EQ(*h->outputs[0]->nonzero_rect(), want);
      }
      EXPECT_EQ(values_of(*fresh.outputs[0]), image);
    }
  }
  // Nothing integrated: slab beside the block, or every cell covered.
  for (const bool fully_covered : {false, true}) {
    auto h = projection_harness(7, 5);
    h.outputs = zero_images(7, 5, 1);
    if (fully_covered) h.covered = {test_box()};
    h.params = projection_params(
        2, fully_covered ? std::array<double, 2>{4.0, 12.0} : std::array<double, 2>{11.0, 20.0},
        kSliceCases[0].rect, 7, 5);
    h.run("uniform_projection_accumulate");
    ASSERT_TRUE(h.outputs[0]->nonzero_rect().has_value()) << fully_covered;
    EXPECT_TRUE(h.outputs[0]->nonzero_rect()->empty()) << fully_covered;
    EXPECT_EQ(values_of(*h.outputs[0]), std::vector<double>(35, 0.0));
  }
}

// --- uniform_slice (nearest cell) --------------------------------------------------------

UniformSliceParams nearest_params(int axis, double coord, std::array<double, 4> rect, int nu,
                                  int nv) {
  UniformSliceParams p;
  p.axis = axis;
  p.coord = coord;
  p.rect = rect;
  p.resolution = {nu, nv};
  return p;
}

TEST(UniformSlice, PixelTakesCellContainingItsCenter_OP_USLICE_1) {
  for (const auto& c : kSliceCases) {
    SCOPED_TRACE(testing::Message()
                 << "axis " << c.axis << " rect " << c.rect[0] << "," << c.rect[1]);
    KernelHarness h(test_geom(), {test_box()});
    h.inputs = {make_grid(test_box(), cell_value)};
    h.outputs = {make_filled(ScalarType::f64, {5, 7}, std::vector<double>(35, 3.0))};
    h.params = nearest_params(c.axis, c.coord, c.rect, 7, 5);
    h.run("uniform_slice");
    const auto out = values_of(*h.outputs[0]);
    const LevelGeom g = test_geom();
    const int ua = plane_u(c.axis), va = plane_v(c.axis);
    const double umin = std::min(c.rect[0], c.rect[2]), vmin = std::min(c.rect[1], c.rect[3]);
    const double du = std::fabs(c.rect[2] - c.rect[0]) / 7,
                 dv = std::fabs(c.rect[3] - c.rect[1]) / 5;
    int sampled = 0, missing = 0;
    for (int pj = 0; pj < 5; ++pj) {
      for (int pi = 0; pi < 7; ++pi) {
        long idx[3];
        idx[c.axis] = c.plane;
        idx[ua] = static_cast<long>(std::floor((umin + (pi + 0.5) * du - g.x0[ua]) / g.dx[ua])) +
                  g.index_origin[ua];
        idx[va] = static_cast<long>(std::floor((vmin + (pj + 0.5) * dv - g.x0[va]) / g.dx[va])) +
                  g.index_origin[va];
        const double got = out[static_cast<std::size_t>(pj * 7 + pi)];
        if (test_box().contains(idx[0], idx[1], idx[2])) {
          EXPECT_EQ(got, cell_value(static_cast<int>(idx[0]), static_cast<int>(idx[1]),
                                    static_cast<int>(idx[2])));
          ++sampled;
        } else {
          EXPECT_TRUE(std::isnan(got)) << pi << "," << pj;
          ++missing;
        }
      }
    }
    EXPECT_GT(sampled, 0);
    EXPECT_GT(missing, 0);
  }
}

TEST(UniformSlice, PlaneMissingBlockIsAllNaNInF32_OP_USLICE_1) {
  KernelHarness h(test_geom(), {test_box()});
  h.inputs = {make_grid(test_box(), cell_value)};
  h.outputs = {make_filled(ScalarType::f32, {2, 3}, std::vector<double>(6, 0.0))};
  h.params = nearest_params(2, 100.0, {0.0, 0.75, 3.0, 2.25}, 3, 2);
  h.run("uniform_slice");
  for (double v : values_of(*h.outputs[0]))
    EXPECT_TRUE(std::isnan(v));
}

TEST(UniformSlice, ContractViolations_OP_GEN_3) {
  KernelHarness h(test_geom(), {test_box()});
  h.inputs = {make_grid(test_box(), cell_value)};
  h.outputs = {test::make_buffer(ScalarType::u8, {2, 3})};
  h.params = nearest_params(2, 7.0, {0.0, 0.75, 3.0, 2.25}, 3, 2);
  EXPECT_TRUE(throws_with([&] { h.run("uniform_slice"); }, "output must be f32 or f64"));
  h.outputs = {test::make_buffer(ScalarType::f64, {3, 2})};
  EXPECT_TRUE(throws_with([&] { h.run("uniform_slice"); }, "is not an image of shape (2, 3)"));
  h.outputs = {test::make_buffer(ScalarType::f64, {2, 3})};
  h.params = nearest_params(2, 7.0, {0.0, 0.75, 0.0, 2.25}, 3, 2);
  EXPECT_TRUE(throws_with([&] { h.run("uniform_slice"); },
                          "uniform_slice: invalid parameters: zero pixel size"));
}

}  // namespace
}  // namespace kangaroo
