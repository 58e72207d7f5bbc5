//===- moe_grad_test.cpp - Backward of the mixture of experts -------------===//
//
// Each backward kernel of moe_grad.cpp against central differences of the
// forward kernel the plan runs (router_topk, moe_scatter_rows,
// moe_experts_slabs, moe_gather_rows), with grad_kernels_test.cpp's step and
// tolerance; the split uses (tokens split: partial weight gradients that sum
// to the whole; experts split: a rank's slabs) against the unsplit call; and
// the kernel table's entries against the ops' names and contracts.
//
//===----------------------------------------------------------------------===//

#include "exec/verify.h"
#include "kernel_test_util.h"
#include "kernels/cpu/kernels.h"
#include "step_rig.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <numeric>
#include <vector>

namespace cpu = shardline::rt::cpu;
using namespace shardline::rt;
using shardline::Layout;
using shardline::Mesh;
using test::dot;
using test::expectClose;
using test::expectGradient;
using test::Rng;
using test::StepRig;
using test::Vec;

namespace {

using Ids = std::vector<int32_t>;

/// k distinct experts per token of T, drawn at random.
Ids routes(Rng &rng, int64_t T, int64_t k, int64_t E) {
  Ids idx(T * k);
  std::vector<int32_t> order(E);
  for (int64_t t = 0; t < T; ++t) {
    std::iota(order.begin(), order.end(), 0);
    for (int64_t j = 0; j < k; ++j) {
      std::swap(order[j], order[j + (int64_t)(rng.next() % (uint64_t)(E - j))]);
      idx[t * k + j] = order[j];
    }
  }
  return idx;
}

/// Slabs[E,T,H] holding x's rows where idx routes them, zero elsewhere.
Vec scatter(const Vec &x, const Ids &idx, int64_t E, int64_t T, int64_t H, int64_t k) {
  Vec slabs(E * T * H, 0.0f);
  cpu::moe_scatter_rows(x.data(), idx.data(), T, H, k, slabs.data());
  return slabs;
}

// -- router ----------------------------------------------------------------

/// Logits far apart (at least 0.3) so that the finite differences never
/// change the choice of experts, in a random order per token.
Vec separatedLogits(Rng &rng, int64_t T, int64_t E) {
  Vec l(T * E);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> order(E);
    std::iota(order.begin(), order.end(), 0);
    for (int64_t e = E - 1; e > 0; --e)
      std::swap(order[e], order[rng.next() % (uint64_t)(e + 1)]);
    for (int64_t e = 0; e < E; ++e)
      l[t * E + order[e]] = 0.4f * (float)e - 1.0f + rng.uniform(-0.05f, 0.05f);
  }
  return l;
}

TEST(MoEGrad, RouterThroughTheRenormalisedWeights) {
  Rng rng(61);
  for (int64_t k : {1, 2, 3}) {
    const int64_t T = 5, E = 6;
    Vec logits = separatedLogits(rng, T, E), r = rng.vec(T * k), w(T * k), dlogits(T * E);
    Ids idx(T * k);
    cpu::router_topk(logits.data(), T, E, k, w.data(), idx.data());
    cpu::router_topk_grad(w.data(), idx.data(), r.data(), T, k, E, dlogits.data());
    Ids chosen = idx;
    auto objective = [&] {
      Vec wj(T * k);
      Ids ij(T * k);
      cpu::router_topk(logits.data(), T, E, k, wj.data(), ij.data());
      EXPECT_EQ(ij, chosen) << "a difference changed the choice";
      return dot(r, wj);
    };
    expectGradient(logits, dlogits, objective, "dlogits");
    // The experts not chosen get exactly zero; with k = 1 the weight is one
    // whatever the logits, so nothing flows at all.
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e = 0; e < E; ++e)
        if (std::find(idx.begin() + t * k, idx.begin() + (t + 1) * k, e) ==
                idx.begin() + (t + 1) * k ||
            k == 1)
          EXPECT_EQ(dlogits[t * E + e], 0.0f) << "k " << k << " token " << t << " expert " << e;
    if (k > 1)
      EXPECT_NE(dlogits, Vec(T * E, 0.0f));
  }
}

