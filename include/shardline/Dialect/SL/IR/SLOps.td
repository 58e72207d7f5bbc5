#ifndef SHARDLINE_DIALECT_SL_IR_SLOPS_TD
#define SHARDLINE_DIALECT_SL_IR_SLOPS_TD

include "shardline/Dialect/SL/IR/SLBase.td"
include "shardline/Dialect/SL/IR/SLAttrs.td"
include "shardline/Dialect/SL/IR/SLInterfaces.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

def SL_FloatTensor : RankedTensorOf<[F32, BF16, F16]>;
def SL_IndexTensor : RankedTensorOf<[I32]>;

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
    `[offset, offset + scale)`) or `constant` (`offset`). Generated weights
    are indexed by global element position, so every rank can make its own
    shard of the tensor a single-device run uses.
    ```
    %w = sl.weight "blocks.0.attn.wq" {init = "normal", scale = 0.02 : f64}
        : tensor<128x128xf32, #sl.layout<@mesh, [[], [tp]]>>
    ```
  }];
  let arguments = (ins StrAttr:$name, DefaultValuedStrAttr<StrAttr, "normal">:$init,
                   DefaultValuedAttr<F64Attr, "0.02">:$scale,
                   DefaultValuedAttr<F64Attr, "0.0">:$offset);
  let results = (outs SL_FloatTensor:$result);
  let assemblyFormat = "$name attr-dict `:` type($result)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Compute ops: each states its sharding rule.
//===----------------------------------------------------------------------===//

// `spmd` names the SPMDOpInterface methods the op implements itself (its
// remedy, its per-rank facts); the others keep their defaults.
class SL_ComputeOp<string mnemonic, list<Trait> traits = [], list<string> spmd = []>
    : SL_Op<mnemonic, traits # [Pure,
        DeclareOpInterfaceMethods<SL_ShardingRuleOpInterface>,
        DeclareOpInterfaceMethods<SL_SPMDOpInterface, spmd>]> {
  let assemblyFormat = "operands attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def SL_EmbeddingOp : SL_ComputeOp<"embedding", [], ["resolveRankFacts"]> {
  let summary = "Token embedding lookup: ids[b,s], table[v,h] -> [b,s,h]";
  let description = [{
    Rule: b, s, h free; v contracted (a vocab-parallel table gives each rank
    the rows it owns and zeros elsewhere: a pending sum over the vocab axes).
  }];
  let arguments = (ins SL_IndexTensor:$ids, SL_FloatTensor:$table);
  let results = (outs SL_FloatTensor:$result);
}

def SL_RMSNormOp : SL_ComputeOp<"rms_norm", [AllShapesMatch<["x", "result"]>]> {
  let summary = "RMSNorm over the last dimension: x / rms(x) * w";
  let description = [{ Rule: leading dims free; the normalised dimension whole; nonlinear. }];
  let arguments = (ins SL_FloatTensor:$x, SL_FloatTensor:$weight,
                   DefaultValuedAttr<F64Attr, "1.0e-5">:$eps);
  let results = (outs SL_FloatTensor:$result);
}

def SL_GatedRMSNormOp : SL_ComputeOp<"gated_rms_norm",
    [AllShapesMatch<["y", "z", "result"]>]> {
  let summary = "Mamba-2 gated norm: norm(y) * w * silu(z), normalised within groups";
  let description = [{
    y, z: [b, s, c]; the c channels form `groups` contiguous groups, each
    normalised on its own. Rule: b, s free; c free in whole groups (a split
    must divide `groups`).
  }];
  let arguments = (ins SL_FloatTensor:$y, SL_FloatTensor:$z, SL_FloatTensor:$weight,
                   I64Attr:$groups, DefaultValuedAttr<F64Attr, "1.0e-5">:$eps);
  let results = (outs SL_FloatTensor:$result);
}

