//===- Passes.td - sl passes ------------------------------*- tablegen -*-===//
//
// Each pass's description is its documentation (docs/passes.md shows each on
// an example that is also a lit test).
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_DIALECT_SL_TRANSFORMS_PASSES_TD
#define SHARDLINE_DIALECT_SL_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def SLChooseCPComm : Pass<"sl-choose-cp-comm", "::mlir::ModuleOp"> {
  let summary = "Choose ring, allgather or a2a context parallelism per attention layer";
  let description = [{
    Runs when the module attribute `sl.cp_comm` is `auto` (otherwise it does
    nothing). For every `sl.attention` it computes the layer's local shapes
    from the mesh (cp splits the sequence, tp the heads) and the cost of each
    exchange on the machine (docs/cp-comm.md): ring overlaps the cp-1 K,V
    passes with the attention compute and keeps two K,V blocks resident;
    allgather gathers K and V in one collective before computing and keeps all
    of them resident; a2a moves q, k, v and the output between sequence and
    heads in four all-to-alls and needs kv_heads divisible by tp*cp. An
    exchange whose resident K,V exceed 10% of the GPU memory is infeasible.
    The cheapest feasible one is set as the op's `sl.cp_comm` attribute with a
    remark giving every option's time, bytes and memory; the module attribute
    becomes the most common choice. The cp group spans nodes when
    cp*tp > gpus_per_node (ranks are numbered with tp fastest, then cp).
  }];
  let options = [
    Option<"machineFile", "machine", "std::string", /*default=*/"\"\"",
           "Machine description (JSON, see examples/machines); default: 8xH100">,
  ];
}

