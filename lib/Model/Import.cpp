//===- Import.cpp - model spec -> global-view sl program ------------------===//
//
// Emits the whole model in the global view. Only the inputs and the
// parameters carry layouts (the user's layouts: batch over dp and ep,
// sequence over cp, tensor-parallel weights over tp, experts over ep);
// sl-propagate-layouts derives the rest from the per-op rules.
//
//===----------------------------------------------------------------------===//

#include "shardline/Analysis/Report.h"
#include "shardline/Dialect/SL/IR/SL.h"
#include "shardline/Model/ModelSpec.h"

#include "mlir/IR/Builders.h"

#include <optional>

using namespace mlir;
using namespace shardline;

namespace {

class Importer {
public:
  Importer(const ModelSpec &spec, MLIRContext &ctx) : spec(spec), ctx(ctx), b(&ctx) {
    const ParallelSpec &p = spec.parallel;
    sizes = {{"dp", p.dp}, {"ep", p.ep}, {"cp", p.cp}, {"tp", p.tp}};
    if (spec.dtype == "bf16")
      elt = b.getBF16Type();
    else if (spec.dtype == "f16")
      elt = b.getF16Type();
    else
      elt = b.getF32Type();
    meshRef = FlatSymbolRefAttr::get(&ctx, "mesh");
  }

  OwningOpRef<ModuleOp> run() {
    Location fileLoc = FileLineColLoc::get(&ctx, spec.file.empty() ? "<spec>" : spec.file, 1, 1);
    OwningOpRef<ModuleOp> module = ModuleOp::create(fileLoc);
    // The strategy choices that are not layouts; sl-propagate-layouts reads them.
    (*module)->setAttr("sl.sequence_parallel", b.getBoolAttr(spec.parallel.sp));
    (*module)->setAttr("sl.cp_comm", b.getStringAttr(spec.parallel.cpComm));
    b.setInsertionPointToEnd(module->getBody());
    SmallVector<Attribute> axes;
    SmallVector<int64_t> axisSizes;
    for (auto &[name, n] : sizes) {
      axes.push_back(b.getStringAttr(name));
      axisSizes.push_back(n);
    }
    sl::MeshOp::create(b, fileLoc, "mesh", b.getArrayAttr(axes), b.getDenseI64ArrayAttr(axisSizes));

    const ParallelSpec &p = spec.parallel;
    std::vector<std::string> batchAxes{"dp", "ep"}, seqAxes{"cp"};
    bool zigzag = p.cp > 1 && p.cpOrder == "zigzag";
    auto tokenType = RankedTensorType::get({spec.batch, spec.seq}, b.getI32Type(),
                                           layout({batchAxes, seqAxes}, zigzag ? 1 : -1));
    auto logitsType = RankedTensorType::get({spec.batch, spec.seq, spec.vocab}, elt);
    auto lossType = RankedTensorType::get({}, elt);
    auto fnType = b.getFunctionType({tokenType, tokenType}, {logitsType, lossType});
    auto fn = func::FuncOp::create(b, fileLoc, spec.name, fnType);
    fn.setArgAttr(0, "sl.name", b.getStringAttr("tokens"));
    fn.setArgAttr(1, "sl.name", b.getStringAttr("labels"));
    Block *entry = fn.addEntryBlock();
    b.setInsertionPointToStart(entry);

    Value ids = entry->getArgument(0), labels = entry->getArgument(1);
    int64_t h = spec.hidden, v = spec.vocab;
    Location embLoc = named("embedding", fileLoc);
    Value table = weight("embedding.table", {v, h}, {{"tp"}, {}}, "normal", 0.02, 0, embLoc);
    Value x = sl::EmbeddingOp::create(b, embLoc, act(h), ids, table);
    Operation *stamped = nullptr;
    stampSince(entry, stamped, std::nullopt, "embedding");

    for (size_t i = 0; i < spec.pattern.size(); ++i) {
      char letter = spec.pattern[i];
      std::string prefix = "blocks." + std::to_string(i);
      Location loc = patternLoc(i, prefix + "." + std::string(1, letter));
      Value w = weight(prefix + ".norm", {h}, {{}}, "constant", 0, 1.0, loc);
      Value n = sl::RMSNormOp::create(b, loc, act(h), x, w, b.getF64FloatAttr(spec.normEps));
      Value y;
      switch (letter) {
      case 'A':
        y = attention(n, prefix + ".attn", loc);
        break;
      case 'M':
        y = mamba(n, prefix + ".mamba", loc);
        break;
      case 'E':
        y = moe(n, prefix + ".moe", loc);
        break;
      case 'R':
        y = recurrent(n, prefix + ".rglru", loc);
        break;
      default:
        y = mlp(n, prefix + ".mlp", loc);
        break;
      }
      x = sl::AddOp::create(b, loc, act(h), x, y);
      stampSince(entry, stamped, (int64_t)i, std::string(1, letter));
    }

    Location headLoc = named("lm_head", fileLoc);
    Value fw = weight("final_norm", {h}, {{}}, "constant", 0, 1.0, headLoc);
    Value n = sl::RMSNormOp::create(b, headLoc, act(h), x, fw, b.getF64FloatAttr(spec.normEps));
    Value head = weight("lm_head", {h, v}, {{}, {"tp"}}, "normal", 0.02, 0, headLoc);
    Value logits = sl::LMHeadOp::create(b, headLoc, logitsType, n, head);
    Value loss =
        sl::CrossEntropyOp::create(b, headLoc, lossType, logits, labels, b.getStrArrayAttr({}));
    func::ReturnOp::create(b, headLoc, ValueRange{logits, loss});
    stampSince(entry, stamped, std::nullopt, "lm_head");
    return module;
  }

private:
  /// A layout over the axes that exist (size > 1); nullptr when nothing is split.
  sl::LayoutAttr layout(std::vector<std::vector<std::string>> dims, int64_t orderDim = -1) {
    SmallVector<SmallVector<std::string>> kept;
    for (const auto &d : dims) {
      kept.emplace_back();
      for (const auto &a : d)
        if (size(a) > 1)
          kept.back().push_back(a);
    }
    if (orderDim >= 0 && kept[orderDim].empty())
      orderDim = -1;
    return sl::LayoutAttr::get(&ctx, meshRef, kept, {}, orderDim,
                               orderDim >= 0 ? sl::ChunkOrder::zigzag : sl::ChunkOrder::contiguous);
  }

