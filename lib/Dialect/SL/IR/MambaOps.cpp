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
  // A kernel of width 1 reads no earlier token: the sequence splits freely.
  if (shape(getWeight())[1] > 1)
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
// parameter. The scan and the conv mix the sequence: whole, or under
// context parallelism split into chunks that the scan's backward takes
// one by one from each chunk's final-state and decay gradients (the state
// exchange's dual, CollectiveOps.cpp) and the conv's from its halo.

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

/// x's gradient (and, with a halo, the halo rows') from
/// sl.causal_conv1d_grad, the weight's and bias's from
/// sl.causal_conv1d_grad_weight. The halo's gradient goes back to its tokens
/// through sl.halo's own gradient (sl.halo_add).
LogicalResult CausalConv1dOp::buildGradient(GradientBuilder &g) {
  FailureOr<Value> dy = g.resultGradient(0);
  if (failed(dy) || !*dy)
    return failure(failed(dy));
  Value halo = getHalo();
  enum { X, Weight, Bias, Halo };
  if (g.needsGradient(X) || (halo && g.needsGradient(Halo))) {
    SmallVector<Value> operands = {getWeight(), *dy}, likes = {getX()};
    if (halo) {
      operands.push_back(halo);
      likes.push_back(halo);
    }
    FailureOr<Operation *> grad = g.build("sl.causal_conv1d_grad", operands, likes);
    if (failed(grad))
      return failure();
    if (g.needsGradient(X))
      g.contribute(X, (*grad)->getResult(0));
    if (halo && g.needsGradient(Halo))
      g.contribute(Halo, (*grad)->getResult(1));
  }
  if (!g.needsGradient(Weight) && !g.needsGradient(Bias))
    return success();
  SmallVector<Value> operands = {getX(), *dy};
  if (halo)
    operands.push_back(halo);
  FailureOr<Operation *> grad =
      g.build("sl.causal_conv1d_grad_weight", operands, {getWeight(), getBias()});
  if (failed(grad))
    return failure();
  for (unsigned i = Weight; i <= Bias; ++i)
    if (g.needsGradient(i))
      g.contribute(i, (*grad)->getResult(i - Weight));
  return success();
}

/// The token inputs' gradients (x, dt, B, C and state_in) from
/// sl.ssd_scan_grad, the per-head parameters' (a_log, d, dt_bias) from
/// sl.ssd_scan_grad_params, both for the gradients of y and, where the loss
/// reads them (the chunked scan's summaries, through the state exchange), of
/// the final state and decay.
LogicalResult SSDScanOp::buildGradient(GradientBuilder &g) {
  FailureOr<Value> dy = g.resultGradient(0), dstate = g.resultGradient(1),
                   ddecay = g.resultGradient(2);
  if (failed(dy) || failed(dstate) || failed(ddecay))
    return failure();
  if (!*dy) {
    if (*dstate || *ddecay)
      return emitOpError("sl-autodiff: the loss depends on the scan's final state or decay but "
                         "not on its output y, whose gradient the backward takes");
    return success();
  }
  SmallVector<Value> operands = {getX(), getDt(), getALog(),   getB(),
                                 getC(), getD(),  getDtBias(), *dy};
  SmallVector<int32_t> segments(8, 1);
  for (Value v : {Value(getStateIn()), *dstate, *ddecay}) {
    segments.push_back(v ? 1 : 0);
    if (v)
      operands.push_back(v);
  }
  auto attrs = GradientBuilder::attrsOf(*this, {"heads", "groups", "chunk_axes"});
  Builder b(getContext());
  attrs.push_back(b.getNamedAttr("operandSegmentSizes", b.getDenseI32ArrayAttr(segments)));
  enum { X, Dt, ALog, Bm, Cm, D, DtBias, StateIn };
  SmallVector<unsigned> tokens = {X, Dt, Bm, Cm};
  if (getStateIn())
    tokens.push_back(StateIn);
  if (failed(buildOperandGradients(*this, g, "sl.ssd_scan_grad", operands, tokens, attrs)))
    return failure();
  return buildOperandGradients(*this, g, "sl.ssd_scan_grad_params", operands, {ALog, D, DtBias},
                               attrs);
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
  if (failed(
          buildOperandGradients(*this, g, "sl.ssd_correct_grad", operands, {Init, Cm, Dt}, attrs)))
    return failure();
  return buildOperandGradients(*this, g, "sl.ssd_correct_grad_params", operands, {ALog, DtBias},
                               attrs);
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

/// The halo operand of a conv's backward op: [b, chunks * (width - 1), c]
/// for x's (or dy's) chunks, its sequence split like x's.
static LogicalResult verifyConvHalo(Operation *op, Value x, Value halo, int64_t width) {
  if (!halo)
    return success();
  auto xs = shape(x);
  if (failed(checkRank(op, halo, "halo", 3)) ||
      failed(checkDim(op, halo, "halo", 0, xs[0], "batch")) ||
      failed(checkDim(op, halo, "halo", 2, xs[2], "channels")))
    return failure();
  if (width < 2)
    return op->emitOpError("has a halo but its kernel of width ")
           << width << " reads no earlier tokens";
  int64_t chunks = seqChunks(op, x);
  if (chunks > 0 && shape(halo)[1] != chunks * (width - 1))
    return op->emitOpError("halo holds ")
           << shape(halo)[1] << " tokens but " << chunks << " sequence chunks need " << chunks
           << " * " << width - 1;
  LayoutAttr hl = getLayout(halo), xl = getLayout(x);
  if (hl && xl && (hl.getDimAxes(1) != xl.getDimAxes(1) || hl.getDimOrder(1) != xl.getDimOrder(1)))
    return op->emitOpError("halo must split its sequence like the tokens");
  return success();
}

LogicalResult CausalConv1dGradOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getDy(), "dy", 3)) ||
      failed(checkRank(*this, getWeight(), "weight", 2)) ||
      failed(checkDim(*this, getWeight(), "weight", 0, shape(getDy())[2], "channels")) ||
      failed(verifyConvHalo(*this, getDy(), getHalo(), shape(getWeight())[1])))
    return failure();
  return checkOptionalGradient(*this, getHalo(), getDhalo(), "halo", "dhalo");
}

