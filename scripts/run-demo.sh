#!/usr/bin/env bash
# The demo: installs missing build dependencies, builds the project (same
# configuration as the test script's main phase, so neither rebuilds the
# other's work), starts a local gateway (`kangaroo up`), runs a slice, a
# projection and histograms of a synthetic 3-level AMReX plotfile through the
# Python SDK as one job, checks the results, writes PNG images and stops the
# gateway.
#
# Usage: bash scripts/run-demo.sh [--no-build] [DEMO_DIR]
#   DEMO_DIR     work folder for the dataset, gateway state and images
#                (default: out/demo, or $DEMO_DIR)
#   --no-build   skip bootstrap and build; use the existing binary
# Environment:
#   BUILD_DIR    build folder (default: build)
#   BUILD_JOBS   build parallelism (default 2, see scripts/build.sh)
# Exit status: 0 when every check passes; non-zero otherwise (1 setup,
# 2 the job failed, 3 a result check failed, or the build's status).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

build_dir="${BUILD_DIR:-build}"
demo_dir="${DEMO_DIR:-out/demo}"
do_build=1

while (($# > 0)); do
  case "$1" in
    --no-build) do_build=0 ;;
    -h | --help)
      awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    -*) echo "run-demo.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *) demo_dir="$1" ;;
  esac
  shift
done

if ((do_build)); then
  bash scripts/bootstrap.sh
  BUILD_DIR="$build_dir" bash scripts/build.sh -DKANGAROO_WERROR=ON
fi

worker="$build_dir/worker/kangaroo-worker"
if [[ ! -x "$worker" ]]; then
  echo "run-demo.sh: $worker not found; build first (drop --no-build)" >&2
  exit 1
fi

start=$SECONDS
/usr/bin/python3 scripts/demo/gateway_demo.py --build-dir "$build_dir" --out "$demo_dir"
echo "demo finished in $((SECONDS - start)) s"
