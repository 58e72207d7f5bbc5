//===- ring_grad_test.cpp - Backward of the context-parallel exchanges ----===//
//
// The duals of the exchanges that context parallelism adds (sl.halo_add,
// the dual of sl.halo; sl.scan_state_exchange_grad, the state exchange's;
// ring attention's backward) and the backward of windowed attention. Each runs on thread ranks
// through its kernel-table entry and is checked against the unsplit gradient (itself checked by
// finite differences of the forward kernel), with the bytes each rank sends.
//
//===----------------------------------------------------------------------===//

#include "comm/comm.h"
#include "exec/collectives.h"
#include "kernel_test_util.h"
#include "kernels/cpu/kernels.h"
#include "step_rig.h"
#include "thread_ranks.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <thread>
#include <vector>

using namespace shardline::rt;
using shardline::ChunkOrder;
using shardline::Layout;
using shardline::Mesh;
namespace cpu = shardline::rt::cpu;
using test::axesAttr;
using test::dot;
using test::expectClose;
using test::intAttr;
using test::onRanks;
using test::Rng;
using test::StepRig;
using test::Vec;

namespace {

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

// -- sl.scan_state_exchange_grad ---------------------------------------------

/// The state exchange and its dual on `cp` thread ranks, each holding its
/// chunks of states [chunks, tail...] and decays [chunks, decayTail...]:
/// the forward's initial states and the dual's cotangents of states and
/// decays are the unsplit combination's and its reverse's (the reverse
/// itself checked by differences in mamba_grad_test.cpp) at the rank's
/// chunks, and each rank sends (cp - 1) x its dinit and decays, the
/// forward's bytes.
void checkExchangeGrad(int64_t cp, ChunkOrder order, const std::vector<int64_t> &tail,
                       const std::vector<int64_t> &decayTail, uint64_t seed) {
  const int64_t chunks = order == ChunkOrder::Zigzag ? 2 * cp : cp;
  Mesh mesh{{{"cp", cp}}};
  std::vector<int64_t> st = {chunks}, dec = {chunks};
  st.insert(st.end(), tail.begin(), tail.end());
  dec.insert(dec.end(), decayTail.begin(), decayTail.end());
  auto split = [&](size_t rank) {
    Layout l = Layout::replicated(rank);
    l.dims[0] = {"cp"};
    l.orderDim = 0;
    l.order = order;
    return l;
  };
  Layout ls = split(st.size()), ld = split(dec.size());
  int64_t size = 1, nd = 1;
  for (int64_t e : tail)
    size *= e;
  for (int64_t e : decayTail)
    nd *= e;
  Rng rng(seed);
  Vec states = rng.vec(chunks * size), decays = rng.vec(chunks * nd, 0.2f, 0.9f),
      dinit = rng.vec(chunks * size);
  Vec init(chunks * size), dstates(chunks * size), ddecays(chunks * nd);
  cpu::scan_combine_states(decays.data(), states.data(), nullptr, chunks, nd, size / nd,
                           init.data(), nullptr);
  cpu::scan_combine_states_grad(decays.data(), init.data(), dinit.data(), nullptr, chunks, nd,
                                size / nd, dstates.data(), ddecays.data(), nullptr);
  // Chunk rows of a [chunks, n] value at `pos`.
  auto rows = [](const Vec &v, int64_t n, const std::vector<int64_t> &pos) {
    Vec out;
    for (int64_t p : pos)
      out.insert(out.end(), v.begin() + p * n, v.begin() + (p + 1) * n);
    return out;
  };
  std::vector<std::string> errors(cp);
  std::vector<int64_t> bytes(cp);
  std::vector<Vec> gotInit(cp), gotStates(cp), gotDecays(cp);
  std::vector<std::vector<int64_t>> owned(cp);
  onRanks(cp, mesh, [&](int64_t r, Collectives &collectives) {
    AttrValue axes = axesAttr({"cp"});
    StepRig fwd("scan_state_exchange", {st, dec}, {st}, {axes}, mesh, {ls, ld, ls});
    StepRig dual("scan_state_exchange_grad", {dec, st, st}, {st, dec}, {axes}, mesh,
                 {ld, ls, ls, ls, ld});
    owned[r] = fwd.frame.owned(0, 0, r);
    int64_t mine = (int64_t)owned[r].size();
    Vec s = rows(states, size, owned[r]), d = rows(decays, nd, owned[r]),
        g = rows(dinit, size, owned[r]), i(mine * size), ds(mine * size), dd(mine * nd);
    fwd.bind({&s, &d, &i});
    dual.bind({&d, &i, &g, &ds, &dd});
    for (StepRig *rig : {&fwd, &dual}) {
      rig->frame.self = r;
      rig->frame.collectives = &collectives;
      errors[r] += rig->verify();
      rig->step.kernel->resolve(rig->step, rig->frame);
    }
    fwd.step.kernel->run(fwd.step, fwd.frame);
    collectives.resetCount();
    dual.step.kernel->run(dual.step, dual.frame);
    bytes[r] = collectives.bytesSent();
    gotInit[r] = i, gotStates[r] = ds, gotDecays[r] = dd;
  });
  for (int64_t r = 0; r < cp; ++r) {
    EXPECT_EQ(errors[r], "") << r;
    EXPECT_EQ(owned[r].size(), (size_t)(chunks / cp)) << r;
    expectClose(gotInit[r], rows(init, size, owned[r]), 1e-6, 1e-6, "a rank's initial states");
    expectClose(gotStates[r], rows(dstates, size, owned[r]), 1e-6, 1e-6, "a rank's dstates");
    expectClose(gotDecays[r], rows(ddecays, nd, owned[r]), 1e-5, 1e-6, "a rank's ddecays");
    EXPECT_EQ(bytes[r], (cp - 1) * (chunks / cp) * (size + nd) * 4) << "rank " << r;
  }
}

/// Mamba-2's summaries: state [chunks, b, heads, p, n], decay [chunks, b,
/// heads] broadcast over p x n.
TEST(ScanStateExchangeGrad, SsdSummariesOfTwoRanksZigzag) {
  checkExchangeGrad(2, ChunkOrder::Zigzag, {2, 3, 2, 4}, {2, 3}, 61);
}

TEST(ScanStateExchangeGrad, SsdSummariesOfFourRanks) {
  checkExchangeGrad(4, ChunkOrder::Contiguous, {1, 2, 2, 3}, {1, 2}, 62);
}

/// RG-LRU's: state and decay [chunks, b, width], one decay per entry.
TEST(ScanStateExchangeGrad, RglruSummariesOfFourRanksZigzag) {
  checkExchangeGrad(4, ChunkOrder::Zigzag, {2, 5}, {2, 5}, 63);
}

/// Two chunks: the last chunk's decay scales nothing that follows, so only
/// the states' cotangents are nonzero.
TEST(ScanStateExchangeGrad, RglruSummariesOfTwoRanks) {
  checkExchangeGrad(2, ChunkOrder::Contiguous, {3, 4}, {3, 4}, 64);
}

TEST(ScanStateExchangeGrad, ContractNamesTheCotangentShape) {
  Mesh mesh{{{"cp", 2}}};
  Layout l = Layout::replicated(3);
  l.dims[0] = {"cp"};
  StepRig dual("scan_state_exchange_grad", {{2, 3, 4}, {2, 3, 4}, {2, 3, 5}},
               {{2, 3, 4}, {2, 3, 4}}, {axesAttr({"cp"})}, mesh, std::vector<Layout>(5, l));
  EXPECT_NE(dual.verify().find("dinit"), std::string::npos) << dual.verify();
  StepRig decays("scan_state_exchange_grad", {{2, 3, 4}, {2, 3, 4}, {2, 3, 4}},
                 {{2, 3, 4}, {2, 3, 2}}, {axesAttr({"cp"})}, mesh, std::vector<Layout>(5, l));
  EXPECT_NE(decays.verify().find("ddecays"), std::string::npos) << decays.verify();
  StepRig bcast("scan_state_exchange_grad", {{2, 3}, {2, 3, 4}, {2, 3, 4}}, {{2, 3, 4}, {2, 3}},
                {axesAttr({"cp"})}, mesh, {l, l, l, l, l});
  EXPECT_EQ(bcast.verify(), "");
}

// -- ring attention ----------------------------------------------------------

/// The block gradients of keys split into blocks, given the whole softmax's
/// log-sum-exp and delta, add up to the gradient of attention() over all
/// keys: dq summed over the blocks, dk and dv each block's rows; all three
/// checked by finite differences of attention() itself.
void checkBlockGrads(const cpu::AttentionDims &d, const std::vector<int64_t> &qPos,
                     const std::vector<int64_t> &kPos,
                     const std::vector<std::vector<int64_t>> &blocks, bool causal, float scale,
                     int64_t window, uint64_t seed) {
  Rng rng(seed);
  int64_t qw = d.HQ * d.D, kw = d.HKV * d.D;
  Vec q = rng.vec(d.B * d.Sq * qw), k = rng.vec(d.B * d.Sk * kw), v = rng.vec(k.size()),
      r = rng.vec(q.size());
  auto forward = [&](Vec &out, Vec *lse) {
    cpu::attention(q.data(), k.data(), v.data(), qPos.data(), kPos.data(), d, causal, scale,
                   out.data(), lse ? lse->data() : nullptr, window);
  };
  Vec out(q.size()), lse(d.B * d.HQ * d.Sq), delta(lse.size());
  forward(out, &lse);
  cpu::attention_delta(r.data(), out.data(), d.B, d.Sq, d.HQ, d.D, delta.data());
  Vec dq(q.size(), 0.0f), dk(k.size(), 0.0f), dv(v.size(), 0.0f);
  for (const std::vector<int64_t> &idx : blocks) {
    int64_t n = (int64_t)idx.size();
    std::vector<int64_t> pos;
    for (int64_t j : idx)
      pos.push_back(kPos[j]);
    Vec kb = rowsAt(k, d.B, d.Sk, kw, idx), vb = rowsAt(v, d.B, d.Sk, kw, idx),
        dkb(kb.size(), 0.0f), dvb(vb.size(), 0.0f);
    cpu::attention_block_grad(q.data(), kb.data(), vb.data(), r.data(), qPos.data(), pos.data(),
                              {d.B, d.Sq, n, d.HQ, d.HKV, d.D}, causal, scale, window, lse.data(),
                              delta.data(), dq.data(), dkb.data(), dvb.data());
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t j = 0; j < n; ++j)
        for (int64_t e = 0; e < kw; ++e) {
          dk[(b * d.Sk + idx[j]) * kw + e] = dkb[(b * n + j) * kw + e];
          dv[(b * d.Sk + idx[j]) * kw + e] = dvb[(b * n + j) * kw + e];
        }
  }
  auto J = [&] {
    Vec y(q.size());
    forward(y, nullptr);
    return dot(r, y);
  };
  test::expectGradient(q, dq, J, "block dq");
  test::expectGradient(k, dk, J, "block dk");
  test::expectGradient(v, dv, J, "block dv");
}

