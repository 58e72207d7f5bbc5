// Two kinds of transition that must move together through a chain of
// transitions of different kinds: a move prices a transition its region feeds
// together with the transitions that only carry its result on (docs/passes.md,
// "How a move is priced and chosen"), so reading the new layout, the whole
// chain becomes one relayout.
// RUN: shardline-opt %s -sl-elide-gathers -sl-analyze 2>&1 | FileCheck %s
// RUN: shardline-opt %s -sl-elide-gathers > %t.once.mlir
// RUN: shardline-opt %t.once.mlir -sl-elide-gathers > %t.twice.mlir
// RUN: diff %t.once.mlir %t.twice.mlir
// RUN: shardline-opt %s -sl-elide-gathers=keep-peak=true -sl-analyze 2>&1 | FileCheck %s

// A linear runs on the batch split over cp between a gather over tp and an
// all-to-all there, and a slice over tp and an all-to-all back after it: 768
// bytes per rank. The optimum, 256: the linear runs on the argument's own
// layout and one all-to-all moves tp from the batch to the hidden dimension of
// its 32-wide result (tp must move between dimensions, and on the 16-wide
// input it would split the linear's contraction). The all-to-all over cp goes
// later only because the slice and the all-to-all back after it go with it
// (they become one slice from the new layout); then the gather goes later and
// meets the slice as an all-to-all.
#X = #sl.layout<@mesh, [[tp], [cp], []]>
#G = #sl.layout<@mesh, [[], [cp], []]>
#B = #sl.layout<@mesh, [[cp], [], []]>
#T = #sl.layout<@mesh, [[cp], [], [tp]]>
#Y = #sl.layout<@mesh, [[], [cp], [tp]]>
#R = #sl.layout<@mesh, [[], []]>
sl.mesh @mesh(cp = 2, tp = 2)
// CHECK-LABEL: model batch_detour
// CHECK: elided all_to_all: met sl.slice + sl.all_to_all and became sl.slice
// CHECK: totals: 256 bytes sent per rank in 1 collectives (all_to_all 1)
// CHECK: func.func @batch_detour
// CHECK-NEXT: sl.weight
// CHECK-NEXT: %[[H:.*]] = sl.linear %arg0
// CHECK-NEXT: %[[Y:.*]] = sl.all_to_all %[[H]] {axes = ["tp"], concat_dim = 0 : i64, split_dim = 2 : i64}
// CHECK-NEXT: return %[[Y]]
func.func @batch_detour(%x: tensor<2x8x16xf32, #X>) -> tensor<2x8x32xf32, #Y> {
  %w = sl.weight "w" : tensor<16x32xf32, #R>
  %g = sl.all_gather %x {axes = ["tp"], dim = 0} : tensor<2x8x16xf32, #X> -> tensor<2x8x16xf32, #G>
  %b = sl.all_to_all %g {axes = ["cp"], split_dim = 0, concat_dim = 1} : tensor<2x8x16xf32, #G> -> tensor<2x8x16xf32, #B>
  %h = sl.linear %b, %w : (tensor<2x8x16xf32, #B>, tensor<16x32xf32, #R>) -> tensor<2x8x32xf32, #B>
  %s = sl.slice %h {axes = ["tp"], dim = 2} : tensor<2x8x32xf32, #B> -> tensor<2x8x32xf32, #T>
  %y = sl.all_to_all %s {axes = ["cp"], split_dim = 1, concat_dim = 0} : tensor<2x8x32xf32, #T> -> tensor<2x8x32xf32, #Y>
  return %y : tensor<2x8x32xf32, #Y>
}
