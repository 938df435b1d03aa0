#include "kangaroo/kernels/register.h"

namespace kangaroo {

void register_pending_kernels(KernelRegistry& r) {
  // Flux component.
  r.add(make_unimplemented_kernel("flux_surface_integral_accumulate", ParamType::FluxSurfaceParams, 10, 1, false));
  r.add(make_unimplemented_kernel("cylindrical_flux_surface_integral_accumulate", ParamType::CylindricalFluxParams, 10,
                                  1, false));
  r.add(make_unimplemented_kernel("toomre_profile_accumulate", ParamType::ToomreProfileParams, 8, 1, false));
}

void register_default_kernels(KernelRegistry& r) {
  register_reduction_kernels(r);
  register_mesh_kernels(r);
  register_histogram_kernels(r);
  register_particle_kernels(r);
  register_amr_kernels(r);
  register_pending_kernels(r);
}

}  // namespace kangaroo
