// AMR kernels of the AMReX component (OP-GRAD-1..4, OP-VORT-1/2, OP-LOAD-1,
// KREG-6): the packed-halo encoding, amr_subbox_fetch_pack with its extra
// reads and bound, gradU_stencil, vorticity_mag and plotfile_load.
//
// Kernels run both from hand-built KernelContexts and as plans through the
// executor over a MemoryDataset, so the extra reads of amr_subbox_fetch_pack
// are resolved the way a real run resolves them. Expected values come from
// closed forms (affine fields, analytic derivatives, the OP-GRAD-2 formula),
// never from the kernels themselves.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <numbers>
#include <sstream>
#include <string>
#include <vector>

#include "exec_test_support.h"
#include "kangaroo/core/error.h"
#include "kangaroo/kernels/amr_patch.h"
#include "kangaroo/kernels/register.h"
#include "kernel_harness.h"

namespace kangaroo {
namespace {

using exec_testing::cid;
using test::box_of;
using test::throws_with;

constexpr double kTwoPi = 2.0 * std::numbers::pi;

// ---------------------------------------------------------------------------
// Layout helpers

LevelMeta make_level(std::array<double, 3> dx, std::vector<IndexBox> boxes,
                     std::array<bool, 3> periodic = {false, false, false},
                     std::array<std::int32_t, 3> ratio = {2, 2, 2}) {
  LevelMeta l;
  l.geom.dx = dx;
  l.geom.is_periodic = periodic;
  l.geom.ref_ratio = ratio;
  l.boxes = std::move(boxes);
  return l;
}

RunMeta make_run(std::vector<LevelMeta> levels) {
  RunMeta m;
  StepMeta s;
  s.step = 0;
  s.levels = std::move(levels);
  m.steps.push_back(std::move(s));
  return m;
}

double center(const LevelGeom& g, int axis, std::int64_t i) {
  return g.x0[axis] + (static_cast<double>(i - g.index_origin[axis]) + 0.5) * g.dx[axis];
}

using Field = std::function<double(double, double, double)>;

// f64 C-order block grid holding f at the cell centers.
BufferPtr sample_grid(const LevelGeom& g, const IndexBox& box, const Field& f,
                      ScalarType scalar = ScalarType::f64) {
  return test::make_grid(
      box,
      [&](int i, int j, int k) { return f(center(g, 0, i), center(g, 1, j), center(g, 2, k)); },
      scalar);
}

void store_field(MemoryDataset& ds, const RunMeta& meta, std::int32_t field, const Field& f) {
  const StepMeta& s = meta.steps[0];
  for (std::size_t l = 0; l < s.levels.size(); ++l) {
    for (std::size_t b = 0; b < s.levels[l].boxes.size(); ++b) {
      ds.set_chunk(cid(0, static_cast<std::int32_t>(l), field, 0, static_cast<std::int32_t>(b)),
                   sample_grid(s.levels[l].geom, s.levels[l].boxes[b], f));
    }
  }
}

BufferSpec pack_spec() {
  BufferSpec s;
  s.dtype = ScalarType::opaque;
  s.shape = ShapeKind::dynamic;
  s.bound = BoundKind::amr_subbox_pack;
  return s;
}

TaskTemplate pack_template(std::int32_t level, std::int32_t field, std::int32_t halo_field,
                           std::int64_t halo_cells) {
  TaskTemplate t = exec_testing::chunk_template(
      "pack_f" + std::to_string(field) + "_l" + std::to_string(level), "amr_subbox_fetch_pack",
      exec_testing::domain(0, level), {}, {exec_testing::output(halo_field, pack_spec())});
  t.params = AmrSubboxPackParams{field, 0, 0, level, halo_cells};
  return t;
}

TaskTemplate grad_template(std::int32_t level, std::int32_t field, std::int32_t halo_field,
                           std::int32_t grad_field, std::int64_t radius) {
  TaskTemplate t = exec_testing::chunk_template(
      "grad_f" + std::to_string(field) + "_l" + std::to_string(level), "gradU_stencil",
      exec_testing::domain(0, level), {exec_testing::input(field), exec_testing::input(halo_field)},
      {exec_testing::output(grad_field,
                            exec_testing::block_spec(3, ScalarType::f64, InitPolicy::zero))});
  t.params = GradStencilParams{field, 0, 0, level, radius};
  return t;
}

// Field ids of one gradient: value, packed halo, gradient.
struct GradIds {
  std::int32_t field;
  std::int32_t halo;
  std::int32_t grad;
};

// LOW-13 shape: a neighbor_fetch stage, then a gradients stage, per level.
Plan gradient_plan(const RunMeta& meta, const std::vector<GradIds>& ids, std::int64_t radius = 1) {
  std::vector<TaskTemplate> packs;
  std::vector<TaskTemplate> grads;
  const auto levels = static_cast<std::int32_t>(meta.steps[0].levels.size());
  for (const GradIds& g : ids) {
    for (std::int32_t l = 0; l < levels; ++l) {
      packs.push_back(pack_template(l, g.field, g.halo, radius));
      grads.push_back(grad_template(l, g.field, g.halo, g.grad, radius));
    }
  }
  return exec_testing::plan_of(
      {exec_testing::stage("neighbor_fetch", Plane::chunk, std::move(packs)),
       exec_testing::stage("gradients", Plane::chunk, std::move(grads), {0})});
}

struct AmrRun {
  exec_testing::Harness h;
  RunMeta meta;

  explicit AmrRun(RunMeta m) : meta(std::move(m)) { register_default_kernels(h.registry); }
  void run(Plan plan) { h.run(std::move(plan), meta); }
  std::vector<double> values(std::int32_t level, std::int32_t field, std::int32_t block) const {
    return h.values(cid(0, level, field, 0, block));
  }
};

// Visits every cell of every block: fn(level geom, global (i, j, k), linear
// cell index within the block, block values of `field`).
void for_each_cell(const AmrRun& r, std::int32_t field,
                   const std::function<void(const LevelGeom&, std::array<int, 3>, std::size_t,
                                            const std::vector<double>&)>& fn) {
  const StepMeta& s = r.meta.steps[0];
  for (std::size_t l = 0; l < s.levels.size(); ++l) {
    for (std::size_t b = 0; b < s.levels[l].boxes.size(); ++b) {
      const IndexBox& box = s.levels[l].boxes[b];
      const std::vector<double> v =
          r.values(static_cast<std::int32_t>(l), field, static_cast<std::int32_t>(b));
      std::size_t n = 0;
      for (int i = box.lo[0]; i <= box.hi[0]; ++i) {
        for (int j = box.lo[1]; j <= box.hi[1]; ++j) {
          for (int k = box.lo[2]; k <= box.hi[2]; ++k)
            fn(s.levels[l].geom, {i, j, k}, n++, v);
        }
      }
    }
  }
}

// Two levels over [0, 1]^3: level 0 is 8^3 in two blocks split along x,
// level 1 refines the middle of the domain by 2 in two blocks, so there are
// coarse-fine interfaces on every face and a fine-fine block boundary.
RunMeta two_level_3d(std::array<bool, 3> periodic = {false, false, false}, int n = 8) {
  const double dx0 = 1.0 / n;
  const int h = n / 2;
  LevelMeta l0 = make_level(
      {dx0, dx0, dx0},
      {box_of({0, 0, 0}, {h - 1, n - 1, n - 1}), box_of({h, 0, 0}, {n - 1, n - 1, n - 1})},
      periodic);
  const int q = n / 4;
  LevelMeta l1 =
      make_level({dx0 / 2, dx0 / 2, dx0 / 2},
                 {box_of({2 * q, 2 * q, 2 * q}, {n - 1, 2 * (n - q) - 1, 2 * (n - q) - 1}),
                  box_of({n, 2 * q, 2 * q}, {2 * (n - q) - 1, 2 * (n - q) - 1, 2 * (n - q) - 1})},
                 periodic);
  return make_run({l0, l1});
}

// ---------------------------------------------------------------------------
// Hand-built contexts

struct HandContext {
  RunMeta meta;
  KernelRegistry registry;
  std::vector<ConstBufferPtr> inputs;
  std::vector<BufferPtr> outputs;
  KernelParams params;
  std::vector<ChunkId> extra_ids;
  std::vector<ConstBufferPtr> extra_chunks;
  std::int32_t level = 0;
  std::int32_t block = 0;

