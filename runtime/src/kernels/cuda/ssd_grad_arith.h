//===- ssd_grad_arith.h - the chunked SSD scan's backward, host and device -*- C++ -*-===//
//
// The backward of the SSD scan (ssd_arith.h) in the same chunks of
// kSsdChunk tokens, a block per (sequence, chunk, head) as the forward's.
// With E_c the state entering chunk c and G_c the cotangent of that state,
// the chunks' states come from the forward's own kernels, and the
// cotangents run the other way:
//   G_c = exp(last_c) G_{c+1} + Σ_t exp(cum_t) dy_t C_tᵀ,   G_chunks = dstate.
// Within chunk c, with G = G_{c+1}, e(t, s) = exp(cum_t - cum_s) for s ≤ t,
// CB[t][s] = C_t·B_s and dyx[t][s] = dy_t·x_s:
//   dx_s  = Σ_t CB[t][s] e dt_s dy_t + dt_s exp(last - cum_s) G B_s + D dy_s
//   dB_s  = Σ_t e dt_s dyx[t][s] C_t + dt_s Z_s,  Z_s = exp(last - cum_s) Gᵀ x_s
//   dC_t  = Σ_s e dt_s dyx[t][s] B_s + exp(cum_t) Eᵀ dy_t
// and the log decay l_τ = dt_τ A of token τ reaches every term whose decay
// spans it:
//   dl_τ  = Σ_{t≥τ} Σ_{s<τ} K[t][s] dt_s + Σ_{t≥τ} q_t + exp(last) <G, E>
//           + Σ_{s<τ} dt_s r_s + ddecay · decay,
// with K[t][s] = CB e dyx, q_t = C_t·(exp(cum_t) Eᵀ dy_t) and r_s = B_s·Z_s;
// the step's own cotangent is Σ_t K[t][s] + r_s + A dl_s, and dA sums
// dt_τ dl_τ. The double sum is taken as Σ_{t≥τ} (row sum of K·dt at t -
// column sum at t), each in double.
//
// The kernels, as kernels/cuda/grad_sequence.cu queues them:
//   (a)-(c) the forward's ssdChunkCum, ssdChunkBlock (no y) and ssdCarry
//       (no state or decay out): the steps, the running log decays and the
//       state entering every chunk;
//   (e) ssdCotangentBlock, a block an item: Σ_t exp(cum_t) dy_t C_tᵀ;
//   (f) ssdCotangentCarry, a thread per (sequence, head, state entry): the
//       cotangents from dstate back over the chunks, each chunk's own sum
//       replaced by the cotangent leaving it; dstate_in; ddecay · decay;
//   (g) ssdGradBlock, a block an item: dx and the step's cotangent of its
//       tokens, dB and dC of its head, its share of dA and dD;
//   (h) ssdGradHeads, a thread per (token, group, state entry): dB and dC
//       summed over the group's heads in head order (skipped with one head
//       a group: (g) writes them);
//   (i) ssdGradRates, a thread a head: dA and dD summed over the chunks of a
//       sequence in double and added once per sequence in f32, as the CPU's
//       table adds a call's.
// Products are f32 FMAs over shared-memory tiles as the forward's; the
// decays, the masked matrices' factors and every reduction over tokens are
// double. (g) keeps three 64 x 64 matrices' worth of shared memory and more:
// SsdGradShared, 63 KiB, allocated dynamically (the kernels opt in above
// 48 KiB).
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CUDA_SSD_GRAD_ARITH_H
#define SHARDLINE_RUNTIME_KERNELS_CUDA_SSD_GRAD_ARITH_H

#include "kernels/cuda/ssd_arith.h"

