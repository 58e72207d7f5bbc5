//===- moe_capacity_test.cpp - Capacity-mode MoE: slots, buffers, grads ---===//
//
// The slots of both drop policies against assignments worked out by hand
// (drops, ties, groups tiling a local [b, s]); dispatch, the experts over the
// [E, Gb, Gs, C, H] buffers and the combine against a per-token loop over the
// kept choices; the three backward kernels against central differences of
// their forward kernels (kernel_test_util.h); and the kernel table's entries:
// names, attributes, contracts, the load they count.
//
//===----------------------------------------------------------------------===//

#include "exec/verify.h"
#include "kernel_test_util.h"
#include "kernels/cpu/kernels.h"
#include "step_rig.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace cpu = shardline::rt::cpu;
using namespace shardline::rt;
using shardline::Layout;
using shardline::Mesh;
using test::dot;
using test::expectClose;
using test::expectGradient;
using test::intAttr;
using test::Rng;
using test::StepRig;
using test::Vec;

namespace {

using Ids = std::vector<int32_t>;
using Counts = std::vector<int64_t>;

cpu::CapacityDims dims(int64_t B, int64_t S, int64_t k, int64_t E, int64_t C, int64_t rows,
                       int64_t positions) {
  cpu::CapacityDims d;
  d.B = B, d.S = S, d.k = k, d.E = E, d.C = C, d.rows = rows, d.positions = positions;
  return d;
}

Ids slotsOf(const Vec &w, const Ids &idx, const cpu::CapacityDims &d, cpu::DropPolicy policy,
            Counts *kept = nullptr, Counts *dropped = nullptr) {
  Ids slots(d.B * d.S * d.k, 7);
  cpu::moe_capacity_slots(w.data(), idx.data(), d, policy, slots.data(),
                          kept ? kept->data() : nullptr, dropped ? dropped->data() : nullptr);
  return slots;
}

// -- slots ------------------------------------------------------------------

/// One group of four tokens, top-2 of three experts, two rows per expert:
///   token 0: e0 .6, e1 .4    token 1: e0 .3, e2 .7
///   token 2: e0 .9, e1 .1    token 3: e1 .5, e0 .5
/// Expert 0's candidates in position order are t0, t1, t2, t3 (its choice 1);
/// expert 1's t0, t2, t3; expert 2's t1 alone.
TEST(MoECapacitySlots, BothPoliciesByHand) {
  const cpu::CapacityDims d = dims(1, 4, 2, 3, 2, 1, 4);
  const Vec w = {.6f, .4f, .3f, .7f, .9f, .1f, .5f, .5f};
  const Ids idx = {0, 1, 0, 2, 0, 1, 1, 0};
  Counts kept(3, 0), dropped(3, 0);
  // Position: expert 0 keeps t0, t1; expert 1 keeps t0, t2.
  EXPECT_EQ(slotsOf(w, idx, d, cpu::DropPolicy::Position, &kept, &dropped),
            (Ids{0, 0, 1, 0, -1, 1, -1, -1}));
  EXPECT_EQ(kept, (Counts{2, 2, 1}));
  EXPECT_EQ(dropped, (Counts{2, 1, 0}));
  // Probs: expert 0 keeps .9 (t2) and .6 (t0), expert 1 .5 (t3) and .4 (t0);
  // the kept rows still take their slots in position order.
  EXPECT_EQ(slotsOf(w, idx, d, cpu::DropPolicy::Probs, &kept, &dropped),
            (Ids{0, 0, -1, 0, 1, -1, 1, -1}));
  EXPECT_EQ(kept, (Counts{4, 4, 2})) << "the counts add up";
  EXPECT_EQ(dropped, (Counts{4, 2, 0}));
  // With room for every candidate nothing is dropped, under either policy.
  for (cpu::DropPolicy p : {cpu::DropPolicy::Position, cpu::DropPolicy::Probs})
    EXPECT_EQ(slotsOf(w, idx, dims(1, 4, 2, 3, 4, 1, 4), p), (Ids{0, 0, 1, 0, 2, 1, 2, 3}));
}

/// Equal weights: the earlier position wins, whether the tie is across
/// tokens or across the choices of one group's tokens.
TEST(MoECapacitySlots, TiesGoToTheEarlierPosition) {
  const Ids one = {0, 0, 0};
  EXPECT_EQ(slotsOf({.5f, .7f, .7f}, one, dims(1, 3, 1, 1, 1, 1, 3), cpu::DropPolicy::Probs),
            (Ids{-1, 0, -1}));
  EXPECT_EQ(slotsOf({.7f, .5f, .7f}, one, dims(1, 3, 1, 1, 2, 1, 3), cpu::DropPolicy::Probs),
            (Ids{0, -1, 1}));
  // Token 0's choice 1 comes before token 1's choice 0.
  EXPECT_EQ(slotsOf({.5f, .5f, .5f, .5f}, {1, 0, 0, 1}, dims(1, 2, 2, 2, 1, 1, 2),
                    cpu::DropPolicy::Probs),
            (Ids{0, 0, -1, -1}));
}

/// A local [2, 4] of groups: each group fills its own C rows.
TEST(MoECapacitySlots, GroupsTileTheLocalTokens) {
  const Ids all0(8, 0);
  const Vec w = {.1f, .2f, .4f, .3f, .9f, .8f, .5f, .6f};
  // Groups of 1 row x 2 positions: four groups, one row each.
  EXPECT_EQ(slotsOf(w, all0, dims(2, 4, 1, 2, 1, 1, 2), cpu::DropPolicy::Position),
            (Ids{0, -1, 0, -1, 0, -1, 0, -1}));
  EXPECT_EQ(slotsOf(w, all0, dims(2, 4, 1, 2, 1, 1, 2), cpu::DropPolicy::Probs),
            (Ids{-1, 0, 0, -1, 0, -1, -1, 0}));
  // Groups of 2 rows x 2 positions: the group (rows 0-1, positions 0-1)
  // orders its tokens (0,0), (0,1), (1,0), (1,1).
  Counts kept(2, 0), dropped(2, 0);
  EXPECT_EQ(slotsOf(w, all0, dims(2, 4, 1, 2, 1, 2, 2), cpu::DropPolicy::Position, &kept, &dropped),
            (Ids{0, -1, 0, -1, -1, -1, -1, -1}));
  EXPECT_EQ(kept, (Counts{2, 0}));
  EXPECT_EQ(dropped, (Counts{6, 0}));
  EXPECT_EQ(slotsOf(w, all0, dims(2, 4, 1, 2, 1, 2, 2), cpu::DropPolicy::Probs),
            (Ids{-1, -1, -1, -1, 0, -1, -1, 0}));
  // The same tokens as two ranks' halves of the sequence (groups of 1 x 2
  // either way): each half's slots are the whole's.
  const Ids whole = slotsOf(w, all0, dims(2, 4, 1, 2, 1, 1, 2), cpu::DropPolicy::Probs);
  for (int half = 0; half < 2; ++half) {
    Vec wh;
    for (int b = 0; b < 2; ++b)
      wh.insert(wh.end(), w.begin() + b * 4 + half * 2, w.begin() + b * 4 + half * 2 + 2);
    Ids got = slotsOf(wh, Ids(4, 0), dims(2, 2, 1, 2, 1, 1, 2), cpu::DropPolicy::Probs);
    for (int b = 0; b < 2; ++b)
      for (int s = 0; s < 2; ++s)
        EXPECT_EQ(got[b * 2 + s], whole[b * 4 + half * 2 + s]) << half << " " << b << " " << s;
  }
}

// -- dispatch, experts, combine ---------------------------------------------

TEST(MoECapacityBuffers, DispatchPutsEachKeptTokenInItsGroupsRow) {
  // Groups of 1 row x 2 positions over [2, 4]; x's value is its token + 1.
  const cpu::CapacityDims d = dims(2, 4, 1, 2, 1, 1, 2);
  const Ids idx(8, 0), slots = {0, -1, 0, -1, 0, -1, 0, -1};
  Vec x = {1, 2, 3, 4, 5, 6, 7, 8}, buffers(2 * 2 * 2 * 1 * 1, -1.0f);
  cpu::moe_dispatch_capacity(x.data(), idx.data(), slots.data(), d, 1, buffers.data());
  EXPECT_EQ(buffers, (Vec{1, 3, 5, 7, 0, 0, 0, 0}));
}

/// k distinct experts per token, drawn at random.
Ids routes(Rng &rng, int64_t T, int64_t k, int64_t E) {
  Ids idx(T * k);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < k; ++j) {
      int32_t e;
      do
        e = (int32_t)(rng.next() % (uint64_t)E);
      while (std::find(idx.begin() + t * k, idx.begin() + t * k + j, e) != idx.begin() + t * k + j);
      idx[t * k + j] = e;
    }
  return idx;
}