  int64_t size(const std::string &axis) const {
    for (auto &[name, n] : sizes)
      if (name == axis)
        return n;
    return 1;
  }

  /// An activation [batch, seq, width] with no layout yet.
  RankedTensorType act(int64_t width) {
    return RankedTensorType::get({spec.batch, spec.seq, width}, elt);
  }
  RankedTensorType act2(int64_t width) {
    return RankedTensorType::get({spec.batch, spec.seq, width}, b.getI32Type());
  }

  Value weight(const std::string &name, ArrayRef<int64_t> shape,
               std::vector<std::vector<std::string>> dims, StringRef init, double scale,
               double offset, Location loc) {
    auto type = RankedTensorType::get(shape, elt, layout(std::move(dims)));
    return sl::WeightOp::create(b, named(name, loc), type, b.getStringAttr(name),
                                b.getStringAttr(init), b.getF64FloatAttr(scale),
                                b.getF64FloatAttr(offset));
  }

  Value linear(Value x, const std::string &name, int64_t in, int64_t out, bool rowParallel,
               Location loc) {
    std::vector<std::vector<std::string>> dims =
        rowParallel ? std::vector<std::vector<std::string>>{{"tp"}, {}}
                    : std::vector<std::vector<std::string>>{{}, {"tp"}};
    Value w = weight(name, {in, out}, dims, "normal", 0.02, 0, loc);
    return sl::LinearOp::create(b, named(name, loc), act(out), x, w);
  }

  Value attention(Value n, const std::string &p, Location loc) {
    const AttentionSpec &a = *spec.attention;
    int64_t h = spec.hidden, qw = a.heads * a.headDim, kw = a.kvHeads * a.headDim;
    Value q = linear(n, p + ".wq", h, qw, false, loc);
    Value k = linear(n, p + ".wk", h, kw, false, loc);
    Value v = linear(n, p + ".wv", h, kw, false, loc);
    auto theta = b.getF64FloatAttr(a.ropeTheta);
    q = sl::RopeOp::create(b, loc, act(qw), q, b.getI64IntegerAttr(a.headDim), theta);
    k = sl::RopeOp::create(b, loc, act(kw), k, b.getI64IntegerAttr(a.headDim), theta);
    Value o =
        sl::AttentionOp::create(b, loc, act(qw), q, k, v, b.getI64IntegerAttr(a.heads),
                                b.getI64IntegerAttr(a.kvHeads), b.getBoolAttr(true), FloatAttr());
    return linear(o, p + ".wo", qw, h, true, loc);
  }