  explicit HandContext(RunMeta m) : meta(std::move(m)) { register_default_kernels(registry); }

  KernelContext context(std::string_view kernel) {
    KernelContext ctx;
    ctx.kernel = kernel;
    ctx.runmeta = &meta;
    ctx.level_meta = meta.find_level(0, level);
    ctx.step = 0;
    ctx.level = level;
    ctx.block = block;
    ctx.inputs = inputs;
    ctx.outputs = outputs;
    ctx.params = &params;
    ctx.extra_ids = extra_ids;
    ctx.extra_chunks = extra_chunks;
    return ctx;
  }
  void run(std::string_view kernel) {
    KernelContext ctx = context(kernel);
    registry.find(kernel).fn(ctx);
  }
  // What the executor does for amr_subbox_fetch_pack: ask for the extra
  // reads and resolve them from `source`.
  void resolve_extra_reads(const std::function<ConstBufferPtr(const ChunkId&)>& source) {
    ExtraReadQuery q;
    q.runmeta = &meta;
    q.step = 0;
    q.level = level;
    q.block = block;
    q.params = &params;
    extra_ids.clear();
    registry.find("amr_subbox_fetch_pack").extra_reads(q, extra_ids);
    extra_chunks.clear();
    for (const ChunkId& id : extra_ids)
      extra_chunks.push_back(source(id));
  }
  std::optional<std::uint64_t> bound(const std::function<std::uint64_t(const ChunkId&)>& estimate) {
    BoundQuery q;
    q.dtype = ScalarType::opaque;
    q.runmeta = &meta;
    q.estimate_bytes = estimate;
    q.step = 0;
    q.level = level;
    q.block = block;
    q.params = &params;
    return registry.find("amr_subbox_fetch_pack").bound(q);
  }
};

BufferPtr opaque_dynamic(std::uint64_t capacity) {
  return Buffer::allocate_dynamic(ScalarType::opaque, capacity, InitPolicy::zero);
}

BufferPtr opaque_payload(const std::vector<std::byte>& bytes) {
  return Buffer::from_bytes(Descriptor::opaque_bytes(bytes.size()), bytes);
}

// ---------------------------------------------------------------------------
// Patch encoding

TEST(AmrPatch, RoundTripKeepsGeometryAndValuesOfAStridedSource_OPGRAD1) {
  LevelGeom g;
  g.dx = {0.5, 0.25, 2.0};
  g.x0 = {-1.0, 3.0, 0.5};
  g.index_origin = {2, -1, 0};
  g.is_periodic = {true, false, true};
  const IndexBox source_box = box_of({2, -1, 0}, {5, 1, 2});
  std::vector<double> vals;
  for (int i = 2; i <= 5; ++i) {
    for (int j = -1; j <= 1; ++j) {
      for (int k = 0; k <= 2; ++k)
        vals.push_back(100.0 * i + 10.0 * j + k);
    }
  }
  // Fortran order, f32: the patch must still hold logical elements.
  const BufferPtr source = test::make_fortran(ScalarType::f32, {4, 3, 3}, vals);
  AmrPatchEncoder enc;
  enc.add_subbox(3, g, *source, source_box, box_of({3, 0, 1}, {5, 1, 2}));
  enc.add_subbox(1, g, *source, source_box, box_of({2, -1, 0}, {2, -1, 0}));
  const std::vector<std::byte> payload = enc.finish();
  EXPECT_EQ(payload.size(), enc.payload_bytes());

  const std::vector<AmrPatchView> patches = decode_amr_patches(payload);
  ASSERT_EQ(patches.size(), 2u);
  const AmrPatchView& p = patches[0];
  EXPECT_EQ(p.level, 3);
  EXPECT_EQ(p.box, box_of({3, 0, 1}, {5, 1, 2}));
  EXPECT_EQ(p.geom.dx, g.dx);
  EXPECT_EQ(p.geom.x0, g.x0);
  EXPECT_EQ(p.geom.index_origin, g.index_origin);
  EXPECT_EQ(p.geom.is_periodic, g.is_periodic);
  EXPECT_EQ(p.descriptor.scalar, ScalarType::f32);
  EXPECT_EQ(p.descriptor.rank, 3);
  EXPECT_TRUE(p.descriptor.is_c_contiguous());
  for (int i = 3; i <= 5; ++i) {
    for (int j = 0; j <= 1; ++j) {
      for (int k = 1; k <= 2; ++k)
        EXPECT_EQ(p.value(i, j, k), 100.0 * i + 10.0 * j + k);
    }
  }
  EXPECT_EQ(patches[1].level, 1);
  EXPECT_EQ(patches[1].value(2, -1, 0), 190.0);
}

TEST(AmrPatch, EmptyListStillHasAHeader_OPGRAD1) {
  const AmrPatchEncoder enc;
  const std::vector<std::byte> payload = enc.finish();
  EXPECT_EQ(payload.size(), kAmrPatchHeaderBytes);
  EXPECT_TRUE(decode_amr_patches(payload).empty());
}

std::vector<std::byte> sample_payload() {
  LevelGeom g;
  const BufferPtr src = test::make_grid(box_of({0, 0, 0}, {2, 1, 1}),
                                        [](int i, int j, int k) { return i + 2.0 * j + 3.0 * k; });
  AmrPatchEncoder enc;
  enc.add_subbox(0, g, *src, box_of({0, 0, 0}, {2, 1, 1}), box_of({0, 0, 0}, {2, 1, 1}));
  enc.add_subbox(1, g, *src, box_of({0, 0, 0}, {2, 1, 1}), box_of({1, 1, 1}, {2, 1, 1}));
  return enc.finish();
}

TEST(AmrPatch, EveryTruncationFailsAsIncomplete_OPGRAD1) {
  const std::vector<std::byte> payload = sample_payload();
  for (std::size_t n = 0; n < payload.size(); ++n) {
    const std::span<const std::byte> cut(payload.data(), n);
    EXPECT_TRUE(
        throws_with([&] { (void)decode_amr_patches(cut); }, "AMR patch record is incomplete"))
        << "prefix of " << n << " bytes";
  }
  EXPECT_EQ(decode_amr_patches(payload).size(), 2u);
}

template <class T>
void poke(std::vector<std::byte>& bytes, std::size_t offset, T value) {
  std::memcpy(bytes.data() + offset, &value, sizeof(T));
}

TEST(AmrPatch, MalformedPayloadsFail_OPGRAD1) {
  const std::vector<std::byte> good = sample_payload();
  // Offsets inside the first record (after the 16-byte header).
  constexpr std::size_t rec = kAmrPatchHeaderBytes;
  constexpr std::size_t box_hi = rec + 8 + 4 + 12;
  constexpr std::size_t scalar_at = rec + 8 + 4 + 24 + 48 + 12 + 3;
  constexpr std::size_t rank_at = scalar_at + 1;
  constexpr std::size_t strides_at = rec + 8 + 4 + 24 + 48 + 12 + 8 + 24;

  auto bad = good;
  poke<std::uint32_t>(bad, 0, 0x12345678);
  EXPECT_TRUE(throws_with([&] { (void)decode_amr_patches(bad); }, "unknown magic number"));

  bad = good;
  poke<std::uint32_t>(bad, 4, 7);
  EXPECT_TRUE(throws_with([&] { (void)decode_amr_patches(bad); }, "version 7 is not supported"));

  bad = good;
  poke<std::uint64_t>(bad, 8, 3);
  EXPECT_TRUE(
      throws_with([&] { (void)decode_amr_patches(bad); }, "AMR patch record is incomplete"));

  bad = good;
  poke<std::uint64_t>(bad, 8, 1);
  EXPECT_TRUE(throws_with([&] { (void)decode_amr_patches(bad); }, "trailing bytes"));

  bad = good;
  bad.push_back(std::byte{0});
  EXPECT_TRUE(throws_with([&] { (void)decode_amr_patches(bad); }, "trailing bytes"));

  bad = good;
  poke<std::uint64_t>(bad, rec, 1u << 20);
  EXPECT_TRUE(
      throws_with([&] { (void)decode_amr_patches(bad); }, "AMR patch record is incomplete"));

  bad = good;
  poke<std::int32_t>(bad, box_hi, 5);  // box no longer matches the grid extents
  EXPECT_TRUE(throws_with([&] { (void)decode_amr_patches(bad); }, "does not match its box"));

  bad = good;
  poke<std::uint8_t>(bad, scalar_at, 0);  // opaque
  EXPECT_TRUE(throws_with([&] { (void)decode_amr_patches(bad); }, "numeric rank-3 grid"));

  bad = good;
  poke<std::uint8_t>(bad, rank_at, 2);
  EXPECT_TRUE(throws_with([&] { (void)decode_amr_patches(bad); }, "numeric rank-3 grid"));

  bad = good;
  poke<std::int64_t>(bad, strides_at, 4);  // not a dense layout of 8-byte elements
  EXPECT_TRUE(throws_with([&] { (void)decode_amr_patches(bad); }, "invalid buffer"));
}

// ---------------------------------------------------------------------------
// amr_subbox_fetch_pack: planning, extra reads, bound, packing

// One level of two 4^3 blocks along x, and a level-1 block refining the
// middle; the field value encodes (level, i, j, k).
RunMeta pack_layout(bool periodic_x) {
  LevelMeta l0 =
      make_level({1.0, 1.0, 1.0}, {box_of({0, 0, 0}, {3, 3, 3}), box_of({4, 0, 0}, {7, 3, 3})},
                 {periodic_x, false, false});
  LevelMeta l1 =
      make_level({0.5, 0.5, 0.5}, {box_of({6, 2, 2}, {9, 5, 5})}, {periodic_x, false, false});
  return make_run({l0, l1});
}

double code(int level, int i, int j, int k) {
  return level * 1e6 + i * 1e4 + j * 1e2 + k;
}

ConstBufferPtr code_chunk(const RunMeta& meta, const ChunkId& id) {
  const IndexBox& box = meta.steps[0]
                            .levels[static_cast<std::size_t>(id.level)]
                            .boxes[static_cast<std::size_t>(id.block)];
  const int level = id.level;
  return test::make_grid(box, [level](int i, int j, int k) { return code(level, i, j, k); });
}

struct PackedPatch {
  int level;
  IndexBox box;
};

std::vector<PackedPatch> run_pack(HandContext& c, std::vector<AmrPatchView>* views_out = nullptr,
                                  BufferPtr* out_buffer = nullptr) {
  c.resolve_extra_reads([&](const ChunkId& id) { return code_chunk(c.meta, id); });
  const auto cap = c.bound([&](const ChunkId& id) { return code_chunk(c.meta, id)->byte_size(); });
  EXPECT_TRUE(cap.has_value());
  c.outputs = {opaque_dynamic(cap.value_or(0))};
  c.run("amr_subbox_fetch_pack");
  EXPECT_TRUE(c.outputs[0]->is_committed());
  EXPECT_LE(c.outputs[0]->byte_size(), *cap);
  const std::vector<AmrPatchView> views = decode_amr_patches(c.outputs[0]->bytes());
  std::vector<PackedPatch> out;
  for (const AmrPatchView& v : views) {
    out.push_back({v.level, v.box});
    for (int i = v.box.lo[0]; i <= v.box.hi[0]; ++i) {
      for (int j = v.box.lo[1]; j <= v.box.hi[1]; ++j) {
        for (int k = v.box.lo[2]; k <= v.box.hi[2]; ++k)
          EXPECT_EQ(v.value(i, j, k), code(v.level, i, j, k));
      }
    }
  }
  if (views_out != nullptr) *views_out = views;
  if (out_buffer != nullptr) *out_buffer = c.outputs[0];
  return out;
}

TEST(SubboxPack, HaloOfABlockCoversAllLevelsExceptItself_OPGRAD1) {
  HandContext c(pack_layout(false));
  c.params = AmrSubboxPackParams{7, 0, 0, 0, 1};
  c.block = 0;
  c.resolve_extra_reads([&](const ChunkId& id) { return code_chunk(c.meta, id); });
  // Block 0 of level 0 itself is not read; level 0 block 1 and the level-1
  // block are, in (level, block) order, at the input field and step.
  EXPECT_EQ(c.extra_ids, (std::vector<ChunkId>{cid(0, 0, 7, 0, 1), cid(0, 1, 7, 0, 0)}));

  const std::vector<PackedPatch> patches = run_pack(c);
  ASSERT_EQ(patches.size(), 2u);
  // Query region [-1, 5]^3 (box [0,3] grown by one cell): COORD-2 of both
  // corners on level 0 is [-1, 5], so block 1 contributes x in [4, 5];
  // on level 1 it is [-2, 10], cut to the fine block.
  EXPECT_EQ(patches[0].level, 0);
  EXPECT_EQ(patches[0].box, box_of({4, 0, 0}, {5, 3, 3}));
  EXPECT_EQ(patches[1].level, 1);
  EXPECT_EQ(patches[1].box, box_of({6, 2, 2}, {9, 5, 5}));
}

TEST(SubboxPack, BoundFollowsTheReferenceFormula_OPGRAD2_KREG6) {
  HandContext c(pack_layout(false));
  c.params = AmrSubboxPackParams{7, 0, 0, 0, 1};
  // f32 sources of 4 bytes per cell, plus an estimate that does not divide
  // evenly (rounded up per cell).
  const auto estimate = [](const ChunkId& id) -> std::uint64_t {
    return id.level == 0 ? 64 * 4 : 64 * 8 + 3;
  };
  // 64 + (512 + 2*4*4 cells * 4 B) + (512 + 64 cells * ceil(515 / 64) = 9 B).
  EXPECT_EQ(c.bound(estimate), 64u + (512u + 32u * 4u) + (512u + 64u * 9u));

  BoundQuery q;
  q.dtype = ScalarType::f64;  // capacity in elements of the output dtype
  q.runmeta = &c.meta;
  q.estimate_bytes = estimate;
  q.params = &c.params;
  const std::uint64_t bytes = 64u + (512u + 32u * 4u) + (512u + 64u * 9u);
  EXPECT_EQ(c.registry.find("amr_subbox_fetch_pack").bound(q), (bytes + 7) / 8);
}

TEST(SubboxPack, UnknownSourceSizeFailsTheBound_OPGRAD2) {
  HandContext c(pack_layout(false));
  c.params = AmrSubboxPackParams{7, 0, 0, 0, 1};
  EXPECT_TRUE(throws_with([&] { (void)c.bound([](const ChunkId&) -> std::uint64_t { return 0; }); },
                          "cannot estimate AMR source Chunk Buffer s0_l0_f7_v0_b1"));
  EXPECT_TRUE(
      throws_with([&] { (void)c.bound(nullptr); }, "cannot estimate AMR source Chunk Buffer"));
}

TEST(SubboxPack, PeriodicAxesAddTheWrappedImages_OPGRAD1) {
  HandContext c(pack_layout(true));
  c.params = AmrSubboxPackParams{7, 0, 0, 0, 1};
  c.block = 0;
  const std::vector<PackedPatch> patches = run_pack(c);
  // The x-domain is [0, 8): the region [-1, 5] sticks out below, so its
  // image [7, 13] is requested too and block 1 gives its last plane.
  ASSERT_EQ(patches.size(), 3u);
  EXPECT_EQ(patches[0].box, box_of({4, 0, 0}, {5, 3, 3}));
  EXPECT_EQ(patches[1].box, box_of({7, 0, 0}, {7, 3, 3}));
  EXPECT_EQ(patches[2].level, 1);

  // Block 1 wraps onto block 0's first plane; its own cells stay out.
  c.block = 1;
  const std::vector<PackedPatch> other = run_pack(c);
  // Its region [3, 9] gives block 0's last plane; the image [-5, 1] gives
  // cells 0 and 1 (COORD-2 of the upper corner lands one cell past it).
  ASSERT_GE(other.size(), 2u);
  EXPECT_EQ(other[0].box, box_of({3, 0, 0}, {3, 3, 3}));
  EXPECT_EQ(other[1].box, box_of({0, 0, 0}, {1, 3, 3}));
}

TEST(SubboxPack, HaloWiderThanThePeriodTakesTheWholeDomainOnce_OPGRAD1) {
  HandContext c(pack_layout(true));
  c.params = AmrSubboxPackParams{7, 0, 0, 0, 9};
  c.block = 0;
  const std::vector<PackedPatch> patches = run_pack(c);
  ASSERT_EQ(patches.size(), 2u);
  EXPECT_EQ(patches[0].box, box_of({4, 0, 0}, {7, 3, 3}));
  EXPECT_EQ(patches[1].box, box_of({6, 2, 2}, {9, 5, 5}));
}

TEST(SubboxPack, SourcesWithoutDataAreSkipped_SUBBOX4) {
  HandContext c(pack_layout(false));
  c.params = AmrSubboxPackParams{7, 0, 0, 0, 1};
  c.resolve_extra_reads([&](const ChunkId& id) -> ConstBufferPtr {
    if (id.level == 1) return opaque_payload({std::byte{1}, std::byte{2}});
    return code_chunk(c.meta, id);
  });
  c.outputs = {opaque_dynamic(4096)};
  c.run("amr_subbox_fetch_pack");
  const auto views = decode_amr_patches(c.outputs[0]->bytes());
  ASSERT_EQ(views.size(), 1u);
  EXPECT_EQ(views[0].level, 0);
}

TEST(SubboxPack, InvalidParametersFailEverywhere_OPGRAD1_OPGEN3) {
  HandContext c(pack_layout(false));
  const auto fails = [&](const AmrSubboxPackParams& p, std::string_view needle) {
    c.params = p;
    c.outputs = {opaque_dynamic(4096)};
    EXPECT_TRUE(throws_with([&] { c.run("amr_subbox_fetch_pack"); }, needle));
    EXPECT_TRUE(throws_with([&] { c.resolve_extra_reads([](const ChunkId&) { return nullptr; }); },
                            needle));
    EXPECT_TRUE(throws_with(
        [&] { (void)c.bound([](const ChunkId&) -> std::uint64_t { return 8; }); }, needle));
  };
  fails(AmrSubboxPackParams{-1, 0, 0, 0, 1},
        "amr_subbox_fetch_pack: invalid parameters: input_field");
  fails(AmrSubboxPackParams{7, 0, 5, 0, 1},
        "amr_subbox_fetch_pack: invalid parameters: input_step 5");
  fails(AmrSubboxPackParams{7, 0, 0, 2, 1},
        "amr_subbox_fetch_pack: invalid parameters: input_level 2");
  fails(AmrSubboxPackParams{7, 0, 0, -1, 1},
        "amr_subbox_fetch_pack: invalid parameters: input_level -1");
  c.block = 9;
  fails(AmrSubboxPackParams{7, 0, 0, 0, 1}, "invalid parameters: block 9");
}

TEST(SubboxPack, MissingSourceOrWrongOutputFails_OPGRAD1) {
  HandContext c(pack_layout(false));
  c.params = AmrSubboxPackParams{7, 0, 0, 0, 1};
  c.outputs = {opaque_dynamic(4096)};
  EXPECT_TRUE(
      throws_with([&] { c.run("amr_subbox_fetch_pack"); }, "halo source chunk s0_l0_f7_v0_b1"));
  c.resolve_extra_reads([&](const ChunkId& id) { return code_chunk(c.meta, id); });
  c.outputs = {Buffer::allocate(Descriptor::opaque_bytes(4096), InitPolicy::zero)};
  EXPECT_TRUE(throws_with([&] { c.run("amr_subbox_fetch_pack"); }, "opaque dynamic buffer"));
  c.outputs = {opaque_dynamic(100)};
  EXPECT_TRUE(
      throws_with([&] { c.run("amr_subbox_fetch_pack"); }, "source size estimates were too small"));
}

// ---------------------------------------------------------------------------
// gradU_stencil through the executor

TEST(Gradient, AffineFieldIsExactAcrossCoarseFineInterfaces_OPGRAD4) {
  AmrRun r(two_level_3d());
  const double a = 1.25;
  const std::array<double, 3> b{2.0, -3.5, 0.75};
  store_field(*r.h.dataset, r.meta, 1,
              [&](double x, double y, double z) { return a + b[0] * x + b[1] * y + b[2] * z; });
  r.run(gradient_plan(r.meta, {{1, 2, 3}}));
  std::size_t cells = 0;
  for_each_cell(
      r, 3,
      [&](const LevelGeom&, std::array<int, 3> c, std::size_t n, const std::vector<double>& g) {
        for (int d = 0; d < 3; ++d) {
          EXPECT_NEAR(g[3 * n + static_cast<std::size_t>(d)], b[static_cast<std::size_t>(d)],
                      1e-12 * 3.5)
              << "cell " << c[0] << "," << c[1] << "," << c[2] << " component " << d;
        }
        ++cells;
      });
  EXPECT_EQ(cells, 2u * 512u);
}

TEST(Gradient, AffineFieldIsExactWithAWiderStencil_OPGRAD3) {
  AmrRun r(two_level_3d());
  store_field(*r.h.dataset, r.meta, 1,
              [](double x, double y, double z) { return -4.0 * x + y + 9.0 * z; });
  r.run(gradient_plan(r.meta, {{1, 2, 3}}, 2));
  for_each_cell(
      r, 3, [&](const LevelGeom&, std::array<int, 3>, std::size_t n, const std::vector<double>& g) {
        EXPECT_NEAR(g[3 * n + 0], -4.0, 1e-11);
        EXPECT_NEAR(g[3 * n + 1], 1.0, 1e-11);
        EXPECT_NEAR(g[3 * n + 2], 9.0, 1e-11);
      });
}

TEST(Gradient, TwoDimensionalLayoutSolvesOnlyTheAxesWithSamples_OPGRAD3) {
  // COORD-4 style 2D data: z has one unit cell on every level, ratio 1.
  LevelMeta l0 =
      make_level({0.25, 0.25, 1.0}, {box_of({0, 0, 0}, {3, 7, 0}), box_of({4, 0, 0}, {7, 7, 0})},
                 {false, false, false}, {2, 2, 1});
  LevelMeta l1 = make_level({0.125, 0.125, 1.0}, {box_of({4, 4, 0}, {11, 9, 0})},
                            {false, false, false}, {1, 1, 1});
  AmrRun r(make_run({l0, l1}));
  store_field(*r.h.dataset, r.meta, 1,
              [](double x, double y, double) { return 3.0 + 2.0 * x - 5.0 * y; });
  r.run(gradient_plan(r.meta, {{1, 2, 3}}));
  for_each_cell(
      r, 3, [&](const LevelGeom&, std::array<int, 3>, std::size_t n, const std::vector<double>& g) {
        EXPECT_NEAR(g[3 * n + 0], 2.0, 1e-12);
        EXPECT_NEAR(g[3 * n + 1], -5.0, 1e-12);
        EXPECT_EQ(g[3 * n + 2], 0.0);
      });
}

TEST(Gradient, OneDimensionalLayoutSolvesOnlyX_OPGRAD3) {
  LevelMeta l0 =
      make_level({0.1, 1.0, 1.0}, {box_of({0, 0, 0}, {4, 0, 0}), box_of({5, 0, 0}, {9, 0, 0})},
                 {false, false, false}, {2, 1, 1});
  LevelMeta l1 = make_level({0.05, 1.0, 1.0}, {box_of({6, 0, 0}, {13, 0, 0})},
                            {false, false, false}, {1, 1, 1});
  AmrRun r(make_run({l0, l1}));
  store_field(*r.h.dataset, r.meta, 1, [](double x, double, double) { return 1.0 + 4.0 * x; });
  r.run(gradient_plan(r.meta, {{1, 2, 3}}));
  for_each_cell(
      r, 3, [&](const LevelGeom&, std::array<int, 3>, std::size_t n, const std::vector<double>& g) {
        EXPECT_NEAR(g[3 * n + 0], 4.0, 1e-12);
        EXPECT_EQ(g[3 * n + 1], 0.0);
        EXPECT_EQ(g[3 * n + 2], 0.0);
      });
}

// f = sin(2 pi x) on a periodic x-domain of n cells (two blocks), 4 cells in
// y and a unit z axis. With every sample present the least-squares
// x-derivative is sin(2 pi dx) / dx * cos(2 pi x) at every cell; that holds
// at the domain edges only if the wrapped samples sit one cell outside the
// domain (shifted positions), not at their wrapped cell centers.
std::vector<double> periodic_sine_gradient_x(bool periodic, int n) {
  const double dx = 1.0 / n;
  LevelMeta l0 = make_level(
      {dx, 0.25, 1.0}, {box_of({0, 0, 0}, {n / 2 - 1, 3, 0}), box_of({n / 2, 0, 0}, {n - 1, 3, 0})},
      {periodic, false, false}, {1, 1, 1});
  AmrRun r(make_run({l0}));
  store_field(*r.h.dataset, r.meta, 1,
              [](double x, double, double) { return std::sin(kTwoPi * x); });
  r.run(gradient_plan(r.meta, {{1, 2, 3}}));
  std::vector<double> gx(static_cast<std::size_t>(n), 0.0);
  for_each_cell(
      r, 3,
      [&](const LevelGeom&, std::array<int, 3> c, std::size_t m, const std::vector<double>& g) {
        if (c[1] == 1) gx[static_cast<std::size_t>(c[0])] = g[3 * m];
        EXPECT_EQ(g[3 * m + 2], 0.0);
      });
  return gx;
}

TEST(Gradient, PeriodicWrapUsesShiftedSamplePositions_OPGRAD3) {
  const int n = 16;
  const double dx = 1.0 / n;
  const std::vector<double> gx = periodic_sine_gradient_x(true, n);
  for (int i = 0; i < n; ++i) {
    const double expected = std::sin(kTwoPi * dx) / dx * std::cos(kTwoPi * (i + 0.5) * dx);
    EXPECT_NEAR(gx[static_cast<std::size_t>(i)], expected, 1e-12) << "cell " << i;
  }
  // Without periodicity the edge cells are one-sided and differ.
  const std::vector<double> open = periodic_sine_gradient_x(false, n);
  EXPECT_GT(std::fabs(open[0] - gx[0]), 1e-3);
  EXPECT_NEAR(open[5], gx[5], 1e-12);
}

// Max |error| of the gradient of sin(2 pi x) cos(2 pi y) on a doubly
// periodic 2D layout with a refined middle (coarse n x n).
double smooth_gradient_error(int n) {
  const double dx = 1.0 / n;
  const std::array<bool, 3> periodic{true, true, false};
  LevelMeta l0 = make_level(
      {dx, dx, 1.0},
      {box_of({0, 0, 0}, {n / 2 - 1, n - 1, 0}), box_of({n / 2, 0, 0}, {n - 1, n - 1, 0})},
      periodic, {2, 2, 1});
  LevelMeta l1 = make_level({dx / 2, dx / 2, 1.0},
                            {box_of({n / 2, n / 2, 0}, {3 * n / 2 - 1, 3 * n / 2 - 1, 0})},
                            periodic, {1, 1, 1});
  AmrRun r(make_run({l0, l1}));
  store_field(*r.h.dataset, r.meta, 1, [](double x, double y, double) {
    return std::sin(kTwoPi * x) * std::cos(kTwoPi * y);
  });
  r.run(gradient_plan(r.meta, {{1, 2, 3}}));
  double err = 0.0;
  for_each_cell(
      r, 3,
      [&](const LevelGeom& g, std::array<int, 3> c, std::size_t m, const std::vector<double>& v) {
        const double x = center(g, 0, c[0]);
        const double y = center(g, 1, c[1]);
        const double gx = kTwoPi * std::cos(kTwoPi * x) * std::cos(kTwoPi * y);
        const double gy = -kTwoPi * std::sin(kTwoPi * x) * std::sin(kTwoPi * y);
        err = std::max(
            {err, std::fabs(v[3 * m] - gx), std::fabs(v[3 * m + 1] - gy), std::fabs(v[3 * m + 2])});
      });
  return err;
}

TEST(Gradient, SmoothPeriodicErrorDecreasesWithResolution_OPVORT2) {
  const double coarse = smooth_gradient_error(16);
  const double fine = smooth_gradient_error(32);
  RecordProperty("max_error_n16", std::to_string(coarse));
  RecordProperty("max_error_n32", std::to_string(fine));
  EXPECT_LT(coarse, 2.0);  // sanity: ~|grad| = 2 pi would mean garbage
  // The max norm is dominated by the coarse-fine interfaces, where the fit
  // is only first order (about 2.2x smaller per halving here).
  EXPECT_LT(fine, 0.6 * coarse) << "coarse " << coarse << " fine " << fine;
}

// ---------------------------------------------------------------------------
// gradU_stencil from hand-built contexts

HandContext single_block_gradient_context() {
  HandContext c(make_run({make_level({1.0, 1.0, 1.0}, {box_of({0, 0, 0}, {2, 2, 2})})}));
  c.params = GradStencilParams{1, 0, 0, 0, 1};
  c.inputs = {test::make_grid(box_of({0, 0, 0}, {2, 2, 2}),
                              [](int i, int j, int k) { return i + 2.0 * j + 3.0 * k; }),
              opaque_payload(AmrPatchEncoder().finish())};
  c.outputs = {test::make_buffer(ScalarType::f64, {3, 3, 3, 3})};
  return c;
}

TEST(Gradient, BlockAloneNeedsNoHaloPatches_OPGRAD3) {
  HandContext c = single_block_gradient_context();
  c.run("gradU_stencil");
  const std::vector<double> g = test::values_of(*c.outputs[0]);
  for (std::size_t n = 0; n < 27; ++n) {
    EXPECT_NEAR(g[3 * n], 1.0, 1e-13);
    EXPECT_NEAR(g[3 * n + 1], 2.0, 1e-13);
    EXPECT_NEAR(g[3 * n + 2], 3.0, 1e-13);
  }
}

TEST(Gradient, SingleCellWithoutNeighborsHasZeroGradient_OPGRAD3) {
  HandContext c(make_run({make_level({1.0, 1.0, 1.0}, {box_of({0, 0, 0}, {0, 0, 0})})}));
  c.params = GradStencilParams{1, 0, 0, 0, 1};
  c.inputs = {test::make_grid(box_of({0, 0, 0}, {0, 0, 0}), [](int, int, int) { return 5.0; }),
              opaque_payload(AmrPatchEncoder().finish())};
  c.outputs = {test::make_buffer(ScalarType::f64, {1, 1, 1, 3})};
  c.run("gradU_stencil");
  EXPECT_EQ(test::values_of(*c.outputs[0]), (std::vector<double>{0.0, 0.0, 0.0}));
}

TEST(Gradient, ErrorPaths_OPGRAD3_OPGEN3) {
  {
    HandContext c = single_block_gradient_context();
    c.inputs.pop_back();
    EXPECT_TRUE(throws_with([&] { c.run("gradU_stencil"); },
                            "gradU_stencil: invalid parameters: gradU_stencil "
                            "requires two inputs"));
  }
  {
    HandContext c = single_block_gradient_context();
    c.params = GradStencilParams{1, 0, 3, 0, 1};
    EXPECT_TRUE(throws_with([&] { c.run("gradU_stencil"); }, "invalid parameters: input_step 3"));
    c.params = GradStencilParams{1, 0, 0, 1, 1};
    EXPECT_TRUE(throws_with([&] { c.run("gradU_stencil"); }, "invalid parameters: input_level 1"));
    c.params = GradStencilParams{1, 0, 0, 0, 9};
    EXPECT_TRUE(throws_with([&] { c.run("gradU_stencil"); }, "invalid parameters: stencil_radius"));
  }
  {
    HandContext c = single_block_gradient_context();
    std::vector<std::byte> payload = AmrPatchEncoder().finish();
    payload.resize(payload.size() - 3);
    c.inputs[1] = opaque_payload(payload);
    EXPECT_TRUE(throws_with([&] { c.run("gradU_stencil"); }, "AMR patch record is incomplete"));
  }
  {
    HandContext c = single_block_gradient_context();
    c.outputs = {test::make_buffer(ScalarType::f64, {3, 3, 3})};
    EXPECT_TRUE(throws_with([&] { c.run("gradU_stencil"); }, "must be f64 (nx, ny, nz, 3)"));
  }
  {
    HandContext c = single_block_gradient_context();
    c.inputs[0] = test::make_buffer(ScalarType::i64, {3, 3, 3});
    EXPECT_TRUE(throws_with([&] { c.run("gradU_stencil"); },
                            "real-buffer visitor accepts only f32 and f64"));
  }
}

// ---------------------------------------------------------------------------
// vorticity_mag

TEST(Vorticity, AffineVelocityGivesItsConstantCurlEverywhere_OPVORT2) {
  AmrRun r(two_level_3d());
  // v = v0 + M x; curl = (M21 - M12, M02 - M20, M10 - M01).
  const double m[3][3] = {{0.5, -1.0, 2.0}, {3.0, -0.25, 0.5}, {-1.5, 4.0, 1.0}};
  const double v0[3] = {1.0, -2.0, 0.5};
  for (int c = 0; c < 3; ++c) {
    store_field(*r.h.dataset, r.meta, 10 + c, [&, c](double x, double y, double z) {
      return v0[c] + m[c][0] * x + m[c][1] * y + m[c][2] * z;
    });
  }
  Plan plan = gradient_plan(r.meta, {{10, 20, 30}, {11, 21, 31}, {12, 22, 32}});
  std::vector<TaskTemplate> vort;
  for (std::int32_t l = 0; l < 2; ++l) {
    vort.push_back(exec_testing::chunk_template(
        "vortmag_l" + std::to_string(l), "vorticity_mag", exec_testing::domain(0, l),
        {exec_testing::input(30), exec_testing::input(31), exec_testing::input(32)},
        {exec_testing::output(40,
                              exec_testing::block_spec(1, ScalarType::f64, InitPolicy::zero))}));
  }
  plan.stages.push_back(exec_testing::stage("vortmag", Plane::chunk, std::move(vort), {1}));
  r.run(std::move(plan));
  const double w[3] = {m[2][1] - m[1][2], m[0][2] - m[2][0], m[1][0] - m[0][1]};
  const double expected = std::sqrt(w[0] * w[0] + w[1] * w[1] + w[2] * w[2]);
  std::size_t cells = 0;
  for_each_cell(
      r, 40,
      [&](const LevelGeom&, std::array<int, 3>, std::size_t n, const std::vector<double>& v) {
        EXPECT_NEAR(v[n], expected, 1e-12 * expected);
        ++cells;
      });
  EXPECT_EQ(cells, 1024u);
}

// Aggregate (RMS) vorticity error of v = (sin 2pi y, sin 2pi z, sin 2pi x)
// on a triply periodic two-level layout of coarse size n.
double smooth_vorticity_error(int n) {
  AmrRun r(two_level_3d({true, true, true}, n));
  store_field(*r.h.dataset, r.meta, 10,
              [](double, double y, double) { return std::sin(kTwoPi * y); });
  store_field(*r.h.dataset, r.meta, 11,
              [](double, double, double z) { return std::sin(kTwoPi * z); });
  store_field(*r.h.dataset, r.meta, 12,
              [](double x, double, double) { return std::sin(kTwoPi * x); });
  Plan plan = gradient_plan(r.meta, {{10, 20, 30}, {11, 21, 31}, {12, 22, 32}});
  std::vector<TaskTemplate> vort;
  for (std::int32_t l = 0; l < 2; ++l) {
    vort.push_back(exec_testing::chunk_template(
        "vortmag_l" + std::to_string(l), "vorticity_mag", exec_testing::domain(0, l),
        {exec_testing::input(30), exec_testing::input(31), exec_testing::input(32)},
        {exec_testing::output(40,
                              exec_testing::block_spec(1, ScalarType::f64, InitPolicy::zero))}));
  }
  plan.stages.push_back(exec_testing::stage("vortmag", Plane::chunk, std::move(vort), {1}));
  r.run(std::move(plan));
  double sum = 0.0;
  std::size_t cells = 0;
  for_each_cell(
      r, 40,
      [&](const LevelGeom& g, std::array<int, 3> c, std::size_t m, const std::vector<double>& v) {
        const double cx = std::cos(kTwoPi * center(g, 0, c[0]));
        const double cy = std::cos(kTwoPi * center(g, 1, c[1]));
        const double cz = std::cos(kTwoPi * center(g, 2, c[2]));
        const double exact = kTwoPi * std::sqrt(cx * cx + cy * cy + cz * cz);
        sum += (v[m] - exact) * (v[m] - exact);
        ++cells;
      });
  return std::sqrt(sum / static_cast<double>(cells));
}

TEST(Vorticity, SmoothPeriodicErrorDecreasesWithResolution_OPVORT2) {
  const double coarse = smooth_vorticity_error(8);
  const double fine = smooth_vorticity_error(16);
  RecordProperty("rms_error_n8", std::to_string(coarse));
  RecordProperty("rms_error_n16", std::to_string(fine));
  EXPECT_LT(coarse, 2.0);
  EXPECT_LT(fine, 0.5 * coarse) << "coarse " << coarse << " fine " << fine;
}

HandContext vorticity_context() {
  HandContext c(make_run({make_level({1.0, 1.0, 1.0}, {box_of({0, 0, 0}, {1, 0, 0})})}));
  // Cell 0: gradients of vx, vy, vz; cell 1: all zero.
  const std::vector<double> gvx{0, 1, 2, 0, 0, 0};
  const std::vector<double> gvy{3, 0, 4, 0, 0, 0};
  const std::vector<double> gvz{5, 6, 0, 0, 0, 0};
  c.inputs = {test::make_filled(ScalarType::f64, {2, 1, 1, 3}, gvx),
              test::make_filled(ScalarType::f32, {2, 1, 1, 3}, gvy),
              test::make_fortran(ScalarType::f64, {2, 1, 1, 3}, gvz)};
  c.outputs = {test::make_buffer(ScalarType::f64, {2, 1, 1})};
  return c;
}

TEST(Vorticity, CurlOfGivenGradients_OPVORT1) {
  HandContext c = vorticity_context();
  c.run("vorticity_mag");
  // w = (dvz/dy - dvy/dz, dvx/dz - dvz/dx, dvy/dx - dvx/dy) = (6-4, 2-5, 3-1).
  const std::vector<double> out = test::values_of(*c.outputs[0]);
  EXPECT_DOUBLE_EQ(out[0], std::sqrt(4.0 + 9.0 + 4.0));
  EXPECT_EQ(out[1], 0.0);
}

TEST(Vorticity, ErrorPaths_OPVORT1) {
  for (std::size_t n : {0u, 1u, 2u}) {
    HandContext c = vorticity_context();
    c.inputs.resize(n);
    EXPECT_TRUE(throws_with([&] { c.run("vorticity_mag"); },
                            "vorticity_mag requires three gradient inputs"))
        << n;
  }
  {
    HandContext c = vorticity_context();
    c.inputs[1] = test::make_buffer(ScalarType::f64, {2, 1, 1});
    EXPECT_TRUE(throws_with([&] { c.run("vorticity_mag"); }, "is not a (nx, ny, nz, 3) gradient"));
  }
  {
    HandContext c = vorticity_context();
    c.meta.coord_sys = 1;
    EXPECT_TRUE(throws_with([&] { c.run("vorticity_mag"); },
                            "operator requires Cartesian coordinates (coord_sys=1)"));
  }
}

// ---------------------------------------------------------------------------
// Catalog wiring

TEST(AmrCatalog, KernelsAreImplementedAndWired_KREG6_KREG7) {
  KernelRegistry r;
  register_default_kernels(r);
  for (const char* name :
       {"plotfile_load", "amr_subbox_fetch_pack", "gradU_stencil", "vorticity_mag",
        "particle_cic_grid_accumulate", "particle_cic_projection_accumulate"}) {
    EXPECT_TRUE(r.find(name).implemented) << name;
  }
  EXPECT_NE(r.find("amr_subbox_fetch_pack").bound, nullptr);
  EXPECT_NE(r.find("amr_subbox_fetch_pack").extra_reads, nullptr);
  EXPECT_EQ(r.find("gradU_stencil").extra_reads, nullptr);
}

TEST(AmrCatalog, InvalidPackParametersFailTheRun_OPGRAD1) {
  AmrRun r(two_level_3d());
  store_field(*r.h.dataset, r.meta, 1, [](double x, double, double) { return x; });
  Plan plan = gradient_plan(r.meta, {{1, 2, 3}});
  plan.stages[0].templates[0].params = AmrSubboxPackParams{-1, 0, 0, 0, 1};
  EXPECT_TRUE(throws_with([&] { r.run(std::move(plan)); },
                          "amr_subbox_fetch_pack: invalid parameters: input_field"));
}

// ---------------------------------------------------------------------------
// plotfile_load against real plotfiles

namespace fs = std::filesystem;

const fs::path kShared = KANGAROO_SHARED_DATA;

struct CellHeader {
  std::vector<IndexBox> boxes;
  std::vector<std::vector<double>> min;  // [fab][comp]
  std::vector<std::vector<double>> max;
};

IndexBox parse_box(const std::string& text) {
  // ((lo,lo,lo) (hi,hi,hi) (t,t,t)), 2D files have two entries per vector.
  std::vector<int> nums;
  std::string cur;
  for (char ch : text) {
    if (std::isdigit(static_cast<unsigned char>(ch)) || ch == '-') {
      cur += ch;
    } else if (!cur.empty()) {
      nums.push_back(std::stoi(cur));
      cur.clear();
    }
  }
  const std::size_t dim = nums.size() / 3;
  IndexBox b = box_of({0, 0, 0}, {0, 0, 0});
  for (std::size_t a = 0; a < dim; ++a) {
    b.lo[a] = nums[a];
    b.hi[a] = nums[dim + a];
  }
  return b;
}

std::vector<std::vector<double>> parse_matrix(std::istream& in) {
  std::string line;
  while (std::getline(in, line) && line.find(',') == std::string::npos) {
  }
  const std::size_t comma = line.find(',');
  const int rows = std::stoi(line.substr(0, comma));
  const int cols = std::stoi(line.substr(comma + 1));
  std::vector<std::vector<double>> m;
  for (int r = 0; r < rows; ++r) {
    std::getline(in, line);
    std::vector<double> row;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) {
      if (!cell.empty() && cell.find_first_not_of(" \t\r") != std::string::npos)
        row.push_back(std::stod(cell));
    }
    EXPECT_EQ(row.size(), static_cast<std::size_t>(cols));
    m.push_back(std::move(row));
  }
  return m;
}

CellHeader read_cell_header(const fs::path& path) {
  std::ifstream in(path);
  CellHeader h;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("(", 0) == 0 && line.find("((") == std::string::npos) {
      const int count = std::stoi(line.substr(1));
      for (int b = 0; b < count; ++b) {
        std::getline(in, line);
        h.boxes.push_back(parse_box(line));
      }
      break;
    }
  }
  while (std::getline(in, line) && line.rfind("FabOnDisk", 0) != 0) {
  }
  for (std::size_t n = 1; n < h.boxes.size(); ++n)
    std::getline(in, line);
  h.min = parse_matrix(in);
  h.max = parse_matrix(in);
  return h;
}

