// RUN: shardline-opt %s -split-input-file -verify-diagnostics

//===----------------------------------------------------------------------===//
// sl.mesh
//===----------------------------------------------------------------------===//

// expected-error @+1 {{'sl.mesh' op declares axis 'tp' twice}}
sl.mesh @mesh(tp = 2, tp = 4)

// -----

// expected-error @+1 {{'sl.mesh' op axis 'tp' has size 0; sizes must be >= 1}}
sl.mesh @mesh(cp = 2, tp = 0)

// -----

// expected-error @+1 {{'sl.mesh' op has an axis with an empty name}}
sl.mesh @mesh("" = 2)

// -----

// expected-error @+1 {{'sl.mesh' op has 1 axes but 2 sizes}}
"sl.mesh"() <{sym_name = "mesh", axes = ["tp"], sizes = array<i64: 2, 4>}> : () -> ()

//===----------------------------------------------------------------------===//
// #sl.layout: parsing
//===----------------------------------------------------------------------===//

// -----

// expected-error @+1 {{expected a flat mesh symbol such as @mesh}}
func.func @nested_mesh_symbol(%x: tensor<8xf32, #sl.layout<@a::@b, [[tp]]>>) {
  return
}

// -----

// expected-error @+1 {{only one dimension may carry a chunk order}}
func.func @two_chunk_orders(%x: tensor<8x8xf32, #sl.layout<@mesh, [[cp] zigzag, [tp] zigzag]>>) {
  return
}

// -----

// expected-error @+1 {{a dimension takes one chunk order}}
func.func @two_orders_on_one_dim(%x: tensor<8xf32, #sl.layout<@mesh, [[cp] zigzag contiguous]>>) {
  return
}

// -----

// expected-error @+1 {{expected 'partial'}}
func.func @misspelt_partial(%x: tensor<8xf32, #sl.layout<@mesh, [[]], parial = [tp]>>) {
  return
}

//===----------------------------------------------------------------------===//
// #sl.layout: verification on its own
//===----------------------------------------------------------------------===//

// -----

// expected-error @+1 {{invalid layout: mesh axis 'tp' is used twice (again in dimension 1)}}
func.func @axis_in_two_dims(%x: tensor<8x8xf32, #sl.layout<@mesh, [[tp], [tp]]>>) {
  return
}

// -----

// expected-error @+1 {{invalid layout: mesh axis 'tp' is used twice (again in dimension 0)}}
func.func @axis_twice_in_one_dim(%x: tensor<8xf32, #sl.layout<@mesh, [[tp, tp]]>>) {
  return
}

// -----

// expected-error @+1 {{invalid layout: mesh axis 'tp' is used twice (again in partial)}}
func.func @axis_split_and_partial(%x: tensor<8xf32, #sl.layout<@mesh, [[tp]], partial = [tp]>>) {
  return
}

// -----

// expected-error @+1 {{invalid layout: zigzag order on dimension 1, which no axis splits}}
func.func @zigzag_unsplit(%x: tensor<2x8xf32, #sl.layout<@mesh, [[], [] zigzag]>>) {
  return
}

//===----------------------------------------------------------------------===//
// Layouts against the mesh and the shape (checked by the ops that use them)
//===----------------------------------------------------------------------===//

// -----

