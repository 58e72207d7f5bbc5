//===- cuda_device.h - a rank's memory on a CUDA GPU ------------*- C++ -*-===//
//
// The device of the CUDA backend: memory from cudaMalloc (the plan's arena,
// weights, the f32 copies of 16-bit tensors), one stream on which every copy,
// conversion and kernel of the rank is queued in order, the cuBLASLt handle
// and workspace of its GEMMs, and the small device buffers kernels need
// beside their tensors (token positions, a counter of bad ids, scratch).
// Host memory is reached only through upload() and download(), which wait
// for the copy; kernels run asynchronously, and their errors surface at the
// next synchronize() or download() as a Stop.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_BACKENDS_CUDA_CUDA_DEVICE_H
#define SHARDLINE_RUNTIME_BACKENDS_CUDA_CUDA_DEVICE_H

#include "backends/cuda/lt_gemm.h"
#include "device/device.h"

#include <cuda_runtime_api.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace shardline::rt {

class NcclWorld;

/// Stops the rank's run when `status` is an error: "CUDA: <what>: <why>".
void checkCuda(cudaError_t status, const char *what);

class CudaDevice final : public Device {
public:
  /// Takes GPU `rank` mod the number of GPUs (so the thread ranks of one
  /// process, or the MPI processes of one machine, each take their own), a
  /// stream and cuBLASLt.
  explicit CudaDevice(int64_t rank);
  ~CudaDevice() override;

  const char *name() const override { return "cuda"; }
  void *allocate(int64_t bytes) override;
  void release(void *memory) override;
  void zero(void *memory, int64_t bytes) override;
  /// Every type in its own bytes, as on the CPU.
  DType storageType(DType dtype) const override { return dtype; }
  void convert(const BufferView &from, const BufferView &to) override;
  void upload(const BufferView &from, const BufferView &to) override;
  void download(const BufferView &from, const BufferView &to) override;
  void synchronize() override;

  cudaStream_t stream() const { return stream_; }

  /// The shared memory a block of this GPU may opt in to (227 KiB on
  /// compute capability 9.0 and 10.0, 99 KiB on 12.0).
  int64_t sharedOptIn() const { return sharedOptIn_; }

  /// The rank's NCCL communicators, once the run asked for them
  /// (--comm nccl), else nullptr.
  NcclWorld *nccl() const { return nccl_.get(); }
  void setNccl(std::unique_ptr<NcclWorld> world);

  /// Row-major out[T, N] = x[T, K] . w[K, N] in f32 through cuBLASLt (f32
  /// compute and accumulation; TF32 factors where SHARDLINE_CUDA_TF32=1,
  /// cuda::f32GemmsOnTensorCores, as for every f32 GEMM below).
  void matmul(const float *x, const float *w, int64_t T, int64_t K, int64_t N, float *out);

  /// Row-major out[M, N] = op(a)[M, K] . op(b)[K, N] in f32 through
  /// cuBLASLt, a stored [K, M] when transA, b stored [N, K] when transB
  /// (linear's backward: dx = dy . w^T, dw = x^T . dy).
  void gemm(bool transA, bool transB, const float *a, const float *b, int64_t M, int64_t N,
            int64_t K, float *out);

  /// The same GEMM of tensors in their storage types (f32, bf16 or f16), as
  /// cuda::gemmTypes says: two 16-bit factors of one type go to the tensor
  /// cores as they are, the product is written in its own type, f32
  /// accumulation always; a tensor in another type is staged through f32 in
  /// the device's scratch (so a caller's scratch does not outlive the call).
  void gemm(bool transA, bool transB, const BufferView &a, const BufferView &b, int64_t M,
            int64_t N, int64_t K, const BufferView &out);

  /// A device copy of `positions`, made once per vector (a step's rank
  /// facts, which live as long as the run).
  const int64_t *positions(const std::vector<int64_t> &positions);

  /// A device counter set to zero, for a kernel to count bad input in, and
  /// its count once the kernel is done.
  int32_t *counter();
  int32_t readCounter();

  /// Device scratch of at least `bytes`, valid until the next call.
  void *scratch(int64_t bytes);

  /// Whether AdamW's check of the global gradient norm `sumsq` (a tensor
  /// index) must read the device's counter at training step `step`: only
  /// the first update of a step that reads it does. Every update of the
  /// step reads the same value, so one finite reading stands for all, and a
  /// step pays one host synchronisation for the check, not one a parameter.
  bool firstSumsqCheck(int32_t sumsq, int64_t step) {
    if (checkedSumsq_ == std::pair<int64_t, int32_t>{step, sumsq})
      return false;
    checkedSumsq_ = {step, sumsq};
    return true;
  }

private:
  /// A device buffer holding `view`'s elements converted to `type`.
  void *staged(const BufferView &from, DType type);

  int device_ = 0;
  int64_t sharedOptIn_ = 0;
  /// f32 GEMMs as TF32 on the tensor cores (SHARDLINE_CUDA_TF32=1).
  bool tf32_ = false;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<LtGemm> gemm_;
  int32_t *counter_ = nullptr;
  void *scratch_ = nullptr;
  int64_t scratchBytes_ = 0;
  std::map<const void *, int64_t *> positions_;
  std::unique_ptr<NcclWorld> nccl_;
  /// The training step and tensor of the last sum of squares AdamW checked.
  std::pair<int64_t, int32_t> checkedSumsq_{-1, -1};
};

} // namespace shardline::rt

#endif