def SL_LinearOp : SL_ComputeOp<"linear"> {
  let summary = "Matrix product with a weight: x[..., k] * w[k, n] -> [..., n]";
  let description = [{
    Rule: leading dims free, n free (column-parallel), k contracted
    (row-parallel gives a pending sum). Linear in x.
  }];
  let arguments = (ins SL_FloatTensor:$x, SL_FloatTensor:$weight);
  let results = (outs SL_FloatTensor:$result);
}

def SL_RopeOp : SL_ComputeOp<"rope", [AllShapesMatch<["x", "result"]>], ["resolveRankFacts"]> {
  let summary = "Rotary position embedding on [b, s, heads*head_dim]";
  let description = [{
    Rotates the pairs (i, i + head_dim/2) of every head by position *
    theta^(-2i/head_dim). Positions are the global token indices, so the
    sequence dimension is free (each rank knows the positions it holds).
    Rule: b, s free; heads free in whole heads; head_dim whole.
  }];
  let arguments = (ins SL_FloatTensor:$x, I64Attr:$head_dim,
                   DefaultValuedAttr<F64Attr, "10000.0">:$theta);
  let results = (outs SL_FloatTensor:$result);
}

def SL_AttentionOp : SL_ComputeOp<"attention",
    [AllShapesMatch<["k", "v"]>, AllShapesMatch<["q", "result"]>],
    ["canCarryRemedy", "prepareRemedy", "applyRemedy", "resolveRankFacts"]> {
  let summary = "Causal softmax attention with grouped KV heads";
  let description = [{
    q: [b, s, heads*d]; k, v: [b, t, kv_heads*d] -> [b, s, heads*d]. Query
    head h reads kv head h / (heads / kv_heads). Rule: b, query positions,
    heads free; head_dim whole; key positions sequence-mixing (remedy: ring
    exchange via sl.ring_attention, all-gather of K and V, or all-to-all
    sequence <-> heads).
  }];
  let arguments = (ins SL_FloatTensor:$q, SL_FloatTensor:$k, SL_FloatTensor:$v,
                   I64Attr:$heads, I64Attr:$kv_heads,
                   DefaultValuedAttr<BoolAttr, "true">:$causal,
                   OptionalAttr<F64Attr>:$scale);
  let results = (outs SL_FloatTensor:$result);
}

def SL_RingAttentionOp : SL_ComputeOp<"ring_attention",
    [AllShapesMatch<["k", "v"]>, AllShapesMatch<["q", "result"]>], ["resolveRankFacts"]> {
  let summary = "Attention whose K and V circulate around a ring of ranks";
  let description = [{
    Same values as sl.attention. q, k and v are split over `axes` along the
    sequence in the same way; in n-1 steps every rank passes its K, V block
    to the next rank of the ring and merges partial results with the
    log-sum-exp rule. Sends (n-1) times the local K and V bytes.
  }];
  let arguments = (ins SL_FloatTensor:$q, SL_FloatTensor:$k, SL_FloatTensor:$v,
                   I64Attr:$heads, I64Attr:$kv_heads, StrArrayAttr:$axes,
                   DefaultValuedAttr<BoolAttr, "true">:$causal,
                   OptionalAttr<F64Attr>:$scale);
  let results = (outs SL_FloatTensor:$result);
}

def SL_CausalConv1dOp : SL_ComputeOp<"causal_conv1d", [AllShapesMatch<["x", "result"]>],
    ["canCarryRemedy", "applyRemedy", "resolveRankFacts"]> {
  let summary = "Depthwise causal convolution along the sequence";
  let description = [{
    x: [b, s, c], weight: [c, width], bias: [c]. y[t] = bias + sum_j
    weight[j] * x[t - width + 1 + j]. Rule: b, c free; s sequence-mixing
    (remedy: the optional `halo` operand from sl.halo supplies the width-1
    tokens that precede each chunk).
  }];
  let arguments = (ins SL_FloatTensor:$x, SL_FloatTensor:$weight, SL_FloatTensor:$bias,
                   Optional<SL_FloatTensor>:$halo);
  let results = (outs SL_FloatTensor:$result);
  let assemblyFormat = [{
    $x `,` $weight `,` $bias (`halo` $halo^)? attr-dict `:` functional-type(operands, results)
  }];
}