namespace shardline::rt::cuda::arith {

/// What the backward reads and writes. `fwd` is the forward's arguments
/// over the same tensors (x, the raw dt, dt_bias, a_log, B, C, D, state_in;
/// y, state_out and decay_out nullptr) and its scratch; dy [B, S, NH*P],
/// dstate [slots, NH, P, N] and ddecay [slots, NH] (nullptr: zero). Written:
/// dx [B, S, NH*P]; ddt [B*S, NH], the cotangent of the prelude's dt
/// (softplus(dt + dt_bias)); dA [NH], that of A = -exp(a_log); dB, dC
/// [B, S, G*N]; dD [NH] and dstateIn [slots, NH, P, N] when not nullptr.
/// Scratch: cot, a state [P, N] an item; dBh, dCh [B*S, NH, N] (dB and dC
/// themselves with one head a group); partA, partD a double an item;
/// decayCot [sequences, NH].
struct SsdGradArgs {
  SsdArgs fwd;
  const float *dy, *dstate, *ddecay;
  float *dx, *ddt, *dA, *dB, *dC, *dD, *dstateIn;
  float *cot, *dBh, *dCh;
  double *partA, *partD, *decayCot;
};

/// (g)'s shared memory: CB, then the masked Mx = CB e dt; dyx, then the
/// masked Q = e dt dyx; two staged tiles and a tile of sums kept across
/// phases (`out`); per token its running log decay, step, exp(last - cum),
/// exp(cum), the step's cotangent so far, the dl terms (dcum: row minus
/// column sum of K·dt; q; r), and a double per thread for block sums.
struct SsdGradShared {
  float m[kSsdChunk][kSsdChunk + 1];
  float q[kSsdChunk][kSsdChunk + 1];
  float a[kSsdChunk][kSsdTile + 1];
  float b[kSsdChunk][kSsdTile + 1];
  float out[kSsdChunk][kSsdTile + 1];
  double cum[kSsdChunk], expLast[kSsdChunk], expCum[kSsdChunk], direct[kSsdChunk];
  double dcum[kSsdChunk], qv[kSsdChunk], rv[kSsdChunk];
  double sums[kSsdThreads];
  double ge;
  float step[kSsdChunk];
};

/// out[r][c] (thread `tid`'s R x C entries: every kSsdGrid-th row and
/// column) plus Σ_k A(r, k)·B(k, c) as ssdProduct takes them; from zero when
/// `first`.
template <int R, int C>
SL_HD void ssdGradAccumulate(float (*out)[kSsdTile + 1], const float *a, int ar, int ak,
                             const float *b, int bk, int bc, int K, int tid, bool first) {
  int ti = tid / kSsdGrid, tj = tid % kSsdGrid;
  float acc[R][C];
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < C; ++j)
      acc[i][j] = first ? 0.0f : out[ti + kSsdGrid * i][tj + kSsdGrid * j];
  ssdProduct(a, ar, ak, b, bk, bc, K, tid, acc);
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < C; ++j)
      out[ti + kSsdGrid * i][tj + kSsdGrid * j] = acc[i][j];
}

/// m[t][s] (every kSsdGrid-th row and column of thread `tid`) plus
/// Σ_k a[t][k]·b[s][k] over the staged tiles; from zero when `first`.
SL_HD void ssdGradSquare(float (*m)[kSsdChunk + 1], const SsdGradShared &sh, int tid, bool first) {
  int ti = tid / kSsdGrid, tj = tid % kSsdGrid;
  float acc[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j)
      acc[i][j] = first ? 0.0f : m[ti + kSsdGrid * i][tj + kSsdGrid * j];
  ssdProduct(&sh.a[0][0], kSsdTile + 1, 1, &sh.b[0][0], 1, kSsdTile + 1, kSsdTile, tid, acc);
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j)
      m[ti + kSsdGrid * i][tj + kSsdGrid * j] = acc[i][j];
}

/// The [P, N] state `state` as a staged tile transposed: tile[n][k] =
/// state[p0 + k][n0 + n], 0 outside [P, N].
SL_HD void ssdStageStateT(SsdTile tile, const float *state, int64_t P, int64_t N, int64_t p0,
                          int64_t n0, int tid) {
  ssdStage(tile, kSsdTile, tid, [&](int n, int k) {
    return p0 + k < P && n0 + n < N ? state[(p0 + k) * N + n0 + n] : 0.0f;
  });
}

