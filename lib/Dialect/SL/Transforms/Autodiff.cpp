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
// What the backward reads of the forward is saved, except the results of
// all-gathers: by default (Megatron's) the backward gathers them again from
// the shard, which stays saved (sl.recompute); with save-gathered it reads the
// gathered tensor, which then stays live from the forward to its last
// backward use. Fewer bytes against more memory: the report shows both.
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

class Differentiator : public GradientBuilder {
public:
  Differentiator(func::FuncOp fn, MeshOp mesh, bool saveGathered, bool gradReduceInBf16)
      : fn(fn), mesh(toMesh(mesh)), b(fn.getContext()),
        meshRef(FlatSymbolRefAttr::get(mesh.getSymNameAttr())), saveGathered(saveGathered),
        gradReduceInBf16(gradReduceInBf16) {}

  LogicalResult run();

private:
  func::FuncOp fn;
  shardline::Mesh mesh;
  OpBuilder b;
  FlatSymbolRefAttr meshRef;
  bool saveGathered;
  /// Megatron's --grad-reduce-in-bf16: a bf16 parameter's gradient stays
  /// bf16 (computed, reduced and read by AdamW in bf16).
  bool gradReduceInBf16;
  /// The backward's re-gather of each forward all-gather result it reads.
  DenseMap<Value, Value> regathered;
  /// Values that depend on a parameter.
  DenseSet<Value> active;
  /// The 16-bit parameters: their gradients are computed and reduced in f32
  /// (all of them, unless gradReduceInBf16).
  DenseSet<Value> widened;
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
    op->setAttr(kBackwardAttr, b.getUnitAttr());
  }
  /// What a backward op reads for the forward value `v`: `v` itself, or
  /// under the default save policy, for an all-gather's result, the same
  /// gather of its (saved) shard, done again.
  Value saved(Value v) {
    auto gather = v.getDefiningOp<AllGatherOp>();
    if (saveGathered || !gather || gather->hasAttr(kBackwardAttr))
      return v;
    auto [it, inserted] = regathered.try_emplace(v);
    if (inserted) {
      Operation *again = b.clone(*gather);
      again->setAttr(kRecomputeAttr, b.getUnitAttr());
      again->setAttr(kReasonAttr,
                     b.getStringAttr("the backward of " + opLabel(current) +
                                     " gathers its input again from the saved shard "
                                     "(save the gathered tensor instead: --save-gathered)"));
      stamp(again);
      it->second = again->getResult(0);
    }
    return it->second;
  }
  FailureOr<Value> relayout(Value v, const Layout &to, const std::string &why);
  FailureOr<Value> sum(ArrayRef<Value> values);
  FailureOr<Value> gradientAt(Value v, const Layout &to, const std::string &why);
  FailureOr<Operation *> create(StringRef name, ValueRange operands, TypeRange resultTypes,
                                ArrayRef<NamedAttribute> attrs = {});
  void add(Value v, Value grad) {
    if (active.contains(v))
      grads[v].push_back(grad);
  }
  LogicalResult backward(Operation *op);
  Location loc() { return current ? current->getLoc() : fn.getLoc(); }
  /// The loss op.
  Operation *loss = nullptr;

  // GradientBuilder, for `current`.
  FailureOr<Value> resultGradient(unsigned i) override {
    Value r = current->getResult(i);
    std::string n = current->getNumResults() > 1 ? " #" + std::to_string(i) : "";
    return gradientAt(r, without(r), "gradient of the result" + n + " of " + opLabel(current));
  }
  bool needsGradient(unsigned i) override { return active.contains(current->getOperand(i)); }
  FailureOr<Operation *> build(StringRef name, ValueRange operands, ArrayRef<Value> likes,
                               ArrayRef<NamedAttribute> attrs) override {
    SmallVector<Type> types;
    for (Value v : likes) {
      auto type = cast<RankedTensorType>(v.getType());
      types.push_back(widened.contains(v) ? RankedTensorType::get(type.getShape(), b.getF32Type(),
                                                                  type.getEncoding())
                                          : type);
    }
    SmallVector<Value> reads;
    for (Value v : operands)
      reads.push_back(saved(v));
    return create(name, reads, types, attrs);
  }
  void contribute(unsigned i, Value grad) override { add(current->getOperand(i), grad); }
  bool isLoss() override { return current == loss; }
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
    FailureOr<Operation *> sum = create("sl.add", {total, v}, {total.getType()});
    if (failed(sum))
      return failure();
    total = (*sum)->getResult(0);
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
FailureOr<Operation *> Differentiator::create(StringRef name, ValueRange operands,
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

/// Appends the backward of `op` given the gradients of its results.
LogicalResult Differentiator::backward(Operation *op) {
  current = op;
  // A transition is the identity on the global value: its result's
  // contributions are its operand's.
  if (isTransition(op)) {
    if (auto it = grads.find(op->getResult(0)); it != grads.end())
      for (Value g : it->second)
        add(op->getOperand(0), g);
    return success();
  }
  if (isa<WeightOp>(op) || op->getNumResults() == 0)
    return success();
  if (op != loss && llvm::none_of(op->getResults(), [&](Value r) { return grads.count(r); }))
    return success();
  auto grad = dyn_cast<GradientOpInterface>(op);
  if (!grad)
    return op->emitOpError("sl-autodiff: the op states no gradient");
  return grad.buildGradient(*this);
}

LogicalResult Differentiator::run() {
  Block &body = fn.getBody().front();
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  // The loss: the function result a cross-entropy computes.
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
      // A bf16 parameter trains through an f32 main copy (Megatron's
      // --bf16). f16 would need loss scaling too (Megatron's --fp16), which
      // training does not do: refused here rather than at the run's first
      // update.
      if (Type e = w.getResult().getType().getElementType(); e.isF16())
        return w.emitOpError("sl-autodiff: parameter '")
               << w.getName() << "' is " << e
               << ": f16 training needs loss scaling, which is not built; train the model in "
                  "bf16 or f32 (\"dtype\": \"bf16\" or \"f32\")";
      weights.push_back(w);
      active.insert(w.getResult());
      if (!w.getResult().getType().getElementType().isF32() && !gradReduceInBf16)
        widened.insert(w.getResult());
      continue;
    }
    if (llvm::any_of(op.getOperands(), [&](Value v) { return active.contains(v); }))
      for (Value r : op.getResults())
        if (isa<FloatType>(getElementTypeOrSelf(r.getType())))
          active.insert(r);
  }
  if (weights.empty())
    return fn.emitError("sl-autodiff: the function has no parameters (sl.weight) to train");
  if (gradReduceInBf16 && llvm::none_of(weights, [](WeightOp w) {
        return w.getResult().getType().getElementType().isBF16();
      }))
    return fn.emitError("sl-autodiff: grad-reduce-in-bf16 reduces the gradients of bf16 "
                        "parameters in bf16, and this function has none (an f32 model's "
                        "gradients are f32)");

  b.setInsertionPoint(ret);
  for (Operation *op : llvm::reverse(forward))
    if (failed(backward(op)))
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
    FailureOr<Operation *> s = create("sl.sum_squares", {g}, {scalar});
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

  // AdamW: the moments are f32 parameters of the weight's layout, zero at
  // start. A 16-bit weight gets an f32 main copy beside them, a copy of the
  // weight at start, which the update applies to and rounds the weight from.
  for (auto [param, g] : llvm::zip(weights, paramGrads)) {
    WeightOp w = param;
    current = w;
    RankedTensorType type = w.getResult().getType();
    auto f32 = RankedTensorType::get(type.getShape(), b.getF32Type(), type.getEncoding());
    auto state = [&](StringRef suffix, StringRef init, StringRef source) {
      auto m = WeightOp::create(b, w.getLoc(), f32,
                                b.getStringAttr(w.getName().str() + "." + suffix.str()),
                                b.getStringAttr(init), b.getF64FloatAttr(0.0),
                                b.getF64FloatAttr(0.0), b.getStringAttr(source));
      stamp(m);
      return m.getResult();
    };
    SmallVector<Value> operands{w.getResult(), g, state("adam_m", "constant", ""),
                                state("adam_v", "constant", ""), *sumsq};
    if (!type.getElementType().isF32())
      operands.push_back(state("main", "copy", w.getName()));
    bool decay = type.getRank() >= 2;
    FailureOr<Operation *> step =
        create("sl.adamw", operands, {}, {b.getNamedAttr("decay", b.getBoolAttr(decay))});
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
      if (failed(Differentiator(fn, *mesh, saveGathered, gradReduceInBf16).run()))
        return signalPassFailure();
    }
  }
};

} // namespace
