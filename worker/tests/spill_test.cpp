// Spill area and chunk-store eviction for memory-capped runs (seed §5.4):
// spilled chunks come back bit for bit with their descriptor and footprint,
// damaged files are refused, the spill limit is an explicit error that keeps
// the chunk in memory, and clean chunks are dropped without a write.
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "kangaroo/core/error.h"
#include "kangaroo/exec/chunk_store.h"
#include "kangaroo/exec/spill.h"

namespace kangaroo {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/kangaroo_spill_test_XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
};

BufferPtr ramp(std::uint64_t rows, std::uint64_t cols) {
  const std::uint64_t ext[] = {rows, cols};
  auto b = Buffer::allocate(Descriptor::c_order(ScalarType::f64, ext), InitPolicy::uninitialized);
  auto* p = reinterpret_cast<double*>(b->mutable_data());
  for (std::uint64_t i = 0; i < rows * cols; ++i) p[i] = 0.5 * static_cast<double>(i) - 3.0;
  return b;
}

TEST(SpillArea, RoundTripKeepsBytesDescriptorAndFootprint) {
  TempDir dir;
  SpillArea area(dir.path.string());
  auto b = ramp(6, 5);
  b->set_nonzero_rect({1, 4, 0, 5});
  const SpillRecord rec = area.write(ChunkId{0, 1, 2, 0, 3}, *b);
  EXPECT_EQ(rec.nbytes, b->byte_size());
  auto back = area.read(rec);
  EXPECT_TRUE(back->descriptor().same_layout(b->descriptor()));
  EXPECT_EQ(std::memcmp(back->data(), b->data(), b->byte_size()), 0);
  ASSERT_TRUE(back->nonzero_rect().has_value());
  EXPECT_EQ(*back->nonzero_rect(), (NonzeroRect{1, 4, 0, 5}));
  EXPECT_EQ(area.stats().bytes_written, b->byte_size());
  EXPECT_EQ(area.stats().bytes_read, b->byte_size());
  area.remove(rec);
  EXPECT_EQ(area.stats().bytes_live, 0u);
  EXPECT_THROW(area.read(rec), Error);  // the file was truncated once empty
}

TEST(SpillArea, ReusesFreedExtents) {
  TempDir dir;
  SpillArea area(dir.path.string());
  auto b = ramp(8, 8);  // 512 bytes
  const SpillRecord r1 = area.write(ChunkId{0, 0, 1, 0, 1}, *b);
  const SpillRecord r2 = area.write(ChunkId{0, 0, 1, 0, 2}, *b);
  const SpillRecord r3 = area.write(ChunkId{0, 0, 1, 0, 3}, *b);
  EXPECT_EQ(r2.offset, r1.offset + 512);
  area.remove(r2);
  const SpillRecord r4 = area.write(ChunkId{0, 0, 1, 0, 4}, *ramp(4, 8));  // 256 bytes into r2's hole
  EXPECT_EQ(r4.offset, r2.offset);
  const SpillRecord r5 = area.write(ChunkId{0, 0, 1, 0, 5}, *ramp(4, 8));  // the rest of the hole
  EXPECT_EQ(r5.offset, r2.offset + 256);
  EXPECT_EQ(std::memcmp(area.read(r3)->data(), b->data(), 512), 0);
  EXPECT_EQ(std::memcmp(area.read(r1)->data(), b->data(), 512), 0);
  EXPECT_EQ(area.stats().bytes_live, 3u * 512u);
}

