// Per-rank chunk store: identity -> published buffer, with waiters for
// chunks that a running plan will produce (DS-2, EXEC-6..8) and byte
// accounting for memory admission. Not internally locked: the executor owns
// the one lock that guards its scheduling state and this store together, so
// a task's publish-and-wake is a single critical section.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "kangaroo/core/buffer.h"
#include "kangaroo/core/chunk_id.h"

namespace kangaroo {

struct ChunkWaiter {
  void* task = nullptr;
  std::uint32_t slot = 0;  // which read of the task this chunk satisfies
};

class ChunkStore {
 public:
  ConstBufferPtr find(const ChunkId& id) const {
    auto it = entries_.find(id);
    return it == entries_.end() ? nullptr : it->second.value;
  }
  bool contains(const ChunkId& id) const {
    auto it = entries_.find(id);
    return it != entries_.end() && it->second.value != nullptr;
  }
  // Registers a waiter for a chunk not yet published.
  void wait(const ChunkId& id, ChunkWaiter waiter) { entries_[id].waiters.push_back(waiter); }
  // Publishes (replacing any earlier value, CHUNK-3) and hands back the
  // waiters to resume.
  std::vector<ChunkWaiter> put(const ChunkId& id, ConstBufferPtr value);
  // Forgets every registered waiter (end of a run).
  void clear_waiters();
  // Drops a value (intermediate released after its last consumer).
  void erase(const ChunkId& id);

  std::uint64_t bytes_in_use() const { return bytes_; }
  std::uint64_t peak_bytes() const { return peak_bytes_; }
  std::size_t size() const { return entries_.size(); }
  std::size_t waiting_chunks() const;

  template <class Fn>
  void for_each(Fn&& fn) const {
    for (const auto& [id, e] : entries_) {
      if (e.value) fn(id, e.value);
    }
  }

 private:
  struct Entry {
    ConstBufferPtr value;
    std::vector<ChunkWaiter> waiters;
  };
  std::unordered_map<ChunkId, Entry, ChunkIdHash> entries_;
  std::uint64_t bytes_ = 0;
  std::uint64_t peak_bytes_ = 0;
};

}  // namespace kangaroo
