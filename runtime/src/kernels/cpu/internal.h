//===- internal.h - Helpers shared by the CPU kernels -----------*- C++ -*-===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CPU_INTERNAL_H
#define SHARDLINE_RUNTIME_KERNELS_CPU_INTERNAL_H

#include "kernels/cpu/kernels.h"

#include <cmath>
#include <cstdint>
#include <vector>

namespace shardline::rt::cpu::detail {

/// Row-major C[M,N] = alpha op(A)[M,K] op(B)[K,N] + beta C, with leading
/// dimensions so that a head or an expert can be addressed inside a larger
/// tensor. Empty products only scale C.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
          int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/// The attention probabilities of one (batch, query head): with q rows qh
/// [Sq, D] (row stride ldq) and k rows kh [Sk, D] (row stride ldk),
/// p[Sq,Sk] = softmax over the visible keys of scale qh kh^T (attention() in
/// kernels.h says which keys are visible), scores in f32, the softmax in
/// double; a query with no visible key gets a zero row. lse[Sq] (nullptr:
/// not wanted) receives each row's log-sum-exp, -inf for an empty row. The
/// forward and the backward kernels share it so that the backward
/// differentiates exactly the probabilities the forward used.
void attention_probs(const float *qh, int64_t ldq, const float *kh, int64_t ldk,
                     const int64_t *q_pos, const int64_t *k_pos, int64_t Sq, int64_t Sk, int64_t D,
                     bool causal, float scale, int64_t window, float *p, float *lse);

/// 1/sqrt(mean(x^2) + eps) over n values, in double: the scale of RMSNorm and
/// of the gated norm's groups, which their backward kernels recompute.
inline double inverse_rms(const float *x, int64_t n, float eps) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i)
    ss += static_cast<double>(x[i]) * x[i];
  return 1.0 / std::sqrt(ss / (double)n + eps);
}

/// The last step of one head's attention backward over a block of keys,
/// given its probabilities p[Sq,Sk] and dS = P∘(dP − rowsum)[Sq,Sk]:
///   dq = scale·dS·k + dqBeta·dq,  dk += scale·dSᵀ·q,  dv += Pᵀ·dy
/// (rows at the strides of qh/dyh/dq and kh/dk/dv). dq or dk (with dv) may be
/// nullptr. attention_grad, ring_attention_grad and local attention share it.
void attention_grad_from_scores(const float *ds, const float *p, const float *qh, int64_t ldq,
                                const float *kh, int64_t ldk, const float *dyh, int64_t Sq,
                                int64_t Sk, int64_t D, float scale, float *dq, float dqBeta,
                                float *dk, float *dv);

/// The keys one chunk of local_attention() reads: its halo's H rows at
/// [start - H, start) less those before position 0 (not keys), then its own
/// S rows. Gathers them, for batch entry b, from halo[B,H,ld] and own[B,S,ld]
/// into [Sk, ld] rows; the forward and the backward share it.
struct LocalWindow {
  int64_t H, S, skip, kept, Sk;
  std::vector<int64_t> qPos, kPos;
  LocalWindow(int64_t H, int64_t start, int64_t S);
  void gather(const float *halo, const float *own, int64_t b, int64_t ld, float *dst) const;
};

/// Calls fn(t, j, row) for every kept choice j of every local token t (the
/// flat b*S + s) in token then j order, with the buffer row it takes: the
/// one walk that capacity-mode dispatch, combine and their gradients share.
template <typename Fn>
void for_each_kept(const int32_t *idx, const int32_t *slots, const CapacityDims &d, Fn fn) {
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t s = 0; s < d.S; ++s) {
      const int64_t t = b * d.S + s;
      for (int64_t j = 0; j < d.k; ++j)
        if (slots[t * d.k + j] >= 0)
          fn(t, j, d.row(idx[t * d.k + j], b, s, slots[t * d.k + j]));
    }
}

// The branch keeps exp() from overflowing to inf for large |x|.
inline double sigmoid(double x) {
  if (x >= 0)
    return 1.0 / (1.0 + std::exp(-x));
  double e = std::exp(x);
  return e / (1.0 + e);
}

inline double silu(double x) { return x * sigmoid(x); }

inline double softplus(double x) {
  return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
}

inline double log_sigmoid(double x) { return -softplus(-x); }

/// The rows of slabs [E, R, H] that are not all zero, the rows the experts
/// compute (an all-zero row maps to zero and, with no biases, adds nothing to
/// any gradient): their flat row indices e·R + r in expert order, and each
/// expert's count.
inline void nonZeroSlabRows(const float *slabs, int64_t E, int64_t R, int64_t H,
                            std::vector<int32_t> &counts, std::vector<int64_t> &rows) {
  counts.assign(E, 0);
  rows.clear();
  for (int64_t e = 0; e < E; ++e)
    for (int64_t r = 0; r < R; ++r) {
      const float *row = slabs + (e * R + r) * H;
      bool zero = true;
      for (int64_t h = 0; zero && h < H; ++h)
        zero = row[h] == 0.0f;
      if (zero)
        continue;
      ++counts[e];
      rows.push_back(e * R + r);
    }
}

} // namespace shardline::rt::cpu::detail

#endif // SHARDLINE_RUNTIME_KERNELS_CPU_INTERNAL_H
