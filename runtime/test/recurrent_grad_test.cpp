//===- recurrent_grad_test.cpp - Backward of the RG-LRU scan and correction ===//
//
// rglru_scan_grad and rglru_state_correct_grad against central differences
// of the forward kernels the plan runs (rglru_gates, then rglru_scan from a
// state, or rglru_state_correct), with grad_kernels_test.cpp's step and
// tolerance; the backward of a sequence cut into chunks (each chunk's scan
// from zero, the exchange's combination, each chunk's correction) against
// the unsplit scan's; over a split batch the parameters' gradients are
// partial sums of the whole's; and the kernel table's entries against the
// ops' names and contracts, chunked in zigzag order too.
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
  Vec x, wa, ba, wx, bx, lambda, dy, stateIn, dstate, ddecay;
  explicit ScanCase(uint64_t seed, int64_t seqLen = 7) : S(seqLen) {
    Rng rng(seed);
    x = rng.vec(B * S * W);
    wa = rng.vec(W);
    ba = rng.vec(W);
    wx = rng.vec(W);
    bx = rng.vec(W);
    // sigmoid(lambda) well inside (0, 1): decays neither vanish nor reach one.
    lambda = rng.vec(W, 0.5f, 3.0f);
    dy = rng.vec(B * S * W);
    stateIn = rng.vec(B * W);
    dstate = rng.vec(B * W);
    ddecay = rng.vec(B * W);
  }
  /// y, the final state and the decay of the forward kernels on `b` batch
  /// entries from `b0`, tokens [t0, t0 + s), from `state` (nullptr: zero).
  struct Out {
    Vec y, state, decay;
  };
  Out forward(int64_t b0, int64_t b, const float *state = nullptr, int64_t t0 = 0,
              int64_t s = -1) const {
    s = s < 0 ? S : s;
    Out o{Vec(b * s * W), Vec(b * W), Vec(b * W)};
    Vec xs = tokens(x, b0, b, t0, s), ga(xs.size()), gx(xs.size());
    cpu::rglru_gates(xs.data(), wa.data(), ba.data(), wx.data(), bx.data(), b * s, W, ga.data(),
                     gx.data());
    cpu::rglru_scan(xs.data(), ga.data(), gx.data(), lambda.data(), state, b, s, W, o.y.data(),
                    o.state.data(), o.decay.data());
    return o;
  }
  /// Tokens [t0, t0 + s) of batch entries [b0, b0 + b) of a [B, S, W] value.
  Vec tokens(const Vec &v, int64_t b0, int64_t b, int64_t t0, int64_t s) const {
    Vec out;
    for (int64_t i = b0; i < b0 + b; ++i)
      out.insert(out.end(), v.begin() + (i * S + t0) * W, v.begin() + (i * S + t0 + s) * W);
    return out;
  }
  /// dx, the five parameter gradients and dstate_in on batch entries
  /// [b0, b0 + b), from state_in and with the summaries' cotangents when
  /// `ends`.
  std::vector<Vec> backward(int64_t b0, int64_t b, bool ends = false) const {
    std::vector<Vec> g = {Vec(b * S * W), Vec(W), Vec(W), Vec(W), Vec(W), Vec(W), Vec(b * W)};
    auto at = [&](const Vec &v) { return ends ? v.data() + b0 * W : nullptr; };
    cpu::rglru_scan_grad(x.data() + b0 * S * W, wa.data(), ba.data(), wx.data(), bx.data(),
                         lambda.data(), at(stateIn), dy.data() + b0 * S * W, at(dstate), at(ddecay),
                         b, S, W, g[0].data(), g[6].data(),
                         {g[1].data(), g[2].data(), g[3].data(), g[4].data(), g[5].data()});
    return g;
  }
  /// y0 + the correction of init (one state per batch entry) on the whole
  /// batch, and its backward: dinit, dx, dwa, dba, dlambda.
  Vec corrected(const Vec &y0, const Vec &init) const {
    Vec y(y0), ga(x.size());
    cpu::rglru_gates(x.data(), wa.data(), ba.data(), nullptr, nullptr, B * S, W, ga.data(),
                     nullptr);
    cpu::rglru_state_correct(ga.data(), lambda.data(), init.data(), B, S, W, y.data(), nullptr);
    return y;
  }
  std::vector<Vec> correctBackward(const Vec &init) const {
    std::vector<Vec> g = {Vec(B * W), Vec(x.size()), Vec(W), Vec(W), Vec(W)};
    cpu::rglru_state_correct_grad(x.data(), wa.data(), ba.data(), lambda.data(), init.data(),
                                  dy.data(), B, S, W, g[0].data(), g[1].data(),
                                  {g[2].data(), g[3].data(), nullptr, nullptr, g[4].data()});
    return g;
  }
};

