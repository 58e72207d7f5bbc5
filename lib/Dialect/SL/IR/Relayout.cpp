//===- Relayout.cpp - one layout change as collectives, and its bytes -----===//

#include "shardline/Dialect/SL/IR/Relayout.h"
#include "shardline/Dialect/SL/IR/SL.h"

using namespace mlir;
using namespace mlir::sl;
using shardline::Layout;
using Axes = std::vector<std::string>;
using Kind = RelayoutStep::Kind;

namespace {

bool startsWith(const Axes &a, const Axes &prefix) {
  return a.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), a.begin());
}

/// Appends `axes` to dimension `d` of `l`; a dimension that was whole takes
/// the chunk order `to` gives it.
void addSplit(Layout &l, size_t d, const Axes &axes, const Layout &to) {
  auto &dims = l.dims[d];
  bool wasWhole = dims.empty();
  dims.insert(dims.end(), axes.begin(), axes.end());
  if (wasWhole && to.orderDim == (int64_t)d) {
    l.orderDim = (int64_t)d;
    l.order = to.order;
  }
}

/// Drops the last `n` axes of dimension `d`; a dimension left whole loses its
/// chunk order.
void dropSplit(Layout &l, size_t d, size_t n) {
  auto &dims = l.dims[d];
  dims.resize(dims.size() - n);
  if (dims.empty() && l.orderDim == (int64_t)d)
    l.orderDim = -1;
}

} // namespace

std::vector<RelayoutStep> mlir::sl::planRelayout(const Layout &from, const Layout &to,
                                                 std::string &error) {
  std::vector<RelayoutStep> steps;
  Layout l = from;
  auto push = [&](Kind kind, const Layout &next, Axes axes, int64_t dim, int64_t concatDim = -1) {
    steps.push_back({kind, l, next, std::move(axes), dim, concatDim});
    l = next;
  };
  // 1. Pending sums: scatter onto a dimension that the target splits over the
  // reduced axes, else all-reduce.
  Axes reduced;
  for (const auto &a : l.partial)
    if (std::find(to.partial.begin(), to.partial.end(), a) == to.partial.end())
      reduced.push_back(a);
  for (const auto &a : to.partial)
    if (std::find(l.partial.begin(), l.partial.end(), a) == l.partial.end()) {
      error = "cannot create a pending sum over '" + a + "'";
      return {};
    }
  if (!reduced.empty()) {
    Layout next = l;
    for (const auto &a : reduced)
      next.partial.erase(std::find(next.partial.begin(), next.partial.end(), a));
    int64_t scatterDim = -1;
    for (size_t d = 0; d < l.dims.size() && scatterDim < 0; ++d) {
      Axes extended = l.dims[d];
      extended.insert(extended.end(), reduced.begin(), reduced.end());
      if (startsWith(to.dims[d], extended))
        scatterDim = (int64_t)d;
    }
    if (scatterDim >= 0) {
      addSplit(next, scatterDim, reduced, to);
      push(Kind::ReduceScatter, next, reduced, scatterDim);
    } else {
      push(Kind::AllReduce, next, reduced, -1);
    }
  }
  // 2. Axes that leave a dimension: to another dimension (all-to-all) or
  // nowhere (all-gather), minor-most first.
  for (size_t d = 0; d < l.dims.size(); ++d) {
    while (!startsWith(to.dims[d], l.dims[d])) {
      // The longest suffix of l.dims[d] that can leave as a group.
      const Axes &dims = l.dims[d];
      size_t keep = 0;
      while (keep < dims.size() && keep < to.dims[d].size() && dims[keep] == to.dims[d][keep])
        ++keep;
      Axes leaving(dims.begin() + keep, dims.end());
      int64_t target = -1;
      Axes moving;
      for (size_t e = 0; e < l.dims.size() && target < 0; ++e) {
        if (e == d || !startsWith(to.dims[e], l.dims[e]))
          continue;
        Axes wanted(to.dims[e].begin() + l.dims[e].size(), to.dims[e].end());
        // Move the longest suffix of `leaving` that starts what e wants.
        for (size_t k = 0; k < leaving.size(); ++k) {
          Axes suffix(leaving.begin() + k, leaving.end());
          if (startsWith(wanted, suffix)) {
            target = (int64_t)e;
            moving = suffix;
            break;
          }
        }
      }
      Layout next = l;
      if (target >= 0) {
        dropSplit(next, d, moving.size());
        addSplit(next, target, moving, to);
        push(Kind::AllToAll, next, moving, target, (int64_t)d);
      } else {
        // Gather the minor-most axis that is not wanted here.
        Axes gathered{dims.back()};
        dropSplit(next, d, 1);
        push(Kind::AllGather, next, gathered, (int64_t)d);
      }
    }
  }
  // 3. Chunk order, where a dimension keeps its split; 4. axes that join a
  // dimension (local slices); then the order of a dimension a slice joined.
  auto reorder = [&](bool onlyFinished) {
    for (size_t d = 0; d < l.dims.size(); ++d)
      if (!l.dims[d].empty() && (!onlyFinished || l.dims[d] == to.dims[d]) &&
          l.dimOrder(d) != to.dimOrder(d)) {
        Layout next = l;
        next.orderDim = to.dimOrder(d) == shardline::ChunkOrder::Zigzag ? (int64_t)d : -1;
        next.order = to.dimOrder(d);
        push(Kind::Reorder, next, {}, (int64_t)d);
      }
  };
  reorder(/*onlyFinished=*/true);
  for (size_t d = 0; d < l.dims.size(); ++d) {
    if (l.dims[d] == to.dims[d])
      continue;
    Axes extra(to.dims[d].begin() + l.dims[d].size(), to.dims[d].end());
    Layout next = l;
    addSplit(next, d, extra, to);
    push(Kind::Slice, next, extra, (int64_t)d);
  }
  reorder(/*onlyFinished=*/false);
  if (l != to) {
    error = "cannot lower the layout change " + from.str() + " -> " + to.str() + " (reached " +
            l.str() + ")";
    return {};
  }
  return steps;
}

