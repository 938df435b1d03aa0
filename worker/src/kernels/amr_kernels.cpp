// AMR kernels of the AMReX component: plotfile reads (OP-LOAD-1), packed AMR
// halos and their bound (OP-GRAD-1, OP-GRAD-2), least-squares gradients
// (OP-GRAD-3) and the vorticity magnitude (OP-VORT-1).
//
// The halo of a block is planned once by plan_halo(); the extra-read hook, the
// bound evaluator and the packing kernel all derive their chunk lists from it,
// so the executor prefetches exactly the chunks the kernel cuts and the bound
// covers exactly what is packed. Per-cell math (least squares, curl, periodic
// wrap) lives in kangaroo/kernels/math so a device path shares it.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "amr_family.h"
#include "kangaroo/core/buffer.h"
#include "kangaroo/core/error.h"
#include "kangaroo/core/kernel.h"
#include "kangaroo/core/params.h"
#include "kangaroo/core/runmeta.h"
#include "kangaroo/data/amrex_plotfile.h"
#include "kangaroo/kernels/amr_patch.h"
#include "kangaroo/kernels/math/gradient.h"
#include "kangaroo/kernels/math/overlap.h"
#include "kangaroo/kernels/math/periodic.h"
#include "kangaroo/kernels/register.h"
#include "kernel_support.h"

namespace kangaroo {

// ===========================================================================
// Patch encoding
// ===========================================================================

namespace {

// "KAMR" in memory on a little-endian host; a byte-swapped value means the
// payload was written with the other byte order.
constexpr std::uint32_t kPatchMagic = 0x524D414B;
constexpr std::uint32_t kPatchVersion = 1;
// Records start on 8-byte boundaries so that grid data stays aligned for
// device copies.
constexpr std::uint64_t kRecordAlign = 8;

std::uint64_t align_up(std::uint64_t n) {
  return checked_add(n, kRecordAlign - 1) / kRecordAlign * kRecordAlign;
}

class ByteWriter {
 public:
  explicit ByteWriter(std::vector<std::byte>& out) : out_(out) {}
  template <class T>
  void put(const T& value) {
    const std::size_t at = out_.size();
    out_.resize(at + sizeof(T));
    std::memcpy(out_.data() + at, &value, sizeof(T));
  }
  void zeros(std::size_t n) { out_.resize(out_.size() + n, std::byte{0}); }

 private:
  std::vector<std::byte>& out_;
};

[[noreturn]] void fail_incomplete(std::string_view detail) {
  fail(ErrorKind::kernel, "AMR patch record is incomplete: " + std::string(detail));
}

class ByteReader {
 public:
  explicit ByteReader(std::span<const std::byte> bytes) : bytes_(bytes) {}
  std::size_t position() const { return pos_; }
  std::size_t remaining() const { return bytes_.size() - pos_; }

