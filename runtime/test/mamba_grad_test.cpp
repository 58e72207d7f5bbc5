//===- mamba_grad_test.cpp - The Mamba-2 backward kernels by finite differences ---===//
//
// As grad_kernels_test.cpp: each backward kernel against central differences
// of its forward cpu:: kernel (kernel_test_util.h, kStep and kTol), for a
// random cotangent of every output. The split forms are checked against the
// unsplit call: a conv whose halo gradient is added back to the tokens it
// came from, a scan whose second chunk's initial-state gradient is the
// first chunk's final-state cotangent, and chunks scanned from zero whose
// corrections and reverse state exchange give the unsplit scan's gradients.
//
//===----------------------------------------------------------------------===//

#include "exec/verify.h"
#include "kernel_test_util.h"
#include "kernels/cpu/kernels.h"
#include "step_rig.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
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

/// Runs the rig's step once its contract holds.
void runChecked(StepRig &rig) {
  ASSERT_EQ(rig.verify(), "");
  rig.step.kernel->run(rig.step, rig.frame);
}

TEST(MambaGrad, GatedRmsNormAllInputs) {
  Rng rng(11);
  const int64_t T = 4, C = 12, groups = 3;
  const float eps = 1e-5f;
  Vec y = rng.vec(T * C), z = rng.vec(T * C, -2.0f, 2.0f), w = rng.vec(C, 0.5f, 1.5f),
      r = rng.vec(T * C), dy(T * C), dz(T * C), dw(C);
  auto J = [&] {
    Vec out(T * C);
    cpu::gated_rms_norm(y.data(), z.data(), w.data(), T, C, groups, eps, out.data());
    return dot(r, out);
  };
  cpu::gated_rms_norm_grad(y.data(), z.data(), w.data(), r.data(), T, C, groups, eps, dy.data(),
                           dz.data());
  cpu::gated_rms_norm_grad_weight(y.data(), z.data(), r.data(), T, C, groups, eps, dw.data());
  expectGradient(y, dy, J, "dy");
  expectGradient(z, dz, J, "dz");
  expectGradient(w, dw, J, "dweight");
}

TEST(MambaGrad, GatedRmsNormWeightSumsOverTokenShards) {
  Rng rng(12);
  const int64_t T = 6, C = 8, groups = 2;
  Vec y = rng.vec(T * C), z = rng.vec(T * C), r = rng.vec(T * C), whole(C), a(C), b(C);
  cpu::gated_rms_norm_grad_weight(y.data(), z.data(), r.data(), T, C, groups, 1e-5f, whole.data());
  cpu::gated_rms_norm_grad_weight(y.data(), z.data(), r.data(), 2, C, groups, 1e-5f, a.data());
  cpu::gated_rms_norm_grad_weight(y.data() + 2 * C, z.data() + 2 * C, r.data() + 2 * C, T - 2, C,
                                  groups, 1e-5f, b.data());
  for (int64_t c = 0; c < C; ++c)
    a[c] += b[c];
  expectClose(a, whole, 1e-5, 1e-6, "dweight of two token shards");
}

/// The conv with and without a halo: x, the halo, the weight and the bias.
void checkConv(bool withHalo) {
  Rng rng(withHalo ? 21 : 22);
  const int64_t B = 2, S = 5, C = 3, W = 4;
  Vec x = rng.vec(B * S * C), w = rng.vec(C * W), bias = rng.vec(C),
      halo = withHalo ? rng.vec(B * (W - 1) * C) : Vec(), r = rng.vec(B * S * C);
  auto J = [&] {
    Vec y(B * S * C);
    cpu::causal_conv1d(x.data(), w.data(), bias.data(), withHalo ? halo.data() : nullptr, B, S, C,
                       W, y.data());
    return dot(r, y);
  };
  Vec dx(B * S * C), dhalo(withHalo ? B * (W - 1) * C : 0), dw(C * W, 0.0f), db(C, 0.0f);
  cpu::causal_conv1d_grad(w.data(), r.data(), B, S, C, W, dx.data(),
                          withHalo ? dhalo.data() : nullptr);
  cpu::causal_conv1d_grad_weight(x.data(), withHalo ? halo.data() : nullptr, r.data(), B, S, C, W,
                                 dw.data(), db.data());
  expectGradient(x, dx, J, "dx");
  expectGradient(w, dw, J, "dweight");
  expectGradient(bias, db, J, "dbias");
  if (withHalo)
    expectGradient(halo, dhalo, J, "dhalo");
}

TEST(MambaGrad, CausalConv1dWithoutHalo) { checkConv(false); }
TEST(MambaGrad, CausalConv1dWithHalo) { checkConv(true); }

