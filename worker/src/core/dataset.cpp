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

int Dataset::particle_dim(const std::string& type) const {
  fail(ErrorKind::unsupported, "the " + std::string(kind()) + " backend has no particle data (species '" + type + "')");
}

std::int64_t Dataset::particle_grid_chunk(const std::string& type, std::int32_t level, std::int32_t grid) const {
  fail(ErrorKind::unsupported, "the " + std::string(kind()) + " backend has no particle grids (species '" + type +
                                   "', level " + std::to_string(level) + ", grid " + std::to_string(grid) + ")");
}

void Dataset::require_particle_grids_match_mesh(const std::string& type, std::int32_t level) const {
  fail(ErrorKind::unsupported, "the " + std::string(kind()) + " backend has no particle grids (species '" + type +
                                   "', level " + std::to_string(level) + ")");
}

}  // namespace kangaroo
