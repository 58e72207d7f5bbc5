//===- kernels.h - CUDA kernels (checked against the CPU reference) -------===//
//
// Device pointers in, device pointers out, queued on `stream`; each returns
// the CUDA error of its launch. Semantics are those of kernels/cpu/kernels.h,
// the arithmetic that of kernels/cuda/arith.h, the launch shapes those of
// kernels/cuda/launch.h. The memory-bound kernels (elementwise, the norms,
// RoPE, embedding), the causal conv1d, the RG-LRU scan and the loss also
// take tensors as stored, f32, bf16 or f16 (Src, Dst):
// each element widened as it is loaded and rounded once as it is stored
// (arith.h, Storage). Every other kernel's floating-point tensors are f32:
// the executor widens 16-bit storage to f32 around those steps
// (exec/program.h, Frame).
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CUDA_KERNELS_H
#define SHARDLINE_RUNTIME_KERNELS_CUDA_KERNELS_H

#include "kernels/cuda/arith.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/ssd_arith.h"

#include <cuda_runtime_api.h>

#include <cstdint>

namespace shardline::rt::cuda {

/// n elements of `from` (of type `fromType`) into `to`, converted as
/// Device::convert does (device/device.h).
cudaError_t convert(const void *from, arith::Type fromType, void *to, arith::Type toType, int64_t n,
                    cudaStream_t stream);

/// Each f32 value v of v[n] as two bf16 values into hi[n] and lo[n]: hi =
/// bf16(v), lo = bf16(v − hi) (arith::splitValue), v to 2^-16 of it: an f32
/// factor of a GEMM on the bf16 tensor cores as two.
cudaError_t split_bf16(const float *v, int64_t n, void *hi, void *lo, cudaStream_t stream);

/// A float tensor on the device as it is stored: its elements and their type
/// (F32, BF16 or F16). A kernel given another type, or activations of
/// different types where it takes one, returns cudaErrorInvalidValue.
struct Src {
  const void *data;
  arith::Type type;
};
struct Dst {
  void *data;
  arith::Type type;
};

/// An f32 tensor as a Src or Dst.
inline Src f32(const float *data) { return {data, arith::Type::F32}; }
inline Dst f32(float *data) { return {data, arith::Type::F32}; }

// Elementwise over n values, the operands and the result all of one type.
cudaError_t add(Src a, Src b, int64_t n, Dst out, cudaStream_t stream);
cudaError_t mul(Src a, Src b, int64_t n, Dst out, cudaStream_t stream);
cudaError_t swiglu(Src g, Src u, int64_t n, Dst out, cudaStream_t stream);
cudaError_t silu(Src x, int64_t n, Dst out, cudaStream_t stream);
cudaError_t gelu(Src x, int64_t n, Dst out, cudaStream_t stream);
cudaError_t sigmoid(Src x, int64_t n, Dst out, cudaStream_t stream);
cudaError_t softplus(Src x, int64_t n, Dst out, cudaStream_t stream);

// The same over f32 tensors.
cudaError_t add(const float *a, const float *b, int64_t n, float *out, cudaStream_t stream);
cudaError_t mul(const float *a, const float *b, int64_t n, float *out, cudaStream_t stream);
cudaError_t silu(const float *x, int64_t n, float *out, cudaStream_t stream);
cudaError_t swiglu(const float *g, const float *u, int64_t n, float *out, cudaStream_t stream);
cudaError_t gelu(const float *x, int64_t n, float *out, cudaStream_t stream);
cudaError_t sigmoid(const float *x, int64_t n, float *out, cudaStream_t stream);
cudaError_t softplus(const float *x, int64_t n, float *out, cudaStream_t stream);

/// Mamba's gated norm over T rows of C channels in `groups` groups:
/// out = y / sqrt(mean_group(y^2) + eps) * w * silu(z); y, z and out of one
/// type, w of any.
cudaError_t gated_rms_norm(Src y, Src z, Src w, int64_t T, int64_t C, int64_t groups, float eps,
                           Dst out, cudaStream_t stream);
cudaError_t gated_rms_norm(const float *y, const float *z, const float *w, int64_t T, int64_t C,
                           int64_t groups, float eps, float *out, cudaStream_t stream);

/// y = x / sqrt(mean_h(x^2) + eps) * w over T rows of H; f32 accumulation;
/// x and y of one type, w of any.
cudaError_t rms_norm(Src x, Src w, int64_t T, int64_t H, float eps, Dst y, cudaStream_t stream);
cudaError_t rms_norm(const float *x, const float *w, int64_t T, int64_t H, float eps, float *y,
                     cudaStream_t stream);

/// out[t] = table[ids[t] - offset] for the rows this shard holds (rows of
/// the table, H wide; any float type), zero for the others; every id
/// outside [0, limit) adds one to *badIds.
cudaError_t embedding(const int32_t *ids, int64_t T, Src table, int64_t rows, int64_t H,
                      int64_t offset, int64_t limit, Dst out, int32_t *badIds, cudaStream_t stream);
cudaError_t embedding(const int32_t *ids, int64_t T, const float *table, int64_t rows, int64_t H,
                      int64_t offset, int64_t limit, float *out, int32_t *badIds,
                      cudaStream_t stream);

/// Rotary embedding of x[B, S, NH*D] at the global positions[S]; x and out
/// of one type.
cudaError_t rope(Src x, const int64_t *positions, int64_t B, int64_t S, int64_t NH, int64_t D,
                 float theta, Dst out, cudaStream_t stream);
cudaError_t rope(const float *x, const int64_t *positions, int64_t B, int64_t S, int64_t NH,
                 int64_t D, float theta, float *out, cudaStream_t stream);

/// Softmax attention of q[B, Sq, HQ*D] over k, v [B, Sk, HKV*D] at the
/// given query and key positions, cut as `tiling` says (attentionTiling of
/// B, HQ, Sq, D); lse[B, HQ, Sq] receives each query's log-sum-exp unless it
/// is nullptr.
cudaError_t attention(const float *q, const float *k, const float *v, const int64_t *qPositions,
                      const int64_t *kPositions, int64_t B, int64_t Sq, int64_t Sk, int64_t HQ,
                      int64_t HKV, int64_t D, bool causal, float scale, int64_t window,
                      const AttentionTiling &tiling, float *out, float *lse, cudaStream_t stream);

/// The same attention over bf16 or f16 q, k, v on the tensor cores
/// (attention_tc.h), cut as `tiling` says (attentionTcTiling of B, HQ, Sq,
/// D): out in the type of q or in f32 (a ring's partial outputs), lse f32
/// (or nullptr). q, k and v share one 16-bit type.
cudaError_t attention_tc(Src q, Src k, Src v, const int64_t *qPositions, const int64_t *kPositions,
                         int64_t B, int64_t Sq, int64_t Sk, int64_t HQ, int64_t HKV, int64_t D,
                         bool causal, float scale, int64_t window, const AttentionTcTiling &tiling,
                         Dst out, float *lse, cudaStream_t stream);

/// A local [B, S, ...] value cut into `chunks` sequences per batch entry
/// (arith.h, sequenceAt).
struct Sequences {
  int64_t B, S, chunks;
};

/// Causal depthwise conv1d of x[B, S, C] with w[C, W] and bias[C] (data
/// nullptr: none), each sequence reading the W - 1 rows before it from halo
/// (data nullptr: zeros); x, the halo and y of one type, w and the bias of
/// one (any float type).
cudaError_t causal_conv1d(Src x, Src w, Src bias, Src halo, const Sequences &seq, int64_t C,
                          int64_t W, Dst y, cudaStream_t stream);
cudaError_t causal_conv1d(const float *x, const float *w, const float *bias, const float *halo,
                          const Sequences &seq, int64_t C, int64_t W, float *y,
                          cudaStream_t stream);

/// The Mamba-2 SSD scan of x[B, S, NH*P] with dt[B, S, NH] (before the
/// prelude: dt_bias and a_log [NH] are applied here), B and C [B, S, G*N]
/// and the skip D[NH] (nullptr: none), each sequence from state_in (nullptr:
/// zero) into state_out [slots, NH, P, N] and decay_out [slots, NH], in
/// chunks of arith::kSsdChunk tokens (ssd_arith.h); `launch` is
/// ssdLaunch's for these sizes, `scratch` a device buffer of its
/// bytesFor(y's type). x, dt, B, C and y share one type (f32, bf16 or
/// f16), dt_bias, a_log and D one (f32 or the activations'); state_in,
/// state_out and decay_out may each be of any float type.
cudaError_t ssd_scan(Src x, Src dt, Src dtBias, Src aLog, Src Bm, Src Cm, Src D, Src stateIn,
                     const Sequences &seq, int64_t NH, int64_t P, int64_t G, int64_t N, Dst y,
                     Dst stateOut, Dst decayOut, const SsdLaunch &launch, void *scratch,
                     cudaStream_t stream);
/// The f32 scan.
cudaError_t ssd_scan(const float *x, const float *dt, const float *dtBias, const float *aLog,
                     const float *Bm, const float *Cm, const float *D, const float *stateIn,
                     const Sequences &seq, int64_t NH, int64_t P, int64_t G, int64_t N, float *y,
                     float *stateOut, float *decayOut, const SsdLaunch &launch, void *scratch,
                     cudaStream_t stream);
/// The scan's first three kernels (ssd_arith.h, (a)-(c)) over `args`, its
/// scratch pointers set: the steps, the running log decays and the state
/// entering every chunk; y when args.y is not nullptr holds the chunks' own
/// outputs (without the entering states' share and D x), state_out and
/// decay_out are written when not nullptr. The backward's start.
cudaError_t ssd_chunk_states(const arith::SsdArgs &args, const SsdLaunch &launch,
                             cudaStream_t stream);

/// The RG-LRU scan of x[B, S, W] with the gate parameters wa, ba, wx, bx and
/// lambda [W], each sequence from state_in (data nullptr: zero) into
/// state_out and decay_out [slots, W]; x and y of one type, the five
/// parameters of one, each state and the decays of any float type.
cudaError_t rglru_scan(Src x, Src wa, Src ba, Src wx, Src bx, Src lambda, Src stateIn,
                       const Sequences &seq, int64_t W, Dst y, Dst stateOut, Dst decayOut,
                       cudaStream_t stream);
cudaError_t rglru_scan(const float *x, const float *wa, const float *ba, const float *wx,
                       const float *bx, const float *lambda, const float *stateIn,
                       const Sequences &seq, int64_t W, float *y, float *stateOut, float *decayOut,
                       cudaStream_t stream);

/// MoE routing of logits[T, E]: each token's top k experts into idx[T, k]
/// and their renormalised softmax weights into weights[T, k]; the logits
/// and weights of one float type.
cudaError_t router_topk(Src logits, int64_t T, int64_t E, int64_t k, Dst weights, int32_t *idx,
                        cudaStream_t stream);

/// Token t's row of x[T, H] into row t of the slab of each expert idx[t, :]
/// chooses, in slabs[E, T, H] (zeroed beforehand); every index outside
/// [0, E) adds one to *badIds. x and the slabs of one float type, the rows'
/// bits moved as they are.
cudaError_t moe_dispatch(Src x, const int32_t *idx, int64_t T, int64_t H, int64_t k, int64_t E,
                         Dst slabs, int32_t *badIds, cudaStream_t stream);

/// y[T, H]: each token's experts' rows of slabs[E, T, H], weighted (f32
/// sums, y rounded once); every index outside [0, E) adds one to *badIds.
/// The slabs, weights and y of one float type.
cudaError_t moe_combine(Src slabs, Src weights, const int32_t *idx, int64_t T, int64_t H, int64_t k,
                        int64_t E, Dst y, int32_t *badIds, cudaStream_t stream);

/// Mean cross-entropy of logits[T, V] against labels[T] (a vocabulary of
/// exactly V: world size 1), the sum divided by `tokens`, into *loss; terms
/// is scratch of T doubles; every label outside [0, V) adds one to
/// *badLabels. The logits and the loss of any float type each.
cudaError_t cross_entropy(Src logits, const int32_t *labels, int64_t T, int64_t V, double tokens,
                          double *terms, int32_t *badLabels, Dst loss, cudaStream_t stream);
cudaError_t cross_entropy(const float *logits, const int32_t *labels, int64_t T, int64_t V,
                          double tokens, double *terms, int32_t *badLabels, float *loss,
                          cudaStream_t stream);

} // namespace shardline::rt::cuda

#endif
