// Plan document decoding and decode-time validation (PLAN-1..15, PARAM-1..3,
// VAL-1..8, ERR-1..9).
//
// Every case starts from one valid document (three stages, coverage lists,
// chunk and graph templates) and changes one thing. Expected outcomes, paths
// and defaults come from the functional contract and the documented plan
// format, never from running the decoder.
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

#include "kangaroo/core/buffer.h"
#include "kangaroo/core/error.h"
#include "kangaroo/core/params.h"
#include "kangaroo/core/plan.h"
#include "kangaroo/core/plan_json.h"

namespace kangaroo {
namespace {

using nlohmann::json;

// ---------------------------------------------------------------------------
// The baseline document

// Positions the cases below poke at. The target template sits at stage 1,
// template 1 so that a decoder reporting "0" everywhere is caught.
const std::string kT = "/stages/1/templates/1";
const std::string kB = kT + "/outputs/0/buffer";
const std::string kG = "/stages/2/templates/0";
const std::string kGR = kG + "/graph_reduce";

json all_faces() {
  return json::array({true, true, true, true, true, true});
}

json no_deps() {
  return {{"kind", "None"}, {"width", 0}, {"faces", all_faces()}, {"halo_inputs", json::array()}};
}

json domain(int step, int level) {
  return {{"step", step}, {"level", level}, {"blocks", nullptr}};
}

json input(int field) {
  return {{"field", field}, {"version", 0}, {"domain", nullptr}};
}

json output(int field, json buffer) {
  return {{"field", field}, {"version", 0}, {"buffer", std::move(buffer)}};
}

json buffer(const char* dtype, json shape, const char* init = "uninitialized") {
  return {{"dtype", dtype}, {"shape", std::move(shape)}, {"init", init}};
}

json fixed(std::vector<std::int64_t> extents) {
  return {{"kind", "fixed"}, {"extents", extents}};
}

json like_input(std::int64_t i) {
  return {{"kind", "like_input"}, {"input_index", i}};
}

json dynamic(json bound) {
  return {{"kind", "dynamic"}, {"upper_bound", std::move(bound)}};
}

json chunk_template(const char* name, const char* kernel, json inputs, json outputs, json params) {
  return {{"name", name},
          {"plane", "chunk"},
          {"kernel", kernel},
          {"domain", domain(0, 0)},
          {"inputs", std::move(inputs)},
          {"outputs", std::move(outputs)},
          {"deps", no_deps()},
          {"params", std::move(params)},
          {"covered_boxes_ref", -1},
          {"graph_reduce", nullptr}};
}

json field_expr_params() {
  return {
      {"type", "FieldExprParams"}, {"expression", "rho*rho"}, {"variables", json::array({"rho"})}};
}

json projection_params() {
  return {{"type", "UniformProjectionParams"},
          {"axis", 2},
          {"axis_bounds", json::array({0.0, 0.5})},
          {"rect", json::array({0.0, 0.0, 1.0, 1.0})},
          {"resolution", json::array({32, 32})}};
}

json base_plan() {
  json square = chunk_template("square", "field_expr", json::array({input(1)}),
                               json::array({output(1000, buffer("f64", like_input(0)))}),
                               field_expr_params());
  json project = chunk_template(
      "project", "uniform_projection_accumulate", json::array({input(1000)}),
      json::array({output(1001, buffer("f64", fixed({32, 32}), "zero"))}), projection_params());
  project["covered_boxes_ref"] = 0;
  // The target of most cases.
  json target = chunk_template("cube", "field_expr", json::array({input(1000)}),
                               json::array({output(1003, buffer("f64", like_input(0)))}),
                               field_expr_params());
  json reduce = chunk_template("sum", "uniform_slice_reduce", json::array({input(1001)}),
                               json::array({output(1002, buffer("f64", fixed({32, 32}), "zero"))}),
                               json::object());
  reduce["plane"] = "graph";
  reduce["graph_reduce"] = {{"fan_in", 2},
                            {"num_inputs", 4},
                            {"input_base", 0},
                            {"output_base", 0},
                            {"input_blocks", json::array()},
                            {"output_blocks", json::array()},
                            {"group_offsets", json::array()}};
  json stages = json::array();
  stages.push_back({{"name", "square"},
                    {"plane", "chunk"},
                    {"after", json::array()},
                    {"templates", json::array({square})}});
  stages.push_back({{"name", "project"},
                    {"plane", "chunk"},
                    {"after", json::array({0})},
                    {"templates", json::array({project, target})}});
  stages.push_back({{"name", "reduce"},
                    {"plane", "graph"},
                    {"after", json::array({1})},
                    {"templates", json::array({reduce})}});
  json cov = json::array();
  cov.push_back(json::array({json::array({json::array({0, 0, 0}), json::array({3, 3, 3})})}));
  cov.push_back(json::array());
  return {{"schema", "kangaroo.plan/1"}, {"stages", stages}, {"shared_covered_boxes", cov}};
}

json& target(json& doc) {
  return doc["stages"][1]["templates"][1];
}
json& target_output(json& doc) {
  return target(doc)["outputs"][0];
}
json& target_buffer(json& doc) {
  return target(doc)["outputs"][0]["buffer"];
}
json& graph_template(json& doc) {
  return doc["stages"][2]["templates"][0];
}
json& graph_spec(json& doc) {
  return graph_template(doc)["graph_reduce"];
}

// A valid parameter object per alternative: the required fields of PARAM-1.
json valid_params(const std::string& type) {
  json p = {{"type", type}};
  if (type == "PlotfileLoadParams") {
    p["plotfile"] = "plt00010";
  } else if (type == "FluxSurfaceParams") {
    p["radii"] = {0.25, 0.5};
    p["radius_indices"] = {0, 1};
    p["num_radii"] = 2;
  } else if (type == "CylindricalFluxParams") {
    p["radius"] = 0.5;
    p["heights"] = {0.1};
    p["height_indices"] = {0};
    p["num_heights"] = 1;
  } else if (type == "UniformSliceCellParams" || type == "UniformSliceParams") {
    p["coord"] = 0.5;
    p["rect"] = {0.0, 0.0, 1.0, 1.0};
    p["resolution"] = {16, 8};
  } else if (type == "UniformProjectionParams") {
    p["axis_bounds"] = {0.0, 1.0};
    p["rect"] = {0.0, 0.0, 1.0, 1.0};
    p["resolution"] = {16, 8};
  } else if (type == "FieldExprParams") {
    p["expression"] = "a+b";
    p["variables"] = {"a", "b"};
  } else if (type == "Histogram1DParams") {
    p["range"] = {0.0, 1.0};
  } else if (type == "Histogram2DParams") {
    p["x_range"] = {0.0, 1.0};
    p["y_range"] = {-1.0, 1.0};
    p["bins"] = {4, 5};
  } else if (type == "ParticleFieldParams") {
    p["particle_type"] = "electrons";
    p["field_name"] = "x";
  } else if (type == "ParticleCicGridParams") {
    p["particle_type"] = "electrons";
    p["axis_bounds"] = {0.0, 1.0};
  } else if (type == "ParticleCicProjectionParams") {
    p["particle_type"] = "electrons";
    p["axis_bounds"] = {0.0, 1.0};
    p["rect"] = {0.0, 0.0, 1.0, 1.0};
    p["resolution"] = {16, 8};
  } else if (type == "ValuesParams") {
    p["values"] = {1.0, 2.0};
  } else if (type == "ParticleHistogramParams") {
    p["edges"] = {0.0, 1.0, 2.0};
  } else if (type == "TopKModesParams") {
    p["k"] = 3;
  }
  return p;
}

// The 21 alternatives of PARAM-1 with a check that the decoded variant holds
// the matching struct.
using HoldsFn = bool (*)(const KernelParams&);
template <class P>
bool holds(const KernelParams& p) {
  return std::holds_alternative<P>(p);
}
const std::vector<std::pair<std::string, HoldsFn>>& alternatives() {
  static const std::vector<std::pair<std::string, HoldsFn>> list = {
      {"AmrSubboxPackParams", &holds<AmrSubboxPackParams>},
      {"GradStencilParams", &holds<GradStencilParams>},
      {"PlotfileLoadParams", &holds<PlotfileLoadParams>},
      {"FluxSurfaceParams", &holds<FluxSurfaceParams>},
      {"CylindricalFluxParams", &holds<CylindricalFluxParams>},
      {"ToomreProfileParams", &holds<ToomreProfileParams>},
      {"UniformSliceCellParams", &holds<UniformSliceCellParams>},
      {"UniformProjectionParams", &holds<UniformProjectionParams>},
      {"FieldExprParams", &holds<FieldExprParams>},
      {"UniformSliceParams", &holds<UniformSliceParams>},
      {"Histogram1DParams", &holds<Histogram1DParams>},
      {"Histogram2DParams", &holds<Histogram2DParams>},
      {"ParticleFieldParams", &holds<ParticleFieldParams>},
      {"ParticleCicGridParams", &holds<ParticleCicGridParams>},
      {"ParticleCicProjectionParams", &holds<ParticleCicProjectionParams>},
      {"ScalarParams", &holds<ScalarParams>},
      {"ValuesParams", &holds<ValuesParams>},
      {"FiniteOnlyParams", &holds<FiniteOnlyParams>},
      {"ParticleHistogramParams", &holds<ParticleHistogramParams>},
      {"TopKModesParams", &holds<TopKModesParams>},
      {"SliceFinalizeParams", &holds<SliceFinalizeParams>},
  };
  return list;
}

// ---------------------------------------------------------------------------
// Decode helpers

std::vector<PlanIssue> issues_of_text(const std::string& text) {
  try {
    (void)decode_plan(text);
  } catch (const PlanError& e) {
    return e.issues();
  }
  return {};
}

std::vector<PlanIssue> issues_of(const json& doc) {
  return issues_of_text(doc.dump());
}

std::string describe(const std::vector<PlanIssue>& issues) {
  std::ostringstream os;
  for (const auto& i : issues)
    os << "\n  [" << i.stage << "," << i.template_index << "] " << i.to_string();
  return os.str();
}

Plan decode_ok(const json& doc) {
  try {
    return decode_plan(doc.dump());
  } catch (const PlanError& e) {
    ADD_FAILURE() << "document rejected:" << describe(e.issues());
  } catch (const std::exception& e) {
    ADD_FAILURE() << "unexpected exception: " << e.what();
  }
  return Plan{};
}

const TaskTemplate& target_of(const Plan& p) {
  return p.stages.at(1).templates.at(1);
}

// ---------------------------------------------------------------------------
// Table-driven rejections

struct RejectCase {
  std::string name;
  std::function<void(json&)> mutate;
  std::string path;     // expected JSON pointer of one reported issue
  int stage = -1;       // expected stage of that issue
  int tmpl = -1;        // expected template of that issue
  bool prefix = false;  // path only pins the enclosing value
  std::string mention;  // text the issue must contain (PARAM-2)
};

void PrintTo(const RejectCase& c, std::ostream* os) {
  *os << c.name;
}

class PlanReject : public ::testing::TestWithParam<RejectCase> {};

TEST_P(PlanReject, IsRejectedWithPathStageAndTemplate) {
  const RejectCase& c = GetParam();
  json doc = base_plan();
  c.mutate(doc);
  std::vector<PlanIssue> issues;
  try {
    (void)decode_plan(doc.dump());
    FAIL() << "document was accepted:\n" << doc.dump(1);
  } catch (const PlanError& e) {
    issues = e.issues();
    EXPECT_EQ(e.kind(), ErrorKind::invalid_plan);
  } catch (const std::exception& e) {
    FAIL() << "expected PlanError, got: " << e.what();
  }
  ASSERT_FALSE(issues.empty());
  const PlanIssue* hit = nullptr;
  for (const auto& i : issues) {
    const bool match = c.prefix ? i.path.rfind(c.path, 0) == 0 : i.path == c.path;
    if (match) {
      hit = &i;
      break;
    }
  }
  ASSERT_NE(hit, nullptr) << "no issue at " << c.path << (c.prefix ? " (prefix)" : "")
                          << "; got:" << describe(issues);
  EXPECT_EQ(hit->stage, c.stage) << hit->to_string();
  EXPECT_EQ(hit->template_index, c.tmpl) << hit->to_string();
  EXPECT_FALSE(hit->message.empty());
  if (!c.mention.empty()) {
    EXPECT_NE(hit->to_string().find(c.mention), std::string::npos) << hit->to_string();
    EXPECT_NE(hit->message.find(c.mention), std::string::npos)
        << "message does not name '" << c.mention << "': " << hit->message;
  }
}

std::string case_name(const ::testing::TestParamInfo<RejectCase>& info) {
  return info.param.name;
}

RejectCase at_target(std::string name, std::function<void(json&)> m, const std::string& path,
                     bool prefix = false) {
  return {std::move(name), std::move(m), path, 1, 1, prefix, ""};
}
RejectCase at_graph(std::string name, std::function<void(json&)> m, const std::string& path,
                    bool prefix = false) {
  return {std::move(name), std::move(m), path, 2, 0, prefix, ""};
}
RejectCase at_stage1(std::string name, std::function<void(json&)> m, const std::string& path) {
  return {std::move(name), std::move(m), path, 1, -1, false, ""};
}
RejectCase at_root(std::string name, std::function<void(json&)> m, const std::string& path) {
  return {std::move(name), std::move(m), path, -1, -1, false, ""};
}

// VAL-1: missing required keys.
INSTANTIATE_TEST_SUITE_P(
    VAL1_MissingKey, PlanReject,
    ::testing::Values(
        at_root(
            "Schema", [](json& d) { d.erase("schema"); }, "/schema"),
        at_root(
            "Stages", [](json& d) { d.erase("stages"); }, "/stages"),
        at_stage1(
            "StageName", [](json& d) { d["stages"][1].erase("name"); }, "/stages/1/name"),
        at_target(
            "TemplateName", [](json& d) { target(d).erase("name"); }, kT + "/name"),
        at_target(
            "TemplateKernel", [](json& d) { target(d).erase("kernel"); }, kT + "/kernel"),
        at_target(
            "TemplateDomain", [](json& d) { target(d).erase("domain"); }, kT + "/domain"),
        at_target(
            "TemplateDeps", [](json& d) { target(d).erase("deps"); }, kT + "/deps"),
        at_target(
            "OutputBuffer", [](json& d) { target_output(d).erase("buffer"); },
            kT + "/outputs/0/buffer"),
        at_target(
            "DomainStep", [](json& d) { target(d)["domain"].erase("step"); }, kT + "/domain/step"),
        at_target(
            "DomainLevel", [](json& d) { target(d)["domain"].erase("level"); },
            kT + "/domain/level"),
        at_target(
            "InputField", [](json& d) { target(d)["inputs"][0].erase("field"); },
            kT + "/inputs/0/field"),
        at_target(
            "OutputField", [](json& d) { target_output(d).erase("field"); },
            kT + "/outputs/0/field"),
        at_target(
            "BufferDtype", [](json& d) { target_buffer(d).erase("dtype"); }, kB + "/dtype"),
        at_target(
            "BufferShape", [](json& d) { target_buffer(d).erase("shape"); }, kB + "/shape"),
        at_target(
            "ShapeKind", [](json& d) { target_buffer(d)["shape"].erase("kind"); },
            kB + "/shape/kind"),
        at_target(
            "FixedExtents",
            [](json& d) {
              target_buffer(d)["shape"] = {{"kind", "fixed"}};
            },
            kB + "/shape/extents"),
        at_target(
            "LikeInputIndex",
            [](json& d) {
              target_buffer(d)["shape"] = {{"kind", "like_input"}};
            },
            kB + "/shape/input_index"),
        at_target(
            "LiteralBoundValue",
            [](json& d) {
              target_buffer(d)["shape"] = dynamic({{"kind", "literal"}});
            },
            kB + "/shape/upper_bound/value"),
        at_target(
            "LikeInputBoundIndex",
            [](json& d) {
              target_buffer(d)["shape"] = dynamic({{"kind", "like_input"}});
            },
            kB + "/shape/upper_bound/input_index"),
        at_target(
            "BoundKind", [](json& d) { target_buffer(d)["shape"] = dynamic(json::object()); },
            kB + "/shape/upper_bound/kind"),
        at_graph(
            "GraphTemplateName", [](json& d) { graph_template(d).erase("name"); }, kG + "/name"),
        RejectCase{"FirstStageTemplateKernel",
                   [](json& d) { d["stages"][0]["templates"][0].erase("kernel"); },
                   "/stages/0/templates/0/kernel", 0, 0, false, ""}),
    case_name);

// VAL-1: non-object / non-array where one is required, and wrong scalar types.
INSTANTIATE_TEST_SUITE_P(
    VAL1_WrongType, PlanReject,
    ::testing::Values(
        at_root(
            "RootIsArray", [](json& d) { d = json::array({d}); }, ""),
        at_root(
            "RootIsString", [](json& d) { d = "plan"; }, ""),
        at_root(
            "StagesIsObject", [](json& d) { d["stages"] = json::object(); }, "/stages"),
        at_root(
            "StagesIsNull", [](json& d) { d["stages"] = nullptr; }, "/stages"),
        at_root(
            "SchemaIsNumber", [](json& d) { d["schema"] = 1; }, "/schema"),
        at_root(
            "SharedCoveredBoxesIsObject",
            [](json& d) { d["shared_covered_boxes"] = json::object(); }, "/shared_covered_boxes"),
        at_root(
            "CoverageListIsNumber", [](json& d) { d["shared_covered_boxes"][0] = 3; },
            "/shared_covered_boxes/0"),
        at_stage1(
            "StageIsNumber", [](json& d) { d["stages"][1] = 7; }, "/stages/1"),
        at_stage1(
            "StageNameIsNumber", [](json& d) { d["stages"][1]["name"] = 7; }, "/stages/1/name"),
        at_stage1(
            "AfterIsNumber", [](json& d) { d["stages"][1]["after"] = 0; }, "/stages/1/after"),
        at_stage1(
            "AfterIsObject",
            [](json& d) {
              d["stages"][1]["after"] = {{"0", 0}};
            },
            "/stages/1/after"),
        at_stage1(
            "AfterEntryIsString", [](json& d) { d["stages"][1]["after"] = {"0"}; },
            "/stages/1/after/0"),
        at_stage1(
            "TemplatesIsObject", [](json& d) { d["stages"][1]["templates"] = target(d); },
            "/stages/1/templates"),
        at_target(
            "TemplateIsString", [](json& d) { target(d) = "cube"; }, kT),
        at_target(
            "TemplateIsArray", [](json& d) { target(d) = json::array(); }, kT),
        at_target(
            "KernelIsNumber", [](json& d) { target(d)["kernel"] = 5; }, kT + "/kernel"),
        at_target(
            "DomainIsArray",
            [](json& d) {
              target(d)["domain"] = {0, 0};
            },
            kT + "/domain"),
        at_target(
            "StepIsFraction", [](json& d) { target(d)["domain"]["step"] = 1.5; },
            kT + "/domain/step"),
        at_target(
            "StepIsWholeFloat", [](json& d) { target(d)["domain"]["step"] = 1.0; },
            kT + "/domain/step"),
        at_target(
            "StepIsString", [](json& d) { target(d)["domain"]["step"] = "0"; },
            kT + "/domain/step"),
        at_target(
            "LevelNegative", [](json& d) { target(d)["domain"]["level"] = -1; },
            kT + "/domain/level"),
        at_target(
            "LevelBeyondInt16", [](json& d) { target(d)["domain"]["level"] = 32768; },
            kT + "/domain/level"),
        at_target(
            "BlocksIsNumber", [](json& d) { target(d)["domain"]["blocks"] = 3; },
            kT + "/domain/blocks"),
        at_target(
            "BlocksIsObject",
            [](json& d) {
              target(d)["domain"]["blocks"] = {{"b", 1}};
            },
            kT + "/domain/blocks"),
        at_target(
            "BlockEntryIsString",
            [](json& d) {
              target(d)["domain"]["blocks"] = {0, "1"};
            },
            kT + "/domain/blocks/1"),
        at_target(
            "InputsIsObject", [](json& d) { target(d)["inputs"] = input(1000); }, kT + "/inputs"),
        at_target(
            "InputIsNumber", [](json& d) { target(d)["inputs"][0] = 1000; }, kT + "/inputs/0"),
        at_target(
            "InputFieldBeyondInt32",
            [](json& d) { target(d)["inputs"][0]["field"] = 2147483648LL; },
            kT + "/inputs/0/field"),
        at_target(
            "InputDomainIsNumber", [](json& d) { target(d)["inputs"][0]["domain"] = 5; },
            kT + "/inputs/0/domain"),
        at_target(
            "InputDomainBlocksIsString",
            [](json& d) {
              target(d)["inputs"][0]["domain"] = {{"step", 0}, {"level", 0}, {"blocks", "all"}};
            },
            kT + "/inputs/0/domain/blocks"),
        at_target(
            "OutputsIsObject", [](json& d) { target(d)["outputs"] = target_output(d); },
            kT + "/outputs"),
        at_target(
            "OutputIsArray", [](json& d) { target_output(d) = json::array(); }, kT + "/outputs/0"),
        at_target(
            "BufferIsString", [](json& d) { target_output(d)["buffer"] = "f64"; }, kB),
        at_target(
            "ShapeIsString", [](json& d) { target_buffer(d)["shape"] = "block"; }, kB + "/shape"),
        at_target(
            "ExtentsIsNumber",
            [](json& d) {
              target_buffer(d)["shape"] = {{"kind", "fixed"}, {"extents", 4}};
            },
            kB + "/shape/extents"),
        at_target(
            "ExtentsIsObject",
            [](json& d) {
              target_buffer(d)["shape"] = {{"kind", "fixed"}, {"extents", {{"n", 4}}}};
            },
            kB + "/shape/extents"),
        at_target(
            "UpperBoundIsNumber", [](json& d) { target_buffer(d)["shape"] = dynamic(5); },
            kB + "/shape/upper_bound"),
        at_target(
            "DepsIsArray", [](json& d) { target(d)["deps"] = json::array(); }, kT + "/deps"),
        at_target(
            "DepsIsNull", [](json& d) { target(d)["deps"] = nullptr; }, kT + "/deps"),
        at_target(
            "FacesIsBool", [](json& d) { target(d)["deps"]["faces"] = true; }, kT + "/deps/faces"),
        at_target(
            "FacesIsObject",
            [](json& d) {
              target(d)["deps"]["faces"] = {{"Xm", true}};
            },
            kT + "/deps/faces"),
        at_target(
            "HaloInputsIsNumber", [](json& d) { target(d)["deps"]["halo_inputs"] = 0; },
            kT + "/deps/halo_inputs"),
        at_target(
            "ParamsIsArray", [](json& d) { target(d)["params"] = {1}; }, kT + "/params"),
        at_target(
            "ParamsIsString", [](json& d) { target(d)["params"] = "FieldExprParams"; },
            kT + "/params"),
        at_target(
            "CoveredRefIsString", [](json& d) { target(d)["covered_boxes_ref"] = "0"; },
            kT + "/covered_boxes_ref"),
        at_graph(
            "GraphReduceIsNumber", [](json& d) { graph_template(d)["graph_reduce"] = 4; }, kGR),
        at_graph(
            "InputBlocksIsNumber", [](json& d) { graph_spec(d)["input_blocks"] = 0; },
            kGR + "/input_blocks"),
        at_graph(
            "OutputBlocksIsObject",
            [](json& d) { graph_spec(d)["output_blocks"] = json::object(); },
            kGR + "/output_blocks"),
        at_graph(
            "GroupOffsetsIsString", [](json& d) { graph_spec(d)["group_offsets"] = "0,2,4"; },
            kGR + "/group_offsets"),
        at_graph(
            "FanInIsString", [](json& d) { graph_spec(d)["fan_in"] = "2"; }, kGR + "/fan_in")),
    case_name);

// VAL-2: unknown labels.
INSTANTIATE_TEST_SUITE_P(
    VAL2_UnknownLabel, PlanReject,
    ::testing::Values(
        at_stage1(
            "StagePlane", [](json& d) { d["stages"][1]["plane"] = "pipeline"; }, "/stages/1/plane"),
        at_target(
            "TemplatePlane", [](json& d) { target(d)["plane"] = "vector"; }, kT + "/plane"),
        at_target(
            "DependencyKind", [](json& d) { target(d)["deps"]["kind"] = "EdgeNeighbors"; },
            kT + "/deps/kind"),
        at_target(
            "DtypeF16", [](json& d) { target_buffer(d)["dtype"] = "f16"; }, kB + "/dtype"),
        at_target(
            "DtypeInt32", [](json& d) { target_buffer(d)["dtype"] = "int32"; }, kB + "/dtype"),
        at_target(
            "DtypeComplex", [](json& d) { target_buffer(d)["dtype"] = "complex128"; },
            kB + "/dtype"),
        at_target(
            "ShapeKind",
            [](json& d) {
              target_buffer(d)["shape"] = {{"kind", "ragged"}};
            },
            kB + "/shape/kind"),
        at_target(
            "BoundKind",
            [](json& d) {
              target_buffer(d)["shape"] = dynamic({{"kind", "guess"}});
            },
            kB + "/shape/upper_bound/kind"),
        at_target(
            "InitPolicy", [](json& d) { target_buffer(d)["init"] = "ones"; }, kB + "/init"),
        at_target(
            "ParamAlternative",
            [](json& d) {
              target(d)["params"] = {{"type", "MagicParams"}};
            },
            kT + "/params/type"),
        at_target(
            "ParamAlternativeLowercase",
            [](json& d) { target(d)["params"] = valid_params("scalarparams"); },
            kT + "/params/type")),
    case_name);

json faces_with(std::size_t index, json value) {
  json f = all_faces();
  f[index] = std::move(value);
  return f;
}

// VAL-3 and the PLAN-7 width rule.
INSTANTIATE_TEST_SUITE_P(
    VAL3_Faces, PlanReject,
    ::testing::Values(
        at_target(
            "FiveFaces",
            [](json& d) {
              target(d)["deps"]["faces"] = {true, true, true, true, true};
            },
            kT + "/deps/faces"),
        at_target(
            "SevenFaces", [](json& d) { target(d)["deps"]["faces"] = {1, 1, 1, 1, 1, 1, 1}; },
            kT + "/deps/faces"),
        at_target(
            "NoFaces", [](json& d) { target(d)["deps"]["faces"] = json::array(); },
            kT + "/deps/faces"),
        at_target(
            "FaceIsString", [](json& d) { target(d)["deps"]["faces"] = faces_with(2, "yes"); },
            kT + "/deps/faces/2"),
        at_target(
            "FaceIsTwo", [](json& d) { target(d)["deps"]["faces"] = faces_with(4, 2); },
            kT + "/deps/faces/4"),
        at_target(
            "FaceIsMinusOne", [](json& d) { target(d)["deps"]["faces"] = faces_with(5, -1); },
            kT + "/deps/faces/5"),
        at_target(
            "FaceIsNull", [](json& d) { target(d)["deps"]["faces"] = faces_with(0, nullptr); },
            kT + "/deps/faces/0"),
        at_target(
            "FaceIsFraction", [](json& d) { target(d)["deps"]["faces"] = faces_with(1, 0.5); },
            kT + "/deps/faces/1"),
        at_target(
            "HaloInputIsString", [](json& d) { target(d)["deps"]["halo_inputs"] = {"0"}; },
            kT + "/deps/halo_inputs/0"),
        at_target(
            "HaloInputIsFraction",
            [](json& d) {
              target(d)["deps"]["halo_inputs"] = {0, 0.5};
            },
            kT + "/deps/halo_inputs/1"),
        at_target(
            "HaloInputIsBool", [](json& d) { target(d)["deps"]["halo_inputs"] = {true}; },
            kT + "/deps/halo_inputs/0"),
        at_target(
            "NegativeWidth", [](json& d) { target(d)["deps"]["width"] = -1; }, kT + "/deps/width")),
    case_name);

// VAL-4.
INSTANTIATE_TEST_SUITE_P(
    VAL4_Neighbors, PlanReject,
    ::testing::Values(
        at_target(
            "FaceNeighborsWithEmptyInputs",
            [](json& d) {
              target(d)["deps"]["kind"] = "FaceNeighbors";
              target(d)["inputs"] = json::array();
            },
            kT, true),
        at_target(
            "FaceNeighborsWithoutInputsKey",
            [](json& d) {
              target(d)["deps"] = {{"kind", "FaceNeighbors"}, {"width", 1}};
              target(d).erase("inputs");
            },
            kT, true),
        at_target(
            "HaloIndexEqualsInputCount",
            [](json& d) {
              target(d)["deps"] = {
                  {"kind", "FaceNeighbors"}, {"width", 1}, {"halo_inputs", {0, 1}}};
            },
            kT + "/deps/halo_inputs/1"),
        at_target(
            "HaloIndexNegative",
            [](json& d) {
              target(d)["deps"] = {{"kind", "FaceNeighbors"}, {"width", 1}, {"halo_inputs", {-1}}};
            },
            kT + "/deps/halo_inputs/0"),
        at_target(
            "HaloIndexOutOfRangeWithKindNone",
            [](json& d) { target(d)["deps"]["halo_inputs"] = {3}; }, kT + "/deps/halo_inputs/0")),
    case_name);

// VAL-5 and the PARAM-2 coverage box rule.
INSTANTIATE_TEST_SUITE_P(
    VAL5_CoverageRef, PlanReject,
    ::testing::Values(at_target(
                          "RefEqualsListCount", [](json& d) { target(d)["covered_boxes_ref"] = 2; },
                          kT + "/covered_boxes_ref"),
                      at_target(
                          "RefBelowMinusOne", [](json& d) { target(d)["covered_boxes_ref"] = -2; },
                          kT + "/covered_boxes_ref"),
                      at_target(
                          "RefWithoutSharedLists",
                          [](json& d) {
                            d.erase("shared_covered_boxes");
                            d["stages"][1]["templates"][0]["covered_boxes_ref"] = -1;
                            target(d)["covered_boxes_ref"] = 0;
                          },
                          kT + "/covered_boxes_ref"),
                      RejectCase{"BoxCornerWithTwoEntries",
                                 [](json& d) {
                                   d["shared_covered_boxes"][0][0] = {{0, 0}, {3, 3, 3}};
                                 },
                                 "/shared_covered_boxes/0/0", -1, -1, true, ""},
                      RejectCase{"BoxCornerWithFourEntries",
                                 [](json& d) {
                                   d["shared_covered_boxes"][0][0] = {{0, 0, 0}, {3, 3, 3, 3}};
                                 },
                                 "/shared_covered_boxes/0/0", -1, -1, true, ""},
                      RejectCase{
                          "BoxWithThreeCorners",
                          [](json& d) {
                            d["shared_covered_boxes"][0][0] = {{0, 0, 0}, {3, 3, 3}, {4, 4, 4}};
                          },
                          "/shared_covered_boxes/0/0", -1, -1, true, ""}),
    case_name);

// VAL-6.
INSTANTIATE_TEST_SUITE_P(
    VAL6_GraphSpec, PlanReject,
    ::testing::Values(at_graph(
                          "Missing", [](json& d) { graph_template(d).erase("graph_reduce"); }, kGR),
                      at_graph(
                          "Null", [](json& d) { graph_template(d)["graph_reduce"] = nullptr; },
                          kGR)),
    case_name);

// VAL-7.
INSTANTIATE_TEST_SUITE_P(
    VAL7_ReduceSpec, PlanReject,
    ::testing::Values(
        at_graph(
            "FanInZero", [](json& d) { graph_spec(d)["fan_in"] = 0; }, kGR + "/fan_in"),
        at_graph(
            "FanInNegative", [](json& d) { graph_spec(d)["fan_in"] = -3; }, kGR + "/fan_in"),
        at_graph(
            "NumInputsZero", [](json& d) { graph_spec(d)["num_inputs"] = 0; }, kGR + "/num_inputs"),
        at_graph(
            "NumInputsNegative", [](json& d) { graph_spec(d)["num_inputs"] = -4; },
            kGR + "/num_inputs"),
        at_graph(
            "NumInputsMissing", [](json& d) { graph_spec(d).erase("num_inputs"); },
            kGR + "/num_inputs"),
        at_graph(
            "InputBlocksTooFew",
            [](json& d) {
              graph_spec(d)["input_blocks"] = {0, 1, 2};
            },
            kGR + "/input_blocks"),
        at_graph(
            "InputBlocksTooMany",
            [](json& d) {
              graph_spec(d)["input_blocks"] = {0, 1, 2, 3, 4};
            },
            kGR + "/input_blocks"),
        at_graph(
            "OffsetsNotStartingAtZero",
            [](json& d) {
              graph_spec(d)["group_offsets"] = {1, 2, 4};
            },
            kGR + "/group_offsets"),
        at_graph(
            "OffsetsEndingBelowNumInputs",
            [](json& d) {
              graph_spec(d)["group_offsets"] = {0, 2, 3};
            },
            kGR + "/group_offsets"),
        at_graph(
            "OffsetsEndingAboveNumInputs",
            [](json& d) {
              graph_spec(d)["group_offsets"] = {0, 2, 5};
            },
            kGR + "/group_offsets"),
        at_graph(
            "OffsetsRepeated",
            [](json& d) {
              graph_spec(d)["group_offsets"] = {0, 2, 2, 4};
            },
            kGR + "/group_offsets"),
        at_graph(
            "OffsetsDecreasing",
            [](json& d) {
              graph_spec(d)["group_offsets"] = {0, 3, 1, 4};
            },
            kGR + "/group_offsets"),
        at_graph(
            "OffsetsSingleZero", [](json& d) { graph_spec(d)["group_offsets"] = {0}; },
            kGR + "/group_offsets"),
        at_graph(
            "OffsetsSingleNumInputs", [](json& d) { graph_spec(d)["group_offsets"] = {4}; },
            kGR + "/group_offsets"),
        at_graph(
            "OutputBlocksShortOfOffsetGroups",
            [](json& d) {
              graph_spec(d)["group_offsets"] = {0, 2, 4};
              graph_spec(d)["output_blocks"] = {10};
            },
            kGR + "/output_blocks"),
        at_graph(
            "OutputBlocksBeyondOffsetGroups",
            [](json& d) {
              graph_spec(d)["fan_in"] = 1;  // 4 groups by fan_in, but the offsets make 2
              graph_spec(d)["group_offsets"] = {0, 2, 4};
              graph_spec(d)["output_blocks"] = {10, 20, 30, 40};
            },
            kGR + "/output_blocks"),
        at_graph(
            "OutputBlocksShortOfFanInGroups",
            [](json& d) {
              graph_spec(d)["fan_in"] = 2;
              graph_spec(d)["num_inputs"] = 5;  // ceil(5/2) = 3 groups
              graph_spec(d)["output_blocks"] = {1, 2};
            },
            kGR + "/output_blocks"),
        at_graph(
            "OutputBlocksBeyondFanInGroups",
            [](json& d) {
              graph_spec(d)["fan_in"] = 2;
              graph_spec(d)["num_inputs"] = 5;
              graph_spec(d)["output_blocks"] = {1, 2, 3, 4};
            },
            kGR + "/output_blocks"),
        // A huge input count must be refused without arithmetic overflow while
        // the group count is worked out for the output_blocks check.
        at_graph(
            "HugeNumInputsWithOutputBlocks",
            [](json& d) {
              graph_spec(d)["fan_in"] = 2;
              graph_spec(d)["num_inputs"] = std::numeric_limits<std::int64_t>::max();
              graph_spec(d)["output_blocks"] = {0};
            },
            kGR, true)),
    case_name);

// VAL-8 (buffer specifications, PLAN-10).
INSTANTIATE_TEST_SUITE_P(
    VAL8_Buffer, PlanReject,
    ::testing::Values(
        at_target(
            "BlockComponentsZero",
            [](json& d) {
              target_buffer(d)["shape"] = {{"kind", "block"}, {"components", 0}};
            },
            kB + "/shape/components"),
        at_target(
            "BlockComponentsNegative",
            [](json& d) {
              target_buffer(d)["shape"] = {{"kind", "block"}, {"components", -2}};
            },
            kB + "/shape/components"),
        at_target(
            "FixedRankZero", [](json& d) { target_buffer(d)["shape"] = fixed({}); },
            kB + "/shape/extents"),
        at_target(
            "FixedRankFive",
            [](json& d) {
              target_buffer(d)["shape"] = fixed({1, 1, 1, 1, 1});
            },
            kB + "/shape/extents"),
        at_target(
            "FixedExtentZero",
            [](json& d) {
              target_buffer(d)["shape"] = fixed({4, 0});
            },
            kB + "/shape/extents", true),
        at_target(
            "FixedExtentNegative", [](json& d) { target_buffer(d)["shape"] = fixed({-3}); },
            kB + "/shape/extents", true),
        at_target(
            "FixedExtentFraction",
            [](json& d) {
              target_buffer(d)["shape"] = {{"kind", "fixed"}, {"extents", {2.5}}};
            },
            kB + "/shape/extents", true),
        at_target(
            "LikeInputNegative", [](json& d) { target_buffer(d)["shape"] = like_input(-1); },
            kB + "/shape/input_index"),
        at_target(
            "DynamicWithoutBound",
            [](json& d) {
              target_buffer(d)["shape"] = {{"kind", "dynamic"}};
            },
            kB + "/shape/upper_bound"),
        at_target(
            "DynamicWithNullBound", [](json& d) { target_buffer(d)["shape"] = dynamic(nullptr); },
            kB + "/shape/upper_bound", true),
        at_target(
            "LiteralBoundNegative",
            [](json& d) {
              target_buffer(d)["shape"] = dynamic({{"kind", "literal"}, {"value", -1}});
            },
            kB + "/shape/upper_bound/value"),
        at_target(
            "LikeInputBoundNegative",
            [](json& d) {
              target_buffer(d)["shape"] = dynamic({{"kind", "like_input"}, {"input_index", -1}});
            },
            kB + "/shape/upper_bound/input_index"),
        at_target(
            "BackendChunkBoundNegative",
            [](json& d) {
              target_buffer(d)["shape"] = dynamic({{"kind", "backend_chunk"}, {"input_index", -2}});
            },
            kB + "/shape/upper_bound/input_index")),
    case_name);

// PLAN-11.
INSTANTIATE_TEST_SUITE_P(
    PLAN11_Opaque, PlanReject,
    ::testing::Values(
        at_target(
            "OpaqueBlock",
            [](json& d) {
              target_buffer(d) = buffer("opaque", {{"kind", "block"}, {"components", 1}});
            },
            kB, true),
        at_target(
            "OpaqueLikeInput", [](json& d) { target_buffer(d) = buffer("opaque", like_input(0)); },
            kB, true),
        at_target(
            "OpaqueFixedRankTwo",
            [](json& d) {
              target_buffer(d) = buffer("opaque", fixed({4, 4}));
            },
            kB, true)),
    case_name);

RejectCase legacy_on_output(const char* key) {
  return at_target(
      std::string("OutputKey_") + key, [key](json& d) { target_output(d)[key] = 64; },
      kT + "/outputs/0/" + key);
}
RejectCase legacy_in_buffer(const char* key) {
  return at_target(
      std::string("BufferKey_") + key, [key](json& d) { target_buffer(d)[key] = 64; },
      kB + "/" + key);
}

// PLAN-12: the byte-size keys older encoders wrote.
INSTANTIATE_TEST_SUITE_P(
    PLAN12_LegacyByteSize, PlanReject,
    ::testing::Values(legacy_on_output("bytes"), legacy_on_output("byte_size"),
                      legacy_on_output("nbytes"), legacy_on_output("size_bytes"),
                      legacy_on_output("output_bytes"), legacy_in_buffer("bytes"),
                      legacy_in_buffer("byte_size"), legacy_in_buffer("nbytes"),
                      legacy_in_buffer("size_bytes"), legacy_in_buffer("output_bytes"),
                      at_target(
                          "BytesInsteadOfBuffer",
                          [](json& d) {
                            target_output(d).erase("buffer");
                            target_output(d)["bytes"] = 8192;
                          },
                          kT + "/outputs/0/buffer")),
    case_name);

// PLAN-15 / ERR-3.
INSTANTIATE_TEST_SUITE_P(
    PLAN15_Schema, PlanReject,
    ::testing::Values(
        at_root(
            "NextRevision", [](json& d) { d["schema"] = "kangaroo.plan/2"; }, "/schema"),
        at_root(
            "OlderRevision", [](json& d) { d["schema"] = "kangaroo.plan/0"; }, "/schema"),
        at_root(
            "Uppercase", [](json& d) { d["schema"] = "KANGAROO.PLAN/1"; }, "/schema"),
        at_root(
            "Empty", [](json& d) { d["schema"] = ""; }, "/schema"),
        at_root(
            "Padded", [](json& d) { d["schema"] = "kangaroo.plan/1 "; }, "/schema")),
    case_name);

RejectCase wrong_length(const std::string& type, const std::string& field, json value) {
  RejectCase c = at_target(
      type + "_" + field,
      [type, field, value](json& d) {
        json p = valid_params(type);
        p[field] = value;
        target(d)["params"] = p;
      },
      kT + "/params/" + field);
  c.mention = field;
  return c;
}

// PARAM-2: fixed-length arrays of the wrong length name the parameter.
INSTANTIATE_TEST_SUITE_P(
    PARAM2_FixedLength, PlanReject,
    ::testing::Values(wrong_length("UniformProjectionParams", "rect", {0.0, 0.0, 1.0}),
                      wrong_length("UniformProjectionParams", "axis_bounds", {0.0}),
                      wrong_length("UniformProjectionParams", "resolution", {32, 32, 1}),
                      wrong_length("UniformSliceCellParams", "rect", {0.0, 0.0, 1.0, 1.0, 2.0}),
                      wrong_length("UniformSliceCellParams", "resolution", {8}),
                      wrong_length("UniformSliceParams", "resolution", json::array()),
                      wrong_length("ToomreProfileParams", "z_bounds", {-1.0, 0.0, 1.0}),
                      wrong_length("ToomreProfileParams", "center", {0.0, 0.0}),
                      wrong_length("Histogram1DParams", "range", {0.0}),
                      wrong_length("Histogram2DParams", "x_range", {0.0, 1.0, 2.0}),
                      wrong_length("Histogram2DParams", "y_range", {1.0}),
                      wrong_length("Histogram2DParams", "bins", {4}),
                      wrong_length("ParticleCicGridParams", "axis_bounds", {0.0, 1.0, 2.0}),
                      wrong_length("ParticleCicProjectionParams", "rect", {0.0, 1.0}),
                      wrong_length("ParticleCicProjectionParams", "resolution", 16)),
    case_name);

RejectCase param_case(const std::string& name, json params, const std::string& field) {
  return at_target(
      name, [params](json& d) { target(d)["params"] = params; }, kT + "/params/" + field);
}
json with(json p, const std::string& key, json value) {
  p[key] = std::move(value);
  return p;
}
json without(json p, const std::string& key) {
  p.erase(key);
  return p;
}

// PARAM-3 and the typing of parameter fields.
INSTANTIATE_TEST_SUITE_P(
    PARAM3_Typed, PlanReject,
    ::testing::Values(
        param_case("NoDiscriminator", {{"scalar", 1.0}}, "type"),
        param_case("DiscriminatorIsNumber", {{"type", 16}}, "type"),
        param_case("DiscriminatorIsNull", {{"type", nullptr}, {"scalar", 1.0}}, "type"),
        param_case("UnknownField", with(valid_params("ScalarParams"), "scale", 2.0), "scale"),
        param_case("FieldOfOtherAlternative", with(valid_params("ScalarParams"), "values", {1.0}),
                   "values"),
        param_case("ScalarIsString", with(valid_params("ScalarParams"), "scalar", "1"), "scalar"),
        param_case("FiniteOnlyIsTwo", with(valid_params("FiniteOnlyParams"), "finite_only", 2),
                   "finite_only"),
        param_case("NumRadiiNegative", with(valid_params("FluxSurfaceParams"), "num_radii", -1),
                   "num_radii"),
        param_case("ValuesIsNumber", with(valid_params("ValuesParams"), "values", 1.0), "values"),
        param_case("KIsFraction", with(valid_params("TopKModesParams"), "k", 2.5), "k"),
        at_target(
            "VariableIsNumber",
            [](json& d) {
              target(d)["params"] = with(valid_params("FieldExprParams"), "variables", {1});
            },
            kT + "/params/variables", true),
        param_case("ExpressionMissing", without(valid_params("FieldExprParams"), "expression"),
                   "expression"),
        param_case("KMissing", without(valid_params("TopKModesParams"), "k"), "k")),
    case_name);

// ---------------------------------------------------------------------------
// Acceptance, defaults and decoded structure

TEST(PlanDecode, BaselineDocumentDecodes) {
  const Plan p = decode_ok(base_plan());
  EXPECT_EQ(p.schema, "kangaroo.plan/1");
  ASSERT_EQ(p.stages.size(), 3u);
  EXPECT_EQ(p.stages[0].name, "square");
  EXPECT_EQ(p.stages[1].name, "project");
  EXPECT_EQ(p.stages[2].name, "reduce");
  EXPECT_EQ(p.stages[2].plane, Plane::graph);
  EXPECT_EQ(p.stages[1].after, std::vector<std::int32_t>{0});
  EXPECT_EQ(p.stages[2].after, std::vector<std::int32_t>{1});
  ASSERT_EQ(p.stages[1].templates.size(), 2u);
  const TaskTemplate& proj = p.stages[1].templates[0];
  EXPECT_EQ(proj.kernel, "uniform_projection_accumulate");
  EXPECT_EQ(proj.covered_boxes_ref, 0);
  ASSERT_TRUE(std::holds_alternative<UniformProjectionParams>(proj.params));
  const auto& pp = std::get<UniformProjectionParams>(proj.params);
  EXPECT_EQ(pp.axis, 2);
  EXPECT_EQ(pp.axis_bounds, (std::array<double, 2>{0.0, 0.5}));
  EXPECT_EQ(pp.rect, (std::array<double, 4>{0.0, 0.0, 1.0, 1.0}));
  EXPECT_EQ(pp.resolution, (std::array<std::int64_t, 2>{32, 32}));
  ASSERT_EQ(proj.outputs.size(), 1u);
  EXPECT_EQ(proj.outputs[0].field, 1001);
  EXPECT_EQ(proj.outputs[0].buffer.dtype, ScalarType::f64);
  EXPECT_EQ(proj.outputs[0].buffer.shape, ShapeKind::fixed);
  EXPECT_EQ(proj.outputs[0].buffer.extents, (std::vector<std::uint64_t>{32, 32}));
  EXPECT_EQ(proj.outputs[0].buffer.init, InitPolicy::zero);
  const TaskTemplate& t = target_of(p);
  EXPECT_EQ(t.name, "cube");
  ASSERT_TRUE(std::holds_alternative<FieldExprParams>(t.params));
  EXPECT_EQ(std::get<FieldExprParams>(t.params).expression, "rho*rho");
  EXPECT_EQ(std::get<FieldExprParams>(t.params).variables, std::vector<std::string>{"rho"});
  ASSERT_EQ(t.inputs.size(), 1u);
  EXPECT_EQ(t.inputs[0].field, 1000);
  EXPECT_FALSE(t.inputs[0].domain.has_value());
  EXPECT_EQ(t.outputs[0].buffer.shape, ShapeKind::like_input);
  EXPECT_EQ(t.outputs[0].buffer.input_index, 0);
  const TaskTemplate& g = p.stages[2].templates[0];
  EXPECT_EQ(g.plane, Plane::graph);
  ASSERT_TRUE(g.graph_reduce.has_value());
  EXPECT_EQ(g.graph_reduce->fan_in, 2);
  EXPECT_EQ(g.graph_reduce->num_inputs, 4);
  EXPECT_TRUE(std::holds_alternative<std::monostate>(g.params));
  ASSERT_EQ(p.shared_covered_boxes.size(), 2u);
  ASSERT_EQ(p.shared_covered_boxes[0].size(), 1u);
  EXPECT_EQ(p.shared_covered_boxes[0][0].lo, (std::array<std::int32_t, 3>{0, 0, 0}));
  EXPECT_EQ(p.shared_covered_boxes[0][0].hi, (std::array<std::int32_t, 3>{3, 3, 3}));
  EXPECT_TRUE(p.shared_covered_boxes[1].empty());
}

TEST(PlanDecode, ZeroStagesIsValid) {
  const Plan p = decode_ok({{"schema", "kangaroo.plan/1"}, {"stages", json::array()}});
  EXPECT_TRUE(p.stages.empty());
  EXPECT_TRUE(p.shared_covered_boxes.empty());
}

TEST(PlanDecode, SharedCoveredBoxesDefaultsToEmpty) {
  json doc = {
      {"schema", "kangaroo.plan/1"}, {"stages", json::array()}, {"shared_covered_boxes", nullptr}};
  EXPECT_TRUE(decode_ok(doc).shared_covered_boxes.empty());
}

TEST(PlanDecode, StageOptionalKeysDefault) {
  json doc = base_plan();
  doc["stages"][1] = {{"name", "bare"}};
  doc["stages"][2]["after"] = json::array();
  const Plan p = decode_ok(doc);
  const Stage& s = p.stages.at(1);
  EXPECT_EQ(s.name, "bare");
  EXPECT_EQ(s.plane, Plane::chunk);
  EXPECT_TRUE(s.after.empty());
  EXPECT_TRUE(s.templates.empty());
}

TEST(PlanDecode, TemplateOptionalKeysDefault) {
  json doc = base_plan();
  target(doc) = {{"name", "bare"},
                 {"kernel", "uniform_slice_add"},
                 {"domain", {{"step", 3}, {"level", 1}}},
                 {"deps", json::object()}};
  const Plan p = decode_ok(doc);
  const TaskTemplate& t = target_of(p);
  EXPECT_EQ(t.name, "bare");
  EXPECT_EQ(t.kernel, "uniform_slice_add");
  EXPECT_EQ(t.plane, Plane::chunk);
  EXPECT_EQ(t.domain.step, 3);
  EXPECT_EQ(t.domain.level, 1);
  EXPECT_FALSE(t.domain.blocks.has_value());
  EXPECT_TRUE(t.inputs.empty());
  EXPECT_TRUE(t.outputs.empty());
  EXPECT_TRUE(std::holds_alternative<std::monostate>(t.params));
  EXPECT_EQ(t.covered_boxes_ref, -1);
  EXPECT_FALSE(t.graph_reduce.has_value());
}

TEST(PlanDecode, DepsDefaultsFollowPlan7) {
  json doc = base_plan();
  target(doc)["deps"] = json::object();
  const Plan p = decode_ok(doc);
  const DepRule& d = target_of(p).deps;
  EXPECT_EQ(d.kind, DepKind::none);
  EXPECT_EQ(d.width, 0);
  EXPECT_EQ(d.faces, (std::array<bool, 6>{true, true, true, true, true, true}));
  EXPECT_TRUE(d.halo_inputs.empty());
}

TEST(PlanDecode, InitDefaultsToUninitialized) {
  json doc = base_plan();
  target_buffer(doc).erase("init");
  EXPECT_EQ(target_of(decode_ok(doc)).outputs[0].buffer.init, InitPolicy::uninitialized);
  target_buffer(doc)["init"] = nullptr;
  EXPECT_EQ(target_of(decode_ok(doc)).outputs[0].buffer.init, InitPolicy::uninitialized);
  target_buffer(doc)["init"] = "zero";
  EXPECT_EQ(target_of(decode_ok(doc)).outputs[0].buffer.init, InitPolicy::zero);
  target_buffer(doc)["init"] = "uninitialized";
  EXPECT_EQ(target_of(decode_ok(doc)).outputs[0].buffer.init, InitPolicy::uninitialized);
}

TEST(PlanDecode, VersionDefaultsToZero) {
  json doc = base_plan();
  target(doc)["inputs"][0].erase("version");
  target(doc)["inputs"][0].erase("domain");
  target_output(doc).erase("version");
  const Plan p = decode_ok(doc);
  const TaskTemplate& t = target_of(p);
  EXPECT_EQ(t.inputs[0].version, 0);
  EXPECT_FALSE(t.inputs[0].domain.has_value());
  EXPECT_EQ(t.outputs[0].version, 0);
}

TEST(PlanDecode, ExplicitVersionsAreKept) {
  json doc = base_plan();
  target(doc)["inputs"][0]["version"] = 7;
  target_output(doc)["version"] = 9;
  const Plan p = decode_ok(doc);
  const TaskTemplate& t = target_of(p);
  EXPECT_EQ(t.inputs[0].version, 7);
  EXPECT_EQ(t.outputs[0].version, 9);
}

TEST(PlanDecode, DomainBlocksPlan4) {
  json doc = base_plan();
  target(doc)["domain"].erase("blocks");
  EXPECT_FALSE(target_of(decode_ok(doc)).domain.blocks.has_value());
  target(doc)["domain"]["blocks"] = nullptr;
  EXPECT_FALSE(target_of(decode_ok(doc)).domain.blocks.has_value());
  target(doc)["domain"]["blocks"] = json::array();
  {
    const Plan p = decode_ok(doc);
    ASSERT_TRUE(target_of(p).domain.blocks.has_value());
    EXPECT_TRUE(target_of(p).domain.blocks->empty());
  }
  target(doc)["domain"]["blocks"] = {3, 1, 3};
  {
    const Plan p = decode_ok(doc);
    ASSERT_TRUE(target_of(p).domain.blocks.has_value());
    EXPECT_EQ(*target_of(p).domain.blocks, (std::vector<std::int32_t>{3, 1, 3}));
  }
  target(doc)["domain"]["level"] = 32767;
  EXPECT_EQ(target_of(decode_ok(doc)).domain.level, 32767);
}

TEST(PlanDecode, InputDomainOverridePlan5) {
  json doc = base_plan();
  target(doc)["inputs"][0]["domain"] = {{"step", 4}, {"level", 2}, {"blocks", {0}}};
  target(doc)["inputs"].push_back({{"field", 1001}, {"domain", {{"step", 5}, {"level", 0}}}});
  const Plan p = decode_ok(doc);
  const TaskTemplate& t = target_of(p);
  ASSERT_EQ(t.inputs.size(), 2u);
  ASSERT_TRUE(t.inputs[0].domain.has_value());
  EXPECT_EQ(t.inputs[0].domain->step, 4);
  EXPECT_EQ(t.inputs[0].domain->level, 2);
  ASSERT_TRUE(t.inputs[0].domain->blocks.has_value());
  EXPECT_EQ(*t.inputs[0].domain->blocks, std::vector<std::int32_t>{0});
  ASSERT_TRUE(t.inputs[1].domain.has_value());
  EXPECT_EQ(t.inputs[1].domain->step, 5);
  EXPECT_FALSE(t.inputs[1].domain->blocks.has_value());
}

TEST(PlanDecode, NegativeFieldIdsDecode) {
  // Field identity is an int32 (CHUNK-1); negative ids are an SDK allocation
  // concern (CHUNK-4), not a decode error.
  json doc = base_plan();
  target(doc)["inputs"][0]["field"] = -5;
  target(doc)["domain"]["step"] = -2;
  const Plan p = decode_ok(doc);
  const TaskTemplate& t = target_of(p);
  EXPECT_EQ(t.inputs[0].field, -5);
  EXPECT_EQ(t.domain.step, -2);
}

// VAL-3: faces accept booleans or 0/1.
TEST(PlanDecode, FacesAcceptZeroAndOne) {
  json doc = base_plan();
  target(doc)["deps"]["faces"] = {1, 0, 1, 0, 0, 1};
  EXPECT_EQ(target_of(decode_ok(doc)).deps.faces,
            (std::array<bool, 6>{true, false, true, false, false, true}));
  target(doc)["deps"]["faces"] = {false, 1, true, 0, true, false};
  EXPECT_EQ(target_of(decode_ok(doc)).deps.faces,
            (std::array<bool, 6>{false, true, true, false, true, false}));
}

TEST(PlanDecode, HaloInputsIntegersAccepted) {
  json doc = base_plan();
  target(doc)["inputs"].push_back(input(1001));
  target(doc)["deps"] = {{"kind", "None"}, {"halo_inputs", {1, 0}}};
  EXPECT_EQ(target_of(decode_ok(doc)).deps.halo_inputs, (std::vector<std::int32_t>{1, 0}));
}

// VAL-4 / CONF-4: accepted neighbor configurations.
TEST(PlanDecode, FaceNeighborsAcceptedConfigurations) {
  json doc = base_plan();
  target(doc)["deps"] = {{"kind", "FaceNeighbors"},
                         {"width", 2},
                         {"faces", {false, false, false, false, false, false}},
                         {"halo_inputs", {0, 0}}};
  const Plan p = decode_ok(doc);
  const DepRule& d = target_of(p).deps;
  EXPECT_EQ(d.kind, DepKind::face_neighbors);
  EXPECT_EQ(d.width, 2);
  EXPECT_EQ(d.faces, (std::array<bool, 6>{}));
  EXPECT_EQ(d.halo_inputs, (std::vector<std::int32_t>{0, 0}));

  target(doc)["deps"] = {{"kind", "FaceNeighbors"}, {"width", 0}};
  const Plan p0 = decode_ok(doc);
  const DepRule& d0 = target_of(p0).deps;
  EXPECT_EQ(d0.kind, DepKind::face_neighbors);
  EXPECT_EQ(d0.width, 0);
  EXPECT_TRUE(d0.halo_inputs.empty());
}

// VAL-5: -1 and every valid index are accepted.
TEST(PlanDecode, CoveredBoxesRefAccepted) {
  json doc = base_plan();
  for (int ref : {-1, 0, 1}) {
    target(doc)["covered_boxes_ref"] = ref;
    EXPECT_EQ(target_of(decode_ok(doc)).covered_boxes_ref, ref);
  }
  target(doc).erase("covered_boxes_ref");
  EXPECT_EQ(target_of(decode_ok(doc)).covered_boxes_ref, -1);
}

// VAL-6: the server may ignore a stray spec on a chunk template.
TEST(PlanDecode, ChunkTemplateWithStrayGraphReduceDecodes) {
  json doc = base_plan();
  target(doc)["graph_reduce"] = {{"fan_in", 2}, {"num_inputs", 2}};
  const Plan p = decode_ok(doc);
  EXPECT_EQ(target_of(p).plane, Plane::chunk);
}

TEST(PlanDecode, MixedPlaneDecodes) {
  json doc = base_plan();
  doc["stages"][1]["plane"] = "mixed";
  target(doc)["plane"] = "mixed";
  const Plan p = decode_ok(doc);
  EXPECT_EQ(p.stages[1].plane, Plane::mixed);
  EXPECT_EQ(target_of(p).plane, Plane::mixed);
}

// VAL-7 / RED-7: the worked example is accepted and groups as documented.
TEST(PlanDecode, Red7WorkedExampleAccepted) {
  json doc = base_plan();
  graph_spec(doc) = {{"fan_in", 4},
                     {"num_inputs", 4},
                     {"input_blocks", {0, 2, 1, 3}},
                     {"group_offsets", {0, 2, 4}},
                     {"output_blocks", {10, 20}}};
  const Plan p = decode_ok(doc);
  const auto& g = p.stages.at(2).templates.at(0).graph_reduce;
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(g->fan_in, 4);
  EXPECT_EQ(g->num_inputs, 4);
  EXPECT_EQ(g->input_blocks, (std::vector<std::int32_t>{0, 2, 1, 3}));
  EXPECT_EQ(g->group_offsets, (std::vector<std::int64_t>{0, 2, 4}));
  EXPECT_EQ(g->output_blocks, (std::vector<std::int32_t>{10, 20}));
  ASSERT_EQ(g->group_count(), 2);
  // The group writing block 10 reads blocks 0 and 2; the one writing 20 reads 1 and 3.
  std::vector<std::pair<std::int32_t, std::vector<std::int32_t>>> groups;
  for (std::int64_t gi = 0; gi < g->group_count(); ++gi) {
    const auto [lo, hi] = g->group_range(gi);
    std::vector<std::int32_t> reads;
    for (std::int64_t pos = lo; pos < hi; ++pos)
      reads.push_back(g->input_block(pos));
    groups.emplace_back(g->output_block(gi), reads);
  }
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].first, 10);
  EXPECT_EQ(groups[0].second, (std::vector<std::int32_t>{0, 2}));
  EXPECT_EQ(groups[1].first, 20);
  EXPECT_EQ(groups[1].second, (std::vector<std::int32_t>{1, 3}));
}

