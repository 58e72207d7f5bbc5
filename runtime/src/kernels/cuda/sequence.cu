//===- sequence.cu - causal conv1d and the scans (SSD, RG-LRU) -------------===//
//
// The SSD scan in its chunked form: four kernels queued on the stream, each
// step's arithmetic in kernels/cuda/ssd_arith.h. The RG-LRU scan runs each
// sequence's tokens in order: one thread per channel carries its state
// across the tokens, as the reference recurrence does.
//
//===----------------------------------------------------------------------===//

#include "kernels/cuda/kernels.h"
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/ssd_arith.h"

namespace shardline::rt::cuda {

namespace {

/// One thread per output element (row, channel); x, the halo and y stored
/// as T, w and the bias as P.
template <typename T, typename P>
__global__ void convKernel(const T *x, const P *w, const P *bias, const T *halo, Sequences seq,
                           int64_t C, int64_t W, T *y) {
  int64_t n = seq.B * seq.S * C;
  for (int64_t e = firstElement(); e < n; e += gridStride())
    arith::storeElement(y, e,
                        arith::convElement(x, w, bias, halo, seq.B, seq.S, seq.chunks, C, W, e));
}

/// (a) a thread per (sequence, chunk, head), or (c) one per (sequence,
/// head, state entry).
template <bool Carry, typename T, typename W>
__global__ void ssdThreadKernel(arith::SsdArgsOf<T, W> args, int64_t n) {
  for (int64_t i = firstElement(); i < n; i += gridStride())
    Carry ? arith::ssdCarry(args, i) : arith::ssdChunkCum(args, i);
}

/// (b) or (d): a block per (sequence, chunk, head).
template <bool Output, typename T, typename W>
__global__ void __launch_bounds__(arith::kSsdThreads) ssdBlockKernel(arith::SsdArgsOf<T, W> args) {
  __shared__ arith::SsdShared shared;
  BlockPhases block;
  if constexpr (Output)
    arith::ssdOutputBlock(block, args, shared, blockIdx.x);
  else
    arith::ssdChunkBlock(block, args, shared, blockIdx.x);
}

/// One thread per lane: a (sequence, channel).
template <typename T, typename P> __global__ void rglruKernel(arith::RglruArgsOf<T, P> args) {
  int64_t lanes = args.B * args.chunks * args.W;
  for (int64_t lane = firstElement(); lane < lanes; lane += gridStride())
    arith::rglruLane(args, lane);
}

/// (a)-(c) of the scan over `args`.
template <typename T, typename W>
cudaError_t ssdChunkStates(const arith::SsdArgsOf<T, W> &args, const SsdLaunch &launch,
                           cudaStream_t stream) {
  if (launch.items > 0) {
    ssdThreadKernel<false, T, W>
        <<<(unsigned)launch.cum.blocks, launch.cum.threads, 0, stream>>>(args, launch.items);
    ssdBlockKernel<false, T, W>
        <<<(unsigned)launch.chunk.blocks, launch.chunk.threads, 0, stream>>>(args);
  }
  int64_t entries = args.B * args.chunks * args.NH * args.P * args.N;
  if (entries > 0)
    ssdThreadKernel<true, T, W>
        <<<(unsigned)launch.carry.blocks, launch.carry.threads, 0, stream>>>(args, entries);
  return cudaGetLastError();
}

} // namespace

cudaError_t causal_conv1d(Src x, Src w, Src bias, Src halo, const Sequences &seq, int64_t C,
                          int64_t W, Dst y, cudaStream_t stream) {
  if (x.type != y.type || (halo.data && halo.type != y.type) || (bias.data && bias.type != w.type))
    return cudaErrorInvalidValue;
  return withTypes(y.type, w.type, [&](auto t, auto p) {
    using A = decltype(t);
    using P = decltype(p);
    return elementwise(seq.B * seq.S * C, stream, convKernel<A, P>, static_cast<const A *>(x.data),
                       static_cast<const P *>(w.data), static_cast<const P *>(bias.data),
                       static_cast<const A *>(halo.data), seq, C, W, static_cast<A *>(y.data));
  });
}

cudaError_t causal_conv1d(const float *x, const float *w, const float *bias, const float *halo,
                          const Sequences &seq, int64_t C, int64_t W, float *y,
                          cudaStream_t stream) {
  return causal_conv1d(f32(x), f32(w), f32(bias), f32(halo), seq, C, W, f32(y), stream);
}

cudaError_t ssd_scan(Src x, Src dt, Src dtBias, Src aLog, Src Bm, Src Cm, Src D, Src stateIn,
                     const Sequences &seq, int64_t NH, int64_t P, int64_t G, int64_t N, Dst y,
                     Dst stateOut, Dst decayOut, const SsdLaunch &launch, void *scratch,
                     cudaStream_t stream) {
  bool activationsShare =
           x.type == y.type && dt.type == y.type && Bm.type == y.type && Cm.type == y.type,
       paramsShare = aLog.type == dtBias.type && (!D.data || D.type == dtBias.type);
  if (!activationsShare || !paramsShare || (stateIn.data && !isFloat(stateIn.type)) ||
      (stateOut.data && !isFloat(stateOut.type)) || (decayOut.data && !isFloat(decayOut.type)))
    return cudaErrorInvalidValue;
  int64_t entries = seq.B * seq.chunks * NH * P * N;
  if (entries == 0)
    return cudaSuccess;
  char *base = static_cast<char *>(scratch);
  return withOwnOrF32Params(y.type, dtBias.type, [&](auto t, auto w) {
    using T = decltype(t);
    using W = decltype(w);
    arith::SsdArgsOf<T, W> args{
        static_cast<const T *>(x.data),
        static_cast<const T *>(dt.data),
        static_cast<const W *>(dtBias.data),
        static_cast<const W *>(aLog.data),
        static_cast<const T *>(Bm.data),
        static_cast<const T *>(Cm.data),
        static_cast<const W *>(D.data),
        stateIn.data,
        seq.B,
        seq.S,
        seq.chunks,
        NH,
        P,
        G,
        N,
        static_cast<T *>(y.data),
        stateOut.data,
        decayOut.data,
        reinterpret_cast<double *>(base + launch.cumOffset),
        reinterpret_cast<float *>(base + launch.stepOffset),
        reinterpret_cast<float *>(base + launch.statesOffset),
        stateIn.type,
        stateOut.type,
        decayOut.type,
        std::is_same_v<T, float> ? nullptr : reinterpret_cast<float *>(base + launch.scratchBytes)};
    // With no tokens the carry still writes state_in and a decay of 1.
    ssdChunkStates(args, launch, stream);
    if (launch.items > 0)
      ssdBlockKernel<true, T, W>
          <<<(unsigned)launch.chunk.blocks, launch.chunk.threads, 0, stream>>>(args);
    return cudaGetLastError();
  });
}

cudaError_t ssd_scan(const float *x, const float *dt, const float *dtBias, const float *aLog,
                     const float *Bm, const float *Cm, const float *D, const float *stateIn,
                     const Sequences &seq, int64_t NH, int64_t P, int64_t G, int64_t N, float *y,
                     float *stateOut, float *decayOut, const SsdLaunch &launch, void *scratch,
                     cudaStream_t stream) {
  return ssd_scan(f32(x), f32(dt), f32(dtBias), f32(aLog), f32(Bm), f32(Cm), f32(D), f32(stateIn),
                  seq, NH, P, G, N, f32(y), f32(stateOut), f32(decayOut), launch, scratch, stream);
}

cudaError_t ssd_chunk_states(const arith::SsdArgs &args, const SsdLaunch &launch,
                             cudaStream_t stream) {
  return ssdChunkStates(args, launch, stream);
}

cudaError_t rglru_scan(Src x, Src wa, Src ba, Src wx, Src bx, Src lambda, Src stateIn,
                       const Sequences &seq, int64_t W, Dst y, Dst stateOut, Dst decayOut,
                       cudaStream_t stream) {
  bool paramsShare =
      ba.type == wa.type && wx.type == wa.type && bx.type == wa.type && lambda.type == wa.type;
  if (x.type != y.type || !paramsShare || (stateIn.data && !isFloat(stateIn.type)) ||
      !isFloat(stateOut.type) || !isFloat(decayOut.type))
    return cudaErrorInvalidValue;
  return withTypes(y.type, wa.type, [&](auto t, auto p) {
    using A = decltype(t);
    using P = decltype(p);
    arith::RglruArgsOf<A, P> args{static_cast<const A *>(x.data),
                                  static_cast<const P *>(wa.data),
                                  static_cast<const P *>(ba.data),
                                  static_cast<const P *>(wx.data),
                                  static_cast<const P *>(bx.data),
                                  static_cast<const P *>(lambda.data),
                                  stateIn.data,
                                  seq.B,
                                  seq.S,
                                  seq.chunks,
                                  W,
                                  static_cast<A *>(y.data),
                                  stateOut.data,
                                  decayOut.data,
                                  stateIn.type,
                                  stateOut.type,
                                  decayOut.type};
    return elementwise(seq.B * seq.chunks * W, stream, rglruKernel<A, P>, args);
  });
}

cudaError_t rglru_scan(const float *x, const float *wa, const float *ba, const float *wx,
                       const float *bx, const float *lambda, const float *stateIn,
                       const Sequences &seq, int64_t W, float *y, float *stateOut, float *decayOut,
                       cudaStream_t stream) {
  return rglru_scan(f32(x), f32(wa), f32(ba), f32(wx), f32(bx), f32(lambda), f32(stateIn), seq, W,
                    f32(y), f32(stateOut), f32(decayOut), stream);
}

} // namespace shardline::rt::cuda
