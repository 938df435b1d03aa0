// Device kernels. Per-element math comes from the same headers the CPU
// kernels use, so the CPU tests exercise the formulas the GPU runs.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <vector>

#include "device_probe.h"
#include "kangaroo/kernels/math/mask.h"

namespace {

__global__ void mask_and_kernel(const std::uint8_t* a, const std::uint8_t* b, std::uint8_t* out, std::size_t n) {
  const std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (i < n) out[i] = kangaroo::math::mask_and(a[i], b[i]);
}

}  // namespace

extern "C" int kangaroo_cuda_selftest(char* detail, std::size_t detail_size) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::snprintf(detail, detail_size, "no usable CUDA device");
    return -1;
  }
  const std::size_t n = 1 << 20;
  std::vector<std::uint8_t> a(n), b(n), out(n);
  for (std::size_t i = 0; i < n; ++i) {
    a[i] = static_cast<std::uint8_t>(i % 3);
    b[i] = static_cast<std::uint8_t>(i % 5);
  }
  std::uint8_t *da = nullptr, *db = nullptr, *dout = nullptr;
  if (cudaMalloc(&da, n) != cudaSuccess || cudaMalloc(&db, n) != cudaSuccess || cudaMalloc(&dout, n) != cudaSuccess) {
    std::snprintf(detail, detail_size, "cudaMalloc failed");
    return -2;
  }
  cudaMemcpy(da, a.data(), n, cudaMemcpyHostToDevice);
  cudaMemcpy(db, b.data(), n, cudaMemcpyHostToDevice);
  mask_and_kernel<<<static_cast<unsigned>((n + 255) / 256), 256>>>(da, db, dout, n);
  const cudaError_t err = cudaMemcpy(out.data(), dout, n, cudaMemcpyDeviceToHost);
  cudaFree(da);
  cudaFree(db);
  cudaFree(dout);
  if (err != cudaSuccess) {
    std::snprintf(detail, detail_size, "kernel failed: %s", cudaGetErrorString(err));
    return -3;
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (out[i] != kangaroo::math::mask_and(a[i], b[i])) {
      std::snprintf(detail, detail_size, "mismatch at element %zu", i);
      return -4;
    }
  }
  std::snprintf(detail, detail_size, "mask_and self-test passed on %zu elements", n);
  return 0;
}
