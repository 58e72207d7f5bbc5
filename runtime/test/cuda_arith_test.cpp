//===- cuda_arith_test.cpp - the CUDA kernels' arithmetic on the CPU ------===//
//
// The per-element, per-row and per-tile arithmetic of the CUDA kernels
// (kernels/cuda/arith.h) and their launch shapes (kernels/cuda/launch.h),
// run on the host and checked against the CPU reference kernels. Each test
// walks the data the way the kernel's threads do (which thread takes which
// element, tile by tile), so what a GPU run adds is only the hardware.
//
//===----------------------------------------------------------------------===//

#include "comm/group.h"
#include "comm/nccl_kernels.h"
#include "core/buffer.h"
#include "device/device.h"
#include "kernel_test_util.h"
#include "kernels/cpu/internal.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cuda/arith.h"
#include "kernels/cuda/arith_grad.h"
#include "kernels/cuda/attention_tc.h"
#include "kernels/cuda/exchange_arith.h"
#include "kernels/cuda/exchange_grad_arith.h"
#include "kernels/cuda/grouped_tc.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/launch_grad.h"
#include "kernels/cuda/moe_capacity.h"
#include "kernels/cuda/moe_routed.h"
#include "kernels/cuda/ssd_arith.h"
#include "kernels/cuda/ssd_grad_arith.h"
#include "sixteen_bit_util.h"
#include "ssd_test_util.h"
#include "step_rig.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
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

// -- 16-bit storage ---------------------------------------------------------------------
//
// The memory-bound kernels over bf16 and f16 storage, walked as their
// threads walk them through arith.h's load and store helpers. Each is bit
// for bit the same walk over the widened f32 values with its results
// rounded (what the executor's widen, the f32 kernel and its narrowing
// give), and against the CPU kernel on the widened values, rounded to the
// storage type: equal where the arithmetic is the CPU's (add, mul, GeLU,
// sigmoid, softplus, RoPE, embedding), within one unit of the type where the
// f32 arithmetic is not (SiLU and SwiGLU in f32 against the CPU's double; the
// norms' f32 sums against the CPU's double ones).

namespace {

/// Each expected rounding: the f32 value and its bf16 and f16 bit patterns.
struct Rounding {
  uint32_t f32;
  uint16_t bf16, f16;
};

/// Ties to even, the ends of the ranges, subnormals, infinities and NaNs.
const Rounding kRoundings[] = {
    {0x3f800000u, 0x3f80, 0x3c00}, // 1
    {0x80000000u, 0x8000, 0x8000}, // -0
    {0x3f808000u, 0x3f80, 0x3c04}, // 1 + 2^-8: a bf16 tie, down to even
    {0x3f818000u, 0x3f82, 0x3c0c}, // 1 + 3·2^-8: a bf16 tie, up to even
    {0x3f801000u, 0x3f80, 0x3c00}, // 1 + 2^-11: an f16 tie, down to even
    {0x3f803000u, 0x3f80, 0x3c02}, // 1 + 3·2^-11: an f16 tie, up to even
    {0x477fe000u, 0x4780, 0x7bff}, // 65504, the largest f16
    {0x477fefffu, 0x4780, 0x7bff}, // just below 65520: still 65504
    {0x477ff000u, 0x4780, 0x7c00}, // 65520: f16 overflows to infinity
    {0xc77ff000u, 0xc780, 0xfc00}, // -65520
    {0x7f7fffffu, 0x7f80, 0x7c00}, // the largest f32: bf16 overflows too
    {0x33800000u, 0x3380, 0x0001}, // 2^-24, the least f16 subnormal
    {0x33000000u, 0x3300, 0x0000}, // 2^-25: a tie between 0 and 2^-24, to 0
    {0x33c00000u, 0x33c0, 0x0002}, // 3·2^-25: a tie, up to 2·2^-24
    {0x387fc000u, 0x3880, 0x03ff}, // 2^-14 - 2^-24, the largest f16 subnormal
    {0x00010000u, 0x0001, 0x0000}, // an f32 subnormal bf16 keeps
    {0x00000001u, 0x0000, 0x0000}, // the least f32 subnormal
    {0x7f800000u, 0x7f80, 0x7c00}, // infinity
    {0xff800000u, 0xff80, 0xfc00}, // -infinity
    {0x7fc00000u, 0x7fc0, 0x7e00}, // a quiet NaN
    {0x7f800001u, 0x7fc0, 0x7e00}, // a signalling NaN comes out quiet
    {0xffc00000u, 0xffc0, 0xfe00}, // a negative NaN keeps its sign
};

/// fn(i) for each of n elements in the order of elementwiseShape's
/// grid-stride loop, block by block and thread by thread; each taken once.
template <typename Fn> void forEachElement(int64_t n, Fn fn) {
  gpu::LaunchShape shape = gpu::elementwiseShape(n);
  std::vector<int> seen(n, 0);
  for (int64_t block = 0; block < shape.blocks; ++block)
    for (int thread = 0; thread < shape.threads; ++thread)
      for (int64_t i = block * shape.threads + thread; i < n; i += shape.blocks * shape.threads) {
        ++seen[i];
        fn(i);
      }
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), (long)n);
}

/// blockReduce<Sum> (reduce.cuh) of the threads' values (float or double):
/// each warp's butterfly of xor shuffles, then the warps' sums in order.
template <typename V> V blockSum(std::vector<V> v) {
  for (int offset = gpu::kWarp / 2; offset > 0; offset /= 2) {
    std::vector<V> next(v.size());
    for (size_t lane = 0; lane < v.size(); ++lane)
      next[lane] = v[lane] + v[lane ^ (size_t)offset];
    v = next;
  }
  V sum = v[0];
  for (size_t warp = 1; warp < v.size() / gpu::kWarp; ++warp)
    sum += v[warp * gpu::kWarp];
  return sum;
}

/// The sum of squares of `width` values from `at` as a block of `threads`
/// sums them: strided partial sums, then blockSum.
template <typename T> float blockSumOfSquares(const T *at, int64_t width, int threads) {
  std::vector<float> partial(threads, 0.0f);
  for (int k = 0; k < threads; ++k)
    for (int64_t i = k; i < width; i += threads) {
      float v = arith::loadElement(at, i);
      partial[k] += v * v;
    }
  return blockSum(partial);
}

// The kernels of elementwise.cu and attention.cu over storage T (and W for
// the norms' scales and the table), walked as their threads run them.

template <typename T, typename Op> std::vector<T> unaryWalk(const std::vector<T> &x, Op op) {
  std::vector<T> out(x.size());
  forEachElement((int64_t)x.size(), [&](int64_t i) {
    arith::storeElement(out.data(), i, op(arith::loadElement(x.data(), i)));
  });
  return out;
}

template <typename T, typename Op>
std::vector<T> binaryWalk(const std::vector<T> &a, const std::vector<T> &b, Op op) {
  std::vector<T> out(a.size());
  forEachElement((int64_t)a.size(), [&](int64_t i) {
    arith::storeElement(out.data(), i,
                        op(arith::loadElement(a.data(), i), arith::loadElement(b.data(), i)));
  });
  return out;
}

template <typename T, typename W>
std::vector<T> rmsNormWalk(const std::vector<T> &x, const std::vector<W> &w, int64_t rows,
                           int64_t H, float eps) {
  std::vector<T> y(x.size());
  gpu::LaunchShape shape = gpu::rowShape(rows, H);
  for (int64_t block = 0; block < shape.blocks; ++block) {
    const T *row = x.data() + block * H;
    float inv = arith::inverseRms(blockSumOfSquares(row, H, shape.threads), H, eps);
    for (int64_t i = 0; i < H; ++i)
      arith::storeElement(
          y.data() + block * H, i,
          arith::rmsNormed(arith::loadElement(row, i), inv, arith::loadElement(w.data(), i)));
  }
  return y;
}

template <typename T, typename W>
std::vector<T> gatedNormWalk(const std::vector<T> &y, const std::vector<T> &z,
                             const std::vector<W> &w, int64_t rows, int64_t C, int64_t groups,
                             float eps) {
  std::vector<T> out(y.size());
  int64_t width = C / groups;
  gpu::LaunchShape shape = gpu::rowShape(rows * groups, width);
  for (int64_t block = 0; block < shape.blocks; ++block) {
    int64_t base = block * width, g = block % groups;
    float inv =
        arith::inverseRms(blockSumOfSquares(y.data() + base, width, shape.threads), width, eps);
    for (int64_t i = 0; i < width; ++i)
      arith::storeElement(out.data(), base + i,
                          arith::gatedNorm(arith::loadElement(y.data(), base + i), inv,
                                           arith::loadElement(w.data(), g * width + i),
                                           arith::loadElement(z.data(), base + i)));
  }
  return out;
}

template <typename T>
std::vector<T> ropeWalk(const std::vector<T> &x, const std::vector<int64_t> &positions, int64_t B,
                        int64_t S, int64_t NH, int64_t D, float theta) {
  std::vector<T> out(x.size());
  forEachElement(B * S * NH * D / 2, [&](int64_t p) {
    arith::RopePair at = arith::ropePair(p, S, NH, D);
    int64_t first = at.base + at.i, second = first + D / 2;
    float out1, out2;
    arith::ropeRotate(arith::loadElement(x.data(), first), arith::loadElement(x.data(), second),
                      arith::ropeAngle(positions[at.s], at.i, D, theta), out1, out2);
    arith::storeElement(out.data(), first, out1);
    arith::storeElement(out.data(), second, out2);
  });
  return out;
}

template <typename T, typename W>
std::vector<T> embeddingWalk(const std::vector<int32_t> &ids, const std::vector<W> &table,
                             int64_t rows, int64_t H, int64_t offset) {
  std::vector<T> out(ids.size() * H);
  for (size_t t = 0; t < ids.size(); ++t) {
    int64_t row = arith::embeddingRow(ids[t], offset, rows);
    for (int64_t h = 0; h < H; ++h)
      arith::storeElement(out.data() + t * H, h,
                          row >= 0 ? arith::loadElement(table.data(), row * H + h) : 0.0f);
  }
  return out;
}

/// convKernel (sequence.cu) over x and the halo stored as T, w and the bias
/// as P: one thread per output element.
template <typename T, typename P>
std::vector<T> convWalk(const std::vector<T> &x, const std::vector<P> &w,
                        const std::vector<P> &bias, const std::vector<T> *halo, int64_t B,
                        int64_t S, int64_t chunks, int64_t C, int64_t W) {
  std::vector<T> y(x.size());
  forEachElement((int64_t)x.size(), [&](int64_t e) {
    arith::storeElement(y.data(), e,
                        arith::convElement(x.data(), w.data(), bias.data(),
                                           halo ? halo->data() : nullptr, B, S, chunks, C, W, e));
  });
  return y;
}

/// What rglruKernel (sequence.cu) writes over x stored as T, the gates'
/// parameters as P and the states and decays as S.
template <typename T, typename S> struct RglruResult {
  std::vector<T> y;
  std::vector<S> state, decay;
};

/// rglruKernel over x[B, S, W] (T), the gates (P: wa, ba, wx, bx, lambda
/// in order, W each) and state_in (S), one thread per lane.
template <typename T, typename P, typename S>
RglruResult<T, S> rglruWalk(const std::vector<T> &x, const std::vector<std::vector<P>> &gates,
                            const std::vector<S> &stateIn, int64_t B, int64_t Sq, int64_t chunks,
                            int64_t W) {
  RglruResult<T, S> r{std::vector<T>(x.size()), std::vector<S>(stateIn.size()),
                      std::vector<S>(stateIn.size())};
  arith::Type st = arith::Storage<S>::type;
  arith::RglruArgsOf<T, P> args{x.data(),
                                gates[0].data(),
                                gates[1].data(),
                                gates[2].data(),
                                gates[3].data(),
                                gates[4].data(),
                                stateIn.data(),
                                B,
                                Sq,
                                chunks,
                                W,
                                r.y.data(),
                                r.state.data(),
                                r.decay.data(),
                                st,
                                st,
                                st};
  forEachElement(B * chunks * W, [&](int64_t lane) { arith::rglruLane(args, lane); });
  return r;
}

/// Storage T's values of a normal distribution with a few large ones (f16's
/// sums and products then overflow on every path alike).
template <typename T> std::vector<T> storedNormal(int64_t n, unsigned seed, float sigma) {
  std::vector<float> v = test::normalVector(n, seed, sigma);
  v[0] = 60000.0f;
  v[1] = -60000.0f;
  v[2] = 3e-6f; // an f16 subnormal
  return test::roundedTo<T>(v);
}

} // namespace

TEST(CudaArith16, StorageRoundsAsFloat16h) {
  for (const Rounding &r : kRoundings) {
    SCOPED_TRACE(r.f32);
    float v = arith::fromBits(r.f32);
    std::vector<arith::Bf16> bf(1);
    std::vector<arith::F16> half(1);
    arith::storeElement(bf.data(), 0, v);
    arith::storeElement(half.data(), 0, v);
    EXPECT_EQ(bf[0].bits, r.bf16);
    EXPECT_EQ(half[0].bits, r.f16);
    EXPECT_EQ(bf[0].bits, rt::floatToBf16(v));
    EXPECT_EQ(half[0].bits, rt::floatToF16(v));
    std::vector<float> kept(1);
    arith::storeElement(kept.data(), 0, v);
    EXPECT_EQ(bitsOf(arith::loadElement(kept.data(), 0)), r.f32) << "f32 storage keeps the bits";
  }
  for (float x : roundingCases()) {
    SCOPED_TRACE(bitsOf(x));
    EXPECT_EQ(arith::Storage<arith::Bf16>::fromFloat(x).bits, rt::floatToBf16(x));
    EXPECT_EQ(arith::Storage<arith::F16>::fromFloat(x).bits, rt::floatToF16(x));
  }
  for (uint32_t bits = 0; bits < 0x10000u; ++bits) {
    arith::Bf16 bfBits{(uint16_t)bits};
    arith::F16 halfBits{(uint16_t)bits};
    float bf = arith::loadElement(&bfBits, 0), half = arith::loadElement(&halfBits, 0);
    float wantBf = rt::bf16ToFloat((uint16_t)bits), wantHalf = rt::f16ToFloat((uint16_t)bits);
    ASSERT_TRUE(bitsOf(bf) == bitsOf(wantBf) || (std::isnan(bf) && std::isnan(wantBf))) << bits;
    ASSERT_TRUE(bitsOf(half) == bitsOf(wantHalf) || (std::isnan(half) && std::isnan(wantHalf)))
        << bits;
  }
}

TEST(CudaArith16, WithStoragePicksTheTypesInstance) {
  auto named = [](arith::Type type) {
    return arith::withStorage(type, -1, [](auto tag) {
      return (int)arith::Storage<decltype(tag)>::type * 10 + (int)sizeof(tag);
    });
  };
  EXPECT_EQ(named(arith::Type::F32), 4);
  EXPECT_EQ(named(arith::Type::BF16), 12);
  EXPECT_EQ(named(arith::Type::F16), 22);
  EXPECT_EQ(named(arith::Type::I32), -1);
}

template <typename T> class CudaArith16Kernels : public ::testing::Test {};
TYPED_TEST_SUITE(CudaArith16Kernels, test::SixteenBitTypes);

TYPED_TEST(CudaArith16Kernels, ElementwiseIsTheWidenedKernelRounded) {
  using T = TypeParam;
  const int64_t n = 3001;
  std::vector<T> a = storedNormal<T>(n, 21, 4.0f), b = storedNormal<T>(n, 22, 2.0f);
  std::vector<float> wa = test::widened(a), wb = test::widened(b), want(n);
  struct Binary {
    float (*device)(float, float);
    void (*reference)(const float *, const float *, int64_t, float *);
    bool exact;
  } binaries[] = {{[](float x, float y) { return x + y; }, cpu::add, true},
                  {[](float x, float y) { return x * y; }, cpu::mul, true},
                  {arith::swiglu, cpu::swiglu, false}};
  for (const Binary &op : binaries) {
    op.reference(wa.data(), wb.data(), n, want.data());
    test::expectRoundedResults(binaryWalk(a, b, op.device), binaryWalk(wa, wb, op.device), want,
                               op.exact ? 0 : 1);
  }
  struct Unary {
    float (*device)(float);
    void (*reference)(const float *, int64_t, float *);
    bool exact;
  } unaries[] = {{arith::silu, cpu::silu, false},
                 {[](float x) { return (float)arith::gelu(x); }, cpu::gelu, true},
                 {[](float x) { return (float)arith::sigmoid(x); }, cpu::sigmoid, true},
                 {[](float x) { return (float)arith::softplus(x); }, cpu::softplus, true}};
  for (const Unary &op : unaries) {
    op.reference(wa.data(), n, want.data());
    test::expectRoundedResults(unaryWalk(a, op.device), unaryWalk(wa, op.device), want,
                               op.exact ? 0 : 1);
  }
}

/// The norms with a scale in f32 (an f32 weight beside 16-bit activations)
/// and in the activations' type.
template <typename T, typename W> void checkNorms() {
  SCOPED_TRACE(sizeof(W));
  for (int64_t H : {7, 96, 1000}) {
    SCOPED_TRACE(H);
    const int64_t rows = 5, groups = H % 3 == 0 ? 3 : 1;
    std::vector<T> x = test::roundedTo<T>(test::normalVector(rows * H, 23, 3.0f)),
                   z = test::roundedTo<T>(test::normalVector(rows * H, 24));
    std::vector<W> w = test::roundedTo<W>(test::normalVector(H, 25));
    std::vector<float> wx = test::widened(x), wz = test::widened(z), ww = test::widened(w),
                       want(rows * H);
    cpu::rms_norm(wx.data(), ww.data(), rows, H, 1e-5f, want.data());
    test::expectRoundedResults(rmsNormWalk(x, w, rows, H, 1e-5f),
                               rmsNormWalk(wx, ww, rows, H, 1e-5f), want, 1);
    cpu::gated_rms_norm(wx.data(), wz.data(), ww.data(), rows, H, groups, 1e-5f, want.data());
    test::expectRoundedResults(gatedNormWalk(x, z, w, rows, H, groups, 1e-5f),
                               gatedNormWalk(wx, wz, ww, rows, H, groups, 1e-5f), want, 1);
  }
}

TYPED_TEST(CudaArith16Kernels, NormsAreTheWidenedKernelRounded) {
  checkNorms<TypeParam, float>();
  checkNorms<TypeParam, TypeParam>();
}

TYPED_TEST(CudaArith16Kernels, RopeIsTheWidenedKernelRounded) {
  using T = TypeParam;
  const int64_t B = 2, S = 5, NH = 3, D = 16;
  std::vector<T> x = test::roundedTo<T>(test::normalVector(B * S * NH * D, 26, 3.0f));
  std::vector<int64_t> positions = {0, 9, 4096, 123457, 3};
  std::vector<float> wx = test::widened(x), want(x.size());
  cpu::rope(wx.data(), positions.data(), B, S, NH, D, 10000.0f, want.data());
  test::expectRoundedResults(ropeWalk(x, positions, B, S, NH, D, 10000.0f),
                             ropeWalk(wx, positions, B, S, NH, D, 10000.0f), want, 0);
}

TYPED_TEST(CudaArith16Kernels, EmbeddingRoundsTheTablesRowsOnce) {
  using T = TypeParam;
  const int64_t tokens = 30, rows = 12, H = 6, offset = 12, vocab = 36;
  std::vector<int32_t> ids(tokens);
  for (int64_t t = 0; t < tokens; ++t)
    ids[t] = (int32_t)((t * 5) % vocab);
  std::vector<float> f32Table = test::normalVector(rows * H, 27, 3.0f), want(tokens * H);
  // An f32 table rounded into 16-bit activations, and a table of their type.
  cpu::embedding(ids.data(), tokens, f32Table.data(), rows, H, offset, want.data());
  test::expectSameBits(embeddingWalk<T>(ids, f32Table, rows, H, offset), test::roundedTo<T>(want));
  std::vector<T> table = test::roundedTo<T>(f32Table);
  std::vector<float> wide = test::widened(table);
  cpu::embedding(ids.data(), tokens, wide.data(), rows, H, offset, want.data());
  test::expectRoundedResults(embeddingWalk<T>(ids, table, rows, H, offset),
                             embeddingWalk<float>(ids, wide, rows, H, offset), want, 0);
}

/// The convolution over activations stored as T with its kernel and bias
/// stored as P, with and without halos: the widened walk rounded, bit for
/// bit, and the CPU kernel (the same double sums in the same order) rounded,
/// equal.
template <typename T, typename P> void checkConv() {
  SCOPED_TRACE(sizeof(P));
  const int64_t B = 2, S = 12, chunks = 3, C = 5, W = 4;
  std::vector<T> x = storedNormal<T>(B * S * C, 41, 3.0f),
                 halo = test::roundedTo<T>(test::normalVector(B * chunks * (W - 1) * C, 42, 3.0f));
  std::vector<P> w = test::roundedTo<P>(test::normalVector(C * W, 43)),
                 bias = test::roundedTo<P>(test::normalVector(C, 44));
  std::vector<float> wx = test::widened(x), wh = test::widened(halo), ww = test::widened(w),
                     wb = test::widened(bias);
  test::expectRoundedResults(convWalk(x, w, bias, &halo, B, S, chunks, C, W),
                             convWalk(wx, ww, wb, &wh, B, S, chunks, C, W),
                             test::convOnCpu(wx, ww, wb, wh.data(), B, S, chunks, C, W), 0);
  test::expectRoundedResults(
      convWalk(x, w, bias, (const std::vector<T> *)nullptr, B, S, 1, C, W),
      convWalk(wx, ww, wb, (const std::vector<float> *)nullptr, B, S, 1, C, W),
      test::convOnCpu(wx, ww, wb, nullptr, B, S, 1, C, W), 0);
}

TYPED_TEST(CudaArith16Kernels, CausalConvIsTheWidenedKernelRounded) {
  checkConv<TypeParam, float>();
  checkConv<TypeParam, TypeParam>();
}

