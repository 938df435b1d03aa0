// PlotfileReader against the shared sample plotfiles (checked with readers
// written independently here) and against synthetic plotfiles with known
// values, including damaged and hostile variants that must fail explicitly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <thread>

#include "../src/data/amrex/plotfile_format.h"
#include "amrex_test_support.h"
#include "kangaroo/data/amrex_plotfile.h"

using namespace kangaroo;
using namespace amrex_test;

namespace {

// ---- Independent readers for the checks ------------------------------------

// Cell_H read with plain stream code, separate from the production parser.
struct IndepCellH {
  int ncomp = 0;
  std::vector<std::vector<int>> boxes;  // lo..., hi..., type...
  std::vector<std::pair<std::string, std::uint64_t>> fabs;
  std::vector<std::vector<double>> mins, maxs;
};

std::vector<double> comma_reals(const std::string& line) {
  std::vector<double> out;
  std::stringstream ss(line);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.find_first_not_of(" \t\r") == std::string::npos) continue;
    out.push_back(std::strtod(item.c_str(), nullptr));
  }
  return out;
}

IndepCellH read_cell_h(const std::string& path) {
  std::istringstream in(read_all(path));
  IndepCellH h;
  std::string line;
  std::getline(in, line);  // version
  std::getline(in, line);  // how
  std::getline(in, line);
  h.ncomp = std::stoi(line);
  std::getline(in, line);  // ngrow
  std::getline(in, line);  // "(n hash"
  const int nbox = std::stoi(line.substr(1));
  for (int b = 0; b < nbox; ++b) {
    std::getline(in, line);
    for (char& ch : line) {
      if (ch == '(' || ch == ')' || ch == ',') ch = ' ';
    }
    std::istringstream ls(line);
    std::vector<int> v;
    int x = 0;
    while (ls >> x) v.push_back(x);
    h.boxes.push_back(v);
  }
  std::getline(in, line);  // ")"
  std::getline(in, line);
  const int nfab = std::stoi(line);
  for (int f = 0; f < nfab; ++f) {
    std::getline(in, line);
    std::istringstream ls(line);
    std::string tag, file;
    std::uint64_t off = 0;
    ls >> tag >> file >> off;
    h.fabs.emplace_back(file, off);
  }
  for (auto* m : {&h.mins, &h.maxs}) {
    do std::getline(in, line);
    while (line.empty());
    const int rows = std::stoi(line);
    for (int r = 0; r < rows; ++r) {
      std::getline(in, line);
      m->push_back(comma_reals(line));
    }
  }
  return h;
}

// Component values of one FAB decoded straight from the file bytes
// (little-endian float64, as every shared file is), Fortran order.
std::vector<double> raw_component(const std::string& file, std::uint64_t offset, int comp, std::uint64_t npts) {
  const std::string bytes = read_all(file);
  const auto nl = bytes.find('\n', offset);
  const std::size_t start = nl + 1 + static_cast<std::size_t>(comp) * npts * 8;
  std::vector<double> v(npts);
  std::memcpy(v.data(), bytes.data() + start, npts * 8);
  return v;
}

// Logical elements of a rank-3 buffer in Fortran order (i fastest).
std::vector<double> elements_fortran(const Buffer& buf) {
  std::vector<double> out;
  const auto& d = buf.descriptor();
  visit_real(buf, 3, [&](auto v) {
    for (std::uint64_t k = 0; k < d.extents[2]; ++k)
      for (std::uint64_t j = 0; j < d.extents[1]; ++j)
        for (std::uint64_t i = 0; i < d.extents[0]; ++i)
          out.push_back(static_cast<double>(v(static_cast<std::int64_t>(i), static_cast<std::int64_t>(j),
                                              static_cast<std::int64_t>(k))));
  });
  return out;
}

// Checks every value of a synthetic plotfile component against synth_value.
void expect_synth_values(const PlotfileReader& r, int level, int fab, int comp) {
  const IndexBox& b = r.levels()[static_cast<std::size_t>(level)].boxes[static_cast<std::size_t>(fab)];
  const BufferPtr buf = r.read_component(level, fab, comp);
  ASSERT_EQ(buf->rank(), 3);
  const auto& d = buf->descriptor();
  ASSERT_EQ(d.extents[0], static_cast<std::uint64_t>(b.extent(0)));
  ASSERT_EQ(d.extents[1], static_cast<std::uint64_t>(b.extent(1)));
  ASSERT_EQ(d.extents[2], static_cast<std::uint64_t>(b.extent(2)));
  int bad = 0;
  visit_real(*buf, 3, [&](auto v) {
    for (int k = 0; k < b.extent(2); ++k)
      for (int j = 0; j < b.extent(1); ++j)
        for (int i = 0; i < b.extent(0); ++i) {
          const double want = synth_value(comp, b.lo[0] + i, b.lo[1] + j, b.lo[2] + k);
          if (static_cast<double>(v(i, j, k)) != want && bad++ < 5) {
            ADD_FAILURE() << "level " << level << " fab " << fab << " comp " << comp << " cell (" << i << "," << j
                          << "," << k << "): " << static_cast<double>(v(i, j, k)) << " != " << want;
          }
        }
  });
  EXPECT_EQ(bad, 0);
}

void expect_all_synth_values(const PlotfileReader& r) {
  for (int l = 0; l < static_cast<int>(r.levels().size()); ++l)
    for (int f = 0; f < static_cast<int>(r.levels()[static_cast<std::size_t>(l)].boxes.size()); ++f)
      for (int c = 0; c < static_cast<int>(r.var_names().size()); ++c) expect_synth_values(r, l, f, c);
}

