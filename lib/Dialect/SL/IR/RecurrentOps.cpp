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
//
// Under context parallelism the scan runs chunked: the chunks' (state, decay)
// summaries meet in sl.scan_state_exchange and sl.rglru_correct adds each
// chunk's true initial state. Backwards, the correction gives the initial
// states' cotangents, the exchange's dual turns them into the summaries'
// cotangents, and the chunked scan's backward takes those: no token is
// gathered.

/// x's and state_in's gradients from sl.rglru_scan_grad, the gate
/// parameters' and lambda's from sl.rglru_scan_grad_weights; the final
/// state's and the decay's gradients (from the exchange's dual, once
/// chunked) are their optional operands.
LogicalResult RGLRUScanOp::buildGradient(GradientBuilder &g) {
  FailureOr<Value> dy = g.resultGradient(0), dstate = g.resultGradient(1),
                   ddecay = g.resultGradient(2);
  if (failed(dy) || failed(dstate) || failed(ddecay))
    return failure();
  if (!*dy && !*dstate && !*ddecay)
    return success();
  if (!*dy)
    return emitOpError("sl-autodiff: the loss depends on the scan's final state or decay but not "
                       "on its outputs, which its backward takes");
  Value stateIn = getStateIn();
  SmallVector<Value> operands{getX(), getWa(), getBa(), getWx(), getBx(), getLambda()};
  if (stateIn)
    operands.push_back(stateIn);
  operands.push_back(*dy);
  for (Value v : {*dstate, *ddecay})
    if (v)
      operands.push_back(v);
  Builder b(getContext());
  SmallVector<NamedAttribute> attrs = GradientBuilder::attrsOf(*this, {"chunk_axes"});
  attrs.push_back(b.getNamedAttr("operandSegmentSizes",
                                 b.getDenseI32ArrayAttr({1, 1, 1, 1, 1, 1, stateIn ? 1 : 0, 1,
                                                         *dstate ? 1 : 0, *ddecay ? 1 : 0})));
  enum { X, Wa, Ba, Wx, Bx, Lambda, StateIn };
  SmallVector<unsigned> tokens{X};
  if (stateIn)
    tokens.push_back(StateIn);
  if (failed(buildOperandGradients(*this, g, "sl.rglru_scan_grad", operands, tokens, attrs)))
    return failure();
  return buildOperandGradients(*this, g, "sl.rglru_scan_grad_weights", operands,
                               {Wa, Ba, Wx, Bx, Lambda}, attrs);
}

/// y0's gradient is dy itself; init's and x's come from
/// sl.rglru_correct_grad, wa's, ba's and lambda's from
/// sl.rglru_correct_grad_params. init's gradient then meets the exchange's
/// dual.
LogicalResult RGLRUCorrectOp::buildGradient(GradientBuilder &g) {
  FailureOr<Value> dy = g.resultGradient(0);
  if (failed(dy) || !*dy)
    return failure(failed(dy));
  if (g.needsGradient(0))
    g.contribute(0, *dy);
  SmallVector<Value> operands{getInit(), getX(), getWa(), getBa(), getLambda(), *dy};
  auto attrs = GradientBuilder::attrsOf(*this, {"chunk_axes"});
  enum { Init = 1, X, Wa, Ba, Lambda };
  if (failed(buildOperandGradients(*this, g, "sl.rglru_correct_grad", operands, {Init, X}, attrs)))
    return failure();
  return buildOperandGradients(*this, g, "sl.rglru_correct_grad_params", operands, {Wa, Ba, Lambda},
                               attrs);
}

//===----------------------------------------------------------------------===//
// Backward ops
//===----------------------------------------------------------------------===//

/// The per-channel operands `params` of an RG-LRU op: [w], w the width of
/// its token value `tokens` [b, s, w].
static LogicalResult verifyChannels(Operation *op, Value tokens, StringRef name,
                                    ArrayRef<std::pair<Value, StringRef>> params) {
  if (failed(verifyStaticAndElementTypes(op)) || failed(checkRank(op, tokens, name, 3)))
    return failure();
  for (auto [v, pname] : params)
    if (failed(checkRank(op, v, pname, 1)) ||
        failed(checkDim(op, v, pname, 0, shape(tokens)[2], "width of " + name.str())))
      return failure();
  return success();
}

/// The scan's operands, dy like x, and the summaries (state_in, dstate,
/// ddecay) shaped like the forward scan's state: [chunks?, b, w].
template <typename Op> static LogicalResult verifyScanGrad(Op op) {
  if (failed(verifyChannels(op, op.getX(), "x", {{op.getWa(), "wa"}})))
    return failure();
  auto x = shape(op.getX());
  const int64_t stateDims[] = {x[0], x[2]};
  if (failed(checkChunkAxes(op, op.getX(), op.getChunkAxes())))
    return failure();
  int64_t chunks = numChunks(op, op.getX(), op.getChunkAxes());
  for (auto [v, name] : {std::pair{op.getStateIn(), "state_in"},
                         std::pair{op.getDstate(), "dstate"}, std::pair{op.getDdecay(), "ddecay"}})
    if (v && failed(checkSummary(op, v, name, op.getChunkAxes(), chunks, stateDims)))
      return failure();
  return success();
}

