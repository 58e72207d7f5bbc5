//===- ssd_arith.h - the chunked Mamba-2 SSD scan, host and device -*- C++ -*-===//
//
// The SSD scan on CUDA in the chunked form of the CPU kernel
// (kernels/cpu/mamba.cpp, ssd_scan; Mamba-2's state-space duality). Each
// sequence is cut into chunks of kSsdChunk tokens. Within a chunk, with cum
// the running sum of dt·A from the chunk's start and `last` its final value,
//   y_t   = Σ_{s≤t} (C_t·B_s) exp(cum_t - cum_s) dt_s x_s
//           + exp(cum_t) C_t · state_in + D x_t
//   state = exp(last) state_in + Σ_s exp(last - cum_s) dt_s x_s B_sᵀ
// in four kernels, as kernels/cuda/sequence.cu queues them:
//   (a) ssdChunkCum, a thread per (sequence, chunk, head): the steps and the
//       running log decay, in double as on the CPU;
//   (b) ssdChunkBlock, a block per (sequence, chunk, head): C·Bᵀ, masked and
//       decayed, times x (y from the chunk's own tokens), and the state its
//       tokens add;
//   (c) ssdCarry, a thread per (sequence, head, state entry): the chunks in
//       order from state_in, each chunk's added state replaced by the state
//       entering it; the final state and the decay out;
//   (d) ssdOutputBlock, a block per (sequence, chunk, head): y += exp(cum_t)
//       C_t · (state entering the chunk) + D x_t.
// x, dt, B, C and y are stored as T (f32, bf16 or f16), dt_bias, a_log and D
// as W (f32 or T): every value is widened as it is loaded or staged, and y
// is rounded to T once, in (d); (b)'s share of it stays f32 (in y itself
// when T is f32, else in scratch), so a 16-bit scan gives the f32 scan's
// results on the widened inputs, rounded.
// Every product is f32 FMAs with f32 sums over shared-memory tiles. The
// block-wide steps are written against a Block whose each(f) runs f for
// every thread of the block and then waits for all of them (__syncthreads on
// the device, a loop over the threads in the CPU test), so the test walks
// the kernels' own phases: within a phase no thread reads what another
// writes.
//
// 64 tokens a chunk: the CPU kernel's chunk, so both evaluate the same
// decomposition; the masked 64 x 64 matrix and two staged 64 x 32 tiles take
// 34 KB of shared memory, under the 48 KB a block has without opting in; and
// the within-chunk work per token (64·(N + P) FMAs) stays of the order of the
// state's (P·N) for the usual N and P of 64 to 128. The state size N has no
// limit: the tiles walk it kSsdTile entries at a time.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CUDA_SSD_ARITH_H
#define SHARDLINE_RUNTIME_KERNELS_CUDA_SSD_ARITH_H

#include "kernels/cuda/arith.h"

#include <type_traits>

