//===- EndsOps.cpp - the model's ends: embedding, LM head, loss -------------===//
//
// Vocab parallelism: the embedding table and the LM head split the vocabulary,
// and cross-entropy takes the vocab axes as its remedy.
//
//===----------------------------------------------------------------------===//

#include "OpUtils.h"

using namespace mlir;
using namespace mlir::sl;
using namespace mlir::sl::detail;

LogicalResult EmbeddingOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getIds(), "ids", 2)) ||
      failed(checkRank(*this, getTable(), "table", 2)) ||
      failed(checkRank(*this, getResult(), "result", 3)))
    return failure();
  auto ids = shape(getIds());
  if (failed(checkDim(*this, getResult(), "result", 0, ids[0], "batch of ids")) ||
      failed(checkDim(*this, getResult(), "result", 1, ids[1], "sequence of ids")) ||
      failed(checkDim(*this, getResult(), "result", 2, shape(getTable())[1], "table width")))
    return failure();
  return success();
}

ShardingRule EmbeddingOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), v = r.factor("v", FactorKind::Contracted), h = r.factor("h");
  r.operand("ids", {b, s});
  r.operand("table", {v, h});
  r.result("result", {b, s, h});
  return r.rule;
}

LogicalResult LMHeadOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getX(), "x", 3)) ||
      failed(checkRank(*this, getWeight(), "weight", 2)))
    return failure();
  auto x = shape(getX()), w = shape(getWeight());
  if (x[2] != w[0])
    return emitOpError("hidden sizes differ: x has ") << x[2] << ", weight has " << w[0];
  SmallVector<int64_t> want{x[0], x[1], w[1]};
  if (getResult().getType().getShape() != ArrayRef<int64_t>(want))
    return emitOpError("result must be [batch, seq, vocab]");
  return success();
}

ShardingRule LMHeadOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), h = r.factor("h", FactorKind::Contracted), v = r.factor("v");
  r.operand("x", {b, s, h});
  r.operand("weight", {h, v});
  r.result("logits", {b, s, v});
  r.rule.partial = PartialRule::One;
  return r.rule;
}

LogicalResult CrossEntropyOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) ||
      failed(checkRank(*this, getLogits(), "logits", 3)) ||
      failed(checkRank(*this, getLabels(), "labels", 2)) ||
      failed(checkRank(*this, getLoss(), "loss", 0)))
    return failure();
  auto l = shape(getLogits());
  if (shape(getLabels()) != l.take_front(2))
    return emitOpError("labels must be [batch, seq] of the logits");
  // The max and sum are all-reduced over vocab_axes: an axis that does not
  // split the vocabulary would count every logit once per rank.
  LayoutAttr layout = getLayout(getLogits());
  if (layout && !getVocabAxes().empty()) {
    SmallVector<StringRef> want;
    for (Attribute a : getVocabAxes())
      want.push_back(cast<StringAttr>(a).getValue());
    if (layout.getDimAxes(2) != want)
      return emitOpError("vocab_axes must be the axes that split the logits' vocabulary, ")
             << shardline::formatAxes(toLayout(layout).dims[2]);
  }
  return success();
}

ShardingRule CrossEntropyOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), v = r.factor("v");
  r.mixing(v, Remedy::VocabParallel, getVocabAxes());
  r.operand("logits", {b, s, v});
  r.operand("labels", {b, s});
  r.result("loss", {});
  r.rule.reducesToScalar = true;
  return r.rule;
}

//===----------------------------------------------------------------------===//
// Remedies and rank facts
//===----------------------------------------------------------------------===//

void EmbeddingOp::resolveRankFacts(const RankContext &ctx) {
  (*this)->setAttr(kVocabOffsetAttr, ctx.offset(getTable(), 0));
}

/// Logits split on the vocabulary: vocab-parallel cross-entropy over those axes.
FailureOr<Operation *> CrossEntropyOp::applyRemedy(RemedyContext &) {
  shardline::Layout l = layoutOrReplicated(getLogits());
  if (l.dims[2].empty())
    return getOperation();
  Builder b(getContext());
  setVocabAxesAttr(axesAttr(b.getContext(), l.dims[2]));
  (*this)->setAttr(kReasonAttr,
                   b.getStringAttr("logits split over " + shardline::formatAxes(l.dims[2]) +
                                   " on the vocabulary (vocab-parallel LM head)"));
  return getOperation();
}

void CrossEntropyOp::resolveRankFacts(const RankContext &ctx) {
  (*this)->setAttr(kVocabOffsetAttr, ctx.offset(getLogits(), 2));
  if (!getVocabAxes().empty())
    (*this)->setAttr(kGroupAttr, ctx.ranks(ctx.group(getVocabAxes())));
}

/// Vocab-parallel: three small per-token f32 vectors (max, sum of
/// exponentials, target logit), each all-reduced whole within the group.
int64_t CrossEntropyOp::sentBytesPerRank(const shardline::Mesh &mesh) {
  if (getVocabAxes().empty())
    return -1;
  std::vector<int64_t> logits = localShapeOf(getLogits(), mesh);
  int64_t tokens = logits.size() >= 2 ? logits[0] * logits[1] : 1;
  return shardline::saturatingMul(12 * (groupSize(mesh, getVocabAxes()) - 1), tokens);
}
