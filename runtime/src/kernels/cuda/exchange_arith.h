//===- exchange_arith.h - arithmetic around the kernels' exchanges -*- C++ -*-===//
//
// What the CUDA kernels around the kernels' own exchanges compute per
// element or lane, host and device alike (as arith.h): the sums of the
// transitions that reduce (a 16-bit reduce-scatter's pieces), ring attention's
// log-sum-exp merge of each step, the state exchange's combination of the
// gathered chunk summaries, the scans' corrections by the true initial
// state, and the vocabulary-parallel cross-entropy's per-token pieces and
// terms. runtime/test/cuda_arith_test.cpp runs them against the CPU kernels.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CUDA_EXCHANGE_ARITH_H
#define SHARDLINE_RUNTIME_KERNELS_CUDA_EXCHANGE_ARITH_H

#include "kernels/cuda/arith.h"

namespace shardline::rt::cuda::arith {

// -- the transitions that sum ----------------------------------------------------

/// Element k of a sum over a group of g members, from the pieces each
/// member sent this one, landed in group order ([g, n], stored as T): the
/// f32 sum from member 0's term in group order, as the host collectives
/// form it (comm/group.h, sumTerms); the caller rounds it once as it stores.
template <typename T> SL_HD float orderedSum(const T *pieces, int64_t g, int64_t n, int64_t k) {
  float acc = loadElement(pieces, k);
  for (int64_t j = 1; j < g; ++j)
    acc += loadElement(pieces, j * n + k);
  return acc;
}

// -- ring attention ---------------------------------------------------------------

/// Query row `row` (of B*Sq*HQ, as out's rows of D) of the merge of two
/// partial attentions by their log-sum-exps (lse [B, HQ, Sq]): the weights
/// exp(lse_x - lse) in double, lse = log(exp(lse_a) + exp(lse_b)); a row
/// that saw no key in either is zero with lse -inf (kernels/cpu,
/// attention_merge). out and lse may be outA and lseA.
SL_HD void mergeRow(const float *outA, const float *lseA, const float *outB, const float *lseB,
                    int64_t Sq, int64_t HQ, int64_t D, int64_t row, float *out, float *lse) {
  int64_t h = row % HQ, i = (row / HQ) % Sq, b = row / (HQ * Sq);
  int64_t li = (b * HQ + h) * Sq + i, base = row * D;
  double la = lseA[li], lb = lseB[li], m = la > lb ? la : lb;
  if (m == -INFINITY) {
    for (int64_t e = 0; e < D; ++e)
      out[base + e] = 0.0f;
    lse[li] = -INFINITY;
    return;
  }
  double l = m + log(exp(la - m) + exp(lb - m));
  double wa = exp(la - l), wb = exp(lb - l);
  for (int64_t e = 0; e < D; ++e)
    out[base + e] = (float)(wa * outA[base + e] + wb * outB[base + e]);
  lse[li] = (float)l;
}

// -- local attention over a halo ---------------------------------------------------

/// The keys of a chunk of local attention that starts at global position
/// `start` with H halo rows before it: the first `skip` halo rows lie before
/// position 0 and are left out, the `kept` others come before the chunk's
/// own keys, the first of them at position start - kept (kernels/cpu,
/// detail::LocalWindow).
struct HaloWindow {
  int64_t skip, kept;
};
SL_HD HaloWindow haloWindow(int64_t H, int64_t start) {
  int64_t skip = H - start > 0 ? H - start : 0;
  return {skip, H - skip};
}

// -- the scans' state exchange ------------------------------------------------------

/// Entry j (of stateSize) of the initial state of global chunk `chunk`: the
/// summaries of the chunks before it folded in sequence order from zero,
/// cur = decay·cur + final in double (kernels/cpu, scan_combine_states).
/// Chunk c's final state starts at gathered[stateAt[c]], its decays (one per
/// `bcast` state entries) at gathered[decayAt[c]], stored as T.
template <typename T>
SL_HD float chunkInitialState(const T *gathered, const int64_t *stateAt, const int64_t *decayAt,
                              int64_t chunk, int64_t bcast, int64_t j) {
  double cur = 0.0;
  for (int64_t c = 0; c < chunk; ++c)
    cur = (double)loadElement(gathered, decayAt[c] + j / bcast) * cur +
          loadElement(gathered, stateAt[c] + j);
  return (float)cur;
}

// -- the scans' corrections ----------------------------------------------------------

/// What the SSD correction reads and writes: y0 and y [B, S, NH*P], dt
/// [B, S, NH] (before the prelude), C [B, S, G*N], stored as T; a_log and
/// dt_bias [NH] as W; each sequence's initial state init [slots, NH, P, N]
/// (slot c*B + b, as the scans number them) of initType.
template <typename T, typename W> struct SsdCorrectArgsOf {
  const T *y0;
  const void *init;
  const T *Cm, *dt;
  const W *aLog, *dtBias;
  int64_t B, S, chunks, NH, P, G, N;
  T *y;
  Type initType = Type::F32;
};
using SsdCorrectArgs = SsdCorrectArgsOf<float, float>;

/// Lane `lane` (of B*chunks*NH*P) of the SSD correction: one head-dim
/// element p of one head of one sequence adds, at each token t,
/// exp(Σ_{u≤t} dt_u·A)·C_t·h0[p] (double) to the scan from zero
/// (kernels/cpu, ssd_state_correct); every value widened as it is loaded,
/// y rounded to T once.
template <typename T, typename W>
SL_HD void ssdCorrectLane(const SsdCorrectArgsOf<T, W> &a, int64_t lane) {
  int64_t p = lane % a.P, h = (lane / a.P) % a.NH, q = lane / (a.P * a.NH);
  int64_t g = h / (a.NH / a.G);
  Sequence at = sequenceAt(q, a.B, a.S, a.chunks);
  const int64_t h0 = ((at.stateSlot * a.NH + h) * a.P + p) * a.N;
  float A = ssdRate(loadElement(a.aLog, h)), bias = loadElement(a.dtBias, h);
  double cum = 0.0;
  for (int64_t t = 0; t < at.length; ++t) {
    int64_t row = at.firstRow + t;
    cum += (double)ssdStep(loadElement(a.dt, row * a.NH + h), bias) * A;
    const int64_t ct = (row * a.G + g) * a.N;
    double acc = 0.0;
    for (int64_t n = 0; n < a.N; ++n)
      acc += (double)loadElement(a.Cm, ct + n) * load(a.init, a.initType, h0 + n);
    int64_t yi = (row * a.NH + h) * a.P + p;
    storeElement(a.y, yi, (float)(loadElement(a.y0, yi) + exp(cum) * acc));
  }
}

/// What the RG-LRU correction reads and writes: y0, x and y [B, S, W]
/// stored as T, the decay gate's wa, ba and lambda [W] as P, init [slots,
/// W] of initType.
template <typename T, typename P> struct RglruCorrectArgsOf {
  const T *y0;
  const void *init;
  const T *x;
  const P *wa, *ba, *lambda;
  int64_t B, S, chunks, W;
  T *y;
  Type initType = Type::F32;
};
using RglruCorrectArgs = RglruCorrectArgsOf<float, float>;

/// Lane `lane` (of B*chunks*W) of the RG-LRU correction: one channel of one
/// sequence adds exp(Σ_{u≤t} sigmoid(gate_a)·base)·h0 (double) at each
/// token (kernels/cpu, rglru_state_correct); every value widened as it is
/// loaded, y rounded to T once.
template <typename T, typename P>
SL_HD void rglruCorrectLane(const RglruCorrectArgsOf<T, P> &a, int64_t lane) {
  int64_t w = lane % a.W;
  Sequence at = sequenceAt(lane / a.W, a.B, a.S, a.chunks);
  const float wa = loadElement(a.wa, w), ba = loadElement(a.ba, w);
  double h0 = load(a.init, a.initType, at.stateSlot * a.W + w),
         base = rglruLogBase(loadElement(a.lambda, w), 8.0f), cum = 0.0;
  for (int64_t t = 0; t < at.length; ++t) {
    int64_t i = (at.firstRow + t) * a.W + w;
    cum += sigmoid(rglruGate(wa, loadElement(a.x, i), ba)) * base;
    storeElement(a.y, i, (float)(loadElement(a.y0, i) + exp(cum) * h0));
  }
}

// -- vocabulary-parallel cross-entropy ------------------------------------------------

/// A token's label's logit if this shard (vocabulary [offset, offset + V))
/// holds it, else 0 (kernels/cpu, xent_local_target); the row stored as T.
template <typename T>
SL_HD float localTarget(const T *row, int32_t label, int64_t V, int64_t offset) {
  int64_t v = (int64_t)label - offset;
  return v >= 0 && v < V ? loadElement(row, v) : 0.0f;
}

/// Token t's term from every shard's pieces, gathered as `shards` blocks of
/// [sums T, targets T]: log(Σ sums) + max - Σ targets, summed over the
/// shards in group order in double (kernels/cpu, xent_combine_total).
SL_HD double shardedTerm(const float *pieces, int64_t shards, int64_t T, float gmax, int64_t t) {
  double sum = 0.0, target = 0.0;
  for (int64_t m = 0; m < shards; ++m) {
    sum += pieces[m * 2 * T + t];
    target += pieces[m * 2 * T + T + t];
  }
  return log(sum) + (double)gmax - target;
}

} // namespace shardline::rt::cuda::arith

#endif
