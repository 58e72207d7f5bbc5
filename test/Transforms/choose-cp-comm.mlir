// RUN: shardline-opt %s -split-input-file -sl-choose-cp-comm -verify-diagnostics | FileCheck %s
// RUN: not shardline-opt %s -split-input-file -sl-choose-cp-comm=machine=%t.missing.json 2>&1 | FileCheck %s --check-prefix=MISSING
// RUN: echo '{"name": "x", "gpus_per_node": 8, "intra_node": {"bandwidth_GBps": 400}}' > %t.bad.json
// RUN: not shardline-opt %s -split-input-file -sl-choose-cp-comm=machine=%t.bad.json 2>&1 | FileCheck %s --check-prefix=BAD
// MISSING: error: sl-choose-cp-comm: cannot open input file
// BAD-DAG: intra_node.latency_us: missing required key
// BAD-DAG: inter_node: missing object
// BAD-DAG: memory_GB: missing required key

// Short sequences inside a node: ring and allgather cost the same, ring wins
// the tie (no resident copy of every K,V).
// CHECK: module attributes {sl.cp_comm = "ring"}
// CHECK-LABEL: func.func @short
// CHECK: sl.attention {{.*}}sl.cp_comm = "ring"
module attributes {sl.cp_comm = "auto"} {
  sl.mesh @mesh(cp = 2, tp = 1)
  func.func @short(%q: tensor<1x64x64xbf16>, %k: tensor<1x64x64xbf16>) -> tensor<1x64x64xbf16> {
    // expected-remark @+1 {{cp_comm auto on 8xH100-SXM (cp 2, within a node): ring}}
    %o = sl.attention %q, %k, %k {heads = 8, kv_heads = 8} : (tensor<1x64x64xbf16>, tensor<1x64x64xbf16>, tensor<1x64x64xbf16>) -> tensor<1x64x64xbf16>
    return %o : tensor<1x64x64xbf16>
  }
}

// -----

// A long sequence across nodes (cp*tp = 16 > 8 GPUs per node), full heads:
// all-to-all moves (cp-1)/cp of q,k,v,o; the ring's (cp-1) K,V passes no
// longer hide behind the compute.
// CHECK: module attributes {sl.cp_comm = "a2a"}
// CHECK-LABEL: func.func @long_across_nodes
// CHECK: sl.attention {{.*}}sl.cp_comm = "a2a"
module attributes {sl.cp_comm = "auto"} {
  sl.mesh @mesh(cp = 8, tp = 2)
  func.func @long_across_nodes(%q: tensor<1x65536x2048xbf16>) -> tensor<1x65536x2048xbf16> {
    // expected-remark @+1 {{(cp 8, across nodes): ring 4906.6 us, 234881024 bytes sent, 67108864 bytes resident; allgather 5839.4 us, 234881024 bytes sent, 268435456 bytes resident; a2a 2406.1 us, 58720256 bytes sent, 0 bytes resident; chose a2a}}
    %o = sl.attention %q, %q, %q {heads = 16, kv_heads = 16} : (tensor<1x65536x2048xbf16>, tensor<1x65536x2048xbf16>, tensor<1x65536x2048xbf16>) -> tensor<1x65536x2048xbf16>
    return %o : tensor<1x65536x2048xbf16>
  }
}

// -----

// Tiny messages and compute across nodes: latency decides, and one gather
// beats the ring's cp-1 steps. GQA with 2 kv heads rules out all-to-all.
// CHECK: module attributes {sl.cp_comm = "allgather"}
// CHECK-LABEL: func.func @latency_bound
// CHECK: sl.attention {{.*}}sl.cp_comm = "allgather"
module attributes {sl.cp_comm = "auto"} {
  sl.mesh @mesh(cp = 8, tp = 2)
  func.func @latency_bound(%q: tensor<1x64x64xbf16>, %k: tensor<1x64x32xbf16>) -> tensor<1x64x64xbf16> {
    // expected-remark @+1 {{a2a infeasible: kv_heads 2 not divisible by tp*cp 16; chose allgather}}
    %o = sl.attention %q, %k, %k {heads = 4, kv_heads = 2} : (tensor<1x64x64xbf16>, tensor<1x64x32xbf16>, tensor<1x64x32xbf16>) -> tensor<1x64x64xbf16>
    return %o : tensor<1x64x64xbf16>
  }
}

// -----

// Only when asked: a module with a concrete cp_comm is left alone.
// CHECK: module attributes {sl.cp_comm = "allgather"}
// CHECK-LABEL: func.func @fixed
// CHECK-NOT: sl.cp_comm = "
module attributes {sl.cp_comm = "allgather"} {
  sl.mesh @mesh(cp = 2)
  func.func @fixed(%q: tensor<1x64x64xf32>) -> tensor<1x64x64xf32> {
    %o = sl.attention %q, %q, %q {heads = 8, kv_heads = 8} : (tensor<1x64x64xf32>, tensor<1x64x64xf32>, tensor<1x64x64xf32>) -> tensor<1x64x64xf32>
    return %o : tensor<1x64x64xf32>
  }
}
