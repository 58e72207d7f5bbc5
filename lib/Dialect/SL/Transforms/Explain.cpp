//===- Explain.cpp - why each collective is there --------------------------===//

#include "shardline/Analysis/MemoryPlan.h"
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

/// A placement the passes did not choose: `cheaper` when it would send less
/// and is legal (a missed rewrite), otherwise a costlier one that was
/// rejected.
struct Alternative {
  std::string text;
  bool cheaper = false;
};

/// For an all_reduce whose users would all accept its result split along one
/// dimension over the reduced axes, a reduce_scatter would do: that dimension,
/// or -1 with `blocker` set to the first user that needs the result whole.
int64_t scatterableDim(AllReduceOp ar, const shardline::Mesh &mesh,
                       const std::vector<std::string> &axes, Operation *&blocker) {
  blocker = nullptr;
  shardline::Layout whole = toLayout(getLayout(ar.getResult()));
  auto shape = ar.getResult().getType().getShape();
  std::vector<int64_t> global(shape.begin(), shape.end());
  // The sequence (dimension 1) first: sl-elide-gathers splits there.
  std::vector<int64_t> dims;
  if (global.size() >= 2)
    dims.push_back(1);
  for (int64_t d = 0; d < (int64_t)global.size(); ++d)
    if (d != 1 || global.size() < 2)
      dims.push_back(d);
  for (int64_t d : dims) {
    shardline::Layout split = whole;
    split.dims[d].insert(split.dims[d].end(), axes.begin(), axes.end());
    if (!shardline::verifyLayout(split, &mesh, &global).empty())
      continue;
    auto users = ar.getResult().getUsers();
    auto rejecting =
        llvm::find_if(users, [&](Operation *u) { return !accepts(u, ar.getResult(), split); });
    if (rejecting == users.end())
      return d;
    if (!blocker)
      blocker = *rejecting;
  }
  return -1;
}

Alternative allReduceAlternative(AllReduceOp ar) {
  if (ar.getResult().use_empty())
    return {"removing it (no user)", true};
  LayoutAttr attr = getLayout(ar.getX());
  MeshOp meshOp = attr ? lookupMesh(ar, attr) : MeshOp();
  if (!meshOp || !getLayout(ar.getResult()))
    return {};
  shardline::Mesh mesh = toMesh(meshOp);
  std::vector<std::string> axes;
  for (Attribute a : ar.getAxes())
    axes.push_back(cast<StringAttr>(a).str());
  Operation *blocker = nullptr;
  int64_t dim = scatterableDim(ar, mesh, axes, blocker);
  std::string scatter = "reduce_scatter over " + shardline::formatAxes(axes) + " (" +
                        std::to_string(shardline::reduceScatterBytes(mesh.product(axes),
                                                                     localBytes(ar.getX(), mesh))) +
                        " bytes per rank)";
  if (dim >= 0)
    return {scatter + " of dimension " + std::to_string(dim) +
                ", since every user accepts the result split there",
            true};
  if (blocker)
    return {scatter + ", since " + opLabel(blocker) + " needs the result whole"};
  return {};
}

Alternative alternative(Operation *op) {
  if (auto g = dyn_cast<AllGatherOp>(op)) {
    if (g.getResult().use_empty())
      return {"removing it (no user)", true};
    if (!needsWhole(g))
      return {"sinking it past " + opLabel(*g.getResult().getUsers().begin()) +
                  ", which accepts the split layout",
              true};
    return {};
  }
  if (auto ar = dyn_cast<AllReduceOp>(op))
    return allReduceAlternative(ar);
  if (isa<ReduceScatterOp>(op))
    return {"all_reduce (twice the bytes, and the result whole on every rank)"};
  if (isa<AllToAllOp>(op))
    return {"all_gather + slice (gathers the whole tensor on every rank)"};
  if (isa<RingAttentionOp>(op))
    return {"all_gather of K and V (same bytes, but all K and V resident on every rank)"};
  if (isa<HaloOp>(op))
    return {"all_gather of the sequence (bytes grow with the sequence)"};
  if (isa<ScanStateExchangeOp>(op))
    return {"all-to-all of the full-sequence activations (bytes grow with the sequence)"};
  return {};
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
        text += "; needed by " + opLabel(user);
      if (auto reason = op->getAttrOfType<StringAttr>(kReasonAttr))
        text += "; " + reason.str();
      Alternative alt = alternative(op);
      if (!alt.text.empty())
        text += (alt.cheaper ? "; cheaper: " : "; rejected: ") + alt.text;
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
