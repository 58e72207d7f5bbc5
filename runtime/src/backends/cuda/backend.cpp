//===- backend.cpp - the CUDA backend's kernel table and entry point ------===//
//
// libshardline-backend-cuda.so: the runtime loads it when a run asks for
// --device cuda (backends/registry.h) and calls shardline_backend_cuda, which
// checks that a CUDA device is there and returns the backend. Each entry of
// its table is the CPU table's entry of the same op (operand and attribute
// bindings, contract, rank-fact resolver) with a `run` that launches the CUDA
// kernels on the rank's CudaDevice; an op without one here is not in the
// table, and a plan that holds it is refused before it runs.
//
//===----------------------------------------------------------------------===//

#include "backends/cuda/backend_grad.h"
#include "backends/cuda/cuda_device.h"
#include "backends/cuda/entry.h"
#include "backends/cuda/exchange.h"
#include "backends/cuda/exchange_grad.h"
#include "backends/cuda/moe.h"
#include "backends/cuda/nccl.h"
#include "backends/cuda/overlap.h"
#include "backends/cuda/run_util.h"
#include "comm/nccl_kernels.h"
#include "exec/program.h"
#include "kernels/cuda/kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <mutex>

namespace shardline::rt {

namespace {

using Binary = cudaError_t (*)(cuda::Src, cuda::Src, int64_t, cuda::Dst, cudaStream_t);
template <Binary Fn> void binary(const Step &s, Frame &f) {
  launched(
      Fn(src(f, s.in[0]), src(f, s.in[1]), f.n(s.out[0]), dst(f, s.out[0]), deviceOf(f).stream()),
      "elementwise");
}

using Unary = cudaError_t (*)(cuda::Src, int64_t, cuda::Dst, cudaStream_t);
template <Unary Fn> void unary(const Step &s, Frame &f) {
  launched(Fn(src(f, s.in[0]), f.n(s.out[0]), dst(f, s.out[0]), deviceOf(f).stream()),
           "elementwise");
}

void embedding(const Step &s, Frame &f) {
  int32_t ids = s.in[0], table = s.in[1];
  CudaDevice &device = deviceOf(f);
  int64_t limit = f.global(table)[0];
  launched(cuda::embedding(f.ids(ids), f.n(ids), src(f, table), f.local(table)[0],
                           f.local(table)[1], s.facts.vocabOffset, limit, dst(f, s.out[0]),
                           device.counter(), device.stream()),
           "embedding");
  requireNoBadIds(f, ids, limit, "the embedding table's rows");
}

void rmsNorm(const Step &s, Frame &f) {
  int64_t h = f.local(s.in[0]).back();
  launched(cuda::rms_norm(src(f, s.in[0]), src(f, s.in[1]), f.n(s.out[0]) / h, h,
                          (float)s.attrs[0].f, dst(f, s.out[0]), deviceOf(f).stream()),
           "rms_norm");
}

void gatedRmsNorm(const Step &s, Frame &f) {
  int32_t y = s.in[0];
  int64_t c = f.local(y).back(), groups = s.attrs[0].i * c / f.global(y).back();
  launched(cuda::gated_rms_norm(src(f, y), src(f, s.in[1]), src(f, s.in[2]), f.n(s.out[0]) / c, c,
                                groups, (float)s.attrs[1].f, dst(f, s.out[0]),
                                deviceOf(f).stream()),
           "gated_rms_norm");
}

/// The sequences of a local [B, S, ...] value: its chunks when the op runs
/// them one by one (kernels/cpu/table.h, forEachChunk), else one a batch
/// entry.
cuda::Sequences sequencesOf(const TensorInfo &x, bool chunked) {
  return {x.local[0], x.local[1], chunked ? chunksPerRank(x.layout, 1) : 1};
}

void conv(const Step &s, Frame &f) {
  const TensorInfo &x = f.tensors[s.in[0]];
  bool hasHalo = s.has(3);
  launched(cuda::causal_conv1d(src(f, s.in[0]), src(f, s.in[1]), src(f, s.in[2]), src(f, s.in[3]),
                               sequencesOf(x, hasHalo), x.local[2], f.local(s.in[1])[1],
                               dst(f, s.out[0]), deviceOf(f).stream()),
           "causal_conv1d");
}

/// Operand and attribute order of ssd_scan (kernels/cpu/table.h).
enum { kSsdX, kSsdDt, kSsdALog, kSsdB, kSsdC, kSsdD, kSsdDtBias, kSsdStateIn };

/// ssd_scan in chunks (kernels/cuda/ssd_arith.h) on the tensors as stored
/// (the entry keeps 16-bit ones, keepsSsd), its scratch from the device's.
void ssdScan(const Step &s, Frame &f) {
  enum {
    X = kSsdX,
    Dt = kSsdDt,
    ALog = kSsdALog,
    Bm = kSsdB,
    Cm = kSsdC,
    D = kSsdD,
    DtBias = kSsdDtBias,
    StateIn = kSsdStateIn
  };
  enum { kHeads, kGroups, kChunkAxes };
  const TensorInfo &x = f.tensors[s.in[X]];
  const std::vector<int64_t> &cl = f.local(s.in[Cm]);
  int64_t nh = f.local(s.in[Dt])[2], p = x.shape[2] / s.attrs[kHeads].i;
  int64_t g = s.attrs[kGroups].i * cl[2] / f.global(s.in[Cm])[2], n = cl[2] / g;
  cuda::Sequences seq = sequencesOf(x, !s.attrs[kChunkAxes].strings.empty());
  cuda::SsdLaunch launch;
  std::string error;
  if (!cuda::ssdLaunch(seq.B * seq.chunks, seq.S / seq.chunks, nh, p, n, launch, error))
    throw Stop{error, false};
  CudaDevice &device = deviceOf(f);
  cuda::Dst y = dst(f, s.out[0]);
  void *scratch = device.scratch(std::max<int64_t>(1, launch.bytesFor(y.type)));
  launched(cuda::ssd_scan(src(f, s.in[X]), src(f, s.in[Dt]), src(f, s.in[DtBias]),
                          src(f, s.in[ALog]), src(f, s.in[Bm]), src(f, s.in[Cm]), src(f, s.in[D]),
                          src(f, s.in[StateIn]), seq, nh, p, g, n, y, dst(f, s.out[1]),
                          dst(f, s.out[2]), launch, scratch, device.stream()),
           "ssd_scan");
}

void rglruScan(const Step &s, Frame &f) {
  enum { X, Wa, Ba, Wx, Bx, Lambda, StateIn };
  const TensorInfo &x = f.tensors[s.in[X]];
  launched(cuda::rglru_scan(src(f, s.in[X]), src(f, s.in[Wa]), src(f, s.in[Ba]), src(f, s.in[Wx]),
                            src(f, s.in[Bx]), src(f, s.in[Lambda]), src(f, s.in[StateIn]),
                            sequencesOf(x, !s.attrs[0].strings.empty()), x.local[2],
                            dst(f, s.out[0]), dst(f, s.out[1]), dst(f, s.out[2]),
                            deviceOf(f).stream()),
           "rglru_scan");
}

/// linear and lm_head: y[T, N] = x[T, K] . w[K, N] on the tensors as stored
/// (the entries keep 16-bit tensors): bf16 or f16 factors go to the tensor
/// cores as they are, f32 accumulation, the product written in its own type
/// (CudaDevice::gemm). Paired with the all_gather before it, piece by piece
/// under the gather (backends/cuda/overlap.h).
void linear(const Step &s, Frame &f) {
  if (runPairedLinear(s, f))
    return;
  const std::vector<int64_t> &w = f.local(s.in[1]);
  deviceOf(f).gemm(false, false, f.stored(s.in[0]), f.stored(s.in[1]), f.n(s.out[0]) / w[1], w[1],
                   w[0], f.stored(s.out[0]));
}

using Keeps16 = bool (*)(const Step &, const Frame &);

/// The GEMMs take every mix of types (CudaDevice::gemm), the loss every
/// type of its logits and of itself.
bool keepsAll(const Step &, const Frame &) { return true; }

/// Whether the step's result and its operands `In...` (its activations)
/// share one type: the memory-bound kernels have an instance for each
/// float type of the activations and each of the other float operands
/// (a norm's scale, the embedding table). A step whose activations differ
/// is widened to f32 and back.
template <int... In> bool keepsShared(const Step &s, const Frame &f) {
  DType type = f.views[s.out[0]].dtype;
  return ((f.views[s.in[In]].dtype == type) && ...);
}

/// keepsShared for the activations, and the parameters `Param...` (those
/// the step has) of one type among themselves: the convolution's kernel
/// and bias, the RG-LRU gates'. The halo (the conv's operand 3) is an
/// activation where the step has one.
template <int... Param> bool keepsParams(const Step &s, const Frame &f) {
  int first = std::min({Param...});
  DType type = f.views[s.in[first]].dtype;
  return ((!s.has(Param) || f.views[s.in[Param]].dtype == type) && ...);
}
bool keepsConv(const Step &s, const Frame &f) {
  return keepsShared<0>(s, f) && (!s.has(3) || keepsShared<3>(s, f)) && keepsParams<1, 2>(s, f);
}
bool keepsRglru(const Step &s, const Frame &f) {
  return keepsShared<0>(s, f) && keepsParams<1, 2, 3, 4, 5>(s, f);
}
/// The SSD scan's x, dt, B and C of y's type and its dt_bias, a_log and D of
/// one type, f32 or y's (the instances sequence.cu has); the states and the
/// decay of any float type.
bool keepsSsd(const Step &s, const Frame &f) {
  DType params = f.views[s.in[kSsdALog]].dtype;
  return keepsShared<kSsdX, kSsdDt, kSsdB, kSsdC>(s, f) &&
         keepsParams<kSsdALog, kSsdD, kSsdDtBias>(s, f) &&
         (params == DType::F32 || params == f.views[s.out[0]].dtype);
}

/// The corrections: y0 and the activations of y's type, the parameters of
/// one type, f32 or y's (exchange.cu's instances), init of any float type.
/// ssd_correct: y0, init, C, dt, a_log, dt_bias; rglru_correct: y0, init,
/// x, wa, ba, lambda.
template <int First, int Last> bool ownOrF32Params(const Step &s, const Frame &f) {
  DType params = f.views[s.in[First]].dtype;
  for (int i = First + 1; i <= Last; ++i)
    if (f.views[s.in[i]].dtype != params)
      return false;
  return params == DType::F32 || params == f.views[s.out[0]].dtype;
}
bool keepsSsdCorrect(const Step &s, const Frame &f) {
  return keepsShared<0, 2, 3>(s, f) && ownOrF32Params<4, 5>(s, f);
}
bool keepsRglruCorrect(const Step &s, const Frame &f) {
  return keepsShared<0, 2>(s, f) && ownOrF32Params<3, 5>(s, f);
}

/// Dropless MoE: x, the router's weights and y of one type, the experts'
/// gate, up and down of one type (moe.cpp: x's rows move as stored and the
/// grouped GEMMs widen every tile as they stage it).
bool keepsDropless(const Step &s, const Frame &f) {
  enum { kX, kWeights, kIndices, kGate, kUp, kDown };
  DType w = f.views[s.in[kGate]].dtype;
  return keepsShared<kX, kWeights>(s, f) && f.views[s.in[kUp]].dtype == w &&
         f.views[s.in[kDown]].dtype == w;
}

/// AdamW with a main copy writes its 16-bit weight in place, which a
/// widened copy of an operand would not carry back: the weight and its
/// gradient stay as stored (optimizer.cu's adamw_main takes them so).
bool keepsMain(const Step &s, const Frame &) {
  enum { kMain = 5 }; // sl.adamw's operand order: weight, grad, m, v, sumsq, main
  return s.has(kMain);
}

/// Attribute order of the attention entries (kernels/cpu/table.h).
enum { kHeads, kCausal, kScale };

int64_t headDim(const Step &s, const Frame &f) { return f.global(s.in[0])[2] / s.attrs[kHeads].i; }

/// Attention keeps q, k, v and its output of one type: 16-bit ones go to
/// the tensor cores (attention_tc) for head dims up to 256 where the GPU
/// lets a block hold the head dim's shared-memory layout (every head dim on
/// compute capability 9.0; up to 64 on 12.0); the rest, and f32, run on
/// the f32 kernel. Ring attention alike, its blocks crossing as stored
/// (exchange.cpp).
bool keepsAttention(const Step &s, const Frame &f) {
  if (!keepsShared<0, 1, 2>(s, f))
    return false;
  if (f.views[s.in[0]].dtype == DType::F32)
    return true;
  return cuda::attentionOnTensorCores(headDim(s, f),
                                      static_cast<const CudaDevice *>(f.device)->sharedOptIn());
}
/// Local attention as attention, its halos (where the step has them) of
/// q's type too (over a halo or sequence chunks its run is the exchange's,
/// exchange.cpp).
bool keepsLocalAttention(const Step &s, const Frame &f) {
  return keepsAttention(s, f) && (!s.has(3) || keepsShared<3, 4>(s, f));
}

/// The entries that read 16-bit tensors as stored (KernelSpec::keeps16):
/// the GEMMs of linear and lm_head and their backward (backend_grad.cpp),
/// the memory-bound forward kernels, the attentions (the tensor cores), the
/// causal conv1d, the RG-LRU and SSD scans (their states and decays of any
/// float type), their corrections and state exchange, the halo (its rows
/// moved as stored), the loss (the logits and the loss of any float type,
/// whole or over vocabulary shards), the layout transitions (the moves
/// cross in 16 bits, and so do the sums of reduce_scatter, all_reduce and
/// a relayout that drops a pending sum, summed on arrival in f32 in group
/// order and rounded once: backends/cuda/nccl.cpp), MoE's forward (the
/// router, dispatch and combine of one type, capacity mode's slots of any
/// weights' type, the experts' GEMMs of every mix, dropless MoE's rows) and
/// AdamW of a 16-bit weight through its main copy.
Keeps16 keeps16(const std::string &kind) {
  static const std::map<std::string, Keeps16> kept = {
      {"linear", keepsAll},
      {"lm_head", keepsAll},
      {"linear_grad", keepsAll},
      {"linear_grad_weight", keepsAll},
      {"add", keepsShared<0, 1>},
      {"mul", keepsShared<0, 1>},
      {"swiglu", keepsShared<0, 1>},
      {"silu", keepsShared<0>},
      {"gelu", keepsShared<0>},
      {"sigmoid", keepsShared<0>},
      {"softplus", keepsShared<0>},
      {"rms_norm", keepsShared<0>},
      {"gated_rms_norm", keepsShared<0, 1>},
      {"rope", keepsShared<0>},
      {"embedding", keepsShared<>},
      {"attention", keepsAttention},
      {"local_attention", keepsLocalAttention},
      {"ring_attention", keepsAttention},
      {"halo", keepsShared<0>},
      {"all_gather", keepsShared<0>},
      {"all_to_all", keepsShared<0>},
      {"slice", keepsShared<0>},
      {"reorder", keepsShared<0>},
      {"relayout", keepsShared<0>},
      {"reduce_scatter", keepsShared<0>},
      {"all_reduce", keepsShared<0>},
      {"ssd_correct", keepsSsdCorrect},
      {"scan_state_exchange", keepsShared<0, 1>},
      {"rglru_correct", keepsRglruCorrect},
      {"causal_conv1d", keepsConv},
      {"rglru_scan", keepsRglru},
      {"ssd_scan", keepsSsd},
      {"cross_entropy", keepsAll},
      {"router_topk", keepsShared<0>},
      {"moe_dispatch", keepsShared<0>},
      {"moe_experts", keepsAll},
      {"moe_combine", keepsShared<0, 1>},
      {"moe_capacity_slots", keepsAll},
      {"moe_dispatch_capacity", keepsShared<0>},
      {"moe_combine_capacity", keepsShared<0, 1>},
      {"moe_dropless", keepsDropless},
      {"adamw", keepsMain},
  };
  auto found = kept.find(kind);
  return found == kept.end() ? nullptr : found->second;
}

void rope(const Step &s, Frame &f) {
  const std::vector<int64_t> &x = f.local(s.in[0]);
  int64_t d = s.attrs[0].i;
  CudaDevice &device = deviceOf(f);
  launched(cuda::rope(src(f, s.in[0]), device.positions(s.facts.positions), x[0], x[1], x[2] / d, d,
                      (float)s.attrs[1].f, dst(f, s.out[0]), device.stream()),
           "rope");
}

void routerTopk(const Step &s, Frame &f) {
  const std::vector<int64_t> &l = f.local(s.in[0]);
  launched(cuda::router_topk(src(f, s.in[0]), l[0] * l[1], l[2], s.attrs[0].i, dst(f, s.out[0]),
                             f.ids(s.out[1]), deviceOf(f).stream()),
           "router_topk");
}

/// Each token's row into the slab of each expert it chose: the dispatch is
/// dropless and static, as on the CPU (kernels/cpu/moe.cpp).
void moeDispatch(const Step &s, Frame &f) {
  const std::vector<int64_t> &x = f.local(s.in[0]);
  int64_t experts = f.local(s.out[0])[0];
  CudaDevice &device = deviceOf(f);
  launched(cuda::moe_dispatch(src(f, s.in[0]), f.ids(s.in[1]), x[0] * x[1], x[2],
                              f.local(s.in[1])[2], experts, dst(f, s.out[0]), device.counter(),
                              device.stream()),
           "moe_dispatch");
  requireNoBadIds(f, s.in[1], experts, "the experts");
}

/// SwiGLU experts over their whole slabs [E, r1, ..., rn, H] (the dense
/// dispatch's [E, b, s, H], capacity mode's buffers [E, Gb, Gs, C, H]), one
/// expert after another on the stream: the rows no token was routed to are
/// zero and stay zero (SwiGLU of zero is zero), so computing them gives the
/// CPU's packed result without the host learning how many rows each expert
/// got. The tensors as stored (CudaDevice::gemm takes every mix: 16-bit
/// slabs and weights of one type go to the tensor cores); the gate and up
/// products and SwiGLU stay f32, as the CPU's. Against bf16 down weights
/// the f32 hidden values go to the tensor cores too, split in two bf16
/// parts (cuda::split_bf16: to 2^-16), the two products added in f32 and
/// rounded into out once; against others the down projection reads f32.
void moeExperts(const Step &s, Frame &f) {
  const std::vector<int64_t> &gate = f.local(s.in[1]);
  int64_t E = gate[0], H = gate[1], F = gate[2], R = f.n(s.in[0]) / std::max<int64_t>(1, E * H);
  CudaDevice &device = deviceOf(f);
  cudaStream_t stream = device.stream();
  const BufferView &tokens = f.stored(s.in[0]), &wGate = f.stored(s.in[1]),
                   &wUp = f.stored(s.in[2]), &wDown = f.stored(s.in[3]), &out = f.stored(s.out[0]);
  const bool split = wDown.dtype == DType::BF16;
  // The step's own memory: a GEMM of mixed types stages through scratch.
  StepMemory memory(device);
  float *hidden = memory.floats(std::max<int64_t>(1, 2 * R * F)), *up = hidden + R * F;
  BufferView h(hidden, R * F), u(up, R * F), hi, lo, product, rest;
  if (split) {
    hi = BufferView(memory.elements(R * F, DType::BF16), R * F, DType::BF16);
    lo = BufferView(memory.elements(R * F, DType::BF16), R * F, DType::BF16);
    product = BufferView(memory.floats(std::max<int64_t>(1, R * H)), R * H);
    rest = BufferView(memory.floats(std::max<int64_t>(1, R * H)), R * H);
  }
  for (int64_t e = 0; e < E; ++e) {
    BufferView rows = tokens.slice(e * R * H, R * H), down = wDown.slice(e * F * H, F * H),
               result = out.slice(e * R * H, R * H);
    device.gemm(false, false, rows, wGate.slice(e * H * F, H * F), R, F, H, h);
    device.gemm(false, false, rows, wUp.slice(e * H * F, H * F), R, F, H, u);
    launched(cuda::swiglu(hidden, up, R * F, hidden, stream), "swiglu");
    if (!split) {
      device.gemm(false, false, h, down, R, H, F, result);
      continue;
    }
    launched(cuda::split_bf16(hidden, R * F, hi.data, lo.data, stream), "split_bf16");
    device.gemm(false, false, hi, down, R, H, F, product);
    device.gemm(false, false, lo, down, R, H, F, rest);
    launched(cuda::add(product.f32(), rest.f32(), R * H, product.f32(), stream), "add");
    device.convert(product, result);
  }
}

void moeCombine(const Step &s, Frame &f) {
  const std::vector<int64_t> &slabs = f.local(s.in[0]);
  CudaDevice &device = deviceOf(f);
  launched(cuda::moe_combine(src(f, s.in[0]), src(f, s.in[1]), f.ids(s.in[2]), slabs[1] * slabs[2],
                             slabs[3], f.local(s.in[1])[2], slabs[0], dst(f, s.out[0]),
                             device.counter(), device.stream()),
           "moe_combine");
  requireNoBadIds(f, s.in[2], slabs[0], "the experts");
}

/// Attention of q over k and v at the given positions: causal or not,
/// within `window` tokens when it is positive. q, k, v and the output as
/// stored: bf16 or f16 on the tensor cores, f32 on the f32 kernel
/// (keepsAttention).
void attend(const Step &s, Frame &f, bool causal, float scale, int64_t window,
            const std::vector<int64_t> &queryPositions, const std::vector<int64_t> &keyPositions) {
  const std::vector<int64_t> &ql = f.local(s.in[0]), &kl = f.local(s.in[1]);
  int64_t D = headDim(s, f);
  int64_t B = ql[0], Sq = ql[1], Sk = kl[1], HQ = ql[2] / D, HKV = kl[2] / D;
  CudaDevice &device = deviceOf(f);
  AttentionLaunch(f.stored(s.in[0]).dtype, B, HQ, Sq, D)
      .run(f.stored(s.in[0]).data, f.stored(s.in[1]).data, f.stored(s.in[2]).data,
           device.positions(queryPositions), device.positions(keyPositions), Sk, HKV, causal, scale,
           window, f.stored(s.out[0]).data, false, nullptr, device.stream());
}

float defaultScale(const Step &s, Frame &f) {
  return (float)(1.0 / std::sqrt((double)headDim(s, f)));
}

void attention(const Step &s, Frame &f) {
  float scale = s.attrs[kScale].present ? (float)s.attrs[kScale].f : defaultScale(s, f);
  attend(s, f, s.attrs[kCausal].i != 0, scale, 0, s.facts.positions, s.facts.keyPositions);
}

/// Sliding-window attention over a sequence a rank holds whole: its own keys
/// at its own positions. A sequence split over ranks (chunks, halos) needs
/// the halo's keys, which a run of one rank never has.
void localAttention(const Step &s, Frame &f) {
  enum { kWindow = 1 };
  const TensorInfo &q = f.tensors[s.in[0]];
  if (s.has(3) || chunksPerRank(q.layout, 1) != 1)
    throw Stop{"the CUDA backend runs local attention over whole sequences only (no halo)", false};
  attend(s, f, true, defaultScale(s, f), s.attrs[kWindow].i, s.facts.positions, s.facts.positions);
}

/// Cross-entropy over the whole vocabulary: at world size 1 a rank holds it
/// all, and the vocabulary's group has this rank alone.
void crossEntropy(const Step &s, Frame &f) {
  const std::vector<int64_t> &l = f.local(s.in[0]), &global = f.global(s.in[0]);
  if (l[2] != global[2])
    throw Stop{"the CUDA backend runs cross-entropy over a whole vocabulary (this rank holds " +
                   std::to_string(l[2]) + " of " + std::to_string(global[2]) + ")",
               false};
  CudaDevice &device = deviceOf(f);
  int64_t T = l[0] * l[1];
  auto *terms = static_cast<double *>(device.scratch(std::max<int64_t>(1, T) * 8));
  launched(cuda::cross_entropy(src(f, s.in[0]), f.ids(s.in[1]), T, l[2],
                               (double)(global[0] * global[1]), terms, device.counter(),
                               dst(f, s.out[0]), device.stream()),
           "cross_entropy");
  requireNoBadIds(f, s.in[1], global[2], "the vocabulary");
}

/// A layout transition: over NCCL when the run has several ranks, else (at
/// world size 1 nothing moves between ranks) the operand, copied; the
/// tensors as the step holds them (16-bit ones as stored where the entry
/// keeps them, keeps16).
void transition(const Step &s, Frame &f) {
  if (NcclWorld *nccl = deviceOf(f).nccl())
    return nccl->transition(s, f);
  const BufferView &from = f.moved(s.in[0]), &to = f.moved(s.out[0]);
  if (from.count != to.count)
    throw Stop{"the CUDA backend moves tensors between ranks only at world size 1 (" +
                   std::to_string(from.count) + " elements into " + std::to_string(to.count) + ")",
               false};
  deviceOf(f).convert(from, to);
}

/// The ops the CUDA backend runs, by kind.
const std::map<std::string, void (*)(const Step &, Frame &)> &cudaRuns() {
  static const std::map<std::string, void (*)(const Step &, Frame &)> runs = {
      {"add", binary<cuda::add>},
      {"mul", binary<cuda::mul>},
      {"swiglu", binary<cuda::swiglu>},
      {"silu", unary<cuda::silu>},
      {"gelu", unary<cuda::gelu>},
      {"sigmoid", unary<cuda::sigmoid>},
      {"softplus", unary<cuda::softplus>},
      {"gated_rms_norm", gatedRmsNorm},
      {"causal_conv1d", conv},
      {"ssd_scan", ssdScan},
      {"router_topk", routerTopk},
      {"moe_dispatch", moeDispatch},
      {"moe_experts", moeExperts},
      {"moe_combine", moeCombine},
      {"rglru_scan", rglruScan},
      {"embedding", embedding},
      {"rms_norm", rmsNorm},
      {"linear", linear},
      {"lm_head", linear},
      {"rope", rope},
      {"attention", attention},
      {"local_attention", localAttention},
      {"cross_entropy", crossEntropy},
      {"all_gather", transition},
      {"all_to_all", transition},
      {"slice", transition},
      {"reorder", transition},
      {"relayout", transition},
      {"reduce_scatter", transition},
      {"all_reduce", transition},
  };
  return runs;
}

std::unique_ptr<Device> makeDevice(int64_t rank) { return std::make_unique<CudaDevice>(rank); }

std::string connect(Frame &frame, const NcclLowering &lowering, double timeoutSeconds) {
  if (std::string why = firstStepOutside(lowering, ncclDeviceKinds()); !why.empty())
    return why;
  std::string error;
  CudaDevice &device = deviceOf(frame);
  std::unique_ptr<NcclWorld> world =
      NcclWorld::connect(frame, device, lowering, timeoutSeconds, error);
  if (!world)
    return error;
  device.setNccl(std::move(world));
  return "";
}

} // namespace

} // namespace shardline::rt

