// PlotfileReader: opens and cross-checks a plotfile directory, then serves
// single-component FAB reads (BACK-AMREX-1..10).
//
// Opening reads the Header, every Cell_H, the first FAB header of each level
// (for the real descriptor) and the particle headers, and stats every data
// file, so that missing or short files fail at open rather than mid-run. The
// other FAB headers are parsed on first read and cached (one small read per
// FAB over the life of the reader): ranks of a distributed run touch only the
// FABs they own.
#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kangaroo/data/amrex_plotfile.h"
#include "particle_store.h"
#include "plotfile_format.h"
#include "text_scan.h"

namespace kangaroo {

namespace {

using amrex::RealFormat;

// The shortest header the FAB parser accepts is 37 bytes; the open-time size
// bound uses a smaller figure so it can never reject a valid file.
constexpr std::uint64_t kMinFabHeaderBytes = 32;
// Descriptors kept open for the reader's lifetime; beyond this, reads open
// and close their file each time.
constexpr int kMaxCachedFds = 256;
constexpr std::uint64_t kMaxJobInfoBytes = std::uint64_t{64} << 20;

bool host_big_endian() { return std::endian::native == std::endian::big; }

std::uint64_t box_points(const IndexBox& b) {
  std::uint64_t n = 1;
  for (int a = 0; a < 3; ++a) n = checked_mul(n, static_cast<std::uint64_t>(b.extent(a)));
  return n;
}

// Payload bytes of a FAB; a box too large to address fails naming the FAB
// (hostile extents must not surface as an anonymous overflow).
std::uint64_t fab_payload_bytes(const IndexBox& b, std::uint64_t ncomp, std::uint64_t width, const std::string& where) {
  std::uint64_t n = ncomp * width;
  for (int a = 0; a < 3; ++a) {
    const std::int64_t e = b.extent(a);
    if (e <= 0 || __builtin_mul_overflow(n, static_cast<std::uint64_t>(e), &n)) {
      fail(ErrorKind::io, where + ": FAB box " + b.to_string() + " is too large to address");
    }
  }
  return n;
}

IndexBox grow(const IndexBox& b, const std::array<std::int32_t, 3>& g) {
  IndexBox out = b;
  for (std::size_t a = 0; a < 3; ++a) {
    out.lo[a] = static_cast<std::int32_t>(std::int64_t{b.lo[a]} - g[a]);
    out.hi[a] = static_cast<std::int32_t>(std::int64_t{b.hi[a]} + g[a]);
  }
  return out;
}

bool safe_relative_path(std::string_view p) {
  if (p.empty() || p.front() == '/') return false;
  std::size_t start = 0;
  while (start <= p.size()) {
    std::size_t end = p.find('/', start);
    if (end == std::string_view::npos) end = p.size();
    const std::string_view part = p.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}

template <class Word>
void byteswap_inplace(std::byte* data, std::uint64_t n) {
  for (std::uint64_t i = 0; i < n; ++i) {
    Word w;
    std::memcpy(&w, data + i * sizeof(Word), sizeof(Word));
    if constexpr (sizeof(Word) == 8) w = __builtin_bswap64(w);
    else w = __builtin_bswap32(w);
    std::memcpy(data + i * sizeof(Word), &w, sizeof(Word));
  }
}

// Valid region of a Fortran-ordered grown FAB slab -> C-order output.
template <class Word, bool Swap>
void copy_valid_to_c(const std::byte* src, std::byte* dst, std::uint64_t nxg, std::uint64_t nyg, std::uint64_t gx,
                     std::uint64_t gy, std::uint64_t nx, std::uint64_t ny, std::uint64_t nz) {
  const auto* s = reinterpret_cast<const unsigned char*>(src);
  auto* d = reinterpret_cast<unsigned char*>(dst);
  for (std::uint64_t k = 0; k < nz; ++k) {
    for (std::uint64_t j = 0; j < ny; ++j) {
      const unsigned char* row = s + ((k * nyg + j + gy) * nxg + gx) * sizeof(Word);
      for (std::uint64_t i = 0; i < nx; ++i) {
        Word w;
        std::memcpy(&w, row + i * sizeof(Word), sizeof(Word));
        if constexpr (Swap) {
          if constexpr (sizeof(Word) == 8) w = __builtin_bswap64(w);
          else w = __builtin_bswap32(w);
        }
        std::memcpy(d + ((i * ny + j) * nz + k) * sizeof(Word), &w, sizeof(Word));
      }
    }
  }
}

class PlotfileReaderImpl final : public PlotfileReader {
 public:
  explicit PlotfileReaderImpl(std::string path) : path_(std::move(path)) { load(); }

  ~PlotfileReaderImpl() override {
    for (auto& f : files_) {
      const int fd = f.fd.load();
      if (fd >= 0) ::close(fd);
    }
  }

  const std::string& path() const override { return path_; }
  const std::string& version() const override { return h_.version; }
  int spacedim() const override { return h_.spacedim; }
  const std::vector<std::string>& var_names() const override { return h_.var_names; }
  double time() const override { return h_.time; }
  int finest_level() const override { return h_.finest_level; }
  std::array<double, 3> prob_lo() const override { return h_.prob_lo; }
  std::array<double, 3> prob_hi() const override { return h_.prob_hi; }
  int coord_sys() const override { return coord_sys_; }
  bool mapped_mesh() const override { return h_.mapped_mesh; }
  std::optional<std::array<bool, 3>> is_periodic() const override { return periodic_; }
  const std::vector<PlotfileLevel>& levels() const override { return levels_; }
  std::int32_t step() const override { return h_.level_steps.front(); }

  BufferPtr read_component(int level, int fab, int comp) const override;
  BufferPtr read_component_window(int level, int fab, int comp, const IndexBox& window) const override;
  std::uint64_t component_bytes(int level, int fab) const override {
    check_fab(level, fab);
    const PlotfileLevel& L = levels_[static_cast<std::size_t>(level)];
    return checked_mul(box_points(L.boxes[static_cast<std::size_t>(fab)]), scalar_width(L.real_type));
  }

  const std::vector<PlotfileParticleSpecies>& particle_species() const override { return species_info_; }
  BufferPtr read_particle_field(const std::string& species, const std::string& field,
                                std::int64_t chunk) const override {
    return amrex::read_particle_chunk_field(find_species(species), field, chunk);
  }
  std::uint64_t particle_count(const std::string& species, std::int64_t chunk) const override {
    const auto& s = find_species(species);
    if (chunk < 0 || static_cast<std::uint64_t>(chunk) >= s.chunks.size()) {
      fail(ErrorKind::invalid_argument, "particle chunk index out of range: " + std::to_string(chunk) +
                                            " (species " + species + " has " + std::to_string(s.chunks.size()) +
                                            " chunks)");
    }
    return static_cast<std::uint64_t>(s.chunks[static_cast<std::size_t>(chunk)].count);
  }
  bool particle_grids_match_mesh(const std::string& species, int level) const override;

  std::string metadata_json() const override {
    std::call_once(metadata_once_, [this] { metadata_ = build_metadata(); });
    return metadata_;
  }

 private:
  struct DataFile {
    std::string path;
    std::uint64_t size = 0;
    mutable std::atomic<int> fd{-1};
  };

  BufferPtr map_component(int fd, const DataFile& df, std::uint64_t offset, std::uint64_t bytes, ScalarType type,
                          const std::uint64_t (&extents)[3]) const;

  // Per-level FAB index (what PlotfileLevel does not already say).
  struct LevelIndex {
    std::string cell_h_path;
    int ncomp = 0;
    RealFormat real;
    std::vector<IndexBox> fab_box;          // Cell_H box grown by ngrow
    std::vector<std::uint32_t> fab_file;    // into files_
    std::vector<std::uint64_t> fab_offset;
    std::unique_ptr<std::atomic<std::uint32_t>[]> header_bytes;  // 0 = not parsed yet
    // Per component: the FAB read last and the FAB read-ahead reached (read_ahead).
    std::unique_ptr<std::atomic<int>[]> last_read;
    std::unique_ptr<std::atomic<int>[]> read_ahead_to;
  };

  // A descriptor borrowed from the cache, or opened for one read.
  struct FdLease {
    int fd = -1;
    bool owned = false;
    FdLease(int f, bool o) : fd(f), owned(o) {}
    FdLease(const FdLease&) = delete;
    FdLease& operator=(const FdLease&) = delete;
    ~FdLease() {
      if (owned) ::close(fd);
    }
  };

  void load();
  void load_level(int l);
  void check_grid_bounds(int l, const std::string& cell_h_path) const;
  // Header bytes of a FAB, parsing and checking its header on first use.
  std::uint32_t fab_header_bytes(int level, int fab) const;
  amrex::FabHeader parse_fab_at(int level, int fab) const;
  std::uint32_t accept_fab_header(int level, int fab, const amrex::FabHeader& fh) const;
  FdLease acquire(const DataFile& f) const;
  void read_ahead(int level, int fab, int comp) const;
  void check_fab(int level, int fab) const;
  const amrex::ParticleSpeciesIndex& find_species(const std::string& name) const;
  std::string build_metadata() const;

  std::string path_;
  amrex::PlotfileHeaderText h_;
  std::vector<PlotfileLevel> levels_;
  std::vector<LevelIndex> index_;
  std::deque<DataFile> files_;  // deque: DataFile holds an atomic and never moves
  std::vector<amrex::ParticleSpeciesIndex> species_;
  std::vector<PlotfileParticleSpecies> species_info_;
  std::optional<std::array<bool, 3>> periodic_;
  int coord_sys_ = 0;

  mutable std::mutex fd_mutex_;
  mutable int cached_fds_ = 0;
  mutable std::once_flag metadata_once_;
  mutable std::string metadata_;
};

void PlotfileReaderImpl::load() {
  while (path_.size() > 1 && path_.back() == '/') path_.pop_back();
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    fail(ErrorKind::not_found, "plotfile not found: " + path_ + " (not a directory)");
  }
  const std::string header_path = path_ + "/Header";
  h_ = amrex::parse_plotfile_header(amrex::read_text_file(header_path, amrex::kMaxTextFileBytes, "plotfile Header"),
                                    header_path);
  const int nlev = h_.finest_level + 1;
  levels_.resize(static_cast<std::size_t>(nlev));
  index_.resize(static_cast<std::size_t>(nlev));
  for (int l = 0; l < nlev; ++l) load_level(l);

  // One real type per plotfile: metadata reports one dtype per variable.
  const LevelIndex* first = nullptr;
  for (const auto& li : index_) {
    if (li.fab_box.empty()) continue;
    if (first == nullptr) first = &li;
    else if (!(li.real == first->real)) {
      fail(ErrorKind::io, li.cell_h_path + ": FAB real descriptor (" + std::to_string(li.real.bits) +
                              "-bit) differs from that of " + first->cell_h_path + " (" +
                              std::to_string(first->real.bits) + "-bit)");
    }
  }

  // Optional run information (BACK-AMREX-10).
  coord_sys_ = h_.coord_sys;
  for (const char* name : {"job_info", "warpx_job_info"}) {
    const std::string p = path_ + "/" + name;
    struct stat js {};
    if (::stat(p.c_str(), &js) != 0 || !S_ISREG(js.st_mode)) continue;
    try {
      amrex::JobInfo info;
      amrex::scan_job_info(amrex::read_text_file(p, kMaxJobInfoBytes, name), info);
      if (info.is_periodic) periodic_ = info.is_periodic;
      // WarpX writes coord_sys 0 into the Header of RZ runs.
      if (info.rz && std::string_view(name) == "warpx_job_info") coord_sys_ = 1;
    } catch (const Error&) {
      // job_info is informational; an unreadable one reports nothing.
    }
  }
  if (periodic_) {
    for (int a = h_.spacedim; a < 3; ++a) (*periodic_)[static_cast<std::size_t>(a)] = false;
  }

  species_ = amrex::scan_particle_species(path_);
  for (const auto& s : species_) species_info_.push_back(s.info);
}

void PlotfileReaderImpl::load_level(int l) {
  const auto ul = static_cast<std::size_t>(l);
  const amrex::HeaderLevelBlock& block = h_.levels[ul];
  const std::string header_path = path_ + "/Header";
  if (!safe_relative_path(block.mf_prefix)) {
    fail(ErrorKind::io, header_path + ":" + std::to_string(block.first_line) + ": multifab path " +
                            amrex::quoted(block.mf_prefix) + " of level " + std::to_string(l) +
                            " is not a plain relative path");
  }
  const std::string prefix = path_ + "/" + block.mf_prefix;
  const std::string cell_h_path = prefix + "_H";
  const std::string level_dir = prefix.substr(0, prefix.rfind('/'));
  amrex::CellHeader ch = amrex::parse_cell_header(
      amrex::read_text_file(cell_h_path, amrex::kMaxTextFileBytes, "Cell_H"), h_.spacedim, cell_h_path);

  if (ch.ncomp != static_cast<int>(h_.var_names.size())) {
    fail(ErrorKind::io, cell_h_path + ": Cell_H ncomp " + std::to_string(ch.ncomp) +
                            " differs from the Header's variable count " + std::to_string(h_.var_names.size()));
  }
  if (static_cast<std::int64_t>(ch.boxes.size()) != block.ngrids) {
    fail(ErrorKind::io, cell_h_path + ": Cell_H has " + std::to_string(ch.boxes.size()) + " boxes but the Header (line " +
                            std::to_string(block.first_line) + ") lists " + std::to_string(block.ngrids) +
                            " grids for level " + std::to_string(l));
  }

  PlotfileLevel& L = levels_[ul];
  L.domain = h_.domains[ul];
  L.cell_size = h_.cell_size[ul];
  L.level_step = h_.level_steps[ul];
  L.boxes = std::move(ch.boxes);
  L.ngrow_axes = ch.ngrow;
  L.ngrow = std::max({ch.ngrow[0], ch.ngrow[1], ch.ngrow[2]});
  for (std::size_t g = 0; g < L.boxes.size(); ++g) {
    if (!(L.boxes[g].intersect(L.domain) == L.boxes[g])) {
      fail(ErrorKind::io, cell_h_path + ": box " + std::to_string(g) + " " + L.boxes[g].to_string() +
                              " lies outside the level's prob_domain " + L.domain.to_string());
    }
  }
  check_grid_bounds(l, cell_h_path);

  LevelIndex& li = index_[ul];
  li.cell_h_path = cell_h_path;
  li.ncomp = ch.ncomp;
  li.fab_offset = std::move(ch.fab_offset);
  li.fab_box.reserve(L.boxes.size());
  for (const auto& b : L.boxes) li.fab_box.push_back(grow(b, ch.ngrow));
  li.header_bytes = std::make_unique<std::atomic<std::uint32_t>[]>(L.boxes.size());
  li.last_read = std::make_unique<std::atomic<int>[]>(static_cast<std::size_t>(ch.ncomp));
  li.read_ahead_to = std::make_unique<std::atomic<int>[]>(static_cast<std::size_t>(ch.ncomp));
  for (int c = 0; c < ch.ncomp; ++c) li.last_read[static_cast<std::size_t>(c)].store(-2);

  // Data files: every one must exist and reach past every indexed offset.
  std::vector<std::uint32_t> global(ch.files.size());
  for (std::size_t f = 0; f < ch.files.size(); ++f) {
    const std::string p = level_dir + "/" + ch.files[f];
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
      fail(ErrorKind::not_found, "failed to open FAB file: " + p + " (listed in " + cell_h_path + ")");
    }
    global[f] = static_cast<std::uint32_t>(files_.size());
    DataFile& df = files_.emplace_back();
    df.path = p;
    df.size = static_cast<std::uint64_t>(st.st_size);
  }
  li.fab_file.reserve(ch.fab_file.size());
  for (std::size_t b = 0; b < ch.fab_file.size(); ++b) {
    li.fab_file.push_back(global[ch.fab_file[b]]);
    const DataFile& df = files_[li.fab_file.back()];
    if (li.fab_offset[b] >= df.size) {
      fail(ErrorKind::io, "FAB file is shorter than its indexed offset: " + df.path + " (offset " +
                              std::to_string(li.fab_offset[b]) + ", file size " + std::to_string(df.size) +
                              ", FAB " + std::to_string(b) + " of " + cell_h_path + ")");
    }
  }
  if (L.boxes.empty()) return;

