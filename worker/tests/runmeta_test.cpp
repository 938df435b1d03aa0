// Run metadata (DATA-1..7), coordinates (COORD-1/2) and AMR coverage
// (COV-2..4, ERR-48).
//
// Expected coordinates, indices and coarsened boxes are worked out by hand
// from the formulas of the contract; comments show the arithmetic.
#include "kangaroo/core/runmeta.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "kangaroo/core/error.h"
#include "kangaroo/core/plan_json.h"

namespace kangaroo {
namespace {

using nlohmann::json;
using I3 = std::array<std::int32_t, 3>;

// ---------------------------------------------------------------------------
// Documents

json box(I3 lo, I3 hi) {
  return json::array({lo, hi});
}

json geom(double dx, json ratio) {
  return {{"dx", {dx, dx, dx}},
          {"x0", {0.0, 0.0, 0.0}},
          {"index_origin", {0, 0, 0}},
          {"is_periodic", {false, false, false}},
          {"ref_ratio", std::move(ratio)}};
}

// Two levels, ratio 2: level 0 is 16x16x8 cells in four blocks, level 1
// refines coarse cells [4,11]x[4,11]x[0,7] in two blocks.
json base_runmeta() {
  json l0 = {{"geom", geom(0.0625, {2, 2, 2})},
             {"boxes",
              {box({0, 0, 0}, {7, 7, 7}), box({8, 0, 0}, {15, 7, 7}), box({0, 8, 0}, {7, 15, 7}),
               box({8, 8, 0}, {15, 15, 7})}}};
  json l1 = {{"geom", geom(0.03125, {1, 1, 1})},
             {"boxes", {box({8, 8, 0}, {15, 23, 15}), box({16, 8, 0}, {23, 23, 15})}}};
  return {{"steps", {{{"step", 0}, {"levels", {l0, l1}}}}},
          {"particle_species", {{"electrons", 4}}},
          {"coord_sys", 0}};
}

json& level(json& doc, int l) {
  return doc["steps"][0]["levels"][l];
}
json& geom_of(json& doc, int l) {
  return level(doc, l)["geom"];
}

RunMeta decode_ok(const json& doc) {
  try {
    return decode_runmeta(doc.dump());
  } catch (const std::exception& e) {
    ADD_FAILURE() << "RunMeta rejected: " << e.what();
  }
  return RunMeta{};
}

// Everything a failure reports: what() and, for a PlanError, every issue.
std::optional<std::string> failure_of(const std::string& text) {
  try {
    (void)decode_runmeta(text);
  } catch (const PlanError& e) {
    std::string all = e.what();
    for (const auto& i : e.issues())
      all += "\n" + i.to_string();
    EXPECT_EQ(e.kind(), ErrorKind::invalid_plan);
    return all;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid_plan);
    return std::string(e.what());
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected kangaroo::Error, got " << e.what();
    return std::string(e.what());
  }
  return std::nullopt;
}
std::optional<std::string> failure_of(const json& doc) {
  return failure_of(doc.dump());
}

void expect_rejected(const json& doc, const std::string& must_contain = "") {
  const auto f = failure_of(doc);
  ASSERT_TRUE(f.has_value()) << "accepted: " << doc.dump();
  if (!must_contain.empty()) {
    EXPECT_NE(f->find(must_contain), std::string::npos) << *f;
  }
}

std::map<std::string, std::int64_t> species_map(const RunMeta& m) {
  std::map<std::string, std::int64_t> out;
  for (const auto& [name, n] : m.particle_species)
    out[name] = n;
  return out;
}

// Builds a StepMeta directly (no validation) for the coverage helpers.
StepMeta make_step(std::vector<LevelGeom> geoms, std::vector<std::vector<IndexBox>> boxes) {
  StepMeta s;
  for (std::size_t l = 0; l < geoms.size(); ++l) {
    LevelMeta lv;
    lv.geom = geoms[l];
    lv.boxes = boxes.at(l);
    s.levels.push_back(lv);
  }
  return s;
}

LevelGeom make_geom(I3 ratio, I3 origin = {0, 0, 0}) {
  LevelGeom g;
  g.ref_ratio = ratio;
  g.index_origin = origin;
  return g;
}

IndexBox ibox(I3 lo, I3 hi) {
  IndexBox b;
  b.lo = lo;
  b.hi = hi;
  return b;
}

// ---------------------------------------------------------------------------
// DATA-7 decoding

TEST(RunMetaDecode, BaseDocument) {
  const RunMeta m = decode_ok(base_runmeta());
  ASSERT_EQ(m.steps.size(), 1u);
  EXPECT_EQ(m.steps[0].step, 0);
  ASSERT_EQ(m.steps[0].levels.size(), 2u);
  const LevelMeta& l0 = m.steps[0].levels[0];
  EXPECT_EQ(l0.geom.dx, (std::array<double, 3>{0.0625, 0.0625, 0.0625}));
  EXPECT_EQ(l0.geom.x0, (std::array<double, 3>{0.0, 0.0, 0.0}));
  EXPECT_EQ(l0.geom.ref_ratio, (I3{2, 2, 2}));
  ASSERT_EQ(l0.boxes.size(), 4u);
  EXPECT_EQ(l0.boxes[1].lo, (I3{8, 0, 0}));
  EXPECT_EQ(l0.boxes[1].hi, (I3{15, 7, 7}));
  ASSERT_EQ(m.steps[0].levels[1].boxes.size(), 2u);
  EXPECT_EQ(m.steps[0].levels[1].boxes[0].hi, (I3{15, 23, 15}));
  EXPECT_EQ(species_map(m), (std::map<std::string, std::int64_t>{{"electrons", 4}}));
  EXPECT_EQ(m.coord_sys, 0);
}

TEST(RunMetaDecode, OptionalKeysDefault) {
  json doc = base_runmeta();
  for (int l : {0, 1}) {
    geom_of(doc, l).erase("index_origin");
    geom_of(doc, l).erase("is_periodic");
  }
  doc.erase("particle_species");
  doc.erase("coord_sys");
  const RunMeta m = decode_ok(doc);
  for (const auto& lv : m.steps.at(0).levels) {
    EXPECT_EQ(lv.geom.index_origin, (I3{0, 0, 0}));
    EXPECT_EQ(lv.geom.is_periodic, (std::array<bool, 3>{false, false, false}));
  }
  EXPECT_TRUE(m.particle_species.empty());
  EXPECT_EQ(m.coord_sys, 0);
}

TEST(RunMetaDecode, ExplicitOptionalValues) {
  json doc = base_runmeta();
  geom_of(doc, 0)["index_origin"] = {-16, 4, 0};
  geom_of(doc, 0)["is_periodic"] = {true, 0, 1};
  geom_of(doc, 0)["x0"] = {-1.0, 0.25, 3.5};
  geom_of(doc, 0)["dx"] = {0.5, 0.25, 0.125};
  doc["coord_sys"] = 2;
  const RunMeta m = decode_ok(doc);
  const LevelGeom& g = m.steps.at(0).levels.at(0).geom;
  EXPECT_EQ(g.index_origin, (I3{-16, 4, 0}));
  EXPECT_EQ(g.is_periodic, (std::array<bool, 3>{true, false, true}));
  EXPECT_EQ(g.x0, (std::array<double, 3>{-1.0, 0.25, 3.5}));
  EXPECT_EQ(g.dx, (std::array<double, 3>{0.5, 0.25, 0.125}));
  EXPECT_EQ(m.coord_sys, 2);
  doc["coord_sys"] = 1;
  EXPECT_EQ(decode_ok(doc).coord_sys, 1);
}

TEST(RunMetaDecode, ScalarRefRatioAppliesToAllAxes) {
  json doc = base_runmeta();
  geom_of(doc, 0)["ref_ratio"] = 2;
  geom_of(doc, 1)["ref_ratio"] = 1;
  const RunMeta m = decode_ok(doc);
  EXPECT_EQ(m.steps[0].levels[0].geom.ref_ratio, (I3{2, 2, 2}));
  EXPECT_EQ(m.steps[0].levels[1].geom.ref_ratio, (I3{1, 1, 1}));
}

TEST(RunMetaDecode, AnisotropicRefRatio) {
  json doc = base_runmeta();
  geom_of(doc, 0)["ref_ratio"] = {2, 2, 1};
  level(doc, 1)["boxes"] = {box({8, 8, 0}, {15, 23, 7})};
  EXPECT_EQ(decode_ok(doc).steps[0].levels[0].geom.ref_ratio, (I3{2, 2, 1}));
}

TEST(RunMetaDecode, ParticleSpeciesAsObject) {
  json doc = base_runmeta();
  doc["particle_species"] = {{"electrons", 4}, {"ions", 2}, {"photons", 0}};
  EXPECT_EQ(species_map(decode_ok(doc)),
            (std::map<std::string, std::int64_t>{{"electrons", 4}, {"ions", 2}, {"photons", 0}}));
  doc["particle_species"] = json::object();
  EXPECT_TRUE(decode_ok(doc).particle_species.empty());
  doc["particle_species"] = nullptr;
  EXPECT_TRUE(decode_ok(doc).particle_species.empty());
}

TEST(RunMetaDecode, ParticleSpeciesAsListOfPairs) {
  json doc = base_runmeta();
  doc["particle_species"] = json::array({json::array({"electrons", 4}), json::array({"ions", 2})});
  EXPECT_EQ(species_map(decode_ok(doc)),
            (std::map<std::string, std::int64_t>{{"electrons", 4}, {"ions", 2}}));
  doc["particle_species"] = json::array();
  EXPECT_TRUE(decode_ok(doc).particle_species.empty());
}

TEST(RunMetaDecode, ParticleSpeciesOtherFormsRejected) {
  const std::vector<json> bad = {
      "electrons",
      4,
      true,
      json::array({"electrons", 4}),                    // a flat pair, not a list of pairs
      json::array({json::array({"electrons"})}),        // short pair
      json::array({json::array({"electrons", 4, 1})}),  // long pair
      json::array({json::array({4, "electrons"})}),     // swapped
      json::array({json::object({{"electrons", 4}})}),  // objects in a list
      json::array({json::array({"electrons", 4.5})}),   // fractional count
      {{"electrons", "4"}},                             // string count
      {{"electrons", 4.5}},
      {{"electrons", nullptr}},
  };
  for (const auto& species : bad) {
    SCOPED_TRACE(species.dump());
    json doc = base_runmeta();
    doc["particle_species"] = species;
    expect_rejected(doc, "/particle_species");
  }
}

struct MissingKey {
  std::string key;
  std::string path;
  std::function<void(json&)> erase;
};

TEST(RunMetaDecode, MissingKeysAreNamed) {
  const std::vector<MissingKey> cases = {
      {"steps", "/steps", [](json& d) { d.erase("steps"); }},
      {"step", "/steps/0/step", [](json& d) { d["steps"][0].erase("step"); }},
      {"levels", "/steps/0/levels", [](json& d) { d["steps"][0].erase("levels"); }},
      {"geom", "/steps/0/levels/1/geom", [](json& d) { level(d, 1).erase("geom"); }},
      {"dx", "/steps/0/levels/1/geom/dx", [](json& d) { geom_of(d, 1).erase("dx"); }},
      {"x0", "/steps/0/levels/0/geom/x0", [](json& d) { geom_of(d, 0).erase("x0"); }},
      {"ref_ratio", "/steps/0/levels/1/geom/ref_ratio",
       [](json& d) { geom_of(d, 1).erase("ref_ratio"); }},
      {"boxes", "/steps/0/levels/0/boxes", [](json& d) { level(d, 0).erase("boxes"); }},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.key);
    json doc = base_runmeta();
    c.erase(doc);
    const auto f = failure_of(doc);
    ASSERT_TRUE(f.has_value()) << "accepted without " << c.key;
    EXPECT_NE(f->find("'" + c.key + "'"), std::string::npos) << "the key is not named: " << *f;
    EXPECT_NE(f->find(c.path), std::string::npos) << "the path is not named: " << *f;
  }
}

