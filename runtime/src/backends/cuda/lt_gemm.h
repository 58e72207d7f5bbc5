//===- lt_gemm.h - row-major GEMMs through cuBLASLt -------------*- C++ -*-===//
//
// The GEMMs of linear, lm_head and their backward on one stream: a cuBLASLt
// handle and workspace, and each shape's descriptors and chosen algorithm,
// made once and reused. The factors go in f32 or, both 16-bit of one type,
// as bf16 or f16 for the tensor cores; accumulation is f32 always
// (CUBLAS_COMPUTE_32F), and the product is written in f32 or the factors'
// type (kernels/cuda/launch_grad.h: gemmLayout, gemmTypes, checked on the
// CPU). The CUDA backend's device and the GPU benchmark (bench/gpu) share it.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_BACKENDS_CUDA_LT_GEMM_H
#define SHARDLINE_RUNTIME_BACKENDS_CUDA_LT_GEMM_H

#include "kernels/cuda/launch_grad.h"

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <tuple>

namespace shardline::rt {

class LtGemm {
public:
  /// A handle and a workspace on the current CUDA device; a Stop on failure.
  LtGemm();
  ~LtGemm();
  LtGemm(const LtGemm &) = delete;
  LtGemm &operator=(const LtGemm &) = delete;

  /// Row-major out[M, N] = op(a)[M, K] . op(b)[K, N] queued on `stream`, a
  /// stored [K, M] when transA, b stored [N, K] when transB; a and b of type
  /// `factors`, out of type `product` (f32 or `factors`); `tf32` runs f32
  /// factors as TF32 on the tensor cores (CUBLAS_COMPUTE_32F_FAST_TF32,
  /// cuda::f32GemmsOnTensorCores), f32 sums still.
  void run(cudaStream_t stream, bool transA, bool transB, const void *a, const void *b,
           cuda::GemmElement factors, int64_t M, int64_t N, int64_t K, void *out,
           cuda::GemmElement product, bool tf32 = false);

private:
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo;
  };
  cublasLtHandle_t lt_ = nullptr;
  void *workspace_ = nullptr;
  /// By shape (M, K, N), operand alignment, transposes, types and TF32.
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, int, int, bool>, Plan> plans_;
};

} // namespace shardline::rt

#endif
