//===- MambaOps.cpp - Mamba-2 (M): causal conv, SSD scan and correction, gated norm ---===//
//
// The conv's remedy is a halo of the tokens before each chunk; the scan's is
// chunked scanning with a state exchange and sl.ssd_correct.
//
//===----------------------------------------------------------------------===//

#include "OpUtils.h"

using namespace mlir;
using namespace mlir::sl;
using namespace mlir::sl::detail;

LogicalResult GatedRMSNormOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getY(), "y", 3)) ||
      failed(checkRank(*this, getWeight(), "weight", 1)))
    return failure();
  auto y = shape(getY());
  if (failed(checkDim(*this, getWeight(), "weight", 0, y[2], "channels")) ||
      failed(checkDivides(*this, y[2], getGroups(), "channels by groups")))
    return failure();
  return success();
}

ShardingRule GatedRMSNormOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), c = r.factor("groups", FactorKind::Free, getGroups());
  r.operand("y", {b, s, c});
  r.operand("z", {b, s, c});
  r.operand("weight", {c});
  r.result("result", {b, s, c});
  return r.rule;
}

/// Number of chunks the sequence (dimension 1) of `v` is cut into by its own
/// split; -1 when its mesh is unknown.
static int64_t seqChunks(Operation *op, Value v) {
  LayoutAttr l = getLayout(v);
  if (!l || l.getRank() < 2)
    return 1;
  return numChunks(op, v, axesAttr(op->getContext(), toLayout(l).dims[1]));
}

LogicalResult CausalConv1dOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getX(), "x", 3)) ||
      failed(checkRank(*this, getWeight(), "weight", 2)) ||
      failed(checkRank(*this, getBias(), "bias", 1)))
    return failure();
  auto x = shape(getX());
  if (failed(checkDim(*this, getWeight(), "weight", 0, x[2], "channels")) ||
      failed(checkDim(*this, getBias(), "bias", 0, x[2], "channels")))
    return failure();
  if (Value halo = getHalo()) {
    int64_t width = shape(getWeight())[1] - 1;
    if (failed(checkRank(*this, halo, "halo", 3)) ||
        failed(checkDim(*this, halo, "halo", 0, x[0], "batch")) ||
        failed(checkDim(*this, halo, "halo", 2, x[2], "channels")))
      return failure();
    if (width == 0)
      return emitOpError("has a halo but its kernel of width 1 reads no earlier tokens");
    int64_t chunks = seqChunks(*this, getX());
    if (chunks > 0 && shape(halo)[1] != chunks * width)
      return emitOpError("halo holds ") << shape(halo)[1] << " tokens but x's " << chunks
                                        << " sequence chunks need " << chunks << " * " << width;
    LayoutAttr hl = getLayout(halo), xl = getLayout(getX());
    if (hl && xl &&
        (hl.getDimAxes(1) != xl.getDimAxes(1) || hl.getDimOrder(1) != xl.getDimOrder(1)))
      return emitOpError("halo must split its sequence like x");
  }
  return success();
}

ShardingRule CausalConv1dOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), c = r.factor("c"), w = r.factor("width", FactorKind::Whole);
  SmallVector<StringRef> haloAxes;
  if (LayoutAttr hl = getHalo() ? getLayout(getHalo()) : LayoutAttr(); hl && hl.getRank() > 1)
    haloAxes = hl.getDimAxes(1);
  r.mixing(s, Remedy::Halo, haloAxes);
  r.operand("x", {b, s, c});
  r.operand("weight", {c, w});
  r.operand("bias", {c});
  if (getHalo())
    r.operand("halo", {b, r.seq("halo"), c});
  r.result("result", {b, s, c});
  return r.rule;
}

LogicalResult SSDScanOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getX(), "x", 3)) ||
      failed(checkRank(*this, getDt(), "dt", 3)) || failed(checkRank(*this, getB(), "B", 3)))
    return failure();
  auto x = shape(getX());
  int64_t heads = getHeads(), groups = getGroups();
  if (heads <= 0 || groups <= 0 || heads % groups != 0)
    return emitOpError("heads (") << heads << ") must be a positive multiple of groups (" << groups
                                  << ")";
  if (failed(checkDivides(*this, x[2], heads, "x channels by heads")) ||
      failed(checkDivides(*this, shape(getB())[2], groups, "B channels by groups")))
    return failure();
  int64_t p = x[2] / heads, n = shape(getB())[2] / groups;
  if (shape(getDt()) != ArrayRef<int64_t>{x[0], x[1], heads})
    return emitOpError("dt must be [batch, seq, heads]");
  if (shape(getC()) != shape(getB()) || shape(getB())[0] != x[0] || shape(getB())[1] != x[1])
    return emitOpError("B and C must be [batch, seq, groups * state]");
  for (auto [v, name] :
       {std::pair{getALog(), "a_log"}, std::pair{getD(), "d"}, std::pair{getDtBias(), "dt_bias"}})
    if (failed(checkRank(*this, v, name, 1)) || failed(checkDim(*this, v, name, 0, heads, "heads")))
      return failure();
  const int64_t stateDims[] = {x[0], heads, p, n}, decayDims[] = {x[0], heads};
  return checkScanSummaries(*this, getX(), getChunkAxes(), getState(), getDecay(), getStateIn(),
                            stateDims, decayDims);
}