// Runs plotfile_load for every FAB and component of each level and checks the
// values against the minima and maxima recorded in Cell_H.
void check_plotfile_against_cell_headers(const fs::path& plotfile, int levels, int comps) {
  for (int level = 0; level < levels; ++level) {
    const CellHeader ch =
        read_cell_header(plotfile / ("Level_" + std::to_string(level)) / "Cell_H");
    ASSERT_FALSE(ch.boxes.empty());
    ASSERT_EQ(ch.min.size(), ch.boxes.size());
    HandContext c(make_run({make_level({1.0, 1.0, 1.0}, ch.boxes)}));
    for (std::size_t b = 0; b < ch.boxes.size(); ++b) {
      for (int comp = 0; comp < comps; ++comp) {
        c.block = static_cast<std::int32_t>(b);
        c.params = PlotfileLoadParams{plotfile.string(), level, comp};
        const IndexBox& box = ch.boxes[b];
        c.outputs = {test::make_buffer(
            ScalarType::f64,
            {static_cast<std::uint64_t>(box.extent(0)), static_cast<std::uint64_t>(box.extent(1)),
             static_cast<std::uint64_t>(box.extent(2))})};
        c.run("plotfile_load");
        const std::vector<double> v = test::values_of(*c.outputs[0]);
        ASSERT_EQ(v.size(), box.cells());
        const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
        const double want_lo = ch.min[b][static_cast<std::size_t>(comp)];
        const double want_hi = ch.max[b][static_cast<std::size_t>(comp)];
        const double tol = 1e-6 * std::max(std::fabs(want_lo), std::fabs(want_hi));
        EXPECT_NEAR(*lo, want_lo, tol)
            << plotfile << " level " << level << " fab " << b << " comp " << comp;
        EXPECT_NEAR(*hi, want_hi, tol)
            << plotfile << " level " << level << " fab " << b << " comp " << comp;
      }
    }
  }
}

