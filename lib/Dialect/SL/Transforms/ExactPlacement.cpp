//===- ExactPlacement.cpp - every op's layout chosen at the least bytes ---===//
//
// The model (ExactPlacement.h): *variables* are the ops with modes, each
// ranging over the layouts its rule accepts for its activation operands;
// *factors* are the values (op results and function arguments), each a table
// over the modes of its producer and its readers whose entry is the cheapest
// tree of relayouts from the produced layout to every layout read; and one
// factor per op for the tie-breaker (its results' bytes per rank). The least
// sum is found by eliminating variables one at a time (each step a min-plus
// product of the factors that mention the variable, smallest table first),
// then the modes are read back in reverse order. The elimination is exact:
// every assignment of modes is covered by the tables; its work is the sum
// of the table sizes, bounded by ExactLimits before any table is filled.
//
//===----------------------------------------------------------------------===//

#include "ExactPlacement.h"

#include "shardline/Analysis/Report.h"
#include "shardline/Dialect/SL/IR/Relayout.h"

#include <algorithm>
#include <limits>
#include <map>
#include <set>

using namespace mlir;
using namespace mlir::sl;
using namespace mlir::sl::placement;
using shardline::Layout;

namespace {

constexpr int64_t kInf = std::numeric_limits<int64_t>::max() / 4;

/// Bytes sent, then the tie-breaker.
struct Cost {
  int64_t bytes = 0, tie = 0;
  bool infinite() const { return bytes >= kInf; }
  bool operator<(const Cost &o) const { return bytes != o.bytes ? bytes < o.bytes : tie < o.tie; }
};
Cost operator+(Cost a, Cost b) {
  if (a.infinite() || b.infinite())
    return {kInf, 0};
  return {a.bytes + b.bytes, a.tie + b.tie};
}

bool isWeight(Value v) { return v.getDefiningOp<WeightOp>() != nullptr; }

/// The value a chain of transitions ending in `v` starts from (`v` itself
/// when no transition defines it); the transitions, first to last, into
/// `chain` when given.
Value chainStart(Value v, std::vector<Operation *> *chain = nullptr) {
  while (Operation *def = v.getDefiningOp()) {
    if (!isTransition(def))
      break;
    if (chain)
      chain->insert(chain->begin(), def);
    v = def->getOperand(0);
  }
  return v;
}

/// Every layout of `shape` on `mesh` that verifies: each axis unused, in the
/// pending sum or on one dimension, at any place in that dimension's order
/// (axes taken one by one, each inserted at every position, so each order
/// arises once); a split dimension 1 (the sequence) also zigzag.
std::vector<Layout> layoutsOf(const shardline::Mesh &mesh, const std::vector<int64_t> &shape) {
  std::vector<Layout> all;
  Layout l = Layout::replicated(shape.size());
  auto place = [&](auto &self, size_t axis) -> void {
    if (axis == mesh.axes.size()) {
      if (shardline::verifyLayout(l, &mesh, &shape).empty())
        all.push_back(l);
      if (shape.size() > 1 && !l.dims[1].empty()) {
        Layout z = l;
        z.orderDim = 1;
        z.order = shardline::ChunkOrder::Zigzag;
        if (shardline::verifyLayout(z, &mesh, &shape).empty())
          all.push_back(z);
      }
      return;
    }
    const std::string &name = mesh.axes[axis].first;
    self(self, axis + 1);
    auto insertEverywhere = [&](std::vector<std::string> &list) {
      for (size_t at = 0; at <= list.size(); ++at) {
        list.insert(list.begin() + at, name);
        self(self, axis + 1);
        list.erase(list.begin() + at);
      }
    };
    insertEverywhere(l.partial);
    for (auto &dim : l.dims)
      insertEverywhere(dim);
  };
  place(place, 0);
  return all;
}

/// The layouts of one tensor type (its layout stripped) and the cheapest
/// trees of relayouts between them.
struct Space {
  RankedTensorType type;
  std::vector<int64_t> shape;
  std::vector<Layout> layouts;
  bool movable = true;
  std::vector<int64_t> direct; // n*n, -2 until priced
  std::map<std::vector<int>, std::pair<int64_t, std::vector<int>>> trees;

