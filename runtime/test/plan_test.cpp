//===- plan_test.cpp - the plan container rejects bad plans clearly ------===//

#include "core/plan.h"

#include <gtest/gtest.h>

#include <fstream>

using namespace shardline::rt;
namespace fb = flatbuffers;
namespace plan = shardline::plan;

namespace {
/// A small valid plan: mesh tp=2, x -> silu -> y.
std::vector<uint8_t> smallPlan(const std::string &kind = "silu", int32_t result = 1,
                               const std::string &axis = "tp", int64_t arenaOffset = -1,
                               int64_t arenaBytes = 0,
                               std::vector<std::string> operandNames = {"x"}, int64_t vocab = 8,
                               size_t operandCount = 1) {
  fb::FlatBufferBuilder b;
  auto mesh = b.CreateVector({plan::CreateAxis(b, b.CreateString("tp"), 2)});
  auto layout = plan::CreateLayout(
      b, b.CreateVector({plan::CreateAxisList(b, b.CreateVectorOfStrings({axis}))}));
  auto shape = b.CreateVector<int64_t>({8});
  std::vector<fb::Offset<plan::Tensor>> tensors = {
      plan::CreateTensor(b, b.CreateString("x"), plan::DType::F32, shape, layout,
                         plan::Role::Input),
      plan::CreateTensor(b, b.CreateString("y"), plan::DType::F32, shape, layout,
                         plan::Role::Activation, plan::Init::Normal, 0, 0, arenaOffset)};
  auto op =
      plan::CreateOp(b, b.CreateString(kind), b.CreateVector(std::vector<int32_t>(operandCount, 0)),
                     b.CreateVector<int32_t>({result}), b.CreateVectorOfStrings(operandNames),
                     b.CreateVectorOfStrings({"result"}));
  auto root =
      plan::CreatePlan(b, b.CreateString("m"), mesh, b.CreateVector(tensors), b.CreateVector({op}),
                       b.CreateVector<int32_t>({0}), b.CreateVector<int32_t>({1}), arenaBytes, 0,
                       vocab ? plan::CreateModelFacts(b, vocab) : fb::Offset<plan::ModelFacts>());
  plan::FinishPlanBuffer(b, root);
  return wrapPlan(b.GetBufferPointer(), b.GetSize());
}

std::string errorOf(std::vector<uint8_t> bytes) {
  std::string error;
  EXPECT_FALSE(loadPlan(std::move(bytes), error).has_value());
  return error;
}
} // namespace

TEST(Plan, LoadsAValidPlan) {
  std::string error;
  auto p = loadPlan(smallPlan(), error);
  ASSERT_TRUE(p) << error;
  EXPECT_EQ(p->ranks(), 2);
  EXPECT_EQ(p->root()->model()->str(), "m");
  EXPECT_EQ(p->root()->ops()->Get(0)->kind()->str(), "silu");
  EXPECT_NE(p->hash, 0u);
}

TEST(Plan, TruncatedHeader) {
  auto bytes = smallPlan();
  bytes.resize(10);
  EXPECT_EQ(errorOf(bytes), "truncated plan: 10 bytes, the header alone has 32");
}

TEST(Plan, TruncatedPayload) {
  auto bytes = smallPlan();
  size_t payload = bytes.size() - kPlanHeaderBytes;
  bytes.resize(bytes.size() - 5);
  EXPECT_EQ(errorOf(bytes), "truncated plan: the header promises " + std::to_string(payload) +
                                " payload bytes, the file holds " + std::to_string(payload - 5));
}

TEST(Plan, FlippedBytesAnywhereAreCaught) {
  auto good = smallPlan();
  for (size_t i = kPlanHeaderBytes; i < good.size(); ++i) {
    auto bytes = good;
    bytes[i] ^= 0x40;
    EXPECT_EQ(errorOf(bytes), "corrupted plan: the content hash does not match the payload")
        << "byte " << i;
  }
}

