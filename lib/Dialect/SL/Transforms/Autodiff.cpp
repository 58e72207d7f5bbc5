//===- Autodiff.cpp - the backward program and the AdamW update -----------===//
//
// sl-autodiff appends to the function the gradient of its loss with respect
// to every parameter, the global gradient norm and one sl.adamw per
// parameter, and returns the gradients. It runs on the global view once the
// forward's layouts and collectives are in place, so that the backward ops
// have layouts too and the passes after it (sl-elide-gathers, the report,
// sl-partition) treat forward and backward alike.
//
// A layout transition is the identity on the global value, so its gradient is
// too: the gradient of a value and of every relayout of it is one slot that
// collects contributions in whatever layout their backward ops produced them
// (a column-parallel linear's input gradient is a pending sum over tp, the
// residual stream's is split like the stream). Where a backward op reads the
// slot, the contributions are summed in their own layouts and taken to the
// layout the op needs by the cheapest chain (emitRelayout): that is how the
// dual collectives arise (a gather's gradient is reduce-scattered, a scatter's
// gathered), and how parameters get their gradient synchronisation from the
// graph (a pending sum over the axes that split the tokens a parameter was
// applied to is all-reduced onto the parameter's own layout).
//
//===----------------------------------------------------------------------===//

#include "shardline/Dialect/SL/IR/Relayout.h"
#include "shardline/Dialect/SL/IR/SL.h"
#include "shardline/Dialect/SL/IR/SPMD.h"
#include "shardline/Dialect/SL/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/SetVector.h"

namespace mlir::sl {
#define GEN_PASS_DEF_SLAUTODIFF
#include "shardline/Dialect/SL/Transforms/Passes.h.inc"
} // namespace mlir::sl

using namespace mlir;
using namespace mlir::sl;

using shardline::Layout;

namespace {

/// Layout transitions: the identity on the global value.
bool isTransition(Operation *op) {
  return isa<AllGatherOp, AllReduceOp, ReduceScatterOp, AllToAllOp, SliceOp, ReorderOp, RelayoutOp>(
      op);
}

class Differentiator {
public:
  Differentiator(func::FuncOp fn, MeshOp mesh)
      : fn(fn), meshOp(mesh), mesh(toMesh(mesh)), b(fn.getContext()),
        meshRef(FlatSymbolRefAttr::get(mesh.getSymNameAttr())) {}

  LogicalResult run();

private:
  func::FuncOp fn;
  MeshOp meshOp;
  shardline::Mesh mesh;
  OpBuilder b;
  FlatSymbolRefAttr meshRef;
  /// Values that depend on a parameter.
  DenseSet<Value> active;
  /// The gradient contributions of each value, in the order they were made.
  DenseMap<Value, SmallVector<Value>> grads;
  /// The forward op whose backward is being built (block stamps, labels).
  Operation *current = nullptr;

