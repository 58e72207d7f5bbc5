//===- attention.cpp - RoPE, softmax attention, partial merges ------------===//

#include "kernels/cpu/internal.h"
#include "kernels/cpu/kernels.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>
#include <vector>

namespace shardline::rt::cpu {

void rope(const float *x, const int64_t *positions, int64_t B, int64_t S,
          int64_t NH, int64_t D, float theta, float *out) {
  assert(D % 2 == 0);
  int64_t half = D / 2;
  // Angles grow with the position, so float would lose the phase of far
  // tokens; one table per local row is shared by all batches and heads.
  std::vector<double> cs(S * half), sn(S * half);
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t i = 0; i < half; ++i) {
      double freq = std::pow(static_cast<double>(theta),
                             -2.0 * static_cast<double>(i) / D);
      double angle = static_cast<double>(positions[s]) * freq;
      cs[s * half + i] = std::cos(angle);
      sn[s * half + i] = std::sin(angle);
    }
  }
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t s = 0; s < S; ++s) {
      const double *c = &cs[s * half], *sv = &sn[s * half];
      for (int64_t h = 0; h < NH; ++h) {
        int64_t base = ((b * S + s) * NH + h) * D;
        for (int64_t i = 0; i < half; ++i) {
          double x1 = x[base + i], x2 = x[base + i + half];
          out[base + i] = static_cast<float>(x1 * c[i] - x2 * sv[i]);
          out[base + i + half] = static_cast<float>(x2 * c[i] + x1 * sv[i]);
        }
      }
    }
  }
}

void attention(const float *q, const float *k, const float *v,
               const int64_t *q_pos, const int64_t *k_pos,
               const AttentionDims &d, bool causal, float scale, float *out,
               float *lse) {
  assert(d.HKV > 0 && d.HQ % d.HKV == 0);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  int64_t per_kv = d.HQ / d.HKV;
  int64_t ldq = d.HQ * d.D, ldk = d.HKV * d.D;
  std::vector<float> p(d.Sq * d.Sk);
  for (int64_t b = 0; b < d.B; ++b) {
    for (int64_t h = 0; h < d.HQ; ++h) {
      int64_t hk = h / per_kv;
      const float *qh = q + (b * d.Sq * d.HQ + h) * d.D;
      const float *kh = k + (b * d.Sk * d.HKV + hk) * d.D;
      const float *vh = v + (b * d.Sk * d.HKV + hk) * d.D;
      float *oh = out + (b * d.Sq * d.HQ + h) * d.D;
      detail::gemm(false, true, d.Sq, d.Sk, d.D, scale, qh, ldq, kh, ldk, 0.0f,
                   p.data(), d.Sk);
      for (int64_t i = 0; i < d.Sq; ++i) {
        float *row = &p[i * d.Sk];
        auto visible = [&](int64_t j) {
          return !causal || k_pos[j] <= q_pos[i];
        };
        float m = neg_inf;
        for (int64_t j = 0; j < d.Sk; ++j)
          if (visible(j))
            m = std::max(m, row[j]);
        double sum = 0.0;
        for (int64_t j = 0; j < d.Sk; ++j) {
          // m == -inf means no visible key: the row stays zero.
          double e = visible(j) && m != neg_inf ? std::exp(row[j] - m) : 0.0;
          row[j] = static_cast<float>(e);
          sum += e;
        }
        if (sum > 0.0)
          for (int64_t j = 0; j < d.Sk; ++j)
            row[j] = static_cast<float>(row[j] / sum);
        if (lse)
          lse[(b * d.HQ + h) * d.Sq + i] =
              sum > 0.0 ? static_cast<float>(m + std::log(sum)) : neg_inf;
      }
      detail::gemm(false, false, d.Sq, d.D, d.Sk, 1.0f, p.data(), d.Sk, vh, ldk,
                   0.0f, oh, ldq);
    }
  }
}

void attention_merge(const float *out_a, const float *lse_a, const float *out_b,
                     const float *lse_b, int64_t B, int64_t Sq, int64_t HQ,
                     int64_t D, float *out, float *lse) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < HQ; ++h) {
      for (int64_t i = 0; i < Sq; ++i) {
        int64_t li = (b * HQ + h) * Sq + i;
        double la = lse_a[li], lb = lse_b[li];
        double m = std::max(la, lb);
        int64_t base = ((b * Sq + i) * HQ + h) * D;
        if (m == -std::numeric_limits<double>::infinity()) {
          std::fill(out + base, out + base + D, 0.0f);
          lse[li] = neg_inf;
          continue;
        }
        double l = m + std::log(std::exp(la - m) + std::exp(lb - m));
        double wa = std::exp(la - l), wb = std::exp(lb - l);
        for (int64_t e = 0; e < D; ++e)
          out[base + e] =
              static_cast<float>(wa * out_a[base + e] + wb * out_b[base + e]);
        lse[li] = static_cast<float>(l);
      }
    }
  }
}

} // namespace shardline::rt::cpu
