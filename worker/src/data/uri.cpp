#include "kangaroo/data/uri.h"

#include <filesystem>

#include "kangaroo/data/amrex_plotfile.h"
#include "kangaroo/data/memory_dataset.h"

namespace kangaroo {

namespace {
bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

bool ends_with(const std::string& s, const char* suffix) {
  const std::string_view x(suffix);
  return s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0;
}

// URI-3: file:// means Parthenon for these suffixes, a plotfile otherwise.
bool parthenon_suffix(const std::string& path) {
  return ends_with(path, ".phdf") || ends_with(path, ".h5") || ends_with(path, ".hdf5");
}
}  // namespace

std::shared_ptr<Dataset> open_dataset_uri(const std::string& uri) {
  if (starts_with(uri, "memory://")) return std::make_shared<MemoryDataset>(uri);
  if (starts_with(uri, "amrex://")) return open_amrex_dataset(uri.substr(8), uri);
  if (starts_with(uri, "file://")) {
    const std::string path = uri.substr(7);
    if (parthenon_suffix(path)) fail(ErrorKind::unsupported, "Parthenon backend not enabled in this build");
    return open_amrex_dataset(path, uri);
  }
  if (starts_with(uri, "openpmd://")) fail(ErrorKind::unsupported, "openPMD backend not enabled in this build");
  if (starts_with(uri, "parthenon://")) fail(ErrorKind::unsupported, "Parthenon backend not enabled in this build");
  // URI-2: a plain path to a directory holding a plotfile `Header` is AMReX.
  if (uri.find("://") == std::string::npos) {
    std::error_code ec;
    if (std::filesystem::is_regular_file(std::filesystem::path(uri) / "Header", ec)) return open_amrex_dataset(uri, uri);
    if (parthenon_suffix(uri)) fail(ErrorKind::unsupported, "HDF5 datasets (openPMD, Parthenon) are not supported in this build");
    fail(ErrorKind::not_found, "'" + uri + "' is not a plotfile directory (no Header file); use amrex://, memory:// or a plotfile path");
  }
  fail(ErrorKind::invalid_argument, "unsupported dataset URI scheme: " + uri);
}

}  // namespace kangaroo
