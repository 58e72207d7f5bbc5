// keep-peak (what sl-shard-pipeline runs): a move that sends fewer bytes but
// raises the function's peak activation bytes is not applied.
// RUN: shardline-opt %s -sl-elide-gathers -sl-analyze 2>&1 | FileCheck %s --check-prefix=BYTES
// RUN: shardline-opt %s -sl-elide-gathers=keep-peak=true -sl-analyze 2>&1 | FileCheck %s --check-prefix=PEAK

// A replicated value sliced, passed through a free op and gathered back. By
// bytes alone the slice and the gather both go and silu runs on the whole
// value (0 bytes, peak 2048); keeping the peak, the program stays (512 bytes,
// peak 1536).
// BYTES: totals: 0 bytes sent per rank in 0 collectives (); weights 0 bytes per rank; peak activations 2048 bytes per rank
// PEAK: totals: 512 bytes sent per rank in 1 collectives (all_gather 1); weights 0 bytes per rank; peak activations 1536 bytes per rank
#S = #sl.layout<@mesh, [[], [tp], []]>
#W = #sl.layout<@mesh, [[], [], []]>
sl.mesh @mesh(tp = 2)
func.func @slice_then_gather(%x: tensor<2x8x16xf32, #W>) -> tensor<2x8x16xf32, #W> {
  %s = sl.slice %x {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #W> -> tensor<2x8x16xf32, #S>
  %a = sl.silu %s : (tensor<2x8x16xf32, #S>) -> tensor<2x8x16xf32, #S>
  %g = sl.all_gather %a {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #S> -> tensor<2x8x16xf32, #W>
  return %g : tensor<2x8x16xf32, #W>
}
