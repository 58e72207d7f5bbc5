// RUN: shardline-opt %s -split-input-file -sl-elide-gathers | FileCheck %s
// RUN: shardline-opt %s -split-input-file -sl-elide-gathers | shardline-opt -split-input-file -sl-elide-gathers | FileCheck %s
// The rewrites are recorded for the report, once: the second run adds none.
// RUN: shardline-opt %s -split-input-file -sl-elide-gathers | FileCheck %s --check-prefix=REC
// RUN: shardline-opt %s -split-input-file -sl-elide-gathers | shardline-opt -split-input-file -sl-elide-gathers | FileCheck %s --check-prefix=REC

// A gather right after the embedding, then a norm and a residual add whose
// result leaves split: the gather sinks past both to the column-parallel
// linear that needs the whole sequence, and cancels with the slice; the
// residual stream stays split (the same 512 bytes, smaller activations).
sl.mesh @mesh(tp = 2)
// CHECK-LABEL: func.func @early_gather
// CHECK: %[[N:.*]] = sl.rms_norm %arg0
// CHECK: %[[G:.*]] = sl.all_gather %[[N]] {axes = ["tp"], dim = 1 : i64}
// CHECK: sl.linear %[[G]]
// CHECK: %[[R:.*]] = sl.add %arg0, %[[N]] : (tensor<2x8x16xf32, #[[SEQ:.*]]>, tensor<2x8x16xf32, #[[SEQ]]>) -> tensor<2x8x16xf32, #[[SEQ]]>
// CHECK-NOT: sl.slice
// CHECK: return %[[R]]
// REC: module attributes {sl.elided = [{how = "sunk past sl.rms_norm", location = {{.*}}, op = "all_gather"}, {how = "sunk past sl.add", location = {{.*}}, op = "all_gather"}, {how = "met sl.slice and became nothing", location = {{.*}}, op = "all_gather"}]
func.func @early_gather(%x: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>>) -> (tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>>, tensor<2x8x32xf32, #sl.layout<@mesh, [[], [], [tp]]>>) {
  %w = sl.weight "norm" : tensor<16xf32, #sl.layout<@mesh, [[]]>>
  %wc = sl.weight "col" : tensor<16x32xf32, #sl.layout<@mesh, [[], [tp]]>>
  %g = sl.all_gather %x {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
  %n = sl.rms_norm %g, %w : (tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>, tensor<16xf32, #sl.layout<@mesh, [[]]>>) -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
  %h = sl.linear %n, %wc : (tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>, tensor<16x32xf32, #sl.layout<@mesh, [[], [tp]]>>) -> tensor<2x8x32xf32, #sl.layout<@mesh, [[], [], [tp]]>>
  %r = sl.add %g, %n : (tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>, tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>) -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
  %s = sl.slice %r {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>>
  return %s, %h : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>>, tensor<2x8x32xf32, #sl.layout<@mesh, [[], [], [tp]]>>
}

// -----

// all_reduce then slice is a reduce_scatter.
sl.mesh @mesh(tp = 2)
// CHECK-LABEL: func.func @all_reduce_slice
// CHECK: sl.reduce_scatter %arg0 {axes = ["tp"], dim = 1 : i64}
// CHECK-NOT: = sl.all_reduce
// CHECK-NOT: = sl.slice
// REC: module attributes {sl.elided = [{how = "became sl.reduce_scatter", {{.*}}op = "all_reduce"}, {how = "met sl.slice and became nothing", {{.*}}op = "all_gather"}]
func.func @all_reduce_slice(%x: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []], partial = [tp]>>) -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>> {
  %r = sl.all_reduce %x {axes = ["tp"]} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []], partial = [tp]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
  %s = sl.slice %r {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>>
  return %s : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>>
}

// -----

// all_gather -> all_to_all -> slice: the gather moves past the all_to_all and
// cancels with the slice; only the all_to_all remains.
sl.mesh @mesh(ep = 2, tp = 2)
// CHECK-LABEL: func.func @gather_a2a_slice
// CHECK: %[[A:.*]] = sl.all_to_all %arg0 {axes = ["ep"], concat_dim = 1 : i64, split_dim = 0 : i64}
// CHECK-NEXT: return %[[A]]
// REC: module attributes {sl.elided = [{how = "met sl.all_to_all + sl.slice and became sl.all_to_all", {{.*}}op = "all_gather"}]
func.func @gather_a2a_slice(%x: tensor<4x2x8x16xf32, #sl.layout<@mesh, [[], [ep], [tp], []]>>) -> tensor<4x2x8x16xf32, #sl.layout<@mesh, [[ep], [], [tp], []]>> {
  %g = sl.all_gather %x {axes = ["tp"], dim = 2} : tensor<4x2x8x16xf32, #sl.layout<@mesh, [[], [ep], [tp], []]>> -> tensor<4x2x8x16xf32, #sl.layout<@mesh, [[], [ep], [], []]>>
  %a = sl.all_to_all %g {axes = ["ep"], split_dim = 0, concat_dim = 1} : tensor<4x2x8x16xf32, #sl.layout<@mesh, [[], [ep], [], []]>> -> tensor<4x2x8x16xf32, #sl.layout<@mesh, [[ep], [], [], []]>>
  %s = sl.slice %a {axes = ["tp"], dim = 2} : tensor<4x2x8x16xf32, #sl.layout<@mesh, [[ep], [], [], []]>> -> tensor<4x2x8x16xf32, #sl.layout<@mesh, [[ep], [], [tp], []]>>
  return %s : tensor<4x2x8x16xf32, #sl.layout<@mesh, [[ep], [], [tp], []]>>
}

// -----

// A reorder to contiguous order before one Mamba-like block and back to
// zigzag after it: the first reorder sinks past the block's free ops and
// cancels with the second.
sl.mesh @mesh(cp = 2)
// CHECK-LABEL: func.func @reorder_undo_redo
// CHECK-NOT: = sl.reorder
// CHECK: return
// REC: module attributes {sl.elided = [{how = "sunk past sl.rms_norm", {{.*}}op = "reorder"}, {how = "sunk past sl.silu", {{.*}}op = "reorder"}, {how = "sunk past sl.add", {{.*}}op = "reorder"}, {how = "met sl.reorder and became nothing", {{.*}}op = "reorder"}]
func.func @reorder_undo_redo(%x: tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>) -> tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>> {
  %w = sl.weight "norm" : tensor<4xf32, #sl.layout<@mesh, [[]]>>
  %c = sl.reorder %x : tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>> -> tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>
  %n = sl.rms_norm %c, %w : (tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>) -> tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>
  %s = sl.silu %n : (tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>) -> tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>
  %r = sl.add %c, %s : (tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>) -> tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>
  %z = sl.reorder %r : tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>> -> tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>
  return %z : tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>
}

// -----

// An all_to_all undone by the next one cancels.
sl.mesh @mesh(ep = 2)
// CHECK-LABEL: func.func @inverse_a2a
// CHECK-NEXT: return %arg0
// REC: module attributes {sl.elided = [{how = "met sl.all_to_all and became nothing"
func.func @inverse_a2a(%x: tensor<4x2x8xf32, #sl.layout<@mesh, [[], [ep], []]>>) -> tensor<4x2x8xf32, #sl.layout<@mesh, [[], [ep], []]>> {
  %a = sl.all_to_all %x {axes = ["ep"], split_dim = 0, concat_dim = 1} : tensor<4x2x8xf32, #sl.layout<@mesh, [[], [ep], []]>> -> tensor<4x2x8xf32, #sl.layout<@mesh, [[ep], [], []]>>
  %b = sl.all_to_all %a {axes = ["ep"], split_dim = 1, concat_dim = 0} : tensor<4x2x8xf32, #sl.layout<@mesh, [[ep], [], []]>> -> tensor<4x2x8xf32, #sl.layout<@mesh, [[], [ep], []]>>
  return %b : tensor<4x2x8xf32, #sl.layout<@mesh, [[], [ep], []]>>
}

// -----

// Two all_to_alls over one group in a chain (ep from dim 1 to dim 0, then
// from dim 0 to dim 2) fuse into one from dim 1 to dim 2.
sl.mesh @mesh(ep = 2)
// CHECK-LABEL: func.func @chained_a2a
// CHECK-NEXT: %[[A:.*]] = sl.all_to_all %arg0 {axes = ["ep"], concat_dim = 1 : i64, split_dim = 2 : i64}
// CHECK-NEXT: return %[[A]]
// REC: module attributes {sl.elided = [{how = "met sl.all_to_all and became sl.all_to_all"
func.func @chained_a2a(%x: tensor<4x2x8xf32, #sl.layout<@mesh, [[], [ep], []]>>) -> tensor<4x2x8xf32, #sl.layout<@mesh, [[], [], [ep]]>> {
  %a = sl.all_to_all %x {axes = ["ep"], split_dim = 0, concat_dim = 1} : tensor<4x2x8xf32, #sl.layout<@mesh, [[], [ep], []]>> -> tensor<4x2x8xf32, #sl.layout<@mesh, [[ep], [], []]>>
  %b = sl.all_to_all %a {axes = ["ep"], split_dim = 2, concat_dim = 0} : tensor<4x2x8xf32, #sl.layout<@mesh, [[ep], [], []]>> -> tensor<4x2x8xf32, #sl.layout<@mesh, [[], [], [ep]]>>
  return %b : tensor<4x2x8xf32, #sl.layout<@mesh, [[], [], [ep]]>>
}

// -----

// An all_reduce whose users are free ops: reduce-scatter first, gather only
// where the column-parallel linear needs the whole sequence.
sl.mesh @mesh(tp = 2)
// CHECK-LABEL: func.func @split_all_reduce
// CHECK: sl.reduce_scatter %arg0 {axes = ["tp"], dim = 1 : i64}
// CHECK: %[[S:.*]] = sl.silu
// CHECK: sl.all_gather %[[S]]
// CHECK: sl.linear
// CHECK-NOT: = sl.all_reduce
func.func @split_all_reduce(%x: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []], partial = [tp]>>) -> tensor<2x8x32xf32, #sl.layout<@mesh, [[], [], [tp]]>> {
  %wc = sl.weight "col" : tensor<16x32xf32, #sl.layout<@mesh, [[], [tp]]>>
  %r = sl.all_reduce %x {axes = ["tp"]} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []], partial = [tp]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
  %s = sl.silu %r : (tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>) -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
  %h = sl.linear %s, %wc : (tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>, tensor<16x32xf32, #sl.layout<@mesh, [[], [tp]]>>) -> tensor<2x8x32xf32, #sl.layout<@mesh, [[], [], [tp]]>>
  return %h : tensor<2x8x32xf32, #sl.layout<@mesh, [[], [], [tp]]>>
}

// -----

// Negative: the gather feeds a norm over the gathered (hidden) dimension, so
// it is required and stays.
sl.mesh @mesh(tp = 2)
// CHECK-LABEL: func.func @needed_for_norm
// CHECK: sl.all_gather
// CHECK-NEXT: sl.rms_norm
// REC: module {
func.func @needed_for_norm(%x: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], [tp]]>>) -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>> {
  %w = sl.weight "norm" : tensor<16xf32, #sl.layout<@mesh, [[]]>>
  %g = sl.all_gather %x {axes = ["tp"], dim = 2} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], [tp]]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
  %n = sl.rms_norm %g, %w : (tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>, tensor<16xf32, #sl.layout<@mesh, [[]]>>) -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
  return %n : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
}