std::string replace_nth(std::string s, const std::string& from, const std::string& to, int n) {
  std::size_t p = 0;
  for (int i = 0; i <= n; ++i) {
    p = s.find(from, i == 0 ? 0 : p + 1);
    if (p == std::string::npos) {
      ADD_FAILURE() << "occurrence " << n << " of '" << from << "' not found";
      return s;
    }
  }
  s.replace(p, from.size(), to);
  return s;
}

}  // namespace

// ---- Shared plotfiles ----------------------------------------------------------

TEST(PlotfileReader, EverySharedPlotfileOpens) {
  KANGAROO_REQUIRE_SHARED_AMREX();
  for (const auto& name : shared_plotfiles()) {
    SCOPED_TRACE(name);
    std::shared_ptr<const PlotfileReader> r;
    ASSERT_NO_THROW(r = PlotfileReader::open(shared(name)));
    EXPECT_EQ(static_cast<int>(r->levels().size()), r->finest_level() + 1);
    EXPECT_FALSE(r->mapped_mesh());
    const auto meta = nlohmann::json::parse(r->metadata_json());
    EXPECT_EQ(meta["var_names"].size(), r->var_names().size());
    EXPECT_EQ(meta["level_boxes"].size(), r->levels().size());
  }
}

// Header fields compared with the first Header lines, read here with a
// plain token stream (names have no spaces in these files).
TEST(PlotfileReader, HeaderValuesMatchRawText) {
  KANGAROO_REQUIRE_SHARED_AMREX();
  for (const auto& name : shared_plotfiles()) {
    SCOPED_TRACE(name);
    std::istringstream in(read_all(shared(name) + "/Header"));
    std::string version;
    int ncomp = 0, dim = 0, finest = 0;
    double time = 0;
    in >> version >> ncomp;
    std::vector<std::string> names(static_cast<std::size_t>(ncomp));
    for (auto& n : names) in >> n;
    in >> dim >> time >> finest;
    std::array<double, 3> lo{0, 0, 0}, hi{1, 1, 1};
    for (int a = 0; a < dim; ++a) in >> lo[static_cast<std::size_t>(a)];
    for (int a = 0; a < dim; ++a) in >> hi[static_cast<std::size_t>(a)];

    const auto r = PlotfileReader::open(shared(name));
    EXPECT_EQ(r->version(), version);
    EXPECT_EQ(r->var_names(), names);
    EXPECT_EQ(r->spacedim(), dim);
    EXPECT_EQ(r->time(), time);
    EXPECT_EQ(r->finest_level(), finest);
    EXPECT_EQ(r->prob_lo(), lo);
    EXPECT_EQ(r->prob_hi(), hi);
    const auto meta = nlohmann::json::parse(r->metadata_json());
    EXPECT_EQ(meta["time"].get<double>(), time);
    EXPECT_EQ(meta["finest_level"].get<int>(), finest);
    EXPECT_EQ((meta["prob_lo"].get<std::array<double, 3>>()), lo);
    EXPECT_EQ(meta["file_version"].get<std::string>(), version);
    for (const auto& v : names) EXPECT_EQ(meta["variable_info"][v]["type"], "float64");
  }
}

TEST(PlotfileReader, HeaderSpotChecks) {
  KANGAROO_REQUIRE_SHARED_AMREX();
  // iamr_drop2d Header: line 1 "NavierStokes-V1.1", line 16 "50 100" (level
  // steps), line 19 coord_sys "1"; job_info: geometry.is_periodic = 0 0.
  const auto iamr = PlotfileReader::open(shared("iamr_drop2d/plt00050"));
  EXPECT_EQ(iamr->version(), "NavierStokes-V1.1");
  EXPECT_EQ(iamr->step(), 50);
  EXPECT_EQ(iamr->levels()[1].level_step, 100);
  EXPECT_EQ(iamr->coord_sys(), 1);
  ASSERT_TRUE(iamr->is_periodic().has_value());
  EXPECT_EQ(*iamr->is_periodic(), (std::array<bool, 3>{false, false, false}));
  // Line 15: ((0,0) (63,127) (0,0)) ((0,0) (127,255) (0,0)).
  EXPECT_EQ(iamr->levels()[1].domain, (IndexBox{{0, 0, 0}, {127, 255, 0}}));

  // eb_3d: line 8 prob_lo "-0.02 0.0 0.0"; line 10 lists "2 2" for two
  // levels (the extra entry is ignored); Level_1 covers half the domain.
  const auto eb = PlotfileReader::open(shared("eb_3d"));
  EXPECT_EQ(eb->prob_lo()[0], -0.02);
  EXPECT_EQ(eb->step(), 5);
  EXPECT_EQ(eb->levels()[1].boxes.size(), 1u);
  EXPECT_EQ(eb->levels()[1].boxes[0], (IndexBox{{0, 0, 0}, {63, 63, 31}}));
  EXPECT_EQ(eb->levels()[0].cell_size, (std::array<double, 3>{0.00125, 0.00125, 0.00125}));

  // singlevortex3d: empty ratio line (line 9), level step "100 " (line 11).
  const auto sv3 = PlotfileReader::open(shared("amrex_singlevortex3d_gpu/plt00100"));
  EXPECT_EQ(sv3->step(), 100);
  EXPECT_EQ(sv3->levels()[0].boxes.size(), 64u);

  // WarpX: 32 boxes, step 1000 (line 17), warpx_job_info geometry.is_periodic = 0 0 0.
  const auto wx = PlotfileReader::open(shared("warpx_3d_quartz_ring_particles/diag1001000"));
  EXPECT_EQ(wx->step(), 1000);
  EXPECT_EQ(wx->levels()[0].boxes.size(), 32u);
  EXPECT_EQ(wx->coord_sys(), 0);
  ASSERT_TRUE(wx->is_periodic().has_value());

  // ERF: anisotropic domain ((0,0,0) (47,47,3)) with dx 0.5 on every axis.
  const auto erf = PlotfileReader::open(shared("erf_iva_numdiff_3d/IVA_NumDiff"));
  EXPECT_EQ(erf->levels()[0].domain, (IndexBox{{0, 0, 0}, {47, 47, 3}}));
  EXPECT_EQ(erf->prob_lo(), (std::array<double, 3>{-12, -12, -1}));
  EXPECT_FALSE(erf->is_periodic().has_value());
}

