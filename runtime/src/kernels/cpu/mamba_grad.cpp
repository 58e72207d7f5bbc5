//===- mamba_grad.cpp - Backward of the gated norm, the conv and the SSD scan ---===//

#include "exec/verify.h"
#include "kernels/cpu/internal.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/ssd_contract.h"
#include "kernels/cpu/table.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <vector>

namespace shardline::rt::cpu {

void gated_rms_norm_grad(const float *y, const float *z, const float *w, const float *dout,
                         int64_t T, int64_t C, int64_t groups, float eps, float *dy, float *dz) {
  assert(groups > 0 && C % groups == 0);
  const int64_t gs = C / groups;
  std::vector<double> u(gs);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t base = t * C + g * gs;
      const double r = detail::inverse_rms(y + base, gs, eps);
      double yu = 0.0;
      for (int64_t c = 0; c < gs; ++c) {
        const double zc = z[base + c], s = detail::sigmoid(zc);
        u[c] = static_cast<double>(dout[base + c]) * w[g * gs + c] * zc * s;
        yu += y[base + c] * u[c];
        dz[base + c] = static_cast<float>(static_cast<double>(dout[base + c]) * y[base + c] * r *
                                          w[g * gs + c] * s * (1.0 + zc * (1.0 - s)));
      }
      const double k = r * r * r * yu / gs;
      for (int64_t c = 0; c < gs; ++c)
        dy[base + c] = static_cast<float>(r * u[c] - y[base + c] * k);
    }
}

void gated_rms_norm_grad_weight(const float *y, const float *z, const float *dout, int64_t T,
                                int64_t C, int64_t groups, float eps, float *dw) {
  assert(groups > 0 && C % groups == 0);
  const int64_t gs = C / groups;
  std::vector<double> acc(C, 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t base = t * C + g * gs;
      const double r = detail::inverse_rms(y + base, gs, eps);
      for (int64_t c = 0; c < gs; ++c)
        acc[g * gs + c] +=
            static_cast<double>(dout[base + c]) * y[base + c] * r * detail::silu(z[base + c]);
    }
  for (int64_t c = 0; c < C; ++c)
    dw[c] = static_cast<float>(acc[c]);
}

void causal_conv1d_grad(const float *w, const float *dy, int64_t B, int64_t S, int64_t C, int64_t W,
                        float *dx, float *dhalo) {
  assert(W >= 1);
  // u indexes xx = [halo; x]: u < 0 is a halo row.
  for (int64_t b = 0; b < B; ++b)
    for (int64_t u = dhalo ? -(W - 1) : 0; u < S; ++u) {
      float *dst = u >= 0 ? dx + (b * S + u) * C : dhalo + (b * (W - 1) + (W - 1) + u) * C;
      for (int64_t c = 0; c < C; ++c) {
        double acc = 0.0;
        for (int64_t j = 0; j < W; ++j) {
          const int64_t t = u + (W - 1) - j;
          if (t >= 0 && t < S)
            acc += static_cast<double>(w[c * W + j]) * dy[(b * S + t) * C + c];
        }
        dst[c] = static_cast<float>(acc);
      }
    }
}

void causal_conv1d_grad_weight(const float *x, const float *halo, const float *dy, int64_t B,
                               int64_t S, int64_t C, int64_t W, float *dw, float *dbias) {
  assert(W >= 1);
  std::vector<double> accW(C * W, 0.0), accB(C, 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < S; ++t)
      for (int64_t c = 0; c < C; ++c) {
        const double g = dy[(b * S + t) * C + c];
        accB[c] += g;
        for (int64_t j = 0; j < W; ++j) {
          const int64_t src = t - (W - 1) + j;
          double v = 0.0;
          if (src >= 0)
            v = x[(b * S + src) * C + c];
          else if (halo)
            v = halo[(b * (W - 1) + (W - 1) + src) * C + c];
          accW[c * W + j] += g * v;
        }
      }
  if (dw)
    for (int64_t i = 0; i < C * W; ++i)
      dw[i] = static_cast<float>(dw[i] + accW[i]);
  if (dbias)
    for (int64_t c = 0; c < C; ++c)
      dbias[c] = static_cast<float>(dbias[c] + accB[c]);
}

