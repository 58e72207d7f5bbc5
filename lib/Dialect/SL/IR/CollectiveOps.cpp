//===- CollectiveOps.cpp - layout transitions and context-parallel exchanges ---===//
//
// Each collective checks that its result layout is its operand's after the
// movement, states its per-rank group and, where the movement fits one, the
// upstream shard collective that performs it.
//
//===----------------------------------------------------------------------===//

#include "OpUtils.h"

#include "shardline/Dialect/SL/IR/Relayout.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"

using namespace mlir;
using namespace mlir::sl;
using namespace mlir::sl::detail;

//===----------------------------------------------------------------------===//
// Layout transitions
//===----------------------------------------------------------------------===//

/// Common prelude: both sides annotated, valid, on one mesh, same element type.
static FailureOr<std::pair<shardline::Layout, shardline::Layout>>
verifyTransition(Operation *op, Value in, Value out, bool sameShape) {
  // Static shapes first: the layout checks divide the extents.
  if (!cast<RankedTensorType>(in.getType()).hasStaticShape() ||
      !cast<RankedTensorType>(out.getType()).hasStaticShape())
    return op->emitOpError("operand and result must have static shapes");
  if (failed(verifyValueLayouts(op)))
    return failure();
  LayoutAttr li = getLayout(in), lo = getLayout(out);
  if (!li || !lo)
    return op->emitOpError("operand and result must carry #sl.layout encodings");
  if (getElementTypeOrSelf(in.getType()) != getElementTypeOrSelf(out.getType()))
    return op->emitOpError("operand and result element types differ");
  if (sameShape && shape(in) != shape(out))
    return op->emitOpError("operand and result shapes differ");
  return std::pair{toLayout(li), toLayout(lo)};
}

static LogicalResult checkAxes(Operation *op, ArrayAttr axes) {
  if (axes.empty())
    return op->emitOpError("needs at least one axis");
  return success();
}

static LogicalResult checkDimIndex(Operation *op, int64_t dim, unsigned rank, StringRef name) {
  if (dim < 0 || dim >= (int64_t)rank)
    return op->emitOpError() << name << " " << dim << " is out of range for rank " << rank;
  return success();
}

static LogicalResult expectLayout(Operation *op, const shardline::Layout &got,
                                  const shardline::Layout &want) {
  if (got != want)
    return op->emitOpError() << "result layout " << got.str() << " does not match the expected "
                             << want.str();
  return success();
}

/// Removes `axes` from the end of dimension `dim`'s split, or explains why not.
static LogicalResult dropSuffix(Operation *op, shardline::Layout &l, int64_t dim,
                                const std::vector<std::string> &axes) {
  auto &d = l.dims[dim];
  if (d.size() < axes.size() || !std::equal(axes.begin(), axes.end(), d.end() - axes.size()))
    return op->emitOpError() << "dimension " << dim << " is split over " << shardline::formatAxes(d)
                             << ", which does not end with " << shardline::formatAxes(axes);
  d.resize(d.size() - axes.size());
  if (d.empty() && l.orderDim == dim)
    l.orderDim = -1;
  return success();
}

/// The checks of a transition along one dimension over `axes` (all_gather,
/// reduce_scatter, slice): same shapes, known axes, a dimension in range.
static FailureOr<std::pair<shardline::Layout, shardline::Layout>>
verifyAlongDim(Operation *op, Value x, Value result, ArrayAttr axes, int64_t dim) {
  auto ls = verifyTransition(op, x, result, true);
  if (failed(ls) || failed(checkAxes(op, axes)) ||
      failed(checkDimIndex(op, dim, shape(x).size(), "dim")))
    return failure();
  return ls;
}

LogicalResult RelayoutOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  return failure(failed(verifyTransition(*this, getX(), getResult(), true)));
}

LogicalResult AllGatherOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  auto ls = verifyAlongDim(*this, getX(), getResult(), getAxes(), (int64_t)getDim());
  if (failed(ls))
    return failure();
  shardline::Layout want = ls->first;
  if (failed(dropSuffix(*this, want, (int64_t)getDim(), axisNames(getAxes()))))
    return failure();
  return expectLayout(*this, ls->second, want);
}

