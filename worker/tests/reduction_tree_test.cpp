// Graph templates (§4.3, RED-1..9) and multi-round fan-in reduction trees
// built the way the SDK lowers block reductions (LOW-6, one rank).
//
// Leaves hold small integer-valued doubles so every sum is exact and the
// expected result is a plain loop over the leaves.
#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "exec_test_support.h"
#include "kangaroo/core/error.h"

namespace kangaroo {
namespace {

using namespace exec_testing;

struct GroupCall {
  std::string kernel;
  std::int32_t step = 0, level = 0, block = 0;
  std::vector<std::vector<double>> inputs;
};

std::mutex g_mu;
std::vector<GroupCall> g_calls;

void reset_calls() {
  std::lock_guard lk(g_mu);
  g_calls.clear();
}

std::vector<GroupCall> calls_of(const std::string& kernel) {
  std::lock_guard lk(g_mu);
  std::vector<GroupCall> out;
  for (auto& c : g_calls) {
    if (c.kernel == kernel) out.push_back(c);
  }
  std::sort(out.begin(), out.end(), [](const GroupCall& a, const GroupCall& b) { return a.block < b.block; });
  return out;
}

// Output 0 = elementwise sum of all inputs; records what the group received.
void rsum_kernel(KernelContext& ctx) {
  GroupCall c;
  c.kernel = std::string(ctx.kernel);
  c.step = ctx.step;
  c.level = ctx.level;
  c.block = ctx.block;
  for (const auto& in : ctx.inputs) c.inputs.push_back(values_of(*in));
  {
    std::lock_guard lk(g_mu);
    g_calls.push_back(c);
  }
  Buffer& out = *ctx.outputs[0];
  const std::uint64_t n = out.descriptor().element_count();
  double* d = out.elements<double>();
  for (std::uint64_t p = 0; p < n; ++p) d[p] = 0.0;
  for (const auto& in : ctx.inputs) {
    if (in->descriptor().element_count() != n) fail(ErrorKind::kernel, "rsum: input size mismatch");
    for (std::uint64_t p = 0; p < n; ++p) d[p] += in->element_as_double(p);
  }
}

// Writes 1000 + block into a Fixed {1} output (a producer for RED-9).
void block_id_kernel(KernelContext& ctx) { ctx.outputs[0]->elements<double>()[0] = 1000.0 + ctx.block; }

constexpr int kRoundKernels = 16;

class ReductionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    reset_calls();
    h.add("rsum", rsum_kernel);
    h.add("block_id", block_id_kernel);
    for (int r = 1; r <= kRoundKernels; ++r) h.add("round" + std::to_string(r), rsum_kernel);
  }

  // Field `field` at (step, level), blocks [0, n): Fixed {1} holding base + b.
  void seed_scalar(std::int32_t field, std::int32_t n, double base, std::int32_t level = 0) {
    for (std::int32_t b = 0; b < n; ++b) h.dataset->set_chunk(cid(0, level, field, 0, b), f64_scalar(base + b));
  }

  Plan one_graph_stage(std::vector<FieldRef> inputs, GraphReduceSpec spec, Domain dom = domain(0, 0),
                       std::int32_t out_field = 50) {
    return plan_of({stage("reduce", Plane::graph,
                          {graph_template("g", "rsum", std::move(dom), std::move(inputs),
                                          {output(out_field, fixed_spec({1}))}, std::move(spec))})});
  }

  static std::vector<std::vector<double>> scalars(std::initializer_list<double> v) {
    std::vector<std::vector<double>> out;
    for (double x : v) out.push_back({x});
    return out;
  }

  Harness h;
};