/// The RG-LRU scan over x stored as T, the gates as P and the states and
/// decays as S, from a state of S: the widened walk with its results rounded
/// to their types, bit for bit, and the CPU kernel on the widened values
/// (the same double arithmetic) rounded, equal.
template <typename T, typename P, typename S> void checkRglru() {
  SCOPED_TRACE(std::to_string(sizeof(P)) + " " + std::to_string(sizeof(S)));
  const int64_t B = 2, Sq = 20, chunks = 2, W = 7;
  std::vector<T> x = test::roundedTo<T>(test::normalVector(B * Sq * W, 45, 2.0f));
  std::vector<std::vector<P>> gates;
  for (unsigned k = 0; k < 5; ++k)
    gates.push_back(test::roundedTo<P>(test::normalVector(W, 46 + k)));
  std::vector<S> stateIn = test::roundedTo<S>(test::normalVector(chunks * B * W, 51));
  std::vector<std::vector<float>> wg;
  for (const std::vector<P> &g : gates)
    wg.push_back(test::widened(g));
  std::vector<float> wx = test::widened(x), ws = test::widened(stateIn);
  RglruResult<T, S> got = rglruWalk(x, gates, stateIn, B, Sq, chunks, W);
  RglruResult<float, float> wide = rglruWalk(wx, wg, ws, B, Sq, chunks, W);
  test::expectSameBits(got.y, test::roundedTo<T>(wide.y));
  auto sameAsStored = [](const std::vector<S> &got, const std::vector<float> &want) {
    if constexpr (std::is_same_v<S, float>)
      EXPECT_EQ(got, want);
    else
      test::expectSameBits(got, test::roundedTo<S>(want));
  };
  sameAsStored(got.state, wide.state);
  sameAsStored(got.decay, wide.decay);
  test::RglruOnCpu want = test::rglruOnCpu(wx, wg, ws, B, Sq, chunks, W);
  test::expectSameBits(got.y, test::roundedTo<T>(want.y));
  sameAsStored(got.state, want.state);
  sameAsStored(got.decay, want.decay);
}

TYPED_TEST(CudaArith16Kernels, RglruScanIsTheWidenedKernelRounded) {
  using T = TypeParam;
  checkRglru<T, float, float>();
  checkRglru<T, T, float>();
  checkRglru<T, T, T>();
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

// -- the chunked SSD scan ----------------------------------------------------------------

/// A warp's lanes in a warp phase of attention_tc.h on the host: each(f)
/// runs f for every lane in turn, in `reversed` order or not.
struct HostLanes {
  bool reversed = false;
  template <typename Phase> void each(const Phase &phase) {
    for (int i = 0; i < arith::kTcLanes; ++i)
      phase(reversed ? arith::kTcLanes - 1 - i : i);
  }
  void sync() {}
};

/// The block-wide phases of ssd_arith.h and attention_tc.h on the host:
/// each phase runs for every thread (eachWarp: every warp) of the block in
/// turn, in increasing or (`reversed`) decreasing order; the results must
/// not depend on which.
struct HostBlock {
  bool reversed = false;
  int threads = arith::kSsdThreads;
  template <typename Phase> void each(const Phase &phase) {
    for (int i = 0; i < threads; ++i)
      phase(reversed ? threads - 1 - i : i);
  }
  template <typename Phase> void eachWarp(const Phase &phase) {
    int warps = threads / arith::kTcLanes;
    for (int i = 0; i < warps; ++i) {
      HostLanes lanes{reversed};
      phase(reversed ? warps - 1 - i : i, lanes);
    }
  }
};

/// kernels/cuda/sequence.cu's ssd_scan on the host over `args` (its
/// scratch pointers set here): ssdLaunch's scratch for y's type (with a
/// guard after it that must stay untouched) and the four kernels in their
/// order, each thread of (a) and (c) and each block of (b) and (d) in turn.
template <typename T, typename W>
void runSsdOnHost(const test::SsdShape &c, arith::SsdArgsOf<T, W> args, bool reversed) {
  gpu::SsdLaunch launch;
  std::string error;
  ASSERT_TRUE(gpu::ssdLaunch(c.B * c.chunks, c.S / c.chunks, c.NH, c.P, c.N, launch, error))
      << error;
  const int64_t guard = 256, bytes = launch.bytesFor(arith::Storage<T>::type);
  std::vector<double> scratch((bytes + guard) / 8, -7.0);
  char *base = reinterpret_cast<char *>(scratch.data());
  args.cum = reinterpret_cast<double *>(base + launch.cumOffset);
  args.step = reinterpret_cast<float *>(base + launch.stepOffset);
  args.states = reinterpret_cast<float *>(base + launch.statesOffset);
  args.partial =
      std::is_same_v<T, float> ? nullptr : reinterpret_cast<float *>(base + launch.scratchBytes);
  auto order = [&](int64_t n, auto run) {
    for (int64_t i = 0; i < n; ++i)
      run(reversed ? n - 1 - i : i);
  };
  HostBlock block{reversed};
  auto shared = std::make_unique<arith::SsdShared>();
  order(launch.items, [&](int64_t item) { arith::ssdChunkCum(args, item); });
  order(launch.items, [&](int64_t item) { arith::ssdChunkBlock(block, args, *shared, item); });
  order(c.B * c.chunks * c.NH * c.P * c.N, [&](int64_t e) { arith::ssdCarry(args, e); });
  order(launch.items, [&](int64_t item) { arith::ssdOutputBlock(block, args, *shared, item); });
  for (int64_t i = bytes / 8; i < (int64_t)scratch.size(); ++i)
    EXPECT_EQ(scratch[i], -7.0) << "scratch written past its end at double " << i;
}

/// The f32 scan on the host.
test::SsdResult ssdOnHost(const test::SsdShape &c, const test::SsdData &in, bool reversed) {
  test::SsdResult out{std::vector<float>(in.x.size(), NAN),
                      std::vector<float>(c.chunks * c.B * c.NH * c.P * c.N, NAN),
                      std::vector<float>(c.chunks * c.B * c.NH, NAN)};
  arith::SsdArgs args{in.x.data(),
                      in.dt.data(),
                      in.dtBias.data(),
                      in.aLog.data(),
                      in.Bm.data(),
                      in.Cm.data(),
                      c.withD ? in.D.data() : nullptr,
                      c.withState ? in.stateIn.data() : nullptr,
                      c.B,
                      c.S,
                      c.chunks,
                      c.NH,
                      c.P,
                      c.G,
                      c.N,
                      out.y.data(),
                      out.state.data(),
                      out.decay.data(),
                      nullptr,
                      nullptr,
                      nullptr};
  runSsdOnHost(c, args, reversed);
  return out;
}

// The same decomposition as the CPU's (chunks of 64, every double factor
// and the decays computed alike), its f32 products and sums in another
// order: sums of 64 + N products rounded differently, at most 3e-6 of
// (1 + |value|) for N up to 65 and 1.1e-5 at N = 128, so 5e-5; the decays
// are equal. The step-by-step recurrence in double is as close (the CPU's
// chunked scan itself is 8.5e-6 from it at N = 128): 5e-5, the decays 1e-6.
TEST(CudaArith, SsdScanByChunksMatchesTheCpuScans) {
  unsigned seed = 40;
  for (const test::SsdShape &c : test::ssdShapes()) {
    SCOPED_TRACE(testing::Message()
                 << "B " << c.B << " S " << c.S << " chunks " << c.chunks << " NH " << c.NH << " P "
                 << c.P << " G " << c.G << " N " << c.N << (c.withState ? " state_in" : "")
                 << (c.withD ? " D" : ""));
    test::SsdData in = test::ssdData(c, seed += 10);
    test::SsdResult got = ssdOnHost(c, in, false);
    test::SsdOnCpu cpuRuns = test::ssdOnCpu(c, in, arith::kSsdChunk);
    const test::SsdResult &want = cpuRuns.chunked, &reference = cpuRuns.reference;
    expectClose(got.y, want.y, 5e-5f);
    expectClose(got.state, want.state, 5e-5f);
    EXPECT_EQ(got.decay, want.decay);
    expectClose(got.y, reference.y, 5e-5f);
    expectClose(got.state, reference.state, 5e-5f);
    expectClose(got.decay, reference.decay, 1e-6f);
    // No phase reads what another thread of it writes, no thread of (a) or
    // (c) and no block reads what another writes: any order gives the same
    // bits.
    test::SsdResult backwards = ssdOnHost(c, in, true);
    EXPECT_EQ(backwards.y, got.y);
    EXPECT_EQ(backwards.state, got.state);
    EXPECT_EQ(backwards.decay, got.decay);
  }
}

TEST(CudaArith, SsdScanLaunchCoversEveryItemWithinTheLimits) {
  gpu::SsdLaunch launch;
  std::string error;
  ASSERT_TRUE(gpu::ssdLaunch(6, 90, 2, 33, 65, launch, error)) << error;
  EXPECT_EQ(launch.chunks, 2);
  EXPECT_EQ(launch.items, 6 * 2 * 2);
  EXPECT_GE(launch.cum.blocks * launch.cum.threads, launch.items);
  EXPECT_EQ(launch.chunk.blocks, launch.items);
  EXPECT_EQ(launch.chunk.threads, arith::kSsdThreads);
  EXPECT_LE(launch.chunk.sharedBytes, gpu::kDefaultSharedBytes);
  EXPECT_GE(launch.carry.blocks * launch.carry.threads, 6 * 2 * 33 * 65);
  // The scratch: the log decays, the steps and the states, apart and aligned.
  EXPECT_EQ(launch.cumOffset, 0);
  EXPECT_GE(launch.stepOffset, 24 * 64 * 8);
  EXPECT_GE(launch.statesOffset, launch.stepOffset + 24 * 64 * 4);
  EXPECT_GE(launch.scratchBytes, launch.statesOffset + 24 * 33 * 65 * 4);
  EXPECT_EQ(launch.stepOffset % 256 + launch.statesOffset % 256, 0);
  // A chunk exactly full, and an empty sequence.
  ASSERT_TRUE(gpu::ssdLaunch(1, 128, 1, 1, 1, launch, error));
  EXPECT_EQ(launch.chunks, 2);
  ASSERT_TRUE(gpu::ssdLaunch(2, 0, 3, 4, 5, launch, error));
  EXPECT_EQ(launch.items, 0);
  EXPECT_GE(launch.carry.blocks * launch.carry.threads, 2 * 3 * 4 * 5);
  // The refusals.
  EXPECT_FALSE(gpu::ssdLaunch(1, 64, 1, 0, 8, launch, error));
  EXPECT_EQ(error,
            "the CUDA SSD scan takes a head dim and a state size of at least 1, not 0 and 8");
  EXPECT_FALSE(gpu::ssdLaunch(1 << 20, 1 << 16, 64, 64, 64, launch, error));
  EXPECT_EQ(error, "the CUDA SSD scan over 1048576 sequences of 65536 tokens and 64 heads needs "
                   "more blocks than a CUDA grid holds");
}

namespace {

/// Results stored as X against the f32 ones rounded to X: equal, bit for
/// bit (f32: equal).
template <typename X>
void expectRoundedFrom(const std::vector<X> &got, const std::vector<float> &f32) {
  if constexpr (std::is_same_v<X, float>)
    EXPECT_EQ(got, f32);
  else
    test::expectSameBits(got, test::roundedTo<X>(f32));
}

/// The scan over activations of T (x, dt, B, C, y), parameters of W
/// (dt_bias, a_log, D) and states and decays of S against the f32 scan on
/// the widened values, and against the CPU's.
template <typename T, typename W, typename S>
void checkSsd16(const test::SsdShape &c, unsigned seed) {
  SCOPED_TRACE(testing::Message() << "B " << c.B << " S " << c.S << " chunks " << c.chunks << " P "
                                  << c.P << " N " << c.N << " params "
                                  << (std::is_same_v<W, float> ? "f32" : "16-bit") << " states "
                                  << (std::is_same_v<S, float> ? "f32" : "16-bit"));
  test::SsdData raw = test::ssdData(c, seed);
  std::vector<T> x = test::roundedTo<T>(raw.x), dt = test::roundedTo<T>(raw.dt),
                 Bm = test::roundedTo<T>(raw.Bm), Cm = test::roundedTo<T>(raw.Cm);
  std::vector<W> dtBias = test::roundedTo<W>(raw.dtBias), aLog = test::roundedTo<W>(raw.aLog),
                 D = test::roundedTo<W>(raw.D);
  std::vector<S> stateIn = test::roundedTo<S>(raw.stateIn);
  test::SsdData wide{test::widened(x),    test::widened(dt),     test::widened(dtBias),
                     test::widened(aLog), test::widened(Bm),     test::widened(Cm),
                     test::widened(D),    test::widened(stateIn)};
  std::vector<T> y(x.size());
  std::vector<S> state(c.chunks * c.B * c.NH * c.P * c.N), decay(c.chunks * c.B * c.NH);
  const arith::Type st = arith::Storage<S>::type;
  arith::SsdArgsOf<T, W> args{x.data(),
                              dt.data(),
                              dtBias.data(),
                              aLog.data(),
                              Bm.data(),
                              Cm.data(),
                              c.withD ? D.data() : nullptr,
                              c.withState ? stateIn.data() : nullptr,
                              c.B,
                              c.S,
                              c.chunks,
                              c.NH,
                              c.P,
                              c.G,
                              c.N,
                              y.data(),
                              state.data(),
                              decay.data(),
                              nullptr,
                              nullptr,
                              nullptr,
                              st,
                              st,
                              st};
  runSsdOnHost(c, args, false);
  test::SsdResult f32 = ssdOnHost(c, wide, false);
  expectRoundedFrom(y, f32.y);
  expectRoundedFrom(state, f32.state);
  expectRoundedFrom(decay, f32.decay);
  // Against the CPU: the f32 scan's 5e-5 and T's rounding (unit roundoff
  // u: 2^-8 for bf16, 2^-11 for f16).
  const float u = std::is_same_v<T, arith::Bf16> ? 0x1p-8f : 0x1p-11f;
  std::vector<float> got = test::widened(y),
                     want = test::ssdOnCpu(c, wide, arith::kSsdChunk).chunked.y;
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], 5e-5f * (1.0f + std::fabs(want[i])) + u * std::fabs(want[i]))
        << "at " << i;
}

} // namespace

// The scan over 16-bit activations computes the f32 scan's arithmetic on
// the widened values, (b)'s share of y kept in f32 scratch, and rounds
// each result once: equal, bit for bit, to the f32 scan's on the widened
// inputs rounded, with f32 or 16-bit parameters and states; y within the
// f32 scan's 5e-5 of the CPU's chunked scan and T's rounding. The shapes of
// SsdScanByChunksMatchesTheCpuScans but the model-sized one.
TYPED_TEST(CudaArith16Kernels, SsdScanIsTheF32ScanRounded) {
  using T = TypeParam;
  std::vector<test::SsdShape> shapes = test::ssdShapes();
  shapes.pop_back();
  unsigned seed = 300;
  for (const test::SsdShape &c : shapes) {
    checkSsd16<T, float, float>(c, seed += 10);
    checkSsd16<T, T, float>(c, seed += 10);
    checkSsd16<T, T, T>(c, seed += 10);
  }
}

// -- attention on the tensor cores ---------------------------------------------------------

namespace {

/// kernels/cuda/attention.cu's attention_tc on the host: every block of
/// attentionTcTiling in turn (in `reversed` order or not) through
/// attentionTcBlock, on shared memory poisoned with NaNs.
template <typename T, typename O = T>
void attentionTcOnHost(const AttentionCase &c, const std::vector<T> &q, const std::vector<T> &k,
                       const std::vector<T> &v, float scale, bool reversed, std::vector<O> &out,
                       std::vector<float> &lse) {
  gpu::AttentionTcTiling tiling;
  std::string error;
  ASSERT_TRUE(gpu::attentionTcTiling(c.B, c.HQ, c.Sq, c.D, tiling, error)) << error;
  EXPECT_EQ(tiling.maxHeadDim, c.D <= 64 ? 64 : c.D <= 128 ? 128 : 256);
  EXPECT_EQ(tiling.shape.threads, arith::kTcThreads);
  EXPECT_LE(tiling.shape.sharedBytes, gpu::kMaxSharedBytes);
  arith::TcArgs args{q.data(),   k.data(),  v.data(), c.qPos.data(), c.kPos.data(),
                     c.B,        c.Sq,      c.Sk,     c.HQ,          c.HKV,
                     c.D,        c.causal,  scale,    c.window,      tiling.queryBlocks,
                     out.data(), lse.data()};
  HostBlock block{reversed, arith::kTcThreads};
  auto run = [&](auto shared) {
    EXPECT_EQ((int64_t)sizeof(*shared), tiling.shape.sharedBytes);
    std::memset((void *)shared.get(), 0xff, sizeof(*shared));
    constexpr int kMaxD = std::remove_reference_t<decltype(*shared)>::kLdO - 4;
    for (int64_t i = 0; i < tiling.shape.blocks; ++i)
      arith::attentionTcBlock<T, kMaxD, O>(block, args, *shared,
                                           reversed ? tiling.shape.blocks - 1 - i : i);
  };
  if (tiling.maxHeadDim == 64)
    run(std::make_unique<arith::TcShared<T, 64>>());
  else if (tiling.maxHeadDim == 128)
    run(std::make_unique<arith::TcShared<T, 128>>());
  else
    run(std::make_unique<arith::TcShared<T, 256>>());
}

/// attentionTcOnHost against the CPU kernel on the widened q, k, v: the
/// output within `tol` · (1 + |want|) (the weights P and the output are
/// rounded to T's 8 or 11 significant bits), the log-sum-exp within
/// `lseTol` · (1 + |want|) (l sums the rounded P) or -inf where no key is
/// visible; the blocks in reverse order with an f32 output (a ring's
/// partial outputs), the same values before the rounding: the same bits.
/// Returns the largest errors seen, the output's and the log-sum-exp's.
template <typename T>
std::pair<float, float> checkAttentionTc(const AttentionCase &c, float tol, float lseTol) {
  std::vector<T> q = test::roundedTo<T>(test::normalVector(c.B * c.Sq * c.HQ * c.D, 11)),
                 k = test::roundedTo<T>(test::normalVector(c.B * c.Sk * c.HKV * c.D, 12)),
                 v = test::roundedTo<T>(test::normalVector(c.B * c.Sk * c.HKV * c.D, 13));
  float scale = 1.0f / std::sqrt((float)c.D);
  std::vector<T> out = test::roundedTo<T>(std::vector<float>(q.size(), std::nanf("")));
  std::vector<float> lse(c.B * c.HQ * c.Sq, std::nanf(""));
  attentionTcOnHost(c, q, k, v, scale, false, out, lse);
  std::vector<float> want(q.size()), wantLse(lse.size());
  std::vector<float> wq = test::widened(q), wk = test::widened(k), wv = test::widened(v);
  cpu::attention(wq.data(), wk.data(), wv.data(), c.qPos.data(), c.kPos.data(),
                 {c.B, c.Sq, c.Sk, c.HQ, c.HKV, c.D}, c.causal, scale, want.data(), wantLse.data(),
                 c.window);
  std::vector<float> got = test::widened(out);
  float worst = 0.0f;
  for (size_t i = 0; i < got.size(); ++i) {
    float err = std::fabs(got[i] - want[i]) / (1.0f + std::fabs(want[i]));
    worst = std::isnan(err) ? INFINITY : std::max(worst, err);
  }
  EXPECT_LE(worst, tol);
  float worstLse = 0.0f;
  for (size_t i = 0; i < lse.size(); ++i) {
    if (std::isinf(wantLse[i])) {
      EXPECT_EQ(lse[i], wantLse[i]) << "at " << i;
      continue;
    }
    float err = std::fabs(lse[i] - wantLse[i]) / (1.0f + std::fabs(wantLse[i]));
    worstLse = std::isnan(err) ? INFINITY : std::max(worstLse, err);
  }
  EXPECT_LE(worstLse, lseTol);
  std::vector<float> backwardsOut(q.size(), std::nanf("")), backwardsLse(lse.size(), 0.0f);
  attentionTcOnHost(c, q, k, v, scale, true, backwardsOut, backwardsLse);
  test::expectSameBits(test::roundedTo<T>(backwardsOut), out);
  EXPECT_EQ(std::memcmp(backwardsLse.data(), lse.data(), lse.size() * sizeof(float)), 0);
  return {worst, worstLse};
}

} // namespace

TYPED_TEST(CudaArith16Kernels, TensorCoreAttentionMatchesTheCpuKernel) {
  using T = TypeParam;
  auto check = [](const AttentionCase &c) {
    SCOPED_TRACE(testing::Message()
                 << "B " << c.B << " Sq " << c.Sq << " Sk " << c.Sk << " HQ " << c.HQ << " HKV "
                 << c.HKV << " D " << c.D << (c.causal ? " causal" : "") << " window " << c.window);
    auto [worst, worstLse] =
        checkAttentionTc<T>(c, test::tcTolerance<T>(), test::tcLseTolerance<T>());
    std::printf("  largest error: output %.3g, log-sum-exp %.3g\n", worst, worstLse);
  };
  // Causal GQA, queries and keys that fill one block and tile and part of
  // the next.
  check({2, 100, 100, 4, 2, 64, true, 0, iota(100), iota(100)});
  // Every head-dim layout: padded to whole fragments, up to 256.
  for (int64_t D : {8, 40, 96, 128, 200, 256})
    check({1, 70, 130, 2, 1, D, true, 0, iota(70, 60), iota(130)});
  // A cp rank's zigzag chunks: the first queries see no key at all.
  std::vector<int64_t> qPos = iota(40, 0), tail = iota(40, 200);
  qPos.insert(qPos.end(), tail.begin(), tail.end());
  check({1, 80, 100, 2, 2, 32, true, 0, qPos, iota(100, 20)});
  // The causal edge on a tile's first key: the last query (63) sees the
  // first key (63) alone.
  check({1, 64, 128, 1, 1, 16, true, 0, iota(64), iota(128, 63)});
  // Not causal, and a window that hides whole tiles.
  check({1, 40, 90, 3, 1, 16, false, 0, iota(40, 50), iota(90)});
  check({2, 150, 150, 2, 2, 32, true, 20, iota(150), iota(150)});
  // A window of two: the second block's first query (64) sees the first
  // tile's last key (63) and its own alone, so that tile is not skipped.
  check({1, 150, 150, 1, 1, 16, true, 2, iota(150), iota(150)});
}

