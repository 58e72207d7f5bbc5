//===- ElideGathers.cpp - place layout transitions by bytes ---------------===//
//
// Moves (Placement.h) re-place every transition of one kind at once by a
// minimum cut over the region of free ops it reaches; the pass applies the
// best move while one lowers the bytes per rank (or keeps them and shrinks
// activations), then the local rewrites below, which never add bytes. Every
// rewrite keeps values: an op is re-typed only in the free dimensions of its
// rule, checked with the same checker as the verifier.
//
//===----------------------------------------------------------------------===//

#include "Placement.h"

#include "shardline/Analysis/MemoryPlan.h"
#include "shardline/Analysis/Report.h"
#include "shardline/Dialect/SL/IR/Relayout.h"
#include "shardline/Dialect/SL/IR/SL.h"
#include "shardline/Dialect/SL/Transforms/Passes.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::sl {
#define GEN_PASS_DEF_SLELIDEGATHERS
#include "shardline/Dialect/SL/Transforms/Passes.h.inc"
} // namespace mlir::sl

using namespace mlir;
using namespace mlir::sl;
using shardline::Layout;
using Axes = std::vector<std::string>;
using placement::Change;

namespace {

using Records = std::vector<Change>;

std::string locText(Location loc) { return shardline::describeLocation(loc); }

Axes axesOf(ArrayAttr a) { return axisNames(a); }

std::string opName(Operation *op) { return op->getName().getStringRef().str().substr(3); }

RankedTensorType retype(Value v, const Layout &l) {
  auto t = cast<RankedTensorType>(v.getType());
  LayoutAttr old = getLayout(t);
  return withLayout(t, fromLayout(t.getContext(), old.getMesh(), l));
}

/// A rewrite that records what it elided for the report.
template <typename OpTy> struct RecordingPattern : OpRewritePattern<OpTy> {
  RecordingPattern(MLIRContext *ctx, Records &records)
      : OpRewritePattern<OpTy>(ctx), records(records) {}
  Records &records;
};

/// all_gather(x) -> all_gather on the same dimension => one all_gather (the
/// same bytes in one collective; the pass splits them again to move one axis).
struct MergeGathers : OpRewritePattern<AllGatherOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(AllGatherOp op, PatternRewriter &rewriter) const override {
    auto inner = op.getX().getDefiningOp<AllGatherOp>();
    if (!inner || inner.getDim() != op.getDim() || !inner.getResult().hasOneUse())
      return failure();
    Axes axes = axesOf(op.getAxes());
    Axes innerAxes = axesOf(inner.getAxes());
    axes.insert(axes.end(), innerAxes.begin(), innerAxes.end());
    SmallVector<StringRef> refs(axes.begin(), axes.end());
    auto merged = AllGatherOp::create(rewriter, op.getLoc(), op.getResult().getType(), inner.getX(),
                                      rewriter.getStrArrayAttr(refs), op.getDimAttr());
    if (auto reason = op->getAttr(kReasonAttr))
      merged->setAttr(kReasonAttr, reason);
    rewriter.replaceOp(op, merged.getResult());
    rewriter.eraseOp(inner);
    return success();
  }
};

/// An all_gather over several axes => one per axis, minor-most first, so that
/// a move can re-place one axis and keep the others (the same bytes: a
/// gather over g = a*b ranks sends (g-1)/g of the result, and gathering b
/// then a sends (b-1)/b of 1/a of it plus (a-1)/a of it).
void splitGathers(func::FuncOp fn) {
  SmallVector<AllGatherOp> gathers;
  fn.walk([&](AllGatherOp g) {
    if (g.getAxes().size() > 1)
      gathers.push_back(g);
  });
  for (AllGatherOp g : gathers) {
    OpBuilder b(g);
    Value cur = g.getX();
    Layout l = toLayout(getLayout(cur));
    Axes axes = axesOf(g.getAxes());
    for (const std::string &a : llvm::reverse(axes)) {
      auto &d = l.dims[g.getDim()];
      d.pop_back();
      if (d.empty() && l.orderDim == (int64_t)g.getDim())
        l.orderDim = -1;
      auto single = AllGatherOp::create(b, g.getLoc(), retype(cur, l), cur, b.getStrArrayAttr({a}),
                                        g.getDimAttr());
      if (auto reason = g->getAttr(kReasonAttr))
        single->setAttr(kReasonAttr, reason);
      cur = single.getResult();
    }
    g.getResult().replaceAllUsesWith(cur);
    g->erase();
  }
}

