//===- PropagateLayouts.cpp - layouts for every value from the rules ------===//
//
// One forward walk. For each op the sharding rule says which factors may be
// split and how; the walk picks one split per factor from the operands
// (weights first, then the most-split activation), applies the factor kinds,
// resolves pending sums by the strategy, and relayouts the operands that
// differ. Sequence-mixing factors that stay split get their remedy from the op
// itself (SPMDOpInterface): the walk names no op.
//
//===----------------------------------------------------------------------===//

#include "shardline/Dialect/SL/IR/SL.h"
#include "shardline/Dialect/SL/Transforms/Passes.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseMap.h"

#include <set>

namespace mlir::sl {
#define GEN_PASS_DEF_SLPROPAGATELAYOUTS
#include "shardline/Dialect/SL/Transforms/Passes.h.inc"
} // namespace mlir::sl

using namespace mlir;
using namespace mlir::sl;
using shardline::FactorKind;
using shardline::Layout;
using shardline::PartialRule;
using shardline::ShardingRule;
using Axes = std::vector<std::string>;

namespace {

struct Strategy {
  bool sequenceParallel = false;
  CPComm cpComm = CPComm::Ring;
};

/// The choice for one op: a split and an order per factor, the pending sum
/// each operand keeps, and why axes were taken away (for the relayout reasons).
struct Choice {
  std::vector<Axes> split;
  std::vector<shardline::ChunkOrder> order;
  std::vector<Axes> keepPartial;
  std::vector<std::string> why; // per factor
  /// Set when the user's layouts cannot be reconciled.
  std::string error;
};

class Propagator {
public:
  Propagator(ModuleOp module, MeshOp mesh, Strategy strategy)
      : module(module), mesh(toMesh(mesh)), strategy(std::move(strategy)),
        meshRef(FlatSymbolRefAttr::get(mesh.getSymNameAttr())) {}

  LogicalResult run(func::FuncOp fn) {
    OpBuilder b(fn.getContext());
    // Unannotated arguments are replicated.
    for (BlockArgument arg : fn.getArguments())
      if (auto t = dyn_cast<RankedTensorType>(arg.getType()); t && !getLayout(t))
        arg.setType(withLayout(t, attr(Layout::replicated(t.getRank()))));
    SmallVector<Operation *> ops;
    for (Operation &op : fn.getBody().front())
      ops.push_back(&op);
    for (Operation *op : ops) {
      if (auto w = dyn_cast<WeightOp>(op)) {
        auto t = w.getResult().getType();
        if (!getLayout(t))
          w.getResult().setType(withLayout(t, attr(Layout::replicated(t.getRank()))));
        continue;
      }
      if (auto ret = dyn_cast<func::ReturnOp>(op)) {
        if (failed(visitReturn(ret)))
          return failure();
        continue;
      }
      if (auto spmd = dyn_cast<SPMDOpInterface>(op); spmd && isa<ShardingRuleOpInterface>(op)) {
        if (failed(visit(spmd)))
          return failure();
        continue;
      }
      for (Value r : op->getResults())
        if (isa<RankedTensorType>(r.getType()) && !getLayout(r))
          return op->emitOpError("has no layout and no sharding rule to derive one from");
    }
    SmallVector<Type> results;
    for (Value v : fn.getBody().front().getTerminator()->getOperands())
      results.push_back(v.getType());
    fn.setType(
        FunctionType::get(fn.getContext(), fn.getBody().front().getArgumentTypes(), results));
    return success();
  }

private:
  LayoutAttr attr(const Layout &l) { return fromLayout(module.getContext(), meshRef, l); }

  Layout layoutOf(Value v) { return layoutOrReplicated(v); }

  std::vector<int64_t> shapeOf(Value v) {
    auto s = cast<RankedTensorType>(v.getType()).getShape();
    return {s.begin(), s.end()};
  }

  bool divides(const Axes &axes, int64_t size, shardline::ChunkOrder order) {
    Layout l = Layout::replicated(1);
    l.dims[0] = axes;
    if (order == shardline::ChunkOrder::Zigzag && !axes.empty()) {
      l.orderDim = 0;
      l.order = order;
    }
    std::vector<int64_t> shape{size};
    return shardline::verifyLayout(l, &mesh, &shape).empty();
  }

