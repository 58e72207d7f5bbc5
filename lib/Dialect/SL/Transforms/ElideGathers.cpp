//===- ElideGathers.cpp - sink, cancel and fuse premature gathers ---------===//
//
// Every rewrite keeps values: a gather moves past an op only when the op's
// sharding rule accepts the split layout (checked with the same checker as
// the verifier), and the op's results are then gathered instead.
//
//===----------------------------------------------------------------------===//

#include "shardline/Analysis/Report.h"
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

namespace {

struct Record {
  std::string op, location, how;
};
using Records = std::vector<Record>;

std::string locText(Location loc) { return shardline::describeLocation(loc); }

Axes axesOf(ArrayAttr a) {
  Axes out;
  for (Attribute x : a)
    out.push_back(cast<StringAttr>(x).str());
  return out;
}

RankedTensorType retype(Value v, const Layout &l) {
  auto t = cast<RankedTensorType>(v.getType());
  LayoutAttr old = getLayout(t);
  return withLayout(t, fromLayout(t.getContext(), old.getMesh(), l));
}

/// The result layouts `op` would have with `replace` substituted for some of
/// its operands, or nullopt if its rule rejects them.
std::optional<std::vector<Layout>> derive(Operation *op,
                                          const llvm::DenseMap<Value, Layout> &replace) {
  for (Value v : llvm::concat<Value>(op->getOperands(), op->getResults()))
    if (!getLayout(v))
      return std::nullopt;
  // Only free dimensions may change: a sequence-mixing one that the op splits
  // with a remedy (ring attention, chunked scans, halos) would compute
  // something else in another layout.
  auto iface = dyn_cast<ShardingRuleOpInterface>(op);
  if (!iface)
    return std::nullopt;
  shardline::ShardingRule rule = iface.getShardingRule();
  for (OpOperand &use : op->getOpOperands()) {
    auto it = replace.find(use.get());
    if (it == replace.end())
      continue;
    Layout now = toLayout(getLayout(use.get()));
    const auto &dims = rule.operands[use.getOperandNumber()];
    for (size_t d = 0; d < dims.size(); ++d)
      if ((now.dims[d] != it->second.dims[d] || now.dimOrder(d) != it->second.dimOrder(d)) &&
          (dims[d] < 0 || rule.factors[dims[d]].kind != shardline::FactorKind::Free))
        return std::nullopt;
  }
  std::optional<shardline::RuleCheck> check = checkOpRule(op, replace);
  if (!check || !check->error.empty())
    return std::nullopt;
  // A result whose layout would change needs a transition back, and those
  // take float tensors only (not the router's expert indices).
  for (auto [i, r] : llvm::enumerate(op->getResults()))
    if (check->results[i] != toLayout(getLayout(r)) &&
        !isa<FloatType>(getElementTypeOrSelf(r.getType())))
      return std::nullopt;
  return check->results;
}

/// How to get from `from` to `to` with one gather: the dimension and axes, or
/// nullopt when they differ otherwise.
std::optional<std::pair<int64_t, Axes>> gatherBetween(const Layout &from, const Layout &to) {
  if (from.partial != to.partial || from.dims.size() != to.dims.size())
    return std::nullopt;
  std::optional<std::pair<int64_t, Axes>> found;
  for (size_t d = 0; d < from.dims.size(); ++d) {
    if (from.dims[d] == to.dims[d])
      continue;
    const Axes &f = from.dims[d], &t = to.dims[d];
    if (found || f.size() <= t.size() || !std::equal(t.begin(), t.end(), f.begin()))
      return std::nullopt;
    found = std::make_pair((int64_t)d, Axes(f.begin() + t.size(), f.end()));
  }
  if (!found)
    return std::nullopt;
  Layout check = from;
  check.dims[found->first] = to.dims[found->first];
  if (check.dims[found->first].empty() && check.orderDim == found->first)
    check.orderDim = -1;
  if (check != to)
    return std::nullopt;
  return found;
}

bool onlyOrderDiffers(const Layout &a, const Layout &b) {
  return a.dims == b.dims && a.partial == b.partial && a != b;
}

std::string opName(Operation *op) { return op->getName().getStringRef().str(); }

/// Whether the user's rule accepts its operands from transitions like `t`
/// (same op, same attributes) in their layouts before the transition, and
/// each result can come back to its layout with one such transition. Fills
/// the results' split layouts and where each moved operand comes from.
bool acceptsSplit(Operation *t, Operation *user, std::vector<Layout> &results,
                  llvm::DenseMap<Value, Value> &source) {
  if (!isa<ShardingRuleOpInterface>(user))
    return false;
  llvm::DenseMap<Value, Layout> replace;
  for (Value operand : user->getOperands()) {
    Operation *def = operand.getDefiningOp();
    if (!def || def->getName() != t->getName() ||
        def->getAttrDictionary() != t->getAttrDictionary())
      continue;
    replace[operand] = toLayout(getLayout(def->getOperand(0)));
    source[operand] = def->getOperand(0);
  }
  if (!replace.count(t->getResult(0)))
    return false;
  std::optional<std::vector<Layout>> derived = derive(user, replace);
  if (!derived)
    return false;
  for (auto [i, r] : llvm::enumerate(user->getResults())) {
    Layout now = toLayout(getLayout(r));
    const Layout &split = (*derived)[i];
    if (split == now)
      continue;
    if (isa<AllGatherOp>(t) ? !gatherBetween(split, now) : !onlyOrderDiffers(split, now))
      return false;
  }
  results = std::move(*derived);
  return true;
}

bool sameKind(Operation *a, Operation *b) {
  return a && b && a->getName() == b->getName() && a->getAttrDictionary() == b->getAttrDictionary();
}

/// The layout `v` will have once transitions like `t` have sunk past the ops
/// that compute it (looking at most `depth` ops back), or nullopt if it keeps
/// its layout.
std::optional<Layout> splitLater(Value v, Operation *t, int depth) {
  Operation *def = v.getDefiningOp();
  if (!def)
    return std::nullopt;
  if (sameKind(def, t))
    return toLayout(getLayout(def->getOperand(0)));
  if (depth == 0 || !isa<ShardingRuleOpInterface>(def))
    return std::nullopt;
  llvm::DenseMap<Value, Layout> replace;
  for (Value operand : def->getOperands())
    if (auto l = splitLater(operand, t, depth - 1))
      replace[operand] = *l;
  if (replace.empty())
    return std::nullopt;
  auto derived = derive(def, replace);
  if (!derived)
    return std::nullopt;
  const Layout &split = (*derived)[cast<OpResult>(v).getResultNumber()];
  Layout now = toLayout(getLayout(v));
  bool back =
      isa<AllGatherOp>(t) ? gatherBetween(split, now).has_value() : onlyOrderDiffers(split, now);
  return back ? std::optional<Layout>(split) : std::nullopt;
}

/// Whether `user` accepts the layouts its operands will have once transitions
/// like `t` have sunk (sl.add(gather(x), silu(rms_norm(gather(x))))).
bool acceptsSplitLater(Operation *t, Operation *user) {
  if (!isa<ShardingRuleOpInterface>(user))
    return false;
  llvm::DenseMap<Value, Layout> replace;
  for (Value operand : user->getOperands())
    if (auto l = splitLater(operand, t, /*depth=*/8))
      replace[operand] = *l;
  if (!replace.count(t->getResult(0)))
    return false;
  auto derived = derive(user, replace);
  if (!derived)
    return false;
  for (auto [i, r] : llvm::enumerate(user->getResults())) {
    Layout now = toLayout(getLayout(r));
    const Layout &split = (*derived)[i];
    if (split != now &&
        (isa<AllGatherOp>(t) ? !gatherBetween(split, now) : !onlyOrderDiffers(split, now)))
      return false;
  }
  return true;
}

/// Moves a layout transition (all-gather or reorder) `t` past its user `user`
/// when the user's rule accepts the layout before the transition; the user's
/// results get the same kind of transition.
LogicalResult sinkPast(Operation *t, Operation *user, PatternRewriter &rewriter, Records &records) {
  std::vector<Layout> results;
  llvm::DenseMap<Value, Value> source;
  if (!acceptsSplit(t, user, results, source))
    return failure();
  rewriter.setInsertionPoint(user);
  Operation *moved = rewriter.clone(*user);
  for (OpOperand &use : moved->getOpOperands())
    if (auto it = source.find(use.get()); it != source.end())
      use.set(it->second);
  SmallVector<Value> replacements;
  rewriter.setInsertionPointAfter(moved);
  for (auto [i, r] : llvm::enumerate(moved->getResults())) {
    Type oldType = r.getType();
    const Layout &split = results[i];
    r.setType(retype(r, split));
    Layout now = toLayout(getLayout(oldType));
    if (split == now) {
      replacements.push_back(r);
      continue;
    }
    Operation *back;
    if (isa<AllGatherOp>(t)) {
      auto [dim, axes] = *gatherBetween(split, now);
      SmallVector<StringRef> refs(axes.begin(), axes.end());
      back = AllGatherOp::create(rewriter, t->getLoc(), oldType, r, rewriter.getStrArrayAttr(refs),
                                 rewriter.getI64IntegerAttr(dim));
    } else {
      back = ReorderOp::create(rewriter, t->getLoc(), oldType, r);
    }
    if (auto reason = t->getAttr(kReasonAttr))
      back->setAttr(kReasonAttr, reason);
    replacements.push_back(back->getResult(0));
  }
  records.push_back({opName(t).substr(3), locText(t->getLoc()), "sunk past " + opName(user)});
  rewriter.replaceOp(user, replacements);
  return success();
}

/// A rewrite that records what it elided for the report.
template <typename OpTy> struct RecordingPattern : OpRewritePattern<OpTy> {
  RecordingPattern(MLIRContext *ctx, Records &records)
      : OpRewritePattern<OpTy>(ctx), records(records) {}
  Records &records;
};

/// Sinks an all-gather or a reorder when every user accepts the layout before
/// it (now, or once its own operands have sunk): the transition then happens
/// later, or not at all, on every path.
template <typename OpTy> struct SinkTransition : RecordingPattern<OpTy> {
  using RecordingPattern<OpTy>::RecordingPattern;
  LogicalResult matchAndRewrite(OpTy op, PatternRewriter &rewriter) const override {
    SmallVector<Operation *> users(op.getResult().getUsers());
    if (users.empty())
      return failure();
    for (Operation *user : users)
      if (!acceptsSplitLater(op, user))
        return failure();
    for (Operation *user : users)
      if (succeeded(sinkPast(op, user, rewriter, this->records)))
        return success();
    return failure();
  }
};

/// all_gather(x) -> all_gather on the same dimension => one all_gather.
struct MergeGathers : RecordingPattern<AllGatherOp> {
  using RecordingPattern::RecordingPattern;
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
    records.push_back({"all_gather", locText(inner.getLoc()), "merged with the next all_gather"});
    rewriter.replaceOp(op, merged.getResult());
    rewriter.eraseOp(inner);
    return success();
  }
};

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