TEST(RglruGrad, InputGatesAndLambda) {
  ScanCase c(71);
  std::vector<Vec> g = c.backward(0, c.B);
  auto j = [&] { return dot(c.dy, c.forward(0, c.B).y); };
  expectGradient(c.x, g[0], j, "dx");
  expectGradient(c.wa, g[1], j, "dwa");
  expectGradient(c.ba, g[2], j, "dba");
  expectGradient(c.wx, g[3], j, "dwx");
  expectGradient(c.bx, g[4], j, "dbx");
  expectGradient(c.lambda, g[5], j, "dlambda");
}

/// A chunk of a split sequence: scanned from a state, its final state and
/// total decay read by the exchange.
TEST(RglruGrad, FromAStateWithTheSummariesCotangents) {
  ScanCase c(75);
  std::vector<Vec> g = c.backward(0, c.B, true);
  auto j = [&] {
    ScanCase::Out o = c.forward(0, c.B, c.stateIn.data());
    return dot(c.dy, o.y) + dot(c.dstate, o.state) + dot(c.ddecay, o.decay);
  };
  expectGradient(c.x, g[0], j, "dx");
  expectGradient(c.stateIn, g[6], j, "dstate_in");
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
  auto j = [&] { return dot(Vec(c.dy.begin(), c.dy.begin() + c.S * c.W), c.forward(0, 1).y); };
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

TEST(RglruCorrectGrad, InitInputGatesAndLambda) {
  ScanCase c(76);
  Vec y0 = c.forward(0, c.B).y;
  std::vector<Vec> g = c.correctBackward(c.stateIn);
  auto j = [&] { return dot(c.dy, c.corrected(y0, c.stateIn)); };
  expectGradient(c.stateIn, g[0], j, "dinit");
  expectGradient(c.x, g[1], j, "dx");
  expectGradient(c.wa, g[2], j, "dwa");
  expectGradient(c.ba, g[3], j, "dba");
  expectGradient(c.lambda, g[4], j, "dlambda");
}

/// Context parallelism, backwards: each chunk's correction, the exchange's
/// reverse combination and each chunk's scan with its summaries'
/// cotangents give the unsplit scan's gradients.
TEST(RglruCorrectGrad, ChunkedBackwardIsTheUnsplitOne) {
  const int64_t S = 12, K = 3, L = S / K;
  ScanCase c(77, S);
  const int64_t B = c.B, W = c.W, size = B * W;
  std::vector<Vec> want = c.backward(0, B);
  // Forward: every chunk from zero, its summaries, the exchange.
  std::vector<Vec> y0(K);
  Vec fin(K * size), decay(K * size), ci(K * size);
  for (int64_t k = 0; k < K; ++k) {
    ScanCase::Out o = c.forward(0, B, nullptr, k * L, L);
    y0[k] = o.y;
    std::copy(o.state.begin(), o.state.end(), fin.begin() + k * size);
    std::copy(o.decay.begin(), o.decay.end(), decay.begin() + k * size);
  }
  cpu::scan_combine_states(decay.data(), fin.data(), nullptr, K, size, 1, ci.data(), nullptr);
  // Backward: each chunk's correction, the reverse exchange, each chunk's
  // scan; x and the parameters collect from both.
  Vec dci(K * size), dfin(K * size), ddecay(K * size), dx(c.x.size());
  std::vector<Vec> dp(5, Vec(W, 0.0f));
  cpu::RglruParamGrads params{dp[0].data(), dp[1].data(), dp[2].data(), dp[3].data(), dp[4].data()};
  std::vector<Vec> dxCorrect(K);
  for (int64_t k = 0; k < K; ++k) {
    Vec xs = c.tokens(c.x, 0, B, k * L, L), dys = c.tokens(c.dy, 0, B, k * L, L);
    dxCorrect[k].resize(xs.size());
    cpu::rglru_state_correct_grad(xs.data(), c.wa.data(), c.ba.data(), c.lambda.data(),
                                  ci.data() + k * size, dys.data(), B, L, W, dci.data() + k * size,
                                  dxCorrect[k].data(),
                                  {params.wa, params.ba, nullptr, nullptr, params.lambda});
  }
  cpu::scan_combine_states_grad(decay.data(), ci.data(), dci.data(), nullptr, K, size, 1,
                                dfin.data(), ddecay.data(), nullptr);
  for (int64_t k = 0; k < K; ++k) {
    Vec xs = c.tokens(c.x, 0, B, k * L, L), dys = c.tokens(c.dy, 0, B, k * L, L), dxs(xs.size());
    cpu::rglru_scan_grad(xs.data(), c.wa.data(), c.ba.data(), c.wx.data(), c.bx.data(),
                         c.lambda.data(), nullptr, dys.data(), dfin.data() + k * size,
                         ddecay.data() + k * size, B, L, W, dxs.data(), nullptr, params);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < L * W; ++i)
        dx[(b * S + k * L) * W + i] = dxs[b * L * W + i] + dxCorrect[k][b * L * W + i];
  }
  expectClose(dx, want[0], 1e-4, 1e-6, "dx");
  const char *names[] = {"dwa", "dba", "dwx", "dbx", "dlambda"};
  for (int p = 0; p < 5; ++p)
    expectClose(dp[p], want[p + 1], 1e-4, 1e-6, names[p]);
}

