// Registration seam between the two files of the AMReX kernel family
// (amr_kernels.cpp, cic_kernels.cpp). Private to worker/src/kernels; the
// public entry point is register_amr_kernels.
#pragma once

#include "kangaroo/core/kernel.h"

namespace kangaroo::amr_family {

// particle_cic_grid_accumulate, particle_cic_projection_accumulate.
void register_cic_kernels(KernelRegistry& registry);

}  // namespace kangaroo::amr_family
