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

//===----------------------------------------------------------------------===//
// Gradients (docs/dialect.md, "Backward and optimizer ops")
//===----------------------------------------------------------------------===//
//
// The router's choice of experts is piecewise constant in the logits, so only
// the renormalised weights carry a gradient back to them; the integer indices
// get none. Dispatch and combine are each other's transposes, and the backward
// ops keep the experts dimension whole or free exactly where the forward ones
// do: the gradients then cross expert parallelism by the reverse all-to-alls.

LogicalResult RouterTopKOp::buildGradient(GradientBuilder &g) {
  FailureOr<Value> dw = g.resultGradient(0);
  if (failed(dw) || !*dw)
    return failure(failed(dw));
  return g.give(0,
                g.buildOne("sl.router_topk_grad", {getWeights(), getIndices(), *dw}, getLogits()));
}

LogicalResult MoEDispatchOp::buildGradient(GradientBuilder &g) {
  FailureOr<Value> dtokens = g.resultGradient(0);
  if (failed(dtokens) || !*dtokens)
    return failure(failed(dtokens));
  return g.give(0, g.buildOne("sl.moe_dispatch_grad", {*dtokens, getIndices()}, getX()));
}

LogicalResult MoEExpertsOp::buildGradient(GradientBuilder &g) {
  FailureOr<Value> dy = g.resultGradient(0);
  if (failed(dy) || !*dy)
    return failure(failed(dy));
  SmallVector<Value> operands{getTokens(), getGate(), getUp(), getDown(), *dy};
  if (g.needsGradient(0) &&
      failed(g.give(0, g.buildOne("sl.moe_experts_grad", operands, getTokens()))))
    return failure();
  if (!g.needsGradient(1) && !g.needsGradient(2) && !g.needsGradient(3))
    return success();
  FailureOr<Operation *> dw =
      g.build("sl.moe_experts_grad_weights", operands, {getGate(), getUp(), getDown()});
  if (failed(dw))
    return failure();
  for (unsigned i = 1; i < 4; ++i)
    if (g.needsGradient(i))
      g.contribute(i, (*dw)->getResult(i - 1));
  return success();
}

LogicalResult MoECombineOp::buildGradient(GradientBuilder &g) {
  FailureOr<Value> dy = g.resultGradient(0);
  if (failed(dy) || !*dy)
    return failure(failed(dy));
  if (g.needsGradient(0) &&
      failed(g.give(
          0, g.buildOne("sl.moe_combine_grad", {getWeights(), getIndices(), *dy}, getExpertOut()))))
    return failure();
  if (g.needsGradient(1) &&
      failed(g.give(1, g.buildOne("sl.moe_combine_grad_weights",
                                  {getExpertOut(), getIndices(), *dy}, getWeights()))))
    return failure();
  return success();
}

//===----------------------------------------------------------------------===//
// Backward ops
//===----------------------------------------------------------------------===//

/// `routing` (weights or indices) is [batch, seq, k] for `tokens`' batch and
/// seq, whose dim `batchDim` is the batch.
static LogicalResult checkRouting(Operation *op, Value routing, StringRef name, Value tokens,
                                  StringRef tokensName, unsigned batchDim) {
  if (failed(checkRank(op, routing, name, 3)))
    return failure();
  for (unsigned d = 0; d < 2; ++d)
    if (failed(checkDim(op, tokens, tokensName, batchDim + d, shape(routing)[d],
                        d ? "seq of " + name.str() : "batch of " + name.str())))
      return failure();
  return success();
}

/// `slabs` [experts, b, s, h] for the tokens `tokens` [b, s, h].
static LogicalResult checkSlabs(Operation *op, Value slabs, StringRef name, Value tokens,
                                StringRef tokensName) {
  if (failed(checkRank(op, slabs, name, 4)) || failed(checkRank(op, tokens, tokensName, 3)))
    return failure();
  static const char *const what[] = {"batch of ", "seq of ", "hidden of "};
  for (unsigned i = 0; i < 3; ++i)
    if (failed(checkDim(op, slabs, name, i + 1, shape(tokens)[i], what[i] + tokensName.str())))
      return failure();
  return success();
}

/// The experts' weights: gate and up [experts, hidden, ffn], down [experts,
/// ffn, hidden], for tokens [experts, b, s, hidden].
static LogicalResult checkExpertWeights(Operation *op, Value tokens, Value gate, Value down) {
  if (failed(checkRank(op, tokens, "tokens", 4)) || failed(checkRank(op, gate, "gate", 3)))
    return failure();
  auto t = shape(tokens), g = shape(gate);
  if (g[0] != t[0] || g[1] != t[3])
    return op->emitOpError("gate must be [experts, hidden, ffn] = [")
           << t[0] << ", " << t[3] << ", ffn], got [" << g[0] << ", " << g[1] << ", " << g[2]
           << "]";
  SmallVector<int64_t> want{g[0], g[2], g[1]};
  if (shape(down) != ArrayRef<int64_t>(want))
    return op->emitOpError("down must be [experts, ffn, hidden] = [")
           << want[0] << ", " << want[1] << ", " << want[2] << "]";
  return success();
}

