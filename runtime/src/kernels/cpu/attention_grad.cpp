//===- attention_grad.cpp - Backward of RoPE and softmax attention --------===//

#include "exec/verify.h"
#include "kernels/cpu/internal.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/table.h"

#include <algorithm>
#include <cassert>
#include <vector>

namespace shardline::rt::cpu {

void rope_grad(const float *dy, const int64_t *positions, int64_t B, int64_t S, int64_t NH,
               int64_t D, float theta, float *dx) {
  // A rotation's transpose is the rotation by the opposite angle.
  std::vector<int64_t> negated(positions, positions + S);
  for (int64_t &p : negated)
    p = -p;
  rope(dy, negated.data(), B, S, NH, D, theta, dx);
}

namespace detail {

void attention_grad_from_scores(const float *ds, const float *p, const float *qh, int64_t ldq,
                                const float *kh, int64_t ldk, const float *dyh, int64_t Sq,
                                int64_t Sk, int64_t D, float scale, float *dq, float dqBeta,
                                float *dk, float *dv) {
  if (dq)
    gemm(false, false, Sq, D, Sk, scale, ds, Sk, kh, ldk, dqBeta, dq, ldq);
  if (dk) {
    gemm(true, false, Sk, D, Sq, scale, ds, Sk, qh, ldq, 1.0f, dk, ldk);
    gemm(true, false, Sk, D, Sq, 1.0f, p, Sk, dyh, ldq, 1.0f, dv, ldk);
  }
}

} // namespace detail

namespace {

/// The cotangents of attention() that are wanted (nullptr: not wanted): dq,
/// or dk and dv accumulated over the query heads of each kv head.
void attentionBackward(const float *q, const float *k, const float *v, const float *dy,
                       const int64_t *q_pos, const int64_t *k_pos, const AttentionDims &d,
                       bool causal, float scale, float *dq, float *dk, float *dv) {
  assert(d.HKV > 0 && d.HQ % d.HKV == 0);
  int64_t per_kv = d.HQ / d.HKV, ldq = d.HQ * d.D, ldk = d.HKV * d.D;
  if (dk) {
    std::fill(dk, dk + d.B * d.Sk * ldk, 0.0f);
    std::fill(dv, dv + d.B * d.Sk * ldk, 0.0f);
  }
  std::vector<float> p(d.Sq * d.Sk), ds(d.Sq * d.Sk);
  for (int64_t b = 0; b < d.B; ++b) {
    for (int64_t h = 0; h < d.HQ; ++h) {
      int64_t hk = h / per_kv, qOff = (b * d.Sq * d.HQ + h) * d.D,
              kOff = (b * d.Sk * d.HKV + hk) * d.D;
      const float *qh = q + qOff, *kh = k + kOff, *vh = v + kOff, *dyh = dy + qOff;
      detail::attention_probs(qh, ldq, kh, ldk, q_pos, k_pos, d.Sq, d.Sk, d.D, causal, scale, 0,
                              p.data(), nullptr);
      // dP = dy v^T, then dS = P o (dP - rowsum(P o dP)) in its place.
      detail::gemm(false, true, d.Sq, d.Sk, d.D, 1.0f, dyh, ldq, vh, ldk, 0.0f, ds.data(), d.Sk);
      for (int64_t i = 0; i < d.Sq; ++i) {
        const float *pr = &p[i * d.Sk];
        float *dr = &ds[i * d.Sk];
        double rowsum = 0.0;
        for (int64_t j = 0; j < d.Sk; ++j)
          rowsum += static_cast<double>(pr[j]) * dr[j];
        for (int64_t j = 0; j < d.Sk; ++j)
          dr[j] = static_cast<float>(pr[j] * (dr[j] - rowsum));
      }
      detail::attention_grad_from_scores(ds.data(), p.data(), qh, ldq, kh, ldk, dyh, d.Sq, d.Sk,
                                         d.D, scale, dq ? dq + qOff : nullptr, 0.0f,
                                         dk ? dk + kOff : nullptr, dk ? dv + kOff : nullptr);
    }
  }
}

} // namespace

void attention_grad(const float *q, const float *k, const float *v, const float *dy,
                    const int64_t *q_pos, const int64_t *k_pos, const AttentionDims &dims,
                    bool causal, float scale, float *dq) {
  attentionBackward(q, k, v, dy, q_pos, k_pos, dims, causal, scale, dq, nullptr, nullptr);
}

void attention_grad_kv(const float *q, const float *k, const float *v, const float *dy,
                       const int64_t *q_pos, const int64_t *k_pos, const AttentionDims &dims,
                       bool causal, float scale, float *dk, float *dv) {
  attentionBackward(q, k, v, dy, q_pos, k_pos, dims, causal, scale, nullptr, dk, dv);
}

} // namespace shardline::rt::cpu