TEST(Plan, ForeignFileAndOtherVersion) {
  EXPECT_EQ(errorOf(std::vector<uint8_t>(64, 'x')), "not a Shardline plan (bad magic bytes)");
  auto bytes = smallPlan();
  bytes[8] = 7;
  EXPECT_EQ(errorOf(bytes),
            "plan format version 7; this runtime reads version 2 (recompile the model with this "
            "release)");
}

TEST(Plan, PayloadThatIsNotAPlan) {
  std::vector<uint8_t> junk(40, 0x11);
  EXPECT_EQ(errorOf(wrapPlan(junk.data(), junk.size())),
            "corrupted plan: the payload does not match the plan schema");
}

TEST(Plan, InconsistentContents) {
  EXPECT_EQ(errorOf(smallPlan("silu", 5)),
            "inconsistent plan: op #0 (silu) refers to tensor 5 of 2");
  EXPECT_EQ(errorOf(smallPlan("silu", 1, "cp")),
            "inconsistent plan: tensor 'x' is split over unknown mesh axis 'cp'");
}

TEST(Plan, OpsNameEveryOperandAndResult) {
  EXPECT_EQ(errorOf(smallPlan("silu", 1, "tp", -1, 0, {})),
            "inconsistent plan: op #0 (silu) has 0 operand names for 1 operands");
  EXPECT_EQ(errorOf(smallPlan("silu", 1, "tp", -1, 0, {"x", "y"})),
            "inconsistent plan: op #0 (silu) has 2 operand names for 1 operands");
  EXPECT_EQ(errorOf(smallPlan("silu", 1, "tp", -1, 0, {""})),
            "inconsistent plan: op #0 (silu) has an empty operand name");
  EXPECT_EQ(errorOf(smallPlan("add", 1, "tp", -1, 0, {"lhs", "lhs"}, 8, 2)),
            "inconsistent plan: op #0 (add) has two operands named 'lhs'");
}

TEST(Plan, InputsNeedTheVocabulary) {
  EXPECT_EQ(errorOf(smallPlan("silu", 1, "tp", -1, 0, {"x"}, 0)),
            "inconsistent plan: the plan does not state the model's vocabulary (facts.vocab), "
            "which its inputs draw from");
  std::string error;
  auto p = loadPlan(smallPlan(), error);
  ASSERT_TRUE(p) << error;
  EXPECT_EQ(p->root()->facts()->vocab(), 8);
}

TEST(Plan, ExecutableTailCarriesThePlan) {
  std::vector<uint8_t> file = smallPlan();
  std::string path = ::testing::TempDir() + "/plan_test_exe";
  {
    std::ofstream out(path, std::ios::binary);
    out << "not really an executable";
    std::vector<uint8_t> tail = executableTail(file);
    out.write(reinterpret_cast<const char *>(tail.data()), (std::streamsize)tail.size());
  }
  EXPECT_EQ(embeddedPlan(path), file);
  {
    std::ofstream out(path, std::ios::binary);
    out << "an executable without a plan at its end";
  }
  EXPECT_TRUE(embeddedPlan(path).empty());
}

TEST(Plan, TensorsMustFitTheArena) {
  // y holds 8 f32 split over tp = 2: 16 bytes per rank.
  std::string error;
  EXPECT_TRUE(loadPlan(smallPlan("silu", 1, "tp", 48, 64), error)) << error;
  EXPECT_EQ(errorOf(smallPlan("silu", 1, "tp", 56, 64)),
            "inconsistent plan: tensor 'y' at arena offset 56 (16 bytes) exceeds the arena of 64 "
            "bytes");
}

TEST(Plan, ArenaNoLargerThanItsActivations) {
  // One 16-byte activation takes one 64-byte slot.
  EXPECT_EQ(errorOf(smallPlan("silu", 1, "tp", 0, 1LL << 50)),
            "inconsistent plan: the arena of 1125899906842624 bytes is larger than all "
            "activations side by side (64 bytes)");
}

TEST(Plan, MissingFile) {
  std::string error;
  EXPECT_FALSE(loadPlanFile("/nonexistent/x.slp", error));
  EXPECT_EQ(error, "cannot open plan '/nonexistent/x.slp'");
}
