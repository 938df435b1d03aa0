#include "kangaroo/kernels/expression.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdio>
#include <map>
#include <mutex>
#include <system_error>
#include <utility>

#include "kangaroo/core/error.h"

namespace kangaroo {

namespace {

using math::ExprOp;

enum class TokenKind {
  number,
  identifier,
  plus,
  minus,
  star,
  slash,
  power,
  lparen,
  rparen,
  comma,
  lt,
  gt,
  le,
  ge,
  eq,
  ne,
  logical_and,
  logical_or,
  end,
};

struct Token {
  TokenKind kind = TokenKind::end;
  std::size_t pos = 0;
  std::string_view text;
  double number = 0.0;
};

struct FunctionSpec {
  std::string_view name;
  ExprOp op;
  int arity;
};

constexpr std::array kFunctions{
    FunctionSpec{"sqrt", ExprOp::sqrt, 1},
    FunctionSpec{"exp", ExprOp::exp, 1},
    FunctionSpec{"log", ExprOp::log, 1},
    FunctionSpec{"log10", ExprOp::log10, 1},
    FunctionSpec{"sin", ExprOp::sin, 1},
    FunctionSpec{"cos", ExprOp::cos, 1},
    FunctionSpec{"tan", ExprOp::tan, 1},
    FunctionSpec{"asin", ExprOp::asin, 1},
    FunctionSpec{"acos", ExprOp::acos, 1},
    FunctionSpec{"atan", ExprOp::atan, 1},
    FunctionSpec{"atan2", ExprOp::atan2, 2},
    FunctionSpec{"sinh", ExprOp::sinh, 1},
    FunctionSpec{"cosh", ExprOp::cosh, 1},
    FunctionSpec{"tanh", ExprOp::tanh, 1},
    FunctionSpec{"asinh", ExprOp::asinh, 1},
    FunctionSpec{"acosh", ExprOp::acosh, 1},
    FunctionSpec{"atanh", ExprOp::atanh, 1},
    FunctionSpec{"abs", ExprOp::abs, 1},
    FunctionSpec{"floor", ExprOp::floor, 1},
    FunctionSpec{"ceil", ExprOp::ceil, 1},
    FunctionSpec{"fmod", ExprOp::fmod, 2},
    FunctionSpec{"erf", ExprOp::erf, 1},
    FunctionSpec{"min", ExprOp::min, 2},
    FunctionSpec{"max", ExprOp::max, 2},
    FunctionSpec{"pow", ExprOp::pow, 2},
    FunctionSpec{"heaviside", ExprOp::heaviside, 2},
    FunctionSpec{"jn", ExprOp::jn, 2},
    FunctionSpec{"yn", ExprOp::yn, 2},
    FunctionSpec{"comp_ellint_1", ExprOp::comp_ellint_1, 1},
    FunctionSpec{"comp_ellint_2", ExprOp::comp_ellint_2, 1},
    FunctionSpec{"if", ExprOp::select, 3},
};

const FunctionSpec* find_function(std::string_view name) {
  for (const FunctionSpec& f : kFunctions) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

// Recursive descent nests about ten frames per parenthesis level; bounding the
// nesting keeps adversarial text from exhausting a worker thread's stack.
constexpr int kMaxNesting = 256;
// Error messages echo the expression; very long ones are cut.
constexpr std::size_t kMaxEchoedChars = 160;

bool is_ident_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_ident_char(char c) {
  return is_ident_start(c) || is_digit(c);
}
bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

bool names_non_finite(std::string_view name) {
  std::string lower(name);
  for (char& c : lower) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return lower == "inf" || lower == "infinity" || lower == "nan";
}

std::string describe(const Token& t) {
  switch (t.kind) {
    case TokenKind::end:
      return "end of expression";
    case TokenKind::number:
      return "number '" + std::string(t.text) + "'";
    case TokenKind::identifier:
      return "name '" + std::string(t.text) + "'";
    default:
      return "'" + std::string(t.text) + "'";
  }
}

// Decimal order of magnitude of a literal's leading significant digit, used to
// tell overflow from underflow when from_chars reports out-of-range.
long decimal_order(std::string_view literal) {
  long order = 0;
  bool seen_point = false;
  bool seen_digit = false;
  long digits_before_point = 0;
  long zeros_after_point = 0;
  std::size_t i = 0;
  for (; i < literal.size(); ++i) {
    const char c = literal[i];
    if (c == '.') {
      seen_point = true;
    } else if (is_digit(c)) {
      if (!seen_point) {
        if (seen_digit || c != '0') {
          seen_digit = true;
          ++digits_before_point;
        }
      } else if (!seen_digit) {
        if (c == '0') {
          ++zeros_after_point;
        } else {
          seen_digit = true;
        }
      }
    } else {
      break;
    }
  }
  order = digits_before_point > 0 ? digits_before_point - 1 : -(zeros_after_point + 1);
  if (i < literal.size() && (literal[i] == 'e' || literal[i] == 'E')) {
    long exponent = 0;
    const char* first = literal.data() + i + 1;
    if (first < literal.data() + literal.size() && *first == '+') ++first;
    const auto [ptr, ec] = std::from_chars(first, literal.data() + literal.size(), exponent);
    (void)ptr;
    if (ec == std::errc::result_out_of_range) {
      exponent = (*first == '-') ? -1000000 : 1000000;
    }
    order += exponent;
  }
  return order;
}

}  // namespace

class ExpressionParser {
 public:
  ExpressionParser(std::string_view text, std::span<const std::string> variables)
      : text_(text), variables_(variables) {}

