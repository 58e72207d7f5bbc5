//===- device.h - where a rank's tensors live -------------------*- C++ -*-===//
//
// A device owns the memory of one rank: the activation arena the plan lays
// out and the buffers of everything outside it (weights, the single-device
// run's activations). Kernels see tensors as buffer views (where, how many
// elements, which type), never as raw pointers of one type, so a device whose
// memory the host cannot touch (CUDA) can stand behind the same interface:
// the executor reaches a tensor's values only through upload() and
// download() (weights, tokens, outputs, saved weights, --verify's
// comparisons), never through its pointer.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_DEVICE_DEVICE_H
#define SHARDLINE_RUNTIME_DEVICE_DEVICE_H

#include "core/buffer.h"

#include <cstdint>

namespace shardline::rt {

class Device {
public:
  virtual ~Device() = default;
  virtual const char *name() const = 0;
  /// `bytes` of zeroed memory, to hand back through release().
  virtual void *allocate(int64_t bytes) = 0;
  virtual void release(void *memory) = 0;
  virtual void zero(void *memory, int64_t bytes) = 0;
  /// The type a tensor of the plan's `dtype` is held in. It must take no more
  /// bytes than the plan's element size, since the plan lays the arena out.
  virtual DType storageType(DType dtype) const = 0;
  /// Copies `from` into `to`, which has as many elements, converting the
  /// type: widening to f32 is exact, narrowing to a 16-bit float rounds to
  /// nearest even, int32 goes through f32 (the tokens of the vocabulary are
  /// exact there).
  virtual void convert(const BufferView &from, const BufferView &to) = 0;
  /// Copies `from`, in host memory, into `to`, on this device, converting
  /// the type as convert() does.
  virtual void upload(const BufferView &from, const BufferView &to) = 0;
  /// Copies `from`, on this device, into `to`, in host memory, converting
  /// the type as convert() does; the values are there when it returns.
  virtual void download(const BufferView &from, const BufferView &to) = 0;
  /// Waits for the work queued so far: a device whose kernels run
  /// asynchronously reports their errors here (as a Stop, exec/program.h).
  virtual void synchronize() {}
};

/// Host memory. Every tensor is held in its own type (16-bit floats in 16
/// bits); the CPU kernels compute in f32 on widened copies (exec/executor.cpp).
class CpuDevice final : public Device {
public:
  const char *name() const override { return "cpu"; }
  void *allocate(int64_t bytes) override;
  void release(void *memory) override;
  void zero(void *memory, int64_t bytes) override;
  DType storageType(DType dtype) const override;
  void convert(const BufferView &from, const BufferView &to) override;
  /// Host memory is the device's: both copies are convert().
  void upload(const BufferView &from, const BufferView &to) override { convert(from, to); }
  void download(const BufferView &from, const BufferView &to) override { convert(from, to); }
};

} // namespace shardline::rt

#endif
