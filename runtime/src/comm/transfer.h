//===- transfer.h - move a tensor between layouts on shared memory --------===//
//
// The data movement behind every layout transition (all-gather,
// reduce-scatter, all-reduce, all-to-all, slice, reorder), for ranks that can
// read each other's buffers (threads in one process). Each rank builds its
// local part of the target layout by reading, for every element, the rank
// that holds it in the source layout; pending sums the target drops are added
// up over their axes. Values are f32.
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

/// Fills `dst` (rank `rank`'s local part of the global tensor of `shape` in
/// layout `to`) from `sources[r]`, every rank's local part in layout `from`.
/// `to` may drop pending-sum axes of `from` (they are summed) but not add any.
TransferResult transfer(const Mesh &mesh, const std::vector<int64_t> &shape, const Layout &from,
                        const std::vector<const float *> &sources, const Layout &to, int64_t rank,
                        float *dst);

/// Rank `rank`'s local part of `global` in `layout` (no pending sums): the
/// reference the transfers are checked against, and how a single-device tensor
/// is split for a partitioned run.
std::vector<float> extractLocal(const Mesh &mesh, const std::vector<int64_t> &shape,
                                const Layout &layout, const std::vector<float> &global,
                                int64_t rank);

} // namespace shardline::rt

#endif
