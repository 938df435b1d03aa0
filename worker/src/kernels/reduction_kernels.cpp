// Reduction helpers (OP-RED-1..5): elementwise sums of partial images and
// histograms, slice/projection finalization, and scalar particle reducers.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "kangaroo/kernels/math/extrema.h"
#include "kangaroo/kernels/register.h"
#include "kernel_support.h"

namespace kangaroo {

namespace {

namespace ks = kernel_support;

constexpr std::size_t kStagingElements = 4096;
// Elements of an image per part offered to idle threads (TaskHelpers).
constexpr std::uint64_t kElementsPerPart = 128 * 1024;

// Descriptors are identical and dense (BUF-2), so element e of the physical
// storage is the same logical element in every buffer. Sums accumulate in
// float64 (OP-GEN-2) in input order, starting from zero.
template <class T>
void sum_identical(std::span<const ConstBufferPtr> inputs, Buffer& out, std::uint64_t n) {
  std::vector<const T*> sources;
  sources.reserve(inputs.size());
  for (const auto& in : inputs)
    sources.push_back(reinterpret_cast<const T*>(in->data()));
  T* dst = reinterpret_cast<T*>(out.mutable_data());
  for (std::uint64_t e = 0; e < n; ++e) {
    double acc = 0.0;
    for (const T* src : sources)
      acc += static_cast<double>(src[e]);
    dst[e] = static_cast<T>(acc);
  }
}

// The part of a rank-2 input that may hold nonzeros: its hint, else all of it.
NonzeroRect nonzero_part(const Buffer& b) {
  if (const auto& r = b.nonzero_rect()) return *r;
  const Descriptor& d = b.descriptor();
  return {0, d.extents[0], 0, d.extents[1]};
}

// Sum of rank-2 row-major images that carry nonzero-rectangle hints; only each
// input's rectangle is read (from its stored rows when it is a compact image)
// and the output becomes a compact image of the rectangles' union. Bit for
// bit the result of sum_identical: that adds every input in order to an
// accumulator starting at +0.0, and the terms skipped here are the exact zeros
// outside an input's rectangle. Adding a zero never changes an accumulator
// that started at +0.0 (it cannot become -0.0), and elements outside every
// rectangle stay +0.0, which is what the dense sum stores there too. f64 adds
// in place into the output, which plays the accumulator; f32 keeps a float64
// accumulator per row and rounds once, like the dense sum.
template <class T>
void sum_images(const KernelContext& ctx, std::string_view kernel) {
  const std::span<const ConstBufferPtr> inputs = ctx.inputs;
  const std::uint64_t cols = ks::output_at(ctx, kernel, 0).descriptor().extents[1];
  std::vector<NonzeroRect> rects;
  std::vector<const T*> firsts;  // element (rect.row_begin, rect.col_begin)
  std::vector<std::uint64_t> pitches;
  rects.reserve(inputs.size());
  ks::PixelFootprint all;
  for (const auto& in : inputs) {
    const NonzeroRect r = nonzero_part(*in);  // a compact image's hint is its stored rectangle
    rects.push_back(r);
    if (r.empty()) {
      firsts.push_back(nullptr);
      pitches.push_back(0);
      continue;
    }
    if (in->is_compact()) {
      firsts.push_back(reinterpret_cast<const T*>(in->rect_row(r.row_begin)));
      pitches.push_back(r.col_end - r.col_begin);
    } else {
      firsts.push_back(reinterpret_cast<const T*>(in->data()) + r.row_begin * cols + r.col_begin);
      pitches.push_back(cols);
    }
    all.add(static_cast<std::int64_t>(r.row_begin), static_cast<std::int64_t>(r.row_end) - 1,
            static_cast<std::int64_t>(r.col_begin), static_cast<std::int64_t>(r.col_end) - 1);
  }
  const NonzeroRect u = all.rect();
  const auto area = [](const NonzeroRect& r) {
    return r.empty() ? std::uint64_t{0} : (r.row_end - r.row_begin) * (r.col_end - r.col_begin);
  };
  std::uint64_t covered = 0;
  for (const NonzeroRect& r : rects) covered += area(r);
  // A union mostly made of gaps between the inputs (blocks far apart) stays
  // in the lazily zeroed full-size output, where the gaps cost nothing;
  // otherwise the output stores just the union.
  T* dst = nullptr;
  std::uint64_t pitch = 0;
  if (area(u) > 2 * covered) {
    Buffer& out = ks::output_at(ctx, kernel, 0);
    const bool zero = out.known_zero();
    T* base = reinterpret_cast<T*>(out.mutable_data());
    if (!zero) std::fill_n(base, out.descriptor().element_count(), T{0});
    out.set_nonzero_rect(u);
    dst = base + u.row_begin * cols + u.col_begin;
    pitch = cols;
  } else {
    dst = ks::compact_image_output<T>(ctx, kernel, 0, u);
    pitch = u.col_end - u.col_begin;
  }
  if (u.empty()) return;
  const std::uint64_t width = u.col_end - u.col_begin;
  // Output element (row, c) of the union.
  const auto out_at = [&](std::uint64_t row, std::uint64_t c) {
    return dst + (row - u.row_begin) * pitch + (c - u.col_begin);
  };
  // Large unions are split into bands of rows for idle threads; every
  // element still adds its inputs in input order.
  const std::uint64_t rows = u.row_end - u.row_begin;
  const std::size_t parts = static_cast<std::size_t>(
      std::clamp<std::uint64_t>(rows * width / kElementsPerPart, 1, std::min<std::uint64_t>(rows, 8)));
  ctx.for_parts(parts, [&](std::size_t part) {
    const std::uint64_t b0 = u.row_begin + rows * part / parts;
    const std::uint64_t b1 = u.row_begin + rows * (part + 1) / parts;
    if constexpr (std::is_same_v<T, double>) {
      for (std::size_t i = 0; i < inputs.size(); ++i) {
        const NonzeroRect& r = rects[i];
        if (r.empty()) continue;
        const std::uint64_t n = r.col_end - r.col_begin;
        for (std::uint64_t row = std::max(b0, r.row_begin); row < std::min(b1, r.row_end); ++row) {
          const T* src = firsts[i] + (row - r.row_begin) * pitches[i];
          T* o = out_at(row, r.col_begin);
          for (std::uint64_t c = 0; c < n; ++c)
            o[c] += src[c];
        }
      }
    } else {
      std::vector<double> acc(static_cast<std::size_t>(width));
      for (std::uint64_t row = b0; row < b1; ++row) {
        std::fill(acc.begin(), acc.end(), 0.0);
        for (std::size_t i = 0; i < inputs.size(); ++i) {
          const NonzeroRect& r = rects[i];
          if (r.empty() || row < r.row_begin || row >= r.row_end) continue;
          const T* src = firsts[i] + (row - r.row_begin) * pitches[i];
          for (std::uint64_t c = r.col_begin; c < r.col_end; ++c)
            acc[c - u.col_begin] += static_cast<double>(src[c - r.col_begin]);
        }
        T* o = out_at(row, u.col_begin);
        for (std::uint64_t c = 0; c < width; ++c)
          o[c] = static_cast<T>(acc[c]);
      }
    }
  });
}

// OP-RED-1 / OP-RED-2.
void sum_reduce(const KernelContext& ctx, std::string_view kernel, std::size_t min_inputs) {
  Buffer& out = ks::output_at(ctx, kernel, 0);
  if (!ks::is_real(out.scalar())) {
    fail_kernel(std::string(kernel) + ": output must be f32 or f64 (got " +
                out.descriptor().to_string() + ")");
  }
  if (ctx.inputs.size() < min_inputs) {
    fail_kernel_params(kernel, "requires at least " + std::to_string(min_inputs) +
                                   " input(s) (got " + std::to_string(ctx.inputs.size()) + ")");
  }
  for (std::size_t i = 0; i < ctx.inputs.size(); ++i) {
    const Buffer& in = ks::input_at(ctx, kernel, i);
    if (!(in.descriptor() == out.descriptor())) {
      fail_kernel(std::string(kernel) +
                  ": generic reduction requires identical descriptors (input " + std::to_string(i) +
                  " " + in.descriptor().to_string() + ", output " + out.descriptor().to_string() +
                  ")");
    }
  }
  // Images whose inputs carry hints add only the hinted rectangles; anything
  // else takes the dense elementwise sum.
  const bool hinted =
      std::any_of(ctx.inputs.begin(), ctx.inputs.end(),
                  [](const ConstBufferPtr& in) { return in->nonzero_rect().has_value(); });
  if (hinted && out.rank() == 2 && out.descriptor().is_c_contiguous()) {
    if (out.scalar() == ScalarType::f64) {
      sum_images<double>(ctx, kernel);
    } else {
      sum_images<float>(ctx, kernel);
    }
    return;
  }
  const std::uint64_t n = out.descriptor().element_count();
  if (out.scalar() == ScalarType::f64) {
    sum_identical<double>(ctx.inputs, out, n);
  } else {
    sum_identical<float>(ctx.inputs, out, n);
  }
}

void uniform_slice_reduce(KernelContext& ctx) {
  sum_reduce(ctx, "uniform_slice_reduce", 1);
}

void uniform_slice_add(KernelContext& ctx) {
  sum_reduce(ctx, "uniform_slice_add", 2);
}

// OP-RED-3.
void uniform_slice_finalize(KernelContext& ctx) {
  constexpr std::string_view kName = "uniform_slice_finalize";
  const auto& p = ctx.param<SliceFinalizeParams>();
  if (!(p.pixel_area > 0.0) || !std::isfinite(p.pixel_area)) {
    fail_kernel_params(
        kName, "pixel_area must be finite and > 0 (got " + std::to_string(p.pixel_area) + ")");
  }
  Buffer& out = ks::output_at(ctx, kName, 0);
  if (!ks::is_real(out.scalar())) {
    fail_kernel(std::string(kName) + ": output must be f32 or f64 (got " +
                out.descriptor().to_string() + ")");
  }
  if (ctx.inputs.size() != 1 && ctx.inputs.size() != 2) {
    fail_kernel_params(kName, "expects one input (projection sum) or two (slice sum, area), got " +
                                  std::to_string(ctx.inputs.size()));
  }
  const std::uint64_t n = out.descriptor().element_count();
  for (std::size_t i = 0; i < ctx.inputs.size(); ++i) {
    const Buffer& in = ks::input_at(ctx, kName, i);
    if (in.scalar() != ScalarType::f64 || in.descriptor().element_count() != n) {
      fail_kernel(std::string(kName) + ": input " + std::to_string(i) +
                  " must be f64 with the output's " + std::to_string(n) + " elements (got " +
                  in.descriptor().to_string() + ")");
    }
  }
  const bool slice = ctx.inputs.size() == 2;
  // Elements [e0, e1) through staging arrays; `store` writes them out.
  const auto finalize_range = [&](std::uint64_t e0, std::uint64_t e1, const auto& store) {
    std::vector<double> sum(kStagingElements);
    std::vector<double> area(slice ? kStagingElements : 0);
    for (std::uint64_t start = e0; start < e1; start += kStagingElements) {
      const auto m = static_cast<std::size_t>(std::min<std::uint64_t>(kStagingElements, e1 - start));
      ks::gather_linear(*ctx.inputs[0], start, m, sum.data());
      if (slice) {
        ks::gather_linear(*ctx.inputs[1], start, m, area.data());
        // Area-weighted mean over the sampled part of the pixel; NaN where
        // nothing was sampled.
        for (std::size_t e = 0; e < m; ++e) {
          sum[e] = area[e] == 0.0 ? std::numeric_limits<double>::quiet_NaN() : sum[e] / area[e];
        }
      } else {
        for (std::size_t e = 0; e < m; ++e)
          sum[e] /= p.pixel_area;
      }
      store(start, m, sum.data());
    }
  };
  if (!out.descriptor().is_c_contiguous()) {
    finalize_range(0, n, [&](std::uint64_t start, std::size_t m, const double* v) {
      ks::scatter_linear(out, start, m, v);
    });
    return;
  }
  // Row-major output: parts of the element range go to idle threads, each
  // writing its own elements.
  const auto store_into = [&](auto* base) {
    using Out = std::remove_pointer_t<decltype(base)>;
    const std::size_t parts = static_cast<std::size_t>(std::clamp<std::uint64_t>(n / kElementsPerPart, 1, 8));
    ctx.for_parts(parts, [&](std::size_t part) {
      finalize_range(n * part / parts, n * (part + 1) / parts, [&](std::uint64_t start, std::size_t m, const double* v) {
        for (std::size_t e = 0; e < m; ++e) base[start + e] = static_cast<Out>(v[e]);
      });
    });
  };
  if (out.scalar() == ScalarType::f64) {
    store_into(out.elements<double>());
  } else {
    store_into(out.elements<float>());
  }
}

// Stores the single result element of a scalar reducer (Fixed((1,)) or a
// dynamic buffer committed to one element).
template <class T>
void store_scalar(Buffer& out, std::string_view kernel, T value) {
  if (out.scalar() != scalar_of<T>()) {
    fail_kernel(std::string(kernel) + ": output must be " +
                std::string(scalar_name(scalar_of<T>())) + "[1] (got " +
                out.descriptor().to_string() + ")");
  }
  if (out.is_dynamic()) {
    if (out.capacity_elements() < 1)
      fail_kernel(std::string(kernel) + ": output has no room for the result");
    out.elements<T>()[0] = value;
    out.commit(1);
    return;
  }
  if (out.descriptor().element_count() != 1) {
    fail_kernel(std::string(kernel) + ": output must hold exactly one element (got " +
                out.descriptor().to_string() + ")");
  }
  out.elements<T>()[0] = value;
}

// Element 0 of an input, or nullopt when it holds fewer than 8 bytes (an empty
// partial result, OP-RED-4/5).
template <class T>
std::optional<T> first_element(const KernelContext& ctx, std::string_view kernel, std::size_t i) {
  const Buffer& in = ks::input_at(ctx, kernel, i);
  if (in.byte_size() < 8) return std::nullopt;
  if (in.scalar() != scalar_of<T>()) {
    fail_kernel(std::string(kernel) + ": input " + std::to_string(i) + " must be " +
                std::string(scalar_name(scalar_of<T>())) + " (got " + in.descriptor().to_string() +
                ")");
  }
  T value;
  std::memcpy(&value, in.data(), sizeof(T));
  return value;
}

// OP-RED-4.
void particle_int64_sum_reduce(KernelContext& ctx) {
  constexpr std::string_view kName = "particle_int64_sum_reduce";
  Buffer& out = ks::output_at(ctx, kName, 0);
  std::int64_t total = 0;
  for (std::size_t i = 0; i < ctx.inputs.size(); ++i) {
    const auto v = first_element<std::int64_t>(ctx, kName, i);
    if (v && __builtin_add_overflow(total, *v, &total)) {
      fail_kernel(std::string(kName) + ": sum overflows int64");
    }
  }
  store_scalar<std::int64_t>(out, kName, total);
}

// OP-RED-5.
template <bool kMin>
void scalar_extremum_reduce(KernelContext& ctx) {
  constexpr std::string_view kName =
      kMin ? "particle_scalar_min_reduce" : "particle_scalar_max_reduce";
  const bool finite_only = ctx.param<FiniteOnlyParams>().finite_only;
  Buffer& out = ks::output_at(ctx, kName, 0);
  double acc = kMin ? math::min_identity() : math::max_identity();
  for (std::size_t i = 0; i < ctx.inputs.size(); ++i) {
    const auto v = first_element<double>(ctx, kName, i);
    if (!v) continue;
    acc = kMin ? math::min_rule(acc, *v, finite_only) : math::max_rule(acc, *v, finite_only);
  }
  store_scalar<double>(out, kName, acc);
}

}  // namespace

void register_reduction_kernels(KernelRegistry& registry) {
  registry.add(make_kernel("uniform_slice_reduce", ParamType::none, &uniform_slice_reduce, 1, 1));
  registry.add(make_kernel("uniform_slice_add", ParamType::none, &uniform_slice_add, 2, 1));
  registry.add(make_kernel("uniform_slice_finalize", ParamType::SliceFinalizeParams,
                           &uniform_slice_finalize, 2, 1));
  registry.add(
      make_kernel("particle_int64_sum_reduce", ParamType::none, &particle_int64_sum_reduce, 1, 1));
  registry.add(make_kernel("particle_scalar_min_reduce", ParamType::FiniteOnlyParams,
                           &scalar_extremum_reduce<true>, 1, 1));
  registry.add(make_kernel("particle_scalar_max_reduce", ParamType::FiniteOnlyParams,
                           &scalar_extremum_reduce<false>, 1, 1));
}

}  // namespace kangaroo