TEST(AttentionBlockGrad, ZigzagKeyBlocksCausalGroupedQueries) {
  // A rank's zigzag queries (chunks 0 and 3 of 12) over the four chunks'
  // key blocks as a ring of two brings them: its own, then the other's.
  std::vector<int64_t> qPos = {0, 1, 2, 9, 10, 11}, kPos = {0, 1, 2, 9, 10, 11, 3, 4, 5, 6, 7, 8};
  checkBlockGrads({2, 6, 12, 4, 2, 2}, qPos, kPos, {{0, 1, 2, 3, 4, 5}, {6, 7, 8, 9, 10, 11}}, true,
                  0.7f, 0, 21);
}

TEST(AttentionBlockGrad, NotCausalThreeBlocks) {
  std::vector<int64_t> pos = {0, 1, 2, 3, 4, 5};
  checkBlockGrads({1, 6, 6, 2, 1, 3}, pos, pos, {{0, 1}, {2, 3}, {4, 5}}, false, 0.5f, 0, 22);
}

TEST(AttentionBlockGrad, WindowAndABlockNoQuerySees) {
  // Window 3: the first block is out of reach of the last queries, and the
  // queries 0-1 see nothing in the later blocks.
  std::vector<int64_t> pos = {0, 1, 2, 3, 4, 5, 6, 7};
  checkBlockGrads({1, 8, 8, 2, 2, 2}, pos, pos, {{0, 1}, {2, 3, 4}, {5, 6, 7}}, true, 0.6f, 3, 23);
}