// Ring attention of a 16-bit plan as exchange.cpp runs it: each member's
// K, V block through the tensor-core kernel with f32 outputs, own block
// first, the others merged by the log-sum-exps (mergeRow), the result
// rounded once; against the CPU's attention over every key, within the
// tensor-core kernel's tolerances. Rank 0 of cp 2 in zigzag order over 160
// tokens: its queries in chunks 0 and 3, the other member's keys in chunks
// 1 and 2, so chunk 0's queries see none of them.
TYPED_TEST(CudaArith16Kernels, RingOfTensorCoreBlocksMatchesTheCpuAttention) {
  using T = TypeParam;
  const int64_t B = 2, HQ = 4, HKV = 2, D = 32, S = 80;
  std::vector<int64_t> own = iota(40, 0), tail = iota(40, 120), other = iota(80, 40);
  own.insert(own.end(), tail.begin(), tail.end());
  const std::vector<std::vector<int64_t>> memberPositions = {own, other};
  std::vector<T> q = test::roundedTo<T>(test::normalVector(B * S * HQ * D, 51));
  std::vector<std::vector<T>> k, v;
  for (unsigned m = 0; m < 2; ++m) {
    k.push_back(test::roundedTo<T>(test::normalVector(B * S * HKV * D, 52 + 2 * m)));
    v.push_back(test::roundedTo<T>(test::normalVector(B * S * HKV * D, 53 + 2 * m)));
  }
  const float scale = 1.0f / std::sqrt((float)D);
  const int64_t rows = B * S * HQ;
  std::vector<float> result(rows * D), lse(B * HQ * S), part(rows * D), partLse(B * HQ * S);
  for (int64_t m = 0; m < 2; ++m) {
    AttentionCase c{B, S, S, HQ, HKV, D, true, 0, own, memberPositions[m]};
    attentionTcOnHost<T, float>(c, q, k[m], v[m], scale, false, m == 0 ? result : part,
                                m == 0 ? lse : partLse);
    if (m > 0)
      for (int64_t r = 0; r < rows; ++r)
        arith::mergeRow(result.data(), lse.data(), part.data(), partLse.data(), S, HQ, D, r,
                        result.data(), lse.data());
  }
  std::vector<float> got = test::widened(test::roundedTo<T>(result));
  // The CPU over all 160 keys, each batch entry's two members' rows in turn.
  std::vector<float> wq = test::widened(q), wk, wv;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t m = 0; m < 2; ++m) {
      std::vector<float> km = test::widened(k[m]), vm = test::widened(v[m]);
      wk.insert(wk.end(), km.begin() + b * S * HKV * D, km.begin() + (b + 1) * S * HKV * D);
      wv.insert(wv.end(), vm.begin() + b * S * HKV * D, vm.begin() + (b + 1) * S * HKV * D);
    }
  std::vector<int64_t> keys = own;
  keys.insert(keys.end(), other.begin(), other.end());
  std::vector<float> want(rows * D), wantLse(B * HQ * S);
  cpu::attention(wq.data(), wk.data(), wv.data(), own.data(), keys.data(),
                 {B, S, 2 * S, HQ, HKV, D}, true, scale, want.data(), wantLse.data(), 0);
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], test::tcTolerance<T>() * (1.0f + std::fabs(want[i])))
        << "at " << i;
  for (size_t i = 0; i < lse.size(); ++i)
    ASSERT_NEAR(lse[i], wantLse[i], test::tcLseTolerance<T>() * (1.0f + std::fabs(wantLse[i])))
        << "at " << i;
}

TEST(CudaArith, TensorCoreAttentionTilingAndItsRefusals) {
  gpu::AttentionTcTiling tiling;
  std::string error;
  ASSERT_TRUE(gpu::attentionTcTiling(2, 3, 130, 64, tiling, error)) << error;
  EXPECT_EQ(tiling.queryBlocks, 3);
  EXPECT_EQ(tiling.shape.blocks, 2 * 3 * 3);
  EXPECT_EQ(tiling.maxHeadDim, 64);
  EXPECT_GT(tiling.shape.sharedBytes, gpu::kDefaultSharedBytes) << "the kernel opts in";
  // Occupancy by shared memory: 3 blocks (12 warps) an SM up to head dim
  // 64, 2 up to 128.
  EXPECT_EQ(gpu::blocksPerSmByShared(tiling.shape.sharedBytes), 3);
  ASSERT_TRUE(gpu::attentionTcTiling(1, 1, 64, 65, tiling, error)) << error;
  EXPECT_EQ(tiling.queryBlocks, 1);
  EXPECT_EQ(tiling.maxHeadDim, 128);
  EXPECT_LE(tiling.shape.sharedBytes, gpu::kMaxSharedBytes);
  EXPECT_EQ(gpu::blocksPerSmByShared(tiling.shape.sharedBytes), 2);
  EXPECT_EQ(arith::tcPaddedDim(65), 80);
  EXPECT_EQ(arith::tcPaddedDim(16), 16);
  // Head dims above 128 (Gemma's 256): one block an SM, within what a block
  // of compute capability 9.0 may opt in to; a GPU that allows less keeps
  // such attention in f32 (keepsAttention), which attentionTcSharedBytes
  // tells it.
  ASSERT_TRUE(gpu::attentionTcTiling(1, 2, 64, 129, tiling, error)) << error;
  EXPECT_EQ(tiling.maxHeadDim, 256);
  EXPECT_EQ(tiling.shape.sharedBytes, (int64_t)sizeof(arith::TcShared<arith::F16, 256>));
  EXPECT_EQ(tiling.shape.sharedBytes, gpu::attentionTcSharedBytes(256));
  EXPECT_EQ(tiling.shape.sharedBytes, 197248) << "192.6 KiB";
  EXPECT_LE(tiling.shape.sharedBytes, gpu::kMaxSharedBytes);
  EXPECT_EQ(gpu::blocksPerSmByShared(tiling.shape.sharedBytes), 1);
  EXPECT_EQ(gpu::attentionTcSharedBytes(128), gpu::attentionTcSharedBytes(65));
  // Compute capability 12.0 lets a block opt in to 99 KiB: the tensor cores
  // there take head dims up to 64.
  EXPECT_LE(gpu::attentionTcSharedBytes(64), 99 * 1024);
  EXPECT_GT(gpu::attentionTcSharedBytes(65), 99 * 1024);
  EXPECT_EQ(gpu::attentionTcMaxHeadDim(64), 64);
  EXPECT_EQ(gpu::attentionTcMaxHeadDim(65), 128);
  EXPECT_EQ(gpu::attentionTcMaxHeadDim(256), 256);
  EXPECT_EQ(gpu::attentionTcMaxHeadDim(257), 0);
  EXPECT_EQ(gpu::attentionTcSharedBytes(257), 0);
  EXPECT_EQ(gpu::attentionTcSharedBytes(0), 0);
  // What the CUDA backend keeps on the tensor cores (keepsAttention), by the
  // device's opt-in limit: 227 KiB (9.0, 10.0) every head dim to 256, 99 KiB
  // (12.0) up to 64, and nothing above 256 anywhere.
  for (int64_t D : {1, 64, 65, 128, 129, 256})
    EXPECT_TRUE(gpu::attentionOnTensorCores(D, 227 * 1024)) << D;
  EXPECT_FALSE(gpu::attentionOnTensorCores(257, 227 * 1024));
  EXPECT_TRUE(gpu::attentionOnTensorCores(64, 99 * 1024));
  EXPECT_FALSE(gpu::attentionOnTensorCores(65, 99 * 1024));
  EXPECT_FALSE(gpu::attentionOnTensorCores(256, 99 * 1024));
  EXPECT_TRUE(gpu::attentionOnTensorCores(256, gpu::attentionTcSharedBytes(256)));
  EXPECT_FALSE(gpu::attentionOnTensorCores(256, gpu::attentionTcSharedBytes(256) - 1));
  EXPECT_FALSE(gpu::attentionTcTiling(1, 1, 64, 257, tiling, error));
  EXPECT_EQ(error, "the CUDA tensor-core attention takes head dims of 1 to 256, not 257");
  EXPECT_FALSE(gpu::attentionTcTiling(1, 1, 64, 0, tiling, error));
  EXPECT_FALSE(gpu::attentionTcTiling(1 << 20, 64, 1 << 16, 64, tiling, error));
  EXPECT_EQ(error, "attention over 1048576 x 64 heads of 65536 queries needs more blocks than a "
                   "CUDA grid holds");
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

/// Each of `shards` equal vocabulary shards' columns of logits [T, V].
template <typename E>
std::vector<std::vector<E>> vocabularyShards(const std::vector<E> &logits, int64_t T, int64_t V,
                                             int64_t shards) {
  int64_t Vl = V / shards;
  std::vector<std::vector<E>> shard(shards, std::vector<E>(T * Vl));
  for (int64_t m = 0; m < shards; ++m)
    for (int64_t t = 0; t < T; ++t)
      std::copy_n(logits.begin() + t * V + m * Vl, Vl, shard[m].begin() + t * Vl);
  return shard;
}

// A 16-bit reduce-scatter's last half (sum_pieces: arith::orderedSum over
// the pieces three members sent, landed in group order, rounded once as it
// is stored): the bits the host collectives' sum gives over the same 16-bit
// buffers (sumTerms, which thread and MPI ranks run), and the bits of the
// CPU executor's path (the f32 reduce-scatter of the widened values,
// rounded at the step's end); over f32 the host's f32 sum, in its order.
TYPED_TEST(CudaArith16Kernels, ReduceScatterSumIsTheHostCollectivesSum) {
  using T = TypeParam;
  const int64_t g = 3, n = 257;
  std::vector<float> values = test::summandPieces(g, n, 71);
  std::vector<T> pieces = test::roundedTo<T>(values);
  auto sumOf = [&](const auto &landed) {
    using E = std::decay_t<decltype(landed[0])>;
    std::vector<E> out(n);
    for (int64_t k = 0; k < n; ++k)
      arith::storeElement(out.data(), k, arith::orderedSum(landed.data(), g, n, k));
    return out;
  };
  std::vector<T> got = sumOf(pieces);
  test::expectSameBits(got, test::hostSumOfPieces(pieces, g, n));
  test::expectSameBits(got, test::roundedTo<T>(test::hostSumOfPieces(test::widened(pieces), g, n)));
  // Over f32 values, where the order of the sum shows in the bits: the
  // host's sum, and not the sum with member 2's pieces first.
  std::vector<float> sum = test::hostSumOfPieces(values, g, n), reversed(values.size());
  EXPECT_EQ(sumOf(values), sum);
  for (int64_t j = 0; j < g; ++j)
    std::copy_n(values.begin() + (g - 1 - j) * n, n, reversed.begin() + j * n);
  EXPECT_NE(sumOf(reversed), sum);
}

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
  // Summaries gathered in bf16 (a bf16 plan's, as stored) fold as their
  // widened values: the CPU's combination of those, equal.
  std::vector<arith::Bf16> narrow = test::roundedTo<arith::Bf16>(gathered);
  std::vector<float> wide = test::widened(narrow), wantNarrow(chunks * size);
  std::vector<float> wideFinals(chunks * size), wideDecays(chunks * nd);
  for (int64_t c = 0; c < chunks; ++c) {
    std::copy_n(wide.begin() + stateAt[c], size, wideFinals.begin() + c * size);
    std::copy_n(wide.begin() + decayAt[c], nd, wideDecays.begin() + c * nd);
  }
  cpu::scan_combine_states(wideDecays.data(), wideFinals.data(), nullptr, chunks, nd, bcast,
                           wantNarrow.data(), nullptr);
  for (int64_t e = 0; e < chunks * size; ++e)
    got[e] = arith::chunkInitialState(narrow.data(), stateAt.data(), decayAt.data(), e / size,
                                      bcast, e % size);
  EXPECT_EQ(got, wantNarrow);
  EXPECT_NE(got, want);
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

namespace {

/// The corrections over y0, the activations and y of T, the parameters of W
/// and init of S, against the f32 lanes on the widened values, rounded:
/// equal, bit for bit.
template <typename T, typename W, typename S> void checkCorrections16() {
  using test::roundedTo;
  using test::widened;
  {
    const int64_t B = 2, Sq = 12, chunks = 2, NH = 4, P = 3, G = 2, N = 5;
    std::vector<T> y0 = roundedTo<T>(test::normalVector(B * Sq * NH * P, 147)),
                   dt = roundedTo<T>(test::normalVector(B * Sq * NH, 148)),
                   Cm = roundedTo<T>(test::normalVector(B * Sq * G * N, 151));
    std::vector<W> dtBias = roundedTo<W>(test::normalVector(NH, 149, 0.5f)),
                   aLog = roundedTo<W>(test::normalVector(NH, 150, 0.5f));
    std::vector<S> init = roundedTo<S>(test::normalVector(chunks * B * NH * P * N, 152));
    std::vector<T> got(y0.size());
    arith::SsdCorrectArgsOf<T, W> args{y0.data(), init.data(), Cm.data(),
                                       dt.data(), aLog.data(), dtBias.data(),
                                       B,         Sq,          chunks,
                                       NH,        P,           G,
                                       N,         got.data(),  arith::Storage<S>::type};
    std::vector<float> wy0 = widened(y0), winit = widened(init), wCm = widened(Cm),
                       wdt = widened(dt), waLog = widened(aLog), wdtBias = widened(dtBias),
                       want(y0.size());
    arith::SsdCorrectArgs wide{wy0.data(),
                               winit.data(),
                               wCm.data(),
                               wdt.data(),
                               waLog.data(),
                               wdtBias.data(),
                               B,
                               Sq,
                               chunks,
                               NH,
                               P,
                               G,
                               N,
                               want.data()};
    for (int64_t lane = 0; lane < B * chunks * NH * P; ++lane) {
      arith::ssdCorrectLane(args, lane);
      arith::ssdCorrectLane(wide, lane);
    }
    expectRoundedFrom(got, want);
  }
  {
    const int64_t B = 3, Sq = 10, chunks = 2, Wd = 6;
    std::vector<T> y0 = roundedTo<T>(test::normalVector(B * Sq * Wd, 153)),
                   x = roundedTo<T>(test::normalVector(B * Sq * Wd, 154));
    std::vector<W> wa = roundedTo<W>(test::normalVector(Wd, 155)),
                   ba = roundedTo<W>(test::normalVector(Wd, 156)),
                   lambda = roundedTo<W>(test::normalVector(Wd, 157));
    std::vector<S> init = roundedTo<S>(test::normalVector(chunks * B * Wd, 158));
    std::vector<T> got(y0.size());
    arith::RglruCorrectArgsOf<T, W> args{
        y0.data(), init.data(), x.data(), wa.data(), ba.data(),  lambda.data(),
        B,         Sq,          chunks,   Wd,        got.data(), arith::Storage<S>::type};
    std::vector<float> wy0 = widened(y0), winit = widened(init), wx = widened(x), wwa = widened(wa),
                       wba = widened(ba), wlambda = widened(lambda), want(y0.size());
    arith::RglruCorrectArgs wide{
        wy0.data(), winit.data(), wx.data(), wwa.data(), wba.data(), wlambda.data(),
        B,          Sq,           chunks,    Wd,         want.data()};
    for (int64_t lane = 0; lane < B * chunks * Wd; ++lane) {
      arith::rglruCorrectLane(args, lane);
      arith::rglruCorrectLane(wide, lane);
    }
    expectRoundedFrom(got, want);
  }
}

} // namespace

// The corrections over 16-bit activations read every value widened and
// round y once: the f32 lanes' results on the widened values, rounded, bit
// for bit, with f32 or 16-bit parameters and initial states.
TYPED_TEST(CudaArith16Kernels, CorrectionsAreTheF32LanesRounded) {
  using T = TypeParam;
  checkCorrections16<T, float, float>();
  checkCorrections16<T, T, float>();
  checkCorrections16<T, T, T>();
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
  std::vector<std::vector<float>> shard = vocabularyShards(logits, T, V, shards);
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

// -- the loss over 16-bit logits ---------------------------------------------------------

namespace {

/// A row's maximum and sum of exp(logit - max) in double as a block of
/// `threads` takes them (reduce.cuh, rowMaxSumExp): strided per thread, then
/// blockReduce.
template <typename T>
void rowMaxSumExpWalk(const T *row, int64_t V, int threads, float &max, double &sum) {
  std::vector<float> maxes(threads, -std::numeric_limits<float>::infinity());
  for (int k = 0; k < threads; ++k)
    for (int64_t j = k; j < V; j += threads)
      maxes[k] = std::fmax(maxes[k], arith::loadElement(row, j));
  max = *std::max_element(maxes.begin(), maxes.end());
  std::vector<double> sums(threads, 0.0);
  for (int k = 0; k < threads; ++k)
    for (int64_t j = k; j < V; j += threads)
      sums[k] += std::exp((double)arith::loadElement(row, j) - (double)max);
  sum = blockSum(sums);
}

/// The terms' mean over `tokens` by one block (blockMeanLoss), stored as L.
template <typename L> L meanLossWalk(const std::vector<double> &terms, double tokens) {
  int threads = gpu::rowShape(1, (int64_t)terms.size(), true).threads;
  std::vector<double> sums(threads, 0.0);
  for (int k = 0; k < threads; ++k)
    for (size_t t = k; t < terms.size(); t += threads)
      sums[k] += terms[t];
  double sum = blockSum(sums);
  L loss;
  arith::storeElement(&loss, 0, tokens > 0 ? (float)(sum / tokens) : 0.0f);
  return loss;
}

/// cross_entropy's kernels (loss.cu) over logits stored as T into a loss
/// stored as L: a block of rowShape's threads a token, then the mean.
template <typename L, typename T>
L crossEntropyWalk(const std::vector<T> &logits, const std::vector<int32_t> &labels, int64_t V) {
  int64_t T_ = (int64_t)labels.size();
  int threads = gpu::rowShape(T_, V, true).threads;
  std::vector<double> terms(T_);
  for (int64_t t = 0; t < T_; ++t) {
    const T *row = logits.data() + t * V;
    float max;
    double sum;
    rowMaxSumExpWalk(row, V, threads, max, sum);
    terms[t] = arith::crossEntropyTerm(max, sum, arith::loadElement(row, labels[t]));
  }
  return meanLossWalk<L>(terms, (double)T_);
}

/// The vocabulary-parallel kernels (exchange.cu: xent_local_max,
/// xent_local_pieces, xent_sharded_loss) over each shard's logits stored as
/// T into a loss stored as L; the gathers are the shards in group order.
template <typename L, typename T>
L shardedCrossEntropyWalk(const std::vector<std::vector<T>> &shard,
                          const std::vector<int32_t> &labels, int64_t Vl) {
  int64_t T_ = (int64_t)labels.size(), shards = (int64_t)shard.size();
  int threads = gpu::rowShape(T_, Vl, true).threads;
  std::vector<float> gmax(T_, -std::numeric_limits<float>::infinity());
  for (int64_t m = 0; m < shards; ++m)
    for (int64_t t = 0; t < T_; ++t) {
      float max;
      double sum;
      rowMaxSumExpWalk(shard[m].data() + t * Vl, Vl, threads, max, sum);
      gmax[t] = std::fmax(gmax[t], max);
    }
  std::vector<float> pieces(shards * 2 * T_);
  for (int64_t m = 0; m < shards; ++m)
    for (int64_t t = 0; t < T_; ++t) {
      const T *row = shard[m].data() + t * Vl;
      std::vector<double> sums(threads, 0.0);
      for (int k = 0; k < threads; ++k)
        for (int64_t j = k; j < Vl; j += threads)
          sums[k] += std::exp((double)arith::loadElement(row, j) - (double)gmax[t]);
      pieces[m * 2 * T_ + t] = (float)blockSum(sums);
      pieces[m * 2 * T_ + T_ + t] = arith::localTarget(row, labels[t], Vl, m * Vl);
    }
  std::vector<double> terms(T_);
  for (int64_t t = 0; t < T_; ++t)
    terms[t] = arith::shardedTerm(pieces.data(), shards, T_, gmax[t], t);
  return meanLossWalk<L>(terms, (double)T_);
}

} // namespace

/// The loss over logits stored as T, whole and over three vocabulary shards:
/// the widened walk rounded (a loss stored as T) or kept (an f32 loss), bit
/// for bit, and the CPU's loss on the widened logits, within one unit of T
/// rounded, or within the f32 tests' 1e-6 (whole) and 1e-5 (sharded) of it.
TYPED_TEST(CudaArith16Kernels, CrossEntropyReadsTheLogitsAsStored) {
  using T = TypeParam;
  const int64_t tokens = 37, V = 501, shards = 3, Vl = V / shards;
  test::LossCase<T> c = test::lossCase<T>(tokens, V, 61, 4.0f, 131);
  const std::vector<T> &logits = c.logits;
  const std::vector<int32_t> &labels = c.labels;
  const std::vector<float> &wide = c.wide;
  float cpuLoss = c.cpuLoss;
  std::vector<std::vector<T>> shard = vocabularyShards(logits, tokens, V, shards);
  std::vector<std::vector<float>> wideShard = vocabularyShards(wide, tokens, V, shards);
  struct Walked {
    const char *what;
    T stored;
    float f32, widened;
    float tolerance;
  } walks[] = {{"whole", crossEntropyWalk<T>(logits, labels, V),
                crossEntropyWalk<float>(logits, labels, V),
                crossEntropyWalk<float>(wide, labels, V), 1e-6f},
               {"sharded", shardedCrossEntropyWalk<T>(shard, labels, Vl),
                shardedCrossEntropyWalk<float>(shard, labels, Vl),
                shardedCrossEntropyWalk<float>(wideShard, labels, Vl), 1e-5f}};
  for (const Walked &w : walks) {
    SCOPED_TRACE(w.what);
    EXPECT_EQ(w.f32, w.widened);
    test::expectSameBits(std::vector<T>{w.stored}, test::roundedTo<T>({w.widened}));
    EXPECT_NEAR(w.f32, cpuLoss, w.tolerance * std::fabs(cpuLoss));
    test::expectWithinUnits(std::vector<T>{w.stored}, test::roundedTo<T>({cpuLoss}), 1);
  }
}

// -- backward kernels and AdamW (kernels/cuda/arith_grad.h, launch_grad.h) -------------------

namespace {

/// |got - want| <= tol * (1 + max |want|) everywhere: gradients that cancel
/// to near zero are compared at the scale of the largest one.
void expectCloseToScale(const std::vector<float> &got, const std::vector<float> &want, float tol) {
  ASSERT_EQ(got.size(), want.size());
  float scale = 0.0f;
  for (float w : want)
    scale = std::max(scale, std::fabs(w));
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], tol * (1.0f + scale)) << "at " << i;
}

/// A sum of `count` values the way a kernel of `threads` threads takes
/// them: thread k adds values k, k + threads, ... in double, then the
/// threads' sums are added.
template <typename F> double stridedSum(int64_t count, int threads, F value) {
  std::vector<double> partial(threads, 0.0);
  for (int k = 0; k < threads; ++k)
    for (int64_t i = k; i < count; i += threads)
      partial[k] += value(i);
  double sum = 0.0;
  for (double p : partial)
    sum += p;
  return sum;
}

} // namespace

