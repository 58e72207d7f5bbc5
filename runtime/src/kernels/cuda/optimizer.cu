//===- optimizer.cu - AdamW with global-norm gradient clipping ------------===//
//
// Compiled without FMA contraction (runtime/CMakeLists.txt): each element's
// double arithmetic is then the CPU kernel's, operation for operation.
//
//===----------------------------------------------------------------------===//

#include "kernels/cuda/kernels_grad.h"
#include "kernels/cuda/reduce.cuh"

namespace shardline::rt::cuda {

namespace {

/// Every thread reads the sum of squares: the clipping factor, or false
/// when the sum is not finite, which stops the update (counted once) rather
/// than turning the weights into NaN.
__device__ bool clipFactor(const float *sumsq, double clip, int32_t *badSumsq, double &scale) {
  double total = *sumsq;
  if (!isfinite(total)) {
    if (firstElement() == 0)
      atomicAdd(badSumsq, 1);
    return false;
  }
  scale = arith::clipScale(total, clip);
  return true;
}

__global__ void adamwKernel(float *w, const float *grad, float *m, float *v, int64_t n,
                            arith::AdamWConstants k, const float *sumsq, int32_t *badSumsq) {
  double scale;
  if (!clipFactor(sumsq, k.clip, badSumsq, scale))
    return;
  for (int64_t i = firstElement(); i < n; i += gridStride())
    arith::adamwElement(w[i], grad[i], m[i], v[i], k, scale);
}

/// adamwKernel on the main copy, each weight rounded from it.
template <typename T, typename G>
__global__ void adamwMainKernel(T *w, const G *grad, float *main, float *m, float *v, int64_t n,
                                arith::AdamWConstants k, const float *sumsq, int32_t *badSumsq) {
  double scale;
  if (!clipFactor(sumsq, k.clip, badSumsq, scale))
    return;
  for (int64_t i = firstElement(); i < n; i += gridStride())
    arith::adamwMainElement(w, i, arith::loadElement(grad, i), main[i], m[i], v[i], k, scale);
}

} // namespace

cudaError_t adamw_main(Dst w, Src grad, float *main, float *m, float *v, int64_t n,
                       const arith::AdamWConstants &constants, const float *sumsq,
                       int32_t *badSumsq, cudaStream_t stream) {
  if (w.type == arith::Type::F32 || (grad.type != w.type && grad.type != arith::Type::F32))
    return cudaErrorInvalidValue;
  LaunchShape shape = elementwiseShape(std::max<int64_t>(n, 1));
  return arith::withStorage(w.type, cudaErrorInvalidValue, [&](auto tag) {
    using T = decltype(tag);
    auto launch = [&](auto *g) {
      adamwMainKernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(
          static_cast<T *>(w.data), g, main, m, v, n, constants, sumsq, badSumsq);
      return cudaGetLastError();
    };
    return grad.type == arith::Type::F32 ? launch(static_cast<const float *>(grad.data))
                                         : launch(static_cast<const T *>(grad.data));
  });
}

cudaError_t adamw(float *w, const float *grad, float *m, float *v, int64_t n,
                  const arith::AdamWConstants &constants, const float *sumsq, int32_t *badSumsq,
                  cudaStream_t stream) {
  LaunchShape shape = elementwiseShape(std::max<int64_t>(n, 1));
  adamwKernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(w, grad, m, v, n, constants,
                                                                    sumsq, badSumsq);
  return cudaGetLastError();
}

} // namespace shardline::rt::cuda