// -----

// Gathered keys and values feed attention (allgather context parallelism):
// attention needs every key, so a gather stays, but the two gathers of one
// value become one (256 bytes per rank instead of 512).
sl.mesh @mesh(cp = 2)
// CHECK-LABEL: func.func @needed_for_keys
// CHECK: %[[G:.*]] = sl.all_gather %arg1
// CHECK-NOT: sl.all_gather
// CHECK: sl.attention %arg0, %[[G]], %[[G]]
// REC: module attributes {sl.elided = [{how = "moved earlier: one sl.all_gather serves 2 readers"
func.func @needed_for_keys(%q: tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, %k: tensor<1x8x8xf32, #sl.layout<@mesh, [[], [cp], []]>>) -> tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>> {
  %gk = sl.all_gather %k {axes = ["cp"], dim = 1} : tensor<1x8x8xf32, #sl.layout<@mesh, [[], [cp], []]>> -> tensor<1x8x8xf32, #sl.layout<@mesh, [[], [], []]>>
  %gv = sl.all_gather %k {axes = ["cp"], dim = 1} : tensor<1x8x8xf32, #sl.layout<@mesh, [[], [cp], []]>> -> tensor<1x8x8xf32, #sl.layout<@mesh, [[], [], []]>>
  %o = sl.attention %q, %gk, %gv {heads = 4, kv_heads = 2} : (tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<1x8x8xf32, #sl.layout<@mesh, [[], [], []]>>, tensor<1x8x8xf32, #sl.layout<@mesh, [[], [], []]>>) -> tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>
  return %o : tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>
}

// -----

// Negative: an all-reduce feeding a column-parallel linear, which needs the
// whole sequence: splitting it would only add a gather back.
sl.mesh @mesh(tp = 2)
// CHECK-LABEL: func.func @needed_by_linear
// CHECK: sl.all_reduce
// CHECK-NEXT: sl.linear
// CHECK-NOT: = sl.reduce_scatter
// REC: module {
func.func @needed_by_linear(%x: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []], partial = [tp]>>) -> tensor<2x8x32xf32, #sl.layout<@mesh, [[], [], [tp]]>> {
  %wc = sl.weight "col" : tensor<16x32xf32, #sl.layout<@mesh, [[], [tp]]>>
  %r = sl.all_reduce %x {axes = ["tp"]} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []], partial = [tp]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
  %h = sl.linear %r, %wc : (tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>, tensor<16x32xf32, #sl.layout<@mesh, [[], [tp]]>>) -> tensor<2x8x32xf32, #sl.layout<@mesh, [[], [], [tp]]>>
  return %h : tensor<2x8x32xf32, #sl.layout<@mesh, [[], [], [tp]]>>
}