/// all_reduce over A -> slice over B within A => reduce_scatter over B (+ an
/// all_reduce over the rest of A).
struct AllReduceSlice : RecordingPattern<SliceOp> {
  using RecordingPattern::RecordingPattern;
  LogicalResult matchAndRewrite(SliceOp op, PatternRewriter &rewriter) const override {
    // With other users the all-reduce would stay and both would run.
    auto reduce = op.getX().getDefiningOp<AllReduceOp>();
    if (!reduce || !reduce.getResult().hasOneUse())
      return failure();
    Axes all = axesOf(reduce.getAxes()), sliced = axesOf(op.getAxes());
    for (const auto &a : sliced)
      if (std::find(all.begin(), all.end(), a) == all.end())
        return failure();
    Layout in = toLayout(getLayout(reduce.getX()));
    Layout scattered = in;
    for (const auto &a : sliced)
      scattered.partial.erase(std::find(scattered.partial.begin(), scattered.partial.end(), a));
    auto &d = scattered.dims[op.getDim()];
    bool wasWhole = d.empty();
    d.insert(d.end(), sliced.begin(), sliced.end());
    Layout target = toLayout(getLayout(op.getResult()));
    if (wasWhole && target.orderDim == (int64_t)op.getDim()) {
      scattered.orderDim = target.orderDim;
      scattered.order = target.order;
    }
    SmallVector<StringRef> refs(sliced.begin(), sliced.end());
    Value v =
        ReduceScatterOp::create(rewriter, reduce.getLoc(), retype(reduce.getX(), scattered),
                                reduce.getX(), rewriter.getStrArrayAttr(refs), op.getDimAttr());
    Axes rest;
    for (const auto &a : all)
      if (std::find(sliced.begin(), sliced.end(), a) == sliced.end())
        rest.push_back(a);
    if (!rest.empty()) {
      SmallVector<StringRef> restRefs(rest.begin(), rest.end());
      v = AllReduceOp::create(rewriter, reduce.getLoc(), op.getResult().getType(), v,
                              rewriter.getStrArrayAttr(restRefs));
    }
    if (v.getType() != op.getResult().getType())
      return failure();
    records.push_back(
        {"all_reduce", locText(reduce.getLoc()), "all_reduce+slice -> reduce_scatter"});
    rewriter.replaceOp(op, v);
    return success();
  }
};

