//===- attention.cpp - RoPE, softmax attention, partial merges ------------===//

#include "exec/verify.h"
#include "kernels/cpu/internal.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/table.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>
#include <vector>

namespace shardline::rt::cpu {

void rope(const float *x, const int64_t *positions, int64_t B, int64_t S, int64_t NH, int64_t D,
          float theta, float *out) {
  assert(D % 2 == 0);
  int64_t half = D / 2;
  // Angles grow with the position, so float would lose the phase of far
  // tokens; one table per local row is shared by all batches and heads.
  std::vector<double> cs(S * half), sn(S * half);
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t i = 0; i < half; ++i) {
      double freq = std::pow(static_cast<double>(theta), -2.0 * static_cast<double>(i) / D);
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

void detail::attention_probs(const float *qh, int64_t ldq, const float *kh, int64_t ldk,
                             const int64_t *q_pos, const int64_t *k_pos, int64_t Sq, int64_t Sk,
                             int64_t D, bool causal, float scale, int64_t window, float *p,
                             float *lse) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  gemm(false, true, Sq, Sk, D, scale, qh, ldq, kh, ldk, 0.0f, p, Sk);
  for (int64_t i = 0; i < Sq; ++i) {
    float *row = &p[i * Sk];
    auto visible = [&](int64_t j) {
      return !causal || (k_pos[j] <= q_pos[i] && (window <= 0 || q_pos[i] - k_pos[j] < window));
    };
    float m = neg_inf;
    for (int64_t j = 0; j < Sk; ++j)
      if (visible(j))
        m = std::max(m, row[j]);
    double sum = 0.0;
    for (int64_t j = 0; j < Sk; ++j) {
      // m == -inf means no visible key: the row stays zero.
      double e = visible(j) && m != neg_inf ? std::exp(row[j] - m) : 0.0;
      row[j] = static_cast<float>(e);
      sum += e;
    }
    if (sum > 0.0)
      for (int64_t j = 0; j < Sk; ++j)
        row[j] = static_cast<float>(row[j] / sum);
    if (lse)
      lse[i] = sum > 0.0 ? static_cast<float>(m + std::log(sum)) : neg_inf;
  }
}

void attention(const float *q, const float *k, const float *v, const int64_t *q_pos,
               const int64_t *k_pos, const AttentionDims &d, bool causal, float scale, float *out,
               float *lse, int64_t window) {
  assert(d.HKV > 0 && d.HQ % d.HKV == 0);
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
      detail::attention_probs(qh, ldq, kh, ldk, q_pos, k_pos, d.Sq, d.Sk, d.D, causal, scale,
                              window, p.data(), lse ? lse + (b * d.HQ + h) * d.Sq : nullptr);
      detail::gemm(false, false, d.Sq, d.D, d.Sk, 1.0f, p.data(), d.Sk, vh, ldk, 0.0f, oh, ldq);
    }
  }
}

void attention_merge(const float *out_a, const float *lse_a, const float *out_b, const float *lse_b,
                     int64_t B, int64_t Sq, int64_t HQ, int64_t D, float *out, float *lse) {
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
          out[base + e] = static_cast<float>(wa * out_a[base + e] + wb * out_b[base + e]);
        lse[li] = static_cast<float>(l);
      }
    }
  }
}

} // namespace shardline::rt::cpu

// -- the kernel table's entries ---------------------------------------------

