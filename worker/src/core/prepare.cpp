#include "kangaroo/core/prepare.h"

#include <deque>

#include "kangaroo/core/plan_json.h"

namespace kangaroo {

namespace {

std::string tpath(std::size_t s, std::size_t t) {
  return "/stages/" + std::to_string(s) + "/templates/" + std::to_string(t);
}

void check_dag(const Plan& plan, std::vector<PlanIssue>& issues, std::vector<int>& order,
               std::vector<std::vector<int>>& dependents) {
  const std::size_t n = plan.stages.size();
  dependents.assign(n, {});
  std::vector<int> indegree(n, 0);
  bool ranges_ok = true;
  for (std::size_t s = 0; s < n; ++s) {
    const auto& after = plan.stages[s].after;
    for (std::size_t i = 0; i < after.size(); ++i) {
      const std::int32_t a = after[i];
      if (a < 0 || static_cast<std::size_t>(a) >= n) {
        issues.push_back({"/stages/" + std::to_string(s) + "/after/" + std::to_string(i), static_cast<int>(s), -1,
                          "stage dependency index out of range: " + std::to_string(a) + " (DAG-1)"});
        ranges_ok = false;
        continue;
      }
      dependents[static_cast<std::size_t>(a)].push_back(static_cast<int>(s));
      ++indegree[s];
    }
  }
  if (!ranges_ok) return;
  // Kahn's algorithm; leftover stages lie on a cycle (DAG-2).
  std::deque<int> ready;
  for (std::size_t s = 0; s < n; ++s) {
    if (indegree[s] == 0) ready.push_back(static_cast<int>(s));
  }
  order.clear();
  order.reserve(n);
  while (!ready.empty()) {
    const int s = ready.front();
    ready.pop_front();
    order.push_back(s);
    for (int d : dependents[static_cast<std::size_t>(s)]) {
      if (--indegree[static_cast<std::size_t>(d)] == 0) ready.push_back(d);
    }
  }
  if (order.size() != n) {
    for (std::size_t s = 0; s < n; ++s) {
      if (indegree[s] > 0) {
        issues.push_back({"/stages/" + std::to_string(s) + "/after", static_cast<int>(s), -1,
                          "stage dependency cycle detected at '" + plan.stages[s].name + "' (DAG-2)"});
        break;
      }
    }
  }
}

}  // namespace

std::vector<int> check_stage_graph(const Plan& plan) {
  std::vector<PlanIssue> issues;
  std::vector<int> order;
  std::vector<std::vector<int>> dependents;
  check_dag(plan, issues, order, dependents);
  if (!issues.empty()) throw PlanError(std::move(issues));
  return order;
}

PreparedPlan prepare_plan(Plan plan, const KernelRegistry& registry) {
  std::vector<PlanIssue> issues;
  PreparedPlan out;
  out.entries.resize(plan.stages.size());
  for (std::size_t s = 0; s < plan.stages.size(); ++s) {
    const auto& st = plan.stages[s];
    out.entries[s].resize(st.templates.size(), nullptr);
    for (std::size_t t = 0; t < st.templates.size(); ++t) {
      const auto& tmpl = st.templates[t];
      const int si = static_cast<int>(s);
      const int ti = static_cast<int>(t);
      const KernelEntry* e = registry.try_find(tmpl.kernel);
      if (e == nullptr) {
        issues.push_back({tpath(s, t) + "/kernel", si, ti, "kernel not found: " + tmpl.kernel + " (VAL-9)"});
        continue;
      }
      out.entries[s][t] = e;
      const ParamType got = param_type_of(tmpl.params);
      if (got != e->param_type) {
        issues.push_back({tpath(s, t) + "/params", si, ti,
                          "kernel " + tmpl.kernel + " received incompatible typed parameters: expected " +
                              std::string(param_type_name(e->param_type)) + ", got " +
                              std::string(param_type_name(got)) + " (VAL-10)"});
      }
      for (std::size_t o = 0; o < tmpl.outputs.size(); ++o) {
        const auto& b = tmpl.outputs[o].buffer;
        if (b.shape == ShapeKind::dynamic &&
            (b.bound == BoundKind::backend_chunk || b.bound == BoundKind::amr_subbox_pack) && e->bound == nullptr) {
          issues.push_back({tpath(s, t) + "/outputs/" + std::to_string(o) + "/buffer/shape/upper_bound", si, ti,
                            "kernel " + tmpl.kernel + " does not define its dynamic output bound (VAL-11)"});
        }
      }
    }
  }
  check_dag(plan, issues, out.topo_order, out.dependents);
  if (!issues.empty()) throw PlanError(std::move(issues));
  out.plan = std::move(plan);
  return out;
}

}  // namespace kangaroo
