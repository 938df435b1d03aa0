// Executor semantics (§3.3, §3.4, §4, §8 LIFE-2): task expansion, input
// domain overrides, plane checks, stage ordering, data dependencies, output
// allocation, output visibility and intermediate release.
//
// Kernels here are test doubles: they write values that are a closed-form
// function of (block, output, element) or copy/sum their inputs, and record
// what the executor handed them. Expected values are derived from the spec
// and those closed forms, never from executor output.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <variant>
#include <vector>

#include <gtest/gtest.h>

#include "exec_test_support.h"
#include "kangaroo/core/error.h"

namespace kangaroo {
namespace {

using namespace exec_testing;

// ---------------------------------------------------------------------------
// Recording kernels

struct OutputSeen {
  Descriptor desc;
  bool dynamic = false;
  std::uint64_t capacity = 0;
  bool all_zero = false;  // every allocated byte zero when the kernel started
};

struct Call {
  std::string kernel;
  std::int32_t step = 0, level = 0, block = 0;
  std::vector<std::vector<double>> inputs;
  std::vector<Descriptor> input_desc;
  std::vector<OutputSeen> outputs;
  std::uint64_t start_seq = 0, end_seq = 0;
};

std::mutex g_mu;
std::vector<Call> g_calls;
std::atomic<std::uint64_t> g_seq{0};

void reset_calls() {
  std::lock_guard lk(g_mu);
  g_calls.clear();
  g_seq = 0;
}

std::vector<Call> calls() {
  std::lock_guard lk(g_mu);
  return g_calls;
}

std::vector<Call> calls_of(const std::string& kernel) {
  std::vector<Call> out;
  for (auto& c : calls()) {
    if (c.kernel == kernel) out.push_back(c);
  }
  return out;
}

bool bytes_all_zero(const std::byte* p, std::uint64_t n) {
  for (std::uint64_t i = 0; i < n; ++i) {
    if (p[i] != std::byte{0}) return false;
  }
  return true;
}

Call snapshot(const KernelContext& ctx) {
  Call c;
  c.kernel = std::string(ctx.kernel);
  c.step = ctx.step;
  c.level = ctx.level;
  c.block = ctx.block;
  for (const auto& in : ctx.inputs) {
    c.input_desc.push_back(in->descriptor());
    if (in->scalar() == ScalarType::opaque) {
      c.inputs.emplace_back();
    } else {
      c.inputs.push_back(values_of(*in));
    }
  }
  for (const auto& out : ctx.outputs) {
    OutputSeen s;
    s.desc = out->descriptor();
    s.dynamic = out->is_dynamic();
    s.capacity = out->capacity_elements();
    s.all_zero = bytes_all_zero(out->mutable_data(), out->allocated_bytes());
    c.outputs.push_back(s);
  }
  return c;
}

void record(const KernelContext& ctx) {
  Call c = snapshot(ctx);
  std::lock_guard lk(g_mu);
  g_calls.push_back(std::move(c));
}

// Closed form written by the fill kernel.
double fill_value(std::int32_t block, std::size_t output, std::uint64_t element) {
  return block * 1000.0 + static_cast<double>(output) * 100.0 + static_cast<double>(element);
}

void fill_static_outputs(KernelContext& ctx) {
  for (std::size_t o = 0; o < ctx.outputs.size(); ++o) {
    Buffer& b = *ctx.outputs[o];
    if (b.scalar() != ScalarType::f64 || b.is_dynamic()) continue;
    double* d = b.elements<double>();
    const std::uint64_t n = b.descriptor().element_count();
    for (std::uint64_t p = 0; p < n; ++p) d[p] = fill_value(ctx.block, o, p);
  }
}

void fill_kernel(KernelContext& ctx) {
  record(ctx);
  fill_static_outputs(ctx);
}

// Output 0 = elementwise sum of every input (logical C order).
void sum_kernel(KernelContext& ctx) {
  record(ctx);
  Buffer& out = *ctx.outputs[0];
  const std::uint64_t n = out.descriptor().element_count();
  double* d = out.elements<double>();
  for (std::uint64_t p = 0; p < n; ++p) d[p] = 0.0;
  for (const auto& in : ctx.inputs) {
    if (in->descriptor().element_count() != n) fail(ErrorKind::kernel, "sum: input size mismatch");
    for (std::uint64_t p = 0; p < n; ++p) d[p] += in->element_as_double(p);
  }
}

// Records start/end sequence numbers around a short sleep (stage ordering).
void seq_kernel(KernelContext& ctx) {
  const std::uint64_t start = ++g_seq;
  std::this_thread::sleep_for(std::chrono::microseconds(300));
  fill_static_outputs(ctx);
  const std::uint64_t end = ++g_seq;
  Call c = snapshot(ctx);
  c.start_seq = start;
  c.end_seq = end;
  std::lock_guard lk(g_mu);
  g_calls.push_back(std::move(c));
}

void throw_kernel(KernelContext& ctx) {
  record(ctx);
  fail(ErrorKind::kernel, "deliberate failure '" + std::string(ctx.kernel) + "' at block " + std::to_string(ctx.block));
}

// Output 0 (Fixed {16}) = 2 * part, each part written by ctx.for_parts on
// whatever thread runs it; part 5 throws when the block is 1.
std::mutex g_parts_mu;
std::set<std::thread::id> g_part_threads;
void parts_kernel(KernelContext& ctx) {
  record(ctx);
  double* out = ctx.outputs[0]->elements<double>();
  const std::int32_t block = ctx.block;
  ctx.for_parts(16, [&](std::size_t part) {
    {
      std::lock_guard lk(g_parts_mu);
      g_part_threads.insert(std::this_thread::get_id());
    }
    if (block == 1 && part == 5) fail(ErrorKind::kernel, "part 5 of block 1 failed");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // long enough for idle threads to join in
    out[part] = 2.0 * static_cast<double>(part);
  });
}

void throw_std_kernel(KernelContext& ctx) {
  record(ctx);
  throw std::runtime_error("plain std exception from block " + std::to_string(ctx.block));
}

// Dynamic outputs: writes min(3, capacity) values block*10 + p and commits them.
void dyn_commit_kernel(KernelContext& ctx) {
  record(ctx);
  for (auto& out : ctx.outputs) {
    if (!out->is_dynamic()) continue;
    const std::uint64_t n = std::min<std::uint64_t>(3, out->capacity_elements());
    double* d = out->elements<double>();
    for (std::uint64_t p = 0; p < n; ++p) d[p] = ctx.block * 10.0 + static_cast<double>(p);
    out->commit(n);
  }
  fill_static_outputs(ctx);
}

void dyn_nocommit_kernel(KernelContext& ctx) { record(ctx); }

// Replaces output 0 by a buffer of other extents (ALLOC-8 forbids it).
void resize_kernel(KernelContext& ctx) {
  record(ctx);
  const std::uint64_t n = ctx.outputs[0]->descriptor().element_count() + 1;
  ctx.outputs[0] = f64_buffer({n}, std::vector<double>(n, 1.0));
}

// Replaces output 0 by a buffer of the same extents but another dtype.
void retype_kernel(KernelContext& ctx) {
  record(ctx);
  const Descriptor& d = ctx.outputs[0]->descriptor();
  ctx.outputs[0] = Buffer::allocate(Descriptor::c_order(ScalarType::f32, std::span(d.extents.data(), d.rank)),
                                    InitPolicy::zero);
}

// Commits one element more than the capacity (BUF-6).
void dyn_overflow_kernel(KernelContext& ctx) {
  record(ctx);
  ctx.outputs[0]->commit(ctx.outputs[0]->capacity_elements() + 1);
}

// Commits twice (BUF-6).
void dyn_twice_kernel(KernelContext& ctx) {
  record(ctx);
  ctx.outputs[0]->commit(0);
  ctx.outputs[0]->commit(0);
}

// EXEC-5: what the kernel context carries besides buffers.
struct ContextSeen {
  const RunMeta* runmeta = nullptr;
  const LevelMeta* level_meta = nullptr;
  std::vector<IndexBox> covered;
  bool has_params = false;
  double scalar = 0.0;
  bool dataset = false;
};
std::map<std::int32_t, ContextSeen> g_context;  // by block

void context_kernel(KernelContext& ctx) {
  record(ctx);
  ContextSeen c;
  c.runmeta = ctx.runmeta;
  c.level_meta = ctx.level_meta;
  c.covered.assign(ctx.covered.begin(), ctx.covered.end());
  c.has_params = ctx.params != nullptr;
  if (ctx.params != nullptr && std::holds_alternative<ScalarParams>(*ctx.params)) {
    c.scalar = std::get<ScalarParams>(*ctx.params).scalar;
  }
  if (ctx.params != nullptr && std::holds_alternative<Histogram1DParams>(*ctx.params)) {
    c.scalar = std::get<Histogram1DParams>(*ctx.params).range[1];
  }
  c.dataset = ctx.dataset != nullptr;
  {
    std::lock_guard lk(g_mu);
    g_context[ctx.block] = c;
  }
  fill_static_outputs(ctx);
}

// ALLOC-4: evaluator-defined dynamic bounds.
std::vector<BoundQuery> g_bound_queries;
std::vector<std::vector<std::uint64_t>> g_bound_input_bytes;
std::uint64_t g_estimate_seen = 0;

std::optional<std::uint64_t> recording_bound(const BoundQuery& q) {
  std::lock_guard lk(g_mu);
  g_bound_queries.push_back(q);
  g_bound_input_bytes.emplace_back(q.input_bytes.begin(), q.input_bytes.end());
  if (q.estimate_bytes) g_estimate_seen = q.estimate_bytes(cid(0, 0, 1, 0, q.block));
  if (q.block == 2) return std::nullopt;  // unresolvable for block 2
  return static_cast<std::uint64_t>(5 + q.block);
}

// Replaces a rank-3 output by a Fortran-order buffer of the same extents
// holding fill_value in logical C-order numbering (ALLOC-8 allows it).
void fortran_swap_kernel(KernelContext& ctx) {
  record(ctx);
  const Descriptor& d = ctx.outputs[0]->descriptor();
  const std::uint64_t ext[3] = {d.extents[0], d.extents[1], d.extents[2]};
  BufferPtr f = Buffer::allocate(Descriptor::fortran_order(ScalarType::f64, ext), InitPolicy::zero);
  auto v = f->mutable_view<double>(3);
  std::uint64_t p = 0;
  for (std::uint64_t i = 0; i < ext[0]; ++i) {
    for (std::uint64_t j = 0; j < ext[1]; ++j) {
      for (std::uint64_t k = 0; k < ext[2]; ++k) {
        v(static_cast<std::int64_t>(i), static_cast<std::int64_t>(j), static_cast<std::int64_t>(k)) =
            fill_value(ctx.block, 0, p++);
      }
    }
  }
  ctx.outputs[0] = f;
}

// LIFE-2 probe: tries to read outputs and start a second run from inside a run.
Session* g_session = nullptr;
std::string g_retrieve_error;
std::string g_nested_run_error;
bool g_running_seen = false;
ChunkId g_probe_id;

void probe_kernel(KernelContext& ctx) {
  record(ctx);
  fill_static_outputs(ctx);
  if (g_session == nullptr) return;
  std::lock_guard lk(g_mu);
  g_running_seen = g_session->running();
  try {
    (void)g_session->retrieve(g_probe_id);
    g_retrieve_error = "<retrieve returned a value>";
  } catch (const std::exception& e) {
    g_retrieve_error = e.what();
  }
  try {
    static const KernelRegistry empty_registry;
    static const PreparedPlan empty_plan = prepare_plan(Plan{}, empty_registry);
    static const RunMeta meta = line_meta(1);
    (void)g_session->run(empty_plan, meta, threads_opt(1));
    g_nested_run_error = "<nested run succeeded>";
  } catch (const std::exception& e) {
    g_nested_run_error = e.what();
  }
}

template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no error>";
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

class ExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    reset_calls();
    h.add("fill", fill_kernel);
    h.add("sum", sum_kernel);
    h.add("throw", throw_kernel);
    h.add("throw_std", throw_std_kernel);
    h.add("parts", parts_kernel);
    h.add("dyn_commit", dyn_commit_kernel);
    h.add("dyn_nocommit", dyn_nocommit_kernel);
    h.add("resize", resize_kernel);
    h.add("fortran_swap", fortran_swap_kernel);
    h.add("probe", probe_kernel);
    h.add("retype", retype_kernel);
    h.add("dyn_overflow", dyn_overflow_kernel);
    h.add("dyn_twice", dyn_twice_kernel);
    h.add("dyn_bound", dyn_commit_kernel, recording_bound);
    h.add("dyn_no_bound", dyn_commit_kernel);
    h.registry.add(make_kernel("ctx_scalar", ParamType::ScalarParams, context_kernel, 0, 1));
    h.registry.add(make_kernel("ctx_hist", ParamType::Histogram1DParams, context_kernel, 0, 1));
    for (int i = 0; i < 8; ++i) h.add("seq" + std::to_string(i), seq_kernel);
  }
  void TearDown() override { g_session = nullptr; }

