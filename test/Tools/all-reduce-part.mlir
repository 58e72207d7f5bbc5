// An all-reduce over some of a pending sum's axes leaves the others pending:
// the runtime sums over tp only, then over cp after the add. (Summing over cp
// at the first one too, as it once did, counted the cp parts twice and sent
// more bytes than the report says.) The thread and MPI ranks share this code
// (runtime/src/exec/collectives.cpp). One token and three output features:
// no dimension of the sum splits over tp, so the partial all-reduce is the
// cheapest placement and sl-elide-gathers keeps it (with 2x8x16 it would
// reduce-scatter instead and sum over cp on half the bytes).
// RUN: shardline-compile %s --emit mlir | FileCheck %s --check-prefix=KEPT
// RUN: shardline-compile %s --emit plan -o %t.slp
// RUN: shardline-run %t.slp --ranks 4 --verify | FileCheck %s

// KEPT: sl.all_reduce %{{.*}} {axes = ["tp"]}
// KEPT: sl.add
// KEPT: sl.all_reduce %{{.*}} {axes = ["cp"]}

// CHECK: bytes match the report
// CHECK-NEXT: PASS

#T = #sl.layout<@mesh, [[], []]>
#E = #sl.layout<@mesh, [[], [], []]>
#P = #sl.layout<@mesh, [[], [], []], partial = [cp, tp]>
#P1 = #sl.layout<@mesh, [[], [], []], partial = [cp]>
#K = #sl.layout<@mesh, [[], [], [cp, tp]]>
#WK = #sl.layout<@mesh, [[cp, tp], []]>
sl.mesh @mesh(cp = 2, tp = 2)
func.func @part(%ids: tensor<1x1xi32, #T> {sl.name = "tokens"}) -> tensor<1x1x3xf32, #E> {
  %t = sl.weight "table" : tensor<32x16xf32, #T>
  %w = sl.weight "w" : tensor<16x3xf32, #WK>
  %x = sl.embedding %ids, %t : (tensor<1x1xi32, #T>, tensor<32x16xf32, #T>) -> tensor<1x1x16xf32, #E>
  %s = sl.slice %x {axes = ["cp", "tp"], dim = 2} : tensor<1x1x16xf32, #E> -> tensor<1x1x16xf32, #K>
  %p = sl.linear %s, %w : (tensor<1x1x16xf32, #K>, tensor<16x3xf32, #WK>) -> tensor<1x1x3xf32, #P>
  %a = sl.all_reduce %p {axes = ["tp"]} : tensor<1x1x3xf32, #P> -> tensor<1x1x3xf32, #P1>
  %d = sl.add %a, %a : (tensor<1x1x3xf32, #P1>, tensor<1x1x3xf32, #P1>) -> tensor<1x1x3xf32, #P1>
  %b = sl.all_reduce %d {axes = ["cp"]} : tensor<1x1x3xf32, #P1> -> tensor<1x1x3xf32, #E>
  return %b : tensor<1x1x3xf32, #E>
}
