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

/// One thread per token; the logits and weights stored as S.
template <typename S>
__global__ void routerKernel(const S *logits, int64_t T, int64_t E, int64_t k, S *weights,
                             int32_t *idx) {
  for (int64_t t = firstElement(); t < T; t += gridStride())
    arith::routeToken(logits + t * E, E, k, weights + t * k, idx + t * k);
}

/// One thread per (token, choice, channel); the element's bits moved as
/// they are (W: a 32- or 16-bit word).
template <typename W>
__global__ void dispatchKernel(const W *x, const int32_t *idx, int64_t T, int64_t H, int64_t k,
                               int64_t E, W *slabs, int32_t *badIds) {
  int64_t n = T * k * H;
  for (int64_t i = firstElement(); i < n; i += gridStride()) {
    int64_t to = arith::dispatchTarget(idx, T, H, k, E, i);
    if (to >= 0)
      slabs[to] = x[(i / (k * H)) * H + i % H];
    else if (i % H == 0)
      atomicAdd(badIds, 1);
  }
}

/// One thread per output element (token, channel); slabs, weights and y
/// stored as S.
template <typename S>
__global__ void combineKernel(const S *slabs, const S *weights, const int32_t *idx, int64_t T,
                              int64_t H, int64_t k, int64_t E, S *y, int32_t *badIds) {
  for (int64_t i = firstElement(); i < T * H; i += gridStride()) {
    int64_t t = i / H, h = i % H;
    arith::storeElement(y, i, arith::combineElement(slabs, weights, idx, T, H, k, E, t, h));
    if (h == 0)
      for (int64_t j = 0; j < k; ++j)
        if (!arith::idInRange(idx[t * k + j], E))
          atomicAdd(badIds, 1);
  }
}

} // namespace

cudaError_t router_topk(Src logits, int64_t T, int64_t E, int64_t k, Dst weights, int32_t *idx,
                        cudaStream_t stream) {
  if (logits.type != weights.type)
    return cudaErrorInvalidValue;
  return arith::withStorage(logits.type, cudaErrorInvalidValue, [&](auto t) {
    using S = decltype(t);
    return elementwise(T, stream, routerKernel<S>, static_cast<const S *>(logits.data), T, E, k,
                       static_cast<S *>(weights.data), idx);
  });
}

cudaError_t moe_dispatch(Src x, const int32_t *idx, int64_t T, int64_t H, int64_t k, int64_t E,
                         Dst slabs, int32_t *badIds, cudaStream_t stream) {
  if (x.type != slabs.type || !isFloat(x.type))
    return cudaErrorInvalidValue;
  if (x.type == arith::Type::F32)
    return elementwise(T * k * H, stream, dispatchKernel<uint32_t>,
                       static_cast<const uint32_t *>(x.data), idx, T, H, k, E,
                       static_cast<uint32_t *>(slabs.data), badIds);
  return elementwise(T * k * H, stream, dispatchKernel<uint16_t>,
                     static_cast<const uint16_t *>(x.data), idx, T, H, k, E,
                     static_cast<uint16_t *>(slabs.data), badIds);
}

cudaError_t moe_combine(Src slabs, Src weights, const int32_t *idx, int64_t T, int64_t H, int64_t k,
                        int64_t E, Dst y, int32_t *badIds, cudaStream_t stream) {
  if (slabs.type != y.type || weights.type != y.type)
    return cudaErrorInvalidValue;
  return arith::withStorage(y.type, cudaErrorInvalidValue, [&](auto t) {
    using S = decltype(t);
    return elementwise(T * H, stream, combineKernel<S>, static_cast<const S *>(slabs.data),
                       static_cast<const S *>(weights.data), idx, T, H, k, E,
                       static_cast<S *>(y.data), badIds);
  });
}

} // namespace shardline::rt::cuda