double siluD(double v) { return v / (1.0 + std::exp(-v)); }

/// A routing of [2, 6] tokens, top-2 of 4 experts, groups of 1 x 3 with two
/// rows per expert: some choices are dropped, some rows stay empty.
struct CapacityCase {
  cpu::CapacityDims d = dims(2, 6, 2, 4, 2, 1, 3);
  int64_t H = 3, F = 5;
  Ids idx, slots;
  Vec x, w, gate, up, down;
  int64_t bufferCount() const { return d.E * d.groupsB() * d.groupsS() * d.C * H; }
  explicit CapacityCase(uint64_t seed) {
    Rng rng(seed);
    const int64_t T = d.B * d.S;
    idx = routes(rng, T, d.k, d.E);
    x = rng.vec(T * H);
    w = rng.vec(T * d.k, 0.05f, 1.0f);
    gate = rng.vec(d.E * H * F);
    up = rng.vec(d.E * H * F);
    down = rng.vec(d.E * F * H);
    slots = slotsOf(w, idx, d, cpu::DropPolicy::Probs);
  }
};

TEST(MoECapacityBuffers, DispatchExpertsCombineMatchPerTokenLoop) {
  CapacityCase c(71);
  const cpu::CapacityDims &d = c.d;
  const int64_t T = d.B * d.S, H = c.H, F = c.F;
  int64_t drops = std::count(c.slots.begin(), c.slots.end(), -1);
  ASSERT_GT(drops, 0) << "the case must drop";
  Vec buffers(c.bufferCount()), out(c.bufferCount(), 0.0f), y(T * H);
  cpu::moe_dispatch_capacity(c.x.data(), c.idx.data(), c.slots.data(), d, H, buffers.data());
  // The experts see [E, Gb, Gs, C] as rows, as the plan's rank-5 buffers.
  cpu::moe_experts_slabs(buffers.data(), d.E, d.groupsB() * d.groupsS() * d.C, c.gate.data(),
                         c.up.data(), c.down.data(), H, F, out.data());
  cpu::moe_combine_capacity(out.data(), c.w.data(), c.idx.data(), c.slots.data(), d, H, y.data());
  std::vector<double> want(T * H, 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < d.k; ++j) {
      if (c.slots[t * d.k + j] < 0)
        continue;
      const int64_t e = c.idx[t * d.k + j];
      std::vector<double> act(F);
      for (int64_t f = 0; f < F; ++f) {
        double g = 0, u = 0;
        for (int64_t h = 0; h < H; ++h) {
          g += (double)c.x[t * H + h] * c.gate[(e * H + h) * F + f];
          u += (double)c.x[t * H + h] * c.up[(e * H + h) * F + f];
        }
        act[f] = siluD(g) * u;
      }
      for (int64_t h = 0; h < H; ++h) {
        double o = 0;
        for (int64_t f = 0; f < F; ++f)
          o += act[f] * c.down[(e * F + f) * H + h];
        want[t * H + h] += c.w[t * d.k + j] * o;
      }
    }
  expectClose(y, want, 1e-5, 1e-6, "capacity moe");
  // A token whose choices were all dropped gets zero (the residual carries it).
  for (int64_t t = 0; t < T; ++t)
    if (c.slots[t * 2] < 0 && c.slots[t * 2 + 1] < 0)
      for (int64_t h = 0; h < H; ++h)
        EXPECT_EQ(y[t * H + h], 0.0f);
}