  // The first FAB's header fixes the level's real descriptor; every later FAB
  // must match it (checked on first read).
  const amrex::FabHeader first = parse_fab_at(l, 0);
  li.real = first.real;
  accept_fab_header(l, 0, first);
  L.real_type = li.real.scalar();
  const std::uint64_t w = li.real.width();
  for (std::size_t b = 1; b < li.fab_box.size(); ++b) {
    const DataFile& df = files_[li.fab_file[b]];
    const std::string where = df.path + " at offset " + std::to_string(li.fab_offset[b]);
    const std::uint64_t payload = fab_payload_bytes(li.fab_box[b], static_cast<std::uint64_t>(li.ncomp), w, where);
    if (payload > df.size || li.fab_offset[b] + kMinFabHeaderBytes > df.size - payload) {
      fail(ErrorKind::io, "truncated FAB payload: " + df.path + " at offset " + std::to_string(li.fab_offset[b]) +
                              " needs at least " + std::to_string(payload + kMinFabHeaderBytes) +
                              " bytes, file has " + std::to_string(df.size - li.fab_offset[b]) + " (FAB " +
                              std::to_string(b) + " of " + cell_h_path + ")");
    }
  }
}

// BACK-AMREX-9: each grid's physical bounds (COORD-1, relative to the level's
// domain origin) must match the Header's "lo hi" lines to 1e-10 of the domain
// length. AMReX's own writer measures from index 0 instead, which differs only
// when the domain does not start at 0; either convention is accepted.
void PlotfileReaderImpl::check_grid_bounds(int l, const std::string& cell_h_path) const {
  const auto ul = static_cast<std::size_t>(l);
  const PlotfileLevel& L = levels_[ul];
  const amrex::HeaderLevelBlock& block = h_.levels[ul];
  for (std::size_t g = 0; g < L.boxes.size(); ++g) {
    const IndexBox& b = L.boxes[g];
    for (int a = 0; a < h_.spacedim; ++a) {
      const auto ua = static_cast<std::size_t>(a);
      const double tol = 1e-10 * (h_.prob_hi[ua] - h_.prob_lo[ua]);
      const double dx = L.cell_size[ua];
      auto matches = [&](std::int64_t origin) {
        const double lo = h_.prob_lo[ua] + static_cast<double>(b.lo[ua] - origin) * dx;
        const double hi = h_.prob_lo[ua] + static_cast<double>(std::int64_t{b.hi[ua]} + 1 - origin) * dx;
        return std::abs(lo - block.grid_lo[g][ua]) <= tol && std::abs(hi - block.grid_hi[g][ua]) <= tol;
      };
      if (!matches(L.domain.lo[ua]) && !matches(0)) {
        fail(ErrorKind::io, "grid bounds disagree with Header: level " + std::to_string(l) + " grid " +
                                std::to_string(g) + " (axis " + std::to_string(a) + ": box " + b.to_string() +
                                " in " + cell_h_path + " vs Header line " +
                                std::to_string(block.first_line + 2 + g * static_cast<std::size_t>(h_.spacedim) + ua) +
                                " of " + path_ + "/Header)");
      }
    }
  }
}

PlotfileReaderImpl::FdLease PlotfileReaderImpl::acquire(const DataFile& f) const {
  int fd = f.fd.load(std::memory_order_acquire);
  if (fd >= 0) return FdLease(fd, false);
  std::lock_guard lock(fd_mutex_);
  fd = f.fd.load(std::memory_order_acquire);
  if (fd >= 0) return FdLease(fd, false);
  fd = ::open(f.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(ErrorKind::io, "failed to open FAB file: " + f.path + ": " + std::strerror(errno));
  if (cached_fds_ < kMaxCachedFds) {
    ++cached_fds_;
    f.fd.store(fd, std::memory_order_release);
    return FdLease(fd, false);
  }
  return FdLease(fd, true);
}

amrex::FabHeader PlotfileReaderImpl::parse_fab_at(int level, int fab) const {
  const LevelIndex& li = index_[static_cast<std::size_t>(level)];
  const auto ub = static_cast<std::size_t>(fab);
  const DataFile& df = files_[li.fab_file[ub]];
  const std::uint64_t offset = li.fab_offset[ub];
  const std::uint64_t want = std::min<std::uint64_t>(amrex::kMaxFabHeaderBytes, df.size - offset);
  std::string text(static_cast<std::size_t>(want), '\0');
  {
    const FdLease fd = acquire(df);
    amrex::pread_exact(fd.fd, text.data(), want, offset, df.path);
  }
  return amrex::parse_fab_header(text, h_.spacedim, df.path, offset);
}

std::uint32_t PlotfileReaderImpl::fab_header_bytes(int level, int fab) const {
  const LevelIndex& li = index_[static_cast<std::size_t>(level)];
  const std::uint32_t cached = li.header_bytes[static_cast<std::size_t>(fab)].load(std::memory_order_acquire);
  if (cached != 0) return cached;
  return accept_fab_header(level, fab, parse_fab_at(level, fab));
}

// BACK-AMREX-9: the FAB must hold the Cell_H box grown by ngrow, all Cell_H
// components in the level's real format, and its whole payload.
std::uint32_t PlotfileReaderImpl::accept_fab_header(int level, int fab, const amrex::FabHeader& fh) const {
  const auto ul = static_cast<std::size_t>(level);
  const auto ub = static_cast<std::size_t>(fab);
  const LevelIndex& li = index_[ul];
  const DataFile& df = files_[li.fab_file[ub]];
  const std::uint64_t offset = li.fab_offset[ub];
  const std::string where = df.path + " at offset " + std::to_string(offset);
  if (!(fh.real == li.real)) {
    fail(ErrorKind::io, where + ": FAB real descriptor (" + std::to_string(fh.real.bits) + "-bit, " +
                            (fh.real.big_endian ? "big" : "little") + "-endian) differs from the level's (" +
                            std::to_string(li.real.bits) + "-bit, " + (li.real.big_endian ? "big" : "little") +
                            "-endian)");
  }
  if (!(fh.box == li.fab_box[ub])) {
    fail(ErrorKind::io, where + ": FAB header box " + fh.box.to_string() + " differs from the Cell_H box " +
                            levels_[ul].boxes[ub].to_string() + " grown by ngrow " +
                            std::to_string(levels_[ul].ngrow) + " (" + li.fab_box[ub].to_string() + ")");
  }
  if (fh.ncomp != li.ncomp) {
    fail(ErrorKind::io, where + ": FAB ncomp " + std::to_string(fh.ncomp) + " differs from Cell_H ncomp " +
                            std::to_string(li.ncomp) + " (" + li.cell_h_path + ")");
  }
  const std::uint64_t payload =
      fab_payload_bytes(fh.box, static_cast<std::uint64_t>(fh.ncomp), fh.real.width(), where);
  if (payload > df.size - offset || fh.header_bytes > df.size - offset - payload) {
    const std::uint64_t need = payload > std::numeric_limits<std::uint64_t>::max() - fh.header_bytes
                                   ? std::numeric_limits<std::uint64_t>::max()
                                   : payload + fh.header_bytes;
    fail(ErrorKind::io, "truncated FAB payload: " + where + " needs " + std::to_string(need) + " bytes, file has " +
                            std::to_string(df.size - offset));
  }
  const auto bytes = static_cast<std::uint32_t>(fh.header_bytes);
  li.header_bytes[ub].store(bytes, std::memory_order_release);
  return bytes;
}

void PlotfileReaderImpl::check_fab(int level, int fab) const {
  if (level < 0 || level > h_.finest_level) {
    fail(ErrorKind::invalid_argument, "plotfile level " + std::to_string(level) + " out of range (" + path_ +
                                          " has " + std::to_string(h_.finest_level + 1) + " levels)");
  }
  const auto n = levels_[static_cast<std::size_t>(level)].boxes.size();
  if (fab < 0 || static_cast<std::size_t>(fab) >= n) {
    fail(ErrorKind::invalid_argument, "FAB index " + std::to_string(fab) + " out of range (level " +
                                          std::to_string(level) + " of " + path_ + " has " + std::to_string(n) +
                                          " FABs)");
  }
}

namespace {

void unmap_region(std::byte* data, std::size_t size) {
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const std::uintptr_t delta = reinterpret_cast<std::uintptr_t>(data) % page;
  ::munmap(data - delta, size + delta);
}

// Opt-in (KANGAROO_AMREX_MMAP=1): mapping saves the copy when data are
// cached, but on a cold cache its 4 KiB page faults made plane slices slower
// than one large pread per FAB on the measured disk.
bool mapping_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("KANGAROO_AMREX_MMAP");
    return v != nullptr && std::string(v) == "1";
  }();
  return enabled;
}

// Maps [offset, offset + bytes) of an open data file; nullptr when mapping is
// disabled or fails (the caller then reads with pread). The file's current
// size is checked first so a file truncated after opening fails explicitly
// instead of faulting on access.
BufferPtr map_region(int fd, const std::string& path, std::uint64_t offset, std::uint64_t bytes, ScalarType type,
                     const std::uint64_t (&extents)[3]) {
  if (!mapping_enabled() || bytes == 0) return nullptr;
  struct stat st {};
  if (::fstat(fd, &st) != 0) return nullptr;
  if (static_cast<std::uint64_t>(st.st_size) < offset + bytes) {
    fail(ErrorKind::io, "FAB payload is truncated: " + path + " needs " + std::to_string(offset + bytes) +
                            " bytes, has " + std::to_string(st.st_size));
  }
  const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  const std::uint64_t delta = offset % page;
  void* base = ::mmap(nullptr, static_cast<std::size_t>(bytes + delta), PROT_READ, MAP_PRIVATE, fd,
                      static_cast<off_t>(offset - delta));
  if (base == MAP_FAILED) return nullptr;
  auto* data = static_cast<std::byte*>(base) + delta;
  auto storage = std::make_shared<Storage>(data, static_cast<std::size_t>(bytes), MemoryLocation::host, &unmap_region);
  return Buffer::wrap(Descriptor::fortran_order(type, extents), std::move(storage), 0, bytes);
}

}  // namespace