// Every component of every FAB of every shared file: the data's minimum and
// maximum equal the Cell_H min/max matrices written by the simulation code.
TEST(PlotfileReader, ComponentExtremaMatchCellHeaderMinMax) {
  KANGAROO_REQUIRE_SHARED_AMREX();
  std::size_t checked = 0;
  for (const auto& name : shared_plotfiles()) {
    SCOPED_TRACE(name);
    const auto r = PlotfileReader::open(shared(name));
    for (int l = 0; l <= r->finest_level(); ++l) {
      const IndepCellH ch = read_cell_h(shared(name) + "/Level_" + std::to_string(l) + "/Cell_H");
      ASSERT_EQ(ch.boxes.size(), r->levels()[static_cast<std::size_t>(l)].boxes.size());
      for (int f = 0; f < static_cast<int>(ch.boxes.size()); ++f) {
        for (int c = 0; c < ch.ncomp; ++c) {
          const auto v = elements_fortran(*r->read_component(l, f, c));
          const auto [mn, mx] = std::minmax_element(v.begin(), v.end());
          const double want_min = ch.mins[static_cast<std::size_t>(f)][static_cast<std::size_t>(c)];
          const double want_max = ch.maxs[static_cast<std::size_t>(f)][static_cast<std::size_t>(c)];
          EXPECT_EQ(*mn, want_min) << "level " << l << " fab " << f << " comp " << c;
          EXPECT_EQ(*mx, want_max) << "level " << l << " fab " << f << " comp " << c;
          ++checked;
        }
      }
    }
  }
  EXPECT_GT(checked, 500u);
}

// Element-by-element comparison with bytes decoded here from the FAB files.
TEST(PlotfileReader, ComponentsMatchRawFabBytes) {
  KANGAROO_REQUIRE_SHARED_AMREX();
  for (const std::string name : {"pelelmex_3d_small", "amrex_singlevortex2d_tracer/plt00000", "iamr_drop2d/plt00050",
                                 "erf_iva_numdiff_3d/IVA_NumDiff"}) {
    SCOPED_TRACE(name);
    const auto r = PlotfileReader::open(shared(name));
    for (int l = 0; l <= r->finest_level(); ++l) {
      const std::string dir = shared(name) + "/Level_" + std::to_string(l);
      const IndepCellH ch = read_cell_h(dir + "/Cell_H");
      for (int f = 0; f < static_cast<int>(ch.fabs.size()); ++f) {
        const auto& b = r->levels()[static_cast<std::size_t>(l)].boxes[static_cast<std::size_t>(f)];
        const auto npts = b.cells();
        for (int c = 0; c < ch.ncomp; c += 2) {
          const auto want = raw_component(dir + "/" + ch.fabs[static_cast<std::size_t>(f)].first,
                                          ch.fabs[static_cast<std::size_t>(f)].second, c, npts);
          const BufferPtr buf = r->read_component(l, f, c);
          EXPECT_EQ(elements_fortran(*buf), want) << "level " << l << " fab " << f << " comp " << c;
          // No ghost cells and native byte order: zero-copy Fortran layout.
          EXPECT_EQ(buf->descriptor(), Descriptor::fortran_order(
                                           ScalarType::f64, std::array<std::uint64_t, 3>{
                                                                static_cast<std::uint64_t>(b.extent(0)),
                                                                static_cast<std::uint64_t>(b.extent(1)),
                                                                static_cast<std::uint64_t>(b.extent(2))}));
          EXPECT_EQ(buf->descriptor(), r->component_descriptor(l, f));
          EXPECT_EQ(r->component_bytes(l, f), npts * 8);
        }
      }
    }
  }
}

