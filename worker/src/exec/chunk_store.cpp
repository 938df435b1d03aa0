#include "kangaroo/exec/chunk_store.h"

#include <algorithm>

#include "kangaroo/core/error.h"

namespace kangaroo {

void ChunkStore::drop_spill(Entry& e) {
  if (e.spill && spill_) spill_->remove(*e.spill);
  e.spill.reset();
}

ChunkStore::Entry& ChunkStore::assign(const ChunkId& id, ConstBufferPtr value, bool from_dataset) {
  Entry& e = entries_[id];
  if (e.value) bytes_ -= e.value->allocated_bytes();
  bytes_ += value ? value->allocated_bytes() : 0;
  peak_bytes_ = std::max(peak_bytes_, bytes_);
  e.value = std::move(value);
  e.last_use = ++tick_;
  e.from_dataset = from_dataset;
  return e;
}

std::vector<ChunkWaiter> ChunkStore::put(const ChunkId& id, ConstBufferPtr value) {
  Entry& e = assign(id, std::move(value), false);
  drop_spill(e);
  std::vector<ChunkWaiter> woken;
  woken.swap(e.waiters);
  return woken;
}

void ChunkStore::cache(const ChunkId& id, ConstBufferPtr value, bool from_dataset) {
  assign(id, std::move(value), from_dataset);
}

void ChunkStore::erase(const ChunkId& id) {
  auto it = entries_.find(id);
  if (it == entries_.end() || !it->second.waiters.empty()) return;
  if (it->second.value) bytes_ -= it->second.value->allocated_bytes();
  drop_spill(it->second);
  entries_.erase(it);
}

std::optional<SpillRecord> ChunkStore::spilled(const ChunkId& id) const {
  auto it = entries_.find(id);
  if (it == entries_.end() || it->second.value) return std::nullopt;
  return it->second.spill;
}

std::vector<EvictionCandidate> ChunkStore::eviction_candidates() const {
  std::vector<EvictionCandidate> out;
  for (const auto& [id, e] : entries_) {
    if (!e.value || !e.waiters.empty() || e.value.use_count() != 1) continue;
    const bool clean = e.from_dataset || e.spill.has_value();
    if (!clean && !spill_) continue;  // nowhere to put it
    out.push_back({id, e.value->allocated_bytes(), e.last_use, clean});
  }
  return out;
}

std::uint64_t ChunkStore::evict(const ChunkId& id) {
  auto it = entries_.find(id);
  if (it == entries_.end() || !it->second.value) return 0;
  Entry& e = it->second;
  if (!e.from_dataset && !e.spill) {
    if (!spill_) fail(ErrorKind::internal, "chunk " + id.to_string() + " cannot be evicted without a spill area");
    e.spill = spill_->write(id, *e.value);
  }
  const std::uint64_t freed = e.value->allocated_bytes();
  bytes_ -= freed;
  if (e.from_dataset && !e.spill) {
    entries_.erase(it);  // the dataset serves it again
  } else {
    e.value.reset();
  }
  return freed;
}

ConstBufferPtr ChunkStore::load(const ChunkId& id) const {
  auto it = entries_.find(id);
  if (it == entries_.end()) return nullptr;
  if (it->second.value) return it->second.value;
  if (it->second.spill && spill_) return spill_->read(*it->second.spill);
  return nullptr;
}

void ChunkStore::clear_waiters() {
  for (auto it = entries_.begin(); it != entries_.end();) {
    it->second.waiters.clear();
    if (!it->second.value && !it->second.spill) it = entries_.erase(it);
    else ++it;
  }
}

std::size_t ChunkStore::waiting_chunks() const {
  return static_cast<std::size_t>(std::count_if(entries_.begin(), entries_.end(),
                                                [](const auto& kv) { return !kv.second.waiters.empty(); }));
}

}  // namespace kangaroo