/// ring_attention_grad on `cp` thread ranks gives every rank its rows of the
/// unsplit attention_grad and attention_grad_kv (finite-difference checked in
/// grad_kernels_test.cpp), and sends (3n - 2) local K, V blocks.
void checkRingGrad(int64_t cp, ChunkOrder order, bool causal) {
  const int64_t B = 2, S = 16, HQ = 4, HKV = 2, D = 2, qw = HQ * D, kw = HKV * D;
  Mesh mesh{{{"cp", cp}}};
  Layout seq = sequenceSplit(order);
  Rng rng(31 + cp);
  Vec q = rng.vec(B * S * qw), k = rng.vec(B * S * kw), v = rng.vec(k.size()),
      dy = rng.vec(q.size()), dq(q.size()), dk(k.size()), dv(v.size());
  std::vector<int64_t> all(S);
  for (int64_t i = 0; i < S; ++i)
    all[i] = i;
  float scale = (float)(1.0 / std::sqrt((double)D));
  cpu::AttentionDims whole{B, S, S, HQ, HKV, D};
  cpu::attention_grad(q.data(), k.data(), v.data(), dy.data(), all.data(), all.data(), whole,
                      causal, scale, dq.data());
  cpu::attention_grad_kv(q.data(), k.data(), v.data(), dy.data(), all.data(), all.data(), whole,
                         causal, scale, dk.data(), dv.data());
  std::vector<std::vector<Vec>> got(cp);
  std::vector<int64_t> bytes(cp);
  std::vector<std::string> errors(cp);
  onRanks(cp, mesh, [&](int64_t r, Collectives &collectives) {
    std::vector<int64_t> qs = {B, S, qw}, ks = {B, S, kw};
    StepRig rig("ring_attention_grad", {qs, ks, ks, qs}, {qs, ks, ks},
                {intAttr(HQ), intAttr(causal), AttrValue{}, axesAttr({"cp"})}, mesh,
                std::vector<Layout>(7, seq));
    std::vector<int64_t> pos = rig.frame.owned(0, 1, r);
    int64_t L = (int64_t)pos.size();
    Vec lq = rowsAt(q, B, S, qw, pos), lk = rowsAt(k, B, S, kw, pos), lv = rowsAt(v, B, S, kw, pos),
        ldy = rowsAt(dy, B, S, qw, pos), oq(B * L * qw), ok(B * L * kw), ov(B * L * kw);
    rig.bind({&lq, &lk, &lv, &ldy, &oq, &ok, &ov});
    rig.frame.self = r;
    rig.frame.collectives = &collectives;
    errors[r] = rig.verify();
    rig.step.kernel->resolve(rig.step, rig.frame);
    collectives.resetCount();
    rig.step.kernel->run(rig.step, rig.frame);
    bytes[r] = collectives.bytesSent();
    got[r] = {oq, ok, ov};
  });
  for (int64_t r = 0; r < cp; ++r) {
    EXPECT_EQ(errors[r], "") << r;
    std::vector<int64_t> pos = shardline::ownedIndices(seq, mesh, {B, S, qw}, 1, r);
    int64_t L = (int64_t)pos.size();
    expectClose(got[r][0], rowsAt(dq, B, S, qw, pos), 1e-4, 1e-6, "a rank's dq");
    expectClose(got[r][1], rowsAt(dk, B, S, kw, pos), 1e-4, 1e-6, "a rank's dk");
    expectClose(got[r][2], rowsAt(dv, B, S, kw, pos), 1e-4, 1e-6, "a rank's dv");
    EXPECT_EQ(bytes[r], (3 * cp - 2) * 2 * B * L * kw * 4) << "rank " << r;
  }
}