TEST(PlotfileLoad, ValuesMatchCellHeaderExtrema_OPLOAD1) {
  const fs::path pf = kShared / "amrex" / "pelelmex_3d_small";
  if (!fs::exists(pf / "Header")) GTEST_SKIP() << "shared test data not found at " << pf;
  check_plotfile_against_cell_headers(pf, 3, 4);
}

TEST(PlotfileLoad, TwoDimensionalPlotfileLoads_OPLOAD1) {
  const fs::path pf = kShared / "amrex" / "amrex_singlevortex2d_tracer" / "plt00000";
  if (!fs::exists(pf / "Header")) GTEST_SKIP() << "shared test data not found at " << pf;
  check_plotfile_against_cell_headers(pf, 3, 1);
}

TEST(PlotfileLoad, SameDtypeIsSubstitutedAndOtherDtypesAreConverted_OPLOAD1_ALLOC8) {
  const fs::path pf = kShared / "amrex" / "pelelmex_3d_small";
  if (!fs::exists(pf / "Header")) GTEST_SKIP() << "shared test data not found at " << pf;
  const CellHeader ch = read_cell_header(pf / "Level_0" / "Cell_H");
  HandContext c(make_run({make_level({1.0, 1.0, 1.0}, ch.boxes)}));
  c.params = PlotfileLoadParams{pf.string(), 0, 3};
  const BufferPtr allocated = test::make_buffer(ScalarType::f64, {8, 8, 8});
  c.outputs = {allocated};
  c.run("plotfile_load");
  const ConstBufferPtr f64_out = c.outputs[0];
  EXPECT_EQ(f64_out->scalar(), ScalarType::f64);
  EXPECT_EQ(test::values_of(*f64_out).size(), 512u);

  c.outputs = {test::make_buffer(ScalarType::f32, {8, 8, 8})};
  c.run("plotfile_load");
  EXPECT_EQ(c.outputs[0]->scalar(), ScalarType::f32);
  const std::vector<double> a = test::values_of(*f64_out);
  const std::vector<double> b = test::values_of(*c.outputs[0]);
  for (std::size_t n = 0; n < a.size(); ++n)
    EXPECT_EQ(b[n], static_cast<double>(static_cast<float>(a[n])));
}