  // Field `field` at (step, level) for blocks [0, n): Fixed {2} with values
  // (base + b, base + b + 0.5).
  void seed(std::int32_t step, std::int32_t level, std::int32_t field, std::int32_t n, double base,
            std::int32_t version = 0) {
    for (std::int32_t b = 0; b < n; ++b) {
      h.dataset->set_chunk(cid(step, level, field, version, b), f64_buffer({2}, {base + b, base + b + 0.5}));
    }
  }

  std::vector<std::int32_t> called_blocks(const std::string& kernel) {
    std::vector<std::int32_t> out;
    for (auto& c : calls_of(kernel)) out.push_back(c.block);
    std::sort(out.begin(), out.end());
    return out;
  }

  Harness h;
};

// ---------------------------------------------------------------------------
// EXEC-2: expansion

TEST_F(ExecutorTest, AbsentBlockListExpandsToEveryBlockOfTheLevel) {
  const RunMeta meta = line_meta(5);
  auto stats = h.run(plan_of({stage("s", Plane::chunk,
                                     {chunk_template("t", "fill", domain(0, 0), {}, {output(10, fixed_spec({3}))})})}),
                     meta);
  EXPECT_EQ(stats.tasks_total, 5u);
  EXPECT_EQ(stats.tasks_run, 5u);
  EXPECT_EQ(called_blocks("fill"), (std::vector<std::int32_t>{0, 1, 2, 3, 4}));
  for (std::int32_t b = 0; b < 5; ++b) {
    EXPECT_EQ(h.values(cid(0, 0, 10, 0, b)), (std::vector<double>{fill_value(b, 0, 0), fill_value(b, 0, 1),
                                                                  fill_value(b, 0, 2)}));
  }
}

TEST_F(ExecutorTest, ListedBlocksExpandToExactlyThoseBlocks) {
  const RunMeta meta = line_meta(5);
  auto stats = h.run(
      plan_of({stage("s", Plane::chunk,
                     {chunk_template("t", "fill", domain(0, 0, std::vector<std::int32_t>{3, 1}), {},
                                     {output(10, fixed_spec({1}))})})}),
      meta);
  EXPECT_EQ(stats.tasks_total, 2u);
  EXPECT_EQ(called_blocks("fill"), (std::vector<std::int32_t>{1, 3}));
  EXPECT_EQ(h.values(cid(0, 0, 10, 0, 3)), (std::vector<double>{3000.0}));
  EXPECT_EQ(h.values(cid(0, 0, 10, 0, 1)), (std::vector<double>{1000.0}));
  for (std::int32_t b : {0, 2, 4}) {
    EXPECT_FALSE(h.session->store().contains(cid(0, 0, 10, 0, b))) << b;
    EXPECT_THROW((void)h.session->retrieve(cid(0, 0, 10, 0, b)), Error) << b;
  }
}

TEST_F(ExecutorTest, RepeatedListEntriesGiveOneTaskPerEntry) {
  const RunMeta meta = line_meta(3);
  auto stats = h.run(
      plan_of({stage("s", Plane::chunk,
                     {chunk_template("t", "fill", domain(0, 0, std::vector<std::int32_t>{1, 1}), {},
                                     {output(10, fixed_spec({1}))})})}),
      meta);
  EXPECT_EQ(stats.tasks_total, 2u);
  EXPECT_EQ(stats.tasks_run, 2u);
  EXPECT_EQ(called_blocks("fill"), (std::vector<std::int32_t>{1, 1}));
}

TEST_F(ExecutorTest, EmptyBlockListYieldsNoTasks) {
  const RunMeta meta = line_meta(4);
  auto stats = h.run(
      plan_of({stage("s", Plane::chunk,
                     {chunk_template("t", "fill", domain(0, 0, std::vector<std::int32_t>{}), {},
                                     {output(10, fixed_spec({1}))})})}),
      meta);
  EXPECT_EQ(stats.tasks_total, 0u);
  EXPECT_EQ(stats.tasks_run, 0u);
  EXPECT_EQ(stats.stages_run, 1u);
  EXPECT_TRUE(calls().empty());
}

// ---------------------------------------------------------------------------
// EXEC-4, DOM-1..4

class DomainOverrideTest : public ExecutorTest {
 protected:
  void SetUp() override {
    ExecutorTest::SetUp();
    // Steps labelled 0 and 5, two levels of four blocks each.
    meta.steps.clear();
    for (std::int32_t label : {0, 5}) {
      StepMeta s;
      s.step = label;
      for (int l = 0; l < 2; ++l) {
        LevelMeta lv;
        lv.boxes = unit_blocks(4);
        s.levels.push_back(lv);
      }
      meta.steps.push_back(s);
    }
    for (std::int32_t label : {0, 5}) {
      for (std::int32_t l = 0; l < 2; ++l) seed(label, l, 1, 4, label * 1000.0 + l * 100.0);
    }
    seed(0, 0, 1, 4, 7000.0, /*version=*/2);
  }

  // One chunk template over `blocks` of (0, 0) copying input field 1 with the
  // given override into field 20 version 3.
  Plan copy_plan(std::optional<Domain> override_domain, std::optional<std::vector<std::int32_t>> blocks = std::nullopt,
                 std::int32_t in_version = 0, Domain tmpl_domain = domain(0, 0)) {
    tmpl_domain.blocks = std::move(blocks);
    return plan_of({stage("s", Plane::chunk,
                          {chunk_template("copy", "sum", tmpl_domain, {input(1, in_version, std::move(override_domain))},
                                          {output(20, like_input_spec(0), 3)})})});
  }

  RunMeta meta;
};

TEST_F(DomainOverrideTest, NoOverrideReadsTemplateStepLevelAndTaskBlock) {
  h.run(copy_plan(std::nullopt), meta);
  for (std::int32_t b = 0; b < 4; ++b) {
    EXPECT_EQ(h.values(cid(0, 0, 20, 3, b)), (std::vector<double>{0.0 + b, b + 0.5})) << b;
  }
}

TEST_F(DomainOverrideTest, InputVersionSelectsTheRevisionRead) {
  h.run(copy_plan(std::nullopt, std::nullopt, /*in_version=*/2), meta);
  for (std::int32_t b = 0; b < 4; ++b) {
    EXPECT_EQ(h.values(cid(0, 0, 20, 3, b)), (std::vector<double>{7000.0 + b, 7000.5 + b})) << b;
  }
}