  /// The relayout of `v` to `target`, shared by every consumer; with
  /// `gatherReason` for the axes it gathers away when another change than
  /// `reason`'s forces them off (sl.gather_reason). The cache is keyed by
  /// value and target only: a later consumer that needs the same change for
  /// another reason shares the relayout, which keeps the first consumer's
  /// sl.reason and sl.gather_reason. Keying it by the reasons too would emit
  /// the same collectives once per reason and send their bytes again.
  Value relayout(Value v, const Layout &target, const std::string &reason,
                 const std::string &gatherReason = "") {
    if (layoutOf(v) == target)
      return v;
    LayoutAttr targetAttr = attr(target);
    auto key = std::make_pair(v, (Attribute)targetAttr);
    if (auto it = cache.find(key); it != cache.end())
      return it->second;
    OpBuilder b(module.getContext());
    b.setInsertionPointAfterValue(v);
    auto type = withLayout(cast<RankedTensorType>(v.getType()), targetAttr);
    Location loc = v.getDefiningOp() ? v.getDefiningOp()->getLoc() : v.getLoc();
    auto op = RelayoutOp::create(b, loc, type, v);
    op->setAttr(kReasonAttr, b.getStringAttr(reason));
    if (!gatherReason.empty())
      op->setAttr(kGatherReasonAttr, b.getStringAttr(gatherReason));
    cache[key] = op.getResult();
    return op.getResult();
  }

