//===- cuda_device.cpp - a rank's memory on a CUDA GPU ----------------------===//

#include "backends/cuda/cuda_device.h"

#include "backends/cuda/nccl.h"

#include "exec/program.h"
#include "kernels/cuda/kernels.h"
#include "kernels/cuda/launch_grad.h"

#include <algorithm>
#include <cstdlib>
#include <new>
#include <stdexcept>

namespace shardline::rt {

namespace {

const char *lastCuda(cudaError_t status) { return cudaGetErrorString(status); }

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
  int optIn = 0;
  checkCuda(cudaDeviceGetAttribute(&optIn, cudaDevAttrMaxSharedMemoryPerBlockOptin, device_),
            "cudaDeviceGetAttribute");
  sharedOptIn_ = optIn;
  std::string error;
  if (!cuda::f32GemmsOnTensorCores(std::getenv("SHARDLINE_CUDA_TF32"), tf32_, error))
    throw Stop{error, false};
  checkCuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  gemm_ = std::make_unique<LtGemm>();
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
  for (auto &[host, device] : positions_)
    cudaFree(device);
  cudaFree(scratch_);
  cudaFree(counter_);
  gemm_.reset();
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
  gemm_->run(stream_, transA, transB, a, b, cuda::GemmElement::F32, M, N, K, out,
             cuda::GemmElement::F32, tf32_);
}

namespace {

cuda::GemmElement gemmElementOf(const BufferView &view, const char *what) {
  switch (view.dtype) {
  case DType::F32:
    return cuda::GemmElement::F32;
  case DType::BF16:
    return cuda::GemmElement::BF16;
  case DType::F16:
    return cuda::GemmElement::F16;
  default:
    throw Stop{std::string("a GEMM's ") + what + " is " + dtypeName(view.dtype) +
                   ", not a float type",
               false};
  }
}

DType dtypeOf(cuda::GemmElement type) {
  return type == cuda::GemmElement::BF16  ? DType::BF16
         : type == cuda::GemmElement::F16 ? DType::F16
                                          : DType::F32;
}

} // namespace

void CudaDevice::gemm(bool transA, bool transB, const BufferView &a, const BufferView &b, int64_t M,
                      int64_t N, int64_t K, const BufferView &out) {
  cuda::GemmTypes types =
      cuda::gemmTypes(gemmElementOf(a, "first factor"), gemmElementOf(b, "second factor"),
                      gemmElementOf(out, "product"));
  // The staged tensors share one scratch, each at a 256-byte boundary.
  auto rounded = [](int64_t bytes) { return (bytes + 255) / 256 * 256; };
  int64_t aBytes = types.stageA ? rounded(a.count * 4) : 0,
          bBytes = types.stageB ? rounded(b.count * 4) : 0,
          outBytes = types.stageOut ? rounded(out.count * 4) : 0;
  char *staging = nullptr;
  if (aBytes + bBytes + outBytes > 0)
    staging = static_cast<char *>(scratch(aBytes + bBytes + outBytes));
  BufferView runA = a, runB = b, runOut = out;
  if (types.stageA) {
    runA = BufferView(staging, a.count, DType::F32);
    convert(a, runA);
  }
  if (types.stageB) {
    runB = BufferView(staging + aBytes, b.count, DType::F32);
    convert(b, runB);
  }
  if (types.stageOut)
    runOut = BufferView(staging + aBytes + bBytes, out.count, dtypeOf(types.out));
  gemm_->run(stream_, transA, transB, runA.data, runB.data, types.factors, M, N, K, runOut.data,
             types.out, tf32_);
  if (types.stageOut)
    convert(runOut, out);
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