TEST_F(DomainOverrideTest, OutputsAreWrittenAtTemplateStepAndLevel) {
  h.run(copy_plan(domain(0, 0), std::nullopt, 0, domain(5, 1)), meta);
  for (std::int32_t b = 0; b < 4; ++b) {
    EXPECT_EQ(h.values(cid(5, 1, 20, 3, b)), (std::vector<double>{0.0 + b, b + 0.5})) << b;
    EXPECT_FALSE(h.session->store().contains(cid(0, 0, 20, 3, b)));
  }
  for (auto& c : calls_of("sum")) {
    EXPECT_EQ(c.step, 5);
    EXPECT_EQ(c.level, 1);
  }
}

TEST_F(DomainOverrideTest, OverrideWithoutBlocksTakesStepAndLevelButKeepsTaskBlock) {
  h.run(copy_plan(domain(5, 1)), meta);
  for (std::int32_t b = 0; b < 4; ++b) {
    EXPECT_EQ(h.values(cid(0, 0, 20, 3, b)), (std::vector<double>{5100.0 + b, 5100.5 + b})) << b;
  }
}

TEST_F(DomainOverrideTest, SingleBlockOverrideIsReadByEveryTask) {
  h.run(copy_plan(domain(0, 1, std::vector<std::int32_t>{2})), meta);
  for (std::int32_t b = 0; b < 4; ++b) {
    EXPECT_EQ(h.values(cid(0, 0, 20, 3, b)), (std::vector<double>{102.0, 102.5})) << b;
  }
}

TEST_F(DomainOverrideTest, MultiBlockOverrideContainingTaskBlockReadsTaskBlock) {
  h.run(copy_plan(domain(5, 0, std::vector<std::int32_t>{3, 0, 2}), std::vector<std::int32_t>{0, 2, 3}), meta);
  for (std::int32_t b : {0, 2, 3}) {
    EXPECT_EQ(h.values(cid(0, 0, 20, 3, b)), (std::vector<double>{5000.0 + b, 5000.5 + b})) << b;
  }
}

TEST_F(DomainOverrideTest, MultiBlockOverrideWithoutTaskBlockFails) {
  const std::string msg = error_of(
      [&] { h.run(copy_plan(domain(0, 0, std::vector<std::int32_t>{0, 2}), std::vector<std::int32_t>{0, 1}), meta); });
  EXPECT_TRUE(has(msg, "task block not in input domain blocks")) << msg;
}

TEST_F(DomainOverrideTest, EmptyOverrideBlockListFails) {
  const std::string msg = error_of([&] { h.run(copy_plan(domain(0, 0, std::vector<std::int32_t>{})), meta); });
  EXPECT_TRUE(has(msg, "input domain blocks must be non-empty")) << msg;
}

// DATA-6: steps are found by label, not list position.
TEST_F(ExecutorTest, DomainStepIsResolvedByLabel) {
  RunMeta meta = make_meta({unit_blocks(2)}, 3);
  meta.steps.push_back(make_meta({unit_blocks(5)}, 0).steps.front());
  auto stats = h.run(plan_of({stage("s", Plane::chunk,
                                    {chunk_template("t", "fill", domain(0, 0), {}, {output(10, fixed_spec({1}))})})}),
                     meta);
  EXPECT_EQ(stats.tasks_total, 5u);
  EXPECT_EQ(called_blocks("fill"), (std::vector<std::int32_t>{0, 1, 2, 3, 4}));
}

// ERR-15
TEST_F(ExecutorTest, UnresolvableDomainStepLevelOrBlockFails) {
  const RunMeta meta = line_meta(3);
  auto one = [&](Domain d) {
    return plan_of({stage("s", Plane::chunk, {chunk_template("t", "fill", d, {}, {output(10, fixed_spec({1}))})})});
  };
  EXPECT_THROW(h.run(one(domain(7, 0)), meta), Error);
  EXPECT_THROW(h.run(one(domain(0, 1)), meta), Error);
  EXPECT_THROW(h.run(one(domain(0, 0, std::vector<std::int32_t>{0, 3})), meta), Error);
  EXPECT_THROW(h.run(one(domain(0, 0, std::vector<std::int32_t>{-1})), meta), Error);
  // An input override naming an unknown level.
  seed(0, 0, 1, 3, 0.0);
  EXPECT_THROW(h.run(plan_of({stage("s", Plane::chunk,
                                     {chunk_template("t", "sum", domain(0, 0), {input(1, 0, domain(9, 0))},
                                                     {output(10, like_input_spec(0))})})}),
                     meta),
               Error);
  EXPECT_THROW(h.run(plan_of({stage("s", Plane::chunk,
                                     {chunk_template("t", "sum", domain(0, 0), {input(1, 0, domain(0, 4))},
                                                     {output(10, like_input_spec(0))})})}),
                     meta),
               Error);
  EXPECT_TRUE(calls_of("fill").empty());
}

// ---------------------------------------------------------------------------
// EXEC-1, EXEC-3, RED-6

TEST_F(ExecutorTest, StageAndTemplatePlanesMustMatch) {
  const RunMeta meta = line_meta(2);
  GraphReduceSpec g;
  g.num_inputs = 1;
  seed(0, 0, 1, 2, 0.0);
  TaskTemplate graph_t = graph_template("g", "sum", domain(0, 0), {input(1)}, {output(10, fixed_spec({2}))}, g);
  TaskTemplate chunk_t = chunk_template("c", "fill", domain(0, 0), {}, {output(11, fixed_spec({1}))});

  std::string msg = error_of([&] { h.run(plan_of({stage("s", Plane::chunk, {chunk_t, graph_t})}), meta); });
  EXPECT_TRUE(has(msg, "chunk stage requires chunk templates")) << msg;

  msg = error_of([&] { h.run(plan_of({stage("s", Plane::graph, {graph_t, chunk_t})}), meta); });
  EXPECT_TRUE(has(msg, "graph stage requires graph templates")) << msg;

  msg = error_of([&] { h.run(plan_of({stage("s", Plane::mixed, {chunk_t})}), meta); });
  EXPECT_TRUE(has(msg, "unsupported execution plane")) << msg;
}

TEST_F(ExecutorTest, PlaneChecksHappenWhenTheStageIsExpanded) {
  const RunMeta meta = line_meta(2);
  TaskTemplate first = chunk_template("c", "fill", domain(0, 0), {}, {output(11, fixed_spec({1}))});
  TaskTemplate later = chunk_template("m", "sum", domain(0, 0), {input(11)}, {output(12, like_input_spec(0))});
  const std::string msg = error_of([&] {
    h.run(plan_of({stage("ok", Plane::chunk, {first}), stage("bad", Plane::mixed, {later}, {0})}), meta);
  });
  EXPECT_TRUE(has(msg, "unsupported execution plane")) << msg;
  // Decoding and preparation accepted the plan; the earlier stage ran.
  EXPECT_EQ(called_blocks("fill"), (std::vector<std::int32_t>{0, 1}));
  EXPECT_TRUE(calls_of("sum").empty());
}

TEST_F(ExecutorTest, ChunkTemplateWithoutOutputsFails) {
  const RunMeta meta = line_meta(2);
  const std::string msg = error_of(
      [&] { h.run(plan_of({stage("s", Plane::chunk, {chunk_template("t", "fill", domain(0, 0), {}, {})})}), meta); });
  EXPECT_TRUE(has(msg, "templates must specify outputs")) << msg;
  EXPECT_TRUE(calls().empty());
}

TEST_F(ExecutorTest, GraphTemplateRestrictions) {
  const RunMeta meta = line_meta(4);
  seed(0, 0, 1, 4, 0.0);
  GraphReduceSpec g;
  g.fan_in = 2;
  g.num_inputs = 4;

  TaskTemplate with_deps = graph_template("g", "sum", domain(0, 0), {input(1)}, {output(10, fixed_spec({2}))}, g);
  with_deps.deps.kind = DepKind::face_neighbors;
  with_deps.deps.width = 1;
  std::string msg = error_of([&] { h.run(plan_of({stage("s", Plane::graph, {with_deps})}), meta); });
  EXPECT_TRUE(has(msg, "graph tasks do not support deps")) << msg;

  msg = error_of([&] {
    h.run(plan_of({stage("s", Plane::graph,
                         {graph_template("g", "sum", domain(0, 0), {}, {output(10, fixed_spec({2}))}, g)})}),
          meta);
  });
  EXPECT_TRUE(has(msg, "graph templates must specify inputs and outputs")) << msg;

  msg = error_of([&] {
    h.run(plan_of({stage("s", Plane::graph, {graph_template("g", "sum", domain(0, 0), {input(1)}, {}, g)})}), meta);
  });
  EXPECT_TRUE(has(msg, "graph templates must specify inputs and outputs")) << msg;
  EXPECT_TRUE(calls().empty());
}

// ---------------------------------------------------------------------------
// DAG-3..5

TEST_F(ExecutorTest, StagesStartOnlyAfterTheirAfterStagesFinished) {
  const RunMeta meta = line_meta(8);
  // List order deliberately differs from dependency order; `after` refers to
  // list positions. Edges: 0 <- {2, 3}, 2 <- {4}, 3 <- {4}, 1 <- {0, 5}.
  const std::vector<std::vector<std::int32_t>> after = {{2, 3}, {0, 5}, {4}, {4}, {}, {}};
  std::vector<Stage> stages;
  for (std::size_t s = 0; s < after.size(); ++s) {
    stages.push_back(stage("st" + std::to_string(s), Plane::chunk,
                           {chunk_template("t", "seq" + std::to_string(s), domain(0, 0), {},
                                           {output(100 + static_cast<std::int32_t>(s), fixed_spec({1}))})},
                           after[s]));
  }
  for (int threads : {1, 4}) {
    reset_calls();
    h.reset_session();
    auto stats = h.run(plan_of(stages), meta, threads_opt(threads));
    EXPECT_EQ(stats.stages_run, after.size());
    EXPECT_EQ(stats.tasks_run, after.size() * 8);
    std::map<std::string, std::pair<std::uint64_t, std::uint64_t>> span;  // kernel -> (first start, last end)
    for (auto& c : calls()) {
      auto it = span.find(c.kernel);
      if (it == span.end()) {
        span[c.kernel] = {c.start_seq, c.end_seq};
      } else {
        it->second.first = std::min(it->second.first, c.start_seq);
        it->second.second = std::max(it->second.second, c.end_seq);
      }
    }
    ASSERT_EQ(span.size(), after.size());
    for (std::size_t s = 0; s < after.size(); ++s) {
      for (auto a : after[s]) {
        const auto& mine = span["seq" + std::to_string(s)];
        const auto& dep = span["seq" + std::to_string(a)];
        EXPECT_GT(mine.first, dep.second) << "stage " << s << " started before stage " << a << " finished (threads "
                                          << threads << ")";
      }
    }
  }
}

