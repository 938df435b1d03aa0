#include "kangaroo/core/buffer.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <new>
#include <numeric>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace kangaroo {

std::size_t scalar_width(ScalarType type) {
  switch (type) {
    case ScalarType::opaque: return 1;
    case ScalarType::u8: return 1;
    case ScalarType::i64: return 8;
    case ScalarType::f32: return 4;
    case ScalarType::f64: return 8;
  }
  return 1;
}

std::string_view scalar_name(ScalarType type) {
  switch (type) {
    case ScalarType::opaque: return "opaque";
    case ScalarType::u8: return "u8";
    case ScalarType::i64: return "i64";
    case ScalarType::f32: return "f32";
    case ScalarType::f64: return "f64";
  }
  return "?";
}

std::optional<ScalarType> parse_scalar(std::string_view tag) {
  if (tag == "opaque") return ScalarType::opaque;
  if (tag == "u8" || tag == "uint8") return ScalarType::u8;
  if (tag == "i64" || tag == "int64") return ScalarType::i64;
  if (tag == "f32" || tag == "float32") return ScalarType::f32;
  if (tag == "f64" || tag == "float64") return ScalarType::f64;
  return std::nullopt;
}

std::uint64_t checked_mul(std::uint64_t a, std::uint64_t b) {
  std::uint64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) fail(ErrorKind::buffer, "buffer size arithmetic overflows 64 bits");
  return r;
}

std::uint64_t checked_add(std::uint64_t a, std::uint64_t b) {
  std::uint64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) fail(ErrorKind::buffer, "buffer size arithmetic overflows 64 bits");
  return r;
}

namespace {

Descriptor dense(ScalarType scalar, std::span<const std::uint64_t> extents, bool fortran) {
  if (extents.empty() || extents.size() > static_cast<std::size_t>(kMaxRank)) {
    fail(ErrorKind::buffer, "buffer rank must be 1..4 (got " + std::to_string(extents.size()) + ")");
  }
  Descriptor d;
  d.scalar = scalar;
  d.rank = static_cast<std::uint8_t>(extents.size());
  std::uint64_t stride = scalar_width(scalar);
  const int r = d.rank;
  for (int n = 0; n < r; ++n) {
    const int a = fortran ? n : r - 1 - n;
    d.extents[a] = extents[a];
    if (stride > static_cast<std::uint64_t>(INT64_MAX)) fail(ErrorKind::buffer, "buffer stride overflows int64");
    d.strides[a] = static_cast<std::int64_t>(stride);
    stride = checked_mul(stride, std::max<std::uint64_t>(extents[a], 1));
  }
  return d;
}

}  // namespace

Descriptor Descriptor::c_order(ScalarType scalar, std::span<const std::uint64_t> extents) {
  return dense(scalar, extents, false);
}

Descriptor Descriptor::fortran_order(ScalarType scalar, std::span<const std::uint64_t> extents) {
  return dense(scalar, extents, true);
}

Descriptor Descriptor::opaque_bytes(std::uint64_t nbytes) {
  const std::uint64_t e[1] = {nbytes};
  return dense(ScalarType::opaque, e, false);
}

std::uint64_t Descriptor::element_count() const {
  std::uint64_t n = 1;
  for (int a = 0; a < rank; ++a) n = checked_mul(n, extents[a]);
  return n;
}

std::uint64_t Descriptor::required_bytes() const {
  std::uint64_t total = width();
  for (int a = 0; a < rank; ++a) {
    if (extents[a] == 0) return 0;
  }
  for (int a = 0; a < rank; ++a) {
    if (strides[a] <= 0) fail(ErrorKind::buffer, "buffer strides must be positive: " + to_string());
    total = checked_add(total, checked_mul(extents[a] - 1, static_cast<std::uint64_t>(strides[a])));
  }
  return total;
}

bool Descriptor::is_c_contiguous() const {
  std::uint64_t stride = width();
  for (int a = rank - 1; a >= 0; --a) {
    if (extents[a] > 1 && static_cast<std::uint64_t>(strides[a]) != stride) return false;
    stride *= std::max<std::uint64_t>(extents[a], 1);
  }
  return true;
}

