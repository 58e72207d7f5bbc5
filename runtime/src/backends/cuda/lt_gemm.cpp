//===- lt_gemm.cpp - row-major GEMMs through cuBLASLt -----------------------===//

#include "backends/cuda/lt_gemm.h"

#include "exec/program.h"

#include <algorithm>
#include <string>

namespace shardline::rt {

namespace {

/// GEMM workspace: what cuBLASLt's faster algorithms ask for on Hopper.
constexpr size_t kWorkspaceBytes = 32u << 20;

void checkLt(cublasStatus_t status, const char *what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw Stop{std::string("cuBLASLt: ") + what + ": status " + std::to_string((int)status), false};
}

/// The largest power of two, from the element's size up to the 256 bytes
/// cuBLASLt assumes unless told otherwise, that the address is a multiple of:
/// tensors sit at the arena's 64-byte slots, not at cudaMalloc's 256.
int64_t alignmentOf(const void *address, int64_t elementBytes) {
  auto bits = reinterpret_cast<uintptr_t>(address);
  int64_t alignment = elementBytes;
  while (alignment < 256 && bits % (uintptr_t)(2 * alignment) == 0)
    alignment *= 2;
  return alignment;
}

cudaDataType_t dataType(cuda::GemmElement type) {
  switch (type) {
  case cuda::GemmElement::BF16:
    return CUDA_R_16BF;
  case cuda::GemmElement::F16:
    return CUDA_R_16F;
  default:
    return CUDA_R_32F;
  }
}

const char *typeName(cuda::GemmElement type) {
  switch (type) {
  case cuda::GemmElement::BF16:
    return "bf16";
  case cuda::GemmElement::F16:
    return "f16";
  default:
    return "f32";
  }
}

} // namespace

LtGemm::LtGemm() {
  checkLt(cublasLtCreate(&lt_), "cublasLtCreate");
  if (cudaMalloc(&workspace_, kWorkspaceBytes) != cudaSuccess) {
    cudaGetLastError();
    cublasLtDestroy(lt_);
    throw Stop{"CUDA: cudaMalloc of the GEMM workspace failed", false};
  }
}

LtGemm::~LtGemm() {
  for (auto &[key, plan] : plans_) {
    cublasLtMatrixLayoutDestroy(plan.a);
    cublasLtMatrixLayoutDestroy(plan.b);
    cublasLtMatrixLayoutDestroy(plan.c);
    cublasLtMatmulDescDestroy(plan.op);
  }
  cudaFree(workspace_);
  if (lt_)
    cublasLtDestroy(lt_);
}

void LtGemm::run(cudaStream_t stream, bool transA, bool transB, const void *a, const void *b,
                 cuda::GemmElement factors, int64_t M, int64_t N, int64_t K, void *out,
                 cuda::GemmElement product, bool tf32) {
  tf32 = tf32 && factors == cuda::GemmElement::F32;
  if (M == 0 || N == 0)
    return;
  if (K == 0) {
    if (cudaMemsetAsync(out, 0, (size_t)(M * N * cuda::gemmElementBytes(product)), stream) !=
        cudaSuccess)
      throw Stop{"CUDA: cudaMemsetAsync of an empty GEMM's product failed", false};
    return;
  }
  // Row-major out = op(a) . op(b) is column-major out^T = op(b)^T . op(a)^T:
  // cuBLASLt's A is b, its B is a (cuda::gemmLayout, checked on the CPU).
  // The algorithm is chosen for the operands' alignment as well as their
  // shape: one that needs more alignment than a pointer has would fail.
  int64_t alignment = std::min({alignmentOf(a, cuda::gemmElementBytes(factors)),
                                alignmentOf(b, cuda::gemmElementBytes(factors)),
                                alignmentOf(out, cuda::gemmElementBytes(product))});
  auto key = std::make_tuple(M, K, N, alignment, (int)transA * 2 + (int)transB,
                             (int)factors * 4 + (int)product, tf32);
  auto found = plans_.find(key);
  if (found == plans_.end()) {
    Plan plan;
    cuda::GemmLayout layout = cuda::gemmLayout(transA, transB, M, N, K);
    checkLt(cublasLtMatmulDescCreate(
                &plan.op, tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, CUDA_R_32F),
            "cublasLtMatmulDescCreate");
    cublasOperation_t opA = layout.first.transposed ? CUBLAS_OP_T : CUBLAS_OP_N,
                      opB = layout.second.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
    checkLt(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSA, &opA, sizeof opA),
            "transpose of A");
    checkLt(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSB, &opB, sizeof opB),
            "transpose of B");
    auto create = [](cublasLtMatrixLayout_t &to, cuda::GemmElement type, const cuda::GemmMatrix &m,
                     const char *what) {
      checkLt(cublasLtMatrixLayoutCreate(&to, dataType(type), m.rows, m.cols, m.ld), what);
    };
    create(plan.a, factors, layout.first, "layout of the second factor");
    create(plan.b, factors, layout.second, "layout of the first factor");
    create(plan.c, product, layout.out, "layout of the product");
    cublasLtMatmulPreference_t preference = nullptr;
    checkLt(cublasLtMatmulPreferenceCreate(&preference), "cublasLtMatmulPreferenceCreate");
    size_t workspace = kWorkspaceBytes;
    checkLt(cublasLtMatmulPreferenceSetAttribute(
                preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof workspace),
            "workspace preference");
    uint32_t bytes = (uint32_t)alignment;
    for (auto attribute :
         {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
          CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
      checkLt(cublasLtMatmulPreferenceSetAttribute(preference, attribute, &bytes, sizeof bytes),
              "alignment preference");
    cublasLtMatmulHeuristicResult_t result = {};
    int count = 0;
    cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(lt_, plan.op, plan.a, plan.b, plan.c,
                                                           plan.c, preference, 1, &result, &count);
    cublasLtMatmulPreferenceDestroy(preference);
    checkLt(status, "cublasLtMatmulAlgoGetHeuristic");
    if (count == 0)
      throw Stop{std::string("cuBLASLt has no algorithm for ") + typeName(factors) + " [" +
                     std::to_string(M) + ", " + std::to_string(K) + "]" + (transA ? "^T" : "") +
                     " x [" + std::to_string(K) + ", " + std::to_string(N) + "]" +
                     (transB ? "^T" : "") + " into " + typeName(product),
                 false};
    plan.algo = result.algo;
    found = plans_.emplace(key, plan).first;
  }
  const Plan &plan = found->second;
  const float alpha = 1.0f, beta = 0.0f;
  checkLt(cublasLtMatmul(lt_, plan.op, &alpha, b, plan.a, a, plan.b, &beta, out, plan.c, out,
                         plan.c, &plan.algo, workspace_, kWorkspaceBytes, stream),
          "cublasLtMatmul");
}

} // namespace shardline::rt
