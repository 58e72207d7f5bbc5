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

plan::DType CpuDevice::storageType(plan::DType dtype) const {
  return dtype == plan::DType::I32 ? plan::DType::I32 : plan::DType::F32;
}

int64_t storageBytes(plan::DType dtype) {
  return dtype == plan::DType::BF16 || dtype == plan::DType::F16 ? 2 : 4;
}

} // namespace shardline::rt
