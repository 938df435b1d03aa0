// Particle kernels over in-memory rank-1 chunks (§10.10, OP-PART-1..8).
//
// Every particle array is f64 rank 1 and every mask u8 rank 1 (BUF-5). The
// per-element formulas live in kangaroo/kernels/math/particle_math.h so that a
// device implementation shares them; this file only validates buffers, walks
// the elements and sizes the outputs.
#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
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

namespace pm = math::particle;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

std::string kernel_name(const KernelContext& ctx) {
  return std::string(ctx.kernel);
}

std::string plural(std::size_t n, std::string_view noun) {
  return std::to_string(n) + " " + std::string(noun) + (n == 1 ? "" : "s");
}

void require_input_count(const KernelContext& ctx, std::size_t expected) {
  if (ctx.inputs.size() != expected) {
    fail_kernel_params(ctx.kernel, "expected " + plural(expected, "input") + ", got " +
                                       std::to_string(ctx.inputs.size()));
  }
}

// Particle kernels write exactly one output; a second one would stay
// uncommitted and fail later with a less helpful message.
void require_single_output(const KernelContext& ctx) {
  if (ctx.outputs.size() != 1 || !ctx.outputs[0]) {
    fail_kernel_params(ctx.kernel, "expected 1 output, got " + std::to_string(ctx.outputs.size()));
  }
}

const Buffer& input_buffer(const KernelContext& ctx, std::size_t index) {
  const ConstBufferPtr& buf = ctx.inputs[index];
  if (!buf) fail_kernel_params(ctx.kernel, "input " + std::to_string(index) + " is missing");
  return *buf;
}

// Typed rank-1 input. A rank-1 buffer with more than one element is dense, and
// a single element sits at the base whatever its stride, so a span is exact.
template <class T>
std::span<const T> input_column(const KernelContext& ctx, std::size_t index) {
  const Buffer& buf = input_buffer(ctx, index);
  if (buf.scalar() != scalar_of<T>() || buf.rank() != 1) {
    fail(ErrorKind::kernel, kernel_name(ctx) + ": input " + std::to_string(index) + " must be " +
                                std::string(scalar_name(scalar_of<T>())) + " rank 1 (got " +
                                buf.descriptor().to_string() + ")");
  }
  const std::uint64_t n = buf.descriptor().extents[0];
  if (n == 0) return {};
  const GridView<const T> view = buf.view<T>(1);
  return {view.base, static_cast<std::size_t>(n)};
}

std::uint64_t shortest(std::initializer_list<std::uint64_t> lengths) {
  return std::min(lengths);
}

// How a static (non-dynamic) output must relate to the element count a kernel
// produces. Dynamic outputs only need the capacity and are committed to it.
enum class StaticExtent {
  exact,   // masks, scalars, histograms, top-k: the size is part of the contract
  prefix,  // truncating/selecting kernels: extra elements are filled
};

// One numeric output being written: validates dtype and room up front so the
// element loop can never run past the allocation.
template <class T>
class OutputSlot {
 public:
  OutputSlot(const KernelContext& ctx, std::uint64_t n, StaticExtent rule)
      : buffer_(*ctx.outputs[0]), n_(n) {
    const std::string what = kernel_name(ctx) + ": output 0";
    if (buffer_.scalar() != scalar_of<T>()) {
      fail(ErrorKind::kernel, what + " must be " + std::string(scalar_name(scalar_of<T>())) +
                                  " (got " + std::string(scalar_name(buffer_.scalar())) + ")");
    }
    if (buffer_.is_dynamic()) {
      slots_ = buffer_.capacity_elements();
      if (n_ > slots_) {
        fail(ErrorKind::kernel, what + " has capacity for " + plural(slots_, "element") + " but " +
                                    std::to_string(n_) + " are needed");
      }
    } else {
      if (!buffer_.descriptor().is_c_contiguous()) {
        fail(ErrorKind::kernel,
             what + " must be dense (got " + buffer_.descriptor().to_string() + ")");
      }
      slots_ = buffer_.descriptor().element_count();
      const bool fits = rule == StaticExtent::exact ? slots_ == n_ : slots_ >= n_;
      if (!fits) {
        fail(ErrorKind::kernel, what + " holds " + plural(slots_, "element") + " but " +
                                    (rule == StaticExtent::exact ? "exactly " : "at least ") +
                                    std::to_string(n_) + " are required");
      }
    }
    if (slots_ > 0) data_ = buffer_.elements<T>();
  }