int64_t mlir::sl::elementBytesOf(Type type) {
  return std::max<int64_t>(1, (getElementTypeOrSelf(type).getIntOrFloatBitWidth() + 7) / 8);
}

int64_t mlir::sl::stepBytes(const RelayoutStep &step, const std::vector<int64_t> &shape,
                            int64_t elementBytes, const shardline::Mesh &mesh) {
  auto local = [&](const Layout &l) { return shardline::localShape(l, mesh, shape); };
  auto bytes = [&](const Layout &l) {
    return shardline::saturatingMul(shardline::numElements(local(l)), elementBytes);
  };
  int64_t g = mesh.product(step.axes);
  switch (step.kind) {
  case Kind::AllGather:
    return shardline::allGatherBytes(g, bytes(step.to));
  case Kind::ReduceScatter:
    return shardline::reduceScatterBytes(g, bytes(step.from));
  case Kind::AllReduce: {
    // Reduce-scatter + all-gather needs a dimension the group divides; a
    // tensor without one (the scalar loss) is exchanged whole.
    std::vector<int64_t> in = local(step.from);
    bool splittable = llvm::any_of(in, [&](int64_t d) { return d % g == 0; });
    return splittable ? shardline::allReduceBytes(g, bytes(step.from))
                      : shardline::saturatingMul(g - 1, bytes(step.from));
  }
  case Kind::AllToAll:
    return shardline::allToAllBytes(g, bytes(step.from));
  case Kind::Reorder: {
    // Rows along the ordered dimension that leave a rank, most over ranks,
    // times the bytes of one row.
    const Layout &in = step.from, &out = step.to;
    int64_t dim = in.orderDim >= 0 ? in.orderDim : out.orderDim;
    if (dim < 0)
      return 0;
    int64_t rows = local(in)[dim];
    int64_t rowBytes = bytes(in) / std::max<int64_t>(1, rows);
    int64_t most = 0;
    for (int64_t r = 0; r < mesh.numRanks(); ++r) {
      int64_t staying = shardline::overlap(shardline::tokenRuns(in, mesh, shape, dim, r),
                                           shardline::tokenRuns(out, mesh, shape, dim, r));
      most = std::max(most, rows - staying);
    }
    return shardline::saturatingMul(most, rowBytes);
  }
  case Kind::Slice:
    return 0;
  }
  return 0;
}

int64_t mlir::sl::relayoutBytes(const Layout &from, const Layout &to, RankedTensorType type,
                                const shardline::Mesh &mesh) {
  std::string error;
  std::vector<RelayoutStep> steps = planRelayout(from, to, error);
  if (!error.empty())
    return -1;
  std::vector<int64_t> shape(type.getShape().begin(), type.getShape().end());
  int64_t total = 0;
  for (const RelayoutStep &s : steps)
    total = shardline::saturatingAdd(total, stepBytes(s, shape, elementBytesOf(type), mesh));
  return total;
}

FailureOr<Value> mlir::sl::emitRelayout(OpBuilder &b, Location loc, Value in, const Layout &to,
                                        StringAttr reason, std::string &error) {
  auto type = cast<RankedTensorType>(in.getType());
  LayoutAttr attr = getLayout(type);
  if (!attr) {
    error = "the value has no layout";
    return failure();
  }
  std::vector<RelayoutStep> steps = planRelayout(toLayout(attr), to, error);
  if (!error.empty())
    return failure();
  Value cur = in;
  for (const RelayoutStep &s : steps) {
    auto next = withLayout(type, fromLayout(b.getContext(), attr.getMesh(), s.to));
    SmallVector<StringRef> refs(s.axes.begin(), s.axes.end());
    ArrayAttr axes = b.getStrArrayAttr(refs);
    Operation *op = nullptr;
    switch (s.kind) {
    case Kind::ReduceScatter:
      op = ReduceScatterOp::create(b, loc, next, cur, axes, b.getI64IntegerAttr(s.dim));
      break;
    case Kind::AllReduce:
      op = AllReduceOp::create(b, loc, next, cur, axes);
      break;
    case Kind::AllToAll:
      op = AllToAllOp::create(b, loc, next, cur, axes, b.getI64IntegerAttr(s.dim),
                              b.getI64IntegerAttr(s.concatDim));
      break;
    case Kind::AllGather:
      op = AllGatherOp::create(b, loc, next, cur, axes, b.getI64IntegerAttr(s.dim));
      break;
    case Kind::Reorder:
      op = ReorderOp::create(b, loc, next, cur);
      break;
    case Kind::Slice:
      op = SliceOp::create(b, loc, next, cur, axes, b.getI64IntegerAttr(s.dim));
      break;
    }
    if (reason)
      op->setAttr(kReasonAttr, reason);
    cur = op->getResult(0);
  }
  return cur;
}
