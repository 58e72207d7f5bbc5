//===- MoEOps.td - mixture of experts (E) ------------------*- tablegen -*-===//
//
// Router, dispatch, experts and combine.
// Included by SLOps.td, which defines the op classes.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_DIALECT_SL_IR_MOEOPS_TD
#define SHARDLINE_DIALECT_SL_IR_MOEOPS_TD

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

#endif
