//===- moe_routed.h - dropless MoE over the routed rows only ---*- C++ -*-===//
//
// The arithmetic and index logic of the CUDA backend's dropless MoE, which
// computes each expert over exactly the rows routed to it (no slab of T rows
// per expert), as host-and-device functions a CPU test checks against the
// CPU kernels (kernels/cpu/moe.cpp, moe_dropless.cpp, moe_grad.cpp):
//
// - the counting sort of the routed choices by expert, in the CPU's order
//   (moe_dispatch: choice i = t·k + j visited in order, stable within each
//   expert), cut into chunks of kSortChunk choices: one thread per (chunk,
//   expert) counts, one thread turns the counts into each expert's offsets,
//   each chunk's first row per expert and the tiles of the grouped GEMMs,
//   and one thread per (chunk, expert) places its choices;
// - the grouped GEMMs over those rows, one launch for every expert: tiles of
//   kGroupTile rows of one expert (groupedTile), each element a dot product
//   in f32 with fmaf in the order of the reduced index (groupedDot,
//   groupedOuter), so no host learns a count per expert;
// - the combine and the backward's per-row values, in the CPU's double sums
//   and choice order;
// - the SwiGLU experts' forward and backward written once over an `Ops`:
//   the backend passes its grouped kernels, the test a host loop over the
//   functions below.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CUDA_MOE_ROUTED_H
#define SHARDLINE_RUNTIME_KERNELS_CUDA_MOE_ROUTED_H

#include "kernels/cuda/arith.h"

#include <cstdint>