/// The [P, N] state `state` as a staged tile: tile[p][k] = state[p0 + p][n0 + k].
SL_HD void ssdStageState(SsdTile tile, const float *state, int64_t P, int64_t N, int64_t p0,
                         int64_t n0, int tid) {
  ssdStage(tile, kSsdTile, tid, [&](int p, int k) {
    return p0 + p < P && n0 + k < N ? state[(p0 + p) * N + n0 + k] : 0.0f;
  });
}

/// The sum of the block's sums[0..kSsdThreads) in thread order (one thread's
/// loop: the same bits in any launch).
SL_HD double ssdBlockSum(const SsdGradShared &sh) {
  double total = 0.0;
  for (int i = 0; i < kSsdThreads; ++i)
    total += sh.sums[i];
  return total;
}

/// (e) Item `item`'s cot = Σ_t dy_t[p] · (exp(cum_t) C_t[n], rounded to f32),
/// kSsdTile x kSsdTile entries at a time, as the forward's added state.
template <typename Block>
SL_HD void ssdCotangentBlock(Block &block, const SsdGradArgs &g, SsdGradShared &sh, int64_t item) {
  const SsdArgs &a = g.fwd;
  const SsdChunk at = ssdChunkAt(a, item);
  const int64_t ldx = a.NH * a.P, ldbc = a.G * a.N, L = at.length;
  block.each([&](int tid) {
    if (tid < kSsdChunk)
      sh.expCum[tid] = exp(a.cum[item * kSsdChunk + tid]);
  });
  for (int64_t p0 = 0; p0 < a.P; p0 += kSsdTile) {
    block.each([&](int tid) {
      ssdStage(sh.a, kSsdChunk, tid, [&](int t, int k) {
        return ssdTokenValue(g.dy, at, ldx, at.h * a.P + p0, a.P - p0, t, k);
      });
    });
    for (int64_t n0 = 0; n0 < a.N; n0 += kSsdTile) {
      block.each([&](int tid) {
        int64_t off = at.g * a.N + n0, limit = a.N - n0;
        ssdStage(sh.b, kSsdChunk, tid, [&](int t, int k) {
          return (float)(sh.expCum[t] * ssdTokenValue(a.Cm, at, ldbc, off, limit, t, k));
        });
      });
      block.each([&](int tid) {
        float acc[2][2] = {};
        ssdProduct(&sh.a[0][0], 1, kSsdTile + 1, &sh.b[0][0], kSsdTile + 1, 1, (int)L, tid, acc);
        int ti = tid / kSsdGrid, tj = tid % kSsdGrid;
        float *cot = g.cot + item * a.P * a.N;
        for (int i = 0; i < 2; ++i)
          for (int j = 0; j < 2; ++j) {
            int64_t p = p0 + ti + kSsdGrid * i, n = n0 + tj + kSsdGrid * j;
            if (p < a.P && n < a.N)
              cot[p * a.N + n] = acc[i][j];
          }
      });
    }
  }
}

