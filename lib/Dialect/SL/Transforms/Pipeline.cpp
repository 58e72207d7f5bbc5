//===- Pipeline.cpp - the sharding pipeline -------------------------------===//

#include "shardline/Dialect/SL/Transforms/Passes.h"

#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;

void sl::buildShardPipeline(OpPassManager &pm, const std::string &machineFile, bool train,
                            bool saveGathered, bool gradReduceInBf16) {
  SLChooseCPCommOptions choose;
  choose.machineFile = machineFile;
  pm.addPass(createSLChooseCPComm(choose));
  pm.addPass(createSLPropagateLayouts());
  pm.addPass(createSLInsertCollectives());
  // The backward is built on the forward's layouts and collectives, so that
  // elision places the transitions of both at once.
  if (train) {
    SLAutodiffOptions autodiff;
    autodiff.saveGathered = saveGathered;
    autodiff.gradReduceInBf16 = gradReduceInBf16;
    pm.addPass(createSLAutodiff(autodiff));
  }
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
  PassPipelineRegistration<>(
      "sl-train-pipeline",
      "sl-shard-pipeline with sl-autodiff after the forward's collectives (a training step)",
      [](OpPassManager &pm) { buildShardPipeline(pm, "", true); });
}
