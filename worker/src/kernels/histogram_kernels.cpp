// Histograms over mesh data (OP-HIST-1..4): a grid path over the block's cells
// with coverage masking, and a flat path over bounded arrays.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "kangaroo/kernels/math/binning.h"
#include "kangaroo/kernels/register.h"
#include "kernel_support.h"

namespace kangaroo {

namespace {

namespace ks = kernel_support;

constexpr std::size_t kStagingElements = 4096;

enum class WeightMode { input, cell_mass, cell_volume };

WeightMode parse_weight_mode(std::string_view kernel, const std::string& mode) {
  if (mode == "input") return WeightMode::input;
  if (mode == "cell_mass") return WeightMode::cell_mass;
  if (mode == "cell_volume") return WeightMode::cell_volume;
  fail_kernel_params(
      kernel, "unknown weight_mode '" + mode + "' (expected input, cell_mass or cell_volume)");
}

struct BinAxis {
  math::HistogramBinner binner;

  std::int64_t bins() const { return binner.bins(); }
  std::int64_t bin(double x) const { return binner(x); }
};

// OP-HIST-4.
BinAxis make_axis(std::string_view kernel, std::string_view name,
                  const std::array<double, 2>& range, std::int64_t bins) {
  if (bins <= 0) fail_kernel_params(kernel, "bins must be > 0 (got " + std::to_string(bins) + ")");
  if (!math::valid_histogram_range(range[0], range[1])) {
    fail_kernel_params(kernel, std::string(name) + " must be finite and increasing (lo < hi)");
  }
  return {math::HistogramBinner(range[0], range[1], bins)};
}

// Bins of runs of samples along one line, up to kStagingElements at a time
// with HistogramBinner::bin_many: f64 samples with unit stride are binned in
// place, others are staged as doubles first.
class RunBinner {
 public:
  explicit RunBinner(const math::HistogramBinner& binner)
      : binner_(binner), staged_(kStagingElements), bins_(kStagingElements) {}

  static bool serves(std::int64_t bins) { return bins <= math::HistogramBinner::kMaxManyBins; }

  // Bins of x[(start + i) * stride] for i < m (m <= kStagingElements).
  template <class T>
  const std::int32_t* bin(const T* x, std::int64_t stride, std::int64_t start, std::size_t m) {
    const double* run = staged_.data();
    if constexpr (std::is_same_v<T, double>) {
      if (stride == 1) run = x + start;
    }
    if (run == staged_.data()) {
      for (std::size_t i = 0; i < m; ++i)
        staged_[i] = static_cast<double>(x[(start + static_cast<std::int64_t>(i)) * stride]);
    }
    binner_.bin_many(run, m, bins_.data());
    return bins_.data();
  }

 private:
  const math::HistogramBinner& binner_;
  std::vector<double> staged_;
  std::vector<std::int32_t> bins_;
};

// Calls fn(start, m) for the runs of a line of n samples that RunBinner takes.
template <class Fn>
void for_each_run(std::int64_t n, Fn&& fn) {
  for (std::int64_t start = 0; start < n; start += static_cast<std::int64_t>(kStagingElements)) {
    fn(start, static_cast<std::size_t>(std::min<std::int64_t>(static_cast<std::int64_t>(kStagingElements), n - start)));
  }
}

// Sample counts of an unweighted histogram. Consecutive cells of a smooth
// field mostly fall in one bin; counting them in interleaved copies keeps each
// increment from waiting on the one before. Counts are integers, so adding
// them at the end gives exactly what adding 1.0 per sample does.
class BinCounts {
 public:
  static constexpr std::uint64_t kInterleavedUpTo = 4096;  // bins; more take one copy

  explicit BinCounts(std::uint64_t bins)
      : stride_(bins + 1), copies_(bins <= kInterleavedUpTo ? 4 : 1), counts_(copies_ * stride_, 0) {}

