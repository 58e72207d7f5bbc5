//===- ReportTest.cpp - bytes, residency and the closed forms of DESIGN §3 ===//

#include "shardline/Analysis/Report.h"
#include "shardline/Analysis/MemoryPlan.h"
#include "shardline/Dialect/SL/Transforms/Passes.h"
#include "shardline/InitAll.h"
#include "shardline/Model/ModelSpec.h"
#include "shardline/Plan/EmitPlan.h"

#include "core/plan.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"

#include <gtest/gtest.h>

#include <map>

using namespace shardline;

namespace {
struct ReportTest : ::testing::Test {
  ReportTest() {
    mlir::DialectRegistry registry;
    registerAllDialects(registry);
    ctx.appendDialectRegistry(registry);
    ctx.loadAllAvailableDialects();
  }

  Report ofIR(const std::string &ir) {
    module = mlir::parseSourceString<mlir::ModuleOp>(ir, &ctx);
    EXPECT_TRUE(module);
    return analyze(*module);
  }

  /// Imports a spec with the given overrides and runs sl-shard-pipeline
  /// (with the backward and the optimizer when `train`).
  Report compile(const std::string &spec, ParallelOverrides ov, bool train = false) {
    std::vector<std::string> errors;
    auto parsed = parseModelSpec(spec, "spec.json", ov, errors);
    EXPECT_TRUE(parsed) << (errors.empty() ? "" : errors[0]);
    module = importModel(*parsed, ctx);
    mlir::PassManager pm(&ctx);
    mlir::sl::buildShardPipeline(pm, "", train);
    EXPECT_TRUE(mlir::succeeded(pm.run(*module)));
    return analyze(*module);
  }

  /// Local bytes of every residual-stream value (the results of sl.add).
  std::vector<int64_t> streamBytes() {
    std::vector<int64_t> out;
    mlir::sl::MeshOp mesh = *module->getOps<mlir::sl::MeshOp>().begin();
    Mesh m = mlir::sl::toMesh(mesh);
    module->walk([&](mlir::sl::AddOp add) {
      auto t = add.getResult().getType();
      std::vector<int64_t> shape(t.getShape().begin(), t.getShape().end());
      out.push_back(numElements(localShape(mlir::sl::toLayout(mlir::sl::getLayout(t)), m, shape)) *
                    4);
    });
    return out;
  }

  int64_t bytesOver(const Report &r, const std::string &axis) {
    int64_t total = 0;
    for (const auto &c : r.collectives)
      if (std::find(c.axes.begin(), c.axes.end(), axis) != c.axes.end())
        total += c.bytesPerRank;
    return total;
  }

  mlir::MLIRContext ctx;
  mlir::OwningOpRef<mlir::ModuleOp> module;
};

const char *kDense = R"({"name": "d", "pattern": "AFAF", "vocab": 64, "hidden": 32, "seq": 32,
  "batch": 2, "attention": {"heads": 4, "kv_heads": 4, "head_dim": 8}, "mlp": {"ffn_hidden": 64}})";

std::string scanModel(int64_t seq) {
  return R"({"name": "s", "pattern": "MR", "vocab": 64, "hidden": 32, "seq": )" +
         std::to_string(seq) + R"(, "batch": 2,
    "mamba": {"heads": 4, "head_dim": 8, "state": 8, "groups": 2, "conv": 4},
    "recurrent": {"width": 32, "conv": 4}})";
}
} // namespace

TEST_F(ReportTest, BytesFollowTheConventions) {
  Report r = ofIR(R"(
    sl.mesh @mesh(cp = 2, tp = 2)
    func.func @f(%x: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>,
                 %p: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp], []], partial = [tp]>>)
        -> (tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>, tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>) {
      %g = sl.all_gather %x {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp, tp], []]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>
      %s = sl.reduce_scatter %p {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp], []], partial = [tp]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>
      %a = sl.all_reduce %p {axes = ["tp"]} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp], []], partial = [tp]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>
      return %g, %s, %a : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>, tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>
    })");
  ASSERT_EQ(r.collectives.size(), 3u);
  // A rank holds 2x4x16 f32 = 512 bytes of the gathered value; g = 2.
  EXPECT_EQ(r.collectives[0].bytesPerRank, 256);
  EXPECT_EQ(r.collectives[1].bytesPerRank, 256);
  EXPECT_EQ(r.collectives[2].bytesPerRank, 512);
  // SP's all-gather + reduce-scatter move exactly an all-reduce's bytes.
  EXPECT_EQ(r.collectives[0].bytesPerRank + r.collectives[1].bytesPerRank,
            r.collectives[2].bytesPerRank);
  EXPECT_EQ(r.commBytesPerRank, 1024);
  // Liveness: %x (256 B) dies after the gather; at the all_reduce %p (512),
  // %g (512), %s (256) and %a (512) are live.
  EXPECT_EQ(r.peakActivationBytesPerRank, 512 + 512 + 256 + 512);
}

