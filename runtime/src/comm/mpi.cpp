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

/// False with `error` set when the call failed.
bool mpiOk(int code, const char *call, std::string &error) {
  if (code == MPI_SUCCESS)
    return true;
  error = std::string(call) + ": " + mpiError(code);
  return false;
}

/// MPI counts are ints.
bool fitsInt(int64_t elements, std::string &error) {
  if (elements <= INT_MAX)
    return true;
  error = std::to_string(elements) + " elements do not fit one MPI call (at most 2^31 - 1)";
  return false;
}

MPI_Datatype mpiType(DType dtype) {
  switch (dtype) {
  case DType::F32:
    return MPI_FLOAT;
  case DType::I32:
    return MPI_INT32_T;
  case DType::BF16:
  case DType::F16:
    // Moved as bits; sums are ours (sumTerms).
    return MPI_UINT16_T;
  }
  return MPI_DATATYPE_NULL;
}

/// A group on its own MPI communicator, split from the world's: its
/// collectives are MPI collectives of its members only. Sums are formed by
/// sumTerms in group order after an all-to-all of the parts, as on thread
/// ranks, so both backends compute the same bits.
class MpiGroup : public Group {
public:
  MpiGroup(MPI_Comm comm, std::vector<int64_t> members, int64_t index)
      : Group(std::move(members), index), comm(comm) {}
  ~MpiGroup() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized)
      MPI_Comm_free(&comm);
  }

protected:
  bool doAllGather(const BufferView &send, const BufferView &recv, std::string &error) override {
    // Group::allGather has put this member's part in place.
    return fitsInt(recv.count, error) &&
           mpiOk(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, recv.data, (int)send.count,
                               mpiType(recv.dtype), comm),
                 "MPI_Allgather", error);
  }

  bool doReduceScatter(const BufferView &send, const BufferView &recv,
                       std::string &error) override {
    if (!fitsInt(send.count, error))
      return false;
    std::vector<char> parts(send.bytes());
    MPI_Datatype type = mpiType(send.dtype);
    if (!mpiOk(MPI_Alltoall(send.data, (int)recv.count, type, parts.data(), (int)recv.count, type,
                            comm),
               "MPI_Alltoall", error))
      return false;
    std::vector<const void *> terms;
    for (int64_t j = 0; j < size(); ++j)
      terms.push_back(parts.data() + j * recv.bytes());
    sumTerms(recv.dtype, terms, recv.count, recv.data);
    return true;
  }

  bool doAllReduce(const BufferView &send, const BufferView &recv, std::string &error) override {
    if (!fitsInt(send.count, error))
      return false;
    int64_t g = size(), own = partBegin(send.count, index() + 1) - partBegin(send.count, index());
    std::vector<int> counts(g), displs(g), ownCounts(g, (int)own), ownDispls(g);
    for (int64_t j = 0; j < g; ++j) {
      displs[j] = (int)partBegin(send.count, j);
      counts[j] = (int)(partBegin(send.count, j + 1) - displs[j]);
      ownDispls[j] = (int)(j * own);
    }
    std::vector<char> parts(g * own * dtypeSize(send.dtype));
    MPI_Datatype type = mpiType(send.dtype);
    if (!mpiOk(MPI_Alltoallv(send.data, counts.data(), displs.data(), type, parts.data(),
                             ownCounts.data(), ownDispls.data(), type, comm),
               "MPI_Alltoallv", error))
      return false;
    std::vector<const void *> terms;
    for (int64_t j = 0; j < g; ++j)
      terms.push_back(parts.data() + j * own * dtypeSize(send.dtype));
    sumTerms(recv.dtype, terms, own, recv.slice(displs[index()], own).data);
    return mpiOk(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, recv.data, counts.data(),
                                displs.data(), type, comm),
                 "MPI_Allgatherv", error);
  }

  bool doAllToAll(const BufferView &send, const BufferView &recv, std::string &error) override {
    int part = (int)(send.count / size());
    MPI_Datatype type = mpiType(send.dtype);
    return fitsInt(send.count, error) &&
           mpiOk(MPI_Alltoall(send.data, part, type, recv.data, part, type, comm), "MPI_Alltoall",
                 error);
  }

  bool doExchange(const std::vector<BufferView> &sendTo, const std::vector<BufferView> &recvFrom,
                  std::string &error) override {
    // Point to point, straight from and into the views. Every pair posts a
    // message even when it is empty, so no message is left for the next call.
    std::vector<MPI_Request> requests;
    std::vector<int64_t> from;
    for (int64_t j = 0; j < size(); ++j) {
      if (j == index())
        continue;
      if (!fitsInt(recvFrom[j].count, error) || !fitsInt(sendTo[j].count, error))
        return false;
      requests.emplace_back();
      from.push_back(j);
      if (!mpiOk(MPI_Irecv(recvFrom[j].data, (int)recvFrom[j].count, mpiType(recvFrom[j].dtype),
                           (int)j, kExchangeTag, comm, &requests.back()),
                 "MPI_Irecv", error))
        return false;
    }
    for (int64_t j = 0; j < size(); ++j) {
      if (j == index())
        continue;
      requests.emplace_back();
      if (!mpiOk(MPI_Isend(sendTo[j].data, (int)sendTo[j].count, mpiType(sendTo[j].dtype), (int)j,
                           kExchangeTag, comm, &requests.back()),
                 "MPI_Isend", error))
        return false;
    }
    std::vector<MPI_Status> statuses(requests.size());
    int rc = MPI_Waitall((int)requests.size(), requests.data(), statuses.data());
    // The receives come first: statuses[r] is the message from member from[r].
    for (size_t r = 0; r < from.size(); ++r) {
      const BufferView &into = recvFrom[from[r]];
      std::string expected = "member " + std::to_string(index()) + " expected " +
                             std::to_string(into.count) + " " + dtypeName(into.dtype);
      int code = rc == MPI_ERR_IN_STATUS ? statuses[r].MPI_ERROR : MPI_SUCCESS, errorClass = 0;
      MPI_Error_class(code, &errorClass);
      if (errorClass == MPI_ERR_TRUNCATE) {
        error = "member " + std::to_string(from[r]) + " sent more elements, " + expected;
        return false;
      }
      if (code != MPI_SUCCESS && code != MPI_ERR_PENDING)
        return mpiOk(code, "MPI_Waitall", error);
      int got = 0;
      MPI_Get_count(&statuses[r], mpiType(into.dtype), &got);
      if (rc == MPI_SUCCESS && got != into.count) {
        error =
            "member " + std::to_string(from[r]) + " sent " + std::to_string(got) + ", " + expected;
        return false;
      }
    }
    return mpiOk(rc, "MPI_Waitall", error);
  }

