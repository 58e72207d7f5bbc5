//===- kernels_test.cpp - CPU reference kernels against plain formulas ----===//
//
// Each kernel is checked against a direct (mostly double precision)
// formulation written here, and each sharded use (vocab shards, ring steps,
// conv halos, scan state passing, expert parallelism) against the unsharded
// call.
//
//===----------------------------------------------------------------------===//

#include "kernel_test_util.h"
#include "kernels/cpu/kernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

namespace cpu = shardline::rt::cpu;

namespace {

using shardline::rt::test::expectClose;
using shardline::rt::test::Rng;
using shardline::rt::test::sliceCols;
using shardline::rt::test::Vec;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

/// Rows [start, start+len) of the sequence axis of t[B,S,inner].
Vec sliceSeq(const Vec &t, int64_t B, int64_t S, int64_t inner, int64_t start,
             int64_t len) {
  Vec out(B * len * inner);
  for (int64_t b = 0; b < B; ++b)
    std::copy(t.begin() + (b * S + start) * inner,
              t.begin() + (b * S + start + len) * inner,
              out.begin() + b * len * inner);
  return out;
}

/// Sequence rows `rows` (in that order) of t[B,S,inner].
Vec gatherSeq(const Vec &t, int64_t B, int64_t S, int64_t inner,
              const std::vector<int64_t> &rows) {
  int64_t n = rows.size();
  Vec out(B * n * inner);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < n; ++i)
      std::copy(t.begin() + (b * S + rows[i]) * inner,
                t.begin() + (b * S + rows[i] + 1) * inner,
                out.begin() + (b * n + i) * inner);
  return out;
}

double sigmoidD(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double siluD(double x) { return x / (1.0 + std::exp(-x)); }

//===----------------------------------------------------------------------===//
// Dense
//===----------------------------------------------------------------------===//

TEST(Dense, LinearMatchesTripleLoop) {
  const int64_t T = 5, K = 7, N = 3;
  Rng rng(1);
  Vec x = rng.vec(T * K), w = rng.vec(K * N), prior = rng.vec(T * N);
  std::vector<double> want(T * N);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k)
        want[t * N + n] += static_cast<double>(x[t * K + k]) * w[k * N + n];

  Vec out(T * N, 123.0f);
  cpu::linear(x.data(), w.data(), T, K, N, out.data());
  expectClose(out, want, 1e-5, 1e-6, "linear");

  Vec acc = prior;
  cpu::linear(x.data(), w.data(), T, K, N, acc.data(), /*accumulate=*/true);
  for (int64_t i = 0; i < T * N; ++i)
    want[i] += prior[i];
  expectClose(acc, want, 1e-5, 1e-6, "linear accumulate");
}

TEST(Dense, RmsNormMatchesFormula) {
  const int64_t T = 4, H = 8;
  const float eps = 1e-5f;
  Rng rng(2);
  Vec x = rng.vec(T * H, -3.0f, 3.0f), w = rng.vec(H);
  std::vector<double> want(T * H);
  for (int64_t t = 0; t < T; ++t) {
    double ms = 0.0;
    for (int64_t h = 0; h < H; ++h)
      ms += static_cast<double>(x[t * H + h]) * x[t * H + h] / H;
    for (int64_t h = 0; h < H; ++h)
      want[t * H + h] = x[t * H + h] / std::sqrt(ms + eps) * w[h];
  }
  Vec y(T * H);
  cpu::rms_norm(x.data(), w.data(), T, H, eps, y.data());
  expectClose(y, want, 1e-5, 1e-6, "rms_norm");
  cpu::rms_norm(x.data(), w.data(), T, H, eps, x.data());
  expectClose(x, want, 1e-5, 1e-6, "rms_norm in place");
}

TEST(Dense, GatedRmsNormNormalisesWithinGroups) {
  const int64_t T = 3, C = 12, groups = 3, gs = C / groups;
  const float eps = 1e-6f;
  Rng rng(3);
  Vec y = rng.vec(T * C, -2.0f, 2.0f), z = rng.vec(T * C, -4.0f, 4.0f),
      w = rng.vec(C);
  std::vector<double> want(T * C);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) {
      int64_t g0 = c / gs * gs;
      double ms = 0.0;
      for (int64_t j = g0; j < g0 + gs; ++j)
        ms += static_cast<double>(y[t * C + j]) * y[t * C + j] / gs;
      want[t * C + c] =
          y[t * C + c] / std::sqrt(ms + eps) * w[c] * siluD(z[t * C + c]);
    }
  Vec out(T * C);
  cpu::gated_rms_norm(y.data(), z.data(), w.data(), T, C, groups, eps,
                      out.data());
  expectClose(out, want, 1e-5, 1e-6, "gated_rms_norm");
}

TEST(Dense, EmbeddingVocabShardsSumToFull) {
  const int64_t V = 10, H = 4, T = 7, split = 6;
  Rng rng(4);
  Vec table = rng.vec(V * H);
  std::vector<int32_t> ids = {0, 9, 5, 6, 3, 6, 1};
  ASSERT_TRUE(cpu::ids_in_range(ids.data(), T, V));

  Vec full(T * H);
  cpu::embedding(ids.data(), T, table.data(), V, H, 0, full.data());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h)
      ASSERT_EQ(full[t * H + h], table[ids[t] * H + h]);

  Vec a(T * H), b(T * H);
  cpu::embedding(ids.data(), T, table.data(), split, H, 0, a.data());
  cpu::embedding(ids.data(), T, table.data() + split * H, V - split, H, split,
                 b.data());
  cpu::add(a.data(), b.data(), T * H, a.data());
  EXPECT_EQ(a, full);

  std::vector<int32_t> bad = {0, 10}, negative = {-1};
  EXPECT_FALSE(cpu::ids_in_range(bad.data(), 2, V));
  EXPECT_FALSE(cpu::ids_in_range(negative.data(), 1, V));
}