TEST(RingAttentionGrad, TwoRanksZigzagCausal) { checkRingGrad(2, ChunkOrder::Zigzag, true); }

TEST(RingAttentionGrad, FourRanksContiguousCausal) {
  checkRingGrad(4, ChunkOrder::Contiguous, true);
}

TEST(RingAttentionGrad, FourRanksZigzagNotCausal) { checkRingGrad(4, ChunkOrder::Zigzag, false); }

TEST(RingAttentionGrad, ContractNamesTheResultShape) {
  Mesh mesh{{{"cp", 2}}};
  Layout seq = sequenceSplit(ChunkOrder::Contiguous);
  std::vector<int64_t> qs = {1, 8, 8}, ks = {1, 8, 4};
  StepRig rig("ring_attention_grad", {qs, ks, ks, qs}, {qs, qs, ks},
              {intAttr(4), intAttr(1), AttrValue{}, axesAttr({"cp"})}, mesh,
              std::vector<Layout>(7, seq));
  EXPECT_NE(rig.verify().find("dk"), std::string::npos) << rig.verify();
}

// -- local attention ---------------------------------------------------------

/// local_attention_grad against finite differences of local_attention() for
/// every input, the halo rows included (those before position 0 get zero:
/// they are not keys).
void checkLocalGrad(int64_t S, int64_t H, int64_t start, int64_t window, uint64_t seed) {
  const int64_t B = 2, HQ = 4, HKV = 2, D = 2, qw = HQ * D, kw = HKV * D;
  Rng rng(seed);
  Vec q = rng.vec(B * S * qw), k = rng.vec(B * S * kw), v = rng.vec(k.size()),
      hk = rng.vec(B * H * kw), hv = rng.vec(hk.size()), r = rng.vec(q.size());
  cpu::AttentionDims d{B, S, S, HQ, HKV, D};
  Vec dq(q.size()), dk(k.size()), dv(v.size()), dhk(hk.size(), 1.0f), dhv(hv.size(), 1.0f);
  const float *haloK = H ? hk.data() : nullptr, *haloV = H ? hv.data() : nullptr;
  cpu::local_attention_grad(q.data(), k.data(), v.data(), haloK, haloV, r.data(), H, start, d,
                            window, dq.data(), dk.data(), dv.data(), H ? dhk.data() : nullptr,
                            H ? dhv.data() : nullptr);
  auto J = [&] {
    Vec y(q.size());
    cpu::local_attention(q.data(), k.data(), v.data(), haloK, haloV, H, start, d, window, y.data());
    return dot(r, y);
  };
  test::expectGradient(q, dq, J, "local dq");
  test::expectGradient(k, dk, J, "local dk");
  test::expectGradient(v, dv, J, "local dv");
  if (!H)
    return;
  test::expectGradient(hk, dhk, J, "local dk_halo");
  test::expectGradient(hv, dhv, J, "local dv_halo");
  int64_t skip = std::max<int64_t>(0, H - start);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t e = 0; e < skip * kw; ++e)
      EXPECT_EQ(dhk[b * H * kw + e], 0.0f) << "a halo row before position 0";
}

