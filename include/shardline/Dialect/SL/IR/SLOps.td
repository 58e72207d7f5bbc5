#ifndef SHARDLINE_DIALECT_SL_IR_SLOPS_TD
#define SHARDLINE_DIALECT_SL_IR_SLOPS_TD

include "shardline/Dialect/SL/IR/SLBase.td"
include "shardline/Dialect/SL/IR/SLAttrs.td"
include "shardline/Dialect/SL/IR/SLInterfaces.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

def SL_FloatTensor : RankedTensorOf<[F32, BF16, F16]>;
def SL_IndexTensor : RankedTensorOf<[I32]>;
// What a layout transition moves: activations, and the token ids, labels and
// expert indices that follow them (the runtime moves i32 values as they are).
// An integer tensor never carries a pending sum (every op's layout checks
// refuse one), so a reduce_scatter or all_reduce of one is refused at the op.
def SL_DataTensor : RankedTensorOf<[F32, BF16, F16, I32]>;

//===----------------------------------------------------------------------===//
// Mesh and parameters
//===----------------------------------------------------------------------===//

def SL_MeshOp : SL_Op<"mesh", [Symbol]> {
  let summary = "A device mesh with named axes of static size";
  let description = [{
    ```
    sl.mesh @mesh(dp = 1, ep = 2, cp = 2, tp = 2)
    ```
    Ranks are numbered with the last axis varying fastest.
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, StrArrayAttr:$axes,
                   DenseI64ArrayAttr:$sizes);
  let hasCustomAssemblyFormat = 1;
  let hasVerifier = 1;
}

def SL_WeightOp : SL_Op<"weight", [Pure]> {
  let summary = "A model parameter, generated from the seed or loaded by name";
  let description = [{
    `init` is `normal` (mean `offset`, std `scale`), `uniform` (in
    `[offset, offset + scale)`), `constant` (`offset`) or `copy`: the
    values of the earlier weight named `source`, of the same shape and
    layout, widened to this one's type (a 16-bit parameter's f32 main copy,
    which sl-autodiff adds for training). Generated weights are indexed by
    global element position, so every rank can make its own shard of the
    tensor a single-device run uses.
    ```
    %w = sl.weight "blocks.0.attn.wq" {init = "normal", scale = 0.02 : f64}
        : tensor<128x128xf32, #sl.layout<@mesh, [[], [tp]]>>
    ```
  }];
  let arguments = (ins StrAttr:$name, DefaultValuedStrAttr<StrAttr, "normal">:$init,
                   DefaultValuedAttr<F64Attr, "0.02">:$scale,
                   DefaultValuedAttr<F64Attr, "0.0">:$offset,
                   DefaultValuedStrAttr<StrAttr, "">:$source);
  let results = (outs SL_FloatTensor:$result);
  let assemblyFormat = "$name attr-dict `:` type($result)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Compute ops: each states its sharding rule.
//===----------------------------------------------------------------------===//

// `spmd` names the SPMDOpInterface methods the op implements itself (its
// remedy, its per-rank facts); the others keep their defaults. `grad` is
// ["buildGradient"] for an op that states its backward (GradientOpInterface).
class SL_ComputeOp<string mnemonic, list<Trait> traits = [], list<string> spmd = [],
                   list<string> grad = []>
    : SL_Op<mnemonic, traits # [Pure,
        DeclareOpInterfaceMethods<SL_ShardingRuleOpInterface>,
        DeclareOpInterfaceMethods<SL_SPMDOpInterface, spmd>,
        DeclareOpInterfaceMethods<SL_GradientOpInterface, grad>]> {
  let assemblyFormat = "operands attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

// An op that updates its operands' storage in place (an optimizer step): no
// results, and not Pure, so canonicalization, CSE and DCE keep it where it is.
// Its operands say which of them it writes (Arg<..., [MemWrite]>).
class SL_UpdateOp<string mnemonic, list<Trait> traits = [], list<string> spmd = []>
    : SL_Op<mnemonic, traits # [
        DeclareOpInterfaceMethods<SL_ShardingRuleOpInterface>,
        DeclareOpInterfaceMethods<SL_SPMDOpInterface, spmd>]> {
  let assemblyFormat = "operands attr-dict `:` type(operands)";
  let hasVerifier = 1;
}

defvar SL_Differentiable = ["buildGradient"];

class SL_ElementwiseOp<string mnemonic, string summ, int numOperands>
    : SL_ComputeOp<mnemonic, [AllShapesMatch<!if(!eq(numOperands, 1), ["x", "result"],
                                                 ["lhs", "rhs", "result"])>],
                   [], SL_Differentiable> {
  let summary = summ;
  let description = [{ Rule: every dimension free; operands and result share one layout. }];
  let arguments = !if(!eq(numOperands, 1), (ins SL_FloatTensor:$x),
                      (ins SL_FloatTensor:$lhs, SL_FloatTensor:$rhs));
  let results = (outs SL_FloatTensor:$result);
}

//===----------------------------------------------------------------------===//
// Layout transitions
//===----------------------------------------------------------------------===//

// A collective states its per-rank group and the upstream shard op that
// performs its movement.
defvar SL_CollectiveMethods = ["resolveRankFacts", "buildShardCollective"];
// One that moves data between ranks also states the bytes one rank sends
// (sl.slice moves none).
defvar SL_ExchangeMethods = SL_CollectiveMethods # ["sentBytesPerRank"];

class SL_LayoutOp<string mnemonic, list<string> spmd = []>
    : SL_Op<mnemonic, [Pure, DeclareOpInterfaceMethods<SL_SPMDOpInterface, spmd>]> {
  let assemblyFormat = "$x attr-dict `:` type($x) `->` type($result)";
  let hasVerifier = 1;
  let results = (outs SL_DataTensor:$result);
}

// The ops, one file per family: every *Ops.td beside this file, listed by the build
// (SLFamilyOps.td is generated from that glob).
include "shardline/Dialect/SL/IR/SLFamilyOps.td"

#endif
