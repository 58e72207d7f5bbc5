//===- MoEOps.td - mixture of experts (E) ------------------*- tablegen -*-===//
//
// Router, dispatch, experts and combine.
// Included by SLOps.td, which defines the op classes.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_DIALECT_SL_IR_MOEOPS_TD
#define SHARDLINE_DIALECT_SL_IR_MOEOPS_TD

def SL_RouterTopKOp : SL_ComputeOp<"router_topk", [], [], SL_Differentiable> {
  let summary = "MoE router: softmax over experts, top-k, renormalised";
  let description = [{
    logits [b, s, experts] -> weights [b, s, k] (f32, summing to one) and
    expert indices [b, s, k] (i32, by descending probability, ties to the
    lower index). Rule: b, s free; experts whole.
  }];
  let arguments = (ins SL_FloatTensor:$logits, I64Attr:$k);
  let results = (outs SL_FloatTensor:$weights, SL_IndexTensor:$indices);
}

def SL_MoEDispatchOp : SL_ComputeOp<"moe_dispatch", [], [], SL_Differentiable> {
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
    [AllShapesMatch<["gate", "up"]>, AllShapesMatch<["tokens", "result"]>], [],
    SL_Differentiable> {
  let summary = "SwiGLU experts: down_e(silu(x gate_e) * (x up_e)) per expert slot";
  let description = [{
    tokens [E, b, s, h], gate, up [E, h, f], down [E, f, h] -> [E, b, s, h].
    Rule: E free (expert parallel), b, s free, f contracted, h whole.
  }];
  let arguments = (ins SL_FloatTensor:$tokens, SL_FloatTensor:$gate, SL_FloatTensor:$up,
                   SL_FloatTensor:$down);
  let results = (outs SL_FloatTensor:$result);
}

def SL_MoECombineOp : SL_ComputeOp<"moe_combine", [], [], SL_Differentiable> {
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

//===----------------------------------------------------------------------===//
// Backward (docs/dialect.md, "Backward and optimizer ops"). Each keeps its
// forward op's factors, the experts dimension included, so that under expert
// parallelism the gradients travel by the reverse all-to-alls.
//===----------------------------------------------------------------------===//

def SL_RouterTopKGradOp : SL_ComputeOp<"router_topk_grad",
    [AllShapesMatch<["weights", "indices", "dweights"]>]> {
  let summary = "Gradient of sl.router_topk with respect to the logits";
  let description = [{
    weights, indices, dweights [b, s, k] -> dlogits [b, s, experts]. The
    renormalised top-k weights are the softmax over the chosen logits, so
    with c = sum_j weights[j] * dweights[j]:
    dlogits[indices[j]] = weights[j] * (dweights[j] - c), and zero for the
    experts not chosen (the choice itself is piecewise constant).
    Rule: b, s free; k and experts whole; nonlinear.
  }];
  let arguments = (ins SL_FloatTensor:$weights, SL_IndexTensor:$indices,
                   SL_FloatTensor:$dweights);
  let results = (outs SL_FloatTensor:$dlogits);
}

def SL_MoEDispatchGradOp : SL_ComputeOp<"moe_dispatch_grad"> {
  let summary = "Gradient of sl.moe_dispatch: each token's rows summed back";
  let description = [{
    dtokens [experts, b, s, h], indices [b, s, k] -> dx [b, s, h]:
    dx[b, s] = sum_j dtokens[indices[b, s, j], b, s]. Rule: as
    sl.moe_dispatch (b, s, h free; experts whole, so split experts are
    brought back by the reverse all-to-all); linear in dtokens.
  }];
  let arguments = (ins SL_FloatTensor:$dtokens, SL_IndexTensor:$indices);
  let results = (outs SL_FloatTensor:$dx);
}

def SL_MoEExpertsGradOp : SL_ComputeOp<"moe_experts_grad",
    [AllShapesMatch<["gate", "up"]>, AllShapesMatch<["tokens", "dy", "dtokens"]>]> {
  let summary = "Gradient of sl.moe_experts with respect to the dispatched tokens";
  let description = [{
    Per expert e and row x, with g = x gate_e, u = x up_e, a = silu(g) * u
    and da = dy down_e^T (the forward recomputed):
    dtokens = (da * u * silu'(g)) gate_e^T + (da * silu(g)) up_e^T.
    Rule: as sl.moe_experts (experts free, b, s free, h whole, f
    contracted); nonlinear.
  }];
  let arguments = (ins SL_FloatTensor:$tokens, SL_FloatTensor:$gate, SL_FloatTensor:$up,
                   SL_FloatTensor:$down, SL_FloatTensor:$dy);
  let results = (outs SL_FloatTensor:$dtokens);
}

def SL_MoEExpertsGradWeightsOp : SL_ComputeOp<"moe_experts_grad_weights",
    [AllShapesMatch<["gate", "up", "dgate", "dup"]>, AllShapesMatch<["down", "ddown"]>,
     AllShapesMatch<["tokens", "dy"]>]> {
  let summary = "Gradient of sl.moe_experts with respect to the experts' weights";
  let description = [{
    With g, u, a and da as in sl.moe_experts_grad, summed over the rows
    (tokens) of each expert: ddown_e = a^T dy, dgate_e = x^T (da * u *
    silu'(g)), dup_e = x^T (da * silu(g)). Rule: experts free, b, s
    contracted (split tokens leave pending sums), h whole, f free;
    nonlinear.
  }];
  let arguments = (ins SL_FloatTensor:$tokens, SL_FloatTensor:$gate, SL_FloatTensor:$up,
                   SL_FloatTensor:$down, SL_FloatTensor:$dy);
  let results = (outs SL_FloatTensor:$dgate, SL_FloatTensor:$dup, SL_FloatTensor:$ddown);
}

def SL_MoECombineGradOp : SL_ComputeOp<"moe_combine_grad",
    [AllShapesMatch<["weights", "indices"]>]> {
  let summary = "Gradient of sl.moe_combine with respect to the expert outputs";
  let description = [{
    weights, indices [b, s, k], dy [b, s, h] -> dexpert_out [experts, b, s,
    h]: dexpert_out[indices[b, s, j], b, s] = weights[b, s, j] * dy[b, s],
    zero in the rows no slot chose. Rule: as sl.moe_combine (b, s, h free;
    experts whole, so the reverse all-to-all splits them); linear in each
    operand.
  }];
  let arguments = (ins SL_FloatTensor:$weights, SL_IndexTensor:$indices, SL_FloatTensor:$dy);
  let results = (outs SL_FloatTensor:$dexpert_out);
}

def SL_MoECombineGradWeightsOp : SL_ComputeOp<"moe_combine_grad_weights",
    [AllShapesMatch<["indices", "dweights"]>]> {
  let summary = "Gradient of sl.moe_combine with respect to the routing weights";
  let description = [{
    expert_out [experts, b, s, h], indices [b, s, k], dy [b, s, h] ->
    dweights [b, s, k]: dweights[b, s, j] = sum_h expert_out[indices[b, s,
    j], b, s, h] * dy[b, s, h]. Rule: b, s free, experts and k whole, h
    contracted (split channels leave a pending sum); linear in each
    operand.
  }];
  let arguments = (ins SL_FloatTensor:$expert_out, SL_IndexTensor:$indices, SL_FloatTensor:$dy);
  let results = (outs SL_FloatTensor:$dweights);
}

#endif
