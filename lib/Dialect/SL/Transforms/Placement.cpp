//===- Placement.cpp - where layout transitions go, decided by bytes ------===//
//
// The region of a move and its minimum cut. Node x on the source side (in S)
// means: a transition of the kind is removed (its result is F), an op runs on
// F, a transition fed by the region reads F. The cut prices exactly the
// placement it describes:
//   transition of the kind   in S: relayout(input -> F)   else: its bytes now
//   op of the region         in S: activations of its F results, else W's
//   transition fed by it     in S: relayout(F -> its result), else its bytes
//   (with the transitions that only carry its result on: in S one relayout
//   to the last one's layout replaces them all, else their bytes too)
//   value v, producer p      p in S and some user reads W: relayout(F -> W),
//                            once (one transition back serves all such users);
//                            p not in S and some user reads F: relayout(W -> F)
// with the standard gadgets: an auxiliary node per value for "once if any
// user", infinite edges for "this user reads that version". Every cost is
// bytes * 2^64 + activation bytes, so bytes decide and activations break ties.
//
//===----------------------------------------------------------------------===//

#include "Placement.h"

#include "shardline/Analysis/Report.h"
#include "shardline/Dialect/SL/IR/Relayout.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/Hashing.h"

#include <algorithm>
#include <cassert>
#include <deque>
#include <limits>
#include <queue>
#include <set>
#include <tuple>
#include <unordered_map>

using namespace mlir;
using namespace mlir::sl;
using namespace mlir::sl::placement;
using shardline::describeLocation;
using shardline::Layout;
using Axes = std::vector<std::string>;

bool Kind::operator<(const Kind &o) const {
  if (type == Type::Target && o.type == Type::Target)
    return target.str() < o.target.str();
  return std::tie(type, earlier, dim, concatDim, axes) <
         std::tie(o.type, o.earlier, o.dim, o.concatDim, o.axes);
}

std::string Kind::describe() const {
  if (earlier) {
    Kind later = *this;
    later.earlier = false;
    return later.describe() + ", earlier";
  }
  switch (type) {
  case Type::Split:
    return "all_gather over " + shardline::formatAxes(axes) + " of dimension " +
           std::to_string(dim);
  case Type::Unsplit:
    return "slice over " + shardline::formatAxes(axes) + " of dimension " + std::to_string(dim);
  case Type::Reorder:
    return "reorder of dimension " + std::to_string(dim) + " to " +
           (concatDim == (int64_t)shardline::ChunkOrder::Zigzag ? "zigzag" : "contiguous") +
           " order";
  case Type::AllToAll:
    return "all_to_all over " + shardline::formatAxes(axes) + " from dimension " +
           std::to_string(concatDim) + " to " + std::to_string(dim);
  case Type::Target:
    return "chains of transitions to " + target.str();
  }
  return "";
}

bool mlir::sl::placement::isTransition(Operation *op) {
  return isa<AllGatherOp, AllReduceOp, ReduceScatterOp, AllToAllOp, SliceOp, ReorderOp>(op);
}

bool mlir::sl::placement::movable(Value v) {
  Type e = getElementTypeOrSelf(v.getType());
  return isa<FloatType>(e) || e.isInteger(32);
}

int64_t mlir::sl::placement::bytesSent(func::FuncOp fn) {
  int64_t bytes = 0;
  fn.walk([&](Operation *op) {
    bytes = shardline::saturatingAdd(bytes,
                                     std::max<int64_t>(0, shardline::collectiveBytesPerRank(op)));
  });
  return bytes;
}

std::optional<shardline::Mesh> mlir::sl::placement::meshOf(Operation *op) {
  for (Value v : llvm::concat<Value>(op->getOperands(), op->getResults()))
    if (LayoutAttr l = getLayout(v))
      if (MeshOp m = lookupMesh(op, l))
        return toMesh(m);
  return std::nullopt;
}

namespace {

using Cost = __int128;
constexpr Cost kInfinity = Cost(1) << 120;

Cost price(int64_t bytes, int64_t activation) {
  // Each term stays far below kInfinity: bytes < 2^56 (kMaxTensorBytes) and
  // saturated sums of them, activations likewise.
  return (Cost(std::min<int64_t>(bytes, int64_t(1) << 56)) << 64) +
         Cost(std::min<int64_t>(activation, int64_t(1) << 56));
}

Axes axesOf(ArrayAttr a) { return axisNames(a); }

std::string opName(Operation *op) { return op->getName().getStringRef().str(); }

/// The ops emitted from `from` to `to` ("sl.all_to_all + sl.all_gather"), or
/// "nothing".
std::string chainText(Value to, Value from) {
  std::string text;
  for (Value v = to; v != from; v = v.getDefiningOp()->getOperand(0))
    text = opName(v.getDefiningOp()) + (text.empty() ? "" : " + ") + text;
  return text.empty() ? "nothing" : text;
}

/// Ordered non-empty subsequences of `axes`.
std::vector<Axes> subsequences(const Axes &axes) {
  std::vector<Axes> out;
  size_t n = std::min<size_t>(axes.size(), 8);
  for (size_t mask = 1; mask < (size_t(1) << n); ++mask) {
    Axes pick;
    for (size_t i = 0; i < n; ++i)
      if (mask & (size_t(1) << i))
        pick.push_back(axes[i]);
    out.push_back(std::move(pick));
  }
  return out;
}

/// `l` with `axes` reduced onto dimension `dim` (or appended to its split).
std::optional<Layout> withSplit(Layout l, int64_t dim, const Axes &axes, RankedTensorType type,
                                const shardline::Mesh &mesh) {
  if (dim < 0 || dim >= (int64_t)l.dims.size())
    return std::nullopt;
  for (const auto &a : axes) {
    auto it = std::find(l.partial.begin(), l.partial.end(), a);
    if (it != l.partial.end())
      l.partial.erase(it);
  }
  auto &d = l.dims[dim];
  d.insert(d.end(), axes.begin(), axes.end());
  std::vector<int64_t> shape(type.getShape().begin(), type.getShape().end());
  if (!shardline::verifyLayout(l, &mesh, &shape).empty())
    return std::nullopt;
  return l;
}

/// Whether `op`'s result is read by one transition only (so that `op` is not
/// the end of its chain).
bool feedsOneTransition(Operation *op) {
  if (!op->getResult(0).hasOneUse())
    return false;
  Operation *user = *op->getResult(0).getUsers().begin();
  return user->getBlock() == op->getBlock() && isTransition(user);
}

/// The transitions of the chain that ends at `end`, first to last: going
/// back while each one's input is the result of a transition that only it
/// reads.
std::vector<Operation *> chainTo(Operation *end) {
  std::vector<Operation *> chain{end};
  for (Operation *t = end->getOperand(0).getDefiningOp();
       t && t->getBlock() == end->getBlock() && isTransition(t) && getLayout(t->getOperand(0)) &&
       movable(t->getOperand(0)) && t->getResult(0).hasOneUse();
       t = t->getOperand(0).getDefiningOp())
    chain.push_back(t);
  std::reverse(chain.begin(), chain.end());
  return chain;
}

/// Dinic's maximum flow; the minimum cut is what the source still reaches.
class MinCut {
public:
  int addNode() {
    adjacency.emplace_back();
    return (int)adjacency.size() - 1;
  }
  void addEdge(int from, int to, Cost cap) {
    if (cap <= 0 || from == to)
      return;
    adjacency[from].push_back((int)edges.size());
    edges.push_back({to, cap});
    adjacency[to].push_back((int)edges.size());
    edges.push_back({from, 0});
  }
  Cost run(int s, int t) {
    Cost flow = 0;
    while (levels(s, t)) {
      next.assign(adjacency.size(), 0);
      while (Cost f = push(s, t, kInfinity))
        flow += f;
    }
    return flow;
  }
  /// After run(): the nodes on the source side of a minimum cut.
  std::vector<bool> sourceSide(int s) {
    std::vector<bool> seen(adjacency.size(), false);
    std::vector<int> stack{s};
    seen[s] = true;
    while (!stack.empty()) {
      int x = stack.back();
      stack.pop_back();
      for (int e : adjacency[x])
        if (edges[e].cap > 0 && !seen[edges[e].to]) {
          seen[edges[e].to] = true;
          stack.push_back(edges[e].to);
        }
    }
    return seen;
  }

private:
  struct Edge {
    int to;
    Cost cap;
  };
  bool levels(int s, int t) {
    level.assign(adjacency.size(), -1);
    std::queue<int> q;
    level[s] = 0;
    q.push(s);
    while (!q.empty()) {
      int x = q.front();
      q.pop();
      for (int e : adjacency[x])
        if (edges[e].cap > 0 && level[edges[e].to] < 0) {
          level[edges[e].to] = level[x] + 1;
          q.push(edges[e].to);
        }
    }
    return level[t] >= 0;
  }
  // Iterative blocking-flow search: depth-first along the level graph.
  Cost push(int s, int t, Cost limit) {
    std::vector<int> path;
    int x = s;
    while (true) {
      if (x == t) {
        Cost f = limit;
        for (int e : path)
          f = std::min(f, edges[e].cap);
        for (int e : path) {
          edges[e].cap -= f;
          edges[e ^ 1].cap += f;
        }
        return f;
      }
      bool advanced = false;
      for (; next[x] < adjacency[x].size(); ++next[x]) {
        int e = adjacency[x][next[x]];
        if (edges[e].cap > 0 && level[edges[e].to] == level[x] + 1) {
          path.push_back(e);
          x = edges[e].to;
          advanced = true;
          break;
        }
      }
      if (advanced)
        continue;
      if (x == s)
        return 0;
      // Dead end: retire it and step back.
      level[x] = -1;
      int e = path.back();
      path.pop_back();
      x = edges[e ^ 1].to;
      ++next[x];
    }
  }
  std::vector<Edge> edges;
  std::vector<std::vector<int>> adjacency;
  std::vector<int> level;
  std::vector<size_t> next;
};

} // namespace

