// Confines client-supplied dataset URIs to the configured data roots.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace kangaroo::gateway {

class DataRoots {
 public:
  // Each root must exist and be a directory (std::runtime_error otherwise).
  explicit DataRoots(const std::vector<std::string>& roots);
  // Resolves `uri` (a path, relative to a root or absolute inside one, or
  // `amrex://<path>`) to a canonical path inside a root, symlinks resolved.
  // ApiError 400 for other schemes, `..` components or an escape from every
  // root; 404 when nothing exists at that path.
  std::filesystem::path resolve(const std::string& uri) const;
  std::vector<std::string> names() const;

 private:
  std::vector<std::filesystem::path> roots_;  // canonical
  std::vector<std::string> given_;            // as configured (absolute)
};

}  // namespace kangaroo::gateway
