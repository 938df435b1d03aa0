// Private: face-neighbor discovery (NBR-2..5) for the executor.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <span>
#include <utility>
#include <vector>

#include "kangaroo/core/kernel.h"
#include "kangaroo/core/plan.h"

namespace kangaroo {

// One neighbor read of a task: which halo input, which face, which block.
struct NeighborSlot {
  std::int32_t halo_input = 0;
  std::int32_t face = 0;
  std::int32_t block = 0;
};

// NBR-4: is `o` adjacent to `s` across `face` (0..5 = Xm, Xp, Ym, Yp, Zm, Zp)?
bool blocks_adjacent(const IndexBox& s, const IndexBox& o, int face);

// Caches per-level face adjacency so a breadth-first walk costs only the
// blocks it reaches.
class NeighborIndex {
 public:
  // Blocks reached from `block` across `face` within `width` hops, excluding
  // the block itself, ascending (NBR-3, NBR-5).
  std::vector<std::int32_t> collect(std::int32_t step, std::int32_t level, const LevelMeta& meta, std::int32_t block,
                                    int face, std::int32_t width);

 private:
  using Adjacency = std::vector<std::array<std::vector<std::int32_t>, 6>>;
  const Adjacency& adjacency(std::int32_t step, std::int32_t level, const LevelMeta& meta);
  std::map<std::pair<std::int32_t, std::int32_t>, Adjacency> cache_;
};

// Builds one collection per (halo input, face) in halo-input-major, face
// order; disabled faces and width 0 give empty collections (NBR-3).
std::vector<NeighborCollection> assemble_neighbors(const std::vector<std::int32_t>& halo_inputs, const DepRule& deps,
                                                   const std::vector<NeighborSlot>& slots,
                                                   std::span<const ConstBufferPtr> chunks);

}  // namespace kangaroo