  // Counts samples 0..n-1 of a line: `bin_of(t)` is sample t's bin, or -1
  // when it is skipped (counted in a slot never read). The loop works on
  // local copies, which the counter stores cannot alias.
  template <class BinOf>
  void count(std::int64_t n, BinOf&& bin_of) {
    std::uint64_t* c = counts_.data();
    const std::uint64_t stride = stride_;
    const auto mask = static_cast<std::int64_t>(copies_ - 1);
    for (std::int64_t t = 0; t < n; ++t) {
      ++c[static_cast<std::uint64_t>(t & mask) * stride + static_cast<std::uint64_t>(bin_of(t) + 1)];
    }
  }

  void add_to(double* hist) const {
    for (std::uint64_t b = 1; b < stride_; ++b) {
      std::uint64_t n = 0;
      for (std::uint64_t c = 0; c < copies_; ++c) n += counts_[c * stride_ + b];
      hist[b - 1] += static_cast<double>(n);
    }
  }

 private:
  std::uint64_t stride_;
  std::uint64_t copies_;
  std::vector<std::uint64_t> counts_;
};

// The histogram output, zeroed: f64 holding exactly `count` dense elements.
double* histogram_output(const KernelContext& ctx, std::string_view kernel, std::uint64_t count) {
  Buffer& out = ks::output_at(ctx, kernel, 0);
  const Descriptor& d = out.descriptor();
  if (out.scalar() != ScalarType::f64 || d.element_count() != count || !d.is_c_contiguous()) {
    fail(ErrorKind::kernel, std::string(kernel) + ": output must be a dense f64 array of " +
                                std::to_string(count) + " bins (got " + d.to_string() + ")");
  }
  double* bins = out.elements<double>();
  std::fill_n(bins, count, 0.0);
  return bins;
}

// Resolves the per-sample weight rule of OP-HIST-1/3 and rejects the
// combinations the contract forbids.
struct WeightRule {
  WeightMode mode = WeightMode::input;
  double cell_volume = 1.0;

  // Weight of a sample without explicit weights; NaN/inf skip the sample.
  double weight(double x) const {
    switch (mode) {
      case WeightMode::input:
        return 1.0;
      case WeightMode::cell_volume:
        return cell_volume;
      case WeightMode::cell_mass:
        return x * cell_volume;
    }
    return 1.0;
  }
};

WeightRule make_weight_rule(const KernelContext& ctx, std::string_view kernel,
                            const std::string& mode_name, bool explicit_weights, bool grid_path) {
  WeightRule rule;
  rule.mode = parse_weight_mode(kernel, mode_name);
  if (rule.mode == WeightMode::input) return rule;
  if (explicit_weights) {
    fail_kernel_params(kernel,
                       "weight_mode '" + mode_name + "' cannot be combined with explicit weights");
  }
  if (!grid_path) {
    fail_kernel_params(kernel, "weight_mode '" + mode_name +
                                   "' needs AMR block data; bounded arrays support only 'input'");
  }
  // COORD-5: cell volumes are Cartesian volumes.
  if (ctx.runmeta != nullptr && ctx.runmeta->coord_sys != 0) {
    fail_kernel(std::string(kernel) + ": operator requires Cartesian coordinates (coord_sys=" +
                std::to_string(ctx.runmeta->coord_sys) + ")");
  }
  if (ctx.level_meta == nullptr) fail_kernel_params(kernel, "missing level metadata");
  const auto& dx = ctx.level_meta->geom.dx;
  rule.cell_volume = dx[0] * dx[1] * dx[2];
  return rule;
}

// The flat path reads bounded arrays in C order (OP-HIST-2); it stages
// elements as doubles so f32 and f64 inputs share one loop.
class FlatReader {
 public:
  explicit FlatReader(const Buffer* b) : buffer_(b) {
    if (b != nullptr) values_.resize(kStagingElements);
  }
  const double* load(std::uint64_t start, std::size_t m) {
    if (buffer_ == nullptr) return nullptr;
    ks::gather_linear(*buffer_, start, m, values_.data());
    return values_.data();
  }

