// Per-element semantics of the field-expression language (OP-EXPR-2). The
// compiler (kernels/expression.h) lowers text to a postfix program of these
// operations; the CPU evaluator and a device evaluator both apply them through
// the functions below, so they agree bit for bit on every operation.
#pragma once

#include <cmath>
#include <cstdint>

#include "kangaroo/kernels/math/hd.h"

namespace kangaroo::math {

// clang-format off
#define KANGAROO_EXPR_UNARY_OPS(X)                                                    \
  X(neg) X(sqrt) X(exp) X(log) X(log10) X(sin) X(cos) X(tan) X(asin) X(acos) X(atan) \
  X(sinh) X(cosh) X(tanh) X(asinh) X(acosh) X(atanh) X(abs) X(floor) X(ceil) X(erf)  \
  X(comp_ellint_1) X(comp_ellint_2) X(square)

#define KANGAROO_EXPR_BINARY_OPS(X)                                                     \
  X(add) X(sub) X(mul) X(div) X(pow) X(lt) X(gt) X(le) X(ge) X(eq) X(ne) X(logical_and) \
  X(logical_or) X(atan2) X(fmod) X(min) X(max) X(heaviside) X(jn) X(yn)

#define KANGAROO_EXPR_ENUMERATOR(name) name,
enum class ExprOp : std::uint8_t {
  constant,
  variable,
  KANGAROO_EXPR_UNARY_OPS(KANGAROO_EXPR_ENUMERATOR)
  KANGAROO_EXPR_BINARY_OPS(KANGAROO_EXPR_ENUMERATOR)
  select,  // if(c, a, b)
};
// clang-format on
#undef KANGAROO_EXPR_ENUMERATOR

// Number of operands an operation pops (leaves pop none).
KANGAROO_HD int expr_arity(ExprOp op) {
  if (op == ExprOp::constant || op == ExprOp::variable) return 0;
  if (op == ExprOp::select) return 3;
  if (op >= ExprOp::add) return 2;
  return 1;
}

namespace detail {

KANGAROO_HD double quiet_nan() {
  return static_cast<double>(NAN);
}

// Carlson's symmetric integral R_F(x, y, z) by the duplication theorem; the
// tolerance makes the truncated series error ~1e-16 (Carlson 1995, Numer.
// Algorithms 10). Bounded iterations keep hostile input from spinning.
KANGAROO_HD double carlson_rf(double x, double y, double z) {
  double mean = (x + y + z) / 3.0;
  double dx = 0.0, dy = 0.0, dz = 0.0;
  for (int it = 0; it < 200; ++it) {
    const double sx = std::sqrt(x), sy = std::sqrt(y), sz = std::sqrt(z);
    const double lambda = sx * (sy + sz) + sy * sz;
    x = 0.25 * (x + lambda);
    y = 0.25 * (y + lambda);
    z = 0.25 * (z + lambda);
    mean = (x + y + z) / 3.0;
    dx = (mean - x) / mean;
    dy = (mean - y) / mean;
    dz = (mean - z) / mean;
    const double worst = std::fmax(std::fabs(dx), std::fmax(std::fabs(dy), std::fabs(dz)));
    if (!(worst > 0.0025)) break;
  }
  const double e2 = dx * dy - dz * dz;
  const double e3 = dx * dy * dz;
  return (1.0 + (e2 / 24.0 - 0.1 - 3.0 * e3 / 44.0) * e2 + e3 / 14.0) / std::sqrt(mean);
}

// Carlson's R_D(x, y, z), same scheme.
KANGAROO_HD double carlson_rd(double x, double y, double z) {
  double sum = 0.0;
  double scale = 1.0;
  double mean = (x + y + 3.0 * z) / 5.0;
  double dx = 0.0, dy = 0.0, dz = 0.0;
  for (int it = 0; it < 200; ++it) {
    const double sx = std::sqrt(x), sy = std::sqrt(y), sz = std::sqrt(z);
    const double lambda = sx * (sy + sz) + sy * sz;
    sum += scale / (sz * (z + lambda));
    scale *= 0.25;
    x = 0.25 * (x + lambda);
    y = 0.25 * (y + lambda);
    z = 0.25 * (z + lambda);
    mean = (x + y + 3.0 * z) / 5.0;
    dx = (mean - x) / mean;
    dy = (mean - y) / mean;
    dz = (mean - z) / mean;
    const double worst = std::fmax(std::fabs(dx), std::fmax(std::fabs(dy), std::fabs(dz)));
    if (!(worst > 0.0015)) break;
  }
  const double ea = dx * dy;
  const double eb = dz * dz;
  const double ec = ea - eb;
  const double ed = ea - 6.0 * eb;
  const double ee = ed + ec + ec;
  const double c1 = 3.0 / 14.0, c2 = 1.0 / 6.0, c3 = 9.0 / 22.0, c4 = 3.0 / 26.0;
  const double series = 1.0 + ed * (-c1 + 0.25 * c3 * ed - 1.5 * c4 * dz * ee) +
                        dz * (c2 * ee + dz * (-c3 * ec + dz * c4 * ea));
  return 3.0 * sum + scale * series / (mean * std::sqrt(mean));
}

// Complete elliptic integrals of modulus k (the convention of
// std::comp_ellint_1/2). Own implementation because the standard ones are
// host-only and throw on |k| > 1; here that yields NaN instead.
KANGAROO_HD double complete_ellint_1(double k) {
  const double ak = std::fabs(k);
  if (!(ak <= 1.0)) return quiet_nan();
  if (ak == 1.0) return static_cast<double>(INFINITY);
  return carlson_rf(0.0, (1.0 - ak) * (1.0 + ak), 1.0);
}

KANGAROO_HD double complete_ellint_2(double k) {
  const double ak = std::fabs(k);
  if (!(ak <= 1.0)) return quiet_nan();
  if (ak == 1.0) return 1.0;
  const double kc2 = (1.0 - ak) * (1.0 + ak);
  return carlson_rf(0.0, kc2, 1.0) - ak * ak / 3.0 * carlson_rd(0.0, kc2, 1.0);
}

// Bessel orders are integers; the evaluation cost of jn/yn grows linearly with
// the order, so absurd orders give NaN instead of stalling a task.
constexpr double kMaxBesselOrder = 100000.0;

KANGAROO_HD double bessel_j(double order, double x) {
  if (!(std::fabs(order) <= kMaxBesselOrder)) return quiet_nan();
  return ::jn(static_cast<int>(order), x);
}

KANGAROO_HD double bessel_y(double order, double x) {
  if (!(std::fabs(order) <= kMaxBesselOrder)) return quiet_nan();
  return ::yn(static_cast<int>(order), x);
}

KANGAROO_HD double truth(bool b) {
  return b ? 1.0 : 0.0;
}

}  // namespace detail

// Comparisons and logic yield 1.0 / 0.0. Comparisons follow IEEE (NaN compares
// unequal to everything); in logic and `if`, any non-zero value, NaN included,
// is true, as C++ converts it.
template <ExprOp Op>
KANGAROO_HD double expr_unary(double x) {
  if constexpr (Op == ExprOp::neg)
    return -x;
  else if constexpr (Op == ExprOp::sqrt)
    return std::sqrt(x);
  else if constexpr (Op == ExprOp::exp)
    return std::exp(x);
  else if constexpr (Op == ExprOp::log)
    return std::log(x);
  else if constexpr (Op == ExprOp::log10)
    return std::log10(x);
  else if constexpr (Op == ExprOp::sin)
    return std::sin(x);
  else if constexpr (Op == ExprOp::cos)
    return std::cos(x);
  else if constexpr (Op == ExprOp::tan)
    return std::tan(x);
  else if constexpr (Op == ExprOp::asin)
    return std::asin(x);
  else if constexpr (Op == ExprOp::acos)
    return std::acos(x);
  else if constexpr (Op == ExprOp::atan)
    return std::atan(x);
  else if constexpr (Op == ExprOp::sinh)
    return std::sinh(x);
  else if constexpr (Op == ExprOp::cosh)
    return std::cosh(x);
  else if constexpr (Op == ExprOp::tanh)
    return std::tanh(x);
  else if constexpr (Op == ExprOp::asinh)
    return std::asinh(x);
  else if constexpr (Op == ExprOp::acosh)
    return std::acosh(x);
  else if constexpr (Op == ExprOp::atanh)
    return std::atanh(x);
  else if constexpr (Op == ExprOp::abs)
    return std::fabs(x);
  else if constexpr (Op == ExprOp::floor)
    return std::floor(x);
  else if constexpr (Op == ExprOp::ceil)
    return std::ceil(x);
  else if constexpr (Op == ExprOp::erf)
    return std::erf(x);
  else if constexpr (Op == ExprOp::comp_ellint_1)
    return detail::complete_ellint_1(x);
  else if constexpr (Op == ExprOp::comp_ellint_2)
    return detail::complete_ellint_2(x);
  // x ** 2 (the compiler's rewrite of pow(x, 2)): the exactly rounded square,
  // as numpy computes a ** 2, and far cheaper than a general pow.
  else if constexpr (Op == ExprOp::square)
    return x * x;
  else
    static_assert(Op == ExprOp::neg, "not a unary operation");
}

template <ExprOp Op>
KANGAROO_HD double expr_binary(double a, double b) {
  if constexpr (Op == ExprOp::add)
    return a + b;
  else if constexpr (Op == ExprOp::sub)
    return a - b;
  else if constexpr (Op == ExprOp::mul)
    return a * b;
  else if constexpr (Op == ExprOp::div)
    return a / b;
  else if constexpr (Op == ExprOp::pow)
    return std::pow(a, b);
  else if constexpr (Op == ExprOp::lt)
    return detail::truth(a < b);
  else if constexpr (Op == ExprOp::gt)
    return detail::truth(a > b);
  else if constexpr (Op == ExprOp::le)
    return detail::truth(a <= b);
  else if constexpr (Op == ExprOp::ge)
    return detail::truth(a >= b);
  else if constexpr (Op == ExprOp::eq)
    return detail::truth(a == b);
  else if constexpr (Op == ExprOp::ne)
    return detail::truth(a != b);
  else if constexpr (Op == ExprOp::logical_and)
    return detail::truth(a != 0.0 && b != 0.0);
  else if constexpr (Op == ExprOp::logical_or)
    return detail::truth(a != 0.0 || b != 0.0);
  else if constexpr (Op == ExprOp::atan2)
    return std::atan2(a, b);
  else if constexpr (Op == ExprOp::fmod)
    return std::fmod(a, b);
  // min/max propagate NaN (numpy minimum/maximum) rather than dropping it as
  // fmin/fmax would, so a missing value stays visible in derived fields.
  else if constexpr (Op == ExprOp::min)
    return (a != a || b != b) ? detail::quiet_nan() : (b < a ? b : a);
  else if constexpr (Op == ExprOp::max)
    return (a != a || b != b) ? detail::quiet_nan() : (b > a ? b : a);
  // Step function with value b at 0 (numpy heaviside); NaN stays NaN.
  else if constexpr (Op == ExprOp::heaviside)
    return a != a ? a : (a < 0.0 ? 0.0 : (a > 0.0 ? 1.0 : b));
  else if constexpr (Op == ExprOp::jn)
    return detail::bessel_j(a, b);
  else if constexpr (Op == ExprOp::yn)
    return detail::bessel_y(a, b);
  else
    static_assert(Op == ExprOp::add, "not a binary operation");
}

KANGAROO_HD double expr_select(double c, double a, double b) {
  return c != 0.0 ? a : b;
}

// Run-time dispatch for single evaluations and constant folding.
KANGAROO_HD double expr_apply_unary(ExprOp op, double x) {
  switch (op) {
#define KANGAROO_EXPR_CASE(name) \
  case ExprOp::name:             \
    return expr_unary<ExprOp::name>(x);
    KANGAROO_EXPR_UNARY_OPS(KANGAROO_EXPR_CASE)
#undef KANGAROO_EXPR_CASE
    default:
      return detail::quiet_nan();
  }
}

KANGAROO_HD double expr_apply_binary(ExprOp op, double a, double b) {
  switch (op) {
#define KANGAROO_EXPR_CASE(name) \
  case ExprOp::name:             \
    return expr_binary<ExprOp::name>(a, b);
    KANGAROO_EXPR_BINARY_OPS(KANGAROO_EXPR_CASE)
#undef KANGAROO_EXPR_CASE
    default:
      return detail::quiet_nan();
  }
}

}  // namespace kangaroo::math
