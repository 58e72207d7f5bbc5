#!/usr/bin/env bash
# Bundles what one GPU check needs (scripts/gpu-check.sh) for a GPU machine that has the CUDA
# toolkit, its driver and PyTorch but not this project's build dependencies (LLVM/MLIR, OpenBLAS,
# OpenMPI, FlatBuffers): shardline-run and the CUDA backend library, the CUDA kernel test, the GPU
# benchmark, the plans the GPU tests and the block comparison run (compiled here, so no compiler
# is needed there), and the shared libraries these need from this machine, as ldd resolves them
# here, but for the C and C++ libraries' own (libc, libm, ld-linux, ..., libstdc++ and libgcc_s,
# which every image with Python has, in a version at least Debian 12's where its glibc is: the
# bundle needs glibc 2.36 and GLIBCXX_3.4.30), the driver's (libcuda, libnvidia-*) and the CUDA
# toolkit's (under /usr/local/cuda: the GPU machine has its own, or PyTorch's CUDA wheels, and
# cuBLASLt alone is hundreds of MiB; NCCL is opened at run time, from the same places). Binaries and libraries are stripped, and the
# libraries but the CUDA backend packed into lib.tar.gz (about a third of their size; gpu-check.sh
# unpacks them); the
# bundle must stay within 60 MiB, what the device machine carries beside the working tree.
#
# Usage: scripts/gpu-bundle.sh [BUILD_DIR] [BUNDLE_DIR]   (defaults build/ and .gpu/)
# docs/benchmarks.md ("GPU figures") gives the command that runs the bundle on a GPU.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$(cd "${1:-$root/build}" && pwd)"
bundle="${2:-$root/.gpu}"
limit_mib=60

need() {
  if [ ! -e "$1" ]; then
    echo "gpu-bundle.sh: $1 is missing: $2" >&2
    exit 2
  fi
}
need "$build/bin/shardline-run" "build the project first (cmake --build $build)"
need "$build/bin/shardline-compile" "build the project first (cmake --build $build)"
need "$build/lib/libshardline-backend-cuda.so" "this build found no CUDA toolkit"
need "$build/bin/shardline-bench-gpu" "this build found no CUDA toolkit"
need "$build/runtime/shardline-runtime-cuda-test" "this build found no CUDA toolkit or GoogleTest"

rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/lib" "$bundle/test" "$bundle/plans/model" "$bundle/plans/nccl"
cp "$build/bin/shardline-run" "$build/bin/shardline-bench-gpu" "$bundle/bin/"
cp "$build/lib/libshardline-backend-cuda.so" "$bundle/lib/"
cp "$build/runtime/shardline-runtime-cuda-test" "$bundle/test/"

# The plans: the GPU test scripts compile each plan and keep a copy (gpu_plans.sh), running
# nothing; the block comparison's from bench/gpu/block.json.
# A plan a script compiles with "$compile" itself, not through `plan`, is neither saved here nor
# found there (the GPU machine has no compiler): refuse it.
if grep -n '^[^#]*"\$compile"' "$root/runtime/test/cuda_model_test.sh" \
  "$root/runtime/test/cuda_nccl_test.sh" >&2; then
  echo "gpu-bundle.sh: the lines above compile a plan without gpu_plans.sh's plan" >&2
  exit 1
fi
SHARDLINE_PLAN_SAVE="$bundle/plans/model" \
  sh "$root/runtime/test/cuda_model_test.sh" "$build/bin" "$root/examples" >/dev/null
SHARDLINE_PLAN_SAVE="$bundle/plans/nccl" \
  sh "$root/runtime/test/cuda_nccl_test.sh" "$build/bin" >/dev/null
"$build/bin/shardline-compile" "$root/bench/gpu/block.json" --emit plan -o "$bundle/plans/block.slp"

# The shared libraries, as ldd resolves them here.
skip='^(libc|libm|libmvec|libpthread|libdl|librt|libresolv|libutil|ld-linux[^/]*|linux-vdso|libstdc\+\+|libgcc_s|libcuda|libnvidia[^/]*)\.so'
for binary in "$bundle"/bin/* "$bundle"/test/* "$bundle"/lib/libshardline-backend-cuda.so; do
  ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }'
done | sort -u | while read -r library; do
  name=${library##*/}
  if [[ "$name" =~ $skip ]] || [[ "$(readlink -f "$library")" == /usr/local/cuda* ]]; then
    continue
  fi
  if [ ! -e "$bundle/lib/$name" ]; then
    cp -L "$library" "$bundle/lib/$name"
  fi
done
chmod u+w "$bundle"/lib/* "$bundle"/bin/* "$bundle"/test/*
strip --strip-unneeded "$bundle"/bin/* "$bundle"/test/* "$bundle"/lib/*

# What the GPU machine has to bring itself: the libraries skipped above that the binaries need.
{
  echo "Built $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(git -C "$root" rev-parse --short HEAD) by scripts/gpu-bundle.sh."
  echo "Needed from the GPU machine (not bundled):"
  for binary in "$bundle"/bin/* "$bundle"/test/* "$bundle"/lib/libshardline-backend-cuda.so; do
    LD_LIBRARY_PATH="$bundle/lib" ldd "$binary" | awk '{ print $1 }'
  done | sort -u | while read -r name; do
    [ -e "$bundle/lib/$name" ] || echo "  $name"
  done
} > "$bundle/MANIFEST"

# Packed: OpenBLAS alone is 35 MiB unpacked. The CUDA backend stays beside bin/ (shardline-run
# loads it from ../lib).
backend=libshardline-backend-cuda.so
tar -C "$bundle" -czf "$bundle/lib.tar.gz" --exclude "lib/$backend" lib
find "$bundle/lib" -type f ! -name "$backend" -delete

kib=$(du -sk "$bundle" | cut -f1)
echo "gpu-bundle.sh: $bundle holds $(find "$bundle" -type f | wc -l) files, $((kib / 1024)) MiB ($kib KiB)"
cat "$bundle/MANIFEST"
if [ "$kib" -gt $((limit_mib * 1024)) ]; then
  echo "gpu-bundle.sh: the bundle is larger than $limit_mib MiB" >&2
  exit 1
fi
