// Dataset backend contract (BACK-2). Implementations live in worker/src/data;
// the interface is in the core so kernels and bound evaluators can query it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kangaroo/core/buffer.h"
#include "kangaroo/core/chunk_id.h"
#include "kangaroo/core/runmeta.h"

namespace kangaroo {

class Dataset {
 public:
  virtual ~Dataset() = default;

  virtual std::string_view kind() const = 0;  // amrex, openpmd, parthenon, memory
  virtual const std::string& uri() const = 0;

  // Self-described chunk or nullptr (BACK-3: never fabricated data).
  virtual ConstBufferPtr get_chunk(const ChunkId& id) = 0;
  virtual bool has_chunk(const ChunkId& id) const = 0;
  // The chunk with at least the cells of `window` (index space of the
  // chunk's level) read; other cells may be zeros. Backends that cannot read
  // part of a chunk return all of it.
  virtual ConstBufferPtr get_chunk_window(const ChunkId& id, const IndexBox& window) {
    (void)window;
    return get_chunk(id);
  }
  // The backend behind any wrapper (an overlay of seeded chunks); itself for a
  // plain backend. Backend-specific helpers look through wrappers with it.
  virtual const Dataset& underlying() const { return *this; }
  // 0 = unknown.
  virtual std::uint64_t estimate_chunk_bytes(const ChunkId& id) const = 0;
  virtual std::optional<Descriptor> describe_chunk(const ChunkId& id) const {
    (void)id;
    return std::nullopt;
  }

  // META-1 dictionary as JSON text; "{}" for backends without geometry.
  virtual std::string metadata_json(std::int32_t step) const = 0;

  virtual void register_field(std::int32_t field_id, const std::string& name) = 0;
  virtual void register_field_component(std::int32_t field_id, std::int32_t component) = 0;

  // BACK-5: only the memory backend accepts writes.
  virtual void set_chunk(const ChunkId& id, ConstBufferPtr buffer);

  // Particle capability; defaults fail explicitly (BACK-2, ERR-30).
  virtual std::vector<std::string> particle_types() const { return {}; }
  virtual std::vector<std::string> particle_fields(const std::string& type) const {
    (void)type;
    return {};
  }
  virtual std::int64_t particle_chunk_count(const std::string& type) const;
  virtual std::optional<std::uint64_t> particle_record_count(const std::string& type,
                                                             std::int64_t chunk) const {
    (void)type;
    (void)chunk;
    return std::nullopt;
  }
  // Raw particle component as a rank-1 f32/f64/i64 buffer.
  virtual ConstBufferPtr read_particle_field(const std::string& type, const std::string& field,
                                             std::int64_t chunk);
  // Spatial dimension of a species' positions (x, y, z are its first `dim`).
  virtual int particle_dim(const std::string& type) const;
  // PMETA-1: chunk index of particle grid `grid` of `level` (level-major).
  virtual std::int64_t particle_grid_chunk(const std::string& type, std::int32_t level,
                                           std::int32_t grid) const;
  // BACK-AMREX-11: fails with "particle grids do not match mesh blocks on
  // level <L>" when the species' grids on `level` are not the mesh blocks.
  virtual void require_particle_grids_match_mesh(const std::string& type, std::int32_t level) const;
};

using DatasetPtr = std::shared_ptr<Dataset>;

}  // namespace kangaroo
