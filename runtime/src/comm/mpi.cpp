//===- mpi.cpp - ranks that are MPI processes ------------------------------===//

#include "comm/mpi.h"

#include <mpi.h>

#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

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

/// What the communicators of this process share: the way every wait ends.
/// A wait polls its requests (MPI_Test*) instead of blocking in MPI, so it can
/// give up. Every kCheckEvery of a wait it answers the other ranks' "are you
/// waiting?" (a few bytes on a communicator of its own, only ever sent after
/// a timeout), leaves quietly when a rank that failed has said it stops the
/// run (so that it does not take that rank's exit for a death), and looks
/// whether a rank on this host has ended: a rank killed outright sends
/// nothing, but its process is gone before mpirun ends the job about a
/// second later. A wait that completes within kCheckEvery (every wait of a
/// run that works) costs only the polls.
class MpiWorld {
public:
  MpiWorld() {
    MPI_Comm_rank(MPI_COMM_WORLD, &self);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    MPI_Comm_dup(MPI_COMM_WORLD, &asks);
    MPI_Comm_set_errhandler(asks, MPI_ERRORS_RETURN);
    Where mine{};
    mine.pid = (long long)getpid();
    gethostname(mine.host, sizeof mine.host - 1);
    where.resize(n);
    MPI_Allgather(&mine, sizeof mine, MPI_BYTE, where.data(), sizeof mine, MPI_BYTE,
                  MPI_COMM_WORLD);
  }

  int rank() const { return self; }
  int size() const { return n; }
  bool rankLost() const { return lost; }
  /// Whether a wait has heard that another rank stops the run.
  bool stopped() const { return stopNoticed; }

  /// Tells every other rank that this one stops the run (its error is
  /// printed), waiting a little for the notes to leave.
  void announceStop() {
    std::vector<MPI_Request> sent;
    for (int r = 0; r < n; ++r)
      if (r != self) {
        sent.emplace_back();
        MPI_Isend(&self, 1, MPI_INT, r, kStopTag, asks, &sent.back());
      }
    auto until = std::chrono::steady_clock::now() + kAnswerWithin / 10;
    int done = 0;
    while (!done && std::chrono::steady_clock::now() < until)
      MPI_Testall((int)sent.size(), sent.data(), &done, MPI_STATUSES_IGNORE);
  }

  /// Polls `requests` until they complete (true, with MPI's code in `rc`),
  /// or fails (false, `error` set) when the timeout passes or a rank has
  /// ended. `sources`: the world rank each request receives from (-1: not a
  /// receive), to name those that did not send; `members`: the world ranks
  /// of the call.
  bool wait(std::vector<MPI_Request> &requests, std::vector<MPI_Status> *statuses,
            const std::vector<int64_t> &sources, int &rc, const std::vector<int64_t> &members,
            double timeout, std::string &error) {
    auto deadline = deadlineAfter(timeout);
    auto check = std::chrono::steady_clock::now() + kCheckEvery;
    for (;;) {
      int done = 0;
      rc = MPI_Testall((int)requests.size(), requests.data(), &done,
                       statuses ? statuses->data() : MPI_STATUSES_IGNORE);
      if (done || rc != MPI_SUCCESS)
        return true;
      auto now = std::chrono::steady_clock::now();
      if (now < check)
        continue;
      check = now + kCheckEvery;
      answerAsks();
      if (heardStop()) {
        error.clear();
        return false;
      }
      if (std::string ended = endedRanks(); !ended.empty()) {
        lost = true;
        error =
            ended + "; rank " + std::to_string(self) + " waited for a call on " + rankList(members);
        return false;
      }
      if (now >= deadline) {
        lost = true;
        char seconds[32];
        std::snprintf(seconds, sizeof seconds, "%g", timeout);
        std::vector<int64_t> late;
        for (size_t i = 0; i < requests.size(); ++i) {
          int arrived = 1;
          if (sources[i] >= 0)
            MPI_Test(&requests[i], &arrived, MPI_STATUS_IGNORE);
          if (!arrived && std::find(late.begin(), late.end(), sources[i]) == late.end())
            late.push_back(sources[i]);
        }
        std::string idle = whoIsIdle();
        if (stopNoticed) {
          error.clear();
          return false;
        }
        error = "rank " + std::to_string(self) + " waited " + seconds + " s for " +
                (late.empty() ? "a call" : rankList(late) + " (the call is") + " on " +
                rankList(members) + (late.empty() ? "; " : "); ") + idle;
        return false;
      }
    }
  }