void Descriptor::validate(std::uint64_t stored_bytes) const {
  if (rank < 1 || rank > kMaxRank) {
    fail(ErrorKind::buffer, "buffer rank must be 1..4 (got " + std::to_string(rank) + ")");
  }
  if (static_cast<unsigned>(scalar) > static_cast<unsigned>(ScalarType::f64)) {
    fail(ErrorKind::buffer, "unknown buffer scalar tag");
  }
  for (int a = rank; a < kMaxRank; ++a) {
    if (extents[a] != 0 || strides[a] != 0) {
      fail(ErrorKind::buffer, "axes beyond the rank must have extent and stride 0: " + to_string());
    }
  }
  if (scalar == ScalarType::opaque) {
    if (rank != 1 || strides[0] != 1) {
      fail(ErrorKind::buffer, "opaque buffers must be rank 1 with unit stride (BUF-4)");
    }
  } else {
    // BUF-2: axes of extent > 1 sorted by stride must form a dense permutation.
    std::array<int, kMaxRank> order{};
    int m = 0;
    for (int a = 0; a < rank; ++a) {
      if (strides[a] <= 0) fail(ErrorKind::buffer, "buffer strides must be positive: " + to_string());
      if (extents[a] > 1) order[m++] = a;
    }
    // Insertion sort of at most four axes (std::sort here trips a GCC 12
    // array-bounds false positive).
    for (int x = 1; x < m; ++x) {
      for (int y = x; y > 0 && strides[order[y]] < strides[order[y - 1]]; --y) std::swap(order[y], order[y - 1]);
    }
    std::uint64_t expect = width();
    for (int n = 0; n < m; ++n) {
      const int a = order[n];
      if (static_cast<std::uint64_t>(strides[a]) != expect) {
        fail(ErrorKind::buffer, "buffer strides are not a dense permutation: " + to_string());
      }
      expect = checked_mul(expect, extents[a]);
    }
  }
  const std::uint64_t need = required_bytes();
  if (need != stored_bytes) {
    fail(ErrorKind::buffer, "buffer descriptor " + to_string() + " needs " + std::to_string(need) +
                                " bytes but storage holds " + std::to_string(stored_bytes));
  }
}

std::string Descriptor::to_string() const {
  std::string s(scalar_name(scalar));
  s += "(";
  for (int a = 0; a < rank; ++a) {
    if (a) s += ", ";
    s += std::to_string(extents[a]);
  }
  s += ")";
  return s;
}

bool Descriptor::same_layout(const Descriptor& o) const {
  return scalar == o.scalar && rank == o.rank && extents == o.extents && strides == o.strides;
}

Storage::~Storage() {
  if (deleter_ != nullptr) deleter_(data_, size_);
}