func.func @unknown_mesh(%x: tensor<8xf32, #sl.layout<@nomesh, [[tp]]>>) {
  // expected-error @+1 {{'sl.silu' op operand #0 refers to unknown mesh @nomesh}}
  %y = sl.silu %x : (tensor<8xf32, #sl.layout<@nomesh, [[tp]]>>) -> tensor<8xf32>
  return
}

// -----

// A symbol that is not a mesh.
func.func private @mesh()
func.func @not_a_mesh(%x: tensor<8xf32, #sl.layout<@mesh, [[]]>>) {
  // expected-error @+1 {{'sl.silu' op operand #0 refers to unknown mesh @mesh}}
  %y = sl.silu %x : (tensor<8xf32, #sl.layout<@mesh, [[]]>>) -> tensor<8xf32>
  return
}

// -----

sl.mesh @mesh(cp = 2, tp = 2)
func.func @unknown_axis(%x: tensor<8xf32, #sl.layout<@mesh, [[xp]]>>) {
  // expected-error @+1 {{'sl.silu' op operand #0 layout: unknown mesh axis 'xp' in dimension 0}}
  %y = sl.silu %x : (tensor<8xf32, #sl.layout<@mesh, [[xp]]>>) -> tensor<8xf32>
  return
}

// -----

sl.mesh @mesh(cp = 2, tp = 2)
func.func @unknown_partial_axis(%x: tensor<8xf32>) {
  // expected-error @+1 {{'sl.silu' op result #0 layout: unknown mesh axis 'xp' in partial}}
  %y = sl.silu %x : (tensor<8xf32>) -> tensor<8xf32, #sl.layout<@mesh, [[]], partial = [xp]>>
  return
}

// -----

sl.mesh @mesh(cp = 2, tp = 2)
func.func @layout_rank(%x: tensor<2x8xf32, #sl.layout<@mesh, [[]]>>) {
  // expected-error @+1 {{'sl.silu' op operand #0 layout: layout has 1 dimensions but the tensor has 2}}
  %y = sl.silu %x : (tensor<2x8xf32, #sl.layout<@mesh, [[]]>>) -> tensor<2x8xf32>
  return
}

// -----

sl.mesh @mesh(tp = 4)
func.func @split_does_not_divide(%x: tensor<6xf32, #sl.layout<@mesh, [[tp]]>>) {
  // expected-error @+1 {{'sl.silu' op operand #0 layout: dimension 0 of size 6 is not divisible by 4 (the size of [tp])}}
  %y = sl.silu %x : (tensor<6xf32, #sl.layout<@mesh, [[tp]]>>) -> tensor<6xf32>
  return
}

// -----

sl.mesh @mesh(cp = 2, tp = 2)
func.func @split_over_two_axes_does_not_divide(%x: tensor<2x6x4xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>) {
  // expected-error @+1 {{'sl.silu' op operand #0 layout: dimension 1 of size 6 is not divisible by 4 (the size of [cp, tp])}}
  %y = sl.silu %x : (tensor<2x6x4xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>) -> tensor<2x6x4xf32>
  return
}

// -----

// Zigzag over cp = 4 cuts the sequence into 8 chunks.
sl.mesh @mesh(cp = 4)
func.func @zigzag_needs_2n(%x: tensor<1x4x2xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>) {
  // expected-error @+1 {{'sl.silu' op operand #0 layout: dimension 1 of size 4 cannot be split in zigzag order over [cp] (needs a multiple of 8)}}
  %y = sl.silu %x : (tensor<1x4x2xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>) -> tensor<1x4x2xf32>
  return
}

// -----

sl.mesh @mesh(tp = 2)
func.func @integer_pending_sum(%ids: tensor<2x8xi32, #sl.layout<@mesh, [[], []], partial = [tp]>>, %t: tensor<16x4xf32>) {
  // expected-error @+1 {{'sl.embedding' op operand #0 is an integer tensor and cannot be a pending sum}}
  %e = sl.embedding %ids, %t : (tensor<2x8xi32, #sl.layout<@mesh, [[], []], partial = [tp]>>, tensor<16x4xf32>) -> tensor<2x8x4xf32>
  return
}

// -----

sl.mesh @a(tp = 2)
sl.mesh @b(tp = 2)
func.func @two_meshes(%x: tensor<8xf32, #sl.layout<@a, [[tp]]>>, %y: tensor<8xf32, #sl.layout<@b, [[tp]]>>) {
  // expected-error @+1 {{'sl.add' op operand #1 refers to mesh @b but other values use @a}}
  %z = sl.add %x, %y : (tensor<8xf32, #sl.layout<@a, [[tp]]>>, tensor<8xf32, #sl.layout<@b, [[tp]]>>) -> tensor<8xf32>
  return
}

//===----------------------------------------------------------------------===//
// Sharding rules
//===----------------------------------------------------------------------===//

// -----

#x = #sl.layout<@mesh, [[], [], [tp] zigzag]>
#w = #sl.layout<@mesh, [[tp], []]>
#y = #sl.layout<@mesh, [[], [], []], partial = [tp]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @chunk_order_not_on_sequence(%x: tensor<2x8x16xf32, #x>, %w: tensor<16x4xf32, #w>) {
  // expected-error @+1 {{'sl.linear' op operand #0 (x) dimension 2 (k) carries a chunk order but is not a sequence dimension}}
  %y = sl.linear %x, %w : (tensor<2x8x16xf32, #x>, tensor<16x4xf32, #w>) -> tensor<2x8x4xf32, #y>
  return
}

// -----

// Sequence parallelism keeps the normalised dimension whole: a split over tp
// of the hidden dimension needs a gather first.
#x = #sl.layout<@mesh, [[], [cp], [tp]]>
#w = #sl.layout<@mesh, [[tp]]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @rms_norm_hidden_split(%x: tensor<2x8x16xf32, #x>, %w: tensor<16xf32, #w>) {
  // expected-error @+1 {{'sl.rms_norm' op operand #0 (x) dimension 2 (h) is split over [tp] but the op needs it whole; gather it first}}
  %y = sl.rms_norm %x, %w : (tensor<2x8x16xf32, #x>, tensor<16xf32, #w>) -> tensor<2x8x16xf32, #x>
  return
}

// -----

#x = #sl.layout<@mesh, [[], [cp], []]>
#w = #sl.layout<@mesh, [[tp]]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @rms_norm_weight_split(%x: tensor<2x8x16xf32, #x>, %w: tensor<16xf32, #w>) {
  // expected-error @+1 {{'sl.rms_norm' op operand #1 (weight) dimension 0 (h) is split over [tp] but operand #0 (x) dimension 2 (h) is split over []}}
  %y = sl.rms_norm %x, %w : (tensor<2x8x16xf32, #x>, tensor<16xf32, #w>) -> tensor<2x8x16xf32, #x>
  return
}

// -----

#q = #sl.layout<@mesh, [[], [cp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @attention_keys_split(%q: tensor<1x8x16xf32, #q>, %k: tensor<1x8x8xf32, #q>) {
  // expected-error @+1 {{'sl.attention' op operand #1 (k) dimension 1 (t) is sequence-mixing and split over [cp] without a remedy for 'cp': exchange keys and values (sl.ring_attention over these axes, an all-gather of K and V, or an all-to-all sequence<->heads)}}
  %o = sl.attention %q, %k, %k {heads = 4, kv_heads = 2} : (tensor<1x8x16xf32, #q>, tensor<1x8x8xf32, #q>, tensor<1x8x8xf32, #q>) -> tensor<1x8x16xf32, #q>
  return
}

// -----

// The ring runs over cp only; the sequence is also split over tp.
#q = #sl.layout<@mesh, [[], [cp, tp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @ring_attention_axis_missing(%q: tensor<1x8x16xf32, #q>, %k: tensor<1x8x8xf32, #q>) {
  // expected-error @+1 {{'sl.ring_attention' op axes must be the axes that split the sequence of q, [cp, tp]}}
  %o = sl.ring_attention %q, %k, %k {heads = 4, kv_heads = 2, axes = ["cp"]} : (tensor<1x8x16xf32, #q>, tensor<1x8x8xf32, #q>, tensor<1x8x8xf32, #q>) -> tensor<1x8x16xf32, #q>
  return
}

// -----

#q = #sl.layout<@mesh, [[], [cp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @local_attention_split_without_halo(%q: tensor<1x8x16xf32, #q>, %k: tensor<1x8x8xf32, #q>) {
  // expected-error @+1 {{'sl.local_attention' op operand #0 (q) dimension 1 (s) is sequence-mixing and split over [cp] without a remedy for 'cp': pass the preceding tokens as a halo operand (sl.halo over these axes)}}
  %o = sl.local_attention %q, %k, %k {heads = 4, kv_heads = 2, window = 3} : (tensor<1x8x16xf32, #q>, tensor<1x8x8xf32, #q>, tensor<1x8x8xf32, #q>) -> tensor<1x8x16xf32, #q>
  return
}

// -----

func.func @local_attention_window(%q: tensor<1x8x16xf32>, %k: tensor<1x8x8xf32>) {
  // expected-error @+1 {{'sl.local_attention' op window must be positive, got 0}}
  %o = sl.local_attention %q, %k, %k {heads = 4, kv_heads = 2, window = 0} : (tensor<1x8x16xf32>, tensor<1x8x8xf32>, tensor<1x8x8xf32>) -> tensor<1x8x16xf32>
  return
}

// -----

func.func @local_attention_heads(%q: tensor<1x8x16xf32>, %k: tensor<1x8x8xf32>) {
  // expected-error @+1 {{'sl.local_attention' op heads (4) must be a positive multiple of kv_heads (3)}}
  %o = sl.local_attention %q, %k, %k {heads = 4, kv_heads = 3, window = 2} : (tensor<1x8x16xf32>, tensor<1x8x8xf32>, tensor<1x8x8xf32>) -> tensor<1x8x16xf32>
  return
}

// -----

func.func @local_attention_key_sequence(%q: tensor<1x8x16xf32>, %k: tensor<1x4x8xf32>) {
  // expected-error @+1 {{'sl.local_attention' op k dimension 1 must be 8 (sequence), got 4}}
  %o = sl.local_attention %q, %k, %k {heads = 4, kv_heads = 2, window = 2} : (tensor<1x8x16xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x8x16xf32>
  return
}

// -----

func.func @local_attention_halo_unsplit(%q: tensor<1x8x16xf32>, %k: tensor<1x8x8xf32>, %h: tensor<1x2x8xf32>) {
  // expected-error @+1 {{'sl.local_attention' op has a halo but k's sequence is not split}}
  %o = sl.local_attention %q, %k, %k halo %h, %h {heads = 4, kv_heads = 2, window = 3} : (tensor<1x8x16xf32>, tensor<1x8x8xf32>, tensor<1x8x8xf32>, tensor<1x2x8xf32>, tensor<1x2x8xf32>) -> tensor<1x8x16xf32>
  return
}

// -----

func.func @local_attention_one_halo(%q: tensor<1x8x16xf32>, %k: tensor<1x8x8xf32>, %h: tensor<1x2x8xf32>) {
  // expected-error @+1 {{'sl.local_attention' op needs both k_halo and v_halo or neither}}
  %o = "sl.local_attention"(%q, %k, %k, %h) <{heads = 4 : i64, kv_heads = 2 : i64, window = 3 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 1, 0>}> : (tensor<1x8x16xf32>, tensor<1x8x8xf32>, tensor<1x8x8xf32>, tensor<1x2x8xf32>) -> tensor<1x8x16xf32>
  return
}

// -----

// Window 3 over 2 chunks of 4: each chunk needs the 2 tokens before it.
#q = #sl.layout<@mesh, [[], [cp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @local_attention_halo_tokens(%q: tensor<1x8x16xf32, #q>, %k: tensor<1x8x8xf32, #q>, %h: tensor<1x6x8xf32, #q>) {
  // expected-error @+1 {{'sl.local_attention' op k_halo holds 6 tokens but k's 2 sequence chunks need 2 * 2}}
  %o = sl.local_attention %q, %k, %k halo %h, %h {heads = 4, kv_heads = 2, window = 3} : (tensor<1x8x16xf32, #q>, tensor<1x8x8xf32, #q>, tensor<1x8x8xf32, #q>, tensor<1x6x8xf32, #q>, tensor<1x6x8xf32, #q>) -> tensor<1x8x16xf32, #q>
  return
}

// -----

// Window 5 over 2 chunks: the 4 tokens before each, but split over tp.
#q = #sl.layout<@mesh, [[], [cp], []]>
#t = #sl.layout<@mesh, [[], [tp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @local_attention_halo_split(%q: tensor<1x8x16xf32, #q>, %k: tensor<1x8x8xf32, #q>, %h: tensor<1x8x8xf32, #t>) {
  // expected-error @+1 {{'sl.local_attention' op k_halo must split its sequence like k}}
  %o = sl.local_attention %q, %k, %k halo %h, %h {heads = 4, kv_heads = 2, window = 5} : (tensor<1x8x16xf32, #q>, tensor<1x8x8xf32, #q>, tensor<1x8x8xf32, #q>, tensor<1x8x8xf32, #t>, tensor<1x8x8xf32, #t>) -> tensor<1x8x16xf32, #q>
  return
}

// -----

#x = #sl.layout<@mesh, [[], [cp], []]>
#w = #sl.layout<@mesh, [[], []]>
#b = #sl.layout<@mesh, [[]]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @conv_sequence_split_without_halo(%x: tensor<1x8x4xf32, #x>, %w: tensor<4x4xf32, #w>, %b: tensor<4xf32, #b>) {
  // expected-error @+1 {{'sl.causal_conv1d' op operand #0 (x) dimension 1 (s) is sequence-mixing and split over [cp] without a remedy for 'cp': pass the preceding tokens as a halo operand (sl.halo over these axes)}}
  %y = sl.causal_conv1d %x, %w, %b : (tensor<1x8x4xf32, #x>, tensor<4x4xf32, #w>, tensor<4xf32, #b>) -> tensor<1x8x4xf32, #x>
  return
}

// -----

#x = #sl.layout<@mesh, [[], [cp], []]>
#g = #sl.layout<@mesh, [[]]>
#s = #sl.layout<@mesh, [[], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @scan_split_without_chunk_axes(%x: tensor<1x8x4xf32, #x>, %g: tensor<4xf32, #g>) {
  // expected-error @+1 {{'sl.rglru_scan' op operand #0 (x) dimension 1 (s) is sequence-mixing and split over [cp] without a remedy for 'cp': scan chunks from zero with chunk_axes and pass states (sl.scan_state_exchange)}}
  %y, %st, %d = sl.rglru_scan %x, %g, %g, %g, %g, %g : (tensor<1x8x4xf32, #x>, tensor<4xf32, #g>, tensor<4xf32, #g>, tensor<4xf32, #g>, tensor<4xf32, #g>, tensor<4xf32, #g>) -> (tensor<1x8x4xf32, #x>, tensor<1x4xf32, #s>, tensor<1x4xf32, #s>)
  return
}

// -----

#x = #sl.layout<@mesh, [[], [cp], []]>
#y = #sl.layout<@mesh, [[], [cp]]>
#loss = #sl.layout<@mesh, [], partial = [cp]>
#logits = #sl.layout<@mesh, [[], [cp], [tp]]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @cross_entropy_vocab_split_without_vocab_axes(%l: tensor<2x8x32xf32, #logits>, %y: tensor<2x8xi32, #y>) {
  // expected-error @+1 {{'sl.cross_entropy' op operand #0 (logits) dimension 2 (v) is sequence-mixing and split over [tp] without a remedy for 'tp': name the axes in vocab_axes (vocab-parallel cross-entropy)}}
  %loss = sl.cross_entropy %l, %y : (tensor<2x8x32xf32, #logits>, tensor<2x8xi32, #y>) -> tensor<f32, #loss>
  return
}

// -----

#sum = #sl.layout<@mesh, [[]], partial = [tp]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @nonlinear_on_pending_sum(%x: tensor<8xf32, #sum>) {
  // expected-error @+1 {{'sl.silu' op operand #0 (x) is a pending sum over [tp] but the op is not linear in it; all-reduce or reduce-scatter it first}}
  %y = sl.silu %x : (tensor<8xf32, #sum>) -> tensor<8xf32, #sum>
  return
}

// -----

#sum = #sl.layout<@mesh, [[], [], []], partial = [tp]>
#w = #sl.layout<@mesh, [[]]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @rms_norm_on_pending_sum(%x: tensor<2x8x16xf32, #sum>, %w: tensor<16xf32, #w>) {
  // expected-error @+1 {{'sl.rms_norm' op operand #0 (x) is a pending sum over [tp] but the op is not linear in it; all-reduce or reduce-scatter it first}}
  %y = sl.rms_norm %x, %w : (tensor<2x8x16xf32, #sum>, tensor<16xf32, #w>) -> tensor<2x8x16xf32, #sum>
  return
}

// -----

#sum = #sl.layout<@mesh, [[]], partial = [tp]>
#rep = #sl.layout<@mesh, [[]]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @add_pending_sum_and_whole(%x: tensor<8xf32, #sum>, %y: tensor<8xf32, #rep>) {
  // expected-error @+1 {{'sl.add' op operand #1 (rhs) is not a pending sum but operand #0 (lhs) is one over [tp]; a sum needs the same pending sum in every operand}}
  %z = sl.add %x, %y : (tensor<8xf32, #sum>, tensor<8xf32, #rep>) -> tensor<8xf32, #sum>
  return
}

// -----

#tp = #sl.layout<@mesh, [[]], partial = [tp]>
#cp = #sl.layout<@mesh, [[]], partial = [cp]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @add_different_pending_sums(%x: tensor<8xf32, #tp>, %y: tensor<8xf32, #cp>) {
  // expected-error @+1 {{'sl.add' op operand #0 (lhs) is a pending sum over [tp] but operand #1 (rhs) is one over [cp]; a sum needs the same pending sum in every operand}}
  %z = sl.add %x, %y : (tensor<8xf32, #tp>, tensor<8xf32, #cp>) -> tensor<8xf32, #tp>
  return
}

// -----

#sum = #sl.layout<@mesh, [[]], partial = [tp]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @mul_two_pending_sums(%x: tensor<8xf32, #sum>, %y: tensor<8xf32, #sum>) {
  // expected-error @+1 {{'sl.mul' op operand #1 (rhs) and operand #0 (lhs) are both pending sums; the op is linear in each operand separately, so at most one may be}}
  %z = sl.mul %x, %y : (tensor<8xf32, #sum>, tensor<8xf32, #sum>) -> tensor<8xf32, #sum>
  return
}

// -----

#x = #sl.layout<@mesh, [[], [], [tp]]>
#w = #sl.layout<@mesh, [[], []]>
#y = #sl.layout<@mesh, [[], [], []], partial = [tp]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @linear_contraction_mismatch(%x: tensor<2x8x16xf32, #x>, %w: tensor<16x4xf32, #w>) {
  // expected-error @+1 {{'sl.linear' op operand #1 (weight) dimension 0 (k) is split over [] but operand #0 (x) dimension 2 (k) is split over [tp]}}
  %y = sl.linear %x, %w : (tensor<2x8x16xf32, #x>, tensor<16x4xf32, #w>) -> tensor<2x8x4xf32, #y>
  return
}

// -----

// Row-parallel: the result is a pending sum, not a split of the features.
#x = #sl.layout<@mesh, [[], [], [tp]]>
#w = #sl.layout<@mesh, [[tp], []]>
#y = #sl.layout<@mesh, [[], [], [tp]]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @linear_result_layout(%x: tensor<2x8x16xf32, #x>, %w: tensor<16x4xf32, #w>) {
  // expected-error @+1 {{'sl.linear' op result #0 (result) has layout [[], [], [tp]] but the operands' layouts give [[], [], []], partial = [tp]}}
  %y = sl.linear %x, %w : (tensor<2x8x16xf32, #x>, tensor<16x4xf32, #w>) -> tensor<2x8x4xf32, #y>
  return
}

// -----

// The zigzag order of the operands flows to the result.
#zig = #sl.layout<@mesh, [[], [cp] zigzag, []]>
#cont = #sl.layout<@mesh, [[], [cp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @elementwise_result_order(%x: tensor<2x8x16xf32, #zig>) {
  // expected-error @+1 {{'sl.silu' op result #0 (result) has layout [[], [cp], []] but the operands' layouts give [[], [cp] zigzag, []]}}
  %y = sl.silu %x : (tensor<2x8x16xf32, #zig>) -> tensor<2x8x16xf32, #cont>
  return
}

// -----

#zig = #sl.layout<@mesh, [[], [cp] zigzag, []]>
#cont = #sl.layout<@mesh, [[], [cp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @add_different_orders(%x: tensor<2x8x16xf32, #zig>, %y: tensor<2x8x16xf32, #cont>) {
  // expected-error @+1 {{'sl.add' op operand #1 (rhs) dimension 1 (s) and operand #0 (lhs) dimension 1 (s) have different chunk orders}}
  %z = sl.add %x, %y : (tensor<2x8x16xf32, #zig>, tensor<2x8x16xf32, #cont>) -> tensor<2x8x16xf32, #zig>
  return
}

// -----

// Column-parallel output features and tokens split over the same axis.
#x = #sl.layout<@mesh, [[], [tp], []]>
#w = #sl.layout<@mesh, [[], [tp]]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @derived_layout_invalid(%x: tensor<2x8x16xf32, #x>, %w: tensor<16x4xf32, #w>) {
  // expected-error @+1 {{'sl.linear' op the layout derived for result #0 is invalid: mesh axis 'tp' is used twice (again in dimension 2)}}
  %y = sl.linear %x, %w : (tensor<2x8x16xf32, #x>, tensor<16x4xf32, #w>) -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [tp], []]>>
  return
}

// -----

// Two heads of 8 channels cannot be split 4 ways.
#x = #sl.layout<@mesh, [[], [], [tp]]>
sl.mesh @mesh(tp = 4)
func.func @rope_split_cuts_heads(%x: tensor<1x8x16xf32, #x>) {
  // expected-error @+1 {{'sl.rope' op operand #0 (x) dimension 2 (heads) is split 4 ways over [tp], which does not divide its 2 heads}}
  %y = sl.rope %x {head_dim = 8} : (tensor<1x8x16xf32, #x>) -> tensor<1x8x16xf32, #x>
  return
}

// -----

// 8 query heads share 2 kv heads: a 4-way split would cut the kv heads (the
// granule of the heads factor is kv_heads).
#x = #sl.layout<@mesh, [[], [], [tp]]>
sl.mesh @mesh(tp = 4)
func.func @attention_split_cuts_kv_heads(%q: tensor<1x8x64xf32, #x>, %k: tensor<1x8x16xf32, #x>) {
  // expected-error @+1 {{'sl.attention' op operand #0 (q) dimension 2 (heads) is split 4 ways over [tp], which does not divide its 2 kv heads}}
  %o = sl.attention %q, %k, %k {heads = 8, kv_heads = 2} : (tensor<1x8x64xf32, #x>, tensor<1x8x16xf32, #x>, tensor<1x8x16xf32, #x>) -> tensor<1x8x64xf32, #x>
  return
}

// -----

#x = #sl.layout<@mesh, [[], [], [tp]]>
#w = #sl.layout<@mesh, [[tp]]>
sl.mesh @mesh(tp = 4)
func.func @gated_norm_split_cuts_groups(%y: tensor<1x8x16xf32, #x>, %w: tensor<16xf32, #w>) {
  // expected-error @+1 {{'sl.gated_rms_norm' op operand #0 (y) dimension 2 (groups) is split 4 ways over [tp], which does not divide its 2 groups}}
  %r = sl.gated_rms_norm %y, %y, %w {groups = 2} : (tensor<1x8x16xf32, #x>, tensor<1x8x16xf32, #x>, tensor<16xf32, #w>) -> tensor<1x8x16xf32, #x>
  return
}

// -----

// 4 heads in 2 groups: a 4-way split of the heads would cut the groups.
#act = #sl.layout<@mesh, [[], [], [tp]]>
#h = #sl.layout<@mesh, [[tp]]>
#st = #sl.layout<@mesh, [[], [tp], [], []]>
#dec = #sl.layout<@mesh, [[], [tp]]>
sl.mesh @mesh(tp = 4)
func.func @ssd_split_cuts_groups(%x: tensor<1x8x16xf32, #act>, %dt: tensor<1x8x4xf32, #act>, %a: tensor<4xf32, #h>, %bc: tensor<1x8x8xf32, #act>) {
  // expected-error @+1 {{'sl.ssd_scan' op operand #0 (x) dimension 2 (groups) is split 4 ways over [tp], which does not divide its 2 groups}}
  %y, %s, %d = sl.ssd_scan %x, %dt, %a, %bc, %bc, %a, %a {heads = 4, groups = 2} : (tensor<1x8x16xf32, #act>, tensor<1x8x4xf32, #act>, tensor<4xf32, #h>, tensor<1x8x8xf32, #act>, tensor<1x8x8xf32, #act>, tensor<4xf32, #h>, tensor<4xf32, #h>) -> (tensor<1x8x16xf32, #act>, tensor<1x4x4x4xf32, #st>, tensor<1x4xf32, #dec>)
  return
}

// -----

// The router needs all the experts' logits of a token.
#x = #sl.layout<@mesh, [[], [], [tp]]>
#r = #sl.layout<@mesh, [[], [], []]>
sl.mesh @mesh(tp = 2)
func.func @router_experts_split(%l: tensor<2x8x4xf32, #x>) {
  // expected-error @+1 {{'sl.router_topk' op operand #0 (logits) dimension 2 (experts) is split over [tp] but the op needs it whole; gather it first}}
  %w, %i = sl.router_topk %l {k = 2} : (tensor<2x8x4xf32, #x>) -> (tensor<2x8x2xf32, #r>, tensor<2x8x2xi32, #r>)
  return
}

//===----------------------------------------------------------------------===//
// sl.weight
//===----------------------------------------------------------------------===//

// -----

func.func @weight_bad_init() {
  // expected-error @+1 {{'sl.weight' op init must be 'normal', 'uniform', 'constant' or 'copy', got 'zeros'}}
  %w = sl.weight "w" {init = "zeros"} : tensor<4xf32>
  return
}

// -----

func.func @weight_empty_name() {
  // expected-error @+1 {{'sl.weight' op needs a non-empty name}}
  %w = sl.weight "" : tensor<4xf32>
  return
}

// -----

func.func @weight_negative_scale() {
  // expected-error @+1 {{'sl.weight' op scale must be non-negative}}
  %w = sl.weight "w" {scale = -1.0 : f64} : tensor<4xf32>
  return
}

// -----

func.func @weight_dynamic() {
  // expected-error @+1 {{'sl.weight' op must have a static shape}}
  %w = sl.weight "w" : tensor<?xf32>
  return
}

// -----

func.func @weight_integer() {
  // expected-error @+1 {{'sl.weight' op result #0 must be ranked tensor of 32-bit float or bfloat16 type or 16-bit float values}}
  %w = sl.weight "w" : tensor<4xi32>
  return
}

// -----

sl.mesh @mesh(tp = 2)
func.func @weight_pending_sum() {
  // expected-error @+1 {{'sl.weight' op a weight cannot be a pending sum}}
  %w = sl.weight "w" : tensor<4xf32, #sl.layout<@mesh, [[]], partial = [tp]>>
  return
}

// -----

func.func @weight_unknown_mesh() {
  // expected-error @+1 {{'sl.weight' op result #0 refers to unknown mesh @mesh}}
  %w = sl.weight "w" : tensor<4xf32, #sl.layout<@mesh, [[tp]]>>
  return
}

//===----------------------------------------------------------------------===//
// Shapes and attributes of the compute ops
//===----------------------------------------------------------------------===//

// -----

func.func @element_types_differ(%x: tensor<8xf32>, %y: tensor<8xbf16>) {
  // expected-error @+1 {{'sl.add' op operand #1 has element type 'bf16' but 'f32' is used elsewhere in the op}}
  %z = sl.add %x, %y : (tensor<8xf32>, tensor<8xbf16>) -> tensor<8xf32>
  return
}

// -----

func.func @dynamic_shape(%x: tensor<?xf32>) {
  // expected-error @+1 {{'sl.silu' op operand #0 must have a static shape, got 'tensor<?xf32>'}}
  %z = sl.silu %x : (tensor<?xf32>) -> tensor<?xf32>
  return
}

// -----

// A dynamic shape is reported as such, even with a layout.
sl.mesh @mesh(tp = 2)
func.func @dynamic_shape_with_layout(%x: tensor<?xf32, #sl.layout<@mesh, [[tp]]>>) {
  // expected-error @+1 {{'sl.silu' op operand #0 must have a static shape}}
  %z = sl.silu %x : (tensor<?xf32, #sl.layout<@mesh, [[tp]]>>) -> tensor<?xf32, #sl.layout<@mesh, [[tp]]>>
  return
}

// -----

func.func @elementwise_shapes_differ(%x: tensor<8xf32>, %y: tensor<4xf32>) {
  // expected-error @+1 {{'sl.mul' op failed to verify that all of {lhs, rhs, result} have same shape}}
  %z = sl.mul %x, %y : (tensor<8xf32>, tensor<4xf32>) -> tensor<8xf32>
  return
}

// -----

func.func @embedding_ids_rank(%ids: tensor<16xi32>, %t: tensor<64x32xf32>) {
  // expected-error @+1 {{'sl.embedding' op ids must have rank 2, got 'tensor<16xi32>'}}
  %e = sl.embedding %ids, %t : (tensor<16xi32>, tensor<64x32xf32>) -> tensor<1x16x32xf32>
  return
}

// -----

func.func @embedding_width(%ids: tensor<2x16xi32>, %t: tensor<64x32xf32>) {
  // expected-error @+1 {{'sl.embedding' op result dimension 2 must be 32 (table width), got 16}}
  %e = sl.embedding %ids, %t : (tensor<2x16xi32>, tensor<64x32xf32>) -> tensor<2x16x16xf32>
  return
}

// -----

func.func @embedding_float_ids(%ids: tensor<2x16xf32>, %t: tensor<64x32xf32>) {
  // expected-error @+1 {{'sl.embedding' op operand #0 must be ranked tensor of 32-bit signless integer values}}
  %e = sl.embedding %ids, %t : (tensor<2x16xf32>, tensor<64x32xf32>) -> tensor<2x16x32xf32>
  return
}

// -----

func.func @rms_norm_rank0(%x: tensor<f32>, %w: tensor<1xf32>) {
  // expected-error @+1 {{'sl.rms_norm' op x must have rank >= 1}}
  %y = sl.rms_norm %x, %w : (tensor<f32>, tensor<1xf32>) -> tensor<f32>
  return
}

// -----

// A rank-0 x with layouts is a shape error too (the rule cannot describe it).
sl.mesh @mesh(tp = 2)
func.func @rms_norm_rank0_with_layout(%x: tensor<f32, #sl.layout<@mesh, []>>, %w: tensor<1xf32, #sl.layout<@mesh, [[]]>>) {
  // expected-error @+1 {{'sl.rms_norm' op x must have rank >= 1}}
  %y = sl.rms_norm %x, %w : (tensor<f32, #sl.layout<@mesh, []>>, tensor<1xf32, #sl.layout<@mesh, [[]]>>) -> tensor<f32, #sl.layout<@mesh, []>>
  return
}

// -----

func.func @rms_norm_weight(%x: tensor<2x8x16xf32>, %w: tensor<8xf32>) {
  // expected-error @+1 {{'sl.rms_norm' op weight dimension 0 must be 16 (normalised dimension of x), got 8}}
  %y = sl.rms_norm %x, %w : (tensor<2x8x16xf32>, tensor<8xf32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @rms_norm_result(%x: tensor<2x8x16xf32>, %w: tensor<16xf32>) {
  // expected-error @+1 {{'sl.rms_norm' op failed to verify that all of {x, result} have same shape}}
  %y = sl.rms_norm %x, %w : (tensor<2x8x16xf32>, tensor<16xf32>) -> tensor<2x16x8xf32>
  return
}

// -----

func.func @rms_norm_eps(%x: tensor<2x8x16xf32>, %w: tensor<16xf32>) {
  // expected-error @+1 {{'sl.rms_norm' op eps must be positive}}
  %y = sl.rms_norm %x, %w {eps = 0.0 : f64} : (tensor<2x8x16xf32>, tensor<16xf32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @gated_norm_shapes(%y: tensor<2x8x16xf32>, %z: tensor<2x8x8xf32>, %w: tensor<16xf32>) {
  // expected-error @+1 {{'sl.gated_rms_norm' op failed to verify that all of {y, z, result} have same shape}}
  %r = sl.gated_rms_norm %y, %z, %w {groups = 2} : (tensor<2x8x16xf32>, tensor<2x8x8xf32>, tensor<16xf32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @gated_norm_groups(%y: tensor<2x8x16xf32>, %w: tensor<16xf32>) {
  // expected-error @+1 {{'sl.gated_rms_norm' op channels by groups: 16 is not divisible by 3}}
  %r = sl.gated_rms_norm %y, %y, %w {groups = 3} : (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<16xf32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @linear_weight_rank(%x: tensor<2x8x16xf32>, %w: tensor<16xf32>) {
  // expected-error @+1 {{'sl.linear' op weight must have rank 2, got 'tensor<16xf32>'}}
  %y = sl.linear %x, %w : (tensor<2x8x16xf32>, tensor<16xf32>) -> tensor<2x8x4xf32>
  return
}

// -----

func.func @linear_ranks_differ(%x: tensor<2x8x16xf32>, %w: tensor<16x4xf32>) {
  // expected-error @+1 {{'sl.linear' op x and the result must have the same rank >= 1}}
  %y = sl.linear %x, %w : (tensor<2x8x16xf32>, tensor<16x4xf32>) -> tensor<16x4xf32>
  return
}

// -----

// Rank-0 x with layouts: reported as a shape error.
sl.mesh @mesh(tp = 2)
func.func @linear_rank0_with_layout(%x: tensor<f32, #sl.layout<@mesh, []>>, %w: tensor<1x4xf32, #sl.layout<@mesh, [[], []]>>) {
  // expected-error @+1 {{'sl.linear' op x and the result must have the same rank >= 1}}
  %y = sl.linear %x, %w : (tensor<f32, #sl.layout<@mesh, []>>, tensor<1x4xf32, #sl.layout<@mesh, [[], []]>>) -> tensor<4xf32, #sl.layout<@mesh, [[]]>>
  return
}

// -----

func.func @linear_contraction(%x: tensor<2x8x16xf32>, %w: tensor<12x4xf32>) {
  // expected-error @+1 {{'sl.linear' op contracting dimensions differ: x has 16 features, weight has 12 rows}}
  %y = sl.linear %x, %w : (tensor<2x8x16xf32>, tensor<12x4xf32>) -> tensor<2x8x4xf32>
  return
}

// -----

func.func @linear_result(%x: tensor<2x8x16xf32>, %w: tensor<16x4xf32>) {
  // expected-error @+1 {{'sl.linear' op result shape must be x's leading dims followed by 4}}
  %y = sl.linear %x, %w : (tensor<2x8x16xf32>, tensor<16x4xf32>) -> tensor<2x8x8xf32>
  return
}

// -----

func.func @rope_rank(%x: tensor<8x16xf32>) {
  // expected-error @+1 {{'sl.rope' op x must have rank 3, got 'tensor<8x16xf32>'}}
  %y = sl.rope %x {head_dim = 8} : (tensor<8x16xf32>) -> tensor<8x16xf32>
  return
}

// -----

// With layouts, a wrong rank is still reported as a shape error.
sl.mesh @mesh(tp = 2)
func.func @rope_rank_with_layout(%x: tensor<8x16xf32, #sl.layout<@mesh, [[], []]>>) {
  // expected-error @+1 {{'sl.rope' op x must have rank 3, got 'tensor<8x16xf32, #sl.layout<@mesh, [[], []]>>'}}
  %y = sl.rope %x {head_dim = 8} : (tensor<8x16xf32, #sl.layout<@mesh, [[], []]>>) -> tensor<8x16xf32, #sl.layout<@mesh, [[], []]>>
  return
}

// -----

func.func @rope_odd_head_dim(%x: tensor<1x8x15xf32>) {
  // expected-error @+1 {{'sl.rope' op head_dim must be positive and even, got 5}}
  %y = sl.rope %x {head_dim = 5} : (tensor<1x8x15xf32>) -> tensor<1x8x15xf32>
  return
}

// -----

// head_dim = 0 with layouts: reported, not divided by.
sl.mesh @mesh(tp = 2)
func.func @rope_zero_head_dim_with_layout(%x: tensor<1x8x16xf32, #sl.layout<@mesh, [[], [], []]>>) {
  // expected-error @+1 {{'sl.rope' op head_dim must be positive and even, got 0}}
  %y = sl.rope %x {head_dim = 0} : (tensor<1x8x16xf32, #sl.layout<@mesh, [[], [], []]>>) -> tensor<1x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
  return
}

// -----

func.func @rope_channels(%x: tensor<1x8x20xf32>) {
  // expected-error @+1 {{'sl.rope' op channels by head_dim: 20 is not divisible by 8}}
  %y = sl.rope %x {head_dim = 8} : (tensor<1x8x20xf32>) -> tensor<1x8x20xf32>
  return
}

// -----

func.func @rope_result(%x: tensor<1x8x16xf32>) {
  // expected-error @+1 {{'sl.rope' op failed to verify that all of {x, result} have same shape}}
  %y = sl.rope %x {head_dim = 8} : (tensor<1x8x16xf32>) -> tensor<1x16x8xf32>
  return
}

// -----

func.func @attention_q_rank(%q: tensor<8x16xf32>, %k: tensor<1x8x8xf32>) {
  // expected-error @+1 {{'sl.attention' op q must have rank 3, got 'tensor<8x16xf32>'}}
  %o = sl.attention %q, %k, %k {heads = 4, kv_heads = 2} : (tensor<8x16xf32>, tensor<1x8x8xf32>, tensor<1x8x8xf32>) -> tensor<8x16xf32>
  return
}

// -----

func.func @attention_heads(%q: tensor<1x8x24xf32>, %k: tensor<1x8x16xf32>) {
  // expected-error @+1 {{'sl.attention' op heads (3) must be a positive multiple of kv_heads (2)}}
  %o = sl.attention %q, %k, %k {heads = 3, kv_heads = 2} : (tensor<1x8x24xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>) -> tensor<1x8x24xf32>
  return
}

// -----

func.func @attention_heads_do_not_divide_channels(%q: tensor<1x8x18xf32>, %k: tensor<1x8x16xf32>) {
  // expected-error @+1 {{'sl.attention' op q channels by heads: 18 is not divisible by 4}}
  %o = sl.attention %q, %k, %k {heads = 4, kv_heads = 2} : (tensor<1x8x18xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>) -> tensor<1x8x18xf32>
  return
}

// -----

func.func @attention_k_and_v(%q: tensor<1x8x16xf32>, %k: tensor<1x8x8xf32>, %v: tensor<1x4x8xf32>) {
  // expected-error @+1 {{'sl.attention' op failed to verify that all of {k, v} have same shape}}
  %o = sl.attention %q, %k, %v {heads = 4, kv_heads = 2} : (tensor<1x8x16xf32>, tensor<1x8x8xf32>, tensor<1x4x8xf32>) -> tensor<1x8x16xf32>
  return
}

// -----

func.func @attention_kv_channels(%q: tensor<1x8x16xf32>, %k: tensor<1x8x16xf32>) {
  // expected-error @+1 {{'sl.attention' op k dimension 2 must be 8 (kv_heads * head_dim), got 16}}
  %o = sl.attention %q, %k, %k {heads = 4, kv_heads = 2} : (tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
  return
}

// -----

func.func @attention_batch(%q: tensor<1x8x16xf32>, %k: tensor<2x8x8xf32>) {
  // expected-error @+1 {{'sl.attention' op k dimension 0 must be 1 (batch), got 2}}
  %o = sl.attention %q, %k, %k {heads = 4, kv_heads = 2} : (tensor<1x8x16xf32>, tensor<2x8x8xf32>, tensor<2x8x8xf32>) -> tensor<1x8x16xf32>
  return
}

// -----

func.func @attention_result(%q: tensor<1x8x16xf32>, %k: tensor<1x8x8xf32>) {
  // expected-error @+1 {{'sl.attention' op failed to verify that all of {q, result} have same shape}}
  %o = sl.attention %q, %k, %k {heads = 4, kv_heads = 2} : (tensor<1x8x16xf32>, tensor<1x8x8xf32>, tensor<1x8x8xf32>) -> tensor<1x8x8xf32>
  return
}

// -----

func.func @attention_scale(%q: tensor<1x8x16xf32>, %k: tensor<1x8x8xf32>) {
  // expected-error @+1 {{'sl.attention' op scale must be positive}}
  %o = sl.attention %q, %k, %k {heads = 4, kv_heads = 2, scale = 0.0} : (tensor<1x8x16xf32>, tensor<1x8x8xf32>, tensor<1x8x8xf32>) -> tensor<1x8x16xf32>
  return
}

// -----

func.func @ring_attention_lengths(%q: tensor<1x8x16xf32>, %k: tensor<1x4x8xf32>) {
  // expected-error @+1 {{'sl.ring_attention' op q and k must have the same sequence length}}
  %o = sl.ring_attention %q, %k, %k {heads = 4, kv_heads = 2, axes = ["cp"]} : (tensor<1x8x16xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x8x16xf32>
  return
}

// -----

func.func @ring_attention_no_axes(%q: tensor<1x8x16xf32>, %k: tensor<1x8x8xf32>) {
  // expected-error @+1 {{'sl.ring_attention' op needs at least one ring axis}}
  %o = sl.ring_attention %q, %k, %k {heads = 4, kv_heads = 2, axes = []} : (tensor<1x8x16xf32>, tensor<1x8x8xf32>, tensor<1x8x8xf32>) -> tensor<1x8x16xf32>
  return
}

// -----

// A ring over ranks that hold the same keys would count them twice.
#rep = #sl.layout<@mesh, [[], [], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @ring_attention_sequence_not_split(%q: tensor<1x8x16xf32, #rep>, %k: tensor<1x8x8xf32, #rep>) {
  // expected-error @+1 {{'sl.ring_attention' op axes must be the axes that split the sequence of q, []}}
  %o = sl.ring_attention %q, %k, %k {heads = 4, kv_heads = 2, axes = ["cp"]} : (tensor<1x8x16xf32, #rep>, tensor<1x8x8xf32, #rep>, tensor<1x8x8xf32, #rep>) -> tensor<1x8x16xf32, #rep>
  return
}

// -----

func.func @conv_weight_channels(%x: tensor<1x8x4xf32>, %w: tensor<8x4xf32>, %b: tensor<4xf32>) {
  // expected-error @+1 {{'sl.causal_conv1d' op weight dimension 0 must be 4 (channels), got 8}}
  %y = sl.causal_conv1d %x, %w, %b : (tensor<1x8x4xf32>, tensor<8x4xf32>, tensor<4xf32>) -> tensor<1x8x4xf32>
  return
}

// -----

func.func @conv_bias_rank(%x: tensor<1x8x4xf32>, %w: tensor<4x4xf32>, %b: tensor<4x1xf32>) {
  // expected-error @+1 {{'sl.causal_conv1d' op bias must have rank 1, got 'tensor<4x1xf32>'}}
  %y = sl.causal_conv1d %x, %w, %b : (tensor<1x8x4xf32>, tensor<4x4xf32>, tensor<4x1xf32>) -> tensor<1x8x4xf32>
  return
}

// -----

func.func @conv_result(%x: tensor<1x8x4xf32>, %w: tensor<4x4xf32>, %b: tensor<4xf32>) {
  // expected-error @+1 {{'sl.causal_conv1d' op failed to verify that all of {x, result} have same shape}}
  %y = sl.causal_conv1d %x, %w, %b : (tensor<1x8x4xf32>, tensor<4x4xf32>, tensor<4xf32>) -> tensor<1x4x4xf32>
  return
}

// -----

func.func @conv_halo_channels(%x: tensor<1x8x4xf32>, %w: tensor<4x4xf32>, %b: tensor<4xf32>, %h: tensor<1x3x8xf32>) {
  // expected-error @+1 {{'sl.causal_conv1d' op halo dimension 2 must be 4 (channels), got 8}}
  %y = sl.causal_conv1d %x, %w, %b halo %h : (tensor<1x8x4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<1x3x8xf32>) -> tensor<1x8x4xf32>
  return
}

// -----

func.func @conv_halo_width_one(%x: tensor<1x8x4xf32>, %w: tensor<4x1xf32>, %b: tensor<4xf32>, %h: tensor<1x1x4xf32>) {
  // expected-error @+1 {{'sl.causal_conv1d' op has a halo but its kernel of width 1 reads no earlier tokens}}
  %y = sl.causal_conv1d %x, %w, %b halo %h : (tensor<1x8x4xf32>, tensor<4x1xf32>, tensor<4xf32>, tensor<1x1x4xf32>) -> tensor<1x8x4xf32>
  return
}

// -----

// Width 4: each of the 2 chunks needs the 3 tokens before it.
#x = #sl.layout<@mesh, [[], [cp], []]>
#w = #sl.layout<@mesh, [[], []]>
#b = #sl.layout<@mesh, [[]]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @conv_halo_tokens(%x: tensor<1x8x4xf32, #x>, %w: tensor<4x4xf32, #w>, %b: tensor<4xf32, #b>, %h: tensor<1x12x4xf32, #x>) {
  // expected-error @+1 {{'sl.causal_conv1d' op halo holds 12 tokens but x's 2 sequence chunks need 2 * 3}}
  %y = sl.causal_conv1d %x, %w, %b halo %h : (tensor<1x8x4xf32, #x>, tensor<4x4xf32, #w>, tensor<4xf32, #b>, tensor<1x12x4xf32, #x>) -> tensor<1x8x4xf32, #x>
  return
}

// -----

// The halo of a zigzag sequence follows the zigzag order.
#zig = #sl.layout<@mesh, [[], [cp] zigzag, []]>
#cont = #sl.layout<@mesh, [[], [cp], []]>
#w = #sl.layout<@mesh, [[], []]>
#b = #sl.layout<@mesh, [[]]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @conv_halo_order(%x: tensor<1x8x4xf32, #zig>, %w: tensor<4x4xf32, #w>, %b: tensor<4xf32, #b>, %h: tensor<1x12x4xf32, #cont>) {
  // expected-error @+1 {{'sl.causal_conv1d' op halo must split its sequence like x}}
  %y = sl.causal_conv1d %x, %w, %b halo %h : (tensor<1x8x4xf32, #zig>, tensor<4x4xf32, #w>, tensor<4xf32, #b>, tensor<1x12x4xf32, #cont>) -> tensor<1x8x4xf32, #zig>
  return
}

// -----

func.func @ssd_heads_groups(%x: tensor<1x8x16xf32>, %dt: tensor<1x8x4xf32>, %h: tensor<4xf32>, %bc: tensor<1x8x8xf32>) {
  // expected-error @+1 {{'sl.ssd_scan' op heads (4) must be a positive multiple of groups (3)}}
  %y, %s, %d = sl.ssd_scan %x, %dt, %h, %bc, %bc, %h, %h {heads = 4, groups = 3} : (tensor<1x8x16xf32>, tensor<1x8x4xf32>, tensor<4xf32>, tensor<1x8x8xf32>, tensor<1x8x8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<1x8x16xf32>, tensor<1x4x4x4xf32>, tensor<1x4xf32>)
  return
}

// -----

func.func @ssd_dt(%x: tensor<1x8x16xf32>, %dt: tensor<1x8x3xf32>, %h: tensor<4xf32>, %bc: tensor<1x8x8xf32>) {
  // expected-error @+1 {{'sl.ssd_scan' op dt must be [batch, seq, heads]}}
  %y, %s, %d = sl.ssd_scan %x, %dt, %h, %bc, %bc, %h, %h {heads = 4, groups = 2} : (tensor<1x8x16xf32>, tensor<1x8x3xf32>, tensor<4xf32>, tensor<1x8x8xf32>, tensor<1x8x8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<1x8x16xf32>, tensor<1x4x4x4xf32>, tensor<1x4xf32>)
  return
}

// -----

func.func @ssd_b_and_c(%x: tensor<1x8x16xf32>, %dt: tensor<1x8x4xf32>, %h: tensor<4xf32>, %b: tensor<1x8x8xf32>, %c: tensor<1x8x4xf32>) {
  // expected-error @+1 {{'sl.ssd_scan' op B and C must be [batch, seq, groups * state]}}
  %y, %s, %d = sl.ssd_scan %x, %dt, %h, %b, %c, %h, %h {heads = 4, groups = 2} : (tensor<1x8x16xf32>, tensor<1x8x4xf32>, tensor<4xf32>, tensor<1x8x8xf32>, tensor<1x8x4xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<1x8x16xf32>, tensor<1x4x4x4xf32>, tensor<1x4xf32>)
  return
}

// -----

func.func @ssd_per_head_params(%x: tensor<1x8x16xf32>, %dt: tensor<1x8x4xf32>, %h: tensor<4xf32>, %bc: tensor<1x8x8xf32>, %d8: tensor<8xf32>) {
  // expected-error @+1 {{'sl.ssd_scan' op d dimension 0 must be 4 (heads), got 8}}
  %y, %s, %d = sl.ssd_scan %x, %dt, %h, %bc, %bc, %d8, %h {heads = 4, groups = 2} : (tensor<1x8x16xf32>, tensor<1x8x4xf32>, tensor<4xf32>, tensor<1x8x8xf32>, tensor<1x8x8xf32>, tensor<8xf32>, tensor<4xf32>) -> (tensor<1x8x16xf32>, tensor<1x4x4x4xf32>, tensor<1x4xf32>)
  return
}

// -----

func.func @ssd_state_shape(%x: tensor<1x8x16xf32>, %dt: tensor<1x8x4xf32>, %h: tensor<4xf32>, %bc: tensor<1x8x8xf32>) {
  // expected-error @+1 {{'sl.ssd_scan' op state dimension 3 must be 4 (scan state), got 8}}
  %y, %s, %d = sl.ssd_scan %x, %dt, %h, %bc, %bc, %h, %h {heads = 4, groups = 2} : (tensor<1x8x16xf32>, tensor<1x8x4xf32>, tensor<4xf32>, tensor<1x8x8xf32>, tensor<1x8x8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<1x8x16xf32>, tensor<1x4x4x8xf32>, tensor<1x4xf32>)
  return
}

// -----

// Without chunk_axes the summaries have no chunk dimension.
func.func @ssd_state_rank(%x: tensor<1x8x16xf32>, %dt: tensor<1x8x4xf32>, %h: tensor<4xf32>, %bc: tensor<1x8x8xf32>) {
  // expected-error @+1 {{'sl.ssd_scan' op state must have rank 4, got 'tensor<1x1x4x4x4xf32>'}}
  %y, %s, %d = sl.ssd_scan %x, %dt, %h, %bc, %bc, %h, %h {heads = 4, groups = 2} : (tensor<1x8x16xf32>, tensor<1x8x4xf32>, tensor<4xf32>, tensor<1x8x8xf32>, tensor<1x8x8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<1x8x16xf32>, tensor<1x1x4x4x4xf32>, tensor<1x4xf32>)
  return
}

// -----

func.func @ssd_state_in(%x: tensor<1x8x16xf32>, %dt: tensor<1x8x4xf32>, %h: tensor<4xf32>, %bc: tensor<1x8x8xf32>, %s0: tensor<1x4x4xf32>) {
  // expected-error @+1 {{'sl.ssd_scan' op state_in must have rank 4, got 'tensor<1x4x4xf32>'}}
  %y, %s, %d = sl.ssd_scan %x, %dt, %h, %bc, %bc, %h, %h state_in %s0 {heads = 4, groups = 2} : (tensor<1x8x16xf32>, tensor<1x8x4xf32>, tensor<4xf32>, tensor<1x8x8xf32>, tensor<1x8x8xf32>, tensor<4xf32>, tensor<4xf32>, tensor<1x4x4xf32>) -> (tensor<1x8x16xf32>, tensor<1x4x4x4xf32>, tensor<1x4xf32>)
  return
}

// -----

func.func @ssd_chunk_axes_without_layout(%x: tensor<1x8x16xf32>, %dt: tensor<1x8x4xf32>, %h: tensor<4xf32>, %bc: tensor<1x8x8xf32>) {
  // expected-error @+1 {{'sl.ssd_scan' op chunk_axes needs a sequence layout on operand #0}}
  %y, %s, %d = sl.ssd_scan %x, %dt, %h, %bc, %bc, %h, %h {heads = 4, groups = 2, chunk_axes = ["cp"]} : (tensor<1x8x16xf32>, tensor<1x8x4xf32>, tensor<4xf32>, tensor<1x8x8xf32>, tensor<1x8x8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<1x8x16xf32>, tensor<2x1x4x4x4xf32>, tensor<2x1x4xf32>)
  return
}

// -----

// chunk_axes names tp, but cp splits the sequence.
#act = #sl.layout<@mesh, [[], [cp], []]>
#h = #sl.layout<@mesh, [[]]>
#st = #sl.layout<@mesh, [[cp], [], [], [], []]>
#dec = #sl.layout<@mesh, [[cp], [], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @ssd_chunk_axes_mismatch(%x: tensor<1x8x16xf32, #act>, %dt: tensor<1x8x4xf32, #act>, %a: tensor<4xf32, #h>, %bc: tensor<1x8x8xf32, #act>) {
  // expected-error @+1 {{'sl.ssd_scan' op chunk_axes must be the axes that split the sequence of operand #0}}
  %y, %s, %d = sl.ssd_scan %x, %dt, %a, %bc, %bc, %a, %a {heads = 4, groups = 2, chunk_axes = ["tp"]} : (tensor<1x8x16xf32, #act>, tensor<1x8x4xf32, #act>, tensor<4xf32, #h>, tensor<1x8x8xf32, #act>, tensor<1x8x8xf32, #act>, tensor<4xf32, #h>, tensor<4xf32, #h>) -> (tensor<1x8x16xf32, #act>, tensor<2x1x4x4x4xf32, #st>, tensor<2x1x4xf32, #dec>)
  return
}

// -----

// Before propagation (the summaries unannotated), chunk_axes must still be
// the axes that split the sequence.
#act = #sl.layout<@mesh, [[], [cp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @ssd_chunk_axes_not_the_split(%x: tensor<1x8x16xf32, #act>, %dt: tensor<1x8x4xf32>, %a: tensor<4xf32>, %bc: tensor<1x8x8xf32>) {
  // expected-error @+1 {{'sl.ssd_scan' op chunk_axes must be the axes that split the sequence of operand #0}}
  %y, %s, %d = sl.ssd_scan %x, %dt, %a, %bc, %bc, %a, %a {heads = 4, groups = 2, chunk_axes = ["tp"]} : (tensor<1x8x16xf32, #act>, tensor<1x8x4xf32>, tensor<4xf32>, tensor<1x8x8xf32>, tensor<1x8x8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<1x8x16xf32>, tensor<2x1x4x4x4xf32>, tensor<2x1x4xf32>)
  return
}

// -----

// The zigzag sequence is cut into 4 chunks, not 2.
#act = #sl.layout<@mesh, [[], [cp] zigzag, []]>
#h = #sl.layout<@mesh, [[]]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @ssd_summary_chunks(%x: tensor<1x8x16xf32, #act>, %dt: tensor<1x8x4xf32, #act>, %a: tensor<4xf32, #h>, %bc: tensor<1x8x8xf32, #act>) {
  // expected-error @+1 {{'sl.ssd_scan' op state dimension 0 must be 4 (chunks along the sequence), got 2}}
  %y, %s, %d = sl.ssd_scan %x, %dt, %a, %bc, %bc, %a, %a {heads = 4, groups = 2, chunk_axes = ["cp"]} : (tensor<1x8x16xf32, #act>, tensor<1x8x4xf32, #act>, tensor<4xf32, #h>, tensor<1x8x8xf32, #act>, tensor<1x8x8xf32, #act>, tensor<4xf32, #h>, tensor<4xf32, #h>) -> (tensor<1x8x16xf32, #act>, tensor<2x1x4x4x4xf32>, tensor<4x1x4xf32>)
  return
}

// -----

// The summaries' chunk dimension is split like the sequence.
#act = #sl.layout<@mesh, [[], [cp], []]>
#h = #sl.layout<@mesh, [[]]>
#st = #sl.layout<@mesh, [[], [], [], [], []]>
#dec = #sl.layout<@mesh, [[cp], [], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @ssd_summary_layout(%x: tensor<1x8x16xf32, #act>, %dt: tensor<1x8x4xf32, #act>, %a: tensor<4xf32, #h>, %bc: tensor<1x8x8xf32, #act>) {
  // expected-error @+1 {{'sl.ssd_scan' op result #1 (state) has layout [[], [], [], [], []] but the operands' layouts give [[cp], [], [], [], []]}}
  %y, %s, %d = sl.ssd_scan %x, %dt, %a, %bc, %bc, %a, %a {heads = 4, groups = 2, chunk_axes = ["cp"]} : (tensor<1x8x16xf32, #act>, tensor<1x8x4xf32, #act>, tensor<4xf32, #h>, tensor<1x8x8xf32, #act>, tensor<1x8x8xf32, #act>, tensor<4xf32, #h>, tensor<4xf32, #h>) -> (tensor<1x8x16xf32, #act>, tensor<2x1x4x4x4xf32, #st>, tensor<2x1x4xf32, #dec>)
  return
}

// -----

func.func @ssd_correct_heads(%y: tensor<1x8x16xf32>, %i: tensor<1x1x4x4x4xf32>, %c: tensor<1x8x8xf32>, %dt: tensor<1x8x4xf32>, %h: tensor<4xf32>) {
  // expected-error @+1 {{'sl.ssd_correct' op heads (4) must be a positive multiple of groups (3)}}
  %r = sl.ssd_correct %y, %i, %c, %dt, %h, %h {heads = 4, groups = 3, chunk_axes = []} : (tensor<1x8x16xf32>, tensor<1x1x4x4x4xf32>, tensor<1x8x8xf32>, tensor<1x8x4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<1x8x16xf32>
  return
}

// -----

func.func @ssd_correct_init_rank(%y: tensor<1x8x16xf32>, %i: tensor<1x4x4x4xf32>, %c: tensor<1x8x8xf32>, %dt: tensor<1x8x4xf32>, %h: tensor<4xf32>) {
  // expected-error @+1 {{'sl.ssd_correct' op init must have rank 5, got 'tensor<1x4x4x4xf32>'}}
  %r = sl.ssd_correct %y, %i, %c, %dt, %h, %h {heads = 4, groups = 2, chunk_axes = []} : (tensor<1x8x16xf32>, tensor<1x4x4x4xf32>, tensor<1x8x8xf32>, tensor<1x8x4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<1x8x16xf32>
  return
}

// -----

// init is [chunks, batch, heads, head_dim, state]: 16 channels in 4 heads
// have a head_dim of 4.
func.func @ssd_correct_init_shape(%y: tensor<1x8x16xf32>, %i: tensor<1x1x4x8x4xf32>, %c: tensor<1x8x8xf32>, %dt: tensor<1x8x4xf32>, %h: tensor<4xf32>) {
  // expected-error @+1 {{'sl.ssd_correct' op init dimension 3 must be 4 (scan state), got 8}}
  %r = sl.ssd_correct %y, %i, %c, %dt, %h, %h {heads = 4, groups = 2, chunk_axes = []} : (tensor<1x8x16xf32>, tensor<1x1x4x8x4xf32>, tensor<1x8x8xf32>, tensor<1x8x4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<1x8x16xf32>
  return
}

// -----

#act = #sl.layout<@mesh, [[], [cp], []]>
#h = #sl.layout<@mesh, [[]]>
#init = #sl.layout<@mesh, [[cp], [], [], [], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @ssd_correct_init_chunks(%y: tensor<1x8x16xf32, #act>, %i: tensor<4x1x4x4x4xf32, #init>, %c: tensor<1x8x8xf32, #act>, %dt: tensor<1x8x4xf32, #act>, %a: tensor<4xf32, #h>) {
  // expected-error @+1 {{'sl.ssd_correct' op init dimension 0 must be 2 (chunks), got 4}}
  %r = sl.ssd_correct %y, %i, %c, %dt, %a, %a {heads = 4, groups = 2, chunk_axes = ["cp"]} : (tensor<1x8x16xf32, #act>, tensor<4x1x4x4x4xf32, #init>, tensor<1x8x8xf32, #act>, tensor<1x8x4xf32, #act>, tensor<4xf32, #h>, tensor<4xf32, #h>) -> tensor<1x8x16xf32, #act>
  return
}

// -----

func.func @ssd_correct_c(%y: tensor<1x8x16xf32>, %i: tensor<1x1x4x4x4xf32>, %c: tensor<1x4x8xf32>, %dt: tensor<1x8x4xf32>, %h: tensor<4xf32>) {
  // expected-error @+1 {{'sl.ssd_correct' op C must be [batch, seq, groups * state]}}
  %r = sl.ssd_correct %y, %i, %c, %dt, %h, %h {heads = 4, groups = 2, chunk_axes = []} : (tensor<1x8x16xf32>, tensor<1x1x4x4x4xf32>, tensor<1x4x8xf32>, tensor<1x8x4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<1x8x16xf32>
  return
}

// -----

func.func @ssd_correct_dt_bias(%y: tensor<1x8x16xf32>, %i: tensor<1x1x4x4x4xf32>, %c: tensor<1x8x8xf32>, %dt: tensor<1x8x4xf32>, %h: tensor<4xf32>, %h2: tensor<2xf32>) {
  // expected-error @+1 {{'sl.ssd_correct' op dt_bias dimension 0 must be 4 (heads), got 2}}
  %r = sl.ssd_correct %y, %i, %c, %dt, %h, %h2 {heads = 4, groups = 2, chunk_axes = []} : (tensor<1x8x16xf32>, tensor<1x1x4x4x4xf32>, tensor<1x8x8xf32>, tensor<1x8x4xf32>, tensor<4xf32>, tensor<2xf32>) -> tensor<1x8x16xf32>
  return
}

// -----

func.func @rglru_gate_shape(%x: tensor<1x8x16xf32>, %g: tensor<16xf32>, %g8: tensor<8xf32>) {
  // expected-error @+1 {{'sl.rglru_scan' op bx dimension 0 must be 16 (width), got 8}}
  %y, %s, %d = sl.rglru_scan %x, %g, %g, %g, %g8, %g : (tensor<1x8x16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<8xf32>, tensor<16xf32>) -> (tensor<1x8x16xf32>, tensor<1x16xf32>, tensor<1x16xf32>)
  return
}

// -----

func.func @rglru_y_shape(%x: tensor<1x8x16xf32>, %g: tensor<16xf32>) {
  // expected-error @+1 {{'sl.rglru_scan' op failed to verify that all of {x, y} have same shape}}
  %y, %s, %d = sl.rglru_scan %x, %g, %g, %g, %g, %g : (tensor<1x8x16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>) -> (tensor<1x4x16xf32>, tensor<1x16xf32>, tensor<1x16xf32>)
  return
}

// -----

#x = #sl.layout<@mesh, [[], [cp], []]>
#g = #sl.layout<@mesh, [[]]>
#st = #sl.layout<@mesh, [[cp], [], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @rglru_summary_chunks(%x: tensor<1x8x4xf32, #x>, %g: tensor<4xf32, #g>) {
  // expected-error @+1 {{'sl.rglru_scan' op state dimension 0 must be 2 (chunks along the sequence), got 4}}
  %y, %s, %d = sl.rglru_scan %x, %g, %g, %g, %g, %g {chunk_axes = ["cp"]} : (tensor<1x8x4xf32, #x>, tensor<4xf32, #g>, tensor<4xf32, #g>, tensor<4xf32, #g>, tensor<4xf32, #g>, tensor<4xf32, #g>) -> (tensor<1x8x4xf32, #x>, tensor<4x1x4xf32, #st>, tensor<4x1x4xf32, #st>)
  return
}

// -----

func.func @rglru_state_in(%x: tensor<1x8x16xf32>, %g: tensor<16xf32>, %s0: tensor<1x8xf32>) {
  // expected-error @+1 {{'sl.rglru_scan' op state_in dimension 1 must be 16 (scan state), got 8}}
  %y, %s, %d = sl.rglru_scan %x, %g, %g, %g, %g, %g state_in %s0 : (tensor<1x8x16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<1x8xf32>) -> (tensor<1x8x16xf32>, tensor<1x16xf32>, tensor<1x16xf32>)
  return
}

// -----

func.func @rglru_correct_shapes(%y: tensor<1x8x16xf32>, %i: tensor<1x1x16xf32>, %x: tensor<1x4x16xf32>, %g: tensor<16xf32>) {
  // expected-error @+1 {{'sl.rglru_correct' op failed to verify that all of {y0, x, result} have same shape}}
  %r = sl.rglru_correct %y, %i, %x, %g, %g, %g {chunk_axes = []} : (tensor<1x8x16xf32>, tensor<1x1x16xf32>, tensor<1x4x16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<1x8x16xf32>
  return
}

// -----

func.func @rglru_correct_gate(%y: tensor<1x8x16xf32>, %i: tensor<1x1x16xf32>, %g: tensor<16xf32>, %g8: tensor<8xf32>) {
  // expected-error @+1 {{'sl.rglru_correct' op lambda dimension 0 must be 16 (width), got 8}}
  %r = sl.rglru_correct %y, %i, %y, %g, %g, %g8 {chunk_axes = []} : (tensor<1x8x16xf32>, tensor<1x1x16xf32>, tensor<1x8x16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<8xf32>) -> tensor<1x8x16xf32>
  return
}

// -----

// init is [chunks, batch, width] with its chunk dimension even for one chunk.
func.func @rglru_correct_init_rank(%y: tensor<1x8x16xf32>, %i: tensor<1x16xf32>, %g: tensor<16xf32>) {
  // expected-error @+1 {{'sl.rglru_correct' op init must have rank 3, got 'tensor<1x16xf32>'}}
  %r = sl.rglru_correct %y, %i, %y, %g, %g, %g {chunk_axes = []} : (tensor<1x8x16xf32>, tensor<1x16xf32>, tensor<1x8x16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<1x8x16xf32>
  return
}

// -----

func.func @rglru_correct_init_width(%y: tensor<1x8x16xf32>, %i: tensor<1x1x8xf32>, %g: tensor<16xf32>) {
  // expected-error @+1 {{'sl.rglru_correct' op init dimension 2 must be 16 (scan state), got 8}}
  %r = sl.rglru_correct %y, %i, %y, %g, %g, %g {chunk_axes = []} : (tensor<1x8x16xf32>, tensor<1x1x8xf32>, tensor<1x8x16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<1x8x16xf32>
  return
}

// -----

// A sequence split over cp needs chunk_axes = ["cp"].
#x = #sl.layout<@mesh, [[], [cp], []]>
#g = #sl.layout<@mesh, [[]]>
#init = #sl.layout<@mesh, [[cp], [], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @rglru_correct_chunk_axes(%y: tensor<1x8x16xf32, #x>, %i: tensor<2x1x16xf32, #init>, %g: tensor<16xf32, #g>) {
  // expected-error @+1 {{'sl.rglru_correct' op init dimension 0 must be 1 (chunks), got 2}}
  %r = sl.rglru_correct %y, %i, %y, %g, %g, %g {chunk_axes = []} : (tensor<1x8x16xf32, #x>, tensor<2x1x16xf32, #init>, tensor<1x8x16xf32, #x>, tensor<16xf32, #g>, tensor<16xf32, #g>, tensor<16xf32, #g>) -> tensor<1x8x16xf32, #x>
  return
}

// -----

// The gradient of state_in comes with state_in.
func.func @rglru_scan_grad_state_in(%x: tensor<1x8x16xf32>, %g: tensor<16xf32>, %s0: tensor<1x16xf32>) {
  // expected-error @+1 {{'sl.rglru_scan_grad' op has a dstate_in result exactly when it has a state_in operand}}
  %dx = sl.rglru_scan_grad %x, %g, %g, %g, %g, %g state_in %s0, %x : (tensor<1x8x16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<1x16xf32>, tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
  return
}

// -----

// The final state's cotangent is shaped like the scan's state [b, w].
func.func @rglru_scan_grad_dstate(%x: tensor<1x8x16xf32>, %g: tensor<16xf32>, %ds: tensor<1x8xf32>) {
  // expected-error @+1 {{'sl.rglru_scan_grad_weights' op dstate dimension 1 must be 16 (scan state), got 8}}
  %a, %b, %c, %d, %l = sl.rglru_scan_grad_weights %x, %g, %g, %g, %g, %g, %x dstate %ds : (tensor<1x8x16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<1x8x16xf32>, tensor<1x8xf32>) -> (tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>)
  return
}

// -----

// A chunked scan's summaries lead with one entry per chunk.
#x = #sl.layout<@mesh, [[], [cp], []]>
#g = #sl.layout<@mesh, [[]]>
#st = #sl.layout<@mesh, [[cp], [], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @rglru_scan_grad_chunks(%x: tensor<1x8x16xf32, #x>, %g: tensor<16xf32, #g>, %dd: tensor<4x1x16xf32, #st>) {
  // expected-error @+1 {{'sl.rglru_scan_grad' op ddecay dimension 0 must be 2 (chunks along the sequence), got 4}}
  %dx = sl.rglru_scan_grad %x, %g, %g, %g, %g, %g, %x ddecay %dd {chunk_axes = ["cp"]} : (tensor<1x8x16xf32, #x>, tensor<16xf32, #g>, tensor<16xf32, #g>, tensor<16xf32, #g>, tensor<16xf32, #g>, tensor<16xf32, #g>, tensor<1x8x16xf32, #x>, tensor<4x1x16xf32, #st>) -> tensor<1x8x16xf32, #x>
  return
}

// -----

func.func @rglru_correct_grad_dinit(%i: tensor<1x1x16xf32>, %x: tensor<1x8x16xf32>, %g: tensor<16xf32>) {
  // expected-error @+1 {{'sl.rglru_correct_grad' op result #0 must be shaped like the input it differentiates}}
  %di, %dx = sl.rglru_correct_grad %i, %x, %g, %g, %g, %x {chunk_axes = []} : (tensor<1x1x16xf32>, tensor<1x8x16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<1x8x16xf32>) -> (tensor<1x16xf32>, tensor<1x8x16xf32>)
  return
}

// -----

func.func @rglru_correct_grad_width(%i: tensor<1x1x16xf32>, %x: tensor<1x8x16xf32>, %g8: tensor<8xf32>) {
  // expected-error @+1 {{'sl.rglru_correct_grad_params' op wa dimension 0 must be 16 (width of dy), got 8}}
  %a, %b, %l = sl.rglru_correct_grad_params %i, %x, %g8, %g8, %g8, %x {chunk_axes = []} : (tensor<1x1x16xf32>, tensor<1x8x16xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<1x8x16xf32>) -> (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>)
  return
}

// -----

func.func @router_k(%l: tensor<2x8x4xf32>) {
  // expected-error @+1 {{'sl.router_topk' op k must be in [1, 4], got 5}}
  %w, %i = sl.router_topk %l {k = 5} : (tensor<2x8x4xf32>) -> (tensor<2x8x5xf32>, tensor<2x8x5xi32>)
  return
}

// -----

func.func @router_results(%l: tensor<2x8x4xf32>) {
  // expected-error @+1 {{'sl.router_topk' op weights and indices must be [batch, seq, k]}}
  %w, %i = sl.router_topk %l {k = 2} : (tensor<2x8x4xf32>) -> (tensor<2x8x2xf32>, tensor<2x8x1xi32>)
  return
}

// -----

func.func @router_logits_rank(%l: tensor<16x4xf32>) {
  // expected-error @+1 {{'sl.router_topk' op logits must have rank 3, got 'tensor<16x4xf32>'}}
  %w, %i = sl.router_topk %l {k = 2} : (tensor<16x4xf32>) -> (tensor<16x2xf32>, tensor<16x2xi32>)
  return
}

// -----

func.func @dispatch_experts(%x: tensor<2x8x16xf32>, %i: tensor<2x8x2xi32>) {
  // expected-error @+1 {{'sl.moe_dispatch' op experts must be positive}}
  %t = sl.moe_dispatch %x, %i {experts = 0} : (tensor<2x8x16xf32>, tensor<2x8x2xi32>) -> tensor<0x2x8x16xf32>
  return
}

// -----

func.func @dispatch_indices(%x: tensor<2x8x16xf32>, %i: tensor<2x4x2xi32>) {
  // expected-error @+1 {{'sl.moe_dispatch' op indices must be [batch, seq, k] for x's batch and seq}}
  %t = sl.moe_dispatch %x, %i {experts = 4} : (tensor<2x8x16xf32>, tensor<2x4x2xi32>) -> tensor<4x2x8x16xf32>
  return
}

// -----

func.func @dispatch_result(%x: tensor<2x8x16xf32>, %i: tensor<2x8x2xi32>) {
  // expected-error @+1 {{'sl.moe_dispatch' op result must be [experts, batch, seq, hidden]}}
  %t = sl.moe_dispatch %x, %i {experts = 4} : (tensor<2x8x16xf32>, tensor<2x8x2xi32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @experts_gate(%t: tensor<4x2x8x16xf32>, %g: tensor<4x8x32xf32>, %d: tensor<4x32x16xf32>) {
  // expected-error @+1 {{'sl.moe_experts' op gate must be [experts, hidden, ffn]}}
  %e = sl.moe_experts %t, %g, %g, %d : (tensor<4x2x8x16xf32>, tensor<4x8x32xf32>, tensor<4x8x32xf32>, tensor<4x32x16xf32>) -> tensor<4x2x8x16xf32>
  return
}

// -----

func.func @experts_up(%t: tensor<4x2x8x16xf32>, %g: tensor<4x16x32xf32>, %u: tensor<4x16x16xf32>, %d: tensor<4x32x16xf32>) {
  // expected-error @+1 {{'sl.moe_experts' op failed to verify that all of {gate, up} have same shape}}
  %e = sl.moe_experts %t, %g, %u, %d : (tensor<4x2x8x16xf32>, tensor<4x16x32xf32>, tensor<4x16x16xf32>, tensor<4x32x16xf32>) -> tensor<4x2x8x16xf32>
  return
}

// -----

func.func @experts_down(%t: tensor<4x2x8x16xf32>, %g: tensor<4x16x32xf32>, %d: tensor<4x16x32xf32>) {
  // expected-error @+1 {{'sl.moe_experts' op down must be [experts, ffn, hidden]}}
  %e = sl.moe_experts %t, %g, %g, %d : (tensor<4x2x8x16xf32>, tensor<4x16x32xf32>, tensor<4x16x32xf32>, tensor<4x16x32xf32>) -> tensor<4x2x8x16xf32>
  return
}

// -----

func.func @experts_result(%t: tensor<4x2x8x16xf32>, %g: tensor<4x16x32xf32>, %d: tensor<4x32x16xf32>) {
  // expected-error @+1 {{'sl.moe_experts' op failed to verify that all of {tokens, result} have same shape}}
  %e = sl.moe_experts %t, %g, %g, %d : (tensor<4x2x8x16xf32>, tensor<4x16x32xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @experts_tokens_rank(%t: tensor<4x16xf32>, %g: tensor<4x16x32xf32>, %d: tensor<4x32x16xf32>) {
  // expected-error @+1 {{'sl.moe_experts' op tokens must be [experts, rows..., hidden] with at least one row dimension, got 'tensor<4x16xf32>'}}
  %e = sl.moe_experts %t, %g, %g, %d : (tensor<4x16xf32>, tensor<4x16x32xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<4x16xf32>
  return
}

// -----

func.func @combine_weights(%e: tensor<4x2x8x16xf32>, %w: tensor<2x8x2xf32>, %i: tensor<2x8x1xi32>) {
  // expected-error @+1 {{'sl.moe_combine' op weights and indices must be [batch, seq, k]}}
  %y = sl.moe_combine %e, %w, %i : (tensor<4x2x8x16xf32>, tensor<2x8x2xf32>, tensor<2x8x1xi32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @combine_result(%e: tensor<4x2x8x16xf32>, %w: tensor<2x8x2xf32>, %i: tensor<2x8x2xi32>) {
  // expected-error @+1 {{'sl.moe_combine' op result must be [batch, seq, hidden]}}
  %y = sl.moe_combine %e, %w, %i : (tensor<4x2x8x16xf32>, tensor<2x8x2xf32>, tensor<2x8x2xi32>) -> tensor<2x8x32xf32>
  return
}

// -----

func.func @lm_head_hidden(%x: tensor<2x8x16xf32>, %w: tensor<32x64xf32>) {
  // expected-error @+1 {{'sl.lm_head' op hidden sizes differ: x has 16, weight has 32}}
  %l = sl.lm_head %x, %w : (tensor<2x8x16xf32>, tensor<32x64xf32>) -> tensor<2x8x64xf32>
  return
}

// -----

func.func @lm_head_result(%x: tensor<2x8x16xf32>, %w: tensor<16x64xf32>) {
  // expected-error @+1 {{'sl.lm_head' op result must be [batch, seq, vocab]}}
  %l = sl.lm_head %x, %w : (tensor<2x8x16xf32>, tensor<16x64xf32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @cross_entropy_labels(%l: tensor<2x8x64xf32>, %y: tensor<2x4xi32>) {
  // expected-error @+1 {{'sl.cross_entropy' op labels must be [batch, seq] of the logits}}
  %loss = sl.cross_entropy %l, %y : (tensor<2x8x64xf32>, tensor<2x4xi32>) -> tensor<f32>
  return
}

// -----

func.func @cross_entropy_loss_rank(%l: tensor<2x8x64xf32>, %y: tensor<2x8xi32>) {
  // expected-error @+1 {{'sl.cross_entropy' op loss must have rank 0, got 'tensor<2x8xf32>'}}
  %loss = sl.cross_entropy %l, %y : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<2x8xf32>
  return
}

// -----

// The max and sum are all-reduced over vocab_axes: tp must split the
// vocabulary, or each logit would count twice.
#logits = #sl.layout<@mesh, [[], [cp], []]>
#y = #sl.layout<@mesh, [[], [cp]]>
#loss = #sl.layout<@mesh, [], partial = [cp]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @cross_entropy_vocab_axes_not_the_split(%l: tensor<2x8x64xf32, #logits>, %y: tensor<2x8xi32, #y>) {
  // expected-error @+1 {{'sl.cross_entropy' op vocab_axes must be the axes that split the logits' vocabulary, []}}
  %loss = sl.cross_entropy %l, %y {vocab_axes = ["tp"]} : (tensor<2x8x64xf32, #logits>, tensor<2x8xi32, #y>) -> tensor<f32, #loss>
  return
}

// -----

// The loss of tokens split over cp is a pending sum over cp.
#logits = #sl.layout<@mesh, [[], [cp], []]>
#y = #sl.layout<@mesh, [[], [cp]]>
#loss = #sl.layout<@mesh, []>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @cross_entropy_loss_layout(%l: tensor<2x8x64xf32, #logits>, %y: tensor<2x8xi32, #y>) {
  // expected-error @+1 {{'sl.cross_entropy' op result #0 (loss) has layout [] but the operands' layouts give [], partial = [cp]}}
  %loss = sl.cross_entropy %l, %y : (tensor<2x8x64xf32, #logits>, tensor<2x8xi32, #y>) -> tensor<f32, #loss>
  return
}

//===----------------------------------------------------------------------===//
// Layout transitions
//===----------------------------------------------------------------------===//

// -----

func.func @transition_without_layouts(%x: tensor<2x8x4xf32>) {
  // expected-error @+1 {{'sl.all_gather' op operand and result must carry #sl.layout encodings}}
  %g = sl.all_gather %x {axes = ["tp"], dim = 1} : tensor<2x8x4xf32> -> tensor<2x8x4xf32>
  return
}

// -----

sl.mesh @mesh(cp = 2, tp = 2)
func.func @transition_result_without_layout(%x: tensor<2x8x4xf32, #sl.layout<@mesh, [[], [tp], []]>>) {
  // expected-error @+1 {{'sl.relayout' op operand and result must carry #sl.layout encodings}}
  %g = sl.relayout %x : tensor<2x8x4xf32, #sl.layout<@mesh, [[], [tp], []]>> -> tensor<2x8x4xf32>
  return
}

// -----

#a = #sl.layout<@mesh, [[], [tp], []]>
#b = #sl.layout<@mesh, [[], [], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @transition_element_types(%x: tensor<2x8x4xf32, #a>) {
  // expected-error @+1 {{'sl.relayout' op operand and result element types differ}}
  %g = sl.relayout %x : tensor<2x8x4xf32, #a> -> tensor<2x8x4xbf16, #b>
  return
}

// -----

#a = #sl.layout<@mesh, [[], [tp], []]>
#b = #sl.layout<@mesh, [[], [], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @transition_shapes(%x: tensor<2x8x4xf32, #a>) {
  // expected-error @+1 {{'sl.relayout' op operand and result shapes differ}}
  %g = sl.relayout %x : tensor<2x8x4xf32, #a> -> tensor<2x4x8xf32, #b>
  return
}

// -----

#a = #sl.layout<@mesh, [[], [tp]]>
#b = #sl.layout<@mesh, [[], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @transition_dynamic(%x: tensor<?x8xf32, #a>) {
  // expected-error @+1 {{'sl.all_gather' op operand and result must have static shapes}}
  %g = sl.all_gather %x {axes = ["tp"], dim = 1} : tensor<?x8xf32, #a> -> tensor<?x8xf32, #b>
  return
}

// -----

#a = #sl.layout<@mesh, [[], [tp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @transition_unknown_axis(%x: tensor<2x8x4xf32, #a>) {
  // expected-error @+1 {{'sl.relayout' op result #0 layout: unknown mesh axis 'xp' in dimension 2}}
  %g = sl.relayout %x : tensor<2x8x4xf32, #a> -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [], [xp]]>>
  return
}

// -----

#a = #sl.layout<@mesh, [[], [cp, tp], []]>
#b = #sl.layout<@mesh, [[], [tp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @all_gather_not_a_suffix(%x: tensor<2x8x4xf32, #a>) {
  // expected-error @+1 {{'sl.all_gather' op dimension 1 is split over [cp, tp], which does not end with [cp]}}
  %g = sl.all_gather %x {axes = ["cp"], dim = 1} : tensor<2x8x4xf32, #a> -> tensor<2x8x4xf32, #b>
  return
}

// -----

#a = #sl.layout<@mesh, [[], [cp, tp], []]>
#b = #sl.layout<@mesh, [[], [cp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @all_gather_no_axes(%x: tensor<2x8x4xf32, #a>) {
  // expected-error @+1 {{'sl.all_gather' op needs at least one axis}}
  %g = sl.all_gather %x {axes = [], dim = 1} : tensor<2x8x4xf32, #a> -> tensor<2x8x4xf32, #b>
  return
}

// -----

#a = #sl.layout<@mesh, [[], [cp, tp], []]>
#b = #sl.layout<@mesh, [[], [cp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @all_gather_dim(%x: tensor<2x8x4xf32, #a>) {
  // expected-error @+1 {{'sl.all_gather' op dim 3 is out of range for rank 3}}
  %g = sl.all_gather %x {axes = ["tp"], dim = 3} : tensor<2x8x4xf32, #a> -> tensor<2x8x4xf32, #b>
  return
}

// -----

// Gathering the whole zigzag split leaves the sequence unsplit, in order.
#a = #sl.layout<@mesh, [[], [cp] zigzag, []]>
#b = #sl.layout<@mesh, [[], [tp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @all_gather_result(%x: tensor<2x8x4xf32, #a>) {
  // expected-error @+1 {{'sl.all_gather' op result layout [[], [tp], []] does not match the expected [[], [], []]}}
  %g = sl.all_gather %x {axes = ["cp"], dim = 1} : tensor<2x8x4xf32, #a> -> tensor<2x8x4xf32, #b>
  return
}

// -----

#a = #sl.layout<@mesh, [[], [], []]>
#b = #sl.layout<@mesh, [[], [tp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @reduce_scatter_not_partial(%x: tensor<2x8x4xf32, #a>) {
  // expected-error @+1 {{'sl.reduce_scatter' op operand is not a pending sum over 'tp'}}
  %g = sl.reduce_scatter %x {axes = ["tp"], dim = 1} : tensor<2x8x4xf32, #a> -> tensor<2x8x4xf32, #b>
  return
}

// -----

// The scattered axes are appended to the dimension's split (minor-most).
#a = #sl.layout<@mesh, [[], [cp], []], partial = [tp]>
#b = #sl.layout<@mesh, [[], [tp, cp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @reduce_scatter_result(%x: tensor<2x8x4xf32, #a>) {
  // expected-error @+1 {{'sl.reduce_scatter' op result layout [[], [tp, cp], []] does not match the expected [[], [cp, tp], []]}}
  %g = sl.reduce_scatter %x {axes = ["tp"], dim = 1} : tensor<2x8x4xf32, #a> -> tensor<2x8x4xf32, #b>
  return
}

// -----

#a = #sl.layout<@mesh, [[], [], []], partial = [tp]>
#b = #sl.layout<@mesh, [[], [], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @all_reduce_not_partial(%x: tensor<2x8x4xf32, #a>) {
  // expected-error @+1 {{'sl.all_reduce' op operand is not a pending sum over 'cp'}}
  %g = sl.all_reduce %x {axes = ["cp"]} : tensor<2x8x4xf32, #a> -> tensor<2x8x4xf32, #b>
  return
}

// -----

#a = #sl.layout<@mesh, [[], [], []], partial = [tp]>
#b = #sl.layout<@mesh, [[], [tp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @all_reduce_result(%x: tensor<2x8x4xf32, #a>) {
  // expected-error @+1 {{'sl.all_reduce' op result layout [[], [tp], []] does not match the expected [[], [], []]}}
  %g = sl.all_reduce %x {axes = ["tp"]} : tensor<2x8x4xf32, #a> -> tensor<2x8x4xf32, #b>
  return
}

// -----

#a = #sl.layout<@mesh, [[ep], []]>
sl.mesh @mesh(ep = 2)
func.func @all_to_all_same_dims(%x: tensor<4x2xf32, #a>) {
  // expected-error @+1 {{'sl.all_to_all' op split_dim and concat_dim must differ}}
  %g = sl.all_to_all %x {axes = ["ep"], split_dim = 0, concat_dim = 0} : tensor<4x2xf32, #a> -> tensor<4x2xf32, #a>
  return
}

// -----

#a = #sl.layout<@mesh, [[], [ep]]>
#b = #sl.layout<@mesh, [[ep], []]>
sl.mesh @mesh(ep = 2)
func.func @all_to_all_split_dim(%x: tensor<4x2xf32, #a>) {
  // expected-error @+1 {{'sl.all_to_all' op split_dim 2 is out of range for rank 2}}
  %g = sl.all_to_all %x {axes = ["ep"], split_dim = 2, concat_dim = 1} : tensor<4x2xf32, #a> -> tensor<4x2xf32, #b>
  return
}

// -----

#a = #sl.layout<@mesh, [[], []]>
#b = #sl.layout<@mesh, [[ep], []]>
sl.mesh @mesh(ep = 2)
func.func @all_to_all_concat_not_split(%x: tensor<4x2xf32, #a>) {
  // expected-error @+1 {{'sl.all_to_all' op dimension 1 is split over [], which does not end with [ep]}}
  %g = sl.all_to_all %x {axes = ["ep"], split_dim = 0, concat_dim = 1} : tensor<4x2xf32, #a> -> tensor<4x2xf32, #b>
  return
}

// -----

#a = #sl.layout<@mesh, [[], [ep]]>
#b = #sl.layout<@mesh, [[], [ep]]>
sl.mesh @mesh(ep = 2)
func.func @all_to_all_result(%x: tensor<4x2xf32, #a>) {
  // expected-error @+1 {{'sl.all_to_all' op result layout [[], [ep]] does not match the expected [[ep], []]}}
  %g = sl.all_to_all %x {axes = ["ep"], split_dim = 0, concat_dim = 1} : tensor<4x2xf32, #a> -> tensor<4x2xf32, #b>
  return
}

// -----

#a = #sl.layout<@mesh, [[], [], []]>
#b = #sl.layout<@mesh, [[], [], [tp]]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @slice_result(%x: tensor<2x8x4xf32, #a>) {
  // expected-error @+1 {{'sl.slice' op result layout [[], [], [tp]] does not match the expected [[], [tp], []]}}
  %g = sl.slice %x {axes = ["tp"], dim = 1} : tensor<2x8x4xf32, #a> -> tensor<2x8x4xf32, #b>
  return
}

// -----

// A slice keeps the pending sum.
#a = #sl.layout<@mesh, [[], [], []], partial = [cp]>
#b = #sl.layout<@mesh, [[], [tp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @slice_drops_pending_sum(%x: tensor<2x8x4xf32, #a>) {
  // expected-error @+1 {{'sl.slice' op result layout [[], [tp], []] does not match the expected [[], [tp], []], partial = [cp]}}
  %g = sl.slice %x {axes = ["tp"], dim = 1} : tensor<2x8x4xf32, #a> -> tensor<2x8x4xf32, #b>
  return
}

// -----

#a = #sl.layout<@mesh, [[], [], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @slice_no_axes(%x: tensor<2x8x4xf32, #a>) {
  // expected-error @+1 {{'sl.slice' op needs at least one axis}}
  %g = sl.slice %x {axes = [], dim = 1} : tensor<2x8x4xf32, #a> -> tensor<2x8x4xf32, #a>
  return
}

// -----

#a = #sl.layout<@mesh, [[], [cp] zigzag, []]>
#b = #sl.layout<@mesh, [[], [], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @reorder_changes_split(%x: tensor<2x8x4xf32, #a>) {
  // expected-error @+1 {{'sl.reorder' op may change only the chunk order; splits and pending sums must stay}}
  %g = sl.reorder %x : tensor<2x8x4xf32, #a> -> tensor<2x8x4xf32, #b>
  return
}

// -----

#a = #sl.layout<@mesh, [[], [cp], []], partial = [tp]>
#b = #sl.layout<@mesh, [[], [cp] zigzag, []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @reorder_changes_pending_sum(%x: tensor<2x8x4xf32, #a>) {
  // expected-error @+1 {{'sl.reorder' op may change only the chunk order; splits and pending sums must stay}}
  %g = sl.reorder %x : tensor<2x8x4xf32, #a> -> tensor<2x8x4xf32, #b>
  return
}

// -----

#a = #sl.layout<@mesh, [[], [cp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @halo_axes(%x: tensor<1x8x4xf32, #a>) {
  // expected-error @+1 {{'sl.halo' op axes must be the axes that split x's sequence, [cp]}}
  %h = sl.halo %x {axes = ["tp"], width = 3} : tensor<1x8x4xf32, #a> -> tensor<1x6x4xf32, #a>
  return
}

// -----

#a = #sl.layout<@mesh, [[], [cp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @halo_width(%x: tensor<1x8x4xf32, #a>) {
  // expected-error @+1 {{'sl.halo' op width must be positive}}
  %h = sl.halo %x {axes = ["cp"], width = 0} : tensor<1x8x4xf32, #a> -> tensor<1x0x4xf32, #a>
  return
}

// -----

#a = #sl.layout<@mesh, [[], [cp]]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @halo_rank(%x: tensor<8x4xf32, #a>) {
  // expected-error @+1 {{'sl.halo' op x must have rank 3, got 'tensor<8x4xf32, #sl.layout<@mesh, [[], [cp]]>>'}}
  %h = sl.halo %x {axes = ["cp"], width = 3} : tensor<8x4xf32, #a> -> tensor<6x4xf32, #a>
  return
}

// -----

#a = #sl.layout<@mesh, [[], [cp], []], partial = [tp]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @halo_pending_sum(%x: tensor<1x8x4xf32, #a>) {
  // expected-error @+1 {{'sl.halo' op x cannot be a pending sum}}
  %h = sl.halo %x {axes = ["cp"], width = 3} : tensor<1x8x4xf32, #a> -> tensor<1x6x4xf32, #a>
  return
}

// -----

#a = #sl.layout<@mesh, [[], [cp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @halo_result_shape(%x: tensor<1x8x4xf32, #a>) {
  // expected-error @+1 {{'sl.halo' op result must be [batch, 2 chunks * 3, channels]}}
  %h = sl.halo %x {axes = ["cp"], width = 3} : tensor<1x8x4xf32, #a> -> tensor<1x4x4xf32, #a>
  return
}

// -----

// In zigzag order each rank has 2 chunks: 2 * cp = 4 in all.
#a = #sl.layout<@mesh, [[], [cp] zigzag, []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @halo_result_shape_zigzag(%x: tensor<1x8x4xf32, #a>) {
  // expected-error @+1 {{'sl.halo' op result must be [batch, 4 chunks * 1, channels]}}
  %h = sl.halo %x {axes = ["cp"], width = 1} : tensor<1x8x4xf32, #a> -> tensor<1x8x4xf32, #a>
  return
}

// -----

#a = #sl.layout<@mesh, [[], [cp], []]>
#b = #sl.layout<@mesh, [[], [cp], [tp]]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @halo_result_layout(%x: tensor<1x8x4xf32, #a>) {
  // expected-error @+1 {{'sl.halo' op result layout [[], [cp], [tp]] does not match the expected [[], [cp], []]}}
  %h = sl.halo %x {axes = ["cp"], width = 3} : tensor<1x8x4xf32, #a> -> tensor<1x6x4xf32, #b>
  return
}

// -----

#s = #sl.layout<@mesh, [[], [], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @scan_state_exchange_split(%s: tensor<2x1x4xf32, #s>) {
  // expected-error @+1 {{'sl.scan_state_exchange' op states and decays must be split over [cp] along the chunk dimension}}
  %i = sl.scan_state_exchange %s, %s {axes = ["cp"]} : (tensor<2x1x4xf32, #s>, tensor<2x1x4xf32, #s>) -> tensor<2x1x4xf32, #s>
  return
}

// -----

func.func @scan_state_exchange_without_layouts(%s: tensor<2x1x4xf32>) {
  // expected-error @+1 {{'sl.scan_state_exchange' op states, decays and the result must carry #sl.layout encodings}}
  %i = sl.scan_state_exchange %s, %s {axes = ["cp"]} : (tensor<2x1x4xf32>, tensor<2x1x4xf32>) -> tensor<2x1x4xf32>
  return
}

// -----

#s = #sl.layout<@mesh, [[cp], [], []]>
#r = #sl.layout<@mesh, [[], [], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @scan_state_exchange_result(%s: tensor<2x1x4xf32, #s>) {
  // expected-error @+1 {{'sl.scan_state_exchange' op failed to verify that all of {states, result} have same type}}
  %i = sl.scan_state_exchange %s, %s {axes = ["cp"]} : (tensor<2x1x4xf32, #s>, tensor<2x1x4xf32, #s>) -> tensor<2x1x4xf32, #r>
  return
}

// -----

#s = #sl.layout<@mesh, [[cp], [], []]>
#d = #sl.layout<@mesh, [[cp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @scan_state_exchange_decays_shape(%s: tensor<2x1x4xf32, #s>, %d: tensor<2x4xf32, #d>) {
  // expected-error @+1 {{'sl.scan_state_exchange' op decays must be [chunks, ...] and a prefix of the states' shape}}
  %i = sl.scan_state_exchange %s, %d {axes = ["cp"]} : (tensor<2x1x4xf32, #s>, tensor<2x4xf32, #d>) -> tensor<2x1x4xf32, #s>
  return
}

// -----

#s = #sl.layout<@mesh, [[cp], [], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @scan_state_exchange_no_axes(%s: tensor<2x1x4xf32, #s>) {
  // expected-error @+1 {{'sl.scan_state_exchange' op needs at least one axis}}
  %i = sl.scan_state_exchange %s, %s {axes = []} : (tensor<2x1x4xf32, #s>, tensor<2x1x4xf32, #s>) -> tensor<2x1x4xf32, #s>
  return
}

// -----

#s = #sl.layout<@mesh, [[cp], [], []], partial = [tp]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @scan_state_exchange_pending_sum(%s: tensor<2x1x4xf32, #s>) {
  // expected-error @+1 {{'sl.scan_state_exchange' op summaries cannot be pending sums}}
  %i = sl.scan_state_exchange %s, %s {axes = ["cp"]} : (tensor<2x1x4xf32, #s>, tensor<2x1x4xf32, #s>) -> tensor<2x1x4xf32, #s>
  return
}

// -----

// Zigzag summaries with contiguous decays: the ranks would combine the
// decays of other chunks.
#s = #sl.layout<@mesh, [[cp] zigzag, [], []]>
#d = #sl.layout<@mesh, [[cp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @scan_state_exchange_decay_order(%s: tensor<4x1x4xf32, #s>, %d: tensor<4x1xf32, #d>) {
  // expected-error @+1 {{'sl.scan_state_exchange' op decays must be split like the states' leading dimensions; dimension 0 of the states is split over [cp] zigzag}}
  %i = sl.scan_state_exchange %s, %d {axes = ["cp"]} : (tensor<4x1x4xf32, #s>, tensor<4x1xf32, #d>) -> tensor<4x1x4xf32, #s>
  return
}

// -----

// Heads split over tp in the states but whole in the decays.
#s = #sl.layout<@mesh, [[cp], [], [tp], [], []]>
#d = #sl.layout<@mesh, [[cp], [], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @scan_state_exchange_decay_split(%s: tensor<2x1x4x4x4xf32, #s>, %d: tensor<2x1x4xf32, #d>) {
  // expected-error @+1 {{'sl.scan_state_exchange' op decays must be split like the states' leading dimensions; dimension 2 of the states is split over [tp]}}
  %i = sl.scan_state_exchange %s, %d {axes = ["cp"]} : (tensor<2x1x4x4x4xf32, #s>, tensor<2x1x4xf32, #d>) -> tensor<2x1x4x4x4xf32, #s>
  return
}

// -----

#s = #sl.layout<@mesh, [[cp], [], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @scan_state_exchange_element_types(%s: tensor<2x1x4xf32, #s>, %d: tensor<2x1x4xbf16, #s>) {
  // expected-error @+1 {{'sl.scan_state_exchange' op operand #1 has element type 'bf16' but 'f32' is used elsewhere in the op}}
  %i = sl.scan_state_exchange %s, %d {axes = ["cp"]} : (tensor<2x1x4xf32, #s>, tensor<2x1x4xbf16, #s>) -> tensor<2x1x4xf32, #s>
  return
}
