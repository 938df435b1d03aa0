// Preparation (VAL-9..11, KREG-5), stage-graph rules (DAG-1, DAG-2, DAG-5)
// and the kernel registry (KREG-1..7).
//
// Kernel names, parameter alternatives and bound evaluators expected of the
// default catalog are copied from the functional contract (KREG-6, KREG-7,
// §10), not read back from the registry.
#include "kangaroo/core/prepare.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "kangaroo/core/error.h"
#include "kangaroo/core/kernel.h"
#include "kangaroo/core/params.h"
#include "kangaroo/core/plan.h"
#include "kangaroo/core/plan_json.h"
#include "kangaroo/kernels/register.h"

namespace kangaroo {
namespace {

// ---------------------------------------------------------------------------
// Fixtures

const KernelRegistry& default_registry() {
  static const KernelRegistry registry = [] {
    KernelRegistry r;
    register_default_kernels(r);
    return r;
  }();
  return registry;
}

void noop_kernel(KernelContext&) {}
std::optional<std::uint64_t> fixed_bound(const BoundQuery&) {
  return 16;
}

OutputRef fixed_output(std::int32_t field) {
  OutputRef o;
  o.field = field;
  o.buffer.dtype = ScalarType::f64;
  o.buffer.shape = ShapeKind::fixed;
  o.buffer.extents = {1};
  return o;
}

OutputRef dynamic_output(std::int32_t field, BoundKind bound, ScalarType dtype = ScalarType::f64) {
  OutputRef o;
  o.field = field;
  o.buffer.dtype = dtype;
  o.buffer.shape = ShapeKind::dynamic;
  o.buffer.bound = bound;
  o.buffer.literal = 8;
  o.buffer.bound_input = 0;
  return o;
}

TaskTemplate make_template(const std::string& kernel, KernelParams params = {}) {
  TaskTemplate t;
  t.name = "t_" + kernel;
  t.kernel = kernel;
  t.params = std::move(params);
  FieldRef in;
  in.field = 1;
  t.inputs.push_back(in);
  t.outputs.push_back(fixed_output(100));
  return t;
}

Stage make_stage(const std::string& name, std::vector<std::int32_t> after,
                 std::vector<TaskTemplate> templates) {
  Stage s;
  s.name = name;
  s.after = std::move(after);
  s.templates = std::move(templates);
  return s;
}

// A stage with one template that prepares cleanly against the default catalog.
Stage ok_stage(const std::string& name, std::vector<std::int32_t> after = {}) {
  return make_stage(name, std::move(after), {make_template("particle_isfinite_mask")});
}

Plan plan_of(std::vector<Stage> stages) {
  Plan p;
  p.stages = std::move(stages);
  return p;
}

FieldExprParams expr_params() {
  FieldExprParams p;
  p.expression = "a*a";
  p.variables = {"a"};
  return p;
}

ParticleFieldParams particle_params() {
  ParticleFieldParams p;
  p.particle_type = "electrons";
  p.field_name = "x";
  return p;
}

std::vector<PlanIssue> prepare_issues(Plan plan,
                                      const KernelRegistry& registry = default_registry()) {
  try {
    (void)prepare_plan(std::move(plan), registry);
  } catch (const PlanError& e) {
    return e.issues();
  }
  return {};
}

std::string describe(const std::vector<PlanIssue>& issues) {
  std::ostringstream os;
  for (const auto& i : issues)
    os << "\n  [" << i.stage << "," << i.template_index << "] " << i.to_string();
  return os.str();
}

// Finds the issue whose message contains `text`.
const PlanIssue* find_issue(const std::vector<PlanIssue>& issues, const std::string& text) {
  for (const auto& i : issues) {
    if (i.message.find(text) != std::string::npos) return &i;
  }
  return nullptr;
}

PreparedPlan prepare_ok(Plan plan, const KernelRegistry& registry = default_registry()) {
  try {
    return prepare_plan(std::move(plan), registry);
  } catch (const PlanError& e) {
    ADD_FAILURE() << "prepare rejected the plan:" << describe(e.issues());
  }
  return {};
}

// Two clean stages in front so that the stage index of an issue is not 0.
Plan plan_with_target(TaskTemplate t) {
  Stage s1 = ok_stage("s1", {0});
  s1.templates.push_back(std::move(t));  // template index 1
  return plan_of({ok_stage("s0"), std::move(s1)});
}

// ---------------------------------------------------------------------------
// VAL-9: unknown kernels

TEST(Prepare, Val9UnknownKernelIsRejected) {
  const auto issues = prepare_issues(plan_with_target(make_template("no_such_kernel")));
  const PlanIssue* i = find_issue(issues, "kernel not found: no_such_kernel");
  ASSERT_NE(i, nullptr) << describe(issues);
  EXPECT_EQ(i->stage, 1);
  EXPECT_EQ(i->template_index, 1);
  EXPECT_NE(i->path.find("/stages/1/templates/1"), std::string::npos) << i->path;
}

TEST(Prepare, Val9ErrorTextCarriesReferenceMessage) {
  try {
    (void)prepare_plan(plan_with_target(make_template("no_such_kernel")), default_registry());
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("kernel not found: no_such_kernel"), std::string::npos)
        << e.what();
  }
}

TEST(Prepare, Val9NamesAreExact) {
  for (const std::string name :
       {"Field_Expr", "field_expr ", "", "particle_topk_modes_mapx", "particle"}) {
    SCOPED_TRACE("'" + name + "'");
    const auto issues = prepare_issues(plan_with_target(make_template(name, expr_params())));
    EXPECT_NE(find_issue(issues, "kernel not found: " + name), nullptr) << describe(issues);
  }
}

TEST(Prepare, Val9EveryUnknownKernelIsListed) {
  Plan p = plan_of(
      {make_stage("a", {}, {make_template("missing_a")}), ok_stage("b"),
       make_stage("c", {}, {make_template("particle_isfinite_mask"), make_template("missing_c")})});
  const auto issues = prepare_issues(std::move(p));
  const PlanIssue* a = find_issue(issues, "kernel not found: missing_a");
  const PlanIssue* c = find_issue(issues, "kernel not found: missing_c");
  ASSERT_NE(a, nullptr) << describe(issues);
  ASSERT_NE(c, nullptr) << describe(issues);
  EXPECT_EQ(a->stage, 0);
  EXPECT_EQ(a->template_index, 0);
  EXPECT_EQ(c->stage, 2);
  EXPECT_EQ(c->template_index, 1);
}

// ---------------------------------------------------------------------------
// VAL-10: parameter alternatives

TEST(Prepare, Val10WrongAlternativeIsRejected) {
  const auto issues = prepare_issues(plan_with_target(make_template("field_expr", ScalarParams{})));
  const PlanIssue* i =
      find_issue(issues, "kernel field_expr received incompatible typed parameters");
  ASSERT_NE(i, nullptr) << describe(issues);
  EXPECT_EQ(i->stage, 1);
  EXPECT_EQ(i->template_index, 1);
}

TEST(Prepare, Val10NoneGivenToTypedKernelIsRejected) {
  const auto issues = prepare_issues(plan_with_target(make_template("field_expr")));
  EXPECT_NE(find_issue(issues, "kernel field_expr received incompatible typed parameters"), nullptr)
      << describe(issues);
}

TEST(Prepare, Val10ParamsGivenToUntypedKernelAreRejected) {
  // particle_isfinite_mask and vorticity_mag take no parameters (OP-PART-2, OP-VORT-1).
  for (const std::string kernel : {"particle_isfinite_mask", "vorticity_mag"}) {
    SCOPED_TRACE(kernel);
    const auto issues = prepare_issues(plan_with_target(make_template(kernel, ScalarParams{})));
    EXPECT_NE(find_issue(issues, "kernel " + kernel + " received incompatible typed parameters"),
              nullptr)
        << describe(issues);
  }
}

TEST(Prepare, Val10NearbyAlternativeIsRejected) {
  // particle_min takes FiniteOnlyParams (OP-PART-6), not ScalarParams.
  auto issues = prepare_issues(plan_with_target(make_template("particle_min", ScalarParams{})));
  EXPECT_NE(find_issue(issues, "kernel particle_min received incompatible typed parameters"),
            nullptr)
      << describe(issues);
  // uniform_slice takes UniformSliceParams, not UniformSliceCellParams.
  issues =
      prepare_issues(plan_with_target(make_template("uniform_slice", UniformSliceCellParams{})));
  EXPECT_NE(find_issue(issues, "kernel uniform_slice received incompatible typed parameters"),
            nullptr)
      << describe(issues);
}

// The alternative each catalog kernel takes, as stated in §10.
const std::vector<std::pair<std::string, KernelParams>>& documented_alternatives() {
  static const std::vector<std::pair<std::string, KernelParams>> list = {
      {"uniform_slice_finalize", SliceFinalizeParams{}},
      {"particle_scalar_min_reduce", FiniteOnlyParams{}},
      {"particle_scalar_max_reduce", FiniteOnlyParams{}},
      {"uniform_slice_cellavg_accumulate", UniformSliceCellParams{}},
      {"uniform_slice", UniformSliceParams{}},
      {"uniform_projection_accumulate", UniformProjectionParams{}},
      {"field_expr", expr_params()},
      {"mesh_compare", expr_params()},
      {"histogram1d_accumulate", Histogram1DParams{}},
      {"histogram2d_accumulate", Histogram2DParams{}},
      {"amr_subbox_fetch_pack", AmrSubboxPackParams{}},
      {"gradU_stencil", GradStencilParams{}},
      {"vorticity_mag", std::monostate{}},
      {"flux_surface_integral_accumulate", FluxSurfaceParams{}},
      {"cylindrical_flux_surface_integral_accumulate", CylindricalFluxParams{}},
      {"toomre_profile_accumulate", ToomreProfileParams{}},
      {"particle_load_field_chunk_f64", particle_params()},
      {"particle_eq_mask", ScalarParams{}},
      {"particle_ne_mask", ScalarParams{}},
      {"particle_lt_mask", ScalarParams{}},
      {"particle_le_mask", ScalarParams{}},
      {"particle_gt_mask", ScalarParams{}},
      {"particle_ge_mask", ScalarParams{}},
      {"particle_abs_lt_mask", ScalarParams{}},
      {"particle_isin_mask", ValuesParams{}},
      {"particle_isfinite_mask", std::monostate{}},
      {"particle_add_scalar", ScalarParams{}},
      {"particle_subtract_scalar", ScalarParams{}},
      {"particle_rsubtract_scalar", ScalarParams{}},
      {"particle_multiply_scalar", ScalarParams{}},
      {"particle_divide_scalar", ScalarParams{}},
      {"particle_rdivide_scalar", ScalarParams{}},
      {"particle_power_scalar", ScalarParams{}},
      {"particle_rpower_scalar", ScalarParams{}},
      {"particle_min", FiniteOnlyParams{}},
      {"particle_max", FiniteOnlyParams{}},
      {"particle_histogram1d", ParticleHistogramParams{}},
      {"particle_histogram1d_weighted", ParticleHistogramParams{}},
      {"particle_topk_modes_map", particle_params()},
      {"particle_topk_modes_finalize", TopKModesParams{}},
      {"particle_cic_grid_accumulate", ParticleCicGridParams{}},
      {"particle_cic_projection_accumulate", ParticleCicProjectionParams{}},
      {"plotfile_load", PlotfileLoadParams{}},
  };
  return list;
}

TEST(Prepare, Val10MatchingAlternativesAreAccepted) {
  for (const auto& [kernel, params] : documented_alternatives()) {
    SCOPED_TRACE(kernel);
    const auto issues = prepare_issues(plan_with_target(make_template(kernel, params)));
    EXPECT_TRUE(issues.empty()) << describe(issues);
  }
}

TEST(Prepare, Val10EveryTemplateIsChecked) {
  Stage s = make_stage("s", {},
                       {make_template("field_expr", expr_params()), make_template("particle_max"),
                        make_template("particle_eq_mask", ScalarParams{})});
  const auto issues = prepare_issues(plan_of({std::move(s)}));
  const PlanIssue* i =
      find_issue(issues, "kernel particle_max received incompatible typed parameters");
  ASSERT_NE(i, nullptr) << describe(issues);
  EXPECT_EQ(i->stage, 0);
  EXPECT_EQ(i->template_index, 1);
  EXPECT_EQ(issues.size(), 1u) << describe(issues);
}

// ---------------------------------------------------------------------------
// VAL-11: dynamic bounds that need an evaluator

TEST(Prepare, Val11BackendChunkWithoutEvaluatorIsRejected) {
  TaskTemplate t = make_template("field_expr", expr_params());
  t.outputs = {dynamic_output(200, BoundKind::backend_chunk)};
  const auto issues = prepare_issues(plan_with_target(std::move(t)));
  const PlanIssue* i =
      find_issue(issues, "kernel field_expr does not define its dynamic output bound");
  ASSERT_NE(i, nullptr) << describe(issues);
  EXPECT_EQ(i->stage, 1);
  EXPECT_EQ(i->template_index, 1);
}

TEST(Prepare, Val11AmrSubboxPackWithoutEvaluatorIsRejected) {
  TaskTemplate t = make_template("particle_isfinite_mask");
  t.outputs = {dynamic_output(200, BoundKind::amr_subbox_pack, ScalarType::opaque)};
  const auto issues = prepare_issues(plan_with_target(std::move(t)));
  EXPECT_NE(
      find_issue(issues, "kernel particle_isfinite_mask does not define its dynamic output bound"),
      nullptr)
      << describe(issues);
}

TEST(Prepare, Val11AnyOutputIsChecked) {
  TaskTemplate t = make_template("field_expr", expr_params());
  t.outputs = {fixed_output(200), dynamic_output(201, BoundKind::literal),
               dynamic_output(202, BoundKind::backend_chunk)};
  const auto issues = prepare_issues(plan_with_target(std::move(t)));
  EXPECT_NE(find_issue(issues, "does not define its dynamic output bound"), nullptr)
      << describe(issues);
}

TEST(Prepare, Val11KernelsWithEvaluatorsAreAccepted) {
  // KREG-6 reference evaluators; OP-PART-1/8 and OP-GRAD-1 name the bounds.
  struct Case {
    std::string kernel;
    KernelParams params;
    BoundKind bound;
    ScalarType dtype;
  };
  const std::vector<Case> cases = {
      {"particle_load_field_chunk_f64", particle_params(), BoundKind::backend_chunk,
       ScalarType::f64},
      {"particle_topk_modes_map", particle_params(), BoundKind::backend_chunk, ScalarType::opaque},
      {"particle_value_counts_reduce", std::monostate{}, BoundKind::backend_chunk,
       ScalarType::opaque},
      {"amr_subbox_fetch_pack", AmrSubboxPackParams{}, BoundKind::amr_subbox_pack,
       ScalarType::opaque},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.kernel);
    TaskTemplate t = make_template(c.kernel, c.params);
    t.outputs = {dynamic_output(300, c.bound, c.dtype)};
    const auto issues = prepare_issues(plan_with_target(std::move(t)));
    EXPECT_TRUE(issues.empty()) << describe(issues);
  }
}

