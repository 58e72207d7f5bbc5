//===- Recurrent.cpp - the RG-LRU recurrent block family (R) --------------===//
//
// Griffin's recurrent block: a GeLU gate branch and a recurrent branch
// (linear, causal conv1d, RG-LRU scan), both column-parallel (width over tp),
// their product through a row-parallel output linear.
//
//===----------------------------------------------------------------------===//

#include "shardline/Dialect/SL/IR/SL.h"
#include "shardline/Model/BlockFamily.h"

using namespace mlir;
using namespace shardline;
using Parallel = BlockBuilder::Parallel;

namespace {

struct RecurrentSection : FamilySection {
  int64_t width = 0, conv = 0;
};

class Recurrent final : public BlockFamily {
public:
  Recurrent() : BlockFamily('R', "recurrent", "rglru") {}

  std::unique_ptr<FamilySection> parse(SpecReader &r, const llvm::json::Object &o) const override {
    r.unknownKeys(o, section(), {"width", "conv"});
    auto s = std::make_unique<RecurrentSection>();
    s->width = r.positive(o, section(), "width", true);
    s->conv = r.positive(o, section(), "conv", false, 4);
    return s;
  }

  void validate(SpecReader &r, const FamilySection &section, const ModelSpec &spec) const override {
    const auto &rs = static_cast<const RecurrentSection &>(section);
    r.divisible("recurrent.width", rs.width, spec.parallel.tp, "tp");
  }

  Value build(BlockBuilder &b, const FamilySection &section, Value n) const override {
    const auto &r = static_cast<const RecurrentSection &>(section);
    int64_t h = b.spec().hidden, w = r.width;
    Value gate = b.create<sl::GeLUOp>(b.act(w), b.linear(n, "w_gate", h, w, Parallel::Column));
    Value xr = b.linear(n, "w_in", h, w, Parallel::Column);
    xr = b.conv(xr, "conv", w, r.conv);
    auto vec = [&](StringRef name, StringRef init, double scale, double offset) {
      return b.weight(name, {w}, {{"tp"}}, init, scale, offset);
    };
    Value wa = vec("wa", "normal", 0.1, 0), ba = vec("ba", "constant", 0, 0);
    Value wx = vec("wx", "normal", 0.1, 0), bx = vec("bx", "constant", 0, 0);
    Value lambda = vec("lambda", "uniform", 4.7, 2.2);
    auto stateType = b.tensor({b.spec().batch, w});
    auto scan = b.create<sl::RGLRUScanOp>(b.act(w), stateType, stateType, xr, wa, ba, wx, bx,
                                          lambda, Value(), b.builder().getStrArrayAttr({}));
    Value y = b.create<sl::MulOp>(b.act(w), gate, scan.getY());
    return b.linear(y, "w_out", w, h, Parallel::Row);
  }
};

} // namespace

SHARDLINE_BLOCK_FAMILY_FILE(Recurrent)
