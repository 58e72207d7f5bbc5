//===- ShardingRuleTest.cpp - per-op rules as data ----------------------===//
//
// The rules come from the ops themselves (getShardingRule), checked here on
// layouts without building IR through the pure checker, and on the op rules.
//
//===----------------------------------------------------------------------===//

#include "shardline/Dialect/SL/IR/ShardingRule.h"
#include "shardline/Dialect/SL/IR/SL.h"
#include "shardline/InitAll.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include <gtest/gtest.h>

using namespace shardline;

namespace {
Mesh mesh() { return Mesh{{{"dp", 2}, {"cp", 2}, {"tp", 2}}}; }

Layout lay(std::vector<std::vector<std::string>> dims, std::vector<std::string> partial = {}) {
  Layout l;
  l.dims = std::move(dims);
  l.partial = std::move(partial);
  return l;
}

/// x[b,s,k] w[k,n] -> y[b,s,n]
ShardingRule linearRule() {
  ShardingRule r;
  int b = r.addFactor("b"), s = r.addFactor("s", FactorKind::Free, 0, true),
      k = r.addFactor("k", FactorKind::Contracted), n = r.addFactor("n");
  r.operands = {{b, s, k}, {k, n}};
  r.operandNames = {"x", "weight"};
  r.results = {{b, s, n}};
  r.resultNames = {"result"};
  r.partial = PartialRule::One;
  r.primarySequence = s;
  return r;
}

RuleCheck check(const ShardingRule &r, std::vector<std::optional<Layout>> layouts,
                std::vector<std::vector<int64_t>> results) {
  return checkRule(r, mesh(), {}, layouts, results);
}
} // namespace

TEST(ShardingRule, ColumnParallelKeepsTheSplit) {
  auto c = check(linearRule(), {lay({{}, {"cp"}, {}}), lay({{}, {"tp"}})}, {{2, 8, 8}});
  ASSERT_EQ(c.error, "");
  EXPECT_EQ(c.results[0], lay({{}, {"cp"}, {"tp"}}));
}

TEST(ShardingRule, RowParallelLeavesAPendingSum) {
  auto c = check(linearRule(), {lay({{}, {"cp"}, {"tp"}}), lay({{"tp"}, {}})}, {{2, 8, 8}});
  ASSERT_EQ(c.error, "");
  EXPECT_EQ(c.results[0], lay({{}, {"cp"}, {}}, {"tp"}));
}

TEST(ShardingRule, MismatchedContractionIsAnError) {
  auto c = check(linearRule(), {lay({{}, {}, {"tp"}}), lay({{}, {}})}, {{2, 8, 8}});
  EXPECT_NE(c.error.find("operand #1 (weight) dimension 0 (k) is split over []"), std::string::npos)
      << c.error;
}

TEST(ShardingRule, UnannotatedOperandsAreSkipped) {
  auto c = check(linearRule(), {std::nullopt, lay({{}, {"tp"}})}, {{2, 8, 8}});
  ASSERT_EQ(c.error, "");
  EXPECT_EQ(c.results[0], lay({{}, {}, {"tp"}}));
}

TEST(ShardingRule, WholeFactorRejectsSplit) {
  ShardingRule r;
  int b = r.addFactor("b"), h = r.addFactor("h", FactorKind::Whole);
  r.operands = {{b, h}};
  r.results = {{b, h}};
  auto c = check(r, {lay({{}, {"tp"}})}, {{2, 8}});
  EXPECT_NE(c.error.find("needs it whole"), std::string::npos) << c.error;
}

TEST(ShardingRule, SequenceMixingNeedsItsRemedyAxes) {
  ShardingRule r;
  int s = r.addFactor("s", FactorKind::SequenceMixing, 0, true);
  r.factors[s].remedy = Remedy::KVExchange;
  r.operands = {{s}};
  r.results = {{s}};
  auto bad = check(r, {lay({{"cp"}})}, {{8}});
  EXPECT_NE(bad.error.find("sl.ring_attention"), std::string::npos) << bad.error;
  r.factors[s].remedyAxes = {"cp"};
  EXPECT_EQ(check(r, {lay({{"cp"}})}, {{8}}).error, "");
}

