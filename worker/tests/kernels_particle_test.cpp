// Particle kernels (§10.10, OP-PART-1..8) and their bound evaluators (KREG-6).
//
// Expected values are computed here from first principles (plain loops, a
// linear bin scan, std::map counting, a hand-written map codec), never taken
// from the kernels' own output.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "kangaroo/core/buffer.h"
#include "kangaroo/core/dataset.h"
#include "kangaroo/core/error.h"
#include "kangaroo/core/kernel.h"
#include "kangaroo/core/params.h"
#include "kangaroo/kernels/math/particle_math.h"
#include "kangaroo/kernels/register.h"

namespace kangaroo {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// ---------------------------------------------------------------------------
// Buffers

template <class T>
ConstBufferPtr column(const std::vector<T>& values) {
  const std::uint64_t n = values.size();
  const std::uint64_t extents[1] = {n};
  BufferPtr b = Buffer::allocate(Descriptor::c_order(scalar_of<T>(), extents), InitPolicy::zero);
  if (n > 0) std::memcpy(b->mutable_data(), values.data(), n * sizeof(T));
  return b;
}

ConstBufferPtr f64s(const std::vector<double>& v) {
  return column(v);
}
ConstBufferPtr u8s(const std::vector<std::uint8_t>& v) {
  return column(v);
}

ConstBufferPtr f64_matrix(std::uint64_t rows, std::uint64_t cols) {
  const std::uint64_t extents[2] = {rows, cols};
  return Buffer::allocate(Descriptor::c_order(ScalarType::f64, extents), InitPolicy::zero);
}

BufferPtr dynamic_out(ScalarType t, std::uint64_t capacity) {
  return Buffer::allocate_dynamic(t, capacity, InitPolicy::uninitialized);
}

// Static outputs start as garbage so a kernel that skips an element shows it.
BufferPtr fixed_out(ScalarType t, std::uint64_t n) {
  const std::uint64_t extents[1] = {n};
  BufferPtr b = Buffer::allocate(Descriptor::c_order(t, extents), InitPolicy::uninitialized);
  std::memset(b->mutable_data(), 0x5a, b->byte_size());
  return b;
}

template <class T>
std::vector<T> read_column(const Buffer& b) {
  EXPECT_EQ(b.rank(), 1);
  const std::uint64_t n = b.descriptor().extents[0];
  std::vector<T> out(n);
  if (n > 0) std::memcpy(out.data(), b.data(), n * sizeof(T));
  return out;
}

std::vector<double> doubles(const Buffer& b) {
  return read_column<double>(b);
}
std::vector<std::uint8_t> bytes_of(const Buffer& b) {
  return read_column<std::uint8_t>(b);
}

// Value equality in which NaN matches NaN (and -0 matches +0, as == says).
bool same_value(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return a == b;
}

void expect_same_values(const std::vector<double>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(same_value(got[i], want[i]))
        << "element " << i << ": got " << got[i] << ", want " << want[i];
  }
}

// ---------------------------------------------------------------------------
// Top-k map codec written independently of the kernels (OP-PART-8):
// little-endian u64 n, then n records of (f64 value, i64 count).

std::vector<std::byte> encode_map(const std::vector<std::pair<double, std::int64_t>>& records,
                                  std::optional<std::uint64_t> announced = std::nullopt) {
  std::vector<std::byte> out;
  auto put = [&out](std::uint64_t v) {
    for (int i = 0; i < 8; ++i)
      out.push_back(static_cast<std::byte>(v >> (8 * i)));
  };
  put(announced.value_or(records.size()));
  for (const auto& [value, count] : records) {
    put(std::bit_cast<std::uint64_t>(value));
    put(static_cast<std::uint64_t>(count));
  }
  return out;
}

ConstBufferPtr map_chunk(const std::vector<std::byte>& payload) {
  return Buffer::from_bytes(Descriptor::opaque_bytes(payload.size()), payload);
}

std::map<double, std::int64_t> decode_map(const Buffer& b) {
  const std::span<const std::byte> p = b.bytes();
  auto get = [&p](std::size_t at) {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i)
      v |= std::uint64_t{std::to_integer<std::uint8_t>(p[at + i])} << (8 * i);
    return v;
  };
  EXPECT_GE(p.size(), 8u);
  const std::uint64_t n = get(0);
  EXPECT_GE(p.size(), 8 + 16 * n);
  std::map<double, std::int64_t> out;
  for (std::uint64_t i = 0; i < n; ++i) {
    const double value = std::bit_cast<double>(get(8 + 16 * i));
    const auto count = static_cast<std::int64_t>(get(16 + 16 * i));
    EXPECT_EQ(out.count(value), 0u) << "value " << value << " appears twice in a map";
    out[value] = count;
  }
  return out;
}

// ---------------------------------------------------------------------------
// A dataset serving particle chunks from memory, with an optional per-chunk
// record count that may disagree with the payload (to model short payloads).

class FakeParticleDataset : public Dataset {
 public:
  std::string_view kind() const override { return "fake"; }
  const std::string& uri() const override { return uri_; }
  ConstBufferPtr get_chunk(const ChunkId&) override { return nullptr; }
  bool has_chunk(const ChunkId&) const override { return false; }
  std::uint64_t estimate_chunk_bytes(const ChunkId&) const override { return 0; }
  std::string metadata_json(std::int32_t) const override { return "{}"; }
  void register_field(std::int32_t, const std::string&) override {}
  void register_field_component(std::int32_t, std::int32_t) override {}

  std::vector<std::string> particle_types() const override { return {"dm"}; }
  std::int64_t particle_chunk_count(const std::string&) const override { return chunks_; }
  std::optional<std::uint64_t> particle_record_count(const std::string& type,
                                                     std::int64_t chunk) const override {
    const auto it = records_.find({type, chunk});
    if (it == records_.end()) return std::nullopt;
    return it->second;
  }
  ConstBufferPtr read_particle_field(const std::string& type, const std::string& field,
                                     std::int64_t chunk) override {
    ++reads;
    const auto it = fields_.find({type, field, chunk});
    if (it == fields_.end())
      fail(ErrorKind::not_found, "particle field not found: " + type + "/" + field);
    return it->second;
  }

  void put(const std::string& type, const std::string& field, std::int64_t chunk,
           ConstBufferPtr data) {
    fields_[{type, field, chunk}] = std::move(data);
    chunks_ = std::max(chunks_, chunk + 1);
  }
  // Record counts belong to a species chunk, shared by all of its fields.
  void set_records(const std::string& type, std::int64_t chunk, std::uint64_t records) {
    records_[{type, chunk}] = records;
  }

  int reads = 0;

 private:
  std::string uri_ = "fake://particles";
  std::map<std::tuple<std::string, std::string, std::int64_t>, ConstBufferPtr> fields_;
  std::map<std::pair<std::string, std::int64_t>, std::uint64_t> records_;
  std::int64_t chunks_ = 0;
};

// A backend without particle support keeps the base-class defaults.
class MeshOnlyDataset : public Dataset {
 public:
  std::string_view kind() const override { return "mesh-only"; }
  const std::string& uri() const override { return uri_; }
  ConstBufferPtr get_chunk(const ChunkId&) override { return nullptr; }
  bool has_chunk(const ChunkId&) const override { return false; }
  std::uint64_t estimate_chunk_bytes(const ChunkId&) const override { return 0; }
  std::string metadata_json(std::int32_t) const override { return "{}"; }
  void register_field(std::int32_t, const std::string&) override {}
  void register_field_component(std::int32_t, std::int32_t) override {}

 private:
  std::string uri_ = "mesh://only";
};

// ---------------------------------------------------------------------------
// Fixture: a fresh registry holding only the particle family.

class ParticleKernelTest : public ::testing::Test {
 protected:
  void SetUp() override { register_particle_kernels(registry_); }

  void run(std::string_view name, std::vector<ConstBufferPtr> inputs,
           std::vector<BufferPtr> outputs, const KernelParams& params = {},
           Dataset* dataset = nullptr, std::int32_t block = 0) {
    KernelContext ctx;
    ctx.kernel = name;
    ctx.block = block;
    ctx.inputs = inputs;
    ctx.outputs = outputs;
    ctx.params = &params;
    ctx.dataset = dataset;
    registry_.find(name).fn(ctx);
  }

