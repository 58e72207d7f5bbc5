//===- cuda_arith_test.cpp - the CUDA kernels' arithmetic on the CPU ------===//
//
// The per-element, per-row and per-tile arithmetic of the CUDA kernels
// (kernels/cuda/arith.h) and their launch shapes (kernels/cuda/launch.h),
// run on the host and checked against the CPU reference kernels. Each test
// walks the data the way the kernel's threads do (which thread takes which
// element, tile by tile), so what a GPU run adds is only the hardware.
//
//===----------------------------------------------------------------------===//

#include "core/buffer.h"
#include "device/device.h"
#include "kernel_test_util.h"
#include "kernels/cpu/internal.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cuda/arith.h"
#include "kernels/cuda/exchange_arith.h"
#include "kernels/cuda/launch.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace rt = shardline::rt;
namespace cpu = shardline::rt::cpu;
namespace gpu = shardline::rt::cuda;
namespace test = shardline::rt::test;
namespace arith = shardline::rt::cuda::arith;

namespace {

/// |got - want| <= tol * (1 + |want|) everywhere, naming the first element
/// that is not.
void expectClose(const std::vector<float> &got, const std::vector<float> &want, float tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], tol * (1.0f + std::fabs(want[i]))) << "at " << i;
}

uint32_t bitsOf(float value) { return arith::toBits(value); }

/// Values where rounding is decided: halfway cases, the ends of the ranges,
/// subnormals, infinities and NaN, then random ones over many magnitudes.
std::vector<float> roundingCases() {
  std::vector<float> v = {0.0f,
                          -0.0f,
                          1.0f,
                          -1.0f,
                          65504.0f,
                          65519.0f,
                          65520.0f,
                          -65520.0f,
                          6.1e-5f,
                          5.96e-8f,
                          2.98e-8f,
                          1e-10f,
                          3.4e38f,
                          std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::quiet_NaN(),
                          std::numeric_limits<float>::denorm_min()};
  // Exactly halfway between two bf16 values, and one ulp of f32 either side.
  for (uint32_t bits : {0x3f808000u, 0x3f818000u, 0x3f807fffu, 0x3f808001u, 0x477fe000u})
    v.push_back(arith::fromBits(bits));
  std::mt19937 gen(7);
  std::uniform_int_distribution<uint32_t> any;
  for (int i = 0; i < 20000; ++i)
    v.push_back(arith::fromBits(any(gen)));
  return v;
}

} // namespace

// -- element types ----------------------------------------------------------------

TEST(CudaArith, SixteenBitRoundingIsTheCpuDevices) {
  for (float x : roundingCases()) {
    SCOPED_TRACE(bitsOf(x));
    EXPECT_EQ(arith::floatToBf16(x), rt::floatToBf16(x));
    EXPECT_EQ(arith::floatToF16(x), rt::floatToF16(x));
  }
  for (uint32_t bits = 0; bits < 0x10000u; ++bits) {
    float bf = arith::bf16ToFloat((uint16_t)bits), half = arith::f16ToFloat((uint16_t)bits);
    float wantBf = rt::bf16ToFloat((uint16_t)bits), wantHalf = rt::f16ToFloat((uint16_t)bits);
    ASSERT_TRUE(bitsOf(bf) == bitsOf(wantBf) || (std::isnan(bf) && std::isnan(wantBf))) << bits;
    ASSERT_TRUE(bitsOf(half) == bitsOf(wantHalf) || (std::isnan(half) && std::isnan(wantHalf)))
        << bits;
  }
}

TEST(CudaArith, LoadAndStoreConvertAsTheCpuDevice) {
  std::vector<float> values = test::normalVector(257, 1, 300.0f);
  for (float &v : values)
    v = std::round(v); // int32 goes through f32: whole numbers stay exact
  for (rt::DType type : {rt::DType::F32, rt::DType::BF16, rt::DType::F16, rt::DType::I32}) {
    SCOPED_TRACE(rt::dtypeName(type));
    std::vector<uint32_t> stored(values.size()), want(values.size());
    rt::CpuDevice cpuDevice;
    cpuDevice.convert(rt::BufferView(values.data(), (int64_t)values.size()),
                      rt::BufferView(want.data(), (int64_t)values.size(), type));
    for (size_t i = 0; i < values.size(); ++i)
      arith::store(stored.data(), (arith::Type)type, (int64_t)i, values[i]);
    int64_t bytes = (int64_t)values.size() * rt::dtypeSize(type);
    EXPECT_EQ(0, std::memcmp(stored.data(), want.data(), (size_t)bytes));
    std::vector<float> back(values.size()), wantBack(values.size());
    cpuDevice.convert(rt::BufferView(want.data(), (int64_t)values.size(), type),
                      rt::BufferView(wantBack.data(), (int64_t)values.size()));
    for (size_t i = 0; i < values.size(); ++i)
      back[i] = arith::load(stored.data(), (arith::Type)type, (int64_t)i);
    EXPECT_EQ(back, wantBack);
  }
}

// -- elementwise, embedding, norms ----------------------------------------------------

TEST(CudaArith, SiluAndSwigluMatchTheCpuKernels) {
  const int64_t n = 4099;
  std::vector<float> g = test::normalVector(n, 2, 6.0f), u = test::normalVector(n, 3);
  g[0] = -100.0f; // exp(-x) overflows: silu is 0
  g[1] = 100.0f;
  std::vector<float> got(n), want(n);
  for (int64_t i = 0; i < n; ++i)
    got[i] = arith::silu(g[i]);
  cpu::silu(g.data(), n, want.data());
  expectClose(got, want, 1e-6f);
  for (int64_t i = 0; i < n; ++i)
    got[i] = arith::swiglu(g[i], u[i]);
  cpu::swiglu(g.data(), u.data(), n, want.data());
  expectClose(got, want, 1e-6f);
}

