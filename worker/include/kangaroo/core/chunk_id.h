// Chunk identity (CHUNK-1) and deterministic ownership (OWN-1, OWN-2).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace kangaroo {

struct ChunkId {
  std::int32_t step = 0;
  std::int16_t level = 0;
  std::int32_t field = 0;
  std::int32_t version = 0;
  std::int32_t block = 0;

  bool operator==(const ChunkId&) const = default;
  // "s<step>_l<level>_f<field>_v<version>_b<block>": file names, messages.
  std::string to_string() const;
};

struct ChunkIdHash {
  std::size_t operator()(const ChunkId& id) const noexcept {
    std::uint64_t h = 0x9e3779b97f4a7c15ULL;
    auto mix = [&h](std::uint64_t v) {
      h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    };
    mix(static_cast<std::uint32_t>(id.step));
    mix(static_cast<std::uint16_t>(id.level));
    mix(static_cast<std::uint32_t>(id.field));
    mix(static_cast<std::uint32_t>(id.version));
    mix(static_cast<std::uint32_t>(id.block));
    return static_cast<std::size_t>(h);
  }
};

// Reference home-rank function (OWN-2): shared with the SDK's lowering.
int home_rank(std::int64_t step, std::int64_t level, std::int64_t block, int world_size);

inline int home_rank(const ChunkId& id, int world_size) {
  return home_rank(id.step, id.level, id.block, world_size);
}

}  // namespace kangaroo