  // Runs a kernel expected to fail and returns its message.
  std::string failure(std::string_view name, std::vector<ConstBufferPtr> inputs,
                      std::vector<BufferPtr> outputs, const KernelParams& params = {},
                      Dataset* dataset = nullptr, std::int32_t block = 0) {
    try {
      run(name, std::move(inputs), std::move(outputs), params, dataset, block);
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kernel) << e.what();
      return e.what();
    }
    ADD_FAILURE() << name << " did not fail";
    return {};
  }

  // Single f64 input, dynamic f64 output sized to the input.
  std::vector<double> unary(std::string_view name, const std::vector<double>& x,
                            const KernelParams& params = {}) {
    BufferPtr out = dynamic_out(ScalarType::f64, x.size());
    run(name, {f64s(x)}, {out}, params);
    EXPECT_TRUE(out->is_committed());
    return doubles(*out);
  }

  std::optional<std::uint64_t> bound(std::string_view name, const BoundQuery& q) {
    const KernelEntry& e = registry_.find(name);
    EXPECT_NE(e.bound, nullptr) << name;
    if (e.bound == nullptr) return std::nullopt;
    return e.bound(q);
  }

  KernelRegistry registry_;
};

#define EXPECT_CONTAINS(text, part) \
  EXPECT_NE(std::string(text).find(part), std::string::npos) << "message: " << (text)

// ---------------------------------------------------------------------------
// Registration (KREG-2, KREG-6, KREG-7 particle subset)

TEST_F(ParticleKernelTest, RegistersEveryInMemoryParticleKernelWithItsParamType) {
  using P = ParamType;
  const std::vector<std::pair<std::string, P>> expected = {
      {"particle_load_field_chunk_f64", P::ParticleFieldParams},
      {"particle_eq_mask", P::ScalarParams},
      {"particle_ne_mask", P::ScalarParams},
      {"particle_lt_mask", P::ScalarParams},
      {"particle_le_mask", P::ScalarParams},
      {"particle_gt_mask", P::ScalarParams},
      {"particle_ge_mask", P::ScalarParams},
      {"particle_abs_lt_mask", P::ScalarParams},
      {"particle_isin_mask", P::ValuesParams},
      {"particle_isfinite_mask", P::none},
      {"particle_and_mask", P::none},
      {"particle_filter", P::none},
      {"particle_add", P::none},
      {"particle_subtract", P::none},
      {"particle_multiply", P::none},
      {"particle_divide", P::none},
      {"particle_power", P::none},
      {"particle_add_scalar", P::ScalarParams},
      {"particle_subtract_scalar", P::ScalarParams},
      {"particle_rsubtract_scalar", P::ScalarParams},
      {"particle_multiply_scalar", P::ScalarParams},
      {"particle_divide_scalar", P::ScalarParams},
      {"particle_rdivide_scalar", P::ScalarParams},
      {"particle_power_scalar", P::ScalarParams},
      {"particle_rpower_scalar", P::ScalarParams},
      {"particle_distance3", P::none},
      {"particle_sum", P::none},
      {"particle_count", P::none},
      {"particle_len_f64", P::none},
      {"particle_min", P::FiniteOnlyParams},
      {"particle_max", P::FiniteOnlyParams},
      {"particle_histogram1d", P::ParticleHistogramParams},
      {"particle_histogram1d_weighted", P::ParticleHistogramParams},
      {"particle_topk_modes_map", P::ParticleFieldParams},
      {"particle_value_counts_reduce", P::none},
      {"particle_topk_modes_finalize", P::TopKModesParams},
  };
  EXPECT_EQ(registry_.size(), expected.size());
  for (const auto& [name, type] : expected) {
    const KernelEntry* e = registry_.try_find(name);
    ASSERT_NE(e, nullptr) << name;
    EXPECT_EQ(e->descriptor.name, name);
    EXPECT_EQ(e->param_type, type) << name;
    EXPECT_TRUE(e->implemented) << name;
    EXPECT_NE(e->fn, nullptr) << name;
    const bool has_bound = name == "particle_load_field_chunk_f64" ||
                           name == "particle_topk_modes_map" ||
                           name == "particle_value_counts_reduce";
    EXPECT_EQ(e->bound != nullptr, has_bound) << name;
  }
  // The reducers of OP-RED-4/5 belong to the reduction family.
  EXPECT_EQ(registry_.try_find("particle_int64_sum_reduce"), nullptr);
  EXPECT_EQ(registry_.try_find("particle_scalar_min_reduce"), nullptr);
}

// ---------------------------------------------------------------------------
// OP-PART-2 masks

TEST_F(ParticleKernelTest, OpPart2ComparisonMasksFollowIeeeComparisons) {
  const std::vector<double> x = {-2.0, -1.0, -0.0, 0.0, 0.5, 1.0, 1.5, kNaN, kInf, -kInf};
  struct Case {
    const char* kernel;
    double s;
    std::function<bool(double, double)> rule;
  };
  const std::vector<Case> cases = {
      {"particle_eq_mask", 0.0, [](double a, double b) { return a == b; }},
      {"particle_ne_mask", 0.0, [](double a, double b) { return !(a == b); }},
      {"particle_lt_mask", 0.5, [](double a, double b) { return a < b; }},
      {"particle_le_mask", 0.5, [](double a, double b) { return a <= b; }},
      {"particle_gt_mask", 0.5, [](double a, double b) { return a > b; }},
      {"particle_ge_mask", 0.5, [](double a, double b) { return a >= b; }},
      {"particle_abs_lt_mask", 1.5, [](double a, double b) { return (a < 0 ? -a : a) < b; }},
  };
  for (const Case& c : cases) {
    BufferPtr out = fixed_out(ScalarType::u8, x.size());
    run(c.kernel, {f64s(x)}, {out}, ScalarParams{c.s});
    const std::vector<std::uint8_t> got = bytes_of(*out);
    ASSERT_EQ(got.size(), x.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
      EXPECT_EQ(got[i], c.rule(x[i], c.s) ? 1 : 0) << c.kernel << " at " << x[i];
    }
  }
}

TEST_F(ParticleKernelTest, OpPart2NanComparesFalseExceptNotEqual) {
  for (const char* k : {"particle_eq_mask", "particle_lt_mask", "particle_le_mask",
                        "particle_gt_mask", "particle_ge_mask", "particle_abs_lt_mask"}) {
    BufferPtr out = fixed_out(ScalarType::u8, 1);
    run(k, {f64s({kNaN})}, {out}, ScalarParams{kInf});
    EXPECT_EQ(bytes_of(*out)[0], 0) << k;
  }
  BufferPtr out = fixed_out(ScalarType::u8, 1);
  run("particle_ne_mask", {f64s({kNaN})}, {out}, ScalarParams{kNaN});
  EXPECT_EQ(bytes_of(*out)[0], 1);
}

TEST_F(ParticleKernelTest, OpPart2IsinUsesExactEquality) {
  const std::vector<double> x = {1.0, 0.0, -0.0, 2.0, kNaN, 1.0 + 1e-15, 3.0, -kInf};
  const std::vector<double> values = {1.0, -0.0, kNaN, 3.0, -kInf};
  BufferPtr out = fixed_out(ScalarType::u8, x.size());
  run("particle_isin_mask", {f64s(x)}, {out}, ValuesParams{values});
  std::vector<std::uint8_t> want;
  for (const double v : x) {
    bool hit = false;
    for (const double w : values)
      hit = hit || v == w;
    want.push_back(hit ? 1 : 0);
  }
  EXPECT_EQ(bytes_of(*out), want);
  EXPECT_EQ(want, (std::vector<std::uint8_t>{1, 1, 1, 0, 0, 0, 1, 1}));
}

TEST_F(ParticleKernelTest, OpPart2IsinWithNoValuesSelectsNothing) {
  BufferPtr out = fixed_out(ScalarType::u8, 3);
  run("particle_isin_mask", {f64s({0.0, 1.0, kNaN})}, {out}, ValuesParams{});
  EXPECT_EQ(bytes_of(*out), (std::vector<std::uint8_t>{0, 0, 0}));
}

TEST_F(ParticleKernelTest, OpPart2IsfiniteMask) {
  BufferPtr out = fixed_out(ScalarType::u8, 6);
  run("particle_isfinite_mask", {f64s({0.0, -1e308, kNaN, kInf, -kInf, 5e-324})}, {out});
  EXPECT_EQ(bytes_of(*out), (std::vector<std::uint8_t>{1, 1, 0, 0, 0, 1}));
}

