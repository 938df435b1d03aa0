#include "kangaroo/gpu/device.h"

#if defined(KANGAROO_HAVE_CUDA)
#include "device_probe.h"
#endif

namespace kangaroo {

DeviceStatus probe_devices() {
  DeviceStatus s;
#if defined(KANGAROO_HAVE_CUDA)
  s.built_with_cuda = true;
  char detail[512] = {0};
  s.device_count = kangaroo_cuda_probe(detail, sizeof detail);
  s.detail = detail;
#else
  s.detail = "this build has no CUDA support (configure with KANGAROO_CUDA=ON and nvcc available)";
#endif
  return s;
}

bool gpu_selftest(std::string& detail) {
#if defined(KANGAROO_HAVE_CUDA)
  char buf[512] = {0};
  const int rc = kangaroo_cuda_selftest(buf, sizeof buf);
  detail = buf;
  return rc == 0;
#else
  detail = "this build has no CUDA support";
  return false;
#endif
}

}  // namespace kangaroo