def SLPropagateLayouts : Pass<"sl-propagate-layouts", "::mlir::ModuleOp"> {
  let summary = "Assign a layout to every value from the per-op sharding rules";
  let description = [{
    Walks every function in program order and gives each op's operands the
    layouts its sharding rule accepts, deriving the results' layouts from the
    rule. It never looks at which block an op belongs to; the choices follow
    from the rules and the strategy:

    - Weights keep the user's layouts; an activation that splits a factor
      over an axis a weight already uses for another factor gives that axis
      up (SP's all-gather before a column-parallel linear).
    - Among activations, the most-split layout of a factor wins, so data stay
      distributed (the residual stream stays split over (cp, tp)).
    - A pending sum meets an op that is not linear in it: with sequence
      parallelism it is reduce-scattered onto the sequence dimension,
      otherwise all-reduced.
    - Sequence-mixing factors get their family's remedy: attention keys by
      `cp_comm` (ring: `sl.ring_attention`; allgather: K and V gathered;
      a2a: sequence<->heads all-to-all), causal conv1d a `sl.halo` operand,
      scans `chunk_axes` with `sl.scan_state_exchange` and a correction,
      cross-entropy `vocab_axes`.
    - Function results that are pending sums are all-reduced.

    Every change of layout is an `sl.relayout` op carrying a `reason`; one
    relayout of a value to a layout is shared by all its consumers. The
    strategy comes from the module attributes `sl.sequence_parallel` and
    `sl.cp_comm` (set by the importer), or from the options.
  }];
  let options = [
    Option<"sequenceParallel", "sequence-parallel", "::mlir::sl::SequenceParallelOption",
           /*default=*/"::mlir::sl::SequenceParallelOption::Module",
           "Sequence parallelism",
           [{::llvm::cl::values(
             clEnumValN(::mlir::sl::SequenceParallelOption::Module, "module",
                        "read the module attribute sl.sequence_parallel"),
             clEnumValN(::mlir::sl::SequenceParallelOption::On, "true", "on"),
             clEnumValN(::mlir::sl::SequenceParallelOption::Off, "false", "off"))}]>,
    Option<"cpComm", "cp-comm", "::mlir::sl::CPCommOption",
           /*default=*/"::mlir::sl::CPCommOption::Module",
           "Attention under context parallelism",
           [{::llvm::cl::values(
             clEnumValN(::mlir::sl::CPCommOption::Module, "module",
                        "read the module attribute sl.cp_comm (ring when absent)"),
             clEnumValN(::mlir::sl::CPCommOption::Ring, "ring",
                        "K and V circulate around the cp ring (sl.ring_attention)"),
             clEnumValN(::mlir::sl::CPCommOption::AllGather, "allgather",
                        "K and V are all-gathered over cp"),
             clEnumValN(::mlir::sl::CPCommOption::A2A, "a2a",
                        "q, k and v trade the sequence split for the heads (all-to-all)"),
             clEnumValN(::mlir::sl::CPCommOption::Auto, "auto",
                        "refused: sl-choose-cp-comm resolves auto per layer first"))}]>,
  ];
}

def SLInsertCollectives : Pass<"sl-insert-collectives", "::mlir::ModuleOp"> {
  let summary = "Materialise every layout transition as explicit collectives";
  let description = [{
    Replaces each `sl.relayout` by the sequence of layout-transition ops that
    realises it: pending sums are reduced first (`sl.reduce_scatter` when the
    target splits a dimension over the reduced axes, else `sl.all_reduce`),
    axes that move between dimensions become `sl.all_to_all`, axes that leave
    a dimension `sl.all_gather`, chunk-order changes `sl.reorder`, and axes
    that join a dimension `sl.slice`. Each new op keeps the relayout's
    `reason`.
  }];
}

def SLAutodiff : Pass<"sl-autodiff", "::mlir::ModuleOp"> {
  let summary = "Append the backward program, the gradient norm and AdamW to the function";
  let description = [{
    Runs on the global view once every value has its layout and the
    forward's collectives are in place (after sl-insert-collectives). From
    the function's cross-entropy loss it appends the gradient of every
    parameter (the backward ops of docs/dialect.md, "Backward and optimizer
    ops"), each with the layouts its sharding rule derives; the sum of the
    squares of all gradients (global-norm clipping); and one `sl.adamw` per
    parameter, whose moments are new parameters `<name>.adam_m` and
    `<name>.adam_v`. The gradients become function results named
    `grad.<name>`.

    A layout transition is the identity on the global value, so its gradient
    is too: the contributions to a value's gradient are summed in the layouts
    they were made in and taken, by the cheapest chain of collectives, to the
    layout the backward op that reads them needs. The duals follow (an
    all-gather's gradient is reduce-scattered when the ops after it computed
    different parts on each rank, sliced when they computed the same); and a
    parameter's gradient, a pending sum over the axes that split the tokens it
    was applied to, is reduced onto the parameter's own layout: gradient
    synchronisation comes from the graph, not from flags.

    What the backward reads of the forward stays saved, except an
    all-gather's result: by default (Megatron's) the backward gathers it
    again from the saved shard (marked `sl.recompute`); with
    `save-gathered` it keeps the gathered tensor (fewer bytes, more memory).
    Every op the pass adds carries `sl.backward`.
  }];
  let options = [
    Option<"saveGathered", "save-gathered", "bool", /*default=*/"false",
           "Keep all-gathered forward values for the backward instead of gathering "
           "them again (Megatron's default re-gathers)">,
    Option<"gradReduceInBf16", "grad-reduce-in-bf16", "bool", /*default=*/"false",
           "Keep a bf16 parameter's gradient bf16, as Megatron's --grad-reduce-in-bf16: "
           "its reductions move half the bytes (by default the gradients of bf16 "
           "parameters are f32, as Megatron accumulates and reduces them)">,
  ];
}

def SLElideGathers : Pass<"sl-elide-gathers", "::mlir::ModuleOp"> {
  let summary = "Re-place layout transitions where they send the fewest bytes";
  let description = [{
    Repeats the best *move* while one lowers the bytes per rank of the
    function (or keeps them and shrinks activations; only bytes count when
    the module sets sl.sequence_parallel = false). A move re-places every
    transition of one kind at once (gathers and scatterable all-reduces that
    add one split, slices, reorders, all-to-alls): a minimum cut over the
    free ops they reach chooses which ops run on the new layout, priced with
    relayoutBytes, the report's bytes (docs/passes.md). Then local rewrites
    that never add bytes: gather/slice and slice/gather pairs, inverse
    reorders and all-to-alls cancel, chained all-to-alls fuse, a gather moves
    past an all-to-all. Values are kept (ops change only free dimensions),
    no program leaves with more bytes than it came in with, and the pass is
    idempotent. Changes are recorded in the module attribute `sl.elided`.
    With `keep-peak` (what sl-shard-pipeline runs), a move that would raise
    the function's peak activation bytes (the memory plan's high-water mark)
    is not applied: bytes are minimised within the peak the program has.
    Then, for a function of at most 64 ops, an exact search chooses every
    op's layout anew (variable elimination over the def-use graph, within
    fixed limits) and replaces the function where that sends fewer bytes:
    there the result is the least bytes over every layout the ops' rules
    accept. `exact=false` turns it off.
  }];
  let options = [
    Option<"keepPeak", "keep-peak", "bool", /*default=*/"false",
           "Never raise the function's peak activation bytes (sl-shard-pipeline sets it)">,
    Option<"exact", "exact", "bool", /*default=*/"true",
           "After the moves, choose every op's layout by an exact search where the "
           "function is small enough (docs/passes.md, \"The exact search\")">,
  ];
}

