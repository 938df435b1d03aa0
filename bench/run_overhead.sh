#!/usr/bin/env bash
# Executor-overhead benchmark: Kangaroo (event log off and on) and Dask
# (threaded scheduler and a 2-process LocalCluster) on the same three plan
# shapes, in one run on this machine. Prints a table with ratios and writes
# the raw JSON lines to $OUT (default out/bench/overhead.jsonl).
#   bash bench/run_overhead.sh [--quick]
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
build_dir="${BUILD_DIR:-build}"
bin="$build_dir/bench/kangaroo-bench-overhead"
if [[ ! -x "$bin" ]]; then
  echo "building $bin" >&2
  bash scripts/build.sh -DKANGAROO_WERROR=ON >&2
fi
out="${OUT:-out/bench/overhead.jsonl}"
mkdir -p "$(dirname "$out")"
: > "$out"
wide=100000; tree=100000; chain=10000
dask_n=10000; dask_chain=2000; cluster_n=2000; cluster_chain=500
if [[ "${1:-}" == "--quick" ]]; then
  wide=20000; tree=20000; chain=2000; dask_n=2000; dask_chain=500; cluster_n=500; cluster_chain=100
fi
log_dir="$(mktemp -d)"
trap 'rm -rf "$log_dir"' EXIT
for logging in off on; do
  for w in wide tree chain; do
    n=$wide; [[ $w == tree ]] && n=$tree; [[ $w == chain ]] && n=$chain
    args=(--workload "$w" --tasks "$n" --threads 2 --repeat 5)
    [[ $logging == on ]] && args+=(--event-log "$log_dir/events.jsonl")
    "$bin" "${args[@]}" | tee -a "$out" >&2
  done
done
/usr/bin/python3 bench/dask_overhead.py --n "$dask_n" --chain "$dask_chain" --cluster-n "$cluster_n" \
  --cluster-chain "$cluster_chain" > "$log_dir/dask.json"
/usr/bin/python3 - "$out" "$log_dir/dask.json" <<'PY'
import json, sys
ours = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
dask = json.load(open(sys.argv[2]))
names = {"wide": "independent", "tree": "tree", "chain": "chain"}
print()
print(f"{'workload':<8} {'engine':<26} {'tasks':>8} {'tasks/s':>12} {'us/task':>9} {'gap p50/p99 us':>15} {'meta B/task':>11} {'peak RSS MiB':>12}")
rows = {}
for r in ours:
    eng = "kangaroo (log %s)" % ("on" if r["event_log"] else "off")
    rows[(r["workload"], eng)] = r["per_task_us"]
    print(f"{r['workload']:<8} {eng:<26} {r['tasks']:>8.0f} {r['tasks_per_s']:>12.0f} {r['per_task_us']:>9.3f} "
          f"{r['gap_p50_us']:>7.2f}/{r['gap_p99_us']:<7.2f} {r['metadata_bytes_per_task']:>11.1f} {r['peak_rss_kib']/1024:>12.1f}")
for sched in ("threaded", "local_cluster"):
    for w, dn in names.items():
        d = dask[sched]["workloads"][dn]
        rss = d.get("peak_rss_bytes", {})
        rss_total = rss.get("total", rss.get("process", 0)) if isinstance(rss, dict) else rss
        rows[(w, "dask " + sched)] = d["per_task_us"]
        print(f"{w:<8} {'dask ' + sched:<26} {d['tasks']:>8} {d['tasks_per_s']:>12.0f} {d['per_task_us']:>9.3f} "
              f"{'':>15} {'':>11} {rss_total/2**20:>12.1f}")
print()
print("per-task cost ratios (dask / kangaroo with event log off; higher = kangaroo faster):")
for w in names:
    k = rows[(w, "kangaroo (log off)")]
    print(f"  {w:<6} threaded x{rows[(w, 'dask threaded')]/k:,.0f}   LocalCluster x{rows[(w, 'dask local_cluster')]/k:,.0f}")
chain = [r for r in ours if r["workload"] == "chain" and not r["event_log"]][0]
print(f"chain scheduling overhead per stage (log off): {chain['per_stage_us']:.2f} us")
PY
