//===- arith.h - the CUDA kernels' arithmetic, host and device --*- C++ -*-===//
//
// What each CUDA kernel computes per element, per row or per tile, as
// functions that compile for the host as well as the device. The kernels
// (*.cu) only add the parallel structure around them: which thread takes
// which element, shared-memory tiles, reductions across threads. A CPU unit
// test (test/cuda_arith_test.cpp) runs these same functions against the CPU
// reference kernels on machines without a GPU, so a GPU run checks the
// hardware path, not the arithmetic. No CUDA header is needed here.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CUDA_ARITH_H
#define SHARDLINE_RUNTIME_KERNELS_CUDA_ARITH_H

#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/float16.h"

namespace shardline::rt::cuda::arith {

// -- element types ------------------------------------------------------------
//
// The roundings of core/float16.h, the ones the CPU device uses: a device that
// rounds otherwise would hold other 16-bit weights than the CPU run of the
// same seed.
using bits::bf16ToFloat;
using bits::f16ToFloat;
using bits::floatToBf16;
using bits::floatToF16;
using bits::fromBits;
using bits::toBits;

/// The element types a device buffer holds, as core/buffer.h numbers them.
enum class Type : int { F32 = 0, BF16 = 1, F16 = 2, I32 = 3 };

// -- storage types --------------------------------------------------------------
//
// The memory-bound kernels read and write tensors in the type they are stored
// in: an element is widened to f32 as it is loaded (exactly) and rounded once,
// to nearest even, as it is stored, with core/float16.h's roundings; the
// arithmetic between is the f32 (or double) arithmetic of the functions
// below. Those are the values the executor's widened copies hold and the
// rounding its narrowing applies, so a kernel over 16-bit storage gives the
// bits the same kernel gives over f32 copies rounded afterwards.

/// A bf16 or f16 element: its bit pattern.
struct Bf16 {
  uint16_t bits;
};
struct F16 {
  uint16_t bits;
};

/// How a kernel loads and stores an element held as T: float, Bf16 or F16.
template <typename T> struct Storage;
template <> struct Storage<float> {
  static constexpr Type type = Type::F32;
  static SL_HD float toFloat(float v) { return v; }
  static SL_HD float fromFloat(float v) { return v; }
};
template <> struct Storage<Bf16> {
  static constexpr Type type = Type::BF16;
  static SL_HD float toFloat(Bf16 v) { return bf16ToFloat(v.bits); }
  static SL_HD Bf16 fromFloat(float v) { return {floatToBf16(v)}; }
};
template <> struct Storage<F16> {
  static constexpr Type type = Type::F16;
  static SL_HD float toFloat(F16 v) { return f16ToFloat(v.bits); }
  static SL_HD F16 fromFloat(float v) { return {floatToF16(v)}; }
};

/// Element i of a tensor stored as T, widened to f32.
template <typename T> SL_HD float loadElement(const T *data, int64_t i) {
  return Storage<T>::toFloat(data[i]);
}
/// Stores `value` as element i of a tensor stored as T, rounded to T.
template <typename T> SL_HD void storeElement(T *data, int64_t i, float value) {
  data[i] = Storage<T>::fromFloat(value);
}

/// The split of an f32 value into two of T: hi the value rounded, lo the
/// rest rounded (v − hi is exact in f32); for bf16, hi + lo holds v to
/// 2^-16 of it (an f32 product on the bf16 tensor cores as two).
template <typename T> SL_HD void splitValue(float v, T &hi, T &lo) {
  hi = Storage<T>::fromFloat(v);
  lo = Storage<T>::fromFloat(v - Storage<T>::toFloat(hi));
}

/// fn(T{}) for the storage type T that `type` names: how a launch picks the
/// kernel's instance for a tensor's type; `other` for a type no float is
/// stored in (I32).
template <typename R, typename Fn> R withStorage(Type type, R other, Fn fn) {
  switch (type) {
  case Type::F32:
    return fn(float{});
  case Type::BF16:
    return fn(Bf16{});
  case Type::F16:
    return fn(F16{});
  default:
    return other;
  }
}

/// Element i of a buffer of `type`, as f32 (int32 exactly for |v| < 2^24).
SL_HD float load(const void *data, Type type, int64_t i) {
  switch (type) {
  case Type::BF16:
    return loadElement(static_cast<const Bf16 *>(data), i);
  case Type::F16:
    return loadElement(static_cast<const F16 *>(data), i);
  case Type::I32:
    return (float)static_cast<const int32_t *>(data)[i];
  default:
    return static_cast<const float *>(data)[i];
  }
}

/// Stores `value` as element i of a buffer of `type`, rounded to it.
SL_HD void store(void *data, Type type, int64_t i, float value) {
  switch (type) {
  case Type::BF16:
    storeElement(static_cast<Bf16 *>(data), i, value);
    return;
  case Type::F16:
    storeElement(static_cast<F16 *>(data), i, value);
    return;
  case Type::I32:
    static_cast<int32_t *>(data)[i] = (int32_t)value;
    return;
  default:
    static_cast<float *>(data)[i] = value;
  }
}

// -- elementwise ----------------------------------------------------------------

SL_HD float silu(float x) { return x / (1.0f + expf(-x)); }
SL_HD float swiglu(float gate, float up) { return silu(gate) * up; }

// GeLU, sigmoid and softplus in double, as on the CPU; the branches keep
// exp() from overflowing for large |x|.
SL_HD double sigmoid(double x) {
  if (x >= 0)
    return 1.0 / (1.0 + exp(-x));
  double e = exp(x);
  return e / (1.0 + e);
}
SL_HD double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }
SL_HD double logSigmoid(double x) { return -softplus(-x); }
SL_HD double gelu(double x) { return 0.5 * x * (1.0 + erf(x * 0.70710678118654752440)); }