TEST(Dense, ElementwiseMatchFormulas) {
  Vec x = {-100.0f, -20.0f, -3.0f, -0.5f, 0.0f, 0.25f, 2.0f, 30.0f, 100.0f};
  Vec u = Rng(5).vec(x.size());
  int64_t n = x.size();
  std::vector<double> wSilu, wGelu, wSig, wSoft, wSwiglu, wAdd, wMul;
  for (int64_t i = 0; i < n; ++i) {
    double v = x[i];
    wSig.push_back(sigmoidD(v));
    wSilu.push_back(v * sigmoidD(v));
    wGelu.push_back(0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))));
    wSoft.push_back(v > 30 ? v : std::log(1.0 + std::exp(v)));
    wSwiglu.push_back(v * sigmoidD(v) * u[i]);
    wAdd.push_back(v + u[i]);
    wMul.push_back(v * u[i]);
  }
  Vec out(n);
  cpu::sigmoid(x.data(), n, out.data());
  expectClose(out, wSig, 1e-6, 1e-40, "sigmoid");
  cpu::silu(x.data(), n, out.data());
  expectClose(out, wSilu, 1e-6, 1e-40, "silu");
  cpu::gelu(x.data(), n, out.data());
  expectClose(out, wGelu, 1e-6, 1e-40, "gelu");
  cpu::softplus(x.data(), n, out.data());
  expectClose(out, wSoft, 1e-6, 1e-40, "softplus");
  cpu::add(x.data(), u.data(), n, out.data());
  expectClose(out, wAdd, 1e-7, 0, "add");
  cpu::mul(x.data(), u.data(), n, out.data());
  expectClose(out, wMul, 1e-7, 0, "mul");
  Vec g = x;
  cpu::swiglu(g.data(), u.data(), n, g.data());
  expectClose(g, wSwiglu, 1e-6, 1e-40, "swiglu in place");
}

//===----------------------------------------------------------------------===//
// RoPE and attention
//===----------------------------------------------------------------------===//

TEST(Rope, MatchesComplexRotation) {
  const int64_t B = 2, S = 5, NH = 3, D = 8, half = D / 2;
  const float theta = 10000.0f;
  std::vector<int64_t> pos = {3, 17, 100, 4096, 123457};
  Vec x = Rng(6).vec(B * S * NH * D);
  std::vector<double> want(x.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s)
      for (int64_t h = 0; h < NH; ++h)
        for (int64_t i = 0; i < half; ++i) {
          int64_t base = ((b * S + s) * NH + h) * D;
          double angle = pos[s] * std::pow(10000.0, -2.0 * i / D);
          std::complex<double> r =
              std::complex<double>(x[base + i], x[base + i + half]) *
              std::polar(1.0, angle);
          want[base + i] = r.real();
          want[base + i + half] = r.imag();
        }
  Vec out(x.size());
  cpu::rope(x.data(), pos.data(), B, S, NH, D, theta, out.data());
  expectClose(out, want, 1e-6, 1e-6, "rope");
  cpu::rope(x.data(), pos.data(), B, S, NH, D, theta, x.data());
  expectClose(x, want, 1e-6, 1e-6, "rope in place");
}

struct AttnRef {
  std::vector<double> out, lse;
};

/// softmax(scale Q K^T + mask) V one query at a time, in double.
AttnRef attentionRef(const Vec &q, const Vec &k, const Vec &v, const std::vector<int64_t> &qPos,
                     const std::vector<int64_t> &kPos, const cpu::AttentionDims &d, bool causal,
                     double scale, int64_t window = 0) {
  AttnRef r{std::vector<double>(d.B * d.Sq * d.HQ * d.D, 0.0),
            std::vector<double>(d.B * d.HQ * d.Sq,
                                -std::numeric_limits<double>::infinity())};
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.HQ; ++h) {
      int64_t hk = h / (d.HQ / d.HKV);
      for (int64_t i = 0; i < d.Sq; ++i) {
        std::vector<double> s;
        std::vector<int64_t> keys;
        for (int64_t j = 0; j < d.Sk; ++j) {
          if (causal && kPos[j] > qPos[i])
            continue;
          if (causal && window > 0 && kPos[j] <= qPos[i] - window)
            continue;
          double dot = 0.0;
          for (int64_t e = 0; e < d.D; ++e)
            dot +=
                static_cast<double>(q[((b * d.Sq + i) * d.HQ + h) * d.D + e]) *
                k[((b * d.Sk + j) * d.HKV + hk) * d.D + e];
          s.push_back(scale * dot);
          keys.push_back(j);
        }
        if (s.empty())
          continue;
        double m = *std::max_element(s.begin(), s.end()), z = 0.0;
        for (double &e : s)
          z += (e = std::exp(e - m));
        r.lse[(b * d.HQ + h) * d.Sq + i] = m + std::log(z);
        for (size_t n = 0; n < keys.size(); ++n)
          for (int64_t e = 0; e < d.D; ++e)
            r.out[((b * d.Sq + i) * d.HQ + h) * d.D + e] +=
                s[n] / z * v[((b * d.Sk + keys[n]) * d.HKV + hk) * d.D + e];
      }
    }
  return r;
}

TEST(Attention, MatchesExplicitSoftmaxWithGqa) {
  Rng rng(7);
  // Without a mask, causal, and causal within windows of 1, 3 and all 7 keys.
  for (auto [causal, window] :
       {std::pair<bool, int64_t>{false, 0}, {true, 0}, {true, 1}, {true, 3}, {true, 7}}) {
    // Queries are the last 4 of 7 positions, so some see every key.
    cpu::AttentionDims d{2, 4, 7, 4, 2, 8};
    std::vector<int64_t> qPos = {3, 4, 5, 6}, kPos(d.Sk);
    std::iota(kPos.begin(), kPos.end(), 0);
    Vec q = rng.vec(d.B * d.Sq * d.HQ * d.D, -2, 2);
    Vec k = rng.vec(d.B * d.Sk * d.HKV * d.D, -2, 2);
    Vec v = rng.vec(d.B * d.Sk * d.HKV * d.D);
    float scale = 1.0f / std::sqrt(static_cast<float>(d.D));
    AttnRef ref = attentionRef(q, k, v, qPos, kPos, d, causal, scale, window);
    Vec out(ref.out.size()), lse(ref.lse.size());
    cpu::attention(q.data(), k.data(), v.data(), qPos.data(), kPos.data(), d, causal, scale,
                   out.data(), lse.data(), window);
    expectClose(out, ref.out, 1e-5, 1e-6, "attention out");
    expectClose(lse, ref.lse, 1e-5, 1e-6, "attention lse");
  }
}