TEST(CudaArith, EmbeddingReadsTheShardsRowsOnly) {
  const int64_t T = 40, rows = 16, H = 5, offset = 16, vocab = 48;
  std::vector<float> table = test::normalVector(rows * H, 4);
  std::vector<int32_t> ids(T);
  for (int64_t t = 0; t < T; ++t)
    ids[t] = (int32_t)((t * 7) % vocab);
  std::vector<float> got(T * H), want(T * H);
  cpu::embedding(ids.data(), T, table.data(), rows, H, offset, want.data());
  for (int64_t t = 0; t < T; ++t) {
    int64_t row = arith::embeddingRow(ids[t], offset, rows);
    for (int64_t h = 0; h < H; ++h)
      got[t * H + h] = row >= 0 ? table[row * H + h] : 0.0f;
  }
  EXPECT_EQ(got, want);
  EXPECT_TRUE(arith::idInRange(47, vocab));
  EXPECT_FALSE(arith::idInRange(48, vocab));
  EXPECT_FALSE(arith::idInRange(-1, vocab));
}

TEST(CudaArith, RmsNormOfStridedPartialSumsMatchesTheCpuKernel) {
  for (int64_t H : {1, 7, 128, 1000, 4096}) {
    SCOPED_TRACE(H);
    const int64_t T = 5;
    std::vector<float> x = test::normalVector(T * H, 5), w = test::normalVector(H, 6);
    std::vector<float> got(T * H), want(T * H);
    cpu::rms_norm(x.data(), w.data(), T, H, 1e-5f, want.data());
    gpu::LaunchShape shape = gpu::rowShape(T, H);
    for (int64_t t = 0; t < T; ++t) {
      const float *row = x.data() + t * H;
      // Thread k sums elements k, k + threads, ...; the block then adds the
      // threads' sums.
      std::vector<float> partial(shape.threads, 0.0f);
      for (int k = 0; k < shape.threads; ++k)
        for (int64_t i = k; i < H; i += shape.threads)
          partial[k] += row[i] * row[i];
      float sum = 0.0f;
      for (float p : partial)
        sum += p;
      float inv = arith::inverseRms(sum, H, 1e-5f);
      for (int64_t i = 0; i < H; ++i)
        got[t * H + i] = row[i] * inv * w[i];
    }
    expectClose(got, want, 2e-6f);
  }
}

// -- RoPE -----------------------------------------------------------------------------

TEST(CudaArith, RopePairsCoverTheTensorAndRotateAsTheCpuKernel) {
  const int64_t B = 2, S = 6, NH = 3, D = 8;
  std::vector<float> x = test::normalVector(B * S * NH * D, 7);
  std::vector<int64_t> positions = {0, 5, 1000, 123457, 7, 3};
  std::vector<float> got(x.size(), std::nanf("")), want(x.size());
  cpu::rope(x.data(), positions.data(), B, S, NH, D, 10000.0f, want.data());
  std::vector<int> written(x.size(), 0);
  for (int64_t p = 0; p < B * S * NH * D / 2; ++p) {
    arith::RopePair at = arith::ropePair(p, S, NH, D);
    int64_t first = at.base + at.i, second = first + D / 2;
    ++written[first];
    ++written[second];
    arith::ropeRotate(x[first], x[second], arith::ropeAngle(positions[at.s], at.i, D, 10000.0f),
                      got[first], got[second]);
  }
  EXPECT_EQ(std::count(written.begin(), written.end(), 1), (long)x.size());
  // The same double arithmetic as the CPU's: equal, not merely close.
  EXPECT_EQ(got, want);
}

// -- attention ------------------------------------------------------------------------

namespace {

struct AttentionCase {
  int64_t B, Sq, Sk, HQ, HKV, D;
  bool causal;
  int64_t window;
  std::vector<int64_t> qPos, kPos;
};

/// The attention kernel as its threads run it: the blocks and queries of
/// attentionTiling, the keys staged a tile at a time, each query folding
/// every tile into its running softmax.
void attentionAsTheKernel(const AttentionCase &c, const std::vector<float> &q,
                          const std::vector<float> &k, const std::vector<float> &v, float scale,
                          std::vector<float> &out, std::vector<float> &lse) {
  gpu::AttentionTiling tiling;
  std::string error;
  ASSERT_TRUE(gpu::attentionTiling(c.B, c.HQ, c.Sq, c.D, tiling, error)) << error;
  std::vector<int> seen(c.B * c.HQ * c.Sq, 0);
  for (int64_t block = 0; block < tiling.shape.blocks; ++block) {
    for (int thread = 0; thread < tiling.shape.threads; ++thread) {
      arith::AttentionQuery at =
          arith::attentionQuery(block, thread, tiling.queryBlocks, c.HQ, tiling.queriesPerBlock);
      if (at.i >= c.Sq)
        continue;
      ++seen[(at.b * c.HQ + at.h) * c.Sq + at.i];
      int64_t hk = arith::kvHead(at.h, c.HQ, c.HKV);
      std::vector<float> query(c.D), acc(c.D, 0.0f);
      int64_t rowBase = ((at.b * c.Sq + at.i) * c.HQ + at.h) * c.D;
      std::copy(q.begin() + rowBase, q.begin() + rowBase + c.D, query.begin());
      arith::OnlineSoftmax state;
      for (int64_t start = 0; start < c.Sk; start += tiling.keysPerTile) {
        int n = (int)std::min<int64_t>(tiling.keysPerTile, c.Sk - start);
        std::vector<float> kTile(n * c.D), vTile(n * c.D);
        for (int64_t idx = 0; idx < n * c.D; ++idx) {
          int64_t j = idx / c.D, e = idx % c.D;
          int64_t from = ((at.b * c.Sk + start + j) * c.HKV + hk) * c.D + e;
          kTile[idx] = k[from];
          vTile[idx] = v[from];
        }
        arith::attendTile(query.data(), kTile.data(), vTile.data(), c.kPos.data() + start, n, c.D,
                          c.qPos[at.i], c.causal, c.window, scale, state, acc.data());
      }
      float inv = state.inverseSum();
      for (int64_t e = 0; e < c.D; ++e)
        out[rowBase + e] = acc[e] * inv;
      lse[(at.b * c.HQ + at.h) * c.Sq + at.i] = state.lse();
    }
  }
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), (long)seen.size())
      << "every query is taken by exactly one thread";
}

