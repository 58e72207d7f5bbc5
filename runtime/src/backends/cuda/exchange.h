//===- exchange.h - CUDA steps that exchange values over NCCL ---*- C++ -*-===//
//
// The CUDA runs of the ops whose kernels exchange values themselves (ring
// attention, sl.halo, the scans' state exchange, cross-entropy over a
// vocabulary split), their exchanges over the rank's NCCL communicators
// (backends/cuda/nccl.h) along the routes of comm/nccl_kernels.h, and of
// the ops that compute on what those bring (local attention over a halo,
// the scans' corrections).
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_BACKENDS_CUDA_EXCHANGE_H
#define SHARDLINE_RUNTIME_BACKENDS_CUDA_EXCHANGE_H

#include "exec/program.h"

#include <map>
#include <string>
#include <vector>

namespace shardline::rt {

using CudaRun = void (*)(const Step &, Frame &);

/// The runs by op kind. `base` is the backend's own table: cross_entropy and
/// local_attention run its entries where nothing is split (a whole
/// vocabulary, no halo). The lowered kinds they take over NCCL are
/// comm/nccl_kernels.h's kernelExchangeKinds.
std::map<std::string, CudaRun> exchangeRuns(const std::map<std::string, CudaRun> &base);

} // namespace shardline::rt

#endif
