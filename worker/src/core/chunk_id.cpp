#include "kangaroo/core/chunk_id.h"

namespace kangaroo {

std::string ChunkId::to_string() const {
  return "s" + std::to_string(step) + "_l" + std::to_string(level) + "_f" + std::to_string(field) +
         "_v" + std::to_string(version) + "_b" + std::to_string(block);
}

int home_rank(std::int64_t step, std::int64_t level, std::int64_t block, int world_size) {
  if (world_size <= 1) return 0;
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (std::int64_t v : {step, level, block}) {
    h ^= static_cast<std::uint64_t>(v) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  }
  return static_cast<int>(h % static_cast<std::uint64_t>(world_size));
}

}  // namespace kangaroo
