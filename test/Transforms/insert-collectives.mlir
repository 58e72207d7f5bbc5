// RUN: shardline-opt %s -split-input-file -sl-insert-collectives -verify-diagnostics | FileCheck %s
// RUN: shardline-opt %s -split-input-file -sl-insert-collectives -verify-diagnostics | shardline-opt -split-input-file -sl-insert-collectives | FileCheck %s

sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-LABEL: func.func @reduce_scatter
// CHECK: sl.reduce_scatter %{{.*}} {axes = ["tp"], dim = 1 : i64, sl.reason = "why"}
// CHECK-NOT: sl.relayout
func.func @reduce_scatter(%x: tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp], []], partial = [tp]>>) -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp, tp], []]>> {
  %y = sl.relayout %x {sl.reason = "why"} : tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp], []], partial = [tp]>> -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>
  return %y : tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>
}

// -----

sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-LABEL: func.func @all_reduce
// CHECK: sl.all_reduce %{{.*}} {axes = ["tp"]}
func.func @all_reduce(%x: tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp], []], partial = [tp]>>) -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>> {
  %y = sl.relayout %x : tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp], []], partial = [tp]>> -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>
  return %y : tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>
}

// -----

sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// A gather of the minor axis keeps the chunk order of the major one.
// CHECK-LABEL: func.func @all_gather
// CHECK: sl.all_gather %{{.*}} {axes = ["tp"], dim = 1 : i64} : tensor<2x8x4xf32, #{{.*}}> -> tensor<2x8x4xf32, #[[L:.*]]>
// CHECK: return {{.*}}#[[L]]>
func.func @all_gather(%x: tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp, tp] zigzag, []]>>) -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>> {
  %y = sl.relayout %x : tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp, tp] zigzag, []]>> -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>
  return %y : tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>
}

// -----

sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// Gathering a whole dimension takes one gather per axis, minor first.
// CHECK-LABEL: func.func @gather_twice
// CHECK: sl.all_gather %{{.*}} {axes = ["tp"], dim = 1 : i64}
// CHECK: sl.all_gather %{{.*}} {axes = ["cp"], dim = 1 : i64}
func.func @gather_twice(%x: tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>) -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [], []]>> {
  %y = sl.relayout %x : tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp, tp], []]>> -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [], []]>>
  return %y : tensor<2x8x4xf32, #sl.layout<@mesh, [[], [], []]>>
}

// -----

sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// An axis moving between dimensions is an all-to-all, not a gather.
// CHECK-LABEL: func.func @all_to_all
// CHECK: sl.all_to_all %{{.*}} {axes = ["ep"], concat_dim = 1 : i64, split_dim = 0 : i64}
// CHECK-NOT: sl.all_gather
func.func @all_to_all(%x: tensor<4x2x8x4xf32, #sl.layout<@mesh, [[], [ep], [], []]>>) -> tensor<4x2x8x4xf32, #sl.layout<@mesh, [[ep], [], [], []]>> {
  %y = sl.relayout %x : tensor<4x2x8x4xf32, #sl.layout<@mesh, [[], [ep], [], []]>> -> tensor<4x2x8x4xf32, #sl.layout<@mesh, [[ep], [], [], []]>>
  return %y : tensor<4x2x8x4xf32, #sl.layout<@mesh, [[ep], [], [], []]>>
}

// -----

sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// Sequence <-> heads (a2a context parallelism); the sequence comes back in zigzag order.
// CHECK-LABEL: func.func @seq_heads
// CHECK: sl.all_to_all %{{.*}} {axes = ["cp"], concat_dim = 2 : i64, split_dim = 1 : i64} : {{.*}} -> tensor<1x8x16xf32, #[[Z:.*]]>
// CHECK: return {{.*}}#[[Z]]>
func.func @seq_heads(%x: tensor<1x8x16xf32, #sl.layout<@mesh, [[], [], [tp, cp]]>>) -> tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>> {
  %y = sl.relayout %x : tensor<1x8x16xf32, #sl.layout<@mesh, [[], [], [tp, cp]]>> -> tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>>
  return %y : tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>>
}

// -----

sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-LABEL: func.func @slice
// CHECK: sl.slice %{{.*}} {axes = ["tp"], dim = 1 : i64}
func.func @slice(%x: tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>) -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp, tp], []]>> {
  %y = sl.relayout %x : tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>> -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>
  return %y : tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>
}

// -----

sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-LABEL: func.func @reorder
// CHECK: sl.reorder %{{.*}} : tensor<2x8x4xf32, #{{.*}}> -> tensor<2x8x4xf32, #{{.*}}>
// CHECK-NOT: sl.all_gather
func.func @reorder(%x: tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>) -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>> {
  %y = sl.relayout %x : tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>> -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>
  return %y : tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>
}

// -----

sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
func.func @create_partial(%x: tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>) -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp], []], partial = [tp]>> {
  // expected-error @+1 {{cannot create a pending sum over 'tp'}}
  %y = sl.relayout %x : tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>> -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp], []], partial = [tp]>>
  return %y : tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp], []], partial = [tp]>>
}

// -----

sl.mesh @mesh(cp = 2, tp = 2)
// An axis that blocks the dimension another joins moves out of the way by
// all-to-all while the tensor is still split (256 bytes per rank), instead
// of gathering the other first (512).
// CHECK-LABEL: func.func @move_before_gather
// CHECK: sl.all_to_all %{{.*}} {axes = ["cp"], concat_dim = 1 : i64, split_dim = 2 : i64}
// CHECK-NEXT: sl.all_to_all %{{.*}} {axes = ["tp"], concat_dim = 0 : i64, split_dim = 1 : i64}
// CHECK-NEXT: return
func.func @move_before_gather(%x: tensor<2x8x16xf32, #sl.layout<@mesh, [[tp], [cp], []]>>) -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], [cp]]>> {
  %y = sl.relayout %x : tensor<2x8x16xf32, #sl.layout<@mesh, [[tp], [cp], []]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], [cp]]>>
  return %y : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], [cp]]>>
}

