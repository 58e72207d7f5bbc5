//===- exchange_grad_arith.h - arithmetic of the exchanges' duals -*- C++ -*-===//
//
// What the CUDA kernels around the backward of the kernels' own exchanges
// compute per element, column or lane, host and device alike (as arith.h):
// halo_add's ordered sums of the rows that come back, the state exchange's
// reverse combination of the gathered chunk gradients, the scans'
// corrections' backward, and the vocabulary-parallel cross-entropy's
// gradient from every shard's sums.
// Ring attention's backward needs none of its own: its steps run the
// attention backward's tiles (arith_grad.h) from the whole softmax's
// log-sum-exp. runtime/test/cuda_arith_test.cpp runs them against the CPU
// kernels.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CUDA_EXCHANGE_GRAD_ARITH_H
#define SHARDLINE_RUNTIME_KERNELS_CUDA_EXCHANGE_GRAD_ARITH_H

#include "kernels/cuda/arith_grad.h"

namespace shardline::rt::cuda::arith {

// -- halo_add ------------------------------------------------------------------------

/// Column c of n rows of C values added onto dst in row order: row from[i]
/// of src (i when from is nullptr) onto row to[i] of dst, so rows that land
/// on the same token add up in the order the CPU kernel adds them
/// (kernels/cpu/conv.cpp, haloAdd), with no two threads on one value.
SL_HD void addRowsColumn(const float *src, const int64_t *from, const int64_t *to, int64_t n,
                         int64_t C, int64_t c, float *dst) {
  for (int64_t i = 0; i < n; ++i)
    dst[(to ? to[i] : i) * C + c] += src[(from ? from[i] : i) * C + c];
}

// -- the scans' state exchange ---------------------------------------------------------

/// Entry j of the cotangent of global chunk `chunk`'s final state: the
/// initial-state cotangents of the chunks after it folded from the last
/// chunk back, g = dinit + decay·g in double (kernels/cpu,
/// scan_combine_states_grad). Chunk c's initial-state cotangent starts at
/// gathered[dinitAt[c]], its decays (one per `bcast` entries) at
/// gathered[decayAt[c]].
SL_HD double chunkFinalStateGrad(const float *gathered, const int64_t *dinitAt,
                                 const int64_t *decayAt, int64_t chunks, int64_t chunk,
                                 int64_t bcast, int64_t j) {
  double g = 0.0;
  for (int64_t c = chunks - 1; c > chunk; --c)
    g = gathered[dinitAt[c] + j] + (double)gathered[decayAt[c] + j / bcast] * g;
  return g;
}

/// Decay entry e of global chunk `chunk`: its `bcast` state entries' final
/// state cotangents into dstates (the chunk's [stateSize]), and the decay's
/// cotangent Σ g·init over them, in double, from the chunk's own initial
/// state init (its [stateSize]), into *ddecay.
SL_HD void stateExchangeGradEntry(const float *gathered, const int64_t *dinitAt,
                                  const int64_t *decayAt, int64_t chunks, int64_t chunk,
                                  int64_t bcast, const float *init, int64_t e, float *dstates,
                                  float *ddecay) {
  double acc = 0.0;
  for (int64_t j = e * bcast; j < (e + 1) * bcast; ++j) {
    double g = chunkFinalStateGrad(gathered, dinitAt, decayAt, chunks, chunk, bcast, j);
    dstates[j] = (float)g;
    acc += g * init[j];
  }
  *ddecay = (float)acc;
}

// -- the scans' corrections' backward -----------------------------------------------

/// What the SSD correction's backward reads and writes (kernels/cpu/
/// mamba_grad.cpp, ssd_state_correct_grad): dy [B, S, NH*P] of B batch
/// entries of S tokens, each cut into `chunks` sequences; dt [B, S, NH]
/// after the prelude and A [NH]; C [B, S, G*N]; each sequence's initial
/// state init [NH, P, N] in its slot (c*B + b, arith.h's sequenceAt). It
/// writes dinit (init's slots), dC, ddt (the prelude dt's cotangent) and dA
/// [NH] (f32, added to once per sequence from zero). `scratch` holds
/// ssdCorrectGradLaneDoubles a lane.
struct SsdCorrectGradArgs {
  const float *Cm, *dt, *A, *init, *dy;
  int64_t B, S, chunks, NH, P, G, N;
  float *dinit, *dC, *ddt, *dA;
  double *scratch;
};

/// A lane's doubles: the initial state's cotangent and a value per token.
SL_HD int64_t ssdCorrectGradLaneDoubles(int64_t S, int64_t P, int64_t N) { return P * N + S; }

/// Group `grp`'s lane: every sequence (batch entry outermost, then chunk),
/// every head of the group, as the CPU table's entry calls the kernel a
/// sequence at a time: the initial state's cotangent Σ_t F_t·dy_t·C_t and
/// dC in token order, then each token's q_t = F_t·dy_t·(C_t·h0) summed from
/// the end into ddt = A·suffix and dA, all in double, F_t = exp(Σ_{u≤t}
/// dt_u·A). The arithmetic is the CPU's, operation for operation.
SL_HD void ssdCorrectGradLane(const SsdCorrectGradArgs &a, int64_t grp) {
  const int64_t P = a.P, N = a.N, PN = P * N, perGroup = a.NH / a.G;
  double *gh = a.scratch + grp * ssdCorrectGradLaneDoubles(a.S, P, N), *q = gh + PN;
  for (int64_t h = grp * perGroup; h < (grp + 1) * perGroup; ++h)
    a.dA[h] = 0.0f;
  for (int64_t s = 0; s < a.B * a.chunks; ++s) {
    const Sequence at = sequenceAt(s, a.B, a.S, a.chunks);
    for (int64_t t = 0; t < at.length; ++t)
      for (int64_t n = 0; n < N; ++n)
        a.dC[((at.firstRow + t) * a.G + grp) * N + n] = 0.0f;
    for (int64_t h = grp * perGroup; h < (grp + 1) * perGroup; ++h) {
      const int64_t sidx = (at.stateSlot * a.NH + h) * PN;
      const float *hs = a.init + sidx;
      for (int64_t i = 0; i < PN; ++i)
        gh[i] = 0.0;
      double cum = 0.0;
      for (int64_t t = 0; t < at.length; ++t) {
        const int64_t row = at.firstRow + t;
        cum += (double)a.dt[row * a.NH + h] * a.A[h];
        const double f = exp(cum);
        const float *ct = a.Cm + (row * a.G + grp) * N, *dyt = a.dy + (row * a.NH + h) * P;
        float *dct = a.dC + (row * a.G + grp) * N;
        double qt = 0.0;
        for (int64_t p = 0; p < P; ++p) {
          const double fdy = f * dyt[p];
          double ch = 0.0;
          for (int64_t n = 0; n < N; ++n) {
            ch += (double)ct[n] * hs[p * N + n];
            gh[p * N + n] += fdy * ct[n];
          }
          qt += fdy * ch;
        }
        for (int64_t n = 0; n < N; ++n) {
          double acc = 0.0;
          for (int64_t p = 0; p < P; ++p)
            acc += (double)dyt[p] * hs[p * N + n];
          dct[n] = (float)(dct[n] + f * acc);
        }
        q[t] = qt;
      }
      for (int64_t i = 0; i < PN; ++i)
        a.dinit[sidx + i] = (float)gh[i];
      double suffix = 0.0, accA = 0.0;
      for (int64_t t = at.length - 1; t >= 0; --t) {
        const int64_t row = at.firstRow + t;
        suffix += q[t];
        a.ddt[row * a.NH + h] = (float)(a.A[h] * suffix);
        accA += a.dt[row * a.NH + h] * suffix;
      }
      a.dA[h] = (float)(a.dA[h] + accA);
    }
  }
}

/// What the RG-LRU correction's backward reads and writes (kernels/cpu/
/// recurrent_grad.cpp, rglru_state_correct_grad, c = 8): x and dy [B, S, W]
/// of B batch entries of S tokens, each cut into `chunks` sequences; wa, ba
/// and lambda [W]; init a [W] slot per sequence (c*B + b). It writes dinit
/// (init's slots) and dx when they are not nullptr, and the parameters'
/// gradients dwa, dba, dlambda [W] when dwa is not nullptr. `scratch` holds
/// [S / chunks, W] doubles.
struct RglruCorrectGradArgs {
  const float *x, *wa, *ba, *lambda, *init, *dy;
  int64_t B, S, chunks, W;
  float *dinit, *dx, *dwa, *dba, *dlambda;
  double *scratch;
};

/// Channel w, every sequence in turn as the CPU table's entry calls the
/// kernel: q_t = F_t·dy_t·h0 (F_t = exp(Σ_{u≤t} sigmoid(gate_a)·base)),
/// dinit = Σ F_t·dy_t, and the suffix sums of q taken back through the
/// decay gate to x, wa, ba and lambda, in double, the parameters' sums added
/// to their f32 results once per sequence. The CPU's arithmetic, operation
/// for operation.
SL_HD void rglruCorrectGradLane(const RglruCorrectGradArgs &a, int64_t w) {
  const double c = 8.0f, base = rglruLogBase(a.lambda[w], 8.0f);
  double *q = a.scratch;
  float pwa = 0.0f, pba = 0.0f, plambda = 0.0f;
  for (int64_t s = 0; s < a.B * a.chunks; ++s) {
    const Sequence at = sequenceAt(s, a.B, a.S, a.chunks);
    const int64_t slot = at.stateSlot * a.W + w;
    const double h0 = a.init[slot];
    double cum = 0.0, acc = 0.0;
    for (int64_t t = 0; t < at.length; ++t) {
      const int64_t i = (at.firstRow + t) * a.W + w;
      cum += sigmoid(rglruGate(a.wa[w], a.x[i], a.ba[w])) * base;
      const double fdy = exp(cum) * a.dy[i];
      acc += fdy;
      q[t * a.W + w] = fdy * h0;
    }
    if (a.dinit)
      a.dinit[slot] = (float)acc;
    double suffix = 0.0, swa = 0.0, sba = 0.0, sbase = 0.0;
    for (int64_t t = at.length - 1; t >= 0; --t) {
      const int64_t i = (at.firstRow + t) * a.W + w;
      suffix += q[t * a.W + w];
      const double r = sigmoid(rglruGate(a.wa[w], a.x[i], a.ba[w]));
      sbase += suffix * r;
      const double dga = suffix * base * r * (1.0 - r);
      swa += dga * a.x[i];
      sba += dga;
      if (a.dx)
        a.dx[i] = (float)(dga * a.wa[w]);
    }
    // d log(sigmoid(l)) / dl = 1 - sigmoid(l).
    const double dl = sbase * c * (1.0 - sigmoid(a.lambda[w]));
    pwa = (float)(pwa + swa);
    pba = (float)(pba + sba);
    plambda = (float)(plambda + dl);
  }
  if (a.dwa) {
    a.dwa[w] = pwa;
    a.dba[w] = pba;
    a.dlambda[w] = plambda;
  }
}

// -- vocabulary-parallel cross-entropy ----------------------------------------------------

/// Token t's sum of exponentials over the whole vocabulary from every
/// shard's, gathered as `shards` blocks of `stride` values: summed in group
/// order in double, rounded to f32 (kernels/cpu, xent_combine_sum).
SL_HD float shardedSumExp(const float *sums, int64_t shards, int64_t stride, int64_t t) {
  double s = 0.0;
  for (int64_t m = 0; m < shards; ++m)
    s += sums[m * stride + t];
  return (float)s;
}

/// dlogit of column v of this shard (vocabulary [offset, offset + V)) of a
/// token with the combined maximum and sum (kernels/cpu, xent_grad).
SL_HD float shardedGradElement(float logit, int32_t label, int64_t v, int64_t offset, float gmax,
                               float sum, double invTokens) {
  return crossEntropyGradElement(logit, gmax, sum, (int64_t)label - offset == v, invTokens);
}

} // namespace shardline::rt::cuda::arith

#endif
