//===- ElideGathers.cpp - place layout transitions by bytes ---------------===//
//
// Moves (Placement.h) re-place every transition of one kind at once by a
// minimum cut over the region of free ops it reaches; the pass applies the
// best move while one lowers the bytes per rank (or keeps them and shrinks
// activations), then the local rewrites below, which never add bytes, and
// serves the readers of a value in several layouts through one another by
// the cheapest tree of relayouts over those layouts. Then, for a function
// small enough, the exact search of ExactPlacement.h places it again from
// scratch and replaces it where that sends fewer bytes. Every
// rewrite keeps values: an op is re-typed only in the free dimensions of its
// rule, checked with the same checker as the verifier.
//
//===----------------------------------------------------------------------===//

#include "ExactPlacement.h"
#include "Placement.h"

#include "shardline/Analysis/MemoryPlan.h"
#include "shardline/Analysis/Report.h"
#include "shardline/Dialect/SL/IR/Relayout.h"
#include "shardline/Dialect/SL/IR/SL.h"
#include "shardline/Dialect/SL/Transforms/Passes.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::sl {
#define GEN_PASS_DEF_SLELIDEGATHERS
#include "shardline/Dialect/SL/Transforms/Passes.h.inc"
} // namespace mlir::sl

using namespace mlir;
using namespace mlir::sl;
using shardline::Layout;
using Axes = std::vector<std::string>;
using placement::Change;

namespace {

using Records = std::vector<Change>;

std::string locText(Location loc) { return shardline::describeLocation(loc); }

Axes axesOf(ArrayAttr a) { return axisNames(a); }

std::string opName(Operation *op) { return op->getName().getStringRef().str().substr(3); }

RankedTensorType retype(Value v, const Layout &l) {
  auto t = cast<RankedTensorType>(v.getType());
  LayoutAttr old = getLayout(t);
  return withLayout(t, fromLayout(t.getContext(), old.getMesh(), l));
}

/// all_gather(x) -> all_gather on the same dimension => one all_gather (the
/// same bytes in one collective; the pass splits them again to move one axis).
struct MergeGathers : OpRewritePattern<AllGatherOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(AllGatherOp op, PatternRewriter &rewriter) const override {
    auto inner = op.getX().getDefiningOp<AllGatherOp>();
    if (!inner || inner.getDim() != op.getDim() || !inner.getResult().hasOneUse())
      return failure();
    Axes axes = axesOf(op.getAxes());
    Axes innerAxes = axesOf(inner.getAxes());
    axes.insert(axes.end(), innerAxes.begin(), innerAxes.end());
    SmallVector<StringRef> refs(axes.begin(), axes.end());
    auto merged = AllGatherOp::create(rewriter, op.getLoc(), op.getResult().getType(), inner.getX(),
                                      rewriter.getStrArrayAttr(refs), op.getDimAttr());
    if (auto reason = op->getAttr(kReasonAttr))
      merged->setAttr(kReasonAttr, reason);
    rewriter.replaceOp(op, merged.getResult());
    rewriter.eraseOp(inner);
    return success();
  }
};

/// An all_gather over several axes => one per axis, minor-most first, so that
/// a move can re-place one axis and keep the others (the same bytes: a
/// gather over g = a*b ranks sends (g-1)/g of the result, and gathering b
/// then a sends (b-1)/b of 1/a of it plus (a-1)/a of it).
void splitGathers(func::FuncOp fn) {
  SmallVector<AllGatherOp> gathers;
  fn.walk([&](AllGatherOp g) {
    if (g.getAxes().size() > 1)
      gathers.push_back(g);
  });
  for (AllGatherOp g : gathers) {
    OpBuilder b(g);
    Value cur = g.getX();
    Layout l = toLayout(getLayout(cur));
    Axes axes = axesOf(g.getAxes());
    for (const std::string &a : llvm::reverse(axes)) {
      auto &d = l.dims[g.getDim()];
      d.pop_back();
      if (d.empty() && l.orderDim == (int64_t)g.getDim())
        l.orderDim = -1;
      auto single = AllGatherOp::create(b, g.getLoc(), retype(cur, l), cur, b.getStrArrayAttr({a}),
                                        g.getDimAttr());
      if (auto reason = g->getAttr(kReasonAttr))
        single->setAttr(kReasonAttr, reason);
      cur = single.getResult();
    }
    g.getResult().replaceAllUsesWith(cur);
    g->erase();
  }
}

