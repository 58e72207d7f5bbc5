//===- loss.cu - cross-entropy at world size 1 ----------------------------===//
//
// The logits and the loss in the types they are stored in (arith::Storage):
// each logit widened as it is read, the loss rounded once as it is written.
//
//===----------------------------------------------------------------------===//

#include "kernels/cuda/kernels.h"
#include "kernels/cuda/reduce.cuh"

namespace shardline::rt::cuda {

namespace {

/// One block per token: the row's maximum, its sum of exponentials (in
/// double, as the CPU sums them) and its label's logit make the token's term;
/// the logits stored as T.
template <typename T>
__global__ void crossEntropyRowKernel(const T *logits, const int32_t *labels, int64_t V,
                                      double *terms, int32_t *badLabels) {
  extern __shared__ double partial[];
  int64_t t = blockIdx.x;
  const T *row = logits + t * V;
  float max;
  double sum;
  rowMaxSumExp(row, V, partial, max, sum);
  if (threadIdx.x != 0)
    return;
  int32_t label = labels[t];
  if (!arith::idInRange(label, V)) {
    atomicAdd(badLabels, 1);
    terms[t] = 0.0;
    return;
  }
  terms[t] = arith::crossEntropyTerm(max, sum, arith::loadElement(row, label));
}

/// One block: the terms' sum over `tokens`, stored as L.
template <typename L>
__global__ void meanKernel(const double *terms, int64_t T, double tokens, L *loss) {
  extern __shared__ double partial[];
  blockMeanLoss(terms, T, tokens, partial, loss);
}

} // namespace

cudaError_t cross_entropy(Src logits, const int32_t *labels, int64_t T, int64_t V, double tokens,
                          double *terms, int32_t *badLabels, Dst loss, cudaStream_t stream) {
  if (cudaError_t status = arith::withStorage(
          logits.type, cudaErrorInvalidValue,
          [&](auto tag) {
            using A = decltype(tag);
            if (T == 0)
              return cudaSuccess;
            LaunchShape rows = rowShape(T, V, true);
            crossEntropyRowKernel<<<(unsigned)rows.blocks, rows.threads, rows.sharedBytes,
                                    stream>>>(static_cast<const A *>(logits.data), labels, V, terms,
                                              badLabels);
            return cudaGetLastError();
          });
      status != cudaSuccess)
    return status;
  return arith::withStorage(loss.type, cudaErrorInvalidValue, [&](auto tag) {
    using L = decltype(tag);
    LaunchShape one = rowShape(1, T, true);
    meanKernel<<<1, one.threads, one.sharedBytes, stream>>>(terms, T, tokens,
                                                            static_cast<L *>(loss.data));
    return cudaGetLastError();
  });
}

cudaError_t cross_entropy(const float *logits, const int32_t *labels, int64_t T, int64_t V,
                          double tokens, double *terms, int32_t *badLabels, float *loss,
                          cudaStream_t stream) {
  return cross_entropy(f32(logits), labels, T, V, tokens, terms, badLabels, f32(loss), stream);
}

} // namespace shardline::rt::cuda