// Window reads (slice planes): the cells inside the window equal a full read,
// every other cell is zero, and the descriptor is the full FAB's.
TEST(PlotfileReader, WindowReadsMatchFullReadsInsideTheWindow) {
  KANGAROO_REQUIRE_SHARED_AMREX();
  for (const std::string name : {"pelelmex_3d_small", "erf_iva_numdiff_3d/IVA_NumDiff"}) {
    SCOPED_TRACE(name);
    const auto r = PlotfileReader::open(shared(name));
    std::size_t checked = 0;
    for (int l = 0; l <= r->finest_level(); ++l) {
      const auto& boxes = r->levels()[static_cast<std::size_t>(l)].boxes;
      for (int f = 0; f < static_cast<int>(boxes.size()); f += 3) {
        const IndexBox& b = boxes[static_cast<std::size_t>(f)];
        const BufferPtr full = r->read_component(l, f, 1);
        const auto all = elements_fortran(*full);
        std::vector<IndexBox> windows;
        for (int axis = 0; axis < 3; ++axis) {
          IndexBox w = b;
          w.lo[axis] = w.hi[axis] = b.lo[axis] + static_cast<std::int32_t>(b.extent(axis) / 2);
          windows.push_back(w);
        }
        IndexBox outside = b;
        outside.lo[2] = outside.hi[2] = b.hi[2] + 5;
        windows.push_back(outside);
        for (const IndexBox& w : windows) {
          SCOPED_TRACE(w.to_string());
          const BufferPtr part = r->read_component_window(l, f, 1, w);
          ASSERT_EQ(part->descriptor(), full->descriptor());
          const auto got = elements_fortran(*part);
          ASSERT_EQ(got.size(), all.size());
          std::size_t n = 0;
          for (std::int64_t k = 0; k < b.extent(2); ++k) {
            for (std::int64_t j = 0; j < b.extent(1); ++j) {
              for (std::int64_t i = 0; i < b.extent(0); ++i, ++n) {
                // A window narrower in x still reads whole x rows: what
                // counts is whether (j, k) lies in the window.
                const bool in = w.lo[1] <= b.lo[1] + j && b.lo[1] + j <= w.hi[1] && w.lo[2] <= b.lo[2] + k &&
                                b.lo[2] + k <= w.hi[2];
                ASSERT_EQ(got[n], in ? all[n] : 0.0) << i << "," << j << "," << k;
              }
            }
          }
          ++checked;
        }
      }
    }
    EXPECT_GE(checked, 8u);
  }
}

// 2D files are exposed as 3D with one cell on the missing axis.
TEST(PlotfileReader, TwoDimensionalFilesAreUnitThickIn3D) {
  KANGAROO_REQUIRE_SHARED_AMREX();
  const auto r = PlotfileReader::open(shared("amrex_singlevortex2d_tracer/plt00000"));
  EXPECT_EQ(r->spacedim(), 2);
  ASSERT_EQ(r->levels().size(), 3u);
  // Level_2/Cell_H, first box ((88,152) (103,167) (0,0)).
  EXPECT_EQ(r->levels()[2].boxes[0], (IndexBox{{88, 152, 0}, {103, 167, 0}}));
  EXPECT_EQ(r->levels()[2].domain, (IndexBox{{0, 0, 0}, {255, 255, 0}}));
  EXPECT_EQ(r->levels()[2].cell_size[2], 1.0);
  EXPECT_EQ(r->prob_lo()[2], 0.0);
  EXPECT_EQ(r->prob_hi()[2], 1.0);
  const auto buf = r->read_component(2, 0, 0);
  EXPECT_EQ(buf->descriptor().extents[0], 16u);
  EXPECT_EQ(buf->descriptor().extents[1], 16u);
  EXPECT_EQ(buf->descriptor().extents[2], 1u);
  for (const auto& L : r->levels())
    for (const auto& b : L.boxes) {
      EXPECT_EQ(b.lo[2], 0);
      EXPECT_EQ(b.hi[2], 0);
    }
}

TEST(PlotfileReader, CorruptSharedCopiesAreRejected) {
  KANGAROO_REQUIRE_SHARED_AMREX();
  // Level_1/Cell_H box 1 was damaged to ((9,0,0) (15,7,7)).
  expect_error([] { PlotfileReader::open(shared("corrupt/bad_fab_offsets")); },
               {"grid bounds disagree with Header: level 1 grid 1", "bad_fab_offsets/Level_1/Cell_H"});
  // Level_0/Cell_D_00000 lost its last 76 bytes.
  expect_error([] { PlotfileReader::open(shared("corrupt/missing_fab_data")); },
               {"truncated FAB payload", "missing_fab_data/Level_0/Cell_D_00000", "offset 0"});
}

TEST(PlotfileReader, OpenCachedSharesReaders) {
  KANGAROO_REQUIRE_SHARED_AMREX();
  const auto a = PlotfileReader::open_cached(shared("eb_3d"));
  const auto b = PlotfileReader::open_cached(shared("eb_3d") + "/");
  EXPECT_EQ(a.get(), b.get());
  expect_error([] { PlotfileReader::open_cached("/nonexistent/plotfile"); }, {"/nonexistent/plotfile"});
}