// -- backward ---------------------------------------------------------------

TEST(MoECapacityGrad, DispatchSumsEachTokensKeptRows) {
  CapacityCase c(72);
  const int64_t T = c.d.B * c.d.S, H = c.H;
  Rng rng(73);
  Vec r = rng.vec(c.bufferCount()), dx(T * H);
  cpu::moe_dispatch_capacity_grad(r.data(), c.idx.data(), c.slots.data(), c.d, H, dx.data());
  expectGradient(
      c.x, dx,
      [&] {
        Vec b(c.bufferCount());
        cpu::moe_dispatch_capacity(c.x.data(), c.idx.data(), c.slots.data(), c.d, H, b.data());
        return dot(r, b);
      },
      "dx");
  for (int64_t t = 0; t < T; ++t)
    if (c.slots[t * 2] < 0 && c.slots[t * 2 + 1] < 0)
      EXPECT_EQ(dx[t * H], 0.0f) << "a token all of whose choices were dropped";
}

TEST(MoECapacityGrad, CombineExpertOutputsAndWeights) {
  CapacityCase c(74);
  const int64_t T = c.d.B * c.d.S, H = c.H;
  Rng rng(75);
  Vec buffers = rng.vec(c.bufferCount()), r = rng.vec(T * H);
  Vec dbuffers(c.bufferCount(), -1.0f), dw(T * c.d.k, -1.0f);
  cpu::moe_combine_capacity_grad(c.w.data(), c.idx.data(), c.slots.data(), r.data(), c.d, H,
                                 dbuffers.data());
  cpu::moe_combine_capacity_grad_weights(buffers.data(), c.idx.data(), c.slots.data(), r.data(),
                                         c.d, H, dw.data());
  auto objective = [&] {
    Vec y(T * H);
    cpu::moe_combine_capacity(buffers.data(), c.w.data(), c.idx.data(), c.slots.data(), c.d, H,
                              y.data());
    return dot(r, y);
  };
  expectGradient(buffers, dbuffers, objective, "dexpert_out");
  expectGradient(c.w, dw, objective, "dweights");
  for (size_t i = 0; i < c.slots.size(); ++i)
    if (c.slots[i] < 0)
      EXPECT_EQ(dw[i], 0.0f) << "a dropped choice's weight, " << i;
}