const std::vector<std::string> kScanIn = {"x",      "wa",        "ba", "wx",      "bx",
                                          "lambda", "state_in?", "dy", "dstate?", "ddecay?"};
const std::vector<std::string> kCorrectIn = {"init", "x", "wa", "ba", "lambda", "dy"};

TEST(RglruGradKernelTable, EveryEntryWithItsNamesAndContract) {
  struct Entry {
    std::vector<std::string> operands, results;
  };
  const std::vector<std::pair<std::string, Entry>> want = {
      {"rglru_scan_grad", {kScanIn, {"dx", "dstate_in?"}}},
      {"rglru_scan_grad_weights", {kScanIn, {"dwa", "dba", "dwx", "dbx", "dlambda"}}},
      {"rglru_correct_grad", {kCorrectIn, {"dinit", "dx"}}},
      {"rglru_correct_grad_params", {kCorrectIn, {"dwa", "dba", "dlambda"}}},
  };
  for (const auto &[kind, entry] : want) {
    const KernelSpec &k = cpuBackend().kernels.at(kind);
    EXPECT_EQ(k.operands, entry.operands) << kind;
    EXPECT_EQ(k.results, entry.results) << kind;
    ASSERT_EQ(k.attrs.size(), 1u) << kind;
    EXPECT_EQ(k.attrs[0].name, "chunk_axes") << kind;
  }
  const int64_t B = 2, S = 7, W = 3;
  const std::vector<int64_t> tok = {B, S, W}, par = {W}, sum = {1, B, W};
  StepRig bad("rglru_scan_grad", {tok, par, par, par, par, {W + 1}, sum, tok, sum, sum}, {tok, sum},
              {test::axesAttr({})});
  EXPECT_NE(bad.verify().find("lambda"), std::string::npos) << bad.verify();
  StepRig noResult("rglru_scan_grad", {tok, par, par, par, par, par, sum, tok, sum, sum}, {tok},
                   {test::axesAttr({})});
  EXPECT_NE(noResult.verify().find("dstate_in is there exactly when state_in is"),
            std::string::npos)
      << noResult.verify();
  StepRig shortInit("rglru_correct_grad", {{B - 1, W}, tok, par, par, par, tok}, {{B - 1, W}, tok},
                    {test::axesAttr({})});
  EXPECT_NE(shortInit.verify().find("chunks x batch x width is 6"), std::string::npos)
      << shortInit.verify();
}

