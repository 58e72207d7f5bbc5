//===- buffer.h - element types and views of memory -------------*- C++ -*-===//
//
// The base layer every other one shares: the element types of the plan, the
// 16-bit float conversions, and a buffer view (where, how many elements, which
// type) that devices hand out, kernels read and collectives move.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_CORE_BUFFER_H
#define SHARDLINE_RUNTIME_CORE_BUFFER_H

#include <cstdint>

namespace shardline::rt {

/// The element types of the plan.
enum class DType : uint8_t { F32, BF16, F16, I32 };

int64_t dtypeSize(DType dtype);
const char *dtypeName(DType dtype);

/// 16-bit floats by bit pattern; rounding is to nearest, ties to even.
float bf16ToFloat(uint16_t bits);
uint16_t floatToBf16(float value);
float f16ToFloat(uint16_t bits);
uint16_t floatToF16(float value);

struct BufferView;

/// `from`'s elements into `to` (as many, host memory), converted: 16-bit
/// floats widened exactly and rounded to nearest even, i32 through float.
/// What the CPU device's convert does, and what host code beside another
/// device uses on host copies.
void convertOnHost(const BufferView &from, const BufferView &to);

/// `count` elements of `dtype` at `data`, which the view does not own. A view
/// that is sent from is only read.
struct BufferView {
  void *data = nullptr;
  int64_t count = 0;
  DType dtype = DType::F32;

  BufferView() = default;
  BufferView(void *data, int64_t count, DType dtype) : data(data), count(count), dtype(dtype) {}
  BufferView(float *data, int64_t count) : BufferView(data, count, DType::F32) {}
  BufferView(int32_t *data, int64_t count) : BufferView(data, count, DType::I32) {}
  int64_t bytes() const { return count * dtypeSize(dtype); }
  float *f32() const { return static_cast<float *>(data); }
  int32_t *i32() const { return static_cast<int32_t *>(data); }
  /// Elements [first, first + n) of this view.
  BufferView slice(int64_t first, int64_t n) const;
};

} // namespace shardline::rt

#endif