// -- embedding ------------------------------------------------------------------

/// The row of this rank's shard of the table (rows [offset, offset + rows) of
/// the vocabulary) that token `id` reads, or -1: another rank's row, whose
/// output stays zero here.
SL_HD int64_t embeddingRow(int32_t id, int64_t offset, int64_t rows) {
  int64_t row = (int64_t)id - offset;
  return row >= 0 && row < rows ? row : -1;
}

/// Whether a token id or label lies in [0, limit).
SL_HD bool idInRange(int32_t id, int64_t limit) { return id >= 0 && (int64_t)id < limit; }

// -- RMSNorm --------------------------------------------------------------------

/// 1/sqrt(mean(x^2) + eps) of a row of `width` values from their sum of
/// squares (summed in f32 by the kernel's threads, then across them).
SL_HD float inverseRms(float sumSquares, int64_t width, float eps) {
  return 1.0f / sqrtf(sumSquares / (float)width + eps);
}

/// One element of RMSNorm: x normalised by its row's inv, scaled by the
/// weight.
SL_HD float rmsNormed(float x, float inv, float w) { return x * inv * w; }

/// One element of the gated norm: y normalised within its group (inv, from
/// the group's sum of squares), scaled by the weight and gated by silu(z).
SL_HD float gatedNorm(float y, float inv, float w, float z) { return y * inv * w * silu(z); }

// -- sequences cut into chunks ---------------------------------------------------------
//
// A local [B, S, ...] value under context parallelism holds k chunks of S/k
// tokens per batch entry (kernels/cpu/table.h, forEachChunk); the scans and
// the convolution run each chunk as a sequence of its own.

/// Sequence q (of B*k) as batch entry b and chunk c: its first row, its
/// length, and the slot of its state (c*B + b, the scans') and of its halo
/// (b*k + c, the convolution's).
struct Sequence {
  int64_t firstRow, length, stateSlot, haloSlot;
};
SL_HD Sequence sequenceAt(int64_t q, int64_t B, int64_t S, int64_t chunks) {
  int64_t b = q / chunks, c = q % chunks, length = S / chunks;
  return {b * S + c * length, length, c * B + b, b * chunks + c};
}

// -- causal depthwise conv1d ----------------------------------------------------------

/// T itself where it is not deduced: a parameter that may be given as
/// nullptr takes its type from the others.
template <typename T> struct Same {
  using type = T;
};