TEST_F(ParticleKernelTest, OpPart2MaskOutputMustHaveTheInputLength) {
  // Static (LikeInput) outputs are exact; a dynamic one is committed to n.
  EXPECT_CONTAINS(failure("particle_gt_mask", {f64s({1, 2, 3})}, {fixed_out(ScalarType::u8, 2)},
                          ScalarParams{0.0}),
                  "exactly 3");
  EXPECT_CONTAINS(failure("particle_gt_mask", {f64s({1, 2, 3})}, {fixed_out(ScalarType::u8, 4)},
                          ScalarParams{0.0}),
                  "exactly 3");
  BufferPtr dyn = dynamic_out(ScalarType::u8, 8);
  run("particle_gt_mask", {f64s({1, 2, 3})}, {dyn}, ScalarParams{1.5});
  EXPECT_TRUE(dyn->is_committed());
  EXPECT_EQ(bytes_of(*dyn), (std::vector<std::uint8_t>{0, 1, 1}));
}

TEST_F(ParticleKernelTest, OpPart2EmptyInputGivesEmptyMask) {
  BufferPtr out = fixed_out(ScalarType::u8, 0);
  run("particle_lt_mask", {f64s({})}, {out}, ScalarParams{0.0});
  EXPECT_EQ(out->descriptor().extents[0], 0u);
}

TEST_F(ParticleKernelTest, OpPart2MasksRejectWrongTypesRanksAndParams) {
  // BUF-5: particle arrays are f64 rank 1.
  EXPECT_CONTAINS(failure("particle_eq_mask", {column<float>({1.0f})},
                          {fixed_out(ScalarType::u8, 1)}, ScalarParams{1.0}),
                  "must be f64 rank 1");
  EXPECT_CONTAINS(failure("particle_eq_mask", {f64_matrix(2, 2)}, {fixed_out(ScalarType::u8, 4)},
                          ScalarParams{1.0}),
                  "must be f64 rank 1");
  EXPECT_CONTAINS(
      failure("particle_eq_mask", {u8s({1})}, {fixed_out(ScalarType::u8, 1)}, ScalarParams{1.0}),
      "must be f64 rank 1");
  // Mask outputs are u8.
  EXPECT_CONTAINS(failure("particle_eq_mask", {f64s({1.0})}, {fixed_out(ScalarType::f64, 1)},
                          ScalarParams{1.0}),
                  "must be u8");
  // Missing or foreign parameter alternatives (OP-GEN-3).
  EXPECT_CONTAINS(failure("particle_eq_mask", {f64s({1.0})}, {fixed_out(ScalarType::u8, 1)}),
                  "invalid parameters");
  EXPECT_CONTAINS(failure("particle_isin_mask", {f64s({1.0})}, {fixed_out(ScalarType::u8, 1)},
                          ScalarParams{1.0}),
                  "invalid parameters");
  // Exactly one input and one output.
  EXPECT_CONTAINS(failure("particle_eq_mask", {}, {fixed_out(ScalarType::u8, 1)}, ScalarParams{}),
                  "expected 1 input");
  EXPECT_CONTAINS(
      failure("particle_isfinite_mask", {f64s({1.0}), f64s({1.0})}, {fixed_out(ScalarType::u8, 1)}),
      "expected 1 input");
  EXPECT_CONTAINS(failure("particle_isfinite_mask", {f64s({1.0})}, {}), "expected 1 output");
}

// ---------------------------------------------------------------------------
// OP-PART-3 and

TEST_F(ParticleKernelTest, OpPart3AndMaskTruncatesAndTreatsNonZeroAsTrue) {
  const std::vector<std::uint8_t> a = {1, 0, 2, 255, 7, 1};
  const std::vector<std::uint8_t> b = {3, 1, 0, 128, 1};
  BufferPtr out = dynamic_out(ScalarType::u8, a.size());
  run("particle_and_mask", {u8s(a), u8s(b)}, {out});
  ASSERT_TRUE(out->is_committed());
  std::vector<std::uint8_t> want;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    want.push_back((a[i] != 0 && b[i] != 0) ? 1 : 0);
  }
  EXPECT_EQ(bytes_of(*out), want);
}

TEST_F(ParticleKernelTest, OpPart3AndMaskErrors) {
  EXPECT_CONTAINS(failure("particle_and_mask", {u8s({1})}, {dynamic_out(ScalarType::u8, 1)}),
                  "expected 2 inputs");
  EXPECT_CONTAINS(
      failure("particle_and_mask", {u8s({1}), f64s({1.0})}, {dynamic_out(ScalarType::u8, 1)}),
      "input 1 must be u8 rank 1");
  EXPECT_CONTAINS(
      failure("particle_and_mask", {u8s({1, 1, 1}), u8s({1, 1})}, {dynamic_out(ScalarType::u8, 1)}),
      "capacity");
}

// ---------------------------------------------------------------------------
// OP-PART-4 filter

TEST_F(ParticleKernelTest, OpPart4FilterKeepsSelectedValuesInOrder) {
  const std::vector<double> values = {10.0, kNaN, -3.0, 4.0, kInf, 6.0, 7.0};
  const std::vector<std::uint8_t> mask = {1, 9, 0, 1, 1, 0};  // shorter: truncates
  std::vector<double> want;
  for (std::size_t i = 0; i < std::min(values.size(), mask.size()); ++i) {
    if (mask[i] != 0) want.push_back(values[i]);
  }
  BufferPtr out = dynamic_out(ScalarType::f64, values.size());
  run("particle_filter", {f64s(values), u8s(mask)}, {out});
  ASSERT_TRUE(out->is_committed());
  expect_same_values(doubles(*out), want);
}

TEST_F(ParticleKernelTest, OpPart4FilterNeedsOnlyRoomForTheSelection) {
  BufferPtr tight = dynamic_out(ScalarType::f64, 1);
  run("particle_filter", {f64s({1.0, 2.0, 3.0}), u8s({0, 1, 0})}, {tight});
  expect_same_values(doubles(*tight), {2.0});

  BufferPtr small = dynamic_out(ScalarType::f64, 1);
  EXPECT_CONTAINS(failure("particle_filter", {f64s({1.0, 2.0, 3.0}), u8s({1, 1, 0})}, {small}),
                  "capacity");
  EXPECT_FALSE(small->is_committed());
}

TEST_F(ParticleKernelTest, OpPart4FilterNothingSelectedCommitsEmpty) {
  BufferPtr out = dynamic_out(ScalarType::f64, 3);
  run("particle_filter", {f64s({1.0, 2.0, 3.0}), u8s({0, 0, 0})}, {out});
  EXPECT_TRUE(out->is_committed());
  EXPECT_EQ(out->descriptor().extents[0], 0u);
}

TEST_F(ParticleKernelTest, OpPart4FilterStaticOutputFillsTheUnusedTail) {
  BufferPtr out = fixed_out(ScalarType::f64, 3);
  run("particle_filter", {f64s({1.0, 2.0, 3.0}), u8s({1, 0, 0})}, {out});
  expect_same_values(doubles(*out), {1.0, kNaN, kNaN});
}

TEST_F(ParticleKernelTest, OpPart4FilterErrors) {
  EXPECT_CONTAINS(
      failure("particle_filter", {u8s({1}), u8s({1})}, {dynamic_out(ScalarType::f64, 1)}),
      "input 0 must be f64 rank 1");
  EXPECT_CONTAINS(
      failure("particle_filter", {f64s({1.0}), f64s({1.0})}, {dynamic_out(ScalarType::f64, 1)}),
      "input 1 must be u8 rank 1");
  EXPECT_CONTAINS(failure("particle_filter", {f64s({1.0})}, {dynamic_out(ScalarType::f64, 1)}),
                  "expected 2 inputs");
}

// ---------------------------------------------------------------------------
// OP-PART-5 arithmetic

TEST_F(ParticleKernelTest, OpPart5BinaryArithmeticTruncatesToTheShorterInput) {
  const std::vector<double> a = {1.5, -2.0, 0.0, 0.0, 3.0, kNaN, 2.0, kInf, 99.0};
  const std::vector<double> b = {0.5, 4.0, 0.0, -2.0, 0.0, 1.0, 0.5, kInf};
  const std::size_t n = std::min(a.size(), b.size());
  struct Case {
    const char* kernel;
    std::function<double(double, double)> op;
  };
  const std::vector<Case> cases = {
      {"particle_add", [](double x, double y) { return x + y; }},
      {"particle_subtract", [](double x, double y) { return x - y; }},
      {"particle_multiply", [](double x, double y) { return x * y; }},
      {"particle_divide", [](double x, double y) { return x / y; }},
      {"particle_power", [](double x, double y) { return std::pow(x, y); }},
  };
  for (const Case& c : cases) {
    BufferPtr out = dynamic_out(ScalarType::f64, a.size());
    run(c.kernel, {f64s(a), f64s(b)}, {out});
    ASSERT_TRUE(out->is_committed()) << c.kernel;
    std::vector<double> want;
    for (std::size_t i = 0; i < n; ++i)
      want.push_back(c.op(a[i], b[i]));
    SCOPED_TRACE(c.kernel);
    expect_same_values(doubles(*out), want);
  }
}

