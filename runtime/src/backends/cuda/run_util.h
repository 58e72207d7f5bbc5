//===- run_util.h - what the CUDA runs of several files share ---*- C++ -*-===//
//
// The helpers of the runs of exchange.cpp, exchange_grad.cpp, overlap.cpp
// and backend_grad.cpp: device memory held for one step, a second stream
// with the events that order it against the rank's, the rank's NCCL world,
// device copies and an exchange's axes, attention's tilings, the keys of a
// chunk of local attention over a halo, the halos' exchange both ways, and
// the state exchange's gathered chunk summaries.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_BACKENDS_CUDA_RUN_UTIL_H
#define SHARDLINE_RUNTIME_BACKENDS_CUDA_RUN_UTIL_H

#include "backends/cuda/cuda_device.h"
#include "backends/cuda/entry.h"
#include "backends/cuda/nccl.h"
#include "comm/nccl_kernels.h"
#include "exec/program.h"
#include "kernels/cuda/exchange.h"
#include "kernels/cuda/exchange_arith.h"
#include "kernels/cuda/exchange_grad.h"
#include "kernels/cuda/launch_grad.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace shardline::rt {

/// Device memory for one step, released when the step ends or stops. The
/// release is stream-ordered (CudaDevice::release): it takes effect after
/// the work queued on the rank's stream so far, with no wait for the host.
/// Work on another stream that reads the memory must be finished first: the
/// NCCL calls wait for their stream before they return, and the second
/// stream of ring attention and of a gather run in pieces (SideStream) is
/// synchronised when it is destroyed, before its StepMemory. The host vectors `indices` copies from
/// are staged by the copy itself (pageable memory), so they may go at once.
class StepMemory {
public:
  explicit StepMemory(CudaDevice &device) : device(device) {}
  StepMemory(const StepMemory &) = delete;
  StepMemory &operator=(const StepMemory &) = delete;
  ~StepMemory() {
    for (void *p : held)
      device.release(p);
  }
  float *floats(int64_t count) { return static_cast<float *>(bytes(count * 4)); }
  double *doubles(int64_t count) { return static_cast<double *>(bytes(count * 8)); }
  /// `count` elements of `type`.
  void *elements(int64_t count, DType type) { return bytes(count * dtypeSize(type)); }
  /// A device copy of `values`.
  int64_t *indices(const std::vector<int64_t> &values) {
    auto *out = static_cast<int64_t *>(bytes((int64_t)values.size() * 8));
    if (!values.empty())
      checkCuda(cudaMemcpyAsync(out, values.data(), values.size() * 8, cudaMemcpyHostToDevice,
                                device.stream()),
                "cudaMemcpyAsync of indices");
    return out;
  }

private:
  void *bytes(int64_t n) {
    held.push_back(device.allocate(std::max<int64_t>(n, 8)));
    return held.back();
  }
  CudaDevice &device;
  std::vector<void *> held;
};

/// A second stream of the rank's GPU, for an exchange beside the compute on
/// the rank's stream, the event that orders the exchange after the compute
/// and `arrivals` events that order compute after parts of the exchange; it
/// finishes its work and is destroyed when the step ends or stops.
class SideStream {
public:
  explicit SideStream(int64_t arrivals = 0) {
    checkCuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
              "cudaStreamCreateWithFlags");
    events.assign(arrivals + 1, nullptr);
    for (cudaEvent_t &e : events) {
      cudaError_t status = cudaEventCreateWithFlags(&e, cudaEventDisableTiming);
      if (status != cudaSuccess) {
        e = nullptr;
        release();
        checkCuda(status, "cudaEventCreateWithFlags");
      }
    }
  }
  SideStream(const SideStream &) = delete;
  SideStream &operator=(const SideStream &) = delete;
  ~SideStream() { release(); }
  /// What this stream queues from now on waits for everything queued on
  /// `main` so far.
  void follow(cudaStream_t main) {
    checkCuda(cudaEventRecord(events[0], main), "cudaEventRecord");
    checkCuda(cudaStreamWaitEvent(stream, events[0], 0), "cudaStreamWaitEvent");
  }
  /// Arrival event `arrival` (0 <= arrival < arrivals) marks everything
  /// queued on this stream so far.
  void record(int64_t arrival) {
    checkCuda(cudaEventRecord(events.at(arrival + 1), stream), "cudaEventRecord");
  }
  /// What `main` queues from now on waits for what arrival event `arrival`
  /// marked.
  void await(int64_t arrival, cudaStream_t main) {
    checkCuda(cudaStreamWaitEvent(main, events.at(arrival + 1), 0), "cudaStreamWaitEvent");
  }
  cudaStream_t stream = nullptr;

