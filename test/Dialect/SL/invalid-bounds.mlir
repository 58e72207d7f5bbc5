// RUN: shardline-opt %s -split-input-file -verify-diagnostics
// Sizes past the limits of docs/reliability.md are verifier errors at the op,
// never a division by zero, an overflow or minutes of per-rank work later.

// An axis past the rank limit; 2^63-1 once ended in SIGFPE in verifyLayout.
// expected-error @+1 {{'sl.mesh' op the mesh has more than 1048576 ranks (the limit) at axis 'tp' of size 9223372036854775807}}
sl.mesh @mesh(cp = 2, tp = 9223372036854775807)

// -----

// Two axes whose product overflows int64: the count stops at the first
// axis past the limit.
// expected-error @+1 {{'sl.mesh' op the mesh has more than 1048576 ranks (the limit) at axis 'cp' of size 4294967296}}
sl.mesh @mesh(cp = 4294967296, tp = 4294967296)

// -----

// expected-error @+1 {{'sl.mesh' op the mesh has more than 1048576 ranks (the limit) at axis 'tp' of size 2}}
sl.mesh @mesh(cp = 1048576, tp = 2)

// -----

// 2^31 ranks: each axis is allowed, the product is not.
// expected-error @+1 {{'sl.mesh' op the mesh has more than 1048576 ranks (the limit) at axis 'tp' of size 2048}}
sl.mesh @mesh(dp = 1024, cp = 1024, tp = 2048)

// -----

// The limit itself is accepted.
sl.mesh @mesh(dp = 1024, tp = 1024)

// -----

// A layout on the mesh that the verifier refused is not checked against it
// with a division by its sizes.
#a = #sl.layout<@mesh, [[], [cp], []]>
// expected-error @+1 {{'sl.mesh' op the mesh has more than 1048576 ranks}}
sl.mesh @mesh(cp = 9223372036854775807)
func.func @layout_on_huge_mesh(%x: tensor<2x8x4xf32, #a>, %y: tensor<2x8x4xf32, #a>) {
  %r = sl.add %x, %y : (tensor<2x8x4xf32, #a>, tensor<2x8x4xf32, #a>) -> tensor<2x8x4xf32, #a>
  return
}

// -----

// 2^62 elements of 4 bytes: the byte count overflows int64.
func.func @bytes_overflow(%x: tensor<2x4611686018427387904xf32>, %y: tensor<2x4611686018427387904xf32>) {
  // expected-error @+1 {{'sl.add' op operand #0 'tensor<2x4611686018427387904xf32>' holds more than 2^63 bytes; a tensor holds at most 2^56}}
  %r = sl.add %x, %y : (tensor<2x4611686018427387904xf32>, tensor<2x4611686018427387904xf32>) -> tensor<2x4611686018427387904xf32>
  return
}

// -----

#a = #sl.layout<@mesh, [[], [cp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @halo_width_huge(%x: tensor<1x8x4xf32, #a>) {
  // expected-error @+1 {{'sl.halo' op width 9223372036854775807 exceeds the sequence length 8}}
  %h = sl.halo %x {axes = ["cp"], width = 9223372036854775807} : tensor<1x8x4xf32, #a> -> tensor<1x2x4xf32, #a>
  return
}

// -----

#a = #sl.layout<@mesh, [[], [cp] zigzag, []]>
sl.mesh @mesh(cp = 1048576)
func.func @halo_width_overflow(%x: tensor<1x36028797018963968x1xf16, #a>) {
  // expected-error @+1 {{'sl.halo' op width 36028797018963968 times 2097152 chunks overflows int64}}
  %h = sl.halo %x {axes = ["cp"], width = 36028797018963968} : tensor<1x36028797018963968x1xf16, #a> -> tensor<1x2097152x1xf16, #a>
  return
}

// -----

// At the tensor limit: 2^54 elements of 4 bytes.
func.func @bytes_at_limit(%x: tensor<4x4503599627370496xf32>, %y: tensor<4x4503599627370496xf32>) {
  %r = sl.add %x, %y : (tensor<4x4503599627370496xf32>, tensor<4x4503599627370496xf32>) -> tensor<4x4503599627370496xf32>
  return
}

// -----

func.func @bytes_over_limit(%x: tensor<4x4503599627370497xf32>, %y: tensor<4x4503599627370497xf32>) {
  // expected-error @+1 {{'sl.add' op operand #0 'tensor<4x4503599627370497xf32>' holds 72057594037927952 bytes; a tensor holds at most 2^56}}
  %r = sl.add %x, %y : (tensor<4x4503599627370497xf32>, tensor<4x4503599627370497xf32>) -> tensor<4x4503599627370497xf32>
  return
}
