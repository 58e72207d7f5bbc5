//===- EmitPlan.h - sl program -> plan file (runtime/schema/plan.fbs) --*- C++ -*-===//

#ifndef SHARDLINE_PLAN_EMITPLAN_H
#define SHARDLINE_PLAN_EMITPLAN_H

#include "shardline/Analysis/Report.h"

#include "mlir/IR/BuiltinOps.h"

#include <cstdint>
#include <vector>

namespace shardline {

/// Serializes the module's one function: every value becomes a tensor (global
/// shape, layout, role; weights with their init), every op but sl.weight and
/// the return becomes an op with its attributes. Returns the plan file's bytes
/// (header and payload), or fails with a diagnostic on the module.
/// The bytes each rank sends and each op's block come from `report`, the
/// analysis of the same module.
mlir::FailureOr<std::vector<uint8_t>> emitPlan(mlir::ModuleOp module, const Report &report);
/// The same, analysing the module first.
mlir::FailureOr<std::vector<uint8_t>> emitPlan(mlir::ModuleOp module);

} // namespace shardline

#endif
