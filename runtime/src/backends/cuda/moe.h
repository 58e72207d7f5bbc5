//===- moe.h - dropless MoE in the CUDA backend -----------------*- C++ -*-===//

#ifndef SHARDLINE_RUNTIME_BACKENDS_CUDA_MOE_H
#define SHARDLINE_RUNTIME_BACKENDS_CUDA_MOE_H

#include "exec/program.h"

#include <map>
#include <string>

namespace shardline::rt {

/// The runs of sl.moe_dropless and sl.moe_dropless_grad (backends/cuda/moe.cpp).
const std::map<std::string, void (*)(const Step &, Frame &)> &cudaMoeRuns();

} // namespace shardline::rt

#endif