BufferPtr PlotfileReaderImpl::map_component(int fd, const DataFile& df, std::uint64_t offset, std::uint64_t bytes,
                                            ScalarType type, const std::uint64_t (&extents)[3]) const {
  return map_region(fd, df.path, offset, bytes, type, extents);
}

// Whole-component reads that walk a level's FABs in order (a histogram or a
// projection over every block, the executor's threads taking blocks in turn)
// ask the kernel to start reading the same component of the next FABs, up to
// kReadAheadBytes ahead, so the disk stays busy while kernels compute. A
// component is one strided piece of each FAB, which the kernel's own
// readahead does not follow. Only a hint: nothing waits for it, and a read
// pattern that is not a walk in order (slices, selected blocks) asks nothing.
constexpr std::uint64_t kReadAheadBytes = 64ull << 20;
constexpr int kReadAheadFabs = 32;

void PlotfileReaderImpl::read_ahead(int level, int fab, int comp) const {
  const LevelIndex& li = index_[static_cast<std::size_t>(level)];
  const auto uc = static_cast<std::size_t>(comp);
  const int prev = li.last_read[uc].exchange(fab, std::memory_order_relaxed);
  if (fab != prev + 1 && fab != prev + 2) return;
  const int nfab = static_cast<int>(li.fab_box.size());
  int from = std::max(fab + 1, li.read_ahead_to[uc].load(std::memory_order_relaxed));
  if (from > fab + 1 + kReadAheadFabs) from = fab + 1;  // left by an earlier pass over the level
  std::uint64_t ahead = 0;
  int to = from;
  const std::uint64_t w = li.real.width();
  for (; to < nfab && to <= fab + kReadAheadFabs && ahead < kReadAheadBytes; ++to) {
    const auto ub = static_cast<std::size_t>(to);
    const std::uint64_t bytes = box_points(li.fab_box[ub]) * w;
    const DataFile& df = files_[li.fab_file[ub]];
    // The FAB's header is not parsed yet; AMReX writes short ones, and a
    // page of slack covers it.
    const std::uint64_t start = li.fab_offset[ub] + static_cast<std::uint64_t>(comp) * bytes;
    if (start >= df.size) continue;
    const std::uint64_t len = std::min<std::uint64_t>(bytes + 4096, df.size - start);
    const FdLease fd = acquire(df);
    ::posix_fadvise(fd.fd, static_cast<off_t>(start), static_cast<off_t>(len), POSIX_FADV_WILLNEED);
    ahead += len;
  }
  int seen = li.read_ahead_to[uc].load(std::memory_order_relaxed);
  while (seen < to && !li.read_ahead_to[uc].compare_exchange_weak(seen, to, std::memory_order_relaxed)) {
  }
}

