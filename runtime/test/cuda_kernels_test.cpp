//===- cuda_kernels_test.cpp - CUDA kernels against the CPU reference ----===//
//
// Every CUDA kernel on a GPU against the CPU kernel of the same op, on random
// inputs, within the tolerance stated beside each test (relative:
// |got - want| <= tol * (1 + |want|)). The arithmetic itself is checked on the
// CPU (cuda_arith_test.cpp); what these add is the hardware path: the
// launches, shared memory, reductions across threads and the device's own
// math functions. Exits 77 ("skipped: no CUDA device (...)") on a machine
// without a CUDA device or driver.
//
//===----------------------------------------------------------------------===//

#include "backends/cuda/lt_gemm.h"
#include "comm/group.h"
#include "comm/movement.h"
#include "core/buffer.h"
#include "device/device.h"
#include "kernel_test_util.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cuda/exchange.h"
#include "kernels/cuda/exchange_grad.h"
#include "kernels/cuda/kernels.h"
#include "kernels/cuda/kernels_grad.h"
#include "kernels/cuda/kernels_moe.h"
#include "kernels/cuda/probe.h"
#include "kernels/cuda/ssd_arith.h"
#include "sixteen_bit_util.h"
#include "ssd_test_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace rt = shardline::rt;
namespace cpu = shardline::rt::cpu;
namespace gpu = shardline::rt::cuda;
namespace test = shardline::rt::test;

namespace {

/// Device memory holding a host vector's elements.
template <typename T> struct DeviceBuffer {
  explicit DeviceBuffer(const std::vector<T> &host) : n(host.size()) {
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void **>(&ptr), bytes()), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(ptr, host.data(), bytes(), cudaMemcpyHostToDevice), cudaSuccess);
  }
  explicit DeviceBuffer(size_t n) : n(n) {
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void **>(&ptr), bytes()), cudaSuccess);
    EXPECT_EQ(cudaMemset(ptr, 0, bytes()), cudaSuccess);
  }
  ~DeviceBuffer() { cudaFree(ptr); }
  size_t bytes() const { return std::max<size_t>(1, n) * sizeof(T); }
  std::vector<T> read() const {
    std::vector<T> out(n);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(out.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return out;
  }
  T *ptr = nullptr;
  size_t n;
};

/// A buffer as a kernel's typed operand or result.
template <typename T> gpu::Src srcOf(const DeviceBuffer<T> &b) {
  return {b.ptr, gpu::arith::Storage<T>::type};
}
template <typename T> gpu::Dst dstOf(DeviceBuffer<T> &b) {
  return {b.ptr, gpu::arith::Storage<T>::type};
}

void expectClose(const std::vector<float> &got, const std::vector<float> &want, float tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], tol * (1.0f + std::fabs(want[i]))) << "at " << i;
}

} // namespace

// Conversions are exact: the device rounds as the CPU device does, bit for
// bit, for every type pair.
TEST(CudaKernels, ConversionsRoundAsTheCpuDevice) {
  const int64_t n = 70001;
  std::vector<float> values = test::normalVector(n, 1, 1000.0f);
  for (int64_t i = 0; i < n; i += 3)
    values[i] = std::round(values[i]);
  rt::CpuDevice host;
  for (rt::DType type : {rt::DType::BF16, rt::DType::F16, rt::DType::I32}) {
    SCOPED_TRACE(rt::dtypeName(type));
    std::vector<float> integral(values);
    if (type == rt::DType::I32)
      for (float &v : integral)
        v = std::round(v);
    DeviceBuffer<float> from(integral);
    DeviceBuffer<uint32_t> narrow((size_t)n);
    ASSERT_EQ(gpu::convert(from.ptr, gpu::arith::Type::F32, narrow.ptr, (gpu::arith::Type)type, n,
                           nullptr),
              cudaSuccess);
    std::vector<uint32_t> want((size_t)n);
    host.convert(rt::BufferView(integral.data(), n), rt::BufferView(want.data(), n, type));
    std::vector<uint32_t> got = narrow.read();
    EXPECT_EQ(0, std::memcmp(got.data(), want.data(), (size_t)(n * rt::dtypeSize(type))));
    DeviceBuffer<float> back((size_t)n);
    ASSERT_EQ(gpu::convert(narrow.ptr, (gpu::arith::Type)type, back.ptr, gpu::arith::Type::F32, n,
                           nullptr),
              cudaSuccess);
    std::vector<float> wantBack((size_t)n);
    host.convert(rt::BufferView(want.data(), n, type), rt::BufferView(wantBack.data(), n));
    EXPECT_EQ(back.read(), wantBack);
  }
}

// add and mul are exact; silu and swiglu use the device's expf: 1e-5.
TEST(CudaKernels, ElementwiseMatchTheReference) {
  const int64_t n = 100003;
  auto a = test::normalVector(n, 1, 4.0f), b = test::normalVector(n, 2);
  DeviceBuffer<float> da(a), db(b), out((size_t)n);
  std::vector<float> want(n);
  ASSERT_EQ(gpu::add(da.ptr, db.ptr, n, out.ptr, nullptr), cudaSuccess);
  cpu::add(a.data(), b.data(), n, want.data());
  expectClose(out.read(), want, 0.0f);
  ASSERT_EQ(gpu::mul(da.ptr, db.ptr, n, out.ptr, nullptr), cudaSuccess);
  cpu::mul(a.data(), b.data(), n, want.data());
  expectClose(out.read(), want, 0.0f);
  ASSERT_EQ(gpu::silu(da.ptr, n, out.ptr, nullptr), cudaSuccess);
  cpu::silu(a.data(), n, want.data());
  expectClose(out.read(), want, 1e-5f);
  ASSERT_EQ(gpu::swiglu(da.ptr, db.ptr, n, out.ptr, nullptr), cudaSuccess);
  cpu::swiglu(a.data(), b.data(), n, want.data());
  expectClose(out.read(), want, 1e-5f);
}

// GeLU, sigmoid and softplus in double on both sides: 1e-6 (the device's
// erf, exp and log1p).
TEST(CudaKernels, GeluSigmoidSoftplusMatchTheReference) {
  const int64_t n = 50001;
  auto x = test::normalVector(n, 11, 6.0f);
  DeviceBuffer<float> dx(x), out((size_t)n);
  std::vector<float> want(n);
  ASSERT_EQ(gpu::gelu(dx.ptr, n, out.ptr, nullptr), cudaSuccess);
  cpu::gelu(x.data(), n, want.data());
  expectClose(out.read(), want, 1e-6f);
  ASSERT_EQ(gpu::sigmoid(dx.ptr, n, out.ptr, nullptr), cudaSuccess);
  cpu::sigmoid(x.data(), n, want.data());
  expectClose(out.read(), want, 1e-6f);
  ASSERT_EQ(gpu::softplus(dx.ptr, n, out.ptr, nullptr), cudaSuccess);
  cpu::softplus(x.data(), n, want.data());
  expectClose(out.read(), want, 1e-6f);
}

// The group's sum of squares in f32, silu in f32: 1e-5.
TEST(CudaKernels, GatedRmsNormMatchesTheReference) {
  const int64_t T = 33, C = 384, groups = 4;
  auto y = test::normalVector(T * C, 12), z = test::normalVector(T * C, 13),
       w = test::normalVector(C, 14);
  DeviceBuffer<float> dy(y), dz(z), dw(w), out((size_t)(T * C));
  ASSERT_EQ(gpu::gated_rms_norm(dy.ptr, dz.ptr, dw.ptr, T, C, groups, 1e-5f, out.ptr, nullptr),
            cudaSuccess);
  std::vector<float> want(T * C);
  cpu::gated_rms_norm(y.data(), z.data(), w.data(), T, C, groups, 1e-5f, want.data());
  expectClose(out.read(), want, 1e-5f);
}

// Double accumulation on both sides; the device may fuse multiply-adds: 1e-6.
TEST(CudaKernels, CausalConvWithHalosMatchesTheReference) {
  const int64_t B = 2, S = 64, chunks = 2, C = 48, W = 4;
  auto x = test::normalVector(B * S * C, 15), w = test::normalVector(C * W, 16),
       bias = test::normalVector(C, 17), halo = test::normalVector(B * chunks * (W - 1) * C, 18);
  DeviceBuffer<float> dx(x), dw(w), dbias(bias), dhalo(halo), out(x.size());
  ASSERT_EQ(gpu::causal_conv1d(dx.ptr, dw.ptr, dbias.ptr, dhalo.ptr, {B, S, chunks}, C, W, out.ptr,
                               nullptr),
            cudaSuccess);
  expectClose(out.read(), test::convOnCpu(x, w, bias, halo.data(), B, S, chunks, C, W), 1e-6f);
}

// The chunked scan against the CPU's in the same chunks of 64
// (cpu::ssd_scan), each sequence from its slot as the CPU table walks them,
// on the shapes of cuda_arith_test.cpp (ssd_test_util.h: partial and full
// last chunks, three sequences of a batch entry in their own slots, one
// group for several heads, P and N not powers of two, state_in and D present
// and absent, one of a model's size). The host's run of the same
// arithmetic is within 1.1e-5 of the CPU's (at N = 128); the device's double
// exp and its FMAs outside the products add a few ulps: 5e-5 on y and the
// states, as on the host, 1e-6 on the decays.
TEST(CudaKernels, SsdScanMatchesTheReference) {
  unsigned seed = 19;
  for (const test::SsdShape &c : test::ssdShapes()) {
    SCOPED_TRACE(testing::Message()
                 << "B " << c.B << " S " << c.S << " chunks " << c.chunks << " NH " << c.NH << " P "
                 << c.P << " G " << c.G << " N " << c.N);
    const int64_t slots = c.chunks * c.B;
    test::SsdData in = test::ssdData(c, seed += 10);
    DeviceBuffer<float> dx(in.x), ddt(in.dt), ddtBias(in.dtBias), daLog(in.aLog), dB(in.Bm),
        dC(in.Cm), dD(in.D), dstate(in.stateIn), y(in.x.size()), state(in.stateIn.size()),
        decay((size_t)(slots * c.NH));
    gpu::SsdLaunch launch;
    std::string error;
    ASSERT_TRUE(gpu::ssdLaunch(slots, c.S / c.chunks, c.NH, c.P, c.N, launch, error)) << error;
    DeviceBuffer<char> scratch((size_t)launch.scratchBytes);
    ASSERT_EQ(gpu::ssd_scan(dx.ptr, ddt.ptr, ddtBias.ptr, daLog.ptr, dB.ptr, dC.ptr,
                            c.withD ? dD.ptr : nullptr, c.withState ? dstate.ptr : nullptr,
                            {c.B, c.S, c.chunks}, c.NH, c.P, c.G, c.N, y.ptr, state.ptr, decay.ptr,
                            launch, scratch.ptr, nullptr),
              cudaSuccess);
    test::SsdResult want = test::ssdOnCpu(c, in, gpu::arith::kSsdChunk).chunked;
    expectClose(y.read(), want.y, 5e-5f);
    expectClose(state.read(), want.state, 5e-5f);
    expectClose(decay.read(), want.decay, 1e-6f);
  }
}

// The same double recurrence; the gates in f32, which the device may fuse:
// 1e-5.
TEST(CudaKernels, RglruScanMatchesTheReference) {
  const int64_t B = 2, S = 100, W = 96;
  auto x = test::normalVector(B * S * W, 27), wa = test::normalVector(W, 28),
       ba = test::normalVector(W, 29), wx = test::normalVector(W, 30),
       bx = test::normalVector(W, 31), lambda = test::normalVector(W, 32);
  DeviceBuffer<float> dx(x), dwa(wa), dba(ba), dwx(wx), dbx(bx), dlambda(lambda), y(x.size()),
      state((size_t)(B * W)), decay((size_t)(B * W));
  ASSERT_EQ(gpu::rglru_scan(dx.ptr, dwa.ptr, dba.ptr, dwx.ptr, dbx.ptr, dlambda.ptr, nullptr,
                            {B, S, 1}, W, y.ptr, state.ptr, decay.ptr, nullptr),
            cudaSuccess);
  std::vector<float> gateA(x.size()), gateX(x.size()), wantY(x.size()), wantState(B * W),
      wantDecay(B * W);
  cpu::rglru_gates(x.data(), wa.data(), ba.data(), wx.data(), bx.data(), B * S, W, gateA.data(),
                   gateX.data());
  cpu::rglru_scan(x.data(), gateA.data(), gateX.data(), lambda.data(), nullptr, B, S, W,
                  wantY.data(), wantState.data(), wantDecay.data());
  expectClose(y.read(), wantY, 1e-5f);
  expectClose(state.read(), wantState, 1e-5f);
  expectClose(decay.read(), wantDecay, 1e-5f);
}

// Routing: the same choices and the same double softmax (the device's exp):
// 1e-6 on the weights. Dispatch is a copy (exact); the combine sums in f32
// in the same order, perhaps fused: 1e-6.
TEST(CudaKernels, MoeRoutingDispatchCombineMatchTheReference) {
  const int64_t T = 300, E = 8, k = 2, H = 64;
  auto logits = test::normalVector(T * E, 33, 2.0f), x = test::normalVector(T * H, 34);
  DeviceBuffer<float> dlogits(logits), weights((size_t)(T * k)), dx(x), slabs((size_t)(E * T * H)),
      y((size_t)(T * H));
  DeviceBuffer<int32_t> idx((size_t)(T * k)), bad((size_t)1);
  ASSERT_EQ(gpu::router_topk(srcOf(dlogits), T, E, k, dstOf(weights), idx.ptr, nullptr),
            cudaSuccess);
  std::vector<float> wantWeights(T * k);
  std::vector<int32_t> wantIdx(T * k);
  cpu::router_topk(logits.data(), T, E, k, wantWeights.data(), wantIdx.data());
  ASSERT_EQ(idx.read(), wantIdx);
  expectClose(weights.read(), wantWeights, 1e-6f);
  ASSERT_EQ(gpu::moe_dispatch(srcOf(dx), idx.ptr, T, H, k, E, dstOf(slabs), bad.ptr, nullptr),
            cudaSuccess);
  std::vector<float> wantSlabs(E * T * H, 0.0f);
  cpu::moe_scatter_rows(x.data(), wantIdx.data(), T, H, k, wantSlabs.data());
  std::vector<float> gotSlabs = slabs.read();
  expectClose(gotSlabs, wantSlabs, 0.0f);
  ASSERT_EQ(gpu::moe_combine(srcOf(slabs), srcOf(weights), idx.ptr, T, H, k, E, dstOf(y), bad.ptr,
                             nullptr),
            cudaSuccess);
  std::vector<float> wantY(T * H);
  cpu::moe_gather_rows(wantSlabs.data(), wantWeights.data(), wantIdx.data(), T, H, k, wantY.data());
  expectClose(y.read(), wantY, 1e-6f);
  EXPECT_EQ(bad.read()[0], 0);
}

// The sum of squares in f32 across the block against the CPU's double: 1e-5.
TEST(CudaKernels, RmsNormMatchesTheReference) {
  for (int64_t H : {1, 100, 1000, 5000}) {
    SCOPED_TRACE(H);
    const int64_t T = 37;
    auto x = test::normalVector(T * H, 3), w = test::normalVector(H, 4);
    DeviceBuffer<float> dx(x), dw(w), dy((size_t)(T * H));
    ASSERT_EQ(gpu::rms_norm(dx.ptr, dw.ptr, T, H, 1e-5f, dy.ptr, nullptr), cudaSuccess);
    std::vector<float> want(T * H);
    cpu::rms_norm(x.data(), w.data(), T, H, 1e-5f, want.data());
    expectClose(dy.read(), want, 1e-5f);
  }
}

// A copy: exact, and every id outside the vocabulary counted.
TEST(CudaKernels, EmbeddingMatchesTheReferenceAndCountsBadIds) {
  const int64_t T = 300, rows = 64, H = 48, offset = 64, vocab = 128;
  auto table = test::normalVector(rows * H, 5);
  std::vector<int32_t> ids(T);
  for (int64_t t = 0; t < T; ++t)
    ids[t] = (int32_t)((t * 37) % vocab);
  ids[7] = 128;
  ids[9] = -3;
  DeviceBuffer<int32_t> dids(ids), bad((size_t)1);
  DeviceBuffer<float> dtable(table), out((size_t)(T * H));
  ASSERT_EQ(
      gpu::embedding(dids.ptr, T, dtable.ptr, rows, H, offset, vocab, out.ptr, bad.ptr, nullptr),
      cudaSuccess);
  std::vector<float> want(T * H);
  cpu::embedding(ids.data(), T, table.data(), rows, H, offset, want.data());
  expectClose(out.read(), want, 0.0f);
  EXPECT_EQ(bad.read()[0], 2);
}

// The device's double pow, sin and cos: 1e-6 at positions up to 10^6.
TEST(CudaKernels, RopeMatchesTheReference) {
  const int64_t B = 2, S = 50, NH = 4, D = 32;
  auto x = test::normalVector(B * S * NH * D, 6);
  std::vector<int64_t> positions(S);
  for (int64_t s = 0; s < S; ++s)
    positions[s] = s * 20011;
  DeviceBuffer<float> dx(x), out(x.size());
  DeviceBuffer<int64_t> dpos(positions);
  ASSERT_EQ(gpu::rope(dx.ptr, dpos.ptr, B, S, NH, D, 10000.0f, out.ptr, nullptr), cudaSuccess);
  std::vector<float> want(x.size());
  cpu::rope(x.data(), positions.data(), B, S, NH, D, 10000.0f, want.data());
  expectClose(out.read(), want, 1e-6f);
}

