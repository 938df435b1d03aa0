// Builds KernelContexts by hand for kernel unit tests: one step, one level,
// caller-chosen geometry and boxes, and buffers filled by logical index.
#pragma once

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "kangaroo/core/buffer.h"
#include "kangaroo/core/error.h"
#include "kangaroo/core/kernel.h"
#include "kangaroo/core/runmeta.h"
#include "kangaroo/kernels/register.h"

namespace kangaroo::test {

inline BufferPtr make_buffer(ScalarType scalar, std::vector<std::uint64_t> extents) {
  return Buffer::allocate(Descriptor::c_order(scalar, extents), InitPolicy::zero);
}

// Stores `values` as logical C-order elements, whatever the layout.
inline void fill_linear(Buffer& b, const std::vector<double>& values) {
  const Descriptor& d = b.descriptor();
  ASSERT_EQ(d.element_count(), values.size());
  std::vector<std::uint64_t> index(d.rank, 0);
  for (std::size_t p = 0; p < values.size(); ++p) {
    std::uint64_t rest = p;
    std::int64_t offset = 0;
    for (int a = d.rank - 1; a >= 0; --a) {
      offset += static_cast<std::int64_t>(rest % d.extents[a]) * d.strides[a];
      rest /= d.extents[a];
    }
    std::byte* at = b.mutable_data() + offset;
    switch (d.scalar) {
      case ScalarType::f64:
        *reinterpret_cast<double*>(at) = values[p];
        break;
      case ScalarType::f32:
        *reinterpret_cast<float*>(at) = static_cast<float>(values[p]);
        break;
      case ScalarType::u8:
        *reinterpret_cast<std::uint8_t*>(at) = static_cast<std::uint8_t>(values[p]);
        break;
      case ScalarType::i64:
        *reinterpret_cast<std::int64_t*>(at) = static_cast<std::int64_t>(values[p]);
        break;
      case ScalarType::opaque:
        FAIL() << "opaque buffer";
        break;
    }
  }
}

inline BufferPtr make_filled(ScalarType scalar, std::vector<std::uint64_t> extents,
                             const std::vector<double>& values) {
  BufferPtr b = make_buffer(scalar, std::move(extents));
  fill_linear(*b, values);
  return b;
}

inline BufferPtr make_fortran(ScalarType scalar, std::vector<std::uint64_t> extents,
                              const std::vector<double>& values) {
  BufferPtr b = Buffer::allocate(Descriptor::fortran_order(scalar, extents), InitPolicy::zero);
  fill_linear(*b, values);
  return b;
}

// Logical C-order elements as doubles.
inline std::vector<double> values_of(const Buffer& b) {
  std::vector<double> out(b.descriptor().element_count());
  for (std::size_t p = 0; p < out.size(); ++p)
    out[p] = b.element_as_double(p);
  return out;
}

// A rank-3 f64 block grid of `box` whose cell (i,j,k) (global indices) holds
// value(i, j, k).
inline BufferPtr make_grid(const IndexBox& box, const std::function<double(int, int, int)>& value,
                           ScalarType scalar = ScalarType::f64) {
  const std::vector<std::uint64_t> ext{static_cast<std::uint64_t>(box.extent(0)),
                                       static_cast<std::uint64_t>(box.extent(1)),
                                       static_cast<std::uint64_t>(box.extent(2))};
  std::vector<double> values;
  for (int i = box.lo[0]; i <= box.hi[0]; ++i) {
    for (int j = box.lo[1]; j <= box.hi[1]; ++j) {
      for (int k = box.lo[2]; k <= box.hi[2]; ++k)
        values.push_back(value(i, j, k));
    }
  }
  return make_filled(scalar, ext, values);
}

inline IndexBox box_of(std::array<std::int32_t, 3> lo, std::array<std::int32_t, 3> hi) {
  IndexBox b;
  b.lo = lo;
  b.hi = hi;
  return b;
}

struct KernelHarness {
  RunMeta runmeta;
  KernelRegistry registry;
  std::vector<ConstBufferPtr> inputs;
  std::vector<BufferPtr> outputs;
  KernelParams params;
  std::vector<IndexBox> covered;
  std::int32_t block = 0;

  explicit KernelHarness(LevelGeom geom = {},
                         std::vector<IndexBox> boxes = {box_of({0, 0, 0}, {3, 3, 3})}) {
    StepMeta step;
    step.step = 0;
    LevelMeta level;
    level.geom = geom;
    level.boxes = std::move(boxes);
    step.levels.push_back(std::move(level));
    runmeta.steps.push_back(std::move(step));
    register_mesh_kernels(registry);
    register_histogram_kernels(registry);
    register_reduction_kernels(registry);
  }

  const IndexBox& box() const {
    return runmeta.steps[0].levels[0].boxes[static_cast<std::size_t>(block)];
  }
  const LevelGeom& geom() const { return runmeta.steps[0].levels[0].geom; }

  void run(std::string_view name) {
    KernelContext ctx;
    ctx.kernel = name;
    ctx.runmeta = &runmeta;
    ctx.level_meta = &runmeta.steps[0].levels[0];
    ctx.step = 0;
    ctx.level = 0;
    ctx.block = block;
    ctx.inputs = inputs;
    ctx.outputs = outputs;
    ctx.params = &params;
    ctx.covered = covered;
    registry.find(name).fn(ctx);
  }
};

// Success when `fn` throws kangaroo::Error whose message contains `needle`.
template <class Fn>
::testing::AssertionResult throws_with(Fn&& fn, std::string_view needle) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string what = e.what();
    if (what.find(needle) != std::string::npos) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << "error '" << what << "' does not contain '" << needle << "'";
  }
  return ::testing::AssertionFailure() << "no kangaroo::Error thrown (expected '" << needle << "')";
}

}  // namespace kangaroo::test
