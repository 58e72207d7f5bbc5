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
  let verify = [{ return ::mlir::sl::verifyShardingRule($_op); }];
}

#endif
