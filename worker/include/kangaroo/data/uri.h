// Dataset URI dispatch (URI-3, BACK-1, BACK-4).
#pragma once

#include <memory>
#include <string>

#include "kangaroo/core/dataset.h"

namespace kangaroo {

// memory://label -> fresh MemoryDataset; amrex://, openpmd://, parthenon://,
// file:// -> explicit "not supported in this build" until those backends
// land; anything else -> "unsupported dataset URI scheme".
std::shared_ptr<Dataset> open_dataset_uri(const std::string& uri);

}  // namespace kangaroo