static LogicalResult dropPartial(Operation *op, shardline::Layout &l,
                                 const std::vector<std::string> &axes) {
  for (const auto &a : axes) {
    auto it = std::find(l.partial.begin(), l.partial.end(), a);
    if (it == l.partial.end())
      return op->emitOpError() << "operand is not a pending sum over '" << a << "'";
    l.partial.erase(it);
  }
  return success();
}

LogicalResult ReduceScatterOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  auto ls = verifyAlongDim(*this, getX(), getResult(), getAxes(), (int64_t)getDim());
  if (failed(ls))
    return failure();
  shardline::Layout want = ls->first;
  auto axes = axisNames(getAxes());
  if (failed(dropPartial(*this, want, axes)))
    return failure();
  auto &d = want.dims[(int64_t)getDim()];
  d.insert(d.end(), axes.begin(), axes.end());
  if (ls->second.orderDim == (int64_t)getDim() && d.size() == axes.size()) {
    want.orderDim = (int64_t)getDim();
    want.order = ls->second.order;
  }
  return expectLayout(*this, ls->second, want);
}

LogicalResult AllReduceOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  auto ls = verifyTransition(*this, getX(), getResult(), true);
  if (failed(ls) || failed(checkAxes(*this, getAxes())))
    return failure();
  shardline::Layout want = ls->first;
  if (failed(dropPartial(*this, want, axisNames(getAxes()))))
    return failure();
  return expectLayout(*this, ls->second, want);
}

/// `want` with dimension `dim` further split over `axes` (minor to what
/// splits it already). A dimension that becomes split may take either chunk
/// order: the result's (`got`) is accepted.
static void splitFurther(shardline::Layout &want, int64_t dim, const std::vector<std::string> &axes,
                         const shardline::Layout &got) {
  auto &d = want.dims[dim];
  bool wasWhole = d.empty();
  d.insert(d.end(), axes.begin(), axes.end());
  if (wasWhole && got.orderDim == dim) {
    want.orderDim = dim;
    want.order = got.order;
  }
}

LogicalResult AllToAllOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  auto ls = verifyTransition(*this, getX(), getResult(), true);
  unsigned rank = shape(getX()).size();
  if (failed(ls) || failed(checkAxes(*this, getAxes())) ||
      failed(checkDimIndex(*this, (int64_t)getSplitDim(), rank, "split_dim")) ||
      failed(checkDimIndex(*this, (int64_t)getConcatDim(), rank, "concat_dim")))
    return failure();
  if ((int64_t)getSplitDim() == (int64_t)getConcatDim())
    return emitOpError("split_dim and concat_dim must differ");
  shardline::Layout want = ls->first;
  auto axes = axisNames(getAxes());
  if (failed(dropSuffix(*this, want, (int64_t)getConcatDim(), axes)))
    return failure();
  splitFurther(want, (int64_t)getSplitDim(), axes, ls->second);
  return expectLayout(*this, ls->second, want);
}

LogicalResult SliceOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  auto ls = verifyAlongDim(*this, getX(), getResult(), getAxes(), (int64_t)getDim());
  if (failed(ls))
    return failure();
  shardline::Layout want = ls->first;
  splitFurther(want, (int64_t)getDim(), axisNames(getAxes()), ls->second);
  return expectLayout(*this, ls->second, want);
}

LogicalResult ReorderOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  auto ls = verifyTransition(*this, getX(), getResult(), true);
  if (failed(ls))
    return failure();
  const auto &[in, out] = *ls;
  if (in.dims != out.dims || in.partial != out.partial)
    return emitOpError("may change only the chunk order; splits and pending sums must stay");
  return success();
}