TEST(Attention, QueryWithoutVisibleKeysIsEmpty) {
  cpu::AttentionDims d{1, 2, 3, 2, 1, 4};
  std::vector<int64_t> qPos = {0, 1}, kPos = {4, 5, 6};
  Rng rng(8);
  Vec q = rng.vec(d.Sq * d.HQ * d.D), k = rng.vec(d.Sk * d.D),
      v = rng.vec(d.Sk * d.D);
  Vec out(q.size(), 7.0f), lse(d.HQ * d.Sq, 7.0f);
  cpu::attention(q.data(), k.data(), v.data(), qPos.data(), kPos.data(), d,
                 true, 0.5f, out.data(), lse.data());
  EXPECT_EQ(out, Vec(out.size(), 0.0f));
  EXPECT_EQ(lse, Vec(lse.size(), kNegInf));
}

// A window of one token: each query reads only its own value.
TEST(Attention, WindowOfOneReadsTheQuerysOwnValue) {
  Rng rng(11);
  cpu::AttentionDims d{1, 3, 5, 2, 1, 4};
  std::vector<int64_t> qPos = {2, 3, 4}, kPos = {0, 1, 2, 3, 4};
  Vec q = rng.vec(d.Sq * d.HQ * d.D), k = rng.vec(d.Sk * d.D), v = rng.vec(d.Sk * d.D);
  Vec out(q.size());
  cpu::attention(q.data(), k.data(), v.data(), qPos.data(), kPos.data(), d, true, 0.5f, out.data(),
                 nullptr, 1);
  for (int64_t i = 0; i < d.Sq; ++i)
    for (int64_t h = 0; h < d.HQ; ++h)
      for (int64_t e = 0; e < d.D; ++e)
        ASSERT_EQ(out[(i * d.HQ + h) * d.D + e], v[qPos[i] * d.D + e]) << i << " " << h;
}

TEST(LocalAttention, WholeSequenceMatchesWindowedSoftmax) {
  Rng rng(12);
  cpu::AttentionDims d{2, 12, 12, 4, 1, 8};
  std::vector<int64_t> pos(d.Sq);
  std::iota(pos.begin(), pos.end(), 0);
  Vec q = rng.vec(d.B * d.Sq * d.HQ * d.D, -2, 2);
  Vec k = rng.vec(d.B * d.Sk * d.HKV * d.D, -2, 2);
  Vec v = rng.vec(d.B * d.Sk * d.HKV * d.D);
  double scale = 1.0 / std::sqrt(static_cast<double>(d.D));
  for (int64_t window : {1, 4, 100}) {
    AttnRef ref = attentionRef(q, k, v, pos, pos, d, true, scale, window);
    Vec out(ref.out.size());
    cpu::local_attention(q.data(), k.data(), v.data(), nullptr, nullptr, 0, 0, d, window,
                         out.data());
    expectClose(out, ref.out, 1e-5, 1e-6, "local attention");
  }
}

// A chunk with the halo of the tokens before it gives the rows of the
// unsplit run, also where the halo is longer than a chunk and where it
// reaches before the sequence (those rows are zeros and must not count).
TEST(LocalAttention, ChunkWithHaloEqualsUnsplit) {
  Rng rng(13);
  const int64_t B = 2, S = 16, HQ = 4, HKV = 2, D = 4, L = 4;
  cpu::AttentionDims full{B, S, S, HQ, HKV, D}, chunk{B, L, L, HQ, HKV, D};
  int64_t qw = HQ * D, kw = HKV * D;
  Vec q = rng.vec(B * S * qw, -2, 2), k = rng.vec(B * S * kw, -2, 2), v = rng.vec(B * S * kw);
  for (int64_t window : {3, 6, 13}) {
    Vec want(q.size());
    cpu::local_attention(q.data(), k.data(), v.data(), nullptr, nullptr, 0, 0, full, window,
                         want.data());
    int64_t H = std::min(window - 1, S - L);
    for (int64_t start = 0; start < S; start += L) {
      Vec haloK(B * H * kw, 0.0f), haloV(B * H * kw, 0.0f);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < H; ++j) {
          int64_t p = start - H + j;
          if (p < 0)
            continue;
          std::copy_n(k.begin() + (b * S + p) * kw, kw, haloK.begin() + (b * H + j) * kw);
          std::copy_n(v.begin() + (b * S + p) * kw, kw, haloV.begin() + (b * H + j) * kw);
        }
      Vec qc = sliceSeq(q, B, S, qw, start, L), kc = sliceSeq(k, B, S, kw, start, L),
          vc = sliceSeq(v, B, S, kw, start, L), out(qc.size());
      cpu::local_attention(qc.data(), kc.data(), vc.data(), haloK.data(), haloV.data(), H, start,
                           chunk, window, out.data());
      expectClose(out, sliceSeq(want, B, S, qw, start, L), 1e-5, 1e-6, "chunk with halo");
    }
  }
}

