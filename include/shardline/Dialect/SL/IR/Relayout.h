//===- Relayout.h - one layout change as collectives, and its bytes -*- C++ -*-===//
//
// How a value gets from one layout to another, and what that costs one rank:
// the single source of both for the passes and the report. sl-insert-collectives
// emits the steps planRelayout chooses; sl-elide-gathers and sl-explain price
// placements with relayoutBytes; each collective op states its bytes through
// stepBytes (docs/report.md), so a placement's price is the report's.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_DIALECT_SL_IR_RELAYOUT_H
#define SHARDLINE_DIALECT_SL_IR_RELAYOUT_H

#include "core/layout.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/Support/LogicalResult.h"

#include <string>
#include <vector>

namespace mlir::sl {

/// One collective (or local slice) of a layout change.
struct RelayoutStep {
  enum class Kind { ReduceScatter, AllReduce, AllToAll, AllGather, Reorder, Slice };
  Kind kind;
  shardline::Layout from, to;
  std::vector<std::string> axes;
  /// all_gather, reduce_scatter and slice: the dimension; all_to_all: the
  /// dimension the axes join (split_dim).
  int64_t dim = -1;
  /// all_to_all: the dimension the axes leave (concat_dim).
  int64_t concatDim = -1;
};

/// The cheapest chain of single collectives that takes `from` to `to`, on a
/// mesh whose axes all have size 2 and a tensor long enough in every
/// dimension: the walk in dimension order (reduce pending sums, move or drop
/// axes minor-most first, reorder, slice) unless a chain through other
/// layouts sends fewer bytes (docs/passes.md, sl-insert-collectives).
/// emitRelayout and relayoutBytes choose the same way on the value's own mesh
/// and shape, where every intermediate layout must also divide the tensor, so
/// a chain that parks two axes on one dimension on the way is found only where
/// that dimension is long enough: a caller that knows the mesh and shape uses
/// the overload below. Empty when the layouts are equal; on failure `error`
/// says why and the result is empty.
std::vector<RelayoutStep> planRelayout(const shardline::Layout &from, const shardline::Layout &to,
                                       std::string &error);
/// The same on `mesh` and a tensor of global `shape` (what emitRelayout and
/// relayoutBytes use).
std::vector<RelayoutStep> planRelayout(const shardline::Layout &from, const shardline::Layout &to,
                                       const shardline::Mesh &mesh,
                                       const std::vector<int64_t> &shape, int64_t elementBytes,
                                       std::string &error);

/// Bytes one rank sends for `step` on a tensor of global `shape` whose
/// elements take `elementBytes` (docs/report.md). A slice sends nothing.
int64_t stepBytes(const RelayoutStep &step, const std::vector<int64_t> &shape, int64_t elementBytes,
                  const shardline::Mesh &mesh);

/// Bytes one rank sends to take a value of `type` from `from` to `to` by the
/// cheapest chain on `mesh` and the type's shape (what emitRelayout emits);
/// -1 when no lowering exists (a pending sum would be created).
int64_t relayoutBytes(const shardline::Layout &from, const shardline::Layout &to,
                      RankedTensorType type, const shardline::Mesh &mesh);

/// The bytes of one element of `type` (at least 1).
int64_t elementBytesOf(Type type);

/// Emits the steps that take `in` to `to` at the builder's insertion point
/// (the chain relayoutBytes prices; planRelayout's where the mesh cannot be
/// found), each with `reason` (when set) as its sl.reason; returns the final
/// value (`in` itself when the layouts are equal), or failure with `error`
/// set.
FailureOr<Value> emitRelayout(OpBuilder &b, Location loc, Value in, const shardline::Layout &to,
                              StringAttr reason, std::string &error);
/// Emits planned `steps` from `in` (whose layout is the first step's from),
/// each with `reason`; but an all_gather over axes the last step's layout no
/// longer holds anywhere gets `gatherReason` when there is one (a relayout's
/// sl.gather_reason).
Value emitSteps(OpBuilder &b, Location loc, Value in, ArrayRef<RelayoutStep> steps,
                StringAttr reason, StringAttr gatherReason = {});

} // namespace mlir::sl

#endif