/// A chain of layout transitions ending at `op` becomes what planRelayout
/// emits from one of its points to its end, where that sends fewer bytes than
/// the transitions it leaves dead, or the same bytes in fewer ops: a gather
/// then a slice of the same axes is the gathered value, a slice then a gather
/// the value sliced, inverse reorders or all-to-alls nothing, two all-to-alls
/// one, a gather then a slice of another dimension an all_to_all, a zigzag
/// gather then a contiguous slice a reorder, a gather before an all_to_all
/// between two other dimensions the all_to_all first.
struct CollapseChain : RewritePattern {
  CollapseChain(MLIRContext *ctx, Records &records, placement::RelayoutPrices &prices)
      : RewritePattern(MatchAnyOpTypeTag(), /*benefit=*/1, ctx), records(records), prices(prices) {}
  Records &records;
  placement::RelayoutPrices &prices;
  LogicalResult matchAndRewrite(Operation *op, PatternRewriter &rewriter) const override {
    if (!placement::isTransition(op) || !getLayout(op->getOperand(0)))
      return failure();
    MeshOp meshOp = lookupMesh(op, getLayout(op->getOperand(0)));
    if (!meshOp)
      return failure();
    shardline::Mesh mesh = toMesh(meshOp);
    Layout to = toLayout(getLayout(op->getResult(0)));
    // Walking back: the bytes and ops that die if the chain restarts at each
    // point (an op whose result another user reads stays, and so does every
    // op before it).
    int64_t deadBytes = 0, deadOps = 0;
    bool dying = true;
    struct Best {
      Value start;
      int64_t saved = 0, steps = 0, ops = 0;
    };
    std::optional<Best> best;
    int length = 0;
    for (Operation *t = op; t && placement::isTransition(t) && getLayout(t->getOperand(0));
         t = t->getOperand(0).getDefiningOp(), ++length) {
      dying = dying && (t == op || t->getResult(0).hasOneUse());
      if (dying) {
        deadBytes = shardline::saturatingAdd(
            deadBytes, std::max<int64_t>(0, shardline::collectiveBytesPerRank(t)));
        ++deadOps;
      }
      if (t == op)
        continue;
      Value start = t->getOperand(0);
      auto [bytes, steps] = prices.price(toLayout(getLayout(start)), to,
                                         cast<RankedTensorType>(start.getType()), mesh);
      if (bytes < 0)
        continue;
      int64_t saved = deadBytes - bytes, fewer = deadOps - steps;
      if ((saved > 0 || (saved == 0 && fewer > 0)) &&
          (!best || saved > best->saved || (saved == best->saved && fewer > best->ops)))
        best = Best{start, saved, steps, fewer};
    }
    if (!best)
      return failure();
    std::string error;
    FailureOr<Value> out = emitRelayout(rewriter, op->getLoc(), best->start, to,
                                        op->getAttrOfType<StringAttr>(kReasonAttr), error);
    if (failed(out))
      return failure();
    records.push_back(
        {opName(op), locText(op->getLoc()),
         "chain of transitions became " +
             (best->steps ? std::to_string(best->steps) + " op(s)" : std::string("nothing")) +
             ", " + std::to_string(best->saved) + " fewer bytes per rank"});
    rewriter.replaceOp(op, *out);
    return success();
  }
};

/// Readers of one value in more layouts than one: the cheapest way to serve
/// them is a tree of relayouts over the layouts they need, rooted at the
/// value's own, where a reader may be served from another reader's layout (a
/// pending sum reduce-scattered for one reader, gathered for a second and
/// sliced again for a third). The moves never write such a tree: each of
/// their readers takes its layout from one of the two versions of the value.
/// Trees are enumerated (every parent for every needed layout), so a value
/// read in more than kMaxTreeLayouts layouts other than its own keeps its
/// chains.
constexpr size_t kMaxTreeLayouts = 5;

struct ReaderTree {
  /// The transitions fed by the root through transitions only, each after
  /// the one it reads.
  std::vector<Operation *> transitions;
  /// needed[0] is the root's layout; the others are the layouts that ops
  /// other than transitions read (or the function returns). readers[i]: the
  /// operands that read needed[i] through a transition.
  std::vector<Layout> needed;
  std::vector<std::vector<OpOperand *>> readers;
  int64_t bytes = 0;
};

