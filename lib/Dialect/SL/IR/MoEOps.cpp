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

/// The experts' weights: gate and up [experts, hidden, ffn], down [experts,
/// ffn, hidden], for tokens [experts, rows..., hidden] (one row dimension or
/// more).
static LogicalResult checkExpertWeights(Operation *op, Value tokens, Value gate, Value down) {
  if (shape(tokens).size() < 3)
    return op->emitOpError("tokens must be [experts, rows..., hidden] with at least one row "
                           "dimension, got ")
           << tokens.getType();
  if (failed(checkRank(op, gate, "gate", 3)) || failed(checkRank(op, down, "down", 3)))
    return failure();
  auto t = shape(tokens), g = shape(gate);
  if (g[0] != t[0] || g[1] != t.back())
    return op->emitOpError("gate must be [experts, hidden, ffn] = [")
           << t[0] << ", " << t.back() << ", ffn], got [" << g[0] << ", " << g[1] << ", " << g[2]
           << "]";
  SmallVector<int64_t> want{g[0], g[2], g[1]};
  if (shape(down) != ArrayRef<int64_t>(want))
    return op->emitOpError("down must be [experts, ffn, hidden] = [")
           << want[0] << ", " << want[1] << ", " << want[2] << "]";
  return success();
}

/// The factors of sl.moe_experts on tokens of rank `rank` ([experts, rows...,
/// hidden]); with `grad` 1 those of its tokens' gradient (dy added), with 2
/// those of its weights' gradients: the rows contracted (split tokens leave
/// pending sums) and the ffn dimension free. The first row dimension is b and
/// the second the sequence, as in the dropless path's [experts, b, s, h] and
/// capacity mode's [experts, Gb, Gs, C, h].
static ShardingRule expertsRule(size_t rank, int grad) {
  RuleBuilder r;
  bool weights = grad == 2;
  FactorKind rowKind = weights ? FactorKind::Contracted : FactorKind::Free;
  int e = r.factor("experts");
  std::vector<int> tokens{e};
  for (size_t d = 1; d + 1 < rank; ++d) {
    int f = d == 1 ? r.factor("b") : d == 2 ? r.seq() : r.factor("r" + std::to_string(d));
    r.rule.factors[f].kind = rowKind;
    tokens.push_back(f);
  }
  int h = r.factor("h", FactorKind::Whole),
      f = r.factor("f", weights ? FactorKind::Free : FactorKind::Contracted);
  tokens.push_back(h);
  r.operand("tokens", tokens);
  r.operand("gate", {e, h, f});
  r.operand("up", {e, h, f});
  r.operand("down", {e, f, h});
  if (grad)
    r.operand("dy", tokens);
  if (weights) {
    r.result("dgate", {e, h, f});
    r.result("dup", {e, h, f});
    r.result("ddown", {e, f, h});
  } else {
    r.result(grad ? "dtokens" : "result", tokens);
  }
  return r.rule;
}

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
  if (failed(verifyStaticAndElementTypes(*this)))
    return failure();
  return checkExpertWeights(*this, getTokens(), getGate(), getDown());
}

ShardingRule MoEExpertsOp::getShardingRule() { return expertsRule(shape(getTokens()).size(), 0); }

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
// Dropless mode (docs/dialect.md, "Dropless mode")
//===----------------------------------------------------------------------===//
//
// How many rows reach a rank depends on the routing, so no layout of a global
// value describes the exchange: sl.moe_dropless carries it, as
// sl.ring_attention carries its K, V exchange, and its experts factor may be
// split over `expert_axes` although those axes also split the tokens.

static LogicalResult checkRouting(Operation *op, Value routing, StringRef name, Value tokens,
                                  StringRef tokensName, unsigned batchDim);

