//===- MoE.cpp - the mixture-of-experts block family (E) ------------------===//
//
// Router (linear, softmax, top-k), dispatch of the routed rows, SwiGLU
// experts (experts over the expert group ep folds onto, ffn over the
// expert-tensor group etp folds onto), weighted combine.
// Dropless by default, as in Megatron: sl.moe_dropless sends every routed row
// to its expert's owner by count (no buffer sized experts x tokens) and
// brings the outputs back. With a capacity factor (Megatron's
// --moe-expert-capacity-factor with padded buffers) each group of tokens a
// rank holds sends at most C rows to each expert, in [experts, Gb, Gs, C, h]
// buffers whose size no longer grows with experts x tokens.
//
//===----------------------------------------------------------------------===//

#include "shardline/Dialect/SL/IR/SL.h"
#include "shardline/Model/BlockFamily.h"

#include <array>
#include <cmath>
#include <sstream>

using namespace mlir;
using namespace shardline;

namespace {

struct MoESection : FamilySection {
  int64_t experts = 0, topK = 0, ffnHidden = 0;
  /// 0: dropless (rows by count).
  double capacityFactor = 0;
  /// "probs" or "position"; empty when the spec names none.
  std::string dropPolicy;
};

/// Capacity mode's token groups (docs/dialect.md, "Capacity groups"): a
/// rank's tokens in the MoE layer, halved in zigzag order, so that
/// the capacity is Megatron's over a rank's local tokens and yet a property
/// of the program, the same in the single-device run.
struct CapacityPlan {
  int64_t rows = 0, positions = 0, capacity = 0;
};

CapacityPlan capacityPlan(const MoESection &e, const ModelSpec &spec) {
  const ParallelSpec &p = spec.parallel;
  // The sequence is split over cp, and over tp too under sequence
  // parallelism; in zigzag order a rank holds two runs that are not adjacent.
  int64_t pieces = p.cp * (p.sp ? p.tp : 1) * (p.cp > 1 && p.cpOrder == "zigzag" ? 2 : 1);
  CapacityPlan plan;
  plan.rows = spec.batch / p.dp;
  plan.positions = spec.seq / pieces;
  // Megatron's get_capacity on a group's tokens: ceil(tokens * top_k /
  // experts * factor), at least 1.
  double perExpert = (double)(plan.rows * plan.positions * e.topK) / (double)e.experts;
  plan.capacity = std::max<int64_t>(1, (int64_t)std::ceil(perExpert * e.capacityFactor));
  return plan;
}

class MoE final : public BlockFamily {
public:
  MoE() : BlockFamily('E', "moe", "moe") {}

  std::unique_ptr<FamilySection> parse(SpecReader &r, const llvm::json::Object &o) const override {
    r.unknownKeys(o, section(),
                  {"experts", "top_k", "ffn_hidden", "capacity_factor", "token_drop_policy"});
    auto s = std::make_unique<MoESection>();
    s->experts = r.positive(o, section(), "experts", true);
    s->topK = r.positive(o, section(), "top_k", true);
    s->ffnHidden = r.positive(o, section(), "ffn_hidden", true);
    s->capacityFactor = r.number(o, section(), "capacity_factor", 0);
    s->dropPolicy = r.string(o, section(), "token_drop_policy", false);
    if (!s->dropPolicy.empty() && s->dropPolicy != "probs" && s->dropPolicy != "position")
      r.error("moe.token_drop_policy", "must be probs or position, got \"" + s->dropPolicy + "\"");
    else if (!s->dropPolicy.empty() && !o.get("capacity_factor"))
      r.error("moe.token_drop_policy",
              "a drop policy needs a capacity factor (moe.capacity_factor, "
              "--moe-expert-capacity-factor): without one the dispatch is dropless");
    return s;
  }

  void validate(SpecReader &r, const FamilySection &section, const ModelSpec &spec) const override {
    const auto &e = static_cast<const MoESection &>(section);
    if (e.topK > e.experts)
      r.error("moe.top_k", llvm::Twine(e.topK) + " exceeds experts = " + llvm::Twine(e.experts));
    r.divisible("moe.experts", e.experts, spec.parallel.ep, "ep");
    r.divisible("moe.ffn_hidden", e.ffnHidden, spec.parallel.etp, "etp");
  }

  /// The dispatched tokens: the routed rows, top_k x tokens x hidden,
  /// dropless; [experts, Gb, Gs, C, hidden] in capacity mode.
  double largestTensor(const FamilySection &section, const ModelSpec &spec) const override {
    const auto &e = static_cast<const MoESection &>(section);
    double h = (double)spec.hidden;
    if (e.capacityFactor <= 0 || spec.parallel.dp < 1 || spec.parallel.cp < 1 ||
        spec.parallel.tp < 1)
      return (double)e.topK * (double)spec.batch * (double)spec.seq * h;
    CapacityPlan c = capacityPlan(e, spec);
    if (c.rows < 1 || c.positions < 1)
      return 0;
    return (double)e.experts * (double)(spec.batch / c.rows) * (double)(spec.seq / c.positions) *
           (double)c.capacity * h;
  }