private:
  void release() {
    cudaStreamSynchronize(stream);
    cudaStreamDestroy(stream);
    for (cudaEvent_t e : events)
      if (e)
        cudaEventDestroy(e);
  }
  std::vector<cudaEvent_t> events;
};

/// The rank's NCCL world; nullptr is only right for an exchange within a
/// group of one.
inline NcclWorld *worldFor(Frame &f, size_t groupSize) {
  NcclWorld *world = deviceOf(f).nccl();
  if (!world && groupSize > 1)
    throw Stop{"the CUDA backend exchanges values between ranks over NCCL only (--comm nccl)",
               false};
  return world;
}

inline const std::vector<std::string> &axesAttr(const Step &s, size_t index) {
  return s.attrs[index].strings;
}

inline void copyDevice(void *dst, const void *src, int64_t bytes, CudaDevice &device) {
  if (bytes > 0)
    checkCuda(cudaMemcpyAsync(dst, src, (size_t)bytes, cudaMemcpyDeviceToDevice, device.stream()),
              "cudaMemcpyAsync");
}

/// The tilings of attention's forward (and dq) kernel and of its dk, dv
/// kernel for these extents; the kernels' refusal as a Stop.
inline void attentionTilings(int64_t B, int64_t HQ, int64_t Sq, int64_t HKV, int64_t Sk, int64_t D,
                             cuda::AttentionTiling &tiling, cuda::AttentionGradTiling &gradTiling) {
  std::string error;
  if (!cuda::attentionTiling(B, HQ, Sq, D, tiling, error) ||
      !cuda::attentionGradTiling(B, HKV, Sk, D, gradTiling, error))
    throw Stop{error, false};
}

/// Attention over q, k, v stored in one type, tiled once for B, HQ, Sq and
/// D and launched as often as a step needs: bf16 or f16 on the tensor cores
/// (attention_tc, head dims up to 256, what keepsAttention keeps), f32 on
/// the f32 kernel. Stops the run where the kernel cannot take the shape.
class AttentionLaunch {
public:
  AttentionLaunch(DType type, int64_t B, int64_t HQ, int64_t Sq, int64_t D)
      : type(type), B(B), HQ(HQ), Sq(Sq), D(D) {
    std::string error;
    if (tensorCores() ? !cuda::attentionTcTiling(B, HQ, Sq, D, tc, error)
                      : !cuda::attentionTiling(B, HQ, Sq, D, f32, error))
      throw Stop{error, false};
  }
  bool tensorCores() const { return type != DType::F32; }
  /// q over Sk keys of HKV heads, out in the inputs' type or, `f32Out`,
  /// in f32 (a ring's partial outputs; f32 inputs always), lse f32 or
  /// nullptr.
  void run(const void *q, const void *k, const void *v, const int64_t *qPos, const int64_t *kPos,
           int64_t Sk, int64_t HKV, bool causal, float scale, int64_t window, void *out,
           bool f32Out, float *lse, cudaStream_t stream) const {
    if (tensorCores()) {
      auto stored = (cuda::arith::Type)type;
      launched(cuda::attention_tc({q, stored}, {k, stored}, {v, stored}, qPos, kPos, B, Sq, Sk, HQ,
                                  HKV, D, causal, scale, window, tc,
                                  {out, f32Out ? cuda::arith::Type::F32 : stored}, lse, stream),
               "attention_tc");
      return;
    }
    launched(cuda::attention(static_cast<const float *>(q), static_cast<const float *>(k),
                             static_cast<const float *>(v), qPos, kPos, B, Sq, Sk, HQ, HKV, D,
                             causal, scale, window, f32, static_cast<float *>(out), lse, stream),
             "attention");
  }

private:
  DType type;
  int64_t B, HQ, Sq, D;
  cuda::AttentionTiling f32;
  cuda::AttentionTcTiling tc;
};

