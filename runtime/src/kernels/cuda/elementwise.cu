//===- elementwise.cu - elementwise ops and RMSNorm on CUDA ---------------===//

#include "kernels/cuda/kernels.h"

namespace shardline::rt::cuda {

namespace {
constexpr int kThreads = 256;

int blocksFor(int64_t n) { return (int)((n + kThreads - 1) / kThreads); }

__device__ float siluOf(float x) { return x / (1.0f + __expf(-x)); }

__global__ void addKernel(const float *a, const float *b, int64_t n, float *out) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n)
    out[i] = a[i] + b[i];
}

__global__ void siluKernel(const float *x, int64_t n, float *out) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n)
    out[i] = siluOf(x[i]);
}

__global__ void swigluKernel(const float *g, const float *u, int64_t n, float *out) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n)
    out[i] = siluOf(g[i]) * u[i];
}

// One block per row: a strided sum of squares, then a tree reduction.
__global__ void rmsNormKernel(const float *x, const float *w, int64_t H, float eps, float *y) {
  __shared__ float partial[kThreads];
  const float *row = x + (int64_t)blockIdx.x * H;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x)
    sum += row[i] * row[i];
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride)
      partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  float scale = rsqrtf(partial[0] / (float)H + eps);
  float *out = y + (int64_t)blockIdx.x * H;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x)
    out[i] = row[i] * scale * w[i];
}
} // namespace

cudaError_t add(const float *a, const float *b, int64_t n, float *out, cudaStream_t stream) {
  if (n == 0)
    return cudaSuccess;
  addKernel<<<blocksFor(n), kThreads, 0, stream>>>(a, b, n, out);
  return cudaGetLastError();
}

cudaError_t silu(const float *x, int64_t n, float *out, cudaStream_t stream) {
  if (n == 0)
    return cudaSuccess;
  siluKernel<<<blocksFor(n), kThreads, 0, stream>>>(x, n, out);
  return cudaGetLastError();
}

cudaError_t swiglu(const float *g, const float *u, int64_t n, float *out, cudaStream_t stream) {
  if (n == 0)
    return cudaSuccess;
  swigluKernel<<<blocksFor(n), kThreads, 0, stream>>>(g, u, n, out);
  return cudaGetLastError();
}

cudaError_t rms_norm(const float *x, const float *w, int64_t T, int64_t H, float eps, float *y,
                     cudaStream_t stream) {
  if (T == 0)
    return cudaSuccess;
  rmsNormKernel<<<(unsigned)T, kThreads, 0, stream>>>(x, w, H, eps, y);
  return cudaGetLastError();
}

} // namespace shardline::rt::cuda