TEST(RunMetaDecode, MalformedValuesRejected) {
  struct Case {
    std::string what;
    std::function<void(json&)> mutate;
    std::string path;
  };
  const std::vector<Case> cases = {
      {"root array", [](json& d) { d = json::array({d}); }, ""},
      {"steps object", [](json& d) { d["steps"] = json::object(); }, "/steps"},
      {"step object", [](json& d) { d["steps"][0] = 3; }, "/steps/0"},
      {"step fraction", [](json& d) { d["steps"][0]["step"] = 0.5; }, "/steps/0/step"},
      {"step string", [](json& d) { d["steps"][0]["step"] = "0"; }, "/steps/0/step"},
      {"levels object", [](json& d) { d["steps"][0]["levels"] = json::object(); },
       "/steps/0/levels"},
      {"level array", [](json& d) { level(d, 1) = json::array(); }, "/steps/0/levels/1"},
      {"geom array", [](json& d) { level(d, 1)["geom"] = json::array(); },
       "/steps/0/levels/1/geom"},
      {"dx of two",
       [](json& d) {
         geom_of(d, 0)["dx"] = {1.0, 1.0};
       },
       "/steps/0/levels/0/geom/dx"},
      {"dx of four",
       [](json& d) {
         geom_of(d, 0)["dx"] = {1.0, 1.0, 1.0, 1.0};
       },
       "/steps/0/levels/0/geom/dx"},
      {"dx scalar", [](json& d) { geom_of(d, 0)["dx"] = 1.0; }, "/steps/0/levels/0/geom/dx"},
      {"dx string",
       [](json& d) {
         geom_of(d, 0)["dx"] = {1.0, "1", 1.0};
       },
       "/steps/0/levels/0/geom/dx"},
      {"x0 of two",
       [](json& d) {
         geom_of(d, 0)["x0"] = {0.0, 0.0};
       },
       "/steps/0/levels/0/geom/x0"},
      {"origin of two",
       [](json& d) {
         geom_of(d, 0)["index_origin"] = {0, 0};
       },
       "/steps/0/levels/0/geom/index_origin"},
      {"origin fraction",
       [](json& d) {
         geom_of(d, 0)["index_origin"] = {0, 0.5, 0};
       },
       "/steps/0/levels/0/geom/index_origin"},
      {"periodic of one", [](json& d) { geom_of(d, 0)["is_periodic"] = {true}; },
       "/steps/0/levels/0/geom/is_periodic"},
      {"periodic string",
       [](json& d) {
         geom_of(d, 0)["is_periodic"] = {"yes", false, false};
       },
       "/steps/0/levels/0/geom/is_periodic"},
      {"periodic two",
       [](json& d) {
         geom_of(d, 0)["is_periodic"] = {2, 0, 0};
       },
       "/steps/0/levels/0/geom/is_periodic"},
      {"ratio of two",
       [](json& d) {
         geom_of(d, 0)["ref_ratio"] = {2, 2};
       },
       "/steps/0/levels/0/geom/ref_ratio"},
      {"ratio fraction", [](json& d) { geom_of(d, 0)["ref_ratio"] = 2.5; },
       "/steps/0/levels/0/geom/ref_ratio"},
      {"ratio string", [](json& d) { geom_of(d, 0)["ref_ratio"] = "2"; },
       "/steps/0/levels/0/geom/ref_ratio"},
      {"ratio zero", [](json& d) { geom_of(d, 0)["ref_ratio"] = 0; },
       "/steps/0/levels/0/geom/ref_ratio"},
      {"ratio negative",
       [](json& d) {
         geom_of(d, 0)["ref_ratio"] = {2, -2, 2};
       },
       "/steps/0/levels/0/geom/ref_ratio"},
      {"boxes object", [](json& d) { level(d, 0)["boxes"] = json::object(); },
       "/steps/0/levels/0/boxes"},
      {"box of one corner",
       [](json& d) {
         level(d, 0)["boxes"][0] = json::array({I3{0, 0, 0}});
       },
       "/steps/0/levels/0/boxes/0"},
      {"box corner of two",
       [](json& d) {
         level(d, 0)["boxes"][0] = {{0, 0}, {7, 7, 7}};
       },
       "/steps/0/levels/0/boxes/0"},
      {"box corner fraction",
       [](json& d) {
         level(d, 0)["boxes"][0] = {{0, 0, 0}, {7, 7.5, 7}};
       },
       "/steps/0/levels/0/boxes/0"},
      {"box corner beyond int32",
       [](json& d) {
         level(d, 0)["boxes"][0] = {{0, 0, 0}, {7, 7, 2147483648LL}};
       },
       "/steps/0/levels/0/boxes/0"},
      {"coord_sys three", [](json& d) { d["coord_sys"] = 3; }, "/coord_sys"},
      {"coord_sys negative", [](json& d) { d["coord_sys"] = -1; }, "/coord_sys"},
      {"coord_sys string", [](json& d) { d["coord_sys"] = "0"; }, "/coord_sys"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    json doc = base_runmeta();
    c.mutate(doc);
    expect_rejected(doc, c.path);
  }
}

TEST(RunMetaDecode, MalformedJsonIsAnError) {
  for (const std::string text : {"", "{", "[]", "null", "{\"steps\": [}", "{\"steps\": []} x"}) {
    SCOPED_TRACE(text);
    const auto f = failure_of(text);
    EXPECT_TRUE(f.has_value());
  }
  const std::string deep(100000, '[');
  EXPECT_TRUE(failure_of(deep).has_value());
}

TEST(RunMetaDecode, NumberOverflowIsAKangarooError) {
  // JSON cannot spell inf; an overflowing literal is malformed input and must
  // surface as kangaroo::Error, not as a JSON library exception.
  json doc = base_runmeta();
  geom_of(doc, 0)["dx"] = {0.0625, 0.0625, "DX"};
  std::string text = doc.dump();
  text.replace(text.find("\"DX\""), 4, "1e999");
  EXPECT_TRUE(failure_of(text).has_value());
}

TEST(RunMetaDecode, EmptyStepListDecodes) {
  const RunMeta m = decode_ok(json{{"steps", json::array()}});
  EXPECT_TRUE(m.steps.empty());
  EXPECT_EQ(m.find_step(0), nullptr);
}

// ---------------------------------------------------------------------------
// DATA-5: positive extents

TEST(RunMetaDecode, Data5NonPositiveExtentRejected) {
  for (int axis = 0; axis < 3; ++axis) {
    SCOPED_TRACE(axis);
    json doc = base_runmeta();
    I3 lo{8, 0, 0};
    I3 hi{15, 7, 7};
    hi[static_cast<std::size_t>(axis)] = lo[static_cast<std::size_t>(axis)] - 1;  // extent 0
    level(doc, 0)["boxes"][1] = box(lo, hi);
    expect_rejected(doc, "/steps/0/levels/0/boxes/1");
    hi[static_cast<std::size_t>(axis)] = lo[static_cast<std::size_t>(axis)] - 5;  // negative extent
    level(doc, 0)["boxes"][1] = box(lo, hi);
    expect_rejected(doc, "/steps/0/levels/0/boxes/1");
  }
}

TEST(RunMetaDecode, Data5SingleCellBlocksAccepted) {
  json doc = base_runmeta();
  level(doc, 0)["boxes"].push_back(box({20, -3, 9}, {20, -3, 9}));
  const RunMeta m = decode_ok(doc);
  const IndexBox& b = m.steps[0].levels[0].boxes.at(4);
  EXPECT_EQ(b.cells(), 1u);
}

TEST(RunMetaValidate, Data5OnBuiltMeta) {
  RunMeta m;
  m.steps.push_back(make_step({make_geom({1, 1, 1})},
                              {{ibox({0, 0, 0}, {3, 3, 3}), ibox({4, 0, 0}, {3, 3, 3})}}));
  EXPECT_THROW(validate_runmeta(m), Error);
  m.steps[0].levels[0].boxes[1] = ibox({4, 0, 0}, {7, 3, 3});
  EXPECT_NO_THROW(validate_runmeta(m));
}

// ---------------------------------------------------------------------------
// DATA-6: step labels

TEST(RunMetaDecode, Data6DuplicateLabelsRejected) {
  json doc = base_runmeta();
  json second = doc["steps"][0];
  second["step"] = 0;
  doc["steps"].push_back(second);
  expect_rejected(doc, "/steps/1");
  doc["steps"][1]["step"] = 3;
  json third = second;
  third["step"] = 3;
  doc["steps"].push_back(third);
  expect_rejected(doc, "/steps/2");
}

TEST(RunMetaDecode, Data6FindStepByLabel) {
  json doc = base_runmeta();
  json later = doc["steps"][0];
  later["step"] = 2;
  later["levels"] = json::array({later["levels"][0]});  // one level only
  doc["steps"][0]["step"] = 5;
  doc["steps"].push_back(later);
  const RunMeta m = decode_ok(doc);
  ASSERT_EQ(m.steps.size(), 2u);
  const StepMeta* s5 = m.find_step(5);
  const StepMeta* s2 = m.find_step(2);
  ASSERT_NE(s5, nullptr);
  ASSERT_NE(s2, nullptr);
  EXPECT_EQ(s5->step, 5);
  EXPECT_EQ(s5->levels.size(), 2u);
  EXPECT_EQ(s2->step, 2);
  EXPECT_EQ(s2->levels.size(), 1u);
  // Positions are not labels.
  EXPECT_EQ(m.find_step(0), nullptr);
  EXPECT_EQ(m.find_step(1), nullptr);
  EXPECT_EQ(m.find_step(-5), nullptr);
  // Levels are positions inside a step.
  EXPECT_NE(m.find_level(5, 1), nullptr);
  EXPECT_EQ(m.find_level(5, 1), &s5->levels[1]);
  EXPECT_EQ(m.find_level(2, 1), nullptr);
  EXPECT_EQ(m.find_level(2, -1), nullptr);
  EXPECT_EQ(m.find_level(0, 0), nullptr);
}

TEST(RunMetaDecode, Data6SingleStepWithNonZeroLabel) {
  json doc = base_runmeta();
  doc["steps"][0]["step"] = 1200;
  const RunMeta m = decode_ok(doc);
  ASSERT_NE(m.find_step(1200), nullptr);
  EXPECT_EQ(m.find_step(0), nullptr);
  EXPECT_EQ(m.find_level(1200, 0), &m.steps[0].levels[0]);
}

// ---------------------------------------------------------------------------
// COV-3: alignment and coarsening

TEST(RunMetaDecode, Cov3MisalignedFineBoxRejected) {
  const std::vector<std::pair<I3, I3>> misaligned = {
      {{9, 8, 0}, {15, 23, 15}},   // lo not a multiple of 2 on x
      {{8, 8, 0}, {14, 23, 15}},   // hi + 1 not a multiple of 2 on x
      {{8, 7, 0}, {15, 23, 15}},   // y
      {{8, 8, 0}, {15, 23, 16}},   // z
      {{-3, 8, 0}, {15, 23, 15}},  // negative, odd
  };
  for (const auto& [lo, hi] : misaligned) {
    SCOPED_TRACE(box(lo, hi).dump());
    json doc = base_runmeta();
    level(doc, 1)["boxes"][1] = box(lo, hi);
    expect_rejected(doc, "fine box not aligned to refinement ratio");
    expect_rejected(doc, "/steps/0/levels/1/boxes/1");
  }
}

TEST(RunMetaDecode, Cov3AlignedFineBoxesAccepted) {
  json doc = base_runmeta();
  level(doc, 1)["boxes"].push_back(box({-4, -2, 30}, {-1, 1, 31}));  // negative and aligned
  level(doc, 1)["boxes"].push_back(box({0, 0, 0}, {1, 1, 1}));       // one coarse cell
  EXPECT_EQ(decode_ok(doc).steps.at(0).levels.at(1).boxes.size(), 4u);
}

TEST(RunMetaDecode, Cov3AlignmentIsRelativeToTheFineOrigin) {
  json doc = base_runmeta();
  geom_of(doc, 1)["index_origin"] = {1, 0, 0};
  // lo - origin = 8 and hi + 1 - origin = 16 on x: aligned.
  level(doc, 1)["boxes"] = {box({9, 8, 0}, {16, 23, 15})};
  EXPECT_NO_THROW(decode_ok(doc));
  // lo - origin = 7: not aligned, although 8 itself is even.
  level(doc, 1)["boxes"] = {box({8, 8, 0}, {15, 23, 15})};
  expect_rejected(doc, "fine box not aligned to refinement ratio");
}

TEST(RunMetaDecode, Cov3UsesTheRatioOfTheNextCoarserLevel) {
  // Ratios: level 0 -> 1 is 4, level 1 -> 2 is 2.
  json doc = base_runmeta();
  geom_of(doc, 0)["ref_ratio"] = 4;
  geom_of(doc, 1)["ref_ratio"] = 2;
  level(doc, 1)["boxes"] = {box({16, 16, 0}, {31, 31, 31})};
  json l2 = {{"geom", geom(0.0078125, {1, 1, 1})}, {"boxes", {box({34, 34, 2}, {37, 41, 5})}}};
  doc["steps"][0]["levels"].push_back(l2);
  // Level 2 only needs alignment to 2.
  EXPECT_NO_THROW(decode_ok(doc));
  // Level 1 needs alignment to 4: 18 is even but not a multiple of 4.
  level(doc, 1)["boxes"] = {box({18, 16, 0}, {31, 31, 31})};
  expect_rejected(doc, "/steps/0/levels/1/boxes/0");
}

TEST(RunMetaDecode, Cov3LevelZeroAndFinestRatioAreFree) {
  json doc = base_runmeta();
  level(doc, 0)["boxes"].push_back(
      box({17, 3, 1}, {18, 5, 1}));  // odd corners on the coarsest level
  geom_of(doc, 1)["ref_ratio"] = 3;  // ignored on the finest level
  EXPECT_NO_THROW(decode_ok(doc));
}

TEST(RunMetaValidate, Cov3OnBuiltMeta) {
  RunMeta m;
  m.steps.push_back(make_step({make_geom({2, 2, 2}), make_geom({1, 1, 1})},
                              {{ibox({0, 0, 0}, {7, 7, 7})}, {ibox({2, 2, 2}, {5, 5, 5})}}));
  EXPECT_NO_THROW(validate_runmeta(m));
  m.steps[0].levels[1].boxes[0] = ibox({2, 2, 2}, {6, 5, 5});
  try {
    validate_runmeta(m);
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fine box not aligned to refinement ratio"),
              std::string::npos)
        << e.what();
  }
}

