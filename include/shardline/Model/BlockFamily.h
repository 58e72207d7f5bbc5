//===- BlockFamily.h - the block families of the model spec ------*- C++ -*-===//
//
// A block family (attention, local attention, Mamba-2, MoE, RG-LRU, dense
// MLP) states in one place, its file under lib/Model/Families/: its pattern
// letter, the name of its model-spec section, how to read that section, the
// rules it checks against the rest of the spec, and the sl ops of its block. The parser, the
// validator and the importer walk the registry, which the build makes from
// the files there, and know no family by name.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_MODEL_BLOCKFAMILY_H
#define SHARDLINE_MODEL_BLOCKFAMILY_H

#include "shardline/Model/ModelSpec.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/JSON.h"

#include <memory>
#include <string>
#include <vector>

namespace shardline {

/// Reads typed values out of the spec's JSON and reports every problem with
/// its key path, located in the spec's text ("FILE:LINE:COL: key: reason"), or
/// at the flag that set it ("command line: --tp: ...").
class SpecReader {
public:
  SpecReader(const ModelSpec &spec, std::vector<std::string> &errors)
      : spec(spec), errors(errors) {}

  /// Reports a problem with the key at `path` ("attention.heads"; "" for the
  /// whole spec).
  void error(llvm::StringRef path, const llvm::Twine &msg);

  /// A positive integer under `key`; `required` reports a missing key.
  int64_t positive(const llvm::json::Object &o, llvm::StringRef prefix, llvm::StringRef key,
                   bool required, int64_t fallback = 0);
  std::string string(const llvm::json::Object &o, llvm::StringRef prefix, llvm::StringRef key,
                     bool required, std::string fallback = "");
  /// A positive number; absent keys take `fallback`.
  double number(const llvm::json::Object &o, llvm::StringRef prefix, llvm::StringRef key,
                double fallback);
  bool boolean(const llvm::json::Object &o, llvm::StringRef prefix, llvm::StringRef key,
               bool fallback);
  /// The object under `key`; null when it is absent, or not an object (reported).
  const llvm::json::Object *section(const llvm::json::Object &o, llvm::StringRef key);
  /// Reports every key of `o` that is not in `known`.
  void unknownKeys(const llvm::json::Object &o, llvm::StringRef prefix,
                   llvm::ArrayRef<llvm::StringRef> known);
  /// Reports `key` when `value` is not a multiple of `by` (named `byWhat`).
  void divisible(llvm::StringRef key, int64_t value, int64_t by, const llvm::Twine &byWhat);

private:
  const ModelSpec &spec;
  std::vector<std::string> &errors;
};

/// Builds the ops of one block in the global view: the names, locations and
/// user layouts every family's parameters follow. Parameters are named
/// `<scope>.<name>` ("blocks.3.attn.wq"); ops are located at the block.
class BlockBuilder {
public:
  BlockBuilder(const ModelSpec &spec, mlir::OpBuilder &builder, llvm::StringRef scope,
               mlir::Location loc);

  const ModelSpec &spec() const { return modelSpec; }
  mlir::OpBuilder &builder() { return b; }
  mlir::Location loc() const { return blockLoc; }

  /// Creates an op at the block's location.
  template <typename OpT, typename... Args> OpT create(Args &&...args) {
    return OpT::create(b, blockLoc, std::forward<Args>(args)...);
  }

  /// A tensor of the model's element type with no layout.
  mlir::RankedTensorType tensor(llvm::ArrayRef<int64_t> shape) const;
  /// An activation [batch, seq, width] with no layout yet (propagation assigns
  /// it); of the model's element type unless `type` is given.
  mlir::RankedTensorType act(int64_t width, mlir::Type type = {}) const;

  mlir::IntegerAttr i64(int64_t v) { return b.getI64IntegerAttr(v); }
  mlir::FloatAttr f64(double v) { return b.getF64FloatAttr(v); }

  /// Axes splitting each dimension of a parameter, major to minor: "dp",
  /// "cp", "tp", and "ep" for the expert group, each standing for the mesh
  /// axes it folds onto (StrategyMesh); axes of size 1 are dropped from the
  /// layout.
  using Dims = std::vector<std::vector<std::string>>;

