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

//===----------------------------------------------------------------------===//
// Backward (docs/dialect.md, "Backward and optimizer ops")
//===----------------------------------------------------------------------===//

class SL_RGLRUScanGradBase<string mnemonic, list<Trait> traits = []>
    : SL_ComputeOp<mnemonic, traits # [AllShapesMatch<["x", "dy"]>,
                                       AllShapesMatch<["wa", "ba", "wx", "bx", "lambda"]>]> {
  let arguments = (ins SL_FloatTensor:$x, SL_FloatTensor:$wa, SL_FloatTensor:$ba,
                   SL_FloatTensor:$wx, SL_FloatTensor:$bx, SL_FloatTensor:$lambda,
                   SL_FloatTensor:$dy);
}

def SL_RGLRUScanGradOp : SL_RGLRUScanGradBase<"rglru_scan_grad", [AllShapesMatch<["x", "dx"]>]> {
  let summary = "Gradient of sl.rglru_scan (whole sequences, no state in) with respect to x";
  let description = [{
    The scan recomputed, then the cotangent g_t of each state carried back
    through the decays (g_t = dy_t + a_{t+1} g_{t+1}); dx sums what reaches x
    directly (g_t sqrt(1 - a_t^2) i_t) and through both gates. Rule: b, w
    free; the sequence s sequence-mixing with no remedy (split tokens are
    gathered first); nonlinear.
  }];
  let results = (outs SL_FloatTensor:$dx);
}

def SL_RGLRUScanGradWeightsOp : SL_RGLRUScanGradBase<"rglru_scan_grad_weights",
    [AllShapesMatch<["wa", "dwa", "dba", "dwx", "dbx", "dlambda"]>]> {
  let summary = "Gradient of sl.rglru_scan with respect to its gate parameters and lambda";
  let description = [{
    As sl.rglru_scan_grad, the per-channel gradients summed over the tokens:
    dwa, dba, dwx, dbx and dlambda [w]. Rule: b contracted (a split batch
    leaves pending sums), s sequence-mixing with no remedy, w free;
    nonlinear.
  }];
  let results = (outs SL_FloatTensor:$dwa, SL_FloatTensor:$dba, SL_FloatTensor:$dwx,
                      SL_FloatTensor:$dbx, SL_FloatTensor:$dlambda);
}

#endif
