//===- AttentionOps.cpp - attention (A): rope, attention, ring attention ----===//
//
// Attention's key positions are sequence-mixing; the remedy is chosen by
// cp_comm (ring attention, an all-gather of K and V, or all-to-all
// sequence<->heads).
//
//===----------------------------------------------------------------------===//

#include "OpUtils.h"

using namespace mlir;
using namespace mlir::sl;
using namespace mlir::sl::detail;

LogicalResult RopeOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getX(), "x", 3)))
    return failure();
  int64_t d = getHeadDim();
  if (d <= 0 || d % 2 != 0)
    return emitOpError("head_dim must be positive and even, got ") << d;
  return checkDivides(*this, shape(getX())[2], d, "channels by head_dim");
}

ShardingRule RopeOp::getShardingRule() {
  RuleBuilder r;
  auto x = shape(getX());
  int64_t heads = x.size() == 3 && getHeadDim() > 0 ? x[2] / getHeadDim() : 0;
  int b = r.factor("b"), s = r.seq(), c = r.factor("heads", FactorKind::Free, heads);
  r.operand("x", {b, s, c});
  r.result("result", {b, s, c});
  r.rule.partial = PartialRule::One;
  return r.rule;
}

LogicalResult AttentionOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  return verifyAttentionShapes(*this);
}

ShardingRule AttentionOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), t = r.seq("t"),
      h = r.factor("heads", FactorKind::Free, getKvHeads());
  // A split of the heads may not cut a group of query heads sharing a kv head.
  r.rule.factors[h].granuleName = "kv heads";
  r.mixing(t, Remedy::KVExchange);
  r.operand("q", {b, s, h});
  r.operand("k", {b, t, h});
  r.operand("v", {b, t, h});
  r.result("result", {b, s, h});
  return r.rule;
}

/// The checks sl.ring_attention and its backward share.
template <typename OpTy> static LogicalResult verifyRing(OpTy op) {
  if (failed(verifyAttentionShapes(op)))
    return failure();
  if (shape(op.getK())[1] != shape(op.getQ())[1])
    return op.emitOpError("q and k must have the same sequence length");
  if (op.getAxes().empty())
    return op.emitOpError("needs at least one ring axis");
  // Every rank of the ring must hold its own block of keys, or the merge
  // counts some keys more than once.
  if (LayoutAttr l = getLayout(op.getQ())) {
    SmallVector<StringRef> want;
    for (Attribute a : op.getAxes())
      want.push_back(cast<StringAttr>(a).getValue());
    if (l.getDimAxes(1) != want)
      return op.emitOpError("axes must be the axes that split the sequence of q, ")
             << shardline::formatAxes(toLayout(l).dims[1]);
  }
  return success();
}

LogicalResult RingAttentionOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  return verifyRing(*this);
}

/// b, heads free (in whole kv heads), the sequence exchanged around the ring
/// over `axes`; q, k, v and then `extra` operands, and `results`, all
/// [b, s, heads].
static ShardingRule ringRule(int64_t kvHeads, ArrayAttr axes, ArrayRef<StringRef> extra,
                             ArrayRef<StringRef> results) {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), h = r.factor("heads", FactorKind::Free, kvHeads);
  r.rule.factors[h].granuleName = "kv heads";
  r.mixing(s, Remedy::KVExchange, axes);
  for (StringRef name : {"q", "k", "v"})
    r.operand(name.str(), {b, s, h});
  for (StringRef name : extra)
    r.operand(name.str(), {b, s, h});
  for (StringRef name : results)
    r.result(name.str(), {b, s, h});
  return r.rule;
}

ShardingRule RingAttentionOp::getShardingRule() {
  return ringRule(getKvHeads(), getAxes(), {}, {"result"});
}

LogicalResult RingAttentionGradOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  return verifyRing(*this);
}

ShardingRule RingAttentionGradOp::getShardingRule() {
  return ringRule(getKvHeads(), getAxes(), {"dy"}, {"dq", "dk", "dv"});
}

//===----------------------------------------------------------------------===//
// Remedies and rank facts
//===----------------------------------------------------------------------===//