/// The attention shapes both directions are checked on: causal GQA, head dims
/// of each accumulator length, not causal with more keys than queries, a
/// sequence shorter than a tile, and sliding-window.
struct AttentionCase {
  int64_t B, Sq, Sk, HQ, HKV, D;
  bool causal;
  int64_t window;
};
const AttentionCase kAttentionCases[] = {{2, 200, 200, 8, 2, 64, true, 0},
                                         {1, 77, 77, 4, 4, 128, true, 0},
                                         {1, 40, 130, 2, 1, 256, false, 0},
                                         {3, 5, 5, 2, 1, 16, true, 0},
                                         {2, 150, 150, 4, 2, 32, true, 17}};

// An f32 online softmax against the CPU's double softmax over f32 scores:
// 1e-4 on the outputs and the log-sum-exp; causal, not, and sliding-window.
TEST(CudaKernels, CausalGqaAttentionMatchesTheReference) {
  for (const AttentionCase &c : kAttentionCases) {
    SCOPED_TRACE(c.D);
    auto q = test::normalVector(c.B * c.Sq * c.HQ * c.D, 7),
         k = test::normalVector(c.B * c.Sk * c.HKV * c.D, 8),
         v = test::normalVector(c.B * c.Sk * c.HKV * c.D, 9);
    std::vector<int64_t> qPos(c.Sq), kPos(c.Sk);
    for (int64_t i = 0; i < c.Sq; ++i)
      qPos[i] = c.Sk - c.Sq + i;
    for (int64_t j = 0; j < c.Sk; ++j)
      kPos[j] = j;
    float scale = 1.0f / std::sqrt((float)c.D);
    gpu::AttentionTiling tiling;
    std::string error;
    ASSERT_TRUE(gpu::attentionTiling(c.B, c.HQ, c.Sq, c.D, tiling, error)) << error;
    DeviceBuffer<float> dq(q), dk(k), dv(v), out(q.size()), lse((size_t)(c.B * c.HQ * c.Sq));
    DeviceBuffer<int64_t> dqPos(qPos), dkPos(kPos);
    ASSERT_EQ(gpu::attention(dq.ptr, dk.ptr, dv.ptr, dqPos.ptr, dkPos.ptr, c.B, c.Sq, c.Sk, c.HQ,
                             c.HKV, c.D, c.causal, scale, c.window, tiling, out.ptr, lse.ptr,
                             nullptr),
              cudaSuccess);
    std::vector<float> want(q.size()), wantLse(c.B * c.HQ * c.Sq);
    cpu::attention(q.data(), k.data(), v.data(), qPos.data(), kPos.data(),
                   {c.B, c.Sq, c.Sk, c.HQ, c.HKV, c.D}, c.causal, scale, want.data(),
                   wantLse.data(), c.window);
    expectClose(out.read(), want, 1e-4f);
    expectClose(lse.read(), wantLse, 1e-4f);
  }
}

// The row sums in double as on the CPU, the maxima exact: 1e-6 on the mean;
// labels outside the vocabulary counted.
TEST(CudaKernels, CrossEntropyMatchesTheReference) {
  const int64_t T = 513, V = 1000;
  auto logits = test::normalVector(T * V, 10, 3.0f);
  std::vector<int32_t> labels(T);
  for (int64_t t = 0; t < T; ++t)
    labels[t] = (int32_t)((t * 7919) % V);
  DeviceBuffer<float> dlogits(logits), loss((size_t)1);
  DeviceBuffer<int32_t> dlabels(labels), bad((size_t)1);
  DeviceBuffer<double> terms((size_t)T);
  ASSERT_EQ(gpu::cross_entropy(dlogits.ptr, dlabels.ptr, T, V, (double)T, terms.ptr, bad.ptr,
                               loss.ptr, nullptr),
            cudaSuccess);
  float want = cpu::cross_entropy(logits.data(), labels.data(), T, V);
  EXPECT_NEAR(loss.read()[0], want, 1e-6f * std::fabs(want));
  EXPECT_EQ(bad.read()[0], 0);
  labels[3] = (int32_t)V;
  DeviceBuffer<int32_t> badLabels(labels);
  ASSERT_EQ(gpu::cross_entropy(dlogits.ptr, badLabels.ptr, T, V, (double)T, terms.ptr, bad.ptr,
                               loss.ptr, nullptr),
            cudaSuccess);
  EXPECT_EQ(bad.read()[0], 1);
}

// linear's GEMM and its two backward ones through the backend's cuBLASLt
// path (LtGemm), in f32 and with bf16 and f16 factors, each product in f32
// and in the factors' type, against a double sum of the same (rounded)
// factors: within 2e-5 of the sum of the terms' magnitudes (f32 sums in
// another order; n·2^-24 for n = 300 is 1.8e-5), plus, for a 16-bit
// product, one unit of its type (2^-7 relative for bf16, 2^-10 for f16).
TEST(CudaKernels, LtGemmMatchesTheReferenceInEveryType) {
  using E = gpu::GemmElement;
  const int64_t T = 67, K = 300, N = 45;
  struct Orientation {
    bool transA, transB;
    int64_t M, N, K, aSize, bSize;
  } orientations[] = {{false, false, T, N, K, T * K, K * N}, // y = x . w
                      {false, true, T, K, N, T * N, K * N},  // dx = dy . w^T
                      {true, false, K, N, T, T * K, T * N}}; // dw = x^T . dy
  shardline::rt::LtGemm lt;
  for (E type : {E::F32, E::BF16, E::F16})
    for (E product : {E::F32, type})
      for (const Orientation &o : orientations) {
        SCOPED_TRACE(std::to_string((int)type) + " -> " + std::to_string((int)product) + ", " +
                     std::to_string(o.transA) + std::to_string(o.transB));
        auto typeOf = [](E e) {
          return e == E::BF16  ? gpu::arith::Type::BF16
                 : e == E::F16 ? gpu::arith::Type::F16
                               : gpu::arith::Type::F32;
        };
        // The factors as stored (4 or 2 bytes an element) and their values.
        auto stored = [&](int64_t n, unsigned seed, std::vector<float> &values) {
          values = test::normalVector(n, seed);
          std::vector<uint8_t> bytes(n * (type == E::F32 ? 4 : 2));
          for (int64_t i = 0; i < n; ++i) {
            gpu::arith::store(bytes.data(), typeOf(type), i, values[i]);
            values[i] = gpu::arith::load(bytes.data(), typeOf(type), i);
          }
          return DeviceBuffer<uint8_t>(bytes);
        };
        std::vector<float> a, b;
        DeviceBuffer<uint8_t> da = stored(o.aSize, 150, a), db = stored(o.bSize, 151, b);
        DeviceBuffer<uint8_t> dout((size_t)(o.M * o.N * (product == E::F32 ? 4 : 2)));
        lt.run(nullptr, o.transA, o.transB, da.ptr, db.ptr, type, o.M, o.N, o.K, dout.ptr, product);
        std::vector<uint8_t> out = dout.read();
        int unitBits = product == E::F32 ? 0 : product == E::BF16 ? 7 : 10;
        for (int64_t i = 0; i < o.M; ++i)
          for (int64_t j = 0; j < o.N; ++j) {
            double want = 0.0, magnitude = 0.0;
            for (int64_t p = 0; p < o.K; ++p) {
              double term = (double)(o.transA ? a[p * o.M + i] : a[i * o.K + p]) *
                            (o.transB ? b[j * o.K + p] : b[p * o.N + j]);
              want += term;
              magnitude += std::fabs(term);
            }
            double got = gpu::arith::load(out.data(), typeOf(product), i * o.N + j);
            double tol = 2e-5 * magnitude;
            if (unitBits > 0)
              tol += std::ldexp(std::fabs(want), -unitBits) + 6e-8;
            ASSERT_NEAR(got, want, tol) << "at [" << i << ", " << j << "]";
          }
      }
}

// f32 factors as TF32 on the tensor cores (SHARDLINE_CUDA_TF32=1): each
// factor rounded to a 10-bit mantissa (2^-11 relative) so each term within
// 2^-10 of its magnitude, the sums f32: within 2^-10 + 2e-5 of the sum of
// the terms' magnitudes; and not the f32 GEMM's bits (the tensor cores did
// take it).
TEST(CudaKernels, LtGemmInTf32IsWithinTf32Rounding) {
  using E = gpu::GemmElement;
  const int64_t M = 67, K = 300, N = 45;
  std::vector<float> a = test::normalVector(M * K, 160), b = test::normalVector(K * N, 161);
  DeviceBuffer<float> da(a), db(b), tf32(M * N), f32(M * N);
  shardline::rt::LtGemm lt;
  lt.run(nullptr, false, false, da.ptr, db.ptr, E::F32, M, N, K, tf32.ptr, E::F32, true);
  lt.run(nullptr, false, false, da.ptr, db.ptr, E::F32, M, N, K, f32.ptr, E::F32, false);
  std::vector<float> got = tf32.read(), exact = f32.read();
  int64_t differ = 0;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double want = 0.0, magnitude = 0.0;
      for (int64_t p = 0; p < K; ++p) {
        double term = (double)a[i * K + p] * b[p * N + j];
        want += term;
        magnitude += std::fabs(term);
      }
      ASSERT_NEAR(got[i * N + j], want, (std::ldexp(1.0, -10) + 2e-5) * magnitude)
          << "at [" << i << ", " << j << "]";
      differ += got[i * N + j] != exact[i * N + j];
    }
  EXPECT_GT(differ, M * N / 2) << "the TF32 GEMM gave the f32 GEMM's values";
}

// -- 16-bit storage ----------------------------------------------------------------------
//
// The memory-bound kernels over bf16 and f16 storage, each against the same
// kernel in f32 on the widened values with its results rounded on the host
// (what the executor's widen, the f32 kernel and its narrowing give): equal,
// bit for bit, as both compute the same f32 values and round them once. And
// against the CPU kernel on the widened values, rounded: add, mul and the
// embedding equal; the others within one unit of the type (the device's
// expf, erf, exp and sin/cos; the norms' f32 sums against the CPU's double).

template <typename T> class CudaKernels16 : public ::testing::Test {};
TYPED_TEST_SUITE(CudaKernels16, test::SixteenBitTypes);

TYPED_TEST(CudaKernels16, ElementwiseAreTheF32KernelsRounded) {
  using T = TypeParam;
  const int64_t n = 100003;
  std::vector<T> a = test::roundedTo<T>(test::normalVector(n, 41, 4.0f)),
                 b = test::roundedTo<T>(test::normalVector(n, 42));
  std::vector<float> wa = test::widened(a), wb = test::widened(b), want(n);
  DeviceBuffer<T> da(a), db(b), out((size_t)n);
  DeviceBuffer<float> fa(wa), fb(wb), fout((size_t)n);
  struct Binary {
    cudaError_t (*stored)(gpu::Src, gpu::Src, int64_t, gpu::Dst, cudaStream_t);
    cudaError_t (*f32)(const float *, const float *, int64_t, float *, cudaStream_t);
    void (*reference)(const float *, const float *, int64_t, float *);
    int units;
  } binaries[] = {{gpu::add, gpu::add, cpu::add, 0},
                  {gpu::mul, gpu::mul, cpu::mul, 0},
                  {gpu::swiglu, gpu::swiglu, cpu::swiglu, 1}};
  for (const Binary &op : binaries) {
    ASSERT_EQ(op.stored(srcOf(da), srcOf(db), n, dstOf(out), nullptr), cudaSuccess);
    ASSERT_EQ(op.f32(fa.ptr, fb.ptr, n, fout.ptr, nullptr), cudaSuccess);
    op.reference(wa.data(), wb.data(), n, want.data());
    test::expectRoundedResults(out.read(), fout.read(), want, op.units);
  }
  struct Unary {
    cudaError_t (*stored)(gpu::Src, int64_t, gpu::Dst, cudaStream_t);
    cudaError_t (*f32)(const float *, int64_t, float *, cudaStream_t);
    void (*reference)(const float *, int64_t, float *);
  } unaries[] = {{gpu::silu, gpu::silu, cpu::silu},
                 {gpu::gelu, gpu::gelu, cpu::gelu},
                 {gpu::sigmoid, gpu::sigmoid, cpu::sigmoid},
                 {gpu::softplus, gpu::softplus, cpu::softplus}};
  for (const Unary &op : unaries) {
    ASSERT_EQ(op.stored(srcOf(da), n, dstOf(out), nullptr), cudaSuccess);
    ASSERT_EQ(op.f32(fa.ptr, n, fout.ptr, nullptr), cudaSuccess);
    op.reference(wa.data(), n, want.data());
    test::expectRoundedResults(out.read(), fout.read(), want, 1);
  }
}

/// RMSNorm and the gated norm over activations of T with a scale of W (f32
/// beside 16-bit activations, or their own type).
template <typename T, typename W> void checkNorms16() {
  const int64_t rows = 33, C = 384, groups = 4;
  std::vector<T> x = test::roundedTo<T>(test::normalVector(rows * C, 43, 3.0f)),
                 z = test::roundedTo<T>(test::normalVector(rows * C, 44));
  std::vector<W> w = test::roundedTo<W>(test::normalVector(C, 45));
  std::vector<float> wx = test::widened(x), wz = test::widened(z), ww = test::widened(w),
                     want(rows * C);
  DeviceBuffer<T> dx(x), dz(z), out(x.size());
  DeviceBuffer<W> dw(w);
  DeviceBuffer<float> fx(wx), fz(wz), fw(ww), fout(x.size());
  ASSERT_EQ(gpu::rms_norm(srcOf(dx), srcOf(dw), rows, C, 1e-5f, dstOf(out), nullptr), cudaSuccess);
  ASSERT_EQ(gpu::rms_norm(fx.ptr, fw.ptr, rows, C, 1e-5f, fout.ptr, nullptr), cudaSuccess);
  cpu::rms_norm(wx.data(), ww.data(), rows, C, 1e-5f, want.data());
  test::expectRoundedResults(out.read(), fout.read(), want, 1);
  ASSERT_EQ(gpu::gated_rms_norm(srcOf(dx), srcOf(dz), srcOf(dw), rows, C, groups, 1e-5f, dstOf(out),
                                nullptr),
            cudaSuccess);
  ASSERT_EQ(gpu::gated_rms_norm(fx.ptr, fz.ptr, fw.ptr, rows, C, groups, 1e-5f, fout.ptr, nullptr),
            cudaSuccess);
  cpu::gated_rms_norm(wx.data(), wz.data(), ww.data(), rows, C, groups, 1e-5f, want.data());
  test::expectRoundedResults(out.read(), fout.read(), want, 1);
}

TYPED_TEST(CudaKernels16, NormsAreTheF32KernelsRounded) {
  checkNorms16<TypeParam, float>();
  checkNorms16<TypeParam, TypeParam>();
}

TYPED_TEST(CudaKernels16, RopeIsTheF32KernelRounded) {
  using T = TypeParam;
  const int64_t B = 2, S = 40, NH = 4, D = 64;
  std::vector<T> x = test::roundedTo<T>(test::normalVector(B * S * NH * D, 46, 3.0f));
  std::vector<int64_t> positions(S);
  for (int64_t s = 0; s < S; ++s)
    positions[s] = 1000 * s + 7;
  std::vector<float> wx = test::widened(x), want(x.size());
  DeviceBuffer<T> dx(x), out(x.size());
  DeviceBuffer<float> fx(wx), fout(x.size());
  DeviceBuffer<int64_t> dpos(positions);
  ASSERT_EQ(gpu::rope(srcOf(dx), dpos.ptr, B, S, NH, D, 10000.0f, dstOf(out), nullptr),
            cudaSuccess);
  ASSERT_EQ(gpu::rope(fx.ptr, dpos.ptr, B, S, NH, D, 10000.0f, fout.ptr, nullptr), cudaSuccess);
  cpu::rope(wx.data(), positions.data(), B, S, NH, D, 10000.0f, want.data());
  test::expectRoundedResults(out.read(), fout.read(), want, 1);
}

// An f32 table rounded into 16-bit activations, and a table of their type:
// copies, rounded once, so equal to the CPU's rounded.
TYPED_TEST(CudaKernels16, EmbeddingRoundsTheTablesRowsOnce) {
  using T = TypeParam;
  const int64_t tokens = 64, rows = 50, H = 300, offset = 50, vocab = 150;
  std::vector<int32_t> ids(tokens);
  for (int64_t t = 0; t < tokens; ++t)
    ids[t] = (int32_t)((t * 7) % vocab);
  std::vector<float> f32Table = test::normalVector(rows * H, 47, 3.0f), want(tokens * H);
  std::vector<T> table = test::roundedTo<T>(f32Table);
  std::vector<float> wide = test::widened(table);
  DeviceBuffer<int32_t> dids(ids), bad((size_t)1);
  DeviceBuffer<float> df32(f32Table);
  DeviceBuffer<T> dtable(table), out((size_t)(tokens * H));
  ASSERT_EQ(gpu::embedding(dids.ptr, tokens, srcOf(df32), rows, H, offset, vocab, dstOf(out),
                           bad.ptr, nullptr),
            cudaSuccess);
  cpu::embedding(ids.data(), tokens, f32Table.data(), rows, H, offset, want.data());
  test::expectSameBits(out.read(), test::roundedTo<T>(want));
  ASSERT_EQ(gpu::embedding(dids.ptr, tokens, srcOf(dtable), rows, H, offset, vocab, dstOf(out),
                           bad.ptr, nullptr),
            cudaSuccess);
  cpu::embedding(ids.data(), tokens, wide.data(), rows, H, offset, want.data());
  test::expectSameBits(out.read(), test::roundedTo<T>(want));
  EXPECT_EQ(bad.read()[0], 0);
}

