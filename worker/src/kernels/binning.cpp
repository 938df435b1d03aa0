// HistogramBinner::bin_many: OP-HIST-1 bins of a run of samples, four at a
// time in vector registers (GCC/Clang vector extensions; on x86-64 an AVX2
// copy is chosen at load time where the processor has it).
#include <cstring>
#include <stdexcept>

#include "kangaroo/kernels/math/binning.h"

namespace kangaroo::math {

namespace {

using V4d = double __attribute__((vector_size(32)));
using V4l = std::int64_t __attribute__((vector_size(32)));
using V4i = std::int32_t __attribute__((vector_size(16)));

constexpr std::int32_t kRecheck = -2;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KANGAROO_BIN_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KANGAROO_BIN_CLONES
#endif

// The lanes follow operator() step for step: the same range test, the same
// rounded product, the same slack. Lanes whose quotient lies near an integer
// are marked and recomputed with histogram_bin afterwards. Returns the
// number of samples done (a multiple of four).
KANGAROO_BIN_CLONES
std::size_t bin_lanes(double lo_s, double hi_s, double nb_s, double inv_s, const double* x, std::size_t n,
                      std::int32_t* out, bool* recheck) {
  const V4d zero{};
  const V4d lo = lo_s + zero, hi = hi_s + zero, nb = nb_s + zero, inv = inv_s + zero;
  const V4d skipped = -1.0 + zero, last = (nb_s - 1.0) + zero, marked = static_cast<double>(kRecheck) + zero;
  V4l any{};
  std::size_t t = 0;
  for (; t + 4 <= n; t += 4) {
    V4d v;
    std::memcpy(&v, x + t, sizeof v);
    const V4l in = (v >= lo) & (v <= hi);  // false for NaN
    const V4d q = (V4d)((V4l)((v - lo) * nb * inv) & in);
    const V4d k = __builtin_convertvector(__builtin_convertvector(q, V4i), V4d);  // q >= 0: floor
    const V4d slack = q * 0x1p-48;
    const V4l at_hi = v == hi;
    const V4l near = ((q - k < slack) | (k + 1.0 - q <= slack)) & in & ~at_hi;
    const V4l ok = in & (k < nb);
    V4l b = ((V4l)k & ok) | ((V4l)skipped & ~ok);
    b = (b & ~at_hi) | ((V4l)last & at_hi);
    b = (b & ~near) | ((V4l)marked & near);
    any |= near;
    const V4i r = __builtin_convertvector((V4d)b, V4i);
    std::memcpy(out + t, &r, sizeof r);
  }
  *recheck = (any[0] | any[1] | any[2] | any[3]) != 0;
  return t;
}

}  // namespace

void HistogramBinner::bin_many(const double* x, std::size_t n, std::int32_t* out) const {
  if (bins_ > kMaxManyBins) throw std::logic_error("HistogramBinner::bin_many: more bins than 32 bits hold");
  std::size_t done = 0;
  if (fast_) {
    bool recheck = false;
    done = bin_lanes(lo_, hi_, nb_, inv_, x, n, out, &recheck);
    if (recheck) {
      for (std::size_t t = 0; t < done; ++t) {
        if (out[t] == kRecheck) out[t] = static_cast<std::int32_t>(histogram_bin(x[t], lo_, hi_, bins_));
      }
    }
  }
  for (std::size_t t = done; t < n; ++t) out[t] = static_cast<std::int32_t>((*this)(x[t]));
}

}  // namespace kangaroo::math
