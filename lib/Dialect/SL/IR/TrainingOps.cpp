//===- TrainingOps.cpp - backward and optimizer ops -------------------------===//
//
// A gradient keeps its forward op's factors: what was contracted in the
// forward (k of a linear) is free in the gradient of the input and the
// reverse holds for the gradient of a weight, whose token factors become
// contracted (data and sequence parallelism leave pending sums that the
// gradient synchronisation reduces). Rank facts are the forward's.
//
//===----------------------------------------------------------------------===//

#include "OpUtils.h"

using namespace mlir;
using namespace mlir::sl;
using namespace mlir::sl::detail;

/// The factors of the leading (token) dimensions of a rank-`rank` activation,
/// summed over: a token split leaves a pending sum. The sequence factor stays
/// a sequence, so a zigzag-ordered sequence may be contracted too.
static std::vector<int> contractedTokens(RuleBuilder &r, size_t rank) {
  std::vector<int> lead = r.tokens(rank);
  for (int f : lead)
    r.rule.factors[f].kind = FactorKind::Contracted;
  return lead;
}

static LogicalResult checkEps(Operation *op, APFloat eps) {
  if (eps.convertToDouble() <= 0)
    return op->emitOpError("eps must be positive");
  return success();
}

//===----------------------------------------------------------------------===//
// RMSNorm
//===----------------------------------------------------------------------===//

LogicalResult RMSNormGradOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) ||
      failed(checkRank(*this, getWeight(), "weight", 1)))
    return failure();
  auto x = shape(getX());
  if (x.empty())
    return emitOpError("x must have rank >= 1");
  if (failed(checkDim(*this, getWeight(), "weight", 0, x.back(), "normalised dimension of x")))
    return failure();
  return checkEps(*this, getEps());
}

ShardingRule RMSNormGradOp::getShardingRule() {
  RuleBuilder r;
  auto lead = r.tokens(std::max<size_t>(shape(getX()).size(), 1) - 1);
  int h = r.factor("h", FactorKind::Whole);
  r.operand("x", concat(lead, {h}));
  r.operand("weight", {h});
  r.operand("dy", concat(lead, {h}));
  r.result("dx", concat(lead, {h}));
  return r.rule;
}

LogicalResult RMSNormGradWeightOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) ||
      failed(checkRank(*this, getDweight(), "dweight", 1)))
    return failure();
  auto x = shape(getX());
  if (x.empty())
    return emitOpError("x must have rank >= 1");
  if (failed(checkDim(*this, getDweight(), "dweight", 0, x.back(), "normalised dimension of x")))
    return failure();
  return checkEps(*this, getEps());
}

ShardingRule RMSNormGradWeightOp::getShardingRule() {
  RuleBuilder r;
  auto lead = contractedTokens(r, std::max<size_t>(shape(getX()).size(), 1) - 1);
  int h = r.factor("h", FactorKind::Whole);
  r.operand("x", concat(lead, {h}));
  r.operand("dy", concat(lead, {h}));
  r.result("dweight", {h});
  return r.rule;
}

//===----------------------------------------------------------------------===//
// Linear
//===----------------------------------------------------------------------===//

LogicalResult LinearGradOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) ||
      failed(checkRank(*this, getWeight(), "weight", 2)))
    return failure();
  auto dy = shape(getDy()), w = shape(getWeight()), dx = shape(getDx());
  if (dy.empty() || dx.size() != dy.size())
    return emitOpError("dy and dx must have the same rank >= 1");
  if (dy.back() != w[1])
    return emitOpError("dy has ") << dy.back() << " features but weight has " << w[1] << " columns";
  if (dx.drop_back() != dy.drop_back() || dx.back() != w[0])
    return emitOpError("dx shape must be dy's leading dims followed by ") << w[0];
  return success();
}

