// RUN: shardline-opt %s -split-input-file -verify-diagnostics | FileCheck %s

// Token ids, labels and the router's expert indices (i32) change layout
// through the same ops as activations, so no gather is forced by an element
// type. An integer tensor never carries a pending sum: nothing sums integers.

sl.mesh @mesh(cp = 2, tp = 2)
#zigzag = #sl.layout<@mesh, [[], [cp] zigzag]>
#cp = #sl.layout<@mesh, [[], [cp]]>
#batch = #sl.layout<@mesh, [[cp], []]>
#rep = #sl.layout<@mesh, [[], []]>
#sp = #sl.layout<@mesh, [[], [cp, tp]]>
// CHECK-LABEL: func.func @token_ids
// CHECK: sl.reorder %{{.*}} : tensor<4x16xi32, #{{.*}}> -> tensor<4x16xi32, #{{.*}}>
// CHECK: sl.all_to_all %{{.*}} {axes = ["cp"], concat_dim = 1 : i64, split_dim = 0 : i64} : tensor<4x16xi32
// CHECK: sl.all_gather %{{.*}} {axes = ["cp"], dim = 0 : i64} : tensor<4x16xi32
// CHECK: sl.slice %{{.*}} {axes = ["cp", "tp"], dim = 1 : i64} : tensor<4x16xi32
// CHECK: sl.relayout %{{.*}} : tensor<4x16xi32
func.func @token_ids(%ids: tensor<4x16xi32, #zigzag>) -> (tensor<4x16xi32, #sp>, tensor<4x16xi32, #zigzag>) {
  %a = sl.reorder %ids : tensor<4x16xi32, #zigzag> -> tensor<4x16xi32, #cp>
  %b = sl.all_to_all %a {axes = ["cp"], split_dim = 0, concat_dim = 1} : tensor<4x16xi32, #cp> -> tensor<4x16xi32, #batch>
  %c = sl.all_gather %b {axes = ["cp"], dim = 0} : tensor<4x16xi32, #batch> -> tensor<4x16xi32, #rep>
  %d = sl.slice %c {axes = ["cp", "tp"], dim = 1} : tensor<4x16xi32, #rep> -> tensor<4x16xi32, #sp>
  %e = sl.relayout %c : tensor<4x16xi32, #rep> -> tensor<4x16xi32, #zigzag>
  return %d, %e : tensor<4x16xi32, #sp>, tensor<4x16xi32, #zigzag>
}

// -----

