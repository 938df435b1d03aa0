// VisMF multifab headers (Level_<L>/Cell_H, BACK-AMREX-3) and the per-FAB
// ASCII headers in the data files (BACK-AMREX-4/5).
#include <unordered_map>

#include "plotfile_format.h"
#include "text_scan.h"

namespace kangaroo::amrex {

namespace {

// A box is written as at least "((0) (0))": a count above remaining/8 cannot
// be real and is rejected before anything is sized from it.
constexpr std::size_t kMinBoxChars = 8;

bool valid_data_file_name(std::string_view name) {
  // FAB files live next to Cell_H; a name that walks elsewhere is hostile.
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos &&
         name.find('\\') == std::string_view::npos && name.find('\0') == std::string_view::npos;
}

}  // namespace

CellHeader parse_cell_header(std::string_view text, int spacedim, const std::string& path) {
  TextCursor c(text, path);
  CellHeader h;

  const std::string_view version = c.read_token();
  if (version != "1") {
    c.fail_here("unsupported VisMF header version " + (version.empty() ? std::string("(missing)") : quoted(version)) +
                " (only version 1 is supported)");
  }
  h.how = static_cast<int>(c.read_int("VisMF 'how'", std::numeric_limits<std::int32_t>::min(),
                                      std::numeric_limits<std::int32_t>::max()));
  h.ncomp = static_cast<int>(c.read_int("ncomp", 1, kMaxComponents));

  // ngrow: one integer for every axis, or an integer vector per axis.
  if (c.peek() == '(') {
    std::array<std::int64_t, 3> g{};
    const int n = c.read_intvect(g, "ngrow");
    if (n != spacedim) c.fail_here("ngrow has " + std::to_string(n) + " components, expected " + std::to_string(spacedim));
    for (int a = 0; a < spacedim; ++a) {
      const auto v = g[static_cast<std::size_t>(a)];
      if (v < 0 || v > kMaxGhostCells) c.fail_here("ngrow " + std::to_string(v) + " is out of range");
      h.ngrow[static_cast<std::size_t>(a)] = static_cast<std::int32_t>(v);
    }
  } else {
    const auto g = static_cast<std::int32_t>(c.read_int("ngrow", 0, kMaxGhostCells));
    for (int a = 0; a < spacedim; ++a) h.ngrow[static_cast<std::size_t>(a)] = g;
  }

  // Box array: "(<count> <hash>" boxes ")".
  c.expect('(', "to open the box array");
  const std::int64_t nbox = c.read_int("box count", 0, std::numeric_limits<std::int64_t>::max());
  if (static_cast<std::uint64_t>(nbox) > c.remaining() / kMinBoxChars) {
    c.fail_here("box array claims " + std::to_string(nbox) + " boxes but only " + std::to_string(c.remaining()) +
                " bytes follow");
  }
  const std::string_view hash = c.read_token();
  std::int64_t hash_value = 0;
  if (!parse_int_token(hash, hash_value)) c.fail_here("malformed box array hash " + quoted(hash));
  for (std::int64_t b = 0; b < nbox; ++b) {
    int dims = spacedim;
    h.boxes.push_back(c.read_box(dims, "Cell_H box"));
  }
  c.expect(')', "to close the box array");

  const std::int64_t nfab = c.read_int("FabOnDisk count", 0, std::numeric_limits<std::int64_t>::max());
  if (nfab != nbox) {
    c.fail_here("Cell_H box count " + std::to_string(nbox) + " differs from its FabOnDisk count " +
                std::to_string(nfab));
  }
  std::unordered_map<std::string, std::uint32_t> file_index;
  h.fab_file.reserve(static_cast<std::size_t>(nfab));
  h.fab_offset.reserve(static_cast<std::size_t>(nfab));
  for (std::int64_t f = 0; f < nfab; ++f) {
    const std::string_view tag = c.read_token();
    if (tag != "FabOnDisk:") {
      c.fail_here("malformed FabOnDisk entry " + std::to_string(f) + ": expected 'FabOnDisk:', found " +
                  (tag.empty() ? std::string("end of file") : quoted(tag)));
    }
    const std::string_view name = c.read_token();
    if (!valid_data_file_name(name)) {
      c.fail_here("malformed FabOnDisk entry " + std::to_string(f) + ": bad file name " + quoted(name));
    }
    const std::int64_t offset =
        c.read_int("FabOnDisk offset", 0, std::numeric_limits<std::int64_t>::max());
    auto [it, inserted] = file_index.try_emplace(std::string(name), static_cast<std::uint32_t>(h.files.size()));
    if (inserted) h.files.emplace_back(name);
    h.fab_file.push_back(it->second);
    h.fab_offset.push_back(static_cast<std::uint64_t>(offset));
  }

  // Per-FAB minima and maxima follow. Only their shape is checked: the values
  // are not used for reading, and skipping them keeps opening large files fast.
  if (!c.at_end()) {
    const std::int64_t rows = c.read_int("min/max matrix rows", 0, std::numeric_limits<std::int64_t>::max());
    c.expect(',', "in the min/max matrix shape");
    const std::int64_t cols = c.read_int("min/max matrix columns", 0, std::numeric_limits<std::int64_t>::max());
    if (rows != nfab || cols != h.ncomp) {
      c.fail_here("min/max matrix is " + std::to_string(rows) + "x" + std::to_string(cols) + ", expected " +
                  std::to_string(nfab) + "x" + std::to_string(h.ncomp));
    }
  }
  return h;
}

FabHeader parse_fab_header(std::string_view text, int spacedim, const std::string& path, std::uint64_t offset) {
  const std::string where = path + " at offset " + std::to_string(offset);
  if (text.rfind("FAB:", 0) == 0) {
    fail(ErrorKind::unsupported, where + ": old 'FAB:' header format is not supported");
  }
  if (text.rfind("FAB", 0) != 0) {
    TextCursor c(text, path, TextCursor::Where::offset, offset);
    c.fail_here("expected a FAB header, found " + c.describe_next());
  }
  const std::size_t nl = text.find('\n');
  if (nl == std::string_view::npos) {
    fail(ErrorKind::io, where + ": FAB header has no line end within " + std::to_string(text.size()) + " bytes");
  }
  std::string_view line = text.substr(3, nl - 3);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.empty() || !(line.front() == ' ' || line.front() == '\t' || line.front() == '(')) {
    fail(ErrorKind::io, where + ": malformed FAB header");
  }
  TextCursor c(line, path, TextCursor::Where::offset, offset + 3);