  int find(const Layout &l) const {
    for (size_t i = 0; i < layouts.size(); ++i)
      if (layouts[i] == l)
        return (int)i;
    return -1;
  }

  int64_t edge(int from, int to, RelayoutPrices &prices, const shardline::Mesh &mesh) {
    if (from == to)
      return 0;
    if (!movable)
      return kInf;
    int64_t &d = direct[size_t(from) * layouts.size() + to];
    if (d == -2) {
      d = prices.bytes(layouts[from], layouts[to], type, mesh);
      if (d < 0)
        d = kInf;
    }
    return d;
  }

  /// The cheapest tree over `from` and the distinct layouts `terms` (none
  /// equal to `from`): its bytes and, per term, its parent (-1: `from`, else
  /// an index into terms). Every parent assignment is tried; a cycle never
  /// reaches `from` and is skipped.
  const std::pair<int64_t, std::vector<int>> &tree(int from, const std::vector<int> &terms,
                                                   RelayoutPrices &prices,
                                                   const shardline::Mesh &mesh) {
    std::vector<int> key{from};
    key.insert(key.end(), terms.begin(), terms.end());
    auto [it, fresh] = trees.try_emplace(key);
    if (!fresh)
      return it->second;
    size_t k = terms.size();
    std::vector<int> parent(k, -1), best(k, -1);
    int64_t bestBytes = kInf;
    auto reachesRoot = [&](size_t t) {
      int at = (int)t;
      for (size_t step = 0; at >= 0 && step <= k; ++step)
        at = parent[at];
      return at < 0;
    };
    auto assign = [&](auto &self, size_t t, int64_t sum) -> void {
      if (sum >= bestBytes)
        return;
      if (t == k) {
        for (size_t i = 0; i < k; ++i)
          if (!reachesRoot(i))
            return;
        bestBytes = sum;
        best = parent;
        return;
      }
      for (int p = -1; p < (int)k; ++p) {
        if (p == (int)t)
          continue;
        parent[t] = p;
        int64_t e = edge(p < 0 ? from : terms[p], terms[t], prices, mesh);
        if (e < kInf)
          self(self, t + 1, sum + e);
      }
      parent[t] = -1;
    };
    assign(assign, 0, 0);
    it->second = {bestBytes, best};
    return it->second;
  }
};

/// One reader of a value: an op with modes (its mode decides the layout) or
/// a fixed layout.
struct Need {
  int var = -1;
  /// var < 0: the layout read; else, per mode of `var`, its id in the value's
  /// space.
  int fixed = -1;
  std::vector<int> byMode;
  OpOperand *use = nullptr;
  /// The transitions that took the value to the reader (first to last).
  std::vector<Operation *> chain;
  int layout(const std::vector<int> &mode) const { return var < 0 ? fixed : byMode[mode[var]]; }
};

struct Root {
  Value value;
  Space *space = nullptr;
  int producer = -1, result = 0, fixed = -1;
  std::vector<Need> needs;
};

struct Var {
  Operation *op;
  std::vector<Layout> modes;
  /// Per mode, the id of each result's layout in its space.
  std::vector<std::vector<int>> results;
  std::vector<int64_t> resultBytes;
};

/// A table over the modes of `vars` (ascending), the last variable fastest.
struct Factor {
  std::vector<int> vars;
  std::vector<Cost> table;
};

class Search {
public:
  Search(func::FuncOp fn, RelayoutPrices &prices, const ExactLimits &limits)
      : fn(fn), prices(prices), limits(limits) {}

  ExactResult run(std::vector<Change> &changes);

private:
  /// Reads the problem from the IR; a result when the search stops there.
  std::optional<ExactResult> build();
  /// The least-cost modes and their cost; a result when the search stops.
  std::optional<ExactResult> solve(std::vector<int> &mode, Cost &total);
  /// Rewrites the function into `mode`'s placement.
  LogicalResult realize(const std::vector<int> &mode, std::vector<Change> &changes,
                        std::string &error);

