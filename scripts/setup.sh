#!/usr/bin/env bash
# Installs every Debian package Shardline needs on a fresh Debian 12 machine and configures the
# build in ./build. Idempotent: packages already present are skipped, an existing build dir is reused.
set -euo pipefail

PACKAGES=(
  # compiler infrastructure (MLIR/LLVM 22 from Debian) and the toolchain we build with
  libmlir-22-dev mlir-22-tools llvm-22-dev llvm-22-tools clang-22 lld-22
  cmake ninja-build ccache git pkg-config
  # runtime dependencies
  openmpi-bin libopenmpi-dev libopenblas-dev libflatbuffers-dev flatbuffers-compiler
  nlohmann-json3-dev libcli11-dev libgtest-dev libbenchmark-dev
  # tests; the sanitizer runtimes for scripts/sanitize.sh
  python3 libclang-rt-22-dev
  # the PyTorch oracle of the training tests (test/oracle)
  python3-torch python3-numpy
)

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${SHARDLINE_BUILD_DIR:-$root/build}"
if [ ! -f "$build/build.ninja" ]; then
  cmake -S "$root" -B "$build" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_COMPILER=clang-22 -DCMAKE_CXX_COMPILER=clang++-22 \
    -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
    -DCMAKE_EXE_LINKER_FLAGS=-fuse-ld=lld -DCMAKE_SHARED_LINKER_FLAGS=-fuse-ld=lld \
    -DMLIR_DIR=/usr/lib/llvm-22/lib/cmake/mlir
fi
echo "setup: build directory $build is configured"