TEST_F(ParticleKernelTest, OpPart5DivisionByZeroFollowsIeee) {
  BufferPtr out = dynamic_out(ScalarType::f64, 3);
  run("particle_divide", {f64s({1.0, -1.0, 0.0}), f64s({0.0, 0.0, 0.0})}, {out});
  const std::vector<double> got = doubles(*out);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0], kInf);
  EXPECT_EQ(got[1], -kInf);
  EXPECT_TRUE(std::isnan(got[2]));
}

TEST_F(ParticleKernelTest, OpPart5ScalarVariantsIncludingReflectedForms) {
  const std::vector<double> x = {2.0, -3.0, 0.0, 0.25, kNaN, kInf};
  const double s = 4.0;
  struct Case {
    const char* kernel;
    std::function<double(double)> op;
  };
  const std::vector<Case> cases = {
      {"particle_add_scalar", [s](double v) { return v + s; }},
      {"particle_subtract_scalar", [s](double v) { return v - s; }},
      {"particle_rsubtract_scalar", [s](double v) { return s - v; }},
      {"particle_multiply_scalar", [s](double v) { return v * s; }},
      {"particle_divide_scalar", [s](double v) { return v / s; }},
      {"particle_rdivide_scalar", [s](double v) { return s / v; }},
      {"particle_power_scalar", [s](double v) { return std::pow(v, s); }},
      {"particle_rpower_scalar", [s](double v) { return std::pow(s, v); }},
  };
  for (const Case& c : cases) {
    std::vector<double> want(x.size());
    std::transform(x.begin(), x.end(), want.begin(), c.op);
    SCOPED_TRACE(c.kernel);
    expect_same_values(unary(c.kernel, x, ScalarParams{s}), want);
  }
  // Spot values that do not rely on the formulas above.
  expect_same_values(unary("particle_rsubtract_scalar", {1.0}, ScalarParams{10.0}), {9.0});
  expect_same_values(unary("particle_rdivide_scalar", {4.0, 0.0}, ScalarParams{2.0}), {0.5, kInf});
  expect_same_values(unary("particle_rpower_scalar", {3.0}, ScalarParams{2.0}), {8.0});
  expect_same_values(unary("particle_power_scalar", {3.0}, ScalarParams{2.0}), {9.0});
}

TEST_F(ParticleKernelTest, OpPart5Distance3TruncatesToTheShortestInput) {
  const std::vector<double> ax = {0.0, 1.0, 3.0, 5.0}, ay = {0.0, 2.0, 4.0},
                            az = {0.0, 2.0, 0.0, 1.0};
  const std::vector<double> bx = {3.0, 1.0, 0.0, 0.0}, by = {4.0, 0.0, 0.0, 0.0},
                            bz = {0.0, 0.0, 12.0, 0.0};
  BufferPtr out = dynamic_out(ScalarType::f64, 4);
  run("particle_distance3", {f64s(ax), f64s(ay), f64s(az), f64s(bx), f64s(by), f64s(bz)}, {out});
  // 3-4-5, (0,2,2) -> sqrt(8), (3,4,-12) -> 13.
  const std::vector<double> got = doubles(*out);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_DOUBLE_EQ(got[0], 5.0);
  EXPECT_DOUBLE_EQ(got[1], std::sqrt(8.0));
  EXPECT_DOUBLE_EQ(got[2], 13.0);
}

TEST_F(ParticleKernelTest, OpPart5Distance3PropagatesNonFinite) {
  BufferPtr out = dynamic_out(ScalarType::f64, 2);
  run("particle_distance3",
      {f64s({kNaN, kInf}), f64s({0, 0}), f64s({0, 0}), f64s({0, 0}), f64s({0, 0}), f64s({0, 0})},
      {out});
  expect_same_values(doubles(*out), {kNaN, kInf});
}

TEST_F(ParticleKernelTest, OpPart5ArithmeticErrorsAndDynamicCommitRules) {
  EXPECT_CONTAINS(failure("particle_add", {f64s({1.0})}, {dynamic_out(ScalarType::f64, 1)}),
                  "expected 2 inputs");
  EXPECT_CONTAINS(
      failure("particle_distance3", {f64s({1}), f64s({1}), f64s({1}), f64s({1}), f64s({1})},
              {dynamic_out(ScalarType::f64, 1)}),
      "expected 6 inputs");
  EXPECT_CONTAINS(failure("particle_add", {f64s({1.0}), column<std::int64_t>({1})},
                          {dynamic_out(ScalarType::f64, 1)}),
                  "input 1 must be f64 rank 1");
  EXPECT_CONTAINS(failure("particle_add_scalar", {f64s({1.0})}, {dynamic_out(ScalarType::f32, 1)},
                          ScalarParams{1.0}),
                  "must be f64");
  EXPECT_CONTAINS(failure("particle_add_scalar", {f64s({1.0})}, {dynamic_out(ScalarType::f64, 1)}),
                  "invalid parameters");
  // Capacity is checked before anything is written or committed.
  BufferPtr small = dynamic_out(ScalarType::f64, 1);
  EXPECT_CONTAINS(failure("particle_multiply", {f64s({1, 2}), f64s({3, 4})}, {small}), "capacity");
  EXPECT_FALSE(small->is_committed());
  // A dynamic output is committed exactly once: reusing it fails (BUF-6).
  BufferPtr once = dynamic_out(ScalarType::f64, 2);
  run("particle_add", {f64s({1, 2}), f64s({3, 4})}, {once});
  EXPECT_THROW(run("particle_add", {f64s({1, 2}), f64s({3, 4})}, {once}), Error);
}

TEST_F(ParticleKernelTest, OpPart5EmptyInputsCommitZeroElements) {
  BufferPtr out = dynamic_out(ScalarType::f64, 0);
  run("particle_subtract", {f64s({}), f64s({1.0, 2.0})}, {out});
  EXPECT_TRUE(out->is_committed());
  EXPECT_EQ(out->descriptor().extents[0], 0u);
}

// ---------------------------------------------------------------------------
// OP-PART-6 scalars

TEST_F(ParticleKernelTest, OpPart6SumInIndexOrderPropagatesNan) {
  auto sum_of = [this](const std::vector<double>& x) {
    const std::uint64_t one[1] = {1};
    BufferPtr out = Buffer::allocate(Descriptor::c_order(ScalarType::f64, one), InitPolicy::zero);
    run("particle_sum", {f64s(x)}, {out});
    return doubles(*out)[0];
  };
  const std::vector<double> x = {0.1, 0.2, 0.3, -1e-3, 12.5};
  double want = 0.0;
  for (const double v : x)
    want += v;
  EXPECT_EQ(sum_of(x), want);  // same order, so bit-identical
  EXPECT_TRUE(std::isnan(sum_of({1.0, kNaN, 2.0})));
  EXPECT_TRUE(std::isnan(sum_of({kInf, -kInf})));
  EXPECT_EQ(sum_of({1.0, kInf}), kInf);
  EXPECT_EQ(sum_of({}), 0.0);
  // Order matters in floating point: 1e16 + 1 - 1e16 is 0, not 1.
  EXPECT_EQ(sum_of({1e16, 1.0, -1e16}), 0.0);
}

TEST_F(ParticleKernelTest, OpPart6CountAndLength) {
  BufferPtr count = fixed_out(ScalarType::i64, 1);
  run("particle_count", {u8s({0, 1, 2, 0, 255, 7})}, {count});
  EXPECT_EQ(read_column<std::int64_t>(*count), (std::vector<std::int64_t>{4}));

  BufferPtr len = fixed_out(ScalarType::i64, 1);
  run("particle_len_f64", {f64s({kNaN, 1.0, kInf, 0.0, -1.0})}, {len});
  EXPECT_EQ(read_column<std::int64_t>(*len), (std::vector<std::int64_t>{5}));

  BufferPtr empty = fixed_out(ScalarType::i64, 1);
  run("particle_count", {u8s({})}, {empty});
  EXPECT_EQ(read_column<std::int64_t>(*empty), (std::vector<std::int64_t>{0}));

  // A dynamic scalar output is committed to one element.
  BufferPtr dyn = dynamic_out(ScalarType::i64, 4);
  run("particle_len_f64", {f64s({1.0, 2.0})}, {dyn});
  EXPECT_EQ(read_column<std::int64_t>(*dyn), (std::vector<std::int64_t>{2}));
}

