//===- probe.h - whether this machine has a usable CUDA device --*- C++ -*-===//
//
// The GPU tests and the GPU benchmark skip (exit 77) where no CUDA device can
// be used, with the reason in the same words.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CUDA_PROBE_H
#define SHARDLINE_RUNTIME_KERNELS_CUDA_PROBE_H

#include <cuda_runtime_api.h>

#include <string>

namespace shardline::rt::cuda {

/// "" where a CUDA device can be used, else why not: "no CUDA device (<the
/// runtime's reason>)" or "no CUDA device (0 devices)".
inline std::string noCudaDevice() {
  int devices = 0;
  cudaError_t status = cudaGetDeviceCount(&devices);
  if (status == cudaSuccess && devices > 0)
    return "";
  return std::string("no CUDA device (") +
         (status != cudaSuccess ? cudaGetErrorString(status) : "0 devices") + ")";
}

} // namespace shardline::rt::cuda

#endif
