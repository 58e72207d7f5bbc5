//===- BlockFamilyTest.cpp - the registry of block families ---------------===//

#include "shardline/Model/BlockFamily.h"
#include "shardline/Dialect/SL/IR/SL.h"
#include "shardline/InitAll.h"

#include "mlir/IR/MLIRContext.h"

#include <gtest/gtest.h>

using namespace shardline;

namespace {

TEST(BlockFamily, EveryFamilyHasItsLetterSectionAndScope) {
  std::vector<std::string> got;
  for (const BlockFamily *f : blockFamilies())
    got.push_back(std::string(1, f->letter()) + " " + f->section().str() + " " + f->scope().str());
  EXPECT_EQ(got, (std::vector<std::string>{"A attention attn", "E moe moe", "F mlp mlp",
                                           "L local_attention local_attn", "M mamba mamba",
                                           "R recurrent rglru"}));
  for (const BlockFamily *f : blockFamilies())
    EXPECT_EQ(lookupBlockFamily(f->letter()), f);
}

TEST(BlockFamily, UnknownLetterHasNoFamily) {
  EXPECT_EQ(lookupBlockFamily('X'), nullptr);
  EXPECT_EQ(lookupBlockFamily('a'), nullptr);
  EXPECT_EQ(blockLetterList(), "A, E, F, L, M or R");
  std::vector<std::string> errors;
  auto spec = parseModelSpec(R"({"name": "x", "pattern": "AX", "vocab": 8, "hidden": 8,
    "seq": 8, "batch": 1, "attention": {"heads": 2, "head_dim": 4}})",
                             "x.json", {}, errors);
  EXPECT_FALSE(spec);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0],
            "x.json:1:15: pattern: unknown block letter 'X' at position 1 (expected A, E, F, L, "
            "M or R)");
}

// Each family parses its own section and its key errors name the section.
TEST(BlockFamily, SectionsAreReadByTheirFamily) {
  std::vector<std::string> errors;
  auto spec = parseModelSpec(R"({"name": "x", "pattern": "F", "vocab": 8, "hidden": 8,
    "seq": 8, "batch": 1, "mlp": {"ffn_hidden": 16}, "recurrent": {"width": 8}})",
                             "x.json", {}, errors);
  ASSERT_TRUE(spec) << errors[0];
  EXPECT_NE(spec->section('F'), nullptr);
  // A section may be given for a letter the pattern does not use.
  EXPECT_NE(spec->section('R'), nullptr);
  EXPECT_EQ(spec->section('A'), nullptr);

  errors.clear();
  EXPECT_FALSE(parseModelSpec(R"({"name": "x", "pattern": "R", "vocab": 8, "hidden": 8,
    "seq": 8, "batch": 1, "recurrent": {"widht": 8}})",
                              "x.json", {}, errors));
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_EQ(errors[0], "x.json:2:41: recurrent.widht: unknown key (expected one of: width, conv)");
  EXPECT_EQ(errors[1], "x.json:2:27: recurrent: missing required key 'width'");
}

struct ImportTest : ::testing::Test {
  ImportTest() {
    mlir::DialectRegistry registry;
    registerAllDialects(registry);
    ctx.appendDialectRegistry(registry);
    ctx.loadAllAvailableDialects();
  }

  mlir::OwningOpRef<mlir::ModuleOp> import(const std::string &text) {
    std::vector<std::string> errors;
    auto spec = parseModelSpec(text, "m.json", {}, errors);
    EXPECT_TRUE(spec) << (errors.empty() ? "" : errors[0]);
    if (!spec)
      return {};
    return importModel(*spec, ctx);
  }

  mlir::MLIRContext ctx;
};

const char *kAll = R"({"name": "m", "pattern": "AMERFL", "vocab": 64, "hidden": 32, "seq": 16,
  "batch": 2, "attention": {"heads": 4, "head_dim": 8},
  "mamba": {"heads": 4, "head_dim": 8, "state": 8},
  "moe": {"experts": 4, "top_k": 2, "ffn_hidden": 48}, "mlp": {"ffn_hidden": 64},
  "recurrent": {"width": 32}, "local_attention": {"heads": 2, "head_dim": 8, "window": 4}})";