// The router's expert indices follow its tokens: split over the sequence
// under SP, gathered where the whole sequence is needed.
sl.mesh @mesh(tp = 2)
#seq = #sl.layout<@mesh, [[], [tp], []]>
#rep = #sl.layout<@mesh, [[], [], []]>
// CHECK-LABEL: func.func @router_indices
// CHECK: sl.router_topk
// CHECK: sl.all_gather %{{.*}} {axes = ["tp"], dim = 1 : i64} : tensor<2x8x2xi32
func.func @router_indices(%l: tensor<2x8x4xf32, #seq>) -> (tensor<2x8x2xf32, #seq>, tensor<2x8x2xi32, #rep>) {
  %w, %i = sl.router_topk %l {k = 2} : (tensor<2x8x4xf32, #seq>) -> (tensor<2x8x2xf32, #seq>, tensor<2x8x2xi32, #seq>)
  %g = sl.all_gather %i {axes = ["tp"], dim = 1} : tensor<2x8x2xi32, #seq> -> tensor<2x8x2xi32, #rep>
  return %w, %g : tensor<2x8x2xf32, #seq>, tensor<2x8x2xi32, #rep>
}

// -----

// A transition's result layout is checked as for a float tensor.
sl.mesh @mesh(tp = 2)
func.func @wrong_result_layout(%ids: tensor<2x8xi32, #sl.layout<@mesh, [[], [tp]]>>) {
  // expected-error @+1 {{'sl.all_gather' op result layout [[tp], []] does not match the expected [[], []]}}
  %g = sl.all_gather %ids {axes = ["tp"], dim = 1} : tensor<2x8xi32, #sl.layout<@mesh, [[], [tp]]>> -> tensor<2x8xi32, #sl.layout<@mesh, [[tp], []]>>
  return
}

// -----

// It keeps the element type.
sl.mesh @mesh(tp = 2)
func.func @element_type_changes(%ids: tensor<2x8xi32, #sl.layout<@mesh, [[], [tp]]>>) {
  // expected-error @+1 {{'sl.all_gather' op operand and result element types differ}}
  %g = sl.all_gather %ids {axes = ["tp"], dim = 1} : tensor<2x8xi32, #sl.layout<@mesh, [[], [tp]]>> -> tensor<2x8xf32, #sl.layout<@mesh, [[], []]>>
  return
}

// -----

// No pending sum on an integer tensor: not to resolve ...
sl.mesh @mesh(tp = 2)
func.func @all_reduce_of_ids(%ids: tensor<2x8xi32, #sl.layout<@mesh, [[], []], partial = [tp]>>) {
  // expected-error @+1 {{'sl.all_reduce' op operand #0 is an integer tensor and cannot be a pending sum}}
  %r = sl.all_reduce %ids {axes = ["tp"]} : tensor<2x8xi32, #sl.layout<@mesh, [[], []], partial = [tp]>> -> tensor<2x8xi32, #sl.layout<@mesh, [[], []]>>
  return
}

// -----

sl.mesh @mesh(tp = 2)
func.func @reduce_scatter_of_ids(%ids: tensor<2x8xi32, #sl.layout<@mesh, [[], []], partial = [tp]>>) {
  // expected-error @+1 {{'sl.reduce_scatter' op operand #0 is an integer tensor and cannot be a pending sum}}
  %r = sl.reduce_scatter %ids {axes = ["tp"], dim = 1} : tensor<2x8xi32, #sl.layout<@mesh, [[], []], partial = [tp]>> -> tensor<2x8xi32, #sl.layout<@mesh, [[], [tp]]>>
  return
}

// -----

// ... nor to carry through a transition ...
sl.mesh @mesh(cp = 2, tp = 2)
func.func @slice_of_summed_ids(%ids: tensor<2x8xi32, #sl.layout<@mesh, [[], []], partial = [tp]>>) {
  // expected-error @+1 {{'sl.slice' op operand #0 is an integer tensor and cannot be a pending sum}}
  %s = sl.slice %ids {axes = ["cp"], dim = 1} : tensor<2x8xi32, #sl.layout<@mesh, [[], []], partial = [tp]>> -> tensor<2x8xi32, #sl.layout<@mesh, [[], [cp]], partial = [tp]>>
  return
}

// -----

// ... nor to make: an all_reduce of a tensor that is no pending sum.
sl.mesh @mesh(tp = 2)
func.func @all_reduce_of_whole_ids(%ids: tensor<2x8xi32, #sl.layout<@mesh, [[], []]>>) {
  // expected-error @+1 {{'sl.all_reduce' op operand is not a pending sum over 'tp'}}
  %r = sl.all_reduce %ids {axes = ["tp"]} : tensor<2x8xi32, #sl.layout<@mesh, [[], []]>> -> tensor<2x8xi32, #sl.layout<@mesh, [[], []]>>
  return
}

// -----

// A halo feeds a convolution or local attention, which take floats.
sl.mesh @mesh(cp = 2)
func.func @halo_of_ids(%ids: tensor<2x16x1xi32, #sl.layout<@mesh, [[], [cp], []]>>) {
  // expected-error @+1 {{'sl.halo' op operand #0 must be ranked tensor of 32-bit float or bfloat16 type or 16-bit float values, but got 'tensor<2x16x1xi32, #sl.layout<@mesh, [[], [cp], []]>>'}}
  %h = sl.halo %ids {axes = ["cp"], width = 3} : tensor<2x16x1xi32, #sl.layout<@mesh, [[], [cp], []]>> -> tensor<2x6x1xi32, #sl.layout<@mesh, [[], [cp], []]>>
  return
}
