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

}  // namespace kangaroo::gateway
