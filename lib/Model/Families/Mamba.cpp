//===- Mamba.cpp - the Mamba-2 block family (M) ---------------------------===//
//
// in_proj to z, x, B, C, dt (column-parallel: heads and groups over tp);
// causal conv1d + SiLU on x, B, C; the SSD scan; gated RMSNorm per group;
// out_proj (row-parallel).
//
//===----------------------------------------------------------------------===//

#include "shardline/Dialect/SL/IR/SL.h"
#include "shardline/Model/BlockFamily.h"

using namespace mlir;
using namespace shardline;
using Parallel = BlockBuilder::Parallel;

namespace {

struct MambaSection : FamilySection {
  int64_t heads = 0, headDim = 0, state = 0, groups = 0, conv = 0;
};

class Mamba final : public BlockFamily {
public:
  Mamba() : BlockFamily('M', "mamba", "mamba") {}

  std::unique_ptr<FamilySection> parse(SpecReader &r, const llvm::json::Object &o) const override {
    r.unknownKeys(o, section(), {"heads", "head_dim", "state", "groups", "conv"});
    auto s = std::make_unique<MambaSection>();
    s->heads = r.positive(o, section(), "heads", true);
    s->headDim = r.positive(o, section(), "head_dim", true);
    s->state = r.positive(o, section(), "state", true);
    s->groups = r.positive(o, section(), "groups", false, 1);
    s->conv = r.positive(o, section(), "conv", false, 4);
    return s;
  }

  void validate(SpecReader &r, const FamilySection &section, const ModelSpec &spec) const override {
    const auto &m = static_cast<const MambaSection &>(section);
    if (m.heads % m.groups != 0)
      r.error("mamba.heads",
              llvm::Twine(m.heads) + " is not a multiple of groups = " + llvm::Twine(m.groups));
    r.divisible("mamba.heads", m.heads, spec.parallel.tp, "tp");
    r.divisible("mamba.groups", m.groups, spec.parallel.tp, "tp");
  }

  Value build(BlockBuilder &b, const FamilySection &section, Value n) const override {
    const auto &m = static_cast<const MambaSection &>(section);
    const ModelSpec &spec = b.spec();
    int64_t h = spec.hidden, inner = m.heads * m.headDim, bc = m.groups * m.state;
    Value z = b.linear(n, "w_z", h, inner, Parallel::Column);
    Value xs = b.linear(n, "w_x", h, inner, Parallel::Column);
    Value bm = b.linear(n, "w_B", h, bc, Parallel::Column);
    Value cm = b.linear(n, "w_C", h, bc, Parallel::Column);
    Value dt = b.linear(n, "w_dt", h, m.heads, Parallel::Column);
    xs = b.create<sl::SiLUOp>(b.act(inner), b.conv(xs, "conv_x", inner, m.conv));
    bm = b.create<sl::SiLUOp>(b.act(bc), b.conv(bm, "conv_B", bc, m.conv));
    cm = b.create<sl::SiLUOp>(b.act(bc), b.conv(cm, "conv_C", bc, m.conv));
    Value aLog = b.weight("a_log", {m.heads}, {{"tp"}}, "uniform", 1.0, 0);
    Value d = b.weight("d", {m.heads}, {{"tp"}}, "constant", 0, 1.0);
    Value dtBias = b.weight("dt_bias", {m.heads}, {{"tp"}}, "uniform", 2.0, -4.0);
    auto scan = b.create<sl::SSDScanOp>(
        b.act(inner), b.tensor({spec.batch, m.heads, m.headDim, m.state}),
        b.tensor({spec.batch, m.heads}), xs, dt, aLog, bm, cm, d, dtBias, Value(), b.i64(m.heads),
        b.i64(m.groups), b.builder().getStrArrayAttr({}));
    Value nw = b.weight("norm", {inner}, {{"tp"}}, "constant", 0, 1.0);
    Value y = b.create<sl::GatedRMSNormOp>(b.act(inner), scan.getY(), z, nw, b.i64(m.groups),
                                           b.f64(spec.normEps));
    return b.linear(y, "w_out", inner, h, Parallel::Row);
  }
};

} // namespace

SHARDLINE_BLOCK_FAMILY_FILE(Mamba)