  Layout without(Value v) {
    Layout l = layoutOrReplicated(v);
    l.partial.clear();
    return l;
  }
  RankedTensorType typeWith(Value like, const Layout &l) {
    return withLayout(cast<RankedTensorType>(like.getType()),
                      fromLayout(b.getContext(), meshRef, l));
  }
  void stamp(Operation *op) {
    for (StringLiteral a : {kBlockAttr, kFamilyAttr})
      if (Attribute v = current ? current->getAttr(a) : Attribute())
        op->setAttr(a, v);
  }
  FailureOr<Value> relayout(Value v, const Layout &to, const std::string &why);
  FailureOr<Value> sum(ArrayRef<Value> values);
  FailureOr<Value> gradientAt(Value v, const Layout &to, const std::string &why);
  FailureOr<Operation *> build(StringRef name, ValueRange operands, TypeRange resultTypes,
                               ArrayRef<NamedAttribute> attrs = {});
  /// The forward op's attributes named `names` (those it has).
  SmallVector<NamedAttribute> attrsOf(Operation *op, ArrayRef<StringRef> names) {
    SmallVector<NamedAttribute> out;
    for (StringRef n : names)
      if (Attribute a = op->getAttr(n))
        out.push_back(b.getNamedAttr(n, a));
    return out;
  }
  void contribute(Value v, Value grad) {
    if (active.contains(v))
      grads[v].push_back(grad);
  }
  LogicalResult backward(Operation *op);
  LogicalResult seedLoss(Operation *ce);
  Location loc() { return current ? current->getLoc() : fn.getLoc(); }
};

FailureOr<Value> Differentiator::relayout(Value v, const Layout &to, const std::string &why) {
  std::string error;
  FailureOr<Value> out = emitRelayout(b, loc(), v, to, b.getStringAttr(why), error);
  if (failed(out)) {
    (current ? current : fn.getOperation())->emitError("sl-autodiff: ") << why << ": " << error;
    return failure();
  }
  for (Value x = *out; x != v; x = x.getDefiningOp()->getOperand(0))
    stamp(x.getDefiningOp());
  return out;
}

/// The sum of values of one type (layout and pending sums included).
FailureOr<Value> Differentiator::sum(ArrayRef<Value> values) {
  Value total = values.front();
  for (Value v : values.drop_front()) {
    FailureOr<Operation *> add = build("sl.add", {total, v}, {total.getType()});
    if (failed(add))
      return failure();
    total = (*add)->getResult(0);
  }
  return total;
}

/// The gradient of `v` in layout `to`: its contributions summed where they
/// share a layout, each sum taken to `to`, and those added.
FailureOr<Value> Differentiator::gradientAt(Value v, const Layout &to, const std::string &why) {
  auto it = grads.find(v);
  if (it == grads.end() || it->second.empty())
    return Value();
  llvm::MapVector<Type, SmallVector<Value>> byType;
  for (Value g : it->second)
    byType[g.getType()].push_back(g);
  SmallVector<Value> parts;
  for (auto &[type, values] : byType) {
    FailureOr<Value> s = sum(values);
    if (failed(s))
      return failure();
    FailureOr<Value> moved = relayout(*s, to, why);
    if (failed(moved))
      return failure();
    parts.push_back(*moved);
  }
  return sum(parts);
}

/// Builds op `name` at the end of the function with the layouts its sharding
/// rule derives from the operands (`resultTypes` give the global shapes).
FailureOr<Operation *> Differentiator::build(StringRef name, ValueRange operands,
                                             TypeRange resultTypes,
                                             ArrayRef<NamedAttribute> attrs) {
  OperationState st(loc(), name);
  st.addOperands(operands);
  for (Type t : resultTypes)
    st.addTypes(withLayout(cast<RankedTensorType>(t), nullptr));
  st.addAttributes(attrs);
  Operation *op = b.create(st);
  stamp(op);
  std::optional<shardline::RuleCheck> check = checkOpRuleAt(op, {}, &mesh);
  if (!check) {
    op->emitOpError("sl-autodiff: the op has no sharding rule");
    return failure();
  }
  if (!check->error.empty()) {
    op->emitOpError("sl-autodiff: the gradient of ")
        << (current ? opLabel(current) : std::string("the loss"))
        << " gets operand layouts its rule refuses: " << check->error;
    return failure();
  }
  for (auto [i, r] : llvm::enumerate(op->getResults()))
    r.setType(typeWith(r, check->results[i]));
  return op;
}

/// The gradient of the mean loss with respect to the logits starts the
/// backward program.
LogicalResult Differentiator::seedLoss(Operation *ce) {
  current = ce;
  Value logits = ce->getOperand(0), labels = ce->getOperand(1);
  FailureOr<Operation *> g = build("sl.cross_entropy_grad", {logits, labels}, {logits.getType()},
                                   attrsOf(ce, {"vocab_axes"}));
  if (failed(g))
    return failure();
  contribute(logits, (*g)->getResult(0));
  return success();
}

/// Appends the backward of `op` given the gradients of its results.
LogicalResult Differentiator::backward(Operation *op) {
  current = op;
  auto why = [&](unsigned result) {
    std::string r = op->getNumResults() > 1 ? " #" + std::to_string(result) : "";
    return "gradient of the result" + r + " of " + opLabel(op);
  };
  // A transition is the identity on the global value: its result's
  // contributions are its operand's.
  if (isTransition(op)) {
    Value x = op->getOperand(0), y = op->getResult(0);
    if (auto it = grads.find(y); it != grads.end())
      for (Value g : it->second)
        contribute(x, g);
    return success();
  }
  if (isa<WeightOp, CrossEntropyOp>(op))
    return success();
  // The op's result gradient in the layout of its result (a pending sum's
  // gradient is the same on every rank of the sum: replicated).
  SmallVector<Value> dys;
  bool any = false;
  for (auto [i, r] : llvm::enumerate(op->getResults())) {
    FailureOr<Value> dy = gradientAt(r, without(r), why(i));
    if (failed(dy))
      return failure();
    dys.push_back(*dy);
    any |= bool(*dy);
  }
  if (!any)
    return success();
  auto needs = [&](unsigned operand) { return active.contains(op->getOperand(operand)); };
  auto one = [&](StringRef name, ValueRange operands, Value like,
                 ArrayRef<NamedAttribute> attrs = {}) -> FailureOr<Value> {
    FailureOr<Operation *> g = build(name, operands, {like.getType()}, attrs);
    if (failed(g))
      return failure();
    return (*g)->getResult(0);
  };
  auto give = [&](unsigned operand, FailureOr<Value> g) -> LogicalResult {
    if (failed(g))
      return failure();
    contribute(op->getOperand(operand), *g);
    return success();
  };
  Value dy = dys.front();
  if (!dy)
    return success();

  if (isa<AddOp>(op)) {
    for (unsigned i = 0; i < 2; ++i)
      contribute(op->getOperand(i), dy);
    return success();
  }
  if (isa<MulOp>(op)) {
    Value l = op->getOperand(0), r = op->getOperand(1);
    if (needs(0) && failed(give(0, one("sl.mul", {dy, r}, l))))
      return failure();
    if (needs(1) && failed(give(1, one("sl.mul", {dy, l}, r))))
      return failure();
    return success();
  }
  if (isa<SiLUOp, GeLUOp, SigmoidOp, SoftplusOp>(op)) {
    std::string name = op->getName().getStringRef().str() + "_grad";
    return give(0, one(name, {op->getOperand(0), dy}, op->getOperand(0)));
  }
  if (isa<SwiGLUOp>(op)) {
    Value l = op->getOperand(0), r = op->getOperand(1);
    FailureOr<Operation *> g = build("sl.swiglu_grad", {l, r, dy}, {l.getType(), r.getType()});
    if (failed(g))
      return failure();
    contribute(l, (*g)->getResult(0));
    contribute(r, (*g)->getResult(1));
    return success();
  }
  if (isa<RMSNormOp>(op)) {
    Value x = op->getOperand(0), w = op->getOperand(1);
    auto eps = attrsOf(op, {"eps"});
    if (needs(0) && failed(give(0, one("sl.rms_norm_grad", {x, w, dy}, x, eps))))
      return failure();
    if (needs(1) && failed(give(1, one("sl.rms_norm_grad_weight", {x, dy}, w, eps))))
      return failure();
    return success();
  }
  if (isa<LinearOp, LMHeadOp>(op)) {
    Value x = op->getOperand(0), w = op->getOperand(1);
    if (needs(0) && failed(give(0, one("sl.linear_grad", {dy, w}, x))))
      return failure();
    if (needs(1) && failed(give(1, one("sl.linear_grad_weight", {x, dy}, w))))
      return failure();
    return success();
  }
  if (isa<EmbeddingOp>(op)) {
    Value ids = op->getOperand(0), table = op->getOperand(1);
    return give(1, one("sl.embedding_grad", {ids, dy, table}, table));
  }
  if (isa<RopeOp>(op))
    return give(0,
                one("sl.rope_grad", {dy}, op->getOperand(0), attrsOf(op, {"head_dim", "theta"})));
  if (isa<AttentionOp>(op)) {
    Value q = op->getOperand(0), k = op->getOperand(1), v = op->getOperand(2);
    auto attrs = attrsOf(op, {"heads", "kv_heads", "causal", "scale"});
    if (needs(0) && failed(give(0, one("sl.attention_grad", {q, k, v, dy}, q, attrs))))
      return failure();
    if (needs(1) || needs(2)) {
      FailureOr<Operation *> g =
          build("sl.attention_grad_kv", {q, k, v, dy}, {k.getType(), v.getType()}, attrs);
      if (failed(g))
        return failure();
      contribute(k, (*g)->getResult(0));
      contribute(v, (*g)->getResult(1));
    }
    return success();
  }
  if (isa<RingAttentionOp>(op))
    return op->emitOpError("sl-autodiff: the backward of ring attention is not built yet; "
                           "train with --cp-comm allgather or a2a");
  return op->emitOpError("sl-autodiff: no gradient for this op yet (training covers the "
                         "embedding, attention (A) and MLP (F) blocks, the final norm, the LM "
                         "head and the cross-entropy)");
}

LogicalResult Differentiator::run() {
  Block &body = fn.getBody().front();
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  // The loss: the function result a cross-entropy computes.
  Operation *loss = nullptr;
  for (Value r : ret.getOperands()) {
    // A loss over split tokens is returned through the all-reduce of its
    // pending sum.
    while (r.getDefiningOp() && isTransition(r.getDefiningOp()))
      r = r.getDefiningOp()->getOperand(0);
    if (auto ce = r.getDefiningOp<CrossEntropyOp>()) {
      if (loss)
        return fn.emitError("sl-autodiff: the function returns two losses");
      loss = ce;
    }
  }
  if (!loss)
    return fn.emitError("sl-autodiff: the function returns no sl.cross_entropy loss to train on");

  SmallVector<WeightOp> weights;
  SmallVector<Operation *> forward;
  for (Operation &op : body.without_terminator()) {
    forward.push_back(&op);
    if (auto w = dyn_cast<WeightOp>(op)) {
      weights.push_back(w);
      active.insert(w.getResult());
      continue;
    }
    if (llvm::any_of(op.getOperands(), [&](Value v) { return active.contains(v); }))
      for (Value r : op.getResults())
        if (isa<FloatType>(getElementTypeOrSelf(r.getType())))
          active.insert(r);
  }
  if (weights.empty())
    return fn.emitError("sl-autodiff: the function has no parameters (sl.weight) to train");

  b.setInsertionPoint(ret);
  if (failed(seedLoss(loss)))
    return failure();
  for (Operation *op : llvm::reverse(forward))
    if (op != loss && failed(backward(op)))
      return failure();

  // Each parameter's gradient in the parameter's own layout: the pending sums
  // over the axes that split what it was applied to are reduced here.
  current = nullptr;
  SmallVector<Value> paramGrads;
  for (WeightOp w : weights) {
    current = w;
    FailureOr<Value> g = gradientAt(w.getResult(), layoutOrReplicated(w.getResult()),
                                    "gradient of parameter '" + w.getName().str() + "'");
    if (failed(g))
      return failure();
    if (!*g)
      return w.emitOpError("sl-autodiff: the loss does not depend on parameter '")
             << w.getName() << "'";
    paramGrads.push_back(*g);
  }

  // The global gradient norm: sums of squares, added where they carry the same
  // pending sum, each such partial total reduced once.
  current = nullptr;
  auto scalar = RankedTensorType::get({}, b.getF32Type());
  llvm::MapVector<Type, SmallVector<Value>> squares;
  for (Value g : paramGrads) {
    FailureOr<Operation *> s = build("sl.sum_squares", {g}, {scalar});
    if (failed(s))
      return failure();
    Value v = (*s)->getResult(0);
    squares[v.getType()].push_back(v);
  }
  SmallVector<Value> totals;
  for (auto &[type, values] : squares) {
    FailureOr<Value> s = sum(values);
    if (failed(s))
      return failure();
    FailureOr<Value> r = relayout(*s, without(*s), "the global gradient norm (clipping)");
    if (failed(r))
      return failure();
    totals.push_back(*r);
  }
  FailureOr<Value> sumsq = sum(totals);
  if (failed(sumsq))
    return failure();

  // AdamW: the moments are parameters of the weight's layout, zero at start.
  for (auto [w, g] : llvm::zip(weights, paramGrads)) {
    current = w;
    SmallVector<Value> moments;
    for (StringRef which : {"adam_m", "adam_v"}) {
      auto m = WeightOp::create(b, w.getLoc(), w.getResult().getType(),
                                b.getStringAttr(w.getName().str() + "." + which.str()),
                                b.getStringAttr("constant"), b.getF64FloatAttr(0.0),
                                b.getF64FloatAttr(0.0));
      stamp(m);
      moments.push_back(m.getResult());
    }
    bool decay = w.getResult().getType().getRank() >= 2;
    FailureOr<Operation *> step =
        build("sl.adamw", {w.getResult(), g, moments[0], moments[1], *sumsq}, {},
              {b.getNamedAttr("decay", b.getBoolAttr(decay))});
    if (failed(step))
      return failure();
  }

  // The gradients become results, after the forward's.
  SmallVector<Value> results(ret.getOperands());
  unsigned first = results.size();
  results.append(paramGrads.begin(), paramGrads.end());
  ret->setOperands(results);
  SmallVector<Type> types;
  for (Value r : results)
    types.push_back(r.getType());
  fn.setType(FunctionType::get(fn.getContext(), fn.getArgumentTypes(), types));
  for (auto [i, w] : llvm::enumerate(weights))
    fn.setResultAttr(first + i, kNameAttr, b.getStringAttr("grad." + w.getName().str()));
  return success();
}

struct SLAutodiff : mlir::sl::impl::SLAutodiffBase<SLAutodiff> {
  using SLAutodiffBase::SLAutodiffBase;
  void runOnOperation() override {
    ModuleOp module = getOperation();
    FailureOr<MeshOp> mesh = getModuleMesh(module, "sl-autodiff");
    if (failed(mesh))
      return signalPassFailure();
    if (!*mesh) {
      module.emitError("sl-autodiff: the module has no sl.mesh");
      return signalPassFailure();
    }
    for (auto fn : module.getOps<func::FuncOp>()) {
      if (fn.isExternal())
        continue;
      if (failed(Differentiator(fn, *mesh).run()))
        return signalPassFailure();
    }
  }
};

} // namespace
