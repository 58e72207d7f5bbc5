//===- ModelSpec.h - the model spec (JSON) and its import -------*- C++ -*-===//
//
// The model spec of DESIGN §2: sizes of the model, the block pattern, one
// section per block family, and the parallel strategy. `parseModelSpec`
// reports every problem with the key, the rule and, where the key is found in
// the text, its line and column.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_MODEL_MODELSPEC_H
#define SHARDLINE_MODEL_MODELSPEC_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/ADT/StringRef.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace shardline {

struct AttentionSpec {
  int64_t heads = 0, kvHeads = 0, headDim = 0;
  double ropeTheta = 10000.0;
};
struct MambaSpec {
  int64_t heads = 0, headDim = 0, state = 0, groups = 0, conv = 0;
};
struct MoESpec {
  int64_t experts = 0, topK = 0, ffnHidden = 0;
};
struct MLPSpec {
  int64_t ffnHidden = 0;
};
struct RecurrentSpec {
  int64_t width = 0, conv = 0;
};

struct ParallelSpec {
  int64_t dp = 1, tp = 1, cp = 1, ep = 1;
  bool sp = false;
  /// ring | allgather | a2a | auto
  std::string cpComm = "ring";
  /// Chunk order of the sequence under context parallelism: zigzag | contiguous.
  std::string cpOrder = "zigzag";
};

/// Command-line values that override the spec's "parallel" section.
struct ParallelOverrides {
  std::optional<int64_t> dp, tp, cp, ep;
  std::optional<bool> sp;
  std::optional<std::string> cpComm, cpOrder;
};

struct ModelSpec {
  std::string name;
  std::string pattern;
  int64_t vocab = 0, hidden = 0, seq = 0, batch = 0;
  std::string dtype = "f32";
  double normEps = 1e-5;
  std::optional<AttentionSpec> attention;
  std::optional<MambaSpec> mamba;
  std::optional<MoESpec> moe;
  std::optional<MLPSpec> mlp;
  std::optional<RecurrentSpec> recurrent;
  ParallelSpec parallel;

  /// Where the spec came from (for diagnostics), its text, and the keys that
  /// command-line flags set (key, flag).
  std::string file;
  std::string text;
  std::vector<std::pair<std::string, std::string>> fromFlags;
};

/// Parses and validates a spec. On failure returns nullopt and appends one
/// message per problem to `errors` ("FILE:LINE:COL: key: reason").
std::optional<ModelSpec> parseModelSpec(llvm::StringRef text, llvm::StringRef file,
                                        const ParallelOverrides &overrides,
                                        std::vector<std::string> &errors);

/// Checks sizes against the parallel strategy (divisibility, sections).
/// Called by parseModelSpec; exposed for specs built in code.
void validateModelSpec(const ModelSpec &spec, std::vector<std::string> &errors);

/// Builds the global-view sl program of the whole model: embedding, one block
/// per pattern letter, final norm, LM head and loss, with the user layouts on
/// the inputs and parameters.
mlir::OwningOpRef<mlir::ModuleOp> importModel(const ModelSpec &spec, mlir::MLIRContext &ctx);

} // namespace shardline

#endif