ShardingRule SSDScanOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), h = r.factor("groups", FactorKind::Free, getGroups()),
      p = r.factor("p", FactorKind::Whole), n = r.factor("n", FactorKind::Whole);
  r.statePassing(s, getChunkAxes());
  r.operand("x", {b, s, h});
  r.operand("dt", {b, s, h});
  r.operand("a_log", {h});
  r.operand("B", {b, s, h});
  r.operand("C", {b, s, h});
  r.operand("d", {h});
  r.operand("dt_bias", {h});
  r.scanSummaries(bool(getStateIn()), {b, s, h}, {b, h, p, n}, {b, h});
  return r.rule;
}

LogicalResult SSDCorrectOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getY0(), "y0", 3)))
    return failure();
  auto y = shape(getY0());
  int64_t heads = getHeads(), groups = getGroups();
  if (heads <= 0 || groups <= 0 || heads % groups != 0)
    return emitOpError("heads (") << heads << ") must be a positive multiple of groups (" << groups
                                  << ")";
  if (failed(checkDivides(*this, y[2], heads, "y0 channels by heads")))
    return failure();
  if (shape(getDt()) != ArrayRef<int64_t>{y[0], y[1], heads})
    return emitOpError("dt must be [batch, seq, heads]");
  if (failed(checkRank(*this, getC(), "C", 3)) ||
      failed(checkDivides(*this, shape(getC())[2], groups, "C channels by groups")))
    return failure();
  if (shape(getC())[0] != y[0] || shape(getC())[1] != y[1])
    return emitOpError("C must be [batch, seq, groups * state]");
  for (auto [v, name] : {std::pair{getALog(), "a_log"}, std::pair{getDtBias(), "dt_bias"}})
    if (failed(checkRank(*this, v, name, 1)) || failed(checkDim(*this, v, name, 0, heads, "heads")))
      return failure();
  int64_t p = y[2] / heads, n = shape(getC())[2] / groups;
  const int64_t stateDims[] = {y[0], heads, p, n};
  return checkCorrectionInit(*this, getY0(), getInit(), getChunkAxes(), stateDims);
}

ShardingRule SSDCorrectOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), h = r.factor("groups", FactorKind::Free, getGroups()),
      p = r.factor("p", FactorKind::Whole), n = r.factor("n", FactorKind::Whole);
  r.mixing(s, Remedy::StatePassing, getChunkAxes());
  r.operand("y0", {b, s, h});
  r.operand("init", {s, b, h, p, n});
  r.operand("C", {b, s, h});
  r.operand("dt", {b, s, h});
  r.operand("a_log", {h});
  r.operand("dt_bias", {h});
  r.result("result", {b, s, h});
  return r.rule;
}

//===----------------------------------------------------------------------===//
// Remedies and rank facts
//===----------------------------------------------------------------------===//

/// A split sequence reads the width-1 tokens before each chunk from sl.halo.
FailureOr<Operation *> CausalConv1dOp::applyRemedy(RemedyContext &ctx) {
  if (getHalo())
    return getOperation();
  if (Value halo = insertHalo(*this, getX(), shape(getWeight())[1] - 1, ctx, ""))
    getHaloMutable().assign(halo);
  return getOperation();
}

void CausalConv1dOp::resolveRankFacts(const RankContext &ctx) {
  (*this)->setAttr(kTokensAttr, ctx.runs(getX(), 1));
}

FailureOr<Operation *> SSDScanOp::applyRemedy(RemedyContext &ctx) {
  return chunkScan(
      *this, getStateIn(), ctx, [&](OpBuilder &b, Value y0, Value init, ArrayAttr axes) -> Value {
        return SSDCorrectOp::create(b, getLoc(), y0.getType(), y0, init, getC(), getDt(), getALog(),
                                    getDtBias(), getHeadsAttr(), getGroupsAttr(), axes);
      });
}

void SSDScanOp::resolveRankFacts(const RankContext &ctx) {
  (*this)->setAttr(kTokensAttr, ctx.runs(getX(), 1));
}

void SSDCorrectOp::resolveRankFacts(const RankContext &ctx) {
  (*this)->setAttr(kTokensAttr, ctx.runs(getY0(), 1));
}
