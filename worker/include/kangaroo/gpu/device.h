// GPU discovery. CUDA stays out of this header so every translation unit can
// ask about devices without the CUDA toolkit.
#pragma once

#include <string>

namespace kangaroo {

struct DeviceStatus {
  bool built_with_cuda = false;
  int device_count = 0;
  std::string detail;  // why no device is usable, or the device names
};

DeviceStatus probe_devices();

// Runs a small kernel on the first device and checks it against the CPU
// formula it shares. False with a reason when no device is usable.
bool gpu_selftest(std::string& detail);

}  // namespace kangaroo