ShardingRule LinearGradOp::getShardingRule() {
  RuleBuilder r;
  auto lead = r.tokens(std::max<size_t>(shape(getDy()).size(), 1) - 1);
  int k = r.factor("k"), n = r.factor("n", FactorKind::Contracted);
  r.operand("dy", concat(lead, {n}));
  r.operand("weight", {k, n});
  r.result("dx", concat(lead, {k}));
  r.rule.partial = PartialRule::One;
  return r.rule;
}

LogicalResult LinearGradWeightOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) ||
      failed(checkRank(*this, getDweight(), "dweight", 2)))
    return failure();
  auto x = shape(getX()), dy = shape(getDy());
  if (x.empty() || dy.size() != x.size() || dy.drop_back() != x.drop_back())
    return emitOpError("x and dy must have the same rank >= 1 and the same leading dims");
  SmallVector<int64_t> want{x.back(), dy.back()};
  if (shape(getDweight()) != ArrayRef<int64_t>(want))
    return emitOpError("dweight must be [")
           << want[0] << ", " << want[1] << "] (x's features, dy's features)";
  return success();
}

ShardingRule LinearGradWeightOp::getShardingRule() {
  RuleBuilder r;
  auto lead = contractedTokens(r, std::max<size_t>(shape(getX()).size(), 1) - 1);
  int k = r.factor("k"), n = r.factor("n");
  r.operand("x", concat(lead, {k}));
  r.operand("dy", concat(lead, {n}));
  r.result("dweight", {k, n});
  r.rule.partial = PartialRule::One;
  return r.rule;
}

//===----------------------------------------------------------------------===//
// Elementwise gradients
//===----------------------------------------------------------------------===//

/// Every dimension free, every operand and result one layout, nonlinear.
static ShardingRule elementwiseGradRule(Operation *op, ArrayRef<const char *> operands,
                                        ArrayRef<const char *> results) {
  RuleBuilder r;
  auto dims = r.tokens(shape(op->getResult(0)).size());
  for (const char *name : operands)
    r.operand(name, dims);
  for (const char *name : results)
    r.result(name, dims);
  return r.rule;
}

LogicalResult SwiGLUGradOp::verify() {
  return inPerRankProgram(*this) ? success() : verifyStaticAndElementTypes(*this);
}

ShardingRule SwiGLUGradOp::getShardingRule() {
  return elementwiseGradRule(*this, {"lhs", "rhs", "dy"}, {"dlhs", "drhs"});
}

#define SL_UNARY_GRAD(OP)                                                                          \
  LogicalResult OP::verify() {                                                                     \
    return inPerRankProgram(*this) ? success() : verifyStaticAndElementTypes(*this);               \
  }                                                                                                \
  ShardingRule OP::getShardingRule() { return elementwiseGradRule(*this, {"x", "dy"}, {"dx"}); }
SL_UNARY_GRAD(SiLUGradOp)
SL_UNARY_GRAD(GeLUGradOp)
SL_UNARY_GRAD(SigmoidGradOp)
SL_UNARY_GRAD(SoftplusGradOp)
#undef SL_UNARY_GRAD

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

LogicalResult RopeGradOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getDy(), "dy", 3)))
    return failure();
  int64_t d = getHeadDim();
  if (d <= 0 || d % 2 != 0)
    return emitOpError("head_dim must be positive and even, got ") << d;
  return checkDivides(*this, shape(getDy())[2], d, "channels by head_dim");
}

ShardingRule RopeGradOp::getShardingRule() {
  RuleBuilder r;
  auto dy = shape(getDy());
  int64_t heads = dy.size() == 3 && getHeadDim() > 0 ? dy[2] / getHeadDim() : 0;
  int b = r.factor("b"), s = r.seq(), c = r.factor("heads", FactorKind::Free, heads);
  r.operand("dy", {b, s, c});
  r.result("dx", {b, s, c});
  r.rule.partial = PartialRule::One;
  return r.rule;
}

