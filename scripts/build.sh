#!/usr/bin/env bash
# Configures and builds the CMake tree.
#   BUILD_DIR=build-x bash scripts/build.sh [extra cmake args...]
# Extra arguments go to the configure step and may override the defaults
# (a later -DCMAKE_BUILD_TYPE=... wins over the one given here).
# BUILD_JOBS sets the parallelism of the build step (default 2).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

build_dir="${BUILD_DIR:-build}"
jobs="${BUILD_JOBS:-2}"

cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPython3_EXECUTABLE=/usr/bin/python3 "$@"
cmake --build "$build_dir" -j"$jobs"
