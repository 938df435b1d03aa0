// The `amrex` dataset backend: URI dispatch, field registration and chunk
// mapping, particles, and RunMeta synthesis (COORD-4) on the shared files.
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

#include "amrex_test_support.h"
#include "kangaroo/data/amrex_plotfile.h"
#include "kangaroo/data/uri.h"

using namespace kangaroo;
using namespace amrex_test;

namespace {

DatasetPtr open_shared(const std::string& name) { return open_dataset_uri("amrex://" + shared(name)); }

std::vector<double> as_doubles(const Buffer& b) {
  std::vector<double> out;
  const auto n = b.descriptor().element_count();
  for (std::uint64_t p = 0; p < n; ++p) out.push_back(b.element_as_double(p));
  return out;
}

std::vector<std::int64_t> as_ints(const Buffer& b) {
  const auto n = b.descriptor().extents[0];
  const auto* p = b.elements<std::int64_t>();
  return {p, p + n};
}

// Records of one particle grid decoded here from the DATA file: `nint`
// 4-byte ints, then `nreal` doubles per record, both record-major.
struct RawParticles {
  std::vector<std::int32_t> ints;
  std::vector<double> reals;
};

RawParticles raw_particles(const std::string& file, std::uint64_t offset, std::size_t count, int nint, int nreal) {
  const std::string bytes = read_all(file);
  RawParticles r;
  r.ints.resize(count * static_cast<std::size_t>(nint));
  r.reals.resize(count * static_cast<std::size_t>(nreal));
  std::memcpy(r.ints.data(), bytes.data() + offset, r.ints.size() * 4);
  std::memcpy(r.reals.data(), bytes.data() + offset + r.ints.size() * 4, r.reals.size() * 8);
  return r;
}

}  // namespace

TEST(AmrexDataset, UriDispatch) {
  KANGAROO_REQUIRE_SHARED_AMREX();
  EXPECT_EQ(open_dataset_uri("amrex://" + shared("eb_3d"))->kind(), "amrex");
  const auto f = open_dataset_uri("file://" + shared("eb_3d"));
  EXPECT_EQ(f->kind(), "amrex");
  EXPECT_EQ(f->uri(), "file://" + shared("eb_3d"));
  EXPECT_EQ(open_dataset_uri("memory://x")->kind(), "memory");
  expect_error([] { open_dataset_uri("file:///data/out.phdf"); }, {"Parthenon backend not enabled in this build"});
  expect_error([] { open_dataset_uri("file:///data/out.h5"); }, {"Parthenon backend not enabled in this build"});
  expect_error([] { open_dataset_uri("parthenon:///data/out.phdf"); }, {"Parthenon backend not enabled in this build"});
  expect_error([] { open_dataset_uri("openpmd:///data/series_%T.h5"); }, {"openPMD backend not enabled in this build"});
  expect_error([] { open_dataset_uri("s3://bucket/plt"); }, {"unsupported dataset URI scheme: s3://bucket/plt"});
  expect_error([] { open_dataset_uri("amrex:///no/such/plotfile"); }, {"plotfile not found", "/no/such/plotfile"});
  expect_error([] { open_dataset_uri("amrex://" + shared("corrupt/missing_fab_data")); },
               {"truncated FAB payload", "Cell_D_00000"});
}