/// Each rank holds the query rows `mine`; K/V travel round the ring in the
/// pieces `ring`, starting with the piece of the rank itself. Returns whether
/// some step left a query with no visible key.
bool checkRing(const std::vector<std::vector<int64_t>> &ring, int64_t S,
               uint64_t seed) {
  const int64_t B = 2, HQ = 4, HKV = 2, D = 8;
  Rng rng(seed);
  Vec q = rng.vec(B * S * HQ * D, -2, 2), k = rng.vec(B * S * HKV * D, -2, 2),
      v = rng.vec(B * S * HKV * D);
  std::vector<int64_t> all(S);
  std::iota(all.begin(), all.end(), 0);
  const float scale = 0.35f;
  cpu::AttentionDims full{B, S, S, HQ, HKV, D};
  AttnRef ref = attentionRef(q, k, v, all, all, full, true, scale);

  bool sawEmpty = false;
  int64_t n = ring.size();
  for (int64_t rank = 0; rank < n; ++rank) {
    const std::vector<int64_t> &mine = ring[rank];
    int64_t Sq = mine.size();
    Vec qr = gatherSeq(q, B, S, HQ * D, mine);
    Vec acc(B * Sq * HQ * D), accLse(B * HQ * Sq);
    for (int64_t step = 0; step < n; ++step) {
      const std::vector<int64_t> &keys = ring[(rank - step + n) % n];
      int64_t Sk = keys.size();
      Vec kr = gatherSeq(k, B, S, HKV * D, keys);
      Vec vr = gatherSeq(v, B, S, HKV * D, keys);
      Vec part(acc.size()), partLse(accLse.size());
      cpu::attention(qr.data(), kr.data(), vr.data(), mine.data(), keys.data(),
                     {B, Sq, Sk, HQ, HKV, D}, true, scale, part.data(),
                     partLse.data());
      sawEmpty |= std::count(partLse.begin(), partLse.end(), kNegInf) > 0;
      if (step == 0) {
        acc = part;
        accLse = partLse;
      } else {
        cpu::attention_merge(acc.data(), accLse.data(), part.data(),
                             partLse.data(), B, Sq, HQ, D, acc.data(),
                             accLse.data());
      }
    }
    std::vector<double> wantOut(acc.size()), wantLse(accLse.size());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < Sq; ++i)
        for (int64_t h = 0; h < HQ; ++h) {
          wantLse[(b * HQ + h) * Sq + i] = ref.lse[(b * HQ + h) * S + mine[i]];
          for (int64_t e = 0; e < D; ++e)
            wantOut[((b * Sq + i) * HQ + h) * D + e] =
                ref.out[((b * S + mine[i]) * HQ + h) * D + e];
        }
    expectClose(acc, wantOut, 1e-5, 1e-5, "ring out");
    expectClose(accLse, wantLse, 1e-5, 1e-5, "ring lse");
  }
  return sawEmpty;
}

std::vector<std::vector<int64_t>> contiguousChunks(int64_t S, int64_t n) {
  std::vector<std::vector<int64_t>> chunks(n);
  for (int64_t i = 0; i < S; ++i)
    chunks[i / (S / n)].push_back(i);
  return chunks;
}

TEST(Attention, RingStepsMergeToFullAttention) {
  const int64_t S = 16;
  EXPECT_TRUE(checkRing(contiguousChunks(S, 2), S, 9));
  EXPECT_TRUE(checkRing(contiguousChunks(S, 4), S, 10));
  // Load-balanced layout: rank r holds chunks r and 2n-1-r of 2n.
  std::vector<std::vector<int64_t>> chunks = contiguousChunks(S, 4), zigzag(2);
  for (int64_t r = 0; r < 2; ++r) {
    zigzag[r] = chunks[r];
    zigzag[r].insert(zigzag[r].end(), chunks[3 - r].begin(),
                     chunks[3 - r].end());
  }
  EXPECT_TRUE(checkRing(zigzag, S, 11));
}

TEST(Attention, MergeOfTwoEmptyPartsIsEmpty) {
  Vec a = {1, 2}, b = {3, 4}, la = {kNegInf}, lb = {kNegInf}, out(2), lse(1);
  cpu::attention_merge(a.data(), la.data(), b.data(), lb.data(), 1, 1, 1, 2,
                       out.data(), lse.data());
  EXPECT_EQ(out, Vec({0, 0}));
  EXPECT_EQ(lse[0], kNegInf);
}

//===----------------------------------------------------------------------===//
// Causal conv1d
//===----------------------------------------------------------------------===//

TEST(Conv1d, MatchesDirectFormula) {
  const int64_t B = 2, S = 6, C = 3, W = 4;
  Rng rng(12);
  Vec x = rng.vec(B * S * C), w = rng.vec(C * W), bias = rng.vec(C),
      halo = rng.vec(B * (W - 1) * C);
  std::vector<double> want(B * S * C);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < S; ++t)
      for (int64_t c = 0; c < C; ++c) {
        double acc = bias[c];
        for (int64_t j = 0; j < W; ++j) {
          int64_t src = t - (W - 1) + j;
          acc += w[c * W + j] *
                 (src >= 0 ? x[(b * S + src) * C + c]
                           : halo[(b * (W - 1) + W - 1 + src) * C + c]);
        }
        want[(b * S + t) * C + c] = acc;
      }
  Vec y(want.size());
  cpu::causal_conv1d(x.data(), w.data(), bias.data(), halo.data(), B, S, C, W,
                     y.data());
  expectClose(y, want, 1e-6, 1e-6, "conv1d");
}

TEST(Conv1d, SplitWithHaloEqualsUnsplit) {
  const int64_t B = 2, S = 11, C = 3, W = 4;
  Rng rng(13);
  Vec x = rng.vec(B * S * C), w = rng.vec(C * W), bias = rng.vec(C);
  Vec full(B * S * C);
  cpu::causal_conv1d(x.data(), w.data(), bias.data(), nullptr, B, S, C, W,
                     full.data());

  // The halo is the last W-1 tokens of the first part.
  const int64_t cut = 5;
  Vec x0 = sliceSeq(x, B, S, C, 0, cut),
      x1 = sliceSeq(x, B, S, C, cut, S - cut);
  Vec halo = sliceSeq(x0, B, cut, C, cut - (W - 1), W - 1);
  Vec y1(x1.size());
  cpu::causal_conv1d(x1.data(), w.data(), bias.data(), halo.data(), B, S - cut,
                     C, W, y1.data());
  EXPECT_EQ(y1, sliceSeq(full, B, S, C, cut, S - cut));

  // Pieces shorter than the halo pass part of their own halo on.
  std::vector<int64_t> bounds = {0, 1, 3, 8, 11};
  Vec carry;
  for (size_t p = 0; p + 1 < bounds.size(); ++p) {
    int64_t len = bounds[p + 1] - bounds[p];
    Vec xp = sliceSeq(x, B, S, C, bounds[p], len), yp(xp.size()),
        next(B * (W - 1) * C);
    const float *h = p ? carry.data() : nullptr;
    cpu::causal_conv1d(xp.data(), w.data(), bias.data(), h, B, len, C, W,
                       yp.data());
    EXPECT_EQ(yp, sliceSeq(full, B, S, C, bounds[p], len)) << "piece " << p;
    cpu::causal_conv1d_halo(xp.data(), h, B, len, C, W, next.data());
    carry = next;
  }
}

//===----------------------------------------------------------------------===//
// Mamba-2 SSD scan
//===----------------------------------------------------------------------===//

struct SsdInputs {
  cpu::SsdDims d;
  Vec x, dt, A, Bm, Cm, D, h0;
};