private:
  static constexpr int kExchangeTag = 1;
  MPI_Comm comm;
};

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

protected:
  CommStatus doSplit(int64_t color, int64_t key, std::unique_ptr<Group> &group) override {
    MPI_Comm comm = MPI_COMM_NULL;
    std::string error;
    if (!mpiOk(MPI_Comm_split(MPI_COMM_WORLD, color == kNoGroup ? MPI_UNDEFINED : (int)color,
                              (int)key, &comm),
               "MPI_Comm_split", error))
      return CommStatus::failed("split: " + error);
    if (comm == MPI_COMM_NULL)
      return {};
    MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
    int n = 0, r = 0;
    MPI_Comm_size(comm, &n);
    MPI_Comm_rank(comm, &r);
    // The members' world ranks, in the group's order.
    MPI_Group groupRanks, worldRanks;
    MPI_Comm_group(comm, &groupRanks);
    MPI_Comm_group(MPI_COMM_WORLD, &worldRanks);
    std::vector<int> inGroup(n), inWorld(n);
    for (int j = 0; j < n; ++j)
      inGroup[j] = j;
    MPI_Group_translate_ranks(groupRanks, n, inGroup.data(), worldRanks, inWorld.data());
    MPI_Group_free(&groupRanks);
    MPI_Group_free(&worldRanks);
    group = std::make_unique<MpiGroup>(comm, std::vector<int64_t>(inWorld.begin(), inWorld.end()),
                                       (int64_t)r);
    return {};
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