/// Attention's extents over q [B, Sq, HQ*D] and k [B, Sk, HKV*D] (operands
/// 0 and 1) and its attributes heads, causal and scale (the first three:
/// ring attention and its backward), the scale 1/sqrt(D) unless given.
struct AttentionShape {
  int64_t B, Sq, Sk, HQ, HKV, D;
  float scale;
  bool causal;
};
inline AttentionShape attentionShape(const Step &s, Frame &f) {
  enum { kHeads, kCausal, kScale };
  const std::vector<int64_t> &ql = f.local(s.in[0]), &kl = f.local(s.in[1]);
  int64_t D = f.global(s.in[0])[2] / s.attrs[kHeads].i;
  float scale =
      s.attrs[kScale].present ? (float)s.attrs[kScale].f : (float)(1.0 / std::sqrt((double)D));
  return {ql[0], ql[1], kl[1], ql[2] / D, kl[2] / D, D, scale, s.attrs[kCausal].i != 0};
}

/// The keys a chunk of local attention attends over (kernels/cpu,
/// local_attention): the first `skip` of its H halo rows lie before
/// position 0 and are left out, the `kept` others and then its own S rows
/// are gathered into kk and vv ([kept + S, kw] each, in the type k and v
/// are stored in); the chunk's queries sit at its positions, the keys from
/// `kept` tokens before them.
struct WindowKeys {
  int64_t skip, kept;
  std::vector<int64_t> queryPositions, keyPositions;
};

/// Chunk c (of `chunks` of S tokens) of batch entry bi of step s, whose k
/// and v are operands 1 and 2 and, with H > 0, their halos operands 3 and 4
/// (sl.local_attention and its backward alike).
inline WindowKeys gatherWindowKeys(const Step &s, Frame &f, int64_t H, int64_t S, int64_t chunks,
                                   int64_t bi, int64_t c, void *kk, void *vv) {
  enum { K = 1, V, KHalo, VHalo };
  CudaDevice &device = deviceOf(f);
  int64_t kw = f.local(s.in[K])[2], rows = (bi * chunks + c) * S, start = s.facts.positions[c * S];
  const int64_t e = dtypeSize(f.stored(s.in[K]).dtype);
  auto at = [&](int32_t t, int64_t element) {
    return static_cast<const char *>(f.stored(t).data) + element * e;
  };
  char *kDst = static_cast<char *>(kk), *vDst = static_cast<char *>(vv);
  cuda::arith::HaloWindow w = cuda::arith::haloWindow(H, start);
  if (w.kept > 0) {
    int64_t haloRows = ((bi * chunks + c) * H + w.skip) * kw;
    copyDevice(kDst, at(s.in[KHalo], haloRows), w.kept * kw * e, device);
    copyDevice(vDst, at(s.in[VHalo], haloRows), w.kept * kw * e, device);
  }
  copyDevice(kDst + w.kept * kw * e, at(s.in[K], rows * kw), S * kw * e, device);
  copyDevice(vDst + w.kept * kw * e, at(s.in[V], rows * kw), S * kw * e, device);
  WindowKeys out{w.skip, w.kept, std::vector<int64_t>(S), std::vector<int64_t>(w.kept + S)};
  for (int64_t i = 0; i < S; ++i)
    out.queryPositions[i] = start + i;
  for (int64_t i = 0; i < w.kept + S; ++i)
    out.keyPositions[i] = start - w.kept + i;
  return out;
}

/// The state exchange's all-gather (and its dual's): every member's local
/// chunks' `values` (states, or their initial-state cotangents) then
/// `decays`, over the group of the step's axes (attribute 0), members in
/// communicator order; `at` says where each global chunk's lie. `gathered`
/// is nullptr where this rank holds no chunk.
struct GatheredSummaries {
  void *gathered = nullptr; ///< of `type`, the values' and the decays' as stored
  DType type = DType::F32;
  GatheredChunks at;
  int64_t chunks = 0, local = 0, stateSize = 0, decaySize = 0;
  NcclWorld *world = nullptr;
};