SsdInputs makeSsd(int64_t S, uint64_t seed) {
  SsdInputs in{{2, S, 4, 3, 2, 5}, {}, {}, {}, {}, {}, {}, {}};
  const cpu::SsdDims &d = in.d;
  Rng rng(seed);
  in.x = rng.vec(d.B * S * d.NH * d.P);
  in.dt = rng.vec(d.B * S * d.NH, -2, 1);
  cpu::softplus(in.dt.data(), in.dt.size(), in.dt.data());
  in.A = rng.vec(d.NH, -1.5f, -0.2f);
  in.Bm = rng.vec(d.B * S * d.G * d.N);
  in.Cm = rng.vec(d.B * S * d.G * d.N);
  in.D = rng.vec(d.NH);
  in.h0 = rng.vec(d.B * d.NH * d.P * d.N);
  return in;
}

struct ScanOut {
  Vec y, state, decay;
};

TEST(Ssd, ReferenceMatchesRecurrence) {
  SsdInputs in = makeSsd(9, 14);
  const cpu::SsdDims &d = in.d;
  const int64_t per = d.NH / d.G;
  std::vector<double> y(in.x.size()), state(in.h0.begin(), in.h0.end()),
      decay(d.B * d.NH, 1.0);
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.NH; ++h)
      for (int64_t t = 0; t < d.S; ++t) {
        int64_t row = b * d.S + t, g = h / per;
        double dt = in.dt[row * d.NH + h], a = std::exp(dt * in.A[h]);
        decay[b * d.NH + h] *= a;
        for (int64_t p = 0; p < d.P; ++p) {
          double xv = in.x[(row * d.NH + h) * d.P + p], acc = in.D[h] * xv;
          for (int64_t n = 0; n < d.N; ++n) {
            double &s = state[((b * d.NH + h) * d.P + p) * d.N + n];
            s = a * s + dt * xv * in.Bm[(row * d.G + g) * d.N + n];
            acc += in.Cm[(row * d.G + g) * d.N + n] * s;
          }
          y[(row * d.NH + h) * d.P + p] = acc;
        }
      }
  ScanOut got{Vec(y.size()), Vec(state.size()), Vec(decay.size())};
  cpu::ssd_scan_reference(in.x.data(), in.dt.data(), in.A.data(), in.Bm.data(),
                          in.Cm.data(), in.D.data(), in.h0.data(), d,
                          got.y.data(), got.state.data(), got.decay.data());
  expectClose(got.y, y, 1e-5, 1e-6, "ssd reference y");
  expectClose(got.state, state, 1e-5, 1e-6, "ssd reference state");
  expectClose(got.decay, decay, 1e-5, 1e-9, "ssd reference decay");
}

TEST(Ssd, ChunkedMatchesReference) {
  SsdInputs in = makeSsd(21, 15);
  const cpu::SsdDims &d = in.d;
  for (bool withInit : {false, true}) {
    const float *h0 = withInit ? in.h0.data() : nullptr;
    ScanOut ref{Vec(in.x.size()), Vec(in.h0.size()), Vec(d.B * d.NH)};
    cpu::ssd_scan_reference(in.x.data(), in.dt.data(), in.A.data(),
                            in.Bm.data(), in.Cm.data(), in.D.data(), h0, d,
                            ref.y.data(), ref.state.data(), ref.decay.data());
    for (int64_t L : {1, 4, 8, 64}) {
      SCOPED_TRACE(testing::Message() << "chunk " << L << " init " << withInit);
      ScanOut got{Vec(ref.y.size()), Vec(ref.state.size()),
                  Vec(ref.decay.size())};
      cpu::ssd_scan(in.x.data(), in.dt.data(), in.A.data(), in.Bm.data(),
                    in.Cm.data(), in.D.data(), h0, d, got.y.data(),
                    got.state.data(), got.decay.data(), L);
      expectClose(got.y, ref.y, 1e-4, 1e-5, "ssd y");
      expectClose(got.state, ref.state, 1e-4, 1e-5, "ssd state");
      expectClose(got.decay, ref.decay, 1e-4, 1e-9, "ssd decay");
    }
  }
}

TEST(Ssd, StatePassingEqualsFullScan) {
  SsdInputs in = makeSsd(21, 16);
  const cpu::SsdDims &d = in.d;
  const int64_t nd = d.B * d.NH, stateSize = d.P * d.N;
  ScanOut full{Vec(in.x.size()), Vec(in.h0.size()), Vec(nd)};
  cpu::ssd_scan(in.x.data(), in.dt.data(), in.A.data(), in.Bm.data(),
                in.Cm.data(), in.D.data(), in.h0.data(), d, full.y.data(),
                full.state.data(), full.decay.data(), 4);

  std::vector<int64_t> bounds = {0, 5, 11, 16, 21};
  const int64_t pieces = bounds.size() - 1;
  std::vector<ScanOut> outs;
  std::vector<SsdInputs> ins;
  Vec decays, finals;
  for (int64_t i = 0; i < pieces; ++i) {
    int64_t s0 = bounds[i], len = bounds[i + 1] - s0;
    SsdInputs p = in;
    p.d.S = len;
    p.x = sliceSeq(in.x, d.B, d.S, d.NH * d.P, s0, len);
    p.dt = sliceSeq(in.dt, d.B, d.S, d.NH, s0, len);
    p.Bm = sliceSeq(in.Bm, d.B, d.S, d.G * d.N, s0, len);
    p.Cm = sliceSeq(in.Cm, d.B, d.S, d.G * d.N, s0, len);
    ScanOut o{Vec(p.x.size()), Vec(in.h0.size()), Vec(nd)};
    cpu::ssd_scan(p.x.data(), p.dt.data(), p.A.data(), p.Bm.data(), p.Cm.data(),
                  p.D.data(), nullptr, p.d, o.y.data(), o.state.data(),
                  o.decay.data(), 4);
    decays.insert(decays.end(), o.decay.begin(), o.decay.end());
    finals.insert(finals.end(), o.state.begin(), o.state.end());
    outs.push_back(o);
    ins.push_back(p);
  }
  Vec inits(pieces * nd * stateSize), total(nd * stateSize);
  cpu::scan_combine_states(decays.data(), finals.data(), in.h0.data(), pieces,
                           nd, stateSize, inits.data(), total.data());
  expectClose(total, full.state, 1e-4, 1e-5, "combined final state");

  for (int64_t i = 0; i < pieces; ++i) {
    SsdInputs &p = ins[i];
    ScanOut &o = outs[i];
    cpu::ssd_state_correct(p.Cm.data(), p.dt.data(), p.A.data(),
                           inits.data() + i * nd * stateSize, p.d, o.y.data(),
                           o.state.data());
    int64_t len = bounds[i + 1] - bounds[i];
    expectClose(o.y, sliceSeq(full.y, d.B, d.S, d.NH * d.P, bounds[i], len),
                1e-4, 1e-5, "corrected y");
  }
  expectClose(outs.back().state, full.state, 1e-4, 1e-5, "corrected state");
}

