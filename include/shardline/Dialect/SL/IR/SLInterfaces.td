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

def SL_SPMDOpInterface : OpInterface<"SPMDOpInterface"> {
  let cppNamespace = "::mlir::sl";
  let description = [{
    How an op is rewritten for SPMD execution, stated by the op itself so
    that the passes never name a concrete op (upstream's
    `ShardingInterface::partition` is the model):

    - sl-propagate-layouts asks it, for a split sequence-mixing factor,
      whether it can carry the remedy (`canCarryRemedy`), lets it move its
      operands before the choice (`prepareRemedy`: a2a attention trades the
      sequence split for the heads) and, once its operands have their
      layouts, applies the remedy (`applyRemedy`: attention becomes
      sl.ring_attention, a causal conv gets its sl.halo operand, a scan is
      chunked with sl.scan_state_exchange and its own correction,
      cross-entropy takes its vocab axes).
    - sl-partition asks it for the facts that depend on the rank
      (`resolveRankFacts`: sl.tokens, sl.key_tokens, sl.ring,
      sl.vocab_offset, sl.chunks, sl.group) and, for a collective, for the
      upstream `shard` op that performs the same movement
      (`buildShardCollective`).
    - The report (sl-analyze, `--emit report`) and sl-explain ask an op that
      moves data between ranks for the bytes one rank sends
      (`sentBytesPerRank`).
    - The plan emitter asks it for the names of its operands and results
      (`getValueNames`), which the runtime binds.

    Every method has a default for ops with nothing to do. The contexts are
    in `shardline/Dialect/SL/IR/SPMD.h`.
  }];
  let methods = [
    InterfaceMethod<[{
        Whether the op can carry the remedy of `factor`, a sequence-mixing
        factor of its rule, split over axes the op does not yet carry it over.
        A halo, state passing and a vocab-parallel reduction can always be
        carried; an exchange of keys and values depends on the op (attention:
        only under the ring).
      }], "bool", "canCarryRemedy",
      (ins "const ::shardline::Factor &":$factor, "::mlir::sl::RemedyContext &":$ctx), "",
      [{
        using ::shardline::Remedy;
        return factor.remedy == Remedy::Halo || factor.remedy == Remedy::StatePassing ||
               factor.remedy == Remedy::VocabParallel;
      }]>,
    InterfaceMethod<[{
        Relayouts operands before sl-propagate-layouts chooses the op's
        splits (through `ctx.relayout`).
      }], "::mlir::LogicalResult", "prepareRemedy", (ins "::mlir::sl::RemedyContext &":$ctx), "",
      [{ return ::mlir::success(); }]>,
    InterfaceMethod<[{
        Applies the remedy of the sequence-mixing factors that stay split,
        given the operands' layouts. Returns the op that now computes the
        results (the op itself, or its replacement: the op is then erased).
      }], "::mlir::FailureOr<::mlir::Operation *>", "applyRemedy",
      (ins "::mlir::sl::RemedyContext &":$ctx), "",
      [{ return $_op.getOperation(); }]>,
    InterfaceMethod<[{
        Sets the attributes that depend on the rank (while the types still
        carry layouts).
      }], "void", "resolveRankFacts", (ins "const ::mlir::sl::RankContext &":$ctx), "",
      [{ return; }]>,
    InterfaceMethod<[{
        The upstream `shard` collective that performs the op's data movement
        on this rank's local types, built at `b`'s insertion point, or null
        when the movement does not fit one (the op then stays).
      }], "::mlir::Operation *", "buildShardCollective",
      (ins "::mlir::OpBuilder &":$b, "const ::mlir::sl::RankContext &":$ctx), "",
      [{ return nullptr; }]>,
    InterfaceMethod<[{
        The bytes one rank sends to perform the op's data movement on `mesh`,
        by the conventions of docs/report.md (bandwidth-optimal algorithms,
        sizes counted on one rank's local shapes), or -1 when the op moves
        nothing between ranks.
      }], "int64_t", "sentBytesPerRank", (ins "const ::shardline::Mesh &":$mesh), "",
      [{ return -1; }]>,
    InterfaceMethod<[{
        The names of the op's operands and results, as the plan states them
        for the runtime to bind: its sharding rule's names when it has a rule,
        else `x` (or `x0`, `x1`, ...) and `result`.
      }], "::mlir::sl::ValueNames", "getValueNames", (ins), "",
      [{ return ::mlir::sl::defaultValueNames($_op.getOperation()); }]>,
  ];
}

def SL_GradientOpInterface : OpInterface<"GradientOpInterface"> {
  let cppNamespace = "::mlir::sl";
  let description = [{
    How an op is differentiated, stated by the op itself so that sl-autodiff
    never names a concrete op: given the gradients of its results (through
    the GradientBuilder, `shardline/Dialect/SL/IR/Gradient.h`), it builds its
    backward ops and contributes each operand's gradient. The default has
    none: training a model with such an op is refused with the op's name.
  }];
  let methods = [
    InterfaceMethod<[{
        Builds the op's backward through `g`. Called once per op, in reverse
        program order, after every op that reads its results.
      }], "::mlir::LogicalResult", "buildGradient", (ins "::mlir::sl::GradientBuilder &":$g), "",
      [{
        return $_op->emitOpError("sl-autodiff: no gradient for this op yet (training covers "
                                 "the embedding, attention (A), local attention (L), MLP (F), "
                                 "mixture-of-experts (E), Mamba-2 (M) and RG-LRU (R) blocks, the "
                                 "final norm, the LM head and the cross-entropy)");
      }]>,
  ];
}

#endif