// RED-1..4 with the default grouping (no offsets, no explicit blocks).
TEST_F(ReductionTest, DefaultGroupingUsesFanInAndBases) {
  const RunMeta meta = line_meta(20);
  seed_scalar(1, 20, 0.0);
  GraphReduceSpec g;
  g.fan_in = 3;
  g.num_inputs = 10;
  g.input_base = 2;
  g.output_base = 5;
  auto stats = h.run(one_graph_stage({input(1)}, g), meta);
  EXPECT_EQ(stats.tasks_total, 4u);  // ceil(10 / 3)
  EXPECT_EQ(stats.tasks_run, 4u);
  auto cs = calls_of("rsum");
  ASSERT_EQ(cs.size(), 4u);
  EXPECT_EQ(cs[0].block, 5);
  EXPECT_EQ(cs[0].inputs, scalars({2, 3, 4}));
  EXPECT_EQ(cs[1].block, 6);
  EXPECT_EQ(cs[1].inputs, scalars({5, 6, 7}));
  EXPECT_EQ(cs[2].block, 7);
  EXPECT_EQ(cs[2].inputs, scalars({8, 9, 10}));
  EXPECT_EQ(cs[3].block, 8);
  EXPECT_EQ(cs[3].inputs, scalars({11}));
  EXPECT_EQ(h.values(cid(0, 0, 50, 0, 5)), (std::vector<double>{9.0}));
  EXPECT_EQ(h.values(cid(0, 0, 50, 0, 6)), (std::vector<double>{18.0}));
  EXPECT_EQ(h.values(cid(0, 0, 50, 0, 7)), (std::vector<double>{27.0}));
  EXPECT_EQ(h.values(cid(0, 0, 50, 0, 8)), (std::vector<double>{11.0}));
  EXPECT_FALSE(h.session->store().contains(cid(0, 0, 50, 0, 0)));
  EXPECT_FALSE(h.session->store().contains(cid(0, 0, 50, 0, 9)));
}

TEST_F(ReductionTest, GroupOffsetsDefineGroupsAndOverrideFanIn) {
  const RunMeta meta = line_meta(10);
  seed_scalar(1, 10, 10.0);
  GraphReduceSpec g;
  g.fan_in = 2;  // ignored: offsets decide
  g.num_inputs = 6;
  g.group_offsets = {0, 1, 4, 6};
  g.output_base = 3;
  auto stats = h.run(one_graph_stage({input(1)}, g), meta);
  EXPECT_EQ(stats.tasks_total, 3u);
  auto cs = calls_of("rsum");
  ASSERT_EQ(cs.size(), 3u);
  EXPECT_EQ(cs[0].block, 3);
  EXPECT_EQ(cs[0].inputs, scalars({10}));
  EXPECT_EQ(cs[1].block, 4);
  EXPECT_EQ(cs[1].inputs, scalars({11, 12, 13}));
  EXPECT_EQ(cs[2].block, 5);
  EXPECT_EQ(cs[2].inputs, scalars({14, 15}));
}

TEST_F(ReductionTest, ExplicitInputAndOutputBlocks) {
  const RunMeta meta = line_meta(10);
  seed_scalar(1, 10, 0.0);
  GraphReduceSpec g;
  g.fan_in = 2;
  g.num_inputs = 5;
  g.input_blocks = {9, 0, 4, 4, 7};
  g.output_blocks = {8, 1, 6};
  g.input_base = 100;   // ignored: explicit blocks
  g.output_base = 100;  // ignored
  h.run(one_graph_stage({input(1)}, g), meta);
  auto cs = calls_of("rsum");
  ASSERT_EQ(cs.size(), 3u);
  EXPECT_EQ(cs[0].block, 1);
  EXPECT_EQ(cs[0].inputs, scalars({4, 4}));
  EXPECT_EQ(cs[1].block, 6);
  EXPECT_EQ(cs[1].inputs, scalars({7}));
  EXPECT_EQ(cs[2].block, 8);
  EXPECT_EQ(cs[2].inputs, scalars({9, 0}));
  EXPECT_EQ(h.values(cid(0, 0, 50, 0, 8)), (std::vector<double>{9.0}));
}

// RED-5: all positions of input 0, then all positions of input 1.
TEST_F(ReductionTest, InputsArriveGroupedInputMajor) {
  const RunMeta meta = line_meta(6);
  seed_scalar(1, 6, 0.0);
  seed_scalar(2, 6, 100.0);
  GraphReduceSpec g;
  g.fan_in = 3;
  g.num_inputs = 6;
  h.run(one_graph_stage({input(1), input(2)}, g), meta);
  auto cs = calls_of("rsum");
  ASSERT_EQ(cs.size(), 2u);
  EXPECT_EQ(cs[0].inputs, scalars({0, 1, 2, 100, 101, 102}));
  EXPECT_EQ(cs[1].inputs, scalars({3, 4, 5, 103, 104, 105}));
}

