// The order of the moves: a chain move taken at the first step reaches the
// optimum where the moves of one kind, taken first, lead elsewhere. The pass
// places the function both ways (chain moves only once no move of one kind
// improves it, and chain moves beside the others at every step) and keeps
// the one that sends fewer bytes (docs/passes.md, "How a move is priced and
// chosen").
// RUN: shardline-opt %s -sl-elide-gathers -sl-analyze 2>&1 | FileCheck %s
// RUN: shardline-opt %s -sl-elide-gathers=keep-peak=true -sl-analyze 2>&1 | FileCheck %s
// RUN: shardline-opt %s -sl-elide-gathers > %t.once.mlir
// RUN: shardline-opt %t.once.mlir -sl-elide-gathers > %t.twice.mlir
// RUN: diff %t.once.mlir %t.twice.mlir
// RUN: shardline-opt %s -sl-explain 2>&1 | FileCheck %s --check-prefix=EXPLAIN

// Part of random program 369 of test/Unit/ElidePropertyTest.cpp: an
// embedding's output split over cp on the sequence and tp on the hidden
// dimension goes through a reorder, a gather and a slice over tp and two
// all-to-alls to meet, at an add, the input gathered over cp, taken to the
// sequence by an all-to-all and sliced; the sum's linear goes back through
// two all-to-alls and a gather: 5440 bytes per rank. The optimum, 768 bytes
// per rank (the Tree optimum of the brute force): one all-to-all over tp
// takes the embedding's output to the input's layout [[tp], [cp], []], the
// add and the linear run there, and one gather over tp gives the result.
// sl-explain prices that chain move on the program as it is; with the moves
// of one kind first (a reorder sunk, a gather and its slice cancelled), the
// function ends at 2368 bytes per rank, where no move improves it.
// EXPLAIN: sl-elide-gathers: 5440 -> 768 bytes per rank in this region
// CHECK: model main on 4 ranks (cp=2 tp=2)
// CHECK-NEXT: block collective axes bytes/rank why
// CHECK-NEXT: - all_to_all [tp] 512
// CHECK-NEXT: - all_gather [tp] 256
// CHECK: elided chain: met sl.all_to_all + sl.all_to_all + sl.all_gather and became sl.all_gather
// CHECK: totals: 768 bytes sent per rank in 2 collectives (all_gather 1, all_to_all 1)
// CHECK: %[[E:.*]] = sl.embedding
// CHECK-NEXT: %[[A:.*]] = sl.all_to_all %[[E]] {axes = ["tp"], concat_dim = 2 : i64, split_dim = 0 : i64}
// CHECK-NEXT: %[[S:.*]] = sl.add %arg1, %[[A]]
// CHECK-NEXT: %[[L:.*]] = sl.linear %[[S]]
// CHECK-NEXT: %[[G:.*]] = sl.all_gather %[[L]] {axes = ["tp"], dim = 0 : i64}
// CHECK-NEXT: return %[[G]]

sl.mesh @mesh(cp = 2, tp = 2)
func.func @main(%ids: tensor<2x8xi32, #sl.layout<@mesh, [[], [cp]]>>, %x1: tensor<2x8x64xf32, #sl.layout<@mesh, [[tp], [cp], []]>>) -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>> {
  %w0 = sl.weight "w0" : tensor<32x64xf32, #sl.layout<@mesh, [[], [tp]]>>
  %w1 = sl.weight "w1" : tensor<64x16xf32, #sl.layout<@mesh, [[], []]>>
  %v0 = sl.embedding %ids, %w0 : (tensor<2x8xi32, #sl.layout<@mesh, [[], [cp]]>>, tensor<32x64xf32, #sl.layout<@mesh, [[], [tp]]>>) -> tensor<2x8x64xf32, #sl.layout<@mesh, [[], [cp], [tp]]>>
  %v2 = sl.all_gather %x1 {axes = ["cp"], dim = 1} : tensor<2x8x64xf32, #sl.layout<@mesh, [[tp], [cp], []]>> -> tensor<2x8x64xf32, #sl.layout<@mesh, [[tp], [], []]>>
  %v3 = sl.all_to_all %v2 {axes = ["tp"], split_dim = 1, concat_dim = 0} : tensor<2x8x64xf32, #sl.layout<@mesh, [[tp], [], []]>> -> tensor<2x8x64xf32, #sl.layout<@mesh, [[], [tp], []]>>
  %v4 = sl.slice %v3 {axes = ["cp"], dim = 1} : tensor<2x8x64xf32, #sl.layout<@mesh, [[], [tp], []]>> -> tensor<2x8x64xf32, #sl.layout<@mesh, [[], [tp, cp], []]>>
  %v5 = sl.reorder %v0 : tensor<2x8x64xf32, #sl.layout<@mesh, [[], [cp], [tp]]>> -> tensor<2x8x64xf32, #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>>
  %v6 = sl.all_gather %v5 {axes = ["tp"], dim = 2} : tensor<2x8x64xf32, #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>> -> tensor<2x8x64xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>
  %v7 = sl.slice %v6 {axes = ["tp"], dim = 2} : tensor<2x8x64xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>> -> tensor<2x8x64xf32, #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>>
  %v8 = sl.all_to_all %v7 {axes = ["cp"], split_dim = 2, concat_dim = 1} : tensor<2x8x64xf32, #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>> -> tensor<2x8x64xf32, #sl.layout<@mesh, [[], [], [tp, cp]]>>
  %v9 = sl.all_to_all %v8 {axes = ["tp", "cp"], split_dim = 1, concat_dim = 2} : tensor<2x8x64xf32, #sl.layout<@mesh, [[], [], [tp, cp]]>> -> tensor<2x8x64xf32, #sl.layout<@mesh, [[], [tp, cp], []]>>
  %v1 = sl.add %v4, %v9 : (tensor<2x8x64xf32, #sl.layout<@mesh, [[], [tp, cp], []]>>, tensor<2x8x64xf32, #sl.layout<@mesh, [[], [tp, cp], []]>>) -> tensor<2x8x64xf32, #sl.layout<@mesh, [[], [tp, cp], []]>>
  %v10 = sl.linear %v1, %w1 : (tensor<2x8x64xf32, #sl.layout<@mesh, [[], [tp, cp], []]>>, tensor<64x16xf32, #sl.layout<@mesh, [[], []]>>) -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp, cp], []]>>
  %v17 = sl.all_to_all %v10 {axes = ["tp", "cp"], split_dim = 2, concat_dim = 1} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp, cp], []]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], [tp, cp]]>>
  %v18 = sl.all_to_all %v17 {axes = ["cp"], split_dim = 1, concat_dim = 2} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], [tp, cp]]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp], [tp]]>>
  %v19 = sl.all_gather %v18 {axes = ["tp"], dim = 2} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp], [tp]]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>
  return %v19 : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>
}
