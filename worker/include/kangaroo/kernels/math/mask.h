// Per-element mask math shared by the CPU kernels and the CUDA path.
#pragma once

#include <cstdint>

#include "kangaroo/kernels/math/hd.h"

namespace kangaroo::math {

// OP-EXPR-5 / OP-PART-3: any non-zero byte counts as true.
KANGAROO_HD std::uint8_t mask_and(std::uint8_t a, std::uint8_t b) { return (a != 0 && b != 0) ? 1 : 0; }

}  // namespace kangaroo::math
