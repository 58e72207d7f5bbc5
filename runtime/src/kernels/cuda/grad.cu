//===- grad.cu - backward kernels of norms, attention, loss, embedding ----===//
//
// The backward kernels of the norms (RMSNorm and Mamba's gated norm), RoPE,
// attention, the elementwise activations, cross-entropy, the embedding and
// the gradients' sum of squares.
//
//===----------------------------------------------------------------------===//

#include "kernels/cuda/kernels_grad.h"
#include "kernels/cuda/reduce.cuh"

namespace shardline::rt::cuda {

namespace {

template <typename F>
__global__ void mapGradKernel(const float *x, const float *dy, int64_t n, float *dx, F derivative) {
  for (int64_t i = firstElement(); i < n; i += gridStride())
    dx[i] = (float)((double)dy[i] * derivative((double)x[i]));
}

struct SiluDerivative {
  __device__ double operator()(double x) const { return arith::siluDerivative(x); }
};
struct GeluDerivative {
  __device__ double operator()(double x) const { return arith::geluDerivative(x); }
};
struct SigmoidDerivative {
  __device__ double operator()(double x) const { return arith::sigmoidDerivative(x); }
};
struct SoftplusDerivative {
  __device__ double operator()(double x) const { return arith::softplusDerivative(x); }
};

template <typename F>
cudaError_t launchMapGrad(const float *x, const float *dy, int64_t n, float *dx, F derivative,
                          cudaStream_t stream) {
  if (n == 0)
    return cudaSuccess;
  LaunchShape shape = elementwiseShape(n);
  mapGradKernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(x, dy, n, dx, derivative);
  return cudaGetLastError();
}

__global__ void swigluGradKernel(const float *gate, const float *up, const float *dy, int64_t n,
                                 float *dgate, float *dup) {
  for (int64_t i = firstElement(); i < n; i += gridStride())
    arith::swigluGrad(gate[i], up[i], dy[i], dgate[i], dup[i]);
}

/// One block per row: the row's sum of squares and sum(x·w·dy), in double
/// across the threads, then each element's dx.
__global__ void rmsNormGradKernel(const float *x, const float *w, const float *dy, int64_t H,
                                  float eps, float *dx) {
  extern __shared__ double partial[];
  int64_t base = (int64_t)blockIdx.x * H;
  double squares = 0.0, dot = 0.0;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
    double xi = x[base + i];
    squares += xi * x[base + i];
    dot += xi * w[i] * dy[base + i];
  }
  double r = arith::inverseRmsGrad(blockReduce<Sum>(squares, partial), H, eps);
  dot = blockReduce<Sum>(dot, partial);
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x)
    dx[base + i] = arith::rmsNormGradElement(x[base + i], w[i], dy[base + i], r, dot, H);
}

/// One block per row: its inverse rms, in double.
__global__ void inverseRmsKernel(const float *x, int64_t H, float eps, double *inverse) {
  extern __shared__ double partial[];
  int64_t base = (int64_t)blockIdx.x * H;
  double squares = 0.0;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x)
    squares += (double)x[base + i] * x[base + i];
  squares = blockReduce<Sum>(squares, partial);
  if (threadIdx.x == 0)
    inverse[blockIdx.x] = arith::inverseRmsGrad(squares, H, eps);
}

/// One thread per column: dy·x·r summed over the rows in order, in double.
__global__ void rmsNormGradWeightKernel(const float *x, const float *dy, const double *inverse,
                                        int64_t T, int64_t H, float *dw) {
  for (int64_t h = firstElement(); h < H; h += gridStride()) {
    double acc = 0.0;
    for (int64_t t = 0; t < T; ++t)
      acc += (double)dy[t * H + h] * x[t * H + h] * inverse[t];
    dw[h] = (float)acc;
  }
}