// -----

sl.mesh @mesh(cp = 2, tp = 2)
// Two axes trade dimensions through a third that has room for one of them:
// three all-to-alls (384 bytes per rank) instead of gather, all-to-all and
// slice (512).
// CHECK-LABEL: func.func @swap_through_free_dim
// CHECK: sl.all_to_all %{{.*}} {axes = ["cp"], concat_dim = 1 : i64, split_dim = 2 : i64}
// CHECK-NEXT: sl.all_to_all %{{.*}} {axes = ["tp"], concat_dim = 0 : i64, split_dim = 1 : i64}
// CHECK-NEXT: sl.all_to_all %{{.*}} {axes = ["cp"], concat_dim = 2 : i64, split_dim = 0 : i64}
// CHECK-NEXT: return
func.func @swap_through_free_dim(%x: tensor<2x8x16xf32, #sl.layout<@mesh, [[tp], [cp], []]>>) -> tensor<2x8x16xf32, #sl.layout<@mesh, [[cp], [tp], []]>> {
  %y = sl.relayout %x : tensor<2x8x16xf32, #sl.layout<@mesh, [[tp], [cp], []]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[cp], [tp], []]>>
  return %y : tensor<2x8x16xf32, #sl.layout<@mesh, [[cp], [tp], []]>>
}

// -----

sl.mesh @mesh(cp = 2, tp = 2)
// The same change where the third dimension (extent 1) cannot be split:
// every intermediate layout must divide the tensor, so the gather stays.
// CHECK-LABEL: func.func @swap_without_room
// CHECK: sl.all_gather %{{.*}} {axes = ["tp"], dim = 0 : i64}
// CHECK-NEXT: sl.all_to_all %{{.*}} {axes = ["cp"], concat_dim = 1 : i64, split_dim = 0 : i64}
// CHECK-NEXT: sl.slice %{{.*}} {axes = ["tp"], dim = 1 : i64}
// CHECK-NEXT: return
func.func @swap_without_room(%x: tensor<2x8x1xf32, #sl.layout<@mesh, [[tp], [cp], []]>>) -> tensor<2x8x1xf32, #sl.layout<@mesh, [[cp], [tp], []]>> {
  %y = sl.relayout %x : tensor<2x8x1xf32, #sl.layout<@mesh, [[tp], [cp], []]>> -> tensor<2x8x1xf32, #sl.layout<@mesh, [[cp], [tp], []]>>
  return %y : tensor<2x8x1xf32, #sl.layout<@mesh, [[cp], [tp], []]>>
}

// -----

sl.mesh @mesh(cp = 2, tp = 2)
// A pending sum whose target dimension is still taken: the axis in the way
// moves first, then the sum is scattered onto the freed dimension (one
// all-to-all and one reduce-scatter instead of all-reduce, all-to-all and
// slice).
// CHECK-LABEL: func.func @scatter_after_move
// CHECK: sl.all_to_all %{{.*}} {axes = ["cp"], concat_dim = 1 : i64, split_dim = 2 : i64}
// CHECK-NEXT: sl.reduce_scatter %{{.*}} {axes = ["tp"], dim = 1 : i64}
// CHECK-NEXT: return
func.func @scatter_after_move(%x: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp], []], partial = [tp]>>) -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], [cp]]>> {
  %y = sl.relayout %x : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp], []], partial = [tp]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], [cp]]>>
  return %y : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], [cp]]>>
}

// -----

sl.mesh @mesh(cp = 2, tp = 2)
// A new split is a free local slice, so it comes first: the gather after it
// sends half as much.
// CHECK-LABEL: func.func @slice_before_gather
// CHECK: sl.slice %{{.*}} {axes = ["cp"], dim = 1 : i64}
// CHECK-NEXT: sl.all_gather %{{.*}} {axes = ["tp"], dim = 0 : i64}
// CHECK-NEXT: return
func.func @slice_before_gather(%x: tensor<2x8x16xf32, #sl.layout<@mesh, [[tp], [], []]>>) -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>> {
  %y = sl.relayout %x : tensor<2x8x16xf32, #sl.layout<@mesh, [[tp], [], []]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>
  return %y : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>
}

// -----

sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// The experts' buffers under expert tensor parallelism: cp moves to the
// experts' dimension (sl.reason), tp leaves the tensor (sl.gather_reason),
// and the all_gather over tp says why tp goes, not why cp moves.
// CHECK-LABEL: func.func @gather_reason
// CHECK: sl.all_to_all %{{.*}} {axes = ["cp", "tp"], concat_dim = 1 : i64, sl.reason = "experts split", split_dim = 0 : i64}
// CHECK-NEXT: sl.all_gather %{{.*}} {axes = ["tp"], dim = 0 : i64, sl.reason = "ffn split"}
// CHECK-NOT: sl.gather_reason
func.func @gather_reason(%x: tensor<8x8x4xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>) -> tensor<8x8x4xf32, #sl.layout<@mesh, [[cp], [], []]>> {
  %y = sl.relayout %x {sl.reason = "experts split", sl.gather_reason = "ffn split"} : tensor<8x8x4xf32, #sl.layout<@mesh, [[], [cp, tp], []]>> -> tensor<8x8x4xf32, #sl.layout<@mesh, [[cp], [], []]>>
  return %y : tensor<8x8x4xf32, #sl.layout<@mesh, [[cp], [], []]>>
}
