// RUN: not shardline-opt %s -sl-propagate-layouts=sequence-parallel=maybe 2>&1 | FileCheck %s --check-prefix=SP
// RUN: not shardline-opt %s -sl-propagate-layouts=cp-comm=mesh 2>&1 | FileCheck %s --check-prefix=COMM
// RUN: not shardline-opt %s -sl-propagate-layouts=cp-comm=auto 2>&1 | FileCheck %s --check-prefix=AUTO
// RUN: shardline-opt %s -sl-propagate-layouts=sequence-parallel=false | FileCheck %s --check-prefix=NOSP
// The options are typed: the parser names the option and the value it refuses.
// SP: for the --sequence-parallel option: Cannot find option named 'maybe'!
// COMM: for the --cp-comm option: Cannot find option named 'mesh'!
// AUTO: error: sl-propagate-layouts: cp-comm auto is resolved per attention layer by sl-choose-cp-comm; run it first

// RUN: shardline-opt %s -sl-propagate-layouts | FileCheck %s --check-prefix=MOD

// The option overrides the module attribute: the pending sum before the silu
// is all-reduced instead of reduce-scattered onto the sequence.
// NOSP-DAG: #[[$REP:.*]] = #sl.layout<@mesh, {{\[}}[], [], []]>
// NOSP-DAG: #[[$SUM:.*]] = #sl.layout<@mesh, {{\[}}[], [], []], partial = [tp]>
// NOSP: sl.relayout %{{.*}} {{.*}}#[[$SUM]]> -> tensor<2x8x16xf32, #[[$REP]]>
// MOD-DAG: #[[$SEQ:.*]] = #sl.layout<@mesh, {{\[}}[], [tp], []]>
// MOD-DAG: #[[$SUM:.*]] = #sl.layout<@mesh, {{\[}}[], [], []], partial = [tp]>
// MOD: sl.relayout %{{.*}} {{.*}}#[[$SUM]]> -> tensor<2x8x16xf32, #[[$SEQ]]>
module attributes {sl.sequence_parallel = true, sl.cp_comm = "ring"} {
  sl.mesh @mesh(tp = 2)
  func.func @f(%x: tensor<2x8x16xf32>) -> tensor<2x8x16xf32> {
    %wd = sl.weight "d" : tensor<16x16xf32, #sl.layout<@mesh, [[tp], []]>>
    %y = sl.linear %x, %wd : (tensor<2x8x16xf32>, tensor<16x16xf32, #sl.layout<@mesh, [[tp], []]>>) -> tensor<2x8x16xf32>
    %s = sl.silu %y : (tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
    return %s : tensor<2x8x16xf32>
  }
}
