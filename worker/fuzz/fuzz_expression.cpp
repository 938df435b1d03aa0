// libFuzzer target for the field-expression compiler (OP-EXPR-2/3): any text
// must either compile or fail with kangaroo::Error, and a compiled program must
// evaluate without crashing, with the array and single-element paths agreeing.
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include "kangaroo/core/error.h"
#include "kangaroo/kernels/expression.h"

namespace {

// Bitwise equality that treats every NaN as equal: both paths apply the same
// operations, but NaN payloads are not meaningful.
bool same_value(double a, double b) {
  if (std::isnan(a) && std::isnan(b)) return true;
  return std::memcmp(&a, &b, sizeof a) == 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::array<std::string, 3> kVariables{"a", "b", "c"};
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  std::optional<kangaroo::CompiledExpression> program;
  try {
    program.emplace(kangaroo::CompiledExpression::compile(text, kVariables));
  } catch (const kangaroo::Error&) {
    return 0;
  }

  // Ordinary values, signed zeros, extremes and non-finite inputs; more than
  // one evaluation block so block boundaries are exercised too.
  constexpr double kInf = std::numeric_limits<double>::infinity();
  constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  constexpr std::array<double, 12> kSamples{0.0,   -0.0,    1.0,  -1.5,  0.5,  3.0,
                                            1e300, -1e-300, kInf, -kInf, kNaN, 2.0};
  constexpr std::size_t n = kangaroo::CompiledExpression::kBlockSize + 7;
  static std::array<std::array<double, n>, 3> columns;
  for (std::size_t v = 0; v < 3; ++v) {
    for (std::size_t i = 0; i < n; ++i)
      columns[v][i] = kSamples[(i * (v + 1) + v) % kSamples.size()];
  }
  const std::array<const double*, 3> pointers{columns[0].data(), columns[1].data(),
                                              columns[2].data()};
  static std::array<double, n> out;
  program->evaluate(pointers, out.data(), n);
  for (std::size_t i = 0; i < n; i += 37) {
    const std::array<double, 3> row{columns[0][i], columns[1][i], columns[2][i]};
    if (!same_value(program->evaluate(row), out[i])) std::abort();
  }
  return 0;
}
