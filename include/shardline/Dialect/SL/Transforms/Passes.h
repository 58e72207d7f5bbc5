//===- Passes.h - sl passes ---------------------------------------*- C++ -*-===//

#ifndef SHARDLINE_DIALECT_SL_TRANSFORMS_PASSES_H
#define SHARDLINE_DIALECT_SL_TRANSFORMS_PASSES_H

#include "shardline/Dialect/SL/IR/SL.h"

#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"

namespace mlir::sl {

/// The strategy options of sl-propagate-layouts: `module` reads the module's
/// attribute (sl.sequence_parallel, sl.cp_comm), the others override it.
enum class SequenceParallelOption { Module, On, Off };
enum class CPCommOption { Module, Ring, AllGather, A2A, Auto };

#define GEN_PASS_DECL
#include "shardline/Dialect/SL/Transforms/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "shardline/Dialect/SL/Transforms/Passes.h.inc"

/// The pipeline shardline-compile runs: choose the cp exchange (auto only),
/// propagate, insert collectives, (with `train`, sl-autodiff), elide,
/// canonicalize. Registered as `sl-shard-pipeline` (and, with sl-autodiff,
/// `sl-train-pipeline`). `machineFile` feeds sl-choose-cp-comm.
/// With `train`, `saveGathered` and `gradReduceInBf16` are sl-autodiff's
/// save-gathered and grad-reduce-in-bf16.
void buildShardPipeline(OpPassManager &pm, const std::string &machineFile = "", bool train = false,
                        bool saveGathered = false, bool gradReduceInBf16 = false);
void registerShardPipeline();

} // namespace mlir::sl

#endif