// The collectives that are not gathers or scatters, each on a value whose
// local shape is easy to count by hand (cp = tp = 2, f32).
TEST_F(ReportTest, ExchangesFollowTheConventions) {
  Report r = ofIR(R"(
    sl.mesh @mesh(cp = 2, tp = 2)
    func.func @f(%x: tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>,
                 %s: tensor<2x1x16xf32, #sl.layout<@mesh, [[cp], [], []]>>,
                 %q: tensor<2x8x32xf32, #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>>,
                 %k: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>>,
                 %l: tensor<2x8x32xf32, #sl.layout<@mesh, [[], [cp], [tp]]>>,
                 %y: tensor<2x8xi32, #sl.layout<@mesh, [[], [cp]]>>,
                 %t: tensor<4x2x8x16xf32, #sl.layout<@mesh, [[], [tp], [], []]>>) {
      %h = sl.halo %x {axes = ["cp"], width = 3} : tensor<1x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>> -> tensor<1x6x16xf32, #sl.layout<@mesh, [[], [cp], []]>>
      %i = sl.scan_state_exchange %s, %s {axes = ["cp"]} : (tensor<2x1x16xf32, #sl.layout<@mesh, [[cp], [], []]>>, tensor<2x1x16xf32, #sl.layout<@mesh, [[cp], [], []]>>) -> tensor<2x1x16xf32, #sl.layout<@mesh, [[cp], [], []]>>
      %o = sl.ring_attention %q, %k, %k {heads = 4, kv_heads = 2, axes = ["cp"]} : (tensor<2x8x32xf32, #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>>, tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>>, tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>>) -> tensor<2x8x32xf32, #sl.layout<@mesh, [[], [cp] zigzag, [tp]]>>
      %e = sl.cross_entropy %l, %y {vocab_axes = ["tp"]} : (tensor<2x8x32xf32, #sl.layout<@mesh, [[], [cp], [tp]]>>, tensor<2x8xi32, #sl.layout<@mesh, [[], [cp]]>>) -> tensor<f32, #sl.layout<@mesh, [], partial = [cp]>>
      %m = sl.all_reduce %e {axes = ["cp"]} : tensor<f32, #sl.layout<@mesh, [], partial = [cp]>> -> tensor<f32, #sl.layout<@mesh, []>>
      %a = sl.all_to_all %t {axes = ["tp"], split_dim = 0, concat_dim = 1} : tensor<4x2x8x16xf32, #sl.layout<@mesh, [[], [tp], [], []]>> -> tensor<4x2x8x16xf32, #sl.layout<@mesh, [[tp], [], [], []]>>
      return
    })");
  std::vector<std::pair<std::string, int64_t>> got;
  for (const auto &c : r.collectives)
    got.push_back({c.op, c.bytesPerRank});
  std::vector<std::pair<std::string, int64_t>> want = {
      // cp rank 1 holds tokens 4..7; tokens 1..3 are rank 0's: 3 rows of 16 f32.
      {"halo", 3 * 16 * 4},
      // (g-1) x (local states + local decays), each 1x1x16 f32.
      {"scan_state_exchange", 1 * (64 + 64)},
      // (g-1) x (local K + local V), each 2x4x8 f32.
      {"ring_attention", 1 * (256 + 256)},
      // Three per-token f32 vectors over 2x4 local tokens, exchanged whole.
      {"all_reduce", 1 * 8 * 4},
      {"all_reduce", 1 * 8 * 4},
      {"all_reduce", 1 * 8 * 4},
      // A scalar cannot be scattered: (g-1) x 4 bytes.
      {"all_reduce", 1 * 4},
      // (g-1)/g x the local operand, 4x1x8x16 f32.
      {"all_to_all", 2048 / 2},
  };
  EXPECT_EQ(got, want);
  EXPECT_EQ(r.collectiveCounts["all_reduce"], 4);
  EXPECT_EQ(r.commBytesPerRank, 192 + 128 + 512 + 96 + 4 + 1024);
  for (const auto &c : r.collectives)
    if (c.op == "all_reduce" && c.bytesPerRank == 32)
      EXPECT_EQ(c.axes, std::vector<std::string>{"tp"});
}

// SP's identity on the byte helpers, for every group size g and full size B
// that g divides (always the case: a gathered dimension splits evenly).
TEST_F(ReportTest, GatherPlusScatterIsAnAllReduce) {
  for (int64_t g : {1, 2, 3, 4, 8})
    for (int64_t full : {0, 96, 24 * 1024, 3 * 5 * 7 * 64}) {
      EXPECT_EQ(allGatherBytes(g, full) + reduceScatterBytes(g, full), allReduceBytes(g, full))
          << "g=" << g << " B=" << full;
      EXPECT_EQ(allGatherBytes(g, full) * g, (g - 1) * full);
    }
}

// Each op states its own bytes (SPMDOpInterface::sentBytesPerRank); the ops
// that move nothing between ranks (a local slice, a cross-entropy without
// vocab axes, a compute op) say -1 and are no collectives of the report.
TEST_F(ReportTest, OnlyOpsThatMoveDataStateBytes) {
  Report r = ofIR(R"(
    sl.mesh @mesh(tp = 2)
    func.func @f(%x: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>,
                 %y: tensor<2x8xi32, #sl.layout<@mesh, [[], []]>>) {
      %s = sl.slice %x {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>>
      %a = sl.add %s, %s : (tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>>, tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>>) -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>>
      %e = sl.cross_entropy %x, %y : (tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>, tensor<2x8xi32, #sl.layout<@mesh, [[], []]>>) -> tensor<f32, #sl.layout<@mesh, []>>
      %g = sl.all_gather %a {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [tp], []]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [], []]>>
      return
    })");
  ASSERT_EQ(r.collectives.size(), 1u);
  EXPECT_EQ(r.collectives[0].op, "all_gather");
  Mesh mesh = mlir::sl::toMesh(*module->getOps<mlir::sl::MeshOp>().begin());
  int asked = 0;
  module->walk([&](mlir::sl::SPMDOpInterface op) {
    // The gathered result is 2x8x16 f32 (1024 bytes); g = 2 sends half.
    int64_t want = mlir::isa<mlir::sl::AllGatherOp>(op) ? 512 : -1;
    EXPECT_EQ(op.sentBytesPerRank(mesh), want) << op->getName().getStringRef().str();
    EXPECT_EQ(collectiveBytesPerRank(op), want) << op->getName().getStringRef().str();
    ++asked;
  });
  EXPECT_EQ(asked, 4);
}

TEST_F(ReportTest, ReorderCountsRowsThatMove) {
  Report r = ofIR(R"(
    sl.mesh @mesh(cp = 2)
    func.func @f(%x: tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>>) -> tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>> {
      %z = sl.reorder %x : tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp], []]>> -> tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>
      return %z : tensor<1x8x4xf32, #sl.layout<@mesh, [[], [cp] zigzag, []]>>
    })");
  // Contiguous rank 0 holds chunks 0,1 of 4, zigzag rank 0 holds 0,3: one
  // chunk of 2 tokens x 4 f32 leaves.
  ASSERT_EQ(r.collectives.size(), 1u);
  EXPECT_EQ(r.collectives[0].bytesPerRank, 2 * 4 * 4);
}

TEST_F(ReportTest, SequenceParallelMovesTheBytesOfTensorParallel) {
  ParallelOverrides sp, tp;
  sp.tp = tp.tp = 2;
  sp.sp = true;
  tp.sp = false;
  Report withSP = compile(kDense, sp);
  std::vector<int64_t> spStream = streamBytes();
  Report withoutSP = compile(kDense, tp);
  std::vector<int64_t> tpStream = streamBytes();
  EXPECT_EQ(withSP.commBytesPerRank, withoutSP.commBytesPerRank);
  EXPECT_EQ(withSP.collectiveCounts["all_gather"], withoutSP.collectiveCounts["all_reduce"] - 3);
  // Between blocks, each rank holds 1/t of the stream.
  ASSERT_EQ(spStream.size(), tpStream.size());
  for (size_t i = 0; i < spStream.size(); ++i)
    EXPECT_EQ(spStream[i] * 2, tpStream[i]);
  EXPECT_LT(withSP.liveBytesLowerBound, withoutSP.liveBytesLowerBound);
  EXPECT_GE(withSP.peakActivationBytesPerRank, withSP.liveBytesLowerBound);
}

TEST_F(ReportTest, ScanBytesOverCpDoNotGrowWithTheSequence) {
  ParallelOverrides cp;
  cp.cp = 2;
  Report shortSeq = compile(scanModel(64), cp);
  Report longSeq = compile(scanModel(128), cp);
  EXPECT_GT(bytesOver(shortSeq, "cp"), 0);
  EXPECT_EQ(bytesOver(shortSeq, "cp"), bytesOver(longSeq, "cp"));
  EXPECT_EQ(shortSeq.collectiveCounts["scan_state_exchange"], 2);
  EXPECT_EQ(shortSeq.collectiveCounts["halo"], 4);
}

TEST_F(ReportTest, RingSendsCpMinusOneTimesTheLocalKeysAndValues) {
  ParallelOverrides cp;
  cp.cp = 4;
  Report r = compile(R"({"name": "a", "pattern": "A", "vocab": 64, "hidden": 32, "seq": 64,
    "batch": 2, "attention": {"heads": 4, "kv_heads": 2, "head_dim": 8}})",
                     cp);
  ASSERT_EQ(r.collectiveCounts["ring_attention"], 1);
  // Local K and V: batch 2 x 16 tokens x (2 kv heads x 8) f32 each.
  int64_t localKV = 2 * (2 * 16 * 16 * 4);
  for (const auto &c : r.collectives)
    if (c.op == "ring_attention")
      EXPECT_EQ(c.bytesPerRank, 3 * localKV);
}