  /// Picks a split per factor (see the file comment).
  Choice choose(SPMDOpInterface op, const ShardingRule &rule, ArrayRef<Value> operands,
                RemedyContext &ctx) {
    size_t nf = rule.factors.size();
    Choice c;
    c.split.assign(nf, {});
    c.order.assign(nf, shardline::ChunkOrder::Contiguous);
    c.why.assign(nf, "");
    std::vector<bool> fixed(nf, false);
    // Two factors may share an axis unless some operand or result holds both
    // (a contracted factor's axes become the results' pending sum, so they
    // meet every result factor).
    std::vector<std::vector<bool>> meet(nf, std::vector<bool>(nf, false));
    auto together = [&](const std::vector<int> &dims, bool isResult) {
      for (int f : dims)
        for (int g : dims)
          if (f >= 0 && g >= 0)
            meet[f][g] = true;
      if (!isResult)
        return;
      for (size_t k = 0; k < nf; ++k)
        if (rule.factors[k].kind == FactorKind::Contracted)
          for (int f : dims)
            if (f >= 0)
              meet[f][k] = meet[k][f] = true;
    };
    for (const auto &dims : rule.operands)
      together(dims, false);
    for (const auto &dims : rule.results)
      together(dims, true);
    // The factor that already holds `a` where it would meet `f`, or -1.
    auto holder = [&](size_t f, const std::string &a) {
      for (size_t g = 0; g < nf; ++g)
        if (g != f && meet[f][g] &&
            std::find(c.split[g].begin(), c.split[g].end(), a) != c.split[g].end())
          return (int)g;
      return -1;
    };
    auto isWeight = [&](Value v) { return (bool)v.getDefiningOp<WeightOp>(); };

    // Weights keep their layouts.
    for (size_t i = 0; i < operands.size(); ++i) {
      if (!isWeight(operands[i]))
        continue;
      Layout l = layoutOf(operands[i]);
      for (size_t d = 0; d < rule.operands[i].size(); ++d) {
        int f = rule.operands[i][d];
        if (f < 0)
          continue;
        if (fixed[f]) {
          if (c.split[f] != l.dims[d] && c.error.empty())
            c.error = "weights disagree on " + rule.factors[f].name + ": operand #" +
                      std::to_string(i) + " ('" +
                      cast<WeightOp>(operands[i].getDefiningOp()).getName().str() +
                      "') splits it over " + shardline::formatAxes(l.dims[d]) +
                      ", another weight over " + shardline::formatAxes(c.split[f]);
          continue;
        }
        fixed[f] = true;
        c.split[f] = l.dims[d];
        c.order[f] = l.dimOrder(d);
        if (!l.dims[d].empty())
          c.why[f] = "weight '" + cast<WeightOp>(operands[i].getDefiningOp()).getName().str() +
                     "' splits " + rule.factors[f].name + " over " +
                     shardline::formatAxes(l.dims[d]);
      }
    }
    // Activations: the most-split candidate without axes already taken.
    for (size_t f = 0; f < nf; ++f) {
      if (fixed[f])
        continue;
      const auto &factor = rule.factors[f];
      Axes best;
      shardline::ChunkOrder bestOrder = shardline::ChunkOrder::Contiguous;
      bool found = false;
      for (size_t i = 0; i < operands.size(); ++i) {
        if (isWeight(operands[i]))
          continue;
        Layout l = layoutOf(operands[i]);
        for (size_t d = 0; d < rule.operands[i].size(); ++d) {
          if (rule.operands[i][d] != (int)f)
            continue;
          Axes cand;
          int blocker = -1;
          for (const auto &a : l.dims[d]) {
            if ((blocker = holder(f, a)) >= 0)
              break;
            cand.push_back(a);
          }
          if (blocker >= 0 && c.why[f].empty())
            c.why[f] = !c.why[blocker].empty()
                           ? c.why[blocker]
                           : "factor " + rule.factors[blocker].name + " of " + opLabel(op) +
                                 " already uses " + l.dims[d][cand.size()];
          if (!found || cand.size() > best.size()) {
            best = cand;
            bestOrder = l.dimOrder(d);
            found = true;
          }
        }
      }
      // Kinds.
      bool mayStaySplit =
          factor.kind == FactorKind::Free ||
          (factor.kind == FactorKind::SequenceMixing && op.canCarryRemedy(factor, ctx));
      if (factor.kind == FactorKind::SequenceMixing && !factor.remedyAxes.empty()) {
        Axes kept;
        for (const auto &a : best) {
          if (std::find(factor.remedyAxes.begin(), factor.remedyAxes.end(), a) ==
              factor.remedyAxes.end())
            break;
          kept.push_back(a);
        }
        best = kept;
        mayStaySplit = true;
      }
      if (!mayStaySplit && !best.empty()) {
        c.why[f] = opLabel(op) + " needs " + factor.name + " whole (" +
                   (factor.kind == FactorKind::Contracted ? "its split would leave a pending sum"
                                                          : "rule: " + kindText(factor)) +
                   ")";
        best.clear();
      }
      while (factor.granule > 0 && !best.empty() && factor.granule % mesh.product(best) != 0) {
        best.pop_back();
        c.why[f] = "a split of " + factor.name + " must divide its " +
                   std::to_string(factor.granule) +
                   (factor.granuleName.empty() ? "" : " " + factor.granuleName);
      }
      c.split[f] = best;
      c.order[f] = best.empty() ? shardline::ChunkOrder::Contiguous : bestOrder;
    }

    // Pending sums.
    c.keepPartial.assign(operands.size(), {});
    std::vector<Axes> partials(operands.size());
    for (size_t i = 0; i < operands.size(); ++i)
      partials[i] = layoutOf(operands[i]).partial;
    Axes reduced;
    if (rule.partial == PartialRule::Same) {
      bool same = true;
      for (size_t i = 1; i < operands.size(); ++i)
        same &= partials[i] == partials[0];
      for (size_t i = 0; i < operands.size(); ++i) {
        if (same)
          c.keepPartial[i] = partials[i];
        else
          reduced.insert(reduced.end(), partials[i].begin(), partials[i].end());
      }
    } else {
      // A pending sum over an axis that also splits a result dimension
      // cannot pass through (expert tensor parallelism: the experts' output
      // is a pending sum over the axes the combine splits the tokens over).
      std::set<std::string> splitting;
      for (const auto &dims : rule.results)
        for (int f : dims)
          if (f >= 0)
            splitting.insert(c.split[f].begin(), c.split[f].end());
      auto clashes = [&](const Axes &p) {
        return llvm::any_of(p, [&](const std::string &a) { return splitting.count(a) > 0; });
      };
      bool kept = false;
      for (size_t i = 0; i < operands.size(); ++i) {
        if (partials[i].empty())
          continue;
        if (rule.partial == PartialRule::One && !kept && !clashes(partials[i])) {
          c.keepPartial[i] = partials[i];
          kept = true;
        } else {
          reduced.insert(reduced.end(), partials[i].begin(), partials[i].end());
        }
      }
    }
    // Under sequence parallelism a reduced pending sum is scattered onto the
    // sequence instead of replicated.
    if (strategy.sequenceParallel && !reduced.empty() && !rule.reducesToScalar) {
      int seq = rule.primarySequence;
      if (seq >= 0 && rule.factors[seq].kind == FactorKind::Free) {
        Axes extended = c.split[seq];
        for (const auto &a : reduced)
          if (holder(seq, a) < 0 &&
              std::find(extended.begin(), extended.end(), a) == extended.end())
            extended.push_back(a);
        if (extended != c.split[seq] && fitsEverywhere(rule, operands, seq, extended, c.order[seq]))
          c.split[seq] = extended;
      }
    }
    // Axes an activation gives up go to its sequence dimension, so data stay
    // distributed (all-to-all instead of all-gather).
    int seq = rule.primarySequence;
    if (seq >= 0 && rule.factors[seq].kind == FactorKind::Free) {
      for (size_t i = 0; i < operands.size(); ++i) {
        if (isWeight(operands[i]))
          continue;
        Layout l = layoutOf(operands[i]);
        bool hasSeq = false;
        for (int f : rule.operands[i])
          hasSeq |= f == seq;
        if (!hasSeq)
          continue;
        for (size_t d = 0; d < l.dims.size(); ++d)
          for (const auto &a : l.dims[d]) {
            if (holder(seq, a) >= 0 ||
                std::find(c.split[seq].begin(), c.split[seq].end(), a) != c.split[seq].end() ||
                std::find(reduced.begin(), reduced.end(), a) != reduced.end())
              continue;
            Axes extended = c.split[seq];
            extended.push_back(a);
            shardline::ChunkOrder order = c.split[seq].empty() ? defaultOrder(a) : c.order[seq];
            if (!fitsEverywhere(rule, operands, seq, extended, order))
              continue;
            c.split[seq] = extended;
            c.order[seq] = order;
          }
      }
    }
    return c;
  }

