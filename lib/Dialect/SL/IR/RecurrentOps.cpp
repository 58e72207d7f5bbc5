//===- RecurrentOps.cpp - RG-LRU (R): the scan and its correction -----------===//
//
// The scan's remedy is chunked scanning with a state exchange and
// sl.rglru_correct.
//
//===----------------------------------------------------------------------===//

#include "OpUtils.h"

using namespace mlir;
using namespace mlir::sl;
using namespace mlir::sl::detail;

LogicalResult RGLRUScanOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getX(), "x", 3)))
    return failure();
  auto x = shape(getX());
  for (auto [v, name] :
       {std::pair{getWa(), "wa"}, std::pair{getBa(), "ba"}, std::pair{getWx(), "wx"},
        std::pair{getBx(), "bx"}, std::pair{getLambda(), "lambda"}})
    if (failed(checkRank(*this, v, name, 1)) || failed(checkDim(*this, v, name, 0, x[2], "width")))
      return failure();
  const int64_t stateDims[] = {x[0], x[2]};
  return checkScanSummaries(*this, getX(), getChunkAxes(), getState(), getDecay(), getStateIn(),
                            stateDims, stateDims);
}

ShardingRule RGLRUScanOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), w = r.factor("w");
  r.statePassing(s, getChunkAxes());
  r.operand("x", {b, s, w});
  for (const char *name : {"wa", "ba", "wx", "bx", "lambda"})
    r.operand(name, {w});
  r.scanSummaries(bool(getStateIn()), {b, s, w}, {b, w}, {b, w});
  return r.rule;
}

LogicalResult RGLRUCorrectOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getY0(), "y0", 3)))
    return failure();
  auto y = shape(getY0());
  for (auto [v, name] :
       {std::pair{getWa(), "wa"}, std::pair{getBa(), "ba"}, std::pair{getLambda(), "lambda"}})
    if (failed(checkRank(*this, v, name, 1)) || failed(checkDim(*this, v, name, 0, y[2], "width")))
      return failure();
  const int64_t stateDims[] = {y[0], y[2]};
  return checkCorrectionInit(*this, getY0(), getInit(), getChunkAxes(), stateDims);
}

ShardingRule RGLRUCorrectOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), w = r.factor("w");
  r.mixing(s, Remedy::StatePassing, getChunkAxes());
  r.operand("y0", {b, s, w});
  r.operand("init", {s, b, w});
  r.operand("x", {b, s, w});
  for (const char *name : {"wa", "ba", "lambda"})
    r.operand(name, {w});
  r.result("result", {b, s, w});
  return r.rule;
}

//===----------------------------------------------------------------------===//
// Remedies and rank facts
//===----------------------------------------------------------------------===//

FailureOr<Operation *> RGLRUScanOp::applyRemedy(RemedyContext &ctx) {
  return chunkScan(*this, getStateIn(), ctx,
                   [&](OpBuilder &b, Value y0, Value init, ArrayAttr axes) -> Value {
                     return RGLRUCorrectOp::create(b, getLoc(), y0.getType(), y0, init, getX(),
                                                   getWa(), getBa(), getLambda(), axes);
                   });
}

void RGLRUScanOp::resolveRankFacts(const RankContext &ctx) {
  (*this)->setAttr(kTokensAttr, ctx.runs(getX(), 1));
}

void RGLRUCorrectOp::resolveRankFacts(const RankContext &ctx) {
  (*this)->setAttr(kTokensAttr, ctx.runs(getY0(), 1));
}

//===----------------------------------------------------------------------===//
// Gradients (docs/dialect.md, "Backward and optimizer ops")
//===----------------------------------------------------------------------===//

/// A whole-sequence scan from a zero state: the chunked form (context
/// parallelism) and its final state and decay have no backward yet.
LogicalResult RGLRUScanOp::buildGradient(GradientBuilder &g) {
  if (!getChunkAxes().empty() || getStateIn())
    return emitOpError("sl-autodiff: no gradient yet for a scan split over ")
           << getChunkAxes() << " (context parallelism) or started from a state";
  for (unsigned i : {1u, 2u}) {
    FailureOr<Value> unused = g.resultGradient(i);
    if (failed(unused))
      return failure();
    if (*unused)
      return emitOpError("sl-autodiff: no gradient yet through the scan's ")
             << (i == 1 ? "final state" : "total decay");
  }
  FailureOr<Value> dy = g.resultGradient(0);
  if (failed(dy) || !*dy)
    return failure(failed(dy));
  SmallVector<Value> operands{getX(), getWa(), getBa(), getWx(), getBx(), getLambda(), *dy};
  if (g.needsGradient(0) && failed(g.give(0, g.buildOne("sl.rglru_scan_grad", operands, getX()))))
    return failure();
  if (llvm::none_of(llvm::seq(1u, 6u), [&](unsigned i) { return g.needsGradient(i); }))
    return success();
  FailureOr<Operation *> dp = g.build("sl.rglru_scan_grad_weights", operands,
                                      {getWa(), getBa(), getWx(), getBx(), getLambda()});
  if (failed(dp))
    return failure();
  for (unsigned i = 1; i < 6; ++i)
    if (g.needsGradient(i))
      g.contribute(i, (*dp)->getResult(i - 1));
  return success();
}

/// The scan's operands; x and dy [b, s, w], the others [w].
static LogicalResult verifyScanGrad(Operation *op, Value x) {
  if (failed(verifyStaticAndElementTypes(op)) || failed(checkRank(op, x, "x", 3)))
    return failure();
  Value wa = op->getOperand(1);
  if (failed(checkRank(op, wa, "wa", 1)) ||
      failed(checkDim(op, wa, "wa", 0, shape(x)[2], "width of x")))
    return failure();
  return success();
}

/// b, w free (b contracted for the parameters' gradients); the sequence may
/// not be split: the backward scan has no state exchange yet.
static ShardingRule scanGradRule(bool weights) {
  RuleBuilder r;
  int b = r.factor("b", weights ? FactorKind::Contracted : FactorKind::Free), s = r.seq(),
      w = r.factor("w");
  r.mixing(s, Remedy::StatePassing);
  r.operand("x", {b, s, w});
  for (const char *name : {"wa", "ba", "wx", "bx", "lambda"})
    r.operand(name, {w});
  r.operand("dy", {b, s, w});
  if (!weights)
    r.result("dx", {b, s, w});
  else
    for (const char *name : {"dwa", "dba", "dwx", "dbx", "dlambda"})
      r.result(name, {w});
  return r.rule;
}

LogicalResult RGLRUScanGradOp::verify() {
  return inPerRankProgram(*this) ? success() : verifyScanGrad(*this, getX());
}

ShardingRule RGLRUScanGradOp::getShardingRule() { return scanGradRule(false); }

LogicalResult RGLRUScanGradWeightsOp::verify() {
  return inPerRankProgram(*this) ? success() : verifyScanGrad(*this, getX());
}

ShardingRule RGLRUScanGradWeightsOp::getShardingRule() { return scanGradRule(true); }