// The halo over zigzag cp with tp inside: each rank's two local chunks, and
// the tokens before each that another rank holds (cp = tp = 2, 16 tokens in
// chunks of 4, width 3).
TEST_F(ReportTest, HaloCountsRemoteTokensBeforeEachLocalChunk) {
  Report r = ofIR(R"(
    sl.mesh @mesh(cp = 2, tp = 2)
    func.func @f(%x: tensor<1x16x4xf32, #sl.layout<@mesh, [[], [cp, tp] zigzag, []]>>) {
      %h = sl.halo %x {axes = ["cp", "tp"], width = 3} : tensor<1x16x4xf32, #sl.layout<@mesh, [[], [cp, tp] zigzag, []]>> -> tensor<1x24x4xf32, #sl.layout<@mesh, [[], [cp, tp] zigzag, []]>>
      return
    })");
  ASSERT_EQ(r.collectives.size(), 1u);
  // (cp 0, tp 1) holds 12..15 as chunks 12..13 and 14..15: 9..11 are remote
  // before the first, 11 before the second; every other rank also needs 4
  // rows, (cp 0, tp 0) none. 4 rows of 4 f32.
  EXPECT_EQ(r.collectives[0].bytesPerRank, 4 * 4 * 4);
}

// Blocks come from the sl.block / sl.family stamps; an op the passes inserted
// at a stamped op's location belongs to that op's block; an op with neither
// is in no block.
TEST_F(ReportTest, StampsPlaceOpsInBlocks) {
  Report r = ofIR(R"(
    sl.mesh @mesh(tp = 2)
    func.func @f(%x: tensor<2x8xf32, #sl.layout<@mesh, [[], [tp]]>>) -> tensor<2x8xf32, #sl.layout<@mesh, [[], []]>> {
      %a = sl.all_gather %x {axes = ["tp"], dim = 1} : tensor<2x8xf32, #sl.layout<@mesh, [[], [tp]]>> -> tensor<2x8xf32, #sl.layout<@mesh, [[], []]>> loc("blocks.7.A")
      %b = sl.add %a, %a {sl.block = 7 : i64, sl.family = "A"} : (tensor<2x8xf32, #sl.layout<@mesh, [[], []]>>, tensor<2x8xf32, #sl.layout<@mesh, [[], []]>>) -> tensor<2x8xf32, #sl.layout<@mesh, [[], []]>> loc("blocks.7.A")
      %c = sl.all_gather %x {axes = ["tp"], dim = 1, sl.family = "lm_head"} : tensor<2x8xf32, #sl.layout<@mesh, [[], [tp]]>> -> tensor<2x8xf32, #sl.layout<@mesh, [[], []]>>
      %d = sl.all_gather %x {axes = ["tp"], dim = 1} : tensor<2x8xf32, #sl.layout<@mesh, [[], [tp]]>> -> tensor<2x8xf32, #sl.layout<@mesh, [[], []]>> loc("blocks.3.F")
      return %b : tensor<2x8xf32, #sl.layout<@mesh, [[], []]>>
    })");
  ASSERT_EQ(r.collectives.size(), 3u);
  EXPECT_EQ(r.collectives[0].block, 7);
  EXPECT_EQ(r.collectives[0].family, "A");
  EXPECT_EQ(r.collectives[1].block, -1);
  EXPECT_EQ(r.collectives[1].family, "lm_head");
  // A name alone places nothing.
  EXPECT_EQ(r.collectives[2].block, -1);
  EXPECT_EQ(r.collectives[2].family, "");
  std::vector<std::pair<int64_t, std::string>> blocks;
  for (const auto &b : r.blocks)
    blocks.push_back({b.block, b.family});
  EXPECT_EQ(blocks,
            (std::vector<std::pair<int64_t, std::string>>{{7, "A"}, {-1, "lm_head"}, {-1, ""}}));
  // Half of the 64 gathered bytes.
  EXPECT_EQ(r.blocks[0].commBytes, 32);
}

// The importer stamps every op; the report's blocks follow the pattern, and a
// block's peak is the memory plan's liveness at its ops.
TEST_F(ReportTest, ImportedOpsCarryTheirBlock) {
  std::vector<std::string> errors;
  ParallelOverrides ov;
  ov.tp = 2;
  ov.sp = true;
  auto spec = parseModelSpec(kDense, "spec.json", ov, errors);
  ASSERT_TRUE(spec);
  module = importModel(*spec, ctx);
  int unstamped = 0;
  module->walk([&](mlir::func::FuncOp fn) {
    for (mlir::Operation &op : fn.getBody().front())
      unstamped +=
          !op.hasTrait<mlir::OpTrait::IsTerminator>() && !op.hasAttr(mlir::sl::kFamilyAttr);
  });
  EXPECT_EQ(unstamped, 0);
  Report r = compile(kDense, ov);
  std::vector<std::pair<int64_t, std::string>> blocks;
  int64_t highest = 0;
  for (const auto &b : r.blocks) {
    blocks.push_back({b.block, b.family});
    highest = std::max(highest, b.peakLiveBytes);
  }
  EXPECT_EQ(blocks,
            (std::vector<std::pair<int64_t, std::string>>{
                {-1, "embedding"}, {0, "A"}, {1, "F"}, {2, "A"}, {3, "F"}, {-1, "lm_head"}}));
  EXPECT_EQ(highest, r.liveBytesLowerBound);
  for (const auto &c : r.collectives)
    EXPECT_FALSE(c.family.empty()) << c.op << " at " << c.location;
}

// The compiler's plan loads in the runtime, with every weight, input and op.
TEST_F(ReportTest, PlanRoundTripsIntoTheRuntime) {
  ParallelOverrides ov;
  ov.tp = ov.cp = ov.dp = ov.ep = 2;
  ov.sp = true;
  std::vector<std::string> errors;
  auto spec = parseModelSpec(R"({"name": "n", "pattern": "AEMR", "vocab": 64, "hidden": 32,
    "seq": 32, "batch": 2, "attention": {"heads": 4, "kv_heads": 2, "head_dim": 8},
    "mamba": {"heads": 4, "head_dim": 8, "state": 8, "groups": 2, "conv": 4},
    "moe": {"experts": 4, "top_k": 2, "ffn_hidden": 48}, "recurrent": {"width": 32, "conv": 4}})",
                             "n.json", ov, errors);
  ASSERT_TRUE(spec);
  Report r = compile(spec->text, ov);
  auto bytes = emitPlan(*module);
  ASSERT_TRUE(mlir::succeeded(bytes));
  std::string error;
  auto plan = rt::loadPlan(*bytes, error);
  ASSERT_TRUE(plan) << error;
  EXPECT_EQ(plan->ranks(), 8);
  EXPECT_EQ(plan->root()->model()->str(), "n");
  EXPECT_EQ(plan->root()->inputs()->size(), 2u);
  EXPECT_EQ(plan->root()->outputs()->size(), 2u);
  int weights = 0, ops = 0, collectives = 0;
  module->walk([&](mlir::Operation *op) {
    if (mlir::isa<mlir::sl::WeightOp>(op))
      ++weights;
    else if (op->getDialect() && op->getDialect()->getNamespace() == "sl" &&
             !mlir::isa<mlir::sl::MeshOp>(op))
      ++ops;
  });
  int planWeights = 0;
  for (const auto *t : *plan->root()->tensors())
    planWeights += t->role() == plan::Role::Weight;
  EXPECT_EQ(planWeights, weights);
  EXPECT_EQ((int)plan->root()->ops()->size(), ops);
  for (const auto *op : *plan->root()->ops())
    collectives += op->kind()->str() == "all_gather" || op->kind()->str() == "reduce_scatter";
  EXPECT_EQ(collectives, r.collectiveCounts["all_gather"] + r.collectiveCounts["reduce_scatter"]);
  // The arena: activations and inputs placed, weights not; its size is the
  // report's peak.
  EXPECT_EQ(plan->root()->arena_bytes(), r.peakActivationBytesPerRank);
  for (const auto *t : *plan->root()->tensors())
    EXPECT_EQ(t->arena_offset() < 0, t->role() == plan::Role::Weight);
  // Two compilations of one model give one content hash.
  auto again = emitPlan(*module);
  EXPECT_EQ(*again, *bytes);
}