/// The checks sl.moe_dropless and its gradient share.
template <typename OpTy> static LogicalResult verifyDropless(OpTy op) {
  if (failed(verifyStaticAndElementTypes(op)) || failed(checkRank(op, op.getX(), "x", 3)) ||
      failed(checkRouting(op, op.getWeights(), "weights", op.getX(), "x", 0)) ||
      failed(checkRank(op, op.getGate(), "gate", 3)) ||
      failed(checkRank(op, op.getDown(), "down", 3)))
    return failure();
  auto x = shape(op.getX()), g = shape(op.getGate());
  if (g[1] != x[2])
    return op.emitOpError("gate must be [experts, hidden, ffn] with hidden = ")
           << x[2] << " (x's), got [" << g[0] << ", " << g[1] << ", " << g[2] << "]";
  SmallVector<int64_t> want{g[0], g[2], g[1]};
  if (shape(op.getDown()) != ArrayRef<int64_t>(want))
    return op.emitOpError("down must be [experts, ffn, hidden] = [")
           << want[0] << ", " << want[1] << ", " << want[2] << "]";
  int64_t k = shape(op.getWeights())[2];
  if (k > g[0])
    return op.emitOpError("k (") << k << ") exceeds the " << g[0] << " experts";
  // The owner of expert e is member e / (E / ep) of the group of
  // expert_axes: the experts must be split over exactly those axes.
  if (LayoutAttr l = getLayout(op.getGate())) {
    SmallVector<StringRef> expertAxes;
    for (Attribute a : op.getExpertAxes())
      expertAxes.push_back(cast<StringAttr>(a).getValue());
    if (l.getDimAxes(0) != expertAxes)
      return op.emitOpError("expert_axes ") << shardline::formatAxes(axisNames(op.getExpertAxes()))
                                            << " must be the axes that split the experts of gate, "
                                            << shardline::formatAxes(toLayout(l).dims[0]);
  }
  // The expert-tensor group splits f: gate's and up's last dimension, down's
  // middle one, over exactly tensor_axes, none of them an expert axis.
  std::vector<std::string> tensor = axisNames(op.getTensorAxes()),
                           expert = axisNames(op.getExpertAxes());
  for (const std::string &a : tensor)
    if (llvm::count(tensor, a) > 1 || llvm::is_contained(expert, a))
      return op.emitOpError("tensor_axes ")
             << shardline::formatAxes(tensor) << " must be distinct axes, none of expert_axes "
             << shardline::formatAxes(expert);
  for (auto [v, dim, name] :
       {std::tuple{op.getGate(), 2u, "gate"}, std::tuple{op.getUp(), 2u, "up"},
        std::tuple{op.getDown(), 1u, "down"}})
    if (LayoutAttr l = getLayout(v); l && toLayout(l).dims[dim] != tensor)
      return op.emitOpError("tensor_axes ")
             << shardline::formatAxes(tensor) << " must be the axes that split the ffn of " << name
             << ", " << shardline::formatAxes(toLayout(l).dims[dim]);
  return success();
}

/// b, s free (tokens); h and k whole; the experts exchanged by count over
/// `expertAxes`; f whole, or with `tensorAxes` gathered and reduce-scattered
/// by the op over them. With `grad`, dy joins the operands and the weights'
/// gradients sum over the tokens, except over the exchanged axes.
static ShardingRule droplessRule(ArrayAttr expertAxes, ArrayAttr tensorAxes, bool grad) {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), h = r.factor("h", FactorKind::Whole),
      k = r.factor("k", FactorKind::Whole), e = r.factor("experts"),
      f = r.factor("f", FactorKind::Whole);
  r.mixing(e, Remedy::ExpertExchange, expertAxes);
  if (!tensorAxes.empty())
    r.mixing(f, Remedy::ExpertExchange, tensorAxes);
  r.operand("x", {b, s, h});
  r.operand("weights", {b, s, k});
  r.operand("indices", {b, s, k});
  r.operand("gate", {e, h, f});
  r.operand("up", {e, h, f});
  r.operand("down", {e, f, h});
  if (!grad) {
    r.result("result", {b, s, h});
    return r.rule;
  }
  r.operand("dy", {b, s, h});
  r.result("dx", {b, s, h});
  r.result("dweights", {b, s, k});
  r.result("dgate", {e, h, f});
  r.result("dup", {e, h, f});
  r.result("ddown", {e, f, h});
  r.rule.resultSums = {{}, {}, {b, s}, {b, s}, {b, s}};
  return r.rule;
}

/// What one rank sends at balanced routing, each rank's k x local-token rows
/// spread evenly over the experts: (ep - 1) / ep of `rowBytes` (the bytes of
/// all its routed rows' exchanged values), and E / ep i32 counts to each
/// other member; with an expert-tensor group of etp > 1, the k x
/// local-token rows it received, `etpBytes` per row set, to each of the
/// other etp - 1 members, and the E / ep counts with them. -1 (no exchange)
/// when both groups are one rank.
static int64_t balancedBytes(const shardline::Mesh &mesh, ArrayAttr expertAxes,
                             ArrayAttr tensorAxes, Value gate, int64_t rowBytes, int64_t etpBytes) {
  int64_t ep = groupSize(mesh, expertAxes), etp = groupSize(mesh, tensorAxes);
  if (ep <= 1 && etp <= 1)
    return -1;
  int64_t local = shape(gate)[0] / std::max<int64_t>(ep, 1);
  int64_t sent = shardline::saturatingAdd(shardline::saturatingMul(rowBytes, ep - 1) / ep,
                                          (ep - 1) * local * 4);
  return shardline::saturatingAdd(
      sent,
      shardline::saturatingAdd(shardline::saturatingMul(etpBytes, etp - 1), (etp - 1) * local * 4));
}