/// The entries over a sequence cut into two zigzag chunks per rank: each
/// chunk of each batch entry reads and writes its own (chunk, batch) slot of
/// the summaries, and the parameters' gradients sum over both chunks.
TEST(RglruGradKernelTable, ZigzagChunksUseTheirOwnSlots) {
  const int64_t S = 8, L = S / 2;
  ScanCase c(78, S);
  const int64_t B = c.B, W = c.W, size = B * W;
  Rng rng(79);
  Vec si = rng.vec(2 * size), ds = rng.vec(2 * size), dd = rng.vec(2 * size),
      init = rng.vec(2 * size);
  shardline::Mesh mesh{{{"cp", 1}}};
  shardline::Layout seq{{{}, {"cp"}, {}}, {}, 1, shardline::ChunkOrder::Zigzag};
  shardline::Layout chunks{{{"cp"}, {}, {}}, {}, 0, shardline::ChunkOrder::Zigzag};
  shardline::Layout rep1 = shardline::Layout::replicated(1);
  const std::vector<int64_t> tok = {B, S, W}, par = {W}, sum = {2, B, W};
  std::vector<AttrValue> cp = {test::axesAttr({"cp"})};
  StepRig scan("rglru_scan_grad", {tok, par, par, par, par, par, sum, tok, sum, sum}, {tok, sum},
               cp, mesh,
               {seq, rep1, rep1, rep1, rep1, rep1, chunks, seq, chunks, chunks, seq, chunks});
  Vec dx(c.x.size()), dsi(2 * size);
  scan.bind({&c.x, &c.wa, &c.ba, &c.wx, &c.bx, &c.lambda, &si, &c.dy, &ds, &dd, &dx, &dsi});
  ASSERT_EQ(scan.verify(), "");
  scan.step.kernel->run(scan.step, scan.frame);
  StepRig correct("rglru_correct_grad_params", {sum, tok, par, par, par, tok}, {par, par, par}, cp,
                  mesh, {chunks, seq, rep1, rep1, rep1, seq, rep1, rep1, rep1});
  Vec dwa(W, 1.0f), dba(W, 1.0f), dl(W, 1.0f);
  correct.bind({&init, &c.x, &c.wa, &c.ba, &c.lambda, &c.dy, &dwa, &dba, &dl});
  ASSERT_EQ(correct.verify(), "");
  correct.step.kernel->run(correct.step, correct.frame);
  Vec wantDwa(W, 0.0f), wantDba(W, 0.0f), wantDl(W, 0.0f);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < 2; ++k) {
      int64_t slot = (k * B + b) * W, row = (b * S + k * L) * W;
      Vec got(L * W), gotSi(W), dinit(W), dxc(L * W);
      cpu::rglru_scan_grad(c.x.data() + row, c.wa.data(), c.ba.data(), c.wx.data(), c.bx.data(),
                           c.lambda.data(), si.data() + slot, c.dy.data() + row, ds.data() + slot,
                           dd.data() + slot, 1, L, W, got.data(), gotSi.data(), {});
      expectClose(Vec(dx.begin() + row, dx.begin() + row + L * W), got, 0.0, 0.0, "dx");
      expectClose(Vec(dsi.begin() + slot, dsi.begin() + slot + W), gotSi, 0.0, 0.0, "dstate_in");
      cpu::rglru_state_correct_grad(
          c.x.data() + row, c.wa.data(), c.ba.data(), c.lambda.data(), init.data() + slot,
          c.dy.data() + row, 1, L, W, dinit.data(), dxc.data(),
          {wantDwa.data(), wantDba.data(), nullptr, nullptr, wantDl.data()});
    }
  // The results were not zero before the step: the kernel zeroes them.
  expectClose(dwa, wantDwa, 1e-6, 1e-7, "dwa");
  expectClose(dba, wantDba, 1e-6, 1e-7, "dba");
  expectClose(dl, wantDl, 1e-6, 1e-7, "dlambda");
}

} // namespace