//===----------------------------------------------------------------------===//
// RG-LRU
//===----------------------------------------------------------------------===//

struct RglruInputs {
  int64_t B, S, W;
  Vec x, ga, gx, lambda, h0;
};

RglruInputs makeRglru(int64_t S, uint64_t seed) {
  RglruInputs in{2, S, 6, {}, {}, {}, {}, {}};
  Rng rng(seed);
  in.x = rng.vec(in.B * S * in.W);
  in.ga = rng.vec(in.B * S * in.W, -3, 3);
  in.gx = rng.vec(in.B * S * in.W, -3, 3);
  in.lambda = rng.vec(in.W, 0.5f, 6.0f);
  in.h0 = rng.vec(in.B * in.W);
  return in;
}

TEST(Rglru, MatchesRecurrence) {
  RglruInputs in = makeRglru(13, 17);
  const double c = 8.0;
  std::vector<double> y(in.x.size()), h(in.h0.begin(), in.h0.end()),
      decay(in.B * in.W, 1.0);
  for (int64_t b = 0; b < in.B; ++b)
    for (int64_t t = 0; t < in.S; ++t)
      for (int64_t w = 0; w < in.W; ++w) {
        int64_t i = (b * in.S + t) * in.W + w;
        double a = std::pow(sigmoidD(in.lambda[w]), c * sigmoidD(in.ga[i]));
        double &hv = h[b * in.W + w];
        hv = a * hv + std::sqrt(1.0 - a * a) * sigmoidD(in.gx[i]) * in.x[i];
        y[i] = hv;
        decay[b * in.W + w] *= a;
      }
  ScanOut got{Vec(y.size()), Vec(h.size()), Vec(decay.size())};
  cpu::rglru_scan(in.x.data(), in.ga.data(), in.gx.data(), in.lambda.data(),
                  in.h0.data(), in.B, in.S, in.W, got.y.data(),
                  got.state.data(), got.decay.data());
  expectClose(got.y, y, 1e-5, 1e-6, "rglru y");
  expectClose(got.state, h, 1e-5, 1e-6, "rglru state");
  expectClose(got.decay, decay, 1e-5, 1e-12, "rglru decay");
}

TEST(Rglru, StatePassingEqualsFullScan) {
  RglruInputs in = makeRglru(13, 18);
  const int64_t nd = in.B * in.W;
  ScanOut full{Vec(in.x.size()), Vec(nd), Vec(nd)};
  cpu::rglru_scan(in.x.data(), in.ga.data(), in.gx.data(), in.lambda.data(),
                  in.h0.data(), in.B, in.S, in.W, full.y.data(),
                  full.state.data(), full.decay.data());

  std::vector<int64_t> bounds = {0, 3, 4, 9, 13};
  const int64_t pieces = bounds.size() - 1;
  std::vector<ScanOut> outs;
  Vec decays, finals;
  auto piece = [&](const Vec &v, int64_t i) {
    return sliceSeq(v, in.B, in.S, in.W, bounds[i], bounds[i + 1] - bounds[i]);
  };
  for (int64_t i = 0; i < pieces; ++i) {
    int64_t len = bounds[i + 1] - bounds[i];
    Vec x = piece(in.x, i), ga = piece(in.ga, i), gx = piece(in.gx, i);
    ScanOut o{Vec(x.size()), Vec(nd), Vec(nd)};
    cpu::rglru_scan(x.data(), ga.data(), gx.data(), in.lambda.data(), nullptr,
                    in.B, len, in.W, o.y.data(), o.state.data(),
                    o.decay.data());
    decays.insert(decays.end(), o.decay.begin(), o.decay.end());
    finals.insert(finals.end(), o.state.begin(), o.state.end());
    outs.push_back(o);
  }
  Vec inits(pieces * nd), total(nd);
  cpu::scan_combine_states(decays.data(), finals.data(), in.h0.data(), pieces,
                           nd, 1, inits.data(), total.data());
  expectClose(total, full.state, 1e-5, 1e-6, "combined final state");
  for (int64_t i = 0; i < pieces; ++i) {
    Vec ga = piece(in.ga, i);
    cpu::rglru_state_correct(ga.data(), in.lambda.data(), inits.data() + i * nd,
                             in.B, bounds[i + 1] - bounds[i], in.W,
                             outs[i].y.data(), outs[i].state.data());
    expectClose(outs[i].y, piece(full.y, i), 1e-5, 1e-6, "corrected y");
  }
  expectClose(outs.back().state, full.state, 1e-5, 1e-6, "corrected state");
}

//===----------------------------------------------------------------------===//
// Mixture of experts
//===----------------------------------------------------------------------===//

/// Per token, in double: sum over slots of weight * SwiGLU expert(x[t]).
std::vector<double> moeReference(const Vec &x, const std::vector<int32_t> &idx,
                                 const Vec &weights, const Vec &wg,
                                 const Vec &wu, const Vec &wd, int64_t T,
                                 int64_t H, int64_t F, int64_t k) {
  std::vector<double> want(T * H, 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t s = 0; s < k; ++s) {
      int64_t e = idx[t * k + s];
      std::vector<double> act(F);
      for (int64_t f = 0; f < F; ++f) {
        double g = 0.0, u = 0.0;
        for (int64_t h = 0; h < H; ++h) {
          g += static_cast<double>(x[t * H + h]) * wg[(e * H + h) * F + f];
          u += static_cast<double>(x[t * H + h]) * wu[(e * H + h) * F + f];
        }
        act[f] = siluD(g) * u;
      }
      for (int64_t h = 0; h < H; ++h) {
        double o = 0.0;
        for (int64_t f = 0; f < F; ++f)
          o += act[f] * wd[(e * F + f) * H + h];
        want[t * H + h] += weights[t * k + s] * o;
      }
    }
  return want;
}