TEST(LocalAttentionGrad, WholeSequence) { checkLocalGrad(8, 0, 0, 3, 51); }

TEST(LocalAttentionGrad, ChunkWithAHalo) { checkLocalGrad(6, 4, 10, 5, 52); }

TEST(LocalAttentionGrad, HaloReachingBeforeTheSequence) { checkLocalGrad(4, 5, 2, 6, 53); }

/// The gradient of a chunked run equals the unsplit one: each chunk's own
/// rows, plus its halo rows' gradients added onto the tokens they copy (what
/// halo_add does across ranks).
TEST(LocalAttentionGrad, ChunksAndHalosSumToTheWholeSequence) {
  const int64_t B = 1, S = 12, L = 4, HQ = 2, HKV = 1, D = 2, W = 6, H = W - 1, qw = HQ * D,
                kw = HKV * D;
  Rng rng(54);
  Vec q = rng.vec(B * S * qw), k = rng.vec(B * S * kw), v = rng.vec(k.size()),
      r = rng.vec(q.size());
  Vec dq(q.size()), dk(k.size()), dv(v.size());
  cpu::local_attention_grad(q.data(), k.data(), v.data(), nullptr, nullptr, r.data(), 0, 0,
                            {B, S, S, HQ, HKV, D}, W, dq.data(), dk.data(), dv.data(), nullptr,
                            nullptr);
  Vec gq(q.size(), 0.0f), gk(k.size(), 0.0f), gv(v.size(), 0.0f);
  for (int64_t start = 0; start < S; start += L) {
    auto rows = [&](const Vec &t, int64_t w, int64_t from, int64_t n) {
      Vec out(n * w, 0.0f);
      for (int64_t i = 0; i < n; ++i)
        if (from + i >= 0)
          std::copy_n(t.begin() + (from + i) * w, w, out.begin() + i * w);
      return out;
    };
    Vec cq = rows(q, qw, start, L), ck = rows(k, kw, start, L), cv = rows(v, kw, start, L),
        cr = rows(r, qw, start, L), hk = rows(k, kw, start - H, H), hv = rows(v, kw, start - H, H);
    Vec oq(cq.size()), ok(ck.size()), ov(cv.size()), ohk(hk.size()), ohv(hv.size());
    cpu::local_attention_grad(cq.data(), ck.data(), cv.data(), hk.data(), hv.data(), cr.data(), H,
                              start, {B, L, L, HQ, HKV, D}, W, oq.data(), ok.data(), ov.data(),
                              ohk.data(), ohv.data());
    std::copy(oq.begin(), oq.end(), gq.begin() + start * qw);
    for (int64_t i = 0; i < L * kw; ++i) {
      gk[start * kw + i] += ok[i];
      gv[start * kw + i] += ov[i];
    }
    for (int64_t i = 0; i < H; ++i)
      for (int64_t e = 0; e < kw && start - H + i >= 0; ++e) {
        gk[(start - H + i) * kw + e] += ohk[i * kw + e];
        gv[(start - H + i) * kw + e] += ohv[i * kw + e];
      }
  }
  expectClose(gq, dq, 1e-5, 1e-6, "dq over chunks");
  expectClose(gk, dk, 1e-5, 1e-6, "dk over chunks and halos");
  expectClose(gv, dv, 1e-5, 1e-6, "dv over chunks and halos");
}