TEST_F(ExecutorTest, FailedStageDependentsDoNotRun) {
  const RunMeta meta = line_meta(3);
  const std::string msg = error_of([&] {
    h.run(plan_of({stage("bad", Plane::chunk,
                         {chunk_template("t", "throw", domain(0, 0), {}, {output(10, fixed_spec({1}))})}),
                   stage("child", Plane::chunk,
                         {chunk_template("t", "fill", domain(0, 0), {}, {output(11, fixed_spec({1}))})}, {0}),
                   stage("grandchild", Plane::chunk,
                         {chunk_template("t", "seq0", domain(0, 0), {}, {output(12, fixed_spec({1}))})}, {1})}),
          meta, threads_opt(2));
  });
  EXPECT_TRUE(has(msg, "deliberate failure")) << msg;
  EXPECT_FALSE(calls_of("throw").empty());
  EXPECT_TRUE(calls_of("fill").empty());
  EXPECT_TRUE(calls_of("seq0").empty());
}

TEST_F(ExecutorTest, ZeroStagePlanCompletesImmediately) {
  auto stats = h.run(Plan{}, line_meta(1), threads_opt(4));
  EXPECT_EQ(stats.tasks_total, 0u);
  EXPECT_EQ(stats.tasks_run, 0u);
  EXPECT_EQ(stats.stages_run, 0u);
  EXPECT_TRUE(stats.produced.empty());
  // Also with no run metadata at all.
  EXPECT_NO_THROW(h.run(Plan{}, RunMeta{}, threads_opt(1)));
}

// ---------------------------------------------------------------------------
// EXEC-6..8: data dependencies

TEST_F(ExecutorTest, ConsumerListedBeforeProducerWithoutAfterEdgeCompletes) {
  const RunMeta meta = line_meta(40);
  Plan plan = plan_of({stage("consume", Plane::chunk,
                             {chunk_template("c", "sum", domain(0, 0), {input(50)}, {output(51, like_input_spec(0))})}),
                       stage("produce", Plane::chunk,
                             {chunk_template("p", "fill", domain(0, 0), {}, {output(50, fixed_spec({2}))})})});
  for (int threads : {1, 4}) {
    for (std::size_t window : {std::size_t{1}, std::size_t{0}}) {
      reset_calls();
      h.reset_session();
      ExecOptions opt = threads_opt(threads);
      opt.max_active_tasks = window;
      auto stats = h.run(plan, meta, opt);
      EXPECT_EQ(stats.tasks_run, 80u);
      for (std::int32_t b = 0; b < 40; ++b) {
        EXPECT_EQ(h.values(cid(0, 0, 51, 0, b)), (std::vector<double>{fill_value(b, 0, 0), fill_value(b, 0, 1)}))
            << "block " << b << " threads " << threads << " window " << window;
      }
    }
  }
}

TEST_F(ExecutorTest, ManyConsumersWaitOnOnePendingChunk) {
  const RunMeta meta = line_meta(64);
  Plan plan = plan_of(
      {stage("consume", Plane::chunk,
             {chunk_template("c", "sum", domain(0, 0), {input(60, 0, domain(0, 0, std::vector<std::int32_t>{0}))},
                             {output(61, like_input_spec(0))})}),
       stage("produce", Plane::chunk,
             {chunk_template("p", "fill", domain(0, 0, std::vector<std::int32_t>{0}), {},
                             {output(60, fixed_spec({3}))})})});
  for (int threads : {1, 4}) {
    reset_calls();
    h.reset_session();
    ExecOptions opt = threads_opt(threads);
    opt.max_active_tasks = 2;
    auto stats = h.run(plan, meta, opt);
    EXPECT_EQ(stats.tasks_run, 65u);
    for (std::int32_t b = 0; b < 64; ++b) {
      EXPECT_EQ(h.values(cid(0, 0, 61, 0, b)), (std::vector<double>{0.0, 1.0, 2.0})) << b;
    }
  }
}

// One task reading the same pending chunk through several inputs resumes once
// every read is satisfied.
TEST_F(ExecutorTest, TaskReadingOnePendingChunkTwiceCompletes) {
  const RunMeta meta = line_meta(6);
  GraphReduceSpec g;
  g.fan_in = 4;
  g.num_inputs = 4;
  g.input_blocks = {2, 2, 2, 2};
  Plan plan = plan_of({stage("twice", Plane::chunk,
                             {chunk_template("c", "sum", domain(0, 0), {input(50), input(50)},
                                             {output(51, like_input_spec(0))})}),
                       stage("group", Plane::graph,
                             {graph_template("g", "sum", domain(0, 0), {input(50)}, {output(52, fixed_spec({2}))}, g)}),
                       stage("produce", Plane::chunk,
                             {chunk_template("p", "fill", domain(0, 0), {}, {output(50, fixed_spec({2}))})})});
  for (int threads : {1, 3}) {
    h.reset_session();
    ExecOptions opt = threads_opt(threads);
    opt.max_active_tasks = 1;
    h.run(plan, meta, opt);
    for (std::int32_t b = 0; b < 6; ++b) {
      EXPECT_EQ(h.values(cid(0, 0, 51, 0, b)), (std::vector<double>{2 * fill_value(b, 0, 0), 2 * fill_value(b, 0, 1)}));
    }
    EXPECT_EQ(h.values(cid(0, 0, 52, 0, 0)), (std::vector<double>{4 * fill_value(2, 0, 0), 4 * fill_value(2, 0, 1)}));
  }
}

TEST_F(ExecutorTest, ReadOfChunkNeitherInDatasetNorProducibleFails) {
  const RunMeta meta = line_meta(3);
  const std::string msg = error_of([&] {
    h.run(plan_of({stage("c", Plane::chunk,
                         {chunk_template("c", "sum", domain(0, 0), {input(77)}, {output(78, like_input_spec(0))})})}),
          meta, threads_opt(2));
  });
  EXPECT_TRUE(has(msg, "chunk is not available from run dataset or planned outputs")) << msg;
  EXPECT_TRUE(calls().empty());
}

// EXEC-7: "may produce" needs matching step, level, field, version and block.
TEST_F(ExecutorTest, ProducersOnlyCoverTheirOwnIdentities) {
  RunMeta meta = make_meta({unit_blocks(4), unit_blocks(4)});
  const Stage producer = stage(
      "produce", Plane::chunk,
      {chunk_template("p", "fill", domain(0, 0, std::vector<std::int32_t>{0, 1}), {}, {output(60, fixed_spec({1}))})});
  auto consumer = [](FieldRef in, std::vector<std::int32_t> blocks) {
    return stage("consume", Plane::chunk,
                 {chunk_template("c", "sum", domain(0, 0, std::move(blocks)), {std::move(in)},
                                 {output(61, like_input_spec(0))})});
  };
  // Wrong block, wrong version, wrong level, wrong field: fail instead of waiting forever.
  const std::vector<std::pair<FieldRef, std::vector<std::int32_t>>> cases = {
      {input(60), {3}}, {input(60, 1), {0}}, {input(60, 0, domain(0, 1)), {0}}, {input(62), {0}}};
  for (const auto& [in, blocks] : cases) {
    h.reset_session();
    const std::string msg = error_of([&] { h.run(plan_of({consumer(in, blocks), producer}), meta, threads_opt(2)); });
    EXPECT_TRUE(has(msg, "chunk is not available from run dataset or planned outputs")) << msg;
  }
  // The matching identity waits and succeeds.
  h.reset_session();
  EXPECT_NO_THROW(h.run(plan_of({consumer(input(60), {1}), producer}), meta, threads_opt(2)));
  EXPECT_EQ(h.values(cid(0, 0, 61, 0, 1)), (std::vector<double>{1000.0}));
}

// EXEC-6: the session store is consulted before the dataset.
TEST_F(ExecutorTest, StoreValueTakesPrecedenceOverDataset) {
  const RunMeta meta = line_meta(3);
  seed(0, 0, 5, 3, -50.0);
  h.run(plan_of({stage("produce", Plane::chunk,
                       {chunk_template("p", "fill", domain(0, 0), {}, {output(5, fixed_spec({2}))})}),
                 stage("consume", Plane::chunk,
                       {chunk_template("c", "sum", domain(0, 0), {input(5)}, {output(6, like_input_spec(0))})}, {0})}),
        meta);
  for (std::int32_t b = 0; b < 3; ++b) {
    EXPECT_EQ(h.values(cid(0, 0, 6, 0, b)), (std::vector<double>{fill_value(b, 0, 0), fill_value(b, 0, 1)})) << b;
  }
}

// ---------------------------------------------------------------------------
// EXEC-9