  /// One request, no statuses.
  bool wait(MPI_Request request, const char *what, const std::vector<int64_t> &members,
            double timeout, std::string &error) {
    std::vector<MPI_Request> one{request};
    int rc = MPI_SUCCESS;
    if (!wait(one, nullptr, {-1}, rc, members, timeout, error))
      return false;
    if (rc == MPI_SUCCESS)
      return true;
    error = std::string(what) + ": " + mpiError(rc);
    return false;
  }

  /// The world's ranks, 0 .. n-1.
  std::vector<int64_t> everyone() const {
    std::vector<int64_t> all(n);
    for (int r = 0; r < n; ++r)
      all[r] = r;
    return all;
  }

private:
  static constexpr auto kCheckEvery = std::chrono::milliseconds(50);
  static constexpr int kAskTag = 1, kAnswerTag = 2, kStopTag = 3;
  /// How long a rank that timed out waits for the others' answers.
  static constexpr auto kAnswerWithin = std::chrono::seconds(2);

  struct Where {
    long long pid;
    char host[64];
  };

  /// Answers every rank that asked whether this one waits: it does.
  void answerAsks() {
    for (;;) {
      int flag = 0;
      MPI_Status status;
      if (MPI_Iprobe(MPI_ANY_SOURCE, kAskTag, asks, &flag, &status) != MPI_SUCCESS || !flag)
        return;
      int from = 0;
      MPI_Recv(&from, 1, MPI_INT, status.MPI_SOURCE, kAskTag, asks, MPI_STATUS_IGNORE);
      MPI_Request answer;
      MPI_Isend(&self, 1, MPI_INT, status.MPI_SOURCE, kAnswerTag, asks, &answer);
      MPI_Request_free(&answer);
    }
  }

  /// Whether another rank has said it stops the run.
  bool heardStop() {
    int flag = 0;
    MPI_Iprobe(MPI_ANY_SOURCE, kStopTag, asks, &flag, MPI_STATUS_IGNORE);
    stopNoticed = stopNoticed || flag;
    return stopNoticed;
  }

  /// "rank 3 has ended (process 1234 is gone)" for the ranks on this host
  /// whose process has ended, or "".
  std::string endedRanks() const {
    std::vector<int64_t> ended;
    std::string pids;
    for (int r = 0; r < n; ++r) {
      if (r == self || std::strncmp(where[r].host, where[self].host, sizeof where[r].host) != 0)
        continue;
      // A process killed but not yet reaped is a zombie (state Z).
      std::ifstream stat("/proc/" + std::to_string(where[r].pid) + "/stat");
      std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
      size_t close = text.rfind(')');
      char state = close != std::string::npos && close + 2 < text.size() ? text[close + 2] : 'X';
      if (state == 'Z' || state == 'X') {
        ended.push_back(r);
        pids += (pids.empty() ? "" : ", ") + std::to_string(where[r].pid);
      }
    }
    if (ended.empty())
      return "";
    return rankList(ended) + (ended.size() == 1 ? " has" : " have") + " ended (process " + pids +
           (ended.size() == 1 ? " is" : " are") + " gone)";
  }

  /// Asks every other rank whether it waits, answering the others' asks
  /// meanwhile, and names those that do not answer.
  std::string whoIsIdle() {
    std::vector<MPI_Request> sent(n, MPI_REQUEST_NULL);
    for (int r = 0; r < n; ++r)
      if (r != self)
        MPI_Isend(&self, 1, MPI_INT, r, kAskTag, asks, &sent[r]);
    std::vector<char> answered(n, 0);
    answered[self] = 1;
    auto until = std::chrono::steady_clock::now() + kAnswerWithin;
    while (std::chrono::steady_clock::now() < until &&
           std::count(answered.begin(), answered.end(), 1) < n && !heardStop()) {
      answerAsks();
      int flag = 0;
      MPI_Status status;
      if (MPI_Iprobe(MPI_ANY_SOURCE, kAnswerTag, asks, &flag, &status) == MPI_SUCCESS && flag) {
        int from = 0;
        MPI_Recv(&from, 1, MPI_INT, status.MPI_SOURCE, kAnswerTag, asks, MPI_STATUS_IGNORE);
        answered[status.MPI_SOURCE] = 1;
      }
    }
    // The sends to ranks that never answer stay pending; the run ends.
    for (MPI_Request &request : sent)
      if (request != MPI_REQUEST_NULL)
        MPI_Request_free(&request);
    std::vector<int64_t> idle;
    for (int r = 0; r < n; ++r)
      if (!answered[r])
        idle.push_back(r);
    if (idle.empty())
      return "every rank waits in some call, so they wait in different ones: the ranks do not "
             "run the same program";
    return "in no call: " + rankList(idle) + " (stalled, or busy for longer than the timeout)";
  }