BufferPtr PlotfileReaderImpl::read_component(int level, int fab, int comp) const {
  check_fab(level, fab);
  const auto ul = static_cast<std::size_t>(level);
  const auto ub = static_cast<std::size_t>(fab);
  const LevelIndex& li = index_[ul];
  if (comp < 0 || comp >= li.ncomp) {
    fail(ErrorKind::invalid_argument, "invalid component range: component " + std::to_string(comp) + " of " +
                                          std::to_string(li.ncomp) + " (" + path_ + ")");
  }
  const std::uint32_t header_bytes = fab_header_bytes(level, fab);
  const PlotfileLevel& L = levels_[ul];
  const IndexBox& valid = L.boxes[ub];
  const IndexBox& grown = li.fab_box[ub];
  const std::uint64_t w = li.real.width();
  const std::uint64_t nx = static_cast<std::uint64_t>(valid.extent(0));
  const std::uint64_t ny = static_cast<std::uint64_t>(valid.extent(1));
  const std::uint64_t nz = static_cast<std::uint64_t>(valid.extent(2));
  const std::uint64_t nxg = static_cast<std::uint64_t>(grown.extent(0));
  const std::uint64_t nyg = static_cast<std::uint64_t>(grown.extent(1));
  const std::uint64_t npts_grown = box_points(grown);
  const std::uint64_t comp_start =
      li.fab_offset[ub] + header_bytes + checked_mul(static_cast<std::uint64_t>(comp), npts_grown * w);
  const DataFile& df = files_[li.fab_file[ub]];
  const bool swap = li.real.big_endian != host_big_endian();
  const std::uint64_t extents[3] = {nx, ny, nz};
  const FdLease fd = acquire(df);

  if (L.ngrow == 0 && !swap) {
    // Zero-copy when enabled: map the component block (the valid region in
    // Fortran order, BACK-AMREX-7); pages are read when a kernel touches them.
    if (BufferPtr mapped = map_component(fd.fd, df, comp_start, npts_grown * w, L.real_type, extents)) return mapped;
  }
  read_ahead(level, fab, comp);
  if (L.ngrow == 0) {
    // The component block is the valid region in Fortran order: read it
    // straight into the buffer's storage (BACK-AMREX-7). Byte swapping in
    // place keeps that layout.
    const std::uint64_t bytes = npts_grown * w;
    auto storage = Storage::allocate_host(static_cast<std::size_t>(bytes), InitPolicy::uninitialized);
    amrex::pread_exact(fd.fd, storage->data(), bytes, comp_start, df.path);
    if (swap) {
      if (w == 8) byteswap_inplace<std::uint64_t>(storage->data(), npts_grown);
      else byteswap_inplace<std::uint32_t>(storage->data(), npts_grown);
    }
    return Buffer::wrap(Descriptor::fortran_order(L.real_type, extents), std::move(storage), 0, bytes);
  }

  // Ghost cells: read the z-slabs that hold the valid region in one piece and
  // copy the valid cells out in C order.
  const std::uint64_t gx = static_cast<std::uint64_t>(valid.lo[0] - grown.lo[0]);
  const std::uint64_t gy = static_cast<std::uint64_t>(valid.lo[1] - grown.lo[1]);
  const std::uint64_t gz = static_cast<std::uint64_t>(valid.lo[2] - grown.lo[2]);
  const std::uint64_t slab = nxg * nyg * w;
  const std::uint64_t span = checked_mul(slab, nz);
  std::unique_ptr<std::byte[]> tmp(new std::byte[static_cast<std::size_t>(span)]);
  amrex::pread_exact(fd.fd, tmp.get(), span, comp_start + gz * slab, df.path);
  BufferPtr out = Buffer::allocate(Descriptor::c_order(L.real_type, extents), InitPolicy::uninitialized);
  std::byte* dst = out->mutable_data();
  if (w == 8) {
    if (swap) copy_valid_to_c<std::uint64_t, true>(tmp.get(), dst, nxg, nyg, gx, gy, nx, ny, nz);
    else copy_valid_to_c<std::uint64_t, false>(tmp.get(), dst, nxg, nyg, gx, gy, nx, ny, nz);
  } else {
    if (swap) copy_valid_to_c<std::uint32_t, true>(tmp.get(), dst, nxg, nyg, gx, gy, nx, ny, nz);
    else copy_valid_to_c<std::uint32_t, false>(tmp.get(), dst, nxg, nyg, gx, gy, nx, ny, nz);
  }
  return out;
}

