// AMReX particle species: Header parsing, chunk index and field reads
// (BACK-AMREX-11, BACK-AMREX-12, PMETA-1).
#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <map>
#include <sys/stat.h>
#include <unistd.h>

#include "particle_store.h"
#include "text_scan.h"

namespace kangaroo::amrex {

namespace {

// Each remaining name or number needs at least one character and a separator.
constexpr std::size_t kMinTokenChars = 2;

std::uint64_t mul_or_fail(std::uint64_t a, std::uint64_t b, const std::string& where) {
  std::uint64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) fail(ErrorKind::io, where + ": particle data size overflows 64 bits");
  return r;
}

std::uint64_t add_or_fail(std::uint64_t a, std::uint64_t b, const std::string& where) {
  std::uint64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) fail(ErrorKind::io, where + ": particle data size overflows 64 bits");
  return r;
}

struct FileCloser {
  int fd;
  ~FileCloser() {
    if (fd >= 0) ::close(fd);
  }
};

std::string data_file_name(std::int64_t number, int digits) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "DATA_%0*lld", digits, static_cast<long long>(number));
  return buf;
}

bool stat_regular(const std::string& path, std::uint64_t& size) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  size = static_cast<std::uint64_t>(st.st_size);
  return true;
}

// Only particle Headers start with the version marker; checking the first
// bytes avoids reading large unrelated Header files of other subdirectories.
bool looks_like_particle_header(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return false;
  FileCloser closer{fd};
  char buf[128];
  ssize_t n = 0;
  do n = ::pread(fd, buf, sizeof buf, 0);
  while (n < 0 && errno == EINTR);
  if (n <= 0) return false;
  return std::string_view(buf, static_cast<std::size_t>(n)).find("Version_Two_Dot_") != std::string_view::npos;
}

}  // namespace

ParticleHeaderText parse_particle_header(std::string_view text, const std::string& path) {
  TextCursor c(text, path);
  ParticleHeaderText h;
  const std::string_view version = c.read_token();
  if (version.find("Version_Two_Dot_") == std::string_view::npos) {
    c.fail_here("not a particle Header: version " + quoted(version) + " lacks 'Version_Two_Dot_'");
  }
  h.version = std::string(version);
  h.single_precision = version.find("single") != std::string_view::npos;
  h.dim = static_cast<int>(c.read_int("particle dim", 1, 3));

  auto read_names = [&c](std::vector<std::string>& names, const char* what) {
    const std::int64_t n = c.read_int(what, 0, kMaxComponents);
    if (static_cast<std::uint64_t>(n) > c.remaining() / kMinTokenChars) {
      c.fail_here(std::string(what) + " " + std::to_string(n) + " exceeds what the file can hold");
    }
    for (std::int64_t i = 0; i < n; ++i) {
      const std::string_view name = c.read_token();
      if (name.empty()) c.fail_here(std::string("missing component name (") + what + ")");
      names.emplace_back(name);
    }
  };
  read_names(h.real_names, "real component count");
  read_names(h.int_names, "int component count");
  h.checkpoint = c.read_int("checkpoint flag", 0, 1) != 0;
  h.total_particles = c.read_int("particle count", 0, std::numeric_limits<std::int64_t>::max());
  h.next_id = c.read_int("next particle id", std::numeric_limits<std::int64_t>::min() + 1,
                         std::numeric_limits<std::int64_t>::max());
  h.finest_level = static_cast<int>(c.read_int("particle finest_level", 0, kMaxLevels - 1));

  std::vector<std::int64_t> ngrids;
  std::uint64_t total_grids = 0;
  for (int l = 0; l <= h.finest_level; ++l) {
    const std::int64_t n = c.read_int("particle grid count", 0, std::numeric_limits<std::int64_t>::max());
    total_grids += static_cast<std::uint64_t>(n);
    // Every grid is a triple "file count offset": at least 6 characters.
    if (total_grids > c.remaining() / (3 * kMinTokenChars)) {
      c.fail_here("particle grid counts exceed what the file can hold");
    }
    ngrids.push_back(n);
  }
  h.grids.resize(ngrids.size());
  for (std::size_t l = 0; l < ngrids.size(); ++l) {
    h.grids[l].reserve(static_cast<std::size_t>(ngrids[l]));
    for (std::int64_t g = 0; g < ngrids[l]; ++g) {
      ParticleGridEntry e;
      e.file_number = c.read_int("particle file number", 0, std::int64_t{1} << 30);
      e.count = c.read_int("particle grid count", 0, std::numeric_limits<std::int64_t>::max());
      e.offset = static_cast<std::uint64_t>(
          c.read_int("particle grid offset", 0, std::numeric_limits<std::int64_t>::max()));
      h.grids[l].push_back(e);
    }
  }
  return h;
}

