//===- MLP.cpp - the dense MLP block family (F) ---------------------------===//
//
// SwiGLU: down(silu(gate(x)) * up(x)), gate and up column-parallel, down
// row-parallel.
//
//===----------------------------------------------------------------------===//

#include "shardline/Dialect/SL/IR/SL.h"
#include "shardline/Model/BlockFamily.h"

using namespace mlir;
using namespace shardline;
using Parallel = BlockBuilder::Parallel;

namespace {

struct MLPSection : FamilySection {
  int64_t ffnHidden = 0;
};

class MLP final : public BlockFamily {
public:
  MLP() : BlockFamily('F', "mlp", "mlp") {}

  std::unique_ptr<FamilySection> parse(SpecReader &r, const llvm::json::Object &o) const override {
    r.unknownKeys(o, section(), {"ffn_hidden"});
    auto s = std::make_unique<MLPSection>();
    s->ffnHidden = r.positive(o, section(), "ffn_hidden", true);
    return s;
  }

  void validate(SpecReader &r, const FamilySection &section, const ModelSpec &spec) const override {
    const auto &f = static_cast<const MLPSection &>(section);
    r.divisible("mlp.ffn_hidden", f.ffnHidden, spec.parallel.tp, "tp");
  }

  Value build(BlockBuilder &b, const FamilySection &section, Value n) const override {
    int64_t h = b.spec().hidden, f = static_cast<const MLPSection &>(section).ffnHidden;
    Value g = b.linear(n, "w_gate", h, f, Parallel::Column);
    Value u = b.linear(n, "w_up", h, f, Parallel::Column);
    Value a = b.create<sl::SwiGLUOp>(b.act(f), g, u);
    return b.linear(a, "w_down", f, h, Parallel::Row);
  }
};

} // namespace

SHARDLINE_BLOCK_FAMILY_FILE(MLP)
