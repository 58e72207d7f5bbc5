//===- SPMD.h - what the passes offer an op that rewrites itself -*- C++ -*-===//
//
// The SPMD op interface (SLInterfaces.td) lets each op state its own
// rewrite: the remedy of a split sequence-mixing factor during
// sl-propagate-layouts, and its per-rank facts (and, for a collective, the
// upstream `shard` op it becomes) during sl-partition, and the bytes it sends
// for the report. The passes hand the op one of the contexts below and never
// name a concrete op.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_DIALECT_SL_IR_SPMD_H
#define SHARDLINE_DIALECT_SL_IR_SPMD_H

#include "core/layout.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Value.h"

#include <string>
#include <vector>

namespace mlir::sl {

enum class CPComm : uint32_t;

/// What sl-propagate-layouts offers an op while it chooses and applies its
/// remedy. At that point every operand carries a layout.
class RemedyContext {
public:
  RemedyContext(const shardline::Mesh &mesh, CPComm cpComm) : mesh(mesh), cpComm(cpComm) {}
  virtual ~RemedyContext();

  const shardline::Mesh &getMesh() const { return mesh; }
  /// The attention exchange for the op being visited (ring, allgather or
  /// a2a: the module's strategy or the op's own `sl.cp_comm`).
  CPComm getCPComm() const { return cpComm; }

  /// `v` relaid out to `to`, with `reason` on the relayout; one relayout of a
  /// value to a layout is shared by all its consumers.
  virtual Value relayout(Value v, const shardline::Layout &to, const std::string &reason) = 0;
  /// Gives `op`'s results the layouts its rule derives from its operands.
  virtual LogicalResult deriveResults(Operation *op) = 0;

private:
  const shardline::Mesh &mesh;
  CPComm cpComm;
};

/// What sl-partition offers an op: the mesh, the rank, and the index facts
/// of values, computed from their layouts (the types still carry them).
class RankContext {
public:
  RankContext(MLIRContext *ctx, const shardline::Mesh &mesh, int64_t rank, StringRef gridName)
      : ctx(ctx), mesh(mesh), rank(rank), gridName(gridName.str()) {}

  const shardline::Mesh &getMesh() const { return mesh; }
  int64_t getRank() const { return rank; }
  /// The `shard.grid` of the mesh's shape.
  StringRef getGridName() const { return gridName; }

  using Runs = std::vector<shardline::TokenRun>;
  /// The global indices of dimension `dim` of `v` that rank `r` holds, as
  /// runs: what every fact below is computed from, so none costs more with a
  /// longer sequence.
  Runs owned(Value v, unsigned dim, int64_t r) const;
  /// The same as [start, length] runs (global token positions, chunks).
  DenseI64ArrayAttr runs(Value v, unsigned dim, int64_t r) const;
  DenseI64ArrayAttr runs(Value v, unsigned dim) const { return runs(v, dim, rank); }
  DenseI64ArrayAttr ranks(ArrayRef<int64_t> ranks) const;
  /// The ranks of this rank's group over `axes`, in group order.
  std::vector<int64_t> group(ArrayAttr axes) const;
  /// The first global index this rank holds of dimension `dim` of `v`.
  IntegerAttr offset(Value v, unsigned dim) const;
  /// The grid axes of mesh axes.
  SmallVector<int16_t> gridAxes(ArrayAttr axes) const;
  /// `v`'s type with its local shape and no layout.
  RankedTensorType localType(Value v) const;

  /// Whether the movement from `x` to `y` along `dim` over `axes` is, on
  /// every rank, a concatenation in group order (`gathers`) or the rank's
  /// equal slice, every other dimension keeping its indices.
  bool alongOneDim(Value x, Value y, unsigned dim, ArrayAttr axes, bool gathers) const;
  /// Whether `x` to `y` slices `split` and concatenates `concat` over
  /// `axes`, every other dimension keeping its indices (an all-to-all).
  bool exchanges(Value x, Value y, unsigned split, unsigned concat, ArrayAttr axes) const;
  /// Whether every dimension keeps its indices on every rank.
  bool keepsIndices(Value x, Value y) const;

private:
  bool concatenates(Value from, Value to, unsigned dim, const std::vector<std::string> &axes) const;
  bool slices(Value from, Value to, unsigned dim, const std::vector<std::string> &axes) const;
  bool othersKept(Value from, Value to, ArrayRef<unsigned> skip) const;

  MLIRContext *ctx;
  const shardline::Mesh &mesh;
  int64_t rank;
  std::string gridName;
};

/// The number of chunks a sequence split over `axes` in `order` has: one per
/// rank of the split, two in zigzag order.
int64_t chunkCount(const shardline::Mesh &mesh, const std::vector<std::string> &axes,
                   shardline::ChunkOrder order);

/// The axis names of a string array attribute.
std::vector<std::string> axisNames(ArrayAttr axes);
/// The number of ranks in one group over `axes`.
int64_t groupSize(const shardline::Mesh &mesh, ArrayAttr axes);
/// A string array attribute of axis names.
ArrayAttr axesAttr(MLIRContext *ctx, ArrayRef<std::string> axes);

/// One rank's shape of the ranked tensor `v` under its layout (the global
/// shape when it has none).
std::vector<int64_t> localShapeOf(Value v, const shardline::Mesh &mesh);
/// One rank's bytes of `v` under its layout (splits are even, so every rank
/// agrees); 0 for a value that is not a ranked tensor.
int64_t localBytes(Value v, const shardline::Mesh &mesh);

/// An op's name and, when its location has one, its model name:
/// "sl.linear 'blocks.0.attn.wq'".
std::string opLabel(Operation *op);

/// Names of an op's operands and of its results.
using ValueNames = std::pair<std::vector<std::string>, std::vector<std::string>>;
/// The names the op's sharding rule gives its operands and results; `x` (one
/// operand) or `x0`, `x1`, ... and `result` (or `result0`, ...) for an op
/// without a rule.
ValueNames defaultValueNames(Operation *op);

} // namespace mlir::sl

#endif
