//===- mpi_collectives_test.cpp - group communicators on MPI processes ----===//
//
// Run under `mpirun -np 4` (runtime/CMakeLists.txt registers it): every
// collective on sub-communicators, with the values and byte counts the thread
// ranks are held to (collectives_check.h), and groups that run their
// collectives while ranks outside them never call them.
//
//===----------------------------------------------------------------------===//

#include "collectives_check.h"

#include "comm/mpi.h"

#include <mpi.h>

using namespace shardline::rt;
using namespace shardline::rt::test;

namespace {

Comm *world = nullptr;

SentProbe noProbe() {
  return [] { return std::vector<int64_t>(); };
}

std::unique_ptr<Group> split(int64_t color, int64_t key) {
  std::unique_ptr<Group> group;
  CommStatus s = world->split(color, key, group);
  EXPECT_TRUE(s) << s.error;
  return group;
}

TEST(MpiGroups, PairsRunTheirCollectivesWithoutTheOtherRanks) {
  // Groups {0, 1} and {2, 3}. Ranks 2 and 3 wait for a word from 0 and 1,
  // sent once the pair {0, 1} has finished every collective; they never call
  // that pair's collectives. Were those collectives world-wide (one
  // MPI_Alltoallv over MPI_COMM_WORLD), 0 and 1 would wait for 2 and 3
  // forever and the run would time out.
  const int kDone = 7;
  int64_t r = world->rank();
  std::unique_ptr<Group> pair = split(r / 2, r % 2);
  ASSERT_TRUE(pair);
  EXPECT_EQ(pair->members(), (std::vector<int64_t>{r / 2 * 2, r / 2 * 2 + 1}));
  EXPECT_EQ(pair->index(), r % 2);
  if (r < 2) {
    for (DType dtype : {DType::F32, DType::BF16, DType::F16, DType::I32})
      checkCollectives(*pair, dtype, noProbe());
    int done = 1;
    for (int to : {2, 3})
      MPI_Send(&done, 1, MPI_INT, to, kDone, MPI_COMM_WORLD);
  } else {
    for (int from : {0, 1}) {
      int done = 0;
      MPI_Recv(&done, 1, MPI_INT, from, kDone, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      EXPECT_EQ(done, 1);
    }
    // Another collective than the pair {0, 1} ran first.
    std::vector<float> send(4, (float)r), recv(4);
    CommStatus s = pair->allToAll(BufferView(send.data(), 4), BufferView(recv.data(), 4));
    ASSERT_TRUE(s) << s.error;
    EXPECT_EQ(recv, (std::vector<float>{2, 2, 3, 3}));
    EXPECT_EQ(s.bytesSent, 8);
    for (DType dtype : {DType::F32, DType::BF16})
      checkCollectives(*pair, dtype, noProbe());
  }
}

TEST(MpiGroups, ThreeRanksOrderedByKeyWhileOneJoinsNone) {
  int64_t r = world->rank();
  std::unique_ptr<Group> trio = split(r == 3 ? Comm::kNoGroup : 0, -r);
  if (r == 3) {
    EXPECT_FALSE(trio);
    return;
  }
  ASSERT_TRUE(trio);
  EXPECT_EQ(trio->members(), (std::vector<int64_t>{2, 1, 0}));
  for (DType dtype : {DType::F32, DType::BF16, DType::F16, DType::I32})
    checkCollectives(*trio, dtype, noProbe());
}

TEST(MpiGroups, TheWholeWorld) {
  std::unique_ptr<Group> all = split(0, world->rank());
  ASSERT_TRUE(all);
  EXPECT_EQ(all->members(), (std::vector<int64_t>{0, 1, 2, 3}));
  for (DType dtype : {DType::F32, DType::I32})
    checkCollectives(*all, dtype, noProbe());
}

TEST(MpiGroups, SumsInGroupOrderAsOnThreadRanks) {
  // Members 3, 2, 1, 0 sum 0.5 + -1e8 + 1 + 1e8 in that order: 0 in f32.
  const std::vector<float> terms = {1e8f, 1.0f, -1e8f, 0.5f};
  int64_t r = world->rank();
  std::unique_ptr<Group> reversed = split(0, 4 - r);
  std::vector<float> buffer(6, terms[r]);
  CommStatus s = reversed->allReduce(BufferView(buffer.data(), 6), BufferView(buffer.data(), 6));
  ASSERT_TRUE(s) << s.error;
  EXPECT_EQ(buffer, std::vector<float>(6, 0.0f));
}

TEST(MpiGroups, AnExchangeSizeMismatchIsAnError) {
  // Rank 1 sends rank 0 three elements where rank 0 expects two; rank 0
  // sends rank 1 the two it expects.
  int64_t r = world->rank();
  std::unique_ptr<Group> pair = split(r / 2, r);
  if (r >= 2)
    return;
  std::vector<float> send(3, 1.0f), recv(3);
  std::vector<BufferView> sendTo(2), recvFrom(2);
  sendTo[1 - r] = BufferView(send.data(), r == 1 ? 3 : 2);
  recvFrom[1 - r] = BufferView(recv.data(), 2);
  CommStatus s = pair->exchange(sendTo, recvFrom);
  if (r == 0)
    EXPECT_EQ(s.error, "exchange: member 1 sent more elements, member 0 expected 2 f32");
  else
    EXPECT_TRUE(s) << s.error;
}

} // namespace

int main(int argc, char **argv) {
  ::testing::InitGoogleTest(&argc, argv);
  std::string error;
  std::unique_ptr<Comm> comm = makeMpiComm(&argc, &argv, error);
  if (!comm) {
    std::fprintf(stderr, "error: %s\n", error.c_str());
    return 1;
  }
  if (comm->size() != 4) {
    std::fprintf(stderr, "error: run under mpirun -np 4, not %lld processes\n",
                 (long long)comm->size());
    return 1;
  }
  world = comm.get();
  int failed = RUN_ALL_TESTS();
  comm.reset();
  finalizeMpi();
  return failed;
}
