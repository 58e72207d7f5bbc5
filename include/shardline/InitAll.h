//===- InitAll.h - dialects and passes the Shardline tools use --*- C++ -*-===//

#ifndef SHARDLINE_INITALL_H
#define SHARDLINE_INITALL_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Transforms/Passes.h"
#include "shardline/Dialect/SL/IR/SL.h"
#include "shardline/Dialect/SL/Transforms/Passes.h"

namespace shardline {

/// The sl dialect and the upstream dialects that appear in its programs.
inline void registerAllDialects(mlir::DialectRegistry &registry) {
  registry.insert<mlir::sl::SLDialect, mlir::func::FuncDialect, mlir::arith::ArithDialect,
                  mlir::tensor::TensorDialect, mlir::shard::ShardDialect>();
}

/// Upstream cleanup passes (canonicalize, cse, ...) and Shardline's own passes.
inline void registerAllPasses() {
  mlir::registerTransformsPasses();
  mlir::sl::registerSLPasses();
  mlir::sl::registerShardPipeline();
}

} // namespace shardline

#endif
