// Per-element math of the particle kernels (OP-PART-2..7). Kept free of
// buffers, allocation and exceptions so that the CPU kernels and a CUDA path
// compile the very same formulas.
#pragma once

#include <cmath>
#include <cstdint>

#include "kangaroo/kernels/math/hd.h"

namespace kangaroo::math::particle {

// OP-PART-2 scalar comparisons.
enum class CompareOp : std::uint8_t { eq, ne, lt, le, gt, ge, abs_lt };

KANGAROO_HD bool compare(CompareOp op, double x, double s) {
  switch (op) {
    case CompareOp::eq:
      return x == s;
    case CompareOp::ne:
      return x != s;
    case CompareOp::lt:
      return x < s;
    case CompareOp::le:
      return x <= s;
    case CompareOp::gt:
      return x > s;
    case CompareOp::ge:
      return x >= s;
    case CompareOp::abs_lt:
      return std::fabs(x) < s;
  }
  return false;
}

// Mask bytes are exactly 0 or 1 (OP-PART-2), whatever the producer.
KANGAROO_HD std::uint8_t mask_byte(bool value) {
  return value ? 1 : 0;
}

KANGAROO_HD bool is_finite(double x) {
  return std::isfinite(x);
}

// OP-PART-2 isin: exact equality, so NaN never matches and -0 matches +0.
KANGAROO_HD bool is_in(double x, const double* values, std::uint64_t count) {
  for (std::uint64_t i = 0; i < count; ++i) {
    if (x == values[i]) return true;
  }
  return false;
}

// OP-PART-5 elementwise arithmetic with plain IEEE semantics.
enum class BinaryOp : std::uint8_t { add, subtract, multiply, divide, power };

KANGAROO_HD double apply(BinaryOp op, double a, double b) {
  switch (op) {
    case BinaryOp::add:
      return a + b;
    case BinaryOp::subtract:
      return a - b;
    case BinaryOp::multiply:
      return a * b;
    case BinaryOp::divide:
      return a / b;
    case BinaryOp::power:
      return std::pow(a, b);
  }
  return a;
}

// Sum of squares then one sqrt (not hypot) so every backend rounds alike.
KANGAROO_HD double distance3(double ax, double ay, double az, double bx, double by, double bz) {
  const double dx = ax - bx;
  const double dy = ay - by;
  const double dz = az - bz;
  return std::sqrt(dx * dx + dy * dy + dz * dz);
}

// OP-PART-6 / OP-RED-5 extreme rules. Start from +inf (min) or -inf (max) so
// that "nothing qualifies" yields exactly that identity. Without finite_only a
// NaN is sticky (numpy semantics) and infinities compete like any value.
KANGAROO_HD double min_step(double acc, double x, bool finite_only) {
  if (finite_only) {
    if (!std::isfinite(x)) return acc;
  } else {
    if (std::isnan(acc)) return acc;
    if (std::isnan(x)) return x;
  }
  return x < acc ? x : acc;
}

KANGAROO_HD double max_step(double acc, double x, bool finite_only) {
  if (finite_only) {
    if (!std::isfinite(x)) return acc;
  } else {
    if (std::isnan(acc)) return acc;
    if (std::isnan(x)) return x;
  }
  return x > acc ? x : acc;
}

// OP-PART-7 bin lookup over `n_edges >= 2` non-decreasing edges. Returns -1 for
// samples that are skipped (non-finite or outside [edges[0], edges[n-1]]).
// The closed top edge belongs to the last bin; otherwise the bin is the index
// of the last edge <= x, which with repeated edges is the last of them.
KANGAROO_HD std::int64_t histogram_bin(const double* edges, std::int64_t n_edges, double x) {
  if (!std::isfinite(x)) return -1;
  const double first = edges[0];
  const double last = edges[n_edges - 1];
  if (x < first || x > last) return -1;
  if (x == last) return n_edges - 2;
  // Invariant: edges[lo] <= x < edges[hi].
  std::int64_t lo = 0;
  std::int64_t hi = n_edges - 1;
  while (hi - lo > 1) {
    const std::int64_t mid = lo + (hi - lo) / 2;
    if (edges[mid] <= x) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// A weight that is not finite drops its sample rather than poisoning a bin.
KANGAROO_HD bool usable_weight(double w) {
  return std::isfinite(w);
}

// OP-PART-7 density: only bins of positive width are normalized, and only when
// the total is positive; everything else keeps its raw sum.
KANGAROO_HD double density_value(double bin_sum, double total, double width) {
  if (total > 0.0 && width > 0.0) return bin_sum / (total * width);
  return bin_sum;
}

// OP-PART-8 ordering of modes: higher count first, then the larger value.
KANGAROO_HD bool mode_precedes(double value_a, std::int64_t count_a, double value_b,
                               std::int64_t count_b) {
  if (count_a != count_b) return count_a > count_b;
  return value_a > value_b;
}

}  // namespace kangaroo::math::particle
