// RUN: shardline-opt %s -split-input-file | FileCheck %s
// RUN: shardline-opt %s -split-input-file | shardline-opt -split-input-file | FileCheck %s

// The textual form of #sl.layout: the mesh, one axis list per tensor
// dimension (major to minor), an optional chunk order after one dimension's
// list, and the pending-sum axes. Layouts print as #layout, #layout1, ...
// aliases at the top of the module.

sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$L:.*]] = #sl.layout<@mesh, {{\[}}[], [], []]>
// CHECK-LABEL: func.func @replicated
// CHECK-SAME: tensor<2x16x32xf32, #[[$L]]>
func.func @replicated(%x: tensor<2x16x32xf32, #sl.layout<@mesh, [[], [], []]>>) {
  return
}

// -----

// An unannotated tensor has no encoding at all, unlike a replicated one.
// CHECK-LABEL: func.func @unannotated
// CHECK-SAME: tensor<2x16x32xf32>)
func.func @unannotated(%x: tensor<2x16x32xf32>) {
  return
}

// -----

sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$L:.*]] = #sl.layout<@mesh, {{\[}}[ep], [cp], [tp]]>
// CHECK-LABEL: func.func @one_axis_per_dim
// CHECK-SAME: tensor<2x16x32xf32, #[[$L]]>
func.func @one_axis_per_dim(%x: tensor<2x16x32xf32, #sl.layout<@mesh, [[ep], [cp], [tp]]>>) {
  return
}

// -----

// Axes that split one dimension print in the order given, major to minor:
// [cp, tp] and [tp, cp] are different layouts.
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$CT:.*]] = #sl.layout<@mesh, {{\[}}[], [cp, tp], []]>
// CHECK-DAG: #[[$TC:.*]] = #sl.layout<@mesh, {{\[}}[], [tp, cp], []]>
// CHECK-LABEL: func.func @major_to_minor
// CHECK-SAME: tensor<2x16x32xf32, #[[$CT]]>, %{{.*}}: tensor<2x16x32xf32, #[[$TC]]>
func.func @major_to_minor(%x: tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>, %y: tensor<2x16x32xf32, #sl.layout<@mesh, [[], [tp, cp], []]>>) {
  return
}

// -----

sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$L:.*]] = #sl.layout<@mesh, {{\[}}[], [cp, tp] zigzag, []]>
// CHECK-LABEL: func.func @zigzag
// CHECK-SAME: tensor<2x16x32xf32, #[[$L]]>
func.func @zigzag(%x: tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp, tp] zigzag, []]>>) {
  return
}

// -----

// A stated contiguous order prints as written; it is the order a dimension
// has when none is stated.
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$L:.*]] = #sl.layout<@mesh, {{\[}}[], [cp] contiguous, []]>
// CHECK-LABEL: func.func @explicit_contiguous
// CHECK-SAME: tensor<2x16x32xf32, #[[$L]]>
func.func @explicit_contiguous(%x: tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp] contiguous, []]>>) {
  return
}

// -----

// A contiguous order may be stated on a dimension no axis splits.
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$L:.*]] = #sl.layout<@mesh, {{\[}}[], [] contiguous, []]>
// CHECK-LABEL: func.func @contiguous_unsplit
// CHECK-SAME: tensor<2x16x32xf32, #[[$L]]>
func.func @contiguous_unsplit(%x: tensor<2x16x32xf32, #sl.layout<@mesh, [[], [] contiguous, []]>>) {
  return
}

// -----

sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$L:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], []], partial = [tp]>
// CHECK-LABEL: func.func @partial
// CHECK-SAME: tensor<2x16x32xf32, #[[$L]]>
func.func @partial(%x: tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []], partial = [tp]>>) {
  return
}

// -----

// A pending sum over several axes, with a zigzag split on another dimension.
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$L:.*]] = #sl.layout<@mesh, {{\[}}[], [cp] zigzag, []], partial = [ep, tp]>
// CHECK-LABEL: func.func @partial_several_axes
// CHECK-SAME: tensor<2x16x32xf32, #[[$L]]>
func.func @partial_several_axes(%x: tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp] zigzag, []], partial = [ep, tp]>>) {
  return
}

// -----

// An empty partial list is no pending sum and is not printed.
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$L:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], []]>{{$}}
// CHECK-LABEL: func.func @empty_partial
// CHECK-SAME: tensor<2x16x32xf32, #[[$L]]>
func.func @empty_partial(%x: tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []], partial = []>>) {
  return
}

// -----

// A scalar has no dimensions: `[]`.
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$L:.*]] = #sl.layout<@mesh, []>
// CHECK-LABEL: func.func @scalar
// CHECK-SAME: tensor<f32, #[[$L]]>
func.func @scalar(%x: tensor<f32, #sl.layout<@mesh, []>>) {
  return
}

// -----

// A scalar loss whose addends sit on the cp and tp ranks.
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$L:.*]] = #sl.layout<@mesh, [], partial = [cp, tp]>
// CHECK-LABEL: func.func @scalar_partial
// CHECK-SAME: tensor<f32, #[[$L]]>
func.func @scalar_partial(%x: tensor<f32, #sl.layout<@mesh, [], partial = [cp, tp]>>) {
  return
}

// -----

// Axis names may be strings; a name that is a valid keyword prints bare, any
// other stays quoted.
sl.mesh @mesh("data parallel" = 2, tp = 2)
// CHECK-DAG: #[[$L:.*]] = #sl.layout<@mesh, {{\[}}["data parallel"], [tp]]>
// CHECK-DAG: #[[$P:.*]] = #sl.layout<@mesh, {{\[}}[]], partial = ["data parallel"]>
// CHECK-LABEL: func.func @string_axis_names
// CHECK-SAME: tensor<4x8xf32, #[[$L]]>, %{{.*}}: tensor<8xf32, #[[$P]]>
func.func @string_axis_names(%x: tensor<4x8xf32, #sl.layout<@mesh, [["data parallel"], ["tp"]]>>, %y: tensor<8xf32, #sl.layout<@mesh, [[]], partial = ["data parallel"]>>) {
  return
}

// -----

// One alias per distinct layout.
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK: #[[$L:layout]] = #sl.layout<@mesh, {{\[}}[tp]]>
// CHECK-NOT: #layout1
// CHECK-LABEL: func.func @one_alias_per_layout
// CHECK-SAME: (%{{.*}}: tensor<8xf32, #[[$L]]>, %{{.*}}: tensor<8xbf16, #[[$L]]>)
func.func @one_alias_per_layout(%x: tensor<8xf32, #sl.layout<@mesh, [[tp]]>>, %y: tensor<8xbf16, #sl.layout<@mesh, [["tp"]]>>) {
  return
}

// -----

// A layout may name a mesh the module does not define; the ops that use
// it report that (see invalid.mlir).
// CHECK-DAG: #[[$L:.*]] = #sl.layout<@other, {{\[}}[tp]]>
// CHECK-LABEL: func.func @any_mesh_symbol
// CHECK-SAME: tensor<8xf32, #[[$L]]>
func.func @any_mesh_symbol(%x: tensor<8xf32, #sl.layout<@other, [[tp]]>>) {
  return
}
