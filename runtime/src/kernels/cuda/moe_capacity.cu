//===- moe_capacity.cu - capacity-mode MoE's slots, dispatch, combine ------===//
//
// The kernels of kernels_moe.h's capacity mode; what each thread computes is
// kernels/cuda/moe_capacity.h's.
//
//===----------------------------------------------------------------------===//

#include "kernels/cuda/kernels_moe.h"
#include "kernels/cuda/reduce.cuh"

namespace shardline::rt::cuda {

namespace {

using arith::Capacity;

__global__ void badIdsKernel(const int32_t *idx, int64_t n, int64_t E, int32_t *bad) {
  for (int64_t i = firstElement(); i < n; i += gridStride())
    if (!arith::idInRange(idx[i], E))
      atomicAdd(bad, 1);
}

__global__ void badSlotsKernel(const int32_t *slots, int64_t n, int64_t C, int32_t *bad) {
  for (int64_t i = firstElement(); i < n; i += gridStride())
    if (slots[i] < -1 || slots[i] >= C)
      atomicAdd(bad, 1);
}

/// One thread per choice (the `probs` policy's ranking); the weights stored
/// as W.
template <typename W>
__global__ void rankKernel(const W *weights, const int32_t *idx, Capacity d, int32_t *slots) {
  for (int64_t i = firstElement(); i < d.B * d.S * d.k; i += gridStride())
    arith::rankChoice(weights, idx, d, i, slots);
}

/// One thread per (group, expert).
__global__ void slotsKernel(const int32_t *idx, Capacity d, bool probs, int32_t *slots,
                            int64_t *kept, int64_t *dropped) {
  for (int64_t i = firstElement(); i < d.groups() * d.E; i += gridStride())
    arith::expertSlots(idx, d, probs, i / d.E, (int32_t)(i % d.E), slots, kept + i, dropped + i);
}

/// One thread per (choice, channel); the element's bits moved as they are
/// (E: a 32- or 16-bit word).
template <typename E>
__global__ void dispatchKernel(const E *x, const int32_t *idx, const int32_t *slots, Capacity d,
                               int64_t H, E *buffers) {
  int64_t n = d.B * d.S * d.k * H;
  for (int64_t i = firstElement(); i < n; i += gridStride()) {
    int64_t row = d.rowOf(idx, slots, i / H);
    if (row >= 0)
      buffers[row * H + i % H] = x[(i / (d.k * H)) * H + i % H];
  }
}

/// One thread per (token, channel); buffers, weights and y stored as T.
template <typename T>
__global__ void combineKernel(const T *buffers, const T *weights, const int32_t *idx,
                              const int32_t *slots, Capacity d, int64_t H, T *y) {
  for (int64_t i = firstElement(); i < d.B * d.S * H; i += gridStride())
    arith::storeElement(
        y, i, arith::capacityCombineElement(buffers, weights, idx, slots, d, H, i / H, i % H));
}

__global__ void dispatchGradKernel(const float *dbuffers, const int32_t *idx, const int32_t *slots,
                                   Capacity d, int64_t H, float *dx) {
  for (int64_t i = firstElement(); i < d.B * d.S * H; i += gridStride())
    dx[i] = arith::capacityDispatchGradElement(dbuffers, idx, slots, d, H, i / H, i % H);
}

/// One thread per (choice, channel).
__global__ void combineGradKernel(const float *weights, const int32_t *idx, const int32_t *slots,
                                  const float *dy, Capacity d, int64_t H, float *dbuffers) {
  int64_t n = d.B * d.S * d.k * H;
  for (int64_t i = firstElement(); i < n; i += gridStride()) {
    int64_t c = i / H, row = d.rowOf(idx, slots, c);
    if (row >= 0)
      dbuffers[row * H + i % H] = weights[c] * dy[(c / d.k) * H + i % H];
  }
}

/// One thread per choice.
__global__ void combineGradWeightsKernel(const float *buffers, const int32_t *idx,
                                         const int32_t *slots, const float *dy, Capacity d,
                                         int64_t H, float *dweights) {
  for (int64_t i = firstElement(); i < d.B * d.S * d.k; i += gridStride())
    dweights[i] = arith::capacityCombineGradWeight(buffers, idx, slots, dy, d, H, i);
}

__global__ void uniformGroupsKernel(int64_t groups, int64_t rows, int64_t *offsets,
                                    int64_t *tileOffsets) {
  arith::uniformGroups(groups, rows, offsets, tileOffsets);
}

int64_t bufferValues(const Capacity &d, int64_t H) { return d.E * d.groups() * d.C * H; }

} // namespace

cudaError_t uniform_groups(int64_t groups, int64_t rows, int64_t *offsets, int64_t *tileOffsets,
                           cudaStream_t stream) {
  uniformGroupsKernel<<<1, 1, 0, stream>>>(groups, rows, offsets, tileOffsets);
  return cudaGetLastError();
}

cudaError_t count_bad_ids(const int32_t *idx, int64_t n, int64_t E, int32_t *bad,
                          cudaStream_t stream) {
  return elementwise(n, stream, badIdsKernel, idx, n, E, bad);
}

cudaError_t count_bad_slots(const int32_t *slots, int64_t n, int64_t C, int32_t *bad,
                            cudaStream_t stream) {
  return elementwise(n, stream, badSlotsKernel, slots, n, C, bad);
}

cudaError_t moe_capacity_slots(Src weights, const int32_t *idx, const Capacity &d, bool probs,
                               int32_t *slots, int64_t *kept, int64_t *dropped,
                               cudaStream_t stream) {
  if (probs)
    if (cudaError_t status = arith::withStorage(
            weights.type, cudaErrorInvalidValue,
            [&](auto t) {
              using W = decltype(t);
              return elementwise(d.B * d.S * d.k, stream, rankKernel<W>,
                                 static_cast<const W *>(weights.data), idx, d, slots);
            });
        status != cudaSuccess)
      return status;
  return elementwise(d.groups() * d.E, stream, slotsKernel, idx, d, probs, slots, kept, dropped);
}

cudaError_t moe_dispatch_capacity(Src x, const int32_t *idx, const int32_t *slots,
                                  const Capacity &d, int64_t H, Dst buffers, cudaStream_t stream) {
  if (x.type != buffers.type || !isFloat(x.type))
    return cudaErrorInvalidValue;
  const bool wide = x.type == arith::Type::F32;
  if (cudaError_t status =
          cudaMemsetAsync(buffers.data, 0, bufferValues(d, H) * (wide ? 4 : 2), stream);
      status != cudaSuccess)
    return status;
  if (wide)
    return elementwise(d.B * d.S * d.k * H, stream, dispatchKernel<uint32_t>,
                       static_cast<const uint32_t *>(x.data), idx, slots, d, H,
                       static_cast<uint32_t *>(buffers.data));
  return elementwise(d.B * d.S * d.k * H, stream, dispatchKernel<uint16_t>,
                     static_cast<const uint16_t *>(x.data), idx, slots, d, H,
                     static_cast<uint16_t *>(buffers.data));
}

cudaError_t moe_combine_capacity(Src buffers, Src weights, const int32_t *idx, const int32_t *slots,
                                 const Capacity &d, int64_t H, Dst y, cudaStream_t stream) {
  if (buffers.type != y.type || weights.type != y.type)
    return cudaErrorInvalidValue;
  return arith::withStorage(y.type, cudaErrorInvalidValue, [&](auto t) {
    using T = decltype(t);
    return elementwise(d.B * d.S * H, stream, combineKernel<T>,
                       static_cast<const T *>(buffers.data), static_cast<const T *>(weights.data),
                       idx, slots, d, H, static_cast<T *>(y.data));
  });
}

cudaError_t moe_dispatch_capacity_grad(const float *dbuffers, const int32_t *idx,
                                       const int32_t *slots, const Capacity &d, int64_t H,
                                       float *dx, cudaStream_t stream) {
  return elementwise(d.B * d.S * H, stream, dispatchGradKernel, dbuffers, idx, slots, d, H, dx);
}

cudaError_t moe_combine_capacity_grad(const float *weights, const int32_t *idx,
                                      const int32_t *slots, const float *dy, const Capacity &d,
                                      int64_t H, float *dbuffers, cudaStream_t stream) {
  if (cudaError_t status = cudaMemsetAsync(dbuffers, 0, bufferValues(d, H) * sizeof(float), stream);
      status != cudaSuccess)
    return status;
  return elementwise(d.B * d.S * d.k * H, stream, combineGradKernel, weights, idx, slots, dy, d, H,
                     dbuffers);
}

cudaError_t moe_combine_capacity_grad_weights(const float *buffers, const int32_t *idx,
                                              const int32_t *slots, const float *dy,
                                              const Capacity &d, int64_t H, float *dweights,
                                              cudaStream_t stream) {
  return elementwise(d.B * d.S * d.k, stream, combineGradWeightsKernel, buffers, idx, slots, dy, d,
                     H, dweights);
}

} // namespace shardline::rt::cuda
