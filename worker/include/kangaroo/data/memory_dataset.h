// In-memory dataset backend (BACK-MEM-1..4): a mutable, thread-safe map from
// full chunk identity to buffer.
#pragma once

#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

#include "kangaroo/core/dataset.h"

namespace kangaroo {

class MemoryDataset final : public Dataset {
 public:
  explicit MemoryDataset(std::string uri = "memory://") : uri_(std::move(uri)) {}

  std::string_view kind() const override { return "memory"; }
  const std::string& uri() const override { return uri_; }
  ConstBufferPtr get_chunk(const ChunkId& id) override;
  bool has_chunk(const ChunkId& id) const override;
  std::uint64_t estimate_chunk_bytes(const ChunkId& id) const override;
  std::optional<Descriptor> describe_chunk(const ChunkId& id) const override;
  std::string metadata_json(std::int32_t step) const override;
  void register_field(std::int32_t field_id, const std::string& name) override;
  void register_field_component(std::int32_t field_id, std::int32_t component) override;

  // Stores a validated buffer, replacing any previous value (BACK-MEM-2).
  void set_chunk(const ChunkId& id, ConstBufferPtr buffer) override;
  // Raw write (BACK-MEM-3): dtype tag plus shape (absent or [nbytes] for opaque).
  void set_chunk_raw(const ChunkId& id, std::string_view dtype, const std::optional<std::vector<std::uint64_t>>& shape,
                     std::span<const std::byte> bytes);

  // Loads every `s<step>_l<level>_f<field>_v<version>_b<block>.npy` (numeric)
  // or `.bin` (opaque) file of `directory`; returns how many chunks it read.
  std::size_t seed_from_directory(const std::string& directory);

  std::size_t size() const;

 private:
  std::string uri_;
  mutable std::mutex mutex_;
  std::unordered_map<ChunkId, ConstBufferPtr, ChunkIdHash> chunks_;
};

// Parses a chunk file stem such as "s0_l1_f1000_v0_b7".
std::optional<ChunkId> parse_chunk_name(std::string_view stem);

}  // namespace kangaroo
