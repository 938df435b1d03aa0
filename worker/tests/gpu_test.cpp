// GPU tier: runs only where a CUDA device is usable; elsewhere each test
// skips and says why.
#include <gtest/gtest.h>

#include "kangaroo/gpu/device.h"

namespace kangaroo {
namespace {

TEST(Gpu, ProbeReportsAReason) {
  const DeviceStatus s = probe_devices();
  EXPECT_FALSE(s.detail.empty());
  if (!s.built_with_cuda) {
    EXPECT_EQ(s.device_count, 0);
  }
}

TEST(Gpu, SharedMaskKernelMatchesCpu) {
  const DeviceStatus s = probe_devices();
  if (s.device_count == 0) GTEST_SKIP() << "no usable GPU: " << s.detail;
  std::string detail;
  EXPECT_TRUE(gpu_selftest(detail)) << detail;
}

}  // namespace
}  // namespace kangaroo
