// The valid program is the file up to the first separator; the chunks after
// it each hold one op with a wrong shape or attribute.
// RUN: sed -n '1,/^\/\/ -----$/p' %s | shardline-opt | FileCheck %s
// RUN: sed -n '1,/^\/\/ -----$/p' %s | shardline-opt | shardline-opt | FileCheck %s
// RUN: sed -n '1,/^\/\/ -----$/p' %s | shardline-opt -mlir-print-op-generic | shardline-opt | FileCheck %s
// RUN: sed -n '1,/^\/\/ -----$/p' %s | shardline-opt -sl-test-print-sharding-rules -mlir-print-op-on-diagnostic=false -o /dev/null 2>&1 | FileCheck %s --check-prefix=RULE
// sl.adamw writes its operands in place: canonicalization and CSE keep it.
// RUN: sed -n '1,/^\/\/ -----$/p' %s | shardline-opt -canonicalize -cse | FileCheck %s --check-prefix=KEEP
// RUN: shardline-opt %s -split-input-file -verify-diagnostics -o /dev/null

sl.mesh @mesh(dp = 2, tp = 2)

// CHECK-LABEL: func.func @backward
// KEEP-LABEL: func.func @backward
func.func @backward(%x: tensor<2x16x32xf32>, %dy: tensor<2x16x32xf32>, %w: tensor<32xf32>,
                    %wl: tensor<32x64xf32>, %dh: tensor<2x16x64xf32>,
                    %ids: tensor<2x16xi32>, %table: tensor<128x32xf32>,
                    %logits: tensor<2x16x128xf32>, %labels: tensor<2x16xi32>,
                    %q: tensor<2x16x32xf32>, %k: tensor<2x16x16xf32>, %v: tensor<2x16x16xf32>,
                    %wb: tensor<32x64xbf16>, %dwb: tensor<32x64xbf16>,
                    %xb: tensor<2x16x32xbf16>, %dhb: tensor<2x16x64xbf16>) {
  // CHECK: sl.rms_norm_grad %{{.*}}, %{{.*}}, %{{.*}} {eps = 1.000000e-03 : f64} : (tensor<2x16x32xf32>, tensor<32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  // RULE: remark: sl.rms_norm_grad: x[b,s,h] weight[h] dy[b,s,h] -> dx[b,s,h]; free: b,s; whole: h; sequence: s{{$}}
  %dx = sl.rms_norm_grad %x, %w, %dy {eps = 1.0e-3 : f64} : (tensor<2x16x32xf32>, tensor<32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  // CHECK: sl.rms_norm_grad_weight %{{.*}}, %{{.*}} : (tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<32xf32>
  // RULE: remark: sl.rms_norm_grad_weight: x[b,s,h] dy[b,s,h] -> dweight[h]; contracted: b,s; whole: h; sequence: s{{$}}
  %dw = sl.rms_norm_grad_weight %x, %dy : (tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<32xf32>
  // CHECK: sl.linear_grad %{{.*}}, %{{.*}} : (tensor<2x16x64xf32>, tensor<32x64xf32>) -> tensor<2x16x32xf32>
  // RULE: remark: sl.linear_grad: dy[b,s,n] weight[k,n] -> dx[b,s,k]; free: b,s,k; contracted: n; partial: one; sequence: s{{$}}
  %dxl = sl.linear_grad %dh, %wl : (tensor<2x16x64xf32>, tensor<32x64xf32>) -> tensor<2x16x32xf32>
  // CHECK: sl.linear_grad_weight %{{.*}}, %{{.*}} : (tensor<2x16x32xf32>, tensor<2x16x64xf32>) -> tensor<32x64xf32>
  // RULE: remark: sl.linear_grad_weight: x[b,s,k] dy[b,s,n] -> dweight[k,n]; free: k,n; contracted: b,s; partial: one; sequence: s{{$}}
  %dwl = sl.linear_grad_weight %x, %dh : (tensor<2x16x32xf32>, tensor<2x16x64xf32>) -> tensor<32x64xf32>
  // CHECK: sl.swiglu_grad %{{.*}}, %{{.*}}, %{{.*}} : (tensor<2x16x32xf32>, tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> (tensor<2x16x32xf32>, tensor<2x16x32xf32>)
  // RULE: remark: sl.swiglu_grad: lhs[d0,s,d2] rhs[d0,s,d2] dy[d0,s,d2] -> dlhs[d0,s,d2] drhs[d0,s,d2]; free: d0,s,d2; sequence: s{{$}}
  %dl, %dr = sl.swiglu_grad %x, %dx, %dy : (tensor<2x16x32xf32>, tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> (tensor<2x16x32xf32>, tensor<2x16x32xf32>)
  // CHECK: sl.silu_grad
  // RULE: remark: sl.silu_grad: x[d0,s,d2] dy[d0,s,d2] -> dx[d0,s,d2]; free: d0,s,d2; sequence: s{{$}}
  %d1 = sl.silu_grad %x, %dy : (tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  // CHECK: sl.gelu_grad
  // RULE: remark: sl.gelu_grad: x[d0,s,d2] dy[d0,s,d2] -> dx[d0,s,d2]; free: d0,s,d2; sequence: s{{$}}
  %d2 = sl.gelu_grad %x, %dy : (tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  // CHECK: sl.sigmoid_grad
  // RULE: remark: sl.sigmoid_grad: x[d0,s,d2] dy[d0,s,d2] -> dx[d0,s,d2]; free: d0,s,d2; sequence: s{{$}}
  %d3 = sl.sigmoid_grad %x, %dy : (tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  // CHECK: sl.softplus_grad
  // RULE: remark: sl.softplus_grad: x[d0,s,d2] dy[d0,s,d2] -> dx[d0,s,d2]; free: d0,s,d2; sequence: s{{$}}
  %d4 = sl.softplus_grad %x, %dy : (tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  // CHECK: sl.rope_grad %{{.*}} {head_dim = 8 : i64} : (tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  // RULE: remark: sl.rope_grad: dy[b,s,heads] -> dx[b,s,heads]; free: b,s,heads (granule 4); partial: one; sequence: s{{$}}
  %dq0 = sl.rope_grad %dy {head_dim = 8} : (tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  // CHECK: sl.attention_grad %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {heads = 4 : i64, kv_heads = 2 : i64, scale = 2.500000e-01 : f64} : (tensor<2x16x32xf32>, tensor<2x16x16xf32>, tensor<2x16x16xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  // RULE: remark: sl.attention_grad: q[b,s,heads] k[b,t,heads] v[b,t,heads] dy[b,s,heads] -> dq[b,s,heads]; free: b,s,heads (granule 2 kv heads); sequence-mixing: t (kv exchange); sequence: s (also t){{$}}
  %dq = sl.attention_grad %q, %k, %v, %dy {heads = 4, kv_heads = 2, scale = 0.25 : f64} : (tensor<2x16x32xf32>, tensor<2x16x16xf32>, tensor<2x16x16xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  // CHECK: sl.attention_grad_kv %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {causal = false, heads = 4 : i64, kv_heads = 2 : i64} : (tensor<2x16x32xf32>, tensor<2x16x16xf32>, tensor<2x16x16xf32>, tensor<2x16x32xf32>) -> (tensor<2x16x16xf32>, tensor<2x16x16xf32>)
  // RULE: remark: sl.attention_grad_kv: q[b,s,heads] k[b,t,heads] v[b,t,heads] dy[b,s,heads] -> dk[b,t,heads] dv[b,t,heads]; free: b,heads (granule 2 kv heads); contracted: s; sequence-mixing: t (kv exchange); sequence: s (also t){{$}}
  %dk, %dv = sl.attention_grad_kv %q, %k, %v, %dy {heads = 4, kv_heads = 2, causal = false} : (tensor<2x16x32xf32>, tensor<2x16x16xf32>, tensor<2x16x16xf32>, tensor<2x16x32xf32>) -> (tensor<2x16x16xf32>, tensor<2x16x16xf32>)
  // CHECK: sl.embedding_grad %{{.*}}, %{{.*}}, %{{.*}} : (tensor<2x16xi32>, tensor<2x16x32xf32>, tensor<128x32xf32>) -> tensor<128x32xf32>
  // RULE: remark: sl.embedding_grad: ids[b,s] dy[b,s,h] table[v,h] -> dtable[v,h]; free: v,h; contracted: b,s; partial: one; sequence: s{{$}}
  %dt = sl.embedding_grad %ids, %dy, %table : (tensor<2x16xi32>, tensor<2x16x32xf32>, tensor<128x32xf32>) -> tensor<128x32xf32>
  // CHECK: sl.cross_entropy_grad %{{.*}}, %{{.*}} : (tensor<2x16x128xf32>, tensor<2x16xi32>) -> tensor<2x16x128xf32>
  // RULE: remark: sl.cross_entropy_grad: logits[b,s,v] labels[b,s] -> dlogits[b,s,v]; free: b,s; sequence-mixing: v (vocab parallel); sequence: s{{$}}
  %dlog = sl.cross_entropy_grad %logits, %labels : (tensor<2x16x128xf32>, tensor<2x16xi32>) -> tensor<2x16x128xf32>
  // CHECK: sl.sum_squares %{{.*}} : (tensor<32x64xf32>) -> tensor<f32>
  // RULE: remark: sl.sum_squares: x[d0,d1] -> result[]; free: d0,d1; reduces to a scalar{{$}}
  %ss = sl.sum_squares %dwl : (tensor<32x64xf32>) -> tensor<f32>
  // CHECK: sl.adamw %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : tensor<32x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<f32>
  // RULE: remark: sl.adamw: weight[d0,d1] grad[d0,d1] m[d0,d1] v[d0,d1] sumsq[] -> ; free: d0,d1{{$}}
  // KEEP: sl.adamw %{{.*}} : tensor<32x64xf32>
  sl.adamw %wl, %dwl, %wl, %wl, %ss : tensor<32x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<f32>
  // CHECK: sl.adamw %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {decay = false} : tensor<32xf32>
  // RULE: remark: sl.adamw: weight[d0] grad[d0] m[d0] v[d0] sumsq[] -> ; free: d0{{$}}
  // KEEP: sl.adamw %{{.*}} {decay = false} : tensor<32xf32>
  sl.adamw %w, %dw, %w, %w, %ss {decay = false} : tensor<32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<f32>
  // A backward op may give an f32 gradient from bf16 values (a bf16 parameter's gradient
  // accumulates in f32).
  // CHECK: sl.linear_grad_weight %{{.*}}, %{{.*}} : (tensor<2x16x32xbf16>, tensor<2x16x64xbf16>) -> tensor<32x64xf32>
  %dwf = sl.linear_grad_weight %xb, %dhb : (tensor<2x16x32xbf16>, tensor<2x16x64xbf16>) -> tensor<32x64xf32>
  // A bf16 weight through its f32 main copy (the sixth operand), its gradient bf16 or f32.
  // CHECK: sl.adamw %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : tensor<32x64xbf16>, tensor<32x64xbf16>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<f32>, tensor<32x64xf32>
  // RULE: remark: sl.adamw: weight[d0,d1] grad[d0,d1] m[d0,d1] v[d0,d1] sumsq[] main[d0,d1] -> ; free: d0,d1{{$}}
  // KEEP: sl.adamw %{{.*}} : tensor<32x64xbf16>
  sl.adamw %wb, %dwb, %wl, %wl, %ss, %wl : tensor<32x64xbf16>, tensor<32x64xbf16>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<f32>, tensor<32x64xf32>
  // CHECK: sl.adamw %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : tensor<32x64xbf16>, tensor<32x64xf32>
  // KEEP-NEXT: sl.adamw %{{.*}} : tensor<32x64xbf16>, tensor<32x64xf32>
  sl.adamw %wb, %wl, %wl, %wl, %ss, %wl : tensor<32x64xbf16>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<f32>, tensor<32x64xf32>
  // KEEP-NEXT: return
  return
}
// RULE: remark: sharding rules of 16 of {{[0-9]+}} sl ops with a rule; not instantiated:

// -----

func.func @f(%x: tensor<2x16x32xf32>, %w: tensor<16xf32>) {
  // expected-error @+1 {{'sl.rms_norm_grad' op weight dimension 0 must be 32 (normalised dimension of x), got 16}}
  %dx = sl.rms_norm_grad %x, %w, %x : (tensor<2x16x32xf32>, tensor<16xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  return
}

// -----

func.func @f(%x: tensor<2x16x32xf32>) {
  // expected-error @+1 {{'sl.rms_norm_grad_weight' op dweight dimension 0 must be 32 (normalised dimension of x), got 16}}
  %dw = sl.rms_norm_grad_weight %x, %x : (tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<16xf32>
  return
}

// -----

func.func @f(%dy: tensor<2x16x64xf32>, %w: tensor<32x48xf32>) {
  // expected-error @+1 {{'sl.linear_grad' op dy has 64 features but weight has 48 columns}}
  %dx = sl.linear_grad %dy, %w : (tensor<2x16x64xf32>, tensor<32x48xf32>) -> tensor<2x16x32xf32>
  return
}

// -----

func.func @f(%x: tensor<2x16x32xf32>, %dy: tensor<2x16x64xf32>) {
  // expected-error @+1 {{'sl.linear_grad_weight' op dweight must be [32, 64] (x's features, dy's features)}}
  %dw = sl.linear_grad_weight %x, %dy : (tensor<2x16x32xf32>, tensor<2x16x64xf32>) -> tensor<64x32xf32>
  return
}

// -----

func.func @f(%x: tensor<2x16x32xf32>, %y: tensor<2x16x16xf32>) {
  // expected-error @+1 {{'sl.swiglu_grad' op failed to verify that all of {lhs, rhs, dy, dlhs, drhs} have same shape}}
  %dl, %dr = sl.swiglu_grad %x, %x, %y : (tensor<2x16x32xf32>, tensor<2x16x32xf32>, tensor<2x16x16xf32>) -> (tensor<2x16x32xf32>, tensor<2x16x32xf32>)
  return
}

// -----

func.func @f(%x: tensor<2x16x32xf32>, %y: tensor<2x16x16xf32>) {
  // expected-error @+1 {{'sl.silu_grad' op failed to verify that all of {x, dy, dx} have same shape}}
  %dx = sl.silu_grad %x, %y : (tensor<2x16x32xf32>, tensor<2x16x16xf32>) -> tensor<2x16x32xf32>
  return
}

// -----

func.func @f(%x: tensor<2x16x32xf32>, %y: tensor<2x16x16xf32>) {
  // expected-error @+1 {{'sl.gelu_grad' op failed to verify that all of {x, dy, dx} have same shape}}
  %dx = sl.gelu_grad %x, %x : (tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x16xf32>
  return
}

// -----

func.func @f(%x: tensor<2x16x32xf32>, %y: tensor<2x16x16xf32>) {
  // expected-error @+1 {{'sl.sigmoid_grad' op failed to verify that all of {x, dy, dx} have same shape}}
  %dx = sl.sigmoid_grad %y, %x : (tensor<2x16x16xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  return
}

// -----

func.func @f(%x: tensor<2x16x32xf32>, %y: tensor<2x16x32xbf16>) {
  // expected-error @+1 {{'sl.softplus_grad' op operand #1 has element type 'bf16' but 'f32' is used elsewhere in the op}}
  %dx = sl.softplus_grad %x, %y : (tensor<2x16x32xf32>, tensor<2x16x32xbf16>) -> tensor<2x16x32xf32>
  return
}

// -----

func.func @f(%dy: tensor<2x16x32xf32>) {
  // expected-error @+1 {{'sl.rope_grad' op channels by head_dim: 32 is not divisible by 6}}
  %dx = sl.rope_grad %dy {head_dim = 6} : (tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  return
}

// -----

func.func @f(%q: tensor<2x16x32xf32>, %k: tensor<2x16x16xf32>) {
  // expected-error @+1 {{'sl.attention_grad' op heads (4) must be a positive multiple of kv_heads (3)}}
  %dq = sl.attention_grad %q, %k, %k, %q {heads = 4, kv_heads = 3} : (tensor<2x16x32xf32>, tensor<2x16x16xf32>, tensor<2x16x16xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  return
}

// -----

func.func @f(%q: tensor<2x16x32xf32>, %k: tensor<2x16x16xf32>) {
  // expected-error @+1 {{'sl.attention_grad_kv' op k dimension 2 must be 32 (kv_heads * head_dim), got 16}}
  %dk, %dv = sl.attention_grad_kv %q, %k, %k, %q {heads = 4, kv_heads = 4} : (tensor<2x16x32xf32>, tensor<2x16x16xf32>, tensor<2x16x16xf32>, tensor<2x16x32xf32>) -> (tensor<2x16x16xf32>, tensor<2x16x16xf32>)
  return
}

// -----

func.func @f(%ids: tensor<2x16xi32>, %dy: tensor<2x8x32xf32>, %t: tensor<128x32xf32>) {
  // expected-error @+1 {{'sl.embedding_grad' op dy dimension 1 must be 16 (sequence of ids), got 8}}
  %dt = sl.embedding_grad %ids, %dy, %t : (tensor<2x16xi32>, tensor<2x8x32xf32>, tensor<128x32xf32>) -> tensor<128x32xf32>
  return
}

// -----

func.func @f(%l: tensor<2x16x128xf32>, %labels: tensor<2x8xi32>) {
  // expected-error @+1 {{'sl.cross_entropy_grad' op labels must be [batch, seq] of the logits}}
  %d = sl.cross_entropy_grad %l, %labels : (tensor<2x16x128xf32>, tensor<2x8xi32>) -> tensor<2x16x128xf32>
  return
}

// -----

sl.mesh @mesh(tp = 2)
func.func @f(%l: tensor<2x16x128xf32, #sl.layout<@mesh, [[], [], [tp]]>>, %labels: tensor<2x16xi32, #sl.layout<@mesh, [[], []]>>) {
  // expected-error @+1 {{'sl.cross_entropy_grad' op vocab_axes must be the axes that split the logits' vocabulary, [tp]}}
  %d = sl.cross_entropy_grad %l, %labels {vocab_axes = ["dp"]} : (tensor<2x16x128xf32, #sl.layout<@mesh, [[], [], [tp]]>>, tensor<2x16xi32, #sl.layout<@mesh, [[], []]>>) -> tensor<2x16x128xf32, #sl.layout<@mesh, [[], [], [tp]]>>
  return
}

// -----

func.func @f(%x: tensor<32x64xf32>) {
  // expected-error @+1 {{'sl.sum_squares' op result #0 must be 0D tensor of 32-bit float values, but got 'tensor<1xf32>'}}
  %s = sl.sum_squares %x : (tensor<32x64xf32>) -> tensor<1xf32>
  return
}

// -----

func.func @f(%w: tensor<32x64xf32>, %g: tensor<64x32xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'sl.adamw' op failed to verify that all of {weight, grad, m, v} have same shape}}
  sl.adamw %w, %g, %w, %w, %s : tensor<32x64xf32>, tensor<64x32xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<f32>
  return
}

// -----

func.func @f(%w: tensor<32x64xf32>, %g: tensor<32x64xbf16>, %s: tensor<f32>) {
  // expected-error @+1 {{'sl.adamw' op grad has element type 'bf16' but the weight has 'f32'}}
  sl.adamw %w, %g, %w, %w, %s : tensor<32x64xf32>, tensor<32x64xbf16>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<f32>
  return
}

// -----

// The update reads a finished gradient: a pending sum must be reduced first.
sl.mesh @mesh(tp = 2)
func.func @f(%w: tensor<32x64xf32, #sl.layout<@mesh, [[], []]>>, %g: tensor<32x64xf32, #sl.layout<@mesh, [[], []], partial = [tp]>>, %s: tensor<f32, #sl.layout<@mesh, []>>) {
  // expected-error @+1 {{'sl.adamw' op operand #1 (grad) is a pending sum over [tp] but the op is not linear in it; all-reduce or reduce-scatter it first}}
  sl.adamw %w, %g, %w, %w, %s : tensor<32x64xf32, #sl.layout<@mesh, [[], []]>>, tensor<32x64xf32, #sl.layout<@mesh, [[], []], partial = [tp]>>, tensor<32x64xf32, #sl.layout<@mesh, [[], []]>>, tensor<32x64xf32, #sl.layout<@mesh, [[], []]>>, tensor<f32, #sl.layout<@mesh, []>>
  return
}

// -----

// The moments are updated element by element with the weight: one layout.
sl.mesh @mesh(tp = 2)
func.func @f(%w: tensor<32x64xf32, #sl.layout<@mesh, [[], [tp]]>>, %m: tensor<32x64xf32, #sl.layout<@mesh, [[tp], []]>>, %s: tensor<f32, #sl.layout<@mesh, []>>) {
  // expected-error @+1 {{'sl.adamw' op operand #2 (m) dimension 0 (d0) is split over [tp] but operand #0 (weight) dimension 0 (d0) is split over []}}
  sl.adamw %w, %w, %m, %w, %s : tensor<32x64xf32, #sl.layout<@mesh, [[], [tp]]>>, tensor<32x64xf32, #sl.layout<@mesh, [[], [tp]]>>, tensor<32x64xf32, #sl.layout<@mesh, [[tp], []]>>, tensor<32x64xf32, #sl.layout<@mesh, [[], [tp]]>>, tensor<f32, #sl.layout<@mesh, []>>
  return
}

// -----

// A 16-bit weight is updated through its f32 main copy.
func.func @f(%w: tensor<32x64xbf16>, %m: tensor<32x64xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'sl.adamw' op a 'bf16' weight needs its f32 main copy (operand main): AdamW updates the main copy and rounds the weight from it}}
  sl.adamw %w, %w, %m, %m, %s : tensor<32x64xbf16>, tensor<32x64xbf16>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<f32>
  return
}

// -----

func.func @f(%w: tensor<32x64xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'sl.adamw' op an f32 weight is updated in place; main is for 16-bit weights}}
  sl.adamw %w, %w, %w, %w, %s, %w : tensor<32x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<f32>, tensor<32x64xf32>
  return
}

// -----

func.func @f(%w: tensor<32x64xbf16>, %m: tensor<32x64xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'sl.adamw' op m has element type 'bf16': with a main copy, the main copy and the moments are f32}}
  sl.adamw %w, %w, %w, %m, %s, %m : tensor<32x64xbf16>, tensor<32x64xbf16>, tensor<32x64xbf16>, tensor<32x64xf32>, tensor<f32>, tensor<32x64xf32>
  return
}

// -----

func.func @f(%w: tensor<32x64xbf16>, %g: tensor<32x64xf16>, %m: tensor<32x64xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'sl.adamw' op grad has element type 'f16', neither the weight's 'bf16' nor f32}}
  sl.adamw %w, %g, %m, %m, %s, %m : tensor<32x64xbf16>, tensor<32x64xf16>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<f32>, tensor<32x64xf32>
  return
}

// -----

func.func @f(%w: tensor<32x64xbf16>, %m: tensor<32x64xf32>, %main: tensor<64x32xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'sl.adamw' op main must have the weight's shape, got 'tensor<64x32xf32>'}}
  sl.adamw %w, %w, %m, %m, %s, %main : tensor<32x64xbf16>, tensor<32x64xbf16>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<f32>, tensor<64x32xf32>
  return
}

// -----

func.func @f() {
  // expected-error @+1 {{'sl.weight' op init 'copy' needs source, the name of the weight it copies}}
  %w = sl.weight "w.main" {init = "copy"} : tensor<4xf32>
  return
}

// -----

func.func @f() {
  // expected-error @+1 {{'sl.weight' op source names the weight a 'copy' init copies, and the init is 'normal'}}
  %w = sl.weight "w" {source = "v"} : tensor<4xf32>
  return
}

// -----

func.func @f() {
  // expected-error @+1 {{'sl.weight' op cannot copy itself}}
  %w = sl.weight "w" {init = "copy", source = "w"} : tensor<4xf32>
  return
}

// -----

// A forward op's values share one type: only a backward op widens its results.
func.func @f(%x: tensor<2x16x32xbf16>, %w: tensor<32x64xbf16>) {
  // expected-error @+1 {{'sl.linear' op result #0 has element type 'f32' but 'bf16' is used elsewhere in the op}}
  %y = sl.linear %x, %w : (tensor<2x16x32xbf16>, tensor<32x64xbf16>) -> tensor<2x16x64xf32>
  return
}
