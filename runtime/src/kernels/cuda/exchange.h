//===- exchange.h - CUDA kernels around the kernels' exchanges --*- C++ -*-===//
//
// The device work around the exchanges that kernels make themselves over
// NCCL (backends/cuda/exchange.cpp) and around the transitions' own
// (backends/cuda/nccl.cpp): moving halo rows, a 16-bit reduce-scatter's
// sums, ring attention's log-sum-exp merge, the state exchange's
// combination and the scans' corrections, the vocabulary-parallel
// cross-entropy's pieces. Device
// pointers in and out, queued on `stream`, each returning its launch's
// error, as kernels.h; the arithmetic is exchange_arith.h's.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CUDA_EXCHANGE_H
#define SHARDLINE_RUNTIME_KERNELS_CUDA_EXCHANGE_H

#include "kernels/cuda/exchange_arith.h"
#include "kernels/cuda/kernels.h"
#include "kernels/cuda/launch.h"

#include <cuda_runtime_api.h>

#include <cstdint>

namespace shardline::rt::cuda {

/// n rows of C values: row from[i] of src (i when from is nullptr) into row
/// to[i] of dst (i when to is nullptr), in src's type (dst's too: f32, i32,
/// bf16 or f16), their bits as they are (the sums of halo_add are
/// add_rows_in_order's, exchange_grad.h).
cudaError_t copy_rows(Src src, const int64_t *from, const int64_t *to, int64_t n, int64_t C,
                      Dst dst, cudaStream_t stream);

/// Each of the n runs (three int64 each: from, to, count; comm/movement.h,
/// ElementRun), none longer than maxCount, copies `count` elements from
/// element `from` of [a (aCount elements), b] to element `to` of dst, the
/// bits as they are: a layout transition's pack and placement on the
/// device (elementBytes 2 or 4).
cudaError_t copy_runs(const void *a, int64_t aCount, const void *b, const int64_t *runs, int64_t n,
                      int64_t maxCount, int64_t elementBytes, void *dst, cudaStream_t stream);

/// A reduce-scatter's last half: the pieces [g, n] the g members sent this
/// one, landed in group order, summed element by element in f32 in that
/// order (arith::orderedSum) and rounded once into out [n]; pieces and out
/// of one float type (a 16-bit sum's pieces cross as stored).
cudaError_t sum_pieces(Src pieces, int64_t g, int64_t n, Dst out, cudaStream_t stream);

/// The log-sum-exp merge of two partial attentions out [B, Sq, HQ*D] with
/// lse [B, HQ, Sq] (arith::mergeRow); out and lse may be outA and lseA.
cudaError_t attention_merge(const float *outA, const float *lseA, const float *outB,
                            const float *lseB, int64_t B, int64_t Sq, int64_t HQ, int64_t D,
                            float *out, float *lse, cudaStream_t stream);

/// The initial states of this rank's `localChunks` chunks (global indices
/// chunks[i]) from every chunk's gathered summaries
/// (arith::chunkInitialState), into out [localChunks, stateSize]; the
/// summaries and the result each of any float type, the fold in double and
/// the result rounded once.
cudaError_t chunk_initial_states(Src gathered, const int64_t *stateAt, const int64_t *decayAt,
                                 const int64_t *chunks, int64_t localChunks, int64_t stateSize,
                                 int64_t bcast, Dst out, cudaStream_t stream);

/// The scans' corrections by each sequence's true initial state
/// (arith::ssdCorrectLane, rglruCorrectLane) over the sequences `seq`: y0,
/// the activations (C and dt; x) and y of one type, f32, bf16 or f16, the
/// parameters (a_log and dt_bias; wa, ba and lambda) f32 or of that type,
/// init of any float type.
cudaError_t ssd_correct(Src y0, Src init, Src Cm, Src dt, Src aLog, Src dtBias,
                        const Sequences &seq, int64_t NH, int64_t P, int64_t G, int64_t N, Dst y,
                        cudaStream_t stream);
cudaError_t rglru_correct(Src y0, Src init, Src x, Src wa, Src ba, Src lambda, const Sequences &seq,
                          int64_t W, Dst y, cudaStream_t stream);

/// Each token's largest logit of this shard, logits [T, V] -> max [T]; the
/// logits of any float type.
cudaError_t xent_local_max(Src logits, int64_t T, int64_t V, float *max, cudaStream_t stream);
cudaError_t xent_local_max(const float *logits, int64_t T, int64_t V, float *max,
                           cudaStream_t stream);

/// From the shards' gathered maxima [shards, T]: each token's maximum into
/// gmax [T], and this shard's pieces [sums T, targets T]: Σ exp(logit -
/// gmax) (double, stored f32) and the label's logit (0 where another shard
/// holds it); every label outside [0, vocab) adds one to *badLabels. The
/// logits of any float type.
cudaError_t xent_local_pieces(Src logits, const int32_t *labels, const float *maxes, int64_t shards,
                              int64_t T, int64_t V, int64_t offset, int64_t vocab, float *gmax,
                              float *pieces, int32_t *badLabels, cudaStream_t stream);
cudaError_t xent_local_pieces(const float *logits, const int32_t *labels, const float *maxes,
                              int64_t shards, int64_t T, int64_t V, int64_t offset, int64_t vocab,
                              float *gmax, float *pieces, int32_t *badLabels, cudaStream_t stream);

/// The mean loss over `tokens` from every shard's gathered pieces
/// [shards, 2T] and the maxima; terms is scratch of T doubles; the loss of
/// any float type.
cudaError_t xent_sharded_loss(const float *pieces, const float *gmax, int64_t shards, int64_t T,
                              double tokens, double *terms, Dst loss, cudaStream_t stream);

} // namespace shardline::rt::cuda

#endif
