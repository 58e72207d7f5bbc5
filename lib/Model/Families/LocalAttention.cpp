//===- LocalAttention.cpp - the local attention block family (L) ----------===//
//
// Sliding-window causal attention (Mistral, the local layers of Gemma 2/3,
// RecurrentGemma's local MQA): the attention block's QKV projections and
// RoPE, but each query sees only the `window` most recent tokens, itself
// included. A split sequence then needs only the window-1 keys before each
// chunk (a halo), not every other rank's keys.
//
//===----------------------------------------------------------------------===//

#include "shardline/Dialect/SL/IR/SL.h"
#include "shardline/Model/BlockFamily.h"

using namespace mlir;
using namespace shardline;
using Parallel = BlockBuilder::Parallel;

namespace {

struct LocalAttentionSection : FamilySection {
  int64_t heads = 0, kvHeads = 0, headDim = 0, window = 0;
  double ropeTheta = 10000.0;
};

class LocalAttention final : public BlockFamily {
public:
  LocalAttention() : BlockFamily('L', "local_attention", "local_attn") {}

  std::unique_ptr<FamilySection> parse(SpecReader &r, const llvm::json::Object &o) const override {
    r.unknownKeys(o, section(), {"heads", "kv_heads", "head_dim", "window", "rope_theta"});
    auto s = std::make_unique<LocalAttentionSection>();
    s->heads = r.positive(o, section(), "heads", true);
    s->kvHeads = r.positive(o, section(), "kv_heads", false, s->heads);
    s->headDim = r.positive(o, section(), "head_dim", true);
    s->window = r.positive(o, section(), "window", true);
    s->ropeTheta = r.number(o, section(), "rope_theta", 10000.0);
    return s;
  }

  void validate(SpecReader &r, const FamilySection &section, const ModelSpec &spec) const override {
    const auto &a = static_cast<const LocalAttentionSection &>(section);
    if (a.heads % a.kvHeads != 0)
      r.error("local_attention.heads",
              llvm::Twine(a.heads) + " is not a multiple of kv_heads = " + llvm::Twine(a.kvHeads));
    if (a.headDim % 2 != 0)
      r.error("local_attention.head_dim", "must be even for RoPE, got " + llvm::Twine(a.headDim));
    r.divisible("local_attention.heads", a.heads, spec.parallel.tp, "tp");
    r.divisible("local_attention.kv_heads", a.kvHeads, spec.parallel.tp, "tp");
    // The halo before each chunk holds window - 1 tokens whatever the chunk's
    // length; a window of the whole sequence is causal attention (A).
    if (a.window > spec.seq)
      r.error("local_attention.window", llvm::Twine(a.window) +
                                            " exceeds seq = " + llvm::Twine(spec.seq) +
                                            " (attention over the whole sequence is the A block)");
  }

  Value build(BlockBuilder &b, const FamilySection &section, Value n) const override {
    const auto &a = static_cast<const LocalAttentionSection &>(section);
    int64_t h = b.spec().hidden, qw = a.heads * a.headDim, kw = a.kvHeads * a.headDim;
    FloatAttr theta = b.f64(a.ropeTheta);
    auto roped = [&](StringRef name, int64_t width) {
      return b.create<sl::RopeOp>(b.act(width), b.linear(n, name, h, width, Parallel::Column),
                                  b.i64(a.headDim), theta);
    };
    Value q = roped("wq", qw), k = roped("wk", kw);
    Value v = b.linear(n, "wv", h, kw, Parallel::Column);
    Value o = b.create<sl::LocalAttentionOp>(b.act(qw), q, k, v, Value(), Value(), b.i64(a.heads),
                                             b.i64(a.kvHeads), b.i64(a.window));
    return b.linear(o, "wo", qw, h, Parallel::Row);
  }
};

} // namespace

SHARDLINE_BLOCK_FAMILY_FILE(LocalAttention)
