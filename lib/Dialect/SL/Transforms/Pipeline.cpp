//===- Pipeline.cpp - the sharding pipeline -------------------------------===//

#include "shardline/Dialect/SL/Transforms/Passes.h"

#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;

void sl::buildShardPipeline(OpPassManager &pm, const std::string &machineFile) {
  SLChooseCPCommOptions choose;
  choose.machineFile = machineFile;
  pm.addPass(createSLChooseCPComm(choose));
  pm.addPass(createSLPropagateLayouts());
  pm.addPass(createSLInsertCollectives());
  // The strategy chose where activations are split; elision may send fewer
  // bytes but never at the price of a higher activation peak.
  SLElideGathersOptions elide;
  elide.keepPeak = true;
  pm.addPass(createSLElideGathers(elide));
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
}

void sl::registerShardPipeline() {
  PassPipelineRegistration<>("sl-shard-pipeline",
                             "Propagate layouts, insert collectives, elide premature gathers",
                             [](OpPassManager &pm) { buildShardPipeline(pm); });
}