// The derivatives are the CPU's double expressions: equal, not merely close.
TEST(CudaArithGrad, ElementwiseGradientsAreTheCpuKernels) {
  const int64_t n = 4001;
  std::vector<float> x = test::normalVector(n, 21, 4.0f), u = test::normalVector(n, 22),
                     dy = test::normalVector(n, 23);
  x[0] = 60.0f;
  x[1] = -60.0f;
  std::vector<float> got(n), want(n), got2(n), want2(n);
  auto check = [&](void (*cpuGrad)(const float *, const float *, int64_t, float *),
                   double (*derivative)(double), const char *what) {
    SCOPED_TRACE(what);
    cpuGrad(x.data(), dy.data(), n, want.data());
    for (int64_t i = 0; i < n; ++i)
      got[i] = (float)((double)dy[i] * derivative((double)x[i]));
    EXPECT_EQ(got, want);
  };
  check(cpu::silu_grad, arith::siluDerivative, "silu");
  check(cpu::gelu_grad, arith::geluDerivative, "gelu");
  check(cpu::sigmoid_grad, arith::sigmoidDerivative, "sigmoid");
  check(cpu::softplus_grad, arith::softplusDerivative, "softplus");
  cpu::swiglu_grad(x.data(), u.data(), dy.data(), n, want.data(), want2.data());
  for (int64_t i = 0; i < n; ++i)
    arith::swigluGrad(x[i], u[i], dy[i], got[i], got2[i]);
  EXPECT_EQ(got, want);
  EXPECT_EQ(got2, want2);
}

// The row's sums in double across the block's threads, against the CPU's
// sequential double sums: 1e-6.
TEST(CudaArithGrad, RmsNormBackwardByStridedSumsMatchesTheCpuKernels) {
  for (int64_t H : {1, 7, 128, 1000}) {
    SCOPED_TRACE(H);
    const int64_t T = 6;
    const float eps = 1e-5f;
    std::vector<float> x = test::normalVector(T * H, 24), w = test::normalVector(H, 25),
                       dy = test::normalVector(T * H, 26);
    std::vector<float> dx(T * H), wantDx(T * H), dw(H), wantDw(H);
    cpu::rms_norm_grad(x.data(), w.data(), dy.data(), T, H, eps, wantDx.data());
    cpu::rms_norm_grad_weight(x.data(), dy.data(), T, H, eps, wantDw.data());
    int threads = gpu::rowShape(T, H, true).threads;
    std::vector<double> inverse(T);
    for (int64_t t = 0; t < T; ++t) {
      const float *xr = x.data() + t * H, *dyr = dy.data() + t * H;
      double squares = stridedSum(H, threads, [&](int64_t i) { return (double)xr[i] * xr[i]; });
      double dot = stridedSum(H, threads, [&](int64_t i) { return (double)xr[i] * w[i] * dyr[i]; });
      inverse[t] = arith::inverseRmsGrad(squares, H, eps);
      for (int64_t i = 0; i < H; ++i)
        dx[t * H + i] = arith::rmsNormGradElement(xr[i], w[i], dyr[i], inverse[t], dot, H);
    }
    // dw: one thread a column, the rows in order.
    for (int64_t h = 0; h < H; ++h) {
      double acc = 0.0;
      for (int64_t t = 0; t < T; ++t)
        acc += (double)dy[t * H + h] * x[t * H + h] * inverse[t];
      dw[h] = (float)acc;
    }
    expectClose(dx, wantDx, 1e-6f);
    expectClose(dw, wantDw, 1e-6f);
  }
}

TEST(CudaArithGrad, RopeBackwardRotatesBackAsTheCpuKernel) {
  const int64_t B = 2, S = 5, NH = 3, D = 8;
  std::vector<float> dy = test::normalVector(B * S * NH * D, 27);
  std::vector<int64_t> positions = {0, 9, 1000, 123457, 4};
  std::vector<float> got(dy.size(), std::nanf("")), want(dy.size());
  cpu::rope_grad(dy.data(), positions.data(), B, S, NH, D, 10000.0f, want.data());
  for (int64_t p = 0; p < B * S * NH * D / 2; ++p) {
    arith::RopePair at = arith::ropePair(p, S, NH, D);
    int64_t first = at.base + at.i, second = first + D / 2;
    arith::ropeRotate(dy[first], dy[second],
                      arith::ropeGradAngle(positions[at.s], at.i, D, 10000.0f), got[first],
                      got[second]);
  }
  EXPECT_EQ(got, want);
}

namespace {

void attentionGradFromStatsAsTheKernels(const AttentionCase &c, const std::vector<float> &q,
                                        const std::vector<float> &k, const std::vector<float> &v,
                                        const std::vector<float> &dy, const std::vector<float> &lse,
                                        const std::vector<float> &delta, float scale,
                                        std::vector<float> &dq, std::vector<float> &dk,
                                        std::vector<float> &dv);

/// Each query's delta = dy·out as the delta kernel's threads take them.
std::vector<float> deltaAsTheKernel(const AttentionCase &c, const std::vector<float> &dy,
                                    const std::vector<float> &out) {
  std::vector<float> delta(c.B * c.HQ * c.Sq);
  for (int64_t r = 0; r < c.B * c.Sq * c.HQ; ++r) {
    int64_t h = r % c.HQ, i = (r / c.HQ) % c.Sq, b = r / (c.HQ * c.Sq);
    delta[(b * c.HQ + h) * c.Sq + i] =
        arith::attentionDelta(dy.data() + r * c.D, out.data() + r * c.D, c.D);
  }
  return delta;
}

/// Attention's backward as the CUDA kernels run it: the forward by tiles
/// (attentionAsTheKernel) for out and the log-sum-exp, each query's delta,
/// then attention_grad_from_stats's kernels.
void attentionGradAsTheKernels(const AttentionCase &c, const std::vector<float> &q,
                               const std::vector<float> &k, const std::vector<float> &v,
                               const std::vector<float> &dy, float scale, std::vector<float> &dq,
                               std::vector<float> &dk, std::vector<float> &dv) {
  std::vector<float> out(q.size()), lse(c.B * c.HQ * c.Sq);
  attentionAsTheKernel(c, q, k, v, scale, out, lse);
  attentionGradFromStatsAsTheKernels(c, q, k, v, dy, lse, deltaAsTheKernel(c, dy, out), scale, dq,
                                     dk, dv);
}

/// attention_grad_from_stats as its two kernels run it: the dq kernel's
/// blocks and key tiles and the dk, dv kernel's blocks and query tiles
/// (every query head of the key's kv head), from the log-sum-exp and delta
/// given.
void attentionGradFromStatsAsTheKernels(const AttentionCase &c, const std::vector<float> &q,
                                        const std::vector<float> &k, const std::vector<float> &v,
                                        const std::vector<float> &dy, const std::vector<float> &lse,
                                        const std::vector<float> &delta, float scale,
                                        std::vector<float> &dq, std::vector<float> &dk,
                                        std::vector<float> &dv) {
  gpu::AttentionTiling tiling;
  gpu::AttentionGradTiling gradTiling;
  std::string error;
  ASSERT_TRUE(gpu::attentionTiling(c.B, c.HQ, c.Sq, c.D, tiling, error)) << error;
  ASSERT_TRUE(gpu::attentionGradTiling(c.B, c.HKV, c.Sk, c.D, gradTiling, error)) << error;
  // dq: a query a thread, the keys a tile at a time.
  for (int64_t block = 0; block < tiling.shape.blocks; ++block) {
    for (int thread = 0; thread < tiling.shape.threads; ++thread) {
      arith::AttentionQuery at =
          arith::attentionQuery(block, thread, tiling.queryBlocks, c.HQ, tiling.queriesPerBlock);
      if (at.i >= c.Sq)
        continue;
      int64_t hk = arith::kvHead(at.h, c.HQ, c.HKV);
      int64_t rowBase = ((at.b * c.Sq + at.i) * c.HQ + at.h) * c.D;
      int64_t stat = (at.b * c.HQ + at.h) * c.Sq + at.i;
      std::vector<float> acc(c.D, 0.0f);
      for (int64_t start = 0; start < c.Sk && lse[stat] != -INFINITY; start += tiling.keysPerTile) {
        int n = (int)std::min<int64_t>(tiling.keysPerTile, c.Sk - start);
        std::vector<float> kTile(n * c.D), vTile(n * c.D);
        for (int64_t idx = 0; idx < n * c.D; ++idx) {
          int64_t from = ((at.b * c.Sk + start + idx / c.D) * c.HKV + hk) * c.D + idx % c.D;
          kTile[idx] = k[from];
          vTile[idx] = v[from];
        }
        arith::attendGradQueryTile(q.data() + rowBase, dy.data() + rowBase, kTile.data(),
                                   vTile.data(), c.kPos.data() + start, n, c.D, c.qPos[at.i],
                                   c.causal, c.window, scale, lse[stat], delta[stat], acc.data());
      }
      for (int64_t e = 0; e < c.D; ++e)
        dq[rowBase + e] = scale * acc[e];
    }
  }
  // dk, dv: a key a thread, the queries of each query head a tile at a time.
  std::vector<int> seen(c.B * c.HKV * c.Sk, 0);
  int64_t perKv = c.HQ / c.HKV;
  for (int64_t block = 0; block < gradTiling.shape.blocks; ++block) {
    for (int thread = 0; thread < gradTiling.shape.threads; ++thread) {
      arith::AttentionQuery at =
          arith::attentionKey(block, thread, gradTiling.keyBlocks, c.HKV, gradTiling.keysPerBlock);
      if (at.i >= c.Sk)
        continue;
      ++seen[(at.b * c.HKV + at.h) * c.Sk + at.i];
      int64_t rowBase = ((at.b * c.Sk + at.i) * c.HKV + at.h) * c.D;
      std::vector<float> dkAcc(c.D, 0.0f), dvAcc(c.D, 0.0f);
      for (int64_t h = at.h * perKv; h < (at.h + 1) * perKv; ++h) {
        for (int64_t start = 0; start < c.Sq; start += gradTiling.queriesPerTile) {
          int n = (int)std::min<int64_t>(gradTiling.queriesPerTile, c.Sq - start);
          std::vector<float> qTile(n * c.D), dyTile(n * c.D), lseTile(n), deltaTile(n);
          for (int64_t idx = 0; idx < n * c.D; ++idx) {
            int64_t from = ((at.b * c.Sq + start + idx / c.D) * c.HQ + h) * c.D + idx % c.D;
            qTile[idx] = q[from];
            dyTile[idx] = dy[from];
          }
          for (int i = 0; i < n; ++i) {
            lseTile[i] = lse[(at.b * c.HQ + h) * c.Sq + start + i];
            deltaTile[i] = delta[(at.b * c.HQ + h) * c.Sq + start + i];
          }
          arith::attendGradKeyTile(k.data() + rowBase, v.data() + rowBase, qTile.data(),
                                   dyTile.data(), c.qPos.data() + start, lseTile.data(),
                                   deltaTile.data(), n, c.D, c.kPos[at.i], c.causal, c.window,
                                   scale, dkAcc.data(), dvAcc.data());
        }
      }
      for (int64_t e = 0; e < c.D; ++e) {
        dk[rowBase + e] = scale * dkAcc[e];
        dv[rowBase + e] = dvAcc[e];
      }
    }
  }
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), (long)seen.size())
      << "every key is taken by exactly one thread";
}

/// f32 probabilities from the log-sum-exp and an f32 delta = dy·out,
/// against the CPU's double softmax and rowsum(P∘dP): 1e-5 of the largest
/// gradient (the worst seen 1.1e-6).
void checkAttentionGrad(const AttentionCase &c) {
  std::vector<float> q = test::normalVector(c.B * c.Sq * c.HQ * c.D, 31),
                     k = test::normalVector(c.B * c.Sk * c.HKV * c.D, 32),
                     v = test::normalVector(c.B * c.Sk * c.HKV * c.D, 33),
                     dy = test::normalVector(q.size(), 34);
  float scale = 1.0f / std::sqrt((float)c.D);
  std::vector<float> dq(q.size(), std::nanf("")), dk(k.size(), std::nanf("")),
      dv(v.size(), std::nanf(""));
  attentionGradAsTheKernels(c, q, k, v, dy, scale, dq, dk, dv);
  std::vector<float> wantDq(q.size()), wantDk(k.size()), wantDv(v.size());
  cpu::AttentionDims dims{c.B, c.Sq, c.Sk, c.HQ, c.HKV, c.D};
  if (c.window > 0) {
    // Sliding-window attention over whole sequences (no halo), from position
    // qPos[0]: local_attention_grad.
    cpu::local_attention_grad(q.data(), k.data(), v.data(), nullptr, nullptr, dy.data(), 0,
                              c.qPos[0], dims, c.window, wantDq.data(), wantDk.data(),
                              wantDv.data(), nullptr, nullptr);
  } else {
    cpu::attention_grad(q.data(), k.data(), v.data(), dy.data(), c.qPos.data(), c.kPos.data(), dims,
                        c.causal, scale, wantDq.data());
    cpu::attention_grad_kv(q.data(), k.data(), v.data(), dy.data(), c.qPos.data(), c.kPos.data(),
                           dims, c.causal, scale, wantDk.data(), wantDv.data());
  }
  expectCloseToScale(dq, wantDq, 1e-5f);
  expectCloseToScale(dk, wantDk, 1e-5f);
  expectCloseToScale(dv, wantDv, 1e-5f);
}

} // namespace

TEST(CudaArithGrad, CausalGqaAttentionBackwardByTilesMatchesTheCpuKernels) {
  // More keys and queries than one tile or block, two query heads per kv head.
  checkAttentionGrad({2, 100, 100, 4, 2, 16, true, 0, iota(100), iota(100)});
}

TEST(CudaArithGrad, AttentionBackwardOfEveryHeadDimTheKernelsTake) {
  for (int64_t D : {2, 64, 96, 128, 256}) {
    SCOPED_TRACE(D);
    checkAttentionGrad({1, 33, 70, 2, 1, D, true, 0, iota(33, 37), iota(70)});
  }
}

TEST(CudaArithGrad, SlidingWindowAttentionBackwardIsLocalAttentions) {
  // Windows shorter than a tile and longer, GQA, sequences that start at 0
  // and later.
  checkAttentionGrad({2, 150, 150, 4, 2, 32, true, 17, iota(150), iota(150)});
  checkAttentionGrad({1, 90, 90, 2, 1, 16, true, 70, iota(90, 300), iota(90, 300)});
}

TEST(CudaArithGrad, AttentionBackwardNonCausalAndWithoutVisibleKeys) {
  checkAttentionGrad({1, 40, 90, 3, 1, 8, false, 0, iota(40, 50), iota(90)});
  // Zigzag chunks: the first queries see no key (zero dq, no share of dk, dv).
  std::vector<int64_t> qPos = iota(8, 0), tail = iota(8, 56);
  qPos.insert(qPos.end(), tail.begin(), tail.end());
  checkAttentionGrad({1, 16, 8, 2, 2, 8, true, 0, qPos, iota(8, 4)});
}

// The row's maximum exact, its sum of exponentials in double across the
// threads (then f32, as the CPU's), each column's gradient in double: 1e-6.
TEST(CudaArithGrad, CrossEntropyBackwardMatchesTheCpuKernel) {
  const int64_t T = 23, V = 517;
  std::vector<float> logits = test::normalVector(T * V, 35, 4.0f);
  std::vector<int32_t> labels(T);
  for (int64_t t = 0; t < T; ++t)
    labels[t] = (int32_t)((t * 97) % V);
  std::vector<float> got(T * V), want(T * V);
  cpu::cross_entropy_grad(logits.data(), labels.data(), T, V, want.data());
  int threads = gpu::rowShape(T, V, true).threads;
  for (int64_t t = 0; t < T; ++t) {
    const float *row = logits.data() + t * V;
    float max = *std::max_element(row, row + V);
    float sum =
        (float)stridedSum(V, threads, [&](int64_t j) { return std::exp((double)row[j] - max); });
    for (int64_t j = 0; j < V; ++j)
      got[t * V + j] = arith::crossEntropyGradElement(row[j], max, sum, j == labels[t], 1.0 / T);
  }
  expectClose(got, want, 1e-6f);
}

// One thread a column, the tokens in order, in double: the CPU's sums
// exactly, on a shard of the table (ids of other rows skipped).
TEST(CudaArithGrad, EmbeddingBackwardIsTheCpuKernel) {
  const int64_t T = 200, rows = 13, H = 9, offset = 13;
  std::vector<int32_t> ids(T);
  for (int64_t t = 0; t < T; ++t)
    ids[t] = (int32_t)((t * 7) % 40);
  std::vector<float> dy = test::normalVector(T * H, 36);
  std::vector<float> want(rows * H);
  cpu::embedding_grad(ids.data(), dy.data(), T, rows, H, offset, want.data());
  std::vector<double> acc(rows * H, 0.0);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t t = 0; t < T; ++t)
      if (int64_t row = arith::embeddingRow(ids[t], offset, rows); row >= 0)
        acc[row * H + h] += dy[t * H + h];
  std::vector<float> got(acc.begin(), acc.end());
  EXPECT_EQ(got, want);
  EXPECT_EQ(gpu::embeddingGradShape(H).blocks * gpu::embeddingGradShape(H).threads >= H, true);
}

// Blocks' double partials added in block order, against the CPU's
// sequential double sum: equal after rounding to f32 here (1e-7 relative
// allowed).
TEST(CudaArithGrad, SumOfSquaresByBlocksIsTheCpuKernels) {
  for (int64_t n : {1, 255, 70001, 300000}) {
    SCOPED_TRACE(n);
    std::vector<float> x = test::normalVector(n, 37);
    gpu::LaunchShape shape = gpu::sumShape(n);
    int64_t stride = shape.blocks * shape.threads;
    double total = 0.0;
    for (int64_t block = 0; block < shape.blocks; ++block) {
      double part = 0.0;
      for (int thread = 0; thread < shape.threads; ++thread)
        for (int64_t i = block * shape.threads + thread; i < n; i += stride)
          part += (double)x[i] * x[i];
      total += part;
    }
    float want = (float)cpu::sum_squares(x.data(), n);
    EXPECT_NEAR((float)total, want, 1e-7f * want);
  }
}

// The CPU's double arithmetic operation for operation: equal over three
// steps, clipped and not, with and without weight decay.
TEST(CudaArithGrad, AdamWIsTheCpuKernel) {
  const int64_t n = 1001;
  for (double clip : {0.0, 1.0, 1e-3})
    for (double decay : {0.0, 0.01}) {
      SCOPED_TRACE(clip);
      SCOPED_TRACE(decay);
      std::vector<float> w = test::normalVector(n, 38), m(n, 0.0f), v(n, 0.0f);
      std::vector<float> gw = w, gm = m, gv = v;
      for (int64_t step = 1; step <= 3; ++step) {
        std::vector<float> grad = test::normalVector(n, 39 + (unsigned)step);
        // The sum of squares as the plan holds it: an f32 scalar.
        double sumsq = (float)cpu::sum_squares(grad.data(), n);
        cpu::AdamWStep p{1e-2, 0.9, 0.999, 1e-8, decay, step, cpu::clip_scale(sumsq, clip)};
        cpu::adamw(w.data(), grad.data(), m.data(), v.data(), n, p);
        arith::AdamWConstants k{1e-2,
                                0.9,
                                0.999,
                                1e-8,
                                decay,
                                1.0 - std::pow(0.9, (double)step),
                                1.0 - std::pow(0.999, (double)step),
                                clip};
        double scale = arith::clipScale(sumsq, clip);
        EXPECT_EQ(scale, p.grad_scale);
        for (int64_t i = 0; i < n; ++i)
          arith::adamwElement(gw[i], grad[i], gm[i], gv[i], k, scale);
      }
      EXPECT_EQ(gw, w);
      EXPECT_EQ(gm, m);
      EXPECT_EQ(gv, v);
    }
}

// AdamW of a 16-bit weight through its main copy: the main copy takes the
// f32 step, and the weight's bits are the CPU entry's rounding of it
// (kernels/cpu/optimizer.cpp rounds through convertOnHost), for bf16 and f16
// weights and gradients of the weight's type.
template <typename T> void checkAdamWMain(rt::DType type) {
  const int64_t n = 1001;
  std::vector<float> main = test::normalVector(n, 40), m(n, 0.0f), v(n, 0.0f);
  std::vector<uint16_t> want(n);
  std::vector<T> w(n);
  for (int64_t i = 0; i < n; ++i) {
    arith::storeElement(w.data(), i, main[i]);
    main[i] = arith::loadElement(w.data(), i);
  }
  std::vector<float> gmain = main, gm = m, gv = v;
  for (int64_t step = 1; step <= 3; ++step) {
    std::vector<float> fresh = test::normalVector(n, 41 + (unsigned)step), grad(n);
    std::vector<T> grad16(n);
    for (int64_t i = 0; i < n; ++i) {
      arith::storeElement(grad16.data(), i, fresh[i]);
      grad[i] = arith::loadElement(grad16.data(), i);
    }
    double sumsq = (float)cpu::sum_squares(grad.data(), n);
    cpu::AdamWStep p{1e-2, 0.9, 0.999, 1e-8, 0.01, step, cpu::clip_scale(sumsq, 1.0)};
    cpu::adamw(main.data(), grad.data(), m.data(), v.data(), n, p);
    rt::convertOnHost(rt::BufferView(main.data(), n), rt::BufferView(want.data(), n, type));
    arith::AdamWConstants k{1e-2, 0.9, 0.999, 1e-8, 0.01, 1.0 - std::pow(0.9, (double)step),
                            1.0 - std::pow(0.999, (double)step), 1.0};
    double scale = arith::clipScale(sumsq, 1.0);
    for (int64_t i = 0; i < n; ++i)
      arith::adamwMainElement(w.data(), i, arith::loadElement(grad16.data(), i), gmain[i], gm[i],
                              gv[i], k, scale);
    EXPECT_EQ(gmain, main);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(w[i].bits, want[i]) << "element " << i << " at step " << step;
  }
  EXPECT_EQ(gm, m);
  EXPECT_EQ(gv, v);
}

TEST(CudaArithGrad, AdamWThroughAMainCopyIsTheCpuEntry) {
  checkAdamWMain<arith::Bf16>(rt::DType::BF16);
  checkAdamWMain<arith::F16>(rt::DType::F16);
}

