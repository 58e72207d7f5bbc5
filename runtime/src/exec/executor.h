//===- executor.h - run a plan on ranks that are threads -------------------===//
//
// Every rank runs the plan's ops in order on its local parts of the tensors
// (global shapes and layouts from the plan, local parts from the mesh). Ranks
// share memory: a collective reads the other ranks' parts once all of them
// have produced the operand (comm/transfer.h). Weights come from the seed by
// global element index, tokens and labels too, so a run on one rank with the
// mesh collapsed computes the single-device result of the same model.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_EXEC_EXECUTOR_H
#define SHARDLINE_RUNTIME_EXEC_EXECUTOR_H

#include "core/layout.h"
#include "core/plan.h"

#include <cstdint>
#include <string>
#include <vector>

namespace shardline::rt {

struct RunOptions {
  uint64_t seed = 1;
  /// Run every rank's part as if the mesh had one rank: the single-device
  /// reference of the same model.
  bool singleDevice = false;
  /// Load the weights from this safetensors file instead of generating them
  /// (every weight by name, with the plan's global shape).
  std::string weightsFile;
  /// Write the weights of the run (whole, f32) to this safetensors file.
  std::string saveWeightsFile;
  /// Forward passes to run (the outputs are the last one's).
  int64_t steps = 1;
};

struct RunResult {
  /// Empty on success.
  std::string error;
  int64_t ranks = 1;
  /// The program's outputs assembled as global tensors (row-major).
  std::vector<std::vector<float>> outputs;
  std::vector<std::vector<int64_t>> outputShapes;
  /// Bytes each rank sent in collectives in one step (largest over ranks).
  int64_t bytesSentPerRank = 0;
  /// Wall time of the steps, after the weights are in place.
  double seconds = 0;
};

/// The op kinds the executor runs; a plan with others is refused up front.
bool executorSupports(const std::string &kind);

RunResult runPlan(const LoadedPlan &plan, const RunOptions &options);

} // namespace shardline::rt

#endif