TEST(Coverage, Cov3CumulativeRatio) {
  const StepMeta s =
      make_step({make_geom({2, 4, 1}), make_geom({3, 2, 1}), make_geom({1, 1, 1})}, {{}, {}, {}});
  EXPECT_EQ(cumulative_ratio(s, 0, 2, 0), 6);
  EXPECT_EQ(cumulative_ratio(s, 0, 2, 1), 8);
  EXPECT_EQ(cumulative_ratio(s, 0, 2, 2), 1);
  EXPECT_EQ(cumulative_ratio(s, 1, 2, 0), 3);
  EXPECT_EQ(cumulative_ratio(s, 0, 1, 1), 4);
  EXPECT_EQ(cumulative_ratio(s, 1, 1, 0), 1);
}

TEST(Coverage, Cov3CoarsenOneAndTwoLevels) {
  const StepMeta s =
      make_step({make_geom({2, 2, 2}), make_geom({2, 2, 2}), make_geom({1, 1, 1})}, {{}, {}, {}});
  const IndexBox fine = ibox({8, 4, 0}, {15, 11, 7});
  // To level 1 (R = 2): lo = floor(8/2), floor(4/2), floor(0/2) = (4, 2, 0);
  // hi = floor(16/2)-1, floor(12/2)-1, floor(8/2)-1 = (7, 5, 3).
  EXPECT_EQ(coarsen_box(s, fine, 2, 1), ibox({4, 2, 0}, {7, 5, 3}));
  // To level 0 (R = 4): lo = (2, 1, 0); hi = 16/4-1, 12/4-1, 8/4-1 = (3, 2, 1).
  EXPECT_EQ(coarsen_box(s, fine, 2, 0), ibox({2, 1, 0}, {3, 2, 1}));
}