TEST(PlotfileReader, ConcurrentReadsAgree) {
  KANGAROO_REQUIRE_SHARED_AMREX();
  const auto r = PlotfileReader::open(shared("pelelmex_3d_38comp"));
  const int nfab = static_cast<int>(r->levels()[2].boxes.size());
  std::vector<std::vector<double>> serial;
  for (int c = 0; c < 38; ++c) serial.push_back(elements_fortran(*r->read_component(2, c % nfab, c)));
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int c = t; c < 38; c += 4) {
        if (elements_fortran(*r->read_component(2, c % nfab, c)) != serial[static_cast<std::size_t>(c)]) ++mismatches;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

// Walking a level's FABs in order asks the kernel to read ahead; forward,
// backward and repeated walks (stale read-ahead marks) all read the same data.
TEST(PlotfileReader, ReadAheadWalksReadTheSameData) {
  KANGAROO_REQUIRE_SHARED_AMREX();
  for (const std::string name : {"pelelmex_3d_small", "erf_iva_numdiff_3d/IVA_NumDiff"}) {
    SCOPED_TRACE(name);
    const auto once = PlotfileReader::open(shared(name));
    const auto r = PlotfileReader::open(shared(name));
    for (int l = 0; l <= r->finest_level(); ++l) {
      const int nfab = static_cast<int>(r->levels()[static_cast<std::size_t>(l)].boxes.size());
      std::vector<std::vector<double>> want;
      for (int f = nfab - 1; f >= 0; --f) want.insert(want.begin(), elements_fortran(*once->read_component(l, f, 0)));
      for (int pass = 0; pass < 2; ++pass) {
        for (int f = 0; f < nfab; ++f)
          EXPECT_EQ(elements_fortran(*r->read_component(l, f, 0)), want[static_cast<std::size_t>(f)]) << l << " " << f;
      }
      for (int f = nfab - 1; f >= 0; f -= 2)
        EXPECT_EQ(elements_fortran(*r->read_component(l, f, 0)), want[static_cast<std::size_t>(f)]) << l << " " << f;
    }
  }
}

// ---- Synthetic plotfiles: layouts --------------------------------------------

class SynthPlotfile : public ::testing::Test {
 protected:
  std::shared_ptr<const PlotfileReader> open_synth(const SynthFiles& files) {
    return PlotfileReader::open(write_plotfile(tmp_ / "plt", files));
  }
  void expect_open_error(const SynthFiles& files, std::initializer_list<std::string> parts) {
    const std::string dir = write_plotfile(tmp_ / "plt", files);
    expect_error([&] { PlotfileReader::open(dir); }, parts);
  }
  std::string dir() const { return tmp_ / "plt"; }
  TempDir tmp_;
};

TEST_F(SynthPlotfile, DoubleLittleEndianIsZeroCopyFortran) {
  const auto r = open_synth(make_plotfile({}));
  EXPECT_EQ(r->step(), 7);
  EXPECT_EQ(r->levels()[0].real_type, ScalarType::f64);
  const auto buf = r->read_component(0, 1, 1);
  EXPECT_EQ(buf->descriptor().strides[0], 8);
  EXPECT_EQ(buf->descriptor().strides[1], 8 * 4);
  EXPECT_EQ(buf->descriptor().strides[2], 8 * 4 * 4);
  expect_all_synth_values(*r);
}

TEST_F(SynthPlotfile, WindowReadsMakeOnlyTheWindowResident) {
  // A slice reads one z-plane (32 KiB) of a 64^3 block of f64 (2 MiB): the
  // block's storage must not become resident around it (a huge page would
  // make all 2 MiB resident and need clearing).
  SynthOptions o;
  o.level_cells = {{128, 64, 64}};
  const auto r = open_synth(make_plotfile(o));
  IndexBox w = r->levels()[0].boxes[0];
  w.lo[2] = w.hi[2] = 32;
  const BufferPtr part = r->read_component_window(0, 0, 1, w);
  ASSERT_EQ(part->byte_size(), std::uint64_t{2} << 20);
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto at = reinterpret_cast<std::uintptr_t>(part->data());
  const std::uintptr_t lo = at & ~(page - 1);
  const std::uintptr_t hi = (at + part->byte_size() + page - 1) & ~(page - 1);
  std::vector<unsigned char> resident((hi - lo) / page);
  ASSERT_EQ(::mincore(reinterpret_cast<void*>(lo), hi - lo, resident.data()), 0);
  std::size_t pages = 0;
  for (unsigned char v : resident) pages += v & 1u;
  const std::size_t window_pages = (64 * 64 * 8 + page - 1) / page;
  EXPECT_GE(pages, window_pages);
  EXPECT_LE(pages, window_pages + 2) << "of " << resident.size() << " pages";
}

TEST_F(SynthPlotfile, FloatAndBigEndianPayloads) {
  for (int bits : {32, 64}) {
    for (bool big : {false, true}) {
      SCOPED_TRACE(std::to_string(bits) + (big ? " big" : " little"));
      SynthOptions o;
      o.bits = bits;
      o.big_endian = big;
      const auto r = open_synth(make_plotfile(o));
      EXPECT_EQ(r->levels()[0].real_type, bits == 32 ? ScalarType::f32 : ScalarType::f64);
      const auto meta = nlohmann::json::parse(r->metadata_json());
      EXPECT_EQ(meta["variable_info"]["var0"]["type"], bits == 32 ? "float32" : "float64");
      expect_all_synth_values(*r);
    }
  }
}

TEST_F(SynthPlotfile, GhostCellsAreSkippedIntoCOrder) {
  for (bool big : {false, true}) {
    SynthOptions o;
    o.ngrow = 2;
    o.big_endian = big;
    const auto r = open_synth(make_plotfile(o));
    EXPECT_EQ(r->levels()[0].ngrow, 2);
    const auto buf = r->read_component(0, 0, 1);
    EXPECT_TRUE(buf->descriptor().is_c_contiguous());
    EXPECT_EQ(buf->descriptor(), r->component_descriptor(0, 0));
    EXPECT_EQ(r->component_bytes(0, 0), 4u * 4 * 2 * 8);
    expect_all_synth_values(*r);
  }
}

TEST_F(SynthPlotfile, CrlfFabHeadersAndOneAndTwoDimensions) {
  SynthOptions o;
  o.crlf = true;
  expect_all_synth_values(*open_synth(make_plotfile(o)));
  for (int dim : {1, 2}) {
    SCOPED_TRACE(dim);
    SynthOptions d;
    d.dim = dim;
    d.ngrow = dim == 2 ? 1 : 0;
    d.level_cells = {{8, 6, 1}, {16, 12, 1}};
    const auto r = open_synth(make_plotfile(d));
    EXPECT_EQ(r->spacedim(), dim);
    for (const auto& L : r->levels())
      for (const auto& b : L.boxes)
        for (int a = dim; a < 3; ++a) {
          EXPECT_EQ(b.lo[static_cast<std::size_t>(a)], 0);
          EXPECT_EQ(b.hi[static_cast<std::size_t>(a)], 0);
        }
    expect_all_synth_values(*r);
    const RunMeta m = synthesize_runmeta(*r);
    for (int a = dim; a < 3; ++a) {
      EXPECT_EQ(m.steps[0].levels[0].geom.ref_ratio[static_cast<std::size_t>(a)], 1);
      EXPECT_EQ(m.steps[0].levels[0].geom.dx[static_cast<std::size_t>(a)], 1.0);
    }
    EXPECT_EQ(m.steps[0].levels[0].geom.ref_ratio[0], 2);
  }
}

TEST_F(SynthPlotfile, RatioLineVariants) {
  SynthOptions o;
  o.level_cells = {{8, 4, 2}, {16, 8, 4}};
  for (const std::string line : {"", "2", "2 2", "2 2 2"}) {
    o.ratio_line = line;
    EXPECT_NO_THROW(open_synth(make_plotfile(o))) << "'" << line << "'";
  }
  o.ratio_line = "4";
  expect_open_error(make_plotfile(o), {"Header ref_ratio disagrees with prob_domain", "Header"});
}

TEST_F(SynthPlotfile, StaleLevelBlocksAndTerrainMarker) {
  SynthFiles f = make_plotfile({});
  f["Header"] += "1 2 0.5\n7\n0 0.5\n0 1\n0 1\n0.5 1\n0 1\n0 1\nLevel_1/Cell\n";
  EXPECT_FALSE(open_synth(f)->mapped_mesh());
  f["Header"] += "amrexvec_nu_x\n";
  const auto r = open_synth(f);
  EXPECT_TRUE(r->mapped_mesh());
  EXPECT_EQ(nlohmann::json::parse(r->metadata_json())["mapped_mesh"], true);
}

TEST_F(SynthPlotfile, JobInfoReportsPeriodicityAndRz) {
  SynthFiles f = make_plotfile({});
  f["job_info"] = "==== Inputs\ngeometry.is_periodic = 1 0 1\n";
  auto r = open_synth(f);
  ASSERT_TRUE(r->is_periodic().has_value());
  EXPECT_EQ(*r->is_periodic(), (std::array<bool, 3>{true, false, true}));
  EXPECT_EQ(r->coord_sys(), 0);
  f["warpx_job_info"] = "geometry.dims = RZ\ngeometry.is_periodic = 0 1 0\n";
  r = open_synth(f);
  EXPECT_EQ(r->coord_sys(), 1);
  EXPECT_EQ(*r->is_periodic(), (std::array<bool, 3>{false, true, false}));
  EXPECT_EQ(synthesize_runmeta(*r).coord_sys, 1);
  EXPECT_TRUE(synthesize_runmeta(*r).steps[0].levels[0].geom.is_periodic[1]);
}

// ---- Synthetic plotfiles: damaged and hostile --------------------------------

TEST_F(SynthPlotfile, DamagedHeaders) {
  const SynthFiles good = make_plotfile({});
  SynthFiles f = good;
  f["Header"] = good.at("Header").substr(0, good.at("Header").size() / 2);
  expect_open_error(f, {"unexpected end of Header", "/Header:"});
  f = good;
  f.erase("Header");
  expect_open_error(f, {"cannot open plotfile Header", "/Header"});
  f = good;
  f["Header"] = "";
  expect_open_error(f, {"unexpected end of Header"});
  f = good;
  f["Header"] = std::string("\x01\xff\x00garbage\n\n(((", 15);
  expect_open_error(f, {"/Header:"});
  // Huge counts are bounded by the text before anything is sized from them.
  f = good;
  f["Header"] = replace_once(good.at("Header"), "HyperCLaw-V1.1\n2\n", "HyperCLaw-V1.1\n1000000000000\n");
  expect_open_error(f, {"number of variables 1000000000000 is outside", "/Header:2"});
  f = good;
  f["Header"] = replace_once(good.at("Header"), "\n0 2 0.5\n", "\n0 1000000000000000 0.5\n");
  expect_open_error(f, {"lists 1000000000000000 grids"});
  f = good;
  f["Header"] = replace_once(replace_once(good.at("Header"), "\n0 2 0.5\n", "\n0 1 0.5\n"),
                             "0.5 1\n0 1\n0 1\nLevel_0/Cell", "Level_0/Cell");
  expect_open_error(f, {"Cell_H has 2 boxes but the Header", "lists 1 grids for level 0"});
  // Nodal domain box.
  f = good;
  f["Header"] = replace_once(good.at("Header"), "(7,3,1) (0,0,0))", "(7,3,1) (1,0,0))");
  expect_open_error(f, {"non-cell-centered plotfile data is not supported", "/Header:"});
  // A grid bound that does not match its box.
  f = good;
  f["Header"] = replace_once(good.at("Header"), "\n0.5 1\n", "\n0.5 0.875\n");
  expect_open_error(f, {"grid bounds disagree with Header: level 0 grid 1"});
  // A FIFO in place of the Header must fail, not block the open.
  f = good;
  f.erase("Header");
  write_plotfile(dir(), f);
  ASSERT_EQ(::mkfifo((dir() + "/Header").c_str(), 0600), 0);
  expect_error([&] { PlotfileReader::open(dir()); }, {"is not a regular file", "/Header"});
  // A multifab path that leaves the plotfile.
  f = good;
  f["Header"] = replace_once(good.at("Header"), "Level_0/Cell\n", "../Level_0/Cell\n");
  expect_open_error(f, {"is not a plain relative path"});
}

TEST_F(SynthPlotfile, DamagedCellHeaders) {
  const SynthFiles good = make_plotfile({});
  const std::string& ch = good.at("Level_0/Cell_H");
  SynthFiles f = good;
  f["Level_0/Cell_H"] = "2" + ch.substr(1);
  expect_open_error(f, {"unsupported VisMF header version", "Level_0/Cell_H:1"});
  f = good;
  f.erase("Level_0/Cell_H");
  expect_open_error(f, {"cannot open Cell_H", "Level_0/Cell_H"});
  f = good;
  f["Level_0/Cell_H"] = replace_once(ch, "(2 0\n", "(1000000000000000 0\n");
  expect_open_error(f, {"box array claims 1000000000000000 boxes"});
  f = good;
  f["Level_0/Cell_H"] = replace_once(ch, "1\n1\n2\n", "1\n1\n1000000000000\n");
  expect_open_error(f, {"ncomp 1000000000000 is outside", "Cell_H:3"});
  f = good;
  f["Level_0/Cell_H"] = replace_nth(replace_nth(replace_once(ch, "1\n1\n2\n", "1\n1\n3\n"), "\n2,2\n", "\n2,3\n", 0),
                                    "\n2,2\n", "\n2,3\n", 0);
  expect_open_error(f, {"Cell_H ncomp 3 differs from the Header's variable count 2"});
  f = good;
  f["Level_0/Cell_H"] = replace_once(ch, "2\n0\n(2", "2\n1000000000\n(2");
  expect_open_error(f, {"ngrow 1000000000 is outside"});
  f = good;
  f["Level_0/Cell_H"] = replace_once(ch, ")\n2\nFabOnDisk", ")\n3\nFabOnDisk");
  expect_open_error(f, {"Cell_H box count 2 differs from its FabOnDisk count 3"});
  f = good;
  f["Level_0/Cell_H"] = replace_once(ch, "FabOnDisk:", "FabOnDisc:");
  expect_open_error(f, {"malformed FabOnDisk entry 0", "Cell_H:"});
  f = good;
  f["Level_0/Cell_H"] = replace_once(ch, "FabOnDisk: Cell_D_00000 0", "FabOnDisk: ../Header 0");
  expect_open_error(f, {"bad file name"});
  f = good;
  f["Level_0/Cell_H"] = replace_once(ch, "((4,0,0) (7,3,1) (0,0,0))", "((4,0,0) (7,3,1) (0,1,0))");
  expect_open_error(f, {"non-cell-centered plotfile data is not supported", "Cell_H:"});
  f = good;
  f["Level_0/Cell_H"] = replace_once(ch, "FabOnDisk: Cell_D_00000 0", "FabOnDisk: Cell_D_00009 0");
  expect_open_error(f, {"failed to open FAB file: " + dir() + "/Level_0/Cell_D_00009"});
  f = good;
  f["Level_0/Cell_H"] = replace_nth(ch, "FabOnDisk: Cell_D_00000 ", "FabOnDisk: Cell_D_00000 99999999", 1);
  expect_open_error(f, {"FAB file is shorter than its indexed offset: " + dir() + "/Level_0/Cell_D_00000",
                        "offset 99999999"});
  f = good;
  f["Level_0/Cell_H"] = replace_once(ch, "((4,0,0) (7,3,1) (0,0,0))", "((4,0,0) (8,3,1) (0,0,0))");
  expect_open_error(f, {"Cell_H: box 1", "lies outside the level's prob_domain"});
  f = good;
  f["Level_0/Cell_H"] = replace_once(ch, "\n2,2\n", "\n2,5\n");
  expect_open_error(f, {"min/max matrix is 2x5"});
}

TEST_F(SynthPlotfile, DamagedFabHeadersAtOpen) {
  const SynthFiles good = make_plotfile({});
  const std::string& data = good.at("Level_0/Cell_D_00000");
  SynthFiles f = good;
  f["Level_0/Cell_D_00000"] = replace_once(data, "FAB ((8", "FAB:((8");
  expect_open_error(f, {"old 'FAB:' header format is not supported", "Cell_D_00000 at offset 0"});
  f = good;
  f["Level_0/Cell_D_00000"] = replace_once(data, "(64 11 52", "(16 11 52");
  expect_open_error(f, {"unsupported FAB real descriptor width 16", "Cell_D_00000 at offset"});
  f = good;
  f["Level_0/Cell_D_00000"] = replace_once(data, "(8 7 6 5 4 3 2 1)", "(8 6 7 5 4 3 2 1)");
  expect_open_error(f, {"unsupported FAB byte order", "Cell_D_00000 at offset"});
  f = good;
  f["Level_0/Cell_D_00000"] = replace_once(data, "(0,0,0)) 2\n", "(0,0,1)) 2\n");
  expect_open_error(f, {"non-cell-centered plotfile data is not supported", "Cell_D_00000 at offset"});
  f = good;
  f["Level_0/Cell_D_00000"] = replace_once(data, ")) 2\n", ")) 1000000000000\n");
  expect_open_error(f, {"FAB ncomp 1000000000000 is outside", "Cell_D_00000 at offset"});
  f = good;
  f["Level_0/Cell_D_00000"] = replace_once(data, ")) 2\n", ")) 1e12\n");
  expect_open_error(f, {"unexpected text after the FAB header", "Cell_D_00000 at offset"});
  // Most of the payload gone: caught by the open-time size bound.
  f = good;
  f["Level_0/Cell_D_00000"] = data.substr(0, data.size() - 300);
  expect_open_error(f, {"truncated FAB payload", "Cell_D_00000 at offset"});
  // No line end anywhere.
  f = good;
  f["Level_0/Cell_D_00000"] = "FAB " + std::string(5000, '(');
  expect_open_error(f, {"no line end", "Cell_D_00000 at offset 0"});
}

// Damage in a later FAB surfaces when that FAB is read, naming file and
// offset; the plotfile still opens and other FABs stay readable.
TEST_F(SynthPlotfile, DamagedFabHeadersAtRead) {
  const SynthFiles good = make_plotfile({});
  const std::string& data = good.at("Level_0/Cell_D_00000");
  const std::string fab1_offset = std::to_string(data.find("FAB ", 1));
  auto check = [&](const std::string& damaged, std::initializer_list<std::string> parts) {
    SynthFiles f = good;
    f["Level_0/Cell_D_00000"] = damaged;
    const auto r = open_synth(f);
    expect_synth_values(*r, 0, 0, 1);
    expect_error([&] { r->read_component(0, 1, 0); }, parts);
  };
  check(replace_nth(data, "FAB ((8", "FAB:((8", 1), {"old 'FAB:' header", "at offset " + fab1_offset});
  check(replace_nth(data, "((4,0,0) (7,3,1)", "((4,0,0) (6,3,1)", 0),
        {"FAB header box", "differs from the Cell_H box", "Cell_D_00000 at offset " + fab1_offset});
  check(replace_nth(data, ")) 2\n", ")) 3\n", 1), {"FAB ncomp 3 differs from Cell_H ncomp 2", "at offset " + fab1_offset});
  check(replace_nth(data, "(64 11 52 0 1 12 0 1023)),(8, (8 7 6 5 4 3 2 1)", "(64 11 52 0 1 12 0 1023)),(8, (1 2 3 4 5 6 7 8)", 1),
        {"FAB real descriptor", "differs from the level's", "at offset " + fab1_offset});
  check(data.substr(0, data.size() - 8), {"truncated FAB payload", "Cell_D_00000 at offset " + fab1_offset});

  const auto r = open_synth(good);
  expect_error([&] { r->read_component(0, 0, 2); }, {"invalid component range"});
  expect_error([&] { r->read_component(0, 0, -1); }, {"invalid component range"});
  expect_error([&] { r->read_component(0, 2, 0); }, {"FAB index 2 out of range"});
  expect_error([&] { r->read_component(1, 0, 0); }, {"level 1 out of range"});
}

// The parsers on in-memory text (the entry points the fuzz targets use).
TEST(PlotfileParsers, FabHeaderForms) {
  const std::string lf = "FAB ((8, (64 11 52 0 1 12 0 1023)),(8, (8 7 6 5 4 3 2 1)))((0,0,0) (3,3,1) (0,0,0)) 2\nXX";
  const auto h = amrex::parse_fab_header(lf, 3, "f", 0);
  EXPECT_EQ(h.header_bytes, lf.size() - 2);
  EXPECT_EQ(h.ncomp, 2);
  EXPECT_EQ(h.real.bits, 64);
  EXPECT_FALSE(h.real.big_endian);
  const std::string crlf = "FAB ((8, (32 8 23 0 1 9 0 127)),(4, (1 2 3 4)))((0,0) (3,3) (0,0)) 1\r\n";
  const auto g = amrex::parse_fab_header(crlf, 2, "f", 0);
  EXPECT_EQ(g.header_bytes, crlf.size());
  EXPECT_TRUE(g.real.big_endian);
  EXPECT_EQ(g.box, (IndexBox{{0, 0, 0}, {3, 3, 0}}));
  expect_error([] { amrex::parse_fab_header("FAB ((1, (64)),(8, (8 7 6 5 4 3 2 1)))((0) (3) (0)) 1\n", 2, "f", 9); },
               {"f at offset", "expected 2"});
  expect_error([] { amrex::parse_fab_header("FAB ((1, (64)),(4, (4 3 2 1)))((0) (3) (0)) 1\n", 1, "f", 0); },
               {"4 entries for 64-bit"});
}

TEST(PlotfileParsers, CellHeaderNgrowVector) {
  const std::string text =
      "1\n0\n1\n(1,2)\n(1 0\n((0,0) (3,3) (0,0))\n)\n1\nFabOnDisk: Cell_D_00000 0\n\n1,1\n0,\n\n1,1\n1,\n";
  const auto h = amrex::parse_cell_header(text, 2, "c");
  EXPECT_EQ(h.ngrow, (std::array<std::int32_t, 3>{1, 2, 0}));
  EXPECT_EQ(h.boxes.size(), 1u);
  EXPECT_EQ(h.files, std::vector<std::string>{"Cell_D_00000"});
}
