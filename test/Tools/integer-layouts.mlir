// Token ids and the router's expert indices (i32) re-laid out by collectives,
// end to end: the program compiles to a plan, and the plan runs on thread
// ranks with every i32 output equal to the single-device run's (and under
// mpirun in mpi-integer-layouts.test).
// RUN: shardline-compile %s --emit mlir | FileCheck %s --check-prefix=KEPT
// RUN: shardline-compile %s --emit report | FileCheck %s --check-prefix=KEPT-BYTES
// RUN: shardline-compile %s --emit rank --rank 1 | FileCheck %s --check-prefix=RANK
// RUN: shardline-compile %s --emit plan -o %t.slp
// RUN: shardline-run %t.slp --ranks 4 --verify | FileCheck %s

// The pipeline re-places the transitions of the ids by bytes (432 bytes per
// rank where the program as written sends 576): the all-to-all takes the
// zigzag tokens directly (the reorder before it goes), the tp-split output is
// sliced before it is gathered, and the relayout of the zigzag tokens to the
// contiguous sequence split over (cp, tp) starts from the batch-split ids the
// all-to-all made: a local slice over tp and one all-to-all of both axes back
// onto the sequence (the zigzag order is undone by the first all-to-all).
// KEPT: how = "met sl.all_to_all and became sl.all_to_all", {{.*}}op = "reorder"
// KEPT: %[[A:.*]] = sl.all_to_all %arg0 {axes = ["cp"], concat_dim = 1 : i64, split_dim = 0 : i64} : tensor<4x16xi32
// KEPT: %[[S:.*]] = sl.slice %[[A]] {axes = ["tp"], dim = 1 : i64} : tensor<4x16xi32
// KEPT: sl.all_gather %[[S]] {axes = ["cp"], dim = 0 : i64} : tensor<4x16xi32
// KEPT: sl.all_gather %{{.*}} : tensor<4x16x2xi32
// KEPT: %[[B:.*]] = sl.slice %[[A]] {axes = ["tp"], dim = 0 : i64} : tensor<4x16xi32
// KEPT-NEXT: sl.all_to_all %[[B]] {axes = ["cp", "tp"], concat_dim = 0 : i64, split_dim = 1 : i64} : tensor<4x16xi32
// KEPT-NOT: sl.relayout
// KEPT-BYTES: totals: 432 bytes sent per rank

// Rank 1 (cp 0, tp 1) holds 8 of the 16 zigzag tokens; the all-to-all gives
// it 2 of the 4 sequences whole. It reads zigzag chunks, whose concatenation
// is out of sequence order, so it stays an sl op with its group.
// RANK: sl.all_to_all %arg0 {{.*}}sl.group = array<i64: 1, 3>{{.*}} : tensor<4x8xi32> -> tensor<2x16xi32>

// CHECK: model ids on 4 ranks (threads), seed 1
// CHECK: bytes sent per rank: [[B:[0-9]+]] measured, [[B]] in the report
// CHECK: relative error at most 0.0001 for f32, 0 for i32; bytes match the report; arena peak matches the report
// CHECK-NEXT: PASS

sl.mesh @mesh(cp = 2, tp = 2)
#zigzag = #sl.layout<@mesh, [[], [cp] zigzag]>
#cp = #sl.layout<@mesh, [[], [cp]]>
#batch = #sl.layout<@mesh, [[cp], []]>
#rep = #sl.layout<@mesh, [[], []]>
#tp = #sl.layout<@mesh, [[], [tp]]>
#zigzag3 = #sl.layout<@mesh, [[], [cp] zigzag, []]>
#rep3 = #sl.layout<@mesh, [[], [], []]>
#sp = #sl.layout<@mesh, [[], [cp, tp]]>
func.func @ids(%tokens: tensor<4x16xi32, #zigzag> {sl.name = "tokens"})
    -> (tensor<4x16xi32, #batch>, tensor<4x16xi32, #tp>, tensor<4x16x2xi32, #rep3>,
        tensor<4x16x2xf32, #zigzag3>, tensor<4x16xi32, #sp>) {
  // Token ids: zigzag -> contiguous -> split by sequence -> whole -> split over tp.
  %a = sl.reorder %tokens : tensor<4x16xi32, #zigzag> -> tensor<4x16xi32, #cp>
  %b = sl.all_to_all %a {axes = ["cp"], split_dim = 0, concat_dim = 1} : tensor<4x16xi32, #cp> -> tensor<4x16xi32, #batch>
  %c = sl.all_gather %b {axes = ["cp"], dim = 0} : tensor<4x16xi32, #batch> -> tensor<4x16xi32, #rep>
  %d = sl.slice %c {axes = ["tp"], dim = 1} : tensor<4x16xi32, #rep> -> tensor<4x16xi32, #tp>
  // Router indices of the zigzag tokens, gathered over cp.
  %t = sl.weight "table" : tensor<32x4xf32, #rep>
  %l = sl.embedding %tokens, %t : (tensor<4x16xi32, #zigzag>, tensor<32x4xf32, #rep>) -> tensor<4x16x4xf32, #zigzag3>
  %w, %i = sl.router_topk %l {k = 2} : (tensor<4x16x4xf32, #zigzag3>) -> (tensor<4x16x2xf32, #zigzag3>, tensor<4x16x2xi32, #zigzag3>)
  %g = sl.all_gather %i {axes = ["cp"], dim = 1} : tensor<4x16x2xi32, #zigzag3> -> tensor<4x16x2xi32, #rep3>
  // Any other change of layout, for sl-insert-collectives to lower.
  %s = sl.relayout %tokens : tensor<4x16xi32, #zigzag> -> tensor<4x16xi32, #sp>
  return %b, %d, %g, %w, %s : tensor<4x16xi32, #batch>, tensor<4x16xi32, #tp>, tensor<4x16x2xi32, #rep3>, tensor<4x16x2xf32, #zigzag3>, tensor<4x16xi32, #sp>
}
