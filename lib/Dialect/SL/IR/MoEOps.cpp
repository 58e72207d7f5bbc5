//===- MoEOps.cpp - mixture of experts (E): router, dispatch, experts, combine ---===//
//
// No sequence-mixing factor: tokens stay split; the experts dimension is split
// by the all-to-alls the layouts need.
//
//===----------------------------------------------------------------------===//

#include "OpUtils.h"

using namespace mlir;
using namespace mlir::sl;
using namespace mlir::sl::detail;

LogicalResult RouterTopKOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) ||
      failed(checkRank(*this, getLogits(), "logits", 3)))
    return failure();
  auto l = shape(getLogits());
  int64_t k = getK();
  if (k < 1 || k > l[2])
    return emitOpError("k must be in [1, ") << l[2] << "], got " << k;
  SmallVector<int64_t> want{l[0], l[1], k};
  if (getWeights().getType().getShape() != ArrayRef<int64_t>(want) ||
      getIndices().getType().getShape() != ArrayRef<int64_t>(want))
    return emitOpError("weights and indices must be [batch, seq, k]");
  return success();
}

ShardingRule RouterTopKOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), e = r.factor("experts", FactorKind::Whole),
      k = r.factor("k", FactorKind::Whole);
  r.operand("logits", {b, s, e});
  r.result("weights", {b, s, k});
  r.result("indices", {b, s, k});
  return r.rule;
}

LogicalResult MoEDispatchOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getX(), "x", 3)) ||
      failed(checkRank(*this, getIndices(), "indices", 3)))
    return failure();
  auto x = shape(getX());
  if (getExperts() < 1)
    return emitOpError("experts must be positive");
  if (shape(getIndices())[0] != x[0] || shape(getIndices())[1] != x[1])
    return emitOpError("indices must be [batch, seq, k] for x's batch and seq");
  SmallVector<int64_t> want{(int64_t)getExperts(), x[0], x[1], x[2]};
  if (getResult().getType().getShape() != ArrayRef<int64_t>(want))
    return emitOpError("result must be [experts, batch, seq, hidden]");
  return success();
}

ShardingRule MoEDispatchOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), h = r.factor("h"), e = r.factor("experts", FactorKind::Whole),
      k = r.factor("k", FactorKind::Whole);
  r.operand("x", {b, s, h});
  r.operand("indices", {b, s, k});
  r.result("result", {e, b, s, h});
  return r.rule;
}

LogicalResult MoEExpertsOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) ||
      failed(checkRank(*this, getTokens(), "tokens", 4)) ||
      failed(checkRank(*this, getGate(), "gate", 3)))
    return failure();
  auto t = shape(getTokens());
  auto g = shape(getGate());
  if (g[0] != t[0] || g[1] != t[3])
    return emitOpError("gate must be [experts, hidden, ffn]");
  SmallVector<int64_t> down{g[0], g[2], g[1]};
  if (shape(getDown()) != ArrayRef<int64_t>(down))
    return emitOpError("down must be [experts, ffn, hidden]");
  return success();
}

ShardingRule MoEExpertsOp::getShardingRule() {
  RuleBuilder r;
  int e = r.factor("experts"), b = r.factor("b"), s = r.seq(), h = r.factor("h", FactorKind::Whole),
      f = r.factor("f", FactorKind::Contracted);
  r.operand("tokens", {e, b, s, h});
  r.operand("gate", {e, h, f});
  r.operand("up", {e, h, f});
  r.operand("down", {e, f, h});
  r.result("result", {e, b, s, h});
  return r.rule;
}

LogicalResult MoECombineOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) ||
      failed(checkRank(*this, getExpertOut(), "expert_out", 4)) ||
      failed(checkRank(*this, getWeights(), "weights", 3)))
    return failure();
  auto e = shape(getExpertOut());
  if (shape(getIndices()) != shape(getWeights()) || shape(getWeights())[0] != e[1] ||
      shape(getWeights())[1] != e[2])
    return emitOpError("weights and indices must be [batch, seq, k]");
  SmallVector<int64_t> want{e[1], e[2], e[3]};
  if (getResult().getType().getShape() != ArrayRef<int64_t>(want))
    return emitOpError("result must be [batch, seq, hidden]");
  return success();
}

ShardingRule MoECombineOp::getShardingRule() {
  RuleBuilder r;
  int e = r.factor("experts", FactorKind::Whole), b = r.factor("b"), s = r.seq(), h = r.factor("h"),
      k = r.factor("k", FactorKind::Whole);
  r.operand("expert_out", {e, b, s, h});
  r.operand("weights", {b, s, k});
  r.operand("indices", {b, s, k});
  r.result("result", {b, s, h});
  r.rule.partial = PartialRule::One;
  return r.rule;
}