TEST(AmrexDataset, FieldRegistrationAndChunks) {
  KANGAROO_REQUIRE_SHARED_AMREX();
  const auto ds = open_shared("pelelmex_3d_small");
  const auto reader = amrex_dataset_reader(*ds);
  ASSERT_TRUE(reader);
  ds->register_field(1000, "Y(H2O)");   // component 2
  ds->register_field_component(1001, 3);  // Y(O2)
  expect_error([&] { ds->register_field(1002, "nope"); }, {"plotfile field not found: nope"});
  expect_error([&] { ds->register_field_component(1003, 4); }, {"invalid component range"});
  expect_error([&] { ds->register_field_component(1003, -1); }, {"invalid component range"});

  const ChunkId id{0, 2, 1000, 0, 3};
  ASSERT_TRUE(ds->has_chunk(id));
  const auto chunk = ds->get_chunk(id);
  ASSERT_TRUE(chunk);
  EXPECT_EQ(as_doubles(*chunk), as_doubles(*reader->read_component(2, 3, 2)));
  EXPECT_EQ(ds->describe_chunk(id), chunk->descriptor());
  EXPECT_EQ(ds->estimate_chunk_bytes(id), chunk->byte_size());
  EXPECT_EQ(as_doubles(*ds->get_chunk({0, 1, 1001, 5, 2})), as_doubles(*reader->read_component(1, 2, 3)));

  // The Header's step (20) addresses the same data as 0.
  EXPECT_EQ(reader->step(), 20);
  EXPECT_EQ(as_doubles(*ds->get_chunk({20, 2, 1000, 0, 3})), as_doubles(*chunk));

  // Unmapped field, level or block: no data, never fabricated (BACK-3).
  EXPECT_FALSE(ds->get_chunk({0, 0, 7, 0, 0}));
  EXPECT_FALSE(ds->has_chunk({0, 0, 7, 0, 0}));
  EXPECT_FALSE(ds->get_chunk({0, 3, 1000, 0, 0}));
  EXPECT_FALSE(ds->get_chunk({0, -1, 1000, 0, 0}));
  EXPECT_FALSE(ds->get_chunk({0, 0, 1000, 0, 1}));
  EXPECT_FALSE(ds->describe_chunk({0, 0, 1000, 0, 1}));
  EXPECT_EQ(ds->estimate_chunk_bytes({0, 0, 1000, 0, 1}), 0u);

  // Any other step fails explicitly (BACK-AMREX-7).
  // Datasets share one reader per canonical path, which their messages name.
  const std::string single = "plotfile has a single step: " + fs::canonical(shared("pelelmex_3d_small")).string();
  expect_error([&] { ds->get_chunk({1, 0, 1000, 0, 0}); }, {single});
  expect_error([&] { ds->has_chunk({3, 0, 1000, 0, 0}); }, {single});
  expect_error([&] { ds->metadata_json(21); }, {single});
  EXPECT_NO_THROW(ds->metadata_json(20));
  EXPECT_EQ(nlohmann::json::parse(ds->metadata_json(0))["var_names"].size(), 4u);

  // Read-only backend (BACK-5).
  expect_error([&] { ds->set_chunk(id, chunk); }, {"Cannot set_chunk on read-only backend"});
}

