//===- transfer_test.cpp - layout transitions move the right values ------===//
//
// A global tensor is split into every rank's local part for a source layout
// (pending sums as random addends), moved with transfer(), and compared with
// the target layout's parts of the same global tensor. A move that sums
// nothing is also run as a device runs it (planTransferRuns): every rank
// packs what each member of its group reads, each member receives it in
// group order, and every rank places its target part from its source part
// and what arrived; the parts must be the same.
//
//===----------------------------------------------------------------------===//

#include "comm/transfer.h"

#include "comm/movement.h"

#include <gtest/gtest.h>

#include <random>

using namespace shardline;
using namespace shardline::rt;

namespace {
const Mesh kMesh{{{"ep", 2}, {"cp", 2}, {"tp", 2}}};
const std::vector<int64_t> kShape{2, 16, 8};

Layout lay(std::vector<std::vector<std::string>> dims, std::vector<std::string> partial = {},
           int64_t zigzagDim = -1) {
  Layout l;
  l.dims = std::move(dims);
  l.partial = std::move(partial);
  if (zigzagDim >= 0) {
    l.orderDim = zigzagDim;
    l.order = ChunkOrder::Zigzag;
  }
  return l;
}

std::vector<float> randomTensor(unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1, 1);
  std::vector<float> v(numElements(kShape));
  for (auto &x : v)
    x = dist(gen);
  return v;
}

/// Runs the transfer on every rank; returns the bytes each read.
std::vector<int64_t> check(const Layout &from, const Layout &to) {
  std::vector<float> global = randomTensor(7);
  // Pending sums over `from.partial`: the last coordinate holds global minus
  // the other addends, so the parts add up to `global`.
  Layout plain = from;
  plain.partial.clear();
  std::vector<std::vector<float>> parts;
  for (int64_t r = 0; r < kMesh.numRanks(); ++r) {
    std::vector<float> mine = global;
    if (!from.partial.empty()) {
      std::vector<int64_t> c = kMesh.coords(r);
      int64_t index = 0, count = 1;
      for (const auto &a : from.partial)
        for (size_t i = 0; i < kMesh.axes.size(); ++i)
          if (kMesh.axes[i].first == a) {
            index = index * kMesh.axes[i].second + c[i];
            count *= kMesh.axes[i].second;
          }
      // Addend k of `count`: noise(k) for k < count-1, the remainder last.
      std::vector<float> rest = global;
      for (int64_t k = 0; k < count - 1; ++k) {
        std::vector<float> noise = randomTensor(100 + (unsigned)k);
        for (size_t i = 0; i < rest.size(); ++i)
          rest[i] -= noise[i];
        if (k == index)
          mine = noise;
      }
      if (index == count - 1)
        mine = rest;
    }
    parts.push_back(extractLocal(kMesh, kShape, plain, mine, r));
  }
  std::vector<const float *> sources;
  for (const auto &p : parts)
    sources.push_back(p.data());
  // As a device runs it: the runs of every rank, packed, exchanged, placed.
  MoveShape move = planMoveShape(kMesh, kShape, from, to);
  std::vector<TransferRuns> runs;
  std::vector<std::vector<float>> packed;
  for (int64_t r = 0; r < kMesh.numRanks(); ++r) {
    runs.push_back(planTransferRuns(kMesh, kShape, from, to, r, kMesh.group(r, move.axes)));
    EXPECT_EQ(runs.back().error, "");
    int64_t sent = 0;
    for (int64_t n : runs.back().sendCounts)
      sent += n;
    packed.emplace_back(sent, -5.0f);
    applyRuns(runs.back().pack, parts[r].data(), (int64_t)parts[r].size(), (const float *)nullptr,
              packed.back().data());
  }
  std::vector<int64_t> bytes;
  for (int64_t r = 0; r < kMesh.numRanks(); ++r) {
    std::vector<float> want = extractLocal(kMesh, kShape, to, global, r);
    const TransferRuns &mine = runs[r];
    EXPECT_EQ(mine.sums, from.partial.size() > to.partial.size());
    if (!mine.sums) {
      // What each member packed for this rank, members in group order.
      std::vector<int64_t> members = kMesh.group(r, move.axes);
      std::vector<float> arrived;
      for (size_t j = 0; j < members.size(); ++j) {
        int64_t m = members[j];
        if (m == r)
          continue;
        std::vector<int64_t> theirs = kMesh.group(m, move.axes);
        int64_t at = 0, me = -1;
        for (size_t q = 0; q < theirs.size(); ++q) {
          if (theirs[q] == r)
            me = (int64_t)q;
          else if (me < 0)
            at += runs[m].sendCounts[q];
        }
        EXPECT_GE(me, 0) << "rank " << r << " not in rank " << m << "'s group";
        if (me < 0)
          continue;
        EXPECT_EQ(runs[m].sendCounts[me], mine.recvCounts[j]) << "rank " << m << " to " << r;
        arrived.insert(arrived.end(), packed[m].begin() + at,
                       packed[m].begin() + at + runs[m].sendCounts[me]);
      }
      std::vector<float> placed(want.size(), -99.0f);
      applyRuns(mine.place, parts[r].data(), mine.sourceCount, arrived.data(), placed.data());
      EXPECT_EQ(placed, want) << "rank " << r << " placed by runs";
    }
    std::vector<float> got(want.size(), -99.0f);
    TransferResult res = transfer(kMesh, kShape, from, sources, to, r, got.data());
    EXPECT_EQ(res.error, "");
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_NEAR(got[i], want[i], 1e-5) << "rank " << r << " element " << i;
    bytes.push_back(res.bytesRead);
  }
  return bytes;
}

