#!/usr/bin/python3
"""Builds and runs the Kangaroo demo: a two-level AMR dataset, a plan made with
the Python SDK's plan model, one ``kangaroo-worker run``, and checks of the
results against numpy.

    /usr/bin/python3 scripts/demo/make_demo.py --worker build/worker/kangaroo-worker [--out out/demo]

Layout: level 0 has 64^3 cells on [0, 1]^3 in 8 blocks of 32^3; level 1
(refinement ratio 2) covers the central half of the domain with 64^3 cells in
8 blocks of 32^3. The density is an analytic function sampled at cell centers.

The plan computes, for every block of both levels:
  * a field expression (rho*rho);
  * a histogram of rho over leaf cells (level 0 masks the cells under level 1),
    reduced per level with a fan-in-8 graph tree and added across levels;
  * a z-projection of rho*rho (column integrals), reduced, added across levels
    and finalized with the pixel area;
  * a z-slice of rho (area-weighted sum and area images), reduced, added across
    levels and finalized as sum/area.

Exit status: 0 when every check passes, 1 for setup problems (missing worker,
unusable output folder), 2 when the worker run fails, 3 when a check fails.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "python-sdk"))

try:
    import numpy as np
except ImportError:  # pragma: no cover - bootstrap installs python3-numpy
    print("demo: numpy is required (Debian package python3-numpy)", file=sys.stderr)
    sys.exit(1)

from kangaroo import ir  # noqa: E402

# ---------------------------------------------------------------------------
# mesh layout

N0 = 64  # level-0 cells per axis
BLOCK = 32  # cells per block edge
RATIO = 2
DX0 = 1.0 / N0
DX1 = DX0 / RATIO
FINE_LO, FINE_HI = N0 // 4, 3 * N0 // 4 - 1  # level-0 cells refined: [16, 47] per axis

RHO_FIELD = 1
HIST_BINS = 40
HIST_RANGE = (0.0, 10.0)
IMAGE_RES = 128  # pixels per axis; a pixel is exactly one level-1 cell
SLICE_Z = 0.51
FAN_IN = 8


def blocks_of(lo, hi):
    """2x2x2 blocks of BLOCK^3 cells tiling the cube [lo, hi]^3 (inclusive), x fastest."""
    boxes = []
    for k in range(lo, hi + 1, BLOCK):
        for j in range(lo, hi + 1, BLOCK):
            for i in range(lo, hi + 1, BLOCK):
                boxes.append(((i, j, k), (i + BLOCK - 1, j + BLOCK - 1, k + BLOCK - 1)))
    return boxes


LEVEL0_BOXES = blocks_of(0, N0 - 1)
LEVEL1_BOXES = blocks_of(RATIO * FINE_LO, RATIO * FINE_HI + 1)
LEVELS = [(DX0, LEVEL0_BOXES), (DX1, LEVEL1_BOXES)]


def density(x, y, z):
    """A smooth positive field: a Gaussian blob in the middle on a wavy background."""
    r2 = (x - 0.5) ** 2 + (y - 0.5) ** 2 + (z - 0.5) ** 2
    return 1.0 + 8.0 * np.exp(-r2 / (2 * 0.1 ** 2)) + 0.25 * np.sin(2 * np.pi * x) * np.sin(2 * np.pi * y) * np.cos(
        2 * np.pi * z)


def sample(box, dx):
    lo, hi = box
    centers = [(np.arange(lo[a], hi[a] + 1) + 0.5) * dx for a in range(3)]
    x, y, z = np.meshgrid(*centers, indexing="ij")
    return density(x, y, z)


def coarsen(box, ratio):
    """COV-3 with zero index origins: floor division of lo and of hi + 1."""
    lo, hi = box
    return (tuple(v // ratio for v in lo), tuple((v + 1) // ratio - 1 for v in hi))


def runmeta():
    levels = []
    for lv, (dx, boxes) in enumerate(LEVELS):
        levels.append({
            "geom": {"dx": [dx] * 3, "x0": [0.0] * 3, "index_origin": [0, 0, 0],
                     "is_periodic": [False] * 3, "ref_ratio": RATIO if lv == 0 else 1},
            "boxes": [[list(lo), list(hi)] for lo, hi in boxes],
        })
    return {"steps": [{"step": 0, "levels": levels}], "particle_species": {}, "coord_sys": 0}


# ---------------------------------------------------------------------------
# the plan


class Fields:
    """Field ids for plan-internal and result fields (CHUNK-4 style, from 1000)."""

    def __init__(self, start=1000):
        self.next = start

    def __call__(self):
        value = self.next
        self.next += 1
        return value


def reduce_and_combine(name, field, blocks_per_level, spec, producer, fields, *, normalize, preserve):
    """LOW-6 per level (finest first, LOW-1), then LOW-7 across levels."""
    per_level = []
    for lv in sorted(blocks_per_level, reverse=True):
        stages, (f, b) = ir.block_reduction_stages(
            field, blocks_per_level[lv], buffer=spec, kernel="uniform_slice_reduce", level=lv,
            fan_in=FAN_IN, normalize=normalize, after=[producer], alloc_field=fields, name=f"{name}_l{lv}")
        per_level.append(ir.LevelValue(f, lv, b, stages[-1] if stages else producer))
    _, combined = ir.level_combination_stages(
        per_level, buffer=spec, alloc_field=fields, kernel="uniform_slice_add",
        preserve_location=preserve, home_order=preserve, name=f"{name}_levels")
    return combined


def plane_indices(coord):
    """LOW-3: the plane on the finest level, then nested down."""
    p_fine = math.floor(coord / DX1)
    return {1: p_fine, 0: p_fine // RATIO}


def build_plan():
    fields = Fields()
    plan = ir.Plan()
    volume_cov = [coarsen(b, RATIO) for b in LEVEL1_BOXES]
    cov_l0 = plan.add_coverage(volume_cov)
    all_blocks = {lv: list(range(len(boxes))) for lv, (_, boxes) in enumerate(LEVELS)}
    out = {}

    # field expression: rho*rho on every block of both levels
    em_field = fields()
    emission = ir.Stage("emission")
    for lv in (1, 0):
        emission.map_blocks(
            f"rho_squared_l{lv}", "field_expr", ir.Domain(0, lv), inputs=[RHO_FIELD],
            outputs=[ir.OutputRef(em_field, ir.BufferSpec("f64", ir.BlockShape()))],
            params=ir.FieldExprParams(expression="rho*rho", variables=["rho"]))

    # histogram of rho over leaf cells
    hist_spec = ir.BufferSpec("f64", ir.FixedShape(HIST_BINS), "zero")
    hist_field = fields()
    hist = ir.Stage("histogram")
    for lv in (1, 0):
        hist.map_blocks(
            f"histogram_l{lv}", "histogram1d_accumulate", ir.Domain(0, lv), inputs=[RHO_FIELD],
            outputs=[ir.OutputRef(hist_field, hist_spec)],
            params=ir.Histogram1DParams(range=list(HIST_RANGE), bins=HIST_BINS),
            covered_boxes_ref=cov_l0 if lv == 0 else -1)
    combined = reduce_and_combine("histogram", hist_field, all_blocks, hist_spec, hist, fields,
                                  normalize=False, preserve=False)
    out["histogram"] = fields()
    final_hist = ir.final_stage([combined], out_field=out["histogram"], buffer=hist_spec,
                                kernel="uniform_slice_reduce", name="histogram_final")

    # z-projection of rho*rho (the whole z extent: slab coverage = volume coverage)
    n = IMAGE_RES
    du = dv = 1.0 / n
    img_zero = ir.BufferSpec("f64", ir.FixedShape((n, n)), "zero")
    img_out = ir.BufferSpec("f64", ir.FixedShape((n, n)))
    proj_field = fields()
    project = ir.Stage("projection", after=[emission])
    for lv in (1, 0):
        project.map_blocks(
            f"projection_l{lv}", "uniform_projection_accumulate", ir.Domain(0, lv), inputs=[em_field],
            outputs=[ir.OutputRef(proj_field, img_zero)],
            params=ir.UniformProjectionParams(axis=2, axis_bounds=[0.0, 1.0], rect=[0.0, 0.0, 1.0, 1.0],
                                              resolution=[n, n]),
            covered_boxes_ref=cov_l0 if lv == 0 else -1)
    combined = reduce_and_combine("projection", proj_field, all_blocks, img_zero, project, fields,
                                  normalize=True, preserve=True)
    out["projection"] = fields()
    final_proj = ir.final_stage([combined], out_field=out["projection"], buffer=img_out,
                                kernel="uniform_slice_finalize",
                                params=ir.SliceFinalizeParams(pixel_area=du * dv), name="projection_final")

    # z-slice of rho: blocks holding the plane (LOW-2), plane coverage (COV-5)
    planes = plane_indices(SLICE_Z)
    slice_blocks = {lv: [b for b, (lo, hi) in enumerate(LEVELS[lv][1]) if lo[2] <= planes[lv] <= hi[2]]
                    for lv in (0, 1)}
    plane_cov = []
    for lo, hi in LEVEL1_BOXES:
        if lo[2] <= planes[1] <= hi[2]:
            clo, chi = coarsen((lo, hi), RATIO)
            if clo[2] <= planes[0] <= chi[2]:
                plane_cov.append(((clo[0], clo[1], planes[0]), (chi[0], chi[1], planes[0])))
    sum_field, area_field = fields(), fields()
    slc = ir.Stage("slice")
    for lv in (1, 0):
        slc.map_blocks(
            f"slice_l{lv}", "uniform_slice_cellavg_accumulate", ir.Domain(0, lv, slice_blocks[lv]),
            inputs=[RHO_FIELD], outputs=[ir.OutputRef(sum_field, img_zero), ir.OutputRef(area_field, img_zero)],
            params=ir.UniformSliceCellParams(axis=2, coord=SLICE_Z, plane_index=planes[lv],
                                             rect=[0.0, 0.0, 1.0, 1.0], resolution=[n, n]),
            covered_boxes=plane_cov if lv == 0 else [])
    sum_value = reduce_and_combine("slice_sum", sum_field, slice_blocks, img_zero, slc, fields,
                                   normalize=True, preserve=False)
    # LOW-9: the area reduction is ordered after the sum reduction
    area_value = reduce_and_combine("slice_area", area_field, slice_blocks, img_zero, sum_value.producer, fields,
                                    normalize=True, preserve=False)
    out["slice"] = fields()
    final_slice = ir.final_stage([sum_value, area_value], out_field=out["slice"], buffer=img_out,
                                 kernel="uniform_slice_finalize",
                                 params=ir.SliceFinalizeParams(pixel_area=du * dv), name="slice_final")

    plan.stages = [final_hist, final_proj, final_slice]
    return plan, out, volume_cov, planes


# ---------------------------------------------------------------------------
# numpy references


def covered(box, coverage):
    lo, hi = box
    idx = np.meshgrid(*[np.arange(lo[a], hi[a] + 1) for a in range(3)], indexing="ij")
    mask = np.zeros(tuple(h - l + 1 for l, h in zip(lo, hi)), dtype=bool)
    for clo, chi in coverage:
        m = np.ones_like(mask)
        for a in range(3):
            m &= (idx[a] >= clo[a]) & (idx[a] <= chi[a])
        mask |= m
    return mask


def spec_histogram(values, lo, hi, bins):
    """OP-HIST-1 binning."""
    x = values[np.isfinite(values) & (values >= lo) & (values <= hi)]
    idx = np.where(x == hi, bins - 1, np.floor((x - lo) * bins / (hi - lo))).astype(np.int64)
    idx = idx[(idx >= 0) & (idx < bins)]
    return np.bincount(idx, minlength=bins).astype(np.float64)


def references(data, volume_cov):
    leaf0 = np.concatenate([data[0][b][~covered(LEVEL0_BOXES[b], volume_cov)] for b in range(len(LEVEL0_BOXES))])
    leaf1 = np.concatenate([data[1][b].ravel() for b in range(len(LEVEL1_BOXES))])
    leaf = np.concatenate([leaf0, leaf1])
    volume_integral = float(np.sum(leaf0 ** 2) * DX0 ** 3 + np.sum(leaf1 ** 2) * DX1 ** 3)
    # composite leaf field on the level-1 grid (a level-0 cell spans 2^3 fine cells)
    nf = N0 * RATIO
    comp = np.empty((nf, nf, nf))
    for b, (lo, hi) in enumerate(LEVEL0_BOXES):
        fine = data[0][b].repeat(RATIO, 0).repeat(RATIO, 1).repeat(RATIO, 2)
        comp[RATIO * lo[0]:RATIO * (hi[0] + 1), RATIO * lo[1]:RATIO * (hi[1] + 1), RATIO * lo[2]:RATIO * (hi[2] + 1)] = fine
    for b, (lo, hi) in enumerate(LEVEL1_BOXES):
        comp[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = data[1][b]
    return {
        "leaf_cells": leaf.size,
        "histogram": spec_histogram(leaf, *HIST_RANGE, HIST_BINS),
        "volume_integral": volume_integral,
        # images are (nv, nu) = [y, x] (AXIS-4); pixels are level-1 cells
        "projection": (np.sum(comp ** 2, axis=2) * DX1).T,
        "slice": comp[:, :, math.floor(SLICE_Z / DX1)].T,
    }


# ---------------------------------------------------------------------------
# images


def write_images(outdir, images, hist):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # noqa: BLE001 - any import problem means no images
        print(f"  images:     skipped (matplotlib not importable: {exc.__class__.__name__})")
        return []
    written = []
    for name, image, label in (("slice", images["slice"], f"rho at z = {SLICE_Z}"),
                               ("projection", images["projection"], "column integral of rho^2 along z")):
        fig, ax = plt.subplots(figsize=(5, 4.2))
        im = ax.imshow(image, origin="lower", extent=(0, 1, 0, 1), cmap="viridis")
        fig.colorbar(im, ax=ax, label=label)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_title(name)
        path = os.path.join(outdir, f"{name}.png")
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    edges = np.linspace(*HIST_RANGE, HIST_BINS + 1)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.stairs(hist, edges, fill=True)
    ax.set_yscale("log")
    ax.set_xlabel("rho")
    ax.set_ylabel("leaf cells")
    ax.set_title("histogram of rho")
    path = os.path.join(outdir, "histogram.png")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    written.append(path)
    print("  images:     " + ", ".join(os.path.relpath(p) for p in written))
    return written


# ---------------------------------------------------------------------------
# main


def prepare_outdir(outdir):
    os.makedirs(outdir, exist_ok=True)
    # only what this script writes is removed
    for name in ("seed", "result"):
        shutil.rmtree(os.path.join(outdir, name), ignore_errors=True)
    for name in ("plan.json", "runmeta.json", "events.jsonl", "slice.png", "projection.png", "histogram.png"):
        path = os.path.join(outdir, name)
        if os.path.exists(path):
            os.remove(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", required=True, help="path of the kangaroo-worker binary")
    parser.add_argument("--out", default=os.path.join("out", "demo"), help="work folder (default: out/demo)")
    parser.add_argument("--threads", type=int, default=None, help="executor threads (default: the worker's)")
    args = parser.parse_args(argv)

    if not os.access(args.worker, os.X_OK):
        print(f"demo: worker binary not found: {args.worker}", file=sys.stderr)
        return 1
    outdir = args.out
    try:
        prepare_outdir(outdir)
    except OSError as exc:
        print(f"demo: cannot prepare {outdir}: {exc}", file=sys.stderr)
        return 1

    t0 = time.perf_counter()
    seed = os.path.join(outdir, "seed")
    os.makedirs(seed)
    data = {0: {}, 1: {}}
    for lv, (dx, boxes) in enumerate(LEVELS):
        for b, box in enumerate(boxes):
            data[lv][b] = sample(box, dx)
            np.save(os.path.join(seed, f"s0_l{lv}_f{RHO_FIELD}_v0_b{b}.npy"), data[lv][b])
    with open(os.path.join(outdir, "runmeta.json"), "w") as f:
        json.dump(runmeta(), f)
    plan, results, volume_cov, planes = build_plan()
    with open(os.path.join(outdir, "plan.json"), "w") as f:
        f.write(plan.to_json(indent=1))
    n_stages = len(plan.topo_stages())
    t_gen = time.perf_counter() - t0

    print("Kangaroo demo")
    print(f"  dataset:    2 levels, {len(LEVEL0_BOXES)} + {len(LEVEL1_BOXES)} blocks of {BLOCK}^3 cells "
          f"(level 1 refines [{FINE_LO},{FINE_HI}]^3 of level 0 by {RATIO})")
    print(f"  plan:       {n_stages} stages -> {os.path.relpath(os.path.join(outdir, 'plan.json'))}")
    print(f"  generated in {t_gen:.2f} s")

    result_dir = os.path.join(outdir, "result")
    events = os.path.join(outdir, "events.jsonl")
    cmd = [args.worker, "run", "--plan", os.path.join(outdir, "plan.json"),
           "--runmeta", os.path.join(outdir, "runmeta.json"), "--dataset", "memory://",
           "--seed", seed, "--out", result_dir, "--event-log", events]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    t1 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t1
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr, end="")
        print(f"demo: kangaroo-worker run failed with exit status {proc.returncode}", file=sys.stderr)
        return 2
    with open(os.path.join(result_dir, "manifest.json")) as f:
        manifest = json.load(f)
    starts = ends = 0
    with open(events) as f:
        for line in f:
            e = json.loads(line)
            if e.get("type") == "task" and e["id"].count(":") == 3:
                starts += e["status"] == "start"
                ends += e["status"] == "end"

    def load(name):
        return np.load(os.path.join(result_dir, f"s0_l0_f{results[name]}_v0_b0.npy"))

    hist, proj, slc = load("histogram"), load("projection"), load("slice")
    ref = references(data, volume_cov)
    du = dv = 1.0 / IMAGE_RES
    vol = float(np.sum(proj) * du * dv)
    vol_rel = abs(vol - ref["volume_integral"]) / abs(ref["volume_integral"])
    proj_rel = float(np.max(np.abs(proj - ref["projection"])) / np.max(np.abs(ref["projection"])))
    slice_err = float(np.max(np.abs(slc - ref["slice"])))

    print(f"  run:        {manifest['tasks_run']} tasks in {manifest['stages_run']} stages, "
          f"{ends}/{starts} task end/start events, wall time {wall:.2f} s (executor {manifest['seconds']:.3f} s)")
    print(f"  histogram:  total {hist.sum():.0f} vs {ref['leaf_cells']} leaf cells; "
          f"bins equal to numpy: {np.array_equal(hist, ref['histogram'])}")
    print(f"  projection: volume integral {vol:.12g} vs numpy {ref['volume_integral']:.12g} "
          f"(relative difference {vol_rel:.2e}); max pixel relative error {proj_rel:.2e}")
    print(f"  slice:      z = {SLICE_Z} (planes {planes[0]} on level 0, {planes[1]} on level 1), "
          f"min {np.nanmin(slc):.6g}, max {np.nanmax(slc):.6g}, max |error| vs numpy {slice_err:.2e}")
    write_images(outdir, {"slice": slc, "projection": proj}, hist)

    checks = {
        "histogram total equals the number of leaf cells": hist.sum() == ref["leaf_cells"],
        "histogram equals numpy's": np.array_equal(hist, ref["histogram"]),
        "projection volume integral within 1e-10": vol_rel < 1e-10,
        "projection pixels within 1e-10": proj_rel < 1e-10,
        "slice pixels within 1e-12": bool(np.all(np.isfinite(slc))) and slice_err < 1e-12,
        "one start and one end event per task": starts == ends == manifest["tasks_total"],
    }
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        for name in failed:
            print(f"  CHECK FAILED: {name}", file=sys.stderr)
        return 3
    print(f"  all {len(checks)} checks passed; outputs in {os.path.relpath(result_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