namespace shardline::rt::cuda {

namespace arith {

/// Routed choices per sorting chunk, and rows (and columns) per GEMM tile.
inline constexpr int64_t kSortChunk = 256;
inline constexpr int64_t kGroupTile = 16;

SL_HD int64_t sortChunks(int64_t choices) { return (choices + kSortChunk - 1) / kSortChunk; }

/// An upper bound of the grouped GEMMs' row tiles over R rows in E groups:
/// each group wastes at most one partial tile.
SL_HD int64_t maxGroupTiles(int64_t R, int64_t E) { return (R + kGroupTile - 1) / kGroupTile + E; }

/// The choices of expert e among idx[begin, end).
SL_HD int32_t chunkCount(const int32_t *idx, int64_t begin, int64_t end, int32_t e) {
  int32_t n = 0;
  for (int64_t i = begin; i < end; ++i)
    n += idx[i] == e ? 1 : 0;
  return n;
}

/// From chunkCounts[c·E + e] (the choices of expert e in chunk c): counts[e],
/// offsets[E + 1] (each expert's first sorted row, then the total), first[c·E
/// + e] (the first sorted row of chunk c's choices of e: the sort is stable)
/// and tileOffsets[E + 1] (each expert's first tile of kGroupTile rows, then
/// the number of tiles). One thread: E·chunks additions.
SL_HD void sortPlan(const int32_t *chunkCounts, int64_t chunks, int64_t E, int32_t *counts,
                    int64_t *offsets, int64_t *first, int64_t *tileOffsets) {
  int64_t row = 0, tile = 0;
  for (int64_t e = 0; e < E; ++e) {
    offsets[e] = row;
    tileOffsets[e] = tile;
    int64_t n = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      first[c * E + e] = row + n;
      n += chunkCounts[c * E + e];
    }
    counts[e] = (int32_t)n;
    row += n;
    tile += (n + kGroupTile - 1) / kGroupTile;
  }
  offsets[E] = row;
  tileOffsets[E] = tile;
}

/// The offsets and row tiles of `groups` groups of `rows` rows each (dense
/// slabs or capacity buffers [E, rows, H] as grouped rows), as sortPlan
/// writes them for those counts.
SL_HD void uniformGroups(int64_t groups, int64_t rows, int64_t *offsets, int64_t *tileOffsets) {
  for (int64_t g = 0; g <= groups; ++g) {
    offsets[g] = g * rows;
    tileOffsets[g] = g * ((rows + kGroupTile - 1) / kGroupTile);
  }
}

/// Places chunk [begin, end)'s choices of expert e at rows next, next + 1, …
/// in choice order: perm[row] = i (moe_dispatch's perm) and rowOf[i] = row.
SL_HD void chunkPlace(const int32_t *idx, int64_t begin, int64_t end, int32_t e, int64_t next,
                      int32_t *perm, int32_t *rowOf) {
  for (int64_t i = begin; i < end; ++i)
    if (idx[i] == e) {
      perm[next] = (int32_t)i;
      rowOf[i] = (int32_t)next;
      ++next;
    }
}

/// Row tile `tile` of the grouped rows: its group e, first row and rows (at
/// most kGroupTile, all of group e); false past the last tile.
SL_HD bool groupedTile(const int64_t *offsets, const int64_t *tileOffsets, int64_t E, int64_t tile,
                       int64_t &e, int64_t &row, int64_t &rows) {
  if (tile < 0 || tile >= tileOffsets[E])
    return false;
  // The last group whose first tile is at or before `tile` (empty groups
  // share their successor's first tile and are skipped).
  int64_t lo = 0, hi = E - 1;
  while (lo < hi) {
    int64_t mid = (lo + hi + 1) / 2;
    if (tileOffsets[mid] <= tile)
      lo = mid;
    else
      hi = mid - 1;
  }
  e = lo;
  row = offsets[e] + (tile - tileOffsets[e]) * kGroupTile;
  int64_t left = offsets[e + 1] - row;
  rows = left < kGroupTile ? left : kGroupTile;
  return true;
}

/// Element (r, n) of the grouped product: row r of a[R, K] times group e's
/// w, stored [K, N] (or [N, K] when transW, which multiplies by its
/// transpose); an f32 fmaf chain over p = 0, 1, …, K - 1 of the widened
/// values (a stored as A, w as W: f32, Bf16 or F16).
template <typename A, typename W>
SL_HD float groupedDot(const A *a, const W *w, bool transW, int64_t K, int64_t N, int64_t r,
                       int64_t n) {
  float acc = 0.0f;
  for (int64_t p = 0; p < K; ++p)
    acc = fmaf(loadElement(a, r * K + p), loadElement(w, transW ? n * K + p : p * N + n), acc);
  return acc;
}

/// Element (m, n) of a group's aᵀ·b over its rows [row, row + rows) of
/// a[R, M] and b[R, N] (the weight gradients): an f32 fmaf chain in row
/// order; zero for a group without rows.
SL_HD float groupedOuter(const float *a, int64_t M, const float *b, int64_t N, int64_t row,
                         int64_t rows, int64_t m, int64_t n) {
  float acc = 0.0f;
  for (int64_t r = row; r < row + rows; ++r)
    acc = fmaf(a[r * M + m], b[r * N + n], acc);
  return acc;
}

/// Output (t, h) of the combine of the sorted rows out[R, H] (moe_combine):
/// token t's choices' rows weighted and summed in double in choice order;
/// the weights stored as W.
template <typename W>
SL_HD float routedCombineElement(const float *out, const int32_t *rowOf, const W *weights,
                                 int64_t H, int64_t k, int64_t t, int64_t h) {
  double acc = 0.0;
  for (int64_t j = 0; j < k; ++j)
    acc += (double)loadElement(weights, t * k + j) * out[(int64_t)rowOf[t * k + j] * H + h];
  return (float)acc;
}

/// Row r of a[R, H] against row r of b, summed in double (a routed row's
/// weight gradient: its output against its token's dy).
SL_HD float rowDot(const float *a, const float *b, int64_t H, int64_t r) {
  double acc = 0.0;
  for (int64_t h = 0; h < H; ++h)
    acc += (double)a[r * H + h] * b[r * H + h];
  return (float)acc;
}

/// dx (t, h): token t's choices' rows of dxRows[R, H] summed in double in
/// choice order.
SL_HD float routedDxElement(const float *dxRows, const int32_t *rowOf, int64_t H, int64_t k,
                            int64_t t, int64_t h) {
  double acc = 0.0;
  for (int64_t j = 0; j < k; ++j)
    acc += dxRows[(int64_t)rowOf[t * k + j] * H + h];
  return (float)acc;
}

} // namespace arith

