// Field-expression compiler and evaluator (OP-EXPR-2, OP-EXPR-3).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <numbers>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "kangaroo/kernels/expression.h"
#include "kernel_harness.h"

namespace kangaroo {
namespace {

using test::throws_with;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

const std::vector<std::string> kAbc{"a", "b", "c"};

double eval(std::string_view text, std::vector<double> values = {0.0, 0.0, 0.0},
            const std::vector<std::string>& vars = kAbc) {
  return CompiledExpression::compile(text, vars).evaluate(values);
}

// Same value through the array path, to make sure both paths agree.
double eval_array(std::string_view text, std::vector<double> values) {
  const auto program = CompiledExpression::compile(text, kAbc);
  std::vector<const double*> ptrs;
  for (const double& v : values)
    ptrs.push_back(&v);
  double out = -12345.0;
  program.evaluate(ptrs, &out, 1);
  return out;
}

TEST(ExpressionLiterals, PythonReprFormsParseExactly_OP_EXPR_2) {
  EXPECT_EQ(eval("1e-05"), 1e-05);
  EXPECT_EQ(eval("2.0"), 2.0);
  EXPECT_EQ(eval("1e+16"), 1e16);
  EXPECT_EQ(eval("5e-324"), 5e-324);
  EXPECT_EQ(eval("1.7976931348623157e+308"), 1.7976931348623157e308);
  EXPECT_EQ(eval("0.1"), 0.1);
  EXPECT_EQ(eval(".5"), 0.5);
  EXPECT_EQ(eval("5."), 5.0);
  EXPECT_EQ(eval("3"), 3.0);
  EXPECT_EQ(eval("2E3"), 2000.0);
  // Negative literals are unary minus applied to a literal.
  const double neg_zero = eval("-0.0");
  EXPECT_EQ(neg_zero, 0.0);
  EXPECT_TRUE(std::signbit(neg_zero));
  EXPECT_EQ(eval("-1e-05"), -1e-05);
}

TEST(ExpressionLiterals, BelowSubnormalRangeRoundsToZero) {
  EXPECT_EQ(eval("1e-400"), 0.0);
}

TEST(ExpressionLiterals, NonFiniteLiteralsRejected_ERR_35) {
  for (const char* text : {"inf", "-inf", "nan", "NaN", "Infinity", "a + inf", "1e999", "-1e400"}) {
    EXPECT_TRUE(
        throws_with([&] { (void)CompiledExpression::compile(text, kAbc); }, "non-finite literal"))
        << text;
  }
}

TEST(ExpressionLiterals, VariableNamedLikeNonFiniteBindsAsVariable) {
  const std::vector<std::string> vars{"inf"};
  EXPECT_EQ(eval("inf * 2", {3.0}, vars), 6.0);
}

TEST(ExpressionLiterals, MalformedNumbersRejected_ERR_35) {
  for (const char* text : {"2x", "1.2.3", "1e", "1e+", "0x10", "1_000", "3a"}) {
    EXPECT_TRUE(throws_with([&] { (void)CompiledExpression::compile(text, kAbc); },
                            "malformed numeric literal"))
        << text;
  }
}

TEST(ExpressionGrammar, ArithmeticPrecedenceAndAssociativity_OP_EXPR_2) {
  const std::vector<double> v{2.0, 3.0, 4.0};
  EXPECT_EQ(eval("a + b * c", v), 14.0);
  EXPECT_EQ(eval("(a + b) * c", v), 20.0);
  EXPECT_EQ(eval("a - b - c", v), -5.0);
  EXPECT_EQ(eval("c / a / a", v), 1.0);
  EXPECT_EQ(eval("a * b / c", v), 1.5);
  EXPECT_EQ(eval("+a - -b", v), 5.0);
  EXPECT_EQ(eval("  a\t+\nb ", v), 5.0);
}

TEST(ExpressionGrammar, PowerIsRightAssociativeAndBindsTighterThanUnaryMinus_OP_EXPR_2) {
  const std::vector<double> v{2.0, 3.0, 2.0};
  EXPECT_EQ(eval("a ** b", v), 8.0);
  EXPECT_EQ(eval("a ^ b", v), 8.0);
  EXPECT_EQ(eval("a ** b ** c", v), 512.0);  // 2 ** 9, not 8 ** 2
  EXPECT_EQ(eval("a ^ b ^ c", v), 512.0);
  EXPECT_EQ(eval("-a ** 2", v), -4.0);
  EXPECT_EQ(eval("(-a) ** 2", v), 4.0);
  EXPECT_EQ(eval("a ** -1", v), 0.5);
  EXPECT_EQ(eval("2 * a ** 2", v), 8.0);
  EXPECT_EQ(eval("pow(a, 0.5)", v), std::sqrt(2.0));
}

TEST(ExpressionGrammar, ComparisonsYieldOneOrZero_OP_EXPR_2) {
  const std::vector<double> v{1.0, 2.0, 2.0};
  EXPECT_EQ(eval("a < b", v), 1.0);
  EXPECT_EQ(eval("a > b", v), 0.0);
  EXPECT_EQ(eval("b <= c", v), 1.0);
  EXPECT_EQ(eval("b >= c", v), 1.0);
  EXPECT_EQ(eval("a >= b", v), 0.0);
  EXPECT_EQ(eval("b == c", v), 1.0);
  EXPECT_EQ(eval("b != c", v), 0.0);
  EXPECT_EQ(eval("a != b", v), 1.0);
  // Arithmetic binds tighter than comparison.
  EXPECT_EQ(eval("a + 1 == b", v), 1.0);
  // Relational binds tighter than equality.
  EXPECT_EQ(eval("a < b == 1", v), 1.0);
}

TEST(ExpressionGrammar, ComparisonsFollowIeeeForNaN_OP_EXPR_2) {
  const std::vector<double> v{kNaN, 1.0, 0.0};
  EXPECT_EQ(eval("a < b", v), 0.0);
  EXPECT_EQ(eval("a > b", v), 0.0);
  EXPECT_EQ(eval("a <= b", v), 0.0);
  EXPECT_EQ(eval("a >= b", v), 0.0);
  EXPECT_EQ(eval("a == a", v), 0.0);
  EXPECT_EQ(eval("a != a", v), 1.0);
  EXPECT_EQ(eval("1.0/0.0 > 1e308"), 1.0);
}

TEST(ExpressionGrammar, LogicalOperatorsAllSpellings_OP_EXPR_2) {
  for (double a : {0.0, 1.0, -2.0}) {
    for (double b : {0.0, 3.0}) {
      const double expect_and = (a != 0.0 && b != 0.0) ? 1.0 : 0.0;
      const double expect_or = (a != 0.0 || b != 0.0) ? 1.0 : 0.0;
      EXPECT_EQ(eval("a and b", {a, b, 0.0}), expect_and);
      EXPECT_EQ(eval("a && b", {a, b, 0.0}), expect_and);
      EXPECT_EQ(eval("a or b", {a, b, 0.0}), expect_or);
      EXPECT_EQ(eval("a || b", {a, b, 0.0}), expect_or);
    }
  }
  // `and` binds tighter than `or`; comparisons tighter than both.
  EXPECT_EQ(eval("a or b and c", {1.0, 0.0, 0.0}), 1.0);
  EXPECT_EQ(eval("(a or b) and c", {1.0, 0.0, 0.0}), 0.0);
  EXPECT_EQ(eval("a < 1 and b > 2", {0.5, 3.0, 0.0}), 1.0);
  // NaN is a non-zero value, hence true.
  EXPECT_EQ(eval("a and b", {kNaN, 1.0, 0.0}), 1.0);
}

TEST(ExpressionGrammar, IfSelectsBranch_OP_EXPR_2) {
  EXPECT_EQ(eval("if(a > 0, b, c)", {1.0, 10.0, 20.0}), 10.0);
  EXPECT_EQ(eval("if(a > 0, b, c)", {-1.0, 10.0, 20.0}), 20.0);
  EXPECT_EQ(eval("if(a, b, c)", {kNaN, 10.0, 20.0}), 10.0);
  // The untaken branch may be NaN or inf without affecting the result.
  EXPECT_EQ(eval("if(a > 0, sqrt(a), 0)", {-4.0, 0.0, 0.0}), 0.0);
  EXPECT_EQ(eval("if(a == 0, 1, 1/a)", {0.0, 0.0, 0.0}), 1.0);
  EXPECT_EQ(eval_array("if(a > 0, sqrt(a), 0)", {-4.0, 0.0, 0.0}), 0.0);
}

TEST(ExpressionGrammar, DivisionByZeroIsIeee) {
  EXPECT_EQ(eval("1 / a", {0.0, 0, 0}), kInf);
  EXPECT_EQ(eval("-1 / a", {0.0, 0, 0}), -kInf);
  EXPECT_TRUE(std::isnan(eval("a / a", {0.0, 0, 0})));
}

struct UnaryCase {
  const char* name;
  double (*reference)(double);
  double arg;
};

TEST(ExpressionFunctions, UnaryFunctionsMatchLibm_OP_EXPR_2) {
  const UnaryCase cases[] = {
      {"sqrt", [](double x) { return std::sqrt(x); }, 2.25},
      {"exp", [](double x) { return std::exp(x); }, 0.7},
      {"log", [](double x) { return std::log(x); }, 3.5},
      {"log10", [](double x) { return std::log10(x); }, 250.0},
      {"sin", [](double x) { return std::sin(x); }, 0.3},
      {"cos", [](double x) { return std::cos(x); }, 0.3},
      {"tan", [](double x) { return std::tan(x); }, 0.3},
      {"asin", [](double x) { return std::asin(x); }, 0.4},
      {"acos", [](double x) { return std::acos(x); }, 0.4},
      {"atan", [](double x) { return std::atan(x); }, 0.4},
      {"sinh", [](double x) { return std::sinh(x); }, 1.2},
      {"cosh", [](double x) { return std::cosh(x); }, 1.2},
      {"tanh", [](double x) { return std::tanh(x); }, 1.2},
      {"asinh", [](double x) { return std::asinh(x); }, 1.2},
      {"acosh", [](double x) { return std::acosh(x); }, 1.2},
      {"atanh", [](double x) { return std::atanh(x); }, 0.2},
      {"abs", [](double x) { return std::fabs(x); }, -3.25},
      {"floor", [](double x) { return std::floor(x); }, -1.5},
      {"ceil", [](double x) { return std::ceil(x); }, -1.5},
      {"erf", [](double x) { return std::erf(x); }, 0.8},
  };
  for (const auto& c : cases) {
    const std::string text = std::string(c.name) + "(a)";
    EXPECT_EQ(eval(text, {c.arg, 0, 0}), c.reference(c.arg)) << text;
    EXPECT_EQ(eval_array(text, {c.arg, 0, 0}), c.reference(c.arg)) << text;
  }
  EXPECT_TRUE(std::isnan(eval("sqrt(a)", {-1.0, 0, 0})));
  EXPECT_TRUE(std::isnan(eval("log(a)", {-1.0, 0, 0})));
  EXPECT_EQ(eval("log(a)", {0.0, 0, 0}), -kInf);
}

TEST(ExpressionFunctions, BinaryFunctionsMatchLibm_OP_EXPR_2) {
  EXPECT_EQ(eval("atan2(a, b)", {1.0, -2.0, 0}), std::atan2(1.0, -2.0));
  EXPECT_EQ(eval("fmod(a, b)", {7.5, 2.0, 0}), 1.5);
  EXPECT_EQ(eval("fmod(a, b)", {-7.5, 2.0, 0}), -1.5);
  EXPECT_EQ(eval("pow(a, b)", {1.5, 3.0, 0}), 3.375);
  EXPECT_EQ(eval("min(a, b)", {1.5, -3.0, 0}), -3.0);
  EXPECT_EQ(eval("max(a, b)", {1.5, -3.0, 0}), 1.5);
  EXPECT_EQ(eval("max(a, b)", {-kInf, -3.0, 0}), -3.0);
}

TEST(ExpressionFunctions, MinMaxPropagateNaN) {
  EXPECT_TRUE(std::isnan(eval("min(a, b)", {kNaN, 1.0, 0})));
  EXPECT_TRUE(std::isnan(eval("min(a, b)", {1.0, kNaN, 0})));
  EXPECT_TRUE(std::isnan(eval("max(a, b)", {kNaN, 1.0, 0})));
  EXPECT_TRUE(std::isnan(eval("max(a, b)", {1.0, kNaN, 0})));
}

TEST(ExpressionFunctions, Heaviside_OP_EXPR_2) {
  EXPECT_EQ(eval("heaviside(a, 0.5)", {-2.0, 0, 0}), 0.0);
  EXPECT_EQ(eval("heaviside(a, 0.5)", {0.0, 0, 0}), 0.5);
  EXPECT_EQ(eval("heaviside(a, 0.5)", {-0.0, 0, 0}), 0.5);
  EXPECT_EQ(eval("heaviside(a, 0.5)", {3.0, 0, 0}), 1.0);
  EXPECT_EQ(eval("heaviside(a, 0.5)", {kInf, 0, 0}), 1.0);
  EXPECT_TRUE(std::isnan(eval("heaviside(a, 0.5)", {kNaN, 0, 0})));
}

TEST(ExpressionFunctions, BesselFunctionsMatchStandardSpecialFunctions_OP_EXPR_2) {
  for (int n : {0, 1, 2, 5}) {
    for (double x : {0.25, 1.5, 7.0, 20.0}) {
      const std::vector<double> v{static_cast<double>(n), x, 0};
      EXPECT_NEAR(eval("jn(a, b)", v), std::cyl_bessel_j(static_cast<double>(n), x),
                  1e-13 * (1.0 + std::fabs(std::cyl_bessel_j(static_cast<double>(n), x))))
          << "jn " << n << " " << x;
      EXPECT_NEAR(eval("yn(a, b)", v), std::cyl_neumann(static_cast<double>(n), x),
                  1e-12 * (1.0 + std::fabs(std::cyl_neumann(static_cast<double>(n), x))))
          << "yn " << n << " " << x;
    }
  }
  // Integer orders: J_n(-x) = (-1)^n J_n(x), which the C++17 functions do not
  // accept (negative x), so check the parity identity instead.
  EXPECT_NEAR(eval("jn(1, a)", {-1.5, 0, 0}), -std::cyl_bessel_j(1.0, 1.5), 1e-15);
  EXPECT_NEAR(eval("jn(2, a)", {-1.5, 0, 0}), std::cyl_bessel_j(2.0, 1.5), 1e-15);
  EXPECT_EQ(eval("yn(0, a)", {0.0, 0, 0}), -kInf);
  EXPECT_TRUE(std::isnan(eval("jn(a, 1)", {kNaN, 0, 0})));
  EXPECT_TRUE(std::isnan(eval("jn(a, 1)", {1e12, 0, 0})));
}

// Independent reference: the arithmetic-geometric mean in long double,
// K = pi / (2 AGM(1, k')), E = K (1 - sum 2^(n-1) c_n^2).
std::pair<long double, long double> agm_elliptic(long double k) {
  long double a = 1.0L;
  long double b = std::sqrt((1.0L - k) * (1.0L + k));
  long double c = std::fabs(k);
  long double weight = 0.5L;
  long double sum = weight * c * c;
  for (int n = 0; n < 40; ++n) {
    const long double next_a = 0.5L * (a + b);
    c = 0.5L * (a - b);
    b = std::sqrt(a * b);
    a = next_a;
    weight *= 2.0L;
    sum += weight * c * c;
  }
  const long double big_k = std::numbers::pi_v<long double> / (2.0L * a);
  return {big_k, big_k * (1.0L - sum)};
}

TEST(ExpressionFunctions, CompleteEllipticIntegralsMatchReferences_OP_EXPR_2) {
  for (double k : {0.0, 0.1, -0.3, 0.5, 0.9, 0.99, -0.999999, 0.999999999}) {
    const auto [ref_k, ref_e] = agm_elliptic(k);
    const auto k1 = static_cast<double>(ref_k);
    const auto k2 = static_cast<double>(ref_e);
    EXPECT_NEAR(eval("comp_ellint_1(a)", {k, 0, 0}), k1, 4e-15 * k1) << k;
    EXPECT_NEAR(eval("comp_ellint_2(a)", {k, 0, 0}), k2, 4e-15 * k2) << k;
  }
  // Cross-check against the standard versions away from |k| -> 1, where their
  // 1 - k*k loses digits; libstdc++'s E(0.9) is itself ~7e-15 off (mpmath
  // gives 1.17169705278161411), hence the looser bound.
  for (double k : {0.0, 0.1, -0.3, 0.5, 0.9}) {
    EXPECT_NEAR(eval("comp_ellint_1(a)", {k, 0, 0}), std::comp_ellint_1(k),
                2e-14 * std::comp_ellint_1(k))
        << k;
    EXPECT_NEAR(eval("comp_ellint_2(a)", {k, 0, 0}), std::comp_ellint_2(k),
                2e-14 * std::comp_ellint_2(k))
        << k;
  }
  EXPECT_NEAR(eval("comp_ellint_2(a)", {0.9, 0, 0}), 1.17169705278161411, 4e-16);
  EXPECT_NEAR(eval("comp_ellint_1(0)"), std::numbers::pi / 2, 1e-15);
  EXPECT_EQ(eval("comp_ellint_1(a)", {1.0, 0, 0}), kInf);
  EXPECT_EQ(eval("comp_ellint_2(a)", {-1.0, 0, 0}), 1.0);
  // Outside |k| <= 1 the standard functions throw; the language yields NaN.
  EXPECT_TRUE(std::isnan(eval("comp_ellint_1(a)", {1.5, 0, 0})));
  EXPECT_TRUE(std::isnan(eval("comp_ellint_2(a)", {-2.0, 0, 0})));
  EXPECT_TRUE(std::isnan(eval("comp_ellint_2(a)", {kNaN, 0, 0})));
}

TEST(ExpressionFunctions, NestedCallsAndExpressionsAsArguments) {
  EXPECT_EQ(eval("max(min(a, b), c * 2)", {1.0, 5.0, 0.25}), 1.0);
  EXPECT_EQ(eval("sqrt(abs(a - b))", {1.0, 10.0, 0}), 3.0);
  EXPECT_EQ(eval("if(a > b, pow(a, 2), -pow(b, 2))", {1.0, 3.0, 0}), -9.0);
}

struct ParseFailure {
  const char* text;
  const char* reason;
};

TEST(ExpressionErrors, ParseFailuresNameReasonAndPosition_OP_EXPR_3) {
  const ParseFailure cases[] = {
      {"", "empty expression"},
      {"   ", "empty expression"},
      {"a +", "expected a value but found end of expression at position 3"},
      {"a + )", "expected a value but found ')' at position 4"},
      {"a b", "unexpected name 'b' at position 2"},
      {"(a", "expected ')' but found end of expression"},
      {"a)", "unexpected ')' at position 1"},
      {"sqrt(a, b)", "function 'sqrt' takes 1 argument(s), got 2"},
      {"atan2(a)", "function 'atan2' takes 2 argument(s), got 1"},
      {"if(a, b)", "function 'if' takes 3 argument(s), got 2"},
      {"min()", "function 'min' takes 2 argument(s), got 0"},
      {"foo(a)", "unknown function 'foo'"},
      {"q + 1", "unknown variable 'q'"},
      {"A + 1", "unknown variable 'A'"},
      {"sqrt + 1", "function 'sqrt' needs an argument list"},
      {"a = b", "unexpected '='"},
      {"a & b", "unexpected '&'"},
      {"a | b", "unexpected '|'"},
      {"!a", "unexpected '!'"},
      {"a < b < c", "chained comparison"},
      {"a == b != c", "chained comparison"},
      {"a # b", "unexpected character '#' at position 2"},
      {"a \x01", "unexpected byte 0x01 at position 2"},
      {"a,b", "unexpected ','"},
      {"and", "expected a value but found 'and'"},
      {"a ** ", "expected a value"},
      {"* a", "expected a value but found '*' at position 0"},
  };
  for (const auto& c : cases) {
    EXPECT_TRUE(throws_with([&] { (void)CompiledExpression::compile(c.text, kAbc); }, c.reason))
        << c.text;
    EXPECT_TRUE(throws_with([&] { (void)CompiledExpression::compile(c.text, kAbc); },
                            "field_expr parse failed: "))
        << c.text;
  }
}

TEST(ExpressionErrors, ParseFailureIsKernelError_OP_EXPR_3) {
  try {
    (void)CompiledExpression::compile("a +* b", kAbc);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kernel);
    EXPECT_NE(std::string(e.what()).find("in 'a +* b'"), std::string::npos) << e.what();
  }
}

TEST(ExpressionErrors, DeepNestingFailsInsteadOfOverflowingTheStack) {
  const std::string deep = std::string(100000, '(') + "a" + std::string(100000, ')');
  EXPECT_TRUE(throws_with([&] { (void)CompiledExpression::compile(deep, kAbc); }, "nests deeper"));
  const std::string minus_chain = std::string(100000, '-') + "a";
  EXPECT_TRUE(
      throws_with([&] { (void)CompiledExpression::compile(minus_chain, kAbc); }, "nests deeper"));
  // Moderate nesting is fine.
  const std::string ok = std::string(60, '(') + "a" + std::string(60, ')');
  EXPECT_EQ(eval(ok, {4.0, 0, 0}), 4.0);
}

TEST(ExpressionErrors, LongFlatExpressionsCompileWithoutRecursion) {
  // A left-deep chain does not nest; it must not hit the nesting bound.
  std::string text = "a";
  for (int i = 0; i < 20000; ++i)
    text += " + a";
  EXPECT_EQ(eval(text, {1.0, 0, 0}), 20001.0);
}

TEST(ExpressionErrors, BadVariableListsRejected_OP_EXPR_3) {
  const std::vector<std::string> empty_name{"a", ""};
  EXPECT_TRUE(
      throws_with([&] { (void)CompiledExpression::compile("a", empty_name); }, "empty name"));
  const std::vector<std::string> duplicate{"a", "a"};
  EXPECT_TRUE(throws_with([&] { (void)CompiledExpression::compile("a", duplicate); },
                          "duplicate variable name 'a'"));
}

TEST(ExpressionErrors, EvaluatingWithTooFewVariablesFails) {
  const auto program = CompiledExpression::compile("a + b", kAbc);
  const std::vector<double> two{1.0, 2.0};
  EXPECT_THROW((void)program.evaluate(two), Error);
}

TEST(ExpressionProgram, ConstantSubexpressionsFold) {
  const auto folded = CompiledExpression::compile("2.0 * 3.0 + pow(2, 3) - -1", kAbc);
  EXPECT_EQ(folded.instruction_count(), 1u);
  EXPECT_EQ(folded.evaluate(std::vector<double>{0, 0, 0}), 15.0);
  // a * (2 + 3) -> load a, constant 5, multiply.
  EXPECT_EQ(CompiledExpression::compile("a * (2 + 3)", kAbc).instruction_count(), 3u);
  // Not folded across a variable: (a * 2) * 3 keeps both constants.
  EXPECT_EQ(CompiledExpression::compile("a * 2 * 3", kAbc).instruction_count(), 5u);
  EXPECT_EQ(CompiledExpression::compile("if(1, a, b)", kAbc).instruction_count(), 4u);
}

TEST(ExpressionProgram, SquareAndUnitPowersAreExact) {
  // x ** 2 is the correctly rounded product x * x (numpy's a ** 2), whichever
  // spelling the SDK or a user picks, for literal and variable bases alike.
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> dist(-1e5, 1e5);
  for (int n = 0; n < 2000; ++n) {
    const double x = dist(rng);
    EXPECT_EQ(eval("pow(a, 2.0)", {x, 0, 0}), x * x);
    EXPECT_EQ(eval_array("a ** 2", {x, 0, 0}), x * x);
    EXPECT_EQ(eval("a ^ 2", {x, 0, 0}), x * x);
    EXPECT_EQ(eval("pow(a, 1)", {x, 0, 0}), x);
  }
  EXPECT_EQ(eval("1.1 ** 2"), 1.1 * 1.1);
  EXPECT_TRUE(std::isnan(eval("pow(a, 1.0)", {kNaN, 0, 0})));
  EXPECT_EQ(eval("a ** 2", {-kInf, 0, 0}), kInf);
  EXPECT_EQ(CompiledExpression::compile("a ** 2", kAbc).instruction_count(), 2u);
  EXPECT_EQ(CompiledExpression::compile("pow(a, 1.0)", kAbc).instruction_count(), 1u);
  // Other exponents keep the general pow.
  EXPECT_EQ(eval("a ** 3", {1.1, 0, 0}), std::pow(1.1, 3.0));
  EXPECT_EQ(eval("a ** 0.5", {-0.0, 0, 0}), std::pow(-0.0, 0.5));
}

TEST(ExpressionProgram, ArrayEvaluationMatchesScalarAcrossBlockBoundaries) {
  const auto program = CompiledExpression::compile(
      "if(a > b, sqrt(abs(a)) * c, a ** 2 - b / (c + 1)) + (a < 0.5 or c >= 0)", kAbc);
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> dist(-3.0, 3.0);
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{255}, std::size_t{256},
                        std::size_t{257}, std::size_t{1000}}) {
    std::vector<double> a(n), b(n), c(n), out(n, -99.0);
    for (std::size_t i = 0; i < n; ++i) {
      a[i] = dist(rng);
      b[i] = dist(rng);
      c[i] = dist(rng);
    }
    if (n > 3) {
      a[1] = kNaN;
      b[2] = kInf;
      c[3] = -1.0;
    }
    const std::vector<const double*> vars{a.data(), b.data(), c.data()};
    program.evaluate(vars, out.data(), n);
    for (std::size_t i = 0; i < n; ++i) {
      const double ai = a[i], bi = b[i], ci = c[i];
      const double branch = ai > bi ? std::sqrt(std::fabs(ai)) * ci : ai * ai - bi / (ci + 1.0);
      const double expected = branch + ((ai < 0.5 || ci >= 0.0) ? 1.0 : 0.0);
      const double scalar = program.evaluate(std::vector<double>{ai, bi, ci});
      if (std::isnan(expected)) {
        EXPECT_TRUE(std::isnan(out[i])) << i;
        EXPECT_TRUE(std::isnan(scalar)) << i;
      } else {
        EXPECT_EQ(out[i], expected) << "n=" << n << " i=" << i;
        EXPECT_EQ(scalar, expected) << "n=" << n << " i=" << i;
      }
    }
  }
}