LogicalResult HaloOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  auto ls = verifyTransition(*this, getX(), getResult(), false);
  if (failed(ls) || failed(checkAxes(*this, getAxes())) ||
      failed(checkRank(*this, getX(), "x", 3)) ||
      failed(checkRank(*this, getResult(), "result", 3)))
    return failure();
  if (getWidth() < 1)
    return emitOpError("width must be positive");
  const auto &[in, out] = *ls;
  if (in.dims[1] != axisNames(getAxes()))
    return emitOpError("axes must be the axes that split x's sequence, ")
           << shardline::formatAxes(in.dims[1]);
  if (!in.partial.empty())
    return emitOpError("x cannot be a pending sum");
  int64_t chunks = numChunks(*this, getX(), getAxes());
  auto x = shape(getX());
  // A halo is the tokens before each chunk, so it never needs more than the
  // whole sequence.
  int64_t haloTokens;
  if (getWidth() > x[1])
    return emitOpError("width ") << getWidth() << " exceeds the sequence length " << x[1];
  if (__builtin_mul_overflow(chunks, (int64_t)getWidth(), &haloTokens))
    return emitOpError("width ") << getWidth() << " times " << chunks << " chunks overflows int64";
  SmallVector<int64_t> want{x[0], haloTokens, x[2]};
  if (shape(getResult()) != ArrayRef<int64_t>(want))
    return emitOpError("result must be [batch, ")
           << chunks << " chunks * " << getWidth() << ", channels]";
  return expectLayout(*this, out, in);
}

LogicalResult HaloAddOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  auto ls = verifyTransition(*this, getGrad(), getResult(), false);
  if (failed(ls) || failed(checkAxes(*this, getAxes())) ||
      failed(checkRank(*this, getX(), "x", 3)) || failed(checkRank(*this, getGrad(), "grad", 3)))
    return failure();
  if (getWidth() < 1)
    return emitOpError("width must be positive");
  const auto &[in, out] = *ls;
  if (out.dims[1] != axisNames(getAxes()))
    return emitOpError("axes must be the axes that split x's sequence, ")
           << shardline::formatAxes(out.dims[1]);
  if (!in.partial.empty())
    return emitOpError("grad cannot be a pending sum");
  if (in != out)
    return emitOpError("grad must be laid out like x, not ") << in.str();
  int64_t chunks = numChunks(*this, getX(), getAxes());
  auto x = shape(getX());
  if (getWidth() > x[1])
    return emitOpError("width ") << getWidth() << " exceeds the sequence length " << x[1];
  SmallVector<int64_t> want{x[0], chunks * (int64_t)getWidth(), x[2]};
  if (shape(getGrad()) != ArrayRef<int64_t>(want))
    return emitOpError("grad must be [batch, ")
           << chunks << " chunks * " << getWidth() << ", channels], the halo of x";
  return success();
}

/// The exchange's per-chunk values: `states` [C, ...] and `decays` (a prefix
/// of its shape), both split over `axes` along the chunk dimension, the
/// decays like the states' leading dimensions; `what` names the states,
/// `values` all operands and results.
static LogicalResult verifySummaries(Operation *op, Value statesV, Value decaysV,
                                     ArrayAttr axesAttr, StringRef what, StringRef values) {
  if (failed(verifyStaticAndElementTypes(op)) || failed(verifyValueLayouts(op)))
    return failure();
  auto annotated = [](Value v) { return bool(getLayout(v)); };
  if (!llvm::all_of(op->getOperands(), annotated) || !llvm::all_of(op->getResults(), annotated))
    return op->emitOpError() << values << " must carry #sl.layout encodings";
  auto s = shape(statesV), d = shape(decaysV);
  if (s.size() < 2 || d.size() < 2 || d.size() > s.size() || s.take_front(d.size()) != d)
    return op->emitOpError("decays must be [chunks, ...] and a prefix of the ")
           << what << "' shape";
  if (failed(checkAxes(op, axesAttr)))
    return failure();
  auto axes = axisNames(axesAttr);
  shardline::Layout states = toLayout(getLayout(statesV)), decays = toLayout(getLayout(decaysV));
  if (states.dims[0] != axes || decays.dims[0] != axes)
    return op->emitOpError() << what << " and decays must be split over "
                             << shardline::formatAxes(axes) << " along the chunk dimension";
  if (!states.partial.empty() || !decays.partial.empty())
    return op->emitOpError("summaries cannot be pending sums");
  // Each rank combines the decay and state of the same chunks and elements.
  for (size_t i = 0; i < decays.dims.size(); ++i)
    if (decays.dims[i] != states.dims[i] || decays.dimOrder(i) != states.dimOrder(i))
      return op->emitOpError("decays must be split like the ")
             << what << "' leading dimensions; dimension " << i << " of the " << what
             << " is split over " << shardline::formatAxes(states.dims[i])
             << (states.dimOrder(i) == shardline::ChunkOrder::Zigzag ? " zigzag" : "");
  return success();
}