  CompiledExpression run() {
    check_variables();
    tokenize();
    if (tokens_.size() == 1) fail_at(0, "empty expression");
    parse_expression();
    if (peek().kind != TokenKind::end) {
      fail_at(peek().pos, "unexpected " + describe(peek()));
    }
    program_.variable_count_ = variables_.size();
    program_.max_depth_ = measure_depth();
    return std::move(program_);
  }

 private:
  // RAII nesting counter for the recursive productions.
  class Nesting {
   public:
    Nesting(ExpressionParser& parser, std::size_t pos) : parser_(parser) {
      if (++parser_.depth_ > kMaxNesting) {
        parser_.fail_at(pos,
                        "expression nests deeper than " + std::to_string(kMaxNesting) + " levels");
      }
    }
    Nesting(const Nesting&) = delete;
    Nesting& operator=(const Nesting&) = delete;
    ~Nesting() { --parser_.depth_; }

   private:
    ExpressionParser& parser_;
  };

  [[noreturn]] void fail_at(std::size_t pos, const std::string& reason) const {
    std::string shown(text_.substr(0, kMaxEchoedChars));
    if (text_.size() > kMaxEchoedChars) shown += "...";
    fail(ErrorKind::kernel, "field_expr parse failed: " + reason + " at position " +
                                std::to_string(pos) + " in '" + shown + "'");
  }

  void check_variables() const {
    for (std::size_t i = 0; i < variables_.size(); ++i) {
      if (variables_[i].empty()) {
        fail(ErrorKind::kernel,
             "field_expr parse failed: variable " + std::to_string(i) + " has an empty name");
      }
      for (std::size_t j = 0; j < i; ++j) {
        // Two inputs under one name would make the binding ambiguous.
        if (variables_[j] == variables_[i]) {
          fail(ErrorKind::kernel,
               "field_expr parse failed: duplicate variable name '" + variables_[i] + "'");
        }
      }
    }
  }

  void push_token(TokenKind kind, std::size_t pos, std::size_t len) {
    tokens_.push_back(Token{kind, pos, text_.substr(pos, len), 0.0});
  }