LogicalResult MoEDroplessOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  return verifyDropless(*this);
}

ShardingRule MoEDroplessOp::getShardingRule() {
  return droplessRule(getExpertAxes(), getTensorAxes(), false);
}

/// The rows out (x) and their outputs back; over etp the received rows
/// gathered and their partial outputs reduce-scattered.
int64_t MoEDroplessOp::sentBytesPerRank(const shardline::Mesh &mesh) {
  int64_t k = shape(getIndices())[2];
  int64_t rows = shardline::saturatingMul(2 * k, localBytes(getX(), mesh));
  return balancedBytes(mesh, getExpertAxes(), getTensorAxes(), getGate(), rows, rows);
}

LogicalResult MoEDroplessGradOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  return verifyDropless(*this);
}

ShardingRule MoEDroplessGradOp::getShardingRule() {
  return droplessRule(getExpertAxes(), getTensorAxes(), true);
}

/// The rows' x and dy and their weights out; their dx and dweights back.
int64_t MoEDroplessGradOp::sentBytesPerRank(const shardline::Mesh &mesh) {
  int64_t k = shape(getIndices())[2];
  int64_t rows =
      shardline::saturatingAdd(shardline::saturatingMul(3 * k, localBytes(getX(), mesh)),
                               shardline::saturatingMul(2, localBytes(getWeights(), mesh)));
  return balancedBytes(mesh, getExpertAxes(), getTensorAxes(), getGate(), rows, rows);
}

//===----------------------------------------------------------------------===//
// Capacity mode (docs/dialect.md, "Capacity groups")
//===----------------------------------------------------------------------===//
//
// The per-token values [b, s, k] or [b, s, h] and the buffers [E, Gb, Gs, C, h]
// share the factors b and s although their extents differ: a factor carries
// no size, and its granule (the number of groups along it) keeps every rank's
// groups whole, so a rank's tokens and its buffer rows describe the same
// groups.

/// A capacity op's experts (at least the k each token chooses) and capacity
/// (at least one row per expert per group).
static LogicalResult checkExpertsAndCapacity(Operation *op, int64_t experts, int64_t capacity,
                                             int64_t k) {
  if (experts < k)
    return op->emitOpError("experts (") << experts << ") must be at least k (" << k << ")";
  if (capacity < 1)
    return op->emitOpError("capacity must be at least 1, got ") << capacity;
  return success();
}

/// Checks `group` = [rows, positions] against the tokens [b, s, ...] of
/// `tokens` (named `tokensName`); returns the number of groups along each,
/// {Gb, Gs}.
static FailureOr<std::pair<int64_t, int64_t>> checkGroups(Operation *op, ArrayRef<int64_t> group,
                                                          Value tokens, StringRef tokensName) {
  if (group.size() != 2)
    return op->emitOpError("group must be [rows, positions], got ") << group.size() << " values";
  if (shape(tokens).size() < 2)
    return op->emitOpError() << tokensName << " must be [batch, seq, ...], got "
                             << tokens.getType();
  auto t = shape(tokens);
  static const char *const what[] = {"rows", "positions"};
  static const char *const of[] = {"batch", "seq"};
  for (unsigned d = 0; d < 2; ++d)
    if (group[d] < 1 || t[d] % group[d] != 0)
      return op->emitOpError("group ")
             << what[d] << " (" << group[d] << ") must be positive and divide the " << of[d]
             << " of " << tokensName << " (" << t[d] << ")";
  return std::pair{t[0] / group[0], t[1] / group[1]};
}