TEST(PlanDecode, GraphReduceDefaultsPlan8) {
  json doc = base_plan();
  graph_spec(doc) = {{"num_inputs", 3}};
  const Plan p = decode_ok(doc);
  const auto& g = p.stages.at(2).templates.at(0).graph_reduce;
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(g->fan_in, 1);
  EXPECT_EQ(g->num_inputs, 3);
  EXPECT_EQ(g->input_base, 0);
  EXPECT_EQ(g->output_base, 0);
  EXPECT_TRUE(g->input_blocks.empty());
  EXPECT_TRUE(g->output_blocks.empty());
  EXPECT_TRUE(g->group_offsets.empty());
  EXPECT_EQ(g->group_count(), 3);  // ceil(3 / 1)
}

TEST(PlanDecode, GraphReduceBasesAndFanInGroups) {
  json doc = base_plan();
  graph_spec(doc) = {{"fan_in", 2}, {"num_inputs", 5}, {"input_base", 5}, {"output_base", 7}};
  const Plan p = decode_ok(doc);
  const auto& g = p.stages.at(2).templates.at(0).graph_reduce;
  ASSERT_TRUE(g.has_value());
  // RED-1..4 by hand: groups [0,2) [2,4) [4,5); blocks base + position.
  ASSERT_EQ(g->group_count(), 3);
  EXPECT_EQ(g->group_range(2), (std::pair<std::int64_t, std::int64_t>{4, 5}));
  EXPECT_EQ(g->output_block(1), 8);
  EXPECT_EQ(g->input_block(2), 7);
}