def SL_SSDScanOp : SL_ComputeOp<"ssd_scan", [AllShapesMatch<["x", "y"]>],
    ["canCarryRemedy", "applyRemedy", "resolveRankFacts"]> {
  let summary = "Mamba-2 state-space scan (SSD) with scalar decay per head";
  let description = [{
    x: [b, s, heads*p], dt: [b, s, heads], a_log, d, dt_bias: [heads],
    B, C: [b, s, groups*n]. With dt' = softplus(dt + dt_bias), A = -exp(a_log),
    a_t = exp(dt'_t A): state_t = a_t state_{t-1} + dt'_t x_t B_t^T,
    y_t = state_t C_t + d x_t. Head h reads group h / (heads / groups).
    Results: y [b, s, heads*p], the final state [b, heads, p, n] and the total
    decay [b, heads].

    With `chunk_axes` the sequence is split over those axes and every chunk is
    scanned from a zero state (or `state_in`); state and decay then gain a
    leading chunk dimension (one entry per chunk in sequence order) split over
    the same axes: the summaries that sl.scan_state_exchange combines.
    Rule: b, heads, groups free (in whole heads and groups); n whole; s
    sequence-mixing (remedy: state passing).
  }];
  let arguments = (ins SL_FloatTensor:$x, SL_FloatTensor:$dt, SL_FloatTensor:$a_log,
                   SL_FloatTensor:$B, SL_FloatTensor:$C, SL_FloatTensor:$d,
                   SL_FloatTensor:$dt_bias, Optional<SL_FloatTensor>:$state_in,
                   I64Attr:$heads, I64Attr:$groups,
                   DefaultValuedAttr<StrArrayAttr, "{}">:$chunk_axes);
  let results = (outs SL_FloatTensor:$y, SL_FloatTensor:$state, SL_FloatTensor:$decay);
  let assemblyFormat = [{
    $x `,` $dt `,` $a_log `,` $B `,` $C `,` $d `,` $dt_bias (`state_in` $state_in^)?
    attr-dict `:` functional-type(operands, results)
  }];
}

def SL_SSDCorrectOp : SL_ComputeOp<"ssd_correct", [AllShapesMatch<["y0", "result"]>],
    ["resolveRankFacts"]> {
  let summary = "Adds the contribution of each chunk's true initial state to an SSD scan";
  let description = [{
    y0 is sl.ssd_scan's output with chunks scanned from zero; init [C, b,
    heads, p, n] the true initial state of each chunk (sl.scan_state_exchange).
    y_t = y0_t + C_t (prod_{tau<=t in chunk} a_tau) init. Token-local given
    init, so the sequence is free here.
  }];
  let arguments = (ins SL_FloatTensor:$y0, SL_FloatTensor:$init, SL_FloatTensor:$C,
                   SL_FloatTensor:$dt, SL_FloatTensor:$a_log, SL_FloatTensor:$dt_bias,
                   I64Attr:$heads, I64Attr:$groups, StrArrayAttr:$chunk_axes);
  let results = (outs SL_FloatTensor:$result);
}

