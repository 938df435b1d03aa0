// Checks and data access shared by the CPU kernel families (mesh, histogram,
// reduction). Private to worker/src/kernels.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kangaroo/core/buffer.h"
#include "kangaroo/core/error.h"
#include "kangaroo/core/kernel.h"
#include "kangaroo/core/runmeta.h"

namespace kangaroo::kernel_support {

// OP-GEN-3: a missing input or output is a parameter error of the task.
inline const Buffer& input_at(const KernelContext& ctx, std::string_view kernel, std::size_t i) {
  if (i >= ctx.inputs.size() || !ctx.inputs[i]) {
    fail_kernel_params(kernel, "missing input " + std::to_string(i) + " (got " +
                                   std::to_string(ctx.inputs.size()) + " input(s))");
  }
  return *ctx.inputs[i];
}

inline Buffer& output_at(const KernelContext& ctx, std::string_view kernel, std::size_t i) {
  if (i >= ctx.outputs.size() || !ctx.outputs[i]) {
    fail_kernel_params(kernel, "missing output " + std::to_string(i) + " (got " +
                                   std::to_string(ctx.outputs.size()) + " output(s))");
  }
  return *ctx.outputs[i];
}

inline bool is_real(ScalarType t) {
  return t == ScalarType::f32 || t == ScalarType::f64;
}

inline std::string input_name(std::size_t i) {
  return "input " + std::to_string(i);
}

// OP-GEN-1, with the kernel and the offending buffer named.
inline void require_real(const Buffer& b, std::string_view kernel, std::string_view what) {
  if (!is_real(b.scalar())) {
    fail(ErrorKind::kernel, std::string(kernel) + ": " + std::string(what) +
                                ": real-buffer visitor accepts only f32 and f64 inputs (got " +
                                b.descriptor().to_string() + ")");
  }
}

inline int require_axis(std::string_view kernel, std::int64_t axis) {
  if (axis < 0 || axis > 2) {
    fail_kernel_params(kernel, "axis must be 0, 1 or 2 (got " + std::to_string(axis) + ")");
  }
  return static_cast<int>(axis);
}

inline std::string box_text(const IndexBox& box) {
  std::string s = "[(";
  for (int a = 0; a < 3; ++a)
    s += (a ? "," : "") + std::to_string(box.lo[a]);
  s += ")..(";
  for (int a = 0; a < 3; ++a)
    s += (a ? "," : "") + std::to_string(box.hi[a]);
  return s + ")]";
}

// OP-GEN-1: a block grid is a real chunk read by logical (i,j,k) relative to
// the block's lo, so its extents must be exactly the block box's; rank 4 is
// accepted when it holds a single component (Block(1) outputs).
inline void require_block_grid(const Buffer& b, const IndexBox& box, std::string_view kernel,
                               std::string_view what) {
  require_real(b, kernel, what);
  const Descriptor& d = b.descriptor();
  const bool rank_ok = d.rank == 3 || (d.rank == 4 && d.extents[3] == 1);
  bool extents_ok = rank_ok;
  for (int a = 0; a < 3 && extents_ok; ++a) {
    extents_ok = d.extents[a] == static_cast<std::uint64_t>(box.extent(a));
  }
  if (!extents_ok) {
    fail(ErrorKind::kernel, std::string(kernel) + ": " + std::string(what) + " " + d.to_string() +
                                " is not a block grid of block box " + box_text(box));
  }
}

// Reads a validated real grid (f32 or f64, any strides) as double by logical
// (i, j, k). The per-element type test is perfectly predictable and saves
// instantiating every loop for each input type combination.
class RealGridReader {
 public:
  explicit RealGridReader(const Buffer& b) : is_f64_(b.scalar() == ScalarType::f64) {
    if (is_f64_) {
      f64_ = b.view<double>(b.rank());
    } else {
      f32_ = b.view<float>(b.rank());
    }
  }
  double operator()(std::int64_t i, std::int64_t j, std::int64_t k) const {
    return is_f64_ ? f64_(i, j, k) : static_cast<double>(f32_(i, j, k));
  }