TEST(AmrexDataset, WarpXParticles) {
  KANGAROO_REQUIRE_SHARED_AMREX();
  const std::string name = "warpx_3d_quartz_ring_particles/diag1001000";
  const auto ds = open_shared(name);
  const auto reader = amrex_dataset_reader(*ds);
  EXPECT_EQ(ds->particle_types(), (std::vector<std::string>{"electrons", "ions"}));
  const std::vector<std::string> fields = {"x", "y", "z", "weight", "momentum_x", "momentum_y", "momentum_z", "id",
                                           "cpu"};
  // Header totals: electrons 54, ions 1421 (line 10 of each species Header).
  for (const auto& [species, total] : std::vector<std::pair<std::string, std::int64_t>>{{"electrons", 54},
                                                                                        {"ions", 1421}}) {
    SCOPED_TRACE(species);
    EXPECT_EQ(ds->particle_fields(species), fields);
    EXPECT_EQ(ds->particle_dim(species), 3);
    const std::int64_t chunks = ds->particle_chunk_count(species);
    // The metadata document carries the same facts for remote clients.
    const auto info = nlohmann::json::parse(ds->metadata_json(0)).at("particle_info").at(species);
    EXPECT_EQ(info.at("fields").get<std::vector<std::string>>(), fields);
    EXPECT_EQ(info.at("chunk_count").get<std::int64_t>(), chunks);
    EXPECT_EQ(info.at("count").get<std::int64_t>(), total);
    EXPECT_EQ(info.at("dim").get<int>(), 3);
    EXPECT_EQ(chunks, 32);
    std::int64_t sum = 0;
    std::set<std::pair<std::int64_t, std::int64_t>> ids;  // AMReX identity: (id, cpu)
    const auto lo = reader->prob_lo();
    const auto hi = reader->prob_hi();
    for (std::int64_t c = 0; c < chunks; ++c) {
      const auto n = *ds->particle_record_count(species, c);
      sum += static_cast<std::int64_t>(n);
      for (int a = 0; a < 3; ++a) {
        const auto pos = ds->read_particle_field(species, fields[static_cast<std::size_t>(a)], c);
        ASSERT_EQ(pos->scalar(), ScalarType::f64);
        ASSERT_EQ(pos->descriptor().extents[0], n);
        for (double v : as_doubles(*pos)) {
          EXPECT_GE(v, lo[static_cast<std::size_t>(a)]);
          EXPECT_LE(v, hi[static_cast<std::size_t>(a)]);
        }
      }
      const auto id = ds->read_particle_field(species, "id", c);
      EXPECT_EQ(id->scalar(), ScalarType::i64);
      const auto idv = as_ints(*id);
      const auto cpuv = as_ints(*ds->read_particle_field(species, "cpu", c));
      for (std::size_t p = 0; p < idv.size(); ++p) ids.emplace(idv[p], cpuv[p]);
    }
    EXPECT_EQ(sum, total);
    EXPECT_EQ(static_cast<std::int64_t>(ids.size()), total);  // identities are unique
    EXPECT_NO_THROW(ds->require_particle_grids_match_mesh(species, 0));
  }
  // electrons/Header: grid 1 of level 0 is "0 4 64" (file 0, 4 particles at
  // byte 64); records are 2 ints + 7 doubles.
  const auto raw = raw_particles(shared(name) + "/electrons/Level_0/DATA_00000", 64, 4, 2, 7);
  const auto w = as_doubles(*ds->read_particle_field("electrons", "weight", 1));
  const auto cpu = as_ints(*ds->read_particle_field("electrons", "cpu", 1));
  ASSERT_EQ(w.size(), 4u);
  for (std::size_t p = 0; p < 4; ++p) {
    EXPECT_EQ(w[p], raw.reals[p * 7 + 3]);
    EXPECT_EQ(cpu[p], raw.ints[p * 2 + 1]);
  }
}

