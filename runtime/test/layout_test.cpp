//===- layout_test.cpp - layout math ------------------------------------===//

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

namespace {
using Runs = std::vector<TokenRun>;
const std::vector<int64_t> kTokens{1, 16, 1};

Runs runsOf(const Layout &l, const Mesh &m, const std::vector<int64_t> &shape, int64_t rank) {
  return tokenRuns(l, m, shape, 1, rank);
}
} // namespace

TEST(TokenRuns, UnsplitAndContiguousAreOneRun) {
  EXPECT_EQ(runsOf(seqLayout({}, ChunkOrder::Contiguous), mesh(), kTokens, 5), (Runs{{0, 16}}));
  // rank 3 = cp 1, tp 1 -> block 3 of 4.
  EXPECT_EQ(runsOf(seqLayout({"cp", "tp"}, ChunkOrder::Contiguous), mesh(), kTokens, 3),
            (Runs{{12, 4}}));
  // ep is not in the layout: ranks 3 and 7 hold the same tokens.
  EXPECT_EQ(runsOf(seqLayout({"cp", "tp"}, ChunkOrder::Contiguous), mesh(), kTokens, 7),
            (Runs{{12, 4}}));
}

TEST(TokenRuns, ZigzagRankHoldsTwoRunsUnlessTheyTouch) {
  Layout l = seqLayout({"cp"}, ChunkOrder::Zigzag);
  EXPECT_EQ(runsOf(l, mesh(), kTokens, 0), (Runs{{0, 4}, {12, 4}}));
  // cp rank 1 of 2 holds chunks 1 and 2, which touch.
  EXPECT_EQ(runsOf(l, mesh(), kTokens, 2), (Runs{{4, 8}}));
}

TEST(TokenRuns, ZigzagWithTpInsideCp) {
  Layout l = seqLayout({"cp", "tp"}, ChunkOrder::Zigzag);
  EXPECT_EQ(runsOf(l, mesh(), kTokens, 0), (Runs{{0, 4}}));
  EXPECT_EQ(runsOf(l, mesh(), kTokens, 1), (Runs{{12, 4}}));
  EXPECT_EQ(runsOf(l, mesh(), kTokens, 2), (Runs{{4, 4}}));
  EXPECT_EQ(runsOf(l, mesh(), kTokens, 3), (Runs{{8, 4}}));
  // tp = 4 cuts each chunk in two; tp = 3 leaves the middle rank a piece of both chunks.
  Mesh tp4{{{"cp", 2}, {"tp", 4}}};
  EXPECT_EQ(runsOf(l, tp4, kTokens, 1), (Runs{{2, 2}}));
  EXPECT_EQ(runsOf(l, tp4, kTokens, 2), (Runs{{12, 2}}));
  Mesh tp3{{{"cp", 2}, {"tp", 3}}};
  std::vector<int64_t> twelve{1, 12, 1};
  EXPECT_EQ(runsOf(l, tp3, twelve, 0), (Runs{{0, 2}}));
  EXPECT_EQ(runsOf(l, tp3, twelve, 1), (Runs{{2, 1}, {9, 1}}));
  EXPECT_EQ(runsOf(l, tp3, twelve, 2), (Runs{{10, 2}}));
  // cp rank 1's chunks 1 and 2 touch, so its middle tp rank's piece is one run.
  EXPECT_EQ(runsOf(l, tp3, twelve, 4), (Runs{{5, 2}}));
}

TEST(TokenRuns, ExpandToOwnedIndices) {
  Mesh tp3{{{"cp", 2}, {"tp", 3}}};
  Layout l = seqLayout({"cp", "tp"}, ChunkOrder::Zigzag);
  EXPECT_EQ(ownedIndices(l, tp3, {1, 12, 1}, 1, 1), (std::vector<int64_t>{2, 9}));
  EXPECT_EQ(ownedIndices(l, tp3, {1, 12, 1}, 1, 4), (std::vector<int64_t>{5, 6}));
}