/// (f) State entry `e` (of sequences x NH x P·N, the entry fastest): from
/// dstate (or zero) back over the sequence's chunks, each chunk's own sum in
/// cot replaced by the cotangent leaving the chunk, the carried one decayed
/// by exp(last) in f32; the cotangent of state_in into dstateIn and, from
/// entry 0, ddecay · exp(Σ last) (the cotangent every log decay of the
/// sequence takes from decay_out) into decayCot.
SL_HD void ssdCotangentCarry(const SsdGradArgs &g, int64_t e) {
  const SsdArgs &a = g.fwd;
  int64_t PN = a.P * a.N, j = e % PN, h = (e / PN) % a.NH, q = e / (PN * a.NH);
  Sequence at = sequenceAt(q, a.B, a.S, a.chunks);
  int64_t chunks = ssdChunksOf(at.length), slot = (at.stateSlot * a.NH + h) * PN + j;
  float carry = g.dstate ? g.dstate[slot] : 0.0f;
  double total = 0.0;
  for (int64_t c = chunks - 1; c >= 0; --c) {
    int64_t item = (q * chunks + c) * a.NH + h;
    double last = a.cum[item * kSsdChunk + kSsdChunk - 1];
    float &cell = g.cot[item * PN + j];
    float own = cell;
    cell = carry;
    carry = carry * (float)exp(last) + own;
    total += last;
  }
  if (g.dstateIn)
    g.dstateIn[slot] = carry;
  if (j == 0)
    g.decayCot[q * a.NH + h] = g.ddecay ? g.ddecay[at.stateSlot * a.NH + h] * exp(total) : 0.0;
}

