//===- nccl.cpp - a rank's NCCL communicators on its GPU --------------------===//

#include "backends/cuda/nccl.h"

#include "backends/cuda/cuda_device.h"
#include "backends/cuda/run_util.h"
#include "comm/movement.h"
#include "exec/collectives.h"
#include "kernels/cuda/exchange.h"

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

namespace shardline::rt {

namespace {

/// ncclCommSplit came with NCCL 2.18.
constexpr int kOldestNccl = 21800;

/// "[tp] (ranks 0, 1)": a communicator in messages.
std::string groupText(const NcclCommunicator &c) {
  std::string ranks;
  for (int64_t r : c.members)
    ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
  return formatAxes(c.axes) + " (ranks " + ranks + ")";
}

/// When a wait that starts now gives up: `seconds` from now, capped so
/// that any positive timeout is a time point.
std::chrono::steady_clock::time_point deadlineIn(double seconds) {
  double capped = std::min(seconds, 1e9);
  return std::chrono::steady_clock::now() +
         std::chrono::duration_cast<std::chrono::steady_clock::duration>(
             std::chrono::duration<double>(capped));
}

/// "5 s", "0.5 s".
std::string secondsText(double seconds) {
  char text[32];
  std::snprintf(text, sizeof text, "%g s", seconds);
  return text;
}

/// NCCL's own sums run on f32 values only: a 16-bit sum runs in group order
/// (sumsInOrder), so a 16-bit value here is a bug, stopped with its name.
void requireF32(const BufferView &v, const char *call) {
  if (v.dtype != DType::F32)
    throw Stop{std::string(call) + " sums f32 values, not " + dtypeName(v.dtype), false};
}

ncclDataType_t typeOf(DType dtype) {
  switch (dtype) {
  case DType::I32:
    return ncclInt32;
  case DType::BF16:
    return ncclBfloat16;
  case DType::F16:
    return ncclFloat16;
  default:
    return ncclFloat32;
  }
}

/// Waits for a communicator made without blocking (ncclCommInitRankConfig,
/// ncclCommSplit) to be ready: "" or why not.
std::string ready(const NcclApi &api, ncclComm_t comm, const Frame &frame,
                  std::chrono::steady_clock::time_point deadline, double timeoutSeconds) {
  for (;;) {
    ncclResult_t state = ncclInProgress;
    ncclResult_t result = api.ncclCommGetAsyncError(comm, &state);
    if (result != ncclSuccess)
      state = result;
    if (state == ncclSuccess)
      return "";
    if (state != ncclInProgress)
      return api.ncclGetErrorString(state);
    if (frame.collectives->aborted())
      return "another rank failed";
    if (std::chrono::steady_clock::now() > deadline)
      return "not every rank joined within " + secondsText(timeoutSeconds);
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

} // namespace

void copyOnDevice(const std::vector<StridedCopy> &copies, const void *src, void *dst,
                  cudaStream_t stream, int64_t elementBytes) {
  int64_t e = elementBytes;
  for (const StridedCopy &c : copies)
    checkCuda(cudaMemcpy2DAsync(
                  static_cast<char *>(dst) + c.dstOffset * e, (size_t)(c.dstPitch * e),
                  static_cast<const char *>(src) + c.srcOffset * e, (size_t)(c.srcPitch * e),
                  (size_t)(c.width * e), (size_t)c.height, cudaMemcpyDeviceToDevice, stream),
              "cudaMemcpy2DAsync");
}

bool gatherOverlapEnabled(std::string &error) {
  bool overlap = false;
  cuda::switchSetting("SHARDLINE_NCCL_OVERLAP", std::getenv("SHARDLINE_NCCL_OVERLAP"), true,
                      "runs a gather or a reduce-scatter paired with its linear in pieces", "whole",
                      overlap, error);
  return overlap;
}

const NcclApi *loadNccl(std::string &error) {
  static std::mutex mutex;
  static NcclApi api;
  static bool loaded = false;
  std::lock_guard<std::mutex> lock(mutex);
  if (loaded)
    return &api;
  void *library = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
  if (!library) {
    error = std::string("NCCL is not available (") + dlerror() + ")";
    return nullptr;
  }
  NcclApi found;
  std::string missing;
#define SHARDLINE_NCCL_LOAD(name, args)                                                            \
  found.name = reinterpret_cast<decltype(found.name)>(dlsym(library, #name));                      \
  if (!found.name)                                                                                 \
    missing += std::string(missing.empty() ? "" : ", ") + #name;
  SHARDLINE_NCCL_FUNCTIONS(SHARDLINE_NCCL_LOAD)
  SHARDLINE_NCCL_LOAD(ncclGetErrorString, ())
#undef SHARDLINE_NCCL_LOAD
  int version = 0;
  if (missing.empty() && found.ncclGetVersion(&version) != ncclSuccess)
    version = 0;
  if (!missing.empty() || version < kOldestNccl) {
    error = missing.empty() ? "NCCL " + std::to_string(version) + " is older than " +
                                  std::to_string(kOldestNccl) + ", the first with ncclCommSplit"
                            : "libnccl.so.2 lacks " + missing;
    dlclose(library);
    return nullptr;
  }
  api = found;
  loaded = true;
  return &api;
}

NcclWorld::NcclWorld(const NcclApi &api, CudaDevice &device, const NcclLowering &lowering,
                     const Mesh &mesh, int64_t self, double timeoutSeconds)
    : api(api), device(device), lowering(lowering), mesh(mesh), self(self),
      timeoutSeconds(timeoutSeconds) {
  for (const NcclStep &st : this->lowering.steps)
    byStep[st.step] = &st;
  for (const GatherOverlap &o : this->lowering.overlaps)
    overlaps[o.gatherStep] = overlaps[o.linearStep] = &o;
  for (const ScatterOverlap &o : this->lowering.scatters)
    scatters[o.scatterStep] = scatters[o.linearStep] = &o;
}

std::unique_ptr<NcclWorld> NcclWorld::connect(Frame &frame, CudaDevice &device,
                                              const NcclLowering &lowering, double timeoutSeconds,
                                              std::string &error) {
  const NcclApi *api = loadNccl(error);
  if (!api)
    return nullptr;
  NcclLowering lowered = lowering;
  bool overlap = gatherOverlapEnabled(error);
  if (!error.empty())
    return nullptr;
  if (!overlap) {
    lowered.overlaps.clear();
    lowered.scatters.clear();
  }
  int64_t ranks = frame.mesh.numRanks();
  int devices = 0;
  checkCuda(cudaGetDeviceCount(&devices), "cudaGetDeviceCount");
  // NCCL refuses two ranks of one communicator on one GPU.
  if (frame.collectives->ranksAreThreads() && ranks > devices) {
    error = "NCCL runs one rank per GPU: " + std::to_string(ranks) + " ranks need " +
            std::to_string(ranks) + " GPUs, this machine has " + std::to_string(devices);
    return nullptr;
  }
  // Rank 0's id reaches every rank through the host comm, eight bytes at a
  // time.
  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  ncclResult_t result = frame.self == 0 ? api->ncclGetUniqueId(&id) : ncclSuccess;
  uint64_t failedHere = result == ncclSuccess ? 0 : 1;
  for (uint64_t word : frame.collectives->gatherWord(failedHere))
    if (word) {
      error = "rank 0 could not make NCCL's unique id";
      return nullptr;
    }
  // A rank that gathers whole while its group gathers in pieces would wait
  // forever: every rank runs the same pairs.
  for (uint64_t word : frame.collectives->gatherWord(overlap ? 1 : 0))
    if (word != (overlap ? 1u : 0u)) {
      error = "SHARDLINE_NCCL_OVERLAP differs between the ranks (set it alike on every rank)";
      return nullptr;
    }
  static_assert(sizeof(ncclUniqueId) % 8 == 0, "the id travels in 64-bit words");
  for (size_t offset = 0; offset < sizeof id; offset += 8) {
    uint64_t word = 0;
    std::memcpy(&word, reinterpret_cast<const char *>(&id) + offset, 8);
    word = frame.collectives->gatherWord(word)[0];
    std::memcpy(reinterpret_cast<char *>(&id) + offset, &word, 8);
  }
  std::unique_ptr<NcclWorld> world(
      new NcclWorld(*api, device, lowered, frame.mesh, frame.self, timeoutSeconds));
  // Non-blocking communicators, so that every wait, the joins included, can
  // give up at the deadline.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  auto deadline = deadlineIn(timeoutSeconds);
  result = api->ncclCommInitRankConfig(&world->world, (int)ranks, id, (int)frame.self, &config);
  std::string why = result != ncclSuccess && result != ncclInProgress
                        ? api->ncclGetErrorString(result)
                        : ready(*api, world->world, frame, deadline, timeoutSeconds);
  if (!why.empty()) {
    world->failed = true;
    error = "ncclCommInitRankConfig of the world of " + std::to_string(ranks) + " ranks: " + why;
    return nullptr;
  }
  for (const NcclCommunicator &c : lowering.communicators) {
    ncclComm_t comm = nullptr;
    result = api->ncclCommSplit(world->world, (int)c.color[frame.self], (int)c.key[frame.self],
                                &comm, &config);
    why = result != ncclSuccess && result != ncclInProgress
              ? api->ncclGetErrorString(result)
              : ready(*api, comm, frame, deadline, timeoutSeconds);
    if (comm)
      world->comms.push_back(comm);
    if (!why.empty()) {
      world->failed = true;
      error = "ncclCommSplit of the group " + groupText(c) + ": " + why;
      return nullptr;
    }
  }
  return world;
}

NcclWorld::~NcclWorld() {
  for (ncclComm_t comm : comms)
    failed ? api.ncclCommAbort(comm) : api.ncclCommDestroy(comm);
  if (world)
    failed ? api.ncclCommAbort(world) : api.ncclCommDestroy(world);
  for (void *p : held)
    device.release(p);
}

void NcclWorld::abortAll() {
  if (failed)
    return;
  failed = true;
  for (ncclComm_t comm : comms)
    api.ncclCommAbort(comm);
  if (world)
    api.ncclCommAbort(world);
  comms.clear();
  world = nullptr;
}

void NcclWorld::fail(const char *call, int64_t communicator, const std::string &why) {
  std::string group = groupText(lowering.communicators[communicator]);
  abortAll();
  throw Stop{std::string("NCCL: ") + call + " on the group " + group + ": " + why +
                 " (every communicator of this rank aborted)",
             false};
}

void NcclWorld::check(ncclResult_t result, const char *call, int64_t communicator) {
  if (result != ncclSuccess && result != ncclInProgress)
    fail(call, communicator, api.ncclGetErrorString(result));
}

void NcclWorld::wait(Frame &f, const char *call, int64_t communicator, cudaStream_t stream,
                     bool issuedOnly) {
  if (failed)
    throw Stop{"", true};
  auto deadline = deadlineIn(timeoutSeconds);
  ncclComm_t comm = comms[communicator];
  for (;;) {
    ncclResult_t state = ncclSuccess;
    ncclResult_t result = api.ncclCommGetAsyncError(comm, &state);
    if (result != ncclSuccess)
      state = result;
    if (state != ncclSuccess && state != ncclInProgress)
      fail(call, communicator, api.ncclGetErrorString(state));
    cudaError_t done =
        issuedOnly ? cudaSuccess : cudaStreamQuery(stream ? stream : device.stream());
    if (done == cudaSuccess && state == ncclSuccess)
      return;
    if (done != cudaSuccess && done != cudaErrorNotReady)
      fail(call, communicator, std::string("CUDA: ") + cudaGetErrorString(done));
    if (f.collectives->aborted()) {
      // Another rank's error is the run's; this rank only stops.
      abortAll();
      throw Stop{"", true};
    }
    if (std::chrono::steady_clock::now() > deadline)
      fail(call, communicator,
           "did not finish within " + secondsText(timeoutSeconds) +
               ": a rank of the group stalled, died or runs another program");
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
}

int64_t NcclWorld::communicatorOf(const std::vector<std::string> &axes) {
  auto it = byAxes.find(axes);
  if (it == byAxes.end())
    it = byAxes.emplace(axes, findCommunicator(lowering, mesh, axes)).first;
  return it->second;
}

void NcclWorld::transition(const Step &s, Frame &f) {
  const TensorInfo &x = f.tensors[s.in[0]], &y = f.tensors[s.out[0]];
  // 16-bit where the entry keeps them (backend.cpp), else f32 copies; i32
  // as they are.
  const BufferView &src = f.moved(s.in[0]), &dst = f.moved(s.out[0]);
  auto lowered = byStep.find(s.index);
  const NcclStep *st = lowered == byStep.end() ? nullptr : lowered->second;
  Layout mid;
  const GatherOverlap *pair = overlapAt(s.index);
  const ScatterOverlap *scatter = scatterAt(s.index);
  if (scatter && scatter->scatterStep == s.index) {
    // The linear step sent and received the pieces (backends/cuda/
    // overlap.cpp): their sum in group order, rounded once.
    char *landing = scatterMemory(*scatter, dtypeSize(dst.dtype)).first;
    cuda::arith::Type type = (cuda::arith::Type)dst.dtype;
    checkCuda(cuda::sum_pieces({landing, type}, scatter->members, scatter->pieceCount,
                               {dst.data, type}, device.stream()),
              "the reduce-scatter's sums (sum_pieces)");
  } else if (pair && pair->gatherStep == s.index) {
    // This rank's piece in place; the linear that reads the gathered value
    // next brings the others (backends/cuda/overlap.h).
    const GatherPiece &own = pair->pieces.front();
    copyOnDevice({own.placement}, src.data, dst.data, device.stream(), dtypeSize(src.dtype));
  } else if (st && st->calls.size() == 1 && st->calls[0].op == NcclOp::AllReduce) {
    // Both halves of the all-reduce at once (comm/nccl_plan.h): f32 values
    // (a 16-bit all-reduce runs as its two halves, summed in order).
    requireF32(src, "ncclAllReduce");
    int64_t c = st->calls[0].communicator;
    check(api.ncclAllReduce(src.data, dst.data, (size_t)src.count, ncclFloat32, ncclSum, comms[c],
                            device.stream()),
          "ncclAllReduce", c);
    wait(f, "ncclAllReduce", c);
  } else if (s.kind == "all_reduce" && !x.layout.partial.empty() &&
             splitAllReduce(mesh, x.shape, x.layout, y.layout, mid)) {
    int64_t count = numElements(localShape(mid, mesh, x.shape));
    StepMemory memory(device);
    BufferView half(memory.elements(count, src.dtype), count, src.dtype);
    move(s, f, 0, x.shape, x.layout, mid, src, half);
    move(s, f, 1, x.shape, mid, y.layout, half, dst);
  } else {
    move(s, f, 0, y.shape, x.layout, y.layout, src, dst);
  }
  if (st) {
    f.collectives->count(st->bytesSent);
    countCalls(s, f);
  }
}

void NcclWorld::move(const Step &s, Frame &f, int half, const std::vector<int64_t> &shape,
                     const Layout &from, const Layout &to, const BufferView &src,
                     const BufferView &dst) {
  MoveShape m = planMoveShape(mesh, shape, from, to);
  if (!m.error.empty())
    throw Stop{m.error, false};
  cudaStream_t stream = device.stream();
  if (m.kind == MovementKind::Identity) {
    device.convert(src, dst);
    return;
  }
  const int64_t e = dtypeSize(src.dtype);
  if (m.kind == MovementKind::Slice) {
    copyOnDevice({sliceCopy(m, ringOf(mesh, self, m.axes).position)}, src.data, dst.data, stream,
                 e);
    return;
  }
  int64_t c = communicatorOf(m.axes);
  if (m.kind == MovementKind::General) {
    // Copied on the device unless it sums; a sum is placed on the host in
    // f32 (integers never sum). The values cross in their own type.
    if (transferOnDevice(s, f, half, c, shape, from, to, src, dst))
      return;
    return transfer(s, f, half, c, shape, from, to, src, dst);
  }
  if (c < 0) {
    // A collective of one member keeps what it has.
    device.convert(src, dst);
    return;
  }
  int64_t g = (int64_t)lowering.communicators[c].members.size();
  ncclDataType_t type = typeOf(src.dtype);
  // A 16-bit sum: the members' pieces cross as stored and are summed here
  // in group order (comm/nccl_plan.h, sumsInOrder).
  const bool inOrder = m.kind == MovementKind::ReduceScatter && sumsInOrder(src.dtype);
  // The source cut into the members' pieces and the landing of what
  // arrives (every member's piece, for a sum in order), in scratch when
  // they are not in order already.
  bool packs = m.outer > 1, joins = m.joinOuter > 1 || inOrder;
  int64_t landed = inOrder ? m.inCount : m.outCount;
  char *room = static_cast<char *>(
      device.scratch(std::max<int64_t>(1, ((packs ? m.inCount : 0) + (joins ? landed : 0)) * e)));
  void *packed = src.data, *landing = dst.data;
  if (packs) {
    packed = room;
    copyOnDevice(splitCopies(g, m.outer, m.splitRun), src.data, packed, stream, e);
  }
  if (joins)
    landing = room + (packs ? m.inCount * e : 0);
  // Piece j of the packed source to member j, member j's into piece j of
  // the landing; this rank's own copied.
  auto exchangePieces = [&](int64_t part) {
    int64_t me = ringOf(mesh, self, m.axes).position;
    checkCuda(cudaMemcpyAsync(static_cast<char *>(landing) + me * part * e,
                              static_cast<const char *>(packed) + me * part * e, (size_t)(part * e),
                              cudaMemcpyDeviceToDevice, stream),
              "cudaMemcpyAsync of this rank's piece");
    check(api.ncclGroupStart(), "ncclGroupStart", c);
    for (int64_t j = 0; j < g; ++j) {
      if (j == me)
        continue;
      check(api.ncclSend(static_cast<const char *>(packed) + j * part * e, (size_t)part, type,
                         (int)j, comms[c], stream),
            "ncclSend", c);
      check(api.ncclRecv(static_cast<char *>(landing) + j * part * e, (size_t)part, type, (int)j,
                         comms[c], stream),
            "ncclRecv", c);
    }
    check(api.ncclGroupEnd(), "ncclGroupEnd", c);
  };
  const char *call = "";
  switch (m.kind) {
  case MovementKind::AllGather:
    call = "ncclAllGather";
    check(api.ncclAllGather(src.data, landing, (size_t)m.inCount, type, comms[c], stream), call, c);
    break;
  case MovementKind::ReduceScatter:
    if (inOrder) {
      call = "ncclSend/ncclRecv";
      exchangePieces(m.outCount);
      break;
    }
    call = "ncclReduceScatter";
    requireF32(src, call);
    check(api.ncclReduceScatter(packed, dst.data, (size_t)m.outCount, ncclFloat32, ncclSum,
                                comms[c], stream),
          call, c);
    break;
  case MovementKind::AllToAll:
    call = "ncclSend/ncclRecv";
    exchangePieces(m.inCount / g);
    break;
  default:
    throw Stop{std::string("no NCCL call moves a ") + movementName(m.kind), false};
  }
  // Waited for before anything reads what arrived: a non-blocking
  // communicator may queue its work on the stream after ncclGroupEnd returns.
  wait(f, call, c);
  if (inOrder)
    checkCuda(cuda::sum_pieces({landing, (cuda::arith::Type)src.dtype}, g, m.outCount,
                               {dst.data, (cuda::arith::Type)dst.dtype}, stream),
              "the reduce-scatter's sums (sum_pieces)");
  else if (joins)
    copyOnDevice(joinCopies(g, m.joinOuter, m.joinRun), landing, dst.data, stream, e);
}

bool NcclWorld::transferOnDevice(const Step &s, Frame &f, int half, int64_t c,
                                 const std::vector<int64_t> &shape, const Layout &from,
                                 const Layout &to, const BufferView &src, const BufferView &dst) {
  auto key = std::make_pair(s.index, half);
  auto found = deviceTransfers.find(key);
  if (found == deviceTransfers.end()) {
    const std::vector<int64_t> one = {self},
                               &members = c < 0 ? one : lowering.communicators[c].members;
    DeviceTransfer t;
    t.runs = planTransferRuns(mesh, shape, from, to, self, members);
    if (!t.runs.error.empty())
      throw Stop{t.runs.error, false};
    if (!t.runs.sums) {
      // Both lists in one buffer the world keeps: pack, then place.
      static_assert(sizeof(ElementRun) == 3 * sizeof(int64_t), "runs are three int64");
      std::vector<ElementRun> both = t.runs.pack;
      both.insert(both.end(), t.runs.place.begin(), t.runs.place.end());
      int64_t bytes = std::max<int64_t>(1, (int64_t)both.size()) * (int64_t)sizeof(ElementRun);
      held.push_back(device.allocate(bytes));
      auto *runs = static_cast<int64_t *>(held.back());
      checkCuda(
          cudaMemcpy(runs, both.data(), both.size() * sizeof(ElementRun), cudaMemcpyHostToDevice),
          "cudaMemcpy of a transfer's runs");
      t.pack = runs;
      t.place = runs + 3 * t.runs.pack.size();
      for (const ElementRun &r : t.runs.pack)
        t.packLongest = std::max(t.packLongest, r.count);
      for (const ElementRun &r : t.runs.place)
        t.placeLongest = std::max(t.placeLongest, r.count);
    }
    found = deviceTransfers.emplace(key, std::move(t)).first;
  }
  const DeviceTransfer &t = found->second;
  if (t.runs.sums)
    return false;
  const std::vector<int64_t> one = {self},
                             &members = c < 0 ? one : lowering.communicators[c].members;
  const int64_t g = (int64_t)members.size(), e = dtypeSize(src.dtype);
  int64_t sendCount = 0, recvCount = 0;
  for (int64_t j = 0; j < g; ++j) {
    sendCount += t.runs.sendCounts[j];
    recvCount += t.runs.recvCounts[j];
  }
  cudaStream_t stream = device.stream();
  char *stage =
      static_cast<char *>(device.scratch(std::max<int64_t>(1, (sendCount + recvCount) * e)));
  char *received = stage + sendCount * e;
  checkCuda(cuda::copy_runs(src.data, t.runs.sourceCount, nullptr, t.pack,
                            (int64_t)t.runs.pack.size(), t.packLongest, e, stage, stream),
            "the transfer's pack (copy_runs)");
  if (c >= 0 && sendCount + recvCount > 0) {
    ncclDataType_t type = typeOf(src.dtype);
    int64_t sendAt = 0, recvAt = 0;
    check(api.ncclGroupStart(), "ncclGroupStart", c);
    for (int64_t j = 0; j < g; ++j) {
      if (t.runs.sendCounts[j] > 0)
        check(api.ncclSend(stage + sendAt * e, (size_t)t.runs.sendCounts[j], type, (int)j, comms[c],
                           stream),
              "ncclSend", c);
      if (t.runs.recvCounts[j] > 0)
        check(api.ncclRecv(received + recvAt * e, (size_t)t.runs.recvCounts[j], type, (int)j,
                           comms[c], stream),
              "ncclRecv", c);
      sendAt += t.runs.sendCounts[j];
      recvAt += t.runs.recvCounts[j];
    }
    check(api.ncclGroupEnd(), "ncclGroupEnd", c);
    wait(f, "ncclSend/ncclRecv", c);
  }
  checkCuda(cuda::copy_runs(src.data, t.runs.sourceCount, received, t.place,
                            (int64_t)t.runs.place.size(), t.placeLongest, e, dst.data, stream),
            "the transfer's placement (copy_runs)");
  return true;
}

void NcclWorld::transfer(const Step &s, Frame &f, int half, int64_t c,
                         const std::vector<int64_t> &shape, const Layout &from, const Layout &to,
                         const BufferView &src, const BufferView &dst) {
  // A group of one (no communicator) only rearranges this rank's values.
  const std::vector<int64_t> one = {self},
                             &members = c < 0 ? one : lowering.communicators[c].members;
  int64_t g = (int64_t)members.size();
  auto key = std::make_pair(s.index, half);
  auto found = transfers.find(key);
  if (found == transfers.end()) {
    Transfer t;
    t.mine = planTransfer(mesh, shape, from, to, self);
    if (!t.mine.error.empty())
      throw Stop{t.mine.error, false};
    MoveShape m = planMoveShape(mesh, shape, from, to);
    t.sends.resize(g);
    for (int64_t j = 0; j < g; ++j)
      if (mayRead(mesh, m, members[j], self))
        t.sends[j] = planTransfer(mesh, shape, from, to, members[j]).reads[self];
    found = transfers.emplace(key, std::move(t)).first;
  }
  const Transfer &t = found->second;
  // This rank's values on the host (f32: 16-bit ones widened exactly), the
  // ones each member reads packed, then one upload in the tensor's type.
  std::vector<float> local(src.count);
  device.download(src, BufferView(local.data(), src.count));
  std::vector<float> out;
  std::vector<int64_t> sendAt(g + 1, 0), recvAt(g + 1, 0);
  for (int64_t j = 0; j < g; ++j) {
    for (int64_t offset : t.sends[j])
      out.push_back(local[offset]);
    sendAt[j + 1] = (int64_t)out.size();
    int64_t reads = members[j] == self ? 0 : (int64_t)t.mine.reads[members[j]].size();
    recvAt[j + 1] = recvAt[j] + reads;
  }
  int64_t sendCount = sendAt[g], recvCount = recvAt[g];
  const DType wire = src.dtype;
  const int64_t e = dtypeSize(wire);
  // Uploads and downloads in the wire's own type: a converting one would
  // stage through the scratch these buffers live in.
  char *stage =
      static_cast<char *>(device.scratch(std::max<int64_t>(1, (sendCount + recvCount) * e)));
  std::vector<char> packed(sendCount * e);
  convertOnHost(BufferView(out.data(), sendCount), BufferView(packed.data(), sendCount, wire));
  device.upload(BufferView(packed.data(), sendCount, wire), BufferView(stage, sendCount, wire));
  char *received = stage + sendCount * e;
  ncclDataType_t type = typeOf(wire);
  if (c >= 0) {
    check(api.ncclGroupStart(), "ncclGroupStart", c);
    for (int64_t j = 0; j < g; ++j) {
      if (members[j] == self)
        continue;
      if (sendAt[j + 1] > sendAt[j])
        check(api.ncclSend(stage + sendAt[j] * e, (size_t)(sendAt[j + 1] - sendAt[j]), type, (int)j,
                           comms[c], device.stream()),
              "ncclSend", c);
      if (recvAt[j + 1] > recvAt[j])
        check(api.ncclRecv(received + recvAt[j] * e, (size_t)(recvAt[j + 1] - recvAt[j]), type,
                           (int)j, comms[c], device.stream()),
              "ncclRecv", c);
    }
    check(api.ncclGroupEnd(), "ncclGroupEnd", c);
    wait(f, "ncclSend/ncclRecv", c);
  }
  std::vector<char> arrivedWire(recvCount * e);
  device.download(BufferView(received, recvCount, wire),
                  BufferView(arrivedWire.data(), recvCount, wire));
  std::vector<float> arrived(recvCount);
  convertOnHost(BufferView(arrivedWire.data(), recvCount, wire),
                BufferView(arrived.data(), recvCount));
  std::vector<std::vector<float>> recvFrom(mesh.numRanks());
  for (int64_t j = 0; j < g; ++j)
    recvFrom[members[j]].assign(arrived.begin() + recvAt[j], arrived.begin() + recvAt[j + 1]);
  // Placed and summed in f32 as the host collectives do, rounded once into
  // a 16-bit dst as it is uploaded.
  std::vector<float> result(dst.count);
  applyTransfer(t.mine, self, local.data(), recvFrom, result.data());
  device.upload(BufferView(result.data(), dst.count), dst);
}

// -- the kernels' own exchanges ----------------------------------------------

std::vector<int64_t> NcclWorld::members(const std::vector<std::string> &axes) {
  int64_t c = communicatorOf(axes);
  return c < 0 ? std::vector<int64_t>{self} : lowering.communicators[c].members;
}

void NcclWorld::sendRecv(Frame &f, const std::vector<std::string> &axes,
                         const std::vector<PeerTransfer> &transfers, cudaStream_t stream,
                         DType type) {
  if (!stream)
    stream = device.stream();
  postSendRecv(f, axes, transfers, stream, type);
  finish(f, axes, stream);
}

void NcclWorld::finish(Frame &f, const std::vector<std::string> &axes, cudaStream_t stream) {
  int64_t c = communicatorOf(axes);
  if (c >= 0)
    wait(f, "ncclSend/ncclRecv", c, stream);
}

const GatherOverlap *NcclWorld::overlapAt(int64_t step) const {
  auto found = overlaps.find(step);
  return found == overlaps.end() ? nullptr : found->second;
}

const ScatterOverlap *NcclWorld::scatterAt(int64_t step) const {
  auto found = scatters.find(step);
  return found == scatters.end() ? nullptr : found->second;
}

std::pair<char *, char *> NcclWorld::scatterMemory(const ScatterOverlap &pair,
                                                   int64_t elementBytes) {
  auto found = scatterBuffers.find(pair.scatterStep);
  if (found != scatterBuffers.end())
    return found->second;
  auto take = [&](int64_t count) -> char * {
    if (count == 0)
      return nullptr;
    held.push_back(device.allocate(count * elementBytes));
    return static_cast<char *>(held.back());
  };
  return scatterBuffers[pair.scatterStep] = {take(pair.landingCount()), take(pair.stagingCount())};
}

void NcclWorld::postSendRecv(Frame &f, const std::vector<std::string> &axes,
                             const std::vector<PeerTransfer> &transfers, cudaStream_t stream,
                             DType type) {
  int64_t c = communicatorOf(axes);
  if (c < 0)
    return;
  const std::vector<int64_t> &group = lowering.communicators[c].members;
  auto place = [&](int64_t peer) {
    auto at = std::find(group.begin(), group.end(), peer);
    if (at == group.end() || peer == self)
      throw Stop{"rank " + std::to_string(peer) + " is no peer of rank " + std::to_string(self) +
                     " in the group " + groupText(lowering.communicators[c]),
                 false};
    return (int)(at - group.begin());
  };
  ncclDataType_t nccl = typeOf(type);
  check(api.ncclGroupStart(), "ncclGroupStart", c);
  for (const PeerTransfer &t : transfers) {
    int peer = place(t.peer);
    if (t.sendCount > 0)
      check(api.ncclSend(t.send, (size_t)t.sendCount, nccl, peer, comms[c], stream), "ncclSend", c);
    if (t.recvCount > 0)
      check(api.ncclRecv(t.recv, (size_t)t.recvCount, nccl, peer, comms[c], stream), "ncclRecv", c);
  }
  check(api.ncclGroupEnd(), "ncclGroupEnd", c);
  wait(f, "ncclSend/ncclRecv", c, stream, true);
}

void NcclWorld::allGather(Frame &f, const std::vector<std::string> &axes, const void *send,
                          void *recv, int64_t count, DType type) {
  int64_t c = communicatorOf(axes);
  if (c < 0) {
    checkCuda(cudaMemcpyAsync(recv, send, (size_t)(count * dtypeSize(type)),
                              cudaMemcpyDeviceToDevice, device.stream()),
              "cudaMemcpyAsync");
    return;
  }
  check(api.ncclAllGather(send, recv, (size_t)count, typeOf(type), comms[c], device.stream()),
        "ncclAllGather", c);
  wait(f, "ncclAllGather", c);
}

void NcclWorld::countSent(const Step &s, Frame &f) const {
  auto lowered = byStep.find(s.index);
  if (lowered != byStep.end())
    f.collectives->count(lowered->second->bytesSent);
  countCalls(s, f);
}

void NcclWorld::countCalls(const Step &s, Frame &f) const {
  auto lowered = byStep.find(s.index);
  if (lowered == byStep.end())
    return;
  for (const NcclCall &call : lowered->second->calls)
    f.collectives->countCall((int64_t)lowering.communicators[call.communicator].members.size());
}

} // namespace shardline::rt
