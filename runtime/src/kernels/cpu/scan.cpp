//===- scan.cpp - Causal conv1d, SSD and RG-LRU scans, state passing ------===//

#include "kernels/cpu/internal.h"
#include "kernels/cpu/kernels.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <vector>

namespace shardline::rt::cpu {

void causal_conv1d(const float *x, const float *w, const float *bias,
                   const float *halo, int64_t B, int64_t S, int64_t C,
                   int64_t W, float *y) {
  assert(W >= 1);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < S; ++t) {
      for (int64_t c = 0; c < C; ++c) {
        double acc = bias ? bias[c] : 0.0;
        for (int64_t j = 0; j < W; ++j) {
          int64_t src = t - (W - 1) + j;
          float val = 0.0f;
          if (src >= 0)
            val = x[(b * S + src) * C + c];
          else if (halo)
            val = halo[(b * (W - 1) + (W - 1) + src) * C + c];
          acc += static_cast<double>(w[c * W + j]) * val;
        }
        y[(b * S + t) * C + c] = static_cast<float>(acc);
      }
    }
  }
}

void causal_conv1d_halo(const float *x, const float *halo, int64_t B, int64_t S,
                        int64_t C, int64_t W, float *halo_out) {
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < W - 1; ++i) {
      // Index into xx = [halo; x]; the halo occupies its first W-1 rows.
      int64_t u = S + i;
      float *dst = halo_out + (b * (W - 1) + i) * C;
      if (u >= W - 1)
        std::memcpy(dst, x + (b * S + u - (W - 1)) * C, sizeof(float) * C);
      else if (halo)
        std::memcpy(dst, halo + (b * (W - 1) + u) * C, sizeof(float) * C);
      else
        std::fill(dst, dst + C, 0.0f);
    }
  }
}

void scan_combine_states(const float *decay, const float *final,
                         const float *init, int64_t chunks, int64_t nd,
                         int64_t bcast, float *chunk_init, float *total_final) {
  int64_t size = nd * bcast;
  std::vector<double> cur(size, 0.0);
  if (init)
    std::copy(init, init + size, cur.begin());
  auto store = [&](float *dst) {
    for (int64_t j = 0; j < size; ++j)
      dst[j] = static_cast<float>(cur[j]);
  };
  for (int64_t i = 0; i < chunks; ++i) {
    store(chunk_init + i * size);
    for (int64_t e = 0; e < nd; ++e) {
      const double a = decay[i * nd + e];
      for (int64_t j = e * bcast; j < (e + 1) * bcast; ++j)
        cur[j] = a * cur[j] + final[i * size + j];
    }
  }
  if (total_final)
    store(total_final);
}

