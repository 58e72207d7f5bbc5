// RUN: shardline-opt %s -split-input-file | FileCheck %s
// The printed form parses back to the same program.
// RUN: shardline-opt %s -split-input-file | shardline-opt -split-input-file | FileCheck %s
// RUN: shardline-opt %s -split-input-file -mlir-print-op-generic | shardline-opt -split-input-file | FileCheck %s

// CHECK: sl.mesh @mesh(dp = 1, ep = 2, cp = 2, tp = 2)
sl.mesh @mesh(dp = 1, ep = 2, cp = 2, tp = 2)
// CHECK-LABEL: func.func @weights
func.func @weights() {
  // CHECK: sl.weight "a" : tensor<4x8xf32, #{{.*}}>
  %a = sl.weight "a" : tensor<4x8xf32, #sl.layout<@mesh, [[], [tp]]>>
  // CHECK: sl.weight "b" {init = "uniform", offset = -1.{{0*}}e+00 : f64, scale = 2.{{0*}}e+00 : f64} : tensor<8xbf16>
  %b = sl.weight "b" {init = "uniform", scale = 2.0 : f64, offset = -1.0 : f64} : tensor<8xbf16>
  // CHECK: sl.weight "c" {init = "constant", offset = 1.{{0*}}e+00 : f64} : tensor<8xf16>
  %c = sl.weight "c" {init = "constant", offset = 1.0 : f64} : tensor<8xf16>
  return
}

// -----