namespace shardline::rt::cuda::arith {

/// Tokens a chunk.
inline constexpr int kSsdChunk = 64;
/// Columns (of N or P) a staged tile holds.
inline constexpr int kSsdTile = 32;
/// A block's threads: a kSsdGrid x kSsdGrid grid, each thread taking every
/// kSsdGrid-th row and column of a product's output.
inline constexpr int kSsdGrid = 16;
inline constexpr int kSsdThreads = kSsdGrid * kSsdGrid;

/// What the SSD scan reads and writes (kernels.h, ssd_scan): x and y
/// [B, S, NH*P], dt [B, S, NH] before the prelude, B and C [B, S, G*N],
/// stored as T (the activations); dt_bias, a_log and D [NH] (D nullptr:
/// none) as W (the parameters); state_in (nullptr: zero) and state_out
/// [slots, NH, P, N], decay_out [slots, NH] in the types their fields give
/// (f32 unless set), the B*chunks sequences as sequenceAt numbers them.
/// Scratch (launch.h, SsdLaunch): the steps and running log decays
/// [sequences, chunks of each, NH, kSsdChunk], a state [P, N] per
/// (sequence, chunk, head) and, where T is not f32, `partial`: (b)'s
/// share of y in f32 [B, S, NH*P], so that y is rounded to T once, in (d).
template <typename T, typename W> struct SsdArgsOf {
  const T *x, *dt;
  const W *dtBias, *aLog;
  const T *Bm, *Cm;
  const W *D;
  const void *stateIn;
  int64_t B, S, chunks, NH, P, G, N;
  T *y;
  void *stateOut, *decayOut;
  double *cum;
  float *step, *states;
  Type stateInType = Type::F32, stateOutType = Type::F32, decayOutType = Type::F32;
  float *partial = nullptr;
};
/// The f32 scan's, the backward's forward (ssd_grad_arith.h).
using SsdArgs = SsdArgsOf<float, float>;

/// Where (b) writes y's share from the chunk's own tokens: y itself in f32,
/// else the f32 scratch.
template <typename T, typename W> SL_HD float *ssdPartial(const SsdArgsOf<T, W> &a) {
  if constexpr (std::is_same_v<T, float>)
    return a.partial ? a.partial : a.y;
  else
    return a.partial;
}

/// The chunks of kSsdChunk tokens (the last one partial) of a sequence.
SL_HD int64_t ssdChunksOf(int64_t length) { return (length + kSsdChunk - 1) / kSsdChunk; }

/// Work item `item` (of sequences x chunks x NH, the head fastest): its
/// head h and group g, the first row of its chunk in the [B*S] rows and the
/// chunk's tokens.
struct SsdChunk {
  int64_t h, g, firstRow, length;
};
template <typename T, typename W>
SL_HD SsdChunk ssdChunkAt(const SsdArgsOf<T, W> &a, int64_t item) {
  int64_t chunks = ssdChunksOf(a.S / a.chunks);
  int64_t h = item % a.NH, c = (item / a.NH) % chunks, q = item / (a.NH * chunks);
  Sequence at = sequenceAt(q, a.B, a.S, a.chunks);
  int64_t first = c * kSsdChunk, rest = at.length - first;
  return {h, h / (a.NH / a.G), at.firstRow + first, rest < kSsdChunk ? rest : kSsdChunk};
}

/// (a) Item `item`'s steps softplus(dt + dt_bias) and running sums of
/// dt·A in double (the CPU's cum), kSsdChunk of each: past the chunk's end
/// the step is 0 and the sum stays at its last value.
template <typename T, typename W> SL_HD void ssdChunkCum(const SsdArgsOf<T, W> &a, int64_t item) {
  SsdChunk at = ssdChunkAt(a, item);
  float A = ssdRate(loadElement(a.aLog, at.h)), bias = loadElement(a.dtBias, at.h);
  double cum = 0.0;
  for (int t = 0; t < kSsdChunk; ++t) {
    float step =
        t < at.length ? ssdStep(loadElement(a.dt, (at.firstRow + t) * a.NH + at.h), bias) : 0.0f;
    cum += (double)step * A;
    a.step[item * kSsdChunk + t] = step;
    a.cum[item * kSsdChunk + t] = cum;
  }
}

/// A block's shared memory: the chunk's matrix over (token, token) (in (d)
/// the sums of the output tile), two staged operand tiles, and per token its
/// running log decay, its step and a double factor ((b): its step decayed to
/// the chunk's end; (d): exp(cum)). Rows are padded to an odd length so that
/// a warp's reads down a column fall on distinct banks.
struct SsdShared {
  float m[kSsdChunk][kSsdChunk + 1];
  float a[kSsdChunk][kSsdTile + 1];
  float b[kSsdChunk][kSsdTile + 1];
  double cum[kSsdChunk];
  double factor[kSsdChunk];
  float step[kSsdChunk];
};
using SsdTile = float (*)[kSsdTile + 1];

/// acc[i][j] += Σ_{k<K} A(r_i, k)·B(k, c_j) in f32 FMAs, k ascending, for
/// thread `tid`'s rows r_i = ti + kSsdGrid·i and columns c_j = tj + kSsdGrid·j
/// (tid = ti·kSsdGrid + tj); A(r, k) is a[r·ar + k·ak], B(k, c) is
/// b[k·bk + c·bc].
template <int R, int C>
SL_HD void ssdProduct(const float *a, int ar, int ak, const float *b, int bk, int bc, int K,
                      int tid, float (&acc)[R][C]) {
  int ti = tid / kSsdGrid, tj = tid % kSsdGrid;
  for (int k = 0; k < K; ++k) {
    float av[R], bv[C];
    for (int i = 0; i < R; ++i)
      av[i] = a[(ti + kSsdGrid * i) * ar + k * ak];
    for (int j = 0; j < C; ++j)
      bv[j] = b[k * bk + (tj + kSsdGrid * j) * bc];
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < C; ++j)
        acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
  }
}

