//===- MemoryPlan.h - one arena per rank for the activations ----*- C++ -*-===//
//
// Every activation (function arguments and op results; weights live apart)
// gets an offset in one arena. Values are placed in program order: an op's
// results are placed while its operands are still live, then the values whose
// last use it is are freed; a placement takes the lowest free gap that fits
// (64-byte aligned) or grows the arena. The arena's high-water mark is the
// report's peak_activation_bytes_per_rank; the largest sum of live bytes is a
// lower bound it can exceed by fragmentation.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_ANALYSIS_MEMORYPLAN_H
#define SHARDLINE_ANALYSIS_MEMORYPLAN_H

#include "core/layout.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/DenseMap.h"

#include <algorithm>
#include <vector>

namespace shardline {

struct ArenaPlan {
  llvm::DenseMap<mlir::Value, int64_t> offsets;
  int64_t highWater = 0;
  /// The sum of the (unaligned) bytes live while each op of the body runs, in
  /// body order: its operands, its results and whatever a later op still reads.
  std::vector<int64_t> liveAt;
  /// The largest of liveAt: no placement can peak below it.
  int64_t liveBound() const {
    return liveAt.empty() ? 0 : *std::max_element(liveAt.begin(), liveAt.end());
  }
};

ArenaPlan planArena(mlir::func::FuncOp fn, const Mesh &mesh);

} // namespace shardline

#endif