void RopeGradOp::resolveRankFacts(const RankContext &ctx) { setTokenFacts(*this, ctx, getDy()); }

/// sl.attention's factors with the key positions unsplittable: the gradients
/// carry no exchange of their own, so split keys are gathered first. With
/// `contractQueries`, the query positions are summed over (dk, dv).
static ShardingRule attentionGradRule(int64_t kvHeads, bool contractQueries,
                                      ArrayRef<const char *> results) {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), t = r.seq("t"),
      h = r.factor("heads", FactorKind::Free, kvHeads);
  r.rule.factors[h].granuleName = "kv heads";
  r.mixing(t, Remedy::KVExchange);
  if (contractQueries)
    r.rule.factors[s].kind = FactorKind::Contracted;
  r.operand("q", {b, s, h});
  r.operand("k", {b, t, h});
  r.operand("v", {b, t, h});
  r.operand("dy", {b, s, h});
  for (const char *name : results)
    r.result(name, contractQueries ? std::vector<int>{b, t, h} : std::vector<int>{b, s, h});
  return r.rule;
}

LogicalResult AttentionGradOp::verify() {
  return inPerRankProgram(*this) ? success() : verifyAttentionShapes(*this);
}

ShardingRule AttentionGradOp::getShardingRule() {
  return attentionGradRule(getKvHeads(), false, {"dq"});
}

void AttentionGradOp::resolveRankFacts(const RankContext &ctx) {
  setAttentionFacts(*this, ctx, getQ(), getK());
}

LogicalResult AttentionGradKVOp::verify() {
  return inPerRankProgram(*this) ? success() : verifyAttentionShapes(*this);
}

ShardingRule AttentionGradKVOp::getShardingRule() {
  return attentionGradRule(getKvHeads(), true, {"dk", "dv"});
}

void AttentionGradKVOp::resolveRankFacts(const RankContext &ctx) {
  setAttentionFacts(*this, ctx, getQ(), getK());
}

//===----------------------------------------------------------------------===//
// The model's ends
//===----------------------------------------------------------------------===//

LogicalResult EmbeddingGradOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getIds(), "ids", 2)) ||
      failed(checkRank(*this, getDy(), "dy", 3)) ||
      failed(checkRank(*this, getTable(), "table", 2)))
    return failure();
  auto ids = shape(getIds());
  if (failed(checkDim(*this, getDy(), "dy", 0, ids[0], "batch of ids")) ||
      failed(checkDim(*this, getDy(), "dy", 1, ids[1], "sequence of ids")) ||
      failed(checkDim(*this, getDy(), "dy", 2, shape(getTable())[1], "table width")))
    return failure();
  return success();
}

ShardingRule EmbeddingGradOp::getShardingRule() {
  RuleBuilder r;
  auto lead = contractedTokens(r, 2);
  int v = r.factor("v"), h = r.factor("h");
  r.operand("ids", lead);
  r.operand("dy", concat(lead, {h}));
  r.operand("table", {v, h});
  r.result("dtable", {v, h});
  r.rule.partial = PartialRule::One;
  return r.rule;
}

void EmbeddingGradOp::resolveRankFacts(const RankContext &ctx) {
  setVocabOffsetFact(*this, ctx, getTable());
}

LogicalResult CrossEntropyGradOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) ||
      failed(checkLogitsAndLabels(*this, getLogits(), getLabels())))
    return failure();
  return checkVocabAxes(*this, getLogits(), getVocabAxes());
}

ShardingRule CrossEntropyGradOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), v = r.factor("v");
  r.mixing(v, Remedy::VocabParallel, getVocabAxes());
  r.operand("logits", {b, s, v});
  r.operand("labels", {b, s});
  r.result("dlogits", {b, s, v});
  return r.rule;
}

