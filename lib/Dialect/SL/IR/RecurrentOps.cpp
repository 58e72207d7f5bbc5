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