// -- dispatch and combine ---------------------------------------------------

TEST(MoEGrad, DispatchSumsEachTokensRows) {
  Rng rng(62);
  const int64_t T = 6, H = 3, k = 2, E = 4;
  Ids idx = routes(rng, T, k, E);
  Vec x = rng.vec(T * H), r = rng.vec(E * T * H), dx(T * H);
  cpu::moe_dispatch_grad(r.data(), idx.data(), T, H, k, dx.data());
  expectGradient(x, dx, [&] { return dot(r, scatter(x, idx, E, T, H, k)); }, "dx");
}

TEST(MoEGrad, CombineExpertOutputsAndWeights) {
  Rng rng(63);
  const int64_t T = 6, H = 3, k = 2, E = 4;
  Ids idx = routes(rng, T, k, E);
  Vec slabs = rng.vec(E * T * H), w = rng.vec(T * k, 0.0f, 1.0f), r = rng.vec(T * H);
  Vec dslabs(E * T * H), dw(T * k);
  cpu::moe_combine_grad(w.data(), idx.data(), r.data(), T, H, k, E, dslabs.data());
  cpu::moe_combine_grad_weights(slabs.data(), idx.data(), r.data(), T, H, k, dw.data());
  auto objective = [&] {
    Vec y(T * H);
    cpu::moe_gather_rows(slabs.data(), w.data(), idx.data(), T, H, k, y.data());
    return dot(r, y);
  };
  expectGradient(slabs, dslabs, objective, "dexpert_out");
  expectGradient(w, dw, objective, "dweights");
  // The rows no slot chose have no gradient.
  for (int64_t e = 0; e < E; ++e)
    for (int64_t t = 0; t < T; ++t)
      if (std::find(idx.begin() + t * k, idx.begin() + (t + 1) * k, e) == idx.begin() + (t + 1) * k)
        for (int64_t h = 0; h < H; ++h)
          EXPECT_EQ(dslabs[(e * T + t) * H + h], 0.0f);
}

// -- experts ---------------------------------------------------------------

struct ExpertsCase {
  int64_t E = 3, T = 5, H = 4, F = 6, k = 2;
  Ids idx;
  Vec x, slabs, gate, up, down, dy;
  explicit ExpertsCase(uint64_t seed) {
    Rng rng(seed);
    idx = routes(rng, T, k, E);
    x = rng.vec(T * H);
    slabs = scatter(x, idx, E, T, H, k);
    gate = rng.vec(E * H * F);
    up = rng.vec(E * H * F);
    down = rng.vec(E * F * H);
    dy = rng.vec(E * T * H);
  }
  /// J = dy·experts(slabs); the rows the forward skips stay zero.
  double objective() const {
    Vec out(E * T * H, 0.0f);
    cpu::moe_experts_slabs(slabs.data(), E, T, gate.data(), up.data(), down.data(), H, F,
                           out.data());
    return dot(dy, out);
  }
};

TEST(MoEGrad, ExpertsTokensAndWeights) {
  ExpertsCase c(64);
  Vec dslabs(c.slabs.size()), dg(c.gate.size()), du(c.up.size()), dd(c.down.size());
  cpu::moe_experts_slabs_grad(c.slabs.data(), c.E, c.T, c.gate.data(), c.up.data(), c.down.data(),
                              c.H, c.F, c.dy.data(), dslabs.data(), dg.data(), du.data(),
                              dd.data());
  auto j = [&] { return c.objective(); };
  // Every element, the zero rows too: the experts are quadratic at zero, so
  // their difference vanishes as the kernel's zero says.
  expectGradient(c.slabs, dslabs, j, "dtokens");
  expectGradient(c.gate, dg, j, "dgate");
  expectGradient(c.up, du, j, "dup");
  expectGradient(c.down, dd, j, "ddown");
  EXPECT_NE(dg, Vec(dg.size(), 0.0f));
}

