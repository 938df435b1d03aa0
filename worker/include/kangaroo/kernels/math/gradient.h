// Per-cell math of the AMR gradient and vorticity kernels (OP-GRAD-3,
// OP-VORT-1), shared by the CPU kernels and a CUDA path.
#pragma once

#include <cmath>

#include "kangaroo/kernels/math/hd.h"

namespace kangaroo::math {

// Weight regularizer and singular-pivot threshold of OP-GRAD-3.
constexpr double kGradientWeightEpsilon = 1e-30;
constexpr double kGradientPivotEpsilon = 1e-30;

// Normal equations of the weighted least-squares gradient fit around one
// cell: A = sum w r r^T, b = sum w r (f - f0) with w = 1 / (|r|^2 + 1e-30).
struct GradientSystem {
  double a[3][3];
  double b[3];
  // Axes on which some sample has a non-zero offset; only those are solved,
  // so 1D/2D layouts (no samples across a unit axis) stay well posed.
  bool axis_used[3];
  int samples;

  KANGAROO_HD void reset() {
    for (int r = 0; r < 3; ++r) {
      for (int c = 0; c < 3; ++c)
        a[r][c] = 0.0;
      b[r] = 0.0;
      axis_used[r] = false;
    }
    samples = 0;
  }

  // One sample at offset `r` from the cell center whose value differs from
  // the center value by `df`.
  KANGAROO_HD void add(const double r[3], double df) {
    const double w = 1.0 / (r[0] * r[0] + r[1] * r[1] + r[2] * r[2] + kGradientWeightEpsilon);
    for (int i = 0; i < 3; ++i) {
      if (r[i] != 0.0) axis_used[i] = true;
      for (int j = 0; j < 3; ++j)
        a[i][j] += w * r[i] * r[j];
      b[i] += w * r[i] * df;
    }
    ++samples;
  }
};

// Solves the system restricted to the used axes by Gaussian elimination with
// partial pivoting. The gradient is 0 on unused axes, and entirely 0 when
// there are fewer samples than used axes or a pivot is below 1e-30.
KANGAROO_HD void solve_gradient(const GradientSystem& s, double g[3]) {
  g[0] = g[1] = g[2] = 0.0;
  int axes[3];
  int n = 0;
  for (int i = 0; i < 3; ++i) {
    if (s.axis_used[i]) axes[n++] = i;
  }
  if (n == 0 || s.samples < n) return;
  double m[3][4];
  for (int r = 0; r < n; ++r) {
    for (int c = 0; c < n; ++c)
      m[r][c] = s.a[axes[r]][axes[c]];
    m[r][n] = s.b[axes[r]];
  }
  for (int col = 0; col < n; ++col) {
    int pivot = col;
    for (int r = col + 1; r < n; ++r) {
      if (std::fabs(m[r][col]) > std::fabs(m[pivot][col])) pivot = r;
    }
    // Also catches NaN pivots, which would otherwise spread through the row.
    if (!(std::fabs(m[pivot][col]) >= kGradientPivotEpsilon)) return;
    if (pivot != col) {
      for (int c = 0; c <= n; ++c) {
        const double t = m[col][c];
        m[col][c] = m[pivot][c];
        m[pivot][c] = t;
      }
    }
    for (int r = col + 1; r < n; ++r) {
      const double f = m[r][col] / m[col][col];
      for (int c = col; c <= n; ++c)
        m[r][c] -= f * m[col][c];
    }
  }
  double x[3] = {0.0, 0.0, 0.0};
  for (int r = n - 1; r >= 0; --r) {
    double acc = m[r][n];
    for (int c = r + 1; c < n; ++c)
      acc -= m[r][c] * x[c];
    x[r] = acc / m[r][r];
  }
  for (int r = 0; r < n; ++r)
    g[axes[r]] = x[r];
}

// OP-VORT-1: |curl v| from the gradients of vx, vy, vz (each (d/dx, d/dy,
// d/dz)).
KANGAROO_HD double curl_magnitude(const double gvx[3], const double gvy[3], const double gvz[3]) {
  const double wx = gvz[1] - gvy[2];
  const double wy = gvx[2] - gvz[0];
  const double wz = gvy[0] - gvx[1];
  return std::sqrt(wx * wx + wy * wy + wz * wz);
}

}  // namespace kangaroo::math