/// A sequence cut in two chunks, the second reading its halo from the first:
/// the second chunk's halo gradient, added to the first chunk's last tokens,
/// gives the unsplit dx; the weight gradients of the chunks add up.
TEST(MambaGrad, CausalConv1dHaloGradientReturnsToItsTokens) {
  Rng rng(23);
  const int64_t S = 9, S0 = 5, C = 2, W = 4;
  Vec x = rng.vec(S * C), w = rng.vec(C * W), r = rng.vec(S * C);
  Vec whole(S * C), wholeW(C * W, 0.0f), wholeB(C, 0.0f);
  cpu::causal_conv1d_grad(w.data(), r.data(), 1, S, C, W, whole.data(), nullptr);
  cpu::causal_conv1d_grad_weight(x.data(), nullptr, r.data(), 1, S, C, W, wholeW.data(),
                                 wholeB.data());
  Vec halo((W - 1) * C), dx(S * C), dhalo((W - 1) * C), dw(C * W, 0.0f), db(C, 0.0f);
  cpu::causal_conv1d_halo(x.data(), nullptr, 1, S0, C, W, halo.data());
  cpu::causal_conv1d_grad(w.data(), r.data(), 1, S0, C, W, dx.data(), nullptr);
  cpu::causal_conv1d_grad(w.data(), r.data() + S0 * C, 1, S - S0, C, W, dx.data() + S0 * C,
                          dhalo.data());
  for (int64_t i = 0; i < (W - 1) * C; ++i)
    dx[(S0 - (W - 1)) * C + i] += dhalo[i];
  expectClose(dx, whole, 1e-6, 1e-6, "dx with the halo's gradient returned");
  cpu::causal_conv1d_grad_weight(x.data(), nullptr, r.data(), 1, S0, C, W, dw.data(), db.data());
  cpu::causal_conv1d_grad_weight(x.data() + S0 * C, halo.data(), r.data() + S0 * C, 1, S - S0, C, W,
                                 dw.data(), db.data());
  expectClose(dw, wholeW, 1e-5, 1e-6, "dweight summed over the chunks");
  expectClose(db, wholeB, 1e-5, 1e-6, "dbias summed over the chunks");
}

/// The conv's backward steps with the forward's halo, from the kernel
/// table, against differences of the causal_conv1d step on a rank of a
/// zigzag sequence (two chunks of 4 tokens of 16 over cp = 2, three halo
/// rows before each): dx, each chunk's halo rows, the weight and the bias.
TEST(MambaGrad, CausalConv1dStepsWithAHalo) {
  Rng rng(42);
  Mesh mesh{{{"cp", 2}}};
  Layout seq{{{}, {"cp"}, {}}, {}, 1, shardline::ChunkOrder::Zigzag};
  Layout whole2 = Layout::replicated(2), whole1 = Layout::replicated(1);
  const std::vector<int64_t> x = {2, 16, 3}, w = {3, 4}, c = {3}, halo = {2, 12, 3};
  Vec xs = rng.vec(2 * 8 * 3), ws = rng.vec(3 * 4), bias = rng.vec(3), hs = rng.vec(2 * 6 * 3),
      r = rng.vec(xs.size());
  auto J = [&] {
    Vec y(xs.size());
    StepRig fwd("causal_conv1d", {x, w, c, halo}, {x}, {}, mesh, {seq, whole2, whole1, seq, seq});
    fwd.bind({&xs, &ws, &bias, &hs, &y});
    fwd.step.kernel->run(fwd.step, fwd.frame);
    return dot(r, y);
  };
  Vec dx(xs.size()), dhalo(hs.size()), dw(ws.size()), db(bias.size());
  StepRig grad("causal_conv1d_grad", {w, x, halo}, {x, halo}, {}, mesh,
               {whole2, seq, seq, seq, seq});
  grad.bind({&ws, &r, &hs, &dx, &dhalo});
  runChecked(grad);
  StepRig weight("causal_conv1d_grad_weight", {x, x, halo}, {w, c}, {}, mesh,
                 {seq, seq, seq, whole2, whole1});
  weight.bind({&xs, &r, &hs, &dw, &db});
  runChecked(weight);
  expectGradient(xs, dx, J, "dx");
  expectGradient(hs, dhalo, J, "dhalo");
  expectGradient(ws, dw, J, "dweight");
  expectGradient(bias, db, J, "dbias");
  StepRig noDhalo("causal_conv1d_grad", {w, x, halo}, {x}, {}, mesh, {whole2, seq, seq, seq});
  EXPECT_NE(noDhalo.verify().find("dhalo is bound exactly when halo is"), std::string::npos)
      << noDhalo.verify();
  StepRig shortHalo("causal_conv1d_grad_weight", {x, x, {2, 4, 3}}, {w, c}, {}, mesh,
                    {seq, seq, seq, whole2, whole1});
  EXPECT_EQ(shortHalo.verify(), "op #0 (sl.causal_conv1d_grad_weight 'dweight') at test.mlir:1:1: "
                                "halo has 12 elements per rank, batch x chunks x (kernel width - "
                                "1) x channels is 36");
}

