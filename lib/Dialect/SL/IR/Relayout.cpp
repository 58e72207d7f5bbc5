//===- Relayout.cpp - one layout change as collectives, and its bytes -----===//

#include "shardline/Dialect/SL/IR/Relayout.h"
#include "shardline/Dialect/SL/IR/SL.h"

#include <map>
#include <numeric>
#include <optional>
#include <queue>
#include <tuple>

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

/// The lowering that walks dimensions in order, one collective per change it
/// meets. It is kept wherever no chain is cheaper, so a lowering changes only
/// where it gets cheaper; its bytes bound the search below, and it is the
/// answer where the search finds nothing (layouts the mesh or shape reject).
std::vector<RelayoutStep> walkDimensions(const Layout &from, const Layout &to, std::string &error) {
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

} // namespace

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

namespace {

/// Every nonempty ordered selection of `pool`'s axes: the axes a slice or a
/// reduce-scatter appends, in the order they split.
std::vector<Axes> selections(const Axes &pool) {
  std::vector<Axes> out;
  Axes cur;
  std::vector<bool> used(pool.size(), false);
  auto rec = [&](auto &self) -> void {
    for (size_t i = 0; i < pool.size(); ++i) {
      if (used[i])
        continue;
      used[i] = true;
      cur.push_back(pool[i]);
      out.push_back(cur);
      self(self);
      cur.pop_back();
      used[i] = false;
    }
  };
  rec(rec);
  return out;
}

bool contains(const Axes &axes, const std::string &a) {
  return std::find(axes.begin(), axes.end(), a) != axes.end();
}

/// The cheapest chain of single collectives from one layout to another:
/// Dijkstra over the layouts in between, each step priced by stepBytes. The
/// walk in dimension order misses chains that first move an axis out of the
/// way (all_to_all while the tensor is still split, instead of all_gather
/// first), scatter a pending sum once its dimension is free, or slice before
/// they gather, or park two axes on a dimension neither layout splits twice
/// while a third passes. The graph is that of the two layouts' axes, not of
/// the extents: only their axes move and the leading axes a dimension keeps
/// in both layouts never move, so its size depends on the number of axes and
/// the rank. The extents decide only which layouts are valid on the way:
/// each must divide the tensor. Without a shape (planRelayout) the tensor has
/// room for every axis in every dimension.
class ChainSearch {
public:
  ChainSearch(const Layout &from, const Layout &to, const shardline::Mesh &mesh,
              const std::vector<int64_t> &shape, int64_t elementBytes)
      : from(from), to(to), mesh(mesh), shape(shape), elementBytes(elementBytes) {
    for (const Layout *l : {&from, &to}) {
      for (const Axes &d : l->dims)
        for (const auto &a : d)
          if (!contains(axes, a))
            axes.push_back(a);
      for (const auto &a : l->partial)
        if (!contains(axes, a))
          axes.push_back(a);
    }
    for (size_t d = 0; d < from.dims.size(); ++d) {
      size_t k = 0;
      while (k < from.dims[d].size() && k < to.dims[d].size() && from.dims[d][k] == to.dims[d][k])
        ++k;
      fixed.push_back(k);
    }
  }

  /// The steps, or nothing when no chain of valid layouts costs at most
  /// `bound` bytes.
  std::optional<std::vector<RelayoutStep>> run(int64_t bound) {
    struct Entry {
      Cost cost;
      Layout layout;
      std::string parent;
      RelayoutStep step;
      bool done = false;
    };
    std::map<std::string, Entry> seen;
    using Item = std::pair<Cost, std::string>;
    std::priority_queue<Item, std::vector<Item>, std::greater<Item>> queue;
    Layout start = normalized(from);
    std::string startKey = start.str();
    seen[startKey] = {Cost{0, 0, ""}, start, "", {}, false};
    queue.push({Cost{0, 0, ""}, startKey});
    while (!queue.empty()) {
      auto [cost, key] = queue.top();
      queue.pop();
      Entry &e = seen[key];
      if (e.done || cost != e.cost)
        continue;
      e.done = true;
      if (e.layout == to) {
        std::vector<RelayoutStep> steps;
        for (std::string at = key; at != startKey; at = seen[at].parent)
          steps.push_back(seen[at].step);
        std::reverse(steps.begin(), steps.end());
        steps.front().from = from;
        steps.back().to = to;
        for (size_t i = 1; i < steps.size(); ++i)
          steps[i].from = steps[i - 1].to;
        return steps;
      }
      Layout here = e.layout;
      for (RelayoutStep &s : successors(here)) {
        int64_t bytes = stepBytes(s, shape, elementBytes, mesh);
        Cost next{std::get<0>(cost) + bytes, std::get<1>(cost) + 1, std::get<2>(cost) + tieKey(s)};
        if (std::get<0>(next) > bound)
          continue;
        std::string nextKey = s.to.str();
        auto [it, fresh] = seen.try_emplace(nextKey);
        if (!fresh && (it->second.done || it->second.cost <= next))
          continue;
        it->second = {next, s.to, key, s, false};
        queue.push({next, nextKey});
      }
    }
    return std::nullopt;
  }

private:
  /// Bytes, then fewer steps, then a fixed order of the steps: the same two
  /// layouts always get the same chain.
  using Cost = std::tuple<int64_t, int, std::string>;