TEST(PlanDecode, OutputBlocksMatchingGroupsAccepted) {
  json doc = base_plan();
  graph_spec(doc) = {{"fan_in", 2}, {"num_inputs", 5}, {"output_blocks", {7, 8, 9}}};
  EXPECT_EQ(decode_ok(doc).stages.at(2).templates.at(0).graph_reduce->output_block(2), 9);
  // With offsets, the group count comes from the offsets, not from fan_in.
  graph_spec(doc) = {
      {"fan_in", 1}, {"num_inputs", 4}, {"group_offsets", {0, 4}}, {"output_blocks", {3}}};
  EXPECT_EQ(decode_ok(doc).stages.at(2).templates.at(0).graph_reduce->group_count(), 1);
  // fan_in above num_inputs is fine (one group).
  graph_spec(doc) = {{"fan_in", 8}, {"num_inputs", 4}, {"output_blocks", {0}}};
  EXPECT_EQ(decode_ok(doc).stages.at(2).templates.at(0).graph_reduce->group_count(), 1);
  // RED-8: several positions may name the same block.
  graph_spec(doc) = {{"fan_in", 1}, {"num_inputs", 4}, {"input_blocks", {0, 0, 0, 0}}};
  EXPECT_EQ(decode_ok(doc).stages.at(2).templates.at(0).graph_reduce->input_blocks,
            (std::vector<std::int32_t>{0, 0, 0, 0}));
}