/// `buffer` is [experts, Gb, Gs, capacity, hidden] for the groups `groups`
/// and the tokens `tokens` [b, s, hidden]; experts and capacity are checked
/// when given (> 0) and must be positive.
static LogicalResult checkBuffer(Operation *op, Value buffer, StringRef name,
                                 std::pair<int64_t, int64_t> groups, Value tokens,
                                 StringRef tokensName, int64_t experts, int64_t capacity) {
  if (failed(checkRank(op, buffer, name, 5)) || failed(checkRank(op, tokens, tokensName, 3)))
    return failure();
  std::string hidden = "hidden of " + tokensName.str();
  if ((experts > 0 && failed(checkDim(op, buffer, name, 0, experts, "experts"))) ||
      failed(checkDim(op, buffer, name, 1, groups.first, "batch groups")) ||
      failed(checkDim(op, buffer, name, 2, groups.second, "sequence groups")) ||
      (capacity > 0 && failed(checkDim(op, buffer, name, 3, capacity, "capacity"))) ||
      failed(checkDim(op, buffer, name, 4, shape(tokens)[2], hidden)))
    return failure();
  if (shape(buffer)[0] < 1 || shape(buffer)[3] < 1)
    return op->emitOpError() << name << " must have at least one expert and one row of capacity";
  return success();
}

/// The routing values [b, s, k] (weights, indices, slots share one shape by
/// the ops' traits) for the tokens `tokens`, checked like the dense path's.
static LogicalResult checkRouting(Operation *op, Value routing, StringRef name, Value tokens,
                                  StringRef tokensName, unsigned batchDim);

/// The factors of capacity mode: b (granule Gb) and the sequence s (granule
/// Gs) on the tokens and on the buffers' group dimensions, k whole and, with
/// `buffers`, h (of `hKind`) and experts and capacity whole (-1 without).
struct CapacityFactors {
  int b, s, h = -1, e = -1, c = -1, k;
};
static CapacityFactors capacityFactors(RuleBuilder &r, ArrayRef<int64_t> group, Value tokens,
                                       FactorKind hKind = FactorKind::Free, bool buffers = true) {
  auto t = shape(tokens);
  auto groups = [&](unsigned d) -> int64_t {
    return group.size() == 2 && t.size() > d && group[d] > 0 ? t[d] / group[d] : 0;
  };
  CapacityFactors f;
  f.b = r.factor("b", FactorKind::Free, groups(0));
  r.rule.factors[f.b].granuleName = "batch groups";
  f.s = r.seq();
  r.rule.factors[f.s].granule = groups(1);
  r.rule.factors[f.s].granuleName = "sequence groups";
  if (buffers) {
    f.h = r.factor("h", hKind);
    f.e = r.factor("experts", FactorKind::Whole);
    f.c = r.factor("capacity", FactorKind::Whole);
  }
  f.k = r.factor("k", FactorKind::Whole);
  return f;
}

LogicalResult MoECapacitySlotsOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) ||
      failed(checkRank(*this, getWeights(), "weights", 3)) ||
      failed(checkGroups(*this, getGroup(), getWeights(), "weights")))
    return failure();
  if (failed(checkExpertsAndCapacity(*this, getExperts(), getCapacity(), shape(getWeights())[2])))
    return failure();
  if (getDropPolicy() != "probs" && getDropPolicy() != "position")
    return emitOpError("drop_policy must be \"probs\" or \"position\", got \"")
           << getDropPolicy() << "\"";
  return success();
}

ShardingRule MoECapacitySlotsOp::getShardingRule() {
  RuleBuilder r;
  CapacityFactors f = capacityFactors(r, getGroup(), getWeights(), FactorKind::Free, false);
  r.operand("weights", {f.b, f.s, f.k});
  r.operand("indices", {f.b, f.s, f.k});
  r.result("slots", {f.b, f.s, f.k});
  return r.rule;
}

LogicalResult MoEDispatchCapacityOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getX(), "x", 3)) ||
      failed(checkRouting(*this, getIndices(), "indices", getX(), "x", 0)))
    return failure();
  if (failed(checkExpertsAndCapacity(*this, getExperts(), getCapacity(), shape(getIndices())[2])))
    return failure();
  FailureOr<std::pair<int64_t, int64_t>> groups = checkGroups(*this, getGroup(), getX(), "x");
  if (failed(groups))
    return failure();
  return checkBuffer(*this, getResult(), "result", *groups, getX(), "x", getExperts(),
                     getCapacity());
}

ShardingRule MoEDispatchCapacityOp::getShardingRule() {
  RuleBuilder r;
  CapacityFactors f = capacityFactors(r, getGroup(), getX());
  r.operand("x", {f.b, f.s, f.h});
  r.operand("indices", {f.b, f.s, f.k});
  r.operand("slots", {f.b, f.s, f.k});
  r.result("result", {f.e, f.b, f.s, f.c, f.h});
  return r.rule;
}

