// Asynchronous chunk access by identity (DS-1..4, SUBBOX-1..4).
//
// This is the seam the multi-rank runtime extends: a get or put names a chunk
// identity, and the service routes it to the chunk's home rank (OWN-1). The
// local implementation serves one rank from a ChunkStore and a Dataset.
#pragma once

#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>

#include "kangaroo/core/buffer.h"
#include "kangaroo/core/chunk_id.h"
#include "kangaroo/core/dataset.h"
#include "kangaroo/core/runmeta.h"
#include "kangaroo/exec/chunk_store.h"

namespace kangaroo {

struct SubboxResult {
  IndexBox box;            // intersection, or request.lo with hi = lo - 1 when empty (SUBBOX-3)
  ConstBufferPtr payload;  // C-order rank-3 copy; empty payload = no data
};

// SUBBOX-2..4 on an available source chunk.
SubboxResult cut_subbox(const Buffer& source, const IndexBox& chunk_box, const IndexBox& request_box);

class DataService {
 public:
  // Exactly one of value / error is set.
  using GetCallback = std::function<void(ConstBufferPtr value, std::exception_ptr error)>;
  using SubboxCallback = std::function<void(SubboxResult result, std::exception_ptr error)>;

  virtual ~DataService() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  int home(const ChunkId& id) const { return home_rank(id, world_size()); }

  // Completes immediately when published; otherwise when the value is put
  // (DS-2). Every waiter of one identity receives the same buffer.
  virtual void get(const ChunkId& id, GetCallback done) = 0;
  // Replaces any earlier value (DS-3).
  virtual void put(const ChunkId& id, ConstBufferPtr value) = 0;
  // 0 = unknown.
  virtual std::uint64_t estimate_bytes(const ChunkId& id) const = 0;
  virtual std::optional<std::uint64_t> particle_records(const std::string& species, std::int64_t chunk) const = 0;

  // SUBBOX-1: waits for the source like any read, then cuts the subbox.
  void get_subbox(const ChunkId& source, const IndexBox& chunk_box, const IndexBox& request_box,
                  SubboxCallback done);
};

// One-rank data service over a chunk store and an optional dataset backend.
class LocalDataService final : public DataService {
 public:
  explicit LocalDataService(std::shared_ptr<Dataset> dataset) : dataset_(std::move(dataset)) {}

  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  void get(const ChunkId& id, GetCallback done) override;
  void put(const ChunkId& id, ConstBufferPtr value) override;
  std::uint64_t estimate_bytes(const ChunkId& id) const override;
  std::optional<std::uint64_t> particle_records(const std::string& species, std::int64_t chunk) const override;

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<Dataset> dataset_;
  ChunkStore store_;
  std::unordered_map<ChunkId, std::vector<GetCallback>, ChunkIdHash> pending_;
};

}  // namespace kangaroo
