//===- overlap.h - a gathered linear's GEMMs under its gather ---*- C++ -*-===//
//
// The CUDA run of a linear (or lm_head) paired with the all_gather before
// it (comm/gather_overlap.h): the gather step placed this rank's piece of
// x; here the other members' pieces travel around the ring on a second
// stream while the rank's stream runs the GEMM of each piece's rows as soon
// as its arrival event says it is there, own piece first.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_BACKENDS_CUDA_OVERLAP_H
#define SHARDLINE_RUNTIME_BACKENDS_CUDA_OVERLAP_H

#include "exec/program.h"

namespace shardline::rt {

/// Runs step `s` (a linear or lm_head) piece by piece under its paired
/// gather and returns true; false, having done nothing, when `s` is not
/// paired (no NCCL, not a pair, or SHARDLINE_NCCL_OVERLAP=0).
bool runPairedLinear(const Step &s, Frame &f);

} // namespace shardline::rt

#endif
