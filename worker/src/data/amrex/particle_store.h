// Private index of a plotfile's particle species (BACK-AMREX-11/12): built
// once when the plotfile is opened, then used for chunk reads.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kangaroo/core/buffer.h"
#include "kangaroo/data/amrex_plotfile.h"
#include "plotfile_format.h"

namespace kangaroo::amrex {

struct ParticleDataFile {
  std::string path;  // resolved DATA_<nnnnn> (or DATA_<nnnn>) path
  bool exists = false;
  std::uint64_t size = 0;
};

// One chunk = one particle grid (PMETA-1: level-major order).
struct ParticleChunk {
  std::int32_t level = 0;
  std::int32_t grid = 0;
  std::int64_t count = 0;
  std::uint64_t offset = 0;
  std::uint32_t file = 0;         // index into ParticleSpeciesIndex::files
  std::uint64_t available = 0;    // bytes up to the next grid's offset or EOF
  int int_width = 8;              // inferred (BACK-AMREX-12)
};

struct ParticleSpeciesIndex {
  PlotfileParticleSpecies info;
  std::string dir;
  int n_real = 0;  // dim + real components
  int n_int = 0;   // int components (+2 with the checkpoint flag)
  std::vector<ParticleChunk> chunks;
  std::vector<std::int64_t> first_chunk;  // per level
  std::vector<ParticleDataFile> files;
  // Particle_H box array per level; nullopt when missing or unreadable.
  std::vector<std::optional<std::vector<IndexBox>>> grid_boxes;

  std::size_t real_width() const { return info.single_precision ? 4 : 8; }
  // Whether any particle lives on `level`.
  bool has_particles_on(int level) const;
};

// Every subdirectory of `plotfile_dir` with a parseable particle Header, in
// lexicographic order; unparseable headers are skipped (the species is absent).
std::vector<ParticleSpeciesIndex> scan_particle_species(const std::string& plotfile_dir);

// One field of one chunk: f32/f64 for reals, i64 (widened) for ints.
BufferPtr read_particle_chunk_field(const ParticleSpeciesIndex& species, const std::string& field,
                                    std::int64_t chunk);

// Reads exactly `n` bytes at `offset` (retrying short reads); errors name
// `path` and the offset.
void pread_exact(int fd, void* dst, std::uint64_t n, std::uint64_t offset, const std::string& path);

}  // namespace kangaroo::amrex