void checkAttention(const AttentionCase &c) {
  std::vector<float> q = test::normalVector(c.B * c.Sq * c.HQ * c.D, 11),
                     k = test::normalVector(c.B * c.Sk * c.HKV * c.D, 12),
                     v = test::normalVector(c.B * c.Sk * c.HKV * c.D, 13);
  float scale = 1.0f / std::sqrt((float)c.D);
  std::vector<float> out(q.size(), std::nanf("")), lse(c.B * c.HQ * c.Sq, std::nanf(""));
  std::vector<float> wantOut(q.size()), wantLse(lse.size());
  attentionAsTheKernel(c, q, k, v, scale, out, lse);
  cpu::attention(q.data(), k.data(), v.data(), c.qPos.data(), c.kPos.data(),
                 {c.B, c.Sq, c.Sk, c.HQ, c.HKV, c.D}, c.causal, scale, wantOut.data(),
                 wantLse.data(), c.window);
  expectClose(out, wantOut, 2e-5f);
  for (size_t i = 0; i < lse.size(); ++i) {
    if (std::isinf(wantLse[i]))
      EXPECT_EQ(lse[i], wantLse[i]) << "at " << i;
    else
      EXPECT_NEAR(lse[i], wantLse[i], 2e-5f * (1.0f + std::fabs(wantLse[i]))) << "at " << i;
  }
}

std::vector<int64_t> iota(int64_t n, int64_t from = 0) {
  std::vector<int64_t> v(n);
  for (int64_t i = 0; i < n; ++i)
    v[i] = from + i;
  return v;
}

} // namespace

TEST(CudaArith, CausalGqaAttentionByTilesMatchesTheCpuKernel) {
  // More keys than one tile, queries that fill one block and a part of the
  // next, two query heads per kv head.
  checkAttention({2, 100, 100, 4, 2, 16, true, 0, iota(100), iota(100)});
}

TEST(CudaArith, AttentionOfEveryHeadDimTheKernelTakes) {
  for (int64_t D : {2, 64, 96, 128, 200, 256}) {
    SCOPED_TRACE(D);
    checkAttention({1, 33, 70, 2, 1, D, true, 0, iota(33), iota(70)});
  }
}

TEST(CudaArith, AttentionAtZigzagPositionsWithoutVisibleKeys) {
  // A cp rank's zigzag chunks as queries, keys of a later chunk: the first
  // queries see no key (zero output, lse -inf), the last ones some.
  std::vector<int64_t> qPos = iota(8, 0), kPos = iota(8, 4);
  std::vector<int64_t> tail = iota(8, 56);
  qPos.insert(qPos.end(), tail.begin(), tail.end());
  checkAttention({1, 16, 8, 2, 2, 8, true, 0, qPos, kPos});
}

TEST(CudaArith, NonCausalAndWindowedAttention) {
  checkAttention({1, 40, 90, 3, 1, 8, false, 0, iota(40, 50), iota(90)});
  checkAttention({2, 48, 48, 2, 2, 8, true, 5, iota(48), iota(48)});
}

// -- cross-entropy ----------------------------------------------------------------

TEST(CudaArith, CrossEntropyTermsMatchTheCpuKernel) {
  const int64_t T = 37, V = 501;
  std::vector<float> logits = test::normalVector(T * V, 14, 4.0f);
  std::vector<int32_t> labels(T);
  for (int64_t t = 0; t < T; ++t)
    labels[t] = (int32_t)((t * 131) % V);
  double total = 0.0;
  for (int64_t t = 0; t < T; ++t) {
    const float *row = logits.data() + t * V;
    float max = *std::max_element(row, row + V);
    double sum = 0.0;
    for (int64_t j = 0; j < V; ++j)
      sum += std::exp((double)row[j] - (double)max);
    total += arith::crossEntropyTerm(max, sum, row[labels[t]]);
  }
  float want = cpu::cross_entropy(logits.data(), labels.data(), T, V);
  EXPECT_NEAR((float)(total / T), want, 1e-6f * std::fabs(want));
}

// -- GeLU, sigmoid, softplus, the gated norm --------------------------------------------

TEST(CudaArith, GeluSigmoidSoftplusAreTheCpuKernels) {
  const int64_t n = 2001;
  std::vector<float> x = test::normalVector(n, 15, 8.0f);
  x[0] = -800.0f;
  x[1] = 800.0f;
  std::vector<float> got(n), want(n);
  struct {
    double (*device)(double);
    void (*reference)(const float *, int64_t, float *);
  } ops[] = {
      {arith::gelu, cpu::gelu}, {arith::sigmoid, cpu::sigmoid}, {arith::softplus, cpu::softplus}};
  for (const auto &op : ops) {
    for (int64_t i = 0; i < n; ++i)
      got[i] = (float)op.device(x[i]);
    op.reference(x.data(), n, want.data());
    // The same double arithmetic: equal.
    EXPECT_EQ(got, want);
  }
}