TEST_F(ParticleKernelTest, OpPart6ScalarErrors) {
  EXPECT_CONTAINS(failure("particle_count", {f64s({1.0})}, {fixed_out(ScalarType::i64, 1)}),
                  "input 0 must be u8 rank 1");
  EXPECT_CONTAINS(failure("particle_len_f64", {u8s({1})}, {fixed_out(ScalarType::i64, 1)}),
                  "input 0 must be f64 rank 1");
  EXPECT_CONTAINS(failure("particle_sum", {f64s({1.0})}, {fixed_out(ScalarType::i64, 1)}),
                  "must be f64");
  EXPECT_CONTAINS(failure("particle_count", {u8s({1})}, {fixed_out(ScalarType::f64, 1)}),
                  "must be i64");
  EXPECT_CONTAINS(failure("particle_sum", {f64s({1.0})}, {fixed_out(ScalarType::f64, 2)}),
                  "exactly 1");
  EXPECT_CONTAINS(
      failure("particle_sum", {f64s({1.0}), f64s({1.0})}, {fixed_out(ScalarType::f64, 1)}),
      "expected 1 input");
  EXPECT_CONTAINS(failure("particle_min", {f64s({1.0})}, {fixed_out(ScalarType::f64, 1)}),
                  "invalid parameters");
}

struct ExtremeCase {
  std::vector<double> x;
  bool finite_only;
  double want_min;
  double want_max;
};

TEST_F(ParticleKernelTest, OpPart6MinMaxFiniteOnlyRules) {
  const std::vector<ExtremeCase> cases = {
      // finite_only skips NaN and both infinities.
      {{3.0, -kInf, kNaN, 7.0, kInf, -2.5}, true, -2.5, 7.0},
      // Without it NaN wins (numpy semantics)...
      {{3.0, -kInf, kNaN, 7.0, kInf}, false, kNaN, kNaN},
      {{kNaN}, false, kNaN, kNaN},
      // ...and infinities take part.
      {{3.0, -kInf, 7.0, kInf}, false, -kInf, kInf},
      {{kInf}, false, kInf, kInf},
      // Nothing qualifies: +inf for min, -inf for max.
      {{}, true, kInf, -kInf},
      {{}, false, kInf, -kInf},
      {{kNaN, kInf, -kInf}, true, kInf, -kInf},
      {{-0.0, 5.0, -1e300}, true, -1e300, 5.0},
  };
  for (std::size_t c = 0; c < cases.size(); ++c) {
    const ExtremeCase& ec = cases[c];
    BufferPtr lo = fixed_out(ScalarType::f64, 1);
    BufferPtr hi = fixed_out(ScalarType::f64, 1);
    run("particle_min", {f64s(ec.x)}, {lo}, FiniteOnlyParams{ec.finite_only});
    run("particle_max", {f64s(ec.x)}, {hi}, FiniteOnlyParams{ec.finite_only});
    EXPECT_TRUE(same_value(doubles(*lo)[0], ec.want_min))
        << "case " << c << " min " << doubles(*lo)[0];
    EXPECT_TRUE(same_value(doubles(*hi)[0], ec.want_max))
        << "case " << c << " max " << doubles(*hi)[0];
  }
}

TEST_F(ParticleKernelTest, OpPart6MinMaxNanPositionDoesNotMatter) {
  // A NaN after the running extreme must still win without finite_only.
  for (const std::vector<double>& x :
       {std::vector<double>{kNaN, 1.0, 2.0}, std::vector<double>{1.0, kNaN, 2.0},
        std::vector<double>{1.0, 2.0, kNaN}}) {
    BufferPtr lo = fixed_out(ScalarType::f64, 1);
    BufferPtr hi = fixed_out(ScalarType::f64, 1);
    run("particle_min", {f64s(x)}, {lo}, FiniteOnlyParams{false});
    run("particle_max", {f64s(x)}, {hi}, FiniteOnlyParams{false});
    EXPECT_TRUE(std::isnan(doubles(*lo)[0]));
    EXPECT_TRUE(std::isnan(doubles(*hi)[0]));
  }
}

// ---------------------------------------------------------------------------
// OP-PART-7 histograms

// Straightforward reading of OP-PART-7: linear scan for the half-open bin,
// closed top edge in the last bin, non-finite samples and weights skipped.
std::vector<double> reference_histogram(const std::vector<double>& edges,
                                        const std::vector<double>& x,
                                        const std::vector<double>* weights, bool density) {
  const std::size_t bins = edges.size() - 1;
  std::vector<double> h(bins, 0.0);
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    const double w = weights ? (*weights)[i] : 1.0;
    if (!std::isfinite(v) || !std::isfinite(w)) continue;
    if (v < edges.front() || v > edges.back()) continue;
    std::size_t bin = bins;
    if (v == edges.back()) {
      bin = bins - 1;
    } else {
      for (std::size_t b = 0; b < bins; ++b) {
        if (edges[b] <= v && v < edges[b + 1]) bin = b;
      }
    }
    if (bin < bins) h[bin] += w;
  }
  if (density) {
    double total = 0.0;
    for (const double c : h)
      total += c;
    if (total > 0.0) {
      for (std::size_t b = 0; b < bins; ++b) {
        const double width = edges[b + 1] - edges[b];
        if (width > 0.0) h[b] /= total * width;
      }
    }
  }
  return h;
}

TEST_F(ParticleKernelTest, OpPart7HistogramEdgesAndSkippedSamples) {
  const std::vector<double> edges = {0.0, 1.0, 2.0, 4.0};
  const std::vector<double> x = {-1.0, 0.0, 0.5, 1.0, 3.999, 4.0, 4.5, kNaN, kInf, -kInf, 2.0};
  BufferPtr out = fixed_out(ScalarType::f64, 3);
  run("particle_histogram1d", {f64s(x)}, {out}, ParticleHistogramParams{edges, false});
  // By hand: [0,1): 0, 0.5; [1,2): 1; [2,4]: 3.999, 4 (top edge), 2.
  expect_same_values(doubles(*out), {2.0, 1.0, 3.0});
  expect_same_values(doubles(*out), reference_histogram(edges, x, nullptr, false));
}

TEST_F(ParticleKernelTest, OpPart7HistogramMatchesLinearScanOnManySamples) {
  const std::vector<double> edges = {-3.0, -1.0, -0.5, 0.0, 0.1, 0.7, 2.0, 2.0, 5.0};
  std::vector<double> x, w;
  std::uint64_t state = 12345;
  auto next = [&state] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<double>(state >> 11) / static_cast<double>(1ULL << 53);
  };
  for (int i = 0; i < 2000; ++i) {
    x.push_back(-4.0 + 10.0 * next());
    w.push_back(next() < 0.05 ? kNaN : 2.0 * next() - 0.5);
  }
  // Exact edge hits, including the repeated edge and the closed top edge.
  for (const double e : edges) {
    x.push_back(e);
    w.push_back(1.0);
  }
  for (const bool density : {false, true}) {
    BufferPtr plain = fixed_out(ScalarType::f64, edges.size() - 1);
    run("particle_histogram1d", {f64s(x)}, {plain}, ParticleHistogramParams{edges, density});
    const std::vector<double> want_plain = reference_histogram(edges, x, nullptr, density);
    const std::vector<double> got_plain = doubles(*plain);
    ASSERT_EQ(got_plain.size(), want_plain.size());
    for (std::size_t b = 0; b < want_plain.size(); ++b) {
      EXPECT_NEAR(got_plain[b], want_plain[b], 1e-12 * std::max(1.0, std::fabs(want_plain[b])))
          << "bin " << b << " density " << density;
    }
    BufferPtr weighted = fixed_out(ScalarType::f64, edges.size() - 1);
    run("particle_histogram1d_weighted", {f64s(x), f64s(w)}, {weighted},
        ParticleHistogramParams{edges, density});
    const std::vector<double> want_w = reference_histogram(edges, x, &w, density);
    const std::vector<double> got_w = doubles(*weighted);
    ASSERT_EQ(got_w.size(), want_w.size());
    for (std::size_t b = 0; b < want_w.size(); ++b) {
      EXPECT_NEAR(got_w[b], want_w[b], 1e-9 * std::max(1.0, std::fabs(want_w[b])))
          << "bin " << b << " density " << density;
    }
  }
}