  static std::string kindText(const shardline::Factor &f) {
    switch (f.kind) {
    case FactorKind::Whole:
      return "whole";
    case FactorKind::SequenceMixing:
      return "sequence-mixing";
    case FactorKind::Contracted:
      return "contracted";
    case FactorKind::Free:
      break;
    }
    return "free";
  }

  /// Zigzag is the order the inputs use over cp (attention balance).
  shardline::ChunkOrder defaultOrder(const std::string &axis) {
    return axis == inputOrderAxis ? inputOrder : shardline::ChunkOrder::Contiguous;
  }

  bool fitsEverywhere(const ShardingRule &rule, ArrayRef<Value> operands, int f, const Axes &axes,
                      shardline::ChunkOrder order) {
    for (size_t i = 0; i < operands.size(); ++i)
      for (size_t d = 0; d < rule.operands[i].size(); ++d)
        if (rule.operands[i][d] == f && !divides(axes, shapeOf(operands[i])[d], order))
          return false;
    return true;
  }

  Layout targetLayout(const ShardingRule &rule, const Choice &c, size_t i, unsigned rank) {
    Layout l = Layout::replicated(rank);
    for (size_t d = 0; d < rule.operands[i].size(); ++d) {
      int f = rule.operands[i][d];
      if (f < 0)
        continue;
      l.dims[d] = c.split[f];
      if (!c.split[f].empty() && c.order[f] == shardline::ChunkOrder::Zigzag && l.orderDim < 0) {
        l.orderDim = d;
        l.order = c.order[f];
      }
    }
    l.partial = c.keepPartial[i];
    return l;
  }

  std::string reasonFor(Operation *op, const ShardingRule &rule, const Choice &c, size_t i,
                        const Layout &from, const Layout &to) {
    std::string who = operandOf(op, rule, i);
    if (from.partial != to.partial) {
      std::string why = rule.partial == PartialRule::None ? "the op is not linear in it"
                        : rule.partial == PartialRule::Same
                            ? "the other operands do not carry the same pending sum"
                            : "only one operand may be a pending sum";
      bool scattered = false;
      for (size_t d = 0; d < to.dims.size(); ++d)
        scattered |= to.dims[d].size() > from.dims[d].size();
      return who + " is a pending sum over " + shardline::formatAxes(from.partial) + " and " + why +
             (scattered ? "; sequence parallelism scatters the sum onto the sequence"
                        : "; it is summed on every rank");
    }
    int d = firstChange(rule, i, from, to);
    return d < 0 ? who + " needs another chunk order" : dimReason(who, rule, c, i, d, from, to);
  }

  /// "operand #1 (x) of sl.linear 'blocks.0.attn.wq'".
  static std::string operandOf(Operation *op, const ShardingRule &rule, size_t i) {
    return "operand #" + std::to_string(i) +
           (i < rule.operandNames.size() ? " (" + rule.operandNames[i] + ")" : "") + " of " +
           opLabel(op);
  }

  /// The first dimension of operand `i` whose axes change, or -1.
  static int firstChange(const ShardingRule &rule, size_t i, const Layout &from, const Layout &to) {
    for (size_t d = 0; d < rule.operands[i].size(); ++d)
      if (rule.operands[i][d] >= 0 && from.dims[d] != to.dims[d])
        return (int)d;
    return -1;
  }

