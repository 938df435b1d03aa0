// libFuzzer target for the plan document codec and preparation (PLAN-13,
// VAL-1..11, DAG-1/2).
//
// Any text must either decode or fail with kangaroo::Error. A decoded plan
// must survive encode -> decode unchanged (the encoding is a fixed point), and
// preparation against the default catalog must either fail with
// kangaroo::Error or yield a topological order that respects every `after`.
// Anything else (another exception type, a sanitizer report, a broken
// invariant) is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "kangaroo/core/error.h"
#include "kangaroo/core/kernel.h"
#include "kangaroo/core/plan.h"
#include "kangaroo/core/plan_json.h"
#include "kangaroo/core/prepare.h"
#include "kangaroo/kernels/register.h"

namespace {

[[noreturn]] void finding(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz_plan_decode: %s\n%s\n", what, detail.c_str());
  std::abort();
}

const kangaroo::KernelRegistry& registry() {
  static const kangaroo::KernelRegistry* r = [] {
    auto* reg = new kangaroo::KernelRegistry;
    kangaroo::register_default_kernels(*reg);
    return reg;
  }();
  return *r;
}

// Graph-reduction helpers on a decoded (hence VAL-7 valid) spec.
void walk_groups(const kangaroo::GraphReduceSpec& g) {
  const std::int64_t groups = g.group_count();
  if (groups < 1) finding("valid graph_reduce with no groups", std::to_string(groups));
  const std::int64_t limit = groups < 64 ? groups : 64;
  for (std::int64_t gi = 0; gi < limit; ++gi) {
    const auto [lo, hi] = g.group_range(gi);
    if (lo < 0 || hi > g.num_inputs || lo >= hi) {
      finding("group range outside [0, num_inputs)",
              std::to_string(lo) + ".." + std::to_string(hi));
    }
    (void)g.output_block(gi);
    const std::int64_t end = hi - lo < 64 ? hi : lo + 64;
    for (std::int64_t p = lo; p < end; ++p)
      (void)g.input_block(p);
  }
}

void check_prepared(const kangaroo::PreparedPlan& prepared) {
  const auto& stages = prepared.plan.stages;
  if (prepared.topo_order.size() != stages.size())
    finding("topological order has the wrong size", "");
  std::vector<int> pos(stages.size(), -1);
  for (std::size_t i = 0; i < prepared.topo_order.size(); ++i) {
    const int s = prepared.topo_order[i];
    if (s < 0 || static_cast<std::size_t>(s) >= stages.size() ||
        pos[static_cast<std::size_t>(s)] != -1) {
      finding("topological order is not a permutation", std::to_string(s));
    }
    pos[static_cast<std::size_t>(s)] = static_cast<int>(i);
  }
  for (std::size_t s = 0; s < stages.size(); ++s) {
    for (const std::int32_t a : stages[s].after) {
      if (pos[static_cast<std::size_t>(a)] >= pos[s])
        finding("stage ordered before its prerequisite", "");
    }
    if (prepared.entries[s].size() != stages[s].templates.size())
      finding("entries do not match templates", "");
    for (std::size_t t = 0; t < stages[s].templates.size(); ++t) {
      if (prepared.entries[s][t] == nullptr)
        finding("prepared template without a registry entry", "");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  kangaroo::Plan plan;
  try {
    plan = kangaroo::decode_plan(text);
  } catch (const kangaroo::Error&) {
    return 0;  // rejected input: the expected outcome for most of the corpus
  }

  for (const auto& stage : plan.stages) {
    for (const auto& t : stage.templates) {
      if (t.graph_reduce) walk_groups(*t.graph_reduce);
    }
  }

  const std::string encoded = kangaroo::encode_plan(plan);
  kangaroo::Plan again;
  try {
    again = kangaroo::decode_plan(encoded);
  } catch (const kangaroo::Error& e) {
    finding("encoded plan does not decode", std::string(e.what()) + "\n" + encoded);
  }
  if (kangaroo::encode_plan(again) != encoded) finding("encoding is not a fixed point", encoded);

  try {
    const kangaroo::PreparedPlan prepared = kangaroo::prepare_plan(std::move(again), registry());
    check_prepared(prepared);
  } catch (const kangaroo::Error&) {
  }
  return 0;
}