LogicalResult MoECombineCapacityOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) ||
      failed(checkRank(*this, getResult(), "result", 3)) ||
      failed(checkRouting(*this, getWeights(), "weights", getResult(), "result", 0)))
    return failure();
  FailureOr<std::pair<int64_t, int64_t>> groups =
      checkGroups(*this, getGroup(), getResult(), "result");
  if (failed(groups) || failed(checkBuffer(*this, getExpertOut(), "expert_out", *groups,
                                           getResult(), "result", 0, 0)))
    return failure();
  if (shape(getExpertOut())[0] < shape(getWeights())[2])
    return emitOpError("expert_out has ")
           << shape(getExpertOut())[0] << " experts, fewer than k = " << shape(getWeights())[2];
  return success();
}

ShardingRule MoECombineCapacityOp::getShardingRule() {
  RuleBuilder r;
  CapacityFactors f = capacityFactors(r, getGroup(), getResult());
  r.operand("expert_out", {f.e, f.b, f.s, f.c, f.h});
  r.operand("weights", {f.b, f.s, f.k});
  r.operand("indices", {f.b, f.s, f.k});
  r.operand("slots", {f.b, f.s, f.k});
  r.result("result", {f.b, f.s, f.h});
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

std::string mlir::sl::droplessExchangeReason(ArrayRef<std::string> expertAxes,
                                             ArrayRef<std::string> tensorAxes, bool gradient) {
  std::string why;
  if (!expertAxes.empty())
    why = std::string(gradient ? "routed rows, their gradients and weights" : "routed rows") +
          " exchanged by count with their experts' owners over the expert group " +
          shardline::formatAxes(expertAxes) + " (ep)";
  if (!tensorAxes.empty())
    why += (why.empty() ? "" : "; ") +
           std::string("received rows gathered over the expert-tensor group ") +
           shardline::formatAxes(tensorAxes) +
           " (etp), each rank's experts run on its ffn shard, " +
           (gradient ? "input and routing-weight gradients" : "outputs") + " reduce-scattered back";
  return why;
}

/// One sl.moe_dropless_grad by the forward's exchanges gives every gradient;
/// the indices get none.
LogicalResult MoEDroplessOp::buildGradient(GradientBuilder &g) {
  FailureOr<Value> dy = g.resultGradient(0);
  if (failed(dy) || !*dy)
    return failure(failed(dy));
  static const unsigned operandOf[] = {0, 1, 3, 4, 5};
  if (llvm::none_of(operandOf, [&](unsigned i) { return g.needsGradient(i); }))
    return success();
  FailureOr<Operation *> grad =
      g.build("sl.moe_dropless_grad",
              {getX(), getWeights(), getIndices(), getGate(), getUp(), getDown(), *dy},
              {getX(), getWeights(), getGate(), getUp(), getDown()},
              GradientBuilder::attrsOf(*this, {"expert_axes", "tensor_axes"}));
  if (failed(grad))
    return failure();
  std::string why =
      droplessExchangeReason(axisNames(getExpertAxes()), axisNames(getTensorAxes()), true);
  if (!why.empty())
    (*grad)->setAttr(kReasonAttr,
                     StringAttr::get(getContext(), "gradient of " + opLabel(*this) + ": " + why));
  for (unsigned r = 0; r < 5; ++r)
    if (g.needsGradient(operandOf[r]))
      g.contribute(operandOf[r], (*grad)->getResult(r));
  return success();
}

// Capacity mode: the slots are integers computed from the weights only to
// pick the kept rows, so no gradient passes through them; dispatch and combine
// are each other's transposes as on the dropless path.

LogicalResult MoEDispatchCapacityOp::buildGradient(GradientBuilder &g) {
  FailureOr<Value> dtokens = g.resultGradient(0);
  if (failed(dtokens) || !*dtokens)
    return failure(failed(dtokens));
  return g.give(0, g.buildOne("sl.moe_dispatch_capacity_grad", {*dtokens, getIndices(), getSlots()},
                              getX(), g.attrsOf(*this, {"group"})));
}

LogicalResult MoECombineCapacityOp::buildGradient(GradientBuilder &g) {
  FailureOr<Value> dy = g.resultGradient(0);
  if (failed(dy) || !*dy)
    return failure(failed(dy));
  auto buffer = shape(getExpertOut());
  Builder b(getContext());
  SmallVector<NamedAttribute> attrs{b.getNamedAttr("experts", b.getI64IntegerAttr(buffer[0])),
                                    b.getNamedAttr("capacity", b.getI64IntegerAttr(buffer[3])),
                                    b.getNamedAttr("group", getGroupAttr())};
  if (g.needsGradient(0) &&
      failed(g.give(0, g.buildOne("sl.moe_combine_capacity_grad",
                                  {getWeights(), getIndices(), getSlots(), *dy}, getExpertOut(),
                                  attrs))))
    return failure();
  if (g.needsGradient(1) &&
      failed(g.give(1, g.buildOne("sl.moe_combine_capacity_grad_weights",
                                  {getExpertOut(), getIndices(), getSlots(), *dy}, getWeights(),
                                  g.attrsOf(*this, {"group"})))))
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

ShardingRule MoEExpertsGradOp::getShardingRule() {
  return expertsRule(shape(getTokens()).size(), 1);
}

LogicalResult MoEExpertsGradWeightsOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)))
    return failure();
  return checkExpertWeights(*this, getTokens(), getGate(), getDown());
}

