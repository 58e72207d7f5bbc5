//===- moe_routed.cu - dropless MoE over the routed rows only -------------===//
//
// The counting sort by expert and the grouped GEMMs of kernels_moe.h. The
// GEMMs stage 16 x 16 tiles of both operands in shared memory; each thread
// keeps one output element's fmaf chain in the order of the reduced index,
// the chain of moe_routed.h's groupedDot and groupedOuter. grouped_rows
// reads each operand as stored (f32, bf16 or f16), widened as it stages.
//
//===----------------------------------------------------------------------===//

#include "kernels/cuda/grouped_tc.h"
#include "kernels/cuda/kernels_moe.h"
#include "kernels/cuda/reduce.cuh"

namespace shardline::rt::cuda {

namespace {

constexpr int kTile = (int)arith::kGroupTile;

/// One thread per (chunk, expert); the expert-0 thread of each chunk also
/// counts the chunk's indices outside [0, E).
__global__ void sortCountKernel(const int32_t *idx, int64_t choices, int64_t E,
                                int32_t *chunkCounts, int32_t *badIds) {
  int64_t chunks = arith::sortChunks(choices);
  for (int64_t i = firstElement(); i < chunks * E; i += gridStride()) {
    int64_t c = i / E, begin = c * arith::kSortChunk;
    int64_t end = begin + arith::kSortChunk < choices ? begin + arith::kSortChunk : choices;
    int32_t e = (int32_t)(i % E);
    chunkCounts[i] = arith::chunkCount(idx, begin, end, e);
    if (e == 0) {
      int32_t bad = 0;
      for (int64_t j = begin; j < end; ++j)
        bad += arith::idInRange(idx[j], E) ? 0 : 1;
      if (bad > 0)
        atomicAdd(badIds, bad);
    }
  }
}

__global__ void sortPlanKernel(const int32_t *chunkCounts, int64_t chunks, int64_t E,
                               int32_t *counts, int64_t *offsets, int64_t *first,
                               int64_t *tileOffsets) {
  arith::sortPlan(chunkCounts, chunks, E, counts, offsets, first, tileOffsets);
}

__global__ void sortPlaceKernel(const int32_t *idx, int64_t choices, int64_t E,
                                const int64_t *first, int32_t *perm, int32_t *rowOf) {
  int64_t chunks = arith::sortChunks(choices);
  for (int64_t i = firstElement(); i < chunks * E; i += gridStride()) {
    int64_t c = i / E, begin = c * arith::kSortChunk;
    int64_t end = begin + arith::kSortChunk < choices ? begin + arith::kSortChunk : choices;
    arith::chunkPlace(idx, begin, end, (int32_t)(i % E), first[i], perm, rowOf);
  }
}

/// The element's bits moved as they are (E: a 32- or 16-bit word).
template <typename E>
__global__ void gatherTokensKernel(const E *x, const int32_t *perm, int64_t R, int64_t H, int64_t k,
                                   E *rows) {
  for (int64_t i = firstElement(); i < R * H; i += gridStride())
    rows[i] = x[(perm[i / H] / k) * H + i % H];
}

__global__ void gatherChoicesKernel(const float *values, const int32_t *perm, int64_t R,
                                    float *rows) {
  for (int64_t r = firstElement(); r < R; r += gridStride())
    rows[r] = values[perm[r]];
}

__global__ void scatterChoicesKernel(const float *rows, const int32_t *rowOf, int64_t choices,
                                     float *out) {
  for (int64_t i = firstElement(); i < choices; i += gridStride())
    out[i] = rows[rowOf[i]];
}

/// Block (x: row tile, y: column tile) of kTile x kTile threads; a stored
/// as A, w as W.
template <typename A, typename W>
__global__ void groupedRowsKernel(const A *a, const W *w, bool transW, int64_t K, int64_t N,
                                  const int64_t *offsets, const int64_t *tileOffsets,
                                  int64_t groups, float *out) {
  __shared__ float as[kTile][kTile + 1], ws[kTile][kTile + 1];
  int64_t e, row, rows;
  if (!arith::groupedTile(offsets, tileOffsets, groups, blockIdx.x, e, row, rows))
    return; // the whole block: past the last tile
  const W *we = w + e * K * N;
  int ty = threadIdx.y, tx = threadIdx.x;
  int64_t n = (int64_t)blockIdx.y * kTile + tx;
  float acc = 0.0f;
  for (int64_t p0 = 0; p0 < K; p0 += kTile) {
    as[ty][tx] = ty < rows && p0 + tx < K ? arith::loadElement(a, (row + ty) * K + p0 + tx) : 0.0f;
    int64_t p = p0 + ty;
    ws[ty][tx] = p < K && n < N ? arith::loadElement(we, transW ? n * K + p : p * N + n) : 0.0f;
    __syncthreads();
    int64_t steps = K - p0 < kTile ? K - p0 : kTile;
    for (int64_t q = 0; q < steps; ++q)
      acc = fmaf(as[ty][q], ws[q][tx], acc);
    __syncthreads();
  }
  if (ty < rows && n < N)
    out[(row + ty) * N + n] = acc;
}

/// Block (x: row tile, y: column block) of kGtThreads threads on the
/// tensor cores (grouped_tc.h).
template <typename A, typename T>
__global__ void __launch_bounds__(arith::kGtThreads)
    groupedTcKernel(arith::GroupedTcArgs<A, T> args) {
  __shared__ arith::GroupedTcShared<T> sh;
  BlockPhases block;
  arith::groupedTcBlock(block, args, sh, blockIdx.x, blockIdx.y);
}

/// Block (x: tile of M, y: tile of N, z: group) of kTile x kTile threads.
__global__ void groupedOuterKernel(const float *a, int64_t M, const float *b, int64_t N,
                                   const int64_t *offsets, float *out) {
  __shared__ float as[kTile][kTile + 1], bs[kTile][kTile + 1];
  int64_t e = blockIdx.z, row = offsets[e], rows = offsets[e + 1] - row;
  int ty = threadIdx.y, tx = threadIdx.x;
  int64_t m0 = (int64_t)blockIdx.x * kTile, n0 = (int64_t)blockIdx.y * kTile;
  float acc = 0.0f;
  for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
    bool inRows = r0 + ty < rows;
    as[ty][tx] = inRows && m0 + tx < M ? a[(row + r0 + ty) * M + m0 + tx] : 0.0f;
    bs[ty][tx] = inRows && n0 + tx < N ? b[(row + r0 + ty) * N + n0 + tx] : 0.0f;
    __syncthreads();
    int64_t steps = rows - r0 < kTile ? rows - r0 : kTile;
    for (int64_t q = 0; q < steps; ++q)
      acc = fmaf(as[q][ty], bs[q][tx], acc);
    __syncthreads();
  }
  if (m0 + ty < M && n0 + tx < N)
    out[(e * M + m0 + ty) * N + n0 + tx] = acc;
}

/// The weights stored as W, y as Y.
template <typename Y, typename W>
__global__ void combineKernel(const float *out, const int32_t *rowOf, const W *weights, int64_t T,
                              int64_t H, int64_t k, Y *y) {
  for (int64_t i = firstElement(); i < T * H; i += gridStride())
    arith::storeElement(y, i, arith::routedCombineElement(out, rowOf, weights, H, k, i / H, i % H));
}

__global__ void dxKernel(const float *dxRows, const int32_t *rowOf, int64_t T, int64_t H, int64_t k,
                         float *dx) {
  for (int64_t i = firstElement(); i < T * H; i += gridStride())
    dx[i] = arith::routedDxElement(dxRows, rowOf, H, k, i / H, i % H);
}

__global__ void scaleRowsKernel(const float *rows, const float *scale, int64_t R, int64_t H,
                                float *out) {
  for (int64_t i = firstElement(); i < R * H; i += gridStride())
    out[i] = scale[i / H] * rows[i];
}

__global__ void rowDotsKernel(const float *a, const float *b, int64_t R, int64_t H, float *out) {
  for (int64_t r = firstElement(); r < R; r += gridStride())
    out[r] = arith::rowDot(a, b, H, r);
}

} // namespace

