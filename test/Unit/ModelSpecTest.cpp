//===- ModelSpecTest.cpp - parsing and validating model specs -----------===//

#include "shardline/Model/ModelSpec.h"

#include <gtest/gtest.h>

using namespace shardline;

namespace {
const char *kDense = R"({
  "name": "d", "pattern": "AF", "vocab": 64, "hidden": 32, "seq": 16, "batch": 2,
  "attention": {"heads": 4, "kv_heads": 2, "head_dim": 8},
  "mlp": {"ffn_hidden": 64}
})";

std::vector<std::string> errorsOf(const std::string &text, ParallelOverrides ov = {}) {
  std::vector<std::string> errors;
  auto spec = parseModelSpec(text, "m.json", ov, errors);
  EXPECT_EQ(spec.has_value(), errors.empty());
  return errors;
}
} // namespace

TEST(ModelSpec, DefaultsWhenParallelIsAbsent) {
  std::vector<std::string> errors;
  auto spec = parseModelSpec(kDense, "m.json", {}, errors);
  ASSERT_TRUE(spec) << (errors.empty() ? "" : errors[0]);
  EXPECT_EQ(spec->parallel.tp, 1);
  EXPECT_EQ(spec->parallel.cp, 1);
  EXPECT_FALSE(spec->parallel.sp);
  EXPECT_EQ(spec->parallel.cpComm, "ring");
}

TEST(ModelSpec, OverridesReplaceTheSection) {
  ParallelOverrides ov;
  ov.tp = 2;
  ov.sp = true;
  ov.cpComm = "allgather";
  std::vector<std::string> errors;
  auto spec = parseModelSpec(kDense, "m.json", ov, errors);
  ASSERT_TRUE(spec);
  EXPECT_EQ(spec->parallel.tp, 2);
  EXPECT_TRUE(spec->parallel.sp);
  EXPECT_EQ(spec->parallel.cpComm, "allgather");
}

TEST(ModelSpec, MalformedJsonHasLineAndColumn) {
  auto errors = errorsOf("{\n  \"name\": \"x\",\n  \"pattern\" \"A\"\n}");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].rfind("m.json:3:", 0), 0u) << errors[0];
  EXPECT_NE(errors[0].find("malformed JSON"), std::string::npos);
}

TEST(ModelSpec, WrongTypeNamesKeyAndLine) {
  std::string text = kDense;
  text.replace(text.find("\"hidden\": 32"), 12, "\"hidden\": \"32\"");
  auto errors = errorsOf(text);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0], "m.json:2:46: hidden: expected a positive integer, got \"32\"");
}

TEST(ModelSpec, TpMustDivideHeads) {
  ParallelOverrides ov;
  ov.tp = 8;
  auto errors = errorsOf(kDense, ov);
  bool heads = false, kv = false;
  for (auto &e : errors) {
    heads |= e.find("attention.heads: 4 is not divisible by tp = 8") != std::string::npos;
    kv |= e.find("attention.kv_heads: 2 is not divisible by tp = 8") != std::string::npos;
  }
  EXPECT_TRUE(heads && kv);
}

TEST(ModelSpec, ReportsEveryProblemAtOnce) {
  auto errors = errorsOf(R"({"name": "x", "pattern": "AQ", "vocab": -1, "hidden": 8,
                           "seq": 8, "batch": 1})");
  EXPECT_EQ(errors.size(), 1u); // type errors stop before validation
  EXPECT_NE(errors[0].find("vocab: must be positive, got -1"), std::string::npos);
}

TEST(ModelSpec, DeepNestingIsRefusedBeforeParsing) {
  // The JSON parser recurses per level: 100,000 levels overflowed its stack.
  std::string text = "{\"batch\": " + std::string(100000, '[') + std::string(100000, ']') + "}";
  auto errors = errorsOf(text);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0], "m.json:1:74: nesting deeper than 64 levels (the limit on nested objects "
                       "and arrays)");
}

TEST(ModelSpec, PatternLongerThanTheLimit) {
  std::string text = kDense;
  text.replace(text.find("\"AF\""), 4, "\"" + std::string(400000, 'F') + "\"");
  auto errors = errorsOf(text);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0], "m.json:2:16: pattern: has 400000 blocks; at most 4096 are supported");
}

TEST(ModelSpec, RanksOverTheMeshLimitFromTheFlags) {
  ParallelOverrides ov;
  ov.dp = int64_t(1) << 40;
  ov.tp = int64_t(1) << 40;
  auto errors = errorsOf(kDense, ov);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0],
            "m.json: parallel: dp*cp*tp = more than 2^63 ranks; a mesh has at most 1048576");
}