/// all_gather -> slice of the same axes and dimension => the gathered value.
struct CancelGatherSlice : RecordingPattern<SliceOp> {
  using RecordingPattern::RecordingPattern;
  LogicalResult matchAndRewrite(SliceOp op, PatternRewriter &rewriter) const override {
    auto gather = op.getX().getDefiningOp<AllGatherOp>();
    if (!gather || gather.getX().getType() != op.getResult().getType())
      return failure();
    records.push_back({"all_gather", locText(gather.getLoc()), "cancelled with sl.slice"});
    rewriter.replaceOp(op, gather.getX());
    return success();
  }
};

/// slice -> all_gather of the same axes and dimension => the value sliced.
struct CancelSliceGather : RecordingPattern<AllGatherOp> {
  using RecordingPattern::RecordingPattern;
  LogicalResult matchAndRewrite(AllGatherOp op, PatternRewriter &rewriter) const override {
    auto slice = op.getX().getDefiningOp<SliceOp>();
    if (!slice || slice.getX().getType() != op.getResult().getType())
      return failure();
    records.push_back(
        {"all_gather", locText(op.getLoc()), "cancelled with the sl.slice before it"});
    rewriter.replaceOp(op, slice.getX());
    return success();
  }
};

/// reorder(reorder(x)) back to x's layout => x.
struct CancelReorders : RecordingPattern<ReorderOp> {
  using RecordingPattern::RecordingPattern;
  LogicalResult matchAndRewrite(ReorderOp op, PatternRewriter &rewriter) const override {
    auto inner = op.getX().getDefiningOp<ReorderOp>();
    if (!inner || inner.getX().getType() != op.getResult().getType())
      return failure();
    records.push_back({"reorder", locText(inner.getLoc()), "reorder pair cancelled"});
    rewriter.replaceOp(op, inner.getX());
    return success();
  }
};

/// all_to_all that undoes the previous one => its input; two that move the
/// same axes on in a chain => one.
struct CancelAllToAlls : RecordingPattern<AllToAllOp> {
  using RecordingPattern::RecordingPattern;
  LogicalResult matchAndRewrite(AllToAllOp op, PatternRewriter &rewriter) const override {
    auto inner = op.getX().getDefiningOp<AllToAllOp>();
    if (!inner || inner.getAxes() != op.getAxes())
      return failure();
    if (inner.getX().getType() == op.getResult().getType()) {
      records.push_back(
          {"all_to_all", locText(inner.getLoc()), "inverse all_to_all pair cancelled"});
      rewriter.replaceOp(op, inner.getX());
      return success();
    }
    // Moving the axes from d to e and then from e to f is one move from d to f.
    if (inner.getSplitDim() != op.getConcatDim() || !inner.getResult().hasOneUse() ||
        op.getSplitDim() == inner.getConcatDim())
      return failure();
    auto fused = AllToAllOp::create(rewriter, op.getLoc(), op.getResult().getType(), inner.getX(),
                                    op.getAxes(), op.getSplitDimAttr(), inner.getConcatDimAttr());
    if (failed(mlir::verify(fused))) {
      rewriter.eraseOp(fused);
      return failure();
    }
    records.push_back({"all_to_all", locText(inner.getLoc()), "all_to_alls fused"});
    rewriter.replaceOp(op, fused.getResult());
    rewriter.eraseOp(inner);
    return success();
  }
};

