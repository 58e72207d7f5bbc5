//===- grad_sequence.cu - backward of the conv1d and the RG-LRU scan -------===//

#include "kernels/cuda/kernels_grad.h"
#include "kernels/cuda/reduce.cuh"

namespace shardline::rt::cuda {

namespace {

/// One thread per element (b, u, c) of dx.
__global__ void convGradKernel(const float *w, const float *dy, int64_t B, int64_t S, int64_t C,
                               int64_t W, float *dx) {
  int64_t n = B * S * C;
  for (int64_t e = firstElement(); e < n; e += gridStride()) {
    int64_t row = e / C, c = e % C, b = row / S;
    dx[e] = arith::convGradInput(w, dy + b * S * C, S, C, W, row % S, c);
  }
}

/// One thread per weight (c, j) and per bias (j == W): each batch entry's
/// sum in double, added to the f32 result once per entry as on the CPU.
__global__ void convGradWeightKernel(const float *x, const float *dy, int64_t B, int64_t S,
                                     int64_t C, int64_t W, float *dweight, float *dbias) {
  int64_t n = C * (W + 1);
  for (int64_t e = firstElement(); e < n; e += gridStride()) {
    int64_t c = e / (W + 1), j = e % (W + 1);
    float total = 0.0f;
    for (int64_t b = 0; b < B; ++b)
      total =
          (float)(total + arith::convGradWeightSum(x + b * S * C, dy + b * S * C, S, C, W, c, j));
    if (j == W)
      dbias[c] = total;
    else
      dweight[c * W + j] = total;
  }
}

__global__ void rglruGradKernel(arith::RglruGradArgs args) {
  for (int64_t w = firstElement(); w < args.W; w += gridStride())
    arith::rglruGradLane(args, w);
}

} // namespace

cudaError_t causal_conv1d_grad(const float *w, const float *dy, int64_t B, int64_t S, int64_t C,
                               int64_t W, float *dx, cudaStream_t stream) {
  int64_t n = B * S * C;
  if (n == 0)
    return cudaSuccess;
  LaunchShape shape = elementwiseShape(n);
  convGradKernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(w, dy, B, S, C, W, dx);
  return cudaGetLastError();
}

cudaError_t causal_conv1d_grad_weight(const float *x, const float *dy, int64_t B, int64_t S,
                                      int64_t C, int64_t W, float *dweight, float *dbias,
                                      cudaStream_t stream) {
  int64_t n = C * (W + 1);
  if (n == 0)
    return cudaSuccess;
  LaunchShape shape = elementwiseShape(n);
  convGradWeightKernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(x, dy, B, S, C, W,
                                                                             dweight, dbias);
  return cudaGetLastError();
}

cudaError_t rglru_scan_grad(const arith::RglruGradArgs &args, cudaStream_t stream) {
  if (args.W == 0)
    return cudaSuccess;
  LaunchShape shape = elementwiseShape(args.W);
  rglruGradKernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(args);
  return cudaGetLastError();
}

} // namespace shardline::rt::cuda