/// The kind of a reorder or an all-to-all as a move of its own transitions.
static std::optional<Kind> ownKind(Operation *op) {
  if (auto r = dyn_cast<ReorderOp>(op)) {
    Layout in = toLayout(getLayout(r.getX())), out = toLayout(getLayout(r.getResult()));
    Kind k;
    k.type = Kind::Type::Reorder;
    k.dim = in.orderDim >= 0 ? in.orderDim : out.orderDim;
    // One direction per move: a reorder to zigzag and one back are two
    // kinds (the one back may then cancel with a later reorder to zigzag).
    k.concatDim = (int64_t)out.dimOrder(k.dim);
    return k;
  }
  if (auto a = dyn_cast<AllToAllOp>(op)) {
    Kind k;
    k.type = Kind::Type::AllToAll;
    k.axes = axesOf(a.getAxes());
    k.dim = (int64_t)a.getSplitDim();
    k.concatDim = (int64_t)a.getConcatDim();
    return k;
  }
  return std::nullopt;
}

/// Whether an earlier move of `later`'s kind hoists `op`: a reorder or an
/// all-to-all of the kind, a gather of a Split kind's axes and dimension, a
/// slice of an Unsplit kind's.
static bool hoistable(Operation *op, const Kind &later) {
  switch (later.type) {
  case Kind::Type::Reorder:
  case Kind::Type::AllToAll:
    return ownKind(op) == std::optional<Kind>(later);
  case Kind::Type::Target:
    return false;
  case Kind::Type::Split:
    if (auto g = dyn_cast<AllGatherOp>(op))
      return axesOf(g.getAxes()) == later.axes && (int64_t)g.getDim() == later.dim;
    return false;
  case Kind::Type::Unsplit:
    if (auto sl = dyn_cast<SliceOp>(op))
      return axesOf(sl.getAxes()) == later.axes && (int64_t)sl.getDim() == later.dim;
    return false;
  }
  return false;
}

/// F of the result of `op` (a transition) under `kind`, or nullopt when `op`
/// is not one of the kind's transitions. A transition of a Split kind may
/// produce its result split over the kind's axes on the kind's dimension
/// (a gather of them: nothing; an all-reduce: a reduce-scatter; a gather of
/// another dimension: an all-to-all); one of an Unsplit kind may produce it
/// without that split (a slice: nothing; a reduce-scatter: an all-reduce).
/// Reorders and all-to-alls move as themselves.
static std::optional<Layout> sourceLayout(Operation *op, const Kind &kind,
                                          const shardline::Mesh &mesh,
                                          llvm::function_ref<const Layout &(Value)> layoutOf) {
  if (kind.earlier || !isTransition(op) || !movable(op->getResult(0)))
    return std::nullopt;
  Value in = op->getOperand(0);
  auto type = cast<RankedTensorType>(op->getResult(0).getType());
  if (!getLayout(in) || !getLayout(type))
    return std::nullopt;
  const Layout &out = layoutOf(op->getResult(0));
  switch (kind.type) {
  case Kind::Type::Target: {
    // Only the last transition of a chain; the chain goes with it. A
    // backward's gather done again from the saved shard (sl.recompute) stays:
    // the save policy chose it over keeping the gathered value live.
    if (kind.target.dims.size() != (size_t)type.getRank() || kind.target == out ||
        feedsOneTransition(op) ||
        llvm::any_of(chainTo(op), [](Operation *t) { return t->hasAttr(kRecomputeAttr); }))
      return std::nullopt;
    std::vector<int64_t> shape(type.getShape().begin(), type.getShape().end());
    if (!shardline::verifyLayout(kind.target, &mesh, &shape).empty())
      return std::nullopt;
    return kind.target;
  }
  case Kind::Type::Split: {
    if (!out.partial.empty())
      return std::nullopt;
    std::optional<Layout> f = withSplit(out, kind.dim, kind.axes, type, mesh);
    if (!f || *f == out)
      return std::nullopt;
    return f;
  }
  case Kind::Type::Unsplit: {
    if (kind.dim < 0 || kind.dim >= (int64_t)out.dims.size())
      return std::nullopt;
    const auto &d = out.dims[kind.dim];
    if (d.size() < kind.axes.size() ||
        !std::equal(kind.axes.begin(), kind.axes.end(), d.end() - kind.axes.size()))
      return std::nullopt;
    Layout f = out;
    f.dims[kind.dim].resize(d.size() - kind.axes.size());
    if (f.dims[kind.dim].empty() && f.orderDim == kind.dim)
      f.orderDim = -1;
    return f;
  }
  case Kind::Type::Reorder:
  case Kind::Type::AllToAll:
    if (ownKind(op) == kind)
      return layoutOf(in);
    return std::nullopt;
  }
  return std::nullopt;
}