  T* data() const { return data_; }

  // A dynamic output is committed to the produced length (BUF-6); a static
  // one keeps its extents, so its unused tail gets `tail_fill` instead of
  // being left uninitialized (ALLOC-6).
  void finish(T tail_fill) {
    if (buffer_.is_dynamic()) {
      buffer_.commit(n_);
      return;
    }
    std::fill(data_ + n_, data_ + slots_, tail_fill);
  }

 private:
  Buffer& buffer_;
  std::uint64_t n_;
  std::uint64_t slots_ = 0;
  T* data_ = nullptr;
};

template <class T>
void write_single_value(const KernelContext& ctx, T value) {
  OutputSlot<T> out(ctx, 1, StaticExtent::exact);
  out.data()[0] = value;
  out.finish(T{});
}

// ---------------------------------------------------------------------------
// OP-PART-2 / OP-PART-3 masks

template <pm::CompareOp Op>
void compare_mask_kernel(KernelContext& ctx) {
  require_input_count(ctx, 1);
  require_single_output(ctx);
  const double s = ctx.param<ScalarParams>().scalar;
  const std::span<const double> x = input_column<double>(ctx, 0);
  OutputSlot<std::uint8_t> out(ctx, x.size(), StaticExtent::exact);
  std::uint8_t* dst = out.data();
  for (std::size_t i = 0; i < x.size(); ++i)
    dst[i] = pm::mask_byte(pm::compare(Op, x[i], s));
  out.finish(0);
}

void isin_mask_kernel(KernelContext& ctx) {
  require_input_count(ctx, 1);
  require_single_output(ctx);
  const std::vector<double>& values = ctx.param<ValuesParams>().values;
  const std::span<const double> x = input_column<double>(ctx, 0);
  OutputSlot<std::uint8_t> out(ctx, x.size(), StaticExtent::exact);
  std::uint8_t* dst = out.data();
  for (std::size_t i = 0; i < x.size(); ++i) {
    dst[i] = pm::mask_byte(pm::is_in(x[i], values.data(), values.size()));
  }
  out.finish(0);
}

void isfinite_mask_kernel(KernelContext& ctx) {
  require_input_count(ctx, 1);
  require_single_output(ctx);
  const std::span<const double> x = input_column<double>(ctx, 0);
  OutputSlot<std::uint8_t> out(ctx, x.size(), StaticExtent::exact);
  std::uint8_t* dst = out.data();
  for (std::size_t i = 0; i < x.size(); ++i)
    dst[i] = pm::mask_byte(pm::is_finite(x[i]));
  out.finish(0);
}

void and_mask_kernel(KernelContext& ctx) {
  require_input_count(ctx, 2);
  require_single_output(ctx);
  const std::span<const std::uint8_t> a = input_column<std::uint8_t>(ctx, 0);
  const std::span<const std::uint8_t> b = input_column<std::uint8_t>(ctx, 1);
  const std::uint64_t n = shortest({a.size(), b.size()});
  OutputSlot<std::uint8_t> out(ctx, n, StaticExtent::prefix);
  std::uint8_t* dst = out.data();
  for (std::uint64_t i = 0; i < n; ++i)
    dst[i] = pm::mask_byte(a[i] != 0 && b[i] != 0);
  out.finish(0);
}

// ---------------------------------------------------------------------------
// OP-PART-4 filter