  std::string summary(const FamilySection &section, const ModelSpec &spec) const override {
    const auto &e = static_cast<const MoESection &>(section);
    if (e.capacityFactor <= 0)
      return spec.parallel.etp > 1
                 ? "experts: dropless (rows by count), the received rows gathered "
                   "over etp and the outputs reduce-scattered back"
                 : "experts: dropless (rows by count)";
    CapacityPlan c = capacityPlan(e, spec);
    std::ostringstream os;
    os << "experts: capacity factor " << e.capacityFactor << ", " << c.capacity
       << " rows per expert per group of " << c.rows << "x" << c.positions
       << " tokens, drop policy " << policy(e);
    return os.str();
  }

  Value build(BlockBuilder &b, const FamilySection &section, Value n) const override {
    const auto &e = static_cast<const MoESection &>(section);
    const ModelSpec &spec = b.spec();
    int64_t h = spec.hidden, f = e.ffnHidden;
    Value logits = b.linear(n, "router", h, e.experts, BlockBuilder::Parallel::Replicated);
    auto route =
        b.create<sl::RouterTopKOp>(b.tensor({spec.batch, spec.seq, e.topK}),
                                   b.act(e.topK, b.builder().getI32Type()), logits, b.i64(e.topK));
    // The experts' weights, split over the expert group ep folds onto and, as
    // Megatron splits them, on ffn over the expert-tensor group: w_gate and
    // w_up column-parallel, w_down row-parallel.
    auto weights = [&]() -> std::array<Value, 3> {
      BlockBuilder::Dims column{{"ep"}, {}, {"etp"}}, row{{"ep"}, {"etp"}, {}};
      return {b.weight("w_gate", {e.experts, h, f}, column, "normal", 0.02, 0),
              b.weight("w_up", {e.experts, h, f}, column, "normal", 0.02, 0),
              b.weight("w_down", {e.experts, f, h}, row, "normal", 0.02, 0)};
    };
    if (e.capacityFactor <= 0) {
      auto [wg, wu, wd] = weights();
      // The axes the gate's layout splits the experts over are the group
      // the rows travel in; those it splits ffn over, the group that gathers
      // them.
      SmallVector<Attribute> axes, tensorAxes;
      std::vector<std::string> names, tensorNames;
      if (auto l = sl::getLayout(wg)) {
        for (StringRef a : l.getDimAxes(0)) {
          axes.push_back(b.builder().getStringAttr(a));
          names.push_back(a.str());
        }
        for (StringRef a : l.getDimAxes(2)) {
          tensorAxes.push_back(b.builder().getStringAttr(a));
          tensorNames.push_back(a.str());
        }
      }
      auto moe = b.create<sl::MoEDroplessOp>(b.act(h), n, route.getWeights(), route.getIndices(),
                                             wg, wu, wd, b.builder().getArrayAttr(axes),
                                             b.builder().getArrayAttr(tensorAxes));
      std::string why = sl::droplessExchangeReason(names, tensorNames, false);
      if (!why.empty())
        moe->setAttr(sl::kReasonAttr, b.builder().getStringAttr(why));
      return moe;
    }
    CapacityPlan c = capacityPlan(e, spec);
    auto group = b.builder().getDenseI64ArrayAttr({c.rows, c.positions});
    Value slots = b.create<sl::MoECapacitySlotsOp>(
        b.act(e.topK, b.builder().getI32Type()), route.getWeights(), route.getIndices(),
        b.i64(e.experts), b.i64(c.capacity), group, b.builder().getStringAttr(policy(e)));
    auto bufType =
        b.tensor({e.experts, spec.batch / c.rows, spec.seq / c.positions, c.capacity, h});
    Value tokens = b.create<sl::MoEDispatchCapacityOp>(bufType, n, route.getIndices(), slots,
                                                       b.i64(e.experts), b.i64(c.capacity), group);
    // Made after the dispatch, as they always were (the parameters' order is
    // the plan's).
    auto [wg, wu, wd] = weights();
    Value out = b.create<sl::MoEExpertsOp>(tokens.getType(), tokens, wg, wu, wd);
    return b.create<sl::MoECombineCapacityOp>(b.act(h), out, route.getWeights(), route.getIndices(),
                                              slots, group);
  }

private:
  /// Megatron's default policy is probs.
  static std::string policy(const MoESection &e) {
    return e.dropPolicy.empty() ? "probs" : e.dropPolicy;
  }
};

} // namespace

SHARDLINE_BLOCK_FAMILY_FILE(MoE)