/// The transitions under `root` and the layouts its other readers need;
/// nullopt when a reader is not an op of `block` itself, or when a
/// transition is the backward's gather done again from the saved shard
/// (sl.recompute: the save policy asked for it, trading bytes for memory).
std::optional<ReaderTree> readerTree(Value root, Block &block) {
  ReaderTree tree;
  tree.needed.push_back(toLayout(getLayout(root)));
  tree.readers.emplace_back();
  std::vector<Value> work{root};
  for (size_t i = 0; i < work.size(); ++i) {
    Value v = work[i];
    for (OpOperand &use : v.getUses()) {
      Operation *user = use.getOwner();
      if (user->getBlock() != &block)
        return std::nullopt;
      if (user->hasAttr(kRecomputeAttr))
        return std::nullopt;
      if (placement::isTransition(user) && getLayout(user->getResult(0))) {
        tree.transitions.push_back(user);
        tree.bytes = shardline::saturatingAdd(
            tree.bytes, std::max<int64_t>(0, shardline::collectiveBytesPerRank(user)));
        work.push_back(user->getResult(0));
        continue;
      }
      if (v == root)
        continue;
      Layout l = toLayout(getLayout(v));
      size_t k = std::find(tree.needed.begin(), tree.needed.end(), l) - tree.needed.begin();
      if (k == tree.needed.size()) {
        tree.needed.push_back(l);
        tree.readers.emplace_back();
      }
      tree.readers[k].push_back(&use);
    }
  }
  return tree;
}

/// The cheapest tree over `tree.needed` rooted at needed[0], each edge one
/// relayout as relayoutBytes prices it: the parent of each needed layout
/// (parent[0] = -1) and the total, or nullopt when none costs less than
/// `bound`.
std::optional<std::pair<std::vector<int>, int64_t>>
cheapestTree(const ReaderTree &tree, RankedTensorType type, const shardline::Mesh &mesh,
             placement::RelayoutPrices &prices, int64_t bound) {
  size_t n = tree.needed.size();
  std::vector<std::vector<int64_t>> edge(n, std::vector<int64_t>(n, -1));
  for (size_t a = 0; a < n; ++a)
    for (size_t b = 1; b < n; ++b)
      if (a != b)
        edge[a][b] = prices.bytes(tree.needed[a], tree.needed[b], type, mesh);
  std::vector<int> parent(n, -1), best;
  int64_t bestBytes = bound;
  // Whether every needed layout reaches the root through its parents.
  auto rooted = [&] {
    for (size_t i = 1; i < n; ++i) {
      size_t at = i, steps = 0;
      while (at != 0 && steps++ < n)
        at = (size_t)parent[at];
      if (at != 0)
        return false;
    }
    return true;
  };
  auto rec = [&](auto &self, size_t i, int64_t sum) -> void {
    if (sum >= bestBytes)
      return;
    if (i == n) {
      if (rooted()) {
        bestBytes = sum;
        best = parent;
      }
      return;
    }
    for (size_t p = 0; p < n; ++p) {
      if (p == i || edge[p][i] < 0)
        continue;
      parent[i] = (int)p;
      self(self, i + 1, shardline::saturatingAdd(sum, edge[p][i]));
    }
  };
  rec(rec, 1, 0);
  if (best.empty())
    return std::nullopt;
  return std::make_pair(best, bestBytes);
}