TEST(Prepare, Val11LiteralAndLikeInputBoundsNeedNoEvaluator) {
  for (BoundKind b : {BoundKind::literal, BoundKind::like_input}) {
    TaskTemplate t = make_template("field_expr", expr_params());
    t.outputs = {dynamic_output(200, b)};
    const auto issues = prepare_issues(plan_with_target(std::move(t)));
    EXPECT_TRUE(issues.empty()) << describe(issues);
  }
}

TEST(Prepare, Val11FollowsTheRegisteredEvaluatorNotTheName) {
  KernelRegistry r;
  r.add(make_kernel("plain", ParamType::none, &noop_kernel, 0, 1));
  r.add(make_kernel("bounded", ParamType::none, &noop_kernel, 0, 1, &fixed_bound));
  // A name that suggests a bound does not give it one.
  r.add(make_kernel("particle_load_field_chunk_f64_like", ParamType::none, &noop_kernel, 0, 1));
  for (BoundKind b : {BoundKind::backend_chunk, BoundKind::amr_subbox_pack}) {
    for (const std::string name : {"plain", "particle_load_field_chunk_f64_like"}) {
      TaskTemplate t = make_template(name);
      t.outputs = {dynamic_output(1, b)};
      const auto issues = prepare_issues(plan_of({make_stage("s", {}, {t})}), r);
      EXPECT_NE(find_issue(issues, "kernel " + name + " does not define its dynamic output bound"),
                nullptr)
          << describe(issues);
    }
    TaskTemplate t = make_template("bounded");
    t.outputs = {dynamic_output(1, b)};
    EXPECT_TRUE(prepare_issues(plan_of({make_stage("s", {}, {t})}), r).empty());
  }
}