BufferPtr PlotfileReaderImpl::read_component_window(int level, int fab, int comp, const IndexBox& window) const {
  check_fab(level, fab);
  const auto ul = static_cast<std::size_t>(level);
  const auto ub = static_cast<std::size_t>(fab);
  const LevelIndex& li = index_[ul];
  const PlotfileLevel& L = levels_[ul];
  const IndexBox& valid = L.boxes[ub];
  const IndexBox w = valid.intersect(window);
  const bool whole = !w.empty() && w.lo[1] == valid.lo[1] && w.hi[1] == valid.hi[1] && w.lo[2] == valid.lo[2] &&
                     w.hi[2] == valid.hi[2];
  // Ghost cells change the layout, and a mapped component reads lazily anyway.
  if (L.ngrow != 0 || whole || mapping_enabled()) return read_component(level, fab, comp);
  if (comp < 0 || comp >= li.ncomp) {
    fail(ErrorKind::invalid_argument, "invalid component range: component " + std::to_string(comp) + " of " +
                                          std::to_string(li.ncomp) + " (" + path_ + ")");
  }
  const std::uint64_t wd = li.real.width();
  const std::uint64_t nx = static_cast<std::uint64_t>(valid.extent(0));
  const std::uint64_t ny = static_cast<std::uint64_t>(valid.extent(1));
  const std::uint64_t nz = static_cast<std::uint64_t>(valid.extent(2));
  const std::uint64_t extents[3] = {nx, ny, nz};
  const std::uint64_t bytes = checked_mul(box_points(valid), wd);
  auto storage = Storage::allocate_host(static_cast<std::size_t>(bytes), InitPolicy::zero);
  // A window (a slice's plane) is a small part of the block: only its pages
  // should become resident, not the huge pages around it.
  storage->expect_sparse_writes();
  if (!w.empty()) {
    const std::uint32_t header_bytes = fab_header_bytes(level, fab);
    const std::uint64_t comp_start =
        li.fab_offset[ub] + header_bytes + checked_mul(static_cast<std::uint64_t>(comp), bytes);
    const DataFile& df = files_[li.fab_file[ub]];
    const FdLease fd = acquire(df);
    const bool swap = li.real.big_endian != host_big_endian();
    const std::uint64_t row = nx * wd;
    const auto j0 = static_cast<std::uint64_t>(w.lo[1] - valid.lo[1]);
    const auto j1 = static_cast<std::uint64_t>(w.hi[1] - valid.lo[1]);
    const auto k0 = static_cast<std::uint64_t>(w.lo[2] - valid.lo[2]);
    const auto k1 = static_cast<std::uint64_t>(w.hi[2] - valid.lo[2]);
    // Fortran order: x rows, then y, then z. Full y: the z-planes are one run.
    const bool full_y = j0 == 0 && j1 + 1 == ny;
    auto read_run = [&](std::uint64_t at, std::uint64_t n) {
      amrex::pread_exact(fd.fd, storage->data() + at, n, comp_start + at, df.path);
      if (swap) {
        if (wd == 8) byteswap_inplace<std::uint64_t>(storage->data() + at, n / 8);
        else byteswap_inplace<std::uint32_t>(storage->data() + at, n / 4);
      }
    };
    if (full_y) {
      read_run(k0 * ny * row, (k1 - k0 + 1) * ny * row);
    } else {
      for (std::uint64_t k = k0; k <= k1; ++k) read_run((k * ny + j0) * row, (j1 - j0 + 1) * row);
    }
  }
  return Buffer::wrap(Descriptor::fortran_order(L.real_type, extents), std::move(storage), 0, bytes);
}