/// One block per (row, group): the group's sum of squares and sum(y·u) in
/// double across the threads, then each element's dy and dz.
__global__ void gatedRmsNormGradKernel(const float *y, const float *z, const float *w,
                                       const float *dout, int64_t C, int64_t groups, float eps,
                                       float *dy, float *dz) {
  extern __shared__ double partial[];
  int64_t width = C / groups, g = blockIdx.x % groups, base = (int64_t)blockIdx.x * width;
  const float *wg = w + g * width;
  double squares = 0.0, yu = 0.0;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) {
    squares += (double)y[base + i] * y[base + i];
    yu += y[base + i] * arith::gatedNormGradU(dout[base + i], wg[i], z[base + i]);
  }
  double r = arith::inverseRmsGrad(blockReduce<Sum>(squares, partial), width, eps);
  yu = blockReduce<Sum>(yu, partial);
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) {
    double u = arith::gatedNormGradU(dout[base + i], wg[i], z[base + i]);
    dy[base + i] = arith::gatedNormGradDy(y[base + i], u, r, yu, width);
    dz[base + i] = arith::gatedNormGradDz(dout[base + i], y[base + i], r, wg[i], z[base + i]);
  }
}

/// One thread per channel: dout·y·r·silu(z) summed over the rows in order.
__global__ void gatedRmsNormGradWeightKernel(const float *y, const float *z, const float *dout,
                                             const double *inverse, int64_t T, int64_t C,
                                             int64_t groups, float *dw) {
  int64_t width = C / groups;
  for (int64_t c = firstElement(); c < C; c += gridStride()) {
    double acc = 0.0;
    for (int64_t t = 0; t < T; ++t) {
      int64_t i = t * C + c;
      acc += arith::gatedNormGradWeightTerm(dout[i], y[i], inverse[t * groups + c / width], z[i]);
    }
    dw[c] = (float)acc;
  }
}

/// One thread per rotated pair, at the negated position.
__global__ void ropeGradKernel(const float *dy, const int64_t *positions, int64_t S, int64_t NH,
                               int64_t D, float theta, int64_t pairs, float *dx) {
  for (int64_t p = firstElement(); p < pairs; p += gridStride()) {
    arith::RopePair at = arith::ropePair(p, S, NH, D);
    int64_t first = at.base + at.i, second = first + D / 2;
    arith::ropeRotate(dy[first], dy[second], arith::ropeGradAngle(positions[at.s], at.i, D, theta),
                      dx[first], dx[second]);
  }
}

/// One thread per (batch, query, head): delta = dy·out.
__global__ void attentionDeltaKernel(const float *dy, const float *out, int64_t B, int64_t Sq,
                                     int64_t HQ, int64_t D, float *delta) {
  int64_t rows = B * Sq * HQ;
  for (int64_t r = firstElement(); r < rows; r += gridStride()) {
    int64_t h = r % HQ, i = (r / HQ) % Sq, b = r / (HQ * Sq);
    delta[(b * HQ + h) * Sq + i] = arith::attentionDelta(dy + r * D, out + r * D, D);
  }
}

/// The forward's blocks and threads (one query a thread, key tiles in
/// shared memory); each query adds every visible key's dS·k to its dq.
template <int MaxD>
__global__ void attentionGradQueryKernel(AttentionGradArgs a, int keysPerTile, int64_t queryBlocks,
                                         float *dq) {
  extern __shared__ int64_t tilePositions[];
  float *kTile = reinterpret_cast<float *>(tilePositions + keysPerTile);
  float *vTile = kTile + (int64_t)keysPerTile * a.D;
  int64_t D = a.D;
  arith::AttentionQuery at =
      arith::attentionQuery(blockIdx.x, threadIdx.x, queryBlocks, a.HQ, blockDim.x);
  int64_t b = at.b, h = at.h, i = at.i, hk = arith::kvHead(h, a.HQ, a.HKV);
  bool active = i < a.Sq;
  float query[MaxD], dyq[MaxD], acc[MaxD];
  int64_t rowBase = ((b * a.Sq + i) * a.HQ + h) * D, stat = (b * a.HQ + h) * a.Sq + i;
  for (int64_t e = 0; e < D; ++e) {
    query[e] = active ? a.q[rowBase + e] : 0.0f;
    dyq[e] = active ? a.dy[rowBase + e] : 0.0f;
    acc[e] = 0.0f;
  }
  int64_t queryPosition = active ? a.qPositions[i] : 0;
  float lse = active ? a.lse[stat] : 0.0f, delta = active ? a.delta[stat] : 0.0f;
  for (int64_t start = 0; start < a.Sk; start += keysPerTile) {
    int n = (int)min((int64_t)keysPerTile, a.Sk - start);
    __syncthreads(); // the previous tile is no longer read
    for (int64_t idx = threadIdx.x; idx < (int64_t)n * D; idx += blockDim.x) {
      int64_t j = idx / D, e = idx % D;
      int64_t from = ((b * a.Sk + start + j) * a.HKV + hk) * D + e;
      kTile[idx] = a.k[from];
      vTile[idx] = a.v[from];
    }
    for (int j = threadIdx.x; j < n; j += blockDim.x)
      tilePositions[j] = a.kPositions[start + j];
    __syncthreads();
    if (active && lse != -INFINITY)
      arith::attendGradQueryTile(query, dyq, kTile, vTile, tilePositions, n, D, queryPosition,
                                 a.causal, a.window, a.scale, lse, delta, acc);
  }
  if (!active)
    return;
  for (int64_t e = 0; e < D; ++e)
    dq[rowBase + e] = a.scale * acc[e];
}

