// Several kinds of transition that must move together: a chain of
// transitions of different kinds (all-to-alls over cp and tp, a gather, a
// reorder) in front of free ops is re-placed as one, onto the layout another
// chain of the function starts or ends at (docs/passes.md, "How a move is
// priced and chosen", chains of transitions to a layout). No move of one kind
// improves these programs: each transition of the chain alone is needed.
// RUN: shardline-opt %s -sl-elide-gathers -sl-analyze 2>&1 | FileCheck %s
// RUN: shardline-opt %s -sl-elide-gathers > %t.once.mlir
// RUN: shardline-opt %t.once.mlir -sl-elide-gathers > %t.twice.mlir
// RUN: diff %t.once.mlir %t.twice.mlir
// RUN: shardline-opt %s -sl-elide-gathers=keep-peak=true -sl-analyze 2>&1 | FileCheck %s --check-prefix=PEAK
// sl-explain says what the chain move does, priced as the pass prices it:
// RUN: shardline-opt %s -sl-explain 2>&1 | FileCheck %s --check-prefix=EXPLAIN
// and after the pass it finds nothing cheaper.
// RUN: shardline-opt %s -sl-elide-gathers -sl-explain 2>&1 | FileCheck %s --check-prefix=AFTER

#Z = #sl.layout<@mesh, [[], [cp, tp] zigzag, []]>
#H = #sl.layout<@mesh, [[], [], [cp, tp]]>
#M = #sl.layout<@mesh, [[], [tp], [cp]]>
#T = #sl.layout<@mesh, [[], [tp], []]>
#R = #sl.layout<@mesh, [[], []]>
#V = #sl.layout<@mesh, [[]]>
#I = #sl.layout<@mesh, [[], [cp, tp] zigzag]>
sl.mesh @mesh(cp = 2, tp = 2)

// The sequence split over cp and tp in zigzag order, taken to the hidden
// dimension by an all-to-all over both axes, half of it back over tp and the
// rest gathered over cp, for a norm that needs only the hidden dimension
// whole; then the same way back: 896 bytes per rank. The optimum, 0: the norm
// runs on the sequence split as it comes (random program 212 of
// test/Unit/ElidePropertyTest.cpp). The moves of one kind go first: the
// gather over cp goes later, meets the slice and sends the same bytes as
// all-to-alls. Then one chain move: the three transitions before the norm go
// as one, onto the layout their chain starts at, and the three after it,
// reading that layout, become nothing.
// CHECK-LABEL: model detour
// CHECK: elided chain: sunk past sl.rms_norm
// CHECK: elided chain: met sl.all_to_all + sl.all_to_all + sl.all_to_all and became nothing
// CHECK: totals: 0 bytes sent per rank in 0 collectives
// CHECK: func.func @detour
// CHECK-NEXT: sl.weight
// CHECK-NEXT: sl.weight
// CHECK-NEXT: sl.weight
// CHECK-NEXT: %[[E:.*]] = sl.embedding %arg0
// CHECK-NEXT: %[[N:.*]] = sl.rms_norm %[[E]]
// CHECK-NEXT: %[[O:.*]] = sl.rms_norm %[[N]]
// CHECK-NEXT: return %[[O]]
// PEAK-LABEL: model detour
// PEAK: totals: 0 bytes sent per rank in 0 collectives
// Each transition of the chain before the norm: the chain goes and the norm
// runs on the layout it starts in.
// EXPLAIN: remark: all_to_all over [cp, tp]: 192 bytes per rank; needed by sl.all_to_all; cheaper: sl.all_to_all + sl.all_to_all + sl.all_gather (576 bytes per rank) goes: the chain starts in {{\[\[}}], [cp, tp] zigzag, []] (0 bytes per rank); sl.rms_norm runs on {{\[\[}}], [cp, tp] zigzag, []] (sl-elide-gathers: 896 -> 0 bytes per rank in this region)
// EXPLAIN: remark: all_to_all over [tp]: 128 bytes per rank; {{.*}}; cheaper: sl.all_to_all + sl.all_to_all + sl.all_gather (576 bytes per rank) goes
// EXPLAIN: remark: all_gather over [cp]: 256 bytes per rank; {{.*}}; cheaper: sl.all_to_all + sl.all_to_all + sl.all_gather (576 bytes per rank) goes
// The slice and the two all-to-alls after it read that layout and go.
// EXPLAIN: remark: all_to_all over [tp]: 128 bytes per rank; needed by sl.all_to_all; cheaper: sl.slice + sl.all_to_all + sl.all_to_all (320 bytes per rank) reads {{\[\[}}], [cp, tp] zigzag, []] and goes: it ends in {{\[\[}}], [cp, tp] zigzag, []] (0 bytes per rank); sl.rms_norm runs on {{\[\[}}], [cp, tp] zigzag, []] (sl-elide-gathers: 896 -> 0 bytes per rank in this region)
// EXPLAIN: remark: all_to_all over [cp, tp]: 192 bytes per rank; {{.*}}; cheaper: sl.slice + sl.all_to_all + sl.all_to_all (320 bytes per rank) reads
// AFTER-NOT: cheaper
func.func @detour(%ids: tensor<2x8xi32, #I>) -> tensor<2x8x16xf32, #Z> {
  %t = sl.weight "t" : tensor<32x16xf32, #R>
  %w2 = sl.weight "w2" : tensor<16xf32, #V>
  %w3 = sl.weight "w3" : tensor<16xf32, #V>
  %e = sl.embedding %ids, %t : (tensor<2x8xi32, #I>, tensor<32x16xf32, #R>) -> tensor<2x8x16xf32, #Z>
  %a = sl.all_to_all %e {axes = ["cp", "tp"], split_dim = 2, concat_dim = 1} : tensor<2x8x16xf32, #Z> -> tensor<2x8x16xf32, #H>
  %b = sl.all_to_all %a {axes = ["tp"], split_dim = 1, concat_dim = 2} : tensor<2x8x16xf32, #H> -> tensor<2x8x16xf32, #M>
  %g = sl.all_gather %b {axes = ["cp"], dim = 2} : tensor<2x8x16xf32, #M> -> tensor<2x8x16xf32, #T>
  %n = sl.rms_norm %g, %w2 : (tensor<2x8x16xf32, #T>, tensor<16xf32, #V>) -> tensor<2x8x16xf32, #T>
  %s = sl.slice %n {axes = ["cp"], dim = 2} : tensor<2x8x16xf32, #T> -> tensor<2x8x16xf32, #M>
  %c = sl.all_to_all %s {axes = ["tp"], split_dim = 2, concat_dim = 1} : tensor<2x8x16xf32, #M> -> tensor<2x8x16xf32, #H>
  %d = sl.all_to_all %c {axes = ["cp", "tp"], split_dim = 1, concat_dim = 2} : tensor<2x8x16xf32, #H> -> tensor<2x8x16xf32, #Z>
  %o = sl.rms_norm %d, %w3 : (tensor<2x8x16xf32, #Z>, tensor<16xf32, #V>) -> tensor<2x8x16xf32, #Z>
  return %o : tensor<2x8x16xf32, #Z>
}
