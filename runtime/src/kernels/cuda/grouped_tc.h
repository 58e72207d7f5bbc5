//===- grouped_tc.h - the experts' grouped GEMMs on the tensor cores -*- C++ -*-===//
//
// Dropless MoE's grouped product out[R, N] = each row of a[R, K] times its
// expert's w [K, N] (moe_routed.h, grouped_rows) for bf16 or f16 weights, on
// the tensor cores: a block of kGtThreads threads (kGtWarps warps) takes one
// row tile of the sort (groupedTile: up to 16 rows of one expert) and
// kGtCols columns, and walks K kGtK at a time. Per step the block stages
// the rows' a and the expert's w in shared memory as 16-bit factors (zero
// past the rows, K and N), then each warp adds its 16 × 16 part of the
// product into an f32 tile (tcProduct: wmma on the device, f32 loops over
// the same factors on the host). The tile is written to out once, in f32.
//
// The rows a are 16-bit of w's type (x's rows: the gate and up products) or
// f32 (SwiGLU's hidden values: the down product). An f32 value v is split
// into hi = bf16(v) and lo = bf16(v − hi) (v − hi is exact in f32), and both
// products are summed: hi + lo holds v to 2^-16 of it, so the product stays
// within about that of the f32 one; a product of 16-bit factors differs
// from the f32 kernel's only in the order of its f32 sums. f16 has too little range for that split
// (a hidden value above 65504 would be infinite), so f32 rows against f16
// weights stay on the f32 kernel (groupedTcTakes).
//
// Shared memory: a as two [16][kGtK + 8] planes (hi, lo), w [kGtK][kGtCols
// + 8], the f32 tile [16][kGtCols + 4]: 18 KiB, under the 48 KiB a block has
// without opting in. The padding keeps wmma's 32-byte alignment.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CUDA_GROUPED_TC_H
#define SHARDLINE_RUNTIME_KERNELS_CUDA_GROUPED_TC_H

#include "kernels/cuda/attention_tc.h"
#include "kernels/cuda/moe_routed.h"

namespace shardline::rt::cuda::arith {

/// Rows a block (one row tile of the sort), columns a block, K a step.
inline constexpr int kGtRows = (int)kGroupTile;
inline constexpr int kGtCols = 64;
inline constexpr int kGtK = 64;
inline constexpr int kGtWarps = kGtCols / kTcFrag;
inline constexpr int kGtThreads = kGtWarps * kTcLanes;

static_assert(kGtRows == kTcFrag, "a row tile is one fragment high");

/// Whether the tensor-core grouped product takes rows of `a` against
/// weights of `w`: 16-bit weights, and rows of their type or f32 against
/// bf16 (the split above).
SL_HD bool groupedTcTakes(Type a, Type w) {
  bool sixteen = w == Type::BF16 || w == Type::F16;
  return sixteen && (a == w || (a == Type::F32 && w == Type::BF16));
}

/// The blocks along N of a product N wide.
SL_HD int64_t groupedTcColumnBlocks(int64_t N) { return (N + kGtCols - 1) / kGtCols; }

/// A block's shared memory for weights stored as T.
template <typename T> struct alignas(128) GroupedTcShared {
  static constexpr int kLdA = kGtK + 8;
  static constexpr int kLdW = kGtCols + 8;
  static constexpr int kLdC = kGtCols + 4;
  T a[2][kGtRows][kLdA];
  T w[kGtK][kLdW];
  float c[kGtRows][kLdC];
};

/// What the kernel reads and writes: a [R, K] stored as A (T or f32), w
/// [groups, K, N] as T, the sort's offsets and row tiles, out [R, N] f32.
template <typename A, typename T> struct GroupedTcArgs {
  const A *a;
  const T *w;
  int64_t K, N;
  const int64_t *offsets, *tileOffsets;
  int64_t groups;
  float *out;
};

/// Block (tile, columnBlock) of the product: its row tile's rows times its
/// expert's w, columns [columnBlock·kGtCols, +kGtCols). A block past the
/// last tile does nothing (the grid is sized by maxGroupTiles).
template <typename A, typename T, typename Block>
SL_HD void groupedTcBlock(Block &block, const GroupedTcArgs<A, T> &g, GroupedTcShared<T> &sh,
                          int64_t tile, int64_t columnBlock) {
  using Sh = GroupedTcShared<T>;
  constexpr bool split = !std::is_same<A, T>::value;
  int64_t e = 0, row = 0, rows = 0;
  if (!groupedTile(g.offsets, g.tileOffsets, g.groups, tile, e, row, rows))
    return;
  const int64_t n0 = columnBlock * kGtCols;
  const T *we = g.w + e * g.K * g.N;
  const T zero = Storage<T>::fromFloat(0.0f);
  block.each([&](int t) {
    for (int i = t; i < kGtRows * kGtCols; i += kGtThreads)
      sh.c[i / kGtCols][i % kGtCols] = 0.0f;
  });
  for (int64_t k0 = 0; k0 < g.K; k0 += kGtK) {
    block.each([&](int t) {
      for (int i = t; i < kGtRows * kGtK; i += kGtThreads) {
        int r = i / kGtK, p = i % kGtK;
        bool inside = r < rows && k0 + p < g.K;
        if constexpr (split) {
          float v = inside ? loadElement(g.a, (row + r) * g.K + k0 + p) : 0.0f;
          splitValue(v, sh.a[0][r][p], sh.a[1][r][p]);
        } else {
          sh.a[0][r][p] = inside ? g.a[(row + r) * g.K + k0 + p] : zero;
        }
      }
      for (int i = t; i < kGtK * kGtCols; i += kGtThreads) {
        int p = i / kGtCols, n = i % kGtCols;
        sh.w[p][n] = k0 + p < g.K && n0 + n < g.N ? we[(k0 + p) * g.N + n0 + n] : zero;
      }
    });
    block.eachWarp([&](int warp, auto &lanes) {
      (void)lanes;
      const T *w = &sh.w[0][warp * kTcFrag];
      float *c = &sh.c[0][warp * kTcFrag];
      tcProduct<T, false>(&sh.a[0][0][0], Sh::kLdA, w, Sh::kLdW, c, Sh::kLdC, kGtK / kTcFrag, true);
      if constexpr (split)
        tcProduct<T, false>(&sh.a[1][0][0], Sh::kLdA, w, Sh::kLdW, c, Sh::kLdC, kGtK / kTcFrag,
                            true);
    });
  }
  block.each([&](int t) {
    for (int i = t; i < kGtRows * kGtCols; i += kGtThreads) {
      int r = i / kGtCols, n = i % kGtCols;
      if (r < rows && n0 + n < g.N)
        g.out[(row + r) * g.N + n0 + n] = sh.c[r][n];
    }
  });
}

} // namespace shardline::rt::cuda::arith

#endif
