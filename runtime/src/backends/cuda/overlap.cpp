//===- overlap.cpp - a gathered linear's GEMMs under its gather ------------===//
//
// The schedule is comm/gather_overlap.h's, worked out at load: the pieces in
// its order, each ring step a grouped ncclSend/ncclRecv on the second
// stream followed by the arrival event it names, each piece's GEMMs (one a
// row run: a batch entry's rows of that member's chunk) on the rank's
// stream after that event. Pieces that lie contiguous in x (one batch
// entry) travel in place; strided ones through a landing buffer of one
// contiguous piece a member, placed into x on the second stream before
// their event, so x is whole when the step ends.
//
//===----------------------------------------------------------------------===//

#include "backends/cuda/overlap.h"

#include "backends/cuda/entry.h"
#include "backends/cuda/nccl.h"
#include "backends/cuda/run_util.h"
#include "comm/gather_overlap.h"

#include <utility>

namespace shardline::rt {

namespace {

/// The copy the other way: from where it writes to where it reads.
StridedCopy reversed(StridedCopy c) {
  std::swap(c.srcOffset, c.dstOffset);
  std::swap(c.srcPitch, c.dstPitch);
  return c;
}

} // namespace

bool runPairedLinear(const Step &s, Frame &f) {
  CudaDevice &device = deviceOf(f);
  NcclWorld *world = device.nccl();
  const GatherOverlap *pair = world ? world->overlapAt(s.index) : nullptr;
  if (!pair || pair->linearStep != s.index)
    return false;
  const BufferView &x = f.stored(s.in[0]), &w = f.stored(s.in[1]), &y = f.stored(s.out[0]);
  int64_t K = pair->rowWidth, N = f.local(s.in[1])[1], g = pair->members;
  if (x.count != pair->rows * K || y.count != pair->rows * N || (int64_t)pair->pieces.size() != g)
    throw Stop{"op #" + std::to_string(s.index) + " (sl." + s.kind + "): its gather's pieces (" +
                   std::to_string(g) + " of " + std::to_string(pair->pieceCount) +
                   " elements) do not cover x [" + std::to_string(pair->rows) + ", " +
                   std::to_string(K) + "]",
               false};
  int64_t e = dtypeSize(x.dtype), count = pair->pieceCount;
  cudaStream_t main = device.stream();
  const std::vector<std::string> &axes = world->axesOf(pair->communicator);
  std::vector<const GatherPiece *> byMember(g);
  for (const GatherPiece &p : pair->pieces)
    byMember.at(p.member) = &p;
  bool inPlace = pair->pieces.front().placement.height <= 1;
  StepMemory memory(device);
  char *landing =
      inPlace ? nullptr : reinterpret_cast<char *>(memory.floats((g * count * e + 3) / 4));
  char *xs = static_cast<char *>(x.data);
  auto at = [&](int64_t member) {
    return inPlace ? xs + byMember[member]->placement.dstOffset * e : landing + member * count * e;
  };
  auto gemms = [&](const GatherPiece &p) {
    for (const RowSpan &r : p.rows)
      device.gemm(false, false, x.slice(r.first * K, r.count * K), w, r.count, N, K,
                  y.slice(r.first * N, r.count * N));
  };
  // Declared after the memory: destroyed (synchronised) first.
  SideStream side(g - 1);
  side.follow(main);
  const GatherPiece &own = pair->pieces.front();
  if (!inPlace)
    copyOnDevice({reversed(own.placement)}, xs, at(own.member), side.stream, e);
  gemms(own);
  for (size_t k = 1; k < pair->pieces.size(); ++k) {
    const GatherPiece &p = pair->pieces[k];
    std::vector<NcclWorld::PeerTransfer> transfers;
    if (p.sendTo == p.recvFrom) {
      transfers.push_back({p.sendTo, at(p.sentMember), count, at(p.member), count});
    } else {
      transfers.push_back({p.sendTo, at(p.sentMember), count, nullptr, 0});
      transfers.push_back({p.recvFrom, nullptr, 0, at(p.member), count});
    }
    world->postSendRecv(f, axes, transfers, side.stream, x.dtype);
    if (!inPlace)
      copyOnDevice({p.placement}, at(p.member), xs, side.stream, e);
    side.lead(p.event, main);
    gemms(p);
  }
  world->finish(f, axes, side.stream);
  return true;
}

} // namespace shardline::rt
