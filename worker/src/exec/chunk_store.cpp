#include "kangaroo/exec/chunk_store.h"

#include <algorithm>

namespace kangaroo {

std::vector<ChunkWaiter> ChunkStore::put(const ChunkId& id, ConstBufferPtr value) {
  Entry& e = entries_[id];
  if (e.value) bytes_ -= e.value->allocated_bytes();
  bytes_ += value ? value->allocated_bytes() : 0;
  peak_bytes_ = std::max(peak_bytes_, bytes_);
  e.value = std::move(value);
  std::vector<ChunkWaiter> woken;
  woken.swap(e.waiters);
  return woken;
}

void ChunkStore::erase(const ChunkId& id) {
  auto it = entries_.find(id);
  if (it == entries_.end() || !it->second.waiters.empty()) return;
  if (it->second.value) bytes_ -= it->second.value->allocated_bytes();
  entries_.erase(it);
}

void ChunkStore::clear_waiters() {
  for (auto it = entries_.begin(); it != entries_.end();) {
    it->second.waiters.clear();
    if (!it->second.value) it = entries_.erase(it);
    else ++it;
  }
}

std::size_t ChunkStore::waiting_chunks() const {
  return static_cast<std::size_t>(std::count_if(entries_.begin(), entries_.end(),
                                                [](const auto& kv) { return !kv.second.waiters.empty(); }));
}

}  // namespace kangaroo
