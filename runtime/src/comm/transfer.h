//===- transfer.h - move a tensor between layouts ---------------*- C++ -*-===//
//
// The data movement behind every layout transition (all-gather,
// reduce-scatter, all-reduce, all-to-all, slice, reorder). Each rank builds its
// local part of the target layout from, for every element, the rank that holds
// it in the source layout; pending sums the target drops are added up over
// their axes. Values are f32, or i32 where nothing is summed.
//
// planTransfer() says which elements of which rank's part one rank reads; since
// every rank can compute every other rank's plan, a sender knows what to send
// without being asked (exec/collectives.cpp moves exactly those elements on
// the group the two layouts span).
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_COMM_TRANSFER_H
#define SHARDLINE_RUNTIME_COMM_TRANSFER_H

#include "core/layout.h"

#include <string>
#include <vector>

namespace shardline::rt {

struct TransferResult {
  /// Empty on success.
  std::string error;
  /// Bytes this rank read from other ranks' buffers.
  int64_t bytesRead = 0;
};

/// What rank `rank` reads to build its part of the target layout.
struct TransferPlan {
  /// Empty on success.
  std::string error;
  /// For every source rank: the offsets in its local part, in the order they
  /// are consumed (the rank's own offsets included; they are read in place).
  std::vector<std::vector<int64_t>> reads;
  /// Terms per target element: one, or every combination of the pending-sum
  /// axes the target drops.
  int64_t terms = 1;
  /// The source rank of every term, target elements in row-major order.
  std::vector<int32_t> sources;
  int64_t remoteElements(int64_t rank) const;
};

TransferPlan planTransfer(const Mesh &mesh, const std::vector<int64_t> &shape, const Layout &from,
                          const Layout &to, int64_t rank);

/// Builds the target part from the plan: `local` is this rank's source part,
/// `received[m]` the values of `reads[m]` from every other rank m, in order.
/// An element of one term is copied as it is; the terms of a pending sum are
/// added in the plan's order.
void applyTransfer(const TransferPlan &plan, int64_t rank, const float *local,
                   const std::vector<std::vector<float>> &received, float *dst);
/// The same for i32 values (token ids, labels, expert indices), copied bit for
/// bit. Integers carry no pending sums: the plan has one term per element.
void applyTransfer(const TransferPlan &plan, int64_t rank, const int32_t *local,
                   const std::vector<std::vector<int32_t>> &received, int32_t *dst);

/// Fills `dst` (rank `rank`'s local part of the global tensor of `shape` in
/// layout `to`) from `sources[r]`, every rank's local part in layout `from`.
/// `to` may drop pending-sum axes of `from` (they are summed) but not add any.
TransferResult transfer(const Mesh &mesh, const std::vector<int64_t> &shape, const Layout &from,
                        const std::vector<const float *> &sources, const Layout &to, int64_t rank,
                        float *dst);

/// The row-major global index of every element of rank `rank`'s local part,
/// in local order.
std::vector<int64_t> globalOffsets(const Mesh &mesh, const std::vector<int64_t> &shape,
                                   const Layout &layout, int64_t rank);

/// Rank `rank`'s local part of `global` in `layout` (no pending sums): the
/// reference the transfers are checked against, and how a single-device tensor
/// is split for a partitioned run.
std::vector<float> extractLocal(const Mesh &mesh, const std::vector<int64_t> &shape,
                                const Layout &layout, const std::vector<float> &global,
                                int64_t rank);

} // namespace shardline::rt

#endif
