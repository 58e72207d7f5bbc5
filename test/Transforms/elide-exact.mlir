// The exact search (docs/passes.md, "The exact search"): after the moves, a
// small function is placed again from scratch, every op's layout chosen over
// all the layouts its rule accepts at the least bytes, and kept where that
// sends fewer bytes. Random program 150 of test/Unit/ElidePropertyTest.cpp:
// token ids split over cp on the batch and tp on the sequence, two gathers
// before a linear with a column-split weight, a slice over cp on the batch
// before a row-parallel linear, its pending sum reduce-scattered, an
// all-to-all, a reorder and another all-to-all to the result's layout
// ([[], [cp, tp] zigzag, []]). The moves, each improving on its own, reach
// 4096 bytes per rank (two gathers of the embedding's output and a
// reduce-scatter); the optimum (the brute force's Tree optimum) relays out
// the ids instead, 16 + 16 bytes, runs the embedding and both linears with
// the batch split over cp, and reduce-scatters the pending sum straight onto
// the result's zigzag split: 1056 bytes per rank, with a lower peak.
// RUN: shardline-opt %s -sl-elide-gathers -sl-analyze 2>&1 | FileCheck %s
// RUN: shardline-opt %s -sl-elide-gathers=keep-peak=true -sl-analyze 2>&1 | FileCheck %s
// RUN: shardline-opt %s -sl-elide-gathers=exact=false -sl-analyze 2>&1 | FileCheck %s --check-prefix=MOVES
// RUN: shardline-opt %s -sl-elide-gathers > %t.once.mlir
// RUN: shardline-opt %t.once.mlir -sl-elide-gathers > %t.twice.mlir
// RUN: diff %t.once.mlir %t.twice.mlir
// RUN: shardline-opt %s -sl-explain -o /dev/null 2>&1 | FileCheck %s --check-prefix=EXPLAIN
// RUN: shardline-opt %t.once.mlir -sl-explain -o /dev/null 2>&1 | FileCheck %s --check-prefix=PLACED

// sl-explain runs the same search on the program as it is (5632 bytes per
// rank before any move), and says nothing once it is placed.
// EXPLAIN: remark: function @main: sl-elide-gathers' exact search: 5632 -> 1056 bytes per rank with every op's layout chosen anew (7 transitions re-placed)
// PLACED-NOT: exact search

// CHECK: model main on 4 ranks (cp=2 tp=2)
// CHECK-NEXT: block collective axes bytes/rank why
// CHECK-NEXT: - all_gather [tp] 16
// CHECK-NEXT: - all_to_all [cp] 16
// CHECK-NEXT: - reduce_scatter [tp] 1024
// CHECK: elided all_gather: re-placed by the exact search over every op's layout ({{.*}}elide-exact.mlir:{{[0-9]+}}:
// CHECK: totals: 1056 bytes sent per rank in 3 collectives (all_gather 1, all_to_all 1, reduce_scatter 1); weights 16384 bytes per rank; peak activations 3072 bytes per rank
// CHECK: %[[G:.*]] = sl.all_gather %arg0 {axes = ["tp"], dim = 1 : i64} : tensor<2x8xi32
// CHECK-NEXT: %[[A:.*]] = sl.all_to_all %[[G]] {axes = ["cp"], concat_dim = 0 : i64, split_dim = 1 : i64} : tensor<2x8xi32
// CHECK-NEXT: %[[E:.*]] = sl.embedding %[[A]]
// CHECK-NEXT: %[[L1:.*]] = sl.linear %[[E]]
// CHECK-NEXT: %[[L2:.*]] = sl.linear %[[L1]]
// CHECK-NEXT: %[[R:.*]] = sl.reduce_scatter %[[L2]] {axes = ["tp"], dim = 1 : i64}
// CHECK-NEXT: %[[S1:.*]] = sl.softplus %[[R]]
// CHECK-NEXT: %[[S2:.*]] = sl.softplus %[[S1]]
// CHECK-NEXT: return %[[S2]]

// MOVES: totals: 4096 bytes sent per rank in 3 collectives (all_gather 2, reduce_scatter 1); weights 16384 bytes per rank; peak activations 7232 bytes per rank

