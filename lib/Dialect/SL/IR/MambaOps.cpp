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

/// y[b, s, c] in `groups` groups of channels and a weight (or its gradient,
/// `name`) of c.
static LogicalResult verifyGatedNorm(Operation *op, Value y, Value weight, int64_t groups,
                                     StringRef name = "weight") {
  if (failed(verifyStaticAndElementTypes(op)) || failed(checkRank(op, y, "y", 3)) ||
      failed(checkRank(op, weight, name, 1)))
    return failure();
  auto c = shape(y)[2];
  if (failed(checkDim(op, weight, name, 0, c, "channels")) ||
      failed(checkDivides(op, c, groups, "channels by groups")))
    return failure();
  return success();
}

LogicalResult GatedRMSNormOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  return verifyGatedNorm(*this, getY(), getWeight(), getGroups());
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

/// The operands every SSD scan op shares: x [b, s, heads*p], dt [b, s, heads],
/// B and C [b, s, groups*n], a_log, d, dt_bias [heads].
template <typename Op> static LogicalResult verifySsdOperands(Op op) {
  if (failed(verifyStaticAndElementTypes(op)) || failed(checkRank(op, op.getX(), "x", 3)) ||
      failed(checkRank(op, op.getDt(), "dt", 3)) || failed(checkRank(op, op.getB(), "B", 3)))
    return failure();
  auto x = shape(op.getX());
  int64_t heads = op.getHeads(), groups = op.getGroups();
  if (heads <= 0 || groups <= 0 || heads % groups != 0)
    return op.emitOpError("heads (")
           << heads << ") must be a positive multiple of groups (" << groups << ")";
  if (failed(checkDivides(op, x[2], heads, "x channels by heads")) ||
      failed(checkDivides(op, shape(op.getB())[2], groups, "B channels by groups")))
    return failure();
  if (shape(op.getDt()) != ArrayRef<int64_t>{x[0], x[1], heads})
    return op.emitOpError("dt must be [batch, seq, heads]");
  if (shape(op.getC()) != shape(op.getB()) || shape(op.getB())[0] != x[0] ||
      shape(op.getB())[1] != x[1])
    return op.emitOpError("B and C must be [batch, seq, groups * state]");
  for (auto [v, name] : {std::pair{op.getALog(), "a_log"}, std::pair{op.getD(), "d"},
                         std::pair{op.getDtBias(), "dt_bias"}})
    if (failed(checkRank(op, v, name, 1)) || failed(checkDim(op, v, name, 0, heads, "heads")))
      return failure();
  return success();
}

LogicalResult SSDScanOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifySsdOperands(*this)))
    return failure();
  auto x = shape(getX());
  int64_t heads = getHeads(), p = x[2] / heads, n = shape(getB())[2] / getGroups();
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

/// The operands every correction op shares: `y` (y0, or the backward's dy)
/// [b, s, heads*p], init [chunks, b, heads, p, n], C [b, s, groups*n], dt
/// [b, s, heads], a_log and dt_bias [heads].
template <typename Op>
static LogicalResult verifyCorrectOperands(Op op, Value yv, StringRef yName) {
  if (failed(verifyStaticAndElementTypes(op)) || failed(checkRank(op, yv, yName, 3)))
    return failure();
  auto y = shape(yv);
  int64_t heads = op.getHeads(), groups = op.getGroups();
  if (heads <= 0 || groups <= 0 || heads % groups != 0)
    return op.emitOpError("heads (")
           << heads << ") must be a positive multiple of groups (" << groups << ")";
  if (failed(checkDivides(op, y[2], heads, (yName + " channels by heads").str())))
    return failure();
  if (shape(op.getDt()) != ArrayRef<int64_t>{y[0], y[1], heads})
    return op.emitOpError("dt must be [batch, seq, heads]");
  if (failed(checkRank(op, op.getC(), "C", 3)) ||
      failed(checkDivides(op, shape(op.getC())[2], groups, "C channels by groups")))
    return failure();
  if (shape(op.getC())[0] != y[0] || shape(op.getC())[1] != y[1])
    return op.emitOpError("C must be [batch, seq, groups * state]");
  for (auto [v, name] : {std::pair{op.getALog(), "a_log"}, std::pair{op.getDtBias(), "dt_bias"}})
    if (failed(checkRank(op, v, name, 1)) || failed(checkDim(op, v, name, 0, heads, "heads")))
      return failure();
  int64_t p = y[2] / heads, n = shape(op.getC())[2] / groups;
  const int64_t stateDims[] = {y[0], heads, p, n};
  return checkCorrectionInit(op, yv, op.getInit(), op.getChunkAxes(), stateDims);
}