std::vector<Kind> mlir::sl::placement::kindsIn(func::FuncOp fn) {
  // Splits are tried on the dimensions and over the axes that the
  // function's transitions already use: where a gather, scatter, slice or
  // all-to-all moves axes, a move may move them instead.
  // Each kind once, as found (a thousand blocks repeat a few kinds).
  std::vector<Kind> kinds;
  std::set<Kind> seen;
  llvm::DenseSet<Attribute> targets;
  auto add = [&](const Kind &k) {
    if (seen.insert(k).second)
      kinds.push_back(k);
  };
  fn.walk([&](Operation *op) {
    if (!isTransition(op))
      return;
    // The layouts chains start and end at: a chain may be re-placed onto
    // another chain's ends (several kinds of transition moving together).
    if (!feedsOneTransition(op) && movable(op->getResult(0)) && getLayout(op->getResult(0))) {
      for (Value v : {chainTo(op).front()->getOperand(0), Value(op->getResult(0))}) {
        if (!targets.insert(getLayout(v)).second)
          continue;
        Layout l = toLayout(getLayout(v));
        if (!l.partial.empty())
          continue;
        Kind k;
        k.type = Kind::Type::Target;
        k.target = l;
        add(k);
      }
    }
    if (std::optional<Kind> own = ownKind(op)) {
      add(*own);
      own->earlier = true;
      add(*own);
    }
    auto axes = op->getAttrOfType<ArrayAttr>("axes");
    if (!axes)
      return;
    std::vector<int64_t> dims;
    for (StringRef name : {"dim", "split_dim", "concat_dim"})
      if (auto d = op->getAttrOfType<IntegerAttr>(name))
        dims.push_back(d.getInt());
    // An all-reduce may scatter onto any dimension.
    if (isa<AllReduceOp>(op))
      for (int64_t d = 0; d < cast<RankedTensorType>(op->getResult(0).getType()).getRank(); ++d)
        dims.push_back(d);
    for (const Axes &b : subsequences(axesOf(axes)))
      for (int64_t d : dims)
        for (Kind::Type t : {Kind::Type::Split, Kind::Type::Unsplit})
          for (bool earlier : {false, true}) {
            Kind k;
            k.type = t;
            k.axes = b;
            k.dim = d;
            k.earlier = earlier;
            add(k);
          }
  });
  // Between moves that save the same, the sequence (dimension 1) goes first:
  // that is where sequence parallelism keeps activations split.
  std::sort(kinds.begin(), kinds.end(), [](const Kind &a, const Kind &b) {
    return std::make_pair(a.dim != 1, a) < std::make_pair(b.dim != 1, b);
  });
  return kinds;
}

bool mlir::sl::placement::isSourceOf(Operation *op, const Kind &kind) {
  if (kind.earlier) {
    Kind later = kind;
    later.earlier = false;
    return hoistable(op, later);
  }
  std::optional<shardline::Mesh> mesh = meshOf(op);
  std::deque<Layout> converted; // push_back keeps references to the others
  auto convert = [&](Value v) -> const Layout & {
    converted.push_back(toLayout(getLayout(v)));
    return converted.back();
  };
  return mesh && sourceLayout(op, kind, *mesh, convert).has_value();
}

bool mlir::sl::placement::onlyWidens(func::FuncOp fn, const Kind &kind) {
  if (kind.type != Kind::Type::Target || fn.getBody().empty())
    return false;
  // The ranks a layout's dimensions split over (a pending sum splits
  // nothing: every rank holds the whole shape).
  auto ranks = [](const Layout &l, const shardline::Mesh &mesh) {
    int64_t n = 1;
    for (const auto &d : l.dims)
      n *= mesh.product(d);
    return n;
  };
  llvm::DenseMap<Attribute, bool> narrower; // per layout of a chain's end
  for (Operation &op : fn.getBody().front()) {
    if (!isTransition(&op) || feedsOneTransition(&op) || !movable(op.getResult(0)))
      continue;
    LayoutAttr out = getLayout(op.getResult(0));
    if (!out || cast<RankedTensorType>(op.getResult(0).getType()).getRank() !=
                    (int64_t)kind.target.dims.size())
      continue;
    auto [it, inserted] = narrower.try_emplace(out, false);
    if (inserted) {
      std::optional<shardline::Mesh> mesh = meshOf(&op);
      Layout l = toLayout(out);
      it->second = l == kind.target || (mesh && ranks(kind.target, *mesh) < ranks(l, *mesh));
    }
    if (!it->second)
      return false;
  }
  return true;
}

struct Move::Impl {
  // Fixed: the producer of a value that a transition of an "earlier" kind
  // reads; it never moves (never in S), its readers may take F.
  enum class Role { Source, Op, Terminal, Fixed };
  struct Node {
    Role role;
    Operation *op;
    int64_t bytesIn = 0, bytesOut = 0;           // Source/Terminal: in S, not in S
    int64_t activationIn = 0, activationOut = 0; // Op: F results, W results
    std::vector<bool> readsSplit;                // Op: per operand, F when in S
    std::vector<Layout> splitResults;            // Op: F of each result
    /// Op: operands from outside the region it reads relaid out when in S,
    /// from the start of the chain of transitions that alone feeds them
    /// (bytesIn is their price in S, bytesOut the chains' when not).
    std::vector<std::tuple<int, Layout, Value>> outside;
    Layout sourceSplit; // Source: F of its result
    /// Source of a Target kind: the chain it ends, first to last (F is
    /// produced from the first one's input; the chain dies with it).
    std::vector<Operation *> chain;
    std::vector<int> vals; // the values it produces
    /// Terminal: the transitions after `op` that only carry its result on
    /// (each the one reader of the one before); reading F, the node
    /// replaces them all by one relayout to the last one's layout.
    std::vector<Operation *> carried;
  };
  struct Use {
    OpOperand *operand;
    int reader; // node, or -1: always reads W
  };
  struct Val {
    Value value;
    int producer;
    Layout whole, split;
    int64_t back = 0, forth = 0;
    std::vector<Use> uses;
  };

