#!/usr/bin/env bash
# Build Horovod (PyTorch frameworks, Gloo controller, CPU only) from source into a Python
# environment that already has torch, and check the build.
#
#   scripts/build-horovod.sh [PYTHON]
#
# PYTHON is the environment's interpreter: the argument, else $PYTHON, else .venv/bin/python of
# this checkout. When Horovod is already installed for the installed torch, with PyTorch and
# Gloo, the script says so and exits in a few seconds; otherwise the build takes about 6
# minutes on 2 cores, or seconds when pip's cache holds a wheel built for this torch.
set -euo pipefail

HOROVOD_VERSION=0.28.1
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${1:-${PYTHON:-$repo/.venv/bin/python}}
if ! command -v "$python" >/dev/null; then
  echo "build-horovod: no Python interpreter at '$python'" >&2
  exit 1
fi
bindir=$(dirname "$(command -v "$python")")

# Exits 0 when Horovod $HOROVOD_VERSION imports with its PyTorch extension and Gloo, and was built
# against the torch installed now. Horovod records the torch it was built for in metadata.json
# and only warns on a mismatch, but its C++ extension is tied to that torch's ABI.
is_built() {
  "$python" - "$HOROVOD_VERSION" <<'EOF' 2>/dev/null
import json, pathlib, sys

import horovod
import horovod.torch as hvd
import torch

built_for = json.loads((pathlib.Path(horovod.__file__).parent / "metadata.json").read_text())
sys.exit(
    0
    if horovod.__version__ == sys.argv[1]
    and hvd.gloo_built()
    and built_for.get("pytorch") == torch.__version__
    else 1
)
EOF
}

if is_built; then
  echo "build-horovod: Horovod $HOROVOD_VERSION with PyTorch and Gloo is installed for $python"
  exit 0
fi

if ! "$python" -c 'import torch' 2>/dev/null; then
  echo "build-horovod: torch is not importable by $python; install lakestory first (make venv)" >&2
  exit 1
fi

# A CPU build. Horovod builds CUDA support when torch is a CUDA build (PyPI's is) AND torch finds
# a CUDA toolkit: $CUDA_HOME or $CUDA_PATH, an nvcc on PATH, or /usr/local/cuda. Hide the first
# three. The last cannot be hidden; a CUDA build of Horovod 0.28.1 against this torch has not been
# tried, so stop there rather than fail minutes into the build.
unset CUDA_HOME CUDA_PATH HOROVOD_CUDA_HOME HOROVOD_CUDA_INCLUDE HOROVOD_CUDA_LIB HOROVOD_GPU \
  HOROVOD_GPU_OPERATIONS HOROVOD_GPU_ALLREDUCE HOROVOD_GPU_ALLGATHER HOROVOD_GPU_BROADCAST \
  HOROVOD_GPU_ALLTOALL HOROVOD_GPU_REDUCESCATTER
path_without_nvcc=
IFS=: read -r -a path_dirs <<<"$PATH"
for dir in "${path_dirs[@]}"; do
  [ -n "$dir" ] && [ ! -x "$dir/nvcc" ] && path_without_nvcc=${path_without_nvcc:+$path_without_nvcc:}$dir
done
export PATH=$path_without_nvcc
cuda_home=$("$python" -c 'from torch.utils.cpp_extension import CUDA_HOME; print(CUDA_HOME or "")' 2>/dev/null)
if [ -n "$cuda_home" ]; then
  echo "build-horovod: torch finds a CUDA toolkit at $cuda_home, so Horovod would attempt a CUDA" \
       "build; this script makes the CPU (Gloo) build only, on a machine without a toolkit" >&2
  exit 1
fi

# Horovod's setup.py needs CMake >= 3.13; when there is none it pip-installs one with whatever
# `pip` is first on PATH, which need not be this environment's. Install it here instead.
cmake_ok() {
  "$1" --version 2>/dev/null | "$python" -c '
import re, sys
m = re.search(r"version (\d+)\.(\d+)", sys.stdin.read())
sys.exit(0 if m and (int(m[1]), int(m[2])) >= (3, 13) else 1)'
}
if ! cmake_ok cmake; then
  echo "build-horovod: no CMake >= 3.13 on PATH; installing CMake from PyPI into the environment"
  "$python" -m pip install --quiet 'cmake>=3.13,<4'
  export HOROVOD_CMAKE=$bindir/cmake
fi

# --no-build-isolation builds against the torch installed here (an isolated build would fetch
# another copy of torch, several GB), so the build's own Python dependencies must be present.
"$python" -m pip install --quiet setuptools wheel packaging cffi cloudpickle psutil pyyaml

work=$(mktemp -d "${TMPDIR:-/tmp}/build-horovod.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Horovod 0.28.1 pins C++14 in its CMake files (CMAKE_CXX_STANDARD 14) and strips any -std= from
# CXXFLAGS, but torch's headers need more: C++17 since torch 2.1, C++20 in torch 2.15 (its
# torch/all.h stops with "#error C++20 or later compatible compiler is required"). A compiler
# wrapper rewrites the flag to C++20, which suits both.
real_cxx=$(command -v "${CXX:-c++}")
cat >"$work/c++20" <<EOF
#!/bin/sh
# Made by scripts/build-horovod.sh: Horovod asks for C++14, torch's headers need C++20.
for arg; do
  shift
  case \$arg in
    -std=c++14) arg=-std=c++20 ;;
    -std=gnu++14) arg=-std=gnu++20 ;;
  esac
  set -- "\$@" "\$arg"
done
exec "$real_cxx" "\$@"
EOF
chmod +x "$work/c++20"

export CXX=$work/c++20
export HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
  HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITHOUT_NVTX=1
# Gloo's CMakeLists asks for CMake 2.8.12; CMake 4 refuses anything below 3.5 without this.
export CMAKE_POLICY_VERSION_MINIMUM=3.5
# setup.py runs `make -j8` unless MAKEFLAGS is set; as many jobs as cores is as fast and needs
# less memory.
MAKEFLAGS=-j$(nproc 2>/dev/null || echo 2)
export MAKEFLAGS

install_horovod() {
  # `pip install horovod==X` keeps an installed X even when it was built for another torch, so
  # uninstall it first.
  "$python" -m pip uninstall --quiet --yes horovod 2>/dev/null || true
  "$python" -m pip install --no-build-isolation --progress-bar off "horovod==$HOROVOD_VERSION"
}

echo "build-horovod: installing Horovod $HOROVOD_VERSION for $python (a build takes minutes)"
start=$SECONDS
install_horovod
if ! is_built; then
  # pip's cache keys a built wheel by the sdist's URL only, so it may hand back a wheel built
  # for an earlier torch. Drop it and build again.
  echo "build-horovod: the installed Horovod does not fit this torch; rebuilding without pip's cached wheel"
  "$python" -m pip cache remove horovod >/dev/null 2>&1 || true
  install_horovod
  if ! is_built; then
    echo "build-horovod: Horovod installed, but 'import horovod.torch' or its Gloo check fails:" >&2
    "$python" -c 'import horovod.torch' >&2 || true
    exit 1
  fi
fi
echo "build-horovod: done in $((SECONDS - start)) s"
"$bindir/horovodrun" --check-build
