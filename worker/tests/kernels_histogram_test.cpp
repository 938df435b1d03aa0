// Mesh histograms (OP-HIST-1..4): binning edges, weights and weight modes,
// grid path with coverage versus flat path, and every rejected configuration.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kangaroo/kernels/math/binning.h"
#include "kernel_harness.h"

namespace kangaroo {
namespace {

using test::box_of;
using test::KernelHarness;
using test::make_filled;
using test::make_grid;
using test::throws_with;
using test::values_of;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

Histogram1DParams h1(double lo, double hi, std::int64_t bins, std::string mode = "input") {
  Histogram1DParams p;
  p.range = {lo, hi};
  p.bins = bins;
  p.weight_mode = std::move(mode);
  return p;
}

Histogram2DParams h2(std::array<double, 2> xr, std::array<double, 2> yr,
                     std::array<std::int64_t, 2> bins, std::string mode = "input") {
  Histogram2DParams p;
  p.x_range = xr;
  p.y_range = yr;
  p.bins = bins;
  p.weight_mode = std::move(mode);
  return p;
}

BufferPtr garbage_bins(std::uint64_t n) {
  return make_filled(ScalarType::f64, {n}, std::vector<double>(n, 123.0));
}

TEST(BinningMath, EdgesAndSkips_OP_HIST_1) {
  // [0, 1] in 4 bins: interior edges go to the upper bin, hi to the last.
  EXPECT_EQ(math::histogram_bin(0.0, 0.0, 1.0, 4), 0);
  EXPECT_EQ(math::histogram_bin(0.25, 0.0, 1.0, 4), 1);
  EXPECT_EQ(math::histogram_bin(0.4999, 0.0, 1.0, 4), 1);
  EXPECT_EQ(math::histogram_bin(0.5, 0.0, 1.0, 4), 2);
  EXPECT_EQ(math::histogram_bin(0.75, 0.0, 1.0, 4), 3);
  EXPECT_EQ(math::histogram_bin(1.0, 0.0, 1.0, 4), 3);
  EXPECT_EQ(math::histogram_bin(std::nextafter(1.0, 2.0), 0.0, 1.0, 4), -1);
  EXPECT_EQ(math::histogram_bin(std::nextafter(0.0, -1.0), 0.0, 1.0, 4), -1);
  EXPECT_EQ(math::histogram_bin(kNaN, 0.0, 1.0, 4), -1);
  EXPECT_EQ(math::histogram_bin(kInf, 0.0, kInf, 4), -1);
  EXPECT_EQ(math::histogram_bin(-kInf, -1.0, 1.0, 4), -1);
  // One bin: everything in range lands in bin 0.
  EXPECT_EQ(math::histogram_bin(-3.0, -3.0, 5.0, 1), 0);
  EXPECT_EQ(math::histogram_bin(5.0, -3.0, 5.0, 1), 0);
  EXPECT_FALSE(math::valid_histogram_range(1.0, 1.0));
  EXPECT_FALSE(math::valid_histogram_range(2.0, 1.0));
  EXPECT_FALSE(math::valid_histogram_range(kNaN, 1.0));
  EXPECT_FALSE(math::valid_histogram_range(0.0, kInf));
  EXPECT_TRUE(math::valid_histogram_range(-1.0, 1.0));
}

// The binner must give histogram_bin's bin for every sample, above all on and
// next to bin edges, where a product with the reciprocal and the quotient
// round differently.
TEST(BinningMath, BinnerMatchesHistogramBinOnEdgesAndAtRandom_OP_HIST_1) {
  struct Axis {
    double lo, hi;
    std::int64_t bins;
  };
  const std::vector<Axis> axes{
      {0.0, 1.0, 4},          {-3.0, 5.0, 1},       {-1.0, 2.0, 7},     {0.1, 0.7, 3},
      {1e-300, 3e-300, 7},    {-1e300, 1e300, 64},  {1e15, 1e15 + 3.0, 1000},
      {-2.5, 7.25, 4096},     {0.0, 1e-3, 1000000}, {0.3, 0.9, std::int64_t{1} << 40},
      {0.0, 1.0, std::int64_t{1} << 41},           {-7.1, -7.0, 97}};
  std::mt19937_64 rng(11);
  std::size_t checked = 0;
  for (const Axis& a : axes) {
    const math::HistogramBinner bin(a.lo, a.hi, a.bins);
    std::vector<double> samples;
    auto expect_same = [&](double x) {
      ASSERT_EQ(bin(x), math::histogram_bin(x, a.lo, a.hi, a.bins))
          << "x=" << x << " in [" << a.lo << ", " << a.hi << "] with " << a.bins << " bins";
      samples.push_back(x);
      ++checked;
    };
    for (double x : {a.lo, a.hi, kNaN, kInf, -kInf, std::nextafter(a.hi, kInf), std::nextafter(a.lo, -kInf),
                     0.0, -0.0})
      expect_same(x);
    // Edges computed the ways a user would, and the doubles around them.
    const std::int64_t edge_step = std::max<std::int64_t>(1, a.bins / 5000);
    for (std::int64_t k = 0; k <= a.bins; k += edge_step) {
      const double kd = static_cast<double>(k), nb = static_cast<double>(a.bins);
      for (double e : {a.lo + (a.hi - a.lo) * kd / nb, a.lo + kd * ((a.hi - a.lo) / nb),
                       a.lo * (1.0 - kd / nb) + a.hi * (kd / nb)}) {
        double down = e, up = e;
        expect_same(e);
        for (int s = 0; s < 3; ++s) {
          down = std::nextafter(down, -kInf);
          up = std::nextafter(up, kInf);
          expect_same(down);
          expect_same(up);
        }
      }
    }
    const double span = a.hi - a.lo;
    std::uniform_real_distribution<double> dist(a.lo - 0.1 * span, a.hi + 0.1 * span);
    std::uniform_real_distribution<double> inside(a.lo, a.hi);
    for (int i = 0; i < 20000; ++i) {
      expect_same(std::isfinite(span) ? dist(rng) : inside(rng));
      expect_same(inside(rng));
    }
    // The same samples in runs, four lanes at a time, from every offset
    // and with lengths that leave a remainder.
    if (a.bins > math::HistogramBinner::kMaxManyBins) continue;
    std::vector<std::int32_t> many(samples.size());
    for (std::size_t start = 0; start < samples.size(); start += 4093) {
      const std::size_t m = std::min<std::size_t>(4093, samples.size() - start);
      bin.bin_many(samples.data() + start, m, many.data() + start);
    }
    for (std::size_t i = 0; i < samples.size(); ++i) {
      ASSERT_EQ(many[i], math::histogram_bin(samples[i], a.lo, a.hi, a.bins))
          << "bin_many: x=" << samples[i] << " in [" << a.lo << ", " << a.hi << "] with " << a.bins << " bins";
    }
  }
  EXPECT_GT(checked, 400000u);
}

// --- flat path (bounded arrays) ---------------------------------------------------

TEST(Histogram1D, FlatPathCountsWithEdgeRules_OP_HIST_1_OP_HIST_2) {
  KernelHarness h;
  h.inputs = {
      make_filled(ScalarType::f64, {3, 4},
                  {0.0, 0.25, 0.4999, 0.5, 0.999, 1.0, -0.0001, 1.0001, kNaN, kInf, -kInf, 0.75})};
  h.outputs = {garbage_bins(4)};
  h.params = h1(0.0, 1.0, 4);
  h.run("histogram1d_accumulate");
  // bin 0: 0.0; bin 1: 0.25, 0.4999; bin 2: 0.5; bin 3: 0.999, 1.0 (== hi), 0.75.
  EXPECT_EQ(values_of(*h.outputs[0]), (std::vector<double>{1, 2, 1, 3}));
}

TEST(Histogram1D, FlatPathWeightsSkipNonFiniteWeights_OP_HIST_1) {
  KernelHarness h;
  h.inputs = {make_filled(ScalarType::f32, {6}, {0.1, 0.6, 0.6, 0.9, 2.0, 0.3}),
              make_filled(ScalarType::f64, {2, 3}, {2.0, 0.5, kNaN, -1.5, 100.0, kInf})};
  h.outputs = {garbage_bins(2)};
  h.params = h1(0.0, 1.0, 2);
  h.run("histogram1d_accumulate");
  // 0.1 -> bin 0 (w 2); 0.6 -> bin 1 (w 0.5); 0.6 (NaN weight) skipped;
  // 0.9 -> bin 1 (w -1.5); 2.0 out of range; 0.3 (inf weight) skipped.
  EXPECT_EQ(values_of(*h.outputs[0]), (std::vector<double>{2.0, -1.0}));
}

TEST(Histogram1D, RandomSamplesMatchEdgeComparisonReference_OP_HIST_1) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> dist(-1.5, 2.5);
  const double lo = -1.0, hi = 2.0;
  const int bins = 7;
  std::vector<double> values(5000);
  for (double& v : values)
    v = dist(rng);
  std::vector<double> expected(bins, 0.0);
  for (double v : values) {
    // Reference: the bin whose [edge_b, edge_b+1) holds v, by comparisons.
    for (int b = 0; b < bins; ++b) {
      const double e0 = lo + (hi - lo) * b / bins, e1 = lo + (hi - lo) * (b + 1) / bins;
      if (v >= e0 && (v < e1 || (b == bins - 1 && v <= hi)))
        expected[static_cast<std::size_t>(b)] += 1.0;
    }
  }
  KernelHarness h;
  h.inputs = {make_filled(ScalarType::f64, {values.size()}, values)};
  h.outputs = {garbage_bins(bins)};
  h.params = h1(lo, hi, bins);
  h.run("histogram1d_accumulate");
  EXPECT_EQ(values_of(*h.outputs[0]), expected);
}

// --- grid path --------------------------------------------------------------------

LevelGeom grid_geom() {
  LevelGeom g;
  g.dx = {0.5, 0.25, 2.0};  // cell volume 0.25
  g.x0 = {1.0, -2.0, 0.0};
  g.index_origin = {3, 0, -1};
  return g;
}

IndexBox grid_box() {
  return box_of({4, 0, 1}, {6, 2, 2});
}  // 3 x 3 x 2 cells

double grid_value(int i, int j, int k) {
  return 0.37 * i + 1.9 * j - 0.8 * k;
}

bool in_test_coverage(int i, int j, int k) {
  // Mirrors the coverage list used below: ((5,1,1),(6,2,1)) and ((4,0,2),(4,0,2)).
  return (i >= 5 && i <= 6 && j >= 1 && j <= 2 && k == 1) || (i == 4 && j == 0 && k == 2);
}

const std::vector<IndexBox> kCoverage{box_of({5, 1, 1}, {6, 2, 1}), box_of({4, 0, 2}, {4, 0, 2}),
                                      box_of({20, 20, 20}, {30, 30, 30})};

KernelHarness grid_harness() {
  KernelHarness h(grid_geom(), {box_of({0, 0, 0}, {0, 0, 0}), grid_box()});
  h.block = 1;
  h.covered = kCoverage;
  h.inputs = {make_grid(grid_box(), grid_value)};
  return h;
}

// Expected histogram over uncovered cells with a per-cell weight.
std::vector<double> grid_reference(double lo, double hi, int bins,
                                   const std::function<double(int, int, int)>& weight) {
  std::vector<double> out(static_cast<std::size_t>(bins), 0.0);
  for (int i = 4; i <= 6; ++i) {
    for (int j = 0; j <= 2; ++j) {
      for (int k = 1; k <= 2; ++k) {
        if (in_test_coverage(i, j, k)) continue;
        const double x = grid_value(i, j, k);
        if (!(x >= lo && x <= hi)) continue;
        const double w = weight(i, j, k);
        if (!std::isfinite(w)) continue;
        for (int b = 0; b < bins; ++b) {
          const double e0 = lo + (hi - lo) * b / bins, e1 = lo + (hi - lo) * (b + 1) / bins;
          if (x >= e0 && (x < e1 || b == bins - 1)) {
            out[static_cast<std::size_t>(b)] += w;
            break;
          }
        }
      }
    }
  }
  return out;
}

void expect_near_all(const std::vector<double>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t b = 0; b < got.size(); ++b)
    EXPECT_NEAR(got[b], want[b], 1e-12) << "bin " << b;
}