TEST(CudaArith, GatedNormByGroupsMatchesTheCpuKernel) {
  const int64_t T = 6, C = 96, groups = 3, width = C / groups;
  std::vector<float> y = test::normalVector(T * C, 16), z = test::normalVector(T * C, 17),
                     w = test::normalVector(C, 18);
  std::vector<float> got(T * C), want(T * C);
  cpu::gated_rms_norm(y.data(), z.data(), w.data(), T, C, groups, 1e-5f, want.data());
  gpu::LaunchShape shape = gpu::rowShape(T * groups, width);
  for (int64_t block = 0; block < shape.blocks; ++block) {
    int64_t base = block * width, g = block % groups;
    std::vector<float> partial(shape.threads, 0.0f);
    for (int k = 0; k < shape.threads; ++k)
      for (int64_t i = k; i < width; i += shape.threads)
        partial[k] += y[base + i] * y[base + i];
    float sum = 0.0f;
    for (float p : partial)
      sum += p;
    float inv = arith::inverseRms(sum, width, 1e-5f);
    for (int64_t i = 0; i < width; ++i)
      got[base + i] = arith::gatedNorm(y[base + i], inv, w[g * width + i], z[base + i]);
  }
  expectClose(got, want, 1e-5f);
}

// -- sequences: the convolution and the scans -------------------------------------------

TEST(CudaArith, SequencesNumberChunksAsTheCpuKernels) {
  // Two batch entries of 12 rows in three chunks of four.
  std::vector<int> rows(24, 0);
  for (int64_t q = 0; q < 6; ++q) {
    arith::Sequence at = arith::sequenceAt(q, 2, 12, 3);
    int64_t b = q / 3, c = q % 3;
    EXPECT_EQ(at.firstRow, b * 12 + c * 4);
    EXPECT_EQ(at.length, 4);
    EXPECT_EQ(at.stateSlot, c * 2 + b); // forEachChunk's slot of the scans
    EXPECT_EQ(at.haloSlot, b * 3 + c);  // and of the convolution's halo
    for (int64_t t = 0; t < at.length; ++t)
      ++rows[at.firstRow + t];
  }
  EXPECT_EQ(std::count(rows.begin(), rows.end(), 1), 24);
}

TEST(CudaArith, CausalConvOfChunksWithHalosIsTheCpuKernel) {
  const int64_t B = 2, S = 12, chunks = 2, C = 5, W = 4, L = S / chunks;
  std::vector<float> x = test::normalVector(B * S * C, 19), w = test::normalVector(C * W, 20),
                     bias = test::normalVector(C, 21),
                     halo = test::normalVector(B * chunks * (W - 1) * C, 22);
  std::vector<float> got(B * S * C), want(B * S * C);
  // The CPU table's walk: chunk by chunk, halo slot b*k + c.
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < chunks; ++c) {
      int64_t rows = b * S + c * L;
      cpu::causal_conv1d(x.data() + rows * C, w.data(), bias.data(),
                         halo.data() + (b * chunks + c) * (W - 1) * C, 1, L, C, W,
                         want.data() + rows * C);
    }
  // The kernel's: one thread per output element.
  for (int64_t e = 0; e < B * S * C; ++e)
    got[e] =
        arith::convElement(x.data(), w.data(), bias.data(), halo.data(), B, S, chunks, C, W, e);
  EXPECT_EQ(got, want);
  // Without a halo the window starts at zeros.
  cpu::causal_conv1d(x.data(), w.data(), nullptr, nullptr, B, S, C, W, want.data());
  for (int64_t e = 0; e < B * S * C; ++e)
    got[e] = arith::convElement(x.data(), w.data(), nullptr, nullptr, B, S, 1, C, W, e);
  EXPECT_EQ(got, want);
}

