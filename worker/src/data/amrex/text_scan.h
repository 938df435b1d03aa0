// Small scanning helpers shared by the plotfile parsers. A TextCursor walks
// an in-memory text and reports failures as "<origin>:<line>: <message>" (or
// "<origin> at offset <n>: ..." for binary files), so every parse error names
// where it happened.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "kangaroo/core/error.h"
#include "kangaroo/core/runmeta.h"

namespace kangaroo::amrex {

inline bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'; }

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// Whitespace-separated tokens of one line.
inline std::vector<std::string_view> split_tokens(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && is_space(line[i])) ++i;
    const std::size_t start = i;
    while (i < line.size() && !is_space(line[i])) ++i;
    if (i > start) out.push_back(line.substr(start, i - start));
  }
  return out;
}

inline bool parse_int_token(std::string_view s, std::int64_t& out) {
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s.empty()) return false;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

// Finite reals only: geometry with inf/nan is not a usable plotfile.
inline bool parse_real_token(std::string_view s, double& out) {
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s.empty()) return false;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out, std::chars_format::general);
  return ec == std::errc() && ptr == s.data() + s.size() && std::isfinite(out);
}

inline std::string quoted(std::string_view s) {
  constexpr std::size_t kShown = 60;  // keep hostile tokens from flooding messages
  std::string out = "'";
  for (char c : s.substr(0, kShown)) out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
  if (s.size() > kShown) out += "...";
  return out + "'";
}

class TextCursor {
 public:
  enum class Where { line, offset };

  // `first_line` numbers the first line of `text` (for sub-ranges of a file);
  // with Where::offset, `base` is the file offset of text[0].
  TextCursor(std::string_view text, const std::string& origin, Where where = Where::line, std::uint64_t base = 1)
      : text_(text), origin_(origin), where_(where), base_(base) {}

  std::size_t pos() const { return pos_; }
  std::string_view rest() const { return text_.substr(pos_); }
  std::size_t remaining() const { return text_.size() - pos_; }