TEST(AmrexDataset, TracerParticlesOnThreeLevels) {
  KANGAROO_REQUIRE_SHARED_AMREX();
  const std::string name = "amrex_singlevortex2d_tracer/plt00000";
  const auto ds = open_shared(name);
  EXPECT_EQ(ds->particle_types(), std::vector<std::string>{"Tracer"});
  EXPECT_EQ(ds->particle_fields("Tracer"), (std::vector<std::string>{"x", "y", "real_comp0", "real_comp1", "id", "cpu"}));
  EXPECT_EQ(ds->particle_dim("Tracer"), 2);
  // Tracer/Header: grids per level 16 16 25, 4096 particles, next id 4097.
  EXPECT_EQ(ds->particle_chunk_count("Tracer"), 57);
  EXPECT_EQ(ds->particle_grid_chunk("Tracer", 0, 5), 5);
  EXPECT_EQ(ds->particle_grid_chunk("Tracer", 1, 0), 16);
  EXPECT_EQ(ds->particle_grid_chunk("Tracer", 2, 24), 56);
  expect_error([&] { ds->particle_grid_chunk("Tracer", 2, 25); }, {"particle grid out of range"});
  expect_error([&] { ds->particle_grid_chunk("Tracer", 3, 0); }, {"particle grid out of range"});
  std::int64_t total = 0;
  std::vector<std::int64_t> ids;
  for (std::int64_t c = 0; c < 57; ++c) {
    const auto x = ds->read_particle_field("Tracer", "x", c);
    const auto y = ds->read_particle_field("Tracer", "y", c);
    total += static_cast<std::int64_t>(x->descriptor().extents[0]);
    for (double v : as_doubles(*x)) {
      EXPECT_GE(v, 0.0);
      EXPECT_LE(v, 1.0);
    }
    for (double v : as_doubles(*y)) {
      EXPECT_GE(v, 0.0);
      EXPECT_LE(v, 1.0);
    }
    for (auto v : as_ints(*ds->read_particle_field("Tracer", "id", c))) ids.push_back(v);
  }
  EXPECT_EQ(total, 4096);
  std::sort(ids.begin(), ids.end());
  std::vector<std::int64_t> expect(4096);
  std::iota(expect.begin(), expect.end(), 1);
  EXPECT_EQ(ids, expect);
  // Empty grids ("0 0 102400" on level 0) read as empty arrays.
  EXPECT_EQ(*ds->particle_record_count("Tracer", 10), 0u);
  EXPECT_EQ(ds->read_particle_field("Tracer", "x", 10)->descriptor().extents[0], 0u);
  // Level 0 grid 0: "0 256 0" -> 256 records of 2 ints (4 bytes) + 4 doubles.
  const auto raw = raw_particles(shared(name) + "/Tracer/Level_0/DATA_00000", 0, 256, 2, 4);
  const auto rc1 = as_doubles(*ds->read_particle_field("Tracer", "real_comp1", 0));
  const auto id0 = as_ints(*ds->read_particle_field("Tracer", "id", 0));
  for (std::size_t p = 0; p < 256; ++p) {
    EXPECT_EQ(rc1[p], raw.reals[p * 4 + 3]);
    EXPECT_EQ(id0[p], raw.ints[p * 2]);
  }
  for (int l = 0; l < 3; ++l) EXPECT_NO_THROW(ds->require_particle_grids_match_mesh("Tracer", l));
  expect_error([&] { ds->require_particle_grids_match_mesh("Tracer", 3); },
               {"particle grids do not match mesh blocks on level 3"});

  expect_error([&] { ds->particle_chunk_count("nope"); }, {"particle type not found: nope"});
  expect_error([&] { ds->read_particle_field("nope", "x", 0); }, {"particle type not found: nope"});
  expect_error([&] { ds->read_particle_field("Tracer", "z", 0); }, {"particle field not found: Tracer/z"});
  expect_error([&] { ds->read_particle_field("Tracer", "x", 57); }, {"particle chunk index out of range"});
  expect_error([&] { ds->read_particle_field("Tracer", "x", -1); }, {"particle chunk index out of range"});
  EXPECT_FALSE(ds->particle_record_count("Tracer", 57).has_value());
}

TEST(AmrexDataset, MeshWithoutParticlesHasNone) {
  KANGAROO_REQUIRE_SHARED_AMREX();
  const auto ds = open_shared("eb_3d");
  EXPECT_TRUE(ds->particle_types().empty());
  expect_error([&] { ds->particle_chunk_count("electrons"); }, {"particle type not found: electrons"});
}