  Value conv(Value x, const std::string &p, int64_t channels, int64_t width, Location loc) {
    Value w = weight(p + ".weight", {channels, width}, {{"tp"}, {}}, "normal", 0.2, 0, loc);
    Value bias = weight(p + ".bias", {channels}, {{"tp"}}, "constant", 0, 0, loc);
    return sl::CausalConv1dOp::create(b, loc, act(channels), x, w, bias, Value());
  }

  Value mamba(Value n, const std::string &p, Location loc) {
    const MambaSpec &m = *spec.mamba;
    int64_t h = spec.hidden, inner = m.heads * m.headDim, bc = m.groups * m.state;
    Value z = linear(n, p + ".w_z", h, inner, false, loc);
    Value xs = linear(n, p + ".w_x", h, inner, false, loc);
    Value bm = linear(n, p + ".w_B", h, bc, false, loc);
    Value cm = linear(n, p + ".w_C", h, bc, false, loc);
    Value dt = linear(n, p + ".w_dt", h, m.heads, false, loc);
    xs = sl::SiLUOp::create(b, loc, act(inner), conv(xs, p + ".conv_x", inner, m.conv, loc));
    bm = sl::SiLUOp::create(b, loc, act(bc), conv(bm, p + ".conv_B", bc, m.conv, loc));
    cm = sl::SiLUOp::create(b, loc, act(bc), conv(cm, p + ".conv_C", bc, m.conv, loc));
    Value aLog = weight(p + ".a_log", {m.heads}, {{"tp"}}, "uniform", 1.0, 0, loc);
    Value d = weight(p + ".d", {m.heads}, {{"tp"}}, "constant", 0, 1.0, loc);
    Value dtBias = weight(p + ".dt_bias", {m.heads}, {{"tp"}}, "uniform", 2.0, -4.0, loc);
    auto stateType = RankedTensorType::get({spec.batch, m.heads, m.headDim, m.state}, elt);
    auto decayType = RankedTensorType::get({spec.batch, m.heads}, elt);
    auto scan = sl::SSDScanOp::create(b, loc, act(inner), stateType, decayType, xs, dt, aLog, bm,
                                      cm, d, dtBias, Value(), b.getI64IntegerAttr(m.heads),
                                      b.getI64IntegerAttr(m.groups), b.getStrArrayAttr({}));
    Value nw = weight(p + ".norm", {inner}, {{"tp"}}, "constant", 0, 1.0, loc);
    Value y =
        sl::GatedRMSNormOp::create(b, loc, act(inner), scan.getY(), z, nw,
                                   b.getI64IntegerAttr(m.groups), b.getF64FloatAttr(spec.normEps));
    return linear(y, p + ".w_out", inner, h, true, loc);
  }

  Value moe(Value n, const std::string &p, Location loc) {
    const MoESpec &e = *spec.moe;
    int64_t h = spec.hidden, f = e.ffnHidden;
    Value wr = weight(p + ".router", {h, e.experts}, {{}, {}}, "normal", 0.02, 0, loc);
    Value logits = sl::LinearOp::create(b, named(p + ".router", loc), act(e.experts), n, wr);
    auto kType = RankedTensorType::get({spec.batch, spec.seq, e.topK}, elt);
    auto route =
        sl::RouterTopKOp::create(b, loc, kType, act2(e.topK), logits, b.getI64IntegerAttr(e.topK));
    auto tokType = RankedTensorType::get({e.experts, spec.batch, spec.seq, h}, elt);
    Value tokens = sl::MoEDispatchOp::create(b, loc, tokType, n, route.getIndices(),
                                             b.getI64IntegerAttr(e.experts));
    Value wg = weight(p + ".w_gate", {e.experts, h, f}, {{"ep"}, {}, {}}, "normal", 0.02, 0, loc);
    Value wu = weight(p + ".w_up", {e.experts, h, f}, {{"ep"}, {}, {}}, "normal", 0.02, 0, loc);
    Value wd = weight(p + ".w_down", {e.experts, f, h}, {{"ep"}, {}, {}}, "normal", 0.02, 0, loc);
    Value out = sl::MoEExpertsOp::create(b, loc, tokType, tokens, wg, wu, wd);
    return sl::MoECombineOp::create(b, loc, act(h), out, route.getWeights(), route.getIndices());
  }

