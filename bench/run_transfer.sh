#!/usr/bin/env bash
# Chunk transfer throughput of the rank-to-rank transport against ucx_perftest
# (tag_bw, same transport, same sizes) in one run on this machine.
#   bash bench/run_transfer.sh [--quick] [--repeats N] [--no-pin]
# For each transport and size, N rounds (default 5) run, back to back, each
# moving 4 GiB (--quick: 128 MiB):
#   ours with one source buffer (tag_bw also sends one buffer over and over),
#   ucx_perftest tag_bw,
#   ours with 16 source buffers round robin (a rank sending chunks it holds);
# and the table gives the medians (MiB/s; UCX reports MB/s in units of 2^20
# bytes) and the median over rounds of each round's ratio ours / ucx_perftest.
# Both programs run as two processes, each pinned to a CPU of its own (the
# first two this shell may use), as ranks with dedicated cores run; --no-pin
# leaves placement to the scheduler, which on a 2-core machine moves the
# figures by up to 20% from run to run (bench/README.md).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
build_dir="${BUILD_DIR:-build}"
bin="$build_dir/bench/kangaroo-bench-transfer"
if [[ ! -x "$bin" ]]; then
  echo "$bin not found: build first (bash scripts/build.sh)" >&2
  exit 1
fi
command -v ucx_perftest >/dev/null || { echo "ucx_perftest not found (Debian ucx-utils)" >&2; exit 1; }
sizes=(65536 1048576 4194304 16777216)
# 4 GiB per run: a run over shared memory then lasts about a quarter second
# rather than a few tens of milliseconds, long enough that a scheduling
# hiccup does not decide the figure.
per_size=$((4 << 30))
repeats=5
pin=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) sizes=(65536 1048576); per_size=$((128 << 20)); shift ;;
    --repeats) repeats="$2"; shift 2 ;;
    --no-pin) pin=0; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
export UCX_WARN_UNUSED_ENV_VARS=n
# on_cpu N command...: runs the command on the N-th CPU this shell may use
# (unpinned with --no-pin).
read -r -a cpus <<<"$(/usr/bin/python3 -c 'import os; print(*sorted(os.sched_getaffinity(0)))')"
if ((pin)) && ((${#cpus[@]} < 2)); then
  echo "fewer than two CPUs to pin the two processes to: use --no-pin" >&2
  exit 1
fi
on_cpu() {
  local n=$1
  shift
  if ((pin)); then taskset -c "${cpus[$n]}" "$@"; else "$@"; fi
}
port=$((13000 + RANDOM % 2000))

ours() {  # tls size source-buffers
  UCX_TLS=$1 "$bin" --sizes "$2" --bytes-per-size "$per_size" --source-buffers "$3" --pin "$pin" |
    /usr/bin/python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["mib_per_s"])'
}
theirs() {  # tls size
  local n=$((per_size / $2))
  ((n < 16)) && n=16
  port=$((port + 1))
  on_cpu 1 env UCX_TLS="$1" ucx_perftest -p "$port" >/dev/null 2>&1 &
  local server=$!
  sleep 0.5
  on_cpu 0 env UCX_TLS="$1" ucx_perftest 127.0.0.1 -p "$port" -t tag_bw -s "$2" -n "$n" -w $((n / 10 + 4)) 2>/dev/null |
    awk '/^Final:/ {print $7}'
  wait "$server" || true
}
printf '| transport | size | ours, 1 buffer | ucx_perftest | ratio | ours, 16 buffers | ratio |\n'
printf '|---|---|---|---|---|---|---|\n'
for tls in "tcp,self" "sm,self"; do
  for size in "${sizes[@]}"; do
    rounds=()
    for ((r = 0; r < repeats; r++)); do
      rounds+=("$(ours "$tls" "$size" 1) $(theirs "$tls" "$size") $(ours "$tls" "$size" 16)")
    done
    /usr/bin/python3 - "$tls" "$size" "${rounds[@]}" <<'PY'
import statistics
import sys
tls, size = sys.argv[1], int(sys.argv[2])
rounds = [[float(x) for x in r.split()] for r in sys.argv[3:]]
one, ref, many = (statistics.median(r[i] for r in rounds) for i in range(3))
# Each round's own ratio: ours and tag_bw run back to back, so a slow
# stretch of the machine weighs on both sides of one ratio.
def ratio(i):
    paired = [r[i] / r[1] for r in rounds if r[1] > 0]
    return f"{statistics.median(paired):.2f}" if paired else "n/a"
print(f"| {tls} | {size} | {one:.0f} | {ref:.0f} | {ratio(0)} | {many:.0f} | {ratio(2)} |")
PY
  done
done
