// Histogram binning shared by the CPU and CUDA histogram kernels (OP-HIST-1,
// OP-HIST-4).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kangaroo/kernels/math/hd.h"

namespace kangaroo::math {

// OP-HIST-4: a usable range is finite and strictly increasing.
KANGAROO_HD bool valid_histogram_range(double lo, double hi) {
  return std::isfinite(lo) && std::isfinite(hi) && lo < hi;
}

// OP-HIST-1 bin of `x` in `[lo, hi]` split into `bins` equal bins, or -1 when
// the sample is skipped. `x == hi` belongs to the last bin so the closed range
// counts its upper edge; the arithmetic order follows the contract so every
// backend rounds identically at bin edges.
KANGAROO_HD std::int64_t histogram_bin(double x, double lo, double hi, std::int64_t bins) {
  if (!std::isfinite(x) || x < lo || x > hi) return -1;
  if (x == hi) return bins - 1;
  const double b = std::floor((x - lo) * static_cast<double>(bins) / (hi - lo));
  // Also rejects NaN from an overflowing `hi - lo`.
  if (!(b >= 0.0) || b >= static_cast<double>(bins)) return -1;
  return static_cast<std::int64_t>(b);
}

// OP-HIST-1 bins of many samples on one axis: exactly the bins of
// histogram_bin, without its division per sample. The quotient is taken as a
// product with the range's reciprocal, which can differ from the correctly
// rounded quotient by a few units in the last place. That changes the floor
// only when the quotient lies that close to an integer (a sample on or next to
// a bin edge); such samples, and axes where the product could overflow, take
// histogram_bin itself.
class HistogramBinner {
 public:
  HistogramBinner(double lo, double hi, std::int64_t bins) : lo_(lo), hi_(hi), bins_(bins) {
    nb_ = static_cast<double>(bins);
    const double span = hi - lo;
    inv_ = 1.0 / span;
    // The product (x - lo) * bins stays finite and the bin fits an int64 cast.
    fast_ = valid_histogram_range(lo, hi) && bins > 0 && bins <= (std::int64_t{1} << 40) &&
            std::isfinite(span) && std::isfinite(span * nb_) && std::isnormal(inv_);
  }

  std::int64_t operator()(double x) const {
    if (!fast_) return histogram_bin(x, lo_, hi_, bins_);
    // Rejects NaN and infinities too: lo and hi are finite.
    if (!(x >= lo_ && x <= hi_)) return -1;
    if (x == hi_) return bins_ - 1;
    const double q = (x - lo_) * nb_ * inv_;
    const double k = static_cast<double>(static_cast<std::int64_t>(q));  // q >= 0: truncation is floor
    const double slack = q * 0x1p-48;
    if (q - k < slack || k + 1.0 - q <= slack) return histogram_bin(x, lo_, hi_, bins_);
    return k < nb_ ? static_cast<std::int64_t>(k) : -1;
  }

  std::int64_t bins() const { return bins_; }

  // Largest axis bin_many serves: its bins are 32-bit.
  static constexpr std::int64_t kMaxManyBins = (std::int64_t{1} << 31) - 1;

  // The bins of x[0..n) into out, exactly as operator() gives them, several
  // samples at a time where the processor allows (host code; bins() <=
  // kMaxManyBins).
  void bin_many(const double* x, std::size_t n, std::int32_t* out) const;

 private:
  double lo_;
  double hi_;
  std::int64_t bins_;
  double nb_ = 0.0;
  double inv_ = 0.0;
  bool fast_ = false;
};

}  // namespace kangaroo::math