  /// Among equal steps, the one that parks axes on the minor-most dimension
  /// (the hidden dimension of activations, the widest) sorts first.
  std::string tieKey(const RelayoutStep &s) const {
    int64_t rank = (int64_t)to.dims.size();
    std::string k;
    k += char('0' + (int)s.kind);
    k += char('a' + (s.dim < 0 ? 0 : rank - s.dim));
    k += char('a' + (s.concatDim < 0 ? 0 : rank - s.concatDim));
    for (const auto &a : s.axes)
      k += a + ",";
    return k + ";";
  }

  /// Contiguous order stated on a dimension is the default order: one key
  /// per layout.
  static Layout normalized(Layout l) {
    if (l.order != shardline::ChunkOrder::Zigzag)
      l.orderDim = -1;
    return l;
  }

  /// A dimension may be zigzag on the way only where one of the two layouts
  /// has it zigzag: elsewhere its extent need not allow it.
  bool zigzagAllowed(size_t d) const {
    return from.dimOrder(d) == shardline::ChunkOrder::Zigzag ||
           to.dimOrder(d) == shardline::ChunkOrder::Zigzag;
  }

  bool valid(const Layout &l) const { return shardline::verifyLayout(l, &mesh, &shape).empty(); }

  /// `l` with `more` appended to dimension `d`, once per order a dimension
  /// that was whole may take (the collectives let it take either).
  void splitInto(const Layout &l, size_t d, const Axes &more, std::vector<Layout> &out) const {
    Layout next = l;
    bool wasWhole = next.dims[d].empty();
    next.dims[d].insert(next.dims[d].end(), more.begin(), more.end());
    out.push_back(next);
    if (wasWhole && zigzagAllowed(d) && l.orderDim < 0) {
      next.orderDim = (int64_t)d;
      next.order = shardline::ChunkOrder::Zigzag;
      out.push_back(next);
    }
  }

  static void dropSuffix(Layout &l, size_t d, size_t n) {
    l.dims[d].resize(l.dims[d].size() - n);
    if (l.dims[d].empty() && l.orderDim == (int64_t)d)
      l.orderDim = -1;
  }

  std::vector<RelayoutStep> successors(const Layout &l) const {
    std::vector<RelayoutStep> out;
    auto add = [&](Kind kind, const Layout &next, Axes stepAxes, int64_t dim, int64_t concatDim) {
      if (valid(next))
        out.push_back({kind, l, next, std::move(stepAxes), dim, concatDim});
    };
    size_t rank = l.dims.size();
    Axes reducible, unused;
    for (const auto &a : l.partial)
      if (!contains(to.partial, a))
        reducible.push_back(a);
    for (const auto &a : axes) {
      bool placed = contains(l.partial, a);
      for (const Axes &d : l.dims)
        placed = placed || contains(d, a);
      if (!placed)
        unused.push_back(a);
    }
    auto withoutPartial = [&](const Axes &reduced) {
      Layout next = l;
      for (const auto &a : reduced)
        next.partial.erase(std::find(next.partial.begin(), next.partial.end(), a));
      return next;
    };
    for (const Axes &reduced : selections(reducible)) {
      for (size_t d = 0; d < rank; ++d) {
        std::vector<Layout> nexts;
        splitInto(withoutPartial(reduced), d, reduced, nexts);
        for (const Layout &next : nexts)
          add(Kind::ReduceScatter, next, reduced, (int64_t)d, -1);
      }
    }
    // One all-reduce over every axis left to reduce, as the walk emits it.
    // The report prices an all-reduce of a tensor that no group divides (the
    // scalar loss) as g - 1 whole copies, so one all-reduce per axis looks
    // cheaper; but so split, the loss came out wrong on 8 ranks in the
    // equivalence matrix and sent more than priced. Not split until the
    // runtime runs it.
    if (!reducible.empty())
      add(Kind::AllReduce, withoutPartial(reducible), reducible, -1, -1);
    for (size_t d = 0; d < rank; ++d) {
      for (size_t n = 1; n + fixed[d] <= l.dims[d].size(); ++n) {
        Axes suffix(l.dims[d].end() - n, l.dims[d].end());
        Layout dropped = l;
        dropSuffix(dropped, d, n);
        add(Kind::AllGather, dropped, suffix, (int64_t)d, -1);
        for (size_t e = 0; e < rank; ++e) {
          if (e == d)
            continue;
          std::vector<Layout> nexts;
          splitInto(dropped, e, suffix, nexts);
          for (const Layout &next : nexts)
            add(Kind::AllToAll, next, suffix, (int64_t)e, (int64_t)d);
        }
      }
      if (!l.dims[d].empty() && zigzagAllowed(d) && (l.orderDim < 0 || l.orderDim == (int64_t)d)) {
        Layout next = l;
        bool zigzag = l.dimOrder(d) == shardline::ChunkOrder::Zigzag;
        next.orderDim = zigzag ? -1 : (int64_t)d;
        next.order = zigzag ? shardline::ChunkOrder::Contiguous : shardline::ChunkOrder::Zigzag;
        add(Kind::Reorder, next, {}, (int64_t)d, -1);
      }
    }
    for (const Axes &more : selections(unused))
      for (size_t d = 0; d < rank; ++d) {
        std::vector<Layout> nexts;
        splitInto(l, d, more, nexts);
        for (const Layout &next : nexts)
          add(Kind::Slice, next, more, (int64_t)d, -1);
      }
    return out;
  }

