#!/usr/bin/python3
"""Kangaroo against yt on AMReX plotfiles: slice, projection and histogram.

Both engines run in the same invocation on the same machine, one process each:

* end-to-end: wall time from starting the process to the result being a numpy
  array in the measuring process (ours: `kangaroo-worker run` plus loading its
  .npy result; yt: a fresh interpreter that imports yt, loads the plotfile and
  builds the image / histogram);
* compute: ours is the executor's own run time from the result manifest; yt's
  is the time after `yt.load` returned.

With --cold (needs root) the page cache is dropped before every run, and the
achieved read bandwidth of our runs (bytes of the field's FAB components the
plan reads, over compute time) is compared with the disk's sequential read
bandwidth measured by dd in the same invocation (the best of O_DIRECT and
buffered cold reads, before and after the runs).

    /usr/bin/python3 bench/amr_vs_yt.py [--synthetic-bytes 1.5e9] [--cold]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python-sdk"))

from kangaroo import ir  # noqa: E402
from kangaroo import lowering as lw  # noqa: E402

SHARED = os.path.join(REPO, "..", "shared", "data", "amrex")

YT_SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import yt
yt.set_log_level(50)
path, op, field, axis, res, lo, hi, bins = sys.argv[1:9]
axis = int(axis); res = json.loads(res); lo = float(lo); hi = float(hi); bins = int(bins)
ds = yt.load(path)
t1 = time.perf_counter()
f = ("boxlib", field)
L = ds.domain_left_edge.d; R = ds.domain_right_edge.d
u, v = [a for a in range(3) if a != axis]
width = ((R[u] - L[u], "code_length"), (R[v] - L[v], "code_length"))
if op == "slice":
    c = 0.5 * (L[axis] + R[axis])
    sl = ds.slice(axis, c)
    img = np.asarray(sl.to_frb(width, (res[1], res[0]), center=0.5 * (L + R))[f])
    out = float(np.nansum(img))
elif op == "projection":
    pr = ds.proj(f, axis, method="integrate")
    img = np.asarray(pr.to_frb(width, (res[1], res[0]), center=0.5 * (L + R))[f])
    out = float(np.sum(img))
else:
    ad = ds.all_data()
    vals = ad[f].d
    h, _ = np.histogram(vals, bins=bins, range=(lo, hi))
    out = float(h.sum())
t2 = time.perf_counter()
print(json.dumps({"load": t1 - t0, "compute": t2 - t1, "check": out}))
"""


def worker_bin(build_dir):
    path = os.path.join(build_dir, "worker", "kangaroo-worker")
    if not os.access(path, os.X_OK):
        sys.exit(f"{path} not found: build first (bash scripts/build.sh)")
    return path


def drop_caches(enabled):
    if not enabled:
        return
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def dd_rate(args):
    r = subprocess.run(["dd", *args, "of=/dev/null"], capture_output=True, text=True)
    m = re.search(r"(\d+) bytes .* copied, ([\d.]+) s", r.stderr)
    return int(m.group(1)) / float(m.group(2)) if m else None


def disk_bandwidth(path, cold):
    """Sequential read rate of one large file, bytes/s: the best of an O_DIRECT
    read in 16 MiB requests and (with --cold) a buffered read after dropping
    the page cache, which lets the kernel keep several requests in flight.
    The higher the baseline, the stricter the comparison."""
    rates = [dd_rate([f"if={path}", "bs=16M", "iflag=direct"])]
    if cold:
        drop_caches(True)
        rates.append(dd_rate([f"if={path}", "bs=16M"]))
    rates = [r for r in rates if r]
    return max(rates) if rates else None


def largest_file(root):
    best = (0, None)
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            s = os.path.getsize(p)
            if s > best[0]:
                best = (s, p)
    return best[1]


def field_bytes(meta, plotfile, field):
    """Bytes of one component over all FABs of all levels (what a full pass reads)."""
    total = 0
    dt = meta.get("variable_info", {}).get(field, {}).get("type", "float64")
    width = 4 if dt == "float32" else 8
    for boxes in meta["level_boxes"]:
        for lo, hi in boxes:
            n = 1
            for a in range(len(lo)):
                n *= hi[a] - lo[a] + 1
            total += n * width
    return total