#I = #sl.layout<@mesh, [[cp], [tp]]>
#Z = #sl.layout<@mesh, [[], [cp, tp] zigzag, []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @main(%ids: tensor<2x8xi32, #I>) -> (tensor<2x8x64xf32, #Z>) {
  %w0 = sl.weight "w0" : tensor<32x64xf32, #sl.layout<@mesh, [[], []]>>
  %w1 = sl.weight "w1" : tensor<64x32xf32, #sl.layout<@mesh, [[], [tp]]>>
  %w2 = sl.weight "w2" : tensor<32x64xf32, #sl.layout<@mesh, [[tp], []]>>
  %v0 = sl.embedding %ids, %w0 : (tensor<2x8xi32, #I>, tensor<32x64xf32, #sl.layout<@mesh, [[], []]>>) -> tensor<2x8x64xf32, #sl.layout<@mesh, [[cp], [tp], []]>>
  %v1 = sl.all_gather %v0 {axes = ["cp"], dim = 0} : tensor<2x8x64xf32, #sl.layout<@mesh, [[cp], [tp], []]>> -> tensor<2x8x64xf32, #sl.layout<@mesh, [[], [tp], []]>>
  %v2 = sl.all_gather %v1 {axes = ["tp"], dim = 1} : tensor<2x8x64xf32, #sl.layout<@mesh, [[], [tp], []]>> -> tensor<2x8x64xf32, #sl.layout<@mesh, [[], [], []]>>
  %v3 = sl.linear %v2, %w1 : (tensor<2x8x64xf32, #sl.layout<@mesh, [[], [], []]>>, tensor<64x32xf32, #sl.layout<@mesh, [[], [tp]]>>) -> tensor<2x8x32xf32, #sl.layout<@mesh, [[], [], [tp]]>>
  %v4 = sl.slice %v3 {axes = ["cp"], dim = 0} : tensor<2x8x32xf32, #sl.layout<@mesh, [[], [], [tp]]>> -> tensor<2x8x32xf32, #sl.layout<@mesh, [[cp], [], [tp]]>>
  %v5 = sl.linear %v4, %w2 : (tensor<2x8x32xf32, #sl.layout<@mesh, [[cp], [], [tp]]>>, tensor<32x64xf32, #sl.layout<@mesh, [[tp], []]>>) -> tensor<2x8x64xf32, #sl.layout<@mesh, [[cp], [], []], partial = [tp]>>
  %v7 = sl.reduce_scatter %v5 {axes = ["tp"], dim = 2} : tensor<2x8x64xf32, #sl.layout<@mesh, [[cp], [], []], partial = [tp]>> -> tensor<2x8x64xf32, #sl.layout<@mesh, [[cp], [], [tp]]>>
  %v8 = sl.all_to_all %v7 {axes = ["cp"], split_dim = 1, concat_dim = 0} : tensor<2x8x64xf32, #sl.layout<@mesh, [[cp], [], [tp]]>> -> tensor<2x8x64xf32, #sl.layout<@mesh, [[], [cp], [tp]]>>
  %v6 = sl.softplus %v8 : (tensor<2x8x64xf32, #sl.layout<@mesh, [[], [cp], [tp]]>>) -> tensor<2x8x64xf32, #sl.layout<@mesh, [[], [cp], [tp]]>>
  %v10 = sl.reorder %v6 : tensor<2x8x64xf32, #sl.layout<@mesh, [[], [cp], [tp]]>> -> tensor<2x8x64xf32, #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>>
  %v11 = sl.all_to_all %v10 {axes = ["tp"], split_dim = 1, concat_dim = 2} : tensor<2x8x64xf32, #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>> -> tensor<2x8x64xf32, #sl.layout<@mesh, [[], [cp, tp] zigzag, []]>>
  %v9 = sl.softplus %v11 : (tensor<2x8x64xf32, #sl.layout<@mesh, [[], [cp, tp] zigzag, []]>>) -> tensor<2x8x64xf32, #Z>
  return %v9 : tensor<2x8x64xf32, #Z>
}