TEST(SpillArea, RefusesDamagedFiles) {
  TempDir dir;
  SpillArea area(dir.path.string());
  const SpillRecord rec = area.write(ChunkId{}, *ramp(4, 4));
  {
    const int fd = ::open(area.file().c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    const char x = 0x5a;
    ASSERT_EQ(::pwrite(fd, &x, 1, static_cast<off_t>(rec.offset) + 17), 1);
    ::close(fd);
  }
  try {
    area.read(rec);
    FAIL() << "a flipped byte went unnoticed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("checksum mismatch"), std::string::npos) << e.what();
  }
  ASSERT_EQ(::truncate(area.file().c_str(), static_cast<off_t>(rec.offset) + 8), 0);
  try {
    area.read(rec);
    FAIL() << "a short file went unnoticed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("shorter than"), std::string::npos) << e.what();
  }
}

TEST(SpillArea, LimitIsAnExplicitErrorAndLeavesNothing) {
  TempDir dir;
  SpillArea area(dir.path.string(), 300);
  auto b = ramp(4, 8);  // 256 bytes
  area.write(ChunkId{0, 0, 1, 0, 0}, *b);
  try {
    area.write(ChunkId{0, 0, 1, 0, 1}, *b);
    FAIL() << "the limit was not enforced";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("spill limit of 300 bytes"), std::string::npos) << e.what();
  }
  EXPECT_EQ(area.stats().bytes_live, 256u);
  EXPECT_EQ(fs::file_size(area.file()), 256u);
}

TEST(SpillArea, ChecksumSeesEveryByteAndTheLength) {
  std::byte a[40] = {};
  const auto h0 = spill_checksum(a, 40);
  EXPECT_NE(h0, spill_checksum(a, 39));
  for (std::size_t i = 0; i < 40; ++i) {
    a[i] = std::byte{1};
    EXPECT_NE(spill_checksum(a, 40), h0) << "byte " << i;
    a[i] = std::byte{0};
  }
}

TEST(ChunkStoreEviction, SpillsDirtyDropsCleanAndLoadsBack) {
  TempDir dir;
  ChunkStore store;
  store.set_spill_area(std::make_shared<SpillArea>(dir.path.string()));
  const ChunkId produced{0, 0, 5, 0, 1}, cached{0, 0, 1, 0, 1}, held{0, 0, 5, 0, 2};
  auto p = ramp(8, 8);
  store.put(produced, p);
  store.cache(cached, ramp(8, 8), /*from_dataset=*/true);
  auto pinned = ramp(8, 8);
  store.put(held, pinned);  // also held outside the store: not a candidate
  p.reset();
  const auto cands = store.eviction_candidates();
  ASSERT_EQ(cands.size(), 2u);
  EXPECT_EQ(store.bytes_in_use(), 3u * 512u);

  EXPECT_EQ(store.evict(cached), 512u);  // clean: dropped, no write
  EXPECT_FALSE(store.holds(cached));
  EXPECT_EQ(store.spill_area()->stats().chunks_written, 0u);

  EXPECT_EQ(store.evict(produced), 512u);  // dirty: written first
  EXPECT_FALSE(store.contains(produced));
  EXPECT_TRUE(store.holds(produced));
  ASSERT_TRUE(store.spilled(produced).has_value());
  EXPECT_EQ(store.bytes_in_use(), 512u);
  auto back = store.load(produced);
  ASSERT_TRUE(back);
  EXPECT_EQ(std::memcmp(back->data(), ramp(8, 8)->data(), 512), 0);

  // Cached back from its spill file it is clean: evicting again writes nothing.
  store.cache(produced, back, /*from_dataset=*/false);
  back.reset();
  EXPECT_EQ(store.evict(produced), 512u);
  EXPECT_EQ(store.spill_area()->stats().chunks_written, 1u);

  // Erasing the chunk removes its file.
  store.erase(produced);
  EXPECT_EQ(store.spill_area()->stats().bytes_live, 0u);
}

TEST(ChunkStoreEviction, NothingDirtyIsEvictableWithoutASpillArea) {
  ChunkStore store;
  store.put(ChunkId{0, 0, 5, 0, 1}, ramp(2, 2));
  store.cache(ChunkId{0, 0, 1, 0, 1}, ramp(2, 2), true);
  const auto cands = store.eviction_candidates();
  ASSERT_EQ(cands.size(), 1u);
  EXPECT_TRUE(cands[0].clean);
}

}  // namespace
}  // namespace kangaroo
