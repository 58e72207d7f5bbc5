//===- Import.cpp - model spec -> global-view sl program ------------------===//
//
// Emits the whole model in the global view. Only the inputs and the
// parameters carry layouts (the user's layouts: batch over dp, sequence over
// cp, tensor-parallel weights over tp, experts over the expert group that ep
// folds onto, StrategyMesh in ModelSpec.h); sl-propagate-layouts derives the
// rest from the per-op rules. The blocks come from their families
// (BlockFamily.h); this file knows none of them.
//
//===----------------------------------------------------------------------===//

#include "shardline/Dialect/SL/IR/SL.h"
#include "shardline/Model/BlockFamily.h"
#include "shardline/Model/ModelSpec.h"

#include "mlir/IR/Builders.h"

#include <algorithm>

using namespace mlir;
using namespace shardline;

namespace {

Type modelElementType(const ModelSpec &spec, Builder &b) {
  if (spec.dtype == "bf16")
    return b.getBF16Type();
  if (spec.dtype == "f16")
    return b.getF16Type();
  return b.getF32Type();
}

/// A layout over the mesh axes of size > 1; one with nothing split when none
/// is. `dims` names the strategy's axes ("dp", "cp", "tp", and "ep" for the
/// expert group), each standing for the mesh axes it folds onto, major to
/// minor. `orderDim` is the sequence dimension in zigzag order, if any.
sl::LayoutAttr userLayout(const StrategyMesh &mesh, MLIRContext *ctx,
                          const std::vector<std::vector<std::string>> &dims,
                          int64_t orderDim = -1) {
  SmallVector<SmallVector<std::string>> kept;
  for (const auto &d : dims) {
    kept.emplace_back();
    for (const auto &a : d) {
      auto it = mesh.parts.find(a);
      for (const std::string &axis :
           it == mesh.parts.end() ? std::vector<std::string>{a} : it->second)
        if (mesh.size(axis) > 1)
          kept.back().push_back(axis);
    }
  }
  if (orderDim >= 0 && kept[orderDim].empty())
    orderDim = -1;
  return sl::LayoutAttr::get(ctx, FlatSymbolRefAttr::get(ctx, "mesh"), kept, {}, orderDim,
                             orderDim >= 0 ? sl::ChunkOrder::zigzag : sl::ChunkOrder::contiguous);
}

/// The mesh of the strategy. validateModelSpec refuses an ep that does not
/// fold before anything is built; should one reach here, the mesh is the
/// dense one, never undefined.
StrategyMesh strategyMesh(const ModelSpec &spec) {
  std::string error;
  if (std::optional<StrategyMesh> mesh = foldStrategyMesh(spec.parallel, error))
    return *mesh;
  ParallelSpec dense = spec.parallel;
  dense.ep = 1;
  dense.etp = 1;
  return foldStrategyMesh(dense, error).value_or(StrategyMesh{});
}

/// Stamps every op the importer inserts with the part of the model it belongs
/// to: `sl.block` (block index) and `sl.family` (the family's letter, or
/// "embedding" / "lm_head"), so later stages read them instead of parsing
/// location names.
class PartStamp : public OpBuilder::Listener {
public:
  explicit PartStamp(MLIRContext *ctx) : b(ctx) {}

  void block(int64_t index, char letter) {
    blockAttr = b.getI64IntegerAttr(index);
    familyAttr = b.getStringAttr(std::string(1, letter));
  }
  /// A part of the model outside the blocks ("embedding", "lm_head").
  void part(StringRef family) {
    blockAttr = {};
    familyAttr = b.getStringAttr(family);
  }
  void off() { blockAttr = {}, familyAttr = {}; }

  void notifyOperationInserted(Operation *op, OpBuilder::InsertPoint) override {
    if (blockAttr)
      op->setAttr(mlir::sl::kBlockAttr, blockAttr);
    if (familyAttr)
      op->setAttr(mlir::sl::kFamilyAttr, familyAttr);
  }

private:
  Builder b;
  IntegerAttr blockAttr;
  StringAttr familyAttr;
};

class Importer {
public:
  Importer(const ModelSpec &spec, MLIRContext &ctx)
      : spec(spec), ctx(ctx), b(&ctx), stamp(&ctx), elt(modelElementType(spec, b)) {}

