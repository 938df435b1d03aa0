// Preparation (VAL-9..11, KREG-5) and stage-graph checks (DAG-1, DAG-2):
// everything that can be rejected before a single stage runs.
#pragma once

#include <vector>

#include "kangaroo/core/kernel.h"
#include "kangaroo/core/plan.h"

namespace kangaroo {

struct PreparedPlan {
  Plan plan;
  // entries[stage][template]: the registry entry each template runs.
  std::vector<std::vector<const KernelEntry*>> entries;
  // A topological order of the stages (DAG-2).
  std::vector<int> topo_order;
  // dependents[s]: stages that list s in their `after`.
  std::vector<std::vector<int>> dependents;
};

// Throws PlanError listing every issue; the registry must outlive the result.
PreparedPlan prepare_plan(Plan plan, const KernelRegistry& registry);

// DAG checks alone; returns the topological order.
std::vector<int> check_stage_graph(const Plan& plan);

}  // namespace kangaroo
