// Dropless MoE's op and its backward: printed, reparsed and round-tripped
// through the generic form (their rules are in sharding-rules.mlir). The
// valid program is the file up to the first separator; the chunks after it
// each hold one op with a bad shape or attribute, whose message names it.
// RUN: sed -n '1,/^\/\/ -----$/p' %s | shardline-opt | FileCheck %s
// RUN: sed -n '1,/^\/\/ -----$/p' %s | shardline-opt | shardline-opt | FileCheck %s
// RUN: sed -n '1,/^\/\/ -----$/p' %s | shardline-opt -mlir-print-op-generic | shardline-opt | FileCheck %s
// RUN: shardline-opt %s -split-input-file -verify-diagnostics -o /dev/null

// CHECK-LABEL: func.func @moe_dropless
func.func @moe_dropless(%x: tensor<2x16x32xf32>, %w: tensor<2x16x2xf32>, %i: tensor<2x16x2xi32>,
                        %g: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>) {
  // CHECK: sl.moe_dropless %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {expert_axes = []} : (tensor<2x16x32xf32>, tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<2x16x32xf32>
  %y = sl.moe_dropless %x, %w, %i, %g, %g, %d {expert_axes = []} : (tensor<2x16x32xf32>, tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<2x16x32xf32>
  // CHECK: sl.moe_dropless_grad %{{.*}} {expert_axes = []} : {{.*}} -> (tensor<2x16x32xf32>, tensor<2x16x2xf32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>)
  %dx, %dw, %dg, %du, %dd = sl.moe_dropless_grad %x, %w, %i, %g, %g, %d, %y {expert_axes = []} : (tensor<2x16x32xf32>, tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>, tensor<2x16x32xf32>) -> (tensor<2x16x32xf32>, tensor<2x16x2xf32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>)
  return
}

// -----

func.func @gate_hidden(%x: tensor<2x16x32xf32>, %w: tensor<2x16x2xf32>, %i: tensor<2x16x2xi32>,
                       %g: tensor<4x16x64xf32>, %d: tensor<4x64x16xf32>) {
  // expected-error @+1 {{gate must be [experts, hidden, ffn] with hidden = 32 (x's), got [4, 16, 64]}}
  %y = sl.moe_dropless %x, %w, %i, %g, %g, %d {expert_axes = []} : (tensor<2x16x32xf32>, tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<4x16x64xf32>, tensor<4x16x64xf32>, tensor<4x64x16xf32>) -> tensor<2x16x32xf32>
  return
}

// -----

func.func @down_shape(%x: tensor<2x16x32xf32>, %w: tensor<2x16x2xf32>, %i: tensor<2x16x2xi32>,
                      %g: tensor<4x32x64xf32>, %d: tensor<4x32x64xf32>) {
  // expected-error @+1 {{down must be [experts, ffn, hidden] = [4, 64, 32]}}
  %y = sl.moe_dropless %x, %w, %i, %g, %g, %d {expert_axes = []} : (tensor<2x16x32xf32>, tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>) -> tensor<2x16x32xf32>
  return
}

// -----

func.func @routing_tokens(%x: tensor<2x16x32xf32>, %w: tensor<2x8x2xf32>, %i: tensor<2x8x2xi32>,
                          %g: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>) {
  // expected-error @+1 {{x dimension 1 must be 8 (seq of weights), got 16}}
  %y = sl.moe_dropless %x, %w, %i, %g, %g, %d {expert_axes = []} : (tensor<2x16x32xf32>, tensor<2x8x2xf32>, tensor<2x8x2xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<2x16x32xf32>
  return
}

// -----

func.func @too_many_choices(%x: tensor<2x16x32xf32>, %w: tensor<2x16x5xf32>, %i: tensor<2x16x5xi32>,
                            %g: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>) {
  // expected-error @+1 {{k (5) exceeds the 4 experts}}
  %y = sl.moe_dropless %x, %w, %i, %g, %g, %d {expert_axes = []} : (tensor<2x16x32xf32>, tensor<2x16x5xf32>, tensor<2x16x5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<2x16x32xf32>
  return
}

// -----

sl.mesh @mesh(cp = 2, dp = 2)
func.func @axes_not_the_experts(%x: tensor<2x16x32xf32, #sl.layout<@mesh, [[dp], [cp], []]>>,
                                %w: tensor<2x16x2xf32, #sl.layout<@mesh, [[dp], [cp], []]>>,
                                %i: tensor<2x16x2xi32, #sl.layout<@mesh, [[dp], [cp], []]>>,
                                %g: tensor<4x32x64xf32, #sl.layout<@mesh, [[cp], [], []]>>,
                                %d: tensor<4x64x32xf32, #sl.layout<@mesh, [[cp], [], []]>>) {
  // expected-error @+1 {{expert_axes [dp] must be the axes that split the experts of gate, [cp]}}
  %y = sl.moe_dropless %x, %w, %i, %g, %g, %d {expert_axes = ["dp"]} : (tensor<2x16x32xf32, #sl.layout<@mesh, [[dp], [cp], []]>>, tensor<2x16x2xf32, #sl.layout<@mesh, [[dp], [cp], []]>>, tensor<2x16x2xi32, #sl.layout<@mesh, [[dp], [cp], []]>>, tensor<4x32x64xf32, #sl.layout<@mesh, [[cp], [], []]>>, tensor<4x32x64xf32, #sl.layout<@mesh, [[cp], [], []]>>, tensor<4x64x32xf32, #sl.layout<@mesh, [[cp], [], []]>>) -> tensor<2x16x32xf32, #sl.layout<@mesh, [[dp], [cp], []]>>
  return
}

// -----

// Expert tensor parallelism: tensor_axes must be the axes that split the ffn
// of gate, up and down.
sl.mesh @mesh(cp = 2, tp = 2)
func.func @tensor_axes_not_the_ffn(%x: tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>,
                                   %w: tensor<2x16x2xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>,
                                   %i: tensor<2x16x2xi32, #sl.layout<@mesh, [[], [cp, tp], []]>>,
                                   %g: tensor<4x32x64xf32, #sl.layout<@mesh, [[cp], [], [tp]]>>,
                                   %d: tensor<4x64x32xf32, #sl.layout<@mesh, [[cp], [tp], []]>>) {
  // expected-error @+1 {{tensor_axes [] must be the axes that split the ffn of gate, [tp]}}
  %y = sl.moe_dropless %x, %w, %i, %g, %g, %d {expert_axes = ["cp"]} : (tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>, tensor<2x16x2xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>, tensor<2x16x2xi32, #sl.layout<@mesh, [[], [cp, tp], []]>>, tensor<4x32x64xf32, #sl.layout<@mesh, [[cp], [], [tp]]>>, tensor<4x32x64xf32, #sl.layout<@mesh, [[cp], [], [tp]]>>, tensor<4x64x32xf32, #sl.layout<@mesh, [[cp], [tp], []]>>) -> tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>
  return
}

// -----

sl.mesh @mesh(cp = 2, tp = 2)
func.func @down_not_the_ffn(%x: tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>,
                            %w: tensor<2x16x2xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>,
                            %i: tensor<2x16x2xi32, #sl.layout<@mesh, [[], [cp, tp], []]>>,
                            %g: tensor<4x32x64xf32, #sl.layout<@mesh, [[cp], [], [tp]]>>,
                            %d: tensor<4x64x32xf32, #sl.layout<@mesh, [[cp], [], []]>>) {
  // expected-error @+1 {{tensor_axes [tp] must be the axes that split the ffn of down, []}}
  %y = sl.moe_dropless %x, %w, %i, %g, %g, %d {expert_axes = ["cp"], tensor_axes = ["tp"]} : (tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>, tensor<2x16x2xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>, tensor<2x16x2xi32, #sl.layout<@mesh, [[], [cp, tp], []]>>, tensor<4x32x64xf32, #sl.layout<@mesh, [[cp], [], [tp]]>>, tensor<4x32x64xf32, #sl.layout<@mesh, [[cp], [], [tp]]>>, tensor<4x64x32xf32, #sl.layout<@mesh, [[cp], [], []]>>) -> tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>
  return
}

// -----

sl.mesh @mesh(cp = 2, tp = 2)
func.func @tensor_axes_in_the_expert_group(%x: tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>,
                                           %w: tensor<2x16x2xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>,
                                           %i: tensor<2x16x2xi32, #sl.layout<@mesh, [[], [cp, tp], []]>>,
                                           %g: tensor<4x32x64xf32, #sl.layout<@mesh, [[cp], [], []]>>,
                                           %d: tensor<4x64x32xf32, #sl.layout<@mesh, [[cp], [], []]>>) {
  // expected-error @+1 {{tensor_axes [cp] must be distinct axes, none of expert_axes [cp]}}
  %y = sl.moe_dropless %x, %w, %i, %g, %g, %d {expert_axes = ["cp"], tensor_axes = ["cp"]} : (tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>, tensor<2x16x2xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>, tensor<2x16x2xi32, #sl.layout<@mesh, [[], [cp, tp], []]>>, tensor<4x32x64xf32, #sl.layout<@mesh, [[cp], [], []]>>, tensor<4x32x64xf32, #sl.layout<@mesh, [[cp], [], []]>>, tensor<4x64x32xf32, #sl.layout<@mesh, [[cp], [], []]>>) -> tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>
  return
}
