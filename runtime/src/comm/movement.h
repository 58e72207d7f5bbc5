//===- movement.h - how a layout transition runs on a group -----*- C++ -*-===//
//
// What every backend's collectives agree on for one layout transition: which
// plain collective it runs as (core/layout.h classifies it; a plain one must
// also cut the local parts into equal pieces in group order), on the group of
// which mesh axes, with how many elements in and out, and how the local parts
// are packed into and out of the members' pieces. The host collectives
// (exec/collectives.cpp) and the NCCL lowering (comm/nccl_plan.h) both start
// from it, so they cannot disagree on the group or the bytes.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_COMM_MOVEMENT_H
#define SHARDLINE_RUNTIME_COMM_MOVEMENT_H

#include "core/layout.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace shardline::rt {

struct MoveShape {
  /// Identity, Slice, AllGather, ReduceScatter, AllToAll, or General for
  /// anything else (an explicit transfer).
  MovementKind kind = MovementKind::General;
  /// The axes of the group the move runs on: the plain collective's (a
  /// Slice moves nothing: a rank keeps the piece of its place in this
  /// group), or for a General transfer every axis either layout uses, in
  /// mesh order.
  std::vector<std::string> axes;
  /// Elements of a rank's source and target parts.
  int64_t inCount = 0, outCount = 0;
  /// Plain collectives: the source part cut into `parts` pieces along the
  /// split dimension, each `outer` runs of `splitRun` elements, and the
  /// received pieces joined along the gathered dimension, each `joinOuter`
  /// runs of `joinRun`. Outer counts of at most one mean the pieces already
  /// lie in order.
  int64_t outer = 0, splitRun = 0, joinOuter = 0, joinRun = 0;
  int64_t parts = 1;
  /// General: per mesh axis, whether the source layout uses it (a rank reads
  /// only from ranks that share its coordinates on the other axes).
  std::vector<bool> usedByFrom;
  /// Set when a layout names an axis the mesh lacks.
  std::string error;
};

/// One strided copy, cudaMemcpy2D's shape in elements: `height` rows of
/// `width` elements, read every `srcPitch` from `srcOffset` and written every
/// `dstPitch` from `dstOffset`. The host collectives run these copies with
/// loops and the CUDA backend with cudaMemcpy2DAsync, so the CPU tests check
/// the very copies a GPU makes.
struct StridedCopy {
  int64_t srcOffset = 0, srcPitch = 0, dstOffset = 0, dstPitch = 0, width = 0, height = 0;
};

/// Cuts a whole of `outer` rows, each `parts` runs of `run` elements, into
/// its parts: part j holds run j of every row, rows in order. One copy a
/// part.
std::vector<StridedCopy> splitCopies(int64_t parts, int64_t outer, int64_t run);
/// The reverse: the parts joined back into the whole.
std::vector<StridedCopy> joinCopies(int64_t parts, int64_t outer, int64_t run);
/// A Slice: the piece of place `part` of every row of the source.
StridedCopy sliceCopy(const MoveShape &move, int64_t part);

/// Runs `copies` on the host.
template <typename T>
void applyCopies(const std::vector<StridedCopy> &copies, const T *src, T *dst) {
  for (const StridedCopy &c : copies)
    for (int64_t row = 0; row < c.height; ++row)
      std::copy_n(src + c.srcOffset + row * c.srcPitch, c.width,
                  dst + c.dstOffset + row * c.dstPitch);
}

/// How `from` -> `to` of a tensor of global `shape` runs on `mesh`.
MoveShape planMoveShape(const Mesh &mesh, const std::vector<int64_t> &shape, const Layout &from,
                        const Layout &to);

/// How an all-reduce resolves the pending sums `from` has and `to` drops (the
/// others stay pending) the bandwidth-optimal way: a reduce-scatter onto the
/// largest local dimension the group divides, into layout `mid`, then an
/// all-gather back. False, with `mid` untouched, when no dimension fits or
/// the group has one rank: the all-reduce is then one transition.
bool splitAllReduce(const Mesh &mesh, const std::vector<int64_t> &shape, const Layout &from,
                    const Layout &to, Layout &mid);

/// Whether `rank` may have to send `other` anything in a General move: they
/// share their coordinates on every axis the source layout does not use.
bool mayRead(const Mesh &mesh, const MoveShape &move, int64_t rank, int64_t other);

/// `count` consecutive elements copied from element `from` of a source to
/// element `to` of a target (three int64, as a device reads a list of them).
struct ElementRun {
  int64_t from = 0, to = 0, count = 0;
};

/// A General move that sums nothing as the runs of elements a device copies
/// (the CUDA backend's; the host collectives follow planTransfer's element
/// lists), for rank `rank` of the group `members` (world ranks in group
/// order) of the move's axes.
struct TransferRuns {
  /// Empty on success.
  std::string error;
  /// The move sums pending terms: no runs (the host places those).
  bool sums = false;
  /// From this rank's source part into its send buffer: what each member
  /// reads from this rank, members in group order, each member's elements in
  /// the order it reads them.
  std::vector<ElementRun> pack;
  /// Elements this rank sends each member and receives from each (zero for
  /// itself), in group order.
  std::vector<int64_t> sendCounts, recvCounts;
  /// Into this rank's target part from its source part (`from` below the
  /// source part's count) and what it received, members in group order,
  /// after it (`from` at or above it). A run may cross from one to the other.
  std::vector<ElementRun> place;
  /// Elements of this rank's source part.
  int64_t sourceCount = 0;
};
TransferRuns planTransferRuns(const Mesh &mesh, const std::vector<int64_t> &shape,
                              const Layout &from, const Layout &to, int64_t rank,
                              const std::vector<int64_t> &members);

/// Runs `runs` on the host: from [a (aCount elements), b] into dst.
template <typename T>
void applyRuns(const std::vector<ElementRun> &runs, const T *a, int64_t aCount, const T *b,
               T *dst) {
  for (const ElementRun &r : runs)
    for (int64_t i = 0; i < r.count; ++i) {
      int64_t at = r.from + i;
      dst[r.to + i] = at < aCount ? a[at] : b[at - aCount];
    }
}

} // namespace shardline::rt

#endif