TEST(PlotfileLoad, InvalidParametersFail_OPLOAD1_OPGEN3) {
  HandContext c(make_run(
      {make_level({1.0, 1.0, 1.0}, {box_of({0, 0, 0}, {7, 7, 7}), box_of({0, 0, 0}, {3, 7, 7})})}));
  c.outputs = {test::make_buffer(ScalarType::f64, {8, 8, 8})};
  c.params = PlotfileLoadParams{"", 0, 0};
  EXPECT_TRUE(throws_with([&] { c.run("plotfile_load"); },
                          "plotfile_load: invalid parameters: empty plotfile path"));

  const fs::path pf = kShared / "amrex" / "pelelmex_3d_small";
  if (!fs::exists(pf / "Header")) GTEST_SKIP() << "shared test data not found at " << pf;
  c.params = PlotfileLoadParams{pf.string(), 3, 0};
  EXPECT_TRUE(
      throws_with([&] { c.run("plotfile_load"); }, "plotfile_load: invalid parameters: level 3"));
  c.params = PlotfileLoadParams{pf.string(), -1, 0};
  EXPECT_TRUE(
      throws_with([&] { c.run("plotfile_load"); }, "plotfile_load: invalid parameters: level -1"));
  c.params = PlotfileLoadParams{pf.string(), 0, 4};
  EXPECT_TRUE(
      throws_with([&] { c.run("plotfile_load"); }, "plotfile_load: invalid parameters: comp 4"));
  // Level 0 has one FAB; the run metadata names a second block.
  c.block = 1;
  c.outputs = {test::make_buffer(ScalarType::f64, {4, 8, 8})};
  c.params = PlotfileLoadParams{pf.string(), 0, 0};
  EXPECT_TRUE(
      throws_with([&] { c.run("plotfile_load"); }, "plotfile_load: invalid parameters: block 1"));
  // FAB 0 of level 0 is 8^3; a 4^3 block box cannot hold it.
  HandContext small(make_run({make_level({1.0, 1.0, 1.0}, {box_of({0, 0, 0}, {3, 3, 3})})}));
  small.outputs = {test::make_buffer(ScalarType::f64, {4, 4, 4})};
  small.params = PlotfileLoadParams{pf.string(), 0, 0};
  EXPECT_TRUE(
      throws_with([&] { small.run("plotfile_load"); },
                  "plotfile_load: invalid parameters: FAB 0 of level 0 has extents (8, 8, 8)"));
}

}  // namespace
}  // namespace kangaroo