// The defaults each family fills in reach the ops it builds.
TEST_F(ImportTest, FamilyDefaultsReachTheOps) {
  auto module = import(kAll);
  ASSERT_TRUE(module);
  int ropes = 0, convs = 0;
  module->walk([&](mlir::sl::RopeOp op) {
    EXPECT_EQ(op.getTheta().convertToDouble(), 10000.0);
    ++ropes;
  });
  module->walk([&](mlir::sl::AttentionOp op) { EXPECT_EQ(op.getKvHeads(), 4); });
  int locals = 0;
  module->walk([&](mlir::sl::LocalAttentionOp op) {
    EXPECT_EQ(op.getKvHeads(), 2);
    EXPECT_EQ(op.getWindow(), 4);
    ++locals;
  });
  EXPECT_EQ(locals, 1);
  module->walk([&](mlir::sl::SSDScanOp op) { EXPECT_EQ(op.getGroups(), 1); });
  module->walk([&](mlir::sl::WeightOp op) {
    if (op.getName().ends_with(".weight")) {
      EXPECT_EQ(op.getResult().getType().getDimSize(1), 4) << op.getName().str();
      ++convs;
    }
  });
  EXPECT_EQ(ropes, 4); // q and k of A and of L
  EXPECT_EQ(convs, 4); // conv_x, conv_B, conv_C of M and the conv of R
}

// Every op of block i says so (sl.block = i, sl.family = its letter); the
// embedding's and the head's ops name their part and no block.
TEST_F(ImportTest, EveryOpIsStampedWithItsBlockAndFamily) {
  auto module = import(kAll);
  ASSERT_TRUE(module);
  std::map<std::string, int> perPart;
  int64_t lastBlock = -1;
  module->walk([&](mlir::func::FuncOp fn) {
    for (mlir::Operation &op : fn.getBody().front()) {
      auto family = op.getAttrOfType<mlir::StringAttr>("sl.family");
      auto block = op.getAttrOfType<mlir::IntegerAttr>("sl.block");
      if (mlir::isa<mlir::func::ReturnOp>(op)) {
        EXPECT_FALSE(family || block);
        continue;
      }
      ASSERT_TRUE(family) << op.getName().getStringRef().str();
      ++perPart[family.str()];
      if (family == "embedding" || family == "lm_head") {
        EXPECT_FALSE(block) << op.getName().getStringRef().str();
        continue;
      }
      ASSERT_TRUE(block) << op.getName().getStringRef().str();
      // Blocks come in pattern order and each carries its own letter.
      EXPECT_GE(block.getInt(), lastBlock);
      lastBlock = block.getInt();
      EXPECT_EQ(family.str(), std::string(1, "AMERFL"[block.getInt()]));
    }
  });
  EXPECT_EQ(lastBlock, 5);
  // embedding: the table and the lookup; lm_head: final norm weight, norm, head
  // weight, head, loss.
  EXPECT_EQ(perPart["embedding"], 2);
  EXPECT_EQ(perPart["lm_head"], 5);
  // F: norm weight, norm, 3 x (weight, linear), swiglu, add.
  EXPECT_EQ(perPart["F"], 10);
}

// A spec changed in code after validation gets the validator's error, not a
// crash.
TEST_F(ImportTest, MissingSectionIsAnError) {
  std::vector<std::string> errors;
  auto spec = parseModelSpec(kAll, "m.json", {}, errors);
  ASSERT_TRUE(spec);
  spec->sections.erase('E');
  std::string diagnostic;
  mlir::ScopedDiagnosticHandler handler(&ctx, [&](mlir::Diagnostic &d) {
    diagnostic = d.str();
    return mlir::success();
  });
  EXPECT_FALSE(importModel(*spec, ctx));
  EXPECT_EQ(diagnostic, "m.json:1:15: pattern: block letter 'E' needs a \"moe\" section");
  spec->pattern = "AQ";
  EXPECT_FALSE(importModel(*spec, ctx));
  EXPECT_EQ(
      diagnostic,
      "m.json:1:15: pattern: unknown block letter 'Q' at position 1 (expected A, E, F, L, M or R)");
}

} // namespace