def SLExplain : Pass<"sl-explain", "::mlir::ModuleOp"> {
  let summary = "Explain every collective: who needs it, which rule, bytes per rank";
  let description = [{
    Emits one remark per remaining collective (and per op that communicates
    inside: ring attention, vocab-parallel cross-entropy):

      <op> over [axes]: <bytes> bytes per rank; needed by <first user>;
      <sl.reason>; cheaper: <...> | rejected: <...>

    `cheaper` names a move of sl-elide-gathers that would re-place the
    gather or all-reduce (the pass's own cost function, so the two never
    disagree), with the region's bytes before and after, or removing a
    collective without users. `rejected` names the next placement and why
    it loses. With `lint`, warns on gathers a move would re-place
    (premature gathers). A function within the limits of the pass's exact
    search gets one more remark where choosing every op's layout anew
    sends fewer bytes: `function @f: sl-elide-gathers' exact search:
    <before> -> <after> bytes per rank ...`.
  }];
  let options = [
    Option<"lint", "lint", "bool", /*default=*/"false",
           "Warn on gathers that sl-elide-gathers would re-place">,
  ];
}

def SLPartition : Pass<"sl-partition", "::mlir::ModuleOp"> {
  let summary = "Rewrite the sharded program into the program of one rank";
  let description = [{
    Runs on the output of `sl-shard-pipeline` (every value has a layout) and
    turns each function into the program rank `rank` runs:

    - Every tensor gets its local shape and loses its layout.
    - A collective whose data movement is a plain concatenation or split in
      grid order along one dimension becomes the upstream `shard` collective
      on a `shard.grid` of the mesh's shape (`@<mesh>_grid`):
      `sl.all_gather` -> `shard.all_gather`, `sl.reduce_scatter` ->
      `shard.reduce_scatter`, `sl.all_reduce` -> `shard.all_reduce`,
      `sl.all_to_all` -> `shard.all_to_all`, `sl.slice` -> `shard.all_slice`
      (sum reductions). Whether the movement fits is computed from the
      layouts: a gather over the major axis of a zigzag split, for one, does
      not (the chunks come back out of order) and stays an sl op.
    - What depends on the rank is resolved into attributes: `sl.tokens` (the
      global positions of the local tokens, as [start, length] runs: zigzag
      chunks, RoPE positions, causal masks) on rope, attention (`sl.tokens`
      for queries, `sl.key_tokens` for keys), causal_conv1d and chunked scans;
      `sl.ring` (the members in ring order from this rank) and
      `sl.key_tokens` per member on ring attention; `sl.vocab_offset` on the
      embedding and the loss; `sl.group` (the ranks of the group, in order)
      on every remaining sl op that communicates.

    The function gets `sl.rank` and `sl.ranks`; sl ops in such a function are
    checked for types only, since their shapes are local parts. The runtime
    resolves the same facts from the plan when it loads it
    (docs/runtime.md); this pass shows them as IR.
  }];
  let options = [
    Option<"rank", "rank", "int64_t", /*default=*/"0", "The rank whose program to produce">,
  ];
  let dependentDialects = ["::mlir::shard::ShardDialect"];
}

def SLAnalyze : Pass<"sl-analyze", "::mlir::ModuleOp"> {
  let summary = "Report collectives, bytes, weights and peak activations per rank";
  let description = [{
    Computes the report of DESIGN §4: every collective with its bytes per
    rank (bandwidth-optimal conventions), the elided gathers, the weight
    bytes per rank and the high-water mark of the activation arena per rank
    (the table also prints the liveness lower bound). Writes JSON to
    `report` (if given) and a table to stdout. docs/report.md defines every
    field.
  }];
  let options = [
    Option<"reportFile", "report", "std::string", /*default=*/"\"\"",
           "Write the JSON report to this file">,
  ];
}

def SLTestPrintShardingRules
    : Pass<"sl-test-print-sharding-rules", "::mlir::ModuleOp"> {
  let summary = "Print every op's sharding rule (for the rule tests)";
  let description = [{
    Emits one remark per op that has a sharding rule, with the rule as
    `ShardingRule::describe()` writes it:

      sl.linear: x[b,s,k] weight[k,n] -> result[b,s,n]; free: b,s,n;
      contracted: k; partial: one; sequence: s

    Operands and results name the factor of each dimension (`1` for a size-one
    dimension no factor covers); factors are listed by kind, granules and
    remedies (with the axes the op already carries them over) beside their
    factor; `partial` says how pending sums pass through (`same`: in every
    operand alike; `one`: in at most one operand); `sequence` is the op's own
    sequence factor, the one sequence parallelism splits. Last, a remark on
    the module counts the sl ops with a rule that the module instantiates
    and names those it does not, so that the rule test
    (test/Dialect/SL/sharding-rules.mlir) fails when an op is added without
    a line of its own.
  }];
}

#endif