// The arena never lets two values that are live at one op share bytes.
TEST_F(ReportTest, ArenaKeepsLiveValuesApart) {
  ParallelOverrides ov;
  ov.tp = ov.cp = ov.ep = 2;
  ov.sp = true;
  std::string spec = R"({"name": "n", "pattern": "AEMRF", "vocab": 64, "hidden": 32, "seq": 32,
    "batch": 2, "attention": {"heads": 4, "kv_heads": 2, "head_dim": 8},
    "mamba": {"heads": 4, "head_dim": 8, "state": 8, "groups": 2, "conv": 4},
    "moe": {"experts": 4, "top_k": 2, "ffn_hidden": 48}, "recurrent": {"width": 32, "conv": 4},
    "mlp": {"ffn_hidden": 64}})";
  Report r = compile(spec, ov);
  auto fn = *module->getOps<mlir::func::FuncOp>().begin();
  Mesh mesh = mlir::sl::toMesh(*module->getOps<mlir::sl::MeshOp>().begin());
  ArenaPlan plan = planArena(fn, mesh);
  EXPECT_EQ(plan.highWater, r.peakActivationBytesPerRank);
  EXPECT_GE(plan.highWater, plan.liveBound());
  // Lifetimes in op order.
  struct Span {
    int64_t from, to, offset, bytes;
  };
  std::vector<Span> spans;
  llvm::DenseMap<mlir::Value, int64_t> last;
  std::vector<mlir::Operation *> ops;
  for (mlir::Operation &op : fn.getBody().front()) {
    for (mlir::Value v : op.getOperands())
      last[v] = (int64_t)ops.size();
    ops.push_back(&op);
  }
  auto add = [&](mlir::Value v, int64_t at) {
    auto it = plan.offsets.find(v);
    ASSERT_NE(it, plan.offsets.end());
    EXPECT_EQ(it->second % kArenaAlignment, 0);
    spans.push_back({at, last.count(v) ? last[v] : at, it->second, mlir::sl::localBytes(v, mesh)});
  };
  for (mlir::BlockArgument a : fn.getArguments())
    add(a, 0);
  for (int64_t i = 0; i < (int64_t)ops.size(); ++i)
    if (!mlir::isa<mlir::sl::WeightOp>(ops[i]))
      for (mlir::Value v : ops[i]->getResults())
        add(v, i);
  for (size_t a = 0; a < spans.size(); ++a)
    for (size_t b = a + 1; b < spans.size(); ++b) {
      bool together = spans[a].from <= spans[b].to && spans[b].from <= spans[a].to;
      bool sharing = spans[a].offset < spans[b].offset + spans[b].bytes &&
                     spans[b].offset < spans[a].offset + spans[a].bytes;
      EXPECT_FALSE(together && sharing) << "values " << a << " and " << b;
    }
}