/// The conv's sequence factor: split only with the halo remedy over the
/// halo's axes when there is one, else whole; free for a kernel of width 1,
/// which reads no earlier token.
static int convSequence(RuleBuilder &r, Value halo, Value weight) {
  int s = r.seq();
  if (shape(weight)[1] == 1)
    return s;
  SmallVector<StringRef> haloAxes;
  if (LayoutAttr hl = halo ? getLayout(halo) : LayoutAttr(); hl && hl.getRank() > 1)
    haloAxes = hl.getDimAxes(1);
  r.mixing(s, halo ? Remedy::Halo : Remedy::None, haloAxes);
  return s;
}

ShardingRule CausalConv1dGradOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = convSequence(r, getHalo(), getWeight()), c = r.factor("c"),
      w = r.factor("width", FactorKind::Whole);
  r.operand("weight", {c, w});
  r.operand("dy", {b, s, c});
  int hs = getHalo() ? r.seq("halo") : -1;
  if (getHalo())
    r.operand("halo", {b, hs, c});
  r.result("dx", {b, s, c});
  if (getHalo())
    r.result("dhalo", {b, hs, c});
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
  return verifyConvHalo(*this, getX(), getHalo(), shape(getDweight())[1]);
}

/// With a halo the tokens of each chunk are summed where they are: the
/// sequence is contracted (a pending sum over the halo's axes).
ShardingRule CausalConv1dGradWeightOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = convSequence(r, getHalo(), getDweight()), c = r.factor("c"),
      w = r.factor("width", FactorKind::Whole);
  contractBatch(r, b);
  // A split sequence (with its halo, or freely at width 1) leaves a pending
  // sum of the tokens' contributions.
  if (getHalo() || shape(getDweight())[1] == 1)
    r.rule.factors[s].kind = FactorKind::Contracted;
  r.operand("x", {b, s, c});
  r.operand("dy", {b, s, c});
  if (getHalo())
    r.operand("halo", {b, r.seq("halo"), c});
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

