//===- Explain.cpp - why each collective is there --------------------------===//

#include "ExactPlacement.h"
#include "Placement.h"

#include "shardline/Analysis/MemoryPlan.h"
#include "shardline/Analysis/Report.h"
#include "shardline/Dialect/SL/IR/SL.h"
#include "shardline/Dialect/SL/Transforms/Passes.h"

namespace mlir::sl {
#define GEN_PASS_DEF_SLEXPLAIN
#include "shardline/Dialect/SL/Transforms/Passes.h.inc"
} // namespace mlir::sl

using namespace mlir;
using namespace mlir::sl;

namespace {

/// A placement the passes did not choose: `cheaper` when it would send less
/// (or the same with smaller activations) and is legal — a move that
/// sl-elide-gathers would make — otherwise a costlier one that was rejected.
struct Alternative {
  std::string text;
  bool cheaper = false;
};

/// The moves of sl-elide-gathers, each solved once per function: the same
/// cost function the pass uses, so the two never disagree.
class Moves {
public:
  /// The best improving move that re-places `op` (as one of its transitions,
  /// or as a transition the move's region feeds), or null.
  placement::Move *improving(Operation *op) {
    auto fn = op->getParentOfType<func::FuncOp>();
    if (!fn)
      return nullptr;
    auto &kinds = kindsByFunction[fn];
    if (!kinds)
      kinds = placement::kindsIn(fn);
    placement::Move *best = nullptr;
    for (const placement::Kind &kind : *kinds) {
      auto &move = moves[{fn, kind}];
      if (!move)
        move = std::make_unique<placement::Move>(fn, kind, placement::activationsBreakTies(fn),
                                                 &prices);
      const placement::Outcome &o = move->solve();
      if (!o.improves() || !move->moves(op))
        continue;
      if (best && best->solve().bytesAfter <= o.bytesAfter)
        continue;
      best = move.get();
    }
    return best;
  }

private:
  llvm::DenseMap<Operation *, std::optional<std::vector<placement::Kind>>> kindsByFunction;
  std::map<std::pair<Operation *, placement::Kind>, std::unique_ptr<placement::Move>> moves;
  placement::RelayoutPrices prices;
};

/// "1536 -> 1024 bytes per rank" or, for a move that only shrinks
/// activations, "the same 512 bytes per rank, activations 3072 -> 2048".
std::string gain(const placement::Outcome &o) {
  if (o.bytesAfter < o.bytesBefore)
    return std::to_string(o.bytesBefore) + " -> " + std::to_string(o.bytesAfter) +
           " bytes per rank";
  return "the same " + std::to_string(o.bytesBefore) + " bytes per rank, activations " +
         std::to_string(o.activationBefore) + " -> " + std::to_string(o.activationAfter);
}

/// "sl.all_to_all + sl.all_gather".
std::string opsText(ArrayRef<Operation *> ops) {
  std::string text;
  for (Operation *t : ops)
    text += (text.empty() ? "" : " + ") + t->getName().getStringRef().str();
  return text;
}

/// What a chain move does to `op`, exactly as sl-elide-gathers would apply
/// it: the transitions that go with it, the one relayout that replaces them
/// (from where the chain starts onto the move's layout, or from that layout
/// to what a reader transition produces), the ops that run on that layout,
/// and the region's bytes before and after.
std::string chainMoveText(placement::Move &move, Operation *op) {
  std::optional<placement::Replacement> r = move.replacementOf(op);
  std::string target = move.kind().target.str(), text;
  if (r) {
    std::string bytes = " (" + std::to_string(r->bytesAfter) + " bytes per rank)";
    text = opsText(r->transitions) + " (" + std::to_string(r->bytesBefore) + " bytes per rank) ";
    if (!r->reader)
      text += r->from == r->to ? "goes: the chain starts in " + target + bytes
                               : "goes: one relayout from where the chain starts, " +
                                     r->from.str() + ", to " + target + bytes;
    else
      text += r->from == r->to
                  ? "reads " + target + " and goes: it ends in " + target + bytes
                  : "reads " + target + " and becomes one relayout to " + r->to.str() + bytes;
  } else {
    text = "moving the " + move.kind().describe();
  }
  std::vector<Operation *> ops = move.movedPast();
  if (!ops.empty()) {
    text += "; ";
    for (size_t i = 0; i < ops.size() && i < 3; ++i)
      text += (i ? ", " : "") + opLabel(ops[i]);
    if (ops.size() > 3)
      text += " and " + std::to_string(ops.size() - 3) + " more ops";
    text += (ops.size() == 1 ? " runs on " : " run on ") + target;
  }
  return text + " (sl-elide-gathers: " + gain(move.solve()) + " in this region)";
}

/// `what` when `op` is one of the move's own transitions, else what the
/// move does that changes `op` (it feeds the move's region).
std::string moveText(placement::Move &move, Operation *op, const std::string &what) {
  if (move.kind().type == placement::Kind::Type::Target)
    return chainMoveText(move, op);
  std::string text = placement::isSourceOf(op, move.kind())
                         ? what
                         : "moving the " + move.kind().describe() + " transitions";
  if (Operation *past = move.firstMovedPast())
    text += " past " + opLabel(past);
  return text + " (sl-elide-gathers: " + gain(move.solve()) + " in this region)";
}

Alternative allReduceAlternative(AllReduceOp ar, Moves &moves) {
  if (ar.getResult().use_empty())
    return {"removing it (no user)", true};
  LayoutAttr attr = getLayout(ar.getX());
  MeshOp meshOp = attr ? lookupMesh(ar, attr) : MeshOp();
  if (!meshOp || !getLayout(ar.getResult()))
    return {};
  shardline::Mesh mesh = toMesh(meshOp);
  std::vector<std::string> axes = axisNames(ar.getAxes());
  std::string scatter = "reduce_scatter over " + shardline::formatAxes(axes);
  if (placement::Move *move = moves.improving(ar))
    return {moveText(*move, ar, scatter + ", the sum gathered later"), true};
  return {scatter + " (" +
          std::to_string(
              shardline::reduceScatterBytes(mesh.product(axes), localBytes(ar.getX(), mesh))) +
          " bytes per rank), since no placement of the split sum sends fewer bytes"};
}

Alternative alternative(Operation *op, Moves &moves) {
  if (auto g = dyn_cast<AllGatherOp>(op)) {
    if (g.getResult().use_empty())
      return {"removing it (no user)", true};
    if (placement::Move *move = moves.improving(g))
      return {moveText(*move, g, "sinking it"), true};
    return {};
  }
  if (auto ar = dyn_cast<AllReduceOp>(op))
    return allReduceAlternative(ar, moves);
  if (isa<ReduceScatterOp>(op))
    return {"all_reduce (twice the bytes, and the result whole on every rank)"};
  if (isa<AllToAllOp, ReorderOp>(op))
    if (placement::Move *move = moves.improving(op))
      return {moveText(*move, op, "moving it"), true};
  if (isa<AllToAllOp>(op))
    return {"all_gather + slice (gathers the whole tensor on every rank)"};
  if (isa<RingAttentionOp>(op))
    return {"all_gather of K and V (same bytes, but all K and V resident on every rank)"};
  if (isa<HaloOp>(op))
    return {"all_gather of the sequence (bytes grow with the sequence)"};
  if (isa<ScanStateExchangeOp>(op))
    return {"all-to-all of the full-sequence activations (bytes grow with the sequence)"};
  return {};
}

/// sl-elide-gathers' exact search, run on a copy of `fn` as the pass runs it:
/// a remark on the function where every op's layout chosen anew sends fewer
/// bytes than the function as it is, or where the search stops within the
/// op limit (beyond a limit on table entries or readers, or on IR it does not
/// model). A function over the op limit gets none.
void explainExactSearch(func::FuncOp fn, placement::RelayoutPrices &prices) {
  placement::ExactLimits limits;
  if (!placement::exactSearchMayFit(fn, limits))
    return;
  OpBuilder b(fn);
  b.setInsertionPointAfter(fn);
  auto copy = cast<func::FuncOp>(b.clone(*fn));
  std::vector<placement::Change> changes;
  placement::ExactResult result = placement::placeExactly(copy, prices, limits, changes);
  int64_t before = placement::bytesSent(fn), after = placement::bytesSent(copy);
  copy->erase();
  if (result.status != placement::ExactResult::Status::Placed)
    mlir::emitRemark(fn.getLoc()) << "function @" << fn.getSymName()
                                  << ": sl-elide-gathers' exact search stops (" << result.why
                                  << "); the moves' placement stands";
  else if (after < before)
    mlir::emitRemark(fn.getLoc()) << "function @" << fn.getSymName()
                                  << ": sl-elide-gathers' exact search: " << before << " -> "
                                  << after << " bytes per rank with every op's layout chosen anew ("
                                  << changes.size() << " transitions re-placed)";
}

struct SLExplain : mlir::sl::impl::SLExplainBase<SLExplain> {
  using SLExplainBase::SLExplainBase;
  void runOnOperation() override {
    placement::RelayoutPrices prices;
    for (func::FuncOp fn : llvm::to_vector(getOperation().getOps<func::FuncOp>()))
      explainExactSearch(fn, prices);
    Moves moves;
    getOperation().walk([&](Operation *op) {
      int64_t bytes = shardline::collectiveBytesPerRank(op);
      if (bytes < 0)
        return;
      std::string text = op->getName().stripDialect().str();
      if (auto axes = op->getAttrOfType<ArrayAttr>("axes")) {
        text += " over [";
        for (auto [i, a] : llvm::enumerate(axes))
          text += (i ? ", " : "") + cast<StringAttr>(a).str();
        text += "]";
      } else if (auto ce = dyn_cast<CrossEntropyOp>(op)) {
        text += " (vocab-parallel, 3 all-reduces)";
      }
      text += ": " + std::to_string(bytes) + " bytes per rank";
      Operation *user = op->getNumResults() && !op->getResult(0).use_empty()
                            ? *op->getResult(0).getUsers().begin()
                            : nullptr;
      if (user && !isa<CrossEntropyOp, RingAttentionOp>(op))
        text += "; needed by " + opLabel(user);
      if (auto reason = op->getAttrOfType<StringAttr>(kReasonAttr))
        text += "; " + reason.str();
      Alternative alt = alternative(op, moves);
      if (!alt.text.empty())
        text += (alt.cheaper ? "; cheaper: " : "; rejected: ") + alt.text;
      op->emitRemark() << text;
      if (lint && isa<AllGatherOp>(op) && alt.cheaper)
        op->emitWarning() << "premature gather: " << alt.text;
    });
  }
};

} // namespace
