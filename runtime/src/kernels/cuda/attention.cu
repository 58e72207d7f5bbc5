//===- attention.cu - RoPE and tiled causal attention ---------------------===//

#include "kernels/cuda/attention_tc.h"
#include "kernels/cuda/kernels.h"
#include "kernels/cuda/reduce.cuh"

namespace shardline::rt::cuda {

namespace {

/// One thread per rotated pair (b, s, head, i).
template <typename T>
__global__ void ropeKernel(const T *x, const int64_t *positions, int64_t S, int64_t NH, int64_t D,
                           float theta, int64_t pairs, T *out) {
  int64_t half = D / 2;
  for (int64_t p = firstElement(); p < pairs; p += gridStride()) {
    arith::RopePair at = arith::ropePair(p, S, NH, D);
    int64_t first = at.base + at.i, second = first + half;
    float out1, out2;
    arith::ropeRotate(arith::loadElement(x, first), arith::loadElement(x, second),
                      arith::ropeAngle(positions[at.s], at.i, D, theta), out1, out2);
    arith::storeElement(out, first, out1);
    arith::storeElement(out, second, out2);
  }
}

/// One query a thread, blockDim.x queries of one (batch, head) a block; the
/// keys pass through shared memory a tile at a time (launch.h,
/// AttentionTiling), and each query folds every tile into its running
/// softmax (arith.h, attendTile). MaxD bounds the head dim.
template <int MaxD>
__global__ void attentionKernel(const float *q, const float *k, const float *v,
                                const int64_t *qPositions, const int64_t *kPositions, int64_t Sq,
                                int64_t Sk, int64_t HQ, int64_t HKV, int64_t D, bool causal,
                                float scale, int64_t window, int keysPerTile, int64_t queryBlocks,
                                float *out, float *lse) {
  extern __shared__ int64_t tilePositions[];
  float *kTile = reinterpret_cast<float *>(tilePositions + keysPerTile);
  float *vTile = kTile + (int64_t)keysPerTile * D;
  arith::AttentionQuery at =
      arith::attentionQuery(blockIdx.x, threadIdx.x, queryBlocks, HQ, blockDim.x);
  int64_t b = at.b, h = at.h, i = at.i, hk = arith::kvHead(h, HQ, HKV);
  bool active = i < Sq;
  float query[MaxD], acc[MaxD];
  int64_t rowBase = ((b * Sq + i) * HQ + h) * D;
  for (int64_t e = 0; e < D; ++e) {
    query[e] = active ? q[rowBase + e] : 0.0f;
    acc[e] = 0.0f;
  }
  int64_t queryPosition = active ? qPositions[i] : 0;
  arith::OnlineSoftmax state;
  for (int64_t start = 0; start < Sk; start += keysPerTile) {
    int n = (int)min((int64_t)keysPerTile, Sk - start);
    __syncthreads(); // the previous tile is no longer read
    for (int64_t idx = threadIdx.x; idx < (int64_t)n * D; idx += blockDim.x) {
      int64_t j = idx / D, e = idx % D;
      int64_t from = ((b * Sk + start + j) * HKV + hk) * D + e;
      kTile[idx] = k[from];
      vTile[idx] = v[from];
    }
    for (int j = threadIdx.x; j < n; j += blockDim.x)
      tilePositions[j] = kPositions[start + j];
    __syncthreads();
    if (active)
      arith::attendTile(query, kTile, vTile, tilePositions, n, D, queryPosition, causal, window,
                        scale, state, acc);
  }
  if (!active)
    return;
  float inv = state.inverseSum();
  for (int64_t e = 0; e < D; ++e)
    out[rowBase + e] = acc[e] * inv;
  if (lse)
    lse[(b * HQ + h) * Sq + i] = state.lse();
}

/// A block of attention_tc.h per kTcRows queries of one (batch, head),
/// TcShared<T, MaxD> in dynamic shared memory, the output stored as O.
template <typename T, int MaxD, typename O>
__global__ void __launch_bounds__(arith::kTcThreads) attentionTcKernel(arith::TcArgs args) {
  extern __shared__ __align__(128) unsigned char shared[];
  auto &sh = *reinterpret_cast<arith::TcShared<T, MaxD> *>(shared);
  BlockPhases block;
  arith::attentionTcBlock<T, MaxD, O>(block, args, sh, blockIdx.x);
}

template <typename T, int MaxD, typename O>
cudaError_t launchAttentionTc(const arith::TcArgs &args, const AttentionTcTiling &tiling,
                              cudaStream_t stream) {
  auto kernel = attentionTcKernel<T, MaxD, O>;
  const int shared = (int)tiling.shape.sharedBytes;
  if (cudaError_t status =
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, shared);
      status != cudaSuccess)
    return status;
  kernel<<<(unsigned)tiling.shape.blocks, tiling.shape.threads, shared, stream>>>(args);
  return cudaGetLastError();
}

} // namespace