TEST(CudaLaunchGrad, AttentionBackwardTilesFitSharedMemory) {
  for (int64_t D : {1, 16, 64, 65, 128, 129, 256}) {
    SCOPED_TRACE(D);
    gpu::AttentionGradTiling tiling;
    std::string error;
    ASSERT_TRUE(gpu::attentionGradTiling(2, 4, 1000, D, tiling, error)) << error;
    EXPECT_GE(tiling.maxHeadDim, D);
    EXPECT_LE(tiling.shape.sharedBytes, gpu::kDefaultSharedBytes);
    EXPECT_EQ(tiling.shape.sharedBytes, tiling.queriesPerTile * (2 * D * 4 + 16));
    EXPECT_GE(tiling.queriesPerTile, 1);
    EXPECT_EQ(tiling.shape.threads, tiling.keysPerBlock);
    EXPECT_EQ(tiling.keyBlocks, (1000 + tiling.keysPerBlock - 1) / tiling.keysPerBlock);
    EXPECT_EQ(tiling.shape.blocks, 2 * 4 * tiling.keyBlocks);
  }
  gpu::AttentionGradTiling tiling;
  std::string error;
  EXPECT_FALSE(gpu::attentionGradTiling(1, 1, 16, 300, tiling, error));
  EXPECT_EQ(error, "the CUDA attention backward takes head dims of 1 to 256, not 300");
  EXPECT_FALSE(gpu::attentionGradTiling(1LL << 20, 1LL << 10, 1LL << 20, 64, tiling, error));
  EXPECT_EQ(error, "attention's backward over 1048576 x 1024 kv heads of 1048576 keys needs "
                   "more blocks than a CUDA grid holds");
}

namespace {

/// cuBLASLt's column-major product as gemmLayout describes it:
/// out = op(first) . op(second), each matrix read at its stored layout.
std::vector<float> columnMajorGemm(const gpu::GemmLayout &l, const float *first,
                                   const float *second) {
  auto at = [](const gpu::GemmMatrix &m, const float *data, int64_t r, int64_t c) {
    return m.transposed ? data[r * m.ld + c] : data[c * m.ld + r];
  };
  int64_t inner = l.first.transposed ? l.first.rows : l.first.cols;
  std::vector<float> out(l.out.ld * l.out.cols);
  for (int64_t i = 0; i < l.out.rows; ++i)
    for (int64_t j = 0; j < l.out.cols; ++j) {
      double acc = 0.0;
      for (int64_t p = 0; p < inner; ++p)
        acc += (double)at(l.first, first, i, p) * at(l.second, second, p, j);
      out[j * l.out.ld + i] = (float)acc;
    }
  return out;
}

} // namespace

// linear and its two backward GEMMs laid out for cuBLASLt give the CPU
// kernels' products (1e-5: double sums here, OpenBLAS's f32 there).
TEST(CudaLaunchGrad, GemmLayoutsAreLinearsOrientation) {
  const int64_t T = 7, K = 5, N = 3;
  std::vector<float> x = test::normalVector(T * K, 40), w = test::normalVector(K * N, 41),
                     dy = test::normalVector(T * N, 42);
  std::vector<float> want(T * N), wantDx(T * K), wantDw(K * N);
  cpu::linear(x.data(), w.data(), T, K, N, want.data());
  cpu::linear_grad(dy.data(), w.data(), T, K, N, wantDx.data());
  cpu::linear_grad_weight(x.data(), dy.data(), T, K, N, wantDw.data());
  expectClose(columnMajorGemm(gpu::gemmLayout(false, false, T, N, K), w.data(), x.data()), want,
              1e-5f);
  // dx[T, K] = dy[T, N] . w[K, N]^T; dw[K, N] = x[T, K]^T . dy[T, N].
  expectClose(columnMajorGemm(gpu::gemmLayout(false, true, T, K, N), w.data(), dy.data()), wantDx,
              1e-5f);
  expectClose(columnMajorGemm(gpu::gemmLayout(true, false, K, N, T), dy.data(), x.data()), wantDw,
              1e-5f);
}

// The types cuBLASLt runs each GEMM in: two 16-bit factors of one type go
// in as they are, with the product in f32 or their type; every other mix
// runs in f32, the tensors not in their run type staged.
TEST(CudaLaunchGrad, GemmTypesKeepSixteenBitFactors) {
  using E = gpu::GemmElement;
  const E all[] = {E::F32, E::BF16, E::F16};
  for (E a : all)
    for (E b : all)
      for (E out : all) {
        gpu::GemmTypes t = gpu::gemmTypes(a, b, out);
        bool sixteen = a == b && a != E::F32;
        EXPECT_EQ(t.factors, sixteen ? a : E::F32);
        EXPECT_EQ(t.out, sixteen && out == a ? a : E::F32);
        EXPECT_EQ(t.stageA, a != t.factors);
        EXPECT_EQ(t.stageB, b != t.factors);
        EXPECT_EQ(t.stageOut, out != t.out);
      }
  // A bf16 plan's linear: nothing staged, bf16 product.
  gpu::GemmTypes bf16 = gpu::gemmTypes(E::BF16, E::BF16, E::BF16);
  EXPECT_EQ(bf16.factors, E::BF16);
  EXPECT_EQ(bf16.out, E::BF16);
  EXPECT_FALSE(bf16.stageA || bf16.stageB || bf16.stageOut);
  // bf16 activations into f32 logits: bf16 factors, f32 product.
  gpu::GemmTypes logits = gpu::gemmTypes(E::BF16, E::BF16, E::F32);
  EXPECT_EQ(logits.factors, E::BF16);
  EXPECT_EQ(logits.out, E::F32);
  EXPECT_FALSE(logits.stageOut);
  // bf16 by f16: both widened to f32.
  gpu::GemmTypes mixed = gpu::gemmTypes(E::BF16, E::F16, E::BF16);
  EXPECT_EQ(mixed.factors, E::F32);
  EXPECT_TRUE(mixed.stageA && mixed.stageB && mixed.stageOut);
  EXPECT_EQ(gpu::gemmElementBytes(E::F32), 4);
  EXPECT_EQ(gpu::gemmElementBytes(E::BF16), 2);
  EXPECT_EQ(gpu::gemmElementBytes(E::F16), 2);
}

// SHARDLINE_CUDA_TF32: unset, empty or 0 keeps f32 GEMMs in f32, 1 takes
// them to the tensor cores as TF32; anything else is refused by name.
TEST(CudaLaunchGrad, Tf32SettingIsZeroOrOne) {
  bool tf32 = true;
  std::string error;
  EXPECT_TRUE(gpu::f32GemmsOnTensorCores(nullptr, tf32, error));
  EXPECT_FALSE(tf32);
  tf32 = true;
  EXPECT_TRUE(gpu::f32GemmsOnTensorCores("", tf32, error));
  EXPECT_FALSE(tf32);
  EXPECT_TRUE(gpu::f32GemmsOnTensorCores("0", tf32, error));
  EXPECT_FALSE(tf32);
  EXPECT_TRUE(gpu::f32GemmsOnTensorCores("1", tf32, error));
  EXPECT_TRUE(tf32);
  EXPECT_TRUE(error.empty());
  EXPECT_FALSE(gpu::f32GemmsOnTensorCores("yes", tf32, error));
  EXPECT_EQ(error, "SHARDLINE_CUDA_TF32 is 'yes': 1 multiplies f32 GEMMs' factors as TF32 on the "
                   "tensor cores, 0 (or unset) in f32");
}

// The same switch with the other default (SHARDLINE_NCCL_OVERLAP's: on
// when unset), and the words of its refusal.
TEST(CudaLaunch, SwitchSettingTakesItsDefaultWhenUnset) {
  bool on = false;
  std::string error;
  EXPECT_TRUE(gpu::switchSetting("X", nullptr, true, "does", "does not", on, error));
  EXPECT_TRUE(on);
  EXPECT_TRUE(gpu::switchSetting("X", "0", true, "does", "does not", on, error));
  EXPECT_FALSE(on);
  EXPECT_TRUE(gpu::switchSetting("X", "", true, "does", "does not", on, error));
  EXPECT_TRUE(on);
  EXPECT_TRUE(error.empty());
  EXPECT_FALSE(gpu::switchSetting("SHARDLINE_NCCL_OVERLAP", "2", true,
                                  "runs a gather or a reduce-scatter paired with its linear in "
                                  "pieces",
                                  "whole", on, error));
  EXPECT_EQ(error, "SHARDLINE_NCCL_OVERLAP is '2': 1 (or unset) runs a gather or a reduce-scatter "
                   "paired with its linear in pieces, 0 whole");
}

// bf16 factors with f32 accumulation, as the tensor cores take them, give
// what the executor computed by widening them: widening bf16 to f32 is
// exact, and so is the product of two bf16 values in f32, so only the order
// of the f32 sums differs (1e-5 here: double sums against OpenBLAS's f32),
// and the product rounded once into bf16 lands within one bf16 unit (2^-7
// relative) of the CPU's rounded result. This is why bf16 plans keep the
// CPU comparison's 0.03 tolerance (cuda_model_test.sh).
TEST(CudaLaunchGrad, Bf16FactorsGiveTheWidenedProduct) {
  const int64_t T = 9, K = 70, N = 6;
  std::vector<float> x = test::normalVector(T * K, 43), w = test::normalVector(K * N, 44);
  std::vector<uint16_t> xs(T * K), ws(K * N);
  for (int64_t i = 0; i < T * K; ++i) {
    arith::store(xs.data(), arith::Type::BF16, i, x[i]);
    x[i] = arith::load(xs.data(), arith::Type::BF16, i);
  }
  for (int64_t i = 0; i < K * N; ++i) {
    arith::store(ws.data(), arith::Type::BF16, i, w[i]);
    w[i] = arith::load(ws.data(), arith::Type::BF16, i);
  }
  std::vector<float> want(T * N);
  cpu::linear(x.data(), w.data(), T, K, N, want.data());
  gpu::GemmLayout layout = gpu::gemmLayout(false, false, T, N, K);
  std::vector<float> got = columnMajorGemm(layout, w.data(), x.data());
  expectClose(got, want, 1e-5f);
  std::vector<uint16_t> gotBf16(T * N), wantBf16(T * N);
  for (int64_t i = 0; i < T * N; ++i) {
    arith::store(gotBf16.data(), arith::Type::BF16, i, got[i]);
    arith::store(wantBf16.data(), arith::Type::BF16, i, want[i]);
    float g = arith::load(gotBf16.data(), arith::Type::BF16, i),
          v = arith::load(wantBf16.data(), arith::Type::BF16, i);
    EXPECT_LE(std::fabs(g - v), std::ldexp(std::fabs(v), -7) + 1e-30f) << "at " << i;
  }
}

// -- the conv1d's and the RG-LRU scan's backward ------------------------------------------

// One thread an element of dx (and of the halos' gradients), one a weight or
// bias walking the sequences as the CPU table's entry does (a call per
// sequence, f32 results added to once per sequence): the CPU's sums
// exactly, over whole sequences and over sequence chunks with their halos
// (the taps before a chunk reading its halo rows).
TEST(CudaArithGrad, CausalConvBackwardIsTheCpuKernels) {
  const int64_t B = 3, S = 37, C = 5, W = 4, H = W - 1;
  std::vector<float> x = test::normalVector(B * S * C, 71), w = test::normalVector(C * W, 72),
                     dy = test::normalVector(B * S * C, 73),
                     halos = test::normalVector(B * H * C, 74);
  for (bool withHalo : {false, true}) {
    SCOPED_TRACE(withHalo ? "chunks with halos" : "whole sequences");
    const float *halo = withHalo ? halos.data() : nullptr;
    std::vector<float> wantDx(B * S * C), wantDhalo(B * H * C, 0.0f), wantDw(C * W, 0.0f),
        wantDb(C, 0.0f);
    for (int64_t b = 0; b < B; ++b) {
      cpu::causal_conv1d_grad(w.data(), dy.data() + b * S * C, 1, S, C, W,
                              wantDx.data() + b * S * C,
                              withHalo ? wantDhalo.data() + b * H * C : nullptr);
      cpu::causal_conv1d_grad_weight(x.data() + b * S * C, halo ? halo + b * H * C : nullptr,
                                     dy.data() + b * S * C, 1, S, C, W, wantDw.data(),
                                     wantDb.data());
    }
    std::vector<float> dx(B * S * C), dhalo(B * H * C, 0.0f), dw(C * W), db(C);
    for (int64_t e = 0; e < B * S * C; ++e) {
      int64_t row = e / C, b = row / S;
      dx[e] = arith::convGradInput(w.data(), dy.data() + b * S * C, S, C, W, row % S, e % C);
    }
    for (int64_t e = 0; withHalo && e < B * H * C; ++e) {
      int64_t row = e / C, b = row / H;
      dhalo[e] = arith::convGradInput(w.data(), dy.data() + b * S * C, S, C, W, row % H - H, e % C);
    }
    for (int64_t e = 0; e < C * (W + 1); ++e) {
      int64_t c = e / (W + 1), j = e % (W + 1);
      float total = 0.0f;
      for (int64_t b = 0; b < B; ++b)
        total = (float)(total + arith::convGradWeightSum(x.data() + b * S * C,
                                                         halo ? halo + b * H * C : nullptr,
                                                         dy.data() + b * S * C, S, C, W, c, j));
      (j == W ? db[c] : dw[c * W + j]) = total;
    }
    EXPECT_EQ(dx, wantDx);
    EXPECT_EQ(dhalo, wantDhalo);
    EXPECT_EQ(dw, wantDw);
    EXPECT_EQ(db, wantDb);
  }
}

// One lane a channel, the sequences in turn, the states in double: the CPU
// kernel's arithmetic operation for operation as the CPU table's entry
// calls it (a call per sequence), from zero and from a state with the
// summaries' cotangents, over whole sequences and over three chunks of each
// batch entry (a state and summaries' slot each, c*B + b).
TEST(CudaArithGrad, RglruScanBackwardByLanesIsTheCpuKernel) {
  const int64_t B = 2, W = 6;
  for (auto [S, chunks] : {std::pair<int64_t, int64_t>{29, 1}, {30, 3}})
    for (bool fromState : {false, true}) {
      SCOPED_TRACE(std::to_string(chunks) + " chunks, from a state " + std::to_string(fromState));
      const int64_t L = S / chunks, slots = B * chunks;
      std::vector<float> x = test::normalVector(B * S * W, 74),
                         dy = test::normalVector(B * S * W, 75);
      std::vector<float> wa = test::normalVector(W, 76), ba = test::normalVector(W, 77),
                         wx = test::normalVector(W, 78), bx = test::normalVector(W, 79),
                         lambda = test::normalVector(W, 80),
                         stateIn = test::normalVector(slots * W, 81),
                         dstate = test::normalVector(slots * W, 82),
                         ddecay = test::normalVector(slots * W, 83);
      auto opt = [&](std::vector<float> &v) -> float * { return fromState ? v.data() : nullptr; };
      std::vector<float> wantDx(B * S * W), wantDstate(slots * W);
      std::vector<std::vector<float>> want(5, std::vector<float>(W, 0.0f));
      cpu::RglruParamGrads dp{want[0].data(), want[1].data(), want[2].data(), want[3].data(),
                              want[4].data()};
      for (int64_t b = 0; b < B; ++b)
        for (int64_t c = 0; c < chunks; ++c) {
          int64_t rows = (b * S + c * L) * W, slot = (c * B + b) * W;
          auto at = [&](float *p) { return p ? p + slot : nullptr; };
          cpu::rglru_scan_grad(x.data() + rows, wa.data(), ba.data(), wx.data(), bx.data(),
                               lambda.data(), at(opt(stateIn)), dy.data() + rows, at(opt(dstate)),
                               at(opt(ddecay)), 1, L, W, wantDx.data() + rows,
                               wantDstate.data() + slot, dp);
        }
      std::vector<float> dx(B * S * W), dstateIn(slots * W);
      std::vector<std::vector<float>> got(5, std::vector<float>(W, std::nanf("")));
      std::vector<double> h(L * W);
      arith::RglruGradArgs a{x.data(),
                             wa.data(),
                             ba.data(),
                             wx.data(),
                             bx.data(),
                             lambda.data(),
                             opt(stateIn),
                             dy.data(),
                             opt(dstate),
                             opt(ddecay),
                             B,
                             S,
                             W,
                             dx.data(),
                             dstateIn.data(),
                             got[0].data(),
                             got[1].data(),
                             got[2].data(),
                             got[3].data(),
                             got[4].data(),
                             h.data(),
                             chunks};
      for (int64_t w = 0; w < W; ++w)
        arith::rglruGradLane(a, w);
      EXPECT_EQ(dx, wantDx);
      if (fromState)
        EXPECT_EQ(dstateIn, wantDstate);
      for (int p = 0; p < 5; ++p)
        EXPECT_EQ(got[p], want[p]) << "parameter " << p;
    }
}

namespace {

/// The SSD scan's backward as the CPU table's entries run it over whole
/// sequences: the prelude, a call per batch entry (dA, dD added to once per
/// entry), the prelude's backward.
struct SsdGradCase {
  int64_t B, S, NH, P, G, N;
  bool fromState;
  int64_t chunks = 1;
};

} // namespace

/// kernels/cuda/grad_sequence.cu's ssd_scan_grad on the host: ssdGradLaunch's
/// scratch (a guard after it must stay untouched), the kernels in their order
/// with each thread of a thread kernel and each block in turn (in decreasing
/// order when `reversed`), the shared memory poisoned before every block so
/// that nothing reads what an earlier block left there.
void ssdGradOnHost(arith::SsdGradArgs a, int64_t sequences, int64_t length, bool reversed) {
  const arith::SsdArgs &f = a.fwd;
  gpu::SsdGradLaunch launch;
  std::string error;
  ASSERT_TRUE(gpu::ssdGradLaunch(sequences, length, f.NH, f.P, f.G, f.N, launch, error)) << error;
  const int64_t guard = 256;
  std::vector<double> scratch((launch.scratchBytes + guard) / 8, -7.0);
  char *base = reinterpret_cast<char *>(scratch.data());
  a.fwd.cum = reinterpret_cast<double *>(base + launch.fwd.cumOffset);
  a.fwd.step = reinterpret_cast<float *>(base + launch.fwd.stepOffset);
  a.fwd.states = reinterpret_cast<float *>(base + launch.fwd.statesOffset);
  a.cot = reinterpret_cast<float *>(base + launch.cotOffset);
  const bool perHead = launch.heads.blocks > 0;
  EXPECT_EQ(perHead, f.NH != f.G);
  a.dBh = perHead ? reinterpret_cast<float *>(base + launch.dBhOffset) : a.dB;
  a.dCh = perHead ? reinterpret_cast<float *>(base + launch.dChOffset) : a.dC;
  a.partA = reinterpret_cast<double *>(base + launch.partAOffset);
  a.partD = reinterpret_cast<double *>(base + launch.partDOffset);
  a.decayCot = reinterpret_cast<double *>(base + launch.decayCotOffset);
  auto order = [&](int64_t n, auto run) {
    for (int64_t i = 0; i < n; ++i)
      run(reversed ? n - 1 - i : i);
  };
  HostBlock block{reversed};
  auto forwardShared = std::make_unique<arith::SsdShared>();
  auto shared = std::make_unique<arith::SsdGradShared>();
  EXPECT_EQ(launch.block.sharedBytes, (int64_t)sizeof(arith::SsdGradShared));
  auto poisoned = [&]() -> arith::SsdGradShared & {
    std::memset(static_cast<void *>(shared.get()), 0xff, sizeof(arith::SsdGradShared));
    return *shared;
  };
  const int64_t items = launch.fwd.items, entries = sequences * f.NH * f.P * f.N;
  EXPECT_EQ(launch.block.blocks, items);
  order(items, [&](int64_t item) { arith::ssdChunkCum(a.fwd, item); });
  order(items, [&](int64_t item) { arith::ssdChunkBlock(block, a.fwd, *forwardShared, item); });
  order(entries, [&](int64_t e) { arith::ssdCarry(a.fwd, e); });
  order(items, [&](int64_t item) { arith::ssdCotangentBlock(block, a, poisoned(), item); });
  order(entries, [&](int64_t e) { arith::ssdCotangentCarry(a, e); });
  order(items, [&](int64_t item) { arith::ssdGradBlock(block, a, poisoned(), item); });
  if (perHead)
    order(sequences * length * f.G * f.N, [&](int64_t e) { arith::ssdGradHeads(a, e); });
  order(f.NH, [&](int64_t h) { arith::ssdGradRates(a, h); });
  for (int64_t i = launch.scratchBytes / 8; i < (int64_t)scratch.size(); ++i)
    EXPECT_EQ(scratch[i], -7.0) << "scratch written past its end at double " << i;
}