  /// An sl.weight `<scope>.<name>` with the user layout `dims`, initialised by
  /// `init` ("normal", "uniform", "constant") with `scale` and `offset`.
  mlir::Value weight(llvm::StringRef name, llvm::ArrayRef<int64_t> shape, Dims dims,
                     llvm::StringRef init, double scale, double offset);

  /// Megatron's tensor-parallel linears: column-parallel into a block (output
  /// features over tp), row-parallel out of it (input features over tp); or a
  /// replicated weight (a router, which every rank applies to its own tokens).
  enum class Parallel { Column, Row, Replicated };
  /// x [.., in] @ `<scope>.<name>` [in, out], named after the weight.
  mlir::Value linear(mlir::Value x, llvm::StringRef name, int64_t in, int64_t out, Parallel p);
  /// A causal depthwise conv1d of `channels` channels and `width` taps, with
  /// `<scope>.<name>.weight` and `.bias` split over tp by channel.
  mlir::Value conv(mlir::Value x, llvm::StringRef name, int64_t channels, int64_t width);

  /// `<scope>.<name>` as a location.
  mlir::Location named(llvm::StringRef name) const;

private:
  std::string scoped(llvm::StringRef name) const;

  const ModelSpec &modelSpec;
  StrategyMesh mesh;
  mlir::OpBuilder &b;
  std::string scope;
  mlir::Location blockLoc;
  mlir::Type elt;
};

/// One block family. Implementations live in lib/Model/Families/, one file
/// each: Families/<Name>.cpp defines `const BlockFamily &get<Name>Family()`,
/// and the build lists every file there for the registry.
class BlockFamily {
public:
  /// `scope` names the block's parameters: blocks.<i>.<scope>.<name>.
  BlockFamily(char letter, llvm::StringRef section, llvm::StringRef scope)
      : familyLetter(letter), sectionName(section), scopeName(scope) {}
  virtual ~BlockFamily() = default;

  /// The pattern letter ('A').
  char letter() const { return familyLetter; }
  /// The model-spec section the family reads ("attention").
  llvm::StringRef section() const { return sectionName; }
  /// The name scope of the block's parameters ("attn").
  llvm::StringRef scope() const { return scopeName; }

  /// Reads the family's section: its keys, types and defaults. Problems go
  /// through `r`, which locates them.
  virtual std::unique_ptr<FamilySection> parse(SpecReader &r,
                                               const llvm::json::Object &section) const = 0;
  /// Checks the section against the rest of the spec (sizes against the
  /// parallel strategy). Runs when the pattern uses the family's letter.
  virtual void validate(SpecReader &r, const FamilySection &section,
                        const ModelSpec &spec) const = 0;
  /// Elements of the largest tensor the block makes when that is larger than
  /// the model's own (logits), so the spec can refuse sizes that overflow.
  virtual double largestTensor(const FamilySection &section, const ModelSpec &spec) const {
    return 0;
  }
  /// A line for `shardline-compile --emit summary` on how the block runs
  /// under the spec's strategy ("experts: capacity factor 1.25, ..."); empty
  /// when the sizes say all there is.
  virtual std::string summary(const FamilySection &section, const ModelSpec &spec) const {
    return "";
  }
  /// Builds the block's mixer from the normalised stream `x` ([batch, seq,
  /// hidden]) to its output of the same shape; the importer adds the residual.
  virtual mlir::Value build(BlockBuilder &b, const FamilySection &section, mlir::Value x) const = 0;

private:
  char familyLetter;
  std::string sectionName, scopeName;
};

/// Every family, in the alphabetical order of their letters.
llvm::ArrayRef<const BlockFamily *> blockFamilies();
/// The family of a pattern letter, or null.
const BlockFamily *lookupBlockFamily(char letter);
/// The known letters for messages: "A, E, F, L, M or R".
std::string blockLetterList();

/// Ends Families/<Name>.cpp, whose family is the class <Name>: defines
/// get<Name>Family(), through which the registry reaches it (the build lists
/// the files and the registry calls one function per file).
#define SHARDLINE_BLOCK_FAMILY_FILE(Name)                                                          \
  namespace shardline {                                                                            \
  const BlockFamily &get##Name##Family() {                                                         \
    static const Name family;                                                                      \
    return family;                                                                                 \
  }                                                                                                \
  }

} // namespace shardline

#endif
