//===- LayoutTest.cpp - layout math -------------------------------------===//

#include "core/layout.h"

#include <gtest/gtest.h>

using namespace shardline;

namespace {
Mesh mesh() { return Mesh{{{"dp", 1}, {"ep", 2}, {"cp", 2}, {"tp", 2}}}; }

Layout seqLayout(std::vector<std::string> axes, ChunkOrder order) {
  Layout l = Layout::replicated(3);
  l.dims[1] = std::move(axes);
  if (order == ChunkOrder::Zigzag) {
    l.orderDim = 1;
    l.order = order;
  }
  return l;
}
} // namespace

TEST(Layout, MeshCoordinatesLastAxisFastest) {
  Mesh m = mesh();
  EXPECT_EQ(m.numRanks(), 8);
  EXPECT_EQ(m.coords(0), (std::vector<int64_t>{0, 0, 0, 0}));
  EXPECT_EQ(m.coords(1), (std::vector<int64_t>{0, 0, 0, 1}));
  EXPECT_EQ(m.coords(2), (std::vector<int64_t>{0, 0, 1, 0}));
  EXPECT_EQ(m.coords(7), (std::vector<int64_t>{0, 1, 1, 1}));
  EXPECT_EQ(m.product({"cp", "tp"}), 4);
}

TEST(Layout, GroupsInGridOrderOfTheListedAxes) {
  Mesh m = mesh(); // ep=2 cp=2 tp=2: rank = ep*4 + cp*2 + tp
  EXPECT_EQ(m.rankAt(m.coords(5)), 5);
  EXPECT_EQ(m.axisIndex("cp"), 2);
  EXPECT_EQ(m.axisIndex("pp"), -1);
  EXPECT_EQ(m.group(5, {"cp"}), (std::vector<int64_t>{5, 7}));
  EXPECT_EQ(m.group(5, {"cp", "tp"}), (std::vector<int64_t>{4, 5, 6, 7}));
  EXPECT_EQ(m.group(5, {"tp", "cp"}), (std::vector<int64_t>{4, 6, 5, 7}));
  EXPECT_EQ(m.group(5, {}), (std::vector<int64_t>{5}));
}

TEST(Layout, LocalShapeDividesSplitDims) {
  Layout l = seqLayout({"cp", "tp"}, ChunkOrder::Contiguous);
  l.dims[0] = {"ep"};
  EXPECT_EQ(localShape(l, mesh(), {2, 256, 128}), (std::vector<int64_t>{1, 64, 128}));
}

TEST(Layout, ContiguousOwnership) {
  Layout l = seqLayout({"cp", "tp"}, ChunkOrder::Contiguous);
  // rank 3 = cp 1, tp 1 -> block 3 of 4.
  auto idx = ownedIndices(l, mesh(), {1, 16, 1}, 1, 3);
  EXPECT_EQ(idx, (std::vector<int64_t>{12, 13, 14, 15}));
}

TEST(Layout, ZigzagOwnershipOverCp) {
  Layout l = seqLayout({"cp"}, ChunkOrder::Zigzag);
  // 16 tokens, 4 chunks of 4: cp rank 0 holds chunks 0 and 3, cp rank 1 chunks 1 and 2.
  auto r0 = ownedIndices(l, mesh(), {1, 16, 1}, 1, 0);
  auto r1 = ownedIndices(l, mesh(), {1, 16, 1}, 1, 2);
  EXPECT_EQ(r0, (std::vector<int64_t>{0, 1, 2, 3, 12, 13, 14, 15}));
  EXPECT_EQ(r1, (std::vector<int64_t>{4, 5, 6, 7, 8, 9, 10, 11}));
}

TEST(Layout, ZigzagWithTpSplittingTheCpShare) {
  Layout l = seqLayout({"cp", "tp"}, ChunkOrder::Zigzag);
  // cp 0 holds chunks 0 and 3; tp 0 gets chunk 0, tp 1 gets chunk 3.
  EXPECT_EQ(ownedIndices(l, mesh(), {1, 16, 1}, 1, 0), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(ownedIndices(l, mesh(), {1, 16, 1}, 1, 1), (std::vector<int64_t>{12, 13, 14, 15}));
  EXPECT_EQ(ownedIndices(l, mesh(), {1, 16, 1}, 1, 2), (std::vector<int64_t>{4, 5, 6, 7}));
  EXPECT_EQ(ownedIndices(l, mesh(), {1, 16, 1}, 1, 3), (std::vector<int64_t>{8, 9, 10, 11}));
}

TEST(Layout, EveryTokenOwnedOnceAcrossTheGroup) {
  Layout l = seqLayout({"cp", "tp"}, ChunkOrder::Zigzag);
  std::vector<int> seen(32, 0);
  for (int64_t rank = 0; rank < 4; ++rank) // ep = 0, all (cp, tp)
    for (int64_t i : ownedIndices(l, mesh(), {1, 32, 1}, 1, rank))
      ++seen[i];
  for (int s : seen)
    EXPECT_EQ(s, 1);
}

TEST(Layout, VerifyRejectsUnknownAxis) {
  Layout l = seqLayout({"xp"}, ChunkOrder::Contiguous);
  Mesh m = mesh();
  EXPECT_NE(verifyLayout(l, &m, nullptr).find("unknown mesh axis 'xp'"), std::string::npos);
}

TEST(Layout, VerifyRejectsAxisUsedTwice) {
  Layout l = seqLayout({"tp"}, ChunkOrder::Contiguous);
  l.partial = {"tp"};
  EXPECT_NE(verifyLayout(l, nullptr, nullptr).find("used twice"), std::string::npos);
}

TEST(Layout, VerifyRejectsSplitThatDoesNotDivide) {
  Layout l = seqLayout({"cp", "tp"}, ChunkOrder::Contiguous);
  Mesh m = mesh();
  std::vector<int64_t> shape{2, 6, 4};
  EXPECT_NE(verifyLayout(l, &m, &shape).find("not divisible by 4"), std::string::npos);
}

TEST(Layout, VerifyZigzagNeedsTwiceTheSplit) {
  Layout l = seqLayout({"cp"}, ChunkOrder::Zigzag);
  Mesh m = mesh();
  std::vector<int64_t> ok{2, 4, 4}, bad{2, 6, 4};
  EXPECT_EQ(verifyLayout(l, &m, &ok), "");
  EXPECT_NE(verifyLayout(l, &m, &bad).find("zigzag"), std::string::npos);
}

TEST(Layout, VerifyRejectsZigzagOnUnsplitDim) {
  Layout l = seqLayout({}, ChunkOrder::Zigzag);
  EXPECT_NE(verifyLayout(l, nullptr, nullptr).find("no axis splits"), std::string::npos);
}

TEST(Layout, TextualForm) {
  Layout l = seqLayout({"cp", "tp"}, ChunkOrder::Zigzag);
  l.partial = {"ep"};
  EXPECT_EQ(l.str(), "[[], [cp, tp] zigzag, []], partial = [ep]");
}

TEST(Layout, CollectiveBytesFollowTheConventions) {
  // 4 ranks, 1024 bytes gathered.
  EXPECT_EQ(allGatherBytes(4, 1024), 768);
  EXPECT_EQ(reduceScatterBytes(4, 1024), 768);
  EXPECT_EQ(allReduceBytes(4, 1024), 1536);
  EXPECT_EQ(allToAllBytes(4, 256), 192);
  // SP's all-gather + reduce-scatter move exactly TP's all-reduce bytes.
  EXPECT_EQ(allGatherBytes(8, 4096) + reduceScatterBytes(8, 4096), allReduceBytes(8, 4096));
}
