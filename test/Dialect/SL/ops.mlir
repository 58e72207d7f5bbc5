// RUN: shardline-opt %s -split-input-file | FileCheck %s
// The printed form parses back to the same program, in the custom and the
// generic form.
// RUN: shardline-opt %s -split-input-file | shardline-opt -split-input-file | FileCheck %s
// RUN: shardline-opt %s -split-input-file -mlir-print-op-generic | shardline-opt -split-input-file | FileCheck %s

// Layouts print as #layout, #layout1, ... aliases at the top of each module;
// the CHECK-DAG lines before a label capture them.

// CHECK-LABEL: sl.mesh @mesh(dp = 1, ep = 2, cp = 2, tp = 2)
sl.mesh @mesh(dp = 1, ep = 2, cp = 2, tp = 2)

// -----

// CHECK-LABEL: sl.mesh @mesh("data parallel" = 2, tp = 4)
sl.mesh @mesh("data parallel" = 2, tp = 4)

// -----

sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$COL:.*]] = #sl.layout<@mesh, {{\[}}[], [tp]]>
// CHECK-LABEL: func.func @weight_normal
// CHECK: sl.weight "blocks.0.attn.wq" : tensor<32x32xf32, #[[$COL]]>
func.func @weight_normal() -> tensor<32x32xf32, #sl.layout<@mesh, [[], [tp]]>> {
  %w = sl.weight "blocks.0.attn.wq" : tensor<32x32xf32, #sl.layout<@mesh, [[], [tp]]>>
  return %w : tensor<32x32xf32, #sl.layout<@mesh, [[], [tp]]>>
}

// -----

sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$ROW:.*]] = #sl.layout<@mesh, {{\[}}[tp], []]>
// CHECK-LABEL: func.func @weight_normal_scaled
// CHECK: sl.weight "blocks.0.attn.wo" {scale = 1.000000e-02 : f64} : tensor<32x32xf32, #[[$ROW]]>
func.func @weight_normal_scaled() -> tensor<32x32xf32, #sl.layout<@mesh, [[tp], []]>> {
  %w = sl.weight "blocks.0.attn.wo" {init = "normal", scale = 0.01 : f64} : tensor<32x32xf32, #sl.layout<@mesh, [[tp], []]>>
  return %w : tensor<32x32xf32, #sl.layout<@mesh, [[tp], []]>>
}

// -----

// CHECK-LABEL: func.func @weight_uniform
// CHECK: sl.weight "blocks.0.mamba.dt_bias" {init = "uniform", offset = -1.000000e+00 : f64, scale = 2.000000e+00 : f64} : tensor<4xbf16>
func.func @weight_uniform() -> tensor<4xbf16> {
  %w = sl.weight "blocks.0.mamba.dt_bias" {init = "uniform", scale = 2.0 : f64, offset = -1.0 : f64} : tensor<4xbf16>
  return %w : tensor<4xbf16>
}

// -----

sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$REP:.*]] = #sl.layout<@mesh, {{\[}}[]]>
// CHECK-LABEL: func.func @weight_constant
// CHECK: sl.weight "blocks.0.norm" {init = "constant", offset = 1.000000e+00 : f64} : tensor<32xf16, #[[$REP]]>
func.func @weight_constant() -> tensor<32xf16, #sl.layout<@mesh, [[]]>> {
  %w = sl.weight "blocks.0.norm" {init = "constant", offset = 1.0 : f64} : tensor<32xf16, #sl.layout<@mesh, [[]]>>
  return %w : tensor<32xf16, #sl.layout<@mesh, [[]]>>
}

// -----