namespace {
/// One MoE block of `experts` experts, top-2, hidden 32, on [4, 64] tokens;
/// `factor` 0 is the dropless path.
std::string moeModel(int64_t experts, double factor) {
  std::string capacity = factor > 0 ? R"(, "capacity_factor": )" + std::to_string(factor) : "";
  return R"({"name": "e", "pattern": "E", "vocab": 64, "hidden": 32, "seq": 64, "batch": 4,
    "moe": {"experts": )" +
         std::to_string(experts) + R"(, "top_k": 2, "ffn_hidden": 64)" + capacity + "}}";
}

/// The strategy dp x cp x tp (sp on) with ep and etp folded onto it.
ParallelOverrides expertStrategy(int64_t dp, int64_t cp, int64_t tp, int64_t ep, int64_t etp) {
  ParallelOverrides ov;
  ov.dp = dp;
  ov.cp = cp;
  ov.tp = tp;
  ov.sp = true;
  ov.ep = ep;
  ov.etp = etp;
  return ov;
}

int64_t moeAllToAllBytes(const Report &r) {
  int64_t total = 0;
  for (const auto &c : r.collectives)
    if (c.op == "all_to_all" && c.family == "E" && !c.backward)
      total += c.bytesPerRank;
  return total;
}

int64_t blockPeak(const Report &r, const std::string &family) {
  for (const auto &b : r.blocks)
    if (b.family == family)
      return b.peakLiveBytes;
  return -1;
}
} // namespace

