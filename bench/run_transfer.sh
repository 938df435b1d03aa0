#!/usr/bin/env bash
# Chunk transfer throughput of the rank-to-rank transport against ucx_perftest
# (tag_bw, same transport, same sizes) in one run on this machine.
#   bash bench/run_transfer.sh [--quick] [--repeats N]
# For each transport and size, N rounds (default 3) run, back to back, each
# moving 4 GiB (--quick: 128 MiB):
#   ours with one source buffer (tag_bw also sends one buffer over and over),
#   ucx_perftest tag_bw,
#   ours with 16 source buffers round robin (a rank sending chunks it holds);
# and the table gives the medians (MiB/s; UCX reports MB/s in units of 2^20
# bytes) and the ratios ours / ucx_perftest.
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
repeats=3
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) sizes=(65536 1048576); per_size=$((128 << 20)); shift ;;
    --repeats) repeats="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
export UCX_WARN_UNUSED_ENV_VARS=n
port=$((13000 + RANDOM % 2000))

ours() {  # tls size source-buffers
  UCX_TLS=$1 "$bin" --sizes "$2" --bytes-per-size "$per_size" --source-buffers "$3" |
    /usr/bin/python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["mib_per_s"])'
}
theirs() {  # tls size
  local n=$((per_size / $2))
  ((n < 16)) && n=16
  port=$((port + 1))
  UCX_TLS=$1 ucx_perftest -p "$port" >/dev/null 2>&1 &
  local server=$!
  sleep 0.5
  UCX_TLS=$1 ucx_perftest 127.0.0.1 -p "$port" -t tag_bw -s "$2" -n "$n" -w $((n / 10 + 4)) 2>/dev/null |
    awk '/^Final:/ {print $7}'
  wait "$server" || true
}
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

printf '| transport | size | ours, 1 buffer | ucx_perftest | ratio | ours, 16 buffers | ratio |\n'
printf '|---|---|---|---|---|---|---|\n'
for tls in "tcp,self" "sm,self"; do
  for size in "${sizes[@]}"; do
    a=(); b=(); c=()
    for ((r = 0; r < repeats; r++)); do
      a+=("$(ours "$tls" "$size" 1)")
      b+=("$(theirs "$tls" "$size")")
      c+=("$(ours "$tls" "$size" 16)")
    done
    one="$(median "${a[@]}")"; ref="$(median "${b[@]}")"; many="$(median "${c[@]}")"
    /usr/bin/python3 - "$tls" "$size" "$one" "$ref" "$many" <<'PY'
import sys
tls, size, one, ref, many = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:])
r = lambda x: f"{x / ref:.2f}" if ref else "n/a"
print(f"| {tls} | {size} | {one:.0f} | {ref:.0f} | {r(one)} | {many:.0f} | {r(many)} |")
PY
  done
done