// -- the kernel table -------------------------------------------------------

/// The contract's message without the op and location before it.
std::string why(StepRig &&rig) {
  std::string text = rig.verify();
  const std::string at = "test.mlir:1:1: ";
  size_t p = text.find(at);
  return p == std::string::npos ? text : text.substr(p + at.size());
}

AttrValue intsAttr(std::vector<int64_t> v) {
  AttrValue a;
  a.present = true;
  a.ints = std::move(v);
  return a;
}

AttrValue nameAttr(std::string v) {
  AttrValue a;
  a.present = true;
  a.strings = {std::move(v)};
  return a;
}

TEST(MoECapacityKernelTable, EveryOpWithItsNamesAndAttributes) {
  struct Want {
    std::vector<std::string> operands, results, attrs;
  };
  const std::vector<std::string> ecg = {"experts", "capacity", "group"}, g = {"group"};
  const std::map<std::string, Want> want = {
      {"moe_capacity_slots",
       {{"weights", "indices"}, {"slots"}, {"experts", "capacity", "group", "drop_policy"}}},
      {"moe_dispatch_capacity", {{"x", "indices", "slots"}, {"result"}, ecg}},
      {"moe_combine_capacity", {{"expert_out", "weights", "indices", "slots"}, {"result"}, g}},
      {"moe_dispatch_capacity_grad", {{"dtokens", "indices", "slots"}, {"dx"}, g}},
      {"moe_combine_capacity_grad", {{"weights", "indices", "slots", "dy"}, {"dexpert_out"}, ecg}},
      {"moe_combine_capacity_grad_weights",
       {{"expert_out", "indices", "slots", "dy"}, {"dweights"}, g}},
  };
  const KernelTable &table = cpuBackend().kernels;
  for (const auto &[kind, w] : want) {
    auto it = table.find(kind);
    ASSERT_NE(it, table.end()) << kind;
    EXPECT_EQ(it->second.operands, w.operands) << kind;
    EXPECT_EQ(it->second.results, w.results) << kind;
    std::vector<std::string> attrs;
    for (const AttrSpec &a : it->second.attrs)
      attrs.push_back(a.name);
    EXPECT_EQ(attrs, w.attrs) << kind;
    EXPECT_NE(it->second.check, nullptr) << kind;
  }
}

