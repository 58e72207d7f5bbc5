//===- moe.cu - MoE routing, dispatch into expert slabs, combine ----------===//
//
// The experts themselves are GEMMs on their slabs (the backend's cuBLASLt),
// queued one expert after another with no wait for the host.
//
//===----------------------------------------------------------------------===//

#include "kernels/cuda/kernels.h"
#include "kernels/cuda/reduce.cuh"

namespace shardline::rt::cuda {

namespace {

/// One thread per token.
__global__ void routerKernel(const float *logits, int64_t T, int64_t E, int64_t k, float *weights,
                             int32_t *idx) {
  for (int64_t t = firstElement(); t < T; t += gridStride())
    arith::routeToken(logits + t * E, E, k, weights + t * k, idx + t * k);
}

/// One thread per (token, choice, channel).
__global__ void dispatchKernel(const float *x, const int32_t *idx, int64_t T, int64_t H, int64_t k,
                               int64_t E, float *slabs, int32_t *badIds) {
  int64_t n = T * k * H;
  for (int64_t i = firstElement(); i < n; i += gridStride()) {
    int64_t to = arith::dispatchTarget(idx, T, H, k, E, i);
    if (to >= 0)
      slabs[to] = x[(i / (k * H)) * H + i % H];
    else if (i % H == 0)
      atomicAdd(badIds, 1);
  }
}

/// One thread per output element (token, channel).
__global__ void combineKernel(const float *slabs, const float *weights, const int32_t *idx,
                              int64_t T, int64_t H, int64_t k, int64_t E, float *y,
                              int32_t *badIds) {
  for (int64_t i = firstElement(); i < T * H; i += gridStride()) {
    int64_t t = i / H, h = i % H;
    y[i] = arith::combineElement(slabs, weights, idx, T, H, k, E, t, h);
    if (h == 0)
      for (int64_t j = 0; j < k; ++j)
        if (!arith::idInRange(idx[t * k + j], E))
          atomicAdd(badIds, 1);
  }
}

} // namespace

cudaError_t router_topk(const float *logits, int64_t T, int64_t E, int64_t k, float *weights,
                        int32_t *idx, cudaStream_t stream) {
  if (T == 0)
    return cudaSuccess;
  LaunchShape shape = elementwiseShape(T);
  routerKernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(logits, T, E, k, weights, idx);
  return cudaGetLastError();
}

cudaError_t moe_dispatch(const float *x, const int32_t *idx, int64_t T, int64_t H, int64_t k,
                         int64_t E, float *slabs, int32_t *badIds, cudaStream_t stream) {
  if (T * k * H == 0)
    return cudaSuccess;
  LaunchShape shape = elementwiseShape(T * k * H);
  dispatchKernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(x, idx, T, H, k, E, slabs,
                                                                       badIds);
  return cudaGetLastError();
}

cudaError_t moe_combine(const float *slabs, const float *weights, const int32_t *idx, int64_t T,
                        int64_t H, int64_t k, int64_t E, float *y, int32_t *badIds,
                        cudaStream_t stream) {
  if (T * H == 0)
    return cudaSuccess;
  LaunchShape shape = elementwiseShape(T * H);
  combineKernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(slabs, weights, idx, T, H, k,
                                                                      E, y, badIds);
  return cudaGetLastError();
}

} // namespace shardline::rt::cuda