LogicalResult ScanStateExchangeOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  return verifySummaries(*this, getStates(), getDecays(), getAxes(), "states",
                         "states, decays and the result");
}

LogicalResult ScanStateExchangeGradOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  return verifySummaries(*this, getInit(), getDecays(), getAxes(), "initial states",
                         "decays, init, dinit and the results");
}

//===----------------------------------------------------------------------===//
// Rank facts and upstream collectives
//===----------------------------------------------------------------------===//

// A collective that stays an sl op (its movement fits no shard op) runs on
// the group of its axes.
#define SL_COLLECTIVE_GROUP(OP)                                                                    \
  void OP::resolveRankFacts(const RankContext &ctx) {                                              \
    (*this)->setAttr(kGroupAttr, ctx.ranks(ctx.group(getAxes())));                                 \
  }
SL_COLLECTIVE_GROUP(AllGatherOp)
SL_COLLECTIVE_GROUP(ReduceScatterOp)
SL_COLLECTIVE_GROUP(AllReduceOp)
SL_COLLECTIVE_GROUP(AllToAllOp)
SL_COLLECTIVE_GROUP(SliceOp)
#undef SL_COLLECTIVE_GROUP

/// `op` as upstream's collective `ShardOp` along its dimension (the shard
/// ops take the grid, its axes, the value, any `extra` operands and the
/// dimension), or null when the movement is not that on this rank's mesh.
template <typename ShardOp, typename SlOp, typename... Extra>
static Operation *alongOneDim(SlOp op, OpBuilder &b, const RankContext &ctx, bool gathers,
                              Extra... extra) {
  if (!ctx.alongOneDim(op.getX(), op.getResult(), op.getDim(), op.getAxes(), gathers))
    return nullptr;
  return ShardOp::create(b, op.getLoc(), ctx.localType(op.getResult()), ctx.getGridName(),
                         ctx.gridAxes(op.getAxes()), op.getX(), extra..., APInt(64, op.getDim()));
}

Operation *AllGatherOp::buildShardCollective(OpBuilder &b, const RankContext &ctx) {
  return alongOneDim<shard::AllGatherOp>(*this, b, ctx, /*gathers=*/true);
}

Operation *ReduceScatterOp::buildShardCollective(OpBuilder &b, const RankContext &ctx) {
  return alongOneDim<shard::ReduceScatterOp>(*this, b, ctx, /*gathers=*/false,
                                             shard::ReductionKind::Sum);
}

Operation *SliceOp::buildShardCollective(OpBuilder &b, const RankContext &ctx) {
  return alongOneDim<shard::AllSliceOp>(*this, b, ctx, /*gathers=*/false);
}

Operation *AllReduceOp::buildShardCollective(OpBuilder &b, const RankContext &ctx) {
  if (!ctx.keepsIndices(getX(), getResult()))
    return nullptr;
  return shard::AllReduceOp::create(b, getLoc(), ctx.localType(getResult()), ctx.getGridName(),
                                    ctx.gridAxes(getAxes()), getX(), shard::ReductionKind::Sum);
}

Operation *AllToAllOp::buildShardCollective(OpBuilder &b, const RankContext &ctx) {
  if (!ctx.exchanges(getX(), getResult(), getSplitDim(), getConcatDim(), getAxes()))
    return nullptr;
  return shard::AllToAllOp::create(b, getLoc(), ctx.localType(getResult()), ctx.getGridName(),
                                   ctx.gridAxes(getAxes()), getX(), APInt(64, getSplitDim()),
                                   APInt(64, getConcatDim()));
}