void ssd_scan_grad(const float *x, const float *dt, const float *A, const float *Bm,
                   const float *Cm, const float *D, const float *state_in, const float *dy,
                   const float *dstate, const float *ddecay, const SsdDims &d, float *dx,
                   float *ddt, float *dA, float *dB, float *dC, float *dD, float *dstate_in) {
  assert(d.G > 0 && d.NH % d.G == 0);
  // The states every kBlock tokens are kept; those in between are recomputed
  // one block at a time, walking the blocks backwards.
  constexpr int64_t kBlock = 64;
  const int64_t per_group = d.NH / d.G, PN = d.P * d.N, blocks = (d.S + kBlock - 1) / kBlock;
  std::fill(dB, dB + d.B * d.S * d.G * d.N, 0.0f);
  std::fill(dC, dC + d.B * d.S * d.G * d.N, 0.0f);
  std::vector<double> checkpoints(std::max<int64_t>(blocks, 1) * PN), states((kBlock + 1) * PN),
      g(PN), accB(d.N), accC(d.N);
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.NH; ++h) {
      const int64_t grp = h / per_group, sidx = (b * d.NH + h) * PN;
      auto row = [&](int64_t t) { return b * d.S + t; };
      auto xAt = [&](int64_t t) { return x + (row(t) * d.NH + h) * d.P; };
      auto bAt = [&](int64_t t) { return Bm + (row(t) * d.G + grp) * d.N; };
      auto cAt = [&](int64_t t) { return Cm + (row(t) * d.G + grp) * d.N; };
      auto dtAt = [&](int64_t t) { return static_cast<double>(dt[row(t) * d.NH + h]); };
      // s_t = a_t s_{t-1} + dt_t x_t B_t^T, from `from` into `to`.
      auto step = [&](const double *from, double *to, int64_t t) {
        const double a = std::exp(dtAt(t) * A[h]), dtv = dtAt(t);
        const float *xt = xAt(t), *bt = bAt(t);
        for (int64_t p = 0; p < d.P; ++p)
          for (int64_t n = 0; n < d.N; ++n)
            to[p * d.N + n] = a * from[p * d.N + n] + dtv * xt[p] * bt[n];
      };
      std::vector<double> cur(PN, 0.0), next(PN);
      if (state_in)
        std::copy(state_in + sidx, state_in + sidx + PN, cur.begin());
      double logDecay = 0.0;
      for (int64_t t = 0; t < d.S; ++t) {
        if (t % kBlock == 0)
          std::copy(cur.begin(), cur.end(), checkpoints.begin() + (t / kBlock) * PN);
        step(cur.data(), next.data(), t);
        std::swap(cur, next);
        logDecay += dtAt(t) * A[h];
      }
      // decay = exp(sum_t log a_t): its cotangent reaches every log a_t.
      const double dLogDecay = ddecay ? ddecay[b * d.NH + h] * std::exp(logDecay) : 0.0;
      for (int64_t i = 0; i < PN; ++i)
        g[i] = dstate ? dstate[sidx + i] : 0.0;
      double accA = 0.0, accD = 0.0;
      for (int64_t blk = blocks - 1; blk >= 0; --blk) {
        const int64_t t0 = blk * kBlock, L = std::min(kBlock, d.S - t0);
        std::copy_n(checkpoints.begin() + blk * PN, PN, states.begin());
        for (int64_t i = 0; i < L; ++i)
          step(&states[i * PN], &states[(i + 1) * PN], t0 + i);
        for (int64_t i = L - 1; i >= 0; --i) {
          const int64_t t = t0 + i;
          const double *prev = &states[i * PN], *st = &states[(i + 1) * PN];
          const float *xt = xAt(t), *bt = bAt(t), *ct = cAt(t),
                      *dyt = dy + (row(t) * d.NH + h) * d.P;
          float *dxt = dx + (row(t) * d.NH + h) * d.P;
          const double a = std::exp(dtAt(t) * A[h]), dtv = dtAt(t), dh = D ? D[h] : 0.0;
          // y_t = s_t C_t + D x_t
          std::fill(accB.begin(), accB.end(), 0.0);
          std::fill(accC.begin(), accC.end(), 0.0);
          double dDt = 0.0, dLogA = 0.0;
          for (int64_t p = 0; p < d.P; ++p) {
            const double dyp = dyt[p];
            accD += dyp * xt[p];
            double gB = 0.0;
            for (int64_t n = 0; n < d.N; ++n) {
              double &gv = g[p * d.N + n];
              accC[n] += dyp * st[p * d.N + n];
              gv += dyp * ct[n];
              // s_t = a s_{t-1} + dt x_t B_t^T
              gB += gv * bt[n];
              accB[n] += gv * xt[p];
              dLogA += gv * prev[p * d.N + n];
              gv *= a;
            }
            dxt[p] = static_cast<float>(dh * dyp + dtv * gB);
            dDt += gB * xt[p];
          }
          dLogA = dLogA * a + dLogDecay;
          dDt += dLogA * A[h];
          accA += dLogA * dtv;
          ddt[row(t) * d.NH + h] = static_cast<float>(dDt);
          float *dbt = dB + (row(t) * d.G + grp) * d.N, *dct = dC + (row(t) * d.G + grp) * d.N;
          for (int64_t n = 0; n < d.N; ++n) {
            dbt[n] = static_cast<float>(dbt[n] + dtv * accB[n]);
            dct[n] = static_cast<float>(dct[n] + accC[n]);
          }
        }
      }
      if (dstate_in)
        for (int64_t i = 0; i < PN; ++i)
          dstate_in[sidx + i] = static_cast<float>(g[i]);
      if (dA)
        dA[h] = static_cast<float>(dA[h] + accA);
      if (dD)
        dD[h] = static_cast<float>(dD[h] + accD);
    }
}

