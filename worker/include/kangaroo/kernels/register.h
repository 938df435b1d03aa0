// Kernel families. Each exports one registration function; the default
// catalog (KREG-7) is assembled in one place: register_default_kernels.
#pragma once

#include "kangaroo/core/kernel.h"

namespace kangaroo {

void register_default_kernels(KernelRegistry& registry);

// uniform_slice_add / _reduce / _finalize, particle_int64_sum_reduce,
// particle_scalar_min_reduce / _max_reduce.
void register_reduction_kernels(KernelRegistry& registry);
// field_expr, mesh_compare, mesh_mask_and, uniform_slice,
// uniform_slice_cellavg_accumulate, uniform_projection_accumulate.
void register_mesh_kernels(KernelRegistry& registry);
// histogram1d_accumulate, histogram2d_accumulate.
void register_histogram_kernels(KernelRegistry& registry);
// Every particle_* kernel that works on in-memory chunks (OP-PART-*).
void register_particle_kernels(KernelRegistry& registry);
// The AMReX component: plotfile_load, amr_subbox_fetch_pack, gradU_stencil,
// vorticity_mag (OP-LOAD-1, OP-GRAD-*, OP-VORT-1) and
// particle_cic_grid_accumulate, particle_cic_projection_accumulate (OP-CIC-*).
void register_amr_kernels(KernelRegistry& registry);
// Catalog entries whose implementations arrive with the flux component
// (flux, cylindrical flux, Toomre).
void register_pending_kernels(KernelRegistry& registry);

}  // namespace kangaroo