/// Split tokens (sequence, data parallelism): each part's weight gradients
/// are partial sums of the whole's. Split experts (expert parallelism): a
/// rank's slabs and weights give its experts' part of every gradient.
TEST(MoEGrad, ExpertsOverSplitTokensAndSplitExperts) {
  ExpertsCase c(65);
  const int64_t E = c.E, T = c.T, H = c.H, F = c.F;
  auto grads = [&](const Vec &slabs, const Vec &dy, int64_t experts, int64_t rows, int64_t e0) {
    std::vector<Vec> g = {Vec(experts * rows * H), Vec(experts * H * F), Vec(experts * H * F),
                          Vec(experts * F * H)};
    cpu::moe_experts_slabs_grad(slabs.data(), experts, rows, c.gate.data() + e0 * H * F,
                                c.up.data() + e0 * H * F, c.down.data() + e0 * F * H, H, F,
                                dy.data(), g[0].data(), g[1].data(), g[2].data(), g[3].data());
    return g;
  };
  std::vector<Vec> whole = grads(c.slabs, c.dy, E, T, 0);
  // Tokens [0, 2) and [2, T) of every expert.
  std::vector<Vec> parts[2];
  for (int p = 0; p < 2; ++p) {
    int64_t t0 = p ? 2 : 0, n = p ? T - 2 : 2;
    Vec slabs, dy;
    for (int64_t e = 0; e < E; ++e) {
      slabs.insert(slabs.end(), c.slabs.begin() + (e * T + t0) * H,
                   c.slabs.begin() + (e * T + t0 + n) * H);
      dy.insert(dy.end(), c.dy.begin() + (e * T + t0) * H, c.dy.begin() + (e * T + t0 + n) * H);
    }
    parts[p] = grads(slabs, dy, E, n, 0);
  }
  for (int w = 1; w < 4; ++w) {
    Vec sum(whole[w].size());
    for (size_t i = 0; i < sum.size(); ++i)
      sum[i] = parts[0][w][i] + parts[1][w][i];
    expectClose(sum, whole[w], 1e-5, 1e-6, "the tokens' partial weight gradients");
  }
  // Experts [1, E) alone.
  Vec slabs(c.slabs.begin() + T * H, c.slabs.end()), dy(c.dy.begin() + T * H, c.dy.end());
  std::vector<Vec> mine = grads(slabs, dy, E - 1, T, 1);
  const int64_t per[4] = {T * H, H * F, H * F, F * H};
  for (int w = 0; w < 4; ++w)
    expectClose(mine[w], Vec(whole[w].begin() + per[w], whole[w].end()), 1e-6, 1e-7,
                "a rank's experts");
}

// -- the kernel table -------------------------------------------------------

TEST(MoEGradKernelTable, EveryOpWithItsNames) {
  const std::vector<std::string> experts = {"tokens", "gate", "up", "down", "dy"};
  const std::map<std::string, std::pair<std::vector<std::string>, std::vector<std::string>>> want =
      {
          {"router_topk_grad", {{"weights", "indices", "dweights"}, {"dlogits"}}},
          {"moe_dispatch_grad", {{"dtokens", "indices"}, {"dx"}}},
          {"moe_experts_grad", {experts, {"dtokens"}}},
          {"moe_experts_grad_weights", {experts, {"dgate", "dup", "ddown"}}},
          {"moe_combine_grad", {{"weights", "indices", "dy"}, {"dexpert_out"}}},
          {"moe_combine_grad_weights", {{"expert_out", "indices", "dy"}, {"dweights"}}},
      };
  const KernelTable &table = cpuBackend().kernels;
  for (const auto &[kind, names] : want) {
    auto it = table.find(kind);
    ASSERT_NE(it, table.end()) << kind;
    EXPECT_EQ(it->second.operands, names.first) << kind;
    EXPECT_EQ(it->second.results, names.second) << kind;
    EXPECT_TRUE(it->second.attrs.empty()) << kind;
    EXPECT_NE(it->second.check, nullptr) << kind;
  }
}

