// A value read in several layouts is best served through another reader's
// result: the moves give each reader its layout from one of two versions of
// the value, the tree of relayouts over the needed layouts (docs/passes.md,
// "Readers in several layouts") serves one from another.
// RUN: shardline-opt %s -sl-elide-gathers -sl-analyze 2>&1 | FileCheck %s
// RUN: shardline-opt %s -sl-elide-gathers > %t.once.mlir
// RUN: shardline-opt %t.once.mlir -sl-elide-gathers > %t.twice.mlir
// RUN: diff %t.once.mlir %t.twice.mlir
// keep-peak takes the tree only where the peak does not rise; here it falls.
// RUN: shardline-opt %s -sl-elide-gathers=keep-peak=true -sl-analyze 2>&1 | FileCheck %s
// The backward's gather done again from the saved shard (sl.recompute, the
// default save policy) is never served from the forward's gathered value:
// that would keep the gathered tensor live until the backward, which the
// policy chose against (two MLP blocks, tp 2 + sp: 24576 bytes regathered).
// RUN: echo '{"name": "mlp", "pattern": "FF", "vocab": 64, "hidden": 32, "seq": 32, "batch": 4, "mlp": {"ffn_hidden": 64}}' > %t.json
// RUN: shardline-compile %t.json --tp 2 --sp --train --emit mlir -o %t.train.mlir --report %t.report.json
// RUN: FileCheck %s --check-prefix=REGATHER < %t.report.json
// REGATHER: "comm_bytes_per_rank": 125828
// REGATHER: "regather_bytes_per_rank": 24576

// A pending sum over tp that two results need in different layouts. Given:
// one reduce-scatter and a gather over cp for B (256 + 256 bytes), an
// all-to-all of the sum and a second reduce-scatter for D (256 + 256). The
// optimum, 640 bytes per rank: B as given (the sum costs at least one
// reduce-scatter, 256, and B's rank holds 256 bytes of the other cp rank's
// tokens), then D from B: a slice of the batch over cp (free) and an
// all-to-all of tp from the hidden dimension to the sequence (128).
#P = #sl.layout<@mesh, [[], [cp], []], partial = [tp]>
#A = #sl.layout<@mesh, [[], [cp], [tp]]>
#B = #sl.layout<@mesh, [[], [], [tp]]>
#C = #sl.layout<@mesh, [[cp], [], []], partial = [tp]>
#D = #sl.layout<@mesh, [[cp], [tp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
// CHECK-LABEL: model sum_served_through_a_reader
// CHECK: elided relayout: readers in 2 layouts served through one another, 384 fewer bytes per rank
// CHECK: totals: 640 bytes sent per rank in 3 collectives (all_gather 1, all_to_all 1, reduce_scatter 1)
// CHECK: func.func @sum_served_through_a_reader
// CHECK-NEXT: %[[A:.*]] = sl.reduce_scatter %arg0 {axes = ["tp"], dim = 2 : i64}
// CHECK-NEXT: %[[B:.*]] = sl.all_gather %[[A]] {axes = ["cp"], dim = 1 : i64}
// CHECK-NEXT: %[[S:.*]] = sl.slice %[[B]] {axes = ["cp"], dim = 0 : i64}
// CHECK-NEXT: %[[D:.*]] = sl.all_to_all %[[S]] {axes = ["tp"], concat_dim = 2 : i64, split_dim = 1 : i64}
// CHECK-NEXT: return %[[B]], %[[D]]
func.func @sum_served_through_a_reader(%p: tensor<2x8x16xf32, #P>) -> (tensor<2x8x16xf32, #B>, tensor<2x8x16xf32, #D>) {
  %a = sl.reduce_scatter %p {axes = ["tp"], dim = 2} : tensor<2x8x16xf32, #P> -> tensor<2x8x16xf32, #A>
  %b = sl.all_gather %a {axes = ["cp"], dim = 1} : tensor<2x8x16xf32, #A> -> tensor<2x8x16xf32, #B>
  %c = sl.all_to_all %p {axes = ["cp"], split_dim = 0, concat_dim = 1} : tensor<2x8x16xf32, #P> -> tensor<2x8x16xf32, #C>
  %d = sl.reduce_scatter %c {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #C> -> tensor<2x8x16xf32, #D>
  return %b, %d : tensor<2x8x16xf32, #B>, tensor<2x8x16xf32, #D>
}


