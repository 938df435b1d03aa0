// Helpers for the AMReX backend tests: locating the shared sample plotfiles,
// matching error messages, and writing small synthetic plotfiles (with known
// values) that tests then damage in specific ways.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "kangaroo/core/error.h"

namespace amrex_test {

namespace fs = std::filesystem;

inline std::string shared_amrex_dir() { return std::string(KANGAROO_SHARED_DATA) + "/amrex"; }

// Tests that need the sample data skip (with the reason) when it is absent.
#define KANGAROO_REQUIRE_SHARED_AMREX()                                                                  \
  do {                                                                                                   \
    if (!std::filesystem::is_directory(amrex_test::shared_amrex_dir())) {                                \
      GTEST_SKIP() << "shared AMReX sample data not found at " << amrex_test::shared_amrex_dir()         \
                   << " (expected beside the project as ../shared/data)";                                \
    }                                                                                                    \
  } while (0)

// Every valid shared plotfile (the corrupt/ copies are tested separately).
inline const std::vector<std::string>& shared_plotfiles() {
  static const std::vector<std::string> names = {
      "pelelmex_3d_38comp",
      "pelelmex_3d_small",
      "eb_3d",
      "amrex_singlevortex2d_tracer/plt00000",
      "amrex_singlevortex3d_gpu/plt00100",
      "warpx_3d_quartz_ring_particles/diag1001000",
      "erf_iva_numdiff_3d/IVA_NumDiff",
      "iamr_drop2d/plt00050",
  };
  return names;
}

inline std::string shared(const std::string& name) { return shared_amrex_dir() + "/" + name; }

inline std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_all(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Runs fn and expects a kangaroo::Error whose message holds every part.
template <class Fn>
void expect_error(Fn&& fn, std::initializer_list<std::string> parts) {
  try {
    fn();
  } catch (const kangaroo::Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "missing '" << p << "' in: " << msg;
    return;
  }
  std::string all;
  for (const auto& p : parts) all += " '" + p + "'";
  ADD_FAILURE() << "expected a kangaroo::Error containing" << all;
}

class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            ("kangaroo_amrex_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string str() const { return path_.string(); }
  std::string operator/(const std::string& rel) const { return (path_ / rel).string(); }

 private:
  fs::path path_;
};

// ---- Synthetic plotfiles --------------------------------------------------

// Value of component c at absolute cell (i, j, k): distinct for every cell
// and exactly representable in float32.
inline double synth_value(int c, int i, int j, int k) { return c * 1000.0 + i * 100.0 + j * 10.0 + k + 0.25; }

struct SynthBox {
  std::array<int, 3> lo{0, 0, 0};
  std::array<int, 3> hi{0, 0, 0};
};

struct SynthOptions {
  int dim = 3;
  int ncomp = 2;
  int bits = 64;
  bool big_endian = false;
  int ngrow = 0;
  bool crlf = false;
  int step = 7;
  // Domain cells per level (missing axes ignored); each level is split in x
  // into two boxes.
  std::vector<std::array<int, 3>> level_cells = {{8, 4, 2}};
  // Ratio line; "auto" writes the axis-0 ratios.
  std::string ratio_line = "auto";
};

// Files of a plotfile, keyed by path relative to the plotfile directory.
using SynthFiles = std::map<std::string, std::string>;

inline std::string ivec(const std::array<int, 3>& v, int dim) {
  std::string s = "(";
  for (int a = 0; a < dim; ++a) s += (a ? "," : "") + std::to_string(v[static_cast<std::size_t>(a)]);
  return s + ")";
}

inline std::string box_text(const SynthBox& b, int dim) {
  return "(" + ivec(b.lo, dim) + " " + ivec(b.hi, dim) + " " + ivec({0, 0, 0}, dim) + ")";
}

inline std::string real_text(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}

inline std::string real_descriptor(int bits, bool big_endian) {
  if (bits == 64) {
    return big_endian ? "((8, (64 11 52 0 1 12 0 1023)),(8, (1 2 3 4 5 6 7 8)))"
                      : "((8, (64 11 52 0 1 12 0 1023)),(8, (8 7 6 5 4 3 2 1)))";
  }
  return big_endian ? "((8, (32 8 23 0 1 9 0 127)),(4, (1 2 3 4)))" : "((8, (32 8 23 0 1 9 0 127)),(4, (4 3 2 1)))";
}

inline void append_value(std::string& out, double v, int bits, bool big_endian) {
  unsigned char bytes[8];
  std::size_t n = 0;
  if (bits == 64) {
    std::memcpy(bytes, &v, 8);
    n = 8;
  } else {
    const float f = static_cast<float>(v);
    std::memcpy(bytes, &f, 4);
    n = 4;
  }
  const bool host_big = std::endian::native == std::endian::big;
  if (host_big != big_endian) {
    for (std::size_t a = 0, b = n - 1; a < b; ++a, --b) std::swap(bytes[a], bytes[b]);
  }
  out.append(reinterpret_cast<const char*>(bytes), n);
}

inline std::vector<SynthBox> synth_boxes(const SynthOptions& o, int level) {
  const auto& n = o.level_cells[static_cast<std::size_t>(level)];
  std::array<int, 3> hi{0, 0, 0};
  for (int a = 0; a < o.dim; ++a) hi[static_cast<std::size_t>(a)] = n[static_cast<std::size_t>(a)] - 1;
  SynthBox left{{0, 0, 0}, hi};
  SynthBox right{{0, 0, 0}, hi};
  left.hi[0] = n[0] / 2 - 1;
  right.lo[0] = n[0] / 2;
  return {left, right};
}

inline SynthFiles make_plotfile(const SynthOptions& o) {
  SynthFiles files;
  const int nlev = static_cast<int>(o.level_cells.size());
  std::ostringstream h;
  h << "HyperCLaw-V1.1\n" << o.ncomp << "\n";
  for (int c = 0; c < o.ncomp; ++c) h << "var" << c << "\n";
  h << o.dim << "\n0.5\n" << nlev - 1 << "\n";
  for (int a = 0; a < o.dim; ++a) h << "0 ";
  h << "\n";
  for (int a = 0; a < o.dim; ++a) h << "1 ";
  h << "\n";
  if (o.ratio_line == "auto") {
    for (int l = 0; l + 1 < nlev; ++l) {
      h << o.level_cells[static_cast<std::size_t>(l) + 1][0] / o.level_cells[static_cast<std::size_t>(l)][0] << " ";
    }
    h << "\n";
  } else {
    h << o.ratio_line << "\n";
  }
  for (int l = 0; l < nlev; ++l) {
    const auto& n = o.level_cells[static_cast<std::size_t>(l)];
    SynthBox d{{0, 0, 0}, {n[0] - 1, n[1] - 1, n[2] - 1}};
    h << box_text(d, o.dim) << " ";
  }
  h << "\n";
  for (int l = 0; l < nlev; ++l) h << o.step * (l + 1) << " ";
  h << "\n";
  for (int l = 0; l < nlev; ++l) {
    for (int a = 0; a < o.dim; ++a) h << real_text(1.0 / o.level_cells[static_cast<std::size_t>(l)][static_cast<std::size_t>(a)]) << " ";
    h << "\n";
  }
  h << "0\n0\n";
  for (int l = 0; l < nlev; ++l) {
    const auto boxes = synth_boxes(o, l);
    const auto& n = o.level_cells[static_cast<std::size_t>(l)];
    h << l << " " << boxes.size() << " 0.5\n" << o.step * (l + 1) << "\n";
    for (const auto& b : boxes) {
      for (int a = 0; a < o.dim; ++a) {
        const auto ua = static_cast<std::size_t>(a);
        const double dx = 1.0 / n[ua];
        h << real_text(b.lo[ua] * dx) << " " << real_text((b.hi[ua] + 1) * dx) << "\n";
      }
    }
    h << "Level_" << l << "/Cell\n";

    // FAB data: every box with its ghost cells, all components.
    std::string data;
    std::ostringstream cell;
    std::vector<std::size_t> offsets;
    for (const auto& b : boxes) {
      SynthBox g = b;
      for (int a = 0; a < o.dim; ++a) {
        g.lo[static_cast<std::size_t>(a)] -= o.ngrow;
        g.hi[static_cast<std::size_t>(a)] += o.ngrow;
      }
      offsets.push_back(data.size());
      data += "FAB " + real_descriptor(o.bits, o.big_endian) + box_text(g, o.dim) + " " + std::to_string(o.ncomp) +
              (o.crlf ? "\r\n" : "\n");
      for (int c = 0; c < o.ncomp; ++c) {
        for (int k = g.lo[2]; k <= g.hi[2]; ++k) {
          for (int j = g.lo[1]; j <= g.hi[1]; ++j) {
            for (int i = g.lo[0]; i <= g.hi[0]; ++i) append_value(data, synth_value(c, i, j, k), o.bits, o.big_endian);
          }
        }
      }
    }
    cell << "1\n1\n" << o.ncomp << "\n" << o.ngrow << "\n(" << boxes.size() << " 0\n";
    for (const auto& b : boxes) cell << box_text(b, o.dim) << "\n";
    cell << ")\n" << boxes.size() << "\n";
    for (auto off : offsets) cell << "FabOnDisk: Cell_D_00000 " << off << "\n";
    for (int m = 0; m < 2; ++m) {
      cell << "\n" << boxes.size() << "," << o.ncomp << "\n";
      for (const auto& b : boxes) {
        for (int c = 0; c < o.ncomp; ++c) {
          cell << real_text(m == 0 ? synth_value(c, b.lo[0], b.lo[1], b.lo[2]) : synth_value(c, b.hi[0], b.hi[1], b.hi[2]))
               << ",";
        }
        cell << "\n";
      }
    }
    files["Level_" + std::to_string(l) + "/Cell_H"] = cell.str();
    files["Level_" + std::to_string(l) + "/Cell_D_00000"] = data;
  }
  files["Header"] = h.str();
  return files;
}

inline std::string write_plotfile(const std::string& dir, const SynthFiles& files) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const auto& [rel, bytes] : files) write_all(dir + "/" + rel, bytes);
  return dir;
}

// Replaces the first occurrence of `from` (which must exist).
inline std::string replace_once(std::string s, const std::string& from, const std::string& to) {
  const auto p = s.find(from);
  EXPECT_NE(p, std::string::npos) << "text to replace not found: " << from;
  if (p != std::string::npos) s.replace(p, from.size(), to);
  return s;
}

}  // namespace amrex_test