// Damaged particle data in a synthetic plotfile.
TEST(AmrexDataset, ParticleDamage) {
  TempDir tmp;
  SynthFiles f = make_plotfile({});
  // Two grids on level 0 (matching the mesh boxes), checkpoint ids, 1 extra
  // real, 8-byte ints (inferred from the spacing of the offsets).
  f["P/Header"] = "Version_Two_Dot_Zero_double\n3\n1\nmass\n0\n1\n3\n4\n0\n2\n0 2 0\n0 1 96\n";
  std::string data;
  auto put_i64 = [&data](std::int64_t v) { data.append(reinterpret_cast<const char*>(&v), 8); };
  auto put_f64 = [&data](double v) { data.append(reinterpret_cast<const char*>(&v), 8); };
  put_i64(1), put_i64(0), put_i64(2), put_i64(0);
  for (double v : {0.1, 0.2, 0.3, 5.0, 0.6, 0.7, 0.8, 6.0}) put_f64(v);
  put_i64(3), put_i64(0);
  for (double v : {0.9, 0.1, 0.2, 7.0}) put_f64(v);
  f["P/Level_0/DATA_00000"] = data;
  f["P/Level_0/Particle_H"] = "(2 0\n((0,0,0) (3,3,1) (0,0,0))\n((4,0,0) (7,3,1) (0,0,0))\n)\n";
  f["Q/Header"] = "not a particle header\n";
  const std::string dir = write_plotfile(tmp / "plt", f);
  auto ds = open_dataset_uri("amrex://" + dir);
  EXPECT_EQ(ds->particle_types(), std::vector<std::string>{"P"});
  EXPECT_EQ(as_ints(*ds->read_particle_field("P", "id", 0)), (std::vector<std::int64_t>{1, 2}));
  EXPECT_EQ(as_doubles(*ds->read_particle_field("P", "mass", 0)), (std::vector<double>{5.0, 6.0}));
  EXPECT_EQ(as_doubles(*ds->read_particle_field("P", "z", 1)), (std::vector<double>{0.2}));
  EXPECT_NO_THROW(ds->require_particle_grids_match_mesh("P", 0));

  // Particle_H that differs from the mesh boxes.
  f["P/Level_0/Particle_H"] = "(2 0\n((0,0,0) (3,3,1) (0,0,0))\n((4,0,0) (7,3,0) (0,0,0))\n)\n";
  ds = open_dataset_uri("amrex://" + write_plotfile(tmp / "plt2", f));
  expect_error([&] { ds->require_particle_grids_match_mesh("P", 0); },
               {"particle grids do not match mesh blocks on level 0"});
  // Missing Particle_H although the level has particles.
  f.erase("P/Level_0/Particle_H");
  ds = open_dataset_uri("amrex://" + write_plotfile(tmp / "plt3", f));
  expect_error([&] { ds->require_particle_grids_match_mesh("P", 0); },
               {"particle grids do not match mesh blocks on level 0"});
  // Missing and truncated data files.
  f.erase("P/Level_0/DATA_00000");
  ds = open_dataset_uri("amrex://" + write_plotfile(tmp / "plt4", f));
  expect_error([&] { ds->read_particle_field("P", "x", 0); }, {"particle data file missing", "DATA_00000"});
  f["P/Level_0/DATA_0000"] = data.substr(0, 100);  // 4-digit fallback name
  ds = open_dataset_uri("amrex://" + write_plotfile(tmp / "plt5", f));
  expect_error([&] { ds->read_particle_field("P", "x", 1); }, {"truncated particle data", "DATA_0000 at offset 96"});
  // Hostile counts: a species whose Header cannot be parsed is absent.
  f["P/Header"] = "Version_Two_Dot_Zero_double\n3\n1000000000000\nmass\n";
  ds = open_dataset_uri("amrex://" + write_plotfile(tmp / "plt6", f));
  EXPECT_TRUE(ds->particle_types().empty());
  f["P/Header"] = "Version_Two_Dot_Zero_double\n3\n0\n0\n0\n5\n6\n0\n1000000000000000\n";
  ds = open_dataset_uri("amrex://" + write_plotfile(tmp / "plt7", f));
  EXPECT_TRUE(ds->particle_types().empty());
  // A huge per-grid count is caught by the file size before any allocation.
  f["P/Header"] = "Version_Two_Dot_Zero_double\n3\n0\n0\n0\n5\n6\n0\n1\n0 1000000000000000 0\n";
  f["P/Level_0/DATA_00000"] = data;
  ds = open_dataset_uri("amrex://" + write_plotfile(tmp / "plt8", f));
  expect_error([&] { ds->read_particle_field("P", "x", 0); }, {"truncated particle data"});
}