TEST(Coverage, Cov3CoarsenNegativeIndicesUsesFloor) {
  const StepMeta s2 = make_step({make_geom({2, 2, 2}), make_geom({1, 1, 1})}, {{}, {}});
  // lo = floor(-4/2), floor(-6/2), floor(-2/2) = (-2, -3, -1)
  // hi = floor(0/2)-1, floor(-2/2)-1, floor(2/2)-1 = (-1, -2, 0)
  EXPECT_EQ(coarsen_box(s2, ibox({-4, -6, -2}, {-1, -3, 1}), 1, 0),
            ibox({-2, -3, -1}, {-1, -2, 0}));
  const StepMeta s4 = make_step({make_geom({4, 4, 4}), make_geom({1, 1, 1})}, {{}, {}});
  // Truncating division would give lo = -1 and hi = -1 here:
  // lo = floor(-6/4) = -2; hi = floor((-3+1)/4) - 1 = floor(-0.5) - 1 = -2.
  EXPECT_EQ(coarsen_box(s4, ibox({-6, -6, -6}, {-3, -3, -3}), 1, 0),
            ibox({-2, -2, -2}, {-2, -2, -2}));
  // lo = floor(-8/4) = -2, hi = floor(0/4) - 1 = -1.
  EXPECT_EQ(coarsen_box(s4, ibox({-8, -8, -8}, {-1, -1, -1}), 1, 0),
            ibox({-2, -2, -2}, {-1, -1, -1}));
}

