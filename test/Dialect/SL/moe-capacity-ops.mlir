// Capacity mode's ops and their backward: printed, reparsed and round-tripped
// through the generic form (their rules are in sharding-rules.mlir). The
// valid program is the file up to the first separator; the chunks after it
// each hold one op with a bad shape or attribute, whose message names it.
// RUN: sed -n '1,/^\/\/ -----$/p' %s | shardline-opt | FileCheck %s
// RUN: sed -n '1,/^\/\/ -----$/p' %s | shardline-opt | shardline-opt | FileCheck %s
// RUN: sed -n '1,/^\/\/ -----$/p' %s | shardline-opt -mlir-print-op-generic | shardline-opt | FileCheck %s
// RUN: shardline-opt %s -split-input-file -verify-diagnostics -o /dev/null

// Two batch rows of 16 positions in groups of 1 x 4: Gb = 2, Gs = 4, and 3
// rows per expert per group.
// CHECK-LABEL: func.func @moe_capacity
func.func @moe_capacity(%x: tensor<2x16x32xf32>, %w: tensor<2x16x2xf32>, %i: tensor<2x16x2xi32>,
                        %g: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>) {
  // CHECK: sl.moe_capacity_slots %{{.*}}, %{{.*}} {capacity = 3 : i64, drop_policy = "probs", experts = 4 : i64, group = array<i64: 1, 4>} : (tensor<2x16x2xf32>, tensor<2x16x2xi32>) -> tensor<2x16x2xi32>
  %s = sl.moe_capacity_slots %w, %i {experts = 4, capacity = 3, group = array<i64: 1, 4>, drop_policy = "probs"} : (tensor<2x16x2xf32>, tensor<2x16x2xi32>) -> tensor<2x16x2xi32>
  // CHECK: sl.moe_capacity_slots %{{.*}}, %{{.*}} {{{.*}}drop_policy = "position"{{.*}}}
  %p = sl.moe_capacity_slots %w, %i {experts = 4, capacity = 3, group = array<i64: 1, 4>, drop_policy = "position"} : (tensor<2x16x2xf32>, tensor<2x16x2xi32>) -> tensor<2x16x2xi32>
  // CHECK: sl.moe_dispatch_capacity %{{.*}}, %{{.*}}, %{{.*}} {capacity = 3 : i64, experts = 4 : i64, group = array<i64: 1, 4>} : (tensor<2x16x32xf32>, tensor<2x16x2xi32>, tensor<2x16x2xi32>) -> tensor<4x2x4x3x32xf32>
  %t = sl.moe_dispatch_capacity %x, %i, %s {experts = 4, capacity = 3, group = array<i64: 1, 4>} : (tensor<2x16x32xf32>, tensor<2x16x2xi32>, tensor<2x16x2xi32>) -> tensor<4x2x4x3x32xf32>
  // CHECK: sl.moe_experts %{{.*}} : (tensor<4x2x4x3x32xf32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<4x2x4x3x32xf32>
  %e = sl.moe_experts %t, %g, %g, %d : (tensor<4x2x4x3x32xf32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<4x2x4x3x32xf32>
  // CHECK: sl.moe_combine_capacity %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {group = array<i64: 1, 4>} : (tensor<4x2x4x3x32xf32>, tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<2x16x2xi32>) -> tensor<2x16x32xf32>
  %y = sl.moe_combine_capacity %e, %w, %i, %s {group = array<i64: 1, 4>} : (tensor<4x2x4x3x32xf32>, tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<2x16x2xi32>) -> tensor<2x16x32xf32>
  // CHECK: sl.moe_combine_capacity_grad %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {capacity = 3 : i64, experts = 4 : i64, group = array<i64: 1, 4>} : (tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<2x16x2xi32>, tensor<2x16x32xf32>) -> tensor<4x2x4x3x32xf32>
  %de = sl.moe_combine_capacity_grad %w, %i, %s, %y {experts = 4, capacity = 3, group = array<i64: 1, 4>} : (tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<2x16x2xi32>, tensor<2x16x32xf32>) -> tensor<4x2x4x3x32xf32>
  // CHECK: sl.moe_combine_capacity_grad_weights %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {group = array<i64: 1, 4>} : (tensor<4x2x4x3x32xf32>, tensor<2x16x2xi32>, tensor<2x16x2xi32>, tensor<2x16x32xf32>) -> tensor<2x16x2xf32>
  %dw = sl.moe_combine_capacity_grad_weights %e, %i, %s, %y {group = array<i64: 1, 4>} : (tensor<4x2x4x3x32xf32>, tensor<2x16x2xi32>, tensor<2x16x2xi32>, tensor<2x16x32xf32>) -> tensor<2x16x2xf32>
  // CHECK: sl.moe_experts_grad %{{.*}} -> tensor<4x2x4x3x32xf32>
  %dt = sl.moe_experts_grad %t, %g, %g, %d, %de : (tensor<4x2x4x3x32xf32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>, tensor<4x2x4x3x32xf32>) -> tensor<4x2x4x3x32xf32>
  // CHECK: sl.moe_experts_grad_weights %{{.*}} -> (tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>)
  %dg, %du, %dd = sl.moe_experts_grad_weights %t, %g, %g, %d, %de : (tensor<4x2x4x3x32xf32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>, tensor<4x2x4x3x32xf32>) -> (tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>)
  // CHECK: sl.moe_dispatch_capacity_grad %{{.*}}, %{{.*}}, %{{.*}} {group = array<i64: 1, 4>} : (tensor<4x2x4x3x32xf32>, tensor<2x16x2xi32>, tensor<2x16x2xi32>) -> tensor<2x16x32xf32>
  %dx = sl.moe_dispatch_capacity_grad %dt, %i, %s {group = array<i64: 1, 4>} : (tensor<4x2x4x3x32xf32>, tensor<2x16x2xi32>, tensor<2x16x2xi32>) -> tensor<2x16x32xf32>
  // One row dimension: the experts take any rank from 3.
  // CHECK: sl.moe_experts %{{.*}} : (tensor<4x6x32xf32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<4x6x32xf32>
  %r = tensor.empty() : tensor<4x6x32xf32>
  %e3 = sl.moe_experts %r, %g, %g, %d : (tensor<4x6x32xf32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<4x6x32xf32>
  return
}

// -----

func.func @slots_group_values(%w: tensor<2x16x2xf32>, %i: tensor<2x16x2xi32>) {
  // expected-error @+1 {{'sl.moe_capacity_slots' op group must be [rows, positions], got 3 values}}
  %s = sl.moe_capacity_slots %w, %i {experts = 4, capacity = 3, group = array<i64: 1, 4, 2>, drop_policy = "probs"} : (tensor<2x16x2xf32>, tensor<2x16x2xi32>) -> tensor<2x16x2xi32>
  return
}

// -----

func.func @slots_group_rows(%w: tensor<2x16x2xf32>, %i: tensor<2x16x2xi32>) {
  // expected-error @+1 {{'sl.moe_capacity_slots' op group rows (3) must be positive and divide the batch of weights (2)}}
  %s = sl.moe_capacity_slots %w, %i {experts = 4, capacity = 3, group = array<i64: 3, 4>, drop_policy = "probs"} : (tensor<2x16x2xf32>, tensor<2x16x2xi32>) -> tensor<2x16x2xi32>
  return
}

// -----

func.func @slots_group_positions(%w: tensor<2x16x2xf32>, %i: tensor<2x16x2xi32>) {
  // expected-error @+1 {{'sl.moe_capacity_slots' op group positions (0) must be positive and divide the seq of weights (16)}}
  %s = sl.moe_capacity_slots %w, %i {experts = 4, capacity = 3, group = array<i64: 1, 0>, drop_policy = "probs"} : (tensor<2x16x2xf32>, tensor<2x16x2xi32>) -> tensor<2x16x2xi32>
  return
}

// -----

func.func @slots_capacity(%w: tensor<2x16x2xf32>, %i: tensor<2x16x2xi32>) {
  // expected-error @+1 {{'sl.moe_capacity_slots' op capacity must be at least 1, got 0}}
  %s = sl.moe_capacity_slots %w, %i {experts = 4, capacity = 0, group = array<i64: 1, 4>, drop_policy = "probs"} : (tensor<2x16x2xf32>, tensor<2x16x2xi32>) -> tensor<2x16x2xi32>
  return
}

// -----

func.func @slots_policy(%w: tensor<2x16x2xf32>, %i: tensor<2x16x2xi32>) {
  // expected-error @+1 {{'sl.moe_capacity_slots' op drop_policy must be "probs" or "position", got "random"}}
  %s = sl.moe_capacity_slots %w, %i {experts = 4, capacity = 3, group = array<i64: 1, 4>, drop_policy = "random"} : (tensor<2x16x2xf32>, tensor<2x16x2xi32>) -> tensor<2x16x2xi32>
  return
}

// -----

func.func @slots_experts(%w: tensor<2x16x2xf32>, %i: tensor<2x16x2xi32>) {
  // expected-error @+1 {{'sl.moe_capacity_slots' op experts (1) must be at least k (2)}}
  %s = sl.moe_capacity_slots %w, %i {experts = 1, capacity = 3, group = array<i64: 1, 4>, drop_policy = "probs"} : (tensor<2x16x2xf32>, tensor<2x16x2xi32>) -> tensor<2x16x2xi32>
  return
}

// -----

func.func @slots_shape(%w: tensor<2x16x2xf32>, %i: tensor<2x16x1xi32>) {
  // expected-error @+1 {{'sl.moe_capacity_slots' op failed to verify that all of {weights, indices, slots} have same shape}}
  %s = sl.moe_capacity_slots %w, %i {experts = 4, capacity = 3, group = array<i64: 1, 4>, drop_policy = "probs"} : (tensor<2x16x2xf32>, tensor<2x16x1xi32>) -> tensor<2x16x2xi32>
  return
}

// -----

func.func @dispatch_groups(%x: tensor<2x16x32xf32>, %i: tensor<2x16x2xi32>) {
  // expected-error @+1 {{'sl.moe_dispatch_capacity' op result dimension 2 must be 4 (sequence groups), got 8}}
  %t = sl.moe_dispatch_capacity %x, %i, %i {experts = 4, capacity = 3, group = array<i64: 1, 4>} : (tensor<2x16x32xf32>, tensor<2x16x2xi32>, tensor<2x16x2xi32>) -> tensor<4x2x8x3x32xf32>
  return
}

// -----

func.func @dispatch_capacity_rows(%x: tensor<2x16x32xf32>, %i: tensor<2x16x2xi32>) {
  // expected-error @+1 {{'sl.moe_dispatch_capacity' op result dimension 3 must be 3 (capacity), got 4}}
  %t = sl.moe_dispatch_capacity %x, %i, %i {experts = 4, capacity = 3, group = array<i64: 1, 4>} : (tensor<2x16x32xf32>, tensor<2x16x2xi32>, tensor<2x16x2xi32>) -> tensor<4x2x4x4x32xf32>
  return
}

// -----

func.func @dispatch_experts(%x: tensor<2x16x32xf32>, %i: tensor<2x16x2xi32>) {
  // expected-error @+1 {{'sl.moe_dispatch_capacity' op result dimension 0 must be 4 (experts), got 8}}
  %t = sl.moe_dispatch_capacity %x, %i, %i {experts = 4, capacity = 3, group = array<i64: 1, 4>} : (tensor<2x16x32xf32>, tensor<2x16x2xi32>, tensor<2x16x2xi32>) -> tensor<8x2x4x3x32xf32>
  return
}

// -----

func.func @dispatch_rank(%x: tensor<2x16x32xf32>, %i: tensor<2x16x2xi32>) {
  // expected-error @+1 {{'sl.moe_dispatch_capacity' op result must have rank 5, got 'tensor<4x2x16x32xf32>'}}
  %t = sl.moe_dispatch_capacity %x, %i, %i {experts = 4, capacity = 3, group = array<i64: 1, 4>} : (tensor<2x16x32xf32>, tensor<2x16x2xi32>, tensor<2x16x2xi32>) -> tensor<4x2x16x32xf32>
  return
}

// -----

func.func @dispatch_indices(%x: tensor<2x16x32xf32>, %i: tensor<2x8x2xi32>) {
  // expected-error @+1 {{'sl.moe_dispatch_capacity' op x dimension 1 must be 8 (seq of indices), got 16}}
  %t = sl.moe_dispatch_capacity %x, %i, %i {experts = 4, capacity = 3, group = array<i64: 1, 4>} : (tensor<2x16x32xf32>, tensor<2x8x2xi32>, tensor<2x8x2xi32>) -> tensor<4x2x4x3x32xf32>
  return
}

// -----

func.func @combine_hidden(%e: tensor<4x2x4x3x16xf32>, %w: tensor<2x16x2xf32>, %i: tensor<2x16x2xi32>) {
  // expected-error @+1 {{'sl.moe_combine_capacity' op expert_out dimension 4 must be 32 (hidden of result), got 16}}
  %y = sl.moe_combine_capacity %e, %w, %i, %i {group = array<i64: 1, 4>} : (tensor<4x2x4x3x16xf32>, tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<2x16x2xi32>) -> tensor<2x16x32xf32>
  return
}

// -----

func.func @combine_experts(%e: tensor<1x2x4x3x32xf32>, %w: tensor<2x16x2xf32>, %i: tensor<2x16x2xi32>) {
  // expected-error @+1 {{'sl.moe_combine_capacity' op expert_out has 1 experts, fewer than k = 2}}
  %y = sl.moe_combine_capacity %e, %w, %i, %i {group = array<i64: 1, 4>} : (tensor<1x2x4x3x32xf32>, tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<2x16x2xi32>) -> tensor<2x16x32xf32>
  return
}

// -----

func.func @combine_batch_groups(%e: tensor<4x1x4x3x32xf32>, %w: tensor<2x16x2xf32>, %i: tensor<2x16x2xi32>) {
  // expected-error @+1 {{'sl.moe_combine_capacity' op expert_out dimension 1 must be 2 (batch groups), got 1}}
  %y = sl.moe_combine_capacity %e, %w, %i, %i {group = array<i64: 1, 4>} : (tensor<4x1x4x3x32xf32>, tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<2x16x2xi32>) -> tensor<2x16x32xf32>
  return
}

// -----

func.func @dispatch_grad_group(%t: tensor<4x2x4x3x32xf32>, %i: tensor<2x16x2xi32>) {
  // expected-error @+1 {{'sl.moe_dispatch_capacity_grad' op group positions (5) must be positive and divide the seq of dx (16)}}
  %dx = sl.moe_dispatch_capacity_grad %t, %i, %i {group = array<i64: 1, 5>} : (tensor<4x2x4x3x32xf32>, tensor<2x16x2xi32>, tensor<2x16x2xi32>) -> tensor<2x16x32xf32>
  return
}

// -----

func.func @combine_grad_capacity(%w: tensor<2x16x2xf32>, %i: tensor<2x16x2xi32>, %dy: tensor<2x16x32xf32>) {
  // expected-error @+1 {{'sl.moe_combine_capacity_grad' op dexpert_out dimension 3 must be 2 (capacity), got 3}}
  %de = sl.moe_combine_capacity_grad %w, %i, %i, %dy {experts = 4, capacity = 2, group = array<i64: 1, 4>} : (tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<2x16x2xi32>, tensor<2x16x32xf32>) -> tensor<4x2x4x3x32xf32>
  return
}

// -----

func.func @combine_grad_weights_slots(%e: tensor<4x2x4x3x32xf32>, %i: tensor<2x16x2xi32>, %s: tensor<2x16x1xi32>, %dy: tensor<2x16x32xf32>) {
  // expected-error @+1 {{'sl.moe_combine_capacity_grad_weights' op failed to verify that all of {indices, slots, dweights} have same shape}}
  %dw = sl.moe_combine_capacity_grad_weights %e, %i, %s, %dy {group = array<i64: 1, 4>} : (tensor<4x2x4x3x32xf32>, tensor<2x16x2xi32>, tensor<2x16x1xi32>, tensor<2x16x32xf32>) -> tensor<2x16x2xf32>
  return
}