  /// "WHO: factor [from] -> [to] because WHY" for dimension `d`, WHY the
  /// choice's reason for factor `because` (by default the dimension's own).
  static std::string dimReason(const std::string &who, const ShardingRule &rule, const Choice &c,
                               size_t i, int d, const Layout &from, const Layout &to,
                               int because = -1) {
    int f = rule.operands[i][d];
    std::string s = who + ": " + rule.factors[f].name + " " + shardline::formatAxes(from.dims[d]) +
                    " -> " + shardline::formatAxes(to.dims[d]);
    const std::string &why = c.why[because >= 0 ? because : f];
    if (!why.empty())
      s += " because " + why;
    return s;
  }

  /// Why the relayout of operand `i` gathers axes away (they leave a
  /// dimension and `to` holds them nowhere), where that dimension is not the
  /// one reasonFor names: the reason of the factor the op splits over the
  /// first such axis instead (expert tensor parallelism: the tokens are
  /// gathered over the axes the experts' ffn is split over). Empty otherwise.
  std::string gatherReasonFor(Operation *op, const ShardingRule &rule, const Choice &c, size_t i,
                              const Layout &from, const Layout &to) {
    if (from.partial != to.partial)
      return "";
    int first = firstChange(rule, i, from, to);
    for (size_t d = first + 1; first >= 0 && d < rule.operands[i].size(); ++d) {
      if (rule.operands[i][d] < 0 || from.dims[d] == to.dims[d])
        continue;
      for (const std::string &a : from.dims[d]) {
        if (llvm::any_of(to.dims, [&](const Axes &axes) { return llvm::is_contained(axes, a); }))
          continue;
        int holder = -1;
        for (size_t f = 0; f < c.split.size() && holder < 0; ++f)
          if (llvm::is_contained(c.split[f], a))
            holder = (int)f;
        return dimReason(operandOf(op, rule, i), rule, c, i, (int)d, from, to, holder);
      }
    }
    return "";
  }

  /// Relayouts every operand to the choice.
  void apply(Operation *op, const ShardingRule &rule, const Choice &c) {
    for (size_t i = 0; i < op->getNumOperands(); ++i) {
      Value v = op->getOperand(i);
      Layout from = layoutOf(v);
      Layout to = targetLayout(rule, c, i, from.dims.size());
      if (from != to)
        op->setOperand(i, relayout(v, to, reasonFor(op, rule, c, i, from, to),
                                   gatherReasonFor(op, rule, c, i, from, to)));
    }
  }

  /// A pending sum that was already reduced for another consumer is used in
  /// its reduced form: the reduction is paid once.
  void preferReduced(Operation *op) {
    for (OpOperand &use : op->getOpOperands()) {
      Value v = use.get();
      if (layoutOf(v).partial.empty())
        continue;
      for (auto &[key, reduced] : cache)
        if (key.first == v && layoutOf(reduced).partial.empty()) {
          use.set(reduced);
          break;
        }
    }
  }

  LogicalResult deriveResults(Operation *op) {
    std::optional<shardline::RuleCheck> check = checkOpRule(op);
    if (!check)
      return op->emitOpError("cannot assign layouts: no sharding rule or mesh");
    if (!check->error.empty())
      return op->emitOpError("cannot assign layouts: ") << check->error;
    for (auto [i, r] : llvm::enumerate(op->getResults()))
      r.setType(withLayout(cast<RankedTensorType>(r.getType()), attr(check->results[i])));
    return success();
  }

  LogicalResult visit(SPMDOpInterface op) {
    // sl-choose-cp-comm may have picked the exchange per op (verified as
    // ring, allgather or a2a).
    CPComm cpComm = strategy.cpComm;
    if (auto chosen = op->getAttrOfType<StringAttr>(kCPCommAttr)) {
      std::optional<CPComm> c = symbolizeCPComm(chosen.getValue());
      if (!c || *c == CPComm::Auto)
        return op->emitOpError("sl.cp_comm must be ring, allgather or a2a, got '")
               << chosen.getValue() << "'";
      cpComm = *c;
    }
    Context ctx(*this, cpComm);
    if (failed(op.prepareRemedy(ctx)))
      return failure();
    preferReduced(op);
    ShardingRule rule = cast<ShardingRuleOpInterface>(*op).getShardingRule();
    SmallVector<Value> operands(op->getOperands());
    Choice c = choose(op, rule, operands, ctx);
    if (!c.error.empty())
      return op->emitOpError("inconsistent user layouts: ") << c.error;
    apply(op, rule, c);
    FailureOr<Operation *> final = op.applyRemedy(ctx);
    if (failed(final))
      return failure();
    return deriveResults(*final);
  }

