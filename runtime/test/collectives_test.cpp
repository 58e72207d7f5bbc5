//===- collectives_test.cpp - group communicators on thread ranks ---------===//
//
// Worlds of 2, 4 and 8 thread ranks split like a tp=2 x cp=2 x ep=2 mesh:
// every collective's values and byte counts on every group, that a group's
// collective involves its members only, and that an abort or an error of one
// rank releases the others; and Collectives::gatherCounts, exact on every
// rank.
//
//===----------------------------------------------------------------------===//

#include "collectives_check.h"

#include "comm/comm.h"
#include "core/layout.h"
#include "exec/collectives.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <thread>

using namespace shardline;
using namespace shardline::rt;
using namespace shardline::rt::test;

namespace {

/// Runs `body(comm)` on every rank of `hub`, one thread each.
void onRanks(ThreadHub &hub, int64_t ranks, const std::function<void(ThreadComm &)> &body) {
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      ThreadComm comm(hub, r);
      body(comm);
    });
  for (auto &t : threads)
    t.join();
}

/// tp=2, then cp=2, then ep=2 as the world grows; tp varies fastest.
Mesh meshOf(int64_t ranks) {
  Mesh mesh;
  if (ranks >= 8)
    mesh.axes.push_back({"ep", 2});
  if (ranks >= 4)
    mesh.axes.push_back({"cp", 2});
  mesh.axes.push_back({"tp", 2});
  return mesh;
}

/// This rank's group over `axes`: the ranks Mesh::group names, in its order.
std::unique_ptr<Group> splitOver(Comm &comm, const Mesh &mesh,
                                 const std::vector<std::string> &axes) {
  std::vector<int64_t> ranks = mesh.group(comm.rank(), axes);
  int64_t first = *std::min_element(ranks.begin(), ranks.end());
  int64_t key = std::find(ranks.begin(), ranks.end(), comm.rank()) - ranks.begin();
  std::unique_ptr<Group> group;
  CommStatus s = comm.split(first, key, group);
  EXPECT_TRUE(s) << s.error;
  return group;
}

/// What the hub saw `self` send each rank so far.
SentProbe hubProbe(const ThreadHub &hub, int64_t ranks, int64_t self) {
  return [&hub, ranks, self] {
    std::vector<int64_t> row;
    for (int64_t r = 0; r < ranks; ++r)
      row.push_back(hub.bytesCarried(self, r));
    return row;
  };
}

