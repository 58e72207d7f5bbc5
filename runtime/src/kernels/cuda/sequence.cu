//===- sequence.cu - causal conv1d and the scans (SSD, RG-LRU) -------------===//
//
// The scans run each sequence's tokens in order: one thread per independent
// lane (a head-dim element of a head for SSD, a channel for RG-LRU) carries
// its state across the tokens, as the reference recurrence does. The chunked
// SSD formulation (GEMMs within a chunk) is not here yet.
//
//===----------------------------------------------------------------------===//

#include "kernels/cuda/kernels.h"
#include "kernels/cuda/reduce.cuh"

namespace shardline::rt::cuda {

namespace {

/// One thread per output element (row, channel).
__global__ void convKernel(const float *x, const float *w, const float *bias, const float *halo,
                           Sequences seq, int64_t C, int64_t W, float *y) {
  int64_t n = seq.B * seq.S * C;
  for (int64_t e = firstElement(); e < n; e += gridStride())
    y[e] = arith::convElement(x, w, bias, halo, seq.B, seq.S, seq.chunks, C, W, e);
}

/// One thread per lane: a (sequence, head, head-dim element), its state
/// entries in local memory.
__global__ void ssdKernel(arith::SsdArgs args) {
  int64_t lanes = args.B * args.chunks * args.NH * args.P;
  for (int64_t lane = firstElement(); lane < lanes; lane += gridStride())
    arith::ssdLane(args, lane);
}

/// One thread per lane: a (sequence, channel).
__global__ void rglruKernel(arith::RglruArgs args) {
  int64_t lanes = args.B * args.chunks * args.W;
  for (int64_t lane = firstElement(); lane < lanes; lane += gridStride())
    arith::rglruLane(args, lane);
}

} // namespace

cudaError_t causal_conv1d(const float *x, const float *w, const float *bias, const float *halo,
                          const Sequences &seq, int64_t C, int64_t W, float *y,
                          cudaStream_t stream) {
  int64_t n = seq.B * seq.S * C;
  if (n == 0)
    return cudaSuccess;
  LaunchShape shape = elementwiseShape(n);
  convKernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(x, w, bias, halo, seq, C, W, y);
  return cudaGetLastError();
}

cudaError_t ssd_scan(const float *x, const float *dt, const float *dtBias, const float *aLog,
                     const float *Bm, const float *Cm, const float *D, const float *stateIn,
                     const Sequences &seq, int64_t NH, int64_t P, int64_t G, int64_t N, float *y,
                     float *stateOut, float *decayOut, cudaStream_t stream) {
  if (N > arith::kMaxSsdState)
    return cudaErrorInvalidValue;
  int64_t lanes = seq.B * seq.chunks * NH * P;
  if (lanes == 0)
    return cudaSuccess;
  LaunchShape shape = elementwiseShape(lanes);
  ssdKernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(
      {x, dt, dtBias, aLog, Bm, Cm, D, stateIn, seq.B, seq.S, seq.chunks, NH, P, G, N, y, stateOut,
       decayOut});
  return cudaGetLastError();
}

cudaError_t rglru_scan(const float *x, const float *wa, const float *ba, const float *wx,
                       const float *bx, const float *lambda, const float *stateIn,
                       const Sequences &seq, int64_t W, float *y, float *stateOut, float *decayOut,
                       cudaStream_t stream) {
  int64_t lanes = seq.B * seq.chunks * W;
  if (lanes == 0)
    return cudaSuccess;
  LaunchShape shape = elementwiseShape(lanes);
  rglruKernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(
      {x, wa, ba, wx, bx, lambda, stateIn, seq.B, seq.S, seq.chunks, W, y, stateOut, decayOut});
  return cudaGetLastError();
}

} // namespace shardline::rt::cuda