  /// What an op's remedy may ask of the walk.
  class Context : public RemedyContext {
  public:
    Context(Propagator &p, CPComm cpComm) : RemedyContext(p.mesh, cpComm), p(p) {}
    Value relayout(Value v, const Layout &to, const std::string &reason) override {
      return p.relayout(v, to, reason);
    }
    LogicalResult deriveResults(Operation *op) override { return p.deriveResults(op); }

  private:
    Propagator &p;
  };

  LogicalResult visitReturn(func::ReturnOp ret) {
    for (unsigned i = 0; i < ret->getNumOperands(); ++i) {
      Value v = ret->getOperand(i);
      Layout l = layoutOf(v);
      if (l.partial.empty())
        continue;
      Layout to = l;
      to.partial.clear();
      ret->setOperand(i, relayout(v, to,
                                  "result #" + std::to_string(i) +
                                      " of the function is returned whole, not as a pending "
                                      "sum over " +
                                      shardline::formatAxes(l.partial)));
    }
    return success();
  }

public:
  std::string inputOrderAxis;
  shardline::ChunkOrder inputOrder = shardline::ChunkOrder::Contiguous;

private:
  ModuleOp module;
  shardline::Mesh mesh;
  Strategy strategy;
  FlatSymbolRefAttr meshRef;
  llvm::DenseMap<std::pair<Value, Attribute>, Value> cache;
};

/// The exchange an explicit option names (Module is read from the module).
static CPComm toCPComm(CPCommOption option) {
  switch (option) {
  case CPCommOption::Ring:
  case CPCommOption::Module:
    break;
  case CPCommOption::AllGather:
    return CPComm::AllGather;
  case CPCommOption::A2A:
    return CPComm::A2A;
  case CPCommOption::Auto:
    return CPComm::Auto;
  }
  return CPComm::Ring;
}

struct SLPropagateLayouts : mlir::sl::impl::SLPropagateLayoutsBase<SLPropagateLayouts> {
  using SLPropagateLayoutsBase::SLPropagateLayoutsBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    FailureOr<MeshOp> mesh = getModuleMesh(module, "sl-propagate-layouts");
    if (failed(mesh))
      return signalPassFailure();
    if (!*mesh)
      return; // Nothing is distributed.
    Strategy strategy;
    if (failed(readStrategy(module, strategy)))
      return signalPassFailure();
    for (auto fn : module.getOps<func::FuncOp>()) {
      if (fn.isExternal())
        continue;
      Propagator p(module, *mesh, strategy);
      // The chunk order the inputs use over an axis is the default for
      // sequences that become split over it later (a2a back from heads).
      for (BlockArgument arg : fn.getArguments())
        if (LayoutAttr l = getLayout(arg.getType()); l && l.getOrderDim() >= 0) {
          auto axes = l.getDimAxes(l.getOrderDim());
          if (!axes.empty()) {
            p.inputOrderAxis = axes.front().str();
            p.inputOrder = l.getOrder() == ChunkOrder::zigzag ? shardline::ChunkOrder::Zigzag
                                                              : shardline::ChunkOrder::Contiguous;
          }
        }
      if (failed(p.run(fn)))
        return signalPassFailure();
    }
  }

  LogicalResult readStrategy(ModuleOp module, Strategy &s) {
    switch (sequenceParallel) {
    case SequenceParallelOption::Module: {
      auto a = module->getAttrOfType<BoolAttr>(kSequenceParallelAttr);
      s.sequenceParallel = a && a.getValue();
      break;
    }
    case SequenceParallelOption::On:
    case SequenceParallelOption::Off:
      s.sequenceParallel = sequenceParallel == SequenceParallelOption::On;
      break;
    }
    CPComm comm = CPComm::Ring;
    if (cpComm == CPCommOption::Module) {
      if (auto a = module->getAttrOfType<StringAttr>(kCPCommAttr))
        comm = *symbolizeCPComm(a.getValue()); // the dialect verified it
    } else {
      comm = toCPComm(cpComm);
    }
    if (comm == CPComm::Auto)
      return module.emitError("sl-propagate-layouts: cp-comm auto is resolved per attention "
                              "layer by sl-choose-cp-comm; run it first");
    s.cpComm = comm;
    return success();
  }
};

} // namespace
