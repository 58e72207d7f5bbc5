//===- buffer.cpp - element types and views of memory ----------------------===//

#include "core/buffer.h"

#include <cmath>
#include <cstring>

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

float bf16ToFloat(uint16_t bits) {
  uint32_t wide = (uint32_t)bits << 16;
  float value;
  std::memcpy(&value, &wide, sizeof value);
  return value;
}

uint16_t floatToBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) // NaN stays a (quiet) NaN
    return (uint16_t)((bits >> 16) | 0x40);
  return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1)) >> 16);
}

float f16ToFloat(uint16_t bits) {
  int exponent = (bits >> 10) & 0x1f;
  int mantissa = bits & 0x3ff;
  float magnitude;
  if (exponent == 0)
    magnitude = std::ldexp((float)mantissa, -24);
  else if (exponent == 0x1f)
    magnitude = mantissa ? NAN : INFINITY;
  else
    magnitude = std::ldexp((float)(mantissa | 0x400), exponent - 25);
  return (bits & 0x8000) ? -magnitude : magnitude;
}

uint16_t floatToF16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  uint16_t sign = (uint16_t)((bits >> 16) & 0x8000);
  uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u)
    return sign | 0x7e00;
  // 65520 lies halfway between the largest f16 (65504) and 2^16: ties go to
  // the even one, which is infinity.
  if (magnitude >= 0x477ff000u)
    return sign | 0x7c00;
  int exponent = (int)(magnitude >> 23) - 127;
  uint32_t significand = (magnitude & 0x7fffffu) | 0x800000u;
  // Normal results keep 11 significant bits; subnormal ones count units of
  // 2^-24. A carry out of the mantissa lands in the exponent, as it should.
  int shift = exponent >= -14 ? 13 : -exponent - 1;
  if (shift > 24)
    return sign;
  uint32_t kept = significand >> shift;
  uint32_t rest = significand & ((1u << shift) - 1), halfway = 1u << (shift - 1);
  if (exponent >= -14)
    kept = ((uint32_t)(exponent + 15) << 10) + (kept & 0x3ff);
  if (rest > halfway || (rest == halfway && (kept & 1)))
    ++kept;
  return sign | (uint16_t)kept;
}

BufferView BufferView::slice(int64_t first, int64_t n) const {
  return BufferView(static_cast<char *>(data) + first * dtypeSize(dtype), n, dtype);
}

} // namespace shardline::rt
