//===- RecurrentOps.td - RG-LRU (R) ------------------------*- tablegen -*-===//
//
// The RG-LRU scan and its correction.
// Included by SLOps.td, which defines the op classes.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_DIALECT_SL_IR_RECURRENTOPS_TD
#define SHARDLINE_DIALECT_SL_IR_RECURRENTOPS_TD

def SL_RGLRUScanOp : SL_ComputeOp<"rglru_scan", [AllShapesMatch<["x", "y"]>],
    ["applyRemedy", "resolveRankFacts"]> {
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

#endif