void ssd_scan(const float *x, const float *dt, const float *A, const float *Bm,
              const float *Cm, const float *D, const float *state_in,
              const SsdDims &d, float *y, float *state_out, float *decay_out,
              int64_t chunk) {
  assert(chunk > 0 && d.G > 0 && d.NH % d.G == 0);
  const int64_t per_group = d.NH / d.G, state = d.P * d.N;
  const int64_t ldx = d.NH * d.P, ldbc = d.G * d.N;
  std::vector<float> st(d.NH * state), cb(chunk * chunk), m(chunk * chunk),
      cs(chunk * d.N), bw(chunk * d.N);
  std::vector<double> cum(chunk), total(d.NH);
  for (int64_t b = 0; b < d.B; ++b) {
    if (state_in)
      std::copy(state_in + b * d.NH * state, state_in + (b + 1) * d.NH * state,
                st.begin());
    else
      std::fill(st.begin(), st.end(), 0.0f);
    std::fill(total.begin(), total.end(), 0.0);
    for (int64_t c0 = 0; c0 < d.S; c0 += chunk) {
      const int64_t L = std::min(chunk, d.S - c0), row0 = b * d.S + c0;
      for (int64_t g = 0; g < d.G; ++g) {
        const float *bg = Bm + row0 * ldbc + g * d.N;
        const float *cg = Cm + row0 * ldbc + g * d.N;
        // C_t . B_s is shared by all heads of the group.
        detail::gemm(false, true, L, L, d.N, 1.0f, cg, ldbc, bg, ldbc, 0.0f,
                     cb.data(), L);
        for (int64_t h = g * per_group; h < (g + 1) * per_group; ++h) {
          const float *xh = x + row0 * ldx + h * d.P;
          float *yh = y + row0 * ldx + h * d.P;
          float *sh = &st[h * state];
          auto dt_at = [&](int64_t t) {
            return static_cast<double>(dt[(row0 + t) * d.NH + h]);
          };
          for (int64_t t = 0; t < L; ++t)
            cum[t] = (t ? cum[t - 1] : 0.0) + dt_at(t) * A[h];
          for (int64_t t = 0; t < L; ++t)
            for (int64_t s = 0; s < L; ++s)
              m[t * L + s] =
                  s <= t
                      ? static_cast<float>(cb[t * L + s] *
                                           std::exp(cum[t] - cum[s]) * dt_at(s))
                      : 0.0f;
          // Tokens of this chunk, then the state carried into it.
          detail::gemm(false, false, L, d.P, L, 1.0f, m.data(), L, xh, ldx,
                       0.0f, yh, ldx);
          for (int64_t t = 0; t < L; ++t)
            for (int64_t n = 0; n < d.N; ++n)
              cs[t * d.N + n] =
                  static_cast<float>(std::exp(cum[t]) * cg[t * ldbc + n]);
          detail::gemm(false, true, L, d.P, d.N, 1.0f, cs.data(), d.N, sh, d.N,
                       1.0f, yh, ldx);
          if (D)
            for (int64_t t = 0; t < L; ++t)
              for (int64_t p = 0; p < d.P; ++p)
                yh[t * ldx + p] += D[h] * xh[t * ldx + p];
          // State after the chunk: decayed old state plus what each token
          // adds, decayed to the chunk end.
          const double last = cum[L - 1];
          for (int64_t s = 0; s < L; ++s)
            for (int64_t n = 0; n < d.N; ++n)
              bw[s * d.N + n] = static_cast<float>(std::exp(last - cum[s]) *
                                                   dt_at(s) * bg[s * ldbc + n]);
          const float keep = static_cast<float>(std::exp(last));
          for (int64_t i = 0; i < state; ++i)
            sh[i] *= keep;
          detail::gemm(true, false, d.P, d.N, L, 1.0f, xh, ldx, bw.data(), d.N,
                       1.0f, sh, d.N);
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

void ssd_scan_reference(const float *x, const float *dt, const float *A,
                        const float *Bm, const float *Cm, const float *D,
                        const float *state_in, const SsdDims &d, float *y,
                        float *state_out, float *decay_out) {
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

void ssd_state_correct(const float *Cm, const float *dt, const float *A,
                       const float *h0, const SsdDims &d, float *y,
                       float *state_out) {
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

namespace {
// log a_t = c * sigmoid(gate_a) * log(sigmoid(lambda)).
std::vector<double> rglru_log_base(const float *lambda, int64_t W, float c) {
  std::vector<double> base(W);
  for (int64_t w = 0; w < W; ++w)
    base[w] = c * detail::log_sigmoid(lambda[w]);
  return base;
}
} // namespace

void rglru_scan(const float *x, const float *gate_a, const float *gate_x,
                const float *lambda, const float *state_in, int64_t B,
                int64_t S, int64_t W, float *y, float *state_out,
                float *decay_out, float c) {
  const std::vector<double> base = rglru_log_base(lambda, W, c);
  std::vector<double> h(W), logsum(W);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t w = 0; w < W; ++w)
      h[w] = state_in ? state_in[b * W + w] : 0.0;
    std::fill(logsum.begin(), logsum.end(), 0.0);
    for (int64_t t = 0; t < S; ++t) {
      const int64_t off = (b * S + t) * W;
      for (int64_t w = 0; w < W; ++w) {
        const double la = detail::sigmoid(gate_a[off + w]) * base[w];
        // sqrt(1 - a^2) via expm1 keeps precision when a is close to 1.
        const double norm = std::sqrt(-std::expm1(2.0 * la));
        h[w] = std::exp(la) * h[w] +
               norm * detail::sigmoid(gate_x[off + w]) * x[off + w];
        logsum[w] += la;
        y[off + w] = static_cast<float>(h[w]);
      }
    }
    for (int64_t w = 0; w < W; ++w) {
      if (state_out)
        state_out[b * W + w] = static_cast<float>(h[w]);
      if (decay_out)
        decay_out[b * W + w] = static_cast<float>(std::exp(logsum[w]));
    }
  }
}

void rglru_state_correct(const float *gate_a, const float *lambda,
                         const float *h0, int64_t B, int64_t S, int64_t W,
                         float *y, float *state_out, float c) {
  const std::vector<double> base = rglru_log_base(lambda, W, c);
  std::vector<double> cum(W);
  for (int64_t b = 0; b < B; ++b) {
    std::fill(cum.begin(), cum.end(), 0.0);
    for (int64_t t = 0; t < S; ++t) {
      const int64_t off = (b * S + t) * W;
      for (int64_t w = 0; w < W; ++w) {
        cum[w] += detail::sigmoid(gate_a[off + w]) * base[w];
        y[off + w] =
            static_cast<float>(y[off + w] + std::exp(cum[w]) * h0[b * W + w]);
      }
    }
    if (state_out)
      for (int64_t w = 0; w < W; ++w)
        state_out[b * W + w] = static_cast<float>(
            state_out[b * W + w] + std::exp(cum[w]) * h0[b * W + w]);
  }
}

void ssd_prelude(const float *dt, const float *dt_bias, const float *a_log, int64_t T,
                 int64_t NH, float *dt_out, float *A) {
  for (int64_t i = 0; i < T * NH; ++i)
    dt_out[i] = dt[i] + dt_bias[i % NH];
  softplus(dt_out, T * NH, dt_out);
  for (int64_t h = 0; h < NH; ++h)
    A[h] = -std::exp(a_log[h]);
}

void rglru_gates(const float *x, const float *wa, const float *ba, const float *wx,
                 const float *bx, int64_t T, int64_t W, float *gate_a, float *gate_x) {
  for (int64_t i = 0; i < T * W; ++i) {
    int64_t c = i % W;
    gate_a[i] = wa[c] * x[i] + ba[c];
    if (gate_x)
      gate_x[i] = wx[c] * x[i] + bx[c];
  }
}

} // namespace shardline::rt::cpu
