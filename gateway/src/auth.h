// Bearer tokens: one `token tenant` pair per line of the tokens file.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace kangaroo::gateway {

class TokenTable {
 public:
  // Throws std::runtime_error naming the file and line on a malformed file, a
  // duplicate token or a file without tokens.
  static TokenTable load(const std::string& path);
  static TokenTable parse(std::string_view text, const std::string& origin);
  // Tenant of an `Authorization` header value ("Bearer <token>"), if any.
  std::optional<std::string> tenant_for(std::string_view authorization) const;
  std::size_t size() const { return tenants_.size(); }

 private:
  std::unordered_map<std::string, std::string> tenants_;
};

}  // namespace kangaroo::gateway