LogicalResult SSDCorrectOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  return verifyCorrectOperands(*this, getY0(), "y0");
}

/// sl.ssd_correct's factors, its token operand `y` (y0 or dy) and, for the
/// backward, `tokenResults` or the per-head `paramResults` (the tokens
/// contracted).
static ShardingRule correctRule(int64_t groups, ArrayAttr chunkAxes, const char *y,
                                ArrayRef<const char *> tokenResults,
                                ArrayRef<const char *> paramResults) {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), h = r.factor("groups", FactorKind::Free, groups),
      p = r.factor("p", FactorKind::Whole), n = r.factor("n", FactorKind::Whole);
  if (paramResults.empty()) {
    r.mixing(s, Remedy::StatePassing, chunkAxes);
  } else {
    r.rule.factors[b].kind = FactorKind::Contracted;
    r.rule.factors[s].kind = FactorKind::Contracted;
  }
  bool forward = StringRef(y) == "y0";
  if (forward)
    r.operand(y, {b, s, h});
  r.operand("init", {s, b, h, p, n});
  r.operand("C", {b, s, h});
  r.operand("dt", {b, s, h});
  r.operand("a_log", {h});
  r.operand("dt_bias", {h});
  if (!forward)
    r.operand(y, {b, s, h});
  // The forward's one result is shaped like y0; the backward's like init, C
  // and dt.
  std::vector<std::vector<int>> dims = {{s, b, h, p, n}, {b, s, h}, {b, s, h}};
  if (forward)
    dims = {{b, s, h}};
  for (auto [i, name] : llvm::enumerate(tokenResults))
    r.result(name, dims[i]);
  for (const char *name : paramResults)
    r.result(name, {h});
  return r.rule;
}

