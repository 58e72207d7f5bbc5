//===- arith_grad.h - the CUDA backward kernels' arithmetic -----*- C++ -*-===//
//
// What each CUDA backward kernel and AdamW compute per element, per row or
// per tile, as functions that compile for the host as well as the device
// (arith.h's convention): test/cuda_arith_test.cpp runs them against the CPU
// kernels of kernels/cpu/*_grad.cpp and optimizer.cpp on machines without a
// GPU. No CUDA header is needed here.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CUDA_ARITH_GRAD_H
#define SHARDLINE_RUNTIME_KERNELS_CUDA_ARITH_GRAD_H

#include "kernels/cuda/arith.h"

namespace shardline::rt::cuda::arith {

// -- elementwise ------------------------------------------------------------------
//
// The derivatives in double, as kernels/cpu/dense_grad.cpp evaluates them;
// each gradient is dy times the derivative, rounded once to f32.

SL_HD double siluDerivative(double x) {
  double s = sigmoid(x);
  return s * (1.0 + x * (1.0 - s));
}
SL_HD double geluDerivative(double x) {
  return 0.5 * (1.0 + erf(x * 0.70710678118654752440)) +
         x * 0.39894228040143267794 * exp(-0.5 * x * x);
}
SL_HD double sigmoidDerivative(double x) {
  double s = sigmoid(x);
  return s * (1.0 - s);
}
SL_HD double softplusDerivative(double x) { return sigmoid(x); }

/// SwiGLU's two cotangents for gate g, up u and dy.
SL_HD void swigluGrad(float g, float u, float dy, float &dg, float &du) {
  double gd = g, d = dy;
  dg = (float)(d * (double)u * siluDerivative(gd));
  du = (float)(d * (gd * sigmoid(gd)));
}

// -- RMSNorm ------------------------------------------------------------------------

/// 1/sqrt(mean(x^2) + eps) of a row from its sum of squares, in double as the
/// CPU's backward computes it (kernels/cpu/internal.h, inverse_rms).
SL_HD double inverseRmsGrad(double sumSquares, int64_t width, float eps) {
  return 1.0 / sqrt(sumSquares / (double)width + eps);
}

/// dx of one element of a row with inverse rms r and dot = sum(x·w·dy):
/// r·w·dy - x·r³·dot/H.
SL_HD float rmsNormGradElement(float x, float w, float dy, double r, double dot, int64_t width) {
  double coupling = r * r * r * dot / (double)width;
  return (float)(r * w * dy - x * coupling);
}

// -- Mamba's gated norm ------------------------------------------------------------------
//
// kernels/cpu/mamba_grad.cpp's gated_rms_norm_grad per element of a group
// with inverse rms r: u = dout·w·z·sigmoid(z), dy = r·u - y·r³·sum(y·u)/width,
// dz = dout·y·r·w·silu'(z); dweight sums dout·y·r·silu(z) over the rows.

SL_HD double gatedNormGradU(float dout, float w, float z) {
  double zc = z;
  return (double)dout * w * zc * sigmoid(zc);
}
SL_HD float gatedNormGradDz(float dout, float y, double r, float w, float z) {
  double zc = z, s = sigmoid(zc);
  return (float)((double)dout * y * r * w * s * (1.0 + zc * (1.0 - s)));
}
SL_HD float gatedNormGradDy(float y, double u, double r, double yu, int64_t width) {
  double k = r * r * r * yu / (double)width;
  return (float)(r * u - y * k);
}
SL_HD double gatedNormGradWeightTerm(float dout, float y, double r, float z) {
  double zc = z;
  return (double)dout * y * r * (zc * sigmoid(zc));
}

// -- RoPE ---------------------------------------------------------------------------

/// A rotation's transpose is the rotation by the opposite angle: RoPE's
/// backward rotates dy at the negated position (as the CPU's rope_grad).
SL_HD double ropeGradAngle(int64_t position, int64_t i, int64_t D, float theta) {
  return ropeAngle(-position, i, D, theta);
}

// -- attention -----------------------------------------------------------------------
//
// The backward of softmax attention from the forward's log-sum-exp, as in
// flash attention's backward: each probability is recomputed from its score,
// P = exp(scale·q·k - lse), and with delta = rowsum(dy∘out) (= rowsum(P∘dP)),
// dS = P∘(dP - delta), dP = dy·vᵀ. dq = scale·dS·k; dk = scale·dSᵀ·q and
// dv = Pᵀ·dy, summed over the query heads of each kv head.

/// delta of one query: dy·out over its D values, summed in double.
SL_HD float attentionDelta(const float *dy, const float *out, int64_t D) {
  double acc = 0.0;
  for (int64_t e = 0; e < D; ++e)
    acc += (double)dy[e] * out[e];
  return (float)acc;
}

/// A score's probability from the query's log-sum-exp (finite whenever the
/// query sees a key).
SL_HD float attentionProb(float score, float lse) { return expf(score - lse); }

/// One query's pass over a tile of n keys (rows of D values, kTile and
/// vTile): every visible key (causal, within `window` tokens when it is
/// positive) adds dS·k to dq[D] (scaled by `scale` once at the end, by the
/// caller).
SL_HD void attendGradQueryTile(const float *q, const float *dy, const float *kTile,
                               const float *vTile, const int64_t *keyPositions, int n, int64_t D,
                               int64_t queryPosition, bool causal, int64_t window, float scale,
                               float lse, float delta, float *dq) {
  for (int j = 0; j < n; ++j) {
    if (!visible(queryPosition, keyPositions[j], causal, window))
      continue;
    const float *k = kTile + (int64_t)j * D, *v = vTile + (int64_t)j * D;
    float score = 0.0f, dp = 0.0f;
    for (int64_t e = 0; e < D; ++e) {
      score += q[e] * k[e];
      dp += dy[e] * v[e];
    }
    float ds = attentionProb(score * scale, lse) * (dp - delta);
    for (int64_t e = 0; e < D; ++e)
      dq[e] += ds * k[e];
  }
}

/// One key's pass over a tile of n queries of one query head (rows of D
/// values, qTile and dyTile, with their log-sum-exps and deltas): every
/// query that sees the key adds P·dy to dv[D] and dS·q to dk[D] (scaled by
/// `scale` once at the end, by the caller).
SL_HD void attendGradKeyTile(const float *k, const float *v, const float *qTile,
                             const float *dyTile, const int64_t *queryPositions,
                             const float *lseTile, const float *deltaTile, int n, int64_t D,
                             int64_t keyPosition, bool causal, int64_t window, float scale,
                             float *dk, float *dv) {
  for (int i = 0; i < n; ++i) {
    if (!visible(queryPositions[i], keyPosition, causal, window) || lseTile[i] == -INFINITY)
      continue;
    const float *q = qTile + (int64_t)i * D, *dy = dyTile + (int64_t)i * D;
    float score = 0.0f, dp = 0.0f;
    for (int64_t e = 0; e < D; ++e) {
      score += q[e] * k[e];
      dp += dy[e] * v[e];
    }
    float p = attentionProb(score * scale, lseTile[i]);
    float ds = p * (dp - deltaTile[i]);
    for (int64_t e = 0; e < D; ++e) {
      dv[e] += p * dy[e];
      dk[e] += ds * q[e];
    }
  }
}

/// The key a thread of the dk, dv kernel takes: block `block` holds
/// `keysPerBlock` consecutive keys of one (batch b, kv head h), blocks
/// running over the keys fastest, then the kv heads, then the batch (the
/// forward's attentionQuery, over keys).
SL_HD AttentionQuery attentionKey(int64_t block, int64_t thread, int64_t keyBlocks, int64_t kvHeads,
                                  int64_t keysPerBlock) {
  return attentionQuery(block, thread, keyBlocks, kvHeads, keysPerBlock);
}

// -- MoE ------------------------------------------------------------------------------------
//
// The backward of the dense slabs the forward runs on (kernels/cpu/moe_grad.cpp):
// the combine's, the dispatch's and the router's.

/// One token's router backward (router_topk_grad): the logits of its k chosen
/// experts get w·(dw - sum(w·dw)) (the sum in double), the others zero; the
/// row dlogits[E] is written whole. Indices outside [0, E) are skipped (the
/// kernel counts them).
SL_HD void routerGradToken(const float *w, const int32_t *idx, const float *dw, int64_t k,
                           int64_t E, float *dlogits) {
  for (int64_t e = 0; e < E; ++e)
    dlogits[e] = 0.0f;
  double c = 0.0;
  for (int64_t j = 0; j < k; ++j)
    c += (double)w[j] * dw[j];
  for (int64_t j = 0; j < k; ++j)
    if (idInRange(idx[j], E))
      dlogits[idx[j]] = (float)(w[j] * (dw[j] - c));
}

/// Token t's row of dy, weighted by its j-th choice, is that expert's slab
/// row's cotangent (moe_combine_grad); element i of T*k*H as dispatchTarget
/// numbers them.
SL_HD float combineGradValue(const float *weights, const float *dy, int64_t H, int64_t k,
                             int64_t i) {
  int64_t t = i / (k * H), j = (i / H) % k;
  return weights[t * k + j] * dy[t * H + i % H];
}

/// The cotangent of token t's j-th weight: <its expert's slab row, dy[t]>,
/// in double (moe_combine_grad_weights).
SL_HD float combineGradWeight(const float *slabs, const int32_t *idx, const float *dy, int64_t T,
                              int64_t H, int64_t k, int64_t E, int64_t t, int64_t j) {
  int32_t e = idx[t * k + j];
  if (!idInRange(e, E))
    return 0.0f;
  const float *row = slabs + ((int64_t)e * T + t) * H;
  double acc = 0.0;
  for (int64_t h = 0; h < H; ++h)
    acc += (double)row[h] * dy[t * H + h];
  return (float)acc;
}

/// dx[t, h] of the dispatch: token t's chosen slab rows summed in choice
/// order, in double (moe_dispatch_grad).
SL_HD float dispatchGradElement(const float *dslabs, const int32_t *idx, int64_t T, int64_t H,
                                int64_t k, int64_t E, int64_t t, int64_t h) {
  double acc = 0.0;
  for (int64_t j = 0; j < k; ++j) {
    int32_t e = idx[t * k + j];
    if (idInRange(e, E))
      acc += dslabs[((int64_t)e * T + t) * H + h];
  }
  return (float)acc;
}

// -- cross-entropy -------------------------------------------------------------------

/// dlogit of one vocabulary column of a token with the row's maximum and its
/// sum of exp(logit - max) rounded to f32 (as the CPU's): (softmax -
/// onehot(label)) / tokens, in double.
SL_HD float crossEntropyGradElement(float logit, float max, float sumExp, bool isLabel,
                                    double invTokens) {
  double p = exp((double)logit - (double)max) / (double)sumExp;
  return (float)((p - (isLabel ? 1.0 : 0.0)) * invTokens);
}

// -- AdamW ---------------------------------------------------------------------------

/// The global-norm clipping factor, as kernels/cpu/optimizer.cpp's
/// clip_scale: min(1, clip / (sqrt(sumsq) + 1e-6)), or 1 when clip <= 0.
SL_HD double clipScale(double sumsq, double clip) {
  if (clip <= 0)
    return 1.0;
  double s = clip / (sqrt(sumsq) + 1e-6);
  return s < 1.0 ? s : 1.0;
}

/// One AdamW step's constants: the CPU's AdamWStep with the bias
/// corrections 1 - beta^t worked out once (on the host, with the CPU's pow).
struct AdamWConstants {
  double lr, beta1, beta2, eps, weightDecay, c1, c2, clip;
};

/// One element of AdamW (torch.optim.AdamW with the decay on the weight
/// before the step) in double, in the CPU kernel's order of operations;
/// gradScale is the clipping factor.
SL_HD void adamwElement(float &w, float grad, float &m, float &v, const AdamWConstants &k,
                        double gradScale) {
  double g = gradScale * grad, wi = w;
  double mi = k.beta1 * m + (1.0 - k.beta1) * g;
  double vi = k.beta2 * v + (1.0 - k.beta2) * g * g;
  m = (float)mi;
  v = (float)vi;
  w = (float)(wi - k.lr * (mi / k.c1 / (sqrt(vi / k.c2) + k.eps) + k.weightDecay * wi));
}

/// One element of AdamW of a 16-bit weight through its f32 main copy: the
/// step above on main, then w[i] = main rounded to nearest even in w's type
/// (kernels/cpu/optimizer.cpp's main-copy path).
template <typename T>
SL_HD void adamwMainElement(T *w, int64_t i, float grad, float &main, float &m, float &v,
                            const AdamWConstants &k, double gradScale) {
  adamwElement(main, grad, m, v, k, gradScale);
  storeElement(w, i, main);
}

// -- causal depthwise conv1d ---------------------------------------------------------
//
// Over whole sequences or sequence chunks with their halos, as
// kernels/cpu/mamba_grad.cpp's causal_conv1d_grad and
// causal_conv1d_grad_weight compute them for a sequence: sums in double in
// the CPU's order.

/// dx of token u, channel c of a sequence dy[S, C]: the kernel w[C, W] over
/// the outputs that read it; u from -(W - 1) to -1 is the sequence's halo
/// row u + W - 1 (a chunk's halo gradient).
SL_HD float convGradInput(const float *w, const float *dy, int64_t S, int64_t C, int64_t W,
                          int64_t u, int64_t c) {
  double acc = 0.0;
  for (int64_t j = 0; j < W; ++j) {
    int64_t t = u + (W - 1) - j;
    if (t >= 0 && t < S)
      acc += (double)w[c * W + j] * dy[t * C + c];
  }
  return (float)acc;
}

/// One sequence's share of dweight[c, j] (j < W) or of dbias[c] (j == W):
/// dy[t, c] times the input tap j reads, over the tokens in order; before
/// the sequence the tap reads the sequence's halo rows [W - 1, C] (a chunk
/// of a sequence split over ranks), or zero when halo is nullptr.
SL_HD double convGradWeightSum(const float *x, const float *halo, const float *dy, int64_t S,
                               int64_t C, int64_t W, int64_t c, int64_t j) {
  double acc = 0.0;
  for (int64_t t = 0; t < S; ++t) {
    double g = dy[t * C + c];
    if (j == W) {
      acc += g;
      continue;
    }
    int64_t src = t - (W - 1) + j;
    double v = 0.0;
    if (src >= 0)
      v = x[src * C + c];
    else if (halo)
      v = halo[((W - 1) + src) * C + c];
    acc += g * v;
  }
  return acc;
}

// -- the RG-LRU scan ---------------------------------------------------------------------

/// What the RG-LRU scan's backward reads and writes (kernels/cpu/
/// recurrent_grad.cpp, rglru_scan_grad, c = 8): x and dy [B, S, W] of B
/// batch entries of S tokens, each cut into `chunks` sequences (chunks of a
/// sequence split over ranks; 1: whole sequences), the gate parameters and
/// lambda [W], state_in, dstate, ddecay a [W] slot per sequence (c*B + b,
/// arith.h's sequenceAt) or nullptr; dx [B, S, W] and dstate_in (its slots)
/// when not nullptr, the parameters' gradients [W] when dwa is not nullptr;
/// h is scratch of [S / chunks, W] doubles (the states of one sequence).
struct RglruGradArgs {
  const float *x, *wa, *ba, *wx, *bx, *lambda, *stateIn, *dy, *dstate, *ddecay;
  int64_t B, S, W;
  float *dx, *dstateIn, *dwa, *dba, *dwx, *dbx, *dlambda;
  double *h;
  int64_t chunks = 1;
};

/// Channel w of the backward, sequence after sequence as the CPU table's
/// entry takes them (batch entry outermost, then chunk): the scan again in
/// double from the sequence's state (its states into h), then the state's
/// cotangent carried back through the decays from the sequence's final
/// state's and decay's cotangents, with the parameters' sums in double
/// added to their f32 results once per sequence. The arithmetic is the
/// CPU's, operation for operation.
SL_HD void rglruGradLane(const RglruGradArgs &a, int64_t w) {
  const double c = 8.0f, base = rglruLogBase(a.lambda[w], 8.0f);
  float pwa = 0.0f, pba = 0.0f, pwx = 0.0f, pbx = 0.0f, plambda = 0.0f;
  for (int64_t q = 0; q < a.B * a.chunks; ++q) {
    const Sequence at = sequenceAt(q, a.B, a.S, a.chunks);
    const int64_t row0 = at.firstRow * a.W, S = at.length, slot = at.stateSlot * a.W + w;
    const double h0 = a.stateIn ? a.stateIn[slot] : 0.0;
    double logDecay = 0.0;
    for (int64_t t = 0; t < S; ++t) {
      const int64_t i = row0 + t * a.W + w;
      float gateA = rglruGate(a.wa[w], a.x[i], a.ba[w]),
            gateX = rglruGate(a.wx[w], a.x[i], a.bx[w]);
      const double la = sigmoid(gateA) * base;
      const double prev = t ? a.h[(t - 1) * a.W + w] : h0;
      a.h[t * a.W + w] = exp(la) * prev + sqrt(-expm1(2.0 * la)) * sigmoid(gateX) * a.x[i];
      logDecay += la;
    }
    const double dLogDecay = a.ddecay ? a.ddecay[slot] * exp(logDecay) : 0.0;
    double carry = a.dstate ? a.dstate[slot] : 0.0;
    double swa = 0.0, sba = 0.0, swx = 0.0, sbx = 0.0, sbase = 0.0;
    for (int64_t t = S - 1; t >= 0; --t) {
      const int64_t i = row0 + t * a.W + w;
      float gateA = rglruGate(a.wa[w], a.x[i], a.ba[w]),
            gateX = rglruGate(a.wx[w], a.x[i], a.bx[w]);
      const double r = sigmoid(gateA), in = sigmoid(gateX);
      const double la = r * base, decay = exp(la), n = sqrt(-expm1(2.0 * la));
      const double prev = t ? a.h[(t - 1) * a.W + w] : h0;
      const double g = carry + a.dy[i];
      const double du = g * n, dn = g * in * a.x[i];
      // n = sqrt(1 - a^2): dn/dla = -a^2 / n.
      const double dla = g * prev * decay - dn * decay * decay / n + dLogDecay;
      const double dgx = du * a.x[i] * in * (1.0 - in);
      sbase += dla * r;
      const double dga = dla * base * r * (1.0 - r);
      swa += dga * a.x[i];
      sba += dga;
      if (a.dx)
        a.dx[i] = (float)(du * in + dga * a.wa[w] + dgx * a.wx[w]);
      swx += dgx * a.x[i];
      sbx += dgx;
      carry = g * decay;
    }
    if (a.dstateIn)
      a.dstateIn[slot] = (float)carry;
    // d log(sigmoid(l)) / dl = 1 - sigmoid(l).
    const double dl = sbase * c * (1.0 - sigmoid(a.lambda[w]));
    pwa = (float)(pwa + swa);
    pba = (float)(pba + sba);
    pwx = (float)(pwx + swx);
    pbx = (float)(pbx + sbx);
    plambda = (float)(plambda + dl);
  }
  if (a.dwa) {
    a.dwa[w] = pwa;
    a.dba[w] = pba;
    a.dwx[w] = pwx;
    a.dbx[w] = pbx;
    a.dlambda[w] = plambda;
  }
}

// -- the Mamba-2 SSD scan --------------------------------------------------------------
//
// The scan's backward is chunked as its forward (ssd_grad_arith.h); its
// prelude's backward is elementwise.

/// Head h of the prelude's backward (kernels/cpu/mamba_grad.cpp,
/// ssd_prelude_grad) over T tokens: the raw dt's cotangent (when ddtRaw is
/// not nullptr), dt_bias's sum in token order and a_log's, from dA.
SL_HD void ssdPreludeGradLane(const float *dt, const float *dtBias, const float *aLog,
                              const float *ddt, const float *dA, int64_t T, int64_t NH, int64_t h,
                              float *ddtRaw, float *ddtBias, float *daLog) {
  double acc = 0.0;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t i = t * NH + h;
    const double v = ddt[i] * sigmoid((double)dt[i] + dtBias[h]);
    acc += v;
    if (ddtRaw)
      ddtRaw[i] = (float)v;
  }
  if (ddtBias)
    ddtBias[h] = (float)acc;
  if (daLog)
    daLog[h] = (float)(-exp((double)aLog[h]) * dA[h]);
}

} // namespace shardline::rt::cuda::arith

#endif
