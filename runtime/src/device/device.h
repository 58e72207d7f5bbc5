//===- device.h - where a rank's tensors live -------------------*- C++ -*-===//
//
// A device owns the memory of one rank: the activation arena the plan lays
// out and the buffers of everything outside it (weights, the single-device
// run's activations). Kernels see tensors as buffer views (where, how many
// elements, which type), never as raw pointers of one type, so a device whose
// memory the host cannot touch (CUDA) can stand behind the same interface.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_DEVICE_DEVICE_H
#define SHARDLINE_RUNTIME_DEVICE_DEVICE_H

#include "plan_generated.h"

#include <cstdint>

namespace shardline::rt {

/// One tensor's storage: `count` elements of `dtype` at `data`.
struct BufferView {
  void *data = nullptr;
  int64_t count = 0;
  plan::DType dtype = plan::DType::F32;
  float *f32() const { return static_cast<float *>(data); }
  int32_t *i32() const { return static_cast<int32_t *>(data); }
};

class Device {
public:
  virtual ~Device() = default;
  virtual const char *name() const = 0;
  /// `bytes` of zeroed memory, to hand back through release().
  virtual void *allocate(int64_t bytes) = 0;
  virtual void release(void *memory) = 0;
  virtual void zero(void *memory, int64_t bytes) = 0;
  /// The type a tensor of the plan's `dtype` is held in. The CPU device holds
  /// 16-bit floats as f32 (its kernels compute in f32).
  virtual plan::DType storageType(plan::DType dtype) const = 0;
};

/// Host memory.
class CpuDevice final : public Device {
public:
  const char *name() const override { return "cpu"; }
  void *allocate(int64_t bytes) override;
  void release(void *memory) override;
  void zero(void *memory, int64_t bytes) override;
  plan::DType storageType(plan::DType dtype) const override;
};

/// Bytes of one element of `dtype` in memory.
int64_t storageBytes(plan::DType dtype);

} // namespace shardline::rt

#endif