  Space &spaceOf(Value v);
  bool hasModes(Operation *op);
  Cost rootCost(const Root &r, const std::vector<int> &mode);
  std::vector<int> scopeOf(const Root &r) const;
  int produced(const Root &r, const std::vector<int> &mode) const {
    return r.producer < 0 ? r.fixed : vars[r.producer].results[mode[r.producer]][r.result];
  }
  std::vector<int> termsOf(const Root &r, const std::vector<int> &mode, int from) const {
    std::set<int> s;
    for (const Need &n : r.needs)
      if (int l = n.layout(mode); l != from)
        s.insert(l);
    return {s.begin(), s.end()};
  }

  func::FuncOp fn;
  RelayoutPrices &prices;
  const ExactLimits &limits;
  shardline::Mesh mesh;
  FlatSymbolRefAttr meshRef;
  std::map<std::pair<const void *, std::vector<int64_t>>, std::unique_ptr<Space>> spaces;
  std::vector<Var> vars;
  std::vector<Root> roots;
};

Space &Search::spaceOf(Value v) {
  auto type = cast<RankedTensorType>(v.getType());
  std::vector<int64_t> shape(type.getShape().begin(), type.getShape().end());
  auto key = std::make_pair(type.getElementType().getAsOpaquePointer(), shape);
  auto &slot = spaces[key];
  if (!slot) {
    slot = std::make_unique<Space>();
    slot->type = withLayout(type, LayoutAttr());
    slot->shape = shape;
    slot->layouts = layoutsOf(mesh, shape);
    slot->movable = placement::movable(v);
    slot->direct.assign(slot->layouts.size() * slot->layouts.size(), -2);
  }
  return *slot;
}

bool Search::hasModes(Operation *op) {
  if (isTransition(op) || isa<WeightOp>(op) || op->hasTrait<OpTrait::IsTerminator>() ||
      op->getNumResults() == 0)
    return false;
  for (Value r : op->getResults())
    if (!isa<RankedTensorType>(r.getType()))
      return false;
  std::optional<ArrayRef<int64_t>> shape;
  for (Value v : op->getOperands()) {
    if (isWeight(v))
      continue;
    auto type = dyn_cast<RankedTensorType>(v.getType());
    if (!type || (shape && *shape != type.getShape()))
      return false;
    shape = type.getShape();
  }
  return shape && checkOpRule(op).has_value();
}

std::optional<ExactResult> Search::build() {
  auto stop = [](ExactResult::Status status, std::string why) {
    return ExactResult{status, std::move(why), 0};
  };
  if (!fn.getBody().hasOneBlock())
    return stop(ExactResult::Status::Unsupported, "the function has no body or several blocks");
  Block &body = fn.getBody().front();
  // One mesh for every layout of the function.
  auto noteMesh = [&](Value v) {
    if (LayoutAttr l = getLayout(v)) {
      if (meshRef && meshRef != l.getMesh())
        return false;
      meshRef = l.getMesh();
    }
    return true;
  };
  for (BlockArgument a : body.getArguments())
    if (!noteMesh(a))
      return stop(ExactResult::Status::Unsupported, "layouts on several meshes");
  for (Operation &op : body) {
    if (op.getNumRegions() > 0)
      return stop(ExactResult::Status::Unsupported, "an op with regions");
    for (Value v : op.getResults())
      if (!noteMesh(v))
        return stop(ExactResult::Status::Unsupported, "layouts on several meshes");
  }
  if (!meshRef)
    return stop(ExactResult::Status::Unsupported, "no value has a layout");
  MeshOp meshOp = lookupMesh(fn, fromLayout(fn.getContext(), meshRef, Layout::replicated(0)));
  if (!meshOp)
    return stop(ExactResult::Status::Unsupported, "the mesh is not defined");
  mesh = toMesh(meshOp);

  llvm::DenseMap<Value, int> rootIndex;
  std::optional<ExactResult> stopped;
  auto addRoot = [&](Value v, int producer, int result) {
    if (!isa<RankedTensorType>(v.getType()))
      return;
    Root r;
    r.value = v;
    r.space = &spaceOf(v);
    r.producer = producer;
    r.result = result;
    if (producer < 0 && (r.fixed = r.space->find(layoutOrReplicated(v))) < 0)
      stopped = stop(ExactResult::Status::Unsupported,
                     "a layout outside the enumeration: " + layoutOrReplicated(v).str());
    rootIndex[v] = roots.size();
    roots.push_back(std::move(r));
  };
  for (BlockArgument a : body.getArguments())
    addRoot(a, -1, 0);
  if (stopped)
    return stopped;
  for (Operation &op : body) {
    if (isTransition(&op) || isa<WeightOp>(&op))
      continue;
    int self = -1;
    if (hasModes(&op)) {
      Var var{&op, {}, {}, {}};
      Value first = *llvm::find_if(op.getOperands(), [](Value v) { return !isWeight(v); });
      // As the moves do, a mode changes an operand's layout only in the
      // rule's free dimensions: never a contracted one, nor the sequence of
      // an op whose split carries a remedy (ring attention, a scan, a halo).
      std::optional<shardline::ShardingRule> rule;
      if (auto iface = dyn_cast<ShardingRuleOpInterface>(&op))
        rule = iface.getShardingRule();
      auto onlyFree = [&](const Layout &l) {
        for (auto [pos, v] : llvm::enumerate(op.getOperands())) {
          if (isWeight(v))
            continue;
          Layout now = layoutOrReplicated(v);
          for (size_t d = 0; d < l.dims.size(); ++d) {
            if (d < now.dims.size() && l.dims[d] == now.dims[d] && l.dimOrder(d) == now.dimOrder(d))
              continue;
            if (!rule || pos >= rule->operands.size() || d >= rule->operands[pos].size())
              return false;
            int factor = rule->operands[pos][d];
            if (factor < 0 || rule->factors[factor].kind != shardline::FactorKind::Free)
              return false;
          }
        }
        return true;
      };
      for (const Layout &l : spaceOf(first).layouts) {
        if (!l.partial.empty() || !onlyFree(l))
          continue;
        llvm::DenseMap<Value, Layout> overrides;
        for (Value v : op.getOperands())
          if (!isWeight(v))
            overrides[v] = l;
        auto check = checkOpRule(&op, overrides);
        if (!check || !check->error.empty() || check->results.size() != op.getNumResults())
          continue;
        std::vector<int> ids;
        int64_t bytes = 0;
        for (auto [j, res] : llvm::enumerate(op.getResults())) {
          auto type = cast<RankedTensorType>(res.getType());
          ids.push_back(spaceOf(res).find(check->results[j]));
          std::vector<int64_t> shape(type.getShape().begin(), type.getShape().end());
          bytes = shardline::saturatingAdd(
              bytes, shardline::saturatingMul(shardline::numElements(shardline::localShape(
                                                  check->results[j], mesh, shape)),
                                              elementBytesOf(type)));
        }
        if (llvm::is_contained(ids, -1))
          continue;
        var.modes.push_back(l);
        var.results.push_back(std::move(ids));
        var.resultBytes.push_back(bytes);
      }
      if (!var.modes.empty()) {
        self = vars.size();
        vars.push_back(std::move(var));
      }
    }
    for (OpOperand &use : op.getOpOperands()) {
      Value v = use.get();
      if (isWeight(v) || !isa<RankedTensorType>(v.getType()))
        continue;
      Need need;
      need.var = self;
      need.use = &use;
      auto it = rootIndex.find(chainStart(v, &need.chain));
      if (it == rootIndex.end())
        return stop(ExactResult::Status::Unsupported, "a value from outside the function's body");
      Root &root = roots[it->second];
      if (self < 0) {
        need.fixed = root.space->find(layoutOrReplicated(use.get()));
        if (need.fixed < 0)
          return stop(ExactResult::Status::Unsupported,
                      "a layout outside the enumeration: " + layoutOrReplicated(use.get()).str());
      } else {
        for (const Layout &l : vars[self].modes)
          need.byMode.push_back(root.space->find(l));
        if (llvm::is_contained(need.byMode, -1))
          return stop(ExactResult::Status::Unsupported, "an operand of another shape");
      }
      root.needs.push_back(std::move(need));
    }
    for (auto [j, res] : llvm::enumerate(op.getResults()))
      addRoot(res, self, j);
    if (stopped)
      return stopped;
  }
  if (vars.size() > limits.maxOps)
    return stop(ExactResult::Status::TooLarge, std::to_string(vars.size()) +
                                                   " ops with modes (at most " +
                                                   std::to_string(limits.maxOps) + ")");
  for (const Root &r : roots) {
    std::set<int> readers, fixed;
    for (const Need &n : r.needs)
      n.var < 0 ? (void)fixed.insert(n.fixed) : (void)readers.insert(n.var);
    if (readers.size() + fixed.size() > limits.maxReaders)
      return stop(ExactResult::Status::TooLarge,
                  "a value read in up to " + std::to_string(readers.size() + fixed.size()) +
                      " layouts (at most " + std::to_string(limits.maxReaders) + ")");
  }
  return std::nullopt;
}

std::vector<int> Search::scopeOf(const Root &r) const {
  std::set<int> s;
  if (r.producer >= 0)
    s.insert(r.producer);
  for (const Need &n : r.needs)
    if (n.var >= 0)
      s.insert(n.var);
  return {s.begin(), s.end()};
}

Cost Search::rootCost(const Root &r, const std::vector<int> &mode) {
  int from = produced(r, mode);
  std::vector<int> terms = termsOf(r, mode, from);
  if (terms.empty())
    return {0, 0};
  return {r.space->tree(from, terms, prices, mesh).first, 0};
}

std::optional<ExactResult> Search::solve(std::vector<int> &mode, Cost &total) {
  auto domain = [&](int v) { return (uint64_t)vars[v].modes.size(); };
  auto sizeOf = [&](const std::vector<int> &scope) {
    uint64_t n = 1;
    for (int v : scope)
      n = std::min<uint64_t>(n * domain(v), uint64_t(1) << 62);
    return n;
  };
  auto tooLarge = [&] {
    return ExactResult{ExactResult::Status::TooLarge,
                       "the elimination would fill more than " + std::to_string(limits.maxEntries) +
                           " table entries",
                       0};
  };
  std::vector<Factor> factors;
  for (const Root &r : roots)
    if (!r.needs.empty())
      factors.push_back({scopeOf(r), {}});
  for (size_t v = 0; v < vars.size(); ++v)
    factors.push_back({{(int)v}, {}});

  // The order, by scopes alone, and its work: each step picks the variable
  // whose product of the factors that mention it is smallest.
  uint64_t work = 0;
  for (const Factor &f : factors)
    work += sizeOf(f.vars);
  std::vector<std::vector<int>> scopes;
  for (const Factor &f : factors)
    scopes.push_back(f.vars);
  std::vector<bool> eliminated(vars.size(), false);
  std::vector<int> order;
  for (size_t step = 0; step < vars.size(); ++step) {
    int best = -1;
    std::vector<int> bestUnion;
    uint64_t bestSize = 0;
    for (size_t v = 0; v < vars.size(); ++v) {
      if (eliminated[v])
        continue;
      std::set<int> u{(int)v};
      for (const auto &s : scopes)
        if (llvm::is_contained(s, (int)v))
          u.insert(s.begin(), s.end());
      std::vector<int> all(u.begin(), u.end());
      uint64_t size = sizeOf(all);
      if (best < 0 || size < bestSize) {
        best = v;
        bestSize = size;
        bestUnion = all;
      }
    }
    work += bestSize;
    if (work > limits.maxEntries)
      return tooLarge();
    eliminated[best] = true;
    order.push_back(best);
    std::vector<std::vector<int>> next;
    for (auto &s : scopes)
      if (!llvm::is_contained(s, best))
        next.push_back(std::move(s));
    llvm::erase(bestUnion, best);
    next.push_back(bestUnion);
    scopes = std::move(next);
  }

  // The tables.
  mode.assign(vars.size(), 0);
  auto forEach = [&](const std::vector<int> &scope, auto body) {
    for (int v : scope)
      mode[v] = 0;
    for (uint64_t e = 0, n = sizeOf(scope); e < n; ++e) {
      body(e);
      for (size_t i = scope.size(); i-- > 0;) {
        if (++mode[scope[i]] < (int)domain(scope[i]))
          break;
        mode[scope[i]] = 0;
      }
    }
  };
  size_t f = 0;
  for (const Root &r : roots) {
    if (r.needs.empty())
      continue;
    Factor &factor = factors[f++];
    factor.table.resize(sizeOf(factor.vars));
    forEach(factor.vars, [&](uint64_t e) { factor.table[e] = rootCost(r, mode); });
  }
  for (size_t v = 0; v < vars.size(); ++v, ++f)
    for (size_t m = 0; m < vars[v].modes.size(); ++m)
      factors[f].table.push_back({0, vars[v].resultBytes[m]});

  // The elimination, then the modes read back.
  auto index = [&](const std::vector<int> &scope) {
    uint64_t at = 0;
    for (int v : scope)
      at = at * domain(v) + mode[v];
    return at;
  };
  struct Step {
    int var;
    /// The best mode of `var` per assignment of `scope`.
    std::vector<int> scope, argmin;
  };
  std::vector<Step> steps;
  std::vector<bool> alive(factors.size(), true);
  for (int v : order) {
    std::vector<size_t> mention;
    std::set<int> u;
    for (size_t i = 0; i < factors.size(); ++i)
      if (alive[i] && llvm::is_contained(factors[i].vars, v)) {
        mention.push_back(i);
        u.insert(factors[i].vars.begin(), factors[i].vars.end());
      }
    u.erase(v);
    Factor reduced{{u.begin(), u.end()}, {}};
    Step step{v, reduced.vars, {}};
    reduced.table.resize(sizeOf(reduced.vars));
    step.argmin.resize(reduced.table.size());
    forEach(reduced.vars, [&](uint64_t e) {
      Cost best{kInf, 0};
      int bestMode = 0;
      for (int m = 0; m < (int)domain(v); ++m) {
        mode[v] = m;
        Cost c{0, 0};
        for (size_t i : mention)
          c = c + factors[i].table[index(factors[i].vars)];
        if (c < best) {
          best = c;
          bestMode = m;
        }
      }
      mode[v] = 0;
      reduced.table[e] = best;
      step.argmin[e] = bestMode;
    });
    for (size_t i : mention)
      alive[i] = false;
    factors.push_back(std::move(reduced));
    alive.push_back(true);
    steps.push_back(std::move(step));
  }
  total = {0, 0};
  for (size_t i = 0; i < factors.size(); ++i)
    if (alive[i])
      total = total + factors[i].table.at(0);
  if (total.infinite())
    return ExactResult{ExactResult::Status::Unsupported, "no placement can be lowered", 0};
  for (const Step &step : llvm::reverse(steps))
    mode[step.var] = step.argmin[index(step.scope)];
  return std::nullopt;
}

LogicalResult Search::realize(const std::vector<int> &mode, std::vector<Change> &changes,
                              std::string &error) {
  Block &body = fn.getBody().front();
  llvm::DenseMap<Operation *, size_t> position;
  for (Operation &op : body)
    position[&op] = position.size();
  // Each old transition by the value it starts from and the layout it gives.
  auto keyOf = [](Operation *t) {
    return std::make_pair(chainStart(t->getOperand(0)).getAsOpaquePointer(),
                          layoutOrReplicated(t->getResult(0)).str());
  };
  std::vector<Operation *> old;
  std::vector<std::pair<const void *, std::string>> oldKeys;
  std::map<std::pair<const void *, std::string>, Operation *> firstOld;
  for (Operation &op : body)
    if (isTransition(&op)) {
      old.push_back(&op);
      oldKeys.push_back(keyOf(&op));
      firstOld.try_emplace(oldKeys.back(), &op);
    }

  // The ops take their modes' result layouts.
  for (const Root &r : roots) {
    if (r.producer < 0)
      continue;
    const Layout &l = r.space->layouts[produced(r, mode)];
    if (layoutOrReplicated(r.value) != l) {
      auto type = cast<RankedTensorType>(r.value.getType());
      Value(r.value).setType(withLayout(type, fromLayout(fn.getContext(), meshRef, l)));
    }
  }
  // Each value's tree, every relayout in front of the first reader it serves
  // (through the relayouts after it).
  for (const Root &r : roots) {
    if (r.needs.empty())
      continue;
    int from = produced(r, mode);
    std::vector<int> terms = termsOf(r, mode, from);
    std::map<int, Value> valueOf{{from, r.value}};
    if (!terms.empty()) {
      std::vector<int> parent = r.space->tree(from, terms, prices, mesh).second;
      size_t k = terms.size();
      std::vector<const Need *> firstNeed(k, nullptr);
      std::vector<Operation *> before(k, nullptr);
      for (const Need &n : r.needs) {
        auto t = llvm::find(terms, n.layout(mode)) - terms.begin();
        if (t == (long)k)
          continue;
        Operation *owner = n.use->getOwner();
        if (!firstNeed[t] || position[owner] < position[firstNeed[t]->use->getOwner()])
          firstNeed[t] = &n;
        if (!before[t] || position[owner] < position[before[t]])
          before[t] = owner;
      }
      for (size_t round = 0; round < k; ++round)
        for (size_t t = 0; t < k; ++t)
          if (parent[t] >= 0 && position[before[t]] < position[before[parent[t]]])
            before[parent[t]] = before[t];
      // A relayout the function had already (the same value to the same
      // layout) stays where it was, if that is after its source.
      std::vector<Operation *> at(k, nullptr);
      auto placeAt = [&](size_t t) {
        at[t] = before[t];
        auto it = firstOld.find({r.value.getAsOpaquePointer(), r.space->layouts[terms[t]].str()});
        if (it != firstOld.end() && position[it->second] <= position[before[t]] &&
            (parent[t] < 0 || position[it->second] >= position[at[parent[t]]]))
          at[t] = it->second;
      };
      std::vector<bool> done(k, false);
      for (size_t emitted = 0; emitted < k;) {
        for (size_t t = 0; t < k; ++t) {
          if (done[t] || (parent[t] >= 0 && !done[parent[t]]))
            continue;
          const Need &n = *firstNeed[t];
          StringAttr reason = n.chain.empty()
                                  ? StringAttr()
                                  : n.chain.back()->getAttrOfType<StringAttr>(kReasonAttr);
          Location loc = n.chain.empty() ? r.value.getLoc() : n.chain.back()->getLoc();
          placeAt(t);
          OpBuilder b(at[t]);
          auto v = emitRelayout(b, loc, valueOf.at(parent[t] < 0 ? from : terms[parent[t]]),
                                r.space->layouts[terms[t]], reason, error);
          if (failed(v))
            return failure();
          valueOf[terms[t]] = *v;
          done[t] = true;
          ++emitted;
        }
      }
    }
    for (const Need &n : r.needs)
      n.use->set(valueOf.at(n.layout(mode)));
  }
  // The old transitions go; those whose relayout was not written again are
  // recorded.
  std::set<std::pair<const void *, std::string>> kept;
  for (Operation &op : body)
    if (isTransition(&op) && !llvm::is_contained(old, &op))
      kept.insert(keyOf(&op));
  for (size_t i = old.size(); i-- > 0;) {
    Operation *t = old[i];
    if (!t->use_empty()) {
      error = "a transition still has readers after the rewrite";
      return failure();
    }
    if (!kept.count(oldKeys[i]))
      changes.push_back({t->getName().getStringRef().substr(3).str(),
                         shardline::describeLocation(t->getLoc()),
                         "re-placed by the exact search over every op's layout"});
    t->erase();
  }
  return success();
}

ExactResult Search::run(std::vector<Change> &changes) {
  if (std::optional<ExactResult> stopped = build())
    return *stopped;
  std::vector<int> mode;
  Cost total;
  if (std::optional<ExactResult> stopped = solve(mode, total))
    return *stopped;
  std::string error;
  std::vector<Change> made;
  if (failed(realize(mode, made, error)))
    return {ExactResult::Status::Unsupported, error, 0};
  changes.insert(changes.end(), made.rbegin(), made.rend());
  return {ExactResult::Status::Placed, "", total.bytes};
}

} // namespace

bool mlir::sl::placement::exactSearchMayFit(func::FuncOp fn, const ExactLimits &limits) {
  size_t ops = 0;
  for (Operation &op : fn.getBody().getOps())
    if (!isTransition(&op) && !isa<WeightOp>(&op) && !op.hasTrait<OpTrait::IsTerminator>() &&
        op.getNumResults() > 0 && ++ops > limits.maxOps)
      return false;
  return true;
}

ExactResult mlir::sl::placement::placeExactly(func::FuncOp fn, RelayoutPrices &prices,
                                              const ExactLimits &limits,
                                              std::vector<Change> &changes) {
  return Search(fn, prices, limits).run(changes);
}