  void tokenize() {
    std::size_t i = 0;
    const std::size_t n = text_.size();
    while (i < n) {
      const char c = text_[i];
      if (is_space(c)) {
        ++i;
        continue;
      }
      if (is_digit(c) || (c == '.' && i + 1 < n && is_digit(text_[i + 1]))) {
        i = lex_number(i);
        continue;
      }
      if (is_ident_start(c)) {
        std::size_t j = i;
        while (j < n && is_ident_char(text_[j]))
          ++j;
        const std::string_view word = text_.substr(i, j - i);
        TokenKind kind = TokenKind::identifier;
        if (word == "and") kind = TokenKind::logical_and;
        if (word == "or") kind = TokenKind::logical_or;
        push_token(kind, i, j - i);
        i = j;
        continue;
      }
      const char next = i + 1 < n ? text_[i + 1] : '\0';
      switch (c) {
        case '+':
          push_token(TokenKind::plus, i, 1);
          ++i;
          continue;
        case '-':
          push_token(TokenKind::minus, i, 1);
          ++i;
          continue;
        case '/':
          push_token(TokenKind::slash, i, 1);
          ++i;
          continue;
        case '^':
          push_token(TokenKind::power, i, 1);
          ++i;
          continue;
        case '(':
          push_token(TokenKind::lparen, i, 1);
          ++i;
          continue;
        case ')':
          push_token(TokenKind::rparen, i, 1);
          ++i;
          continue;
        case ',':
          push_token(TokenKind::comma, i, 1);
          ++i;
          continue;
        case '*':
          if (next == '*') {
            push_token(TokenKind::power, i, 2);
            i += 2;
          } else {
            push_token(TokenKind::star, i, 1);
            ++i;
          }
          continue;
        case '<':
          if (next == '=') {
            push_token(TokenKind::le, i, 2);
            i += 2;
          } else {
            push_token(TokenKind::lt, i, 1);
            ++i;
          }
          continue;
        case '>':
          if (next == '=') {
            push_token(TokenKind::ge, i, 2);
            i += 2;
          } else {
            push_token(TokenKind::gt, i, 1);
            ++i;
          }
          continue;
        case '=':
          if (next == '=') {
            push_token(TokenKind::eq, i, 2);
            i += 2;
            continue;
          }
          fail_at(i, "unexpected '=' (comparison is '==')");
        case '!':
          if (next == '=') {
            push_token(TokenKind::ne, i, 2);
            i += 2;
            continue;
          }
          fail_at(i, "unexpected '!' (use '!=' to compare)");
        case '&':
          if (next == '&') {
            push_token(TokenKind::logical_and, i, 2);
            i += 2;
            continue;
          }
          fail_at(i, "unexpected '&' (logical and is 'and' or '&&')");
        case '|':
          if (next == '|') {
            push_token(TokenKind::logical_or, i, 2);
            i += 2;
            continue;
          }
          fail_at(i, "unexpected '|' (logical or is 'or' or '||')");
        default:
          break;
      }
      const auto byte = static_cast<unsigned char>(c);
      if (byte >= 0x20 && byte < 0x7f) {
        fail_at(i, std::string("unexpected character '") + c + "'");
      }
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02x", static_cast<unsigned>(byte));
      fail_at(i, std::string("unexpected byte ") + hex);
    }
    push_token(TokenKind::end, n, 0);
  }

  // Decimal literals: digits with an optional fraction and exponent (the forms
  // Python's float repr produces). A literal running straight into a name, a
  // second point or another literal is rejected as a whole rather than split.
  std::size_t lex_number(std::size_t start) {
    const std::size_t n = text_.size();
    std::size_t i = start;
    while (i < n && is_digit(text_[i]))
      ++i;
    if (i < n && text_[i] == '.') {
      ++i;
      while (i < n && is_digit(text_[i]))
        ++i;
    }
    if (i < n && (text_[i] == 'e' || text_[i] == 'E')) {
      std::size_t j = i + 1;
      if (j < n && (text_[j] == '+' || text_[j] == '-')) ++j;
      if (j < n && is_digit(text_[j])) {
        while (j < n && is_digit(text_[j]))
          ++j;
        i = j;
      }
    }
    if (i < n && (is_ident_char(text_[i]) || text_[i] == '.')) {
      std::size_t j = i;
      while (j < n && (is_ident_char(text_[j]) || text_[j] == '.'))
        ++j;
      fail_at(start,
              "malformed numeric literal '" + std::string(text_.substr(start, j - start)) + "'");
    }
    const std::string_view literal = text_.substr(start, i - start);
    double value = 0.0;
    const auto [ptr, ec] = std::from_chars(literal.data(), literal.data() + literal.size(), value,
                                           std::chars_format::general);
    if (ec == std::errc::result_out_of_range) {
      if (decimal_order(literal) > 0) {
        fail_at(start, "non-finite literal '" + std::string(literal) + "' (overflows float64)");
      }
      value = 0.0;  // below the smallest subnormal: rounds to zero
    } else if (ec != std::errc() || ptr != literal.data() + literal.size()) {
      fail_at(start, "malformed numeric literal '" + std::string(literal) + "'");
    }
    tokens_.push_back(Token{TokenKind::number, start, literal, value});
    return i;
  }

  const Token& peek() const { return tokens_[cursor_]; }
  const Token& take() {
    const Token& t = tokens_[cursor_];
    if (t.kind != TokenKind::end) ++cursor_;
    return t;
  }
  bool accept(TokenKind kind) {
    if (peek().kind != kind) return false;
    take();
    return true;
  }
  void expect(TokenKind kind, std::string_view what) {
    if (!accept(kind)) {
      fail_at(peek().pos, "expected " + std::string(what) + " but found " + describe(peek()));
    }
  }