  // Real descriptor ((n, (f1 ... fn)),(m, (o1 ... om))).
  auto read_list = [&c](std::string_view what) {
    c.expect('(', what);
    const auto n = c.read_int(what, 1, 64);
    c.expect(',', what);
    c.expect('(', what);
    std::vector<std::int64_t> v;
    for (std::int64_t i = 0; i < n; ++i) {
      v.push_back(c.read_int(what, std::numeric_limits<std::int64_t>::min() + 1,
                             std::numeric_limits<std::int64_t>::max()));
    }
    c.expect(')', what);
    c.expect(')', what);
    return v;
  };
  c.expect('(', "to open the real descriptor");
  const auto format = read_list("real descriptor format");
  c.expect(',', "in the real descriptor");
  const auto order = read_list("real descriptor byte order");
  c.expect(')', "to close the real descriptor");

  FabHeader h;
  if (format[0] != 32 && format[0] != 64) {
    c.fail_here("unsupported FAB real descriptor width " + std::to_string(format[0]) + " bits (only 32 and 64)",
                ErrorKind::unsupported);
  }
  h.real.bits = static_cast<int>(format[0]);
  const auto m = static_cast<std::int64_t>(order.size());
  if (m != h.real.bits / 8) {
    c.fail_here("unsupported FAB byte order: " + std::to_string(m) + " entries for " + std::to_string(h.real.bits) +
                    "-bit reals",
                ErrorKind::unsupported);
  }
  bool ascending = true;
  bool descending = true;
  for (std::int64_t i = 0; i < m; ++i) {
    ascending = ascending && order[static_cast<std::size_t>(i)] == i + 1;
    descending = descending && order[static_cast<std::size_t>(i)] == m - i;
  }
  if (!ascending && !descending) {
    c.fail_here("unsupported FAB byte order (neither 1..m nor m..1)", ErrorKind::unsupported);
  }
  h.real.big_endian = ascending;

  int dims = spacedim;
  h.box = c.read_box(dims, "FAB box");
  h.ncomp = c.read_int("FAB ncomp", 1, kMaxComponents);
  if (!c.at_end()) c.fail_here("unexpected text after the FAB header: " + c.describe_next());
  h.header_bytes = nl + 1;
  return h;
}

}  // namespace kangaroo::amrex
