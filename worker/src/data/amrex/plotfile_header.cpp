// Plotfile Header parsing (BACK-AMREX-1, BACK-AMREX-2) and the job_info scan
// used for metadata (BACK-AMREX-10).
//
// The Header is read line by line rather than as a token stream: real files
// put a variable number of entries on the ratio line (one per level, one per
// transition, or none at all), and only the line structure tells where the
// domain boxes start.
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "plotfile_format.h"
#include "text_scan.h"

namespace kangaroo::amrex {

namespace {

class LineReader {
 public:
  LineReader(const std::vector<std::string_view>& lines, const std::string& path) : lines_(lines), path_(path) {}

  std::size_t line_number() const { return next_ + 1; }  // of the next line
  std::size_t remaining() const { return lines_.size() - next_; }
  bool done() const { return next_ >= lines_.size(); }
  std::string_view peek() const { return next_ < lines_.size() ? lines_[next_] : std::string_view(); }

  std::string_view next(std::string_view what) {
    if (next_ >= lines_.size()) {
      fail(ErrorKind::io, path_ + ":" + std::to_string(next_ + 1) + ": unexpected end of Header (expected " +
                              std::string(what) + ")");
    }
    current_ = next_;
    return lines_[next_++];
  }

  [[noreturn]] void error(const std::string& message, ErrorKind kind = ErrorKind::io) const {
    fail(kind, path_ + ":" + std::to_string(current_ + 1) + ": " + message);
  }

  // A line holding exactly one integer.
  std::int64_t int_line(std::string_view what, std::int64_t lo, std::int64_t hi) {
    const auto tokens = split_tokens(next(what));
    std::int64_t v = 0;
    if (tokens.size() != 1 || !parse_int_token(tokens[0], v)) {
      error("expected one integer (" + std::string(what) + "), found " +
            quoted(tokens.empty() ? std::string_view("") : lines_[current_]));
    }
    if (v < lo || v > hi) {
      error(std::string(what) + " " + std::to_string(v) + " is outside [" + std::to_string(lo) + ", " +
            std::to_string(hi) + "]");
    }
    return v;
  }

  double real_line(std::string_view what) {
    const auto tokens = split_tokens(next(what));
    double v = 0;
    if (tokens.size() != 1 || !parse_real_token(tokens[0], v)) {
      error("expected one finite real (" + std::string(what) + "), found " + quoted(lines_[current_]));
    }
    return v;
  }

  // A line of exactly `n` finite reals.
  std::array<double, 3> reals_line(std::string_view what, int n) {
    const auto tokens = split_tokens(next(what));
    std::array<double, 3> out{0.0, 0.0, 0.0};
    if (tokens.size() != static_cast<std::size_t>(n)) {
      error("expected " + std::to_string(n) + " reals (" + std::string(what) + "), found " +
            std::to_string(tokens.size()) + " tokens");
    }
    for (int a = 0; a < n; ++a) {
      if (!parse_real_token(tokens[static_cast<std::size_t>(a)], out[static_cast<std::size_t>(a)])) {
        error("malformed real " + quoted(tokens[static_cast<std::size_t>(a)]) + " (" + std::string(what) + ")");
      }
    }
    return out;
  }

  std::string_view current_line() const { return lines_[current_]; }
  std::size_t current_line_number() const { return current_ + 1; }
  const std::string& path() const { return path_; }

