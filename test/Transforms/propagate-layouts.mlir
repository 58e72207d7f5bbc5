// RUN: shardline-opt %s -split-input-file -sl-propagate-layouts -verify-diagnostics | FileCheck %s
// RUN: shardline-opt %s -split-input-file -sl-propagate-layouts -verify-diagnostics | shardline-opt -split-input-file -sl-propagate-layouts | FileCheck %s

// Sequence parallelism: the stream stays split over tp between the MLP's
// projections; the column-parallel linear gathers it, the row-parallel one
// leaves a pending sum that the residual add scatters back.
module attributes {sl.sequence_parallel = true} {
  sl.mesh @mesh(tp = 2)
  // CHECK-DAG: #[[$SEQ:.*]] = #sl.layout<@mesh, {{\[}}[], [tp], []]>
  // CHECK-DAG: #[[$REP:.*]] = #sl.layout<@mesh, {{\[}}[], [], []]>
  // CHECK-DAG: #[[$COL:.*]] = #sl.layout<@mesh, {{\[}}[], [], [tp]]>
  // CHECK-DAG: #[[$SUM:.*]] = #sl.layout<@mesh, {{\[}}[], [], []], partial = [tp]>
  // CHECK-LABEL: func.func @mlp_sp
  // CHECK-SAME: -> tensor<2x8x16xf32, #[[$SEQ]]>
  func.func @mlp_sp(%x: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>>) -> tensor<2x8x16xf32> {
    %wg = sl.weight "g" : tensor<16x32xf32, #sl.layout<@mesh, [[], [tp]]>>
    %wd = sl.weight "d" : tensor<32x16xf32, #sl.layout<@mesh, [[tp], []]>>
    // CHECK: %[[G:.*]] = sl.relayout %{{.*}} {{.*}}#[[$SEQ]]> -> tensor<2x8x16xf32, #[[$REP]]>
    // CHECK: sl.linear %[[G]], %{{.*}} {{.*}} -> tensor<2x8x32xf32, #[[$COL]]>
    %h = sl.linear %x, %wg : (tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>>, tensor<16x32xf32, #sl.layout<@mesh, [[], [tp]]>>) -> tensor<2x8x32xf32>
    // CHECK: sl.silu {{.*}} -> tensor<2x8x32xf32, #[[$COL]]>
    %a = sl.silu %h : (tensor<2x8x32xf32>) -> tensor<2x8x32xf32>
    // CHECK: %[[Y:.*]] = sl.linear {{.*}} -> tensor<2x8x16xf32, #[[$SUM]]>
    %y = sl.linear %a, %wd : (tensor<2x8x32xf32>, tensor<32x16xf32, #sl.layout<@mesh, [[tp], []]>>) -> tensor<2x8x16xf32>
    // CHECK: %[[RS:.*]] = sl.relayout %[[Y]] {{.*}}#[[$SUM]]> -> tensor<2x8x16xf32, #[[$SEQ]]>
    // CHECK: sl.add %{{.*}}, %[[RS]] {{.*}} -> tensor<2x8x16xf32, #[[$SEQ]]>
    %r = sl.add %x, %y : (tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
    return %r : tensor<2x8x16xf32>
  }
}

// -----

// Without sequence parallelism the same MLP ends in an all-reduce and the
// stream is replicated over tp.
module attributes {sl.sequence_parallel = false} {
  sl.mesh @mesh(tp = 2)
  // CHECK-DAG: #[[$REP:.*]] = #sl.layout<@mesh, {{\[}}[], [], []]>
  // CHECK-DAG: #[[$SUM:.*]] = #sl.layout<@mesh, {{\[}}[], [], []], partial = [tp]>
  // CHECK-LABEL: func.func @mlp_tp
  func.func @mlp_tp(%x: tensor<2x8x16xf32>) -> tensor<2x8x16xf32> {
    %wg = sl.weight "g" : tensor<16x32xf32, #sl.layout<@mesh, [[], [tp]]>>
    %wd = sl.weight "d" : tensor<32x16xf32, #sl.layout<@mesh, [[tp], []]>>
    // CHECK-NOT: sl.relayout
    // CHECK: %[[Y:.*]] = sl.linear {{.*}} -> tensor<2x8x16xf32, #[[$SUM]]>
    // CHECK: %[[AR:.*]] = sl.relayout %[[Y]] {{.*}}#[[$SUM]]> -> tensor<2x8x16xf32, #[[$REP]]>
    // CHECK: sl.add %{{.*}}, %[[AR]]
    %h = sl.linear %x, %wg : (tensor<2x8x16xf32>, tensor<16x32xf32, #sl.layout<@mesh, [[], [tp]]>>) -> tensor<2x8x32xf32>
    %y = sl.linear %h, %wd : (tensor<2x8x32xf32>, tensor<32x16xf32, #sl.layout<@mesh, [[tp], []]>>) -> tensor<2x8x16xf32>
    %r = sl.add %x, %y : (tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
    return %r : tensor<2x8x16xf32>
  }
}

// -----

// One relayout of a value to a layout serves every consumer.
module attributes {sl.sequence_parallel = true} {
  sl.mesh @mesh(tp = 2)
  // CHECK-LABEL: func.func @shared_gather
  // CHECK-COUNT-1: sl.relayout
  // CHECK-NOT: sl.relayout
  func.func @shared_gather(%x: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>>) -> (tensor<2x8x32xf32>, tensor<2x8x32xf32>) {
    %w1 = sl.weight "w1" : tensor<16x32xf32, #sl.layout<@mesh, [[], [tp]]>>
    %w2 = sl.weight "w2" : tensor<16x32xf32, #sl.layout<@mesh, [[], [tp]]>>
    %a = sl.linear %x, %w1 : (tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>>, tensor<16x32xf32, #sl.layout<@mesh, [[], [tp]]>>) -> tensor<2x8x32xf32>
    %b = sl.linear %x, %w2 : (tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>>, tensor<16x32xf32, #sl.layout<@mesh, [[], [tp]]>>) -> tensor<2x8x32xf32>
    return %a, %b : tensor<2x8x32xf32>, tensor<2x8x32xf32>
  }
}

// -----

// Attention under ring context parallelism becomes sl.ring_attention; under
// allgather the keys and values are gathered.
module attributes {sl.cp_comm = "ring"} {
  sl.mesh @mesh(cp = 2)
  // CHECK-LABEL: func.func @ring
  // CHECK-NOT: sl.relayout
  // CHECK: sl.ring_attention {{.*}}axes = ["cp"]
  // CHECK-NOT: sl.attention
  func.func @ring(%q: tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>, %k: tensor<1x8x8xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>) -> tensor<1x8x16xf32> {
    %o = sl.attention %q, %k, %k {heads = 4, kv_heads = 2} : (tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>, tensor<1x8x8xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>, tensor<1x8x8xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>) -> tensor<1x8x16xf32>
    return %o : tensor<1x8x16xf32>
  }
}

// -----

module attributes {sl.cp_comm = "allgather"} {
  sl.mesh @mesh(cp = 2)
  // CHECK-LABEL: func.func @allgather
  // CHECK: sl.relayout {{.*}}-> tensor<1x8x8xf32, #{{.*}}>
  // CHECK: sl.attention
  func.func @allgather(%q: tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, %k: tensor<1x8x8xf32, #sl.layout<@mesh, [[], [cp], []]>>) -> tensor<1x8x16xf32> {
    %o = sl.attention %q, %k, %k {heads = 4, kv_heads = 2} : (tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<1x8x8xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<1x8x8xf32, #sl.layout<@mesh, [[], [cp], []]>>) -> tensor<1x8x16xf32>
    return %o : tensor<1x8x16xf32>
  }
}

// -----

// A scan under context parallelism: chunks scan from zero, the summaries are
// exchanged and the outputs corrected; the conv reads a halo.
module {
  sl.mesh @mesh(cp = 2)
  // CHECK-LABEL: func.func @scan
  // CHECK: %[[H:.*]] = sl.halo %{{.*}} {axes = ["cp"]{{.*}}width = 3 : i64}
  // CHECK: sl.causal_conv1d %{{.*}}, %{{.*}}, %{{.*}} halo %[[H]]
  // CHECK: %[[Y:.*]], %[[S:.*]], %[[D:.*]] = sl.rglru_scan {{.*}}chunk_axes = ["cp"]{{.*}} -> (tensor<1x8x4xf32, #{{.*}}>, tensor<2x1x4xf32, #{{.*}}>, tensor<2x1x4xf32, #{{.*}}>)
  // CHECK: %[[I:.*]] = sl.scan_state_exchange %[[S]], %[[D]] {axes = ["cp"]
  // CHECK: sl.rglru_correct %[[Y]], %[[I]]
  func.func @scan(%x: tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>) -> tensor<1x8x4xf32> {
    %cw = sl.weight "cw" : tensor<4x4xf32, #sl.layout<@mesh, [[], []]>>
    %cb = sl.weight "cb" : tensor<4xf32, #sl.layout<@mesh, [[]]>>
    %v = sl.weight "v" : tensor<4xf32, #sl.layout<@mesh, [[]]>>
    %c = sl.causal_conv1d %x, %cw, %cb : (tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<4x4xf32, #sl.layout<@mesh, [[], []]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>) -> tensor<1x8x4xf32>
    %y, %s, %d = sl.rglru_scan %c, %v, %v, %v, %v, %v : (tensor<1x8x4xf32>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>) -> (tensor<1x8x4xf32>, tensor<1x4xf32>, tensor<1x4xf32>)
    return %y : tensor<1x8x4xf32>
  }
}

// -----

// Experts over ep: the dispatched tokens move from the batch split to the
// expert split and back (all-to-all), not gathered.
module {
  sl.mesh @mesh(ep = 2)
  // CHECK-DAG: #[[$BYB:.*]] = #sl.layout<@mesh, {{\[}}[], [ep], [], []]>
  // CHECK-DAG: #[[$BYE:.*]] = #sl.layout<@mesh, {{\[}}[ep], [], [], []]>
  // CHECK-LABEL: func.func @moe
  // CHECK: sl.relayout {{.*}}#[[$BYB]]> -> tensor<4x2x8x16xf32, #[[$BYE]]>
  // CHECK: sl.moe_experts
  // CHECK: sl.relayout {{.*}}#[[$BYE]]> -> tensor<4x2x8x16xf32, #[[$BYB]]>
  // CHECK: sl.moe_combine
  func.func @moe(%x: tensor<2x8x16xf32, #sl.layout<@mesh, [[ep], [], []]>>, %w: tensor<2x8x2xf32, #sl.layout<@mesh, [[ep], [], []]>>, %i: tensor<2x8x2xi32, #sl.layout<@mesh, [[ep], [], []]>>) -> tensor<2x8x16xf32> {
    %g = sl.weight "g" : tensor<4x16x8xf32, #sl.layout<@mesh, [[ep], [], []]>>
    %dn = sl.weight "dn" : tensor<4x8x16xf32, #sl.layout<@mesh, [[ep], [], []]>>
    %t = sl.moe_dispatch %x, %i {experts = 4} : (tensor<2x8x16xf32, #sl.layout<@mesh, [[ep], [], []]>>, tensor<2x8x2xi32, #sl.layout<@mesh, [[ep], [], []]>>) -> tensor<4x2x8x16xf32>
    %e = sl.moe_experts %t, %g, %g, %dn : (tensor<4x2x8x16xf32>, tensor<4x16x8xf32, #sl.layout<@mesh, [[ep], [], []]>>, tensor<4x16x8xf32, #sl.layout<@mesh, [[ep], [], []]>>, tensor<4x8x16xf32, #sl.layout<@mesh, [[ep], [], []]>>) -> tensor<4x2x8x16xf32>
    %y = sl.moe_combine %e, %w, %i : (tensor<4x2x8x16xf32>, tensor<2x8x2xf32, #sl.layout<@mesh, [[ep], [], []]>>, tensor<2x8x2xi32, #sl.layout<@mesh, [[ep], [], []]>>) -> tensor<2x8x16xf32>
    return %y : tensor<2x8x16xf32>
  }
}

// -----

module {
  sl.mesh @mesh(ep = 2)
  func.func @weights_disagree(%t: tensor<4x2x8x16xf32>) -> tensor<4x2x8x16xf32> {
    %g = sl.weight "g" : tensor<4x16x8xf32, #sl.layout<@mesh, [[ep], [], []]>>
    %u = sl.weight "u" : tensor<4x16x8xf32, #sl.layout<@mesh, [[], [], []]>>
    %dn = sl.weight "dn" : tensor<4x8x16xf32, #sl.layout<@mesh, [[ep], [], []]>>
    // expected-error @+1 {{inconsistent user layouts: weights disagree on experts: operand #2 ('u') splits it over [], another weight over [ep]}}
    %e = sl.moe_experts %t, %g, %u, %dn : (tensor<4x2x8x16xf32>, tensor<4x16x8xf32, #sl.layout<@mesh, [[ep], [], []]>>, tensor<4x16x8xf32, #sl.layout<@mesh, [[], [], []]>>, tensor<4x8x16xf32, #sl.layout<@mesh, [[ep], [], []]>>) -> tensor<4x2x8x16xf32>
    return %e : tensor<4x2x8x16xf32>
  }
}

// -----

module attributes {sl.cp_comm = "a2a"} {
  sl.mesh @mesh(cp = 4)
  func.func @a2a_heads(%q: tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, %k: tensor<1x8x8xf32, #sl.layout<@mesh, [[], [cp], []]>>) -> tensor<1x8x16xf32> {
    // expected-error @+1 {{a2a context parallelism splits the heads over [cp] (4 ways), which does not divide kv_heads = 2; use cp_comm ring or allgather}}
    %o = sl.attention %q, %k, %k {heads = 4, kv_heads = 2} : (tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<1x8x8xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<1x8x8xf32, #sl.layout<@mesh, [[], [cp], []]>>) -> tensor<1x8x16xf32>
    return %o : tensor<1x8x16xf32>
  }
}

// -----

module {
  sl.mesh @mesh(cp = 2)
  func.func @final_state(%x: tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>, %v: tensor<4xf32>) -> tensor<1x4xf32> {
    // expected-error @+1 {{the final state of a scan whose sequence is split over [cp] is not supported yet}}
    %y, %s, %d = sl.rglru_scan %x, %v, %v, %v, %v, %v : (tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<1x8x4xf32>, tensor<1x4xf32>, tensor<1x4xf32>)
    return %s : tensor<1x4xf32>
  }
}

// -----

module {
  sl.mesh @mesh(tp = 2)
  func.func @no_rule() -> tensor<4xf32> {
    // expected-error @+1 {{'arith.constant' op has no layout and no sharding rule to derive one from}}
    %c = arith.constant dense<1.0> : tensor<4xf32>
    return %c : tensor<4xf32>
  }
}

// -----

module {
  sl.mesh @mesh(tp = 2)
  // expected-error @+1 {{'sl.mesh' op a second mesh; sl-propagate-layouts handles one mesh per module}}
  sl.mesh @other(tp = 2)
}
