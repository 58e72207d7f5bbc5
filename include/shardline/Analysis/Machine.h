//===- Machine.h - machine descriptions and the cp_comm cost model -*- C++ -*-===//
//
// A machine description (GPUs per node, link bandwidth and latency inside and
// across nodes, memory and peak throughput per GPU) and the cost of each way
// attention can exchange keys and values under context parallelism.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_ANALYSIS_MACHINE_H
#define SHARDLINE_ANALYSIS_MACHINE_H

#include "llvm/ADT/StringRef.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace shardline {

struct Link {
  double bandwidthBytesPerSecond = 0;
  double latencySeconds = 0;
};

struct Machine {
  std::string name;
  int64_t gpusPerNode = 8;
  Link intraNode, interNode;
  double memoryBytes = 0;
  double flopsPerSecond = 0;
};

/// Parses a machine file (examples/machines/*.json); problems go to `errors`
/// as "FILE: key: reason".
std::optional<Machine> parseMachine(llvm::StringRef text, llvm::StringRef file,
                                    std::vector<std::string> &errors);

/// The 8xH100 preset, identical to examples/machines/8xH100.json.
Machine defaultMachine();

/// One attention layer as one rank of the cp group sees it.
struct AttentionShape {
  int64_t batch = 1;
  int64_t seqLocal = 1; ///< tokens per rank (sequence / cp)
  int64_t heads = 1;    ///< query heads per rank (heads / tp)
  int64_t kvHeads = 1;  ///< kv heads per rank (kv_heads / tp)
  int64_t headDim = 1;
  int64_t elementBytes = 4;
};

struct CPCommCost {
  std::string kind; ///< ring | allgather | a2a
  bool feasible = true;
  double seconds = 0;
  int64_t bytesPerRank = 0;
  /// Extra memory the exchange keeps resident per rank.
  int64_t residentBytes = 0;
  std::string why; ///< why it is infeasible
};

/// Fraction of a GPU's memory the K,V exchange may keep resident.
constexpr double kResidentBudget = 0.1;

/// The cost of `kind` for a cp group of `cp` ranks (`tp` the tensor-parallel
/// size that splits heads; a2a needs kv heads divisible by tp*cp).
/// `crossesNodes`: the cp group spans nodes, so the inter-node link applies.
CPCommCost costOf(const std::string &kind, const AttentionShape &shape, int64_t cp, int64_t tp,
                  int64_t kvHeadsGlobal, const Machine &machine, bool crossesNodes);

/// The cheapest feasible kind (ties go to ring) and every option's cost.
std::pair<std::string, std::vector<CPCommCost>>
chooseCPComm(const AttentionShape &shape, int64_t cp, int64_t tp, int64_t kvHeadsGlobal,
             const Machine &machine, bool crossesNodes);

} // namespace shardline

#endif
