//===- Analyze.cpp - the report as a pass ---------------------------------===//

#include "shardline/Analysis/Report.h"
#include "shardline/Dialect/SL/Transforms/Passes.h"

#include "mlir/Support/FileUtilities.h"
#include "llvm/Support/ToolOutputFile.h"

namespace mlir::sl {
#define GEN_PASS_DEF_SLANALYZE
#include "shardline/Dialect/SL/Transforms/Passes.h.inc"
} // namespace mlir::sl

using namespace mlir;

namespace {
struct SLAnalyze : mlir::sl::impl::SLAnalyzeBase<SLAnalyze> {
  using SLAnalyzeBase::SLAnalyzeBase;
  void runOnOperation() override {
    shardline::Report report = shardline::analyze(getOperation());
    shardline::printTable(report, llvm::outs());
    if (reportFile.empty())
      return;
    std::string error;
    auto out = openOutputFile(reportFile, &error);
    if (!out) {
      getOperation().emitError("sl-analyze: ") << error;
      return signalPassFailure();
    }
    out->os() << shardline::toJson(report) << "\n";
    out->keep();
  }
};
} // namespace