/// Serves the readers of each value in several layouts by the cheapest tree
/// of relayouts (ReaderTree) where it sends fewer bytes than the transitions
/// there now. Each relayout goes right before the first op that needs its
/// result, so no value is taken earlier than a reader needs it. Returns
/// whether anything changed (with `apply` false: whether anything would,
/// leaving `fn` as it is).
bool serveReadersByTrees(func::FuncOp fn, placement::RelayoutPrices &prices, Records &records,
                         bool apply = true) {
  if (fn.getBody().empty())
    return false;
  Block &block = fn.getBody().front();
  std::optional<shardline::Mesh> mesh;
  std::vector<Value> roots;
  for (BlockArgument a : block.getArguments())
    roots.push_back(a);
  for (Operation &op : block) {
    if (!mesh)
      mesh = placement::meshOf(&op);
    // A transition's result is served by the tree of the value it reads.
    if (!placement::isTransition(&op))
      for (Value r : op.getResults())
        roots.push_back(r);
  }
  if (!mesh)
    return false;
  bool changed = false;
  for (Value root : roots) {
    auto type = dyn_cast<RankedTensorType>(root.getType());
    if (!type || !getLayout(type) || !placement::movable(root))
      continue;
    std::optional<ReaderTree> tree = readerTree(root, block);
    if (!tree || tree->transitions.empty() || tree->needed.size() > kMaxTreeLayouts + 1)
      continue;
    auto found = cheapestTree(*tree, type, *mesh, prices, tree->bytes);
    if (!found)
      continue;
    if (!apply)
      return true;
    auto [parent, bytes] = *found;
    // Where each layout is first needed: before its first reader and before
    // every layout served from it.
    llvm::DenseMap<Operation *, int> position;
    for (auto [k, op] : llvm::enumerate(block))
      position[&op] = (int)k;
    size_t n = tree->needed.size();
    std::vector<Operation *> first(n, nullptr);
    auto earlier = [&](Operation *a, Operation *b) {
      return !b || (a && position.lookup(a) < position.lookup(b));
    };
    for (size_t i = 1; i < n; ++i)
      for (OpOperand *use : tree->readers[i])
        if (earlier(use->getOwner(), first[i]))
          first[i] = use->getOwner();
    // A child's first reader comes before its parent's only through the
    // child; children sort after parents below, so n passes settle it.
    for (size_t pass = 0; pass < n; ++pass)
      for (size_t i = 1; i < n; ++i)
        if (parent[i] > 0 && earlier(first[i], first[parent[i]]))
          first[parent[i]] = first[i];
    // Parents before children.
    std::vector<size_t> order;
    std::vector<bool> placed(n, false);
    placed[0] = true;
    while (order.size() + 1 < n)
      for (size_t i = 1; i < n; ++i)
        if (!placed[i] && placed[parent[i]]) {
          placed[i] = true;
          order.push_back(i);
        }
    auto reason = tree->transitions.front()->getAttrOfType<StringAttr>(kReasonAttr);
    std::vector<Value> value(n);
    value[0] = root;
    bool ok = true;
    for (size_t i : order) {
      OpBuilder b(first[i]);
      std::string error;
      FailureOr<Value> out =
          emitRelayout(b, first[i]->getLoc(), value[parent[i]], tree->needed[i], reason, error);
      if (failed(out)) {
        ok = false;
        break;
      }
      value[i] = *out;
    }
    if (!ok) {
      // Only where the mesh cannot be found, which the prices above rule
      // out; the program stays as it was.
      for (size_t i : llvm::reverse(order))
        for (Value v = value[i]; v && v != value[parent[i]];) {
          Operation *t = v.getDefiningOp();
          v = t->getOperand(0);
          t->erase();
        }
      continue;
    }
    for (size_t i = 0; i < n; ++i)
      for (OpOperand *use : tree->readers[i])
        use->set(value[i]);
    for (Operation *t : llvm::reverse(tree->transitions))
      if (t->use_empty())
        t->erase();
    std::string how =
        n == 2 ? "readers in one layout served by one relayout"
               : "readers in " + std::to_string(n - 1) + " layouts served through one another";
    records.push_back({"relayout", locText(root.getLoc()),
                       how + ", " + std::to_string(tree->bytes - bytes) + " fewer bytes per rank"});
    changed = true;
  }
  return changed;
}

/// When chain moves (Kind::Type::Target) are tried.
enum class Chains {
  /// Only where no move of one kind improves the function.
  AtFixpoint,
  /// Beside the moves of one kind, at every step.
  EveryStep,
  /// Never (the lookahead's follow-ups).
  Never,
};

