//===- exchange_grad.h - the CUDA runs of the exchanges' duals --*- C++ -*-===//
//
// The backward of the ops whose kernels exchange values themselves
// (ring_attention_grad, halo_add, scan_state_exchange_grad and
// cross_entropy_grad over a vocabulary split), over the rank's NCCL
// communicators along the routes of comm/nccl_kernels.h, in the order and
// with the bytes of their CPU kernels and their NCCL lowering; and the
// backward of the scans' corrections, which compute on what the state
// exchange brings.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_BACKENDS_CUDA_EXCHANGE_GRAD_H
#define SHARDLINE_RUNTIME_BACKENDS_CUDA_EXCHANGE_GRAD_H

#include "backends/cuda/exchange.h"

namespace shardline::rt {

/// The runs by op kind; cross_entropy_grad runs backend_grad.cpp's entry
/// where one rank holds the whole vocabulary.
std::map<std::string, CudaRun> exchangeGradRuns();

} // namespace shardline::rt

#endif