namespace {

// Zero-initialised blocks at least this large come straight from anonymous
// mmap: the kernel hands out zero pages lazily, so pages never written cost
// neither a memset nor resident memory. (calloc cannot promise that: once
// glibc's dynamic mmap threshold has grown, big blocks come from the heap and
// calloc clears them eagerly.) Per-block partial images written only in a
// small footprint are the case this serves.
constexpr std::size_t kLazyZeroBytes = std::size_t{1} << 20;

// Lazily zeroed blocks of at least one huge page are mapped on huge-page
// boundaries and advised for transparent huge pages. Partial images are
// written row by row, one small page per row of a footprint, so with 4 KiB
// pages a slice spends most of its time in page faults and TLB misses; with
// 2 MiB pages it faults a few hundred times and reads without TLB misses. The
// price is resident memory: a footprint's huge pages are resident whole, so a
// sparse image may hold more than its footprint, never more than its own size
// (which is what the memory cap counts). KANGAROO_HUGE_PAGES=0 turns it off.
constexpr std::size_t kHugePageBytes = std::size_t{2} << 20;

// The first huge-page boundary at or after `x`.
constexpr std::uintptr_t round_up_to_huge_page(std::uintptr_t x) {
  return (x + kHugePageBytes - 1) & ~(std::uintptr_t{kHugePageBytes} - 1);
}

bool huge_pages_enabled() {
  static const bool enabled = [] {
    const char* env = std::getenv("KANGAROO_HUGE_PAGES");
    return env == nullptr || std::string_view(env) != "0";
  }();
  return enabled;
}

void free_host(std::byte* p, std::size_t) { std::free(p); }
void unmap_host(std::byte* p, std::size_t size) {
  ::munmap(p, size);
}

// An anonymous zero mapping of `size` bytes; huge-page aligned and advised
// when it spans at least one huge page. Unmapped by unmap_host(p, size).
void* map_zeroed(std::size_t size) {
  if (size < kHugePageBytes || !huge_pages_enabled()) {
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : p;
  }
  // Over-map by one huge page, then return the unaligned head and the tail.
  const std::size_t span = size + kHugePageBytes;
  void* raw = ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const auto base = reinterpret_cast<std::uintptr_t>(raw);
  const std::uintptr_t aligned = round_up_to_huge_page(base);
  if (aligned > base) ::munmap(raw, aligned - base);
  const std::uintptr_t end = base + span;
  if (end > aligned + size) ::munmap(reinterpret_cast<void*>(aligned + size), end - (aligned + size));
  void* p = reinterpret_cast<void*>(aligned);
  ::madvise(p, size, MADV_HUGEPAGE);  // advice only: without THP the pages stay small
  return p;
}

// Advises the whole huge pages inside [p, p + size) for transparent huge
// pages: pages not yet touched there fault in as huge pages (glibc's fresh
// mappings for large blocks; reused heap memory keeps the pages it has).
// A chunk another rank copies out of this process then costs a few
// page-table entries per copy instead of hundreds (cross-memory copies pin
// the source pages one by one; bench/README.md).
void advise_huge_pages(void* p, std::size_t size) {
  const auto begin = round_up_to_huge_page(reinterpret_cast<std::uintptr_t>(p));
  const auto end = (reinterpret_cast<std::uintptr_t>(p) + size) & ~(std::uintptr_t{kHugePageBytes} - 1);
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}

[[noreturn]] void fail_allocation(std::size_t size) {
  fail(ErrorKind::buffer, "host allocation of " + std::to_string(size) + " bytes failed");
}

// Zeroed blocks of up to half a huge page carved from huge-page chunks
// (compact images: many blocks of a few hundred KiB, written whole). Pages
// the process has not touched before are expensive on virtual machines, and
// far more so as small pages than as huge pages; a chunk whose blocks have
// all been freed is zeroed and kept for reuse (a few at most), so later
// images land on memory that is already resident.
class ChunkArena {
 public:
  static constexpr std::size_t kChunk = kHugePageBytes;
  static constexpr std::size_t kMaxBlock = kChunk / 2;
  static constexpr std::size_t kHeader = 64;  // chunk bookkeeping lives in its first bytes
  static constexpr std::size_t kSpareChunks = 8;

  std::byte* allocate(std::size_t size) {
    const std::size_t need = (std::max<std::size_t>(size, 1) + 63) & ~std::size_t{63};
    std::lock_guard lock(mu_);
    if (current_ == nullptr || header(current_).used + need > kChunk) {
      if (current_ != nullptr) {
        std::byte* old = current_;
        current_ = nullptr;
        if (header(old).live == 0) retire(old);
      }
      current_ = take_chunk();
      if (current_ == nullptr) return nullptr;
    }
    Header& h = header(current_);
    std::byte* p = current_ + h.used;
    h.used += need;
    ++h.live;
    return p;
  }

  void release(std::byte* p) {
    std::byte* chunk = reinterpret_cast<std::byte*>(reinterpret_cast<std::uintptr_t>(p) & ~(std::uintptr_t{kChunk} - 1));
    std::lock_guard lock(mu_);
    if (--header(chunk).live == 0 && chunk != current_) retire(chunk);
  }

 private:
  struct Header {
    std::size_t used = kHeader;  // bytes handed out, header included
    std::size_t live = 0;        // blocks not yet released
  };
  static Header& header(std::byte* chunk) { return *reinterpret_cast<Header*>(chunk); }

  std::byte* take_chunk() {
    if (!spare_.empty()) {
      std::byte* c = spare_.back();
      spare_.pop_back();
      return c;
    }
    void* c = map_zeroed(kChunk);
    if (c == nullptr) return nullptr;
    new (c) Header();
    return static_cast<std::byte*>(c);
  }
  void retire(std::byte* chunk) {
    if (spare_.size() >= kSpareChunks) {
      ::munmap(chunk, kChunk);
      return;
    }
    Header& h = header(chunk);
    std::memset(chunk + kHeader, 0, h.used - kHeader);
    h.used = kHeader;
    spare_.push_back(chunk);
  }