// -----

// The router's expert indices are i32, which the layout collectives move:
// the router runs on the split stream and its two results are gathered
// instead (the same 128 bytes per rank, half the router's activations).
sl.mesh @mesh(tp = 2)
// CHECK-LABEL: func.func @before_router
// CHECK: %[[W:.*]], %[[I:.*]] = sl.router_topk %arg0
// CHECK-DAG: sl.all_gather %[[W]] {axes = ["tp"], dim = 1 : i64} : tensor<2x8x2xf32
// CHECK-DAG: sl.all_gather %[[I]] {axes = ["tp"], dim = 1 : i64} : tensor<2x8x2xi32
// REC: module attributes {sl.elided = [{how = "sunk past sl.router_topk"
func.func @before_router(%l: tensor<2x8x4xf32, #sl.layout<@mesh, [[], [tp], []]>>) -> (tensor<2x8x2xf32, #sl.layout<@mesh, [[], [], []]>>, tensor<2x8x2xi32, #sl.layout<@mesh, [[], [], []]>>) {
  %g = sl.all_gather %l {axes = ["tp"], dim = 1} : tensor<2x8x4xf32, #sl.layout<@mesh, [[], [tp], []]>> -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [], []]>>
  %w, %i = sl.router_topk %g {k = 2} : (tensor<2x8x4xf32, #sl.layout<@mesh, [[], [], []]>>) -> (tensor<2x8x2xf32, #sl.layout<@mesh, [[], [], []]>>, tensor<2x8x2xi32, #sl.layout<@mesh, [[], [], []]>>)
  return %w, %i : tensor<2x8x2xf32, #sl.layout<@mesh, [[], [], []]>>, tensor<2x8x2xi32, #sl.layout<@mesh, [[], [], []]>>
}

// -----

// Negative: an all_reduce with a second user stays; turning the slice into a
// reduce_scatter would run both.
sl.mesh @mesh(tp = 2)
// CHECK-LABEL: func.func @reduce_two_users
// CHECK: sl.all_reduce
// CHECK: sl.slice
// CHECK-NOT: = sl.reduce_scatter
// REC: module {
func.func @reduce_two_users(%x: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []], partial = [tp]>>) -> (tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>>, tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>) {
  %r = sl.all_reduce %x {axes = ["tp"]} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []], partial = [tp]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
  %s = sl.slice %r {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>>
  return %s, %r : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>>, tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
}

// -----

// Negative: a reorder does not cross ring attention, whose zigzag order
// balances the causal work.
sl.mesh @mesh(cp = 2)
// CHECK-LABEL: func.func @reorder_before_ring
// CHECK: sl.reorder
// CHECK-NEXT: sl.ring_attention
// REC: module {
func.func @reorder_before_ring(%q: tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>) -> tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>> {
  %z = sl.reorder %q : tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>> -> tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>
  %o = sl.ring_attention %z, %z, %z {heads = 4, kv_heads = 4, axes = ["cp"]} : (tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>, tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>, tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>) -> tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>
  return %o : tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>
}
