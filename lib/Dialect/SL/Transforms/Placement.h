//===- Placement.h - where layout transitions go, decided by bytes -*- C++ -*-===//
//
// The cost model shared by sl-elide-gathers and sl-explain (docs/passes.md,
// "How a move is priced and chosen"). A *move* re-places every transition of
// one kind at once: transitions whose result can take one more split (a
// gather goes, an all-reduce becomes a reduce-scatter), slices, reorders to
// one order, all-to-alls between two dimensions, or, as "earlier" moves, the
// same transitions put upstream. Each value in the move's region has two
// versions: W, its layout now, and F, the layout it has after the move. The
// move chooses which ops run on F by a minimum cut over the region's def-use
// graph, priced with relayoutBytes (the report's bytes), the activation bytes
// of the ops that run as the tie-breaker.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_DIALECT_SL_TRANSFORMS_PLACEMENT_H
#define SHARDLINE_DIALECT_SL_TRANSFORMS_PLACEMENT_H

#include "shardline/Dialect/SL/IR/SL.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace mlir::sl::placement {

/// Which transitions a move re-places.
struct Kind {
  enum class Type { Split, Unsplit, Reorder, AllToAll, Target };
  Type type = Type::Split;
  /// Split: the axes a value gains on `dim` (gathered later, reduced onto
  /// `dim` by a reduce-scatter, or moved there by an all-to-all); Unsplit:
  /// the axes a value loses on `dim` (sliced later: ops run on the larger
  /// value); AllToAll: the axes moved from `concatDim` to `dim`; Reorder: the
  /// ordered dimension, and in `concatDim` the order it goes to; Target: see
  /// `target`.
  std::vector<std::string> axes;
  /// Target: every chain of transitions (each the one reader of the one
  /// before) that ends in a value of this rank may produce its value in
  /// `target` instead, relaid out once from where the chain starts: several
  /// kinds of transition (a reorder, all-to-alls, a gather) re-placed
  /// together, on a layout that the function's chains start or end at.
  shardline::Layout target;
  int64_t dim = -1, concatDim = -1;
  /// The move puts the transitions (reorders, all-to-alls, gathers of a
  /// Split kind, slices of an Unsplit kind) earlier instead: the value one
  /// reads is produced in its result layout, upstream as far as the ops
  /// before it allow, and taken there once for all its readers.
  bool earlier = false;

  bool operator<(const Kind &o) const;
  bool operator==(const Kind &o) const { return !(*this < o) && !(o < *this); }
  /// "all_gather over [tp] of dimension 1" and the like.
  std::string describe() const;
};

/// What a move changes, for the report's list of elided transitions.
struct Change {
  std::string op, location, how;
};

/// The price of a region as it is and after its best move.
struct Outcome {
  int64_t bytesBefore = 0, bytesAfter = 0;
  int64_t activationBefore = 0, activationAfter = 0;
  /// Whether activations break ties between placements of equal bytes.
  bool activationsBreakTies = true;
  /// Fewer bytes, or (when activations break ties) the same bytes with
  /// smaller activations.
  bool improves() const {
    return bytesAfter < bytesBefore || (activationsBreakTies && bytesAfter == bytesBefore &&
                                        activationAfter < activationBefore);
  }
};

/// relayoutBytes, remembered: a pass prices the same layout changes of the
/// same tensor types many times.
class RelayoutPrices {
public:
  int64_t bytes(const shardline::Layout &from, const shardline::Layout &to, RankedTensorType type,
                const shardline::Mesh &mesh) {
    return price(from, to, type, mesh).first;
  }
  /// Bytes (-1: no lowering) and the number of collectives and slices.
  std::pair<int64_t, int64_t> price(const shardline::Layout &from, const shardline::Layout &to,
                                    RankedTensorType type, const shardline::Mesh &mesh);

private:
  struct Entry {
    shardline::Layout from, to;
    int64_t elementBytes;
    std::vector<int64_t> shape;
    std::pair<int64_t, int64_t> price;
  };
  /// By a hash of (from, to, element bytes, shape): a lookup compares the
  /// layouts as they are, never their text.
  std::unordered_map<size_t, std::vector<Entry>> known;
};

/// Whether `op` is a layout transition (gather, reduce-scatter, all-reduce,
/// all-to-all, slice, reorder).
bool isTransition(Operation *op);
/// Only tensors the layout collectives move change layout: floats and i32
/// (token ids, labels, the router's expert indices; docs/dialect.md).
bool movable(Value v);
/// The mesh of the first operand or result of `op` that has a layout.
std::optional<shardline::Mesh> meshOf(Operation *op);
/// The bytes per rank `fn`'s collectives send (the report's figure).
int64_t bytesSent(func::FuncOp fn);
/// Whether `fn`'s module lets activations break ties (not when it sets
/// sl.sequence_parallel = false).
bool activationsBreakTies(func::FuncOp fn);
/// The moves `fn` offers: one per kind of transition in it.
std::vector<Kind> kindsIn(func::FuncOp fn);
/// Whether `op` is one of the transitions `kind` re-places.
bool isSourceOf(Operation *op, const Kind &kind);
/// For a chain move (Kind::Type::Target): whether every chain of `fn` it
/// could re-place ends in a layout split over more ranks than its target
/// (or none can be re-placed), so that each value it re-places holds more
/// of the tensor on every rank, as for an unsplit move.
bool onlyWidens(func::FuncOp fn, const Kind &kind);

/// What the best placement of a move does to one transition, for sl-explain.
struct Replacement {
  /// The transitions that go together (first to last): a chain of a chain
  /// move, or a reader transition with those that carry its result on.
  std::vector<Operation *> transitions;
  /// Whether they read the move's new layout (a reader transition) rather
  /// than being one of its own chains.
  bool reader = false;
  /// The one relayout emitted instead, and the bytes per rank of both.
  shardline::Layout from, to;
  int64_t bytesBefore = 0, bytesAfter = 0;
};

/// The region of one move in one function: built, priced and applied once.
class Move {
public:
  /// `activationsBreakTies` false: only fewer bytes count (a program whose
  /// module asks for sl.sequence_parallel = false keeps its activations
  /// replicated over tp where that costs no bytes).
  Move(func::FuncOp fn, const Kind &kind, bool activationsBreakTies = true,
       RelayoutPrices *prices = nullptr);
  ~Move();
  Move(Move &&);
  Move &operator=(Move &&);

  const Kind &kind() const;
  /// Solves the minimum cut (once) and prices the region before and after.
  const Outcome &solve();
  /// Whether the best placement re-places (removes or changes) `op`.
  bool moves(Operation *op);
  /// The first op the best placement runs on the new layout, or null.
  Operation *firstMovedPast();
  /// The ops the best placement runs on the new layout, in program order.
  std::vector<Operation *> movedPast();
  /// Where the best placement re-places `op` as part of a chain of the move
  /// or of a reader transition with the transitions it carries: what goes
  /// and the relayout that replaces it.
  std::optional<Replacement> replacementOf(Operation *op);
  /// Rewrites the function into the best placement. Call only when
  /// solve().improves().
  LogicalResult apply(std::vector<Change> &changes);

private:
  struct Impl;
  std::unique_ptr<Impl> impl;
};

} // namespace mlir::sl::placement

#endif
