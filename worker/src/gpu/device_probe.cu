#include <cuda_runtime.h>

#include <cstdio>

#include "device_probe.h"

extern "C" int kangaroo_cuda_probe(char* detail, std::size_t detail_size) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    // Without a driver this is cudaErrorInsufficientDriver or NoDevice: both
    // mean "no usable device", reported with CUDA's own words.
    std::snprintf(detail, detail_size, "no usable CUDA device: %s (%s)", cudaGetErrorString(err), cudaGetErrorName(err));
    return 0;
  }
  int written = std::snprintf(detail, detail_size, "%d CUDA device(s)", count);
  for (int d = 0; d < count && written > 0 && static_cast<std::size_t>(written) < detail_size; ++d) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, d) == cudaSuccess) {
      written += std::snprintf(detail + written, detail_size - static_cast<std::size_t>(written), "; %d: %s", d, prop.name);
    }
  }
  return count;
}