/// Thread `tid`'s share of staging `rows` x kSsdTile values into `tile`:
/// element (r, k) = value(r, k).
template <typename Value> SL_HD void ssdStage(SsdTile tile, int rows, int tid, const Value &value) {
  for (int e = tid; e < rows * kSsdTile; e += kSsdThreads)
    tile[e / kSsdTile][e % kSsdTile] = value(e / kSsdTile, e % kSsdTile);
}

/// Thread `tid`'s R x C entries of m (every kSsdGrid-th row and column)
/// plus Σ_k a[r][k]·b[c][k] over the staged tiles' kSsdTile columns; from
/// zero when `first`.
template <int R, int C> SL_HD void ssdAccumulate(SsdShared &sh, int tid, bool first) {
  int ti = tid / kSsdGrid, tj = tid % kSsdGrid;
  float acc[R][C];
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < C; ++j)
      acc[i][j] = first ? 0.0f : sh.m[ti + kSsdGrid * i][tj + kSsdGrid * j];
  ssdProduct(&sh.a[0][0], kSsdTile + 1, 1, &sh.b[0][0], 1, kSsdTile + 1, kSsdTile, tid, acc);
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < C; ++j)
      sh.m[ti + kSsdGrid * i][tj + kSsdGrid * j] = acc[i][j];
}

/// Token t's column `col` of a [B*S, width] tensor stored as T (row
/// stride `width`, the item's columns from `offset`), widened; 0 past the
/// chunk's tokens or `limit`.
template <typename T>
SL_HD float ssdTokenValue(const T *v, const SsdChunk &at, int64_t width, int64_t offset,
                          int64_t limit, int t, int64_t col) {
  return t < at.length && col < limit ? loadElement(v, (at.firstRow + t) * width + offset + col)
                                      : 0.0f;
}

/// Thread `tid`'s entries of m (kSsdGrid-th rows and columns, 4 x 4) made
/// from the sums C_t·B_s into the CPU's within-chunk matrix:
/// (C_t·B_s) exp(cum_t - cum_s) dt_s in double, rounded to f32, zero above
/// the diagonal and past the chunk's tokens.
SL_HD void ssdMask(SsdShared &sh, int64_t length, int tid) {
  int ti = tid / kSsdGrid, tj = tid % kSsdGrid;
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      int t = ti + kSsdGrid * i, s = tj + kSsdGrid * j;
      float &v = sh.m[t][s];
      v = s <= t && t < length ? (float)(v * exp(sh.cum[t] - sh.cum[s]) * sh.step[s]) : 0.0f;
    }
}

