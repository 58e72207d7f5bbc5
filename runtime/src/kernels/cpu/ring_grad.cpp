//===- ring_grad.cpp - Backward of ring attention -------------------------===//
//
// The gradient of attention split into key blocks: each block adds its share
// given the whole softmax's log-sum-exp and rowsum(P o dP), so a ring can
// take the blocks one at a time, as the forward does.
//
//===----------------------------------------------------------------------===//

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

void attention_delta(const float *dy, const float *out, int64_t B, int64_t Sq, int64_t HQ,
                     int64_t D, float *delta) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < Sq; ++i)
      for (int64_t h = 0; h < HQ; ++h) {
        int64_t base = ((b * Sq + i) * HQ + h) * D;
        double sum = 0.0;
        for (int64_t e = 0; e < D; ++e)
          sum += static_cast<double>(dy[base + e]) * out[base + e];
        delta[(b * HQ + h) * Sq + i] = static_cast<float>(sum);
      }
}

void attention_block_grad(const float *q, const float *k, const float *v, const float *dy,
                          const int64_t *q_pos, const int64_t *k_pos, const AttentionDims &d,
                          bool causal, float scale, int64_t window, const float *lse,
                          const float *delta, float *dq, float *dk, float *dv) {
  assert(d.HKV > 0 && d.HQ % d.HKV == 0);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  int64_t per_kv = d.HQ / d.HKV, ldq = d.HQ * d.D, ldk = d.HKV * d.D;
  std::vector<float> p(d.Sq * d.Sk), ds(d.Sq * d.Sk), blockLse(d.Sq);
  for (int64_t b = 0; b < d.B; ++b) {
    for (int64_t h = 0; h < d.HQ; ++h) {
      int64_t hk = h / per_kv, qOff = (b * d.Sq * d.HQ + h) * d.D,
              kOff = (b * d.Sk * d.HKV + hk) * d.D;
      const float *qh = q + qOff, *kh = k + kOff, *vh = v + kOff, *dyh = dy + qOff;
      const float *whole = lse + (b * d.HQ + h) * d.Sq, *dl = delta + (b * d.HQ + h) * d.Sq;
      // The block's own softmax, rescaled from its log-sum-exp to the whole
      // one's: exp(s - lse) without recomputing the exponentials.
      detail::attention_probs(qh, ldq, kh, ldk, q_pos, k_pos, d.Sq, d.Sk, d.D, causal, scale,
                              window, p.data(), blockLse.data());
      for (int64_t i = 0; i < d.Sq; ++i) {
        bool empty = blockLse[i] == neg_inf || whole[i] == neg_inf;
        float w = empty ? 0.0f : static_cast<float>(std::exp((double)blockLse[i] - whole[i]));
        for (int64_t j = 0; j < d.Sk; ++j)
          p[i * d.Sk + j] *= w;
      }
      detail::gemm(false, true, d.Sq, d.Sk, d.D, 1.0f, dyh, ldq, vh, ldk, 0.0f, ds.data(), d.Sk);
      for (int64_t i = 0; i < d.Sq; ++i)
        for (int64_t j = 0; j < d.Sk; ++j)
          ds[i * d.Sk + j] = p[i * d.Sk + j] * (ds[i * d.Sk + j] - dl[i]);
      detail::attention_grad_from_scores(ds.data(), p.data(), qh, ldq, kh, ldk, dyh, d.Sq, d.Sk,
                                         d.D, scale, dq ? dq + qOff : nullptr, 1.0f,
                                         dk ? dk + kOff : nullptr, dk ? dv + kOff : nullptr);
    }
  }
}

} // namespace shardline::rt::cpu

// -- the kernel table's entries ---------------------------------------------

