//===- buffer.cpp - element types and views of memory ----------------------===//

#include "core/buffer.h"
#include "core/float16.h"

#include <cmath>
#include <cstring>
#include <vector>

namespace shardline::rt {

int64_t dtypeSize(DType dtype) {
  switch (dtype) {
  case DType::F32:
  case DType::I32:
    return 4;
  case DType::BF16:
  case DType::F16:
    return 2;
  }
  return 0;
}

const char *dtypeName(DType dtype) {
  switch (dtype) {
  case DType::F32:
    return "f32";
  case DType::BF16:
    return "bf16";
  case DType::F16:
    return "f16";
  case DType::I32:
    return "i32";
  }
  return "?";
}

float bf16ToFloat(uint16_t value) { return bits::bf16ToFloat(value); }
uint16_t floatToBf16(float value) { return bits::floatToBf16(value); }
float f16ToFloat(uint16_t value) { return bits::f16ToFloat(value); }
uint16_t floatToF16(float value) { return bits::floatToF16(value); }

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

void convertOnHost(const BufferView &from, const BufferView &to) {
  if (from.dtype == to.dtype) {
    if (from.bytes() > 0)
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

BufferView BufferView::slice(int64_t first, int64_t n) const {
  return BufferView(static_cast<char *>(data) + first * dtypeSize(dtype), n, dtype);
}

} // namespace shardline::rt