const amrex::ParticleSpeciesIndex& PlotfileReaderImpl::find_species(const std::string& name) const {
  for (const auto& s : species_) {
    if (s.info.name == name) return s;
  }
  fail(ErrorKind::not_found, "particle type not found: " + name);
}

bool PlotfileReaderImpl::particle_grids_match_mesh(const std::string& species, int level) const {
  const auto& s = find_species(species);
  if (level < 0 || level > h_.finest_level) return false;
  const auto ul = static_cast<std::size_t>(level);
  const bool has_h = ul < s.grid_boxes.size() && s.grid_boxes[ul].has_value();
  if (!has_h) return !s.has_particles_on(level);  // nothing to deposit on this level
  const std::vector<IndexBox>& pboxes = *s.grid_boxes[ul];
  const std::vector<IndexBox>& mesh = levels_[ul].boxes;
  if (pboxes != mesh) return false;
  // The Header's grid list must address exactly these boxes.
  return static_cast<std::size_t>(s.info.grids_per_level[ul]) == pboxes.size();
}

std::string PlotfileReaderImpl::build_metadata() const {
  using json = nlohmann::ordered_json;
  auto box_json = [](const IndexBox& b) {
    return json::array({json::array({b.lo[0], b.lo[1], b.lo[2]}), json::array({b.hi[0], b.hi[1], b.hi[2]})});
  };
  json m;
  m["var_names"] = h_.var_names;
  m["mesh_names"] = json::array();
  m["selected_mesh"] = nullptr;
  m["finest_level"] = h_.finest_level;
  m["time"] = h_.time;
  m["prob_lo"] = h_.prob_lo;
  m["prob_hi"] = h_.prob_hi;
  // One entry per level, 0 on the finest (META-1); the axis-0 domain ratio,
  // which equals the Header's entries wherever the Header lists them.
  json ratios = json::array();
  for (int l = 0; l <= h_.finest_level; ++l) {
    if (l == h_.finest_level) {
      ratios.push_back(0);
    } else {
      const auto n0 = levels_[static_cast<std::size_t>(l)].domain.extent(0);
      const auto n1 = levels_[static_cast<std::size_t>(l) + 1].domain.extent(0);
      ratios.push_back(n1 % n0 == 0 ? n1 / n0 : 0);
    }
  }
  m["ref_ratio"] = ratios;
  json cell = json::array();
  json boxes = json::array();
  json domains = json::array();
  for (const auto& L : levels_) {
    cell.push_back(L.cell_size);
    json lb = json::array();
    for (const auto& b : L.boxes) lb.push_back(box_json(b));
    boxes.push_back(std::move(lb));
    domains.push_back(box_json(L.domain));
  }
  m["cell_size"] = std::move(cell);
  m["level_boxes"] = std::move(boxes);
  m["prob_domain"] = std::move(domains);
  m["coord_sys"] = coord_sys_;
  if (periodic_) m["is_periodic"] = *periodic_;
  m["mapped_mesh"] = h_.mapped_mesh;
  const ScalarType real = levels_.front().real_type;
  json info = json::object();
  for (const auto& name : h_.var_names) {
    info[name] = {{"num_components", 1},
                  {"component_names", json::array({name})},
                  {"type", real == ScalarType::f32 ? "float32" : "float64"}};
  }
  m["variable_info"] = std::move(info);
  // BACK-AMREX-13 header extras.
  m["file_version"] = h_.version;
  m["spacedim"] = h_.spacedim;
  m["level_steps"] = h_.level_steps;
  m["step"] = h_.level_steps.front();
  m["bwidth"] = h_.bwidth;
  json species = json::array();
  json particle_info = json::object();
  for (const auto& s : species_info_) {
    species.push_back(s.name);
    // What a remote client needs to lower particle operations (PMETA-2):
    // field names in BACK-AMREX-12 order and one chunk per particle grid.
    std::int64_t chunks = 0;
    for (auto g : s.grids_per_level) chunks += g;
    particle_info[s.name] = {{"fields", s.fields},
                             {"chunk_count", chunks},
                             {"grids_per_level", s.grids_per_level},
                             {"dim", s.dim},
                             {"stored_dtype", s.single_precision ? "float32" : "float64"},
                             {"count", s.total_particles}};
  }
  m["particle_types"] = std::move(species);
  m["particle_info"] = std::move(particle_info);
  return m.dump();
}