// The convolution over activations of T with a kernel and bias of P (f32
// or T), with halos and without: the f32 kernel on the widened values,
// rounded, bit for bit; the CPU kernel rounded within one unit (the device
// may fuse the double multiply-adds, 1e-6 in f32 above).
template <typename T, typename P> void checkConv16() {
  const int64_t B = 2, S = 64, chunks = 2, C = 48, W = 4;
  std::vector<T> x = test::roundedTo<T>(test::normalVector(B * S * C, 61, 3.0f)),
                 halo = test::roundedTo<T>(test::normalVector(B * chunks * (W - 1) * C, 62, 3.0f));
  std::vector<P> w = test::roundedTo<P>(test::normalVector(C * W, 63)),
                 bias = test::roundedTo<P>(test::normalVector(C, 64));
  std::vector<float> wx = test::widened(x), wh = test::widened(halo), ww = test::widened(w),
                     wb = test::widened(bias);
  DeviceBuffer<T> dx(x), dhalo(halo), out(x.size());
  DeviceBuffer<P> dw(w), dbias(bias);
  DeviceBuffer<float> fx(wx), fhalo(wh), fw(ww), fbias(wb), fout(x.size());
  ASSERT_EQ(gpu::causal_conv1d(srcOf(dx), srcOf(dw), srcOf(dbias), srcOf(dhalo), {B, S, chunks}, C,
                               W, dstOf(out), nullptr),
            cudaSuccess);
  ASSERT_EQ(gpu::causal_conv1d(fx.ptr, fw.ptr, fbias.ptr, fhalo.ptr, {B, S, chunks}, C, W, fout.ptr,
                               nullptr),
            cudaSuccess);
  test::expectRoundedResults(out.read(), fout.read(),
                             test::convOnCpu(wx, ww, wb, wh.data(), B, S, chunks, C, W), 1);
  gpu::Src none{nullptr, gpu::arith::Storage<T>::type};
  ASSERT_EQ(gpu::causal_conv1d(srcOf(dx), srcOf(dw), srcOf(dbias), none, {B, S, 1}, C, W,
                               dstOf(out), nullptr),
            cudaSuccess);
  ASSERT_EQ(
      gpu::causal_conv1d(fx.ptr, fw.ptr, fbias.ptr, nullptr, {B, S, 1}, C, W, fout.ptr, nullptr),
      cudaSuccess);
  test::expectRoundedResults(out.read(), fout.read(),
                             test::convOnCpu(wx, ww, wb, nullptr, B, S, 1, C, W), 1);
}

TYPED_TEST(CudaKernels16, CausalConvIsTheF32KernelRounded) {
  checkConv16<TypeParam, float>();
  checkConv16<TypeParam, TypeParam>();
}

// The RG-LRU scan over x of T, the gates of P and the states and decays of
// S, from a state: the f32 kernel on the widened values, its results
// rounded to their types, bit for bit; the CPU's, rounded, within one unit
// of T (y, and the states and decays of T) or 1e-5 (f32 states and decays,
// as above).
template <typename T, typename P, typename S> void checkRglru16() {
  const int64_t B = 2, Sq = 100, W = 96;
  std::vector<T> x = test::roundedTo<T>(test::normalVector(B * Sq * W, 65, 2.0f));
  std::vector<std::vector<P>> gates;
  std::vector<std::vector<float>> wg;
  for (unsigned k = 0; k < 5; ++k) {
    gates.push_back(test::roundedTo<P>(test::normalVector(W, 66 + k)));
    wg.push_back(test::widened(gates.back()));
  }
  std::vector<S> stateIn = test::roundedTo<S>(test::normalVector(B * W, 71));
  std::vector<float> wx = test::widened(x), ws = test::widened(stateIn);
  DeviceBuffer<T> dx(x), y(x.size());
  DeviceBuffer<P> wa(gates[0]), ba(gates[1]), wxg(gates[2]), bx(gates[3]), lambda(gates[4]);
  DeviceBuffer<S> dstate(stateIn), state(stateIn.size()), decay(stateIn.size());
  DeviceBuffer<float> fx(wx), fwa(wg[0]), fba(wg[1]), fwx(wg[2]), fbx(wg[3]), flambda(wg[4]),
      fstate(ws), fy(wx.size()), fstateOut(ws.size()), fdecay(ws.size());
  ASSERT_EQ(gpu::rglru_scan(srcOf(dx), srcOf(wa), srcOf(ba), srcOf(wxg), srcOf(bx), srcOf(lambda),
                            srcOf(dstate), {B, Sq, 1}, W, dstOf(y), dstOf(state), dstOf(decay),
                            nullptr),
            cudaSuccess);
  ASSERT_EQ(gpu::rglru_scan(fx.ptr, fwa.ptr, fba.ptr, fwx.ptr, fbx.ptr, flambda.ptr, fstate.ptr,
                            {B, Sq, 1}, W, fy.ptr, fstateOut.ptr, fdecay.ptr, nullptr),
            cudaSuccess);
  test::RglruOnCpu want = test::rglruOnCpu(wx, wg, ws, B, Sq, 1, W);
  test::expectRoundedResults(y.read(), fy.read(), want.y, 1);
  if constexpr (std::is_same_v<S, float>) {
    EXPECT_EQ(state.read(), fstateOut.read());
    EXPECT_EQ(decay.read(), fdecay.read());
    expectClose(state.read(), want.state, 1e-5f);
    expectClose(decay.read(), want.decay, 1e-5f);
  } else {
    test::expectRoundedResults(state.read(), fstateOut.read(), want.state, 1);
    test::expectRoundedResults(decay.read(), fdecay.read(), want.decay, 1);
  }
}

TYPED_TEST(CudaKernels16, RglruScanIsTheF32KernelRounded) {
  using T = TypeParam;
  checkRglru16<T, float, float>();
  checkRglru16<T, T, float>();
  checkRglru16<T, T, T>();
}

/// Each of `inputs` on the device as stored (`narrow`) and widened to f32
/// (`wide`), in order.
template <typename T> struct BothWidths {
  explicit BothWidths(const std::vector<std::vector<T>> &inputs) {
    for (const auto &v : inputs) {
      narrow.push_back(std::make_unique<DeviceBuffer<T>>(v));
      wide.push_back(std::make_unique<DeviceBuffer<float>>(test::widened(v)));
    }
  }
  std::vector<std::unique_ptr<DeviceBuffer<T>>> narrow;
  std::vector<std::unique_ptr<DeviceBuffer<float>>> wide;
};

// The scans' corrections over y0, activations and y of T, parameters and
// init of T, against the f32 kernels on the widened values, rounded: equal,
// bit for bit (cuda_arith_test.cpp's host run shows the same).
TYPED_TEST(CudaKernels16, CorrectionsAreTheF32KernelsRounded) {
  using T = TypeParam;
  auto rounded = [](int64_t n, unsigned seed, float sigma = 1.0f) {
    return test::roundedTo<T>(test::normalVector(n, seed, sigma));
  };
  const gpu::Sequences seq{2, 12, 2};
  const int64_t rows = seq.B * seq.S, NH = 4, P = 3, G = 2, N = 5, W = 6;
  BothWidths<T> ssd({rounded(rows * NH * P, 161), rounded(seq.chunks * seq.B * NH * P * N, 162),
                     rounded(rows * G * N, 163), rounded(rows * NH, 164), rounded(NH, 165, 0.5f),
                     rounded(NH, 166, 0.5f)});
  BothWidths<T> rglru({rounded(rows * W, 171), rounded(seq.chunks * seq.B * W, 172),
                       rounded(rows * W, 173), rounded(W, 174), rounded(W, 175), rounded(W, 176)});
  DeviceBuffer<T> y(rows * NH * P), ry(rows * W);
  DeviceBuffer<float> fy(rows * NH * P), fry(rows * W);
  auto runSsd = [&](const auto &in, auto out) {
    return gpu::ssd_correct(srcOf(*in[0]), srcOf(*in[1]), srcOf(*in[2]), srcOf(*in[3]),
                            srcOf(*in[4]), srcOf(*in[5]), seq, NH, P, G, N, out, nullptr);
  };
  auto runRglru = [&](const auto &in, auto out) {
    return gpu::rglru_correct(srcOf(*in[0]), srcOf(*in[1]), srcOf(*in[2]), srcOf(*in[3]),
                              srcOf(*in[4]), srcOf(*in[5]), seq, W, out, nullptr);
  };
  ASSERT_EQ(runSsd(ssd.narrow, dstOf(y)), cudaSuccess);
  ASSERT_EQ(runSsd(ssd.wide, dstOf(fy)), cudaSuccess);
  test::expectSameBits(y.read(), test::roundedTo<T>(fy.read()));
  ASSERT_EQ(runRglru(rglru.narrow, dstOf(ry)), cudaSuccess);
  ASSERT_EQ(runRglru(rglru.wide, dstOf(fry)), cudaSuccess);
  test::expectSameBits(ry.read(), test::roundedTo<T>(fry.read()));
}

// The split of f32 values into two bf16 parts (split_bf16) is the host's
// arith::splitValue, bit for bit, and the parts hold each value to 2^-16.
TEST(CudaKernels, SplitIntoTwoBf16PartsIsTheHostsSplit) {
  std::vector<float> v = test::normalVector(1000, 95, 30.0f);
  v[0] = 0.0f;
  v[1] = -1e-30f;
  v[2] = 3.0e38f;
  DeviceBuffer<float> dv(v);
  DeviceBuffer<gpu::arith::Bf16> hi(v.size()), lo(v.size());
  ASSERT_EQ(gpu::split_bf16(dv.ptr, (int64_t)v.size(), hi.ptr, lo.ptr, nullptr), cudaSuccess);
  std::vector<gpu::arith::Bf16> gotHi = hi.read(), gotLo = lo.read();
  for (size_t i = 0; i < v.size(); ++i) {
    gpu::arith::Bf16 wantHi, wantLo;
    gpu::arith::splitValue(v[i], wantHi, wantLo);
    ASSERT_EQ(gotHi[i].bits, wantHi.bits) << "at " << i;
    ASSERT_EQ(gotLo[i].bits, wantLo.bits) << "at " << i;
    float back = gpu::arith::loadElement(&gotHi[i], 0) + gpu::arith::loadElement(&gotLo[i], 0);
    ASSERT_LE(std::fabs(back - v[i]), 0x1p-16f * std::fabs(v[i])) << "at " << i;
  }
}

// A layout transition's runs on the device (copy_runs): from [a | b] into
// dst, runs of one element, long ones, one crossing from a into b, over
// 32- and 16-bit words: the bits of the host's applyRuns; the elements no
// run names keep what was there; an element size of 8 is refused.
TEST(CudaKernels, CopyRunsAreTheHostsRuns) {
  std::vector<rt::ElementRun> runs = {{0, 5, 1}, {3, 0, 4}, {10, 40, 30}, {45, 7, 20}, {2, 90, 1}};
  const int64_t aCount = 50, bCount = 30, n = 100;
  auto both = [&](auto word) {
    using E = decltype(word);
    std::vector<E> a(aCount), b(bCount), dst(n), want;
    for (int64_t i = 0; i < aCount; ++i)
      a[i] = (E)(1000 + i);
    for (int64_t i = 0; i < bCount; ++i)
      b[i] = (E)(2000 + i);
    for (int64_t i = 0; i < n; ++i)
      dst[i] = (E)(7 + i);
    want = dst;
    rt::applyRuns(runs, a.data(), aCount, b.data(), want.data());
    std::vector<int64_t> flat;
    for (const rt::ElementRun &r : runs)
      flat.insert(flat.end(), {r.from, r.to, r.count});
    DeviceBuffer<E> da(a), db(b), ddst(dst);
    DeviceBuffer<int64_t> druns(flat);
    ASSERT_EQ(gpu::copy_runs(da.ptr, aCount, db.ptr, druns.ptr, (int64_t)runs.size(), 30, sizeof(E),
                             ddst.ptr, nullptr),
              cudaSuccess);
    EXPECT_EQ(ddst.read(), want);
  };
  both(uint32_t{});
  both(uint16_t{});
  DeviceBuffer<int64_t> one(std::vector<int64_t>{0, 0, 1});
  DeviceBuffer<double> x((size_t)1);
  EXPECT_EQ(gpu::copy_runs(x.ptr, 1, nullptr, one.ptr, 1, 1, 8, x.ptr, nullptr),
            cudaErrorInvalidValue);
}

// The halo's row moves over rows of T: rows gathered by index and placed
// by index, every element's bits as they were; the rows no index names
// keep what was there.
TYPED_TEST(CudaKernels16, RowMovesKeepTheBits) {
  using T = TypeParam;
  const int64_t rows = 9, C = 37;
  std::vector<T> src = test::roundedTo<T>(test::normalVector(rows * C, 91)),
                 before = test::roundedTo<T>(test::normalVector(rows * C, 92));
  const std::vector<int64_t> from = {4, 0, 8, 4}, to = {1, 7, 2, 5};
  DeviceBuffer<T> dsrc(src), ddst(before);
  DeviceBuffer<int64_t> dfrom(from), dto(to);
  ASSERT_EQ(gpu::copy_rows(srcOf(dsrc), dfrom.ptr, dto.ptr, (int64_t)from.size(), C, dstOf(ddst),
                           nullptr),
            cudaSuccess);
  std::vector<T> want = before;
  for (size_t i = 0; i < from.size(); ++i)
    std::copy_n(src.begin() + from[i] * C, C, want.begin() + to[i] * C);
  test::expectSameBits(ddst.read(), want);
}

// MoE's forward kernels over T (the router, the dense dispatch and combine,
// capacity mode's slots, dispatch and combine) against the CPU kernels on
// the widened values, rounded: the choices and slots equal, the dispatches'
// rows bit for bit; the router's weights (the device's exp) and the
// combines within one unit of the type (the device may fuse a combine's
// multiply and add, which moves its f32 or double sum by an ulp and so,
// near a 16-bit rounding boundary, the rounded result). cuda_arith_test.cpp
// runs the same functions on the host, where the combines are bit for bit.
TYPED_TEST(CudaKernels16, MoeForwardIsTheWidenedKernelsRounded) {
  using T = TypeParam;
  const int64_t Tk = 300, E = 8, k = 2, H = 64;
  std::vector<T> logits = test::roundedTo<T>(test::normalVector(Tk * E, 33, 2.0f)),
                 x = test::roundedTo<T>(test::normalVector(Tk * H, 34));
  DeviceBuffer<T> dlogits(logits), weights((size_t)(Tk * k)), dx(x), slabs((size_t)(E * Tk * H)),
      y((size_t)(Tk * H));
  DeviceBuffer<int32_t> idx((size_t)(Tk * k)), bad((size_t)1);
  ASSERT_EQ(gpu::router_topk(srcOf(dlogits), Tk, E, k, dstOf(weights), idx.ptr, nullptr),
            cudaSuccess);
  std::vector<float> wantWeights(Tk * k);
  std::vector<int32_t> wantIdx(Tk * k);
  cpu::router_topk(test::widened(logits).data(), Tk, E, k, wantWeights.data(), wantIdx.data());
  ASSERT_EQ(idx.read(), wantIdx);
  std::vector<T> gotWeights = weights.read();
  test::expectWithinUnits(gotWeights, test::roundedTo<T>(wantWeights), 1);
  ASSERT_EQ(gpu::moe_dispatch(srcOf(dx), idx.ptr, Tk, H, k, E, dstOf(slabs), bad.ptr, nullptr),
            cudaSuccess);
  std::vector<float> wantSlabs(E * Tk * H, 0.0f), wantY(Tk * H);
  cpu::moe_scatter_rows(test::widened(x).data(), wantIdx.data(), Tk, H, k, wantSlabs.data());
  test::expectSameBits(slabs.read(), test::roundedTo<T>(wantSlabs));
  ASSERT_EQ(gpu::moe_combine(srcOf(slabs), srcOf(weights), idx.ptr, Tk, H, k, E, dstOf(y), bad.ptr,
                             nullptr),
            cudaSuccess);
  cpu::moe_gather_rows(wantSlabs.data(), test::widened(gotWeights).data(), wantIdx.data(), Tk, H, k,
                       wantY.data());
  test::expectWithinUnits(y.read(), test::roundedTo<T>(wantY), 1);
  EXPECT_EQ(bad.read()[0], 0);
  // Mixed types are refused.
  DeviceBuffer<float> wide((size_t)(Tk * k));
  EXPECT_EQ(gpu::router_topk(srcOf(dlogits), Tk, E, k, dstOf(wide), idx.ptr, nullptr),
            cudaErrorInvalidValue);

  // Capacity mode: 2 x 12 tokens, top 2 of 4 experts, groups of 6 positions,
  // capacity 3; expert 0 every token's first choice, its weights tied often.
  const int64_t B = 2, S = 12, EC = 4, C = 3, HC = 5;
  gpu::arith::Capacity d;
  d.B = B, d.S = S, d.k = k, d.E = EC, d.C = C, d.rows = 1, d.positions = 6;
  cpu::CapacityDims cd;
  cd.B = B, cd.S = S, cd.k = k, cd.E = EC, cd.C = C, cd.rows = 1, cd.positions = 6;
  std::vector<int32_t> cidx;
  std::vector<float> cw;
  for (int64_t t = 0; t < B * S; ++t) {
    cidx.push_back(0);
    cidx.push_back((int32_t)(1 + t % 3));
    cw.push_back(t % 4 == 1 ? 0.5f : 0.5f + 0.01f * (float)(t % 5));
    cw.push_back(1.0f - cw.back());
  }
  std::vector<T> w = test::roundedTo<T>(cw),
                 xc = test::roundedTo<T>(test::normalVector(B * S * HC, 35));
  std::vector<float> wideW = test::widened(w), wideX = test::widened(xc);
  const int64_t n = d.groups() * EC, rows = EC * d.groups() * C;
  DeviceBuffer<int32_t> didx(cidx), slots(cidx.size());
  DeviceBuffer<int64_t> kept((size_t)n), dropped((size_t)n);
  DeviceBuffer<T> dw(w), dxc(xc), buffers((size_t)(rows * HC)), yc((size_t)(B * S * HC));
  std::vector<int32_t> want(cidx.size());
  cpu::moe_capacity_slots(wideW.data(), cidx.data(), cd, cpu::DropPolicy::Probs, want.data(),
                          nullptr, nullptr);
  ASSERT_EQ(gpu::moe_capacity_slots(srcOf(dw), didx.ptr, d, true, slots.ptr, kept.ptr, dropped.ptr,
                                    nullptr),
            cudaSuccess);
  ASSERT_EQ(slots.read(), want);
  ASSERT_EQ(
      gpu::moe_dispatch_capacity(srcOf(dxc), didx.ptr, slots.ptr, d, HC, dstOf(buffers), nullptr),
      cudaSuccess);
  std::vector<float> wantBuffers(rows * HC), wantYc(B * S * HC);
  cpu::moe_dispatch_capacity(wideX.data(), cidx.data(), want.data(), cd, HC, wantBuffers.data());
  test::expectSameBits(buffers.read(), test::roundedTo<T>(wantBuffers));
  ASSERT_EQ(gpu::moe_combine_capacity(srcOf(buffers), srcOf(dw), didx.ptr, slots.ptr, d, HC,
                                      dstOf(yc), nullptr),
            cudaSuccess);
  cpu::moe_combine_capacity(wantBuffers.data(), wideW.data(), cidx.data(), want.data(), cd, HC,
                            wantYc.data());
  test::expectWithinUnits(yc.read(), test::roundedTo<T>(wantYc), 1);
}