/// Output channel c at token t of a sequence x[L, C] whose W - 1 tokens
/// before it are halo[W - 1, C] (nullptr: zeros): bias[c] (nullptr: 0) plus
/// the kernel w[C, W] over the window ending at t, summed in double. x and
/// the halo are stored as T, w and the bias as P (Storage).
template <typename T, typename P>
SL_HD float convAt(const T *x, const P *w, const typename Same<P>::type *bias,
                   const typename Same<T>::type *halo, int64_t C, int64_t W, int64_t t, int64_t c) {
  double acc = bias ? loadElement(bias, c) : 0.0;
  for (int64_t j = 0; j < W; ++j) {
    int64_t src = t - (W - 1) + j;
    float value = 0.0f;
    if (src >= 0)
      value = loadElement(x, src * C + c);
    else if (halo)
      value = loadElement(halo, ((W - 1) + src) * C + c);
    acc += (double)loadElement(w, c * W + j) * value;
  }
  return (float)acc;
}

/// Output element e (row, channel) of the convolution of x[B, S, C] cut
/// into sequences, each reading the W - 1 rows before it from its halo slot.
template <typename T, typename P>
SL_HD float convElement(const T *x, const P *w, const typename Same<P>::type *bias,
                        const typename Same<T>::type *halo, int64_t B, int64_t S, int64_t chunks,
                        int64_t C, int64_t W, int64_t e) {
  int64_t row = e / C, c = e % C;
  int64_t q = (row / S) * chunks + (row % S) / (S / chunks);
  Sequence at = sequenceAt(q, B, S, chunks);
  const T *haloRows = halo ? halo + at.haloSlot * (W - 1) * C : nullptr;
  return convAt(x + at.firstRow * C, w, bias, haloRows, C, W, row - at.firstRow, c);
}

// -- the Mamba-2 SSD scan ---------------------------------------------------------------

/// The scan's step size of a token and head, softplus(dt + dt_bias), and a
/// head's decay rate, -exp(a_log): the CPU's prelude (kernels/cpu/kernels.h,
/// ssd_prelude), rounded to f32 where it rounds.
SL_HD float ssdStep(float dt, float dtBias) { return (float)softplus((double)(dt + dtBias)); }
SL_HD float ssdRate(float aLog) { return -expf(aLog); }

// The scan itself, chunk by chunk, is in ssd_arith.h.

// -- the RG-LRU scan --------------------------------------------------------------------

/// c·log(sigmoid(lambda)): the log of a channel's decay base (c = 8).
SL_HD double rglruLogBase(float lambda, float c) { return c * logSigmoid(lambda); }

/// The gate pre-activations of one element: w·x + b (f32, as on the CPU).
SL_HD float rglruGate(float w, float x, float b) { return w * x + b; }

/// One token of one channel: log a = sigmoid(gate_a)·base,
/// h = a·h + sqrt(1 - a²)·sigmoid(gate_x)·x (double), the log of the running
/// decay grows by log a. Returns h.
SL_HD float rglruToken(float x, float gateA, float gateX, double base, double &h,
                       double &logDecay) {
  double la = sigmoid(gateA) * base;
  // sqrt(1 - a^2) through expm1 keeps its precision when a is close to 1.
  h = exp(la) * h + sqrt(-expm1(2.0 * la)) * sigmoid(gateX) * x;
  logDecay += la;
  return (float)h;
}

/// What the RG-LRU scan reads and writes (kernels.h, rglru_scan): x and y
/// stored as T, the gates' parameters (wa, ba, wx, bx, lambda) as P, the
/// states and the decays in the types the plan gives them (F32, BF16 or
/// F16; read and written once a lane).
template <typename T, typename P> struct RglruArgsOf {
  const T *x;
  const P *wa, *ba, *wx, *bx, *lambda;
  const void *stateIn;
  int64_t B, S, chunks, W;
  T *y;
  void *stateOut, *decayOut;
  Type stateInType = Type::F32, stateOutType = Type::F32, decayType = Type::F32;
};
using RglruArgs = RglruArgsOf<float, float>;

