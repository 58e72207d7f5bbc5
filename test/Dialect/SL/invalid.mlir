// RUN: shardline-opt %s -split-input-file -verify-diagnostics

// mesh: duplicate axis
// expected-error @+1 {{'sl.mesh' op declares axis 'tp' twice}}
sl.mesh @mesh(tp = 2, tp = 4)
// -----
// mesh: size below one
// expected-error @+1 {{'sl.mesh' op axis 'tp' has size 0; sizes must be >= 1}}
sl.mesh @mesh(tp = 0)
// -----
// layout: two chunk orders
// expected-error @+1 {{only one dimension may carry a chunk order}}
func.func @f(%x: tensor<2x8xf32, #sl.layout<@mesh, [[cp] zigzag, [tp] zigzag]>>) { return }
// -----
// layout: nested mesh symbol
// expected-error @+1 {{expected a flat mesh symbol such as @mesh}}
func.func @f(%x: tensor<8xf32, #sl.layout<@a::@b, [[tp]]>>) { return }
// -----
// layout: axis in two dimensions
// expected-error @+1 {{invalid layout: mesh axis 'tp' is used twice (again in dimension 1)}}
func.func @f(%x: tensor<8x8xf32, #sl.layout<@mesh, [[tp], [tp]]>>) { return }
// -----
// layout: axis split and partial
// expected-error @+1 {{invalid layout: mesh axis 'tp' is used twice (again in partial)}}
func.func @f(%x: tensor<8xf32, #sl.layout<@mesh, [[tp]], partial = [tp]>>) { return }
// -----
// layout: zigzag on an unsplit dimension
// expected-error @+1 {{invalid layout: zigzag order on dimension 0, which no axis splits}}
func.func @f(%x: tensor<8xf32, #sl.layout<@mesh, [[] zigzag]>>) { return }
// -----
// op: unknown mesh
func.func @f(%x: tensor<8xf32, #sl.layout<@nomesh, [[tp]]>>) -> tensor<8xf32> {
  // expected-error @+1 {{'sl.silu' op operand #0 refers to unknown mesh @nomesh}}
  %y = sl.silu %x : (tensor<8xf32, #sl.layout<@nomesh, [[tp]]>>) -> tensor<8xf32>
  return %y : tensor<8xf32>
}
// -----
// op: unknown axis
sl.mesh @mesh(tp = 2)
func.func @f(%x: tensor<8xf32, #sl.layout<@mesh, [[xp]]>>) -> tensor<8xf32> {
  // expected-error @+1 {{'sl.silu' op operand #0 layout: unknown mesh axis 'xp' in dimension 0}}
  %y = sl.silu %x : (tensor<8xf32, #sl.layout<@mesh, [[xp]]>>) -> tensor<8xf32>
  return %y : tensor<8xf32>
}
// -----
// op: split does not divide
sl.mesh @mesh(tp = 4)
func.func @f(%x: tensor<6xf32, #sl.layout<@mesh, [[tp]]>>) -> tensor<6xf32> {
  // expected-error @+1 {{'sl.silu' op operand #0 layout: dimension 0 of size 6 is not divisible by 4 (the size of [tp])}}
  %y = sl.silu %x : (tensor<6xf32, #sl.layout<@mesh, [[tp]]>>) -> tensor<6xf32>
  return %y : tensor<6xf32>
}
// -----
// op: zigzag needs 2n
sl.mesh @mesh(cp = 4)
func.func @f(%x: tensor<1x4x2xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>) -> tensor<1x4x2xf32> {
  // expected-error @+1 {{'sl.silu' op operand #0 layout: dimension 1 of size 4 cannot be split in zigzag order over [cp] (needs a multiple of 8)}}
  %y = sl.silu %x : (tensor<1x4x2xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>) -> tensor<1x4x2xf32>
  return %y : tensor<1x4x2xf32>
}
// -----
// op: pending sum on integer ids
sl.mesh @mesh(tp = 2)
func.func @f(%ids: tensor<2x8xi32, #sl.layout<@mesh, [[], []], partial = [tp]>>, %t: tensor<16x4xf32>) -> tensor<2x8x4xf32> {
  // expected-error @+1 {{'sl.embedding' op operand #0 is an integer tensor and cannot be a pending sum}}
  %e = sl.embedding %ids, %t : (tensor<2x8xi32, #sl.layout<@mesh, [[], []], partial = [tp]>>, tensor<16x4xf32>) -> tensor<2x8x4xf32>
  return %e : tensor<2x8x4xf32>
}
// -----
// op: values on two meshes
sl.mesh @a(tp = 2)
sl.mesh @b(tp = 2)
func.func @f(%x: tensor<8xf32, #sl.layout<@a, [[tp]]>>, %y: tensor<8xf32, #sl.layout<@b, [[tp]]>>) -> tensor<8xf32> {
  // expected-error @+1 {{'sl.add' op operand #1 refers to mesh @b but other values use @a}}
  %z = sl.add %x, %y : (tensor<8xf32, #sl.layout<@a, [[tp]]>>, tensor<8xf32, #sl.layout<@b, [[tp]]>>) -> tensor<8xf32>
  return %z : tensor<8xf32>
}
// -----
// rule: chunk order on a non-sequence dimension
sl.mesh @mesh(tp = 2)
func.func @f(%x: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], [tp] zigzag]>>, %w: tensor<16x4xf32, #sl.layout<@mesh, [[tp], []]>>) -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [], []], partial = [tp]>> {
  // expected-error @+1 {{'sl.linear' op operand #0 (x) dimension 2 (k) carries a chunk order but is not a sequence dimension}}
  %y = sl.linear %x, %w : (tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], [tp] zigzag]>>, tensor<16x4xf32, #sl.layout<@mesh, [[tp], []]>>) -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [], []], partial = [tp]>>
  return %y : tensor<2x8x4xf32, #sl.layout<@mesh, [[], [], []], partial = [tp]>>
}
// -----
// rule: normalised dimension split
sl.mesh @mesh(tp = 2)
func.func @f(%x: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], [tp]]>>, %w: tensor<16xf32, #sl.layout<@mesh, [[tp]]>>) -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], [tp]]>> {
  // expected-error @+1 {{'sl.rms_norm' op operand #0 (x) dimension 2 (h) is split over [tp] but the op needs it whole; gather it first}}
  %y = sl.rms_norm %x, %w : (tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], [tp]]>>, tensor<16xf32, #sl.layout<@mesh, [[tp]]>>) -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], [tp]]>>
  return %y : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], [tp]]>>
}
// -----
// rule: attention keys split without remedy
sl.mesh @mesh(cp = 2)
func.func @f(%q: tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, %k: tensor<1x8x8xf32, #sl.layout<@mesh, [[], [cp], []]>>) -> tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>> {
  // expected-error @+1 {{'sl.attention' op operand #1 (k) dimension 1 (t) is sequence-mixing and split over [cp] without a remedy for 'cp': exchange keys and values (sl.ring_attention over these axes, an all-gather of K and V, or an all-to-all sequence<->heads)}}
  %o = sl.attention %q, %k, %k {heads = 4, kv_heads = 2} : (tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<1x8x8xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<1x8x8xf32, #sl.layout<@mesh, [[], [cp], []]>>) -> tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>
  return %o : tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>
}
// -----
// rule: conv split without halo
sl.mesh @mesh(cp = 2)
func.func @f(%x: tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>, %w: tensor<4x4xf32, #sl.layout<@mesh, [[], []]>>, %b: tensor<4xf32, #sl.layout<@mesh, [[]]>>) -> tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>> {
  // expected-error @+1 {{'sl.causal_conv1d' op operand #0 (x) dimension 1 (s) is sequence-mixing and split over [cp] without a remedy for 'cp': pass the preceding tokens as a halo operand (sl.halo over these axes)}}
  %y = sl.causal_conv1d %x, %w, %b : (tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<4x4xf32, #sl.layout<@mesh, [[], []]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>) -> tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>
  return %y : tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>
}
// -----
// rule: scan split without chunk_axes
sl.mesh @mesh(cp = 2)
func.func @f(%x: tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>, %v: tensor<4xf32, #sl.layout<@mesh, [[]]>>) -> tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>> {
  // expected-error @+1 {{'sl.rglru_scan' op operand #0 (x) dimension 1 (s) is sequence-mixing and split over [cp] without a remedy for 'cp': scan chunks from zero with chunk_axes and pass states (sl.scan_state_exchange)}}
  %y, %s, %d = sl.rglru_scan %x, %v, %v, %v, %v, %v : (tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>) -> (tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<1x4xf32, #sl.layout<@mesh, [[], []]>>, tensor<1x4xf32, #sl.layout<@mesh, [[], []]>>)
  return %y : tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>
}
// -----
// rule: nonlinear op on a pending sum
sl.mesh @mesh(tp = 2)
func.func @f(%x: tensor<8xf32, #sl.layout<@mesh, [[]], partial = [tp]>>) -> tensor<8xf32, #sl.layout<@mesh, [[]], partial = [tp]>> {
  // expected-error @+1 {{'sl.silu' op operand #0 (x) is a pending sum over [tp] but the op is not linear in it; all-reduce or reduce-scatter it first}}
  %y = sl.silu %x : (tensor<8xf32, #sl.layout<@mesh, [[]], partial = [tp]>>) -> tensor<8xf32, #sl.layout<@mesh, [[]], partial = [tp]>>
  return %y : tensor<8xf32, #sl.layout<@mesh, [[]], partial = [tp]>>
}
// -----
// rule: add of a pending sum and a whole value
sl.mesh @mesh(tp = 2)
func.func @f(%x: tensor<8xf32, #sl.layout<@mesh, [[]], partial = [tp]>>, %y: tensor<8xf32, #sl.layout<@mesh, [[]]>>) -> tensor<8xf32, #sl.layout<@mesh, [[]], partial = [tp]>> {
  // expected-error @+1 {{'sl.add' op operand #1 (rhs) is not a pending sum but operand #0 (lhs) is one over [tp]; a sum needs the same pending sum in every operand}}
  %z = sl.add %x, %y : (tensor<8xf32, #sl.layout<@mesh, [[]], partial = [tp]>>, tensor<8xf32, #sl.layout<@mesh, [[]]>>) -> tensor<8xf32, #sl.layout<@mesh, [[]], partial = [tp]>>
  return %z : tensor<8xf32, #sl.layout<@mesh, [[]], partial = [tp]>>
}
// -----
// rule: mismatched contraction
sl.mesh @mesh(tp = 2)
func.func @f(%x: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], [tp]]>>, %w: tensor<16x4xf32, #sl.layout<@mesh, [[], []]>>) -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [], []], partial = [tp]>> {
  // expected-error @+1 {{'sl.linear' op operand #1 (weight) dimension 0 (k) is split over [] but operand #0 (x) dimension 2 (k) is split over [tp]}}
  %y = sl.linear %x, %w : (tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], [tp]]>>, tensor<16x4xf32, #sl.layout<@mesh, [[], []]>>) -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [], []], partial = [tp]>>
  return %y : tensor<2x8x4xf32, #sl.layout<@mesh, [[], [], []], partial = [tp]>>
}
// -----
// rule: result layout differs from the rule's
sl.mesh @mesh(tp = 2)
func.func @f(%x: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], [tp]]>>, %w: tensor<16x4xf32, #sl.layout<@mesh, [[tp], []]>>) -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [], [tp]]>> {
  // expected-error @+1 {{'sl.linear' op result #0 (result) has layout [[], [], [tp]] but the operands' layouts give [[], [], []], partial = [tp]}}
  %y = sl.linear %x, %w : (tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], [tp]]>>, tensor<16x4xf32, #sl.layout<@mesh, [[tp], []]>>) -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [], [tp]]>>
  return %y : tensor<2x8x4xf32, #sl.layout<@mesh, [[], [], [tp]]>>
}
// -----
// rule: split cuts through heads
sl.mesh @mesh(tp = 4)
func.func @f(%x: tensor<1x8x16xf32, #sl.layout<@mesh, [[], [], [tp]]>>) -> tensor<1x8x16xf32, #sl.layout<@mesh, [[], [], [tp]]>> {
  // expected-error @+1 {{'sl.rope' op operand #0 (x) dimension 2 (heads) is split 4 ways over [tp], which does not divide its 2 heads}}
  %y = sl.rope %x {head_dim = 8} : (tensor<1x8x16xf32, #sl.layout<@mesh, [[], [], [tp]]>>) -> tensor<1x8x16xf32, #sl.layout<@mesh, [[], [], [tp]]>>
  return %y : tensor<1x8x16xf32, #sl.layout<@mesh, [[], [], [tp]]>>
}
// -----
// weight: bad init
func.func @f() {
  // expected-error @+1 {{'sl.weight' op init must be 'normal', 'uniform' or 'constant', got 'zeros'}}
  %w = sl.weight "w" {init = "zeros"} : tensor<4xf32>
  return
}
// -----
// weight: pending sum
sl.mesh @mesh(tp = 2)
func.func @f() {
  // expected-error @+1 {{'sl.weight' op a weight cannot be a pending sum}}
  %w = sl.weight "w" : tensor<4xf32, #sl.layout<@mesh, [[]], partial = [tp]>>
  return
}
// -----
// shapes: linear contraction
func.func @f(%x: tensor<2x8x16xf32>, %w: tensor<12x4xf32>) {
  // expected-error @+1 {{'sl.linear' op contracting dimensions differ: x has 16 features, weight has 12 rows}}
  %y = sl.linear %x, %w : (tensor<2x8x16xf32>, tensor<12x4xf32>) -> tensor<2x8x4xf32>
  return
}
// -----
// shapes: rms_norm weight
func.func @f(%x: tensor<2x8x16xf32>, %w: tensor<8xf32>) {
  // expected-error @+1 {{'sl.rms_norm' op weight dimension 0 must be 16 (normalised dimension of x), got 8}}
  %y = sl.rms_norm %x, %w : (tensor<2x8x16xf32>, tensor<8xf32>) -> tensor<2x8x16xf32>
  return
}
// -----
// shapes: attention heads not a multiple of kv heads
func.func @f(%q: tensor<1x8x24xf32>, %k: tensor<1x8x16xf32>) {
  // expected-error @+1 {{'sl.attention' op heads (3) must be a positive multiple of kv_heads (2)}}
  %o = sl.attention %q, %k, %k {heads = 3, kv_heads = 2} : (tensor<1x8x24xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>) -> tensor<1x8x24xf32>
  return
}
// -----
// shapes: rope odd head_dim
func.func @f(%x: tensor<1x8x15xf32>) {
  // expected-error @+1 {{'sl.rope' op head_dim must be positive and even, got 5}}
  %y = sl.rope %x {head_dim = 5} : (tensor<1x8x15xf32>) -> tensor<1x8x15xf32>
  return
}
// -----
// shapes: router k out of range
func.func @f(%l: tensor<2x8x4xf32>) {
  // expected-error @+1 {{'sl.router_topk' op k must be in [1, 4], got 5}}
  %w, %i = sl.router_topk %l {k = 5} : (tensor<2x8x4xf32>) -> (tensor<2x8x5xf32>, tensor<2x8x5xi32>)
  return
}
// -----
// shapes: ssd dt
func.func @f(%x: tensor<1x8x16xf32>, %dt: tensor<1x8x3xf32>, %h: tensor<4xf32>, %bc: tensor<1x8x8xf32>) {
  // expected-error @+1 {{'sl.ssd_scan' op dt must be [batch, seq, heads]}}
  %y, %s, %d = sl.ssd_scan %x, %dt, %h, %bc, %bc, %h, %h {heads = 4, groups = 2} : (tensor<1x8x16xf32>, tensor<1x8x3xf32>, tensor<4xf32>, tensor<1x8x8xf32>, tensor<1x8x8xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<1x8x16xf32>, tensor<1x4x4x4xf32>, tensor<1x4xf32>)
  return
}
// -----
// shapes: halo width
sl.mesh @mesh(cp = 2)
func.func @f(%x: tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>, %w: tensor<4x4xf32, #sl.layout<@mesh, [[], []]>>, %b: tensor<4xf32, #sl.layout<@mesh, [[]]>>, %h: tensor<1x4x4xf32, #sl.layout<@mesh, [[], [cp], []]>>) {
  // expected-error @+1 {{'sl.causal_conv1d' op halo holds 4 tokens, not a multiple of the 3 that each chunk needs}}
  %y = sl.causal_conv1d %x, %w, %b halo %h : (tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<4x4xf32, #sl.layout<@mesh, [[], []]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<1x4x4xf32, #sl.layout<@mesh, [[], [cp], []]>>) -> tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>
  return
}
// -----
// shapes: chunked summaries count
sl.mesh @mesh(cp = 2)
func.func @f(%x: tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>, %v: tensor<4xf32, #sl.layout<@mesh, [[]]>>) {
  // expected-error @+1 {{'sl.rglru_scan' op state dimension 0 must be 2 (chunks along the sequence), got 4}}
  %y, %s, %d = sl.rglru_scan %x, %v, %v, %v, %v, %v {chunk_axes = ["cp"]} : (tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>, tensor<4xf32, #sl.layout<@mesh, [[]]>>) -> (tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<4x1x4xf32, #sl.layout<@mesh, [[cp], [], []]>>, tensor<4x1x4xf32, #sl.layout<@mesh, [[cp], [], []]>>)
  return
}
// -----
// shapes: element types differ
func.func @f(%x: tensor<8xf32>, %y: tensor<8xbf16>) {
  // expected-error @+1 {{'sl.add' op operand #1 has element type 'bf16' but 'f32' is used elsewhere in the op}}
  %z = sl.add %x, %y : (tensor<8xf32>, tensor<8xbf16>) -> tensor<8xf32>
  return
}
// -----
// shapes: dynamic
func.func @f(%x: tensor<?xf32>) {
  // expected-error @+1 {{'sl.silu' op operand #0 must have a static shape, got 'tensor<?xf32>'}}
  %z = sl.silu %x : (tensor<?xf32>) -> tensor<?xf32>
  return
}
// -----
// transition: gather of axes that are not a suffix
sl.mesh @mesh(cp = 2, tp = 2)
func.func @f(%x: tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>) {
  // expected-error @+1 {{'sl.all_gather' op dimension 1 is split over [cp, tp], which does not end with [cp]}}
  %g = sl.all_gather %x {axes = ["cp"], dim = 1} : tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp, tp], []]>> -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [tp], []]>>
  return
}
// -----
// transition: reduce_scatter of a value that is not a pending sum
sl.mesh @mesh(tp = 2)
func.func @f(%x: tensor<2x8x4xf32, #sl.layout<@mesh, [[], [], []]>>) {
  // expected-error @+1 {{'sl.reduce_scatter' op operand is not a pending sum over 'tp'}}
  %g = sl.reduce_scatter %x {axes = ["tp"], dim = 1} : tensor<2x8x4xf32, #sl.layout<@mesh, [[], [], []]>> -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [tp], []]>>
  return
}
// -----
// transition: all_reduce result layout
sl.mesh @mesh(tp = 2)
func.func @f(%x: tensor<2x8x4xf32, #sl.layout<@mesh, [[], [], []], partial = [tp]>>) {
  // expected-error @+1 {{'sl.all_reduce' op result layout [[], [tp], []] does not match the expected [[], [], []]}}
  %g = sl.all_reduce %x {axes = ["tp"]} : tensor<2x8x4xf32, #sl.layout<@mesh, [[], [], []], partial = [tp]>> -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [tp], []]>>
  return
}
// -----
// transition: all_to_all with equal dims
sl.mesh @mesh(ep = 2)
func.func @f(%x: tensor<4x2xf32, #sl.layout<@mesh, [[ep], []]>>) {
  // expected-error @+1 {{'sl.all_to_all' op split_dim and concat_dim must differ}}
  %g = sl.all_to_all %x {axes = ["ep"], split_dim = 0, concat_dim = 0} : tensor<4x2xf32, #sl.layout<@mesh, [[ep], []]>> -> tensor<4x2xf32, #sl.layout<@mesh, [[ep], []]>>
  return
}
// -----
// transition: slice result layout
sl.mesh @mesh(tp = 2)
func.func @f(%x: tensor<2x8x4xf32, #sl.layout<@mesh, [[], [], []]>>) {
  // expected-error @+1 {{'sl.slice' op result layout [[], [], [tp]] does not match the expected [[], [tp], []]}}
  %g = sl.slice %x {axes = ["tp"], dim = 1} : tensor<2x8x4xf32, #sl.layout<@mesh, [[], [], []]>> -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [], [tp]]>>
  return
}
// -----
// transition: reorder that changes the split
sl.mesh @mesh(cp = 2)
func.func @f(%x: tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>) {
  // expected-error @+1 {{'sl.reorder' op may change only the chunk order; splits and pending sums must stay}}
  %g = sl.reorder %x : tensor<2x8x4xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>> -> tensor<2x8x4xf32, #sl.layout<@mesh, [[], [], []]>>
  return
}
// -----
// transition: halo axes
sl.mesh @mesh(cp = 2, tp = 2)
func.func @f(%x: tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>) {
  // expected-error @+1 {{'sl.halo' op axes must be the axes that split x's sequence, [cp]}}
  %h = sl.halo %x {axes = ["tp"], width = 3} : tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>> -> tensor<1x6x4xf32, #sl.layout<@mesh, [[], [cp], []]>>
  return
}
// -----
// transition: halo result shape
sl.mesh @mesh(cp = 2)
func.func @f(%x: tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>) {
  // expected-error @+1 {{'sl.halo' op result must be [batch, 2 chunks * 3, channels]}}
  %h = sl.halo %x {axes = ["cp"], width = 3} : tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>> -> tensor<1x4x4xf32, #sl.layout<@mesh, [[], [cp], []]>>
  return
}
// -----
// transition: scan_state_exchange split
sl.mesh @mesh(cp = 2)
func.func @f(%s: tensor<2x1x4xf32, #sl.layout<@mesh, [[], [], []]>>) {
  // expected-error @+1 {{'sl.scan_state_exchange' op states and decays must be split over [cp] along the chunk dimension}}
  %i = sl.scan_state_exchange %s, %s {axes = ["cp"]} : (tensor<2x1x4xf32, #sl.layout<@mesh, [[], [], []]>>, tensor<2x1x4xf32, #sl.layout<@mesh, [[], [], []]>>) -> tensor<2x1x4xf32, #sl.layout<@mesh, [[], [], []]>>
  return
}
// -----
// transition: missing layouts
func.func @f(%x: tensor<2x8x4xf32>) {
  // expected-error @+1 {{'sl.all_gather' op operand and result must carry #sl.layout encodings}}
  %g = sl.all_gather %x {axes = ["tp"], dim = 1} : tensor<2x8x4xf32> -> tensor<2x8x4xf32>
  return
}