/// The halo's tokens and group, which its dual shares: the same rows travel
/// back.
static void setHaloFacts(Operation *op, const RankContext &ctx, Value x, ArrayAttr axes) {
  op->setAttr(kTokensAttr, ctx.runs(x, 1));
  op->setAttr(kGroupAttr, ctx.ranks(ctx.group(axes)));
}

void HaloOp::resolveRankFacts(const RankContext &ctx) {
  setHaloFacts(*this, ctx, getX(), getAxes());
}

void HaloAddOp::resolveRankFacts(const RankContext &ctx) {
  setHaloFacts(*this, ctx, getX(), getAxes());
}

ValueNames HaloAddOp::getValueNames() { return {{"grad", "x"}, {"result"}}; }

ValueNames ScanStateExchangeOp::getValueNames() { return {{"states", "decays"}, {"result"}}; }

/// The chunks this rank holds and the group; the dual exchanges the same
/// chunks' values the other way.
static void setExchangeFacts(Operation *op, const RankContext &ctx, Value chunks, ArrayAttr axes) {
  op->setAttr(kChunksAttr, ctx.runs(chunks, 0));
  op->setAttr(kGroupAttr, ctx.ranks(ctx.group(axes)));
}

void ScanStateExchangeOp::resolveRankFacts(const RankContext &ctx) {
  setExchangeFacts(*this, ctx, getResult(), getAxes());
}

void ScanStateExchangeGradOp::resolveRankFacts(const RankContext &ctx) {
  setExchangeFacts(*this, ctx, getDstates(), getAxes());
}

ValueNames ScanStateExchangeGradOp::getValueNames() {
  return {{"decays", "init", "dinit"}, {"dstates", "ddecays"}};
}

//===----------------------------------------------------------------------===//
// Bytes one rank sends (docs/report.md)
//===----------------------------------------------------------------------===//

/// The step the op performs, priced as planRelayout's steps are.
template <typename OpTy>
static int64_t transitionBytes(OpTy op, RelayoutStep::Kind kind, const shardline::Mesh &mesh,
                               int64_t dim = -1) {
  RelayoutStep step{
      kind, toLayout(getLayout(op.getX())), toLayout(getLayout(op.getResult())), {}, dim};
  if constexpr (!std::is_same_v<OpTy, ReorderOp>)
    step.axes = axisNames(op.getAxes());
  return stepBytes(step, shapeVec(op.getX()), elementBytesOf(op.getX().getType()), mesh);
}

int64_t AllGatherOp::sentBytesPerRank(const shardline::Mesh &mesh) {
  return transitionBytes(*this, RelayoutStep::Kind::AllGather, mesh, (int64_t)getDim());
}

int64_t ReduceScatterOp::sentBytesPerRank(const shardline::Mesh &mesh) {
  return transitionBytes(*this, RelayoutStep::Kind::ReduceScatter, mesh, (int64_t)getDim());
}

int64_t AllReduceOp::sentBytesPerRank(const shardline::Mesh &mesh) {
  return transitionBytes(*this, RelayoutStep::Kind::AllReduce, mesh);
}

int64_t AllToAllOp::sentBytesPerRank(const shardline::Mesh &mesh) {
  return transitionBytes(*this, RelayoutStep::Kind::AllToAll, mesh, (int64_t)getSplitDim());
}

int64_t ReorderOp::sentBytesPerRank(const shardline::Mesh &mesh) {
  return transitionBytes(*this, RelayoutStep::Kind::Reorder, mesh);
}