/// all_gather on one dimension, then an all_to_all between two others =>
/// the all_to_all first, so the gather can meet a slice or sink further.
struct GatherPastAllToAll : RecordingPattern<AllToAllOp> {
  using RecordingPattern::RecordingPattern;
  LogicalResult matchAndRewrite(AllToAllOp op, PatternRewriter &rewriter) const override {
    auto gather = op.getX().getDefiningOp<AllGatherOp>();
    if (!gather || !gather.getResult().hasOneUse() ||
        (int64_t)gather.getDim() == (int64_t)op.getSplitDim() ||
        (int64_t)gather.getDim() == (int64_t)op.getConcatDim())
      return failure();
    Layout before = toLayout(getLayout(gather.getX()));
    Layout after = toLayout(getLayout(op.getResult()));
    Layout moved = after;
    moved.dims[gather.getDim()] = before.dims[gather.getDim()];
    if (before.orderDim == (int64_t)gather.getDim()) {
      moved.orderDim = before.orderDim;
      moved.order = before.order;
    }
    auto a2a =
        AllToAllOp::create(rewriter, op.getLoc(), retype(op.getResult(), moved), gather.getX(),
                           op.getAxes(), op.getSplitDimAttr(), op.getConcatDimAttr());
    auto g = AllGatherOp::create(rewriter, gather.getLoc(), op.getResult().getType(),
                                 a2a.getResult(), gather.getAxes(), gather.getDimAttr());
    if (failed(mlir::verify(a2a)) || failed(mlir::verify(g))) {
      rewriter.eraseOp(g);
      rewriter.eraseOp(a2a);
      return failure();
    }
    records.push_back({"all_gather", locText(gather.getLoc()), "moved past sl.all_to_all"});
    rewriter.replaceOp(op, g.getResult());
    rewriter.eraseOp(gather);
    return success();
  }
};

/// A chain of layout transitions, each feeding only the next, becomes what
/// planRelayout emits from its start to its end when that sends fewer bytes
/// (slice then gather is nothing, gather then a slice of another dimension
/// an all_to_all, a zigzag gather then a contiguous slice a reorder, round
/// trips through other layouts nothing).
struct CollapseChain : RewritePattern {
  CollapseChain(MLIRContext *ctx, Records &records)
      : RewritePattern(MatchAnyOpTypeTag(), /*benefit=*/1, ctx), records(records) {}
  Records &records;
  static bool isTransition(Operation *op) {
    return isa<AllGatherOp, AllReduceOp, ReduceScatterOp, AllToAllOp, SliceOp, ReorderOp>(op);
  }
  LogicalResult matchAndRewrite(Operation *op, PatternRewriter &rewriter) const override {
    if (!isTransition(op))
      return failure();
    // `op` ends the chain: its result does not feed a transition alone.
    if (op->getResult(0).hasOneUse() && isTransition(*op->getResult(0).getUsers().begin()))
      return failure();
    int64_t bytes = 0;
    Operation *first = op;
    std::vector<Operation *> chain;
    for (Operation *t = op; t && isTransition(t);) {
      if (t != op && !t->getResult(0).hasOneUse())
        break;
      chain.push_back(t);
      bytes = shardline::saturatingAdd(bytes,
                                       std::max<int64_t>(0, shardline::collectiveBytesPerRank(t)));
      first = t;
      t = t->getOperand(0).getDefiningOp();
    }
    if (chain.size() < 2)
      return failure();
    Value in = first->getOperand(0);
    Layout to = toLayout(getLayout(op->getResult(0)));
    MeshOp meshOp = lookupMesh(op, getLayout(in));
    if (!meshOp)
      return failure();
    int64_t direct = relayoutBytes(toLayout(getLayout(in)), to,
                                   cast<RankedTensorType>(in.getType()), toMesh(meshOp));
    if (direct < 0 || direct >= bytes)
      return failure();
    std::string error;
    FailureOr<Value> out = emitRelayout(rewriter, op->getLoc(), in, to,
                                        op->getAttrOfType<StringAttr>(kReasonAttr), error);
    if (failed(out))
      return failure();
    records.push_back({opName(first), locText(first->getLoc()),
                       "chain of " + std::to_string(chain.size()) + " transitions collapsed (" +
                           std::to_string(bytes) + " -> " + std::to_string(direct) +
                           " bytes per rank)"});
    rewriter.replaceOp(op, *out);
    return success();
  }
};

