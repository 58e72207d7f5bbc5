//===- LayoutLimitsTest.cpp - the mesh and size bounds of core/layout.h ---===//

#include "core/layout.h"

#include <gtest/gtest.h>

#include <limits>

using namespace shardline;

namespace {
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

Mesh mesh(std::vector<std::pair<std::string, int64_t>> axes) { return Mesh{std::move(axes)}; }
} // namespace

TEST(LayoutLimits, MeshAtTheLimitIsValid) {
  EXPECT_EQ(verifyMesh(mesh({{"dp", 1024}, {"tp", 1024}})), "");
  EXPECT_EQ(mesh({{"dp", 1024}, {"tp", 1024}}).numRanks(), kMaxMeshRanks);
}

TEST(LayoutLimits, MeshPastTheLimitNamesTheAxis) {
  EXPECT_EQ(verifyMesh(mesh({{"cp", 1048576}, {"tp", 2}})),
            "the mesh has more than 1048576 ranks (the limit) at axis 'tp' of size 2");
  // A product that would overflow int64 stops at the first axis past the limit.
  EXPECT_EQ(verifyMesh(mesh({{"cp", 4294967296}, {"tp", 4294967296}})),
            "the mesh has more than 1048576 ranks (the limit) at axis 'cp' of size 4294967296");
  EXPECT_EQ(verifyMesh(mesh({{"tp", kInt64Max}})),
            "the mesh has more than 1048576 ranks (the limit) at axis 'tp' of size " +
                std::to_string(kInt64Max));
}

TEST(LayoutLimits, MeshAxisOfSizeZeroOrLess) {
  EXPECT_EQ(verifyMesh(mesh({{"tp", 0}})), "axis 'tp' has size 0; sizes must be >= 1");
  EXPECT_EQ(verifyMesh(mesh({{"cp", 2}, {"tp", -4}})), "axis 'tp' has size -4; sizes must be >= 1");
}

TEST(LayoutLimits, VerifyLayoutChecksTheMeshBeforeDividing) {
  // Once SIGFPE: a zigzag split computes sizes modulo 2 * the axis size.
  Layout l{{{}, {"cp"}}, {}, 1, ChunkOrder::Zigzag};
  std::vector<int64_t> shape{2, 8};
  Mesh m = mesh({{"cp", kInt64Max}});
  EXPECT_EQ(verifyLayout(l, &m, &shape).rfind("invalid mesh: the mesh has more than", 0), 0u);
  Mesh zero = mesh({{"cp", 0}});
  EXPECT_EQ(verifyLayout(l, &zero, &shape),
            "invalid mesh: axis 'cp' has size 0; sizes must be >= 1");
}

TEST(LayoutLimits, VerifyLayoutRefusesNegativeExtents) {
  Layout l = Layout::replicated(2);
  std::vector<int64_t> shape{2, -8};
  Mesh m = mesh({{"tp", 2}});
  EXPECT_EQ(verifyLayout(l, &m, &shape), "dimension 1 has negative size -8");
}

TEST(LayoutLimits, CheckedProduct) {
  EXPECT_EQ(checkedProduct({}), 1);
  EXPECT_EQ(checkedProduct({2, 3, 7}), 42);
  EXPECT_EQ(checkedProduct({4, 0, kInt64Max}), 0);
  EXPECT_EQ(checkedProduct({int64_t(1) << 31, int64_t(1) << 31}), int64_t(1) << 62);
  EXPECT_EQ(checkedProduct({int64_t(1) << 32, int64_t(1) << 31}), std::nullopt);
  EXPECT_EQ(checkedProduct({kInt64Max, 2}), std::nullopt);
  EXPECT_EQ(checkedProduct({3, -1}), std::nullopt);
}

TEST(LayoutLimits, CollectiveBytesDoNotOverflowAtTheLimits) {
  // (g-1) * bytes would be 2^76 for the largest group and tensor.
  int64_t g = kMaxMeshRanks, bytes = kMaxTensorBytes;
  EXPECT_EQ(allGatherBytes(g, bytes), bytes - bytes / g);
  EXPECT_EQ(reduceScatterBytes(g, bytes), bytes - bytes / g);
  EXPECT_EQ(allToAllBytes(g, bytes), bytes - bytes / g);
  EXPECT_EQ(allReduceBytes(g, bytes), 2 * bytes - 2 * bytes / g);
  // The same values as (g-1) * bytes / g where that fits, remainders included.
  for (int64_t n : {0, 1, 10, 63, 64, 1000})
    for (int64_t k : {1, 2, 3, 7, 8}) {
      EXPECT_EQ(allGatherBytes(k, n), (k - 1) * n / k) << k << " " << n;
      EXPECT_EQ(allReduceBytes(k, n), 2 * (k - 1) * n / k) << k << " " << n;
    }
}

TEST(LayoutLimits, SaturatingArithmetic) {
  EXPECT_EQ(saturatingAdd(kInt64Max, 1), kInt64Max);
  EXPECT_EQ(saturatingAdd(40, 2), 42);
  EXPECT_EQ(saturatingMul(int64_t(1) << 40, int64_t(1) << 40), kInt64Max);
  EXPECT_EQ(saturatingMul(6, 7), 42);
}
