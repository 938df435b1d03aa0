// The `amrex` dataset backend (BACK-AMREX-7/8, BACK-2/3) and RunMeta
// synthesis from plotfile metadata (COORD-4).
#include <algorithm>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

#include "kangaroo/data/amrex_plotfile.h"

namespace kangaroo {

namespace {

class AmrexDataset final : public Dataset {
 public:
  AmrexDataset(std::shared_ptr<const PlotfileReader> reader, std::string uri)
      : reader_(std::move(reader)), uri_(std::move(uri)) {}

  const std::shared_ptr<const PlotfileReader>& reader() const { return reader_; }

  std::string_view kind() const override { return "amrex"; }
  const std::string& uri() const override { return uri_; }

  ConstBufferPtr get_chunk(const ChunkId& id) override {
    const auto comp = locate(id);
    if (!comp) return nullptr;
    return reader_->read_component(id.level, id.block, *comp);
  }

  ConstBufferPtr get_chunk_window(const ChunkId& id, const IndexBox& window) override {
    const auto comp = locate(id);
    if (!comp) return nullptr;
    return reader_->read_component_window(id.level, id.block, *comp, window);
  }

  bool has_chunk(const ChunkId& id) const override { return locate(id).has_value(); }

  std::uint64_t estimate_chunk_bytes(const ChunkId& id) const override {
    if (!locate(id)) return 0;
    return reader_->component_bytes(id.level, id.block);
  }

  std::optional<Descriptor> describe_chunk(const ChunkId& id) const override {
    if (!locate(id)) return std::nullopt;
    return reader_->component_descriptor(id.level, id.block);
  }

  std::string metadata_json(std::int32_t step) const override {
    check_step(step);
    return reader_->metadata_json();
  }

  void register_field(std::int32_t field_id, const std::string& name) override {
    const auto& names = reader_->var_names();
    const auto it = std::find(names.begin(), names.end(), name);
    if (it == names.end()) {
      fail(ErrorKind::not_found, "plotfile field not found: " + name + " (" + reader_->path() + ")");
    }
    std::unique_lock lock(mutex_);
    fields_[field_id] = static_cast<std::int32_t>(it - names.begin());
  }

  void register_field_component(std::int32_t field_id, std::int32_t component) override {
    const auto n = static_cast<std::int64_t>(reader_->var_names().size());
    if (component < 0 || component >= n) {
      fail(ErrorKind::invalid_argument, "invalid component range: component " + std::to_string(component) + " of " +
                                            std::to_string(n) + " (" + reader_->path() + ")");
    }
    std::unique_lock lock(mutex_);
    fields_[field_id] = component;
  }

  std::vector<std::string> particle_types() const override {
    std::vector<std::string> out;
    for (const auto& s : reader_->particle_species()) out.push_back(s.name);
    return out;
  }

  std::vector<std::string> particle_fields(const std::string& type) const override { return species(type).fields; }

  std::int64_t particle_chunk_count(const std::string& type) const override {
    std::int64_t n = 0;
    for (auto g : species(type).grids_per_level) n += g;
    return n;
  }

  std::optional<std::uint64_t> particle_record_count(const std::string& type, std::int64_t chunk) const override {
    try {
      return reader_->particle_count(type, chunk);
    } catch (const Error&) {
      return std::nullopt;  // an estimate: unknown type or chunk means "unknown"
    }
  }

  ConstBufferPtr read_particle_field(const std::string& type, const std::string& field, std::int64_t chunk) override {
    return reader_->read_particle_field(type, field, chunk);
  }

  int particle_dim(const std::string& type) const override { return species(type).dim; }

  std::int64_t particle_grid_chunk(const std::string& type, std::int32_t level, std::int32_t grid) const override {
    const auto& s = species(type);
    if (level < 0 || static_cast<std::size_t>(level) >= s.grids_per_level.size() || grid < 0 ||
        grid >= s.grids_per_level[static_cast<std::size_t>(level)]) {
      fail(ErrorKind::invalid_argument, "particle grid out of range: species " + type + ", level " +
                                            std::to_string(level) + ", grid " + std::to_string(grid));
    }
    std::int64_t chunk = grid;
    for (std::int32_t l = 0; l < level; ++l) chunk += s.grids_per_level[static_cast<std::size_t>(l)];
    return chunk;
  }

  void require_particle_grids_match_mesh(const std::string& type, std::int32_t level) const override {
    if (!reader_->particle_grids_match_mesh(type, level)) {
      fail(ErrorKind::invalid_argument, "particle grids do not match mesh blocks on level " + std::to_string(level) +
                                            " (species " + type + ", " + reader_->path() + ")");
    }
  }

