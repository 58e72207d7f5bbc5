//===- kernels_grad.h - CUDA backward kernels and AdamW ---------*- C++ -*-===//
//
// kernels.h's convention (device pointers, queued on `stream`, the CUDA error
// of the launch returned) for the backward ops of training and AdamW.
// Semantics are those of kernels/cpu/kernels.h, the arithmetic that of
// kernels/cuda/arith_grad.h, the launch shapes those of launch_grad.h.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CUDA_KERNELS_GRAD_H
#define SHARDLINE_RUNTIME_KERNELS_CUDA_KERNELS_GRAD_H

#include "kernels/cuda/arith_grad.h"
#include "kernels/cuda/kernels.h"
#include "kernels/cuda/launch_grad.h"
#include "kernels/cuda/ssd_grad_arith.h"

namespace shardline::rt::cuda {

/// dx = dy · f'(x) for the named f, n elements.
cudaError_t silu_grad(const float *x, const float *dy, int64_t n, float *dx, cudaStream_t stream);
cudaError_t gelu_grad(const float *x, const float *dy, int64_t n, float *dx, cudaStream_t stream);
cudaError_t sigmoid_grad(const float *x, const float *dy, int64_t n, float *dx,
                         cudaStream_t stream);
cudaError_t softplus_grad(const float *x, const float *dy, int64_t n, float *dx,
                          cudaStream_t stream);
/// SwiGLU's cotangents of gate and up.
cudaError_t swiglu_grad(const float *gate, const float *up, const float *dy, int64_t n,
                        float *dgate, float *dup, cudaStream_t stream);

/// dx of RMSNorm over T rows of H (one block a row, double sums).
cudaError_t rms_norm_grad(const float *x, const float *w, const float *dy, int64_t T, int64_t H,
                          float eps, float *dx, cudaStream_t stream);
/// dw[H] = sum over the T rows of dy·x·r (r each row's inverse rms, into the
/// scratch inverse[T]), summed in double in row order.
cudaError_t rms_norm_grad_weight(const float *x, const float *dy, int64_t T, int64_t H, float eps,
                                 double *inverse, float *dw, cudaStream_t stream);

/// Mamba's gated norm's backward over T rows of C channels in `groups`
/// groups: dy and dz (one block a row's group, double sums), and dweight[C]
/// (each row's groups' inverse rms into the scratch inverse[T * groups],
/// then a thread a channel summing the rows in order in double).
cudaError_t gated_rms_norm_grad(const float *y, const float *z, const float *w, const float *dout,
                                int64_t T, int64_t C, int64_t groups, float eps, float *dy,
                                float *dz, cudaStream_t stream);
cudaError_t gated_rms_norm_grad_weight(const float *y, const float *z, const float *dout, int64_t T,
                                       int64_t C, int64_t groups, float eps, double *inverse,
                                       float *dw, cudaStream_t stream);

/// RoPE's backward: dy[B, S, NH*D] rotated back at the global positions[S].
cudaError_t rope_grad(const float *dy, const int64_t *positions, int64_t B, int64_t S, int64_t NH,
                      int64_t D, float theta, float *dx, cudaStream_t stream);

/// What attention's backward reads and the scratch it fills: the forward's
/// output out[B, Sq, HQ*D], lse and delta [B, HQ, Sq], recomputed first.
struct AttentionGradArgs {
  const float *q, *k, *v, *dy;
  const int64_t *qPositions, *kPositions;
  int64_t B, Sq, Sk, HQ, HKV, D;
  bool causal;
  float scale;
  int64_t window; ///< keys within this many tokens of the query, when positive
  float *out, *lse, *delta;
};

/// Causal (or not, or sliding-window) GQA attention's dq (when dq is not
/// nullptr) and dk and dv (summed over the query heads of each kv head; when
/// dk is not nullptr): the forward again for its log-sum-exp, each query's
/// delta, then the dq kernel (the forward's `tiling`) and the dk, dv kernel
/// (`gradTiling`).
cudaError_t attention_grad(const AttentionGradArgs &a, const AttentionTiling &tiling,
                           const AttentionGradTiling &gradTiling, float *dq, float *dk, float *dv,
                           cudaStream_t stream);

/// delta [B, HQ, Sq] of each query: dy·out over its D values (the forward's
/// out [B, Sq, HQ*D]), in double (arith::attentionDelta).
cudaError_t attention_delta(const float *dy, const float *out, int64_t B, int64_t Sq, int64_t HQ,
                            int64_t D, float *delta, cudaStream_t stream);

/// attention_grad's dq and dk, dv kernels alone, from a.lse and a.delta as
/// given (a.out is not read): the share of the keys k, v of a softmax whose
/// log-sum-exp and delta cover more keys than these, as ring attention's
/// backward takes each member's block (kernels/cpu, attention_block_grad).
/// dq, dk and dv are written, not added to.
cudaError_t attention_grad_from_stats(const AttentionGradArgs &a, const AttentionTiling &tiling,
                                      const AttentionGradTiling &gradTiling, float *dq, float *dk,
                                      float *dv, cudaStream_t stream);

/// dlogits[T, V] of the mean cross-entropy over `tokens` tokens (a whole
/// vocabulary: world size 1); every label outside [0, V) adds one to
/// *badLabels (its row gets no -1).
cudaError_t cross_entropy_grad(const float *logits, const int32_t *labels, int64_t T, int64_t V,
                               double tokens, float *dlogits, int32_t *badLabels,
                               cudaStream_t stream);

/// dtable[rows, H]: each token's dy row added to its table row (ids offset
/// by `offset`; other rows' tokens skipped), in token order in double in the
/// scratch acc[rows, H]; every id outside [0, limit) adds one to *badIds.
cudaError_t embedding_grad(const int32_t *ids, const float *dy, int64_t T, int64_t rows, int64_t H,
                           int64_t offset, int64_t limit, double *acc, float *dtable,
                           int32_t *badIds, cudaStream_t stream);

/// *out = the sum of x[i]^2 over n values, in double (partials: scratch of
/// sumShape(n).blocks doubles), rounded to f32.
cudaError_t sum_squares(const float *x, int64_t n, double *partials, float *out,
                        cudaStream_t stream);

/// AdamW on n values in place, clipped by the global norm from *sumsq (on
/// the device); a non-finite *sumsq changes nothing and adds one to
/// *badSumsq.
cudaError_t adamw(float *w, const float *grad, float *m, float *v, int64_t n,
                  const arith::AdamWConstants &constants, const float *sumsq, int32_t *badSumsq,
                  cudaStream_t stream);

/// AdamW of a 16-bit weight w (BF16 or F16) through its f32 main copy, as
/// adamw on main, m and v, then w = main rounded to w's type; grad of w's
/// type or f32. Any other types return cudaErrorInvalidValue.
cudaError_t adamw_main(Dst w, Src grad, float *main, float *m, float *v, int64_t n,
                       const arith::AdamWConstants &constants, const float *sumsq,
                       int32_t *badSumsq, cudaStream_t stream);

/// Causal depthwise conv1d's backward over B sequences (whole, or chunks of
/// a sequence split over ranks) x, dy [B, S, C], the kernel w[C, W]: dx,
/// and each sequence's halo rows' gradient dhalo [B, W - 1, C] when dhalo
/// is not nullptr; dweight [C, W] with dbias [C], the taps before each
/// sequence reading its rows of halo [B, W - 1, C] (zero when nullptr).
cudaError_t causal_conv1d_grad(const float *w, const float *dy, int64_t B, int64_t S, int64_t C,
                               int64_t W, float *dx, float *dhalo, cudaStream_t stream);
cudaError_t causal_conv1d_grad_weight(const float *x, const float *halo, const float *dy, int64_t B,
                                      int64_t S, int64_t C, int64_t W, float *dweight, float *dbias,
                                      cudaStream_t stream);

/// The RG-LRU scan's backward over whole sequences or the chunks of
/// sequences split over ranks (arith_grad.h, RglruGradArgs), one thread a
/// channel.
cudaError_t rglru_scan_grad(const arith::RglruGradArgs &args, cudaStream_t stream);

/// The Mamba-2 SSD scan's backward over whole sequences or the chunks of
/// sequences split over ranks, in chunks of arith::kSsdChunk tokens
/// (ssd_grad_arith.h): `args.fwd` holds the forward's inputs (the raw dt,
/// dt_bias and a_log), `launch` is ssdGradLaunch's for these sizes and
/// `scratch` a device buffer of its scratchBytes (the scratch pointers of
/// `args` are set from it); args.ddt and args.dA receive the cotangents of
/// the prelude's dt and of A. Then the prelude's backward, one thread a
/// head: ddtRaw (when not nullptr) the cotangent of dt, ddtBias and daLog
/// (when not nullptr) those of dt_bias and a_log.
cudaError_t ssd_scan_grad(arith::SsdGradArgs args, const SsdGradLaunch &launch, void *scratch,
                          float *ddtRaw, float *ddtBias, float *daLog, cudaStream_t stream);

/// The SSD scan's prelude over T tokens of NH heads: dt' = softplus(dt +
/// dt_bias) into dtPrelude [T, NH] and A = -exp(a_log) into A [NH]; and its
/// backward from the prelude dt's cotangent ddt [T, NH] and dA [NH], one
/// thread a head: ddtRaw (when not nullptr) the cotangent of dt, ddtBias
/// and daLog (when not nullptr) those of dt_bias and a_log.
cudaError_t ssd_prelude(const float *dt, const float *dtBias, const float *aLog, int64_t T,
                        int64_t NH, float *dtPrelude, float *A, cudaStream_t stream);
cudaError_t ssd_prelude_grad(const float *dt, const float *dtBias, const float *aLog,
                             const float *ddt, const float *dA, int64_t T, int64_t NH,
                             float *ddtRaw, float *ddtBias, float *daLog, cudaStream_t stream);

/// The router's backward: dlogits[T, E] from the weights, indices and
/// dweights [T, k]; every index outside [0, E) adds one to *badIds.
cudaError_t router_topk_grad(const float *weights, const int32_t *idx, const float *dweights,
                             int64_t T, int64_t k, int64_t E, float *dlogits, int32_t *badIds,
                             cudaStream_t stream);
/// The combine's backward into slabs: dslabs[E, T, H] zeroed, then each
/// token's chosen rows weights·dy[t].
cudaError_t moe_combine_grad(const float *weights, const int32_t *idx, const float *dy, int64_t T,
                             int64_t H, int64_t k, int64_t E, float *dslabs, cudaStream_t stream);
/// dweights[T, k]: each choice's <slab row, dy[t]>.
cudaError_t moe_combine_grad_weights(const float *slabs, const int32_t *idx, const float *dy,
                                     int64_t T, int64_t H, int64_t k, int64_t E, float *dweights,
                                     cudaStream_t stream);
/// The dispatch's backward: dx[T, H], each token's chosen slab rows summed.
cudaError_t moe_dispatch_grad(const float *dslabs, const int32_t *idx, int64_t T, int64_t H,
                              int64_t k, int64_t E, float *dx, cudaStream_t stream);

} // namespace shardline::rt::cuda

#endif