TEST_F(ExecutorTest, KernelErrorFailsTheRunWithItsMessage) {
  const RunMeta meta = line_meta(1);
  std::string msg = error_of([&] {
    h.run(plan_of({stage("s", Plane::chunk,
                         {chunk_template("t", "throw", domain(0, 0), {}, {output(10, fixed_spec({1}))})})}),
          meta);
  });
  EXPECT_TRUE(has(msg, "deliberate failure 'throw' at block 0")) << msg;
  msg = error_of([&] {
    h.run(plan_of({stage("s", Plane::chunk,
                         {chunk_template("t", "throw_std", domain(0, 0), {}, {output(10, fixed_spec({1}))})})}),
          meta);
  });
  EXPECT_TRUE(has(msg, "plain std exception from block 0")) << msg;
}

TEST_F(ExecutorTest, FirstErrorSurfaces) {
  const RunMeta meta = line_meta(1);
  // The second failure can only happen after the first one (after edge), so
  // the first error is unambiguous.
  TaskTemplate first = chunk_template("t", "throw", domain(0, 0), {}, {output(10, fixed_spec({1}))});
  TaskTemplate second = chunk_template("t", "throw_std", domain(0, 0), {}, {output(11, fixed_spec({1}))});
  const std::string msg = error_of([&] {
    h.run(plan_of({stage("a", Plane::chunk, {first}), stage("b", Plane::chunk, {second}, {0})}), meta);
  });
  EXPECT_TRUE(has(msg, "deliberate failure")) << msg;
  EXPECT_FALSE(has(msg, "plain std exception")) << msg;
}

TEST_F(ExecutorTest, SessionIsUsableAfterAFailedRun) {
  const RunMeta meta = line_meta(2);
  EXPECT_THROW(h.run(plan_of({stage("s", Plane::chunk,
                                    {chunk_template("t", "throw", domain(0, 0), {}, {output(10, fixed_spec({1}))})})}),
                     meta),
               Error);
  EXPECT_FALSE(h.session->running());
  h.run(plan_of({stage("s", Plane::chunk,
                       {chunk_template("t", "fill", domain(0, 0), {}, {output(11, fixed_spec({1}))})})}),
        meta);
  EXPECT_EQ(h.values(cid(0, 0, 11, 0, 1)), (std::vector<double>{1000.0}));
}

// LIFE-5: a failed run's outputs are not retrievable.
TEST_F(ExecutorTest, FailedRunOutputsAreNotRetrievable) {
  const RunMeta meta = line_meta(2);
  EXPECT_THROW(h.run(plan_of({stage("ok", Plane::chunk,
                                    {chunk_template("t", "fill", domain(0, 0), {}, {output(10, fixed_spec({1}))})}),
                              stage("bad", Plane::chunk,
                                    {chunk_template("t", "throw", domain(0, 0), {}, {output(11, fixed_spec({1}))})},
                                    {0})}),
                     meta),
               Error);
  EXPECT_EQ(called_blocks("fill"), (std::vector<std::int32_t>{0, 1}));
  for (std::int32_t b = 0; b < 2; ++b) {
    EXPECT_THROW((void)h.session->retrieve(cid(0, 0, 10, 0, b)), Error) << "block " << b;
  }
}

TEST_F(ExecutorTest, KernelsShareLargeTasksWithIdleThreads) {
  // One task on three threads: its parts run on the idle ones too, and the
  // output is complete; a part's failure fails the task with its message.
  const RunMeta meta = line_meta(2);
  {
    std::lock_guard lk(g_parts_mu);
    g_part_threads.clear();
  }
  h.run(plan_of({stage("s", Plane::chunk,
                       {chunk_template("t", "parts", domain(0, 0, std::vector<std::int32_t>{0}), {},
                                       {output(10, fixed_spec({16}))})})}),
        meta, threads_opt(3));
  std::vector<double> want(16);
  for (std::size_t p = 0; p < 16; ++p) want[p] = 2.0 * static_cast<double>(p);
  EXPECT_EQ(h.values(cid(0, 0, 10, 0, 0)), want);
  {
    std::lock_guard lk(g_parts_mu);
    EXPECT_GE(g_part_threads.size(), 2u);
  }
  try {
    h.run(plan_of({stage("s", Plane::chunk,
                         {chunk_template("t", "parts", domain(0, 0, std::vector<std::int32_t>{1}), {},
                                         {output(11, fixed_spec({16}))})})}),
          meta, threads_opt(3));
    ADD_FAILURE() << "the failing part did not fail the run";
  } catch (const Error& e) {
    EXPECT_TRUE(has(e.what(), "part 5 of block 1 failed")) << e.what();
  }
}

// ---------------------------------------------------------------------------
// ALLOC-1..8

class AllocTest : public ExecutorTest {
 protected:
  // Blocks of different sizes: block 0 is 4x5x6 at the origin, block 1 is
  // 2x3x1, block 2 is 1x1x7.
  RunMeta meta = make_meta({{box3(0, 0, 0, 3, 4, 5), box3(10, 10, 10, 11, 12, 10), box3(20, 0, 0, 20, 0, 6)}});

  const OutputSeen& seen_output(const std::string& kernel, std::int32_t block, std::size_t o = 0) {
    cache_ = calls_of(kernel);
    for (auto& c : cache_) {
      if (c.block == block) return c.outputs.at(o);
    }
    static OutputSeen none;
    ADD_FAILURE() << "no call of " << kernel << " for block " << block;
    return none;
  }

  std::vector<Call> cache_;
};

std::vector<std::uint64_t> ext(const Descriptor& d) { return {d.extents.begin(), d.extents.begin() + d.rank}; }
std::vector<std::int64_t> strides(const Descriptor& d) { return {d.strides.begin(), d.strides.begin() + d.rank}; }

TEST_F(AllocTest, FixedShapeIsCOrderOfTheGivenExtents) {
  h.run(plan_of({stage("s", Plane::chunk,
                       {chunk_template("t", "fill", domain(0, 0, std::vector<std::int32_t>{1}), {},
                                       {output(10, fixed_spec({2, 3, 4})), output(11, fixed_spec({5}))})})}),
        meta);
  const OutputSeen& a = seen_output("fill", 1, 0);
  EXPECT_EQ(a.desc.scalar, ScalarType::f64);
  EXPECT_EQ(ext(a.desc), (std::vector<std::uint64_t>{2, 3, 4}));
  EXPECT_EQ(strides(a.desc), (std::vector<std::int64_t>{96, 32, 8}));
  EXPECT_FALSE(a.dynamic);
  const OutputSeen& b = seen_output("fill", 1, 1);
  EXPECT_EQ(ext(b.desc), (std::vector<std::uint64_t>{5}));
  // Published values follow the C-order numbering the kernel used.
  auto v = h.values(cid(0, 0, 10, 0, 1));
  ASSERT_EQ(v.size(), 24u);
  for (std::uint64_t p = 0; p < 24; ++p) EXPECT_EQ(v[p], fill_value(1, 0, p));
  EXPECT_EQ(h.values(cid(0, 0, 11, 0, 1)), (std::vector<double>{1100, 1101, 1102, 1103, 1104}));
}

TEST_F(AllocTest, LargeZeroImagesTakeStorageOnFirstDenseAccess) {
  // A 512 x 512 f64 zero image (2 MiB) that a kernel never touches is
  // published without full-size storage and reads as zero; one the kernel
  // fills (dense access) holds what it wrote.
  h.add("untouched", [](KernelContext&) {});
  h.run(plan_of({stage("s", Plane::chunk,
                       {chunk_template("a", "untouched", domain(0, 0, std::vector<std::int32_t>{0}), {},
                                       {output(10, fixed_spec({512, 512}, ScalarType::f64, InitPolicy::zero))}),
                        chunk_template("b", "fill", domain(0, 0, std::vector<std::int32_t>{1}), {},
                                       {output(11, fixed_spec({512, 512}, ScalarType::f64, InitPolicy::zero))})})}),
        meta);
  auto untouched = h.session->retrieve(cid(0, 0, 10, 0, 0));
  EXPECT_TRUE(untouched->is_compact());
  EXPECT_EQ(untouched->allocated_bytes(), 512u * 512u * 8u);
  const auto zeros = h.values(cid(0, 0, 10, 0, 0));
  ASSERT_EQ(zeros.size(), 512u * 512u);
  for (double v : zeros) ASSERT_EQ(v, 0.0);
  EXPECT_TRUE(seen_output("fill", 1).all_zero);
  const auto filled = h.values(cid(0, 0, 11, 0, 1));
  ASSERT_EQ(filled.size(), 512u * 512u);
  for (std::uint64_t p = 0; p < filled.size(); p += 4099) EXPECT_EQ(filled[p], fill_value(1, 0, p));
}

TEST_F(AllocTest, FixedOpaqueIsRankOneBytes) {
  h.run(plan_of({stage("s", Plane::chunk,
                       {chunk_template("t", "fill", domain(0, 0, std::vector<std::int32_t>{0}), {},
                                       {output(10, fixed_spec({16}, ScalarType::opaque, InitPolicy::zero))})})}),
        meta);
  const OutputSeen& a = seen_output("fill", 0);
  EXPECT_EQ(a.desc.scalar, ScalarType::opaque);
  EXPECT_EQ(ext(a.desc), (std::vector<std::uint64_t>{16}));
  auto out = h.session->retrieve(cid(0, 0, 10, 0, 0));
  EXPECT_EQ(out->byte_size(), 16u);
}