/// Logits split on the vocabulary: the softmax's max and sum are combined over
/// those axes, as in the forward.
FailureOr<Operation *> CrossEntropyGradOp::applyRemedy(RemedyContext &) {
  if (ArrayAttr axes = vocabParallelAxes(*this, getLogits()))
    setVocabAxesAttr(axes);
  return getOperation();
}

void CrossEntropyGradOp::resolveRankFacts(const RankContext &ctx) {
  setVocabParallelFacts(*this, ctx, getLogits(), getVocabAxes());
}

/// Vocab-parallel: the per-token max and sum of exponentials (the target's
/// logit is not needed: each rank subtracts one where it holds the label).
int64_t CrossEntropyGradOp::sentBytesPerRank(const shardline::Mesh &mesh) {
  return vocabExchangeBytes(getLogits(), getVocabAxes(), mesh, 2);
}

//===----------------------------------------------------------------------===//
// The optimizer
//===----------------------------------------------------------------------===//

/// Plain factors for a weight or its gradient: free, and no sequence.
static std::vector<int> weightDims(RuleBuilder &r, size_t rank) {
  std::vector<int> dims;
  for (size_t d = 0; d < rank; ++d)
    dims.push_back(r.factor("d" + std::to_string(d)));
  return dims;
}

LogicalResult SumSquaresOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  // The result is f32 whatever x holds, so only x's shape is checked here.
  if (!getX().getType().hasStaticShape())
    return emitOpError("x must have a static shape, got ") << getX().getType();
  return success();
}

ShardingRule SumSquaresOp::getShardingRule() {
  RuleBuilder r;
  r.operand("x", weightDims(r, shape(getX()).size()));
  r.result("result", {});
  r.rule.reducesToScalar = true;
  return r.rule;
}

LogicalResult AdamWOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  for (Value v : {getWeight(), getGrad(), getM(), getV()})
    if (!cast<RankedTensorType>(v.getType()).hasStaticShape())
      return emitOpError("weight, grad, m and v must have static shapes, got ") << v.getType();
  Type e = getWeight().getType().getElementType();
  auto elementOf = [](Value v) { return cast<RankedTensorType>(v.getType()).getElementType(); };
  if (!getMain()) {
    if (!e.isF32())
      return emitOpError("a ") << e
                               << " weight needs its f32 main copy (operand main): AdamW "
                                  "updates the main copy and rounds the weight from it";
    std::pair<Value, const char *> others[] = {{getGrad(), "grad"}, {getM(), "m"}, {getV(), "v"}};
    for (auto [v, name] : others)
      if (Type t = elementOf(v); t != e)
        return emitOpError() << name << " has element type " << t << " but the weight has " << e;
    return success();
  }
  // Mixed precision: a 16-bit weight, its gradient in the weight's type or
  // f32, the main copy and the moments f32.
  if (e.isF32())
    return emitOpError("an f32 weight is updated in place; main is for 16-bit weights");
  if (Type g = elementOf(getGrad()); g != e && !g.isF32())
    return emitOpError() << "grad has element type " << g << ", neither the weight's " << e
                         << " nor f32";
  std::pair<Value, const char *> state[] = {{getM(), "m"}, {getV(), "v"}, {getMain(), "main"}};
  for (auto [v, name] : state)
    if (Type t = elementOf(v); !t.isF32())
      return emitOpError() << name << " has element type " << t << ": with a main copy, "
                           << "the main copy and the moments are f32";
  auto mainType = cast<RankedTensorType>(getMain().getType());
  if (!mainType.hasStaticShape() || mainType.getShape() != getWeight().getType().getShape())
    return emitOpError("main must have the weight's shape, got ") << mainType;
  return success();
}

ShardingRule AdamWOp::getShardingRule() {
  RuleBuilder r;
  auto dims = weightDims(r, shape(getWeight()).size());
  for (const char *name : {"weight", "grad", "m", "v"})
    r.operand(name, dims);
  r.operand("sumsq", {});
  if (getMain())
    r.operand("main", dims);
  return r.rule;
}