/// (b) The block of item `item`: the chunk's tokens' own output into y, and
/// the state they add (from zero) into the item's state of scratch.
template <typename Block, typename T, typename W>
SL_HD void ssdChunkBlock(Block &block, const SsdArgsOf<T, W> &a, SsdShared &sh, int64_t item) {
  const SsdChunk at = ssdChunkAt(a, item);
  const int64_t ldx = a.NH * a.P, ldbc = a.G * a.N, L = at.length;
  block.each([&](int tid) {
    if (tid < kSsdChunk) {
      sh.cum[tid] = a.cum[item * kSsdChunk + tid];
      sh.step[tid] = a.step[item * kSsdChunk + tid];
      // What token tid adds to the state, decayed to the chunk's end.
      sh.factor[tid] = exp(a.cum[item * kSsdChunk + kSsdChunk - 1] - sh.cum[tid]) * sh.step[tid];
    }
  });
  // m = C·Bᵀ over the chunk's tokens, kSsdTile state entries at a time
  // (for y alone: with y nullptr, the backward runs this kernel for the
  // added states).
  for (int64_t n0 = 0; a.y && n0 < a.N; n0 += kSsdTile) {
    block.each([&](int tid) {
      int64_t off = at.g * a.N + n0, limit = a.N - n0;
      ssdStage(sh.a, kSsdChunk, tid,
               [&](int t, int k) { return ssdTokenValue(a.Cm, at, ldbc, off, limit, t, k); });
      ssdStage(sh.b, kSsdChunk, tid,
               [&](int s, int k) { return ssdTokenValue(a.Bm, at, ldbc, off, limit, s, k); });
    });
    block.each([&](int tid) { ssdAccumulate<4, 4>(sh, tid, n0 == 0); });
  }
  if (a.y)
    block.each([&](int tid) { ssdMask(sh, L, tid); });
  for (int64_t p0 = 0; p0 < a.P; p0 += kSsdTile) {
    block.each([&](int tid) {
      ssdStage(sh.a, kSsdChunk, tid, [&](int s, int k) {
        return ssdTokenValue(a.x, at, ldx, at.h * a.P + p0, a.P - p0, s, k);
      });
    });
    // y_t = Σ_s m[t][s] x_s over this tile's head-dim entries.
    if (a.y)
      block.each([&](int tid) {
        float acc[4][2] = {};
        ssdProduct(&sh.m[0][0], kSsdChunk + 1, 1, &sh.a[0][0], kSsdTile + 1, 1, (int)L, tid, acc);
        int ti = tid / kSsdGrid, tj = tid % kSsdGrid;
        for (int i = 0; i < 4; ++i)
          for (int j = 0; j < 2; ++j) {
            int64_t t = ti + kSsdGrid * i, p = p0 + tj + kSsdGrid * j;
            if (t < L && p < a.P)
              ssdPartial(a)[(at.firstRow + t) * ldx + at.h * a.P + p] = acc[i][j];
          }
      });
    // The added state [p, n] = Σ_s x_s[p] · factor_s B_s[n] (the factor's
    // product with B in double, rounded to f32, as the CPU's).
    for (int64_t n0 = 0; n0 < a.N; n0 += kSsdTile) {
      block.each([&](int tid) {
        int64_t off = at.g * a.N + n0, limit = a.N - n0;
        ssdStage(sh.b, kSsdChunk, tid, [&](int s, int k) {
          return (float)(sh.factor[s] * ssdTokenValue(a.Bm, at, ldbc, off, limit, s, k));
        });
      });
      block.each([&](int tid) {
        float acc[2][2] = {};
        ssdProduct(&sh.a[0][0], 1, kSsdTile + 1, &sh.b[0][0], kSsdTile + 1, 1, (int)L, tid, acc);
        int ti = tid / kSsdGrid, tj = tid % kSsdGrid;
        float *state = a.states + item * a.P * a.N;
        for (int i = 0; i < 2; ++i)
          for (int j = 0; j < 2; ++j) {
            int64_t p = p0 + ti + kSsdGrid * i, n = n0 + tj + kSsdGrid * j;
            if (p < a.P && n < a.N)
              state[p * a.N + n] = acc[i][j];
          }
      });
    }
  }
}