def plan_read_bytes(plan, meta, fid, field):
    """Bytes of the field's FAB components that the plan's tasks read: every
    block of a template reading dataset field `fid` once (lowering leaves out
    blocks that finer levels cover entirely)."""
    dt = meta.get("variable_info", {}).get(field, {}).get("type", "float64")
    width = 4 if dt == "float32" else 8
    blocks = set()
    for st in plan["stages"]:
        for t in st["templates"]:
            if not any(i.get("field") == fid for i in t.get("inputs", [])):
                continue
            L = t["domain"]["level"]
            listed = t["domain"]["blocks"]
            blocks.update((L, b) for b in (range(len(meta["level_boxes"][L])) if listed is None else listed))
    total = 0
    for L, b in blocks:
        lo, hi = meta["level_boxes"][L][b]
        n = 1
        for a in range(len(lo)):
            n *= hi[a] - lo[a] + 1
        total += n * width
    return total


def cell_h_range(plotfile, field, meta):
    """Field range from the Cell_H min/max matrices (cheap text read)."""
    comp = meta["var_names"].index(field)
    lo, hi = np.inf, -np.inf
    for L in range(meta["finest_level"] + 1):
        text = open(os.path.join(plotfile, f"Level_{L}", "Cell_H")).read().split("\n")
        mats = [i for i, line in enumerate(text) if re.fullmatch(r"\s*\d+,\d+\s*", line)]
        for k, start in enumerate(mats[:2]):
            rows, _ = map(int, text[start].split(","))
            for line in text[start + 1:start + 1 + rows]:
                vals = [float(x) for x in line.split(",") if x.strip()]
                if k == 0:
                    lo = min(lo, vals[comp])
                else:
                    hi = max(hi, vals[comp])
    return lo, hi


def run_ours(worker, plotfile, meta, op, field, axis, res, rng, bins, cold):
    runmeta = lw.runmeta_from_metadata(meta, step=0)
    fid, out = 1, 100
    L = meta["prob_lo"] + [0.0] * (3 - len(meta["prob_lo"]))
    R = meta["prob_hi"] + [1.0] * (3 - len(meta["prob_hi"]))
    u, v = [a for a in range(3) if a != axis]
    rect = (L[u], L[v], R[u], R[v])
    if op == "slice":
        frag = lw.slice_plan(runmeta, fid, axis, 0.5 * (L[axis] + R[axis]), rect, res, out)
    elif op == "projection":
        frag = lw.projection_plan(runmeta, fid, axis, (L[axis], R[axis]), rect, res, out)
    else:
        frag = lw.histogram1d_plan(runmeta, fid, rng, bins, out)
    tmp = tempfile.mkdtemp(prefix="kangaroo-bench-")
    try:
        plan_path = os.path.join(tmp, "plan.json")
        rm_path = os.path.join(tmp, "runmeta.json")
        plan_json = frag.plan().to_json()
        with open(plan_path, "w") as f:
            f.write(plan_json)
        with open(rm_path, "w") as f:
            f.write(runmeta.to_json())
        out_dir = os.path.join(tmp, "out")
        drop_caches(cold)
        t0 = time.perf_counter()
        r = subprocess.run([worker, "run", "--plan", plan_path, "--runmeta", rm_path, "--dataset",
                            "amrex://" + os.path.abspath(plotfile), "--field", f"{fid}={field}",
                            "--out", out_dir], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"kangaroo-worker failed: {r.stderr.strip()}")
        manifest = json.load(open(os.path.join(out_dir, "manifest.json")))
        chunk = [c for c in manifest["chunks"] if c["field"] == out][0]
        arr = np.load(os.path.join(out_dir, chunk["file"]))
        wall = time.perf_counter() - t0
        check = float(np.nansum(arr))
        return {"wall": wall, "compute": manifest["seconds"], "check": check,
                "read_bytes": plan_read_bytes(json.loads(plan_json), meta, fid, field)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_yt(plotfile, op, field, axis, res, rng, bins, cold):
    drop_caches(cold)
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/python3", "-c", YT_SCRIPT, os.path.abspath(plotfile), op, field, str(axis),
                        json.dumps(list(res)), str(rng[0]), str(rng[1]), str(bins)],
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"yt failed: {r.stderr.strip()[-400:]}")
    d = json.loads(r.stdout.strip().splitlines()[-1])
    return {"wall": wall, "compute": d["compute"], "check": d["check"]}


def median_of(runs, key):
    return float(np.median([r[key] for r in runs]))


