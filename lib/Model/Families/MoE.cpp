//===- MoE.cpp - the mixture-of-experts block family (E) ------------------===//
//
// Router (linear, softmax, top-k), dispatch of the routed rows, SwiGLU
// experts (experts over the expert group ep folds onto), weighted combine.
//
//===----------------------------------------------------------------------===//

#include "shardline/Dialect/SL/IR/SL.h"
#include "shardline/Model/BlockFamily.h"

using namespace mlir;
using namespace shardline;

namespace {

struct MoESection : FamilySection {
  int64_t experts = 0, topK = 0, ffnHidden = 0;
};

class MoE final : public BlockFamily {
public:
  MoE() : BlockFamily('E', "moe", "moe") {}

  std::unique_ptr<FamilySection> parse(SpecReader &r, const llvm::json::Object &o) const override {
    r.unknownKeys(o, section(), {"experts", "top_k", "ffn_hidden"});
    auto s = std::make_unique<MoESection>();
    s->experts = r.positive(o, section(), "experts", true);
    s->topK = r.positive(o, section(), "top_k", true);
    s->ffnHidden = r.positive(o, section(), "ffn_hidden", true);
    return s;
  }

  void validate(SpecReader &r, const FamilySection &section, const ModelSpec &spec) const override {
    const auto &e = static_cast<const MoESection &>(section);
    if (e.topK > e.experts)
      r.error("moe.top_k", llvm::Twine(e.topK) + " exceeds experts = " + llvm::Twine(e.experts));
    r.divisible("moe.experts", e.experts, spec.parallel.ep, "ep");
  }

  /// The dispatched tokens: [experts, batch, seq, hidden].
  double largestTensor(const FamilySection &section, const ModelSpec &spec) const override {
    const auto &e = static_cast<const MoESection &>(section);
    return (double)spec.batch * (double)spec.seq * (double)e.experts * (double)spec.hidden;
  }

  Value build(BlockBuilder &b, const FamilySection &section, Value n) const override {
    const auto &e = static_cast<const MoESection &>(section);
    const ModelSpec &spec = b.spec();
    int64_t h = spec.hidden, f = e.ffnHidden;
    Value logits = b.linear(n, "router", h, e.experts, BlockBuilder::Parallel::Replicated);
    auto route =
        b.create<sl::RouterTopKOp>(b.tensor({spec.batch, spec.seq, e.topK}),
                                   b.act(e.topK, b.builder().getI32Type()), logits, b.i64(e.topK));
    auto tokType = b.tensor({e.experts, spec.batch, spec.seq, h});
    Value tokens = b.create<sl::MoEDispatchOp>(tokType, n, route.getIndices(), b.i64(e.experts));
    BlockBuilder::Dims overEp{{"ep"}, {}, {}};
    Value wg = b.weight("w_gate", {e.experts, h, f}, overEp, "normal", 0.02, 0);
    Value wu = b.weight("w_up", {e.experts, h, f}, overEp, "normal", 0.02, 0);
    Value wd = b.weight("w_down", {e.experts, f, h}, overEp, "normal", 0.02, 0);
    Value out = b.create<sl::MoEExpertsOp>(tokType, tokens, wg, wu, wd);
    return b.create<sl::MoECombineOp>(b.act(h), out, route.getWeights(), route.getIndices());
  }
};

} // namespace

SHARDLINE_BLOCK_FAMILY_FILE(MoE)
