#!/usr/bin/env bash
# Installs the Debian packages needed to build, test and benchmark Kangaroo.
# Idempotent: when every package is already installed it touches nothing and
# returns at once, so the test script can call it on every run.
set -euo pipefail

packages=(
  cmake ninja-build g++ pkgconf ccache
  nlohmann-json3-dev libgtest-dev libgmock-dev libbenchmark-dev
  python3-numpy python3-pytest python3-venv python3-yt python3-matplotlib
  python3-dask python3-distributed python3-psutil
  clang-14 libclang-rt-14-dev clang-format clang-tidy
  curl openssl socat python3-setuptools python3-tqdm
  libboost-dev libssl-dev wrk libucx-dev ucx-utils
)

missing=()
for pkg in "${packages[@]}"; do
  status="$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)"
  # "ii " means desired=install and status=installed.
  if [[ "$status" != "ii "* ]]; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "bootstrap: all ${#packages[@]} packages already installed"
  exit 0
fi

echo "bootstrap: installing ${missing[*]}"

if [[ "$(id -u)" -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "bootstrap: need root or sudo to install: ${missing[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends "${missing[@]}"
echo "bootstrap: done"
