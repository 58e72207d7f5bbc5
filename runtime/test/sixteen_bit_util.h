//===- sixteen_bit_util.h - 16-bit storage in the CUDA kernels' tests -*- C++ -*-===//
//
// What the tests of the kernels over bf16 and f16 storage share: values
// rounded and widened as the executor rounds and widens them (the CPU
// device's conversions), comparisons of 16-bit results bit for bit or in
// units of their type, and the CPU references of the kernels over sequence
// chunks and of the loss that the host and GPU tests compare with.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_TEST_SIXTEEN_BIT_UTIL_H
#define SHARDLINE_RUNTIME_TEST_SIXTEEN_BIT_UTIL_H

#include "comm/group.h"
#include "core/buffer.h"
#include "device/device.h"
#include "kernel_test_util.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cuda/arith.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

namespace shardline::rt::test {

/// The 16-bit storage types, for typed tests.
using SixteenBitTypes = ::testing::Types<cuda::arith::Bf16, cuda::arith::F16>;

/// f32 values rounded to storage type T as the executor narrows a result.
template <typename T> std::vector<T> roundedTo(std::vector<float> v) {
  std::vector<T> out(v.size());
  CpuDevice device;
  device.convert(BufferView(v.data(), (int64_t)v.size()),
                 BufferView(out.data(), (int64_t)v.size(), (DType)cuda::arith::Storage<T>::type));
  return out;
}

/// Values stored as T widened as the executor widens an operand.
template <typename T> std::vector<float> widened(std::vector<T> v) {
  std::vector<float> out(v.size());
  CpuDevice device;
  device.convert(BufferView(v.data(), (int64_t)v.size(), (DType)cuda::arith::Storage<T>::type),
                 BufferView(out.data(), (int64_t)v.size()));
  return out;
}

/// Tolerances of the tensor-core attention (attention_tc.h) against the
/// CPU's attention on the widened inputs, relative to 1 + |want|: about
/// twice the largest errors of cuda_arith_test.cpp's host run (bf16: output
/// 3.6e-3, log-sum-exp 1.1e-3; f16: 4.5e-4 and 1.3e-4), which the tensor
/// cores' order of f32 sums does not come near. The GPU test holds the
/// device to the same.
template <typename T> float tcTolerance() {
  return std::is_same_v<T, cuda::arith::Bf16> ? 8e-3f : 1e-3f;
}
template <typename T> float tcLseTolerance() {
  return std::is_same_v<T, cuda::arith::Bf16> ? 2e-3f : 2e-4f;
}

/// g members' pieces of n values each, landed in group order, for the
/// reduce-scatter sums' tests: normal values, one in seven 300 times
/// larger so that the order of an f32 sum shows.
inline std::vector<float> summandPieces(int64_t g, int64_t n, unsigned seed) {
  std::vector<float> values = normalVector(g * n, seed);
  for (int64_t i = 0; i < g * n; i += 7)
    values[i] *= 300.0f;
  return values;
}

/// The host collectives' sum of g landed pieces of n values (sumTerms: f32
/// in group order, rounded once into E's type).
template <typename E>
std::vector<E> hostSumOfPieces(const std::vector<E> &landed, int64_t g, int64_t n) {
  std::vector<const void *> terms;
  for (int64_t j = 0; j < g; ++j)
    terms.push_back(landed.data() + j * n);
  std::vector<E> out(n);
  sumTerms((DType)cuda::arith::Storage<E>::type, terms, n, out.data());
  return out;
}

template <typename T> void expectSameBits(const std::vector<T> &got, const std::vector<T> &want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_EQ(got[i].bits, want[i].bits) << "at " << i;
}

/// How many steps of a 16-bit type lie between two of its values.
inline int unitsApart(uint16_t a, uint16_t b) {
  auto line = [](uint16_t v) { return (v & 0x8000) ? -(int)(v & 0x7fff) : (int)(v & 0x7fff); };
  return std::abs(line(a) - line(b));
}

template <typename T>
void expectWithinUnits(const std::vector<T> &got, const std::vector<T> &want, int units) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_LE(unitsApart(got[i].bits, want[i].bits), units) << "at " << i;
}

