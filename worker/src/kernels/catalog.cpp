#include "kangaroo/kernels/register.h"

namespace kangaroo {

void register_pending_kernels(KernelRegistry& r) {
  // AMReX component: plotfile reads, AMR halos, gradients, particle deposits.
  r.add(make_unimplemented_kernel("plotfile_load", ParamType::PlotfileLoadParams, 0, 1, false));
  r.add(make_unimplemented_kernel("amr_subbox_fetch_pack", ParamType::AmrSubboxPackParams, 0, 1, true));
  r.add(make_unimplemented_kernel("gradU_stencil", ParamType::GradStencilParams, 2, 1, false));
  r.add(make_unimplemented_kernel("vorticity_mag", ParamType::none, 3, 1, false));
  r.add(make_unimplemented_kernel("particle_cic_grid_accumulate", ParamType::ParticleCicGridParams, 0, 1, false));
  r.add(make_unimplemented_kernel("particle_cic_projection_accumulate", ParamType::ParticleCicProjectionParams, 0, 1,
                                  false));
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
  register_pending_kernels(r);
}

}  // namespace kangaroo
