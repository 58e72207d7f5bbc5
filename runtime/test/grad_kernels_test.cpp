//===- grad_kernels_test.cpp - Backward kernels by finite differences -----===//
//
// A backward kernel is the vector-Jacobian product of its forward kernel:
// for a random cotangent r, it returns the gradient of J(θ) = Σ r·forward(θ)
// with respect to each differentiated input. Each is checked at every input
// element against the central difference (J(θ + h) - J(θ - h)) / 2h of the
// forward cpu:: kernel, J summed in double. The inputs are O(1) and
// h = 1e-2 (kStep): the truncation error h² J''' / 6 stays near 1e-5, and
// J's f32 rounding (about 1e-7 |J|) grows to about 1e-5 when divided by 2h,
// so a difference must agree within 5e-4 (kTol) of the input's largest
// gradient magnitude plus 5e-4 of its own (the worst seen is 7e-5). The sharded uses (split tokens,
// split queries, vocabulary shards) are checked against the unsharded call,
// AdamW against a double-precision reference, and the kernel table's
// entries against the op contract.
//
//===----------------------------------------------------------------------===//

#include "comm/comm.h"
#include "core/buffer.h"
#include "exec/collectives.h"
#include "exec/verify.h"
#include "kernel_test_util.h"
#include "kernels/cpu/kernels.h"
#include "step_rig.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <thread>
#include <vector>

namespace cpu = shardline::rt::cpu;
using namespace shardline::rt;
using shardline::Layout;
using shardline::Mesh;
using test::axesAttr;
using test::dot;
using test::expectClose;
using test::expectGradient;
using test::intAttr;
using test::Rng;
using test::sliceCols;
using test::StepRig;
using test::Vec;