 private:
  const std::vector<std::string_view>& lines_;
  const std::string& path_;
  std::size_t next_ = 0;
  std::size_t current_ = 0;
};

}  // namespace

PlotfileHeaderText parse_plotfile_header(std::string_view text, const std::string& path) {
  const std::vector<std::string_view> lines = split_lines(text);
  LineReader r(lines, path);
  PlotfileHeaderText h;

  // 1. Version: the first non-empty line.
  while (!r.done() && trim(r.peek()).empty()) r.next("version");
  h.version = std::string(trim(r.next("version string")));
  if (h.version.size() > 256 || h.version.find_first_of(" \t") != std::string::npos) {
    r.error("malformed version string " + quoted(h.version));
  }

  // 2-3. Variables, one name per line.
  const std::int64_t ncomp = r.int_line("number of variables", 1, kMaxComponents);
  if (static_cast<std::uint64_t>(ncomp) > r.remaining()) {
    r.error("Header lists " + std::to_string(ncomp) + " variables but has only " + std::to_string(r.remaining()) +
            " more lines");
  }
  h.var_names.reserve(static_cast<std::size_t>(ncomp));
  for (std::int64_t c = 0; c < ncomp; ++c) {
    const std::string_view name = trim(r.next("variable name"));
    if (name.empty()) r.error("variable name " + std::to_string(c) + " is empty");
    h.var_names.emplace_back(name);
  }

  // 4-8. Dimension, time, levels, problem domain.
  h.spacedim = static_cast<int>(r.int_line("spacedim", 1, 3));
  h.time = r.real_line("time");
  h.finest_level = static_cast<int>(r.int_line("finest_level", 0, kMaxLevels - 1));
  const int nlev = h.finest_level + 1;
  const auto lo = r.reals_line("prob_lo", h.spacedim);
  const auto hi = r.reals_line("prob_hi", h.spacedim);
  for (int a = 0; a < h.spacedim; ++a) {
    const auto ua = static_cast<std::size_t>(a);
    if (!(hi[ua] > lo[ua])) r.error("prob_hi must exceed prob_lo on axis " + std::to_string(a));
    h.prob_lo[ua] = lo[ua];
    h.prob_hi[ua] = hi[ua];
  }

  // 9. Refinement ratios. The line may be empty (single-level files, Nyx);
  // a writer that dropped it entirely goes straight to the domain boxes.
  if (trim(r.peek()).rfind('(', 0) != 0) {
    const auto tokens = split_tokens(r.next("refinement ratios"));
    for (const auto& t : tokens) {
      std::int64_t v = 0;
      if (!parse_int_token(t, v) || v < 0 || v > (std::int64_t{1} << 20)) {
        r.error("malformed refinement ratio " + quoted(t));
      }
      h.ref_ratio_line.push_back(v);
    }
  }

  // 10. Domain boxes, all on one line.
  {
    const std::string_view line = r.next("prob_domain boxes");
    TextCursor c(line, path, TextCursor::Where::line, r.current_line_number());
    for (int l = 0; l < nlev; ++l) {
      int dims = h.spacedim;
      h.domains.push_back(c.read_box(dims, "prob_domain box"));
    }
    if (!c.at_end()) c.fail_here("unexpected text after " + std::to_string(nlev) + " prob_domain boxes");
  }
  // Cross-check (BACK-AMREX-1 item 9): entry l must equal the axis-0 ratio of
  // domains l and l+1; extra entries are ignored, missing ones skip the check.
  for (int l = 0; l < h.finest_level && static_cast<std::size_t>(l) < h.ref_ratio_line.size(); ++l) {
    const auto& d0 = h.domains[static_cast<std::size_t>(l)];
    const auto& d1 = h.domains[static_cast<std::size_t>(l) + 1];
    const std::int64_t n0 = d0.extent(0);
    const std::int64_t n1 = d1.extent(0);
    const std::int64_t want = h.ref_ratio_line[static_cast<std::size_t>(l)];
    if (n1 % n0 != 0 || n1 / n0 != want) {
      fail(ErrorKind::io, path + ": Header ref_ratio disagrees with prob_domain (entry " + std::to_string(l) + " is " +
                              std::to_string(want) + ", axis-0 domain sizes " + std::to_string(n0) + " -> " +
                              std::to_string(n1) + ")");
    }
  }

  // 11. Level steps (extra entries of stale levels are ignored).
  {
    const auto tokens = split_tokens(r.next("level steps"));
    if (tokens.size() < static_cast<std::size_t>(nlev)) {
      r.error("expected " + std::to_string(nlev) + " level steps, found " + std::to_string(tokens.size()));
    }
    for (int l = 0; l < nlev; ++l) {
      std::int64_t v = 0;
      if (!parse_int_token(tokens[static_cast<std::size_t>(l)], v) || v < std::numeric_limits<std::int32_t>::min() ||
          v > std::numeric_limits<std::int32_t>::max()) {
        r.error("malformed level step " + quoted(tokens[static_cast<std::size_t>(l)]));
      }
      h.level_steps.push_back(static_cast<std::int32_t>(v));
    }
  }

  // 12. Cell sizes, one line per level.
  for (int l = 0; l < nlev; ++l) {
    const auto dx = r.reals_line("cell size", h.spacedim);
    std::array<double, 3> full{1.0, 1.0, 1.0};
    for (int a = 0; a < h.spacedim; ++a) {
      const auto ua = static_cast<std::size_t>(a);
      if (!(dx[ua] > 0.0)) r.error("cell size on axis " + std::to_string(a) + " must be positive");
      full[ua] = dx[ua];
    }
    h.cell_size.push_back(full);
  }

  // 13-14. Coordinate system and boundary width.
  h.coord_sys = static_cast<int>(r.int_line("coord_sys", 0, 2));
  h.bwidth = static_cast<int>(r.int_line("boundary width", 0, std::numeric_limits<std::int32_t>::max()));

  // 15. Per-level blocks: exactly nlev of them.
  for (int l = 0; l < nlev; ++l) {
    HeaderLevelBlock b;
    const auto tokens = split_tokens(r.next("level block"));
    b.first_line = r.current_line_number();
    std::int64_t level = 0;
    std::int64_t ngrids = 0;
    if (tokens.size() != 3 || !parse_int_token(tokens[0], level) || !parse_int_token(tokens[1], ngrids) ||
        !parse_real_token(tokens[2], b.time)) {
      r.error("expected 'level ngrids time' for level " + std::to_string(l) + ", found " + quoted(r.current_line()));
    }
    if (level != l) r.error("level block names level " + std::to_string(level) + ", expected " + std::to_string(l));
    // Each grid takes spacedim lines; the step and prefix lines follow.
    const std::uint64_t needed = static_cast<std::uint64_t>(h.spacedim) * static_cast<std::uint64_t>(ngrids) + 2;
    if (ngrids < 1 || ngrids > (std::int64_t{1} << 40) || needed > r.remaining()) {
      r.error("level " + std::to_string(l) + " lists " + std::to_string(ngrids) + " grids but the Header has " +
              std::to_string(r.remaining()) + " more lines");
    }
    b.level = l;
    b.ngrids = ngrids;
    const auto step = r.int_line("level step", std::numeric_limits<std::int32_t>::min(),
                                 std::numeric_limits<std::int32_t>::max());
    b.step = static_cast<std::int32_t>(step);
    b.grid_lo.reserve(static_cast<std::size_t>(ngrids));
    b.grid_hi.reserve(static_cast<std::size_t>(ngrids));
    for (std::int64_t g = 0; g < ngrids; ++g) {
      std::array<double, 3> glo{0.0, 0.0, 0.0};
      std::array<double, 3> ghi{0.0, 0.0, 0.0};
      for (int a = 0; a < h.spacedim; ++a) {
        const auto v = r.reals_line("grid bounds 'lo hi'", 2);
        glo[static_cast<std::size_t>(a)] = v[0];
        ghi[static_cast<std::size_t>(a)] = v[1];
      }
      b.grid_lo.push_back(glo);
      b.grid_hi.push_back(ghi);
    }
    const std::string_view prefix = trim(r.next("multifab path"));
    if (prefix.empty() || prefix.find_first_of(" \t") != std::string_view::npos) {
      r.error("malformed multifab path " + quoted(prefix));
    }
    b.mf_prefix = std::string(prefix);
    h.levels.push_back(std::move(b));
  }

  // Anything after the last real level is stale or auxiliary; only the ERF
  // terrain marker matters (COORD-5).
  while (!r.done()) {
    if (r.next("remainder").find("amrexvec_nu_") != std::string_view::npos) h.mapped_mesh = true;
  }
  return h;
}

namespace {

bool parse_bool_token(std::string_view t, bool& out) {
  if (t == "1" || t == "true" || t == "True" || t == "TRUE") {
    out = true;
    return true;
  }
  if (t == "0" || t == "false" || t == "False" || t == "FALSE") {
    out = false;
    return true;
  }
  return false;
}

}  // namespace

void scan_job_info(std::string_view text, JobInfo& info) {
  for (std::string_view line : split_lines(text)) {
    const auto eq = line.find('=');
    if (eq == std::string_view::npos) continue;
    const std::string_view key = trim(line.substr(0, eq));
    const std::string_view value = trim(line.substr(eq + 1));
    // Later definitions win, as with AMReX's ParmParse.
    if (key == "geometry.is_periodic") {
      const auto tokens = split_tokens(value);
      std::array<bool, 3> p{false, false, false};
      bool ok = !tokens.empty() && tokens.size() <= 3;
      for (std::size_t a = 0; ok && a < tokens.size(); ++a) ok = parse_bool_token(tokens[a], p[a]);
      if (ok) info.is_periodic = p;
    } else if (key == "geometry.dims") {
      info.rz = value == "RZ" || value == "rz";
    }
  }
}

std::string read_text_file(const std::string& path, std::uint64_t max_bytes, const char* what) {
  // O_NONBLOCK: a FIFO planted under a plotfile name must not hang the open
  // (it is then rejected as not a regular file); regular reads ignore it.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    fail(errno == ENOENT ? ErrorKind::not_found : ErrorKind::io,
         std::string("cannot open ") + what + " '" + path + "': " + std::strerror(errno));
  }
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail(ErrorKind::io, std::string("cannot stat ") + what + " '" + path + "'");
  if (!S_ISREG(st.st_mode)) fail(ErrorKind::io, std::string(what) + " '" + path + "' is not a regular file");
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size > max_bytes) {
    fail(ErrorKind::io, std::string(what) + " '" + path + "' has " + std::to_string(size) +
                            " bytes, above the limit of " + std::to_string(max_bytes));
  }
  std::string out(static_cast<std::size_t>(size), '\0');
  std::size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(ErrorKind::io, std::string("cannot read ") + what + " '" + path + "': " + std::strerror(errno));
    if (n == 0) break;  // the file shrank while we read it; parse what is there
    got += static_cast<std::size_t>(n);
  }
  out.resize(got);
  return out;
}

}  // namespace kangaroo::amrex
