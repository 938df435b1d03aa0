// Periodic images on AMR domains, shared by the halo/gradient kernels
// (OP-GRAD-1, OP-GRAD-3) and the particle deposits (OP-CIC-1, OP-CIC-2) on
// CPU and CUDA.
#pragma once

#include <cmath>
#include <cstdint>

#include "kangaroo/kernels/math/hd.h"

namespace kangaroo::math {

// A coordinate moved into a periodic interval. `shift` is what was added
// (a whole number of periods), so the image of a position `p` found at the
// wrapped point lies at `p - shift` next to the original point.
struct WrappedCoord {
  double x;
  double shift;
  bool inside;  // false: outside the interval on a non-periodic axis
};

// Wraps `x` into [lo, lo + length). Points already inside are returned
// untouched (shift exactly 0), so non-periodic and interior samples never see
// rounding from the wrap arithmetic.
KANGAROO_HD WrappedCoord wrap_coordinate(double x, double lo, double length, bool periodic) {
  const double hi = lo + length;
  if (x >= lo && x < hi) return {x, 0.0, true};
  if (!periodic || !(length > 0.0) || !std::isfinite(x)) return {x, 0.0, false};
  double shift = -std::floor((x - lo) / length) * length;
  double w = x + shift;
  // The floor can land one period off when x - lo rounds across a multiple
  // of the length; one correction step restores lo <= w < hi.
  if (w >= hi) {
    shift -= length;
    w = x + shift;
  } else if (w < lo) {
    shift += length;
    w = x + shift;
  }
  if (!(w >= lo && w < hi)) return {x, 0.0, false};
  return {w, shift, true};
}

// Index `i` wrapped into the inclusive range [lo, lo + count - 1]; count > 0.
KANGAROO_HD std::int64_t wrap_index(std::int64_t i, std::int64_t lo, std::int64_t count) {
  std::int64_t r = (i - lo) % count;
  if (r < 0) r += count;
  return lo + r;
}

}  // namespace kangaroo::math