def bench_dataset(label, plotfile, field, worker, repeats, cold, results):
    meta = json.loads(subprocess.run([worker, "metadata", "--dataset", "amrex://" + os.path.abspath(plotfile)],
                                     capture_output=True, text=True, check=True).stdout)
    finest = meta["prob_domain"][-1]
    n = [finest[1][a] - finest[0][a] + 1 for a in range(len(finest[0]))] + [1] * (3 - len(finest[0]))
    axis = 2 if len(finest[0]) == 3 else 1
    u, v = [a for a in range(3) if a != axis]
    res = (n[u], n[v])
    rng = cell_h_range(plotfile, field, meta)
    nbytes = field_bytes(meta, plotfile, field)
    print(f"\n{label}: {plotfile} field {field}, finest {n}, image {res}, field bytes {nbytes / 2**20:.1f} MiB",
          file=sys.stderr)
    for op in ("slice", "projection", "histogram"):
        ours = [run_ours(worker, plotfile, meta, op, field, axis, res, rng, 64, cold) for _ in range(repeats)]
        theirs = [run_yt(plotfile, op, field, axis, res, rng, 64, cold) for _ in range(repeats)]
        row = {
            "dataset": label, "op": op, "cold_cache": cold, "field_bytes": nbytes,
            "ours_wall": median_of(ours, "wall"), "ours_compute": median_of(ours, "compute"),
            "yt_wall": median_of(theirs, "wall"), "yt_compute": median_of(theirs, "compute"),
            "ours_check": ours[0]["check"], "yt_check": theirs[0]["check"],
        }
        row["ratio_wall"] = row["yt_wall"] / row["ours_wall"]
        row["ratio_compute"] = row["yt_compute"] / row["ours_compute"]
        # What the plan reads (covered blocks left out), over compute time.
        row["ours_read_bytes"] = ours[0]["read_bytes"]
        row["ours_read_bandwidth"] = row["ours_read_bytes"] / row["ours_compute"] if op != "slice" else None
        results.append(row)
        bw = (f"{row['ours_read_bandwidth'] / 1e9:.2f} GB/s of {row['ours_read_bytes'] / 2**20:.1f} MiB"
              if row["ours_read_bandwidth"] else "-")
        print(f"  {op:<10} ours {row['ours_wall']:7.3f} s wall {row['ours_compute']:7.3f} s compute | "
              f"yt {row['yt_wall']:7.3f} s wall {row['yt_compute']:7.3f} s compute | "
              f"x{row['ratio_wall']:.1f} wall x{row['ratio_compute']:.1f} compute | read {bw}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.environ.get("BUILD_DIR", os.path.join(REPO, "build")))
    ap.add_argument("--synthetic-dir", default=os.path.join(REPO, "out", "bench", "synthetic_plt"))
    ap.add_argument("--synthetic-bytes", type=float, default=1.5e9)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="drop the page cache before every run (root)")
    ap.add_argument("--skip-synthetic", action="store_true")
    args = ap.parse_args()
    worker = worker_bin(args.build_dir)
    if args.cold and os.geteuid() != 0:
        sys.exit("--cold needs root to drop the page cache")
    results = []
    bench_dataset("largest shared plotfile", os.path.join(SHARED, "pelelmex_3d_38comp"), "density", worker,
                  args.repeats, args.cold, results)
    disk = None
    if not args.skip_synthetic:
        if not os.path.exists(os.path.join(args.synthetic_dir, "Header")):
            subprocess.run(["/usr/bin/python3", "-m", "kangaroo.synthetic", args.synthetic_dir, "--levels", "3",
                            "--max-grid", "64", "--fields", "density,temperature",
                            "--target-bytes", str(args.synthetic_bytes), "--force"],
                           check=True, env={**os.environ, "PYTHONPATH": os.path.join(REPO, "python-sdk")})
        big = largest_file(args.synthetic_dir)
        disk = disk_bandwidth(big, args.cold)
        bench_dataset("synthetic 3-level", args.synthetic_dir, "density", worker, args.repeats, args.cold, results)
        # The disk's rate drifts; measured again afterwards, the better one counts.
        after = disk_bandwidth(big, args.cold)
        disk = max(d for d in (disk, after) if d) if (disk or after) else None
    summary = {"results": results, "disk_sequential_read_bytes_per_s": disk}
    if disk:
        print(f"\ndisk sequential read (best of dd O_DIRECT{' and buffered cold' if args.cold else ''}, "
              f"before and after): {disk / 1e9:.2f} GB/s", file=sys.stderr)
        for r in results:
            if r["ours_read_bandwidth"] and r["dataset"].startswith("synthetic"):
                print(f"  {r['op']}: {r['ours_read_bandwidth'] / disk:.0%} of disk bandwidth"
                      f"{' (cold cache)' if r['cold_cache'] else ' (warm cache)'}", file=sys.stderr)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
