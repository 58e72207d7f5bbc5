// A global-view training step on a tp2 mesh with a layout on every value:
// every backward and optimizer op goes through sl-shard-pipeline,
// sl-partition (--emit rank), the report and the plan.
// REQUIRES: flatc
// RUN: rm -rf %t && mkdir -p %t
// RUN: shardline-opt %s -sl-shard-pipeline | FileCheck %s --check-prefix=SHARD
// RUN: shardline-compile %s --emit rank --rank 1 | FileCheck %s --check-prefix=RANK
// RUN: shardline-compile %s --emit report | FileCheck %s --check-prefix=REPORT
// RUN: shardline-compile %s --emit plan -o %t/t.slp
// The payload follows the 32-byte container header.
// RUN: tail -c +33 %t/t.slp > %t/payload.bin
// RUN: flatc --json --strict-json --raw-binary -o %t %plan_schema -- %t/payload.bin
// Each new op as the runtime sees it: kind, operand and result names (with
// the tensors of sl.adamw's operands), attributes.
// RUN: python3 -c "import json,sys; d=json.load(open(sys.argv[1])); t=d['tensors']; \
// RUN:   [print(o['kind'], o['operand_names'], '->', o['result_names'], \
// RUN:          [(a['name'], a['ints'] + a['floats'] + a['strings']) for a in o['attrs']], \
// RUN:          [t[i]['name'] + ':' + t[i]['role'] for i in o['operands']] if o['kind'] == 'adamw' else '') \
// RUN:    for o in d['ops'] if o['kind'].endswith('_grad') or o['kind'].endswith('_grad_weight') \
// RUN:                         or o['kind'].endswith('_grad_kv') or o['kind'] in ('adamw', 'sum_squares')]" \
// RUN:   %t/payload.json | FileCheck %s --check-prefix=PLAN

// The gradients keep the forward's layouts: the vocab-parallel loss gradient
// takes its vocab axes like the loss, dx of a column-parallel linear is a
// pending sum that sl-elide-gathers turns into a reduce-scatter (the
// elementwise gradients then run on the sequence shard), and the weight
// gradients are split like their weights.
// SHARD: sl.cross_entropy_grad %{{.*}} {sl.reason = "logits split over [tp] on the vocabulary (vocab-parallel LM head)", vocab_axes = ["tp"]} : (tensor<2x8x64xf32, #[[C3:layout[0-9]*]]>, tensor<2x8xi32, #{{layout[0-9]*}}>) -> tensor<2x8x64xf32, #[[C3]]>
// SHARD: sl.linear_grad_weight {{.*}} -> tensor<16x64xf32, #[[WC:layout[0-9]*]]>
// SHARD: %[[DOP:.*]] = sl.linear_grad {{.*}} -> tensor<2x8x16xf32, #[[P3:layout[0-9]*]]>
// SHARD: %[[RS:.*]] = sl.reduce_scatter %[[DOP]] {axes = ["tp"], dim = 1 : i64} : tensor<2x8x16xf32, #[[P3]]> -> tensor<2x8x16xf32, #[[S3:layout[0-9]*]]>
// SHARD: sl.silu_grad %{{.*}}, %[[RS]] : (tensor<2x8x16xf32, #[[S3]]>, tensor<2x8x16xf32, #[[S3]]>) -> tensor<2x8x16xf32, #[[S3]]>
// SHARD: sl.swiglu_grad {{.*}} -> (tensor<2x8x16xf32, #[[S3]]>, tensor<2x8x16xf32, #[[S3]]>)
// SHARD: sl.attention_grad_kv {{.*}} -> (tensor<2x8x16xf32, #[[C3]]>, tensor<2x8x16xf32, #[[C3]]>)
// SHARD: %[[SS:.*]] = sl.sum_squares %{{.*}} : (tensor<16x32xf32, #[[WC]]>) -> tensor<f32, #[[P0:layout[0-9]*]]>
// SHARD: sl.all_reduce %[[SS]] {axes = ["tp"]} : tensor<f32, #[[P0]]> -> tensor<f32, #[[R0:layout[0-9]*]]>
// SHARD: sl.adamw %{{.*}} : tensor<16x32xf32, #[[WC]]>, tensor<16x32xf32, #[[WC]]>, tensor<16x32xf32, #[[WC]]>, tensor<16x32xf32, #[[WC]]>, tensor<f32, #[[R0]]>
// SHARD: sl.adamw %{{.*}} {decay = false}
// SHARD-NEXT: return