  std::mutex mu_;
  std::byte* current_ = nullptr;
  std::vector<std::byte*> spare_;
};

ChunkArena& chunk_arena() {
  static ChunkArena* arena = new ChunkArena();  // lives for the process: blocks may be freed during static destruction
  return *arena;
}

void release_to_arena(std::byte* p, std::size_t) { chunk_arena().release(p); }

// Larger written-whole blocks (compact images of a reduction's union) are
// whole huge pages; freed ones are kept, up to kKeepBytes, and handed to the
// next request they fit (at most twice its size), zeroed over what it asks
// for: resident memory again instead of fresh pages.
class BlockCache {
 public:
  static constexpr std::size_t kKeepBytes = std::size_t{32} << 20;

  static std::size_t capacity_for(std::size_t size) { return round_up_to_huge_page(size); }

  // A kept block of at least `capacity` bytes and its size, or {nullptr, 0}.
  std::pair<std::byte*, std::size_t> take(std::size_t capacity) {
    std::lock_guard lock(mu_);
    auto it = kept_.lower_bound(capacity);
    if (it == kept_.end() || it->first > 2 * capacity) return {nullptr, 0};
    const auto block = std::pair{it->second, it->first};
    kept_bytes_ -= it->first;
    kept_.erase(it);
    return block;
  }
  void give(std::byte* p, std::size_t capacity) {
    {
      std::lock_guard lock(mu_);
      if (kept_bytes_ + capacity <= kKeepBytes) {
        kept_.emplace(capacity, p);
        kept_bytes_ += capacity;
        return;
      }
    }
    ::munmap(p, capacity);
  }

