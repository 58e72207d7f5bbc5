//===- nccl_plan.h - a program's collectives as NCCL calls ------*- C++ -*-===//
//
// What a rank's program asks of NCCL, worked out on the host from the
// decoded program (exec/program.h) with its rank facts resolved, and with no
// CUDA or NCCL header: the CPU tests check it against the CPU collectives,
// and the CUDA backend runs it.
//
// Communicators: one per distinct group the program's collectives use, each
// a split of the world (ncclCommSplit) whose color and key for every world
// rank give exactly the members, in exactly the order, that
// Collectives::group gives the host collectives (color: the group's first
// member; key: the place in Mesh::group order). Groups of one rank need none:
// a step on them moves nothing between ranks.
//
// Calls, per step: a layout transition that concatenates, or cuts into equal
// pieces, in group order runs as ncclAllGather or ncclReduceScatter; an
// all-reduce whose two halves are those (comm/movement.h, splitAllReduce) as
// one ncclAllReduce; a 16-bit reduce-scatter (and so a 16-bit all-reduce's
// first half) as a grouped send/receive of the pieces (sumsInOrder); the
// gathers inside the scans' state exchange and
// vocabulary-parallel cross-entropy, which gather equal parts in group
// order, as ncclAllGather. Everything else (all-to-alls, zigzag and other
// general transfers, halos, ring attention's steps) is a grouped list of
// ncclSend/ncclRecv by peer; the kernels' own routes are those of
// comm/nccl_kernels.h. Each call states the bytes this rank sends as
// the report counts them (DESIGN §4, at the plan's element sizes), which the
// host collectives measure too.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_COMM_NCCL_PLAN_H
#define SHARDLINE_RUNTIME_COMM_NCCL_PLAN_H

#include "comm/gather_overlap.h"
#include "comm/scatter_overlap.h"
#include "core/layout.h"
#include "exec/program.h"

#include <cstdint>
#include <string>
#include <vector>

namespace shardline::rt {

/// The groups of some mesh axes as one split of the world.
struct NcclCommunicator {
  /// The axes as the program first names them (several spellings of one
  /// split share a communicator).
  std::vector<std::string> axes;
  /// ncclCommSplit's color and key of every world rank.
  std::vector<int64_t> color, key;
  /// The lowered rank's group: world ranks in group order.
  std::vector<int64_t> members;
};

enum class NcclOp { AllGather, ReduceScatter, AllReduce, SendRecv };
/// "ncclAllGather", "ncclReduceScatter", "ncclAllReduce", "ncclSend/ncclRecv".
const char *ncclOpName(NcclOp op);

/// Whether a transition that sums values of `dtype` runs as a grouped
/// send/receive of the members' pieces, summed on arrival in group order in
/// f32 and rounded once: 16-bit floats, which then cross as stored and sum
/// to the host collectives' bits (NCCL's own reductions round a 16-bit
/// partial sum at every hop of the ring). f32 sums run as ncclReduceScatter
/// and ncclAllReduce.
bool sumsInOrder(DType dtype);

/// What one peer of a grouped send/receive exchanges with this rank, in
/// elements of the values it moves.
struct NcclPeer {
  int64_t rank = 0;
  int64_t sendCount = 0, recvCount = 0;
};

struct NcclCall {
  NcclOp op = NcclOp::SendRecv;
  /// Index in NcclLowering::communicators.
  int64_t communicator = 0;
  /// In elements: AllGather each member's part, ReduceScatter each
  /// member's result, AllReduce the whole buffer; 0 for SendRecv.
  int64_t count = 0;
  /// SendRecv: the peers this rank sends to or receives from, by world rank.
  std::vector<NcclPeer> peers;
  /// Bytes this rank sends, as the report counts them.
  int64_t bytesSent = 0;
};

/// The calls of one step of the program, in the order they run.
struct NcclStep {
  int64_t step = 0;
  std::string kind;
  std::vector<NcclCall> calls;
  int64_t bytesSent = 0;
};

struct NcclLowering {
  /// Empty on success.
  std::string error;
  std::vector<NcclCommunicator> communicators;
  /// The steps that move anything between ranks.
  std::vector<NcclStep> steps;
  /// Bytes this rank sends in one pass of the program.
  int64_t bytesSent = 0;
  /// The all_gather steps a device may run in pieces under the linear that
  /// reads them (comm/gather_overlap.h), and the ncclAllGather steps that
  /// do not pair, with why.
  std::vector<GatherOverlap> overlaps;
  std::vector<UnpairedGather> unpaired;
  /// The reduce_scatter steps a device may run in pieces under the linear
  /// that makes their operand (comm/scatter_overlap.h), and the plain
  /// reduce-scatters that do not pair, with why.
  std::vector<ScatterOverlap> scatters;
  std::vector<UnpairedScatter> unpairedScatters;
};

/// The NCCL calls of `program`, decoded against the CPU table or a table
/// whose entries take its bindings (exec/program.h) and resolved for `rank`,
/// whose tensors are `tensors` on `mesh`, with its gather overlaps.
NcclLowering lowerToNccl(const std::vector<Step> &program, const Mesh &mesh,
                         const std::vector<TensorInfo> &tensors, int64_t rank);

/// The index of the communicator that splits the world into the groups of
/// `axes`, or -1 when the lowering has none (groups of one rank).
int64_t findCommunicator(const NcclLowering &lowering, const Mesh &mesh,
                         const std::vector<std::string> &axes);

/// The first lowered step whose kind is not among `kinds` (the steps a
/// device runs over NCCL), in words naming the op, its call and its group;
/// or "" when there is none.
std::string firstStepOutside(const NcclLowering &lowering, const std::vector<std::string> &kinds);

/// One line per call ("op #12 (sl.all_gather): ncclAllGather on [tp] ..."),
/// then one per gather overlap and unpaired gather, for failing tests.
std::string describe(const NcclLowering &lowering);

} // namespace shardline::rt

#endif