LogicalResult RouterTopKGradOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) ||
      failed(checkRank(*this, getDlogits(), "dlogits", 3)) ||
      failed(checkRouting(*this, getWeights(), "weights", getDlogits(), "dlogits", 0)))
    return failure();
  int64_t k = shape(getWeights())[2], experts = shape(getDlogits())[2];
  if (k < 1 || k > experts)
    return emitOpError("k (") << k << ") must be in [1, " << experts << "] (dlogits' experts)";
  return success();
}

ShardingRule RouterTopKGradOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), e = r.factor("experts", FactorKind::Whole),
      k = r.factor("k", FactorKind::Whole);
  r.operand("weights", {b, s, k});
  r.operand("indices", {b, s, k});
  r.operand("dweights", {b, s, k});
  r.result("dlogits", {b, s, e});
  return r.rule;
}

LogicalResult MoEDispatchGradOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) ||
      failed(checkSlabs(*this, getDtokens(), "dtokens", getDx(), "dx")))
    return failure();
  return checkRouting(*this, getIndices(), "indices", getDx(), "dx", 0);
}

ShardingRule MoEDispatchGradOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), h = r.factor("h"), e = r.factor("experts", FactorKind::Whole),
      k = r.factor("k", FactorKind::Whole);
  r.operand("dtokens", {e, b, s, h});
  r.operand("indices", {b, s, k});
  r.result("dx", {b, s, h});
  r.rule.partial = PartialRule::One;
  return r.rule;
}

LogicalResult MoEExpertsGradOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)))
    return failure();
  return checkExpertWeights(*this, getTokens(), getGate(), getDown());
}

/// sl.moe_experts' factors; with `weights`, the gradients of the weights: the
/// tokens contracted and the ffn dimension free.
static ShardingRule expertsGradRule(bool weights) {
  RuleBuilder r;
  int e = r.factor("experts"), b = r.factor("b"), s = r.seq(), h = r.factor("h", FactorKind::Whole),
      f = r.factor("f", weights ? FactorKind::Free : FactorKind::Contracted);
  if (weights)
    for (int token : {b, s})
      r.rule.factors[token].kind = FactorKind::Contracted;
  r.operand("tokens", {e, b, s, h});
  r.operand("gate", {e, h, f});
  r.operand("up", {e, h, f});
  r.operand("down", {e, f, h});
  r.operand("dy", {e, b, s, h});
  if (weights) {
    r.result("dgate", {e, h, f});
    r.result("dup", {e, h, f});
    r.result("ddown", {e, f, h});
  } else {
    r.result("dtokens", {e, b, s, h});
  }
  return r.rule;
}

ShardingRule MoEExpertsGradOp::getShardingRule() { return expertsGradRule(false); }

LogicalResult MoEExpertsGradWeightsOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)))
    return failure();
  return checkExpertWeights(*this, getTokens(), getGate(), getDown());
}

ShardingRule MoEExpertsGradWeightsOp::getShardingRule() { return expertsGradRule(true); }

LogicalResult MoECombineGradOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) ||
      failed(checkSlabs(*this, getDexpertOut(), "dexpert_out", getDy(), "dy")) ||
      failed(checkRouting(*this, getWeights(), "weights", getDy(), "dy", 0)))
    return failure();
  if (shape(getDexpertOut())[0] < shape(getWeights())[2])
    return emitOpError("dexpert_out has ")
           << shape(getDexpertOut())[0] << " experts, fewer than k = " << shape(getWeights())[2];
  return success();
}

ShardingRule MoECombineGradOp::getShardingRule() {
  RuleBuilder r;
  int e = r.factor("experts", FactorKind::Whole), b = r.factor("b"), s = r.seq(), h = r.factor("h"),
      k = r.factor("k", FactorKind::Whole);
  r.operand("weights", {b, s, k});
  r.operand("indices", {b, s, k});
  r.operand("dy", {b, s, h});
  r.result("dexpert_out", {e, b, s, h});
  r.rule.partial = PartialRule::One;
  return r.rule;
}

LogicalResult MoECombineGradWeightsOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) ||
      failed(checkSlabs(*this, getExpertOut(), "expert_out", getDy(), "dy")))
    return failure();
  return checkRouting(*this, getIndices(), "indices", getDy(), "dy", 0);
}

ShardingRule MoECombineGradWeightsOp::getShardingRule() {
  RuleBuilder r;
  int e = r.factor("experts", FactorKind::Whole), b = r.factor("b"), s = r.seq(),
      h = r.factor("h", FactorKind::Contracted), k = r.factor("k", FactorKind::Whole);
  r.operand("expert_out", {e, b, s, h});
  r.operand("indices", {b, s, k});
  r.operand("dy", {b, s, h});
  r.result("dweights", {b, s, k});
  r.rule.partial = PartialRule::One;
  return r.rule;
}