inline GatheredSummaries gatherSummaries(const Step &s, Frame &f, StepMemory &memory,
                                         int32_t values, int32_t decays) {
  GatheredSummaries out;
  out.local = f.local(values)[0];
  out.chunks = f.global(values)[0];
  if (out.local == 0)
    return out;
  out.stateSize = f.n(values) / out.local;
  out.decaySize = f.n(decays) / out.local;
  out.world = worldFor(f, s.facts.members.size());
  std::vector<int64_t> members = out.world ? out.world->members(axesAttr(s, 0)) : s.facts.members;
  out.at = gatheredChunks(s.facts, members, out.chunks, out.local, out.stateSize, out.decaySize);
  if (!out.at.error.empty())
    throw Stop{"the state exchange's chunks: " + out.at.error, false};
  CudaDevice &device = deviceOf(f);
  int64_t part = f.n(values) + f.n(decays);
  out.type = f.stored(values).dtype;
  if (f.stored(decays).dtype != out.type)
    throw Stop{"the state exchange gathers states and decays of one type, not " +
                   std::string(dtypeName(out.type)) + " and " + dtypeName(f.stored(decays).dtype),
               false};
  const int64_t e = dtypeSize(out.type);
  char *mine = static_cast<char *>(memory.elements(part, out.type));
  out.gathered = memory.elements(part * (int64_t)members.size(), out.type);
  copyDevice(mine, f.stored(values).data, f.n(values) * e, device);
  copyDevice(mine + f.n(values) * e, f.stored(decays).data, f.n(decays) * e, device);
  if (out.world)
    out.world->allGather(f, axesAttr(s, 0), mine, out.gathered, part, out.type);
  else
    copyDevice(out.gathered, mine, part * e, device);
  return out;
}

/// sl.halo (`back` false: the width rows before each local chunk of x,
/// operand 0, into the halo's slots) or sl.halo_add (`back` true: every
/// slot's row of grad, operand 0, added back onto the token of x, operand 1,
/// it was read from) along comm/nccl_kernels.h's haloRoutes: the result
/// zeroed, the rows this rank holds itself moved, the others' packed by
/// peer (a row-gather kernel) and sent and received in one grouped call,
/// then placed (halo) or added in order, one thread a channel (halo_add:
/// this rank's own rows first, then each peer's by rank). The slots before
/// position 0, and the tokens no halo reads, stay zero.
inline void haloExchange(const Step &s, Frame &f, bool back) {
  enum { kHaloAxes, kHaloWidth };
  const TensorInfo &x = f.tensors[s.in[back ? 1 : 0]];
  int64_t B = x.local[0], rows = x.local[1], C = x.local[2];
  int64_t slots = chunksPerRank(x.layout, 1) * s.attrs[kHaloWidth].i;
  HaloRoutes routes = haloRoutes(s.facts, f.self, B, rows, slots, back);
  NcclWorld *world = worldFor(f, routes.peers.size() + 1);
  CudaDevice &device = deviceOf(f);
  StepMemory memory(device);
  // The halo moves rows as stored (the entry keeps 16-bit ones); halo_add
  // sums in f32.
  const BufferView &source = f.stored(s.in[0]), &result = f.stored(s.out[0]);
  const DType type = source.dtype;
  const cuda::arith::Type stored = (cuda::arith::Type)type;
  const int64_t e = dtypeSize(type);
  auto place = [&](const void *from, const int64_t *fromRows, const std::vector<int64_t> &to) {
    int64_t n = (int64_t)to.size();
    if (back)
      launched(cuda::add_rows_in_order(static_cast<const float *>(from), fromRows,
                                       memory.indices(to), n, C, static_cast<float *>(result.data),
                                       device.stream()),
               "add_rows_in_order");
    else
      launched(cuda::copy_rows({from, stored}, fromRows, memory.indices(to), n, C,
                               {result.data, stored}, device.stream()),
               "copy_rows");
  };
  checkCuda(cudaMemsetAsync(result.data, 0, (size_t)(f.n(s.out[0]) * e), device.stream()),
            "cudaMemsetAsync");
  place(source.data, memory.indices(routes.selfFrom), routes.selfTo);
  std::vector<NcclWorld::PeerTransfer> transfers;
  std::vector<std::pair<void *, const HaloPeer *>> arrivals;
  for (const HaloPeer &p : routes.peers) {
    int64_t sent = (int64_t)p.sendRows.size(), received = (int64_t)p.recvRows.size();
    void *packed = memory.elements(sent * C, type), *landing = memory.elements(received * C, type);
    launched(cuda::copy_rows({source.data, stored}, memory.indices(p.sendRows), nullptr, sent, C,
                             {packed, stored}, device.stream()),
             "copy_rows");
    transfers.push_back({p.rank, packed, sent * C, landing, received * C});
    arrivals.push_back({landing, &p});
  }
  if (!transfers.empty())
    world->sendRecv(f, axesAttr(s, kHaloAxes), transfers, nullptr, type);
  for (const auto &[landing, p] : arrivals)
    place(landing, nullptr, p->recvRows);
  if (world)
    world->countSent(s, f);
}

} // namespace shardline::rt

#endif
