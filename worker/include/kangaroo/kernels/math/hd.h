// Marks per-element math that both the CPU kernels and CUDA kernels compile.
#pragma once

#if defined(__CUDACC__)
#define KANGAROO_HD __host__ __device__ inline
#else
#define KANGAROO_HD inline
#endif