/// An SSD problem with every input and every output's cotangent random.
struct Ssd {
  cpu::SsdDims d;
  Vec x, dt, A, Bm, Cm, D, stateIn, dy, dstate, ddecay;
  Ssd(uint64_t seed, cpu::SsdDims dims) : d(dims) {
    Rng rng(seed);
    int64_t T = d.B * d.S, states = d.B * d.NH * d.P * d.N;
    x = rng.vec(T * d.NH * d.P);
    dt = rng.vec(T * d.NH, 0.05f, 0.6f);
    A = rng.vec(d.NH, -1.5f, -0.2f);
    Bm = rng.vec(T * d.G * d.N);
    Cm = rng.vec(T * d.G * d.N);
    D = rng.vec(d.NH);
    stateIn = rng.vec(states);
    dy = rng.vec(T * d.NH * d.P);
    dstate = rng.vec(states);
    ddecay = rng.vec(d.B * d.NH);
  }
  /// J = dy.y + dstate.state + ddecay.decay of the forward kernel.
  double objective() {
    Vec y(x.size()), state(stateIn.size()), decay(ddecay.size());
    cpu::ssd_scan(x.data(), dt.data(), A.data(), Bm.data(), Cm.data(), D.data(), stateIn.data(), d,
                  y.data(), state.data(), decay.data());
    return dot(dy, y) + dot(dstate, state) + dot(ddecay, decay);
  }
  struct Grads {
    Vec dx, ddt, dA, dB, dC, dD, dstateIn;
  };
  Grads backward(const float *dstateOut, const float *ddecayOut) {
    Grads g{Vec(x.size()),  Vec(dt.size()),      Vec(A.size(), 0.0f), Vec(Bm.size()),
            Vec(Cm.size()), Vec(D.size(), 0.0f), Vec(stateIn.size())};
    cpu::ssd_scan_grad(x.data(), dt.data(), A.data(), Bm.data(), Cm.data(), D.data(),
                       stateIn.data(), dy.data(), dstateOut, ddecayOut, d, g.dx.data(),
                       g.ddt.data(), g.dA.data(), g.dB.data(), g.dC.data(), g.dD.data(),
                       g.dstateIn.data());
    return g;
  }
};

/// 70 tokens: the backward recomputes its states in two blocks of 64 and 6.
TEST(MambaGrad, SsdScanEveryInputAcrossCheckpointBlocks) {
  Ssd p(31, {2, 70, 4, 2, 2, 3});
  Ssd::Grads g = p.backward(p.dstate.data(), p.ddecay.data());
  auto J = [&] { return p.objective(); };
  expectGradient(p.x, g.dx, J, "dx");
  expectGradient(p.dt, g.ddt, J, "ddt");
  expectGradient(p.A, g.dA, J, "dA");
  expectGradient(p.Bm, g.dB, J, "dB");
  expectGradient(p.Cm, g.dC, J, "dC");
  expectGradient(p.D, g.dD, J, "dD");
  expectGradient(p.stateIn, g.dstateIn, J, "dstate_in");
}

/// Without the state's and the decay's cotangents (the scan's only use in
/// a block), from a zero state, one head per group.
TEST(MambaGrad, SsdScanOutputOnly) {
  Ssd p(32, {1, 9, 3, 3, 3, 2});
  std::fill(p.stateIn.begin(), p.stateIn.end(), 0.0f);
  std::fill(p.dstate.begin(), p.dstate.end(), 0.0f);
  std::fill(p.ddecay.begin(), p.ddecay.end(), 0.0f);
  Ssd::Grads g = p.backward(nullptr, nullptr);
  auto J = [&] { return p.objective(); };
  expectGradient(p.x, g.dx, J, "dx");
  expectGradient(p.dt, g.ddt, J, "ddt");
  expectGradient(p.A, g.dA, J, "dA");
  expectGradient(p.Bm, g.dB, J, "dB");
  expectGradient(p.Cm, g.dC, J, "dC");
}

/// State passing backwards: the sequence scanned as two chunks, the second
/// from the first's final state. The second chunk's initial-state gradient
/// is the first chunk's final-state cotangent, and the chunks' gradients
/// are then the unsplit scan's.
TEST(MambaGrad, SsdScanChunksPassTheStateGradientBackwards) {
  const int64_t S = 12, S0 = 5;
  Ssd whole(33, {1, S, 2, 2, 1, 3});
  Ssd::Grads want = whole.backward(whole.dstate.data(), nullptr);
  auto chunk = [&](int64_t t0, int64_t len) {
    Ssd c = whole;
    c.d.S = len;
    const int64_t hp = c.d.NH * c.d.P, gn = c.d.G * c.d.N;
    c.x.assign(whole.x.begin() + t0 * hp, whole.x.begin() + (t0 + len) * hp);
    c.dy.assign(whole.dy.begin() + t0 * hp, whole.dy.begin() + (t0 + len) * hp);
    c.dt.assign(whole.dt.begin() + t0 * c.d.NH, whole.dt.begin() + (t0 + len) * c.d.NH);
    c.Bm.assign(whole.Bm.begin() + t0 * gn, whole.Bm.begin() + (t0 + len) * gn);
    c.Cm.assign(whole.Cm.begin() + t0 * gn, whole.Cm.begin() + (t0 + len) * gn);
    return c;
  };
  Ssd first = chunk(0, S0), second = chunk(S0, S - S0);
  Vec mid(first.stateIn.size());
  cpu::ssd_scan(first.x.data(), first.dt.data(), first.A.data(), first.Bm.data(), first.Cm.data(),
                first.D.data(), first.stateIn.data(), first.d, Vec(first.x.size()).data(),
                mid.data(), nullptr);
  second.stateIn = mid;
  Ssd::Grads g2 = second.backward(whole.dstate.data(), nullptr);
  Ssd::Grads g1 = first.backward(g2.dstateIn.data(), nullptr);
  Vec dx = g1.dx, dB = g1.dB;
  dx.insert(dx.end(), g2.dx.begin(), g2.dx.end());
  dB.insert(dB.end(), g2.dB.begin(), g2.dB.end());
  expectClose(dx, want.dx, 1e-4, 1e-5, "dx over two chunks");
  expectClose(dB, want.dB, 1e-4, 1e-5, "dB over two chunks");
  expectClose(g1.dstateIn, want.dstateIn, 1e-4, 1e-5, "dstate_in through both chunks");
  Vec dA = g1.dA, dD = g1.dD;
  for (size_t h = 0; h < dA.size(); ++h)
    dA[h] += g2.dA[h], dD[h] += g2.dD[h];
  expectClose(dA, want.dA, 1e-4, 1e-5, "dA summed over the chunks");
  expectClose(dD, want.dD, 1e-4, 1e-5, "dD summed over the chunks");
}