TEST(Moe, RouterTopkMatchesSortedLoop) {
  const int64_t T = 6, E = 8;
  Vec logits = Rng(19).vec(T * E, -3, 3);
  std::fill(logits.begin(), logits.begin() + E, 0.5f);  // all tied
  logits[E + 2] = logits[E + 6] = logits[E + 4] = 4.0f; // three-way tie on top
  for (int64_t k : {1, 2, 3}) {
    std::vector<float> weights(T * k);
    std::vector<int32_t> idx(T * k);
    cpu::router_topk(logits.data(), T, E, k, weights.data(), idx.data());
    for (int64_t t = 0; t < T; ++t) {
      std::vector<std::pair<double, int32_t>> p;
      double z = 0.0;
      for (int32_t e = 0; e < E; ++e)
        z += std::exp(static_cast<double>(logits[t * E + e]));
      for (int32_t e = 0; e < E; ++e)
        p.push_back({std::exp(static_cast<double>(logits[t * E + e])) / z, e});
      std::sort(p.begin(), p.end(), [](auto &a, auto &b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
      });
      double kept = 0.0;
      for (int64_t j = 0; j < k; ++j)
        kept += p[j].first;
      for (int64_t j = 0; j < k; ++j) {
        EXPECT_EQ(idx[t * k + j], p[j].second) << "t " << t << " k " << k;
        EXPECT_NEAR(weights[t * k + j], p[j].first / kept, 1e-6);
      }
    }
    EXPECT_EQ(idx[0], 0);
    EXPECT_EQ(idx[k], 2);
  }
}

TEST(Moe, DispatchExpertsCombineMatchPerTokenLoop) {
  const int64_t T = 7, H = 4, F = 6, E = 4, k = 2, R = T * k;
  Rng rng(20);
  Vec x = rng.vec(T * H), logits = rng.vec(T * E, -2, 2);
  for (int64_t t = 0; t < T; ++t)
    logits[t * E + 3] = -10.0f; // expert 3 gets no rows
  Vec wg = rng.vec(E * H * F), wu = rng.vec(E * H * F), wd = rng.vec(E * F * H);
  Vec weights(T * k);
  std::vector<int32_t> idx(T * k);
  cpu::router_topk(logits.data(), T, E, k, weights.data(), idx.data());

  Vec sorted(R * H), expertOut(R * H), y(T * H);
  std::vector<int32_t> counts(E), perm(R);
  cpu::moe_dispatch(x.data(), idx.data(), T, H, k, E, sorted.data(),
                    counts.data(), perm.data());
  EXPECT_EQ(counts[3], 0);
  EXPECT_EQ(std::accumulate(counts.begin(), counts.end(), 0), R);
  for (int64_t r = 0; r < R; ++r) {
    EXPECT_EQ(std::vector<float>(sorted.begin() + r * H,
                                 sorted.begin() + (r + 1) * H),
              std::vector<float>(x.begin() + perm[r] / k * H,
                                 x.begin() + (perm[r] / k + 1) * H));
    if (r > 0) {
      // Grouped by expert, (token, slot) order inside a group.
      int32_t e0 = idx[perm[r - 1]], e1 = idx[perm[r]];
      EXPECT_TRUE(e0 < e1 || (e0 == e1 && perm[r - 1] < perm[r]));
    }
  }
  cpu::moe_experts(sorted.data(), counts.data(), E, wg.data(), wu.data(),
                   wd.data(), H, F, expertOut.data());
  cpu::moe_combine(expertOut.data(), perm.data(), weights.data(), T, H, k,
                   y.data());

  expectClose(y, moeReference(x, idx, weights, wg, wu, wd, T, H, F, k), 1e-5,
              1e-6, "moe");

  // Expert parallel: each rank runs its experts on its contiguous rows.
  Vec epOut(R * H);
  int64_t row = 0;
  for (int64_t e0 : {0, 2}) {
    cpu::moe_experts(sorted.data() + row * H, counts.data() + e0, 2,
                     wg.data() + e0 * H * F, wu.data() + e0 * H * F,
                     wd.data() + e0 * F * H, H, F, epOut.data() + row * H);
    row += counts[e0] + counts[e0 + 1];
  }
  expectClose(epOut, expertOut, 1e-6, 1e-7, "ep experts");
}

//===----------------------------------------------------------------------===//
// Cross-entropy
//===----------------------------------------------------------------------===//

TEST(Xent, MatchesDirectFormula) {
  const int64_t T = 5, V = 11;
  Vec logits = Rng(21).vec(T * V, -8, 8);
  std::vector<int32_t> labels = {0, 10, 3, 6, 5};
  double want = 0.0;
  for (int64_t t = 0; t < T; ++t) {
    double z = 0.0;
    for (int64_t v = 0; v < V; ++v)
      z += std::exp(static_cast<double>(logits[t * V + v]));
    want += (std::log(z) - logits[t * V + labels[t]]) / T;
  }
  EXPECT_NEAR(cpu::cross_entropy(logits.data(), labels.data(), T, V), want,
              1e-5 * std::abs(want));
}

TEST(Xent, VocabShardsCombineToFull) {
  const int64_t T = 5, V = 11, split = 6;
  Vec logits = Rng(22).vec(T * V, -8, 8);
  std::vector<int32_t> labels = {0, 10, 5, 6, 2};
  const float full = cpu::cross_entropy(logits.data(), labels.data(), T, V);

  Vec shard[2] = {sliceCols(logits, T, V, 0, split),
                  sliceCols(logits, T, V, split, V - split)};
  const int64_t offset[2] = {0, split}, width[2] = {split, V - split};
  Vec max[2] = {Vec(T), Vec(T)}, sum[2] = {Vec(T), Vec(T)},
      target[2] = {Vec(T), Vec(T)};
  for (int i = 0; i < 2; ++i)
    cpu::xent_local_max(shard[i].data(), T, width[i], max[i].data());
  Vec gmax(T), gsum(T), gtarget(T);
  for (int64_t t = 0; t < T; ++t)
    gmax[t] = std::max(max[0][t], max[1][t]);
  for (int i = 0; i < 2; ++i) {
    cpu::xent_local_sumexp(shard[i].data(), gmax.data(), T, width[i],
                           sum[i].data());
    cpu::xent_local_target(shard[i].data(), labels.data(), T, width[i],
                           offset[i], target[i].data());
  }
  cpu::add(sum[0].data(), sum[1].data(), T, gsum.data());
  cpu::add(target[0].data(), target[1].data(), T, gtarget.data());
  for (int64_t t = 0; t < T; ++t)
    EXPECT_EQ(gtarget[t], logits[t * V + labels[t]]);
  EXPECT_NEAR(cpu::xent_loss(gmax.data(), gsum.data(), gtarget.data(), T), full,
              1e-6 * std::abs(full));
}