// ---------------------------------------------------------------------------
// DAG-1 / DAG-2 / DAG-5

TEST(Prepare, Dag1AfterIndexOutOfRange) {
  for (std::int32_t bad : {3, 100, -1, std::numeric_limits<std::int32_t>::max(),
                           std::numeric_limits<std::int32_t>::min()}) {
    SCOPED_TRACE(bad);
    Plan p = plan_of({ok_stage("a"), ok_stage("b", {0}), ok_stage("c", {1, bad})});
    const auto issues = prepare_issues(std::move(p));
    const PlanIssue* i = find_issue(issues, "stage dependency index out of range");
    ASSERT_NE(i, nullptr) << describe(issues);
    EXPECT_EQ(i->stage, 2);
  }
}

TEST(Prepare, Dag1CheckStageGraphAlone) {
  Plan p = plan_of({ok_stage("a", {1})});
  try {
    (void)check_stage_graph(p);
    FAIL() << "accepted";
  } catch (const PlanError& e) {
    EXPECT_NE(std::string(e.what()).find("stage dependency index out of range"), std::string::npos)
        << e.what();
  }
}

TEST(Prepare, Dag2SelfLoop) {
  Plan p = plan_of({ok_stage("a"), ok_stage("loop", {0, 1})});
  const auto issues = prepare_issues(std::move(p));
  EXPECT_NE(find_issue(issues, "stage dependency cycle detected"), nullptr) << describe(issues);
}

