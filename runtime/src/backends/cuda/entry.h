//===- entry.h - what every CUDA table entry uses --------------*- C++ -*-===//
//
// The few helpers each `run` of the CUDA backend's table needs: the rank's
// CudaDevice, a kernel launch's status as a Stop naming the kernel, a tensor
// of the step as it is stored, and the check of the device's counter of bad
// ids after a kernel that counts them.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_BACKENDS_CUDA_ENTRY_H
#define SHARDLINE_RUNTIME_BACKENDS_CUDA_ENTRY_H

#include "backends/cuda/cuda_device.h"
#include "exec/program.h"
#include "kernels/cuda/kernels.h"

#include <string>

namespace shardline::rt {

/// The CudaDevice a CUDA backend's frame runs on.
inline CudaDevice &deviceOf(Frame &f) { return *static_cast<CudaDevice *>(f.device); }

/// What a kernel's launch returned, as a Stop naming the kernel.
inline void launched(cudaError_t status, const char *kernel) { checkCuda(status, kernel); }

/// A float tensor of the step as it is stored: 16-bit where the entry keeps
/// the step's 16-bit tensors (KernelSpec::keeps16), f32 where the executor
/// widened it; data nullptr for an operand the step does not have.
inline cuda::Src src(Frame &f, int32_t t) {
  if (t < 0)
    return {nullptr, cuda::arith::Type::F32};
  const BufferView &v = f.stored(t);
  return {v.data, (cuda::arith::Type)v.dtype};
}
inline cuda::Dst dst(Frame &f, int32_t t) {
  const BufferView &v = f.stored(t);
  return {v.data, (cuda::arith::Type)v.dtype};
}

/// Stops the run when the last kernel counted ids of `t` outside [0, limit),
/// with the CPU kernels' words (exec/verify.h, requireIdsInRange).
inline void requireNoBadIds(Frame &f, int32_t t, int64_t limit, const char *what) {
  if (deviceOf(f).readCounter() > 0)
    throw Stop{"'" + f.tensors[t].name + "' holds a value outside [0, " + std::to_string(limit) +
                   "), " + what,
               false};
}

} // namespace shardline::rt

#endif