/// The tokens before each local chunk that another rank holds, most over
/// ranks, times the bytes of one token row (batch x channels). sl.halo_add
/// sends each of those rows back, so the count is its too.
static int64_t haloBytes(Value x, int64_t width, const shardline::Mesh &mesh) {
  shardline::Layout in = toLayout(getLayout(x));
  std::vector<int64_t> global = shapeVec(x);
  std::vector<int64_t> local = shardline::localShape(in, mesh, global);
  int64_t most = 0;
  for (int64_t r = 0; r < mesh.numRanks(); ++r) {
    std::vector<shardline::TokenRun> mine = shardline::tokenRuns(in, mesh, global, 1, r);
    int64_t remote = 0;
    for (const shardline::TokenRun &chunk : shardline::sequenceChunks(in, mesh, global, 1, r)) {
      int64_t from = std::max<int64_t>(0, chunk.start - width);
      shardline::TokenRun before{from, chunk.start - from};
      remote += before.length - shardline::overlap({before}, mine);
    }
    most = std::max(most, remote);
  }
  return shardline::saturatingMul(most, localBytes(x, mesh) / std::max<int64_t>(1, local[1]));
}

int64_t HaloOp::sentBytesPerRank(const shardline::Mesh &mesh) {
  return haloBytes(getX(), getWidth(), mesh);
}

int64_t HaloAddOp::sentBytesPerRank(const shardline::Mesh &mesh) {
  return haloBytes(getX(), getWidth(), mesh);
}

//===----------------------------------------------------------------------===//
// Gradients
//===----------------------------------------------------------------------===//

/// `dual`, the backward collective of `fwd`, in fwd's block and family with
/// the reason `why`.
static void stampDual(Operation *fwd, Operation *dual, StringRef why) {
  for (StringRef a : {kBlockAttr.data(), kFamilyAttr.data()})
    if (Attribute v = fwd->getAttr(a))
      dual->setAttr(a, v);
  dual->setAttr(kReasonAttr, StringAttr::get(fwd->getContext(),
                                             "gradient of " + opLabel(fwd) + ": " + why.str()));
}

/// Each halo row's gradient goes back to the token it was read from
/// (sl.halo_add). The dual is a collective with no sharding rule, so it is
/// built here, where sl-autodiff appends the backward (before the return),
/// laid out like x.
LogicalResult HaloOp::buildGradient(GradientBuilder &g) {
  FailureOr<Value> dy = g.resultGradient(0);
  if (failed(dy) || !*dy)
    return failure(failed(dy));
  OpBuilder b((*this)->getBlock()->getTerminator());
  auto add =
      HaloAddOp::create(b, getLoc(), getX().getType(), *dy, getX(), getAxesAttr(), getWidthAttr());
  stampDual(*this, add, "each halo row's gradient back to its token's rank");
  g.contribute(0, add.getResult());
  return success();
}

/// Each chunk's initial-state gradient flows to the summaries of the chunks
/// before it (sl.scan_state_exchange_grad), built as the halo's dual is.
LogicalResult ScanStateExchangeOp::buildGradient(GradientBuilder &g) {
  FailureOr<Value> dinit = g.resultGradient(0);
  if (failed(dinit) || !*dinit)
    return failure(failed(dinit));
  OpBuilder b((*this)->getBlock()->getTerminator());
  auto dual =
      ScanStateExchangeGradOp::create(b, getLoc(), getStates().getType(), getDecays().getType(),
                                      getDecays(), getResult(), *dinit, getAxesAttr());
  stampDual(*this, dual,
            "each chunk's initial-state gradient back to the earlier chunks' "
            "summaries (the reverse scan)");
  for (unsigned i = 0; i < 2; ++i)
    if (g.needsGradient(i))
      g.contribute(i, dual->getResult(i));
  return success();
}

/// An all-gather of every chunk's state and decay over the group.
int64_t ScanStateExchangeOp::sentBytesPerRank(const shardline::Mesh &mesh) {
  return shardline::saturatingMul(groupSize(mesh, getAxes()) - 1,
                                  localBytes(getStates(), mesh) + localBytes(getDecays(), mesh));
}

/// An all-gather of every chunk's initial-state gradient and decay: the
/// forward's bytes.
int64_t ScanStateExchangeGradOp::sentBytesPerRank(const shardline::Mesh &mesh) {
  return shardline::saturatingMul(groupSize(mesh, getAxes()) - 1,
                                  localBytes(getDinit(), mesh) + localBytes(getDecays(), mesh));
}