TEST(Prepare, Dag2TwoCycle) {
  Plan p = plan_of({ok_stage("a", {1}), ok_stage("b", {0})});
  const auto issues = prepare_issues(std::move(p));
  EXPECT_NE(find_issue(issues, "stage dependency cycle detected"), nullptr) << describe(issues);
}

TEST(Prepare, Dag2CycleAwayFromTheFirstStages) {
  // 0 and 1 are fine; 2 -> 4 -> 3 -> 2 is a cycle; 5 hangs off it.
  Plan p = plan_of({ok_stage("s0"), ok_stage("s1", {0}), ok_stage("s2", {1, 3}),
                    ok_stage("s3", {4}), ok_stage("s4", {2}), ok_stage("s5", {4})});
  const auto issues = prepare_issues(std::move(p));
  const PlanIssue* i = find_issue(issues, "stage dependency cycle detected");
  ASSERT_NE(i, nullptr) << describe(issues);
  EXPECT_TRUE(i->stage >= 2 && i->stage <= 5) << describe(issues);
}

TEST(Prepare, Dag2CheckStageGraphAlone) {
  const Plan p = plan_of({ok_stage("a", {2}), ok_stage("b", {0}), ok_stage("c", {1})});
  try {
    (void)check_stage_graph(p);
    FAIL() << "accepted";
  } catch (const PlanError& e) {
    EXPECT_NE(std::string(e.what()).find("stage dependency cycle detected"), std::string::npos)
        << e.what();
  }
}

