//===- Attention.cpp - the attention block family (A) ---------------------===//
//
// GQA attention: QKV projections (column-parallel, heads over tp), RoPE on Q
// and K, causal softmax attention, output projection (row-parallel).
//
//===----------------------------------------------------------------------===//

#include "shardline/Dialect/SL/IR/SL.h"
#include "shardline/Model/BlockFamily.h"

using namespace mlir;
using namespace shardline;
using Parallel = BlockBuilder::Parallel;

namespace {

struct AttentionSection : FamilySection {
  int64_t heads = 0, kvHeads = 0, headDim = 0;
  double ropeTheta = 10000.0;
};

class Attention final : public BlockFamily {
public:
  Attention() : BlockFamily('A', "attention", "attn") {}

  std::unique_ptr<FamilySection> parse(SpecReader &r, const llvm::json::Object &o) const override {
    r.unknownKeys(o, section(), {"heads", "kv_heads", "head_dim", "rope_theta"});
    auto s = std::make_unique<AttentionSection>();
    s->heads = r.positive(o, section(), "heads", true);
    s->kvHeads = r.positive(o, section(), "kv_heads", false, s->heads);
    s->headDim = r.positive(o, section(), "head_dim", true);
    s->ropeTheta = r.number(o, section(), "rope_theta", 10000.0);
    return s;
  }

  void validate(SpecReader &r, const FamilySection &section, const ModelSpec &spec) const override {
    const auto &a = static_cast<const AttentionSection &>(section);
    const ParallelSpec &p = spec.parallel;
    if (a.heads % a.kvHeads != 0)
      r.error("attention.heads",
              llvm::Twine(a.heads) + " is not a multiple of kv_heads = " + llvm::Twine(a.kvHeads));
    if (a.headDim % 2 != 0)
      r.error("attention.head_dim", "must be even for RoPE, got " + llvm::Twine(a.headDim));
    r.divisible("attention.heads", a.heads, p.tp, "tp");
    r.divisible("attention.kv_heads", a.kvHeads, p.tp, "tp");
    if (p.cp > 1 && p.cpComm == "a2a")
      r.divisible("attention.kv_heads", a.kvHeads, p.tp * p.cp,
                  "tp*cp (all-to-all context parallelism splits heads over cp)");
  }

  Value build(BlockBuilder &b, const FamilySection &section, Value n) const override {
    const auto &a = static_cast<const AttentionSection &>(section);
    int64_t h = b.spec().hidden, qw = a.heads * a.headDim, kw = a.kvHeads * a.headDim;
    Value q = b.linear(n, "wq", h, qw, Parallel::Column);
    Value k = b.linear(n, "wk", h, kw, Parallel::Column);
    Value v = b.linear(n, "wv", h, kw, Parallel::Column);
    FloatAttr theta = b.f64(a.ropeTheta);
    q = b.create<sl::RopeOp>(b.act(qw), q, b.i64(a.headDim), theta);
    k = b.create<sl::RopeOp>(b.act(kw), k, b.i64(a.headDim), theta);
    Value o = b.create<sl::AttentionOp>(b.act(qw), q, k, v, b.i64(a.heads), b.i64(a.kvHeads),
                                        b.builder().getBoolAttr(true), FloatAttr());
    return b.linear(o, "wo", qw, h, Parallel::Row);
  }
};

} // namespace

SHARDLINE_BLOCK_FAMILY_FILE(Attention)