TEST(ExpressionProgram, InPlaceEvaluationOverwritesInput) {
  const auto program = CompiledExpression::compile("a * 2 + 1", kAbc);
  std::vector<double> a(700);
  for (std::size_t i = 0; i < a.size(); ++i)
    a[i] = static_cast<double>(i);
  const std::vector<const double*> vars{a.data(), nullptr, nullptr};
  program.evaluate(vars, a.data(), a.size());
  for (std::size_t i = 0; i < a.size(); ++i)
    EXPECT_EQ(a[i], 2.0 * static_cast<double>(i) + 1.0);
}

TEST(ExpressionProgram, SingleVariableAndConstantPrograms) {
  const std::vector<std::string> x{"x"};
  const auto identity = CompiledExpression::compile("x", x);
  const auto constant = CompiledExpression::compile("4.5", x);
  std::vector<double> in{1.0, -2.0, kNaN}, out(3);
  const std::vector<const double*> vars{in.data()};
  identity.evaluate(vars, out.data(), 3);
  EXPECT_EQ(out[0], 1.0);
  EXPECT_EQ(out[1], -2.0);
  EXPECT_TRUE(std::isnan(out[2]));
  constant.evaluate(vars, out.data(), 3);
  EXPECT_EQ(out, (std::vector<double>{4.5, 4.5, 4.5}));
}