void filter_kernel(KernelContext& ctx) {
  require_input_count(ctx, 2);
  require_single_output(ctx);
  const std::span<const double> values = input_column<double>(ctx, 0);
  const std::span<const std::uint8_t> mask = input_column<std::uint8_t>(ctx, 1);
  const std::uint64_t n = shortest({values.size(), mask.size()});
  // Counting first sizes the output exactly, so a capacity that only fits the
  // selected values is still enough.
  const auto selected = static_cast<std::uint64_t>(
      std::count_if(mask.begin(), mask.begin() + static_cast<std::ptrdiff_t>(n),
                    [](std::uint8_t m) { return m != 0; }));
  OutputSlot<double> out(ctx, selected, StaticExtent::prefix);
  double* dst = out.data();
  std::uint64_t w = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    if (mask[i] != 0) dst[w++] = values[i];
  }
  out.finish(kNaN);
}

// ---------------------------------------------------------------------------
// OP-PART-5 arithmetic

template <pm::BinaryOp Op>
void binary_arith_kernel(KernelContext& ctx) {
  require_input_count(ctx, 2);
  require_single_output(ctx);
  const std::span<const double> a = input_column<double>(ctx, 0);
  const std::span<const double> b = input_column<double>(ctx, 1);
  const std::uint64_t n = shortest({a.size(), b.size()});
  OutputSlot<double> out(ctx, n, StaticExtent::prefix);
  double* dst = out.data();
  for (std::uint64_t i = 0; i < n; ++i)
    dst[i] = pm::apply(Op, a[i], b[i]);
  out.finish(kNaN);
}

// `ScalarFirst` gives the reflected forms (s - x, s / x, s ** x).
template <pm::BinaryOp Op, bool ScalarFirst>
void scalar_arith_kernel(KernelContext& ctx) {
  require_input_count(ctx, 1);
  require_single_output(ctx);
  const double s = ctx.param<ScalarParams>().scalar;
  const std::span<const double> x = input_column<double>(ctx, 0);
  OutputSlot<double> out(ctx, x.size(), StaticExtent::prefix);
  double* dst = out.data();
  for (std::size_t i = 0; i < x.size(); ++i) {
    dst[i] = ScalarFirst ? pm::apply(Op, s, x[i]) : pm::apply(Op, x[i], s);
  }
  out.finish(kNaN);
}

void distance3_kernel(KernelContext& ctx) {
  require_input_count(ctx, 6);
  require_single_output(ctx);
  std::span<const double> c[6];
  for (std::size_t k = 0; k < 6; ++k)
    c[k] = input_column<double>(ctx, k);
  const std::uint64_t n =
      shortest({c[0].size(), c[1].size(), c[2].size(), c[3].size(), c[4].size(), c[5].size()});
  OutputSlot<double> out(ctx, n, StaticExtent::prefix);
  double* dst = out.data();
  for (std::uint64_t i = 0; i < n; ++i) {
    dst[i] = pm::distance3(c[0][i], c[1][i], c[2][i], c[3][i], c[4][i], c[5][i]);
  }
  out.finish(kNaN);
}

// ---------------------------------------------------------------------------
// OP-PART-6 scalars

void sum_kernel(KernelContext& ctx) {
  require_input_count(ctx, 1);
  require_single_output(ctx);
  const std::span<const double> x = input_column<double>(ctx, 0);
  // Plain index-order accumulation: NaN and infinities propagate as IEEE says.
  double total = 0.0;
  for (const double v : x)
    total += v;
  write_single_value<double>(ctx, total);
}

void count_kernel(KernelContext& ctx) {
  require_input_count(ctx, 1);
  require_single_output(ctx);
  const std::span<const std::uint8_t> mask = input_column<std::uint8_t>(ctx, 0);
  const auto n = std::count_if(mask.begin(), mask.end(), [](std::uint8_t m) { return m != 0; });
  write_single_value<std::int64_t>(ctx, static_cast<std::int64_t>(n));
}

