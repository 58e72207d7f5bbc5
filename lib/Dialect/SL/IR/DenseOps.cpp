//===- DenseOps.cpp - norms, linear layers and elementwise ops --------------===//
//
// The dense MLP (F) family and the ops every family shares.
//
//===----------------------------------------------------------------------===//

#include "OpUtils.h"

using namespace mlir;
using namespace mlir::sl;
using namespace mlir::sl::detail;

LogicalResult RMSNormOp::verify() {
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
  if (getEps().convertToDouble() <= 0)
    return emitOpError("eps must be positive");
  return success();
}

ShardingRule RMSNormOp::getShardingRule() {
  RuleBuilder r;
  auto lead = r.tokens(std::max<size_t>(shape(getX()).size(), 1) - 1);
  int h = r.factor("h", FactorKind::Whole);
  r.operand("x", concat(lead, {h}));
  r.operand("weight", {h});
  r.result("result", concat(lead, {h}));
  return r.rule;
}

LogicalResult LinearOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) ||
      failed(checkRank(*this, getWeight(), "weight", 2)))
    return failure();
  auto x = shape(getX());
  auto w = shape(getWeight());
  auto y = getResult().getType().getShape();
  if (x.empty() || y.size() != x.size())
    return emitOpError("x and the result must have the same rank >= 1");
  if (x.back() != w[0])
    return emitOpError("contracting dimensions differ: x has ")
           << x.back() << " features, weight has " << w[0] << " rows";
  if (y.drop_back() != x.drop_back() || y.back() != w[1])
    return emitOpError("result shape must be x's leading dims followed by ") << w[1];
  return success();
}

ShardingRule LinearOp::getShardingRule() {
  RuleBuilder r;
  auto lead = r.tokens(std::max<size_t>(shape(getX()).size(), 1) - 1);
  int k = r.factor("k", FactorKind::Contracted), n = r.factor("n");
  r.operand("x", concat(lead, {k}));
  r.operand("weight", {k, n});
  r.result("result", concat(lead, {n}));
  r.rule.partial = PartialRule::One;
  return r.rule;
}

template <typename OpTy> static ShardingRule elementwiseRule(OpTy op, PartialRule partial) {
  RuleBuilder r;
  auto dims = r.tokens(op.getResult().getType().getRank());
  for (unsigned i = 0; i < op->getNumOperands(); ++i)
    r.operand(op->getNumOperands() == 1 ? "x" : (i ? "rhs" : "lhs"), dims);
  r.result("result", dims);
  r.rule.partial = partial;
  return r.rule;
}

#define SL_ELEMENTWISE(OP, PARTIAL)                                                                \
  LogicalResult OP::verify() {                                                                     \
    return inPerRankProgram(*this) ? success() : verifyStaticAndElementTypes(*this);               \
  }                                                                                                \
  ShardingRule OP::getShardingRule() { return elementwiseRule(*this, PARTIAL); }
SL_ELEMENTWISE(AddOp, PartialRule::Same)
SL_ELEMENTWISE(MulOp, PartialRule::One)
SL_ELEMENTWISE(SwiGLUOp, PartialRule::None)
SL_ELEMENTWISE(SiLUOp, PartialRule::None)
SL_ELEMENTWISE(GeLUOp, PartialRule::None)
SL_ELEMENTWISE(SigmoidOp, PartialRule::None)
SL_ELEMENTWISE(SoftplusOp, PartialRule::None)
#undef SL_ELEMENTWISE

//===----------------------------------------------------------------------===//
// Gradients (docs/dialect.md, "Backward and optimizer ops")
//===----------------------------------------------------------------------===//

LogicalResult RMSNormOp::buildGradient(GradientBuilder &g) {
  FailureOr<Value> dy = g.resultGradient(0);
  if (failed(dy) || !*dy)
    return failure(failed(dy));
  auto eps = GradientBuilder::attrsOf(*this, {"eps"});
  if (g.needsGradient(0) &&
      failed(g.give(0, g.buildOne("sl.rms_norm_grad", {getX(), getWeight(), *dy}, getX(), eps))))
    return failure();
  if (g.needsGradient(1) &&
      failed(g.give(1, g.buildOne("sl.rms_norm_grad_weight", {getX(), *dy}, getWeight(), eps))))
    return failure();
  return success();
}

/// x·w: dx = dy·wᵀ, dw = Σ_tokens xᵀ·dy (a pending sum over the axes that
/// split the tokens, which sl-autodiff reduces onto the weight's layout).
static LogicalResult linearGradient(Operation *op, GradientBuilder &g) {
  FailureOr<Value> dy = g.resultGradient(0);
  if (failed(dy) || !*dy)
    return failure(failed(dy));
  Value x = op->getOperand(0), w = op->getOperand(1);
  if (g.needsGradient(0) && failed(g.give(0, g.buildOne("sl.linear_grad", {*dy, w}, x))))
    return failure();
  if (g.needsGradient(1) && failed(g.give(1, g.buildOne("sl.linear_grad_weight", {x, *dy}, w))))
    return failure();
  return success();
}

LogicalResult LinearOp::buildGradient(GradientBuilder &g) { return linearGradient(*this, g); }
LogicalResult LMHeadOp::buildGradient(GradientBuilder &g) { return linearGradient(*this, g); }

LogicalResult AddOp::buildGradient(GradientBuilder &g) {
  FailureOr<Value> dy = g.resultGradient(0);
  if (failed(dy) || !*dy)
    return failure(failed(dy));
  for (unsigned i = 0; i < 2; ++i)
    if (g.needsGradient(i))
      g.contribute(i, *dy);
  return success();
}

LogicalResult MulOp::buildGradient(GradientBuilder &g) {
  FailureOr<Value> dy = g.resultGradient(0);
  if (failed(dy) || !*dy)
    return failure(failed(dy));
  Value l = getLhs(), r = getRhs();
  if (g.needsGradient(0) && failed(g.give(0, g.buildOne("sl.mul", {*dy, r}, l))))
    return failure();
  if (g.needsGradient(1) && failed(g.give(1, g.buildOne("sl.mul", {*dy, l}, r))))
    return failure();
  return success();
}

LogicalResult SwiGLUOp::buildGradient(GradientBuilder &g) {
  FailureOr<Value> dy = g.resultGradient(0);
  if (failed(dy) || !*dy)
    return failure(failed(dy));
  FailureOr<Operation *> grad =
      g.build("sl.swiglu_grad", {getLhs(), getRhs(), *dy}, {getLhs(), getRhs()});
  if (failed(grad))
    return failure();
  for (unsigned i = 0; i < 2; ++i)
    if (g.needsGradient(i))
      g.contribute(i, (*grad)->getResult(i));
  return success();
}

/// f(x): dx = dy·f'(x), by the op's `<name>_grad`.
static LogicalResult unaryGradient(Operation *op, GradientBuilder &g) {
  FailureOr<Value> dy = g.resultGradient(0);
  if (failed(dy) || !*dy)
    return failure(failed(dy));
  Value x = op->getOperand(0);
  return g.give(0, g.buildOne((op->getName().getStringRef() + "_grad").str(), {x, *dy}, x));
}

LogicalResult SiLUOp::buildGradient(GradientBuilder &g) { return unaryGradient(*this, g); }
LogicalResult GeLUOp::buildGradient(GradientBuilder &g) { return unaryGradient(*this, g); }
LogicalResult SigmoidOp::buildGradient(GradientBuilder &g) { return unaryGradient(*this, g); }
LogicalResult SoftplusOp::buildGradient(GradientBuilder &g) { return unaryGradient(*this, g); }