/// (c) State entry `e` (of sequences x NH x P·N, the entry fastest): from
/// state_in (or zero) over the sequence's chunks in order, each chunk's added
/// state in scratch replaced by the state entering the chunk, the carried
/// one decayed by exp(last) in f32 as on the CPU; the final state into
/// state_out and, from entry 0, exp(Σ last) into decay_out.
template <typename T, typename W> SL_HD void ssdCarry(const SsdArgsOf<T, W> &a, int64_t e) {
  int64_t PN = a.P * a.N, j = e % PN, h = (e / PN) % a.NH, q = e / (PN * a.NH);
  Sequence at = sequenceAt(q, a.B, a.S, a.chunks);
  int64_t chunks = ssdChunksOf(at.length), slot = (at.stateSlot * a.NH + h) * PN + j;
  float carry = a.stateIn ? load(a.stateIn, a.stateInType, slot) : 0.0f;
  double total = 0.0;
  for (int64_t c = 0; c < chunks; ++c) {
    int64_t item = (q * chunks + c) * a.NH + h;
    double last = a.cum[item * kSsdChunk + kSsdChunk - 1];
    float &state = a.states[item * PN + j];
    float added = state;
    state = carry;
    carry = carry * (float)exp(last) + added;
    total += last;
  }
  if (a.stateOut)
    store(a.stateOut, a.stateOutType, slot, carry);
  if (a.decayOut && j == 0)
    store(a.decayOut, a.decayOutType, at.stateSlot * a.NH + h, (float)exp(total));
}

/// (d) The block of item `item`: y_t = (b)'s share + (exp(cum_t) C_t,
/// rounded to f32) · (the state entering the chunk)[p, :] + D x_t, rounded
/// to T, kSsdTile head-dim entries at a time, the sums over the state's
/// entries kept in m.
template <typename Block, typename T, typename W>
SL_HD void ssdOutputBlock(Block &block, const SsdArgsOf<T, W> &a, SsdShared &sh, int64_t item) {
  const SsdChunk at = ssdChunkAt(a, item);
  const int64_t ldx = a.NH * a.P, ldbc = a.G * a.N, L = at.length;
  const float *entering = a.states + item * a.P * a.N;
  block.each([&](int tid) {
    if (tid < kSsdChunk)
      sh.factor[tid] = exp(a.cum[item * kSsdChunk + tid]);
  });
  for (int64_t p0 = 0; p0 < a.P; p0 += kSsdTile) {
    for (int64_t n0 = 0; n0 < a.N; n0 += kSsdTile) {
      block.each([&](int tid) {
        int64_t off = at.g * a.N + n0, limit = a.N - n0;
        ssdStage(sh.a, kSsdChunk, tid, [&](int t, int k) {
          return (float)(sh.factor[t] * ssdTokenValue(a.Cm, at, ldbc, off, limit, t, k));
        });
        ssdStage(sh.b, kSsdTile, tid, [&](int p, int k) {
          return p0 + p < a.P && n0 + k < a.N ? entering[(p0 + p) * a.N + n0 + k] : 0.0f;
        });
      });
      block.each([&](int tid) { ssdAccumulate<4, 2>(sh, tid, n0 == 0); });
    }
    block.each([&](int tid) {
      int ti = tid / kSsdGrid, tj = tid % kSsdGrid;
      float d = a.D ? loadElement(a.D, at.h) : 0.0f;
      const float *partial = ssdPartial(a);
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 2; ++j) {
          int64_t t = ti + kSsdGrid * i, p = p0 + tj + kSsdGrid * j;
          if (t < L && p < a.P) {
            int64_t yi = (at.firstRow + t) * ldx + at.h * a.P + p;
            storeElement(a.y, yi,
                         partial[yi] + sh.m[ti + kSsdGrid * i][tj + kSsdGrid * j] +
                             d * loadElement(a.x, yi));
          }
        }
    });
  }
}

} // namespace shardline::rt::cuda::arith

#endif
