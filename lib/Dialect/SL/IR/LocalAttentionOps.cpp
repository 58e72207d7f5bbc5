//===- LocalAttentionOps.cpp - local attention (L): sliding-window attention ===//
//
// A query reads only the window - 1 keys before it, so a split sequence
// needs a halo of those keys before each chunk, not an exchange of all keys.
//
//===----------------------------------------------------------------------===//

#include "OpUtils.h"

using namespace mlir;
using namespace mlir::sl;
using namespace mlir::sl::detail;

/// The checks of sl.local_attention and its backward ops: shapes, heads,
/// window and, when given, the halos.
template <typename OpTy> static LogicalResult verifyLocal(OpTy op, Value kHalo, Value vHalo) {
  if (failed(verifyStaticAndElementTypes(op)) || failed(checkRank(op, op.getQ(), "q", 3)) ||
      failed(checkRank(op, op.getK(), "k", 3)))
    return failure();
  int64_t heads = op.getHeads(), kvHeads = op.getKvHeads();
  if (heads <= 0 || kvHeads <= 0 || heads % kvHeads != 0)
    return op.emitOpError("heads (")
           << heads << ") must be a positive multiple of kv_heads (" << kvHeads << ")";
  if (op.getWindow() < 1)
    return op.emitOpError("window must be positive, got ") << op.getWindow();
  auto q = shape(op.getQ()), k = shape(op.getK());
  if (failed(checkDivides(op, q[2], heads, "q channels by heads")) ||
      failed(checkDim(op, op.getK(), "k", 0, q[0], "batch")) ||
      failed(checkDim(op, op.getK(), "k", 1, q[1], "sequence")) ||
      failed(checkDim(op, op.getK(), "k", 2, kvHeads * (q[2] / heads), "kv_heads * head_dim")))
    return failure();
  if (!kHalo && !vHalo)
    return success();
  if (!kHalo || !vHalo)
    return op.emitOpError("needs both k_halo and v_halo or neither");
  LayoutAttr kl = getLayout(op.getK());
  int64_t chunks =
      kl ? numChunks(op, op.getK(), axesAttr(op.getContext(), toLayout(kl).dims[1])) : int64_t(1);
  if (chunks == 1)
    return op.emitOpError("has a halo but k's sequence is not split");
  int64_t width = op.getWindow() - 1;
  if (width == 0)
    return op.emitOpError("has a halo but its window of 1 reads no earlier tokens");
  for (auto [halo, name] : {std::pair{kHalo, "k_halo"}, std::pair{vHalo, "v_halo"}}) {
    if (failed(checkRank(op, halo, name, 3)) ||
        failed(checkDim(op, halo, name, 0, k[0], "batch")) ||
        failed(checkDim(op, halo, name, 2, k[2], "kv channels")))
      return failure();
    if (chunks < 1)
      continue;
    if (shape(halo)[1] != chunks * width)
      return op.emitOpError(name) << " holds " << shape(halo)[1] << " tokens but k's " << chunks
                                  << " sequence chunks need " << chunks << " * " << width;
    LayoutAttr hl = getLayout(halo);
    if (hl && kl &&
        (hl.getDimAxes(1) != kl.getDimAxes(1) || hl.getDimOrder(1) != kl.getDimOrder(1)))
      return op.emitOpError(name) << " must split its sequence like k";
  }
  return success();
}

LogicalResult LocalAttentionOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  return verifyLocal(*this, getKHalo(), getVHalo());
}

LogicalResult LocalAttentionGradOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  return verifyLocal(*this, Value(), Value());
}

LogicalResult LocalAttentionGradHaloOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  return verifyLocal(*this, getKHalo(), getVHalo());
}