TEST(Coverage, Cov3CoarsenWithIndexOrigins) {
  // Coarse origin (10, 20, -5), fine origin (4, -8, 0), ratio (2, 4, 1).
  const StepMeta s =
      make_step({make_geom({2, 4, 1}, {10, 20, -5}), make_geom({1, 1, 1}, {4, -8, 0})}, {{}, {}});
  // x: lo = floor((8-4)/2)+10 = 12; hi = floor((11-4+1)/2)+10-1 = 13
  // y: lo = floor((-8+8)/4)+20 = 20; hi = floor((7+8+1)/4)+20-1 = 23
  // z: lo = (3-0)/1-5 = -2; hi = (6+1)/1-5-1 = 1
  EXPECT_EQ(coarsen_box(s, ibox({8, -8, 3}, {11, 7, 6}), 1, 0), ibox({12, 20, -2}, {13, 23, 1}));
}

TEST(Coverage, Cov3CoarsenAnisotropicCumulative) {
  const StepMeta s =
      make_step({make_geom({2, 4, 1}), make_geom({3, 2, 1}), make_geom({1, 1, 1})}, {{}, {}, {}});
  // R = (6, 8, 1): lo = (6/6, 8/8, 0) = (1, 1, 0); hi = (18/6-1, 16/8-1, 2) = (2, 1, 2)
  EXPECT_EQ(coarsen_box(s, ibox({6, 8, 0}, {17, 15, 2}), 2, 0), ibox({1, 1, 0}, {2, 1, 2}));
}