TEST(Xent, CombinedShardPiecesGiveTheFullLoss) {
  const int64_t T = 4, V = 9, split = 5;
  Vec logits = Rng(23).vec(T * V, -6, 6);
  std::vector<int32_t> labels = {8, 0, 4, 5};
  const double full = cpu::cross_entropy(logits.data(), labels.data(), T, V);
  Vec shard[2] = {sliceCols(logits, T, V, 0, split),
                  sliceCols(logits, T, V, split, V - split)};
  const int64_t offset[2] = {0, split}, width[2] = {split, V - split};
  Vec max[2] = {Vec(T), Vec(T)}, pieces[2] = {Vec(2 * T), Vec(2 * T)};
  for (int i = 0; i < 2; ++i)
    cpu::xent_local_max(shard[i].data(), T, width[i], max[i].data());
  const float *maxes[2] = {max[0].data(), max[1].data()};
  Vec gmax(T);
  cpu::xent_combine_max(maxes, 2, T, gmax.data());
  for (int64_t t = 0; t < T; ++t)
    EXPECT_EQ(gmax[t], *std::max_element(logits.begin() + t * V,
                                         logits.begin() + (t + 1) * V));
  for (int i = 0; i < 2; ++i) {
    cpu::xent_local_sumexp(shard[i].data(), gmax.data(), T, width[i],
                           pieces[i].data());
    cpu::xent_local_target(shard[i].data(), labels.data(), T, width[i],
                           offset[i], pieces[i].data() + T);
  }
  const float *both[2] = {pieces[0].data(), pieces[1].data()};
  EXPECT_NEAR(cpu::xent_combine_total(both, 2, gmax.data(), T) / T, full,
              1e-6 * std::abs(full));
}

TEST(Moe, SlabsScatterComputeAndGatherMatchPerTokenLoop) {
  const int64_t T = 5, H = 3, F = 4, E = 3, k = 2;
  Rng rng(24);
  Vec x = rng.vec(T * H);
  Vec wg = rng.vec(E * H * F), wu = rng.vec(E * H * F), wd = rng.vec(E * F * H);
  // Expert 2 gets no token; token 4 routes to experts 1 and 0.
  std::vector<int32_t> idx = {0, 1, 1, 0, 0, 1, 1, 0, 1, 0};
  Vec weights = {0.75f, 0.25f, 0.5f, 0.5f, 0.9f, 0.1f, 0.6f, 0.4f, 0.3f, 0.7f};
  Vec slabs(E * T * H, 0.0f), out(E * T * H, 0.0f), y(T * H, 5.0f);
  cpu::moe_scatter_rows(x.data(), idx.data(), T, H, k, slabs.data());
  for (int64_t e = 0; e < E; ++e)
    for (int64_t t = 0; t < T; ++t) {
      bool routed = idx[t * k] == e || idx[t * k + 1] == e;
      for (int64_t h = 0; h < H; ++h)
        EXPECT_EQ(slabs[(e * T + t) * H + h], routed ? x[t * H + h] : 0.0f)
            << e << " " << t;
    }
  cpu::moe_experts_slabs(slabs.data(), E, T, wg.data(), wu.data(), wd.data(), H,
                         F, out.data());
  for (int64_t t = 0; t < T * H; ++t)
    EXPECT_EQ(out[2 * T * H + t], 0.0f) << "expert 2 computed a row";
  cpu::moe_gather_rows(out.data(), weights.data(), idx.data(), T, H, k,
                       y.data());
  expectClose(y, moeReference(x, idx, weights, wg, wu, wd, T, H, F, k), 1e-5,
              1e-6, "slabs");
}

TEST(Ssd, PreludeMatchesFormula) {
  const int64_t T = 3, NH = 2;
  Vec dt = {-30.0f, 0.0f, 0.5f, 1.0f, 30.0f, -1.0f}, bias = {0.25f, -0.5f},
      aLog = {0.0f, std::log(3.0f)};
  Vec dtOut(T * NH), A(NH);
  cpu::ssd_prelude(dt.data(), bias.data(), aLog.data(), T, NH, dtOut.data(),
                   A.data());
  std::vector<double> want(T * NH);
  for (int64_t i = 0; i < T * NH; ++i)
    want[i] = std::log1p(std::exp(static_cast<double>(dt[i]) + bias[i % NH]));
  expectClose(dtOut, want, 1e-6, 1e-12, "softplus(dt + bias)");
  expectClose(A, std::vector<double>{-1.0, -3.0}, 1e-6, 0, "-exp(a_log)");
}

TEST(Rglru, GatesAreChannelwiseAffine) {
  const int64_t T = 2, W = 3;
  Vec x = {1, 2, 3, -1, 0, 0.5f};
  Vec wa = {2, 0, -1}, ba = {0.5f, 1, 0}, wx = {1, 1, 1}, bx = {0, -2, 4};
  Vec ga(T * W), gx(T * W), onlyA(T * W);
  cpu::rglru_gates(x.data(), wa.data(), ba.data(), wx.data(), bx.data(), T, W,
                   ga.data(), gx.data());
  EXPECT_EQ(ga, (Vec{2.5f, 1, -3, -1.5f, 1, -0.5f}));
  EXPECT_EQ(gx, (Vec{1, 0, 7, -1, -2, 4.5f}));
  cpu::rglru_gates(x.data(), wa.data(), ba.data(), nullptr, nullptr, T, W,
                   onlyA.data(), nullptr);
  EXPECT_EQ(onlyA, ga);
}

} // namespace
