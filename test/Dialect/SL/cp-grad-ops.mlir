// The duals of the context-parallel exchanges (sl.halo_add,
// sl.scan_state_exchange_grad) and ring attention's backward:
// the valid program is the file up to the first separator; the chunks after it
// each hold one op with a wrong shape, layout or attribute.
// RUN: sed -n '1,/^\/\/ -----$/p' %s | shardline-opt | FileCheck %s
// RUN: sed -n '1,/^\/\/ -----$/p' %s | shardline-opt -mlir-print-op-generic | shardline-opt | FileCheck %s
// RUN: shardline-opt %s -split-input-file -verify-diagnostics -o /dev/null

#s = #sl.layout<@mesh, [[], [cp], []]>
#z = #sl.layout<@mesh, [[], [cp] zigzag, []]>
#st = #sl.layout<@mesh, [[cp] zigzag, [], [tp], [], []]>
#dec = #sl.layout<@mesh, [[cp] zigzag, [], [tp]]>
#w = #sl.layout<@mesh, [[cp], [], [tp]]>
sl.mesh @mesh(cp = 2, tp = 2)

// CHECK-LABEL: func.func @duals
func.func @duals(%x: tensor<2x16x4xf32, #s>, %dh: tensor<2x6x4xf32, #s>,
                 %xz: tensor<2x16x4xf32, #z>, %dhz: tensor<2x12x4xf32, #z>) {
  // CHECK: sl.halo_add %{{.*}}, %{{.*}} {axes = ["cp"], width = 3 : i64} : (tensor<2x6x4xf32, #{{.*}}>, tensor<2x16x4xf32, #{{.*}}>) -> tensor<2x16x4xf32, #{{.*}}>
  %a = sl.halo_add %dh, %x {axes = ["cp"], width = 3} : (tensor<2x6x4xf32, #s>, tensor<2x16x4xf32, #s>) -> tensor<2x16x4xf32, #s>
  // Zigzag: two chunks per rank, so four halos of 3.
  // CHECK: sl.halo_add %{{.*}}, %{{.*}} {axes = ["cp"], width = 3 : i64} : (tensor<2x12x4xf32, #{{.*}}>, tensor<2x16x4xf32, #{{.*}}>) -> tensor<2x16x4xf32, #{{.*}}>
  %b = sl.halo_add %dhz, %xz {axes = ["cp"], width = 3} : (tensor<2x12x4xf32, #z>, tensor<2x16x4xf32, #z>) -> tensor<2x16x4xf32, #z>
  return
}

// CHECK-LABEL: func.func @ring
func.func @ring(%q: tensor<2x16x8xf32, #z>, %k: tensor<2x16x4xf32, #z>, %dy: tensor<2x16x8xf32, #z>) {
  // CHECK: sl.ring_attention_grad %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {axes = ["cp"], heads = 4 : i64, kv_heads = 2 : i64} : (tensor<2x16x8xf32, #{{.*}}>, tensor<2x16x4xf32, #{{.*}}>, tensor<2x16x4xf32, #{{.*}}>, tensor<2x16x8xf32, #{{.*}}>) -> (tensor<2x16x8xf32, #{{.*}}>, tensor<2x16x4xf32, #{{.*}}>, tensor<2x16x4xf32, #{{.*}}>)
  %dq, %dk, %dv = sl.ring_attention_grad %q, %k, %k, %dy {axes = ["cp"], heads = 4, kv_heads = 2} : (tensor<2x16x8xf32, #z>, tensor<2x16x4xf32, #z>, tensor<2x16x4xf32, #z>, tensor<2x16x8xf32, #z>) -> (tensor<2x16x8xf32, #z>, tensor<2x16x4xf32, #z>, tensor<2x16x4xf32, #z>)
  return
}

// The exchange's dual, for Mamba-2's summaries (decays broadcast over the
// head's state) and RG-LRU's (one decay per state entry).
// CHECK-LABEL: func.func @exchange
func.func @exchange(%d: tensor<4x2x4xf32, #dec>, %i: tensor<4x2x4x8x4xf32, #st>,
                    %w: tensor<2x2x6xf32, #w>) {
  // CHECK: sl.scan_state_exchange_grad %{{.*}}, %{{.*}}, %{{.*}} {axes = ["cp"]} : (tensor<4x2x4xf32, #{{.*}}>, tensor<4x2x4x8x4xf32, #{{.*}}>, tensor<4x2x4x8x4xf32, #{{.*}}>) -> (tensor<4x2x4x8x4xf32, #{{.*}}>, tensor<4x2x4xf32, #{{.*}}>)
  %ds, %dd = sl.scan_state_exchange_grad %d, %i, %i {axes = ["cp"]} : (tensor<4x2x4xf32, #dec>, tensor<4x2x4x8x4xf32, #st>, tensor<4x2x4x8x4xf32, #st>) -> (tensor<4x2x4x8x4xf32, #st>, tensor<4x2x4xf32, #dec>)
  // CHECK: sl.scan_state_exchange_grad {{.*}} -> (tensor<2x2x6xf32, #{{.*}}>, tensor<2x2x6xf32, #{{.*}}>)
  %rs, %rd = sl.scan_state_exchange_grad %w, %w, %w {axes = ["cp"]} : (tensor<2x2x6xf32, #w>, tensor<2x2x6xf32, #w>, tensor<2x2x6xf32, #w>) -> (tensor<2x2x6xf32, #w>, tensor<2x2x6xf32, #w>)
  return
}

// -----

#s = #sl.layout<@mesh, [[], [cp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @halo_add_short(%x: tensor<2x16x4xf32, #s>, %dh: tensor<2x4x4xf32, #s>) {
  // expected-error @+1 {{'sl.halo_add' op grad must be [batch, 2 chunks * 3, channels], the halo of x}}
  %a = sl.halo_add %dh, %x {axes = ["cp"], width = 3} : (tensor<2x4x4xf32, #s>, tensor<2x16x4xf32, #s>) -> tensor<2x16x4xf32, #s>
  return
}

// -----

#s = #sl.layout<@mesh, [[], [cp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @halo_add_axes(%x: tensor<2x16x4xf32, #s>, %dh: tensor<2x6x4xf32, #s>) {
  // expected-error @+1 {{'sl.halo_add' op axes must be the axes that split x's sequence, [cp]}}
  %a = sl.halo_add %dh, %x {axes = ["tp"], width = 3} : (tensor<2x6x4xf32, #s>, tensor<2x16x4xf32, #s>) -> tensor<2x16x4xf32, #s>
  return
}

// -----

#s = #sl.layout<@mesh, [[], [cp], []]>
#p = #sl.layout<@mesh, [[], [cp], []], partial = [tp]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @halo_add_pending(%x: tensor<2x16x4xf32, #s>, %dh: tensor<2x6x4xf32, #p>) {
  // expected-error @+1 {{'sl.halo_add' op grad cannot be a pending sum}}
  %a = sl.halo_add %dh, %x {axes = ["cp"], width = 3} : (tensor<2x6x4xf32, #p>, tensor<2x16x4xf32, #s>) -> tensor<2x16x4xf32, #s>
  return
}

// -----

#s = #sl.layout<@mesh, [[], [cp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @halo_add_width(%x: tensor<2x16x4xf32, #s>, %dh: tensor<2x0x4xf32, #s>) {
  // expected-error @+1 {{'sl.halo_add' op width must be positive}}
  %a = sl.halo_add %dh, %x {axes = ["cp"], width = 0} : (tensor<2x0x4xf32, #s>, tensor<2x16x4xf32, #s>) -> tensor<2x16x4xf32, #s>
  return
}

// -----

#s = #sl.layout<@mesh, [[], [cp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @ring_grad_axes(%q: tensor<2x16x8xf32, #s>, %k: tensor<2x16x4xf32, #s>) {
  // expected-error @+1 {{'sl.ring_attention_grad' op axes must be the axes that split the sequence of q, [cp]}}
  %dq, %dk, %dv = sl.ring_attention_grad %q, %k, %k, %q {axes = ["tp"], heads = 4, kv_heads = 2} : (tensor<2x16x8xf32, #s>, tensor<2x16x4xf32, #s>, tensor<2x16x4xf32, #s>, tensor<2x16x8xf32, #s>) -> (tensor<2x16x8xf32, #s>, tensor<2x16x4xf32, #s>, tensor<2x16x4xf32, #s>)
  return
}

// -----

#s = #sl.layout<@mesh, [[], [cp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @ring_grad_dy(%q: tensor<2x16x8xf32, #s>, %k: tensor<2x16x4xf32, #s>) {
  // expected-error @+1 {{'sl.ring_attention_grad' op failed to verify that all of {q, dy, dq} have same shape}}
  %dq, %dk, %dv = sl.ring_attention_grad %q, %k, %k, %k {axes = ["cp"], heads = 4, kv_heads = 2} : (tensor<2x16x8xf32, #s>, tensor<2x16x4xf32, #s>, tensor<2x16x4xf32, #s>, tensor<2x16x4xf32, #s>) -> (tensor<2x16x8xf32, #s>, tensor<2x16x4xf32, #s>, tensor<2x16x4xf32, #s>)
  return
}

// -----

#s = #sl.layout<@mesh, [[], [], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @exchange_grad_split(%s: tensor<2x1x4xf32, #s>) {
  // expected-error @+1 {{'sl.scan_state_exchange_grad' op initial states and decays must be split over [cp] along the chunk dimension}}
  %ds, %dd = sl.scan_state_exchange_grad %s, %s, %s {axes = ["cp"]} : (tensor<2x1x4xf32, #s>, tensor<2x1x4xf32, #s>, tensor<2x1x4xf32, #s>) -> (tensor<2x1x4xf32, #s>, tensor<2x1x4xf32, #s>)
  return
}

// -----

#s = #sl.layout<@mesh, [[cp], [], []]>
#r = #sl.layout<@mesh, [[cp], [], [tp]]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @exchange_grad_dinit(%s: tensor<2x1x4xf32, #s>, %g: tensor<2x1x4xf32, #r>) {
  // expected-error @+1 {{'sl.scan_state_exchange_grad' op failed to verify that all of {init, dinit, dstates} have same type}}
  %ds, %dd = sl.scan_state_exchange_grad %s, %s, %g {axes = ["cp"]} : (tensor<2x1x4xf32, #s>, tensor<2x1x4xf32, #s>, tensor<2x1x4xf32, #r>) -> (tensor<2x1x4xf32, #s>, tensor<2x1x4xf32, #s>)
  return
}

// -----

#s = #sl.layout<@mesh, [[cp], [], []]>
#d = #sl.layout<@mesh, [[cp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @exchange_grad_decays_shape(%s: tensor<2x1x4xf32, #s>, %d: tensor<2x4xf32, #d>) {
  // expected-error @+1 {{'sl.scan_state_exchange_grad' op decays must be [chunks, ...] and a prefix of the initial states' shape}}
  %ds, %dd = sl.scan_state_exchange_grad %d, %s, %s {axes = ["cp"]} : (tensor<2x4xf32, #d>, tensor<2x1x4xf32, #s>, tensor<2x1x4xf32, #s>) -> (tensor<2x1x4xf32, #s>, tensor<2x4xf32, #d>)
  return
}

// -----

#s = #sl.layout<@mesh, [[cp], [], []]>
#d = #sl.layout<@mesh, [[cp], [tp]]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @exchange_grad_decay_split(%s: tensor<2x2x4xf32, #s>, %d: tensor<2x2xf32, #d>) {
  // expected-error @+1 {{'sl.scan_state_exchange_grad' op decays must be split like the initial states' leading dimensions; dimension 1 of the initial states is split over []}}
  %ds, %dd = sl.scan_state_exchange_grad %d, %s, %s {axes = ["cp"]} : (tensor<2x2xf32, #d>, tensor<2x2x4xf32, #s>, tensor<2x2x4xf32, #s>) -> (tensor<2x2x4xf32, #s>, tensor<2x2xf32, #d>)
  return
}

// -----

#s = #sl.layout<@mesh, [[cp], [], []], partial = [tp]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @exchange_grad_pending_sum(%s: tensor<2x1x4xf32, #s>) {
  // expected-error @+1 {{'sl.scan_state_exchange_grad' op summaries cannot be pending sums}}
  %ds, %dd = sl.scan_state_exchange_grad %s, %s, %s {axes = ["cp"]} : (tensor<2x1x4xf32, #s>, tensor<2x1x4xf32, #s>, tensor<2x1x4xf32, #s>) -> (tensor<2x1x4xf32, #s>, tensor<2x1x4xf32, #s>)
  return
}

// -----

func.func @exchange_grad_without_layouts(%s: tensor<2x1x4xf32>) {
  // expected-error @+1 {{'sl.scan_state_exchange_grad' op decays, init, dinit and the results must carry #sl.layout encodings}}
  %ds, %dd = sl.scan_state_exchange_grad %s, %s, %s {axes = ["cp"]} : (tensor<2x1x4xf32>, tensor<2x1x4xf32>, tensor<2x1x4xf32>) -> (tensor<2x1x4xf32>, tensor<2x1x4xf32>)
  return
}
