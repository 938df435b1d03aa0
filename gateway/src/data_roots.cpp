#include "data_roots.h"

#include <stdexcept>
#include <optional>
#include <system_error>

#include "api_error.h"

namespace fs = std::filesystem;

namespace kangaroo::gateway {
namespace {

bool inside(const fs::path& root, const fs::path& p) {
  auto r = root.begin();
  auto q = p.begin();
  for (; r != root.end(); ++r, ++q) {
    if (q == p.end() || *r != *q) return false;
  }
  return true;
}

[[noreturn]] void outside(const std::string& uri) {
  throw ApiError(400, "bad_request",
                 "dataset '" + uri + "' is outside the gateway's data roots; address datasets by a path under a data "
                 "root (GET /v1/info lists them)");
}

}  // namespace

DataRoots::DataRoots(const std::vector<std::string>& roots) {
  for (const auto& r : roots) {
    std::error_code ec;
    fs::path c = fs::canonical(r, ec);
    if (ec || !fs::is_directory(c, ec)) throw std::runtime_error("data root '" + r + "' is not a readable directory");
    roots_.push_back(c);
    given_.push_back(fs::absolute(r).string());
  }
}

std::vector<std::string> DataRoots::names() const {
  std::vector<std::string> out;
  for (const auto& r : roots_) out.push_back(r.string());
  return out;
}

fs::path DataRoots::resolve(const std::string& uri) const {
  std::string path = uri;
  if (const auto sep = uri.find("://"); sep != std::string::npos) {
    const std::string scheme = uri.substr(0, sep);
    if (scheme != "amrex" && scheme != "file") {
      throw ApiError(400, "bad_request",
                     "dataset scheme '" + scheme + "://' is not served by this gateway; use a plotfile path or amrex://");
    }
    path = uri.substr(sep + 3);
  }
  if (path.empty()) throw ApiError(400, "bad_request", "empty dataset path");
  if (path.find('\0') != std::string::npos) throw ApiError(400, "bad_request", "dataset path contains a NUL byte");
  const fs::path p(path);
  for (const auto& part : p) {
    if (part == "..") throw ApiError(400, "bad_request", "dataset path '" + uri + "' contains '..'");
  }
  if (roots_.empty()) throw ApiError(400, "bad_request", "the gateway has no data roots configured");
  auto check = [&](const fs::path& candidate) -> std::optional<fs::path> {
    std::error_code ec;
    fs::path c = fs::canonical(candidate, ec);
    if (ec) return std::nullopt;
    for (const auto& r : roots_) {
      if (inside(r, c)) return c;
    }
    outside(uri);
  };
  if (p.is_absolute()) {
    if (auto c = check(p)) return *c;
    // Missing: say "not found" only inside a root, so probing does not reveal
    // what exists elsewhere.
    const fs::path lex = p.lexically_normal();
    bool under = false;
    for (const auto& r : given_) under = under || inside(fs::path(r).lexically_normal(), lex);
    for (const auto& r : roots_) under = under || inside(r, lex);
    if (!under) outside(uri);
  } else {
    for (const auto& r : roots_) {
      if (auto c = check(r / p)) return *c;
    }
  }
  throw ApiError(404, "not_found", "dataset '" + uri + "' does not exist under the data roots");
}

}  // namespace kangaroo::gateway