 private:
  bool is_f64_;
  GridView<const double> f64_;
  GridView<const float> f32_;
};

// AXIS-3 image geometry, validated (OP-GEN-3).
struct ImageGrid {
  double umin = 0.0;
  double vmin = 0.0;
  double du = 0.0;
  double dv = 0.0;
  std::int64_t nu = 0;
  std::int64_t nv = 0;
  std::uint64_t pixels() const {
    return static_cast<std::uint64_t>(nu) * static_cast<std::uint64_t>(nv);
  }
};

inline ImageGrid make_image_grid(std::string_view kernel, const std::array<double, 4>& rect,
                                 const std::array<std::int64_t, 2>& resolution) {
  constexpr std::int64_t kMaxSide = std::int64_t{1} << 30;
  if (resolution[0] <= 0 || resolution[1] <= 0 || resolution[0] > kMaxSide ||
      resolution[1] > kMaxSide) {
    fail_kernel_params(kernel, "resolution must be positive and at most 2^30 (got " +
                                   std::to_string(resolution[0]) + ", " +
                                   std::to_string(resolution[1]) + ")");
  }
  for (const double r : rect) {
    if (!std::isfinite(r)) fail_kernel_params(kernel, "rect must be finite");
  }
  ImageGrid g;
  g.nu = resolution[0];
  g.nv = resolution[1];
  g.umin = std::min(rect[0], rect[2]);
  g.vmin = std::min(rect[1], rect[3]);
  g.du = (std::max(rect[0], rect[2]) - g.umin) / static_cast<double>(g.nu);
  g.dv = (std::max(rect[1], rect[3]) - g.vmin) / static_cast<double>(g.nv);
  if (!(g.du > 0.0) || !(g.dv > 0.0) || !std::isfinite(g.du) || !std::isfinite(g.dv)) {
    fail_kernel_params(kernel, "zero pixel size (rect is degenerate)");
  }
  return g;
}

// AXIS-4: images are rank 2 with logical shape (nv, nu).
inline void require_image_shape(const Buffer& b, std::string_view kernel, std::string_view what,
                                const ImageGrid& g) {
  const Descriptor& d = b.descriptor();
  if (d.rank != 2 || d.extents[0] != static_cast<std::uint64_t>(g.nv) ||
      d.extents[1] != static_cast<std::uint64_t>(g.nu)) {
    fail(ErrorKind::kernel, std::string(kernel) + ": " + std::string(what) + " " + d.to_string() +
                                " is not an image of shape (" + std::to_string(g.nv) + ", " +
                                std::to_string(g.nu) + ")");
  }
}

// Output `index` checked as an f64 (nv, nu) row-major image; its contents
// are not touched.
inline Buffer& require_f64_image_output(const KernelContext& ctx, std::string_view kernel, std::size_t index,
                                        const ImageGrid& g) {
  Buffer& out = output_at(ctx, kernel, index);
  const std::string what = "output " + std::to_string(index);
  if (out.scalar() != ScalarType::f64) {
    fail(ErrorKind::kernel, std::string(kernel) + ": " + what + " must be f64 (got " +
                                out.descriptor().to_string() + ")");
  }
  require_image_shape(out, kernel, what, g);
  if (!out.descriptor().is_c_contiguous()) {
    fail(ErrorKind::kernel, std::string(kernel) + ": " + what + " must be row-major (AXIS-4)");
  }
  return out;
}

// Zero-filled f64 (nv, nu) accumulation image, as a dense row-major array.
// An output allocated zero is left as it is, so pages the kernel never writes
// stay untouched (lazily zero storage).
inline double* f64_image_output(const KernelContext& ctx, std::string_view kernel,
                                std::size_t index, const ImageGrid& g) {
  Buffer& out = require_f64_image_output(ctx, kernel, index, g);
  const bool zero = out.known_zero();
  if (zero) out.expect_sparse_writes();
  double* pixels = out.elements<double>();
  if (!zero) std::fill_n(pixels, g.pixels(), 0.0);
  return pixels;
}

// Replaces output `index` (a checked rank-2 row-major image of T) with a
// compact image that stores only `rect` (Buffer::allocate_compact_image) and
// returns its pixel (rect.row_begin, rect.col_begin); rows are
// rect.col_end - rect.col_begin apart. Null for an empty rectangle. The
// kernel must write nothing outside `rect`.
template <class T = double>
T* compact_image_output(const KernelContext& ctx, std::string_view kernel, std::size_t index,
                        const NonzeroRect& rect) {
  const Buffer& out = output_at(ctx, kernel, index);
  BufferPtr img = Buffer::allocate_compact_image(out.descriptor(), rect);
  T* first = rect.empty() ? nullptr : reinterpret_cast<T*>(img->mutable_rect_row(rect.row_begin));
  ctx.outputs[index] = std::move(img);
  return first;
}

// Inclusive pixel ranges an accumulation kernel may have written (rows are v,
// columns u), grown one footprint at a time; published as the output's
// nonzero-rectangle hint once the kernel's writes are done.
class PixelFootprint {
 public:
  void add(std::int64_t row_first, std::int64_t row_last, std::int64_t col_first,
           std::int64_t col_last) {
    if (row_first > row_last || col_first > col_last) return;
    if (empty_) {
      row_first_ = row_first;
      row_last_ = row_last;
      col_first_ = col_first;
      col_last_ = col_last;
      empty_ = false;
      return;
    }
    row_first_ = std::min(row_first_, row_first);
    row_last_ = std::max(row_last_, row_last);
    col_first_ = std::min(col_first_, col_first);
    col_last_ = std::max(col_last_, col_last);
  }