// RED-4, DOM-5: an override's step and level apply, its block list does not.
TEST_F(ReductionTest, InputOverrideStepLevelApplyButBlocksAreIgnored) {
  RunMeta meta = make_meta({unit_blocks(4), unit_blocks(4)});
  seed_scalar(1, 4, 0.0, 0);
  seed_scalar(1, 4, 500.0, 1);
  GraphReduceSpec g;
  g.fan_in = 2;
  g.num_inputs = 4;
  h.run(one_graph_stage({input(1, 0, domain(0, 1, std::vector<std::int32_t>{3})), input(1)}, g, domain(0, 0)), meta);
  auto cs = calls_of("rsum");
  ASSERT_EQ(cs.size(), 2u);
  EXPECT_EQ(cs[0].inputs, scalars({500, 501, 0, 1}));
  EXPECT_EQ(cs[1].inputs, scalars({502, 503, 2, 3}));

  // Outputs are written at the template's step and level.
  h.reset_session();
  reset_calls();
  h.run(one_graph_stage({input(1)}, g, domain(0, 1)), meta);
  EXPECT_EQ(h.values(cid(0, 1, 50, 0, 0)), (std::vector<double>{1001.0}));
  EXPECT_EQ(h.values(cid(0, 1, 50, 0, 1)), (std::vector<double>{1005.0}));
  EXPECT_FALSE(h.session->store().contains(cid(0, 0, 50, 0, 0)));
  for (auto& c : calls_of("rsum")) EXPECT_EQ(c.level, 1);
}

// RED-7 worked example.
TEST_F(ReductionTest, WorkedExample) {
  const RunMeta meta = line_meta(21);
  seed_scalar(1, 4, 1.0);  // block b holds b + 1
  GraphReduceSpec g;
  g.fan_in = 4;
  g.num_inputs = 4;
  g.input_blocks = {0, 2, 1, 3};
  g.group_offsets = {0, 2, 4};
  g.output_blocks = {10, 20};
  auto stats = h.run(one_graph_stage({input(1)}, g), meta);
  EXPECT_EQ(stats.tasks_total, 2u);
  auto cs = calls_of("rsum");
  ASSERT_EQ(cs.size(), 2u);
  EXPECT_EQ(cs[0].block, 10);
  EXPECT_EQ(cs[0].inputs, scalars({1, 3}));  // blocks 0 and 2
  EXPECT_EQ(cs[1].block, 20);
  EXPECT_EQ(cs[1].inputs, scalars({2, 4}));  // blocks 1 and 3
  EXPECT_EQ(h.values(cid(0, 0, 50, 0, 10)), (std::vector<double>{4.0}));
  EXPECT_EQ(h.values(cid(0, 0, 50, 0, 20)), (std::vector<double>{6.0}));
}

// RED-8: 96 groups of fan_in 1 all reading block 0.
TEST_F(ReductionTest, ManyPositionsMayNameTheSameBlock) {
  const RunMeta meta = line_meta(96);
  h.dataset->set_chunk(cid(0, 0, 1, 0, 0), f64_buffer({2}, {7.0, -3.0}));
  GraphReduceSpec g;
  g.fan_in = 1;
  g.num_inputs = 96;
  g.input_blocks.assign(96, 0);
  for (int threads : {1, 4}) {
    h.reset_session();
    reset_calls();
    Plan plan = plan_of({stage("fan", Plane::graph,
                               {graph_template("g", "rsum", domain(0, 0), {input(1)}, {output(50, fixed_spec({2}))}, g)})});
    auto stats = h.run(plan, meta, threads_opt(threads));
    EXPECT_EQ(stats.tasks_run, 96u);
    for (std::int32_t b = 0; b < 96; ++b) {
      EXPECT_EQ(h.values(cid(0, 0, 50, 0, b)), (std::vector<double>{7.0, -3.0})) << b;
    }
  }
}

// RED-9: a group may write the identity it read.
TEST_F(ReductionTest, GroupOutputMayReplaceAnInputIdentityFromTheDataset) {
  const RunMeta meta = line_meta(4);
  seed_scalar(1, 4, 1.0);  // 1, 2, 3, 4
  GraphReduceSpec g;
  g.fan_in = 4;
  g.num_inputs = 4;
  g.output_blocks = {0};
  auto stats = h.run(one_graph_stage({input(1)}, g, domain(0, 0), /*out_field=*/1), meta);
  EXPECT_EQ(h.values(cid(0, 0, 1, 0, 0)), (std::vector<double>{10.0}));
  ASSERT_EQ(stats.produced.size(), 1u);
  EXPECT_EQ(stats.produced[0], cid(0, 0, 1, 0, 0));
  // The dataset itself is untouched; the session answers with the new value.
  EXPECT_EQ(values_of(*h.dataset->get_chunk(cid(0, 0, 1, 0, 0))), (std::vector<double>{1.0}));
}