TEST(Histogram1D, GridPathSkipsCoveredCells_OP_HIST_2_COV_1) {
  auto h = grid_harness();
  h.outputs = {garbage_bins(5)};
  h.params = h1(-2.0, 7.0, 5);
  h.run("histogram1d_accumulate");
  const auto want = grid_reference(-2.0, 7.0, 5, [](int, int, int) { return 1.0; });
  expect_near_all(values_of(*h.outputs[0]), want);
  double total = 0.0;
  for (double c : want)
    total += c;
  EXPECT_EQ(total, 18.0 - 5.0);  // 18 cells, 5 covered, all in range
}

TEST(Histogram1D, GridPathWeightModes_OP_HIST_3) {
  {
    auto h = grid_harness();
    h.outputs = {garbage_bins(4)};
    h.params = h1(-2.0, 7.0, 4, "cell_volume");
    h.run("histogram1d_accumulate");
    expect_near_all(values_of(*h.outputs[0]),
                    grid_reference(-2.0, 7.0, 4, [](int, int, int) { return 0.25; }));
  }
  {
    auto h = grid_harness();
    h.outputs = {garbage_bins(4)};
    h.params = h1(-2.0, 7.0, 4, "cell_mass");
    h.run("histogram1d_accumulate");
    expect_near_all(values_of(*h.outputs[0]), grid_reference(-2.0, 7.0, 4, [](int i, int j, int k) {
                      return grid_value(i, j, k) * 0.25;
                    }));
  }
}

