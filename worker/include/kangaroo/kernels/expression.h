// Field-expression compiler (OP-EXPR-1..3).
//
// Text is parsed once into a flat postfix program (constants folded); the
// program is immutable afterwards, so one compiled expression may be evaluated
// from any number of threads at once. Evaluation runs each operation over a
// block of elements before moving to the next one, so the per-operation
// dispatch is paid once per block rather than once per element.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kangaroo/kernels/math/expression_ops.h"

namespace kangaroo {

class CompiledExpression {
 public:
  // Elements processed per operation in the array evaluator.
  static constexpr std::size_t kBlockSize = 256;

  // Variable `i` of the text binds to `variables[i]`. Throws Error(kernel)
  // "field_expr parse failed: <reason> at position <n> in '<text>'" on bad
  // text, a non-finite literal, an unknown name, or empty/duplicate variable
  // names.
  static CompiledExpression compile(std::string_view text, std::span<const std::string> variables);

  std::size_t variable_count() const { return variable_count_; }
  // Size of the folded program; exposed so tests can observe constant folding.
  std::size_t instruction_count() const { return code_.size(); }
  std::size_t max_stack_depth() const { return max_depth_; }

  // One element: `values[i]` is variable i.
  double evaluate(std::span<const double> values) const;
  // out[p] = expression(variables[0][p], variables[1][p], ...) for p < n.
  // Each variables[i] points at n contiguous values; `out` may be one of them
  // (in-place) but must not otherwise overlap them.
  void evaluate(std::span<const double* const> variables, double* out, std::size_t n) const;

 private:
  struct Instruction {
    math::ExprOp op = math::ExprOp::constant;
    std::uint32_t variable = 0;  // ExprOp::variable
    double value = 0.0;          // ExprOp::constant
  };
  friend class ExpressionParser;

  CompiledExpression() = default;
  void require_variables(std::size_t supplied) const;

  std::vector<Instruction> code_;
  std::size_t max_depth_ = 0;
  std::size_t variable_count_ = 0;
};

// Compiles through a small process-wide cache keyed by (text, variables) so a
// template expanded over many blocks compiles once. Thread-safe; failures are
// not cached.
std::shared_ptr<const CompiledExpression> compile_expression_cached(
    std::string_view text, std::span<const std::string> variables);

}  // namespace kangaroo