TEST_F(ReductionTest, GroupOutputMayReplaceAnInputIdentityProducedByTheRun) {
  const RunMeta meta = line_meta(4);
  GraphReduceSpec g;
  g.fan_in = 2;
  g.num_inputs = 4;
  g.output_blocks = {0, 2};
  for (int threads : {1, 3}) {
    h.reset_session();
    auto stats = h.run(
        plan_of({stage("make", Plane::chunk,
                       {chunk_template("m", "block_id", domain(0, 0), {}, {output(30, fixed_spec({1}))})}),
                 stage("fold", Plane::graph,
                       {graph_template("g", "rsum", domain(0, 0), {input(30)}, {output(30, fixed_spec({1}))}, g)}, {0})}),
        meta, threads_opt(threads));
    EXPECT_EQ(h.values(cid(0, 0, 30, 0, 0)), (std::vector<double>{1000.0 + 1001.0})) << threads;
    EXPECT_EQ(h.values(cid(0, 0, 30, 0, 2)), (std::vector<double>{1002.0 + 1003.0})) << threads;
    // Blocks 1 and 3 were consumed intermediates.
    EXPECT_FALSE(h.session->store().contains(cid(0, 0, 30, 0, 1)));
    EXPECT_FALSE(h.session->store().contains(cid(0, 0, 30, 0, 3)));
    std::vector<std::int32_t> produced;
    for (auto& id : stats.produced) produced.push_back(id.block);
    std::sort(produced.begin(), produced.end());
    EXPECT_EQ(produced, (std::vector<std::int32_t>{0, 2}));
  }
}

// RED-2: a group with start >= end completes without running its kernel.
TEST_F(ReductionTest, EmptyGroupCompletesWithoutRunning) {
  const RunMeta meta = line_meta(8);
  seed_scalar(1, 8, 0.0);
  GraphReduceSpec g;
  g.num_inputs = 4;
  g.group_offsets = {0, 2, 2, 4};
  auto stats = h.run(one_graph_stage({input(1)}, g), meta);
  EXPECT_EQ(stats.tasks_total, 3u);
  EXPECT_EQ(stats.tasks_run, 2u);
  EXPECT_EQ(stats.tasks_empty, 1u);
  auto cs = calls_of("rsum");
  ASSERT_EQ(cs.size(), 2u);
  EXPECT_EQ(cs[0].block, 0);
  EXPECT_EQ(cs[1].block, 2);
  EXPECT_FALSE(h.session->store().contains(cid(0, 0, 50, 0, 1)));
  EXPECT_EQ(h.values(cid(0, 0, 50, 0, 2)), (std::vector<double>{5.0}));
}

// EXEC-7: a graph template may produce exactly its group output blocks; a
// consumer listed earlier (no `after` edge) waits for them.
TEST_F(ReductionTest, ConsumersWaitForGraphOutputsListedLater) {
  const RunMeta meta = line_meta(10);
  seed_scalar(1, 4, 1.0);  // 1, 2, 3, 4
  auto run_case = [&](GraphReduceSpec g, std::vector<std::int32_t> consumer_blocks) {
    h.reset_session();
    return h.run(plan_of({stage("consume", Plane::chunk,
                                {chunk_template("c", "rsum", domain(0, 0, std::move(consumer_blocks)), {input(50)},
                                                {output(51, fixed_spec({1}))})}),
                          stage("reduce", Plane::graph,
                                {graph_template("g", "rsum", domain(0, 0), {input(1)}, {output(50, fixed_spec({1}))},
                                                std::move(g))})}),
                 meta, threads_opt(2));
  };
  GraphReduceSpec by_base;
  by_base.fan_in = 2;
  by_base.num_inputs = 4;
  by_base.output_base = 2;
  run_case(by_base, {3, 2});
  EXPECT_EQ(h.values(cid(0, 0, 51, 0, 2)), (std::vector<double>{3.0}));
  EXPECT_EQ(h.values(cid(0, 0, 51, 0, 3)), (std::vector<double>{7.0}));

  GraphReduceSpec listed = by_base;
  listed.output_blocks = {7, 1};
  run_case(listed, {1, 7});
  EXPECT_EQ(h.values(cid(0, 0, 51, 0, 7)), (std::vector<double>{3.0}));
  EXPECT_EQ(h.values(cid(0, 0, 51, 0, 1)), (std::vector<double>{7.0}));

  // Blocks outside the group output set are not producible: immediate failure.
  for (auto [spec, block] : {std::pair{by_base, 4}, std::pair{by_base, 1}, std::pair{listed, 2}}) {
    std::string msg;
    try {
      run_case(spec, {block});
    } catch (const std::exception& e) {
      msg = e.what();
    }
    EXPECT_NE(msg.find("chunk is not available from run dataset or planned outputs"), std::string::npos)
        << "block " << block << ": " << msg;
  }
}

