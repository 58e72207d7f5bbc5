#!/bin/sh
# The runtime's tools start on machines without CUDA: none of BINARY... may need a CUDA
# library (the CUDA backend is loaded at run time, backends/registry.h). The backend library
# itself (--backend LIB) may need cuBLASLt but never the driver (libcuda), the CUDA
# runtime (libcudart, linked into it statically) nor NCCL (opened when a run asks for it).
# usage: no_cuda_link.sh [--backend LIB] BINARY...
set -u
status=0
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }
if [ "${1:-}" = "--backend" ]; then
  lib=$2
  shift 2
  if [ ! -e "$lib" ]; then
    echo "$lib: missing"
    exit 1
  fi
  if needed "$lib" | grep -E '^lib(cuda|cudart)\.so'; then
    echo "FAIL: $lib needs the CUDA driver or a shared CUDA runtime"
    status=1
  fi
  if needed "$lib" | grep -E '^libnccl\.so'; then
    echo "FAIL: $lib links NCCL; it opens it at run time, when a run asks for --comm nccl"
    status=1
  fi
  if ! needed "$lib" | grep -q '^libcublasLt\.so'; then
    echo "FAIL: $lib does not load cuBLASLt"
    status=1
  fi
fi
for binary in "$@"; do
  if [ ! -e "$binary" ]; then
    echo "$binary: missing"
    exit 1
  fi
  if needed "$binary" | grep -E '^lib(cuda|cudart|cublas|cublasLt|cudnn|nccl|nvrtc|nvJitLink)\.so'; then
    echo "FAIL: $binary needs a CUDA library"
    status=1
  else
    echo "$binary: no CUDA library among $(needed "$binary" | wc -l) needed"
  fi
done
exit $status
