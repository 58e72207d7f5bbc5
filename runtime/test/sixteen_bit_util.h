//===- sixteen_bit_util.h - 16-bit storage in the CUDA kernels' tests -*- C++ -*-===//
//
// What the tests of the kernels over bf16 and f16 storage share: values
// rounded and widened as the executor rounds and widens them (the CPU
// device's conversions), and comparisons of 16-bit results bit for bit or
// in units of their type.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_TEST_SIXTEEN_BIT_UTIL_H
#define SHARDLINE_RUNTIME_TEST_SIXTEEN_BIT_UTIL_H

#include "core/buffer.h"
#include "device/device.h"
#include "kernels/cuda/arith.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
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

} // namespace shardline::rt::test

#endif
