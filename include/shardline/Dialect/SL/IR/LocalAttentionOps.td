//===- LocalAttentionOps.td - local attention (L) ----------*- tablegen -*-===//
//
// Sliding-window causal attention.
// Included by SLOps.td, which defines the op classes.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_DIALECT_SL_IR_LOCALATTENTIONOPS_TD
#define SHARDLINE_DIALECT_SL_IR_LOCALATTENTIONOPS_TD

def SL_LocalAttentionOp : SL_ComputeOp<"local_attention",
    [AttrSizedOperandSegments, AllShapesMatch<["q", "result"]>, AllShapesMatch<["k", "v"]>],
    ["applyRemedy", "resolveRankFacts"], SL_Differentiable> {
  let summary = "Causal softmax attention over a sliding window of keys, with grouped KV heads";
  let description = [{
    q: [b, s, heads*d]; k, v: [b, s, kv_heads*d] -> [b, s, heads*d]. The
    query at position p reads the keys at positions [p - window + 1, p]; query
    head h reads kv head h / (heads / kv_heads); the scale is 1/sqrt(d).

    With the sequence split into C chunks, `k_halo` and `v_halo` [b, C *
    (window - 1), kv_heads*d] (from sl.halo, split like k) hold the window - 1
    tokens before each chunk: each chunk attends over its halo and its own
    keys; halo rows before position 0 are masked out.
    Rule: b, heads free (in whole kv heads); head_dim whole; s
    sequence-mixing when window > 1 (remedy: a halo of window - 1 tokens on
    k and v).
  }];
  let arguments = (ins SL_FloatTensor:$q, SL_FloatTensor:$k, SL_FloatTensor:$v,
                   Optional<SL_FloatTensor>:$k_halo, Optional<SL_FloatTensor>:$v_halo,
                   I64Attr:$heads, I64Attr:$kv_heads, I64Attr:$window);
  let results = (outs SL_FloatTensor:$result);
  let assemblyFormat = [{
    $q `,` $k `,` $v (`halo` $k_halo^ `,` $v_halo)? attr-dict `:` functional-type(operands, results)
  }];
}

def SL_LocalAttentionGradOp : SL_ComputeOp<"local_attention_grad",
    [AllShapesMatch<["q", "dy", "dq"]>, AllShapesMatch<["k", "v", "dk", "dv"]>],
    ["resolveRankFacts"]> {
  let summary = "The backward of sl.local_attention over an unsplit sequence";
  let description = [{
    q, k, v, dy (like q) -> dq, dk, dv: with P the forward's windowed
    softmax, dP = dy v^T and dS = P o (dP - rowsum(P o dP)): dq = scale dS k,
    dk = scale dS^T q, dv = P^T dy (summed over the query heads of each kv
    head); the scale is 1/sqrt(d). Rule: as sl.local_attention without
    halos (s whole when window > 1).
  }];
  let arguments = (ins SL_FloatTensor:$q, SL_FloatTensor:$k, SL_FloatTensor:$v,
                   SL_FloatTensor:$dy, I64Attr:$heads, I64Attr:$kv_heads, I64Attr:$window);
  let results = (outs SL_FloatTensor:$dq, SL_FloatTensor:$dk, SL_FloatTensor:$dv);
}

def SL_LocalAttentionGradHaloOp : SL_ComputeOp<"local_attention_grad_halo",
    [AllShapesMatch<["q", "dy", "dq"]>, AllShapesMatch<["k", "v", "dk", "dv"]>,
     AllShapesMatch<["k_halo", "v_halo", "dk_halo", "dv_halo"]>],
    ["resolveRankFacts"]> {
  let summary = "The backward of sl.local_attention over a split sequence, with its halos";
  let description = [{
    q, k, v, k_halo, v_halo, dy -> dq, dk, dv, dk_halo, dv_halo: the
    gradients of sl.local_attention with halo operands, each chunk's keys
    being its halo and its own; the halo rows' gradients (zero for rows
    before position 0) go back to their tokens through the halo's dual,
    sl.halo_add. Rule: as sl.local_attention with halos.
  }];
  let arguments = (ins SL_FloatTensor:$q, SL_FloatTensor:$k, SL_FloatTensor:$v,
                   SL_FloatTensor:$k_halo, SL_FloatTensor:$v_halo, SL_FloatTensor:$dy,
                   I64Attr:$heads, I64Attr:$kv_heads, I64Attr:$window);
  let results = (outs SL_FloatTensor:$dq, SL_FloatTensor:$dk, SL_FloatTensor:$dv,
                 SL_FloatTensor:$dk_halo, SL_FloatTensor:$dv_halo);
}

#endif