TEST(TokenRuns, SequenceChunksAreTheLocalHalvesInZigzagOrder) {
  Layout zig = seqLayout({"cp"}, ChunkOrder::Zigzag);
  EXPECT_EQ(sequenceChunks(zig, mesh(), kTokens, 1, 0), (Runs{{0, 4}, {12, 4}}));
  // Two chunks even where they touch.
  EXPECT_EQ(sequenceChunks(zig, mesh(), kTokens, 1, 2), (Runs{{4, 4}, {8, 4}}));
  Layout zigTp = seqLayout({"cp", "tp"}, ChunkOrder::Zigzag);
  EXPECT_EQ(sequenceChunks(zigTp, mesh(), kTokens, 1, 1), (Runs{{12, 2}, {14, 2}}));
  Layout contiguous = seqLayout({"cp", "tp"}, ChunkOrder::Contiguous);
  EXPECT_EQ(sequenceChunks(contiguous, mesh(), kTokens, 1, 3), (Runs{{12, 4}}));
}

TEST(TokenRuns, Overlap) {
  EXPECT_EQ(overlap({{0, 4}, {12, 4}}, {{2, 12}}), 4);
  EXPECT_EQ(overlap({{0, 4}}, {{4, 4}}), 0);
  EXPECT_EQ(overlap({}, {{0, 4}}), 0);
}

TEST(Ring, MembersPositionAndNeighbours) {
  Ring cp = ringOf(mesh(), 5, {"cp"});
  EXPECT_EQ(cp.members, (std::vector<int64_t>{5, 7}));
  EXPECT_EQ(cp.position, 0);
  EXPECT_EQ(cp.next(), 7);
  EXPECT_EQ(cp.prev(), 7);
  Ring cpTp = ringOf(mesh(), 5, {"cp", "tp"});
  EXPECT_EQ(cpTp.members, (std::vector<int64_t>{4, 5, 6, 7}));
  EXPECT_EQ(cpTp.position, 1);
  EXPECT_EQ(cpTp.next(), 6);
  EXPECT_EQ(cpTp.prev(), 4);
  Ring alone = ringOf(mesh(), 3, {});
  EXPECT_EQ(alone.next(), 3);
}

namespace {
Movement classify(const Layout &from, const Layout &to,
                  const std::vector<int64_t> &shape = {2, 16, 8}) {
  return classifyMovement(from, to, mesh(), shape);
}
void expectMovement(const Movement &m, MovementKind kind, int64_t dim,
                    std::vector<std::string> axes, int64_t splitDim = -1) {
  EXPECT_EQ(movementName(m.kind), std::string(movementName(kind)));
  EXPECT_EQ(m.dim, dim);
  EXPECT_EQ(m.splitDim, splitDim);
  EXPECT_EQ(m.axes, axes);
}
} // namespace

TEST(Movement, GatherOfTheMinorAxesIsAPlainAllGather) {
  Layout cpTp = seqLayout({"cp", "tp"}, ChunkOrder::Contiguous);
  expectMovement(classify(cpTp, seqLayout({"cp"}, ChunkOrder::Contiguous)), MovementKind::AllGather,
                 1, {"tp"});
  expectMovement(classify(cpTp, Layout::replicated(3)), MovementKind::AllGather, 1, {"cp", "tp"});
  // tp inside zigzag cp: the two tp pieces are the cp rank's chunks, in order.
  expectMovement(
      classify(seqLayout({"cp", "tp"}, ChunkOrder::Zigzag), seqLayout({"cp"}, ChunkOrder::Zigzag)),
      MovementKind::AllGather, 1, {"tp"});
}

