//===- SL.h - the Shardline dialect ------------------------------*- C++ -*-===//

#ifndef SHARDLINE_DIALECT_SL_IR_SL_H
#define SHARDLINE_DIALECT_SL_IR_SL_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "llvm/ADT/DenseMap.h"

#include "core/layout.h"
#include "shardline/Dialect/SL/IR/Gradient.h"
#include "shardline/Dialect/SL/IR/SPMD.h"
#include "shardline/Dialect/SL/IR/ShardingRule.h"

#include "shardline/Dialect/SL/IR/SLDialect.h.inc"
#include "shardline/Dialect/SL/IR/SLEnums.h.inc"

#define GET_ATTRDEF_CLASSES
#include "shardline/Dialect/SL/IR/SLAttrs.h.inc"

namespace mlir::sl {
class MeshOp;
/// Checks an op's operand and result layouts against its sharding rule.
LogicalResult verifyShardingRule(Operation *op);

/// Why sl.moe_dropless (or, with `gradient`, its sl.moe_dropless_grad)
/// exchanges what it does, for its sl.reason: the rows by count over the
/// expert group `expertAxes` (ep) and, with `tensorAxes` (etp), their gather
/// over the expert-tensor group and the reduce-scatter back. Empty when both
/// are empty (nothing crosses).
std::string droplessExchangeReason(ArrayRef<std::string> expertAxes,
                                   ArrayRef<std::string> tensorAxes, bool gradient);

// The discardable attributes of the dialect. SLDialect::verifyOperationAttribute
// checks each one's type, values and place (docs/dialect.md lists them).

/// Why a collective or remedy is there (every pass that places one sets it).
constexpr llvm::StringLiteral kReasonAttr = "sl.reason";
/// On sl.relayout: why the axes it takes off the tensor altogether are
/// gathered, where that is another dimension's change than the one sl.reason
/// names; the all_gather steps over those axes carry it as their sl.reason
/// (expert tensor parallelism: the experts' tokens move to their owners for
/// the experts' split, and are gathered for the ffn split).
constexpr llvm::StringLiteral kGatherReasonAttr = "sl.gather_reason";
/// The attention exchange under context parallelism (CPComm): on the module
/// (ring, allgather, a2a or auto) and, once sl-choose-cp-comm has resolved
/// auto, on each sl.attention (ring, allgather or a2a) and the
/// sl.ring_attention it becomes.
constexpr llvm::StringLiteral kCPCommAttr = "sl.cp_comm";
/// Module: whether sequence parallelism is on (bool).
constexpr llvm::StringLiteral kSequenceParallelAttr = "sl.sequence_parallel";
/// Module: the rewrites of sl-elide-gathers, for the report (dictionaries of
/// op, location, how).
constexpr llvm::StringLiteral kElidedAttr = "sl.elided";
/// The model block an op belongs to (i64, >= 0), stamped at import.
constexpr llvm::StringLiteral kBlockAttr = "sl.block";
/// The family of that block: its pattern letter (A, E, F, L, M, R), embedding or
/// lm_head.
constexpr llvm::StringLiteral kFamilyAttr = "sl.family";
/// Function argument: the model input it is (tokens, labels).
constexpr llvm::StringLiteral kNameAttr = "sl.name";
/// The function attribute sl-partition sets: the program is one rank's, its
/// shapes are local parts, and sl ops in it are checked for types only.
constexpr llvm::StringLiteral kRankAttr = "sl.rank";
/// The number of ranks of such a program.
constexpr llvm::StringLiteral kRanksAttr = "sl.ranks";
/// On an upstream shard collective: the sl op it replaces.
constexpr llvm::StringLiteral kFromAttr = "sl.from";
// Per-rank facts sl-partition resolves (SPMDOpInterface::resolveRankFacts).
/// Global positions of the local tokens, as [start, length] runs.
constexpr llvm::StringLiteral kTokensAttr = "sl.tokens";
/// The keys' positions (runs); on ring attention, one runs array per member.
constexpr llvm::StringLiteral kKeyTokensAttr = "sl.key_tokens";
/// Ring attention's members in ring order from this rank.
constexpr llvm::StringLiteral kRingAttr = "sl.ring";
/// The first vocabulary row this rank holds.
constexpr llvm::StringLiteral kVocabOffsetAttr = "sl.vocab_offset";
/// The chunks (runs) a scan state exchange holds on this rank.
constexpr llvm::StringLiteral kChunksAttr = "sl.chunks";
/// The ranks of a communicating op's group, in group order.
constexpr llvm::StringLiteral kGroupAttr = "sl.group";

/// An op of the backward program or the optimizer step (unit): what
/// sl-autodiff appends. The report counts bytes and saved activations from
/// the first such op on.
constexpr llvm::StringLiteral kBackwardAttr = "sl.backward";
/// A backward op that recomputes a forward value instead of reading the saved
/// one (unit; e.g. the re-gather of a column-parallel linear's input): CSE
/// must not merge it with the forward op it repeats.
constexpr llvm::StringLiteral kRecomputeAttr = "sl.recompute";

/// The ends of the model that sl.family names besides block families.
inline constexpr llvm::StringLiteral kEndFamilies[] = {"embedding", "lm_head"};

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

/// The module's mesh, the one every pass works on: null when the module has
/// none (nothing is distributed); an error naming `pass` on a second one.
FailureOr<MeshOp> getModuleMesh(ModuleOp module, StringRef pass);

/// The layout of `v`, or the replicated layout of its rank when it has none.
shardline::Layout layoutOrReplicated(Value v);

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
/// checkOpRule with overrides by operand position (an operand used twice can
/// stand in two layouts); positions past the end or nullopt keep their layout.
/// `mesh`, when given, is the op's mesh (saves looking it up).
std::optional<shardline::RuleCheck>
checkOpRuleAt(Operation *op, ArrayRef<std::optional<shardline::Layout>> overrides,
              const shardline::Mesh *mesh = nullptr);

/// `type` with its layout encoding replaced (null: removed).
RankedTensorType withLayout(RankedTensorType type, LayoutAttr layout);

} // namespace mlir::sl

#endif