// VAL-7 / RED-1: a fan_in above num_inputs by any margin makes one group,
// ceil(4 / fan_in) = 1, whatever the magnitude of fan_in.
TEST(PlanDecode, HugeFanInIsOneGroup) {
  const std::int64_t huge = std::numeric_limits<std::int64_t>::max();
  json doc = base_plan();
  graph_spec(doc) = {{"fan_in", huge}, {"num_inputs", 4}, {"output_blocks", {7}}};
  const auto issues = issues_of(doc);
  ASSERT_TRUE(issues.empty()) << describe(issues);
  const Plan p = decode_ok(doc);
  const auto& g = p.stages.at(2).templates.at(0).graph_reduce;
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(g->group_count(), 1);
  EXPECT_EQ(g->group_range(0), (std::pair<std::int64_t, std::int64_t>{0, 4}));
  EXPECT_EQ(g->output_block(0), 7);
  graph_spec(doc) = {{"fan_in", huge - 1}, {"num_inputs", 3}};
  const Plan q = decode_ok(doc);
  EXPECT_EQ(q.stages.at(2).templates.at(0).graph_reduce->group_count(), 1);
}

// VAL-8 / PLAN-10: every valid shape and bound.
TEST(PlanDecode, ValidShapesAccepted) {
  json doc = base_plan();
  auto decoded = [&doc](json buf) {
    target_buffer(doc) = std::move(buf);
    return target_of(decode_ok(doc)).outputs.at(0).buffer;
  };
  BufferSpec b = decoded(buffer("f64", {{"kind", "block"}}));
  EXPECT_EQ(b.shape, ShapeKind::block);
  EXPECT_EQ(b.components, 1);
  b = decoded(buffer("f32", {{"kind", "block"}, {"components", 3}}));
  EXPECT_EQ(b.components, 3);
  b = decoded(buffer("i64", fixed({7})));
  EXPECT_EQ(b.shape, ShapeKind::fixed);
  EXPECT_EQ(b.extents, std::vector<std::uint64_t>{7});
  b = decoded(buffer("u8", fixed({1, 2, 3, 4})));
  EXPECT_EQ(b.extents, (std::vector<std::uint64_t>{1, 2, 3, 4}));
  b = decoded(buffer("f64", like_input(0)));
  EXPECT_EQ(b.shape, ShapeKind::like_input);
  EXPECT_EQ(b.input_index, 0);
  b = decoded(buffer("f64", dynamic({{"kind", "literal"}, {"value", 0}})));
  EXPECT_EQ(b.shape, ShapeKind::dynamic);
  EXPECT_EQ(b.bound, BoundKind::literal);
  EXPECT_EQ(b.literal, 0u);
  b = decoded(buffer("f64", dynamic({{"kind", "literal"}, {"value", 4096}})));
  EXPECT_EQ(b.literal, 4096u);
  b = decoded(buffer("f64", dynamic({{"kind", "like_input"}, {"input_index", 0}})));
  EXPECT_EQ(b.bound, BoundKind::like_input);
  EXPECT_EQ(b.bound_input, 0);
  b = decoded(buffer("f64", dynamic({{"kind", "backend_chunk"}})));
  EXPECT_EQ(b.bound, BoundKind::backend_chunk);
  EXPECT_EQ(b.bound_input, 0);  // PLAN-10 default
  b = decoded(buffer("f64", dynamic({{"kind", "backend_chunk"}, {"input_index", 2}})));
  EXPECT_EQ(b.bound_input, 2);
  b = decoded(buffer("f64", dynamic({{"kind", "amr_subbox_pack"}})));
  EXPECT_EQ(b.bound, BoundKind::amr_subbox_pack);
}