  func::FuncOp fn;
  Kind kind;
  RelayoutPrices ownPrices;
  RelayoutPrices *prices = &ownPrices;
  std::optional<shardline::Mesh> mesh;
  std::vector<Node> nodes;
  std::vector<Val> vals;
  llvm::DenseMap<Value, int> valOf;
  /// The node of an op found upstream by an earlier move.
  llvm::DenseMap<Operation *, int> nodeOf;
  /// Values queued upstream and the F their reader assumed.
  llvm::DenseMap<Value, Layout> upstreamF;
  /// Transitions a terminal node carries (Node::carried).
  llvm::DenseSet<Operation *> absorbed;
  std::vector<bool> inS;
  Outcome outcome;
  bool solved = false;

  std::optional<Layout> sourceSplit(Operation *op) {
    return sourceLayout(op, kind, *mesh, [&](Value v) -> const Layout & { return layoutOf(v); });
  }

  /// By the attribute's address; references stay valid as entries are added.
  std::unordered_map<const void *, Layout> layouts;
  /// toLayout of `v`'s layout, converted once per attribute.
  const Layout &layoutOf(Value v) {
    LayoutAttr attr = getLayout(v);
    auto [it, inserted] = layouts.try_emplace(attr.getAsOpaquePointer());
    if (inserted)
      it->second = toLayout(attr);
    return it->second;
  }

  int64_t bytesOf(Operation *op) {
    return std::max<int64_t>(0, shardline::collectiveBytesPerRank(op));
  }

  int64_t relayout(const Layout &from, const Layout &to, Value v) {
    if (from == to)
      return 0;
    return prices->bytes(from, to, cast<RankedTensorType>(v.getType()), *mesh);
  }

  int64_t activation(Value v, const Layout &l) {
    auto t = cast<RankedTensorType>(v.getType());
    std::vector<int64_t> shape(t.getShape().begin(), t.getShape().end());
    return shardline::saturatingMul(shardline::numElements(shardline::localShape(l, *mesh, shape)),
                                    elementBytesOf(t));
  }

  void addVal(Value v, int producer, const Layout &split) {
    Layout whole = layoutOf(v);
    Val val{v, producer, whole, split, relayout(split, whole, v), relayout(whole, split, v), {}};
    if (auto it = valOf.find(v); it != valOf.end()) {
      // A value an earlier move would take to F at its producer, whose
      // producer turns out to be an op of the region: the op produces it.
      Val &old = vals[it->second];
      auto &fixed = nodes[old.producer].vals;
      fixed.erase(std::find(fixed.begin(), fixed.end(), it->second));
      val.uses = std::move(old.uses);
      old = std::move(val);
      nodes[producer].vals.push_back(it->second);
      return;
    }
    valOf[v] = (int)vals.size();
    nodes[producer].vals.push_back((int)vals.size());
    vals.push_back(std::move(val));
  }

  /// checkOpRuleAt(op, overrides) with `op`'s rule built by the caller and
  /// the other operands' layouts converted once per attribute: the same
  /// check, for an op whose operands and results all carry a layout.
  shardline::RuleCheck checkAt(Operation *op, const shardline::ShardingRule &rule,
                               const std::vector<std::optional<Layout>> &overrides) {
    std::vector<std::vector<int64_t>> operandShapes, resultShapes;
    std::vector<std::optional<Layout>> operandLayouts;
    for (auto [i, v] : llvm::enumerate(op->getOperands())) {
      ArrayRef<int64_t> shape = cast<RankedTensorType>(v.getType()).getShape();
      operandShapes.emplace_back(shape.begin(), shape.end());
      operandLayouts.push_back(i < overrides.size() && overrides[i] ? *overrides[i] : layoutOf(v));
    }
    for (Value r : op->getResults()) {
      ArrayRef<int64_t> shape = cast<RankedTensorType>(r.getType()).getShape();
      resultShapes.emplace_back(shape.begin(), shape.end());
    }
    return shardline::checkRule(rule, *mesh, operandShapes, operandLayouts, resultShapes);
  }

  /// The widest set of operands reading F that `op`'s rule accepts, changing
  /// only free dimensions, with every result able to go back and forth.
  bool tryOp(Operation *op, const std::vector<int> &regionOperands) {
    auto iface = dyn_cast<ShardingRuleOpInterface>(op);
    if (!iface || op->getNumResults() == 0)
      return false;
    for (Value v : llvm::concat<Value>(op->getOperands(), op->getResults()))
      if (!getLayout(v))
        return false;
    shardline::ShardingRule rule = iface.getShardingRule();
    size_t n = std::min<size_t>(regionOperands.size(), 6);
    std::vector<size_t> masks;
    for (size_t mask = 1; mask < (size_t(1) << n); ++mask)
      masks.push_back(mask);
    std::sort(masks.begin(), masks.end(), [](size_t a, size_t b) {
      return std::make_pair(-llvm::popcount(a), a) < std::make_pair(-llvm::popcount(b), b);
    });
    for (size_t mask : masks) {
      std::vector<std::optional<Layout>> overrides(op->getNumOperands());
      bool freeOnly = true;
      for (size_t i = 0; i < n && freeOnly; ++i) {
        if (!(mask & (size_t(1) << i)))
          continue;
        int pos = regionOperands[i];
        const Val &val = vals[valOf.lookup(op->getOperand(pos))];
        overrides[pos] = val.split;
        const auto &dims = rule.operands[pos];
        for (size_t d = 0; d < dims.size() && d < val.split.dims.size(); ++d)
          if ((val.split.dims[d] != val.whole.dims[d] ||
               val.split.dimOrder(d) != val.whole.dimOrder(d)) &&
              (dims[d] < 0 || rule.factors[dims[d]].kind != shardline::FactorKind::Free))
            freeOnly = false;
      }
      if (!freeOnly)
        continue;
      std::optional<shardline::RuleCheck> check = checkAt(op, rule, overrides);
      // An operand from outside the region with the shape of one on F (the
      // other side of an elementwise op) may be relaid out to match.
      std::vector<std::tuple<int, Layout, Value>> outside;
      int64_t outsideBytes = 0, chainBytes = 0;
      if ((!check || !check->error.empty()) && mask == (size_t(1) << n) - 1) {
        const Val &first = vals[valOf.lookup(op->getOperand(regionOperands.front()))];
        for (auto [pos, v] : llvm::enumerate(op->getOperands())) {
          if (overrides[pos] || valOf.count(v) || v.getType() != first.value.getType() ||
              !movable(v))
            continue;
          int64_t bytes = relayout(layoutOf(v), first.split, v);
          if (bytes < 0)
            continue;
          // A chain of transitions that feeds only this operand can go: the
          // relayout then starts where the chain does.
          Value start = v;
          int64_t chain = 0;
          for (Operation *t = v.getDefiningOp();
               t && isTransition(t) && movable(t->getOperand(0)) && getLayout(t->getOperand(0)) &&
               t->getResult(0).hasOneUse();
               t = start.getDefiningOp()) {
            chain = shardline::saturatingAdd(chain, bytesOf(t));
            start = t->getOperand(0);
          }
          int64_t fromStart = start == v ? -1 : relayout(layoutOf(start), first.split, v);
          if (fromStart >= 0 && fromStart < shardline::saturatingAdd(chain, bytes)) {
            bytes = fromStart;
            chainBytes = shardline::saturatingAdd(chainBytes, chain);
          } else {
            start = v;
          }
          overrides[pos] = first.split;
          outside.push_back({(int)pos, first.split, start});
          outsideBytes = shardline::saturatingAdd(outsideBytes, bytes);
        }
        if (!outside.empty())
          check = checkAt(op, rule, overrides);
      }
      if (!check || !check->error.empty() || check->results.size() != op->getNumResults())
        continue;
      bool ok = true;
      for (auto [i, r] : llvm::enumerate(op->getResults())) {
        const Layout &now = layoutOf(r);
        if (check->results[i] != now && (!movable(r) || relayout(check->results[i], now, r) < 0 ||
                                         relayout(now, check->results[i], r) < 0))
          ok = false;
      }
      if (!ok)
        continue;
      Node node{Role::Op, op};
      node.readsSplit.assign(op->getNumOperands(), false);
      for (size_t i = 0; i < n; ++i)
        if (mask & (size_t(1) << i))
          node.readsSplit[regionOperands[i]] = true;
      node.splitResults = check->results;
      node.outside = std::move(outside);
      node.bytesIn = outsideBytes;
      node.bytesOut = chainBytes;
      for (auto [i, r] : llvm::enumerate(op->getResults())) {
        node.activationIn += activation(r, check->results[i]);
        node.activationOut += activation(r, layoutOf(r));
      }
      int id = (int)nodes.size();
      nodes.push_back(std::move(node));
      for (auto [i, r] : llvm::enumerate(op->getResults()))
        addVal(r, id, nodes[id].splitResults[i]);
      return true;
    }
    return false;
  }