/// b, w free (b contracted for the parameters' gradients); the sequence
/// passes states over chunk_axes, whole when there are none; the
/// parameters' gradients of a chunked scan are partial sums over the chunks.
template <typename Op> static ShardingRule scanGradRule(Op op, bool weights) {
  RuleBuilder r;
  int b = r.factor("b", weights ? FactorKind::Contracted : FactorKind::Free), s = r.seq(),
      w = r.factor("w");
  r.statePassing(s, op.getChunkAxes());
  if (weights && !op.getChunkAxes().empty())
    r.rule.factors[s].kind = FactorKind::Contracted;
  r.operand("x", {b, s, w});
  for (const char *name : {"wa", "ba", "wx", "bx", "lambda"})
    r.operand(name, {w});
  if (op.getStateIn())
    r.operand("state_in", r.summary({b, w}));
  r.operand("dy", {b, s, w});
  if (op.getDstate())
    r.operand("dstate", r.summary({b, w}));
  if (op.getDdecay())
    r.operand("ddecay", r.summary({b, w}));
  if (!weights) {
    r.result("dx", {b, s, w});
    if (op.getStateIn())
      r.result("dstate_in", r.summary({b, w}));
  } else {
    for (const char *name : {"dwa", "dba", "dwx", "dbx", "dlambda"})
      r.result(name, {w});
  }
  return r.rule;
}

LogicalResult RGLRUScanGradOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyScanGrad(*this)))
    return failure();
  return checkOptionalGradient(*this, getStateIn(), getDstateIn(), "state_in", "dstate_in");
}

ShardingRule RGLRUScanGradOp::getShardingRule() { return scanGradRule(*this, false); }

LogicalResult RGLRUScanGradWeightsOp::verify() {
  return inPerRankProgram(*this) ? success() : verifyScanGrad(*this);
}

ShardingRule RGLRUScanGradWeightsOp::getShardingRule() { return scanGradRule(*this, true); }

/// The correction's operands with dy in y0's place, and the results shaped
/// like the inputs they differentiate.
template <typename Op>
static LogicalResult verifyCorrectGrad(Op op, ArrayRef<std::pair<Value, Value>> resultsLike) {
  if (inPerRankProgram(op))
    return success();
  if (failed(verifyChannels(op, op.getDy(), "dy",
                            {{op.getWa(), "wa"}, {op.getBa(), "ba"}, {op.getLambda(), "lambda"}})))
    return failure();
  auto y = shape(op.getDy());
  const int64_t stateDims[] = {y[0], y[2]};
  if (failed(checkCorrectionInit(op, op.getDy(), op.getInit(), op.getChunkAxes(), stateDims)))
    return failure();
  for (auto [result, like] : resultsLike)
    if (shape(result) != shape(like))
      return op->emitOpError("result #") << cast<OpResult>(result).getResultNumber()
                                         << " must be shaped like the input it differentiates";
  return success();
}

/// sl.rglru_correct's factors with dy in y0's place; `tokenResults` (dinit,
/// dx) or the per-channel `paramResults`, whose tokens are contracted.
static ShardingRule correctGradRule(ArrayAttr chunkAxes, ArrayRef<const char *> tokenResults,
                                    ArrayRef<const char *> paramResults) {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), w = r.factor("w");
  if (paramResults.empty()) {
    r.mixing(s, Remedy::StatePassing, chunkAxes);
  } else {
    r.rule.factors[b].kind = FactorKind::Contracted;
    r.rule.factors[s].kind = FactorKind::Contracted;
  }
  r.operand("init", {s, b, w});
  r.operand("x", {b, s, w});
  for (const char *name : {"wa", "ba", "lambda"})
    r.operand(name, {w});
  r.operand("dy", {b, s, w});
  if (!tokenResults.empty()) {
    r.result(tokenResults[0], {s, b, w});
    r.result(tokenResults[1], {b, s, w});
  }
  for (const char *name : paramResults)
    r.result(name, {w});
  return r.rule;
}

LogicalResult RGLRUCorrectGradOp::verify() {
  return verifyCorrectGrad(*this, {{getDinit(), getInit()}, {getDx(), getX()}});
}

ShardingRule RGLRUCorrectGradOp::getShardingRule() {
  return correctGradRule(getChunkAxes(), {"dinit", "dx"}, {});
}

LogicalResult RGLRUCorrectGradParamsOp::verify() {
  return verifyCorrectGrad(*this,
                           {{getDwa(), getWa()}, {getDba(), getBa()}, {getDlambda(), getLambda()}});
}

ShardingRule RGLRUCorrectGradParamsOp::getShardingRule() {
  return correctGradRule(getChunkAxes(), {}, {"dwa", "dba", "dlambda"});
}