TEST(LocalAttentionGrad, ContractNamesTheHaloGradient) {
  std::vector<int64_t> qs = {1, 8, 8}, ks = {1, 8, 4}, hs = {1, 2, 4};
  StepRig rig("local_attention_grad_halo", {qs, ks, ks, hs, hs, qs}, {qs, ks, ks, hs, ks},
              {intAttr(4), intAttr(3)});
  EXPECT_NE(rig.verify().find("dv_halo"), std::string::npos) << rig.verify();
}

// -- the kernel table --------------------------------------------------------

/// The entries bind the names the plan writes for these ops.
TEST(CpGradKernelTable, EntriesWithTheirNames) {
  struct Entry {
    std::vector<std::string> operands, results;
  };
  const std::vector<std::pair<std::string, Entry>> want = {
      {"halo_add", {{"grad", "x"}, {"result"}}},
      {"scan_state_exchange_grad", {{"decays", "init", "dinit"}, {"dstates", "ddecays"}}},
      {"ring_attention_grad", {{"q", "k", "v", "dy"}, {"dq", "dk", "dv"}}},
      {"local_attention_grad", {{"q", "k", "v", "dy"}, {"dq", "dk", "dv"}}},
      {"local_attention_grad_halo",
       {{"q", "k", "v", "k_halo", "v_halo", "dy"}, {"dq", "dk", "dv", "dk_halo", "dv_halo"}}},
  };
  const KernelTable &table = cpuBackend().kernels;
  for (const auto &[kind, entry] : want) {
    auto it = table.find(kind);
    ASSERT_NE(it, table.end()) << kind;
    EXPECT_EQ(it->second.operands, entry.operands) << kind;
    EXPECT_EQ(it->second.results, entry.results) << kind;
    EXPECT_NE(it->second.check, nullptr) << kind;
  }
}

