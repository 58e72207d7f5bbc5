//===- recurrent_grad_test.cpp - Backward of the RG-LRU scan --------------===//
//
// rglru_scan_grad against central differences of the forward kernels the
// plan runs (rglru_gates, then rglru_scan from a zero state), with
// grad_kernels_test.cpp's step and tolerance; over a split batch the
// parameters' gradients are partial sums of the whole's; and the kernel
// table's entries against the ops' names and contracts.
//
//===----------------------------------------------------------------------===//

#include "exec/verify.h"
#include "kernel_test_util.h"
#include "kernels/cpu/kernels.h"
#include "step_rig.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace cpu = shardline::rt::cpu;
using namespace shardline::rt;
using test::dot;
using test::expectClose;
using test::expectGradient;
using test::Rng;
using test::StepRig;
using test::Vec;

namespace {

struct ScanCase {
  int64_t B = 2, S = 7, W = 3;
  Vec x, wa, ba, wx, bx, lambda, dy;
  explicit ScanCase(uint64_t seed) {
    Rng rng(seed);
    x = rng.vec(B * S * W);
    wa = rng.vec(W);
    ba = rng.vec(W);
    wx = rng.vec(W);
    bx = rng.vec(W);
    // sigmoid(lambda) well inside (0, 1): decays neither vanish nor reach one.
    lambda = rng.vec(W, 0.5f, 3.0f);
    dy = rng.vec(B * S * W);
  }
  /// y of the forward kernels on the first `b` batch entries from `b0`.
  Vec forward(int64_t b0, int64_t b) const {
    const int64_t n = b * S * W;
    Vec ga(n), gx(n), y(n);
    cpu::rglru_gates(x.data() + b0 * S * W, wa.data(), ba.data(), wx.data(), bx.data(), b * S, W,
                     ga.data(), gx.data());
    cpu::rglru_scan(x.data() + b0 * S * W, ga.data(), gx.data(), lambda.data(), nullptr, b, S, W,
                    y.data(), nullptr, nullptr);
    return y;
  }
  /// dx and the five parameter gradients on batch entries [b0, b0 + b).
  std::vector<Vec> backward(int64_t b0, int64_t b) const {
    std::vector<Vec> g = {Vec(b * S * W), Vec(W), Vec(W), Vec(W), Vec(W), Vec(W)};
    cpu::rglru_scan_grad(x.data() + b0 * S * W, wa.data(), ba.data(), wx.data(), bx.data(),
                         lambda.data(), dy.data() + b0 * S * W, b, S, W, g[0].data(),
                         {g[1].data(), g[2].data(), g[3].data(), g[4].data(), g[5].data()});
    return g;
  }
};

TEST(RglruGrad, InputGatesAndLambda) {
  ScanCase c(71);
  std::vector<Vec> g = c.backward(0, c.B);
  auto j = [&] { return dot(c.dy, c.forward(0, c.B)); };
  expectGradient(c.x, g[0], j, "dx");
  expectGradient(c.wa, g[1], j, "dwa");
  expectGradient(c.ba, g[2], j, "dba");
  expectGradient(c.wx, g[3], j, "dwx");
  expectGradient(c.bx, g[4], j, "dbx");
  expectGradient(c.lambda, g[5], j, "dlambda");
}

/// A cotangent on the last token only still reaches every earlier token
/// through the decays.
TEST(RglruGrad, ALateCotangentReachesEveryToken) {
  ScanCase c(72);
  std::fill(c.dy.begin(), c.dy.end(), 0.0f);
  for (int64_t w = 0; w < c.W; ++w)
    c.dy[(c.S - 1) * c.W + w] = 1.0f;
  std::vector<Vec> g = c.backward(0, 1);
  for (int64_t t = 0; t < c.S; ++t)
    for (int64_t w = 0; w < c.W; ++w)
      EXPECT_NE(g[0][t * c.W + w], 0.0f) << "token " << t << " channel " << w;
  auto j = [&] { return dot(Vec(c.dy.begin(), c.dy.begin() + c.S * c.W), c.forward(0, 1)); };
  expectGradient(c.lambda, g[5], j, "dlambda");
}

/// Data parallelism: each half of the batch gives its tokens' dx and a
/// partial sum of the parameters' gradients.
TEST(RglruGrad, SplitBatchGivesPartialSums) {
  ScanCase c(73);
  std::vector<Vec> whole = c.backward(0, c.B), first = c.backward(0, 1), second = c.backward(1, 1);
  Vec dx(first[0]);
  dx.insert(dx.end(), second[0].begin(), second[0].end());
  expectClose(dx, whole[0], 0.0, 0.0, "dx");
  for (int p = 1; p < 6; ++p) {
    Vec sum(c.W);
    for (int64_t w = 0; w < c.W; ++w)
      sum[w] = first[p][w] + second[p][w];
    expectClose(sum, whole[p], 1e-5, 1e-7, "a parameter's partial sums");
  }
}

TEST(RglruGradKernelTable, BothEntriesWithTheirNamesAndContracts) {
  ScanCase c(74);
  const int64_t B = c.B, S = c.S, W = c.W;
  const std::vector<std::vector<int64_t>> in = {{B, S, W}, {W}, {W}, {W}, {W}, {W}, {B, S, W}};
  StepRig dxRig("rglru_scan_grad", in, {{B, S, W}}, {});
  StepRig dpRig("rglru_scan_grad_weights", in, {{W}, {W}, {W}, {W}, {W}}, {});
  EXPECT_EQ(dxRig.step.kernel->operands,
            (std::vector<std::string>{"x", "wa", "ba", "wx", "bx", "lambda", "dy"}));
  EXPECT_EQ(dxRig.step.kernel->results, (std::vector<std::string>{"dx"}));
  EXPECT_EQ(dpRig.step.kernel->results,
            (std::vector<std::string>{"dwa", "dba", "dwx", "dbx", "dlambda"}));
  Vec dx(B * S * W), dwa(W), dba(W), dwx(W), dbx(W), dl(W);
  dxRig.bind({&c.x, &c.wa, &c.ba, &c.wx, &c.bx, &c.lambda, &c.dy, &dx});
  dpRig.bind({&c.x, &c.wa, &c.ba, &c.wx, &c.bx, &c.lambda, &c.dy, &dwa, &dba, &dwx, &dbx, &dl});
  ASSERT_EQ(dxRig.verify(), "");
  ASSERT_EQ(dpRig.verify(), "");
  dxRig.step.kernel->run(dxRig.step, dxRig.frame);
  dpRig.step.kernel->run(dpRig.step, dpRig.frame);
  std::vector<Vec> want = c.backward(0, B);
  EXPECT_EQ(dx, want[0]);
  EXPECT_EQ(dwa, want[1]);
  EXPECT_EQ(dl, want[5]);
  StepRig bad("rglru_scan_grad", {{B, S, W}, {W}, {W}, {W}, {W}, {W + 1}, {B, S, W}}, {{B, S, W}},
              {});
  EXPECT_NE(bad.verify().find("lambda"), std::string::npos) << bad.verify();
}

} // namespace