ShardingRule SSDCorrectOp::getShardingRule() {
  return correctRule(getGroups(), getChunkAxes(), "y0", {"result"}, {});
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

//===----------------------------------------------------------------------===//
// Gradients
//===----------------------------------------------------------------------===//
//
// A backward op keeps its forward's factors; what it sums over the tokens
// (a per-channel or per-head parameter's gradient) has its batch contracted,
// so data parallelism leaves a pending sum that sl-autodiff reduces onto the
// parameter. The scan and the conv mix the sequence, which is whole here.
// Of the chunked forms (context parallelism) only the scan's correction has
// its backward: the conv with a halo and the chunked scan refuse, and the
// state exchange states no gradient yet.

/// Result `i`'s gradient, or the error of an op whose result `i` carries a
/// gradient that its backward does not take.
static LogicalResult refuseGradient(Operation *op, GradientBuilder &g, unsigned i, StringRef what) {
  FailureOr<Value> grad = g.resultGradient(i);
  if (failed(grad))
    return failure();
  if (*grad)
    return op->emitOpError("sl-autodiff: the loss depends on ")
           << what << ", whose gradient the backward does not take";
  return success();
}

LogicalResult GatedRMSNormOp::buildGradient(GradientBuilder &g) {
  FailureOr<Value> dy = g.resultGradient(0);
  if (failed(dy) || !*dy)
    return failure(failed(dy));
  auto attrs = GradientBuilder::attrsOf(*this, {"groups", "eps"});
  if (g.needsGradient(0) || g.needsGradient(1)) {
    FailureOr<Operation *> grad = g.build(
        "sl.gated_rms_norm_grad", {getY(), getZ(), getWeight(), *dy}, {getY(), getZ()}, attrs);
    if (failed(grad))
      return failure();
    for (unsigned i = 0; i < 2; ++i)
      if (g.needsGradient(i))
        g.contribute(i, (*grad)->getResult(i));
  }
  if (g.needsGradient(2) &&
      failed(g.give(2, g.buildOne("sl.gated_rms_norm_grad_weight", {getY(), getZ(), *dy},
                                  getWeight(), attrs))))
    return failure();
  return success();
}

LogicalResult CausalConv1dOp::buildGradient(GradientBuilder &g) {
  if (getHalo())
    return emitOpError("sl-autodiff: the backward of the conv over a split sequence (its halo, "
                       "context parallelism) is not built yet; train without cp");
  FailureOr<Value> dy = g.resultGradient(0);
  if (failed(dy) || !*dy)
    return failure(failed(dy));
  if (g.needsGradient(0) &&
      failed(g.give(0, g.buildOne("sl.causal_conv1d_grad", {getWeight(), *dy}, getX()))))
    return failure();
  if (!g.needsGradient(1) && !g.needsGradient(2))
    return success();
  FailureOr<Operation *> grad =
      g.build("sl.causal_conv1d_grad_weight", {getX(), *dy}, {getWeight(), getBias()});
  if (failed(grad))
    return failure();
  for (unsigned i = 1; i < 3; ++i)
    if (g.needsGradient(i))
      g.contribute(i, (*grad)->getResult(i - 1));
  return success();
}

/// The backward op `name` whose results are the gradients of `op`'s operands
/// `inputs`, in order; not built when none of them needs one.
static LogicalResult buildGradients(Operation *op, GradientBuilder &g, StringRef name,
                                    ValueRange operands, ArrayRef<unsigned> inputs,
                                    ArrayRef<NamedAttribute> attrs) {
  if (llvm::none_of(inputs, [&](unsigned i) { return g.needsGradient(i); }))
    return success();
  SmallVector<Value> likes;
  for (unsigned i : inputs)
    likes.push_back(op->getOperand(i));
  FailureOr<Operation *> grad = g.build(name, operands, likes, attrs);
  if (failed(grad))
    return failure();
  for (auto [j, i] : llvm::enumerate(inputs))
    if (g.needsGradient(i))
      g.contribute(i, (*grad)->getResult(j));
  return success();
}

/// The token inputs' gradients (x, dt, B, C) from sl.ssd_scan_grad, the
/// per-head parameters' (a_log, d, dt_bias) from sl.ssd_scan_grad_params.
LogicalResult SSDScanOp::buildGradient(GradientBuilder &g) {
  if (!getChunkAxes().empty())
    return emitOpError("sl-autodiff: the backward of the chunked SSD scan (state passing over ")
           << getChunkAxes() << ", context parallelism) is not built yet; train without cp";
  if (failed(refuseGradient(*this, g, 1, "the scan's final state")) ||
      failed(refuseGradient(*this, g, 2, "the scan's total decay")))
    return failure();
  FailureOr<Value> dy = g.resultGradient(0);
  if (failed(dy) || !*dy)
    return failure(failed(dy));
  SmallVector<Value> operands = {getX(), getDt(), getALog(),   getB(),
                                 getC(), getD(),  getDtBias(), *dy};
  auto attrs = GradientBuilder::attrsOf(*this, {"heads", "groups"});
  enum { X, Dt, ALog, Bm, Cm, D, DtBias };
  if (failed(buildGradients(*this, g, "sl.ssd_scan_grad", operands, {X, Dt, Bm, Cm}, attrs)))
    return failure();
  return buildGradients(*this, g, "sl.ssd_scan_grad_params", operands, {ALog, D, DtBias}, attrs);
}

/// y0's gradient is dy itself; init's, C's and dt's come from
/// sl.ssd_correct_grad, a_log's and dt_bias's from
/// sl.ssd_correct_grad_params. init's gradient then meets the exchange's
/// dual.
LogicalResult SSDCorrectOp::buildGradient(GradientBuilder &g) {
  FailureOr<Value> dy = g.resultGradient(0);
  if (failed(dy) || !*dy)
    return failure(failed(dy));
  if (g.needsGradient(0))
    g.contribute(0, *dy);
  SmallVector<Value> operands = {getInit(), getC(), getDt(), getALog(), getDtBias(), *dy};
  auto attrs = GradientBuilder::attrsOf(*this, {"heads", "groups", "chunk_axes"});
  enum { Init = 1, Cm, Dt, ALog, DtBias };
  if (failed(buildGradients(*this, g, "sl.ssd_correct_grad", operands, {Init, Cm, Dt}, attrs)))
    return failure();
  return buildGradients(*this, g, "sl.ssd_correct_grad_params", operands, {ALog, DtBias}, attrs);
}

//===----------------------------------------------------------------------===//
// Backward ops
//===----------------------------------------------------------------------===//

/// The batch of a backward op that sums over the tokens: contracted. The
/// sequence stays as the op declares it (whole, for the mixing ops).
static void contractBatch(RuleBuilder &r, int b) {
  r.rule.factors[b].kind = FactorKind::Contracted;
}

LogicalResult GatedRMSNormGradOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  return verifyGatedNorm(*this, getY(), getWeight(), getGroups());
}

