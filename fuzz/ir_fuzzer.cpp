//===- ir_fuzzer.cpp - libFuzzer target: sl IR through the shard pipeline ---===//
//
// Any bytes are parsed as sl IR; a module that verifies goes through
// sl-shard-pipeline and, when that succeeds, the report and the plan emitter
// (what `shardline-compile --emit plan` does). Every stage may refuse the
// input with a diagnostic; none may crash or hang.
//
//===----------------------------------------------------------------------===//

#include "shardline/Analysis/Report.h"
#include "shardline/Dialect/SL/Transforms/Passes.h"
#include "shardline/InitAll.h"
#include "shardline/Plan/EmitPlan.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/SourceMgr.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static mlir::DialectRegistry *registry = [] {
    auto *r = new mlir::DialectRegistry;
    shardline::registerAllDialects(*r);
    shardline::registerAllPasses();
    return r;
  }();
  // A context per input: attributes and types interned by one input must not
  // pile up over millions of runs.
  mlir::MLIRContext ctx(*registry, mlir::MLIRContext::Threading::DISABLED);
  ctx.loadAllAvailableDialects();
  // Diagnostics are the expected outcome for most inputs; keep them quiet.
  ctx.getDiagEngine().registerHandler([](mlir::Diagnostic &) { return mlir::success(); });
  llvm::SourceMgr sourceMgr;
  sourceMgr.AddNewSourceBuffer(
      llvm::MemoryBuffer::getMemBufferCopy(
          llvm::StringRef(reinterpret_cast<const char *>(data), size), "fuzz.mlir"),
      llvm::SMLoc());
  mlir::OwningOpRef<mlir::ModuleOp> module = mlir::parseSourceFile<mlir::ModuleOp>(sourceMgr, &ctx);
  if (!module || mlir::failed(mlir::verify(*module)))
    return 0;
  mlir::PassManager pm(&ctx);
  mlir::sl::buildShardPipeline(pm);
  if (mlir::failed(pm.run(*module)))
    return 0;
  shardline::Report report = shardline::analyze(*module);
  (void)shardline::emitPlan(*module, report);
  return 0;
}