  template <class T>
  T get(std::string_view what) {
    if (remaining() < sizeof(T)) {
      fail_incomplete(std::string(what) + " at byte " + std::to_string(pos_) + " needs " +
                      std::to_string(sizeof(T)) + " bytes, " + std::to_string(remaining()) +
                      " left");
    }
    T value;
    std::memcpy(&value, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }
  std::span<const std::byte> take(std::size_t n) {
    std::span<const std::byte> s = bytes_.subspan(pos_, n);
    pos_ += n;
    return s;
  }

 private:
  std::span<const std::byte> bytes_;
  std::size_t pos_ = 0;
};

bool is_numeric(ScalarType t) {
  return t == ScalarType::u8 || t == ScalarType::i64 || t == ScalarType::f32 ||
         t == ScalarType::f64;
}

bool box_inside(const IndexBox& inner, const IndexBox& outer) {
  for (int a = 0; a < 3; ++a) {
    if (inner.lo[a] < outer.lo[a] || inner.hi[a] > outer.hi[a]) return false;
  }
  return true;
}

}  // namespace

double AmrPatchView::value(std::int64_t i, std::int64_t j, std::int64_t k) const {
  const std::int64_t off = (i - box.lo[0]) * descriptor.strides[0] +
                           (j - box.lo[1]) * descriptor.strides[1] +
                           (k - box.lo[2]) * descriptor.strides[2];
  const std::byte* at = data.data() + off;
  if (descriptor.scalar == ScalarType::f64) {
    double v;
    std::memcpy(&v, at, sizeof v);
    return v;
  }
  float v;
  std::memcpy(&v, at, sizeof v);
  return static_cast<double>(v);
}

void AmrPatchEncoder::add_subbox(std::int32_t level, const LevelGeom& geom, const Buffer& source,
                                 const IndexBox& source_box, const IndexBox& region) {
  const Descriptor& d = source.descriptor();
  if (!is_numeric(d.scalar) || d.rank != 3) {
    fail(ErrorKind::buffer, "AMR patch source " + d.to_string() + " is not a numeric rank-3 grid");
  }
  for (int a = 0; a < 3; ++a) {
    if (d.extents[a] != static_cast<std::uint64_t>(source_box.extent(a))) {
      fail(ErrorKind::buffer, "subbox source chunk " + d.to_string() + " does not match its box " +
                                  source_box.to_string());
    }
  }
  if (region.empty() || !box_inside(region, source_box)) {
    fail(ErrorKind::internal,
         "AMR patch region " + region.to_string() + " is not a part of " + source_box.to_string());
  }
  const std::array<std::uint64_t, 3> ext{static_cast<std::uint64_t>(region.extent(0)),
                                         static_cast<std::uint64_t>(region.extent(1)),
                                         static_cast<std::uint64_t>(region.extent(2))};
  const Descriptor out = Descriptor::c_order(d.scalar, ext);
  const std::uint64_t data_bytes = out.required_bytes();
  const std::uint64_t record_bytes = checked_add(kAmrPatchRecordHeaderBytes, align_up(data_bytes));

  const std::size_t start = body_.size();
  body_.reserve(start + record_bytes);
  ByteWriter w(body_);
  w.put<std::uint64_t>(record_bytes);
  w.put<std::int32_t>(level);
  for (int a = 0; a < 3; ++a)
    w.put<std::int32_t>(region.lo[a]);
  for (int a = 0; a < 3; ++a)
    w.put<std::int32_t>(region.hi[a]);
  for (int a = 0; a < 3; ++a)
    w.put<double>(geom.dx[a]);
  for (int a = 0; a < 3; ++a)
    w.put<double>(geom.x0[a]);
  for (int a = 0; a < 3; ++a)
    w.put<std::int32_t>(geom.index_origin[a]);
  for (int a = 0; a < 3; ++a)
    w.put<std::uint8_t>(geom.is_periodic[a] ? 1 : 0);
  w.put<std::uint8_t>(static_cast<std::uint8_t>(out.scalar));
  w.put<std::uint8_t>(out.rank);
  w.zeros(3);
  for (int a = 0; a < 3; ++a)
    w.put<std::uint64_t>(out.extents[a]);
  for (int a = 0; a < 3; ++a)
    w.put<std::int64_t>(out.strides[a]);
  w.put<std::uint64_t>(data_bytes);
  if (body_.size() - start != kAmrPatchRecordHeaderBytes) {
    fail(ErrorKind::internal, "AMR patch record header has an unexpected size");
  }

  // SUBBOX-2: logical source(i - lo) through the source strides, written in
  // C order; runs along k are copied at once when they are contiguous.
  const std::size_t width = d.width();
  const std::size_t data_at = body_.size();
  body_.resize(start + record_bytes, std::byte{0});
  std::byte* dst = body_.data() + data_at;
  const std::byte* src = source.data();
  const bool k_contiguous = d.strides[2] == static_cast<std::int64_t>(width);
  const std::size_t run = static_cast<std::size_t>(ext[2]) * width;
  for (std::int64_t i = region.lo[0]; i <= region.hi[0]; ++i) {
    for (std::int64_t j = region.lo[1]; j <= region.hi[1]; ++j) {
      const std::int64_t row = (i - source_box.lo[0]) * d.strides[0] +
                               (j - source_box.lo[1]) * d.strides[1] +
                               (region.lo[2] - source_box.lo[2]) * d.strides[2];
      if (k_contiguous) {
        std::memcpy(dst, src + row, run);
        dst += run;
        continue;
      }
      for (std::int64_t k = 0; k < static_cast<std::int64_t>(ext[2]); ++k) {
        std::memcpy(dst, src + row + k * d.strides[2], width);
        dst += width;
      }
    }
  }
  ++count_;
}

std::vector<std::byte> AmrPatchEncoder::finish() const {
  std::vector<std::byte> out;
  out.reserve(payload_bytes());
  ByteWriter w(out);
  w.put<std::uint32_t>(kPatchMagic);
  w.put<std::uint32_t>(kPatchVersion);
  w.put<std::uint64_t>(count_);
  out.insert(out.end(), body_.begin(), body_.end());
  return out;
}

std::vector<AmrPatchView> decode_amr_patches(std::span<const std::byte> payload) {
  ByteReader r(payload);
  const auto magic = r.get<std::uint32_t>("payload magic number");
  if (magic != kPatchMagic) {
    fail(ErrorKind::kernel,
         "AMR patch payload has an unknown magic number (not written by "
         "amr_subbox_fetch_pack on a host of this byte order)");
  }
  const auto version = r.get<std::uint32_t>("payload version");
  if (version != kPatchVersion) {
    fail(ErrorKind::kernel, "AMR patch payload version " + std::to_string(version) +
                                " is not supported (expected " + std::to_string(kPatchVersion) +
                                ")");
  }
  const auto count = r.get<std::uint64_t>("patch count");
  // Every record is at least a record header long, so a count the payload
  // cannot hold is rejected before anything is reserved for it.
  if (count > r.remaining() / kAmrPatchRecordHeaderBytes) {
    fail_incomplete("the payload announces " + std::to_string(count) + " patches but holds " +
                    std::to_string(r.remaining()) + " bytes after its header");
  }
  std::vector<AmrPatchView> patches;
  patches.reserve(static_cast<std::size_t>(count));
  for (std::uint64_t n = 0; n < count; ++n) {
    const std::string where = "patch " + std::to_string(n);
    const std::size_t start = r.position();
    const auto record_bytes = r.get<std::uint64_t>(where + " size");
    if (record_bytes < kAmrPatchRecordHeaderBytes || record_bytes % kRecordAlign != 0 ||
        record_bytes - sizeof(std::uint64_t) > r.remaining()) {
      fail_incomplete(where + " at byte " + std::to_string(start) + " claims " +
                      std::to_string(record_bytes) + " bytes, " +
                      std::to_string(r.remaining() + sizeof(std::uint64_t)) + " left");
    }
    AmrPatchView p;
    p.level = r.get<std::int32_t>(where + " level");
    for (int a = 0; a < 3; ++a)
      p.box.lo[a] = r.get<std::int32_t>(where + " box");
    for (int a = 0; a < 3; ++a)
      p.box.hi[a] = r.get<std::int32_t>(where + " box");
    for (int a = 0; a < 3; ++a)
      p.geom.dx[a] = r.get<double>(where + " dx");
    for (int a = 0; a < 3; ++a)
      p.geom.x0[a] = r.get<double>(where + " x0");
    for (int a = 0; a < 3; ++a)
      p.geom.index_origin[a] = r.get<std::int32_t>(where + " index origin");
    for (int a = 0; a < 3; ++a)
      p.geom.is_periodic[a] = r.get<std::uint8_t>(where + " periodic flags") != 0;
    const auto scalar = r.get<std::uint8_t>(where + " scalar type");
    const auto rank = r.get<std::uint8_t>(where + " rank");
    r.take(3);
    Descriptor d;
    d.rank = rank;
    for (int a = 0; a < 3; ++a)
      d.extents[a] = r.get<std::uint64_t>(where + " extents");
    for (int a = 0; a < 3; ++a)
      d.strides[a] = r.get<std::int64_t>(where + " strides");
    const auto data_bytes = r.get<std::uint64_t>(where + " data size");
    if (data_bytes > record_bytes - kAmrPatchRecordHeaderBytes ||
        record_bytes != kAmrPatchRecordHeaderBytes + align_up(data_bytes)) {
      fail_incomplete(where + " holds " + std::to_string(record_bytes) +
                      " bytes, which does not fit " + std::to_string(data_bytes) +
                      " bytes of grid data");
    }
    if (p.level < 0) {
      fail(ErrorKind::kernel, "AMR " + where + " has a negative level " + std::to_string(p.level));
    }
    for (int a = 0; a < 3; ++a) {
      if (!std::isfinite(p.geom.dx[a]) || !std::isfinite(p.geom.x0[a])) {
        fail(ErrorKind::kernel, "AMR " + where + " has a non-finite cell size or origin");
      }
    }
    if (scalar > static_cast<std::uint8_t>(ScalarType::f64) ||
        !is_numeric(static_cast<ScalarType>(scalar)) || rank != 3) {
      fail(ErrorKind::kernel, "AMR " + where + " data must be a numeric rank-3 grid (scalar tag " +
                                  std::to_string(scalar) + ", rank " + std::to_string(rank) + ")");
    }
    d.scalar = static_cast<ScalarType>(scalar);
    if (p.box.empty()) {
      fail(ErrorKind::kernel, "AMR " + where + " has an empty box " + p.box.to_string());
    }
    for (int a = 0; a < 3; ++a) {
      if (d.extents[a] != static_cast<std::uint64_t>(p.box.extent(a))) {
        fail(ErrorKind::kernel, "AMR " + where + " grid " + d.to_string() +
                                    " does not match its box " + p.box.to_string());
      }
    }
    try {
      d.validate(data_bytes);
    } catch (const Error& e) {
      fail(ErrorKind::kernel, "AMR " + where + " holds an invalid buffer: " + e.what());
    }
    p.descriptor = d;
    p.data = r.take(static_cast<std::size_t>(data_bytes));
    r.take(static_cast<std::size_t>(record_bytes - kAmrPatchRecordHeaderBytes - data_bytes));
    patches.push_back(p);
  }
  if (r.remaining() != 0) {
    fail(ErrorKind::kernel, "AMR patch payload has " + std::to_string(r.remaining()) +
                                " trailing bytes after its " + std::to_string(count) + " patches");
  }
  return patches;
}

namespace {

namespace ks = kernel_support;

constexpr std::string_view kPlotfileLoad = "plotfile_load";
constexpr std::string_view kSubboxPack = "amr_subbox_fetch_pack";
constexpr std::string_view kGradient = "gradU_stencil";
constexpr std::string_view kVorticity = "vorticity_mag";

// Larger stencils cost (2r+1)^3 samples per cell, each compared with the
// samples kept so far; beyond this radius a single block would take hours.
constexpr std::int64_t kMaxStencilRadius = 8;
// OP-GRAD-3: samples closer than this on every axis are the same sample.
constexpr double kSamePositionTolerance = 1e-14;
// OP-GRAD-2 allowances besides the grid data.
constexpr std::uint64_t kBoundHeaderBytes = 64;
constexpr std::uint64_t kBoundPatchBytes = 512;
static_assert(kAmrPatchHeaderBytes <= kBoundHeaderBytes);
static_assert(kAmrPatchRecordHeaderBytes + kRecordAlign - 1 <= kBoundPatchBytes);

std::int32_t clamp_to_int32(std::int64_t v) {
  return static_cast<std::int32_t>(std::clamp<std::int64_t>(
      v, std::numeric_limits<std::int32_t>::min(), std::numeric_limits<std::int32_t>::max()));
}

// COORD-1 cell center.
double cell_center(const LevelGeom& g, int axis, std::int64_t index) {
  return math::cell_edge(g.x0[axis], g.dx[axis], g.index_origin[axis], index) + 0.5 * g.dx[axis];
}

// Level-0 domain (bounding box of the level-0 boxes) in physical
// coordinates; the interval periodic axes wrap into (OP-GRAD-1, OP-GRAD-3).
struct PhysicalDomain {
  bool valid = false;  // false when level 0 has no boxes: nothing to wrap into
  std::array<double, 3> lo{};
  std::array<double, 3> length{};
};

PhysicalDomain level0_domain(const StepMeta& step) {
  PhysicalDomain dom;
  const IndexBox bbox = ks::level0_bounding_box(step);
  if (bbox.empty()) return dom;
  dom.valid = true;
  for (int a = 0; a < 3; ++a) {
    const auto& g = step.levels[0].geom;
    dom.lo[a] = math::cell_edge(g.x0[a], g.dx[a], g.index_origin[a], bbox.lo[a]);
    dom.length[a] =
        math::cell_edge(g.x0[a], g.dx[a], g.index_origin[a], std::int64_t{bbox.hi[a]} + 1) -
        dom.lo[a];
  }
  return dom;
}

void require_int32(std::string_view kernel, std::string_view name, std::int64_t v) {
  if (v < std::numeric_limits<std::int32_t>::min() ||
      v > std::numeric_limits<std::int32_t>::max()) {
    fail_kernel_params(
        kernel, std::string(name) + " " + std::to_string(v) + " does not fit a chunk identity");
  }
}

// The step the halo is read from, with `input_level` checked against it.
const StepMeta& require_input_step(std::string_view kernel, const RunMeta* meta,
                                   std::int64_t input_step, std::int64_t input_level) {
  if (meta == nullptr) fail_kernel_params(kernel, "missing run metadata");
  const StepMeta* step = meta->find_step(input_step);
  if (step == nullptr) {
    fail_kernel_params(
        kernel, "input_step " + std::to_string(input_step) + " is not a step of the run metadata");
  }
  if (input_level < 0 || static_cast<std::uint64_t>(input_level) >= step->levels.size()) {
    fail_kernel_params(kernel, "input_level " + std::to_string(input_level) +
                                   " is not a level of step " + std::to_string(input_step) +
                                   " (it has " + std::to_string(step->levels.size()) + " levels)");
  }
  return *step;
}

// ---------------------------------------------------------------------------
// Halo planning (OP-GRAD-1)

// Cells `box` of block `block` on `level` of the input step.
struct HaloRequest {
  std::int32_t level = 0;
  std::int32_t block = 0;
  IndexBox box;
};

struct HaloPlan {
  const StepMeta* step = nullptr;
  std::int32_t field = 0;
  std::int32_t version = 0;
  // Grouped by (level, block), levels ascending then blocks ascending; a
  // block appears more than once only when periodic images of the query
  // region meet it in different places.
  std::vector<HaloRequest> requests;

