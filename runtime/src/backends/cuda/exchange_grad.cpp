//===- exchange_grad.cpp - CUDA runs of the exchanges' duals over NCCL ----===//
//
// Each run follows its CPU kernel (kernels/cpu/ring_grad.cpp, conv.cpp's
// haloAdd, scan.cpp's stateExchangeGrad, loss_grad.cpp): the same values
// cross the same groups in the same order, each on the rank's stream, and
// the step counts the bytes its NCCL lowering (comm/nccl_plan.cpp) states,
// the report's.
//
//===----------------------------------------------------------------------===//

#include "backends/cuda/exchange_grad.h"

#include "backends/cuda/backend_grad.h"
#include "backends/cuda/cuda_device.h"
#include "backends/cuda/entry.h"
#include "backends/cuda/nccl.h"
#include "backends/cuda/run_util.h"
#include "comm/nccl_kernels.h"
#include "kernels/cuda/exchange.h"
#include "kernels/cuda/exchange_grad.h"
#include "kernels/cuda/kernels_grad.h"

#include <algorithm>
#include <cmath>

namespace shardline::rt {

namespace {

// -- ring attention's backward ----------------------------------------------------

enum { kRingAxes = 3 };

/// One step of the backward's ring: `count` values at `send` to the next
/// member of the ring, the previous member's into `recv` (ring_grad.cpp
/// passes the other way round from the forward).
void ringPass(const Step &s, Frame &f, NcclWorld *world, const float *send, float *recv,
              int64_t count) {
  const std::vector<int64_t> &members = s.facts.members;
  int64_t next = members[1], prev = members.back();
  std::vector<NcclWorld::PeerTransfer> transfers;
  if (next == prev) {
    transfers.push_back({next, send, count, recv, count});
  } else {
    transfers.push_back({next, send, count, nullptr, 0});
    transfers.push_back({prev, nullptr, 0, recv, count});
  }
  world->sendRecv(f, axesAttr(s, kRingAxes), transfers);
}

/// ring_attention_grad (q, k, v, dy -> dq, dk, dv), as ring_grad.cpp: a
/// first pass of the K, V blocks recomputes the output and log-sum-exp
/// (the attention kernel per block, merged by the log-sum-exps); each
/// query's delta = dy·out; a second pass carries each K, V block with its
/// partial dK, dV, to which every member adds its queries' share (the
/// backward's tiles from the whole softmax's log-sum-exp,
/// attention_grad_from_stats) while adding the block's share to its dq;
/// a last step takes the finished dK, dV home. At step i this rank holds
/// the block of member n - i (mod n) of its ring.
void ringAttentionGrad(const Step &s, Frame &f) {
  enum { Q, K, V, DY };
  int32_t q = s.in[Q], dy = s.in[DY];
  AttentionShape shape = attentionShape(s, f);
  int64_t B = shape.B, Sq = shape.Sq, Sk = shape.Sk, HQ = shape.HQ, HKV = shape.HKV, D = shape.D;
  float scale = shape.scale;
  bool causal = shape.causal;
  cuda::AttentionTiling tiling;
  cuda::AttentionGradTiling gradTiling;
  attentionTilings(B, HQ, Sq, HKV, Sk, D, tiling, gradTiling);
  int64_t n = (int64_t)s.facts.members.size();
  NcclWorld *world = worldFor(f, (size_t)n);
  CudaDevice &device = deviceOf(f);
  cudaStream_t stream = device.stream();
  StepMemory memory(device);
  int64_t nk = f.n(s.in[K]), kv = nk + f.n(s.in[V]), nq = f.n(q), rows = B * HQ * Sq;
  // Each buffer holds a K, V block and room for its partial dK, dV.
  float *held = memory.floats(2 * kv), *arriving = memory.floats(2 * kv);
  float *out = memory.floats(nq), *part = memory.floats(nq), *dqPart = memory.floats(nq);
  float *lse = memory.floats(rows), *partLse = memory.floats(rows), *delta = memory.floats(rows);
  float *dkvPart = memory.floats(kv);
  auto own = [&] {
    copyDevice(held, f.f(s.in[K]), nk * 4, device);
    copyDevice(held + nk, f.f(s.in[V]), (kv - nk) * 4, device);
  };
  auto pass = [&](int64_t count) {
    ringPass(s, f, world, held, arriving, count);
    std::swap(held, arriving);
  };
  const int64_t *queryPositions = device.positions(s.facts.positions);
  auto keysOf = [&](int64_t i) { return device.positions(s.facts.memberPositions[(n - i) % n]); };

  own();
  for (int64_t i = 0; i < n; ++i) {
    bool first = i == 0;
    launched(cuda::attention(f.f(q), held, held + nk, queryPositions, keysOf(i), B, Sq, Sk, HQ, HKV,
                             D, causal, scale, 0, tiling, first ? out : part, first ? lse : partLse,
                             stream),
             "attention");
    if (!first)
      launched(cuda::attention_merge(out, lse, part, partLse, B, Sq, HQ, D, out, lse, stream),
               "attention_merge");
    if (i + 1 < n)
      pass(kv);
  }
  launched(cuda::attention_delta(f.f(dy), out, B, Sq, HQ, D, delta, stream), "attention_delta");

  float *dq = f.f(s.out[0]);
  checkCuda(cudaMemsetAsync(dq, 0, (size_t)nq * 4, stream), "cudaMemsetAsync");
  own();
  checkCuda(cudaMemsetAsync(held + kv, 0, (size_t)kv * 4, stream), "cudaMemsetAsync");
  for (int64_t i = 0; i < n; ++i) {
    cuda::AttentionGradArgs a{
        f.f(q), held, held + nk, f.f(dy), queryPositions, keysOf(i), B,       Sq,  Sk,
        HQ,     HKV,  D,         causal,  scale,          0,         nullptr, lse, delta};
    launched(cuda::attention_grad_from_stats(a, tiling, gradTiling, dqPart, dkvPart, dkvPart + nk,
                                             stream),
             "attention's backward");
    launched(cuda::add(dq, dqPart, nq, dq, stream), "add");
    launched(cuda::add(held + kv, dkvPart, kv, held + kv, stream), "add");
    if (i + 1 < n)
      pass(2 * kv);
  }
  const float *home = held + kv;
  if (n > 1) {
    ringPass(s, f, world, held + kv, arriving, kv);
    home = arriving;
  }
  copyDevice(f.f(s.out[1]), home, nk * 4, device);
  copyDevice(f.f(s.out[2]), home + nk, (kv - nk) * 4, device);
  if (world)
    world->countSent(s, f);
}

// -- halo_add -----------------------------------------------------------------------

/// halo_add (grad, x -> dx): every halo slot's row sent back to the rank it
/// came from (comm/nccl_kernels.h, haloRoutes the other way), packed by peer
/// in one grouped send/receive, and added onto the token it was read from;
/// the rows this rank read from itself are added without NCCL, and tokens
/// no halo read get zero. Rows landing on one token add up in order, one
/// thread a channel: this rank's own first, then each peer's by rank (the
/// CPU kernel adds them in its receive order, the same sums in another
/// order where a token is read by three or more slots).
void haloAdd(const Step &s, Frame &f) { haloExchange(s, f, true); }

// -- the scans' state exchange ----------------------------------------------------

/// scan_state_exchange_grad (decays, init, dinit -> dstates, ddecays): every
/// member's chunks' initial-state cotangents then decays all-gathered over
/// the group (the forward's bytes), and each of this rank's chunks' final
/// state cotangent folded on the device from the chunks after it, its
/// decays' from its own initial state (kernels/cpu/scan.cpp,
/// scan_combine_states_grad), so the other ranks' initial states are never
/// sent.
void stateExchangeGrad(const Step &s, Frame &f) {
  enum { Decays, Init, DInit };
  CudaDevice &device = deviceOf(f);
  StepMemory memory(device);
  GatheredSummaries g = gatherSummaries(s, f, memory, s.in[DInit], s.in[Decays]);
  if (!g.gathered)
    return;
  launched(cuda::state_exchange_grad(static_cast<const float *>(g.gathered),
                                     memory.indices(g.at.stateAt), memory.indices(g.at.decayAt),
                                     memory.indices(s.facts.positions), g.chunks, g.local,
                                     g.stateSize, g.stateSize / g.decaySize, f.f(s.in[Init]),
                                     f.f(s.out[0]), f.f(s.out[1]), device.stream()),
           "state_exchange_grad");
  if (g.world)
    g.world->countSent(s, f);
}

// -- the scans' corrections' backward -------------------------------------------------

/// The sequences per batch entry of a correction's backward: the chunks of
/// a sequence split over ranks where the op names `chunk_axes` (attribute
/// `attr`), else 1.
int64_t correctionChunks(const Step &s, const TensorInfo &x, size_t attr) {
  return s.attrs[attr].strings.empty() ? 1 : chunksPerRank(x.layout, 1);
}

/// ssd_correct_grad (init, C, dt, a_log, dt_bias, dy -> dinit, dC, ddt) and
/// ssd_correct_grad_params (.. -> da_log, ddt_bias), as mamba_grad.cpp's
/// correctGrad: the prelude, each sequence's correction backward from its
/// own initial state (one thread a group of heads), then the prelude's
/// backward; either op computes the whole, the other op's results into
/// scratch.
template <bool Params> void ssdCorrectGrad(const Step &s, Frame &f) {
  enum { Init, Cm, Dt, ALog, DtBias, Dy };
  enum { kCorrectHeads, kCorrectGroups, kCorrectChunkAxes };
  const TensorInfo &y = f.tensors[s.in[Dy]];
  const std::vector<int64_t> &cl = f.local(s.in[Cm]);
  int64_t nh = f.local(s.in[Dt])[2], T = f.n(s.in[Dt]) / std::max<int64_t>(1, nh);
  int64_t p = y.shape[2] / s.attrs[kCorrectHeads].i;
  int64_t g = s.attrs[kCorrectGroups].i * cl[2] / f.global(s.in[Cm])[2], n = cl[2] / g;
  CudaDevice &device = deviceOf(f);
  cudaStream_t stream = device.stream();
  StepMemory memory(device);
  float *dtPrelude = memory.floats(T * nh), *A = memory.floats(nh), *dA = memory.floats(nh);
  float *ddt = Params ? memory.floats(T * nh) : f.f(s.out[2]);
  float *dinit = Params ? memory.floats(f.n(s.in[Init])) : f.f(s.out[0]);
  float *dC = Params ? memory.floats(f.n(s.in[Cm])) : f.f(s.out[1]);
  cuda::arith::SsdCorrectGradArgs a{
      f.f(s.in[Cm]),
      dtPrelude,
      A,
      f.f(s.in[Init]),
      f.f(s.in[Dy]),
      y.local[0],
      y.local[1],
      correctionChunks(s, y, kCorrectChunkAxes),
      nh,
      p,
      g,
      n,
      dinit,
      dC,
      ddt,
      dA,
      memory.doubles(std::max<int64_t>(1, g) *
                     cuda::arith::ssdCorrectGradLaneDoubles(y.local[1], p, n))};
  const float *dt = f.f(s.in[Dt]), *dtBias = f.f(s.in[DtBias]), *aLog = f.f(s.in[ALog]);
  // The CPU's entry zeroes dinit first: entries past the sequences' slots
  // stay zero.
  checkCuda(cudaMemsetAsync(dinit, 0, (size_t)f.n(s.in[Init]) * 4, stream), "cudaMemsetAsync");
  launched(cuda::ssd_prelude(dt, dtBias, aLog, T, nh, dtPrelude, A, stream), "ssd_prelude");
  launched(cuda::ssd_correct_grad(a, stream), "ssd_correct_grad");
  launched(cuda::ssd_prelude_grad(dt, dtBias, aLog, ddt, dA, T, nh, ddt,
                                  Params ? f.f(s.out[1]) : nullptr,
                                  Params ? f.f(s.out[0]) : nullptr, stream),
           "ssd_prelude_grad");
}

/// rglru_correct_grad (init, x, wa, ba, lambda, dy -> dinit, dx) and
/// rglru_correct_grad_params (.. -> dwa, dba, dlambda), as
/// recurrent_grad.cpp's rglruCorrectGrad: each sequence from its own initial
/// state, one thread a channel.
template <bool Params> void rglruCorrectGrad(const Step &s, Frame &f) {
  enum { Init, X, Wa, Ba, Lambda, Dy };
  const TensorInfo &x = f.tensors[s.in[X]];
  int64_t chunks = correctionChunks(s, x, 0), W = x.local[2];
  StepMemory memory(deviceOf(f));
  cuda::arith::RglruCorrectGradArgs a{
      f.f(s.in[X]),
      f.f(s.in[Wa]),
      f.f(s.in[Ba]),
      f.f(s.in[Lambda]),
      f.f(s.in[Init]),
      f.f(s.in[Dy]),
      x.local[0],
      x.local[1],
      chunks,
      W,
      Params ? nullptr : f.f(s.out[0]),
      Params ? nullptr : f.f(s.out[1]),
      Params ? f.f(s.out[0]) : nullptr,
      Params ? f.f(s.out[1]) : nullptr,
      Params ? f.f(s.out[2]) : nullptr,
      memory.doubles(std::max<int64_t>(1, x.local[1] / chunks * W))};
  launched(cuda::rglru_correct_grad(a, deviceOf(f).stream()), "rglru_correct_grad");
}

// -- vocabulary-parallel cross-entropy's backward -------------------------------------

/// cross_entropy_grad over a vocabulary group of several ranks (of one,
/// backend_grad.cpp's run over the whole vocabulary), as loss_grad.cpp: per
/// token the maximum of this shard, all-gathered over the group; this
/// shard's sum of exp(logit - max) from the combined maximum, all-gathered;
/// then this shard's columns of (softmax - onehot(label)) / (B·S), all in
/// f32 on the wire.
void crossEntropyGrad(const Step &s, Frame &f) {
  if (s.facts.members.size() <= 1)
    return cudaGradRuns().at("cross_entropy_grad")(s, f);
  const std::vector<int64_t> &l = f.local(s.in[0]), &global = f.global(s.in[0]);
  int64_t T = l[0] * l[1], V = l[2];
  NcclWorld *world = worldFor(f, s.facts.members.size());
  const std::vector<std::string> &axes = axesAttr(s, 0);
  int64_t shards = (int64_t)world->members(axes).size();
  CudaDevice &device = deviceOf(f);
  StepMemory memory(device);
  float *max = memory.floats(T), *maxes = memory.floats(shards * T), *gmax = memory.floats(T);
  float *pieces = memory.floats(2 * T), *sums = memory.floats(shards * T);
  const float *logits = f.f(s.in[0]);
  const int32_t *labels = f.ids(s.in[1]);
  launched(cuda::xent_local_max(logits, T, V, max, device.stream()), "xent_local_max");
  world->allGather(f, axes, max, maxes, T);
  // The pieces' first T values are this shard's sums of exponentials; only
  // they travel (the gradient needs no target logit).
  launched(cuda::xent_local_pieces(logits, labels, maxes, shards, T, V, s.facts.vocabOffset,
                                   global[2], gmax, pieces, device.counter(), device.stream()),
           "xent_local_pieces");
  requireNoBadIds(f, s.in[1], global[2], "the vocabulary");
  world->allGather(f, axes, pieces, sums, T);
  launched(cuda::xent_sharded_grad(logits, labels, gmax, sums, shards, T, V, s.facts.vocabOffset,
                                   (double)(global[0] * global[1]), f.f(s.out[0]), device.stream()),
           "xent_sharded_grad");
  world->countSent(s, f);
}

} // namespace

std::map<std::string, CudaRun> exchangeGradRuns() {
  return {
      {"ring_attention_grad", ringAttentionGrad},
      {"halo_add", haloAdd},
      {"scan_state_exchange_grad", stateExchangeGrad},
      {"cross_entropy_grad", crossEntropyGrad},
      {"ssd_correct_grad", ssdCorrectGrad<false>},
      {"ssd_correct_grad_params", ssdCorrectGrad<true>},
      {"rglru_correct_grad", rglruCorrectGrad<false>},
      {"rglru_correct_grad_params", rglruCorrectGrad<true>},
  };
}

} // namespace shardline::rt