void len_f64_kernel(KernelContext& ctx) {
  require_input_count(ctx, 1);
  require_single_output(ctx);
  const std::span<const double> x = input_column<double>(ctx, 0);
  write_single_value<std::int64_t>(ctx, static_cast<std::int64_t>(x.size()));
}

template <bool IsMax>
void extreme_kernel(KernelContext& ctx) {
  require_input_count(ctx, 1);
  require_single_output(ctx);
  const bool finite_only = ctx.param<FiniteOnlyParams>().finite_only;
  const std::span<const double> x = input_column<double>(ctx, 0);
  double acc = IsMax ? -kInf : kInf;
  for (const double v : x) {
    acc = IsMax ? pm::max_step(acc, v, finite_only) : pm::min_step(acc, v, finite_only);
  }
  write_single_value<double>(ctx, acc);
}

// ---------------------------------------------------------------------------
// OP-PART-7 histograms

// Bin search needs ordered, comparable edges; checked once per task.
void validate_edges(const KernelContext& ctx, const std::vector<double>& edges) {
  if (edges.size() < 2) {
    fail_kernel_params(ctx.kernel,
                       "edges must hold at least 2 values, got " + std::to_string(edges.size()));
  }
  for (std::size_t i = 0; i < edges.size(); ++i) {
    if (std::isnan(edges[i])) {
      fail_kernel_params(ctx.kernel, "edge " + std::to_string(i) + " is NaN");
    }
    if (i > 0 && edges[i] < edges[i - 1]) {
      fail_kernel_params(ctx.kernel, "edges must be non-decreasing (edge " + std::to_string(i) +
                                         " is below edge " + std::to_string(i - 1) + ")");
    }
  }
}

template <bool Weighted>
void histogram_kernel(KernelContext& ctx) {
  const auto& params = ctx.param<ParticleHistogramParams>();
  require_input_count(ctx, Weighted ? 2 : 1);
  require_single_output(ctx);
  validate_edges(ctx, params.edges);
  const std::span<const double> x = input_column<double>(ctx, 0);
  std::span<const double> w;
  if constexpr (Weighted) {
    w = input_column<double>(ctx, 1);
    if (w.size() != x.size()) {
      fail_kernel_params(ctx.kernel, "values and weights must have equal length (got " +
                                         std::to_string(x.size()) + " and " +
                                         std::to_string(w.size()) + ")");
    }
  }
  const double* edges = params.edges.data();
  const auto n_edges = static_cast<std::int64_t>(params.edges.size());
  const auto bins = static_cast<std::size_t>(n_edges - 1);
  OutputSlot<double> out(ctx, bins, StaticExtent::exact);
  // Accumulate locally: the output may be uninitialized storage (ALLOC-6).
  std::vector<double> sums(bins, 0.0);
  for (std::size_t i = 0; i < x.size(); ++i) {
    const std::int64_t b = pm::histogram_bin(edges, n_edges, x[i]);
    if (b < 0) continue;
    if constexpr (Weighted) {
      if (!pm::usable_weight(w[i])) continue;
      sums[static_cast<std::size_t>(b)] += w[i];
    } else {
      sums[static_cast<std::size_t>(b)] += 1.0;
    }
  }
  if (params.density) {
    double total = 0.0;
    for (const double s : sums)
      total += s;
    for (std::size_t b = 0; b < bins; ++b) {
      sums[b] = pm::density_value(sums[b], total, edges[b + 1] - edges[b]);
    }
  }
  std::copy(sums.begin(), sums.end(), out.data());
  out.finish(0.0);
}

// ---------------------------------------------------------------------------
// OP-PART-1 particle reads

struct ParticleChunk {
  ConstBufferPtr buffer;
  std::uint64_t count = 0;  // records to take from the front of `buffer`
};

std::string chunk_label(const ParticleFieldParams& p, std::int64_t chunk) {
  return p.particle_type + "/" + p.field_name + " chunk " + std::to_string(chunk);
}

