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
  if (failed(checkChunkAxes(*this, getX(), getChunkAxes())))
    return failure();
  int64_t chunks = numChunks(*this, getX(), getChunkAxes());
  if (failed(checkSummary(*this, getState(), "state", getChunkAxes(), chunks, {x[0], x[2]})) ||
      failed(checkSummary(*this, getDecay(), "decay", getChunkAxes(), chunks, {x[0], x[2]})))
    return failure();
  if (Value in = getStateIn())
    if (failed(checkSummary(*this, in, "state_in", getChunkAxes(), chunks, {x[0], x[2]})))
      return failure();
  return success();
}

ShardingRule RGLRUScanOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), w = r.factor("w");
  r.statePassing(s, getChunkAxes());
  r.operand("x", {b, s, w});
  for (const char *name : {"wa", "ba", "wx", "bx", "lambda"})
    r.operand(name, {w});
  if (getStateIn())
    r.operand("state_in", r.summary({b, w}));
  r.result("y", {b, s, w});
  r.result("state", r.summary({b, w}));
  r.result("decay", r.summary({b, w}));
  return r.rule;
}

LogicalResult RGLRUCorrectOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getY0(), "y0", 3)) ||
      failed(checkRank(*this, getInit(), "init", 3)))
    return failure();
  auto y = shape(getY0());
  for (auto [v, name] :
       {std::pair{getWa(), "wa"}, std::pair{getBa(), "ba"}, std::pair{getLambda(), "lambda"}})
    if (failed(checkRank(*this, v, name, 1)) || failed(checkDim(*this, v, name, 0, y[2], "width")))
      return failure();
  if (failed(checkChunkAxes(*this, getY0(), getChunkAxes())))
    return failure();
  // Like sl.ssd_correct, init has its chunk dimension even for a single chunk.
  int64_t chunks = numChunks(*this, getY0(), getChunkAxes());
  if (chunks > 0 && failed(checkDim(*this, getInit(), "init", 0, chunks, "chunks")))
    return failure();
  if (failed(checkDim(*this, getInit(), "init", 1, y[0], "batch")) ||
      failed(checkDim(*this, getInit(), "init", 2, y[2], "width")))
    return failure();
  return success();
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
