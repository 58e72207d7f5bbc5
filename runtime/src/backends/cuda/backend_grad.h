//===- backend_grad.h - the CUDA backend's backward and AdamW runs -------===//

#ifndef SHARDLINE_RUNTIME_BACKENDS_CUDA_BACKEND_GRAD_H
#define SHARDLINE_RUNTIME_BACKENDS_CUDA_BACKEND_GRAD_H

#include "exec/program.h"

#include <map>
#include <string>

namespace shardline::rt {

/// The backward ops and AdamW the CUDA backend runs, by kind: each takes its
/// bindings, contract and rank facts from the CPU table's entry
/// (backend.cpp builds the table from these and the forward's).
const std::map<std::string, void (*)(const Step &, Frame &)> &cudaGradRuns();

} // namespace shardline::rt

#endif
