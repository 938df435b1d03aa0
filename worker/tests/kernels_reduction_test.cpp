// Reduction helpers (OP-RED-1..5), compared against direct sums and the
// min/max rules written out in the test.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string_view>
#include <utility>
#include <vector>

#include "kangaroo/kernels/math/extrema.h"
#include "kernel_harness.h"

namespace kangaroo {
namespace {

using test::KernelHarness;
using test::make_filled;
using test::throws_with;
using test::values_of;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

std::vector<double> random_values(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(-1e3, 1e3);
  std::vector<double> v(n);
  for (double& x : v)
    x = dist(rng);
  return v;
}

// --- uniform_slice_reduce / uniform_slice_add -----------------------------------------

TEST(SliceReduce, SumsInputsInOrderIntoZeroedOutput_OP_RED_1) {
  KernelHarness h;
  const auto a = random_values(12, 1), b = random_values(12, 2), c = random_values(12, 3);
  h.inputs = {make_filled(ScalarType::f64, {3, 4}, a), make_filled(ScalarType::f64, {3, 4}, b),
              make_filled(ScalarType::f64, {3, 4}, c)};
  h.outputs = {make_filled(ScalarType::f64, {3, 4}, std::vector<double>(12, 555.0))};
  h.run("uniform_slice_reduce");
  const auto out = values_of(*h.outputs[0]);
  for (std::size_t p = 0; p < 12; ++p)
    EXPECT_EQ(out[p], ((0.0 + a[p]) + b[p]) + c[p]) << p;
}

TEST(SliceReduce, SingleInputIsCopied_OP_RED_1) {
  KernelHarness h;
  const std::vector<double> a{1.5, -0.0, kInf, 4.0};
  h.inputs = {make_filled(ScalarType::f64, {4}, a)};
  h.outputs = {make_filled(ScalarType::f64, {4}, {9, 9, 9, 9})};
  h.run("uniform_slice_reduce");
  const auto out = values_of(*h.outputs[0]);
  EXPECT_EQ(out[0], 1.5);
  EXPECT_EQ(out[1], 0.0);
  EXPECT_EQ(out[2], kInf);
  EXPECT_EQ(out[3], 4.0);
}

TEST(SliceReduce, NaNPropagates_OP_RED_1) {
  KernelHarness h;
  h.inputs = {make_filled(ScalarType::f64, {2}, {kNaN, 1.0}),
              make_filled(ScalarType::f64, {2}, {1.0, 2.0})};
  h.outputs = {test::make_buffer(ScalarType::f64, {2})};
  h.run("uniform_slice_reduce");
  const auto out = values_of(*h.outputs[0]);
  EXPECT_TRUE(std::isnan(out[0]));
  EXPECT_EQ(out[1], 3.0);
}

TEST(SliceReduce, F32AccumulatesInFloat64_OP_RED_1_OP_GEN_2) {
  KernelHarness h;
  // 2^24 + 1 + 1 is exact in float64 but not representable step by step in
  // float32 (2^24 + 1 rounds back to 2^24).
  const double big = 16777216.0;
  h.inputs = {make_filled(ScalarType::f32, {2}, {big, 1.0}),
              make_filled(ScalarType::f32, {2}, {1.0, 2.0}),
              make_filled(ScalarType::f32, {2}, {1.0, 3.0})};
  h.outputs = {test::make_buffer(ScalarType::f32, {2})};
  h.run("uniform_slice_reduce");
  const auto out = values_of(*h.outputs[0]);
  EXPECT_EQ(out[0], static_cast<double>(static_cast<float>(big + 2.0)));
  EXPECT_EQ(out[0], big + 2.0);
  EXPECT_EQ(out[1], 6.0);
}

TEST(SliceReduce, FortranLayoutsSumByLogicalElement_OP_RED_1) {
  KernelHarness h;
  const auto a = random_values(24, 4), b = random_values(24, 5);
  h.inputs = {test::make_fortran(ScalarType::f64, {2, 3, 4}, a),
              test::make_fortran(ScalarType::f64, {2, 3, 4}, b)};
  h.outputs = {Buffer::allocate(
      Descriptor::fortran_order(ScalarType::f64, std::vector<std::uint64_t>{2, 3, 4}),
      InitPolicy::uninitialized)};
  h.run("uniform_slice_reduce");
  const auto out = values_of(*h.outputs[0]);
  for (std::size_t p = 0; p < 24; ++p)
    EXPECT_EQ(out[p], a[p] + b[p]) << p;
}

TEST(SliceAdd, AddsTwoInputs_OP_RED_2) {
  KernelHarness h;
  const auto a = random_values(6, 6), b = random_values(6, 7);
  h.inputs = {make_filled(ScalarType::f64, {2, 3}, a), make_filled(ScalarType::f64, {2, 3}, b)};
  h.outputs = {make_filled(ScalarType::f64, {2, 3}, std::vector<double>(6, -1.0))};
  h.run("uniform_slice_add");
  const auto out = values_of(*h.outputs[0]);
  for (std::size_t p = 0; p < 6; ++p)
    EXPECT_EQ(out[p], a[p] + b[p]);
}

// --- nonzero-rectangle hints -------------------------------------------------------

NonzeroRect random_rect(std::mt19937_64& rng, std::uint64_t nv, std::uint64_t nu) {
  switch (rng() % 6) {
    case 0:
      return {};
    case 1:
      return {0, nv, 0, nu};
    default:
      break;
  }
  const std::uint64_t r0 = rng() % nv, c0 = rng() % nu;
  return {r0, r0 + 1 + rng() % (nv - r0), c0, c0 + 1 + rng() % (nu - c0)};
}

// Values of an (nv, nu) image: random inside `r` over many magnitudes, with
// some -0.0, +0.0 and infinities; exact zeros outside.
std::vector<double> rect_values(std::uint64_t nv, std::uint64_t nu, const NonzeroRect& r,
                                std::mt19937_64& rng) {
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  std::vector<double> v(nv * nu, 0.0);
  for (std::uint64_t row = r.row_begin; row < r.row_end; ++row) {
    for (std::uint64_t col = r.col_begin; col < r.col_end; ++col) {
      const auto pick = rng() % 64;
      double x = std::ldexp(dist(rng), static_cast<int>(rng() % 60) - 30);
      if (pick == 0) x = -0.0;
      if (pick == 1) x = 0.0;
      if (pick == 2) x = kInf;
      if (pick == 3) x = -kInf;
      v[row * nu + col] = x;
    }
  }
  return v;
}

// Bounding rectangle of the non-empty rectangles added (empty when none).
struct RectUnion {
  bool any = false;
  NonzeroRect u;

