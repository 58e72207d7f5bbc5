//===- mamba.cpp - The Mamba-2 SSD chunked scan and its correction --------===//

#include "exec/verify.h"
#include "kernels/cpu/internal.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/ssd_contract.h"
#include "kernels/cpu/table.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <vector>

namespace shardline::rt::cpu {

void ssd_scan(const float *x, const float *dt, const float *A, const float *Bm, const float *Cm,
              const float *D, const float *state_in, const SsdDims &d, float *y, float *state_out,
              float *decay_out, int64_t chunk) {
  assert(chunk > 0 && d.G > 0 && d.NH % d.G == 0);
  const int64_t per_group = d.NH / d.G, state = d.P * d.N;
  const int64_t ldx = d.NH * d.P, ldbc = d.G * d.N;
  std::vector<float> st(d.NH * state), cb(chunk * chunk), m(chunk * chunk), cs(chunk * d.N),
      bw(chunk * d.N);
  std::vector<double> cum(chunk), total(d.NH);
  for (int64_t b = 0; b < d.B; ++b) {
    if (state_in)
      std::copy(state_in + b * d.NH * state, state_in + (b + 1) * d.NH * state, st.begin());
    else
      std::fill(st.begin(), st.end(), 0.0f);
    std::fill(total.begin(), total.end(), 0.0);
    for (int64_t c0 = 0; c0 < d.S; c0 += chunk) {
      const int64_t L = std::min(chunk, d.S - c0), row0 = b * d.S + c0;
      for (int64_t g = 0; g < d.G; ++g) {
        const float *bg = Bm + row0 * ldbc + g * d.N;
        const float *cg = Cm + row0 * ldbc + g * d.N;
        // C_t . B_s is shared by all heads of the group.
        detail::gemm(false, true, L, L, d.N, 1.0f, cg, ldbc, bg, ldbc, 0.0f, cb.data(), L);
        for (int64_t h = g * per_group; h < (g + 1) * per_group; ++h) {
          const float *xh = x + row0 * ldx + h * d.P;
          float *yh = y + row0 * ldx + h * d.P;
          float *sh = &st[h * state];
          auto dt_at = [&](int64_t t) { return static_cast<double>(dt[(row0 + t) * d.NH + h]); };
          for (int64_t t = 0; t < L; ++t)
            cum[t] = (t ? cum[t - 1] : 0.0) + dt_at(t) * A[h];
          for (int64_t t = 0; t < L; ++t)
            for (int64_t s = 0; s < L; ++s)
              m[t * L + s] =
                  s <= t ? static_cast<float>(cb[t * L + s] * std::exp(cum[t] - cum[s]) * dt_at(s))
                         : 0.0f;
          // Tokens of this chunk, then the state carried into it.
          detail::gemm(false, false, L, d.P, L, 1.0f, m.data(), L, xh, ldx, 0.0f, yh, ldx);
          for (int64_t t = 0; t < L; ++t)
            for (int64_t n = 0; n < d.N; ++n)
              cs[t * d.N + n] = static_cast<float>(std::exp(cum[t]) * cg[t * ldbc + n]);
          detail::gemm(false, true, L, d.P, d.N, 1.0f, cs.data(), d.N, sh, d.N, 1.0f, yh, ldx);
          if (D)
            for (int64_t t = 0; t < L; ++t)
              for (int64_t p = 0; p < d.P; ++p)
                yh[t * ldx + p] += D[h] * xh[t * ldx + p];
          // State after the chunk: decayed old state plus what each token
          // adds, decayed to the chunk end.
          const double last = cum[L - 1];
          for (int64_t s = 0; s < L; ++s)
            for (int64_t n = 0; n < d.N; ++n)
              bw[s * d.N + n] =
                  static_cast<float>(std::exp(last - cum[s]) * dt_at(s) * bg[s * ldbc + n]);
          const float keep = static_cast<float>(std::exp(last));
          for (int64_t i = 0; i < state; ++i)
            sh[i] *= keep;
          detail::gemm(true, false, d.P, d.N, L, 1.0f, xh, ldx, bw.data(), d.N, 1.0f, sh, d.N);
          total[h] += last;
        }
      }
    }
    if (state_out)
      std::copy(st.begin(), st.end(), state_out + b * d.NH * state);
    if (decay_out)
      for (int64_t h = 0; h < d.NH; ++h)
        decay_out[b * d.NH + h] = static_cast<float>(std::exp(total[h]));
  }
}

void ssd_scan_reference(const float *x, const float *dt, const float *A, const float *Bm,
                        const float *Cm, const float *D, const float *state_in, const SsdDims &d,
                        float *y, float *state_out, float *decay_out) {
  const int64_t per_group = d.NH / d.G, state = d.P * d.N;
  std::vector<double> s(state);
  for (int64_t b = 0; b < d.B; ++b) {
    for (int64_t h = 0; h < d.NH; ++h) {
      const int64_t g = h / per_group, sidx = (b * d.NH + h) * state;
      for (int64_t i = 0; i < state; ++i)
        s[i] = state_in ? state_in[sidx + i] : 0.0;
      double decay = 1.0;
      for (int64_t t = 0; t < d.S; ++t) {
        const int64_t row = b * d.S + t;
        const double dtv = dt[row * d.NH + h];
        const double a = std::exp(dtv * A[h]);
        decay *= a;
        const float *xt = x + (row * d.NH + h) * d.P;
        const float *bt = Bm + (row * d.G + g) * d.N;
        const float *ct = Cm + (row * d.G + g) * d.N;
        for (int64_t p = 0; p < d.P; ++p) {
          double acc = 0.0;
          for (int64_t n = 0; n < d.N; ++n) {
            double &sv = s[p * d.N + n];
            sv = a * sv + dtv * xt[p] * bt[n];
            acc += ct[n] * sv;
          }
          if (D)
            acc += static_cast<double>(D[h]) * xt[p];
          y[(row * d.NH + h) * d.P + p] = static_cast<float>(acc);
        }
      }
      if (state_out)
        for (int64_t i = 0; i < state; ++i)
          state_out[sidx + i] = static_cast<float>(s[i]);
      if (decay_out)
        decay_out[b * d.NH + h] = static_cast<float>(decay);
    }
  }
}

void ssd_state_correct(const float *Cm, const float *dt, const float *A, const float *h0,
                       const SsdDims &d, float *y, float *state_out) {
  const int64_t per_group = d.NH / d.G, state = d.P * d.N;
  for (int64_t b = 0; b < d.B; ++b) {
    for (int64_t h = 0; h < d.NH; ++h) {
      const int64_t g = h / per_group;
      const float *hs = h0 + (b * d.NH + h) * state;
      double cum = 0.0;
      for (int64_t t = 0; t < d.S; ++t) {
        const int64_t row = b * d.S + t;
        cum += static_cast<double>(dt[row * d.NH + h]) * A[h];
        const double f = std::exp(cum);
        const float *ct = Cm + (row * d.G + g) * d.N;
        for (int64_t p = 0; p < d.P; ++p) {
          double acc = 0.0;
          for (int64_t n = 0; n < d.N; ++n)
            acc += static_cast<double>(ct[n]) * hs[p * d.N + n];
          float &yv = y[(row * d.NH + h) * d.P + p];
          yv = static_cast<float>(yv + f * acc);
        }
      }
      if (state_out) {
        const double f = std::exp(cum);
        float *so = state_out + (b * d.NH + h) * state;
        for (int64_t i = 0; i < state; ++i)
          so[i] = static_cast<float>(so[i] + f * hs[i]);
      }
    }
  }
}

void ssd_prelude(const float *dt, const float *dt_bias, const float *a_log, int64_t T, int64_t NH,
                 float *dt_out, float *A) {
  for (int64_t i = 0; i < T * NH; ++i)
    dt_out[i] = dt[i] + dt_bias[i % NH];
  softplus(dt_out, T * NH, dt_out);
  for (int64_t h = 0; h < NH; ++h)
    A[h] = -std::exp(a_log[h]);
}

} // namespace shardline::rt::cpu

