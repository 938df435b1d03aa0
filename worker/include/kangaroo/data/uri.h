// Dataset URI dispatch (URI-3, BACK-1, BACK-4).
#pragma once

#include <memory>
#include <string>

#include "kangaroo/core/dataset.h"

namespace kangaroo {

// memory://label -> fresh MemoryDataset; amrex://P and file://P (P without a
// Parthenon suffix .phdf/.h5/.hdf5) -> AMReX plotfile at P; openpmd:// and
// parthenon:// (and file:// with a Parthenon suffix) -> explicit "not enabled
// in this build"; anything else -> "unsupported dataset URI scheme".
std::shared_ptr<Dataset> open_dataset_uri(const std::string& uri);

}  // namespace kangaroo