TEST(Movement, ZigzagGatherOverTheMajorAxisIsNotAPlainAllGather) {
  // cp ranks hold chunks {0, 3} and {1, 2}: concatenated in group order they
  // are 0 3 1 2, not the sequence.
  EXPECT_EQ(classify(seqLayout({"cp"}, ChunkOrder::Zigzag), Layout::replicated(3)).kind,
            MovementKind::General);
  EXPECT_EQ(classify(seqLayout({"cp", "tp"}, ChunkOrder::Zigzag), Layout::replicated(3)).kind,
            MovementKind::General);
  // Gathering the major axis of a contiguous [cp, tp] leaves each tp rank
  // blocks that are not neighbours.
  EXPECT_EQ(classify(seqLayout({"cp", "tp"}, ChunkOrder::Contiguous),
                     seqLayout({"tp"}, ChunkOrder::Contiguous))
                .kind,
            MovementKind::General);
}

TEST(Movement, SliceAndReduceScatter) {
  expectMovement(classify(Layout::replicated(3), seqLayout({"cp"}, ChunkOrder::Contiguous)),
                 MovementKind::Slice, 1, {"cp"});
  // A zigzag piece is not an equal split in group order.
  EXPECT_EQ(classify(Layout::replicated(3), seqLayout({"cp"}, ChunkOrder::Zigzag)).kind,
            MovementKind::General);
  Layout pending = seqLayout({"cp"}, ChunkOrder::Contiguous);
  pending.partial = {"tp"};
  expectMovement(classify(pending, seqLayout({"cp", "tp"}, ChunkOrder::Contiguous)),
                 MovementKind::ReduceScatter, 1, {"tp"});
  expectMovement(classify(pending, seqLayout({"cp"}, ChunkOrder::Contiguous)),
                 MovementKind::AllReduce, -1, {"tp"});
  // Summing over tp while splitting over ep is neither.
  Layout epSplit = seqLayout({"cp", "ep"}, ChunkOrder::Contiguous);
  EXPECT_EQ(classify(pending, epSplit).kind, MovementKind::General);
}

TEST(Movement, AllToAllMovesTheSplitBetweenDimensions) {
  Layout seq = seqLayout({"cp"}, ChunkOrder::Contiguous);
  Layout channels = Layout::replicated(3);
  channels.dims[2] = {"cp"};
  expectMovement(classify(seq, channels), MovementKind::AllToAll, 1, {"cp"}, 2);
  expectMovement(classify(channels, seq), MovementKind::AllToAll, 2, {"cp"}, 1);
  // Out of zigzag order it is a general exchange.
  EXPECT_EQ(classify(seqLayout({"cp"}, ChunkOrder::Zigzag), channels).kind, MovementKind::General);
}

TEST(Movement, IdentityAndInvalid) {
  Layout seq = seqLayout({"cp"}, ChunkOrder::Contiguous);
  EXPECT_EQ(classify(seq, seq).kind, MovementKind::Identity);
  // 6 tokens do not split over cp x tp.
  EXPECT_EQ(classify(seqLayout({"cp", "tp"}, ChunkOrder::Contiguous), seq, {2, 6, 8}).kind,
            MovementKind::General);
  // Two dimensions gathered at once.
  Layout both = seqLayout({"cp"}, ChunkOrder::Contiguous);
  both.dims[2] = {"tp"};
  EXPECT_EQ(classify(both, Layout::replicated(3)).kind, MovementKind::General);
  // Changing only the chunk order is a reorder.
  EXPECT_EQ(classify(seq, seqLayout({"cp"}, ChunkOrder::Zigzag)).kind, MovementKind::General);
}

TEST(TokenRuns, NoneForADimensionTheShapeLacks) {
  Layout l = seqLayout({"cp"}, ChunkOrder::Zigzag);
  EXPECT_TRUE(tokenRuns(l, mesh(), {1, 16}, 2, 0).empty());
  EXPECT_TRUE(tokenRuns(l, mesh(), kTokens, 3, 0).empty());
}