// PLAN-11: opaque with rank-1 fixed or dynamic shapes.
TEST(PlanDecode, OpaqueAllowedShapes) {
  json doc = base_plan();
  target_buffer(doc) = buffer("opaque", fixed({16}));
  BufferSpec b = target_of(decode_ok(doc)).outputs.at(0).buffer;
  EXPECT_EQ(b.dtype, ScalarType::opaque);
  EXPECT_EQ(b.extents, std::vector<std::uint64_t>{16});
  target_buffer(doc) = buffer("opaque", dynamic({{"kind", "literal"}, {"value", 64}}));
  b = target_of(decode_ok(doc)).outputs.at(0).buffer;
  EXPECT_EQ(b.dtype, ScalarType::opaque);
  EXPECT_EQ(b.shape, ShapeKind::dynamic);
  target_buffer(doc) = buffer("opaque", dynamic({{"kind", "amr_subbox_pack"}}));
  EXPECT_EQ(target_of(decode_ok(doc)).outputs.at(0).buffer.bound, BoundKind::amr_subbox_pack);
}

// PLAN-10: short tags and their aliases.
TEST(PlanDecode, DtypeTagsAndAliases) {
  const std::vector<std::pair<const char*, ScalarType>> tags = {
      {"u8", ScalarType::u8},     {"uint8", ScalarType::u8},   {"i64", ScalarType::i64},
      {"int64", ScalarType::i64}, {"f32", ScalarType::f32},    {"float32", ScalarType::f32},
      {"f64", ScalarType::f64},   {"float64", ScalarType::f64}};
  for (const auto& [tag, type] : tags) {
    SCOPED_TRACE(tag);
    json doc = base_plan();
    target_buffer(doc)["dtype"] = tag;
    EXPECT_EQ(target_of(decode_ok(doc)).outputs.at(0).buffer.dtype, type);
  }
}

