// Plan document codec (PLAN-13) and decode-time validation (VAL-1..8).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "kangaroo/core/plan.h"

namespace kangaroo {

// One validation finding. `stage`/`template_index` are -1 when not inside one.
struct PlanIssue {
  std::string path;  // JSON pointer of the offending value, e.g. /stages/0/templates/1/deps/faces
  int stage = -1;
  int template_index = -1;
  std::string message;

  // "stage 0 template 1 at /stages/0/...: <message>"
  std::string to_string() const;
};

// Thrown by decode/prepare with every issue found; what() is the first one.
class PlanError : public Error {
 public:
  explicit PlanError(std::vector<PlanIssue> issues);
  const std::vector<PlanIssue>& issues() const { return issues_; }

 private:
  std::vector<PlanIssue> issues_;
};

// Decodes and validates a plan document. Collects every decode-time issue it
// can (continuing past a bad value where the structure allows) and throws
// PlanError when there is at least one.
Plan decode_plan(std::string_view json_text);
std::string encode_plan(const Plan& plan);

}  // namespace kangaroo