  ChunkId source(const HaloRequest& r) const {
    return ChunkId{step->step, static_cast<std::int16_t>(r.level), field, version, r.block};
  }
};

HaloPlan plan_halo(std::string_view kernel, const RunMeta* meta, std::int32_t task_step,
                   std::int32_t task_level, std::int32_t task_block, const AmrSubboxPackParams& p) {
  if (p.input_field < 0) {
    fail_kernel_params(
        kernel, "input_field must be a field id >= 0 (got " + std::to_string(p.input_field) + ")");
  }
  require_int32(kernel, "input_field", p.input_field);
  require_int32(kernel, "input_version", p.input_version);
  const StepMeta& src = require_input_step(kernel, meta, p.input_step, p.input_level);
  if (src.levels.size() > static_cast<std::size_t>(std::numeric_limits<std::int16_t>::max())) {
    fail_kernel_params(kernel, "too many levels for a chunk identity");
  }
  const LevelMeta* target = meta->find_level(task_step, task_level);
  if (target == nullptr) {
    fail_kernel_params(kernel, "task level " + std::to_string(task_level) + " of step " +
                                   std::to_string(task_step) + " is not in the run metadata");
  }
  if (task_block < 0 || static_cast<std::size_t>(task_block) >= target->boxes.size()) {
    fail_kernel_params(kernel, "block " + std::to_string(task_block) +
                                   " is out of range for level " + std::to_string(task_level));
  }
  const IndexBox& tbox = target->boxes[static_cast<std::size_t>(task_block)];
  const LevelGeom& tg = target->geom;
  const double halo = static_cast<double>(std::max<std::int64_t>(1, p.halo_cells));
  const PhysicalDomain dom = level0_domain(src);

  // Per axis, the physical intervals to request: the query region itself
  // and, on periodic axes, its images shifted by one domain length where it
  // sticks out of the level-0 domain. A region at least one period long
  // needs the whole domain, and no more images (they would repeat data).
  std::array<std::vector<std::array<double, 2>>, 3> spans;
  for (int a = 0; a < 3; ++a) {
    const double qlo =
        math::cell_edge(tg.x0[a], tg.dx[a], tg.index_origin[a], tbox.lo[a]) - halo * tg.dx[a];
    const double qhi =
        math::cell_edge(tg.x0[a], tg.dx[a], tg.index_origin[a], std::int64_t{tbox.hi[a]} + 1) +
        halo * tg.dx[a];
    const double period = dom.length[static_cast<std::size_t>(a)];
    if (!tg.is_periodic[a] || !dom.valid || !(period > 0.0)) {
      spans[a].push_back({qlo, qhi});
      continue;
    }
    const double dlo = dom.lo[static_cast<std::size_t>(a)];
    if (qhi - qlo >= period) {
      spans[a].push_back({dlo, dlo + period});
      continue;
    }
    spans[a].push_back({qlo, qhi});
    if (qlo < dlo) spans[a].push_back({qlo + period, qhi + period});
    if (qhi > dlo + period) spans[a].push_back({qlo - period, qhi - period});
  }

  HaloPlan plan;
  plan.step = &src;
  plan.field = static_cast<std::int32_t>(p.input_field);
  plan.version = static_cast<std::int32_t>(p.input_version);
  std::vector<IndexBox> wanted;
  for (std::size_t l = 0; l < src.levels.size(); ++l) {
    const LevelMeta& lm = src.levels[l];
    const LevelGeom& g = lm.geom;
    // COORD-2 on both corners of every image of the region.
    wanted.clear();
    for (const auto& sx : spans[0]) {
      for (const auto& sy : spans[1]) {
        for (const auto& sz : spans[2]) {
          const std::array<const std::array<double, 2>*, 3> s{&sx, &sy, &sz};
          IndexBox r;
          for (int a = 0; a < 3; ++a) {
            r.lo[a] = clamp_to_int32(
                math::coord_to_cell((*s[a])[0], g.x0[a], g.dx[a], g.index_origin[a]));
            r.hi[a] = clamp_to_int32(
                math::coord_to_cell((*s[a])[1], g.x0[a], g.dx[a], g.index_origin[a]));
          }
          wanted.push_back(r);
        }
      }
    }
    for (std::size_t o = 0; o < lm.boxes.size(); ++o) {
      if (static_cast<std::int64_t>(l) == p.input_level &&
          static_cast<std::int32_t>(o) == task_block)
        continue;
      const std::size_t first = plan.requests.size();
      for (const IndexBox& r : wanted) {
        const IndexBox hit = lm.boxes[o].intersect(r);
        if (hit.empty()) continue;
        const bool repeated =
            std::any_of(plan.requests.begin() + static_cast<std::ptrdiff_t>(first),
                        plan.requests.end(), [&hit](const HaloRequest& q) { return q.box == hit; });
        if (!repeated) {
          plan.requests.push_back(
              {static_cast<std::int32_t>(l), static_cast<std::int32_t>(o), hit});
        }
      }
    }
  }
  return plan;
}

const AmrSubboxPackParams& subbox_params(const KernelParams* params) {
  const auto* p = params != nullptr ? std::get_if<AmrSubboxPackParams>(params) : nullptr;
  if (p == nullptr) fail_kernel_params(kSubboxPack, "missing or incompatible typed parameters");
  return *p;
}

// Extra reads: every source chunk the halo cuts, once, in plan order.
void subbox_extra_reads(const ExtraReadQuery& q, std::vector<ChunkId>& out) {
  const HaloPlan plan =
      plan_halo(kSubboxPack, q.runmeta, q.step, q.level, q.block, subbox_params(q.params));
  const HaloRequest* previous = nullptr;
  for (const HaloRequest& r : plan.requests) {
    if (previous == nullptr || previous->level != r.level || previous->block != r.block) {
      out.push_back(plan.source(r));
    }
    previous = &r;
  }
}

// OP-GRAD-2: 64 + sum(512 + requested_cells * ceil(source_bytes / source_cells)).
std::optional<std::uint64_t> subbox_bound(const BoundQuery& q) {
  const HaloPlan plan =
      plan_halo(kSubboxPack, q.runmeta, q.step, q.level, q.block, subbox_params(q.params));
  std::uint64_t bytes = kBoundHeaderBytes;
  const HaloRequest* previous = nullptr;
  std::uint64_t bytes_per_cell = 0;
  for (const HaloRequest& r : plan.requests) {
    if (previous == nullptr || previous->level != r.level || previous->block != r.block) {
      const ChunkId id = plan.source(r);
      const std::uint64_t source_bytes = q.estimate_bytes ? q.estimate_bytes(id) : 0;
      if (source_bytes == 0) {
        fail(ErrorKind::kernel, std::string(kSubboxPack) +
                                    ": cannot estimate AMR source Chunk Buffer " + id.to_string() +
                                    " (the data service does not know its size)");
      }
      const std::uint64_t source_cells = plan.step->levels[static_cast<std::size_t>(r.level)]
                                             .boxes[static_cast<std::size_t>(r.block)]
                                             .cells();
      bytes_per_cell = source_bytes / source_cells + (source_bytes % source_cells != 0 ? 1 : 0);
    }
    previous = &r;
    bytes = checked_add(bytes,
                        checked_add(kBoundPatchBytes, checked_mul(r.box.cells(), bytes_per_cell)));
  }
  const std::uint64_t width = scalar_width(q.dtype);
  return bytes / width + (bytes % width != 0 ? 1 : 0);
}

const Buffer* find_extra_chunk(const KernelContext& ctx, const ChunkId& id) {
  const std::size_t n = std::min(ctx.extra_ids.size(), ctx.extra_chunks.size());
  for (std::size_t i = 0; i < n; ++i) {
    if (ctx.extra_ids[i] == id) return ctx.extra_chunks[i].get();
  }
  return nullptr;
}

void subbox_fetch_pack_kernel(KernelContext& ctx) {
  const auto& p = ctx.param<AmrSubboxPackParams>();
  const HaloPlan plan = plan_halo(ctx.kernel, ctx.runmeta, ctx.step, ctx.level, ctx.block, p);
  Buffer& out = ks::output_at(ctx, ctx.kernel, 0);
  if (!out.is_dynamic() || scalar_width(out.scalar()) != 1) {
    fail(ErrorKind::kernel,
         std::string(ctx.kernel) + ": output 0 must be an opaque dynamic buffer (got " +
             out.descriptor().to_string() + (out.is_dynamic() ? ", dynamic)" : ")"));
  }
  AmrPatchEncoder encoder;
  for (const HaloRequest& r : plan.requests) {
    const ChunkId id = plan.source(r);
    const Buffer* source = find_extra_chunk(ctx, id);
    if (source == nullptr) {
      fail(ErrorKind::kernel, std::string(ctx.kernel) + ": halo source chunk " + id.to_string() +
                                  " was not provided to the task");
    }
    const Descriptor& d = source->descriptor();
    // SUBBOX-4: an empty, opaque or non-rank-3 source has no data to give.
    if (d.scalar == ScalarType::opaque || d.rank != 3 || d.required_bytes() == 0) continue;
    const LevelMeta& lm = plan.step->levels[static_cast<std::size_t>(r.level)];
    encoder.add_subbox(r.level, lm.geom, *source, lm.boxes[static_cast<std::size_t>(r.block)],
                       r.box);
  }
  const std::vector<std::byte> payload = encoder.finish();
  if (payload.size() > out.capacity_elements()) {
    fail(ErrorKind::kernel, std::string(ctx.kernel) + ": the packed halo needs " +
                                std::to_string(payload.size()) + " bytes but output 0 holds " +
                                std::to_string(out.capacity_elements()) +
                                " (the source size estimates were too small)");
  }
  if (!payload.empty()) std::memcpy(out.mutable_data(), payload.data(), payload.size());
  out.commit(payload.size());
}

// ---------------------------------------------------------------------------
// Gradient (OP-GRAD-3)

// A grid the composite field is sampled from, with values as double in C
// order over its box.
struct SamplePatch {
  std::int32_t level = 0;
  IndexBox box;
  LevelGeom geom;
  std::vector<double> values;
  // Physical extent, padded by a hair so that the cheap rejection test can
  // never disagree with the exact COORD-2 containment test.
  std::array<double, 3> reject_lo{};
  std::array<double, 3> reject_hi{};