/// The slots entry on one rank of a cp = 2 x tp = 2 mesh whose routing is
/// split over cp and copied over tp: it computes the kernel's slots, and
/// only the first of the copies counts the load.
TEST(MoECapacityKernelEntries, SlotsCountTheLoadOnceOverCopies) {
  const int64_t B = 1, S = 4, k = 2, E = 3;
  Mesh mesh{{{"cp", 2}, {"tp", 2}}};
  Layout routing{{{}, {"cp"}, {}}, {}, -1, shardline::ChunkOrder::Contiguous};
  auto rig = [&] {
    return StepRig("moe_capacity_slots", {{B, 2 * S, k}, {B, 2 * S, k}}, {{B, 2 * S, k}},
                   {intAttr(E), intAttr(2), intsAttr({1, 4}), nameAttr("position")}, mesh,
                   {routing, routing, routing});
  };
  Vec w = {.6f, .4f, .3f, .7f, .9f, .1f, .5f, .5f};
  Ids idx = {0, 1, 0, 2, 0, 1, 1, 0}, slots(8);
  for (int64_t self : {0, 1, 2, 3}) {
    StepRig r = rig();
    std::map<int64_t, ExpertLoad> load;
    r.frame.self = self;
    r.frame.expertLoad = &load;
    r.views = {BufferView(w.data(), 8), BufferView(idx.data(), 8), BufferView(slots.data(), 8)};
    ASSERT_EQ(r.verify(), "");
    r.step.kernel->run(r.step, r.frame);
    EXPECT_EQ(slots, (Ids{0, 0, 1, 0, -1, 1, -1, -1}));
    ASSERT_EQ(load.size(), 1u) << "every rank holds the entry";
    bool counts = self % 2 == 0; // tp coordinate 0
    EXPECT_EQ(load[0].kept, counts ? Counts({2, 2, 1}) : Counts(3, 0)) << self;
    EXPECT_EQ(load[0].dropped, counts ? Counts({2, 1, 0}) : Counts(3, 0)) << self;
  }
}

/// The contracts name the bad value: groups that do not tile the local
/// tokens, an unknown policy, buffers of the wrong extent, a slot outside
/// the capacity at run time.
TEST(MoECapacityKernelEntries, RefuseWhatTheKernelsCannotIndex) {
  const int64_t B = 2, S = 4, k = 2, E = 3, C = 2, H = 5;
  auto slots = [&](std::vector<int64_t> group, std::string policy) {
    return why(StepRig("moe_capacity_slots", {{B, S, k}, {B, S, k}}, {{B, S, k}},
                       {intAttr(E), intAttr(C), intsAttr(group), nameAttr(policy)}));
  };
  EXPECT_EQ(slots({1, 2}, "probs"), "");
  EXPECT_EQ(slots({1, 3}, "probs"),
            "weights's dimension 1 is 4, which groups of 3 positions do not tile");
  EXPECT_EQ(slots({3, 2}, "position"),
            "weights's dimension 0 is 2, which groups of 3 rows do not tile");
  EXPECT_EQ(slots({1, 2}, "random"),
            "attribute 'drop_policy' is 'random', not 'probs' or 'position'");
  EXPECT_EQ(slots({2}, "probs"), "attribute 'group' holds 1 integers, not 2 (rows, positions)");
  EXPECT_EQ(slots({0, 2}, "probs"),
            "attribute 'group' is [0, 2]: a group has at least one row and one position");
  auto dispatch = [&](std::vector<int64_t> out) {
    return why(StepRig("moe_dispatch_capacity", {{B, S, H}, {B, S, k}, {B, S, k}}, {out},
                       {intAttr(E), intAttr(C), intsAttr({1, 2})}));
  };
  EXPECT_EQ(dispatch({E, 2, 2, C, H}), "");
  EXPECT_EQ(dispatch({E, 2, 4, C, H}),
            "result's dimension 2 is 4, the groups along the sequence per rank is 2");
  EXPECT_EQ(dispatch({E, 2, 2, C + 1, H}), "result's dimension 3 is 3, attribute 'capacity' is 2");
  EXPECT_EQ(dispatch({E + 1, 2, 2, C, H}), "result's dimension 0 is 4, attribute 'experts' is 3");
  EXPECT_EQ(dispatch({E, 2, 2, C, H + 1}), "result's last dimension is 6, x's last dimension is 5");

  StepRig combine("moe_combine_capacity", {{E, 2, 2, C, H}, {B, S, k}, {B, S, k}, {B, S, k}},
                  {{B, S, H}}, {intsAttr({1, 2})});
  Vec buffers(E * 2 * 2 * C * H, 1.0f), w(B * S * k, 0.5f), y(B * S * H);
  Ids idx(B * S * k, 1), bad(B * S * k, 0);
  bad[3] = C;
  combine.views = {
      BufferView(buffers.data(), (int64_t)buffers.size()), BufferView(w.data(), (int64_t)w.size()),
      BufferView(idx.data(), (int64_t)idx.size()), BufferView(bad.data(), (int64_t)bad.size()),
      BufferView(y.data(), (int64_t)y.size())};
  ASSERT_EQ(combine.verify(), "");
  try {
    combine.step.kernel->run(combine.step, combine.frame);
    ADD_FAILURE() << "a slot outside the capacity accepted";
  } catch (Stop &stop) {
    EXPECT_EQ(stop.error, "'slots' holds 2, outside [-1, 2), the capacity's slots");
  }
}

