//===- MachineTest.cpp - machine files and the cp_comm cost model ---------===//

#include "shardline/Analysis/Machine.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

using namespace shardline;

namespace {
std::string readFile(const std::string &path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}
} // namespace

TEST(Machine, DefaultIsTheShippedH100Preset) {
  std::vector<std::string> errors;
  auto m = parseMachine(readFile(SHARDLINE_SOURCE_DIR "/examples/machines/8xH100.json"),
                        "8xH100.json", errors);
  ASSERT_TRUE(m) << (errors.empty() ? "" : errors[0]);
  Machine d = defaultMachine();
  EXPECT_EQ(m->name, d.name);
  EXPECT_EQ(m->gpusPerNode, d.gpusPerNode);
  EXPECT_DOUBLE_EQ(m->intraNode.bandwidthBytesPerSecond, d.intraNode.bandwidthBytesPerSecond);
  EXPECT_DOUBLE_EQ(m->interNode.latencySeconds, d.interNode.latencySeconds);
  EXPECT_DOUBLE_EQ(m->memoryBytes, d.memoryBytes);
  EXPECT_DOUBLE_EQ(m->flopsPerSecond, d.flopsPerSecond);
  auto h200 = parseMachine(readFile(SHARDLINE_SOURCE_DIR "/examples/machines/8xH200.json"),
                           "8xH200.json", errors);
  ASSERT_TRUE(h200);
  EXPECT_DOUBLE_EQ(h200->memoryBytes, 141e9);
}

TEST(Machine, ErrorsNameTheKey) {
  std::vector<std::string> errors;
  EXPECT_FALSE(parseMachine(R"({"gpus_per_node": -1, "intra_node": {"bandwidth_GBps": 1,
    "latency_us": 1}, "inter_node": {"bandwidth_GBps": 1, "latency_us": 1}, "memory_GB": 1,
    "tflops": 1})",
                            "m.json", errors));
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0], "m.json: gpus_per_node: expected a positive number");
  errors.clear();
  EXPECT_FALSE(parseMachine("[1]", "m.json", errors));
  EXPECT_EQ(errors[0], "m.json: a machine description must be a JSON object");
}

TEST(CPComm, FormulasMatchHandComputedCosts) {
  Machine m = defaultMachine();
  AttentionShape s{1, 8192, 8, 8, 128, 2};
  // Local K,V: 2 x 8192 tokens x 8 heads x 128 x 2 bytes.
  const double kv = 2.0 * 8192 * 8 * 128 * 2;
  CPCommCost ring = costOf("ring", s, 8, 2, 16, m, /*crossesNodes=*/true);
  EXPECT_EQ(ring.bytesPerRank, (int64_t)(7 * kv));
  EXPECT_EQ(ring.residentBytes, (int64_t)(2 * kv));
  double compute = 2.0 * 8192 * 65536.0 * 8 * 128 / 989e12;
  double step = 10e-6 + kv / 50e9;
  EXPECT_NEAR(ring.seconds, compute / 8 + 7 * std::max(compute / 8, step), 1e-12);
  CPCommCost gather = costOf("allgather", s, 8, 2, 16, m, true);
  EXPECT_EQ(gather.bytesPerRank, ring.bytesPerRank);
  EXPECT_EQ(gather.residentBytes, (int64_t)(8 * kv));
  CPCommCost a2a = costOf("a2a", s, 8, 2, 16, m, true);
  EXPECT_EQ(a2a.bytesPerRank, (int64_t)(7.0 / 8 * 2 * kv));
  EXPECT_TRUE(a2a.feasible);
  EXPECT_FALSE(costOf("a2a", s, 8, 2, 8, m, true).feasible);
}

TEST(CPComm, ChoiceFollowsTheRegime) {
  Machine m = defaultMachine();
  // Compute-bound inside a node: the ring hides its passes.
  EXPECT_EQ(chooseCPComm({1, 8192, 8, 8, 128, 2}, 4, 2, 16, m, false).first, "ring");
  // Across nodes with full heads: all-to-all moves less.
  EXPECT_EQ(chooseCPComm({1, 8192, 8, 8, 128, 2}, 8, 2, 16, m, true).first, "a2a");
  // Latency-bound: one gather beats cp-1 ring steps.
  EXPECT_EQ(chooseCPComm({1, 8, 2, 1, 16, 2}, 8, 2, 2, m, true).first, "allgather");
  // All K,V resident would exceed the memory budget: not allgather.
  Machine small = m;
  small.memoryBytes = 20000; // budget 2000 bytes: ring keeps 1024, allgather 4096
  auto [choice, costs] = chooseCPComm({1, 8, 2, 1, 16, 2}, 8, 2, 2, small, true);
  EXPECT_NE(choice, "allgather");
  EXPECT_FALSE(costs[1].feasible);
}