// Rank 1's program: local shapes, the forward's rank facts (its vocabulary
// rows from 32, every token and key of the unsplit sequence).
// RANK: sl.cross_entropy_grad %{{.*}} {sl.group = array<i64: 0, 1>, {{.*}}sl.vocab_offset = 32 : i64, vocab_axes = ["tp"]} : (tensor<2x8x32xf32>, tensor<2x8xi32>) -> tensor<2x8x32xf32>
// RANK: sl.silu_grad {{.*}} : (tensor<2x4x16xf32>, tensor<2x4x16xf32>) -> tensor<2x4x16xf32>
// RANK: sl.attention_grad {{.*}} {heads = 4 : i64, kv_heads = 2 : i64, sl.key_tokens = array<i64: 0, 8>, sl.tokens = array<i64: 0, 8>} : (tensor<2x8x16xf32>, tensor<2x8x8xf32>, tensor<2x8x8xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
// RANK: sl.attention_grad_kv {{.*}} {heads = 4 : i64, kv_heads = 2 : i64, sl.key_tokens = array<i64: 0, 8>, sl.tokens = array<i64: 0, 8>} : {{.*}} -> (tensor<2x8x8xf32>, tensor<2x8x8xf32>)
// RANK: sl.rope_grad %{{.*}} {head_dim = 8 : i64, sl.tokens = array<i64: 0, 8>} : (tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
// RANK: sl.embedding_grad {{.*}} {sl.vocab_offset = 0 : i64} : (tensor<2x8xi32>, tensor<2x8x16xf32>, tensor<64x16xf32>) -> tensor<64x16xf32>
// RANK: sl.adamw {{.*}} : tensor<16x16xf32>, tensor<16x16xf32>, tensor<16x16xf32>, tensor<16x16xf32>, tensor<f32>

// The loss gradient's vocab-parallel exchange: the per-token max and sum of
// exponentials, 2 x 4 bytes for each of the 16 local tokens, to the one
// other rank.
// REPORT: all_reduce [tp] 64 vocab-parallel cross-entropy backward: per-token max
// REPORT-NEXT: all_reduce [tp] 64 vocab-parallel cross-entropy backward: per-token sum of exponentials
// REPORT: totals: 3396 bytes sent per rank in 10 collectives (all_gather 1, all_reduce 8, reduce_scatter 1)

// PLAN:      cross_entropy_grad ['logits', 'labels'] -> ['dlogits'] [('vocab_axes', ['tp'])]
// PLAN-NEXT: linear_grad_weight ['x', 'dy'] -> ['dweight'] []
// PLAN-NEXT: linear_grad ['dy', 'weight'] -> ['dx'] []
// PLAN-NEXT: silu_grad ['x', 'dy'] -> ['dx'] []
// PLAN-NEXT: gelu_grad ['x', 'dy'] -> ['dx'] []
// PLAN-NEXT: sigmoid_grad ['x', 'dy'] -> ['dx'] []
// PLAN-NEXT: softplus_grad ['x', 'dy'] -> ['dx'] []
// PLAN-NEXT: swiglu_grad ['lhs', 'rhs', 'dy'] -> ['dlhs', 'drhs'] []
// PLAN-NEXT: linear_grad_weight ['x', 'dy'] -> ['dweight'] []
// PLAN-NEXT: linear_grad ['dy', 'weight'] -> ['dx'] []
// PLAN-NEXT: attention_grad ['q', 'k', 'v', 'dy'] -> ['dq'] [('causal', [1]), ('heads', [4]), ('kv_heads', [2])]
// PLAN-NEXT: attention_grad_kv ['q', 'k', 'v', 'dy'] -> ['dk', 'dv'] [('causal', [1]), ('heads', [4]), ('kv_heads', [2])]
// PLAN-NEXT: rope_grad ['dy'] -> ['dx'] [('head_dim', [8]), ('theta', [10000.0])]
// PLAN-NEXT: linear_grad_weight ['x', 'dy'] -> ['dweight'] []
// PLAN-NEXT: linear_grad ['dy', 'weight'] -> ['dx'] []
// PLAN-NEXT: linear_grad ['dy', 'weight'] -> ['dx'] []
// PLAN-NEXT: linear_grad ['dy', 'weight'] -> ['dx'] []
// PLAN-NEXT: rms_norm_grad ['x', 'weight', 'dy'] -> ['dx'] [('eps', [1e-05])]
// PLAN-NEXT: rms_norm_grad_weight ['x', 'dy'] -> ['dweight'] [('eps', [1e-05])]
// PLAN-NEXT: embedding_grad ['ids', 'dy', 'table'] -> ['dtable'] []
// PLAN-NEXT: sum_squares ['x'] -> ['result'] []
// PLAN-NEXT: sum_squares ['x'] -> ['result'] []
// PLAN-NEXT: adamw ['weight', 'grad', 'm', 'v', 'sumsq'] -> [] [('decay', [1])] ['wq:Weight', ':Activation', 'wq.adam_m:Weight', 'wq.adam_v:Weight', ':Activation']
// PLAN-NEXT: adamw ['weight', 'grad', 'm', 'v', 'sumsq'] -> [] [('decay', [0])] ['norm:Weight', ':Activation', 'norm.adam_m:Weight', 'norm.adam_v:Weight', ':Activation']
// PLAN-NOT: {{.}}