/// One key a thread, keysPerBlock keys of one (batch, kv head) a block; the
/// queries of each of the kv head's query heads pass through shared memory
/// a tile at a time (launch_grad.h, AttentionGradTiling).
template <int MaxD>
__global__ void attentionGradKeyKernel(AttentionGradArgs a, int queriesPerTile, int64_t keyBlocks,
                                       float *dk, float *dv) {
  extern __shared__ int64_t tilePositions[];
  int64_t D = a.D;
  float *qTile = reinterpret_cast<float *>(tilePositions + queriesPerTile);
  float *dyTile = qTile + (int64_t)queriesPerTile * D;
  float *lseTile = dyTile + (int64_t)queriesPerTile * D;
  float *deltaTile = lseTile + queriesPerTile;
  arith::AttentionQuery at =
      arith::attentionKey(blockIdx.x, threadIdx.x, keyBlocks, a.HKV, blockDim.x);
  int64_t b = at.b, hk = at.h, j = at.i, perKv = a.HQ / a.HKV;
  bool active = j < a.Sk;
  float key[MaxD], value[MaxD], dkAcc[MaxD], dvAcc[MaxD];
  int64_t rowBase = ((b * a.Sk + j) * a.HKV + hk) * D;
  for (int64_t e = 0; e < D; ++e) {
    key[e] = active ? a.k[rowBase + e] : 0.0f;
    value[e] = active ? a.v[rowBase + e] : 0.0f;
    dkAcc[e] = 0.0f;
    dvAcc[e] = 0.0f;
  }
  int64_t keyPosition = active ? a.kPositions[j] : 0;
  for (int64_t h = hk * perKv; h < (hk + 1) * perKv; ++h) {
    for (int64_t start = 0; start < a.Sq; start += queriesPerTile) {
      int n = (int)min((int64_t)queriesPerTile, a.Sq - start);
      __syncthreads(); // the previous tile is no longer read
      for (int64_t idx = threadIdx.x; idx < (int64_t)n * D; idx += blockDim.x) {
        int64_t i = idx / D, e = idx % D;
        int64_t from = ((b * a.Sq + start + i) * a.HQ + h) * D + e;
        qTile[idx] = a.q[from];
        dyTile[idx] = a.dy[from];
      }
      for (int i = threadIdx.x; i < n; i += blockDim.x) {
        tilePositions[i] = a.qPositions[start + i];
        lseTile[i] = a.lse[(b * a.HQ + h) * a.Sq + start + i];
        deltaTile[i] = a.delta[(b * a.HQ + h) * a.Sq + start + i];
      }
      __syncthreads();
      if (active)
        arith::attendGradKeyTile(key, value, qTile, dyTile, tilePositions, lseTile, deltaTile, n, D,
                                 keyPosition, a.causal, a.window, a.scale, dkAcc, dvAcc);
    }
  }
  if (!active)
    return;
  for (int64_t e = 0; e < D; ++e) {
    dk[rowBase + e] = a.scale * dkAcc[e];
    dv[rowBase + e] = dvAcc[e];
  }
}

