//===- grad_moe.cu - backward of MoE routing, dispatch and combine ---------===//

#include "kernels/cuda/kernels_grad.h"
#include "kernels/cuda/reduce.cuh"

namespace shardline::rt::cuda {

namespace {

/// One thread per token.
__global__ void routerGradKernel(const float *weights, const int32_t *idx, const float *dweights,
                                 int64_t T, int64_t k, int64_t E, float *dlogits, int32_t *badIds) {
  for (int64_t t = firstElement(); t < T; t += gridStride()) {
    for (int64_t j = 0; j < k; ++j)
      if (!arith::idInRange(idx[t * k + j], E))
        atomicAdd(badIds, 1);
    arith::routerGradToken(weights + t * k, idx + t * k, dweights + t * k, k, E, dlogits + t * E);
  }
}

/// One thread per element (token, choice, channel) of the chosen rows.
__global__ void combineGradKernel(const float *weights, const int32_t *idx, const float *dy,
                                  int64_t T, int64_t H, int64_t k, int64_t E, float *dslabs) {
  for (int64_t i = firstElement(); i < T * k * H; i += gridStride()) {
    int64_t to = arith::dispatchTarget(idx, T, H, k, E, i);
    if (to >= 0)
      dslabs[to] = arith::combineGradValue(weights, dy, H, k, i);
  }
}

/// One thread per choice (token, j).
__global__ void combineGradWeightsKernel(const float *slabs, const int32_t *idx, const float *dy,
                                         int64_t T, int64_t H, int64_t k, int64_t E,
                                         float *dweights) {
  for (int64_t i = firstElement(); i < T * k; i += gridStride())
    dweights[i] = arith::combineGradWeight(slabs, idx, dy, T, H, k, E, i / k, i % k);
}

/// One thread per element (token, channel) of dx.
__global__ void dispatchGradKernel(const float *dslabs, const int32_t *idx, int64_t T, int64_t H,
                                   int64_t k, int64_t E, float *dx) {
  for (int64_t i = firstElement(); i < T * H; i += gridStride())
    dx[i] = arith::dispatchGradElement(dslabs, idx, T, H, k, E, i / H, i % H);
}

} // namespace

cudaError_t router_topk_grad(const float *weights, const int32_t *idx, const float *dweights,
                             int64_t T, int64_t k, int64_t E, float *dlogits, int32_t *badIds,
                             cudaStream_t stream) {
  if (T == 0)
    return cudaSuccess;
  LaunchShape shape = elementwiseShape(T);
  routerGradKernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(weights, idx, dweights, T,
                                                                         k, E, dlogits, badIds);
  return cudaGetLastError();
}

cudaError_t moe_combine_grad(const float *weights, const int32_t *idx, const float *dy, int64_t T,
                             int64_t H, int64_t k, int64_t E, float *dslabs, cudaStream_t stream) {
  if (cudaError_t status = cudaMemsetAsync(dslabs, 0, E * T * H * sizeof(float), stream);
      status != cudaSuccess || T * k * H == 0)
    return status;
  LaunchShape shape = elementwiseShape(T * k * H);
  combineGradKernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(weights, idx, dy, T, H, k,
                                                                          E, dslabs);
  return cudaGetLastError();
}

cudaError_t moe_combine_grad_weights(const float *slabs, const int32_t *idx, const float *dy,
                                     int64_t T, int64_t H, int64_t k, int64_t E, float *dweights,
                                     cudaStream_t stream) {
  if (T * k == 0)
    return cudaSuccess;
  LaunchShape shape = elementwiseShape(T * k);
  combineGradWeightsKernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(slabs, idx, dy, T,
                                                                                 H, k, E, dweights);
  return cudaGetLastError();
}

cudaError_t moe_dispatch_grad(const float *dslabs, const int32_t *idx, int64_t T, int64_t H,
                              int64_t k, int64_t E, float *dx, cudaStream_t stream) {
  if (T * H == 0)
    return cudaSuccess;
  LaunchShape shape = elementwiseShape(T * H);
  dispatchGradKernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(dslabs, idx, T, H, k, E,
                                                                           dx);
  return cudaGetLastError();
}

} // namespace shardline::rt::cuda
