//===- kernels.h - CPU reference kernels ------------------------*- C++ -*-===//
//
// The CPU kernels define the numerics of every Shardline op: a partitioned run
// must reproduce what these functions compute on one device. All tensors are
// f32 (ids and indices int32, positions int64), row-major and contiguous; a
// shape written [A,B,C] means element (a,b,c) lives at ((a*B)+b)*C+c.
//
// Every kernel works on a shard of a tensor: whatever depends on where the
// shard sits in the global tensor (token positions, vocabulary offset, the
// state or halo carried in from preceding tokens) is an explicit argument.
// Unless stated otherwise, outputs must not alias inputs. GEMMs go through
// cblas_sgemm (f32); everything else (elementwise math, norms, softmax, scans,
// weighted sums) is evaluated in double and rounded once to f32.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CPU_KERNELS_H
#define SHARDLINE_RUNTIME_KERNELS_CPU_KERNELS_H

#include <cstdint>

namespace shardline::rt::cpu {

//===----------------------------------------------------------------------===//
// Dense ops (dense.cpp)
//===----------------------------------------------------------------------===//

/// Vocab-parallel embedding lookup; table[Vl,H] holds the rows of vocabulary
/// entries [vocab_offset, vocab_offset+Vl).
///   out[t,:] = table[ids[t]-vocab_offset, :]  if 0 <= ids[t]-vocab_offset < Vl
///            = 0                              otherwise
/// Summing the outputs of all shards gives the full lookup. Ids are not
/// validated; see ids_in_range.
void embedding(const int32_t *ids, int64_t T, const float *table, int64_t Vl, int64_t H,
               int64_t vocab_offset, float *out);

/// True iff every ids[t] lies in [0, V).
bool ids_in_range(const int32_t *ids, int64_t T, int64_t V);

/// y[t,h] = x[t,h] / sqrt(mean_h'(x[t,h']^2) + eps) * w[h].  y may be x.
void rms_norm(const float *x, const float *w, int64_t T, int64_t H, float eps, float *y);

/// Gated RMSNorm normalised within `groups` contiguous channel groups of
/// size C/groups (C % groups == 0). For channel c in group g:
///   out[t,c] = y[t,c] / sqrt(mean_{c' in g}(y[t,c']^2) + eps) * w[c]
///              * silu(z[t,c])
/// out may be y or z.
void gated_rms_norm(const float *y, const float *z, const float *w, int64_t T, int64_t C,
                    int64_t groups, float eps, float *out);

/// out[T,N] = x[T,K] . w[K,N]            (accumulate == false)
/// out[T,N] = x[T,K] . w[K,N] + out       (accumulate == true)
void linear(const float *x, const float *w, int64_t T, int64_t K, int64_t N, float *out,
            bool accumulate = false);

// Elementwise over n values; out may alias any input.
/// out = a + b
void add(const float *a, const float *b, int64_t n, float *out);
/// out = a * b
void mul(const float *a, const float *b, int64_t n, float *out);
/// out = x * sigmoid(x)
void silu(const float *x, int64_t n, float *out);
/// out = 0.5 * x * (1 + erf(x / sqrt(2)))
void gelu(const float *x, int64_t n, float *out);
/// out = 1 / (1 + exp(-x)), without overflow for large |x|.
void sigmoid(const float *x, int64_t n, float *out);
/// out = log(1 + exp(x)), without overflow for large x.
void softplus(const float *x, int64_t n, float *out);
/// out = silu(g) * u
void swiglu(const float *g, const float *u, int64_t n, float *out);

//===----------------------------------------------------------------------===//
// Attention (attention.cpp)
//===----------------------------------------------------------------------===//

/// Rotary embedding on x[B,S,NH,D] (D even) with the half-split pairing:
/// for i < D/2, with angle = positions[s] * theta^(-2i/D),
///   out[..,i]       = x[..,i] cos(angle) - x[..,i+D/2] sin(angle)
///   out[..,i+D/2]   = x[..,i+D/2] cos(angle) + x[..,i] sin(angle)
/// positions[S] are the global positions of the local rows. Angles are
/// evaluated in double. out may be x.
void rope(const float *x, const int64_t *positions, int64_t B, int64_t S, int64_t NH, int64_t D,
          float theta, float *out);

struct AttentionDims {
  int64_t B;   ///< batch
  int64_t Sq;  ///< local queries
  int64_t Sk;  ///< local keys/values
  int64_t HQ;  ///< query heads
  int64_t HKV; ///< key/value heads; HQ % HKV == 0
  int64_t D;   ///< head dim
};

/// Softmax attention of q[B,Sq,HQ,D] over k,v[B,Sk,HKV,D] with grouped
/// queries: query head h reads kv head h / (HQ/HKV). With
///   s[i,j] = scale * sum_d q[b,i,h,d] k[b,j,hk,d]
/// and the visible keys V(i) = all j, or, when causal, {j : k_pos[j] <=
/// q_pos[i]}, and with a window W > 0 only those with q_pos[i] - k_pos[j] < W
/// (the W most recent tokens, the query's own included):
///   lse[b,h,i]   = log sum_{j in V(i)} exp(s[i,j])
///   out[b,i,h,:] = sum_{j in V(i)} exp(s[i,j] - lse[b,h,i]) v[b,j,hk,:]
/// A query with no visible key gets out = 0 and lse = -inf, so that
/// attention_merge treats it as an empty partial result. q_pos[Sq] and
/// k_pos[Sk] are global token positions; they are only read when causal.
/// lse is [B,HQ,Sq] and may be nullptr.
void attention(const float *q, const float *k, const float *v, const int64_t *q_pos,
               const int64_t *k_pos, const AttentionDims &dims, bool causal, float scale,
               float *out, float *lse, int64_t window = 0);

/// Merges two partial attention results over disjoint key sets (one ring
/// step), out,out_a,out_b: [B,Sq,HQ,D]; lse,lse_a,lse_b: [B,HQ,Sq]. With
/// m = max(lse_a, lse_b):
///   lse = m + log(exp(lse_a - m) + exp(lse_b - m))
///   out = exp(lse_a - lse) out_a + exp(lse_b - lse) out_b
/// and out = 0, lse = -inf when both are -inf. out may alias out_a or out_b,
/// and lse may alias lse_a or lse_b, so a ring accumulates in place.
void attention_merge(const float *out_a, const float *lse_a, const float *out_b, const float *lse_b,
                     int64_t B, int64_t Sq, int64_t HQ, int64_t D, float *out, float *lse);

//===----------------------------------------------------------------------===//
// Backward of the dense ops (dense_grad.cpp)
//===----------------------------------------------------------------------===//
//
// Each backward kernel takes the cotangent dy of its forward op's result and
// returns the cotangents of the inputs named in its name; the gradient of a
// forward kernel f at input θ is the vector-Jacobian product dy^T ∂f/∂θ.

/// The input cotangent of rms_norm over T tokens of H channels: with
/// r[t] = 1/sqrt(mean_c x[t,c]^2 + eps),
///   dx[t,c] = r w[c] dy[t,c] - x[t,c] r^3 mean_c'(x[t,c'] w[c'] dy[t,c'])
void rms_norm_grad(const float *x, const float *w, const float *dy, int64_t T, int64_t H, float eps,
                   float *dx);

/// The weight cotangent of rms_norm over these T tokens (a partial sum when
/// the tokens are split):  dw[c] = sum_t dy[t,c] x[t,c] r[t]
void rms_norm_grad_weight(const float *x, const float *dy, int64_t T, int64_t H, float eps,
                          float *dw);

/// The input cotangent of linear: dx[T,K] = dy[T,N] . w[K,N]^T (a partial
/// sum when N is split).
void linear_grad(const float *dy, const float *w, int64_t T, int64_t K, int64_t N, float *dx);

/// The weight cotangent of linear over these T tokens:
///   dw[K,N] = x[T,K]^T . dy[T,N]
void linear_grad_weight(const float *x, const float *dy, int64_t T, int64_t K, int64_t N,
                        float *dw);

// Elementwise over n values, with s = sigmoid(x); dx may alias dy.
/// dlhs = dy rhs s (1 + lhs (1 - s)), drhs = dy silu(lhs), s = sigmoid(lhs)
void swiglu_grad(const float *lhs, const float *rhs, const float *dy, int64_t n, float *dlhs,
                 float *drhs);
/// dx = dy s (1 + x (1 - s))
void silu_grad(const float *x, const float *dy, int64_t n, float *dx);
/// dx = dy (Phi(x) + x phi(x)), Phi and phi the standard normal CDF and
/// density (the erf GeLU).
void gelu_grad(const float *x, const float *dy, int64_t n, float *dx);
/// dx = dy s (1 - s)
void sigmoid_grad(const float *x, const float *dy, int64_t n, float *dx);
/// dx = dy s
void softplus_grad(const float *x, const float *dy, int64_t n, float *dx);

/// sum_i x[i]^2 over n values, in double (a partial sum of the squared
/// gradient norm when x is split).
double sum_squares(const float *x, int64_t n);

/// The table cotangent of embedding, restricted to this shard's rows
/// [vocab_offset, vocab_offset+Vl):
///   dtable[r,:] = sum_{t : ids[t] = vocab_offset + r} dy[t,:]
/// accumulated in double in token order; ids outside the shard add nothing.
void embedding_grad(const int32_t *ids, const float *dy, int64_t T, int64_t Vl, int64_t H,
                    int64_t vocab_offset, float *dtable);

//===----------------------------------------------------------------------===//
// Backward of RoPE and attention (attention_grad.cpp)
//===----------------------------------------------------------------------===//

/// The input cotangent of rope: the rotation's transpose, i.e. rope at the
/// same positions with the angles negated. dx may be dy.
void rope_grad(const float *dy, const int64_t *positions, int64_t B, int64_t S, int64_t NH,
               int64_t D, float theta, float *dx);

/// The query cotangent of attention() (without a window) for the output
/// cotangent dy[B,Sq,HQ,D]. Per batch and query head, with P[Sq,Sk] the
/// forward's probabilities (recomputed from q and k as attention() computes
/// them), dP = dy v^T and dS = P o (dP - rowsum(P o dP)):
///   dq = scale dS k
/// A query with no visible key gets dq = 0.
void attention_grad(const float *q, const float *k, const float *v, const float *dy,
                    const int64_t *q_pos, const int64_t *k_pos, const AttentionDims &dims,
                    bool causal, float scale, float *dq);

/// The key and value cotangents dk, dv[B,Sk,HKV,D] of attention() over these
/// Sq queries (partial sums when the queries are split), each summed over
/// the query heads that share the kv head, with P and dS as above:
///   dk = scale dS^T q,   dv = P^T dy
void attention_grad_kv(const float *q, const float *k, const float *v, const float *dy,
                       const int64_t *q_pos, const int64_t *k_pos, const AttentionDims &dims,
                       bool causal, float scale, float *dk, float *dv);

//===----------------------------------------------------------------------===//
// Local attention (local_attention.cpp)
//===----------------------------------------------------------------------===//

/// Causal attention over a sliding window of `window` tokens (itself
/// included) of the queries q[B,S,HQ,D] at global positions [start,
/// start+S) over the keys and values k,v[B,S,HKV,D] at the same positions,
/// preceded by halo_k,halo_v[B,H,HKV,D] at [start-H, start) (oldest first;
/// nullptr when H == 0). Halo rows at negative positions (before the
/// sequence) are not keys. dims.Sq and dims.Sk are S; scale is 1/sqrt(D).
/// Equals attention() over the concatenated keys with the window.
void local_attention(const float *q, const float *k, const float *v, const float *halo_k,
                     const float *halo_v, int64_t H, int64_t start, const AttentionDims &dims,
                     int64_t window, float *out);

//===----------------------------------------------------------------------===//
// Backward of the context-parallel attentions: ring attention (ring_grad.cpp)
// and local attention (local_attention_grad.cpp)
//===----------------------------------------------------------------------===//

/// delta[B,HQ,Sq] = sum_d dy[b,i,h,d] out[b,i,h,d]: rowsum(P o dP) of the
/// whole softmax of attention() (out its output), which each key block's
/// gradient needs.
void attention_delta(const float *dy, const float *out, int64_t B, int64_t Sq, int64_t HQ,
                     int64_t D, float *delta);

/// Adds one key block's share of the gradient of attention() whose softmax
/// ran over these keys and others: with lse[B,HQ,Sq] the whole softmax's
/// log-sum-exp (as attention() or attention_merge() give it), delta from
/// attention_delta(), P = exp(s - lse) on the block's visible keys (as
/// attention() masks them, window included) and dP = dy v^T:
///   dS = P o (dP - delta),  dq += scale dS k,  dk += scale dS^T q,
///   dv += P^T dy
/// (dk, dv summed over the query heads of each kv head). A query with no
/// visible key anywhere (lse = -inf) adds nothing. Each of dq, dk, dv may be
/// nullptr (dk and dv together).
void attention_block_grad(const float *q, const float *k, const float *v, const float *dy,
                          const int64_t *q_pos, const int64_t *k_pos, const AttentionDims &dims,
                          bool causal, float scale, int64_t window, const float *lse,
                          const float *delta, float *dq, float *dk, float *dv);

/// The cotangents of local_attention() (same arguments) for dy[B,S,HQ,D]:
/// dq[B,S,HQ,D], dk, dv[B,S,HKV,D] for its own keys and, when H > 0,
/// dhalo_k, dhalo_v[B,H,HKV,D] for the halo rows (zero for rows before
/// position 0, which are not keys).
void local_attention_grad(const float *q, const float *k, const float *v, const float *halo_k,
                          const float *halo_v, const float *dy, int64_t H, int64_t start,
                          const AttentionDims &dims, int64_t window, float *dq, float *dk,
                          float *dv, float *dhalo_k, float *dhalo_v);

//===----------------------------------------------------------------------===//
// Convolution (conv.cpp) and scans: state passing (scan.cpp), the SSD
// (mamba.cpp), the RG-LRU (recurrent.cpp)
//===----------------------------------------------------------------------===//

/// Causal depthwise convolution of x[B,S,C] with w[C,W]. Let xx be x with
/// halo[B,W-1,C] (the W-1 tokens preceding x, oldest first) prepended, so
/// that xx[b,t'] for t' < 0 is halo[b,W-1+t']:
///   y[b,t,c] = bias[c] + sum_{j=0}^{W-1} w[c,j] xx[b, t-(W-1)+j, c]
/// bias == nullptr means 0; halo == nullptr means zeros (sequence start).
void causal_conv1d(const float *x, const float *w, const float *bias, const float *halo, int64_t B,
                   int64_t S, int64_t C, int64_t W, float *y);

/// The halo the next shard needs: halo_out[B,W-1,C] = last W-1 tokens of xx
/// (x with halo prepended, as above). Correct also when S < W-1.
void causal_conv1d_halo(const float *x, const float *halo, int64_t B, int64_t S, int64_t C,
                        int64_t W, float *halo_out);

/// Sequential combination of per-chunk scan summaries, for state passing.
/// Chunk i (in sequence order) was scanned from a zero state and reported
/// decay[i, nd] (product of its decays) and final[i, nd*bcast] (its final
/// state); decay entry e scales the bcast contiguous state entries
/// [e*bcast, (e+1)*bcast). Computes every chunk's true initial state:
///   chunk_init[0]   = init (zeros if nullptr)
///   chunk_init[i+1] = decay[i] * chunk_init[i] + final[i]
/// and, if total_final != nullptr, the state after the last chunk.
/// SSD: nd = B*NH, bcast = P*N.  RG-LRU: nd = B*W, bcast = 1.
void scan_combine_states(const float *decay, const float *final, const float *init, int64_t chunks,
                         int64_t nd, int64_t bcast, float *chunk_init, float *total_final);

/// The cotangents of scan_combine_states for dchunk_init
/// [chunks, nd*bcast] and dtotal_final (nullptr: zero), given the forward's
/// decay and chunk_init. With g_chunks = dtotal_final, from the last chunk to
/// the first: dfinal[i] = g_{i+1}, ddecay[i, e] = sum over e's bcast entries
/// of g_{i+1} chunk_init[i], g_i = dchunk_init[i] + decay[i] g_{i+1}; dinit
/// (nullptr: not wanted) = g_0.
void scan_combine_states_grad(const float *decay, const float *chunk_init, const float *dchunk_init,
                              const float *dtotal_final, int64_t chunks, int64_t nd, int64_t bcast,
                              float *dfinal, float *ddecay, float *dinit);

struct SsdDims {
  int64_t B;  ///< batch
  int64_t S;  ///< local sequence length
  int64_t NH; ///< heads
  int64_t P;  ///< head dim
  int64_t G;  ///< B/C groups; NH % G == 0
  int64_t N;  ///< state size
};

/// Mamba-2 SSD scan, x[B,S,NH,P], dt[B,S,NH] (already positive), A[NH]
/// (negative), Bm,Cm[B,S,G,N], D[NH] (nullptr: 0), state_in[B,NH,P,N]
/// (nullptr: 0). Head h uses group g = h / (NH/G). Per (b,h), with
/// a_t = exp(dt_t A_h) and s_{-1} = state_in:
///   s_t[p,n] = a_t s_{t-1}[p,n] + dt_t x_t[p] B_t[g,n]
///   y_t[p]   = sum_n C_t[g,n] s_t[p,n] + D_h x_t[p]
/// state_out[B,NH,P,N] = s_{S-1}; decay_out[B,NH] = prod_t a_t; either may be
/// nullptr. Evaluated in blocks of `chunk` tokens: within a block through the
/// masked decay matrix L[t,s] = exp(cum_t - cum_s) (s <= t, cum = running sum
/// of dt A), across blocks through the state.
void ssd_scan(const float *x, const float *dt, const float *A, const float *Bm, const float *Cm,
              const float *D, const float *state_in, const SsdDims &dims, float *y,
              float *state_out, float *decay_out, int64_t chunk = 64);

/// The same recurrence evaluated step by step (state kept in double); the
/// oracle for ssd_scan.
void ssd_scan_reference(const float *x, const float *dt, const float *A, const float *Bm,
                        const float *Cm, const float *D, const float *state_in, const SsdDims &dims,
                        float *y, float *state_out, float *decay_out);

/// Adds what a nonzero initial state h0[B,NH,P,N] contributes to the outputs
/// of an ssd_scan that started from zero (the scan is linear in the state):
///   y_t[p]    += sum_n C_t[g,n] (prod_{tau<=t} a_tau) h0[p,n]
///   state_out += (prod_t a_t) h0          (skipped if state_out == nullptr)
void ssd_state_correct(const float *Cm, const float *dt, const float *A, const float *h0,
                       const SsdDims &dims, float *y, float *state_out);

/// Griffin RG-LRU over x[B,S,W] with gate pre-activations gate_a, gate_x
/// [B,S,W], lambda[W] and state_in[B,W] (nullptr: 0). Per (b,w):
///   r_t = sigmoid(gate_a_t), i_t = sigmoid(gate_x_t)
///   log a_t = c r_t log(sigmoid(lambda))   (log-sigmoid computed stably)
///   h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t x_t),  y_t = h_t
/// state_out[B,W] = h_{S-1}; decay_out[B,W] = prod_t a_t; either may be
/// nullptr.
void rglru_scan(const float *x, const float *gate_a, const float *gate_x, const float *lambda,
                const float *state_in, int64_t B, int64_t S, int64_t W, float *y, float *state_out,
                float *decay_out, float c = 8.0f);

/// Adds what a nonzero initial state h0[B,W] contributes to the outputs of an
/// rglru_scan that started from zero:
///   y_t += (prod_{tau<=t} a_tau) h0;  state_out += (prod_t a_t) h0
/// state_out may be nullptr.
void rglru_state_correct(const float *gate_a, const float *lambda, const float *h0, int64_t B,
                         int64_t S, int64_t W, float *y, float *state_out, float c = 8.0f);

/// The SSD scan's inputs from the op's parameters, over T tokens of NH local
/// heads: dt_out[T,NH] = softplus(dt[t,h] + dt_bias[h]); A[NH] = -exp(a_log[h]).
void ssd_prelude(const float *dt, const float *dt_bias, const float *a_log, int64_t T, int64_t NH,
                 float *dt_out, float *A);

/// The RG-LRU gate pre-activations of x[T,W], channel by channel:
///   gate_a[t,w] = wa[w] x[t,w] + ba[w];  gate_x[t,w] = wx[w] x[t,w] + bx[w]
/// (in f32). gate_x == nullptr skips the second (wx, bx are then unread).
void rglru_gates(const float *x, const float *wa, const float *ba, const float *wx, const float *bx,
                 int64_t T, int64_t W, float *gate_a, float *gate_x);

/// base[W] = c log(sigmoid(lambda)), computed stably in double: the log of the
/// decay a channel takes when its gate is fully open (log a_t = r_t base).
void rglru_log_decay_base(const float *lambda, int64_t W, float c, double *base);

//===----------------------------------------------------------------------===//
// Backward of the RG-LRU scan and its correction (recurrent_grad.cpp)
//===----------------------------------------------------------------------===//
//
// Per-token cotangents and those of states are written; cotangents of the
// per-channel parameters are *added to* (the caller zeroes them), so that a
// rank's sequence chunks accumulate into one partial sum.

/// Where the RG-LRU backward kernels add the gradients of the gate
/// parameters and lambda ([W] each); a nullptr skips one.
struct RglruParamGrads {
  float *wa = nullptr, *ba = nullptr, *wx = nullptr, *bx = nullptr, *lambda = nullptr;
};

/// The cotangents of (y, state_out, decay_out) = rglru_scan(x,
/// rglru_gates(x, wa, ba, wx, bx), lambda, state_in) over x[B,S,W], for the
/// cotangents dy[B,S,W] of y and dstate, ddecay[B,W] of the final state and
/// the total decay (nullptr: zero; state_in nullptr: a zero state). With g_t
/// the cotangent of h_t (g_{S-1} = dy_{S-1} + dstate, g_t = dy_t + a_{t+1}
/// g_{t+1}), n_t = sqrt(1 - a_t^2), r, i the gates, base = c log
/// sigmoid(lambda) and D = prod_t a_t:
///   d log a_t = g_t (a_t h_{t-1} - i_t x_t a_t^2 / n_t) + ddecay D
///   dgate_a = d log a_t base r (1 - r);  dgate_x = g_t n_t x_t i (1 - i)
///   dx = g_t n_t i + dgate_a wa + dgate_x wx
///   dstate_in[B,W] = a_0 g_0     (nullptr: not wanted)
///   dwa += sum_t dgate_a x, dba += sum_t dgate_a (wx, bx alike),
///   dlambda += sum_t d log a_t r c (1 - sigmoid(lambda))
/// Evaluated in double.
void rglru_scan_grad(const float *x, const float *wa, const float *ba, const float *wx,
                     const float *bx, const float *lambda, const float *state_in, const float *dy,
                     const float *dstate, const float *ddecay, int64_t B, int64_t S, int64_t W,
                     float *dx, float *dstate_in, const RglruParamGrads &dp, float c = 8.0f);

/// The cotangents of y = y0 + rglru_state_correct's contribution of h0[B,W]
/// (the gates from rglru_gates(x, wa, ba)) over x[B,S,W], for the cotangent
/// dy[B,S,W] of y (y0's is dy itself). With F_t = prod_{tau<=t} a_tau:
///   dh0 = sum_t F_t dy_t
///   d log a_t = sum_{u>=t} F_u h0 dy_u   (a decay scales every later output)
///   dx = d log a_t base r (1 - r) wa
///   dwa, dba, dlambda added as in rglru_scan_grad (dp.wx, dp.bx unused).
/// Evaluated in double.
void rglru_state_correct_grad(const float *x, const float *wa, const float *ba, const float *lambda,
                              const float *h0, const float *dy, int64_t B, int64_t S, int64_t W,
                              float *dh0, float *dx, const RglruParamGrads &dp, float c = 8.0f);

//===----------------------------------------------------------------------===//
// Backward of the Mamba-2 ops: the gated norm, the conv and the SSD scan
// (mamba_grad.cpp)
//===----------------------------------------------------------------------===//
//
// Per-token cotangents are written; cotangents of per-channel or per-head
// parameters are *added to* (the caller zeroes them), so that a rank's
// sequence chunks accumulate into one partial sum.

/// The cotangents of gated_rms_norm with respect to y and z for the output
/// cotangent dout[T,C]. Per token and group, with r = 1/sqrt(mean y^2 + eps)
/// and u[c] = dout[c] w[c] silu(z[c]):
///   dy[c] = r u[c] - y[c] r^3 mean_c'(y[c'] u[c'])
///   dz[c] = dout[c] y[c] r w[c] silu'(z[c])
void gated_rms_norm_grad(const float *y, const float *z, const float *w, const float *dout,
                         int64_t T, int64_t C, int64_t groups, float eps, float *dy, float *dz);

/// The weight cotangent of gated_rms_norm over these T tokens:
///   dw[c] = sum_t dout[t,c] y[t,c] r[t,g] silu(z[t,c])   (written)
void gated_rms_norm_grad_weight(const float *y, const float *z, const float *dout, int64_t T,
                                int64_t C, int64_t groups, float eps, float *dw);

/// The cotangents of causal_conv1d with respect to x[B,S,C] and the halo
/// [B,W-1,C] for the output cotangent dy[B,S,C]: with xx = [halo; x] as in
/// causal_conv1d, every xx[b,u,c] gets sum_j w[c,j] dy[b, u+(W-1)-j, c]
/// over the outputs 0 <= u+(W-1)-j < S that read it. dhalo == nullptr: not
/// wanted.
void causal_conv1d_grad(const float *w, const float *dy, int64_t B, int64_t S, int64_t C, int64_t W,
                        float *dx, float *dhalo);

/// The weight and bias cotangents of causal_conv1d over these tokens, added
/// to dw[C,W] and dbias[C] (nullptr: not wanted); halo as in causal_conv1d:
///   dw[c,j] += sum_{b,t} dy[b,t,c] xx[b, t-(W-1)+j, c],  dbias[c] += sum dy
void causal_conv1d_grad_weight(const float *x, const float *halo, const float *dy, int64_t B,
                               int64_t S, int64_t C, int64_t W, float *dw, float *dbias);

/// The cotangents of ssd_scan (same inputs, dt already positive, A negative)
/// for the cotangents dy[B,S,NH,P] of y, dstate[B,NH,P,N] of state_out and
/// ddecay[B,NH] of decay_out (nullptr: zero). Per (b,h) the state gradient
/// runs from the end of the sequence to its start; the per-step states are
/// recomputed from checkpoints every 64 tokens rather than kept. Written:
/// dx[B,S,NH,P], ddt[B,S,NH] (with respect to the positive dt), dB, dC
/// [B,S,G,N] (summed over the heads of a group) and dstate_in[B,NH,P,N]
/// (the cotangent of state_in; nullptr: not wanted). Added to: dA[NH], dD[NH]
/// (nullptr: not wanted).
void ssd_scan_grad(const float *x, const float *dt, const float *A, const float *Bm,
                   const float *Cm, const float *D, const float *state_in, const float *dy,
                   const float *dstate, const float *ddecay, const SsdDims &dims, float *dx,
                   float *ddt, float *dA, float *dB, float *dC, float *dD, float *dstate_in);

/// The cotangents of ssd_state_correct's y term for the cotangent dy[B,S,NH,P]
/// of y (same inputs, dt already positive, A negative). With f_t =
/// prod_{tau<=t} a_tau: dh0[B,NH,P,N] (written) = sum_t f_t dy_t C_t^T;
/// dC[B,S,G,N] (added to, summed over the heads of a group) += f_t dy_t^T h0;
/// ddt[B,S,NH] (written, with respect to the positive dt) = A R_t and dA[NH]
/// (added to; nullptr: not wanted) += sum_t dt_t R_t, where R_t sums
/// f_u dy_u.(h0 C_u) over u >= t (the decay of token t scales every later
/// output of its chunk).
void ssd_state_correct_grad(const float *Cm, const float *dt, const float *A, const float *h0,
                            const float *dy, const SsdDims &dims, float *dh0, float *dC, float *ddt,
                            float *dA);

/// ssd_prelude's backward over T tokens of NH heads, from ddt[T,NH] with
/// respect to the positive dt' = softplus(dt + dt_bias) and dA[NH] with
/// respect to A = -exp(a_log). Written: ddt_raw[T,NH] (may be ddt), the
/// cotangent of the raw dt; ddt_bias[NH] = sum_t ddt_raw; da_log[NH] = dA A.
/// Either of ddt_bias, da_log may be nullptr.
void ssd_prelude_grad(const float *dt, const float *dt_bias, const float *a_log, int64_t T,
                      int64_t NH, const float *ddt, const float *dA, float *ddt_raw,
                      float *ddt_bias, float *da_log);

//===----------------------------------------------------------------------===//
// Mixture of experts (moe.cpp)
//===----------------------------------------------------------------------===//

/// Top-k routing from logits[T,E]: p = softmax(logits[t,:]); idx[t,:] are the
/// k experts of largest p in descending order (equal p: lower index first);
///   weights[t,j] = p[idx[t,j]] / sum_{j'} p[idx[t,j']]
void router_topk(const float *logits, int64_t T, int64_t E, int64_t k, float *weights,
                 int32_t *idx);
/// router_topk's weights for given choices idx[T,k] (each in [0,E)):
/// --verify's single-device run routes with the partitioned run's choices.
void router_weights(const float *logits, int64_t T, int64_t E, int64_t k, const int32_t *idx,
                    float *weights);

/// Dropless dispatch of x[T,H] by idx[T,k] (values in [0,E)): sorted[T*k,H]
/// holds one row per (token, slot), grouped by expert in ascending order and,
/// within an expert, in (token, slot) order. counts[E] are the rows per
/// expert; perm[r] = t*k + slot of sorted row r.
void moe_dispatch(const float *x, const int32_t *idx, int64_t T, int64_t H, int64_t k, int64_t E,
                  float *sorted, int32_t *counts, int32_t *perm);

/// SwiGLU experts over consecutive row ranges: expert e owns counts[e] rows of
/// sorted[R,H] (R = sum counts) and computes on them
///   out = (silu(x . w_gate[e]) * (x . w_up[e])) . w_down[e]
/// w_gate, w_up: [E,H,F]; w_down: [E,F,H]. E is the number of local experts.
void moe_experts(const float *sorted, const int32_t *counts, int64_t E, const float *w_gate,
                 const float *w_up, const float *w_down, int64_t H, int64_t F, float *out);

/// Weighted combine of expert_out[T*k,H] (rows in the order of moe_dispatch's
/// perm) back to tokens:  y[t,:] = sum_{slot} weights[t,slot] row(t,slot),
/// summed in slot order regardless of the row order.
void moe_combine(const float *expert_out, const int32_t *perm, const float *weights, int64_t T,
                 int64_t H, int64_t k, float *y);

/// Dropless dispatch into dense per-expert slabs: for every token t and slot
/// j, slabs[idx[t,j], t, :] = x[t,:] (slabs[E,T,H]); the rows no slot routes
/// are left as they are (the caller zeroes them).
void moe_scatter_rows(const float *x, const int32_t *idx, int64_t T, int64_t H, int64_t k,
                      float *slabs);

/// moe_experts over dense slabs[E,R,H]: rows that are all zero map to zero
/// (an expert has no biases) and are skipped; the others are packed per
/// expert, computed and put back in place in out[E,R,H]. Skipped rows of out
/// are left as they are.
void moe_experts_slabs(const float *slabs, int64_t E, int64_t R, const float *w_gate,
                       const float *w_up, const float *w_down, int64_t H, int64_t F, float *out);

/// The weighted return from dense slabs[E,T,H]:
///   y[t,:] = sum_j weights[t,j] slabs[idx[t,j], t, :]
/// accumulated in f32 in slot order.
void moe_gather_rows(const float *slabs, const float *weights, const int32_t *idx, int64_t T,
                     int64_t H, int64_t k, float *y);

// -- capacity mode ----------------------------------------------------------
//
// Tokens are cut into groups of `rows` batch rows x `positions` sequence
// positions, and each group sends at most C rows to each expert (GShard's and
// Switch's static buffers, Megatron's --moe-expert-capacity-factor). The
// kernels see a rank's local [B, S] tokens, which groups tile whole; a buffer
// is [E, Gb, Gs, C, H] with Gb = B / rows and Gs = S / positions, and a
// choice's row in it is (its expert, its token's group, its slot).

/// The local token grid and the buffers of capacity-mode MoE.
struct CapacityDims {
  int64_t B = 0, S = 0, k = 0; ///< local tokens [B, S], k choices each
  int64_t E = 0, C = 0;        ///< experts, rows per expert per group
  int64_t rows = 1, positions = 1;
  int64_t groupsB() const { return B / rows; }
  int64_t groupsS() const { return S / positions; }
  /// The row of [E, Gb, Gs, C] that slot c of expert e holds for token (b, s).
  int64_t row(int64_t e, int64_t b, int64_t s, int64_t c) const {
    return ((e * groupsB() + b / rows) * groupsS() + s / positions) * C + c;
  }
};

/// Which choices an expert keeps when more than C of a group choose it.
enum class DropPolicy {
  Probs,   ///< the C of largest weight (equal weights: the earlier position)
  Position ///< the first C
};

/// The slot of every choice: within a group, the candidates of expert e are
/// the (token, j) with idx = e in position order (tokens row-major over the
/// group, then j); the policy keeps at most C of them, and the kept ones take
/// slots 0, 1, ... in position order. slots[B,S,k] is the slot, or -1 for a
/// dropped choice. idx values must lie in [0, E). When given, kept[E] and
/// dropped[E] are added the choices each expert kept and dropped.
void moe_capacity_slots(const float *weights, const int32_t *idx, const CapacityDims &d,
                        DropPolicy policy, int32_t *slots, int64_t *kept, int64_t *dropped);

/// buffers[E,Gb,Gs,C,H]: the row of every kept choice holds its token's
/// x[B,S,H], every other row zero.
void moe_dispatch_capacity(const float *x, const int32_t *idx, const int32_t *slots,
                           const CapacityDims &d, int64_t H, float *buffers);

/// y[b,s,:] = sum over the kept j of weights[b,s,j] buffers[row of (b,s,j)]
/// (in double, in j order); a token all of whose choices were dropped gets 0.
void moe_combine_capacity(const float *buffers, const float *weights, const int32_t *idx,
                          const int32_t *slots, const CapacityDims &d, int64_t H, float *y);

//===----------------------------------------------------------------------===//
// Backward of mixture of experts (moe_grad.cpp)
//===----------------------------------------------------------------------===//
//
// The cotangents of router_topk and of the dense-slab forms the plan runs
// (moe_scatter_rows, moe_experts_slabs, moe_gather_rows); slabs are [E,T,H]
// with a row per token of every expert.

/// The logits cotangent of router_topk. Its weights are the softmax over the
/// chosen logits, and the choice is piecewise constant, so with
/// c[t] = sum_j weights[t,j] dweights[t,j]:
///   dlogits[t, idx[t,j]] = weights[t,j] (dweights[t,j] - c[t])
/// and zero for the experts not chosen. dlogits is [T,E].
void router_topk_grad(const float *weights, const int32_t *idx, const float *dweights, int64_t T,
                      int64_t k, int64_t E, float *dlogits);

/// The x cotangent of moe_scatter_rows: dx[t,:] = sum_j dslabs[idx[t,j], t, :]
/// (accumulated in double, in slot order).
void moe_dispatch_grad(const float *dslabs, const int32_t *idx, int64_t T, int64_t H, int64_t k,
                       float *dx);

/// The slabs cotangent of moe_gather_rows: dslabs[idx[t,j], t, :] =
/// weights[t,j] dy[t,:], zero in the rows no slot routes. dslabs is [E,T,H].
void moe_combine_grad(const float *weights, const int32_t *idx, const float *dy, int64_t T,
                      int64_t H, int64_t k, int64_t E, float *dslabs);

/// The weights cotangent of moe_gather_rows:
///   dweights[t,j] = sum_h slabs[idx[t,j], t, h] dy[t,h]   (in double)
void moe_combine_grad_weights(const float *slabs, const int32_t *idx, const float *dy, int64_t T,
                              int64_t H, int64_t k, float *dweights);

/// The cotangents of moe_experts_slabs over slabs[E,R,H] with dy[E,R,H]: per
/// expert e and nonzero row x (zero rows contribute nothing), with
/// g = x w_gate[e], u = x w_up[e], a = silu(g) u, da = dy w_down[e]^T,
/// dg = da u silu'(g), du = da silu(g):
///   dslabs = dg w_gate[e]^T + du w_up[e]^T (zero rows stay zero),
///   dw_gate[e] = sum x^T dg, dw_up[e] = sum x^T du, dw_down[e] = sum a^T dy
/// over these R rows (partial sums when the tokens are split). Any output
/// may be nullptr to skip it.
void moe_experts_slabs_grad(const float *slabs, int64_t E, int64_t R, const float *w_gate,
                            const float *w_up, const float *w_down, int64_t H, int64_t F,
                            const float *dy, float *dslabs, float *dw_gate, float *dw_up,
                            float *dw_down);

/// The cotangents of moe_experts over consecutive row ranges (expert e owns
/// counts[e] rows of sorted[R,H]) with dout[R,H]: per expert e and row x,
/// with g = x w_gate[e], u = x w_up[e], a = silu(g) u, da = dout w_down[e]^T,
/// dg = da u silu'(g), du = da silu(g):
///   dsorted = dg w_gate[e]^T + du w_up[e]^T,
///   dw_gate[e] = sum x^T dg, dw_up[e] = sum x^T du, dw_down[e] = sum a^T dout
/// over the expert's rows (zero for an expert without rows). Any output may
/// be nullptr to skip it.
void moe_experts_grad(const float *sorted, const float *dout, const int32_t *counts, int64_t E,
                      const float *w_gate, const float *w_up, const float *w_down, int64_t H,
                      int64_t F, float *dsorted, float *dw_gate, float *dw_up, float *dw_down);

/// The x cotangent of moe_dispatch_capacity: dx[b,s,:] = sum over the kept j
/// of dbuffers[row of (b,s,j)] (in double, in j order).
void moe_dispatch_capacity_grad(const float *dbuffers, const int32_t *idx, const int32_t *slots,
                                const CapacityDims &d, int64_t H, float *dx);

/// The buffers cotangent of moe_combine_capacity: weights[b,s,j] dy[b,s,:] in
/// the row of every kept choice, zero in every other row of
/// dbuffers[E,Gb,Gs,C,H].
void moe_combine_capacity_grad(const float *weights, const int32_t *idx, const int32_t *slots,
                               const float *dy, const CapacityDims &d, int64_t H, float *dbuffers);

/// The weights cotangent of moe_combine_capacity: dweights[b,s,j] =
/// sum_h buffers[row of (b,s,j), h] dy[b,s,h] (in double) for a kept choice,
/// 0 for a dropped one.
void moe_combine_capacity_grad_weights(const float *buffers, const int32_t *idx,
                                       const int32_t *slots, const float *dy, const CapacityDims &d,
                                       int64_t H, float *dweights);

//===----------------------------------------------------------------------===//
// Cross-entropy (loss.cpp)
//===----------------------------------------------------------------------===//

// Vocab-parallel pieces over a shard logits[T,Vl] of vocabulary entries
// [vocab_offset, vocab_offset+Vl). Across shards: gmax = max of the maxes,
// sum = sum of the sumexps (each taken against gmax), target = sum of the
// targets; then xent_loss(gmax, sum, target).

/// max[t] = max_v logits[t,v]
void xent_local_max(const float *logits, int64_t T, int64_t Vl, float *max);
/// sum[t] = sum_v exp(logits[t,v] - gmax[t])
void xent_local_sumexp(const float *logits, const float *gmax, int64_t T, int64_t Vl, float *sum);
/// target[t] = logits[t, labels[t]-vocab_offset] if owned by the shard, else 0
void xent_local_target(const float *logits, const int32_t *labels, int64_t T, int64_t Vl,
                       int64_t vocab_offset, float *target);
/// mean_t(log(sum[t]) + gmax[t] - target[t])
float xent_loss(const float *gmax, const float *sum, const float *target, int64_t T);
/// The combination across `shards` vocabulary shards, each shard's pieces
/// for the same T tokens: gmax[t] = max_m maxes[m][t].
void xent_combine_max(const float *const *maxes, int64_t shards, int64_t T, float *gmax);
/// With pieces[m] = [sum[T], target[T]] of shard m (in shard order):
///   sum_t log(sum_m sum[m][t]) + gmax[t] - sum_m target[m][t]
/// in double; the mean divides by the tokens of the whole batch.
double xent_combine_total(const float *const *pieces, int64_t shards, const float *gmax, int64_t T);
/// Mean token loss over full logits[T,V]: the pieces above with one shard.
float cross_entropy(const float *logits, const int32_t *labels, int64_t T, int64_t V);

//===----------------------------------------------------------------------===//
// Backward of cross-entropy (loss_grad.cpp)
//===----------------------------------------------------------------------===//

/// The combined sum of exponentials of `shards` vocabulary shards (each
/// taken against the same gmax, xent_local_sumexp), in shard order:
///   sum[t] = sum_m sums[m][t]
void xent_combine_sum(const float *const *sums, int64_t shards, int64_t T, float *sum);

/// The logits cotangent of the mean loss over `count` tokens (the whole
/// batch's), on a shard logits[T,Vl] of vocabulary entries [vocab_offset,
/// vocab_offset+Vl), from the combined per-token gmax and sum:
///   dlogits[t,v] = (exp(logits[t,v] - gmax[t]) / sum[t]
///                   - [labels[t] = vocab_offset + v]) / count
void xent_grad(const float *logits, const int32_t *labels, const float *gmax, const float *sum,
               int64_t T, int64_t Vl, int64_t vocab_offset, int64_t count, float *dlogits);

/// The cotangent of cross_entropy() over full logits[T,V] (count = T): the
/// pieces above with one shard.
void cross_entropy_grad(const float *logits, const int32_t *labels, int64_t T, int64_t V,
                        float *dlogits);

//===----------------------------------------------------------------------===//
// Optimizer (optimizer.cpp)
//===----------------------------------------------------------------------===//

/// One AdamW step's scalars: the run's hyperparameters, the 1-based step
/// (for the bias correction) and the factor the gradients are scaled by.
struct AdamWStep {
  double lr, beta1, beta2, eps, weight_decay;
  int64_t step;
  double grad_scale;
};

/// The global-norm clipping factor of gradients whose squares sum to sumsq:
/// min(1, clip / (sqrt(sumsq) + 1e-6)), or 1 when clip <= 0.
double clip_scale(double sumsq, double clip);

/// AdamW (decoupled weight decay, as torch.optim.AdamW) on n values, in
/// place; with g = grad_scale grad and t = step:
///   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
///   w = w - lr (m / (1 - beta1^t) / (sqrt(v / (1 - beta2^t)) + eps)
///               + weight_decay w)
/// the decay term on the weight before the step; weight_decay 0 turns it
/// off. Evaluated in double, each stored value rounded once.
void adamw(float *w, const float *grad, float *m, float *v, int64_t n, const AdamWStep &p);

} // namespace shardline::rt::cpu

#endif // SHARDLINE_RUNTIME_KERNELS_CPU_KERNELS_H