// The recurrence in double against the CPU's chunked scan (f32 GEMMs within
// chunks of 64): 1e-4; against the CPU's own step-by-step reference: 1e-6.
TEST(CudaArith, SsdScanByLanesMatchesTheCpuScans) {
  const int64_t B = 2, S = 80, chunks = 2, L = S / chunks, NH = 4, P = 3, G = 2, N = 8;
  std::vector<float> x = test::normalVector(B * S * NH * P, 23),
                     dt = test::normalVector(B * S * NH, 24),
                     dtBias = test::normalVector(NH, 25, 0.5f),
                     aLog = test::normalVector(NH, 26, 0.5f),
                     Bm = test::normalVector(B * S * G * N, 27),
                     Cm = test::normalVector(B * S * G * N, 28), D = test::normalVector(NH, 29),
                     stateIn = test::normalVector(chunks * B * NH * P * N, 30);
  std::vector<float> y(x.size()), state(stateIn.size()), decay(chunks * B * NH);
  arith::SsdArgs args{x.data(),
                      dt.data(),
                      dtBias.data(),
                      aLog.data(),
                      Bm.data(),
                      Cm.data(),
                      D.data(),
                      stateIn.data(),
                      B,
                      S,
                      chunks,
                      NH,
                      P,
                      G,
                      N,
                      y.data(),
                      state.data(),
                      decay.data()};
  // The kernel's threads: one lane each.
  for (int64_t lane = 0; lane < B * chunks * NH * P; ++lane)
    arith::ssdLane(args, lane);
  // The CPU table's walk: the prelude, then chunk by chunk from its slot.
  std::vector<float> step(dt.size()), A(NH);
  cpu::ssd_prelude(dt.data(), dtBias.data(), aLog.data(), B * S, NH, step.data(), A.data());
  std::vector<float> wantY(y.size()), wantState(state.size()), wantDecay(decay.size());
  std::vector<float> refY(y.size()), refState(state.size()), refDecay(decay.size());
  cpu::SsdDims dims{1, L, NH, P, G, N};
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < chunks; ++c) {
      int64_t rows = b * S + c * L, slot = c * B + b;
      cpu::ssd_scan(x.data() + rows * NH * P, step.data() + rows * NH, A.data(),
                    Bm.data() + rows * G * N, Cm.data() + rows * G * N, D.data(),
                    stateIn.data() + slot * NH * P * N, dims, wantY.data() + rows * NH * P,
                    wantState.data() + slot * NH * P * N, wantDecay.data() + slot * NH);
      cpu::ssd_scan_reference(x.data() + rows * NH * P, step.data() + rows * NH, A.data(),
                              Bm.data() + rows * G * N, Cm.data() + rows * G * N, D.data(),
                              stateIn.data() + slot * NH * P * N, dims, refY.data() + rows * NH * P,
                              refState.data() + slot * NH * P * N, refDecay.data() + slot * NH);
    }
  expectClose(y, wantY, 1e-4f);
  expectClose(state, wantState, 1e-4f);
  expectClose(decay, wantDecay, 1e-4f);
  expectClose(y, refY, 1e-6f);
  expectClose(state, refState, 1e-6f);
  expectClose(decay, refDecay, 1e-6f);
}

TEST(CudaArith, RglruScanByLanesIsTheCpuKernel) {
  const int64_t B = 3, S = 20, chunks = 2, L = S / chunks, W = 7;
  std::vector<float> x = test::normalVector(B * S * W, 31), wa = test::normalVector(W, 32),
                     ba = test::normalVector(W, 33), wx = test::normalVector(W, 34),
                     bx = test::normalVector(W, 35), lambda = test::normalVector(W, 36),
                     stateIn = test::normalVector(chunks * B * W, 37);
  std::vector<float> y(x.size()), state(stateIn.size()), decay(stateIn.size());
  arith::RglruArgs args{x.data(),       wa.data(),   ba.data(), wx.data(), bx.data(), lambda.data(),
                        stateIn.data(), B,           S,         chunks,    W,         y.data(),
                        state.data(),   decay.data()};
  for (int64_t lane = 0; lane < B * chunks * W; ++lane)
    arith::rglruLane(args, lane);
  std::vector<float> gateA(x.size()), gateX(x.size());
  cpu::rglru_gates(x.data(), wa.data(), ba.data(), wx.data(), bx.data(), B * S, W, gateA.data(),
                   gateX.data());
  std::vector<float> wantY(y.size()), wantState(state.size()), wantDecay(decay.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < chunks; ++c) {
      int64_t rows = b * S + c * L, slot = c * B + b;
      cpu::rglru_scan(x.data() + rows * W, gateA.data() + rows * W, gateX.data() + rows * W,
                      lambda.data(), stateIn.data() + slot * W, 1, L, W, wantY.data() + rows * W,
                      wantState.data() + slot * W, wantDecay.data() + slot * W);
    }
  // The same double arithmetic in the same order: equal.
  EXPECT_EQ(y, wantY);
  EXPECT_EQ(state, wantState);
  EXPECT_EQ(decay, wantDecay);
}

// -- MoE ------------------------------------------------------------------------------

TEST(CudaArith, RoutingIsTheCpuRouters) {
  const int64_t T = 50, E = 8, k = 3;
  std::vector<float> logits = test::normalVector(T * E, 38, 2.0f);
  // Ties: the lower expert wins, as the CPU's order says.
  for (int64_t e = 0; e < E; ++e)
    logits[e] = 1.0f;
  logits[E + 5] = logits[E + 2] = 9.0f;
  std::vector<float> weights(T * k), wantWeights(T * k);
  std::vector<int32_t> idx(T * k), wantIdx(T * k);
  for (int64_t t = 0; t < T; ++t)
    arith::routeToken(logits.data() + t * E, E, k, weights.data() + t * k, idx.data() + t * k);
  cpu::router_topk(logits.data(), T, E, k, wantWeights.data(), wantIdx.data());
  EXPECT_EQ(idx, wantIdx);
  EXPECT_EQ(weights, wantWeights);
}

TEST(CudaArith, DispatchAndCombineAreTheCpuKernels) {
  const int64_t T = 12, H = 5, k = 2, E = 4;
  std::vector<float> x = test::normalVector(T * H, 39), weights = test::normalVector(T * k, 40);
  std::vector<int32_t> idx(T * k);
  for (int64_t t = 0; t < T; ++t) {
    idx[t * k] = (int32_t)(t % E);
    idx[t * k + 1] = (int32_t)((t + 1 + t / E) % E);
  }
  std::vector<float> slabs(E * T * H, 0.0f), wantSlabs(E * T * H, 0.0f);
  for (int64_t i = 0; i < T * k * H; ++i) {
    int64_t to = arith::dispatchTarget(idx.data(), T, H, k, E, i);
    ASSERT_GE(to, 0);
    slabs[to] = x[(i / (k * H)) * H + i % H];
  }
  cpu::moe_scatter_rows(x.data(), idx.data(), T, H, k, wantSlabs.data());
  EXPECT_EQ(slabs, wantSlabs);
  std::vector<float> y(T * H), wantY(T * H);
  for (int64_t i = 0; i < T * H; ++i)
    y[i] =
        arith::combineElement(slabs.data(), weights.data(), idx.data(), T, H, k, E, i / H, i % H);
  cpu::moe_gather_rows(slabs.data(), weights.data(), idx.data(), T, H, k, wantY.data());
  EXPECT_EQ(y, wantY);
  idx[3] = (int32_t)E;
  EXPECT_EQ(arith::dispatchTarget(idx.data(), T, H, k, E, 3 * H), -1);
}

