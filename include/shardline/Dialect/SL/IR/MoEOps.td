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
  let summary = "SwiGLU experts: down_e(silu(x gate_e) * (x up_e)) per expert row";
  let description = [{
    tokens [E, r1, ..., rn, h] (n >= 1 row dimensions: [E, b, s, h] on the
    dropless path, [E, Gb, Gs, C, h] in capacity mode), gate, up [E, h, f],
    down [E, f, h] -> the tokens' shape. Every row of expert e is one token.
    Rule: E free (expert parallel), every row dimension free (the first is
    b, the second the sequence), f contracted, h whole.
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

def SL_MoEDroplessOp : SL_ComputeOp<"moe_dropless",
    [AllShapesMatch<["x", "result"]>, AllShapesMatch<["weights", "indices"]>,
     AllShapesMatch<["gate", "up"]>], ["sentBytesPerRank"], SL_Differentiable> {
  let summary = "Dropless MoE: every routed row to its expert's owner by count, and back";
  let description = [{
    x [b, s, h], weights [b, s, k] (the router's renormalised top-k weights),
    indices [b, s, k] (i32), gate, up [E, h, f], down [E, f, h] -> [b, s, h]:
    y[t] = sum_j weights[t, j] * down_e(silu(x[t] gate_e) * (x[t] up_e)),
    e = indices[t, j]. No row is dropped and nothing is sized experts x
    tokens. `expert_axes` are the axes of the expert group, which the
    experts' weights split E over (empty when they are whole): per rank,
    the routed rows are counted per owner (expert e lives on member
    e / (E / ep) of the group in its order), the counts exchanged, then
    exactly those rows sent, each local expert run on its received rows as
    one GEMM, and the outputs sent back and combined with the weights.
    `tensor_axes` are the axes of the expert-tensor group (etp; empty when
    etp = 1), which the weights split f over (gate and up on their last
    dimension, down on its middle one): each member gathers the rows (and
    counts) the others received, runs its local experts on its f shard, and
    reduce-scatters the partial outputs back, as Megatron's alltoall
    dispatcher with expert tensor parallelism.
    Rule: b, s free (tokens), h whole; E exchanged by count over
    `expert_axes` (its remedy: the experts may be split over axes that
    also split the tokens), refused over any other axis; f whole, or split
    over exactly `tensor_axes` (the same remedy). Sends, at balanced
    routing (each rank's k x local-token rows spread evenly over the
    experts), 2 (ep - 1) / ep rows of h values and (ep - 1) x E / ep i32
    counts, and with etp > 1 2 (etp - 1) rows of h values (the gather and
    the reduce-scatter) and (etp - 1) x E / ep i32 counts; what a run sends
    depends on its routing.
  }];
  let arguments = (ins SL_FloatTensor:$x, SL_FloatTensor:$weights, SL_IndexTensor:$indices,
                   SL_FloatTensor:$gate, SL_FloatTensor:$up, SL_FloatTensor:$down,
                   StrArrayAttr:$expert_axes,
                   DefaultValuedAttr<StrArrayAttr, "{}">:$tensor_axes);
  let results = (outs SL_FloatTensor:$result);
}

//===----------------------------------------------------------------------===//
// Capacity mode (docs/dialect.md, "Capacity groups"). The tokens are cut into
// groups of `group` = [rows, positions] consecutive batch rows x sequence
// positions of the global token grid; each group sends at most `capacity` (C)
// rows to each expert, so the buffers are [E, Gb, Gs, C, h] with
// Gb = b / rows and Gs = s / positions, whatever the routing. A split of b or s
// keeps groups whole (the factors' granules are Gb and Gs).
//===----------------------------------------------------------------------===//

def SL_MoECapacitySlotsOp : SL_ComputeOp<"moe_capacity_slots",
    [AllShapesMatch<["weights", "indices", "slots"]>]> {
  let summary = "Capacity mode: the buffer row of each routed choice, or -1 when dropped";
  let description = [{
    weights [b, s, k] (the router's renormalised top-k weights), indices
    [b, s, k] -> slots [b, s, k] (i32). slots[b, s, j] is the row that choice
    j of token (b, s) takes in expert indices[b, s, j]'s buffer of its group,
    in [0, capacity), or -1 when the choice is dropped. Within a group, an
    expert's candidates are the (token, j) that chose it, ordered by position
    (tokens row-major over the group, then j). `drop_policy` "position" keeps
    the first `capacity` candidates; "probs" keeps the `capacity` with the
    largest weight (ties: the earlier position). Either way the kept rows
    take slots 0, 1, ... in position order. Not differentiable: the weights
    only pick which rows are kept. Rule: b free (granule Gb), s the
    sequence (granule Gs), k whole; nonlinear.
  }];
  let arguments = (ins SL_FloatTensor:$weights, SL_IndexTensor:$indices, I64Attr:$experts,
                   I64Attr:$capacity, DenseI64ArrayAttr:$group, StrAttr:$drop_policy);
  let results = (outs SL_IndexTensor:$slots);
}

def SL_MoEDispatchCapacityOp : SL_ComputeOp<"moe_dispatch_capacity",
    [AllShapesMatch<["indices", "slots"]>], [], SL_Differentiable> {
  let summary = "Capacity mode: dispatch of the kept rows into per-group expert buffers";
  let description = [{
    x [b, s, h], indices, slots [b, s, k] -> [experts, Gb, Gs, capacity, h]:
    result[e, gb, gs, c] = x[token] for the kept choice (token, j) of group
    (gb, gs) with indices = e and slots = c, zeros in the rows no choice took.
    Rule: b (granule Gb) on dimension 0 of x, indices, slots and dimension 1
    of the result; s, the sequence (granule Gs), on their dimension 1 and
    the result's dimension 2; h free; experts and capacity whole here (an
    all-to-all over the expert group then splits the experts); k whole.
  }];
  let arguments = (ins SL_FloatTensor:$x, SL_IndexTensor:$indices, SL_IndexTensor:$slots,
                   I64Attr:$experts, I64Attr:$capacity, DenseI64ArrayAttr:$group);
  let results = (outs SL_FloatTensor:$result);
}

def SL_MoECombineCapacityOp : SL_ComputeOp<"moe_combine_capacity",
    [AllShapesMatch<["weights", "indices", "slots"]>], [], SL_Differentiable> {
  let summary = "Capacity mode: weighted sum of each token's kept expert rows";
  let description = [{
    expert_out [E, Gb, Gs, C, h], weights, indices, slots [b, s, k] ->
    [b, s, h]: y[token] = sum over j with slots != -1 of weights[token, j] *
    expert_out[indices[token, j], gb, gs, slots[token, j]], (gb, gs) the
    token's group. A dropped choice adds nothing (the residual carries the
    token). Rule: the mirror of sl.moe_dispatch_capacity (b granule Gb, s
    the sequence with granule Gs, h free, E and C whole, k whole); linear in
    each of expert_out and weights.
  }];
  let arguments = (ins SL_FloatTensor:$expert_out, SL_FloatTensor:$weights,
                   SL_IndexTensor:$indices, SL_IndexTensor:$slots, DenseI64ArrayAttr:$group);
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
    tokens and dy have sl.moe_experts' shapes (n >= 1 row dimensions).
    Rule: as sl.moe_experts (experts free, every row dimension free, h
    whole, f contracted); nonlinear.
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
    silu'(g)), dup_e = x^T (da * silu(g)). tokens and dy have
    sl.moe_experts' shapes. Rule: experts free, every row dimension
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

def SL_MoEDroplessGradOp : SL_ComputeOp<"moe_dropless_grad",
    [AllShapesMatch<["x", "dy", "dx"]>, AllShapesMatch<["weights", "indices", "dweights"]>,
     AllShapesMatch<["gate", "up", "dgate", "dup"]>, AllShapesMatch<["down", "ddown"]>],
    ["sentBytesPerRank"]> {
  let summary = "Gradient of sl.moe_dropless, by the same exchanges";
  let description = [{
    sl.moe_dropless's operands and dy [b, s, h] -> dx [b, s, h], dweights
    [b, s, k], dgate, dup [E, h, f], ddown [E, f, h]. Each routed row's x,
    dy and weight travel to its expert's owner (counts first), which
    recomputes the expert, returns the row's dx (weighted) and its dweight
    (the expert output dotted with dy) and sums the weight gradients over
    the rows it received. Rule: as sl.moe_dropless; the weight gradients
    are pending sums over the axes that split the tokens but not the
    experts (the expert-data axes): over `expert_axes` every row already
    reached its owner, and over `tensor_axes` each member holds its own f
    shard. With etp > 1 the rows' x, dy and weights are gathered over the
    expert-tensor group and their partial dx and dweights reduce-scattered
    back. Sends, at balanced routing, (ep - 1) / ep rows of 3h + 2 values
    and the counts, and with etp > 1 (etp - 1) rows of 3h + 2 values and
    (etp - 1) x E / ep counts.
  }];
  let arguments = (ins SL_FloatTensor:$x, SL_FloatTensor:$weights, SL_IndexTensor:$indices,
                   SL_FloatTensor:$gate, SL_FloatTensor:$up, SL_FloatTensor:$down,
                   SL_FloatTensor:$dy, StrArrayAttr:$expert_axes,
                   DefaultValuedAttr<StrArrayAttr, "{}">:$tensor_axes);
  let results = (outs SL_FloatTensor:$dx, SL_FloatTensor:$dweights, SL_FloatTensor:$dgate,
                      SL_FloatTensor:$dup, SL_FloatTensor:$ddown);
}

def SL_MoEDispatchCapacityGradOp : SL_ComputeOp<"moe_dispatch_capacity_grad",
    [AllShapesMatch<["indices", "slots"]>]> {
  let summary = "Gradient of sl.moe_dispatch_capacity: each token's kept rows summed back";
  let description = [{
    dtokens [E, Gb, Gs, C, h], indices, slots [b, s, k] -> dx [b, s, h]:
    dx[token] = sum over kept j of dtokens[indices[j], gb, gs, slots[j]].
    Rule: as sl.moe_dispatch_capacity (b granule Gb, s sequence granule Gs,
    h free, E and C whole, so split experts come back by the reverse
    all-to-all); linear in dtokens.
  }];
  let arguments = (ins SL_FloatTensor:$dtokens, SL_IndexTensor:$indices, SL_IndexTensor:$slots,
                   DenseI64ArrayAttr:$group);
  let results = (outs SL_FloatTensor:$dx);
}

def SL_MoECombineCapacityGradOp : SL_ComputeOp<"moe_combine_capacity_grad",
    [AllShapesMatch<["weights", "indices", "slots"]>]> {
  let summary = "Gradient of sl.moe_combine_capacity with respect to the expert outputs";
  let description = [{
    weights, indices, slots [b, s, k], dy [b, s, h] -> dexpert_out
    [experts, Gb, Gs, capacity, h]: weights[j] * dy[token] at (indices[j],
    gb, gs, slots[j]) for each kept j, zeros elsewhere. Rule: as
    sl.moe_combine_capacity (E and C whole, so the reverse all-to-all splits
    the experts); linear in dy.
  }];
  let arguments = (ins SL_FloatTensor:$weights, SL_IndexTensor:$indices, SL_IndexTensor:$slots,
                   SL_FloatTensor:$dy, I64Attr:$experts, I64Attr:$capacity,
                   DenseI64ArrayAttr:$group);
  let results = (outs SL_FloatTensor:$dexpert_out);
}

def SL_MoECombineCapacityGradWeightsOp : SL_ComputeOp<"moe_combine_capacity_grad_weights",
    [AllShapesMatch<["indices", "slots", "dweights"]>]> {
  let summary = "Gradient of sl.moe_combine_capacity with respect to the routing weights";
  let description = [{
    expert_out [E, Gb, Gs, C, h], indices, slots [b, s, k], dy [b, s, h] ->
    dweights [b, s, k]: the dot product over h of expert_out[indices[j], gb,
    gs, slots[j]] and dy[token] for each kept j, 0 for a dropped one.
    Rule: b granule Gb, s sequence granule Gs, E, C and k whole, h
    contracted (split channels leave a pending sum); linear in each of
    expert_out and dy.
  }];
  let arguments = (ins SL_FloatTensor:$expert_out, SL_IndexTensor:$indices,
                   SL_IndexTensor:$slots, SL_FloatTensor:$dy, DenseI64ArrayAttr:$group);
  let results = (outs SL_FloatTensor:$dweights);
}

#endif