// A vocab-parallel table: each rank looks up the rows it owns, so the result
// is a pending sum over tp.
#ids = #sl.layout<@mesh, [[], [cp]]>
#table = #sl.layout<@mesh, [[tp], []]>
#sum = #sl.layout<@mesh, [[], [cp], []], partial = [tp]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$IDS:.*]] = #sl.layout<@mesh, {{\[}}[], [cp]]>
// CHECK-DAG: #[[$TABLE:.*]] = #sl.layout<@mesh, {{\[}}[tp], []]>
// CHECK-DAG: #[[$SUM:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], []], partial = [tp]>
// CHECK-LABEL: func.func @embedding_vocab_parallel
// CHECK-SAME: (%[[IDS:.*]]: tensor<2x16xi32, #[[$IDS]]>, %[[T:.*]]: tensor<64x32xf32, #[[$TABLE]]>)
// CHECK: sl.embedding %[[IDS]], %[[T]] : (tensor<2x16xi32, #[[$IDS]]>, tensor<64x32xf32, #[[$TABLE]]>) -> tensor<2x16x32xf32, #[[$SUM]]>
func.func @embedding_vocab_parallel(%ids: tensor<2x16xi32, #ids>, %t: tensor<64x32xf32, #table>) -> tensor<2x16x32xf32, #sum> {
  %e = sl.embedding %ids, %t : (tensor<2x16xi32, #ids>, tensor<64x32xf32, #table>) -> tensor<2x16x32xf32, #sum>
  return %e : tensor<2x16x32xf32, #sum>
}

// -----

// Sequence parallelism: the norm runs on the sequence shard it holds.
#seq = #sl.layout<@mesh, [[], [cp, tp] zigzag, []]>
#rep = #sl.layout<@mesh, [[]]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$SEQ:.*]] = #sl.layout<@mesh, {{\[}}[], [cp, tp] zigzag, []]>
// CHECK-DAG: #[[$REP:.*]] = #sl.layout<@mesh, {{\[}}[]]>
// CHECK-LABEL: func.func @rms_norm_sequence_parallel
// CHECK-SAME: (%[[X:.*]]: tensor<2x16x32xf32, #[[$SEQ]]>, %[[W:.*]]: tensor<32xf32, #[[$REP]]>)
// CHECK: sl.rms_norm %[[X]], %[[W]] : (tensor<2x16x32xf32, #[[$SEQ]]>, tensor<32xf32, #[[$REP]]>) -> tensor<2x16x32xf32, #[[$SEQ]]>
func.func @rms_norm_sequence_parallel(%x: tensor<2x16x32xf32, #seq>, %w: tensor<32xf32, #rep>) -> tensor<2x16x32xf32, #seq> {
  %y = sl.rms_norm %x, %w : (tensor<2x16x32xf32, #seq>, tensor<32xf32, #rep>) -> tensor<2x16x32xf32, #seq>
  return %y : tensor<2x16x32xf32, #seq>
}

// -----

// CHECK-LABEL: func.func @rms_norm_eps
// CHECK: sl.rms_norm %{{.*}}, %{{.*}} {eps = 9.9999999999999995E-7 : f64} : (tensor<2x16x32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
func.func @rms_norm_eps(%x: tensor<2x16x32xf32>, %w: tensor<32xf32>) -> tensor<2x16x32xf32> {
  %y = sl.rms_norm %x, %w {eps = 1.0e-6 : f64} : (tensor<2x16x32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
  return %y : tensor<2x16x32xf32>
}

// -----

// Mamba-2's gated norm on column-parallel channels: tp = 2 keeps the 2
// groups whole.
#col = #sl.layout<@mesh, [[], [cp], [tp]]>
#w = #sl.layout<@mesh, [[tp]]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$COL:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], [tp]]>
// CHECK-DAG: #[[$W:.*]] = #sl.layout<@mesh, {{\[}}[tp]]>
// CHECK-LABEL: func.func @gated_rms_norm_groups
// CHECK-SAME: (%[[Y:.*]]: tensor<2x16x32xf32, #[[$COL]]>, %[[Z:.*]]: tensor<2x16x32xf32, #[[$COL]]>, %[[W:.*]]: tensor<32xf32, #[[$W]]>)
// CHECK: sl.gated_rms_norm %[[Y]], %[[Z]], %[[W]] {groups = 2 : i64} : (tensor<2x16x32xf32, #[[$COL]]>, tensor<2x16x32xf32, #[[$COL]]>, tensor<32xf32, #[[$W]]>) -> tensor<2x16x32xf32, #[[$COL]]>
func.func @gated_rms_norm_groups(%y: tensor<2x16x32xf32, #col>, %z: tensor<2x16x32xf32, #col>, %w: tensor<32xf32, #w>) -> tensor<2x16x32xf32, #col> {
  %r = sl.gated_rms_norm %y, %z, %w {groups = 2} : (tensor<2x16x32xf32, #col>, tensor<2x16x32xf32, #col>, tensor<32xf32, #w>) -> tensor<2x16x32xf32, #col>
  return %r : tensor<2x16x32xf32, #col>
}

// -----

// Column-parallel: the output features are split over tp.
#x = #sl.layout<@mesh, [[], [cp], []]>
#w = #sl.layout<@mesh, [[], [tp]]>
#y = #sl.layout<@mesh, [[], [cp], [tp]]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$X:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], []]>
// CHECK-DAG: #[[$W:.*]] = #sl.layout<@mesh, {{\[}}[], [tp]]>
// CHECK-DAG: #[[$Y:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], [tp]]>
// CHECK-LABEL: func.func @linear_column_parallel
// CHECK-SAME: (%[[X:.*]]: tensor<2x16x32xf32, #[[$X]]>, %[[W:.*]]: tensor<32x64xf32, #[[$W]]>)
// CHECK: sl.linear %[[X]], %[[W]] : (tensor<2x16x32xf32, #[[$X]]>, tensor<32x64xf32, #[[$W]]>) -> tensor<2x16x64xf32, #[[$Y]]>
func.func @linear_column_parallel(%x: tensor<2x16x32xf32, #x>, %w: tensor<32x64xf32, #w>) -> tensor<2x16x64xf32, #y> {
  %y = sl.linear %x, %w : (tensor<2x16x32xf32, #x>, tensor<32x64xf32, #w>) -> tensor<2x16x64xf32, #y>
  return %y : tensor<2x16x64xf32, #y>
}

// -----

// Row-parallel: the contraction is split over tp, so the result is a
// pending sum over tp.
#x = #sl.layout<@mesh, [[], [cp], [tp]]>
#w = #sl.layout<@mesh, [[tp], []]>
#y = #sl.layout<@mesh, [[], [cp], []], partial = [tp]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$X:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], [tp]]>
// CHECK-DAG: #[[$W:.*]] = #sl.layout<@mesh, {{\[}}[tp], []]>
// CHECK-DAG: #[[$Y:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], []], partial = [tp]>
// CHECK-LABEL: func.func @linear_row_parallel
// CHECK-SAME: (%[[X:.*]]: tensor<2x16x64xf32, #[[$X]]>, %[[W:.*]]: tensor<64x32xf32, #[[$W]]>)
// CHECK: sl.linear %[[X]], %[[W]] : (tensor<2x16x64xf32, #[[$X]]>, tensor<64x32xf32, #[[$W]]>) -> tensor<2x16x32xf32, #[[$Y]]>
func.func @linear_row_parallel(%x: tensor<2x16x64xf32, #x>, %w: tensor<64x32xf32, #w>) -> tensor<2x16x32xf32, #y> {
  %y = sl.linear %x, %w : (tensor<2x16x64xf32, #x>, tensor<64x32xf32, #w>) -> tensor<2x16x32xf32, #y>
  return %y : tensor<2x16x32xf32, #y>
}

// -----

// x of rank 2 (tokens x features): its leading dimension is the sequence.
#x = #sl.layout<@mesh, [[cp], []]>
#w = #sl.layout<@mesh, [[], [tp]]>
#y = #sl.layout<@mesh, [[cp], [tp]]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$X:.*]] = #sl.layout<@mesh, {{\[}}[cp], []]>
// CHECK-DAG: #[[$W:.*]] = #sl.layout<@mesh, {{\[}}[], [tp]]>
// CHECK-DAG: #[[$Y:.*]] = #sl.layout<@mesh, {{\[}}[cp], [tp]]>
// CHECK-LABEL: func.func @linear_rank2
// CHECK: sl.linear %{{.*}}, %{{.*}} : (tensor<16x32xf32, #[[$X]]>, tensor<32x64xf32, #[[$W]]>) -> tensor<16x64xf32, #[[$Y]]>
func.func @linear_rank2(%x: tensor<16x32xf32, #x>, %w: tensor<32x64xf32, #w>) -> tensor<16x64xf32, #y> {
  %y = sl.linear %x, %w : (tensor<16x32xf32, #x>, tensor<32x64xf32, #w>) -> tensor<16x64xf32, #y>
  return %y : tensor<16x64xf32, #y>
}

// -----

// CHECK-LABEL: func.func @linear_unannotated
// CHECK: sl.linear %{{.*}}, %{{.*}} : (tensor<2x16x32xbf16>, tensor<32x64xbf16>) -> tensor<2x16x64xbf16>
func.func @linear_unannotated(%x: tensor<2x16x32xbf16>, %w: tensor<32x64xbf16>) -> tensor<2x16x64xbf16> {
  %y = sl.linear %x, %w : (tensor<2x16x32xbf16>, tensor<32x64xbf16>) -> tensor<2x16x64xbf16>
  return %y : tensor<2x16x64xbf16>
}

// -----

// Positions are global, so RoPE runs on a zigzag shard of the sequence; tp
// splits the 4 heads of 8 channels in two.
#q = #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$Q:.*]] = #sl.layout<@mesh, {{\[}}[], [cp] zigzag, [tp]]>
// CHECK-LABEL: func.func @rope_zigzag
// CHECK: sl.rope %{{.*}} {head_dim = 8 : i64, theta = 5.000000e+05 : f64} : (tensor<2x16x32xf32, #[[$Q]]>) -> tensor<2x16x32xf32, #[[$Q]]>
func.func @rope_zigzag(%x: tensor<2x16x32xf32, #q>) -> tensor<2x16x32xf32, #q> {
  %y = sl.rope %x {head_dim = 8, theta = 500000.0} : (tensor<2x16x32xf32, #q>) -> tensor<2x16x32xf32, #q>
  return %y : tensor<2x16x32xf32, #q>
}

// -----

// Context parallelism by an all-gather of K and V: the queries stay on their
// zigzag shard, the keys are whole; heads are split over tp.
#q = #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>
#kv = #sl.layout<@mesh, [[], [], [tp]]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$Q:.*]] = #sl.layout<@mesh, {{\[}}[], [cp] zigzag, [tp]]>
// CHECK-DAG: #[[$KV:.*]] = #sl.layout<@mesh, {{\[}}[], [], [tp]]>
// CHECK-LABEL: func.func @attention_gathered_kv
// CHECK-SAME: (%[[Q:.*]]: tensor<2x16x32xf32, #[[$Q]]>, %[[K:.*]]: tensor<2x16x16xf32, #[[$KV]]>, %[[V:.*]]: tensor<2x16x16xf32, #[[$KV]]>)
// CHECK: sl.attention %[[Q]], %[[K]], %[[V]] {heads = 4 : i64, kv_heads = 2 : i64} : (tensor<2x16x32xf32, #[[$Q]]>, tensor<2x16x16xf32, #[[$KV]]>, tensor<2x16x16xf32, #[[$KV]]>) -> tensor<2x16x32xf32, #[[$Q]]>
func.func @attention_gathered_kv(%q: tensor<2x16x32xf32, #q>, %k: tensor<2x16x16xf32, #kv>, %v: tensor<2x16x16xf32, #kv>) -> tensor<2x16x32xf32, #q> {
  %o = sl.attention %q, %k, %v {heads = 4, kv_heads = 2} : (tensor<2x16x32xf32, #q>, tensor<2x16x16xf32, #kv>, tensor<2x16x16xf32, #kv>) -> tensor<2x16x32xf32, #q>
  return %o : tensor<2x16x32xf32, #q>
}

// -----

// Cross attention: not causal, an explicit scale, keys of another length.
// CHECK-LABEL: func.func @attention_not_causal
// CHECK: sl.attention %{{.*}}, %{{.*}}, %{{.*}} {causal = false, heads = 4 : i64, kv_heads = 4 : i64, scale = 1.250000e-01 : f64} : (tensor<2x16x32xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>) -> tensor<2x16x32xf32>
func.func @attention_not_causal(%q: tensor<2x16x32xf32>, %k: tensor<2x8x32xf32>) -> tensor<2x16x32xf32> {
  %o = sl.attention %q, %k, %k {heads = 4, kv_heads = 4, causal = false, scale = 0.125} : (tensor<2x16x32xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>) -> tensor<2x16x32xf32>
  return %o : tensor<2x16x32xf32>
}

// -----

// Ring attention over cp on a zigzag sequence: q, k and v are all split.
#q = #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$Q:.*]] = #sl.layout<@mesh, {{\[}}[], [cp] zigzag, [tp]]>
// CHECK-LABEL: func.func @ring_attention_zigzag
// CHECK-SAME: (%[[Q:.*]]: tensor<2x16x32xf32, #[[$Q]]>, %[[K:.*]]: tensor<2x16x16xf32, #[[$Q]]>, %[[V:.*]]: tensor<2x16x16xf32, #[[$Q]]>)
// CHECK: sl.ring_attention %[[Q]], %[[K]], %[[V]] {axes = ["cp"], heads = 4 : i64, kv_heads = 2 : i64} : (tensor<2x16x32xf32, #[[$Q]]>, tensor<2x16x16xf32, #[[$Q]]>, tensor<2x16x16xf32, #[[$Q]]>) -> tensor<2x16x32xf32, #[[$Q]]>
func.func @ring_attention_zigzag(%q: tensor<2x16x32xf32, #q>, %k: tensor<2x16x16xf32, #q>, %v: tensor<2x16x16xf32, #q>) -> tensor<2x16x32xf32, #q> {
  %o = sl.ring_attention %q, %k, %v {heads = 4, kv_heads = 2, axes = ["cp"]} : (tensor<2x16x32xf32, #q>, tensor<2x16x16xf32, #q>, tensor<2x16x16xf32, #q>) -> tensor<2x16x32xf32, #q>
  return %o : tensor<2x16x32xf32, #q>
}

// -----

// Local attention, the sequence whole: no halo.
#q = #sl.layout<@mesh, [[], [], [tp]]>
sl.mesh @mesh(cp = 2, tp = 2)
// CHECK-DAG: #[[$Q:.*]] = #sl.layout<@mesh, {{\[}}[], [], [tp]]>
// CHECK-LABEL: func.func @local_attention
// CHECK-SAME: (%[[Q:.*]]: tensor<2x16x32xf32, #[[$Q]]>, %[[K:.*]]: tensor<2x16x16xf32, #[[$Q]]>, %[[V:.*]]: tensor<2x16x16xf32, #[[$Q]]>)
// CHECK: sl.local_attention %[[Q]], %[[K]], %[[V]] {heads = 4 : i64, kv_heads = 2 : i64, window = 6 : i64} : (tensor<2x16x32xf32, #[[$Q]]>, tensor<2x16x16xf32, #[[$Q]]>, tensor<2x16x16xf32, #[[$Q]]>) -> tensor<2x16x32xf32, #[[$Q]]>
func.func @local_attention(%q: tensor<2x16x32xf32, #q>, %k: tensor<2x16x16xf32, #q>, %v: tensor<2x16x16xf32, #q>) -> tensor<2x16x32xf32, #q> {
  %o = sl.local_attention %q, %k, %v {heads = 4, kv_heads = 2, window = 6} : (tensor<2x16x32xf32, #q>, tensor<2x16x16xf32, #q>, tensor<2x16x16xf32, #q>) -> tensor<2x16x32xf32, #q>
  return %o : tensor<2x16x32xf32, #q>
}

// -----

// The sequence split over cp in zigzag order: 4 chunks of 4 tokens, each
// reading the 5 keys and values before it (window 6) from the halos.
#q = #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>
sl.mesh @mesh(cp = 2, tp = 2)
// CHECK-DAG: #[[$Q:.*]] = #sl.layout<@mesh, {{\[}}[], [cp] zigzag, [tp]]>
// CHECK-LABEL: func.func @local_attention_halo
// CHECK-SAME: (%[[Q:.*]]: tensor<2x16x32xf32, #[[$Q]]>, %[[K:.*]]: tensor<2x16x16xf32, #[[$Q]]>, %[[V:.*]]: tensor<2x16x16xf32, #[[$Q]]>, %[[KH:.*]]: tensor<2x20x16xf32, #[[$Q]]>, %[[VH:.*]]: tensor<2x20x16xf32, #[[$Q]]>)
// CHECK: sl.local_attention %[[Q]], %[[K]], %[[V]] halo %[[KH]], %[[VH]] {heads = 4 : i64, kv_heads = 2 : i64, window = 6 : i64} : (tensor<2x16x32xf32, #[[$Q]]>, tensor<2x16x16xf32, #[[$Q]]>, tensor<2x16x16xf32, #[[$Q]]>, tensor<2x20x16xf32, #[[$Q]]>, tensor<2x20x16xf32, #[[$Q]]>) -> tensor<2x16x32xf32, #[[$Q]]>
func.func @local_attention_halo(%q: tensor<2x16x32xf32, #q>, %k: tensor<2x16x16xf32, #q>, %v: tensor<2x16x16xf32, #q>, %kh: tensor<2x20x16xf32, #q>, %vh: tensor<2x20x16xf32, #q>) -> tensor<2x16x32xf32, #q> {
  %o = sl.local_attention %q, %k, %v halo %kh, %vh {heads = 4, kv_heads = 2, window = 6} : (tensor<2x16x32xf32, #q>, tensor<2x16x16xf32, #q>, tensor<2x16x16xf32, #q>, tensor<2x20x16xf32, #q>, tensor<2x20x16xf32, #q>) -> tensor<2x16x32xf32, #q>
  return %o : tensor<2x16x32xf32, #q>
}

// -----

// Channels split over tp, the sequence whole: no halo needed.
#x = #sl.layout<@mesh, [[], [], [tp]]>
#w = #sl.layout<@mesh, [[tp], []]>
#b = #sl.layout<@mesh, [[tp]]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$X:.*]] = #sl.layout<@mesh, {{\[}}[], [], [tp]]>
// CHECK-DAG: #[[$W:.*]] = #sl.layout<@mesh, {{\[}}[tp], []]>
// CHECK-DAG: #[[$B:.*]] = #sl.layout<@mesh, {{\[}}[tp]]>
// CHECK-LABEL: func.func @causal_conv1d_channels
// CHECK-SAME: (%[[X:.*]]: tensor<2x16x32xf32, #[[$X]]>, %[[W:.*]]: tensor<32x4xf32, #[[$W]]>, %[[B:.*]]: tensor<32xf32, #[[$B]]>)
// CHECK: sl.causal_conv1d %[[X]], %[[W]], %[[B]] : (tensor<2x16x32xf32, #[[$X]]>, tensor<32x4xf32, #[[$W]]>, tensor<32xf32, #[[$B]]>) -> tensor<2x16x32xf32, #[[$X]]>
func.func @causal_conv1d_channels(%x: tensor<2x16x32xf32, #x>, %w: tensor<32x4xf32, #w>, %b: tensor<32xf32, #b>) -> tensor<2x16x32xf32, #x> {
  %y = sl.causal_conv1d %x, %w, %b : (tensor<2x16x32xf32, #x>, tensor<32x4xf32, #w>, tensor<32xf32, #b>) -> tensor<2x16x32xf32, #x>
  return %y : tensor<2x16x32xf32, #x>
}

// -----

// The sequence split over cp: the halo holds the 3 tokens before each of the
// 2 chunks.
#x = #sl.layout<@mesh, [[], [cp], [tp]]>
#w = #sl.layout<@mesh, [[tp], []]>
#b = #sl.layout<@mesh, [[tp]]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$X:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], [tp]]>
// CHECK-LABEL: func.func @causal_conv1d_halo
// CHECK-SAME: (%[[X:.*]]: tensor<2x16x32xf32, #[[$X]]>, %[[W:.*]]: tensor<32x4xf32, #{{.*}}>, %[[B:.*]]: tensor<32xf32, #{{.*}}>, %[[H:.*]]: tensor<2x6x32xf32, #[[$X]]>)
// CHECK: sl.causal_conv1d %[[X]], %[[W]], %[[B]] halo %[[H]] : (tensor<2x16x32xf32, #[[$X]]>, tensor<32x4xf32, #{{.*}}>, tensor<32xf32, #{{.*}}>, tensor<2x6x32xf32, #[[$X]]>) -> tensor<2x16x32xf32, #[[$X]]>
func.func @causal_conv1d_halo(%x: tensor<2x16x32xf32, #x>, %w: tensor<32x4xf32, #w>, %b: tensor<32xf32, #b>, %h: tensor<2x6x32xf32, #x>) -> tensor<2x16x32xf32, #x> {
  %y = sl.causal_conv1d %x, %w, %b halo %h : (tensor<2x16x32xf32, #x>, tensor<32x4xf32, #w>, tensor<32xf32, #b>, tensor<2x6x32xf32, #x>) -> tensor<2x16x32xf32, #x>
  return %y : tensor<2x16x32xf32, #x>
}

// -----

// Heads split over tp (in whole groups), the sequence whole.
#act = #sl.layout<@mesh, [[], [], [tp]]>
#h = #sl.layout<@mesh, [[tp]]>
#st = #sl.layout<@mesh, [[], [tp], [], []]>
#dec = #sl.layout<@mesh, [[], [tp]]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$ACT:.*]] = #sl.layout<@mesh, {{\[}}[], [], [tp]]>
// CHECK-DAG: #[[$H:.*]] = #sl.layout<@mesh, {{\[}}[tp]]>
// CHECK-DAG: #[[$ST:.*]] = #sl.layout<@mesh, {{\[}}[], [tp], [], []]>
// CHECK-DAG: #[[$DEC:.*]] = #sl.layout<@mesh, {{\[}}[], [tp]]>
// CHECK-LABEL: func.func @ssd_scan
// CHECK-SAME: (%[[X:.*]]: tensor<2x16x32xf32, #[[$ACT]]>, %[[DT:.*]]: tensor<2x16x4xf32, #[[$ACT]]>, %[[A:.*]]: tensor<4xf32, #[[$H]]>, %[[BC:.*]]: tensor<2x16x8xf32, #[[$ACT]]>)
// CHECK: sl.ssd_scan %[[X]], %[[DT]], %[[A]], %[[BC]], %[[BC]], %[[A]], %[[A]] {groups = 2 : i64, heads = 4 : i64} : (tensor<2x16x32xf32, #[[$ACT]]>, tensor<2x16x4xf32, #[[$ACT]]>, tensor<4xf32, #[[$H]]>, tensor<2x16x8xf32, #[[$ACT]]>, tensor<2x16x8xf32, #[[$ACT]]>, tensor<4xf32, #[[$H]]>, tensor<4xf32, #[[$H]]>) -> (tensor<2x16x32xf32, #[[$ACT]]>, tensor<2x4x8x4xf32, #[[$ST]]>, tensor<2x4xf32, #[[$DEC]]>)
func.func @ssd_scan(%x: tensor<2x16x32xf32, #act>, %dt: tensor<2x16x4xf32, #act>, %a: tensor<4xf32, #h>, %bc: tensor<2x16x8xf32, #act>) -> tensor<2x16x32xf32, #act> {
  %y, %s, %d = sl.ssd_scan %x, %dt, %a, %bc, %bc, %a, %a {heads = 4, groups = 2} : (tensor<2x16x32xf32, #act>, tensor<2x16x4xf32, #act>, tensor<4xf32, #h>, tensor<2x16x8xf32, #act>, tensor<2x16x8xf32, #act>, tensor<4xf32, #h>, tensor<4xf32, #h>) -> (tensor<2x16x32xf32, #act>, tensor<2x4x8x4xf32, #st>, tensor<2x4xf32, #dec>)
  return %y : tensor<2x16x32xf32, #act>
}

// -----

// A scan that continues from a given state.
// CHECK-LABEL: func.func @ssd_scan_state_in
// CHECK-SAME: %[[S0:[^:]*]]: tensor<2x4x8x4xf32>)
// CHECK: sl.ssd_scan %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} state_in %[[S0]] {groups = 2 : i64, heads = 4 : i64} : ({{.*}}, tensor<2x4x8x4xf32>) -> (tensor<2x16x32xf32>, tensor<2x4x8x4xf32>, tensor<2x4xf32>)
func.func @ssd_scan_state_in(%x: tensor<2x16x32xf32>, %dt: tensor<2x16x4xf32>, %a: tensor<4xf32>, %bc: tensor<2x16x8xf32>, %s0: tensor<2x4x8x4xf32>) -> tensor<2x4x8x4xf32> {
  %y, %s, %d = sl.ssd_scan %x, %dt, %a, %bc, %bc, %a, %a state_in %s0 {heads = 4, groups = 2} : (tensor<2x16x32xf32>, tensor<2x16x4xf32>, tensor<4xf32>, tensor<2x16x8xf32>, tensor<2x16x8xf32>, tensor<4xf32>, tensor<4xf32>, tensor<2x4x8x4xf32>) -> (tensor<2x16x32xf32>, tensor<2x4x8x4xf32>, tensor<2x4xf32>)
  return %s : tensor<2x4x8x4xf32>
}

// -----

// Context parallelism: each of the 2 cp chunks is scanned from zero; the
// final states and decays gain a leading chunk dimension split over cp.
#act = #sl.layout<@mesh, [[], [cp], [tp]]>
#h = #sl.layout<@mesh, [[tp]]>
#st = #sl.layout<@mesh, [[cp], [], [tp], [], []]>
#dec = #sl.layout<@mesh, [[cp], [], [tp]]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$ACT:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], [tp]]>
// CHECK-DAG: #[[$ST:.*]] = #sl.layout<@mesh, {{\[}}[cp], [], [tp], [], []]>
// CHECK-DAG: #[[$DEC:.*]] = #sl.layout<@mesh, {{\[}}[cp], [], [tp]]>
// CHECK-LABEL: func.func @ssd_scan_chunked
// CHECK: sl.ssd_scan {{.*}} {chunk_axes = ["cp"], groups = 2 : i64, heads = 4 : i64} : ({{.*}}) -> (tensor<2x16x32xf32, #[[$ACT]]>, tensor<2x2x4x8x4xf32, #[[$ST]]>, tensor<2x2x4xf32, #[[$DEC]]>)
func.func @ssd_scan_chunked(%x: tensor<2x16x32xf32, #act>, %dt: tensor<2x16x4xf32, #act>, %a: tensor<4xf32, #h>, %bc: tensor<2x16x8xf32, #act>) -> (tensor<2x2x4x8x4xf32, #st>, tensor<2x2x4xf32, #dec>) {
  %y, %s, %d = sl.ssd_scan %x, %dt, %a, %bc, %bc, %a, %a {heads = 4, groups = 2, chunk_axes = ["cp"]} : (tensor<2x16x32xf32, #act>, tensor<2x16x4xf32, #act>, tensor<4xf32, #h>, tensor<2x16x8xf32, #act>, tensor<2x16x8xf32, #act>, tensor<4xf32, #h>, tensor<4xf32, #h>) -> (tensor<2x16x32xf32, #act>, tensor<2x2x4x8x4xf32, #st>, tensor<2x2x4xf32, #dec>)
  return %s, %d : tensor<2x2x4x8x4xf32, #st>, tensor<2x2x4xf32, #dec>
}

// -----

// In zigzag order the sequence is cut into 2 * cp = 4 chunks, and the
// summaries keep the zigzag order.
#act = #sl.layout<@mesh, [[], [cp] zigzag, []]>
#h = #sl.layout<@mesh, [[]]>
#st = #sl.layout<@mesh, [[cp] zigzag, [], [], [], []]>
#dec = #sl.layout<@mesh, [[cp] zigzag, [], []]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$ST:.*]] = #sl.layout<@mesh, {{\[}}[cp] zigzag, [], [], [], []]>
// CHECK-DAG: #[[$DEC:.*]] = #sl.layout<@mesh, {{\[}}[cp] zigzag, [], []]>
// CHECK-LABEL: func.func @ssd_scan_chunked_zigzag
// CHECK: sl.ssd_scan {{.*}} {chunk_axes = ["cp"], groups = 2 : i64, heads = 4 : i64} : ({{.*}}) -> (tensor<2x16x32xf32, #{{.*}}>, tensor<4x2x4x8x4xf32, #[[$ST]]>, tensor<4x2x4xf32, #[[$DEC]]>)
func.func @ssd_scan_chunked_zigzag(%x: tensor<2x16x32xf32, #act>, %dt: tensor<2x16x4xf32, #act>, %a: tensor<4xf32, #h>, %bc: tensor<2x16x8xf32, #act>) -> (tensor<4x2x4x8x4xf32, #st>, tensor<4x2x4xf32, #dec>) {
  %y, %s, %d = sl.ssd_scan %x, %dt, %a, %bc, %bc, %a, %a {heads = 4, groups = 2, chunk_axes = ["cp"]} : (tensor<2x16x32xf32, #act>, tensor<2x16x4xf32, #act>, tensor<4xf32, #h>, tensor<2x16x8xf32, #act>, tensor<2x16x8xf32, #act>, tensor<4xf32, #h>, tensor<4xf32, #h>) -> (tensor<2x16x32xf32, #act>, tensor<4x2x4x8x4xf32, #st>, tensor<4x2x4xf32, #dec>)
  return %s, %d : tensor<4x2x4x8x4xf32, #st>, tensor<4x2x4xf32, #dec>
}

// -----

// A chunked scan may also start from given per-chunk states.
#act = #sl.layout<@mesh, [[], [cp], []]>
#h = #sl.layout<@mesh, [[]]>
#st = #sl.layout<@mesh, [[cp], [], [], [], []]>
#dec = #sl.layout<@mesh, [[cp], [], []]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$ST:.*]] = #sl.layout<@mesh, {{\[}}[cp], [], [], [], []]>
// CHECK-LABEL: func.func @ssd_scan_chunked_state_in
// CHECK-SAME: %[[S0:[^:]*]]: tensor<2x2x4x8x4xf32, #[[$ST]]>)
// CHECK: sl.ssd_scan {{.*}} state_in %[[S0]] {chunk_axes = ["cp"], groups = 2 : i64, heads = 4 : i64}
func.func @ssd_scan_chunked_state_in(%x: tensor<2x16x32xf32, #act>, %dt: tensor<2x16x4xf32, #act>, %a: tensor<4xf32, #h>, %bc: tensor<2x16x8xf32, #act>, %s0: tensor<2x2x4x8x4xf32, #st>) -> tensor<2x2x4x8x4xf32, #st> {
  %y, %s, %d = sl.ssd_scan %x, %dt, %a, %bc, %bc, %a, %a state_in %s0 {heads = 4, groups = 2, chunk_axes = ["cp"]} : (tensor<2x16x32xf32, #act>, tensor<2x16x4xf32, #act>, tensor<4xf32, #h>, tensor<2x16x8xf32, #act>, tensor<2x16x8xf32, #act>, tensor<4xf32, #h>, tensor<4xf32, #h>, tensor<2x2x4x8x4xf32, #st>) -> (tensor<2x16x32xf32, #act>, tensor<2x2x4x8x4xf32, #st>, tensor<2x2x4xf32, #dec>)
  return %s : tensor<2x2x4x8x4xf32, #st>
}

// -----

// The correction adds each chunk's true initial state to its outputs.
#act = #sl.layout<@mesh, [[], [cp], [tp]]>
#h = #sl.layout<@mesh, [[tp]]>
#init = #sl.layout<@mesh, [[cp], [], [tp], [], []]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$ACT:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], [tp]]>
// CHECK-DAG: #[[$INIT:.*]] = #sl.layout<@mesh, {{\[}}[cp], [], [tp], [], []]>
// CHECK-LABEL: func.func @ssd_correct
// CHECK-SAME: (%[[Y:.*]]: tensor<2x16x32xf32, #[[$ACT]]>, %[[I:.*]]: tensor<2x2x4x8x4xf32, #[[$INIT]]>, %[[C:.*]]: tensor<2x16x8xf32, #[[$ACT]]>, %[[DT:.*]]: tensor<2x16x4xf32, #[[$ACT]]>, %[[A:.*]]: tensor<4xf32, #{{.*}}>)
// CHECK: sl.ssd_correct %[[Y]], %[[I]], %[[C]], %[[DT]], %[[A]], %[[A]] {chunk_axes = ["cp"], groups = 2 : i64, heads = 4 : i64} : ({{.*}}) -> tensor<2x16x32xf32, #[[$ACT]]>
func.func @ssd_correct(%y: tensor<2x16x32xf32, #act>, %init: tensor<2x2x4x8x4xf32, #init>, %c: tensor<2x16x8xf32, #act>, %dt: tensor<2x16x4xf32, #act>, %a: tensor<4xf32, #h>) -> tensor<2x16x32xf32, #act> {
  %r = sl.ssd_correct %y, %init, %c, %dt, %a, %a {heads = 4, groups = 2, chunk_axes = ["cp"]} : (tensor<2x16x32xf32, #act>, tensor<2x2x4x8x4xf32, #init>, tensor<2x16x8xf32, #act>, tensor<2x16x4xf32, #act>, tensor<4xf32, #h>, tensor<4xf32, #h>) -> tensor<2x16x32xf32, #act>
  return %r : tensor<2x16x32xf32, #act>
}

// -----

// RG-LRU with its width split over tp.
#act = #sl.layout<@mesh, [[], [], [tp]]>
#g = #sl.layout<@mesh, [[tp]]>
#st = #sl.layout<@mesh, [[], [tp]]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$ACT:.*]] = #sl.layout<@mesh, {{\[}}[], [], [tp]]>
// CHECK-DAG: #[[$ST:.*]] = #sl.layout<@mesh, {{\[}}[], [tp]]>
// CHECK-LABEL: func.func @rglru_scan
// CHECK-SAME: (%[[X:.*]]: tensor<2x16x32xf32, #[[$ACT]]>, %[[G:.*]]: tensor<32xf32, #{{.*}}>)
// CHECK: sl.rglru_scan %[[X]], %[[G]], %[[G]], %[[G]], %[[G]], %[[G]] : ({{.*}}) -> (tensor<2x16x32xf32, #[[$ACT]]>, tensor<2x32xf32, #[[$ST]]>, tensor<2x32xf32, #[[$ST]]>)
func.func @rglru_scan(%x: tensor<2x16x32xf32, #act>, %g: tensor<32xf32, #g>) -> tensor<2x16x32xf32, #act> {
  %y, %s, %d = sl.rglru_scan %x, %g, %g, %g, %g, %g : (tensor<2x16x32xf32, #act>, tensor<32xf32, #g>, tensor<32xf32, #g>, tensor<32xf32, #g>, tensor<32xf32, #g>, tensor<32xf32, #g>) -> (tensor<2x16x32xf32, #act>, tensor<2x32xf32, #st>, tensor<2x32xf32, #st>)
  return %y : tensor<2x16x32xf32, #act>
}

// -----

// CHECK-LABEL: func.func @rglru_scan_state_in
// CHECK-SAME: %[[S0:[^:]*]]: tensor<2x32xf32>)
// CHECK: sl.rglru_scan %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} state_in %[[S0]] : ({{.*}}, tensor<2x32xf32>) -> (tensor<2x16x32xf32>, tensor<2x32xf32>, tensor<2x32xf32>)
func.func @rglru_scan_state_in(%x: tensor<2x16x32xf32>, %g: tensor<32xf32>, %s0: tensor<2x32xf32>) -> tensor<2x32xf32> {
  %y, %s, %d = sl.rglru_scan %x, %g, %g, %g, %g, %g state_in %s0 : (tensor<2x16x32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<2x32xf32>) -> (tensor<2x16x32xf32>, tensor<2x32xf32>, tensor<2x32xf32>)
  return %s : tensor<2x32xf32>
}

// -----

#act = #sl.layout<@mesh, [[], [cp], [tp]]>
#g = #sl.layout<@mesh, [[tp]]>
#st = #sl.layout<@mesh, [[cp], [], [tp]]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$ACT:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], [tp]]>
// CHECK-DAG: #[[$ST:.*]] = #sl.layout<@mesh, {{\[}}[cp], [], [tp]]>
// CHECK-LABEL: func.func @rglru_scan_chunked
// CHECK: sl.rglru_scan {{.*}} {chunk_axes = ["cp"]} : ({{.*}}) -> (tensor<2x16x32xf32, #[[$ACT]]>, tensor<2x2x32xf32, #[[$ST]]>, tensor<2x2x32xf32, #[[$ST]]>)
func.func @rglru_scan_chunked(%x: tensor<2x16x32xf32, #act>, %g: tensor<32xf32, #g>) -> (tensor<2x2x32xf32, #st>, tensor<2x2x32xf32, #st>) {
  %y, %s, %d = sl.rglru_scan %x, %g, %g, %g, %g, %g {chunk_axes = ["cp"]} : (tensor<2x16x32xf32, #act>, tensor<32xf32, #g>, tensor<32xf32, #g>, tensor<32xf32, #g>, tensor<32xf32, #g>, tensor<32xf32, #g>) -> (tensor<2x16x32xf32, #act>, tensor<2x2x32xf32, #st>, tensor<2x2x32xf32, #st>)
  return %s, %d : tensor<2x2x32xf32, #st>, tensor<2x2x32xf32, #st>
}

// -----

#act = #sl.layout<@mesh, [[], [cp], [tp]]>
#g = #sl.layout<@mesh, [[tp]]>
#init = #sl.layout<@mesh, [[cp], [], [tp]]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$ACT:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], [tp]]>
// CHECK-DAG: #[[$INIT:.*]] = #sl.layout<@mesh, {{\[}}[cp], [], [tp]]>
// CHECK-LABEL: func.func @rglru_correct
// CHECK-SAME: (%[[Y:.*]]: tensor<2x16x32xf32, #[[$ACT]]>, %[[I:.*]]: tensor<2x2x32xf32, #[[$INIT]]>, %[[X:.*]]: tensor<2x16x32xf32, #[[$ACT]]>, %[[G:.*]]: tensor<32xf32, #{{.*}}>)
// CHECK: sl.rglru_correct %[[Y]], %[[I]], %[[X]], %[[G]], %[[G]], %[[G]] {chunk_axes = ["cp"]} : ({{.*}}) -> tensor<2x16x32xf32, #[[$ACT]]>
func.func @rglru_correct(%y: tensor<2x16x32xf32, #act>, %init: tensor<2x2x32xf32, #init>, %x: tensor<2x16x32xf32, #act>, %g: tensor<32xf32, #g>) -> tensor<2x16x32xf32, #act> {
  %r = sl.rglru_correct %y, %init, %x, %g, %g, %g {chunk_axes = ["cp"]} : (tensor<2x16x32xf32, #act>, tensor<2x2x32xf32, #init>, tensor<2x16x32xf32, #act>, tensor<32xf32, #g>, tensor<32xf32, #g>, tensor<32xf32, #g>) -> tensor<2x16x32xf32, #act>
  return %r : tensor<2x16x32xf32, #act>
}

// -----

// The router runs on the sequence-parallel stream.
#seq = #sl.layout<@mesh, [[], [cp, tp], []]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$SEQ:.*]] = #sl.layout<@mesh, {{\[}}[], [cp, tp], []]>
// CHECK-LABEL: func.func @router_topk
// CHECK: sl.router_topk %{{.*}} {k = 2 : i64} : (tensor<2x16x4xf32, #[[$SEQ]]>) -> (tensor<2x16x2xf32, #[[$SEQ]]>, tensor<2x16x2xi32, #[[$SEQ]]>)
func.func @router_topk(%l: tensor<2x16x4xf32, #seq>) -> (tensor<2x16x2xf32, #seq>, tensor<2x16x2xi32, #seq>) {
  %w, %i = sl.router_topk %l {k = 2} : (tensor<2x16x4xf32, #seq>) -> (tensor<2x16x2xf32, #seq>, tensor<2x16x2xi32, #seq>)
  return %w, %i : tensor<2x16x2xf32, #seq>, tensor<2x16x2xi32, #seq>
}

// -----

#seq = #sl.layout<@mesh, [[], [cp], []]>
#slots = #sl.layout<@mesh, [[], [], [cp], []]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$SEQ:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], []]>
// CHECK-DAG: #[[$SLOTS:.*]] = #sl.layout<@mesh, {{\[}}[], [], [cp], []]>
// CHECK-LABEL: func.func @moe_dispatch
// CHECK-SAME: (%[[X:.*]]: tensor<2x16x32xf32, #[[$SEQ]]>, %[[I:.*]]: tensor<2x16x2xi32, #[[$SEQ]]>)
// CHECK: sl.moe_dispatch %[[X]], %[[I]] {experts = 4 : i64} : (tensor<2x16x32xf32, #[[$SEQ]]>, tensor<2x16x2xi32, #[[$SEQ]]>) -> tensor<4x2x16x32xf32, #[[$SLOTS]]>
func.func @moe_dispatch(%x: tensor<2x16x32xf32, #seq>, %i: tensor<2x16x2xi32, #seq>) -> tensor<4x2x16x32xf32, #slots> {
  %t = sl.moe_dispatch %x, %i {experts = 4} : (tensor<2x16x32xf32, #seq>, tensor<2x16x2xi32, #seq>) -> tensor<4x2x16x32xf32, #slots>
  return %t : tensor<4x2x16x32xf32, #slots>
}

// -----

// Experts split over ep, each expert's FFN split over tp: the output is a
// pending sum over tp.
#tok = #sl.layout<@mesh, [[ep], [], [cp], []]>
#up = #sl.layout<@mesh, [[ep], [], [tp]]>
#down = #sl.layout<@mesh, [[ep], [tp], []]>
#out = #sl.layout<@mesh, [[ep], [], [cp], []], partial = [tp]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$TOK:.*]] = #sl.layout<@mesh, {{\[}}[ep], [], [cp], []]>
// CHECK-DAG: #[[$UP:.*]] = #sl.layout<@mesh, {{\[}}[ep], [], [tp]]>
// CHECK-DAG: #[[$DOWN:.*]] = #sl.layout<@mesh, {{\[}}[ep], [tp], []]>
// CHECK-DAG: #[[$OUT:.*]] = #sl.layout<@mesh, {{\[}}[ep], [], [cp], []], partial = [tp]>
// CHECK-LABEL: func.func @moe_experts
// CHECK-SAME: (%[[T:.*]]: tensor<4x2x16x32xf32, #[[$TOK]]>, %[[G:.*]]: tensor<4x32x64xf32, #[[$UP]]>, %[[U:.*]]: tensor<4x32x64xf32, #[[$UP]]>, %[[D:.*]]: tensor<4x64x32xf32, #[[$DOWN]]>)
// CHECK: sl.moe_experts %[[T]], %[[G]], %[[U]], %[[D]] : (tensor<4x2x16x32xf32, #[[$TOK]]>, tensor<4x32x64xf32, #[[$UP]]>, tensor<4x32x64xf32, #[[$UP]]>, tensor<4x64x32xf32, #[[$DOWN]]>) -> tensor<4x2x16x32xf32, #[[$OUT]]>
func.func @moe_experts(%t: tensor<4x2x16x32xf32, #tok>, %g: tensor<4x32x64xf32, #up>, %u: tensor<4x32x64xf32, #up>, %d: tensor<4x64x32xf32, #down>) -> tensor<4x2x16x32xf32, #out> {
  %e = sl.moe_experts %t, %g, %u, %d : (tensor<4x2x16x32xf32, #tok>, tensor<4x32x64xf32, #up>, tensor<4x32x64xf32, #up>, tensor<4x64x32xf32, #down>) -> tensor<4x2x16x32xf32, #out>
  return %e : tensor<4x2x16x32xf32, #out>
}

// -----

#slots = #sl.layout<@mesh, [[], [], [cp], []]>
#seq = #sl.layout<@mesh, [[], [cp], []]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$SLOTS:.*]] = #sl.layout<@mesh, {{\[}}[], [], [cp], []]>
// CHECK-DAG: #[[$SEQ:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], []]>
// CHECK-LABEL: func.func @moe_combine
// CHECK-SAME: (%[[E:.*]]: tensor<4x2x16x32xf32, #[[$SLOTS]]>, %[[W:.*]]: tensor<2x16x2xf32, #[[$SEQ]]>, %[[I:.*]]: tensor<2x16x2xi32, #[[$SEQ]]>)
// CHECK: sl.moe_combine %[[E]], %[[W]], %[[I]] : (tensor<4x2x16x32xf32, #[[$SLOTS]]>, tensor<2x16x2xf32, #[[$SEQ]]>, tensor<2x16x2xi32, #[[$SEQ]]>) -> tensor<2x16x32xf32, #[[$SEQ]]>
func.func @moe_combine(%e: tensor<4x2x16x32xf32, #slots>, %w: tensor<2x16x2xf32, #seq>, %i: tensor<2x16x2xi32, #seq>) -> tensor<2x16x32xf32, #seq> {
  %y = sl.moe_combine %e, %w, %i : (tensor<4x2x16x32xf32, #slots>, tensor<2x16x2xf32, #seq>, tensor<2x16x2xi32, #seq>) -> tensor<2x16x32xf32, #seq>
  return %y : tensor<2x16x32xf32, #seq>
}

// -----

// The residual add on the sequence-parallel stream.
#seq = #sl.layout<@mesh, [[], [cp, tp] zigzag, []]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$SEQ:.*]] = #sl.layout<@mesh, {{\[}}[], [cp, tp] zigzag, []]>
// CHECK-LABEL: func.func @add_residual
// CHECK-SAME: (%[[A:.*]]: tensor<2x16x32xf32, #[[$SEQ]]>, %[[B:.*]]: tensor<2x16x32xf32, #[[$SEQ]]>)
// CHECK: sl.add %[[A]], %[[B]] : (tensor<2x16x32xf32, #[[$SEQ]]>, tensor<2x16x32xf32, #[[$SEQ]]>) -> tensor<2x16x32xf32, #[[$SEQ]]>
func.func @add_residual(%a: tensor<2x16x32xf32, #seq>, %b: tensor<2x16x32xf32, #seq>) -> tensor<2x16x32xf32, #seq> {
  %r = sl.add %a, %b : (tensor<2x16x32xf32, #seq>, tensor<2x16x32xf32, #seq>) -> tensor<2x16x32xf32, #seq>
  return %r : tensor<2x16x32xf32, #seq>
}

// -----

// Two pending sums over the same axes add up to one.
#sum = #sl.layout<@mesh, [[], [cp], []], partial = [tp]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$SUM:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], []], partial = [tp]>
// CHECK-LABEL: func.func @add_pending_sums
// CHECK: sl.add %{{.*}}, %{{.*}} : (tensor<2x16x32xf32, #[[$SUM]]>, tensor<2x16x32xf32, #[[$SUM]]>) -> tensor<2x16x32xf32, #[[$SUM]]>
func.func @add_pending_sums(%a: tensor<2x16x32xf32, #sum>, %b: tensor<2x16x32xf32, #sum>) -> tensor<2x16x32xf32, #sum> {
  %r = sl.add %a, %b : (tensor<2x16x32xf32, #sum>, tensor<2x16x32xf32, #sum>) -> tensor<2x16x32xf32, #sum>
  return %r : tensor<2x16x32xf32, #sum>
}

// -----

// A product is linear in each factor: a pending sum times a whole value
// stays a pending sum.
#sum = #sl.layout<@mesh, [[], [cp], []], partial = [tp]>
#seq = #sl.layout<@mesh, [[], [cp], []]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$SUM:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], []], partial = [tp]>
// CHECK-DAG: #[[$SEQ:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], []]>
// CHECK-LABEL: func.func @mul_pending_sum
// CHECK: sl.mul %{{.*}}, %{{.*}} : (tensor<2x16x32xf32, #[[$SUM]]>, tensor<2x16x32xf32, #[[$SEQ]]>) -> tensor<2x16x32xf32, #[[$SUM]]>
func.func @mul_pending_sum(%a: tensor<2x16x32xf32, #sum>, %b: tensor<2x16x32xf32, #seq>) -> tensor<2x16x32xf32, #sum> {
  %r = sl.mul %a, %b : (tensor<2x16x32xf32, #sum>, tensor<2x16x32xf32, #seq>) -> tensor<2x16x32xf32, #sum>
  return %r : tensor<2x16x32xf32, #sum>
}

// -----

// SwiGLU between the column-parallel gate/up and the row-parallel down
// projections.
#col = #sl.layout<@mesh, [[], [cp], [tp]]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$COL:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], [tp]]>
// CHECK-LABEL: func.func @swiglu
// CHECK: sl.swiglu %{{.*}}, %{{.*}} : (tensor<2x16x64xf32, #[[$COL]]>, tensor<2x16x64xf32, #[[$COL]]>) -> tensor<2x16x64xf32, #[[$COL]]>
func.func @swiglu(%g: tensor<2x16x64xf32, #col>, %u: tensor<2x16x64xf32, #col>) -> tensor<2x16x64xf32, #col> {
  %r = sl.swiglu %g, %u : (tensor<2x16x64xf32, #col>, tensor<2x16x64xf32, #col>) -> tensor<2x16x64xf32, #col>
  return %r : tensor<2x16x64xf32, #col>
}

// -----

#col = #sl.layout<@mesh, [[], [cp], [tp]]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$COL:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], [tp]]>
// CHECK-LABEL: func.func @silu
// CHECK: sl.silu %{{.*}} : (tensor<2x16x64xf32, #[[$COL]]>) -> tensor<2x16x64xf32, #[[$COL]]>
func.func @silu(%x: tensor<2x16x64xf32, #col>) -> tensor<2x16x64xf32, #col> {
  %r = sl.silu %x : (tensor<2x16x64xf32, #col>) -> tensor<2x16x64xf32, #col>
  return %r : tensor<2x16x64xf32, #col>
}

// -----

#col = #sl.layout<@mesh, [[], [cp], [tp]]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$COL:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], [tp]]>
// CHECK-LABEL: func.func @gelu
// CHECK: sl.gelu %{{.*}} : (tensor<2x16x64xbf16, #[[$COL]]>) -> tensor<2x16x64xbf16, #[[$COL]]>
func.func @gelu(%x: tensor<2x16x64xbf16, #col>) -> tensor<2x16x64xbf16, #col> {
  %r = sl.gelu %x : (tensor<2x16x64xbf16, #col>) -> tensor<2x16x64xbf16, #col>
  return %r : tensor<2x16x64xbf16, #col>
}

// -----

// RG-LRU's gates: sigmoid on the width split over tp.
#col = #sl.layout<@mesh, [[], [cp], [tp]]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$COL:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], [tp]]>
// CHECK-LABEL: func.func @sigmoid
// CHECK: sl.sigmoid %{{.*}} : (tensor<2x16x32xf32, #[[$COL]]>) -> tensor<2x16x32xf32, #[[$COL]]>
func.func @sigmoid(%x: tensor<2x16x32xf32, #col>) -> tensor<2x16x32xf32, #col> {
  %r = sl.sigmoid %x : (tensor<2x16x32xf32, #col>) -> tensor<2x16x32xf32, #col>
  return %r : tensor<2x16x32xf32, #col>
}

// -----

// Mamba's dt: softplus on the heads split over tp.
#dt = #sl.layout<@mesh, [[], [cp], [tp]]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$DT:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], [tp]]>
// CHECK-LABEL: func.func @softplus
// CHECK: sl.softplus %{{.*}} : (tensor<2x16x4xf32, #[[$DT]]>) -> tensor<2x16x4xf32, #[[$DT]]>
func.func @softplus(%x: tensor<2x16x4xf32, #dt>) -> tensor<2x16x4xf32, #dt> {
  %r = sl.softplus %x : (tensor<2x16x4xf32, #dt>) -> tensor<2x16x4xf32, #dt>
  return %r : tensor<2x16x4xf32, #dt>
}

// -----

// Vocab-parallel logits.
#x = #sl.layout<@mesh, [[], [cp], []]>
#w = #sl.layout<@mesh, [[], [tp]]>
#logits = #sl.layout<@mesh, [[], [cp], [tp]]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$X:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], []]>
// CHECK-DAG: #[[$W:.*]] = #sl.layout<@mesh, {{\[}}[], [tp]]>
// CHECK-DAG: #[[$LOGITS:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], [tp]]>
// CHECK-LABEL: func.func @lm_head_vocab_parallel
// CHECK: sl.lm_head %{{.*}}, %{{.*}} : (tensor<2x16x32xf32, #[[$X]]>, tensor<32x64xf32, #[[$W]]>) -> tensor<2x16x64xf32, #[[$LOGITS]]>
func.func @lm_head_vocab_parallel(%x: tensor<2x16x32xf32, #x>, %w: tensor<32x64xf32, #w>) -> tensor<2x16x64xf32, #logits> {
  %l = sl.lm_head %x, %w : (tensor<2x16x32xf32, #x>, tensor<32x64xf32, #w>) -> tensor<2x16x64xf32, #logits>
  return %l : tensor<2x16x64xf32, #logits>
}

// -----

// Vocab-parallel cross-entropy: the vocabulary split over tp is named in
// vocab_axes; the loss is a pending sum over the token axes.
#logits = #sl.layout<@mesh, [[], [cp], [tp]]>
#labels = #sl.layout<@mesh, [[], [cp]]>
#loss = #sl.layout<@mesh, [], partial = [cp]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$LOGITS:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], [tp]]>
// CHECK-DAG: #[[$LABELS:.*]] = #sl.layout<@mesh, {{\[}}[], [cp]]>
// CHECK-DAG: #[[$LOSS:.*]] = #sl.layout<@mesh, [], partial = [cp]>
// CHECK-LABEL: func.func @cross_entropy_vocab_parallel
// CHECK: sl.cross_entropy %{{.*}}, %{{.*}} {vocab_axes = ["tp"]} : (tensor<2x16x64xf32, #[[$LOGITS]]>, tensor<2x16xi32, #[[$LABELS]]>) -> tensor<f32, #[[$LOSS]]>
func.func @cross_entropy_vocab_parallel(%l: tensor<2x16x64xf32, #logits>, %y: tensor<2x16xi32, #labels>) -> tensor<f32, #loss> {
  %loss = sl.cross_entropy %l, %y {vocab_axes = ["tp"]} : (tensor<2x16x64xf32, #logits>, tensor<2x16xi32, #labels>) -> tensor<f32, #loss>
  return %loss : tensor<f32, #loss>
}

// -----

// Without vocab_axes the vocabulary is whole; the tokens are split over
// (cp, tp), so the loss is a pending sum over both.
#logits = #sl.layout<@mesh, [[], [cp, tp], []]>
#labels = #sl.layout<@mesh, [[], [cp, tp]]>
#loss = #sl.layout<@mesh, [], partial = [cp, tp]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$LOGITS:.*]] = #sl.layout<@mesh, {{\[}}[], [cp, tp], []]>
// CHECK-DAG: #[[$LABELS:.*]] = #sl.layout<@mesh, {{\[}}[], [cp, tp]]>
// CHECK-DAG: #[[$LOSS:.*]] = #sl.layout<@mesh, [], partial = [cp, tp]>
// CHECK-LABEL: func.func @cross_entropy
// CHECK: sl.cross_entropy %{{.*}}, %{{.*}} : (tensor<2x16x64xf32, #[[$LOGITS]]>, tensor<2x16xi32, #[[$LABELS]]>) -> tensor<f32, #[[$LOSS]]>
func.func @cross_entropy(%l: tensor<2x16x64xf32, #logits>, %y: tensor<2x16xi32, #labels>) -> tensor<f32, #loss> {
  %loss = sl.cross_entropy %l, %y : (tensor<2x16x64xf32, #logits>, tensor<2x16xi32, #labels>) -> tensor<f32, #loss>
  return %loss : tensor<f32, #loss>
}

// -----

// Any change of layout, before sl-insert-collectives realises it.
#seq = #sl.layout<@mesh, [[], [cp, tp] zigzag, []]>
#col = #sl.layout<@mesh, [[], [cp], [tp]]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$SEQ:.*]] = #sl.layout<@mesh, {{\[}}[], [cp, tp] zigzag, []]>
// CHECK-DAG: #[[$COL:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], [tp]]>
// CHECK-LABEL: func.func @relayout
// CHECK: sl.relayout %{{.*}} : tensor<2x16x32xf32, #[[$SEQ]]> -> tensor<2x16x32xf32, #[[$COL]]>
func.func @relayout(%x: tensor<2x16x32xf32, #seq>) -> tensor<2x16x32xf32, #col> {
  %r = sl.relayout %x : tensor<2x16x32xf32, #seq> -> tensor<2x16x32xf32, #col>
  return %r : tensor<2x16x32xf32, #col>
}

// -----

// Sequence parallelism before a column-parallel block: gather the tp part
// of the (cp, tp) zigzag split; the cp split and its order stay.
#seq = #sl.layout<@mesh, [[], [cp, tp] zigzag, []]>
#cp = #sl.layout<@mesh, [[], [cp] zigzag, []]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$SEQ:.*]] = #sl.layout<@mesh, {{\[}}[], [cp, tp] zigzag, []]>
// CHECK-DAG: #[[$CP:.*]] = #sl.layout<@mesh, {{\[}}[], [cp] zigzag, []]>
// CHECK-LABEL: func.func @all_gather_sequence
// CHECK: sl.all_gather %{{.*}} {axes = ["tp"], dim = 1 : i64} : tensor<2x16x32xf32, #[[$SEQ]]> -> tensor<2x16x32xf32, #[[$CP]]>
func.func @all_gather_sequence(%x: tensor<2x16x32xf32, #seq>) -> tensor<2x16x32xf32, #cp> {
  %g = sl.all_gather %x {axes = ["tp"], dim = 1} : tensor<2x16x32xf32, #seq> -> tensor<2x16x32xf32, #cp>
  return %g : tensor<2x16x32xf32, #cp>
}

// -----

// After a row-parallel block: sum the pending sum over tp and split the
// sequence over tp at once.
#sum = #sl.layout<@mesh, [[], [cp] zigzag, []], partial = [tp]>
#seq = #sl.layout<@mesh, [[], [cp, tp] zigzag, []]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$SUM:.*]] = #sl.layout<@mesh, {{\[}}[], [cp] zigzag, []], partial = [tp]>
// CHECK-DAG: #[[$SEQ:.*]] = #sl.layout<@mesh, {{\[}}[], [cp, tp] zigzag, []]>
// CHECK-LABEL: func.func @reduce_scatter_sequence
// CHECK: sl.reduce_scatter %{{.*}} {axes = ["tp"], dim = 1 : i64} : tensor<2x16x32xf32, #[[$SUM]]> -> tensor<2x16x32xf32, #[[$SEQ]]>
func.func @reduce_scatter_sequence(%x: tensor<2x16x32xf32, #sum>) -> tensor<2x16x32xf32, #seq> {
  %r = sl.reduce_scatter %x {axes = ["tp"], dim = 1} : tensor<2x16x32xf32, #sum> -> tensor<2x16x32xf32, #seq>
  return %r : tensor<2x16x32xf32, #seq>
}

// -----

#sum = #sl.layout<@mesh, [[], [cp], []], partial = [tp]>
#seq = #sl.layout<@mesh, [[], [cp], []]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$SUM:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], []], partial = [tp]>
// CHECK-DAG: #[[$SEQ:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], []]>
// CHECK-LABEL: func.func @all_reduce
// CHECK: sl.all_reduce %{{.*}} {axes = ["tp"]} : tensor<2x16x32xf32, #[[$SUM]]> -> tensor<2x16x32xf32, #[[$SEQ]]>
func.func @all_reduce(%x: tensor<2x16x32xf32, #sum>) -> tensor<2x16x32xf32, #seq> {
  %r = sl.all_reduce %x {axes = ["tp"]} : tensor<2x16x32xf32, #sum> -> tensor<2x16x32xf32, #seq>
  return %r : tensor<2x16x32xf32, #seq>
}

// -----

// Expert parallelism: the dispatched slots move from a batch split over ep
// to an expert split over ep.
#bat = #sl.layout<@mesh, [[], [ep], [cp], []]>
#exp = #sl.layout<@mesh, [[ep], [], [cp], []]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$BAT:.*]] = #sl.layout<@mesh, {{\[}}[], [ep], [cp], []]>
// CHECK-DAG: #[[$EXP:.*]] = #sl.layout<@mesh, {{\[}}[ep], [], [cp], []]>
// CHECK-LABEL: func.func @all_to_all_experts
// CHECK: sl.all_to_all %{{.*}} {axes = ["ep"], concat_dim = 1 : i64, split_dim = 0 : i64} : tensor<4x2x16x32xf32, #[[$BAT]]> -> tensor<4x2x16x32xf32, #[[$EXP]]>
func.func @all_to_all_experts(%x: tensor<4x2x16x32xf32, #bat>) -> tensor<4x2x16x32xf32, #exp> {
  %r = sl.all_to_all %x {axes = ["ep"], split_dim = 0, concat_dim = 1} : tensor<4x2x16x32xf32, #bat> -> tensor<4x2x16x32xf32, #exp>
  return %r : tensor<4x2x16x32xf32, #exp>
}

// -----

// Ulysses: the sequence split over cp becomes a split of the heads.
#seq = #sl.layout<@mesh, [[], [cp], [tp]]>
#heads = #sl.layout<@mesh, [[], [], [tp, cp]]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$SEQ:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], [tp]]>
// CHECK-DAG: #[[$HEADS:.*]] = #sl.layout<@mesh, {{\[}}[], [], [tp, cp]]>
// CHECK-LABEL: func.func @all_to_all_sequence_to_heads
// CHECK: sl.all_to_all %{{.*}} {axes = ["cp"], concat_dim = 1 : i64, split_dim = 2 : i64} : tensor<2x16x32xf32, #[[$SEQ]]> -> tensor<2x16x32xf32, #[[$HEADS]]>
func.func @all_to_all_sequence_to_heads(%x: tensor<2x16x32xf32, #seq>) -> tensor<2x16x32xf32, #heads> {
  %r = sl.all_to_all %x {axes = ["cp"], split_dim = 2, concat_dim = 1} : tensor<2x16x32xf32, #seq> -> tensor<2x16x32xf32, #heads>
  return %r : tensor<2x16x32xf32, #heads>
}

// -----

// Entering sequence parallelism: each tp rank keeps its part of its cp
// shard, with no communication.
#cp = #sl.layout<@mesh, [[], [cp], []]>
#seq = #sl.layout<@mesh, [[], [cp, tp], []]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$CP:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], []]>
// CHECK-DAG: #[[$SEQ:.*]] = #sl.layout<@mesh, {{\[}}[], [cp, tp], []]>
// CHECK-LABEL: func.func @slice_sequence
// CHECK: sl.slice %{{.*}} {axes = ["tp"], dim = 1 : i64} : tensor<2x16x32xf32, #[[$CP]]> -> tensor<2x16x32xf32, #[[$SEQ]]>
func.func @slice_sequence(%x: tensor<2x16x32xf32, #cp>) -> tensor<2x16x32xf32, #seq> {
  %r = sl.slice %x {axes = ["tp"], dim = 1} : tensor<2x16x32xf32, #cp> -> tensor<2x16x32xf32, #seq>
  return %r : tensor<2x16x32xf32, #seq>
}

// -----

#contiguous = #sl.layout<@mesh, [[], [cp], []]>
#zigzag = #sl.layout<@mesh, [[], [cp] zigzag, []]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$CONT:.*]] = #sl.layout<@mesh, {{\[}}[], [cp], []]>
// CHECK-DAG: #[[$ZIG:.*]] = #sl.layout<@mesh, {{\[}}[], [cp] zigzag, []]>
// CHECK-LABEL: func.func @reorder_to_zigzag
// CHECK: sl.reorder %{{.*}} : tensor<2x16x32xf32, #[[$CONT]]> -> tensor<2x16x32xf32, #[[$ZIG]]>
func.func @reorder_to_zigzag(%x: tensor<2x16x32xf32, #contiguous>) -> tensor<2x16x32xf32, #zigzag> {
  %r = sl.reorder %x : tensor<2x16x32xf32, #contiguous> -> tensor<2x16x32xf32, #zigzag>
  return %r : tensor<2x16x32xf32, #zigzag>
}

// -----

// The 3 tokens before each chunk of a zigzag sequence: 2 * cp = 4 chunks.
#zigzag = #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$ZIG:.*]] = #sl.layout<@mesh, {{\[}}[], [cp] zigzag, [tp]]>
// CHECK-LABEL: func.func @halo_zigzag
// CHECK: sl.halo %{{.*}} {axes = ["cp"], width = 3 : i64} : tensor<2x16x32xf32, #[[$ZIG]]> -> tensor<2x12x32xf32, #[[$ZIG]]>
func.func @halo_zigzag(%x: tensor<2x16x32xf32, #zigzag>) -> tensor<2x12x32xf32, #zigzag> {
  %h = sl.halo %x {axes = ["cp"], width = 3} : tensor<2x16x32xf32, #zigzag> -> tensor<2x12x32xf32, #zigzag>
  return %h : tensor<2x12x32xf32, #zigzag>
}

// -----

#st = #sl.layout<@mesh, [[cp], [], [tp], [], []]>
#dec = #sl.layout<@mesh, [[cp], [], [tp]]>
sl.mesh @mesh(ep = 2, cp = 2, tp = 2)
// CHECK-DAG: #[[$ST:.*]] = #sl.layout<@mesh, {{\[}}[cp], [], [tp], [], []]>
// CHECK-DAG: #[[$DEC:.*]] = #sl.layout<@mesh, {{\[}}[cp], [], [tp]]>
// CHECK-LABEL: func.func @scan_state_exchange
// CHECK-SAME: (%[[S:.*]]: tensor<2x2x4x8x4xf32, #[[$ST]]>, %[[D:.*]]: tensor<2x2x4xf32, #[[$DEC]]>)
// CHECK: sl.scan_state_exchange %[[S]], %[[D]] {axes = ["cp"]} : (tensor<2x2x4x8x4xf32, #[[$ST]]>, tensor<2x2x4xf32, #[[$DEC]]>) -> tensor<2x2x4x8x4xf32, #[[$ST]]>
func.func @scan_state_exchange(%s: tensor<2x2x4x8x4xf32, #st>, %d: tensor<2x2x4xf32, #dec>) -> tensor<2x2x4x8x4xf32, #st> {
  %i = sl.scan_state_exchange %s, %d {axes = ["cp"]} : (tensor<2x2x4x8x4xf32, #st>, tensor<2x2x4xf32, #dec>) -> tensor<2x2x4x8x4xf32, #st>
  return %i : tensor<2x2x4x8x4xf32, #st>
}
