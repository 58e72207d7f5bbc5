//===- executor_test.cpp - the executor's arena and comms on small plans ---===//

#include "comm/comm.h"
#include "exec/executor.h"

#include <gtest/gtest.h>

#include <thread>

using namespace shardline::rt;
namespace fb = flatbuffers;
namespace plan = shardline::plan;

namespace {
/// Mesh tp=2; x (input, split over tp) -> silu -> y, at the given arena
/// offsets; 8 elements, so 16 bytes per rank each.
LoadedPlan siluPlan(int64_t xOffset, int64_t yOffset, int64_t arenaBytes) {
  fb::FlatBufferBuilder b;
  auto mesh = b.CreateVector({plan::CreateAxis(b, b.CreateString("tp"), 2)});
  auto layout = plan::CreateLayout(
      b, b.CreateVector({plan::CreateAxisList(b, b.CreateVectorOfStrings({"tp"}))}));
  auto shape = b.CreateVector<int64_t>({8});
  std::vector<fb::Offset<plan::Tensor>> tensors = {
      plan::CreateTensor(b, b.CreateString("x"), plan::DType::F32, shape, layout, plan::Role::Input,
                         plan::Init::Normal, 0, 0, xOffset),
      plan::CreateTensor(b, b.CreateString("y"), plan::DType::F32, shape, layout,
                         plan::Role::Activation, plan::Init::Normal, 0, 0, yOffset)};
  auto op = plan::CreateOp(b, b.CreateString("silu"), b.CreateVector<int32_t>({0}),
                           b.CreateVector<int32_t>({1}), b.CreateVectorOfStrings({"x"}),
                           b.CreateVectorOfStrings({"result"}));
  auto root = plan::CreatePlan(b, b.CreateString("m"), mesh, b.CreateVector(tensors),
                               b.CreateVector({op}), b.CreateVector<int32_t>({0}),
                               b.CreateVector<int32_t>({1}), arenaBytes, 0,
                               plan::CreateModelFacts(b, 1));
  plan::FinishPlanBuffer(b, root);
  std::string error;
  auto loaded = loadPlan(wrapPlan(b.GetBufferPointer(), b.GetSize()), error);
  EXPECT_TRUE(loaded) << error;
  return *loaded;
}
} // namespace

TEST(Executor, RunsInThePlannedArenaAndMeasuresItsPeak) {
  RunResult r = runPlan(siluPlan(0, 64, 128), RunOptions{});
  ASSERT_EQ(r.error, "");
  EXPECT_TRUE(r.usedArena);
  EXPECT_EQ(r.arenaPeak, 128);    // y ends at 64 + one 64-byte slot
  EXPECT_EQ(r.liveBytesPeak, 32); // x and y, 16 bytes each, live together
  EXPECT_EQ(r.bytesSentPerRank, 0);
  ASSERT_EQ(r.outputs.size(), 1u);
  ASSERT_EQ(r.outputs[0].size(), 8u);
  // Tokens without an embedding table are all 0, and silu(0) = 0.
  for (float v : r.outputs[0])
    EXPECT_EQ(v, 0.0f);
}

TEST(Executor, RefusesAPlanThatPlacesAValueOverALiveOne) {
  RunResult r = runPlan(siluPlan(0, 0, 64), RunOptions{});
  EXPECT_EQ(r.error, "op silu at ?: the plan places 'y' at arena bytes [0, 16) over 'x' at "
                     "[0, 16), which is still live");
}

TEST(Executor, SingleDeviceRunDoesNotUseTheArena) {
  RunOptions options;
  options.singleDevice = true;
  RunResult r = runPlan(siluPlan(0, 0, 64), options);
  ASSERT_EQ(r.error, "");
  EXPECT_FALSE(r.usedArena);
  EXPECT_EQ(r.ranks, 1);
  EXPECT_EQ(r.liveBytesPeak, 64);
}

TEST(ThreadComm, ExchangeDeliversEachPairsValues) {
  const int64_t n = 3;
  ThreadHub hub(n);
  std::vector<std::vector<std::vector<float>>> got(n);
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      ThreadComm comm(hub, r);
      // Rank r sends m the values r*10+m, (m+1) of them.
      std::vector<std::vector<float>> sendTo(n), recvFrom(n);
      for (int64_t m = 0; m < n; ++m) {
        sendTo[m].assign(m + 1, (float)(r * 10 + m));
        recvFrom[m].resize(r + 1);
      }
      std::string error;
      EXPECT_TRUE(comm.exchange(sendTo, recvFrom, error)) << error;
      got[r] = recvFrom;
    });
  for (auto &t : threads)
    t.join();
  for (int64_t r = 0; r < n; ++r)
    for (int64_t m = 0; m < n; ++m)
      if (m != r)
        EXPECT_EQ(got[r][m], std::vector<float>(r + 1, (float)(m * 10 + r)));
}

TEST(ThreadComm, AbortReleasesEveryWaitingRank) {
  ThreadHub hub(3);
  std::vector<int> results(3, -1);
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < 3; ++r)
    threads.emplace_back([&, r] {
      ThreadComm comm(hub, r);
      if (r == 1) {
        comm.abort("rank 1 failed");
        return;
      }
      results[r] = comm.barrier() ? 1 : 0;
    });
  for (auto &t : threads)
    t.join();
  EXPECT_EQ(results[0], 0);
  EXPECT_EQ(results[2], 0);
  EXPECT_EQ(hub.error(), "rank 1 failed");
}