/// A tensor the grouped GEMMs read as it is stored: f32, bf16 or f16 (an f32
/// buffer converts to one).
struct Stored {
  const void *data = nullptr;
  arith::Type type = arith::Type::F32;
  Stored() = default;
  Stored(const float *values) : data(values) {}
  Stored(const void *data, arith::Type type) : data(data), type(type) {}
  /// The values of an f32 tensor (the backward's: training is f32).
  const float *f32() const { return static_cast<const float *>(data); }
};

/// The SwiGLU experts over grouped rows: x[R, H] grouped by expert (the
/// Ops know the groups), gate and up [El, H, F], down [El, F, H]; x and the
/// weights as stored, the forward's of any float type, the backward's f32.
/// Ops: rows(a, w, transW, K, N, out) — out[R, N] = each row of a[R, K]
/// times its group's w ([K, N] a group, or [N, K] transposed), a and w
/// Stored, out f32;
/// outer(a, M, b, N, out) — out[El, M, N] = each group's aᵀ·b over its rows;
/// swiglu(g, u, n, out), swigluGrad(g, u, dy, n, dg, du) and add(a, b, n,
/// out) elementwise.
struct RoutedExpertsArgs {
  Stored x;
  const float *dout;
  Stored wGate, wUp, wDown;
  int64_t R, H, F;
  /// Forward: out and scratch (2·R·F). Backward: scratch of 6·R·F + R·H and
  /// what is asked for: out, dx, the weight gradients (dGate, dUp and dDown
  /// together); a nullptr output is not computed.
  float *out, *dx, *dGate, *dUp, *dDown, *scratch;
};

/// out = (swiglu(x·Wg, x·Wu))·Wd per group (moe_experts).
template <typename Ops> void routedExperts(Ops &ops, const RoutedExpertsArgs &a) {
  float *g = a.scratch, *u = g + a.R * a.F;
  ops.rows(a.x, a.wGate, false, a.H, a.F, g);
  ops.rows(a.x, a.wUp, false, a.H, a.F, u);
  ops.swiglu(g, u, a.R * a.F, g);
  ops.rows(g, a.wDown, false, a.F, a.H, a.out);
}

/// The backward (moe_experts_grad) and the forward's out, each where asked
/// for: g = x·Wg, u = x·Wu, act = swiglu(g, u), out = act·Wd; dact =
/// dout·Wdᵀ, (dg, du) = swiglu'(g, u)·dact, dWd = actᵀ·dout, dWg = xᵀ·dg,
/// dWu = xᵀ·du, dx = dg·Wgᵀ + du·Wuᵀ. act is computed only for out or the
/// weight gradients.
template <typename Ops> void routedExpertsGrad(Ops &ops, const RoutedExpertsArgs &a) {
  const int64_t R = a.R, H = a.H, F = a.F, n = R * F;
  float *g = a.scratch, *u = g + n, *act = u + n, *dact = act + n, *dg = dact + n, *du = dg + n,
        *part = du + n;
  bool weights = a.dGate != nullptr;
  ops.rows(a.x, a.wGate, false, H, F, g);
  ops.rows(a.x, a.wUp, false, H, F, u);
  if (a.out || weights)
    ops.swiglu(g, u, n, act);
  if (a.out)
    ops.rows(act, a.wDown, false, F, H, a.out);
  if (!a.dx && !weights)
    return;
  ops.rows(a.dout, a.wDown, true, H, F, dact);
  ops.swigluGrad(g, u, dact, n, dg, du);
  if (weights) {
    ops.outer(act, F, a.dout, H, a.dDown);
    ops.outer(a.x.f32(), H, dg, F, a.dGate);
    ops.outer(a.x.f32(), H, du, F, a.dUp);
  }
  if (a.dx) {
    ops.rows(dg, a.wGate, true, F, H, a.dx);
    ops.rows(du, a.wUp, true, F, H, part);
    ops.add(a.dx, part, R * H, a.dx);
  }
}

} // namespace shardline::rt::cuda

#endif