  int self = 0, n = 1;
  MPI_Comm asks = MPI_COMM_NULL;
  std::vector<Where> where;
  bool lost = false, stopNoticed = false;
};

/// A group on its own MPI communicator, split from the world's. Every
/// collective is a pairwise exchange of point-to-point messages, the thread
/// ranks' algorithm: each member sends every other member exactly its part,
/// so the bytes are the report's; the waits are polled (MpiWorld::wait), and
/// a receive still open at the timeout names its sender. (OpenMPI's
/// non-blocking collectives, the other way to poll, cost several times a
/// blocking one for small messages; point-to-point costs about the same.)
/// Sums are formed by sumTerms in group order, as on thread ranks, so both
/// backends compute the same bits.
class MpiGroup : public Group {
public:
  MpiGroup(MpiWorld &world, double timeout, MPI_Comm comm, std::vector<int64_t> members,
           int64_t index)
      : Group(std::move(members), index), world(world), timeout(timeout), comm(comm) {}
  ~MpiGroup() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized)
      MPI_Comm_free(&comm);
  }

protected:
  bool doAllGather(const BufferView &send, const BufferView &recv, std::string &error) override {
    // Group::allGather has put this member's part in place.
    std::vector<BufferView> to(size(), send), from(size());
    for (int64_t j = 0; j < size(); ++j)
      from[j] = recv.slice(j * send.count, send.count);
    return pairwise(to, from, error);
  }

  bool doReduceScatter(const BufferView &send, const BufferView &recv,
                       std::string &error) override {
    std::vector<BufferView> to(size()), from(size());
    for (int64_t j = 0; j < size(); ++j)
      to[j] = send.slice(j * recv.count, recv.count);
    return sumOwnPart(to, recv, error);
  }

  bool doAllReduce(const BufferView &send, const BufferView &recv, std::string &error) override {
    // Reduce-scatter of the parts, then all-gather of the sums.
    std::vector<BufferView> to(size()), parts(size());
    for (int64_t j = 0; j < size(); ++j) {
      to[j] = part(send, j);
      parts[j] = part(recv, j);
    }
    if (!sumOwnPart(to, parts[index()], error))
      return false;
    return pairwise(std::vector<BufferView>(size(), parts[index()]), parts, error);
  }

  bool doAllToAll(const BufferView &send, const BufferView &recv, std::string &error) override {
    int64_t n = send.count / size();
    std::vector<BufferView> to(size()), from(size());
    for (int64_t j = 0; j < size(); ++j) {
      to[j] = send.slice(j * n, n);
      from[j] = recv.slice(j * n, n);
    }
    return pairwise(to, from, error);
  }

  bool doExchange(const std::vector<BufferView> &sendTo, const std::vector<BufferView> &recvFrom,
                  std::string &error) override {
    return pairwise(sendTo, recvFrom, error);
  }

