//===- backend_grad.cpp - the CUDA backend's backward and AdamW runs ------===//
//
// Training on the GPU: the backward of the norms, the linear layers
// (through cuBLASLt), RoPE, attention and sliding-window attention (over
// halos and sequence chunks too), the elementwise activations,
// cross-entropy over a whole vocabulary, the embedding, the conv1d and the
// RG-LRU and SSD scans (with halos and sequence chunks), and the router
// (MoE's backward is backends/cuda/moe.cpp's); the gradients' sums of
// squares and AdamW. Each run launches the kernels of kernels/cuda/kernels_grad.h on
// the rank's CudaDevice; the backward of the kernels' own exchanges is
// exchange_grad.cpp's.
//
//===----------------------------------------------------------------------===//

#include "backends/cuda/backend_grad.h"

#include "backends/cuda/cuda_device.h"
#include "backends/cuda/entry.h"
#include "backends/cuda/run_util.h"
#include "kernels/cuda/kernels_grad.h"

#include <cmath>
#include <tuple>

namespace shardline::rt {

namespace {

using MapGrad = cudaError_t (*)(const float *, const float *, int64_t, float *, cudaStream_t);
template <MapGrad Fn> void mapGrad(const Step &s, Frame &f) {
  checkCuda(Fn(f.f(s.in[0]), f.f(s.in[1]), f.n(s.out[0]), f.f(s.out[0]), deviceOf(f).stream()),
            "elementwise gradient");
}

void swigluGrad(const Step &s, Frame &f) {
  checkCuda(cuda::swiglu_grad(f.f(s.in[0]), f.f(s.in[1]), f.f(s.in[2]), f.n(s.in[0]), f.f(s.out[0]),
                              f.f(s.out[1]), deviceOf(f).stream()),
            "swiglu_grad");
}

void rmsNormGrad(const Step &s, Frame &f) {
  int64_t h = f.local(s.in[0]).back();
  checkCuda(cuda::rms_norm_grad(f.f(s.in[0]), f.f(s.in[1]), f.f(s.in[2]), f.n(s.out[0]) / h, h,
                                (float)s.attrs[0].f, f.f(s.out[0]), deviceOf(f).stream()),
            "rms_norm_grad");
}

void rmsNormGradWeight(const Step &s, Frame &f) {
  int64_t h = f.local(s.in[0]).back(), T = f.n(s.in[0]) / h;
  CudaDevice &d = deviceOf(f);
  auto *inverse = static_cast<double *>(d.scratch(std::max<int64_t>(1, T) * 8));
  checkCuda(cuda::rms_norm_grad_weight(f.f(s.in[0]), f.f(s.in[1]), T, h, (float)s.attrs[0].f,
                                       inverse, f.f(s.out[0]), d.stream()),
            "rms_norm_grad_weight");
}

/// Attribute order of the gated norm's entries: groups, eps.
enum { kNormGroups, kNormEps };

/// The groups among this rank's channels of y (kernels/cpu/mamba_grad.cpp).
int64_t localGroups(const Step &s, Frame &f, int32_t y) {
  return s.attrs[kNormGroups].i * f.local(y).back() / f.global(y).back();
}

/// gated_rms_norm_grad (y, z, weight, dresult -> dy, dz).
void gatedRmsNormGrad(const Step &s, Frame &f) {
  int32_t y = s.in[0];
  int64_t c = f.local(y).back();
  checkCuda(cuda::gated_rms_norm_grad(f.f(y), f.f(s.in[1]), f.f(s.in[2]), f.f(s.in[3]), f.n(y) / c,
                                      c, localGroups(s, f, y), (float)s.attrs[kNormEps].f,
                                      f.f(s.out[0]), f.f(s.out[1]), deviceOf(f).stream()),
            "gated_rms_norm_grad");
}

/// gated_rms_norm_grad_weight (y, z, dresult -> dweight).
void gatedRmsNormGradWeight(const Step &s, Frame &f) {
  int32_t y = s.in[0];
  int64_t c = f.local(y).back(), T = f.n(y) / c, groups = localGroups(s, f, y);
  CudaDevice &dev = deviceOf(f);
  auto *inverse = static_cast<double *>(dev.scratch(std::max<int64_t>(1, T * groups) * 8));
  checkCuda(cuda::gated_rms_norm_grad_weight(f.f(y), f.f(s.in[1]), f.f(s.in[2]), T, c, groups,
                                             (float)s.attrs[kNormEps].f, inverse, f.f(s.out[0]),
                                             dev.stream()),
            "gated_rms_norm_grad_weight");
}

/// dx[T, K] = dy[T, N] . w[K, N]^T, on the tensors as stored (16-bit
/// factors to the tensor cores, as linear's forward).
void linearGrad(const Step &s, Frame &f) {
  const std::vector<int64_t> &w = f.local(s.in[1]);
  deviceOf(f).gemm(false, true, f.stored(s.in[0]), f.stored(s.in[1]), f.n(s.out[0]) / w[0], w[0],
                   w[1], f.stored(s.out[0]));
}

/// dw[K, N] = x[T, K]^T . dy[T, N], on the tensors as stored.
void linearGradWeight(const Step &s, Frame &f) {
  const std::vector<int64_t> &w = f.local(s.out[0]);
  deviceOf(f).gemm(true, false, f.stored(s.in[0]), f.stored(s.in[1]), w[0], w[1],
                   f.n(s.in[0]) / w[0], f.stored(s.out[0]));
}

void ropeGrad(const Step &s, Frame &f) {
  const std::vector<int64_t> &dy = f.local(s.in[0]);
  int64_t d = s.attrs[0].i;
  CudaDevice &dev = deviceOf(f);
  checkCuda(cuda::rope_grad(f.f(s.in[0]), dev.positions(s.facts.positions), dy[0], dy[1], dy[2] / d,
                            d, (float)s.attrs[1].f, f.f(s.out[0]), dev.stream()),
            "rope_grad");
}

/// Attribute order of the attention entries (kernels/cpu/table.h).
enum { kHeads, kCausal, kScale };

/// Attention's backward at the given positions (causal or not, within
/// `window` tokens when it is positive): dq when it is not nullptr, dk and
/// dv when they are not. The forward's output and log-sum-exp are recomputed
/// into scratch first.
void attentionBackward(const Step &s, Frame &f, bool causal, float scale, int64_t window,
                       const std::vector<int64_t> &queryPositions,
                       const std::vector<int64_t> &keyPositions, float *dq, float *dk, float *dv) {
  const std::vector<int64_t> &ql = f.local(s.in[0]), &kl = f.local(s.in[1]);
  int64_t D = f.global(s.in[0])[2] / s.attrs[kHeads].i;
  int64_t B = ql[0], Sq = ql[1], Sk = kl[1], HQ = ql[2] / D, HKV = kl[2] / D;
  cuda::AttentionTiling tiling;
  cuda::AttentionGradTiling gradTiling;
  attentionTilings(B, HQ, Sq, HKV, Sk, D, tiling, gradTiling);
  CudaDevice &dev = deviceOf(f);
  int64_t rows = B * Sq * HQ;
  auto *out = static_cast<float *>(dev.scratch(std::max<int64_t>(1, rows * (D + 2)) * 4));
  cuda::AttentionGradArgs a{f.f(s.in[0]),
                            f.f(s.in[1]),
                            f.f(s.in[2]),
                            f.f(s.in[3]),
                            dev.positions(queryPositions),
                            dev.positions(keyPositions),
                            B,
                            Sq,
                            Sk,
                            HQ,
                            HKV,
                            D,
                            causal,
                            scale,
                            window,
                            out,
                            out + rows * D,
                            out + rows * (D + 1)};
  checkCuda(cuda::attention_grad(a, tiling, gradTiling, dq, dk, dv, dev.stream()),
            "attention's backward");
}

float attentionScale(const Step &s, Frame &f) {
  return s.attrs[kScale].present
             ? (float)s.attrs[kScale].f
             : (float)(1.0 / std::sqrt((double)(f.global(s.in[0])[2] / s.attrs[kHeads].i)));
}

void attentionGrad(const Step &s, Frame &f) {
  attentionBackward(s, f, s.attrs[kCausal].i != 0, attentionScale(s, f), 0, s.facts.positions,
                    s.facts.keyPositions, f.f(s.out[0]), nullptr, nullptr);
}

void attentionGradKv(const Step &s, Frame &f) {
  attentionBackward(s, f, s.attrs[kCausal].i != 0, attentionScale(s, f), 0, s.facts.positions,
                    s.facts.keyPositions, nullptr, f.f(s.out[0]), f.f(s.out[1]));
}

/// Sliding-window attention's backward over sequences a rank holds whole:
/// dq, dk and dv at once, the keys at the queries' positions, the default
/// scale.
void localAttentionGradWhole(const Step &s, Frame &f) {
  enum { kWindow = 1 };
  float scale = (float)(1.0 / std::sqrt((double)(f.global(s.in[0])[2] / s.attrs[kHeads].i)));
  attentionBackward(s, f, true, scale, s.attrs[kWindow].i, s.facts.positions, s.facts.positions,
                    f.f(s.out[0]), f.f(s.out[1]), f.f(s.out[2]));
}

/// local_attention_grad (q, k, v, dy -> dq, dk, dv) and, with halos,
/// local_attention_grad_halo (q, k, v, k_halo, v_halo, dy -> dq, dk, dv,
/// dk_halo, dv_halo), each local chunk of each batch entry as the forward
/// takes it (kernels/cpu/local_attention_grad.cpp): its kept halo keys and
/// values (those at positions >= 0) and its own gathered on the device, the
/// attention backward over them at the chunk's global positions (the
/// forward again for the log-sum-exp, then the dq and dk, dv kernels), and
/// the keys' gradients split back: the kept halo rows' into the halo's
/// gradient (the rows before position 0 zero), the others' into dk, dv.
/// Sequences a rank holds whole take one launch of the whole batch.
template <bool Halo> void localAttentionGrad(const Step &s, Frame &f) {
  enum { Q, K, V, KHalo, VHalo };
  enum { kWindow = 1 };
  const TensorInfo &qt = f.tensors[s.in[Q]];
  int64_t chunks = chunksPerRank(qt.layout, 1);
  if (!Halo && chunks == 1)
    return localAttentionGradWhole(s, f);
  int DY = Halo ? 5 : 3;
  int64_t window = s.attrs[kWindow].i, S = qt.local[1] / chunks, B = qt.local[0];
  int64_t D = f.global(s.in[Q])[2] / s.attrs[kHeads].i, qw = qt.local[2], kw = f.local(s.in[K])[2],
          H = Halo ? window - 1 : 0;
  int64_t HQ = qw / D, HKV = kw / D;
  float scale = (float)(1.0 / std::sqrt((double)D));
  CudaDevice &dev = deviceOf(f);
  cudaStream_t stream = dev.stream();
  StepMemory memory(dev);
  float *kk = memory.floats((H + S) * kw), *vv = memory.floats((H + S) * kw);
  float *dkk = memory.floats((H + S) * kw), *dvv = memory.floats((H + S) * kw);
  float *stats = memory.floats(S * HQ * (D + 2));
  // Each chunk's buffers are filled after the previous chunk's kernels have
  // read them: one stream orders them.
  for (int64_t bi = 0; bi < B; ++bi)
    for (int64_t c = 0; c < chunks; ++c) {
      int64_t rows = (bi * chunks + c) * S;
      WindowKeys keys = gatherWindowKeys(s, f, H, S, chunks, bi, c, kk, vv);
      int64_t kept = keys.kept;
      cuda::AttentionTiling tiling;
      cuda::AttentionGradTiling gradTiling;
      attentionTilings(1, HQ, S, HKV, kept + S, D, tiling, gradTiling);
      cuda::AttentionGradArgs a{f.f(s.in[Q]) + rows * qw,
                                kk,
                                vv,
                                f.f(s.in[DY]) + rows * qw,
                                memory.indices(keys.queryPositions),
                                memory.indices(keys.keyPositions),
                                1,
                                S,
                                kept + S,
                                HQ,
                                HKV,
                                D,
                                true,
                                scale,
                                window,
                                stats,
                                stats + S * HQ * D,
                                stats + S * HQ * (D + 1)};
      checkCuda(
          cuda::attention_grad(a, tiling, gradTiling, f.f(s.out[0]) + rows * qw, dkk, dvv, stream),
          "local attention's backward");
      for (auto [src, own, halo] : {std::tuple{dkk, 1, 3}, std::tuple{dvv, 2, 4}}) {
        if (Halo) {
          float *dhalo = f.f(s.out[halo]) + (bi * chunks + c) * H * kw;
          checkCuda(cudaMemsetAsync(dhalo, 0, (size_t)keys.skip * kw * 4, stream),
                    "cudaMemsetAsync");
          copyDevice(dhalo + keys.skip * kw, src, kept * kw * 4, dev);
        }
        copyDevice(f.f(s.out[own]) + rows * kw, src + kept * kw, S * kw * 4, dev);
      }
    }
}

/// Cross-entropy's backward over a whole vocabulary: at world size 1 a rank
/// holds it all.
void crossEntropyGrad(const Step &s, Frame &f) {
  const std::vector<int64_t> &l = f.local(s.in[0]), &global = f.global(s.in[0]);
  if (l[2] != global[2])
    throw Stop{"the CUDA backend runs cross-entropy's backward over a whole vocabulary (this rank "
               "holds " +
                   std::to_string(l[2]) + " of " + std::to_string(global[2]) + ")",
               false};
  CudaDevice &dev = deviceOf(f);
  checkCuda(cuda::cross_entropy_grad(f.f(s.in[0]), f.ids(s.in[1]), l[0] * l[1], l[2],
                                     (double)(global[0] * global[1]), f.f(s.out[0]), dev.counter(),
                                     dev.stream()),
            "cross_entropy_grad");
  requireNoBadIds(f, s.in[1], global[2], "the vocabulary");
}

void embeddingGrad(const Step &s, Frame &f) {
  int32_t ids = s.in[0], dy = s.in[1], table = s.in[2];
  const std::vector<int64_t> &rows = f.local(table);
  int64_t limit = f.global(table)[0];
  CudaDevice &dev = deviceOf(f);
  auto *acc = static_cast<double *>(dev.scratch(std::max<int64_t>(1, rows[0] * rows[1]) * 8));
  checkCuda(cuda::embedding_grad(f.ids(ids), f.f(dy), f.n(ids), rows[0], rows[1],
                                 s.facts.vocabOffset, limit, acc, f.f(s.out[0]), dev.counter(),
                                 dev.stream()),
            "embedding_grad");
  requireNoBadIds(f, ids, limit, "the embedding table's rows");
}

void sumSquares(const Step &s, Frame &f) {
  int64_t n = f.n(s.in[0]);
  CudaDevice &dev = deviceOf(f);
  auto *partials = static_cast<double *>(dev.scratch(cuda::sumShape(n).blocks * 8));
  checkCuda(cuda::sum_squares(f.f(s.in[0]), n, partials, f.f(s.out[0]), dev.stream()),
            "sum_squares");
}

/// AdamW on the rank's part of a weight, as kernels/cpu/optimizer.cpp: the
/// hyperparameters and step from the run, nothing when it does not train,
/// the clipping factor worked out on the device from the sum of squares.
void adamW(const Step &s, Frame &f) {
  enum { kWeight, kGrad, kM, kV, kSumsq, kMain };
  if (!f.train)
    return;
  const TrainOptions &o = *f.train;
  if (f.trainStep < 1)
    throw adamwStepStop(f.trainStep);
  double t = (double)f.trainStep;
  cuda::arith::AdamWConstants k{o.lrAt(f.trainStep - 1),
                                o.beta1,
                                o.beta2,
                                o.eps,
                                s.attrs[0].i ? o.weightDecay : 0.0,
                                1.0 - std::pow(o.beta1, t),
                                1.0 - std::pow(o.beta2, t),
                                o.clipGrad};
  CudaDevice &dev = deviceOf(f);
  float *sumsq = f.f(s.in[kSumsq]);
  // A 16-bit weight with its main copy is kept as stored (backend.cpp,
  // keepsMain): the update applies to main and rounds the weight from it.
  if (s.has(kMain))
    checkCuda(cuda::adamw_main(dst(f, s.in[kWeight]), src(f, s.in[kGrad]), f.f(s.in[kMain]),
                               f.f(s.in[kM]), f.f(s.in[kV]), f.n(s.in[kWeight]), k, sumsq,
                               dev.counter(), dev.stream()),
              "adamw");
  else
    checkCuda(cuda::adamw(f.f(s.in[kWeight]), f.f(s.in[kGrad]), f.f(s.in[kM]), f.f(s.in[kV]),
                          f.n(s.in[kWeight]), k, sumsq, dev.counter(), dev.stream()),
              "adamw");
  // A non-finite sum stops every update of the step in its kernel (none
  // writes), so the first update's reading is the step's.
  if (dev.firstSumsqCheck(s.in[kSumsq], f.trainStep) && dev.readCounter() > 0) {
    float total = 0.0f;
    dev.download(BufferView(sumsq, 1), BufferView(&total, 1));
    throw adamwSumsqStop(f.tensors[s.in[kSumsq]].name, total, f.trainStep);
  }
}

/// The sequences a conv's backward takes: the B whole ones, or with the
/// forward's halo (operand 2) every chunk of each, in the forward's order
/// (batch entry outermost), each with its W - 1 halo rows.
struct ConvSequences {
  int64_t count, length;
  const float *halo;
};
ConvSequences convSequences(const Step &s, Frame &f, const TensorInfo &x) {
  if (s.in.size() <= 2 || !s.has(2))
    return {x.local[0], x.local[1], nullptr};
  int64_t k = chunksPerRank(x.layout, 1);
  return {x.local[0] * k, x.local[1] / k, f.f(s.in[2])};
}

/// causal_conv1d_grad (weight, dy[, halo] -> dx[, dhalo]).
void convGrad(const Step &s, Frame &f) {
  const TensorInfo &dy = f.tensors[s.in[1]];
  ConvSequences seq = convSequences(s, f, dy);
  float *dhalo = seq.halo && s.out.size() > 1 && s.out[1] >= 0 ? f.f(s.out[1]) : nullptr;
  checkCuda(cuda::causal_conv1d_grad(f.f(s.in[0]), f.f(s.in[1]), seq.count, seq.length, dy.local[2],
                                     f.local(s.in[0])[1], f.f(s.out[0]), dhalo,
                                     deviceOf(f).stream()),
            "causal_conv1d_grad");
}

/// causal_conv1d_grad_weight (x, dy[, halo] -> dweight, dbias).
void convGradWeight(const Step &s, Frame &f) {
  const TensorInfo &x = f.tensors[s.in[0]];
  ConvSequences seq = convSequences(s, f, x);
  checkCuda(cuda::causal_conv1d_grad_weight(f.f(s.in[0]), seq.halo, f.f(s.in[1]), seq.count,
                                            seq.length, x.local[2], f.local(s.out[0])[1],
                                            f.f(s.out[0]), f.f(s.out[1]), deviceOf(f).stream()),
            "causal_conv1d_grad_weight");
}

/// The sequences a scan's backward takes per batch entry: the chunks of a
/// sequence split over ranks where the op names `chunk_axes` (attribute
/// `attr`), else 1.
int64_t scanChunks(const Step &s, const TensorInfo &x, size_t attr) {
  return s.attrs[attr].strings.empty() ? 1 : chunksPerRank(x.layout, 1);
}

/// rglru_scan_grad (-> dx, dstate_in?) and rglru_scan_grad_weights (-> dwa,
/// dba, dwx, dbx, dlambda), over whole sequences or each chunk of a
/// sequence split over ranks from its own state and summaries' cotangents.
template <bool Weights> void rglruScanGrad(const Step &s, Frame &f) {
  enum { X, Wa, Ba, Wx, Bx, Lambda, StateIn, Dy, DState, DDecay };
  const std::vector<int64_t> &x = f.local(s.in[X]);
  int64_t chunks = scanChunks(s, f.tensors[s.in[X]], 0);
  CudaDevice &dev = deviceOf(f);
  auto in = [&](int i) -> const float * { return s.has(i) ? f.f(s.in[i]) : nullptr; };
  auto out = [&](size_t r) -> float * {
    return r < s.out.size() && s.out[r] >= 0 ? f.f(s.out[r]) : nullptr;
  };
  cuda::arith::RglruGradArgs a{
      in(X),
      in(Wa),
      in(Ba),
      in(Wx),
      in(Bx),
      in(Lambda),
      in(StateIn),
      in(Dy),
      in(DState),
      in(DDecay),
      x[0],
      x[1],
      x[2],
      Weights ? nullptr : out(0),
      Weights ? nullptr : out(1),
      Weights ? out(0) : nullptr,
      Weights ? out(1) : nullptr,
      Weights ? out(2) : nullptr,
      Weights ? out(3) : nullptr,
      Weights ? out(4) : nullptr,
      static_cast<double *>(dev.scratch(std::max<int64_t>(1, x[1] * x[2]) * 8)),
      chunks};
  checkCuda(cuda::rglru_scan_grad(a, dev.stream()), "rglru_scan_grad");
}

/// ssd_scan_grad (-> dx, ddt, dB, dC[, dstate_in]) and ssd_scan_grad_params
/// (-> da_log, dd, ddt_bias), over whole sequences or each chunk of a
/// sequence split over ranks from its own state and summaries' cotangents:
/// the scan's backward and its prelude's computed whole by either op, the
/// other op's results into scratch, as the CPU's entries do.
template <bool Params> void ssdScanGrad(const Step &s, Frame &f) {
  enum { X, Dt, ALog, Bm, Cm, D, DtBias, Dy, StateIn, DState, DDecay };
  enum { kHeads, kGroups, kChunkAxes };
  const TensorInfo &x = f.tensors[s.in[X]];
  const std::vector<int64_t> &cl = f.local(s.in[Cm]);
  int64_t nh = f.local(s.in[Dt])[2], p = x.shape[2] / s.attrs[kHeads].i;
  int64_t g = s.attrs[kGroups].i * cl[2] / f.global(s.in[Cm])[2], n = cl[2] / g;
  int64_t B = x.local[0], S = x.local[1], T = B * S;
  auto opt = [&](size_t i) { return i < s.in.size() && s.has(i) ? f.f(s.in[i]) : nullptr; };
  const int64_t chunks = scanChunks(s, x, kChunkAxes);
  cuda::SsdGradLaunch launch;
  std::string error;
  if (!cuda::ssdGradLaunch(B * chunks, S / chunks, nh, p, g, n, launch, error))
    throw Stop{error, false};
  // Scratch: the kernels' (ssdGradLaunch's), then ddt, dA, dD and the
  // results of the other op.
  int64_t floats = T * nh + 2 * nh + (Params ? f.n(s.in[X]) + 2 * f.n(s.in[Cm]) : 0);
  CudaDevice &dev = deviceOf(f);
  char *scratch = static_cast<char *>(dev.scratch(launch.scratchBytes + floats * 4));
  float *ddt = reinterpret_cast<float *>(scratch + launch.scratchBytes), *dA = ddt + T * nh,
        *dD = dA + nh, *rest = dD + nh;
  cuda::arith::SsdGradArgs a{};
  a.fwd = cuda::arith::SsdArgs{f.f(s.in[X]),
                               f.f(s.in[Dt]),
                               f.f(s.in[DtBias]),
                               f.f(s.in[ALog]),
                               f.f(s.in[Bm]),
                               f.f(s.in[Cm]),
                               f.f(s.in[D]),
                               opt(StateIn),
                               B,
                               S,
                               chunks,
                               nh,
                               p,
                               g,
                               n,
                               nullptr,
                               nullptr,
                               nullptr,
                               nullptr,
                               nullptr,
                               nullptr};
  a.dy = f.f(s.in[Dy]);
  a.dstate = opt(DState);
  a.ddecay = opt(DDecay);
  a.dx = Params ? rest : f.f(s.out[0]);
  a.ddt = ddt;
  a.dA = dA;
  a.dB = Params ? rest + f.n(s.in[X]) : f.f(s.out[2]);
  a.dC = Params ? rest + f.n(s.in[X]) + f.n(s.in[Cm]) : f.f(s.out[3]);
  a.dD = Params ? f.f(s.out[1]) : dD;
  a.dstateIn = !Params && s.out.size() > 4 && s.out[4] >= 0 ? f.f(s.out[4]) : nullptr;
  checkCuda(cuda::ssd_scan_grad(a, launch, scratch, Params ? nullptr : f.f(s.out[1]),
                                Params ? f.f(s.out[2]) : nullptr, Params ? f.f(s.out[0]) : nullptr,
                                dev.stream()),
            "ssd_scan_grad");
}

/// router_topk_grad (weights, indices, dweights -> dlogits).
void routerTopkGrad(const Step &s, Frame &f) {
  const std::vector<int64_t> &w = f.local(s.in[0]);
  int64_t E = f.local(s.out[0])[2];
  CudaDevice &dev = deviceOf(f);
  checkCuda(cuda::router_topk_grad(f.f(s.in[0]), f.ids(s.in[1]), f.f(s.in[2]), w[0] * w[1], w[2], E,
                                   f.f(s.out[0]), dev.counter(), dev.stream()),
            "router_topk_grad");
  requireNoBadIds(f, s.in[1], E, "the experts");
}

} // namespace

const std::map<std::string, void (*)(const Step &, Frame &)> &cudaGradRuns() {
  static const std::map<std::string, void (*)(const Step &, Frame &)> runs = {
      {"silu_grad", mapGrad<cuda::silu_grad>},
      {"gelu_grad", mapGrad<cuda::gelu_grad>},
      {"sigmoid_grad", mapGrad<cuda::sigmoid_grad>},
      {"softplus_grad", mapGrad<cuda::softplus_grad>},
      {"swiglu_grad", swigluGrad},
      {"rms_norm_grad", rmsNormGrad},
      {"rms_norm_grad_weight", rmsNormGradWeight},
      {"linear_grad", linearGrad},
      {"linear_grad_weight", linearGradWeight},
      {"rope_grad", ropeGrad},
      {"attention_grad", attentionGrad},
      {"attention_grad_kv", attentionGradKv},
      {"local_attention_grad", localAttentionGrad<false>},
      {"local_attention_grad_halo", localAttentionGrad<true>},
      {"causal_conv1d_grad", convGrad},
      {"causal_conv1d_grad_weight", convGradWeight},
      {"rglru_scan_grad", rglruScanGrad<false>},
      {"rglru_scan_grad_weights", rglruScanGrad<true>},
      {"gated_rms_norm_grad", gatedRmsNormGrad},
      {"gated_rms_norm_grad_weight", gatedRmsNormGradWeight},
      {"router_topk_grad", routerTopkGrad},
      {"ssd_scan_grad", ssdScanGrad<false>},
      {"ssd_scan_grad_params", ssdScanGrad<true>},
      {"cross_entropy_grad", crossEntropyGrad},
      {"embedding_grad", embeddingGrad},
      {"sum_squares", sumSquares},
      {"adamw", adamW},
  };
  return runs;
}

} // namespace shardline::rt
