#include "kangaroo/core/error.h"

namespace kangaroo {

std::string_view error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::invalid_plan: return "invalid_plan";
    case ErrorKind::invalid_argument: return "invalid_argument";
    case ErrorKind::not_found: return "not_found";
    case ErrorKind::kernel: return "kernel";
    case ErrorKind::buffer: return "buffer";
    case ErrorKind::io: return "io";
    case ErrorKind::unsupported: return "unsupported";
    case ErrorKind::internal: return "internal";
  }
  return "unknown";
}

void fail(ErrorKind kind, const std::string& message) { throw Error(kind, message); }

void fail_kernel_params(std::string_view kernel, std::string_view reason) {
  throw Error(ErrorKind::kernel,
              std::string(kernel) + ": invalid parameters: " + std::string(reason));
}

void fail_kernel(std::string_view message) { throw Error(ErrorKind::kernel, std::string(message)); }

}  // namespace kangaroo