/// scan_state_exchange_grad resolves the forward's group and chunks.
TEST(CpGradKernelTable, ExchangeFactsAsTheForward) {
  Mesh mesh{{{"cp", 4}}};
  Layout l = Layout::replicated(3);
  l.dims[0] = {"cp"};
  l.orderDim = 0;
  l.order = ChunkOrder::Zigzag;
  std::vector<int64_t> st = {8, 2, 3};
  AttrValue axes = axesAttr({"cp"});
  StepRig forward("scan_state_exchange", {st, st}, {st}, {axes}, mesh, {l, l, l});
  StepRig backward("scan_state_exchange_grad", {st, st, st}, {st, st}, {axes}, mesh,
                   std::vector<Layout>(5, l));
  for (StepRig *rig : {&forward, &backward}) {
    rig->frame.self = 1;
    rig->step.kernel->resolve(rig->step, rig->frame);
  }
  EXPECT_EQ(backward.step.facts.positions, (std::vector<int64_t>{1, 6}));
  EXPECT_EQ(backward.step.facts.members, forward.step.facts.members);
  EXPECT_EQ(backward.step.facts.positions, forward.step.facts.positions);
  EXPECT_EQ(backward.step.facts.memberPositions, forward.step.facts.memberPositions);
}

/// ring_attention_grad resolves the forward's ring: the same members in
/// order from this rank, the same query and key positions.
TEST(CpGradKernelTable, RingFactsAsTheForward) {
  Mesh mesh{{{"cp", 4}}};
  Layout seq = sequenceSplit(ChunkOrder::Zigzag);
  std::vector<int64_t> qs = {1, 16, 8}, ks = {1, 16, 4};
  AttrValue heads = intAttr(4), causal = intAttr(1), axes = axesAttr({"cp"});
  StepRig forward("ring_attention", {qs, ks, ks}, {qs}, {heads, causal, AttrValue{}, axes}, mesh,
                  std::vector<Layout>(4, seq));
  StepRig backward("ring_attention_grad", {qs, ks, ks, qs}, {qs, ks, ks},
                   {heads, causal, AttrValue{}, axes}, mesh, std::vector<Layout>(7, seq));
  for (StepRig *rig : {&forward, &backward}) {
    rig->frame.self = 2;
    rig->step.kernel->resolve(rig->step, rig->frame);
  }
  EXPECT_EQ(backward.step.facts.members, (std::vector<int64_t>{2, 3, 0, 1}));
  EXPECT_EQ(backward.step.facts.members, forward.step.facts.members);
  EXPECT_EQ(backward.step.facts.positions, forward.step.facts.positions);
  EXPECT_EQ(backward.step.facts.memberPositions, forward.step.facts.memberPositions);
}

} // namespace