def SL_RGLRUScanOp : SL_ComputeOp<"rglru_scan", [AllShapesMatch<["x", "y"]>],
    ["canCarryRemedy", "applyRemedy", "resolveRankFacts"]> {
  let summary = "Griffin RG-LRU: diagonal gated linear recurrence";
  let description = [{
    x: [b, s, w]; gate weights wa, ba, wx, bx and lambda: [w] (per-channel
    gates). r = sigmoid(wa x + ba), i = sigmoid(wx x + bx),
    a_t = exp(8 r_t log sigmoid(lambda)), h_t = a_t h_{t-1} +
    sqrt(1 - a_t^2) (i_t x_t), y = h. Results: y [b, s, w], final state [b, w],
    total decay [b, w]; `chunk_axes` as for sl.ssd_scan. Rule: b, w free;
    s sequence-mixing (remedy: state passing).
  }];
  let arguments = (ins SL_FloatTensor:$x, SL_FloatTensor:$wa, SL_FloatTensor:$ba,
                   SL_FloatTensor:$wx, SL_FloatTensor:$bx, SL_FloatTensor:$lambda,
                   Optional<SL_FloatTensor>:$state_in,
                   DefaultValuedAttr<StrArrayAttr, "{}">:$chunk_axes);
  let results = (outs SL_FloatTensor:$y, SL_FloatTensor:$state, SL_FloatTensor:$decay);
  let assemblyFormat = [{
    $x `,` $wa `,` $ba `,` $wx `,` $bx `,` $lambda (`state_in` $state_in^)?
    attr-dict `:` functional-type(operands, results)
  }];
}

def SL_RGLRUCorrectOp : SL_ComputeOp<"rglru_correct",
    [AllShapesMatch<["y0", "x", "result"]>], ["resolveRankFacts"]> {
  let summary = "Adds the contribution of each chunk's true initial state to an RG-LRU scan";
  let description = [{
    y_t = y0_t + (prod_{tau<=t in chunk} a_tau) init, with init [C, b, w].
  }];
  let arguments = (ins SL_FloatTensor:$y0, SL_FloatTensor:$init, SL_FloatTensor:$x,
                   SL_FloatTensor:$wa, SL_FloatTensor:$ba, SL_FloatTensor:$lambda,
                   StrArrayAttr:$chunk_axes);
  let results = (outs SL_FloatTensor:$result);
}

def SL_RouterTopKOp : SL_ComputeOp<"router_topk"> {
  let summary = "MoE router: softmax over experts, top-k, renormalised";
  let description = [{
    logits [b, s, experts] -> weights [b, s, k] (f32, summing to one) and
    expert indices [b, s, k] (i32, by descending probability, ties to the
    lower index). Rule: b, s free; experts whole.
  }];
  let arguments = (ins SL_FloatTensor:$logits, I64Attr:$k);
  let results = (outs SL_FloatTensor:$weights, SL_IndexTensor:$indices);
}

def SL_MoEDispatchOp : SL_ComputeOp<"moe_dispatch"> {
  let summary = "Dropless dispatch of tokens to experts";
  let description = [{
    x [b, s, h], indices [b, s, k] -> [experts, b, s, h]: slot (e, b, s) holds
    x[b, s] if the token chose expert e, zeros otherwise. No token is
    dropped. Rule: b, s, h free; experts whole here (an all-to-all over the
    expert-parallel axes then splits them).
  }];
  let arguments = (ins SL_FloatTensor:$x, SL_IndexTensor:$indices, I64Attr:$experts);
  let results = (outs SL_FloatTensor:$result);
}

def SL_MoEExpertsOp : SL_ComputeOp<"moe_experts",
    [AllShapesMatch<["gate", "up"]>, AllShapesMatch<["tokens", "result"]>]> {
  let summary = "SwiGLU experts: down_e(silu(x gate_e) * (x up_e)) per expert slot";
  let description = [{
    tokens [E, b, s, h], gate, up [E, h, f], down [E, f, h] -> [E, b, s, h].
    Rule: E free (expert parallel), b, s free, f contracted, h whole.
  }];
  let arguments = (ins SL_FloatTensor:$tokens, SL_FloatTensor:$gate, SL_FloatTensor:$up,
                   SL_FloatTensor:$down);
  let results = (outs SL_FloatTensor:$result);
}