// The backend runs each expert over its whole slab: the rows no token chose
// are zero, and SwiGLU experts map them to zero, so the dense product is the
// CPU's packed one (which skips them).
TEST(CudaArith, ExpertsOverWholeSlabsAreTheCpuPackedExperts) {
  const int64_t E = 3, R = 10, H = 6, F = 8;
  std::vector<float> slabs = test::normalVector(E * R * H, 41),
                     wGate = test::normalVector(E * H * F, 42),
                     wUp = test::normalVector(E * H * F, 43),
                     wDown = test::normalVector(E * F * H, 44);
  for (int64_t r = 0; r < E * R; r += 3)
    std::fill(slabs.begin() + r * H, slabs.begin() + (r + 1) * H, 0.0f);
  std::vector<float> want(E * R * H, 0.0f), got(E * R * H);
  cpu::moe_experts_slabs(slabs.data(), E, R, wGate.data(), wUp.data(), wDown.data(), H, F,
                         want.data());
  std::vector<float> gate(R * F), up(R * F);
  for (int64_t e = 0; e < E; ++e) {
    cpu::linear(slabs.data() + e * R * H, wGate.data() + e * H * F, R, H, F, gate.data());
    cpu::linear(slabs.data() + e * R * H, wUp.data() + e * H * F, R, H, F, up.data());
    for (int64_t i = 0; i < R * F; ++i)
      gate[i] = arith::swiglu(gate[i], up[i]);
    cpu::linear(gate.data(), wDown.data() + e * F * H, R, F, H, got.data() + e * R * H);
  }
  expectClose(got, want, 1e-5f);
  for (int64_t r = 0; r < E * R; r += 3)
    for (int64_t h = 0; h < H; ++h)
      EXPECT_EQ(got[r * H + h], 0.0f);
}

// -- launch shapes ----------------------------------------------------------------

TEST(CudaLaunch, ElementwiseShapesCoverEveryElementWithinTheGrid) {
  for (int64_t n : {1LL, 255LL, 256LL, 257LL, 1000000LL, 5000000000LL}) {
    SCOPED_TRACE(n);
    gpu::LaunchShape shape = gpu::elementwiseShape(n);
    EXPECT_EQ(shape.threads, 256);
    EXPECT_GE(shape.blocks, 1);
    EXPECT_LE(shape.blocks, 65536);
    // The grid-stride loop reaches every element: the first pass starts at
    // most one grid before the last.
    EXPECT_GE(shape.blocks * shape.threads * ((n + shape.blocks * 256 - 1) / (shape.blocks * 256)),
              n);
    if (n <= 65536LL * 256)
      EXPECT_EQ(shape.blocks, (n + 255) / 256);
  }
  EXPECT_EQ(gpu::elementwiseShape(0).blocks, 0);
}

TEST(CudaLaunch, RowShapesAreWholeWarpsNoWiderThanTheRow) {
  struct Case {
    int64_t width;
    int threads;
  } cases[] = {{1, 32}, {32, 32}, {33, 64}, {128, 128}, {129, 256}, {100000, 256}};
  for (const Case &c : cases) {
    gpu::LaunchShape shape = gpu::rowShape(9, c.width);
    EXPECT_EQ(shape.blocks, 9);
    EXPECT_EQ(shape.threads, c.threads) << c.width;
    EXPECT_EQ(shape.sharedBytes, c.threads / 32 * 4);
    EXPECT_EQ(gpu::rowShape(9, c.width, true).sharedBytes, c.threads / 32 * 8);
  }
}

TEST(CudaLaunch, AttentionTilesFitSharedMemory) {
  for (int64_t D : {1, 8, 16, 64, 65, 128, 129, 256}) {
    SCOPED_TRACE(D);
    gpu::AttentionTiling tiling;
    std::string error;
    ASSERT_TRUE(gpu::attentionTiling(2, 8, 1000, D, tiling, error)) << error;
    EXPECT_GE(tiling.maxHeadDim, D);
    EXPECT_LE(tiling.shape.sharedBytes, gpu::kDefaultSharedBytes);
    EXPECT_EQ(tiling.shape.sharedBytes, tiling.keysPerTile * (2 * D * 4 + 8));
    EXPECT_GE(tiling.keysPerTile, 1);
    EXPECT_EQ(tiling.shape.threads, tiling.queriesPerBlock);
    EXPECT_EQ(tiling.queryBlocks, (1000 + tiling.queriesPerBlock - 1) / tiling.queriesPerBlock);
    EXPECT_EQ(tiling.shape.blocks, 2 * 8 * tiling.queryBlocks);
  }
  gpu::AttentionTiling shortRows;
  std::string error;
  ASSERT_TRUE(gpu::attentionTiling(1, 1, 5, 16, shortRows, error));
  EXPECT_EQ(shortRows.queriesPerBlock, 32);
}

