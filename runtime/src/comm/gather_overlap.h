//===- gather_overlap.h - a gather's pieces under the GEMM that reads it -*- C++ -*-===//
//
// Sequence parallelism gathers a block's sequence-split activations over tp
// right before the column-parallel linear that reads them. Where the plan
// allows, a device runs that all-gather in pieces, one a member, on a
// second stream, and the linear's GEMM piece by piece on the rank's stream
// as the pieces arrive: the piece of member j is the rows of member j's
// sequence chunk, and GEMM(j) needs nothing else of the gathered value.
//
// Which steps pair, and the schedule of each pair, are worked out here once
// at load, on the host and with no CUDA header, from the decoded program
// and its NCCL lowering (comm/nccl_plan.h); the CPU tests check them on
// compiled plans, and the CUDA backend runs them (backends/cuda/overlap.h).
//
// A pair: an all_gather step that lowers to one ncclAllGather over a group
// of several ranks, of a float tensor whose pieces are whole rows of its
// last dimension (a token dimension, not the channels, is gathered), whose
// first reader after it is a linear or lm_head taking it as x (operand 0,
// not as its weight). Nothing between the two reads the gathered value, so
// the gather step may leave all but this rank's piece to the linear step;
// the linear step writes the gathered value whole, for its later readers.
//
// The schedule: this rank's piece first (already in place), then the ring
// order: at ring step k (1 <= k < g) every member sends the piece it got at
// step k - 1 (its own at step 1) to the next member and receives the
// previous member's, so step k brings the piece of the member k places
// before this one. Each ring step is a grouped ncclSend/ncclRecv on the
// second stream, after which that stream records event k - 1; the rank's
// stream waits for event k - 1 before the GEMMs of the piece that step
// brought. Every member sends g - 1 pieces of its part's size: the bytes
// of the ncclAllGather it replaces. The linear step's launches
// (OverlapLaunch) spell this out, stream by stream and offset by offset:
// the device queues them as they are, and the CPU tests run them on the
// host.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_COMM_GATHER_OVERLAP_H
#define SHARDLINE_RUNTIME_COMM_GATHER_OVERLAP_H

#include "comm/movement.h"
#include "exec/program.h"

#include <cstdint>
#include <string>
#include <vector>

namespace shardline::rt {

struct NcclLowering;

/// Rows [first, first + count) of a [T, K] matrix.
struct RowSpan {
  int64_t first = 0, count = 0;
  bool operator==(const RowSpan &o) const { return first == o.first && count == o.count; }
};

/// One member's piece of a paired gather, in the order the GEMMs take them.
struct GatherPiece {
  /// Whose piece: the member's place in the communicator's order.
  int64_t member = 0;
  /// The ring step that brings it (0: this rank's own, in place before the
  /// ring starts), and the event the second stream records once it is
  /// there (ringStep - 1; -1 for the own piece, which needs none).
  int64_t ringStep = 0, event = -1;
  /// The ring step's transfer: the piece of member `sentMember` to world
  /// rank `sendTo`, this piece from world rank `recvFrom` (-1 for the own
  /// piece).
  int64_t sendTo = -1, recvFrom = -1, sentMember = -1;
  /// Where the piece, held contiguous, lies in the gathered value (elements;
  /// the copy joinCopies makes of it).
  StridedCopy placement;
  /// The rows of the gathered value (and of the linear's result) it holds,
  /// the GEMMs it takes: one a run.
  std::vector<RowSpan> rows;
};

/// One launch of the linear step's run, in the order it is queued: Wait and
/// Gemm on the rank's stream, the others on the second stream.
struct OverlapLaunch {
  enum Kind {
    /// The second stream waits for what the rank's stream queued so far (x
    /// with this rank's piece, the result placed).
    Follow,
    /// `copy` from x into the landing buffer (this rank's piece, to send).
    Pack,
    /// A grouped send/receive: `count` elements from staging offset
    /// `sendAt` to world rank `sendTo`, into staging offset `recvAt` from
    /// world rank `recvFrom`.
    Ring,
    /// `copy` from the landing buffer into x (an arrived piece).
    Place,
    /// The second stream records `event`.
    Record,
    /// The rank's stream waits for `event`.
    Wait,
    /// The GEMM of the linear's rows `rows` (of x and of the result).
    Gemm,
  };
  Kind kind = Follow;
  /// The piece it serves (index in GatherOverlap::pieces), -1 for Follow.
  int64_t piece = -1, event = -1;
  int64_t sendTo = -1, recvFrom = -1, sendAt = 0, recvAt = 0, count = 0;
  StridedCopy copy;
  RowSpan rows;
};

/// An all_gather step paired with the linear that reads what it gathers.
struct GatherOverlap {
  /// Step indices (Step::index) of the gather and of the linear.
  int64_t gatherStep = 0, linearStep = 0;
  /// The gathered tensor: the gather's result, the linear's x.
  int32_t gathered = -1;
  /// Index in NcclLowering::communicators; the group's size and this rank's
  /// place in it.
  int64_t communicator = 0, members = 0, place = 0;
  /// Elements of one piece (a member's part), of one row (x's last
  /// dimension, the GEMM's K), and rows of the gathered value.
  int64_t pieceCount = 0, rowWidth = 0, rows = 0;
  /// Own piece first, then in ring order.
  std::vector<GatherPiece> pieces;
  /// What this rank sends, as the report counts it: that of the all-gather.
  int64_t bytesSent = 0;
  /// Where the pieces travel from and into (Ring's offsets): x itself when
  /// each piece is one contiguous run of it (one batch entry), else a
  /// landing buffer of `landingCount` elements, member m's piece at m
  /// pieceCount.
  bool inPlace = true;
  int64_t landingCount = 0;
  /// The linear step's launches, in order.
  std::vector<OverlapLaunch> launches;
};

/// An all_gather step that lowers to an ncclAllGather but does not pair,
/// and why.
struct UnpairedGather {
  int64_t gatherStep = 0;
  std::string why;
};

/// The pairs of `program` on `rank` (whose NCCL lowering is `lowering`), in
/// program order; the ncclAllGather steps that do not pair go to `unpaired`
/// when it is given.
std::vector<GatherOverlap> planGatherOverlaps(const std::vector<Step> &program, const Mesh &mesh,
                                              const std::vector<TensorInfo> &tensors,
                                              const NcclLowering &lowering, int64_t rank,
                                              std::vector<UnpairedGather> *unpaired = nullptr);

/// One line per pair and per unpaired gather, for failing tests.
std::string describe(const std::vector<GatherOverlap> &pairs,
                     const std::vector<UnpairedGather> &unpaired);

} // namespace shardline::rt

#endif
