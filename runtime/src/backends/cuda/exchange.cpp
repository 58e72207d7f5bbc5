//===- exchange.cpp - CUDA steps that exchange values over NCCL ------------===//
//
// Each run follows its CPU kernel (kernels/cpu/attention.cpp, conv.cpp,
// local_attention.cpp, scan.cpp, mamba.cpp, recurrent.cpp, loss.cpp): the
// same values cross the same groups, each on the rank's stream, and the
// step counts the bytes its NCCL lowering states, the report's.
//
//===----------------------------------------------------------------------===//

#include "backends/cuda/exchange.h"

#include "backends/cuda/cuda_device.h"
#include "backends/cuda/entry.h"
#include "backends/cuda/nccl.h"
#include "backends/cuda/run_util.h"
#include "comm/nccl_kernels.h"
#include "kernels/cuda/exchange.h"
#include "kernels/cuda/kernels.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>

namespace shardline::rt {

namespace {

// -- ring attention -----------------------------------------------------------

enum { kRingAxes = 3 };

/// Causal attention of q over each member's K, V blocks as the ring brings
/// them (comm/nccl_kernels.h, ringSteps: member i's blocks at step i), each
/// block's partial output merged into the result by the log-sum-exps, own
/// block first, as the CPU kernel merges the blocks it all-gathers. The K, V
/// exchange of step i runs on a second stream while the rank's stream
/// computes on the blocks of step i - 1: both only read the blocks held, and
/// the buffer the exchange receives into is the one whose attention was
/// queued before the exchange was (the event orders them). Where the entry
/// keeps 16-bit q, k, v and output (keepsAttention), the blocks cross as
/// stored, each block's attention runs on the tensor cores with f32 partial
/// outputs, the merges stay f32 and the result is rounded once at the end;
/// otherwise everything is f32.
void ringAttention(const Step &s, Frame &f) {
  int32_t q = s.in[0], k = s.in[1], v = s.in[2], out = s.out[0];
  AttentionShape shape = attentionShape(s, f);
  int64_t B = shape.B, Sq = shape.Sq, Sk = shape.Sk, HQ = shape.HQ, HKV = shape.HKV, D = shape.D;
  float scale = shape.scale;
  bool causal = shape.causal;
  const DType type = f.stored(q).dtype;
  const AttentionLaunch attention(type, B, HQ, Sq, D);
  const bool tensorCores = attention.tensorCores();
  std::vector<RingStep> steps = ringSteps(s.facts);
  NcclWorld *world = worldFor(f, s.facts.members.size());
  CudaDevice &device = deviceOf(f);
  StepMemory memory(device);
  const int64_t element = dtypeSize(type), nk = f.n(k), kv = nk + f.n(v), rows = B * HQ * Sq;
  char *held = static_cast<char *>(memory.elements(kv, type)),
       *next = static_cast<char *>(memory.elements(kv, type));
  float *result = tensorCores ? memory.floats(f.n(out)) : f.f(out);
  float *part = memory.floats(f.n(out)), *lse = memory.floats(rows), *partLse = memory.floats(rows);
  copyDevice(held, f.stored(k).data, nk * element, device);
  copyDevice(held + nk * element, f.stored(v).data, f.n(v) * element, device);
  const int64_t *queryPositions = device.positions(s.facts.positions);
  // Member `member`'s blocks into the result: the first directly, the
  // others through the merge.
  auto attend = [&](const char *block, int64_t member) {
    bool first = member == 0;
    attention.run(f.stored(q).data, block, block + nk * element, queryPositions,
                  device.positions(s.facts.memberPositions[member]), Sk, HKV, causal, scale, 0,
                  first ? result : part, true, first ? lse : partLse, device.stream());
    if (!first)
      launched(cuda::attention_merge(result, lse, part, partLse, B, Sq, HQ, D, result, lse,
                                     device.stream()),
               "attention_merge");
  };
  std::unique_ptr<SideStream> side = steps.empty() ? nullptr : std::make_unique<SideStream>();
  int64_t member = 0;
  for (const RingStep &r : steps) {
    side->follow(device.stream());
    attend(held, member);
    std::vector<NcclWorld::PeerTransfer> transfers;
    if (r.sendTo == r.recvFrom) {
      transfers.push_back({r.sendTo, held, kv, next, kv});
    } else {
      transfers.push_back({r.sendTo, held, kv, nullptr, 0});
      transfers.push_back({r.recvFrom, nullptr, 0, next, kv});
    }
    world->sendRecv(f, axesAttr(s, kRingAxes), transfers, side->stream, type);
    std::swap(held, next);
    member = r.block;
  }
  attend(held, member);
  if (tensorCores)
    launched(cuda::convert(result, cuda::arith::Type::F32, f.stored(out).data,
                           (cuda::arith::Type)type, f.n(out), device.stream()),
             "convert");
  if (world)
    world->countSent(s, f);
}

// -- halos ---------------------------------------------------------------------

/// The width rows before each local chunk, from whoever holds them
/// (comm/nccl_kernels.h, haloRoutes): this rank's own rows copied, the
/// others' packed by peer, sent and received in one grouped call, and
/// placed; the slots before position 0 are zero.
void halo(const Step &s, Frame &f) { haloExchange(s, f, false); }

// -- local attention over a halo ---------------------------------------------------

/// Each local chunk of each batch entry attends over its window - 1 halo
/// keys (those at positions >= 0) and its own (kernels/cpu,
/// local_attention): the keys and values gathered on the device (each
/// chunk's after the previous chunk's attention has read them: one stream
/// orders them), the chunk's query and key positions uploaded, one
/// attention launch per chunk: on the tensor cores where the entry keeps
/// 16-bit q, k, v, halos and output (keepsLocalAttention), else in f32.
void localAttentionOverHalo(const Step &s, Frame &f) {
  enum { Q, K, V, KHalo, VHalo };
  enum { kLocalHeads, kWindow };
  const TensorInfo &qt = f.tensors[s.in[Q]];
  bool hasHalo = s.has(KHalo);
  int64_t window = s.attrs[kWindow].i, chunks = chunksPerRank(qt.layout, 1);
  int64_t S = qt.local[1] / chunks, B = qt.local[0];
  int64_t D = f.global(s.in[Q])[2] / s.attrs[kLocalHeads].i, qw = qt.local[2],
          kw = f.local(s.in[K])[2], H = hasHalo ? window - 1 : 0;
  int64_t HQ = qw / D, HKV = kw / D;
  const DType type = f.stored(s.in[Q]).dtype;
  const int64_t e = dtypeSize(type);
  const AttentionLaunch attention(type, 1, HQ, S, D);
  CudaDevice &device = deviceOf(f);
  StepMemory memory(device);
  float scale = (float)(1.0 / std::sqrt((double)D));
  const int64_t perChunk = (H + S) * kw;
  char *kk = static_cast<char *>(memory.elements(perChunk, type)),
       *vv = static_cast<char *>(memory.elements(perChunk, type));
  const char *q = static_cast<const char *>(f.stored(s.in[Q]).data);
  char *out = static_cast<char *>(f.stored(s.out[0]).data);
  for (int64_t bi = 0; bi < B; ++bi)
    for (int64_t c = 0; c < chunks; ++c) {
      int64_t rows = (bi * chunks + c) * S;
      WindowKeys keys = gatherWindowKeys(s, f, H, S, chunks, bi, c, kk, vv);
      attention.run(q + rows * qw * e, kk, vv, memory.indices(keys.queryPositions),
                    memory.indices(keys.keyPositions), keys.kept + S, HKV, true, scale, window,
                    out + rows * qw * e, false, nullptr, device.stream());
    }
}

// -- the scans' state exchange and corrections ---------------------------------

/// Every member's chunk summaries (states then decays) all-gathered over the
/// group, each of this rank's chunks' initial state folded from the chunks
/// before it (comm/nccl_kernels.h, gatheredChunks; kernels/cpu,
/// scan_combine_states); the summaries cross as stored (the entry keeps
/// 16-bit ones) and the fold is in double, the initial states rounded once.
void stateExchange(const Step &s, Frame &f) {
  CudaDevice &device = deviceOf(f);
  StepMemory memory(device);
  GatheredSummaries g = gatherSummaries(s, f, memory, s.in[0], s.in[1]);
  if (!g.gathered)
    return;
  launched(cuda::chunk_initial_states({g.gathered, (cuda::arith::Type)g.type},
                                      memory.indices(g.at.stateAt), memory.indices(g.at.decayAt),
                                      memory.indices(s.facts.positions), g.local, g.stateSize,
                                      g.stateSize / g.decaySize, dst(f, s.out[0]), device.stream()),
           "chunk_initial_states");
  if (g.world)
    g.world->countSent(s, f);
}

cuda::Sequences sequencesOf(const TensorInfo &x, bool chunked) {
  return {x.local[0], x.local[1], chunked ? chunksPerRank(x.layout, 1) : 1};
}

/// ssd_correct (y0, init, C, dt, a_log, dt_bias -> y), on the tensors as
/// stored (backend.cpp, keepsSsdCorrect).
void ssdCorrect(const Step &s, Frame &f) {
  enum { Y0, Init, Cm, Dt, ALog, DtBias };
  enum { kSsdHeads, kSsdGroups, kSsdChunkAxes };
  const TensorInfo &y0 = f.tensors[s.in[Y0]];
  const std::vector<int64_t> &cl = f.local(s.in[Cm]);
  int64_t nh = f.local(s.in[Dt])[2], p = y0.shape[2] / s.attrs[kSsdHeads].i;
  int64_t g = s.attrs[kSsdGroups].i * cl[2] / f.global(s.in[Cm])[2], n = cl[2] / g;
  cuda::Sequences seq = sequencesOf(y0, !s.attrs[kSsdChunkAxes].strings.empty());
  launched(cuda::ssd_correct(src(f, s.in[Y0]), src(f, s.in[Init]), src(f, s.in[Cm]),
                             src(f, s.in[Dt]), src(f, s.in[ALog]), src(f, s.in[DtBias]), seq, nh, p,
                             g, n, dst(f, s.out[0]), deviceOf(f).stream()),
           "ssd_correct");
}

/// rglru_correct (y0, init, x, wa, ba, lambda -> y), on the tensors as
/// stored (backend.cpp, keepsRglruCorrect).
void rglruCorrect(const Step &s, Frame &f) {
  enum { Y0, Init, X, Wa, Ba, Lambda };
  const TensorInfo &x = f.tensors[s.in[X]];
  cuda::Sequences seq = sequencesOf(x, !s.attrs[0].strings.empty());
  launched(cuda::rglru_correct(src(f, s.in[Y0]), src(f, s.in[Init]), src(f, s.in[X]),
                               src(f, s.in[Wa]), src(f, s.in[Ba]), src(f, s.in[Lambda]), seq,
                               x.local[2], dst(f, s.out[0]), deviceOf(f).stream()),
           "rglru_correct");
}

// -- vocabulary-parallel cross-entropy -------------------------------------------

/// The runs of the backend's own table that the split runs fall back on.
std::map<std::string, CudaRun> &baseRuns() {
  static std::map<std::string, CudaRun> runs;
  return runs;
}

/// Over a vocabulary group of several ranks (of one, the backend's own run
/// over the whole vocabulary): per token the maximum of this shard,
/// all-gathered over the group; then each shard's sum of exp(logit - max) and target logit,
/// all-gathered; the loss from every shard's pieces (kernels/cpu/loss.cpp),
/// all in f32 on the wire. The logits are read as stored and the loss
/// written in its type (the entry keeps 16-bit tensors).
void crossEntropy(const Step &s, Frame &f) {
  const std::vector<int64_t> &l = f.local(s.in[0]), &global = f.global(s.in[0]);
  if (s.facts.members.size() <= 1)
    return baseRuns().at("cross_entropy")(s, f);
  int64_t T = l[0] * l[1], V = l[2];
  NcclWorld *world = worldFor(f, s.facts.members.size());
  const std::vector<std::string> &axes = axesAttr(s, 0);
  int64_t shards = world ? (int64_t)world->members(axes).size() : 1;
  CudaDevice &device = deviceOf(f);
  StepMemory memory(device);
  float *max = memory.floats(T), *maxes = memory.floats(shards * T), *gmax = memory.floats(T);
  float *pieces = memory.floats(2 * T), *allPieces = memory.floats(shards * 2 * T);
  double *terms = memory.doubles(T);
  cuda::Src logits = src(f, s.in[0]);
  launched(cuda::xent_local_max(logits, T, V, max, device.stream()), "xent_local_max");
  if (world)
    world->allGather(f, axes, max, maxes, T);
  else
    copyDevice(maxes, max, T * 4, device);
  int32_t *bad = device.counter();
  launched(cuda::xent_local_pieces(logits, f.ids(s.in[1]), maxes, shards, T, V, s.facts.vocabOffset,
                                   global[2], gmax, pieces, bad, device.stream()),
           "xent_local_pieces");
  requireNoBadIds(f, s.in[1], global[2], "the vocabulary");
  if (world)
    world->allGather(f, axes, pieces, allPieces, 2 * T);
  else
    copyDevice(allPieces, pieces, 2 * T * 4, device);
  launched(cuda::xent_sharded_loss(allPieces, gmax, shards, T, (double)(global[0] * global[1]),
                                   terms, dst(f, s.out[0]), device.stream()),
           "xent_sharded_loss");
  if (world)
    world->countSent(s, f);
}

/// Local attention over a halo or sequence chunks here, whole sequences by
/// the backend's own run.
void localAttention(const Step &s, Frame &f) {
  if (!s.has(3) && chunksPerRank(f.tensors[s.in[0]].layout, 1) == 1)
    return baseRuns().at("local_attention")(s, f);
  localAttentionOverHalo(s, f);
}

} // namespace

std::map<std::string, CudaRun> exchangeRuns(const std::map<std::string, CudaRun> &base) {
  static std::once_flag kept;
  std::call_once(kept, [&] {
    for (const char *kind : {"cross_entropy", "local_attention"})
      baseRuns()[kind] = base.at(kind);
  });
  return {
      {"ring_attention", ringAttention},   {"halo", halo},
      {"local_attention", localAttention}, {"scan_state_exchange", stateExchange},
      {"ssd_correct", ssdCorrect},         {"rglru_correct", rglruCorrect},
      {"cross_entropy", crossEntropy},
  };
}

} // namespace shardline::rt
