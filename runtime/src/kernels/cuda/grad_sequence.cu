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

/// (e) or (g) of ssd_grad_arith.h: a block per (sequence, chunk, head),
/// SsdGradShared in dynamic shared memory.
template <bool Grad>
__global__ void __launch_bounds__(arith::kSsdThreads) ssdGradBlockKernel(arith::SsdGradArgs args) {
  extern __shared__ __align__(16) unsigned char shared[];
  auto &sh = *reinterpret_cast<arith::SsdGradShared *>(shared);
  BlockPhases block;
  if constexpr (Grad)
    arith::ssdGradBlock(block, args, sh, blockIdx.x);
  else
    arith::ssdCotangentBlock(block, args, sh, blockIdx.x);
}

/// (f) a thread per (sequence, head, state entry), (h) one per (token,
/// group, state entry) or (i) one a head.
template <int Kind> __global__ void ssdGradThreadKernel(arith::SsdGradArgs args, int64_t n) {
  for (int64_t i = firstElement(); i < n; i += gridStride()) {
    if constexpr (Kind == 0)
      arith::ssdCotangentCarry(args, i);
    else if constexpr (Kind == 1)
      arith::ssdGradHeads(args, i);
    else
      arith::ssdGradRates(args, i);
  }
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

cudaError_t ssd_scan_grad(arith::SsdGradArgs args, const SsdGradLaunch &launch, void *scratch,
                          float *ddtRaw, float *ddtBias, float *daLog, cudaStream_t stream) {
  arith::SsdArgs &a = args.fwd;
  const int64_t T = a.B * a.S, entries = a.B * a.chunks * a.NH * a.P * a.N;
  if (a.NH == 0)
    return cudaSuccess;
  char *base = static_cast<char *>(scratch);
  a.y = nullptr;
  a.stateOut = a.decayOut = nullptr;
  a.cum = reinterpret_cast<double *>(base + launch.fwd.cumOffset);
  a.step = reinterpret_cast<float *>(base + launch.fwd.stepOffset);
  a.states = reinterpret_cast<float *>(base + launch.fwd.statesOffset);
  args.cot = reinterpret_cast<float *>(base + launch.cotOffset);
  bool perHead = launch.heads.blocks > 0;
  args.dBh = perHead ? reinterpret_cast<float *>(base + launch.dBhOffset) : args.dB;
  args.dCh = perHead ? reinterpret_cast<float *>(base + launch.dChOffset) : args.dC;
  args.partA = reinterpret_cast<double *>(base + launch.partAOffset);
  args.partD = reinterpret_cast<double *>(base + launch.partDOffset);
  args.decayCot = reinterpret_cast<double *>(base + launch.decayCotOffset);
  if (cudaError_t status = ssd_chunk_states(a, launch.fwd, stream); status != cudaSuccess)
    return status;
  const int shared = (int)launch.block.sharedBytes;
  if (launch.block.blocks > 0) {
    for (auto kernel : {ssdGradBlockKernel<false>, ssdGradBlockKernel<true>})
      if (cudaError_t status =
              cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, shared);
          status != cudaSuccess)
        return status;
    ssdGradBlockKernel<false>
        <<<(unsigned)launch.block.blocks, launch.block.threads, shared, stream>>>(args);
  }
  // With no tokens the carry still writes dstate_in and the decay's share.
  if (entries > 0)
    ssdGradThreadKernel<0>
        <<<(unsigned)launch.carry.blocks, launch.carry.threads, 0, stream>>>(args, entries);
  if (launch.block.blocks > 0)
    ssdGradBlockKernel<true>
        <<<(unsigned)launch.block.blocks, launch.block.threads, shared, stream>>>(args);
  if (perHead)
    ssdGradThreadKernel<1>
        <<<(unsigned)launch.heads.blocks, launch.heads.threads, 0, stream>>>(args, T * a.G * a.N);
  ssdGradThreadKernel<2>
      <<<(unsigned)launch.rates.blocks, launch.rates.threads, 0, stream>>>(args, a.NH);
  if (cudaError_t status = cudaGetLastError(); status != cudaSuccess)
    return status;
  return ssd_prelude_grad(a.dt, a.dtBias, a.aLog, args.ddt, args.dA, T, a.NH, ddtRaw, ddtBias,
                          daLog, stream);
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