  OwningOpRef<ModuleOp> run() {
    Location fileLoc = FileLineColLoc::get(&ctx, spec.file.empty() ? "<spec>" : spec.file, 1, 1);
    // A spec built in code may not have been validated: refuse what the
    // families cannot build, with the validator's own messages.
    std::vector<std::string> errors;
    validateModelSpec(spec, errors);
    for (const std::string &e : errors)
      emitError(fileLoc) << e;
    if (!errors.empty())
      return nullptr;

    OwningOpRef<ModuleOp> module = ModuleOp::create(fileLoc);
    // The strategy choices that are not layouts; sl-propagate-layouts reads them.
    (*module)->setAttr(mlir::sl::kSequenceParallelAttr, b.getBoolAttr(spec.parallel.sp));
    (*module)->setAttr(mlir::sl::kCPCommAttr, b.getStringAttr(spec.parallel.cpComm));
    b.setInsertionPointToEnd(module->getBody());
    const ParallelSpec &p = spec.parallel;
    StrategyMesh mesh = strategyMesh(spec);
    SmallVector<StringRef> axisNames;
    SmallVector<int64_t> axisSizes;
    for (const auto &[name, n] : mesh.axes) {
      axisNames.push_back(name);
      axisSizes.push_back(n);
    }
    sl::MeshOp::create(b, fileLoc, "mesh", b.getStrArrayAttr(axisNames),
                       b.getDenseI64ArrayAttr(axisSizes));

    bool zigzag = p.cp > 1 && p.cpOrder == "zigzag";
    auto tokenType =
        RankedTensorType::get({spec.batch, spec.seq}, b.getI32Type(),
                              userLayout(mesh, &ctx, {{"dp"}, {"cp"}}, zigzag ? 1 : -1));
    auto logitsType = RankedTensorType::get({spec.batch, spec.seq, spec.vocab}, elt);
    // The loss is f32 whatever the model's type, as Megatron computes it
    // (its cross-entropy reads 16-bit logits in f32): a 16-bit loss would
    // print, and compare under --verify, in steps of a 16-bit unit.
    auto lossType = RankedTensorType::get({}, b.getF32Type());
    auto fnType = b.getFunctionType({tokenType, tokenType}, {logitsType, lossType});
    auto fn = func::FuncOp::create(b, fileLoc, spec.name, fnType);
    fn.setArgAttr(0, mlir::sl::kNameAttr, b.getStringAttr("tokens"));
    fn.setArgAttr(1, mlir::sl::kNameAttr, b.getStringAttr("labels"));
    // The plan and the files a run writes (--save-outputs) call the results
    // by these names.
    fn.setResultAttr(0, mlir::sl::kNameAttr, b.getStringAttr("logits"));
    fn.setResultAttr(1, mlir::sl::kNameAttr, b.getStringAttr("loss"));
    Block *entry = fn.addEntryBlock();
    b.setInsertionPointToStart(entry);
    b.setListener(&stamp);

    Value ids = entry->getArgument(0), labels = entry->getArgument(1);
    int64_t h = spec.hidden, v = spec.vocab;
    stamp.part("embedding");
    BlockBuilder emb(spec, b, "", named("embedding", fileLoc));
    Value table = emb.weight("embedding.table", {v, h}, {{"tp"}, {}}, "normal", 0.02, 0);
    Value x = emb.create<sl::EmbeddingOp>(emb.act(h), ids, table);

    for (size_t i = 0; i < spec.pattern.size(); ++i) {
      char letter = spec.pattern[i];
      const BlockFamily &family = *lookupBlockFamily(letter);
      std::string prefix = "blocks." + std::to_string(i);
      stamp.block(i, letter);
      Location loc = patternLoc(i, prefix + "." + std::string(1, letter));
      // Every block is pre-norm residual: x + mixer(rms_norm(x)).
      BlockBuilder block(spec, b, prefix, loc);
      Value w = block.weight("norm", {h}, {{}}, "constant", 0, 1.0);
      Value n = block.create<sl::RMSNormOp>(block.act(h), x, w, block.f64(spec.normEps));
      BlockBuilder mixer(spec, b, prefix + "." + family.scope().str(), loc);
      Value y = family.build(mixer, *spec.section(letter), n);
      x = block.create<sl::AddOp>(block.act(h), x, y);
    }

    stamp.part("lm_head");
    BlockBuilder head(spec, b, "", named("lm_head", fileLoc));
    Value fw = head.weight("final_norm", {h}, {{}}, "constant", 0, 1.0);
    Value n = head.create<sl::RMSNormOp>(head.act(h), x, fw, head.f64(spec.normEps));
    Value headW = head.weight("lm_head", {h, v}, {{}, {"tp"}}, "normal", 0.02, 0);
    Value logits = head.create<sl::LMHeadOp>(logitsType, n, headW);
    Value loss = head.create<sl::CrossEntropyOp>(lossType, logits, labels, b.getStrArrayAttr({}));
    stamp.off();
    func::ReturnOp::create(b, head.loc(), ValueRange{logits, loss});
    b.setListener(nullptr);
    if (failed(checkTensorSizes(*module)))
      return nullptr;
    return module;
  }

private:
  /// The spec bounds each size; products of them are checked here, on the
  /// tensors the families made, so that no family has to list its own.
  LogicalResult checkTensorSizes(ModuleOp module) {
    WalkResult walk = module.walk([&](Operation *op) {
      for (Type t : op->getResultTypes()) {
        auto rt = dyn_cast<RankedTensorType>(t);
        if (!rt || !rt.hasStaticShape())
          continue;
        std::optional<int64_t> n = checkedProduct({rt.getShape().begin(), rt.getShape().end()});
        if (n && *n <= spec_limits::kMaxElements)
          continue;
        op->emitError() << op->getName() << " makes " << t << ", "
                        << (n ? std::to_string(*n) : std::string("more than 2^63"))
                        << " elements; a tensor holds at most 9e15";
        return WalkResult::interrupt();
      }
      return WalkResult::advance();
    });
    return failure(walk.wasInterrupted());
  }

