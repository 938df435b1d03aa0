// Spill area for memory-capped runs (seed §5.4): chunks evicted from memory
// are written to files in a local directory with a checksum and read back on
// demand. A failed write (a full disk, or the configured limit) leaves
// nothing behind and raises an error; the chunk stays in memory, so no data
// is lost or corrupted.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "kangaroo/core/buffer.h"
#include "kangaroo/core/chunk_id.h"

namespace kangaroo {

struct SpillRecord {
  std::uint64_t offset = 0;  // extent in the area's spill file
  Descriptor desc;
  std::uint64_t nbytes = 0;
  std::uint64_t checksum = 0;
  std::optional<NonzeroRect> nonzero;
};

struct SpillStats {
  std::uint64_t bytes_written = 0;
  std::uint64_t bytes_read = 0;
  std::uint64_t chunks_written = 0;
  std::uint64_t chunks_read = 0;
  std::uint64_t bytes_live = 0;  // on disk now
  std::uint64_t peak_bytes_live = 0;
};

// 64-bit checksum of a byte range (word-at-a-time multiply/rotate mix).
std::uint64_t spill_checksum(const std::byte* data, std::size_t n);

class SpillArea {
 public:
  // Creates a private subdirectory of `dir` (created if missing) holding one
  // spill file whose extents are reused as chunks come and go (creating a
  // file per chunk costs far more than writing it). `limit` caps the size of
  // that file (0: only the disk's own size).
  explicit SpillArea(const std::string& dir, std::uint64_t limit = 0);
  ~SpillArea();
  SpillArea(const SpillArea&) = delete;
  SpillArea& operator=(const SpillArea&) = delete;

  // Thread-safe. Throws Error(io) naming the directory and the chunk.
  SpillRecord write(const ChunkId& id, const Buffer& buffer);
  // Verifies size and checksum; throws Error(io) on a missing, short or
  // corrupt file.
  ConstBufferPtr read(const SpillRecord& record);
  void remove(const SpillRecord& record);

  SpillStats stats() const;
  const std::string& directory() const { return dir_; }
  const std::string& file() const { return path_; }

 private:
  // Best-fit extent of `n` bytes (reusing freed ones, else growing the
  // file); throws when the limit forbids growth.
  std::uint64_t allocate(std::uint64_t n, const ChunkId& id);
  void release(std::uint64_t offset, std::uint64_t n);
  [[noreturn]] void refuse(const ChunkId& id, std::uint64_t n, const std::string& why) const;

  std::string root_;  // the directory the user gave
  std::string dir_;   // this process's subdirectory
  std::string path_;  // the spill file
  int fd_ = -1;
  std::uint64_t limit_;
  std::mutex mu_;
  std::multimap<std::uint64_t, std::uint64_t> free_;  // size -> offset
  std::uint64_t end_ = 0;                             // file high-water mark
  mutable std::atomic<std::uint64_t> written_{0}, read_{0}, chunks_written_{0}, chunks_read_{0}, live_{0}, peak_{0};
};

}  // namespace kangaroo
