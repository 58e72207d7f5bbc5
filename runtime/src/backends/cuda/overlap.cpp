//===- overlap.cpp - a gathered linear's GEMMs under its gather ------------===//
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
//===----------------------------------------------------------------------===//

#include "backends/cuda/overlap.h"

#include "backends/cuda/entry.h"
#include "backends/cuda/nccl.h"
#include "backends/cuda/run_util.h"
#include "comm/gather_overlap.h"

namespace shardline::rt {

bool runPairedLinear(const Step &s, Frame &f) {
  CudaDevice &device = deviceOf(f);
  NcclWorld *world = device.nccl();
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
    case OverlapLaunch::Ring: {
      char *send = staging + l.sendAt * e, *recv = staging + l.recvAt * e;
      std::vector<NcclWorld::PeerTransfer> transfers;
      if (l.sendTo == l.recvFrom) {
        transfers.push_back({l.sendTo, send, l.count, recv, l.count});
      } else {
        transfers.push_back({l.sendTo, send, l.count, nullptr, 0});
        transfers.push_back({l.recvFrom, nullptr, 0, recv, l.count});
      }
      world->postSendRecv(f, axes, transfers, side.stream, x.dtype);
      break;
    }
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
