//===- exchange.cu - CUDA kernels around the kernels' exchanges ------------===//

#include "kernels/cuda/exchange.h"
#include "kernels/cuda/reduce.cuh"

namespace shardline::rt::cuda {

namespace {

/// One thread per element: row from[i] of src into row to[i] of dst, the
/// element's bits moved as they are (E: a 32- or 16-bit word).
template <typename E>
__global__ void moveRowsKernel(const E *src, const int64_t *from, const int64_t *to, int64_t n,
                               int64_t C, E *dst) {
  for (int64_t e = firstElement(); e < n * C; e += gridStride()) {
    int64_t i = e / C, c = e % C;
    dst[(to ? to[i] : i) * C + c] = src[(from ? from[i] : i) * C + c];
  }
}

/// One thread per element: the members' pieces [g, n] summed in group
/// order (arith::orderedSum), rounded once into out.
template <typename T>
__global__ void sumPiecesKernel(const T *pieces, int64_t g, int64_t n, T *out) {
  for (int64_t k = firstElement(); k < n; k += gridStride())
    arith::storeElement(out, k, arith::orderedSum(pieces, g, n, k));
}

/// Blocks along y take the runs (a grid-stride loop), blocks along x and
/// their threads the elements of each; the words of E bits moved as they
/// are.
template <typename E>
__global__ void copyRunsKernel(const E *a, int64_t aCount, const E *b, const int64_t *runs,
                               int64_t n, E *dst) {
  for (int64_t r = blockIdx.y; r < n; r += gridDim.y) {
    int64_t from = runs[3 * r], to = runs[3 * r + 1], count = runs[3 * r + 2];
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x) {
      int64_t at = from + i;
      dst[to + i] = at < aCount ? a[at] : b[at - aCount];
    }
  }
}

/// One thread per query row.
__global__ void mergeKernel(const float *outA, const float *lseA, const float *outB,
                            const float *lseB, int64_t rows, int64_t Sq, int64_t HQ, int64_t D,
                            float *out, float *lse) {
  for (int64_t r = firstElement(); r < rows; r += gridStride())
    arith::mergeRow(outA, lseA, outB, lseB, Sq, HQ, D, r, out, lse);
}

/// One thread per (local chunk, state entry); the summaries stored as T,
/// the initial states as O.
template <typename T, typename O>
__global__ void chunkInitKernel(const T *gathered, const int64_t *stateAt, const int64_t *decayAt,
                                const int64_t *chunks, int64_t n, int64_t stateSize, int64_t bcast,
                                O *out) {
  for (int64_t e = firstElement(); e < n; e += gridStride())
    arith::storeElement(out, e,
                        arith::chunkInitialState(gathered, stateAt, decayAt, chunks[e / stateSize],
                                                 bcast, e % stateSize));
}

template <typename T, typename W>
__global__ void ssdCorrectKernel(arith::SsdCorrectArgsOf<T, W> args) {
  int64_t lanes = args.B * args.chunks * args.NH * args.P;
  for (int64_t lane = firstElement(); lane < lanes; lane += gridStride())
    arith::ssdCorrectLane(args, lane);
}

template <typename T, typename P>
__global__ void rglruCorrectKernel(arith::RglruCorrectArgsOf<T, P> args) {
  int64_t lanes = args.B * args.chunks * args.W;
  for (int64_t lane = firstElement(); lane < lanes; lane += gridStride())
    arith::rglruCorrectLane(args, lane);
}

/// One block per token.
template <typename A> __global__ void localMaxKernel(const A *logits, int64_t V, float *max) {
  extern __shared__ float partialMax[];
  const A *row = logits + (int64_t)blockIdx.x * V;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
    m = fmaxf(m, arith::loadElement(row, j));
  m = blockReduce<Max>(m, partialMax);
  if (threadIdx.x == 0)
    max[blockIdx.x] = m;
}

/// One block per token: the maxima combined, then this shard's sum of
/// exponentials (double) and its target logit.
template <typename A>
__global__ void localPiecesKernel(const A *logits, const int32_t *labels, const float *maxes,
                                  int64_t shards, int64_t T, int64_t V, int64_t offset,
                                  int64_t vocab, float *gmax, float *pieces, int32_t *badLabels) {
  extern __shared__ double partialSum[];
  int64_t t = blockIdx.x;
  float m = -INFINITY;
  for (int64_t s = 0; s < shards; ++s)
    m = fmaxf(m, maxes[s * T + t]);
  const A *row = logits + t * V;
  double sum = 0.0;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
    sum += exp((double)arith::loadElement(row, j) - (double)m);
  sum = blockReduce<Sum>(sum, partialSum);
  if (threadIdx.x != 0)
    return;
  gmax[t] = m;
  pieces[t] = (float)sum;
  int32_t label = labels[t];
  if (!arith::idInRange(label, vocab))
    atomicAdd(badLabels, 1);
  pieces[T + t] = arith::localTarget(row, label, V, offset);
}

__global__ void shardedTermKernel(const float *pieces, const float *gmax, int64_t shards, int64_t T,
                                  double *terms) {
  for (int64_t t = firstElement(); t < T; t += gridStride())
    terms[t] = arith::shardedTerm(pieces, shards, T, gmax[t], t);
}

/// One block: the terms' sum over `tokens`, stored as L.
template <typename L>
__global__ void shardedMeanKernel(const double *terms, int64_t T, double tokens, L *loss) {
  extern __shared__ double partialTerms[];
  blockMeanLoss(terms, T, tokens, partialTerms, loss);
}

} // namespace

