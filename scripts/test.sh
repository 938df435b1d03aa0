#!/usr/bin/env bash
# shellcheck disable=SC2317  # phase_* functions are called as "phase_$name"
# The project's test command. Phases, in order:
#   main    warnings-as-errors build in build/ + its ctest suite
#   asan    ASan+UBSan Debug build in build-asan/ + its ctest suite
#   fuzz    libFuzzer targets built with clang-14 in build-fuzz/, short smoke run each
#   pytest  Python tests: python-sdk/tests and tests/
#
# Usage: bash scripts/test.sh [--quick] [--keep-going] [--phases LIST]
#   --quick        run only the main phase
#   --keep-going   run the remaining phases after one fails (default: stop)
#   --phases LIST  comma-separated subset of: main,asan,fuzz,pytest
# Environment:
#   FUZZ_SECONDS   run time per fuzz target (default 10)
#   BUILD_JOBS     build parallelism (default 2)
#   CTEST_JOBS     test parallelism (default 2)
# Exits non-zero when any phase fails.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

python=/usr/bin/python3
fuzz_seconds="${FUZZ_SECONDS:-10}"
ctest_jobs="${CTEST_JOBS:-2}"
export BUILD_JOBS="${BUILD_JOBS:-2}"

all_phases=(main asan fuzz pytest)
selected=("${all_phases[@]}")
keep_going=0

usage() {
  # The comment block at the top of this file, without the shebang.
  awk 'NR > 2 && /^#/ { sub(/^# ?/, ""); print; next } NR > 2 { exit }' "${BASH_SOURCE[0]}"
}

while (($# > 0)); do
  case "$1" in
    --quick) selected=(main) ;;
    --keep-going) keep_going=1 ;;
    --phases)
      [[ $# -ge 2 ]] || { echo "test.sh: --phases needs a list" >&2; exit 2; }
      IFS=',' read -r -a selected <<<"$2"
      shift
      ;;
    --phases=*) IFS=',' read -r -a selected <<<"${1#--phases=}" ;;
    -h | --help) usage; exit 0 ;;
    *) echo "test.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

for phase in "${selected[@]}"; do
  case "$phase" in
    main | asan | fuzz | pytest) ;;
    *) echo "test.sh: unknown phase '$phase' (expected main, asan, fuzz or pytest)" >&2; exit 2 ;;
  esac
done

banner() {
  local line="=================================================================="
  printf '\n%s\n== %s\n%s\n' "$line" "$*" "$line"
}

phase_main() {
  BUILD_DIR=build bash scripts/build.sh -DKANGAROO_WERROR=ON
  ctest --test-dir build --output-on-failure -j"$ctest_jobs"
}

phase_asan() {
  # Only the unit-test binaries: the Python tests use the main build.
  BUILD_DIR=build-asan BUILD_TARGETS_MATCHING='_test$' bash scripts/build.sh \
    -DCMAKE_BUILD_TYPE=Debug \
    -DKANGAROO_SANITIZE=ON \
    -DKANGAROO_CUDA=OFF \
    -DKANGAROO_BUILD_BENCH=OFF
  # Leaks count as failures; UBSan stops at its first finding and prints where.
  ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" \
  UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
    ctest --test-dir build-asan --output-on-failure -j"$ctest_jobs"
}

phase_fuzz() {
  BUILD_DIR=build-fuzz BUILD_TARGETS_MATCHING='^fuzz_' bash scripts/build.sh \
    -DKANGAROO_BUILD_FUZZ=ON \
    -DCMAKE_CXX_COMPILER=clang++-14 \
    -DCMAKE_C_COMPILER=clang-14 \
    -DKANGAROO_CUDA=OFF \
    -DKANGAROO_BUILD_TESTS=OFF \
    -DKANGAROO_BUILD_BENCH=OFF

  local fuzz_dirs=(build-fuzz/worker/fuzz build-fuzz/gateway)
  local targets=()
  local candidate fuzz_dir
  for fuzz_dir in "${fuzz_dirs[@]}"; do
    [[ -d "$fuzz_dir" ]] || continue
    for candidate in "$fuzz_dir"/fuzz_*; do
      if [[ -f "$candidate" && -x "$candidate" ]]; then
        targets+=("$candidate")
      fi
    done
  done
  if ((${#targets[@]} == 0)); then
    echo "fuzz: no fuzz_* targets in ${fuzz_dirs[*]}; nothing to run"
    return 0
  fi

  local failed=0 target name work seeds
  for target in "${targets[@]}"; do
    name="$(basename "$target")"
    # libFuzzer adds new inputs to its first corpus directory: give it a
    # scratch one under the build tree so the checked-in seeds stay untouched.
    work="build-fuzz/fuzz-work/$name"
    rm -rf "$work"
    mkdir -p "$work/corpus"
    local corpus_args=("$work/corpus")
    for seeds in "worker/fuzz/corpus/${name#fuzz_}" "gateway/fuzz/corpus/${name#fuzz_}"; do
      if [[ -d "$seeds" ]]; then
        corpus_args+=("$seeds")
      fi
    done
    echo "--- $name (${fuzz_seconds}s, corpus: ${corpus_args[*]})"
    if "$target" -max_total_time="$fuzz_seconds" -rss_limit_mb=2048 \
      -artifact_prefix="$work/" -print_final_stats=1 "${corpus_args[@]}" \
      >"$work/log.txt" 2>&1; then
      tail -n 12 "$work/log.txt"
      echo "--- $name: ok"
    else
      tail -n 60 "$work/log.txt"
      echo "--- $name: FAILED (full log: $work/log.txt, crash inputs in $work/)" >&2
      failed=1
    fi
  done
  return "$failed"
}

phase_pytest() {
  # SDK unit tests, then cross-component tests that drive the binaries built
  # by the main phase.
  KANGAROO_BUILD_DIR="$repo_root/build" \
    "$python" -m pytest -q -p no:cacheprovider python-sdk/tests tests/
}

banner "bootstrap: Debian packages"
bash scripts/bootstrap.sh

declare -A result=()
overall=0
for phase in "${selected[@]}"; do
  case "$phase" in
    main) title="main build (-Werror) + ctest  [build/]" ;;
    asan) title="ASan+UBSan build + ctest  [build-asan/]" ;;
    fuzz) title="libFuzzer build (clang-14) + smoke run  [build-fuzz/]" ;;
    pytest) title="pytest  [python-sdk/tests, tests/]" ;;
  esac
  banner "$phase: $title"
  start=$SECONDS
  # A subshell outside any `if` keeps `set -e` active inside the phase
  # (bash ignores errexit for everything run as an if condition).
  set +e
  (set -e; "phase_$phase")
  rc=$?
  set -e
  if ((rc == 0)); then
    result[$phase]="ok ($((SECONDS - start))s)"
  else
    result[$phase]="FAILED ($((SECONDS - start))s)"
    overall=1
    if ((keep_going == 0)); then
      break
    fi
  fi
done

banner "summary"
for phase in "${selected[@]}"; do
  printf '  %-7s %s\n' "$phase" "${result[$phase]:-skipped}"
done
exit "$overall"