TEST_F(ParticleKernelTest, OpPart7DensityNormalizesPositiveWidthBins) {
  const std::vector<double> edges = {0.0, 1.0, 3.0};
  BufferPtr out = fixed_out(ScalarType::f64, 2);
  run("particle_histogram1d", {f64s({0.5, 1.5, 2.5, 3.0})}, {out},
      ParticleHistogramParams{edges, true});
  // counts 1 and 3, total 4: 1/(4*1), 3/(4*2).
  const std::vector<double> got = doubles(*out);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_DOUBLE_EQ(got[0], 0.25);
  EXPECT_DOUBLE_EQ(got[1], 0.375);
  // The density integrates to one.
  EXPECT_DOUBLE_EQ(got[0] * 1.0 + got[1] * 2.0, 1.0);
}

TEST_F(ParticleKernelTest, OpPart7ZeroWidthLastBinTakesTheTopEdgeAndStaysRaw) {
  // edges (0, 1, 1): x == 1 is the top edge, so it goes to the zero-width last
  // bin, whose value is not divided under density.
  BufferPtr out = fixed_out(ScalarType::f64, 2);
  run("particle_histogram1d", {f64s({0.5, 1.0})}, {out},
      ParticleHistogramParams{{0.0, 1.0, 1.0}, true});
  expect_same_values(doubles(*out), {0.5, 1.0});
}

TEST_F(ParticleKernelTest, OpPart7DensityLeavesNonPositiveTotalsRaw) {
  BufferPtr out = fixed_out(ScalarType::f64, 2);
  run("particle_histogram1d_weighted", {f64s({0.5, 1.5}), f64s({2.0, -2.0})}, {out},
      ParticleHistogramParams{{0.0, 1.0, 2.0}, true});
  expect_same_values(doubles(*out), {2.0, -2.0});

  BufferPtr empty = fixed_out(ScalarType::f64, 2);
  run("particle_histogram1d", {f64s({})}, {empty}, ParticleHistogramParams{{0.0, 1.0, 2.0}, true});
  expect_same_values(doubles(*empty), {0.0, 0.0});
}

TEST_F(ParticleKernelTest, OpPart7WeightedSkipsNonFiniteWeights) {
  BufferPtr out = fixed_out(ScalarType::f64, 2);
  run("particle_histogram1d_weighted",
      {f64s({0.5, 0.5, 0.5, 1.5, 1.5, kNaN}), f64s({2.0, kNaN, kInf, -0.5, 0.25, 1.0})}, {out},
      ParticleHistogramParams{{0.0, 1.0, 2.0}, false});
  expect_same_values(doubles(*out), {2.0, -0.25});
}

TEST_F(ParticleKernelTest, OpPart7HistogramErrors) {
  const ParticleHistogramParams good{{0.0, 1.0, 2.0}, false};
  EXPECT_CONTAINS(failure("particle_histogram1d_weighted", {f64s({0.5, 1.5}), f64s({1.0})},
                          {fixed_out(ScalarType::f64, 2)}, good),
                  "equal length");
  EXPECT_CONTAINS(failure("particle_histogram1d", {f64s({0.5}), f64s({1.0})},
                          {fixed_out(ScalarType::f64, 2)}, good),
                  "expected 1 input");
  EXPECT_CONTAINS(failure("particle_histogram1d_weighted", {f64s({0.5})},
                          {fixed_out(ScalarType::f64, 2)}, good),
                  "expected 2 inputs");
  EXPECT_CONTAINS(
      failure("particle_histogram1d", {f64s({0.5})}, {fixed_out(ScalarType::f64, 3)}, good),
      "exactly 2");
  EXPECT_CONTAINS(failure("particle_histogram1d", {column<float>({0.5f})},
                          {fixed_out(ScalarType::f64, 2)}, good),
                  "must be f64 rank 1");
  for (const std::vector<double>& edges :
       {std::vector<double>{}, std::vector<double>{1.0}, std::vector<double>{0.0, 2.0, 1.0},
        std::vector<double>{0.0, kNaN, 1.0}}) {
    EXPECT_CONTAINS(failure("particle_histogram1d", {f64s({0.5})},
                            {fixed_out(ScalarType::f64, edges.size() > 1 ? edges.size() - 1 : 1)},
                            ParticleHistogramParams{edges, false}),
                    "invalid parameters");
  }
  EXPECT_CONTAINS(failure("particle_histogram1d", {f64s({0.5})}, {fixed_out(ScalarType::f64, 2)},
                          ScalarParams{1.0}),
                  "invalid parameters");
}

TEST_F(ParticleKernelTest, OpPart7HistogramMathBinSearch) {
  namespace pm = math::particle;
  const double edges[] = {0.0, 1.0, 1.0, 2.0, 4.0};
  EXPECT_EQ(pm::histogram_bin(edges, 5, -0.1), -1);
  EXPECT_EQ(pm::histogram_bin(edges, 5, 0.0), 0);
  EXPECT_EQ(pm::histogram_bin(edges, 5, 0.999), 0);
  EXPECT_EQ(pm::histogram_bin(edges, 5, 1.0), 2);  // last edge <= x among repeats
  EXPECT_EQ(pm::histogram_bin(edges, 5, 3.0), 3);
  EXPECT_EQ(pm::histogram_bin(edges, 5, 4.0), 3);  // closed top edge
  EXPECT_EQ(pm::histogram_bin(edges, 5, 4.0000001), -1);
  EXPECT_EQ(pm::histogram_bin(edges, 5, kNaN), -1);
  EXPECT_EQ(pm::histogram_bin(edges, 5, kInf), -1);
}

// ---------------------------------------------------------------------------
// OP-PART-1 particle_load_field_chunk_f64

class ParticleLoadTest : public ParticleKernelTest {
 protected:
  void SetUp() override {
    ParticleKernelTest::SetUp();
    ds_.put("dm", "mass", 0, column<double>({1.25, -2.5, kInf}));
    ds_.put("dm", "x", 0, column<float>({1.5f, -0.1f, 3.3f}));
    ds_.put("dm", "id", 0, column<std::int64_t>({-7, 0, (std::int64_t{1} << 53) + 1}));
    ds_.set_records("dm", 0, 3);
    ds_.put("dm", "mass", 1, column<double>({4.0, 5.0}));
    ds_.set_records("dm", 1, 2);
    ds_.put("flagged", "flag", 0, column<std::uint8_t>({1, 0}));
    ds_.set_records("flagged", 0, 2);
    ds_.put("short", "mass", 0, column<double>({1.0, 2.0}));
    ds_.set_records("short", 0, 5);
    ds_.put("grid", "mass", 0, f64_matrix(2, 2));
    ds_.set_records("grid", 0, 4);
    // No record count known: the payload decides.
    ds_.put("stars", "mass", 0, column<double>({9.0, 8.0, 7.0}));
    // More payload than records.
    ds_.put("gas", "mass", 0, column<double>({1.0, 2.0, 3.0, 4.0}));
    ds_.set_records("gas", 0, 2);
  }

  std::vector<double> load(const std::string& type, const std::string& field, std::int32_t block,
                           std::uint64_t capacity = 16) {
    BufferPtr out = dynamic_out(ScalarType::f64, capacity);
    run("particle_load_field_chunk_f64", {}, {out}, ParticleFieldParams{type, field}, &ds_, block);
    EXPECT_TRUE(out->is_committed());
    return doubles(*out);
  }

  std::string load_failure(const std::string& type, const std::string& field,
                           std::int32_t block = 0, Dataset* ds = nullptr) {
    return failure("particle_load_field_chunk_f64", {}, {dynamic_out(ScalarType::f64, 16)},
                   ParticleFieldParams{type, field}, ds ? ds : &ds_, block);
  }

  BoundQuery query(const KernelParams& params, std::int32_t block,
                   ScalarType dtype = ScalarType::f64) {
    BoundQuery q;
    q.dtype = dtype;
    q.dataset = &ds_;
    q.block = block;
    q.params = &params;
    return q;
  }

  FakeParticleDataset ds_;
};

TEST_F(ParticleLoadTest, OpPart1ConvertsFloat64Float32AndInt64) {
  expect_same_values(load("dm", "mass", 0), {1.25, -2.5, kInf});
  expect_same_values(load("dm", "x", 0), {static_cast<double>(1.5f), static_cast<double>(-0.1f),
                                          static_cast<double>(3.3f)});
  // int64 -> f64 is a value cast (2^53 + 1 rounds to 2^53).
  expect_same_values(load("dm", "id", 0), {-7.0, 0.0, 9007199254740992.0});
}

TEST_F(ParticleLoadTest, OpPart1ReadsTheTaskBlockAsChunk) {
  expect_same_values(load("dm", "mass", 1), {4.0, 5.0});
}