  void parse_expression() { parse_or(); }

  void parse_or() {
    parse_and();
    while (accept(TokenKind::logical_or)) {
      parse_and();
      emit_operation(ExprOp::logical_or);
    }
  }

  void parse_and() {
    parse_equality();
    while (accept(TokenKind::logical_and)) {
      parse_equality();
      emit_operation(ExprOp::logical_and);
    }
  }

  // Comparisons do not chain: `a < b < c` means different things in Python
  // (a conjunction) and C (compare a 0/1 result), so it is rejected.
  void parse_equality() {
    parse_relational();
    const Token& t = peek();
    if (t.kind != TokenKind::eq && t.kind != TokenKind::ne) return;
    take();
    parse_relational();
    emit_operation(t.kind == TokenKind::eq ? ExprOp::eq : ExprOp::ne);
    if (peek().kind == TokenKind::eq || peek().kind == TokenKind::ne) {
      fail_at(peek().pos, "chained comparison; combine comparisons with 'and'");
    }
  }

  static bool is_relational(TokenKind k) {
    return k == TokenKind::lt || k == TokenKind::gt || k == TokenKind::le || k == TokenKind::ge;
  }

  void parse_relational() {
    parse_additive();
    const Token& t = peek();
    if (!is_relational(t.kind)) return;
    take();
    parse_additive();
    switch (t.kind) {
      case TokenKind::lt:
        emit_operation(ExprOp::lt);
        break;
      case TokenKind::gt:
        emit_operation(ExprOp::gt);
        break;
      case TokenKind::le:
        emit_operation(ExprOp::le);
        break;
      default:
        emit_operation(ExprOp::ge);
        break;
    }
    if (is_relational(peek().kind)) {
      fail_at(peek().pos, "chained comparison; combine comparisons with 'and'");
    }
  }

  void parse_additive() {
    parse_term();
    for (;;) {
      if (accept(TokenKind::plus)) {
        parse_term();
        emit_operation(ExprOp::add);
      } else if (accept(TokenKind::minus)) {
        parse_term();
        emit_operation(ExprOp::sub);
      } else {
        return;
      }
    }
  }

  void parse_term() {
    parse_unary();
    for (;;) {
      if (accept(TokenKind::star)) {
        parse_unary();
        emit_operation(ExprOp::mul);
      } else if (accept(TokenKind::slash)) {
        parse_unary();
        emit_operation(ExprOp::div);
      } else {
        return;
      }
    }
  }

  // Unary signs bind looser than powers: -x**2 == -(x**2), as in Python and
  // the AMReX parser; the exponent may itself carry a sign (2**-1).
  void parse_unary() {
    const Nesting nesting(*this, peek().pos);
    if (accept(TokenKind::minus)) {
      parse_unary();
      emit_operation(ExprOp::neg);
    } else if (accept(TokenKind::plus)) {
      parse_unary();
    } else {
      parse_power();
    }
  }

  // Right-associative: a**b**c == a**(b**c).
  void parse_power() {
    parse_primary();
    if (accept(TokenKind::power)) {
      parse_unary();
      emit_operation(ExprOp::pow);
    }
  }

  void parse_primary() {
    const Token& t = take();
    switch (t.kind) {
      case TokenKind::number:
        emit_constant(t.number);
        return;
      case TokenKind::identifier:
        if (peek().kind == TokenKind::lparen) {
          parse_call(t);
        } else {
          emit_name(t);
        }
        return;
      case TokenKind::lparen: {
        const Nesting nesting(*this, t.pos);
        parse_expression();
        expect(TokenKind::rparen, "')'");
        return;
      }
      default:
        fail_at(t.pos, "expected a value but found " + describe(t));
    }
  }

  void emit_name(const Token& t) {
    for (std::size_t i = 0; i < variables_.size(); ++i) {
      if (variables_[i] == t.text) {
        emit_variable(static_cast<std::uint32_t>(i));
        return;
      }
    }
    if (names_non_finite(t.text)) {
      fail_at(t.pos, "non-finite literal '" + std::string(t.text) + "'");
    }
    if (find_function(t.text) != nullptr) {
      fail_at(t.pos, "function '" + std::string(t.text) + "' needs an argument list");
    }
    std::string known;
    for (const std::string& v : variables_) {
      known += known.empty() ? v : ", " + v;
    }
    fail_at(t.pos, "unknown variable '" + std::string(t.text) + "' (variables: " + known + ")");
  }

