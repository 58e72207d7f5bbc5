//===- AttentionOps.td - attention (A) ---------------------*- tablegen -*-===//
//
// RoPE, attention and ring attention.
// Included by SLOps.td, which defines the op classes.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_DIALECT_SL_IR_ATTENTIONOPS_TD
#define SHARDLINE_DIALECT_SL_IR_ATTENTIONOPS_TD

def SL_RopeOp : SL_ComputeOp<"rope", [AllShapesMatch<["x", "result"]>], ["resolveRankFacts"],
                             SL_Differentiable> {
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
    ["canCarryRemedy", "prepareRemedy", "applyRemedy", "resolveRankFacts"],
    SL_Differentiable> {
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
    [AllShapesMatch<["k", "v"]>, AllShapesMatch<["q", "result"]>],
    ["resolveRankFacts", "sentBytesPerRank"], SL_Differentiable> {
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

def SL_RingAttentionGradOp : SL_ComputeOp<"ring_attention_grad",
    [AllShapesMatch<["k", "v", "dk", "dv"]>, AllShapesMatch<["q", "dy", "dq"]>],
    ["resolveRankFacts", "sentBytesPerRank"]> {
  let summary = "The backward of sl.ring_attention: K, V and their gradients circulate";
  let description = [{
    q, k, v, dy (laid out like q) -> dq, dk, dv, with the operands split over
    `axes` along the sequence as sl.ring_attention's. A first pass around the
    ring recomputes the forward's output and log-sum-exp; in the second, each
    rank passes the K, V block it holds on together with that block's partial
    dK, dV, adds its own queries' contribution to both and to its own dq,
    and after n - 1 steps passes the completed dK, dV once more, so each
    block's gradient arrives back at its owner. Sends (3n - 2) times the
    local K and V bytes.
  }];
  let arguments = (ins SL_FloatTensor:$q, SL_FloatTensor:$k, SL_FloatTensor:$v,
                   SL_FloatTensor:$dy, I64Attr:$heads, I64Attr:$kv_heads, StrArrayAttr:$axes,
                   DefaultValuedAttr<BoolAttr, "true">:$causal,
                   OptionalAttr<F64Attr>:$scale);
  let results = (outs SL_FloatTensor:$dq, SL_FloatTensor:$dk, SL_FloatTensor:$dv);
}

#endif