  /// Lets `p`, the producer of `v`, produce `v` in `f` (an earlier move going
  /// upstream): a transition re-targeted to `f`, or an op of free dimensions
  /// whose operands laid out as `v` it reads in `f` (queued in `work`).
  bool growUpstream(Operation *p, Value v, const Layout &f,
                    std::vector<std::pair<Value, Layout>> &work) {
    if (llvm::any_of(p->getResults(), [](Value r) { return !movable(r) || !getLayout(r); }))
      return false;
    if (isTransition(p)) {
      Node node{Role::Source, p};
      node.sourceSplit = f;
      node.bytesOut = bytesOf(p);
      node.bytesIn = relayout(layoutOf(p->getOperand(0)), f, v);
      if (node.bytesIn < 0)
        return false;
      nodeOf[p] = (int)nodes.size();
      nodes.push_back(std::move(node));
      addVal(v, (int)nodes.size() - 1, f);
      vals.back().back = std::min(vals.back().back, nodes.back().bytesOut);
      return true;
    }
    auto iface = dyn_cast<ShardingRuleOpInterface>(p);
    if (!iface || llvm::any_of(p->getOperands(), [](Value u) { return !getLayout(u); }))
      return false;
    shardline::ShardingRule rule = iface.getShardingRule();
    std::vector<std::optional<Layout>> overrides(p->getNumOperands());
    bool any = false;
    for (auto [pos, u] : llvm::enumerate(p->getOperands())) {
      // Operands laid out as `v` is (a linear's input, of another width) take
      // the layout with it.
      if (getLayout(u) != getLayout(v) || !movable(u) ||
          cast<RankedTensorType>(u.getType()).getRank() !=
              cast<RankedTensorType>(v.getType()).getRank())
        continue;
      const auto &dims = rule.operands[pos];
      const Layout &now = layoutOf(u);
      for (size_t d = 0; d < dims.size() && d < f.dims.size(); ++d)
        if ((f.dims[d] != now.dims[d] || f.dimOrder(d) != now.dimOrder(d)) &&
            (dims[d] < 0 || rule.factors[dims[d]].kind != shardline::FactorKind::Free))
          return false;
      // One F per value: a reader found earlier may have assumed another.
      if (auto it = valOf.find(u); it != valOf.end() && vals[it->second].split != f)
        return false;
      if (auto it = upstreamF.find(u); it != upstreamF.end() && it->second != f)
        return false;
      overrides[pos] = f;
      any = true;
    }
    if (!any)
      return false;
    std::optional<shardline::RuleCheck> check = checkAt(p, rule, overrides);
    if (!check || !check->error.empty() || check->results.size() != p->getNumResults() ||
        check->results[cast<OpResult>(v).getResultNumber()] != f)
      return false;
    for (auto [i, r] : llvm::enumerate(p->getResults())) {
      const Layout &now = layoutOf(r);
      if (check->results[i] != now &&
          (relayout(check->results[i], now, r) < 0 || relayout(now, check->results[i], r) < 0))
        return false;
    }
    Node node{Role::Op, p};
    node.readsSplit.assign(p->getNumOperands(), false);
    for (size_t pos = 0; pos < overrides.size(); ++pos)
      node.readsSplit[pos] = overrides[pos].has_value();
    node.splitResults = check->results;
    for (auto [i, r] : llvm::enumerate(p->getResults())) {
      node.activationIn += activation(r, check->results[i]);
      node.activationOut += activation(r, layoutOf(r));
    }
    int id = (int)nodes.size();
    nodeOf[p] = id;
    nodes.push_back(std::move(node));
    for (auto [i, r] : llvm::enumerate(p->getResults()))
      if (!valOf.count(r))
        addVal(r, id, nodes[id].splitResults[i]);
    for (size_t pos = 0; pos < overrides.size(); ++pos)
      if (overrides[pos]) {
        upstreamF[p->getOperand(pos)] = *overrides[pos];
        work.push_back({p->getOperand(pos), *overrides[pos]});
      }
    return true;
  }

