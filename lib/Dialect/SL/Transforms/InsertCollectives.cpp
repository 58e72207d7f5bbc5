//===- InsertCollectives.cpp - sl.relayout -> collectives -----------------===//

#include "shardline/Dialect/SL/IR/SL.h"
#include "shardline/Dialect/SL/Transforms/Passes.h"

#include "mlir/IR/Builders.h"

namespace mlir::sl {
#define GEN_PASS_DEF_SLINSERTCOLLECTIVES
#include "shardline/Dialect/SL/Transforms/Passes.h.inc"
} // namespace mlir::sl

using namespace mlir;
using namespace mlir::sl;
using shardline::Layout;
using Axes = std::vector<std::string>;

namespace {

bool startsWith(const Axes &a, const Axes &prefix) {
  return a.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), a.begin());
}

class Lowering {
public:
  Lowering(RelayoutOp op) : op(op), b(op), mesh(op->getParentOfType<ModuleOp>()) {
    reason = op->getAttrOfType<StringAttr>(kReasonAttr);
    meshRef = getLayout(op.getX()).getMesh();
  }

  LogicalResult run() {
    Value cur = op.getX();
    Layout from = toLayout(getLayout(cur)), to = toLayout(getLayout(op.getResult()));
    Layout l = from;
    // 1. Pending sums: scatter onto a dimension that the target splits over
    // the reduced axes, else all-reduce.
    Axes reduced;
    for (const auto &a : l.partial)
      if (std::find(to.partial.begin(), to.partial.end(), a) == to.partial.end())
        reduced.push_back(a);
    for (const auto &a : to.partial)
      if (std::find(l.partial.begin(), l.partial.end(), a) == l.partial.end())
        return op.emitOpError("cannot create a pending sum over '") << a << "'";
    if (!reduced.empty()) {
      Layout next = l;
      for (const auto &a : reduced)
        next.partial.erase(std::find(next.partial.begin(), next.partial.end(), a));
      int scatterDim = -1;
      for (size_t d = 0; d < l.dims.size() && scatterDim < 0; ++d) {
        Axes extended = l.dims[d];
        extended.insert(extended.end(), reduced.begin(), reduced.end());
        if (startsWith(to.dims[d], extended))
          scatterDim = (int)d;
      }
      if (scatterDim >= 0) {
        auto &d = next.dims[scatterDim];
        bool wasWhole = d.empty();
        d.insert(d.end(), reduced.begin(), reduced.end());
        if (wasWhole && to.orderDim == scatterDim) {
          next.orderDim = scatterDim;
          next.order = to.order;
        }
        cur = emit<ReduceScatterOp>(cur, next, reduced, scatterDim);
      } else {
        cur = emit<AllReduceOp>(cur, next, reduced);
      }
      l = next;
    }
    // 2. Axes that leave a dimension: to another dimension (all-to-all) or
    // nowhere (all-gather), minor-most first.
    for (size_t d = 0; d < l.dims.size(); ++d) {
      while (!startsWith(to.dims[d], l.dims[d])) {
        // The longest suffix of l.dims[d] that can leave as a group.
        Axes &dims = l.dims[d];
        size_t keep = 0;
        while (keep < dims.size() && keep < to.dims[d].size() && dims[keep] == to.dims[d][keep])
          ++keep;
        Axes leaving(dims.begin() + keep, dims.end());
        int target = -1;
        Axes moving;
        for (size_t e = 0; e < l.dims.size() && target < 0; ++e) {
          if (e == d || !startsWith(to.dims[e], l.dims[e]))
            continue;
          Axes wanted(to.dims[e].begin() + l.dims[e].size(), to.dims[e].end());
          // Move the longest suffix of `leaving` that starts what e wants.
          for (size_t k = 0; k < leaving.size(); ++k) {
            Axes suffix(leaving.begin() + k, leaving.end());
            if (startsWith(wanted, suffix)) {
              target = (int)e;
              moving = suffix;
              break;
            }
          }
        }
        Layout next = l;
        if (target >= 0) {
          auto &src = next.dims[d];
          src.resize(src.size() - moving.size());
          if (src.empty() && next.orderDim == (int64_t)d)
            next.orderDim = -1;
          auto &dst = next.dims[target];
          bool wasWhole = dst.empty();
          dst.insert(dst.end(), moving.begin(), moving.end());
          if (wasWhole && to.orderDim == target) {
            next.orderDim = target;
            next.order = to.order;
          }
          cur = emit<AllToAllOp>(cur, next, moving, target, (int)d);
        } else {
          // Gather the minor-most axis that is not wanted here.
          Axes gathered{dims.back()};
          auto &src = next.dims[d];
          src.pop_back();
          if (src.empty() && next.orderDim == (int64_t)d)
            next.orderDim = -1;
          cur = emit<AllGatherOp>(cur, next, gathered, (int)d);
        }
        l = next;
      }
    }
    // 3. Chunk order, where a dimension keeps its split.
    for (size_t d = 0; d < l.dims.size(); ++d)
      if (!l.dims[d].empty() && l.dims[d] == to.dims[d] && l.dimOrder(d) != to.dimOrder(d)) {
        Layout next = l;
        next.orderDim = to.dimOrder(d) == shardline::ChunkOrder::Zigzag ? (int64_t)d : -1;
        next.order = to.dimOrder(d);
        cur = emitReorder(cur, next);
        l = next;
      }
    // 4. Axes that join a dimension: local slices.
    for (size_t d = 0; d < l.dims.size(); ++d) {
      if (l.dims[d] == to.dims[d])
        continue;
      Axes extra(to.dims[d].begin() + l.dims[d].size(), to.dims[d].end());
      Layout next = l;
      bool wasWhole = next.dims[d].empty();
      next.dims[d] = to.dims[d];
      if (wasWhole && to.orderDim == (int64_t)d) {
        next.orderDim = d;
        next.order = to.order;
      }
      cur = emit<SliceOp>(cur, next, extra, (int)d);
      l = next;
    }
    // A slice into a dimension that keeps its split but changes order.
    for (size_t d = 0; d < l.dims.size(); ++d)
      if (!l.dims[d].empty() && l.dimOrder(d) != to.dimOrder(d)) {
        Layout next = l;
        next.orderDim = to.dimOrder(d) == shardline::ChunkOrder::Zigzag ? (int64_t)d : -1;
        next.order = to.dimOrder(d);
        cur = emitReorder(cur, next);
        l = next;
      }
    if (l != to)
      return op.emitOpError("cannot lower the layout change ")
             << from.str() << " -> " << to.str() << " (reached " << l.str() << ")";
    op.getResult().replaceAllUsesWith(cur);
    op->erase();
    return success();
  }

private:
  RankedTensorType typeFor(Value v, const Layout &l) {
    return withLayout(cast<RankedTensorType>(v.getType()),
                      fromLayout(op->getContext(), meshRef, l));
  }

