//===- mpi.cpp - ranks that are MPI processes ------------------------------===//

#include "comm/mpi.h"

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>

namespace shardline::rt {

namespace {

bool initialized = false;

std::string mpiError(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  return std::string(text, len);
}

class MpiComm : public Comm {
public:
  MpiComm() {
    int r = 0, n = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    self = r;
    world = n;
  }
  int64_t rank() const override { return self; }
  int64_t size() const override { return world; }

  bool exchange(const std::vector<std::vector<float>> &sendTo,
                std::vector<std::vector<float>> &recvFrom, std::string &error) override {
    std::vector<int> sendCounts(world, 0), sendDispls(world, 0), recvCounts(world, 0),
        recvDispls(world, 0);
    size_t sendTotal = 0, recvTotal = 0;
    for (int64_t m = 0; m < world; ++m) {
      if (m == self)
        continue;
      if (sendTo[m].size() > (size_t)INT_MAX || recvFrom[m].size() > (size_t)INT_MAX ||
          sendTotal + sendTo[m].size() > (size_t)INT_MAX ||
          recvTotal + recvFrom[m].size() > (size_t)INT_MAX) {
        error = "an exchange of more than 2^31 values does not fit one MPI_Alltoallv";
        return false;
      }
      sendDispls[m] = (int)sendTotal;
      sendCounts[m] = (int)sendTo[m].size();
      sendTotal += sendTo[m].size();
      recvDispls[m] = (int)recvTotal;
      recvCounts[m] = (int)recvFrom[m].size();
      recvTotal += recvFrom[m].size();
    }
    std::vector<float> sendBuf(sendTotal), recvBuf(recvTotal);
    for (int64_t m = 0; m < world; ++m)
      if (m != self)
        std::copy(sendTo[m].begin(), sendTo[m].end(), sendBuf.begin() + sendDispls[m]);
    int rc = MPI_Alltoallv(sendBuf.data(), sendCounts.data(), sendDispls.data(), MPI_FLOAT,
                           recvBuf.data(), recvCounts.data(), recvDispls.data(), MPI_FLOAT,
                           MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) {
      error = "MPI_Alltoallv: " + mpiError(rc);
      return false;
    }
    for (int64_t m = 0; m < world; ++m)
      if (m != self)
        std::copy_n(recvBuf.begin() + recvDispls[m], recvCounts[m], recvFrom[m].begin());
    return true;
  }

  bool allGather(uint64_t value, std::vector<uint64_t> &all, std::string &error) override {
    all.assign(world, 0);
    int rc = MPI_Allgather(&value, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) {
      error = "MPI_Allgather: " + mpiError(rc);
      return false;
    }
    return true;
  }

  bool barrier() override { return MPI_Barrier(MPI_COMM_WORLD) == MPI_SUCCESS; }

  void abort(const std::string &error) override {
    // The other ranks may be blocked in a collective. mpirun ends the whole
    // job when one process exits with a non-zero status; MPI_Abort, which
    // should do the same, was seen to leave the job hanging when two ranks
    // abort at once.
    std::fprintf(stderr, "shardline-run: error: rank %lld: %s\n", (long long)self, error.c_str());
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(1);
  }

private:
  int64_t self = 0, world = 1;
};

} // namespace

std::unique_ptr<Comm> makeMpiComm(int *argc, char ***argv, std::string &error) {
  int already = 0;
  MPI_Initialized(&already);
  if (!already) {
    if (MPI_Init(argc, argv) != MPI_SUCCESS) {
      error = "MPI_Init failed";
      return nullptr;
    }
    initialized = true;
  }
  // Errors come back as codes, so a failed call is reported, not fatal.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  return std::make_unique<MpiComm>();
}

void finalizeMpi() {
  if (initialized) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized)
      MPI_Finalize();
  }
}

} // namespace shardline::rt
