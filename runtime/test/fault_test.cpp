//===- fault_test.cpp - a thread rank that never arrives ------------------===//
//
// Thread ranks whose collectives time out: the rank that gives up names the
// ranks that did not arrive and the ranks in no call, within the timeout;
// the others are released by the abort that follows, and the hub says a rank
// was lost.
//
//===----------------------------------------------------------------------===//

#include "comm/comm.h"

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <thread>

using namespace shardline::rt;

namespace {

/// Runs `body(comm)` on every rank of `hub`, one thread each, every comm with
/// `timeout`.
void onRanks(ThreadHub &hub, double timeout, const std::function<void(ThreadComm &)> &body) {
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < hub.size(); ++r)
    threads.emplace_back([&, r] {
      ThreadComm comm(hub, r);
      comm.setTimeout(timeout);
      body(comm);
    });
  for (auto &t : threads)
    t.join();
}

double secondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

TEST(Faults, GroupCollectiveNamesTheMemberThatNeverArrives) {
  // Pairs {0, 1} and {2, 3}. Rank 1 splits and then stops (a rank that
  // stalled); ranks 2 and 3 finish their gather and wait at the world
  // barrier, so rank 1 is the one rank in no call when rank 0 gives up.
  ThreadHub hub(4);
  std::vector<CommStatus> gathers(4);
  std::vector<std::string> barrierErrors(4, "-");
  auto start = std::chrono::steady_clock::now();
  onRanks(hub, 0.3, [&](ThreadComm &comm) {
    int64_t r = comm.rank();
    if (r >= 2)
      comm.setTimeout(30);
    std::unique_ptr<Group> group;
    ASSERT_TRUE(comm.split(r / 2, r % 2, group));
    if (r == 1)
      return;
    float mine = (float)r, all[2] = {0, 0};
    gathers[r] = group->allGather(BufferView(&mine, 1), BufferView(all, 2));
    if (!gathers[r].ok) {
      // What the executor does with a rank's own error.
      comm.abort(gathers[r].error);
      return;
    }
    std::string error;
    comm.barrier(error);
    barrierErrors[r] = error;
  });
  double elapsed = secondsSince(start);
  EXPECT_FALSE(gathers[0].ok);
  EXPECT_EQ(gathers[0].error, "allGather: rank 0 waited 0.3 s for rank 1 (the call is on ranks 0, "
                              "1); in no call: rank 1 (stalled, ended, or busy for longer than "
                              "the timeout)");
  EXPECT_TRUE(gathers[2].ok);
  EXPECT_TRUE(gathers[3].ok);
  // Released by the abort, long before their own 30 s.
  EXPECT_EQ(barrierErrors[2], "");
  EXPECT_EQ(barrierErrors[3], "");
  EXPECT_TRUE(hub.rankLost());
  EXPECT_EQ(hub.error(), gathers[0].error);
  EXPECT_GE(elapsed, 0.3);
  EXPECT_LT(elapsed, 10);
}

TEST(Faults, OnlyOneRankReportsAWorldBarrierThatTimesOut) {
  // Ranks 0 and 1 wait for rank 2, which never comes; the first to give up
  // aborts the barrier, so the other leaves without an error of its own.
  ThreadHub hub(3);
  std::vector<std::string> errors(3);
  std::vector<int> passed(3, -1);
  onRanks(hub, 0.2, [&](ThreadComm &comm) {
    if (comm.rank() == 2)
      return;
    passed[comm.rank()] = comm.barrier(errors[comm.rank()]) ? 1 : 0;
  });
  EXPECT_EQ(passed[0], 0);
  EXPECT_EQ(passed[1], 0);
  std::string expected = " waited 0.2 s for rank 2 (the call is on ranks 0, 1, 2); in no call: "
                         "rank 2 (stalled, ended, or busy for longer than the timeout)";
  EXPECT_TRUE((errors[0] == "rank 0" + expected && errors[1].empty()) ||
              (errors[1] == "rank 1" + expected && errors[0].empty()))
      << "'" << errors[0] << "' and '" << errors[1] << "'";
  EXPECT_TRUE(hub.rankLost());
}

TEST(Faults, RanksInDifferentCallsAreNamedAsSuch) {
  // Rank 0 waits in its pair's gather, rank 1 at the world barrier: each
  // waits for the other, and no rank is out of a call.
  ThreadHub hub(2);
  std::vector<std::string> errors(2);
  onRanks(hub, 0.2, [&](ThreadComm &comm) {
    std::unique_ptr<Group> group;
    ASSERT_TRUE(comm.split(0, comm.rank(), group));
    if (comm.rank() == 1) {
      comm.setTimeout(30);
      comm.barrier(errors[1]);
      return;
    }
    float mine = 0, all[2];
    CommStatus s = group->allGather(BufferView(&mine, 1), BufferView(all, 2));
    errors[0] = s.error;
    comm.abort(s.error);
  });
  EXPECT_EQ(errors[0], "allGather: rank 0 waited 0.2 s for rank 1 (the call is on ranks 0, 1); "
                       "every rank waits in some call, so they wait in different ones: the ranks "
                       "do not run the same program");
  EXPECT_EQ(errors[1], "");
}

TEST(Faults, AWorkingRunDoesNotTimeOut) {
  // Many short collectives with a short timeout: none of them waits long.
  ThreadHub hub(4);
  std::vector<int> ok(4, 0);
  onRanks(hub, 5, [&](ThreadComm &comm) {
    std::unique_ptr<Group> group;
    ASSERT_TRUE(comm.split(comm.rank() % 2, comm.rank(), group));
    bool all = true;
    for (int i = 0; i < 200 && all; ++i) {
      float mine = (float)comm.rank(), sum = 0;
      all = group->allReduce(BufferView(&mine, 1), BufferView(&sum, 1)).ok &&
            sum == (float)(comm.rank() % 2 == 0 ? 0 + 2 : 1 + 3);
    }
    ok[comm.rank()] = all && comm.barrier();
  });
  EXPECT_EQ(ok, std::vector<int>(4, 1));
  EXPECT_FALSE(hub.rankLost());
  EXPECT_EQ(hub.error(), "");
}

} // namespace