cudaError_t moe_sort(const int32_t *idx, int64_t choices, int64_t E, const RoutedSort &sort,
                     int32_t *badIds, cudaStream_t stream) {
  int64_t chunks = arith::sortChunks(choices);
  if (cudaError_t status = elementwise(chunks * E, stream, sortCountKernel, idx, choices, E,
                                       sort.chunkCounts, badIds);
      status != cudaSuccess)
    return status;
  sortPlanKernel<<<1, 1, 0, stream>>>(sort.chunkCounts, chunks, E, sort.counts, sort.offsets,
                                      sort.first, sort.tileOffsets);
  if (cudaError_t status = cudaGetLastError(); status != cudaSuccess)
    return status;
  return elementwise(chunks * E, stream, sortPlaceKernel, idx, choices, E,
                     (const int64_t *)sort.first, sort.perm, sort.rowOf);
}

cudaError_t moe_gather_tokens(Src x, const int32_t *perm, int64_t R, int64_t H, int64_t k, Dst rows,
                              cudaStream_t stream) {
  if (x.type != rows.type || !isFloat(x.type))
    return cudaErrorInvalidValue;
  if (x.type == arith::Type::F32)
    return elementwise(R * H, stream, gatherTokensKernel<uint32_t>,
                       static_cast<const uint32_t *>(x.data), perm, R, H, k,
                       static_cast<uint32_t *>(rows.data));
  return elementwise(R * H, stream, gatherTokensKernel<uint16_t>,
                     static_cast<const uint16_t *>(x.data), perm, R, H, k,
                     static_cast<uint16_t *>(rows.data));
}

