//===- ring_grad_test.cpp - Backward of the context-parallel exchanges ----===//
//
// The duals of the exchanges that context parallelism adds to attention
// (sl.halo_add, the dual of sl.halo; ring attention's backward) and the
// backward of windowed attention. Each runs on thread ranks through its
// kernel-table entry and is checked against the unsplit gradient (itself
// checked by finite differences of the forward kernel), with the bytes each
// rank sends.
//
//===----------------------------------------------------------------------===//

#include "comm/comm.h"
#include "exec/collectives.h"
#include "kernel_test_util.h"

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <thread>
#include <vector>

using namespace shardline::rt;
using shardline::ChunkOrder;
using shardline::Layout;
using shardline::Mesh;
using test::axesAttr;
using test::dot;
using test::expectClose;
using test::intAttr;
using test::Rng;
using test::StepRig;
using test::Vec;

namespace {

/// Runs fn(rank, collectives) on `n` thread ranks of one hub.
void onRanks(int64_t n, const Mesh &mesh, const std::function<void(int64_t, Collectives &)> &fn) {
  ThreadHub hub(n);
  std::vector<std::thread> ranks;
  for (int64_t r = 0; r < n; ++r)
    ranks.emplace_back([&, r] {
      ThreadComm comm(hub, r);
      Collectives collectives(comm, mesh);
      fn(r, collectives);
    });
  for (std::thread &t : ranks)
    t.join();
}

/// The rows of x[B, S, C] at the sequence positions `pos`.
Vec rowsAt(const Vec &x, int64_t B, int64_t S, int64_t C, const std::vector<int64_t> &pos) {
  Vec out;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t p : pos)
      out.insert(out.end(), x.begin() + (b * S + p) * C, x.begin() + (b * S + p + 1) * C);
  return out;
}

Layout sequenceSplit(ChunkOrder order) { return Layout{{{}, {"cp"}, {}}, {}, 1, order}; }

// -- sl.halo_add ------------------------------------------------------------

/// halo_add sends every halo slot's gradient back to the token it was read
/// from: on every rank, the sum over the slots (of all ranks) that read each
/// of its tokens, zero where none did, and it is the adjoint of halo
/// (<halo(x), g> = <x, halo_add(g)> summed over ranks). Each rank sends the
/// rows its halo received from others.
void checkHaloAdd(int64_t cp, ChunkOrder order, int64_t width) {
  const int64_t B = 2, S = 16, C = 3;
  Mesh mesh{{{"cp", cp}}};
  Layout seq = sequenceSplit(order);
  Rng rng(7);
  Vec x = rng.vec(B * S * C);
  int64_t chunks = order == ChunkOrder::Zigzag ? 2 : 1, local = S / cp, slots = chunks * width;
  std::vector<Vec> grads(cp), sums(cp);
  for (Vec &g : grads)
    g = rng.vec(B * slots * C);
  Vec want(B * S * C, 0.0f);
  std::vector<double> haloDot(cp), addDot(cp);
  std::vector<int64_t> haloBytes(cp), addBytes(cp), remoteRows(cp);
  std::vector<std::string> errors(cp);
  onRanks(cp, mesh, [&](int64_t r, Collectives &collectives) {
    std::vector<int64_t> xs = {B, S, C}, hs = {B, cp * slots, C};
    StepRig halo("halo", {xs}, {hs}, {axesAttr({"cp"}), intAttr(width)}, mesh, {seq, seq});
    StepRig add("halo_add", {hs, xs}, {xs}, {axesAttr({"cp"}), intAttr(width)}, mesh,
                {seq, seq, seq});
    std::vector<int64_t> pos = halo.frame.owned(0, 1, r);
    Vec mine = rowsAt(x, B, S, C, pos), h(B * slots * C), y(B * local * C, 1.0f);
    halo.bind({&mine, &h});
    add.bind({&grads[r], &mine, &y});
    for (StepRig *rig : {&halo, &add}) {
      rig->frame.self = r;
      rig->frame.collectives = &collectives;
      errors[r] += rig->verify();
      rig->step.kernel->resolve(rig->step, rig->frame);
    }
    for (const RankFacts::Row &row : halo.step.facts.receives)
      remoteRows[r] += row.rank != r;
    collectives.resetCount();
    halo.step.kernel->run(halo.step, halo.frame);
    haloBytes[r] = collectives.bytesSent();
    collectives.resetCount();
    add.step.kernel->run(add.step, add.frame);
    addBytes[r] = collectives.bytesSent();
    haloDot[r] = dot(grads[r], h);
    addDot[r] = dot(mine, y);
    sums[r] = y;
  });
  // The unsplit sum: slot j of chunk c holds position start(c) - width + j.
  for (int64_t r = 0; r < cp; ++r) {
    std::vector<int64_t> pos = shardline::ownedIndices(seq, mesh, {B, S, C}, 1, r);
    for (int64_t c = 0; c < chunks; ++c)
      for (int64_t j = 0; j < width; ++j) {
        int64_t p = pos[c * (local / chunks)] - width + j;
        if (p < 0)
          continue;
        for (int64_t b = 0; b < B; ++b)
          for (int64_t e = 0; e < C; ++e)
            want[(b * S + p) * C + e] += grads[r][(b * slots + c * width + j) * C + e];
      }
  }
  double lhs = 0, rhs = 0;
  for (int64_t r = 0; r < cp; ++r) {
    EXPECT_EQ(errors[r], "") << r;
    std::vector<int64_t> pos = shardline::ownedIndices(seq, mesh, {B, S, C}, 1, r);
    expectClose(sums[r], rowsAt(want, B, S, C, pos), 1e-6, 1e-6, "a rank's token gradients");
    EXPECT_EQ(addBytes[r], remoteRows[r] * B * C * 4) << "rank " << r;
    lhs += haloDot[r];
    rhs += addDot[r];
  }
  EXPECT_NEAR(lhs, rhs, 1e-4 * std::abs(lhs));
  int64_t haloTotal = 0, addTotal = 0;
  for (int64_t r = 0; r < cp; ++r) {
    haloTotal += haloBytes[r];
    addTotal += addBytes[r];
  }
  EXPECT_EQ(addTotal, haloTotal);
  EXPECT_GT(addTotal, 0);
}

TEST(HaloAdd, ContiguousChunksOfTwoRanks) { checkHaloAdd(2, ChunkOrder::Contiguous, 3); }

TEST(HaloAdd, ZigzagHaloWiderThanAChunk) { checkHaloAdd(4, ChunkOrder::Zigzag, 5); }

TEST(HaloAdd, ContractNamesAShortGradient) {
  Mesh mesh{{{"cp", 2}}};
  Layout seq = sequenceSplit(ChunkOrder::Contiguous);
  StepRig add("halo_add", {{2, 6, 3}, {2, 16, 3}}, {{2, 16, 3}}, {axesAttr({"cp"}), intAttr(4)},
              mesh, {seq, seq, seq});
  EXPECT_NE(add.verify().find("batch x chunks x width x channels"), std::string::npos)
      << add.verify();
}

} // namespace