/// The correction's backward against differences of the correction (its y
/// term: the state term is the exchange's), two heads per group so that dC
/// sums over heads.
TEST(MambaGrad, SsdStateCorrectEveryInput) {
  Ssd p(35, {2, 7, 4, 2, 2, 3});
  auto J = [&] {
    Vec y(p.x.size(), 0.0f);
    cpu::ssd_state_correct(p.Cm.data(), p.dt.data(), p.A.data(), p.stateIn.data(), p.d, y.data(),
                           nullptr);
    return dot(p.dy, y);
  };
  Vec dh0(p.stateIn.size()), dC(p.Cm.size(), 0.0f), ddt(p.dt.size()), dA(p.A.size(), 0.0f);
  cpu::ssd_state_correct_grad(p.Cm.data(), p.dt.data(), p.A.data(), p.stateIn.data(), p.dy.data(),
                              p.d, dh0.data(), dC.data(), ddt.data(), dA.data());
  expectGradient(p.stateIn, dh0, J, "dinit");
  expectGradient(p.Cm, dC, J, "dC");
  expectGradient(p.dt, ddt, J, "ddt");
  expectGradient(p.A, dA, J, "dA");
}

/// A chunk's correction plus its zero-state scan is the scan from that
/// state: their gradients add up to the scan's with state_in.
TEST(MambaGrad, SsdStateCorrectPlusZeroScanIsTheScanFromTheState) {
  Ssd p(36, {1, 9, 2, 2, 1, 2});
  Ssd::Grads want = p.backward(nullptr, nullptr);
  Vec init = p.stateIn;
  std::fill(p.stateIn.begin(), p.stateIn.end(), 0.0f);
  Ssd::Grads zero = p.backward(nullptr, nullptr);
  Vec dh0(init.size()), dC = zero.dC, ddt(p.dt.size()), dA = zero.dA;
  cpu::ssd_state_correct_grad(p.Cm.data(), p.dt.data(), p.A.data(), init.data(), p.dy.data(), p.d,
                              dh0.data(), dC.data(), ddt.data(), dA.data());
  for (size_t i = 0; i < ddt.size(); ++i)
    ddt[i] += zero.ddt[i];
  expectClose(dh0, want.dstateIn, 1e-5, 1e-6, "dinit against dstate_in");
  expectClose(dC, want.dC, 1e-5, 1e-6, "dC");
  expectClose(ddt, want.ddt, 1e-5, 1e-6, "ddt");
  expectClose(dA, want.dA, 1e-5, 1e-6, "dA");
}

/// The prelude's backward composed with the scan's, against differences of
/// the raw parameters: dt before dt_bias and softplus, a_log before -exp.
TEST(MambaGrad, SsdPreludeRawParameters) {
  Rng rng(34);
  const cpu::SsdDims d{1, 6, 2, 2, 1, 2};
  const int64_t T = d.S;
  Vec x = rng.vec(T * d.NH * d.P), dtRaw = rng.vec(T * d.NH), dtBias = rng.vec(d.NH, -2.0f, 0.0f),
      aLog = rng.vec(d.NH, -1.0f, 1.0f), Bm = rng.vec(T * d.N), Cm = rng.vec(T * d.N),
      D = rng.vec(d.NH), r = rng.vec(T * d.NH * d.P);
  auto J = [&] {
    Vec dtv(dtRaw.size()), A(d.NH), y(x.size());
    cpu::ssd_prelude(dtRaw.data(), dtBias.data(), aLog.data(), T, d.NH, dtv.data(), A.data());
    cpu::ssd_scan(x.data(), dtv.data(), A.data(), Bm.data(), Cm.data(), D.data(), nullptr, d,
                  y.data(), nullptr, nullptr);
    return dot(r, y);
  };
  Vec dtv(dtRaw.size()), A(d.NH), dx(x.size()), ddt(dtRaw.size()), dA(d.NH, 0.0f), dB(Bm.size()),
      dC(Cm.size()), dD(d.NH, 0.0f), ddtBias(d.NH), daLog(d.NH);
  cpu::ssd_prelude(dtRaw.data(), dtBias.data(), aLog.data(), T, d.NH, dtv.data(), A.data());
  cpu::ssd_scan_grad(x.data(), dtv.data(), A.data(), Bm.data(), Cm.data(), D.data(), nullptr,
                     r.data(), nullptr, nullptr, d, dx.data(), ddt.data(), dA.data(), dB.data(),
                     dC.data(), dD.data(), nullptr);
  cpu::ssd_prelude_grad(dtRaw.data(), dtBias.data(), aLog.data(), T, d.NH, ddt.data(), dA.data(),
                        ddt.data(), ddtBias.data(), daLog.data());
  expectGradient(dtRaw, ddt, J, "d dt (raw)");
  expectGradient(dtBias, ddtBias, J, "d dt_bias");
  expectGradient(aLog, daLog, J, "d a_log");
}