 private:
  void check_step(std::int64_t step) const {
    if (step != 0 && step != reader_->step()) {
      fail(ErrorKind::invalid_argument, "plotfile has a single step: " + reader_->path() + " (step " +
                                            std::to_string(step) + " requested; the plotfile is step " +
                                            std::to_string(reader_->step()) + ", also addressable as 0)");
    }
  }

  // Component of a chunk, or nullopt when the field is unmapped or the
  // level/block is outside the plotfile (BACK-3). Any step other than the
  // plotfile's fails (BACK-AMREX-7).
  std::optional<std::int32_t> locate(const ChunkId& id) const {
    std::int32_t comp = 0;
    {
      std::shared_lock lock(mutex_);
      const auto it = fields_.find(id.field);
      if (it == fields_.end()) return std::nullopt;
      comp = it->second;
    }
    check_step(id.step);
    const auto& levels = reader_->levels();
    if (id.level < 0 || static_cast<std::size_t>(id.level) >= levels.size()) return std::nullopt;
    if (id.block < 0 || static_cast<std::size_t>(id.block) >= levels[static_cast<std::size_t>(id.level)].boxes.size()) {
      return std::nullopt;
    }
    return comp;
  }

  const PlotfileParticleSpecies& species(const std::string& type) const {
    for (const auto& s : reader_->particle_species()) {
      if (s.name == type) return s;
    }
    fail(ErrorKind::not_found, "particle type not found: " + type);
  }

  std::shared_ptr<const PlotfileReader> reader_;
  std::string uri_;
  mutable std::shared_mutex mutex_;
  std::unordered_map<std::int32_t, std::int32_t> fields_;
};

}  // namespace

std::shared_ptr<Dataset> open_amrex_dataset(const std::string& path, const std::string& uri) {
  return std::make_shared<AmrexDataset>(PlotfileReader::open_cached(path), uri);
}

std::shared_ptr<const PlotfileReader> amrex_dataset_reader(const Dataset& dataset) {
  const auto* a = dynamic_cast<const AmrexDataset*>(&dataset.underlying());
  return a != nullptr ? a->reader() : nullptr;
}

RunMeta synthesize_runmeta(const PlotfileReader& reader) {
  const auto& levels = reader.levels();
  const int dim = reader.spacedim();
  const auto lo = reader.prob_lo();
  const auto periodic = reader.is_periodic().value_or(std::array<bool, 3>{false, false, false});
  StepMeta step;
  step.step = reader.step();
  for (std::size_t l = 0; l < levels.size(); ++l) {
    const PlotfileLevel& L = levels[l];
    LevelMeta lm;
    for (int a = 0; a < 3; ++a) {
      const auto ua = static_cast<std::size_t>(a);
      // Missing axes of 1D/2D files: one cell of unit thickness at 0.
      const bool present = a < dim;
      lm.geom.dx[ua] = present ? L.cell_size[ua] : 1.0;
      lm.geom.x0[ua] = present ? lo[ua] : 0.0;
      lm.geom.index_origin[ua] = present ? L.domain.lo[ua] : 0;
      lm.geom.is_periodic[ua] = present && periodic[ua];
      lm.geom.ref_ratio[ua] = 1;
      if (present && l + 1 < levels.size()) {
        const std::int64_t n0 = L.domain.extent(a);
        const std::int64_t n1 = levels[l + 1].domain.extent(a);
        if (n0 <= 0 || n1 % n0 != 0 || n1 / n0 < 1) {
          fail(ErrorKind::invalid_plan, "refinement ratio is not an exact integer: level " + std::to_string(l) +
                                            " -> " + std::to_string(l + 1) + " axis " + std::to_string(a) +
                                            " has prob_domain sizes " + std::to_string(n0) + " -> " +
                                            std::to_string(n1) + " (" + reader.path() + ")");
        }
        lm.geom.ref_ratio[ua] = static_cast<std::int32_t>(n1 / n0);
      }
    }
    lm.boxes = L.boxes;
    step.levels.push_back(std::move(lm));
  }
  RunMeta meta;
  meta.steps.push_back(std::move(step));
  meta.coord_sys = reader.coord_sys();
  for (const auto& s : reader.particle_species()) {
    std::int64_t n = 0;
    for (auto g : s.grids_per_level) n += g;
    meta.particle_species.emplace_back(s.name, n);
  }
  validate_runmeta(meta);
  return meta;
}

}  // namespace kangaroo
