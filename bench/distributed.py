#!/usr/bin/python3
"""Distributed and memory-capped runs of kangaroo-worker (issue: multi-rank
execution and memory-capped streaming).

Two measurements, each a real `kangaroo-worker run` process tree timed from
start to results on disk:

weak   Weak scaling 1 -> 2 ranks on an embarrassingly parallel chunk workload:
       a CPU-heavy field expression on every block, then a histogram of each
       block reduced to one result (only small partial histograms move between
       ranks). The 2-rank run gets twice the blocks, N owned by each rank
       (OWN-2), the 1-rank run N blocks. Efficiency = T(1 rank) / T(2 ranks).
       Each rank runs one executor thread, so the 2-rank run uses both cores.

stream A plotfile 8x larger than the memory cap M, read by two plans:
       `hist`: histograms of a derived field (field expression, then
       histogram per block, then reduction) - pure streaming;
       `spill`: four derived fields that all exist before any of their
       histograms reads them, so the uncapped run holds all four at once and
       the capped run must spill. Reported: wall time capped vs uncapped
       (throughput ratio), peak RSS against M, bytes spilled.

Usage:
  /usr/bin/python3 bench/distributed.py [--build-dir build] [--work DIR]
      [--weak-blocks 96] [--stream-mib 1024] [--repeats 3] [weak] [stream]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python-sdk"))

from kangaroo import ir  # noqa: E402
from kangaroo import lowering as lw  # noqa: E402
from kangaroo import synthetic  # noqa: E402

MiB = 1 << 20
ENV = dict(os.environ, UCX_TLS=os.environ.get("UCX_TLS", "sm,self"), UCX_WARN_UNUSED_ENV_VARS="n")


def home_rank(step, level, block, world):
    """OWN-2, as the runtime computes it."""
    mask = (1 << 64) - 1
    h = 0xCBF29CE484222325
    for v in (step, level, block):
        h ^= (v + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2)) & mask
        h &= mask
    return h % world


def run(worker, args, out):
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    r = subprocess.run([worker, "run", *map(str, args), "--out", out], capture_output=True, text=True, env=ENV)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"run failed ({' '.join(map(str, args))}):\n{r.stderr[-3000:]}")
    with open(os.path.join(out, "manifest.json")) as f:
        return dt, json.load(f)


def plotfile(work, name, cells, max_grid):
    path = os.path.join(work, name)
    if not os.path.exists(os.path.join(path, "Header")):
        synthetic.write_plotfile(path, n_cells=cells, levels=1, max_grid_size=max_grid, fields=("density",),
                                 overwrite=True)
    return path


def metadata(worker, uri):
    r = subprocess.run([worker, "metadata", "--dataset", uri], capture_output=True, text=True, check=True)
    return lw.runmeta_from_metadata(json.loads(r.stdout), step=0)


def write(path, doc):
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


def weak(worker, work, nblocks, repeats):
    # 2*nblocks blocks of 32^3 along x; pick nblocks owned by each rank.
    pf = plotfile(work, f"weak_{nblocks}", (32 * 4 * nblocks // 2, 32, 64), 32)
    uri = "amrex://" + pf
    rm = metadata(worker, uri)
    n = len(rm.steps[0].levels[0].boxes)
    own = {0: [], 1: []}
    for b in range(n):
        own[home_rank(0, 0, b, 2)].append(b)
    if min(len(v) for v in own.values()) < nblocks:
        raise SystemExit(f"plotfile has too few blocks per rank ({[len(v) for v in own.values()]})")
    sets = {1: sorted(own[0][:nblocks]), 2: sorted(own[0][:nblocks] + own[1][:nblocks])}
    expr = "+".join(f"sin(a*{k})" for k in range(1, 25))
    rows = []
    times = {}
    for ranks, blocks in sets.items():
        alloc = lw.FieldAllocator(100)
        st = ir.Stage("expr")
        st.map_blocks("e", "field_expr", ir.Domain(0, 0, blocks=blocks), inputs=[ir.FieldRef(1)],
                      outputs=[ir.OutputRef(ir.FieldRef(2), ir.BufferSpec("f64", ir.BlockShape()))],
                      params=ir.FieldExprParams(expression=expr, variables=["a"]))
        # per-block histograms over the chosen blocks, reduced as the SDK does
        plan = lw.histogram1d_plan(rm, 2, (-30.0, 30.0), 64, alloc(), alloc_field=alloc,
                                   domain=ir.Domain(0, 0, blocks), producers={2: st}, world_size=2,
                                   name="hist").plan()
        args = ["--plan", write(os.path.join(work, f"weak{ranks}.json"), plan.to_dict()), "--runmeta",
                write(os.path.join(work, "weak_rm.json"), rm.to_dict()), "--dataset", uri, "--field", "1=density",
                "--threads", 1, "--ranks", ranks]
        run(worker, args, os.path.join(work, "weak_out"))  # warm the page cache
        ts = [run(worker, args, os.path.join(work, "weak_out"))[0] for _ in range(repeats)]
        times[ranks] = statistics.median(ts)
        rows.append((ranks, len(blocks), times[ranks], min(ts), max(ts)))
    print("\n## Weak scaling (field expression + histogram per block, 1 executor thread per rank)\n")
    print("| ranks | blocks | median s | min s | max s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.3f} | {r[3]:.3f} | {r[4]:.3f} |")
    print(f"\nweak-scaling efficiency 1 -> 2 ranks: {times[1] / times[2] * 100:.1f}%")


def stream(worker, work, mib, repeats):
    # a cube-ish plotfile of about `mib` MiB of density
    cells = int(round((mib * MiB / 8 / 2) ** (1 / 3)))
    cells -= cells % 32
    pf = plotfile(work, f"stream_{mib}", (cells, cells, 2 * cells), 32)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(pf) for f in fs)
    cap = size // 8
    uri = "amrex://" + pf
    rm = metadata(worker, uri)
    plans = {}
    alloc = lw.FieldAllocator(100)
    e = lw.field_expr_plan(rm, "a*a + 1", ["a"], [1], alloc(), name="expr")
    plans["hist"] = lw.histogram1d_plan(rm, e.out_field, (0.0, 4.0), 64, alloc(), alloc_field=alloc,
                                        producers={e.out_field: e.tail}, name="hist").plan().to_dict()
    alloc = lw.FieldAllocator(100)
    frags = []
    for expr in ("a*a", "a + 1", "2*a - 3", "a*a*a"):
        e = lw.field_expr_plan(rm, expr, ["a"], [1], alloc(), name="expr")
        frags.append(lw.histogram1d_plan(rm, e.out_field, (-10.0, 10.0), 32, alloc(), alloc_field=alloc,
                                         producers={e.out_field: e.tail}, name="hist"))
    # every histogram waits for all four expressions (the executor would
    # otherwise histogram each field as soon as it exists, and nothing piles up)
    spill = frags[0].plan(*frags[1:])
    spill.order_after("hist_accumulate", "expr")
    plans["spill"] = spill.to_dict()
    rmp = write(os.path.join(work, "stream_rm.json"), rm.to_dict())
    spill_dir = os.path.join(work, "spill")
    print(f"\n## Streaming a {size / MiB:.0f} MiB plotfile with a memory cap of {cap / MiB:.0f} MiB (1/8)\n")
    print("| plan | mode | median s | GB/s of dataset | peak accounted MiB | peak RSS MiB | spilled MiB |")
    print("|---|---|---|---|---|---|---|")
    ratios = {}
    for name, plan in plans.items():
        base = ["--plan", write(os.path.join(work, f"stream_{name}.json"), plan), "--runmeta", rmp,
                "--dataset", uri, "--field", "1=density"]
        res = {}
        for mode, extra in (("uncapped", []), ("capped", ["--memory-cap", cap, "--spill-dir", spill_dir])):
            run(worker, base + extra, os.path.join(work, "stream_out"))  # warm
            samples = [run(worker, base + extra, os.path.join(work, "stream_out")) for _ in range(repeats)]
            t = statistics.median(s[0] for s in samples)
            mem = max((s[1]["memory"] for s in samples), key=lambda m: m["peak_rss_bytes"])
            res[mode] = t
            print(f"| {name} | {mode} | {t:.3f} | {size / t / 1e9:.2f} | {mem['peak_bytes'] / MiB:.1f} | "
                  f"{mem['peak_rss_bytes'] / MiB:.1f} | {mem.get('spill_bytes_written', 0) / MiB:.1f} |")
            if mode == "capped":
                over = mem["peak_rss_bytes"] - cap
                print(f"|  |  | peak RSS - M = {over / MiB:.1f} MiB |  |  |  |  |")
        ratios[name] = res["uncapped"] / res["capped"]
    print()
    for name, r in ratios.items():
        print(f"throughput capped/uncapped ({name}): {r * 100:.1f}%")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build-dir", default=os.path.join(REPO, "build"))
    p.add_argument("--work", default=None, help="scratch folder (kept for reuse when given)")
    p.add_argument("--weak-blocks", type=int, default=96, help="blocks per rank in the weak-scaling runs")
    p.add_argument("--stream-mib", type=int, default=1024, help="plotfile size for the streaming runs")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("what", nargs="*", default=["weak", "stream"])
    a = p.parse_args()
    worker = os.path.join(os.path.abspath(a.build_dir), "worker", "kangaroo-worker")
    work = a.work or tempfile.mkdtemp(prefix="kangaroo_bench_dist_")
    os.makedirs(work, exist_ok=True)
    try:
        print(f"# kangaroo-worker distributed/streaming benchmark ({os.cpu_count()} cores, UCX_TLS={ENV['UCX_TLS']})")
        if "weak" in a.what:
            weak(worker, work, a.weak_blocks, a.repeats)
        if "stream" in a.what:
            stream(worker, work, a.stream_mib, a.repeats)
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