// PLAN-12: a buffer specification is mandatory even when byte counts are
// absent; a document free of byte-size keys decodes.
TEST(PlanDecode, OutputsWithoutLegacyKeysDecode) {
  json doc = base_plan();
  const Plan p = decode_ok(doc);
  for (const auto& s : p.stages) {
    for (const auto& t : s.templates)
      EXPECT_FALSE(t.outputs.empty());
  }
}

// PARAM-3: the decoder never consults the kernel name.
TEST(PlanDecode, ParamsDecodedWithoutKernelTable) {
  json doc = base_plan();
  target(doc)["kernel"] = "particle_sum";  // takes no parameters
  target(doc)["params"] = valid_params("Histogram1DParams");
  const Plan p = decode_ok(doc);
  EXPECT_TRUE(std::holds_alternative<Histogram1DParams>(target_of(p).params));
  target(doc)["kernel"] = "no_such_kernel_anywhere";
  target(doc)["params"] = valid_params("TopKModesParams");
  const Plan q = decode_ok(doc);
  EXPECT_EQ(target_of(q).kernel, "no_such_kernel_anywhere");
  ASSERT_TRUE(std::holds_alternative<TopKModesParams>(target_of(q).params));
  EXPECT_EQ(std::get<TopKModesParams>(target_of(q).params).k, 3);
}

TEST(PlanDecode, NoParameterForms) {
  json doc = base_plan();
  for (json p : {json::object(), json(nullptr), json{{"type", "none"}}}) {
    SCOPED_TRACE(p.dump());
    target(doc)["params"] = p;
    EXPECT_TRUE(std::holds_alternative<std::monostate>(target_of(decode_ok(doc)).params));
  }
  target(doc).erase("params");
  EXPECT_TRUE(std::holds_alternative<std::monostate>(target_of(decode_ok(doc)).params));
}

TEST(PlanDecode, EveryAlternativeDecodesByItsDiscriminator) {
  ASSERT_EQ(alternatives().size(), 21u);
  for (const auto& [name, check] : alternatives()) {
    SCOPED_TRACE(name);
    json doc = base_plan();
    target(doc)["params"] = valid_params(name);
    const Plan p = decode_ok(doc);
    EXPECT_TRUE(check(target_of(p).params));
  }
}

// PARAM-1: fields without a default are required.
TEST(PlanDecode, RequiredParameterFieldsEnforced) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> required = {
      {"PlotfileLoadParams", {"plotfile"}},
      {"FluxSurfaceParams", {"radii", "radius_indices", "num_radii"}},
      {"CylindricalFluxParams", {"radius", "heights", "height_indices", "num_heights"}},
      {"UniformSliceCellParams", {"coord", "rect", "resolution"}},
      {"UniformProjectionParams", {"axis_bounds", "rect", "resolution"}},
      {"FieldExprParams", {"expression", "variables"}},
      {"UniformSliceParams", {"coord", "rect", "resolution"}},
      {"Histogram1DParams", {"range"}},
      {"Histogram2DParams", {"x_range", "y_range", "bins"}},
      {"ParticleFieldParams", {"particle_type", "field_name"}},
      {"ParticleCicGridParams", {"particle_type", "axis_bounds"}},
      {"ParticleCicProjectionParams", {"particle_type", "axis_bounds", "rect", "resolution"}},
      {"ValuesParams", {"values"}},
      {"ParticleHistogramParams", {"edges"}},
      {"TopKModesParams", {"k"}},
  };
  for (const auto& [type, fields] : required) {
    for (const auto& f : fields) {
      SCOPED_TRACE(type + "." + f);
      json doc = base_plan();
      target(doc)["params"] = without(valid_params(type), f);
      const auto issues = issues_of(doc);
      bool found = false;
      for (const auto& i : issues)
        found |= i.path == kT + "/params/" + f && i.stage == 1 && i.template_index == 1;
      EXPECT_TRUE(found) << describe(issues);
    }
  }
}

// PARAM-1 defaults.
TEST(PlanDecode, ParameterDefaults) {
  json doc = base_plan();
  auto params_of = [&doc](const std::string& type) {
    target(doc)["params"] = valid_params(type);
    return target_of(decode_ok(doc)).params;
  };
  {
    const auto p = std::get<AmrSubboxPackParams>(params_of("AmrSubboxPackParams"));
    EXPECT_EQ(p.input_field, -1);
    EXPECT_EQ(p.input_version, 0);
    EXPECT_EQ(p.input_step, 0);
    EXPECT_EQ(p.input_level, 0);
    EXPECT_EQ(p.halo_cells, 1);
  }
  {
    const auto p = std::get<GradStencilParams>(params_of("GradStencilParams"));
    EXPECT_EQ(p.input_field, -1);
    EXPECT_EQ(p.input_version, 0);
    EXPECT_EQ(p.input_step, 0);
    EXPECT_EQ(p.input_level, 0);
    EXPECT_EQ(p.stencil_radius, 1);
  }
  {
    const auto p = std::get<PlotfileLoadParams>(params_of("PlotfileLoadParams"));
    EXPECT_EQ(p.plotfile, "plt00010");
    EXPECT_EQ(p.level, 0);
    EXPECT_EQ(p.comp, 0);
  }
  {
    const auto p = std::get<FluxSurfaceParams>(params_of("FluxSurfaceParams"));
    EXPECT_TRUE(p.temperature_bins.empty());
    EXPECT_DOUBLE_EQ(p.gamma, 5.0 / 3.0);
    EXPECT_EQ(p.num_radii, 2u);
  }
  {
    const auto p = std::get<CylindricalFluxParams>(params_of("CylindricalFluxParams"));
    EXPECT_TRUE(p.temperature_bins.empty());
    EXPECT_DOUBLE_EQ(p.gamma, 5.0 / 3.0);
  }
  {
    const auto p = std::get<ToomreProfileParams>(params_of("ToomreProfileParams"));
    EXPECT_EQ(p.radial_edges, (std::vector<double>{0.0, 1.0}));
    EXPECT_EQ(p.z_bounds, (std::array<double, 2>{-1.0, 1.0}));
    EXPECT_EQ(p.center, (std::array<double, 3>{0.0, 0.0, 0.0}));
  }
  {
    const auto p = std::get<UniformSliceCellParams>(params_of("UniformSliceCellParams"));
    EXPECT_EQ(p.axis, 2);
    EXPECT_FALSE(p.plane_index.has_value());
  }
  {
    const auto p = std::get<UniformProjectionParams>(params_of("UniformProjectionParams"));
    EXPECT_EQ(p.axis, 2);
  }
  {
    const auto p = std::get<UniformSliceParams>(params_of("UniformSliceParams"));
    EXPECT_EQ(p.axis, 2);
  }
  {
    const auto p = std::get<Histogram1DParams>(params_of("Histogram1DParams"));
    EXPECT_EQ(p.bins, 1);
    EXPECT_EQ(p.weight_mode, "input");
  }
  {
    const auto p = std::get<Histogram2DParams>(params_of("Histogram2DParams"));
    EXPECT_EQ(p.weight_mode, "input");
    EXPECT_EQ(p.bins, (std::array<std::int64_t, 2>{4, 5}));
  }
  {
    const auto p = std::get<ParticleCicGridParams>(params_of("ParticleCicGridParams"));
    EXPECT_EQ(p.level_index, -1);
    EXPECT_EQ(p.axis, 2);
    EXPECT_EQ(p.mass_field, "mass");
    EXPECT_FALSE(p.mass_max.has_value());
  }
  {
    const auto p = std::get<ParticleCicProjectionParams>(params_of("ParticleCicProjectionParams"));
    EXPECT_EQ(p.level_index, -1);
    EXPECT_EQ(p.axis, 2);
    EXPECT_EQ(p.mass_field, "mass");
    EXPECT_FALSE(p.mass_max.has_value());
  }
  EXPECT_EQ(std::get<ScalarParams>(params_of("ScalarParams")).scalar, 0.0);
  EXPECT_TRUE(std::get<FiniteOnlyParams>(params_of("FiniteOnlyParams")).finite_only);
  EXPECT_FALSE(std::get<ParticleHistogramParams>(params_of("ParticleHistogramParams")).density);
  EXPECT_EQ(std::get<SliceFinalizeParams>(params_of("SliceFinalizeParams")).pixel_area, 1.0);
}