/// The correction's two backward steps from the kernel table against
/// differences of the ssd_correct step, in the raw parameters (dt before
/// dt_bias and softplus, a_log), two heads per group.
TEST(MambaGrad, SsdCorrectStepsEveryRawInput) {
  Rng rng(37);
  // y [2, 5, 4 heads x 2], dt [2, 5, 4], C [2, 5, 2 groups x 3], init
  // [1 chunk, 2, 4, 2, 3].
  const std::vector<int64_t> y = {2, 5, 8}, dt = {2, 5, 4}, c = {2, 5, 6}, h = {4},
                             init = {1, 2, 4, 2, 3};
  const std::vector<AttrValue> attrs = {intAttr(4), intAttr(2), test::axesAttr({})};
  Vec y0 = rng.vec(2 * 5 * 8), st = rng.vec(2 * 4 * 2 * 3), cm = rng.vec(2 * 5 * 6),
      dtRaw = rng.vec(2 * 5 * 4), aLog = rng.vec(4, -1.0f, 1.0f), dtBias = rng.vec(4, -2.0f, 0.0f),
      dy = rng.vec(y0.size());
  auto J = [&] {
    Vec out(y0.size());
    StepRig fwd("ssd_correct", {y, init, c, dt, h, h}, {y}, attrs);
    fwd.bind({&y0, &st, &cm, &dtRaw, &aLog, &dtBias, &out});
    fwd.step.kernel->run(fwd.step, fwd.frame);
    return dot(dy, out);
  };
  Vec dinit(st.size()), dC(cm.size()), ddt(dtRaw.size()), daLog(4), ddtBias(4);
  StepRig grad("ssd_correct_grad", {init, c, dt, h, h, y}, {init, c, dt}, attrs);
  grad.bind({&st, &cm, &dtRaw, &aLog, &dtBias, &dy, &dinit, &dC, &ddt});
  runChecked(grad);
  StepRig params("ssd_correct_grad_params", {init, c, dt, h, h, y}, {h, h}, attrs);
  params.bind({&st, &cm, &dtRaw, &aLog, &dtBias, &dy, &daLog, &ddtBias});
  runChecked(params);
  expectGradient(st, dinit, J, "dinit");
  expectGradient(cm, dC, J, "dC");
  expectGradient(dtRaw, ddt, J, "d dt (raw)");
  expectGradient(aLog, daLog, J, "d a_log");
  expectGradient(dtBias, ddtBias, J, "d dt_bias");
}

