//===- loss.cu - cross-entropy at world size 1 ----------------------------===//

#include "kernels/cuda/kernels.h"
#include "kernels/cuda/reduce.cuh"

namespace shardline::rt::cuda {

namespace {

/// One block per token: the row's maximum, its sum of exponentials (in
/// double, as the CPU sums them) and its label's logit make the token's term.
__global__ void crossEntropyRowKernel(const float *logits, const int32_t *labels, int64_t V,
                                      double *terms, int32_t *badLabels) {
  extern __shared__ double partial[];
  int64_t t = blockIdx.x;
  const float *row = logits + t * V;
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
  terms[t] = arith::crossEntropyTerm(max, sum, row[label]);
}

/// One block: the terms' sum over `tokens`.
__global__ void meanKernel(const double *terms, int64_t T, double tokens, float *loss) {
  extern __shared__ double partial[];
  blockMeanLoss(terms, T, tokens, partial, loss);
}

} // namespace

cudaError_t cross_entropy(const float *logits, const int32_t *labels, int64_t T, int64_t V,
                          double tokens, double *terms, int32_t *badLabels, float *loss,
                          cudaStream_t stream) {
  if (T > 0) {
    LaunchShape rows = rowShape(T, V, true);
    crossEntropyRowKernel<<<(unsigned)rows.blocks, rows.threads, rows.sharedBytes, stream>>>(
        logits, labels, V, terms, badLabels);
    if (cudaError_t status = cudaGetLastError(); status != cudaSuccess)
      return status;
  }
  LaunchShape one = rowShape(1, T, true);
  meanKernel<<<1, one.threads, one.sharedBytes, stream>>>(terms, T, tokens, loss);
  return cudaGetLastError();
}

} // namespace shardline::rt::cuda
