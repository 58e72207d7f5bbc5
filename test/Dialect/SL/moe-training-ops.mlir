// The mixture of experts' backward ops: printed, reparsed and round-tripped
// through the generic form (their rules are in sharding-rules.mlir). The
// valid program is the file up to the first separator; the chunks after it
// each hold one op with a wrong shape.
// RUN: sed -n '1,/^\/\/ -----$/p' %s | shardline-opt | FileCheck %s
// RUN: sed -n '1,/^\/\/ -----$/p' %s | shardline-opt | shardline-opt | FileCheck %s
// RUN: sed -n '1,/^\/\/ -----$/p' %s | shardline-opt -mlir-print-op-generic | shardline-opt | FileCheck %s
// RUN: shardline-opt %s -split-input-file -verify-diagnostics -o /dev/null

// CHECK-LABEL: func.func @moe_backward
func.func @moe_backward(%x: tensor<2x16x32xf32>, %w: tensor<2x16x2xf32>, %i: tensor<2x16x2xi32>,
                        %t: tensor<4x2x16x32xf32>, %g: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>) {
  // CHECK: sl.router_topk_grad %{{.*}}, %{{.*}}, %{{.*}} : (tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<2x16x2xf32>) -> tensor<2x16x4xf32>
  %dl = sl.router_topk_grad %w, %i, %w : (tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<2x16x2xf32>) -> tensor<2x16x4xf32>
  // CHECK: sl.moe_combine_grad %{{.*}}, %{{.*}}, %{{.*}} : (tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<2x16x32xf32>) -> tensor<4x2x16x32xf32>
  %de = sl.moe_combine_grad %w, %i, %x : (tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<2x16x32xf32>) -> tensor<4x2x16x32xf32>
  // CHECK: sl.moe_combine_grad_weights %{{.*}}, %{{.*}}, %{{.*}} : (tensor<4x2x16x32xf32>, tensor<2x16x2xi32>, tensor<2x16x32xf32>) -> tensor<2x16x2xf32>
  %dw = sl.moe_combine_grad_weights %t, %i, %x : (tensor<4x2x16x32xf32>, tensor<2x16x2xi32>, tensor<2x16x32xf32>) -> tensor<2x16x2xf32>
  // CHECK: sl.moe_experts_grad %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : (tensor<4x2x16x32xf32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>, tensor<4x2x16x32xf32>) -> tensor<4x2x16x32xf32>
  %dt = sl.moe_experts_grad %t, %g, %g, %d, %de : (tensor<4x2x16x32xf32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>, tensor<4x2x16x32xf32>) -> tensor<4x2x16x32xf32>
  // CHECK: sl.moe_experts_grad_weights %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : (tensor<4x2x16x32xf32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>, tensor<4x2x16x32xf32>) -> (tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>)
  %dg, %du, %dd = sl.moe_experts_grad_weights %t, %g, %g, %d, %de : (tensor<4x2x16x32xf32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>, tensor<4x2x16x32xf32>) -> (tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>)
  // CHECK: sl.moe_dispatch_grad %{{.*}}, %{{.*}} : (tensor<4x2x16x32xf32>, tensor<2x16x2xi32>) -> tensor<2x16x32xf32>
  %dx = sl.moe_dispatch_grad %dt, %i : (tensor<4x2x16x32xf32>, tensor<2x16x2xi32>) -> tensor<2x16x32xf32>
  return
}

// -----

func.func @router_grad_k(%w: tensor<2x8x5xf32>, %i: tensor<2x8x5xi32>) {
  // expected-error @+1 {{'sl.router_topk_grad' op k (5) must be in [1, 4] (dlogits' experts)}}
  %dl = sl.router_topk_grad %w, %i, %w : (tensor<2x8x5xf32>, tensor<2x8x5xi32>, tensor<2x8x5xf32>) -> tensor<2x8x4xf32>
  return
}

// -----

func.func @router_grad_tokens(%w: tensor<2x8x2xf32>, %i: tensor<2x8x2xi32>) {
  // expected-error @+1 {{'sl.router_topk_grad' op dlogits dimension 1 must be 8 (seq of weights), got 16}}
  %dl = sl.router_topk_grad %w, %i, %w : (tensor<2x8x2xf32>, tensor<2x8x2xi32>, tensor<2x8x2xf32>) -> tensor<2x16x4xf32>
  return
}

// -----

func.func @dispatch_grad_hidden(%t: tensor<4x2x8x16xf32>, %i: tensor<2x8x2xi32>) {
  // expected-error @+1 {{'sl.moe_dispatch_grad' op dtokens dimension 3 must be 32 (hidden of dx), got 16}}
  %dx = sl.moe_dispatch_grad %t, %i : (tensor<4x2x8x16xf32>, tensor<2x8x2xi32>) -> tensor<2x8x32xf32>
  return
}

// -----

func.func @experts_grad_down(%t: tensor<4x2x8x16xf32>, %g: tensor<4x16x32xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{'sl.moe_experts_grad' op down must be [experts, ffn, hidden] = [4, 32, 16]}}
  %dt = sl.moe_experts_grad %t, %g, %g, %d, %t : (tensor<4x2x8x16xf32>, tensor<4x16x32xf32>, tensor<4x16x32xf32>, tensor<4x16x32xf32>, tensor<4x2x8x16xf32>) -> tensor<4x2x8x16xf32>
  return
}

// -----

func.func @experts_grad_weights_gate(%t: tensor<4x2x8x16xf32>, %g: tensor<2x16x32xf32>, %d: tensor<2x32x16xf32>) {
  // expected-error @+1 {{'sl.moe_experts_grad_weights' op gate must be [experts, hidden, ffn] = [4, 16, ffn], got [2, 16, 32]}}
  %dg, %du, %dd = sl.moe_experts_grad_weights %t, %g, %g, %d, %t : (tensor<4x2x8x16xf32>, tensor<2x16x32xf32>, tensor<2x16x32xf32>, tensor<2x32x16xf32>, tensor<4x2x8x16xf32>) -> (tensor<2x16x32xf32>, tensor<2x16x32xf32>, tensor<2x32x16xf32>)
  return
}

// -----

func.func @combine_grad_experts(%w: tensor<2x8x2xf32>, %i: tensor<2x8x2xi32>, %dy: tensor<2x8x16xf32>) {
  // expected-error @+1 {{'sl.moe_combine_grad' op dexpert_out has 1 experts, fewer than k = 2}}
  %de = sl.moe_combine_grad %w, %i, %dy : (tensor<2x8x2xf32>, tensor<2x8x2xi32>, tensor<2x8x16xf32>) -> tensor<1x2x8x16xf32>
  return
}

// -----

func.func @combine_grad_weights_batch(%e: tensor<4x2x8x16xf32>, %i: tensor<1x8x2xi32>, %dy: tensor<2x8x16xf32>) {
  // expected-error @+1 {{'sl.moe_combine_grad_weights' op dy dimension 0 must be 1 (batch of indices), got 2}}
  %dw = sl.moe_combine_grad_weights %e, %i, %dy : (tensor<4x2x8x16xf32>, tensor<1x8x2xi32>, tensor<2x8x16xf32>) -> tensor<1x8x2xf32>
  return
}
