// Kernel interface and registry (KREG-1..7).
//
// Kernel families export `register_<family>_kernels(KernelRegistry&)`; one
// place (register_default_kernels) calls them all — no static self-registration.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "kangaroo/core/buffer.h"
#include "kangaroo/core/chunk_id.h"
#include "kangaroo/core/dataset.h"
#include "kangaroo/core/params.h"
#include "kangaroo/core/runmeta.h"

namespace kangaroo {

// Chunks of one face of one halo input (NBR-2..5), ascending block index.
struct NeighborCollection {
  std::int32_t halo_input = 0;
  std::int32_t face = 0;  // 0..5 = Xm, Xp, Ym, Yp, Zm, Zp
  std::vector<std::int32_t> blocks;
  std::vector<ConstBufferPtr> chunks;
};

// Idle executor threads a kernel may borrow for one large task. run()
// calls fn(0) .. fn(parts - 1), some on other threads, and returns when all
// have finished (rethrowing the first exception). Parts must write disjoint
// data, so the result does not depend on which thread ran which part.
class TaskHelpers {
 public:
  virtual void run(std::size_t parts, const std::function<void(std::size_t part)>& fn) = 0;

 protected:
  ~TaskHelpers() = default;
};

struct KernelContext {
  std::string_view kernel;
  const RunMeta* runmeta = nullptr;
  const LevelMeta* level_meta = nullptr;  // LevelMeta of (step, level)
  std::int32_t step = 0;
  std::int32_t level = 0;
  std::int32_t block = 0;  // task block, or group output block for graph tasks
  std::span<const ConstBufferPtr> inputs;
  std::span<const NeighborCollection> neighbors;
  // A kernel may swap in a buffer with another dense stride permutation of
  // the same dtype and extents (ALLOC-8), e.g. a zero-copy file slice.
  std::span<BufferPtr> outputs;
  const KernelParams* params = nullptr;
  std::span<const IndexBox> covered;  // coverage list attached per PLAN-9
  Dataset* dataset = nullptr;         // may be null (no dataset)
  // Chunks the kernel's extra-read function asked for (KernelEntry::extra_reads),
  // resolved by the executor before the kernel runs, in the order requested.
  std::span<const ChunkId> extra_ids;
  std::span<const ConstBufferPtr> extra_chunks;
  // Null: the kernel runs alone on its thread.
  TaskHelpers* helpers = nullptr;

  // fn(part) for parts 0 .. parts - 1, on idle executor threads where there
  // are any.
  void for_parts(std::size_t parts, const std::function<void(std::size_t part)>& fn) const {
    if (helpers != nullptr && parts > 1) {
      helpers->run(parts, fn);
      return;
    }
    for (std::size_t p = 0; p < parts; ++p) fn(p);
  }

  template <class P>
  const P& param() const {
    if (params == nullptr || !std::holds_alternative<P>(*params)) {
      fail_kernel_params(kernel, "missing or incompatible typed parameters");
    }
    return std::get<P>(*params);
  }
  // The task's block box; fails (OP-GEN-3) when the block is out of range.
  const IndexBox& block_box() const;
  void require_inputs(std::size_t n) const;
  void require_outputs(std::size_t n) const;
};

using KernelFn = void (*)(KernelContext&);

// Input to a dynamic-bound evaluator (ALLOC-4).
struct BoundQuery {
  ScalarType dtype = ScalarType::f64;
  const RunMeta* runmeta = nullptr;
  const Dataset* dataset = nullptr;
  std::function<std::uint64_t(const ChunkId&)> estimate_bytes;  // data-service size query; 0 unknown
  std::int32_t step = 0, level = 0, block = 0;
  int output_index = 0;
  std::span<const std::uint64_t> input_bytes;  // 0 = unknown
  const KernelParams* params = nullptr;
};
// Element capacity, or nullopt when unresolvable.
using BoundFn = std::optional<std::uint64_t> (*)(const BoundQuery&);

// Input to an extra-read function: which task is about to run.
struct ExtraReadQuery {
  const RunMeta* runmeta = nullptr;
  std::int32_t step = 0, level = 0, block = 0;
  const KernelParams* params = nullptr;
};
// Appends chunk identities a task reads beyond its template inputs (e.g. the
// blocks an AMR halo overlaps). The executor resolves them like inputs — from
// the store, the dataset, or by waiting for a planned producer — so kernels
// never block on data. Must be deterministic; may throw kangaroo::Error.
using ExtraReadsFn = void (*)(const ExtraReadQuery&, std::vector<ChunkId>& out);

// Input to an input-window function: which part of a template input a task
// will read.
struct InputWindowQuery {
  const RunMeta* runmeta = nullptr;
  const LevelMeta* level = nullptr;  // the task's level
  std::int32_t step = 0, level_index = 0, block = 0;
  std::size_t input = 0;  // template input index
  const KernelParams* params = nullptr;
};
// The index box of a rank-3 block input the kernel reads (a subset of the
// block's box; an empty box when it reads nothing), or nullopt for all of it.
// A backend may then read only those cells; the buffer keeps the block's full
// extents, and cells outside the window hold zeros. Such a partial chunk is
// never cached for other readers.
using InputWindowFn = std::optional<IndexBox> (*)(const InputWindowQuery&);

struct KernelDescriptor {
  std::string name;
  int n_inputs = 0;   // documentation only (KREG-3)
  int n_outputs = 1;  // documentation only
  bool needs_neighbors = false;
  std::string param_schema_json;
};

struct KernelEntry {
  KernelDescriptor descriptor;
  ParamType param_type = ParamType::none;
  KernelFn fn = nullptr;
  BoundFn bound = nullptr;
  ExtraReadsFn extra_reads = nullptr;
  InputWindowFn input_window = nullptr;
  // False for catalog entries whose implementation arrives with a later
  // component; running them fails with "not implemented in this build".
  bool implemented = true;
};

class KernelRegistry {
 public:
  // Replaces an existing entry of the same name (KREG-1).
  void add(KernelEntry entry);
  // Throws Error(not_found) "kernel not found: <name>" (KREG-4).
  const KernelEntry& find(std::string_view name) const;
  const KernelEntry* try_find(std::string_view name) const;
  std::vector<const KernelDescriptor*> list() const;  // sorted by name
  std::size_t size() const { return entries_.size(); }

 private:
  std::map<std::string, KernelEntry, std::less<>> entries_;
};

// Convenience for registration code.
KernelEntry make_kernel(std::string name, ParamType params, KernelFn fn, int n_inputs,
                        int n_outputs, BoundFn bound = nullptr);
// Catalog entry without an implementation in this build.
KernelEntry make_unimplemented_kernel(std::string name, ParamType params, int n_inputs,
                                      int n_outputs, bool has_bound);

}  // namespace kangaroo