// The chunked backward against the CPU kernel's step-by-step one in double:
// over whole sequences and over chunks of each batch entry (a state and
// summaries' slot each, c*B + b), as the CPU table's entry calls the kernel
// a sequence at a time; sequences not a multiple of 64, one exactly 64,
// several heads a group and one, P and N below, at and over a 32-wide tile,
// and one of a model's sizes (P 64, N 128). The two differ in the order and
// width of their sums (f32 products over tiles against double steps): each
// result within 2e-6 of its largest magnitude (4.4e-7 at most measured). Any order of the threads
// and blocks gives the same bits.
TEST(CudaArithGrad, SsdScanBackwardByChunksMatchesTheCpuKernels) {
  for (SsdGradCase c :
       {SsdGradCase{2, 150, 4, 3, 2, 5, false}, SsdGradCase{2, 70, 4, 2, 1, 3, true},
        SsdGradCase{1, 64, 2, 4, 2, 2, true}, SsdGradCase{2, 140, 4, 2, 2, 3, true, 2},
        SsdGradCase{3, 12, 2, 2, 1, 2, false, 3}, SsdGradCase{1, 200, 3, 33, 3, 40, true},
        SsdGradCase{1, 130, 4, 64, 1, 128, true, 2}}) {
    SCOPED_TRACE(std::to_string(c.S) + " tokens, " + std::to_string(c.chunks) + " chunks, P " +
                 std::to_string(c.P) + ", N " + std::to_string(c.N));
    const int64_t T = c.B * c.S, xw = c.NH * c.P, bw = c.G * c.N, PN = c.P * c.N;
    const int64_t L = c.S / c.chunks, slots = c.B * c.chunks;
    std::vector<float> x = test::normalVector(T * xw, 101), dy = test::normalVector(T * xw, 102),
                       Bm = test::normalVector(T * bw, 103, 0.5f),
                       Cm = test::normalVector(T * bw, 104, 0.5f),
                       dt = test::normalVector(T * c.NH, 105),
                       dtBias = test::normalVector(c.NH, 106),
                       aLog = test::normalVector(c.NH, 107, 0.5f),
                       D = test::normalVector(c.NH, 108),
                       stateIn = test::normalVector(slots * c.NH * PN, 109),
                       dstate = test::normalVector(slots * c.NH * PN, 110),
                       ddecay = test::normalVector(slots * c.NH, 111);
    auto opt = [&](std::vector<float> &v, int64_t off) -> float * {
      return c.fromState ? v.data() + off : nullptr;
    };
    // The CPU table's way.
    std::vector<float> dtv(T * c.NH), A(c.NH), ddt(T * c.NH), dA(c.NH, 0.0f), dD(c.NH, 0.0f);
    std::vector<float> wantDx(T * xw), wantDB(T * bw), wantDC(T * bw), wantState(slots * c.NH * PN);
    std::vector<float> wantDdt(T * c.NH), wantDtBias(c.NH), wantALog(c.NH);
    cpu::ssd_prelude(dt.data(), dtBias.data(), aLog.data(), T, c.NH, dtv.data(), A.data());
    cpu::SsdDims one{1, L, c.NH, c.P, c.G, c.N};
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t k = 0; k < c.chunks; ++k) {
        int64_t row = b * c.S + k * L, slot = k * c.B + b;
        cpu::ssd_scan_grad(
            x.data() + row * xw, dtv.data() + row * c.NH, A.data(), Bm.data() + row * bw,
            Cm.data() + row * bw, D.data(), opt(stateIn, slot * c.NH * PN), dy.data() + row * xw,
            opt(dstate, slot * c.NH * PN), opt(ddecay, slot * c.NH), one, wantDx.data() + row * xw,
            ddt.data() + row * c.NH, dA.data(), wantDB.data() + row * bw, wantDC.data() + row * bw,
            dD.data(), wantState.data() + slot * c.NH * PN);
      }
    cpu::ssd_prelude_grad(dt.data(), dtBias.data(), aLog.data(), T, c.NH, ddt.data(), dA.data(),
                          wantDdt.data(), wantDtBias.data(), wantALog.data());
    // The CUDA kernels' way, in both orders.
    std::vector<float> firstRun[8];
    for (bool reversed : {false, true}) {
      std::vector<float> dx(T * xw, NAN), gotDdtv(T * c.NH, NAN), dB(T * bw, NAN), dC(T * bw, NAN),
          gotDA(c.NH, NAN), gotDD(c.NH, NAN), state(slots * c.NH * PN, NAN), gotDdt(T * c.NH),
          gotDtBias(c.NH), gotALog(c.NH);
      arith::SsdGradArgs a{};
      a.fwd = arith::SsdArgs{x.data(),  dt.data(), dtBias.data(), aLog.data(),
                             Bm.data(), Cm.data(), D.data(),      opt(stateIn, 0),
                             c.B,       c.S,       c.chunks,      c.NH,
                             c.P,       c.G,       c.N,           nullptr,
                             nullptr,   nullptr,   nullptr,       nullptr,
                             nullptr};
      a.dy = dy.data();
      a.dstate = opt(dstate, 0);
      a.ddecay = opt(ddecay, 0);
      a.dx = dx.data();
      a.ddt = gotDdtv.data();
      a.dA = gotDA.data();
      a.dB = dB.data();
      a.dC = dC.data();
      a.dD = gotDD.data();
      a.dstateIn = state.data();
      ssdGradOnHost(a, c.B * c.chunks, L, reversed);
      for (int64_t h = 0; h < c.NH; ++h)
        arith::ssdPreludeGradLane(dt.data(), dtBias.data(), aLog.data(), gotDdtv.data(),
                                  gotDA.data(), T, c.NH, h, gotDdt.data(), gotDtBias.data(),
                                  gotALog.data());
      if (!reversed) {
        expectCloseToScale(dx, wantDx, 2e-6f);
        expectCloseToScale(gotDdtv, ddt, 2e-6f);
        expectCloseToScale(dB, wantDB, 2e-6f);
        expectCloseToScale(dC, wantDC, 2e-6f);
        expectCloseToScale(gotDA, dA, 2e-6f);
        expectCloseToScale(gotDD, dD, 2e-6f);
        expectCloseToScale(state, wantState, 2e-6f);
        expectCloseToScale(gotDdt, wantDdt, 2e-6f);
        expectCloseToScale(gotDtBias, wantDtBias, 2e-6f);
        expectCloseToScale(gotALog, wantALog, 2e-6f);
        firstRun[0] = dx, firstRun[1] = gotDdtv, firstRun[2] = dB, firstRun[3] = dC;
        firstRun[4] = gotDA, firstRun[5] = gotDD, firstRun[6] = state, firstRun[7] = gotDdt;
      } else {
        EXPECT_EQ(dx, firstRun[0]);
        EXPECT_EQ(gotDdtv, firstRun[1]);
        EXPECT_EQ(dB, firstRun[2]);
        EXPECT_EQ(dC, firstRun[3]);
        EXPECT_EQ(gotDA, firstRun[4]);
        EXPECT_EQ(gotDD, firstRun[5]);
        EXPECT_EQ(state, firstRun[6]);
        EXPECT_EQ(gotDdt, firstRun[7]);
      }
    }
  }
}

// The backward's launches: a block an item with SsdGradShared, which fits
// the 227 KiB a block of compute capability 9.0 may opt in to (and more
// than the 48 KiB without); the per-head dB and dC only with several heads
// a group; the scratch's arrays in order, aligned, within scratchBytes; the
// forward's refusals and heads not in whole groups refused.
TEST(CudaArithGrad, SsdScanBackwardLaunchCoversEveryItem) {
  gpu::SsdGradLaunch launch;
  std::string error;
  ASSERT_TRUE(gpu::ssdGradLaunch(6, 90, 4, 33, 2, 65, launch, error)) << error;
  EXPECT_EQ(launch.fwd.items, 6 * 2 * 4);
  EXPECT_EQ(launch.block.blocks, launch.fwd.items);
  EXPECT_EQ(launch.block.threads, arith::kSsdThreads);
  EXPECT_GT(launch.block.sharedBytes, gpu::kDefaultSharedBytes);
  EXPECT_LE(launch.block.sharedBytes, 227 * 1024);
  EXPECT_EQ(launch.heads.blocks, (6 * 90 * 2 * 65 + 255) / 256);
  EXPECT_EQ(launch.rates.blocks, 1);
  const int64_t offsets[] = {launch.fwd.scratchBytes, launch.cotOffset,   launch.dBhOffset,
                             launch.dChOffset,        launch.partAOffset, launch.partDOffset,
                             launch.decayCotOffset,   launch.scratchBytes};
  for (size_t i = 1; i < std::size(offsets); ++i) {
    EXPECT_LE(offsets[i - 1], offsets[i]);
    EXPECT_EQ(offsets[i] % 256, 0);
  }
  EXPECT_EQ(launch.cotOffset, launch.fwd.scratchBytes);
  EXPECT_GE(launch.dBhOffset - launch.cotOffset, 48 * 33 * 65 * 4);
  EXPECT_GE(launch.dChOffset - launch.dBhOffset, 6 * 90 * 4 * 65 * 4);
  EXPECT_GE(launch.scratchBytes - launch.decayCotOffset, 6 * 4 * 8);
  ASSERT_TRUE(gpu::ssdGradLaunch(2, 64, 3, 8, 3, 16, launch, error)) << error;
  EXPECT_EQ(launch.heads.blocks, 0);
  EXPECT_EQ(launch.dChOffset, launch.dBhOffset);
  EXPECT_EQ(launch.partAOffset, launch.dBhOffset);
  EXPECT_FALSE(gpu::ssdGradLaunch(1, 64, 4, 8, 3, 16, launch, error));
  EXPECT_EQ(error, "the CUDA SSD scan's backward takes heads in whole groups, not 4 heads in 3 "
                   "groups");
  EXPECT_FALSE(gpu::ssdGradLaunch(1, 64, 1, 0, 1, 8, launch, error));
  EXPECT_NE(error.find("head dim and a state size of at least 1"), std::string::npos) << error;
}

// A block a row's group, double sums across its threads against the CPU's
// sequential ones: 1e-6; dweight a thread a channel over the rows in order.
TEST(CudaArithGrad, GatedNormBackwardByGroupsMatchesTheCpuKernels) {
  const int64_t T = 7, C = 96, groups = 3, width = C / groups;
  const float eps = 1e-5f;
  std::vector<float> y = test::normalVector(T * C, 112), z = test::normalVector(T * C, 113),
                     w = test::normalVector(C, 114), dout = test::normalVector(T * C, 115);
  std::vector<float> wantDy(T * C), wantDz(T * C), wantDw(C);
  cpu::gated_rms_norm_grad(y.data(), z.data(), w.data(), dout.data(), T, C, groups, eps,
                           wantDy.data(), wantDz.data());
  cpu::gated_rms_norm_grad_weight(y.data(), z.data(), dout.data(), T, C, groups, eps,
                                  wantDw.data());
  int threads = gpu::rowShape(T * groups, width, true).threads;
  std::vector<float> dy(T * C), dz(T * C), dw(C);
  std::vector<double> inverse(T * groups);
  for (int64_t rg = 0; rg < T * groups; ++rg) {
    int64_t base = rg * width, g = rg % groups;
    double squares =
        stridedSum(width, threads, [&](int64_t i) { return (double)y[base + i] * y[base + i]; });
    double yu = stridedSum(width, threads, [&](int64_t i) {
      return y[base + i] * arith::gatedNormGradU(dout[base + i], w[g * width + i], z[base + i]);
    });
    double r = inverse[rg] = arith::inverseRmsGrad(squares, width, eps);
    for (int64_t i = 0; i < width; ++i) {
      double u = arith::gatedNormGradU(dout[base + i], w[g * width + i], z[base + i]);
      dy[base + i] = arith::gatedNormGradDy(y[base + i], u, r, yu, width);
      dz[base + i] =
          arith::gatedNormGradDz(dout[base + i], y[base + i], r, w[g * width + i], z[base + i]);
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    double acc = 0.0;
    for (int64_t t = 0; t < T; ++t)
      acc += arith::gatedNormGradWeightTerm(dout[t * C + c], y[t * C + c],
                                            inverse[t * groups + c / width], z[t * C + c]);
    dw[c] = (float)acc;
  }
  expectClose(dy, wantDy, 1e-6f);
  expectClose(dz, wantDz, 1e-6f);
  expectClose(dw, wantDw, 1e-6f);
}

// -- MoE's backward on dense slabs -----------------------------------------------------------

// The router's, the combine's (into slabs, and the weights'), and the
// dispatch's backward element by element: the CPU's arithmetic, equal.
TEST(CudaArithGrad, MoeRoutingCombineDispatchBackwardAreTheCpuKernels) {
  const int64_t T = 11, E = 5, k = 2, H = 7;
  std::vector<int32_t> idx(T * k);
  for (int64_t t = 0; t < T; ++t) {
    idx[t * k] = (int32_t)(t % E);
    idx[t * k + 1] = (int32_t)((t * 3 + 1) % E == t % E ? (t + 1) % E : (t * 3 + 1) % E);
  }
  std::vector<float> w = test::normalVector(T * k, 131), dw = test::normalVector(T * k, 132),
                     dy = test::normalVector(T * H, 133),
                     slabs = test::normalVector(E * T * H, 134);
  std::vector<float> want(T * E), got(T * E);
  cpu::router_topk_grad(w.data(), idx.data(), dw.data(), T, k, E, want.data());
  for (int64_t t = 0; t < T; ++t)
    arith::routerGradToken(w.data() + t * k, idx.data() + t * k, dw.data() + t * k, k, E,
                           got.data() + t * E);
  EXPECT_EQ(got, want);
  std::vector<float> wantSlabs(E * T * H), gotSlabs(E * T * H, 0.0f);
  cpu::moe_combine_grad(w.data(), idx.data(), dy.data(), T, H, k, E, wantSlabs.data());
  for (int64_t i = 0; i < T * k * H; ++i)
    if (int64_t to = arith::dispatchTarget(idx.data(), T, H, k, E, i); to >= 0)
      gotSlabs[to] = arith::combineGradValue(w.data(), dy.data(), H, k, i);
  EXPECT_EQ(gotSlabs, wantSlabs);
  std::vector<float> wantW(T * k), gotW(T * k);
  cpu::moe_combine_grad_weights(slabs.data(), idx.data(), dy.data(), T, H, k, wantW.data());
  for (int64_t i = 0; i < T * k; ++i)
    gotW[i] =
        arith::combineGradWeight(slabs.data(), idx.data(), dy.data(), T, H, k, E, i / k, i % k);
  EXPECT_EQ(gotW, wantW);
  std::vector<float> wantDx(T * H), gotDx(T * H);
  cpu::moe_dispatch_grad(slabs.data(), idx.data(), T, H, k, wantDx.data());
  for (int64_t i = 0; i < T * H; ++i)
    gotDx[i] = arith::dispatchGradElement(slabs.data(), idx.data(), T, H, k, E, i / H, i % H);
  EXPECT_EQ(gotDx, wantDx);
}

namespace {

/// The routed sort on the host, thread by thread as moe_sort's kernels take
/// it: one per (chunk, expert) counts, one plans, one per (chunk, expert)
/// places.
struct HostSort {
  std::vector<int32_t> chunkCounts, counts, perm, rowOf;
  std::vector<int64_t> offsets, first, tiles;
};

HostSort hostSort(const std::vector<int32_t> &idx, int64_t E) {
  const int64_t n = (int64_t)idx.size(), chunks = arith::sortChunks(n);
  HostSort s;
  s.chunkCounts.resize(chunks * E);
  s.counts.resize(E);
  s.offsets.resize(E + 1);
  s.first.resize(chunks * E);
  s.tiles.resize(E + 1);
  s.perm.assign(n, -1);
  s.rowOf.assign(n, -1);
  auto chunk = [&](int64_t i, int64_t &begin, int64_t &end) {
    begin = (i / E) * arith::kSortChunk;
    end = std::min(begin + arith::kSortChunk, n);
  };
  for (int64_t i = 0; i < chunks * E; ++i) {
    int64_t begin, end;
    chunk(i, begin, end);
    s.chunkCounts[i] = arith::chunkCount(idx.data(), begin, end, (int32_t)(i % E));
  }
  arith::sortPlan(s.chunkCounts.data(), chunks, E, s.counts.data(), s.offsets.data(),
                  s.first.data(), s.tiles.data());
  for (int64_t i = 0; i < chunks * E; ++i) {
    int64_t begin, end;
    chunk(i, begin, end);
    arith::chunkPlace(idx.data(), begin, end, (int32_t)(i % E), s.first[i], s.perm.data(),
                      s.rowOf.data());
  }
  return s;
}

/// The tensor-core grouped product (grouped_tc.h) on the host: every block
/// of grouped_rows_tc's grid, in increasing or decreasing order, each with
/// its shared memory poisoned first, its threads and warps in that order.
template <typename A, typename T>
void groupedTcOnHost(const arith::GroupedTcArgs<A, T> &g, int64_t R, bool reversed = false) {
  HostBlock block{reversed, arith::kGtThreads};
  auto shared = std::make_unique<arith::GroupedTcShared<T>>();
  int64_t tiles = arith::maxGroupTiles(R, g.groups), columns = arith::groupedTcColumnBlocks(g.N);
  for (int64_t i = 0; i < tiles * columns; ++i) {
    int64_t b = reversed ? tiles * columns - 1 - i : i;
    std::memset(static_cast<void *>(shared.get()), 0x7f, sizeof(*shared));
    arith::groupedTcBlock(block, g, *shared, b / columns, b % columns);
  }
}

/// routedExperts' Ops on the host, as the backend's: each grouped product
/// of 16-bit weights (not transposed) walked as grouped_rows_tc's blocks
/// take it, the others by the blocks of grouped_rows (every row tile of the
/// launch's grid, each row covered exactly once, by its own group's tile),
/// each element by groupedDot over the operands as stored; grouped_outer's
/// elements by groupedOuter; SwiGLU and its gradient by the CPU's (arith.h's
/// equal them: above).
struct HostGroupedOps {
  const int64_t *offsets, *tiles;
  int64_t groups, count;
  void rows(gpu::Stored a, gpu::Stored w, bool transW, int64_t K, int64_t N, float *out) {
    if (!transW && arith::groupedTcTakes(a.type, w.type)) {
      arith::withStorage(w.type, 0, [&](auto wt) {
        using T = decltype(wt);
        if constexpr (!std::is_same_v<T, float>) {
          auto run = [&](auto *rowsOf) {
            using A = std::remove_const_t<std::remove_pointer_t<decltype(rowsOf)>>;
            groupedTcOnHost<A, T>(
                {rowsOf, static_cast<const T *>(w.data), K, N, offsets, tiles, groups, out}, count);
          };
          if (a.type == arith::Type::F32)
            run(static_cast<const float *>(a.data));
          else
            run(static_cast<const T *>(a.data));
        }
        return 0;
      });
      return;
    }
    arith::withStorage(a.type, 0, [&](auto at) {
      return arith::withStorage(w.type, 0, [&](auto wt) {
        rowsOf(static_cast<const decltype(at) *>(a.data), static_cast<const decltype(wt) *>(w.data),
               transW, K, N, out);
        return 0;
      });
    });
  }
  template <typename A, typename W>
  void rowsOf(const A *a, const W *w, bool transW, int64_t K, int64_t N, float *out) {
    std::vector<int> covered(count, 0);
    for (int64_t tile = 0; tile < arith::maxGroupTiles(count, groups); ++tile) {
      int64_t e = -1, row = 0, rows = 0;
      if (!arith::groupedTile(offsets, tiles, groups, tile, e, row, rows)) {
        EXPECT_GE(tile, tiles[groups]);
        continue;
      }
      EXPECT_GT(rows, 0);
      EXPECT_LE(rows, arith::kGroupTile);
      EXPECT_GE(row, offsets[e]);
      EXPECT_LE(row + rows, offsets[e + 1]);
      for (int64_t r = row; r < row + rows; ++r) {
        ++covered[r];
        for (int64_t n = 0; n < N; ++n)
          out[r * N + n] = arith::groupedDot(a, w + e * K * N, transW, K, N, r, n);
      }
    }
    for (int64_t r = 0; r < count; ++r)
      EXPECT_EQ(covered[r], 1) << "row " << r;
  }
  void outer(const float *a, int64_t M, const float *b, int64_t N, float *out) {
    for (int64_t e = 0; e < groups; ++e)
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n)
          out[(e * M + m) * N + n] =
              arith::groupedOuter(a, M, b, N, offsets[e], offsets[e + 1] - offsets[e], m, n);
  }
  void swiglu(const float *g, const float *u, int64_t n, float *o) { cpu::swiglu(g, u, n, o); }
  void swigluGrad(const float *g, const float *u, const float *d, int64_t n, float *dg, float *du) {
    cpu::swiglu_grad(g, u, d, n, dg, du);
  }
  void add(const float *a, const float *b, int64_t n, float *o) { cpu::add(a, b, n, o); }
};

/// A dropless layer on one rank: 2 x 70 tokens (two sort chunks of
/// choices), top-2 of 6 experts, expert 0 every token's first choice (many
/// row tiles), expert 5 never chosen (a group without rows), h = 20 and
/// f = 24 (partial tiles).
struct RoutedLayer {
  static constexpr int64_t B = 2, S = 70, T = B * S, H = 20, F = 24, E = 6, k = 2;
  std::vector<float> x = test::normalVector(T * H, 140), w = test::normalVector(T * k, 141),
                     gate = test::normalVector(E * H * F, 142, 0.3f),
                     up = test::normalVector(E * H * F, 143, 0.3f),
                     down = test::normalVector(E * F * H, 144, 0.3f),
                     dy = test::normalVector(T * H, 145);
  std::vector<int32_t> idx;
  RoutedLayer() {
    for (int64_t t = 0; t < T; ++t) {
      idx.push_back(0);
      idx.push_back((int32_t)(1 + (t * 7 + t / 3) % 4));
    }
  }
  /// The CPU's sl.moe_dropless (grad: its gradient) on one rank, into
  /// `results` (y; or dx, dweights, dgate, dup, ddown).
  void cpuStep(bool grad, std::vector<std::vector<float>> &results) {
    std::vector<std::vector<int64_t>> in = {{B, S, H}, {B, S, k}, {B, S, k},
                                            {E, H, F}, {E, H, F}, {E, F, H}};
    std::vector<std::vector<int64_t>> out = {{B, S, H}};
    if (grad) {
      in.push_back({B, S, H});
      out = {{B, S, H}, {B, S, k}, {E, H, F}, {E, H, F}, {E, F, H}};
    }
    test::StepRig rig(grad ? "moe_dropless_grad" : "moe_dropless", in, out,
                      {test::axesAttr({}), rt::AttrValue{}});
    rig.views = {rt::BufferView(x.data(), (int64_t)x.size()),
                 rt::BufferView(w.data(), (int64_t)w.size()),
                 rt::BufferView(idx.data(), (int64_t)idx.size()),
                 rt::BufferView(gate.data(), (int64_t)gate.size()),
                 rt::BufferView(up.data(), (int64_t)up.size()),
                 rt::BufferView(down.data(), (int64_t)down.size())};
    if (grad)
      rig.views.emplace_back(dy.data(), (int64_t)dy.size());
    results.clear();
    for (const std::vector<int64_t> &shape : out) {
      int64_t n = 1;
      for (int64_t d : shape)
        n *= d;
      results.emplace_back(n);
    }
    for (std::vector<float> &r : results)
      rig.views.emplace_back(r.data(), (int64_t)r.size());
    ASSERT_EQ(rig.verify(), "");
    rig.step.kernel->run(rig.step, rig.frame);
  }
};

} // namespace

