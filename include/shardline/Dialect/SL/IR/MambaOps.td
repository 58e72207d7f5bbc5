//===- MambaOps.td - Mamba-2 (M) ---------------------------*- tablegen -*-===//
//
// The gated norm, the causal conv, the SSD scan and its correction.
// Included by SLOps.td, which defines the op classes.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_DIALECT_SL_IR_MAMBAOPS_TD
#define SHARDLINE_DIALECT_SL_IR_MAMBAOPS_TD

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

def SL_CausalConv1dOp : SL_ComputeOp<"causal_conv1d", [AllShapesMatch<["x", "result"]>],
    ["applyRemedy", "resolveRankFacts"]> {
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
    ["applyRemedy", "resolveRankFacts"]> {
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

#endif