/// Lane `lane` of the RG-LRU scan (of B*chunks*W): one channel of one
/// sequence, across its tokens.
template <typename T, typename P> SL_HD void rglruLane(const RglruArgsOf<T, P> &a, int64_t lane) {
  int64_t w = lane % a.W;
  Sequence at = sequenceAt(lane / a.W, a.B, a.S, a.chunks);
  int64_t slot = at.stateSlot * a.W + w;
  double h = a.stateIn ? load(a.stateIn, a.stateInType, slot) : 0.0, logDecay = 0.0;
  double base = rglruLogBase(loadElement(a.lambda, w), 8.0f);
  float wa = loadElement(a.wa, w), ba = loadElement(a.ba, w);
  float wx = loadElement(a.wx, w), bx = loadElement(a.bx, w);
  for (int64_t t = 0; t < at.length; ++t) {
    int64_t i = (at.firstRow + t) * a.W + w;
    float x = loadElement(a.x, i);
    storeElement(a.y, i,
                 rglruToken(x, rglruGate(wa, x, ba), rglruGate(wx, x, bx), base, h, logDecay));
  }
  store(a.stateOut, a.stateOutType, slot, (float)h);
  store(a.decayOut, a.decayType, slot, (float)exp(logDecay));
}

// -- RoPE -----------------------------------------------------------------------
//
// The angle grows with the position: in f32 a far token would lose its phase,
// so the angle and its sine and cosine are double, as on the CPU.

/// The angle of pair i (of D/2) of a head at global position `position`.
SL_HD double ropeAngle(int64_t position, int64_t i, int64_t D, float theta) {
  return (double)position * pow((double)theta, -2.0 * (double)i / (double)D);
}

/// Where rotated pair p (of B*S*NH*D/2, one per thread) lies in x[B, S,
/// NH*D]: the offset of its head's D values, its index i in the head's first
/// half, and its row s of the S positions.
struct RopePair {
  int64_t base, i, s;
};
SL_HD RopePair ropePair(int64_t p, int64_t S, int64_t NH, int64_t D) {
  int64_t half = D / 2, head = p / half;
  return {head * D, p % half, (head / NH) % S};
}

/// Rotates the pair (x1, x2) = (x[i], x[i + D/2]) by `angle`.
SL_HD void ropeRotate(float x1, float x2, double angle, float &out1, float &out2) {
  double c = cos(angle), s = sin(angle);
  out1 = (float)(x1 * c - x2 * s);
  out2 = (float)(x2 * c + x1 * s);
}

// -- attention -------------------------------------------------------------------

/// Whether query position q sees key position k (kernels/cpu/kernels.h:
/// causal, and within `window` tokens when it is positive).
SL_HD bool visible(int64_t q, int64_t k, bool causal, int64_t window) {
  return !causal || (k <= q && (window <= 0 || q - k < window));
}

/// The running softmax of one query over the keys seen so far: the largest
/// score m and the sum l of exp(score - m). The output accumulated so far is
/// scaled by what push() returns whenever m grows.
struct OnlineSoftmax {
  float m = -INFINITY;
  float l = 0.0f;

  /// Takes one visible key's score; returns the weight of its value and, in
  /// `rescale`, the factor that the accumulated output must first be
  /// multiplied by.
  SL_HD float push(float score, float &rescale) {
    if (score > m) {
      rescale = m == -INFINITY ? 0.0f : expf(m - score);
      l = l * rescale + 1.0f;
      m = score;
      return 1.0f;
    }
    rescale = 1.0f;
    float p = expf(score - m);
    l += p;
    return p;
  }
  /// What the accumulated output is divided by: 0 when no key was visible
  /// (the output row is then zero).
  SL_HD float inverseSum() const { return l > 0.0f ? 1.0f / l : 0.0f; }
  /// The log-sum-exp of the visible scores, -inf when there were none.
  SL_HD float lse() const { return l > 0.0f ? m + logf(l) : -INFINITY; }
};

/// One query's pass over a tile of `n` keys held as rows of D values (kTile,
/// vTile, row stride D): every visible key's score scale·q·k joins the
/// running softmax and its value the accumulated output acc[D].
SL_HD void attendTile(const float *q, const float *kTile, const float *vTile,
                      const int64_t *keyPositions, int n, int64_t D, int64_t queryPosition,
                      bool causal, int64_t window, float scale, OnlineSoftmax &state, float *acc) {
  for (int j = 0; j < n; ++j) {
    if (!visible(queryPosition, keyPositions[j], causal, window))
      continue;
    const float *k = kTile + (int64_t)j * D;
    float score = 0.0f;
    for (int64_t e = 0; e < D; ++e)
      score += q[e] * k[e];
    float rescale;
    float p = state.push(score * scale, rescale);
    const float *v = vTile + (int64_t)j * D;
    for (int64_t e = 0; e < D; ++e)
      acc[e] = acc[e] * rescale + p * v[e];
  }
}

