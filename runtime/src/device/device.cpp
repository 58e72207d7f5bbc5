//===- device.cpp - the CPU device ------------------------------------------===//

#include "device/device.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

namespace shardline::rt {

namespace {

void toF32(const BufferView &from, float *to) {
  const int64_t n = from.count;
  switch (from.dtype) {
  case DType::F32:
    std::memcpy(to, from.data, (size_t)n * sizeof(float));
    return;
  case DType::BF16: {
    const auto *bits = static_cast<const uint16_t *>(from.data);
    for (int64_t i = 0; i < n; ++i)
      to[i] = bf16ToFloat(bits[i]);
    return;
  }
  case DType::F16: {
    const auto *bits = static_cast<const uint16_t *>(from.data);
    for (int64_t i = 0; i < n; ++i)
      to[i] = f16ToFloat(bits[i]);
    return;
  }
  case DType::I32:
    for (int64_t i = 0; i < n; ++i)
      to[i] = (float)from.i32()[i];
    return;
  }
}

void fromF32(const float *from, const BufferView &to) {
  const int64_t n = to.count;
  switch (to.dtype) {
  case DType::F32:
    std::memcpy(to.data, from, (size_t)n * sizeof(float));
    return;
  case DType::BF16: {
    auto *bits = static_cast<uint16_t *>(to.data);
    for (int64_t i = 0; i < n; ++i)
      bits[i] = floatToBf16(from[i]);
    return;
  }
  case DType::F16: {
    auto *bits = static_cast<uint16_t *>(to.data);
    for (int64_t i = 0; i < n; ++i)
      bits[i] = floatToF16(from[i]);
    return;
  }
  case DType::I32:
    for (int64_t i = 0; i < n; ++i)
      to.i32()[i] = (int32_t)from[i];
    return;
  }
}

} // namespace

void *CpuDevice::allocate(int64_t bytes) {
  void *memory = std::calloc((size_t)(bytes > 0 ? bytes : 1), 1);
  if (!memory)
    throw std::bad_alloc();
  return memory;
}

void CpuDevice::release(void *memory) { std::free(memory); }

void CpuDevice::zero(void *memory, int64_t bytes) { std::memset(memory, 0, (size_t)bytes); }

DType CpuDevice::storageType(DType dtype) const { return dtype; }

void CpuDevice::convert(const BufferView &from, const BufferView &to) {
  if (from.count != to.count)
    throw std::invalid_argument("convert: " + std::to_string(from.count) + " " +
                                dtypeName(from.dtype) + " elements into " +
                                std::to_string(to.count) + " " + dtypeName(to.dtype));
  if (from.dtype == to.dtype) {
    std::memcpy(to.data, from.data, (size_t)from.bytes());
  } else if (to.dtype == DType::F32) {
    toF32(from, to.f32());
  } else if (from.dtype == DType::F32) {
    fromF32(from.f32(), to);
  } else {
    std::vector<float> wide((size_t)from.count);
    toF32(from, wide.data());
    fromF32(wide.data(), to);
  }
}

} // namespace shardline::rt