  void finish_bounds() {
    for (int a = 0; a < 3; ++a) {
      const double lo = math::cell_edge(geom.x0[a], geom.dx[a], geom.index_origin[a], box.lo[a]);
      const double hi = math::cell_edge(geom.x0[a], geom.dx[a], geom.index_origin[a],
                                        std::int64_t{box.hi[a]} + 1);
      const double pad = std::fabs(geom.dx[a]) * 1e-6 + (std::fabs(lo) + std::fabs(hi)) * 1e-12;
      reject_lo[static_cast<std::size_t>(a)] = std::min(lo, hi) - pad;
      reject_hi[static_cast<std::size_t>(a)] = std::max(lo, hi) + pad;
    }
  }

  // COORD-2 cell of `x` when it lies in this patch.
  bool locate(const double x[3], std::int64_t idx[3]) const {
    for (int a = 0; a < 3; ++a) {
      if (x[a] < reject_lo[static_cast<std::size_t>(a)] ||
          x[a] > reject_hi[static_cast<std::size_t>(a)])
        return false;
    }
    for (int a = 0; a < 3; ++a) {
      idx[a] = math::coord_to_cell(x[a], geom.x0[a], geom.dx[a], geom.index_origin[a]);
      if (idx[a] < box.lo[a] || idx[a] > box.hi[a]) return false;
    }
    return true;
  }