/// The moves that improve `fn`, best first: most bytes saved, then most
/// activation bytes.
std::vector<placement::Move> improvingMoves(func::FuncOp fn, placement::RelayoutPrices &prices,
                                            bool keepPeak, Chains chains) {
  std::vector<placement::Move> moves;
  std::vector<std::tuple<int64_t, int64_t, size_t>> order; // saved bytes, activations, index
  bool ties = placement::activationsBreakTies(fn);
  // Chains re-placed onto another chain's layout (Target) come after the
  // moves of one kind; with Chains::AtFixpoint they are tried only where no
  // move of one kind improves the function.
  std::vector<placement::Kind> kinds, joint;
  for (placement::Kind &kind : placement::kindsIn(fn))
    (kind.type == placement::Kind::Type::Target ? joint : kinds).push_back(std::move(kind));
  size_t oneKind = kinds.size();
  kinds.insert(kinds.end(), joint.begin(), joint.end());
  for (size_t k = 0; k < kinds.size(); ++k) {
    if (k == oneKind &&
        (chains == Chains::Never || (chains == Chains::AtFixpoint && !moves.empty())))
      break;
    const placement::Kind &kind = kinds[k];
    // An unsplit move, or a gather put earlier, runs ops on larger values:
    // it can only grow the activations that keep-peak refuses to grow.
    // So does a chain move onto a layout split over fewer ranks than every
    // chain it could re-place ends in.
    if (keepPeak && ((kind.type == placement::Kind::Type::Unsplit && !kind.earlier) ||
                     (kind.type == placement::Kind::Type::Split && kind.earlier) ||
                     placement::onlyWidens(fn, kind)))
      continue;
    placement::Move move(fn, kind, ties, &prices);
    const placement::Outcome &o = move.solve();
    // A chain move must send fewer bytes: its region's activations are not
    // the function's, and two moves trading activations could cycle.
    if (!o.improves() || (k >= oneKind && o.bytesAfter >= o.bytesBefore))
      continue;
    order.emplace_back(o.bytesBefore - o.bytesAfter, o.activationBefore - o.activationAfter,
                       moves.size());
    moves.push_back(std::move(move));
  }
  // Most bytes saved first, then most activations, then the order of kindsIn.
  std::sort(order.begin(), order.end(), [](const auto &a, const auto &b) {
    return std::make_tuple(-std::get<0>(a), -std::get<1>(a), std::get<2>(a)) <
           std::make_tuple(-std::get<0>(b), -std::get<1>(b), std::get<2>(b));
  });
  std::vector<placement::Move> sorted;
  for (const auto &entry : order)
    sorted.push_back(std::move(moves[std::get<2>(entry)]));
  moves = std::move(sorted);
  return moves;
}

/// The memory plan's high-water mark of `fn` (the report's peak).
int64_t peakOf(func::FuncOp fn) {
  for (Operation &op : fn.getBody().front())
    for (Value v : op.getResults())
      if (LayoutAttr l = getLayout(v))
        if (MeshOp mesh = lookupMesh(&op, l))
          return shardline::planArena(fn, toMesh(mesh)).highWater;
  return 0;
}

/// What the best move after `kind`'s saves in bytes: `kind`'s move applied to
/// a copy of `fn`, priced, thrown away. Two moves can each be the other's
/// obstacle (a reorder sunk to cancel one reorder back blocks the cheaper
/// cancellation of that one with another): one step of lookahead picks the
/// pair.
int64_t followUpSaving(func::FuncOp fn, const placement::Kind &kind,
                       placement::RelayoutPrices &prices, bool keepPeak);

/// Whether applying `kind`'s move to `fn` would raise its peak: applied to a
/// copy, measured, thrown away.
/// `body` run on a copy of `fn` beside it (the copy is then erased): a move
/// tried without touching `fn`.
template <typename Body> auto onCopy(func::FuncOp fn, StringRef suffix, Body body) {
  OpBuilder b(fn);
  b.setInsertionPointAfter(fn);
  auto copy = cast<func::FuncOp>(b.clone(*fn));
  copy.setSymName((fn.getSymName() + suffix).str());
  auto result = body(copy);
  copy->erase();
  return result;
}

bool raisesPeak(func::FuncOp fn, const placement::Kind &kind, int64_t peak) {
  return onCopy(fn, ".peak-check", [&](func::FuncOp copy) {
    placement::Move move(copy, kind, placement::activationsBreakTies(fn));
    Records ignored;
    return !move.solve().improves() || failed(move.apply(ignored)) || peakOf(copy) > peak;
  });
}

