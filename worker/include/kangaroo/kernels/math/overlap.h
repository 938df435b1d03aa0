// Cell/pixel geometry shared by the slice and projection kernels on CPU and
// CUDA (COORD-1, COORD-2, AXIS-2, AXIS-3, OP-SLICE-1, OP-PROJ-1).
#pragma once

#include <cmath>
#include <cstdint>

#include "kangaroo/kernels/math/hd.h"

namespace kangaroo::math {

// COORD-1: low edge of cell `index` (the high edge is the low edge of index+1).
KANGAROO_HD double cell_edge(double x0, double dx, std::int64_t origin, std::int64_t index) {
  return x0 + static_cast<double>(index - origin) * dx;
}

// COORD-2, saturated so that far-away or non-finite coordinates cannot turn
// into an undefined float-to-integer conversion; callers reject NaN first.
KANGAROO_HD std::int64_t coord_to_cell(double x, double x0, double dx, std::int64_t origin) {
  if (dx == 0.0) return origin;
  double f = std::floor((x - x0) / dx);
  if (!(f == f)) f = 0.0;
  if (f < -4.0e18) f = -4.0e18;
  if (f > 4.0e18) f = 4.0e18;
  return static_cast<std::int64_t>(f) + origin;
}

// AXIS-2: in-plane axes (u, v) of a normal axis, in increasing order.
struct PlaneAxes {
  int u;
  int v;
};
KANGAROO_HD PlaneAxes plane_axes(int normal) {
  if (normal == 0) return {1, 2};
  if (normal == 1) return {0, 2};
  return {0, 1};
}

// Signed length of the intersection of [a_lo, a_hi) and [b_lo, b_hi); callers
// keep only positive overlaps.
KANGAROO_HD double overlap_length(double a_lo, double a_hi, double b_lo, double b_hi) {
  const double hi = a_hi < b_hi ? a_hi : b_hi;
  const double lo = a_lo > b_lo ? a_lo : b_lo;
  return hi - lo;
}

// Inclusive pixel index range; empty when first > last.
struct PixelSpan {
  std::int64_t first;
  std::int64_t last;
  KANGAROO_HD bool empty() const { return first > last; }
};

// OP-SLICE-1: pixels [floor((lo-origin)/width), floor((hi-origin)/width)]
// touched by the footprint [lo, hi), clipped to [0, count). Clamping happens in
// floating point before the integer conversion so huge footprints stay defined.
KANGAROO_HD PixelSpan pixel_span(double lo, double hi, double origin, double width,
                                 std::int64_t count) {
  double f0 = std::floor((lo - origin) / width);
  double f1 = std::floor((hi - origin) / width);
  if (!(f0 == f0) || !(f1 == f1)) return {0, -1};
  const double top = static_cast<double>(count - 1);
  if (f0 < 0.0) f0 = 0.0;
  if (f1 > top) f1 = top;
  if (f0 > top || f1 < 0.0) return {0, -1};
  return {static_cast<std::int64_t>(f0), static_cast<std::int64_t>(f1)};
}

// AXIS-3: low edge of pixel `index` along an image axis.
KANGAROO_HD double pixel_edge(double origin, double width, std::int64_t index) {
  return origin + static_cast<double>(index) * width;
}

}  // namespace kangaroo::math
