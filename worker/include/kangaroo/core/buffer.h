// Chunk buffers: self-describing byte payloads (BUF-1..9).
//
// A Buffer pairs a Descriptor (scalar tag, rank, extents, byte strides) with
// reference-counted storage that says where its bytes live (host or device).
// Published chunks are immutable (`ConstBufferPtr`); a kernel only writes the
// outputs the executor allocated for it, so sharing storage between holders
// never lets one holder observe another's mutation (BUF-9).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "kangaroo/core/error.h"

namespace kangaroo {

enum class ScalarType : std::uint8_t { opaque = 0, u8 = 1, i64 = 2, f32 = 3, f64 = 4 };

std::size_t scalar_width(ScalarType type);
std::string_view scalar_name(ScalarType type);
// Accepts the canonical tags and the aliases uint8/int64/float32/float64.
std::optional<ScalarType> parse_scalar(std::string_view tag);

template <class T>
constexpr ScalarType scalar_of();
template <>
constexpr ScalarType scalar_of<std::uint8_t>() { return ScalarType::u8; }
template <>
constexpr ScalarType scalar_of<std::int64_t>() { return ScalarType::i64; }
template <>
constexpr ScalarType scalar_of<float>() { return ScalarType::f32; }
template <>
constexpr ScalarType scalar_of<double>() { return ScalarType::f64; }

enum class MemoryLocation : std::uint8_t { host = 0, device = 1 };
enum class InitPolicy : std::uint8_t { uninitialized = 0, zero = 1 };

constexpr int kMaxRank = 4;

// Overflow-checked size arithmetic (BUF-7).
std::uint64_t checked_mul(std::uint64_t a, std::uint64_t b);
std::uint64_t checked_add(std::uint64_t a, std::uint64_t b);

struct Descriptor {
  ScalarType scalar = ScalarType::opaque;
  std::uint8_t rank = 1;
  std::array<std::uint64_t, kMaxRank> extents{};
  std::array<std::int64_t, kMaxRank> strides{};  // bytes

  static Descriptor c_order(ScalarType scalar, std::span<const std::uint64_t> extents);
  static Descriptor fortran_order(ScalarType scalar, std::span<const std::uint64_t> extents);
  static Descriptor opaque_bytes(std::uint64_t nbytes);

  std::size_t width() const { return scalar_width(scalar); }
  std::uint64_t element_count() const;  // product of extents, overflow-checked
  // 0 if any extent is 0, else width + sum((extent-1)*stride) (BUF-2).
  std::uint64_t required_bytes() const;
  bool is_c_contiguous() const;
  // Throws Error(buffer) when the descriptor is malformed or does not match
  // `stored_bytes` exactly (BUF-1, BUF-2, BUF-4).
  void validate(std::uint64_t stored_bytes) const;
  // "f64(4, 5, 6)" style text for messages.
  std::string to_string() const;

  bool same_layout(const Descriptor& other) const;  // dtype, rank, extents, strides
  bool operator==(const Descriptor& other) const { return same_layout(other); }
};

// Reference-counted byte storage. Device storage is allocated by the GPU layer;
// the core only carries the location so every consumer can tell where bytes are.
class Storage {
 public:
  using Deleter = void (*)(std::byte*, std::size_t);
  Storage(std::byte* data, std::size_t size, MemoryLocation location, Deleter deleter)
      : data_(data), size_(size), location_(location), deleter_(deleter) {}
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage();

  // `written_whole`: the caller will write (nearly) every byte, as a compact
  // image does; small zeroed blocks then come from huge-page chunks shared
  // with other such blocks and recycled when all of them are freed.
  static std::shared_ptr<Storage> allocate_host(std::size_t size, InitPolicy init, bool written_whole = false);
  // Uninitialised host block from a bounded per-size free list (blocks come
  // back to it when the storage is dropped); for buffers allocated again and
  // again at the same sizes, such as received chunks. KANGAROO_POOL_BYTES caps
  // what the list keeps (default 256 MiB). Blocks of 2 MiB and more are
  // huge-page aligned mappings advised for huge pages (unless
  // KANGAROO_HUGE_PAGES=0).
  static std::shared_ptr<Storage> allocate_pooled(std::size_t size);

  // Hint for fresh host storage of which only a small part will be written
  // (a per-block partial image, a window read into a whole block): it keeps
  // small pages, so only the pages written become resident and need
  // clearing. Call before the first write; no effect on the contents.
  void expect_sparse_writes();

  std::byte* data() const { return data_; }
  std::size_t size() const { return size_; }
  MemoryLocation location() const { return location_; }