void mlir::sl::detail::setTokenFacts(Operation *op, const RankContext &ctx, Value x) {
  op->setAttr(kTokensAttr, ctx.runs(x, 1));
}

void mlir::sl::detail::setAttentionFacts(Operation *op, const RankContext &ctx, Value q, Value k) {
  setTokenFacts(op, ctx, q);
  op->setAttr(kKeyTokensAttr, ctx.runs(k, 1));
}

void RopeOp::resolveRankFacts(const RankContext &ctx) { setTokenFacts(*this, ctx, getX()); }

bool AttentionOp::canCarryRemedy(const shardline::Factor &factor, RemedyContext &ctx) {
  // Only the ring keeps the keys split: under allgather they are gathered
  // (the factor gives up its split), under a2a they are no longer split.
  return factor.remedy == Remedy::KVExchange && ctx.getCPComm() == CPComm::Ring;
}

/// Under a2a context parallelism, q, k and v trade their sequence split for a
/// split of the heads before attention.
LogicalResult AttentionOp::prepareRemedy(RemedyContext &ctx) {
  if (ctx.getCPComm() != CPComm::A2A)
    return success();
  for (unsigned i = 0; i < 3; ++i) {
    Value v = (*this)->getOperand(i);
    shardline::Layout l = layoutOrReplicated(v);
    if (l.dims[1].empty())
      continue;
    shardline::Layout to = l;
    std::vector<std::string> moved = l.dims[1];
    to.dims[1].clear();
    if (to.orderDim == 1)
      to.orderDim = -1;
    to.dims[2].insert(to.dims[2].end(), moved.begin(), moved.end());
    int64_t ways = ctx.getMesh().product(to.dims[2]);
    if (getKvHeads() % ways != 0)
      return emitOpError("a2a context parallelism splits the heads over ")
             << shardline::formatAxes(to.dims[2]) << " (" << ways
             << " ways), which does not divide kv_heads = " << getKvHeads()
             << "; use cp_comm ring or allgather";
    (*this)->setOperand(i, ctx.relayout(v, to,
                                        "operand #" + std::to_string(i) + " of " + opLabel(*this) +
                                            ": a2a context parallelism moves the sequence split " +
                                            shardline::formatAxes(moved) + " to the heads"));
  }
  return success();
}

/// Keys still split over the sequence circulate around a ring.
FailureOr<Operation *> AttentionOp::applyRemedy(RemedyContext &ctx) {
  shardline::Layout k = layoutOrReplicated(getK());
  if (k.dims[1].empty())
    return getOperation();
  OpBuilder b(*this);
  auto ring = RingAttentionOp::create(
      b, getLoc(), getResult().getType(), getQ(), getK(), getV(), getHeadsAttr(), getKvHeadsAttr(),
      axesAttr(b.getContext(), k.dims[1]), getCausalAttr(), getScaleAttr());
  ring->setAttr(kReasonAttr, b.getStringAttr("keys split over " + shardline::formatAxes(k.dims[1]) +
                                             " (context parallelism, cp_comm ring)"));
  if (Attribute chosen = (*this)->getAttr(kCPCommAttr))
    ring->setAttr(kCPCommAttr, chosen);
  (*this)->replaceAllUsesWith(ring.getOperation());
  (*this)->erase();
  return ring.getOperation();
}

void AttentionOp::resolveRankFacts(const RankContext &ctx) {
  setAttentionFacts(*this, ctx, getQ(), getK());
}

/// The query tokens, the ring in order from this rank and each member's key
/// tokens (the forward and its backward alike).
static void setRingFacts(Operation *op, const RankContext &ctx, Value q, Value k, ArrayAttr axes) {
  op->setAttr(kTokensAttr, ctx.runs(q, 1));
  std::vector<int64_t> members = ctx.group(axes);
  std::rotate(members.begin(), std::find(members.begin(), members.end(), ctx.getRank()),
              members.end());
  op->setAttr(kRingAttr, ctx.ranks(members));
  SmallVector<Attribute> keys;
  for (int64_t m : members)
    keys.push_back(ctx.runs(k, 1, m));
  op->setAttr(kKeyTokensAttr, ArrayAttr::get(op->getContext(), keys));
}

