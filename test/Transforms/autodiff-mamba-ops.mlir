// The Mamba backward ops that sl-autodiff emits (autodiff-mamba.test), the
// chunked and halo forms included: each refuses operands or results of the
// wrong shape or attribute, naming them.
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

// -----

// state_in [2, 4 heads, p 8, n 4] without its gradient's result.
func.func @scan_state_in(%x: tensor<2x16x32xf32>, %dt: tensor<2x16x4xf32>, %a: tensor<4xf32>, %bc: tensor<2x16x8xf32>, %s: tensor<2x4x8x4xf32>) {
  // expected-error @+1 {{'sl.ssd_scan_grad' op has a dstate_in result exactly when it has a state_in operand}}
  %dx, %ddt, %dB, %dC = sl.ssd_scan_grad %x, %dt, %a, %bc, %bc, %a, %a, %x state_in %s {heads = 4, groups = 2} : (tensor<2x16x32xf32>, tensor<2x16x4xf32>, tensor<4xf32>, tensor<2x16x8xf32>, tensor<2x16x8xf32>, tensor<4xf32>, tensor<4xf32>, tensor<2x16x32xf32>, tensor<2x4x8x4xf32>) -> (tensor<2x16x32xf32>, tensor<2x16x4xf32>, tensor<2x16x8xf32>, tensor<2x16x8xf32>)
  return
}

// -----

// The final state's cotangent of an unchunked scan is [b, heads, p, n].
func.func @scan_dstate(%x: tensor<2x16x32xf32>, %dt: tensor<2x16x4xf32>, %a: tensor<4xf32>, %bc: tensor<2x16x8xf32>, %s: tensor<2x4x4x8xf32>) {
  // expected-error @+1 {{'sl.ssd_scan_grad_params' op dstate dimension 2 must be 8 (scan state), got 4}}
  %da, %dd, %db = sl.ssd_scan_grad_params %x, %dt, %a, %bc, %bc, %a, %a, %x dstate %s {heads = 4, groups = 2} : (tensor<2x16x32xf32>, tensor<2x16x4xf32>, tensor<4xf32>, tensor<2x16x8xf32>, tensor<2x16x8xf32>, tensor<4xf32>, tensor<4xf32>, tensor<2x16x32xf32>, tensor<2x4x4x8xf32>) -> (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>)
  return
}

// -----

// A chunked scan's summaries have a leading chunk dimension.
#seq = #sl.layout<@mesh, [[], [cp], []]>
#st = #sl.layout<@mesh, [[cp], [], []]>
#h = #sl.layout<@mesh, [[]]>
sl.mesh @mesh(cp = 2)
func.func @scan_ddecay_chunks(%x: tensor<2x16x32xf32, #seq>, %dt: tensor<2x16x4xf32, #seq>, %a: tensor<4xf32, #h>, %bc: tensor<2x16x8xf32, #seq>, %d: tensor<4x2x4xf32, #st>) {
  // expected-error @+1 {{'sl.ssd_scan_grad' op ddecay dimension 0 must be 2 (chunks along the sequence), got 4}}
  %dx, %ddt, %dB, %dC = sl.ssd_scan_grad %x, %dt, %a, %bc, %bc, %a, %a, %x ddecay %d {heads = 4, groups = 2, chunk_axes = ["cp"]} : (tensor<2x16x32xf32, #seq>, tensor<2x16x4xf32, #seq>, tensor<4xf32, #h>, tensor<2x16x8xf32, #seq>, tensor<2x16x8xf32, #seq>, tensor<4xf32, #h>, tensor<4xf32, #h>, tensor<2x16x32xf32, #seq>, tensor<4x2x4xf32, #st>) -> (tensor<2x16x32xf32, #seq>, tensor<2x16x4xf32, #seq>, tensor<2x16x8xf32, #seq>, tensor<2x16x8xf32, #seq>)
  return
}

// -----

// The halo of a conv of width 4 over 2 chunks holds 2 x 3 rows.
#seq = #sl.layout<@mesh, [[], [cp], []]>
#w = #sl.layout<@mesh, [[], []]>
sl.mesh @mesh(cp = 2)
func.func @conv_halo_rows(%w: tensor<32x4xf32, #w>, %dy: tensor<2x16x32xf32, #seq>, %h: tensor<2x4x32xf32, #seq>) {
  // expected-error @+1 {{'sl.causal_conv1d_grad' op halo holds 4 tokens but 2 sequence chunks need 2 * 3}}
  %dx, %dh = sl.causal_conv1d_grad %w, %dy halo %h : (tensor<32x4xf32, #w>, tensor<2x16x32xf32, #seq>, tensor<2x4x32xf32, #seq>) -> (tensor<2x16x32xf32, #seq>, tensor<2x4x32xf32, #seq>)
  return
}

// -----

func.func @conv_dhalo(%w: tensor<32x4xf32>, %dy: tensor<2x16x32xf32>, %h: tensor<2x3x32xf32>) {
  // expected-error @+1 {{'sl.causal_conv1d_grad' op has a dhalo result exactly when it has a halo operand}}
  %dx = sl.causal_conv1d_grad %w, %dy halo %h : (tensor<32x4xf32>, tensor<2x16x32xf32>, tensor<2x3x32xf32>) -> tensor<2x16x32xf32>
  return
}

// -----

func.func @conv_weight_halo_width(%x: tensor<2x16x32xf32>, %h: tensor<2x3x32xf32>) {
  // expected-error @+1 {{'sl.causal_conv1d_grad_weight' op has a halo but its kernel of width 1 reads no earlier tokens}}
  %w, %b = sl.causal_conv1d_grad_weight %x, %x halo %h : (tensor<2x16x32xf32>, tensor<2x16x32xf32>, tensor<2x3x32xf32>) -> (tensor<32x1xf32>, tensor<32xf32>)
  return
}
