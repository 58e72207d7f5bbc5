//===- Partition.cpp - the program of one rank -----------------------------===//
//
// sl-partition{rank=R}: local shapes, upstream shard collectives where the
// data movement fits them, rank-dependent facts as attributes. See the pass
// description in Passes.td.
//
//===----------------------------------------------------------------------===//

#include "shardline/Dialect/SL/IR/SL.h"
#include "shardline/Dialect/SL/Transforms/Passes.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/Builders.h"

namespace mlir::sl {
#define GEN_PASS_DEF_SLPARTITION
#include "shardline/Dialect/SL/Transforms/Passes.h.inc"
} // namespace mlir::sl

using namespace mlir;
using namespace mlir::sl;

namespace {

class Partitioner {
public:
  Partitioner(ModuleOp module, int64_t rank) : module(module), rank(rank) {}

  LogicalResult run() {
    FailureOr<MeshOp> found = getModuleMesh(module, "sl-partition");
    if (failed(found))
      return failure();
    if (!*found)
      return module.emitError("sl-partition needs an sl.mesh");
    meshOp = *found;
    mesh = toMesh(meshOp);
    if (rank < 0 || rank >= mesh.numRanks())
      return module.emitError("sl-partition: rank ")
             << rank << " is outside the mesh's " << mesh.numRanks() << " ranks";
    for (auto fn : module.getOps<func::FuncOp>()) {
      if (fn->hasAttr(kRankAttr))
        return fn.emitError("sl-partition: '")
               << fn.getSymName() << "' is already the program of rank "
               << fn->getAttrOfType<IntegerAttr>(kRankAttr).getInt();
      WalkResult unmaterialised = fn.walk([](RelayoutOp op) {
        op.emitError("sl-partition needs the collectives in place: run sl-shard-pipeline (or "
                     "sl-insert-collectives) first");
        return WalkResult::interrupt();
      });
      if (unmaterialised.wasInterrupted())
        return failure();
    }
    std::string gridName = (meshOp.getSymName() + "_grid").str();
    OpBuilder b(module.getContext());
    b.setInsertionPointAfter(meshOp);
    SmallVector<int64_t> sizes;
    for (const auto &a : mesh.axes)
      sizes.push_back(a.second);
    shard::GridOp::create(b, meshOp.getLoc(), gridName, sizes);
    RankContext ctx(module.getContext(), mesh, rank, gridName);
    for (auto fn : module.getOps<func::FuncOp>())
      if (failed(partition(fn, ctx)))
        return failure();
    return success();
  }

private:
  LogicalResult partition(func::FuncOp fn, const RankContext &ctx) {
    OpBuilder b(fn.getContext());
    // Collectives first, while the layouts are on the types.
    SmallVector<SPMDOpInterface> ops;
    fn.walk([&](SPMDOpInterface op) { ops.push_back(op); });
    std::vector<std::pair<Operation *, Operation *>> pending;
    for (SPMDOpInterface op : ops) {
      b.setInsertionPoint(op);
      if (Operation *shardOp = op.buildShardCollective(b, ctx)) {
        shardOp->setAttr(kFromAttr, op->getName().getIdentifier());
        if (auto reason = op->getAttr(kReasonAttr))
          shardOp->setAttr(kReasonAttr, reason);
        pending.emplace_back(op, shardOp);
      }
    }
    for (SPMDOpInterface op : ops)
      op.resolveRankFacts(ctx);
    // Then every value gets its local type.
    for (BlockArgument arg : fn.getArguments())
      arg.setType(ctx.localType(arg));
    fn.walk([&](Operation *op) {
      for (OpResult r : op->getResults())
        if (isa<RankedTensorType>(r.getType()))
          r.setType(ctx.localType(r));
    });
    for (auto [slOp, shardOp] : pending) {
      slOp->getResult(0).replaceAllUsesWith(shardOp->getResult(0));
      slOp->erase();
    }
    SmallVector<Type> results;
    fn.walk([&](func::ReturnOp ret) {
      for (Value v : ret.getOperands())
        results.push_back(v.getType());
    });
    fn.setType(FunctionType::get(fn.getContext(), fn.getBody().getArgumentTypes(), results));
    fn->setAttr(kRankAttr, b.getI64IntegerAttr(rank));
    fn->setAttr(kRanksAttr, b.getI64IntegerAttr(mesh.numRanks()));
    return success();
  }

  ModuleOp module;
  int64_t rank;
  MeshOp meshOp;
  shardline::Mesh mesh;
};

struct SLPartition : mlir::sl::impl::SLPartitionBase<SLPartition> {
  using SLPartitionBase::SLPartitionBase;
  void runOnOperation() override {
    if (failed(Partitioner(getOperation(), rank).run()))
      signalPassFailure();
  }
};

} // namespace
