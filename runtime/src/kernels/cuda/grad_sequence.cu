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

/// One thread per element of the halos' gradients [B, W - 1, C].
__global__ void convGradHaloKernel(const float *w, const float *dy, int64_t B, int64_t S, int64_t C,
                                   int64_t W, float *dhalo) {
  int64_t n = B * (W - 1) * C;
  for (int64_t e = firstElement(); e < n; e += gridStride()) {
    int64_t row = e / C, c = e % C, b = row / (W - 1);
    dhalo[e] = arith::convGradInput(w, dy + b * S * C, S, C, W, row % (W - 1) - (W - 1), c);
  }
}

/// One thread per weight (c, j) and per bias (j == W): each sequence's sum
/// in double, added to the f32 result once per sequence as on the CPU.
__global__ void convGradWeightKernel(const float *x, const float *halo, const float *dy, int64_t B,
                                     int64_t S, int64_t C, int64_t W, float *dweight,
                                     float *dbias) {
  int64_t n = C * (W + 1);
  for (int64_t e = firstElement(); e < n; e += gridStride()) {
    int64_t c = e / (W + 1), j = e % (W + 1);
    float total = 0.0f;
    for (int64_t b = 0; b < B; ++b)
      total = (float)(total + arith::convGradWeightSum(x + b * S * C,
                                                       halo ? halo + b * (W - 1) * C : nullptr,
                                                       dy + b * S * C, S, C, W, c, j));
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

cudaError_t ssd_prelude(const float *dt, const float *dtBias, const float *aLog, int64_t T,
                        int64_t NH, float *dtPrelude, float *A, cudaStream_t stream) {
  return elementwise(std::max<int64_t>(T, 1) * NH, stream, ssdPreludeKernel, dt, dtBias, aLog, T,
                     NH, dtPrelude, A);
}

cudaError_t ssd_prelude_grad(const float *dt, const float *dtBias, const float *aLog,
                             const float *ddt, const float *dA, int64_t T, int64_t NH,
                             float *ddtRaw, float *ddtBias, float *daLog, cudaStream_t stream) {
  return elementwise(NH, stream, ssdPreludeGradKernel, dt, dtBias, aLog, ddt, dA, T, NH, ddtRaw,
                     ddtBias, daLog);
}

cudaError_t ssd_scan_grad(const float *dt, const float *dtBias, const float *aLog, float *dtPrelude,
                          float *A, arith::SsdGradArgs args, float *ddtRaw, float *ddtBias,
                          float *daLog, cudaStream_t stream) {
  int64_t T = args.B * args.S;
  if (args.NH == 0)
    return cudaSuccess;
  if (cudaError_t status = ssd_prelude(dt, dtBias, aLog, T, args.NH, dtPrelude, A, stream);
      status != cudaSuccess)
    return status;
  args.dt = dtPrelude;
  args.A = A;
  if (cudaError_t status = elementwise(args.G, stream, ssdGradKernel, args); status != cudaSuccess)
    return status;
  return ssd_prelude_grad(dt, dtBias, aLog, args.ddt, args.dA, T, args.NH, ddtRaw, ddtBias, daLog,
                          stream);
}

cudaError_t causal_conv1d_grad(const float *w, const float *dy, int64_t B, int64_t S, int64_t C,
                               int64_t W, float *dx, float *dhalo, cudaStream_t stream) {
  if (cudaError_t status = elementwise(B * S * C, stream, convGradKernel, w, dy, B, S, C, W, dx);
      status != cudaSuccess || !dhalo)
    return status;
  return elementwise(B * (W - 1) * C, stream, convGradHaloKernel, w, dy, B, S, C, W, dhalo);
}

cudaError_t causal_conv1d_grad_weight(const float *x, const float *halo, const float *dy, int64_t B,
                                      int64_t S, int64_t C, int64_t W, float *dweight, float *dbias,
                                      cudaStream_t stream) {
  return elementwise(C * (W + 1), stream, convGradWeightKernel, x, halo, dy, B, S, C, W, dweight,
                     dbias);
}

cudaError_t rglru_scan_grad(const arith::RglruGradArgs &args, cudaStream_t stream) {
  if (args.W == 0)
    return cudaSuccess;
  LaunchShape shape = elementwiseShape(args.W);
  rglruGradKernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(args);
  return cudaGetLastError();
}

} // namespace shardline::rt::cuda