/// One block per token: the row's maximum and its sum of exponentials (in
/// double, rounded to f32 as the CPU's), then every column's gradient.
__global__ void crossEntropyGradKernel(const float *logits, const int32_t *labels, int64_t V,
                                       double tokens, float *dlogits, int32_t *badLabels) {
  extern __shared__ double partial[];
  int64_t t = blockIdx.x;
  const float *row = logits + t * V;
  float max;
  double sum;
  rowMaxSumExp(row, V, partial, max, sum);
  float sumExp = (float)sum;
  int32_t label = labels[t];
  if (threadIdx.x == 0 && !arith::idInRange(label, V))
    atomicAdd(badLabels, 1);
  double inv = 1.0 / tokens;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
    dlogits[t * V + j] = arith::crossEntropyGradElement(row[j], max, sumExp, j == label, inv);
}

/// One thread per column h of the table: the tokens in order, each adding
/// its dy row's column h to its table row's, in double.
__global__ void embeddingGradKernel(const int32_t *ids, const float *dy, int64_t T, int64_t rows,
                                    int64_t H, int64_t offset, int64_t limit, double *acc,
                                    int32_t *badIds) {
  for (int64_t h = firstElement(); h < H; h += gridStride()) {
    for (int64_t t = 0; t < T; ++t) {
      int32_t id = ids[t];
      if (h == 0 && !arith::idInRange(id, limit))
        atomicAdd(badIds, 1);
      int64_t row = arith::embeddingRow(id, offset, rows);
      if (row >= 0)
        acc[row * H + h] += dy[t * H + h];
    }
  }
}

__global__ void narrowKernel(const double *from, int64_t n, float *to) {
  for (int64_t i = firstElement(); i < n; i += gridStride())
    to[i] = (float)from[i];
}

/// Each block's part of a sum of squares, in double.
__global__ void sumSquaresKernel(const float *x, int64_t n, double *partials) {
  extern __shared__ double partial[];
  double sum = 0.0;
  for (int64_t i = firstElement(); i < n; i += gridStride())
    sum += (double)x[i] * x[i];
  sum = blockReduce<Sum>(sum, partial);
  if (threadIdx.x == 0)
    partials[blockIdx.x] = sum;
}

/// The blocks' parts added in block order, by one thread.
__global__ void sumPartialsKernel(const double *partials, int64_t count, float *out) {
  double sum = 0.0;
  for (int64_t i = 0; i < count; ++i)
    sum += partials[i];
  *out = (float)sum;
}

} // namespace

cudaError_t silu_grad(const float *x, const float *dy, int64_t n, float *dx, cudaStream_t stream) {
  return launchMapGrad(x, dy, n, dx, SiluDerivative{}, stream);
}

cudaError_t gelu_grad(const float *x, const float *dy, int64_t n, float *dx, cudaStream_t stream) {
  return launchMapGrad(x, dy, n, dx, GeluDerivative{}, stream);
}

cudaError_t sigmoid_grad(const float *x, const float *dy, int64_t n, float *dx,
                         cudaStream_t stream) {
  return launchMapGrad(x, dy, n, dx, SigmoidDerivative{}, stream);
}

cudaError_t softplus_grad(const float *x, const float *dy, int64_t n, float *dx,
                          cudaStream_t stream) {
  return launchMapGrad(x, dy, n, dx, SoftplusDerivative{}, stream);
}

cudaError_t swiglu_grad(const float *gate, const float *up, const float *dy, int64_t n,
                        float *dgate, float *dup, cudaStream_t stream) {
  if (n == 0)
    return cudaSuccess;
  LaunchShape shape = elementwiseShape(n);
  swigluGradKernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(gate, up, dy, n, dgate,
                                                                         dup);
  return cudaGetLastError();
}