TEST_F(ParticleLoadTest, OpPart1RecordCountDecidesTheLength) {
  // Unknown record count: the payload defines it.
  expect_same_values(load("stars", "mass", 0), {9.0, 8.0, 7.0});
  // A payload longer than the record count contributes only its records.
  expect_same_values(load("gas", "mass", 0), {1.0, 2.0});
}

TEST_F(ParticleLoadTest, OpPart1Failures) {
  EXPECT_CONTAINS(load_failure("flagged", "flag"), "unsupported particle dtype u8");
  EXPECT_CONTAINS(load_failure("short", "mass"), "short particle payload");
  EXPECT_CONTAINS(load_failure("grid", "mass"), "rank 1");
  EXPECT_CONTAINS(load_failure("", "mass"), "invalid parameters: particle_type is empty");
  EXPECT_CONTAINS(load_failure("dm", ""), "invalid parameters: field_name is empty");
  EXPECT_CONTAINS(failure("particle_load_field_chunk_f64", {}, {dynamic_out(ScalarType::f64, 4)},
                          ParticleFieldParams{"dm", "mass"}, nullptr),
                  "no dataset backend");
  EXPECT_CONTAINS(failure("particle_load_field_chunk_f64", {}, {dynamic_out(ScalarType::f64, 4)},
                          ScalarParams{}, &ds_),
                  "invalid parameters");
  // Too little capacity for the records.
  EXPECT_CONTAINS(failure("particle_load_field_chunk_f64", {}, {dynamic_out(ScalarType::f64, 2)},
                          ParticleFieldParams{"dm", "mass"}, &ds_),
                  "capacity");
  // The kernel takes no inputs.
  EXPECT_CONTAINS(
      failure("particle_load_field_chunk_f64", {f64s({1.0})}, {dynamic_out(ScalarType::f64, 4)},
              ParticleFieldParams{"dm", "mass"}, &ds_),
      "expected 0 inputs");
}

TEST_F(ParticleLoadTest, OpPart1BackendErrorsPropagate) {
  // Unknown fields are the backend's own explicit error.
  EXPECT_THROW(run("particle_load_field_chunk_f64", {}, {dynamic_out(ScalarType::f64, 4)},
                   ParticleFieldParams{"dm", "nope"}, &ds_),
               Error);
  // A backend without particle support fails explicitly (ERR-30).
  MeshOnlyDataset mesh;
  try {
    run("particle_load_field_chunk_f64", {}, {dynamic_out(ScalarType::f64, 4)},
        ParticleFieldParams{"dm", "mass"}, &mesh);
    ADD_FAILURE() << "read on a mesh-only backend succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::unsupported);
  }
}

TEST_F(ParticleLoadTest, Kreg6LoadBoundIsTheRecordCount) {
  const KernelParams dm = ParticleFieldParams{"dm", "mass"};
  EXPECT_EQ(bound("particle_load_field_chunk_f64", query(dm, 0)), std::optional<std::uint64_t>(3));
  EXPECT_EQ(bound("particle_load_field_chunk_f64", query(dm, 1)), std::optional<std::uint64_t>(2));
  // Unknown count, empty type, no dataset, foreign params: unresolved.
  const KernelParams stars = ParticleFieldParams{"stars", "mass"};
  EXPECT_EQ(bound("particle_load_field_chunk_f64", query(stars, 0)), std::nullopt);
  const KernelParams empty = ParticleFieldParams{"", "mass"};
  EXPECT_EQ(bound("particle_load_field_chunk_f64", query(empty, 0)), std::nullopt);
  BoundQuery no_ds = query(dm, 0);
  no_ds.dataset = nullptr;
  EXPECT_EQ(bound("particle_load_field_chunk_f64", no_ds), std::nullopt);
  const KernelParams other = ScalarParams{};
  EXPECT_EQ(bound("particle_load_field_chunk_f64", query(other, 0)), std::nullopt);
}

// ---------------------------------------------------------------------------
// OP-PART-8 top-k modes

TEST_F(ParticleLoadTest, OpPart8MapCountsFiniteValuesOfTheChunk) {
  const std::vector<double> values = {2.0, 1.0, 2.0, kNaN, 3.0, 2.0, kInf, 1.0, -0.0, 0.0, -kInf};
  ds_.put("tracer", "vel", 0, column<double>(values));
  ds_.set_records("tracer", 0, values.size());
  BufferPtr out = dynamic_out(ScalarType::opaque, 8 + 16 * values.size());
  run("particle_topk_modes_map", {}, {out}, ParticleFieldParams{"tracer", "vel"}, &ds_, 0);
  ASSERT_TRUE(out->is_committed());
  std::map<double, std::int64_t> want;
  for (const double v : values) {
    if (std::isfinite(v)) ++want[v];  // std::map folds -0 into 0 as == does
  }
  EXPECT_EQ(decode_map(*out), want);
  EXPECT_EQ(out->byte_size(), 8 + 16 * want.size());
}

TEST_F(ParticleLoadTest, OpPart8MapConvertsIntegerFields) {
  ds_.put("amr", "level", 0, column<std::int64_t>({3, 1, 3, 3, 1, 2}));
  ds_.set_records("amr", 0, 6);
  BufferPtr out = dynamic_out(ScalarType::opaque, 8 + 16 * 6);
  run("particle_topk_modes_map", {}, {out}, ParticleFieldParams{"amr", "level"}, &ds_, 0);
  EXPECT_EQ(decode_map(*out), (std::map<double, std::int64_t>{{1.0, 2}, {2.0, 1}, {3.0, 3}}));
}

TEST_F(ParticleLoadTest, OpPart8MapOfAnEmptyChunkIsJustTheHeader) {
  ds_.put("empty", "none", 0, column<double>({}));
  ds_.set_records("empty", 0, 0);
  BufferPtr out = dynamic_out(ScalarType::opaque, 8);
  run("particle_topk_modes_map", {}, {out}, ParticleFieldParams{"empty", "none"}, &ds_, 0);
  EXPECT_EQ(out->byte_size(), 8u);
  EXPECT_TRUE(decode_map(*out).empty());
}

TEST_F(ParticleLoadTest, OpPart8MapFailures) {
  EXPECT_CONTAINS(failure("particle_topk_modes_map", {}, {dynamic_out(ScalarType::opaque, 64)},
                          ParticleFieldParams{"flagged", "flag"}, &ds_),
                  "unsupported particle dtype");
  EXPECT_CONTAINS(failure("particle_topk_modes_map", {}, {dynamic_out(ScalarType::opaque, 128)},
                          ParticleFieldParams{"short", "mass"}, &ds_),
                  "short particle payload");
  // Two distinct finite values need 8 + 32 bytes.
  EXPECT_CONTAINS(failure("particle_topk_modes_map", {}, {dynamic_out(ScalarType::opaque, 39)},
                          ParticleFieldParams{"dm", "mass"}, &ds_),
                  "room");
}

TEST_F(ParticleLoadTest, Kreg6TopkMapBoundIsHeaderPlusSixteenBytesPerRecord) {
  const KernelParams dm = ParticleFieldParams{"dm", "x"};
  EXPECT_EQ(bound("particle_topk_modes_map", query(dm, 0, ScalarType::opaque)),
            std::optional<std::uint64_t>(8 + 16 * 3));
  EXPECT_EQ(bound("particle_topk_modes_map", query(dm, 1, ScalarType::opaque)),
            std::optional<std::uint64_t>(8 + 16 * 2));
  const KernelParams stars = ParticleFieldParams{"stars", "mass"};
  EXPECT_EQ(bound("particle_topk_modes_map", query(stars, 0, ScalarType::opaque)), std::nullopt);
  const KernelParams empty = ParticleFieldParams{"", "x"};
  EXPECT_EQ(bound("particle_topk_modes_map", query(empty, 0, ScalarType::opaque)), std::nullopt);
}

TEST_F(ParticleKernelTest, OpPart8ValueCountsReduceAddsEqualValues) {
  const auto a = encode_map({{1.0, 2}, {5.0, 1}});
  const auto b = encode_map({{7.0, 1}, {5.0, 3}});
  const auto c = encode_map({{-2.5, 4}});
  BufferPtr out = dynamic_out(ScalarType::opaque, a.size() + b.size() + c.size());
  run("particle_value_counts_reduce", {map_chunk(a), map_chunk(b), map_chunk(c)}, {out});
  ASSERT_TRUE(out->is_committed());
  EXPECT_EQ(decode_map(*out),
            (std::map<double, std::int64_t>{{-2.5, 4}, {1.0, 2}, {5.0, 4}, {7.0, 1}}));
}

