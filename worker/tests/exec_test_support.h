// Builders shared by the executor-area tests (exec_test): run metadata, plan
// structs, small f64 buffers and a harness that prepares and runs a plan in a
// Session over a MemoryDataset. Expected values in the tests never come from
// these helpers; they only assemble inputs.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "kangaroo/core/buffer.h"
#include "kangaroo/core/chunk_id.h"
#include "kangaroo/core/kernel.h"
#include "kangaroo/core/plan.h"
#include "kangaroo/core/prepare.h"
#include "kangaroo/core/runmeta.h"
#include "kangaroo/data/memory_dataset.h"
#include "kangaroo/exec/executor.h"

namespace kangaroo::exec_testing {

inline IndexBox box3(std::int32_t ilo, std::int32_t jlo, std::int32_t klo, std::int32_t ihi, std::int32_t jhi,
                     std::int32_t khi) {
  IndexBox b;
  b.lo = {ilo, jlo, klo};
  b.hi = {ihi, jhi, khi};
  return b;
}

// One step (label `step_label`) with one level per entry of `levels`.
inline RunMeta make_meta(std::vector<std::vector<IndexBox>> levels, std::int32_t step_label = 0) {
  RunMeta m;
  StepMeta s;
  s.step = step_label;
  for (auto& boxes : levels) {
    LevelMeta l;
    l.boxes = std::move(boxes);
    s.levels.push_back(std::move(l));
  }
  m.steps.push_back(std::move(s));
  return m;
}

// `n` unit blocks laid out along x: block b is the single cell (2b, 0, 0).
// The one-cell gaps keep the blocks from being face neighbors.
inline std::vector<IndexBox> unit_blocks(std::int32_t n) {
  std::vector<IndexBox> boxes;
  boxes.reserve(static_cast<std::size_t>(n));
  for (std::int32_t b = 0; b < n; ++b) boxes.push_back(box3(2 * b, 0, 0, 2 * b, 0, 0));
  return boxes;
}

inline RunMeta line_meta(std::int32_t n, std::int32_t step_label = 0) {
  return make_meta({unit_blocks(n)}, step_label);
}

inline ChunkId cid(std::int32_t step, std::int32_t level, std::int32_t field, std::int32_t version,
                   std::int32_t block) {
  return ChunkId{step, static_cast<std::int16_t>(level), field, version, block};
}

// C-order f64 buffer of the given extents holding `values` (row-major).
inline BufferPtr f64_buffer(std::vector<std::uint64_t> extents, const std::vector<double>& values) {
  BufferPtr b = Buffer::allocate(Descriptor::c_order(ScalarType::f64, extents), InitPolicy::zero);
  if (!values.empty()) std::memcpy(b->mutable_data(), values.data(), values.size() * sizeof(double));
  return b;
}

inline BufferPtr f64_scalar(double v) { return f64_buffer({1}, {v}); }

// Logical elements in C order, converted to double.
inline std::vector<double> values_of(const Buffer& b) {
  std::vector<double> out;
  const std::uint64_t n = b.descriptor().element_count();
  out.reserve(n);
  for (std::uint64_t p = 0; p < n; ++p) out.push_back(b.element_as_double(p));
  return out;
}

inline std::vector<std::uint64_t> extents_of(const Buffer& b) {
  const Descriptor& d = b.descriptor();
  return {d.extents.begin(), d.extents.begin() + d.rank};
}

// ---- buffer specifications -----------------------------------------------

inline BufferSpec fixed_spec(std::vector<std::uint64_t> extents, ScalarType t = ScalarType::f64,
                             InitPolicy init = InitPolicy::uninitialized) {
  BufferSpec s;
  s.dtype = t;
  s.shape = ShapeKind::fixed;
  s.extents = std::move(extents);
  s.init = init;
  return s;
}

inline BufferSpec block_spec(std::int64_t components = 1, ScalarType t = ScalarType::f64,
                             InitPolicy init = InitPolicy::uninitialized) {
  BufferSpec s;
  s.dtype = t;
  s.shape = ShapeKind::block;
  s.components = components;
  s.init = init;
  return s;
}

inline BufferSpec like_input_spec(std::int64_t k, ScalarType t = ScalarType::f64,
                                  InitPolicy init = InitPolicy::uninitialized) {
  BufferSpec s;
  s.dtype = t;
  s.shape = ShapeKind::like_input;
  s.input_index = k;
  s.init = init;
  return s;
}

inline BufferSpec dynamic_literal_spec(std::uint64_t capacity, ScalarType t = ScalarType::f64) {
  BufferSpec s;
  s.dtype = t;
  s.shape = ShapeKind::dynamic;
  s.bound = BoundKind::literal;
  s.literal = capacity;
  return s;
}

inline BufferSpec dynamic_like_input_spec(std::int64_t k, ScalarType t = ScalarType::f64) {
  BufferSpec s;
  s.dtype = t;
  s.shape = ShapeKind::dynamic;
  s.bound = BoundKind::like_input;
  s.bound_input = k;
  return s;
}

// ---- plan structs ------------------------------------------------------------

inline Domain domain(std::int32_t step, std::int32_t level,
                     std::optional<std::vector<std::int32_t>> blocks = std::nullopt) {
  Domain d;
  d.step = step;
  d.level = level;
  d.blocks = std::move(blocks);
  return d;
}

inline FieldRef input(std::int32_t field, std::int32_t version = 0, std::optional<Domain> override_domain = std::nullopt) {
  FieldRef f;
  f.field = field;
  f.version = version;
  f.domain = std::move(override_domain);
  return f;
}

inline OutputRef output(std::int32_t field, BufferSpec spec, std::int32_t version = 0) {
  OutputRef o;
  o.field = field;
  o.version = version;
  o.buffer = std::move(spec);
  return o;
}

inline TaskTemplate chunk_template(std::string name, std::string kernel, Domain dom, std::vector<FieldRef> inputs,
                                   std::vector<OutputRef> outputs) {
  TaskTemplate t;
  t.name = std::move(name);
  t.plane = Plane::chunk;
  t.kernel = std::move(kernel);
  t.domain = std::move(dom);
  t.inputs = std::move(inputs);
  t.outputs = std::move(outputs);
  return t;
}

inline TaskTemplate graph_template(std::string name, std::string kernel, Domain dom, std::vector<FieldRef> inputs,
                                   std::vector<OutputRef> outputs, GraphReduceSpec spec) {
  TaskTemplate t;
  t.name = std::move(name);
  t.plane = Plane::graph;
  t.kernel = std::move(kernel);
  t.domain = std::move(dom);
  t.inputs = std::move(inputs);
  t.outputs = std::move(outputs);
  t.graph_reduce = std::move(spec);
  return t;
}

inline Stage stage(std::string name, Plane plane, std::vector<TaskTemplate> templates,
                   std::vector<std::int32_t> after = {}) {
  Stage s;
  s.name = std::move(name);
  s.plane = plane;
  s.templates = std::move(templates);
  s.after = std::move(after);
  return s;
}

inline Plan plan_of(std::vector<Stage> stages) {
  Plan p;
  p.stages = std::move(stages);
  return p;
}

inline ExecOptions threads_opt(int threads) {
  ExecOptions o;
  o.threads = threads;
  return o;
}

// Registry + in-memory dataset + session: prepares a plan and runs it.
struct Harness {
  KernelRegistry registry;
  std::shared_ptr<MemoryDataset> dataset = std::make_shared<MemoryDataset>();
  std::unique_ptr<Session> session = std::make_unique<Session>(dataset);

  void add(std::string name, KernelFn fn, BoundFn bound = nullptr) {
    registry.add(make_kernel(std::move(name), ParamType::none, fn, 0, 1, bound));
  }
  RunStats run(Plan plan, const RunMeta& meta, ExecOptions opt = threads_opt(1)) {
    prepared = std::make_unique<PreparedPlan>(prepare_plan(std::move(plan), registry));
    return session->run(*prepared, meta, std::move(opt));
  }
  // A fresh session over the same dataset (discards every retained chunk).
  void reset_session() { session = std::make_unique<Session>(dataset); }
  std::vector<double> values(const ChunkId& id) const { return values_of(*session->retrieve(id)); }

  std::unique_ptr<PreparedPlan> prepared;
};

}  // namespace kangaroo::exec_testing