/// The chunked scan's two backward steps from the kernel table against
/// differences of the chunked ssd_scan step, on a rank of a zigzag sequence
/// (two chunks of 4 tokens of 16 over cp = 2), each chunk from its own
/// state_in entry, with cotangents of y, of every chunk's final state and of
/// its decay; raw parameters, two heads per group.
TEST(MambaGrad, SsdScanChunkedStepsEveryInput) {
  Rng rng(41);
  Mesh mesh{{{"cp", 2}}};
  Layout seq{{{}, {"cp"}, {}}, {}, 1, shardline::ChunkOrder::Zigzag};
  Layout chunks5{{{"cp"}, {}, {}, {}, {}}, {}, 0, shardline::ChunkOrder::Zigzag};
  Layout chunks3{{{"cp"}, {}, {}}, {}, 0, shardline::ChunkOrder::Zigzag};
  Layout whole = Layout::replicated(1);
  // Global x [2, 16, 4 heads x 2], dt [2, 16, 4], B and C [2, 16, 2 groups
  // x 3], states [4 chunks, 2, 4, 2, 3], decays [4, 2, 4]; a rank holds half.
  const std::vector<int64_t> x = {2, 16, 8}, dt = {2, 16, 4}, bc = {2, 16, 6}, h = {4},
                             st = {4, 2, 4, 2, 3}, dec = {4, 2, 4};
  const std::vector<AttrValue> attrs = {intAttr(4), intAttr(2), test::axesAttr({"cp"})};
  Vec xs = rng.vec(2 * 8 * 8), dtRaw = rng.vec(2 * 8 * 4), aLog = rng.vec(4, -1.0f, 1.0f),
      Bm = rng.vec(2 * 8 * 6), Cm = rng.vec(2 * 8 * 6), D = rng.vec(4),
      dtBias = rng.vec(4, -2.0f, 0.0f), stateIn = rng.vec(2 * 2 * 4 * 2 * 3),
      dy = rng.vec(xs.size()), dstate = rng.vec(stateIn.size()), ddecay = rng.vec(2 * 2 * 4);
  auto J = [&] {
    Vec y(xs.size()), state(stateIn.size()), decay(ddecay.size());
    StepRig fwd("ssd_scan", {x, dt, h, bc, bc, h, h, st}, {x, st, dec}, attrs, mesh,
                {seq, seq, whole, seq, seq, whole, whole, chunks5, seq, chunks5, chunks3});
    fwd.bind({&xs, &dtRaw, &aLog, &Bm, &Cm, &D, &dtBias, &stateIn, &y, &state, &decay});
    fwd.step.kernel->run(fwd.step, fwd.frame);
    return dot(dy, y) + dot(dstate, state) + dot(ddecay, decay);
  };
  const std::vector<std::vector<int64_t>> in = {x, dt, h, bc, bc, h, h, x, st, st, dec};
  const std::vector<Layout> inLayouts = {seq,   seq, whole,   seq,     seq,    whole,
                                         whole, seq, chunks5, chunks5, chunks3};
  Vec dx(xs.size()), ddt(dtRaw.size()), dB(Bm.size()), dC(Cm.size()), dStateIn(stateIn.size()),
      daLog(4), dd(4), ddtBias(4);
  std::vector<Layout> gradLayouts = inLayouts;
  for (const Layout &l : {seq, seq, seq, seq, chunks5})
    gradLayouts.push_back(l);
  StepRig grad("ssd_scan_grad", in, {x, dt, bc, bc, st}, attrs, mesh, gradLayouts);
  grad.bind({&xs, &dtRaw, &aLog, &Bm, &Cm, &D, &dtBias, &dy, &stateIn, &dstate, &ddecay, &dx, &ddt,
             &dB, &dC, &dStateIn});
  runChecked(grad);
  std::vector<Layout> paramLayouts = inLayouts;
  paramLayouts.insert(paramLayouts.end(), 3, whole);
  StepRig params("ssd_scan_grad_params", in, {h, h, h}, attrs, mesh, paramLayouts);
  params.bind({&xs, &dtRaw, &aLog, &Bm, &Cm, &D, &dtBias, &dy, &stateIn, &dstate, &ddecay, &daLog,
               &dd, &ddtBias});
  runChecked(params);
  expectGradient(xs, dx, J, "dx");
  expectGradient(dtRaw, ddt, J, "d dt (raw)");
  expectGradient(Bm, dB, J, "dB");
  expectGradient(Cm, dC, J, "dC");
  expectGradient(stateIn, dStateIn, J, "dstate_in");
  expectGradient(aLog, daLog, J, "d a_log");
  expectGradient(D, dd, J, "dd");
  expectGradient(dtBias, ddtBias, J, "d dt_bias");
}

/// The exchange's reverse combination against differences of the forward
/// combination, with every input and both outputs' cotangents random.
TEST(ScanExchangeGrad, EveryInputOfTheCombination) {
  Rng rng(38);
  const int64_t chunks = 4, nd = 3, bcast = 2, size = nd * bcast;
  Vec decay = rng.vec(chunks * nd, 0.2f, 0.9f), fin = rng.vec(chunks * size), init = rng.vec(size),
      r = rng.vec(chunks * size), rt = rng.vec(size);
  auto combine = [&](Vec &chunkInit, Vec &total) {
    cpu::scan_combine_states(decay.data(), fin.data(), init.data(), chunks, nd, bcast,
                             chunkInit.data(), total.data());
  };
  auto J = [&] {
    Vec ci(chunks * size), total(size);
    combine(ci, total);
    return dot(r, ci) + dot(rt, total);
  };
  Vec ci(chunks * size), total(size), dfin(fin.size()), ddecay(decay.size()), dinit(size);
  combine(ci, total);
  cpu::scan_combine_states_grad(decay.data(), ci.data(), r.data(), rt.data(), chunks, nd, bcast,
                                dfin.data(), ddecay.data(), dinit.data());
  expectGradient(fin, dfin, J, "dfinal");
  expectGradient(decay, ddecay, J, "ddecay");
  expectGradient(init, dinit, J, "dinit");
}