  void parse_call(const Token& name) {
    const FunctionSpec* fn = find_function(name.text);
    if (fn == nullptr) fail_at(name.pos, "unknown function '" + std::string(name.text) + "'");
    const Nesting nesting(*this, name.pos);
    expect(TokenKind::lparen, "'('");
    int args = 0;
    if (peek().kind != TokenKind::rparen) {
      do {
        parse_expression();
        ++args;
      } while (accept(TokenKind::comma));
    }
    expect(TokenKind::rparen, "')' or ','");
    if (args != fn->arity) {
      fail_at(name.pos, "function '" + std::string(fn->name) + "' takes " +
                            std::to_string(fn->arity) + " argument(s), got " +
                            std::to_string(args));
    }
    emit_operation(fn->op);
  }

  void emit_constant(double value) { program_.code_.push_back({ExprOp::constant, 0, value}); }

  void emit_variable(std::uint32_t index) {
    program_.code_.push_back({ExprOp::variable, index, 0.0});
  }

  // Folds an operation whose operands are all constants. In a postfix program
  // an operand's last instruction is its root, so when the last `arity`
  // instructions are constants they are exactly this operation's operands.
  void emit_operation(ExprOp op) {
    auto& code = program_.code_;
    // Constant exponents 1 and 2 (the SDK lowers a ** 2 to pow(a, 2.0)) need
    // no general pow: x ** 1 is x for every x, NaN included, and x ** 2 is the
    // exactly rounded square. Rewriting before folding keeps literal and
    // variable bases consistent.
    if (op == ExprOp::pow && code.back().op == ExprOp::constant &&
        (code.back().value == 1.0 || code.back().value == 2.0)) {
      const bool squared = code.back().value == 2.0;
      code.pop_back();
      if (!squared) return;
      op = ExprOp::square;
    }
    const auto arity = static_cast<std::size_t>(math::expr_arity(op));
    const bool foldable = code.size() >= arity &&
                          std::all_of(code.end() - static_cast<std::ptrdiff_t>(arity), code.end(),
                                      [](const CompiledExpression::Instruction& ins) {
                                        return ins.op == ExprOp::constant;
                                      });
    if (!foldable) {
      code.push_back({op, 0, 0.0});
      return;
    }
    const std::size_t base = code.size() - arity;
    double folded = 0.0;
    if (arity == 1) {
      folded = math::expr_apply_unary(op, code[base].value);
    } else if (arity == 2) {
      folded = math::expr_apply_binary(op, code[base].value, code[base + 1].value);
    } else {
      folded = math::expr_select(code[base].value, code[base + 1].value, code[base + 2].value);
    }
    code.resize(base);
    code.push_back({ExprOp::constant, 0, folded});
  }

  std::size_t measure_depth() const {
    std::size_t depth = 0;
    std::size_t deepest = 0;
    for (const auto& ins : program_.code_) {
      const auto arity = static_cast<std::size_t>(math::expr_arity(ins.op));
      if (arity == 0) {
        deepest = std::max(deepest, ++depth);
      } else {
        depth -= arity - 1;
      }
    }
    return deepest;
  }

