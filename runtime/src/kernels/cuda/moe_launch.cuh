//===- moe_launch.cuh - the MoE kernels' elementwise launches --*- CUDA -*-===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CUDA_MOE_LAUNCH_CUH
#define SHARDLINE_RUNTIME_KERNELS_CUDA_MOE_LAUNCH_CUH

#include "kernels/cuda/launch.h"

#include <cuda_runtime_api.h>

#include <cstdint>

namespace shardline::rt::cuda {

/// `kernel` over n elements in elementwiseShape(n)'s grid (a grid-stride
/// loop), nothing for n = 0; the launch's error.
template <typename Kernel, typename... Args>
cudaError_t launchElementwise(int64_t n, cudaStream_t stream, Kernel kernel, Args... args) {
  if (n == 0)
    return cudaSuccess;
  LaunchShape shape = elementwiseShape(n);
  kernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(args...);
  return cudaGetLastError();
}

} // namespace shardline::rt::cuda

#endif