TEST(Histogram1D, GridPathExplicitWeights_OP_HIST_1) {
  auto weight = [](int i, int j, int k) {
    return (i == 6 && j == 0 && k == 1) ? kNaN : 1.0 + i - j * k;
  };
  auto h = grid_harness();
  h.inputs.push_back(make_grid(grid_box(), weight, ScalarType::f32));
  h.outputs = {garbage_bins(3)};
  h.params = h1(-1.0, 6.0, 3);
  h.run("histogram1d_accumulate");
  expect_near_all(values_of(*h.outputs[0]), grid_reference(-1.0, 6.0, 3, weight));
}

TEST(Histogram1D, GridPathWithoutCoverageCountsEveryCell_OP_HIST_2) {
  auto h = grid_harness();
  h.covered.clear();
  h.outputs = {garbage_bins(1)};
  h.params = h1(-100.0, 100.0, 1);
  h.run("histogram1d_accumulate");
  EXPECT_EQ(values_of(*h.outputs[0]), std::vector<double>{18.0});
}

// Unweighted histograms count in interleaved copies; the counts must equal
// what explicit unit weights, added one sample at a time, give. Coverage, a
// NaN, values outside the range and more bins than the interleaved copies
// serve are all in play.
std::vector<double> histogram_of(const std::vector<BufferPtr>& inputs, const Histogram1DParams* p1,
                                 const Histogram2DParams* p2, std::uint64_t bins) {
  KernelHarness h(grid_geom(), {box_of({0, 0, 0}, {0, 0, 0}), box_of({0, 0, 0}, {11, 8, 6})});
  h.block = 1;
  h.covered = {box_of({2, 3, 1}, {5, 8, 4}), box_of({10, 0, 0}, {11, 1, 6})};
  h.inputs.assign(inputs.begin(), inputs.end());
  h.outputs = {garbage_bins(bins)};
  if (p1 != nullptr) {
    h.params = *p1;
    h.run("histogram1d_accumulate");
  } else {
    h.outputs = {test::make_buffer(ScalarType::f64, {static_cast<std::uint64_t>(p2->bins[0]),
                                                     static_cast<std::uint64_t>(p2->bins[1])})};
    h.params = *p2;
    h.run("histogram2d_accumulate");
  }
  return values_of(*h.outputs[0]);
}