void RingAttentionOp::resolveRankFacts(const RankContext &ctx) {
  setRingFacts(*this, ctx, getQ(), getK(), getAxes());
}

void RingAttentionGradOp::resolveRankFacts(const RankContext &ctx) {
  setRingFacts(*this, ctx, getQ(), getK(), getAxes());
}

/// Every rank passes its K and V blocks on in each of the n-1 steps.
int64_t RingAttentionOp::sentBytesPerRank(const shardline::Mesh &mesh) {
  return shardline::saturatingMul(groupSize(mesh, getAxes()) - 1,
                                  localBytes(getK(), mesh) + localBytes(getV(), mesh));
}

/// The recomputing pass sends the K, V block n - 1 times; the gradient pass
/// sends it n - 1 times more with its dK, dV (of the same size), and the
/// dK, dV once more to bring them home: (3n - 2) blocks of K and V.
int64_t RingAttentionGradOp::sentBytesPerRank(const shardline::Mesh &mesh) {
  return shardline::saturatingMul(3 * groupSize(mesh, getAxes()) - 2,
                                  localBytes(getK(), mesh) + localBytes(getV(), mesh));
}

//===----------------------------------------------------------------------===//
// Gradients
//===----------------------------------------------------------------------===//

/// The transpose of the rotation: rotation by the opposite angle.
LogicalResult RopeOp::buildGradient(GradientBuilder &g) {
  FailureOr<Value> dy = g.resultGradient(0);
  if (failed(dy) || !*dy)
    return failure(failed(dy));
  return g.give(0, g.buildOne("sl.rope_grad", {*dy}, getX(),
                              GradientBuilder::attrsOf(*this, {"head_dim", "theta"})));
}

/// dq from attention_grad; dk and dv from attention_grad_kv, pending sums
/// over the axes that split the queries (under allgather context
/// parallelism: the K, V gather's dual is then their reduce-scatter).
LogicalResult AttentionOp::buildGradient(GradientBuilder &g) {
  FailureOr<Value> dy = g.resultGradient(0);
  if (failed(dy) || !*dy)
    return failure(failed(dy));
  Value q = getQ(), k = getK(), v = getV();
  auto attrs = GradientBuilder::attrsOf(*this, {"heads", "kv_heads", "causal", "scale"});
  if (g.needsGradient(0) &&
      failed(g.give(0, g.buildOne("sl.attention_grad", {q, k, v, *dy}, q, attrs))))
    return failure();
  if (!g.needsGradient(1) && !g.needsGradient(2))
    return success();
  FailureOr<Operation *> kv = g.build("sl.attention_grad_kv", {q, k, v, *dy}, {k, v}, attrs);
  if (failed(kv))
    return failure();
  for (unsigned i = 1; i < 3; ++i)
    if (g.needsGradient(i))
      g.contribute(i, (*kv)->getResult(i - 1));
  return success();
}

/// dq, dk and dv from one sl.ring_attention_grad over the same ring: the
/// key blocks and their gradients circulate, so nothing is left pending.
LogicalResult RingAttentionOp::buildGradient(GradientBuilder &g) {
  FailureOr<Value> dy = g.resultGradient(0);
  if (failed(dy) || !*dy)
    return failure(failed(dy));
  Value q = getQ(), k = getK(), v = getV();
  FailureOr<Operation *> grad =
      g.build("sl.ring_attention_grad", {q, k, v, *dy}, {q, k, v},
              GradientBuilder::attrsOf(*this, {"heads", "kv_heads", "axes", "causal", "scale"}));
  if (failed(grad))
    return failure();
  (*grad)->setAttr(kReasonAttr, StringAttr::get(getContext(),
                                                "gradient of " + opLabel(*this) +
                                                    ": K, V and their gradients circulate around " +
                                                    shardline::formatAxes(axisNames(getAxes()))));
  for (unsigned i = 0; i < 3; ++i)
    if (g.needsGradient(i))
      g.contribute(i, (*grad)->getResult(i));
  return success();
}
