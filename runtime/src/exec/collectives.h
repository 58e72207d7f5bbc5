//===- collectives.h - every exchange of a rank goes through here -*- C++ -*-===//
//
// The one place where a rank talks to others: layout transitions (all-gather,
// reduce-scatter, all-reduce, all-to-all, slice, reorder), gathers within a
// group (ring attention's blocks, scan states, cross-entropy pieces) and
// point-to-point exchanges (halos). Each counts the bytes this rank sends as
// the report does. Today every call becomes one Comm::exchange among all
// ranks; group communicators (Comm::split) plug in here without touching the
// kernels.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_EXEC_COLLECTIVES_H
#define SHARDLINE_RUNTIME_EXEC_COLLECTIVES_H

#include "comm/comm.h"
#include "comm/transfer.h"
#include "core/layout.h"

#include <cstdint>
#include <map>
#include <vector>

namespace shardline::rt {

using Mail = std::vector<std::vector<float>>;

class Collectives {
public:
  Collectives(Comm &comm, const Mesh &mesh);

  /// Sends `sendTo[m]` to every rank m and receives `recvFrom[m]` (sized by
  /// the caller); counts what this rank sends, each value at `bytesPerValue`
  /// (the plan's element size: the f32 reference moves 16-bit values as
  /// f32). Throws Stop when the comm fails or another rank aborted.
  void exchange(const Mail &sendTo, Mail &recvFrom, int64_t bytesPerValue);
  /// One mailbox per rank, all empty.
  Mail noMail() const { return Mail(ranks); }

  /// Every member of `members` sends this rank the same number of values as
  /// `mine`; the result holds each member's values at its rank (this rank's
  /// own included).
  Mail allGather(const std::vector<int64_t> &members, const std::vector<float> &mine,
                 int64_t bytesPerValue);

  /// Moves a tensor of global `shape` from layout `from` to `to`: each rank
  /// sends every other rank exactly the elements that rank reads from it.
  /// The plans of every rank are computed once per `key` and kept for later
  /// steps. Values travel as 32-bit words, int32 included.
  void transition(int64_t key, const std::vector<int64_t> &shape, const Layout &from,
                  const Layout &to, const float *src, float *dst, int64_t bytesPerValue);

  /// Resolves the pending sums of `from` the bandwidth-optimal way:
  /// reduce-scatter onto the largest local dimension the group divides, then
  /// all-gather it back (keys 2*step and 2*step+1).
  void allReduce(int64_t step, const std::vector<int64_t> &shape, const Layout &from,
                 const float *src, float *dst, int64_t bytesPerValue);

  /// Waits for every rank; throws Stop when another rank aborted.
  void barrier();

  /// Every rank's `word`, in rank order (not counted as traffic).
  std::vector<uint64_t> gatherWord(uint64_t word);

  /// The global tensor on rank 0 from every rank's part (pending sums already
  /// whole); empty on the other ranks. Not counted as traffic.
  std::vector<float> gatherToFirst(const std::vector<int64_t> &shape, const Layout &layout,
                                   const float *mine, int64_t count);

  /// Bytes counted outside an exchange (what the report says a step sends
  /// where the exchange moves it another way).
  void count(int64_t bytes) { sent += bytes; }
  int64_t bytesSent() const { return sent; }
  void resetCount() { sent = 0; }

private:
  struct CachedTransfer {
    TransferPlan mine;
    /// What each other rank reads from this one, in its order.
    std::vector<std::vector<int64_t>> sends;
  };

  Comm &comm;
  const Mesh &mesh;
  int64_t self, ranks;
  int64_t sent = 0;
  std::map<int64_t, CachedTransfer> transfers;
};

} // namespace shardline::rt

#endif