  void skip_space() {
    while (pos_ < text_.size() && is_space(text_[pos_])) ++pos_;
  }
  // Spaces and tabs only (stays on the current line).
  void skip_blanks() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t')) ++pos_;
  }
  bool at_end() {
    skip_space();
    return pos_ >= text_.size();
  }
  char peek() {
    skip_space();
    return pos_ < text_.size() ? text_[pos_] : '\0';
  }
  bool consume(char c) {
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c, std::string_view what) {
    if (!consume(c)) {
      fail_here("expected '" + std::string(1, c) + "' " + std::string(what) + ", found " + describe_next());
    }
  }

  // Optional sign then decimal digits; stops at the first other character.
  std::int64_t read_int(std::string_view what, std::int64_t lo, std::int64_t hi) {
    skip_space();
    const std::size_t start = pos_;
    bool negative = false;
    if (pos_ < text_.size() && (text_[pos_] == '-' || text_[pos_] == '+')) {
      negative = text_[pos_] == '-';
      ++pos_;
    }
    const std::size_t digits = pos_;
    std::uint64_t value = 0;
    bool overflow = false;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
      const auto d = static_cast<std::uint64_t>(text_[pos_] - '0');
      if (value > (std::numeric_limits<std::uint64_t>::max() - d) / 10) overflow = true;
      else value = value * 10 + d;
      ++pos_;
    }
    if (pos_ == digits) {
      pos_ = start;
      fail_here("expected an integer " + std::string(what) + ", found " + describe_next());
    }
    constexpr auto kMax = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    if (overflow || value > kMax) {
      const std::string_view token = text_.substr(start, pos_ - start);
      pos_ = start;
      fail_here(std::string(what) + " " + quoted(token) + " is out of range");
    }
    const std::int64_t v = negative ? -static_cast<std::int64_t>(value) : static_cast<std::int64_t>(value);
    if (v < lo || v > hi) {
      pos_ = start;
      fail_here(std::string(what) + " " + std::to_string(v) + " is outside [" + std::to_string(lo) + ", " +
                std::to_string(hi) + "]");
    }
    return v;
  }

  // The next whitespace-delimited token (may be empty at end of text).
  std::string_view read_token() {
    skip_space();
    const std::size_t start = pos_;
    while (pos_ < text_.size() && !is_space(text_[pos_])) ++pos_;
    return text_.substr(start, pos_ - start);
  }

  // Rest of the current line (without the line end); moves past the line end.
  std::string_view read_line() {
    const std::size_t start = pos_;
    while (pos_ < text_.size() && text_[pos_] != '\n') ++pos_;
    std::string_view line = text_.substr(start, pos_ - start);
    if (pos_ < text_.size()) ++pos_;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    return line;
  }

  // "(a,b,c)" with 1..3 components; returns the count.
  int read_intvect(std::array<std::int64_t, 3>& v, std::string_view what) {
    expect('(', what);
    int n = 0;
    do {
      if (n == 3) fail_here(std::string(what) + " has more than 3 components");
      v[static_cast<std::size_t>(n)] = read_int(what, std::numeric_limits<std::int32_t>::min(),
                                                std::numeric_limits<std::int32_t>::max());
      ++n;
    } while (consume(','));
    expect(')', what);
    for (int a = n; a < 3; ++a) v[static_cast<std::size_t>(a)] = 0;
    return n;
  }

  // "((lo) (hi) (type))" -> 3D box. `dims` is the expected component count
  // (0: take it from the first vector and return it through `dims`). A
  // non-zero index type fails (BACK-AMREX-2).
  IndexBox read_box(int& dims, std::string_view what) {
    const std::size_t start = pos_;
    expect('(', what);
    std::array<std::int64_t, 3> lo{}, hi{}, type{};
    const int nlo = read_intvect(lo, what);
    const int nhi = read_intvect(hi, what);
    int ntype = nlo;
    const bool has_type = peek() == '(';
    if (has_type) ntype = read_intvect(type, what);
    expect(')', what);
    if (dims == 0) dims = nlo;
    if (nlo != dims || nhi != dims || ntype != dims) {
      pos_ = start;
      fail_here(std::string(what) + " has " + std::to_string(nlo) + "/" + std::to_string(nhi) + "/" +
                std::to_string(ntype) + " components, expected " + std::to_string(dims));
    }
    if (has_type && (type[0] != 0 || type[1] != 0 || type[2] != 0)) {
      pos_ = start;
      fail_here("non-cell-centered plotfile data is not supported (" + std::string(what) + " index type is not 0)",
                ErrorKind::unsupported);
    }
    IndexBox b;
    for (std::size_t a = 0; a < 3; ++a) {
      b.lo[a] = static_cast<std::int32_t>(lo[a]);
      b.hi[a] = static_cast<std::int32_t>(hi[a]);
    }
    if (b.empty()) {
      pos_ = start;
      fail_here(std::string(what) + " " + b.to_string() + " is empty");
    }
    return b;
  }

  std::string location() const {
    if (where_ == Where::offset) return origin_ + " at offset " + std::to_string(base_ + pos_);
    const auto newlines = std::count(text_.begin(), text_.begin() + static_cast<std::ptrdiff_t>(pos_), '\n');
    return origin_ + ":" + std::to_string(base_ + static_cast<std::uint64_t>(newlines));
  }

  [[noreturn]] void fail_here(const std::string& message, ErrorKind kind = ErrorKind::io) const {
    fail(kind, location() + ": " + message);
  }

  std::string describe_next() const {
    std::size_t p = pos_;
    while (p < text_.size() && is_space(text_[p])) ++p;
    if (p >= text_.size()) return "end of file";
    std::size_t e = p;
    while (e < text_.size() && !is_space(text_[e]) && e - p < 24) ++e;
    return quoted(text_.substr(p, e - p));
  }

 private:
  std::string_view text_;
  const std::string& origin_;
  Where where_;
  std::uint64_t base_;
  std::size_t pos_ = 0;
};

// Splits text into lines (LF or CRLF); a final line without LF counts.
inline std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    start = end + 1;
  }
  return lines;
}

}  // namespace kangaroo::amrex