/// The query a thread of the attention kernel takes: block `block` holds
/// `queriesPerBlock` consecutive queries of one (batch b, head h), blocks
/// running over the queries fastest, then the heads, then the batch.
struct AttentionQuery {
  int64_t b, h, i;
};
SL_HD AttentionQuery attentionQuery(int64_t block, int64_t thread, int64_t queryBlocks,
                                    int64_t heads, int64_t queriesPerBlock) {
  int64_t headBlock = block / queryBlocks;
  return {headBlock / heads, headBlock % heads, (block % queryBlocks) * queriesPerBlock + thread};
}

/// The query head's kv head under grouped-query attention.
SL_HD int64_t kvHead(int64_t head, int64_t heads, int64_t kvHeads) {
  return head / (heads / kvHeads);
}

// -- MoE ------------------------------------------------------------------------------
//
// The dispatch is dropless and static, as on the CPU: each expert's slab
// holds a row per token, zero where the router did not choose the expert.

/// One token's routing over logits l[E]: the k largest logits (ties to the
/// lower expert) into idx[k], and their softmax probabilities (in double)
/// renormalised over the k into weights[k]. The logits stored as L, the
/// weights as W (each weight rounded once from f32).
template <typename L, typename W>
SL_HD void routeToken(const L *l, int64_t E, int64_t k, W *weights, int32_t *idx) {
  float m = loadElement(l, 0);
  for (int64_t e = 1; e < E; ++e)
    m = loadElement(l, e) > m ? loadElement(l, e) : m;
  double z = 0.0;
  for (int64_t e = 0; e < E; ++e)
    z += exp((double)loadElement(l, e) - m);
  for (int64_t j = 0; j < k; ++j) {
    int64_t best = -1;
    for (int64_t e = 0; e < E; ++e) {
      bool taken = false;
      for (int64_t i = 0; i < j; ++i)
        taken = taken || idx[i] == e;
      if (!taken && (best < 0 || loadElement(l, e) > loadElement(l, best)))
        best = e;
    }
    idx[j] = (int32_t)best;
  }
  double chosen = 0.0;
  for (int64_t j = 0; j < k; ++j)
    chosen += exp((double)loadElement(l, idx[j]) - m) / z;
  for (int64_t j = 0; j < k; ++j)
    storeElement(weights, j, (float)(exp((double)loadElement(l, idx[j]) - m) / z / chosen));
}

/// Element i of the dispatch (of T*k*H: token t, its j-th expert, channel h):
/// where in slabs[E, T, H] token t's row goes for that expert, or -1 when
/// the expert index lies outside [0, E).
SL_HD int64_t dispatchTarget(const int32_t *idx, int64_t T, int64_t H, int64_t k, int64_t E,
                             int64_t i) {
  int64_t t = i / (k * H), j = (i / H) % k, h = i % H;
  int32_t e = idx[t * k + j];
  return idInRange(e, E) ? ((int64_t)e * T + t) * H + h : -1;
}

/// Output (t, h) of the combine: token t's experts' rows of slabs[E, T, H],
/// weighted and summed in f32 in the order of its k choices. Indices
/// outside [0, E) contribute nothing (the kernel counts them). The slabs
/// and weights stored as T.
template <typename T>
SL_HD float combineElement(const T *slabs, const T *weights, const int32_t *idx, int64_t Tk,
                           int64_t H, int64_t k, int64_t E, int64_t t, int64_t h) {
  float acc = 0.0f;
  for (int64_t j = 0; j < k; ++j) {
    int32_t e = idx[t * k + j];
    if (idInRange(e, E))
      acc += loadElement(weights, t * k + j) * loadElement(slabs, ((int64_t)e * Tk + t) * H + h);
  }
  return acc;
}

// -- cross-entropy -----------------------------------------------------------------

/// One token's loss from its row's maximum, its sum of exp(logit - max) and
/// its label's logit: log(sum) + max - target.
SL_HD double crossEntropyTerm(float max, double sumExp, float target) {
  return log(sumExp) + (double)max - (double)target;
}

} // namespace shardline::rt::cuda::arith

#endif