TEST_F(AllocTest, BlockShapeFollowsTheTaskBlockBox) {
  h.run(plan_of({stage("s", Plane::chunk,
                       {chunk_template("t", "fill", domain(0, 0), {},
                                       {output(10, block_spec(1)), output(11, block_spec(3, ScalarType::f32))})})}),
        meta);
  const OutputSeen& c1 = seen_output("fill", 0, 0);
  EXPECT_EQ(c1.desc.rank, 3);
  EXPECT_EQ(ext(c1.desc), (std::vector<std::uint64_t>{4, 5, 6}));
  EXPECT_EQ(strides(c1.desc), (std::vector<std::int64_t>{5 * 6 * 8, 6 * 8, 8}));
  const OutputSeen& c3 = seen_output("fill", 0, 1);
  EXPECT_EQ(c3.desc.scalar, ScalarType::f32);
  EXPECT_EQ(c3.desc.rank, 4);
  EXPECT_EQ(ext(c3.desc), (std::vector<std::uint64_t>{4, 5, 6, 3}));
  EXPECT_EQ(strides(c3.desc), (std::vector<std::int64_t>{5 * 6 * 3 * 4, 6 * 3 * 4, 3 * 4, 4}));
  EXPECT_EQ(ext(seen_output("fill", 1, 0).desc), (std::vector<std::uint64_t>{2, 3, 1}));
  EXPECT_EQ(ext(seen_output("fill", 2, 0).desc), (std::vector<std::uint64_t>{1, 1, 7}));
  EXPECT_EQ(ext(seen_output("fill", 2, 1).desc), (std::vector<std::uint64_t>{1, 1, 7, 3}));
  EXPECT_EQ(extents_of(*h.session->retrieve(cid(0, 0, 10, 0, 1))), (std::vector<std::uint64_t>{2, 3, 1}));
}

TEST_F(AllocTest, BlockShapeOfGraphTaskUsesGroupOutputBlock) {
  seed(0, 0, 1, 3, 0.0);
  GraphReduceSpec g;
  g.fan_in = 3;
  g.num_inputs = 3;
  g.output_blocks = {2};
  h.run(plan_of({stage("g", Plane::graph,
                       {graph_template("g", "fill", domain(0, 0), {input(1)}, {output(10, block_spec(2))}, g)})}),
        meta);
  const OutputSeen& o = seen_output("fill", 2);
  EXPECT_EQ(ext(o.desc), (std::vector<std::uint64_t>{1, 1, 7, 2}));
}

TEST_F(AllocTest, LikeInputCopiesRankAndExtentsInOwnDtype) {
  for (std::int32_t b = 0; b < 3; ++b) {
    h.dataset->set_chunk(cid(0, 0, 1, 0, b), f64_buffer({2, 7}, std::vector<double>(14, 1.0)));
    h.dataset->set_chunk(cid(0, 0, 2, 0, b), f64_buffer({3}, {1.0, 2.0, 3.0}));
  }
  h.run(plan_of({stage("s", Plane::chunk,
                       {chunk_template("t", "fill", domain(0, 0), {input(1), input(2)},
                                       {output(10, like_input_spec(0, ScalarType::f32)),
                                        output(11, like_input_spec(1, ScalarType::i64))})})}),
        meta);
  const OutputSeen& a = seen_output("fill", 0, 0);
  EXPECT_EQ(a.desc.scalar, ScalarType::f32);
  EXPECT_EQ(ext(a.desc), (std::vector<std::uint64_t>{2, 7}));
  EXPECT_EQ(strides(a.desc), (std::vector<std::int64_t>{28, 4}));
  const OutputSeen& b = seen_output("fill", 0, 1);
  EXPECT_EQ(b.desc.scalar, ScalarType::i64);
  EXPECT_EQ(ext(b.desc), (std::vector<std::uint64_t>{3}));
}

TEST_F(AllocTest, LikeInputOfFortranInputIsCOrder) {
  const std::uint64_t e[3] = {2, 3, 4};
  for (std::int32_t b = 0; b < 3; ++b) {
    h.dataset->set_chunk(cid(0, 0, 1, 0, b), Buffer::allocate(Descriptor::fortran_order(ScalarType::f64, e), InitPolicy::zero));
  }
  h.run(plan_of({stage("s", Plane::chunk,
                       {chunk_template("t", "fill", domain(0, 0), {input(1)}, {output(10, like_input_spec(0))})})}),
        meta);
  const OutputSeen& a = seen_output("fill", 1);
  EXPECT_EQ(ext(a.desc), (std::vector<std::uint64_t>{2, 3, 4}));
  EXPECT_EQ(strides(a.desc), (std::vector<std::int64_t>{96, 32, 8}));
}

TEST_F(AllocTest, DynamicCapacitiesAndCommittedExtents) {
  // Stage 0: dynamic output of capacity 10, the kernel commits 3 elements.
  // Stage 1: LikeInput sees the committed extent, Dynamic(LikeInput) the capacity.
  h.run(plan_of({stage("make", Plane::chunk,
                       {chunk_template("m", "dyn_commit", domain(0, 0), {}, {output(10, dynamic_literal_spec(10))})}),
                 stage("use", Plane::chunk,
                       {chunk_template("u", "dyn_commit", domain(0, 0), {input(10)},
                                       {output(11, like_input_spec(0)), output(12, dynamic_like_input_spec(0)),
                                        output(13, dynamic_literal_spec(2))})},
                       {0})}),
        meta, [] {
          ExecOptions o = threads_opt(1);
          o.keep_all = true;
          return o;
        }());
  std::vector<Call> made, used;
  for (auto& c : calls_of("dyn_commit")) (c.inputs.empty() ? made : used).push_back(c);
  ASSERT_EQ(made.size(), 3u);
  ASSERT_EQ(used.size(), 3u);
  for (auto& c : made) {
    EXPECT_TRUE(c.outputs[0].dynamic);
    EXPECT_EQ(c.outputs[0].capacity, 10u);
    EXPECT_EQ(c.outputs[0].desc.rank, 1);
    EXPECT_EQ(c.outputs[0].desc.extents[0], 0u) << "visible size before commit is 0 (BUF-6)";
  }
  for (auto& c : used) {
    ASSERT_EQ(c.inputs.size(), 1u);
    EXPECT_EQ(c.inputs[0], (std::vector<double>{c.block * 10.0, c.block * 10.0 + 1, c.block * 10.0 + 2}));
    EXPECT_FALSE(c.outputs[0].dynamic);
    EXPECT_EQ(ext(c.outputs[0].desc), (std::vector<std::uint64_t>{3}));
    EXPECT_TRUE(c.outputs[1].dynamic);
    EXPECT_EQ(c.outputs[1].capacity, 10u);
    EXPECT_EQ(c.outputs[2].capacity, 2u);
  }
  // Only the committed prefix is stored.
  for (std::int32_t b = 0; b < 3; ++b) {
    EXPECT_EQ(h.values(cid(0, 0, 10, 0, b)), (std::vector<double>{b * 10.0, b * 10.0 + 1, b * 10.0 + 2})) << b;
    EXPECT_EQ(h.values(cid(0, 0, 13, 0, b)), (std::vector<double>{b * 10.0, b * 10.0 + 1})) << b;
    EXPECT_EQ(h.values(cid(0, 0, 11, 0, b)), (std::vector<double>{fill_value(b, 0, 0), fill_value(b, 0, 1),
                                                                  fill_value(b, 0, 2)}));
  }
}

TEST_F(AllocTest, ZeroInitDeliversZeros) {
  BufferSpec dyn = dynamic_literal_spec(6);
  dyn.init = InitPolicy::zero;
  h.run(plan_of({stage("s", Plane::chunk,
                       {chunk_template("t", "dyn_commit", domain(0, 0), {},
                                       {output(10, fixed_spec({5, 5}, ScalarType::f64, InitPolicy::zero)),
                                        output(11, block_spec(2, ScalarType::i64, InitPolicy::zero)),
                                        output(12, fixed_spec({9}, ScalarType::u8, InitPolicy::zero)), output(13, dyn)})})}),
        meta);
  auto cs = calls_of("dyn_commit");
  ASSERT_EQ(cs.size(), 3u);
  for (auto& c : cs) {
    for (std::size_t o = 0; o < c.outputs.size(); ++o) EXPECT_TRUE(c.outputs[o].all_zero) << "output " << o;
  }
  // The kernel wrote nothing into the i64/u8 outputs, so they stay zero.
  for (double v : h.values(cid(0, 0, 11, 0, 0))) EXPECT_EQ(v, 0.0);
  for (double v : h.values(cid(0, 0, 12, 0, 2))) EXPECT_EQ(v, 0.0);
}

TEST_F(AllocTest, UncommittedDynamicOutputFails) {
  const std::string msg = error_of([&] {
    h.run(plan_of({stage("s", Plane::chunk,
                         {chunk_template("t", "dyn_nocommit", domain(0, 0), {}, {output(10, dynamic_literal_spec(4))})})}),
          meta);
  });
  EXPECT_TRUE(has(msg, "dynamic kernel output was not committed: dyn_nocommit")) << msg;
}

TEST_F(AllocTest, UnresolvableSpecificationsFail) {
  seed(0, 0, 1, 3, 0.0);
  auto run_with = [&](BufferSpec spec) {
    h.reset_session();
    return error_of([&] {
      h.run(plan_of({stage("s", Plane::chunk,
                           {chunk_template("t", "fill", domain(0, 0), {input(1)}, {output(10, std::move(spec))})})}),
            meta);
    });
  };
  std::string msg = run_with(like_input_spec(1));
  EXPECT_TRUE(has(msg, "unable to resolve output Buffer Specification")) << msg;
  msg = run_with(dynamic_like_input_spec(3));
  EXPECT_TRUE(has(msg, "unable to resolve output Buffer Specification")) << msg;
  EXPECT_TRUE(calls_of("fill").empty()) << "the kernel must not run when allocation fails";

  // A graph group writing a block the level does not have cannot allocate Block(1).
  GraphReduceSpec g;
  g.num_inputs = 1;
  g.output_blocks = {9};
  msg = error_of([&] {
    h.run(plan_of({stage("g", Plane::graph,
                         {graph_template("g", "fill", domain(0, 0), {input(1)}, {output(10, block_spec(1))}, g)})}),
          meta);
  });
  EXPECT_TRUE(has(msg, "unable to resolve output Buffer Specification")) << msg;
}