int64_t localBytes(const Layout &l) { return numElements(localShape(l, kMesh, kShape)) * 4; }
} // namespace

TEST(Transfer, AllGatherKeepsTheZigzagOfTheMajorAxis) {
  Layout from = lay({{}, {"cp", "tp"}, {}}, {}, 1), to = lay({{}, {"cp"}, {}}, {}, 1);
  for (int64_t b : check(from, to))
    EXPECT_EQ(b, allGatherBytes(2, localBytes(to)));
}

TEST(Transfer, ReduceScatterSumsAndSplits) {
  Layout from = lay({{}, {"cp"}, {}}, {"tp"}), to = lay({{}, {"cp", "tp"}, {}});
  for (int64_t b : check(from, to))
    EXPECT_EQ(b, reduceScatterBytes(2, localBytes(from)));
}

TEST(Transfer, AllReduceOverTwoAxes) {
  // Read naively every other addend: (g-1) x B. The executor runs an
  // all-reduce as reduce-scatter + all-gather to send 2(g-1)/g x B.
  for (int64_t b : check(lay({{}, {}, {}}, {"cp", "tp"}), lay({{}, {}, {}})))
    EXPECT_EQ(b, 3 * localBytes(lay({{}, {}, {}})));
}

TEST(Transfer, AllToAllMovesTheSplitBetweenDimensions) {
  Layout from = lay({{}, {}, {"ep"}}), to = lay({{}, {"ep"}, {}});
  for (int64_t b : check(from, to))
    EXPECT_EQ(b, allToAllBytes(2, localBytes(from)));
}

TEST(Transfer, SliceReadsNothingRemote) {
  for (int64_t b : check(lay({{}, {"cp"}, {}}), lay({{}, {"cp"}, {"tp"}})))
    EXPECT_EQ(b, 0);
}

TEST(Transfer, ReorderToZigzagMovesHalfTheChunks) {
  // cp = 2: contiguous rank 0 holds chunks 0,1 of 4, zigzag rank 0 holds 0,3.
  Layout from = lay({{}, {"cp"}, {}}), to = lay({{}, {"cp"}, {}}, {}, 1);
  for (int64_t b : check(from, to))
    EXPECT_EQ(b, localBytes(to) / 2);
}

TEST(Transfer, FullySplitToReplicated) {
  check(lay({{"ep"}, {"cp", "tp"}, {}}, {}, 1), lay({{}, {}, {}}));
}

TEST(Transfer, RefusesToCreateAPendingSum) {
  std::vector<float> buf(numElements(kShape));
  std::vector<const float *> sources(kMesh.numRanks(), buf.data());
  std::vector<float> out(buf.size());
  EXPECT_EQ(
      transfer(kMesh, kShape, lay({{}, {}, {}}), sources, lay({{}, {}, {}}, {"tp"}), 0, out.data())
          .error,
      "cannot create a pending sum over 'tp'");
}