  template <typename OpTy, typename... Args>
  Value emit(Value in, const Layout &l, const Axes &axes, Args... dims) {
    SmallVector<StringRef> refs(axes.begin(), axes.end());
    auto created = OpTy::create(b, op->getLoc(), typeFor(in, l), in, b.getStrArrayAttr(refs),
                                b.getI64IntegerAttr(dims)...);
    if (reason)
      created->setAttr(kReasonAttr, reason);
    return created.getResult();
  }

  Value emitReorder(Value in, const Layout &l) {
    auto created = ReorderOp::create(b, op->getLoc(), typeFor(in, l), in);
    if (reason)
      created->setAttr(kReasonAttr, reason);
    return created.getResult();
  }

  RelayoutOp op;
  OpBuilder b;
  ModuleOp mesh;
  StringAttr reason;
  FlatSymbolRefAttr meshRef;
};

struct SLInsertCollectives : mlir::sl::impl::SLInsertCollectivesBase<SLInsertCollectives> {
  using SLInsertCollectivesBase::SLInsertCollectivesBase;
  void runOnOperation() override {
    SmallVector<RelayoutOp> relayouts;
    getOperation().walk([&](RelayoutOp op) { relayouts.push_back(op); });
    for (RelayoutOp op : relayouts)
      if (failed(Lowering(op).run()))
        return signalPassFailure();
  }
};

} // namespace