/// Chunked scans combined by the exchange and corrected, backwards: the
/// chunks' scan, correction and reverse combination give the unsplit scan's
/// gradients.
TEST(ScanExchangeGrad, ChunkedScanBackwardIsTheUnsplitOne) {
  const int64_t S = 12, K = 3, L = S / K;
  Ssd whole(39, {1, S, 2, 2, 1, 3});
  std::fill(whole.stateIn.begin(), whole.stateIn.end(), 0.0f);
  Ssd::Grads want = whole.backward(nullptr, nullptr);
  const cpu::SsdDims &d = whole.d;
  const int64_t hp = d.NH * d.P, gn = d.G * d.N, size = d.NH * d.P * d.N;
  cpu::SsdDims cd = d;
  cd.S = L;
  // Forward: every chunk from zero, its summaries, the exchange.
  Vec fin(K * size), decay(K * d.NH), ci(K * size), y(whole.x.size());
  for (int64_t c = 0; c < K; ++c)
    cpu::ssd_scan(whole.x.data() + c * L * hp, whole.dt.data() + c * L * d.NH, whole.A.data(),
                  whole.Bm.data() + c * L * gn, whole.Cm.data() + c * L * gn, whole.D.data(),
                  nullptr, cd, y.data() + c * L * hp, fin.data() + c * size,
                  decay.data() + c * d.NH);
  cpu::scan_combine_states(decay.data(), fin.data(), nullptr, K, d.NH, d.P * d.N, ci.data(),
                           nullptr);
  // Backward: each chunk's correction, then the reverse exchange, then each
  // chunk's scan with its final state's and decay's cotangents.
  Vec dci(K * size), dC(whole.Cm.size(), 0.0f), ddt(whole.dt.size()), dA(d.NH, 0.0f);
  for (int64_t c = 0; c < K; ++c)
    cpu::ssd_state_correct_grad(whole.Cm.data() + c * L * gn, whole.dt.data() + c * L * d.NH,
                                whole.A.data(), ci.data() + c * size, whole.dy.data() + c * L * hp,
                                cd, dci.data() + c * size, dC.data() + c * L * gn,
                                ddt.data() + c * L * d.NH, dA.data());
  Vec dfin(K * size), ddecay(K * d.NH);
  cpu::scan_combine_states_grad(decay.data(), ci.data(), dci.data(), nullptr, K, d.NH, d.P * d.N,
                                dfin.data(), ddecay.data(), nullptr);
  Vec dx(whole.x.size()), dB(whole.Bm.size()), dCs(whole.Cm.size()), ddts(whole.dt.size()),
      dD(d.NH, 0.0f);
  for (int64_t c = 0; c < K; ++c)
    cpu::ssd_scan_grad(whole.x.data() + c * L * hp, whole.dt.data() + c * L * d.NH, whole.A.data(),
                       whole.Bm.data() + c * L * gn, whole.Cm.data() + c * L * gn, whole.D.data(),
                       nullptr, whole.dy.data() + c * L * hp, dfin.data() + c * size,
                       ddecay.data() + c * d.NH, cd, dx.data() + c * L * hp,
                       ddts.data() + c * L * d.NH, dA.data(), dB.data() + c * L * gn,
                       dCs.data() + c * L * gn, dD.data(), nullptr);
  for (size_t i = 0; i < dC.size(); ++i)
    dC[i] += dCs[i];
  for (size_t i = 0; i < ddt.size(); ++i)
    ddt[i] += ddts[i];
  expectClose(dx, want.dx, 1e-4, 1e-5, "dx");
  expectClose(dB, want.dB, 1e-4, 1e-5, "dB");
  expectClose(dC, want.dC, 1e-4, 1e-5, "dC");
  expectClose(ddt, want.ddt, 1e-4, 1e-5, "ddt");
  expectClose(dA, want.dA, 1e-4, 1e-5, "dA");
  expectClose(dD, want.dD, 1e-4, 1e-5, "dD");
}

TEST(MambaGradKernelTable, EveryBackwardOpWithItsNames) {
  struct Entry {
    std::vector<std::string> operands, results, attrs;
  };
  const std::vector<std::string> ssdIn = {"x",       "dt", "a_log",     "B",       "C",      "d",
                                          "dt_bias", "dy", "state_in?", "dstate?", "ddecay?"};
  const std::vector<std::string> correctIn = {"init", "C", "dt", "a_log", "dt_bias", "dy"};
  const std::vector<std::pair<std::string, Entry>> want = {
      {"gated_rms_norm_grad", {{"y", "z", "weight", "dresult"}, {"dy", "dz"}, {"groups", "eps"}}},
      {"gated_rms_norm_grad_weight", {{"y", "z", "dresult"}, {"dweight"}, {"groups", "eps"}}},
      {"causal_conv1d_grad", {{"weight", "dy", "halo?"}, {"dx", "dhalo?"}, {}}},
      {"causal_conv1d_grad_weight", {{"x", "dy", "halo?"}, {"dweight", "dbias"}, {}}},
      {"ssd_scan_grad",
       {ssdIn, {"dx", "ddt", "dB", "dC", "dstate_in?"}, {"heads", "groups", "chunk_axes"}}},
      {"ssd_scan_grad_params",
       {ssdIn, {"da_log", "dd", "ddt_bias"}, {"heads", "groups", "chunk_axes"}}},
      {"ssd_correct_grad", {correctIn, {"dinit", "dC", "ddt"}, {"heads", "groups", "chunk_axes"}}},
      {"ssd_correct_grad_params",
       {correctIn, {"da_log", "ddt_bias"}, {"heads", "groups", "chunk_axes"}}},
  };
  const KernelTable &table = cpuBackend().kernels;
  for (const auto &[kind, entry] : want) {
    auto it = table.find(kind);
    ASSERT_NE(it, table.end()) << kind;
    EXPECT_EQ(it->second.operands, entry.operands) << kind;
    EXPECT_EQ(it->second.results, entry.results) << kind;
    std::vector<std::string> attrs;
    for (const AttrSpec &a : it->second.attrs)
      attrs.push_back(a.name);
    EXPECT_EQ(attrs, entry.attrs) << kind;
    EXPECT_NE(it->second.check, nullptr) << kind;
  }
}

