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
            "m.json: parallel: dp*tp*cp*ep = more than 2^63 ranks; a mesh has at most 1048576");
}