cudaError_t rope(Src x, const int64_t *positions, int64_t B, int64_t S, int64_t NH, int64_t D,
                 float theta, Dst out, cudaStream_t stream) {
  if (x.type != out.type)
    return cudaErrorInvalidValue;
  int64_t pairs = B * S * NH * (D / 2);
  return arith::withStorage(out.type, cudaErrorInvalidValue, [&](auto tag) {
    using T = decltype(tag);
    return elementwise(pairs, stream, ropeKernel<T>, static_cast<const T *>(x.data), positions, S,
                       NH, D, theta, pairs, static_cast<T *>(out.data));
  });
}

cudaError_t rope(const float *x, const int64_t *positions, int64_t B, int64_t S, int64_t NH,
                 int64_t D, float theta, float *out, cudaStream_t stream) {
  return rope(f32(x), positions, B, S, NH, D, theta, f32(out), stream);
}

cudaError_t attention(const float *q, const float *k, const float *v, const int64_t *qPositions,
                      const int64_t *kPositions, int64_t B, int64_t Sq, int64_t Sk, int64_t HQ,
                      int64_t HKV, int64_t D, bool causal, float scale, int64_t window,
                      const AttentionTiling &tiling, float *out, float *lse, cudaStream_t stream) {
  if (tiling.shape.blocks == 0)
    return cudaSuccess;
  auto launch = [&](auto kernel) {
    kernel<<<(unsigned)tiling.shape.blocks, tiling.shape.threads, tiling.shape.sharedBytes,
             stream>>>(q, k, v, qPositions, kPositions, Sq, Sk, HQ, HKV, D, causal, scale, window,
                       tiling.keysPerTile, tiling.queryBlocks, out, lse);
  };
  if (tiling.maxHeadDim == 64)
    launch(attentionKernel<64>);
  else if (tiling.maxHeadDim == 128)
    launch(attentionKernel<128>);
  else
    launch(attentionKernel<256>);
  return cudaGetLastError();
}

cudaError_t attention_tc(Src q, Src k, Src v, const int64_t *qPositions, const int64_t *kPositions,
                         int64_t B, int64_t Sq, int64_t Sk, int64_t HQ, int64_t HKV, int64_t D,
                         bool causal, float scale, int64_t window, const AttentionTcTiling &tiling,
                         Dst out, float *lse, cudaStream_t stream) {
  if (q.type != k.type || q.type != v.type || q.type == arith::Type::F32 ||
      (out.type != q.type && out.type != arith::Type::F32))
    return cudaErrorInvalidValue;
  if (tiling.shape.blocks == 0)
    return cudaSuccess;
  arith::TcArgs args{q.data, k.data, v.data, qPositions,         kPositions, B,  Sq, Sk, HQ, HKV, D,
                     causal, scale,  window, tiling.queryBlocks, out.data,   lse};
  bool f32Out = out.type == arith::Type::F32;
  return arith::withStorage(q.type, cudaErrorInvalidValue, [&](auto t) {
    using T = decltype(t);
    if constexpr (std::is_same_v<T, float>) {
      return cudaErrorInvalidValue;
    } else {
      auto launch = [&](auto maxD) {
        constexpr int kMaxD = decltype(maxD)::value;
        return f32Out ? launchAttentionTc<T, kMaxD, float>(args, tiling, stream)
                      : launchAttentionTc<T, kMaxD, T>(args, tiling, stream);
      };
      if (tiling.maxHeadDim == 64)
        return launch(std::integral_constant<int, 64>());
      if (tiling.maxHeadDim == 128)
        return launch(std::integral_constant<int, 128>());
      return launch(std::integral_constant<int, 256>());
    }
  });
}

} // namespace shardline::rt::cuda
