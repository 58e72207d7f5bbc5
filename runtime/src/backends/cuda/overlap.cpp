//===- overlap.cpp - a linear's GEMMs under its gather or reduce-scatter ---===//
//
// The launches are comm/gather_overlap.h's, worked out at load and queued
// here as they are: each ring step a grouped ncclSend/ncclRecv on the second
// stream followed by its arrival event, each piece's GEMMs (one a row span:
// a batch entry's rows of that member's chunk) on the rank's stream after
// that event. Pieces that lie contiguous in x (one batch entry) travel in
// place; strided ones through a landing buffer of one contiguous piece a
// member, placed into x on the second stream before their event, so x is
// whole when the step ends.
//
// A reduce-scatter pair's launches (comm/scatter_overlap.h) likewise: each
// member's GEMMs on the rank's stream, strided pieces packed there, the
// second stream following it and sending the piece while the next GEMMs
// run; the step ends once the second stream has received every piece of
// this rank's chunk into the pair's landing buffer (NcclWorld::
// scatterMemory), which the reduce-scatter step sums.
//
//===----------------------------------------------------------------------===//

#include "backends/cuda/overlap.h"

#include "backends/cuda/entry.h"
#include "backends/cuda/nccl.h"
#include "backends/cuda/run_util.h"
#include "comm/gather_overlap.h"

namespace shardline::rt {

namespace {

/// One grouped send/receive of `count` elements to `sendTo` and from
/// `recvFrom` (one peer or two), queued on `stream` without a wait.
void exchangeWith(NcclWorld &world, Frame &f, const std::vector<std::string> &axes, int64_t sendTo,
                  const void *send, int64_t recvFrom, void *recv, int64_t count,
                  cudaStream_t stream, DType type) {
  std::vector<NcclWorld::PeerTransfer> transfers;
  if (sendTo == recvFrom) {
    transfers.push_back({sendTo, send, count, recv, count});
  } else {
    transfers.push_back({sendTo, send, count, nullptr, 0});
    transfers.push_back({recvFrom, nullptr, 0, recv, count});
  }
  world.postSendRecv(f, axes, transfers, stream, type);
}

/// The linear of a reduce-scatter pair.
void runScatterLinear(const Step &s, Frame &f, NcclWorld &world, const ScatterOverlap &pair) {
  CudaDevice &device = deviceOf(f);
  const BufferView &x = f.stored(s.in[0]), &w = f.stored(s.in[1]), &y = f.stored(s.out[0]);
  int64_t N = pair.rowWidth, K = f.local(s.in[1])[0];
  if (y.count != pair.rows * N || x.count != pair.rows * K)
    throw Stop{"op #" + std::to_string(s.index) + " (sl." + s.kind + "): its reduce-scatter's " +
                   std::to_string(pair.members) + " pieces of " + std::to_string(pair.pieceCount) +
                   " elements do not cover its result [" + std::to_string(pair.rows) + ", " +
                   std::to_string(N) + "]",
               false};
  int64_t e = dtypeSize(y.dtype);
  cudaStream_t main = device.stream();
  const std::vector<std::string> &axes = world.axesOf(pair.communicator);
  auto [landing, staging] = world.scatterMemory(pair, e);
  char *ys = static_cast<char *>(y.data), *sendFrom = pair.inPlace ? ys : staging;
  SideStream side;
  for (const ScatterLaunch &l : pair.launches)
    switch (l.kind) {
    case ScatterLaunch::Gemm:
      device.gemm(false, false, x.slice(l.rows.first * K, l.rows.count * K), w, l.rows.count, N, K,
                  y.slice(l.rows.first * N, l.rows.count * N));
      break;
    case ScatterLaunch::Pack:
      copyOnDevice({l.copy}, ys, staging, main, e);
      break;
    case ScatterLaunch::Follow:
      side.follow(main);
      break;
    case ScatterLaunch::Exchange:
      exchangeWith(world, f, axes, l.sendTo, sendFrom + l.sendAt * e, l.recvFrom,
                   landing + l.recvAt * e, l.count, side.stream, y.dtype);
      break;
    case ScatterLaunch::Own:
      copyOnDevice({l.copy}, ys, landing, main, e);
      break;
    }
  world.finish(f, axes, side.stream);
}

} // namespace

bool runPairedLinear(const Step &s, Frame &f) {
  CudaDevice &device = deviceOf(f);
  NcclWorld *world = device.nccl();
  if (const ScatterOverlap *scatter = world ? world->scatterAt(s.index) : nullptr;
      scatter && scatter->linearStep == s.index) {
    runScatterLinear(s, f, *world, *scatter);
    return true;
  }
  const GatherOverlap *pair = world ? world->overlapAt(s.index) : nullptr;
  if (!pair || pair->linearStep != s.index)
    return false;
  const BufferView &x = f.stored(s.in[0]), &w = f.stored(s.in[1]), &y = f.stored(s.out[0]);
  int64_t K = pair->rowWidth, N = f.local(s.in[1])[1], g = pair->members;
  if (x.count != pair->rows * K || y.count != pair->rows * N)
    throw Stop{"op #" + std::to_string(s.index) + " (sl." + s.kind + "): its gather's pieces (" +
                   std::to_string(g) + " of " + std::to_string(pair->pieceCount) +
                   " elements) do not cover x [" + std::to_string(pair->rows) + ", " +
                   std::to_string(K) + "]",
               false};
  int64_t e = dtypeSize(x.dtype);
  cudaStream_t main = device.stream();
  const std::vector<std::string> &axes = world->axesOf(pair->communicator);
  StepMemory memory(device);
  char *xs = static_cast<char *>(x.data);
  char *landing = pair->inPlace
                      ? nullptr
                      : reinterpret_cast<char *>(memory.floats((pair->landingCount * e + 3) / 4));
  char *staging = pair->inPlace ? xs : landing;
  // Declared after the memory: destroyed (synchronised) first.
  SideStream side(g - 1);
  for (const OverlapLaunch &l : pair->launches)
    switch (l.kind) {
    case OverlapLaunch::Follow:
      side.follow(main);
      break;
    case OverlapLaunch::Pack:
      copyOnDevice({l.copy}, xs, landing, side.stream, e);
      break;
    case OverlapLaunch::Place:
      copyOnDevice({l.copy}, landing, xs, side.stream, e);
      break;
    case OverlapLaunch::Ring:
      exchangeWith(*world, f, axes, l.sendTo, staging + l.sendAt * e, l.recvFrom,
                   staging + l.recvAt * e, l.count, side.stream, x.dtype);
      break;
    case OverlapLaunch::Record:
      side.record(l.event);
      break;
    case OverlapLaunch::Wait:
      side.await(l.event, main);
      break;
    case OverlapLaunch::Gemm:
      device.gemm(false, false, x.slice(l.rows.first * K, l.rows.count * K), w, l.rows.count, N, K,
                  y.slice(l.rows.first * N, l.rows.count * N));
      break;
    }
  world->finish(f, axes, side.stream);
  return true;
}

} // namespace shardline::rt
