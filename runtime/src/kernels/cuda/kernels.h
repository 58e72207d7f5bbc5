//===- kernels.h - CUDA kernels (f32, checked against the CPU reference) -===//
//
// Device pointers in, device pointers out, on `stream`; each returns the CUDA
// error of its launch. Semantics are those of kernels/cpu/kernels.h.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CUDA_KERNELS_H
#define SHARDLINE_RUNTIME_KERNELS_CUDA_KERNELS_H

#include <cuda_runtime_api.h>

#include <cstdint>

namespace shardline::rt::cuda {

cudaError_t add(const float *a, const float *b, int64_t n, float *out, cudaStream_t stream);
cudaError_t silu(const float *x, int64_t n, float *out, cudaStream_t stream);
cudaError_t swiglu(const float *g, const float *u, int64_t n, float *out, cudaStream_t stream);
/// y = x / sqrt(mean_h(x^2) + eps) * w over rows of H; f32 accumulation.
cudaError_t rms_norm(const float *x, const float *w, int64_t T, int64_t H, float eps, float *y,
                     cudaStream_t stream);

} // namespace shardline::rt::cuda

#endif