TEST_F(AllocTest, KernelMayNotResizeAStaticOutput) {
  EXPECT_THROW(h.run(plan_of({stage("s", Plane::chunk,
                                    {chunk_template("t", "resize", domain(0, 0), {}, {output(10, fixed_spec({4}))})})}),
                     meta),
               Error);
}

TEST_F(AllocTest, KernelMaySubstituteAnotherDenseLayout) {
  h.run(plan_of({stage("s", Plane::chunk,
                       {chunk_template("t", "fortran_swap", domain(0, 0), {}, {output(10, block_spec(1))})})}),
        meta);
  auto out = h.session->retrieve(cid(0, 0, 10, 0, 0));
  EXPECT_EQ(extents_of(*out), (std::vector<std::uint64_t>{4, 5, 6}));
  auto v = values_of(*out);
  ASSERT_EQ(v.size(), 120u);
  for (std::uint64_t p = 0; p < v.size(); ++p) EXPECT_EQ(v[p], fill_value(0, 0, p)) << p;
}

TEST_F(AllocTest, KernelMayNotChangeTheDtypeOfAStaticOutput) {
  EXPECT_THROW(h.run(plan_of({stage("s", Plane::chunk,
                                    {chunk_template("t", "retype", domain(0, 0), {}, {output(10, fixed_spec({4}))})})}),
                     meta),
               Error);
  EXPECT_FALSE(h.session->store().contains(cid(0, 0, 10, 0, 0)));
}

TEST_F(AllocTest, DynamicCommitAboveCapacityOrTwiceFails) {
  EXPECT_THROW(h.run(plan_of({stage("s", Plane::chunk,
                                    {chunk_template("t", "dyn_overflow", domain(0, 0), {},
                                                    {output(10, dynamic_literal_spec(4))})})}),
                     meta),
               Error);
  EXPECT_THROW(h.run(plan_of({stage("s", Plane::chunk,
                                    {chunk_template("t", "dyn_twice", domain(0, 0), {},
                                                    {output(10, dynamic_literal_spec(4))})})}),
                     meta),
               Error);
}

TEST_F(AllocTest, EvaluatorBoundsReceiveTheTaskFacts) {
  for (std::int32_t b = 0; b < 3; ++b) {
    h.dataset->set_chunk(cid(0, 0, 1, 0, b), f64_buffer({3}, {1.0, 2.0, 3.0}));
  }
  BufferSpec spec = dynamic_literal_spec(0);
  spec.bound = BoundKind::backend_chunk;
  spec.bound_input = 0;
  {
    std::lock_guard lk(g_mu);
    g_bound_queries.clear();
    g_bound_input_bytes.clear();
  }
  h.run(plan_of({stage("s", Plane::chunk,
                       {chunk_template("t", "dyn_bound", domain(0, 0, std::vector<std::int32_t>{0, 1}), {input(1)},
                                       {output(10, fixed_spec({1})), output(11, spec)})})}),
        meta);
  for (auto& c : calls_of("dyn_bound")) {
    ASSERT_EQ(c.outputs.size(), 2u);
    EXPECT_TRUE(c.outputs[1].dynamic);
    EXPECT_EQ(c.outputs[1].capacity, static_cast<std::uint64_t>(5 + c.block)) << c.block;
  }
  {
    std::lock_guard lk(g_mu);
    ASSERT_EQ(g_bound_queries.size(), 2u);
    for (std::size_t i = 0; i < g_bound_queries.size(); ++i) {
      const BoundQuery& q = g_bound_queries[i];
      EXPECT_EQ(q.output_index, 1);
      EXPECT_EQ(q.step, 0);
      EXPECT_EQ(q.level, 0);
      EXPECT_EQ(q.dtype, ScalarType::f64);
      EXPECT_EQ(g_bound_input_bytes[i], (std::vector<std::uint64_t>{24}));
    }
    EXPECT_EQ(g_estimate_seen, 24u);
  }
  // An evaluator that cannot answer makes the specification unresolvable.
  h.reset_session();
  const std::string msg = error_of([&] {
    h.run(plan_of({stage("s", Plane::chunk,
                         {chunk_template("t", "dyn_bound", domain(0, 0, std::vector<std::int32_t>{2}), {input(1)},
                                         {output(11, spec)})})}),
          meta);
  });
  EXPECT_TRUE(has(msg, "unable to resolve output Buffer Specification")) << msg;
  // VAL-11: without an evaluator the plan is rejected before running.
  const std::string prep = error_of([&] {
    h.run(plan_of({stage("s", Plane::chunk,
                         {chunk_template("t", "dyn_no_bound", domain(0, 0), {input(1)}, {output(11, spec)})})}),
          meta);
  });
  EXPECT_TRUE(has(prep, "does not define its dynamic output bound")) << prep;
}

// ---------------------------------------------------------------------------
// EXEC-5, PLAN-9: level metadata, parameters and coverage reach the kernel.

TEST_F(ExecutorTest, KernelContextCarriesLevelParamsAndCoverage) {
  RunMeta meta = make_meta({unit_blocks(2), unit_blocks(3)}, 4);
  Plan plan;
  plan.shared_covered_boxes = {{box3(0, 0, 0, 1, 1, 1)}, {box3(2, 2, 2, 3, 3, 3), box3(5, 5, 5, 6, 6, 6)}};
  TaskTemplate hist = chunk_template("h", "ctx_hist", domain(4, 1, std::vector<std::int32_t>{0}), {},
                                     {output(10, fixed_spec({1}))});
  Histogram1DParams hp;
  hp.range = {0.0, 9.5};
  hist.params = hp;
  hist.covered_boxes_ref = 1;
  TaskTemplate hist_none = hist;
  hist_none.name = "h2";
  hist_none.domain.blocks = std::vector<std::int32_t>{1};
  hist_none.covered_boxes_ref = -1;
  TaskTemplate scal = chunk_template("s", "ctx_scalar", domain(4, 1, std::vector<std::int32_t>{2}), {},
                                     {output(11, fixed_spec({1}))});
  scal.params = ScalarParams{2.5};
  scal.covered_boxes_ref = 0;  // ignored: ScalarParams carries no coverage
  plan.stages.push_back(stage("s", Plane::chunk, {hist, hist_none, scal}));
  {
    std::lock_guard lk(g_mu);
    g_context.clear();
  }
  h.run(std::move(plan), meta);
  std::lock_guard lk(g_mu);
  ASSERT_EQ(g_context.size(), 3u);
  for (auto& [block, c] : g_context) {
    ASSERT_NE(c.level_meta, nullptr);
    EXPECT_EQ(c.level_meta->boxes, unit_blocks(3)) << "LevelMeta of (step 4, level 1)";
    EXPECT_TRUE(c.runmeta != nullptr);
    EXPECT_TRUE(c.has_params);
    EXPECT_TRUE(c.dataset);
  }
  EXPECT_EQ(g_context[0].covered, (std::vector<IndexBox>{box3(2, 2, 2, 3, 3, 3), box3(5, 5, 5, 6, 6, 6)}));
  EXPECT_EQ(g_context[0].scalar, 9.5);
  EXPECT_TRUE(g_context[1].covered.empty());
  EXPECT_TRUE(g_context[2].covered.empty());
  EXPECT_EQ(g_context[2].scalar, 2.5);
}

// ---------------------------------------------------------------------------
// LIFE-2

TEST_F(ExecutorTest, RetrievalDuringARunFailsAndSucceedsAfterwards) {
  const RunMeta meta = line_meta(2);
  seed(0, 0, 1, 2, 0.0);
  g_session = h.session.get();
  g_probe_id = cid(0, 0, 1, 0, 0);  // a dataset chunk: readable once the run is over
  g_retrieve_error.clear();
  g_nested_run_error.clear();
  g_running_seen = false;
  h.run(plan_of({stage("s", Plane::chunk,
                       {chunk_template("t", "probe", domain(0, 0, std::vector<std::int32_t>{1}), {},
                                       {output(10, fixed_spec({2}))})})}),
        meta);
  EXPECT_TRUE(g_running_seen);
  EXPECT_TRUE(has(g_retrieve_error, "output retrieval is not allowed while a plan run is in progress"))
      << g_retrieve_error;
  EXPECT_TRUE(has(g_nested_run_error, "runtime run is already in progress")) << g_nested_run_error;
  EXPECT_FALSE(h.session->running());
  EXPECT_EQ(h.values(cid(0, 0, 10, 0, 1)), (std::vector<double>{1000.0, 1001.0}));
  EXPECT_EQ(h.values(cid(0, 0, 1, 0, 0)), (std::vector<double>{0.0, 0.5}));
  // LIFE-4: nothing retained and nothing in the dataset.
  const std::string msg = error_of([&] { (void)h.session->retrieve(cid(0, 0, 10, 0, 0)); });
  EXPECT_TRUE(has(msg, "chunk is not available from retained outputs or dataset")) << msg;
}

TEST_F(ExecutorTest, RetrievalFromAnotherThreadDuringARunFails) {
  const RunMeta meta = line_meta(200);
  std::atomic<bool> done{false};
  std::atomic<int> refused{0};
  std::atomic<int> served{0};
  std::thread reader([&] {
    while (!done.load()) {
      if (!h.session->running()) continue;
      try {
        (void)h.session->retrieve(cid(0, 0, 10, 0, 0));
        ++served;
      } catch (const Error& e) {
        if (has(e.what(), "output retrieval is not allowed while a plan run is in progress")) ++refused;
      }
    }
  });
  h.run(plan_of({stage("s", Plane::chunk,
                       {chunk_template("t", "seq0", domain(0, 0), {}, {output(10, fixed_spec({1}))})})}),
        meta, threads_opt(2));
  done = true;
  reader.join();
  // The reader only asks while the flag says a run is in flight, so it may
  // never be served provisional data. (It may race with the end of the run,
  // in which case the final value is what it gets.)
  EXPECT_LE(served.load(), 1);
  EXPECT_EQ(h.values(cid(0, 0, 10, 0, 0)), (std::vector<double>{0.0}));
}