TEST(DType, SixteenBitFloatsRoundToNearestEven) {
  auto bits = [](uint32_t b) {
    float f;
    std::memcpy(&f, &b, 4);
    return f;
  };
  EXPECT_EQ(floatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(floatToBf16(bits(0x3f808000)), 0x3f80); // halfway, down to even
  EXPECT_EQ(floatToBf16(bits(0x3f818000)), 0x3f82); // halfway, up to even
  EXPECT_EQ(floatToBf16(bits(0x3f808001)), 0x3f81);
  EXPECT_TRUE(std::isnan(bf16ToFloat(floatToBf16(NAN))));
  EXPECT_EQ(floatToF16(1.0f), 0x3c00);
  EXPECT_EQ(floatToF16(-2.0f), 0xc000);
  EXPECT_EQ(floatToF16(65504.0f), 0x7bff);
  EXPECT_EQ(floatToF16(65519.0f), 0x7bff);
  EXPECT_EQ(floatToF16(65520.0f), 0x7c00); // halfway to 2^16: infinity
  EXPECT_EQ(floatToF16(std::ldexp(1.0f, -14)), 0x0400);
  EXPECT_EQ(floatToF16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(floatToF16(std::ldexp(1.0f, -25)), 0x0000); // halfway, down to even 0
  EXPECT_EQ(floatToF16(std::ldexp(3.0f, -25)), 0x0002); // halfway, up to even 2
  EXPECT_EQ(floatToF16(std::ldexp(1.0f, -14) * (1 - std::ldexp(1.0f, -12))), 0x0400);
  EXPECT_TRUE(std::isnan(f16ToFloat(floatToF16(NAN))));
  // Every 16-bit value survives the trip through f32.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if (!std::isnan(bf16ToFloat((uint16_t)h)))
      ASSERT_EQ(floatToBf16(bf16ToFloat((uint16_t)h)), h) << std::hex << h;
    if (!std::isnan(f16ToFloat((uint16_t)h)))
      ASSERT_EQ(floatToF16(f16ToFloat((uint16_t)h)), h) << std::hex << h;
  }
}

TEST(Split, GroupsFollowColorThenKey) {
  const int64_t ranks = 8;
  ThreadHub hub(ranks);
  Mesh mesh = meshOf(ranks);
  onRanks(hub, ranks, [&](ThreadComm &comm) {
    int64_t r = comm.rank();
    for (const char *axis : {"tp", "cp", "ep"}) {
      std::unique_ptr<Group> group = splitOver(comm, mesh, {axis});
      ASSERT_TRUE(group);
      std::vector<int64_t> want = mesh.group(r, {axis});
      EXPECT_EQ(group->members(), want) << "rank " << r << " over " << axis;
      EXPECT_EQ(group->size(), 2);
      EXPECT_EQ(group->members()[group->index()], r);
    }
    // Keys order the members (ties by world rank); odd ranks join no group.
    std::unique_ptr<Group> evens;
    CommStatus s = comm.split(r % 2 ? Comm::kNoGroup : 7, -(r / 4), evens);
    ASSERT_TRUE(s) << s.error;
    if (r % 2) {
      EXPECT_FALSE(evens);
    } else {
      ASSERT_TRUE(evens);
      EXPECT_EQ(evens->members(), (std::vector<int64_t>{4, 6, 0, 2}));
    }
  });
}

TEST(Split, BadColorsAndKeysAreErrors) {
  ThreadHub hub(1);
  ThreadComm comm(hub, 0);
  std::unique_ptr<Group> group;
  CommStatus s = comm.split(-2, 0, group);
  EXPECT_FALSE(s);
  EXPECT_EQ(s.error, "split: color -2 is outside [0, 2^31), and not kNoGroup (-1)");
  s = comm.split(0, int64_t(1) << 40, group);
  EXPECT_EQ(s.error, "split: key 1099511627776 does not fit 32 bits");
  EXPECT_FALSE(group);
}

TEST(Collectives, ValuesAndBytesOnEveryGroupOfTheMesh) {
  for (int64_t ranks : {2, 4, 8}) {
    ThreadHub hub(ranks);
    Mesh mesh = meshOf(ranks);
    std::vector<std::vector<std::string>> splits;
    for (const auto &axis : mesh.axes)
      splits.push_back({axis.first});
    std::vector<std::string> all;
    for (const auto &axis : mesh.axes)
      all.push_back(axis.first);
    splits.push_back(all);
    onRanks(hub, ranks, [&](ThreadComm &comm) {
      for (const auto &axes : splits) {
        std::unique_ptr<Group> group = splitOver(comm, mesh, axes);
        ASSERT_TRUE(group);
        for (DType dtype : {DType::F32, DType::BF16, DType::F16, DType::I32})
          checkCollectives(*group, dtype, hubProbe(hub, ranks, comm.rank()));
      }
    });
    EXPECT_EQ(hub.error(), "");
  }
}

TEST(Collectives, SumsInGroupOrderOnEveryMember) {
  // f32 sums that depend on the order: every member gets the same bits, the
  // group-order sum.
  const int64_t ranks = 4;
  const std::vector<float> terms = {1e8f, 1.0f, -1e8f, 0.5f};
  ThreadHub hub(ranks);
  std::vector<std::vector<float>> got(ranks);
  onRanks(hub, ranks, [&](ThreadComm &comm) {
    std::unique_ptr<Group> group;
    ASSERT_TRUE(comm.split(0, ranks - comm.rank(), group)); // members 3, 2, 1, 0
    std::vector<float> buffer(6, terms[comm.rank()]);
    CommStatus s = group->allReduce(BufferView(buffer.data(), 6), BufferView(buffer.data(), 6));
    ASSERT_TRUE(s) << s.error;
    got[comm.rank()] = buffer;
  });
  float want = terms[3];
  for (int64_t r = 2; r >= 0; --r)
    want += terms[r];
  for (int64_t r = 0; r < ranks; ++r)
    EXPECT_EQ(got[r], std::vector<float>(6, want)) << "rank " << r;
}

TEST(Collectives, GatherCountsIsExactOnEveryRank) {
  // 64-bit counts beyond 32 bits and -1 (a figure's "none") arrive as sent,
  // every rank's at its world rank, on every rank.
  const int64_t ranks = 4;
  ThreadHub hub(ranks);
  Mesh mesh = meshOf(ranks);
  std::vector<std::vector<std::vector<int64_t>>> got(ranks);
  auto mine = [](int64_t r) {
    return std::vector<int64_t>{-1, r, (int64_t(1) << 40) + r, int64_t(0xffffffff) + r};
  };
  onRanks(hub, ranks, [&](ThreadComm &comm) {
    Collectives collectives(comm, mesh);
    got[comm.rank()] = collectives.gatherCounts(mine(comm.rank()));
  });
  for (int64_t r = 0; r < ranks; ++r) {
    ASSERT_EQ(got[r].size(), (size_t)ranks) << "rank " << r;
    for (int64_t from = 0; from < ranks; ++from)
      EXPECT_EQ(got[r][from], mine(from)) << "rank " << r << " from " << from;
  }
}

TEST(Isolation, ATpGatherCarriesDataOnlyWithinItsGroup) {
  const int64_t ranks = 8;
  ThreadHub hub(ranks);
  Mesh mesh = meshOf(ranks);
  onRanks(hub, ranks, [&](ThreadComm &comm) {
    std::unique_ptr<Group> tp = splitOver(comm, mesh, {"tp"});
    std::vector<float> send(5, (float)comm.rank()), recv(10);
    CommStatus s = tp->allGather(BufferView(send.data(), 5), BufferView(recv.data(), 10));
    ASSERT_TRUE(s) << s.error;
  });
  for (int64_t a = 0; a < ranks; ++a)
    for (int64_t b = 0; b < ranks; ++b)
      EXPECT_EQ(hub.bytesCarried(a, b), a != b && a / 2 == b / 2 ? 20 : 0) << a << " -> " << b;
}

TEST(Isolation, OtherRanksNeverEnterAGroupsCollectives) {
  // Ranks 2..7 wait until the tp group {0, 1} has finished all its
  // collectives. Were a group collective to wait for the world, 0 and 1 would
  // never finish; the others then give up and abort, which fails the test.
  const int64_t ranks = 8;
  ThreadHub hub(ranks);
  Mesh mesh = meshOf(ranks);
  std::mutex m;
  std::condition_variable cv;
  int finished = 0;
  std::vector<int> results(ranks, -1);
  onRanks(hub, ranks, [&](ThreadComm &comm) {
    int64_t r = comm.rank();
    std::unique_ptr<Group> tp = splitOver(comm, mesh, {"tp"});
    if (r >= 2) {
      std::unique_lock<std::mutex> lock(m);
      if (!cv.wait_for(lock, std::chrono::seconds(20), [&] { return finished == 2; })) {
        lock.unlock();
        comm.abort("the tp group {0, 1} did not finish without the other ranks");
        return;
      }
    }
    for (DType dtype : {DType::F32, DType::BF16})
      checkCollectives(*tp, dtype, hubProbe(hub, ranks, r));
    results[r] = 1;
    if (r < 2) {
      std::lock_guard<std::mutex> lock(m);
      ++finished;
      cv.notify_all();
    }
  });
  EXPECT_EQ(hub.error(), "");
  EXPECT_EQ(results, std::vector<int>(ranks, 1));
}

TEST(Abort, ReleasesTheMembersOfEveryGroup) {
  // Rank 5 fails after the split. Groups without it may finish a collective;
  // every rank meets rank 5 by the world step at the latest, and returns false.
  const int64_t ranks = 8;
  ThreadHub hub(ranks);
  Mesh mesh = meshOf(ranks);
  std::vector<int> released(ranks, -1);
  onRanks(hub, ranks, [&](ThreadComm &comm) {
    int64_t r = comm.rank();
    std::unique_ptr<Group> tp = splitOver(comm, mesh, {"tp"});
    std::unique_ptr<Group> cp = splitOver(comm, mesh, {"cp"});
    std::unique_ptr<Group> ep = splitOver(comm, mesh, {"ep"});
    std::unique_ptr<Group> world = splitOver(comm, mesh, {"ep", "cp", "tp"});
    if (r == 5) {
      comm.abort("rank 5 failed");
      return;
    }
    std::vector<float> a(16, 1.0f), b(16);
    for (Group *group : {tp.get(), cp.get(), ep.get(), world.get()}) {
      CommStatus s = group->allReduce(BufferView(a.data(), 16), BufferView(b.data(), 16));
      if (!s) {
        EXPECT_EQ(s.error, "") << "rank " << r;
        released[r] = 1;
        return;
      }
    }
    released[r] = 0;
  });
  EXPECT_EQ(released, (std::vector<int>{1, 1, 1, 1, 1, -1, 1, 1}));
  EXPECT_EQ(hub.error(), "rank 5 failed");
  // A group made after the abort does not wait either.
  onRanks(hub, 2, [&](ThreadComm &comm) {
    std::unique_ptr<Group> group;
    EXPECT_FALSE(comm.split(0, 0, group));
  });
}

TEST(Abort, OneRanksErrorReleasesItsGroup) {
  const int64_t ranks = 4;
  ThreadHub hub(ranks);
  Mesh mesh = meshOf(ranks);
  std::vector<std::string> errors(ranks, "unset");
  onRanks(hub, ranks, [&](ThreadComm &comm) {
    int64_t r = comm.rank();
    std::unique_ptr<Group> tp = splitOver(comm, mesh, {"tp"});
    std::vector<float> send(3, 1.0f), recv(r == 1 ? 5 : 6);
    CommStatus s = tp->allGather(BufferView(send.data(), 3), BufferView(recv.data(), recv.size()));
    if (!s)
      comm.abort(s.error);
    errors[r] = s ? "ok" : s.error;
  });
  EXPECT_EQ(errors[1],
            "allGather: the receive buffer holds 5 elements, 2 members' parts of 3 make 6");
  EXPECT_EQ(errors[0], ""); // released by rank 1's abort
  EXPECT_EQ(hub.error(), errors[1]);
}

TEST(Abort, MembersThatDisagreeAreAnErrorOnEach) {
  ThreadHub hub(2);
  std::vector<std::string> gather(2), exchange(2);
  onRanks(hub, 2, [&](ThreadComm &comm) {
    int64_t r = comm.rank();
    std::unique_ptr<Group> group;
    ASSERT_TRUE(comm.split(0, 0, group));
    int64_t n = 3 + r;
    std::vector<float> send(n), recv(2 * n);
    gather[r] = group->allGather(BufferView(send.data(), n), BufferView(recv.data(), 2 * n)).error;
    // Rank 0 sends 2 elements; rank 1 expects 4.
    std::vector<BufferView> sendTo(2), recvFrom(2);
    sendTo[1 - r] = BufferView(send.data(), 2);
    recvFrom[1 - r] = BufferView(recv.data(), r == 1 ? 4 : 2);
    exchange[r] = group->exchange(sendTo, recvFrom).error;
  });
  for (int64_t r = 0; r < 2; ++r)
    EXPECT_EQ(gather[r],
              "allGather: member 0 (rank 0) sends 3 f32 elements, member 1 (rank 1) 4 f32");
  EXPECT_EQ(exchange[0], "");
  EXPECT_EQ(exchange[1],
            "exchange: member 0 (rank 0) sends 2 f32 elements, member 1 (rank 1) expects 4 f32");
}

TEST(Arguments, BadBuffersAreErrorsBeforeAnyWait) {
  // Member 0 of a group of two calls alone: a bad argument returns at once.
  ThreadHub hub(2);
  std::unique_ptr<Group> group;
  onRanks(hub, 2, [&](ThreadComm &comm) {
    std::unique_ptr<Group> mine;
    ASSERT_TRUE(comm.split(0, 0, mine));
    if (comm.rank() == 0)
      group = std::move(mine);
  });
  std::vector<float> a(8);
  std::vector<int32_t> ints(8);
  BufferView all(a.data(), 8);
  auto error = [](const CommStatus &s) { return s.ok ? std::string("ok") : s.error; };
  EXPECT_EQ(error(group->allGather(BufferView(a.data(), -1), all)),
            "allGather: the send buffer has a negative count (-1)");
  EXPECT_EQ(error(group->allGather(BufferView(nullptr, 4, DType::F32), all)),
            "allGather: the send buffer has 4 elements but no data");
  EXPECT_EQ(error(group->allGather(BufferView(ints.data(), 4), all)),
            "allGather: the send buffer is i32, the receive buffer f32");
  EXPECT_EQ(error(group->allGather(all.slice(2, 4), all)),
            "allGather: the send buffer overlaps the receive buffer but is not this member's "
            "part of it");
  EXPECT_EQ(error(group->reduceScatter(all, all.slice(0, 3))),
            "reduceScatter: the send buffer holds 8 elements, 2 members' parts of 3 make 6");
  EXPECT_EQ(error(group->reduceScatter(all, all.slice(4, 4))),
            "reduceScatter: the receive buffer overlaps the send buffer but is not this "
            "member's part of it");
  EXPECT_EQ(error(group->allReduce(all.slice(0, 4), all.slice(2, 4))),
            "allReduce: the send and receive buffers overlap but are not the same");
  EXPECT_EQ(error(group->allReduce(all.slice(0, 4), all.slice(4, 3))),
            "allReduce: the send buffer holds 4 elements, the receive buffer 3");
  EXPECT_EQ(error(group->allToAll(all.slice(0, 3), all.slice(4, 3))),
            "allToAll: the send and receive buffers must hold the same number of elements, a "
            "multiple of 2 members; they hold 3 and 3");
  EXPECT_EQ(error(group->allToAll(all.slice(0, 4), all.slice(2, 4))),
            "allToAll: the send and receive buffers overlap");
  EXPECT_EQ(error(group->exchange({all}, {all})),
            "exchange: a group of 2 members needs 2 send and receive buffers, got 1 and 1");
  EXPECT_EQ(error(group->exchange({all, all.slice(0, 2)}, {all, all.slice(1, 2)})),
            "exchange: the receive buffer for member 1 overlaps the send buffer for member 1");
}

} // namespace
