//===- local_attention_grad.cpp - Backward of sliding-window attention ----===//
//
// Each chunk's keys are its halo and its own, as in the forward; the halo
// rows' gradients are results of their own, which the halo's dual
// (halo_add) takes back to their tokens.
//
//===----------------------------------------------------------------------===//

#include "exec/verify.h"
#include "kernels/cpu/internal.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/table.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace shardline::rt::cpu {

void local_attention_grad(const float *q, const float *k, const float *v, const float *halo_k,
                          const float *halo_v, const float *dy, int64_t H, int64_t start,
                          const AttentionDims &d, int64_t window, float *dq, float *dk, float *dv,
                          float *dhalo_k, float *dhalo_v) {
  detail::LocalWindow w(H, start, d.Sq);
  int64_t S = w.S, ld = d.HKV * d.D, qw = d.HQ * d.D;
  std::vector<float> kk(w.Sk * ld), vv(w.Sk * ld), dkk(w.Sk * ld), dvv(w.Sk * ld), out(S * qw),
      lse(d.HQ * S), delta(d.HQ * S);
  AttentionDims one{1, S, w.Sk, d.HQ, d.HKV, d.D};
  float scale = (float)(1.0 / std::sqrt((double)d.D));
  for (int64_t b = 0; b < d.B; ++b) {
    w.gather(halo_k, k, b, ld, kk.data());
    w.gather(halo_v, v, b, ld, vv.data());
    const float *qb = q + b * S * qw, *dyb = dy + b * S * qw;
    attention(qb, kk.data(), vv.data(), w.qPos.data(), w.kPos.data(), one, true, scale, out.data(),
              lse.data(), window);
    attention_delta(dyb, out.data(), 1, S, d.HQ, d.D, delta.data());
    float *dqb = dq + b * S * qw;
    std::fill(dqb, dqb + S * qw, 0.0f);
    std::fill(dkk.begin(), dkk.end(), 0.0f);
    std::fill(dvv.begin(), dvv.end(), 0.0f);
    attention_block_grad(qb, kk.data(), vv.data(), dyb, w.qPos.data(), w.kPos.data(), one, true,
                         scale, window, lse.data(), delta.data(), dqb, dkk.data(), dvv.data());
    // The rows gathered from the halo go back to the halo's gradient, the
    // rows before position 0 (not gathered) get zero.
    for (auto [src, halo, own] :
         {std::tuple{dkk.data(), dhalo_k, dk}, std::tuple{dvv.data(), dhalo_v, dv}}) {
      if (H > 0) {
        std::fill_n(halo + b * H * ld, w.skip * ld, 0.0f);
        std::copy_n(src, w.kept * ld, halo + (b * H + w.skip) * ld);
      }
      std::copy_n(src + w.kept * ld, S * ld, own + b * S * ld);
    }
  }
}

} // namespace shardline::rt::cpu

// -- the kernel table's entries ---------------------------------------------

namespace shardline::rt {

namespace {

enum { kHeads, kWindow };

/// Each local sequence chunk, as the forward kernel takes them: operands q,
/// k, v, then the halos when `Halo`, then dy; results dq, dk, dv, then the
/// halos' gradients.
template <bool Halo> void localAttentionGrad(const Step &s, Frame &f) {
  enum { Q, K, V };
  int DY = Halo ? 5 : 3;
  const TensorInfo &qt = f.tensors[s.in[Q]];
  int64_t window = s.attrs[kWindow].i, chunks = chunksOf(qt), S = qt.local[1] / chunks;
  int64_t D = f.global(s.in[Q])[2] / s.attrs[kHeads].i, qw = qt.local[2], kw = f.local(s.in[K])[2],
          H = Halo ? window - 1 : 0;
  cpu::AttentionDims dims{1, S, S, qw / D, kw / D, D};
  forEachChunk(qt, true, [&](int64_t rows, int64_t bi, int64_t c) {
    int64_t haloRows = (bi * chunks + c) * H * kw;
    auto at = [&](int32_t t, int64_t offset) { return f.f(t) + offset; };
    cpu::local_attention_grad(
        at(s.in[Q], rows * qw), at(s.in[K], rows * kw), at(s.in[V], rows * kw),
        Halo ? at(s.in[3], haloRows) : nullptr, Halo ? at(s.in[4], haloRows) : nullptr,
        at(s.in[DY], rows * qw), H, s.facts.positions[c * S], dims, window, at(s.out[0], rows * qw),
        at(s.out[1], rows * kw), at(s.out[2], rows * kw), Halo ? at(s.out[3], haloRows) : nullptr,
        Halo ? at(s.out[4], haloRows) : nullptr);
  });
}

/// Local attention's contract (attention's, one sequence length, a window
/// within it), dy and dq of q's shape, dk and dv of k's, and with halos
/// window - 1 rows of k's width before each chunk, their gradients alike.
template <bool Halo> void checkLocalAttentionGrad(Contract &c) {
  Contract::Arg q = operand(0), k = operand(1);
  checkAttentionInputs(c);
  c.sameDim(k, 1, q, 1).attrIn(kWindow, 1, c.global(q).empty() ? 1 : c.global(q)[1]);
  c.sameShape(operand(Halo ? 5 : 3), q).sameShape(result(0), q).sameShape(result(1), k);
  c.sameShape(result(2), k);
  if (!Halo || !c.ok())
    return;
  Contract::Arg kHalo = operand(3);
  int64_t chunks = c.chunks(q);
  c.require(c.dim(q, 1) % chunks == 0,
            c.dimText(q, 1) + ", not " + std::to_string(chunks) + " equal chunks");
  c.sameShape(operand(4), kHalo).sameShape(result(3), kHalo).sameShape(result(4), kHalo);
  c.elementsAtLeast(kHalo,
                    Contract::product({c.dim(q, 0), chunks, c.intAttr(kWindow) - 1, c.dim(k, 2)}),
                    "batch x chunks x (window - 1) x k's width");
}

} // namespace

SHARDLINE_CPU_KERNELS(local_attention_grad) {
  const std::vector<AttrSpec> attrs = {{"heads", AttrKind::Int}, {"window", AttrKind::Int}};
  addKernel(t, "local_attention_grad",
            {{"q", "k", "v", "dy"},
             {"dq", "dk", "dv"},
             attrs,
             localAttentionGrad<false>,
             resolvePositions,
             checkLocalAttentionGrad<false>});
  addKernel(t, "local_attention_grad_halo",
            {{"q", "k", "v", "k_halo", "v_halo", "dy"},
             {"dq", "dk", "dv", "dk_halo", "dv_halo"},
             attrs,
             localAttentionGrad<true>,
             resolvePositions,
             checkLocalAttentionGrad<true>});
}

} // namespace shardline::rt
