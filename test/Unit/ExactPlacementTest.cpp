//===- ExactPlacementTest.cpp - sl-elide-gathers' exact search and its limits ===//
//
// The search on test/Transforms/elide-exact.mlir (the moves reach 4096 bytes
// per rank, the optimum is 1056), and each limit of ExactLimits: beyond it
// the function is left exactly as it was, with the reason.
//
//===----------------------------------------------------------------------===//

#include "ExactPlacement.h"

#include "shardline/Analysis/Report.h"
#include "shardline/InitAll.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"

#include <gtest/gtest.h>

using namespace mlir;
using namespace mlir::sl;

namespace {

class ExactPlacement : public ::testing::Test {
protected:
  void SetUp() override {
    DialectRegistry registry;
    shardline::registerAllDialects(registry);
    ctx.appendDialectRegistry(registry);
    ctx.loadAllAvailableDialects();
  }

  OwningOpRef<ModuleOp> parse(const std::string &text) {
    return parseSourceString<ModuleOp>(text, &ctx);
  }
  OwningOpRef<ModuleOp> parseFile(const std::string &path) {
    return parseSourceFile<ModuleOp>(std::string(SHARDLINE_SOURCE_DIR) + "/" + path, &ctx);
  }
  static std::string print(Operation *op) {
    std::string s;
    llvm::raw_string_ostream os(s);
    op->print(os);
    return s;
  }
  static func::FuncOp mainOf(ModuleOp m) { return *m.getOps<func::FuncOp>().begin(); }

  /// Runs the search with `limits` and checks that it stops with a reason
  /// containing `why` and leaves the module as it was.
  void expectLeftAlone(const placement::ExactLimits &limits, placement::ExactResult::Status status,
                       const std::string &why) {
    auto module = parseFile("test/Transforms/elide-exact.mlir");
    ASSERT_TRUE(module);
    std::string before = print(*module);
    placement::RelayoutPrices prices;
    std::vector<placement::Change> changes;
    placement::ExactResult r = placement::placeExactly(mainOf(*module), prices, limits, changes);
    EXPECT_EQ(r.status, status);
    EXPECT_NE(r.why.find(why), std::string::npos) << r.why;
    EXPECT_TRUE(changes.empty());
    EXPECT_EQ(print(*module), before);
  }

  MLIRContext ctx;
};

TEST_F(ExactPlacement, ReachesTheOptimum) {
  auto module = parseFile("test/Transforms/elide-exact.mlir");
  ASSERT_TRUE(module);
  EXPECT_EQ(shardline::analyze(*module).commBytesPerRank, 5632);
  placement::RelayoutPrices prices;
  std::vector<placement::Change> changes;
  placement::ExactLimits limits;
  ASSERT_TRUE(placement::exactSearchMayFit(mainOf(*module), limits));
  placement::ExactResult r = placement::placeExactly(mainOf(*module), prices, limits, changes);
  ASSERT_EQ(r.status, placement::ExactResult::Status::Placed) << r.why;
  EXPECT_EQ(r.bytes, 1056);
  ASSERT_TRUE(succeeded(verify(*module)));
  // The search's price is the report's count of what it wrote.
  EXPECT_EQ(shardline::analyze(*module).commBytesPerRank, 1056);
  // All seven transitions went (two gathers, a slice, a reduce-scatter, two
  // all-to-alls and a reorder); the reduce-scatter written instead scatters
  // onto another dimension, so it is no repeat of the old one.
  EXPECT_EQ(changes.size(), 7u);
  for (const auto &c : changes)
    EXPECT_EQ(c.how, "re-placed by the exact search over every op's layout");
}

TEST_F(ExactPlacement, TooManyOps) {
  placement::ExactLimits limits;
  limits.maxOps = 4;
  auto module = parseFile("test/Transforms/elide-exact.mlir");
  ASSERT_TRUE(module);
  // Five ops besides the transitions, weights and return.
  EXPECT_FALSE(placement::exactSearchMayFit(mainOf(*module), limits));
  expectLeftAlone(limits, placement::ExactResult::Status::TooLarge, "5 ops with modes (at most 4)");
}

TEST_F(ExactPlacement, TooManyTableEntries) {
  placement::ExactLimits limits;
  limits.maxEntries = 100;
  expectLeftAlone(limits, placement::ExactResult::Status::TooLarge,
                  "the elimination would fill more than 100 table entries");
}

TEST_F(ExactPlacement, TooManyReaders) {
  placement::ExactLimits limits;
  limits.maxReaders = 0;
  expectLeftAlone(limits, placement::ExactResult::Status::TooLarge,
                  "a value read in up to 1 layouts (at most 0)");
}

TEST_F(ExactPlacement, NoLayouts) {
  auto module = parse(R"(
    func.func @plain(%x: tensor<2x8x16xf32>) -> tensor<2x8x16xf32> {
      %y = sl.silu %x : (tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
      return %y : tensor<2x8x16xf32>
    })");
  ASSERT_TRUE(module);
  placement::RelayoutPrices prices;
  std::vector<placement::Change> changes;
  placement::ExactResult r =
      placement::placeExactly(mainOf(*module), prices, placement::ExactLimits{}, changes);
  EXPECT_EQ(r.status, placement::ExactResult::Status::Unsupported);
  EXPECT_EQ(r.why, "no value has a layout");
}

} // namespace
