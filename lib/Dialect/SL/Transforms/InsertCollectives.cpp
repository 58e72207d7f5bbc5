//===- InsertCollectives.cpp - sl.relayout -> collectives -----------------===//

#include "shardline/Dialect/SL/IR/Relayout.h"
#include "shardline/Dialect/SL/IR/SL.h"
#include "shardline/Dialect/SL/Transforms/Passes.h"

#include <map>

namespace mlir::sl {
#define GEN_PASS_DEF_SLINSERTCOLLECTIVES
#include "shardline/Dialect/SL/Transforms/Passes.h.inc"
} // namespace mlir::sl

using namespace mlir;
using namespace mlir::sl;

using shardline::Layout;

namespace {

struct SLInsertCollectives : mlir::sl::impl::SLInsertCollectivesBase<SLInsertCollectives> {
  using SLInsertCollectivesBase::SLInsertCollectivesBase;
  void runOnOperation() override {
    SmallVector<RelayoutOp> relayouts;
    getOperation().walk([&](RelayoutOp op) { relayouts.push_back(op); });
    // Relayouts repeat block after block: each distinct change of one tensor
    // type is planned once.
    std::map<std::string, std::vector<RelayoutStep>> plans;
    for (RelayoutOp op : relayouts) {
      OpBuilder b(op);
      auto type = op.getX().getType();
      Layout from = toLayout(getLayout(op.getX())), to = toLayout(getLayout(op.getResult()));
      MeshOp meshOp = lookupMesh(op, getLayout(op.getX()));
      if (!meshOp) {
        op.emitOpError("refers to an unknown mesh");
        return signalPassFailure();
      }
      std::string key = from.str() + "|" + to.str() + "|" + std::to_string(elementBytesOf(type));
      for (int64_t d : type.getShape())
        key += "x" + std::to_string(d);
      auto [it, inserted] = plans.try_emplace(key);
      if (inserted) {
        std::string error;
        std::vector<int64_t> shape(type.getShape().begin(), type.getShape().end());
        it->second = planRelayout(from, to, toMesh(meshOp), shape, elementBytesOf(type), error);
        if (!error.empty()) {
          op.emitOpError() << error;
          return signalPassFailure();
        }
      }
      Value lowered = emitSteps(b, op.getLoc(), op.getX(), it->second,
                                op->getAttrOfType<StringAttr>(kReasonAttr),
                                op->getAttrOfType<StringAttr>(kGatherReasonAttr));
      op.getResult().replaceAllUsesWith(lowered);
      op->erase();
    }
  }
};

} // namespace
