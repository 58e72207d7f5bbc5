//===- device.cpp - the CPU device ------------------------------------------===//

#include "device/device.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

namespace shardline::rt {

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
  convertOnHost(from, to);
}

} // namespace shardline::rt