TEST(Histogram, UnweightedCountsEqualUnitWeights_OP_HIST_1_OP_HIST_3_COV_1) {
  const IndexBox box = box_of({0, 0, 0}, {11, 8, 6});
  auto x_value = [](int i, int j, int k) {
    return i == 3 && j == 0 && k == 0 ? kNaN : std::sin(0.7 * i + 0.3 * j) * 3.0 + 0.1 * k;
  };
  auto y_value = [](int i, int j, int k) { return std::cos(0.2 * i * j) + 0.05 * k; };
  const BufferPtr x = make_grid(box, x_value);
  const BufferPtr y = make_grid(box, y_value, ScalarType::f32);
  const BufferPtr ones = make_grid(box, [](int, int, int) { return 1.0; });
  for (std::int64_t bins : {3, 64, 5000}) {
    const auto p = h1(-2.5, 2.5, bins);
    const auto counted = histogram_of({x}, &p, nullptr, static_cast<std::uint64_t>(bins));
    EXPECT_EQ(counted, histogram_of({x, ones}, &p, nullptr, static_cast<std::uint64_t>(bins))) << bins << " bins";
    double total = 0.0;
    for (double c : counted) total += c;
    EXPECT_GT(total, 100.0);
  }
  for (std::array<std::int64_t, 2> bins : {std::array<std::int64_t, 2>{3, 4}, std::array<std::int64_t, 2>{60, 90}}) {
    const auto p = h2({-2.5, 2.5}, {0.0, 1.2}, bins);
    const auto n = static_cast<std::uint64_t>(bins[0] * bins[1]);
    const auto counted = histogram_of({x, y}, nullptr, &p, n);
    EXPECT_EQ(counted, histogram_of({x, y, ones}, nullptr, &p, n)) << bins[0] << "x" << bins[1] << " bins";
    double total = 0.0;
    for (double c : counted) total += c;
    EXPECT_GT(total, 50.0);
  }
}

