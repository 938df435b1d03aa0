#include "kangaroo/exec/spill.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "kangaroo/core/error.h"

namespace kangaroo {

namespace {

constexpr std::uint64_t kMul1 = 0x9e3779b97f4a7c15ull;
constexpr std::uint64_t kMul2 = 0xc2b2ae3d27d4eb4full;

std::uint64_t rotl(std::uint64_t v, int r) { return (v << r) | (v >> (64 - r)); }

std::string io_error(const std::string& what, int err) { return what + ": " + std::strerror(err); }

}  // namespace

std::uint64_t spill_checksum(const std::byte* data, std::size_t n) {
  // Four independent lanes so the multiplies overlap.
  std::uint64_t h[4] = {0x243f6a8885a308d3ull, 0x13198a2e03707344ull, 0xa4093822299f31d0ull, 0x082efa98ec4e6c89ull};
  std::size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int l = 0; l < 4; ++l) {
      std::uint64_t w;
      std::memcpy(&w, data + i + 8 * static_cast<std::size_t>(l), 8);
      h[l] = rotl(h[l] ^ (w * kMul1), 29) * kMul2;
    }
  }
  std::uint64_t out = static_cast<std::uint64_t>(n) * kMul1;
  for (int l = 0; l < 4; ++l) out = rotl(out ^ h[l], 27) * kMul2;
  for (; i < n; ++i) out = rotl(out ^ static_cast<std::uint64_t>(data[i]), 11) * kMul1;
  return out ^ (out >> 31);
}

SpillArea::SpillArea(const std::string& dir, std::uint64_t limit) : root_(dir), limit_(limit) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) {
    fail(ErrorKind::io, "cannot use spill directory '" + dir + "': " + (ec ? ec.message() : "not a directory"));
  }
  for (int attempt = 0; attempt < 100 && dir_.empty(); ++attempt) {
    const std::string candidate =
        (fs::path(dir) / ("kangaroo-spill-" + std::to_string(::getpid()) + "-" + std::to_string(attempt))).string();
    if (::mkdir(candidate.c_str(), 0700) == 0) dir_ = candidate;
    else if (errno != EEXIST) fail(ErrorKind::io, io_error("cannot create a spill directory in '" + dir + "'", errno));
  }
  if (dir_.empty()) fail(ErrorKind::io, "cannot create a spill directory in '" + dir + "': too many leftovers");
  path_ = dir_ + "/chunks.spill";
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd_ < 0) {
    const int err = errno;
    fs::remove_all(dir_, ec);
    fail(ErrorKind::io, io_error("cannot create the spill file in '" + dir + "'", err));
  }
}

SpillArea::~SpillArea() {
  if (fd_ >= 0) ::close(fd_);
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

void SpillArea::refuse(const ChunkId& id, std::uint64_t n, const std::string& why) const {
  fail(ErrorKind::io, "cannot spill chunk " + id.to_string() + " (" + std::to_string(n) + " bytes) to '" + root_ +
                          "': " + why + "; free space there, point --spill-dir elsewhere or raise the memory cap");
}

std::uint64_t SpillArea::allocate(std::uint64_t n, const ChunkId& id) {
  std::lock_guard lk(mu_);
  std::uint64_t offset = 0;
  auto it = free_.lower_bound(n);
  if (it != free_.end()) {
    const std::uint64_t size = it->first;
    offset = it->second;
    free_.erase(it);
    if (size > n) free_.emplace(size - n, offset + n);
  } else {
    if (limit_ > 0 && end_ + n > limit_) {
      refuse(id, n, "the spill limit of " + std::to_string(limit_) + " bytes is reached");
    }
    offset = end_;
    end_ += n;
  }
  const std::uint64_t live = live_.fetch_add(n) + n;
  if (live > peak_.load()) peak_.store(live);
  return offset;
}

// Counterpart of allocate(); the whole file is truncated once nothing lives in it.
void SpillArea::release(std::uint64_t offset, std::uint64_t n) {
  std::lock_guard lk(mu_);
  live_.fetch_sub(n);
  if (offset + n == end_) {
    end_ = offset;  // the tail shrinks; freed extents just below it stay listed
  } else {
    free_.emplace(n, offset);
  }
  if (live_.load() == 0) {
    free_.clear();
    end_ = 0;
    (void)!::ftruncate(fd_, 0);
  }
}

SpillRecord SpillArea::write(const ChunkId& id, const Buffer& buffer) {
  const auto bytes = buffer.bytes();
  const std::uint64_t n = bytes.size();
  SpillRecord rec;
  rec.offset = allocate(n, id);
  rec.desc = buffer.descriptor();
  rec.nbytes = n;
  rec.nonzero = buffer.nonzero_rect();
  rec.checksum = spill_checksum(bytes.data(), n);
  std::uint64_t done = 0;
  while (done < n) {
    const ssize_t w = ::pwrite(fd_, bytes.data() + done, static_cast<std::size_t>(std::min<std::uint64_t>(n - done, 1u << 30)),
                               static_cast<off_t>(rec.offset + done));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const int err = w < 0 ? errno : ENOSPC;
      release(rec.offset, n);
      refuse(id, n, std::strerror(err));
    }
    done += static_cast<std::uint64_t>(w);
  }
  written_ += n;
  ++chunks_written_;
  return rec;
}

ConstBufferPtr SpillArea::read(const SpillRecord& rec) {
  auto storage = Storage::allocate_host(rec.nbytes, InitPolicy::uninitialized);
  std::uint64_t done = 0;
  while (done < rec.nbytes) {
    const ssize_t r = ::pread(fd_, storage->data() + done,
                              static_cast<std::size_t>(std::min<std::uint64_t>(rec.nbytes - done, 1u << 30)),
                              static_cast<off_t>(rec.offset + done));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      fail(ErrorKind::io, "spill file '" + path_ + "' is shorter than the chunk at offset " + std::to_string(rec.offset) +
                              " (" + std::to_string(rec.nbytes) + " bytes)" +
                              (r < 0 ? " (" + std::string(std::strerror(errno)) + ")" : ""));
    }
    done += static_cast<std::uint64_t>(r);
  }
  if (spill_checksum(storage->data(), rec.nbytes) != rec.checksum) {
    fail(ErrorKind::io, "spilled chunk at offset " + std::to_string(rec.offset) + " of '" + path_ +
                            "' is corrupt (checksum mismatch)");
  }
  read_ += rec.nbytes;
  ++chunks_read_;
  auto b = Buffer::wrap(rec.desc, std::move(storage), 0, rec.nbytes);
  if (rec.nonzero) b->set_nonzero_rect(*rec.nonzero);
  return b;
}

void SpillArea::remove(const SpillRecord& rec) { release(rec.offset, rec.nbytes); }

SpillStats SpillArea::stats() const {
  SpillStats s;
  s.bytes_written = written_.load();
  s.bytes_read = read_.load();
  s.chunks_written = chunks_written_.load();
  s.chunks_read = chunks_read_.load();
  s.bytes_live = live_.load();
  s.peak_bytes_live = peak_.load();
  return s;
}

}  // namespace kangaroo