  const Layout &from, &to;
  const shardline::Mesh &mesh;
  const std::vector<int64_t> &shape;
  int64_t elementBytes;
  /// The axes that may move, and per dimension how many leading axes stay.
  Axes axes;
  std::vector<size_t> fixed;
};

/// The cheapest chain on `mesh` and `shape`: the dimension walk where no
/// chain is cheaper, else the search's.
std::vector<RelayoutStep> planChain(const Layout &from, const Layout &to,
                                    const shardline::Mesh &mesh, const std::vector<int64_t> &shape,
                                    int64_t elementBytes, std::string &error) {
  std::vector<RelayoutStep> walk = walkDimensions(from, to, error);
  if (!error.empty() || walk.empty())
    return walk;
  int64_t walkBytes = 0;
  bool walkValid = true;
  for (const RelayoutStep &s : walk) {
    walkBytes = shardline::saturatingAdd(walkBytes, stepBytes(s, shape, elementBytes, mesh));
    walkValid = walkValid && shardline::verifyLayout(s.to, &mesh, &shape).empty();
  }
  auto best = ChainSearch(from, to, mesh, shape, elementBytes)
                  .run(walkValid ? walkBytes - 1 : std::numeric_limits<int64_t>::max());
  return best ? *best : walk;
}

} // namespace

std::vector<RelayoutStep> mlir::sl::planRelayout(const Layout &from, const Layout &to,
                                                 const shardline::Mesh &mesh,
                                                 const std::vector<int64_t> &shape,
                                                 int64_t elementBytes, std::string &error) {
  return planChain(from, to, mesh, shape, elementBytes, error);
}

std::vector<RelayoutStep> mlir::sl::planRelayout(const Layout &from, const Layout &to,
                                                 std::string &error) {
  // Without a mesh and a shape: every axis of size 2 and extents that every
  // split of every dimension divides, zigzag included, so no chain is ruled
  // out by a short dimension.
  shardline::Mesh mesh;
  for (const Layout *l : {&from, &to}) {
    std::vector<const Axes *> lists{&l->partial};
    for (const Axes &d : l->dims)
      lists.push_back(&d);
    for (const Axes *list : lists)
      for (const auto &a : *list)
        if (!mesh.size(a))
          mesh.axes.push_back({a, 2});
  }
  std::vector<int64_t> shape(from.dims.size(), int64_t(2) << mesh.axes.size());
  return planChain(from, to, mesh, shape, 1, error);
}

int64_t mlir::sl::relayoutBytes(const Layout &from, const Layout &to, RankedTensorType type,
                                const shardline::Mesh &mesh) {
  std::string error;
  std::vector<int64_t> shape(type.getShape().begin(), type.getShape().end());
  std::vector<RelayoutStep> steps = planChain(from, to, mesh, shape, elementBytesOf(type), error);
  if (!error.empty())
    return -1;
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
  // The chain relayoutBytes prices, on the value's mesh and shape.
  std::vector<RelayoutStep> steps;
  if (MeshOp mesh = lookupMesh(b.getInsertionBlock()->getParentOp(), attr)) {
    std::vector<int64_t> shape(type.getShape().begin(), type.getShape().end());
    steps = planChain(toLayout(attr), to, toMesh(mesh), shape, elementBytesOf(type), error);
  } else {
    steps = planRelayout(toLayout(attr), to, error);
  }
  if (!error.empty())
    return failure();
  return emitSteps(b, loc, in, steps, reason);
}

Value mlir::sl::emitSteps(OpBuilder &b, Location loc, Value in, ArrayRef<RelayoutStep> steps,
                          StringAttr reason, StringAttr gatherReason) {
  auto type = cast<RankedTensorType>(in.getType());
  LayoutAttr attr = getLayout(type);
  Value cur = in;
  // Whether the relayout's result holds `axis` in any dimension.
  auto kept = [&](const std::string &axis) {
    return !steps.empty() && llvm::any_of(steps.back().to.dims, [&](const auto &axes) {
      return llvm::is_contained(axes, axis);
    });
  };
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
    bool gathersAway = s.kind == Kind::AllGather && !s.axes.empty() &&
                       llvm::none_of(s.axes, [&](const std::string &a) { return kept(a); });
    if (StringAttr why = gatherReason && gathersAway ? gatherReason : reason)
      op->setAttr(kReasonAttr, why);
    cur = op->getResult(0);
  }
  return cur;
}