TEST(Prepare, Dag2DecodedCycleIsCaughtBeforeAnythingRuns) {
  const std::string doc = R"({"schema":"kangaroo.plan/1","stages":[
      {"name":"a","after":[1],"templates":[]},
      {"name":"b","after":[0],"templates":[]}]})";
  const Plan p = decode_plan(doc);  // the decoder does not check the graph
  try {
    (void)prepare_plan(p, default_registry());
    FAIL() << "accepted";
  } catch (const PlanError& e) {
    EXPECT_NE(std::string(e.what()).find("stage dependency cycle detected"), std::string::npos)
        << e.what();
  }
}

TEST(Prepare, Dag5ZeroStagesIsValid) {
  const PreparedPlan prepared = prepare_ok(Plan{});
  EXPECT_TRUE(prepared.plan.stages.empty());
  EXPECT_TRUE(prepared.topo_order.empty());
  EXPECT_TRUE(prepared.entries.empty());
  EXPECT_TRUE(check_stage_graph(Plan{}).empty());
}

void expect_topological(const Plan& plan, const std::vector<int>& order) {
  ASSERT_EQ(order.size(), plan.stages.size());
  std::vector<int> pos(order.size(), -1);
  for (std::size_t i = 0; i < order.size(); ++i) {
    ASSERT_GE(order[i], 0);
    ASSERT_LT(static_cast<std::size_t>(order[i]), order.size());
    ASSERT_EQ(pos[static_cast<std::size_t>(order[i])], -1) << "stage listed twice";
    pos[static_cast<std::size_t>(order[i])] = static_cast<int>(i);
  }
  for (std::size_t s = 0; s < plan.stages.size(); ++s) {
    for (std::int32_t a : plan.stages[s].after) {
      EXPECT_LT(pos[static_cast<std::size_t>(a)], pos[s])
          << "stage " << s << " runs before its prerequisite " << a;
    }
  }
}

