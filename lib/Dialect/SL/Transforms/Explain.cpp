//===- Explain.cpp - why each collective is there --------------------------===//

#include "shardline/Analysis/Report.h"
#include "shardline/Dialect/SL/IR/SL.h"
#include "shardline/Dialect/SL/Transforms/Passes.h"

namespace mlir::sl {
#define GEN_PASS_DEF_SLEXPLAIN
#include "shardline/Dialect/SL/Transforms/Passes.h.inc"
} // namespace mlir::sl

using namespace mlir;
using namespace mlir::sl;

namespace {

std::string label(Operation *op) {
  std::string s = op->getName().getStringRef().str();
  Location loc = op->getLoc();
  if (auto f = dyn_cast<FusedLoc>(loc); f && !f.getLocations().empty())
    loc = f.getLocations().front();
  if (auto n = dyn_cast<NameLoc>(loc))
    s += " '" + n.getName().str() + "'";
  return s;
}

/// Whether `user` would accept `value` in the layout `before` (the layout the
/// gather started from) in place of its current one.
bool accepts(Operation *user, Value value, const shardline::Layout &before) {
  std::optional<shardline::RuleCheck> check = checkOpRule(user, {{value, before}});
  return check && check->error.empty();
}

/// The first user of a gather's result that needs the gathered layout, or null.
Operation *needsWhole(AllGatherOp g) {
  shardline::Layout before = toLayout(getLayout(g.getX()));
  for (Operation *user : g.getResult().getUsers())
    if (!accepts(user, g.getResult(), before))
      return user;
  return nullptr;
}

std::string alternative(Operation *op) {
  if (auto g = dyn_cast<AllGatherOp>(op)) {
    if (g.getResult().use_empty())
      return "removing it (no user)";
    if (!needsWhole(g))
      return "sinking it past " + label(*g.getResult().getUsers().begin()) +
             ", which accepts the split layout";
    return "";
  }
  if (isa<ReduceScatterOp>(op))
    return "all_reduce (twice the bytes, and the result whole on every rank)";
  if (isa<AllReduceOp>(op))
    return "";
  if (isa<AllToAllOp>(op))
    return "all_gather + slice (gathers the whole tensor on every rank)";
  if (isa<RingAttentionOp>(op))
    return "all_gather of K and V (same bytes, but all K and V resident on every rank)";
  if (isa<HaloOp>(op))
    return "all_gather of the sequence (bytes grow with the sequence)";
  if (isa<ScanStateExchangeOp>(op))
    return "all-to-all of the full-sequence activations (bytes grow with the sequence)";
  return "";
}

struct SLExplain : mlir::sl::impl::SLExplainBase<SLExplain> {
  using SLExplainBase::SLExplainBase;
  void runOnOperation() override {
    getOperation().walk([&](Operation *op) {
      int64_t bytes = shardline::collectiveBytesPerRank(op);
      if (bytes < 0)
        return;
      std::string text = op->getName().stripDialect().str();
      if (auto axes = op->getAttrOfType<ArrayAttr>("axes")) {
        text += " over [";
        for (auto [i, a] : llvm::enumerate(axes))
          text += (i ? ", " : "") + cast<StringAttr>(a).str();
        text += "]";
      } else if (auto ce = dyn_cast<CrossEntropyOp>(op)) {
        text += " (vocab-parallel, 3 all-reduces)";
      }
      text += ": " + std::to_string(bytes) + " bytes per rank";
      Operation *user = op->getNumResults() && !op->getResult(0).use_empty()
                            ? *op->getResult(0).getUsers().begin()
                            : nullptr;
      if (user && !isa<CrossEntropyOp, RingAttentionOp>(op))
        text += "; needed by " + label(user);
      if (auto reason = op->getAttrOfType<StringAttr>("sl.reason"))
        text += "; " + reason.str();
      std::string alt = alternative(op);
      if (alt.rfind("sinking", 0) == 0 || alt.rfind("removing", 0) == 0)
        text += "; cheaper: " + alt;
      else if (!alt.empty())
        text += "; rejected: " + alt;
      op->emitRemark() << text;
      if (lint)
        if (auto g = dyn_cast<AllGatherOp>(op); g && !g.getResult().use_empty() && !needsWhole(g))
          op->emitWarning() << "premature gather: every user of this all_gather accepts the "
                               "split layout of dimension "
                            << g.getDim() << "; sink it to the first op that needs it whole";
    });
  }
};

} // namespace