 private:
  const Buffer* buffer_;
  std::vector<double> values_;
};

void require_flat_match(std::string_view kernel, const Buffer& values, const Buffer* other,
                        std::string_view what) {
  if (other == nullptr) return;
  if (other->descriptor().element_count() != values.descriptor().element_count()) {
    fail_kernel(std::string(kernel) + ": bounded histogram " + std::string(what) +
                " must have matching extents (" + values.descriptor().to_string() + " vs " +
                other->descriptor().to_string() + ")");
  }
}

// OP-HIST-1 / OP-HIST-2.
void histogram1d_accumulate(KernelContext& ctx) {
  constexpr std::string_view kName = "histogram1d_accumulate";
  const auto& p = ctx.param<Histogram1DParams>();
  const BinAxis axis = make_axis(kName, "range", p.range, p.bins);
  if (ctx.inputs.size() > 2) {
    fail_kernel_params(kName, "expects values and optional weights (got " +
                                  std::to_string(ctx.inputs.size()) + " inputs)");
  }
  const Buffer& values = ks::input_at(ctx, kName, 0);
  const Buffer* weights = ctx.inputs.size() > 1 ? &ks::input_at(ctx, kName, 1) : nullptr;
  ks::require_real(values, kName, "input 0 (values)");
  if (weights != nullptr) ks::require_real(*weights, kName, "input 1 (weights)");
  const bool grid_path = values.rank() == 3;
  const WeightRule rule =
      make_weight_rule(ctx, kName, p.weight_mode, weights != nullptr, grid_path);
  double* hist = histogram_output(ctx, kName, static_cast<std::uint64_t>(axis.bins()));

  auto add = [&](double x, std::optional<double> w) {
    const std::int64_t b = axis.bin(x);
    if (b < 0) return;
    const double weight = w ? *w : rule.weight(x);
    if (!std::isfinite(weight)) return;
    hist[b] += weight;
  };

  if (grid_path) {
    const IndexBox& box = ctx.block_box();
    ks::require_block_grid(values, box, kName, "input 0 (values)");
    if (weights != nullptr) ks::require_block_grid(*weights, box, kName, "input 1 (weights)");
    const std::array<int, 3> order = ks::memory_order(values.descriptor());
    // Reads the values buffer when there are no weights; never used then.
    const Buffer& wbuf = weights != nullptr ? *weights : values;
    // Unweighted histograms count runs of samples at once; weighted ones add
    // sample by sample, in order.
    const bool counting = weights == nullptr && rule.mode == WeightMode::input && RunBinner::serves(axis.bins());
    std::optional<BinCounts> counts;
    std::optional<RunBinner> runs;
    if (counting) {
      counts.emplace(static_cast<std::uint64_t>(axis.bins()));
      runs.emplace(axis.binner);
    }
    visit_real(values, values.rank(), [&](auto gx) {
      visit_real(wbuf, wbuf.rank(), [&](auto gw) {
        const bool has_w = weights != nullptr;
        const std::int64_t sx = gx.s[order[2]];
        const std::int64_t sw = gw.s[order[2]];
        const std::int64_t n = box.extent(order[2]);
        ks::for_each_line(box, order, ctx.covered,
                          [&](std::int64_t a0, std::int64_t a1, const std::uint8_t* covered) {
                            const auto* xl = gx.base + a0 * gx.s[order[0]] + a1 * gx.s[order[1]];
                            const auto* wl = gw.base + a0 * gw.s[order[0]] + a1 * gw.s[order[1]];
                            if (counting) {
                              for_each_run(n, [&](std::int64_t start, std::size_t m) {
                                const std::int32_t* b = runs->bin(xl, sx, start, m);
                                const std::uint8_t* cov = covered != nullptr ? covered + start : nullptr;
                                counts->count(static_cast<std::int64_t>(m), [&](std::int64_t t) {
                                  return cov != nullptr && cov[t] != 0 ? std::int64_t{-1} : std::int64_t{b[t]};
                                });
                              });
                              return;
                            }
                            for (std::int64_t t = 0; t < n; ++t) {
                              if (covered != nullptr && covered[t] != 0) continue;
                              const auto xv = static_cast<double>(xl[t * sx]);
                              const std::int64_t b = axis.bin(xv);
                              if (b < 0) continue;
                              const double weight =
                                  has_w ? static_cast<double>(wl[t * sw]) : rule.weight(xv);
                              if (!std::isfinite(weight)) continue;
                              hist[b] += weight;
                            }
                          });
      });
    });
    if (counting) counts->add_to(hist);
    return;
  }

  require_flat_match(kName, values, weights, "values and weights");
  const std::uint64_t n = values.descriptor().element_count();
  FlatReader xs(&values);
  FlatReader ws(weights);
  for (std::uint64_t start = 0; start < n; start += kStagingElements) {
    const auto m = static_cast<std::size_t>(std::min<std::uint64_t>(kStagingElements, n - start));
    const double* x = xs.load(start, m);
    const double* w = ws.load(start, m);
    for (std::size_t e = 0; e < m; ++e)
      add(x[e], w ? std::optional<double>(w[e]) : std::nullopt);
  }
}

// OP-HIST-3: output (nx_bins, ny_bins) indexed [ix, iy].
void histogram2d_accumulate(KernelContext& ctx) {
  constexpr std::string_view kName = "histogram2d_accumulate";
  const auto& p = ctx.param<Histogram2DParams>();
  const BinAxis ax = make_axis(kName, "x_range", p.x_range, p.bins[0]);
  const BinAxis ay = make_axis(kName, "y_range", p.y_range, p.bins[1]);
  std::uint64_t cells = 0;
  if (__builtin_mul_overflow(static_cast<std::uint64_t>(ax.bins()),
                             static_cast<std::uint64_t>(ay.bins()), &cells)) {
    fail_kernel_params(kName, "bins overflow the output size");
  }
  if (ctx.inputs.size() < 2 || ctx.inputs.size() > 3) {
    fail_kernel_params(kName, "expects x, y and optional weights (got " +
                                  std::to_string(ctx.inputs.size()) + " inputs)");
  }
  const Buffer& xbuf = ks::input_at(ctx, kName, 0);
  const Buffer& ybuf = ks::input_at(ctx, kName, 1);
  const Buffer* weights = ctx.inputs.size() > 2 ? &ks::input_at(ctx, kName, 2) : nullptr;
  ks::require_real(xbuf, kName, "input 0 (x)");
  ks::require_real(ybuf, kName, "input 1 (y)");
  if (weights != nullptr) ks::require_real(*weights, kName, "input 2 (weights)");
  const bool grid_path = xbuf.rank() == 3;
  const WeightRule rule =
      make_weight_rule(ctx, kName, p.weight_mode, weights != nullptr, grid_path);
  double* hist = histogram_output(ctx, kName, cells);

  auto add = [&](double x, double y, std::optional<double> w) {
    const std::int64_t bx = ax.bin(x);
    if (bx < 0) return;
    const std::int64_t by = ay.bin(y);
    if (by < 0) return;
    const double weight = w ? *w : rule.weight(x);
    if (!std::isfinite(weight)) return;
    hist[bx * ay.bins() + by] += weight;
  };

  if (grid_path) {
    const IndexBox& box = ctx.block_box();
    ks::require_block_grid(xbuf, box, kName, "input 0 (x)");
    ks::require_block_grid(ybuf, box, kName, "input 1 (y)");
    if (weights != nullptr) ks::require_block_grid(*weights, box, kName, "input 2 (weights)");
    const std::array<int, 3> order = ks::memory_order(xbuf.descriptor());
    // Reads the x buffer when there are no weights; never used then.
    const Buffer& wbuf = weights != nullptr ? *weights : xbuf;
    const bool counting = weights == nullptr && rule.mode == WeightMode::input && RunBinner::serves(ax.bins()) &&
                          RunBinner::serves(ay.bins());
    std::optional<BinCounts> counts;
    std::optional<RunBinner> x_runs;
    std::optional<RunBinner> y_runs;
    if (counting) {
      counts.emplace(cells);
      x_runs.emplace(ax.binner);
      y_runs.emplace(ay.binner);
    }
    visit_real(xbuf, xbuf.rank(), [&](auto gx) {
      visit_real(ybuf, ybuf.rank(), [&](auto gy) {
        visit_real(wbuf, wbuf.rank(), [&](auto gw) {
          const bool has_w = weights != nullptr;
          const std::int64_t sx = gx.s[order[2]];
          const std::int64_t sy = gy.s[order[2]];
          const std::int64_t sw = gw.s[order[2]];
          const std::int64_t n = box.extent(order[2]);
          ks::for_each_line(
              box, order, ctx.covered,
              [&](std::int64_t a0, std::int64_t a1, const std::uint8_t* covered) {
                const auto* xl = gx.base + a0 * gx.s[order[0]] + a1 * gx.s[order[1]];
                const auto* yl = gy.base + a0 * gy.s[order[0]] + a1 * gy.s[order[1]];
                const auto* wl = gw.base + a0 * gw.s[order[0]] + a1 * gw.s[order[1]];
                if (counting) {
                  const std::int64_t ny_bins = ay.bins();
                  for_each_run(n, [&](std::int64_t start, std::size_t m) {
                    const std::int32_t* bx = x_runs->bin(xl, sx, start, m);
                    const std::int32_t* by = y_runs->bin(yl, sy, start, m);
                    const std::uint8_t* cov = covered != nullptr ? covered + start : nullptr;
                    counts->count(static_cast<std::int64_t>(m), [&](std::int64_t t) {
                      if ((cov != nullptr && cov[t] != 0) || bx[t] < 0 || by[t] < 0) return std::int64_t{-1};
                      return std::int64_t{bx[t]} * ny_bins + by[t];
                    });
                  });
                  return;
                }
                for (std::int64_t t = 0; t < n; ++t) {
                  if (covered != nullptr && covered[t] != 0) continue;
                  const auto xv = static_cast<double>(xl[t * sx]);
                  const std::int64_t bx = ax.bin(xv);
                  if (bx < 0) continue;
                  const std::int64_t by = ay.bin(static_cast<double>(yl[t * sy]));
                  if (by < 0) continue;
                  const double weight = has_w ? static_cast<double>(wl[t * sw]) : rule.weight(xv);
                  if (!std::isfinite(weight)) continue;
                  hist[bx * ay.bins() + by] += weight;
                }
              });
        });
      });
    });
    if (counting) counts->add_to(hist);
    return;
  }

  require_flat_match(kName, xbuf, &ybuf, "x and y values");
  require_flat_match(kName, xbuf, weights, "values and weights");
  const std::uint64_t n = xbuf.descriptor().element_count();
  FlatReader xs(&xbuf);
  FlatReader ys(&ybuf);
  FlatReader ws(weights);
  for (std::uint64_t start = 0; start < n; start += kStagingElements) {
    const auto m = static_cast<std::size_t>(std::min<std::uint64_t>(kStagingElements, n - start));
    const double* x = xs.load(start, m);
    const double* y = ys.load(start, m);
    const double* w = ws.load(start, m);
    for (std::size_t e = 0; e < m; ++e)
      add(x[e], y[e], w ? std::optional<double>(w[e]) : std::nullopt);
  }
}

}  // namespace

void register_histogram_kernels(KernelRegistry& registry) {
  registry.add(make_kernel("histogram1d_accumulate", ParamType::Histogram1DParams,
                           &histogram1d_accumulate, 1, 1));
  registry.add(make_kernel("histogram2d_accumulate", ParamType::Histogram2DParams,
                           &histogram2d_accumulate, 2, 1));
}

}  // namespace kangaroo
