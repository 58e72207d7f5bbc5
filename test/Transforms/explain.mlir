// RUN: shardline-opt %s -split-input-file -sl-explain -verify-diagnostics -o /dev/null
// RUN: shardline-opt %s -split-input-file -sl-explain=lint=true -o /dev/null 2>&1 | FileCheck %s --check-prefix=LINT

sl.mesh @mesh(tp = 2)
func.func @needed(%x: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>>) -> tensor<2x8x32xf32, #sl.layout<@mesh, [[], [], [tp]]>> {
  %wc = sl.weight "col" : tensor<16x32xf32, #sl.layout<@mesh, [[], [tp]]>>
  // expected-remark @+1 {{all_gather over [tp]: 512 bytes per rank; needed by sl.linear; the weight splits n over [tp]}}
  %g = sl.all_gather %x {axes = ["tp"], dim = 1, sl.reason = "the weight splits n over [tp]"} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
  %h = sl.linear %g, %wc : (tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>, tensor<16x32xf32, #sl.layout<@mesh, [[], [tp]]>>) -> tensor<2x8x32xf32, #sl.layout<@mesh, [[], [], [tp]]>>
  return %h : tensor<2x8x32xf32, #sl.layout<@mesh, [[], [], [tp]]>>
}

// -----

// A gather whose only user accepts the split layout is premature: the remark
// names the cheaper placement, and lint warns.
sl.mesh @mesh(tp = 2)
func.func @premature(%x: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>>) -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>> {
  // expected-remark @+1 {{all_gather over [tp]: 512 bytes per rank; needed by sl.silu; cheaper: sinking it past sl.silu (sl-elide-gathers: the same 512 bytes per rank, activations 1024 -> 512 in this region)}}
  %g = sl.all_gather %x {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
  %s = sl.silu %g : (tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>) -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
  return %s : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
}
// LINT: explain.mlir:20:8: warning: premature gather: sinking it past sl.silu (sl-elide-gathers: the same 512 bytes per rank, activations 1024 -> 512 in this region)
// LINT-NOT: warning:

// -----

sl.mesh @mesh(tp = 2)
func.func @scatter(%p: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []], partial = [tp]>>) -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>> {
  // expected-remark @+1 {{reduce_scatter over [tp]: 512 bytes per rank; needed by func.return; rejected: all_reduce (twice the bytes, and the result whole on every rank)}}
  %s = sl.reduce_scatter %p {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []], partial = [tp]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>>
  return %s : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>>
}

// -----

// Every user of the all_reduce accepts its result split on the sequence: a
// reduce_scatter would do, for half the bytes.
sl.mesh @mesh(tp = 2)
func.func @scatter_would_do(%p: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []], partial = [tp]>>) -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>> {
  // expected-remark @+1 {{all_reduce over [tp]: 1024 bytes per rank; needed by sl.silu; cheaper: reduce_scatter over [tp], the sum gathered later past sl.silu (sl-elide-gathers: the same 1024 bytes per rank, activations 1024 -> 512 in this region)}}
  %r = sl.all_reduce %p {axes = ["tp"]} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []], partial = [tp]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
  %s = sl.silu %r : (tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>) -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
  return %s : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
}

// -----

// The function returns the reduced value whole: the reduce_scatter is rejected.
sl.mesh @mesh(tp = 2)
func.func @whole_needed(%p: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []], partial = [tp]>>) -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>> {
  // expected-remark @+1 {{all_reduce over [tp]: 1024 bytes per rank; needed by func.return; rejected: reduce_scatter over [tp] (512 bytes per rank), since no placement of the split sum sends fewer bytes}}
  %r = sl.all_reduce %p {axes = ["tp"]} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []], partial = [tp]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
  return %r : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
}

// -----

// Vocab-parallel cross-entropy communicates inside the op: three per-token
// all-reduces of 2x4 local tokens, (g-1) x 32 bytes each.
sl.mesh @mesh(cp = 2, tp = 2)
func.func @xent(%l: tensor<2x8x32xf32, #sl.layout<@mesh, [[], [cp], [tp]]>>, %y: tensor<2x8xi32, #sl.layout<@mesh, [[], [cp]]>>) -> tensor<f32, #sl.layout<@mesh, [], partial = [cp]>> {
  // expected-remark @+1 {{cross_entropy (vocab-parallel, 3 all-reduces): 96 bytes per rank}}
  %e = sl.cross_entropy %l, %y {vocab_axes = ["tp"]} : (tensor<2x8x32xf32, #sl.layout<@mesh, [[], [cp], [tp]]>>, tensor<2x8xi32, #sl.layout<@mesh, [[], [cp]]>>) -> tensor<f32, #sl.layout<@mesh, [], partial = [cp]>>
  return %e : tensor<f32, #sl.layout<@mesh, [], partial = [cp]>>
}