/// The entries read their extents from the local shapes: the experts'
/// weight gradients on the rank that holds one expert of three.
TEST(MoEGradKernelEntries, ExpertsGradWeightsOnARankOfSplitExperts) {
  ExpertsCase c(66);
  const int64_t E = c.E, T = c.T, H = c.H, F = c.F;
  Mesh mesh{{{"ep", 3}}};
  Layout experts{{{"ep"}, {}, {}, {}}, {}, -1, shardline::ChunkOrder::Contiguous};
  Layout weights{{{"ep"}, {}, {}}, {}, -1, shardline::ChunkOrder::Contiguous};
  StepRig rig("moe_experts_grad_weights",
              {{E, 1, T, H}, {E, H, F}, {E, H, F}, {E, F, H}, {E, 1, T, H}},
              {{E, H, F}, {E, H, F}, {E, F, H}}, {}, mesh,
              {experts, weights, weights, weights, experts, weights, weights, weights});
  const int64_t e = 2; // the rank's expert
  Vec slabs(c.slabs.begin() + e * T * H, c.slabs.begin() + (e + 1) * T * H),
      dy(c.dy.begin() + e * T * H, c.dy.begin() + (e + 1) * T * H),
      gate(c.gate.begin() + e * H * F, c.gate.begin() + (e + 1) * H * F),
      up(c.up.begin() + e * H * F, c.up.begin() + (e + 1) * H * F),
      down(c.down.begin() + e * F * H, c.down.begin() + (e + 1) * F * H), dg(H * F), du(H * F),
      dd(F * H);
  rig.bind({&slabs, &gate, &up, &down, &dy, &dg, &du, &dd});
  rig.frame.self = e;
  ASSERT_EQ(rig.verify(), "");
  rig.step.kernel->run(rig.step, rig.frame);
  Vec wg(E * H * F), wu(E * H * F), wd(E * F * H);
  cpu::moe_experts_slabs_grad(c.slabs.data(), E, T, c.gate.data(), c.up.data(), c.down.data(), H, F,
                              c.dy.data(), nullptr, wg.data(), wu.data(), wd.data());
  EXPECT_EQ(dg, Vec(wg.begin() + e * H * F, wg.begin() + (e + 1) * H * F));
  EXPECT_EQ(du, Vec(wu.begin() + e * H * F, wu.begin() + (e + 1) * H * F));
  EXPECT_EQ(dd, Vec(wd.begin() + e * F * H, wd.begin() + (e + 1) * F * H));
}

/// An expert index outside the slabs stops the combine's gradient naming
/// it, and the contracts name a mismatched shape.
TEST(MoEGradKernelEntries, RefuseIndicesOutsideTheExpertsAndBadShapes) {
  const int64_t B = 1, S = 3, H = 2, k = 2, E = 4;
  Ids idx = {0, 1, 2, 3, 1, 4};
  Vec w(B * S * k, 0.5f), dy(B * S * H, 1.0f), out(E * B * S * H);
  StepRig rig("moe_combine_grad", {{B, S, k}, {B, S, k}, {B, S, H}}, {{E, B, S, H}}, {});
  rig.views = {BufferView(w.data(), B * S * k), BufferView(idx.data(), B * S * k),
               BufferView(dy.data(), B * S * H), BufferView(out.data(), E * B * S * H)};
  ASSERT_EQ(rig.verify(), "");
  try {
    rig.step.kernel->run(rig.step, rig.frame);
    ADD_FAILURE() << "an expert outside the slabs accepted";
  } catch (Stop &stop) {
    EXPECT_EQ(stop.error, "'indices' holds a value outside [0, 4), the experts");
  }
  StepRig bad("moe_dispatch_grad", {{E, B, S, H}, {B, S, k}}, {{B, S, H + 1}}, {});
  EXPECT_NE(bad.verify().find("dx"), std::string::npos) << bad.verify();
  StepRig router("router_topk_grad", {{B, S, 5}, {B, S, 5}, {B, S, 5}}, {{B, S, 4}}, {});
  EXPECT_NE(router.verify().find("k exceeds the experts of dlogits"), std::string::npos)
      << router.verify();
}

} // namespace