// Capacity mode: the dispatch and the return each send (ep-1)/ep of the
// rank's buffers, experts * C rows per local group, which is F * top_k times
// its tokens when the capacity divides exactly: 4 x 64 tokens, hidden 32,
// f32, 8 experts, top-2, F = 1.25, every group 32 tokens, C = 10. Where the
// expert group takes axes from two buffer dimensions (dp from the batch
// groups, cp from the sequence groups) an all-to-all joins one dimension at a
// time, so the exchange takes one hop per dimension, each sending (n-1)/n.
TEST_F(ReportTest, CapacityAllToAllBytesAreExact) {
  struct Case {
    const char *what;
    ParallelOverrides ov;
    /// The group size of each all-to-all hop one way.
    std::vector<int64_t> hops;
    int64_t localTokens, localGroups;
  };
  auto strategy = [](int64_t dp, int64_t cp, int64_t tp, int64_t ep) {
    ParallelOverrides ov;
    ov.dp = dp;
    ov.cp = cp;
    ov.tp = tp;
    ov.sp = tp > 1;
    ov.ep = ep;
    return ov;
  };
  std::vector<Case> cases = {
      // cp 4 in zigzag order: two runs of 8 positions per rank.
      {"ep over cp", strategy(1, 4, 1, 4), {4}, 64, 2},
      {"ep over cp*tp under sp", strategy(1, 2, 2, 4), {4}, 64, 2},
      // ep 2 cuts cp 4 into cp_outer x cp_inner.
      {"ep cutting cp", strategy(1, 4, 1, 2), {2}, 64, 2},
      {"ep over dp*cp", strategy(2, 2, 1, 4), {2, 2}, 64, 2},
  };
  const int64_t experts = 8, capacity = 10, h = 32, bytes = 4;
  for (const Case &c : cases) {
    SCOPED_TRACE(c.what);
    Report r = compile(moeModel(experts, 1.25), c.ov);
    int64_t sent = moeAllToAllBytes(r);
    int64_t buffer = experts * capacity * c.localGroups * h * bytes;
    // F * top_k * local tokens * h * bytes, F = 5/4: the buffers are exactly
    // F * top_k rows per token.
    EXPECT_EQ(buffer * 4, 5 * 2 * c.localTokens * h * bytes);
    int64_t expected = 0;
    for (int64_t n : c.hops)
      expected += 2 * (n - 1) * buffer / n;
    EXPECT_EQ(sent, expected);
    if (c.hops.size() == 1) {
      int64_t ep = c.hops[0];
      EXPECT_EQ(sent * ep * 4, 2 * (ep - 1) * 5 * 2 * c.localTokens * h * bytes);
    }
  }
}