TEST(PlanDecode, OptionalParameterFieldsMayBeNull) {
  json doc = base_plan();
  target(doc)["params"] = with(valid_params("UniformSliceCellParams"), "plane_index", nullptr);
  EXPECT_FALSE(
      std::get<UniformSliceCellParams>(target_of(decode_ok(doc)).params).plane_index.has_value());
  target(doc)["params"] = with(valid_params("UniformSliceCellParams"), "plane_index", 12);
  EXPECT_EQ(std::get<UniformSliceCellParams>(target_of(decode_ok(doc)).params).plane_index, 12);
  target(doc)["params"] = with(valid_params("ParticleCicGridParams"), "mass_max", nullptr);
  EXPECT_FALSE(
      std::get<ParticleCicGridParams>(target_of(decode_ok(doc)).params).mass_max.has_value());
  target(doc)["params"] = with(valid_params("ParticleCicProjectionParams"), "mass_max", 2.5);
  EXPECT_EQ(std::get<ParticleCicProjectionParams>(target_of(decode_ok(doc)).params).mass_max, 2.5);
  // Booleans accept 0/1 in parameters too.
  target(doc)["params"] = with(valid_params("FiniteOnlyParams"), "finite_only", 0);
  EXPECT_FALSE(std::get<FiniteOnlyParams>(target_of(decode_ok(doc)).params).finite_only);
}

// ---------------------------------------------------------------------------
// Issue reporting

TEST(PlanDecode, IssuesCarryStageAndTemplateOfEachProblem) {
  json doc = base_plan();
  doc["stages"][0]["templates"][0]["outputs"][0]["buffer"]["dtype"] = "f16";
  graph_template(doc).erase("graph_reduce");
  doc["stages"][1]["after"] = "0";
  doc["schema"] = "kangaroo.plan/9";
  const auto issues = issues_of(doc);
  auto find = [&issues](const std::string& path) -> const PlanIssue* {
    for (const auto& i : issues) {
      if (i.path == path) return &i;
    }
    return nullptr;
  };
  const PlanIssue* dtype = find("/stages/0/templates/0/outputs/0/buffer/dtype");
  const PlanIssue* graph = find(kGR);
  const PlanIssue* after = find("/stages/1/after");
  const PlanIssue* schema = find("/schema");
  ASSERT_NE(dtype, nullptr) << describe(issues);
  ASSERT_NE(graph, nullptr) << describe(issues);
  ASSERT_NE(after, nullptr) << describe(issues);
  ASSERT_NE(schema, nullptr) << describe(issues);
  EXPECT_EQ(dtype->stage, 0);
  EXPECT_EQ(dtype->template_index, 0);
  EXPECT_EQ(graph->stage, 2);
  EXPECT_EQ(graph->template_index, 0);
  EXPECT_EQ(after->stage, 1);
  EXPECT_EQ(after->template_index, -1);
  EXPECT_EQ(schema->stage, -1);
  EXPECT_EQ(schema->template_index, -1);
}

TEST(PlanDecode, ErrorTextNamesPathAndPosition) {
  json doc = base_plan();
  target(doc)["deps"]["faces"] = {true, true, true, true, true};
  try {
    (void)decode_plan(doc.dump());
    FAIL() << "accepted";
  } catch (const PlanError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(kT + "/deps/faces"), std::string::npos) << what;
    EXPECT_NE(what.find("stage 1"), std::string::npos) << what;
    EXPECT_NE(what.find("template 1"), std::string::npos) << what;
  }
}

TEST(PlanDecode, IssueToStringFormat) {
  const PlanIssue full{"/stages/1/templates/0/deps/faces", 1, 0, "bad faces"};
  EXPECT_EQ(full.to_string(), "stage 1 template 0 at /stages/1/templates/0/deps/faces: bad faces");
  const PlanIssue stage_only{"/stages/2/after", 2, -1, "bad after"};
  EXPECT_EQ(stage_only.to_string(), "stage 2 at /stages/2/after: bad after");
  const PlanIssue root{"/schema", -1, -1, "bad schema"};
  EXPECT_EQ(root.to_string(), "at /schema: bad schema");
}

TEST(PlanDecode, SchemaErrorIsAPlanError) {
  json doc = base_plan();
  doc["schema"] = "kangaroo.plan/2";
  try {
    (void)decode_plan(doc.dump());
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid_plan);
    EXPECT_NE(std::string(e.what()).find("/schema"), std::string::npos);
  }
}

// ---------------------------------------------------------------------------
// Malformed and hostile text

TEST(PlanDecode, MalformedJsonGivesAnIssue) {
  const std::vector<std::string> texts = {
      "",
      " ",
      "{",
      "}",
      "nul",
      "[1,2",
      "{\"schema\": }",
      "{\"schema\": \"kangaroo.plan/1\", \"stages\": []} trailing",
      "{\"schema\": \"kangaroo.plan/1\", \"stages\": [],}",
      "{'schema': 'kangaroo.plan/1'}",
      "{\"schema\": \"kangaroo.plan/1\", \"stages\": [NaN]}",
      std::string("{\"schema\": \"kangaroo.plan/1\"") + '\0' + ", \"stages\": []}",
      "\xff\xfe{}",
      "{\"schema\": \"\xc3\x28\"}",
      "]]]]]]]]",
  };
  for (const auto& t : texts) {
    SCOPED_TRACE(t);
    try {
      (void)decode_plan(t);
      ADD_FAILURE() << "accepted";
    } catch (const PlanError& e) {
      EXPECT_FALSE(e.issues().empty());
    } catch (const std::exception& e) {
      ADD_FAILURE() << "expected PlanError, got " << e.what();
    }
  }
}

// A number too large for a double is malformed input like any other: it must
// surface as a PlanError, not as a JSON library exception.
TEST(PlanDecode, NumberOverflowGivesAnIssue) {
  for (const char* number : {"1e400", "-1e400", "123456789e999"}) {
    SCOPED_TRACE(number);
    json doc = base_plan();
    target(doc)["params"] = {{"type", "ScalarParams"}, {"scalar", "scalar_placeholder"}};
    std::string text = doc.dump();
    const std::string needle = "\"scalar_placeholder\"";
    text.replace(text.find(needle), needle.size(), number);
    try {
      (void)decode_plan(text);
      ADD_FAILURE() << "accepted";
    } catch (const PlanError& e) {
      EXPECT_FALSE(e.issues().empty());
    } catch (const std::exception& e) {
      ADD_FAILURE() << "expected PlanError, got " << e.what();
    }
  }
}

TEST(PlanDecode, DeeplyNestedJsonGivesAnIssue) {
  const std::size_t depth = 200000;
  const std::vector<std::string> texts = {
      std::string(depth, '['),
      std::string(depth, '[') + std::string(depth, ']'),
      std::string(depth, '{'),
      [depth] {
        std::string s;
        for (std::size_t i = 0; i < depth; ++i)
          s += "{\"a\":";
        s += "1";
        s += std::string(depth, '}');
        return s;
      }(),
      [depth] {
        std::string s =
            "{\"schema\": \"kangaroo.plan/1\", \"stages\": [{\"name\": \"s\", \"templates\": ";
        s += std::string(depth, '[');
        s += std::string(depth, ']');
        s += "}]}";
        return s;
      }(),
  };
  for (const auto& t : texts) {
    try {
      (void)decode_plan(t);
      ADD_FAILURE() << "deep document accepted";
    } catch (const PlanError& e) {
      EXPECT_FALSE(e.issues().empty());
    } catch (const std::exception& e) {
      ADD_FAILURE() << "expected PlanError, got " << e.what();
    }
  }
}

TEST(PlanDecode, BracketsInsideStringsAreNotNesting) {
  json doc = base_plan();
  const std::string name = "a\"b\\" + std::string(5000, '[') + std::string(300, '{');
  doc["stages"][1]["name"] = name;
  const Plan p = decode_ok(doc);
  EXPECT_EQ(p.stages.at(1).name, name);
}

TEST(PlanDecode, ModerateNestingInIgnoredKeysDecodes) {
  // Unknown keys are ignored; a modest nesting depth is not hostile.
  json doc = base_plan();
  json nested = 1;
  for (int i = 0; i < 20; ++i)
    nested = json::array({nested});
  target(doc)["comment"] = nested;
  EXPECT_EQ(target_of(decode_ok(doc)).name, "cube");
}

// ---------------------------------------------------------------------------
// Round trip: encode_plan(decode_plan(x)) decodes to the same structure.

auto tie_of(const AmrSubboxPackParams& p) {
  return std::tie(p.input_field, p.input_version, p.input_step, p.input_level, p.halo_cells);
}
auto tie_of(const GradStencilParams& p) {
  return std::tie(p.input_field, p.input_version, p.input_step, p.input_level, p.stencil_radius);
}
auto tie_of(const PlotfileLoadParams& p) {
  return std::tie(p.plotfile, p.level, p.comp);
}
auto tie_of(const FluxSurfaceParams& p) {
  return std::tie(p.radii, p.radius_indices, p.temperature_bins, p.num_radii, p.gamma);
}
auto tie_of(const CylindricalFluxParams& p) {
  return std::tie(p.radius, p.heights, p.height_indices, p.temperature_bins, p.num_heights,
                  p.gamma);
}
auto tie_of(const ToomreProfileParams& p) {
  return std::tie(p.radial_edges, p.z_bounds, p.center);
}
auto tie_of(const UniformSliceCellParams& p) {
  return std::tie(p.axis, p.coord, p.plane_index, p.rect, p.resolution);
}
auto tie_of(const UniformProjectionParams& p) {
  return std::tie(p.axis, p.axis_bounds, p.rect, p.resolution);
}
auto tie_of(const FieldExprParams& p) {
  return std::tie(p.expression, p.variables);
}
auto tie_of(const UniformSliceParams& p) {
  return std::tie(p.axis, p.coord, p.rect, p.resolution);
}
auto tie_of(const Histogram1DParams& p) {
  return std::tie(p.range, p.bins, p.weight_mode);
}
auto tie_of(const Histogram2DParams& p) {
  return std::tie(p.x_range, p.y_range, p.bins, p.weight_mode);
}
auto tie_of(const ParticleFieldParams& p) {
  return std::tie(p.particle_type, p.field_name);
}
auto tie_of(const ParticleCicGridParams& p) {
  return std::tie(p.particle_type, p.level_index, p.axis, p.axis_bounds, p.mass_field, p.mass_max);
}
auto tie_of(const ParticleCicProjectionParams& p) {
  return std::tie(p.particle_type, p.level_index, p.axis, p.axis_bounds, p.rect, p.resolution,
                  p.mass_field, p.mass_max);
}
auto tie_of(const ScalarParams& p) {
  return std::tie(p.scalar);
}
auto tie_of(const ValuesParams& p) {
  return std::tie(p.values);
}
auto tie_of(const FiniteOnlyParams& p) {
  return std::tie(p.finite_only);
}
auto tie_of(const ParticleHistogramParams& p) {
  return std::tie(p.edges, p.density);
}
auto tie_of(const TopKModesParams& p) {
  return std::tie(p.k);
}
auto tie_of(const SliceFinalizeParams& p) {
  return std::tie(p.pixel_area);
}

bool same_params(const KernelParams& a, const KernelParams& b) {
  if (a.index() != b.index()) return false;
  return std::visit(
      [&b](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::monostate>) {
          return true;
        } else {
          return tie_of(x) == tie_of(std::get<T>(b));
        }
      },
      a);
}

void expect_same_domain(const Domain& a, const Domain& b) {
  EXPECT_EQ(a.step, b.step);
  EXPECT_EQ(a.level, b.level);
  EXPECT_EQ(a.blocks, b.blocks);
}

