//===- attention_tc.h - attention on the tensor cores, host and device -*- C++ -*-===//
//
// Softmax attention over bf16 or f16 q, k, v in the flash form: a block of
// kTcThreads threads (kTcWarps warps) takes kTcRows queries of one (batch,
// query head) and walks the keys of its kv head kTcKeys at a time. Per key
// tile, after the block has staged K, V and their positions in shared
// memory, each warp works on its own kTcFrag query rows alone:
//   S = Q·Kᵀ        16-bit factors, f32 sums (the tensor cores);
//   the online softmax of each row over the tile's visible keys, scale
//   applied to the f32 scores, P = exp(S - m) rounded to the storage type
//   (the factor the tensor cores take) and l summing the rounded P, so the
//   weights the output divides by are the ones it was built from;
//   O = O·exp(m_old - m) + P·V   16-bit factors, f32 sums.
// The output O / l is rounded once to the storage type; the log-sum-exp
// m + log l stays f32. The masks are the CPU kernel's (arith.h, visible),
// and a tile no query of the block sees is skipped whole: its positions are
// staged first, its keys and values never loaded.
//
// Each warp's two lanes per row split the row's 64 keys and the output's
// columns; a warp's rows are its own lanes' rows, so within a tile the warp
// syncs only itself. The block's steps are written against a Block
// (reduce.cuh, BlockPhases; a loop in the CPU test) whose each(f) runs f for
// every thread and eachWarp(f) f(warp, lanes) for every warp, lanes.each(g)
// running g for every lane of the warp and then syncing the warp. The
// products go through tcProduct: nvcuda::wmma fragments on the device, f32
// loops over the same 16-bit factors on the host, so the CPU test checks
// everything but the order the tensor cores sum in.
//
// Shared memory: Q, K, V as [64][MaxD + 8] 16-bit rows, S [64][68] f32,
// P [64][72] 16-bit, O [64][MaxD + 4] f32 (the padding keeps wmma's 32-byte
// alignment and spreads rows over banks): 73 KiB for head dims up to 64,
// 112.6 KiB up to 128, above the 48 KiB a block has without opting in, and
// small enough for 3 and 2 blocks an SM (launch.h, blocksPerSmByShared).
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CUDA_ATTENTION_TC_H
#define SHARDLINE_RUNTIME_KERNELS_CUDA_ATTENTION_TC_H

#include "kernels/cuda/arith.h"

#include <type_traits>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#endif