AttrValue floatAttr(double v) {
  AttrValue a;
  a.present = true;
  a.f = v;
  return a;
}

TEST(MambaGradKernelContracts, NameTheMismatch) {
  std::vector<int64_t> act = {2, 4, 12};
  StepRig good("gated_rms_norm_grad", {act, act, {12}, act}, {act, act},
               {intAttr(3), floatAttr(1e-5)});
  EXPECT_EQ(good.verify(), "");
  StepRig groups("gated_rms_norm_grad", {act, act, {12}, act}, {act, act},
                 {intAttr(5), floatAttr(1e-5)});
  EXPECT_EQ(groups.verify(), "op #0 (sl.gated_rms_norm_grad 'dy') at test.mlir:1:1: y's 12 "
                             "channels per rank are not whole groups of the 5 groups");
  StepRig weight("gated_rms_norm_grad_weight", {act, act, act}, {{8}},
                 {intAttr(3), floatAttr(1e-5)});
  EXPECT_NE(weight.verify().find("dweight"), std::string::npos) << weight.verify();
  StepRig bias("causal_conv1d_grad_weight", {act, act}, {{12, 4}, {6}}, {});
  EXPECT_NE(bias.verify().find("dbias"), std::string::npos) << bias.verify();
  StepRig conv("causal_conv1d_grad", {{12, 4}, {2, 4, 6}}, {{2, 4, 6}}, {});
  EXPECT_NE(conv.verify().find("weight"), std::string::npos) << conv.verify();
  // x [2, 4, 4 heads x 2], dt [2, 4, 4], B and C [2, 4, 2 groups x 3].
  std::vector<int64_t> x = {2, 4, 8}, dt = {2, 4, 4}, bc = {2, 4, 6}, h = {4};
  std::vector<AttrValue> ssd = {intAttr(4), intAttr(2), test::axesAttr({})};
  StepRig scan("ssd_scan_grad", {x, dt, h, bc, bc, h, h, x}, {x, dt, bc, bc}, ssd);
  EXPECT_EQ(scan.verify(), "");
  StepRig dy("ssd_scan_grad", {x, dt, h, bc, bc, h, h, {2, 4, 4}}, {x, dt, bc, bc}, ssd);
  EXPECT_NE(dy.verify().find("dy"), std::string::npos) << dy.verify();
  StepRig params("ssd_scan_grad_params", {x, dt, h, bc, bc, h, h, x}, {h, {3}, h}, ssd);
  EXPECT_NE(params.verify().find("dd"), std::string::npos) << params.verify();
  std::vector<AttrValue> correct = {intAttr(4), intAttr(2), test::axesAttr({})};
  std::vector<int64_t> init = {1, 2, 4, 2, 3};
  StepRig fix("ssd_correct_grad", {init, bc, dt, h, h, x}, {init, bc, dt}, correct);
  EXPECT_EQ(fix.verify(), "");
  StepRig small("ssd_correct_grad", {{1, 2, 4, 2, 2}, bc, dt, h, h, x}, {init, bc, dt}, correct);
  EXPECT_EQ(small.verify(), "op #0 (sl.ssd_correct_grad 'dinit') at test.mlir:1:1: init has 32 "
                            "elements per rank, chunks x batch x heads x head dimension x state "
                            "size is 48");
  StepRig dC("ssd_correct_grad", {init, bc, dt, h, h, x}, {init, x, dt}, correct);
  EXPECT_NE(dC.verify().find("dC"), std::string::npos) << dC.verify();
  StepRig heads("ssd_scan_grad", {x, dt, h, bc, bc, h, h, x}, {x, dt, bc, bc},
                {intAttr(3), intAttr(2), test::axesAttr({})});
  // A state_in of [2, 4, 2, 3] needs its dstate_in, and a short dstate is named.
  std::vector<int64_t> st = {2, 4, 2, 3};
  StepRig noDstateIn("ssd_scan_grad", {x, dt, h, bc, bc, h, h, x, st}, {x, dt, bc, bc}, ssd);
  EXPECT_NE(noDstateIn.verify().find("dstate_in is bound exactly when state_in is"),
            std::string::npos)
      << noDstateIn.verify();
  StepRig shortState("ssd_scan_grad", {x, dt, h, bc, bc, h, h, x, st, {2, 4, 2, 2}},
                     {x, dt, bc, bc, st}, ssd);
  EXPECT_EQ(shortState.verify(), "op #0 (sl.ssd_scan_grad 'dx') at test.mlir:1:1: dstate has 32 "
                                 "elements per rank, chunks x batch x heads x head dimension x "
                                 "state size is 48");
  EXPECT_NE(heads.verify().find("attribute 'heads' (3) does not divide x's width 8"),
            std::string::npos)
      << heads.verify();
}

} // namespace