TEST(CudaLaunch, AttentionRefusesWhatTheKernelCannotRun) {
  gpu::AttentionTiling tiling;
  std::string error;
  EXPECT_FALSE(gpu::attentionTiling(1, 1, 16, 300, tiling, error));
  EXPECT_EQ(error, "the CUDA attention kernel takes head dims of 1 to 256, not 300");
  EXPECT_FALSE(gpu::attentionTiling(1LL << 20, 1LL << 10, 1LL << 20, 64, tiling, error));
  EXPECT_EQ(error, "attention over 1048576 x 1024 heads of 1048576 queries needs more blocks "
                   "than a CUDA grid holds");
}

// -- around the kernels' own exchanges (kernels/cuda/exchange_arith.h) -----------------

namespace {

// Ring attention's merge, one query row a thread, against the CPU's merge of
// two partial attentions, rows that saw no key in one or both included: the
// same double arithmetic, equal.
TEST(CudaExchangeArith, LseMergeByRowsIsTheCpuMerge) {
  const int64_t B = 2, Sq = 5, HQ = 3, D = 4, rows = B * Sq * HQ;
  std::vector<float> outA = test::normalVector(rows * D, 41),
                     outB = test::normalVector(rows * D, 42), lseA = test::normalVector(rows, 43),
                     lseB = test::normalVector(rows, 44);
  const float inf = std::numeric_limits<float>::infinity();
  lseA[0] = -inf;
  lseB[1] = -inf;
  lseA[2] = lseB[2] = -inf;
  std::vector<float> want(outA.size()), wantLse(rows);
  cpu::attention_merge(outA.data(), lseA.data(), outB.data(), lseB.data(), B, Sq, HQ, D,
                       want.data(), wantLse.data());
  // In place into A, as the ring merges each step into the result.
  std::vector<float> got = outA, gotLse = lseA;
  for (int64_t r = 0; r < rows; ++r)
    arith::mergeRow(got.data(), gotLse.data(), outB.data(), lseB.data(), Sq, HQ, D, r, got.data(),
                    gotLse.data());
  EXPECT_EQ(got, want);
  EXPECT_EQ(gotLse, wantLse);
  EXPECT_EQ(gotLse[2], -inf);
}

// The halo rows a chunk of local attention keeps, against the CPU's window:
// chunks at the sequence's start (all or some halo rows before position 0)
// and further on (all kept), with a halo of none.
TEST(CudaExchangeArith, HaloWindowIsTheCpusLocalWindow) {
  for (int64_t H : {0, 1, 5})
    for (int64_t start : {0, 1, 3, 5, 8, 32}) {
      cpu::detail::LocalWindow want(H, start, 4);
      arith::HaloWindow got = arith::haloWindow(H, start);
      EXPECT_EQ(got.skip, want.skip) << "H " << H << ", start " << start;
      EXPECT_EQ(got.kept, want.kept) << "H " << H << ", start " << start;
      EXPECT_EQ(start - got.kept, want.kPos.front()) << "H " << H << ", start " << start;
    }
}

// The state exchange's combination, one (chunk, entry) a thread, from
// summaries gathered in another order than the sequence's (as zigzag ranks
// hold them), against the CPU's fold over the chunks in sequence order.
TEST(CudaExchangeArith, ChunkInitialStatesAreTheCpuCombination) {
  const int64_t chunks = 4, nd = 3, bcast = 5, size = nd * bcast;
  std::vector<float> finals = test::normalVector(chunks * size, 45),
                     decays = test::normalVector(chunks * nd, 46, 0.5f);
  std::vector<float> want(chunks * size);
  cpu::scan_combine_states(decays.data(), finals.data(), nullptr, chunks, nd, bcast, want.data(),
                           nullptr);
  // Two members holding chunks {0, 3} and {1, 2}: states, then decays.
  const std::vector<std::vector<int64_t>> held = {{0, 3}, {1, 2}};
  std::vector<float> gathered;
  std::vector<int64_t> stateAt(chunks), decayAt(chunks);
  for (const std::vector<int64_t> &mine : held) {
    int64_t base = (int64_t)gathered.size();
    for (size_t j = 0; j < mine.size(); ++j) {
      stateAt[mine[j]] = base + (int64_t)j * size;
      gathered.insert(gathered.end(), finals.begin() + mine[j] * size,
                      finals.begin() + (mine[j] + 1) * size);
    }
    for (size_t j = 0; j < mine.size(); ++j) {
      decayAt[mine[j]] = (int64_t)gathered.size();
      gathered.insert(gathered.end(), decays.begin() + mine[j] * nd,
                      decays.begin() + (mine[j] + 1) * nd);
    }
  }
  std::vector<float> got(chunks * size);
  for (int64_t e = 0; e < chunks * size; ++e)
    got[e] = arith::chunkInitialState(gathered.data(), stateAt.data(), decayAt.data(), e / size,
                                      bcast, e % size);
  EXPECT_EQ(got, want);
  for (int64_t j = 0; j < size; ++j)
    EXPECT_EQ(got[j], 0.0f) << "the first chunk starts from zero";
}

// The SSD correction, one lane a thread, against the CPU table's walk (the
// prelude, then chunk by chunk with its slot's initial state).
TEST(CudaExchangeArith, SsdCorrectionByLanesIsTheCpuKernel) {
  const int64_t B = 2, S = 12, chunks = 2, L = S / chunks, NH = 4, P = 3, G = 2, N = 5;
  std::vector<float> y0 = test::normalVector(B * S * NH * P, 47),
                     dt = test::normalVector(B * S * NH, 48),
                     dtBias = test::normalVector(NH, 49, 0.5f),
                     aLog = test::normalVector(NH, 50, 0.5f),
                     Cm = test::normalVector(B * S * G * N, 51),
                     init = test::normalVector(chunks * B * NH * P * N, 52);
  std::vector<float> got(y0.size());
  arith::SsdCorrectArgs args{
      y0.data(), init.data(), Cm.data(), dt.data(), aLog.data(), dtBias.data(), B, S,
      chunks,    NH,          P,         G,         N,           got.data()};
  for (int64_t lane = 0; lane < B * chunks * NH * P; ++lane)
    arith::ssdCorrectLane(args, lane);
  std::vector<float> step(dt.size()), A(NH), want = y0;
  cpu::ssd_prelude(dt.data(), dtBias.data(), aLog.data(), B * S, NH, step.data(), A.data());
  cpu::SsdDims dims{1, L, NH, P, G, N};
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < chunks; ++c) {
      int64_t rows = b * S + c * L, slot = c * B + b;
      cpu::ssd_state_correct(Cm.data() + rows * G * N, step.data() + rows * NH, A.data(),
                             init.data() + slot * NH * P * N, dims, want.data() + rows * NH * P,
                             nullptr);
    }
  EXPECT_EQ(got, want);
  EXPECT_NE(got, y0);
}