void ssd_state_correct_grad(const float *Cm, const float *dt, const float *A, const float *h0,
                            const float *dy, const SsdDims &d, float *dh0, float *dC, float *ddt,
                            float *dA) {
  const int64_t per_group = d.NH / d.G, state = d.P * d.N;
  std::vector<double> q(d.S), gh(state);
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.NH; ++h) {
      const int64_t g = h / per_group;
      const float *hs = h0 + (b * d.NH + h) * state;
      std::fill(gh.begin(), gh.end(), 0.0);
      double cum = 0.0;
      for (int64_t t = 0; t < d.S; ++t) {
        const int64_t row = b * d.S + t;
        cum += static_cast<double>(dt[row * d.NH + h]) * A[h];
        const double f = std::exp(cum);
        const float *ct = Cm + (row * d.G + g) * d.N, *dyt = dy + (row * d.NH + h) * d.P;
        float *dct = dC + (row * d.G + g) * d.N;
        double qt = 0.0;
        for (int64_t p = 0; p < d.P; ++p) {
          const double fdy = f * dyt[p];
          double ch = 0.0;
          for (int64_t n = 0; n < d.N; ++n) {
            ch += static_cast<double>(ct[n]) * hs[p * d.N + n];
            gh[p * d.N + n] += fdy * ct[n];
          }
          qt += fdy * ch;
        }
        for (int64_t n = 0; n < d.N; ++n) {
          double acc = 0.0;
          for (int64_t p = 0; p < d.P; ++p)
            acc += static_cast<double>(dyt[p]) * hs[p * d.N + n];
          dct[n] = static_cast<float>(dct[n] + f * acc);
        }
        q[t] = qt;
      }
      float *dho = dh0 + (b * d.NH + h) * state;
      for (int64_t i = 0; i < state; ++i)
        dho[i] = static_cast<float>(gh[i]);
      double suffix = 0.0, accA = 0.0;
      for (int64_t t = d.S - 1; t >= 0; --t) {
        const int64_t row = b * d.S + t;
        suffix += q[t];
        ddt[row * d.NH + h] = static_cast<float>(A[h] * suffix);
        accA += dt[row * d.NH + h] * suffix;
      }
      if (dA)
        dA[h] = static_cast<float>(dA[h] + accA);
    }
}