TEST(CoverageDeathTest, Cov3CoarsenWithHugeCumulativeRatio) {
  // Four levels refining x by 2^30 each pass validation; the ratio from level
  // 3 to level 0 is 2^90. Fine cells [0, 2^30) cover less than one level-0
  // cell: lo = floor(0 / 2^90) = 0, hi = floor(2^30 / 2^90) - 1 = -1 (empty).
  // Acceptable outcomes: that exact result, or an explicit kangaroo::Error.
  // A crash (division by a wrapped-around ratio) is not.
  const std::int32_t r = 1 << 30;
  RunMeta m;
  m.steps.push_back(make_step(
      {make_geom({r, 1, 1}), make_geom({r, 1, 1}), make_geom({r, 1, 1}), make_geom({1, 1, 1})},
      {{ibox({0, 0, 0}, {0, 0, 0})},
       {ibox({0, 0, 0}, {r - 1, 0, 0})},
       {ibox({0, 0, 0}, {r - 1, 0, 0})},
       {ibox({0, 0, 0}, {r - 1, 0, 0})}}));
  ASSERT_NO_THROW(validate_runmeta(m));
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        int code = 1;
        try {
          const IndexBox c = coarsen_box(m.steps[0], m.steps[0].levels[3].boxes[0], 3, 0);
          if (c.lo[0] == 0 && c.hi[0] == -1) code = 0;
        } catch (const Error&) {
          code = 0;
        }
        std::exit(code);
      },
      ::testing::ExitedWithCode(0), "");
}

