// Min/max accumulation rules of OP-PART-6 / OP-RED-5, shared by the particle
// scalar kernels, their reducers and a device implementation.
#pragma once

#include <cmath>

#include "kangaroo/kernels/math/hd.h"

namespace kangaroo::math {

// Identity of each rule: the result when nothing qualifies. INFINITY/NAN
// rather than numeric_limits keep these usable in device code.
KANGAROO_HD double min_identity() {
  return static_cast<double>(INFINITY);
}
KANGAROO_HD double max_identity() {
  return -static_cast<double>(INFINITY);
}

// With `finite_only`, non-finite values are ignored; otherwise NaN is sticky
// (numpy semantics) and infinities compete like any other value. The result is
// therefore independent of how the values were split into chunks.
KANGAROO_HD double min_rule(double acc, double x, bool finite_only) {
  if (finite_only && !std::isfinite(x)) return acc;
  if (std::isnan(acc) || std::isnan(x)) return static_cast<double>(NAN);
  return x < acc ? x : acc;
}

KANGAROO_HD double max_rule(double acc, double x, bool finite_only) {
  if (finite_only && !std::isfinite(x)) return acc;
  if (std::isnan(acc) || std::isnan(x)) return static_cast<double>(NAN);
  return x > acc ? x : acc;
}

}  // namespace kangaroo::math
