// Histogram binning shared by the CPU and CUDA histogram kernels (OP-HIST-1,
// OP-HIST-4).
#pragma once

#include <cmath>
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

}  // namespace kangaroo::math