// --- 2D -------------------------------------------------------------------------------

TEST(Histogram2D, FlatPathIndexesXMajor_OP_HIST_3) {
  KernelHarness h;
  // (x, y): (0.5,-0.5)->[0,0]; (2.9,0.5)->[2,1]; (3,1) both hi->[2,1];
  // (1,0)->[1,1]; NaN x, y out of range, x below range -> skipped;
  // (2,-1)->[2,0].
  h.inputs = {make_filled(ScalarType::f64, {8}, {0.5, 2.9, 3.0, 1.0, kNaN, 1.0, -1.0, 2.0}),
              make_filled(ScalarType::f64, {8}, {-0.5, 0.5, 1.0, 0.0, 0.0, 2.0, 0.0, -1.0})};
  h.outputs = {make_filled(ScalarType::f64, {3, 2}, std::vector<double>(6, 9.0))};
  h.params = h2({0.0, 3.0}, {-1.0, 1.0}, {3, 2});
  h.run("histogram2d_accumulate");
  EXPECT_EQ(values_of(*h.outputs[0]), (std::vector<double>{1, 0, 0, 1, 1, 2}));
}

TEST(Histogram2D, FlatPathWeights_OP_HIST_3) {
  KernelHarness h;
  h.inputs = {make_filled(ScalarType::f64, {2, 2}, {0.5, 1.5, 1.5, 0.5}),
              make_filled(ScalarType::f32, {2, 2}, {0.5, 0.5, 1.5, 1.5}),
              make_filled(ScalarType::f64, {4}, {2.0, 3.0, -kInf, 0.25})};
  h.outputs = {test::make_buffer(ScalarType::f64, {2, 2})};
  h.params = h2({0.0, 2.0}, {0.0, 2.0}, {2, 2});
  h.run("histogram2d_accumulate");
  // [0,0] += 2; [1,0] += 3; (1.5,1.5) skipped (weight -inf); [0,1] += 0.25.
  EXPECT_EQ(values_of(*h.outputs[0]), (std::vector<double>{2.0, 0.25, 3.0, 0.0}));
}

