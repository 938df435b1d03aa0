// Error model of the runtime: expected failures are exceptions of one small
// typed hierarchy, converted once at each process boundary (CLI exit code,
// HTTP status). Assertions are reserved for programmer errors.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace kangaroo {

enum class ErrorKind {
  invalid_plan,      // decode/prepare-time validation of a plan or RunMeta
  invalid_argument,  // bad caller input outside a plan (CLI flags, URIs)
  not_found,         // missing chunk, file, kernel or dataset entry
  kernel,            // a kernel rejected its inputs or parameters
  buffer,            // descriptor/storage contract violation (BUF-*)
  io,                // filesystem or stream failure
  unsupported,       // feature not built or not implemented in this build
  internal,          // invariant broken inside the runtime
};

std::string_view error_kind_name(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message)
      : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

[[noreturn]] void fail(ErrorKind kind, const std::string& message);

// `<kernel>: invalid parameters: <reason>` (OP-GEN-3).
[[noreturn]] void fail_kernel_params(std::string_view kernel, std::string_view reason);

// Kernel failure with a free-form message (ERR-18).
[[noreturn]] void fail_kernel(std::string_view message);

}  // namespace kangaroo
