//===- elementwise.cu - conversions, elementwise ops, embedding, RMSNorm ---===//

#include "kernels/cuda/kernels.h"
#include "kernels/cuda/reduce.cuh"

namespace shardline::rt::cuda {

namespace {

__global__ void convertKernel(const void *from, arith::Type fromType, void *to, arith::Type toType,
                              int64_t n) {
  for (int64_t i = firstElement(); i < n; i += gridStride())
    arith::store(to, toType, i, arith::load(from, fromType, i));
}

template <typename F> __global__ void unaryKernel(const float *x, int64_t n, float *out, F f) {
  for (int64_t i = firstElement(); i < n; i += gridStride())
    out[i] = f(x[i]);
}

template <typename F>
__global__ void binaryKernel(const float *a, const float *b, int64_t n, float *out, F f) {
  for (int64_t i = firstElement(); i < n; i += gridStride())
    out[i] = f(a[i], b[i]);
}

struct AddOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct MulOp {
  __device__ float operator()(float a, float b) const { return a * b; }
};
struct SwigluOp {
  __device__ float operator()(float g, float u) const { return arith::swiglu(g, u); }
};
struct SiluOp {
  __device__ float operator()(float x) const { return arith::silu(x); }
};
struct GeluOp {
  __device__ float operator()(float x) const { return (float)arith::gelu(x); }
};
struct SigmoidOp {
  __device__ float operator()(float x) const { return (float)arith::sigmoid(x); }
};
struct SoftplusOp {
  __device__ float operator()(float x) const { return (float)arith::softplus(x); }
};

template <typename F>
cudaError_t launchUnary(const float *x, int64_t n, float *out, F f, cudaStream_t stream) {
  if (n == 0)
    return cudaSuccess;
  LaunchShape shape = elementwiseShape(n);
  unaryKernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(x, n, out, f);
  return cudaGetLastError();
}

template <typename F>
cudaError_t launchBinary(const float *a, const float *b, int64_t n, float *out, F f,
                         cudaStream_t stream) {
  if (n == 0)
    return cudaSuccess;
  LaunchShape shape = elementwiseShape(n);
  binaryKernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(a, b, n, out, f);
  return cudaGetLastError();
}

/// One block per token: its row of the table, or zeros.
__global__ void embeddingKernel(const int32_t *ids, const float *table, int64_t rows, int64_t H,
                                int64_t offset, int64_t limit, float *out, int32_t *badIds) {
  int64_t t = blockIdx.x;
  int32_t id = ids[t];
  if (threadIdx.x == 0 && !arith::idInRange(id, limit))
    atomicAdd(badIds, 1);
  int64_t row = arith::embeddingRow(id, offset, rows);
  float *dst = out + t * H;
  for (int64_t h = threadIdx.x; h < H; h += blockDim.x)
    dst[h] = row >= 0 ? table[row * H + h] : 0.0f;
}

/// One block per row: the threads' sums of squares, summed across them.
__global__ void rmsNormKernel(const float *x, const float *w, int64_t H, float eps, float *y) {
  extern __shared__ float partial[];
  const float *row = x + (int64_t)blockIdx.x * H;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x)
    sum += row[i] * row[i];
  float inv = arith::inverseRms(blockReduce<Sum>(sum, partial), H, eps);
  float *out = y + (int64_t)blockIdx.x * H;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x)
    out[i] = row[i] * inv * w[i];
}

/// One block per (row, group): the group's sum of squares, then each
/// element normalised, scaled and gated.
__global__ void gatedRmsNormKernel(const float *y, const float *z, const float *w, int64_t C,
                                   int64_t groups, float eps, float *out) {
  extern __shared__ float partial[];
  int64_t width = C / groups, g = blockIdx.x % groups;
  int64_t base = (int64_t)blockIdx.x * width; // rows of C are whole groups
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x)
    sum += y[base + i] * y[base + i];
  float inv = arith::inverseRms(blockReduce<Sum>(sum, partial), width, eps);
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x)
    out[base + i] = arith::gatedNorm(y[base + i], inv, w[g * width + i], z[base + i]);
}

} // namespace

cudaError_t convert(const void *from, arith::Type fromType, void *to, arith::Type toType, int64_t n,
                    cudaStream_t stream) {
  if (n == 0)
    return cudaSuccess;
  LaunchShape shape = elementwiseShape(n);
  convertKernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(from, fromType, to, toType,
                                                                      n);
  return cudaGetLastError();
}

cudaError_t add(const float *a, const float *b, int64_t n, float *out, cudaStream_t stream) {
  return launchBinary(a, b, n, out, AddOp{}, stream);
}

cudaError_t mul(const float *a, const float *b, int64_t n, float *out, cudaStream_t stream) {
  return launchBinary(a, b, n, out, MulOp{}, stream);
}

cudaError_t silu(const float *x, int64_t n, float *out, cudaStream_t stream) {
  return launchUnary(x, n, out, SiluOp{}, stream);
}

cudaError_t swiglu(const float *g, const float *u, int64_t n, float *out, cudaStream_t stream) {
  return launchBinary(g, u, n, out, SwigluOp{}, stream);
}

cudaError_t gelu(const float *x, int64_t n, float *out, cudaStream_t stream) {
  return launchUnary(x, n, out, GeluOp{}, stream);
}

cudaError_t sigmoid(const float *x, int64_t n, float *out, cudaStream_t stream) {
  return launchUnary(x, n, out, SigmoidOp{}, stream);
}

cudaError_t softplus(const float *x, int64_t n, float *out, cudaStream_t stream) {
  return launchUnary(x, n, out, SoftplusOp{}, stream);
}

cudaError_t gated_rms_norm(const float *y, const float *z, const float *w, int64_t T, int64_t C,
                           int64_t groups, float eps, float *out, cudaStream_t stream) {
  if (T == 0)
    return cudaSuccess;
  LaunchShape shape = rowShape(T * groups, C / groups);
  gatedRmsNormKernel<<<(unsigned)shape.blocks, shape.threads, shape.sharedBytes, stream>>>(
      y, z, w, C, groups, eps, out);
  return cudaGetLastError();
}

cudaError_t embedding(const int32_t *ids, int64_t T, const float *table, int64_t rows, int64_t H,
                      int64_t offset, int64_t limit, float *out, int32_t *badIds,
                      cudaStream_t stream) {
  if (T == 0)
    return cudaSuccess;
  LaunchShape shape = rowShape(T, H);
  embeddingKernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(ids, table, rows, H, offset,
                                                                        limit, out, badIds);
  return cudaGetLastError();
}

cudaError_t rms_norm(const float *x, const float *w, int64_t T, int64_t H, float eps, float *y,
                     cudaStream_t stream) {
  if (T == 0)
    return cudaSuccess;
  LaunchShape shape = rowShape(T, H);
  rmsNormKernel<<<(unsigned)shape.blocks, shape.threads, shape.sharedBytes, stream>>>(x, w, H, eps,
                                                                                      y);
  return cudaGetLastError();
}

} // namespace shardline::rt::cuda