// COV-4.
TEST(Coverage, Cov4VolumeCoverage) {
  // Ratios 2 then 2; three levels.
  const StepMeta s = make_step({make_geom({2, 2, 2}), make_geom({2, 2, 2}), make_geom({1, 1, 1})},
                               {{ibox({0, 0, 0}, {15, 15, 15})},
                                {ibox({4, 4, 4}, {11, 11, 11}), ibox({20, 0, 0}, {23, 3, 1})},
                                {ibox({8, 8, 8}, {15, 15, 15})}});
  auto sorted = [](std::vector<IndexBox> v) {
    std::sort(v.begin(), v.end(), [](const IndexBox& a, const IndexBox& b) {
      return std::tie(a.lo, a.hi) < std::tie(b.lo, b.hi);
    });
    return v;
  };
  // Level 0: level-1 boxes / 2 and the level-2 box / 4.
  // (4..11) -> (2..5); (20..23, 0..3, 0..1) -> (10..11, 0..1, 0..0); (8..15) / 4 -> (2..3).
  EXPECT_EQ(sorted(volume_coverage(s, 0)),
            sorted({ibox({2, 2, 2}, {5, 5, 5}), ibox({10, 0, 0}, {11, 1, 0}),
                    ibox({2, 2, 2}, {3, 3, 3})}));
  // Level 1: only the level-2 box / 2 -> (4..7).
  EXPECT_EQ(volume_coverage(s, 1), (std::vector<IndexBox>{ibox({4, 4, 4}, {7, 7, 7})}));
  // COV-2: the finest level masks nothing.
  EXPECT_TRUE(volume_coverage(s, 2).empty());
}

TEST(Coverage, Cov4OnDecodedBaseDocument) {
  const RunMeta m = decode_ok(base_runmeta());
  const auto cov = volume_coverage(m.steps.at(0), 0);
  // (8..15, 8..23, 0..15) / 2 -> (4..7, 4..11, 0..7); (16..23, ...) -> (8..11, 4..11, 0..7).
  ASSERT_EQ(cov.size(), 2u);
  EXPECT_EQ(cov[0], ibox({4, 4, 0}, {7, 11, 7}));
  EXPECT_EQ(cov[1], ibox({8, 4, 0}, {11, 11, 7}));
  EXPECT_TRUE(is_covered(cov, 4, 4, 0));
  EXPECT_TRUE(is_covered(cov, 11, 11, 7));
  EXPECT_FALSE(is_covered(cov, 3, 4, 0));
  EXPECT_FALSE(is_covered(cov, 12, 4, 0));
  EXPECT_FALSE(is_covered({}, 0, 0, 0));
}

// ---------------------------------------------------------------------------
// COORD-1 / COORD-2

TEST(Coordinates, Coord1CellLowEdge) {
  LevelGeom g;
  g.x0 = {1.5, -2.0, 0.0};
  g.dx = {0.25, 0.5, 2.0};
  g.index_origin = {3, -4, 0};
  // x: 1.5 + (7 - 3) * 0.25 = 2.5; 1.5 + (-1 - 3) * 0.25 = 0.5
  EXPECT_DOUBLE_EQ(cell_low_edge(g, 0, 7), 2.5);
  EXPECT_DOUBLE_EQ(cell_low_edge(g, 0, -1), 0.5);
  EXPECT_DOUBLE_EQ(cell_low_edge(g, 0, 3), 1.5);  // the origin cell starts at x0
  // y: -2 + (0 - (-4)) * 0.5 = 0
  EXPECT_DOUBLE_EQ(cell_low_edge(g, 1, 0), 0.0);
  // z: 0 + 5 * 2 = 10
  EXPECT_DOUBLE_EQ(cell_low_edge(g, 2, 5), 10.0);
}