namespace shardline::rt::cuda::arith {

/// Queries a block, keys a tile, the side of a tensor-core fragment.
inline constexpr int kTcRows = 64;
inline constexpr int kTcKeys = 64;
inline constexpr int kTcFrag = 16;
inline constexpr int kTcWarps = kTcRows / kTcFrag;
inline constexpr int kTcLanes = 32;
inline constexpr int kTcThreads = kTcWarps * kTcLanes;
/// Lanes a row: each takes half the row's keys and half its output columns.
inline constexpr int kTcLanesPerRow = kTcLanes / kTcFrag;

/// The head dim rounded up to whole fragments (the padding is zero).
SL_HD int tcPaddedDim(int64_t D) { return (int)((D + kTcFrag - 1) / kTcFrag * kTcFrag); }

/// A block's shared memory for storage type T and head dims up to MaxD.
template <typename T, int MaxD> struct alignas(128) TcShared {
  static constexpr int kLdIn = MaxD + 8;
  static constexpr int kLdS = kTcKeys + 4;
  static constexpr int kLdP = kTcKeys + 8;
  static constexpr int kLdO = MaxD + 4;
  T q[kTcRows][kLdIn];
  T k[kTcKeys][kLdIn];
  T v[kTcKeys][kLdIn];
  float s[kTcRows][kLdS];
  T p[kTcRows][kLdP];
  float o[kTcRows][kLdO];
  float m[kTcRows], l[kTcRows], mNew[kTcRows], factor[kTcRows];
  float partMax[kTcThreads], partSum[kTcThreads];
  /// Positions as int32 (a sequence holds fewer than 2^31 tokens): 512
  /// bytes that keep two blocks of the 128 layout on an SM (launch.h).
  int32_t qPos[kTcRows], kPos[kTcKeys];
  int64_t maxQ, minQ;
  /// Whether the tile is hidden from every query, by the tile's parity: a
  /// thread may still read one tile's while thread 0 writes the next's.
  int skip[2];
};

#if defined(__CUDA_ARCH__)
template <typename T> struct TcElement;
template <> struct TcElement<Bf16> {
  using type = __nv_bfloat16;
};
template <> struct TcElement<F16> {
  using type = __half;
};
#endif

/// One warp's c[16][16] (+)= a[16][16·steps] · b[16·steps][16]: a row-major
/// (row stride lda), b row-major or, BColMajor, column-major (b(k, n) at
/// b[n·ldb + k]), c row-major f32; `accumulate` adds to c, otherwise c is
/// overwritten. Every lane of the warp calls it on the device.
template <typename T, bool BColMajor>
SL_HD void tcProduct(const T *a, int lda, const T *b, int ldb, float *c, int ldc, int steps,
                     bool accumulate) {
#if defined(__CUDA_ARCH__)
  using namespace nvcuda;
  using E = typename TcElement<T>::type;
  using BLayout = typename std::conditional<BColMajor, wmma::col_major, wmma::row_major>::type;
  wmma::fragment<wmma::matrix_a, kTcFrag, kTcFrag, kTcFrag, E, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, kTcFrag, kTcFrag, kTcFrag, E, BLayout> fb;
  wmma::fragment<wmma::accumulator, kTcFrag, kTcFrag, kTcFrag, float> fc;
  if (accumulate)
    wmma::load_matrix_sync(fc, c, ldc, wmma::mem_row_major);
  else
    wmma::fill_fragment(fc, 0.0f);
  for (int step = 0; step < steps; ++step) {
    wmma::load_matrix_sync(fa, reinterpret_cast<const E *>(a + step * kTcFrag), lda);
    const T *bStep = BColMajor ? b + step * kTcFrag : b + step * kTcFrag * ldb;
    wmma::load_matrix_sync(fb, reinterpret_cast<const E *>(bStep), ldb);
    wmma::mma_sync(fc, fa, fb, fc);
  }
  wmma::store_matrix_sync(c, fc, ldc, wmma::mem_row_major);
#else
  for (int i = 0; i < kTcFrag; ++i)
    for (int j = 0; j < kTcFrag; ++j) {
      float sum = accumulate ? c[i * ldc + j] : 0.0f;
      for (int k = 0; k < steps * kTcFrag; ++k)
        sum += Storage<T>::toFloat(a[i * lda + k]) *
               Storage<T>::toFloat(BColMajor ? b[j * ldb + k] : b[k * ldb + j]);
      c[i * ldc + j] = sum;
    }
#endif
}

/// What the kernel reads and writes (kernels.h, attention_tc): q [B, Sq,
/// HQ*D], k and v [B, Sk, HKV*D] stored as T, the positions of the queries
/// and keys, out [B, Sq, HQ*D] (as T or f32), lse [B, HQ, Sq] f32 or
/// nullptr; queryBlocks blocks along the queries of one head.
struct TcArgs {
  const void *q, *k, *v;
  const int64_t *qPos, *kPos;
  int64_t B, Sq, Sk, HQ, HKV, D;
  bool causal;
  float scale;
  int64_t window;
  int64_t queryBlocks;
  void *out;
  float *lse;
};

/// The smallest and largest of n > 0 positions.
SL_HD void tcPositionRange(const int64_t *pos, int n, int64_t &lo, int64_t &hi) {
  lo = hi = pos[0];
  for (int i = 1; i < n; ++i) {
    lo = pos[i] < lo ? pos[i] : lo;
    hi = pos[i] > hi ? pos[i] : hi;
  }
}

/// Whether no query of positions [minQ, maxQ] sees any key of [minK, maxK]
/// (visible's masks on whole ranges).
SL_HD bool tcTileHidden(int64_t minQ, int64_t maxQ, int64_t minK, int64_t maxK, bool causal,
                        int64_t window) {
  return causal && (minK > maxQ || (window > 0 && minQ - maxK >= window));
}

/// Block `block`'s queries: kTcRows of one (batch, query head), blocks
/// running over the queries fastest, then the heads, then the batch; the
/// output stored as O (T, or f32 for a ring's partial outputs).
template <typename T, int MaxD, typename O = T, typename Block>
SL_HD void attentionTcBlock(Block &block, const TcArgs &a, TcShared<T, MaxD> &sh, int64_t index) {
  using Sh = TcShared<T, MaxD>;
  const T zero = Storage<T>::fromFloat(0.0f);
  int64_t headBlock = index / a.queryBlocks, bh = headBlock;
  int64_t b = headBlock / a.HQ, h = headBlock % a.HQ, hk = kvHead(h, a.HQ, a.HKV);
  int64_t first = (index % a.queryBlocks) * kTcRows;
  int rows = (int)(a.Sq - first < kTcRows ? a.Sq - first : kTcRows);
  int D = (int)a.D, padded = tcPaddedDim(a.D), steps = padded / kTcFrag;
  const T *q = static_cast<const T *>(a.q), *k = static_cast<const T *>(a.k),
          *v = static_cast<const T *>(a.v);

  block.each([&](int tid) {
    for (int idx = tid; idx < kTcRows * padded; idx += kTcThreads) {
      int r = idx / padded, e = idx % padded;
      sh.q[r][e] = r < rows && e < D ? q[((b * a.Sq + first + r) * a.HQ + h) * a.D + e] : zero;
      sh.o[r][e] = 0.0f;
    }
    if (tid < kTcRows) {
      sh.m[tid] = -INFINITY;
      sh.l[tid] = 0.0f;
      sh.qPos[tid] = tid < rows ? (int32_t)a.qPos[first + tid] : 0;
    }
    if (tid == 0)
      tcPositionRange(a.qPos + first, rows, sh.minQ, sh.maxQ);
  });

  for (int64_t start = 0, tile = 0; start < a.Sk; start += kTcKeys, ++tile) {
    int n = (int)(a.Sk - start < kTcKeys ? a.Sk - start : kTcKeys);
    const int64_t *kPos = a.kPos + start;
    block.each([&](int tid) {
      if (tid == 0) {
        int64_t lo, hi;
        tcPositionRange(kPos, n, lo, hi);
        sh.skip[tile % 2] = tcTileHidden(sh.minQ, sh.maxQ, lo, hi, a.causal, a.window) ? 1 : 0;
      }
      if (tid < kTcKeys)
        sh.kPos[tid] = tid < n ? (int32_t)kPos[tid] : 0;
    });
    // A hidden tile's keys and values are never read (causal attention
    // skips about half the tiles).
    if (sh.skip[tile % 2])
      continue;
    block.each([&](int tid) {
      for (int idx = tid; idx < kTcKeys * padded; idx += kTcThreads) {
        int j = idx / padded, e = idx % padded;
        bool in = j < n && e < D;
        int64_t from = ((b * a.Sk + start + j) * a.HKV + hk) * a.D + e;
        sh.k[j][e] = in ? k[from] : zero;
        sh.v[j][e] = in ? v[from] : zero;
      }
    });
    block.eachWarp([&](int warp, auto &lanes) {
      int row0 = warp * kTcFrag;
      for (int c = 0; c < kTcKeys / kTcFrag; ++c)
        tcProduct<T, true>(&sh.q[row0][0], Sh::kLdIn, &sh.k[c * kTcFrag][0], Sh::kLdIn,
                           &sh.s[row0][c * kTcFrag], Sh::kLdS, steps, false);
      lanes.sync();
      // Each lane's half row: the largest visible score.
      constexpr int kHalf = kTcKeys / kTcLanesPerRow;
      lanes.each([&](int lane) {
        int t = warp * kTcLanes + lane, r = row0 + lane / kTcLanesPerRow;
        int j0 = (lane % kTcLanesPerRow) * kHalf;
        float top = -INFINITY;
        for (int j = j0; j < j0 + kHalf && j < n; ++j)
          if (r < rows && visible(sh.qPos[r], sh.kPos[j], a.causal, a.window))
            top = fmaxf(top, sh.s[r][j] * a.scale);
        sh.partMax[t] = top;
      });
      // The row's new maximum, its P over the lane's half, the old output
      // scaled by exp(m_old - m) over the lane's half of the columns.
      lanes.each([&](int lane) {
        int t = warp * kTcLanes + lane, r = row0 + lane / kTcLanesPerRow,
            half = lane % kTcLanesPerRow, pair = t - half;
        float top = sh.m[r];
        for (int i = 0; i < kTcLanesPerRow; ++i)
          top = fmaxf(top, sh.partMax[pair + i]);
        float factor = top == -INFINITY || sh.m[r] == -INFINITY ? 1.0f : expf(sh.m[r] - top);
        float sum = 0.0f;
        for (int j = half * kHalf; j < (half + 1) * kHalf; ++j) {
          float p = 0.0f;
          if (j < n && r < rows && top != -INFINITY &&
              visible(sh.qPos[r], sh.kPos[j], a.causal, a.window))
            p = expf(sh.s[r][j] * a.scale - top);
          T stored = Storage<T>::fromFloat(p);
          sh.p[r][j] = stored;
          sum += Storage<T>::toFloat(stored);
        }
        sh.partSum[t] = sum;
        int columns = padded / kTcLanesPerRow;
        for (int e = half * columns; e < (half + 1) * columns; ++e)
          sh.o[r][e] *= factor;
        if (half == 0) {
          sh.mNew[r] = top;
          sh.factor[r] = factor;
        }
      });
      for (int c = 0; c < steps; ++c)
        tcProduct<T, false>(&sh.p[row0][0], Sh::kLdP, &sh.v[0][c * kTcFrag], Sh::kLdIn,
                            &sh.o[row0][c * kTcFrag], Sh::kLdO, kTcKeys / kTcFrag, true);
      lanes.each([&](int lane) {
        int t = warp * kTcLanes + lane, r = row0 + lane / kTcLanesPerRow;
        if (lane % kTcLanesPerRow != 0)
          return;
        float sum = 0.0f;
        for (int i = 0; i < kTcLanesPerRow; ++i)
          sum += sh.partSum[t + i];
        sh.l[r] = sh.l[r] * sh.factor[r] + sum;
        sh.m[r] = sh.mNew[r];
      });
    });
  }

  O *out = static_cast<O *>(a.out);
  block.each([&](int tid) {
    for (int idx = tid; idx < rows * D; idx += kTcThreads) {
      int r = idx / D, e = idx % D;
      float l = sh.l[r];
      out[((b * a.Sq + first + r) * a.HQ + h) * a.D + e] =
          Storage<O>::fromFloat(l > 0.0f ? sh.o[r][e] / l : 0.0f);
    }
    if (a.lse && tid < rows)
      a.lse[bh * a.Sq + first + tid] = sh.l[tid] > 0.0f ? sh.m[tid] + logf(sh.l[tid]) : -INFINITY;
  });
}

} // namespace shardline::rt::cuda::arith

#endif