  Location named(const std::string &name, Location child) {
    return NameLoc::get(b.getStringAttr(name), child);
  }

  /// The location of pattern letter `i` in the spec text, named `name`.
  /// The location of pattern letter `i` in the spec text, named `name`. A
  /// JSON string holds no line breaks, so letter i sits i columns after the
  /// first: the text is searched once, not once per block.
  Location patternLoc(size_t i, const std::string &name) {
    if (!patternStart) {
      patternStart = {1, 1};
      size_t key = spec.text.find("\"pattern\"");
      size_t open = key == std::string::npos ? key : spec.text.find('"', key + 9);
      if (open != std::string::npos) {
        size_t pos = open + 1;
        size_t ls = spec.text.rfind('\n', pos);
        patternStart = {1 + (unsigned)std::count(spec.text.begin(), spec.text.begin() + pos, '\n'),
                        (unsigned)(pos - (ls == std::string::npos ? 0 : ls + 1))};
        patternFound = true;
      }
    }
    auto [line, col] = *patternStart;
    return NameLoc::get(b.getStringAttr(name),
                        FileLineColLoc::get(&ctx, spec.file.empty() ? "<spec>" : spec.file, line,
                                            patternFound ? col + 1 + (unsigned)i : 1));
  }

  /// Line and 0-based column of the pattern's first letter, when the text
  /// has one; else every letter is at 1:1.
  std::optional<std::pair<unsigned, unsigned>> patternStart;
  bool patternFound = false;

  const ModelSpec &spec;
  MLIRContext &ctx;
  OpBuilder b;
  PartStamp stamp;
  Type elt;
};

} // namespace

BlockBuilder::BlockBuilder(const ModelSpec &spec, OpBuilder &builder, StringRef scope, Location loc)
    : modelSpec(spec), mesh(strategyMesh(spec)), b(builder), scope(scope.str()), blockLoc(loc),
      elt(modelElementType(spec, builder)) {}

RankedTensorType BlockBuilder::tensor(ArrayRef<int64_t> shape) const {
  return RankedTensorType::get(shape, elt);
}

RankedTensorType BlockBuilder::act(int64_t width, Type type) const {
  return RankedTensorType::get({modelSpec.batch, modelSpec.seq, width}, type ? type : elt);
}

std::string BlockBuilder::scoped(StringRef name) const {
  return scope.empty() ? name.str() : scope + "." + name.str();
}

Location BlockBuilder::named(StringRef name) const {
  // Named after the parameter, at the block's place in the spec.
  Location child = blockLoc;
  if (auto n = dyn_cast<NameLoc>(child))
    child = n.getChildLoc();
  return NameLoc::get(StringAttr::get(b.getContext(), scoped(name)), child);
}

Value BlockBuilder::weight(StringRef name, ArrayRef<int64_t> shape, Dims dims, StringRef init,
                           double scale, double offset) {
  auto type = RankedTensorType::get(shape, elt, userLayout(mesh, b.getContext(), std::move(dims)));
  return sl::WeightOp::create(b, named(name), type, b.getStringAttr(scoped(name)),
                              b.getStringAttr(init), b.getF64FloatAttr(scale),
                              b.getF64FloatAttr(offset));
}

Value BlockBuilder::linear(Value x, StringRef name, int64_t in, int64_t out, Parallel p) {
  Dims dims = p == Parallel::Row      ? Dims{{"tp"}, {}}
              : p == Parallel::Column ? Dims{{}, {"tp"}}
                                      : Dims{{}, {}};
  Value w = weight(name, {in, out}, dims, "normal", 0.02, 0);
  return sl::LinearOp::create(b, named(name), act(out), x, w);
}

Value BlockBuilder::conv(Value x, StringRef name, int64_t channels, int64_t width) {
  Value w = weight((name + ".weight").str(), {channels, width}, {{"tp"}, {}}, "normal", 0.2, 0);
  Value bias = weight((name + ".bias").str(), {channels}, {{"tp"}}, "constant", 0, 0);
  return create<sl::CausalConv1dOp>(act(channels), x, w, bias, Value());
}

OwningOpRef<ModuleOp> shardline::importModel(const ModelSpec &spec, MLIRContext &ctx) {
  ctx.getOrLoadDialect<sl::SLDialect>();
  ctx.getOrLoadDialect<func::FuncDialect>();
  return Importer(spec, ctx).run();
}