/// The moves that improve `fn`, best first: most bytes saved, then most
/// activation bytes.
std::vector<placement::Move> improvingMoves(func::FuncOp fn, placement::RelayoutPrices &prices,
                                            bool keepPeak) {
  std::vector<std::pair<std::pair<int64_t, int64_t>, placement::Move>> found;
  bool ties = placement::activationsBreakTies(fn);
  for (const placement::Kind &kind : placement::kindsIn(fn)) {
    // An unsplit move, or a gather put earlier, runs ops on larger values:
    // it can only grow the activations that keep-peak refuses to grow.
    if (keepPeak && ((kind.type == placement::Kind::Type::Unsplit && !kind.earlier) ||
                     (kind.type == placement::Kind::Type::Split && kind.earlier)))
      continue;
    placement::Move move(fn, kind, ties, &prices);
    const placement::Outcome &o = move.solve();
    if (o.improves())
      found.emplace_back(
          std::make_pair(o.bytesBefore - o.bytesAfter, o.activationBefore - o.activationAfter),
          std::move(move));
  }
  std::stable_sort(found.begin(), found.end(),
                   [](const auto &a, const auto &b) { return a.first > b.first; });
  std::vector<placement::Move> moves;
  for (auto &f : found)
    moves.push_back(std::move(f.second));
  return moves;
}

/// The memory plan's high-water mark of `fn` (the report's peak).
int64_t peakOf(func::FuncOp fn) {
  for (Operation &op : fn.getBody().front())
    for (Value v : op.getResults())
      if (LayoutAttr l = getLayout(v))
        if (MeshOp mesh = lookupMesh(&op, l))
          return shardline::planArena(fn, toMesh(mesh)).highWater;
  return 0;
}

/// What the best move after `kind`'s saves in bytes: `kind`'s move applied to
/// a copy of `fn`, priced, thrown away. Two moves can each be the other's
/// obstacle (a reorder sunk to cancel one reorder back blocks the cheaper
/// cancellation of that one with another): one step of lookahead picks the
/// pair.
int64_t followUpSaving(func::FuncOp fn, const placement::Kind &kind,
                       placement::RelayoutPrices &prices, bool keepPeak);

/// Whether applying `kind`'s move to `fn` would raise its peak: applied to a
/// copy, measured, thrown away.
/// `body` run on a copy of `fn` beside it (the copy is then erased): a move
/// tried without touching `fn`.
template <typename Body> auto onCopy(func::FuncOp fn, StringRef suffix, Body body) {
  OpBuilder b(fn);
  b.setInsertionPointAfter(fn);
  auto copy = cast<func::FuncOp>(b.clone(*fn));
  copy.setSymName((fn.getSymName() + suffix).str());
  auto result = body(copy);
  copy->erase();
  return result;
}

bool raisesPeak(func::FuncOp fn, const placement::Kind &kind, int64_t peak) {
  return onCopy(fn, ".peak-check", [&](func::FuncOp copy) {
    placement::Move move(copy, kind, placement::activationsBreakTies(fn));
    Records ignored;
    return !move.solve().improves() || failed(move.apply(ignored)) || peakOf(copy) > peak;
  });
}

