// RUN: shardline-opt %s -sl-test-print-sharding-rules -mlir-print-op-on-diagnostic=false -o /dev/null 2>&1 | FileCheck %s

// The sharding rule of every sl op, as ShardingRule::describe() writes it:
// the factor of each dimension of each operand and result, the factors by
// kind (granules and remedies beside their factor), how pending sums pass
// through, and the op's own sequence factor. The last remark counts the sl
// ops with a rule this file instantiates: a new op without a line here fails.

sl.mesh @mesh(cp = 2, tp = 2)
func.func @ends(%ids: tensor<2x16xi32>, %t: tensor<64x32xf32>, %x: tensor<2x16x32xf32>, %w: tensor<32x64xf32>, %labels: tensor<2x16xi32>) -> tensor<f32> {
  // CHECK: remark: sl.embedding: ids[b,s] table[v,h] -> result[b,s,h]; free: b,s,h; contracted: v; sequence: s{{$}}
  %e = sl.embedding %ids, %t : (tensor<2x16xi32>, tensor<64x32xf32>) -> tensor<2x16x32xf32>
  // CHECK: remark: sl.lm_head: x[b,s,h] weight[h,v] -> logits[b,s,v]; free: b,s,v; contracted: h; partial: one; sequence: s{{$}}
  %l = sl.lm_head %e, %w : (tensor<2x16x32xf32>, tensor<32x64xf32>) -> tensor<2x16x64xf32>
  // CHECK: remark: sl.cross_entropy: logits[b,s,v] labels[b,s] -> loss[]; free: b,s; sequence-mixing: v (vocab parallel); reduces to a scalar; sequence: s{{$}}
  %loss = sl.cross_entropy %l, %labels : (tensor<2x16x64xf32>, tensor<2x16xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}
func.func @dense(%x: tensor<2x16x32xf32>, %w: tensor<32xf32>, %wl: tensor<32x32xf32>, %v: tensor<16xf32>) -> (tensor<2x16x32xf32>, tensor<16xf32>) {
  // CHECK: remark: sl.rms_norm: x[b,s,h] weight[h] -> result[b,s,h]; free: b,s; whole: h; sequence: s{{$}}
  %n = sl.rms_norm %x, %w : (tensor<2x16x32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
  // CHECK: remark: sl.linear: x[b,s,k] weight[k,n] -> result[b,s,n]; free: b,s,n; contracted: k; partial: one; sequence: s{{$}}
  %y = sl.linear %n, %wl : (tensor<2x16x32xf32>, tensor<32x32xf32>) -> tensor<2x16x32xf32>
  // CHECK: remark: sl.add: lhs[d0,s,d2] rhs[d0,s,d2] -> result[d0,s,d2]; free: d0,s,d2; partial: same; sequence: s{{$}}
  %a = sl.add %x, %y : (tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  // CHECK: remark: sl.mul: lhs[d0,s,d2] rhs[d0,s,d2] -> result[d0,s,d2]; free: d0,s,d2; partial: one; sequence: s{{$}}
  %m = sl.mul %a, %y : (tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  // CHECK: remark: sl.swiglu: lhs[d0,s,d2] rhs[d0,s,d2] -> result[d0,s,d2]; free: d0,s,d2; sequence: s{{$}}
  %g = sl.swiglu %m, %y : (tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  // CHECK: remark: sl.silu: x[d0,s,d2] -> result[d0,s,d2]; free: d0,s,d2; sequence: s{{$}}
  %s = sl.silu %g : (tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  // CHECK: remark: sl.gelu: x[d0,s,d2] -> result[d0,s,d2]; free: d0,s,d2; sequence: s{{$}}
  %e = sl.gelu %s : (tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  // CHECK: remark: sl.sigmoid: x[d0,s,d2] -> result[d0,s,d2]; free: d0,s,d2; sequence: s{{$}}
  %i = sl.sigmoid %e : (tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  // A rank-1 activation: its one dimension is its sequence.
  // CHECK: remark: sl.softplus: x[t] -> result[t]; free: t; sequence: t{{$}}
  %p = sl.softplus %v : (tensor<16xf32>) -> tensor<16xf32>
  return %i, %p : tensor<2x16x32xf32>, tensor<16xf32>
}
func.func @attention(%x: tensor<2x16x32xf32>, %kv: tensor<2x16x16xf32>) -> (tensor<2x16x32xf32>, tensor<2x16x32xf32>) {
  // CHECK: remark: sl.rope: x[b,s,heads] -> result[b,s,heads]; free: b,s,heads (granule 4); partial: one; sequence: s{{$}}
  %r = sl.rope %x {head_dim = 8} : (tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  // CHECK: remark: sl.attention: q[b,s,heads] k[b,t,heads] v[b,t,heads] -> result[b,s,heads]; free: b,s,heads (granule 2 kv heads); sequence-mixing: t (kv exchange); sequence: s (also t){{$}}
  %o = sl.attention %r, %kv, %kv {heads = 4, kv_heads = 2} : (tensor<2x16x32xf32>, tensor<2x16x16xf32>, tensor<2x16x16xf32>) -> tensor<2x16x32xf32>
  // CHECK: remark: sl.ring_attention: q[b,s,heads] k[b,s,heads] v[b,s,heads] -> result[b,s,heads]; free: b,heads (granule 2 kv heads); sequence-mixing: s (kv exchange over [cp]); sequence: s{{$}}
  %ring = sl.ring_attention %r, %kv, %kv {heads = 4, kv_heads = 2, axes = ["cp"]} : (tensor<2x16x32xf32>, tensor<2x16x16xf32>, tensor<2x16x16xf32>) -> tensor<2x16x32xf32>
  // CHECK: remark: sl.ring_attention_grad: q[b,s,heads] k[b,s,heads] v[b,s,heads] dy[b,s,heads] -> dq[b,s,heads] dk[b,s,heads] dv[b,s,heads]; free: b,heads (granule 2 kv heads); sequence-mixing: s (kv exchange over [cp]); sequence: s{{$}}
  %dq, %dk, %dv = sl.ring_attention_grad %r, %kv, %kv, %r {heads = 4, kv_heads = 2, axes = ["cp"]} : (tensor<2x16x32xf32>, tensor<2x16x16xf32>, tensor<2x16x16xf32>, tensor<2x16x32xf32>) -> (tensor<2x16x32xf32>, tensor<2x16x16xf32>, tensor<2x16x16xf32>)
  return %o, %ring : tensor<2x16x32xf32>, tensor<2x16x32xf32>
}
func.func @local_attention(%q: tensor<2x16x32xf32>, %kv: tensor<2x16x16xf32>, %qs: tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, %kvs: tensor<2x16x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, %h: tensor<2x10x16xf32, #sl.layout<@mesh, [[], [cp], []]>>) -> (tensor<2x16x32xf32>, tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>) {
  // CHECK: remark: sl.local_attention: q[b,s,heads] k[b,s,heads] v[b,s,heads] -> result[b,s,heads]; free: b,heads (granule 2 kv heads); sequence-mixing: s (halo); sequence: s{{$}}
  %o = sl.local_attention %q, %kv, %kv {heads = 4, kv_heads = 2, window = 6} : (tensor<2x16x32xf32>, tensor<2x16x16xf32>, tensor<2x16x16xf32>) -> tensor<2x16x32xf32>
  // CHECK: remark: sl.local_attention: q[b,s,heads] k[b,s,heads] v[b,s,heads] k_halo[b,halo,heads] v_halo[b,halo,heads] -> result[b,s,heads]; free: b,heads (granule 2 kv heads),halo; sequence-mixing: s (halo over [cp]); sequence: s (also halo){{$}}
  %s = sl.local_attention %qs, %kvs, %kvs halo %h, %h {heads = 4, kv_heads = 2, window = 6} : (tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x16x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x16x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x10x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x10x16xf32, #sl.layout<@mesh, [[], [cp], []]>>) -> tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>
  // CHECK: remark: sl.local_attention_grad: q[b,s,heads] k[b,s,heads] v[b,s,heads] dy[b,s,heads] -> dq[b,s,heads] dk[b,s,heads] dv[b,s,heads]; free: b,heads (granule 2 kv heads); sequence-mixing: s (halo); sequence: s{{$}}
  %g:3 = sl.local_attention_grad %q, %kv, %kv, %q {heads = 4, kv_heads = 2, window = 6} : (tensor<2x16x32xf32>, tensor<2x16x16xf32>, tensor<2x16x16xf32>, tensor<2x16x32xf32>) -> (tensor<2x16x32xf32>, tensor<2x16x16xf32>, tensor<2x16x16xf32>)
  // CHECK: remark: sl.local_attention_grad_halo: q[b,s,heads] k[b,s,heads] v[b,s,heads] k_halo[b,halo,heads] v_halo[b,halo,heads] dy[b,s,heads] -> dq[b,s,heads] dk[b,s,heads] dv[b,s,heads] dk_halo[b,halo,heads] dv_halo[b,halo,heads]; free: b,heads (granule 2 kv heads),halo; sequence-mixing: s (halo over [cp]); sequence: s (also halo){{$}}
  %gh:5 = sl.local_attention_grad_halo %qs, %kvs, %kvs, %h, %h, %qs {heads = 4, kv_heads = 2, window = 6} : (tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x16x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x16x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x10x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x10x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>) -> (tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x16x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x16x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x10x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x10x16xf32, #sl.layout<@mesh, [[], [cp], []]>>)
  return %o, %s : tensor<2x16x32xf32>, tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>
}
func.func @mamba(%x: tensor<2x16x32xf32>, %cw: tensor<32x4xf32>, %cb: tensor<32xf32>, %dt: tensor<2x16x4xf32>, %a: tensor<4xf32>, %bc: tensor<2x16x8xf32>) -> (tensor<2x16x32xf32>, tensor<2x16x32xf32>) {
  // CHECK: remark: sl.causal_conv1d: x[b,s,c] weight[c,width] bias[c] -> result[b,s,c]; free: b,c; whole: width; sequence-mixing: s (halo); sequence: s{{$}}
  %c = sl.causal_conv1d %x, %cw, %cb : (tensor<2x16x32xf32>, tensor<32x4xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
  // CHECK: remark: sl.ssd_scan: x[b,s,groups] dt[b,s,groups] a_log[groups] B[b,s,groups] C[b,s,groups] d[groups] dt_bias[groups] -> y[b,s,groups] state[b,groups,p,n] decay[b,groups]; free: b,groups (granule 2); whole: p,n; sequence-mixing: s (state passing); sequence: s{{$}}
  %y, %s, %d = sl.ssd_scan %c, %dt, %a, %bc, %bc, %a, %a {heads = 4, groups = 2} : (tensor<2x16x32xf32>, tensor<2x16x4xf32>, tensor<4xf32>, tensor<2x16x8xf32>, tensor<2x16x8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<2x16x32xf32>, tensor<2x4x8x4xf32>, tensor<2x4xf32>)
  // CHECK: remark: sl.gated_rms_norm: y[b,s,groups] z[b,s,groups] weight[groups] -> result[b,s,groups]; free: b,s,groups (granule 2); sequence: s{{$}}
  %n = sl.gated_rms_norm %y, %x, %cb {groups = 2} : (tensor<2x16x32xf32>, tensor<2x16x32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
  return %n, %c : tensor<2x16x32xf32>, tensor<2x16x32xf32>
}
func.func @mamba_training(%x: tensor<2x16x32xf32>, %cw: tensor<32x4xf32>, %dt: tensor<2x16x4xf32>, %a: tensor<4xf32>, %bc: tensor<2x16x8xf32>, %w: tensor<32xf32>) {
  // CHECK: remark: sl.gated_rms_norm_grad: y[b,s,groups] z[b,s,groups] weight[groups] dresult[b,s,groups] -> dy[b,s,groups] dz[b,s,groups]; free: b,s,groups (granule 2); sequence: s{{$}}
  %gy, %gz = sl.gated_rms_norm_grad %x, %x, %w, %x {groups = 2} : (tensor<2x16x32xf32>, tensor<2x16x32xf32>, tensor<32xf32>, tensor<2x16x32xf32>) -> (tensor<2x16x32xf32>, tensor<2x16x32xf32>)
  // CHECK: remark: sl.gated_rms_norm_grad_weight: y[b,s,groups] z[b,s,groups] dresult[b,s,groups] -> dweight[groups]; free: groups (granule 2); contracted: b,s; sequence: s{{$}}
  %gw = sl.gated_rms_norm_grad_weight %x, %x, %x {groups = 2} : (tensor<2x16x32xf32>, tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<32xf32>
  // CHECK: remark: sl.causal_conv1d_grad: weight[c,width] dy[b,s,c] -> dx[b,s,c]; free: b,c; whole: width; sequence-mixing: s (no remedy); sequence: s{{$}}
  %cx = sl.causal_conv1d_grad %cw, %x : (tensor<32x4xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  // CHECK: remark: sl.causal_conv1d_grad_weight: x[b,s,c] dy[b,s,c] -> dweight[c,width] dbias[c]; free: c; contracted: b; whole: width; sequence-mixing: s (no remedy); sequence: s{{$}}
  %cwg, %cbg = sl.causal_conv1d_grad_weight %x, %x : (tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> (tensor<32x4xf32>, tensor<32xf32>)
  // CHECK: remark: sl.ssd_scan_grad: x[b,s,groups] dt[b,s,groups] a_log[groups] B[b,s,groups] C[b,s,groups] d[groups] dt_bias[groups] dy[b,s,groups] -> dx[b,s,groups] ddt[b,s,groups] dB[b,s,groups] dC[b,s,groups]; free: b,groups (granule 2); sequence-mixing: s (no remedy); sequence: s{{$}}
  %dx, %ddt, %dB, %dC = sl.ssd_scan_grad %x, %dt, %a, %bc, %bc, %a, %a, %x {heads = 4, groups = 2} : (tensor<2x16x32xf32>, tensor<2x16x4xf32>, tensor<4xf32>, tensor<2x16x8xf32>, tensor<2x16x8xf32>, tensor<4xf32>, tensor<4xf32>, tensor<2x16x32xf32>) -> (tensor<2x16x32xf32>, tensor<2x16x4xf32>, tensor<2x16x8xf32>, tensor<2x16x8xf32>)
  // CHECK: remark: sl.ssd_scan_grad_params: x[b,s,groups] dt[b,s,groups] a_log[groups] B[b,s,groups] C[b,s,groups] d[groups] dt_bias[groups] dy[b,s,groups] -> da_log[groups] dd[groups] ddt_bias[groups]; free: groups (granule 2); contracted: b; sequence-mixing: s (no remedy); sequence: s{{$}}
  %da, %dd, %db = sl.ssd_scan_grad_params %x, %dt, %a, %bc, %bc, %a, %a, %x {heads = 4, groups = 2} : (tensor<2x16x32xf32>, tensor<2x16x4xf32>, tensor<4xf32>, tensor<2x16x8xf32>, tensor<2x16x8xf32>, tensor<4xf32>, tensor<4xf32>, tensor<2x16x32xf32>) -> (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>)
  return
}

func.func @mamba_split(%x: tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, %cw: tensor<32x4xf32, #sl.layout<@mesh, [[], []]>>, %cb: tensor<32xf32, #sl.layout<@mesh, [[]]>>, %dt: tensor<2x16x4xf32, #sl.layout<@mesh, [[], [cp], []]>>, %a: tensor<4xf32, #sl.layout<@mesh, [[]]>>, %bc: tensor<2x16x8xf32, #sl.layout<@mesh, [[], [cp], []]>>, %init: tensor<2x2x4x8x4xf32, #sl.layout<@mesh, [[cp], [], [], [], []]>>) -> (tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>) {
  %h = sl.halo %x {axes = ["cp"], width = 3} : tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>> -> tensor<2x6x32xf32, #sl.layout<@mesh, [[], [cp], []]>>
  // CHECK: remark: sl.causal_conv1d: x[b,s,c] weight[c,width] bias[c] halo[b,halo,c] -> result[b,s,c]; free: b,c,halo; whole: width; sequence-mixing: s (halo over [cp]); sequence: s (also halo){{$}}
  %c = sl.causal_conv1d %x, %cw, %cb halo %h : (tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<32x4xf32, #sl.layout<@mesh, [[], []]>>, tensor<32xf32, #sl.layout<@mesh, [[]]>>, tensor<2x6x32xf32, #sl.layout<@mesh, [[], [cp], []]>>) -> tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>
  // CHECK: remark: sl.ssd_correct: y0[b,s,groups] init[s,b,groups,p,n] C[b,s,groups] dt[b,s,groups] a_log[groups] dt_bias[groups] -> result[b,s,groups]; free: b,groups (granule 2); whole: p,n; sequence-mixing: s (state passing over [cp]); sequence: s{{$}}
  %r = sl.ssd_correct %x, %init, %bc, %dt, %a, %a {heads = 4, groups = 2, chunk_axes = ["cp"]} : (tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x2x4x8x4xf32, #sl.layout<@mesh, [[cp], [], [], [], []]>>, tensor<2x16x8xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x16x4xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>) -> tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>
  // CHECK: remark: sl.ssd_correct_grad: init[s,b,groups,p,n] C[b,s,groups] dt[b,s,groups] a_log[groups] dt_bias[groups] dy[b,s,groups] -> dinit[s,b,groups,p,n] dC[b,s,groups] ddt[b,s,groups]; free: b,groups (granule 2); whole: p,n; sequence-mixing: s (state passing over [cp]); sequence: s{{$}}
  %di, %dc, %ddt = sl.ssd_correct_grad %init, %bc, %dt, %a, %a, %x {heads = 4, groups = 2, chunk_axes = ["cp"]} : (tensor<2x2x4x8x4xf32, #sl.layout<@mesh, [[cp], [], [], [], []]>>, tensor<2x16x8xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x16x4xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>) -> (tensor<2x2x4x8x4xf32, #sl.layout<@mesh, [[cp], [], [], [], []]>>, tensor<2x16x8xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x16x4xf32, #sl.layout<@mesh, [[], [cp], []]>>)
  // CHECK: remark: sl.ssd_correct_grad_params: init[s,b,groups,p,n] C[b,s,groups] dt[b,s,groups] a_log[groups] dt_bias[groups] dy[b,s,groups] -> da_log[groups] ddt_bias[groups]; free: groups (granule 2); contracted: b,s; whole: p,n; sequence: s{{$}}
  %cda, %cdb = sl.ssd_correct_grad_params %init, %bc, %dt, %a, %a, %x {heads = 4, groups = 2, chunk_axes = ["cp"]} : (tensor<2x2x4x8x4xf32, #sl.layout<@mesh, [[cp], [], [], [], []]>>, tensor<2x16x8xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x16x4xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>) -> (tensor<4xf32, #sl.layout<@mesh, [[]], partial = [cp]>>, tensor<4xf32, #sl.layout<@mesh, [[]], partial = [cp]>>)
  return %c, %r : tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>
}
// The backward of the conv with its halo and of the chunked scan: the halo
// rows and the chunks' summaries on the forward's factors.
func.func @mamba_split_training(%x: tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, %cw: tensor<32x4xf32, #sl.layout<@mesh, [[], []]>>, %dt: tensor<2x16x4xf32, #sl.layout<@mesh, [[], [cp], []]>>, %a: tensor<4xf32, #sl.layout<@mesh, [[]]>>, %bc: tensor<2x16x8xf32, #sl.layout<@mesh, [[], [cp], []]>>, %st: tensor<2x2x4x8x4xf32, #sl.layout<@mesh, [[cp], [], [], [], []]>>, %dec: tensor<2x2x4xf32, #sl.layout<@mesh, [[cp], [], []]>>, %h: tensor<2x6x32xf32, #sl.layout<@mesh, [[], [cp], []]>>) {
  // CHECK: remark: sl.causal_conv1d_grad: weight[c,width] dy[b,s,c] halo[b,halo,c] -> dx[b,s,c] dhalo[b,halo,c]; free: b,c,halo; whole: width; sequence-mixing: s (halo over [cp]); sequence: s (also halo){{$}}
  %cx, %ch = sl.causal_conv1d_grad %cw, %x halo %h : (tensor<32x4xf32, #sl.layout<@mesh, [[], []]>>, tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x6x32xf32, #sl.layout<@mesh, [[], [cp], []]>>) -> (tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x6x32xf32, #sl.layout<@mesh, [[], [cp], []]>>)
  // CHECK: remark: sl.causal_conv1d_grad_weight: x[b,s,c] dy[b,s,c] halo[b,halo,c] -> dweight[c,width] dbias[c]; free: c,halo; contracted: b,s; whole: width; sequence: s (also halo){{$}}
  %cwg, %cbg = sl.causal_conv1d_grad_weight %x, %x halo %h : (tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x6x32xf32, #sl.layout<@mesh, [[], [cp], []]>>) -> (tensor<32x4xf32, #sl.layout<@mesh, [[], []], partial = [cp]>>, tensor<32xf32, #sl.layout<@mesh, [[]], partial = [cp]>>)
  // CHECK: remark: sl.ssd_scan_grad: x[b,s,groups] dt[b,s,groups] a_log[groups] B[b,s,groups] C[b,s,groups] d[groups] dt_bias[groups] dy[b,s,groups] dstate[s,b,groups,p,n] ddecay[s,b,groups] -> dx[b,s,groups] ddt[b,s,groups] dB[b,s,groups] dC[b,s,groups]; free: b,groups (granule 2); whole: p,n; sequence-mixing: s (state passing over [cp]); sequence: s{{$}}
  %dx, %ddt, %dB, %dC = sl.ssd_scan_grad %x, %dt, %a, %bc, %bc, %a, %a, %x dstate %st ddecay %dec {heads = 4, groups = 2, chunk_axes = ["cp"]} : (tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x16x4xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<2x16x8xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x16x8xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x2x4x8x4xf32, #sl.layout<@mesh, [[cp], [], [], [], []]>>, tensor<2x2x4xf32, #sl.layout<@mesh, [[cp], [], []]>>) -> (tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x16x4xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x16x8xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x16x8xf32, #sl.layout<@mesh, [[], [cp], []]>>)
  // CHECK: remark: sl.ssd_scan_grad_params: x[b,s,groups] dt[b,s,groups] a_log[groups] B[b,s,groups] C[b,s,groups] d[groups] dt_bias[groups] dy[b,s,groups] dstate[s,b,groups,p,n] ddecay[s,b,groups] -> da_log[groups] dd[groups] ddt_bias[groups]; free: groups (granule 2); contracted: b,s; whole: p,n; sequence: s{{$}}
  %da, %dd, %db = sl.ssd_scan_grad_params %x, %dt, %a, %bc, %bc, %a, %a, %x dstate %st ddecay %dec {heads = 4, groups = 2, chunk_axes = ["cp"]} : (tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x16x4xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<2x16x8xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x16x8xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x2x4x8x4xf32, #sl.layout<@mesh, [[cp], [], [], [], []]>>, tensor<2x2x4xf32, #sl.layout<@mesh, [[cp], [], []]>>) -> (tensor<4xf32, #sl.layout<@mesh, [[]], partial = [cp]>>, tensor<4xf32, #sl.layout<@mesh, [[]], partial = [cp]>>, tensor<4xf32, #sl.layout<@mesh, [[]], partial = [cp]>>)
  return
}
func.func @recurrent(%x: tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, %g: tensor<32xf32, #sl.layout<@mesh, [[]]>>, %init: tensor<2x2x32xf32, #sl.layout<@mesh, [[cp], [], []]>>) -> (tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>) {
  // CHECK: remark: sl.rglru_scan: x[b,s,w] wa[w] ba[w] wx[w] bx[w] lambda[w] -> y[b,s,w] state[s,b,w] decay[s,b,w]; free: b,w; sequence-mixing: s (state passing over [cp]); sequence: s{{$}}
  %y, %s, %d = sl.rglru_scan %x, %g, %g, %g, %g, %g {chunk_axes = ["cp"]} : (tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<32xf32, #sl.layout<@mesh, [[]]>>, tensor<32xf32, #sl.layout<@mesh, [[]]>>, tensor<32xf32, #sl.layout<@mesh, [[]]>>, tensor<32xf32, #sl.layout<@mesh, [[]]>>, tensor<32xf32, #sl.layout<@mesh, [[]]>>) -> (tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x2x32xf32, #sl.layout<@mesh, [[cp], [], []]>>, tensor<2x2x32xf32, #sl.layout<@mesh, [[cp], [], []]>>)
  // CHECK: remark: sl.rglru_correct: y0[b,s,w] init[s,b,w] x[b,s,w] wa[w] ba[w] lambda[w] -> result[b,s,w]; free: b,w; sequence-mixing: s (state passing over [cp]); sequence: s{{$}}
  %r = sl.rglru_correct %y, %init, %x, %g, %g, %g {chunk_axes = ["cp"]} : (tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x2x32xf32, #sl.layout<@mesh, [[cp], [], []]>>, tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<32xf32, #sl.layout<@mesh, [[]]>>, tensor<32xf32, #sl.layout<@mesh, [[]]>>, tensor<32xf32, #sl.layout<@mesh, [[]]>>) -> tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>
  // CHECK: remark: sl.rglru_correct_grad: init[s,b,w] x[b,s,w] wa[w] ba[w] lambda[w] dy[b,s,w] -> dinit[s,b,w] dx[b,s,w]; free: b,w; sequence-mixing: s (state passing over [cp]); sequence: s{{$}}
  %di, %dxc = sl.rglru_correct_grad %init, %x, %g, %g, %g, %x {chunk_axes = ["cp"]} : (tensor<2x2x32xf32, #sl.layout<@mesh, [[cp], [], []]>>, tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<32xf32, #sl.layout<@mesh, [[]]>>, tensor<32xf32, #sl.layout<@mesh, [[]]>>, tensor<32xf32, #sl.layout<@mesh, [[]]>>, tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>) -> (tensor<2x2x32xf32, #sl.layout<@mesh, [[cp], [], []]>>, tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>)
  // CHECK: remark: sl.rglru_correct_grad_params: init[s,b,w] x[b,s,w] wa[w] ba[w] lambda[w] dy[b,s,w] -> dwa[w] dba[w] dlambda[w]; free: w; contracted: b,s; sequence: s{{$}}
  %cwa, %cba, %cl = sl.rglru_correct_grad_params %init, %x, %g, %g, %g, %x {chunk_axes = ["cp"]} : (tensor<2x2x32xf32, #sl.layout<@mesh, [[cp], [], []]>>, tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<32xf32, #sl.layout<@mesh, [[]]>>, tensor<32xf32, #sl.layout<@mesh, [[]]>>, tensor<32xf32, #sl.layout<@mesh, [[]]>>, tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>) -> (tensor<32xf32, #sl.layout<@mesh, [[]], partial = [cp]>>, tensor<32xf32, #sl.layout<@mesh, [[]], partial = [cp]>>, tensor<32xf32, #sl.layout<@mesh, [[]], partial = [cp]>>)
  // CHECK: remark: sl.rglru_scan_grad: x[b,s,w] wa[w] ba[w] wx[w] bx[w] lambda[w] dy[b,s,w] dstate[s,b,w] ddecay[s,b,w] -> dx[b,s,w]; free: b,w; sequence-mixing: s (state passing over [cp]); sequence: s{{$}}
  %dx = sl.rglru_scan_grad %x, %g, %g, %g, %g, %g, %x dstate %init ddecay %init {chunk_axes = ["cp"]} : (tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<32xf32, #sl.layout<@mesh, [[]]>>, tensor<32xf32, #sl.layout<@mesh, [[]]>>, tensor<32xf32, #sl.layout<@mesh, [[]]>>, tensor<32xf32, #sl.layout<@mesh, [[]]>>, tensor<32xf32, #sl.layout<@mesh, [[]]>>, tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x2x32xf32, #sl.layout<@mesh, [[cp], [], []]>>, tensor<2x2x32xf32, #sl.layout<@mesh, [[cp], [], []]>>) -> tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>
  // CHECK: remark: sl.rglru_scan_grad_weights: x[b,s,w] wa[w] ba[w] wx[w] bx[w] lambda[w] dy[b,s,w] dstate[s,b,w] ddecay[s,b,w] -> dwa[w] dba[w] dwx[w] dbx[w] dlambda[w]; free: w; contracted: b,s; sequence: s{{$}}
  %a, %b, %c, %e, %l = sl.rglru_scan_grad_weights %x, %g, %g, %g, %g, %g, %x dstate %init ddecay %init {chunk_axes = ["cp"]} : (tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<32xf32, #sl.layout<@mesh, [[]]>>, tensor<32xf32, #sl.layout<@mesh, [[]]>>, tensor<32xf32, #sl.layout<@mesh, [[]]>>, tensor<32xf32, #sl.layout<@mesh, [[]]>>, tensor<32xf32, #sl.layout<@mesh, [[]]>>, tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x2x32xf32, #sl.layout<@mesh, [[cp], [], []]>>, tensor<2x2x32xf32, #sl.layout<@mesh, [[cp], [], []]>>) -> (tensor<32xf32, #sl.layout<@mesh, [[]], partial = [cp]>>, tensor<32xf32, #sl.layout<@mesh, [[]], partial = [cp]>>, tensor<32xf32, #sl.layout<@mesh, [[]], partial = [cp]>>, tensor<32xf32, #sl.layout<@mesh, [[]], partial = [cp]>>, tensor<32xf32, #sl.layout<@mesh, [[]], partial = [cp]>>)
  return %y, %r : tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x16x32xf32, #sl.layout<@mesh, [[], [cp], []]>>
}
func.func @moe(%x: tensor<2x16x32xf32>, %logits: tensor<2x16x4xf32>, %up: tensor<4x32x64xf32>, %down: tensor<4x64x32xf32>) -> tensor<2x16x32xf32> {
  // CHECK: remark: sl.router_topk: logits[b,s,experts] -> weights[b,s,k] indices[b,s,k]; free: b,s; whole: experts,k; sequence: s{{$}}
  %w, %i = sl.router_topk %logits {k = 2} : (tensor<2x16x4xf32>) -> (tensor<2x16x2xf32>, tensor<2x16x2xi32>)
  // CHECK: remark: sl.moe_dispatch: x[b,s,h] indices[b,s,k] -> result[experts,b,s,h]; free: b,s,h; whole: experts,k; sequence: s{{$}}
  %t = sl.moe_dispatch %x, %i {experts = 4} : (tensor<2x16x32xf32>, tensor<2x16x2xi32>) -> tensor<4x2x16x32xf32>
  // CHECK: remark: sl.moe_experts: tokens[experts,b,s,h] gate[experts,h,f] up[experts,h,f] down[experts,f,h] -> result[experts,b,s,h]; free: experts,b,s; contracted: f; whole: h; sequence: s{{$}}
  %e = sl.moe_experts %t, %up, %up, %down : (tensor<4x2x16x32xf32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<4x2x16x32xf32>
  // CHECK: remark: sl.moe_combine: expert_out[experts,b,s,h] weights[b,s,k] indices[b,s,k] -> result[b,s,h]; free: b,s,h; whole: experts,k; partial: one; sequence: s{{$}}
  %y = sl.moe_combine %e, %w, %i : (tensor<4x2x16x32xf32>, tensor<2x16x2xf32>, tensor<2x16x2xi32>) -> tensor<2x16x32xf32>
  return %y : tensor<2x16x32xf32>
}
// Dropless MoE carries its exchange: the experts may be split over
// expert_axes, and its gradient's weight gradients sum over the tokens less
// those axes.
func.func @moe_dropless(%x: tensor<2x16x32xf32>, %w: tensor<2x16x2xf32>, %i: tensor<2x16x2xi32>, %up: tensor<4x32x64xf32>, %down: tensor<4x64x32xf32>) -> tensor<2x16x32xf32> {
  // CHECK: remark: sl.moe_dropless: x[b,s,h] weights[b,s,k] indices[b,s,k] gate[experts,h,f] up[experts,h,f] down[experts,f,h] -> result[b,s,h]; free: b,s; whole: h,k,f; sequence-mixing: experts (expert exchange over [cp]); sequence: s{{$}}
  %y = sl.moe_dropless %x, %w, %i, %up, %up, %down {expert_axes = ["cp"]} : (tensor<2x16x32xf32>, tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<2x16x32xf32>
  // CHECK: remark: sl.moe_dropless_grad: x[b,s,h] weights[b,s,k] indices[b,s,k] gate[experts,h,f] up[experts,h,f] down[experts,f,h] dy[b,s,h] -> dx[b,s,h] dweights[b,s,k] dgate[experts,h,f] dup[experts,h,f] ddown[experts,f,h]; free: b,s; whole: h,k,f; sequence-mixing: experts (expert exchange over [cp]); dgate sums b,s (not over the axes of an expert exchange); dup sums b,s (not over the axes of an expert exchange); ddown sums b,s (not over the axes of an expert exchange); sequence: s{{$}}
  %dx, %dw, %dg, %du, %dd = sl.moe_dropless_grad %x, %w, %i, %up, %up, %down, %y {expert_axes = ["cp"]} : (tensor<2x16x32xf32>, tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>, tensor<2x16x32xf32>) -> (tensor<2x16x32xf32>, tensor<2x16x2xf32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>)
  return %y : tensor<2x16x32xf32>
}
// The backward of the mixture of experts: the experts dimension whole or free
// where the forward has it so.
func.func @moe_training(%x: tensor<2x16x32xf32>, %w: tensor<2x16x2xf32>, %i: tensor<2x16x2xi32>, %t: tensor<4x2x16x32xf32>, %up: tensor<4x32x64xf32>, %down: tensor<4x64x32xf32>) -> (tensor<2x16x4xf32>, tensor<2x16x32xf32>, tensor<2x16x2xf32>) {
  // CHECK: remark: sl.router_topk_grad: weights[b,s,k] indices[b,s,k] dweights[b,s,k] -> dlogits[b,s,experts]; free: b,s; whole: experts,k; sequence: s{{$}}
  %dl = sl.router_topk_grad %w, %i, %w : (tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<2x16x2xf32>) -> tensor<2x16x4xf32>
  // CHECK: remark: sl.moe_combine_grad: weights[b,s,k] indices[b,s,k] dy[b,s,h] -> dexpert_out[experts,b,s,h]; free: b,s,h; whole: experts,k; partial: one; sequence: s{{$}}
  %de = sl.moe_combine_grad %w, %i, %x : (tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<2x16x32xf32>) -> tensor<4x2x16x32xf32>
  // CHECK: remark: sl.moe_combine_grad_weights: expert_out[experts,b,s,h] indices[b,s,k] dy[b,s,h] -> dweights[b,s,k]; free: b,s; contracted: h; whole: experts,k; partial: one; sequence: s{{$}}
  %dw = sl.moe_combine_grad_weights %t, %i, %x : (tensor<4x2x16x32xf32>, tensor<2x16x2xi32>, tensor<2x16x32xf32>) -> tensor<2x16x2xf32>
  // CHECK: remark: sl.moe_experts_grad: tokens[experts,b,s,h] gate[experts,h,f] up[experts,h,f] down[experts,f,h] dy[experts,b,s,h] -> dtokens[experts,b,s,h]; free: experts,b,s; contracted: f; whole: h; sequence: s{{$}}
  %dt = sl.moe_experts_grad %t, %up, %up, %down, %de : (tensor<4x2x16x32xf32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>, tensor<4x2x16x32xf32>) -> tensor<4x2x16x32xf32>
  // CHECK: remark: sl.moe_experts_grad_weights: tokens[experts,b,s,h] gate[experts,h,f] up[experts,h,f] down[experts,f,h] dy[experts,b,s,h] -> dgate[experts,h,f] dup[experts,h,f] ddown[experts,f,h]; free: experts,f; contracted: b,s; whole: h; sequence: s{{$}}
  %dg, %du, %dd = sl.moe_experts_grad_weights %t, %up, %up, %down, %de : (tensor<4x2x16x32xf32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>, tensor<4x2x16x32xf32>) -> (tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>)
  // CHECK: remark: sl.moe_dispatch_grad: dtokens[experts,b,s,h] indices[b,s,k] -> dx[b,s,h]; free: b,s,h; whole: experts,k; partial: one; sequence: s{{$}}
  %dx = sl.moe_dispatch_grad %dt, %i : (tensor<4x2x16x32xf32>, tensor<2x16x2xi32>) -> tensor<2x16x32xf32>
  return %dl, %dx, %dw : tensor<2x16x4xf32>, tensor<2x16x32xf32>, tensor<2x16x2xf32>
}
// Capacity mode: batch and sequence keep their groups whole (granules: the
// number of groups along each); the buffers [experts, Gb, Gs, C, h] share b
// and s with the tokens, and the experts take rank-5 tokens with the capacity
// rows free.
func.func @moe_capacity(%x: tensor<2x16x32xf32>, %w: tensor<2x16x2xf32>, %i: tensor<2x16x2xi32>, %up: tensor<4x32x64xf32>, %down: tensor<4x64x32xf32>) -> (tensor<2x16x32xf32>, tensor<2x16x32xf32>, tensor<2x16x2xf32>) {
  // CHECK: remark: sl.moe_capacity_slots: weights[b,s,k] indices[b,s,k] -> slots[b,s,k]; free: b (granule 2 batch groups),s (granule 4 sequence groups); whole: k; sequence: s{{$}}
  %sl = sl.moe_capacity_slots %w, %i {experts = 4, capacity = 3, group = array<i64: 1, 4>, drop_policy = "probs"} : (tensor<2x16x2xf32>, tensor<2x16x2xi32>) -> tensor<2x16x2xi32>
  // CHECK: remark: sl.moe_dispatch_capacity: x[b,s,h] indices[b,s,k] slots[b,s,k] -> result[experts,b,s,capacity,h]; free: b (granule 2 batch groups),s (granule 4 sequence groups),h; whole: experts,capacity,k; sequence: s{{$}}
  %t = sl.moe_dispatch_capacity %x, %i, %sl {experts = 4, capacity = 3, group = array<i64: 1, 4>} : (tensor<2x16x32xf32>, tensor<2x16x2xi32>, tensor<2x16x2xi32>) -> tensor<4x2x4x3x32xf32>
  // CHECK: remark: sl.moe_experts: tokens[experts,b,s,r3,h] gate[experts,h,f] up[experts,h,f] down[experts,f,h] -> result[experts,b,s,r3,h]; free: experts,b,s,r3; contracted: f; whole: h; sequence: s{{$}}
  %e = sl.moe_experts %t, %up, %up, %down : (tensor<4x2x4x3x32xf32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<4x2x4x3x32xf32>
  // CHECK: remark: sl.moe_combine_capacity: expert_out[experts,b,s,capacity,h] weights[b,s,k] indices[b,s,k] slots[b,s,k] -> result[b,s,h]; free: b (granule 2 batch groups),s (granule 4 sequence groups),h; whole: experts,capacity,k; partial: one; sequence: s{{$}}
  %y = sl.moe_combine_capacity %e, %w, %i, %sl {group = array<i64: 1, 4>} : (tensor<4x2x4x3x32xf32>, tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<2x16x2xi32>) -> tensor<2x16x32xf32>
  // CHECK: remark: sl.moe_combine_capacity_grad: weights[b,s,k] indices[b,s,k] slots[b,s,k] dy[b,s,h] -> dexpert_out[experts,b,s,capacity,h]; free: b (granule 2 batch groups),s (granule 4 sequence groups),h; whole: experts,capacity,k; partial: one; sequence: s{{$}}
  %de = sl.moe_combine_capacity_grad %w, %i, %sl, %x {experts = 4, capacity = 3, group = array<i64: 1, 4>} : (tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<2x16x2xi32>, tensor<2x16x32xf32>) -> tensor<4x2x4x3x32xf32>
  // CHECK: remark: sl.moe_combine_capacity_grad_weights: expert_out[experts,b,s,capacity,h] indices[b,s,k] slots[b,s,k] dy[b,s,h] -> dweights[b,s,k]; free: b (granule 2 batch groups),s (granule 4 sequence groups); contracted: h; whole: experts,capacity,k; partial: one; sequence: s{{$}}
  %dw = sl.moe_combine_capacity_grad_weights %e, %i, %sl, %x {group = array<i64: 1, 4>} : (tensor<4x2x4x3x32xf32>, tensor<2x16x2xi32>, tensor<2x16x2xi32>, tensor<2x16x32xf32>) -> tensor<2x16x2xf32>
  // CHECK: remark: sl.moe_experts_grad: tokens[experts,b,s,r3,h] gate[experts,h,f] up[experts,h,f] down[experts,f,h] dy[experts,b,s,r3,h] -> dtokens[experts,b,s,r3,h]; free: experts,b,s,r3; contracted: f; whole: h; sequence: s{{$}}
  %dt = sl.moe_experts_grad %t, %up, %up, %down, %de : (tensor<4x2x4x3x32xf32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>, tensor<4x2x4x3x32xf32>) -> tensor<4x2x4x3x32xf32>
  // CHECK: remark: sl.moe_experts_grad_weights: tokens[experts,b,s,r3,h] gate[experts,h,f] up[experts,h,f] down[experts,f,h] dy[experts,b,s,r3,h] -> dgate[experts,h,f] dup[experts,h,f] ddown[experts,f,h]; free: experts,f; contracted: b,s,r3; whole: h; sequence: s{{$}}
  %dg, %du, %dd = sl.moe_experts_grad_weights %t, %up, %up, %down, %de : (tensor<4x2x4x3x32xf32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>, tensor<4x2x4x3x32xf32>) -> (tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>)
  // CHECK: remark: sl.moe_dispatch_capacity_grad: dtokens[experts,b,s,capacity,h] indices[b,s,k] slots[b,s,k] -> dx[b,s,h]; free: b (granule 2 batch groups),s (granule 4 sequence groups),h; whole: experts,capacity,k; partial: one; sequence: s{{$}}
  %dx = sl.moe_dispatch_capacity_grad %dt, %i, %sl {group = array<i64: 1, 4>} : (tensor<4x2x4x3x32xf32>, tensor<2x16x2xi32>, tensor<2x16x2xi32>) -> tensor<2x16x32xf32>
  return %y, %dx, %dw : tensor<2x16x32xf32>, tensor<2x16x32xf32>, tensor<2x16x2xf32>
}
// The RG-LRU scan's backward over whole sequences, and from a state.
func.func @recurrent_training(%x: tensor<2x16x32xf32>, %g: tensor<32xf32>, %s0: tensor<2x32xf32>) -> (tensor<2x16x32xf32>, tensor<32xf32>) {
  // CHECK: remark: sl.rglru_scan_grad: x[b,s,w] wa[w] ba[w] wx[w] bx[w] lambda[w] dy[b,s,w] -> dx[b,s,w]; free: b,w; sequence-mixing: s (state passing); sequence: s{{$}}
  %dx = sl.rglru_scan_grad %x, %g, %g, %g, %g, %g, %x : (tensor<2x16x32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  // CHECK: remark: sl.rglru_scan_grad_weights: x[b,s,w] wa[w] ba[w] wx[w] bx[w] lambda[w] dy[b,s,w] -> dwa[w] dba[w] dwx[w] dbx[w] dlambda[w]; free: w; contracted: b; sequence-mixing: s (state passing); sequence: s{{$}}
  %a, %b, %c, %d, %l = sl.rglru_scan_grad_weights %x, %g, %g, %g, %g, %g, %x : (tensor<2x16x32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<2x16x32xf32>) -> (tensor<32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<32xf32>)
  // CHECK: remark: sl.rglru_scan_grad: x[b,s,w] wa[w] ba[w] wx[w] bx[w] lambda[w] state_in[b,w] dy[b,s,w] -> dx[b,s,w] dstate_in[b,w]; free: b,w; sequence-mixing: s (state passing); sequence: s{{$}}
  %dxs, %ds = sl.rglru_scan_grad %x, %g, %g, %g, %g, %g state_in %s0, %x : (tensor<2x16x32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<2x32xf32>, tensor<2x16x32xf32>) -> (tensor<2x16x32xf32>, tensor<2x32xf32>)
  return %dx, %l : tensor<2x16x32xf32>, tensor<32xf32>
}
// The backward and optimizer ops.
func.func @training(%x: tensor<2x16x32xf32>, %dy: tensor<2x16x32xf32>, %w: tensor<32xf32>,
                    %wl: tensor<32x64xf32>, %dh: tensor<2x16x64xf32>,
                    %ids: tensor<2x16xi32>, %table: tensor<128x32xf32>,
                    %logits: tensor<2x16x128xf32>, %labels: tensor<2x16xi32>,
                    %q: tensor<2x16x32xf32>, %k: tensor<2x16x16xf32>, %v: tensor<2x16x16xf32>) {
  // CHECK: remark: sl.rms_norm_grad: x[b,s,h] weight[h] dy[b,s,h] -> dx[b,s,h]; free: b,s; whole: h; sequence: s{{$}}
  %dx = sl.rms_norm_grad %x, %w, %dy {eps = 1.0e-6 : f64} : (tensor<2x16x32xf32>, tensor<32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  // CHECK: remark: sl.rms_norm_grad_weight: x[b,s,h] dy[b,s,h] -> dweight[h]; contracted: b,s; whole: h; sequence: s{{$}}
  %dw = sl.rms_norm_grad_weight %x, %dy : (tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<32xf32>
  // CHECK: remark: sl.linear_grad: dy[b,s,n] weight[k,n] -> dx[b,s,k]; free: b,s,k; contracted: n; partial: one; sequence: s{{$}}
  %dxl = sl.linear_grad %dh, %wl : (tensor<2x16x64xf32>, tensor<32x64xf32>) -> tensor<2x16x32xf32>
  // CHECK: remark: sl.linear_grad_weight: x[b,s,k] dy[b,s,n] -> dweight[k,n]; free: k,n; contracted: b,s; partial: one; sequence: s{{$}}
  %dwl = sl.linear_grad_weight %x, %dh : (tensor<2x16x32xf32>, tensor<2x16x64xf32>) -> tensor<32x64xf32>
  // CHECK: remark: sl.swiglu_grad: lhs[d0,s,d2] rhs[d0,s,d2] dy[d0,s,d2] -> dlhs[d0,s,d2] drhs[d0,s,d2]; free: d0,s,d2; sequence: s{{$}}
  %dl, %dr = sl.swiglu_grad %x, %dx, %dy : (tensor<2x16x32xf32>, tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> (tensor<2x16x32xf32>, tensor<2x16x32xf32>)
  // CHECK: remark: sl.silu_grad: x[d0,s,d2] dy[d0,s,d2] -> dx[d0,s,d2]; free: d0,s,d2; sequence: s{{$}}
  %d1 = sl.silu_grad %x, %dy : (tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  // CHECK: remark: sl.gelu_grad: x[d0,s,d2] dy[d0,s,d2] -> dx[d0,s,d2]; free: d0,s,d2; sequence: s{{$}}
  %d2 = sl.gelu_grad %x, %dy : (tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  // CHECK: remark: sl.sigmoid_grad: x[d0,s,d2] dy[d0,s,d2] -> dx[d0,s,d2]; free: d0,s,d2; sequence: s{{$}}
  %d3 = sl.sigmoid_grad %x, %dy : (tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  // CHECK: remark: sl.softplus_grad: x[d0,s,d2] dy[d0,s,d2] -> dx[d0,s,d2]; free: d0,s,d2; sequence: s{{$}}
  %d4 = sl.softplus_grad %x, %dy : (tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  // CHECK: remark: sl.rope_grad: dy[b,s,heads] -> dx[b,s,heads]; free: b,s,heads (granule 4); partial: one; sequence: s{{$}}
  %dq0 = sl.rope_grad %dy {head_dim = 8} : (tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  // CHECK: remark: sl.attention_grad: q[b,s,heads] k[b,t,heads] v[b,t,heads] dy[b,s,heads] -> dq[b,s,heads]; free: b,s,heads (granule 2 kv heads); sequence-mixing: t (kv exchange); sequence: s (also t){{$}}
  %dq = sl.attention_grad %q, %k, %v, %dy {heads = 4, kv_heads = 2, scale = 0.25 : f64} : (tensor<2x16x32xf32>, tensor<2x16x16xf32>, tensor<2x16x16xf32>, tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  // CHECK: remark: sl.attention_grad_kv: q[b,s,heads] k[b,t,heads] v[b,t,heads] dy[b,s,heads] -> dk[b,t,heads] dv[b,t,heads]; free: b,heads (granule 2 kv heads); contracted: s; sequence-mixing: t (kv exchange); sequence: s (also t){{$}}
  %dk, %dv = sl.attention_grad_kv %q, %k, %v, %dy {heads = 4, kv_heads = 2, causal = false} : (tensor<2x16x32xf32>, tensor<2x16x16xf32>, tensor<2x16x16xf32>, tensor<2x16x32xf32>) -> (tensor<2x16x16xf32>, tensor<2x16x16xf32>)
  // CHECK: remark: sl.embedding_grad: ids[b,s] dy[b,s,h] table[v,h] -> dtable[v,h]; free: v,h; contracted: b,s; partial: one; sequence: s{{$}}
  %dt = sl.embedding_grad %ids, %dy, %table : (tensor<2x16xi32>, tensor<2x16x32xf32>, tensor<128x32xf32>) -> tensor<128x32xf32>
  // CHECK: remark: sl.cross_entropy_grad: logits[b,s,v] labels[b,s] -> dlogits[b,s,v]; free: b,s; sequence-mixing: v (vocab parallel); sequence: s{{$}}
  %dlog = sl.cross_entropy_grad %logits, %labels : (tensor<2x16x128xf32>, tensor<2x16xi32>) -> tensor<2x16x128xf32>
  // CHECK: remark: sl.sum_squares: x[d0,d1] -> result[]; free: d0,d1; reduces to a scalar{{$}}
  %ss = sl.sum_squares %dwl : (tensor<32x64xf32>) -> tensor<f32>
  // CHECK: remark: sl.adamw: weight[d0,d1] grad[d0,d1] m[d0,d1] v[d0,d1] sumsq[] -> ; free: d0,d1{{$}}
  sl.adamw %wl, %dwl, %wl, %wl, %ss : tensor<32x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<f32>
  // CHECK: remark: sl.adamw: weight[d0] grad[d0] m[d0] v[d0] sumsq[] -> ; free: d0{{$}}
  sl.adamw %w, %dw, %w, %w, %ss {decay = false} : tensor<32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<f32>
  return
}

// CHECK: remark: sharding rules of [[N:[0-9]+]] of [[N]] sl ops with a rule{{$}}
// CHECK-NOT: remark