ParticleChunk read_particle_chunk(const KernelContext& ctx) {
  const auto& params = ctx.param<ParticleFieldParams>();
  if (params.particle_type.empty()) fail_kernel_params(ctx.kernel, "particle_type is empty");
  if (params.field_name.empty()) fail_kernel_params(ctx.kernel, "field_name is empty");
  const std::int64_t chunk = ctx.block;
  const std::string label = chunk_label(params, chunk);
  if (ctx.dataset == nullptr) {
    fail_kernel(kernel_name(ctx) + ": no dataset backend to read particle field " + label);
  }
  ParticleChunk out;
  out.buffer = ctx.dataset->read_particle_field(params.particle_type, params.field_name, chunk);
  if (!out.buffer) fail_kernel(kernel_name(ctx) + ": backend returned no data for " + label);
  const Buffer& buf = *out.buffer;
  const ScalarType t = buf.scalar();
  if (t != ScalarType::f32 && t != ScalarType::f64 && t != ScalarType::i64) {
    fail_kernel(kernel_name(ctx) + ": unsupported particle dtype " + std::string(scalar_name(t)) +
                " for " + label + " (expected float32, float64 or int64)");
  }
  if (buf.rank() != 1) {
    fail_kernel(kernel_name(ctx) + ": particle field " + label + " must be rank 1 (got " +
                buf.descriptor().to_string() + ")");
  }
  const std::uint64_t available = buf.descriptor().extents[0];
  // The backend's record count is authoritative; a backend that cannot tell
  // lets the payload define the count.
  out.count = ctx.dataset->particle_record_count(params.particle_type, chunk).value_or(available);
  if (available < out.count) {
    fail_kernel(kernel_name(ctx) + ": short particle payload for " + label + ": " +
                plural(available, "element") + " for " + std::to_string(out.count) + " records");
  }
  return out;
}

template <class T>
void widen_to_f64(const Buffer& src, std::uint64_t count, double* dst) {
  if (count == 0) return;
  const T* values = src.view<T>(1).base;
  for (std::uint64_t i = 0; i < count; ++i)
    dst[i] = static_cast<double>(values[i]);
}

void convert_particle_values(const ParticleChunk& chunk, double* dst) {
  switch (chunk.buffer->scalar()) {
    case ScalarType::f64:
      widen_to_f64<double>(*chunk.buffer, chunk.count, dst);
      return;
    case ScalarType::f32:
      widen_to_f64<float>(*chunk.buffer, chunk.count, dst);
      return;
    case ScalarType::i64:
      widen_to_f64<std::int64_t>(*chunk.buffer, chunk.count, dst);
      return;
    default:
      break;
  }
  fail(ErrorKind::internal, "particle dtype was not validated before conversion");
}

void load_field_chunk_kernel(KernelContext& ctx) {
  require_input_count(ctx, 0);
  require_single_output(ctx);
  const ParticleChunk chunk = read_particle_chunk(ctx);
  OutputSlot<double> out(ctx, chunk.count, StaticExtent::prefix);
  convert_particle_values(chunk, out.data());
  out.finish(kNaN);
}

// ---------------------------------------------------------------------------
// OP-PART-8 top-k modes

struct ModeRecord {
  double value = 0.0;
  std::int64_t count = 0;
};

constexpr std::size_t kMapHeaderBytes = 8;
constexpr std::size_t kMapRecordBytes = 16;

void put_u64(std::byte* dst, std::uint64_t v) {
  for (int b = 0; b < 8; ++b)
    dst[b] = static_cast<std::byte>((v >> (8 * b)) & 0xffU);
}

std::uint64_t get_u64(const std::byte* src) {
  std::uint64_t v = 0;
  for (int b = 0; b < 8; ++b)
    v |= std::uint64_t{std::to_integer<std::uint8_t>(src[b])} << (8 * b);
  return v;
}