def SL_MoECombineOp : SL_ComputeOp<"moe_combine"> {
  let summary = "Weighted sum of each token's expert outputs";
  let description = [{
    expert_out [E, b, s, h], weights, indices [b, s, k] -> [b, s, h]:
    y[b, s] = sum_j weights[b, s, j] * expert_out[indices[b, s, j], b, s].
    Rule: b, s, h free; E whole.
  }];
  let arguments = (ins SL_FloatTensor:$expert_out, SL_FloatTensor:$weights,
                   SL_IndexTensor:$indices);
  let results = (outs SL_FloatTensor:$result);
}

class SL_ElementwiseOp<string mnemonic, string summ, int numOperands>
    : SL_ComputeOp<mnemonic, [AllShapesMatch<!if(!eq(numOperands, 1), ["x", "result"],
                                                 ["lhs", "rhs", "result"])>]> {
  let summary = summ;
  let description = [{ Rule: every dimension free; operands and result share one layout. }];
  let arguments = !if(!eq(numOperands, 1), (ins SL_FloatTensor:$x),
                      (ins SL_FloatTensor:$lhs, SL_FloatTensor:$rhs));
  let results = (outs SL_FloatTensor:$result);
}

def SL_AddOp : SL_ElementwiseOp<"add", "Elementwise sum (residual add)", 2>;
def SL_MulOp : SL_ElementwiseOp<"mul", "Elementwise product", 2>;
def SL_SwiGLUOp : SL_ElementwiseOp<"swiglu", "silu(lhs) * rhs", 2>;
def SL_SiLUOp : SL_ElementwiseOp<"silu", "x * sigmoid(x)", 1>;
def SL_GeLUOp : SL_ElementwiseOp<"gelu", "GeLU (erf form)", 1>;
def SL_SigmoidOp : SL_ElementwiseOp<"sigmoid", "1 / (1 + exp(-x))", 1>;
def SL_SoftplusOp : SL_ElementwiseOp<"softplus", "log(1 + exp(x))", 1>;

def SL_LMHeadOp : SL_ComputeOp<"lm_head"> {
  let summary = "Output projection to the vocabulary: x[b, s, h] * w[h, v]";
  let description = [{ Rule: b, s free; v free (vocab-parallel); h contracted. }];
  let arguments = (ins SL_FloatTensor:$x, SL_FloatTensor:$weight);
  let results = (outs SL_FloatTensor:$result);
}

def SL_CrossEntropyOp : SL_ComputeOp<"cross_entropy", [],
    ["canCarryRemedy", "applyRemedy", "resolveRankFacts"]> {
  let summary = "Mean token cross-entropy of logits against labels";
  let description = [{
    logits [b, s, v], labels [b, s] -> scalar mean loss. With the tokens
    split, each rank holds its share of the sum (a pending sum over those
    axes). The vocabulary may be split only over `vocab_axes`: vocab-parallel
    cross-entropy (all-reduce of the per-token max and sum, and of the target
    logit, over those axes).
  }];
  let arguments = (ins SL_FloatTensor:$logits, SL_IndexTensor:$labels,
                   DefaultValuedAttr<StrArrayAttr, "{}">:$vocab_axes);
  let results = (outs SL_FloatTensor:$loss);
}

//===----------------------------------------------------------------------===//
// Layout transitions
//===----------------------------------------------------------------------===//

// A collective states its per-rank group and the upstream shard op that
// performs its movement.
defvar SL_CollectiveMethods = ["resolveRankFacts", "buildShardCollective"];

class SL_LayoutOp<string mnemonic, list<string> spmd = []>
    : SL_Op<mnemonic, [Pure, DeclareOpInterfaceMethods<SL_SPMDOpInterface, spmd>]> {
  let assemblyFormat = "$x attr-dict `:` type($x) `->` type($result)";
  let hasVerifier = 1;
  let results = (outs SL_FloatTensor:$result);
}

