// C interface of the CUDA probe, callable from plain C++ translation units.
#pragma once

#include <cstddef>

extern "C" {
// Returns the number of usable devices (0 when none) and writes a readable
// explanation or the device names into `detail`.
int kangaroo_cuda_probe(char* detail, std::size_t detail_size);
// Runs the mask_and kernel on the first device as a self-check; returns 0 on
// success, a negative value when no device is usable.
int kangaroo_cuda_selftest(char* detail, std::size_t detail_size);
}