int64_t followUpSaving(func::FuncOp fn, const placement::Kind &kind,
                       placement::RelayoutPrices &prices, bool keepPeak) {
  return onCopy(fn, ".lookahead", [&](func::FuncOp copy) -> int64_t {
    placement::Move move(copy, kind, placement::activationsBreakTies(fn), &prices);
    Records ignored;
    if (!move.solve().improves() || failed(move.apply(ignored)))
      return 0;
    std::vector<placement::Move> next = improvingMoves(copy, prices, keepPeak);
    if (next.empty())
      return 0;
    const placement::Outcome &o = next.front().solve();
    return o.bytesBefore - o.bytesAfter;
  });
}

struct SLElideGathers : mlir::sl::impl::SLElideGathersBase<SLElideGathers> {
  using SLElideGathersBase::SLElideGathersBase;
  void runOnOperation() override {
    ModuleOp module = getOperation();
    Records records;
    RewritePatternSet patterns(&getContext());
    patterns.add<MergeGathers>(&getContext());
    patterns.add<CancelGatherSlice, CancelSliceGather, CancelReorders, CancelAllToAlls,
                 GatherPastAllToAll>(&getContext(), records);
    patterns.add<CollapseChain>(&getContext(), records);
    FrozenRewritePatternSet frozen(std::move(patterns));
    placement::RelayoutPrices prices;
    for (func::FuncOp fn : module.getOps<func::FuncOp>()) {
      // Moves, then the local rewrites, until neither lowers anything: each
      // applied move lowers (bytes, activations) strictly and each local
      // rewrite lowers bytes or merges gathers, so this ends; the bounds only
      // guard against a pricing bug.
      for (int pass = 0; pass < 100; ++pass) {
        for (int round = 0; round < 1000; ++round) {
          splitGathers(fn);
          std::optional<int64_t> peak;
          bool applied = false;
          std::vector<placement::Move> moves = improvingMoves(fn, prices, keepPeak);
          std::vector<placement::Move *> allowed;
          for (placement::Move &move : moves) {
            // A move that grows its region's activations is refused without
            // measuring; one that does not is measured on a copy.
            const placement::Outcome &o = move.solve();
            if (keepPeak) {
              if (o.activationAfter > o.activationBefore)
                continue;
              if (!peak)
                peak = peakOf(fn);
              if (raisesPeak(fn, move.kind(), *peak))
                continue;
            }
            allowed.push_back(&move);
          }
          // Of the few best, the one whose move and best follow-up save most.
          placement::Move *chosen = allowed.empty() ? nullptr : allowed.front();
          if (allowed.size() > 1) {
            int64_t bestScore = -1;
            for (placement::Move *move : llvm::ArrayRef(allowed).take_front(4)) {
              const placement::Outcome &o = move->solve();
              int64_t score =
                  o.bytesBefore - o.bytesAfter + followUpSaving(fn, move->kind(), prices, keepPeak);
              if (score > bestScore) {
                bestScore = score;
                chosen = move;
              }
            }
          }
          if (chosen) {
            if (failed(chosen->apply(records)))
              return signalPassFailure();
            applied = true;
          }
          if (!applied)
            break;
        }
        // The moves have reached a fixpoint; a local rewrite that lowers
        // bytes (each records itself; merging gathers does not) may open
        // new moves.
        size_t recorded = records.size();
        if (failed(applyPatternsGreedily(fn, frozen)))
          return signalPassFailure();
        if (records.size() == recorded)
          break;
      }
    }
    if (records.empty())
      return;
    SmallVector<Attribute> entries;
    if (auto old = module->getAttrOfType<ArrayAttr>(kElidedAttr))
      entries.append(old.begin(), old.end());
    Builder b(&getContext());
    for (const auto &r : records)
      entries.push_back(
          b.getDictionaryAttr({b.getNamedAttr("op", b.getStringAttr(r.op)),
                               b.getNamedAttr("location", b.getStringAttr(r.location)),
                               b.getNamedAttr("how", b.getStringAttr(r.how))}));
    module->setAttr(kElidedAttr, b.getArrayAttr(entries));
  }
};

} // namespace
