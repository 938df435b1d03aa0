// Packed AMR halo patches (OP-GRAD-1): the opaque payload that
// `amr_subbox_fetch_pack` writes and `gradU_stencil` reads.
//
// The encoding is self-describing: a header (magic, version, patch count)
// followed by one record per patch carrying its level, index box, level
// geometry and a numeric rank-3 grid with its own descriptor. All integers and
// reals are stored in host byte order; the magic number tells a reader when a
// payload came from a host of the other order. Decoding never trusts a count
// or a size: every record is bounds-checked and its grid descriptor validated
// against its bytes, and anything malformed fails with a kangaroo::Error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "kangaroo/core/buffer.h"
#include "kangaroo/core/runmeta.h"

namespace kangaroo {

// Fixed parts of the encoding, exposed for size bounds (OP-GRAD-2 allows 64
// bytes of header and 512 bytes per patch besides its data).
inline constexpr std::uint64_t kAmrPatchHeaderBytes = 16;
inline constexpr std::uint64_t kAmrPatchRecordHeaderBytes = 160;

// One decoded patch. `data` points into the payload it was decoded from and
// stays valid only as long as that payload does.
struct AmrPatchView {
  std::int32_t level = 0;
  IndexBox box;
  // dx, x0, index_origin and is_periodic of the patch's level; ref_ratio is
  // not carried and reads as 1.
  LevelGeom geom;
  Descriptor descriptor;  // numeric, rank 3, extents equal to the box
  std::span<const std::byte> data;

  // Element (i, j, k) in the level's global indices, as double; f32 and f64
  // only (the caller checks the scalar type first).
  double value(std::int64_t i, std::int64_t j, std::int64_t k) const;
};

class AmrPatchEncoder {
 public:
  // Appends the cells `region` of `source`, a numeric rank-3 grid of the
  // block `source_box` (any strides), as a C-order patch. `region` must be a
  // non-empty part of `source_box`.
  void add_subbox(std::int32_t level, const LevelGeom& geom, const Buffer& source,
                  const IndexBox& source_box, const IndexBox& region);
  std::size_t count() const { return count_; }
  // Size of the payload that finish() returns.
  std::uint64_t payload_bytes() const { return kAmrPatchHeaderBytes + body_.size(); }
  // Header plus every record appended so far.
  std::vector<std::byte> finish() const;

 private:
  std::vector<std::byte> body_;
  std::size_t count_ = 0;
};

// Decodes a payload written by AmrPatchEncoder. Throws Error(kernel) with
// "AMR patch record is incomplete" on truncation, and an error naming the
// problem for a bad magic number or version, trailing bytes, or a patch grid
// that is not a valid numeric rank-3 buffer of its box.
std::vector<AmrPatchView> decode_amr_patches(std::span<const std::byte> payload);

}  // namespace kangaroo