/// The scan's backward: its operands as the forward's, dy in y's place,
/// state_in, dstate and ddecay shaped as the forward's summaries.
template <typename Op>
static LogicalResult verifySsdGrad(Op op, ArrayRef<std::pair<Value, Value>> resultsLike) {
  return verifyGradResults(
      op,
      [&]() -> LogicalResult {
        if (failed(verifySsdOperands(op)) ||
            failed(checkChunkAxes(op, op.getX(), op.getChunkAxes())))
          return failure();
        auto x = shape(op.getX());
        int64_t heads = op.getHeads(), p = x[2] / heads, n = shape(op.getB())[2] / op.getGroups();
        const int64_t stateDims[] = {x[0], heads, p, n}, decayDims[] = {x[0], heads};
        int64_t chunks = numChunks(op, op.getX(), op.getChunkAxes());
        for (auto [v, name, dims] :
             {std::tuple{op.getStateIn(), "state_in", ArrayRef<int64_t>(stateDims)},
              std::tuple{op.getDstate(), "dstate", ArrayRef<int64_t>(stateDims)},
              std::tuple{op.getDdecay(), "ddecay", ArrayRef<int64_t>(decayDims)}})
          if (v && failed(checkSummary(op, v, name, op.getChunkAxes(), chunks, dims)))
            return failure();
        return success();
      },
      resultsLike);
}

LogicalResult SSDScanGradOp::verify() {
  SmallVector<std::pair<Value, Value>> like = {
      {getDx(), getX()}, {getDdt(), getDt()}, {getDB(), getB()}, {getDC(), getC()}};
  if (failed(checkOptionalGradient(*this, getStateIn(), getDstateIn(), "state_in", "dstate_in")))
    return failure();
  return verifySsdGrad(*this, like);
}

LogicalResult SSDScanGradParamsOp::verify() {
  return verifySsdGrad(*this,
                       {{getDaLog(), getALog()}, {getDd(), getD()}, {getDdtBias(), getDtBias()}});
}

/// sl.ssd_scan's factors, the sequence split only over chunk_axes (else
/// whole), and its summaries (state_in, dstate, ddecay, dstate_in) per
/// chunk once chunked; `tokenResults` (shaped like x) or the per-head
/// `paramResults` (batch contracted, and with chunks the sequence: each rank
/// sums its own chunks).
template <typename Op>
static ShardingRule ssdGradRule(Op op, ArrayRef<const char *> tokenResults,
                                ArrayRef<const char *> paramResults) {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), h = r.factor("groups", FactorKind::Free, op.getGroups());
  ArrayAttr chunkAxes = op.getChunkAxes();
  if (chunkAxes.empty())
    r.mixing(s, Remedy::None);
  else
    r.statePassing(s, chunkAxes);
  if (!paramResults.empty()) {
    contractBatch(r, b);
    if (!chunkAxes.empty())
      r.rule.factors[s].kind = FactorKind::Contracted;
  }
  for (const char *name : {"x", "dt", "a_log", "B", "C", "d", "dt_bias", "dy"}) {
    bool perHead =
        StringRef(name) == "a_log" || StringRef(name) == "d" || StringRef(name) == "dt_bias";
    r.operand(name, perHead ? std::vector<int>{h} : std::vector<int>{b, s, h});
  }
  // The state's p and n are factors only where a summary carries them.
  bool summaries = op.getStateIn() || op.getDstate() || op.getDdecay();
  int p = summaries ? r.factor("p", FactorKind::Whole) : -1,
      n = summaries ? r.factor("n", FactorKind::Whole) : -1;
  if (op.getStateIn())
    r.operand("state_in", r.summary({b, h, p, n}));
  if (op.getDstate())
    r.operand("dstate", r.summary({b, h, p, n}));
  if (op.getDdecay())
    r.operand("ddecay", r.summary({b, h}));
  for (const char *name : tokenResults)
    r.result(name, {b, s, h});
  if (!tokenResults.empty() && op.getStateIn())
    r.result("dstate_in", r.summary({b, h, p, n}));
  for (const char *name : paramResults)
    r.result(name, {h});
  return r.rule;
}

ShardingRule SSDScanGradOp::getShardingRule() {
  return ssdGradRule(*this, {"dx", "ddt", "dB", "dC"}, {});
}

ShardingRule SSDScanGradParamsOp::getShardingRule() {
  return ssdGradRule(*this, {}, {"da_log", "dd", "ddt_bias"});
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