namespace shardline::rt {

void resolvePositions(Step &s, const Frame &f) { s.facts.positions = f.owned(s.in[0], 1, f.self); }
void resolveQueryKeyPositions(Step &s, const Frame &f) {
  resolvePositions(s, f);
  s.facts.keyPositions = f.owned(s.in[1], 1, f.self);
}

/// The ring in order from this rank, with the key positions each member
/// holds.
void resolveRing(Step &s, const Frame &f) {
  resolvePositions(s, f);
  Ring ring = ringOf(f.mesh, f.self, s.attrs[kAxes].strings);
  std::vector<int64_t> &members = s.facts.members = ring.members;
  std::rotate(members.begin(), members.begin() + ring.position, members.end());
  for (int64_t m : members)
    s.facts.memberPositions.push_back(f.owned(s.in[1], 1, m));
}

cpu::AttentionDims attentionDims(const Step &s, const Frame &f) {
  const std::vector<int64_t> &ql = f.local(s.in[0]), &kl = f.local(s.in[1]);
  int64_t d = f.global(s.in[0])[2] / s.attrs[kHeads].i;
  return {ql[0], ql[1], kl[1], ql[2] / d, kl[2] / d, d};
}

float attentionScale(const Step &s, const cpu::AttentionDims &dims) {
  return s.attrs[kScale].present ? (float)s.attrs[kScale].f
                                 : (float)(1.0 / std::sqrt((double)dims.D));
}

namespace {

void rope(const Step &s, Frame &f) {
  const std::vector<int64_t> &x = f.local(s.in[0]);
  int64_t d = s.attrs[0].i;
  cpu::rope(f.f(s.in[0]), s.facts.positions.data(), x[0], x[1], x[2] / d, d, (float)s.attrs[1].f,
            f.f(s.out[0]));
}

void attention(const Step &s, Frame &f) {
  cpu::AttentionDims dims = attentionDims(s, f);
  cpu::attention(f.f(s.in[0]), f.f(s.in[1]), f.f(s.in[2]), s.facts.positions.data(),
                 s.facts.keyPositions.data(), dims, s.attrs[kCausal].i != 0,
                 attentionScale(s, dims), f.f(s.out[0]), nullptr);
}

/// Every member's keys and values reach every other member once; the partial
/// results are merged by their log-sum-exp, own block first.
void ringAttention(const Step &s, Frame &f) {
  int32_t q = s.in[0], k = s.in[1], v = s.in[2], out = s.out[0];
  cpu::AttentionDims dims = attentionDims(s, f);
  float scale = attentionScale(s, dims);
  bool causal = s.attrs[kCausal].i != 0;
  std::vector<float> kv(f.f(k), f.f(k) + f.n(k));
  kv.insert(kv.end(), f.f(v), f.f(v) + f.n(v));
  Mail blocks = f.collectives->allGather(s.attrs[kAxes].strings, kv, f.tensors[k].elementBytes());
  float *y = f.f(out);
  std::vector<float> lse(dims.B * dims.HQ * dims.Sq), part(f.n(out)), partLse(lse.size());
  for (size_t i = 0; i < s.facts.members.size(); ++i) {
    const float *kb = blocks[s.facts.members[i]].data(), *vb = kb + f.n(k);
    bool first = i == 0;
    cpu::attention(f.f(q), kb, vb, s.facts.positions.data(), s.facts.memberPositions[i].data(),
                   dims, causal, scale, first ? y : part.data(),
                   first ? lse.data() : partLse.data());
    if (!first)
      cpu::attention_merge(y, lse.data(), part.data(), partLse.data(), dims.B, dims.Sq, dims.HQ,
                           dims.D, y, lse.data());
  }
}

} // namespace

// -- contracts --------------------------------------------------------------

void checkRope(Contract &c) {
  Contract::Arg x = operand(0);
  c.rank(x, 3).sameShape(result(0), x).attrIn(0, 2, c.dim(x, 2));
  if (!c.ok())
    return;
  int64_t d = c.intAttr(0);
  c.require(d % 2 == 0, "attribute 'head_dim' is odd");
  c.require(c.dim(x, 2) % d == 0,
            "attribute 'head_dim' (" + std::to_string(d) + ") does not divide " + c.dimText(x, 2));
  c.require(c.floatAttr(1) > 0, "attribute 'theta' is not positive");
}

/// q[B, Sq, HQ*D], k and v [B, Sk, HKV*D]: the heads divide q's width, and
/// the kv heads (per rank) divide the query heads.
void checkAttentionInputs(Contract &c) {
  Contract::Arg q = operand(0), k = operand(1), v = operand(2);
  c.rank(q, 3).rank(k, 3).rank(v, 3).sameShape(v, k).sameDim(k, 0, q, 0);
  if (!c.ok())
    return;
  int64_t width = c.global(q)[2];
  c.attrIn(kHeads, 1, width);
  if (!c.ok())
    return;
  int64_t heads = c.intAttr(kHeads), d = width / heads;
  c.require(width % heads == 0, "attribute 'heads' (" + std::to_string(heads) +
                                    ") does not divide q's width " + std::to_string(width));
  c.require(c.dim(q, 2) % d == 0 && c.dim(k, 2) % d == 0,
            c.dimText(q, 2) + " and " + c.dimText(k, 2) + " are not whole heads of " +
                std::to_string(d));
  if (!c.ok())
    return;
  c.require((c.dim(q, 2) / d) % (c.dim(k, 2) / d) == 0,
            "the " + std::to_string(c.dim(k, 2) / d) + " kv heads do not divide the " +
                std::to_string(c.dim(q, 2) / d) + " query heads");
}

void checkAttention(Contract &c) {
  checkAttentionInputs(c);
  c.sameShape(result(0), operand(0));
}

SHARDLINE_CPU_KERNELS(attention) {
  std::vector<AttrSpec> ringAttrs = attentionAttrs();
  ringAttrs.push_back({"axes", AttrKind::Strings});
  addKernel(t, "rope", {{"x"}, kResult, ropeAttrs(), rope, resolvePositions, checkRope});
  addKernel(t, "attention",
            {{"q", "k", "v"},
             kResult,
             attentionAttrs(),
             attention,
             resolveQueryKeyPositions,
             checkAttention});
  addKernel(t, "ring_attention",
            {{"q", "k", "v"}, kResult, ringAttrs, ringAttention, resolveRing, checkAttention});
}

} // namespace shardline::rt
