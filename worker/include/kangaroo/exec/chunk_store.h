// Per-rank chunk store: identity -> published buffer, with waiters for
// chunks that a running plan will produce (DS-2, EXEC-6..8) and byte
// accounting for memory admission. Not internally locked: the executor owns
// the one lock that guards its scheduling state and this store together, so
// a task's publish-and-wake is a single critical section.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "kangaroo/core/buffer.h"
#include "kangaroo/core/chunk_id.h"
#include "kangaroo/exec/spill.h"

namespace kangaroo {

struct ChunkWaiter {
  void* task = nullptr;
  std::uint32_t slot = 0;  // which read of the task this chunk satisfies
};

// What eviction may do with a resident chunk (seed §5.4).
struct EvictionCandidate {
  ChunkId id;
  std::uint64_t bytes = 0;
  std::uint64_t last_use = 0;
  bool clean = false;  // dropping it loses nothing (the dataset or a spill file has it)
};

class ChunkStore {
 public:
  // A resident value (counts as a use for LRU), or nullptr.
  ConstBufferPtr find(const ChunkId& id) const {
    auto it = entries_.find(id);
    if (it == entries_.end()) return nullptr;
    it->second.last_use = ++tick_;
    return it->second.value;
  }
  bool contains(const ChunkId& id) const {
    auto it = entries_.find(id);
    return it != entries_.end() && it->second.value != nullptr;
  }
  // Resident or spilled.
  bool holds(const ChunkId& id) const {
    auto it = entries_.find(id);
    return it != entries_.end() && (it->second.value != nullptr || it->second.spill.has_value());
  }
  // Registers a waiter for a chunk not yet published.
  void wait(const ChunkId& id, ChunkWaiter waiter) { entries_[id].waiters.push_back(waiter); }
  // Publishes (replacing any earlier value, CHUNK-3, and dropping its spill
  // file) and hands back the waiters to resume.
  std::vector<ChunkWaiter> put(const ChunkId& id, ConstBufferPtr value);
  // Keeps a copy read from the dataset (`from_dataset`) or from this store's
  // spill file for later readers; either can be dropped again without a write.
  void cache(const ChunkId& id, ConstBufferPtr value, bool from_dataset);

  // Spill support: the area is shared with the session so spilled results
  // stay retrievable after a run.
  void set_spill_area(std::shared_ptr<SpillArea> area) { spill_ = std::move(area); }
  SpillArea* spill_area() const { return spill_.get(); }
  const std::shared_ptr<SpillArea>& spill_area_shared() const { return spill_; }
  std::optional<SpillRecord> spilled(const ChunkId& id) const;
  // Resident chunks nobody else holds (use count 1) and no task waits on.
  std::vector<EvictionCandidate> eviction_candidates() const;
  // Frees a resident value: a clean one is dropped, any other is written to
  // the spill area first (throws Error(io) when that fails; the value then
  // stays). Returns the bytes freed.
  std::uint64_t evict(const ChunkId& id);
  // The value, reading it back from the spill area when it is not resident.
  ConstBufferPtr load(const ChunkId& id) const;
  // Forgets every registered waiter (end of a run).
  void clear_waiters();
  // Drops a value (intermediate released after its last consumer).
  void erase(const ChunkId& id);

  std::uint64_t bytes_in_use() const { return bytes_; }
  std::uint64_t peak_bytes() const { return peak_bytes_; }
  std::size_t size() const { return entries_.size(); }
  std::size_t waiting_chunks() const;

  // Resident values only.
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
    mutable std::uint64_t last_use = 0;
    bool from_dataset = false;
    std::optional<SpillRecord> spill;
  };
  void drop_spill(Entry& e);
  // Stores a value (byte accounting, LRU tick); the spill record is left alone.
  Entry& assign(const ChunkId& id, ConstBufferPtr value, bool from_dataset);

  std::unordered_map<ChunkId, Entry, ChunkIdHash> entries_;
  std::uint64_t bytes_ = 0;
  std::uint64_t peak_bytes_ = 0;
  mutable std::uint64_t tick_ = 0;
  std::shared_ptr<SpillArea> spill_;
};

}  // namespace kangaroo
