//===- experts_grad.h - the SwiGLU experts' backward over dense slabs ----===//
//
// The sequence of GEMMs and elementwise ops with which the CUDA backend
// differentiates the MoE experts on the forward's dense slabs, written once
// over an `Ops` that supplies them: the backend passes cuBLASLt and the CUDA
// kernels, test/cuda_arith_test.cpp a host GEMM and arith.h's functions, and
// checks the result against the CPU's moe_experts_slabs_grad.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CUDA_EXPERTS_GRAD_H
#define SHARDLINE_RUNTIME_KERNELS_CUDA_EXPERTS_GRAD_H

#include <cstdint>

namespace shardline::rt::cuda {

/// What the experts' backward reads and writes: tokens and dout [E, T, H]
/// (the slabs and their outputs' cotangents, zero in the rows no token
/// chose), the weights gate and up [E, H, F] and down [E, F, H]; it writes
/// the experts' outputs out and the slabs' cotangents dtokens [E, T, H] and
/// the weights' gradients. `scratch` holds 6·T·F + T·H floats.
struct ExpertsGradArgs {
  const float *tokens, *dout, *wGate, *wUp, *wDown;
  int64_t E, T, H, F;
  float *out, *dtokens, *dGate, *dUp, *dDown, *scratch;
};

/// Ops: gemm(transA, transB, a, b, M, N, K, out) (row-major out[M, N] =
/// op(a) · op(b)), swiglu(g, u, n, out), swigluGrad(g, u, dy, n, dg, du) and
/// add(a, b, n, out). Per expert: g = x·Wg, u = x·Wu, act = swiglu(g, u),
/// out = act·Wd; dact = dout·Wdᵀ, (dg, du) = swiglu'(g, u)·dact,
/// dWd = actᵀ·dout, dWg = xᵀ·dg, dWu = xᵀ·du, dx = dg·Wgᵀ + du·Wuᵀ.
template <typename Ops> void expertsGrad(Ops &ops, const ExpertsGradArgs &a) {
  const int64_t T = a.T, H = a.H, F = a.F, rows = T * F;
  float *g = a.scratch, *u = g + rows, *act = u + rows, *dact = act + rows, *dg = dact + rows,
        *du = dg + rows, *part = du + rows;
  for (int64_t e = 0; e < a.E; ++e) {
    const float *x = a.tokens + e * T * H, *d = a.dout + e * T * H;
    const float *wg = a.wGate + e * H * F, *wu = a.wUp + e * H * F, *wd = a.wDown + e * F * H;
    float *dx = a.dtokens + e * T * H;
    ops.gemm(false, false, x, wg, T, F, H, g);
    ops.gemm(false, false, x, wu, T, F, H, u);
    ops.swiglu(g, u, rows, act);
    ops.gemm(false, false, act, wd, T, H, F, a.out + e * T * H);
    ops.gemm(false, true, d, wd, T, F, H, dact);
    ops.swigluGrad(g, u, dact, rows, dg, du);
    ops.gemm(true, false, act, d, F, H, T, a.dDown + e * F * H);
    ops.gemm(true, false, x, dg, H, F, T, a.dGate + e * H * F);
    ops.gemm(true, false, x, du, H, F, T, a.dUp + e * H * F);
    ops.gemm(false, true, dg, wg, T, H, F, dx);
    ops.gemm(false, true, du, wu, T, H, F, part);
    ops.add(dx, part, T * H, dx);
  }
}

} // namespace shardline::rt::cuda

#endif