// The device's counting sort, chunk by chunk and expert by expert, gives
// moe_dispatch's rows: the same counts, the same order of rows (perm), and
// rowOf its inverse; the row tiles cover each expert's rows.
TEST(CudaArith, RoutedSortIsTheCpuDispatchOrder) {
  RoutedLayer l;
  const int64_t R = l.T * l.k;
  ASSERT_GT(arith::sortChunks(R), 1);
  HostSort s = hostSort(l.idx, l.E);
  std::vector<float> sorted(R * l.H);
  std::vector<int32_t> counts(l.E), perm(R);
  cpu::moe_dispatch(l.x.data(), l.idx.data(), l.T, l.H, l.k, l.E, sorted.data(), counts.data(),
                    perm.data());
  EXPECT_EQ(s.counts, counts);
  EXPECT_EQ(s.perm, perm);
  EXPECT_EQ(s.counts[5], 0);
  EXPECT_GT(s.counts[0], 2 * arith::kGroupTile);
  for (int64_t i = 0; i < R; ++i)
    EXPECT_EQ(s.perm[s.rowOf[i]], i);
  int64_t tiles = 0;
  for (int64_t e = 0; e < l.E; ++e) {
    EXPECT_EQ(s.offsets[e + 1] - s.offsets[e], counts[e]);
    EXPECT_EQ(s.tiles[e], tiles);
    tiles += (counts[e] + arith::kGroupTile - 1) / arith::kGroupTile;
  }
  EXPECT_EQ(s.tiles[l.E], tiles);
  EXPECT_LE(tiles, arith::maxGroupTiles(R, l.E));
  // The rows the gather puts in sorted order are moe_dispatch's.
  std::vector<float> rows(R * l.H);
  for (int64_t i = 0; i < R * l.H; ++i)
    rows[i] = l.x[(s.perm[i / l.H] / l.k) * l.H + i % l.H];
  EXPECT_EQ(rows, sorted);
  // An index outside [0, E) is counted by no expert (the kernel counts it
  // as bad and the run stops).
  std::vector<int32_t> bad = l.idx;
  bad[7] = (int32_t)l.E;
  HostSort b = hostSort(bad, l.E);
  EXPECT_EQ(b.offsets[l.E], R - 1);
}

// The forward over the routed rows only, as the backend queues it on one
// rank (sort, gather, grouped GEMMs, combine), against the CPU's
// sl.moe_dropless: 1e-5 of the output's scale (fmaf chains in the order of
// the reduced index here, OpenBLAS's order there; the combine is the CPU's
// double sum in choice order).
TEST(CudaArith, RoutedExpertsForwardIsTheCpuDropless) {
  RoutedLayer l;
  const int64_t R = l.T * l.k;
  HostSort s = hostSort(l.idx, l.E);
  std::vector<float> sorted(R * l.H), out(R * l.H), scratch(2 * R * l.F), y(l.T * l.H);
  for (int64_t i = 0; i < R * l.H; ++i)
    sorted[i] = l.x[(s.perm[i / l.H] / l.k) * l.H + i % l.H];
  HostGroupedOps ops{s.offsets.data(), s.tiles.data(), l.E, R};
  gpu::routedExperts(ops,
                     {sorted.data(), nullptr, l.gate.data(), l.up.data(), l.down.data(), R, l.H,
                      l.F, out.data(), nullptr, nullptr, nullptr, nullptr, scratch.data()});
  for (int64_t i = 0; i < l.T * l.H; ++i)
    y[i] = arith::routedCombineElement(out.data(), s.rowOf.data(), l.w.data(), l.H, l.k, i / l.H,
                                       i % l.H);
  std::vector<std::vector<float>> want;
  l.cpuStep(false, want);
  expectCloseToScale(y, want[0], 1e-5f);
  // The combine alone is the CPU's exactly.
  std::vector<float> exact(l.T * l.H);
  cpu::moe_combine(out.data(), s.perm.data(), l.w.data(), l.T, l.H, l.k, exact.data());
  EXPECT_EQ(y, exact);
}

// The same forward over bf16 and f16 storage, as the backend queues a kept
// step: x's rows gathered and moved as stored, the grouped GEMMs on the
// tensor cores (the gate and up products of 16-bit rows; the down product
// of the f32 hidden values split in two bf16 parts against bf16 weights,
// on the f32 kernel against f16 ones), the outputs f32, the combine reading
// 16-bit router weights into a 16-bit y: y within half a unit of the type
// (its rounding) plus 3e-5 of y's scale of the forward over the widened
// values (the step the executor widens; the products differ only in the
// order of their f32 sums and the split's 2^-16), so the widened step's
// agreement with the CPU above carries over.
TYPED_TEST(CudaArith16Kernels, RoutedExpertsForwardIsTheWidenedForwardRounded) {
  using T = TypeParam;
  RoutedLayer l;
  const int64_t R = l.T * l.k, H = l.H, F = l.F;
  HostSort s = hostSort(l.idx, l.E);
  std::vector<T> x = test::roundedTo<T>(l.x), w = test::roundedTo<T>(l.w),
                 gate = test::roundedTo<T>(l.gate), up = test::roundedTo<T>(l.up),
                 down = test::roundedTo<T>(l.down);
  auto forward = [&](const auto &xs, const auto &ws, const auto &g, const auto &u, const auto &d,
                     auto *y) {
    using X = std::decay_t<decltype(xs[0])>;
    using W = std::decay_t<decltype(g[0])>;
    const gpu::arith::Type xt = arith::Storage<X>::type, wt = arith::Storage<W>::type;
    std::vector<X> sorted(R * H);
    for (int64_t i = 0; i < R * H; ++i)
      sorted[i] = xs[(s.perm[i / H] / l.k) * H + i % H];
    std::vector<float> out(R * H), scratch(2 * R * F);
    HostGroupedOps ops{s.offsets.data(), s.tiles.data(), l.E, R};
    gpu::routedExperts(ops, {{sorted.data(), xt},
                             nullptr,
                             {g.data(), wt},
                             {u.data(), wt},
                             {d.data(), wt},
                             R,
                             H,
                             F,
                             out.data(),
                             nullptr,
                             nullptr,
                             nullptr,
                             nullptr,
                             scratch.data()});
    for (int64_t i = 0; i < l.T * H; ++i)
      arith::storeElement(
          y, i,
          arith::routedCombineElement(out.data(), s.rowOf.data(), ws.data(), H, l.k, i / H, i % H));
  };
  std::vector<T> got(l.T * H);
  std::vector<float> wide(l.T * H);
  forward(x, w, gate, up, down, got.data());
  forward(test::widened(x), test::widened(w), test::widened(gate), test::widened(up),
          test::widened(down), wide.data());
  std::vector<float> gotWide = test::widened(got);
  float scale = 0.0f, unit = std::is_same_v<T, arith::Bf16> ? 0x1p-8f : 0x1p-11f;
  for (float v : wide)
    scale = std::max(scale, std::fabs(v));
  for (size_t i = 0; i < wide.size(); ++i)
    ASSERT_LE(std::fabs(gotWide[i] - wide[i]), unit * std::fabs(wide[i]) + 3e-5f * scale)
        << "at " << i;
}

// The tensor-core grouped product (grouped_tc.h) block by block, as
// grouped_rows_tc's grid takes it: rows of T against each expert's weights
// of T, and (bf16) f32 rows split in two bf16 parts, over 74 rows in three
// experts (the middle one without rows), K = 100 (a partial step) and
// N = 70 (a partial column block). Against groupedDot's f32 chain over the
// widened values: within 1e-5 of the sum of the terms' magnitudes (the
// order of the f32 sums), 3e-5 with the split (its 2^-16); the same bits
// with the blocks, threads and warps in reverse order; out past the rows
// untouched. f32 rows against f16 weights are not taken.
TYPED_TEST(CudaArith16Kernels, GroupedProductOnTheTensorCoresIsTheF32Chain) {
  using T = TypeParam;
  const int64_t R = 74, K = 100, N = 70, E = 3, guard = 5;
  std::vector<int64_t> offsets = {0, 30, 30, R}, tiles(E + 1, 0);
  for (int64_t e = 0; e < E; ++e)
    tiles[e + 1] =
        tiles[e] + (offsets[e + 1] - offsets[e] + arith::kGroupTile - 1) / arith::kGroupTile;
  std::vector<float> wideA = test::normalVector(R * K, 180);
  std::vector<T> a = test::roundedTo<T>(wideA),
                 w = test::roundedTo<T>(test::normalVector(E * K * N, 181, 0.3f));
  std::vector<float> wa = test::widened(a), ww = test::widened(w);
  auto check = [&](const auto *rows, const std::vector<float> &values, float tol) {
    using A = std::remove_const_t<std::remove_pointer_t<decltype(rows)>>;
    std::vector<float> out((R + guard) * N, -7.0f), again = out;
    arith::GroupedTcArgs<A, T> g{rows, w.data(), K, N, offsets.data(), tiles.data(), E, out.data()};
    groupedTcOnHost(g, R);
    g.out = again.data();
    groupedTcOnHost(g, R, true);
    EXPECT_EQ(out, again);
    float worst = 0.0f;
    for (int64_t e = 0; e < E; ++e)
      for (int64_t r = offsets[e]; r < offsets[e + 1]; ++r)
        for (int64_t n = 0; n < N; ++n) {
          float want = arith::groupedDot(values.data(), ww.data() + e * K * N, false, K, N, r, n);
          double scale = 0.0;
          for (int64_t p = 0; p < K; ++p)
            scale += std::fabs(values[r * K + p] * ww[e * K * N + p * N + n]);
          worst = std::max(worst, (float)(std::fabs(out[r * N + n] - want) / scale));
        }
    EXPECT_LE(worst, tol);
    for (int64_t i = R * N; i < (R + guard) * N; ++i)
      ASSERT_EQ(out[i], -7.0f) << "past the rows at " << i;
  };
  check(a.data(), wa, 1e-5f);
  if constexpr (std::is_same_v<T, arith::Bf16>) {
    EXPECT_TRUE(arith::groupedTcTakes(arith::Type::F32, arith::Type::BF16));
    check(wideA.data(), wideA, 3e-5f);
  } else {
    EXPECT_FALSE(arith::groupedTcTakes(arith::Type::F32, arith::Type::F16));
  }
  EXPECT_FALSE(arith::groupedTcTakes(arith::Type::F32, arith::Type::F32));
}

// The backward over the routed rows (each row's dout = weight·dy, the
// experts' grouped backward, each row's dweight = out·dy in double, dx
// summed in choice order), against the CPU's sl.moe_dropless_grad; the
// expert no token chose gets zero weight gradients.
TEST(CudaArithGrad, RoutedExpertsBackwardIsTheCpuDropless) {
  RoutedLayer l;
  const int64_t R = l.T * l.k, H = l.H, F = l.F;
  HostSort s = hostSort(l.idx, l.E);
  std::vector<float> sx(R * H), sdy(R * H), sw(R), dout(R * H), out(R * H), dxRows(R * H), dw(R),
      dGate(l.E * H * F, -1.0f), dUp(l.E * H * F, -1.0f), dDown(l.E * F * H, -1.0f),
      scratch(6 * R * F + R * H);
  for (int64_t i = 0; i < R * H; ++i) {
    int64_t t = s.perm[i / H] / l.k;
    sx[i] = l.x[t * H + i % H];
    sdy[i] = l.dy[t * H + i % H];
  }
  for (int64_t r = 0; r < R; ++r)
    sw[r] = l.w[s.perm[r]];
  for (int64_t i = 0; i < R * H; ++i)
    dout[i] = sw[i / H] * sdy[i];
  HostGroupedOps ops{s.offsets.data(), s.tiles.data(), l.E, R};
  gpu::routedExpertsGrad(ops, {sx.data(), dout.data(), l.gate.data(), l.up.data(), l.down.data(), R,
                               H, F, out.data(), dxRows.data(), dGate.data(), dUp.data(),
                               dDown.data(), scratch.data()});
  for (int64_t r = 0; r < R; ++r)
    dw[r] = arith::rowDot(out.data(), sdy.data(), H, r);
  std::vector<float> dx(l.T * H), dweights(R);
  for (int64_t i = 0; i < l.T * H; ++i)
    dx[i] = arith::routedDxElement(dxRows.data(), s.rowOf.data(), H, l.k, i / H, i % H);
  for (int64_t i = 0; i < R; ++i)
    dweights[i] = dw[s.rowOf[i]];
  std::vector<std::vector<float>> want;
  l.cpuStep(true, want);
  expectCloseToScale(dx, want[0], 1e-5f);
  expectCloseToScale(dweights, want[1], 1e-5f);
  expectCloseToScale(dGate, want[2], 1e-5f);
  expectCloseToScale(dUp, want[3], 1e-5f);
  expectCloseToScale(dDown, want[4], 1e-5f);
  for (int64_t i = 5 * H * F; i < 6 * H * F; ++i)
    ASSERT_EQ(dGate[i], 0.0f);
}

// The experts' backward over dense slabs (sl.moe_experts_grad and
// _grad_weights: the dense dispatch's slabs, capacity mode's buffers), as
// the backend runs it: each expert's rows one group of uniformGroups, the
// grouped GEMMs above; against the CPU's moe_experts_slabs_grad, which takes
// only the rows a token chose (the zero rows give zero): 1e-5.
TEST(CudaArithGrad, ExpertsBackwardOverWholeSlabsIsTheCpus) {
  const int64_t E = 3, T = 19, H = 6, F = 10;
  std::vector<float> tokens = test::normalVector(E * T * H, 135),
                     dout = test::normalVector(E * T * H, 136);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t t = 0; t < T; ++t)
      if ((t + e) % 3 == 0) // a row no token chose
        for (int64_t h = 0; h < H; ++h)
          tokens[(e * T + t) * H + h] = dout[(e * T + t) * H + h] = 0.0f;
  std::vector<float> wg = test::normalVector(E * H * F, 137, 0.3f),
                     wu = test::normalVector(E * H * F, 138, 0.3f),
                     wd = test::normalVector(E * F * H, 139, 0.3f);
  std::vector<int64_t> offsets(E + 1), tiles(E + 1), planOffsets(E + 1), planTiles(E + 1), first(E);
  arith::uniformGroups(E, T, offsets.data(), tiles.data());
  std::vector<int32_t> chunkCounts(E, (int32_t)T), counts(E);
  arith::sortPlan(chunkCounts.data(), 1, E, counts.data(), planOffsets.data(), first.data(),
                  planTiles.data());
  EXPECT_EQ(offsets, planOffsets);
  EXPECT_EQ(tiles, planTiles);
  std::vector<float> out(E * T * H), dtokens(E * T * H), dGate(E * H * F), dUp(E * H * F),
      dDown(E * F * H), scratch(6 * E * T * F + E * T * H);
  HostGroupedOps ops{offsets.data(), tiles.data(), E, E * T};
  gpu::routedExpertsGrad(ops, {tokens.data(), dout.data(), wg.data(), wu.data(), wd.data(), E * T,
                               H, F, out.data(), dtokens.data(), dGate.data(), dUp.data(),
                               dDown.data(), scratch.data()});
  std::vector<float> wantOut(E * T * H), wantD(E * T * H), wantGate(E * H * F), wantUp(E * H * F),
      wantDown(E * F * H);
  cpu::moe_experts_slabs(tokens.data(), E, T, wg.data(), wu.data(), wd.data(), H, F,
                         wantOut.data());
  cpu::moe_experts_slabs_grad(tokens.data(), E, T, wg.data(), wu.data(), wd.data(), H, F,
                              dout.data(), wantD.data(), wantGate.data(), wantUp.data(),
                              wantDown.data());
  expectCloseToScale(out, wantOut, 1e-5f);
  expectCloseToScale(dtokens, wantD, 1e-5f);
  expectCloseToScale(dGate, wantGate, 1e-5f);
  expectCloseToScale(dUp, wantUp, 1e-5f);
  expectCloseToScale(dDown, wantDown, 1e-5f);
  // Each op asks for its half only (moe_experts_grad: dtokens;
  // _grad_weights: the weight gradients), and gets the same values; what it
  // does not ask for is not written (nullptr).
  std::vector<float> dOnly(E * T * H, 7.0f), gateOnly(E * H * F, 7.0f), upOnly(E * H * F, 7.0f),
      downOnly(E * F * H, 7.0f), untouched(E * T * H, 7.0f);
  gpu::routedExpertsGrad(ops,
                         {tokens.data(), dout.data(), wg.data(), wu.data(), wd.data(), E * T, H, F,
                          nullptr, dOnly.data(), nullptr, nullptr, nullptr, scratch.data()});
  EXPECT_EQ(dOnly, dtokens);
  gpu::routedExpertsGrad(ops, {tokens.data(), dout.data(), wg.data(), wu.data(), wd.data(), E * T,
                               H, F, nullptr, nullptr, gateOnly.data(), upOnly.data(),
                               downOnly.data(), scratch.data()});
  EXPECT_EQ(gateOnly, dGate);
  EXPECT_EQ(upOnly, dUp);
  EXPECT_EQ(downOnly, dDown);
}

namespace {

/// Capacity-mode routing on 2 x 12 tokens, top-2 of 4 experts, groups of 1
/// row by 6 positions, capacity 3: expert 0 is every token's first choice
/// (over capacity in every group), weights with ties.
struct CapacityLayer {
  static constexpr int64_t B = 2, S = 12, k = 2, E = 4, C = 3, H = 5;
  std::vector<float> x = test::normalVector(B * S * H, 150),
                     dy = test::normalVector(B * S * H, 151);
  std::vector<float> w;
  std::vector<int32_t> idx;
  cpu::CapacityDims cpuDims() const {
    cpu::CapacityDims d;
    d.B = B, d.S = S, d.k = k, d.E = E, d.C = C, d.rows = 1, d.positions = 6;
    return d;
  }
  arith::Capacity dims() const {
    arith::Capacity d;
    d.B = B, d.S = S, d.k = k, d.E = E, d.C = C, d.rows = 1, d.positions = 6;
    return d;
  }
  CapacityLayer() {
    for (int64_t t = 0; t < B * S; ++t) {
      idx.push_back(0);
      idx.push_back((int32_t)(1 + t % 3));
      w.push_back(t % 4 == 1 ? 0.5f : 0.5f + 0.01f * (float)(t % 5));
      w.push_back(1.0f - w.back());
    }
  }
};

} // namespace

// The slots thread by thread (under probs one per choice ranking it, then one
// per group and expert numbering) are the CPU's, under both drop policies,
// and so are the rows each expert kept and dropped.
TEST(CudaArith, CapacitySlotsKeepAndDropTheCpusChoices) {
  CapacityLayer l;
  arith::Capacity d = l.dims();
  for (cpu::DropPolicy policy : {cpu::DropPolicy::Probs, cpu::DropPolicy::Position}) {
    bool probs = policy == cpu::DropPolicy::Probs;
    SCOPED_TRACE(probs ? "probs" : "position");
    std::vector<int32_t> want(l.idx.size()), got(l.idx.size(), -7);
    std::vector<int64_t> wantKept(l.E, 0), wantDropped(l.E, 0), kept(l.E, 0), dropped(l.E, 0);
    cpu::moe_capacity_slots(l.w.data(), l.idx.data(), l.cpuDims(), policy, want.data(),
                            wantKept.data(), wantDropped.data());
    if (probs)
      for (int64_t i = 0; i < (int64_t)l.idx.size(); ++i)
        arith::rankChoice(l.w.data(), l.idx.data(), d, i, got.data());
    for (int64_t i = 0; i < d.groups() * d.E; ++i) {
      int64_t k = 0, x = 0;
      arith::expertSlots(l.idx.data(), d, probs, i / d.E, (int32_t)(i % d.E), got.data(), &k, &x);
      kept[i % d.E] += k;
      dropped[i % d.E] += x;
    }
    EXPECT_EQ(got, want);
    EXPECT_EQ(kept, wantKept);
    EXPECT_EQ(dropped, wantDropped);
    EXPECT_GT(wantDropped[0], 0);
  }
}

// Dispatch, combine and their backward element by element, on the CPU's
// slots: the CPU's values, equal; a slot outside [-1, C) is caught.
TEST(CudaArithGrad, CapacityDispatchCombineAndBackwardAreTheCpus) {
  CapacityLayer l;
  arith::Capacity d = l.dims();
  cpu::CapacityDims cd = l.cpuDims();
  const int64_t H = l.H, n = l.B * l.S, rows = d.E * d.groups() * d.C;
  std::vector<int32_t> slots(l.idx.size());
  cpu::moe_capacity_slots(l.w.data(), l.idx.data(), cd, cpu::DropPolicy::Probs, slots.data(),
                          nullptr, nullptr);
  std::vector<float> buffers(rows * H, 0.0f), want(rows * H);
  for (int64_t i = 0; i < n * l.k * H; ++i)
    if (int64_t row = d.rowOf(l.idx.data(), slots.data(), i / H); row >= 0)
      buffers[row * H + i % H] = l.x[(i / (l.k * H)) * H + i % H];
  cpu::moe_dispatch_capacity(l.x.data(), l.idx.data(), slots.data(), cd, H, want.data());
  EXPECT_EQ(buffers, want);
  std::vector<float> y(n * H), wantY(n * H);
  for (int64_t i = 0; i < n * H; ++i)
    y[i] = arith::capacityCombineElement(buffers.data(), l.w.data(), l.idx.data(), slots.data(), d,
                                         H, i / H, i % H);
  cpu::moe_combine_capacity(buffers.data(), l.w.data(), l.idx.data(), slots.data(), cd, H,
                            wantY.data());
  EXPECT_EQ(y, wantY);
  std::vector<float> dx(n * H), wantDx(n * H);
  for (int64_t i = 0; i < n * H; ++i)
    dx[i] = arith::capacityDispatchGradElement(buffers.data(), l.idx.data(), slots.data(), d, H,
                                               i / H, i % H);
  cpu::moe_dispatch_capacity_grad(buffers.data(), l.idx.data(), slots.data(), cd, H, wantDx.data());
  EXPECT_EQ(dx, wantDx);
  std::vector<float> dbuffers(rows * H, 0.0f), wantDb(rows * H);
  for (int64_t i = 0; i < n * l.k * H; ++i)
    if (int64_t row = d.rowOf(l.idx.data(), slots.data(), i / H); row >= 0)
      dbuffers[row * H + i % H] = l.w[i / H] * l.dy[(i / (l.k * H)) * H + i % H];
  cpu::moe_combine_capacity_grad(l.w.data(), l.idx.data(), slots.data(), l.dy.data(), cd, H,
                                 wantDb.data());
  EXPECT_EQ(dbuffers, wantDb);
  std::vector<float> dw(n * l.k), wantDw(n * l.k);
  for (int64_t i = 0; i < n * l.k; ++i)
    dw[i] = arith::capacityCombineGradWeight(buffers.data(), l.idx.data(), slots.data(),
                                             l.dy.data(), d, H, i);
  cpu::moe_combine_capacity_grad_weights(buffers.data(), l.idx.data(), slots.data(), l.dy.data(),
                                         cd, H, wantDw.data());
  EXPECT_EQ(dw, wantDw);
  slots[3] = (int32_t)d.C;
  EXPECT_TRUE(arith::badSlot(slots.data(), d, 3));
  EXPECT_EQ(d.rowOf(l.idx.data(), slots.data(), 3), -1);
  EXPECT_FALSE(arith::badSlot(slots.data(), d, 2));
}

