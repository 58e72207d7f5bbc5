//===- float16.h - 16-bit float roundings, host and device -------*- C++ -*-===//
//
// The conversions between f32 and bf16/f16 bit patterns that every device
// uses, so that a 16-bit weight is the same on every device for one seed:
// widening is exact, narrowing rounds to nearest even (overflow to infinity,
// subnormals kept, a NaN stays a quiet NaN). Plain C++ that also compiles
// for a CUDA device (core/buffer.cpp and kernels/cuda/arith.h use it).
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_CORE_FLOAT16_H
#define SHARDLINE_RUNTIME_CORE_FLOAT16_H

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define SL_HD __host__ __device__ __forceinline__
#else
#define SL_HD inline
#endif

namespace shardline::rt::bits {
SL_HD float fromBits(uint32_t bits) {
  float value;
  memcpy(&value, &bits, sizeof value);
  return value;
}
SL_HD uint32_t toBits(float value) {
  uint32_t bits;
  memcpy(&bits, &value, sizeof bits);
  return bits;
}

SL_HD float bf16ToFloat(uint16_t bits) { return fromBits((uint32_t)bits << 16); }

/// Round to nearest even; a NaN stays a quiet NaN.
SL_HD uint16_t floatToBf16(float value) {
  uint32_t bits = toBits(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u)
    return (uint16_t)((bits >> 16) | 0x40);
  return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1)) >> 16);
}

SL_HD float f16ToFloat(uint16_t bits) {
  int exponent = (bits >> 10) & 0x1f, mantissa = bits & 0x3ff;
  float magnitude;
  if (exponent == 0)
    magnitude = ldexpf((float)mantissa, -24);
  else if (exponent == 0x1f)
    magnitude = mantissa ? fromBits(0x7fc00000u) : fromBits(0x7f800000u);
  else
    magnitude = ldexpf((float)(mantissa | 0x400), exponent - 25);
  return (bits & 0x8000) ? -magnitude : magnitude;
}

/// Round to nearest even, overflow to infinity, subnormals kept.
SL_HD uint16_t floatToF16(float value) {
  uint32_t bits = toBits(value);
  uint16_t sign = (uint16_t)((bits >> 16) & 0x8000);
  uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u)
    return sign | 0x7e00;
  if (magnitude >= 0x477ff000u) // halfway between 65504 and 2^16 and above
    return sign | 0x7c00;
  int exponent = (int)(magnitude >> 23) - 127;
  uint32_t significand = (magnitude & 0x7fffffu) | 0x800000u;
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

} // namespace shardline::rt::bits

#endif