ShardingRule MoEExpertsGradWeightsOp::getShardingRule() {
  return expertsRule(shape(getTokens()).size(), 2);
}

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

LogicalResult MoEDispatchCapacityGradOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getDx(), "dx", 3)) ||
      failed(checkRouting(*this, getIndices(), "indices", getDx(), "dx", 0)))
    return failure();
  FailureOr<std::pair<int64_t, int64_t>> groups = checkGroups(*this, getGroup(), getDx(), "dx");
  return failure(failed(groups) ||
                 failed(checkBuffer(*this, getDtokens(), "dtokens", *groups, getDx(), "dx", 0, 0)));
}

ShardingRule MoEDispatchCapacityGradOp::getShardingRule() {
  RuleBuilder r;
  CapacityFactors f = capacityFactors(r, getGroup(), getDx());
  r.operand("dtokens", {f.e, f.b, f.s, f.c, f.h});
  r.operand("indices", {f.b, f.s, f.k});
  r.operand("slots", {f.b, f.s, f.k});
  r.result("dx", {f.b, f.s, f.h});
  r.rule.partial = PartialRule::One;
  return r.rule;
}

LogicalResult MoECombineCapacityGradOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getDy(), "dy", 3)) ||
      failed(checkRouting(*this, getWeights(), "weights", getDy(), "dy", 0)))
    return failure();
  if (failed(checkExpertsAndCapacity(*this, getExperts(), getCapacity(), shape(getWeights())[2])))
    return failure();
  FailureOr<std::pair<int64_t, int64_t>> groups = checkGroups(*this, getGroup(), getDy(), "dy");
  return failure(failed(groups) ||
                 failed(checkBuffer(*this, getDexpertOut(), "dexpert_out", *groups, getDy(), "dy",
                                    getExperts(), getCapacity())));
}

ShardingRule MoECombineCapacityGradOp::getShardingRule() {
  RuleBuilder r;
  CapacityFactors f = capacityFactors(r, getGroup(), getDy());
  r.operand("weights", {f.b, f.s, f.k});
  r.operand("indices", {f.b, f.s, f.k});
  r.operand("slots", {f.b, f.s, f.k});
  r.operand("dy", {f.b, f.s, f.h});
  r.result("dexpert_out", {f.e, f.b, f.s, f.c, f.h});
  r.rule.partial = PartialRule::One;
  return r.rule;
}

LogicalResult MoECombineCapacityGradWeightsOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getDy(), "dy", 3)) ||
      failed(checkRouting(*this, getIndices(), "indices", getDy(), "dy", 0)))
    return failure();
  FailureOr<std::pair<int64_t, int64_t>> groups = checkGroups(*this, getGroup(), getDy(), "dy");
  return failure(failed(groups) || failed(checkBuffer(*this, getExpertOut(), "expert_out", *groups,
                                                      getDy(), "dy", 0, 0)));
}

ShardingRule MoECombineCapacityGradWeightsOp::getShardingRule() {
  RuleBuilder r;
  CapacityFactors f = capacityFactors(r, getGroup(), getDy(), FactorKind::Contracted);
  r.operand("expert_out", {f.e, f.b, f.s, f.c, f.h});
  r.operand("indices", {f.b, f.s, f.k});
  r.operand("slots", {f.b, f.s, f.k});
  r.operand("dy", {f.b, f.s, f.h});
  r.result("dweights", {f.b, f.s, f.k});
  r.rule.partial = PartialRule::One;
  return r.rule;
}
