//===- buffer.cpp - element types and views of memory ----------------------===//

#include "core/buffer.h"
#include "core/float16.h"

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

float bf16ToFloat(uint16_t value) { return bits::bf16ToFloat(value); }
uint16_t floatToBf16(float value) { return bits::floatToBf16(value); }
float f16ToFloat(uint16_t value) { return bits::f16ToFloat(value); }
uint16_t floatToF16(float value) { return bits::floatToF16(value); }

BufferView BufferView::slice(int64_t first, int64_t n) const {
  return BufferView(static_cast<char *>(data) + first * dtypeSize(dtype), n, dtype);
}

} // namespace shardline::rt
