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
  // expected-remark @+1 {{all_gather over [tp]: 512 bytes per rank; needed by sl.silu; cheaper: sinking it past sl.silu, which accepts the split layout}}
  %g = sl.all_gather %x {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
  %s = sl.silu %g : (tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>) -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
  return %s : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
}
// LINT: explain.mlir:20:8: warning: premature gather: every user of this all_gather accepts the split layout of dimension 1; sink it to the first op that needs it whole
// LINT-NOT: warning:

// -----

sl.mesh @mesh(tp = 2)
func.func @scatter(%p: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []], partial = [tp]>>) -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>> {
  // expected-remark @+1 {{reduce_scatter over [tp]: 512 bytes per rank; needed by func.return; rejected: all_reduce (twice the bytes, and the result whole on every rank)}}
  %s = sl.reduce_scatter %p {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []], partial = [tp]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>>
  return %s : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>>
}
