#!/usr/bin/env bash
# Chunk transfer throughput of the rank-to-rank transport against ucx_perftest
# (tag_bw, same transport, same sizes) in one run on this machine.
#   bash bench/run_transfer.sh [--quick]
# Prints one table row per transport and size: our MiB/s, ucx_perftest's
# MiB/s (UCX reports MB/s in units of 2^20 bytes) and the ratio.
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
per_size=$((1 << 30))
if [[ "${1:-}" == "--quick" ]]; then
  sizes=(65536 1048576)
  per_size=$((128 << 20))
fi
export UCX_WARN_UNUSED_ENV_VARS=n
port=$((13000 + RANDOM % 2000))
printf '| transport | size | kangaroo MiB/s | ucx_perftest MiB/s | ratio |\n|---|---|---|---|---|\n'
for tls in "tcp,self" "sm,self"; do
  for size in "${sizes[@]}"; do
    n=$((per_size / size)); ((n < 16)) && n=16
    ours="$(UCX_TLS=$tls "$bin" --sizes "$size" --bytes-per-size "$per_size" |
      /usr/bin/python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["mib_per_s"])')"
    port=$((port + 1))
    UCX_TLS=$tls ucx_perftest -p "$port" >/dev/null 2>&1 &
    server=$!
    sleep 0.5
    theirs="$(UCX_TLS=$tls ucx_perftest 127.0.0.1 -p "$port" -t tag_bw -s "$size" -n "$n" -w $((n / 10 + 4)) 2>/dev/null |
      awk '/^Final:/ {print $7}')"
    wait "$server" || true
    ratio="$(/usr/bin/python3 -c "print(f'{$ours / $theirs:.2f}' if $theirs else 'n/a')")"
    printf '| %s | %d | %s | %s | %s |\n' "$tls" "$size" "$ours" "$theirs" "$ratio"
  done
done