  void build() {
    if (fn.getBody().empty())
      return;
    if (kind.earlier) {
      // The values that transitions of the kind read may be produced in F
      // (the transition's result layout) instead: upstream, an op whose rule
      // lets it runs on F, a transition producing the value is re-targeted
      // to F, and any other producer's value is taken to F once, before all
      // its readers.
      Kind later = kind;
      later.earlier = false;
      std::vector<std::pair<Value, Layout>> work;
      for (Operation &opRef : fn.getBody().front()) {
        if (!mesh)
          mesh = meshOf(&opRef);
        if (!mesh || !hoistable(&opRef, later) || !movable(opRef.getResult(0)))
          continue;
        Value in = opRef.getOperand(0);
        Layout f = layoutOf(opRef.getResult(0));
        if (relayout(layoutOf(in), f, in) >= 0)
          work.push_back({in, f});
      }
      while (!work.empty()) {
        auto [v, f] = work.back();
        work.pop_back();
        if (valOf.count(v))
          continue;
        Operation *p = v.getDefiningOp();
        if (p && !nodeOf.count(p) && growUpstream(p, v, f, work))
          continue;
        nodes.push_back(Node{Role::Fixed, p});
        addVal(v, (int)nodes.size() - 1, f);
      }
    }
    for (Operation &opRef : fn.getBody().front()) {
      Operation *op = &opRef;
      if (!mesh)
        mesh = meshOf(op);
      if (!mesh)
        continue;
      std::vector<int> regionOperands;
      for (auto [i, v] : llvm::enumerate(op->getOperands()))
        if (valOf.count(v))
          regionOperands.push_back((int)i);
      int id = -1;
      if (auto known = nodeOf.find(op); known != nodeOf.end()) {
        // Found upstream already.
        id = known->second;
      } else if (regionOperands.empty()) {
        std::optional<Layout> split =
            absorbed.count(op) ? std::optional<Layout>() : sourceSplit(op);
        if (split) {
          Node node{Role::Source, op};
          node.sourceSplit = *split;
          node.bytesOut = bytesOf(op);
          Value from = op->getOperand(0);
          if (kind.type == Kind::Type::Target) {
            node.chain = chainTo(op);
            from = node.chain.front()->getOperand(0);
            if (llvm::any_of(node.chain, [&](Operation *t) { return absorbed.count(t); }) ||
                valOf.count(from))
              continue;
            node.bytesOut = 0;
            for (Operation *t : node.chain)
              node.bytesOut = shardline::saturatingAdd(node.bytesOut, bytesOf(t));
          }
          node.bytesIn = relayout(layoutOf(from), *split, op->getResult(0));
          // Readers of the value as it is take it back from F, or F from it.
          Value r = op->getResult(0);
          if (kind.type == Kind::Type::Target &&
              (relayout(*split, layoutOf(r), r) < 0 || relayout(layoutOf(r), *split, r) < 0))
            continue;
          if (node.bytesIn < 0)
            continue;
          nodes.push_back(std::move(node));
          addVal(op->getResult(0), (int)nodes.size() - 1, *split);
          // Users of the whole value may read the transition itself, kept.
          vals.back().back = std::min(vals.back().back, nodes.back().bytesOut);
        }
        continue;
      } else if (absorbed.count(op)) {
        // Carried by the terminal before it.
        continue;
      } else if (isTransition(op) && kind.type == Kind::Type::Target &&
                 op->hasAttr(kRecomputeAttr)) {
        // A backward's gather from the saved shard reads the value as it is
        // (the save policy's choice), never a version a chain move makes.
      } else if (isTransition(op)) {
        const Val &in = vals[valOf.lookup(op->getOperand(0))];
        // Reading F, the chain of transitions that only carries this one's
        // result on goes at once: a slice then an all-to-all back is one
        // slice from F, which pricing the first transition alone misses.
        std::vector<Operation *> carried;
        int64_t carriedBytes = 0;
        for (Operation *t = op; t->getResult(0).hasOneUse();) {
          Operation *next = *t->getResult(0).getUsers().begin();
          // Only transitions the move does not place otherwise: no node of
          // their own, no value of the region, not of the move's kind.
          if (!isTransition(next) || next->getBlock() != op->getBlock() ||
              !movable(next->getResult(0)) || !getLayout(next->getResult(0)) ||
              nodeOf.count(next) || valOf.count(next->getResult(0)) || absorbed.count(next) ||
              (kind.type != Kind::Type::Target && sourceSplit(next)) ||
              (kind.earlier && isSourceOf(next, kind)))
            break;
          carried.push_back(next);
          carriedBytes = shardline::saturatingAdd(carriedBytes, bytesOf(next));
          t = next;
        }
        Value end = carried.empty() ? op->getResult(0) : carried.back()->getResult(0);
        int64_t fromSplit = relayout(in.split, layoutOf(end), end);
        if (fromSplit < 0 && !carried.empty()) {
          carried.clear();
          carriedBytes = 0;
          fromSplit = relayout(in.split, layoutOf(op->getResult(0)), op->getResult(0));
        }
        if (fromSplit >= 0) {
          Node node{Role::Terminal, op};
          node.bytesOut = shardline::saturatingAdd(bytesOf(op), carriedBytes);
          node.bytesIn = fromSplit;
          absorbed.insert(carried.begin(), carried.end());
          node.carried = std::move(carried);
          nodes.push_back(std::move(node));
          id = (int)nodes.size() - 1;
        }
      } else if (tryOp(op, regionOperands)) {
        id = (int)nodes.size() - 1;
      }
      for (int pos : regionOperands) {
        bool reads = id >= 0 && (nodes[id].role == Role::Terminal ||
                                 (nodes[id].role == Role::Op && nodes[id].readsSplit[pos]));
        vals[valOf.lookup(op->getOperand(pos))].uses.push_back(
            {&op->getOpOperand(pos), reads ? id : -1});
      }
    }
  }

  /// Bytes and activations of the placement `s` (true: in S).
  std::pair<int64_t, int64_t> priceOf(const std::vector<bool> &s) {
    int64_t bytes = 0, act = 0;
    for (size_t i = 0; i < nodes.size(); ++i) {
      const Node &n = nodes[i];
      if (n.role == Role::Op) {
        act = shardline::saturatingAdd(act, s[i] ? n.activationIn : n.activationOut);
        bytes = shardline::saturatingAdd(bytes, s[i] ? n.bytesIn : n.bytesOut);
      } else if (n.role != Role::Fixed)
        bytes = shardline::saturatingAdd(bytes, s[i] ? n.bytesIn : n.bytesOut);
    }
    for (const Val &v : vals) {
      auto [needW, needF] = needs(v, s);
      if (s[v.producer] && needW)
        bytes = shardline::saturatingAdd(bytes, v.back);
      if (!s[v.producer] && needF)
        bytes = shardline::saturatingAdd(bytes, v.forth);
    }
    return {bytes, act};
  }