def SL_RelayoutOp : SL_LayoutOp<"relayout"> {
  let summary = "Any change of layout, to be materialised as collectives";
  let description = [{
    Placed by sl-propagate-layouts where a consumer's rule needs another
    layout than its producer gives; sl-insert-collectives replaces each one by
    the collectives, slices and reorders that realise it.
  }];
  let arguments = (ins SL_FloatTensor:$x);
}

def SL_AllGatherOp : SL_LayoutOp<"all_gather", SL_CollectiveMethods> {
  let summary = "Gathers dimension `dim` over the minor-most `axes` of its split";
  let arguments = (ins SL_FloatTensor:$x, StrArrayAttr:$axes, I64Attr:$dim);
}

def SL_ReduceScatterOp : SL_LayoutOp<"reduce_scatter", SL_CollectiveMethods> {
  let summary = "Sums a pending sum over `axes` and splits dimension `dim` over them";
  let arguments = (ins SL_FloatTensor:$x, StrArrayAttr:$axes, I64Attr:$dim);
}

def SL_AllReduceOp : SL_LayoutOp<"all_reduce", SL_CollectiveMethods> {
  let summary = "Sums a pending sum over `axes`";
  let arguments = (ins SL_FloatTensor:$x, StrArrayAttr:$axes);
}

def SL_AllToAllOp : SL_LayoutOp<"all_to_all", SL_CollectiveMethods> {
  let summary = "Moves the split over `axes` from `concat_dim` to `split_dim`";
  let description = [{
    Before: `concat_dim`'s split ends with `axes`; after: `axes` are appended
    to `split_dim`'s split and removed from `concat_dim`'s.
  }];
  let arguments = (ins SL_FloatTensor:$x, StrArrayAttr:$axes, I64Attr:$split_dim,
                   I64Attr:$concat_dim);
}

def SL_SliceOp : SL_LayoutOp<"slice", SL_CollectiveMethods> {
  let summary = "Keeps this rank's part of dimension `dim` along `axes`; no communication";
  let arguments = (ins SL_FloatTensor:$x, StrArrayAttr:$axes, I64Attr:$dim);
}

def SL_ReorderOp : SL_LayoutOp<"reorder"> {
  let summary = "Changes the chunk order (contiguous <-> zigzag) of the sequence dimension";
  let description = [{ A point-to-point permutation of chunks among the ranks that split it. }];
  let arguments = (ins SL_FloatTensor:$x);
}

def SL_HaloOp : SL_LayoutOp<"halo", ["resolveRankFacts"]> {
  let summary = "The `width` tokens before each sequence chunk, from the rank that holds them";
  let description = [{
    x [b, s, c] with s split over `axes` into C chunks (C = n, or 2n in zigzag
    order) -> [b, C * width, c], split like x: entry i holds the width tokens
    that precede chunk i in sequence order (zeros before the first chunk).
  }];
  let arguments = (ins SL_FloatTensor:$x, StrArrayAttr:$axes, I64Attr:$width);
}

def SL_ScanStateExchangeOp : SL_Op<"scan_state_exchange",
    [Pure, AllTypesMatch<["states", "result"]>,
     DeclareOpInterfaceMethods<SL_SPMDOpInterface, ["resolveRankFacts"]>]> {
  let summary = "Combines per-chunk scan summaries into each chunk's true initial state";
  let description = [{
    states [C, ...] (final states of chunks scanned from zero) and decays
    [C, ...] (total decay per chunk, broadcast over the trailing state dims),
    chunks in sequence order and split over `axes` along dimension 0 ->
    initial states [C, ...]: init_0 = 0, init_{i+1} = decay_i * init_i +
    state_i. An all-gather of the summaries over `axes`; its size does not
    depend on the sequence length.
  }];
  let arguments = (ins SL_FloatTensor:$states, SL_FloatTensor:$decays, StrArrayAttr:$axes);
  let results = (outs SL_FloatTensor:$result);
  let assemblyFormat = "$states `,` $decays attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

#endif