  NonzeroRect rect() const {
    if (empty_) return {};
    return {static_cast<std::uint64_t>(row_first_), static_cast<std::uint64_t>(row_last_) + 1,
            static_cast<std::uint64_t>(col_first_), static_cast<std::uint64_t>(col_last_) + 1};
  }

  // Sets the hint on output `index`; call after the last write to it.
  void publish(const KernelContext& ctx, std::string_view kernel, std::size_t index) const {
    output_at(ctx, kernel, index).set_nonzero_rect(rect());
  }

 private:
  bool empty_ = true;
  std::int64_t row_first_ = 0;
  std::int64_t row_last_ = -1;
  std::int64_t col_first_ = 0;
  std::int64_t col_last_ = -1;
};

// Walks the logical elements of a numeric buffer in C order (linear index p),
// yielding element offsets under the buffer's strides (BUF-3).
class LinearCursor {
 public:
  LinearCursor(const Descriptor& d, std::uint64_t start) : rank_(d.rank) {
    const auto width = static_cast<std::int64_t>(d.width());
    for (int a = rank_ - 1; a >= 0; --a) {
      extent_[a] = std::max<std::uint64_t>(d.extents[a], 1);
      stride_[a] = d.strides[a] / width;
      index_[a] = start % extent_[a];
      start /= extent_[a];
      offset_ += static_cast<std::int64_t>(index_[a]) * stride_[a];
    }
  }
  std::int64_t offset() const { return offset_; }
  void next() {
    for (int a = rank_ - 1; a >= 0; --a) {
      offset_ += stride_[a];
      if (++index_[a] < extent_[a] || a == 0) return;
      offset_ -= static_cast<std::int64_t>(extent_[a]) * stride_[a];
      index_[a] = 0;
    }
  }

