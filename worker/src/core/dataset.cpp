#include "kangaroo/core/dataset.h"

namespace kangaroo {

void Dataset::set_chunk(const ChunkId& id, ConstBufferPtr buffer) {
  (void)id;
  (void)buffer;
  fail(ErrorKind::invalid_argument, "Cannot set_chunk on read-only backend (" + std::string(kind()) + ")");
}

std::int64_t Dataset::particle_chunk_count(const std::string& type) const {
  fail(ErrorKind::unsupported, "the " + std::string(kind()) + " backend has no particle data (species '" + type + "')");
}

ConstBufferPtr Dataset::read_particle_field(const std::string& type, const std::string& field, std::int64_t chunk) {
  fail(ErrorKind::unsupported, "the " + std::string(kind()) + " backend has no particle data (read of " + type + "/" +
                                   field + " chunk " + std::to_string(chunk) + ")");
}

}  // namespace kangaroo
