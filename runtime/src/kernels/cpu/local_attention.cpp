//===- local_attention.cpp - Sliding-window causal attention --------------===//

#include "exec/verify.h"
#include "kernels/cpu/internal.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/table.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace shardline::rt::cpu {

detail::LocalWindow::LocalWindow(int64_t H, int64_t start, int64_t S)
    : H(H), S(S), skip(std::max<int64_t>(0, H - start)), kept(H - skip), Sk(kept + S), qPos(S),
      kPos(Sk) {
  std::iota(qPos.begin(), qPos.end(), start);
  std::iota(kPos.begin(), kPos.end(), start - kept);
}

void detail::LocalWindow::gather(const float *halo, const float *own, int64_t b, int64_t ld,
                                 float *dst) const {
  if (kept > 0)
    std::copy_n(halo + (b * H + skip) * ld, kept * ld, dst);
  std::copy_n(own + b * S * ld, S * ld, dst + kept * ld);
}

void local_attention(const float *q, const float *k, const float *v, const float *halo_k,
                     const float *halo_v, int64_t H, int64_t start, const AttentionDims &d,
                     int64_t window, float *out) {
  detail::LocalWindow w(H, start, d.Sq);
  int64_t ld = d.HKV * d.D, qw = d.HQ * d.D;
  std::vector<float> kk(w.Sk * ld), vv(w.Sk * ld);
  AttentionDims one{1, w.S, w.Sk, d.HQ, d.HKV, d.D};
  float scale = (float)(1.0 / std::sqrt((double)d.D));
  for (int64_t b = 0; b < d.B; ++b) {
    w.gather(halo_k, k, b, ld, kk.data());
    w.gather(halo_v, v, b, ld, vv.data());
    attention(q + b * w.S * qw, kk.data(), vv.data(), w.qPos.data(), w.kPos.data(), one, true,
              scale, out + b * w.S * qw, nullptr, window);
  }
}

} // namespace shardline::rt::cpu

// -- the kernel table's entries ---------------------------------------------

namespace shardline::rt {

namespace {

enum { kHeads, kWindow };

/// Each local sequence chunk (a zigzag rank holds two) attends over its own
/// keys and, when the sequence is split, the window - 1 keys before it that
/// sl.halo brought.
void localAttention(const Step &s, Frame &f) {
  enum { Q, K, V, KHalo, VHalo };
  const TensorInfo &qt = f.tensors[s.in[Q]];
  bool halo = s.has(KHalo);
  int64_t window = s.attrs[kWindow].i, chunks = chunksOf(qt), S = qt.local[1] / chunks;
  int64_t D = f.global(s.in[Q])[2] / s.attrs[kHeads].i, qw = qt.local[2], kw = f.local(s.in[K])[2],
          H = halo ? window - 1 : 0;
  cpu::AttentionDims dims{1, S, S, qw / D, kw / D, D};
  forEachChunk(qt, true, [&](int64_t rows, int64_t bi, int64_t c) {
    int64_t haloRows = (bi * chunks + c) * H * kw;
    cpu::local_attention(f.f(s.in[Q]) + rows * qw, f.f(s.in[K]) + rows * kw,
                         f.f(s.in[V]) + rows * kw, halo ? f.f(s.in[KHalo]) + haloRows : nullptr,
                         halo ? f.f(s.in[VHalo]) + haloRows : nullptr, H, s.facts.positions[c * S],
                         dims, window, f.f(s.out[0]) + rows * qw);
  });
}

/// Attention's contract, q and k of one sequence length, a window of at
/// least one token and at most the sequence, and the halos: window - 1 rows
/// of k's width before each chunk of each batch entry.
void checkLocalAttention(Contract &c) {
  Contract::Arg q = operand(0), k = operand(1), kHalo = operand(3), vHalo = operand(4);
  checkAttention(c);
  c.sameDim(k, 1, q, 1).attrIn(kWindow, 1, c.global(q).empty() ? 1 : c.global(q)[1]);
  c.require(c.has(kHalo) == c.has(vHalo), "k_halo and v_halo come together");
  if (!c.ok() || !c.has(kHalo))
    return;
  int64_t chunks = c.chunks(q);
  c.require(c.dim(q, 1) % chunks == 0,
            c.dimText(q, 1) + ", not " + std::to_string(chunks) + " equal chunks");
  c.sameShape(vHalo, kHalo);
  c.elementsAtLeast(kHalo,
                    Contract::product({c.dim(q, 0), chunks, c.intAttr(kWindow) - 1, c.dim(k, 2)}),
                    "batch x chunks x (window - 1) x k's width");
}

} // namespace

SHARDLINE_CPU_KERNELS(local_attention) {
  addKernel(t, "local_attention",
            {{"q", "k", "v", "k_halo?", "v_halo?"},
             kResult,
             {{"heads", AttrKind::Int}, {"window", AttrKind::Int}},
             localAttention,
             resolvePositions,
             checkLocalAttention});
}

} // namespace shardline::rt