// Little-endian byte by byte, so the encoding does not depend on the host.
std::vector<std::byte> encode_modes(const std::vector<ModeRecord>& records) {
  std::vector<std::byte> out(kMapHeaderBytes + kMapRecordBytes * records.size());
  put_u64(out.data(), records.size());
  std::byte* p = out.data() + kMapHeaderBytes;
  for (const ModeRecord& r : records) {
    put_u64(p, std::bit_cast<std::uint64_t>(r.value));
    put_u64(p + 8, static_cast<std::uint64_t>(r.count));
    p += kMapRecordBytes;
  }
  return out;
}

// Appends the records of one map. A payload too short for its header or for
// the record count it announces reads as empty (OP-PART-8). Non-finite keys
// are dropped: the map kernel never writes them and they would break ordering.
void decode_modes_into(std::span<const std::byte> payload, std::vector<ModeRecord>& out) {
  if (payload.size() < kMapHeaderBytes) return;
  const std::uint64_t n = get_u64(payload.data());
  if (n > (payload.size() - kMapHeaderBytes) / kMapRecordBytes) return;
  const std::byte* p = payload.data() + kMapHeaderBytes;
  for (std::uint64_t i = 0; i < n; ++i, p += kMapRecordBytes) {
    const double value = std::bit_cast<double>(get_u64(p));
    if (!pm::is_finite(value)) continue;
    out.push_back({value, static_cast<std::int64_t>(get_u64(p + 8))});
  }
}

// Sorts by value and folds equal values (counts add). -0 and +0 are one value,
// kept as +0 so the result does not depend on which was seen first.
std::vector<ModeRecord> merge_modes(const KernelContext& ctx, std::vector<ModeRecord> records) {
  std::sort(records.begin(), records.end(),
            [](const ModeRecord& a, const ModeRecord& b) { return a.value < b.value; });
  std::vector<ModeRecord> merged;
  for (const ModeRecord& r : records) {
    if (!merged.empty() && merged.back().value == r.value) {
      if (__builtin_add_overflow(merged.back().count, r.count, &merged.back().count)) {
        fail_kernel(kernel_name(ctx) + ": value count overflows int64");
      }
    } else {
      merged.push_back({r.value == 0.0 ? 0.0 : r.value, r.count});
    }
  }
  return merged;
}

// Writes an encoded map into output 0 of any dtype: the bytes are the payload.
void write_map_output(const KernelContext& ctx, const std::vector<std::byte>& payload) {
  Buffer& buf = *ctx.outputs[0];
  const std::string what = kernel_name(ctx) + ": output 0";
  const std::uint64_t width = std::max<std::uint64_t>(1, buf.descriptor().width());
  const std::uint64_t room =
      buf.is_dynamic() ? checked_mul(buf.capacity_elements(), width) : buf.byte_size();
  if (payload.size() > room) {
    fail(ErrorKind::kernel, what + " has room for " + plural(room, "byte") + " but the map needs " +
                                std::to_string(payload.size()));
  }
  if (buf.is_dynamic() && payload.size() % width != 0) {
    fail(ErrorKind::kernel, what + " element width " + std::to_string(width) +
                                " does not divide the map size " + std::to_string(payload.size()));
  }
  std::byte* dst = buf.mutable_data();
  std::memcpy(dst, payload.data(), payload.size());
  if (buf.is_dynamic()) {
    buf.commit(payload.size() / width);
  } else {
    // Trailing zero bytes sit after the announced records, so decoding ignores them.
    std::memset(dst + payload.size(), 0, room - payload.size());
  }
}

void topk_modes_map_kernel(KernelContext& ctx) {
  require_input_count(ctx, 0);
  require_single_output(ctx);
  const ParticleChunk chunk = read_particle_chunk(ctx);
  std::vector<double> values(chunk.count);
  convert_particle_values(chunk, values.data());
  std::vector<ModeRecord> records;
  records.reserve(values.size());
  for (const double v : values) {
    if (pm::is_finite(v)) records.push_back({v, 1});
  }
  write_map_output(ctx, encode_modes(merge_modes(ctx, std::move(records))));
}