int64_t followUpSaving(func::FuncOp fn, const placement::Kind &kind,
                       placement::RelayoutPrices &prices, bool keepPeak) {
  return onCopy(fn, ".lookahead", [&](func::FuncOp copy) -> int64_t {
    placement::Move move(copy, kind, placement::activationsBreakTies(fn), &prices);
    Records ignored;
    if (!move.solve().improves() || failed(move.apply(ignored)))
      return 0;
    // The follow-up of one kind only: chain moves are priced where no move
    // of one kind is left, not at every step's lookahead.
    std::vector<placement::Move> next = improvingMoves(copy, prices, keepPeak, Chains::Never);
    if (next.empty())
      return 0;
    const placement::Outcome &o = next.front().solve();
    return o.bytesBefore - o.bytesAfter;
  });
}

struct SLElideGathers : mlir::sl::impl::SLElideGathersBase<SLElideGathers> {
  using SLElideGathersBase::SLElideGathersBase;
  /// The moves, the local rewrites and the reader trees on `fn` until
  /// nothing lowers its bytes, chain moves tried as `chains` says.
  LogicalResult place(func::FuncOp fn, placement::RelayoutPrices &prices, Records &records,
                      Chains chains) {
    // The local rewrites record into `records`, as the moves do.
    RewritePatternSet patterns(&getContext());
    patterns.add<MergeGathers>(&getContext());
    patterns.add<CollapseChain>(&getContext(), records, prices);
    FrozenRewritePatternSet frozen(std::move(patterns));
    // Moves, then the local rewrites, until neither lowers anything: each
    // applied move lowers (bytes, activations) strictly and each local
    // rewrite lowers bytes or merges gathers, so this ends; the bounds only
    // guard against a pricing bug.
    for (int pass = 0; pass < 100; ++pass) {
      for (int round = 0; round < 1000; ++round) {
        splitGathers(fn);
        std::optional<int64_t> peak;
        bool applied = false;
        std::vector<placement::Move> moves = improvingMoves(fn, prices, keepPeak, chains);
        std::vector<placement::Move *> allowed;
        for (placement::Move &move : moves) {
          // A move that grows its region's activations is refused without
          // measuring; one that does not is measured on a copy.
          const placement::Outcome &o = move.solve();
          if (keepPeak) {
            if (o.activationAfter > o.activationBefore)
              continue;
            if (!peak)
              peak = peakOf(fn);
            if (raisesPeak(fn, move.kind(), *peak))
              continue;
          }
          allowed.push_back(&move);
        }
        // Of the few best, the one whose move and best follow-up save most.
        placement::Move *chosen = allowed.empty() ? nullptr : allowed.front();
        if (allowed.size() > 1) {
          int64_t bestScore = -1;
          for (placement::Move *move : llvm::ArrayRef(allowed).take_front(4)) {
            const placement::Outcome &o = move->solve();
            int64_t score =
                o.bytesBefore - o.bytesAfter + followUpSaving(fn, move->kind(), prices, keepPeak);
            if (score > bestScore) {
              bestScore = score;
              chosen = move;
            }
          }
        }
        if (chosen) {
          if (failed(chosen->apply(records)))
            return failure();
          applied = true;
        }
        if (!applied)
          break;
      }
      // The moves have reached a fixpoint; a local rewrite that lowers
      // bytes (each records itself; merging gathers does not) may open
      // new moves.
      size_t recorded = records.size();
      if (failed(applyPatternsGreedily(fn, frozen)))
        return failure();
      // Then readers served through one another's layouts; with keep-peak,
      // only where that does not raise the peak (tried on a copy).
      Records ignored;
      if (serveReadersByTrees(fn, prices, ignored, /*apply=*/false) &&
          (!keepPeak || onCopy(fn, ".trees", [&](func::FuncOp copy) {
            return serveReadersByTrees(copy, prices, ignored) && peakOf(copy) <= peakOf(fn);
          })))
        serveReadersByTrees(fn, prices, records);
      if (records.size() == recorded)
        break;
    }
    return success();
  }

  /// Whether a chain move, priced on `fn` as it is (as sl-explain prices
  /// it), sends fewer bytes: one keep-peak would not refuse unmeasured.
  bool chainMoveLowersBytes(func::FuncOp fn, placement::RelayoutPrices &prices) {
    bool ties = placement::activationsBreakTies(fn);
    for (const placement::Kind &kind : placement::kindsIn(fn)) {
      if (kind.type != placement::Kind::Type::Target ||
          (keepPeak && placement::onlyWidens(fn, kind)))
        continue;
      placement::Move move(fn, kind, ties, &prices);
      const placement::Outcome &o = move.solve();
      if (o.bytesAfter < o.bytesBefore && (!keepPeak || o.activationAfter <= o.activationBefore))
        return true;
    }
    return false;
  }