ShardingRule GatedRMSNormGradOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), c = r.factor("groups", FactorKind::Free, getGroups());
  for (const char *name : {"y", "z"})
    r.operand(name, {b, s, c});
  r.operand("weight", {c});
  r.operand("dresult", {b, s, c});
  r.result("dy", {b, s, c});
  r.result("dz", {b, s, c});
  return r.rule;
}

LogicalResult GatedRMSNormGradWeightOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  return verifyGatedNorm(*this, getY(), getDweight(), getGroups(), "dweight");
}

/// The tokens are summed over: b and s contracted (the norm is token-local,
/// so a split sequence is a partial sum too).
ShardingRule GatedRMSNormGradWeightOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), c = r.factor("groups", FactorKind::Free, getGroups());
  contractBatch(r, b);
  r.rule.factors[s].kind = FactorKind::Contracted;
  for (const char *name : {"y", "z", "dresult"})
    r.operand(name, {b, s, c});
  r.result("dweight", {c});
  return r.rule;
}

LogicalResult CausalConv1dGradOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getDy(), "dy", 3)) ||
      failed(checkRank(*this, getWeight(), "weight", 2)))
    return failure();
  return checkDim(*this, getWeight(), "weight", 0, shape(getDy())[2], "channels");
}

ShardingRule CausalConv1dGradOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), c = r.factor("c"), w = r.factor("width", FactorKind::Whole);
  r.mixing(s, Remedy::None);
  r.operand("weight", {c, w});
  r.operand("dy", {b, s, c});
  r.result("dx", {b, s, c});
  return r.rule;
}

LogicalResult CausalConv1dGradWeightOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getX(), "x", 3)) ||
      failed(checkRank(*this, getDweight(), "dweight", 2)) ||
      failed(checkRank(*this, getDbias(), "dbias", 1)))
    return failure();
  int64_t c = shape(getX())[2];
  if (failed(checkDim(*this, getDweight(), "dweight", 0, c, "channels")) ||
      failed(checkDim(*this, getDbias(), "dbias", 0, c, "channels")))
    return failure();
  if (shape(getDweight())[1] < 1)
    return emitOpError("dweight must have a kernel width of at least 1");
  return success();
}

ShardingRule CausalConv1dGradWeightOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), c = r.factor("c"), w = r.factor("width", FactorKind::Whole);
  contractBatch(r, b);
  r.mixing(s, Remedy::None);
  r.operand("x", {b, s, c});
  r.operand("dy", {b, s, c});
  r.result("dweight", {c, w});
  r.result("dbias", {c});
  return r.rule;
}