TEST(Histogram2D, GridPathCoverageAndCellMassUsesX_OP_HIST_3) {
  auto y_value = [](int i, int j, int k) { return static_cast<double>(i + j + k); };
  auto h = grid_harness();
  h.inputs.push_back(make_grid(grid_box(), y_value));
  h.outputs = {test::make_buffer(ScalarType::f64, {2, 3})};
  h.params = h2({-2.0, 7.0}, {5.0, 11.0}, {2, 3}, "cell_mass");
  h.run("histogram2d_accumulate");
  std::vector<double> want(6, 0.0);
  for (int i = 4; i <= 6; ++i) {
    for (int j = 0; j <= 2; ++j) {
      for (int k = 1; k <= 2; ++k) {
        if (in_test_coverage(i, j, k)) continue;
        const double x = grid_value(i, j, k), y = y_value(i, j, k);
        if (x < -2.0 || x > 7.0 || y < 5.0 || y > 11.0) continue;
        const int bx = x < 2.5 ? 0 : 1;                  // edges -2, 2.5, 7
        const int by = y < 7.0 ? 0 : (y < 9.0 ? 1 : 2);  // edges 5, 7, 9, 11
        want[static_cast<std::size_t>(bx * 3 + by)] += x * 0.25;
      }
    }
  }
  expect_near_all(values_of(*h.outputs[0]), want);
  double mass = 0.0;
  for (double w : want)
    mass += std::fabs(w);
  EXPECT_GT(mass, 0.0);
}

// A grid of grid_box() in Fortran order (x fastest), as AMReX FABs are.
BufferPtr fortran_grid(const std::function<double(int, int, int)>& value,
                       ScalarType scalar = ScalarType::f64) {
  std::vector<double> values;
  for (int i = 4; i <= 6; ++i) {
    for (int j = 0; j <= 2; ++j) {
      for (int k = 1; k <= 2; ++k)
        values.push_back(value(i, j, k));
    }
  }
  return test::make_fortran(scalar, {3, 3, 2}, values);
}

TEST(Histogram1D, GridPathMixedLayoutsMapByLogicalIndex_OP_HIST_1_OP_GEN_1) {
  // Fortran-order values with C-order weights: every buffer is read by the
  // logical (i, j, k) of the cell, whatever its layout.
  auto weight = [](int i, int j, int k) { return 1.0 + i - 0.5 * j + 0.25 * k; };
  auto h = grid_harness();
  h.inputs = {fortran_grid(grid_value), make_grid(grid_box(), weight, ScalarType::f32)};
  h.outputs = {garbage_bins(3)};
  h.params = h1(-1.0, 6.0, 3);
  h.run("histogram1d_accumulate");
  expect_near_all(values_of(*h.outputs[0]), grid_reference(-1.0, 6.0, 3, weight));
}

TEST(Histogram2D, GridPathFortranOrderMatchesCOrder_OP_HIST_3) {
  auto y_value = [](int i, int j, int k) { return static_cast<double>(i + j + k); };
  std::vector<double> results[2];
  for (int fortran = 0; fortran < 2; ++fortran) {
    auto h = grid_harness();
    if (fortran) h.inputs = {fortran_grid(grid_value), fortran_grid(y_value, ScalarType::f32)};
    else h.inputs.push_back(make_grid(grid_box(), y_value, ScalarType::f32));
    h.outputs = {test::make_buffer(ScalarType::f64, {2, 3})};
    h.params = h2({-2.0, 7.0}, {5.0, 11.0}, {2, 3}, "cell_mass");
    h.run("histogram2d_accumulate");
    results[fortran] = values_of(*h.outputs[0]);
  }
  expect_near_all(results[1], results[0]);
  double mass = 0.0;
  for (double w : results[0])
    mass += std::fabs(w);
  EXPECT_GT(mass, 0.0);
}

// --- errors ---------------------------------------------------------------------------