std::vector<IndexBox> parse_box_array_text(std::string_view text, const std::string& path) {
  TextCursor c(text, path);
  c.expect('(', "to open the box array");
  const std::int64_t n = c.read_int("box count", 0, std::numeric_limits<std::int64_t>::max());
  if (static_cast<std::uint64_t>(n) > c.remaining() / 8) {
    c.fail_here("box array claims " + std::to_string(n) + " boxes but only " + std::to_string(c.remaining()) +
                " bytes follow");
  }
  const std::string_view hash = c.read_token();
  std::int64_t hash_value = 0;
  if (!parse_int_token(hash, hash_value)) c.fail_here("malformed box array hash " + quoted(hash));
  std::vector<IndexBox> boxes;
  int dims = 0;
  for (std::int64_t b = 0; b < n; ++b) boxes.push_back(c.read_box(dims, "particle grid box"));
  c.expect(')', "to close the box array");
  return boxes;
}

bool ParticleSpeciesIndex::has_particles_on(int level) const {
  if (level < 0 || static_cast<std::size_t>(level) >= info.grids_per_level.size()) return false;
  const std::int64_t begin = first_chunk[static_cast<std::size_t>(level)];
  const std::int64_t end = begin + info.grids_per_level[static_cast<std::size_t>(level)];
  for (std::int64_t c = begin; c < end; ++c) {
    if (chunks[static_cast<std::size_t>(c)].count > 0) return true;
  }
  return false;
}

