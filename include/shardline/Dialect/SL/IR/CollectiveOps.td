//===- CollectiveOps.td - layout transitions ---------------*- tablegen -*-===//
//
// Collectives, local slices, reorders and context-parallel exchanges.
// Included by SLOps.td, which defines the op classes.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_DIALECT_SL_IR_COLLECTIVEOPS_TD
#define SHARDLINE_DIALECT_SL_IR_COLLECTIVEOPS_TD

def SL_RelayoutOp : SL_LayoutOp<"relayout"> {
  let summary = "Any change of layout, to be materialised as collectives";
  let description = [{
    Placed by sl-propagate-layouts where a consumer's rule needs another
    layout than its producer gives; sl-insert-collectives replaces each one by
    the collectives, slices and reorders that realise it.
  }];
  let arguments = (ins SL_DataTensor:$x);
}

def SL_AllGatherOp : SL_LayoutOp<"all_gather", SL_ExchangeMethods> {
  let summary = "Gathers dimension `dim` over the minor-most `axes` of its split";
  let arguments = (ins SL_DataTensor:$x, StrArrayAttr:$axes, I64Attr:$dim);
}

def SL_ReduceScatterOp : SL_LayoutOp<"reduce_scatter", SL_ExchangeMethods> {
  let summary = "Sums a pending sum over `axes` and splits dimension `dim` over them";
  let arguments = (ins SL_DataTensor:$x, StrArrayAttr:$axes, I64Attr:$dim);
}

def SL_AllReduceOp : SL_LayoutOp<"all_reduce", SL_ExchangeMethods> {
  let summary = "Sums a pending sum over `axes`";
  let arguments = (ins SL_DataTensor:$x, StrArrayAttr:$axes);
}

def SL_AllToAllOp : SL_LayoutOp<"all_to_all", SL_ExchangeMethods> {
  let summary = "Moves the split over `axes` from `concat_dim` to `split_dim`";
  let description = [{
    Before: `concat_dim`'s split ends with `axes`; after: `axes` are appended
    to `split_dim`'s split and removed from `concat_dim`'s.
  }];
  let arguments = (ins SL_DataTensor:$x, StrArrayAttr:$axes, I64Attr:$split_dim,
                   I64Attr:$concat_dim);
}

def SL_SliceOp : SL_LayoutOp<"slice", SL_CollectiveMethods> {
  let summary = "Keeps this rank's part of dimension `dim` along `axes`; no communication";
  let arguments = (ins SL_DataTensor:$x, StrArrayAttr:$axes, I64Attr:$dim);
}

def SL_ReorderOp : SL_LayoutOp<"reorder", ["sentBytesPerRank"]> {
  let summary = "Changes the chunk order (contiguous <-> zigzag) of the sequence dimension";
  let description = [{ A point-to-point permutation of chunks among the ranks that split it. }];
  let arguments = (ins SL_DataTensor:$x);
}

def SL_HaloOp : SL_Op<"halo", [Pure,
    DeclareOpInterfaceMethods<SL_SPMDOpInterface, ["resolveRankFacts", "sentBytesPerRank"]>,
    DeclareOpInterfaceMethods<SL_GradientOpInterface, ["buildGradient"]>]> {
  let summary = "The `width` tokens before each sequence chunk, from the rank that holds them";
  let description = [{
    x [b, s, c] with s split over `axes` into C chunks (C = n, or 2n in zigzag
    order) -> [b, C * width, c], split like x: entry i holds the width tokens
    that precede chunk i in sequence order (zeros before the first chunk).
  }];
  let arguments = (ins SL_FloatTensor:$x, StrArrayAttr:$axes, I64Attr:$width);
  let results = (outs SL_FloatTensor:$result);
  let assemblyFormat = "$x attr-dict `:` type($x) `->` type($result)";
  let hasVerifier = 1;
}

def SL_HaloAddOp : SL_Op<"halo_add", [Pure, AllTypesMatch<["x", "result"]>,
    DeclareOpInterfaceMethods<SL_SPMDOpInterface,
                              ["resolveRankFacts", "sentBytesPerRank", "getValueNames"]>]> {
  let summary = "The dual of sl.halo: adds each halo row back onto the token it was read from";
  let description = [{
    grad [b, C * width, c] (the gradient of an sl.halo of x, laid out like
    it) and x [b, s, c] (for its shape and layout only; its values are not
    read) -> [b, s, c] laid out like x: the sum, over every halo slot that
    read token t, of that slot's row; zero for tokens no halo reads. Each
    rank sends the rows of its halo slots back to the rank that holds their
    tokens, so it sends what sl.halo received.
  }];
  let arguments = (ins SL_FloatTensor:$grad, SL_FloatTensor:$x, StrArrayAttr:$axes,
                   I64Attr:$width);
  let results = (outs SL_FloatTensor:$result);
  let assemblyFormat = "$grad `,` $x attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def SL_ScanStateExchangeOp : SL_Op<"scan_state_exchange",
    [Pure, AllTypesMatch<["states", "result"]>,
     DeclareOpInterfaceMethods<SL_SPMDOpInterface,
                               ["resolveRankFacts", "sentBytesPerRank", "getValueNames"]>,
     DeclareOpInterfaceMethods<SL_GradientOpInterface, ["buildGradient"]>]> {
  let summary = "Combines per-chunk scan summaries into each chunk's true initial state";
  let description = [{
    states [C, ...] (final states of chunks scanned from zero) and decays
    [C, ...] (total decay per chunk, broadcast over the trailing state dims),
    chunks in sequence order and split over `axes` along dimension 0 ->
    initial states [C, ...]: init_0 = 0, init_{i+1} = decay_i * init_i +
    state_i. An all-gather of the summaries over `axes`; its size does not
    depend on the sequence length.
  }];
  let arguments = (ins SL_FloatTensor:$states, SL_FloatTensor:$decays, StrArrayAttr:$axes);
  let results = (outs SL_FloatTensor:$result);
  let assemblyFormat = "$states `,` $decays attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def SL_ScanStateExchangeGradOp : SL_Op<"scan_state_exchange_grad",
    [Pure, AllTypesMatch<["init", "dinit", "dstates"]>, AllTypesMatch<["decays", "ddecays"]>,
     DeclareOpInterfaceMethods<SL_SPMDOpInterface,
                               ["resolveRankFacts", "sentBytesPerRank", "getValueNames"]>]> {
  let summary = "The dual of sl.scan_state_exchange: each chunk's initial-state gradient "
                "flows to the summaries of the chunks before it";
  let description = [{
    decays [C, ...] (the forward's operand), init [C, ...] (the forward's
    result: each chunk's initial state) and dinit (init's cotangent), chunks
    in sequence order and split over `axes` along dimension 0 as the
    forward's -> dstates (the cotangent of the forward's states, shaped and
    laid out like init) and ddecays (like decays). From the last chunk to
    the first, with g_C = 0: dstates_i = g_{i+1}, ddecays_i = the sum over
    the state entries a decay scales of g_{i+1} * init_i, and g_i = dinit_i
    + decays_i * g_{i+1}. An all-gather of every chunk's dinit and decay
    over `axes` (the forward's bytes: its size does not depend on the
    sequence length); each rank then runs the reverse recurrence and keeps
    its own chunks.
  }];
  let arguments = (ins SL_FloatTensor:$decays, SL_FloatTensor:$init, SL_FloatTensor:$dinit,
                   StrArrayAttr:$axes);
  let results = (outs SL_FloatTensor:$dstates, SL_FloatTensor:$ddecays);
  let assemblyFormat = [{
    $decays `,` $init `,` $dinit attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

#endif