private:
  /// Elements [partBegin(j), partBegin(j + 1)) of `v`.
  BufferView part(const BufferView &v, int64_t j) const {
    int64_t begin = partBegin(v.count, j);
    return v.slice(begin, partBegin(v.count, j + 1) - begin);
  }

  /// Sends to[j] to every other member j and sums what every member sends
  /// this one, this member's to[index()] included, into `own` (which may be
  /// to[index()]).
  bool sumOwnPart(const std::vector<BufferView> &to, const BufferView &own, std::string &error) {
    std::vector<char> received((size_t)(size() * own.bytes()));
    std::vector<BufferView> from(size());
    std::vector<const void *> terms;
    for (int64_t j = 0; j < size(); ++j) {
      from[j] = BufferView(received.data() + j * own.bytes(), own.count, own.dtype);
      terms.push_back(j == index() ? to[j].data : from[j].data);
    }
    if (!pairwise(to, from, error))
      return false;
    sumTerms(own.dtype, terms, own.count, own.data);
    return true;
  }

  /// Sends sendTo[j] to and receives recvFrom[j] from every member j but
  /// this one, straight from and into the views. Every pair posts a message
  /// even when it is empty, so no message is left for the next call.
  bool pairwise(const std::vector<BufferView> &sendTo, const std::vector<BufferView> &recvFrom,
                std::string &error) {
    std::vector<MPI_Request> requests;
    // The world rank each request receives from; -1 for the sends.
    std::vector<int64_t> sources, from;
    for (int64_t j = 0; j < size(); ++j) {
      if (j == index())
        continue;
      if (!fitsInt(recvFrom[j].count, error) || !fitsInt(sendTo[j].count, error))
        return false;
      requests.emplace_back();
      from.push_back(j);
      sources.push_back(members()[j]);
      if (!mpiOk(MPI_Irecv(recvFrom[j].data, (int)recvFrom[j].count, mpiType(recvFrom[j].dtype),
                           (int)j, kTag, comm, &requests.back()),
                 "MPI_Irecv", error))
        return false;
    }
    for (int64_t j = 0; j < size(); ++j) {
      if (j == index())
        continue;
      requests.emplace_back();
      sources.push_back(-1);
      if (!mpiOk(MPI_Isend(sendTo[j].data, (int)sendTo[j].count, mpiType(sendTo[j].dtype), (int)j,
                           kTag, comm, &requests.back()),
                 "MPI_Isend", error))
        return false;
    }
    std::vector<MPI_Status> statuses(requests.size());
    int rc = MPI_SUCCESS;
    if (!world.wait(requests, &statuses, sources, rc, members(), timeout, error))
      return false;
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
        return mpiOk(code, "MPI_Testall", error);
      int got = 0;
      MPI_Get_count(&statuses[r], mpiType(into.dtype), &got);
      if (rc == MPI_SUCCESS && got != into.count) {
        error =
            "member " + std::to_string(from[r]) + " sent " + std::to_string(got) + ", " + expected;
        return false;
      }
    }
    return mpiOk(rc, "MPI_Testall", error);
  }

  static constexpr int kTag = 1;
  MpiWorld &world;
  double timeout;
  MPI_Comm comm;
};

class MpiComm : public Comm {
public:
  MpiComm() : everyone(world.everyone()) {}
  int64_t rank() const override { return world.rank(); }
  int64_t size() const override { return world.size(); }

  bool allGather(uint64_t value, std::vector<uint64_t> &all, std::string &error) override {
    all.assign(size(), 0);
    MPI_Request request;
    bool ok = mpiOk(MPI_Iallgather(&value, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T,
                                   MPI_COMM_WORLD, &request),
                    "MPI_Iallgather", error) &&
              world.wait(request, "MPI_Iallgather", everyone, timeoutSeconds, error);
    if (!ok && !error.empty())
      error = "allGather of words: " + error;
    return ok;
  }

  using Comm::barrier;
  bool barrier(std::string &error) override {
    MPI_Request request;
    return mpiOk(MPI_Ibarrier(MPI_COMM_WORLD, &request), "MPI_Ibarrier", error) &&
           world.wait(request, "MPI_Ibarrier", everyone, timeoutSeconds, error);
  }

  bool rankLost() const override { return world.rankLost(); }
  bool aborted() const override { return world.stopped(); }
  bool ranksAreThreads() const override { return false; }

  void abort(const std::string &error) override {
    // The other ranks may be blocked in a collective. mpirun ends the whole
    // job when one process exits with a non-zero status; MPI_Abort, which
    // should do the same, was seen to leave the job hanging when two ranks
    // abort at once.
    std::fprintf(stderr, "shardline-run: error: rank %lld: %s\n", (long long)rank(), error.c_str());
    std::fflush(stdout);
    std::fflush(stderr);
    world.announceStop();
    std::_Exit(world.rankLost() ? kExitRankLost : 1);
  }

protected:
  CommStatus doSplit(int64_t color, int64_t key, std::unique_ptr<Group> &group) override {
    MPI_Comm comm = MPI_COMM_NULL;
    std::string error;
    // MPI_Comm_split blocks and cannot be polled: the ranks first meet where
    // a wait can time out, so that a rank that stalled before the split
    // is named instead of holding the others there.
    if (!barrier(error))
      return {false, error.empty() ? "" : "split: " + error, 0};
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
    group = std::make_unique<MpiGroup>(world, timeoutSeconds, comm,
                                       std::vector<int64_t>(inWorld.begin(), inWorld.end()),
                                       (int64_t)r);
    return {};
  }

private:
  MpiWorld world;
  std::vector<int64_t> everyone;
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
