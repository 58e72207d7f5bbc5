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

/// The scan's prelude: softplus(dt + dt_bias) a thread an element, and the
/// decay rates of the heads.
__global__ void ssdPreludeKernel(const float *dt, const float *dtBias, const float *aLog, int64_t T,
                                 int64_t NH, float *dtPrelude, float *A) {
  int64_t n = T * NH > NH ? T * NH : NH;
  for (int64_t i = firstElement(); i < n; i += gridStride()) {
    if (i < T * NH)
      dtPrelude[i] = arith::ssdStep(dt[i], dtBias[i % NH]);
    if (i < NH)
      A[i] = arith::ssdRate(aLog[i]);
  }
}

__global__ void ssdGradKernel(arith::SsdGradArgs args) {
  for (int64_t grp = firstElement(); grp < args.G; grp += gridStride())
    arith::ssdGradLane(args, grp);
}

__global__ void ssdPreludeGradKernel(const float *dt, const float *dtBias, const float *aLog,
                                     const float *ddt, const float *dA, int64_t T, int64_t NH,
                                     float *ddtRaw, float *ddtBias, float *daLog) {
  for (int64_t h = firstElement(); h < NH; h += gridStride())
    arith::ssdPreludeGradLane(dt, dtBias, aLog, ddt, dA, T, NH, h, ddtRaw, ddtBias, daLog);
}

} // namespace

cudaError_t ssd_scan_grad(const float *dt, const float *dtBias, const float *aLog, float *dtPrelude,
                          float *A, arith::SsdGradArgs args, float *ddtRaw, float *ddtBias,
                          float *daLog, cudaStream_t stream) {
  int64_t T = args.B * args.S;
  if (args.NH == 0)
    return cudaSuccess;
  LaunchShape prelude = elementwiseShape(std::max<int64_t>(T, 1) * args.NH);
  ssdPreludeKernel<<<(unsigned)prelude.blocks, prelude.threads, 0, stream>>>(dt, dtBias, aLog, T,
                                                                             args.NH, dtPrelude, A);
  if (cudaError_t status = cudaGetLastError(); status != cudaSuccess)
    return status;
  args.dt = dtPrelude;
  args.A = A;
  LaunchShape groups = elementwiseShape(args.G);
  ssdGradKernel<<<(unsigned)groups.blocks, groups.threads, 0, stream>>>(args);
  if (cudaError_t status = cudaGetLastError(); status != cudaSuccess)
    return status;
  LaunchShape heads = elementwiseShape(args.NH);
  ssdPreludeGradKernel<<<(unsigned)heads.blocks, heads.threads, 0, stream>>>(
      dt, dtBias, aLog, args.ddt, args.dA, T, args.NH, ddtRaw, ddtBias, daLog);
  return cudaGetLastError();
}

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