/// An all-reduce whose users all accept its result split on the sequence =>
/// reduce-scatter + an all-gather that then sinks to where it is needed.
struct SplitAllReduce : RecordingPattern<AllReduceOp> {
  using RecordingPattern::RecordingPattern;
  LogicalResult matchAndRewrite(AllReduceOp op, PatternRewriter &rewriter) const override {
    Layout out = toLayout(getLayout(op.getResult()));
    auto type = op.getResult().getType();
    if (type.getRank() < 2 || op.getResult().use_empty())
      return failure();
    const int64_t seq = 1;
    Axes axes = axesOf(op.getAxes());
    Layout split = out;
    split.dims[seq].insert(split.dims[seq].end(), axes.begin(), axes.end());
    MeshOp mesh = lookupMesh(op, getLayout(op.getResult()));
    shardline::Mesh m = toMesh(mesh);
    std::vector<int64_t> shape(type.getShape().begin(), type.getShape().end());
    if (!shardline::verifyLayout(split, &m, &shape).empty())
      return failure();
    for (Operation *user : op.getResult().getUsers()) {
      llvm::DenseMap<Value, Layout> replace{{op.getResult(), split}};
      if (!derive(user, replace))
        return failure();
    }
    auto rs = ReduceScatterOp::create(rewriter, op.getLoc(), retype(op.getResult(), split),
                                      op.getX(), op.getAxes(), rewriter.getI64IntegerAttr(seq));
    auto ag = AllGatherOp::create(rewriter, op.getLoc(), type, rs.getResult(), op.getAxes(),
                                  rewriter.getI64IntegerAttr(seq));
    for (Operation *created : {rs.getOperation(), ag.getOperation()})
      if (auto reason = op->getAttr(kReasonAttr))
        created->setAttr(kReasonAttr, reason);
    records.push_back(
        {"all_reduce", locText(op.getLoc()), "split into reduce_scatter + all_gather"});
    rewriter.replaceOp(op, ag.getResult());
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

struct SLElideGathers : mlir::sl::impl::SLElideGathersBase<SLElideGathers> {
  using SLElideGathersBase::SLElideGathersBase;
  void runOnOperation() override {
    ModuleOp module = getOperation();
    Records records;
    RewritePatternSet patterns(&getContext());
    patterns.add<SinkTransition<AllGatherOp>, SinkTransition<ReorderOp>, MergeGathers,
                 CancelGatherSlice, AllReduceSlice, SplitAllReduce, CancelReorders, CancelAllToAlls,
                 GatherPastAllToAll>(&getContext(), records);
    if (failed(applyPatternsGreedily(module, std::move(patterns))))
      return signalPassFailure();
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