TEST(CudaExchangeArith, RglruCorrectionByLanesIsTheCpuKernel) {
  const int64_t B = 3, S = 10, chunks = 2, L = S / chunks, W = 6;
  std::vector<float> y0 = test::normalVector(B * S * W, 53), x = test::normalVector(B * S * W, 54),
                     wa = test::normalVector(W, 55), ba = test::normalVector(W, 56),
                     lambda = test::normalVector(W, 57),
                     init = test::normalVector(chunks * B * W, 58);
  std::vector<float> got(y0.size());
  arith::RglruCorrectArgs args{y0.data(),     init.data(), x.data(), wa.data(), ba.data(),
                               lambda.data(), B,           S,        chunks,    W,
                               got.data()};
  for (int64_t lane = 0; lane < B * chunks * W; ++lane)
    arith::rglruCorrectLane(args, lane);
  std::vector<float> gateA(x.size()), want = y0;
  cpu::rglru_gates(x.data(), wa.data(), ba.data(), nullptr, nullptr, B * S, W, gateA.data(),
                   nullptr);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < chunks; ++c) {
      int64_t rows = b * S + c * L, slot = c * B + b;
      cpu::rglru_state_correct(gateA.data() + rows * W, lambda.data(), init.data() + slot * W, 1, L,
                               W, want.data() + rows * W, nullptr);
    }
  EXPECT_EQ(got, want);
  EXPECT_NE(got, y0);
}

// The vocabulary-parallel loss over three shards of a vocabulary, as the
// CUDA kernels compute it (each shard's maximum, its pieces from the
// combined maximum, each token's term from every shard's pieces), against
// the CPU's pieces and combination and against the loss over the whole
// vocabulary.
TEST(CudaExchangeArith, ShardedCrossEntropyIsTheCpuVocabularyParallelLoss) {
  const int64_t T = 6, V = 12, shards = 3, Vl = V / shards;
  std::vector<float> logits = test::normalVector(T * V, 59, 3.0f);
  std::vector<int32_t> labels = {0, 3, 4, 7, 8, 11};
  // Each shard's columns.
  std::vector<std::vector<float>> shard(shards, std::vector<float>(T * Vl));
  for (int64_t m = 0; m < shards; ++m)
    for (int64_t t = 0; t < T; ++t)
      std::copy_n(logits.begin() + t * V + m * Vl, Vl, shard[m].begin() + t * Vl);
  // The gathered maxima and the combined maximum, as the kernels take them.
  std::vector<float> maxes(shards * T), gmax(T, -std::numeric_limits<float>::infinity());
  for (int64_t m = 0; m < shards; ++m)
    cpu::xent_local_max(shard[m].data(), T, Vl, maxes.data() + m * T);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t m = 0; m < shards; ++m)
      gmax[t] = std::max(gmax[t], maxes[m * T + t]);
  std::vector<float> wantMax(T);
  std::vector<const float *> maxPointers;
  for (int64_t m = 0; m < shards; ++m)
    maxPointers.push_back(maxes.data() + m * T);
  cpu::xent_combine_max(maxPointers.data(), shards, T, wantMax.data());
  EXPECT_EQ(gmax, wantMax);
  // Each shard's pieces: sums (from the CPU's function, which the kernel's
  // double sum in another order matches to a rounding) and target logits.
  std::vector<float> pieces(shards * 2 * T);
  std::vector<const float *> piecePointers;
  for (int64_t m = 0; m < shards; ++m) {
    float *mine = pieces.data() + m * 2 * T;
    cpu::xent_local_sumexp(shard[m].data(), gmax.data(), T, Vl, mine);
    std::vector<float> want(T);
    cpu::xent_local_target(shard[m].data(), labels.data(), T, Vl, m * Vl, want.data());
    for (int64_t t = 0; t < T; ++t) {
      mine[T + t] = arith::localTarget(shard[m].data() + t * Vl, labels[t], Vl, m * Vl);
      EXPECT_EQ(mine[T + t], want[t]) << "shard " << m << ", token " << t;
    }
    piecePointers.push_back(mine);
  }
  double total = 0.0;
  for (int64_t t = 0; t < T; ++t)
    total += arith::shardedTerm(pieces.data(), shards, T, gmax[t], t);
  double want = cpu::xent_combine_total(piecePointers.data(), shards, gmax.data(), T);
  EXPECT_DOUBLE_EQ(total, want);
  float whole = cpu::cross_entropy(logits.data(), labels.data(), T, V);
  EXPECT_NEAR((float)(total / T), whole, 1e-5f * std::fabs(whole));
}

} // namespace