  Value recurrent(Value n, const std::string &p, Location loc) {
    const RecurrentSpec &r = *spec.recurrent;
    int64_t h = spec.hidden, w = r.width;
    Value gate = sl::GeLUOp::create(b, loc, act(w), linear(n, p + ".w_gate", h, w, false, loc));
    Value xr = linear(n, p + ".w_in", h, w, false, loc);
    xr = conv(xr, p + ".conv", w, r.conv, loc);
    auto vec = [&](const char *name, StringRef init, double scale, double offset) {
      return weight(p + "." + name, {w}, {{"tp"}}, init, scale, offset, loc);
    };
    Value wa = vec("wa", "normal", 0.1, 0), ba = vec("ba", "constant", 0, 0);
    Value wx = vec("wx", "normal", 0.1, 0), bx = vec("bx", "constant", 0, 0);
    Value lambda = vec("lambda", "uniform", 4.7, 2.2);
    auto stateType = RankedTensorType::get({spec.batch, w}, elt);
    auto scan = sl::RGLRUScanOp::create(b, loc, act(w), stateType, stateType, xr, wa, ba, wx, bx,
                                        lambda, Value(), b.getStrArrayAttr({}));
    Value y = sl::MulOp::create(b, loc, act(w), gate, scan.getY());
    return linear(y, p + ".w_out", w, h, true, loc);
  }

  Value mlp(Value n, const std::string &p, Location loc) {
    int64_t h = spec.hidden, f = spec.mlp->ffnHidden;
    Value g = linear(n, p + ".w_gate", h, f, false, loc);
    Value u = linear(n, p + ".w_up", h, f, false, loc);
    Value a = sl::SwiGLUOp::create(b, loc, act(f), g, u);
    return linear(a, p + ".w_down", f, h, true, loc);
  }

  /// Stamps where in the model each op built after `last` sits (the report's
  /// kBlockAttr and kFamilyAttr), then moves `last` to the newest op.
  void stampSince(Block *body, Operation *&last, std::optional<int64_t> block, StringRef family) {
    auto from = last ? std::next(last->getIterator()) : body->begin();
    for (Operation &op : llvm::make_range(from, body->end())) {
      if (block)
        op.setAttr(shardline::kBlockAttr, b.getI64IntegerAttr(*block));
      op.setAttr(shardline::kFamilyAttr, b.getStringAttr(family));
    }
    last = &body->back();
  }

  Location named(const std::string &name, Location child) {
    if (auto n = dyn_cast<NameLoc>(child))
      child = n.getChildLoc();
    return NameLoc::get(b.getStringAttr(name), child);
  }

  /// The location of pattern letter `i` in the spec text, named after the block.
  Location patternLoc(size_t i, const std::string &name) {
    unsigned line = 1, col = 1;
    size_t key = spec.text.find("\"pattern\"");
    if (key != std::string::npos) {
      size_t open = spec.text.find('"', key + 9);
      if (open != std::string::npos) {
        size_t pos = open + 1 + i;
        line = 1 + std::count(spec.text.begin(), spec.text.begin() + pos, '\n');
        size_t ls = spec.text.rfind('\n', pos);
        col = pos - (ls == std::string::npos ? 0 : ls + 1) + 1;
      }
    }
    return NameLoc::get(
        b.getStringAttr(name),
        FileLineColLoc::get(&ctx, spec.file.empty() ? "<spec>" : spec.file, line, col));
  }

  const ModelSpec &spec;
  MLIRContext &ctx;
  OpBuilder b;
  Type elt;
  FlatSymbolRefAttr meshRef;
  std::vector<std::pair<std::string, int64_t>> sizes;
};

} // namespace

OwningOpRef<ModuleOp> shardline::importModel(const ModelSpec &spec, MLIRContext &ctx) {
  ctx.getOrLoadDialect<sl::SLDialect>();
  ctx.getOrLoadDialect<func::FuncDialect>();
  return Importer(spec, ctx).run();
}