/// A kernel's results over storage T against the same kernel's f32 results
/// on the widened operands, rounded (equal, bit for bit), and the CPU
/// kernel's, rounded (within `units` of T).
template <typename T>
void expectRoundedResults(const std::vector<T> &got, const std::vector<float> &f32,
                          const std::vector<float> &cpu, int units) {
  expectSameBits(got, roundedTo<T>(f32));
  expectWithinUnits(got, roundedTo<T>(cpu), units);
}

/// The CPU's causal conv1d of x[B, S, C] as the CPU table walks it: each of
/// the `chunks` sequences of a batch entry on its own, reading the W - 1
/// rows of its halo slot b*chunks + c (halo nullptr: zeros).
inline std::vector<float> convOnCpu(const std::vector<float> &x, const std::vector<float> &w,
                                    const std::vector<float> &bias, const float *halo, int64_t B,
                                    int64_t S, int64_t chunks, int64_t C, int64_t W) {
  std::vector<float> y(x.size());
  int64_t L = S / chunks;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < chunks; ++c) {
      int64_t rows = b * S + c * L;
      cpu::causal_conv1d(x.data() + rows * C, w.data(), bias.data(),
                         halo ? halo + (b * chunks + c) * (W - 1) * C : nullptr, 1, L, C, W,
                         y.data() + rows * C);
    }
  return y;
}

/// The CPU's RG-LRU scan of x[B, S, W] with the gate parameters (wa, ba,
/// wx, bx, lambda in order): rglru_gates, then rglru_scan of each of the
/// `chunks` sequences of a batch entry from its state slot c*B + b.
struct RglruOnCpu {
  std::vector<float> y, state, decay;
};
inline RglruOnCpu rglruOnCpu(const std::vector<float> &x,
                             const std::vector<std::vector<float>> &gates,
                             const std::vector<float> &stateIn, int64_t B, int64_t S,
                             int64_t chunks, int64_t W) {
  int64_t L = S / chunks;
  std::vector<float> gateA(x.size()), gateX(x.size());
  RglruOnCpu r{std::vector<float>(x.size()), std::vector<float>(stateIn.size()),
               std::vector<float>(stateIn.size())};
  cpu::rglru_gates(x.data(), gates[0].data(), gates[1].data(), gates[2].data(), gates[3].data(),
                   B * S, W, gateA.data(), gateX.data());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < chunks; ++c) {
      int64_t rows = b * S + c * L, slot = c * B + b;
      cpu::rglru_scan(x.data() + rows * W, gateA.data() + rows * W, gateX.data() + rows * W,
                      gates[4].data(), stateIn.data() + slot * W, 1, L, W, r.y.data() + rows * W,
                      r.state.data() + slot * W, r.decay.data() + slot * W);
    }
  return r;
}

/// A loss over `tokens` rows of V logits stored as T (a normal distribution
/// of `sigma`, rounded), token t labelled (t * stride) % V; the logits
/// widened and the CPU's loss on them.
template <typename T> struct LossCase {
  std::vector<T> logits;
  std::vector<int32_t> labels;
  std::vector<float> wide;
  float cpuLoss;
};
template <typename T>
LossCase<T> lossCase(int64_t tokens, int64_t V, unsigned seed, float sigma, int64_t stride) {
  LossCase<T> c{
      roundedTo<T>(normalVector(tokens * V, seed, sigma)), std::vector<int32_t>(tokens), {}, 0.0f};
  for (int64_t t = 0; t < tokens; ++t)
    c.labels[t] = (int32_t)((t * stride) % V);
  c.wide = widened(c.logits);
  c.cpuLoss = cpu::cross_entropy(c.wide.data(), c.labels.data(), tokens, V);
  return c;
}

} // namespace shardline::rt::test

#endif