 private:
  std::byte* data_;
  std::size_t size_;
  MemoryLocation location_;
  Deleter deleter_;
};

// Optimisation hint for rank-2 numeric buffers, in logical (row, column)
// indices: every element outside rows [row_begin, row_end) x columns
// [col_begin, col_end) is exactly zero. An empty rectangle says the whole
// buffer is zero. It never changes what the buffer holds; consumers may use it
// to skip zero elements.
struct NonzeroRect {
  std::uint64_t row_begin = 0;
  std::uint64_t row_end = 0;
  std::uint64_t col_begin = 0;
  std::uint64_t col_end = 0;

  bool empty() const { return row_begin >= row_end || col_begin >= col_end; }
  bool operator==(const NonzeroRect&) const = default;
};

class Buffer;
using BufferPtr = std::shared_ptr<Buffer>;
using ConstBufferPtr = std::shared_ptr<const Buffer>;

// Strided element view over a numeric buffer. Strides are in elements.
template <class T>
struct GridView {
  T* base = nullptr;
  std::array<std::uint64_t, kMaxRank> n{};
  std::array<std::int64_t, kMaxRank> s{};

  T& operator()(std::int64_t i, std::int64_t j, std::int64_t k) const {
    return base[i * s[0] + j * s[1] + k * s[2]];
  }
  T& operator()(std::int64_t i, std::int64_t j, std::int64_t k, std::int64_t c) const {
    return base[i * s[0] + j * s[1] + k * s[2] + c * s[3]];
  }
};

class Buffer {
 public:
  // Dense C-order (last axis fastest) numeric or opaque buffer.
  static BufferPtr allocate(const Descriptor& desc, InitPolicy init);
  // Compact image: a rank-2 C-order numeric buffer whose storage holds only
  // the rows and columns of `rect`, zero-initialised; every element outside
  // `rect` is zero for good, so `rect` is also its nonzero-rectangle hint.
  // A kernel that knows its footprint writes through mutable_rect_row and
  // a reduction reads through rect_row, and neither touches the pages of a
  // full-size image. Any dense access (data(), bytes(), views, storage())
  // first expands the buffer into full dense storage, once and thread-safe,
  // so every other consumer sees an ordinary buffer. Memory accounting
  // (allocated_bytes) stays at the full size.
  static BufferPtr allocate_compact_image(const Descriptor& desc, const NonzeroRect& rect);
  // Rank-1 dynamic buffer with capacity `capacity` elements (BUF-6).
  static BufferPtr allocate_dynamic(ScalarType scalar, std::uint64_t capacity, InitPolicy init);
  // Wraps existing storage; validates the descriptor against `byte_count`.
  static BufferPtr wrap(const Descriptor& desc, std::shared_ptr<Storage> storage,
                        std::uint64_t byte_offset, std::uint64_t byte_count);
  // Copies `bytes` into fresh host storage after validating the descriptor.
  static BufferPtr from_bytes(const Descriptor& desc, std::span<const std::byte> bytes);

  // Visible descriptor: for a dynamic buffer, rank 1 with the committed extent
  // (0 before commit).
  const Descriptor& descriptor() const { return desc_; }
  ScalarType scalar() const { return desc_.scalar; }
  int rank() const { return desc_.rank; }
  MemoryLocation location() const {
    // A compact image's own storage never changes (storage_ does, on expansion).
    if (compact_storage_) return compact_storage_->location();
    return storage_ ? storage_->location() : MemoryLocation::host;
  }

  bool is_dynamic() const { return dynamic_; }
  bool is_committed() const { return committed_; }
  std::uint64_t capacity_elements() const { return capacity_; }
  // Allocated bytes (dynamic: capacity * width); used for LikeInput bounds and
  // memory accounting.
  std::uint64_t allocated_bytes() const { return allocated_bytes_; }
  // Bytes visible to readers (committed prefix for dynamic buffers).
  std::uint64_t byte_size() const { return desc_.required_bytes(); }

  // Commit the final extent of a dynamic buffer exactly once (BUF-6).
  void commit(std::uint64_t n);

  // Nonzero-rectangle hint (absent: any element may be nonzero). The writer
  // sets it after its last write and before the buffer is published; any
  // later mutable access drops it, so a stale hint cannot survive a write.
  // Throws Error(buffer) unless the buffer is rank-2 numeric and the
  // rectangle lies within its extents.
  void set_nonzero_rect(const NonzeroRect& rect);
  const std::optional<NonzeroRect>& nonzero_rect() const { return nonzero_rect_; }

  // True while every byte is known to be zero: allocated with
  // InitPolicy::zero and no mutable access handed out since. Lets a kernel
  // skip zero-filling a fresh output.
  bool known_zero() const { return known_zero_; }

  // Storage::expect_sparse_writes for a fresh zero buffer of which a kernel
  // will write only a small part; none once the buffer has been written.
  void expect_sparse_writes();

