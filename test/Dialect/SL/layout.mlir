// RUN: shardline-opt %s -split-input-file | FileCheck %s
// RUN: shardline-opt %s -split-input-file | shardline-opt -split-input-file | FileCheck %s

// The textual form of #sl.layout: one axis list per dimension, major to minor;
// a chunk order after the sequence dimension's list; pending-sum axes.
// CHECK-DAG: #sl.layout<@mesh, {{\[}}[], [], []]>
// CHECK-DAG: #sl.layout<@mesh, {{\[}}[ep], [cp, tp] zigzag, []]>
// CHECK-DAG: #sl.layout<@mesh, {{\[}}[], [cp] contiguous, []]>
// CHECK-DAG: #sl.layout<@mesh, {{\[}}[], [cp], []], partial = [tp]>
// CHECK-DAG: #sl.layout<@mesh, []>
// CHECK-DAG: #sl.layout<@mesh, {{\[}}["my axis"]]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2, "my axis" = 2)
func.func @layouts(
    %replicated: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>,
    %split: tensor<2x8x16xf32, #sl.layout<@mesh, [[ep], [cp, tp] zigzag, []]>>,
    %explicit: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp] contiguous, []]>>,
    %partial: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp], []], partial = [tp]>>,
    %scalar: tensor<f32, #sl.layout<@mesh, []>>,
    %quoted: tensor<8xf32, #sl.layout<@mesh, [["my axis"]]>>) {
  return
}