namespace {
/// The indices `whole` gives `rank` along `dim`, checked one by one against
/// the pieces `parts` gives the members of its group over `axes`, in order.
bool concatenatesByElement(const Layout &parts, const Layout &whole, const Mesh &m,
                           const std::vector<int64_t> &shape, unsigned dim,
                           const std::vector<std::string> &axes) {
  for (int64_t r = 0; r < m.numRanks(); ++r) {
    std::vector<int64_t> joined;
    for (int64_t member : m.group(r, axes))
      for (int64_t i : ownedIndices(parts, m, shape, dim, member))
        joined.push_back(i);
    if (joined != ownedIndices(whole, m, shape, dim, r))
      return false;
  }
  return true;
}

std::vector<Layout> everyLayout() {
  std::vector<Layout> out;
  std::vector<std::vector<std::string>> seqAxes{{}, {"cp"}, {"tp"}, {"cp", "tp"}, {"tp", "cp"}};
  std::vector<std::vector<std::string>> channelAxes{{}, {"tp"}, {"cp"}};
  std::vector<std::vector<std::string>> partials{{}, {"tp"}};
  for (const auto &seq : seqAxes)
    for (ChunkOrder order : {ChunkOrder::Contiguous, ChunkOrder::Zigzag})
      for (const auto &channels : channelAxes)
        for (const auto &partial : partials) {
          Layout l = seqLayout(seq, order);
          l.dims[2] = channels;
          l.partial = partial;
          out.push_back(l);
        }
  return out;
}
} // namespace

// Every classified move checked element by element, and every plain gather of
// one dimension found.
TEST(Movement, AgreesWithAnElementByElementCheck) {
  Mesh m{{{"cp", 2}, {"tp", 2}}};
  std::vector<int64_t> shape{2, 16, 8};
  int checked = 0, gathers = 0;
  for (const Layout &from : everyLayout())
    for (const Layout &to : everyLayout()) {
      if (!verifyLayout(from, &m, &shape).empty() || !verifyLayout(to, &m, &shape).empty())
        continue;
      Movement mv = classifyMovement(from, to, m, shape);
      ++checked;
      switch (mv.kind) {
      case MovementKind::AllGather:
        ++gathers;
        EXPECT_TRUE(concatenatesByElement(from, to, m, shape, mv.dim, mv.axes))
            << from.str() << " -> " << to.str();
        break;
      case MovementKind::Slice:
      case MovementKind::ReduceScatter:
        EXPECT_TRUE(concatenatesByElement(to, from, m, shape, mv.dim, mv.axes))
            << from.str() << " -> " << to.str();
        break;
      case MovementKind::AllToAll:
        EXPECT_TRUE(concatenatesByElement(from, to, m, shape, mv.dim, mv.axes) &&
                    concatenatesByElement(to, from, m, shape, mv.splitDim, mv.axes))
            << from.str() << " -> " << to.str();
        break;
      default:
        break;
      }
      // A change of dimension 1 alone that drops axes and passes the check
      // element by element is an all-gather.
      Layout rest = from;
      rest.dims[1] = to.dims[1];
      rest.orderDim = to.orderDim;
      rest.order = to.order;
      std::vector<std::string> dropped;
      for (const auto &a : from.dims[1])
        if (std::find(to.dims[1].begin(), to.dims[1].end(), a) == to.dims[1].end())
          dropped.push_back(a);
      bool onlyDrops = to.dims[1].size() + dropped.size() == from.dims[1].size();
      if (rest == to && !dropped.empty() && onlyDrops &&
          concatenatesByElement(from, to, m, shape, 1, dropped))
        EXPECT_EQ(mv.kind, MovementKind::AllGather) << from.str() << " -> " << to.str();
    }
  // The pairs whose layouts both fit the mesh and shape, and the gathers among them.
  EXPECT_EQ(checked, 361);
  EXPECT_EQ(gathers, 18);
}
