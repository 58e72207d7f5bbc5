//===- RecurrentOps.td - RG-LRU (R) ------------------------*- tablegen -*-===//
//
// The RG-LRU scan and its correction.
// Included by SLOps.td, which defines the op classes.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_DIALECT_SL_IR_RECURRENTOPS_TD
#define SHARDLINE_DIALECT_SL_IR_RECURRENTOPS_TD

def SL_RGLRUScanOp : SL_ComputeOp<"rglru_scan", [AllShapesMatch<["x", "y"]>],
    ["applyRemedy", "resolveRankFacts"], SL_Differentiable> {
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
    [AllShapesMatch<["y0", "x", "result"]>], ["resolveRankFacts"], SL_Differentiable> {
  let summary = "Adds the contribution of each chunk's true initial state to an RG-LRU scan";
  let description = [{
    y_t = y0_t + (prod_{tau<=t in chunk} a_tau) init, with init [C, b, w].
  }];
  let arguments = (ins SL_FloatTensor:$y0, SL_FloatTensor:$init, SL_FloatTensor:$x,
                   SL_FloatTensor:$wa, SL_FloatTensor:$ba, SL_FloatTensor:$lambda,
                   StrArrayAttr:$chunk_axes);
  let results = (outs SL_FloatTensor:$result);
}

//===----------------------------------------------------------------------===//
// Backward (docs/dialect.md, "Backward and optimizer ops")
//===----------------------------------------------------------------------===//

class SL_RGLRUScanGradBase<string mnemonic, list<Trait> traits = []>
    : SL_ComputeOp<mnemonic, traits # [AttrSizedOperandSegments, AllShapesMatch<["x", "dy"]>,
                                       AllShapesMatch<["wa", "ba", "wx", "bx", "lambda"]>]> {
  let arguments = (ins SL_FloatTensor:$x, SL_FloatTensor:$wa, SL_FloatTensor:$ba,
                   SL_FloatTensor:$wx, SL_FloatTensor:$bx, SL_FloatTensor:$lambda,
                   Optional<SL_FloatTensor>:$state_in, SL_FloatTensor:$dy,
                   Optional<SL_FloatTensor>:$dstate, Optional<SL_FloatTensor>:$ddecay,
                   DefaultValuedAttr<StrArrayAttr, "{}">:$chunk_axes);
  let assemblyFormat = [{
    $x `,` $wa `,` $ba `,` $wx `,` $bx `,` $lambda (`state_in` $state_in^)? `,` $dy
    (`dstate` $dstate^)? (`ddecay` $ddecay^)? attr-dict `:` functional-type(operands, results)
  }];
}

def SL_RGLRUScanGradOp : SL_RGLRUScanGradBase<"rglru_scan_grad", [AllShapesMatch<["x", "dx"]>]> {
  let summary = "Gradient of sl.rglru_scan with respect to x (and its initial state)";
  let description = [{
    The scan recomputed, then the cotangent g_t of each state carried back
    through the decays (g_t = dy_t + a_{t+1} g_{t+1}, starting from dstate,
    the cotangent of the final state); dx sums what reaches x directly
    (g_t sqrt(1 - a_t^2) i_t) and through both gates, and ddecay (the total
    decay's cotangent) reaches every decay. Operands as sl.rglru_scan, then
    dy and the optional dstate and ddecay, shaped like the scan's state and
    decay; with `chunk_axes` every chunk of the split sequence is
    differentiated as the forward scanned it, from its state_in (or zero)
    with its own summaries' cotangents. Results: dx and, exactly when
    state_in is given, dstate_in (a_0 g_0). Rule: b, w free; s
    sequence-mixing (remedy: state passing over chunk_axes; unchunked, the
    sequence is whole); nonlinear.
  }];
  let results = (outs SL_FloatTensor:$dx, Optional<SL_FloatTensor>:$dstate_in);
}

def SL_RGLRUScanGradWeightsOp : SL_RGLRUScanGradBase<"rglru_scan_grad_weights",
    [AllShapesMatch<["wa", "dwa", "dba", "dwx", "dbx", "dlambda"]>]> {
  let summary = "Gradient of sl.rglru_scan with respect to its gate parameters and lambda";
  let description = [{
    As sl.rglru_scan_grad, the per-channel gradients summed over the tokens:
    dwa, dba, dwx, dbx and dlambda [w]. Rule: b contracted (a split batch
    leaves pending sums); s sequence-mixing as sl.rglru_scan_grad's, and
    contracted once chunked (each rank sums over its own chunks); w free;
    nonlinear.
  }];
  let results = (outs SL_FloatTensor:$dwa, SL_FloatTensor:$dba, SL_FloatTensor:$dwx,
                      SL_FloatTensor:$dbx, SL_FloatTensor:$dlambda);
}

class SL_RGLRUCorrectGradOp<string mnemonic, string summ, string what, dag outs>
    : SL_ComputeOp<mnemonic, [AllShapesMatch<["x", "dy"]>,
                              AllShapesMatch<["wa", "ba", "lambda"]>]> {
  let summary = summ;
  let description = [{
    The backward of sl.rglru_correct for the cotangent dy of its result
    (y0's cotangent is dy itself). Per chunk, with F_t the running product of
    the decays a_tau from the chunk's start: dinit = sum_t F_t dy_t, and the
    decay of token t scales every later output of its chunk, so d log a_t =
    sum_{u>=t} F_u init dy_u, which reaches x, wa, ba and lambda through the
    gate r = sigmoid(wa x + ba) (log a = 8 r log sigmoid(lambda)). Operands
    and attributes as sl.rglru_correct without y0, then dy.
  }] # what;
  let arguments = (ins SL_FloatTensor:$init, SL_FloatTensor:$x, SL_FloatTensor:$wa,
                   SL_FloatTensor:$ba, SL_FloatTensor:$lambda, SL_FloatTensor:$dy,
                   StrArrayAttr:$chunk_axes);
  let results = outs;
}

def SL_RGLRUCorrectGradOp : SL_RGLRUCorrectGradOp<"rglru_correct_grad",
    "Gradient of sl.rglru_correct with respect to init and x", [{
    Results: dinit [chunks, b, w] and dx [b, s, w]. Rule: as
    sl.rglru_correct (b, w free; the sequence split only over chunk_axes,
    init's chunks with it); nonlinear.
  }], (outs SL_FloatTensor:$dinit, SL_FloatTensor:$dx)>;

def SL_RGLRUCorrectGradParamsOp : SL_RGLRUCorrectGradOp<"rglru_correct_grad_params",
    "Gradient of sl.rglru_correct with respect to wa, ba and lambda", [{
    Results [w]: dwa, dba and dlambda, summed over the tokens. Rule: as
    sl.rglru_correct_grad but b and s contracted (a split batch or sequence
    leaves pending sums); nonlinear.
  }], (outs SL_FloatTensor:$dwa, SL_FloatTensor:$dba, SL_FloatTensor:$dlambda)>;

#endif
