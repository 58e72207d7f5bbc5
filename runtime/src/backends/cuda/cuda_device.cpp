//===- cuda_device.cpp - a rank's memory on a CUDA GPU ----------------------===//

#include "backends/cuda/cuda_device.h"

#include "backends/cuda/nccl.h"

#include "exec/program.h"
#include "kernels/cuda/kernels.h"
#include "kernels/cuda/launch_grad.h"

#include <algorithm>
#include <new>
#include <stdexcept>

namespace shardline::rt {

namespace {

/// GEMM workspace: what cuBLASLt's faster algorithms ask for on Hopper.
constexpr size_t kWorkspaceBytes = 32u << 20;

const char *lastCuda(cudaError_t status) { return cudaGetErrorString(status); }

/// The largest power of two, up to the 256 bytes cuBLASLt assumes unless told
/// otherwise, that the address is a multiple of: tensors sit at the arena's
/// 64-byte slots, not at cudaMalloc's 256.
int64_t alignmentOf(const void *address) {
  auto bits = reinterpret_cast<uintptr_t>(address);
  int64_t alignment = 4;
  while (alignment < 256 && bits % (uintptr_t)(2 * alignment) == 0)
    alignment *= 2;
  return alignment;
}

void checkLt(cublasStatus_t status, const char *what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw Stop{std::string("cuBLASLt: ") + what + ": status " + std::to_string((int)status), false};
}

cuda::arith::Type typeOf(DType dtype) {
  switch (dtype) {
  case DType::BF16:
    return cuda::arith::Type::BF16;
  case DType::F16:
    return cuda::arith::Type::F16;
  case DType::I32:
    return cuda::arith::Type::I32;
  default:
    return cuda::arith::Type::F32;
  }
}

} // namespace

void checkCuda(cudaError_t status, const char *what) {
  if (status != cudaSuccess)
    throw Stop{std::string("CUDA: ") + what + ": " + lastCuda(status), false};
}

CudaDevice::CudaDevice(int64_t rank) {
  int devices = 0;
  checkCuda(cudaGetDeviceCount(&devices), "cudaGetDeviceCount");
  device_ = devices > 0 ? (int)(rank % devices) : 0;
  checkCuda(cudaSetDevice(device_), "cudaSetDevice");
  checkCuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  checkLt(cublasLtCreate(&lt_), "cublasLtCreate");
  checkCuda(cudaMalloc(&workspace_, kWorkspaceBytes), "cudaMalloc of the GEMM workspace");
  checkCuda(cudaMalloc(reinterpret_cast<void **>(&counter_), sizeof(int32_t)), "cudaMalloc");
}

CudaDevice::~CudaDevice() {
  // Errors are ignored here: the run has ended, and its error, if any, is
  // already the one reported.
  // The communicators go first: a failed run's are aborted, which ends the
  // NCCL work still queued on the stream.
  nccl_.reset();
  if (stream_)
    cudaStreamSynchronize(stream_);
  for (auto &[shape, gemm] : gemms_) {
    cublasLtMatrixLayoutDestroy(gemm.a);
    cublasLtMatrixLayoutDestroy(gemm.b);
    cublasLtMatrixLayoutDestroy(gemm.c);
    cublasLtMatmulDescDestroy(gemm.op);
  }
  for (auto &[host, device] : positions_)
    cudaFree(device);
  cudaFree(scratch_);
  cudaFree(counter_);
  cudaFree(workspace_);
  if (lt_)
    cublasLtDestroy(lt_);
  if (stream_)
    cudaStreamDestroy(stream_);
}

// Stream-ordered: a buffer is allocated and freed in the order of the work
// queued on the stream, so freeing one that queued kernels still read needs
// no wait.
void *CudaDevice::allocate(int64_t bytes) {
  void *memory = nullptr;
  if (cudaMallocAsync(&memory, (size_t)(bytes > 0 ? bytes : 1), stream_) != cudaSuccess) {
    cudaGetLastError(); // an allocation failure is not sticky: clear it
    throw std::bad_alloc();
  }
  zero(memory, bytes);
  return memory;
}

void CudaDevice::release(void *memory) { cudaFreeAsync(memory, stream_); }

void CudaDevice::zero(void *memory, int64_t bytes) {
  if (bytes > 0)
    checkCuda(cudaMemsetAsync(memory, 0, (size_t)bytes, stream_), "cudaMemsetAsync");
}

void CudaDevice::convert(const BufferView &from, const BufferView &to) {
  if (from.count != to.count)
    throw std::invalid_argument("convert: " + std::to_string(from.count) + " " +
                                dtypeName(from.dtype) + " elements into " +
                                std::to_string(to.count) + " " + dtypeName(to.dtype));
  if (from.dtype == to.dtype) {
    if (from.bytes() > 0)
      checkCuda(cudaMemcpyAsync(to.data, from.data, (size_t)from.bytes(), cudaMemcpyDeviceToDevice,
                                stream_),
                "cudaMemcpyAsync");
    return;
  }
  checkCuda(
      cuda::convert(from.data, typeOf(from.dtype), to.data, typeOf(to.dtype), from.count, stream_),
      "convert");
}

void *CudaDevice::staged(const BufferView &from, DType type) {
  void *memory = scratch(from.count * dtypeSize(type));
  convert(from, BufferView(memory, from.count, type));
  return memory;
}

void CudaDevice::upload(const BufferView &from, const BufferView &to) {
  if (from.count != to.count)
    throw std::invalid_argument("upload: " + std::to_string(from.count) + " elements into " +
                                std::to_string(to.count));
  if (from.bytes() == 0)
    return;
  // The host's values cross as they are, in their own type, and are
  // converted on the device.
  void *landing = from.dtype == to.dtype ? to.data : scratch(from.bytes());
  checkCuda(
      cudaMemcpyAsync(landing, from.data, (size_t)from.bytes(), cudaMemcpyHostToDevice, stream_),
      "cudaMemcpyAsync to the device");
  if (landing != to.data)
    convert(BufferView(landing, from.count, from.dtype), to);
  // The host buffer may go as soon as this returns.
  synchronize();
}

void CudaDevice::download(const BufferView &from, const BufferView &to) {
  if (from.count != to.count)
    throw std::invalid_argument("download: " + std::to_string(from.count) + " elements into " +
                                std::to_string(to.count));
  if (from.bytes() == 0)
    return;
  const void *source = from.dtype == to.dtype ? from.data : staged(from, to.dtype);
  checkCuda(cudaMemcpyAsync(to.data, source, (size_t)to.bytes(), cudaMemcpyDeviceToHost, stream_),
            "cudaMemcpyAsync to the host");
  synchronize();
}

void CudaDevice::setNccl(std::unique_ptr<NcclWorld> world) { nccl_ = std::move(world); }

void CudaDevice::synchronize() { checkCuda(cudaStreamSynchronize(stream_), "a kernel failed"); }

void CudaDevice::matmul(const float *x, const float *w, int64_t T, int64_t K, int64_t N,
                        float *out) {
  gemm(false, false, x, w, T, N, K, out);
}

void CudaDevice::gemm(bool transA, bool transB, const float *a, const float *b, int64_t M,
                      int64_t N, int64_t K, float *out) {
  if (M == 0 || N == 0)
    return;
  if (K == 0) {
    zero(out, M * N * (int64_t)sizeof(float));
    return;
  }
  // Row-major out = op(a) . op(b) is column-major out^T = op(b)^T . op(a)^T:
  // cuBLASLt's A is b, its B is a (cuda::gemmLayout, checked on the CPU).
  // The algorithm is chosen for the operands' alignment as well as their
  // shape: one that needs more alignment than a pointer has would fail.
  int64_t alignment = std::min({alignmentOf(a), alignmentOf(b), alignmentOf(out)});
  auto key = std::make_tuple(M, K, N, alignment, (int)transA * 2 + (int)transB);
  auto found = gemms_.find(key);
  if (found == gemms_.end()) {
    Gemm gemm;
    cuda::GemmLayout layout = cuda::gemmLayout(transA, transB, M, N, K);
    checkLt(cublasLtMatmulDescCreate(&gemm.op, CUBLAS_COMPUTE_32F, CUDA_R_32F),
            "cublasLtMatmulDescCreate");
    cublasOperation_t opA = layout.first.transposed ? CUBLAS_OP_T : CUBLAS_OP_N,
                      opB = layout.second.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
    checkLt(cublasLtMatmulDescSetAttribute(gemm.op, CUBLASLT_MATMUL_DESC_TRANSA, &opA, sizeof opA),
            "transpose of A");
    checkLt(cublasLtMatmulDescSetAttribute(gemm.op, CUBLASLT_MATMUL_DESC_TRANSB, &opB, sizeof opB),
            "transpose of B");
    auto create = [](cublasLtMatrixLayout_t &to, const cuda::GemmMatrix &m, const char *what) {
      checkLt(cublasLtMatrixLayoutCreate(&to, CUDA_R_32F, m.rows, m.cols, m.ld), what);
    };
    create(gemm.a, layout.first, "layout of the second factor");
    create(gemm.b, layout.second, "layout of the first factor");
    create(gemm.c, layout.out, "layout of the product");
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
    cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(lt_, gemm.op, gemm.a, gemm.b, gemm.c,
                                                           gemm.c, preference, 1, &result, &count);
    cublasLtMatmulPreferenceDestroy(preference);
    checkLt(status, "cublasLtMatmulAlgoGetHeuristic");
    if (count == 0)
      throw Stop{"cuBLASLt has no f32 algorithm for [" + std::to_string(M) + ", " +
                     std::to_string(K) + "]" + (transA ? "^T" : "") + " x [" + std::to_string(K) +
                     ", " + std::to_string(N) + "]" + (transB ? "^T" : ""),
                 false};
    gemm.algo = result.algo;
    found = gemms_.emplace(key, gemm).first;
  }
  const Gemm &gemm = found->second;
  const float alpha = 1.0f, beta = 0.0f;
  checkLt(cublasLtMatmul(lt_, gemm.op, &alpha, b, gemm.a, a, gemm.b, &beta, out, gemm.c, out,
                         gemm.c, &gemm.algo, workspace_, kWorkspaceBytes, stream_),
          "cublasLtMatmul");
}

const int64_t *CudaDevice::positions(const std::vector<int64_t> &host) {
  auto found = positions_.find(host.data());
  if (found != positions_.end())
    return found->second;
  int64_t *device = nullptr;
  size_t bytes = std::max<size_t>(1, host.size()) * sizeof(int64_t);
  checkCuda(cudaMalloc(reinterpret_cast<void **>(&device), bytes), "cudaMalloc of positions");
  positions_[host.data()] = device;
  if (!host.empty())
    checkCuda(cudaMemcpyAsync(device, host.data(), host.size() * sizeof(int64_t),
                              cudaMemcpyHostToDevice, stream_),
              "cudaMemcpyAsync of positions");
  return device;
}

int32_t *CudaDevice::counter() {
  checkCuda(cudaMemsetAsync(counter_, 0, sizeof(int32_t), stream_), "cudaMemsetAsync");
  return counter_;
}

int32_t CudaDevice::readCounter() {
  int32_t count = 0;
  checkCuda(cudaMemcpyAsync(&count, counter_, sizeof count, cudaMemcpyDeviceToHost, stream_),
            "cudaMemcpyAsync of a counter");
  synchronize();
  return count;
}

void *CudaDevice::scratch(int64_t bytes) {
  if (bytes > scratchBytes_) {
    synchronize(); // queued work may still use the old scratch
    cudaFree(scratch_);
    scratch_ = nullptr;
    checkCuda(cudaMalloc(&scratch_, (size_t)bytes), "cudaMalloc of scratch");
    scratchBytes_ = bytes;
  }
  return scratch_;
}

} // namespace shardline::rt