namespace {

Vec add(const Vec &a, const Vec &b) {
  Vec out(a.size());
  cpu::add(a.data(), b.data(), (int64_t)a.size(), out.data());
  return out;
}

// -- dense ------------------------------------------------------------------

TEST(DenseGrad, RmsNormInputAndWeight) {
  Rng rng(1);
  const int64_t T = 5, H = 8;
  const float eps = 1e-5f;
  Vec x = rng.vec(T * H), w = rng.vec(H, 0.5f, 1.5f), r = rng.vec(T * H), dx(T * H), dw(H);
  auto J = [&] {
    Vec y(T * H);
    cpu::rms_norm(x.data(), w.data(), T, H, eps, y.data());
    return dot(r, y);
  };
  cpu::rms_norm_grad(x.data(), w.data(), r.data(), T, H, eps, dx.data());
  cpu::rms_norm_grad_weight(x.data(), r.data(), T, H, eps, dw.data());
  expectGradient(x, dx, J, "rms_norm dx");
  expectGradient(w, dw, J, "rms_norm dweight");
  // The weight's gradient sums over tokens: two token shards' partial sums
  // add up to it.
  Vec first(H), second(H);
  cpu::rms_norm_grad_weight(x.data(), r.data(), 2, H, eps, first.data());
  cpu::rms_norm_grad_weight(x.data() + 2 * H, r.data() + 2 * H, T - 2, H, eps, second.data());
  expectClose(add(first, second), dw, 1e-6, 1e-6, "dweight over token shards");
}

TEST(DenseGrad, LinearInputAndWeight) {
  Rng rng(2);
  const int64_t T = 6, K = 5, N = 7;
  Vec x = rng.vec(T * K), w = rng.vec(K * N), r = rng.vec(T * N), dx(T * K), dw(K * N);
  auto J = [&] {
    Vec y(T * N);
    cpu::linear(x.data(), w.data(), T, K, N, y.data());
    return dot(r, y);
  };
  cpu::linear_grad(r.data(), w.data(), T, K, N, dx.data());
  cpu::linear_grad_weight(x.data(), r.data(), T, K, N, dw.data());
  expectGradient(x, dx, J, "linear dx");
  expectGradient(w, dw, J, "linear dweight");
  // n contracted: the shards of N give partial sums of dx; the tokens are
  // contracted in dweight.
  Vec a(T * K), b(T * K);
  Vec ra = sliceCols(r, T, N, 0, 3), rb = sliceCols(r, T, N, 3, N - 3);
  Vec wa = sliceCols(w, K, N, 0, 3), wb = sliceCols(w, K, N, 3, N - 3);
  cpu::linear_grad(ra.data(), wa.data(), T, K, 3, a.data());
  cpu::linear_grad(rb.data(), wb.data(), T, K, N - 3, b.data());
  expectClose(add(a, b), dx, 1e-5, 1e-6, "dx over shards of n");
  Vec first(K * N), second(K * N);
  cpu::linear_grad_weight(x.data(), r.data(), 4, K, N, first.data());
  cpu::linear_grad_weight(x.data() + 4 * K, r.data() + 4 * N, T - 4, K, N, second.data());
  expectClose(add(first, second), dw, 1e-5, 1e-6, "dweight over token shards");
}

TEST(DenseGrad, ElementwiseActivations) {
  Rng rng(3);
  const int64_t n = 24;
  using Forward = void (*)(const float *, int64_t, float *);
  using Backward = void (*)(const float *, const float *, int64_t, float *);
  struct Case {
    const char *name;
    Forward forward;
    Backward backward;
  };
  for (const Case &c :
       {Case{"silu", cpu::silu, cpu::silu_grad}, Case{"gelu", cpu::gelu, cpu::gelu_grad},
        Case{"sigmoid", cpu::sigmoid, cpu::sigmoid_grad},
        Case{"softplus", cpu::softplus, cpu::softplus_grad}}) {
    Vec x = rng.vec(n, -3.0f, 3.0f), r = rng.vec(n), dx(n);
    auto J = [&] {
      Vec y(n);
      c.forward(x.data(), n, y.data());
      return dot(r, y);
    };
    c.backward(x.data(), r.data(), n, dx.data());
    expectGradient(x, dx, J, c.name);
    // dx may be dy.
    Vec inPlace = r;
    c.backward(x.data(), inPlace.data(), n, inPlace.data());
    EXPECT_EQ(inPlace, dx) << c.name;
  }
}

TEST(DenseGrad, SwigluBothOperands) {
  Rng rng(4);
  const int64_t n = 24;
  Vec lhs = rng.vec(n, -3.0f, 3.0f), rhs = rng.vec(n, -2.0f, 2.0f), r = rng.vec(n), dl(n), dr(n);
  auto J = [&] {
    Vec y(n);
    cpu::swiglu(lhs.data(), rhs.data(), n, y.data());
    return dot(r, y);
  };
  cpu::swiglu_grad(lhs.data(), rhs.data(), r.data(), n, dl.data(), dr.data());
  expectGradient(lhs, dl, J, "swiglu dlhs");
  expectGradient(rhs, dr, J, "swiglu drhs");
}

TEST(DenseGrad, SumSquaresIsTheSquaredNormAndSplits) {
  Rng rng(5);
  Vec x = rng.vec(37);
  double want = 0.0;
  for (float v : x)
    want += (double)v * v;
  EXPECT_DOUBLE_EQ(cpu::sum_squares(x.data(), 37), want);
  EXPECT_NEAR(cpu::sum_squares(x.data(), 20) + cpu::sum_squares(x.data() + 20, 17), want, 1e-12);
  EXPECT_EQ(cpu::sum_squares(x.data(), 0), 0.0);
}

TEST(DenseGrad, EmbeddingOwnedRowsWithRepeatedIds) {
  Rng rng(6);
  const int64_t T = 8, H = 3, V = 10, offset = 4, Vl = 4;
  const std::vector<int32_t> ids = {1, 5, 5, 9, 4, 5, 0, 7};
  Vec table = rng.vec(Vl * H), r = rng.vec(T * H), dtable(Vl * H);
  auto J = [&] {
    Vec y(T * H);
    cpu::embedding(ids.data(), T, table.data(), Vl, H, offset, y.data());
    return dot(r, y);
  };
  cpu::embedding_grad(ids.data(), r.data(), T, Vl, H, offset, dtable.data());
  expectGradient(table, dtable, J, "embedding dtable");
  // Row 5 - 4 = 1 gathers tokens 1, 2 and 5; row 2 (id 6) no token; ids 0,
  // 1 and 9 belong to other shards.
  for (int64_t h = 0; h < H; ++h) {
    EXPECT_FLOAT_EQ(dtable[1 * H + h], (float)((double)r[1 * H + h] + r[2 * H + h] + r[5 * H + h]));
    EXPECT_EQ(dtable[0 * H + h], r[4 * H + h]);
    EXPECT_EQ(dtable[2 * H + h], 0.0f);
    EXPECT_EQ(dtable[3 * H + h], r[7 * H + h]);
  }
  // The shards' rows, stacked, are the unsharded gradient.
  Vec full(V * H), low(offset * H), high((V - offset - Vl) * H);
  cpu::embedding_grad(ids.data(), r.data(), T, V, H, 0, full.data());
  cpu::embedding_grad(ids.data(), r.data(), T, offset, H, 0, low.data());
  cpu::embedding_grad(ids.data(), r.data(), T, V - offset - Vl, H, offset + Vl, high.data());
  Vec stacked = low;
  stacked.insert(stacked.end(), dtable.begin(), dtable.end());
  stacked.insert(stacked.end(), high.begin(), high.end());
  EXPECT_EQ(stacked, full);
}

// -- RoPE and attention -----------------------------------------------------

TEST(RopeGrad, TransposeOfTheRotationAtLargePositions) {
  Rng rng(7);
  const int64_t B = 2, S = 3, NH = 2, D = 8;
  const std::vector<int64_t> positions = {100000, 250003, (int64_t(1) << 20) + 5};
  const float theta = 10000.0f;
  Vec x = rng.vec(B * S * NH * D), r = rng.vec(x.size()), dx(x.size());
  auto J = [&] {
    Vec y(x.size());
    cpu::rope(x.data(), positions.data(), B, S, NH, D, theta, y.data());
    return dot(r, y);
  };
  cpu::rope_grad(r.data(), positions.data(), B, S, NH, D, theta, dx.data());
  expectGradient(x, dx, J, "rope dx");
  // The rotation is orthogonal: its transpose undoes it.
  Vec y(x.size()), back(x.size());
  cpu::rope(x.data(), positions.data(), B, S, NH, D, theta, y.data());
  cpu::rope_grad(y.data(), positions.data(), B, S, NH, D, theta, back.data());
  expectClose(back, x, 0.0, 1e-6, "rope_grad(rope(x))");
}

struct AttentionCase {
  cpu::AttentionDims dims;
  std::vector<int64_t> qPos, kPos;
  bool causal;
  float scale; ///< 0: 1/sqrt(D)
};

/// dq, dk and dv of attention() by finite differences.
void checkAttentionGrads(const AttentionCase &c, uint64_t seed) {
  const cpu::AttentionDims &d = c.dims;
  float scale = c.scale > 0 ? c.scale : (float)(1.0 / std::sqrt((double)d.D));
  Rng rng(seed);
  Vec q = rng.vec(d.B * d.Sq * d.HQ * d.D), k = rng.vec(d.B * d.Sk * d.HKV * d.D),
      v = rng.vec(k.size()), r = rng.vec(q.size());
  Vec dq(q.size()), dk(k.size()), dv(v.size());
  auto J = [&] {
    Vec out(q.size());
    cpu::attention(q.data(), k.data(), v.data(), c.qPos.data(), c.kPos.data(), d, c.causal, scale,
                   out.data(), nullptr);
    return dot(r, out);
  };
  cpu::attention_grad(q.data(), k.data(), v.data(), r.data(), c.qPos.data(), c.kPos.data(), d,
                      c.causal, scale, dq.data());
  cpu::attention_grad_kv(q.data(), k.data(), v.data(), r.data(), c.qPos.data(), c.kPos.data(), d,
                         c.causal, scale, dk.data(), dv.data());
  expectGradient(q, dq, J, "attention dq");
  expectGradient(k, dk, J, "attention dk");
  expectGradient(v, dv, J, "attention dv");
}

TEST(AttentionGrad, GroupedQueriesCausalOverZigzagChunks) {
  // A context-parallel rank's zigzag share of 12 tokens: chunks 0 and 3.
  std::vector<int64_t> pos = {0, 1, 2, 9, 10, 11};
  checkAttentionGrads({{2, 6, 6, 4, 2, 4}, pos, pos, true, 0.0f}, 11);
}

TEST(AttentionGrad, NotCausalWithAScale) {
  checkAttentionGrads({{1, 3, 5, 2, 2, 4}, {0, 1, 2}, {0, 1, 2, 3, 4}, false, 0.3f}, 12);
}

TEST(AttentionGrad, QueriesASubsetOfTheGatheredKeys) {
  // The rank's zigzag queries against all 12 keys, in the order a gather
  // over two ranks leaves them.
  checkAttentionGrads({{1, 6, 12, 2, 1, 4},
                       {0, 1, 2, 9, 10, 11},
                       {0, 1, 2, 9, 10, 11, 3, 4, 5, 6, 7, 8},
                       true,
                       0.0f},
                      13);
}

TEST(AttentionGrad, QueryWithoutVisibleKeysHasNoGradient) {
  checkAttentionGrads({{1, 3, 4, 2, 1, 4}, {2, 5, 7}, {4, 5, 6, 7}, true, 0.0f}, 14);
  Rng rng(15);
  cpu::AttentionDims d{1, 1, 2, 1, 1, 4};
  std::vector<int64_t> qPos = {0}, kPos = {3, 4};
  Vec q = rng.vec(4), k = rng.vec(8), v = rng.vec(8), dy = rng.vec(4), dq(4), dk(8), dv(8);
  cpu::attention_grad(q.data(), k.data(), v.data(), dy.data(), qPos.data(), kPos.data(), d, true,
                      0.5f, dq.data());
  cpu::attention_grad_kv(q.data(), k.data(), v.data(), dy.data(), qPos.data(), kPos.data(), d, true,
                         0.5f, dk.data(), dv.data());
  EXPECT_EQ(dq, Vec(4, 0.0f));
  EXPECT_EQ(dk, Vec(8, 0.0f));
  EXPECT_EQ(dv, Vec(8, 0.0f));
}

TEST(AttentionGrad, KeyGradientsSumOverQueryShards) {
  // The query positions are contracted in dk and dv: two ranks' zigzag
  // query shares give partial sums that add up to the whole sequence's.
  Rng rng(16);
  const int64_t S = 12, HQ = 4, HKV = 2, D = 4;
  std::vector<int64_t> all(S), shareA = {0, 1, 2, 9, 10, 11}, shareB = {3, 4, 5, 6, 7, 8};
  for (int64_t i = 0; i < S; ++i)
    all[i] = i;
  Vec q = rng.vec(S * HQ * D), k = rng.vec(S * HKV * D), v = rng.vec(k.size()),
      dy = rng.vec(q.size());
  auto rows = [&](const Vec &t, const std::vector<int64_t> &which) {
    Vec out;
    for (int64_t i : which)
      out.insert(out.end(), t.begin() + i * HQ * D, t.begin() + (i + 1) * HQ * D);
    return out;
  };
  auto kv = [&](const Vec &qs, const Vec &dys, const std::vector<int64_t> &qPos) {
    Vec dk(k.size()), dv(v.size());
    cpu::attention_grad_kv(qs.data(), k.data(), v.data(), dys.data(), qPos.data(), all.data(),
                           {1, (int64_t)qPos.size(), S, HQ, HKV, D}, true, 0.5f, dk.data(),
                           dv.data());
    dk.insert(dk.end(), dv.begin(), dv.end());
    return dk;
  };
  Vec whole = kv(q, dy, all);
  Vec parts = add(kv(rows(q, shareA), rows(dy, shareA), shareA),
                  kv(rows(q, shareB), rows(dy, shareB), shareB));
  expectClose(parts, whole, 1e-5, 1e-6, "dk, dv over query shards");
}

// -- cross-entropy ----------------------------------------------------------

TEST(LossGrad, CrossEntropyMatchesFiniteDifferences) {
  Rng rng(21);
  const int64_t T = 6, V = 10;
  Vec logits = rng.vec(T * V, -2.0f, 2.0f), dlogits(T * V);
  std::vector<int32_t> labels(T);
  for (int32_t &l : labels)
    l = (int32_t)(rng.next() % V);
  auto J = [&] { return (double)cpu::cross_entropy(logits.data(), labels.data(), T, V); };
  cpu::cross_entropy_grad(logits.data(), labels.data(), T, V, dlogits.data());
  expectGradient(logits, dlogits, J, "cross_entropy dlogits");
}

TEST(LossGrad, VocabShardsCombineToTheFullGradient) {
  Rng rng(22);
  const int64_t T = 6, V = 10, split = 4;
  Vec logits = rng.vec(T * V, -3.0f, 3.0f), full(T * V);
  const std::vector<int32_t> labels = {0, 3, 4, 9, 7, 3};
  cpu::cross_entropy_grad(logits.data(), labels.data(), T, V, full.data());
  const int64_t offsets[2] = {0, split}, widths[2] = {split, V - split};
  Vec shard[2] = {sliceCols(logits, T, V, 0, split), sliceCols(logits, T, V, split, V - split)};
  Vec maxes[2] = {Vec(T), Vec(T)}, sums[2] = {Vec(T), Vec(T)}, gmax(T), sum(T);
  for (int m = 0; m < 2; ++m)
    cpu::xent_local_max(shard[m].data(), T, widths[m], maxes[m].data());
  const float *maxPtrs[2] = {maxes[0].data(), maxes[1].data()};
  cpu::xent_combine_max(maxPtrs, 2, T, gmax.data());
  for (int m = 0; m < 2; ++m)
    cpu::xent_local_sumexp(shard[m].data(), gmax.data(), T, widths[m], sums[m].data());
  const float *sumPtrs[2] = {sums[0].data(), sums[1].data()};
  cpu::xent_combine_sum(sumPtrs, 2, T, sum.data());
  for (int m = 0; m < 2; ++m) {
    Vec got(T * widths[m]);
    cpu::xent_grad(shard[m].data(), labels.data(), gmax.data(), sum.data(), T, widths[m],
                   offsets[m], T, got.data());
    expectClose(got, sliceCols(full, T, V, offsets[m], widths[m]), 1e-6, 1e-8,
                m ? "upper vocabulary shard" : "lower vocabulary shard");
  }
  // Split tokens divide by the whole batch's count, not their own.
  Vec lm(2), ls(2), rows(2 * V);
  cpu::xent_local_max(logits.data(), 2, V, lm.data());
  cpu::xent_local_sumexp(logits.data(), lm.data(), 2, V, ls.data());
  cpu::xent_grad(logits.data(), labels.data(), lm.data(), ls.data(), 2, V, 0, T, rows.data());
  expectClose(rows, Vec(full.begin(), full.begin() + 2 * V), 1e-6, 1e-8, "a token shard");
}

// -- AdamW ------------------------------------------------------------------

/// One AdamW step in double on double state, written from the update's
/// definition (torch.optim.AdamW with global-norm clipping).
struct ReferenceAdamW {
  std::vector<double> w, m, v;
  void step(const Vec &grad, double sumsq, int64_t t, const TrainOptions &o, bool decay) {
    double scale = 1.0;
    if (o.clipGrad > 0 && std::sqrt(sumsq) + 1e-6 > o.clipGrad)
      scale = o.clipGrad / (std::sqrt(sumsq) + 1e-6);
    for (size_t i = 0; i < w.size(); ++i) {
      double g = grad[i] * scale;
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * g;
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * g * g;
      double mhat = m[i] / (1 - std::pow(o.beta1, (double)t));
      double vhat = v[i] / (1 - std::pow(o.beta2, (double)t));
      double update = mhat / (std::sqrt(vhat) + o.eps) + (decay ? o.weightDecay * w[i] : 0.0);
      w[i] -= o.lr * update;
    }
  }
};

struct AdamCase {
  TrainOptions options;
  bool decay;
  float gradScale;   ///< the gradients' magnitude
  double extraSumsq; ///< the rest of the model's squared gradient norm
};

void checkAdamW(const AdamCase &c, uint64_t seed) {
  Rng rng(seed);
  const int64_t n = 11;
  Vec w = rng.vec(n), m(n, 0.0f), v(n, 0.0f), grad(n), sumsq(1);
  ReferenceAdamW ref{std::vector<double>(w.begin(), w.end()), std::vector<double>(n, 0.0),
                     std::vector<double>(n, 0.0)};
  StepRig rig("adamw", {{n}, {n}, {n}, {n}, {}}, {}, {intAttr(c.decay)});
  rig.bind({&w, &grad, &m, &v, &sumsq});
  ASSERT_EQ(rig.verify(), "");
  rig.frame.train = &c.options;
  for (int64_t t = 1; t <= 3; ++t) {
    // In place: the step's view points at grad's buffer.
    Vec fresh = rng.vec(n, -c.gradScale, c.gradScale);
    std::copy(fresh.begin(), fresh.end(), grad.begin());
    double total = cpu::sum_squares(grad.data(), n) + c.extraSumsq;
    sumsq[0] = (float)total;
    rig.frame.trainStep = t;
    rig.step.kernel->run(rig.step, rig.frame);
    ref.step(grad, sumsq[0], t, c.options, c.decay);
    // The kernel keeps m and v in f32 between steps: their rounding,
    // relative to the gradients' scale, is what separates the two.
    expectClose(w, ref.w, 1e-6, 1e-7, "weight");
    expectClose(m, ref.m, 1e-6, 1e-7 * c.gradScale, "m");
    expectClose(v, ref.v, 1e-6, 1e-7 * c.gradScale * c.gradScale, "v");
  }
}

TEST(AdamW, MatchesTheReferenceOverThreeSteps) {
  // A large rate and decay, so that a decay of the updated weight instead
  // of the old one, or a missing bias correction, shows.
  TrainOptions o;
  o.lr = 5e-2;
  o.weightDecay = 0.1;
  // Clipping active: a global norm of about 7 against 1.
  checkAdamW({o, true, 1.0f, 50.0}, 31);
  checkAdamW({o, false, 1.0f, 50.0}, 32);
  // Clipping inactive: the norm is below the threshold, or there is none.
  checkAdamW({o, true, 0.1f, 0.0}, 33);
  TrainOptions noClip = o;
  noClip.clipGrad = 0.0;
  checkAdamW({noClip, true, 1.0f, 50.0}, 34);
  checkAdamW({noClip, false, 1.0f, 50.0}, 35);
}

// A bf16 weight through its f32 main copy: the main copy takes the f32
// update (the reference's, from the bf16 weight's values), and the weight
// becomes the main copy rounded to nearest even, whose bits the step writes
// in place (the entry keeps the step's 16-bit tensors as stored). The
// gradient may be bf16 or f32.
TEST(AdamW, MainCopyTakesTheUpdateAndRoundsTheWeight) {
  TrainOptions o;
  o.lr = 5e-2;
  o.weightDecay = 0.1;
  for (DType gradType : {DType::BF16, DType::F32}) {
    SCOPED_TRACE(dtypeName(gradType));
    Rng rng(36);
    const int64_t n = 11;
    std::vector<uint16_t> weight(n), grad16(n);
    Vec main = rng.vec(n), m(n, 0.0f), v(n, 0.0f), grad(n), sumsq(1);
    for (int64_t i = 0; i < n; ++i) {
      weight[i] = floatToBf16(main[i]);
      main[i] = bf16ToFloat(weight[i]); // the copy of the weight
    }
    ReferenceAdamW ref{std::vector<double>(main.begin(), main.end()),
                       std::vector<double>(n, 0.0), std::vector<double>(n, 0.0)};
    StepRig rig("adamw", {{n}, {n}, {n}, {n}, {}, {n}}, {}, {intAttr(1)});
    rig.tensors[0].dtype = DType::BF16;
    rig.tensors[1].dtype = gradType;
    rig.bind({&main, &grad, &m, &v, &sumsq, &main});
    rig.views[0] = BufferView(weight.data(), n, DType::BF16);
    if (gradType == DType::BF16)
      rig.views[1] = BufferView(grad16.data(), n, DType::BF16);
    ASSERT_EQ(rig.verify(), "");
    ASSERT_TRUE(rig.step.kernel->keeps16 && rig.step.kernel->keeps16(rig.step, rig.frame));
    rig.frame.train = &o;
    for (int64_t t = 1; t <= 3; ++t) {
      Vec fresh = rng.vec(n, -1.0f, 1.0f);
      for (int64_t i = 0; i < n; ++i) {
        grad16[i] = floatToBf16(fresh[i]);
        grad[i] = gradType == DType::BF16 ? bf16ToFloat(grad16[i]) : fresh[i];
      }
      sumsq[0] = (float)(cpu::sum_squares(grad.data(), n) + 50.0);
      rig.frame.trainStep = t;
      rig.step.kernel->run(rig.step, rig.frame);
      ref.step(grad, sumsq[0], t, o, true);
      expectClose(main, ref.w, 1e-6, 1e-7, "main copy");
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(weight[i], floatToBf16(main[i])) << "element " << i << " at step " << t;
    }
  }
}

// The contract of a step with a main copy, and of one without: which types
// each operand may have.
TEST(AdamW, MainCopyContract) {
  auto rig = [](DType weight, DType grad, DType main, bool withMain) {
    std::vector<std::vector<int64_t>> in{{4}, {4}, {4}, {4}, {}};
    if (withMain)
      in.push_back({4});
    auto r = std::make_unique<StepRig>("adamw", in, std::vector<std::vector<int64_t>>{},
                                       std::vector<AttrValue>{intAttr(1)});
    r->tensors[0].dtype = weight;
    r->tensors[1].dtype = grad;
    if (withMain)
      r->tensors[5].dtype = main;
    return r;
  };
  EXPECT_EQ(rig(DType::F32, DType::F32, DType::F32, false)->verify(), "");
  EXPECT_EQ(rig(DType::BF16, DType::BF16, DType::F32, true)->verify(), "");
  EXPECT_EQ(rig(DType::BF16, DType::F32, DType::F32, true)->verify(), "");
  EXPECT_NE(rig(DType::BF16, DType::BF16, DType::F32, false)->verify().find(
                "a 16-bit weight needs its f32 main copy, operand main"),
            std::string::npos);
  EXPECT_NE(rig(DType::F32, DType::F32, DType::F32, true)->verify().find(
                "a main copy is for a 16-bit weight"),
            std::string::npos);
  EXPECT_NE(rig(DType::BF16, DType::BF16, DType::BF16, true)->verify().find(
                "the main copy is f32"),
            std::string::npos);
  EXPECT_NE(rig(DType::BF16, DType::F16, DType::F32, true)->verify().find(
                "the gradient is of the weight's type or f32"),
            std::string::npos);
}

// Megatron's OptimizerParamScheduler.get_lr, worked by hand: warmup 10
// steps from 1e-4 to 1e-3, then a decay to 1e-5 by step 100.
TEST(AdamW, LearningRateScheduleIsMegatrons) {
  TrainOptions o;
  o.lr = 1e-3;
  o.minLr = 1e-5;
  o.warmupInit = 1e-4;
  o.warmupSteps = 10;
  o.decaySteps = 100;
  EXPECT_DOUBLE_EQ(o.lrAt(0), 1e-4); // the first step runs at the warmup's start
  EXPECT_DOUBLE_EQ(o.lrAt(5), 5.5e-4);
  EXPECT_DOUBLE_EQ(o.lrAt(10), 1e-3);
  o.decay = TrainOptions::Decay::Linear;
  EXPECT_DOUBLE_EQ(o.lrAt(55), 1e-5 + 0.5 * (1e-3 - 1e-5));
  EXPECT_DOUBLE_EQ(o.lrAt(91), 1e-5 + 0.1 * (1e-3 - 1e-5));
  EXPECT_DOUBLE_EQ(o.lrAt(100), 1e-5);
  EXPECT_DOUBLE_EQ(o.lrAt(250), 1e-5);
  o.decay = TrainOptions::Decay::Cosine;
  EXPECT_DOUBLE_EQ(o.lrAt(55), 1e-5 + 0.5 * (1e-3 - 1e-5));
  EXPECT_NEAR(o.lrAt(25), 1e-5 + 0.5 * (std::cos(M_PI / 6) + 1) * (1e-3 - 1e-5), 1e-15);
  EXPECT_NEAR(o.lrAt(100), 1e-5, 1e-15);
  o.decay = TrainOptions::Decay::Constant;
  EXPECT_DOUBLE_EQ(o.lrAt(55), 1e-3);
  EXPECT_DOUBLE_EQ(o.lrAt(250), 1e-3);
  // A length the executor has not resolved decays nothing.
  TrainOptions unresolved;
  EXPECT_DOUBLE_EQ(unresolved.lrAt(3), unresolved.lr);
}

TEST(AdamW, ClipScale) {
  EXPECT_EQ(cpu::clip_scale(0.25, 1.0), 1.0);
  EXPECT_DOUBLE_EQ(cpu::clip_scale(16.0, 1.0), 1.0 / (4.0 + 1e-6));
  EXPECT_EQ(cpu::clip_scale(16.0, 0.0), 1.0);
}

TEST(AdamW, ChangesNothingWhenNotTraining) {
  Vec w = {1.0f, -2.0f}, grad = {0.5f, 0.25f}, m = {0.1f, 0.2f}, v = {0.3f, 0.4f}, sumsq = {1.0f};
  const Vec w0 = w, m0 = m, v0 = v;
  StepRig rig("adamw", {{2}, {2}, {2}, {2}, {}}, {}, {intAttr(1)});
  rig.bind({&w, &grad, &m, &v, &sumsq});
  EXPECT_EQ(rig.frame.train, nullptr);
  EXPECT_EQ(rig.frame.trainStep, 0);
  rig.step.kernel->run(rig.step, rig.frame);
  EXPECT_EQ(w, w0);
  EXPECT_EQ(m, m0);
  EXPECT_EQ(v, v0);
}

TEST(AdamW, RefusesBadStepsNormsAndTypes) {
  Vec w = {1.0f, -2.0f}, grad = {0.5f, 0.25f}, m = {0.0f, 0.0f}, v = {0.0f, 0.0f}, sumsq = {1.0f};
  StepRig rig("adamw", {{2}, {2}, {2}, {2}, {}}, {}, {intAttr(1)});
  rig.bind({&w, &grad, &m, &v, &sumsq});
  rig.tensors[0].name = "wq";
  rig.tensors[4].name = "grad_norm_sq";
  TrainOptions o;
  rig.frame.train = &o;
  try {
    rig.step.kernel->run(rig.step, rig.frame);
    ADD_FAILURE() << "step 0 accepted";
  } catch (Stop &stop) {
    EXPECT_EQ(stop.error, "sl.adamw at training step 0: the steps count from 1");
  }
  rig.frame.trainStep = 2;
  sumsq[0] = std::numeric_limits<float>::infinity();
  try {
    rig.step.kernel->run(rig.step, rig.frame);
    ADD_FAILURE() << "an infinite norm accepted";
  } catch (Stop &stop) {
    EXPECT_EQ(stop.error,
              "the gradients' sum of squares 'grad_norm_sq' is inf at training step 2: no update");
  }
  EXPECT_EQ(w, (Vec{1.0f, -2.0f}));
  rig.tensors[2].dtype = DType::BF16;
  EXPECT_EQ(rig.verify(), "op #0 (sl.adamw 'wq') at test.mlir:1:1: m is bf16: AdamW's moments are f32");
  rig.tensors[2].dtype = DType::F32;
  rig.tensors[4].shape = rig.tensors[4].local = {2};
  rig.tensors[4].count = 2;
  EXPECT_NE(rig.verify().find("sumsq"), std::string::npos) << rig.verify();
}

// -- the kernel table -------------------------------------------------------

TEST(GradKernelTable, EveryOpOfTheContractWithItsNames) {
  struct Entry {
    std::vector<std::string> operands, results;
    std::set<std::string> attrs;
  };
  const std::vector<std::string> xdy = {"x", "dy"}, dx = {"dx"}, qkv = {"q", "k", "v", "dy"};
  const std::set<std::string> attention = {"heads", "kv_heads", "causal", "scale"};
  const std::map<std::string, Entry> want = {
      {"rms_norm_grad", {{"x", "weight", "dy"}, dx, {"eps"}}},
      {"rms_norm_grad_weight", {xdy, {"dweight"}, {"eps"}}},
      {"linear_grad", {{"dy", "weight"}, dx, {}}},
      {"linear_grad_weight", {xdy, {"dweight"}, {}}},
      {"swiglu_grad", {{"lhs", "rhs", "dy"}, {"dlhs", "drhs"}, {}}},
      {"silu_grad", {xdy, dx, {}}},
      {"gelu_grad", {xdy, dx, {}}},
      {"sigmoid_grad", {xdy, dx, {}}},
      {"softplus_grad", {xdy, dx, {}}},
      {"rope_grad", {{"dy"}, dx, {"head_dim", "theta"}}},
      {"attention_grad", {qkv, {"dq"}, attention}},
      {"attention_grad_kv", {qkv, {"dk", "dv"}, attention}},
      {"embedding_grad", {{"ids", "dy", "table"}, {"dtable"}, {}}},
      {"cross_entropy_grad", {{"logits", "labels"}, {"dlogits"}, {"vocab_axes"}}},
      {"sum_squares", {{"x"}, {"result"}, {}}},
      {"adamw", {{"weight", "grad", "m", "v", "sumsq", "main?"}, {}, {"decay"}}},
  };
  const KernelTable &table = cpuBackend().kernels;
  for (const auto &[kind, entry] : want) {
    auto it = table.find(kind);
    ASSERT_NE(it, table.end()) << kind;
    const KernelSpec &spec = it->second;
    EXPECT_EQ(spec.operands, entry.operands) << kind;
    EXPECT_EQ(spec.results, entry.results) << kind;
    std::set<std::string> attrs;
    for (const AttrSpec &a : spec.attrs) {
      attrs.insert(a.name);
      // Only attention's scale may be absent from a plan.
      EXPECT_EQ(a.optional, std::string(a.name) == "scale") << kind << " " << a.name;
    }
    EXPECT_EQ(attrs, entry.attrs) << kind;
    EXPECT_NE(spec.check, nullptr) << kind;
  }
}

/// The rank facts of a backward op are its forward op's, on the same
/// tensors.
TEST(GradKernelTable, RankFactsAsTheForwardOps) {
  Mesh mesh{{{"cp", 2}, {"tp", 2}}};
  Layout zigzag{{{}, {"cp"}, {}}, {}, 1, shardline::ChunkOrder::Zigzag};
  Layout vocab{{{}, {}, {"tp"}}, {}, -1, shardline::ChunkOrder::Contiguous};
  Layout rows{{{"tp"}, {}}, {}, -1, shardline::ChunkOrder::Contiguous};
  Layout rep2 = Layout::replicated(2), rep3 = Layout::replicated(3);
  AttrValue heads = intAttr(2), causal = intAttr(1), none, axes = axesAttr({"tp"});
  const int64_t self = 3; // cp 1, tp 1
  auto facts = [&](StepRig &rig) {
    rig.frame.self = self;
    rig.step.kernel->resolve(rig.step, rig.frame);
    return rig.step.facts;
  };
  auto same = [](const RankFacts &a, const RankFacts &b, const char *what) {
    EXPECT_EQ(a.positions, b.positions) << what;
    EXPECT_EQ(a.keyPositions, b.keyPositions) << what;
    EXPECT_EQ(a.members, b.members) << what;
    EXPECT_EQ(a.vocabOffset, b.vocabOffset) << what;
  };
  std::vector<int64_t> act = {2, 8, 8};
  StepRig rope("rope", {act}, {act}, {intAttr(4), {}}, mesh, {zigzag, zigzag});
  StepRig ropeGrad("rope_grad", {act}, {act}, {intAttr(4), {}}, mesh, {zigzag, zigzag});
  RankFacts forward = facts(rope);
  EXPECT_EQ(forward.positions, (std::vector<int64_t>{2, 3, 4, 5}));
  same(facts(ropeGrad), forward, "rope_grad");
  // Zigzag queries over gathered keys.
  StepRig att("attention", {act, act, act}, {act}, {heads, causal, none}, mesh,
              {zigzag, rep3, rep3, zigzag});
  StepRig attGrad("attention_grad", {act, act, act, act}, {act}, {heads, causal, none, intAttr(2)},
                  mesh, {zigzag, rep3, rep3, zigzag, zigzag});
  StepRig attGradKv("attention_grad_kv", {act, act, act, act}, {act, act},
                    {heads, causal, none, intAttr(2)}, mesh, {zigzag, rep3, rep3, zigzag});
  forward = facts(att);
  same(facts(attGrad), forward, "attention_grad");
  same(facts(attGradKv), forward, "attention_grad_kv");
  StepRig xent("cross_entropy", {{2, 8, 16}, {2, 8}}, {{}}, {axes}, mesh, {vocab, rep2});
  StepRig xentGrad("cross_entropy_grad", {{2, 8, 16}, {2, 8}}, {{2, 8, 16}}, {axes}, mesh,
                   {vocab, rep2, vocab});
  forward = facts(xent);
  EXPECT_EQ(forward.vocabOffset, 8);
  EXPECT_EQ(forward.members, (std::vector<int64_t>{2, 3}));
  same(facts(xentGrad), forward, "cross_entropy_grad");
  StepRig emb("embedding", {{2, 8}, {16, 4}}, {{2, 8, 4}}, {}, mesh, {rep2, rows});
  StepRig embGrad("embedding_grad", {{2, 8}, {2, 8, 4}, {16, 4}}, {{16, 4}}, {}, mesh,
                  {rep2, rep3, rows, rows});
  forward = facts(emb);
  EXPECT_EQ(forward.vocabOffset, 8);
  same(facts(embGrad), forward, "embedding_grad");
}

// -- the table's entries on ranks ------------------------------------------

/// The entries pass the ranks' facts and the global extents to the kernels:
/// vocabulary-parallel cross_entropy_grad on two thread ranks gives each its
/// columns of the unsharded gradient (divided by the whole batch's tokens).
TEST(GradKernelEntries, CrossEntropyGradOverTwoVocabularyRanks) {
  Rng rng(41);
  const int64_t B = 2, S = 3, T = B * S, V = 10, half = V / 2;
  Vec logits = rng.vec(T * V, -3.0f, 3.0f), full(T * V);
  std::vector<int32_t> labels = {0, 4, 5, 9, 2, 7};
  cpu::cross_entropy_grad(logits.data(), labels.data(), T, V, full.data());
  Mesh mesh{{{"tp", 2}}};
  Layout vocab{{{}, {}, {"tp"}}, {}, -1, shardline::ChunkOrder::Contiguous};
  ThreadHub hub(2);
  std::vector<Vec> got(2);
  std::vector<std::string> errors(2);
  std::vector<std::thread> ranks;
  for (int64_t r = 0; r < 2; ++r)
    ranks.emplace_back([&, r] {
      StepRig rig("cross_entropy_grad", {{B, S, V}, {B, S}}, {{B, S, V}}, {axesAttr({"tp"})}, mesh,
                  {vocab, Layout::replicated(2), vocab});
      ThreadComm comm(hub, r);
      Collectives collectives(comm, mesh);
      Vec mine = sliceCols(logits, T, V, r * half, half), out(T * half);
      std::vector<int32_t> ownLabels = labels;
      rig.views = {BufferView(mine.data(), T * half), BufferView(ownLabels.data(), T),
                   BufferView(out.data(), T * half)};
      rig.frame.self = r;
      rig.frame.collectives = &collectives;
      errors[r] = rig.verify();
      rig.step.kernel->resolve(rig.step, rig.frame);
      rig.step.kernel->run(rig.step, rig.frame);
      got[r] = out;
    });
  for (std::thread &t : ranks)
    t.join();
  for (int64_t r = 0; r < 2; ++r) {
    EXPECT_EQ(errors[r], "") << r;
    expectClose(got[r], sliceCols(full, T, V, r * half, half), 1e-6, 1e-8, "a rank's columns");
  }
}

/// embedding_grad on the second of two ranks that split the table's rows:
/// the rows it owns, from its own offset; an id outside the table stops it.
TEST(GradKernelEntries, EmbeddingGradOnARankOfASplitTable) {
  Rng rng(42);
  const int64_t B = 2, S = 4, T = B * S, V = 16, H = 3;
  std::vector<int32_t> ids = {1, 9, 9, 15, 8, 3, 12, 9};
  Vec dy = rng.vec(T * H), out(V / 2 * H), table(V / 2 * H), want(V / 2 * H);
  Layout rows{{{"tp"}, {}}, {}, -1, shardline::ChunkOrder::Contiguous};
  StepRig rig("embedding_grad", {{B, S}, {B, S, H}, {V, H}}, {{V, H}}, {}, Mesh{{{"tp", 2}}},
              {Layout::replicated(2), Layout::replicated(3), rows, rows});
  rig.views = {BufferView(ids.data(), T), BufferView(dy.data(), T * H),
               BufferView(table.data(), V / 2 * H), BufferView(out.data(), V / 2 * H)};
  rig.frame.self = 1;
  ASSERT_EQ(rig.verify(), "");
  rig.step.kernel->resolve(rig.step, rig.frame);
  rig.step.kernel->run(rig.step, rig.frame);
  cpu::embedding_grad(ids.data(), dy.data(), T, V / 2, H, V / 2, want.data());
  EXPECT_EQ(out, want);
  EXPECT_NE(out, Vec(out.size(), 0.0f));
  ids[3] = 16;
  try {
    rig.step.kernel->run(rig.step, rig.frame);
    ADD_FAILURE() << "an id outside the table accepted";
  } catch (Stop &stop) {
    EXPECT_EQ(stop.error, "'ids' holds a value outside [0, 16), the embedding table's rows");
  }
}

/// attention_grad_kv reads its dims from the heads and its scale, when the
/// op has none, as 1/sqrt(head_dim), as the forward entry does.
TEST(GradKernelEntries, AttentionGradKvWithoutAScale) {
  Rng rng(43);
  const int64_t B = 1, S = 4, HQ = 4, HKV = 2, D = 2;
  std::vector<int64_t> q = {B, S, HQ * D}, kv = {B, S, HKV * D};
  Vec qv = rng.vec(B * S * HQ * D), k = rng.vec(B * S * HKV * D), v = rng.vec(k.size()),
      dy = rng.vec(qv.size()), dk(k.size()), dv(k.size()), wantK(k.size()), wantV(k.size());
  StepRig rig("attention_grad_kv", {q, kv, kv, q}, {kv, kv},
              {intAttr(HQ), intAttr(1), AttrValue{}, intAttr(HKV)});
  rig.bind({&qv, &k, &v, &dy, &dk, &dv});
  ASSERT_EQ(rig.verify(), "");
  rig.step.kernel->resolve(rig.step, rig.frame);
  rig.step.kernel->run(rig.step, rig.frame);
  std::vector<int64_t> pos = {0, 1, 2, 3};
  cpu::attention_grad_kv(qv.data(), k.data(), v.data(), dy.data(), pos.data(), pos.data(),
                         {B, S, S, HQ, HKV, D}, true, (float)(1.0 / std::sqrt(2.0)), wantK.data(),
                         wantV.data());
  EXPECT_EQ(dk, wantK);
  EXPECT_EQ(dv, wantV);
}

// -- contracts --------------------------------------------------------------

TEST(GradKernelContracts, NameTheMismatch) {
  std::vector<int64_t> act = {1, 4, 8};
  AttrValue heads = intAttr(2), causal = intAttr(1), none;
  StepRig good("attention_grad_kv", {act, act, act, act}, {act, act},
               {heads, causal, none, intAttr(2)});
  EXPECT_EQ(good.verify(), "");
  StepRig kvHeads("attention_grad", {act, {1, 4, 4}, {1, 4, 4}, act}, {act},
                  {heads, causal, none, intAttr(2)});
  EXPECT_EQ(kvHeads.verify(), "op #0 (sl.attention_grad 'dq') at test.mlir:1:1: attribute "
                              "'kv_heads' (2) is not k's width 4 over the head dim 4");
  StepRig dy("attention_grad", {act, act, act, {1, 4, 4}}, {act},
             {heads, causal, none, intAttr(2)});
  EXPECT_NE(dy.verify().find("dy"), std::string::npos) << dy.verify();
  StepRig linear("linear_grad", {{4, 6}, {5, 7}}, {{4, 5}}, {});
  EXPECT_NE(linear.verify().find("weight's last dimension is 7"), std::string::npos)
      << linear.verify();
  StepRig emb("embedding_grad", {{2, 3}, {2, 3, 4}, {10, 5}}, {{10, 5}}, {});
  EXPECT_NE(emb.verify().find("table"), std::string::npos) << emb.verify();
  StepRig sq("sum_squares", {{3, 4}}, {{2}}, {});
  EXPECT_NE(sq.verify().find("a scalar"), std::string::npos) << sq.verify();
  StepRig xent("cross_entropy_grad", {{2, 3, 10}, {2, 3}}, {{2, 3, 9}}, {axesAttr({})});
  EXPECT_NE(xent.verify().find("dlogits"), std::string::npos) << xent.verify();
}

} // namespace
