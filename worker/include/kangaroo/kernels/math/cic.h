// Cloud-in-cell deposit math of the particle CIC kernels (OP-CIC-1,
// OP-CIC-2), shared by the CPU kernels and a CUDA path.
#pragma once

#include <cmath>
#include <cstdint>

#include "kangaroo/kernels/math/hd.h"

namespace kangaroo::math {

// Lower cell of the CIC stencil along one in-plane axis and the fractional
// distance past that cell's center.
struct CicAxis {
  std::int64_t cell;
  double t;
};

// su = (u - (x0 + (0.5 - origin) du)) / du, cell = floor(su), t = su - cell.
// The cell index saturates like COORD-2 so that far-away particles cannot
// produce an undefined conversion; such cells lie outside every block.
KANGAROO_HD CicAxis cic_axis(double u, double x0, double du, std::int64_t origin) {
  const double s = (u - (x0 + (0.5 - static_cast<double>(origin)) * du)) / du;
  const double f = std::floor(s);
  double c = f;
  if (c < -4.0e18) c = -4.0e18;
  if (c > 4.0e18) c = 4.0e18;
  return {static_cast<std::int64_t>(c), s - f};
}

// Bilinear shares of the four cells (iu, iv), (iu+1, iv), (iu, iv+1),
// (iu+1, iv+1), in that order; they sum to 1.
KANGAROO_HD void cic_weights(double tu, double tv, double w[4]) {
  w[0] = (1.0 - tu) * (1.0 - tv);
  w[1] = tu * (1.0 - tv);
  w[2] = (1.0 - tu) * tv;
  w[3] = tu * tv;
}

// OP-CIC-1 particle selection, apart from the block and coverage tests:
// finite values, positive mass not above `mass_max` (when `has_mass_max`), and
// the normal coordinate inside the closed interval [a_lo, a_hi].
KANGAROO_HD bool cic_particle_selected(double u, double v, double a, double m, bool has_mass_max,
                                       double mass_max, double a_lo, double a_hi) {
  if (!std::isfinite(u) || !std::isfinite(v) || !std::isfinite(a) || !std::isfinite(m))
    return false;
  if (!(m > 0.0)) return false;
  if (has_mass_max && m > mass_max) return false;
  return a >= a_lo && a <= a_hi;
}

}  // namespace kangaroo::math