TEST(ExpressionProgram, ConcurrentEvaluationOfOneProgram_OP_EXPR_3) {
  const auto program = compile_expression_cached("a * b - c / 3 + sin(a)", kAbc);
  constexpr std::size_t n = 5000;
  std::vector<double> a(n), b(n), c(n);
  for (std::size_t i = 0; i < n; ++i) {
    a[i] = 0.001 * static_cast<double>(i);
    b[i] = 2.0 - 0.0005 * static_cast<double>(i);
    c[i] = static_cast<double>(i % 17);
  }
  const std::vector<const double*> vars{a.data(), b.data(), c.data()};
  std::vector<std::vector<double>> results(4, std::vector<double>(n));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int repeat = 0; repeat < 20; ++repeat)
        program->evaluate(vars, results[t].data(), n);
    });
  }
  for (auto& th : threads)
    th.join();
  for (std::size_t i = 0; i < n; ++i) {
    const double expected = a[i] * b[i] - c[i] / 3.0 + std::sin(a[i]);
    for (int t = 0; t < 4; ++t)
      ASSERT_EQ(results[t][i], expected) << t << " " << i;
  }
}

TEST(ExpressionCache, SameKeySharesOneProgram_OP_EXPR_3) {
  const std::vector<std::string> ab{"a", "b"};
  const std::vector<std::string> ba{"b", "a"};
  const auto first = compile_expression_cached("a - b", ab);
  const auto again = compile_expression_cached("a - b", ab);
  const auto swapped = compile_expression_cached("a - b", ba);
  EXPECT_EQ(first.get(), again.get());
  EXPECT_NE(first.get(), swapped.get());
  // Variable order is part of the key: a binds to input 1 in the second list.
  EXPECT_EQ(first->evaluate(std::vector<double>{5.0, 2.0}), 3.0);
  EXPECT_EQ(swapped->evaluate(std::vector<double>{5.0, 2.0}), -3.0);
}

TEST(ExpressionCache, FailuresAreReportedEveryTime) {
  for (int i = 0; i < 2; ++i) {
    EXPECT_TRUE(throws_with([] { (void)compile_expression_cached("a +", kAbc); },
                            "field_expr parse failed"));
  }
}

TEST(ExpressionCache, ConcurrentCompilesAgree) {
  std::vector<std::shared_ptr<const CompiledExpression>> got(8);
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < got.size(); ++t) {
    threads.emplace_back([&, t] { got[t] = compile_expression_cached("c * c + 0.25", kAbc); });
  }
  for (auto& th : threads)
    th.join();
  for (const auto& p : got)
    EXPECT_EQ(p->evaluate(std::vector<double>{0, 0, 2.0}), 4.25);
}

}  // namespace
}  // namespace kangaroo