  void add(const NonzeroRect& r) {
    if (r.empty()) return;
    if (!any) {
      u = r;
      any = true;
      return;
    }
    u.row_begin = std::min(u.row_begin, r.row_begin);
    u.row_end = std::max(u.row_end, r.row_end);
    u.col_begin = std::min(u.col_begin, r.col_begin);
    u.col_end = std::max(u.col_end, r.col_end);
  }
  NonzeroRect rect() const { return any ? u : NonzeroRect{}; }
};

// A compact image (Buffer::allocate_compact_image) holding `values` (zero
// outside `r`).
BufferPtr make_compact(ScalarType scalar, std::uint64_t nv, std::uint64_t nu, const NonzeroRect& r,
                       const std::vector<double>& values) {
  const std::uint64_t ext[] = {nv, nu};
  BufferPtr b = Buffer::allocate_compact_image(Descriptor::c_order(scalar, ext), r);
  for (std::uint64_t row = r.row_begin; row < r.row_end && !r.empty(); ++row) {
    std::byte* at = b->mutable_rect_row(row);
    for (std::uint64_t c = r.col_begin; c < r.col_end; ++c) {
      const double v = values[row * nu + c];
      if (scalar == ScalarType::f64) {
        reinterpret_cast<double*>(at)[c - r.col_begin] = v;
      } else {
        reinterpret_cast<float*>(at)[c - r.col_begin] = static_cast<float>(v);
      }
    }
  }
  return b;
}

std::vector<std::byte> bytes_of(const Buffer& b) {
  const auto s = b.bytes();
  return {s.begin(), s.end()};
}

TEST(SliceReduce, HintedImagesSumBitwiseLikeTheDenseSum_OP_RED_1_OP_RED_2) {
  std::mt19937_64 rng(42);
  const std::pair<std::uint64_t, std::uint64_t> shapes[] = {{1, 1}, {5, 7}, {37, 64}, {700, 200}};
  for (const ScalarType scalar : {ScalarType::f64, ScalarType::f32}) {
    for (const auto& [nv, nu] : shapes) {
      for (const char* kernel : {"uniform_slice_reduce", "uniform_slice_add"}) {
        for (int trial = 0; trial < 5; ++trial) {
          SCOPED_TRACE(testing::Message() << scalar_name(scalar) << " (" << nv << ", " << nu << ") "
                                          << kernel << " trial " << trial);
          const std::size_t n = std::string_view(kernel) == "uniform_slice_add" ? 2 : 1 + rng() % 5;
          std::vector<ConstBufferPtr> plain, hinted, mixed, compact, compact_mixed;
          RectUnion want;
          for (std::size_t i = 0; i < n; ++i) {
            const NonzeroRect r = random_rect(rng, nv, nu);
            const auto values = rect_values(nv, nu, r, rng);
            plain.push_back(make_filled(scalar, {nv, nu}, values));
            BufferPtr h = make_filled(scalar, {nv, nu}, values);
            h->set_nonzero_rect(r);
            hinted.push_back(h);
            mixed.push_back(i % 2 ? plain.back() : hinted.back());
            compact.push_back(make_compact(scalar, nv, nu, r, values));
            compact_mixed.push_back(i % 2 ? hinted.back() : compact.back());
            want.add(r);
          }
          const std::vector<double> garbage(nv * nu, 555.0);
          KernelHarness h;
          // Reference: no hints, dense elementwise sum.
          h.inputs = plain;
          h.outputs = {make_filled(scalar, {nv, nu}, garbage)};
          h.run(kernel);
          const auto dense = bytes_of(*h.outputs[0]);
          EXPECT_FALSE(h.outputs[0]->nonzero_rect().has_value());
          // Hinted inputs into a fresh zero output, into a dirty output, and
          // mixed with unhinted inputs.
          struct Run {
            const std::vector<ConstBufferPtr>* inputs;
            bool zero_output;
          };
          // Compact inputs, alone and next to hinted dense ones; the output
          // may itself be compact, which bytes_of expands.
          for (const Run& run : {Run{&hinted, true}, Run{&hinted, false}, Run{&mixed, true}, Run{&compact, true},
                                 Run{&compact, false}, Run{&compact_mixed, true}}) {
            h.inputs = *run.inputs;
            h.outputs = {run.zero_output ? test::make_buffer(scalar, {nv, nu})
                                         : make_filled(scalar, {nv, nu}, garbage)};
            h.run(kernel);
            EXPECT_TRUE(bytes_of(*h.outputs[0]) == dense);
            ASSERT_TRUE(h.outputs[0]->nonzero_rect().has_value());
            const NonzeroRect expect =
                run.inputs == &mixed && n > 1 ? NonzeroRect{0, nv, 0, nu} : want.rect();
            EXPECT_EQ(*h.outputs[0]->nonzero_rect(), expect);
          }
        }
      }
    }
  }
}

TEST(SliceReduce, HintUnionIsTheBoundingRectangleOfNonEmptyInputs_OP_RED_1) {
  const std::vector<double> zeros(6 * 8, 0.0);
  KernelHarness h;
  auto image = [&](NonzeroRect r) {
    BufferPtr b = make_filled(ScalarType::f64, {6, 8}, zeros);
    b->set_nonzero_rect(r);
    return ConstBufferPtr(b);
  };
  h.inputs = {image({1, 2, 5, 7}), image({}), image({4, 6, 0, 3}), image({2, 2, 0, 8})};
  h.outputs = {test::make_buffer(ScalarType::f64, {6, 8})};
  h.run("uniform_slice_reduce");
  EXPECT_EQ(*h.outputs[0]->nonzero_rect(), (NonzeroRect{1, 6, 0, 7}));
  EXPECT_EQ(values_of(*h.outputs[0]), zeros);
  // All inputs empty: the output is all zero and says so.
  h.inputs = {image({}), image({3, 3, 1, 2})};
  h.outputs = {make_filled(ScalarType::f64, {6, 8}, std::vector<double>(48, 1.0))};
  h.run("uniform_slice_add");
  EXPECT_TRUE(h.outputs[0]->nonzero_rect()->empty());
  EXPECT_EQ(values_of(*h.outputs[0]), zeros);
}

TEST(SliceReduceErrors, ContractViolations_OP_RED_1_OP_RED_2) {
  auto f64 = [](std::vector<std::uint64_t> e) {
    return test::make_buffer(ScalarType::f64, std::move(e));
  };
  KernelHarness h;
  h.outputs = {f64({2, 3})};
  h.inputs = {};
  EXPECT_TRUE(throws_with([&] { h.run("uniform_slice_reduce"); },
                          "uniform_slice_reduce: invalid parameters"));
  h.inputs = {f64({2, 3})};
  EXPECT_TRUE(
      throws_with([&] { h.run("uniform_slice_add"); }, "uniform_slice_add: invalid parameters"));
  h.inputs = {f64({2, 3}), f64({3, 2})};
  EXPECT_TRUE(throws_with([&] { h.run("uniform_slice_reduce"); },
                          "generic reduction requires identical descriptors"));
  h.inputs = {f64({2, 3}), test::make_buffer(ScalarType::f32, {2, 3})};
  EXPECT_TRUE(throws_with([&] { h.run("uniform_slice_add"); },
                          "generic reduction requires identical descriptors"));
  h.inputs = {f64({6})};
  EXPECT_TRUE(throws_with([&] { h.run("uniform_slice_reduce"); },
                          "generic reduction requires identical descriptors"));
  // Same dtype and extents, different strides.
  h.inputs = {
      Buffer::allocate(Descriptor::fortran_order(ScalarType::f64, std::vector<std::uint64_t>{2, 3}),
                       InitPolicy::zero)};
  EXPECT_TRUE(throws_with([&] { h.run("uniform_slice_reduce"); },
                          "generic reduction requires identical descriptors"));
  h.inputs = {test::make_buffer(ScalarType::i64, {2, 3})};
  h.outputs = {test::make_buffer(ScalarType::i64, {2, 3})};
  EXPECT_TRUE(throws_with([&] { h.run("uniform_slice_reduce"); }, "output must be f32 or f64"));
  h.outputs = {};
  EXPECT_TRUE(
      throws_with([&] { h.run("uniform_slice_reduce"); }, "invalid parameters: missing output 0"));
}

// --- uniform_slice_finalize ---------------------------------------------------------------

SliceFinalizeParams finalize(double pixel_area) {
  SliceFinalizeParams p;
  p.pixel_area = pixel_area;
  return p;
}

TEST(SliceFinalize, SliceDividesSumByAreaNaNWhereUnsampled_OP_RED_3) {
  KernelHarness h;
  h.inputs = {make_filled(ScalarType::f64, {2, 2}, {3.0, 0.0, -2.0, 5.0}),
              make_filled(ScalarType::f64, {2, 2}, {1.5, 0.0, 0.5, 0.25})};
  h.outputs = {test::make_buffer(ScalarType::f64, {2, 2})};
  h.params = finalize(0.5);  // ignored by the two-input form
  h.run("uniform_slice_finalize");
  const auto out = values_of(*h.outputs[0]);
  EXPECT_EQ(out[0], 2.0);
  EXPECT_TRUE(std::isnan(out[1]));
  EXPECT_EQ(out[2], -4.0);
  EXPECT_EQ(out[3], 20.0);
}

TEST(SliceFinalize, ProjectionDividesByPixelArea_OP_RED_3_OP_PROJ_2) {
  KernelHarness h;
  const auto sum = random_values(6, 8);
  h.inputs = {make_filled(ScalarType::f64, {2, 3}, sum)};
  h.outputs = {test::make_buffer(ScalarType::f32, {2, 3})};
  h.params = finalize(0.125);
  h.run("uniform_slice_finalize");
  const auto out = values_of(*h.outputs[0]);
  for (std::size_t p = 0; p < 6; ++p)
    EXPECT_EQ(out[p], static_cast<double>(static_cast<float>(sum[p] / 0.125)));
}

TEST(SliceFinalize, CompactInputsReadWithoutExpanding_OP_RED_3) {
  // Compact sum and area images (zeros outside their rectangles) finalize
  // exactly like their dense copies, and stay compact.
  std::mt19937_64 rng(11);
  const std::uint64_t nv = 70, nu = 130;  // rows cross the staging blocks
  const NonzeroRect rs{5, 60, 3, 101}, ra{8, 66, 0, 90};
  const auto sum = rect_values(nv, nu, rs, rng);
  auto area = rect_values(nv, nu, ra, rng);
  for (double& a : area) a = std::abs(a);
  KernelHarness h;
  h.params = finalize(1.0);
  h.inputs = {make_filled(ScalarType::f64, {nv, nu}, sum), make_filled(ScalarType::f64, {nv, nu}, area)};
  h.outputs = {test::make_buffer(ScalarType::f64, {nv, nu})};
  h.run("uniform_slice_finalize");
  const auto dense = bytes_of(*h.outputs[0]);
  const ConstBufferPtr cs = make_compact(ScalarType::f64, nv, nu, rs, sum);
  const ConstBufferPtr ca = make_compact(ScalarType::f64, nv, nu, ra, area);
  h.inputs = {cs, ca};
  h.outputs = {test::make_buffer(ScalarType::f64, {nv, nu})};
  h.run("uniform_slice_finalize");
  EXPECT_TRUE(bytes_of(*h.outputs[0]) == dense);
  EXPECT_TRUE(cs->is_compact() && ca->is_compact());
}

TEST(SliceFinalize, LargeImagesCrossStagingBlocks_OP_RED_3) {
  KernelHarness h;
  const std::size_t n = 100 * 90;
  const auto sum = random_values(n, 9);
  auto area = random_values(n, 10);
  for (std::size_t p = 0; p < n; p += 7)
    area[p] = 0.0;
  h.inputs = {make_filled(ScalarType::f64, {100, 90}, sum),
              make_filled(ScalarType::f64, {100, 90}, area)};
  h.outputs = {test::make_buffer(ScalarType::f64, {100, 90})};
  h.params = finalize(1.0);
  h.run("uniform_slice_finalize");
  const auto out = values_of(*h.outputs[0]);
  for (std::size_t p = 0; p < n; ++p) {
    if (area[p] == 0.0) {
      ASSERT_TRUE(std::isnan(out[p])) << p;
    } else {
      ASSERT_EQ(out[p], sum[p] / area[p]) << p;
    }
  }
}

TEST(SliceFinalizeErrors, ContractViolations_OP_RED_3) {
  auto f64 = [](std::vector<std::uint64_t> e) {
    return test::make_buffer(ScalarType::f64, std::move(e));
  };
  KernelHarness h;
  h.inputs = {f64({2, 2})};
  h.outputs = {f64({2, 2})};
  for (double area : {0.0, -1.0, kNaN, kInf}) {
    h.params = finalize(area);
    EXPECT_TRUE(throws_with([&] { h.run("uniform_slice_finalize"); },
                            "uniform_slice_finalize: invalid parameters: pixel_area"))
        << area;
  }
  h.params = finalize(1.0);
  h.inputs = {f64({2, 2}), f64({2, 2}), f64({2, 2})};
  EXPECT_TRUE(throws_with([&] { h.run("uniform_slice_finalize"); },
                          "uniform_slice_finalize: invalid parameters"));
  h.inputs = {};
  EXPECT_TRUE(throws_with([&] { h.run("uniform_slice_finalize"); },
                          "uniform_slice_finalize: invalid parameters"));
  h.inputs = {test::make_buffer(ScalarType::f32, {2, 2})};
  EXPECT_TRUE(throws_with([&] { h.run("uniform_slice_finalize"); }, "must be f64"));
  h.inputs = {f64({2, 2}), f64({5})};
  EXPECT_TRUE(
      throws_with([&] { h.run("uniform_slice_finalize"); }, "with the output's 4 elements"));
  h.inputs = {f64({2, 2})};
  h.outputs = {test::make_buffer(ScalarType::u8, {2, 2})};
  EXPECT_TRUE(throws_with([&] { h.run("uniform_slice_finalize"); }, "output must be f32 or f64"));
  h.outputs = {f64({2, 2})};
  h.params = FiniteOnlyParams{};
  EXPECT_TRUE(throws_with([&] { h.run("uniform_slice_finalize"); }, "invalid parameters"));
}

// --- particle scalar reducers -------------------------------------------------------------

BufferPtr i64_scalar(std::int64_t v) {
  BufferPtr b = test::make_buffer(ScalarType::i64, {1});
  b->elements<std::int64_t>()[0] = v;
  return b;
}

BufferPtr f64_scalar(double v) {
  return make_filled(ScalarType::f64, {1}, {v});
}

BufferPtr empty_dynamic(ScalarType t) {
  BufferPtr b = Buffer::allocate_dynamic(t, 4, InitPolicy::zero);
  b->commit(0);
  return b;
}

TEST(Int64SumReduce, SumsFirstElementsSkippingEmptyInputs_OP_RED_4) {
  KernelHarness h;
  const std::int64_t big = std::int64_t{1} << 53;
  h.inputs = {i64_scalar(big),
              i64_scalar(1),
              empty_dynamic(ScalarType::i64),
              i64_scalar(-7),
              make_filled(ScalarType::i64, {3}, {5, 100, 100}),
              test::make_buffer(ScalarType::u8, {4})};
  h.outputs = {test::make_buffer(ScalarType::i64, {1})};
  h.run("particle_int64_sum_reduce");
  // Exact integer arithmetic: 2^53 + 1 is not representable as a double.
  EXPECT_EQ(h.outputs[0]->elements<std::int64_t>()[0], big + 1 - 7 + 5);
}

TEST(Int64SumReduce, NoInputsGiveZeroAndDynamicOutputIsCommitted_OP_RED_4) {
  KernelHarness h;
  h.outputs = {Buffer::allocate_dynamic(ScalarType::i64, 1, InitPolicy::uninitialized)};
  h.run("particle_int64_sum_reduce");
  ASSERT_TRUE(h.outputs[0]->is_committed());
  EXPECT_EQ(h.outputs[0]->descriptor().extents[0], 1u);
  EXPECT_EQ(h.outputs[0]->elements<std::int64_t>()[0], 0);
}

TEST(Int64SumReduceErrors, ContractViolations_OP_RED_4) {
  KernelHarness h;
  h.inputs = {i64_scalar(std::numeric_limits<std::int64_t>::max()), i64_scalar(1)};
  h.outputs = {test::make_buffer(ScalarType::i64, {1})};
  EXPECT_TRUE(throws_with([&] { h.run("particle_int64_sum_reduce"); }, "overflows int64"));
  h.inputs = {f64_scalar(1.0)};
  EXPECT_TRUE(throws_with([&] { h.run("particle_int64_sum_reduce"); }, "input 0 must be i64"));
  h.inputs = {i64_scalar(1)};
  h.outputs = {test::make_buffer(ScalarType::f64, {1})};
  EXPECT_TRUE(throws_with([&] { h.run("particle_int64_sum_reduce"); }, "output must be i64[1]"));
  h.outputs = {test::make_buffer(ScalarType::i64, {2})};
  EXPECT_TRUE(throws_with([&] { h.run("particle_int64_sum_reduce"); }, "exactly one element"));
}

FiniteOnlyParams finite_only(bool v) {
  FiniteOnlyParams p;
  p.finite_only = v;
  return p;
}

// Written-out OP-PART-6 rule, independent of the shared header.
double reference_extremum(const std::vector<double>& xs, bool want_min, bool finite) {
  bool any = false;
  double best = 0.0;
  for (double x : xs) {
    if (finite && !std::isfinite(x)) continue;
    if (std::isnan(x)) return kNaN;
    if (!any || (want_min ? x < best : x > best)) best = x;
    any = true;
  }
  if (!any) return want_min ? kInf : -kInf;
  return best;
}

void expect_same(double got, double want) {
  if (std::isnan(want)) {
    EXPECT_TRUE(std::isnan(got));
  } else {
    EXPECT_EQ(got, want);
  }
}

TEST(ScalarExtremumReduce, FiniteOnlyAndNumpyRules_OP_RED_5) {
  const std::vector<std::vector<double>> cases{
      {3.0, -2.0, 7.5}, {3.0, kNaN, -2.0}, {kInf, 1.0, -kInf}, {kNaN, kInf}, {-0.5}, {},
  };
  for (const auto& xs : cases) {
    for (bool finite : {true, false}) {
      for (bool want_min : {true, false}) {
        KernelHarness h;
        for (double x : xs)
          h.inputs.push_back(f64_scalar(x));
        // Empty partial results (fewer than 8 bytes) are skipped.
        h.inputs.push_back(empty_dynamic(ScalarType::f64));
        h.outputs = {test::make_buffer(ScalarType::f64, {1})};
        h.params = finite_only(finite);
        h.run(want_min ? "particle_scalar_min_reduce" : "particle_scalar_max_reduce");
        SCOPED_TRACE(testing::Message()
                     << "case size " << xs.size() << " finite " << finite << " min " << want_min);
        expect_same(values_of(*h.outputs[0])[0], reference_extremum(xs, want_min, finite));
      }
    }
  }
}

TEST(ScalarExtremumReduce, NoQualifyingValueGivesIdentity_OP_RED_5) {
  KernelHarness h;
  h.inputs = {f64_scalar(kNaN), f64_scalar(kInf)};
  h.outputs = {test::make_buffer(ScalarType::f64, {1})};
  h.params = finite_only(true);
  h.run("particle_scalar_min_reduce");
  EXPECT_EQ(values_of(*h.outputs[0])[0], kInf);
  h.run("particle_scalar_max_reduce");
  EXPECT_EQ(values_of(*h.outputs[0])[0], -kInf);
}

TEST(ScalarExtremumReduce, ChunkingDoesNotChangeTheResult_OP_PART_6) {
  // Reducing per-chunk minima gives the minimum over all values under both
  // rules; the reducer and the rule in the shared header must agree.
  const std::vector<double> all{4.0, kInf, -1.0, kNaN, 2.5, -kInf, 0.0};
  for (bool finite : {true, false}) {
    double one_pass = math::min_identity();
    for (double x : all)
      one_pass = math::min_rule(one_pass, x, finite);
    KernelHarness h;
    for (std::size_t start = 0; start < all.size(); start += 3) {
      double partial = math::min_identity();
      for (std::size_t i = start; i < std::min(all.size(), start + 3); ++i)
        partial = math::min_rule(partial, all[i], finite);
      h.inputs.push_back(f64_scalar(partial));
    }
    h.outputs = {test::make_buffer(ScalarType::f64, {1})};
    h.params = finite_only(finite);
    h.run("particle_scalar_min_reduce");
    expect_same(values_of(*h.outputs[0])[0], one_pass);
    expect_same(one_pass, reference_extremum(all, true, finite));
  }
}

TEST(ScalarExtremumReduceErrors, ContractViolations_OP_RED_5) {
  KernelHarness h;
  h.inputs = {i64_scalar(3)};
  h.outputs = {test::make_buffer(ScalarType::f64, {1})};
  h.params = finite_only(true);
  EXPECT_TRUE(throws_with([&] { h.run("particle_scalar_max_reduce"); }, "input 0 must be f64"));
  h.inputs = {f64_scalar(1.0)};
  h.outputs = {test::make_buffer(ScalarType::i64, {1})};
  EXPECT_TRUE(throws_with([&] { h.run("particle_scalar_max_reduce"); }, "output must be f64[1]"));
  h.outputs = {test::make_buffer(ScalarType::f64, {1})};
  h.params = ScalarParams{};
  EXPECT_TRUE(throws_with([&] { h.run("particle_scalar_min_reduce"); }, "invalid parameters"));
}

}  // namespace
}  // namespace kangaroo
