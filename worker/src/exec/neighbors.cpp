#include "neighbors.h"

#include <algorithm>

namespace kangaroo {

namespace {
bool overlap(const IndexBox& a, const IndexBox& b, int axis) {
  return a.lo[axis] <= b.hi[axis] && b.lo[axis] <= a.hi[axis];
}
}  // namespace

bool blocks_adjacent(const IndexBox& s, const IndexBox& o, int face) {
  const int axis = face / 2;
  const bool minus = face % 2 == 0;
  const bool touching = minus ? std::int64_t{o.hi[axis]} + 1 == s.lo[axis] : o.lo[axis] == std::int64_t{s.hi[axis]} + 1;
  if (!touching) return false;
  for (int a = 0; a < 3; ++a) {
    if (a != axis && !overlap(s, o, a)) return false;
  }
  return true;
}

const NeighborIndex::Adjacency& NeighborIndex::adjacency(std::int32_t step, std::int32_t level, const LevelMeta& meta) {
  auto key = std::make_pair(step, level);
  auto it = cache_.find(key);
  if (it != cache_.end()) return it->second;
  Adjacency adj(meta.boxes.size());
  for (std::size_t s = 0; s < meta.boxes.size(); ++s) {
    for (std::size_t o = 0; o < meta.boxes.size(); ++o) {
      if (o == s) continue;
      for (int f = 0; f < 6; ++f) {
        if (blocks_adjacent(meta.boxes[s], meta.boxes[o], f)) adj[s][static_cast<std::size_t>(f)].push_back(static_cast<std::int32_t>(o));
      }
    }
  }
  return cache_.emplace(key, std::move(adj)).first->second;
}

std::vector<std::int32_t> NeighborIndex::collect(std::int32_t step, std::int32_t level, const LevelMeta& meta,
                                                 std::int32_t block, int face, std::int32_t width) {
  std::vector<std::int32_t> found;
  if (width <= 0 || block < 0 || static_cast<std::size_t>(block) >= meta.boxes.size()) return found;
  const Adjacency& adj = adjacency(step, level, meta);
  std::vector<std::int32_t> frontier = {block};
  std::vector<char> seen(meta.boxes.size(), 0);
  seen[static_cast<std::size_t>(block)] = 1;
  for (std::int32_t hop = 0; hop < width && !frontier.empty(); ++hop) {
    std::vector<std::int32_t> next;
    for (auto b : frontier) {
      for (auto n : adj[static_cast<std::size_t>(b)][static_cast<std::size_t>(face)]) {
        if (seen[static_cast<std::size_t>(n)]) continue;
        seen[static_cast<std::size_t>(n)] = 1;
        next.push_back(n);
        found.push_back(n);
      }
    }
    frontier.swap(next);
  }
  std::sort(found.begin(), found.end());
  return found;
}

std::vector<NeighborCollection> assemble_neighbors(const std::vector<std::int32_t>& halo_inputs, const DepRule& deps,
                                                   const std::vector<NeighborSlot>& slots,
                                                   std::span<const ConstBufferPtr> chunks) {
  std::vector<NeighborCollection> out;
  if (deps.kind != DepKind::face_neighbors) return out;
  out.reserve(halo_inputs.size() * 6);
  for (auto h : halo_inputs) {
    for (int f = 0; f < 6; ++f) {
      NeighborCollection c;
      c.halo_input = h;
      c.face = f;
      for (std::size_t i = 0; i < slots.size(); ++i) {
        if (slots[i].halo_input == h && slots[i].face == f) {
          c.blocks.push_back(slots[i].block);
          c.chunks.push_back(chunks[i]);
        }
      }
      out.push_back(std::move(c));
    }
  }
  return out;
}

}  // namespace kangaroo