// An empty group publishes nothing, so a consumer of its block fails instead
// of waiting forever.
TEST_F(ReductionTest, ReadingTheOutputOfAnEmptyGroupFails) {
  const RunMeta meta = line_meta(4);
  seed_scalar(1, 4, 1.0);
  GraphReduceSpec g;
  g.num_inputs = 4;
  g.group_offsets = {0, 4, 4};
  g.output_blocks = {0, 1};
  std::string msg;
  try {
    h.run(plan_of({stage("consume", Plane::chunk,
                         {chunk_template("c", "rsum", domain(0, 0, std::vector<std::int32_t>{1}), {input(50)},
                                         {output(51, fixed_spec({1}))})}),
                   stage("reduce", Plane::graph,
                         {graph_template("g", "rsum", domain(0, 0), {input(1)}, {output(50, fixed_spec({1}))}, g)})}),
          meta, threads_opt(2));
  } catch (const std::exception& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("chunk is not available"), std::string::npos) << msg;
}

// ---------------------------------------------------------------------------
// LOW-6 trees

struct Tree {
  Plan plan;
  std::int64_t rounds = 0;
  std::uint64_t groups = 0;
  std::vector<std::vector<std::int32_t>> round_outputs;
};

// Block reduction of `field` over `blocks` with fan-in `f >= 2` on one rank:
// rounds of consecutive groups of f, the last round writing `field` itself.
Tree build_tree(std::int32_t field, std::vector<std::int32_t> blocks, std::int64_t f, std::int32_t first_temp,
                std::uint64_t leaf_extent) {
  Tree t;
  std::int32_t current = field;
  std::int32_t next_temp = first_temp;
  while (blocks.size() > 1) {
    const auto n = static_cast<std::int64_t>(blocks.size());
    GraphReduceSpec g;
    g.fan_in = f;
    g.num_inputs = n;
    g.input_blocks = blocks;
    g.group_offsets.push_back(0);
    std::vector<std::int32_t> outs;
    for (std::int64_t start = 0; start < n; start += f) {
      outs.push_back(blocks[static_cast<std::size_t>(start)]);
      g.group_offsets.push_back(std::min(start + f, n));
    }
    const bool single = outs.size() == 1;
    if (single) outs = {0};
    g.output_blocks = outs;
    const std::int32_t out_field = single ? field : next_temp++;
    ++t.rounds;
    t.groups += outs.size();
    std::vector<std::int32_t> after;
    if (t.rounds > 1) after.push_back(static_cast<std::int32_t>(t.rounds - 2));
    t.plan.stages.push_back(stage("round" + std::to_string(t.rounds), Plane::graph,
                                  {graph_template("r", "round" + std::to_string(t.rounds), domain(0, 0), {input(current)},
                                                  {output(out_field, fixed_spec({leaf_extent}))}, g)},
                                  after));
    t.round_outputs.push_back(outs);
    current = out_field;
    blocks = outs;
  }
  return t;
}

std::vector<double> leaf_values(std::int32_t b) {
  return {b + 1.0, 2.0 * b - 7.0, static_cast<double>((b * b) % 11)};
}