void value_counts_reduce_kernel(KernelContext& ctx) {
  require_single_output(ctx);
  std::vector<ModeRecord> records;
  for (std::size_t i = 0; i < ctx.inputs.size(); ++i) {
    decode_modes_into(input_buffer(ctx, i).bytes(), records);
  }
  write_map_output(ctx, encode_modes(merge_modes(ctx, std::move(records))));
}

void topk_modes_finalize_kernel(KernelContext& ctx) {
  const std::int64_t k = ctx.param<TopKModesParams>().k;
  if (k <= 0) fail_kernel_params(ctx.kernel, "k must be positive (got " + std::to_string(k) + ")");
  require_input_count(ctx, 1);
  require_single_output(ctx);
  std::vector<ModeRecord> records;
  decode_modes_into(input_buffer(ctx, 0).bytes(), records);
  // Folding again makes an unmerged map (e.g. a single chunk's) safe too.
  std::vector<ModeRecord> modes = merge_modes(ctx, std::move(records));
  const auto k_u = static_cast<std::uint64_t>(k);
  OutputSlot<double> out(ctx, checked_mul(2, k_u), StaticExtent::exact);
  const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(k_u, modes.size()));
  std::partial_sort(modes.begin(), modes.begin() + static_cast<std::ptrdiff_t>(take), modes.end(),
                    [](const ModeRecord& a, const ModeRecord& b) {
                      return pm::mode_precedes(a.value, a.count, b.value, b.count);
                    });
  double* values = out.data();
  double* counts = out.data() + k_u;
  for (std::uint64_t i = 0; i < k_u; ++i) {
    const bool present = i < take;
    values[i] = present ? modes[i].value : kNaN;
    counts[i] = present ? static_cast<double>(modes[i].count) : 0.0;
  }
  out.finish(kNaN);
}

// ---------------------------------------------------------------------------
// KREG-6 bound evaluators

std::optional<std::uint64_t> particle_records(const BoundQuery& q) {
  if (q.dataset == nullptr || q.params == nullptr) return std::nullopt;
  const auto* params = std::get_if<ParticleFieldParams>(q.params);
  if (params == nullptr || params->particle_type.empty()) return std::nullopt;
  return q.dataset->particle_record_count(params->particle_type, q.block);
}

std::optional<std::uint64_t> load_field_bound(const BoundQuery& q) {
  return particle_records(q);
}

// Counted in bytes whatever the dtype (reference evaluator); never too small
// since every element is at least one byte wide.
std::optional<std::uint64_t> topk_map_bound(const BoundQuery& q) {
  const std::optional<std::uint64_t> records = particle_records(q);
  if (!records) return std::nullopt;
  return checked_add(kMapHeaderBytes, checked_mul(kMapRecordBytes, *records));
}

// A merged map never outgrows its inputs taken together: it holds at most
// the sum of their records under a single header.
std::optional<std::uint64_t> value_counts_bound(const BoundQuery& q) {
  std::uint64_t total = 0;
  for (const std::uint64_t bytes : q.input_bytes) {
    if (bytes == 0) return std::nullopt;
    total = checked_add(total, bytes);
  }
  const std::uint64_t bytes = std::max<std::uint64_t>(kMapHeaderBytes, total);
  const std::uint64_t width = std::max<std::uint64_t>(1, scalar_width(q.dtype));
  return bytes / width + (bytes % width != 0 ? 1 : 0);
}

}  // namespace