  std::string_view text_;
  std::span<const std::string> variables_;
  std::vector<Token> tokens_;
  std::size_t cursor_ = 0;
  int depth_ = 0;
  CompiledExpression program_;
};

CompiledExpression CompiledExpression::compile(std::string_view text,
                                               std::span<const std::string> variables) {
  return ExpressionParser(text, variables).run();
}

void CompiledExpression::require_variables(std::size_t supplied) const {
  if (supplied < variable_count_) {
    fail(ErrorKind::internal, "field expression evaluated with " + std::to_string(supplied) +
                                  " variable(s) but compiled for " +
                                  std::to_string(variable_count_));
  }
}

double CompiledExpression::evaluate(std::span<const double> values) const {
  require_variables(values.size());
  std::vector<double> stack(max_depth_);
  std::size_t top = 0;
  for (const Instruction& ins : code_) {
    switch (math::expr_arity(ins.op)) {
      case 0:
        stack[top++] = ins.op == ExprOp::constant ? ins.value : values[ins.variable];
        break;
      case 1:
        stack[top - 1] = math::expr_apply_unary(ins.op, stack[top - 1]);
        break;
      case 2:
        --top;
        stack[top - 1] = math::expr_apply_binary(ins.op, stack[top - 1], stack[top]);
        break;
      default:
        top -= 2;
        stack[top - 1] = math::expr_select(stack[top - 1], stack[top], stack[top + 1]);
        break;
    }
  }
  return stack[0];
}

namespace {

template <ExprOp Op>
void run_unary(const double* a, double* out, std::size_t m) {
  for (std::size_t i = 0; i < m; ++i)
    out[i] = math::expr_unary<Op>(a[i]);
}

template <ExprOp Op>
void run_binary(const double* a, const double* b, double* out, std::size_t m) {
  for (std::size_t i = 0; i < m; ++i)
    out[i] = math::expr_binary<Op>(a[i], b[i]);
}

void run_select(const double* c, const double* a, const double* b, double* out, std::size_t m) {
  for (std::size_t i = 0; i < m; ++i)
    out[i] = math::expr_select(c[i], a[i], b[i]);
}

}  // namespace

void CompiledExpression::evaluate(std::span<const double* const> variables, double* out,
                                  std::size_t n) const {
  require_variables(variables.size());
  if (n == 0) return;
  // Slot d holds the block value at stack depth d when it is computed; loaded
  // variables are referenced in place instead of copied.
  std::vector<double> scratch(max_depth_ * kBlockSize);
  std::vector<const double*> stack(max_depth_);
  for (std::size_t start = 0; start < n; start += kBlockSize) {
    const std::size_t m = std::min(kBlockSize, n - start);
    std::size_t top = 0;
    auto slot = [&scratch](std::size_t depth) { return scratch.data() + depth * kBlockSize; };
    for (const Instruction& ins : code_) {
      switch (ins.op) {
        case ExprOp::constant: {
          double* s = slot(top);
          std::fill_n(s, m, ins.value);
          stack[top++] = s;
          break;
        }
        case ExprOp::variable:
          stack[top++] = variables[ins.variable] + start;
          break;
        case ExprOp::select: {
          top -= 2;
          double* s = slot(top - 1);
          run_select(stack[top - 1], stack[top], stack[top + 1], s, m);
          stack[top - 1] = s;
          break;
        }
#define KANGAROO_EXPR_UNARY_CASE(name)             \
  case ExprOp::name: {                             \
    double* s = slot(top - 1);                     \
    run_unary<ExprOp::name>(stack[top - 1], s, m); \
    stack[top - 1] = s;                            \
    break;                                         \
  }
          KANGAROO_EXPR_UNARY_OPS(KANGAROO_EXPR_UNARY_CASE)
#undef KANGAROO_EXPR_UNARY_CASE
#define KANGAROO_EXPR_BINARY_CASE(name)                         \
  case ExprOp::name: {                                          \
    --top;                                                      \
    double* s = slot(top - 1);                                  \
    run_binary<ExprOp::name>(stack[top - 1], stack[top], s, m); \
    stack[top - 1] = s;                                         \
    break;                                                      \
  }
          KANGAROO_EXPR_BINARY_OPS(KANGAROO_EXPR_BINARY_CASE)
#undef KANGAROO_EXPR_BINARY_CASE
      }
    }
    if (stack[0] != out + start) std::copy_n(stack[0], m, out + start);
  }
}

std::shared_ptr<const CompiledExpression> compile_expression_cached(
    std::string_view text, std::span<const std::string> variables) {
  // Plans reuse a handful of expressions across many blocks; a small bound
  // keeps a long-running worker that sees many distinct expressions from
  // growing without limit, and dropping everything at the bound is cheap
  // because recompiling is fast.
  constexpr std::size_t kCapacity = 256;
  using Key = std::pair<std::string, std::vector<std::string>>;
  static std::mutex mutex;
  static std::map<Key, std::shared_ptr<const CompiledExpression>> cache;

  Key key{std::string(text), std::vector<std::string>(variables.begin(), variables.end())};
  {
    const std::lock_guard<std::mutex> lock(mutex);
    const auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  // Compile outside the lock so one slow or failing compile never blocks other
  // tasks; a concurrent duplicate compile is harmless.
  auto compiled =
      std::make_shared<const CompiledExpression>(CompiledExpression::compile(text, variables));
  const std::lock_guard<std::mutex> lock(mutex);
  if (cache.size() >= kCapacity) cache.clear();
  const auto [it, inserted] = cache.emplace(std::move(key), std::move(compiled));
  (void)inserted;
  return it->second;
}

}  // namespace kangaroo
