//===- TestPrintShardingRules.cpp - every op's rule as a remark -----------===//

#include "shardline/Dialect/SL/IR/SL.h"
#include "shardline/Dialect/SL/Transforms/Passes.h"

#include "llvm/ADT/StringSet.h"

namespace mlir::sl {
#define GEN_PASS_DEF_SLTESTPRINTSHARDINGRULES
#include "shardline/Dialect/SL/Transforms/Passes.h.inc"
} // namespace mlir::sl

using namespace mlir;
using namespace mlir::sl;

namespace {

struct SLTestPrintShardingRules
    : mlir::sl::impl::SLTestPrintShardingRulesBase<SLTestPrintShardingRules> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    llvm::StringSet<> seen;
    module.walk([&](ShardingRuleOpInterface op) {
      seen.insert(op->getName().getStringRef());
      op->emitRemark() << op->getName() << ": " << op.getShardingRule().describe();
    });
    std::vector<std::string> missing;
    size_t withRule = 0;
    for (RegisteredOperationName name : getContext().getRegisteredOperations()) {
      if (name.getDialectNamespace() != SLDialect::getDialectNamespace() ||
          !name.hasInterface<ShardingRuleOpInterface>())
        continue;
      ++withRule;
      if (!seen.contains(name.getStringRef()))
        missing.push_back(name.getStringRef().str());
    }
    InFlightDiagnostic d = module.emitRemark()
                           << "sharding rules of " << (withRule - missing.size()) << " of "
                           << withRule << " sl ops with a rule";
    if (!missing.empty()) {
      d << "; not instantiated:";
      for (const auto &m : missing)
        d << " " << m;
    }
  }
};

} // namespace