// Dropless MoE's pieces over T: the rows gathered by perm with their bits
// as they are, the f32 kernel's grouped products of 16-bit rows and weights
// (both orientations) equal, bit for bit, to those of their widened f32
// copies (the tiles widen as they stage), the tensor cores' within the
// host test's tolerance of them, and the combine with 16-bit weights into
// a 16-bit y equal to the f32 combine on the widened weights, rounded.
TYPED_TEST(CudaKernels16, DroplessPiecesAreTheWidenedOnesRounded) {
  using T = TypeParam;
  const int64_t Tk = 37, H = 24, F = 40, E = 3, k = 2, R = Tk * k;
  std::vector<int32_t> perm(R), rowOf(R);
  for (int64_t r = 0; r < R; ++r)
    perm[r] = (int32_t)((r * 7) % R);
  for (int64_t r = 0; r < R; ++r)
    rowOf[perm[r]] = (int32_t)r;
  std::vector<int64_t> offsets = {0, 30, 30, R}, tiles(E + 1, 0);
  for (int64_t e = 0; e < E; ++e)
    tiles[e + 1] = tiles[e] + (offsets[e + 1] - offsets[e] + gpu::arith::kGroupTile - 1) /
                                  gpu::arith::kGroupTile;
  std::vector<T> x = test::roundedTo<T>(test::normalVector(Tk * H, 170)),
                 w = test::roundedTo<T>(test::normalVector(E * H * F, 171, 0.3f)),
                 b = test::roundedTo<T>(test::normalVector(R * F, 172)),
                 weights = test::roundedTo<T>(test::normalVector(R, 173));
  DeviceBuffer<T> dx(x), dw(w), db(b), dweights(weights), sorted((size_t)(R * H)),
      y((size_t)(Tk * H));
  DeviceBuffer<float> fw(test::widened(w)), fb(test::widened(b)), fweights(test::widened(weights)),
      fsorted((size_t)(R * H)), rows((size_t)(R * F)), frows((size_t)(R * F)),
      rowsT((size_t)(R * H)), frowsT((size_t)(R * H)), fy((size_t)(Tk * H));
  DeviceBuffer<int32_t> dperm(perm), drowOf(rowOf);
  DeviceBuffer<int64_t> doffsets(offsets), dtiles(tiles);
  ASSERT_EQ(gpu::moe_gather_tokens(srcOf(dx), dperm.ptr, R, H, k, dstOf(sorted), nullptr),
            cudaSuccess);
  std::vector<T> gathered = sorted.read(), want(R * H);
  for (int64_t i = 0; i < R * H; ++i)
    want[i] = x[(perm[i / H] / k) * H + i % H];
  test::expectSameBits(gathered, want);
  DeviceBuffer<float> fgathered(test::widened(gathered));
  auto grouped = [&](gpu::Src a, gpu::Src ww, bool transW, int64_t K, int64_t N, float *out) {
    return gpu::grouped_rows(a, ww, transW, R, K, N, doffsets.ptr, dtiles.ptr, E, out, nullptr);
  };
  ASSERT_EQ(grouped(srcOf(sorted), srcOf(dw), false, H, F, rows.ptr), cudaSuccess);
  ASSERT_EQ(grouped(srcOf(fgathered), srcOf(fw), false, H, F, frows.ptr), cudaSuccess);
  ASSERT_EQ(grouped(srcOf(db), srcOf(dw), true, F, H, rowsT.ptr), cudaSuccess);
  ASSERT_EQ(grouped(srcOf(fb), srcOf(fw), true, F, H, frowsT.ptr), cudaSuccess);
  EXPECT_EQ(rows.read(), frows.read());
  EXPECT_EQ(rowsT.read(), frowsT.read());
  // On the tensor cores: within 1e-5 of the terms' magnitudes of the f32
  // kernel's product (3e-5 for f32 rows split in two bf16 parts), as
  // cuda_arith_test.cpp's host run of grouped_tc.h.
  auto nearF32 = [&](const std::vector<float> &got, const std::vector<float> &a, float tol) {
    std::vector<float> want = frows.read(), wideW = test::widened(w);
    for (int64_t e = 0; e < E; ++e)
      for (int64_t r = offsets[e]; r < offsets[e + 1]; ++r)
        for (int64_t n = 0; n < F; ++n) {
          double scale = 0.0;
          for (int64_t p = 0; p < H; ++p)
            scale += std::fabs(a[r * H + p] * wideW[(e * H + p) * F + n]);
          ASSERT_LE(std::fabs(got[r * F + n] - want[r * F + n]), tol * scale + 1e-30)
              << "row " << r << ", column " << n;
        }
  };
  DeviceBuffer<float> tc((size_t)(R * F));
  ASSERT_EQ(gpu::grouped_rows_tc(srcOf(sorted), srcOf(dw), R, H, F, doffsets.ptr, dtiles.ptr, E,
                                 tc.ptr, nullptr),
            cudaSuccess);
  nearF32(tc.read(), test::widened(gathered), 1e-5f);
  if constexpr (std::is_same_v<T, gpu::arith::Bf16>) {
    ASSERT_EQ(gpu::grouped_rows_tc(srcOf(fgathered), srcOf(dw), R, H, F, doffsets.ptr, dtiles.ptr,
                                   E, tc.ptr, nullptr),
              cudaSuccess);
    nearF32(tc.read(), test::widened(gathered), 3e-5f);
  } else {
    EXPECT_EQ(gpu::grouped_rows_tc(srcOf(fgathered), srcOf(dw), R, H, F, doffsets.ptr, dtiles.ptr,
                                   E, tc.ptr, nullptr),
              cudaErrorInvalidValue);
  }
  ASSERT_EQ(
      gpu::moe_routed_combine(rowsT.ptr, drowOf.ptr, srcOf(dweights), Tk, H, k, dstOf(y), nullptr),
      cudaSuccess);
  ASSERT_EQ(
      gpu::moe_routed_combine(rowsT.ptr, drowOf.ptr, srcOf(fweights), Tk, H, k, dstOf(fy), nullptr),
      cudaSuccess);
  test::expectSameBits(y.read(), test::roundedTo<T>(fy.read()));
}

// A 16-bit reduce-scatter's sums (sum_pieces): three members' pieces in
// group order summed in f32 and rounded once, equal, bit for bit, to the
// host collectives' sum of the same 16-bit buffers (sumTerms), as
// cuda_arith_test.cpp's host run of arith::orderedSum is.
TYPED_TEST(CudaKernels16, ReduceScatterSumsAreTheHostCollectivesSums) {
  using T = TypeParam;
  const int64_t g = 3, n = 1000;
  std::vector<T> pieces = test::roundedTo<T>(test::summandPieces(g, n, 93));
  DeviceBuffer<T> dpieces(pieces), dout((size_t)n);
  ASSERT_EQ(gpu::sum_pieces(srcOf(dpieces), g, n, dstOf(dout), nullptr), cudaSuccess);
  test::expectSameBits(dout.read(), test::hostSumOfPieces(pieces, g, n));
}

// The SSD scan over activations of T, parameters of W and states of S
// against the f32 scan on the widened values, rounded: equal, bit for bit
// (both compute the same f32 values, y's chunk shares kept in f32 scratch,
// and round once), as cuda_arith_test.cpp's host run shows; the f32 scan's
// agreement with the CPU is SsdScanMatchesTheReference's.
template <typename T, typename W, typename S> void checkSsd16(const test::SsdShape &c) {
  SCOPED_TRACE(testing::Message() << "S " << c.S << " chunks " << c.chunks << " P " << c.P << " N "
                                  << c.N);
  test::SsdData raw = test::ssdData(c, 81);
  std::vector<T> x = test::roundedTo<T>(raw.x), dt = test::roundedTo<T>(raw.dt),
                 Bm = test::roundedTo<T>(raw.Bm), Cm = test::roundedTo<T>(raw.Cm);
  std::vector<W> dtBias = test::roundedTo<W>(raw.dtBias), aLog = test::roundedTo<W>(raw.aLog),
                 D = test::roundedTo<W>(raw.D);
  std::vector<S> stateIn = test::roundedTo<S>(raw.stateIn);
  const int64_t slots = c.chunks * c.B;
  DeviceBuffer<T> dx(x), ddt(dt), dB(Bm), dC(Cm), y(x.size());
  DeviceBuffer<W> ddtBias(dtBias), daLog(aLog), dD(D);
  DeviceBuffer<S> dstate(stateIn), state(stateIn.size()), decay((size_t)(slots * c.NH));
  DeviceBuffer<float> fx(test::widened(x)), fdt(test::widened(dt)), fB(test::widened(Bm)),
      fC(test::widened(Cm)), fdtBias(test::widened(dtBias)), faLog(test::widened(aLog)),
      fD(test::widened(D)), fstate(test::widened(stateIn)), fy(x.size()), fstateOut(stateIn.size()),
      fdecay((size_t)(slots * c.NH));
  gpu::SsdLaunch launch;
  std::string error;
  ASSERT_TRUE(gpu::ssdLaunch(slots, c.S / c.chunks, c.NH, c.P, c.N, launch, error)) << error;
  DeviceBuffer<char> scratch((size_t)launch.bytesFor(gpu::arith::Storage<T>::type));
  gpu::Src d = srcOf(dD), s = srcOf(dstate);
  d.data = c.withD ? d.data : nullptr;
  s.data = c.withState ? s.data : nullptr;
  ASSERT_EQ(gpu::ssd_scan(srcOf(dx), srcOf(ddt), srcOf(ddtBias), srcOf(daLog), srcOf(dB), srcOf(dC),
                          d, s, {c.B, c.S, c.chunks}, c.NH, c.P, c.G, c.N, dstOf(y), dstOf(state),
                          dstOf(decay), launch, scratch.ptr, nullptr),
            cudaSuccess);
  ASSERT_EQ(gpu::ssd_scan(fx.ptr, fdt.ptr, fdtBias.ptr, faLog.ptr, fB.ptr, fC.ptr,
                          c.withD ? fD.ptr : nullptr, c.withState ? fstate.ptr : nullptr,
                          {c.B, c.S, c.chunks}, c.NH, c.P, c.G, c.N, fy.ptr, fstateOut.ptr,
                          fdecay.ptr, launch, scratch.ptr, nullptr),
            cudaSuccess);
  test::expectSameBits(y.read(), test::roundedTo<T>(fy.read()));
  if constexpr (std::is_same_v<S, float>) {
    EXPECT_EQ(state.read(), fstateOut.read());
    EXPECT_EQ(decay.read(), fdecay.read());
  } else {
    test::expectSameBits(state.read(), test::roundedTo<S>(fstateOut.read()));
    test::expectSameBits(decay.read(), test::roundedTo<S>(fdecay.read()));
  }
}

TYPED_TEST(CudaKernels16, SsdScanIsTheF32KernelRounded) {
  using T = TypeParam;
  for (const test::SsdShape &c : test::ssdShapes()) {
    checkSsd16<T, float, float>(c);
    checkSsd16<T, T, T>(c);
  }
}

// Attention over q, k, v of T on the tensor cores, against the CPU's
// attention on the widened values within cuda_arith_test.cpp's tolerances
// (sixteen_bit_util.h, tcTolerance), on attention's shapes with head dims up
// to 256 and a cp rank's zigzag queries, half of them before every key.
template <typename T>
void checkTensorCoreAttention(const AttentionCase &c, const std::vector<int64_t> &qPos,
                              const std::vector<int64_t> &kPos) {
  SCOPED_TRACE(testing::Message() << "Sq " << c.Sq << " Sk " << c.Sk << " D " << c.D);
  std::vector<T> q = test::roundedTo<T>(test::normalVector(c.B * c.Sq * c.HQ * c.D, 7)),
                 k = test::roundedTo<T>(test::normalVector(c.B * c.Sk * c.HKV * c.D, 8)),
                 v = test::roundedTo<T>(test::normalVector(c.B * c.Sk * c.HKV * c.D, 9));
  float scale = 1.0f / std::sqrt((float)c.D);
  gpu::AttentionTcTiling tiling;
  std::string error;
  ASSERT_TRUE(gpu::attentionTcTiling(c.B, c.HQ, c.Sq, c.D, tiling, error)) << error;
  DeviceBuffer<T> dq(q), dk(k), dv(v), out(q.size());
  DeviceBuffer<float> lse((size_t)(c.B * c.HQ * c.Sq));
  DeviceBuffer<int64_t> dqPos(qPos), dkPos(kPos);
  ASSERT_EQ(gpu::attention_tc(srcOf(dq), srcOf(dk), srcOf(dv), dqPos.ptr, dkPos.ptr, c.B, c.Sq,
                              c.Sk, c.HQ, c.HKV, c.D, c.causal, scale, c.window, tiling, dstOf(out),
                              lse.ptr, nullptr),
            cudaSuccess);
  std::vector<float> wq = test::widened(q), wk = test::widened(k), wv = test::widened(v),
                     want(q.size()), wantLse(c.B * c.HQ * c.Sq);
  cpu::attention(wq.data(), wk.data(), wv.data(), qPos.data(), kPos.data(),
                 {c.B, c.Sq, c.Sk, c.HQ, c.HKV, c.D}, c.causal, scale, want.data(), wantLse.data(),
                 c.window);
  expectClose(test::widened(out.read()), want, test::tcTolerance<T>());
  std::vector<float> gotLse = lse.read();
  for (size_t i = 0; i < gotLse.size(); ++i)
    if (std::isinf(wantLse[i]))
      ASSERT_EQ(gotLse[i], wantLse[i]) << "at " << i;
    else
      ASSERT_NEAR(gotLse[i], wantLse[i], test::tcLseTolerance<T>() * (1.0f + std::fabs(wantLse[i])))
          << "at " << i;
}

TYPED_TEST(CudaKernels16, TensorCoreAttentionMatchesTheReference) {
  using T = TypeParam;
  for (const AttentionCase &c : kAttentionCases) {
    std::vector<int64_t> qPos(c.Sq), kPos(c.Sk);
    for (int64_t i = 0; i < c.Sq; ++i)
      qPos[i] = c.Sk - c.Sq + i;
    for (int64_t j = 0; j < c.Sk; ++j)
      kPos[j] = j;
    checkTensorCoreAttention<T>(c, qPos, kPos);
  }
  // Queries at 0..39 and 240..279, keys at 50..149: the first half sees none.
  std::vector<int64_t> qPos(80), kPos(100);
  for (int64_t i = 0; i < 80; ++i)
    qPos[i] = i < 40 ? i : 200 + i;
  for (int64_t j = 0; j < 100; ++j)
    kPos[j] = 50 + j;
  checkTensorCoreAttention<T>({1, 80, 100, 2, 2, 40, true, 0}, qPos, kPos);
}

