// Per-cell cost of the CPU mesh kernels on one 64^3 f64 Fortran-order block
// (the AMReX FAB layout): projection along each axis, a cell-average slice and
// the 1D / 2D histogram grid paths, each without and with a coverage box
// inside the block. Prints ns per cell read.
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "kangaroo/core/buffer.h"
#include "kangaroo/core/kernel.h"
#include "kangaroo/core/runmeta.h"
#include "kangaroo/kernels/register.h"

using namespace kangaroo;

namespace {

constexpr int kN = 64;

BufferPtr fortran_block(double seed) {
  const std::vector<std::uint64_t> ext{kN, kN, kN};
  BufferPtr b = Buffer::allocate(Descriptor::fortran_order(ScalarType::f64, ext), InitPolicy::zero);
  auto* p = reinterpret_cast<double*>(b->mutable_data());
  for (std::size_t n = 0; n < static_cast<std::size_t>(kN) * kN * kN; ++n)
    p[n] = 1.0 + seed * static_cast<double>((n * 2654435761u) % 1000) / 1000.0;
  return b;
}

BufferPtr image(std::uint64_t nv, std::uint64_t nu) {
  return Buffer::allocate(Descriptor::c_order(ScalarType::f64, std::vector<std::uint64_t>{nv, nu}),
                          InitPolicy::zero);
}

struct Bench {
  RunMeta runmeta;
  KernelRegistry registry;
  std::vector<IndexBox> covered;

  Bench() {
    StepMeta step;
    LevelMeta level;
    level.geom.dx = {1.0 / kN, 1.0 / kN, 1.0 / kN};
    level.geom.x0 = {0.0, 0.0, 0.0};
    level.geom.index_origin = {0, 0, 0};
    IndexBox box;
    box.lo = {0, 0, 0};
    box.hi = {kN - 1, kN - 1, kN - 1};
    level.boxes.push_back(box);
    step.levels.push_back(level);
    runmeta.steps.push_back(step);
    register_mesh_kernels(registry);
    register_histogram_kernels(registry);
  }

  // Best of several repetitions, in ns per cell of the block (`cells` read).
  double time(const std::string& name, const KernelParams& params,
              const std::vector<ConstBufferPtr>& inputs, std::vector<BufferPtr> outputs,
              double cells) {
    KernelContext ctx;
    ctx.kernel = name;
    ctx.runmeta = &runmeta;
    ctx.level_meta = &runmeta.steps[0].levels[0];
    ctx.inputs = inputs;
    ctx.outputs = outputs;
    ctx.params = &params;
    ctx.covered = covered;
    const auto fn = registry.find(name).fn;
    double best = 1e30;
    for (int rep = 0; rep < 7; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      fn(ctx);
      const auto t1 = std::chrono::steady_clock::now();
      best = std::min(best, std::chrono::duration<double, std::nano>(t1 - t0).count() / cells);
    }
    return best;
  }
};

}  // namespace

int main() {
  Bench b;
  const BufferPtr field = fortran_block(1.0);
  const BufferPtr other = fortran_block(3.0);
  const double cells = static_cast<double>(kN) * kN * kN;
  IndexBox inner;
  inner.lo = {16, 20, 8};
  inner.hi = {40, 47, 30};
  for (const bool with_coverage : {false, true}) {
    b.covered.clear();
    if (with_coverage) b.covered.push_back(inner);
    const char* tag = with_coverage ? "covered" : "uncovered";
    for (int axis = 0; axis < 3; ++axis) {
      UniformProjectionParams p;
      p.axis = axis;
      p.axis_bounds = {0.0, 1.0};
      p.rect = {0.0, 0.0, 1.0, 1.0};
      p.resolution = {256, 256};
      const double ns = b.time("uniform_projection_accumulate", p, {field}, {image(256, 256)}, cells);
      std::printf("projection axis=%d %-9s %8.3f ns/cell\n", axis, tag, ns);
    }
    for (int axis = 0; axis < 3; ++axis) {
      UniformSliceCellParams p;
      p.axis = axis;
      p.coord = 0.5;
      p.rect = {0.0, 0.0, 1.0, 1.0};
      p.resolution = {256, 256};
      const double ns = b.time("uniform_slice_cellavg_accumulate", p, {field},
                               {image(256, 256), image(256, 256)}, kN * kN);
      std::printf("slice      axis=%d %-9s %8.3f ns/plane-cell\n", axis, tag, ns);
    }
    {
      Histogram1DParams p;
      p.range = {1.0, 2.0};
      p.bins = 64;
      p.weight_mode = "input";
      const double ns = b.time("histogram1d_accumulate", p, {field, other}, {image(1, 64)}, cells);
      std::printf("histogram1d (weights) %-9s %8.3f ns/cell\n", tag, ns);
    }
    {
      Histogram2DParams p;
      p.x_range = {1.0, 2.0};
      p.y_range = {1.0, 4.0};
      p.bins = {32, 32};
      p.weight_mode = "input";
      const double ns =
          b.time("histogram2d_accumulate", p, {field, other}, {image(32, 32)}, cells);
      std::printf("histogram2d           %-9s %8.3f ns/cell\n", tag, ns);
    }
  }
  return 0;
}