std::vector<ParticleSpeciesIndex> scan_particle_species(const std::string& plotfile_dir) {
  namespace fs = std::filesystem;
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(plotfile_dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code dec;
    if (it->is_directory(dec)) names.push_back(it->path().filename().string());
  }
  std::sort(names.begin(), names.end());

  std::vector<ParticleSpeciesIndex> out;
  for (const std::string& name : names) {
    ParticleSpeciesIndex s;
    s.dir = plotfile_dir + "/" + name;
    const std::string header_path = s.dir + "/Header";
    std::uint64_t header_size = 0;
    if (!stat_regular(header_path, header_size) || !looks_like_particle_header(header_path)) continue;
    ParticleHeaderText h;
    try {
      h = parse_particle_header(read_text_file(header_path, kMaxTextFileBytes, "particle Header"), header_path);
    } catch (const Error&) {
      continue;  // unparseable: the species is absent (BACK-AMREX-11)
    }

    s.info.name = name;
    s.info.dim = h.dim;
    s.info.single_precision = h.single_precision;
    static const char* const kAxes[3] = {"x", "y", "z"};
    for (int a = 0; a < h.dim; ++a) s.info.fields.emplace_back(kAxes[a]);
    s.info.fields.insert(s.info.fields.end(), h.real_names.begin(), h.real_names.end());
    if (h.checkpoint) {
      s.info.fields.emplace_back("id");
      s.info.fields.emplace_back("cpu");
    }
    s.info.fields.insert(s.info.fields.end(), h.int_names.begin(), h.int_names.end());
    s.info.total_particles = h.total_particles;
    s.n_real = h.dim + static_cast<int>(h.real_names.size());
    s.n_int = static_cast<int>(h.int_names.size()) + (h.checkpoint ? 2 : 0);

    // Resolve data files once per (level, file number).
    std::map<std::pair<int, std::int64_t>, std::uint32_t> file_of;
    for (std::size_t l = 0; l < h.grids.size(); ++l) {
      s.info.grids_per_level.push_back(static_cast<std::int64_t>(h.grids[l].size()));
      s.first_chunk.push_back(static_cast<std::int64_t>(s.chunks.size()));
      const std::string level_dir = s.dir + "/Level_" + std::to_string(l);
      for (std::size_t g = 0; g < h.grids[l].size(); ++g) {
        const ParticleGridEntry& e = h.grids[l][g];
        const auto key = std::make_pair(static_cast<int>(l), e.file_number);
        auto it = file_of.find(key);
        if (it == file_of.end()) {
          ParticleDataFile f;
          f.path = level_dir + "/" + data_file_name(e.file_number, 5);
          f.exists = stat_regular(f.path, f.size);
          if (!f.exists) {
            const std::string alt = level_dir + "/" + data_file_name(e.file_number, 4);
            if (stat_regular(alt, f.size)) {
              f.path = alt;
              f.exists = true;
            }
          }
          it = file_of.emplace(key, static_cast<std::uint32_t>(s.files.size())).first;
          s.files.push_back(std::move(f));
        }
        ParticleChunk ch;
        ch.level = static_cast<std::int32_t>(l);
        ch.grid = static_cast<std::int32_t>(g);
        ch.count = e.count;
        ch.offset = e.offset;
        ch.file = it->second;
        s.chunks.push_back(ch);
      }
      // Particle_H: the level's particle box array.
      const std::string ph = level_dir + "/Particle_H";
      std::uint64_t ph_size = 0;
      std::optional<std::vector<IndexBox>> boxes;
      if (stat_regular(ph, ph_size)) {
        try {
          boxes = parse_box_array_text(read_text_file(ph, kMaxTextFileBytes, "Particle_H"), ph);
        } catch (const Error&) {
          boxes.reset();  // unreadable: treated as missing (grids cannot be matched)
        }
      }
      s.grid_boxes.push_back(std::move(boxes));
    }

    // Bytes available to each chunk: up to the next larger offset in the same
    // file, else to the end of the file; then infer the int width.
    std::vector<std::vector<std::uint64_t>> offsets(s.files.size());
    for (const auto& ch : s.chunks) offsets[ch.file].push_back(ch.offset);
    for (auto& v : offsets) std::sort(v.begin(), v.end());
    const std::uint64_t rw = s.real_width();
    for (auto& ch : s.chunks) {
      const ParticleDataFile& f = s.files[ch.file];
      const auto& v = offsets[ch.file];
      const auto next = std::upper_bound(v.begin(), v.end(), ch.offset);
      const std::uint64_t end = next != v.end() ? *next : f.size;
      ch.available = end > ch.offset ? end - ch.offset : 0;
      ch.int_width = 8;
      if (s.n_int > 0 && ch.count > 0) {
        const auto count = static_cast<std::uint64_t>(ch.count);
        std::uint64_t real_bytes = 0;
        std::uint64_t denom = 0;
        const bool overflow = __builtin_mul_overflow(count, static_cast<std::uint64_t>(s.n_real) * rw, &real_bytes) ||
                              __builtin_mul_overflow(count, static_cast<std::uint64_t>(s.n_int), &denom);
        if (!overflow && ch.available >= real_bytes) {
          const std::uint64_t int_bytes = ch.available - real_bytes;
          if (int_bytes % denom == 0 && (int_bytes / denom == 4 || int_bytes / denom == 8)) {
            ch.int_width = static_cast<int>(int_bytes / denom);
          }
        }
      }
    }
    out.push_back(std::move(s));
  }
  return out;
}

void pread_exact(int fd, void* dst, std::uint64_t n, std::uint64_t offset, const std::string& path) {
  auto* p = static_cast<std::byte*>(dst);
  constexpr std::uint64_t kMaxOneRead = std::uint64_t{1} << 30;  // Linux caps a read near 2 GiB
  while (n > 0) {
    const std::uint64_t want = std::min(n, kMaxOneRead);
    const ssize_t got = ::pread(fd, p, static_cast<std::size_t>(want), static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      fail(ErrorKind::io, "read error in " + path + " at offset " + std::to_string(offset) + ": " +
                              std::strerror(errno));
    }
    if (got == 0) {
      fail(ErrorKind::io, "unexpected end of file in " + path + " at offset " + std::to_string(offset) + " (" +
                              std::to_string(n) + " more bytes expected)");
    }
    p += got;
    n -= static_cast<std::uint64_t>(got);
    offset += static_cast<std::uint64_t>(got);
  }
}