TEST(Prepare, TopologicalOrderRespectsAfter) {
  // Positions alone imply nothing (DAG-4): stage 0 waits for stage 3.
  const Plan p = plan_of({ok_stage("s0", {3}), ok_stage("s1", {0, 2}), ok_stage("s2"),
                          ok_stage("s3", {2}), ok_stage("s4", {1, 1}), ok_stage("s5")});
  const PreparedPlan prepared = prepare_ok(p);
  expect_topological(p, prepared.topo_order);
  expect_topological(p, check_stage_graph(p));
}

TEST(Prepare, DiamondAndDuplicateEdgesAreNotCycles) {
  const Plan p = plan_of({ok_stage("root"), ok_stage("left", {0}), ok_stage("right", {0, 0}),
                          ok_stage("join", {1, 2, 1})});
  const PreparedPlan prepared = prepare_ok(p);
  expect_topological(p, prepared.topo_order);
  EXPECT_EQ(prepared.topo_order.front(), 0);
  EXPECT_EQ(prepared.topo_order.back(), 3);
}

TEST(Prepare, DependentsListTheStagesThatWait) {
  const Plan p =
      plan_of({ok_stage("a"), ok_stage("b", {0}), ok_stage("c", {0}), ok_stage("d", {2})});
  const PreparedPlan prepared = prepare_ok(p);
  ASSERT_EQ(prepared.dependents.size(), 4u);
  auto sorted = [](std::vector<int> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  EXPECT_EQ(sorted(prepared.dependents[0]), (std::vector<int>{1, 2}));
  EXPECT_TRUE(prepared.dependents[1].empty());
  EXPECT_EQ(sorted(prepared.dependents[2]), std::vector<int>{3});
  EXPECT_TRUE(prepared.dependents[3].empty());
}

TEST(Prepare, EntriesPointAtTheRegistry) {
  const Plan p = plan_of(
      {make_stage("s", {},
                  {make_template("field_expr", expr_params()), make_template("particle_sum")}),
       ok_stage("t", {0})});
  const PreparedPlan prepared = prepare_ok(p);
  ASSERT_EQ(prepared.entries.size(), 2u);
  ASSERT_EQ(prepared.entries[0].size(), 2u);
  EXPECT_EQ(prepared.entries[0][0], default_registry().try_find("field_expr"));
  EXPECT_EQ(prepared.entries[0][1], default_registry().try_find("particle_sum"));
  ASSERT_EQ(prepared.entries[1].size(), 1u);
  EXPECT_EQ(prepared.entries[1][0]->descriptor.name, "particle_isfinite_mask");
  EXPECT_EQ(prepared.plan.stages.size(), 2u);
}

TEST(Prepare, EveryIssueIsReported) {
  TaskTemplate bad_bound = make_template("field_expr", expr_params());
  bad_bound.outputs = {dynamic_output(5, BoundKind::amr_subbox_pack)};
  const Plan p =
      plan_of({make_stage("a", {1}, {make_template("missing")}),
               make_stage("b", {0}, {make_template("field_expr", ScalarParams{}), bad_bound})});
  const auto issues = prepare_issues(p);
  EXPECT_NE(find_issue(issues, "kernel not found: missing"), nullptr) << describe(issues);
  EXPECT_NE(find_issue(issues, "received incompatible typed parameters"), nullptr)
      << describe(issues);
  EXPECT_NE(find_issue(issues, "does not define its dynamic output bound"), nullptr)
      << describe(issues);
  EXPECT_NE(find_issue(issues, "stage dependency cycle detected"), nullptr) << describe(issues);
}

TEST(Prepare, DecodedExamplePlanPrepares) {
  const std::filesystem::path example = std::filesystem::path(__FILE__).parent_path() / ".." /
                                        ".." / "docs" / "examples" / "plan_example.json";
  std::ifstream in(example);
  if (!in) GTEST_SKIP() << "example not found at " << example;
  std::stringstream ss;
  ss << in.rdbuf();
  const Plan p = decode_plan(ss.str());
  const PreparedPlan prepared = prepare_ok(p);
  expect_topological(p, prepared.topo_order);
}

// ---------------------------------------------------------------------------
// Registry (KREG-1..7)

// KREG-7, copied from the contract.
const std::vector<std::string>& catalog_names() {
  static const std::vector<std::string> names = {
      "amr_subbox_fetch_pack",
      "gradU_stencil",
      "plotfile_load",
      "uniform_slice",
      "uniform_slice_cellavg_accumulate",
      "uniform_projection_accumulate",
      "uniform_slice_add",
      "uniform_slice_reduce",
      "uniform_slice_finalize",
      "field_expr",
      "mesh_compare",
      "mesh_mask_and",
      "vorticity_mag",
      "histogram1d_accumulate",
      "histogram2d_accumulate",
      "flux_surface_integral_accumulate",
      "cylindrical_flux_surface_integral_accumulate",
      "toomre_profile_accumulate",
      "particle_load_field_chunk_f64",
      "particle_cic_grid_accumulate",
      "particle_cic_projection_accumulate",
      "particle_eq_mask",
      "particle_ne_mask",
      "particle_lt_mask",
      "particle_le_mask",
      "particle_gt_mask",
      "particle_ge_mask",
      "particle_abs_lt_mask",
      "particle_isin_mask",
      "particle_isfinite_mask",
      "particle_and_mask",
      "particle_filter",
      "particle_add",
      "particle_subtract",
      "particle_multiply",
      "particle_divide",
      "particle_power",
      "particle_add_scalar",
      "particle_subtract_scalar",
      "particle_rsubtract_scalar",
      "particle_multiply_scalar",
      "particle_divide_scalar",
      "particle_rdivide_scalar",
      "particle_power_scalar",
      "particle_rpower_scalar",
      "particle_distance3",
      "particle_sum",
      "particle_count",
      "particle_len_f64",
      "particle_min",
      "particle_max",
      "particle_histogram1d",
      "particle_histogram1d_weighted",
      "particle_topk_modes_map",
      "particle_value_counts_reduce",
      "particle_topk_modes_finalize",
      "particle_int64_sum_reduce",
      "particle_scalar_min_reduce",
      "particle_scalar_max_reduce",
  };
  return names;
}

TEST(Registry, Kreg7DefaultCatalogHasExactlyTheContractNames) {
  ASSERT_EQ(catalog_names().size(), 59u);
  const std::set<std::string> expected(catalog_names().begin(), catalog_names().end());
  ASSERT_EQ(expected.size(), 59u) << "the list above has duplicates";
  const KernelRegistry& r = default_registry();
  EXPECT_EQ(r.size(), 59u);
  std::multiset<std::string> listed;
  for (const KernelDescriptor* d : r.list()) {
    ASSERT_NE(d, nullptr);
    listed.insert(d->name);
  }
  EXPECT_EQ(listed.size(), 59u);
  for (const auto& name : expected) {
    EXPECT_EQ(listed.count(name), 1u) << name;
    EXPECT_NE(r.try_find(name), nullptr) << name;
  }
  for (const auto& name : listed)
    EXPECT_TRUE(expected.count(name)) << "unexpected kernel " << name;
}

TEST(Registry, Kreg4ListingHasEachDescriptorOnce) {
  const auto list = default_registry().list();
  std::set<const KernelDescriptor*> seen(list.begin(), list.end());
  EXPECT_EQ(seen.size(), list.size());
}

TEST(Registry, Kreg3DescriptorNamesMatchTheirKeys) {
  for (const auto& name : catalog_names()) {
    const KernelEntry* e = default_registry().try_find(name);
    ASSERT_NE(e, nullptr) << name;
    EXPECT_EQ(e->descriptor.name, name);
    EXPECT_NE(e->fn, nullptr) << name;
  }
}

TEST(Registry, Kreg2DocumentedParameterAlternatives) {
  for (const auto& [kernel, params] : documented_alternatives()) {
    SCOPED_TRACE(kernel);
    const KernelEntry* e = default_registry().try_find(kernel);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->param_type, param_type_of(params));
  }
}