void ssd_prelude_grad(const float *dt, const float *dt_bias, const float *a_log, int64_t T,
                      int64_t NH, const float *ddt, const float *dA, float *ddt_raw,
                      float *ddt_bias, float *da_log) {
  std::vector<double> acc(NH, 0.0);
  for (int64_t i = 0; i < T * NH; ++i) {
    const double v = ddt[i] * detail::sigmoid(static_cast<double>(dt[i]) + dt_bias[i % NH]);
    acc[i % NH] += v;
    ddt_raw[i] = static_cast<float>(v);
  }
  for (int64_t h = 0; h < NH; ++h) {
    if (ddt_bias)
      ddt_bias[h] = static_cast<float>(acc[h]);
    if (da_log)
      da_log[h] = static_cast<float>(-std::exp(static_cast<double>(a_log[h])) * dA[h]);
  }
}

} // namespace shardline::rt::cpu

// -- the kernel table's entries ---------------------------------------------

namespace shardline::rt {

namespace {

enum { kNormGroups, kNormEps };

/// The groups among this rank's channels of y.
int64_t localGroups(const Step &s, const Frame &f, int32_t y) {
  return s.attrs[kNormGroups].i * f.local(y).back() / f.global(y).back();
}

/// gated_rms_norm_grad (y, z, weight, dresult -> dy, dz).
void gatedRmsNormGrad(const Step &s, Frame &f) {
  int32_t y = s.in[0];
  int64_t c = f.local(y).back();
  cpu::gated_rms_norm_grad(f.f(y), f.f(s.in[1]), f.f(s.in[2]), f.f(s.in[3]), f.n(y) / c, c,
                           localGroups(s, f, y), (float)s.attrs[kNormEps].f, f.f(s.out[0]),
                           f.f(s.out[1]));
}

/// gated_rms_norm_grad_weight (y, z, dresult -> dweight).
void gatedRmsNormGradWeight(const Step &s, Frame &f) {
  int32_t y = s.in[0];
  int64_t c = f.local(y).back();
  cpu::gated_rms_norm_grad_weight(f.f(y), f.f(s.in[1]), f.f(s.in[2]), f.n(y) / c, c,
                                  localGroups(s, f, y), (float)s.attrs[kNormEps].f, f.f(s.out[0]));
}

/// causal_conv1d_grad (weight, dy[, halo] -> dx[, dhalo]): over the whole
/// sequence, or with the forward's halo chunk by chunk as the forward
/// convolved, each chunk's halo rows getting their gradient (the halo's
/// values are not read).
void convGrad(const Step &s, Frame &f) {
  const TensorInfo &dyt = f.tensors[s.in[1]];
  bool hasHalo = s.in.size() > 2 && s.has(2);
  int64_t W = f.local(s.in[0])[1], k = hasHalo ? chunksOf(dyt) : 1, S = dyt.local[1] / k,
          C = dyt.local[2];
  float *dhalo = hasHalo ? f.f(s.out[1]) : nullptr;
  forEachChunk(dyt, hasHalo, [&](int64_t rows, int64_t bi, int64_t c) {
    cpu::causal_conv1d_grad(f.f(s.in[0]), f.f(s.in[1]) + rows * C, 1, S, C, W,
                            f.f(s.out[0]) + rows * C,
                            dhalo ? dhalo + (bi * k + c) * (W - 1) * C : nullptr);
  });
}

/// causal_conv1d_grad_weight (x, dy[, halo] -> dweight, dbias): summed over
/// the whole sequence, or over each chunk with its halo rows as the
/// tokens before it.
void convGradWeight(const Step &s, Frame &f) {
  const TensorInfo &xt = f.tensors[s.in[0]];
  bool hasHalo = s.in.size() > 2 && s.has(2);
  int64_t W = f.local(s.out[0])[1], k = hasHalo ? chunksOf(xt) : 1, S = xt.local[1] / k,
          C = xt.local[2];
  float *dw = f.f(s.out[0]), *db = f.f(s.out[1]);
  std::fill_n(dw, f.n(s.out[0]), 0.0f);
  std::fill_n(db, f.n(s.out[1]), 0.0f);
  const float *halo = hasHalo ? f.f(s.in[2]) : nullptr;
  forEachChunk(xt, hasHalo, [&](int64_t rows, int64_t bi, int64_t c) {
    cpu::causal_conv1d_grad_weight(f.f(s.in[0]) + rows * C,
                                   halo ? halo + (bi * k + c) * (W - 1) * C : nullptr,
                                   f.f(s.in[1]) + rows * C, 1, S, C, W, dw, db);
  });
}

/// What an SSD backward step reads off its tensors: the heads of dt's local
/// part, the tokens, the head dim, the groups and state size of C's local
/// part, the chunks (`chunk_axes` given) and the per-chunk scan dimensions;
/// `seq` is a [b, s, heads*p] tensor of the step, the attributes are the
/// op's heads, groups and chunk_axes in that order from `attr`.
struct SsdStepDims {
  int64_t nh, T, hp, g, n, k, B;
  bool chunked;
  cpu::SsdDims dims;
};
static SsdStepDims ssdStepDims(const Step &s, const Frame &f, const TensorInfo &seq, int32_t dt,
                               int32_t cm, size_t attr) {
  const std::vector<int64_t> &cl = f.local(cm);
  SsdStepDims d;
  d.nh = f.local(dt)[2];
  d.T = f.n(dt) / d.nh;
  d.hp = seq.shape[2] / s.attrs[attr].i;
  d.g = s.attrs[attr + 1].i * cl[2] / f.global(cm)[2];
  d.n = cl[2] / d.g;
  d.chunked = !s.attrs[attr + 2].strings.empty();
  d.k = d.chunked ? chunksOf(seq) : 1;
  d.B = seq.local[0];
  d.dims = cpu::SsdDims{1, seq.local[1] / d.k, d.nh, d.hp, d.g, d.n};
  return d;
}

enum { X, Dt, ALog, Bm, Cm, D, DtBias, Dy, StateIn, DState, DDecay };
enum { kScanHeads, kScanGroups, kScanChunkAxes };

/// ssd_scan_grad (.. -> dx, ddt, dB, dC[, dstate_in]) and
/// ssd_scan_grad_params (.. -> da_log, dd, ddt_bias): one backward scan per
/// chunk (the whole local sequence without chunk_axes), each from its own
/// initial state and final-state and decay cotangents as the forward
/// scanned it, each op keeping what its results need.
template <bool Params> void ssdGrad(const Step &s, Frame &f) {
  const TensorInfo &xt = f.tensors[s.in[X]];
  int32_t dt = s.in[Dt], cm = s.in[Cm];
  const SsdStepDims d = ssdStepDims(s, f, xt, dt, cm, kScanHeads);
  const int64_t nh = d.nh, T = d.T, hp = d.hp, g = d.g, n = d.n, B = d.B;
  const bool chunked = d.chunked;
  const cpu::SsdDims dims = d.dims;
  std::vector<float> dtv(f.n(dt)), A(nh), ddt(f.n(dt)), dA(nh, 0.0f);
  cpu::ssd_prelude(f.f(dt), f.f(s.in[DtBias]), f.f(s.in[ALog]), T, nh, dtv.data(), A.data());
  // Whichever op runs, the scan computes both kinds; the other's results
  // go to scratch.
  std::vector<float> dx, dB, dC;
  float *dxp, *dBp, *dCp, *dD = nullptr, *dStateIn = nullptr;
  if constexpr (Params) {
    dx.resize(f.n(s.in[X]));
    dB.resize(f.n(s.in[Bm]));
    dC.resize(f.n(cm));
    dxp = dx.data(), dBp = dB.data(), dCp = dC.data();
    dD = f.f(s.out[1]);
    std::fill_n(dD, nh, 0.0f);
  } else {
    dxp = f.f(s.out[0]), dBp = f.f(s.out[2]), dCp = f.f(s.out[3]);
    if (s.out.size() > 4 && s.out[4] >= 0)
      dStateIn = f.f(s.out[4]);
  }
  // A step bound without the optional operands lists fewer of them.
  auto opt = [&](size_t i) { return i < s.in.size() && s.has(i) ? f.f(s.in[i]) : nullptr; };
  const float *stateIn = opt(StateIn), *dState = opt(DState), *dDecay = opt(DDecay);
  const int64_t state = nh * hp * n;
  forEachChunk(xt, chunked, [&](int64_t rows, int64_t bi, int64_t c) {
    int64_t slot = c * B + bi;
    auto at = [&](auto *base, int64_t size) { return base ? base + slot * size : nullptr; };
    cpu::ssd_scan_grad(f.f(s.in[X]) + rows * nh * hp, dtv.data() + rows * nh, A.data(),
                       f.f(s.in[Bm]) + rows * g * n, f.f(cm) + rows * g * n, f.f(s.in[D]),
                       at(stateIn, state), f.f(s.in[Dy]) + rows * nh * hp, at(dState, state),
                       at(dDecay, nh), dims, dxp + rows * nh * hp, ddt.data() + rows * nh,
                       dA.data(), dBp + rows * g * n, dCp + rows * g * n, dD, at(dStateIn, state));
  });
  float *ddtRaw = Params ? ddt.data() : f.f(s.out[1]);
  cpu::ssd_prelude_grad(f.f(dt), f.f(s.in[DtBias]), f.f(s.in[ALog]), T, nh, ddt.data(), dA.data(),
                        ddtRaw, Params ? f.f(s.out[2]) : nullptr, Params ? f.f(s.out[0]) : nullptr);
}

enum { CInit, CCm, CDt, CALog, CDtBias, CDy };
enum { kCorrectHeads, kCorrectGroups, kCorrectChunkAxes };

/// ssd_correct_grad (init, C, dt, a_log, dt_bias, dy -> dinit, dC, ddt) and
/// ssd_correct_grad_params (.. -> da_log, ddt_bias): the correction's
/// backward chunk by chunk, each chunk from its own initial state, as the
/// forward applied it.
template <bool Params> void correctGrad(const Step &s, Frame &f) {
  const TensorInfo &yt = f.tensors[s.in[CDy]];
  int32_t dt = s.in[CDt], cm = s.in[CCm];
  const SsdStepDims d = ssdStepDims(s, f, yt, dt, cm, kCorrectHeads);
  const int64_t nh = d.nh, T = d.T, hp = d.hp, g = d.g, n = d.n, B = d.B;
  const bool chunked = d.chunked;
  const cpu::SsdDims dims = d.dims;
  std::vector<float> dtv(f.n(dt)), A(nh), ddt(f.n(dt)), dA(nh, 0.0f), scratch;
  cpu::ssd_prelude(f.f(dt), f.f(s.in[CDtBias]), f.f(s.in[CALog]), T, nh, dtv.data(), A.data());
  float *dinit, *dC;
  if constexpr (Params) {
    scratch.resize(f.n(s.in[CInit]) + f.n(cm));
    dinit = scratch.data(), dC = scratch.data() + f.n(s.in[CInit]);
  } else {
    dinit = f.f(s.out[0]), dC = f.f(s.out[1]);
  }
  std::fill_n(dinit, f.n(s.in[CInit]), 0.0f);
  std::fill_n(dC, f.n(cm), 0.0f);
  const float *init = f.f(s.in[CInit]);
  forEachChunk(yt, chunked, [&](int64_t rows, int64_t bi, int64_t c) {
    int64_t slot = (c * B + bi) * nh * hp * n;
    cpu::ssd_state_correct_grad(f.f(cm) + rows * g * n, dtv.data() + rows * nh, A.data(),
                                init + slot, f.f(s.in[CDy]) + rows * nh * hp, dims, dinit + slot,
                                dC + rows * g * n, ddt.data() + rows * nh, dA.data());
  });
  float *ddtRaw = Params ? ddt.data() : f.f(s.out[2]);
  cpu::ssd_prelude_grad(f.f(dt), f.f(s.in[CDtBias]), f.f(s.in[CALog]), T, nh, ddt.data(), dA.data(),
                        ddtRaw, Params ? f.f(s.out[1]) : nullptr, Params ? f.f(s.out[0]) : nullptr);
}

// -- contracts --------------------------------------------------------------

/// y, z, dresult (and dy, dz) [.., C]; weight (or dweight) [C] in whole
/// groups per rank.
void checkGatedNormGrad(Contract &c, Contract::Arg weight) {
  Contract::Arg y = operand(0);
  c.rankAtLeast(y, 1).sameShape(operand(1), y).rank(weight, 1).sameDim(weight, 0, y, -1);
  if (!c.ok())
    return;
  int64_t channels = c.global(y).back(), local = c.dim(y, -1);
  c.attrIn(kNormGroups, 1, channels);
  if (!c.ok())
    return;
  int64_t groups = c.intAttr(kNormGroups), perRank = Contract::product({groups, local});
  c.require(channels % groups == 0 && perRank >= channels && perRank % channels == 0 &&
                local % (perRank / channels) == 0,
            "y's " + std::to_string(local) + " channels per rank are not whole groups of the " +
                std::to_string(groups) + " groups");
  c.require(c.floatAttr(kNormEps) >= 0, "attribute 'eps' is negative");
}

void checkGatedRmsNormGrad(Contract &c) {
  checkGatedNormGrad(c, operand(2));
  c.sameShape(operand(3), operand(0)).sameShape(result(0), operand(0));
  c.sameShape(result(1), operand(0));
}

void checkGatedRmsNormGradWeight(Contract &c) {
  checkGatedNormGrad(c, result(0));
  c.sameShape(operand(2), operand(0));
}

/// The halo of a conv's backward: W - 1 rows of C before each chunk of
/// each batch entry of `tokens`, in the forward's compact order.
void checkConvHalo(Contract &c, Contract::Arg tokens, Contract::Arg halo, int64_t W) {
  if (!c.ok() || !c.has(halo))
    return;
  int64_t k = c.chunks(tokens);
  c.require(c.dim(tokens, 1) % k == 0,
            c.dimText(tokens, 1) + ", not " + std::to_string(k) + " equal chunks");
  c.elementsAtLeast(halo, Contract::product({c.dim(tokens, 0), k, W - 1, c.dim(tokens, 2)}),
                    "batch x chunks x (kernel width - 1) x channels");
}

/// weight [C, W], dy and dx [B, S, C], dhalo bound exactly with the halo and
/// shaped like it.
void checkConvGrad(Contract &c) {
  Contract::Arg weight = operand(0), dy = operand(1);
  c.rank(weight, 2).rank(dy, 3).sameDim(weight, 0, dy, 2).sameShape(result(0), dy);
  c.require(!c.ok() || c.dim(weight, 1) >= 1, "the kernel width is 0");
  c.require(c.has(operand(2)) == c.has(result(1)), "dhalo is bound exactly when halo is");
  if (c.has(result(1)))
    c.sameShape(result(1), operand(2));
  checkConvHalo(c, dy, operand(2), c.dim(weight, 1));
}

/// x and dy [B, S, C], dweight [C, W], dbias [C].
void checkConvGradWeight(Contract &c) {
  Contract::Arg x = operand(0), dweight = result(0);
  c.rank(x, 3).sameShape(operand(1), x).rank(dweight, 2).sameDim(dweight, 0, x, 2);
  c.rank(result(1), 1).sameDim(result(1), 0, x, 2);
  c.require(!c.ok() || c.dim(dweight, 1) >= 1, "the kernel width is 0");
  checkConvHalo(c, x, operand(2), c.dim(dweight, 1));
}

/// The forward scan's operands, dy of x's shape, the summaries (state_in,
/// dstate, ddecay and dstate_in) a block per chunk and batch entry as the
/// forward's, the results shaped like the inputs they differentiate.
template <bool Params> void checkSsdGrad(Contract &c) {
  SsdLocal l =
      checkSsdOperands(c, operand(X), operand(Dt), operand(ALog), operand(Cm), operand(DtBias));
  if (!c.ok())
    return;
  c.sameShape(operand(Bm), operand(Cm)).rank(operand(D), 1);
  c.dimIs(operand(D), 0, l.heads, "dt's heads").sameShape(operand(Dy), operand(X));
  int64_t k = c.step.attrs[kScanChunkAxes].strings.empty() ? 1 : c.chunks(operand(X));
  c.require(c.dim(operand(X), 1) % k == 0,
            c.dimText(operand(X), 1) + ", not " + std::to_string(k) + " equal chunks");
  int64_t b = c.dim(operand(X), 0), states = Contract::product({k, b, l.heads, l.headDim, l.state});
  const char *what = "chunks x batch x heads x head dimension x state size";
  c.elementsAtLeast(operand(StateIn), states, what).elementsAtLeast(operand(DState), states, what);
  c.elementsAtLeast(operand(DDecay), Contract::product({k, b, l.heads}), "chunks x batch x heads");
  if constexpr (Params) {
    for (size_t i : {0, 1, 2})
      c.rank(result(i), 1).dimIs(result(i), 0, l.heads, "dt's heads");
  } else {
    c.sameShape(result(0), operand(X)).sameShape(result(1), operand(Dt));
    c.sameShape(result(2), operand(Bm)).sameShape(result(3), operand(Cm));
    c.require(c.has(operand(StateIn)) == c.has(result(4)),
              "dstate_in is bound exactly when state_in is");
    if (c.has(result(4)))
      c.sameShape(result(4), operand(StateIn));
  }
}

/// The correction's operands (dy in y0's place), its results shaped like
/// the inputs they differentiate.
template <bool Params> void checkCorrectGrad(Contract &c) {
  Contract::Arg dy = operand(CDy), init = operand(CInit);
  SsdLocal l =
      checkSsdOperands(c, dy, operand(CDt), operand(CALog), operand(CCm), operand(CDtBias));
  if (!c.ok())
    return;
  int64_t k = c.step.attrs[kCorrectChunkAxes].strings.empty() ? 1 : c.chunks(dy);
  c.require(c.dim(dy, 1) % k == 0,
            c.dimText(dy, 1) + ", not " + std::to_string(k) + " equal chunks");
  c.elementsAtLeast(init, Contract::product({k, c.dim(dy, 0), l.heads, l.headDim, l.state}),
                    "chunks x batch x heads x head dimension x state size");
  if constexpr (Params) {
    for (size_t i : {0, 1})
      c.rank(result(i), 1).dimIs(result(i), 0, l.heads, "dt's heads");
  } else {
    c.sameShape(result(0), init).sameShape(result(1), operand(CCm));
    c.sameShape(result(2), operand(CDt));
  }
}

} // namespace

SHARDLINE_CPU_KERNELS(mamba_grad) {
  const std::vector<AttrSpec> norm = {{"groups", AttrKind::Int}, {"eps", AttrKind::Float}};
  addKernel(t, "gated_rms_norm_grad",
            {{"y", "z", "weight", "dresult"},
             {"dy", "dz"},
             norm,
             gatedRmsNormGrad,
             nullptr,
             checkGatedRmsNormGrad});
  addKernel(t, "gated_rms_norm_grad_weight",
            {{"y", "z", "dresult"},
             {"dweight"},
             norm,
             gatedRmsNormGradWeight,
             nullptr,
             checkGatedRmsNormGradWeight});
  addKernel(t, "causal_conv1d_grad",
            {{"weight", "dy", "halo?"}, {"dx", "dhalo?"}, {}, convGrad, nullptr, checkConvGrad});
  addKernel(t, "causal_conv1d_grad_weight",
            {{"x", "dy", "halo?"},
             {"dweight", "dbias"},
             {},
             convGradWeight,
             nullptr,
             checkConvGradWeight});
  const std::vector<std::string> ssdIn = {"x",       "dt", "a_log",     "B",       "C",      "d",
                                          "dt_bias", "dy", "state_in?", "dstate?", "ddecay?"};
  const std::vector<AttrSpec> ssd = {
      {"heads", AttrKind::Int}, {"groups", AttrKind::Int}, {"chunk_axes", AttrKind::Strings}};
  addKernel(t, "ssd_scan_grad",
            {ssdIn,
             {"dx", "ddt", "dB", "dC", "dstate_in?"},
             ssd,
             ssdGrad<false>,
             nullptr,
             checkSsdGrad<false>});
  addKernel(t, "ssd_scan_grad_params",
            {ssdIn, {"da_log", "dd", "ddt_bias"}, ssd, ssdGrad<true>, nullptr, checkSsdGrad<true>});
  const std::vector<std::string> correctIn = {"init", "C", "dt", "a_log", "dt_bias", "dy"};
  const std::vector<AttrSpec> correct = {
      {"heads", AttrKind::Int}, {"groups", AttrKind::Int}, {"chunk_axes", AttrKind::Strings}};
  addKernel(t, "ssd_correct_grad",
            {correctIn,
             {"dinit", "dC", "ddt"},
             correct,
             correctGrad<false>,
             nullptr,
             checkCorrectGrad<false>});
  addKernel(t, "ssd_correct_grad_params",
            {correctIn,
             {"da_log", "ddt_bias"},
             correct,
             correctGrad<true>,
             nullptr,
             checkCorrectGrad<true>});
}

} // namespace shardline::rt