namespace {
ParallelSpec strategy(int64_t dp, int64_t cp, int64_t tp, bool sp, int64_t ep) {
  ParallelSpec p;
  p.dp = dp, p.cp = cp, p.tp = tp, p.sp = sp, p.ep = ep;
  return p;
}

/// The mesh as "name=size ..." and the expert group's axes, or the error.
std::string foldOf(const ParallelSpec &p) {
  std::string error;
  std::optional<StrategyMesh> mesh = foldStrategyMesh(p, error);
  if (!mesh)
    return "error: " + error;
  std::string out;
  for (const auto &[name, n] : mesh->axes)
    out += name + "=" + std::to_string(n) + " ";
  out += "ep:";
  for (const std::string &a : mesh->parts["ep"])
    out += " " + a;
  return out;
}
} // namespace

// Megatron Core's folding: ep adds no ranks and takes the innermost ones that
// hold different tokens, tp (under sp) first, then cp, then dp.
TEST(StrategyMesh, EpFoldsOntoTheInnermostTokenAxes) {
  EXPECT_EQ(foldOf(strategy(2, 2, 2, true, 1)), "dp=2 cp=2 tp=2 ep:");
  EXPECT_EQ(foldOf(strategy(2, 2, 2, true, 2)), "dp=2 cp=2 tp=2 ep: tp");
  EXPECT_EQ(foldOf(strategy(2, 2, 2, true, 4)), "dp=2 cp=2 tp=2 ep: cp tp");
  EXPECT_EQ(foldOf(strategy(2, 2, 2, true, 8)), "dp=2 cp=2 tp=2 ep: dp cp tp");
  // Axes of size 1 are passed over; without sp, tp = 1 holds no tokens apart.
  EXPECT_EQ(foldOf(strategy(4, 1, 1, false, 2)), "dp_outer=2 dp_inner=2 cp=1 tp=1 ep: dp_inner");
  EXPECT_EQ(foldOf(strategy(2, 2, 1, false, 2)), "dp=2 cp=2 tp=1 ep: cp");
}

// An axis the group covers in part is cut: its outer part, then its inner
// part inside the group, the same ranks in the same order.
TEST(StrategyMesh, APartlyCoveredAxisIsCut) {
  EXPECT_EQ(foldOf(strategy(1, 1, 4, true, 2)), "dp=1 cp=1 tp_outer=2 tp_inner=2 ep: tp_inner");
  EXPECT_EQ(foldOf(strategy(1, 4, 2, true, 4)), "dp=1 cp_outer=2 cp_inner=2 tp=2 ep: cp_inner tp");
  EXPECT_EQ(foldOf(strategy(2, 6, 2, true, 4)), "dp=2 cp_outer=3 cp_inner=2 tp=2 ep: cp_inner tp");
  std::string error;
  std::optional<StrategyMesh> mesh = foldStrategyMesh(strategy(1, 4, 2, true, 4), error);
  ASSERT_TRUE(mesh);
  EXPECT_EQ(mesh->parts["cp"], (std::vector<std::string>{"cp_outer", "cp_inner"}));
  EXPECT_EQ(mesh->parts["tp"], (std::vector<std::string>{"tp"}));
}

TEST(StrategyMesh, EpThatDoesNotFoldIsRefused) {
  EXPECT_EQ(foldOf(strategy(2, 2, 2, false, 2)),
            "error: ep = 2 with tp = 2 needs sequence parallelism (--sp), as in Megatron Core: "
            "the expert group takes the innermost ranks, the tp ranks first, and only under "
            "sequence parallelism do they hold different tokens");
  EXPECT_EQ(foldOf(strategy(2, 2, 2, true, 3)),
            "error: ep = 3 does not fold onto the ranks that hold different tokens in the MoE "
            "layers: ep takes them innermost first, tp (2), then cp (2), then dp (2), whole axes "
            "and then a divisor of the next one, so ep must be 1, 2, 4 or 8");
  // 2 of tp's 4 and then cp: the group would not be consecutive ranks.
  EXPECT_EQ(foldOf(strategy(1, 3, 4, true, 6)),
            "error: ep = 6 does not fold onto the ranks that hold different tokens in the MoE "
            "layers: ep takes them innermost first, tp (4), then cp (3), whole axes and then a "
            "divisor of the next one, so ep must be 1, 2, 4 or 12");
  EXPECT_EQ(foldOf(strategy(1, 1, 1, false, 2)),
            "error: ep = 2 does not fold onto the ranks that hold different tokens in the MoE "
            "layers: there are none (dp = cp = tp = 1), so ep must be 1");
}

TEST(ModelSpec, BatchIsSplitOverDpOnly) {
  ParallelOverrides ov;
  ov.cp = 2;
  ov.ep = 2;
  EXPECT_TRUE(errorsOf(kDense, ov).empty());
  ov.dp = 4;
  auto errors = errorsOf(kDense, ov);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0], "m.json:2:71: batch: 2 is not divisible by dp (batch is split over dp) = 4");
}