 private:
  int rank_;
  std::array<std::uint64_t, kMaxRank> extent_{};
  std::array<std::uint64_t, kMaxRank> index_{};
  std::array<std::int64_t, kMaxRank> stride_{};
  std::int64_t offset_ = 0;
};

template <class Src, class Dst>
void gather_typed(const Buffer& b, std::uint64_t start, std::size_t count, Dst* dst) {
  if (b.is_compact()) {
    // Row by row from the stored rectangle, zeros elsewhere; no expansion.
    const NonzeroRect& r = b.compact_rect();
    const std::uint64_t cols = b.descriptor().extents[1];
    std::uint64_t p = start;
    const std::uint64_t end = start + count;
    while (p < end) {
      const std::uint64_t row = p / cols;
      const std::uint64_t col = p % cols;
      const std::uint64_t stop = std::min(end, (row + 1) * cols);
      Dst* out = dst + (p - start);
      const std::uint64_t n = stop - p;
      std::fill_n(out, n, Dst{});
      if (row >= r.row_begin && row < r.row_end) {
        const std::uint64_t c0 = std::max(col, r.col_begin);
        const std::uint64_t c1 = std::min(col + n, r.col_end);
        const Src* src = reinterpret_cast<const Src*>(b.rect_row(row));
        for (std::uint64_t c = c0; c < c1; ++c)
          out[c - col] = static_cast<Dst>(src[c - r.col_begin]);
      }
      p = stop;
    }
    return;
  }
  const Src* base = reinterpret_cast<const Src*>(b.data());
  if (b.descriptor().is_c_contiguous()) {
    for (std::size_t n = 0; n < count; ++n)
      dst[n] = static_cast<Dst>(base[start + n]);
    return;
  }
  LinearCursor cursor(b.descriptor(), start);
  for (std::size_t n = 0; n < count; ++n, cursor.next())
    dst[n] = static_cast<Dst>(base[cursor.offset()]);
}

// dst[n] = logical element (start + n) of `b`, converted to Dst.
template <class Dst>
void gather_linear(const Buffer& b, std::uint64_t start, std::size_t count, Dst* dst) {
  switch (b.scalar()) {
    case ScalarType::f64:
      gather_typed<double>(b, start, count, dst);
      return;
    case ScalarType::f32:
      gather_typed<float>(b, start, count, dst);
      return;
    case ScalarType::u8:
      gather_typed<std::uint8_t>(b, start, count, dst);
      return;
    case ScalarType::i64:
      gather_typed<std::int64_t>(b, start, count, dst);
      return;
    case ScalarType::opaque:
      break;
  }
  fail(ErrorKind::buffer, "numeric access to an opaque buffer is not allowed (BUF-4)");
}

template <class Dst, class Src>
void scatter_typed(Buffer& b, std::uint64_t start, std::size_t count, const Src* src) {
  Dst* base = reinterpret_cast<Dst*>(b.mutable_data());
  if (b.descriptor().is_c_contiguous()) {
    for (std::size_t n = 0; n < count; ++n)
      base[start + n] = static_cast<Dst>(src[n]);
    return;
  }
  LinearCursor cursor(b.descriptor(), start);
  for (std::size_t n = 0; n < count; ++n, cursor.next())
    base[cursor.offset()] = static_cast<Dst>(src[n]);
}

// Logical element (start + n) of `b` = src[n] cast to b's scalar type; callers
// only store values representable in that type (reals, or 0/1 into u8).
template <class Src>
void scatter_linear(Buffer& b, std::uint64_t start, std::size_t count, const Src* src) {
  switch (b.scalar()) {
    case ScalarType::f64:
      scatter_typed<double>(b, start, count, src);
      return;
    case ScalarType::f32:
      scatter_typed<float>(b, start, count, src);
      return;
    case ScalarType::u8:
      scatter_typed<std::uint8_t>(b, start, count, src);
      return;
    case ScalarType::i64:
      scatter_typed<std::int64_t>(b, start, count, src);
      return;
    case ScalarType::opaque:
      break;
  }
  fail(ErrorKind::buffer, "numeric access to an opaque buffer is not allowed (BUF-4)");
}

// Bounding box of the level-0 boxes of a step: the domain that periodic axes
// wrap into (OP-GRAD-1, OP-GRAD-3, OP-CIC-1). Empty when level 0 has no boxes.
inline IndexBox level0_bounding_box(const StepMeta& step) {
  if (step.levels.empty() || step.levels[0].boxes.empty()) return IndexBox{};
  IndexBox bbox = step.levels[0].boxes[0];
  for (const IndexBox& b : step.levels[0].boxes) {
    for (int a = 0; a < 3; ++a) {
      bbox.lo[a] = std::min(bbox.lo[a], b.lo[a]);
      bbox.hi[a] = std::max(bbox.hi[a], b.hi[a]);
    }
  }
  return bbox;
}

// COV-2 membership for the cells of one region (a block, or one plane of it).
// Coverage lists name boxes across the whole level; only the few that touch
// the region matter, and painting them once turns the per-cell test into a
// lookup instead of a scan of the list.
class CoverageMask {
 public:
  CoverageMask(const IndexBox& region, std::span<const IndexBox> covered) : region_(region) {
    for (const IndexBox& box : covered) {
      const IndexBox hit = box.intersect(region);
      if (!hit.empty()) hits_.push_back(hit);
    }
    if (hits_.empty() || region.cells() > kMaxPaintedCells) return;
    ny_ = region.extent(1);
    nz_ = region.extent(2);
    painted_.assign(region.cells(), 0);
    for (const IndexBox& hit : hits_) {
      for (std::int64_t i = hit.lo[0]; i <= hit.hi[0]; ++i) {
        for (std::int64_t j = hit.lo[1]; j <= hit.hi[1]; ++j) {
          const std::size_t row = index(i, j, hit.lo[2]);
          std::fill_n(painted_.begin() + static_cast<std::ptrdiff_t>(row), hit.extent(2), 1);
        }
      }
    }
  }

  bool any() const { return !hits_.empty(); }