/// The experts' entries take any number of row dimensions: on capacity
/// buffers [E, Gb, Gs, C, H] they compute what the kernel does on E x rows.
TEST(MoECapacityKernelEntries, ExpertsOverRankFiveBuffers) {
  CapacityCase c(76);
  const cpu::CapacityDims &d = c.d;
  const int64_t H = c.H, F = c.F, rows = d.groupsB() * d.groupsS() * d.C;
  Vec buffers(c.bufferCount()), out(c.bufferCount(), 0.0f), want(c.bufferCount(), 0.0f);
  cpu::moe_dispatch_capacity(c.x.data(), c.idx.data(), c.slots.data(), d, H, buffers.data());
  StepRig rig("moe_experts",
              {{d.E, d.groupsB(), d.groupsS(), d.C, H}, {d.E, H, F}, {d.E, H, F}, {d.E, F, H}},
              {{d.E, d.groupsB(), d.groupsS(), d.C, H}}, {});
  rig.bind({&buffers, &c.gate, &c.up, &c.down, &out});
  ASSERT_EQ(rig.verify(), "");
  rig.step.kernel->run(rig.step, rig.frame);
  cpu::moe_experts_slabs(buffers.data(), d.E, rows, c.gate.data(), c.up.data(), c.down.data(), H, F,
                         want.data());
  EXPECT_EQ(out, want);
  Vec dg(c.gate.size()), du(c.up.size()), dd(c.down.size()), wg(dg.size()), wu(du.size()),
      wd(dd.size()), dy = Rng(77).vec(c.bufferCount());
  StepRig grad("moe_experts_grad_weights",
               {{d.E, d.groupsB(), d.groupsS(), d.C, H},
                {d.E, H, F},
                {d.E, H, F},
                {d.E, F, H},
                {d.E, d.groupsB(), d.groupsS(), d.C, H}},
               {{d.E, H, F}, {d.E, H, F}, {d.E, F, H}}, {});
  grad.bind({&buffers, &c.gate, &c.up, &c.down, &dy, &dg, &du, &dd});
  ASSERT_EQ(grad.verify(), "");
  grad.step.kernel->run(grad.step, grad.frame);
  cpu::moe_experts_slabs_grad(buffers.data(), d.E, rows, c.gate.data(), c.up.data(), c.down.data(),
                              H, F, dy.data(), nullptr, wg.data(), wu.data(), wd.data());
  EXPECT_EQ(dg, wg);
  EXPECT_EQ(du, wu);
  EXPECT_EQ(dd, wd);
  StepRig flat("moe_experts", {{d.E, H}, {d.E, H, F}, {d.E, H, F}, {d.E, F, H}}, {{d.E, H}}, {});
  EXPECT_EQ(why(std::move(flat)), "tokens has rank 2, the kernel needs rank 3 or more");
}

} // namespace