cudaError_t rms_norm_grad(const float *x, const float *w, const float *dy, int64_t T, int64_t H,
                          float eps, float *dx, cudaStream_t stream) {
  if (T == 0)
    return cudaSuccess;
  LaunchShape shape = rowShape(T, H, true);
  rmsNormGradKernel<<<(unsigned)shape.blocks, shape.threads, shape.sharedBytes, stream>>>(
      x, w, dy, H, eps, dx);
  return cudaGetLastError();
}

cudaError_t rms_norm_grad_weight(const float *x, const float *dy, int64_t T, int64_t H, float eps,
                                 double *inverse, float *dw, cudaStream_t stream) {
  if (H == 0)
    return cudaSuccess;
  if (T > 0) {
    LaunchShape rows = rowShape(T, H, true);
    inverseRmsKernel<<<(unsigned)rows.blocks, rows.threads, rows.sharedBytes, stream>>>(x, H, eps,
                                                                                        inverse);
    if (cudaError_t status = cudaGetLastError(); status != cudaSuccess)
      return status;
  }
  LaunchShape columns = elementwiseShape(H);
  rmsNormGradWeightKernel<<<(unsigned)columns.blocks, columns.threads, 0, stream>>>(x, dy, inverse,
                                                                                    T, H, dw);
  return cudaGetLastError();
}

cudaError_t gated_rms_norm_grad(const float *y, const float *z, const float *w, const float *dout,
                                int64_t T, int64_t C, int64_t groups, float eps, float *dy,
                                float *dz, cudaStream_t stream) {
  if (T == 0 || C == 0)
    return cudaSuccess;
  LaunchShape shape = rowShape(T * groups, C / groups, true);
  gatedRmsNormGradKernel<<<(unsigned)shape.blocks, shape.threads, shape.sharedBytes, stream>>>(
      y, z, w, dout, C, groups, eps, dy, dz);
  return cudaGetLastError();
}

cudaError_t gated_rms_norm_grad_weight(const float *y, const float *z, const float *dout, int64_t T,
                                       int64_t C, int64_t groups, float eps, double *inverse,
                                       float *dw, cudaStream_t stream) {
  if (C == 0)
    return cudaSuccess;
  if (T > 0) {
    LaunchShape rows = rowShape(T * groups, C / groups, true);
    inverseRmsKernel<<<(unsigned)rows.blocks, rows.threads, rows.sharedBytes, stream>>>(
        y, C / groups, eps, inverse);
    if (cudaError_t status = cudaGetLastError(); status != cudaSuccess)
      return status;
  }
  LaunchShape columns = elementwiseShape(C);
  gatedRmsNormGradWeightKernel<<<(unsigned)columns.blocks, columns.threads, 0, stream>>>(
      y, z, dout, inverse, T, C, groups, dw);
  return cudaGetLastError();
}

cudaError_t rope_grad(const float *dy, const int64_t *positions, int64_t B, int64_t S, int64_t NH,
                      int64_t D, float theta, float *dx, cudaStream_t stream) {
  int64_t pairs = B * S * NH * (D / 2);
  if (pairs == 0)
    return cudaSuccess;
  LaunchShape shape = elementwiseShape(pairs);
  ropeGradKernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(dy, positions, S, NH, D,
                                                                       theta, pairs, dx);
  return cudaGetLastError();
}

cudaError_t attention_grad(const AttentionGradArgs &a, const AttentionTiling &tiling,
                           const AttentionGradTiling &gradTiling, float *dq, float *dk, float *dv,
                           cudaStream_t stream) {
  if (cudaError_t status =
          attention(a.q, a.k, a.v, a.qPositions, a.kPositions, a.B, a.Sq, a.Sk, a.HQ, a.HKV, a.D,
                    a.causal, a.scale, a.window, tiling, a.out, a.lse, stream);
      status != cudaSuccess)
    return status;
  if (cudaError_t status = attention_delta(a.dy, a.out, a.B, a.Sq, a.HQ, a.D, a.delta, stream);
      status != cudaSuccess)
    return status;
  return attention_grad_from_stats(a, tiling, gradTiling, dq, dk, dv, stream);
}

