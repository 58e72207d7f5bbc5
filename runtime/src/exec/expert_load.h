//===- expert_load.h - where a routing kernel counts its rows --*- C++ -*-===//
//
// The rank's entry of the expert load (exec/program.h, Frame::expertLoad),
// shared by the CPU kernels and the CUDA backend's routing kernels.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_EXEC_EXPERT_LOAD_H
#define SHARDLINE_RUNTIME_EXEC_EXPERT_LOAD_H

#include "exec/program.h"

#include <algorithm>
#include <string>
#include <vector>

namespace shardline::rt {

/// The step's entry in the rank's expert load, sized to `experts` (made on
/// every rank, so that all hold the same entries), or nullptr when nobody
/// reads it or this rank's tokens are counted elsewhere: of the ranks that
/// hold the same part of the routing tensor `t`, only the first (coordinate
/// 0 on every mesh axis t is not split over) counts, so the counts sum over
/// the ranks to the layer's routed choices.
inline ExpertLoad *expertLoad(const Step &s, Frame &f, int32_t t, int64_t experts) {
  if (!f.expertLoad)
    return nullptr;
  ExpertLoad &load = (*f.expertLoad)[s.index];
  load.kept.resize(experts, 0);
  load.dropped.resize(experts, 0);
  const TensorInfo &routing = f.tensors[t];
  std::vector<int64_t> coords = f.mesh.coords(f.self);
  for (size_t a = 0; a < f.mesh.axes.size(); ++a) {
    bool splits = false;
    for (const std::vector<std::string> &dim : routing.layout.dims)
      splits = splits || std::count(dim.begin(), dim.end(), f.mesh.axes[a].first) > 0;
    if (!splits && coords[a] != 0)
      return nullptr;
  }
  return &load;
}

} // namespace shardline::rt

#endif
