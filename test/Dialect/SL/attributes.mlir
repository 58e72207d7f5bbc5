// RUN: shardline-opt %s -split-input-file -verify-diagnostics | FileCheck %s

// The dialect's discardable attributes are declared: each one's type, values
// and place are checked wherever it appears (names in SL.h).

// CHECK-LABEL: module attributes {sl.cp_comm = "auto", sl.sequence_parallel = true}
// CHECK: sl.rms_norm {{.*}}{sl.block = 3 : i64, sl.family = "A", sl.reason = "why"}
// CHECK: sl.attention {{.*}}sl.cp_comm = "a2a"
// CHECK: func.func @names(%{{.*}}: tensor<2x16xi32> {sl.name = "tokens"})
module attributes {sl.sequence_parallel = true, sl.cp_comm = "auto"} {
  func.func @stamped(%x: tensor<2x16x32xf32>, %w: tensor<32xf32>, %kv: tensor<2x16x16xf32>) -> tensor<2x16x32xf32> {
    %n = sl.rms_norm %x, %w {sl.block = 3, sl.family = "A", sl.reason = "why"} : (tensor<2x16x32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %o = sl.attention %n, %kv, %kv {heads = 4, kv_heads = 2, sl.cp_comm = "a2a"} : (tensor<2x16x32xf32>, tensor<2x16x16xf32>, tensor<2x16x16xf32>) -> tensor<2x16x32xf32>
    return %o : tensor<2x16x32xf32>
  }
  func.func @names(%ids: tensor<2x16xi32> {sl.name = "tokens"}) -> tensor<2x16xi32> {
    return %ids : tensor<2x16xi32>
  }
}

// -----

func.func @negative_block(%x: tensor<4xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{'sl.block' must be an i64 block index >= 0, got -1 : i64}}
  %y = sl.silu %x {sl.block = -1} : (tensor<4xf32>) -> tensor<4xf32>
  return %y : tensor<4xf32>
}

// -----

func.func @block_not_i64(%x: tensor<4xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{'sl.block' must be an i64 block index >= 0, got "3"}}
  %y = sl.silu %x {sl.block = "3"} : (tensor<4xf32>) -> tensor<4xf32>
  return %y : tensor<4xf32>
}

// -----

func.func @unknown_family(%x: tensor<4xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{'sl.family' must be a block family's pattern letter (one capital letter), "embedding" or "lm_head", got "attention"}}
  %y = sl.silu %x {sl.family = "attention"} : (tensor<4xf32>) -> tensor<4xf32>
  return %y : tensor<4xf32>
}

// -----

func.func @unknown_attribute(%x: tensor<4xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{unknown sl attribute 'sl.blok'; the dialect declares sl.reason, sl.cp_comm}}
  %y = sl.silu %x {sl.blok = 1} : (tensor<4xf32>) -> tensor<4xf32>
  return %y : tensor<4xf32>
}

// -----

func.func @reason_not_string(%x: tensor<4xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{'sl.reason' must be a string, got 1 : i64}}
  %y = sl.silu %x {sl.reason = 1} : (tensor<4xf32>) -> tensor<4xf32>
  return %y : tensor<4xf32>
}

// -----

sl.mesh @mesh(tp = 2)
func.func @gather_reason_not_string(%x: tensor<4xf32, #sl.layout<@mesh, [[tp]]>>) -> tensor<4xf32, #sl.layout<@mesh, [[]]>> {
  // expected-error @+1 {{'sl.gather_reason' must be a string, got 2 : i64}}
  %y = sl.relayout %x {sl.gather_reason = 2} : tensor<4xf32, #sl.layout<@mesh, [[tp]]>> -> tensor<4xf32, #sl.layout<@mesh, [[]]>>
  return %y : tensor<4xf32, #sl.layout<@mesh, [[]]>>
}

// -----

// sl.gather_reason belongs to a relayout (sl-insert-collectives gives its
// words to the all_gather steps as their sl.reason): on any other op it is
// an error, a gather's own step included.
func.func @gather_reason_on_another_op(%x: tensor<4xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{'sl.gather_reason' must be set on sl.relayout only, got "why"}}
  %y = sl.silu %x {sl.gather_reason = "why"} : (tensor<4xf32>) -> tensor<4xf32>
  return %y : tensor<4xf32>
}

// -----

sl.mesh @mesh(tp = 2)
func.func @gather_reason_on_a_gather(%x: tensor<4xf32, #sl.layout<@mesh, [[tp]]>>) -> tensor<4xf32, #sl.layout<@mesh, [[]]>> {
  // expected-error @+1 {{'sl.gather_reason' must be set on sl.relayout only, got "why"}}
  %y = sl.all_gather %x {axes = ["tp"], dim = 0, sl.gather_reason = "why"} : tensor<4xf32, #sl.layout<@mesh, [[tp]]>> -> tensor<4xf32, #sl.layout<@mesh, [[]]>>
  return %y : tensor<4xf32, #sl.layout<@mesh, [[]]>>
}

