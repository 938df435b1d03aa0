#include "auth.h"

#include <fstream>
#include <sstream>
#include <stdexcept>

namespace kangaroo::gateway {
namespace {

bool token_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
         c == '.' || c == '~' || c == '+' || c == '/' || c == '=';
}

}  // namespace

TokenTable TokenTable::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read tokens file '" + path + "'");
  std::ostringstream text;
  text << in.rdbuf();
  return parse(text.str(), path);
}

TokenTable TokenTable::parse(std::string_view text, const std::string& origin) {
  TokenTable t;
  std::istringstream in{std::string(text)};
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (const auto hash = line.find('#'); hash != std::string::npos) line.erase(hash);
    std::istringstream fields(line);
    std::string token, tenant, extra;
    if (!(fields >> token)) continue;
    const std::string where = origin + ":" + std::to_string(lineno);
    if (!(fields >> tenant) || (fields >> extra)) {
      throw std::runtime_error(where + ": expected 'token tenant'");
    }
    if (token.size() < 16) throw std::runtime_error(where + ": token shorter than 16 characters");
    for (char c : token) {
      if (!token_char(c)) throw std::runtime_error(where + ": token has a character outside [A-Za-z0-9-._~+/=]");
    }
    if (!t.tenants_.emplace(token, tenant).second) throw std::runtime_error(where + ": duplicate token");
  }
  if (t.tenants_.empty()) throw std::runtime_error(origin + ": no tokens");
  return t;
}

std::optional<std::string> TokenTable::tenant_for(std::string_view authorization) const {
  constexpr std::string_view kScheme = "Bearer ";
  if (authorization.size() <= kScheme.size()) return std::nullopt;
  for (std::size_t i = 0; i < kScheme.size(); ++i) {
    const char a = authorization[i], b = kScheme[i];
    if ((a | 0x20) != (b | 0x20)) return std::nullopt;
  }
  std::string_view token = authorization.substr(kScheme.size());
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
  const auto it = tenants_.find(std::string(token));
  if (it == tenants_.end()) return std::nullopt;
  return it->second;
}

}  // namespace kangaroo::gateway
