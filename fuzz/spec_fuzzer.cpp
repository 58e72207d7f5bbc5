//===- spec_fuzzer.cpp - libFuzzer target: model-spec import --------------===//
//
// Any bytes go through parseModelSpec; a spec it accepts must import into a
// program that verifies (the importer's contract). Refusals are fine, crashes,
// hangs and an accepted spec that imports to an invalid program are not.
//
//===----------------------------------------------------------------------===//

#include "shardline/InitAll.h"
#include "shardline/Model/ModelSpec.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"

#include <cstdio>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static mlir::DialectRegistry *registry = [] {
    auto *r = new mlir::DialectRegistry;
    shardline::registerAllDialects(*r);
    return r;
  }();
  llvm::StringRef text(reinterpret_cast<const char *>(data), size);
  std::vector<std::string> errors;
  std::optional<shardline::ModelSpec> spec =
      shardline::parseModelSpec(text, "fuzz.json", {}, errors);
  if (!spec) {
    if (errors.empty()) {
      std::fprintf(stderr, "spec refused without a message\n");
      std::abort();
    }
    return 0;
  }
  // A context per input: attributes and types interned by one input must not
  // pile up over millions of runs.
  mlir::MLIRContext ctx(*registry, mlir::MLIRContext::Threading::DISABLED);
  std::string diagnostics;
  ctx.getDiagEngine().registerHandler([&](mlir::Diagnostic &d) {
    diagnostics += d.str() + "\n";
    return mlir::success();
  });
  mlir::OwningOpRef<mlir::ModuleOp> module = shardline::importModel(*spec, ctx);
  if (!module) {
    // Refused at import (a tensor over the size limit): fine when it said why.
    if (diagnostics.empty()) {
      std::fprintf(stderr, "import failed without a message\n");
      std::abort();
    }
    return 0;
  }
  if (mlir::failed(mlir::verify(*module))) {
    std::fprintf(stderr, "an accepted spec imports to a program that does not verify:\n%s",
                 diagnostics.c_str());
    std::abort();
  }
  return 0;
}
