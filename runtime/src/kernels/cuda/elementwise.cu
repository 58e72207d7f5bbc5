//===- elementwise.cu - conversions, elementwise ops, embedding, RMSNorm ---===//

#include "kernels/cuda/kernels.h"
#include "kernels/cuda/reduce.cuh"

namespace shardline::rt::cuda {

namespace {

/// One thread per value: its two bf16 parts (arith::splitValue).
__global__ void splitKernel(const float *v, int64_t n, arith::Bf16 *hi, arith::Bf16 *lo) {
  for (int64_t i = firstElement(); i < n; i += gridStride())
    arith::splitValue(v[i], hi[i], lo[i]);
}

__global__ void convertKernel(const void *from, arith::Type fromType, void *to, arith::Type toType,
                              int64_t n) {
  for (int64_t i = firstElement(); i < n; i += gridStride())
    arith::store(to, toType, i, arith::load(from, fromType, i));
}

template <typename T, typename F> __global__ void unaryKernel(const T *x, int64_t n, T *out, F f) {
  for (int64_t i = firstElement(); i < n; i += gridStride())
    arith::storeElement(out, i, f(arith::loadElement(x, i)));
}

template <typename T, typename F>
__global__ void binaryKernel(const T *a, const T *b, int64_t n, T *out, F f) {
  for (int64_t i = firstElement(); i < n; i += gridStride())
    arith::storeElement(out, i, f(arith::loadElement(a, i), arith::loadElement(b, i)));
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

template <typename F> cudaError_t launchUnary(Src x, int64_t n, Dst out, F f, cudaStream_t stream) {
  if (x.type != out.type)
    return cudaErrorInvalidValue;
  return arith::withStorage(out.type, cudaErrorInvalidValue, [&](auto tag) {
    using T = decltype(tag);
    return elementwise(n, stream, unaryKernel<T, F>, static_cast<const T *>(x.data), n,
                       static_cast<T *>(out.data), f);
  });
}

template <typename F>
cudaError_t launchBinary(Src a, Src b, int64_t n, Dst out, F f, cudaStream_t stream) {
  if (a.type != out.type || b.type != out.type)
    return cudaErrorInvalidValue;
  return arith::withStorage(out.type, cudaErrorInvalidValue, [&](auto tag) {
    using T = decltype(tag);
    return elementwise(n, stream, binaryKernel<T, F>, static_cast<const T *>(a.data),
                       static_cast<const T *>(b.data), n, static_cast<T *>(out.data), f);
  });
}

/// `kernel` with a block per row of `width` values (rowShape), queued on
/// `stream`; nothing for no rows.
template <typename Kernel, typename... Args>
cudaError_t byRows(int64_t rows, int64_t width, cudaStream_t stream, Kernel kernel, Args... args) {
  if (rows == 0)
    return cudaSuccess;
  LaunchShape shape = rowShape(rows, width);
  kernel<<<(unsigned)shape.blocks, shape.threads, shape.sharedBytes, stream>>>(args...);
  return cudaGetLastError();
}

/// One block per token: its row of the table, or zeros.
template <typename T, typename W>
__global__ void embeddingKernel(const int32_t *ids, const W *table, int64_t rows, int64_t H,
                                int64_t offset, int64_t limit, T *out, int32_t *badIds) {
  int64_t t = blockIdx.x;
  int32_t id = ids[t];
  if (threadIdx.x == 0 && !arith::idInRange(id, limit))
    atomicAdd(badIds, 1);
  int64_t row = arith::embeddingRow(id, offset, rows);
  T *dst = out + t * H;
  for (int64_t h = threadIdx.x; h < H; h += blockDim.x)
    arith::storeElement(dst, h, row >= 0 ? arith::loadElement(table, row * H + h) : 0.0f);
}

/// One block per row: the threads' sums of squares, summed across them.
template <typename T, typename W>
__global__ void rmsNormKernel(const T *x, const W *w, int64_t H, float eps, T *y) {
  extern __shared__ float partial[];
  const T *row = x + (int64_t)blockIdx.x * H;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
    float v = arith::loadElement(row, i);
    sum += v * v;
  }
  float inv = arith::inverseRms(blockReduce<Sum>(sum, partial), H, eps);
  T *out = y + (int64_t)blockIdx.x * H;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x)
    arith::storeElement(
        out, i, arith::rmsNormed(arith::loadElement(row, i), inv, arith::loadElement(w, i)));
}

/// One block per (row, group): the group's sum of squares, then each
/// element normalised, scaled and gated.
template <typename T, typename W>
__global__ void gatedRmsNormKernel(const T *y, const T *z, const W *w, int64_t C, int64_t groups,
                                   float eps, T *out) {
  extern __shared__ float partial[];
  int64_t width = C / groups, g = blockIdx.x % groups;
  int64_t base = (int64_t)blockIdx.x * width; // rows of C are whole groups
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) {
    float v = arith::loadElement(y, base + i);
    sum += v * v;
  }
  float inv = arith::inverseRms(blockReduce<Sum>(sum, partial), width, eps);
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x)
    arith::storeElement(out, base + i,
                        arith::gatedNorm(arith::loadElement(y, base + i), inv,
                                         arith::loadElement(w, g * width + i),
                                         arith::loadElement(z, base + i)));
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

