// Private parsers of the AMReX plotfile text formats (BACK-AMREX-1..5, 11).
//
// Every parser works on in-memory text so that the fuzz targets can drive it
// directly; the reader (plotfile_reader.cpp) does the file I/O. Parsers throw
// kangaroo::Error whose message starts with the origin (file path plus line or
// byte offset). Counts read from the text are never trusted for allocation:
// containers grow only as entries are actually parsed, and every count is
// checked against what the remaining text could possibly hold.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kangaroo/core/buffer.h"
#include "kangaroo/core/error.h"
#include "kangaroo/core/runmeta.h"

namespace kangaroo::amrex {

// Sanity limits: far above anything AMReX writes, low enough that a hostile
// file cannot make the reader allocate or loop without bound.
inline constexpr std::uint64_t kMaxTextFileBytes = std::uint64_t{1} << 30;
inline constexpr int kMaxLevels = 64;
inline constexpr std::int64_t kMaxComponents = std::int64_t{1} << 20;
inline constexpr std::int64_t kMaxGhostCells = std::int64_t{1} << 16;
// A FAB header line is about 100 bytes; anything past this is not a header.
inline constexpr std::size_t kMaxFabHeaderBytes = 4096;

// Floating-point layout of FAB payloads (BACK-AMREX-5).
struct RealFormat {
  int bits = 64;
  bool big_endian = false;

  std::size_t width() const { return static_cast<std::size_t>(bits / 8); }
  ScalarType scalar() const { return bits == 32 ? ScalarType::f32 : ScalarType::f64; }
  bool operator==(const RealFormat&) const = default;
};

// One per-level block of the Header (BACK-AMREX-1 item 15).
struct HeaderLevelBlock {
  std::int32_t level = 0;
  std::int64_t ngrids = 0;
  double time = 0.0;
  std::int32_t step = 0;
  // grid_lo[g][a], grid_hi[g][a]: physical bounds of grid g (axes < spacedim).
  std::vector<std::array<double, 3>> grid_lo;
  std::vector<std::array<double, 3>> grid_hi;
  std::string mf_prefix;        // e.g. "Level_0/Cell"
  std::size_t first_line = 0;   // 1-based line of "level ngrids time"
};

struct PlotfileHeaderText {
  std::string version;
  std::vector<std::string> var_names;
  int spacedim = 3;
  double time = 0.0;
  int finest_level = 0;
  std::array<double, 3> prob_lo{0.0, 0.0, 0.0};  // missing axes: 0
  std::array<double, 3> prob_hi{1.0, 1.0, 1.0};  // missing axes: 1
  std::vector<std::int64_t> ref_ratio_line;      // raw entries (may be empty)
  std::vector<IndexBox> domains;                 // 3D; missing axes [0, 0]
  std::vector<std::int32_t> level_steps;
  std::vector<std::array<double, 3>> cell_size;  // missing axes: 1
  int coord_sys = 0;
  int bwidth = 0;
  std::vector<HeaderLevelBlock> levels;          // exactly finest_level + 1
  bool mapped_mesh = false;                      // amrexvec_nu_* remainder
};

// Parses a plotfile Header (HyperCLaw-V1.1, NavierStokes-V1.1, ...).
// Also enforces the ratio cross-check and the cell-centered rule.
PlotfileHeaderText parse_plotfile_header(std::string_view text, const std::string& path);

// Level_<L>/Cell_H (VisMF version 1, BACK-AMREX-3).
struct CellHeader {
  int how = 0;
  int ncomp = 0;
  std::array<std::int32_t, 3> ngrow{0, 0, 0};  // per axis; missing axes 0
  std::vector<IndexBox> boxes;                 // 3D
  std::vector<std::string> files;              // distinct data file names
  std::vector<std::uint32_t> fab_file;         // index into `files`, per FAB
  std::vector<std::uint64_t> fab_offset;       // per FAB
};

CellHeader parse_cell_header(std::string_view text, int spacedim, const std::string& path);

// The ASCII header in front of each FAB payload (BACK-AMREX-4/5).
struct FabHeader {
  RealFormat real;
  IndexBox box;  // 3D
  std::int64_t ncomp = 0;
  std::size_t header_bytes = 0;  // including the line end
};

// `text` holds the bytes that start at `offset` of the data file (any length;
// the header must end with a line feed inside it).
FabHeader parse_fab_header(std::string_view text, int spacedim, const std::string& path,
                           std::uint64_t offset);

// Particle species Header (BACK-AMREX-11).
struct ParticleGridEntry {
  std::int64_t file_number = 0;
  std::int64_t count = 0;
  std::uint64_t offset = 0;
};

struct ParticleHeaderText {
  std::string version;
  bool single_precision = false;
  int dim = 3;
  std::vector<std::string> real_names;
  std::vector<std::string> int_names;
  bool checkpoint = false;
  std::int64_t total_particles = 0;
  std::int64_t next_id = 0;
  int finest_level = 0;
  std::vector<std::vector<ParticleGridEntry>> grids;  // [level][grid]
};

ParticleHeaderText parse_particle_header(std::string_view text, const std::string& path);

// Particle_H: a bare box array "(<count> <hash> <boxes> )". Boxes come back 3D.
std::vector<IndexBox> parse_box_array_text(std::string_view text, const std::string& path);

// The few job_info / warpx_job_info keys the backend reports (BACK-AMREX-10).
struct JobInfo {
  std::optional<std::array<bool, 3>> is_periodic;
  bool rz = false;  // geometry.dims = RZ
};

// Scans "key = value" lines; malformed values of a key leave it unset.
void scan_job_info(std::string_view text, JobInfo& info);

// Reads a whole text file (at most `max_bytes`); errors name the path.
std::string read_text_file(const std::string& path, std::uint64_t max_bytes, const char* what);

}  // namespace kangaroo::amrex
