//===- overlap.h - a linear's GEMMs under its gather or reduce-scatter -*- C++ -*-===//
//
// The CUDA run of a linear (or lm_head) paired with the all_gather before
// it (comm/gather_overlap.h): the gather step placed this rank's piece of
// x; here the other members' pieces travel around the ring on a second
// stream while the rank's stream runs the GEMM of each piece's rows as soon
// as its arrival event says it is there, own piece first. And of a linear
// paired with the reduce_scatter after it (comm/scatter_overlap.h): the
// rank's stream runs the GEMM of each member's piece in turn, the second
// stream sends each piece to its member as soon as its GEMM is done and
// receives the other members' pieces of this rank's chunk into the pair's
// landing buffer, which the reduce-scatter step sums.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_BACKENDS_CUDA_OVERLAP_H
#define SHARDLINE_RUNTIME_BACKENDS_CUDA_OVERLAP_H

#include "exec/program.h"

namespace shardline::rt {

/// Runs step `s` (a linear or lm_head) piece by piece under its paired
/// gather or over its paired reduce-scatter and returns true; false, having
/// done nothing, when `s` is not paired (no NCCL, not a pair, or
/// SHARDLINE_NCCL_OVERLAP=0).
bool runPairedLinear(const Step &s, Frame &f);

} // namespace shardline::rt

#endif