// The loss over logits of T, whole and over three vocabulary shards (the
// shards' kernels on one device, their gathers as the shards in order): an
// f32 loss equal to the f32 kernels' on the widened logits, a loss of T
// that one rounded, bit for bit; against the CPU's loss, 1e-6 (whole) and
// 1e-5 (sharded) as in f32, and within one unit of T rounded.
TYPED_TEST(CudaKernels16, CrossEntropyReadsTheLogitsAsStored) {
  using T = TypeParam;
  const int64_t tokens = 513, V = 999, shards = 3, Vl = V / shards;
  test::LossCase<T> lc = test::lossCase<T>(tokens, V, 72, 3.0f, 7919);
  const std::vector<T> &logits = lc.logits;
  float want = lc.cpuLoss;
  DeviceBuffer<T> dlogits(logits), loss16((size_t)1);
  DeviceBuffer<float> flogits(lc.wide), loss32((size_t)1), fwant((size_t)1);
  DeviceBuffer<int32_t> dlabels(lc.labels), bad((size_t)1);
  DeviceBuffer<double> terms((size_t)tokens);
  auto whole = [&](gpu::Src from, gpu::Dst into) {
    return gpu::cross_entropy(from, dlabels.ptr, tokens, V, (double)tokens, terms.ptr, bad.ptr,
                              into, nullptr);
  };
  // The vocabulary-parallel kernels over shard m's rows of the logits.
  std::vector<T> shardRows(tokens * Vl);
  std::vector<std::unique_ptr<DeviceBuffer<T>>> shard16;
  std::vector<std::unique_ptr<DeviceBuffer<float>>> shard32;
  for (int64_t m = 0; m < shards; ++m) {
    for (int64_t t = 0; t < tokens; ++t)
      std::copy_n(logits.begin() + t * V + m * Vl, Vl, shardRows.begin() + t * Vl);
    shard16.push_back(std::make_unique<DeviceBuffer<T>>(shardRows));
    shard32.push_back(std::make_unique<DeviceBuffer<float>>(test::widened(shardRows)));
  }
  DeviceBuffer<float> maxes((size_t)(shards * tokens)), gmax((size_t)tokens),
      pieces((size_t)(shards * 2 * tokens));
  auto sharded = [&](bool stored, gpu::Dst into) {
    for (int64_t m = 0; m < shards; ++m) {
      gpu::Src from = stored ? srcOf(*shard16[m]) : srcOf(*shard32[m]);
      if (cudaError_t status =
              gpu::xent_local_max(from, tokens, Vl, maxes.ptr + m * tokens, nullptr);
          status != cudaSuccess)
        return status;
    }
    for (int64_t m = 0; m < shards; ++m) {
      gpu::Src from = stored ? srcOf(*shard16[m]) : srcOf(*shard32[m]);
      if (cudaError_t status =
              gpu::xent_local_pieces(from, dlabels.ptr, maxes.ptr, shards, tokens, Vl, m * Vl, V,
                                     gmax.ptr, pieces.ptr + m * 2 * tokens, bad.ptr, nullptr);
          status != cudaSuccess)
        return status;
    }
    return gpu::xent_sharded_loss(pieces.ptr, gmax.ptr, shards, tokens, (double)tokens, terms.ptr,
                                  into, nullptr);
  };
  struct Case {
    const char *what;
    std::function<cudaError_t(bool, gpu::Dst)> run;
    float tolerance;
  } cases[] = {{"whole",
                [&](bool stored, gpu::Dst into) {
                  return whole(stored ? srcOf(dlogits) : srcOf(flogits), into);
                },
                1e-6f},
               {"sharded", sharded, 1e-5f}};
  for (const Case &c : cases) {
    SCOPED_TRACE(c.what);
    ASSERT_EQ(c.run(false, dstOf(fwant)), cudaSuccess);
    ASSERT_EQ(c.run(true, dstOf(loss32)), cudaSuccess);
    ASSERT_EQ(c.run(true, dstOf(loss16)), cudaSuccess);
    EXPECT_EQ(loss32.read(), fwant.read());
    EXPECT_NEAR(loss32.read()[0], want, c.tolerance * std::fabs(want));
    test::expectRoundedResults(loss16.read(), fwant.read(), {want}, 1);
  }
  EXPECT_EQ(bad.read()[0], 0);
}