  // True for a compact image that has not been expanded.
  bool is_compact() const;
  // The rectangle a compact image stores (its rows x columns).
  const NonzeroRect& compact_rect() const { return compact_rect_; }
  // Element (row, compact_rect().col_begin) of a compact image; `row` must lie
  // in compact_rect()'s rows. Pointers stay valid for the buffer's lifetime,
  // expansion included.
  const std::byte* rect_row(std::uint64_t row) const;
  // Same for the kernel writing the image; keeps the nonzero hint (writes
  // cannot leave the rectangle). Fails once the buffer has been expanded.
  std::byte* mutable_rect_row(std::uint64_t row);

  std::span<const std::byte> bytes() const;
  std::byte* mutable_data();
  const std::byte* data() const;

  // Typed access; throws when the scalar type or rank differ (BUF-4, BUF-5).
  template <class T>
  GridView<const T> view(int expected_rank) const {
    check_view(scalar_of<T>(), expected_rank);
    return make_view<const T>();
  }
  template <class T>
  GridView<T> mutable_view(int expected_rank) {
    check_view(scalar_of<T>(), expected_rank);
    note_mutation();
    return make_view<T>();
  }
  // Dense element pointer for C-contiguous numeric buffers (rank-1 dynamic
  // buffers included: their capacity is addressable before commit).
  template <class T>
  T* elements() {
    check_view(scalar_of<T>(), -1);
    return reinterpret_cast<T*>(mutable_data());
  }
  template <class T>
  const T* elements() const {
    check_view(scalar_of<T>(), -1);
    return reinterpret_cast<const T*>(data());
  }

  // Logical element at linear C-order index `p` converted to double (numeric only).
  double element_as_double(std::uint64_t p) const;

  const std::shared_ptr<Storage>& storage() const {
    expand();
    return storage_;
  }

 private:
  Buffer() = default;
  void note_mutation() {
    known_zero_ = false;
    nonzero_rect_.reset();
  }
  void check_view(ScalarType expected, int expected_rank) const;
  // Dense storage for a compact image (no-op otherwise).
  void expand() const {
    if (compact_storage_ && !expanded_.load(std::memory_order_acquire)) expand_slow();
  }
  void expand_slow() const;
  template <class T>
  GridView<T> make_view() const {
    expand();
    GridView<T> v;
    v.base = reinterpret_cast<T*>(storage_->data() + offset_);
    const auto w = static_cast<std::int64_t>(desc_.width());
    for (int a = 0; a < kMaxRank; ++a) {
      v.n[a] = desc_.extents[a];
      v.s[a] = desc_.strides[a] / w;
    }
    return v;
  }

  Descriptor desc_;
  // Null for a compact image until it is expanded.
  mutable std::shared_ptr<Storage> storage_;
  // Compact images: the rectangle's rows x columns, kept after expansion
  // (readers may still hold row pointers into it).
  std::shared_ptr<Storage> compact_storage_;
  NonzeroRect compact_rect_;
  mutable std::atomic<bool> expanded_{false};
  mutable std::mutex expand_mu_;
  std::uint64_t offset_ = 0;
  std::uint64_t allocated_bytes_ = 0;
  std::uint64_t capacity_ = 0;
  bool dynamic_ = false;
  bool committed_ = false;
  bool known_zero_ = false;
  std::optional<NonzeroRect> nonzero_rect_;
};

// Value-cast copy between equal-rank, equal-extent numeric buffers (BUF-8).
void copy_convert(const Buffer& src, Buffer& dst);

// Calls fn(GridView<const T>) with T = float or double; any other scalar type
// fails with "real-buffer visitor accepts only f32 and f64 inputs" (OP-GEN-1).
template <class Fn>
decltype(auto) visit_real(const Buffer& buf, int expected_rank, Fn&& fn) {
  if (buf.scalar() == ScalarType::f64) return fn(buf.view<double>(expected_rank));
  if (buf.scalar() == ScalarType::f32) return fn(buf.view<float>(expected_rank));
  fail(ErrorKind::kernel, "real-buffer visitor accepts only f32 and f64 inputs (got " +
                              std::string(scalar_name(buf.scalar())) + ")");
}

// Same for writable f32/f64 outputs.
template <class Fn>
decltype(auto) visit_real_mut(Buffer& buf, int expected_rank, Fn&& fn) {
  if (buf.scalar() == ScalarType::f64) return fn(buf.mutable_view<double>(expected_rank));
  if (buf.scalar() == ScalarType::f32) return fn(buf.mutable_view<float>(expected_rank));
  fail(ErrorKind::kernel, "output must be f32 or f64 (got " +
                              std::string(scalar_name(buf.scalar())) + ")");
}

}  // namespace kangaroo