cudaError_t copy_rows(Src src, const int64_t *from, const int64_t *to, int64_t n, int64_t C,
                      Dst dst, cudaStream_t stream) {
  if (src.type != dst.type)
    return cudaErrorInvalidValue;
  if (src.type == arith::Type::BF16 || src.type == arith::Type::F16)
    return elementwise(n * C, stream, moveRowsKernel<uint16_t>,
                       static_cast<const uint16_t *>(src.data), from, to, n, C,
                       static_cast<uint16_t *>(dst.data));
  return elementwise(n * C, stream, moveRowsKernel<uint32_t>,
                     static_cast<const uint32_t *>(src.data), from, to, n, C,
                     static_cast<uint32_t *>(dst.data));
}

cudaError_t copy_runs(const void *a, int64_t aCount, const void *b, const int64_t *runs, int64_t n,
                      int64_t maxCount, int64_t elementBytes, void *dst, cudaStream_t stream) {
  if (n == 0 || maxCount <= 0)
    return cudaSuccess;
  const int64_t threads = 256, along = (maxCount + threads - 1) / threads;
  const dim3 blocks((unsigned)(along < 1024 ? along : 1024), (unsigned)(n < 65535 ? n : 65535));
  if (elementBytes == 2) {
    copyRunsKernel<uint16_t><<<blocks, (unsigned)threads, 0, stream>>>(
        static_cast<const uint16_t *>(a), aCount, static_cast<const uint16_t *>(b), runs, n,
        static_cast<uint16_t *>(dst));
  } else if (elementBytes == 4) {
    copyRunsKernel<uint32_t><<<blocks, (unsigned)threads, 0, stream>>>(
        static_cast<const uint32_t *>(a), aCount, static_cast<const uint32_t *>(b), runs, n,
        static_cast<uint32_t *>(dst));
  } else {
    return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t sum_pieces(Src pieces, int64_t g, int64_t n, Dst out, cudaStream_t stream) {
  if (pieces.type != out.type || g < 1)
    return cudaErrorInvalidValue;
  return arith::withStorage(out.type, cudaErrorInvalidValue, [&](auto t) {
    using T = decltype(t);
    return elementwise(n, stream, sumPiecesKernel<T>, static_cast<const T *>(pieces.data), g, n,
                       static_cast<T *>(out.data));
  });
}

cudaError_t attention_merge(const float *outA, const float *lseA, const float *outB,
                            const float *lseB, int64_t B, int64_t Sq, int64_t HQ, int64_t D,
                            float *out, float *lse, cudaStream_t stream) {
  int64_t rows = B * Sq * HQ;
  return elementwise(rows, stream, mergeKernel, outA, lseA, outB, lseB, rows, Sq, HQ, D, out, lse);
}

cudaError_t chunk_initial_states(Src gathered, const int64_t *stateAt, const int64_t *decayAt,
                                 const int64_t *chunks, int64_t localChunks, int64_t stateSize,
                                 int64_t bcast, Dst out, cudaStream_t stream) {
  int64_t n = localChunks * stateSize;
  return withTypes(gathered.type, out.type, [&](auto t, auto o) {
    using T = decltype(t);
    using O = decltype(o);
    return elementwise(n, stream, chunkInitKernel<T, O>, static_cast<const T *>(gathered.data),
                       stateAt, decayAt, chunks, n, stateSize, bcast, static_cast<O *>(out.data));
  });
}

cudaError_t ssd_correct(Src y0, Src init, Src Cm, Src dt, Src aLog, Src dtBias,
                        const Sequences &seq, int64_t NH, int64_t P, int64_t G, int64_t N, Dst y,
                        cudaStream_t stream) {
  if (y0.type != y.type || Cm.type != y.type || dt.type != y.type || aLog.type != dtBias.type ||
      !isFloat(init.type))
    return cudaErrorInvalidValue;
  return withOwnOrF32Params(y.type, aLog.type, [&](auto t, auto w) {
    using T = decltype(t);
    using W = decltype(w);
    arith::SsdCorrectArgsOf<T, W> args{static_cast<const T *>(y0.data),
                                       init.data,
                                       static_cast<const T *>(Cm.data),
                                       static_cast<const T *>(dt.data),
                                       static_cast<const W *>(aLog.data),
                                       static_cast<const W *>(dtBias.data),
                                       seq.B,
                                       seq.S,
                                       seq.chunks,
                                       NH,
                                       P,
                                       G,
                                       N,
                                       static_cast<T *>(y.data),
                                       init.type};
    return elementwise(seq.B * seq.chunks * NH * P, stream, ssdCorrectKernel<T, W>, args);
  });
}

cudaError_t rglru_correct(Src y0, Src init, Src x, Src wa, Src ba, Src lambda, const Sequences &seq,
                          int64_t W, Dst y, cudaStream_t stream) {
  if (y0.type != y.type || x.type != y.type || ba.type != wa.type || lambda.type != wa.type ||
      !isFloat(init.type))
    return cudaErrorInvalidValue;
  return withOwnOrF32Params(y.type, wa.type, [&](auto t, auto p) {
    using T = decltype(t);
    using P = decltype(p);
    arith::RglruCorrectArgsOf<T, P> args{static_cast<const T *>(y0.data),
                                         init.data,
                                         static_cast<const T *>(x.data),
                                         static_cast<const P *>(wa.data),
                                         static_cast<const P *>(ba.data),
                                         static_cast<const P *>(lambda.data),
                                         seq.B,
                                         seq.S,
                                         seq.chunks,
                                         W,
                                         static_cast<T *>(y.data),
                                         init.type};
    return elementwise(seq.B * seq.chunks * W, stream, rglruCorrectKernel<T, P>, args);
  });
}

cudaError_t xent_local_max(Src logits, int64_t T, int64_t V, float *max, cudaStream_t stream) {
  return arith::withStorage(logits.type, cudaErrorInvalidValue, [&](auto tag) {
    using A = decltype(tag);
    if (T == 0)
      return cudaSuccess;
    LaunchShape rows = rowShape(T, V);
    localMaxKernel<<<(unsigned)rows.blocks, rows.threads, rows.sharedBytes, stream>>>(
        static_cast<const A *>(logits.data), V, max);
    return cudaGetLastError();
  });
}

cudaError_t xent_local_max(const float *logits, int64_t T, int64_t V, float *max,
                           cudaStream_t stream) {
  return xent_local_max(f32(logits), T, V, max, stream);
}

cudaError_t xent_local_pieces(Src logits, const int32_t *labels, const float *maxes, int64_t shards,
                              int64_t T, int64_t V, int64_t offset, int64_t vocab, float *gmax,
                              float *pieces, int32_t *badLabels, cudaStream_t stream) {
  return arith::withStorage(logits.type, cudaErrorInvalidValue, [&](auto tag) {
    using A = decltype(tag);
    if (T == 0)
      return cudaSuccess;
    LaunchShape rows = rowShape(T, V, true);
    localPiecesKernel<<<(unsigned)rows.blocks, rows.threads, rows.sharedBytes, stream>>>(
        static_cast<const A *>(logits.data), labels, maxes, shards, T, V, offset, vocab, gmax,
        pieces, badLabels);
    return cudaGetLastError();
  });
}

cudaError_t xent_local_pieces(const float *logits, const int32_t *labels, const float *maxes,
                              int64_t shards, int64_t T, int64_t V, int64_t offset, int64_t vocab,
                              float *gmax, float *pieces, int32_t *badLabels, cudaStream_t stream) {
  return xent_local_pieces(f32(logits), labels, maxes, shards, T, V, offset, vocab, gmax, pieces,
                           badLabels, stream);
}

cudaError_t xent_sharded_loss(const float *pieces, const float *gmax, int64_t shards, int64_t T,
                              double tokens, double *terms, Dst loss, cudaStream_t stream) {
  return arith::withStorage(loss.type, cudaErrorInvalidValue, [&](auto tag) {
    using L = decltype(tag);
    if (cudaError_t status =
            elementwise(T, stream, shardedTermKernel, pieces, gmax, shards, T, terms);
        status != cudaSuccess)
      return status;
    LaunchShape one = rowShape(1, T, true);
    shardedMeanKernel<<<1, one.threads, one.sharedBytes, stream>>>(terms, T, tokens,
                                                                   static_cast<L *>(loss.data));
    return cudaGetLastError();
  });
}

} // namespace shardline::rt::cuda
