//===- InsertCollectives.cpp - sl.relayout -> collectives -----------------===//

#include "shardline/Dialect/SL/IR/Relayout.h"
#include "shardline/Dialect/SL/IR/SL.h"
#include "shardline/Dialect/SL/Transforms/Passes.h"

namespace mlir::sl {
#define GEN_PASS_DEF_SLINSERTCOLLECTIVES
#include "shardline/Dialect/SL/Transforms/Passes.h.inc"
} // namespace mlir::sl

using namespace mlir;
using namespace mlir::sl;

namespace {

struct SLInsertCollectives : mlir::sl::impl::SLInsertCollectivesBase<SLInsertCollectives> {
  using SLInsertCollectivesBase::SLInsertCollectivesBase;
  void runOnOperation() override {
    SmallVector<RelayoutOp> relayouts;
    getOperation().walk([&](RelayoutOp op) { relayouts.push_back(op); });
    for (RelayoutOp op : relayouts) {
      OpBuilder b(op);
      std::string error;
      FailureOr<Value> lowered =
          emitRelayout(b, op.getLoc(), op.getX(), toLayout(getLayout(op.getResult())),
                       op->getAttrOfType<StringAttr>(kReasonAttr), error);
      if (failed(lowered)) {
        op.emitOpError() << error;
        return signalPassFailure();
      }
      op.getResult().replaceAllUsesWith(*lowered);
      op->erase();
    }
  }
};

} // namespace