 private:
  std::mutex mu_;
  std::multimap<std::size_t, std::byte*> kept_;
  std::size_t kept_bytes_ = 0;
};

BlockCache& block_cache() {
  static BlockCache* cache = new BlockCache();  // lives for the process, like the arena
  return *cache;
}

void release_to_cache(std::byte* p, std::size_t capacity) { block_cache().give(p, capacity); }

// Free lists of host blocks by exact size, for storage that is allocated and
// dropped over and over at the same sizes (received chunks). Reused blocks
// are already resident, so they skip the first-touch page faults of a fresh
// allocation. Bounded: beyond the limit freed blocks go back to the system.
// Blocks of a huge page and more are huge-page mappings (map_zeroed): a
// received chunk is written by a cross-memory copy, which on small pages
// spends much of its time pinning the pages one by one (bench/README.md).
bool pool_maps(std::size_t size) { return size >= kHugePageBytes && huge_pages_enabled(); }
void* pool_block(std::size_t size) { return pool_maps(size) ? map_zeroed(size) : std::malloc(size); }
void pool_release(std::byte* p, std::size_t size) { pool_maps(size) ? unmap_host(p, size) : free_host(p, size); }

class HostPool {
 public:
  explicit HostPool(std::size_t limit) : limit_(limit) {}
  std::byte* take(std::size_t size) {
    std::lock_guard lock(mu_);
    auto it = free_.find(size);
    if (it == free_.end() || it->second.empty()) return nullptr;
    std::byte* p = it->second.back();
    it->second.pop_back();
    cached_ -= size;
    return p;
  }
  void give(std::byte* p, std::size_t size) {
    {
      std::lock_guard lock(mu_);
      if (cached_ + size <= limit_) {
        free_[size].push_back(p);
        cached_ += size;
        return;
      }
    }
    pool_release(p, size);
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::size_t, std::vector<std::byte*>> free_;
  std::size_t cached_ = 0;
  std::size_t limit_;
};

HostPool& host_pool() {
  static HostPool* pool = [] {
    std::size_t limit = std::size_t{256} << 20;
    if (const char* env = std::getenv("KANGAROO_POOL_BYTES")) limit = std::strtoull(env, nullptr, 10);
    return new HostPool(limit);  // lives for the process: blocks may be freed during static destruction
  }();
  return *pool;
}

void pooled_free(std::byte* p, std::size_t size) { host_pool().give(p, size); }

}  // namespace

std::shared_ptr<Storage> Storage::allocate_pooled(std::size_t size) {
  if (size == 0) return allocate_host(0, InitPolicy::uninitialized);
  std::byte* p = host_pool().take(size);
  if (p == nullptr) p = static_cast<std::byte*>(pool_block(size));
  if (p == nullptr) fail_allocation(size);
  return std::make_shared<Storage>(p, size, MemoryLocation::host, &pooled_free);
}

// Address-sanitizer builds keep every block on the C heap, where overruns
// are caught; chunk blocks have no red zones between them.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kChunkArena = false;
#else
constexpr bool kChunkArena = true;
#endif

std::shared_ptr<Storage> Storage::allocate_host(std::size_t size, InitPolicy init, bool written_whole) {
  const bool recycled = kChunkArena && written_whole && init == InitPolicy::zero && size > 0 && huge_pages_enabled();
  if (recycled && size <= ChunkArena::kMaxBlock) {
    if (std::byte* p = chunk_arena().allocate(size)) {
      return std::make_shared<Storage>(p, size, MemoryLocation::host, &release_to_arena);
    }
  } else if (recycled) {
    const std::size_t capacity = BlockCache::capacity_for(size);
    auto [p, got] = block_cache().take(capacity);
    if (p != nullptr) {
      std::memset(p, 0, size);
    } else {
      p = static_cast<std::byte*>(map_zeroed(capacity));
      got = capacity;
      if (p == nullptr) fail_allocation(size);
    }
    // The storage spans the whole block, so the cache gets all of it back.
    return std::make_shared<Storage>(p, got, MemoryLocation::host, &release_to_cache);
  }
  if (init == InitPolicy::zero && size >= kLazyZeroBytes) {
    void* p = map_zeroed(size);
    if (p == nullptr) fail_allocation(size);
    return std::make_shared<Storage>(static_cast<std::byte*>(p), size, MemoryLocation::host,
                                     &unmap_host);
  }
  // Always hand out a valid pointer, even for empty buffers, so views never
  // see nullptr arithmetic.
  const std::size_t n = size == 0 ? 1 : size;
  void* p = init == InitPolicy::zero ? std::calloc(n, 1) : std::malloc(n);
  if (p == nullptr) fail_allocation(size);
  if (size >= kHugePageBytes && huge_pages_enabled()) advise_huge_pages(p, size);
  return std::make_shared<Storage>(static_cast<std::byte*>(p), size, MemoryLocation::host, &free_host);
}

BufferPtr Buffer::allocate(const Descriptor& desc, InitPolicy init) {
  const std::uint64_t bytes = desc.required_bytes();
  desc.validate(bytes);
  BufferPtr b(new Buffer());
  b->desc_ = desc;
  b->storage_ = Storage::allocate_host(bytes, init);
  b->allocated_bytes_ = bytes;
  b->known_zero_ = init == InitPolicy::zero;
  return b;
}

void Storage::expect_sparse_writes() {
  if (location_ != MemoryLocation::host || deleter_ != &unmap_host) return;
  if (size_ < kHugePageBytes || !huge_pages_enabled()) return;
  ::madvise(data_, size_, MADV_NOHUGEPAGE);
}

void Buffer::expect_sparse_writes() {
  if (known_zero_ && storage_) storage_->expect_sparse_writes();  // compact images hold no sparse pages
}

BufferPtr Buffer::allocate_dynamic(ScalarType scalar, std::uint64_t capacity, InitPolicy init) {
  const std::uint64_t bytes = checked_mul(capacity, scalar_width(scalar));
  BufferPtr b(new Buffer());
  const std::uint64_t zero[1] = {0};
  b->desc_ = Descriptor::c_order(scalar, zero);
  b->storage_ = Storage::allocate_host(bytes, init);
  b->allocated_bytes_ = bytes;
  b->known_zero_ = init == InitPolicy::zero;
  b->capacity_ = capacity;
  b->dynamic_ = true;
  return b;
}

BufferPtr Buffer::wrap(const Descriptor& desc, std::shared_ptr<Storage> storage,
                       std::uint64_t byte_offset, std::uint64_t byte_count) {
  desc.validate(byte_count);
  if (!storage || checked_add(byte_offset, byte_count) > storage->size()) {
    fail(ErrorKind::buffer, "buffer view exceeds its storage");
  }
  BufferPtr b(new Buffer());
  b->desc_ = desc;
  b->storage_ = std::move(storage);
  b->offset_ = byte_offset;
  b->allocated_bytes_ = byte_count;
  return b;
}

BufferPtr Buffer::from_bytes(const Descriptor& desc, std::span<const std::byte> bytes) {
  desc.validate(bytes.size());
  auto storage = Storage::allocate_host(bytes.size(), InitPolicy::uninitialized);
  if (!bytes.empty()) std::memcpy(storage->data(), bytes.data(), bytes.size());
  return wrap(desc, std::move(storage), 0, bytes.size());
}

void Buffer::commit(std::uint64_t n) {
  if (!dynamic_) fail(ErrorKind::buffer, "commit on a buffer that is not dynamic (BUF-6)");
  if (desc_.rank != 1) fail(ErrorKind::buffer, "commit requires a rank-1 buffer (BUF-6)");
  if (committed_) fail(ErrorKind::buffer, "dynamic buffer committed twice (BUF-6)");
  if (n > capacity_) {
    fail(ErrorKind::buffer, "dynamic commit of " + std::to_string(n) +
                                " elements exceeds capacity " + std::to_string(capacity_));
  }
  desc_.extents[0] = n;
  committed_ = true;
}

BufferPtr Buffer::allocate_compact_image(const Descriptor& desc, const NonzeroRect& rect) {
  if (desc.rank != 2 || desc.scalar == ScalarType::opaque || !desc.is_c_contiguous()) {
    fail(ErrorKind::buffer, "a compact image must be a rank-2 C-order numeric buffer (got " + desc.to_string() + ")");
  }
  const std::uint64_t bytes = desc.required_bytes();
  desc.validate(bytes);
  BufferPtr b(new Buffer());
  b->desc_ = desc;
  b->set_nonzero_rect(rect);  // checks the rectangle against the extents
  b->compact_rect_ = rect.empty() ? NonzeroRect{} : rect;
  const std::uint64_t stored =
      checked_mul(checked_mul(b->compact_rect_.row_end - b->compact_rect_.row_begin,
                              b->compact_rect_.col_end - b->compact_rect_.col_begin),
                  desc.width());
  b->compact_storage_ = Storage::allocate_host(static_cast<std::size_t>(stored), InitPolicy::zero, true);
  b->allocated_bytes_ = bytes;
  b->known_zero_ = true;
  return b;
}

bool Buffer::is_compact() const {
  return compact_storage_ != nullptr && !expanded_.load(std::memory_order_acquire);
}

const std::byte* Buffer::rect_row(std::uint64_t row) const {
  const NonzeroRect& r = compact_rect_;
  if (!compact_storage_ || row < r.row_begin || row >= r.row_end) {
    fail(ErrorKind::buffer, "row " + std::to_string(row) + " is outside the stored rows of " + desc_.to_string());
  }
  return compact_storage_->data() + (row - r.row_begin) * (r.col_end - r.col_begin) * desc_.width();
}

std::byte* Buffer::mutable_rect_row(std::uint64_t row) {
  if (!is_compact()) fail(ErrorKind::buffer, "rows of " + desc_.to_string() + " written after expansion");
  known_zero_ = false;
  return const_cast<std::byte*>(rect_row(row));
}

void Buffer::expand_slow() const {
  std::lock_guard lock(expand_mu_);
  if (expanded_.load(std::memory_order_relaxed)) return;
  const std::uint64_t bytes = desc_.required_bytes();
  auto dense = Storage::allocate_host(static_cast<std::size_t>(bytes), InitPolicy::zero);
  const NonzeroRect& r = compact_rect_;
  const std::uint64_t w = desc_.width();
  const std::uint64_t cols = desc_.extents[1];
  const std::uint64_t seg = (r.col_end - r.col_begin) * w;
  for (std::uint64_t row = r.row_begin; row < r.row_end; ++row) {
    std::memcpy(dense->data() + (row * cols + r.col_begin) * w,
                compact_storage_->data() + (row - r.row_begin) * seg, static_cast<std::size_t>(seg));
  }
  storage_ = std::move(dense);
  expanded_.store(true, std::memory_order_release);
}

std::span<const std::byte> Buffer::bytes() const {
  expand();
  return {storage_->data() + offset_, static_cast<std::size_t>(byte_size())};
}

std::byte* Buffer::mutable_data() {
  expand();
  note_mutation();
  return storage_->data() + offset_;
}

void Buffer::set_nonzero_rect(const NonzeroRect& rect) {
  if (desc_.scalar == ScalarType::opaque || desc_.rank != 2) {
    fail(ErrorKind::buffer,
         "a nonzero rectangle needs a rank-2 numeric buffer (got " + desc_.to_string() + ")");
  }
  if (rect.row_begin > rect.row_end || rect.col_begin > rect.col_end ||
      rect.row_end > desc_.extents[0] || rect.col_end > desc_.extents[1]) {
    fail(ErrorKind::buffer, "nonzero rectangle rows [" + std::to_string(rect.row_begin) + ", " +
                                std::to_string(rect.row_end) + ") columns [" +
                                std::to_string(rect.col_begin) + ", " +
                                std::to_string(rect.col_end) + ") exceeds " + desc_.to_string());
  }
  nonzero_rect_ = rect;
}
const std::byte* Buffer::data() const {
  expand();
  return storage_->data() + offset_;
}

void Buffer::check_view(ScalarType expected, int expected_rank) const {
  if (desc_.scalar == ScalarType::opaque) {
    fail(ErrorKind::buffer, "numeric view of an opaque buffer is not allowed (BUF-4)");
  }
  if (desc_.scalar != expected) {
    fail(ErrorKind::buffer, "typed view requests " + std::string(scalar_name(expected)) +
                                " but the buffer holds " + desc_.to_string() + " (BUF-5)");
  }
  if (expected_rank >= 0 && desc_.rank != expected_rank) {
    fail(ErrorKind::buffer, "typed view requests rank " + std::to_string(expected_rank) +
                                " but the buffer is " + desc_.to_string() + " (BUF-5)");
  }
}

namespace {
// Byte offset of C-order linear index p under the descriptor's strides.
std::uint64_t linear_offset(const Descriptor& d, std::uint64_t p) {
  std::uint64_t off = 0;
  for (int a = d.rank - 1; a >= 0; --a) {
    const std::uint64_t e = d.extents[a];
    off += (p % e) * static_cast<std::uint64_t>(d.strides[a]);
    p /= e;
  }
  return off;
}
}  // namespace

double Buffer::element_as_double(std::uint64_t p) const {
  const std::byte* at = data() + linear_offset(desc_, p);
  switch (desc_.scalar) {
    case ScalarType::u8: return static_cast<double>(*reinterpret_cast<const std::uint8_t*>(at));
    case ScalarType::i64: {
      std::int64_t v;
      std::memcpy(&v, at, 8);
      return static_cast<double>(v);
    }
    case ScalarType::f32: {
      float v;
      std::memcpy(&v, at, 4);
      return v;
    }
    case ScalarType::f64: {
      double v;
      std::memcpy(&v, at, 8);
      return v;
    }
    case ScalarType::opaque: break;
  }
  fail(ErrorKind::buffer, "numeric access to an opaque buffer is not allowed (BUF-4)");
}

namespace {
template <class T>
void store_as(std::byte* at, double v) {
  if constexpr (std::is_integral_v<T>) {
    // Out-of-range float-to-integer casts are undefined; saturate instead.
    if (!(v == v)) v = 0.0;
    v = std::clamp(v, static_cast<double>(std::numeric_limits<T>::lowest()),
                   static_cast<double>(std::numeric_limits<T>::max()));
    if (v >= 9.2233720368547758e18) v = 9.2233720368547748e18;
  }
  const T t = static_cast<T>(v);
  std::memcpy(at, &t, sizeof(T));
}
}  // namespace

void copy_convert(const Buffer& src, Buffer& dst) {
  const Descriptor& s = src.descriptor();
  const Descriptor& d = dst.descriptor();
  if (s.scalar == ScalarType::opaque || d.scalar == ScalarType::opaque) {
    fail(ErrorKind::buffer, "cannot value-copy opaque buffers (BUF-8)");
  }
  if (s.rank != d.rank || s.extents != d.extents) {
    fail(ErrorKind::buffer, "value copy needs equal rank and extents: " + s.to_string() + " -> " +
                                d.to_string() + " (BUF-8)");
  }
  const std::uint64_t n = s.element_count();
  std::byte* base = dst.mutable_data();
  for (std::uint64_t p = 0; p < n; ++p) {
    // i64 -> i64 must not round-trip through double; keep it exact.
    std::byte* at = base + linear_offset(d, p);
    if (s.scalar == ScalarType::i64 && d.scalar == ScalarType::i64) {
      std::memcpy(at, src.data() + linear_offset(s, p), 8);
      continue;
    }
    const double v = src.element_as_double(p);
    switch (d.scalar) {
      case ScalarType::u8: store_as<std::uint8_t>(at, v); break;
      case ScalarType::i64: store_as<std::int64_t>(at, v); break;
      case ScalarType::f32: store_as<float>(at, v); break;
      case ScalarType::f64: store_as<double>(at, v); break;
      case ScalarType::opaque: break;
    }
  }
}

}  // namespace kangaroo
