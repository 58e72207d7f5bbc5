//===- device.cpp - the CPU device ------------------------------------------===//

#include "device/device.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace shardline::rt {

void *CpuDevice::allocate(int64_t bytes) {
  void *memory = std::calloc((size_t)(bytes > 0 ? bytes : 1), 1);
  if (!memory)
    throw std::bad_alloc();
  return memory;
}

void CpuDevice::release(void *memory) { std::free(memory); }

void CpuDevice::zero(void *memory, int64_t bytes) { std::memset(memory, 0, (size_t)bytes); }

DType CpuDevice::storageType(DType dtype) const {
  return dtype == DType::I32 ? DType::I32 : DType::F32;
}

} // namespace shardline::rt
