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

LogicalResult mlir::sl::detail::checkLogitsAndLabels(Operation *op, Value logits, Value labels) {
  if (failed(checkRank(op, logits, "logits", 3)) || failed(checkRank(op, labels, "labels", 2)))
    return failure();
  if (shape(labels) != shape(logits).take_front(2))
    return op->emitOpError("labels must be [batch, seq] of the logits");
  return success();
}

LogicalResult mlir::sl::detail::checkVocabAxes(Operation *op, Value logits, ArrayAttr vocabAxes) {
  // The max and sum are all-reduced over vocab_axes: an axis that does not
  // split the vocabulary would count every logit once per rank.
  LayoutAttr layout = getLayout(logits);
  if (!layout || vocabAxes.empty())
    return success();
  SmallVector<StringRef> want;
  for (Attribute a : vocabAxes)
    want.push_back(cast<StringAttr>(a).getValue());
  if (layout.getDimAxes(2) != want)
    return op->emitOpError("vocab_axes must be the axes that split the logits' vocabulary, ")
           << shardline::formatAxes(toLayout(layout).dims[2]);
  return success();
}

LogicalResult CrossEntropyOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  // The loss is of the logits' type or f32 (a 16-bit model's, as Megatron
  // computes it).
  if (failed(verifyStaticAndElementTypes(*this, getLoss())) ||
      failed(checkLogitsAndLabels(*this, getLogits(), getLabels())) ||
      failed(checkRank(*this, getLoss(), "loss", 0)))
    return failure();
  return checkVocabAxes(*this, getLogits(), getVocabAxes());
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

void mlir::sl::detail::setVocabOffsetFact(Operation *op, const RankContext &ctx, Value table) {
  op->setAttr(kVocabOffsetAttr, ctx.offset(table, 0));
}

void EmbeddingOp::resolveRankFacts(const RankContext &ctx) {
  setVocabOffsetFact(*this, ctx, getTable());
}

ArrayAttr mlir::sl::detail::vocabParallelAxes(Operation *op, Value logits) {
  shardline::Layout l = layoutOrReplicated(logits);
  if (l.dims[2].empty())
    return {};
  Builder b(op->getContext());
  op->setAttr(kReasonAttr, b.getStringAttr("logits split over " + shardline::formatAxes(l.dims[2]) +
                                           " on the vocabulary (vocab-parallel LM head)"));
  return axesAttr(b.getContext(), l.dims[2]);
}

/// Logits split on the vocabulary: vocab-parallel cross-entropy over those axes.
FailureOr<Operation *> CrossEntropyOp::applyRemedy(RemedyContext &) {
  if (ArrayAttr axes = vocabParallelAxes(*this, getLogits()))
    setVocabAxesAttr(axes);
  return getOperation();
}

void mlir::sl::detail::setVocabParallelFacts(Operation *op, const RankContext &ctx, Value logits,
                                             ArrayAttr vocabAxes) {
  op->setAttr(kVocabOffsetAttr, ctx.offset(logits, 2));
  if (!vocabAxes.empty())
    op->setAttr(kGroupAttr, ctx.ranks(ctx.group(vocabAxes)));
}

void CrossEntropyOp::resolveRankFacts(const RankContext &ctx) {
  setVocabParallelFacts(*this, ctx, getLogits(), getVocabAxes());
}

int64_t mlir::sl::detail::vocabExchangeBytes(Value logits, ArrayAttr vocabAxes,
                                             const shardline::Mesh &mesh, int64_t vectors) {
  if (vocabAxes.empty())
    return -1;
  std::vector<int64_t> l = localShapeOf(logits, mesh);
  int64_t tokens = l.size() >= 2 ? l[0] * l[1] : 1;
  return shardline::saturatingMul(4 * vectors * (groupSize(mesh, vocabAxes) - 1), tokens);
}

/// Vocab-parallel: three small per-token f32 vectors (max, sum of
/// exponentials, target logit), each all-reduced whole within the group.
int64_t CrossEntropyOp::sentBytesPerRank(const shardline::Mesh &mesh) {
  return vocabExchangeBytes(getLogits(), getVocabAxes(), mesh, 3);
}

//===----------------------------------------------------------------------===//
// Gradients
//===----------------------------------------------------------------------===//

/// The table's gradient: each rank adds up the token gradients of the rows
/// it owns (the table operand gives the rows, not its values).
LogicalResult EmbeddingOp::buildGradient(GradientBuilder &g) {
  FailureOr<Value> dy = g.resultGradient(0);
  if (failed(dy) || !*dy)
    return failure(failed(dy));
  return g.give(1, g.buildOne("sl.embedding_grad", {getIds(), *dy, getTable()}, getTable()));
}

/// The loss seeds the backward program: the gradient of the mean loss with
/// respect to the logits. A cross-entropy that is not the loss sl-autodiff
/// trains on contributes nothing.
LogicalResult CrossEntropyOp::buildGradient(GradientBuilder &g) {
  if (!g.isLoss())
    return success();
  return g.give(0, g.buildOne("sl.cross_entropy_grad", {getLogits(), getLabels()}, getLogits(),
                              GradientBuilder::attrsOf(*this, {"vocab_axes"})));
}