void register_particle_kernels(KernelRegistry& registry) {
  using pm::BinaryOp;
  using pm::CompareOp;
  using P = ParamType;
  auto add = [&registry](std::string name, P params, KernelFn fn, int n_inputs,
                         BoundFn bound = nullptr) {
    registry.add(make_kernel(std::move(name), params, fn, n_inputs, 1, bound));
  };

  add("particle_load_field_chunk_f64", P::ParticleFieldParams, load_field_chunk_kernel, 0,
      load_field_bound);

  add("particle_eq_mask", P::ScalarParams, compare_mask_kernel<CompareOp::eq>, 1);
  add("particle_ne_mask", P::ScalarParams, compare_mask_kernel<CompareOp::ne>, 1);
  add("particle_lt_mask", P::ScalarParams, compare_mask_kernel<CompareOp::lt>, 1);
  add("particle_le_mask", P::ScalarParams, compare_mask_kernel<CompareOp::le>, 1);
  add("particle_gt_mask", P::ScalarParams, compare_mask_kernel<CompareOp::gt>, 1);
  add("particle_ge_mask", P::ScalarParams, compare_mask_kernel<CompareOp::ge>, 1);
  add("particle_abs_lt_mask", P::ScalarParams, compare_mask_kernel<CompareOp::abs_lt>, 1);
  add("particle_isin_mask", P::ValuesParams, isin_mask_kernel, 1);
  add("particle_isfinite_mask", P::none, isfinite_mask_kernel, 1);
  add("particle_and_mask", P::none, and_mask_kernel, 2);
  add("particle_filter", P::none, filter_kernel, 2);

  add("particle_add", P::none, binary_arith_kernel<BinaryOp::add>, 2);
  add("particle_subtract", P::none, binary_arith_kernel<BinaryOp::subtract>, 2);
  add("particle_multiply", P::none, binary_arith_kernel<BinaryOp::multiply>, 2);
  add("particle_divide", P::none, binary_arith_kernel<BinaryOp::divide>, 2);
  add("particle_power", P::none, binary_arith_kernel<BinaryOp::power>, 2);
  add("particle_add_scalar", P::ScalarParams, scalar_arith_kernel<BinaryOp::add, false>, 1);
  add("particle_subtract_scalar", P::ScalarParams, scalar_arith_kernel<BinaryOp::subtract, false>,
      1);
  add("particle_rsubtract_scalar", P::ScalarParams, scalar_arith_kernel<BinaryOp::subtract, true>,
      1);
  add("particle_multiply_scalar", P::ScalarParams, scalar_arith_kernel<BinaryOp::multiply, false>,
      1);
  add("particle_divide_scalar", P::ScalarParams, scalar_arith_kernel<BinaryOp::divide, false>, 1);
  add("particle_rdivide_scalar", P::ScalarParams, scalar_arith_kernel<BinaryOp::divide, true>, 1);
  add("particle_power_scalar", P::ScalarParams, scalar_arith_kernel<BinaryOp::power, false>, 1);
  add("particle_rpower_scalar", P::ScalarParams, scalar_arith_kernel<BinaryOp::power, true>, 1);
  add("particle_distance3", P::none, distance3_kernel, 6);

  add("particle_sum", P::none, sum_kernel, 1);
  add("particle_count", P::none, count_kernel, 1);
  add("particle_len_f64", P::none, len_f64_kernel, 1);
  add("particle_min", P::FiniteOnlyParams, extreme_kernel<false>, 1);
  add("particle_max", P::FiniteOnlyParams, extreme_kernel<true>, 1);

  add("particle_histogram1d", P::ParticleHistogramParams, histogram_kernel<false>, 1);
  add("particle_histogram1d_weighted", P::ParticleHistogramParams, histogram_kernel<true>, 2);

  add("particle_topk_modes_map", P::ParticleFieldParams, topk_modes_map_kernel, 0, topk_map_bound);
  // Variadic: any number of maps; 2 documents the usual pairwise fan-in.
  add("particle_value_counts_reduce", P::none, value_counts_reduce_kernel, 2, value_counts_bound);
  add("particle_topk_modes_finalize", P::TopKModesParams, topk_modes_finalize_kernel, 1);
}

}  // namespace kangaroo
