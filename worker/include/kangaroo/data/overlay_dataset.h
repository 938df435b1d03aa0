// A dataset with chunks laid over it: chunks seeded into the overlay (results
// of an earlier run, persisted by a client) are served first; every other
// request, and all metadata and particle access, goes to the base dataset.
// This lets a plan read fields a previous run produced next to the fields of
// a plotfile (LOW-23 across runs).
#pragma once

#include <memory>

#include "kangaroo/core/dataset.h"
#include "kangaroo/data/memory_dataset.h"

namespace kangaroo {

class OverlayDataset final : public Dataset {
 public:
  explicit OverlayDataset(DatasetPtr base) : base_(std::move(base)), overlay_(base_->uri()) {}

  // Seeds the overlay from a results directory (MemoryDataset::seed_from_directory).
  std::size_t seed_from_directory(const std::string& directory) { return overlay_.seed_from_directory(directory); }
  const Dataset& base() const { return *base_; }
  Dataset& base() { return *base_; }

  const Dataset& underlying() const override { return base_->underlying(); }
  std::string_view kind() const override { return base_->kind(); }
  const std::string& uri() const override { return base_->uri(); }
  ConstBufferPtr get_chunk(const ChunkId& id) override {
    if (auto b = overlay_.get_chunk(id)) return b;
    return base_->get_chunk(id);
  }
  ConstBufferPtr get_chunk_window(const ChunkId& id, const IndexBox& window) override {
    if (auto b = overlay_.get_chunk(id)) return b;
    return base_->get_chunk_window(id, window);
  }
  bool has_chunk(const ChunkId& id) const override { return overlay_.has_chunk(id) || base_->has_chunk(id); }
  std::uint64_t estimate_chunk_bytes(const ChunkId& id) const override {
    return overlay_.has_chunk(id) ? overlay_.estimate_chunk_bytes(id) : base_->estimate_chunk_bytes(id);
  }
  std::optional<Descriptor> describe_chunk(const ChunkId& id) const override {
    return overlay_.has_chunk(id) ? overlay_.describe_chunk(id) : base_->describe_chunk(id);
  }
  std::string metadata_json(std::int32_t step) const override { return base_->metadata_json(step); }
  void register_field(std::int32_t field_id, const std::string& name) override { base_->register_field(field_id, name); }
  void register_field_component(std::int32_t field_id, std::int32_t component) override {
    base_->register_field_component(field_id, component);
  }
  void set_chunk(const ChunkId& id, ConstBufferPtr buffer) override { base_->set_chunk(id, std::move(buffer)); }
  std::vector<std::string> particle_types() const override { return base_->particle_types(); }
  std::vector<std::string> particle_fields(const std::string& type) const override {
    return base_->particle_fields(type);
  }
  std::int64_t particle_chunk_count(const std::string& type) const override {
    return base_->particle_chunk_count(type);
  }
  std::optional<std::uint64_t> particle_record_count(const std::string& type, std::int64_t chunk) const override {
    return base_->particle_record_count(type, chunk);
  }
  ConstBufferPtr read_particle_field(const std::string& type, const std::string& field,
                                     std::int64_t chunk) override {
    return base_->read_particle_field(type, field, chunk);
  }
  int particle_dim(const std::string& type) const override { return base_->particle_dim(type); }
  std::int64_t particle_grid_chunk(const std::string& type, std::int32_t level, std::int32_t grid) const override {
    return base_->particle_grid_chunk(type, level, grid);
  }
  void require_particle_grids_match_mesh(const std::string& type, std::int32_t level) const override {
    base_->require_particle_grids_match_mesh(type, level);
  }

 private:
  DatasetPtr base_;
  MemoryDataset overlay_;
};

}  // namespace kangaroo
