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
#include <vector>

#include "kangaroo/kernels/math/extrema.h"
#include "kangaroo/kernels/register.h"
#include "kernel_support.h"

namespace kangaroo {

namespace {

namespace ks = kernel_support;

constexpr std::size_t kStagingElements = 4096;

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
  std::vector<double> sum(kStagingElements);
  std::vector<double> area(slice ? kStagingElements : 0);
  for (std::uint64_t start = 0; start < n; start += kStagingElements) {
    const auto m = static_cast<std::size_t>(std::min<std::uint64_t>(kStagingElements, n - start));
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
    ks::scatter_linear(out, start, m, sum.data());
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