namespace shardline::rt {

namespace {

/// Two passes around the ring, each step passing what this rank holds to
/// the next member and taking the previous member's. The first recomputes
/// the forward's output and log-sum-exp (merged as the forward merges); the
/// second carries each K, V block with its partial dK, dV, to which every
/// member adds its queries' share while adding the block's share to its own
/// dq, and a last step takes the completed dK, dV home. At step i this rank
/// holds the block of member n - i (mod n) of its ring.
void ringAttentionGrad(const Step &s, Frame &f) {
  enum { Q, K, V, DY };
  int32_t q = s.in[Q], dy = s.in[DY];
  cpu::AttentionDims dims = attentionDims(s, f);
  float scale = attentionScale(s, dims);
  bool causal = s.attrs[kCausal].i != 0;
  const std::vector<int64_t> &members = s.facts.members;
  int64_t n = (int64_t)members.size(), nk = f.n(s.in[K]), nv = f.n(s.in[V]);
  int64_t next = members[n > 1 ? 1 : 0], prev = members[n - 1];
  auto pass = [&](std::vector<float> mine) {
    if (n == 1)
      return mine;
    Mail sendTo = f.collectives->noMail(), recvFrom = f.collectives->noMail();
    recvFrom[prev].resize(mine.size());
    sendTo[next] = std::move(mine);
    f.collectives->exchange(s.attrs[kAxes].strings, sendTo, recvFrom,
                            f.tensors[s.in[K]].elementBytes());
    return std::move(recvFrom[prev]);
  };
  auto keysOf = [&](int64_t i) { return s.facts.memberPositions[(n - i) % n].data(); };
  std::vector<float> own(f.f(s.in[K]), f.f(s.in[K]) + nk);
  own.insert(own.end(), f.f(s.in[V]), f.f(s.in[V]) + nv);

  int64_t nq = f.n(q), stats = dims.B * dims.HQ * dims.Sq;
  std::vector<float> out(nq), lse(stats), part(nq), partLse(stats), delta(stats);
  std::vector<float> block = own;
  for (int64_t i = 0; i < n; ++i) {
    bool first = i == 0;
    cpu::attention(f.f(q), block.data(), block.data() + nk, s.facts.positions.data(), keysOf(i),
                   dims, causal, scale, first ? out.data() : part.data(),
                   first ? lse.data() : partLse.data());
    if (!first)
      cpu::attention_merge(out.data(), lse.data(), part.data(), partLse.data(), dims.B, dims.Sq,
                           dims.HQ, dims.D, out.data(), lse.data());
    if (i + 1 < n)
      block = pass(std::move(block));
  }
  cpu::attention_delta(f.f(dy), out.data(), dims.B, dims.Sq, dims.HQ, dims.D, delta.data());

  float *dq = f.f(s.out[0]);
  std::fill(dq, dq + nq, 0.0f);
  std::vector<float> carried = own;
  carried.resize(2 * (nk + nv), 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    float *kb = carried.data(), *vb = kb + nk, *dkb = vb + nv, *dvb = dkb + nk;
    cpu::attention_block_grad(f.f(q), kb, vb, f.f(dy), s.facts.positions.data(), keysOf(i), dims,
                              causal, scale, 0, lse.data(), delta.data(), dq, dkb, dvb);
    if (i + 1 < n)
      carried = pass(std::move(carried));
  }
  std::vector<float> home = pass(std::vector<float>(carried.begin() + nk + nv, carried.end()));
  std::copy_n(home.begin(), nk, f.f(s.out[1]));
  std::copy_n(home.begin() + nk, nv, f.f(s.out[2]));
}

/// Ring attention's operands, dy, dq of q's shape and dk, dv of k's.
void checkRingAttentionGrad(Contract &c) {
  Contract::Arg q = operand(0), k = operand(1);
  checkAttentionInputs(c);
  c.sameShape(operand(3), q)
      .sameShape(result(0), q)
      .sameShape(result(1), k)
      .sameShape(result(2), k);
}

} // namespace

SHARDLINE_CPU_KERNELS(ring_grad) {
  std::vector<AttrSpec> attrs = attentionAttrs();
  attrs.push_back({"axes", AttrKind::Strings});
  addKernel(t, "ring_attention_grad",
            {{"q", "k", "v", "dy"},
             {"dq", "dk", "dv"},
             attrs,
             ringAttentionGrad,
             resolveRing,
             checkRingAttentionGrad});
}

} // namespace shardline::rt