// ---------------------------------------------------------------------------
// Retention of outputs

class RetentionTest : public ExecutorTest {
 protected:
  // fill -> 10 -> sum -> 11 -> sum -> 12 over four blocks.
  Plan chain() {
    return plan_of({stage("a", Plane::chunk,
                          {chunk_template("a", "fill", domain(0, 0), {}, {output(10, fixed_spec({2}))})}),
                    stage("b", Plane::chunk,
                          {chunk_template("b", "sum", domain(0, 0), {input(10)}, {output(11, like_input_spec(0))})},
                          {0}),
                    stage("c", Plane::chunk,
                          {chunk_template("c", "sum", domain(0, 0), {input(11)}, {output(12, like_input_spec(0))})},
                          {1})});
  }
  std::set<std::pair<std::int32_t, std::int32_t>> produced_set(const RunStats& s) {
    std::set<std::pair<std::int32_t, std::int32_t>> out;  // (field, block)
    for (auto& id : s.produced) out.insert({id.field, id.block});
    return out;
  }
  RunMeta meta = line_meta(4);
};

TEST_F(RetentionTest, ConsumedIntermediatesAreReleasedAndSinksKept) {
  auto stats = h.run(chain(), meta, threads_opt(2));
  std::set<std::pair<std::int32_t, std::int32_t>> sinks;
  for (std::int32_t b = 0; b < 4; ++b) {
    sinks.insert({12, b});
    EXPECT_FALSE(h.session->store().contains(cid(0, 0, 10, 0, b))) << b;
    EXPECT_FALSE(h.session->store().contains(cid(0, 0, 11, 0, b))) << b;
    EXPECT_TRUE(h.session->store().contains(cid(0, 0, 12, 0, b))) << b;
    EXPECT_EQ(h.values(cid(0, 0, 12, 0, b)), (std::vector<double>{fill_value(b, 0, 0), fill_value(b, 0, 1)}));
  }
  EXPECT_EQ(produced_set(stats), sinks);
  EXPECT_EQ(stats.produced.size(), 4u);
}

TEST_F(RetentionTest, KeepAllRetainsEveryProducedChunk) {
  ExecOptions opt = threads_opt(2);
  opt.keep_all = true;
  auto stats = h.run(chain(), meta, opt);
  std::set<std::pair<std::int32_t, std::int32_t>> all;
  for (std::int32_t f : {10, 11, 12}) {
    for (std::int32_t b = 0; b < 4; ++b) {
      all.insert({f, b});
      EXPECT_TRUE(h.session->store().contains(cid(0, 0, f, 0, b))) << f << "/" << b;
      EXPECT_EQ(h.values(cid(0, 0, f, 0, b)), (std::vector<double>{fill_value(b, 0, 0), fill_value(b, 0, 1)}));
    }
  }
  EXPECT_EQ(produced_set(stats), all);
}

TEST_F(RetentionTest, KeepPredicateRetainsSelectedIntermediates) {
  ExecOptions opt = threads_opt(1);
  opt.keep = [](const ChunkId& id) { return id.field == 10; };
  auto stats = h.run(chain(), meta, opt);
  for (std::int32_t b = 0; b < 4; ++b) {
    EXPECT_TRUE(h.session->store().contains(cid(0, 0, 10, 0, b)));
    EXPECT_FALSE(h.session->store().contains(cid(0, 0, 11, 0, b)));
    EXPECT_TRUE(h.session->store().contains(cid(0, 0, 12, 0, b)));
  }
  EXPECT_EQ(stats.produced.size(), 8u);
}

// ---------------------------------------------------------------------------
// Thread count never changes results (EXEC-10)

struct RunResult {
  std::map<std::tuple<std::int32_t, std::int32_t, std::int32_t>, std::vector<double>> chunks;  // (field, block, version)
};

TEST_F(ExecutorTest, ResultsAreIndependentOfThreadCountAndWindow) {
  const std::int32_t n = 16;
  const RunMeta meta = line_meta(n);
  std::vector<double> leaf(n * 4);
  for (std::int32_t b = 0; b < n; ++b) {
    std::vector<double> v = {b + 1.0, 2.0 * b, (b % 5) - 2.0, 100.0 - b};
    for (int i = 0; i < 4; ++i) leaf[static_cast<std::size_t>(b * 4 + i)] = v[static_cast<std::size_t>(i)];
    h.dataset->set_chunk(cid(0, 0, 1, 0, b), f64_buffer({4}, v));
  }
  GraphReduceSpec round1;
  round1.fan_in = 4;
  round1.num_inputs = n;
  GraphReduceSpec round2;
  round2.fan_in = 4;
  round2.num_inputs = 4;
  // Stage order: consumer of field 10 before its producer, without an edge.
  Plan plan = plan_of(
      {stage("twice", Plane::chunk,
             {chunk_template("t", "sum", domain(0, 0), {input(10), input(1, 0, domain(0, 0, std::vector<std::int32_t>{3}))},
                             {output(11, like_input_spec(0))})}),
       stage("copy", Plane::chunk,
             {chunk_template("c", "sum", domain(0, 0), {input(1), input(1)}, {output(10, like_input_spec(0))})}),
       stage("r1", Plane::graph,
             {graph_template("r1", "sum", domain(0, 0), {input(11)}, {output(12, fixed_spec({4}))}, round1)}, {0}),
       stage("r2", Plane::graph,
             {graph_template("r2", "sum", domain(0, 0), {input(12)}, {output(13, fixed_spec({4}))}, round2)}, {2})});

  std::vector<double> expected(4, 0.0);
  for (std::int32_t b = 0; b < n; ++b) {
    for (int i = 0; i < 4; ++i) expected[static_cast<std::size_t>(i)] += 2.0 * leaf[static_cast<std::size_t>(b * 4 + i)] + leaf[static_cast<std::size_t>(3 * 4 + i)];
  }

  std::vector<RunResult> results;
  const std::vector<std::pair<int, std::size_t>> configs = {{1, 0}, {4, 0}, {4, 1}, {3, 2}};
  for (auto [threads, window] : configs) {
    h.reset_session();
    ExecOptions opt = threads_opt(threads);
    opt.max_active_tasks = window;
    opt.keep_all = true;
    auto stats = h.run(plan, meta, opt);
    EXPECT_EQ(stats.tasks_run, static_cast<std::uint64_t>(n + n + 4 + 1));
    RunResult r;
    for (auto& id : stats.produced) r.chunks[{id.field, id.block, id.version}] = h.values(id);
    EXPECT_EQ(r.chunks.size(), static_cast<std::size_t>(n + n + 4 + 1));
    EXPECT_EQ(h.values(cid(0, 0, 13, 0, 0)), expected) << "threads " << threads << " window " << window;
    results.push_back(std::move(r));
  }
  for (std::size_t i = 1; i < results.size(); ++i) {
    EXPECT_EQ(results[i].chunks, results[0].chunks) << "config " << i;
  }
}

// ---------------------------------------------------------------------------
// Scheduler footprint: bounded by the task window, not by plan size.

TEST_F(ExecutorTest, ActiveTasksAndMetadataStayBoundedAsTaskCountGrows) {
  const int threads = 2;
  auto wide = [&](std::int32_t n) {
    h.reset_session();
    const RunMeta meta = line_meta(n);
    return h.run(plan_of({stage("wide", Plane::chunk,
                                {chunk_template("w", "fill", domain(0, 0), {}, {output(10, fixed_spec({1}))})})}),
                 meta, threads_opt(threads));
  };
  const RunStats small = wide(1000);
  const RunStats large = wide(10000);
  EXPECT_EQ(small.tasks_run, 1000u);
  EXPECT_EQ(large.tasks_run, 10000u);
  EXPECT_GT(small.peak_active_tasks, 0u);
  EXPECT_LE(small.peak_active_tasks, static_cast<std::size_t>(4 * threads));
  EXPECT_LE(large.peak_active_tasks, static_cast<std::size_t>(4 * threads));
  EXPECT_GT(large.peak_metadata_bytes, 0u);
  // Ten times the tasks must not mean ten times the scheduler state.
  EXPECT_LT(large.peak_metadata_bytes, 2 * small.peak_metadata_bytes + 4096)
      << "small " << small.peak_metadata_bytes << " large " << large.peak_metadata_bytes;
}

TEST_F(ExecutorTest, ChainMetadataStaysWellBelowOneKilobytePerTask) {
  const int threads = 2;
  auto chain = [&](std::int32_t n) {
    h.reset_session();
    const RunMeta meta = line_meta(n);
    return h.run(
        plan_of({stage("a", Plane::chunk, {chunk_template("a", "fill", domain(0, 0), {}, {output(10, fixed_spec({1}))})}),
                 stage("b", Plane::chunk,
                       {chunk_template("b", "sum", domain(0, 0), {input(10)}, {output(11, like_input_spec(0))})}, {0}),
                 stage("c", Plane::chunk,
                       {chunk_template("c", "sum", domain(0, 0), {input(11)}, {output(12, like_input_spec(0))})}, {1})}),
        meta, threads_opt(threads));
  };
  const RunStats small = chain(1000);
  const RunStats large = chain(10000);
  EXPECT_EQ(large.tasks_run, 30000u);
  EXPECT_LE(small.peak_active_tasks, static_cast<std::size_t>(4 * threads));
  EXPECT_LE(large.peak_active_tasks, static_cast<std::size_t>(4 * threads));
  EXPECT_LT(large.peak_metadata_bytes, 30000u * 1024u) << large.peak_metadata_bytes;
  EXPECT_LT(large.peak_metadata_bytes, 20 * small.peak_metadata_bytes);
  // Intermediates were released as the chain advanced.
  EXPECT_EQ(large.produced.size(), 10000u);
}

}  // namespace
}  // namespace kangaroo