// -----

// On a relayout it is kept as it is.
sl.mesh @mesh(tp = 2)
// CHECK-LABEL: func.func @gather_reason_on_a_relayout
// CHECK: sl.relayout %{{.*}} {sl.gather_reason = "why"}
func.func @gather_reason_on_a_relayout(%x: tensor<4xf32, #sl.layout<@mesh, [[tp]]>>) -> tensor<4xf32, #sl.layout<@mesh, [[]]>> {
  %y = sl.relayout %x {sl.gather_reason = "why"} : tensor<4xf32, #sl.layout<@mesh, [[tp]]>> -> tensor<4xf32, #sl.layout<@mesh, [[]]>>
  return %y : tensor<4xf32, #sl.layout<@mesh, [[]]>>
}

// -----

// expected-error @+1 {{'sl.cp_comm' must be one of ring, allgather, a2a or auto, got "mesh"}}
module attributes {sl.cp_comm = "mesh"} {
}

// -----

func.func @auto_on_an_op(%q: tensor<2x16x32xf32>, %kv: tensor<2x16x16xf32>) -> tensor<2x16x32xf32> {
  // expected-error @+1 {{'sl.cp_comm' must be one of ring, allgather or a2a on an op, got "auto"}}
  %o = sl.attention %q, %kv, %kv {heads = 4, kv_heads = 2, sl.cp_comm = "auto"} : (tensor<2x16x32xf32>, tensor<2x16x16xf32>, tensor<2x16x16xf32>) -> tensor<2x16x32xf32>
  return %o : tensor<2x16x32xf32>
}

// -----

func.func @sequence_parallel_on_an_op(%x: tensor<4xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{'sl.sequence_parallel' must be set on the module only, got true}}
  %y = sl.silu %x {sl.sequence_parallel = true} : (tensor<4xf32>) -> tensor<4xf32>
  return %y : tensor<4xf32>
}

// -----

// expected-error @+1 {{'sl.sequence_parallel' must be a bool, got "yes"}}
module attributes {sl.sequence_parallel = "yes"} {
}

// -----

// expected-error @+1 {{'sl.elided' must be an array of dictionaries with string op, location and how, got [{op = "sl.all_gather"}]}}
module attributes {sl.elided = [{op = "sl.all_gather"}]} {
}

// -----

// expected-error @+1 {{'sl.rank' must be an i64 on a function, got 2 : i32}}
func.func @rank_i32() attributes {sl.rank = 2 : i32} {
  return
}

// -----

func.func @tokens_not_runs(%x: tensor<2x16x32xf32>) -> tensor<2x16x32xf32> {
  // expected-error @+1 {{'sl.tokens' must be an array<i64>, got [0, 16]}}
  %y = sl.rope %x {head_dim = 8, sl.tokens = [0, 16]} : (tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  return %y : tensor<2x16x32xf32>
}

// -----

// expected-error @+1 {{'sl.name' must be a non-empty string, got 1 : i64}}
func.func @name_not_string(%ids: tensor<2x16xi32> {sl.name = 1}) -> tensor<2x16xi32> {
  return %ids : tensor<2x16xi32>
}

// -----

// expected-error @+1 {{unknown sl argument attribute 'sl.nam'; the dialect declares sl.name}}
func.func @unknown_argument_attribute(%ids: tensor<2x16xi32> {sl.nam = "tokens"}) -> tensor<2x16xi32> {
  return %ids : tensor<2x16xi32>
}

// -----

// Results are named like arguments (the plan's output names).
// expected-error @+1 {{'sl.name' must be a non-empty string, got ""}}
func.func @result_name_empty(%ids: tensor<2x16xi32>) -> (tensor<2x16xi32> {sl.name = ""}) {
  return %ids : tensor<2x16xi32>
}

// -----

// expected-error @+1 {{unknown sl result attribute 'sl.backward'; the dialect declares sl.name}}
func.func @unknown_result_attribute(%ids: tensor<2x16xi32>) -> (tensor<2x16xi32> {sl.backward}) {
  return %ids : tensor<2x16xi32>
}

// -----

func.func @backward_not_unit(%x: tensor<2x16x32xf32>) -> tensor<2x16x32xf32> {
  // expected-error @+1 {{'sl.backward' must be a unit attribute, got 1 : i64}}
  %y = sl.silu %x {sl.backward = 1} : (tensor<2x16x32xf32>) -> tensor<2x16x32xf32>
  return %y : tensor<2x16x32xf32>
}
