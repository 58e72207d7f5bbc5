//===- moe_routes.h - dropless MoE's exchange by count --------*- C++ -*-===//
//
// Who sends which routed rows to whom in sl.moe_dropless and its gradient,
// worked out on the host from the counts, as the CPU kernel exchanges them
// (kernels/cpu/moe_dropless.cpp): over the expert group each member sends
// every other member the El counts of that member's experts, then its rows
// sorted by expert; the owner groups what it holds by local expert and then
// by sender. With expert tensor parallelism the members of the
// expert-tensor group then send each other the counts of the rows they
// received and the rows (a gather), grouped by local expert and then by
// member, and return the partial outputs the same way (a reduce-scatter).
// The NCCL lowering states these exchanges at balanced routing
// (comm/nccl_plan.h); the CUDA backend runs them at the routing's counts
// (backends/cuda/moe.cpp), and the CPU test checks their bytes against the
// CPU executor's measure. Pure C++.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_COMM_MOE_ROUTES_H
#define SHARDLINE_RUNTIME_COMM_MOE_ROUTES_H

#include <cstdint>
#include <vector>

namespace shardline::rt {

/// A run of `rows` consecutive rows copied from row `from` of one buffer to
/// row `to` of another.
struct RowRun {
  int64_t from = 0, to = 0, rows = 0;
};

/// One rank's exchange over the expert group.
struct DroplessRoutes {
  /// The group's world ranks in group order, this rank's place, and the
  /// experts each member holds (member m: [m El, (m + 1) El)).
  std::vector<int64_t> members;
  int64_t me = 0, El = 0;
  /// from[m][l]: the rows member m sends this rank for local expert l (this
  /// rank's own rows at m = me).
  std::vector<std::vector<int32_t>> from;
  /// This rank's sorted rows for member m's experts: the first and how many.
  std::vector<int64_t> firstRow, rowsTo;
  /// The rows this rank computes per local expert, summed over the senders,
  /// and where member m's rows for local expert l start among them
  /// (grouped[m El + l]: grouped by local expert, then by sender).
  std::vector<int64_t> local, grouped;

  int64_t ep() const { return (int64_t)members.size(); }
  int64_t rowsFrom(int64_t m) const;
  /// Member m's rows, in the order they arrive (by local expert), placed
  /// among the rows this rank computes: `from` counts from the member's
  /// first row, `to` from the first grouped row. Reversed, the rows computed
  /// for m back into the order m sent them.
  std::vector<RowRun> runsOf(int64_t m) const;
  /// Where member m's rows start when the rows received from the other
  /// members lie one member after another, in member order (this rank's
  /// own are not received: 0).
  int64_t arrival(int64_t m) const;
  /// Rows this rank sends to, and receives from, the other members.
  int64_t rowsOut() const;
  int64_t rowsIn() const;
  /// Rows this rank computes.
  int64_t total() const;
};

/// The routes from this rank's rows per expert `counts` (E = ep El, the
/// sorted order of moe_dispatch) and what every other member m told it,
/// received[m] (El counts; received[me] is not read).
DroplessRoutes droplessRoutes(const std::vector<int64_t> &members, int64_t me,
                              const std::vector<int32_t> &counts,
                              const std::vector<std::vector<int32_t>> &received);

/// One rank's gather and reduce-scatter over the expert-tensor group.
struct TensorRoutes {
  std::vector<int64_t> members;
  int64_t me = 0, El = 0;
  /// rows[t][l]: the rows member t received over the expert group for local
  /// expert l; total[l] their sum; gathered[t El + l] where member t's rows
  /// for l start among the gathered rows (by local expert, then by member).
  std::vector<std::vector<int32_t>> rows;
  std::vector<int64_t> total, gathered;

  int64_t etp() const { return (int64_t)members.size(); }
  int64_t rowsOf(int64_t t) const;
  /// Member t's rows (by local expert) placed among the gathered rows, and
  /// where they start among the rows received from the other members, as
  /// DroplessRoutes::runsOf and arrival.
  std::vector<RowRun> runsOf(int64_t t) const;
  int64_t arrival(int64_t t) const;
  /// Rows this rank sends in the gather (its own to every other member) and
  /// in the reduce-scatter (each other member's back to it).
  int64_t gatherRowsSent() const;
  int64_t scatterRowsSent() const;
};

/// rows[t]: member t's DroplessRoutes::local (this rank's own at me).
TensorRoutes tensorRoutes(const std::vector<int64_t> &members, int64_t me,
                          const std::vector<std::vector<int32_t>> &rows);

/// The rows a dropless step's buffers hold on this rank (the CUDA backend
/// sizes them from these): `own`, the rows it computes for its expert group
/// (DroplessRoutes::total, its TensorRoutes::rowsOf(me)); `computed`, those
/// and, over etp, every other member's (the gathered rows); `raw`, the
/// exchanges' scratch: the rows received over the expert group (at most
/// own), the gathered rows received (at most computed), and the
/// reduce-scatter's parts, the gathered rows packed by member then each
/// member's part of this rank's rows (computed + etp·own, the largest).
struct DroplessRows {
  int64_t own = 0, computed = 0, raw = 0;
};
DroplessRows droplessRows(const TensorRoutes &tg);

/// What a dropless step sends from this rank, as its CPU kernel records it
/// (exec/program.h, VariableBytes): the counts at 4 bytes each, rows at the
/// element sizes of x (eb) and of the weights (wb); forward each row's h
/// values out and back, backward its x, dy and weight out and its dx and
/// dweight back. `balanced` is the report's figure for tokens T, top k.
struct DroplessBytes {
  int64_t implied = 0, balanced = 0;
};
DroplessBytes droplessBytes(const DroplessRoutes &ex, const TensorRoutes &tg, bool grad, int64_t T,
                            int64_t k, int64_t H, int64_t eb, int64_t wb);
/// The bytes of all this rank's routed rows out and back, which balanced
/// routing sends (ep - 1) / ep of over the expert group and etp - 1 times
/// over the expert-tensor group.
int64_t droplessRowBytes(bool grad, int64_t T, int64_t k, int64_t H, int64_t eb, int64_t wb);
/// The balanced figure alone, from the group sizes (the NCCL lowering's).
int64_t droplessBalancedBytes(int64_t ep, int64_t etp, int64_t El, bool grad, int64_t T, int64_t k,
                              int64_t H, int64_t eb, int64_t wb);

} // namespace shardline::rt

#endif