struct CacheEntry {
  std::shared_ptr<const PlotfileReader> reader;
  std::int64_t mtime_ns = 0;
  std::int64_t size = 0;
};

}  // namespace

Descriptor PlotfileReader::component_descriptor(int level, int fab) const {
  const auto& lv = levels();
  if (level < 0 || static_cast<std::size_t>(level) >= lv.size() || fab < 0 ||
      static_cast<std::size_t>(fab) >= lv[static_cast<std::size_t>(level)].boxes.size()) {
    fail(ErrorKind::invalid_argument, "FAB (" + std::to_string(level) + ", " + std::to_string(fab) +
                                          ") out of range in " + path());
  }
  const PlotfileLevel& L = lv[static_cast<std::size_t>(level)];
  const IndexBox& b = L.boxes[static_cast<std::size_t>(fab)];
  const std::uint64_t extents[3] = {static_cast<std::uint64_t>(b.extent(0)), static_cast<std::uint64_t>(b.extent(1)),
                                    static_cast<std::uint64_t>(b.extent(2))};
  return L.ngrow == 0 ? Descriptor::fortran_order(L.real_type, extents) : Descriptor::c_order(L.real_type, extents);
}

std::shared_ptr<const PlotfileReader> PlotfileReader::open(const std::string& path) {
  return std::make_shared<PlotfileReaderImpl>(path);
}

std::shared_ptr<const PlotfileReader> PlotfileReader::open_cached(const std::string& path) {
  static std::mutex mutex;
  static std::map<std::string, CacheEntry> cache;
  std::error_code ec;
  const std::filesystem::path canonical = std::filesystem::canonical(path, ec);
  if (ec) return open(path);  // let open() report the missing path
  const std::string key = canonical.string();
  // A rewritten Header (same path, new output) must not serve stale indexes.
  struct stat st {};
  const std::string header = key + "/Header";
  if (::stat(header.c_str(), &st) != 0) return open(path);
  const std::int64_t mtime = std::int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
  std::lock_guard lock(mutex);
  auto it = cache.find(key);
  if (it != cache.end() && it->second.mtime_ns == mtime && it->second.size == st.st_size) return it->second.reader;
  auto reader = open(key);
  cache[key] = CacheEntry{reader, mtime, static_cast<std::int64_t>(st.st_size)};
  return reader;
}

}  // namespace kangaroo