  void solve() {
    solved = true;
    build();
    inS.assign(nodes.size(), false);
    std::tie(outcome.bytesBefore, outcome.activationBefore) = priceOf(inS);
    outcome.bytesAfter = outcome.bytesBefore;
    outcome.activationAfter = outcome.activationBefore;
    bool anyChoice = llvm::any_of(
        nodes, [](const Node &n) { return n.role == Role::Op || n.role == Role::Terminal; });
    if (!anyChoice)
      return;
    MinCut cut;
    int s = cut.addNode(), t = cut.addNode();
    std::vector<int> id(nodes.size());
    for (size_t i = 0; i < nodes.size(); ++i)
      id[i] = cut.addNode();
    for (size_t i = 0; i < nodes.size(); ++i) {
      const Node &n = nodes[i];
      if (n.role == Role::Fixed) {
        cut.addEdge(id[i], t, kInfinity);
      } else if (n.role == Role::Op) {
        bool ties = outcome.activationsBreakTies;
        cut.addEdge(s, id[i], price(n.bytesOut, ties ? n.activationOut : 0));
        cut.addEdge(id[i], t, price(n.bytesIn, ties ? n.activationIn : 0));
      } else {
        cut.addEdge(s, id[i], price(n.bytesOut, 0));
        cut.addEdge(id[i], t, price(n.bytesIn, 0));
      }
    }
    for (const Val &v : vals) {
      int p = id[v.producer];
      bool pinnedW = false;
      std::vector<int> readers;
      for (const Use &u : v.uses) {
        if (u.reader < 0)
          pinnedW = true;
        else
          readers.push_back(id[u.reader]);
      }
      if (pinnedW) {
        cut.addEdge(p, t, price(v.back, 0));
      } else if (!readers.empty()) {
        int y = cut.addNode();
        cut.addEdge(p, y, price(v.back, 0));
        for (int r : readers)
          cut.addEdge(y, r, kInfinity);
      }
      if (!readers.empty()) {
        int z = cut.addNode();
        cut.addEdge(z, p, price(v.forth, 0));
        for (int r : readers)
          cut.addEdge(r, z, kInfinity);
      }
    }
    cut.run(s, t);
    std::vector<bool> side = cut.sourceSide(s);
    std::vector<bool> chosen(nodes.size());
    for (size_t i = 0; i < nodes.size(); ++i)
      chosen[i] = side[id[i]];
    auto [bytes, act] = priceOf(chosen);
    Outcome after = outcome;
    after.bytesAfter = bytes;
    after.activationAfter = act;
    if (after.improves()) {
      inS = chosen;
      outcome = after;
    }
  }

  /// Whether some reader of `v` takes W, and whether some takes F.
  std::pair<bool, bool> needs(const Val &v, const std::vector<bool> &s) const {
    bool needW = false, needF = false;
    for (const Use &u : v.uses)
      (u.reader >= 0 && s[u.reader] ? needF : needW) = true;
    return {needW, needF};
  }

  StringAttr reason() {
    for (size_t i = 0; i < nodes.size(); ++i)
      if (nodes[i].role == Role::Source && inS[i])
        if (auto r = nodes[i].op->getAttrOfType<StringAttr>(kReasonAttr))
          return r;
    return {};
  }

  LogicalResult apply(std::vector<Change> &changes) {
    std::string kindName = kind.type == Kind::Type::Split      ? "all_gather"
                           : kind.type == Kind::Type::Unsplit  ? "slice"
                           : kind.type == Kind::Type::Reorder  ? "reorder"
                           : kind.type == Kind::Type::AllToAll ? "all_to_all"
                                                               : "chain";
    StringAttr why = reason();
    std::string error;
    SmallVector<Operation *> erase;
    auto fail = [&](Operation *at) {
      return at->emitError("sl-elide-gathers: cannot re-place the ")
             << kind.describe() << ": " << error;
    };
    // Producers in program order (fixed ones at their value's definition,
    // before its readers): each value's versions exist before any use.
    llvm::DenseMap<Operation *, int> position;
    for (auto [k, op] : llvm::enumerate(fn.getBody().front()))
      position[&op] = (int)k;
    std::vector<size_t> order(nodes.size());
    for (size_t k = 0; k < order.size(); ++k)
      order[k] = k;
    auto at = [&](size_t k) { return nodes[k].op ? position.lookup(nodes[k].op) : -1; };
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return std::make_pair(at(a), a) < std::make_pair(at(b), b);
    });
    for (size_t i : order) {
      Node &n = nodes[i];
      Operation *op = n.op;
      if (n.role == Role::Terminal) {
        if (!inS[i])
          continue;
        Operation *last = n.carried.empty() ? op : n.carried.back();
        OpBuilder b(last);
        FailureOr<Value> out = emitRelayout(b, op->getLoc(), op->getOperand(0),
                                            toLayout(getLayout(last->getResult(0))),
                                            op->getAttrOfType<StringAttr>(kReasonAttr), error);
        if (failed(out))
          return fail(op);
        std::string met = opName(op);
        for (Operation *t : n.carried)
          met += " + " + opName(t);
        changes.push_back({kindName, describeLocation(op->getLoc()),
                           "met " + met + " and became " + chainText(*out, op->getOperand(0))});
        last->getResult(0).replaceAllUsesWith(*out);
        erase.push_back(op);
        erase.append(n.carried.begin(), n.carried.end());
        continue;
      }
      // The versions of this node's results.
      std::vector<std::pair<Value, Value>> versions; // (W, F) per result val
      OpBuilder b(fn->getContext());
      if (n.role == Role::Fixed && n.vals.empty()) {
        continue;
      } else if (n.role == Role::Fixed) {
        Val &v = vals[n.vals.front()];
        bool needF =
            llvm::any_of(v.uses, [&](const Use &u) { return u.reader >= 0 && inS[u.reader]; });
        Value f;
        if (needF) {
          b.setInsertionPointAfterValue(v.value);
          FailureOr<Value> split = emitRelayout(b, v.value.getLoc(), v.value, v.split, why, error);
          if (failed(split))
            return fail(v.value.getDefiningOp() ? v.value.getDefiningOp() : fn);
          f = *split;
          changes.push_back(
              {kindName, describeLocation(v.value.getLoc()),
               "moved earlier: one " + chainText(f, v.value) + " serves " +
                   std::to_string(llvm::count_if(
                       v.uses, [&](const Use &u) { return u.reader >= 0 && inS[u.reader]; })) +
                   " readers"});
        }
        versions.push_back({v.value, f});
      } else if (n.role == Role::Source) {
        Val &v = vals[n.vals.front()];
        auto [needW, needF] = needs(v, inS);
        Value w = v.value, f;
        Value from = n.chain.empty() ? op->getOperand(0) : n.chain.front()->getOperand(0);
        if (inS[i]) {
          b.setInsertionPoint(op);
          FailureOr<Value> split = emitRelayout(b, op->getLoc(), from, v.split, why, error);
          if (failed(split))
            return fail(op);
          f = *split;
          // Users of the whole value read the transition kept, or F taken
          // back where that sends less (as priced: Val::back).
          int64_t backFromSplit = relayout(v.split, v.whole, v.value);
          if (needW && (backFromSplit < 0 || n.bytesOut <= backFromSplit)) {
            w = v.value;
          } else {
            if (needW) {
              b.setInsertionPointAfterValue(f);
              FailureOr<Value> back = emitRelayout(b, op->getLoc(), f, v.whole, why, error);
              if (failed(back))
                return fail(op);
              w = *back;
            }
            // The chain before it, first to last: erased last to first.
            for (Operation *t : n.chain)
              if (t != op)
                erase.push_back(t);
            erase.push_back(op);
          }
          if (f != from)
            changes.push_back({opName(op).substr(3), describeLocation(op->getLoc()),
                               "became " + chainText(f, from) +
                                   (needW ? ", the whole value taken where needed" : "")});
        } else if (needF) {
          b.setInsertionPointAfter(op);
          FailureOr<Value> split = emitRelayout(b, op->getLoc(), w, v.split, why, error);
          if (failed(split))
            return fail(op);
          f = *split;
        }
        versions.push_back({w, f});
      } else {
        // An op of the region: runs on F when in S.
        if (inS[i]) {
          b.setInsertionPoint(op);
          for (auto &[pos, layout, start] : n.outside) {
            FailureOr<Value> moved = emitRelayout(b, op->getLoc(), start, layout, why, error);
            if (failed(moved))
              return fail(op);
            Value old = op->getOperand(pos);
            op->setOperand(pos, *moved);
            // The chain that fed only this operand is dead now.
            for (Operation *t = old.getDefiningOp(); t && old != start && t->use_empty();
                 t = old.getDefiningOp()) {
              old = t->getOperand(0);
              t->erase();
            }
          }
          for (auto [k, r] : llvm::enumerate(op->getResults())) {
            auto t = cast<RankedTensorType>(r.getType());
            r.setType(withLayout(
                t, fromLayout(op->getContext(), getLayout(t).getMesh(), n.splitResults[k])));
          }
          changes.push_back({kindName, describeLocation(op->getLoc()), "sunk past " + opName(op)});
        }
        for (size_t k = 0; k < op->getNumResults(); ++k) {
          Val &v = vals[n.vals[k]];
          auto [needW, needF] = needs(v, inS);
          Value mine = v.value, w, f;
          // The other version, when some reader takes it.
          b.setInsertionPointAfter(op);
          bool onF = inS[i];
          (onF ? f : w) = mine;
          if (onF ? needW : needF) {
            FailureOr<Value> other =
                emitRelayout(b, op->getLoc(), mine, onF ? v.whole : v.split, why, error);
            if (failed(other))
              return fail(op);
            (onF ? w : f) = *other;
          }
          versions.push_back({w, f});
        }
      }
      // Every recorded use reads the version its reader chose.
      for (size_t k = 0; k < versions.size(); ++k) {
        Val &v = vals[n.vals[k]];
        for (const Use &u : v.uses) {
          bool split = u.reader >= 0 && inS[u.reader];
          u.operand->set(split ? versions[k].second : versions[k].first);
        }
      }
    }
    for (Operation *op : llvm::reverse(erase))
      if (op->use_empty())
        op->erase();
    return success();
  }
};

