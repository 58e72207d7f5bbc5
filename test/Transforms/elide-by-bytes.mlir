// One program per way a placement can go wrong, each with the bytes per rank of
// its optimum (docs/passes.md, "How sl-elide-gathers decides"). The pass never
// leaves a program with more bytes than it came in with, and a second run
// changes nothing.
// RUN: shardline-opt %s -split-input-file -sl-elide-gathers -sl-analyze 2>&1 | FileCheck %s
// RUN: shardline-opt %s -split-input-file -sl-elide-gathers > %t.once.mlir
// RUN: shardline-opt %t.once.mlir -split-input-file -sl-elide-gathers > %t.twice.mlir
// RUN: diff %t.once.mlir %t.twice.mlir
// sl-explain prices with the pass's cost function: it finds the moves in the
// input and none in the output.
// RUN: shardline-opt %s -split-input-file -sl-explain=lint=true 2>&1 | FileCheck %s --check-prefix=BEFORE
// RUN: shardline-opt %s -split-input-file -sl-elide-gathers -sl-explain=lint=true 2>&1 | FileCheck %s --check-prefix=AFTER
// AFTER-NOT: cheaper:
// AFTER-NOT: premature

// A gather before an op that widens its result (a replicated head, 16 -> 64)
// stays where it is: after the op it would send 4x the bytes.
#S = #sl.layout<@mesh, [[], [tp], []]>
#W = #sl.layout<@mesh, [[], [], []]>
#R = #sl.layout<@mesh, [[], []]>
sl.mesh @mesh(tp = 2)
// CHECK-LABEL: totals: 512 bytes sent per rank in 1 collectives
// CHECK: func.func @widening_op
// CHECK-NEXT: sl.weight
// CHECK-NEXT: sl.all_gather %arg0
// CHECK-NEXT: sl.linear
func.func @widening_op(%x: tensor<2x8x16xf32, #S>) -> tensor<2x8x64xf32, #W> {
  %w = sl.weight "head" : tensor<16x64xf32, #R>
  %g = sl.all_gather %x {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #S> -> tensor<2x8x16xf32, #W>
  %h = sl.linear %g, %w : (tensor<2x8x16xf32, #W>, tensor<16x64xf32, #R>) -> tensor<2x8x64xf32, #W>
  return %h : tensor<2x8x64xf32, #W>
}

// -----

// A gather whose two users both end in results that need the whole value:
// one gather serves both (sinking would gather twice).
#S = #sl.layout<@mesh, [[], [tp], []]>
#W = #sl.layout<@mesh, [[], [], []]>
sl.mesh @mesh(tp = 2)
// CHECK-LABEL: totals: 512 bytes sent per rank in 1 collectives
// CHECK: func.func @two_whole_users
func.func @two_whole_users(%x: tensor<2x8x16xf32, #S>) -> (tensor<2x8x16xf32, #W>, tensor<2x8x16xf32, #W>) {
  %g = sl.all_gather %x {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #S> -> tensor<2x8x16xf32, #W>
  %a = sl.silu %g : (tensor<2x8x16xf32, #W>) -> tensor<2x8x16xf32, #W>
  %b = sl.add %g, %g : (tensor<2x8x16xf32, #W>, tensor<2x8x16xf32, #W>) -> tensor<2x8x16xf32, #W>
  return %a, %b : tensor<2x8x16xf32, #W>, tensor<2x8x16xf32, #W>
}

// -----

// An all-reduce before a widening op stays an all-reduce: reduce-scatter +
// gathering the widened result would send 2.5x (512 + 2048 against 1024).
#P = #sl.layout<@mesh, [[], [], []], partial = [tp]>
#W = #sl.layout<@mesh, [[], [], []]>
#R = #sl.layout<@mesh, [[], []]>
sl.mesh @mesh(tp = 2)
// CHECK-LABEL: totals: 1024 bytes sent per rank in 1 collectives (all_reduce 1)
// CHECK: func.func @reduce_before_widening
func.func @reduce_before_widening(%p: tensor<2x8x16xf32, #P>) -> tensor<2x8x40xf32, #W> {
  %w = sl.weight "up" : tensor<16x40xf32, #R>
  %r = sl.all_reduce %p {axes = ["tp"]} : tensor<2x8x16xf32, #P> -> tensor<2x8x16xf32, #W>
  %h = sl.linear %r, %w : (tensor<2x8x16xf32, #W>, tensor<16x40xf32, #R>) -> tensor<2x8x40xf32, #W>
  return %h : tensor<2x8x40xf32, #W>
}

// -----

// The slice after the all-reduce is on dimension 2: the reduce-scatter goes
// there (the sum of a pending value, split where its user wants it).
#P = #sl.layout<@mesh, [[], [], []], partial = [tp]>
#W = #sl.layout<@mesh, [[], [], []]>
#H = #sl.layout<@mesh, [[], [], [tp]]>
sl.mesh @mesh(tp = 2)
// CHECK-LABEL: totals: 512 bytes sent per rank in 1 collectives (reduce_scatter 1)
// CHECK: func.func @scatter_dim_from_user
// CHECK: sl.reduce_scatter %arg0 {axes = ["tp"], dim = 2 : i64}
// CHECK-NEXT: sl.silu
// CHECK-NEXT: return
func.func @scatter_dim_from_user(%p: tensor<2x8x16xf32, #P>) -> tensor<2x8x16xf32, #H> {
  %r = sl.all_reduce %p {axes = ["tp"]} : tensor<2x8x16xf32, #P> -> tensor<2x8x16xf32, #W>
  %a = sl.silu %r : (tensor<2x8x16xf32, #W>) -> tensor<2x8x16xf32, #W>
  %s = sl.slice %a {axes = ["tp"], dim = 2} : tensor<2x8x16xf32, #W> -> tensor<2x8x16xf32, #H>
  return %s : tensor<2x8x16xf32, #H>
}

// -----

// A tensor-parallel block written without sequence parallelism on a
// sequence-split stream: the gather of the stream and the all-reduce meet at
// the residual add. The optimum is the SP form: the norm and the add run on
// the split stream, the gather moves to the norm's output and the all-reduce
// becomes a reduce-scatter (1024 bytes against 1536).
#S = #sl.layout<@mesh, [[], [tp], []]>
#W = #sl.layout<@mesh, [[], [], []]>
#H = #sl.layout<@mesh, [[], [], [tp]]>
#P = #sl.layout<@mesh, [[], [], []], partial = [tp]>
#N = #sl.layout<@mesh, [[]]>
#C = #sl.layout<@mesh, [[], [tp]]>
#D = #sl.layout<@mesh, [[tp], []]>
sl.mesh @mesh(tp = 2)
// CHECK-LABEL: totals: 1024 bytes sent per rank in 2 collectives (all_gather 1, reduce_scatter 1)
// BEFORE: warning: premature gather: sinking it past sl.rms_norm (sl-elide-gathers: 1536 -> 1024 bytes per rank in this region)
// BEFORE: remark: all_reduce over [tp]: 1024 bytes per rank; needed by sl.add; cheaper: reduce_scatter over [tp], the sum gathered later past sl.rms_norm (sl-elide-gathers: 1536 -> 1024 bytes per rank in this region)
// CHECK: func.func @tp_block_on_split_stream
// CHECK: %[[N:.*]] = sl.rms_norm %arg0
// CHECK-NEXT: sl.all_gather %[[N]]
// CHECK: %[[RS:.*]] = sl.reduce_scatter
// CHECK-NEXT: %[[O:.*]] = sl.add %arg0, %[[RS]]
// CHECK-NEXT: return %[[O]]
func.func @tp_block_on_split_stream(%x: tensor<2x8x16xf32, #S>) -> tensor<2x8x16xf32, #S> {
  %wn = sl.weight "norm" : tensor<16xf32, #N>
  %wc = sl.weight "col" : tensor<16x32xf32, #C>
  %wd = sl.weight "row" : tensor<32x16xf32, #D>
  %g = sl.all_gather %x {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #S> -> tensor<2x8x16xf32, #W>
  %n = sl.rms_norm %g, %wn : (tensor<2x8x16xf32, #W>, tensor<16xf32, #N>) -> tensor<2x8x16xf32, #W>
  %h = sl.linear %n, %wc : (tensor<2x8x16xf32, #W>, tensor<16x32xf32, #C>) -> tensor<2x8x32xf32, #H>
  %a = sl.silu %h : (tensor<2x8x32xf32, #H>) -> tensor<2x8x32xf32, #H>
  %y = sl.linear %a, %wd : (tensor<2x8x32xf32, #H>, tensor<32x16xf32, #D>) -> tensor<2x8x16xf32, #P>
  %r = sl.all_reduce %y {axes = ["tp"]} : tensor<2x8x16xf32, #P> -> tensor<2x8x16xf32, #W>
  %o = sl.add %g, %r : (tensor<2x8x16xf32, #W>, tensor<2x8x16xf32, #W>) -> tensor<2x8x16xf32, #W>
  %s = sl.slice %o {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #W> -> tensor<2x8x16xf32, #S>
  return %s : tensor<2x8x16xf32, #S>
}

// -----

// An all-reduce whose result an elementwise op reuses (r + silu(r)) before a
// slice: one reduce-scatter, everything after it split (512 against 1024).
#P = #sl.layout<@mesh, [[], [], []], partial = [tp]>
#W = #sl.layout<@mesh, [[], [], []]>
#S = #sl.layout<@mesh, [[], [tp], []]>
sl.mesh @mesh(tp = 2)
// CHECK-LABEL: totals: 512 bytes sent per rank in 1 collectives (reduce_scatter 1)
// CHECK: func.func @reduce_reused
func.func @reduce_reused(%p: tensor<2x8x16xf32, #P>) -> tensor<2x8x16xf32, #S> {
  %r = sl.all_reduce %p {axes = ["tp"]} : tensor<2x8x16xf32, #P> -> tensor<2x8x16xf32, #W>
  %a = sl.silu %r : (tensor<2x8x16xf32, #W>) -> tensor<2x8x16xf32, #W>
  %o = sl.add %r, %a : (tensor<2x8x16xf32, #W>, tensor<2x8x16xf32, #W>) -> tensor<2x8x16xf32, #W>
  %s = sl.slice %o {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #W> -> tensor<2x8x16xf32, #S>
  return %s : tensor<2x8x16xf32, #S>
}

// -----

// One gather feeds q, k and v of attention: keys need it, queries do not. q
// reads the split stream, so the output is split and the slice goes (the
// same 256 bytes, half the activations).
#S = #sl.layout<@mesh, [[], [cp], []]>
#W = #sl.layout<@mesh, [[], [], []]>
sl.mesh @mesh(cp = 2)
// CHECK-LABEL: totals: 256 bytes sent per rank in 1 collectives (all_gather 1)
// CHECK: func.func @shared_qkv_gather
// CHECK: %[[G:.*]] = sl.all_gather %arg0
// CHECK-NEXT: %[[O:.*]] = sl.attention %arg0, %[[G]], %[[G]]
// CHECK-NEXT: return %[[O]]
func.func @shared_qkv_gather(%x: tensor<1x8x16xf32, #S>) -> tensor<1x8x16xf32, #S> {
  %g = sl.all_gather %x {axes = ["cp"], dim = 1} : tensor<1x8x16xf32, #S> -> tensor<1x8x16xf32, #W>
  %o = sl.attention %g, %g, %g {heads = 4, kv_heads = 4} : (tensor<1x8x16xf32, #W>, tensor<1x8x16xf32, #W>, tensor<1x8x16xf32, #W>) -> tensor<1x8x16xf32, #W>
  %s = sl.slice %o {axes = ["cp"], dim = 1} : tensor<1x8x16xf32, #W> -> tensor<1x8x16xf32, #S>
  return %s : tensor<1x8x16xf32, #S>
}

// -----

// A residual over twelve free ops: the gather and the slice both go, however
// long the chain (0 bytes against 512).
#S = #sl.layout<@mesh, [[], [tp], []]>
#W = #sl.layout<@mesh, [[], [], []]>
sl.mesh @mesh(tp = 2)
// CHECK-LABEL: totals: 0 bytes sent per rank in 0 collectives
// CHECK: func.func @long_residual
func.func @long_residual(%x: tensor<2x8x16xf32, #S>) -> tensor<2x8x16xf32, #S> {
  %g = sl.all_gather %x {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #S> -> tensor<2x8x16xf32, #W>
  %0 = sl.silu %g : (tensor<2x8x16xf32, #W>) -> tensor<2x8x16xf32, #W>
  %1 = sl.silu %0 : (tensor<2x8x16xf32, #W>) -> tensor<2x8x16xf32, #W>
  %2 = sl.silu %1 : (tensor<2x8x16xf32, #W>) -> tensor<2x8x16xf32, #W>
  %3 = sl.silu %2 : (tensor<2x8x16xf32, #W>) -> tensor<2x8x16xf32, #W>
  %4 = sl.silu %3 : (tensor<2x8x16xf32, #W>) -> tensor<2x8x16xf32, #W>
  %5 = sl.silu %4 : (tensor<2x8x16xf32, #W>) -> tensor<2x8x16xf32, #W>
  %6 = sl.silu %5 : (tensor<2x8x16xf32, #W>) -> tensor<2x8x16xf32, #W>
  %7 = sl.silu %6 : (tensor<2x8x16xf32, #W>) -> tensor<2x8x16xf32, #W>
  %8 = sl.silu %7 : (tensor<2x8x16xf32, #W>) -> tensor<2x8x16xf32, #W>
  %9 = sl.silu %8 : (tensor<2x8x16xf32, #W>) -> tensor<2x8x16xf32, #W>
  %10 = sl.silu %9 : (tensor<2x8x16xf32, #W>) -> tensor<2x8x16xf32, #W>
  %11 = sl.silu %10 : (tensor<2x8x16xf32, #W>) -> tensor<2x8x16xf32, #W>
  %o = sl.add %g, %11 : (tensor<2x8x16xf32, #W>, tensor<2x8x16xf32, #W>) -> tensor<2x8x16xf32, #W>
  %s = sl.slice %o {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #W> -> tensor<2x8x16xf32, #S>
  return %s : tensor<2x8x16xf32, #S>
}

// -----

// A gather over [cp, tp] where only tp must go (the column-parallel linear
// splits its output over tp; cp may stay on the sequence): gather tp alone,
// 128 bytes against 384.
#CT = #sl.layout<@mesh, [[], [cp, tp], []]>
#C = #sl.layout<@mesh, [[], [cp], []]>
#W = #sl.layout<@mesh, [[], [], []]>
#WH = #sl.layout<@mesh, [[], [], [tp]]>
#CH = #sl.layout<@mesh, [[], [cp], [tp]]>
#WC = #sl.layout<@mesh, [[], [tp]]>
sl.mesh @mesh(cp = 2, tp = 2)
// CHECK-LABEL: totals: 128 bytes sent per rank in 1 collectives (all_gather 1)
// CHECK: func.func @narrow_gather
// CHECK: sl.all_gather %arg0 {axes = ["tp"], dim = 1 : i64}
func.func @narrow_gather(%x: tensor<1x8x16xf32, #CT>) -> tensor<1x8x32xf32, #CH> {
  %w = sl.weight "col" : tensor<16x32xf32, #WC>
  %g = sl.all_gather %x {axes = ["cp", "tp"], dim = 1} : tensor<1x8x16xf32, #CT> -> tensor<1x8x16xf32, #W>
  %h = sl.linear %g, %w : (tensor<1x8x16xf32, #W>, tensor<16x32xf32, #WC>) -> tensor<1x8x32xf32, #WH>
  %s = sl.slice %h {axes = ["cp"], dim = 1} : tensor<1x8x32xf32, #WH> -> tensor<1x8x32xf32, #CH>
  return %s : tensor<1x8x32xf32, #CH>
}

// -----

// A gather, a free op, then a slice of another dimension: one all_to_all
// (256 bytes against 512).
#S = #sl.layout<@mesh, [[], [tp], []]>
#W = #sl.layout<@mesh, [[], [], []]>
#H = #sl.layout<@mesh, [[], [], [tp]]>
sl.mesh @mesh(tp = 2)
// CHECK-LABEL: totals: 256 bytes sent per rank in 1 collectives (all_to_all 1)
// CHECK: func.func @gather_slice_other_dim
func.func @gather_slice_other_dim(%x: tensor<2x8x16xf32, #S>) -> tensor<2x8x16xf32, #H> {
  %g = sl.all_gather %x {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #S> -> tensor<2x8x16xf32, #W>
  %a = sl.silu %g : (tensor<2x8x16xf32, #W>) -> tensor<2x8x16xf32, #W>
  %s = sl.slice %a {axes = ["tp"], dim = 2} : tensor<2x8x16xf32, #W> -> tensor<2x8x16xf32, #H>
  return %s : tensor<2x8x16xf32, #H>
}

// -----

// A zigzag gather, then a contiguous slice: a reorder moves only the chunks
// whose owner changes (32 bytes against 64).
#Z = #sl.layout<@mesh, [[], [cp] zigzag, []]>
#C = #sl.layout<@mesh, [[], [cp], []]>
#W = #sl.layout<@mesh, [[], [], []]>
sl.mesh @mesh(cp = 2)
// CHECK-LABEL: totals: 32 bytes sent per rank in 1 collectives (reorder 1)
// CHECK: func.func @zigzag_to_contiguous
func.func @zigzag_to_contiguous(%x: tensor<1x8x4xf32, #Z>) -> tensor<1x8x4xf32, #C> {
  %g = sl.all_gather %x {axes = ["cp"], dim = 1} : tensor<1x8x4xf32, #Z> -> tensor<1x8x4xf32, #W>
  %a = sl.silu %g : (tensor<1x8x4xf32, #W>) -> tensor<1x8x4xf32, #W>
  %s = sl.slice %a {axes = ["cp"], dim = 1} : tensor<1x8x4xf32, #W> -> tensor<1x8x4xf32, #C>
  return %s : tensor<1x8x4xf32, #C>
}

// -----

// A replicated value sliced, passed through a free op and gathered back:
// nothing moves (0 bytes against 512).
#S = #sl.layout<@mesh, [[], [tp], []]>
#W = #sl.layout<@mesh, [[], [], []]>
sl.mesh @mesh(tp = 2)
// CHECK-LABEL: totals: 0 bytes sent per rank in 0 collectives
// CHECK: func.func @slice_then_gather
func.func @slice_then_gather(%x: tensor<2x8x16xf32, #W>) -> tensor<2x8x16xf32, #W> {
  %s = sl.slice %x {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #W> -> tensor<2x8x16xf32, #S>
  %a = sl.silu %s : (tensor<2x8x16xf32, #S>) -> tensor<2x8x16xf32, #S>
  %g = sl.all_gather %a {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #S> -> tensor<2x8x16xf32, #W>
  return %g : tensor<2x8x16xf32, #W>
}

// -----

// An all_to_all and its inverse with free ops between: both go (0 bytes
// against 512).
#S = #sl.layout<@mesh, [[], [tp], []]>
#H = #sl.layout<@mesh, [[], [], [tp]]>
sl.mesh @mesh(tp = 2)
// CHECK-LABEL: totals: 0 bytes sent per rank in 0 collectives
// CHECK: func.func @a2a_round_trip
func.func @a2a_round_trip(%x: tensor<2x8x16xf32, #S>) -> tensor<2x8x16xf32, #S> {
  %a = sl.all_to_all %x {axes = ["tp"], split_dim = 2, concat_dim = 1} : tensor<2x8x16xf32, #S> -> tensor<2x8x16xf32, #H>
  %b = sl.silu %a : (tensor<2x8x16xf32, #H>) -> tensor<2x8x16xf32, #H>
  %c = sl.add %a, %b : (tensor<2x8x16xf32, #H>, tensor<2x8x16xf32, #H>) -> tensor<2x8x16xf32, #H>
  %d = sl.all_to_all %c {axes = ["tp"], split_dim = 1, concat_dim = 2} : tensor<2x8x16xf32, #H> -> tensor<2x8x16xf32, #S>
  return %d : tensor<2x8x16xf32, #S>
}