  // (i, j, k) in the level's global indices, inside the region.
  bool covered(std::int64_t i, std::int64_t j, std::int64_t k) const {
    if (hits_.empty()) return false;
    if (!painted_.empty()) return painted_[index(i, j, k)] != 0;
    return is_covered(hits_, i, j, k);
  }

 private:
  // Larger regions fall back to scanning the (already filtered) boxes rather
  // than allocating a byte per cell.
  static constexpr std::uint64_t kMaxPaintedCells = std::uint64_t{1} << 26;

  std::size_t index(std::int64_t i, std::int64_t j, std::int64_t k) const {
    return static_cast<std::size_t>(((i - region_.lo[0]) * ny_ + (j - region_.lo[1])) * nz_ +
                                    (k - region_.lo[2]));
  }

  IndexBox region_;
  std::vector<IndexBox> hits_;
  std::vector<std::uint8_t> painted_;
  std::int64_t ny_ = 0;
  std::int64_t nz_ = 0;
};

// Axes of a grid buffer from the largest to the smallest stride (ties keep
// axis order): walking order[0] outer and order[2] inner visits the elements in
// memory order, so the innermost loop is the unit-stride axis (x for
// Fortran-order FABs, z for C order).
inline std::array<int, 3> memory_order(const Descriptor& d) {
  std::array<int, 3> order{0, 1, 2};
  auto mag = [&](int a) {
    const std::int64_t s = d.strides[a];
    return s < 0 ? -s : s;
  };
  std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return mag(x) > mag(y); });
  return order;
}

// COV-2 membership for a region walked one line at a time along axis
// `inner`. Only the coverage boxes that touch the region are kept; most
// blocks have none, and a line that none of them crosses needs no per-cell
// test at all.
class LineCoverage {
 public:
  LineCoverage(const IndexBox& region, std::span<const IndexBox> covered, int inner)
      : region_(region), inner_(inner) {
    for (const IndexBox& box : covered) {
      const IndexBox hit = box.intersect(region);
      if (!hit.empty()) hits_.push_back(hit);
    }
  }

  bool any() const { return !hits_.empty(); }

  // `cell` is the global index of any cell of the line (its `inner`
  // coordinate is ignored). Returns false when no cell of the line is
  // covered; otherwise sets flags[n] to 1 for a covered cell
  // region.lo[inner] + n and to 0 otherwise, for n < region.extent(inner).
  bool line(const std::array<std::int64_t, 3>& cell, std::uint8_t* flags) const {
    bool touched = false;
    for (const IndexBox& h : hits_) {
      bool inside = true;
      for (int a = 0; a < 3; ++a) {
        if (a != inner_ && (cell[a] < h.lo[a] || cell[a] > h.hi[a])) {
          inside = false;
          break;
        }
      }
      if (!inside) continue;
      if (!touched) {
        std::fill_n(flags, region_.extent(inner_), std::uint8_t{0});
        touched = true;
      }
      std::fill(flags + (h.lo[inner_] - region_.lo[inner_]),
                flags + (h.hi[inner_] - region_.lo[inner_] + 1), std::uint8_t{1});
    }
    return touched;
  }

 private:
  IndexBox region_;
  int inner_;
  std::vector<IndexBox> hits_;
};

// Walks the cells of `region` line by line in the memory order `order`
// (see memory_order): fn(n_outer, n_mid, flags) per line, with n_* the
// offsets from region.lo on order[0] / order[1], and flags nullptr when no
// cell of the line is covered, else LineCoverage::line's flags (indexed by
// the offset along order[2]).
template <class Fn>
void for_each_line(const IndexBox& region, const std::array<int, 3>& order,
                   std::span<const IndexBox> covered, Fn&& fn) {
  const LineCoverage coverage(region, covered, order[2]);
  std::vector<std::uint8_t> flags(coverage.any() ? static_cast<std::size_t>(region.extent(order[2]))
                                                 : 0);
  std::array<std::int64_t, 3> cell{region.lo[0], region.lo[1], region.lo[2]};
  for (std::int64_t a0 = 0; a0 < region.extent(order[0]); ++a0) {
    cell[order[0]] = region.lo[order[0]] + a0;
    for (std::int64_t a1 = 0; a1 < region.extent(order[1]); ++a1) {
      cell[order[1]] = region.lo[order[1]] + a1;
      const bool masked = coverage.any() && coverage.line(cell, flags.data());
      fn(a0, a1, masked ? static_cast<const std::uint8_t*>(flags.data()) : nullptr);
    }
  }
}

}  // namespace kangaroo::kernel_support
