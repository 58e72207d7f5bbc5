// The Mamba backward ops that sl-autodiff emits (autodiff-mamba.test): each
// refuses operands or results of the wrong shape or attribute, naming them.
// RUN: shardline-opt %s -split-input-file -verify-diagnostics -o /dev/null

func.func @norm_groups(%y: tensor<2x16x30xf32>, %w: tensor<30xf32>) {
  // expected-error @+1 {{'sl.gated_rms_norm_grad' op channels by groups: 30 is not divisible by 4}}
  %a, %b = sl.gated_rms_norm_grad %y, %y, %w, %y {groups = 4} : (tensor<2x16x30xf32>, tensor<2x16x30xf32>, tensor<30xf32>, tensor<2x16x30xf32>) -> (tensor<2x16x30xf32>, tensor<2x16x30xf32>)
  return
}

// -----

func.func @norm_weight(%y: tensor<2x16x32xf32>) {
  // expected-error @+1 {{'sl.gated_rms_norm_grad_weight' op dweight dimension 0 must be 32 (channels), got 16}}
  %w = sl.gated_rms_norm_grad_weight %y, %y, %y {groups = 4} : (tensor<2x16x32xf32>, tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<16xf32>
  return
}

// -----

func.func @conv_channels(%w: tensor<16x4xf32>, %dy: tensor<2x16x32xf32>) {
  // expected-error @+1 {{'sl.causal_conv1d_grad' op weight dimension 0 must be 32 (channels), got 16}}
  %dx = sl.causal_conv1d_grad %w, %dy : (tensor<16x4xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  return
}

// -----

func.func @conv_bias(%x: tensor<2x16x32xf32>) {
  // expected-error @+1 {{'sl.causal_conv1d_grad_weight' op dbias dimension 0 must be 32 (channels), got 8}}
  %w, %b = sl.causal_conv1d_grad_weight %x, %x : (tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> (tensor<32x4xf32>, tensor<8xf32>)
  return
}

// -----

func.func @scan_heads(%x: tensor<2x16x32xf32>, %dt: tensor<2x16x4xf32>, %a: tensor<4xf32>, %bc: tensor<2x16x8xf32>) {
  // expected-error @+1 {{'sl.ssd_scan_grad' op heads (4) must be a positive multiple of groups (3)}}
  %dx, %ddt, %dB, %dC = sl.ssd_scan_grad %x, %dt, %a, %bc, %bc, %a, %a, %x {heads = 4, groups = 3} : (tensor<2x16x32xf32>, tensor<2x16x4xf32>, tensor<4xf32>, tensor<2x16x8xf32>, tensor<2x16x8xf32>, tensor<4xf32>, tensor<4xf32>, tensor<2x16x32xf32>) -> (tensor<2x16x32xf32>, tensor<2x16x4xf32>, tensor<2x16x8xf32>, tensor<2x16x8xf32>)
  return
}

// -----

func.func @scan_result(%x: tensor<2x16x32xf32>, %dt: tensor<2x16x4xf32>, %a: tensor<4xf32>, %bc: tensor<2x16x8xf32>) {
  // expected-error @+1 {{'sl.ssd_scan_grad' op result #2 must be shaped like the input it differentiates}}
  %dx, %ddt, %dB, %dC = sl.ssd_scan_grad %x, %dt, %a, %bc, %bc, %a, %a, %x {heads = 4, groups = 2} : (tensor<2x16x32xf32>, tensor<2x16x4xf32>, tensor<4xf32>, tensor<2x16x8xf32>, tensor<2x16x8xf32>, tensor<4xf32>, tensor<4xf32>, tensor<2x16x32xf32>) -> (tensor<2x16x32xf32>, tensor<2x16x4xf32>, tensor<2x16x4xf32>, tensor<2x16x8xf32>)
  return
}

// -----

func.func @scan_params(%x: tensor<2x16x32xf32>, %dt: tensor<2x16x4xf32>, %a: tensor<4xf32>, %bc: tensor<2x16x8xf32>) {
  // expected-error @+1 {{'sl.ssd_scan_grad_params' op result #1 must be shaped like the input it differentiates}}
  %da, %dd, %db = sl.ssd_scan_grad_params %x, %dt, %a, %bc, %bc, %a, %a, %x {heads = 4, groups = 2} : (tensor<2x16x32xf32>, tensor<2x16x4xf32>, tensor<4xf32>, tensor<2x16x8xf32>, tensor<2x16x8xf32>, tensor<4xf32>, tensor<4xf32>, tensor<2x16x32xf32>) -> (tensor<4xf32>, tensor<8xf32>, tensor<4xf32>)
  return
}

// -----

func.func @scan_dy(%x: tensor<2x16x32xf32>, %dt: tensor<2x16x4xf32>, %a: tensor<4xf32>, %bc: tensor<2x16x8xf32>, %dy: tensor<2x8x32xf32>) {
  // expected-error @+1 {{'sl.ssd_scan_grad_params' op failed to verify that all of {x, dy} have same shape}}
  %da, %dd, %db = sl.ssd_scan_grad_params %x, %dt, %a, %bc, %bc, %a, %a, %dy {heads = 4, groups = 2} : (tensor<2x16x32xf32>, tensor<2x16x4xf32>, tensor<4xf32>, tensor<2x16x8xf32>, tensor<2x16x8xf32>, tensor<4xf32>, tensor<4xf32>, tensor<2x8x32xf32>) -> (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>)
  return
}

// -----

// init [1 chunk, batch 2, 4 heads, p 8, n 4], C [2, 16, 1 group x 4].
func.func @correct_init(%init: tensor<1x2x4x8x4xf32>, %c: tensor<2x16x4xf32>, %dt: tensor<2x16x4xf32>, %a: tensor<4xf32>, %dy: tensor<2x16x32xf32>) {
  // expected-error @+1 {{'sl.ssd_correct_grad' op result #0 must be shaped like the input it differentiates}}
  %di, %dc, %ddt = sl.ssd_correct_grad %init, %c, %dt, %a, %a, %dy {heads = 4, groups = 1, chunk_axes = []} : (tensor<1x2x4x8x4xf32>, tensor<2x16x4xf32>, tensor<2x16x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<2x16x32xf32>) -> (tensor<1x2x4x4x8xf32>, tensor<2x16x4xf32>, tensor<2x16x4xf32>)
  return
}

// -----

func.func @correct_dy(%init: tensor<1x2x4x8x4xf32>, %c: tensor<2x16x4xf32>, %dt: tensor<2x16x4xf32>, %a: tensor<4xf32>, %dy: tensor<2x8x32xf32>) {
  // expected-error @+1 {{'sl.ssd_correct_grad_params' op dt must be [batch, seq, heads]}}
  %da, %db = sl.ssd_correct_grad_params %init, %c, %dt, %a, %a, %dy {heads = 4, groups = 1, chunk_axes = []} : (tensor<1x2x4x8x4xf32>, tensor<2x16x4xf32>, tensor<2x16x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<2x8x32xf32>) -> (tensor<4xf32>, tensor<4xf32>)
  return
}

// -----

func.func @correct_params(%init: tensor<1x2x4x8x4xf32>, %c: tensor<2x16x4xf32>, %dt: tensor<2x16x4xf32>, %a: tensor<4xf32>, %dy: tensor<2x16x32xf32>) {
  // expected-error @+1 {{'sl.ssd_correct_grad_params' op result #1 must be shaped like the input it differentiates}}
  %da, %db = sl.ssd_correct_grad_params %init, %c, %dt, %a, %a, %dy {heads = 4, groups = 1, chunk_axes = []} : (tensor<1x2x4x8x4xf32>, tensor<2x16x4xf32>, tensor<2x16x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<2x16x32xf32>) -> (tensor<4xf32>, tensor<2xf32>)
  return
}