TEST(HistogramErrors, InvalidParameters_OP_HIST_4_ERR_36) {
  auto run1 = [](Histogram1DParams p) {
    KernelHarness h;
    h.inputs = {make_filled(ScalarType::f64, {3}, {0.1, 0.2, 0.3})};
    h.outputs = {test::make_buffer(
        ScalarType::f64, {static_cast<std::uint64_t>(std::max<std::int64_t>(p.bins, 1))})};
    h.params = p;
    h.run("histogram1d_accumulate");
  };
  EXPECT_TRUE(throws_with([&] { run1(h1(0.0, 1.0, 0)); },
                          "histogram1d_accumulate: invalid parameters: bins"));
  EXPECT_TRUE(throws_with([&] { run1(h1(0.0, 1.0, -2)); }, "invalid parameters: bins must be > 0"));
  EXPECT_TRUE(throws_with([&] { run1(h1(1.0, 1.0, 2)); },
                          "invalid parameters: range must be finite and increasing"));
  EXPECT_TRUE(throws_with([&] { run1(h1(2.0, 1.0, 2)); }, "finite and increasing"));
  EXPECT_TRUE(throws_with([&] { run1(h1(kNaN, 1.0, 2)); }, "finite and increasing"));
  EXPECT_TRUE(throws_with([&] { run1(h1(0.0, kInf, 2)); }, "finite and increasing"));
  EXPECT_TRUE(throws_with([&] { run1(h1(0.0, 1.0, 2, "mass")); },
                          "invalid parameters: unknown weight_mode 'mass'"));
  EXPECT_TRUE(throws_with([&] { run1(h1(0.0, 1.0, 2, "cell_volume")); },
                          "invalid parameters: weight_mode 'cell_volume' needs AMR block data"));
  EXPECT_TRUE(throws_with([&] { run1(h1(0.0, 1.0, 2, "cell_mass")); },
                          "bounded arrays support only 'input'"));

  auto run2 = [](Histogram2DParams p) {
    KernelHarness h;
    h.inputs = {make_filled(ScalarType::f64, {2}, {0.1, 0.2}),
                make_filled(ScalarType::f64, {2}, {0.1, 0.2})};
    h.outputs = {test::make_buffer(ScalarType::f64, {2, 2})};
    h.params = p;
    h.run("histogram2d_accumulate");
  };
  EXPECT_TRUE(throws_with(
      [&] {
        run2(h2({0, 1}, {0, 1}, {2, 0}));
      },
      "histogram2d_accumulate: invalid parameters: bins"));
  EXPECT_TRUE(throws_with(
      [&] {
        run2(h2({0, 1}, {1, 0}, {2, 2}));
      },
      "invalid parameters: y_range must be finite"));
  EXPECT_TRUE(throws_with(
      [&] {
        run2(h2({0, kNaN}, {0, 1}, {2, 2}));
      },
      "invalid parameters: x_range must be finite"));
  EXPECT_TRUE(throws_with(
      [&] {
        run2(h2({0, 1}, {0, 1}, {2, 2}, "volume"));
      },
      "unknown weight_mode"));
  EXPECT_TRUE(throws_with(
      [&] {
        run2(h2({0, 1}, {0, 1}, {2, 2}, "cell_volume"));
      },
      "bounded arrays support only"));
}

TEST(HistogramErrors, ModeWithExplicitWeightsRejected_OP_HIST_3) {
  auto h = grid_harness();
  h.inputs.push_back(make_grid(grid_box(), [](int, int, int) { return 1.0; }));
  h.outputs = {test::make_buffer(ScalarType::f64, {2})};
  h.params = h1(0.0, 1.0, 2, "cell_mass");
  EXPECT_TRUE(throws_with(
      [&] { h.run("histogram1d_accumulate"); },
      "invalid parameters: weight_mode 'cell_mass' cannot be combined with explicit weights"));
  h.inputs.insert(h.inputs.begin() + 1, make_grid(grid_box(), grid_value));
  h.outputs = {test::make_buffer(ScalarType::f64, {2, 2})};
  h.params = h2({0, 1}, {0, 1}, {2, 2}, "cell_volume");
  EXPECT_TRUE(throws_with([&] { h.run("histogram2d_accumulate"); },
                          "cannot be combined with explicit weights"));
}

TEST(HistogramErrors, CellWeightsRequireCartesianCoordinates_COORD_5) {
  auto h = grid_harness();
  h.runmeta.coord_sys = 1;
  h.outputs = {test::make_buffer(ScalarType::f64, {2})};
  h.params = h1(-2.0, 7.0, 2, "cell_volume");
  EXPECT_TRUE(throws_with([&] { h.run("histogram1d_accumulate"); },
                          "operator requires Cartesian coordinates (coord_sys=1)"));
  // Unweighted histograms stay allowed on RZ data.
  h.params = h1(-2.0, 7.0, 2);
  h.run("histogram1d_accumulate");
  const auto counts = values_of(*h.outputs[0]);
  EXPECT_EQ(counts[0] + counts[1], 13.0);
}

