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

} // namespace shardline::rt::cuda::arith

#endif
