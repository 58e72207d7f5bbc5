//===- Gradient.h - what sl-autodiff offers an op that differentiates itself -*- C++ -*-===//
//
// The gradient op interface (SLInterfaces.td) lets each op state its own
// backward: from the gradients of its results it builds the backward ops
// (docs/dialect.md, "Backward and optimizer ops") and gives each operand
// its contribution. sl-autodiff hands it a GradientBuilder and never names
// a concrete op; the layouts of what the op builds come from their sharding
// rules, and the builder takes each result's gradient to the layout the op
// needs.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_DIALECT_SL_IR_GRADIENT_H
#define SHARDLINE_DIALECT_SL_IR_GRADIENT_H

#include "mlir/IR/Builders.h"
#include "mlir/IR/Value.h"
#include "mlir/Support/LogicalResult.h"

namespace mlir::sl {

class GradientBuilder {
public:
  virtual ~GradientBuilder() = default;
  /// The gradient of result `i` of the op being differentiated, in that
  /// result's layout without its pending sum (the gradient of a pending sum
  /// is the same on every rank of the sum); a null Value when the loss does
  /// not depend on the result.
  virtual FailureOr<Value> resultGradient(unsigned i) = 0;
  /// Whether operand `i` needs a gradient (it depends on a parameter).
  virtual bool needsGradient(unsigned i) = 0;
  /// Builds op `name` on `operands` with `attrs`, result j shaped like
  /// `likes[j]` and laid out as the op's sharding rule derives from the
  /// operands' layouts. An error names the op being differentiated.
  virtual FailureOr<Operation *> build(StringRef name, ValueRange operands, ArrayRef<Value> likes,
                                       ArrayRef<NamedAttribute> attrs = {}) = 0;
  /// Adds `grad` (in any layout) to the gradient of operand `i`.
  virtual void contribute(unsigned i, Value grad) = 0;
  /// Whether the op being differentiated computes the loss (its gradient is
  /// the seed of the backward program).
  virtual bool isLoss() = 0;

  /// `build` of a one-result op whose result is shaped like `like`.
  FailureOr<Value> buildOne(StringRef name, ValueRange operands, Value like,
                            ArrayRef<NamedAttribute> attrs = {}) {
    FailureOr<Operation *> op = build(name, operands, {like}, attrs);
    if (failed(op))
      return failure();
    return (*op)->getResult(0);
  }
  /// `contribute` of a gradient that may have failed to build.
  LogicalResult give(unsigned i, FailureOr<Value> grad) {
    if (failed(grad))
      return failure();
    contribute(i, *grad);
    return success();
  }
  /// The attributes of `op` named `names` (those it has), to pass on.
  static SmallVector<NamedAttribute> attrsOf(Operation *op, ArrayRef<StringRef> names) {
    SmallVector<NamedAttribute> out;
    for (StringRef n : names)
      if (Attribute a = op->getAttr(n))
        out.push_back(NamedAttribute(StringAttr::get(op->getContext(), n), a));
    return out;
  }
};

} // namespace mlir::sl

#endif
