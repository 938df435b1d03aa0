#!/usr/bin/env bash
# Configures and builds the CMake tree.
#   BUILD_DIR=build-x bash scripts/build.sh [extra cmake args...]
# Extra arguments go to the configure step and may override the defaults
# (a later -DCMAKE_BUILD_TYPE=... wins over the one given here).
# BUILD_JOBS sets the parallelism of the build step (default 2).
# BUILD_TARGETS_MATCHING, when set, is an extended regular expression: only
# the targets whose names match it are built (e.g. '_test$').
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

build_dir="${BUILD_DIR:-build}"
jobs="${BUILD_JOBS:-2}"

cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPython3_EXECUTABLE=/usr/bin/python3 "$@"
if [[ -n "${BUILD_TARGETS_MATCHING:-}" ]]; then
  mapfile -t targets < <(ninja -C "$build_dir" -t targets all | sed -n 's/^\([A-Za-z0-9_.-]*\): phony$/\1/p' |
    grep -E "${BUILD_TARGETS_MATCHING}" | grep -v '^cmake_object_order_depends_target_' || true)
  if ((${#targets[@]} == 0)); then
    echo "build.sh: no target matches '${BUILD_TARGETS_MATCHING}'" >&2
    exit 2
  fi
  cmake --build "$build_dir" -j"$jobs" --target "${targets[@]}"
else
  cmake --build "$build_dir" -j"$jobs"
fi