/// b, heads free (in whole kv heads), s sequence-mixing with a halo remedy
/// when window > 1 (carried over the halo's axes); q, k, v, then the halos
/// (their own sequence factor), then `extra` [b, s, heads] operands; results
/// named `results`, the last `haloResults` of them shaped like the halos.
static ShardingRule localRule(int64_t kvHeads, int64_t window, Value kHalo,
                              ArrayRef<StringRef> extra, ArrayRef<StringRef> results,
                              unsigned haloResults) {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), h = r.factor("heads", FactorKind::Free, kvHeads);
  // A split of the heads may not cut a group of query heads sharing a kv head.
  r.rule.factors[h].granuleName = "kv heads";
  SmallVector<StringRef> haloAxes;
  if (LayoutAttr hl = kHalo ? getLayout(kHalo) : LayoutAttr(); hl && hl.getRank() > 1)
    haloAxes = hl.getDimAxes(1);
  // A window of one token reads no other position.
  if (window > 1)
    r.mixing(s, Remedy::Halo, haloAxes);
  r.operand("q", {b, s, h});
  r.operand("k", {b, s, h});
  r.operand("v", {b, s, h});
  int halo = -1;
  if (kHalo) {
    halo = r.seq("halo");
    r.operand("k_halo", {b, halo, h});
    r.operand("v_halo", {b, halo, h});
  }
  for (StringRef name : extra)
    r.operand(name.str(), {b, s, h});
  for (auto [i, name] : llvm::enumerate(results))
    r.result(name.str(), {b, i + haloResults >= results.size() ? halo : s, h});
  return r.rule;
}

ShardingRule LocalAttentionOp::getShardingRule() {
  return localRule(getKvHeads(), getWindow(), getKHalo(), {}, {"result"}, 0);
}

ShardingRule LocalAttentionGradOp::getShardingRule() {
  return localRule(getKvHeads(), getWindow(), Value(), {"dy"}, {"dq", "dk", "dv"}, 0);
}

ShardingRule LocalAttentionGradHaloOp::getShardingRule() {
  return localRule(getKvHeads(), getWindow(), getKHalo(), {"dy"},
                   {"dq", "dk", "dv", "dk_halo", "dv_halo"}, 2);
}

//===----------------------------------------------------------------------===//
// Remedies and rank facts
//===----------------------------------------------------------------------===//

/// A split sequence reads the keys and values of the window - 1 tokens before
/// each chunk from sl.halo.
FailureOr<Operation *> LocalAttentionOp::applyRemedy(RemedyContext &ctx) {
  if (getKHalo())
    return getOperation();
  int64_t width = getWindow() - 1;
  if (Value kHalo = insertHalo(*this, getK(), width, ctx, "the keys")) {
    getKHaloMutable().assign(kHalo);
    getVHaloMutable().assign(insertHalo(*this, getV(), width, ctx, "the values"));
  }
  return getOperation();
}

void LocalAttentionOp::resolveRankFacts(const RankContext &ctx) {
  (*this)->setAttr(kTokensAttr, ctx.runs(getQ(), 1));
}

void LocalAttentionGradOp::resolveRankFacts(const RankContext &ctx) {
  (*this)->setAttr(kTokensAttr, ctx.runs(getQ(), 1));
}

void LocalAttentionGradHaloOp::resolveRankFacts(const RankContext &ctx) {
  (*this)->setAttr(kTokensAttr, ctx.runs(getQ(), 1));
}

//===----------------------------------------------------------------------===//
// Gradients
//===----------------------------------------------------------------------===//

/// dq, dk, dv and, over a split sequence, the halos' gradients, which reach
/// their tokens through the halo's own gradient (sl.halo_add).
LogicalResult LocalAttentionOp::buildGradient(GradientBuilder &g) {
  FailureOr<Value> dy = g.resultGradient(0);
  if (failed(dy) || !*dy)
    return failure(failed(dy));
  auto attrs = GradientBuilder::attrsOf(*this, {"heads", "kv_heads", "window"});
  Value q = getQ(), k = getK(), v = getV(), kHalo = getKHalo(), vHalo = getVHalo();
  FailureOr<Operation *> grad =
      kHalo ? g.build("sl.local_attention_grad_halo", {q, k, v, kHalo, vHalo, *dy},
                      {q, k, v, kHalo, vHalo}, attrs)
            : g.build("sl.local_attention_grad", {q, k, v, *dy}, {q, k, v}, attrs);
  if (failed(grad))
    return failure();
  for (unsigned i = 0; i < (*grad)->getNumResults(); ++i)
    if (g.needsGradient(i))
      g.contribute(i, (*grad)->getResult(i));
  return success();
}
