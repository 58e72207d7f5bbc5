//===- SL.h - the Shardline dialect ------------------------------*- C++ -*-===//

#ifndef SHARDLINE_DIALECT_SL_IR_SL_H
#define SHARDLINE_DIALECT_SL_IR_SL_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "llvm/ADT/DenseMap.h"

#include "core/layout.h"
#include "shardline/Dialect/SL/IR/ShardingRule.h"

#include "shardline/Dialect/SL/IR/SLDialect.h.inc"
#include "shardline/Dialect/SL/IR/SLEnums.h.inc"

#define GET_ATTRDEF_CLASSES
#include "shardline/Dialect/SL/IR/SLAttrs.h.inc"

namespace mlir::sl {
class MeshOp;
/// Checks an op's operand and result layouts against its sharding rule.
LogicalResult verifyShardingRule(Operation *op);
/// The function attribute sl-partition sets: the program is one rank's, its
/// shapes are local parts, and sl ops in it are checked for types only.
constexpr llvm::StringLiteral kRankAttr = "sl.rank";
bool inPerRankProgram(Operation *op);
} // namespace mlir::sl

#include "shardline/Dialect/SL/IR/SLInterfaces.h.inc"

#define GET_OP_CLASSES
#include "shardline/Dialect/SL/IR/SLOps.h.inc"

namespace mlir::sl {

/// The layout encoding of a value's type, or null.
LayoutAttr getLayout(Type type);
inline LayoutAttr getLayout(Value v) { return getLayout(v.getType()); }

/// The mesh a layout refers to, looked up from `from`; null if missing.
MeshOp lookupMesh(Operation *from, LayoutAttr layout);

/// Conversions between the attribute and the pure layout model.
shardline::Layout toLayout(LayoutAttr attr);
LayoutAttr fromLayout(MLIRContext *ctx, FlatSymbolRefAttr mesh, const shardline::Layout &layout);
shardline::Mesh toMesh(MeshOp mesh);

/// Runs `op`'s sharding rule on the layouts of its operands, with `overrides`
/// standing in for some of them (to ask "would the op accept this?"). Operands
/// without a layout or override count as unannotated. Returns nullopt when the
/// op has no rule or none of its values names a mesh.
std::optional<shardline::RuleCheck>
checkOpRule(Operation *op, const llvm::DenseMap<Value, shardline::Layout> &overrides =
                               llvm::DenseMap<Value, shardline::Layout>());

/// `type` with its layout encoding replaced (null: removed).
RankedTensorType withLayout(RankedTensorType type, LayoutAttr layout);

} // namespace mlir::sl

#endif