// Capacity mode with expert tensor parallelism: the experts split over ep, their
// ffn over etp. The buffers' sequence groups are split over the token axes,
// etp's innermost, so the all-to-all that splits the experts runs over the
// ep*etp ranks and leaves the groups split over etp: it sends (n-1)/n of the
// rank's buffers B (n = ep*etp), then an all-gather over etp sends (etp-1) B
// (every etp rank gets the rows its experts' ffn shard works on), and on the
// way back a reduce-scatter over etp sends (etp-1) B of the pending sum and
// the all-to-all (n-1)/n B. B = F * top_k * local tokens * h * bytes. The
// expert weights' gradients are reduced over the expert-data ranks only.
TEST_F(ReportTest, CapacityExpertTensorParallelBytes) {
  struct Case {
    const char *what;
    int64_t dp, cp, tp, ep, etp;
    std::vector<std::string> expertData;
  };
  const int64_t experts = 8, h = 32, bytes = 4, tokens = 4 * 64;
  for (const Case &c : std::vector<Case>{{"etp over tp, ep over cp", 1, 4, 2, 4, 2, {}},
                                         {"etp over tp, ep over cp, dp", 2, 2, 2, 2, 2, {"dp"}}}) {
    SCOPED_TRACE(c.what);
    Report r =
        compile(moeModel(experts, 1.25), expertStrategy(c.dp, c.cp, c.tp, c.ep, c.etp), true);
    int64_t local = tokens / (c.dp * c.cp * c.tp), n = c.ep * c.etp;
    // F = 5/4, top-2: the capacity divides exactly (C = 5 rows per expert per
    // group of 16 tokens at dp 1, C = 10 per group of 32 at dp 2).
    int64_t buffer = 5 * 2 * local * h * bytes / 4;
    std::map<std::string, int64_t> sent;
    for (const auto &e : r.collectives) {
      if (e.family != "E")
        continue;
      if (!e.backward) {
        sent[e.op] += e.bytesPerRank;
        if (e.op == "all_gather" || e.op == "reduce_scatter")
          EXPECT_EQ(e.axes, std::vector<std::string>{"tp"}) << e.why;
        continue;
      }
      if (e.why.find("gradient of parameter 'blocks.0.moe.w_") != std::string::npos)
        EXPECT_EQ(e.axes, c.expertData) << e.why;
    }
    EXPECT_EQ(sent["all_to_all"], 2 * (n - 1) * buffer / n);
    EXPECT_EQ(sent["all_gather"], (c.etp - 1) * buffer);
    EXPECT_EQ(sent["reduce_scatter"], (c.etp - 1) * buffer);
    if (c.expertData.empty())
      for (const auto &e : r.collectives)
        EXPECT_EQ(e.why.find("gradient of parameter 'blocks.0.moe.w_"), std::string::npos) << e.why;
  }
}

// Dropless mode: sl.moe_dropless's entry states its bytes at balanced routing,
// each rank's top_k x local-token rows spread evenly over the experts:
// 2 (ep-1)/ep top_k T_local h bytes for the rows out and back, plus (ep-1)
// E/ep i32 counts; its gradient (ep-1)/ep (3 top_k T_local h + 2 top_k
// T_local) bytes (x, dy and the weight of each row out, dx and dweight back)
// plus the counts. 4 x 64 tokens, hidden 32, f32, 8 experts, top-2; no
// all-to-all carries the experts.
TEST_F(ReportTest, DroplessBytesAtBalancedRouting) {
  struct Case {
    const char *what;
    int64_t dp, cp, tp, ep;
  };
  const int64_t experts = 8, k = 2, h = 32, bytes = 4, tokens = 4 * 64;
  for (const Case &c : std::vector<Case>{{"ep over cp", 1, 4, 1, 4},
                                         {"ep over cp*tp under sp", 1, 2, 2, 4},
                                         {"ep cutting cp", 1, 4, 1, 2},
                                         {"ep over dp*cp", 2, 2, 1, 4}}) {
    SCOPED_TRACE(c.what);
    ParallelOverrides ov;
    ov.dp = c.dp;
    ov.cp = c.cp;
    ov.tp = c.tp;
    ov.sp = c.tp > 1;
    ov.ep = c.ep;
    Report r = compile(moeModel(experts, 0), ov, true);
    int64_t local = tokens / (c.dp * c.cp * c.tp), counts = (c.ep - 1) * (experts / c.ep) * 4;
    int64_t forward = -1, backward = -1;
    for (const auto &e : r.collectives) {
      EXPECT_FALSE(e.op == "all_to_all" && e.family == "E") << e.why;
      if (e.op == "moe_dropless" || e.op == "moe_dropless_grad") {
        EXPECT_TRUE(e.balancedRouting);
        EXPECT_NE(e.why.find("bytes at balanced routing"), std::string::npos) << e.why;
        EXPECT_NE(e.why.find("receive bound " + std::to_string(c.ep * k * local) + " rows"),
                  std::string::npos)
            << e.why;
        (e.op == "moe_dropless" ? forward : backward) = e.bytesPerRank;
      }
    }
    EXPECT_EQ(forward, 2 * (c.ep - 1) * k * local * h * bytes / c.ep + counts);
    EXPECT_EQ(backward, (c.ep - 1) * (3 * k * local * h + 2 * k * local) * bytes / c.ep + counts);
  }
}

