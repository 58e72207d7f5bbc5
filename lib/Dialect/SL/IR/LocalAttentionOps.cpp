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

LogicalResult LocalAttentionOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getQ(), "q", 3)) ||
      failed(checkRank(*this, getK(), "k", 3)))
    return failure();
  int64_t heads = getHeads(), kvHeads = getKvHeads();
  if (heads <= 0 || kvHeads <= 0 || heads % kvHeads != 0)
    return emitOpError("heads (") << heads << ") must be a positive multiple of kv_heads ("
                                  << kvHeads << ")";
  if (getWindow() < 1)
    return emitOpError("window must be positive, got ") << getWindow();
  auto q = shape(getQ()), k = shape(getK());
  if (failed(checkDivides(*this, q[2], heads, "q channels by heads")) ||
      failed(checkDim(*this, getK(), "k", 0, q[0], "batch")) ||
      failed(checkDim(*this, getK(), "k", 1, q[1], "sequence")) ||
      failed(checkDim(*this, getK(), "k", 2, kvHeads * (q[2] / heads), "kv_heads * head_dim")))
    return failure();
  Value kHalo = getKHalo(), vHalo = getVHalo();
  if (!kHalo && !vHalo)
    return success();
  if (!kHalo || !vHalo)
    return emitOpError("needs both k_halo and v_halo or neither");
  LayoutAttr kl = getLayout(getK());
  int64_t chunks =
      kl ? numChunks(*this, getK(), axesAttr(getContext(), toLayout(kl).dims[1])) : int64_t(1);
  if (chunks == 1)
    return emitOpError("has a halo but k's sequence is not split");
  int64_t width = getWindow() - 1;
  if (width == 0)
    return emitOpError("has a halo but its window of 1 reads no earlier tokens");
  for (auto [halo, name] : {std::pair{kHalo, "k_halo"}, std::pair{vHalo, "v_halo"}}) {
    if (failed(checkRank(*this, halo, name, 3)) ||
        failed(checkDim(*this, halo, name, 0, k[0], "batch")) ||
        failed(checkDim(*this, halo, name, 2, k[2], "kv channels")))
      return failure();
    if (chunks < 1)
      continue;
    if (shape(halo)[1] != chunks * width)
      return emitOpError(name) << " holds " << shape(halo)[1] << " tokens but k's " << chunks
                               << " sequence chunks need " << chunks << " * " << width;
    LayoutAttr hl = getLayout(halo);
    if (hl && kl &&
        (hl.getDimAxes(1) != kl.getDimAxes(1) || hl.getDimOrder(1) != kl.getDimOrder(1)))
      return emitOpError(name) << " must split its sequence like k";
  }
  return success();
}

ShardingRule LocalAttentionOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), h = r.factor("heads", FactorKind::Free, getKvHeads());
  // A split of the heads may not cut a group of query heads sharing a kv head.
  r.rule.factors[h].granuleName = "kv heads";
  SmallVector<StringRef> haloAxes;
  if (LayoutAttr hl = getKHalo() ? getLayout(getKHalo()) : LayoutAttr(); hl && hl.getRank() > 1)
    haloAxes = hl.getDimAxes(1);
  // A window of one token reads no other position.
  if (getWindow() > 1)
    r.mixing(s, Remedy::Halo, haloAxes);
  r.operand("q", {b, s, h});
  r.operand("k", {b, s, h});
  r.operand("v", {b, s, h});
  if (getKHalo()) {
    int halo = r.seq("halo");
    r.operand("k_halo", {b, halo, h});
    r.operand("v_halo", {b, halo, h});
  }
  r.result("result", {b, s, h});
  return r.rule;
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