#R0 = #sl.layout<@mesh, []>
#P0 = #sl.layout<@mesh, [], partial = [tp]>
#R1 = #sl.layout<@mesh, [[]]>
#R2 = #sl.layout<@mesh, [[], []]>
#WC = #sl.layout<@mesh, [[], [tp]]>
#WR = #sl.layout<@mesh, [[tp], []]>
#R3 = #sl.layout<@mesh, [[], [], []]>
#C3 = #sl.layout<@mesh, [[], [], [tp]]>
#P3 = #sl.layout<@mesh, [[], [], []], partial = [tp]>
sl.mesh @mesh(tp = 2)
func.func @step(%ids: tensor<2x8xi32, #R2> {sl.name = "tokens"},
                %labels: tensor<2x8xi32, #R2> {sl.name = "labels"})
    -> (tensor<f32, #R0>, tensor<64x16xf32, #R2>, tensor<16x64xf32, #WC>, tensor<32x16xf32, #WR>) {
  %table = sl.weight "table" : tensor<64x16xf32, #R2>
  %wn = sl.weight "norm" {init = "constant", offset = 1.0 : f64} : tensor<16xf32, #R1>
  %wn_m = sl.weight "norm.adam_m" {init = "constant", offset = 0.0 : f64} : tensor<16xf32, #R1>
  %wn_v = sl.weight "norm.adam_v" {init = "constant", offset = 0.0 : f64} : tensor<16xf32, #R1>
  %wq = sl.weight "wq" : tensor<16x32xf32, #WC>
  %wq_m = sl.weight "wq.adam_m" {init = "constant", offset = 0.0 : f64} : tensor<16x32xf32, #WC>
  %wq_v = sl.weight "wq.adam_v" {init = "constant", offset = 0.0 : f64} : tensor<16x32xf32, #WC>
  %wk = sl.weight "wk" : tensor<16x16xf32, #WC>
  %wv = sl.weight "wv" : tensor<16x16xf32, #WC>
  %wo = sl.weight "wo" : tensor<32x16xf32, #WR>
  %wh = sl.weight "head" : tensor<16x64xf32, #WC>

  // Forward: embedding, norm, attention (heads over tp), LM head over the vocabulary.
  %x = sl.embedding %ids, %table : (tensor<2x8xi32, #R2>, tensor<64x16xf32, #R2>) -> tensor<2x8x16xf32, #R3>
  %n = sl.rms_norm %x, %wn : (tensor<2x8x16xf32, #R3>, tensor<16xf32, #R1>) -> tensor<2x8x16xf32, #R3>
  %q = sl.linear %n, %wq : (tensor<2x8x16xf32, #R3>, tensor<16x32xf32, #WC>) -> tensor<2x8x32xf32, #C3>
  %k = sl.linear %n, %wk : (tensor<2x8x16xf32, #R3>, tensor<16x16xf32, #WC>) -> tensor<2x8x16xf32, #C3>
  %v = sl.linear %n, %wv : (tensor<2x8x16xf32, #R3>, tensor<16x16xf32, #WC>) -> tensor<2x8x16xf32, #C3>
  %qr = sl.rope %q {head_dim = 8} : (tensor<2x8x32xf32, #C3>) -> tensor<2x8x32xf32, #C3>
  %a = sl.attention %qr, %k, %v {heads = 4, kv_heads = 2} : (tensor<2x8x32xf32, #C3>, tensor<2x8x16xf32, #C3>, tensor<2x8x16xf32, #C3>) -> tensor<2x8x32xf32, #C3>
  %op = sl.linear %a, %wo : (tensor<2x8x32xf32, #C3>, tensor<32x16xf32, #WR>) -> tensor<2x8x16xf32, #P3>
  %o = sl.all_reduce %op {axes = ["tp"]} : tensor<2x8x16xf32, #P3> -> tensor<2x8x16xf32, #R3>
  %logits = sl.lm_head %o, %wh : (tensor<2x8x16xf32, #R3>, tensor<16x64xf32, #WC>) -> tensor<2x8x64xf32, #C3>
  %loss = sl.cross_entropy %logits, %labels {vocab_axes = ["tp"]} : (tensor<2x8x64xf32, #C3>, tensor<2x8xi32, #R2>) -> tensor<f32, #R0>

  // Backward.
  %dlogits = sl.cross_entropy_grad %logits, %labels {vocab_axes = ["tp"]} : (tensor<2x8x64xf32, #C3>, tensor<2x8xi32, #R2>) -> tensor<2x8x64xf32, #C3>
  %dwh = sl.linear_grad_weight %o, %dlogits : (tensor<2x8x16xf32, #R3>, tensor<2x8x64xf32, #C3>) -> tensor<16x64xf32, #WC>
  %dop = sl.linear_grad %dlogits, %wh : (tensor<2x8x64xf32, #C3>, tensor<16x64xf32, #WC>) -> tensor<2x8x16xf32, #P3>
  %do = sl.all_reduce %dop {axes = ["tp"]} : tensor<2x8x16xf32, #P3> -> tensor<2x8x16xf32, #R3>
  // The elementwise gradients, chained (their math is not this test's concern).
  %e1 = sl.silu_grad %o, %do : (tensor<2x8x16xf32, #R3>, tensor<2x8x16xf32, #R3>) -> tensor<2x8x16xf32, #R3>
  %e2 = sl.gelu_grad %o, %e1 : (tensor<2x8x16xf32, #R3>, tensor<2x8x16xf32, #R3>) -> tensor<2x8x16xf32, #R3>
  %e3 = sl.sigmoid_grad %o, %e2 : (tensor<2x8x16xf32, #R3>, tensor<2x8x16xf32, #R3>) -> tensor<2x8x16xf32, #R3>
  %e4 = sl.softplus_grad %o, %e3 : (tensor<2x8x16xf32, #R3>, tensor<2x8x16xf32, #R3>) -> tensor<2x8x16xf32, #R3>
  %gl, %gr = sl.swiglu_grad %o, %o, %e4 : (tensor<2x8x16xf32, #R3>, tensor<2x8x16xf32, #R3>, tensor<2x8x16xf32, #R3>) -> (tensor<2x8x16xf32, #R3>, tensor<2x8x16xf32, #R3>)
  %de = sl.add %gl, %gr : (tensor<2x8x16xf32, #R3>, tensor<2x8x16xf32, #R3>) -> tensor<2x8x16xf32, #R3>
  %dwo = sl.linear_grad_weight %a, %de : (tensor<2x8x32xf32, #C3>, tensor<2x8x16xf32, #R3>) -> tensor<32x16xf32, #WR>
  %da = sl.linear_grad %de, %wo : (tensor<2x8x16xf32, #R3>, tensor<32x16xf32, #WR>) -> tensor<2x8x32xf32, #C3>
  %dqr = sl.attention_grad %qr, %k, %v, %da {heads = 4, kv_heads = 2} : (tensor<2x8x32xf32, #C3>, tensor<2x8x16xf32, #C3>, tensor<2x8x16xf32, #C3>, tensor<2x8x32xf32, #C3>) -> tensor<2x8x32xf32, #C3>
  %dk, %dv = sl.attention_grad_kv %qr, %k, %v, %da {heads = 4, kv_heads = 2} : (tensor<2x8x32xf32, #C3>, tensor<2x8x16xf32, #C3>, tensor<2x8x16xf32, #C3>, tensor<2x8x32xf32, #C3>) -> (tensor<2x8x16xf32, #C3>, tensor<2x8x16xf32, #C3>)
  %dq = sl.rope_grad %dqr {head_dim = 8} : (tensor<2x8x32xf32, #C3>) -> tensor<2x8x32xf32, #C3>
  %dwq = sl.linear_grad_weight %n, %dq : (tensor<2x8x16xf32, #R3>, tensor<2x8x32xf32, #C3>) -> tensor<16x32xf32, #WC>
  %dnq = sl.linear_grad %dq, %wq : (tensor<2x8x32xf32, #C3>, tensor<16x32xf32, #WC>) -> tensor<2x8x16xf32, #P3>
  %dnk = sl.linear_grad %dk, %wk : (tensor<2x8x16xf32, #C3>, tensor<16x16xf32, #WC>) -> tensor<2x8x16xf32, #P3>
  %dnv = sl.linear_grad %dv, %wv : (tensor<2x8x16xf32, #C3>, tensor<16x16xf32, #WC>) -> tensor<2x8x16xf32, #P3>
  %dn1 = sl.add %dnq, %dnk : (tensor<2x8x16xf32, #P3>, tensor<2x8x16xf32, #P3>) -> tensor<2x8x16xf32, #P3>
  %dnp = sl.add %dn1, %dnv : (tensor<2x8x16xf32, #P3>, tensor<2x8x16xf32, #P3>) -> tensor<2x8x16xf32, #P3>
  %dn = sl.all_reduce %dnp {axes = ["tp"]} : tensor<2x8x16xf32, #P3> -> tensor<2x8x16xf32, #R3>
  %dx = sl.rms_norm_grad %x, %wn, %dn : (tensor<2x8x16xf32, #R3>, tensor<16xf32, #R1>, tensor<2x8x16xf32, #R3>) -> tensor<2x8x16xf32, #R3>
  %dwn = sl.rms_norm_grad_weight %x, %dn : (tensor<2x8x16xf32, #R3>, tensor<2x8x16xf32, #R3>) -> tensor<16xf32, #R1>
  %dtable = sl.embedding_grad %ids, %dx, %table : (tensor<2x8xi32, #R2>, tensor<2x8x16xf32, #R3>, tensor<64x16xf32, #R2>) -> tensor<64x16xf32, #R2>

  // The global norm: wq's gradient is split over tp (a pending sum of its
  // squares), the norm weight's is whole on every rank.
  %ssq = sl.sum_squares %dwq : (tensor<16x32xf32, #WC>) -> tensor<f32, #P0>
  %ssqr = sl.all_reduce %ssq {axes = ["tp"]} : tensor<f32, #P0> -> tensor<f32, #R0>
  %ssn = sl.sum_squares %dwn : (tensor<16xf32, #R1>) -> tensor<f32, #R0>
  %ss = sl.add %ssqr, %ssn : (tensor<f32, #R0>, tensor<f32, #R0>) -> tensor<f32, #R0>
  sl.adamw %wq, %dwq, %wq_m, %wq_v, %ss : tensor<16x32xf32, #WC>, tensor<16x32xf32, #WC>, tensor<16x32xf32, #WC>, tensor<16x32xf32, #WC>, tensor<f32, #R0>
  sl.adamw %wn, %dwn, %wn_m, %wn_v, %ss {decay = false} : tensor<16xf32, #R1>, tensor<16xf32, #R1>, tensor<16xf32, #R1>, tensor<16xf32, #R1>, tensor<f32, #R0>
  return %loss, %dtable, %dwh, %dwo : tensor<f32, #R0>, tensor<64x16xf32, #R2>, tensor<16x64xf32, #WC>, tensor<32x16xf32, #WR>
}
