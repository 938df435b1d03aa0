// The gateway's one error type: every failure a client can cause becomes an
// ApiError carrying the HTTP status, a stable kind and an actionable message;
// the server maps it to the JSON error body of docs/api.md in one place.
#pragma once

#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace kangaroo::gateway {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string kind, const std::string& message, nlohmann::json issues = nullptr)
      : std::runtime_error(message), status_(status), kind_(std::move(kind)), issues_(std::move(issues)) {}
  int status() const { return status_; }
  const std::string& kind() const { return kind_; }
  const nlohmann::json& issues() const { return issues_; }

 private:
  int status_;
  std::string kind_;
  nlohmann::json issues_;
};

// JSON text for replies and records. Messages can carry bytes from clients or
// from a worker's stderr that are not UTF-8; they are replaced (U+FFFD) rather
// than making serialisation throw.
inline std::string dump_json(const nlohmann::json& j, int indent = -1) {
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace kangaroo::gateway