// CHECK-LABEL: func.func @dense
func.func @dense(%ids: tensor<2x8xi32>, %x: tensor<2x8x16xf32>, %t: tensor<32x16xf32>, %w: tensor<16xf32>, %m: tensor<16x24xf32>, %m2: tensor<8x16x24xf32>, %l: tensor<16x32xf32>) {
  // CHECK: sl.embedding %{{.*}}, %{{.*}} : (tensor<2x8xi32>, tensor<32x16xf32>) -> tensor<2x8x16xf32>
  %e = sl.embedding %ids, %t : (tensor<2x8xi32>, tensor<32x16xf32>) -> tensor<2x8x16xf32>
  // CHECK: sl.rms_norm %{{.*}}, %{{.*}} : (tensor<2x8x16xf32>, tensor<16xf32>) -> tensor<2x8x16xf32>
  %n = sl.rms_norm %x, %w : (tensor<2x8x16xf32>, tensor<16xf32>) -> tensor<2x8x16xf32>
  // CHECK: sl.rms_norm %{{.*}}, %{{.*}} {eps = 9.99{{[0-9]*}}E-7 : f64}
  %n2 = sl.rms_norm %x, %w {eps = 1.0e-6} : (tensor<2x8x16xf32>, tensor<16xf32>) -> tensor<2x8x16xf32>
  // CHECK: sl.gated_rms_norm %{{.*}}, %{{.*}}, %{{.*}} {groups = 2 : i64}
  %g = sl.gated_rms_norm %x, %x, %w {groups = 2} : (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<16xf32>) -> tensor<2x8x16xf32>
  // CHECK: sl.linear %{{.*}}, %{{.*}} : (tensor<2x8x16xf32>, tensor<16x24xf32>) -> tensor<2x8x24xf32>
  %y = sl.linear %x, %m : (tensor<2x8x16xf32>, tensor<16x24xf32>) -> tensor<2x8x24xf32>
  // CHECK: sl.linear %{{.*}}, %{{.*}} : (tensor<16x16xf32>, tensor<16x24xf32>) -> tensor<16x24xf32>
  %x2 = sl.weight "x2" : tensor<16x16xf32>
  %y2 = sl.linear %x2, %m : (tensor<16x16xf32>, tensor<16x24xf32>) -> tensor<16x24xf32>
  // CHECK: sl.add
  %s = sl.add %x, %n : (tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  // CHECK: sl.mul
  %p = sl.mul %x, %n : (tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  // CHECK: sl.swiglu
  %sw = sl.swiglu %x, %n : (tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  // CHECK: sl.silu
  %a1 = sl.silu %x : (tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  // CHECK: sl.gelu
  %a2 = sl.gelu %x : (tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  // CHECK: sl.sigmoid
  %a3 = sl.sigmoid %x : (tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  // CHECK: sl.softplus
  %a4 = sl.softplus %x : (tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  // CHECK: sl.lm_head %{{.*}}, %{{.*}} : (tensor<2x8x16xf32>, tensor<16x32xf32>) -> tensor<2x8x32xf32>
  %lg = sl.lm_head %x, %l : (tensor<2x8x16xf32>, tensor<16x32xf32>) -> tensor<2x8x32xf32>
  // CHECK: sl.cross_entropy %{{.*}}, %{{.*}} : (tensor<2x8x32xf32>, tensor<2x8xi32>) -> tensor<f32>
  %loss = sl.cross_entropy %lg, %ids : (tensor<2x8x32xf32>, tensor<2x8xi32>) -> tensor<f32>
  return
}

// -----

sl.mesh @mesh(cp = 2, tp = 2)
// Vocab-parallel cross-entropy: the loss is a pending sum over the token axes.
// CHECK-LABEL: func.func @vocab_parallel
// CHECK: sl.cross_entropy %{{.*}}, %{{.*}} {vocab_axes = ["tp"]} : {{.*}} -> tensor<f32, #[[$PART:.*]]>
func.func @vocab_parallel(%l: tensor<2x8x32xf32, #sl.layout<@mesh, [[], [cp], [tp]]>>, %y: tensor<2x8xi32, #sl.layout<@mesh, [[], [cp]]>>) {
  %loss = sl.cross_entropy %l, %y {vocab_axes = ["tp"]} : (tensor<2x8x32xf32, #sl.layout<@mesh, [[], [cp], [tp]]>>, tensor<2x8xi32, #sl.layout<@mesh, [[], [cp]]>>) -> tensor<f32, #sl.layout<@mesh, [], partial = [cp]>>
  return
}

// -----

sl.mesh @mesh(cp = 2, tp = 2)
// CHECK-LABEL: func.func @attention
func.func @attention(%q: tensor<2x8x32xf32>, %k: tensor<2x8x16xf32>,
    %qs: tensor<2x8x32xf32, #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>>,
    %ks: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>>) {
  // CHECK: sl.rope %{{.*}} {head_dim = 8 : i64, theta = 5.{{0*}}e+05 : f64}
  %r = sl.rope %q {head_dim = 8, theta = 500000.0} : (tensor<2x8x32xf32>) -> tensor<2x8x32xf32>
  // CHECK: sl.attention %{{.*}}, %{{.*}}, %{{.*}} {heads = 4 : i64, kv_heads = 2 : i64}
  %o = sl.attention %r, %k, %k {heads = 4, kv_heads = 2} : (tensor<2x8x32xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x32xf32>
  // CHECK: sl.attention {{.*}} {causal = false, heads = 4 : i64, kv_heads = 2 : i64, scale = 1.250000e-01 : f64}
  %o2 = sl.attention %r, %k, %k {heads = 4, kv_heads = 2, causal = false, scale = 0.125} : (tensor<2x8x32xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x32xf32>
  // CHECK: sl.ring_attention %{{.*}}, %{{.*}}, %{{.*}} {axes = ["cp"], heads = 4 : i64, kv_heads = 2 : i64} : {{.*}} -> tensor<2x8x32xf32, #{{.*}}>
  %ro = sl.ring_attention %qs, %ks, %ks {heads = 4, kv_heads = 2, axes = ["cp"]} : (tensor<2x8x32xf32, #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>>, tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>>, tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>>) -> tensor<2x8x32xf32, #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>>
  return
}

// -----

sl.mesh @mesh(cp = 2)
// CHECK-LABEL: func.func @scans
func.func @scans(%x: tensor<1x8x16xf32>, %dt: tensor<1x8x4xf32>, %h: tensor<4xf32>, %bc: tensor<1x8x8xf32>,
    %cw: tensor<16x4xf32>, %cb: tensor<16xf32>, %w: tensor<16xf32>, %s0: tensor<1x4x4x4xf32>,
    %xs: tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>,
    %cws: tensor<16x4xf32, #sl.layout<@mesh, [[], []]>>, %cbs: tensor<16xf32, #sl.layout<@mesh, [[]]>>,
    %ws: tensor<16xf32, #sl.layout<@mesh, [[]]>>) {
  // CHECK: sl.causal_conv1d %{{.*}}, %{{.*}}, %{{.*}} : (tensor<1x8x16xf32>, tensor<16x4xf32>, tensor<16xf32>) -> tensor<1x8x16xf32>
  %c = sl.causal_conv1d %x, %cw, %cb : (tensor<1x8x16xf32>, tensor<16x4xf32>, tensor<16xf32>) -> tensor<1x8x16xf32>
  // CHECK: %[[H:.*]] = sl.halo %{{.*}} {axes = ["cp"], width = 3 : i64} : tensor<1x8x16xf32, #{{.*}}> -> tensor<1x6x16xf32, #{{.*}}>
  %halo = sl.halo %xs {axes = ["cp"], width = 3} : tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>> -> tensor<1x6x16xf32, #sl.layout<@mesh, [[], [cp], []]>>
  // CHECK: sl.causal_conv1d %{{.*}}, %{{.*}}, %{{.*}} halo %[[H]]
  %ch = sl.causal_conv1d %xs, %cws, %cbs halo %halo : (tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<16x4xf32, #sl.layout<@mesh, [[], []]>>, tensor<16xf32, #sl.layout<@mesh, [[]]>>, tensor<1x6x16xf32, #sl.layout<@mesh, [[], [cp], []]>>) -> tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>
  // CHECK: sl.ssd_scan %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {groups = 2 : i64, heads = 4 : i64} : {{.*}} -> (tensor<1x8x16xf32>, tensor<1x4x4x4xf32>, tensor<1x4xf32>)
  %y, %st, %dec = sl.ssd_scan %x, %dt, %h, %bc, %bc, %h, %h {heads = 4, groups = 2} : (tensor<1x8x16xf32>, tensor<1x8x4xf32>, tensor<4xf32>, tensor<1x8x8xf32>, tensor<1x8x8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<1x8x16xf32>, tensor<1x4x4x4xf32>, tensor<1x4xf32>)
  // CHECK: sl.ssd_scan {{.*}} state_in %{{.*}} {groups = 2 : i64, heads = 4 : i64}
  %y2, %st2, %dec2 = sl.ssd_scan %x, %dt, %h, %bc, %bc, %h, %h state_in %s0 {heads = 4, groups = 2} : (tensor<1x8x16xf32>, tensor<1x8x4xf32>, tensor<4xf32>, tensor<1x8x8xf32>, tensor<1x8x8xf32>, tensor<4xf32>, tensor<4xf32>, tensor<1x4x4x4xf32>) -> (tensor<1x8x16xf32>, tensor<1x4x4x4xf32>, tensor<1x4xf32>)
  // CHECK: sl.rglru_scan {{.*}} -> (tensor<1x8x16xf32>, tensor<1x16xf32>, tensor<1x16xf32>)
  %r, %rs, %rd = sl.rglru_scan %x, %w, %w, %w, %w, %w : (tensor<1x8x16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>) -> (tensor<1x8x16xf32>, tensor<1x16xf32>, tensor<1x16xf32>)
  // Context-parallel form: chunked summaries, exchange, correction.
  // CHECK: %[[Y:.*]], %[[S:.*]], %[[D:.*]] = sl.rglru_scan {{.*}} {chunk_axes = ["cp"]} : {{.*}} -> (tensor<1x8x16xf32, #{{.*}}>, tensor<2x1x16xf32, #{{.*}}>, tensor<2x1x16xf32, #{{.*}}>)
  %cy, %cs, %cd = sl.rglru_scan %xs, %ws, %ws, %ws, %ws, %ws {chunk_axes = ["cp"]} : (tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<16xf32, #sl.layout<@mesh, [[]]>>, tensor<16xf32, #sl.layout<@mesh, [[]]>>, tensor<16xf32, #sl.layout<@mesh, [[]]>>, tensor<16xf32, #sl.layout<@mesh, [[]]>>, tensor<16xf32, #sl.layout<@mesh, [[]]>>) -> (tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x1x16xf32, #sl.layout<@mesh, [[cp], [], []]>>, tensor<2x1x16xf32, #sl.layout<@mesh, [[cp], [], []]>>)
  // CHECK: %[[I:.*]] = sl.scan_state_exchange %[[S]], %[[D]] {axes = ["cp"]}
  %init = sl.scan_state_exchange %cs, %cd {axes = ["cp"]} : (tensor<2x1x16xf32, #sl.layout<@mesh, [[cp], [], []]>>, tensor<2x1x16xf32, #sl.layout<@mesh, [[cp], [], []]>>) -> tensor<2x1x16xf32, #sl.layout<@mesh, [[cp], [], []]>>
  // CHECK: sl.rglru_correct %[[Y]], %[[I]], {{.*}} {chunk_axes = ["cp"]}
  %fixed = sl.rglru_correct %cy, %init, %xs, %ws, %ws, %ws {chunk_axes = ["cp"]} : (tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x1x16xf32, #sl.layout<@mesh, [[cp], [], []]>>, tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<16xf32, #sl.layout<@mesh, [[]]>>, tensor<16xf32, #sl.layout<@mesh, [[]]>>, tensor<16xf32, #sl.layout<@mesh, [[]]>>) -> tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>
  return
}

// -----

sl.mesh @mesh(cp = 2)
// CHECK-LABEL: func.func @ssd_context_parallel
func.func @ssd_context_parallel(%x: tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>,
    %dt: tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>, %h: tensor<4xf32, #sl.layout<@mesh, [[]]>>,
    %bc: tensor<1x8x8xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>) {
  // Zigzag order: 2*cp chunks.
  // CHECK: sl.ssd_scan {{.*}} {chunk_axes = ["cp"], groups = 2 : i64, heads = 4 : i64} : {{.*}} -> (tensor<1x8x16xf32, #{{.*}}>, tensor<4x1x4x4x4xf32, #{{.*}}>, tensor<4x1x4xf32, #{{.*}}>)
  %y, %s, %d = sl.ssd_scan %x, %dt, %h, %bc, %bc, %h, %h {heads = 4, groups = 2, chunk_axes = ["cp"]} : (tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>, tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<1x8x8xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>, tensor<1x8x8xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>) -> (tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>, tensor<4x1x4x4x4xf32, #sl.layout<@mesh, [[cp] zigzag, [], [], [], []]>>, tensor<4x1x4xf32, #sl.layout<@mesh, [[cp] zigzag, [], []]>>)
  // CHECK: sl.scan_state_exchange
  %i = sl.scan_state_exchange %s, %d {axes = ["cp"]} : (tensor<4x1x4x4x4xf32, #sl.layout<@mesh, [[cp] zigzag, [], [], [], []]>>, tensor<4x1x4xf32, #sl.layout<@mesh, [[cp] zigzag, [], []]>>) -> tensor<4x1x4x4x4xf32, #sl.layout<@mesh, [[cp] zigzag, [], [], [], []]>>
  // CHECK: sl.ssd_correct {{.*}} {chunk_axes = ["cp"], groups = 2 : i64, heads = 4 : i64}
  %c = sl.ssd_correct %y, %i, %bc, %dt, %h, %h {heads = 4, groups = 2, chunk_axes = ["cp"]} : (tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>, tensor<4x1x4x4x4xf32, #sl.layout<@mesh, [[cp] zigzag, [], [], [], []]>>, tensor<1x8x8xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>, tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>) -> tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>
  return
}

// -----

// CHECK-LABEL: func.func @moe
func.func @moe(%x: tensor<2x8x16xf32>, %l: tensor<2x8x4xf32>, %g: tensor<4x16x32xf32>, %d: tensor<4x32x16xf32>) {
  // CHECK: %{{.*}}, %{{.*}} = sl.router_topk %{{.*}} {k = 2 : i64} : (tensor<2x8x4xf32>) -> (tensor<2x8x2xf32>, tensor<2x8x2xi32>)
  %w, %i = sl.router_topk %l {k = 2} : (tensor<2x8x4xf32>) -> (tensor<2x8x2xf32>, tensor<2x8x2xi32>)
  // CHECK: sl.moe_dispatch %{{.*}}, %{{.*}} {experts = 4 : i64} : (tensor<2x8x16xf32>, tensor<2x8x2xi32>) -> tensor<4x2x8x16xf32>
  %t = sl.moe_dispatch %x, %i {experts = 4} : (tensor<2x8x16xf32>, tensor<2x8x2xi32>) -> tensor<4x2x8x16xf32>
  // CHECK: sl.moe_experts
  %e = sl.moe_experts %t, %g, %g, %d : (tensor<4x2x8x16xf32>, tensor<4x16x32xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<4x2x8x16xf32>
  // CHECK: sl.moe_combine
  %y = sl.moe_combine %e, %w, %i : (tensor<4x2x8x16xf32>, tensor<2x8x2xf32>, tensor<2x8x2xi32>) -> tensor<2x8x16xf32>
  return
}

// -----

sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-LABEL: func.func @transitions
func.func @transitions(%seq: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp, tp] zigzag, []]>>,
    %sum: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, []], partial = [tp]>>,
    %tok: tensor<4x2x8x16xf32, #sl.layout<@mesh, [[], [ep], [], []]>>) {
  // CHECK: sl.relayout
  %r = sl.relayout %seq : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp, tp] zigzag, []]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
  // CHECK: sl.all_gather %{{.*}} {axes = ["tp"], dim = 1 : i64}
  %g = sl.all_gather %seq {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp, tp] zigzag, []]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>
  // CHECK: sl.reduce_scatter %{{.*}} {axes = ["tp"], dim = 1 : i64}
  %rs = sl.reduce_scatter %sum {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, []], partial = [tp]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp, tp] zigzag, []]>>
  // CHECK: sl.all_reduce %{{.*}} {axes = ["tp"]}
  %ar = sl.all_reduce %sum {axes = ["tp"]} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, []], partial = [tp]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>
  // CHECK: sl.all_to_all %{{.*}} {axes = ["ep"], concat_dim = 1 : i64, split_dim = 0 : i64}
  %a = sl.all_to_all %tok {axes = ["ep"], split_dim = 0, concat_dim = 1} : tensor<4x2x8x16xf32, #sl.layout<@mesh, [[], [ep], [], []]>> -> tensor<4x2x8x16xf32, #sl.layout<@mesh, [[ep], [], [], []]>>
  // CHECK: sl.slice %{{.*}} {axes = ["tp"], dim = 2 : i64}
  %s = sl.slice %g {axes = ["tp"], dim = 2} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>>
  // CHECK: sl.reorder %{{.*}} : tensor<2x8x16xf32, #{{.*}}> -> tensor<2x8x16xf32, #{{.*}}>
  %o = sl.reorder %g : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>
  return
}