// Activations of two types, or an integer type, have no instance: refused
// before anything is launched.
TEST(CudaKernels16, MixedActivationsAreRefused) {
  DeviceBuffer<float> x((size_t)64), w((size_t)8);
  DeviceBuffer<uint16_t> half((size_t)64);
  gpu::Src bf16{half.ptr, gpu::arith::Type::BF16}, i32{x.ptr, gpu::arith::Type::I32};
  gpu::Dst f16{half.ptr, gpu::arith::Type::F16}, f32out{x.ptr, gpu::arith::Type::F32};
  EXPECT_EQ(gpu::rms_norm(bf16, srcOf(w), 8, 8, 1e-5f, f16, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(gpu::add(bf16, srcOf(x), 64, f32out, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(gpu::silu(i32, 64, {x.ptr, gpu::arith::Type::I32}, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(gpu::rope(bf16, nullptr, 1, 1, 1, 8, 1e4f, f32out, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(gpu::rms_norm(srcOf(x), i32, 8, 8, 1e-5f, f32out, nullptr), cudaErrorInvalidValue);
  // The conv's halo of another type than x, and its bias of another than
  // its kernel; the scan's gates of two types and its state of an integer
  // type; logits of an integer type.
  EXPECT_EQ(gpu::causal_conv1d(bf16, srcOf(w), srcOf(w), srcOf(x), {1, 8, 1}, 8, 1,
                               {half.ptr, gpu::arith::Type::BF16}, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(gpu::causal_conv1d(srcOf(x), srcOf(w), bf16, {nullptr, gpu::arith::Type::F32},
                               {1, 8, 1}, 8, 1, f32out, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(gpu::rglru_scan(srcOf(x), srcOf(w), srcOf(w), bf16, srcOf(w), srcOf(w), srcOf(w),
                            {1, 8, 1}, 8, f32out, f32out, f32out, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(gpu::rglru_scan(srcOf(x), srcOf(w), srcOf(w), srcOf(w), srcOf(w), srcOf(w), srcOf(w),
                            {1, 8, 1}, 8, f32out, {x.ptr, gpu::arith::Type::I32}, f32out, nullptr),
            cudaErrorInvalidValue);
  DeviceBuffer<double> terms((size_t)8);
  DeviceBuffer<int32_t> labels((size_t)8), bad((size_t)1);
  EXPECT_EQ(gpu::cross_entropy(i32, labels.ptr, 8, 8, 8.0, terms.ptr, bad.ptr, f32out, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

int main(int argc, char **argv) {
  if (std::string why = gpu::noCudaDevice(); !why.empty()) {
    std::printf("skipped: %s\n", why.c_str());
    return 77;
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

// -- backward kernels and AdamW (kernels/cuda/kernels_grad.h) -------------------------------
//
// linear's backward GEMMs run through the backend's cuBLASLt path (LtGemm),
// not a kernel of their own: LtGemmMatchesTheReferenceInEveryType above
// checks them, cuda_model_test.sh's training runs check them in place, and
// cuda_arith_test.cpp their layouts and types.

// The derivatives in double on both sides: 1e-6 (the device's exp and erf).
TEST(CudaGradKernels, ElementwiseGradientsMatchTheReference) {
  const int64_t n = 50001;
  auto x = test::normalVector(n, 51, 4.0f), u = test::normalVector(n, 52),
       dy = test::normalVector(n, 53);
  DeviceBuffer<float> dx(x), du(u), ddy(dy), out((size_t)n), out2((size_t)n);
  std::vector<float> want(n), want2(n);
  using Gpu = cudaError_t (*)(const float *, const float *, int64_t, float *, cudaStream_t);
  using Cpu = void (*)(const float *, const float *, int64_t, float *);
  struct Case {
    Gpu gpu;
    Cpu cpu;
    const char *name;
  } cases[] = {{gpu::silu_grad, cpu::silu_grad, "silu"},
               {gpu::gelu_grad, cpu::gelu_grad, "gelu"},
               {gpu::sigmoid_grad, cpu::sigmoid_grad, "sigmoid"},
               {gpu::softplus_grad, cpu::softplus_grad, "softplus"}};
  for (const Case &c : cases) {
    SCOPED_TRACE(c.name);
    ASSERT_EQ(c.gpu(dx.ptr, ddy.ptr, n, out.ptr, nullptr), cudaSuccess);
    c.cpu(x.data(), dy.data(), n, want.data());
    expectClose(out.read(), want, 1e-6f);
  }
  ASSERT_EQ(gpu::swiglu_grad(dx.ptr, du.ptr, ddy.ptr, n, out.ptr, out2.ptr, nullptr), cudaSuccess);
  cpu::swiglu_grad(x.data(), u.data(), dy.data(), n, want.data(), want2.data());
  expectClose(out.read(), want, 1e-6f);
  expectClose(out2.read(), want2, 1e-6f);
}

// Double sums across a block's threads against the CPU's sequential ones:
// 1e-5.
TEST(CudaGradKernels, RmsNormBackwardMatchesTheReference) {
  const int64_t T = 300, H = 1000;
  auto x = test::normalVector(T * H, 54), w = test::normalVector(H, 55),
       dy = test::normalVector(T * H, 56);
  DeviceBuffer<float> dx(x), dw(w), ddy(dy), out((size_t)(T * H)), dweight((size_t)H);
  DeviceBuffer<double> inverse((size_t)T);
  ASSERT_EQ(gpu::rms_norm_grad(dx.ptr, dw.ptr, ddy.ptr, T, H, 1e-5f, out.ptr, nullptr),
            cudaSuccess);
  ASSERT_EQ(
      gpu::rms_norm_grad_weight(dx.ptr, ddy.ptr, T, H, 1e-5f, inverse.ptr, dweight.ptr, nullptr),
      cudaSuccess);
  std::vector<float> want(T * H), wantW(H);
  cpu::rms_norm_grad(x.data(), w.data(), dy.data(), T, H, 1e-5f, want.data());
  cpu::rms_norm_grad_weight(x.data(), dy.data(), T, H, 1e-5f, wantW.data());
  expectClose(out.read(), want, 1e-5f);
  expectClose(dweight.read(), wantW, 1e-5f);
}

// The same double rotation as the CPU's, the device's sin and cos: 1e-6.
TEST(CudaGradKernels, RopeBackwardMatchesTheReference) {
  const int64_t B = 2, S = 33, NH = 4, D = 64;
  auto dy = test::normalVector(B * S * NH * D, 57);
  std::vector<int64_t> positions(S);
  for (int64_t s = 0; s < S; ++s)
    positions[s] = s * 20011;
  DeviceBuffer<float> ddy(dy), out(dy.size());
  DeviceBuffer<int64_t> dpos(positions);
  ASSERT_EQ(gpu::rope_grad(ddy.ptr, dpos.ptr, B, S, NH, D, 10000.0f, out.ptr, nullptr),
            cudaSuccess);
  std::vector<float> want(dy.size());
  cpu::rope_grad(dy.data(), positions.data(), B, S, NH, D, 10000.0f, want.data());
  expectClose(out.read(), want, 1e-6f);
}

// f32 probabilities from the recomputed log-sum-exp against the CPU's double
// softmax: 1e-4 of the largest gradient, for dq, dk and dv; causal GQA, not
// causal, and head dims of each accumulator length apart (attention_grad and
// attention_grad_kv), and sliding-window in one call (local_attention_grad).
TEST(CudaGradKernels, AttentionBackwardMatchesTheReference) {
  for (const AttentionCase &c : kAttentionCases) {
    SCOPED_TRACE(c.D);
    auto q = test::normalVector(c.B * c.Sq * c.HQ * c.D, 58),
         k = test::normalVector(c.B * c.Sk * c.HKV * c.D, 59),
         v = test::normalVector(c.B * c.Sk * c.HKV * c.D, 60),
         dy = test::normalVector(q.size(), 61);
    std::vector<int64_t> qPos(c.Sq), kPos(c.Sk);
    for (int64_t i = 0; i < c.Sq; ++i)
      qPos[i] = c.Sk - c.Sq + i;
    for (int64_t j = 0; j < c.Sk; ++j)
      kPos[j] = j;
    float scale = 1.0f / std::sqrt((float)c.D);
    gpu::AttentionTiling tiling;
    gpu::AttentionGradTiling gradTiling;
    std::string error;
    ASSERT_TRUE(gpu::attentionTiling(c.B, c.HQ, c.Sq, c.D, tiling, error)) << error;
    ASSERT_TRUE(gpu::attentionGradTiling(c.B, c.HKV, c.Sk, c.D, gradTiling, error)) << error;
    int64_t rows = c.B * c.Sq * c.HQ;
    DeviceBuffer<float> dq(q), dk(k), dv(v), ddy(dy), scratch((size_t)(rows * (c.D + 2)));
    DeviceBuffer<float> gq(q.size()), gk(k.size()), gv(v.size());
    DeviceBuffer<int64_t> dqPos(qPos), dkPos(kPos);
    gpu::AttentionGradArgs a{dq.ptr,
                             dk.ptr,
                             dv.ptr,
                             ddy.ptr,
                             dqPos.ptr,
                             dkPos.ptr,
                             c.B,
                             c.Sq,
                             c.Sk,
                             c.HQ,
                             c.HKV,
                             c.D,
                             c.causal,
                             scale,
                             c.window,
                             scratch.ptr,
                             scratch.ptr + rows * c.D,
                             scratch.ptr + rows * (c.D + 1)};
    std::vector<float> wantQ(q.size()), wantK(k.size()), wantV(v.size());
    rt::cpu::AttentionDims dims{c.B, c.Sq, c.Sk, c.HQ, c.HKV, c.D};
    if (c.window > 0) {
      ASSERT_EQ(gpu::attention_grad(a, tiling, gradTiling, gq.ptr, gk.ptr, gv.ptr, nullptr),
                cudaSuccess);
      cpu::local_attention_grad(q.data(), k.data(), v.data(), nullptr, nullptr, dy.data(), 0, 0,
                                dims, c.window, wantQ.data(), wantK.data(), wantV.data(), nullptr,
                                nullptr);
    } else {
      ASSERT_EQ(gpu::attention_grad(a, tiling, gradTiling, gq.ptr, nullptr, nullptr, nullptr),
                cudaSuccess);
      ASSERT_EQ(gpu::attention_grad(a, tiling, gradTiling, nullptr, gk.ptr, gv.ptr, nullptr),
                cudaSuccess);
      cpu::attention_grad(q.data(), k.data(), v.data(), dy.data(), qPos.data(), kPos.data(), dims,
                          c.causal, scale, wantQ.data());
      cpu::attention_grad_kv(q.data(), k.data(), v.data(), dy.data(), qPos.data(), kPos.data(),
                             dims, c.causal, scale, wantK.data(), wantV.data());
    }
    for (auto [got, want] :
         {std::pair{gq.read(), wantQ}, std::pair{gk.read(), wantK}, std::pair{gv.read(), wantV}}) {
      float largest = 0.0f;
      for (float w : want)
        largest = std::max(largest, std::fabs(w));
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < got.size(); ++i)
        ASSERT_NEAR(got[i], want[i], 1e-4f * (1.0f + largest)) << "at " << i;
    }
  }
}

// Row sums in double as on the CPU: 1e-6; labels outside the vocabulary
// counted.
TEST(CudaGradKernels, CrossEntropyBackwardMatchesTheReference) {
  const int64_t T = 513, V = 1000;
  auto logits = test::normalVector(T * V, 62, 3.0f);
  std::vector<int32_t> labels(T);
  for (int64_t t = 0; t < T; ++t)
    labels[t] = (int32_t)((t * 7919) % V);
  DeviceBuffer<float> dlogits(logits), out((size_t)(T * V));
  DeviceBuffer<int32_t> dlabels(labels), bad((size_t)1);
  ASSERT_EQ(
      gpu::cross_entropy_grad(dlogits.ptr, dlabels.ptr, T, V, (double)T, out.ptr, bad.ptr, nullptr),
      cudaSuccess);
  std::vector<float> want(T * V);
  cpu::cross_entropy_grad(logits.data(), labels.data(), T, V, want.data());
  expectClose(out.read(), want, 1e-6f);
  EXPECT_EQ(bad.read()[0], 0);
  labels[3] = -1;
  DeviceBuffer<int32_t> badLabels(labels);
  ASSERT_EQ(gpu::cross_entropy_grad(dlogits.ptr, badLabels.ptr, T, V, (double)T, out.ptr, bad.ptr,
                                    nullptr),
            cudaSuccess);
  EXPECT_EQ(bad.read()[0], 1);
}

// Each column's tokens in order, in double, as the CPU: equal; ids outside
// the vocabulary counted.
TEST(CudaGradKernels, EmbeddingBackwardIsTheReference) {
  const int64_t T = 1000, rows = 40, H = 96, offset = 20, limit = 100;
  std::vector<int32_t> ids(T);
  for (int64_t t = 0; t < T; ++t)
    ids[t] = (int32_t)((t * 37) % limit);
  auto dy = test::normalVector(T * H, 63);
  DeviceBuffer<int32_t> dids(ids), bad((size_t)1);
  DeviceBuffer<float> ddy(dy), out((size_t)(rows * H));
  DeviceBuffer<double> acc((size_t)(rows * H));
  ASSERT_EQ(gpu::embedding_grad(dids.ptr, ddy.ptr, T, rows, H, offset, limit, acc.ptr, out.ptr,
                                bad.ptr, nullptr),
            cudaSuccess);
  std::vector<float> want(rows * H);
  cpu::embedding_grad(ids.data(), dy.data(), T, rows, H, offset, want.data());
  EXPECT_EQ(out.read(), want);
  EXPECT_EQ(bad.read()[0], 0);
  ids[7] = (int32_t)limit;
  DeviceBuffer<int32_t> badIds(ids);
  ASSERT_EQ(gpu::embedding_grad(badIds.ptr, ddy.ptr, T, rows, H, offset, limit, acc.ptr, out.ptr,
                                bad.ptr, nullptr),
            cudaSuccess);
  EXPECT_EQ(bad.read()[0], 1);
}

// Double partials against the CPU's sequential double sum: 1e-7 relative
// after rounding to f32.
TEST(CudaGradKernels, SumOfSquaresMatchesTheReference) {
  for (int64_t n : {1, 1000, 3000001}) {
    SCOPED_TRACE(n);
    auto x = test::normalVector(n, 64);
    DeviceBuffer<float> dx(x), out((size_t)1);
    DeviceBuffer<double> partials((size_t)gpu::sumShape(n).blocks);
    ASSERT_EQ(gpu::sum_squares(dx.ptr, n, partials.ptr, out.ptr, nullptr), cudaSuccess);
    float want = (float)cpu::sum_squares(x.data(), n);
    EXPECT_NEAR(out.read()[0], want, 1e-7f * want);
  }
}

// optimizer.cu compiles without FMA contraction, so each element's double
// arithmetic is the CPU's: equal over three clipped steps with weight decay.
// A non-finite sum of squares changes nothing and is counted.
TEST(CudaGradKernels, AdamWIsTheReference) {
  const int64_t n = 100003;
  std::vector<float> w = test::normalVector(n, 65), m(n, 0.0f), v(n, 0.0f);
  DeviceBuffer<float> dw(w), dm(m), dv(v);
  DeviceBuffer<int32_t> bad((size_t)1);
  for (int64_t step = 1; step <= 3; ++step) {
    auto grad = test::normalVector(n, 66 + (unsigned)step);
    float sumsq = (float)cpu::sum_squares(grad.data(), n);
    cpu::AdamWStep p{1e-3, 0.9, 0.999, 1e-8, 0.01, step, cpu::clip_scale(sumsq, 1.0)};
    cpu::adamw(w.data(), grad.data(), m.data(), v.data(), n, p);
    gpu::arith::AdamWConstants k{1e-3,
                                 0.9,
                                 0.999,
                                 1e-8,
                                 0.01,
                                 1.0 - std::pow(0.9, (double)step),
                                 1.0 - std::pow(0.999, (double)step),
                                 1.0};
    DeviceBuffer<float> dgrad(grad), dsum(std::vector<float>{sumsq});
    ASSERT_EQ(gpu::adamw(dw.ptr, dgrad.ptr, dm.ptr, dv.ptr, n, k, dsum.ptr, bad.ptr, nullptr),
              cudaSuccess);
  }
  EXPECT_EQ(dw.read(), w);
  EXPECT_EQ(dm.read(), m);
  EXPECT_EQ(dv.read(), v);
  EXPECT_EQ(bad.read()[0], 0);
  DeviceBuffer<float> grad((size_t)n), nan(std::vector<float>{std::nanf("")});
  gpu::arith::AdamWConstants k{1e-3, 0.9, 0.999, 1e-8, 0.01, 0.1, 0.001, 1.0};
  ASSERT_EQ(gpu::adamw(dw.ptr, grad.ptr, dm.ptr, dv.ptr, n, k, nan.ptr, bad.ptr, nullptr),
            cudaSuccess);
  EXPECT_EQ(bad.read()[0], 1);
  EXPECT_EQ(dw.read(), w);
}

// AdamW of a bf16 weight through its f32 main copy: the main copy and the
// moments are the CPU's f32 AdamW bit for bit (no FMA contraction), and the
// weight's bits the main copy rounded as the CPU entry rounds it, from a bf16
// gradient and from an f32 one; an f32 weight is refused.
TEST(CudaGradKernels, AdamWThroughAMainCopyIsTheReference) {
  using gpu::arith::Bf16;
  const int64_t n = 100003;
  for (bool wideGrad : {false, true}) {
    SCOPED_TRACE(wideGrad ? "f32 gradient" : "bf16 gradient");
    std::vector<float> main = test::normalVector(n, 67), m(n, 0.0f), v(n, 0.0f);
    std::vector<Bf16> w(n);
    for (int64_t i = 0; i < n; ++i) {
      gpu::arith::storeElement(w.data(), i, main[i]);
      main[i] = gpu::arith::loadElement(w.data(), i);
    }
    DeviceBuffer<Bf16> dw(w);
    DeviceBuffer<float> dmain(main), dm(m), dv(v);
    DeviceBuffer<int32_t> bad((size_t)1);
    for (int64_t step = 1; step <= 3; ++step) {
      std::vector<float> grad = test::normalVector(n, 68 + (unsigned)step);
      std::vector<Bf16> grad16(n);
      for (int64_t i = 0; i < n; ++i) {
        gpu::arith::storeElement(grad16.data(), i, grad[i]);
        if (!wideGrad)
          grad[i] = gpu::arith::loadElement(grad16.data(), i);
      }
      float sumsq = (float)cpu::sum_squares(grad.data(), n);
      cpu::AdamWStep p{1e-3, 0.9, 0.999, 1e-8, 0.01, step, cpu::clip_scale(sumsq, 1.0)};
      cpu::adamw(main.data(), grad.data(), m.data(), v.data(), n, p);
      gpu::arith::AdamWConstants k{1e-3, 0.9, 0.999, 1e-8, 0.01, 1.0 - std::pow(0.9, (double)step),
                                   1.0 - std::pow(0.999, (double)step), 1.0};
      DeviceBuffer<float> dgrad(grad), dsum(std::vector<float>{sumsq});
      DeviceBuffer<Bf16> dgrad16(grad16);
      gpu::Src g = wideGrad ? srcOf(dgrad) : srcOf(dgrad16);
      ASSERT_EQ(gpu::adamw_main(dstOf(dw), g, dmain.ptr, dm.ptr, dv.ptr, n, k, dsum.ptr, bad.ptr,
                                nullptr),
                cudaSuccess);
    }
    EXPECT_EQ(dmain.read(), main);
    EXPECT_EQ(dm.read(), m);
    EXPECT_EQ(dv.read(), v);
    std::vector<uint16_t> want(n);
    rt::convertOnHost(rt::BufferView(main.data(), n), rt::BufferView(want.data(), n, rt::DType::BF16));
    std::vector<Bf16> got = dw.read();
    int64_t differ = 0;
    for (int64_t i = 0; i < n; ++i)
      differ += got[i].bits != want[i];
    EXPECT_EQ(differ, 0);
    EXPECT_EQ(bad.read()[0], 0);
  }
  DeviceBuffer<float> f32(std::vector<float>(4, 1.0f)), sum(std::vector<float>{1.0f});
  DeviceBuffer<int32_t> bad((size_t)1);
  gpu::arith::AdamWConstants k{1e-3, 0.9, 0.999, 1e-8, 0.01, 0.1, 0.001, 1.0};
  EXPECT_EQ(gpu::adamw_main(dstOf(f32), srcOf(f32), f32.ptr, f32.ptr, f32.ptr, 4, k, sum.ptr,
                            bad.ptr, nullptr),
            cudaErrorInvalidValue);
}

// The conv's sums in double in the CPU's order (the device may fuse a
// multiply and an add): 1e-6; dweight and dbias a call per sequence on the
// CPU, as its table entry makes them; over whole sequences and over chunks
// with their halos (dhalo, and the taps before a chunk reading its halo).
TEST(CudaGradKernels, CausalConvBackwardMatchesTheReference) {
  const int64_t B = 3, S = 300, C = 96, W = 4, H = W - 1;
  auto x = test::normalVector(B * S * C, 84), w = test::normalVector(C * W, 85),
       dy = test::normalVector(B * S * C, 86), halos = test::normalVector(B * H * C, 87);
  for (bool withHalo : {false, true}) {
    SCOPED_TRACE(withHalo ? "chunks with halos" : "whole sequences");
    DeviceBuffer<float> dx(x), dw(w), ddy(dy), dhalos(halos), gx((size_t)(B * S * C)),
        gh((size_t)(B * H * C)), gw((size_t)(C * W)), gb((size_t)C);
    ASSERT_EQ(gpu::causal_conv1d_grad(dw.ptr, ddy.ptr, B, S, C, W, gx.ptr,
                                      withHalo ? gh.ptr : nullptr, nullptr),
              cudaSuccess);
    ASSERT_EQ(gpu::causal_conv1d_grad_weight(dx.ptr, withHalo ? dhalos.ptr : nullptr, ddy.ptr, B, S,
                                             C, W, gw.ptr, gb.ptr, nullptr),
              cudaSuccess);
    std::vector<float> wantDx(B * S * C), wantDh(B * H * C), wantDw(C * W, 0.0f), wantDb(C, 0.0f);
    for (int64_t b = 0; b < B; ++b) {
      cpu::causal_conv1d_grad(w.data(), dy.data() + b * S * C, 1, S, C, W,
                              wantDx.data() + b * S * C,
                              withHalo ? wantDh.data() + b * H * C : nullptr);
      cpu::causal_conv1d_grad_weight(
          x.data() + b * S * C, withHalo ? halos.data() + b * H * C : nullptr,
          dy.data() + b * S * C, 1, S, C, W, wantDw.data(), wantDb.data());
    }
    expectClose(gx.read(), wantDx, 1e-6f);
    if (withHalo)
      expectClose(gh.read(), wantDh, 1e-6f);
    expectClose(gw.read(), wantDw, 1e-6f);
    expectClose(gb.read(), wantDb, 1e-6f);
  }
}

// The RG-LRU scan's backward in double on both sides, the device's exp,
// expm1 and fused multiply-adds: 1e-5 of the largest gradient, from zero
// and from a state with the summaries' cotangents.
TEST(CudaGradKernels, RglruScanBackwardMatchesTheReference) {
  const int64_t B = 2, S = 200, W = 128;
  for (bool fromState : {false, true}) {
    SCOPED_TRACE(fromState);
    auto x = test::normalVector(B * S * W, 87), dy = test::normalVector(B * S * W, 88);
    auto wa = test::normalVector(W, 89), ba = test::normalVector(W, 90),
         wx = test::normalVector(W, 91), bx = test::normalVector(W, 92),
         lambda = test::normalVector(W, 93), stateIn = test::normalVector(B * W, 94),
         dstate = test::normalVector(B * W, 95), ddecay = test::normalVector(B * W, 96);
    std::vector<float> wantDx(B * S * W), wantDstate(B * W);
    std::vector<std::vector<float>> want(5, std::vector<float>(W, 0.0f));
    cpu::RglruParamGrads dp{want[0].data(), want[1].data(), want[2].data(), want[3].data(),
                            want[4].data()};
    auto opt = [&](std::vector<float> &v, int64_t off) -> float * {
      return fromState ? v.data() + off : nullptr;
    };
    for (int64_t b = 0; b < B; ++b)
      cpu::rglru_scan_grad(x.data() + b * S * W, wa.data(), ba.data(), wx.data(), bx.data(),
                           lambda.data(), opt(stateIn, b * W), dy.data() + b * S * W,
                           opt(dstate, b * W), opt(ddecay, b * W), 1, S, W,
                           wantDx.data() + b * S * W, wantDstate.data() + b * W, dp);
    DeviceBuffer<float> dx(x), ddy(dy), dwa(wa), dba(ba), dwx(wx), dbx(bx), dlambda(lambda),
        dstateIn(stateIn), ddstate(dstate), dddecay(ddecay), gx((size_t)(B * S * W)),
        gstate((size_t)(B * W));
    // DeviceBuffer owns its memory and is not copied: five of them, named.
    DeviceBuffer<float> gwa((size_t)W), gba((size_t)W), gwx((size_t)W), gbx((size_t)W),
        glambda((size_t)W);
    DeviceBuffer<float> *params[] = {&gwa, &gba, &gwx, &gbx, &glambda};
    DeviceBuffer<double> h((size_t)(S * W));
    gpu::arith::RglruGradArgs a{dx.ptr,
                                dwa.ptr,
                                dba.ptr,
                                dwx.ptr,
                                dbx.ptr,
                                dlambda.ptr,
                                fromState ? dstateIn.ptr : nullptr,
                                ddy.ptr,
                                fromState ? ddstate.ptr : nullptr,
                                fromState ? dddecay.ptr : nullptr,
                                B,
                                S,
                                W,
                                gx.ptr,
                                gstate.ptr,
                                params[0]->ptr,
                                params[1]->ptr,
                                params[2]->ptr,
                                params[3]->ptr,
                                params[4]->ptr,
                                h.ptr};
    ASSERT_EQ(gpu::rglru_scan_grad(a, nullptr), cudaSuccess);
    auto closeToScale = [](const std::vector<float> &got, const std::vector<float> &want) {
      float largest = 0.0f;
      for (float v : want)
        largest = std::max(largest, std::fabs(v));
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < got.size(); ++i)
        ASSERT_NEAR(got[i], want[i], 1e-5f * (1.0f + largest)) << "at " << i;
    };
    closeToScale(gx.read(), wantDx);
    closeToScale(gstate.read(), wantDstate);
    for (int p = 0; p < 5; ++p) {
      SCOPED_TRACE(p);
      closeToScale(params[p]->read(), want[p]);
    }
  }
}

namespace {

/// |got - want| <= tol * (1 + max |want|): gradients compared at the scale
/// of the largest one.
void expectCloseToScale(const std::vector<float> &got, const std::vector<float> &want, float tol) {
  float largest = 0.0f;
  for (float v : want)
    largest = std::max(largest, std::fabs(v));
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], tol * (1.0f + largest)) << "at " << i;
}

} // namespace

// Double sums across the block's threads against the CPU's sequential ones:
// 1e-5.
TEST(CudaGradKernels, GatedNormBackwardMatchesTheReference) {
  const int64_t T = 300, C = 512, groups = 4;
  auto y = test::normalVector(T * C, 116), z = test::normalVector(T * C, 117),
       w = test::normalVector(C, 118), dout = test::normalVector(T * C, 119);
  DeviceBuffer<float> dy(y), dz(z), dw(w), ddout(dout), gy((size_t)(T * C)), gz((size_t)(T * C)),
      gw((size_t)C);
  DeviceBuffer<double> inverse((size_t)(T * groups));
  ASSERT_EQ(gpu::gated_rms_norm_grad(dy.ptr, dz.ptr, dw.ptr, ddout.ptr, T, C, groups, 1e-5f, gy.ptr,
                                     gz.ptr, nullptr),
            cudaSuccess);
  ASSERT_EQ(gpu::gated_rms_norm_grad_weight(dy.ptr, dz.ptr, ddout.ptr, T, C, groups, 1e-5f,
                                            inverse.ptr, gw.ptr, nullptr),
            cudaSuccess);
  std::vector<float> wantDy(T * C), wantDz(T * C), wantDw(C);
  cpu::gated_rms_norm_grad(y.data(), z.data(), w.data(), dout.data(), T, C, groups, 1e-5f,
                           wantDy.data(), wantDz.data());
  cpu::gated_rms_norm_grad_weight(y.data(), z.data(), dout.data(), T, C, groups, 1e-5f,
                                  wantDw.data());
  expectClose(gy.read(), wantDy, 1e-5f);
  expectClose(gz.read(), wantDz, 1e-5f);
  expectClose(gw.read(), wantDw, 1e-5f);
}

// The SSD scan's backward in chunks (f32 products over tiles, double
// decays and sums) against the CPU's step by step in double: 1e-5 of each
// result's largest value (the host walk's is 2e-6, runtime.cuda-arith; the
// device's exp and contracted multiply-adds differ from the host's), from
// zero and from a state with the summaries' cotangents, over P and N of a
// model's (64, 128) and two heads a group.
TEST(CudaGradKernels, SsdScanBackwardMatchesTheReference) {
  for (bool fromState : {false, true}) {
    SCOPED_TRACE(fromState);
    const int64_t B = 2, S = 200, NH = 4, P = 64, G = 2, N = 128, T = B * S, xw = NH * P,
                  bw = G * N, PN = P * N;
    auto x = test::normalVector(T * xw, 120), dy = test::normalVector(T * xw, 121),
         Bm = test::normalVector(T * bw, 122), Cm = test::normalVector(T * bw, 123),
         dt = test::normalVector(T * NH, 124), dtBias = test::normalVector(NH, 125),
         aLog = test::normalVector(NH, 126, 0.5f), D = test::normalVector(NH, 127),
         stateIn = test::normalVector(B * NH * PN, 128),
         dstate = test::normalVector(B * NH * PN, 129), ddecay = test::normalVector(B * NH, 130);
    auto opt = [&](std::vector<float> &v, int64_t off) -> float * {
      return fromState ? v.data() + off : nullptr;
    };
    std::vector<float> dtv(T * NH), A(NH), ddt(T * NH), dA(NH, 0.0f), dD(NH, 0.0f);
    std::vector<float> wantDx(T * xw), wantDB(T * bw), wantDC(T * bw), wantState(B * NH * PN);
    std::vector<float> wantDdt(T * NH), wantDtBias(NH), wantALog(NH);
    cpu::ssd_prelude(dt.data(), dtBias.data(), aLog.data(), T, NH, dtv.data(), A.data());
    cpu::SsdDims one{1, S, NH, P, G, N};
    for (int64_t b = 0; b < B; ++b)
      cpu::ssd_scan_grad(
          x.data() + b * S * xw, dtv.data() + b * S * NH, A.data(), Bm.data() + b * S * bw,
          Cm.data() + b * S * bw, D.data(), opt(stateIn, b * NH * PN), dy.data() + b * S * xw,
          opt(dstate, b * NH * PN), opt(ddecay, b * NH), one, wantDx.data() + b * S * xw,
          ddt.data() + b * S * NH, dA.data(), wantDB.data() + b * S * bw,
          wantDC.data() + b * S * bw, dD.data(), wantState.data() + b * NH * PN);
    cpu::ssd_prelude_grad(dt.data(), dtBias.data(), aLog.data(), T, NH, ddt.data(), dA.data(),
                          wantDdt.data(), wantDtBias.data(), wantALog.data());
    DeviceBuffer<float> gx(x), gdy(dy), gB(Bm), gC(Cm), gdt(dt), gdtBias(dtBias), gaLog(aLog),
        gD(D), gstateIn(stateIn), gdstate(dstate), gddecay(ddecay);
    DeviceBuffer<float> ddtv((size_t)(T * NH)), gdA((size_t)NH), gdD((size_t)NH),
        dx((size_t)(T * xw)), dB((size_t)(T * bw)), dC((size_t)(T * bw)),
        state((size_t)(B * NH * PN)), ddtRaw((size_t)(T * NH)), ddtBias((size_t)NH),
        daLog((size_t)NH);
    gpu::SsdGradLaunch launch;
    std::string error;
    ASSERT_TRUE(gpu::ssdGradLaunch(B, S, NH, P, G, N, launch, error)) << error;
    DeviceBuffer<char> scratch((size_t)launch.scratchBytes);
    gpu::arith::SsdGradArgs a{};
    a.fwd = gpu::arith::SsdArgs{gx.ptr,  gdt.ptr, gdtBias.ptr, gaLog.ptr,
                                gB.ptr,  gC.ptr,  gD.ptr,      fromState ? gstateIn.ptr : nullptr,
                                B,       S,       1,           NH,
                                P,       G,       N,           nullptr,
                                nullptr, nullptr, nullptr,     nullptr,
                                nullptr};
    a.dy = gdy.ptr;
    a.dstate = fromState ? gdstate.ptr : nullptr;
    a.ddecay = fromState ? gddecay.ptr : nullptr;
    a.dx = dx.ptr;
    a.ddt = ddtv.ptr;
    a.dA = gdA.ptr;
    a.dB = dB.ptr;
    a.dC = dC.ptr;
    a.dD = gdD.ptr;
    a.dstateIn = state.ptr;
    ASSERT_EQ(
        gpu::ssd_scan_grad(a, launch, scratch.ptr, ddtRaw.ptr, ddtBias.ptr, daLog.ptr, nullptr),
        cudaSuccess);
    expectCloseToScale(dx.read(), wantDx, 1e-5f);
    expectCloseToScale(dB.read(), wantDB, 1e-5f);
    expectCloseToScale(dC.read(), wantDC, 1e-5f);
    expectCloseToScale(gdD.read(), dD, 1e-5f);
    expectCloseToScale(ddtRaw.read(), wantDdt, 1e-5f);
    expectCloseToScale(ddtBias.read(), wantDtBias, 1e-5f);
    expectCloseToScale(daLog.read(), wantALog, 1e-5f);
    if (fromState)
      expectCloseToScale(state.read(), wantState, 1e-5f);
  }
}

// MoE's backward on dense slabs: the router's, the combine's (into slabs
// exact; the weights' double dot products 1e-6) and the dispatch's (double
// sums in choice order, 1e-6); indices outside the experts counted.
TEST(CudaGradKernels, MoeRoutingCombineDispatchBackwardMatchTheReference) {
  const int64_t T = 1000, E = 8, k = 2, H = 64;
  std::vector<int32_t> idx(T * k);
  for (int64_t t = 0; t < T; ++t) {
    idx[t * k] = (int32_t)(t % E);
    idx[t * k + 1] = (int32_t)((t % E + 1 + t % 5) % E);
  }
  auto w = test::normalVector(T * k, 140), dw = test::normalVector(T * k, 141),
       dy = test::normalVector(T * H, 142), slabs = test::normalVector(E * T * H, 143);
  DeviceBuffer<int32_t> didx(idx), bad((size_t)1);
  DeviceBuffer<float> dwts(w), ddw(dw), ddy(dy), dslabs(slabs), logits((size_t)(T * E)),
      gslabs((size_t)(E * T * H)), gw((size_t)(T * k)), gx((size_t)(T * H));
  ASSERT_EQ(
      gpu::router_topk_grad(dwts.ptr, didx.ptr, ddw.ptr, T, k, E, logits.ptr, bad.ptr, nullptr),
      cudaSuccess);
  ASSERT_EQ(gpu::moe_combine_grad(dwts.ptr, didx.ptr, ddy.ptr, T, H, k, E, gslabs.ptr, nullptr),
            cudaSuccess);
  ASSERT_EQ(
      gpu::moe_combine_grad_weights(dslabs.ptr, didx.ptr, ddy.ptr, T, H, k, E, gw.ptr, nullptr),
      cudaSuccess);
  ASSERT_EQ(gpu::moe_dispatch_grad(dslabs.ptr, didx.ptr, T, H, k, E, gx.ptr, nullptr), cudaSuccess);
  std::vector<float> wantLogits(T * E), wantSlabs(E * T * H), wantW(T * k), wantX(T * H);
  cpu::router_topk_grad(w.data(), idx.data(), dw.data(), T, k, E, wantLogits.data());
  cpu::moe_combine_grad(w.data(), idx.data(), dy.data(), T, H, k, E, wantSlabs.data());
  cpu::moe_combine_grad_weights(slabs.data(), idx.data(), dy.data(), T, H, k, wantW.data());
  cpu::moe_dispatch_grad(slabs.data(), idx.data(), T, H, k, wantX.data());
  expectClose(logits.read(), wantLogits, 1e-6f);
  expectClose(gslabs.read(), wantSlabs, 0.0f);
  expectClose(gw.read(), wantW, 1e-6f);
  expectClose(gx.read(), wantX, 1e-6f);
  EXPECT_EQ(bad.read()[0], 0);
  idx[5] = (int32_t)E;
  DeviceBuffer<int32_t> badIdx(idx);
  ASSERT_EQ(
      gpu::router_topk_grad(dwts.ptr, badIdx.ptr, ddw.ptr, T, k, E, logits.ptr, bad.ptr, nullptr),
      cudaSuccess);
  EXPECT_EQ(bad.read()[0], 1);
}

// Dropless MoE over the routed rows: the device's counting sort gives
// moe_dispatch's order exactly (2000 choices: eight sort chunks, an expert
// with none), and the grouped GEMMs, the combine and the backward's per-row
// values are the host's runs of the same functions (moe_routed.h) bit for
// bit: the same fmaf chains and double sums.
TEST(CudaKernels, RoutedSortAndGroupedGemmsAreTheHostsArithmetic) {
  namespace arith = gpu::arith;
  const int64_t T = 1000, k = 2, E = 9, H = 40, F = 72, R = T * k;
  std::vector<int32_t> idx(R);
  for (int64_t t = 0; t < T; ++t) {
    idx[t * k] = (int32_t)(t % 3);
    idx[t * k + 1] = (int32_t)(3 + (t * 7 + t / 5) % 5);
  }
  int64_t chunks = arith::sortChunks(R);
  DeviceBuffer<int32_t> didx(idx), chunkCounts((size_t)(chunks * E)), counts((size_t)E),
      perm((size_t)R), rowOf((size_t)R), bad((size_t)1);
  DeviceBuffer<int64_t> offsets((size_t)(E + 1)), first((size_t)(chunks * E)),
      tiles((size_t)(E + 1));
  gpu::RoutedSort sort{chunkCounts.ptr, counts.ptr, offsets.ptr, first.ptr,
                       tiles.ptr,       perm.ptr,   rowOf.ptr};
  ASSERT_EQ(gpu::moe_sort(didx.ptr, R, E, sort, bad.ptr, nullptr), cudaSuccess);
  std::vector<float> x = test::normalVector(T * H, 150), sortedHost(R * H);
  std::vector<int32_t> wantCounts(E), wantPerm(R);
  cpu::moe_dispatch(x.data(), idx.data(), T, H, k, E, sortedHost.data(), wantCounts.data(),
                    wantPerm.data());
  EXPECT_EQ(counts.read(), wantCounts);
  EXPECT_EQ(perm.read(), wantPerm);
  EXPECT_EQ(bad.read()[0], 0);
  std::vector<int32_t> gotRowOf = rowOf.read();
  for (int64_t i = 0; i < R; ++i)
    ASSERT_EQ(wantPerm[gotRowOf[i]], i);
  std::vector<int64_t> hostOffsets = offsets.read(), hostTiles = tiles.read();
  DeviceBuffer<float> dx(x), sorted((size_t)(R * H));
  ASSERT_EQ(gpu::moe_gather_tokens(srcOf(dx), perm.ptr, R, H, k, dstOf(sorted), nullptr),
            cudaSuccess);
  EXPECT_EQ(sorted.read(), sortedHost);
  // Both orientations of the grouped product and the grouped aᵀ·b.
  std::vector<float> w = test::normalVector(E * H * F, 151, 0.2f),
                     b = test::normalVector(R * F, 152);
  DeviceBuffer<float> dw(w), db(b), rows((size_t)(R * F)), rowsT((size_t)(R * H)),
      outer((size_t)(E * H * F));
  ASSERT_EQ(gpu::grouped_rows(srcOf(sorted), srcOf(dw), false, R, H, F, offsets.ptr, tiles.ptr, E,
                              rows.ptr, nullptr),
            cudaSuccess);
  ASSERT_EQ(gpu::grouped_rows(srcOf(db), srcOf(dw), true, R, F, H, offsets.ptr, tiles.ptr, E,
                              rowsT.ptr, nullptr),
            cudaSuccess);
  ASSERT_EQ(gpu::grouped_outer(sorted.ptr, H, db.ptr, F, offsets.ptr, E, outer.ptr, nullptr),
            cudaSuccess);
  std::vector<float> wantRows(R * F), wantRowsT(R * H), wantOuter(E * H * F);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t r = hostOffsets[e]; r < hostOffsets[e + 1]; ++r) {
      for (int64_t n = 0; n < F; ++n)
        wantRows[r * F + n] =
            arith::groupedDot(sortedHost.data(), w.data() + e * H * F, false, H, F, r, n);
      for (int64_t n = 0; n < H; ++n)
        wantRowsT[r * H + n] = arith::groupedDot(b.data(), w.data() + e * H * F, true, F, H, r, n);
    }
  for (int64_t e = 0; e < E; ++e)
    for (int64_t m = 0; m < H; ++m)
      for (int64_t n = 0; n < F; ++n)
        wantOuter[(e * H + m) * F + n] =
            arith::groupedOuter(sortedHost.data(), H, b.data(), F, hostOffsets[e],
                                hostOffsets[e + 1] - hostOffsets[e], m, n);
  expectClose(rows.read(), wantRows, 0.0f);
  expectClose(rowsT.read(), wantRowsT, 0.0f);
  expectClose(outer.read(), wantOuter, 0.0f);
  // The combine, the backward's dx, the rows' scaling and dot products.
  std::vector<float> out = test::normalVector(R * H, 153), weights = test::normalVector(R, 154);
  DeviceBuffer<float> dout(out), dweights(weights), y((size_t)(T * H)), gx((size_t)(T * H)),
      scaled((size_t)(R * H)), dots((size_t)R), picked((size_t)R);
  ASSERT_EQ(
      gpu::moe_routed_combine(dout.ptr, rowOf.ptr, srcOf(dweights), T, H, k, dstOf(y), nullptr),
      cudaSuccess);
  ASSERT_EQ(gpu::moe_routed_dx(dout.ptr, rowOf.ptr, T, H, k, gx.ptr, nullptr), cudaSuccess);
  ASSERT_EQ(gpu::scale_rows(dout.ptr, dweights.ptr, R, H, scaled.ptr, nullptr), cudaSuccess);
  ASSERT_EQ(gpu::row_dots(dout.ptr, sorted.ptr, R, H, dots.ptr, nullptr), cudaSuccess);
  ASSERT_EQ(gpu::moe_scatter_choices(dweights.ptr, rowOf.ptr, R, picked.ptr, nullptr), cudaSuccess);
  std::vector<float> wantY(T * H), wantGx(T * H), wantScaled(R * H), wantDots(R), wantPicked(R);
  cpu::moe_combine(out.data(), wantPerm.data(), weights.data(), T, H, k, wantY.data());
  for (int64_t i = 0; i < T * H; ++i)
    wantGx[i] = arith::routedDxElement(out.data(), gotRowOf.data(), H, k, i / H, i % H);
  for (int64_t i = 0; i < R * H; ++i)
    wantScaled[i] = weights[i / H] * out[i];
  for (int64_t r = 0; r < R; ++r) {
    wantDots[r] = arith::rowDot(out.data(), sortedHost.data(), H, r);
    wantPicked[r] = weights[gotRowOf[r]];
  }
  expectClose(y.read(), wantY, 0.0f);
  expectClose(gx.read(), wantGx, 0.0f);
  expectClose(scaled.read(), wantScaled, 0.0f);
  expectClose(dots.read(), wantDots, 0.0f);
  expectClose(picked.read(), wantPicked, 0.0f);
  // An index outside the experts is counted.
  idx[17] = (int32_t)E;
  DeviceBuffer<int32_t> badIdx(idx);
  ASSERT_EQ(gpu::moe_sort(badIdx.ptr, R, E, sort, bad.ptr, nullptr), cudaSuccess);
  EXPECT_EQ(bad.read()[0], 1);
}

// Capacity mode on the GPU: the slots (both policies), the kept and dropped
// rows, the dispatch, the combine and their backward, all the CPU's exactly
// (the same comparisons and double sums); a bad slot counted.
TEST(CudaKernels, CapacityModeIsTheCpus) {
  namespace arith = gpu::arith;
  const int64_t B = 4, S = 64, k = 2, E = 8, C = 5, H = 24;
  cpu::CapacityDims cd;
  cd.B = B, cd.S = S, cd.k = k, cd.E = E, cd.C = C, cd.rows = 2, cd.positions = 16;
  arith::Capacity d;
  d.B = B, d.S = S, d.k = k, d.E = E, d.C = C, d.rows = 2, d.positions = 16;
  std::vector<int32_t> idx(B * S * k);
  std::vector<float> w(B * S * k);
  for (int64_t t = 0; t < B * S; ++t) {
    idx[t * k] = (int32_t)(t % 2);
    idx[t * k + 1] = (int32_t)(2 + (t * 5) % 6);
    w[t * k] = t % 3 == 0 ? 0.5f : 0.5f + 0.001f * (float)(t % 17);
    w[t * k + 1] = 1.0f - w[t * k];
  }
  std::vector<float> x = test::normalVector(B * S * H, 160),
                     dy = test::normalVector(B * S * H, 161);
  const int64_t n = d.groups() * E, rows = E * d.groups() * C;
  DeviceBuffer<int32_t> didx(idx), slots(idx.size()), bad((size_t)1);
  DeviceBuffer<int64_t> kept((size_t)n), dropped((size_t)n);
  DeviceBuffer<float> dwts(w), dx(x), ddy(dy), buffers((size_t)(rows * H)), y((size_t)(B * S * H)),
      gx((size_t)(B * S * H)), dbuf((size_t)(rows * H)), gw((size_t)(B * S * k));
  for (bool probs : {true, false}) {
    SCOPED_TRACE(probs ? "probs" : "position");
    ASSERT_EQ(gpu::moe_capacity_slots(srcOf(dwts), didx.ptr, d, probs, slots.ptr, kept.ptr,
                                      dropped.ptr, nullptr),
              cudaSuccess);
    std::vector<int32_t> want(idx.size());
    std::vector<int64_t> wantKept(E, 0), wantDropped(E, 0), gotKept(E, 0), gotDropped(E, 0);
    cpu::moe_capacity_slots(w.data(), idx.data(), cd,
                            probs ? cpu::DropPolicy::Probs : cpu::DropPolicy::Position, want.data(),
                            wantKept.data(), wantDropped.data());
    EXPECT_EQ(slots.read(), want);
    std::vector<int64_t> k2 = kept.read(), x2 = dropped.read();
    for (int64_t i = 0; i < n; ++i) {
      gotKept[i % E] += k2[i];
      gotDropped[i % E] += x2[i];
    }
    EXPECT_EQ(gotKept, wantKept);
    EXPECT_EQ(gotDropped, wantDropped);
    EXPECT_GT(wantDropped[0], 0);
  }
  std::vector<int32_t> hostSlots = slots.read();
  ASSERT_EQ(
      gpu::moe_dispatch_capacity(srcOf(dx), didx.ptr, slots.ptr, d, H, dstOf(buffers), nullptr),
      cudaSuccess);
  ASSERT_EQ(gpu::moe_combine_capacity(srcOf(buffers), srcOf(dwts), didx.ptr, slots.ptr, d, H,
                                      dstOf(y), nullptr),
            cudaSuccess);
  ASSERT_EQ(
      gpu::moe_dispatch_capacity_grad(buffers.ptr, didx.ptr, slots.ptr, d, H, gx.ptr, nullptr),
      cudaSuccess);
  ASSERT_EQ(gpu::moe_combine_capacity_grad(dwts.ptr, didx.ptr, slots.ptr, ddy.ptr, d, H, dbuf.ptr,
                                           nullptr),
            cudaSuccess);
  ASSERT_EQ(gpu::moe_combine_capacity_grad_weights(buffers.ptr, didx.ptr, slots.ptr, ddy.ptr, d, H,
                                                   gw.ptr, nullptr),
            cudaSuccess);
  std::vector<float> wantBuf(rows * H), wantY(B * S * H), wantGx(B * S * H), wantDbuf(rows * H),
      wantGw(B * S * k);
  cpu::moe_dispatch_capacity(x.data(), idx.data(), hostSlots.data(), cd, H, wantBuf.data());
  cpu::moe_combine_capacity(wantBuf.data(), w.data(), idx.data(), hostSlots.data(), cd, H,
                            wantY.data());
  cpu::moe_dispatch_capacity_grad(wantBuf.data(), idx.data(), hostSlots.data(), cd, H,
                                  wantGx.data());
  cpu::moe_combine_capacity_grad(w.data(), idx.data(), hostSlots.data(), dy.data(), cd, H,
                                 wantDbuf.data());
  cpu::moe_combine_capacity_grad_weights(wantBuf.data(), idx.data(), hostSlots.data(), dy.data(),
                                         cd, H, wantGw.data());
  expectClose(buffers.read(), wantBuf, 0.0f);
  expectClose(y.read(), wantY, 0.0f);
  expectClose(gx.read(), wantGx, 0.0f);
  expectClose(dbuf.read(), wantDbuf, 0.0f);
  expectClose(gw.read(), wantGw, 0.0f);
  hostSlots[9] = (int32_t)C;
  DeviceBuffer<int32_t> badSlots(hostSlots);
  ASSERT_EQ(gpu::count_bad_slots(badSlots.ptr, (int64_t)hostSlots.size(), C, bad.ptr, nullptr),
            cudaSuccess);
  EXPECT_EQ(bad.read()[0], 1);
}

// -- around the exchanges' duals (kernels/cuda/exchange_grad.h) -----------------------------

// Ring attention's backward a key block at a time (attention_grad_from_stats)
// from the whole softmax's log-sum-exp and delta (the CPU's merge over the
// blocks), the blocks' dq added up: the whole attention's backward within
// 1e-4 of the largest gradient, as attention's backward.
TEST(CudaExchangeGradKernels, AttentionBackwardByBlocksIsTheWholeBackward) {
  const int64_t B = 2, Sq = 40, blocks = 3, Sb = 40, Sk = blocks * Sb, HQ = 4, HKV = 2, D = 64;
  const int64_t qw = HQ * D, kw = HKV * D, rows = B * Sq * HQ;
  auto q = test::normalVector(B * Sq * qw, 140), k = test::normalVector(B * Sk * kw, 141),
       v = test::normalVector(B * Sk * kw, 142), dy = test::normalVector(q.size(), 143);
  std::vector<int64_t> qPos(Sq), kPos(Sk);
  for (int64_t i = 0; i < Sq; ++i)
    qPos[i] = Sk - Sq + i;
  for (int64_t j = 0; j < Sk; ++j)
    kPos[j] = j;
  float scale = 1.0f / std::sqrt((float)D);
  rt::cpu::AttentionDims whole{B, Sq, Sk, HQ, HKV, D};
  std::vector<float> out(q.size()), lse(rows), delta(rows);
  cpu::attention(q.data(), k.data(), v.data(), qPos.data(), kPos.data(), whole, true, scale,
                 out.data(), lse.data());
  cpu::attention_delta(dy.data(), out.data(), B, Sq, HQ, D, delta.data());
  gpu::AttentionTiling tiling;
  gpu::AttentionGradTiling gradTiling;
  std::string error;
  ASSERT_TRUE(gpu::attentionTiling(B, HQ, Sq, D, tiling, error)) << error;
  ASSERT_TRUE(gpu::attentionGradTiling(B, HKV, Sb, D, gradTiling, error)) << error;
  DeviceBuffer<float> dq(q), ddy(dy), dlse(lse), ddelta(delta);
  DeviceBuffer<int64_t> dqPos(qPos);
  std::vector<float> gotQ(q.size(), 0.0f), gotK(k.size()), gotV(v.size());
  for (int64_t blk = 0; blk < blocks; ++blk) {
    std::vector<float> kb, vb;
    for (int64_t b = 0; b < B; ++b) {
      int64_t from = (b * Sk + blk * Sb) * kw;
      kb.insert(kb.end(), k.begin() + from, k.begin() + from + Sb * kw);
      vb.insert(vb.end(), v.begin() + from, v.begin() + from + Sb * kw);
    }
    std::vector<int64_t> bPos(kPos.begin() + blk * Sb, kPos.begin() + (blk + 1) * Sb);
    DeviceBuffer<float> dk(kb), dv(vb), gq(q.size()), gk(kb.size()), gv(vb.size());
    DeviceBuffer<int64_t> dkPos(bPos);
    gpu::AttentionGradArgs a{dq.ptr, dk.ptr, dv.ptr, ddy.ptr, dqPos.ptr, dkPos.ptr,
                             B,      Sq,     Sb,     HQ,      HKV,       D,
                             true,   scale,  0,      nullptr, dlse.ptr,  ddelta.ptr};
    ASSERT_EQ(
        gpu::attention_grad_from_stats(a, tiling, gradTiling, gq.ptr, gk.ptr, gv.ptr, nullptr),
        cudaSuccess);
    std::vector<float> pq = gq.read(), pk = gk.read(), pv = gv.read();
    for (size_t i = 0; i < pq.size(); ++i)
      gotQ[i] += pq[i];
    for (int64_t b = 0; b < B; ++b)
      for (int64_t e = 0; e < Sb * kw; ++e) {
        gotK[(b * Sk + blk * Sb) * kw + e] = pk[b * Sb * kw + e];
        gotV[(b * Sk + blk * Sb) * kw + e] = pv[b * Sb * kw + e];
      }
  }
  std::vector<float> wantQ(q.size()), wantK(k.size()), wantV(v.size());
  cpu::attention_grad(q.data(), k.data(), v.data(), dy.data(), qPos.data(), kPos.data(), whole,
                      true, scale, wantQ.data());
  cpu::attention_grad_kv(q.data(), k.data(), v.data(), dy.data(), qPos.data(), kPos.data(), whole,
                         true, scale, wantK.data(), wantV.data());
  expectCloseToScale(gotQ, wantQ, 1e-4f);
  expectCloseToScale(gotK, wantK, 1e-4f);
  expectCloseToScale(gotV, wantV, 1e-4f);
}

// halo_add's rows added in order, one thread a channel: additions only,
// exact.
TEST(CudaExchangeGradKernels, AddRowsInOrderIsExact) {
  const int64_t n = 9, C = 300, rows = 4;
  auto src = test::normalVector(n * C, 144), dst = test::normalVector(rows * C, 145);
  std::vector<int64_t> from = {8, 0, 3, 3, 1, 7, 2, 5, 6}, to = {0, 1, 1, 3, 0, 2, 1, 3, 0};
  std::vector<float> want = dst;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < C; ++c)
      want[to[i] * C + c] += src[from[i] * C + c];
  DeviceBuffer<float> dsrc(src), ddst(dst);
  DeviceBuffer<int64_t> dfrom(from), dto(to);
  ASSERT_EQ(gpu::add_rows_in_order(dsrc.ptr, dfrom.ptr, dto.ptr, n, C, ddst.ptr, nullptr),
            cudaSuccess);
  EXPECT_EQ(ddst.read(), want);
}

// The state exchange's dual on the device (the device may fuse a multiply
// and an add): 1e-6 of the CPU's reverse combination, from summaries
// gathered out of sequence order.
TEST(CudaExchangeGradKernels, StateExchangeGradMatchesTheReference) {
  const int64_t chunks = 4, nd = 8, bcast = 16, size = nd * bcast;
  auto dinit = test::normalVector(chunks * size, 146),
       inits = test::normalVector(chunks * size, 147),
       decays = test::normalVector(chunks * nd, 148, 0.5f);
  std::vector<float> wantStates(chunks * size), wantDecays(chunks * nd);
  cpu::scan_combine_states_grad(decays.data(), inits.data(), dinit.data(), nullptr, chunks, nd,
                                bcast, wantStates.data(), wantDecays.data(), nullptr);
  // This rank holds chunks 1 and 2 of the members' {0, 3} and {1, 2}.
  std::vector<float> gathered, mine;
  std::vector<int64_t> dinitAt(chunks), decayAt(chunks), held = {1, 2};
  for (const std::vector<int64_t> &member : {std::vector<int64_t>{0, 3}, held}) {
    for (int64_t c : member) {
      dinitAt[c] = (int64_t)gathered.size();
      gathered.insert(gathered.end(), dinit.begin() + c * size, dinit.begin() + (c + 1) * size);
    }
    for (int64_t c : member) {
      decayAt[c] = (int64_t)gathered.size();
      gathered.insert(gathered.end(), decays.begin() + c * nd, decays.begin() + (c + 1) * nd);
    }
  }
  for (int64_t c : held)
    mine.insert(mine.end(), inits.begin() + c * size, inits.begin() + (c + 1) * size);
  DeviceBuffer<float> dg(gathered), dmine(mine), gs((size_t)(2 * size)), gd((size_t)(2 * nd));
  DeviceBuffer<int64_t> ddinitAt(dinitAt), ddecayAt(decayAt), dheld(held);
  ASSERT_EQ(gpu::state_exchange_grad(dg.ptr, ddinitAt.ptr, ddecayAt.ptr, dheld.ptr, chunks, 2, size,
                                     bcast, dmine.ptr, gs.ptr, gd.ptr, nullptr),
            cudaSuccess);
  std::vector<float> want(wantStates.begin() + size, wantStates.begin() + 3 * size),
      wantD(wantDecays.begin() + nd, wantDecays.begin() + 3 * nd);
  expectClose(gs.read(), want, 1e-6f);
  expectClose(gd.read(), wantD, 1e-6f);
}

// Cross-entropy's backward on one of three vocabulary shards from the
// gathered sums: 1e-6 of the CPU's xent_grad (the device's exp).
TEST(CudaExchangeGradKernels, ShardedCrossEntropyBackwardMatchesTheReference) {
  const int64_t T = 37, V = 600, shards = 3, Vl = V / shards, m = 1;
  auto logits = test::normalVector(T * V, 149, 3.0f);
  std::vector<int32_t> labels(T);
  for (int64_t t = 0; t < T; ++t)
    labels[t] = (int32_t)((t * 97) % V);
  std::vector<std::vector<float>> shard(shards, std::vector<float>(T * Vl));
  std::vector<float> maxes(shards * T), gmax(T), sums(shards * T), sum(T);
  std::vector<const float *> maxPointers, sumPointers;
  for (int64_t s = 0; s < shards; ++s) {
    for (int64_t t = 0; t < T; ++t)
      std::copy_n(logits.begin() + t * V + s * Vl, Vl, shard[s].begin() + t * Vl);
    cpu::xent_local_max(shard[s].data(), T, Vl, maxes.data() + s * T);
    maxPointers.push_back(maxes.data() + s * T);
  }
  cpu::xent_combine_max(maxPointers.data(), shards, T, gmax.data());
  for (int64_t s = 0; s < shards; ++s) {
    cpu::xent_local_sumexp(shard[s].data(), gmax.data(), T, Vl, sums.data() + s * T);
    sumPointers.push_back(sums.data() + s * T);
  }
  cpu::xent_combine_sum(sumPointers.data(), shards, T, sum.data());
  std::vector<float> want(T * Vl);
  cpu::xent_grad(shard[m].data(), labels.data(), gmax.data(), sum.data(), T, Vl, m * Vl, 4 * T,
                 want.data());
  DeviceBuffer<float> dlogits(shard[m]), dgmax(gmax), dsums(sums), got((size_t)(T * Vl));
  DeviceBuffer<int32_t> dlabels(labels);
  ASSERT_EQ(gpu::xent_sharded_grad(dlogits.ptr, dlabels.ptr, dgmax.ptr, dsums.ptr, shards, T, Vl,
                                   m * Vl, (double)(4 * T), got.ptr, nullptr),
            cudaSuccess);
  expectClose(got.read(), want, 1e-6f);
}

// The corrections' backward over two chunks of each batch entry, a state
// slot each, in double on both sides with the device's exp and fused
// multiply-adds: 1e-5 of the largest gradient, against the CPU table's
// calls a sequence at a time.
TEST(CudaExchangeGradKernels, CorrectionsBackwardMatchTheReference) {
  const int64_t B = 2, S = 160, chunks = 2, L = S / chunks, slots = B * chunks;
  {
    SCOPED_TRACE("ssd");
    const int64_t NH = 8, P = 16, G = 2, N = 16, PN = P * N, T = B * S, xw = NH * P, bw = G * N;
    auto Cm = test::normalVector(T * bw, 150), dy = test::normalVector(T * xw, 151),
         dt = test::normalVector(T * NH, 152), dtBias = test::normalVector(NH, 153),
         aLog = test::normalVector(NH, 154, 0.5f), init = test::normalVector(slots * NH * PN, 155);
    std::vector<float> dtv(T * NH), A(NH), wantDinit(slots * NH * PN), wantDC(T * bw, 0.0f),
        wantDdt(T * NH), wantDA(NH, 0.0f);
    cpu::ssd_prelude(dt.data(), dtBias.data(), aLog.data(), T, NH, dtv.data(), A.data());
    cpu::SsdDims one{1, L, NH, P, G, N};
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < chunks; ++c) {
        int64_t row = b * S + c * L, slot = (c * B + b) * NH * PN;
        cpu::ssd_state_correct_grad(Cm.data() + row * bw, dtv.data() + row * NH, A.data(),
                                    init.data() + slot, dy.data() + row * xw, one,
                                    wantDinit.data() + slot, wantDC.data() + row * bw,
                                    wantDdt.data() + row * NH, wantDA.data());
      }
    DeviceBuffer<float> dC(Cm), ddtv(dtv), dA(A), dinit(init), ddy(dy), gInit(init.size()),
        gC(Cm.size()), gDt(dt.size()), gA((size_t)NH);
    DeviceBuffer<double> scratch((size_t)(G * gpu::arith::ssdCorrectGradLaneDoubles(S, P, N)));
    gpu::arith::SsdCorrectGradArgs a{dC.ptr,    ddtv.ptr, dA.ptr,  dinit.ptr, ddy.ptr,    B,
                                     S,         chunks,   NH,      P,         G,          N,
                                     gInit.ptr, gC.ptr,   gDt.ptr, gA.ptr,    scratch.ptr};
    ASSERT_EQ(gpu::ssd_correct_grad(a, nullptr), cudaSuccess);
    expectCloseToScale(gInit.read(), wantDinit, 1e-5f);
    expectCloseToScale(gC.read(), wantDC, 1e-5f);
    expectCloseToScale(gDt.read(), wantDdt, 1e-5f);
    expectCloseToScale(gA.read(), wantDA, 1e-5f);
  }
  {
    SCOPED_TRACE("rg-lru");
    const int64_t W = 128;
    auto x = test::normalVector(B * S * W, 156), dy = test::normalVector(B * S * W, 157),
         wa = test::normalVector(W, 158), ba = test::normalVector(W, 159),
         lambda = test::normalVector(W, 160), init = test::normalVector(slots * W, 161);
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
    DeviceBuffer<float> dx(x), ddy(dy), dwa(wa), dba(ba), dlambda(lambda), dinit(init),
        gInit(init.size()), gx(x.size()), gwa((size_t)W), gba((size_t)W), glambda((size_t)W);
    DeviceBuffer<double> scratch((size_t)(L * W));
    gpu::arith::RglruCorrectGradArgs a{
        dx.ptr, dwa.ptr, dba.ptr,   dlambda.ptr, dinit.ptr, ddy.ptr, B,           S,
        chunks, W,       gInit.ptr, gx.ptr,      gwa.ptr,   gba.ptr, glambda.ptr, scratch.ptr};
    ASSERT_EQ(gpu::rglru_correct_grad(a, nullptr), cudaSuccess);
    expectCloseToScale(gInit.read(), wantDinit, 1e-5f);
    expectCloseToScale(gx.read(), wantDx, 1e-5f);
    expectCloseToScale(gwa.read(), wantWa, 1e-5f);
    expectCloseToScale(gba.read(), wantBa, 1e-5f);
    expectCloseToScale(glambda.read(), wantLambda, 1e-5f);
  }
}
