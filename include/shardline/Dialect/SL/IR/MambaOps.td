//===- MambaOps.td - Mamba-2 (M) ---------------------------*- tablegen -*-===//
//
// The gated norm, the causal conv, the SSD scan and its correction, and the
// backward ops of the first three.
// Included by SLOps.td, which defines the op classes.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_DIALECT_SL_IR_MAMBAOPS_TD
#define SHARDLINE_DIALECT_SL_IR_MAMBAOPS_TD

def SL_GatedRMSNormOp : SL_ComputeOp<"gated_rms_norm",
    [AllShapesMatch<["y", "z", "result"]>], [], SL_Differentiable> {
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
    ["applyRemedy", "resolveRankFacts"], SL_Differentiable> {
  let summary = "Depthwise causal convolution along the sequence";
  let description = [{
    x: [b, s, c], weight: [c, width], bias: [c]. y[t] = bias + sum_j
    weight[j] * x[t - width + 1 + j]. Rule: b, c free; s sequence-mixing
    (remedy: the optional `halo` operand from sl.halo supplies the width-1
    tokens that precede each chunk); free when width is 1 (no earlier token
    is read, so no halo).
  }];
  let arguments = (ins SL_FloatTensor:$x, SL_FloatTensor:$weight, SL_FloatTensor:$bias,
                   Optional<SL_FloatTensor>:$halo);
  let results = (outs SL_FloatTensor:$result);
  let assemblyFormat = [{
    $x `,` $weight `,` $bias (`halo` $halo^)? attr-dict `:` functional-type(operands, results)
  }];
}

def SL_SSDScanOp : SL_ComputeOp<"ssd_scan", [AllShapesMatch<["x", "y"]>],
    ["applyRemedy", "resolveRankFacts"], SL_Differentiable> {
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
    ["resolveRankFacts"], SL_Differentiable> {
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

//===----------------------------------------------------------------------===//
// Backward
//===----------------------------------------------------------------------===//

def SL_GatedRMSNormGradOp : SL_ComputeOp<"gated_rms_norm_grad",
    [AllShapesMatch<["y", "z", "dresult", "dy", "dz"]>]> {
  let summary = "Gradient of sl.gated_rms_norm with respect to y and z";
  let description = [{
    Per token and group, with r = 1/sqrt(mean y^2 + eps) and
    u = dresult * weight * silu(z): dy = r u - y r^3 mean(y u),
    dz = dresult * y * r * weight * silu'(z). Rule: as sl.gated_rms_norm
    (b, s free; c free in whole groups); nonlinear.
  }];
  let arguments = (ins SL_FloatTensor:$y, SL_FloatTensor:$z, SL_FloatTensor:$weight,
                   SL_FloatTensor:$dresult, I64Attr:$groups,
                   DefaultValuedAttr<F64Attr, "1.0e-5">:$eps);
  let results = (outs SL_FloatTensor:$dy, SL_FloatTensor:$dz);
}

def SL_GatedRMSNormGradWeightOp : SL_ComputeOp<"gated_rms_norm_grad_weight",
    [AllShapesMatch<["y", "z", "dresult"]>]> {
  let summary = "Gradient of sl.gated_rms_norm with respect to its weight";
  let description = [{
    dweight[c] = sum over tokens of dresult * y * r * silu(z), r as in
    sl.gated_rms_norm_grad. Rule: b, s contracted (split tokens leave a
    pending sum); c free in whole groups; nonlinear.
  }];
  let arguments = (ins SL_FloatTensor:$y, SL_FloatTensor:$z, SL_FloatTensor:$dresult,
                   I64Attr:$groups, DefaultValuedAttr<F64Attr, "1.0e-5">:$eps);
  let results = (outs SL_FloatTensor:$dweight);
}

def SL_CausalConv1dGradOp : SL_ComputeOp<"causal_conv1d_grad",
    [AllShapesMatch<["dy", "dx"]>]> {
  let summary = "Gradient of sl.causal_conv1d with respect to x and its halo";
  let description = [{
    dx[t] = sum_j weight[j] * dy[t + width - 1 - j] over the outputs t + width
    - 1 - j inside the sequence (or, with a halo, inside the chunk): the
    conv's transpose, anti-causal. With the forward's `halo` operand (read
    for its shape and layout only) the sequence is taken chunk by chunk and
    dhalo, shaped and laid out like the halo, holds the gradient of the
    width - 1 rows before each chunk, which sl.halo_add takes back to their
    tokens. Rule: b, c free; s sequence-mixing, split only with the halo
    remedy over the halo's axes (else whole, as the forward's without a
    halo; free at width 1); the halo on its own sequence factor; linear in
    dy.
  }];
  let arguments = (ins SL_FloatTensor:$weight, SL_FloatTensor:$dy,
                   Optional<SL_FloatTensor>:$halo);
  let results = (outs SL_FloatTensor:$dx, Optional<SL_FloatTensor>:$dhalo);
  let assemblyFormat = [{
    $weight `,` $dy (`halo` $halo^)? attr-dict `:` functional-type(operands, results)
  }];
}

def SL_CausalConv1dGradWeightOp : SL_ComputeOp<"causal_conv1d_grad_weight",
    [AllShapesMatch<["x", "dy"]>]> {
  let summary = "Gradient of sl.causal_conv1d with respect to its weight and bias";
  let description = [{
    dweight[c, j] = sum over b, t of dy[b, t, c] * x[b, t - width + 1 + j, c]
    (zero before the sequence; with the forward's `halo`, the halo rows
    before each chunk), dbias[c] = sum over b, t of dy[b, t, c]. `width` is
    dweight's second dimension. Rule: b contracted (a split batch leaves a
    pending sum); s sequence-mixing with no remedy (whole) without a halo,
    contracted with one or at width 1 (each rank sums over its chunks); c
    free; width whole.
  }];
  let arguments = (ins SL_FloatTensor:$x, SL_FloatTensor:$dy, Optional<SL_FloatTensor>:$halo);
  let results = (outs SL_FloatTensor:$dweight, SL_FloatTensor:$dbias);
  let assemblyFormat = [{
    $x `,` $dy (`halo` $halo^)? attr-dict `:` functional-type(operands, results)
  }];
}

class SL_SSDScanGradOp<string mnemonic, string summ, string what, string rule, dag outs>
    : SL_ComputeOp<mnemonic, [AttrSizedOperandSegments, AllShapesMatch<["x", "dy"]>]> {
  let summary = summ;
  let description = [{
    The backward of sl.ssd_scan for the cotangent dy of its result y and,
    where the loss reads them, dstate and ddecay of its final state and total
    decay (absent: zero). The state's gradient runs from the end of each
    chunk to its start (from dstate, or zero); the kernel recomputes the
    per-step states from checkpoints rather than reading them from the
    forward. Operands and attributes as sl.ssd_scan (state_in and chunk_axes
    included: with chunk_axes each chunk is differentiated from its own
    initial state, zero or state_in's entry, and dstate and ddecay have a
    leading chunk dimension as the forward's summaries), then dy.
  }] # what # rule;
  let arguments = (ins SL_FloatTensor:$x, SL_FloatTensor:$dt, SL_FloatTensor:$a_log,
                   SL_FloatTensor:$B, SL_FloatTensor:$C, SL_FloatTensor:$d,
                   SL_FloatTensor:$dt_bias, SL_FloatTensor:$dy,
                   Optional<SL_FloatTensor>:$state_in, Optional<SL_FloatTensor>:$dstate,
                   Optional<SL_FloatTensor>:$ddecay, I64Attr:$heads, I64Attr:$groups,
                   DefaultValuedAttr<StrArrayAttr, "{}">:$chunk_axes);
  let results = outs;
  let assemblyFormat = [{
    $x `,` $dt `,` $a_log `,` $B `,` $C `,` $d `,` $dt_bias `,` $dy
    (`state_in` $state_in^)? (`dstate` $dstate^)? (`ddecay` $ddecay^)?
    attr-dict `:` functional-type(operands, results)
  }];
}

def SL_SSDScanGradOp : SL_SSDScanGradOp<"ssd_scan_grad",
    "Gradient of sl.ssd_scan with respect to its token inputs", [{
    Results: the cotangents of x, dt (the raw dt, before dt_bias and
    softplus), B and C (each summed over the heads of its group) and, where
    state_in is given, of state_in.
  }], [{
    Rule: as sl.ssd_scan (b free; heads and groups free in whole groups; p,
    n whole) with s sequence-mixing: split only over chunk_axes (state
    passing; dstate, ddecay and state_in's chunks with it), else whole.
  }], (outs SL_FloatTensor:$dx, SL_FloatTensor:$ddt, SL_FloatTensor:$dB,
       SL_FloatTensor:$dC, Optional<SL_FloatTensor>:$dstate_in)>;

def SL_SSDScanGradParamsOp : SL_SSDScanGradOp<"ssd_scan_grad_params",
    "Gradient of sl.ssd_scan with respect to its per-head parameters", [{
    Results [heads]: the cotangents of a_log, d and dt_bias, summed over the
    tokens.
  }], [{
    Rule: as sl.ssd_scan_grad but b contracted (a split batch leaves a
    pending sum), and with chunk_axes s contracted too (each rank sums over
    its own chunks); heads free in whole groups.
  }], (outs SL_FloatTensor:$da_log, SL_FloatTensor:$dd, SL_FloatTensor:$ddt_bias)>;

class SL_SSDCorrectGradOp<string mnemonic, string summ, string what, string rule, dag outs>
    : SL_ComputeOp<mnemonic> {
  let summary = summ;
  let description = [{
    The backward of sl.ssd_correct for the cotangent dy of its result (y0's
    cotangent is dy itself). Per chunk, with f_t the running product of the
    decays a_tau = exp(dt'_tau A) from the chunk's start: dinit = sum_t f_t
    dy_t C_t^T, dC_t = f_t dy_t^T init (summed over the heads of a group),
    and the decay of token t scales every later output of its chunk, so
    d(dt'_t A) = sum_{u>=t} f_u dy_u . (init C_u). Operands and attributes as
    sl.ssd_correct without y0, then dy.
  }] # what # rule;
  let arguments = (ins SL_FloatTensor:$init, SL_FloatTensor:$C, SL_FloatTensor:$dt,
                   SL_FloatTensor:$a_log, SL_FloatTensor:$dt_bias, SL_FloatTensor:$dy,
                   I64Attr:$heads, I64Attr:$groups, StrArrayAttr:$chunk_axes);
  let results = outs;
}

def SL_SSDCorrectGradOp : SL_SSDCorrectGradOp<"ssd_correct_grad",
    "Gradient of sl.ssd_correct with respect to init, C and dt", [{
    Results: the cotangents of init [chunks, b, heads, p, n], C and dt (the
    raw dt, before dt_bias and softplus).
  }], [{
    Rule: as sl.ssd_correct (b free; heads and groups free in whole groups;
    the sequence split only over chunk_axes, init's chunks with it).
  }], (outs SL_FloatTensor:$dinit, SL_FloatTensor:$dC, SL_FloatTensor:$ddt)>;

def SL_SSDCorrectGradParamsOp : SL_SSDCorrectGradOp<"ssd_correct_grad_params",
    "Gradient of sl.ssd_correct with respect to its per-head parameters", [{
    Results [heads]: the cotangents of a_log and dt_bias, summed over the
    tokens.
  }], [{
    Rule: as sl.ssd_correct_grad but b and s contracted (a split batch or
    sequence leaves a pending sum); heads free in whole groups.
  }], (outs SL_FloatTensor:$da_log, SL_FloatTensor:$ddt_bias)>;

#endif