BufferPtr read_particle_chunk_field(const ParticleSpeciesIndex& s, const std::string& field, std::int64_t chunk) {
  const auto pos = std::find(s.info.fields.begin(), s.info.fields.end(), field);
  if (pos == s.info.fields.end()) fail(ErrorKind::not_found, "particle field not found: " + s.info.name + "/" + field);
  if (chunk < 0 || static_cast<std::uint64_t>(chunk) >= s.chunks.size()) {
    fail(ErrorKind::invalid_argument, "particle chunk index out of range: " + std::to_string(chunk) + " (species " +
                                          s.info.name + " has " + std::to_string(s.chunks.size()) + " chunks)");
  }
  const auto index = static_cast<std::size_t>(pos - s.info.fields.begin());
  const bool is_real = index < static_cast<std::size_t>(s.n_real);
  const ParticleChunk& ch = s.chunks[static_cast<std::size_t>(chunk)];
  const ScalarType scalar = is_real ? (s.info.single_precision ? ScalarType::f32 : ScalarType::f64) : ScalarType::i64;
  const std::uint64_t count = static_cast<std::uint64_t>(ch.count);
  const std::uint64_t extent[1] = {count};
  const ParticleDataFile& f = s.files[ch.file];
  if (count == 0) return Buffer::allocate(Descriptor::c_order(scalar, extent), InitPolicy::zero);

  if (!f.exists) {
    fail(ErrorKind::not_found, "particle data file missing: " + f.path + " (species " + s.info.name + ", level " +
                                   std::to_string(ch.level) + ", grid " + std::to_string(ch.grid) + ")");
  }
  const std::string where = f.path + " at offset " + std::to_string(ch.offset);
  const std::uint64_t rw = s.real_width();
  const std::uint64_t iw = static_cast<std::uint64_t>(ch.int_width);
  const std::uint64_t int_bytes = mul_or_fail(mul_or_fail(count, static_cast<std::uint64_t>(s.n_int), where), iw, where);
  const std::uint64_t real_bytes =
      mul_or_fail(mul_or_fail(count, static_cast<std::uint64_t>(s.n_real), where), rw, where);
  // The record needs its whole int and real blocks inside the file: check
  // before allocating anything sized from the Header's count.
  if (add_or_fail(add_or_fail(ch.offset, int_bytes, where), real_bytes, where) > f.size) {
    fail(ErrorKind::io, "truncated particle data: " + where + " needs " + std::to_string(int_bytes + real_bytes) +
                            " bytes, file has " + std::to_string(f.size));
  }

  const int fd = ::open(f.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(ErrorKind::io, "cannot open particle data file " + f.path + ": " + std::strerror(errno));
  FileCloser closer{fd};

  // Read the strided field as one contiguous span from its first to its last
  // element, then gather.
  const std::uint64_t stride_elems = is_real ? static_cast<std::uint64_t>(s.n_real) : static_cast<std::uint64_t>(s.n_int);
  const std::uint64_t width = is_real ? rw : iw;
  const std::uint64_t comp = is_real ? index : index - static_cast<std::size_t>(s.n_real);
  const std::uint64_t block_start = is_real ? ch.offset + int_bytes : ch.offset;
  const std::uint64_t first = block_start + comp * width;
  const std::uint64_t span = ((count - 1) * stride_elems + 1) * width;
  std::vector<std::byte> raw(static_cast<std::size_t>(span));
  pread_exact(fd, raw.data(), span, first, f.path);

  BufferPtr out = Buffer::allocate(Descriptor::c_order(scalar, extent), InitPolicy::uninitialized);
  std::byte* dst = out->mutable_data();
  const std::byte* src = raw.data();
  const std::uint64_t step = stride_elems * width;
  // AMReX writes particle data in the writer's native order, in practice
  // little-endian; a big-endian host swaps.
  constexpr bool kSwap = std::endian::native == std::endian::big;
  if (is_real) {
    for (std::uint64_t i = 0; i < count; ++i) {
      std::memcpy(dst + i * width, src + i * step, width);
      if constexpr (kSwap) std::reverse(dst + i * width, dst + (i + 1) * width);
    }
  } else {
    auto* d = reinterpret_cast<std::int64_t*>(dst);
    for (std::uint64_t i = 0; i < count; ++i) {
      std::byte tmp[8];
      std::memcpy(tmp, src + i * step, width);
      if constexpr (kSwap) std::reverse(tmp, tmp + width);
      if (width == 4) {
        std::int32_t v = 0;
        std::memcpy(&v, tmp, 4);
        d[i] = v;
      } else {
        std::memcpy(&d[i], tmp, 8);
      }
    }
  }
  return out;
}

}  // namespace kangaroo::amrex