TEST(Coordinates, Coord2CoordToIndex) {
  LevelGeom g;
  g.x0 = {1.5, -2.0, 0.0};
  g.dx = {0.25, 0.5, 2.0};
  g.index_origin = {3, -4, 0};
  // floor((x - 1.5) / 0.25) + 3
  EXPECT_EQ(coord_to_index(g, 0, 2.5), 7);  // exactly on an edge belongs to the upper cell
  EXPECT_EQ(coord_to_index(g, 0, 2.49), 6);
  EXPECT_EQ(coord_to_index(g, 0, 1.5), 3);
  EXPECT_EQ(coord_to_index(g, 0, 0.0), -3);    // floor(-6) + 3
  EXPECT_EQ(coord_to_index(g, 0, -0.01), -4);  // floor(-6.04) + 3
  // floor((y + 2) / 0.5) - 4
  EXPECT_EQ(coord_to_index(g, 1, 0.0), 0);
  EXPECT_EQ(coord_to_index(g, 1, -2.1), -5);
  // floor(z / 2)
  EXPECT_EQ(coord_to_index(g, 2, 3.999), 1);
  EXPECT_EQ(coord_to_index(g, 2, -0.5), -1);
}

TEST(Coordinates, Coord2ZeroSpacingGivesOrigin) {
  LevelGeom g;
  g.x0 = {0.0, 0.0, 5.0};
  g.dx = {1.0, 1.0, 0.0};
  g.index_origin = {0, 0, 17};
  EXPECT_EQ(coord_to_index(g, 2, 123.0), 17);
  EXPECT_EQ(coord_to_index(g, 2, -1.0), 17);
  EXPECT_EQ(coord_to_index(g, 2, 5.0), 17);
}

TEST(Coordinates, Coord1And2AreConsistent) {
  LevelGeom g;
  g.x0 = {-0.3, 0.7, 1.1};
  g.dx = {0.1, 0.05, 0.2};
  g.index_origin = {-7, 2, 40};
  for (int a = 0; a < 3; ++a) {
    for (std::int64_t i = -20; i <= 20; ++i) {
      // The center of cell i maps back to i.
      const double center = cell_low_edge(g, a, i) + g.dx[static_cast<std::size_t>(a)] / 2;
      EXPECT_EQ(coord_to_index(g, a, center), i) << "axis " << a;
    }
  }
}

// ---------------------------------------------------------------------------
// Round trip

void expect_same_meta(const RunMeta& a, const RunMeta& b) {
  EXPECT_EQ(a.coord_sys, b.coord_sys);
  EXPECT_EQ(species_map(a), species_map(b));
  ASSERT_EQ(a.steps.size(), b.steps.size());
  for (std::size_t s = 0; s < a.steps.size(); ++s) {
    EXPECT_EQ(a.steps[s].step, b.steps[s].step);
    ASSERT_EQ(a.steps[s].levels.size(), b.steps[s].levels.size());
    for (std::size_t l = 0; l < a.steps[s].levels.size(); ++l) {
      const LevelMeta& la = a.steps[s].levels[l];
      const LevelMeta& lb = b.steps[s].levels[l];
      EXPECT_EQ(la.geom.dx, lb.geom.dx);
      EXPECT_EQ(la.geom.x0, lb.geom.x0);
      EXPECT_EQ(la.geom.index_origin, lb.geom.index_origin);
      EXPECT_EQ(la.geom.is_periodic, lb.geom.is_periodic);
      EXPECT_EQ(la.geom.ref_ratio, lb.geom.ref_ratio);
      EXPECT_EQ(la.boxes, lb.boxes);
    }
  }
}

TEST(RunMetaRoundTrip, EncodeThenDecode) {
  json doc = base_runmeta();
  geom_of(doc, 0)["index_origin"] = {-16, 4, 0};
  geom_of(doc, 0)["is_periodic"] = {true, false, 1};
  geom_of(doc, 0)["x0"] = {-1.0, 0.1, 1.0 / 3.0};
  geom_of(doc, 0)["ref_ratio"] = 2;
  geom_of(doc, 1)["dx"] = {0.1, 0.2, 0.3};
  doc["particle_species"] = json::array({json::array({"ions", 7}), json::array({"electrons", 3})});
  doc["coord_sys"] = 1;
  json later = doc["steps"][0];
  later["step"] = 42;
  doc["steps"].push_back(later);
  const RunMeta first = decode_ok(doc);
  const std::string encoded = encode_runmeta(first);
  RunMeta second;
  try {
    second = decode_runmeta(encoded);
  } catch (const std::exception& e) {
    FAIL() << "encoded RunMeta rejected: " << e.what() << "\n" << encoded;
  }
  expect_same_meta(first, second);
  EXPECT_EQ(encode_runmeta(second), encoded);
  // Against the document itself.
  EXPECT_EQ(second.steps.at(1).step, 42);
  EXPECT_EQ(second.steps[0].levels[0].geom.index_origin, (I3{-16, 4, 0}));
  EXPECT_EQ(second.steps[0].levels[0].geom.x0[2], 1.0 / 3.0);
  EXPECT_EQ(second.steps[0].levels[1].geom.dx[0], 0.1);
  EXPECT_EQ(species_map(second),
            (std::map<std::string, std::int64_t>{{"electrons", 3}, {"ions", 7}}));
}

TEST(RunMetaRoundTrip, EmptyAndDefaults) {
  const RunMeta empty = decode_ok(json{{"steps", json::array()}});
  const RunMeta back = decode_runmeta(encode_runmeta(empty));
  expect_same_meta(empty, back);
}

}  // namespace
}  // namespace kangaroo