cudaError_t split_bf16(const float *v, int64_t n, void *hi, void *lo, cudaStream_t stream) {
  return elementwise(n, stream, splitKernel, v, n, static_cast<arith::Bf16 *>(hi),
                     static_cast<arith::Bf16 *>(lo));
}

cudaError_t add(Src a, Src b, int64_t n, Dst out, cudaStream_t stream) {
  return launchBinary(a, b, n, out, AddOp{}, stream);
}
cudaError_t mul(Src a, Src b, int64_t n, Dst out, cudaStream_t stream) {
  return launchBinary(a, b, n, out, MulOp{}, stream);
}
cudaError_t swiglu(Src g, Src u, int64_t n, Dst out, cudaStream_t stream) {
  return launchBinary(g, u, n, out, SwigluOp{}, stream);
}
cudaError_t silu(Src x, int64_t n, Dst out, cudaStream_t stream) {
  return launchUnary(x, n, out, SiluOp{}, stream);
}
cudaError_t gelu(Src x, int64_t n, Dst out, cudaStream_t stream) {
  return launchUnary(x, n, out, GeluOp{}, stream);
}
cudaError_t sigmoid(Src x, int64_t n, Dst out, cudaStream_t stream) {
  return launchUnary(x, n, out, SigmoidOp{}, stream);
}
cudaError_t softplus(Src x, int64_t n, Dst out, cudaStream_t stream) {
  return launchUnary(x, n, out, SoftplusOp{}, stream);
}

cudaError_t add(const float *a, const float *b, int64_t n, float *out, cudaStream_t stream) {
  return add(f32(a), f32(b), n, f32(out), stream);
}
cudaError_t mul(const float *a, const float *b, int64_t n, float *out, cudaStream_t stream) {
  return mul(f32(a), f32(b), n, f32(out), stream);
}
cudaError_t swiglu(const float *g, const float *u, int64_t n, float *out, cudaStream_t stream) {
  return swiglu(f32(g), f32(u), n, f32(out), stream);
}
cudaError_t silu(const float *x, int64_t n, float *out, cudaStream_t stream) {
  return silu(f32(x), n, f32(out), stream);
}
cudaError_t gelu(const float *x, int64_t n, float *out, cudaStream_t stream) {
  return gelu(f32(x), n, f32(out), stream);
}
cudaError_t sigmoid(const float *x, int64_t n, float *out, cudaStream_t stream) {
  return sigmoid(f32(x), n, f32(out), stream);
}
cudaError_t softplus(const float *x, int64_t n, float *out, cudaStream_t stream) {
  return softplus(f32(x), n, f32(out), stream);
}

cudaError_t gated_rms_norm(Src y, Src z, Src w, int64_t T, int64_t C, int64_t groups, float eps,
                           Dst out, cudaStream_t stream) {
  if (y.type != out.type || z.type != out.type)
    return cudaErrorInvalidValue;
  return withTypes(out.type, w.type, [&](auto t, auto p) {
    using A = decltype(t);
    using W = decltype(p);
    return byRows(T * groups, C / groups, stream, gatedRmsNormKernel<A, W>,
                  static_cast<const A *>(y.data), static_cast<const A *>(z.data),
                  static_cast<const W *>(w.data), C, groups, eps, static_cast<A *>(out.data));
  });
}

cudaError_t gated_rms_norm(const float *y, const float *z, const float *w, int64_t T, int64_t C,
                           int64_t groups, float eps, float *out, cudaStream_t stream) {
  return gated_rms_norm(f32(y), f32(z), f32(w), T, C, groups, eps, f32(out), stream);
}

cudaError_t embedding(const int32_t *ids, int64_t T, Src table, int64_t rows, int64_t H,
                      int64_t offset, int64_t limit, Dst out, int32_t *badIds,
                      cudaStream_t stream) {
  return withTypes(out.type, table.type, [&](auto t, auto p) {
    using A = decltype(t);
    using W = decltype(p);
    return byRows(T, H, stream, embeddingKernel<A, W>, ids, static_cast<const W *>(table.data),
                  rows, H, offset, limit, static_cast<A *>(out.data), badIds);
  });
}

cudaError_t embedding(const int32_t *ids, int64_t T, const float *table, int64_t rows, int64_t H,
                      int64_t offset, int64_t limit, float *out, int32_t *badIds,
                      cudaStream_t stream) {
  return embedding(ids, T, f32(table), rows, H, offset, limit, f32(out), badIds, stream);
}

cudaError_t rms_norm(Src x, Src w, int64_t T, int64_t H, float eps, Dst y, cudaStream_t stream) {
  if (x.type != y.type)
    return cudaErrorInvalidValue;
  return withTypes(y.type, w.type, [&](auto t, auto p) {
    using A = decltype(t);
    using W = decltype(p);
    return byRows(T, H, stream, rmsNormKernel<A, W>, static_cast<const A *>(x.data),
                  static_cast<const W *>(w.data), H, eps, static_cast<A *>(y.data));
  });
}

cudaError_t rms_norm(const float *x, const float *w, int64_t T, int64_t H, float eps, float *y,
                     cudaStream_t stream) {
  return rms_norm(f32(x), f32(w), T, H, eps, f32(y), stream);
}

} // namespace shardline::rt::cuda
