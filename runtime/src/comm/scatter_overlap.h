//===- scatter_overlap.h - a reduce-scatter's pieces under the GEMM that makes them -*- C++ -*-===//
//
// Sequence parallelism reduce-scatters the partial sums a row-parallel
// linear makes over tp right after it. Where the plan allows, a device runs
// that reduce-scatter in pieces, one a member, under the linear's GEMM:
// the rank's stream computes the rows of one member's piece at a time (the
// rows of that member's sequence chunk), and a second stream sends each
// piece to its member as soon as its GEMM is done, while the next GEMM
// runs. Each member receives every other member's piece of its own chunk
// into a landing buffer, its own piece beside them, and the reduce-scatter
// step sums the pieces element by element in f32 in group order and rounds
// once (sum_pieces): the bits the host collectives' reduce-scatter gives,
// in f32 as in 16 bits.
//
// Which steps pair, and each pair's launches, are worked out here once at
// load, on the host and with no CUDA header, from the decoded program and
// its NCCL lowering (comm/nccl_plan.h); the CPU tests check them on
// compiled plans and run them on the host, and the CUDA backend queues them
// (backends/cuda/overlap.h).
//
// A pair: a reduce_scatter step that is a plain reduce-scatter over a group
// of several ranks (its lowering one ncclReduceScatter, or for 16-bit
// values the grouped send/receive of its pieces, comm/nccl_plan.h,
// sumsInOrder), of a float tensor whose pieces are whole rows of its last
// dimension, made by the step right before it: a linear (not a gathered
// one, whose GEMMs a gather pair already schedules) whose result nothing
// else reads.
//
// The schedule, member p of g: for k = 1, ..., g - 1 the GEMMs of the piece
// of member j = p + k (mod g), its copy into the send staging where the
// piece is strided (several batch entries), the second stream following
// the rank's stream, and one grouped send/receive on it: piece j to member
// j, member p - k's piece of this rank's chunk into landing slot p - k; at
// step k every member sends to the member k places after it and receives
// from the one k places before, so the calls meet. Then the GEMMs of the
// own piece, copied into landing slot p. Every member sends g - 1 pieces:
// the bytes of the reduce-scatter it replaces.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_COMM_SCATTER_OVERLAP_H
#define SHARDLINE_RUNTIME_COMM_SCATTER_OVERLAP_H

#include "comm/gather_overlap.h"
#include "comm/movement.h"
#include "exec/program.h"

#include <cstdint>
#include <string>
#include <vector>

namespace shardline::rt {

struct NcclLowering;

/// One launch of the paired linear step, in the order it is queued: Gemm,
/// Pack and Own on the rank's stream, Follow and Exchange on the second.
struct ScatterLaunch {
  enum Kind {
    /// The GEMM of the linear's rows `rows` (of x and of the result).
    Gemm,
    /// `copy` from the result into the send staging (a strided piece).
    Pack,
    /// The second stream waits for what the rank's stream queued so far.
    Follow,
    /// A grouped send/receive on the second stream: `count` elements from
    /// offset `sendAt` (of the result when the pair is in place, else of the
    /// send staging) to world rank `sendTo`, into landing offset `recvAt`
    /// from world rank `recvFrom`.
    Exchange,
    /// `copy` from the result into the landing buffer: this rank's piece.
    Own,
  };
  Kind kind = Gemm;
  /// The member whose piece it serves.
  int64_t member = -1;
  int64_t sendTo = -1, recvFrom = -1, sendAt = 0, recvAt = 0, count = 0;
  StridedCopy copy;
  RowSpan rows;
};

/// A reduce_scatter step paired with the linear that makes its operand.
struct ScatterOverlap {
  /// Step indices (Step::index) of the linear and of the reduce-scatter.
  int64_t linearStep = 0, scatterStep = 0;
  /// The linear's result, the reduce-scatter's operand (a pending sum).
  int32_t partial = -1;
  /// Index in NcclLowering::communicators; the group's size and this rank's
  /// place in it.
  int64_t communicator = 0, members = 0, place = 0;
  /// Elements of one piece (a member's part of the result), of one row (the
  /// linear's N), and rows of the linear's result.
  int64_t pieceCount = 0, rowWidth = 0, rows = 0;
  /// Whether each piece is one contiguous run of the result (one batch
  /// entry): it is sent from there; else through the send staging, member
  /// m's piece at m·pieceCount.
  bool inPlace = true;
  /// The landing buffer (every member's piece of this rank's chunk, member
  /// m's at m·pieceCount) and the send staging (none in place), in elements.
  int64_t landingCount() const { return members * pieceCount; }
  int64_t stagingCount() const { return inPlace ? 0 : landingCount(); }
  /// The rows of each member's piece, by member: its GEMMs, one a run.
  std::vector<std::vector<RowSpan>> pieceRows;
  /// What this rank sends, as the report counts it: the reduce-scatter's.
  int64_t bytesSent = 0;
  /// The linear step's launches, in order.
  std::vector<ScatterLaunch> launches;
};

/// A reduce_scatter step that a device could run in pieces but does not,
/// and why.
struct UnpairedScatter {
  int64_t scatterStep = 0;
  std::string why;
};

/// The pairs of `program` on `rank` (whose NCCL lowering is `lowering`,
/// its gather pairs planned), in program order; the plain reduce-scatters
/// that do not pair go to `unpaired` when it is given.
std::vector<ScatterOverlap> planScatterOverlaps(const std::vector<Step> &program, const Mesh &mesh,
                                                const std::vector<TensorInfo> &tensors,
                                                const NcclLowering &lowering, int64_t rank,
                                                std::vector<UnpairedScatter> *unpaired = nullptr);

/// One line per pair and per unpaired reduce-scatter, for failing tests.
std::string describe(const std::vector<ScatterOverlap> &pairs,
                     const std::vector<UnpairedScatter> &unpaired);

} // namespace shardline::rt

#endif