void expect_same_plan(const Plan& a, const Plan& b) {
  EXPECT_EQ(a.schema, b.schema);
  ASSERT_EQ(a.shared_covered_boxes.size(), b.shared_covered_boxes.size());
  for (std::size_t i = 0; i < a.shared_covered_boxes.size(); ++i) {
    EXPECT_EQ(a.shared_covered_boxes[i], b.shared_covered_boxes[i]) << "coverage list " << i;
  }
  ASSERT_EQ(a.stages.size(), b.stages.size());
  for (std::size_t s = 0; s < a.stages.size(); ++s) {
    SCOPED_TRACE("stage " + std::to_string(s));
    const Stage& sa = a.stages[s];
    const Stage& sb = b.stages[s];
    EXPECT_EQ(sa.name, sb.name);
    EXPECT_EQ(sa.plane, sb.plane);
    EXPECT_EQ(sa.after, sb.after);
    ASSERT_EQ(sa.templates.size(), sb.templates.size());
    for (std::size_t t = 0; t < sa.templates.size(); ++t) {
      SCOPED_TRACE("template " + std::to_string(t));
      const TaskTemplate& ta = sa.templates[t];
      const TaskTemplate& tb = sb.templates[t];
      EXPECT_EQ(ta.name, tb.name);
      EXPECT_EQ(ta.plane, tb.plane);
      EXPECT_EQ(ta.kernel, tb.kernel);
      expect_same_domain(ta.domain, tb.domain);
      ASSERT_EQ(ta.inputs.size(), tb.inputs.size());
      for (std::size_t i = 0; i < ta.inputs.size(); ++i) {
        EXPECT_EQ(ta.inputs[i].field, tb.inputs[i].field);
        EXPECT_EQ(ta.inputs[i].version, tb.inputs[i].version);
        ASSERT_EQ(ta.inputs[i].domain.has_value(), tb.inputs[i].domain.has_value());
        if (ta.inputs[i].domain) {
          expect_same_domain(*ta.inputs[i].domain, *tb.inputs[i].domain);
        }
      }
      ASSERT_EQ(ta.outputs.size(), tb.outputs.size());
      for (std::size_t o = 0; o < ta.outputs.size(); ++o) {
        EXPECT_EQ(ta.outputs[o].field, tb.outputs[o].field);
        EXPECT_EQ(ta.outputs[o].version, tb.outputs[o].version);
        const BufferSpec& ba = ta.outputs[o].buffer;
        const BufferSpec& bb = tb.outputs[o].buffer;
        EXPECT_EQ(ba.dtype, bb.dtype);
        EXPECT_EQ(ba.shape, bb.shape);
        EXPECT_EQ(ba.init, bb.init);
        switch (ba.shape) {
          case ShapeKind::block:
            EXPECT_EQ(ba.components, bb.components);
            break;
          case ShapeKind::fixed:
            EXPECT_EQ(ba.extents, bb.extents);
            break;
          case ShapeKind::like_input:
            EXPECT_EQ(ba.input_index, bb.input_index);
            break;
          case ShapeKind::dynamic:
            EXPECT_EQ(ba.bound, bb.bound);
            if (ba.bound == BoundKind::literal) {
              EXPECT_EQ(ba.literal, bb.literal);
            }
            if (ba.bound == BoundKind::like_input || ba.bound == BoundKind::backend_chunk) {
              EXPECT_EQ(ba.bound_input, bb.bound_input);
            }
            break;
        }
      }
      EXPECT_EQ(ta.deps.kind, tb.deps.kind);
      EXPECT_EQ(ta.deps.width, tb.deps.width);
      EXPECT_EQ(ta.deps.faces, tb.deps.faces);
      EXPECT_EQ(ta.deps.halo_inputs, tb.deps.halo_inputs);
      EXPECT_TRUE(same_params(ta.params, tb.params));
      EXPECT_EQ(ta.covered_boxes_ref, tb.covered_boxes_ref);
      ASSERT_EQ(ta.graph_reduce.has_value(), tb.graph_reduce.has_value());
      if (ta.graph_reduce) {
        const auto& ga = *ta.graph_reduce;
        const auto& gb = *tb.graph_reduce;
        EXPECT_EQ(ga.fan_in, gb.fan_in);
        EXPECT_EQ(ga.num_inputs, gb.num_inputs);
        EXPECT_EQ(ga.input_base, gb.input_base);
        EXPECT_EQ(ga.output_base, gb.output_base);
        EXPECT_EQ(ga.input_blocks, gb.input_blocks);
        EXPECT_EQ(ga.output_blocks, gb.output_blocks);
        EXPECT_EQ(ga.group_offsets, gb.group_offsets);
      }
    }
  }
}

void expect_round_trip(const std::string& text) {
  Plan first;
  try {
    first = decode_plan(text);
  } catch (const PlanError& e) {
    FAIL() << "original rejected:" << describe(e.issues());
  }
  const std::string encoded = encode_plan(first);
  Plan second;
  try {
    second = decode_plan(encoded);
  } catch (const PlanError& e) {
    FAIL() << "encoded document rejected:" << describe(e.issues()) << "\n" << encoded;
  }
  expect_same_plan(first, second);
  // The encoding is a fixed point.
  EXPECT_EQ(encode_plan(second), encoded);
}

// A plan using every plane, shape, bound, init policy, dependency form and
// parameter alternative, with non-default values wherever there is a choice.
json rich_plan() {
  json doc = base_plan();
  json& stage = doc["stages"][1];
  stage["plane"] = "mixed";
  json templates = json::array();
  int i = 0;
  for (const auto& [name, check] : alternatives()) {
    (void)check;
    json t = chunk_template(("t_" + name).c_str(), "some_kernel", json::array({input(10 + i)}),
                            json::array({output(2000 + i, buffer("f32", like_input(0), "zero"))}),
                            valid_params(name));
    t["domain"] = {{"step", 7}, {"level", i % 3}, {"blocks", {i, i + 1}}};
    templates.push_back(t);
    ++i;
  }
  // Non-default values inside parameters.
  templates[0]["params"] = {{"type", "AmrSubboxPackParams"},
                            {"input_field", 12},
                            {"input_version", 3},
                            {"input_step", 4},
                            {"input_level", 2},
                            {"halo_cells", 2}};
  templates[3]["params"]["temperature_bins"] = {1.0e3, 1.0e4, 1.0e5};
  templates[3]["params"]["gamma"] = 1.4;
  templates[6]["params"]["plane_index"] = 17;
  templates[6]["params"]["axis"] = 0;
  templates[10]["params"]["weight_mode"] = "cell_volume";
  templates[10]["params"]["bins"] = 64;
  templates[13]["params"]["mass_max"] = 0.125;
  templates[14]["params"]["mass_field"] = "weight";
  templates[15]["params"]["scalar"] = 0.1;
  templates[17]["params"]["finite_only"] = false;
  templates[18]["params"]["density"] = true;
  templates[20]["params"]["pixel_area"] = 1.0 / 1024.0;
  // Shapes, bounds and dependency forms.
  templates[1]["outputs"] =
      json::array({output(3000, buffer("u8", {{"kind", "block"}, {"components", 4}})),
                   output(3001, buffer("i64", fixed({2, 3, 4, 5}))),
                   output(3002, buffer("opaque", fixed({128}))),
                   output(3003, buffer("f64", dynamic({{"kind", "literal"}, {"value", 99}})))});
  templates[2]["outputs"] = json::array(
      {output(3010, buffer("float64", dynamic({{"kind", "like_input"}, {"input_index", 1}}))),
       output(3011, buffer("opaque", dynamic({{"kind", "backend_chunk"}, {"input_index", 3}}))),
       output(3012, buffer("opaque", dynamic({{"kind", "amr_subbox_pack"}})))});
  templates[2]["inputs"].push_back(
      {{"field", 77}, {"version", 5}, {"domain", {{"step", 1}, {"level", 2}}}});
  templates[2]["deps"] = {{"kind", "FaceNeighbors"},
                          {"width", 3},
                          {"faces", {true, false, 1, 0, false, true}},
                          {"halo_inputs", {1, 0, 1}}};
  templates[4]["covered_boxes_ref"] = 1;
  templates[5]["covered_boxes_ref"] = 0;
  templates[8]["plane"] = "graph";
  templates[8]["graph_reduce"] = {{"fan_in", 4},
                                  {"num_inputs", 4},
                                  {"input_base", 11},
                                  {"output_base", 13},
                                  {"input_blocks", {0, 2, 1, 3}},
                                  {"output_blocks", {10, 20}},
                                  {"group_offsets", {0, 2, 4}}};
  templates[9]["domain"]["blocks"] = json::array();
  stage["templates"] = templates;
  stage["after"] = {0, 0};
  doc["shared_covered_boxes"].push_back(
      {{{-4, -8, 2}, {7, 9, 11}}, {{100, 200, 300}, {100, 200, 300}}});
  return doc;
}

TEST(PlanRoundTrip, BaselinePlan) {
  expect_round_trip(base_plan().dump());
}

TEST(PlanRoundTrip, ZeroStages) {
  expect_round_trip(json{{"schema", "kangaroo.plan/1"}, {"stages", json::array()}}.dump());
}

TEST(PlanRoundTrip, RichPlan) {
  const json doc = rich_plan();
  expect_round_trip(doc.dump());
  // Spot-check that the rich values survived, against the document itself.
  const Plan p = decode_plan(encode_plan(decode_plan(doc.dump())));
  const auto& ts = p.stages.at(1).templates;
  ASSERT_EQ(ts.size(), 21u);
  EXPECT_EQ(p.stages.at(1).plane, Plane::mixed);
  EXPECT_EQ(p.stages.at(1).after, (std::vector<std::int32_t>{0, 0}));
  EXPECT_EQ(std::get<AmrSubboxPackParams>(ts[0].params).halo_cells, 2);
  EXPECT_EQ(ts[1].outputs.at(0).buffer.components, 4);
  EXPECT_EQ(ts[1].outputs.at(1).buffer.extents, (std::vector<std::uint64_t>{2, 3, 4, 5}));
  EXPECT_EQ(ts[1].outputs.at(3).buffer.literal, 99u);
  EXPECT_EQ(ts[2].outputs.at(0).buffer.dtype, ScalarType::f64);
  EXPECT_EQ(ts[2].outputs.at(1).buffer.bound, BoundKind::backend_chunk);
  EXPECT_EQ(ts[2].outputs.at(1).buffer.bound_input, 3);
  EXPECT_EQ(ts[2].outputs.at(2).buffer.bound, BoundKind::amr_subbox_pack);
  EXPECT_EQ(ts[2].deps.faces, (std::array<bool, 6>{true, false, true, false, false, true}));
  EXPECT_EQ(ts[2].deps.halo_inputs, (std::vector<std::int32_t>{1, 0, 1}));
  EXPECT_EQ(ts[2].inputs.at(1).version, 5);
  EXPECT_EQ(std::get<FluxSurfaceParams>(ts[3].params).gamma, 1.4);
  EXPECT_EQ(std::get<UniformSliceCellParams>(ts[6].params).plane_index, 17);
  ASSERT_TRUE(ts[8].graph_reduce.has_value());
  EXPECT_EQ(ts[8].graph_reduce->output_blocks, (std::vector<std::int32_t>{10, 20}));
  EXPECT_EQ(ts[8].graph_reduce->input_base, 11);
  ASSERT_TRUE(ts[9].domain.blocks.has_value());
  EXPECT_TRUE(ts[9].domain.blocks->empty());
  EXPECT_EQ(std::get<ParticleCicGridParams>(ts[13].params).mass_max, 0.125);
  EXPECT_EQ(std::get<ScalarParams>(ts[15].params).scalar, 0.1);
  EXPECT_EQ(std::get<SliceFinalizeParams>(ts[20].params).pixel_area, 1.0 / 1024.0);
  ASSERT_EQ(p.shared_covered_boxes.size(), 3u);
  EXPECT_EQ(p.shared_covered_boxes[2].at(0).lo, (std::array<std::int32_t, 3>{-4, -8, 2}));
  EXPECT_EQ(p.shared_covered_boxes[2].at(1).hi, (std::array<std::int32_t, 3>{100, 200, 300}));
}

TEST(PlanRoundTrip, ExtremeIntegers) {
  json doc = base_plan();
  target(doc)["inputs"][0]["field"] = std::numeric_limits<std::int32_t>::min();
  target(doc)["inputs"][0]["version"] = std::numeric_limits<std::int32_t>::max();
  target_buffer(doc)["shape"] =
      dynamic({{"kind", "literal"}, {"value", std::numeric_limits<std::int64_t>::max()}});
  target(doc)["params"] = {{"type", "TopKModesParams"},
                           {"k", std::numeric_limits<std::int64_t>::min()}};
  expect_round_trip(doc.dump());
}

TEST(PlanRoundTrip, DocumentedExample) {
  const std::filesystem::path example = std::filesystem::path(__FILE__).parent_path() / ".." /
                                        ".." / "docs" / "examples" / "plan_example.json";
  std::ifstream in(example);
  if (!in) GTEST_SKIP() << "example not found at " << example;
  std::stringstream ss;
  ss << in.rdbuf();
  expect_round_trip(ss.str());
}

}  // namespace
}  // namespace kangaroo
