// The weight gradients sum over the tokens: with the tokens split (data or
// sequence parallelism) each rank holds a pending sum over those axes, which
// an all-reduce completes (the gradient synchronisation). A zigzag-ordered
// sequence may be contracted like any other. Given in place, these
// collectives pass sl-elide-gathers and sl-partition as they are.
// RUN: shardline-opt %s -sl-elide-gathers | FileCheck %s
// RUN: shardline-opt %s -sl-partition=rank=3 | FileCheck %s --check-prefix=RANK

// CHECK-DAG: #[[S:layout[0-9]*]] = #sl.layout<@mesh, {{\[}}[dp], [cp] zigzag, []]>
// CHECK-DAG: #[[PW:layout[0-9]*]] = #sl.layout<@mesh, {{\[}}[], []], partial = [dp, cp]>
// CHECK: sl.linear_grad_weight %{{.*}}, %{{.*}} : (tensor<2x8x16xf32, #[[S]]>, tensor<2x8x32xf32, #[[S]]>) -> tensor<16x32xf32, #[[PW]]>
// CHECK: sl.all_reduce %{{.*}} {axes = ["dp", "cp"]} : tensor<16x32xf32, #[[PW]]>
// CHECK: sl.rms_norm_grad_weight {{.*}} -> tensor<16xf32, #[[P1:layout[0-9]*]]>
// CHECK: sl.all_reduce %{{.*}} {axes = ["dp", "cp"]} : tensor<16xf32, #[[P1]]>
// CHECK: sl.embedding_grad {{.*}} -> tensor<64x16xf32, #[[P2:layout[0-9]*]]>
// CHECK: sl.all_reduce %{{.*}} {axes = ["dp", "cp"]} : tensor<64x16xf32, #[[P2]]>
// CHECK: sl.attention_grad_kv {{.*}} -> (tensor<2x8x16xf32, #[[PKV:layout[0-9]*]]>, tensor<2x8x16xf32, #[[PKV]]>)
// CHECK: sl.all_reduce %{{.*}} {axes = ["cp"]} : tensor<2x8x16xf32, #[[PKV]]>

// Rank 3 (dp 1, cp 1): batch row 1, zigzag chunks 1 and 2 of the sequence.
// RANK: sl.linear_grad_weight %{{.*}}, %{{.*}} : (tensor<1x4x16xf32>, tensor<1x4x32xf32>) -> tensor<16x32xf32>
// RANK: sl.rms_norm_grad_weight {{.*}} : (tensor<1x4x16xf32>, tensor<1x4x16xf32>) -> tensor<16xf32>
// RANK: sl.embedding_grad {{.*}} {sl.vocab_offset = 0 : i64} : (tensor<1x4xi32>, tensor<1x4x16xf32>, tensor<64x16xf32>) -> tensor<64x16xf32>
// RANK: sl.attention_grad_kv {{.*}} {heads = 2 : i64, kv_heads = 2 : i64, sl.key_tokens = array<i64: 0, 8>, sl.tokens = array<i64: 2, 4>} : (tensor<1x4x16xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<1x4x16xf32>) -> (tensor<1x8x16xf32>, tensor<1x8x16xf32>)

#S = #sl.layout<@mesh, [[dp], [cp] zigzag, []]>
#S2 = #sl.layout<@mesh, [[dp], [cp] zigzag]>
#K = #sl.layout<@mesh, [[dp], [], []]>
#PK = #sl.layout<@mesh, [[dp], [], []], partial = [cp]>
#R1 = #sl.layout<@mesh, [[]]>
#R2 = #sl.layout<@mesh, [[], []]>
#PW = #sl.layout<@mesh, [[], []], partial = [dp, cp]>
#P1 = #sl.layout<@mesh, [[]], partial = [dp, cp]>
sl.mesh @mesh(dp = 2, cp = 2)
func.func @grads(%ids: tensor<2x8xi32, #S2> {sl.name = "tokens"}, %x: tensor<2x8x16xf32, #S>,
                 %dy: tensor<2x8x32xf32, #S>, %q: tensor<2x8x16xf32, #S>,
                 %k: tensor<2x8x16xf32, #K>, %v: tensor<2x8x16xf32, #K>)
    -> (tensor<16x32xf32, #R2>, tensor<16xf32, #R1>, tensor<64x16xf32, #R2>,
        tensor<2x8x16xf32, #K>, tensor<2x8x16xf32, #K>) {
  %table = sl.weight "table" : tensor<64x16xf32, #R2>
  %dwp = sl.linear_grad_weight %x, %dy : (tensor<2x8x16xf32, #S>, tensor<2x8x32xf32, #S>) -> tensor<16x32xf32, #PW>
  %dw = sl.all_reduce %dwp {axes = ["dp", "cp"]} : tensor<16x32xf32, #PW> -> tensor<16x32xf32, #R2>
  %dnp = sl.rms_norm_grad_weight %x, %x : (tensor<2x8x16xf32, #S>, tensor<2x8x16xf32, #S>) -> tensor<16xf32, #P1>
  %dn = sl.all_reduce %dnp {axes = ["dp", "cp"]} : tensor<16xf32, #P1> -> tensor<16xf32, #R1>
  %dtp = sl.embedding_grad %ids, %x, %table : (tensor<2x8xi32, #S2>, tensor<2x8x16xf32, #S>, tensor<64x16xf32, #R2>) -> tensor<64x16xf32, #PW>
  %dt = sl.all_reduce %dtp {axes = ["dp", "cp"]} : tensor<64x16xf32, #PW> -> tensor<64x16xf32, #R2>
  // The queries split over cp, the keys whole: dk and dv sum over the queries.
  %dkp, %dvp = sl.attention_grad_kv %q, %k, %v, %q {heads = 2, kv_heads = 2} : (tensor<2x8x16xf32, #S>, tensor<2x8x16xf32, #K>, tensor<2x8x16xf32, #K>, tensor<2x8x16xf32, #S>) -> (tensor<2x8x16xf32, #PK>, tensor<2x8x16xf32, #PK>)
  %dk = sl.all_reduce %dkp {axes = ["cp"]} : tensor<2x8x16xf32, #PK> -> tensor<2x8x16xf32, #K>
  %dv = sl.all_reduce %dvp {axes = ["cp"]} : tensor<2x8x16xf32, #PK> -> tensor<2x8x16xf32, #K>
  return %dw, %dn, %dt, %dk, %dv : tensor<16x32xf32, #R2>, tensor<16xf32, #R1>, tensor<64x16xf32, #R2>, tensor<2x8x16xf32, #K>, tensor<2x8x16xf32, #K>
}