TEST_F(ReductionTest, SixteenBlocksFanInFourGivesTheDocumentedRounds) {
  const RunMeta meta = line_meta(16);
  for (std::int32_t b = 0; b < 16; ++b) h.dataset->set_chunk(cid(0, 0, 1, 0, b), f64_scalar(b));
  std::vector<std::int32_t> blocks(16);
  for (std::int32_t b = 0; b < 16; ++b) blocks[static_cast<std::size_t>(b)] = b;
  Tree t = build_tree(1, blocks, 4, 900, 1);
  ASSERT_EQ(t.rounds, 2);
  h.run(t.plan, meta, threads_opt(2));
  std::vector<std::int32_t> r1;
  for (auto& c : calls_of("round1")) r1.push_back(c.block);
  EXPECT_EQ(r1, (std::vector<std::int32_t>{0, 4, 8, 12}));
  auto r2 = calls_of("round2");
  ASSERT_EQ(r2.size(), 1u);
  EXPECT_EQ(r2[0].block, 0);
  // Partial sums of 0..3, 4..7, 8..11, 12..15.
  EXPECT_EQ(r2[0].inputs, scalars({6, 22, 38, 54}));
  EXPECT_EQ(h.values(cid(0, 0, 1, 0, 0)), (std::vector<double>{120.0}));
}

class ReductionTreeSweep : public ReductionTest,
                           public ::testing::WithParamInterface<std::tuple<std::int32_t, std::int64_t>> {};

TEST_P(ReductionTreeSweep, TreeSumEqualsDirectSum) {
  const auto [n, fan_in] = GetParam();
  const RunMeta meta = line_meta(n);
  std::vector<double> direct(3, 0.0);
  for (std::int32_t b = 0; b < n; ++b) {
    auto v = leaf_values(b);
    for (std::size_t i = 0; i < 3; ++i) direct[i] += v[i];
    h.dataset->set_chunk(cid(0, 0, 1, 0, b), f64_buffer({3}, v));
  }
  const int threads = (n + static_cast<std::int32_t>(fan_in)) % 2 == 0 ? 1 : 3;

  if (fan_in == 1) {
    // A single round of one-input groups is an identity map (LOW-6 rejects
    // fan-in 1 for multi-block trees, so there is no further round).
    GraphReduceSpec g;
    g.fan_in = 1;
    g.num_inputs = n;
    auto stats = h.run(plan_of({stage("identity", Plane::graph,
                                      {graph_template("g", "rsum", domain(0, 0), {input(1)}, {output(2, fixed_spec({3}))},
                                                      g)})}),
                       meta, threads_opt(threads));
    EXPECT_EQ(stats.tasks_run, static_cast<std::uint64_t>(n));
    for (std::int32_t b = 0; b < n; ++b) EXPECT_EQ(h.values(cid(0, 0, 2, 0, b)), leaf_values(b)) << b;
    return;
  }

  std::vector<std::int32_t> blocks(static_cast<std::size_t>(n));
  for (std::int32_t b = 0; b < n; ++b) blocks[static_cast<std::size_t>(b)] = b;
  Tree t = build_tree(1, blocks, fan_in, 900, 3);
  ASSERT_LE(t.rounds, kRoundKernels);
  // ceil(log_f(n)) rounds.
  std::int64_t expect_rounds = 0;
  for (std::int64_t reach = 1; reach < n; reach *= fan_in) ++expect_rounds;
  EXPECT_EQ(t.rounds, expect_rounds);

  auto stats = h.run(t.plan, meta, threads_opt(threads));
  EXPECT_EQ(stats.stages_run, static_cast<std::uint64_t>(t.rounds));
  EXPECT_EQ(stats.tasks_run, t.groups);
  EXPECT_EQ(h.values(cid(0, 0, 1, 0, 0)), direct);
  if (t.rounds > 0) {
    // Only the final result survives; every temporary was consumed.
    ASSERT_EQ(stats.produced.size(), 1u);
    EXPECT_EQ(stats.produced[0], cid(0, 0, 1, 0, 0));
    for (std::int32_t temp = 900; temp < 900 + static_cast<std::int32_t>(t.rounds); ++temp) {
      for (std::int32_t b = 0; b < std::min(n, 8); ++b) EXPECT_FALSE(h.session->store().contains(cid(0, 0, temp, 0, b)));
    }
  }
}

std::string sweep_name(const ::testing::TestParamInfo<std::tuple<std::int32_t, std::int64_t>>& info) {
  return "n" + std::to_string(std::get<0>(info.param)) + "_f" + std::to_string(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(FanIn, ReductionTreeSweep,
                         ::testing::Combine(::testing::Values(1, 2, 3, 7, 8, 9, 63, 64, 65, 100, 1000),
                                            ::testing::Values(std::int64_t{1}, std::int64_t{2}, std::int64_t{3},
                                                              std::int64_t{4}, std::int64_t{8}, std::int64_t{16})),
                         sweep_name);

}  // namespace
}  // namespace kangaroo
