//===- exchange_grad.h - CUDA kernels around the exchanges' duals -*- C++ -*-===//
//
// The device work around the backward of the exchanges that kernels make
// themselves over NCCL (backends/cuda/exchange_grad.cpp): halo_add's sums of
// the rows that come back, the state exchange's reverse combination, the
// scans' corrections' backward, the vocabulary-parallel cross-entropy's
// gradient. Device pointers in and out,
// queued on `stream`, each returning its launch's error, as kernels.h; the
// arithmetic is exchange_grad_arith.h's.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CUDA_EXCHANGE_GRAD_H
#define SHARDLINE_RUNTIME_KERNELS_CUDA_EXCHANGE_GRAD_H

#include "kernels/cuda/exchange_grad_arith.h"
#include "kernels/cuda/launch.h"

#include <cuda_runtime_api.h>

#include <cstdint>

namespace shardline::rt::cuda {

/// n rows of C values added onto dst in row order (arith::addRowsColumn),
/// one thread a column: rows that land on the same row add up in order.
cudaError_t add_rows_in_order(const float *src, const int64_t *from, const int64_t *to, int64_t n,
                              int64_t C, float *dst, cudaStream_t stream);

/// The state exchange's dual for this rank's `localChunks` chunks (global
/// indices chunks[i]) from every chunk's gathered initial-state cotangents
/// and decays (arith::stateExchangeGradEntry), one thread a (local chunk,
/// decay entry): dstates [localChunks, stateSize] and ddecays
/// [localChunks, stateSize / bcast], from this rank's initial states init
/// [localChunks, stateSize].
cudaError_t state_exchange_grad(const float *gathered, const int64_t *dinitAt,
                                const int64_t *decayAt, const int64_t *chunks, int64_t allChunks,
                                int64_t localChunks, int64_t stateSize, int64_t bcast,
                                const float *init, float *dstates, float *ddecays,
                                cudaStream_t stream);

/// The scans' corrections' backward, one thread a group of heads
/// (arith::ssdCorrectGradLane; args.dt and args.A the prelude's) or a
/// channel (arith::rglruCorrectGradLane).
cudaError_t ssd_correct_grad(const arith::SsdCorrectGradArgs &args, cudaStream_t stream);
cudaError_t rglru_correct_grad(const arith::RglruCorrectGradArgs &args, cudaStream_t stream);

/// dlogits[T, V] of this vocabulary shard ([offset, offset + V)) of the mean
/// cross-entropy over `tokens` tokens, from the combined maxima gmax [T] and
/// every shard's sums of exponentials, gathered [shards, T]
/// (arith::shardedGradElement), one thread an element.
cudaError_t xent_sharded_grad(const float *logits, const int32_t *labels, const float *gmax,
                              const float *sums, int64_t shards, int64_t T, int64_t V,
                              int64_t offset, double tokens, float *dlogits, cudaStream_t stream);

} // namespace shardline::rt::cuda

#endif
