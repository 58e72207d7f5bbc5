//===- exchange_grad.cu - CUDA kernels around the exchanges' duals ---------===//

#include "kernels/cuda/exchange_grad.h"
#include "kernels/cuda/reduce.cuh"

namespace shardline::rt::cuda {

namespace {

/// One thread per column.
__global__ void addRowsKernel(const float *src, const int64_t *from, const int64_t *to, int64_t n,
                              int64_t C, float *dst) {
  for (int64_t c = firstElement(); c < C; c += gridStride())
    arith::addRowsColumn(src, from, to, n, C, c, dst);
}

/// One thread per (local chunk, decay entry).
__global__ void stateExchangeGradKernel(const float *gathered, const int64_t *dinitAt,
                                        const int64_t *decayAt, const int64_t *chunks,
                                        int64_t allChunks, int64_t n, int64_t stateSize,
                                        int64_t bcast, const float *init, float *dstates,
                                        float *ddecays) {
  int64_t decaySize = stateSize / bcast;
  for (int64_t e = firstElement(); e < n; e += gridStride()) {
    int64_t i = e / decaySize, entry = e % decaySize;
    arith::stateExchangeGradEntry(gathered, dinitAt, decayAt, allChunks, chunks[i], bcast,
                                  init + i * stateSize, entry, dstates + i * stateSize,
                                  ddecays + e);
  }
}

/// One thread per element of this shard's logits.
__global__ void shardedGradKernel(const float *logits, const int32_t *labels, const float *gmax,
                                  const float *sums, int64_t shards, int64_t T, int64_t V,
                                  int64_t offset, double invTokens, float *dlogits) {
  for (int64_t e = firstElement(); e < T * V; e += gridStride()) {
    int64_t t = e / V, v = e % V;
    dlogits[e] = arith::shardedGradElement(logits[e], labels[t], v, offset, gmax[t],
                                           arith::shardedSumExp(sums, shards, T, t), invTokens);
  }
}

/// One thread per group of heads.
__global__ void ssdCorrectGradKernel(arith::SsdCorrectGradArgs args) {
  for (int64_t grp = firstElement(); grp < args.G; grp += gridStride())
    arith::ssdCorrectGradLane(args, grp);
}

/// One thread per channel.
__global__ void rglruCorrectGradKernel(arith::RglruCorrectGradArgs args) {
  for (int64_t w = firstElement(); w < args.W; w += gridStride())
    arith::rglruCorrectGradLane(args, w);
}

} // namespace

cudaError_t ssd_correct_grad(const arith::SsdCorrectGradArgs &args, cudaStream_t stream) {
  return elementwise(args.G, stream, ssdCorrectGradKernel, args);
}

cudaError_t rglru_correct_grad(const arith::RglruCorrectGradArgs &args, cudaStream_t stream) {
  return elementwise(args.W, stream, rglruCorrectGradKernel, args);
}

cudaError_t add_rows_in_order(const float *src, const int64_t *from, const int64_t *to, int64_t n,
                              int64_t C, float *dst, cudaStream_t stream) {
  if (n == 0)
    return cudaSuccess;
  return elementwise(C, stream, addRowsKernel, src, from, to, n, C, dst);
}

cudaError_t state_exchange_grad(const float *gathered, const int64_t *dinitAt,
                                const int64_t *decayAt, const int64_t *chunks, int64_t allChunks,
                                int64_t localChunks, int64_t stateSize, int64_t bcast,
                                const float *init, float *dstates, float *ddecays,
                                cudaStream_t stream) {
  int64_t n = localChunks * (stateSize / bcast);
  return elementwise(n, stream, stateExchangeGradKernel, gathered, dinitAt, decayAt, chunks,
                     allChunks, n, stateSize, bcast, init, dstates, ddecays);
}

cudaError_t xent_sharded_grad(const float *logits, const int32_t *labels, const float *gmax,
                              const float *sums, int64_t shards, int64_t T, int64_t V,
                              int64_t offset, double tokens, float *dlogits, cudaStream_t stream) {
  return elementwise(T * V, stream, shardedGradKernel, logits, labels, gmax, sums, shards, T, V,
                     offset, 1.0 / tokens, dlogits);
}

} // namespace shardline::rt::cuda