cudaError_t moe_gather_choices(const float *values, const int32_t *perm, int64_t R, float *rows,
                               cudaStream_t stream) {
  return elementwise(R, stream, gatherChoicesKernel, values, perm, R, rows);
}

cudaError_t moe_scatter_choices(const float *rows, const int32_t *rowOf, int64_t choices,
                                float *out, cudaStream_t stream) {
  return elementwise(choices, stream, scatterChoicesKernel, rows, rowOf, choices, out);
}

cudaError_t grouped_rows(Src a, Src w, bool transW, int64_t R, int64_t K, int64_t N,
                         const int64_t *offsets, const int64_t *tileOffsets, int64_t groups,
                         float *out, cudaStream_t stream) {
  return withTypes(a.type, w.type, [&](auto at, auto wt) {
    using A = decltype(at);
    using W = decltype(wt);
    if (R == 0 || N == 0)
      return cudaSuccess;
    dim3 grid((unsigned)arith::maxGroupTiles(R, groups), (unsigned)((N + kTile - 1) / kTile));
    groupedRowsKernel<A, W><<<grid, dim3(kTile, kTile), 0, stream>>>(
        static_cast<const A *>(a.data), static_cast<const W *>(w.data), transW, K, N, offsets,
        tileOffsets, groups, out);
    return cudaGetLastError();
  });
}

cudaError_t grouped_rows_tc(Src a, Src w, int64_t R, int64_t K, int64_t N, const int64_t *offsets,
                            const int64_t *tileOffsets, int64_t groups, float *out,
                            cudaStream_t stream) {
  if (!arith::groupedTcTakes(a.type, w.type))
    return cudaErrorInvalidValue;
  if (R == 0 || N == 0)
    return cudaSuccess;
  dim3 grid((unsigned)arith::maxGroupTiles(R, groups), (unsigned)arith::groupedTcColumnBlocks(N));
  auto launch = [&](auto at, auto wt) {
    using A = decltype(at);
    using T = decltype(wt);
    arith::GroupedTcArgs<A, T> args{static_cast<const A *>(a.data),
                                    static_cast<const T *>(w.data),
                                    K,
                                    N,
                                    offsets,
                                    tileOffsets,
                                    groups,
                                    out};
    groupedTcKernel<A, T><<<grid, arith::kGtThreads, 0, stream>>>(args);
    return cudaGetLastError();
  };
  if (w.type == arith::Type::F16)
    return launch(arith::F16{}, arith::F16{});
  if (a.type == arith::Type::F32)
    return launch(float{}, arith::Bf16{});
  return launch(arith::Bf16{}, arith::Bf16{});
}

cudaError_t grouped_outer(const float *a, int64_t M, const float *b, int64_t N,
                          const int64_t *offsets, int64_t groups, float *out, cudaStream_t stream) {
  if (groups == 0 || M == 0 || N == 0)
    return cudaSuccess;
  dim3 grid((unsigned)((M + kTile - 1) / kTile), (unsigned)((N + kTile - 1) / kTile),
            (unsigned)groups);
  groupedOuterKernel<<<grid, dim3(kTile, kTile), 0, stream>>>(a, M, b, N, offsets, out);
  return cudaGetLastError();
}

cudaError_t moe_routed_combine(const float *out, const int32_t *rowOf, Src weights, int64_t T,
                               int64_t H, int64_t k, Dst y, cudaStream_t stream) {
  return withTypes(y.type, weights.type, [&](auto yt, auto wt) {
    using Y = decltype(yt);
    using W = decltype(wt);
    return elementwise(T * H, stream, combineKernel<Y, W>, out, rowOf,
                       static_cast<const W *>(weights.data), T, H, k, static_cast<Y *>(y.data));
  });
}

cudaError_t moe_routed_dx(const float *dxRows, const int32_t *rowOf, int64_t T, int64_t H,
                          int64_t k, float *dx, cudaStream_t stream) {
  return elementwise(T * H, stream, dxKernel, dxRows, rowOf, T, H, k, dx);
}

cudaError_t scale_rows(const float *rows, const float *scale, int64_t R, int64_t H, float *out,
                       cudaStream_t stream) {
  return elementwise(R * H, stream, scaleRowsKernel, rows, scale, R, H, out);
}

cudaError_t row_dots(const float *a, const float *b, int64_t R, int64_t H, float *out,
                     cudaStream_t stream) {
  return elementwise(R, stream, rowDotsKernel, a, b, R, H, out);
}

} // namespace shardline::rt::cuda