// -- the kernel table's entries ---------------------------------------------

namespace shardline::rt {

/// (ssd_contract.h)
SsdLocal checkSsdOperands(Contract &c, Contract::Arg x, Contract::Arg dt, Contract::Arg aLog,
                          Contract::Arg cm, Contract::Arg dtBias) {
  enum { kSsdHeads, kSsdGroups };
  c.rank(x, 3).rank(dt, 3).rank(cm, 3).rank(aLog, 1).rank(dtBias, 1);
  c.sameDim(dt, 0, x, 0).sameDim(dt, 1, x, 1).sameDim(cm, 0, x, 0).sameDim(cm, 1, x, 1);
  if (!c.ok())
    return {};
  int64_t width = c.global(x)[2], cWidth = c.global(cm)[2];
  c.attrIn(kSsdHeads, 1, width).attrIn(kSsdGroups, 1, cWidth);
  if (!c.ok())
    return {};
  int64_t heads = c.intAttr(kSsdHeads), groups = c.intAttr(kSsdGroups);
  c.require(width % heads == 0, "attribute 'heads' (" + std::to_string(heads) +
                                    ") does not divide x's width " + std::to_string(width));
  c.require(cWidth % groups == 0, "attribute 'groups' (" + std::to_string(groups) +
                                      ") does not divide C's width " + std::to_string(cWidth));
  int64_t nh = c.dim(dt, 2), p = width / heads;
  int64_t g = Contract::product({groups, c.dim(cm, 2)}) / cWidth;
  c.dimIs(x, 2, Contract::product({nh, p}), "dt's heads x the head dimension");
  c.dimIs(aLog, 0, nh, "dt's heads").dimIs(dtBias, 0, nh, "dt's heads");
  c.require(g >= 1 && c.dim(cm, 2) % g == 0 && nh % g == 0,
            c.dimText(cm, 2) + ", not whole groups that divide the " + std::to_string(nh) +
                " heads");
  if (!c.ok())
    return {};
  return {nh, p, g, c.dim(cm, 2) / g};
}

namespace {

enum { kSsdHeads, kSsdGroups, kSsdChunkAxes };

/// ssd_scan (x, dt, a_log, B, C, d, dt_bias[, state_in] -> y, state, decay)
/// and ssd_correct (y0, init, C, dt, a_log, dt_bias -> result).
template <bool Correct> void ssd(const Step &s, Frame &f) {
  enum { X, Dt, ALog, Bm, Cm, D, DtBias, StateIn };
  enum { Y0, Init, CmC, DtC, ALogC, DtBiasC };
  int32_t x = s.in[Correct ? Y0 : X], dt = s.in[Correct ? DtC : Dt],
          aLog = s.in[Correct ? ALogC : ALog], cm = s.in[Correct ? CmC : Cm],
          dtBias = s.in[Correct ? DtBiasC : DtBias];
  const TensorInfo &xt = f.tensors[x];
  const std::vector<int64_t> &cl = f.local(cm);
  int64_t nh = f.local(dt)[2], hp = xt.shape[2] / s.attrs[kSsdHeads].i;
  int64_t g = s.attrs[kSsdGroups].i * cl[2] / f.global(cm)[2], n = cl[2] / g;
  bool chunked = !s.attrs[kSsdChunkAxes].strings.empty();
  int64_t k = chunked ? chunksOf(xt) : 1, S = xt.local[1] / k, B = xt.local[0];
  std::vector<float> dtv(f.n(dt)), A(nh);
  cpu::ssd_prelude(f.f(dt), f.f(dtBias), f.f(aLog), f.n(dt) / nh, nh, dtv.data(), A.data());
  cpu::SsdDims dims{1, S, nh, hp, g, n};
  float *y = f.f(s.out[0]);
  if constexpr (Correct) {
    std::copy_n(f.f(x), f.n(x), y);
    std::vector<float> state(nh * hp * n);
    const float *init = f.f(s.in[Init]);
    forEachChunk(xt, chunked, [&](int64_t rows, int64_t bi, int64_t c) {
      cpu::ssd_state_correct(f.f(cm) + rows * g * n, dtv.data() + rows * nh, A.data(),
                             init + (c * B + bi) * nh * hp * n, dims, y + rows * nh * hp,
                             state.data());
    });
  } else {
    float *state = f.f(s.out[1]), *decay = f.f(s.out[2]);
    const float *stateIn = s.has(StateIn) ? f.f(s.in[StateIn]) : nullptr;
    forEachChunk(xt, chunked, [&](int64_t rows, int64_t bi, int64_t c) {
      int64_t slot = c * B + bi;
      cpu::ssd_scan(f.f(x) + rows * nh * hp, dtv.data() + rows * nh, A.data(),
                    f.f(s.in[Bm]) + rows * g * n, f.f(cm) + rows * g * n, f.f(s.in[D]),
                    stateIn ? stateIn + slot * nh * hp * n : nullptr, dims, y + rows * nh * hp,
                    state + slot * nh * hp * n, decay + slot * nh);
    });
  }
}

// -- contracts --------------------------------------------------------------

/// x (or y0) [B, S, NH*P], dt [B, S, NH], a_log, d, dt_bias [NH], B and C
/// [B, S, G*N]; the states hold (at least) a [NH, P, N] block per chunk and batch
/// entry, the decays a [NH] one.
template <bool Correct> void checkSsd(Contract &c) {
  enum { X, Dt, ALog, Bm, Cm, D, DtBias, StateIn };
  enum { Y0, Init, CmC, DtC, ALogC, DtBiasC };
  Contract::Arg x = operand(Correct ? Y0 : X), dt = operand(Correct ? DtC : Dt),
                aLog = operand(Correct ? ALogC : ALog), cm = operand(Correct ? CmC : Cm),
                dtBias = operand(Correct ? DtBiasC : DtBias);
  SsdLocal l = checkSsdOperands(c, x, dt, aLog, cm, dtBias);
  if (!c.ok())
    return;
  int64_t nh = l.heads, p = l.headDim, n = l.state, b = c.dim(x, 0);
  int64_t k = c.step.attrs[kSsdChunkAxes].strings.empty() ? 1 : c.chunks(x);
  c.require(c.dim(x, 1) % k == 0, c.dimText(x, 1) + ", not " + std::to_string(k) + " equal chunks");
  int64_t states = Contract::product({k, b, nh, p, n});
  const char *what = "chunks x batch x heads x head dimension x state size";
  if constexpr (Correct) {
    c.sameShape(result(0), x).elementsAtLeast(operand(Init), states, what);
  } else {
    c.sameShape(operand(Bm), cm).rank(operand(D), 1).dimIs(operand(D), 0, nh, "dt's heads");
    c.sameShape(result(0), x).elementsAtLeast(result(1), states, what);
    c.elementsAtLeast(result(2), Contract::product({k, b, nh}), "chunks x batch x heads");
    c.elementsAtLeast(operand(StateIn), states, what);
  }
}

} // namespace

SHARDLINE_CPU_KERNELS(mamba) {
  const AttrSpec chunkAxes{"chunk_axes", AttrKind::Strings};
  const std::vector<AttrSpec> ssdAttrs = {
      {"heads", AttrKind::Int}, {"groups", AttrKind::Int}, chunkAxes};
  addKernel(t, "ssd_scan",
            {{"x", "dt", "a_log", "B", "C", "d", "dt_bias", "state_in?"},
             {"y", "state", "decay"},
             ssdAttrs,
             ssd<false>,
             nullptr,
             checkSsd<false>});
  addKernel(t, "ssd_correct",
            {{"y0", "init", "C", "dt", "a_log", "dt_bias"},
             kResult,
             ssdAttrs,
             ssd<true>,
             nullptr,
             checkSsd<true>});
}

} // namespace shardline::rt
