//===- kernels_moe.h - CUDA kernels of dropless MoE over routed rows -----===//
//
// Device pointers in and out, queued on `stream`, each returning its
// launch's CUDA error; the arithmetic and index logic are those of
// kernels/cuda/moe_routed.h. Nothing here waits for the device or tells the
// host a count: the sort leaves each expert's offsets and tiles on the
// device, where the grouped GEMMs read them.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CUDA_KERNELS_MOE_H
#define SHARDLINE_RUNTIME_KERNELS_CUDA_KERNELS_MOE_H

#include "kernels/cuda/kernels.h"
#include "kernels/cuda/moe_capacity.h"
#include "kernels/cuda/moe_routed.h"

#include <cuda_runtime_api.h>

#include <cstdint>

namespace shardline::rt::cuda {

/// The device buffers of a sort of `choices` routed choices over E experts
/// (sizes in moe_routed.h's terms: chunks = sortChunks(choices)).
struct RoutedSort {
  int32_t *chunkCounts; ///< [chunks, E]
  int32_t *counts;      ///< [E]
  int64_t *offsets;     ///< [E + 1]
  int64_t *first;       ///< [chunks, E]
  int64_t *tileOffsets; ///< [E + 1]
  int32_t *perm;        ///< [choices]: sorted row -> choice
  int32_t *rowOf;       ///< [choices]: choice -> sorted row
};

/// Sorts the choices idx[choices] by expert, stably (moe_dispatch's order);
/// every index outside [0, E) adds one to *badIds and is left out.
cudaError_t moe_sort(const int32_t *idx, int64_t choices, int64_t E, const RoutedSort &sort,
                     int32_t *badIds, cudaStream_t stream);

/// rows[r, :] = x[perm[r] / k, :] for the R sorted rows (H wide); x and
/// the rows of one float type, the bits moved as they are.
cudaError_t moe_gather_tokens(Src x, const int32_t *perm, int64_t R, int64_t H, int64_t k, Dst rows,
                              cudaStream_t stream);
/// rows[r] = values[perm[r]] (each row's weight).
cudaError_t moe_gather_choices(const float *values, const int32_t *perm, int64_t R, float *rows,
                               cudaStream_t stream);
/// out[i] = rows[rowOf[i]] for the `choices` choices.
cudaError_t moe_scatter_choices(const float *rows, const int32_t *rowOf, int64_t choices,
                                float *out, cudaStream_t stream);

/// out[R, N] = each row of a[R, K] times its group's w (groups of rows
/// `offsets[groups + 1]`, row tiles `tileOffsets[groups + 1]`; w [groups,
/// K, N], or [groups, N, K] multiplied by its transpose when transW); a and
/// w each of any float type, widened as they are staged, out f32.
cudaError_t grouped_rows(Src a, Src w, bool transW, int64_t R, int64_t K, int64_t N,
                         const int64_t *offsets, const int64_t *tileOffsets, int64_t groups,
                         float *out, cudaStream_t stream);
/// grouped_rows (w not transposed) on the tensor cores (grouped_tc.h): w
/// bf16 or f16, a of w's type or, against bf16, f32 (split into two bf16
/// parts); cudaErrorInvalidValue for other types (arith::groupedTcTakes).
cudaError_t grouped_rows_tc(Src a, Src w, int64_t R, int64_t K, int64_t N, const int64_t *offsets,
                            const int64_t *tileOffsets, int64_t groups, float *out,
                            cudaStream_t stream);
/// out[groups, M, N] = each group's aᵀ·b over its rows of a[R, M], b[R, N].
cudaError_t grouped_outer(const float *a, int64_t M, const float *b, int64_t N,
                          const int64_t *offsets, int64_t groups, float *out, cudaStream_t stream);

/// y[T, H] = each token's choices' sorted rows of out[R, H], weighted (in
/// double, y rounded once); the weights and y each of any float type.
cudaError_t moe_routed_combine(const float *out, const int32_t *rowOf, Src weights, int64_t T,
                               int64_t H, int64_t k, Dst y, cudaStream_t stream);
/// dx[T, H] = each token's choices' rows of dxRows[R, H], summed.
cudaError_t moe_routed_dx(const float *dxRows, const int32_t *rowOf, int64_t T, int64_t H,
                          int64_t k, float *dx, cudaStream_t stream);
/// out[r, :] = scale[r] · rows[r, :] for R rows of H.
cudaError_t scale_rows(const float *rows, const float *scale, int64_t R, int64_t H, float *out,
                       cudaStream_t stream);
/// out[r] = rowDot(a, b, H, r) for R rows.
cudaError_t row_dots(const float *a, const float *b, int64_t R, int64_t H, float *out,
                     cudaStream_t stream);

/// offsets and tiles of `groups` groups of `rows` rows (uniformGroups), on
/// the device.
cudaError_t uniform_groups(int64_t groups, int64_t rows, int64_t *offsets, int64_t *tileOffsets,
                           cudaStream_t stream);

// -- capacity mode (moe_capacity.h) -------------------------------------------

/// Adds to *bad the indices of idx[n] outside [0, E).
cudaError_t count_bad_ids(const int32_t *idx, int64_t n, int64_t E, int32_t *bad,
                          cudaStream_t stream);
/// Adds to *bad the slots of slots[n] outside [-1, C).
cudaError_t count_bad_slots(const int32_t *slots, int64_t n, int64_t C, int32_t *bad,
                            cudaStream_t stream);
/// slots[B, S, k] (`probs`: rankChoice a thread per choice, then
/// expertSlots; `position`: expertSlots) and, per (group, expert), the
/// choices kept and dropped: kept and dropped [groups, E]. The weights of
/// any float type.
cudaError_t moe_capacity_slots(Src weights, const int32_t *idx, const arith::Capacity &d,
                               bool probs, int32_t *slots, int64_t *kept, int64_t *dropped,
                               cudaStream_t stream);
/// buffers[E, Gb, Gs, C, H]: each kept choice's token's row of x, zeros
/// elsewhere; x and the buffers of one float type, the rows' bits moved as
/// they are.
cudaError_t moe_dispatch_capacity(Src x, const int32_t *idx, const int32_t *slots,
                                  const arith::Capacity &d, int64_t H, Dst buffers,
                                  cudaStream_t stream);
/// y[B, S, H]: each token's kept rows weighted, summed in double and
/// rounded once; the buffers, weights and y of one float type.
cudaError_t moe_combine_capacity(Src buffers, Src weights, const int32_t *idx, const int32_t *slots,
                                 const arith::Capacity &d, int64_t H, Dst y, cudaStream_t stream);
cudaError_t moe_dispatch_capacity_grad(const float *dbuffers, const int32_t *idx,
                                       const int32_t *slots, const arith::Capacity &d, int64_t H,
                                       float *dx, cudaStream_t stream);
/// dbuffers: each kept choice's weight times its token's dy, zeros
/// elsewhere.
cudaError_t moe_combine_capacity_grad(const float *weights, const int32_t *idx,
                                      const int32_t *slots, const float *dy,
                                      const arith::Capacity &d, int64_t H, float *dbuffers,
                                      cudaStream_t stream);
cudaError_t moe_combine_capacity_grad_weights(const float *buffers, const int32_t *idx,
                                              const int32_t *slots, const float *dy,
                                              const arith::Capacity &d, int64_t H, float *dweights,
                                              cudaStream_t stream);

} // namespace shardline::rt::cuda

#endif