// COORD-4 on every shared plotfile.
TEST(AmrexDataset, SynthesizedRunMeta) {
  KANGAROO_REQUIRE_SHARED_AMREX();
  struct Expect {
    std::string name;
    std::int32_t step;
    std::vector<std::array<std::int32_t, 3>> ratios;  // per level transition
    int coord_sys;
  };
  const std::vector<Expect> cases = {
      {"pelelmex_3d_38comp", 20, {{2, 2, 2}, {2, 2, 2}}, 0},
      {"pelelmex_3d_small", 20, {{2, 2, 2}, {2, 2, 2}}, 0},
      {"eb_3d", 5, {{2, 2, 2}}, 0},
      {"amrex_singlevortex2d_tracer/plt00000", 0, {{2, 2, 1}, {2, 2, 1}}, 0},
      {"amrex_singlevortex3d_gpu/plt00100", 100, {}, 0},
      {"warpx_3d_quartz_ring_particles/diag1001000", 1000, {}, 0},
      {"erf_iva_numdiff_3d/IVA_NumDiff", 10, {}, 0},
      {"iamr_drop2d/plt00050", 50, {{2, 2, 1}}, 1},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const auto reader = PlotfileReader::open(shared(c.name));
    const RunMeta m = synthesize_runmeta(*reader);
    ASSERT_EQ(m.steps.size(), 1u);
    EXPECT_EQ(m.steps[0].step, c.step);
    EXPECT_EQ(m.coord_sys, c.coord_sys);
    ASSERT_EQ(m.steps[0].levels.size(), c.ratios.size() + 1);
    for (std::size_t l = 0; l < m.steps[0].levels.size(); ++l) {
      const LevelGeom& g = m.steps[0].levels[l].geom;
      const auto want = l < c.ratios.size() ? c.ratios[l] : std::array<std::int32_t, 3>{1, 1, 1};
      EXPECT_EQ(g.ref_ratio, want) << "level " << l;
      const auto& L = reader->levels()[l];
      for (int a = 0; a < 3; ++a) {
        const auto ua = static_cast<std::size_t>(a);
        if (a < reader->spacedim()) {
          EXPECT_EQ(g.dx[ua], L.cell_size[ua]);
          EXPECT_EQ(g.x0[ua], reader->prob_lo()[ua]);
          EXPECT_EQ(g.index_origin[ua], L.domain.lo[ua]);
        } else {
          EXPECT_EQ(g.dx[ua], 1.0);
          EXPECT_EQ(g.x0[ua], 0.0);
          EXPECT_EQ(g.index_origin[ua], 0);
        }
      }
      EXPECT_EQ(m.steps[0].levels[l].boxes, L.boxes);
    }
    // The RunMeta survives its own JSON round trip and validation.
    EXPECT_NO_THROW(decode_runmeta(encode_runmeta(m)));
  }
  // ERF's anisotropic cells: dz = dx = 0.5 with 48x48x4 cells (Header line 18).
  const RunMeta erf = synthesize_runmeta(*PlotfileReader::open(shared("erf_iva_numdiff_3d/IVA_NumDiff")));
  EXPECT_EQ(erf.steps[0].levels[0].geom.dx, (std::array<double, 3>{0.5, 0.5, 0.5}));
  const RunMeta wx = synthesize_runmeta(*PlotfileReader::open(shared("warpx_3d_quartz_ring_particles/diag1001000")));
  EXPECT_EQ(wx.particle_species,
            (std::vector<std::pair<std::string, std::int64_t>>{{"electrons", 32}, {"ions", 32}}));
  const RunMeta sv = synthesize_runmeta(*PlotfileReader::open(shared("amrex_singlevortex2d_tracer/plt00000")));
  EXPECT_EQ(sv.particle_species, (std::vector<std::pair<std::string, std::int64_t>>{{"Tracer", 57}}));
}

TEST(AmrexDataset, AnisotropicAndInexactRatios) {
  TempDir tmp;
  SynthOptions o;
  o.level_cells = {{8, 8, 4}, {16, 16, 4}};  // ERF-style 2 2 1
  auto r = PlotfileReader::open(write_plotfile(tmp / "a", make_plotfile(o)));
  EXPECT_EQ(synthesize_runmeta(*r).steps[0].levels[0].geom.ref_ratio, (std::array<std::int32_t, 3>{2, 2, 1}));
  o.level_cells = {{8, 8, 4}, {16, 12, 8}};  // 8 -> 12 on y is not an integer ratio
  o.ratio_line = "";
  r = PlotfileReader::open(write_plotfile(tmp / "b", make_plotfile(o)));
  expect_error([&] { synthesize_runmeta(*r); }, {"refinement ratio is not an exact integer", "axis 1"});
}
