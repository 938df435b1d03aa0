// AMReX plotfile reader (BACK-AMREX-1..13) and the `amrex` dataset backend.
//
// Opening parses and cross-checks every header (Header, each Level_<L>/Cell_H,
// particle headers) and indexes every FAB; data reads seek to the FAB offset
// and component and read only those bytes. Every failure names the file and,
// where it applies, the byte offset.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kangaroo/core/buffer.h"
#include "kangaroo/core/dataset.h"
#include "kangaroo/core/runmeta.h"

namespace kangaroo {

struct PlotfileLevel {
  IndexBox domain;                        // prob_domain of the level
  std::array<double, 3> cell_size{1, 1, 1};
  std::int32_t level_step = 0;
  std::vector<IndexBox> boxes;            // valid boxes from Cell_H, block order
  std::int32_t ngrow = 0;                 // ghost cells stored in each FAB
  ScalarType real_type = ScalarType::f64; // from the FAB real descriptor
  // Per-axis ghost cells (Cell_H may give a vector); `ngrow` is their maximum.
  std::array<std::int32_t, 3> ngrow_axes{0, 0, 0};
};

struct PlotfileParticleSpecies {
  std::string name;
  int dim = 3;
  bool single_precision = false;
  std::vector<std::string> fields;  // BACK-AMREX-12 order
  std::vector<std::int64_t> grids_per_level;
  std::int64_t total_particles = 0;
};

class PlotfileReader {
 public:
  // Opens and validates the plotfile directory. Throws Error naming the file
  // (and offset) on any inconsistency (ERR-27).
  static std::shared_ptr<const PlotfileReader> open(const std::string& path);
  // Process-wide cache keyed by canonical path (used by plotfile_load).
  static std::shared_ptr<const PlotfileReader> open_cached(const std::string& path);

  virtual ~PlotfileReader() = default;

  virtual const std::string& path() const = 0;
  virtual const std::string& version() const = 0;
  virtual int spacedim() const = 0;
  virtual const std::vector<std::string>& var_names() const = 0;
  virtual double time() const = 0;
  virtual int finest_level() const = 0;
  virtual std::array<double, 3> prob_lo() const = 0;   // missing axes: 0
  virtual std::array<double, 3> prob_hi() const = 0;   // missing axes: 1
  virtual int coord_sys() const = 0;
  virtual bool mapped_mesh() const = 0;
  virtual std::optional<std::array<bool, 3>> is_periodic() const = 0;
  virtual const std::vector<PlotfileLevel>& levels() const = 0;
  // The step label of the plotfile (Header level-0 step); 0 also addresses it.
  virtual std::int32_t step() const = 0;

  // Component `comp` of FAB `fab` on `level`, valid region only, rank 3
  // (nx, ny, nz) f32/f64 (BACK-AMREX-7): read straight into Fortran strides
  // when the level has no ghost cells (byte-swapped in place if the file's
  // byte order is not the host's), else the valid cells copied to C order.
  // Each call returns fresh storage; the parsed FAB header is cached.
  virtual BufferPtr read_component(int level, int fab, int comp) const = 0;
  // Like read_component, but only the cells of `window` (clipped to the FAB)
  // are read; the buffer has the FAB's extents and zeros elsewhere. A window
  // narrower than the FAB in x still reads whole x rows.
  virtual BufferPtr read_component_window(int level, int fab, int comp, const IndexBox& window) const = 0;
  // Byte size of one component of a FAB (for admission and bound estimates).
  virtual std::uint64_t component_bytes(int level, int fab) const = 0;
  // Descriptor read_component returns for FAB `fab` of `level`, without
  // reading: Fortran strides when the level has no ghost cells, else C order.
  Descriptor component_descriptor(int level, int fab) const;

  virtual const std::vector<PlotfileParticleSpecies>& particle_species() const = 0;
  // Rank-1 buffer of `count` records: f32/f64 for reals, i64 for ints.
  virtual BufferPtr read_particle_field(const std::string& species, const std::string& field,
                                        std::int64_t chunk) const = 0;
  virtual std::uint64_t particle_count(const std::string& species, std::int64_t chunk) const = 0;
  // Particle_H boxes of a level equal the mesh boxes (BACK-AMREX-11).
  virtual bool particle_grids_match_mesh(const std::string& species, int level) const = 0;

  // META-1 dictionary (BACK-AMREX-10) as JSON text.
  virtual std::string metadata_json() const = 0;
};

// Dataset backend over a plotfile: field IDs map to components by name or
// index (BACK-AMREX-8); chunk (step, L, field, version, b) is the component
// of FAB b on level L (BACK-AMREX-7).
std::shared_ptr<Dataset> open_amrex_dataset(const std::string& path, const std::string& uri);

// The plotfile behind a dataset opened by open_amrex_dataset; nullptr for
// datasets of other kinds.
std::shared_ptr<const PlotfileReader> amrex_dataset_reader(const Dataset& dataset);

// COORD-4: RunMeta synthesized from a plotfile's metadata. Its single step is
// labelled with the plotfile's own step (the Header's level-0 step), which
// the dataset accepts besides 0 (BACK-AMREX-7, DATA-6). Fails when a
// refinement ratio is not an exact integer on some axis.
RunMeta synthesize_runmeta(const PlotfileReader& reader);

}  // namespace kangaroo