// Dropless mode with expert tensor parallelism: sl.moe_dropless names the etp
// axes in tensor_axes and its entry adds the gather of the received rows and
// the reduce-scatter of their partial outputs over etp at balanced routing,
// (etp-1) (2 top_k T_local h bytes + E/ep i32 counts); the gradient's (etp-1)
// (top_k T_local (3h + 2) bytes + the counts). The expert weights' gradients
// are reduced over the expert-data ranks only.
TEST_F(ReportTest, DroplessExpertTensorParallelBytes) {
  struct Case {
    const char *what;
    int64_t dp, cp, tp, ep, etp;
    std::vector<std::string> group, expertData;
  };
  const int64_t experts = 8, k = 2, h = 32, bytes = 4, tokens = 4 * 64;
  for (const Case &c : std::vector<Case>{
           {"etp over tp, ep over cp", 1, 2, 2, 2, 2, {"cp", "tp"}, {}},
           {"etp over tp, ep over cp, dp", 2, 2, 2, 2, 2, {"cp", "tp"}, {"dp"}},
           {"etp over tp, ep over cp and dp", 2, 2, 2, 4, 2, {"dp", "cp", "tp"}, {}}}) {
    SCOPED_TRACE(c.what);
    Report r = compile(moeModel(experts, 0), expertStrategy(c.dp, c.cp, c.tp, c.ep, c.etp), true);
    int64_t local = tokens / (c.dp * c.cp * c.tp), El = experts / c.ep;
    int64_t counts = (c.ep - 1 + c.etp - 1) * El * 4;
    int64_t forward = -1, backward = -1;
    for (const auto &e : r.collectives) {
      EXPECT_FALSE(e.family == "E" &&
                   (e.op == "all_to_all" || e.op == "all_gather" || e.op == "reduce_scatter"))
          << e.why;
      if (e.op == "moe_dropless" || e.op == "moe_dropless_grad") {
        EXPECT_EQ(e.axes, c.group) << e.why;
        EXPECT_NE(e.why.find("receive bound " + std::to_string(c.ep * c.etp * k * local) + " rows"),
                  std::string::npos)
            << e.why;
        (e.op == "moe_dropless" ? forward : backward) = e.bytesPerRank;
      }
      if (e.why.find("gradient of parameter 'blocks.0.moe.w_") != std::string::npos)
        EXPECT_EQ(e.axes, c.expertData) << e.why;
    }
    EXPECT_EQ(forward, 2 * (c.ep - 1) * k * local * h * bytes / c.ep +
                           (c.etp - 1) * 2 * k * local * h * bytes + counts);
    EXPECT_EQ(backward, (c.ep - 1) * (3 * k * local * h + 2 * k * local) * bytes / c.ep +
                            (c.etp - 1) * (3 * k * local * h + 2 * k * local) * bytes + counts);
  }
}

// The dispatched buffers hold F * top_k rows per token whatever the number of
// experts, and the dropless routed rows top_k per token, so the E block's
// peak grows only by the router's logits, [b, s, experts] per rank.
TEST_F(ReportTest, MoEPeakDoesNotGrowWithExperts) {
  ParallelOverrides ov;
  ov.cp = 2;
  ov.ep = 2;
  // 32 local tokens per group, top-2, F = 2: C = 16 for 8 experts, 4 for 32.
  int64_t capacity8 = blockPeak(compile(moeModel(8, 2), ov), "E");
  int64_t capacity32 = blockPeak(compile(moeModel(32, 2), ov), "E");
  int64_t dropless8 = blockPeak(compile(moeModel(8, 0), ov), "E");
  int64_t dropless32 = blockPeak(compile(moeModel(32, 0), ov), "E");
  ASSERT_GT(capacity8, 0);
  ASSERT_GT(dropless8, 0);
  // The logits of 128 local tokens, 24 more experts, f32, and the softmax
  // beside them at most.
  const int64_t logitsGrowth = 2 * 128 * 24 * 4;
  EXPECT_LE(capacity32, capacity8 + logitsGrowth)
      << "capacity 8: " << capacity8 << ", 32: " << capacity32;
  EXPECT_LE(dropless32, dropless8 + logitsGrowth)
      << "dropless 8: " << dropless8 << ", 32: " << dropless32;
}