  double at(const std::int64_t idx[3]) const {
    const std::int64_t ny = box.extent(1);
    const std::int64_t nz = box.extent(2);
    return values[static_cast<std::size_t>(((idx[0] - box.lo[0]) * ny + (idx[1] - box.lo[1])) * nz +
                                           (idx[2] - box.lo[2]))];
  }
};

SamplePatch patch_from_view(const AmrPatchView& v, std::size_t index) {
  if (v.descriptor.scalar != ScalarType::f32 && v.descriptor.scalar != ScalarType::f64) {
    fail(ErrorKind::kernel, std::string(kGradient) + ": halo patch " + std::to_string(index) +
                                ": real-buffer visitor accepts only f32 and f64 inputs (got " +
                                v.descriptor.to_string() + ")");
  }
  SamplePatch p;
  p.level = v.level;
  p.box = v.box;
  p.geom = v.geom;
  p.values.reserve(static_cast<std::size_t>(v.box.cells()));
  for (std::int64_t i = v.box.lo[0]; i <= v.box.hi[0]; ++i) {
    for (std::int64_t j = v.box.lo[1]; j <= v.box.hi[1]; ++j) {
      for (std::int64_t k = v.box.lo[2]; k <= v.box.hi[2]; ++k)
        p.values.push_back(v.value(i, j, k));
    }
  }
  p.finish_bounds();
  return p;
}

void gradient_kernel(KernelContext& ctx) {
  const auto& p = ctx.param<GradStencilParams>();
  if (ctx.inputs.size() < 2) {
    fail_kernel_params(
        ctx.kernel, "gradU_stencil requires two inputs (the block grid and its packed halo), got " +
                        std::to_string(ctx.inputs.size()));
  }
  if (p.stencil_radius > kMaxStencilRadius) {
    fail_kernel_params(ctx.kernel, "stencil_radius must be at most " +
                                       std::to_string(kMaxStencilRadius) + " (got " +
                                       std::to_string(p.stencil_radius) + ")");
  }
  const std::int64_t radius = std::max<std::int64_t>(1, p.stencil_radius);
  const StepMeta& step = require_input_step(ctx.kernel, ctx.runmeta, p.input_step, p.input_level);
  const IndexBox& box = ctx.block_box();
  const LevelGeom& tg = ctx.level_meta->geom;
  const Buffer& field = ks::input_at(ctx, ctx.kernel, 0);
  ks::require_block_grid(field, box, ctx.kernel, "input 0");
  const Buffer& halo = ks::input_at(ctx, ctx.kernel, 1);
  if (halo.is_dynamic() && !halo.is_committed()) {
    fail(ErrorKind::kernel,
         std::string(ctx.kernel) + ": input 1 (packed halo) was never committed");
  }

  Buffer& out = ks::output_at(ctx, ctx.kernel, 0);
  const Descriptor& od = out.descriptor();
  if (od.scalar != ScalarType::f64 || od.rank != 4 || od.extents[3] != 3 ||
      od.extents[0] != static_cast<std::uint64_t>(box.extent(0)) ||
      od.extents[1] != static_cast<std::uint64_t>(box.extent(1)) ||
      od.extents[2] != static_cast<std::uint64_t>(box.extent(2))) {
    fail(ErrorKind::kernel, std::string(ctx.kernel) + ": output 0 " + od.to_string() +
                                " must be f64 (nx, ny, nz, 3) for block box " + box.to_string());
  }
  const GridView<double> grad = out.mutable_view<double>(4);

  // Patches: the block itself, tagged with the input level, then the halo;
  // finest first, and in arrival order within a level.
  std::vector<SamplePatch> patches;
  {
    SamplePatch self;
    self.level = static_cast<std::int32_t>(p.input_level);
    self.box = box;
    self.geom = tg;
    self.values.reserve(static_cast<std::size_t>(box.cells()));
    const ks::RealGridReader reader(field);
    for (std::int64_t i = 0; i < box.extent(0); ++i) {
      for (std::int64_t j = 0; j < box.extent(1); ++j) {
        for (std::int64_t k = 0; k < box.extent(2); ++k)
          self.values.push_back(reader(i, j, k));
      }
    }
    self.finish_bounds();
    patches.push_back(std::move(self));
  }
  const std::vector<AmrPatchView> views = decode_amr_patches(halo.bytes());
  for (std::size_t n = 0; n < views.size(); ++n)
    patches.push_back(patch_from_view(views[n], n));
  std::stable_sort(patches.begin(), patches.end(),
                   [](const SamplePatch& a, const SamplePatch& b) { return a.level > b.level; });

  const PhysicalDomain dom = level0_domain(step);
  const std::size_t stencil_points =
      static_cast<std::size_t>((2 * radius + 1) * (2 * radius + 1) * (2 * radius + 1));
  std::vector<std::array<double, 3>> kept;
  kept.reserve(stencil_points);
  const ks::RealGridReader center_values(field);

  math::GradientSystem system;
  for (std::int64_t i = box.lo[0]; i <= box.hi[0]; ++i) {
    for (std::int64_t j = box.lo[1]; j <= box.hi[1]; ++j) {
      for (std::int64_t k = box.lo[2]; k <= box.hi[2]; ++k) {
        const double c[3] = {cell_center(tg, 0, i), cell_center(tg, 1, j), cell_center(tg, 2, k)};
        const double f0 = center_values(i - box.lo[0], j - box.lo[1], k - box.lo[2]);
        system.reset();
        kept.clear();
        for (std::int64_t ox = -radius; ox <= radius; ++ox) {
          for (std::int64_t oy = -radius; oy <= radius; ++oy) {
            for (std::int64_t oz = -radius; oz <= radius; ++oz) {
              if (ox == 0 && oy == 0 && oz == 0) continue;
              const std::int64_t o[3] = {ox, oy, oz};
              double point[3];
              double shift[3];
              bool inside = true;
              for (int a = 0; a < 3 && inside; ++a) {
                const double x = c[a] + static_cast<double>(o[a]) * tg.dx[a];
                if (!dom.valid) {
                  point[a] = x;
                  shift[a] = 0.0;
                  continue;
                }
                const math::WrappedCoord w = math::wrap_coordinate(
                    x, dom.lo[static_cast<std::size_t>(a)], dom.length[static_cast<std::size_t>(a)],
                    tg.is_periodic[a]);
                inside = w.inside;
                point[a] = w.x;
                shift[a] = w.shift;
              }
              if (!inside) continue;
              std::int64_t idx[3];
              const SamplePatch* hit = nullptr;
              for (const SamplePatch& s : patches) {
                if (s.locate(point, idx)) {
                  hit = &s;
                  break;
                }
              }
              if (hit == nullptr) continue;
              const std::array<double, 3> pos{cell_center(hit->geom, 0, idx[0]) - shift[0],
                                              cell_center(hit->geom, 1, idx[1]) - shift[1],
                                              cell_center(hit->geom, 2, idx[2]) - shift[2]};
              const bool repeated =
                  std::any_of(kept.begin(), kept.end(), [&pos](const std::array<double, 3>& q) {
                    return std::fabs(q[0] - pos[0]) <= kSamePositionTolerance &&
                           std::fabs(q[1] - pos[1]) <= kSamePositionTolerance &&
                           std::fabs(q[2] - pos[2]) <= kSamePositionTolerance;
                  });
              if (repeated) continue;
              kept.push_back(pos);
              const double r[3] = {pos[0] - c[0], pos[1] - c[1], pos[2] - c[2]};
              system.add(r, hit->at(idx) - f0);
            }
          }
        }
        double g[3];
        math::solve_gradient(system, g);
        for (int a = 0; a < 3; ++a)
          grad(i - box.lo[0], j - box.lo[1], k - box.lo[2], a) = g[a];
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Vorticity (OP-VORT-1)

// Reads a real (nx, ny, nz, 3) gradient by logical index.
class GradientReader {
 public:
  GradientReader(const Buffer& b, std::string_view kernel, std::size_t index, const IndexBox& box)
      : is_f64_(b.scalar() == ScalarType::f64) {
    ks::require_real(b, kernel, ks::input_name(index));
    const Descriptor& d = b.descriptor();
    if (d.rank != 4 || d.extents[3] != 3 ||
        d.extents[0] != static_cast<std::uint64_t>(box.extent(0)) ||
        d.extents[1] != static_cast<std::uint64_t>(box.extent(1)) ||
        d.extents[2] != static_cast<std::uint64_t>(box.extent(2))) {
      fail(ErrorKind::kernel,
           std::string(kernel) + ": " + ks::input_name(index) + " " + d.to_string() +
               " is not a (nx, ny, nz, 3) gradient of block box " + box.to_string());
    }
    if (is_f64_) {
      f64_ = b.view<double>(4);
    } else {
      f32_ = b.view<float>(4);
    }
  }
  void operator()(std::int64_t i, std::int64_t j, std::int64_t k, double g[3]) const {
    for (int c = 0; c < 3; ++c)
      g[c] = is_f64_ ? f64_(i, j, k, c) : static_cast<double>(f32_(i, j, k, c));
  }

 private:
  bool is_f64_;
  GridView<const double> f64_;
  GridView<const float> f32_;
};

void vorticity_kernel(KernelContext& ctx) {
  if (ctx.inputs.size() < 3) {
    fail_kernel_params(ctx.kernel, "vorticity_mag requires three gradient inputs (got " +
                                       std::to_string(ctx.inputs.size()) + ")");
  }
  if (ctx.runmeta != nullptr && ctx.runmeta->coord_sys != 0) {
    fail(ErrorKind::kernel, std::string(ctx.kernel) +
                                ": operator requires Cartesian coordinates (coord_sys=" +
                                std::to_string(ctx.runmeta->coord_sys) + ")");
  }
  const IndexBox& box = ctx.block_box();
  const GradientReader gvx(ks::input_at(ctx, ctx.kernel, 0), ctx.kernel, 0, box);
  const GradientReader gvy(ks::input_at(ctx, ctx.kernel, 1), ctx.kernel, 1, box);
  const GradientReader gvz(ks::input_at(ctx, ctx.kernel, 2), ctx.kernel, 2, box);
  Buffer& out = ks::output_at(ctx, ctx.kernel, 0);
  ks::require_block_grid(out, box, ctx.kernel, "output 0");
  visit_real_mut(out, out.rank(), [&](auto view) {
    using T = std::remove_reference_t<decltype(view(0, 0, 0))>;
    double a[3], b[3], c[3];
    for (std::int64_t i = 0; i < box.extent(0); ++i) {
      for (std::int64_t j = 0; j < box.extent(1); ++j) {
        for (std::int64_t k = 0; k < box.extent(2); ++k) {
          gvx(i, j, k, a);
          gvy(i, j, k, b);
          gvz(i, j, k, c);
          view(i, j, k) = static_cast<T>(math::curl_magnitude(a, b, c));
        }
      }
    }
  });
}

// ---------------------------------------------------------------------------
// Plotfile load (OP-LOAD-1)

bool same_extents(const IndexBox& a, const IndexBox& b) {
  return a.extent(0) == b.extent(0) && a.extent(1) == b.extent(1) && a.extent(2) == b.extent(2);
}

bool same_extents(const Descriptor& d, const IndexBox& box) {
  return d.rank == 3 && d.extents[0] == static_cast<std::uint64_t>(box.extent(0)) &&
         d.extents[1] == static_cast<std::uint64_t>(box.extent(1)) &&
         d.extents[2] == static_cast<std::uint64_t>(box.extent(2));
}

std::string extents_text(const IndexBox& box) {
  return "(" + std::to_string(box.extent(0)) + ", " + std::to_string(box.extent(1)) + ", " +
         std::to_string(box.extent(2)) + ")";
}

void plotfile_load_kernel(KernelContext& ctx) {
  const auto& p = ctx.param<PlotfileLoadParams>();
  if (p.plotfile.empty()) fail_kernel_params(ctx.kernel, "empty plotfile path");
  const IndexBox& box = ctx.block_box();
  Buffer& out = ks::output_at(ctx, ctx.kernel, 0);
  if (out.is_dynamic() || !same_extents(out.descriptor(), box) || !ks::is_real(out.scalar())) {
    fail(ErrorKind::kernel, std::string(ctx.kernel) + ": output 0 " + out.descriptor().to_string() +
                                " must be a real rank-3 grid of block box " + box.to_string());
  }
  const std::shared_ptr<const PlotfileReader> reader = PlotfileReader::open_cached(p.plotfile);
  const auto& levels = reader->levels();
  if (p.level < 0 || static_cast<std::uint64_t>(p.level) >= levels.size()) {
    fail_kernel_params(ctx.kernel, "level " + std::to_string(p.level) +
                                       " is not a level of plotfile " + p.plotfile + " (it has " +
                                       std::to_string(levels.size()) + ")");
  }
  const PlotfileLevel& level = levels[static_cast<std::size_t>(p.level)];
  if (static_cast<std::size_t>(ctx.block) >= level.boxes.size()) {
    fail_kernel_params(ctx.kernel, "block " + std::to_string(ctx.block) +
                                       " is not a FAB of level " + std::to_string(p.level) +
                                       " of plotfile " + p.plotfile + " (it has " +
                                       std::to_string(level.boxes.size()) + ")");
  }
  if (p.comp < 0 || static_cast<std::uint64_t>(p.comp) >= reader->var_names().size()) {
    fail_kernel_params(ctx.kernel, "comp " + std::to_string(p.comp) +
                                       " is not a component of plotfile " + p.plotfile +
                                       " (it has " + std::to_string(reader->var_names().size()) +
                                       ")");
  }
  const IndexBox& fab_box = level.boxes[static_cast<std::size_t>(ctx.block)];
  if (!same_extents(fab_box, box)) {
    fail_kernel_params(ctx.kernel, "FAB " + std::to_string(ctx.block) + " of level " +
                                       std::to_string(p.level) + " has extents " +
                                       extents_text(fab_box) + ", the block box " +
                                       box.to_string() + " has " + extents_text(box));
  }
  BufferPtr data =
      reader->read_component(static_cast<int>(p.level), ctx.block, static_cast<int>(p.comp));
  if (!data || !same_extents(data->descriptor(), box)) {
    fail_kernel_params(ctx.kernel,
                       "FAB " + std::to_string(ctx.block) + " of level " + std::to_string(p.level) +
                           " read as " +
                           (data ? data->descriptor().to_string() : std::string("nothing")) +
                           ", not a grid of the block box " + box.to_string());
  }
  // ALLOC-8: the file's own layout (Fortran order, possibly zero-copy) may
  // stand in for the allocated output when only the strides differ.
  if (data->scalar() == out.scalar()) {
    ctx.outputs[0] = std::move(data);
    return;
  }
  copy_convert(*data, out);
}

}  // namespace

void register_amr_kernels(KernelRegistry& registry) {
  registry.add(make_kernel(std::string(kPlotfileLoad), ParamType::PlotfileLoadParams,
                           plotfile_load_kernel, 0, 1));
  KernelEntry pack = make_kernel(std::string(kSubboxPack), ParamType::AmrSubboxPackParams,
                                 subbox_fetch_pack_kernel, 0, 1, subbox_bound);
  pack.extra_reads = subbox_extra_reads;
  registry.add(std::move(pack));
  registry.add(
      make_kernel(std::string(kGradient), ParamType::GradStencilParams, gradient_kernel, 2, 1));
  registry.add(make_kernel(std::string(kVorticity), ParamType::none, vorticity_kernel, 3, 1));
  amr_family::register_cic_kernels(registry);
}

}  // namespace kangaroo