/// x[b,s] gate[e] -> dx[b,s] dgate[e], the experts exchanged by count over
/// cp: they may be split over cp although cp splits the tokens, over nothing
/// else; dgate alone sums the tokens, less the exchange's axes.
TEST(ShardingRule, ExpertExchangeSplitsTheExpertsAndSumsOverTheRest) {
  ShardingRule r;
  int b = r.addFactor("b"), s = r.addFactor("s", FactorKind::Free, 0, true),
      e = r.addFactor("experts", FactorKind::SequenceMixing);
  r.factors[e].remedy = Remedy::ExpertExchange;
  r.factors[e].remedyAxes = {"cp"};
  r.operands = {{b, s}, {e}};
  r.operandNames = {"x", "gate"};
  r.results = {{b, s}, {e}};
  r.resultNames = {"dx", "dgate"};
  r.resultSums = {{}, {b, s}};
  RuleCheck ok = check(r, {lay({{"dp"}, {"cp"}}), lay({{"cp"}})}, {{8, 8}, {4}});
  ASSERT_EQ(ok.error, "");
  EXPECT_EQ(ok.results[0].partial, std::vector<std::string>{});
  EXPECT_EQ(ok.results[1].partial, std::vector<std::string>{"dp"});
  EXPECT_EQ(ok.results[1].dims[0], std::vector<std::string>{"cp"});
  RuleCheck bad = check(r, {lay({{"dp"}, {"cp"}}), lay({{"tp"}})}, {{8, 8}, {4}});
  EXPECT_EQ(bad.error, "operand #1 (gate) dimension 0 (experts) is exchanged by count and split "
                       "over [tp] without a remedy for 'tp': name them in expert_axes "
                       "(sl.moe_dropless exchanges rows with the experts' owners over these "
                       "axes), or gather the experts first");
}

TEST(ShardingRule, GranuleKeepsHeadsWhole) {
  ShardingRule r;
  int h = r.addFactor("heads", FactorKind::Free, /*granule=*/1);
  r.operands = {{h}};
  r.results = {{h}};
  auto c = check(r, {lay({{"tp"}})}, {{8}});
  EXPECT_NE(c.error.find("does not divide its 1 heads"), std::string::npos) << c.error;
}

TEST(ShardingRule, NonlinearOpRejectsPendingSum) {
  ShardingRule r;
  int a = r.addFactor("a");
  r.operands = {{a}};
  r.results = {{a}};
  auto c = check(r, {lay({{}}, {"tp"})}, {{8}});
  EXPECT_NE(c.error.find("not linear"), std::string::npos) << c.error;
}

TEST(ShardingRule, LinearInEachOperandAllowsOnePendingSum) {
  ShardingRule r = linearRule();
  auto c = check(r, {lay({{}, {}, {}}, {"tp"}), lay({{}, {}}, {"cp"})}, {{2, 8, 8}});
  EXPECT_NE(c.error.find("both pending sums"), std::string::npos) << c.error;
}

TEST(ShardingRule, ChunkOrderOnlyOnSequenceFactors) {
  Layout x = lay({{}, {}, {"cp"}});
  x.orderDim = 2;
  x.order = ChunkOrder::Zigzag;
  auto c = check(linearRule(), {x, std::nullopt}, {{2, 8, 8}});
  EXPECT_NE(c.error.find("not a sequence dimension"), std::string::npos) << c.error;
}

TEST(ShardingRule, ZigzagFlowsToResults) {
  Layout x = lay({{}, {"cp"}, {}});
  x.orderDim = 1;
  x.order = ChunkOrder::Zigzag;
  auto c = check(linearRule(), {x, lay({{}, {"tp"}})}, {{2, 8, 8}});
  ASSERT_EQ(c.error, "");
  EXPECT_EQ(c.results[0].orderDim, 1);
  EXPECT_EQ(c.results[0].order, ChunkOrder::Zigzag);
}