using namespace shardline::rt;

/// The backend, or nullptr with the reason: a runtime of another interface
/// version, or no usable CUDA device on this machine (no driver, no GPU).
extern "C" __attribute__((visibility("default"))) const Backend *
shardline_backend_cuda(int abiVersion, const KernelTable *reference, char *error,
                       size_t errorBytes) {
  if (abiVersion != kBackendAbiVersion) {
    std::snprintf(error, errorBytes,
                  "the CUDA backend library was built for runtime interface %d, this runtime "
                  "has %d",
                  kBackendAbiVersion, abiVersion);
    return nullptr;
  }
  int devices = 0;
  cudaError_t status = cudaGetDeviceCount(&devices);
  if (status != cudaSuccess || devices == 0) {
    std::snprintf(error, errorBytes, "no CUDA device (%s)",
                  status != cudaSuccess ? cudaGetErrorString(status) : "0 devices");
    return nullptr;
  }
  static std::once_flag built;
  static KernelTable table;
  std::call_once(built, [&] {
    for (const auto *runs : {&cudaRuns(), &cudaGradRuns(), &cudaMoeRuns()})
      for (const auto &[kind, run] : *runs) {
        auto found = reference->find(kind);
        if (found == reference->end())
          continue;
        KernelSpec spec = found->second;
        spec.run = run;
        spec.keeps16 = keeps16(kind);
        table.emplace(kind, spec);
      }
    // The steps whose kernels exchange values themselves over NCCL, and
    // those that compute on what the exchanges bring (backends/cuda/exchange.h).
    std::map<std::string, CudaRun> exchanges = exchangeRuns(cudaRuns());
    exchanges.merge(exchangeGradRuns());
    for (const auto &[kind, run] : exchanges) {
      auto found = reference->find(kind);
      if (found == reference->end())
        continue;
      KernelSpec spec = found->second;
      spec.run = run;
      spec.keeps16 = keeps16(kind);
      table.insert_or_assign(kind, spec);
    }
  });
  static const Backend backend{"cuda",
                               table,
                               makeDevice,
                               1,
                               "values cross between GPUs over NCCL: --comm nccl (thread ranks, "
                               "one GPU each) or --comm mpi+nccl (under mpirun)",
                               "nccl",
                               connect};
  return &backend;
}
