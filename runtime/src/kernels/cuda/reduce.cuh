//===- reduce.cuh - sums and maxima across a block's threads ---*- CUDA -*-===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CUDA_REDUCE_CUH
#define SHARDLINE_RUNTIME_KERNELS_CUDA_REDUCE_CUH

#include "kernels/cuda/arith.h"
#include "kernels/cuda/launch.h"

namespace shardline::rt::cuda {

struct Sum {
  template <typename T> __device__ static T apply(T a, T b) { return a + b; }
};
struct Max {
  template <typename T> __device__ static T apply(T a, T b) { return a > b ? a : b; }
};

/// Combines every thread's `value` with Op across the block (rowShape's:
/// a power of two of at least a warp); `shared` holds one value per warp.
/// Every thread gets the result.
template <typename Op, typename T> __device__ T blockReduce(T value, T *shared) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    value = Op::apply(value, __shfl_xor_sync(0xffffffffu, value, offset));
  int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, warps = blockDim.x / kWarp;
  __syncthreads(); // a previous reduction may still read `shared`
  if (lane == 0)
    shared[warp] = value;
  __syncthreads();
  value = shared[0];
  for (int w = 1; w < warps; ++w)
    value = Op::apply(value, shared[w]);
  return value;
}

/// The first element this thread takes, and the stride, of a grid-stride
/// loop over elements.
__device__ inline int64_t firstElement() { return (int64_t)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ inline int64_t gridStride() { return (int64_t)gridDim.x * blockDim.x; }

/// The lanes of one warp in a warp's phase (attention_tc.h): each(f) runs
/// f for every lane, then the warp waits for all of them; sync() only waits.
struct WarpLanes {
  template <typename Phase> __device__ void each(const Phase &phase) {
    phase((int)(threadIdx.x % kWarp));
    __syncwarp();
  }
  __device__ void sync() { __syncwarp(); }
};

/// The block-wide phases of ssd_arith.h, ssd_grad_arith.h and
/// attention_tc.h: every thread runs a phase, then the block waits for all
/// of them; eachWarp gives the phase the thread's warp and its lanes.
struct BlockPhases {
  template <typename Phase> __device__ void each(const Phase &phase) {
    phase((int)threadIdx.x);
    __syncthreads();
  }
  template <typename Phase> __device__ void eachWarp(const Phase &phase) {
    WarpLanes lanes;
    phase((int)(threadIdx.x / kWarp), lanes);
    __syncthreads();
  }
};

/// `kernel` over n elements, elementwiseShape's grid (a grid-stride loop
/// in the kernel), queued on `stream`; nothing for n == 0.
template <typename Kernel, typename... Args>
cudaError_t elementwise(int64_t n, cudaStream_t stream, Kernel kernel, Args... args) {
  if (n == 0)
    return cudaSuccess;
  LaunchShape shape = elementwiseShape(n);
  kernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(args...);
  return cudaGetLastError();
}

/// fn(T{}, W{}) for the storage types of the activations and of the
/// parameters (a norm's scale, the embedding table, a convolution's kernel,
/// the scans' gates); cudaErrorInvalidValue for a type no float is stored in.
template <typename Fn> cudaError_t withTypes(arith::Type activations, arith::Type params, Fn fn) {
  return arith::withStorage(activations, cudaErrorInvalidValue, [&](auto t) {
    return arith::withStorage(params, cudaErrorInvalidValue, [&](auto w) { return fn(t, w); });
  });
}

/// Whether `type` is one a float tensor is stored in.
inline bool isFloat(arith::Type type) {
  return arith::withStorage(type, false, [](auto) { return true; });
}

/// fn(T{}, W{}) where the parameters are f32 or of the activations' type
/// (the SSD scan and the scans' corrections keep fewer instances);
/// cudaErrorInvalidValue otherwise.
template <typename Fn>
cudaError_t withOwnOrF32Params(arith::Type activations, arith::Type params, Fn fn) {
  return arith::withStorage(activations, cudaErrorInvalidValue, [&](auto t) {
    using T = decltype(t);
    if (params == arith::Type::F32)
      return fn(t, float{});
    if (params == activations)
      return fn(t, T{});
    return cudaErrorInvalidValue;
  });
}

/// A row of `width` values' maximum and its sum of exp(value - max) in
/// double (cross-entropy's, forward and backward), across the block's
/// threads; `shared` holds a double per warp. Every thread gets both. The
/// row is stored as T (arith::Storage).
template <typename T>
__device__ void rowMaxSumExp(const T *row, int64_t width, double *shared, float &max, double &sum) {
  max = -INFINITY;
  for (int64_t j = threadIdx.x; j < width; j += blockDim.x)
    max = fmaxf(max, arith::loadElement(row, j));
  max = blockReduce<Max>(max, reinterpret_cast<float *>(shared));
  sum = 0.0;
  for (int64_t j = threadIdx.x; j < width; j += blockDim.x)
    sum += exp((double)arith::loadElement(row, j) - (double)max);
  sum = blockReduce<Sum>(sum, shared);
}

/// The mean of T per-token loss terms over `tokens` (0 without tokens), in
/// double across one block's threads, written by thread 0 as L (rounded
/// from f32 once); `shared` holds a double per warp (cross-entropy's, whole
/// or over vocabulary shards).
template <typename L>
__device__ void blockMeanLoss(const double *terms, int64_t T, double tokens, double *shared,
                              L *loss) {
  double sum = 0.0;
  for (int64_t t = threadIdx.x; t < T; t += blockDim.x)
    sum += terms[t];
  sum = blockReduce<Sum>(sum, shared);
  if (threadIdx.x == 0)
    arith::storeElement(loss, 0, tokens > 0 ? (float)(sum / tokens) : 0.0f);
}

} // namespace shardline::rt::cuda

#endif