/// (g) The block of item `item` (the header's formulas): dx and ddt of its
/// tokens, dB and dC of its head into dBh and dCh, its dl·dt and dy·x sums
/// into partA and partD.
template <typename Block>
SL_HD void ssdGradBlock(Block &block, const SsdGradArgs &g, SsdGradShared &sh, int64_t item) {
  const SsdArgs &a = g.fwd;
  const SsdChunk at = ssdChunkAt(a, item);
  const int64_t ldx = a.NH * a.P, ldbc = a.G * a.N, ldh = a.NH * a.N, L = at.length;
  const float *entering = a.states + item * a.P * a.N, *leaving = g.cot + item * a.P * a.N;
  const double A = ssdRate(a.aLog[at.h]);
  block.each([&](int tid) {
    if (tid < kSsdChunk) {
      double cum = a.cum[item * kSsdChunk + tid], last = a.cum[item * kSsdChunk + kSsdChunk - 1];
      sh.cum[tid] = cum;
      sh.step[tid] = a.step[item * kSsdChunk + tid];
      sh.expLast[tid] = exp(last - cum);
      sh.expCum[tid] = exp(cum);
      sh.rv[tid] = 0.0;
      sh.qv[tid] = 0.0;
    }
  });
  // m = C·Bᵀ over the state's entries, q = dy·xᵀ over the head dim.
  for (int64_t n0 = 0; n0 < a.N; n0 += kSsdTile) {
    block.each([&](int tid) {
      int64_t off = at.g * a.N + n0, limit = a.N - n0;
      ssdStage(sh.a, kSsdChunk, tid,
               [&](int t, int k) { return ssdTokenValue(a.Cm, at, ldbc, off, limit, t, k); });
      ssdStage(sh.b, kSsdChunk, tid,
               [&](int s, int k) { return ssdTokenValue(a.Bm, at, ldbc, off, limit, s, k); });
    });
    block.each([&](int tid) { ssdGradSquare(sh.m, sh, tid, n0 == 0); });
  }
  for (int64_t p0 = 0; p0 < a.P; p0 += kSsdTile) {
    block.each([&](int tid) {
      int64_t off = at.h * a.P + p0, limit = a.P - p0;
      ssdStage(sh.a, kSsdChunk, tid,
               [&](int t, int k) { return ssdTokenValue(g.dy, at, ldx, off, limit, t, k); });
      ssdStage(sh.b, kSsdChunk, tid,
               [&](int s, int k) { return ssdTokenValue(a.x, at, ldx, off, limit, s, k); });
    });
    block.each([&](int tid) { ssdGradSquare(sh.q, sh, tid, p0 == 0); });
  }
  // K[t][s] = CB e dyx (s ≤ t < L): token t's row sum of K·dt minus its
  // column sum of K·dt (dl's first term, summed from t on later), and its
  // column sum of K (its step's direct cotangent).
  block.each([&](int tid) {
    if (tid < L) {
      int t = tid;
      double row = 0.0, column = 0.0;
      for (int s = 0; s <= t; ++s)
        row += (double)sh.m[t][s] * exp(sh.cum[t] - sh.cum[s]) * sh.q[t][s] * sh.step[s];
      for (int u = t; u < L; ++u)
        column += (double)sh.m[u][t] * exp(sh.cum[u] - sh.cum[t]) * sh.q[u][t];
      sh.direct[t] = column;
      sh.dcum[t] = row - column * sh.step[t];
    }
  });
  // m becomes Mx = CB e dt_s, q becomes Q = e dt_s dyx (masked).
  block.each([&](int tid) {
    int ti = tid / kSsdGrid, tj = tid % kSsdGrid;
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) {
        int t = ti + kSsdGrid * i, s = tj + kSsdGrid * j;
        bool in = s <= t && t < L;
        double f = in ? exp(sh.cum[t] - sh.cum[s]) * sh.step[s] : 0.0;
        sh.m[t][s] = in ? (float)(sh.m[t][s] * f) : 0.0f;
        sh.q[t][s] = in ? (float)(sh.q[t][s] * f) : 0.0f;
      }
  });
  // dx, kSsdTile head-dim entries at a time: the state's share
  // dt_s exp(last - cum_s) G B_s, then Mxᵀ dy, then D dy.
  for (int64_t p0 = 0; p0 < a.P; p0 += kSsdTile) {
    for (int64_t n0 = 0; n0 < a.N; n0 += kSsdTile) {
      block.each([&](int tid) {
        int64_t off = at.g * a.N + n0, limit = a.N - n0;
        ssdStage(sh.a, kSsdChunk, tid, [&](int s, int k) {
          return (float)(sh.step[s] * sh.expLast[s] *
                         ssdTokenValue(a.Bm, at, ldbc, off, limit, s, k));
        });
        ssdStageState(sh.b, leaving, a.P, a.N, p0, n0, tid);
      });
      block.each([&](int tid) {
        ssdGradAccumulate<4, 2>(sh.out, &sh.a[0][0], kSsdTile + 1, 1, &sh.b[0][0], 1, kSsdTile + 1,
                                kSsdTile, tid, n0 == 0);
      });
    }
    block.each([&](int tid) {
      ssdStage(sh.a, kSsdChunk, tid, [&](int t, int k) {
        return ssdTokenValue(g.dy, at, ldx, at.h * a.P + p0, a.P - p0, t, k);
      });
    });
    block.each([&](int tid) {
      ssdGradAccumulate<4, 2>(sh.out, &sh.m[0][0], 1, kSsdChunk + 1, &sh.a[0][0], kSsdTile + 1, 1,
                              (int)L, tid, false);
    });
    block.each([&](int tid) {
      int ti = tid / kSsdGrid, tj = tid % kSsdGrid;
      float d = a.D ? a.D[at.h] : 0.0f;
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 2; ++j) {
          int64_t s = ti + kSsdGrid * i, p = p0 + tj + kSsdGrid * j;
          if (s < L && p < a.P) {
            int64_t xi = (at.firstRow + s) * ldx + at.h * a.P + p;
            g.dx[xi] = sh.out[ti + kSsdGrid * i][tj + kSsdGrid * j] + d * g.dy[xi];
          }
        }
    });
  }
  // dB, kSsdTile state entries at a time: Z = exp(last - cum_s) Gᵀ x_s (r
  // takes B_s·Z_s), then dt_s Z_s + Σ_t Q[t][s] C_t.
  for (int64_t n0 = 0; n0 < a.N; n0 += kSsdTile) {
    for (int64_t p0 = 0; p0 < a.P; p0 += kSsdTile) {
      block.each([&](int tid) {
        int64_t off = at.h * a.P + p0, limit = a.P - p0;
        ssdStage(sh.a, kSsdChunk, tid, [&](int s, int k) {
          return (float)(sh.expLast[s] * ssdTokenValue(a.x, at, ldx, off, limit, s, k));
        });
        ssdStageStateT(sh.b, leaving, a.P, a.N, p0, n0, tid);
      });
      block.each([&](int tid) {
        ssdGradAccumulate<4, 2>(sh.out, &sh.a[0][0], kSsdTile + 1, 1, &sh.b[0][0], 1, kSsdTile + 1,
                                kSsdTile, tid, p0 == 0);
      });
    }
    block.each([&](int tid) {
      if (tid < L) {
        int s = tid;
        double r = 0.0;
        for (int k = 0; k < kSsdTile && n0 + k < a.N; ++k) {
          r += (double)a.Bm[(at.firstRow + s) * ldbc + at.g * a.N + n0 + k] * sh.out[s][k];
          sh.out[s][k] = (float)(sh.step[s] * sh.out[s][k]);
        }
        sh.rv[s] += r;
      }
    });
    block.each([&](int tid) {
      int64_t off = at.g * a.N + n0, limit = a.N - n0;
      ssdStage(sh.a, kSsdChunk, tid,
               [&](int t, int k) { return ssdTokenValue(a.Cm, at, ldbc, off, limit, t, k); });
    });
    block.each([&](int tid) {
      ssdGradAccumulate<4, 2>(sh.out, &sh.q[0][0], 1, kSsdChunk + 1, &sh.a[0][0], kSsdTile + 1, 1,
                              (int)L, tid, false);
    });
    block.each([&](int tid) {
      int ti = tid / kSsdGrid, tj = tid % kSsdGrid;
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 2; ++j) {
          int64_t s = ti + kSsdGrid * i, n = n0 + tj + kSsdGrid * j;
          if (s < L && n < a.N)
            g.dBh[(at.firstRow + s) * ldh + at.h * a.N + n] =
                sh.out[ti + kSsdGrid * i][tj + kSsdGrid * j];
        }
    });
  }
  // dC, kSsdTile state entries at a time: exp(cum_t) Eᵀ dy_t (q takes C_t's
  // product with it), then + Σ_s Q[t][s] B_s.
  for (int64_t n0 = 0; n0 < a.N; n0 += kSsdTile) {
    for (int64_t p0 = 0; p0 < a.P; p0 += kSsdTile) {
      block.each([&](int tid) {
        int64_t off = at.h * a.P + p0, limit = a.P - p0;
        ssdStage(sh.a, kSsdChunk, tid, [&](int t, int k) {
          return (float)(sh.expCum[t] * ssdTokenValue(g.dy, at, ldx, off, limit, t, k));
        });
        ssdStageStateT(sh.b, entering, a.P, a.N, p0, n0, tid);
      });
      block.each([&](int tid) {
        ssdGradAccumulate<4, 2>(sh.out, &sh.a[0][0], kSsdTile + 1, 1, &sh.b[0][0], 1, kSsdTile + 1,
                                kSsdTile, tid, p0 == 0);
      });
    }
    block.each([&](int tid) {
      if (tid < L) {
        int t = tid;
        double q = 0.0;
        for (int k = 0; k < kSsdTile && n0 + k < a.N; ++k)
          q += (double)a.Cm[(at.firstRow + t) * ldbc + at.g * a.N + n0 + k] * sh.out[t][k];
        sh.qv[t] += q;
      }
      int64_t off = at.g * a.N + n0, limit = a.N - n0;
      ssdStage(sh.a, kSsdChunk, tid,
               [&](int s, int k) { return ssdTokenValue(a.Bm, at, ldbc, off, limit, s, k); });
    });
    block.each([&](int tid) {
      ssdGradAccumulate<4, 2>(sh.out, &sh.q[0][0], kSsdChunk + 1, 1, &sh.a[0][0], kSsdTile + 1, 1,
                              (int)L, tid, false);
    });
    block.each([&](int tid) {
      int ti = tid / kSsdGrid, tj = tid % kSsdGrid;
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 2; ++j) {
          int64_t t = ti + kSsdGrid * i, n = n0 + tj + kSsdGrid * j;
          if (t < L && n < a.N)
            g.dCh[(at.firstRow + t) * ldh + at.h * a.N + n] =
                sh.out[ti + kSsdGrid * i][tj + kSsdGrid * j];
        }
    });
  }
  // exp(last) <G, E>, each thread a stride of the state's entries.
  block.each([&](int tid) {
    double acc = 0.0;
    for (int64_t e = tid; e < a.P * a.N; e += kSsdThreads)
      acc += (double)leaving[e] * entering[e];
    sh.sums[tid] = acc;
  });
  block.each([&](int tid) {
    if (tid == 0)
      sh.ge = exp(a.cum[item * kSsdChunk + kSsdChunk - 1]) * ssdBlockSum(sh);
  });
  const double decayCot = g.decayCot[(item / (a.NH * ssdChunksOf(a.S / a.chunks))) * a.NH + at.h];
  // Each token's dl, its step's cotangent, and the item's sums.
  block.each([&](int tid) {
    sh.sums[tid] = 0.0;
    if (tid < L) {
      int tau = tid;
      double dl = sh.ge + decayCot;
      for (int t = tau; t < L; ++t)
        dl += sh.dcum[t] + sh.qv[t];
      for (int s = 0; s < tau; ++s)
        dl += sh.step[s] * sh.rv[s];
      g.ddt[(at.firstRow + tau) * a.NH + at.h] = (float)(sh.direct[tau] + sh.rv[tau] + A * dl);
      sh.sums[tau] = dl * sh.step[tau];
    }
  });
  block.each([&](int tid) {
    if (tid == 0)
      g.partA[item] = ssdBlockSum(sh);
  });
  block.each([&](int tid) {
    double acc = 0.0;
    if (tid < L)
      for (int64_t p = 0; p < a.P; ++p) {
        int64_t xi = (at.firstRow + tid) * ldx + at.h * a.P + p;
        acc += (double)g.dy[xi] * a.x[xi];
      }
    sh.sums[tid] = acc;
  });
  block.each([&](int tid) {
    if (tid == 0)
      g.partD[item] = ssdBlockSum(sh);
  });
}