/// The gradient of a weight sums over the tokens, in whatever order they lie.
TEST(ShardingRule, ZigzagSequenceMayBeContracted) {
  ShardingRule r;
  int b = r.addFactor("b", FactorKind::Contracted),
      s = r.addFactor("s", FactorKind::Contracted, 0, true), k = r.addFactor("k"),
      n = r.addFactor("n");
  r.operands = {{b, s, k}, {b, s, n}};
  r.results = {{k, n}};
  r.partial = PartialRule::One;
  Layout x = lay({{}, {"cp"}, {}});
  x.orderDim = 1;
  x.order = ChunkOrder::Zigzag;
  auto c = check(r, {x, x}, {{8, 8}});
  ASSERT_EQ(c.error, "");
  EXPECT_EQ(c.resultPartial, std::vector<std::string>{"cp"});
  ASSERT_EQ(c.results.size(), 1u);
  EXPECT_EQ(c.results[0].orderDim, -1);
  EXPECT_EQ(c.results[0].partial, std::vector<std::string>{"cp"});
  // A contracted dimension that is not a sequence still may not carry an order.
  Layout y = lay({{"cp"}, {}, {}});
  y.orderDim = 0;
  y.order = ChunkOrder::Zigzag;
  auto bad = check(r, {y, std::nullopt}, {{8, 8}});
  EXPECT_NE(bad.error.find("operand #0 dimension 0 (b) carries a chunk order but is not a "
                           "sequence dimension"),
            std::string::npos)
      << bad.error;
}

TEST(ShardingRule, Describe) {
  EXPECT_EQ(linearRule().describe(),
            "x[b,s,k] weight[k,n] -> result[b,s,n]; free: b,s,n; contracted: k; partial: one; "
            "sequence: s");
}

// The op rules themselves, read from parsed IR.
namespace {
struct OpRules : ::testing::Test {
  OpRules() {
    mlir::DialectRegistry registry;
    registerAllDialects(registry);
    ctx.appendDialectRegistry(registry);
    ctx.loadAllAvailableDialects();
  }
  ShardingRule ruleOf(const char *ir) {
    module = mlir::parseSourceString<mlir::ModuleOp>(ir, &ctx);
    EXPECT_TRUE(module);
    ShardingRule rule;
    module->walk([&](mlir::sl::ShardingRuleOpInterface op) { rule = op.getShardingRule(); });
    return rule;
  }
  FactorKind kindOf(const ShardingRule &r, const char *name) {
    int f = r.findFactor(name);
    EXPECT_GE(f, 0) << name;
    return r.factors[f].kind;
  }
  mlir::MLIRContext ctx;
  mlir::OwningOpRef<mlir::ModuleOp> module;
};
} // namespace

TEST_F(OpRules, RMSNormNormalisedDimIsWhole) {
  auto r =
      ruleOf(R"(func.func @f(%x: tensor<2x8x16xf32>, %w: tensor<16xf32>) -> tensor<2x8x16xf32> {
    %y = sl.rms_norm %x, %w : (tensor<2x8x16xf32>, tensor<16xf32>) -> tensor<2x8x16xf32>
    return %y : tensor<2x8x16xf32> })");
  EXPECT_EQ(kindOf(r, "h"), FactorKind::Whole);
  EXPECT_EQ(kindOf(r, "s"), FactorKind::Free);
}

TEST_F(OpRules, AttentionKeysAreSequenceMixing) {
  auto r =
      ruleOf(R"(func.func @f(%q: tensor<2x8x16xf32>, %k: tensor<2x8x8xf32>) -> tensor<2x8x16xf32> {
    %o = sl.attention %q, %k, %k {heads = 4, kv_heads = 2} : (tensor<2x8x16xf32>, tensor<2x8x8xf32>, tensor<2x8x8xf32>) -> tensor<2x8x16xf32>
    return %o : tensor<2x8x16xf32> })");
  EXPECT_EQ(kindOf(r, "t"), FactorKind::SequenceMixing);
  EXPECT_EQ(r.factors[r.findFactor("t")].remedy, Remedy::KVExchange);
  EXPECT_EQ(kindOf(r, "s"), FactorKind::Free);
  EXPECT_EQ(r.factors[r.findFactor("heads")].granule, 2);
  // Both positions are sequence factors; the queries' is the op's own.
  EXPECT_TRUE(r.factors[r.findFactor("t")].isSequence);
  EXPECT_EQ(r.primarySequence, r.findFactor("s"));
}