TEST(Registry, Kreg6ReferenceEvaluatorsAreRegistered) {
  for (const std::string name : {"particle_load_field_chunk_f64", "particle_topk_modes_map",
                                 "particle_value_counts_reduce", "amr_subbox_fetch_pack"}) {
    const KernelEntry* e = default_registry().try_find(name);
    ASSERT_NE(e, nullptr) << name;
    EXPECT_NE(e->bound, nullptr) << name;
  }
}

TEST(Registry, Kreg4UnknownNameFails) {
  const KernelRegistry& r = default_registry();
  EXPECT_EQ(r.try_find("no_such_kernel"), nullptr);
  EXPECT_EQ(r.try_find("particle_topk_modes"), nullptr)
      << "the alias would make the catalog 60 names (KREG-7)";
  try {
    (void)r.find("no_such_kernel");
    FAIL() << "found";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("kernel not found: no_such_kernel"), std::string::npos)
        << e.what();
    EXPECT_EQ(e.kind(), ErrorKind::not_found);
  }
  KernelRegistry empty;
  EXPECT_EQ(empty.size(), 0u);
  EXPECT_TRUE(empty.list().empty());
  EXPECT_THROW((void)empty.find("field_expr"), Error);
}

TEST(Registry, Kreg1ReRegisteringReplaces) {
  KernelRegistry r;
  r.add(make_kernel("k", ParamType::none, &noop_kernel, 1, 1));
  r.add(make_kernel("other", ParamType::none, &noop_kernel, 1, 1));
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r.find("k").param_type, ParamType::none);
  r.add(make_kernel("k", ParamType::ScalarParams, &noop_kernel, 3, 2, &fixed_bound));
  EXPECT_EQ(r.size(), 2u);
  EXPECT_EQ(r.list().size(), 2u);
  const KernelEntry& e = r.find("k");
  EXPECT_EQ(e.param_type, ParamType::ScalarParams);
  EXPECT_EQ(e.descriptor.n_inputs, 3);
  EXPECT_EQ(e.descriptor.n_outputs, 2);
  EXPECT_NE(e.bound, nullptr);
}

TEST(Registry, Kreg1ReplacedDefaultChangesPreparation) {
  KernelRegistry r;
  register_default_kernels(r);
  r.add(make_kernel("field_expr", ParamType::ScalarParams, &noop_kernel, 1, 1));
  EXPECT_EQ(r.size(), 59u);
  EXPECT_TRUE(prepare_issues(
                  plan_of({make_stage("s", {}, {make_template("field_expr", ScalarParams{})})}), r)
                  .empty());
  const auto issues = prepare_issues(
      plan_of({make_stage("s", {}, {make_template("field_expr", expr_params())})}), r);
  EXPECT_NE(find_issue(issues, "kernel field_expr received incompatible typed parameters"), nullptr)
      << describe(issues);
}

TEST(Registry, RegisteringTwiceKeepsTheCatalogSize) {
  KernelRegistry r;
  register_default_kernels(r);
  register_default_kernels(r);
  EXPECT_EQ(r.size(), 59u);
}

}  // namespace
}  // namespace kangaroo