static size_t hashLayout(const Layout &l) {
  llvm::hash_code h = llvm::hash_combine(l.orderDim, (int)l.order, l.dims.size());
  for (const auto &d : l.dims)
    h = llvm::hash_combine(h, d.size(), llvm::hash_combine_range(d.begin(), d.end()));
  return llvm::hash_combine(h, llvm::hash_combine_range(l.partial.begin(), l.partial.end()));
}

std::pair<int64_t, int64_t> RelayoutPrices::price(const Layout &from, const Layout &to,
                                                  RankedTensorType type,
                                                  const shardline::Mesh &mesh) {
  int64_t elementBytes = elementBytesOf(type);
  ArrayRef<int64_t> shape = type.getShape();
  size_t key = llvm::hash_combine(hashLayout(from), hashLayout(to), elementBytes,
                                  llvm::hash_combine_range(shape.begin(), shape.end()));
  std::vector<Entry> &bucket = known[key];
  for (const Entry &e : bucket)
    if (e.elementBytes == elementBytes && llvm::equal(e.shape, shape) && e.from == from &&
        e.to == to)
      return e.price;
  std::pair<int64_t, int64_t> result{-1, 0};
  std::string error;
  std::vector<int64_t> dims(shape.begin(), shape.end());
  std::vector<RelayoutStep> steps = planRelayout(from, to, mesh, dims, elementBytes, error);
  if (error.empty()) {
    int64_t bytes = 0;
    for (const RelayoutStep &step : steps)
      bytes = shardline::saturatingAdd(bytes, stepBytes(step, dims, elementBytes, mesh));
    result = {bytes, (int64_t)steps.size()};
  }
  bucket.push_back({from, to, elementBytes, std::move(dims), result});
  return result;
}

Move::Move(func::FuncOp fn, const Kind &kind, bool activationsBreakTies, RelayoutPrices *prices)
    : impl(std::make_unique<Impl>()) {
  impl->fn = fn;
  if (prices)
    impl->prices = prices;
  impl->kind = kind;
  impl->outcome.activationsBreakTies = activationsBreakTies;
}

bool mlir::sl::placement::activationsBreakTies(func::FuncOp fn) {
  auto module = fn->getParentOfType<ModuleOp>();
  auto sp = module ? module->getAttrOfType<BoolAttr>(kSequenceParallelAttr) : BoolAttr();
  return !sp || sp.getValue();
}
Move::~Move() = default;
Move::Move(Move &&) = default;
Move &Move::operator=(Move &&) = default;

const Kind &Move::kind() const { return impl->kind; }

const Outcome &Move::solve() {
  if (!impl->solved)
    impl->solve();
  return impl->outcome;
}

bool Move::moves(Operation *op) {
  solve();
  for (size_t i = 0; i < impl->nodes.size(); ++i)
    if (impl->nodes[i].op == op && impl->inS[i])
      return true;
  return replacementOf(op).has_value();
}

std::vector<Operation *> Move::movedPast() {
  solve();
  std::vector<Operation *> ops;
  for (size_t i = 0; i < impl->nodes.size(); ++i)
    if (impl->inS[i] && impl->nodes[i].role == Impl::Role::Op)
      ops.push_back(impl->nodes[i].op);
  return ops;
}

std::optional<Replacement> Move::replacementOf(Operation *op) {
  solve();
  for (size_t i = 0; i < impl->nodes.size(); ++i) {
    const Impl::Node &n = impl->nodes[i];
    if (!impl->inS[i])
      continue;
    Replacement r;
    if (n.role == Impl::Role::Source && !n.chain.empty()) {
      r.transitions = n.chain;
      r.from = impl->layoutOf(n.chain.front()->getOperand(0));
      r.to = n.sourceSplit;
    } else if (n.role == Impl::Role::Terminal) {
      r.reader = true;
      r.transitions.push_back(n.op);
      r.transitions.insert(r.transitions.end(), n.carried.begin(), n.carried.end());
      auto val = impl->valOf.find(n.op->getOperand(0));
      assert(val != impl->valOf.end() && "a reader's operand is a region value");
      r.from = impl->vals[val->second].split;
      r.to = impl->layoutOf(r.transitions.back()->getResult(0));
    } else {
      continue;
    }
    if (!llvm::is_contained(r.transitions, op))
      continue;
    r.bytesBefore = n.bytesOut;
    r.bytesAfter = n.bytesIn;
    return r;
  }
  return std::nullopt;
}

Operation *Move::firstMovedPast() {
  solve();
  for (size_t i = 0; i < impl->nodes.size(); ++i)
    if (impl->inS[i] && impl->nodes[i].role != Impl::Role::Source)
      return impl->nodes[i].op;
  return nullptr;
}

LogicalResult Move::apply(std::vector<Change> &changes) {
  solve();
  return impl->apply(changes);
}