/// (h) Entry `e` of dB and dC [B*S, G*N]: the group's heads' dBh and dCh in
/// head order, f32 sums from zero as the CPU's.
SL_HD void ssdGradHeads(const SsdGradArgs &g, int64_t e) {
  const SsdArgs &a = g.fwd;
  int64_t n = e % a.N, grp = (e / a.N) % a.G, row = e / (a.N * a.G), perGroup = a.NH / a.G;
  float sumB = 0.0f, sumC = 0.0f;
  for (int64_t h = grp * perGroup; h < (grp + 1) * perGroup; ++h) {
    sumB += g.dBh[(row * a.NH + h) * a.N + n];
    sumC += g.dCh[(row * a.NH + h) * a.N + n];
  }
  g.dB[e] = sumB;
  g.dC[e] = sumC;
}

/// (i) Head h: dA[h] and dD[h] (when not nullptr), each sequence's chunks
/// summed in double and added in f32 from zero, sequences in sequenceAt's
/// order.
SL_HD void ssdGradRates(const SsdGradArgs &g, int64_t h) {
  const SsdArgs &a = g.fwd;
  int64_t chunks = ssdChunksOf(a.S / a.chunks);
  float dA = 0.0f, dD = 0.0f;
  for (int64_t q = 0; q < a.B * a.chunks; ++q) {
    double sumA = 0.0, sumD = 0.0;
    for (int64_t c = 0; c < chunks; ++c) {
      int64_t item = (q * chunks + c) * a.NH + h;
      sumA += g.partA[item];
      sumD += g.partD[item];
    }
    dA = (float)(dA + sumA);
    dD = (float)(dD + sumD);
  }
  g.dA[h] = dA;
  if (g.dD)
    g.dD[h] = dD;
}

} // namespace shardline::rt::cuda::arith

#endif