// -- the kernel table's entries ---------------------------------------------

namespace shardline::rt {

namespace {

/// kv_heads follows the forward attention's attributes.
enum { kKvHeads = kScale + 1 };

void ropeGrad(const Step &s, Frame &f) {
  const std::vector<int64_t> &dy = f.local(s.in[0]);
  int64_t d = s.attrs[0].i;
  cpu::rope_grad(f.f(s.in[0]), s.facts.positions.data(), dy[0], dy[1], dy[2] / d, d,
                 (float)s.attrs[1].f, f.f(s.out[0]));
}

void attentionGrad(const Step &s, Frame &f) {
  cpu::AttentionDims dims = attentionDims(s, f);
  cpu::attention_grad(f.f(s.in[0]), f.f(s.in[1]), f.f(s.in[2]), f.f(s.in[3]),
                      s.facts.positions.data(), s.facts.keyPositions.data(), dims,
                      s.attrs[kCausal].i != 0, attentionScale(s, dims), f.f(s.out[0]));
}

void attentionGradKv(const Step &s, Frame &f) {
  cpu::AttentionDims dims = attentionDims(s, f);
  cpu::attention_grad_kv(f.f(s.in[0]), f.f(s.in[1]), f.f(s.in[2]), f.f(s.in[3]),
                         s.facts.positions.data(), s.facts.keyPositions.data(), dims,
                         s.attrs[kCausal].i != 0, attentionScale(s, dims), f.f(s.out[0]),
                         f.f(s.out[1]));
}

// -- contracts --------------------------------------------------------------

/// Attention's operands, dy of q's shape, and kv_heads the heads of k's
/// width (the kernel counts them from the widths; a plan that disagrees
/// was built for another model).
void checkAttentionGradInputs(Contract &c) {
  Contract::Arg q = operand(0), k = operand(1);
  checkAttentionInputs(c);
  c.sameShape(operand(3), q);
  if (!c.ok())
    return;
  int64_t d = c.global(q)[2] / c.intAttr(kHeads), kvWidth = c.global(k)[2];
  c.attrIn(kKvHeads, 1, kvWidth);
  if (!c.ok())
    return;
  c.require(Contract::product({c.intAttr(kKvHeads), d}) == kvWidth,
            "attribute 'kv_heads' (" + std::to_string(c.intAttr(kKvHeads)) + ") is not k's width " +
                std::to_string(kvWidth) + " over the head dim " + std::to_string(d));
}

void checkAttentionGrad(Contract &c) {
  checkAttentionGradInputs(c);
  c.sameShape(result(0), operand(0));
}

void checkAttentionGradKv(Contract &c) {
  checkAttentionGradInputs(c);
  c.sameShape(result(0), operand(1)).sameShape(result(1), operand(2));
}

} // namespace

SHARDLINE_CPU_KERNELS(attention_grad) {
  std::vector<AttrSpec> attrs = attentionAttrs();
  attrs.push_back({"kv_heads", AttrKind::Int});
  const std::vector<std::string> operands = {"q", "k", "v", "dy"};
  addKernel(t, "rope_grad", {{"dy"}, {"dx"}, ropeAttrs(), ropeGrad, resolvePositions, checkRope});
  addKernel(t, "attention_grad",
            {operands, {"dq"}, attrs, attentionGrad, resolveQueryKeyPositions, checkAttentionGrad});
  addKernel(t, "attention_grad_kv",
            {operands,
             {"dk", "dv"},
             attrs,
             attentionGradKv,
             resolveQueryKeyPositions,
             checkAttentionGradKv});
}

} // namespace shardline::rt