cudaError_t attention_delta(const float *dy, const float *out, int64_t B, int64_t Sq, int64_t HQ,
                            int64_t D, float *delta, cudaStream_t stream) {
  int64_t rows = B * Sq * HQ;
  if (rows == 0)
    return cudaSuccess;
  LaunchShape shape = elementwiseShape(rows);
  attentionDeltaKernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(dy, out, B, Sq, HQ, D,
                                                                             delta);
  return cudaGetLastError();
}

cudaError_t attention_grad_from_stats(const AttentionGradArgs &a, const AttentionTiling &tiling,
                                      const AttentionGradTiling &gradTiling, float *dq, float *dk,
                                      float *dv, cudaStream_t stream) {
  if (dq && tiling.shape.blocks > 0) {
    auto launch = [&](auto kernel) {
      kernel<<<(unsigned)tiling.shape.blocks, tiling.shape.threads, tiling.shape.sharedBytes,
               stream>>>(a, tiling.keysPerTile, tiling.queryBlocks, dq);
    };
    if (tiling.maxHeadDim == 64)
      launch(attentionGradQueryKernel<64>);
    else if (tiling.maxHeadDim == 128)
      launch(attentionGradQueryKernel<128>);
    else
      launch(attentionGradQueryKernel<256>);
  }
  if (dk && gradTiling.shape.blocks > 0) {
    auto launch = [&](auto kernel) {
      kernel<<<(unsigned)gradTiling.shape.blocks, gradTiling.shape.threads,
               gradTiling.shape.sharedBytes, stream>>>(a, gradTiling.queriesPerTile,
                                                       gradTiling.keyBlocks, dk, dv);
    };
    if (gradTiling.maxHeadDim == 64)
      launch(attentionGradKeyKernel<64>);
    else if (gradTiling.maxHeadDim == 128)
      launch(attentionGradKeyKernel<128>);
    else
      launch(attentionGradKeyKernel<256>);
  }
  return cudaGetLastError();
}

cudaError_t cross_entropy_grad(const float *logits, const int32_t *labels, int64_t T, int64_t V,
                               double tokens, float *dlogits, int32_t *badLabels,
                               cudaStream_t stream) {
  if (T == 0)
    return cudaSuccess;
  LaunchShape rows = rowShape(T, V, true);
  crossEntropyGradKernel<<<(unsigned)rows.blocks, rows.threads, rows.sharedBytes, stream>>>(
      logits, labels, V, tokens, dlogits, badLabels);
  return cudaGetLastError();
}

cudaError_t embedding_grad(const int32_t *ids, const float *dy, int64_t T, int64_t rows, int64_t H,
                           int64_t offset, int64_t limit, double *acc, float *dtable,
                           int32_t *badIds, cudaStream_t stream) {
  int64_t n = rows * H;
  if (n == 0)
    return cudaSuccess;
  if (cudaError_t status = cudaMemsetAsync(acc, 0, n * sizeof(double), stream);
      status != cudaSuccess)
    return status;
  LaunchShape columns = embeddingGradShape(H);
  embeddingGradKernel<<<(unsigned)columns.blocks, columns.threads, 0, stream>>>(
      ids, dy, T, rows, H, offset, limit, acc, badIds);
  if (cudaError_t status = cudaGetLastError(); status != cudaSuccess)
    return status;
  LaunchShape shape = elementwiseShape(n);
  narrowKernel<<<(unsigned)shape.blocks, shape.threads, 0, stream>>>(acc, n, dtable);
  return cudaGetLastError();
}

cudaError_t sum_squares(const float *x, int64_t n, double *partials, float *out,
                        cudaStream_t stream) {
  LaunchShape shape = sumShape(n);
  sumSquaresKernel<<<(unsigned)shape.blocks, shape.threads, shape.sharedBytes, stream>>>(x, n,
                                                                                         partials);
  if (cudaError_t status = cudaGetLastError(); status != cudaSuccess)
    return status;
  sumPartialsKernel<<<1, 1, 0, stream>>>(partials, shape.blocks, out);
  return cudaGetLastError();
}

} // namespace shardline::rt::cuda