TEST(HistogramErrors, ShapeAndTypeViolations_OP_HIST_2_ERR_18) {
  {
    KernelHarness h;
    h.inputs = {make_filled(ScalarType::f64, {4}, {0, 0, 0, 0}),
                make_filled(ScalarType::f64, {3}, {1, 1, 1})};
    h.outputs = {test::make_buffer(ScalarType::f64, {2})};
    h.params = h1(0.0, 1.0, 2);
    EXPECT_TRUE(throws_with([&] { h.run("histogram1d_accumulate"); },
                            "bounded histogram values and weights must have matching extents"));
  }
  {
    KernelHarness h;
    h.inputs = {make_filled(ScalarType::f64, {4}, {0, 0, 0, 0}),
                make_filled(ScalarType::f64, {5}, {0, 0, 0, 0, 0})};
    h.outputs = {test::make_buffer(ScalarType::f64, {2, 2})};
    h.params = h2({0, 1}, {0, 1}, {2, 2});
    EXPECT_TRUE(
        throws_with([&] { h.run("histogram2d_accumulate"); }, "must have matching extents"));
    h.inputs.push_back(make_filled(ScalarType::f64, {2}, {1, 1}));
    h.inputs[1] = make_filled(ScalarType::f64, {4}, {0, 0, 0, 0});
    EXPECT_TRUE(throws_with([&] { h.run("histogram2d_accumulate"); },
                            "bounded histogram values and weights must have matching extents"));
    h.inputs.resize(1);
    EXPECT_TRUE(throws_with([&] { h.run("histogram2d_accumulate"); },
                            "histogram2d_accumulate: invalid parameters"));
  }
  {
    KernelHarness h;
    h.inputs = {test::make_buffer(ScalarType::u8, {4})};
    h.outputs = {test::make_buffer(ScalarType::f64, {2})};
    h.params = h1(0.0, 1.0, 2);
    EXPECT_TRUE(throws_with([&] { h.run("histogram1d_accumulate"); },
                            "real-buffer visitor accepts only f32 and f64 inputs"));
    h.inputs = {test::make_buffer(ScalarType::f64, {4})};
    h.outputs = {test::make_buffer(ScalarType::f64, {3})};
    EXPECT_TRUE(throws_with([&] { h.run("histogram1d_accumulate"); },
                            "output must be a dense f64 array of 2 bins"));
    h.outputs = {test::make_buffer(ScalarType::f32, {2})};
    EXPECT_TRUE(
        throws_with([&] { h.run("histogram1d_accumulate"); }, "output must be a dense f64 array"));
    h.outputs = {};
    EXPECT_TRUE(throws_with([&] { h.run("histogram1d_accumulate"); },
                            "invalid parameters: missing output 0"));
  }
  {
    // Grid values with flat weights: the weights must be a block grid too.
    auto h = grid_harness();
    h.inputs.push_back(make_filled(ScalarType::f64, {18}, std::vector<double>(18, 1.0)));
    h.outputs = {test::make_buffer(ScalarType::f64, {2})};
    h.params = h1(0.0, 1.0, 2);
    EXPECT_TRUE(throws_with([&] { h.run("histogram1d_accumulate"); }, "is not a block grid"));
  }
  {
    auto h = grid_harness();
    h.inputs = {test::make_buffer(ScalarType::f64, {3, 3, 3})};
    h.outputs = {test::make_buffer(ScalarType::f64, {2})};
    h.params = h1(0.0, 1.0, 2);
    EXPECT_TRUE(throws_with([&] { h.run("histogram1d_accumulate"); }, "is not a block grid"));
    h.inputs = {make_grid(grid_box(), grid_value)};
    h.block = 9;
    EXPECT_TRUE(throws_with([&] { h.run("histogram1d_accumulate"); },
                            "invalid parameters: block 9 is out of range"));
  }
}

}  // namespace
}  // namespace kangaroo