/// A backward op whose operands pass `operandsOk` and whose results are
/// shaped like the inputs they differentiate.
static LogicalResult verifyGradResults(Operation *op, function_ref<LogicalResult()> operandsOk,
                                       ArrayRef<std::pair<Value, Value>> resultsLike) {
  if (inPerRankProgram(op))
    return success();
  if (failed(operandsOk()))
    return failure();
  for (auto [result, like] : resultsLike)
    if (shape(result) != shape(like))
      return op->emitOpError("result #") << cast<OpResult>(result).getResultNumber()
                                         << " must be shaped like the input it differentiates";
  return success();
}

template <typename Op>
static LogicalResult verifySsdGrad(Op op, ArrayRef<std::pair<Value, Value>> resultsLike) {
  return verifyGradResults(op, [&] { return verifySsdOperands(op); }, resultsLike);
}

LogicalResult SSDScanGradOp::verify() {
  return verifySsdGrad(
      *this, {{getDx(), getX()}, {getDdt(), getDt()}, {getDB(), getB()}, {getDC(), getC()}});
}

LogicalResult SSDScanGradParamsOp::verify() {
  return verifySsdGrad(*this,
                       {{getDaLog(), getALog()}, {getDd(), getD()}, {getDdtBias(), getDtBias()}});
}

/// sl.ssd_scan's factors with the sequence whole; `tokenResults` (shaped like
/// x) or the per-head `paramResults` (batch contracted).
static ShardingRule ssdGradRule(int64_t groups, ArrayRef<const char *> tokenResults,
                                ArrayRef<const char *> paramResults) {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), h = r.factor("groups", FactorKind::Free, groups);
  r.mixing(s, Remedy::None);
  if (!paramResults.empty())
    contractBatch(r, b);
  for (const char *name : {"x", "dt", "a_log", "B", "C", "d", "dt_bias", "dy"}) {
    bool perHead =
        StringRef(name) == "a_log" || StringRef(name) == "d" || StringRef(name) == "dt_bias";
    r.operand(name, perHead ? std::vector<int>{h} : std::vector<int>{b, s, h});
  }
  for (const char *name : tokenResults)
    r.result(name, {b, s, h});
  for (const char *name : paramResults)
    r.result(name, {h});
  return r.rule;
}

ShardingRule SSDScanGradOp::getShardingRule() {
  return ssdGradRule(getGroups(), {"dx", "ddt", "dB", "dC"}, {});
}

ShardingRule SSDScanGradParamsOp::getShardingRule() {
  return ssdGradRule(getGroups(), {}, {"da_log", "dd", "ddt_bias"});
}

/// The correction's backward: its operands as the forward's, dy in y0's
/// place.
template <typename Op>
static LogicalResult verifyCorrectGrad(Op op, ArrayRef<std::pair<Value, Value>> resultsLike) {
  return verifyGradResults(
      op, [&] { return verifyCorrectOperands(op, op.getDy(), "dy"); }, resultsLike);
}

LogicalResult SSDCorrectGradOp::verify() {
  return verifyCorrectGrad(*this,
                           {{getDinit(), getInit()}, {getDC(), getC()}, {getDdt(), getDt()}});
}

LogicalResult SSDCorrectGradParamsOp::verify() {
  return verifyCorrectGrad(*this, {{getDaLog(), getALog()}, {getDdtBias(), getDtBias()}});
}

ShardingRule SSDCorrectGradOp::getShardingRule() {
  return correctRule(getGroups(), getChunkAxes(), "dy", {"dinit", "dC", "ddt"}, {});
}

ShardingRule SSDCorrectGradParamsOp::getShardingRule() {
  return correctRule(getGroups(), getChunkAxes(), "dy", {}, {"da_log", "ddt_bias"});
}