TEST_F(ParticleKernelTest, OpPart8ShortOrOverclaimingMapsDecodeAsEmpty) {
  const auto good = encode_map({{3.0, 2}});
  std::vector<std::byte> tiny(4, std::byte{0xff});
  const auto overclaim = encode_map({{9.0, 100}}, 5);  // announces 5 records, holds 1
  const auto huge = encode_map({{9.0, 100}}, std::numeric_limits<std::uint64_t>::max());
  BufferPtr out = dynamic_out(ScalarType::opaque, 256);
  run("particle_value_counts_reduce",
      {map_chunk(good), map_chunk(tiny), map_chunk(overclaim), map_chunk(huge), map_chunk({})},
      {out});
  EXPECT_EQ(decode_map(*out), (std::map<double, std::int64_t>{{3.0, 2}}));
}

TEST_F(ParticleKernelTest, OpPart8ReduceOfNothingIsAnEmptyMap) {
  BufferPtr out = dynamic_out(ScalarType::opaque, 8);
  run("particle_value_counts_reduce", {}, {out});
  EXPECT_EQ(out->byte_size(), 8u);
  EXPECT_TRUE(decode_map(*out).empty());
}

TEST_F(ParticleKernelTest, OpPart8ReduceIntoWiderDynamicDtypes) {
  // The bound divides by the dtype width, so an f64 map buffer is legal too.
  const auto a = encode_map({{1.0, 1}});
  BufferPtr out = dynamic_out(ScalarType::f64, 3);
  run("particle_value_counts_reduce", {map_chunk(a)}, {out});
  EXPECT_EQ(out->descriptor().extents[0], 3u);
  EXPECT_EQ(decode_map(*out), (std::map<double, std::int64_t>{{1.0, 1}}));
}

TEST_F(ParticleKernelTest, Kreg6ValueCountsBound) {
  auto q = [](std::vector<std::uint64_t>* sizes, ScalarType t) {
    BoundQuery b;
    b.dtype = t;
    b.input_bytes = *sizes;
    return b;
  };
  std::vector<std::uint64_t> two = {24, 40};
  EXPECT_EQ(bound("particle_value_counts_reduce", q(&two, ScalarType::opaque)),
            std::optional<std::uint64_t>(64));
  EXPECT_EQ(bound("particle_value_counts_reduce", q(&two, ScalarType::f64)),
            std::optional<std::uint64_t>(8));
  std::vector<std::uint64_t> odd = {25};
  EXPECT_EQ(bound("particle_value_counts_reduce", q(&odd, ScalarType::f64)),
            std::optional<std::uint64_t>(4));  // ceil(25 / 8)
  std::vector<std::uint64_t> small = {3};
  EXPECT_EQ(bound("particle_value_counts_reduce", q(&small, ScalarType::opaque)),
            std::optional<std::uint64_t>(8));  // never below one header
  std::vector<std::uint64_t> none;
  EXPECT_EQ(bound("particle_value_counts_reduce", q(&none, ScalarType::opaque)),
            std::optional<std::uint64_t>(8));
  std::vector<std::uint64_t> unknown = {24, 0};
  EXPECT_EQ(bound("particle_value_counts_reduce", q(&unknown, ScalarType::opaque)), std::nullopt);
}

TEST_F(ParticleKernelTest, OpPart8FinalizeOrdersByCountThenValueDescending) {
  const auto merged = encode_map({{1.0, 2}, {5.0, 4}, {7.0, 4}, {3.0, 2}, {9.0, 1}, {-1.0, 4}});
  BufferPtr out = fixed_out(ScalarType::f64, 8);
  run("particle_topk_modes_finalize", {map_chunk(merged)}, {out}, TopKModesParams{4});
  // Count 4: 7, 5, -1 (value descending); then count 2: 3 beats 1.
  expect_same_values(doubles(*out), {7.0, 5.0, -1.0, 3.0, 4.0, 4.0, 4.0, 2.0});
}

TEST_F(ParticleKernelTest, OpPart8FinalizePadsWithNanAndZeroCounts) {
  const auto merged = encode_map({{2.0, 3}, {-4.0, 5}});
  BufferPtr out = fixed_out(ScalarType::f64, 8);
  run("particle_topk_modes_finalize", {map_chunk(merged)}, {out}, TopKModesParams{4});
  expect_same_values(doubles(*out), {-4.0, 2.0, kNaN, kNaN, 5.0, 3.0, 0.0, 0.0});

  BufferPtr empty = fixed_out(ScalarType::f64, 4);
  run("particle_topk_modes_finalize", {map_chunk({std::byte{1}, std::byte{0}})}, {empty},
      TopKModesParams{2});
  expect_same_values(doubles(*empty), {kNaN, kNaN, 0.0, 0.0});
}

TEST_F(ParticleKernelTest, OpPart8FinalizeErrors) {
  const auto merged = encode_map({{2.0, 3}});
  EXPECT_CONTAINS(failure("particle_topk_modes_finalize", {map_chunk(merged)},
                          {fixed_out(ScalarType::f64, 2)}, TopKModesParams{0}),
                  "k must be positive");
  EXPECT_CONTAINS(failure("particle_topk_modes_finalize", {map_chunk(merged)},
                          {fixed_out(ScalarType::f64, 2)}, TopKModesParams{-3}),
                  "k must be positive");
  EXPECT_CONTAINS(failure("particle_topk_modes_finalize", {map_chunk(merged), map_chunk(merged)},
                          {fixed_out(ScalarType::f64, 2)}, TopKModesParams{1}),
                  "expected 1 input");
  EXPECT_CONTAINS(failure("particle_topk_modes_finalize", {}, {fixed_out(ScalarType::f64, 2)},
                          TopKModesParams{1}),
                  "expected 1 input");
  EXPECT_CONTAINS(failure("particle_topk_modes_finalize", {map_chunk(merged)},
                          {fixed_out(ScalarType::f64, 3)}, TopKModesParams{1}),
                  "exactly 2");
  EXPECT_CONTAINS(failure("particle_topk_modes_finalize", {map_chunk(merged)},
                          {fixed_out(ScalarType::f64, 2)}, ScalarParams{}),
                  "invalid parameters");
}

TEST_F(ParticleLoadTest, OpPart8MapReduceFinalizeAcrossChunks) {
  const std::vector<double> chunk0 = {4.0, 1.0, 4.0, 2.0, kNaN, 2.0};
  const std::vector<std::int64_t> chunk1 = {2, 9, 9, 9, 4, 1, 1};
  ds_.put("p", "v", 0, column<double>(chunk0));
  ds_.set_records("p", 0, chunk0.size());
  ds_.put("p", "v", 1, column<std::int64_t>(chunk1));
  ds_.set_records("p", 1, chunk1.size());

  std::vector<ConstBufferPtr> maps;
  for (std::int32_t block = 0; block < 2; ++block) {
    BufferPtr m = dynamic_out(ScalarType::opaque, 8 + 16 * 8);
    run("particle_topk_modes_map", {}, {m}, ParticleFieldParams{"p", "v"}, &ds_, block);
    maps.push_back(m);
  }
  BufferPtr merged = dynamic_out(ScalarType::opaque, maps[0]->byte_size() + maps[1]->byte_size());
  run("particle_value_counts_reduce", maps, {merged});
  const std::int64_t k = 3;
  BufferPtr top = fixed_out(ScalarType::f64, 2 * k);
  run("particle_topk_modes_finalize", {merged}, {top}, TopKModesParams{k});

  // Counting by hand: 1 x3, 2 x3, 4 x3, 9 x3 -> all tie, so values descend.
  std::map<double, std::int64_t> counts;
  for (const double v : chunk0) {
    if (std::isfinite(v)) ++counts[v];
  }
  for (const std::int64_t v : chunk1)
    ++counts[static_cast<double>(v)];
  std::vector<std::pair<double, std::int64_t>> order(counts.begin(), counts.end());
  std::sort(order.begin(), order.end(), [](const auto& x, const auto& y) {
    return x.second != y.second ? x.second > y.second : x.first > y.first;
  });
  std::vector<double> want(2 * k, kNaN);
  for (std::int64_t i = 0; i < k; ++i) {
    want[i] = order[i].first;
    want[k + i] = static_cast<double>(order[i].second);
  }
  expect_same_values(doubles(*top), want);
  expect_same_values(want, {9.0, 4.0, 2.0, 3.0, 3.0, 3.0});
}

}  // namespace
}  // namespace kangaroo
