//===- internal.h - Helpers shared by the CPU kernels -----------*- C++ -*-===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CPU_INTERNAL_H
#define SHARDLINE_RUNTIME_KERNELS_CPU_INTERNAL_H

#include <cmath>
#include <cstdint>

namespace shardline::rt::cpu::detail {

/// Row-major C[M,N] = alpha op(A)[M,K] op(B)[K,N] + beta C, with leading
/// dimensions so that a head or an expert can be addressed inside a larger
/// tensor. Empty products only scale C.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
          float alpha, const float *A, int64_t lda, const float *B, int64_t ldb,
          float beta, float *C, int64_t ldc);

// The branch keeps exp() from overflowing to inf for large |x|.
inline double sigmoid(double x) {
  if (x >= 0)
    return 1.0 / (1.0 + std::exp(-x));
  double e = std::exp(x);
  return e / (1.0 + e);
}

inline double silu(double x) { return x * sigmoid(x); }

inline double softplus(double x) {
  return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
}

inline double log_sigmoid(double x) { return -softplus(-x); }

} // namespace shardline::rt::cpu::detail

#endif // SHARDLINE_RUNTIME_KERNELS_CPU_INTERNAL_H
