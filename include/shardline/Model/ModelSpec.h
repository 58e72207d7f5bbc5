//===- ModelSpec.h - the model spec (JSON) and its import -------*- C++ -*-===//
//
// The model spec of DESIGN §2: sizes of the model, the block pattern, one
// section per block family (read by the family, BlockFamily.h), and the
// parallel strategy. `parseModelSpec`
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
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace shardline {

/// What a spec may ask for (docs/reliability.md): each bound keeps import and
/// compilation time proportional to the graph and every size product inside
/// int64.
namespace spec_limits {
/// Bytes of spec text; a spec of kMaxBlocks letters and every section fits
/// in a small fraction of it.
constexpr size_t kMaxTextBytes = size_t(1) << 20;
/// Nested objects and arrays; a spec needs 3.
constexpr int64_t kMaxDepth = 64;
/// Problems reported for one spec; each is located by a scan of the text.
constexpr int64_t kMaxErrors = 100;
/// Blocks in the pattern: each is some ten ops of IR and of plan.
constexpr int64_t kMaxBlocks = 4096;
/// Any one size (vocab, hidden, heads, ...): products of three stay far
/// from int64 overflow.
constexpr int64_t kMaxSize = int64_t(1) << 24;
/// Elements of any one tensor the model makes: byte counts (at most 8 bytes
/// an element) and their sums over a rank's arena stay inside int64.
constexpr int64_t kMaxElements = 9'000'000'000'000'000;
} // namespace spec_limits

/// A block family's parsed section ("attention", "mamba", ...). Each family
/// (BlockFamily.h) derives its own with the sizes its block needs.
struct FamilySection {
  virtual ~FamilySection() = default;
};

struct ParallelSpec {
  int64_t dp = 1, tp = 1, cp = 1, ep = 1;
  /// Expert tensor parallelism: the expert layers' own tp, innermost.
  int64_t etp = 1;
  bool sp = false;
  /// ring | allgather | a2a | auto
  std::string cpComm = "ring";
  /// Chunk order of the sequence under context parallelism: zigzag | contiguous.
  std::string cpOrder = "zigzag";
};

/// The mesh a strategy runs on, with expert parallelism folded onto it as in
/// Megatron Core's MoE parallel folding: the world is dp*cp*tp ranks, and the
/// expert layers decompose them as etp x ep x edp, etp innermost. The
/// expert-tensor group is the etp innermost ranks that hold different tokens
/// for the MoE layers: tp (under sequence parallelism only), then cp, then
/// dp; the expert-parallel group is the ep ranks next to it (with etp = 1,
/// ep consecutive ranks, rank / ep). An axis a group covers only partly is
/// cut in two or three mesh axes, `<axis>_outer`, (`<axis>_mid`,)
/// `<axis>_inner`, one per part outside and inside the groups, which together
/// hold the same ranks in the same order.
struct StrategyMesh {
  /// The mesh axes with their sizes, major to minor (the last varies fastest).
  std::vector<std::pair<std::string, int64_t>> axes;
  /// The mesh axes that make up each of "dp", "cp" and "tp", major to minor,
  /// those of the expert group under "ep" and those of the expert-tensor
  /// group under "etp" (absent when a group is one rank).
  std::map<std::string, std::vector<std::string>> parts;

  /// The size of mesh axis `axis` (1 for one the mesh lacks).
  int64_t size(const std::string &axis) const {
    for (const auto &[name, n] : axes)
      if (name == axis)
        return n;
    return 1;
  }
};

/// Folds `p.etp` and `p.ep` onto the dp*cp*tp mesh. Returns nullopt with the
/// reason in `error` when they do not fold: ep or etp > 1 with tp > 1 without
/// sequence parallelism, or an etp, or an etp*ep, that is not a product of
/// the innermost axes times a divisor of the next one (the message lists the
/// sizes that fold).
std::optional<StrategyMesh> foldStrategyMesh(const ParallelSpec &p, std::string &error);

/// Command-line values that override the spec's "parallel" section, and
/// Megatron's MoE dispatch flags, which override keys of its "moe" section:
/// --moe-expert-capacity-factor sets moe.capacity_factor and
/// --moe-token-drop-policy moe.token_drop_policy.
struct ParallelOverrides {
  std::optional<int64_t> dp, tp, cp, ep, etp;
  std::optional<bool> sp;
  std::optional<std::string> cpComm, cpOrder;
  std::optional<double> moeCapacityFactor;
  std::optional<std::string> moeTokenDropPolicy;
};

struct ModelSpec {
  std::string name;
  std::string pattern;
  int64_t vocab = 0, hidden = 0, seq = 0, batch = 0;
  std::string dtype = "f32";
  double normEps = 1e-5;
  /// The family sections the spec gives, by pattern letter. A section may be
  /// given for a family the pattern does not use.
  std::map<char, std::shared_ptr<const FamilySection>> sections;
  ParallelSpec parallel;

  /// Where the spec came from (for diagnostics), its text, and the keys that
  /// command-line flags set (key, flag).
  std::string file;
  std::string text;
  std::vector<std::pair<std::string, std::string>> fromFlags;

  /// The section of the family with pattern letter `letter`, or null.
  const FamilySection *section(char letter) const {
    auto it = sections.find(letter);
    return it == sections.end() ? nullptr : it->second.get();
  }
};

/// Parses and validates a spec. On failure returns nullopt and appends one
/// message per problem to `errors` ("FILE:LINE:COL: key: reason").
std::optional<ModelSpec> parseModelSpec(llvm::StringRef text, llvm::StringRef file,
                                        const ParallelOverrides &overrides,
                                        std::vector<std::string> &errors);

/// "FILE:LINE:COL: " of a key path ("dtype", "attention.heads") in the spec's
/// text, "FILE: " where the text does not hold it (a default, a flag).
std::string specKeyLocation(const ModelSpec &spec, llvm::StringRef path);

/// Checks sizes against the parallel strategy (divisibility, sections).
/// Called by parseModelSpec; exposed for specs built in code.
void validateModelSpec(const ModelSpec &spec, std::vector<std::string> &errors);

/// Builds the global-view sl program of the whole model: embedding, one block
/// per pattern letter, final norm, LM head and loss, with the user layouts on
/// the inputs and parameters. Every op of block i carries `sl.block = i` and
/// `sl.family = "<letter>"`; the embedding's ops `sl.family = "embedding"`,
/// the final norm's, LM head's and loss's `sl.family = "lm_head"`. Returns null
/// after an error at the spec's location when the spec names a letter with no
/// family or no section (validateModelSpec reports those first).
mlir::OwningOpRef<mlir::ModuleOp> importModel(const ModelSpec &spec, mlir::MLIRContext &ctx);

} // namespace shardline

#endif