  /// Places `fn` with chain moves at the fixpoint of the moves of one kind
  /// and, where it offers a chain move, on a copy with chain moves beside
  /// the others at every step; keeps the one that sends fewer bytes (then,
  /// where activations break ties, the lower peak; then the first). The
  /// order matters: a chain move taken first can block a sequence of moves
  /// of one kind that reaches further, and one taken only at the fixpoint
  /// can come too late (docs/passes.md).
  LogicalResult placeBothWays(func::FuncOp fn, placement::RelayoutPrices &prices,
                              Records &records) {
    std::optional<func::FuncOp> other;
    if (chainMoveLowersBytes(fn, prices)) {
      OpBuilder b(fn);
      b.setInsertionPointAfter(fn);
      other = cast<func::FuncOp>(b.clone(*fn));
      other->setSymName((fn.getSymName() + ".chains-first").str());
    }
    Records atFixpoint, everyStep;
    LogicalResult placed = place(fn, prices, atFixpoint, Chains::AtFixpoint);
    if (succeeded(placed) && other)
      placed = place(*other, prices, everyStep, Chains::EveryStep);
    bool takeOther = false;
    if (succeeded(placed) && other) {
      int64_t bytes = placement::bytesSent(fn), otherBytes = placement::bytesSent(*other);
      takeOther =
          otherBytes < bytes || (otherBytes == bytes && placement::activationsBreakTies(fn) &&
                                 peakOf(*other) < peakOf(fn));
    }
    if (takeOther) {
      fn.getBody().takeBody(other->getBody());
      atFixpoint = std::move(everyStep);
    }
    if (other)
      (*other)->erase();
    records.insert(records.end(), atFixpoint.begin(), atFixpoint.end());
    return placed;
  }

  /// The exact search on a copy of `fn`, kept where it sends fewer bytes
  /// (and, with keep-peak, does not raise the peak) and verifies.
  LogicalResult placeExactlyIfCheaper(func::FuncOp fn, placement::RelayoutPrices &prices,
                                      Records &records) {
    placement::ExactLimits limits;
    if (!placement::exactSearchMayFit(fn, limits))
      return success();
    Records changes;
    bool take = onCopy(fn, ".exact", [&](func::FuncOp copy) {
      placement::ExactResult result = placement::placeExactly(copy, prices, limits, changes);
      if (result.status != placement::ExactResult::Status::Placed)
        return false;
      ScopedDiagnosticHandler quiet(&getContext(), [](Diagnostic &) { return success(); });
      if (failed(mlir::verify(copy)) || placement::bytesSent(copy) >= placement::bytesSent(fn) ||
          (keepPeak && peakOf(copy) > peakOf(fn)))
        return false;
      fn.getBody().takeBody(copy.getBody());
      return true;
    });
    if (!take)
      return success();
    // Its chains are planRelayout's, one relayout per edge of each tree: the
    // local rewrites and the moves may still merge them (two gathers into
    // one) at the same bytes, so the output is a fixpoint of the pass.
    records.insert(records.end(), changes.begin(), changes.end());
    return place(fn, prices, records, Chains::AtFixpoint);
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    Records records;
    placement::RelayoutPrices prices;
    // Collected first: a function is placed on a copy beside it.
    for (func::FuncOp fn : llvm::to_vector(module.getOps<func::FuncOp>())) {
      if (failed(placeBothWays(fn, prices, records)))
        return signalPassFailure();
      if (exact && failed(placeExactlyIfCheaper(fn, prices, records)))
        return signalPassFailure();
    }
    if (records.empty())
      return;
    SmallVector<Attribute> entries;
    if (auto old = module->getAttrOfType<ArrayAttr>(kElidedAttr))
      entries.append(old.begin(), old.end());
    Builder b(&getContext());
    for (const auto &r : records)
      entries.push_back(
          b.getDictionaryAttr({b.getNamedAttr("op", b.getStringAttr(r.op)),
                               b.getNamedAttr("location", b.getStringAttr(r.location)),
                               b.getNamedAttr("how", b.getStringAttr(r.how))}));
    module->setAttr(kElidedAttr, b.getArrayAttr(entries));
  }
};

} // namespace