// MoE's forward over bf16 and f16 storage as its kernels' threads take it
// (the router a token a thread, the dense dispatch and combine and capacity
// mode's slots, dispatch and combine an element or a choice a thread),
// against the CPU kernels on the widened values with their results rounded
// (the executor's path for a widened step): the choices, slots and kept and
// dropped counts equal, the values equal bit for bit. Capacity mode's
// weights rounded to the type tie more often than the f32 layer's.
TYPED_TEST(CudaArith16Kernels, MoeForwardIsTheWidenedKernelsRounded) {
  using T = TypeParam;
  const int64_t Tk = 50, E = 8, k = 3, H = 5;
  std::vector<T> logits = test::roundedTo<T>(test::normalVector(Tk * E, 38, 2.0f));
  std::vector<T> weights(Tk * k);
  std::vector<int32_t> idx(Tk * k), wantIdx(Tk * k);
  for (int64_t t = 0; t < Tk; ++t)
    arith::routeToken(logits.data() + t * E, E, k, weights.data() + t * k, idx.data() + t * k);
  std::vector<float> wantWeights(Tk * k);
  cpu::router_topk(test::widened(logits).data(), Tk, E, k, wantWeights.data(), wantIdx.data());
  EXPECT_EQ(idx, wantIdx);
  test::expectSameBits(weights, test::roundedTo<T>(wantWeights));

  std::vector<T> x = test::roundedTo<T>(test::normalVector(Tk * H, 39)), slabs(E * Tk * H);
  for (int64_t i = 0; i < Tk * k * H; ++i)
    slabs[arith::dispatchTarget(idx.data(), Tk, H, k, E, i)] = x[(i / (k * H)) * H + i % H];
  std::vector<float> wantSlabs(E * Tk * H, 0.0f), wantY(Tk * H);
  cpu::moe_scatter_rows(test::widened(x).data(), idx.data(), Tk, H, k, wantSlabs.data());
  test::expectSameBits(slabs, test::roundedTo<T>(wantSlabs));
  std::vector<T> y(Tk * H);
  for (int64_t i = 0; i < Tk * H; ++i)
    arith::storeElement(
        y.data(), i,
        arith::combineElement(slabs.data(), weights.data(), idx.data(), Tk, H, k, E, i / H, i % H));
  cpu::moe_gather_rows(wantSlabs.data(), test::widened(weights).data(), idx.data(), Tk, H, k,
                       wantY.data());
  test::expectSameBits(y, test::roundedTo<T>(wantY));

  CapacityLayer l;
  arith::Capacity d = l.dims();
  cpu::CapacityDims cd = l.cpuDims();
  const int64_t n = l.B * l.S, rows = d.E * d.groups() * d.C;
  std::vector<T> w = test::roundedTo<T>(l.w), xc = test::roundedTo<T>(l.x);
  std::vector<float> wideW = test::widened(w), wideX = test::widened(xc);
  std::vector<int32_t> slots(l.idx.size());
  for (cpu::DropPolicy policy : {cpu::DropPolicy::Probs, cpu::DropPolicy::Position}) {
    bool probs = policy == cpu::DropPolicy::Probs;
    SCOPED_TRACE(probs ? "probs" : "position");
    std::vector<int32_t> want(l.idx.size());
    std::vector<int64_t> wantKept(l.E, 0), wantDropped(l.E, 0), kept(l.E, 0), dropped(l.E, 0);
    cpu::moe_capacity_slots(wideW.data(), l.idx.data(), cd, policy, want.data(), wantKept.data(),
                            wantDropped.data());
    std::fill(slots.begin(), slots.end(), -7);
    if (probs)
      for (int64_t i = 0; i < (int64_t)l.idx.size(); ++i)
        arith::rankChoice(w.data(), l.idx.data(), d, i, slots.data());
    for (int64_t i = 0; i < d.groups() * d.E; ++i) {
      int64_t kk = 0, xx = 0;
      arith::expertSlots(l.idx.data(), d, probs, i / d.E, (int32_t)(i % d.E), slots.data(), &kk,
                         &xx);
      kept[i % d.E] += kk;
      dropped[i % d.E] += xx;
    }
    EXPECT_EQ(slots, want);
    EXPECT_EQ(kept, wantKept);
    EXPECT_EQ(dropped, wantDropped);
  }
  std::vector<T> buffers(rows * H), yc(n * H);
  for (int64_t i = 0; i < n * l.k * H; ++i)
    if (int64_t row = d.rowOf(l.idx.data(), slots.data(), i / H); row >= 0)
      buffers[row * H + i % H] = xc[(i / (l.k * H)) * H + i % H];
  std::vector<float> wantBuffers(rows * H), wantYc(n * H);
  cpu::moe_dispatch_capacity(wideX.data(), l.idx.data(), slots.data(), cd, H, wantBuffers.data());
  test::expectSameBits(buffers, test::roundedTo<T>(wantBuffers));
  for (int64_t i = 0; i < n * H; ++i)
    arith::storeElement(yc.data(), i,
                        arith::capacityCombineElement(buffers.data(), w.data(), l.idx.data(),
                                                      slots.data(), d, H, i / H, i % H));
  cpu::moe_combine_capacity(wantBuffers.data(), wideW.data(), l.idx.data(), slots.data(), cd, H,
                            wantYc.data());
  test::expectSameBits(yc, test::roundedTo<T>(wantYc));
}

// -- the exchanges' duals (kernels/cuda/exchange_grad_arith.h) ---------------------------

namespace {

/// Rows `positions` of x [B, S, W] (the positions a rank holds), as
/// [B, positions, W].
std::vector<float> rowsAt(const std::vector<float> &x, int64_t B, int64_t S, int64_t W,
                          const std::vector<int64_t> &positions) {
  std::vector<float> out;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t p : positions)
      out.insert(out.end(), x.begin() + (b * S + p) * W, x.begin() + (b * S + p + 1) * W);
  return out;
}

} // namespace

// Ring attention's backward as exchange_grad.cpp runs it on each of three
// zigzag ranks: the forward per block by tiles merged by the log-sum-exps,
// the delta kernel, then per block the kernels of attention_grad_from_stats,
// dq and each block's carried dK, dV summed block by block in f32; against
// the CPU's attention backward over the whole sequence, 1e-5 of the largest
// gradient (f32 probabilities and sums in another order than the CPU's
// double softmax).
TEST(CudaExchangeGradArith, RingAttentionBackwardByBlocksIsTheWholeBackward) {
  const int64_t n = 3, L = 4, S = 2 * n * L, B = 2, HQ = 4, HKV = 2, D = 8;
  const int64_t qw = HQ * D, kw = HKV * D;
  std::vector<float> q = test::normalVector(B * S * qw, 81), k = test::normalVector(B * S * kw, 82),
                     v = test::normalVector(B * S * kw, 83), dy = test::normalVector(q.size(), 84);
  float scale = 1.0f / std::sqrt((float)D);
  // Member m holds zigzag chunks m and 2n - 1 - m.
  std::vector<std::vector<int64_t>> held(n);
  for (int64_t m = 0; m < n; ++m) {
    held[m] = iota(L, m * L);
    std::vector<int64_t> tail = iota(L, (2 * n - 1 - m) * L);
    held[m].insert(held[m].end(), tail.begin(), tail.end());
  }
  int64_t Sl = 2 * L;
  // dK, dV of each member's block as the ring carries them.
  std::vector<std::vector<float>> dkBlock(n, std::vector<float>(B * Sl * kw, 0.0f)),
      dvBlock = dkBlock;
  std::vector<std::vector<float>> dqOf(n);
  for (int64_t r = 0; r < n; ++r) {
    std::vector<int64_t> ring;
    for (int64_t i = 0; i < n; ++i)
      ring.push_back((r + i) % n);
    std::vector<float> qr = rowsAt(q, B, S, qw, held[r]), dyr = rowsAt(dy, B, S, qw, held[r]);
    auto caseOf = [&](int64_t member) {
      return AttentionCase{B, Sl, Sl, HQ, HKV, D, true, 0, held[r], held[member]};
    };
    auto memberAt = [&](int64_t i) { return ring[(n - i) % n]; };
    std::vector<float> out(qr.size()), lse(B * HQ * Sl), part(qr.size()), partLse(lse.size());
    for (int64_t i = 0; i < n; ++i) {
      int64_t m = memberAt(i);
      std::vector<float> km = rowsAt(k, B, S, kw, held[m]), vm = rowsAt(v, B, S, kw, held[m]);
      attentionAsTheKernel(caseOf(m), qr, km, vm, scale, i == 0 ? out : part,
                           i == 0 ? lse : partLse);
      if (i > 0)
        for (int64_t row = 0; row < B * Sl * HQ; ++row)
          arith::mergeRow(out.data(), lse.data(), part.data(), partLse.data(), Sl, HQ, D, row,
                          out.data(), lse.data());
    }
    std::vector<float> delta = deltaAsTheKernel(caseOf(r), dyr, out);
    std::vector<float> dq(qr.size(), 0.0f);
    for (int64_t i = 0; i < n; ++i) {
      int64_t m = memberAt(i);
      std::vector<float> km = rowsAt(k, B, S, kw, held[m]), vm = rowsAt(v, B, S, kw, held[m]);
      std::vector<float> dqPart(qr.size(), std::nanf("")), dkPart(km.size(), std::nanf("")),
          dvPart(km.size(), std::nanf(""));
      attentionGradFromStatsAsTheKernels(caseOf(m), qr, km, vm, dyr, lse, delta, scale, dqPart,
                                         dkPart, dvPart);
      for (size_t e = 0; e < dq.size(); ++e)
        dq[e] = dq[e] + dqPart[e];
      for (size_t e = 0; e < dkPart.size(); ++e) {
        dkBlock[m][e] = dkBlock[m][e] + dkPart[e];
        dvBlock[m][e] = dvBlock[m][e] + dvPart[e];
      }
    }
    dqOf[r] = dq;
  }
  std::vector<float> wantDq(q.size()), wantDk(k.size()), wantDv(v.size());
  cpu::AttentionDims dims{B, S, S, HQ, HKV, D};
  std::vector<int64_t> all = iota(S);
  cpu::attention_grad(q.data(), k.data(), v.data(), dy.data(), all.data(), all.data(), dims, true,
                      scale, wantDq.data());
  cpu::attention_grad_kv(q.data(), k.data(), v.data(), dy.data(), all.data(), all.data(), dims,
                         true, scale, wantDk.data(), wantDv.data());
  for (int64_t r = 0; r < n; ++r) {
    SCOPED_TRACE("member " + std::to_string(r));
    expectCloseToScale(dqOf[r], rowsAt(wantDq, B, S, qw, held[r]), 1e-5f);
    expectCloseToScale(dkBlock[r], rowsAt(wantDk, B, S, kw, held[r]), 1e-5f);
    expectCloseToScale(dvBlock[r], rowsAt(wantDv, B, S, kw, held[r]), 1e-5f);
  }
}

// halo_add on a rank that holds three chunks of two tokens with a halo of
// width 3 (so a token is read by two chunks' slots): the routes of
// comm/nccl_kernels.h the other way, one column a thread adding the rows in
// order, against the CPU kernel's loop over the halo's receives (each slot's
// row added onto its token): the same sums in the same order, equal.
TEST(CudaExchangeGradArith, HaloAddRowsInOrderAreTheCpusSums) {
  const int64_t B = 2, chunks = 3, L = 2, width = 3, rows = chunks * L, C = 5;
  const int64_t slots = chunks * width;
  rt::RankFacts facts;
  for (int64_t c = 0; c < chunks; ++c)
    for (int64_t j = 0; j < width; ++j) {
      int64_t pos = c * L - width + j;
      if (pos >= 0)
        facts.receives.push_back({0, pos, c * width + j});
    }
  rt::HaloRoutes routes = rt::haloRoutes(facts, 0, B, rows, slots, true);
  ASSERT_TRUE(routes.peers.empty());
  std::vector<float> g = test::normalVector(B * slots * C, 85);
  std::vector<float> want(B * rows * C, 0.0f), got = want;
  for (const rt::RankFacts::Row &r : facts.receives)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < C; ++c)
        want[(b * rows + r.row) * C + c] += g[(b * slots + r.slot) * C + c];
  for (int64_t c = 0; c < C; ++c)
    arith::addRowsColumn(g.data(), routes.selfFrom.data(), routes.selfTo.data(),
                         (int64_t)routes.selfFrom.size(), C, c, got.data());
  EXPECT_EQ(got, want);
  // Token 1 is read by chunk 1's last slot and chunk 2's first.
  for (int64_t c = 0; c < C; ++c)
    EXPECT_EQ(got[1 * C + c], g[(1 * width + 2) * C + c] + g[(2 * width + 0) * C + c]);
}

// The state exchange's dual, one (chunk, decay entry) a thread, from the
// chunks' initial-state cotangents and decays gathered in another order
// than the sequence's (as zigzag ranks hold them), against the CPU's reverse
// fold over the chunks: the same double arithmetic, equal.
TEST(CudaExchangeGradArith, StateExchangeGradIsTheCpuReverseCombination) {
  const int64_t chunks = 4, nd = 3, bcast = 5, size = nd * bcast;
  std::vector<float> dinit = test::normalVector(chunks * size, 86),
                     inits = test::normalVector(chunks * size, 87),
                     decays = test::normalVector(chunks * nd, 88, 0.5f);
  std::vector<float> wantStates(chunks * size), wantDecays(chunks * nd);
  cpu::scan_combine_states_grad(decays.data(), inits.data(), dinit.data(), nullptr, chunks, nd,
                                bcast, wantStates.data(), wantDecays.data(), nullptr);
  const std::vector<std::vector<int64_t>> held = {{0, 3}, {1, 2}};
  std::vector<float> gathered;
  std::vector<int64_t> dinitAt(chunks), decayAt(chunks);
  for (const std::vector<int64_t> &mine : held) {
    for (int64_t c : mine) {
      dinitAt[c] = (int64_t)gathered.size();
      gathered.insert(gathered.end(), dinit.begin() + c * size, dinit.begin() + (c + 1) * size);
    }
    for (int64_t c : mine) {
      decayAt[c] = (int64_t)gathered.size();
      gathered.insert(gathered.end(), decays.begin() + c * nd, decays.begin() + (c + 1) * nd);
    }
  }
  std::vector<float> gotStates(chunks * size, std::nanf("")), gotDecays(chunks * nd, std::nanf(""));
  for (int64_t c = 0; c < chunks; ++c)
    for (int64_t e = 0; e < nd; ++e)
      arith::stateExchangeGradEntry(gathered.data(), dinitAt.data(), decayAt.data(), chunks, c,
                                    bcast, inits.data() + c * size, e, gotStates.data() + c * size,
                                    gotDecays.data() + c * nd + e);
  EXPECT_EQ(gotStates, wantStates);
  EXPECT_EQ(gotDecays, wantDecays);
  for (int64_t j = 0; j < size; ++j)
    EXPECT_EQ(gotStates[(chunks - 1) * size + j], 0.0f) << "nothing follows the last chunk";
}

// Cross-entropy's backward over three vocabulary shards as the kernels
// compute it (the gathered sums combined per token, each element's gradient
// from the combined maximum and sum), against the CPU's xent_combine_sum and
// xent_grad on each shard (equal) and the whole vocabulary's gradient
// (1e-6).
TEST(CudaExchangeGradArith, ShardedCrossEntropyBackwardIsTheCpus) {
  const int64_t T = 6, V = 12, shards = 3, Vl = V / shards;
  std::vector<float> logits = test::normalVector(T * V, 89, 3.0f);
  std::vector<int32_t> labels = {0, 3, 4, 7, 8, 11};
  std::vector<std::vector<float>> shard = vocabularyShards(logits, T, V, shards);
  std::vector<float> maxes(shards * T), gmax(T);
  std::vector<const float *> maxPointers, sumPointers;
  for (int64_t m = 0; m < shards; ++m) {
    cpu::xent_local_max(shard[m].data(), T, Vl, maxes.data() + m * T);
    maxPointers.push_back(maxes.data() + m * T);
  }
  cpu::xent_combine_max(maxPointers.data(), shards, T, gmax.data());
  std::vector<float> sums(shards * T);
  for (int64_t m = 0; m < shards; ++m) {
    cpu::xent_local_sumexp(shard[m].data(), gmax.data(), T, Vl, sums.data() + m * T);
    sumPointers.push_back(sums.data() + m * T);
  }
  std::vector<float> sum(T);
  cpu::xent_combine_sum(sumPointers.data(), shards, T, sum.data());
  std::vector<float> whole(T * V);
  cpu::cross_entropy_grad(logits.data(), labels.data(), T, V, whole.data());
  for (int64_t m = 0; m < shards; ++m) {
    SCOPED_TRACE("shard " + std::to_string(m));
    std::vector<float> want(T * Vl), got(T * Vl);
    cpu::xent_grad(shard[m].data(), labels.data(), gmax.data(), sum.data(), T, Vl, m * Vl, T,
                   want.data());
    for (int64_t e = 0; e < T * Vl; ++e) {
      int64_t t = e / Vl;
      float combined = arith::shardedSumExp(sums.data(), shards, T, t);
      EXPECT_EQ(combined, sum[t]);
      got[e] = arith::shardedGradElement(shard[m][e], labels[t], e % Vl, m * Vl, gmax[t], combined,
                                         1.0 / (double)T);
    }
    EXPECT_EQ(got, want);
    for (int64_t e = 0; e < T * Vl; ++e)
      EXPECT_NEAR(got[e], whole[(e / Vl) * V + m * Vl + e % Vl], 1e-6f) << "at " << e;
  }
}

// The SSD correction's backward, one lane a group of heads, the sequences in
// turn (whole, and two chunks of each batch entry with a state slot each),
// against the CPU table's calls of ssd_state_correct_grad a sequence at a
// time (dC and dA summed over them): the same double arithmetic, equal.
TEST(CudaExchangeGradArith, SsdCorrectionBackwardByGroupLanesIsTheCpuKernel) {
  const int64_t B = 2, S = 12, NH = 4, P = 2, G = 2, N = 3, PN = P * N;
  const int64_t T = B * S, xw = NH * P, bw = G * N;
  for (int64_t chunks : {1, 2}) {
    SCOPED_TRACE(std::to_string(chunks) + " chunks");
    const int64_t L = S / chunks, slots = B * chunks;
    std::vector<float> Cm = test::normalVector(T * bw, 91), dy = test::normalVector(T * xw, 92),
                       dt = test::normalVector(T * NH, 93), dtBias = test::normalVector(NH, 94),
                       aLog = test::normalVector(NH, 95, 0.5f),
                       init = test::normalVector(slots * NH * PN, 96);
    std::vector<float> dtv(T * NH), A(NH);
    cpu::ssd_prelude(dt.data(), dtBias.data(), aLog.data(), T, NH, dtv.data(), A.data());
    std::vector<float> wantDinit(slots * NH * PN), wantDC(T * bw, 0.0f), wantDdt(T * NH),
        wantDA(NH, 0.0f);
    cpu::SsdDims one{1, L, NH, P, G, N};
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < chunks; ++c) {
        int64_t row = b * S + c * L, slot = (c * B + b) * NH * PN;
        cpu::ssd_state_correct_grad(Cm.data() + row * bw, dtv.data() + row * NH, A.data(),
                                    init.data() + slot, dy.data() + row * xw, one,
                                    wantDinit.data() + slot, wantDC.data() + row * bw,
                                    wantDdt.data() + row * NH, wantDA.data());
      }
    std::vector<float> dinit(slots * NH * PN, std::nanf("")), dC(T * bw, std::nanf("")),
        ddt(T * NH, std::nanf("")), dA(NH, std::nanf(""));
    std::vector<double> scratch(G * arith::ssdCorrectGradLaneDoubles(S, P, N));
    arith::SsdCorrectGradArgs a{
        Cm.data(),    dtv.data(), A.data(),   init.data(), dy.data(),     B, S, chunks, NH, P, G, N,
        dinit.data(), dC.data(),  ddt.data(), dA.data(),   scratch.data()};
    for (int64_t grp = 0; grp < G; ++grp)
      arith::ssdCorrectGradLane(a, grp);
    EXPECT_EQ(dinit, wantDinit);
    EXPECT_EQ(dC, wantDC);
    EXPECT_EQ(ddt, wantDdt);
    EXPECT_EQ(dA, wantDA);
  }
}

// The RG-LRU correction's backward, one lane a channel, the sequences in
// turn (whole, and three chunks of each batch entry), against the CPU
// table's calls of rglru_state_correct_grad a sequence at a time (the
// parameters' f32 results added to once per call): equal.
TEST(CudaExchangeGradArith, RglruCorrectionBackwardByLanesIsTheCpuKernel) {
  const int64_t B = 2, S = 15, W = 5;
  for (int64_t chunks : {1, 3}) {
    SCOPED_TRACE(std::to_string(chunks) + " chunks");
    const int64_t L = S / chunks, slots = B * chunks;
    std::vector<float> x = test::normalVector(B * S * W, 97),
                       dy = test::normalVector(B * S * W, 98), wa = test::normalVector(W, 99),
                       ba = test::normalVector(W, 100), lambda = test::normalVector(W, 101),
                       init = test::normalVector(slots * W, 102);
    std::vector<float> wantDinit(slots * W), wantDx(B * S * W), wantWa(W, 0.0f), wantBa(W, 0.0f),
        wantLambda(W, 0.0f);
    cpu::RglruParamGrads dp{wantWa.data(), wantBa.data(), nullptr, nullptr, wantLambda.data()};
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < chunks; ++c) {
        int64_t rows = (b * S + c * L) * W, slot = (c * B + b) * W;
        cpu::rglru_state_correct_grad(x.data() + rows, wa.data(), ba.data(), lambda.data(),
                                      init.data() + slot, dy.data() + rows, 1, L, W,
                                      wantDinit.data() + slot, wantDx.data() + rows, dp);
      }
    std::vector<float> dinit(slots * W, std::nanf("")), dx(B * S * W, std::nanf("")),
        dwa(W, std::nanf("")), dba(W, std::nanf("")), dlambda(W, std::nanf(""));
    std::vector<double> scratch(L * W);
    arith::RglruCorrectGradArgs a{
        x.data(),      wa.data(), ba.data(),  lambda.data(), init.data(),
        dy.data(),     B,         S,          chunks,        W,
        dinit.data(),  dx.data(), dwa.data(), dba.data(),    dlambda.data(),
        scratch.data()};
    for (int64_t w = 0; w < W; ++w)
      arith::rglruCorrectGradLane(a, w);
    EXPECT_EQ(dinit, wantDinit);
    EXPECT_EQ(dx, wantDx);
    EXPECT_EQ(dwa, wantWa);
    EXPECT_EQ(dba, wantBa);
    EXPECT_EQ(dlambda, wantLambda);
  }
}