TEST_F(OpRules, RankOneActivationIsItsOwnSequence) {
  auto r = ruleOf(R"(func.func @f(%x: tensor<8xf32>) -> tensor<8xf32> {
    %y = sl.silu %x : (tensor<8xf32>) -> tensor<8xf32>
    return %y : tensor<8xf32> })");
  EXPECT_EQ(r.primarySequence, r.findFactor("t"));
}

TEST_F(OpRules, NormOfOneVectorHasNoSequence) {
  auto r = ruleOf(R"(func.func @f(%x: tensor<16xf32>, %w: tensor<16xf32>) -> tensor<16xf32> {
    %y = sl.rms_norm %x, %w : (tensor<16xf32>, tensor<16xf32>) -> tensor<16xf32>
    return %y : tensor<16xf32> })");
  EXPECT_EQ(r.primarySequence, -1);
}

TEST_F(OpRules, ScanSequenceIsStatePassing) {
  auto r = ruleOf(R"(func.func @f(%x: tensor<1x8x4xf32>, %v: tensor<4xf32>) -> tensor<1x8x4xf32> {
    %y, %s, %d = sl.rglru_scan %x, %v, %v, %v, %v, %v : (tensor<1x8x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<1x8x4xf32>, tensor<1x4xf32>, tensor<1x4xf32>)
    return %y : tensor<1x8x4xf32> })");
  EXPECT_EQ(kindOf(r, "s"), FactorKind::SequenceMixing);
  EXPECT_EQ(r.factors[r.findFactor("s")].remedy, Remedy::StatePassing);
  EXPECT_EQ(kindOf(r, "w"), FactorKind::Free);
}

TEST_F(OpRules, LinearContractsK) {
  auto r =
      ruleOf(R"(func.func @f(%x: tensor<2x8x16xf32>, %w: tensor<16x4xf32>) -> tensor<2x8x4xf32> {
    %y = sl.linear %x, %w : (tensor<2x8x16xf32>, tensor<16x4xf32>) -> tensor<2x8x4xf32>
    return %y : tensor<2x8x4xf32> })");
  EXPECT_EQ(kindOf(r, "k"), FactorKind::Contracted);
  EXPECT_EQ(r.partial, PartialRule::One);
}

TEST_F(OpRules, MoEExpertsSplitOverExperts) {
  auto r = ruleOf(
      R"(func.func @f(%t: tensor<4x1x8x16xf32>, %g: tensor<4x16x32xf32>, %d: tensor<4x32x16xf32>) -> tensor<4x1x8x16xf32> {
    %y = sl.moe_experts %t, %g, %g, %d : (tensor<4x1x8x16xf32>, tensor<4x16x32xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<4x1x8x16xf32>
    return %y : tensor<4x1x8x16xf32> })");
  EXPECT_EQ(kindOf(r, "experts"), FactorKind::Free);
  EXPECT_EQ(kindOf(r, "f"), FactorKind::Contracted);
}

TEST_F(OpRules, CrossEntropyVocabIsVocabParallel) {
  auto r = ruleOf(R"(func.func @f(%l: tensor<2x8x16xf32>, %y: tensor<2x8xi32>) -> tensor<f32> {
    %loss = sl.cross_entropy %l, %y : (tensor<2x8x16xf32>, tensor<2x8xi32>) -> tensor<f32>
    return %loss : tensor<f32> })");
  EXPECT_EQ(r.factors[r.findFactor("v")].remedy, Remedy::VocabParallel);
  EXPECT_TRUE(r.reducesToScalar);
}
