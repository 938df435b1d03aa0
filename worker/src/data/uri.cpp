#include "kangaroo/data/uri.h"

#include "kangaroo/data/memory_dataset.h"

namespace kangaroo {

namespace {
bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }
}  // namespace

std::shared_ptr<Dataset> open_dataset_uri(const std::string& uri) {
  if (starts_with(uri, "memory://")) return std::make_shared<MemoryDataset>(uri);
  if (starts_with(uri, "amrex://") || starts_with(uri, "file://")) {
    fail(ErrorKind::unsupported, "AMReX plotfile backend not enabled in this build (dataset '" + uri + "')");
  }
  if (starts_with(uri, "openpmd://")) fail(ErrorKind::unsupported, "openPMD backend not enabled in this build");
  if (starts_with(uri, "parthenon://")) fail(ErrorKind::unsupported, "Parthenon backend not enabled in this build");
  fail(ErrorKind::invalid_argument, "unsupported dataset URI scheme: " + uri);
}

}  // namespace kangaroo
