#ifndef SHARDLINE_DIALECT_SL_IR_SLINTERFACES_TD
#define SHARDLINE_DIALECT_SL_IR_SLINTERFACES_TD

include "mlir/IR/OpBase.td"

def SL_ShardingRuleOpInterface : OpInterface<"ShardingRuleOpInterface"> {
  let cppNamespace = "::mlir::sl";
  let description = [{
    The op's sharding rule as data: every dimension of every operand and
    result is mapped to a factor, and each factor is free, contracted, whole or
    sequence-mixing (with the family's remedy). The verifier checks operand and
    result layouts against the rule; the propagation passes read it. See
    `shardline/Dialect/SL/IR/ShardingRule.h`.
  }];
  let methods = [
    InterfaceMethod<"The op's sharding rule.", "::shardline::ShardingRule",
                    "getShardingRule", (ins)>,
  ];
  // Interface verifiers run before the op's own verifier. The layouts are
  // checked against the rule only once the shapes are known to be right, so
  // the op's own shape check runs first (it runs again afterwards, silently).
  let verify = [{
    if (::mlir::failed(::llvm::cast<ConcreteOp>($_op).verify()))
      return ::mlir::failure();
    return ::mlir::sl::verifyShardingRule($_op);
  }];
}

#endif
