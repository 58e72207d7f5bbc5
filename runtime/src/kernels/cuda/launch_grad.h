//===- launch_grad.h - launch shapes of the CUDA backward kernels ---------===//
//
// launch.h's convention for the backward kernels and AdamW: how each is cut
// into blocks and threads, and how the GEMMs of linear's backward are laid
// out for cuBLASLt, in plain C++ so that a CPU unit test checks them.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CUDA_LAUNCH_GRAD_H
#define SHARDLINE_RUNTIME_KERNELS_CUDA_LAUNCH_GRAD_H

#include "kernels/cuda/launch.h"

#include <cstdint>
#include <string>

namespace shardline::rt::cuda {

/// The tiling of attention's dk, dv kernel: each block takes `keysPerBlock`
/// keys of one (batch, kv head), one key a thread; it walks the queries of
/// every query head of the kv head in tiles of `queriesPerTile` rows of q and
/// dy (with their positions, log-sum-exps and deltas) staged in shared
/// memory. `maxHeadDim` is the per-thread accumulators' length (64, 128 or
/// 256). The dq kernel takes the forward's AttentionTiling (queries a
/// thread, key tiles of K and V).
struct AttentionGradTiling {
  int keysPerBlock = 0, queriesPerTile = 0, maxHeadDim = 0;
  int64_t keyBlocks = 0; ///< blocks along the keys of one kv head
  LaunchShape shape;
};

/// The tiling for batch B, kv heads HKV, Sk keys and head dim D; false with
/// the reason in `error` when the kernel cannot run them.
bool attentionGradTiling(int64_t B, int64_t HKV, int64_t Sk, int64_t D, AttentionGradTiling &tiling,
                         std::string &error);

/// A row-major GEMM C[M, N] = op(A)[M, K] · op(B)[K, N] (A stored [K, M]
/// when transA, B stored [N, K] when transB) as cuBLASLt's column-major
/// C^T = op(B)^T · op(A)^T: the first operand is B, the second A. Each
/// matrix is the stored one with its rows, columns and leading dimension in
/// column-major terms, and whether cuBLASLt transposes it.
struct GemmMatrix {
  int64_t rows = 0, cols = 0, ld = 0;
  bool transposed = false;
};
struct GemmLayout {
  GemmMatrix first, second, out;
};
GemmLayout gemmLayout(bool transA, bool transB, int64_t M, int64_t N, int64_t K);

/// The element types a GEMM's tensors are stored in.
enum class GemmElement { F32, BF16, F16 };

/// The types cuBLASLt runs a GEMM in, f32 accumulation always
/// (CUBLAS_COMPUTE_32F): both factors 16-bit of one type go in as they are
/// (bf16 or f16 tensor cores), with the product written in its own type, f32
/// or the factors'; anything else runs in f32. A tensor stored in another
/// type than the one it runs in is staged: converted into f32 before (a
/// factor) or from f32 after (the product).
struct GemmTypes {
  GemmElement factors = GemmElement::F32, out = GemmElement::F32;
  bool stageA = false, stageB = false, stageOut = false;
};
GemmTypes gemmTypes(GemmElement a, GemmElement b, GemmElement out);
/// How cuBLASLt multiplies two f32 factors, as `setting` (the value of
/// SHARDLINE_CUDA_TF32, nullptr when unset) says: "0", empty or unset in f32
/// (CUBLAS_COMPUTE_32F: the CPU's products to rounding, no tensor cores),
/// "1" on the tensor cores with the factors rounded to TF32's 10-bit
/// mantissas (2^-11 relative), f32 sums (CUBLAS_COMPUTE_32F_FAST_TF32; an
/// H100 SXM's datasheet gives 494 dense TF32 TFLOP/s against 67 f32), as PyTorch's
/// torch.backends.cuda.matmul.allow_tf32. False with the reason in `error`
/// for any other value. 16-bit GEMMs are not affected.
bool f32GemmsOnTensorCores(const char *setting, bool &tf32, std::string &error);

/// The bytes of one element of `type`.
inline int64_t gemmElementBytes(GemmElement type) { return type == GemmElement::F32 ? 4 : 2; }

/// The embedding's backward: one thread per column of the table's rows,
/// each walking the tokens in order (the CPU's order of the sums).
LaunchShape embeddingGradShape(int64_t H);

/// A sum over n values in two passes: `blocks` partial sums of 256 threads
/// each (striding over the values), then one block adding the partials in
/// order. The shared memory holds a double per warp.
LaunchShape sumShape(int64_t n);

} // namespace shardline::rt::cuda

#endif
