//===- collectives.h - every exchange of a rank goes through here -*- C++ -*-===//
//
// The one place where a rank talks to others: layout transitions (all-gather,
// reduce-scatter, all-reduce, all-to-all, slice, reorder), gathers within a
// group (ring attention's blocks, scan states, cross-entropy pieces) and
// point-to-point exchanges (halos). Each runs on the group communicator of the
// mesh axes it spans (comm/group.h), so a tp group's gather involves only its
// members; a transition that is one plain collective runs as that collective,
// any other as a transfer among the ranks the layouts tie together. Each call
// counts the bytes this rank sends as the report does.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_EXEC_COLLECTIVES_H
#define SHARDLINE_RUNTIME_EXEC_COLLECTIVES_H

#include "comm/comm.h"
#include "comm/movement.h"
#include "comm/transfer.h"
#include "core/layout.h"
#include "exec/program.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace shardline::rt {

/// Values per world rank.
using Mail = std::vector<std::vector<float>>;
using Axes = std::vector<std::string>;

class Collectives {
public:
  Collectives(Comm &comm, const Mesh &mesh);

  /// The group of the ranks that differ from this one only in `axes`, in
  /// Mesh::group order (a ring's order). Made by a split of the world the
  /// first time any rank asks for these axes; every rank asks at the same
  /// point of the program, so the splits line up.
  Group &group(const Axes &axes);

  /// Sends `sendTo[m]` to every other member m of the group of `axes` and
  /// receives `recvFrom[m]` (sized by the caller); both by world rank.
  /// Counts what this rank sends, each value at `bytesPerValue` (the plan's
  /// element size: the f32 reference moves 16-bit values as f32). Throws Stop
  /// when the comm fails or another rank aborted.
  void exchange(const Axes &axes, const Mail &sendTo, Mail &recvFrom, int64_t bytesPerValue);
  /// Empty values for every rank.
  Mail noMail() const { return Mail(ranks); }

  /// Every member of the group of `axes` sends the others the same number of
  /// values as `mine`; the result holds each member's values at its world
  /// rank (this rank's own included).
  Mail allGather(const Axes &axes, const std::vector<float> &mine, int64_t bytesPerValue);

  /// Moves a tensor of global `shape` from layout `from` to `to`. A plain
  /// all-gather, reduce-scatter or all-to-all runs as that collective on its
  /// group, a slice locally; anything else is a transfer in which each rank
  /// sends every other rank exactly the elements that rank reads from it.
  /// What a step moves is worked out once per `key` and kept for later steps.
  /// `src` and `dst` are this rank's parts, both f32 or both i32 (token ids,
  /// labels, expert indices): an i32 value arrives with its bits unchanged,
  /// and an i32 tensor cannot carry a pending sum (nothing sums integers).
  void transition(int64_t key, const std::vector<int64_t> &shape, const Layout &from,
                  const Layout &to, const BufferView &src, const BufferView &dst,
                  int64_t bytesPerValue);

  /// Resolves the pending sums of `from` that `to` no longer has (the op's
  /// axes; the others stay pending) the bandwidth-optimal way: reduce-scatter
  /// onto the largest local dimension the group divides, then all-gather it
  /// back (keys 2*step and 2*step+1).
  void allReduce(int64_t step, const std::vector<int64_t> &shape, const Layout &from,
                 const Layout &to, const float *src, float *dst, int64_t bytesPerValue);

  /// Waits for every rank; throws Stop when another rank aborted or the wait
  /// timed out.
  void barrier();

  /// Every rank's `word`, in rank order (not counted as traffic). Inline,
  /// as a backend library calls it (the CUDA backend shares NCCL's id).
  std::vector<uint64_t> gatherWord(uint64_t word) {
    std::vector<uint64_t> all;
    std::string error;
    if (!comm.allGather(word, all, error))
      throw Stop{error, error.empty()};
    return all;
  }

  /// Every rank's `mine` (of the same length on every rank), by world rank,
  /// in one all-gather over the world; exact (each count travels as two i32
  /// halves). Not counted as traffic.
  std::vector<std::vector<int64_t>> gatherCounts(const std::vector<int64_t> &mine);

  /// The global tensor on rank 0 from every rank's part (pending sums already
  /// whole); empty on the other ranks. Not counted as traffic.
  std::vector<float> gatherToFirst(const std::vector<int64_t> &shape, const Layout &layout,
                                   const float *mine, int64_t count);

  /// Whether the run was aborted by another rank (device collectives poll
  /// it while they wait), and whether the ranks are threads of one process.
  bool aborted() const { return comm.aborted(); }
  bool ranksAreThreads() const { return comm.ranksAreThreads(); }

  /// Bytes counted outside an exchange (what the report says a step sends
  /// where the exchange moves it another way).
  void count(int64_t bytes) { sent += bytes; }
  /// A collective that ran outside these (a device's, over NCCL) on a group
  /// of `groupSize` ranks, counted as callsByGroupSize() counts the others.
  void countCall(int64_t groupSize) {
    if (groupSize > 1)
      ++calls[groupSize];
  }
  int64_t bytesSent() const { return sent; }
  /// Starts a step's count of bytes and collectives.
  void resetCount() {
    sent = 0;
    calls.clear();
  }

  /// How many collectives ran on groups of each size since resetCount()
  /// (groups of one left out): which communicators a step used.
  const std::map<int64_t, int64_t> &callsByGroupSize() const { return calls; }

private:
  /// Every mesh axis in mesh order: the world, in rank order.
  Axes worldAxes() const;

  /// Values of type T (float or int32_t) to and from every other member,
  /// by world rank.
  template <typename T>
  void exchange(Group &g, const std::vector<std::vector<T>> &sendTo,
                std::vector<std::vector<T>> &recvFrom, int64_t bytesPerValue);

  /// What one transition step does, worked out at its first run: its shape
  /// (comm/movement.h) and this rank's part in it.
  struct Move : MoveShape {
    Group *group = nullptr;
    /// Slice: the piece this rank keeps.
    int64_t part = 0;
    /// General: what this rank reads, and what each member reads from it.
    TransferPlan mine;
    std::vector<std::vector<int64_t>> sends;
  };
  Move planMove(const std::vector<int64_t> &shape, const Layout &from, const Layout &to);
  /// Runs a planned move on values of type T (float or int32_t).
  template <typename T> void run(const Move &m, const T *src, T *dst, int64_t bytesPerValue);
  /// Throws Stop for a failed status, else counts its bytes at
  /// `bytesPerValue` per 32-bit word.
  void settle(const CommStatus &status, const Group &g, int64_t bytesPerValue);

  Comm &comm;
  const Mesh &mesh;
  int64_t self, ranks;
  int64_t sent = 0;
  std::map<int64_t, Move> moves;
  std::map<Axes, std::unique_ptr<Group>> groups;
  std::map<int64_t, int64_t> calls;
  /// Packed and landing pieces of a plain transition, of either type.
  std::vector<char> scratch, packed;
};

} // namespace shardline::rt

#endif
