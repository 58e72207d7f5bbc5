//===- comm.h - how ranks exchange values ----------------------------------===//
//
// The executor runs one rank's part of the program against a Comm: ranks are
// threads of one process (ThreadComm, sharing a ThreadHub) or processes under
// MPI (comm/mpi.h). The world itself only agrees on words (plan hashes,
// measured figures) and waits at barriers; data moves on group communicators
// (comm/group.h) that split() makes, whose collectives involve only their
// members. The program is the same on every rank (SPMD), so each side knows
// every count in advance and nothing else crosses the wire.
//
// Every wait has a deadline (setTimeout): a rank that waits longer for the
// others stops the run with an error naming the ranks that did not arrive and
// those that are in no collective at all (stalled, dead, or busy for longer
// than the timeout), so a run ends with an error, never a hang.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_COMM_COMM_H
#define SHARDLINE_RUNTIME_COMM_COMM_H

#include "comm/group.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace shardline::rt {

/// The default of RunOptions::timeoutSeconds and shardline-run --timeout.
constexpr double kDefaultTimeoutSeconds = 60;

/// The exit status of a process whose run stopped because a rank was lost
/// (it stalled past the timeout or ended); 1 is any other error.
constexpr int kExitRankLost = 3;

/// When a wait that starts now gives up after `seconds` (capped, so that any
/// positive value is a time point).
std::chrono::steady_clock::time_point deadlineAfter(double seconds);

/// "rank 3" or "ranks 1, 3".
std::string rankList(const std::vector<int64_t> &ranks);

class Comm {
public:
  /// The color of a rank that joins no group.
  static constexpr int64_t kNoGroup = -1;

  virtual ~Comm() = default;
  virtual int64_t rank() const = 0;
  virtual int64_t size() const = 0;
  /// Makes the groups of a partition of the world, as MPI_Comm_split: every
  /// rank calls it at the same point of the program, the ranks that pass the
  /// same color (0 <= color <= INT_MAX) form one group, ordered by key (ties
  /// by world rank). `group` is this rank's, or null for kNoGroup. A group
  /// works while its world does (the ThreadHub; MPI until finalizeMpi).
  CommStatus split(int64_t color, int64_t key, std::unique_ptr<Group> &group);
  /// Every rank's 64-bit value, in rank order (plan hashes, measured figures).
  virtual bool allGather(uint64_t value, std::vector<uint64_t> &all, std::string &error) = 0;
  /// False when aborted, or with `error` set when this rank found one (a
  /// timeout).
  virtual bool barrier(std::string &error) = 0;
  bool barrier() {
    std::string error;
    return barrier(error);
  }
  /// Stops the run on every rank: this rank failed with `error`.
  virtual void abort(const std::string &error) = 0;

  /// Seconds any one wait of this rank (here and in the groups split() makes
  /// afterwards) lasts at most: then it fails naming the ranks it waited for.
  void setTimeout(double seconds) { timeoutSeconds = seconds; }
  /// Whether the run stopped because a rank did not arrive in time or ended:
  /// the ranks lost one of their own, not an error in the plan.
  virtual bool rankLost() const = 0;
  /// Whether this rank has heard that the run is over (another rank failed
  /// or gave up): thread ranks at once, MPI ranks only from within a wait
  /// (mpirun ends them anyway).
  virtual bool aborted() const = 0;
  /// Whether the ranks are threads of one process: a rank that dies then
  /// ends only its thread, not the process.
  virtual bool ranksAreThreads() const = 0;

protected:
  /// split() with its arguments checked.
  virtual CommStatus doSplit(int64_t color, int64_t key, std::unique_ptr<Group> &group) = 0;

  double timeoutSeconds = kDefaultTimeoutSeconds;
};

/// A barrier of n members every waiting thread leaves as soon as one rank
/// aborts, or when its deadline passes.
class AbortableBarrier {
public:
  explicit AbortableBarrier(int64_t n) : n(n), here(n, 0) {}
  enum class Wait { Passed, Aborted, TimedOut };
  /// Member `member` (in [0, n)) waits for the others until `deadline`. On
  /// TimedOut, `timedOut` gets the members that had not arrived, called
  /// while the others are still held here, and the barrier is aborted: a
  /// member arriving later must not pass it alone and read the buffers of
  /// one that gave up.
  Wait wait(int64_t member, std::chrono::steady_clock::time_point deadline,
            const std::function<void(const std::vector<int64_t> &late)> &timedOut);
  /// Waits for all n even after an abort: for threads that have all passed a
  /// wait() together and may be reading each other's buffers, so that none
  /// frees its buffers while another still reads them. No deadline: every
  /// member is already here, and what it does before arriving only copies.
  void waitThrough();
  void abort();

private:
  std::mutex m;
  std::condition_variable cv;
  int64_t n, count = 0, generation = 0;
  /// Which members have arrived at wait() in this generation.
  std::vector<char> here;
  bool isAborted = false;
};

struct ThreadGroupState;

/// What the ranks of one process share: the world's barrier and words, the
/// traffic per (sender, receiver), and the groups.
class ThreadHub {
public:
  explicit ThreadHub(int64_t ranks);
  ~ThreadHub();
  /// The first error of any rank.
  std::string error() const;
  int64_t size() const { return n; }
  /// Bytes of data `sender` has sent `receiver` so far in group collectives.
  int64_t bytesCarried(int64_t sender, int64_t receiver) const;
  /// Whether a rank's wait timed out.
  bool rankLost() const { return lost.load(); }
  bool aborted() const { return isAborted.load(); }

private:
  friend class ThreadComm;
  friend class ThreadGroup;
  void carried(int64_t sender, int64_t receiver, int64_t bytes);
  std::shared_ptr<ThreadGroupState> newGroup(int64_t members);
  /// Releases every rank waiting, in the world or in any group.
  void abortAll();
  /// World rank `rank` waits on `barrier` as its member `member` until the
  /// timeout: true when it passed; false when the run was aborted, or on a
  /// timeout, when the first rank to give up gets the error naming the ranks
  /// of `members` (world ranks by member) that did not arrive and the ranks
  /// that wait nowhere, and every wait is released.
  bool wait(AbortableBarrier &barrier, int64_t rank, int64_t member,
            const std::vector<int64_t> &members, double timeout, std::string &error);

  int64_t n;
  AbortableBarrier barrier;
  std::vector<uint64_t> words;
  std::unique_ptr<std::atomic<int64_t>[]> traffic; // [sender * n + receiver]
  mutable std::mutex errorMutex;
  std::string firstError;
  // split(): every rank's color and key, and each new group's state, posted
  // by its first member.
  std::vector<int64_t> splitColor, splitKey;
  std::vector<std::shared_ptr<ThreadGroupState>> splitState;
  std::mutex groupsMutex;
  std::atomic<bool> isAborted{false}, lost{false};
  std::vector<std::weak_ptr<ThreadGroupState>> groups;
  /// Whether each rank is in a wait now: the ranks that are not, when every
  /// other one waits, are the ones that stalled.
  std::unique_ptr<std::atomic<bool>[]> waiting;
  /// The world's members: 0 .. n-1.
  std::vector<int64_t> everyone;
};

class ThreadComm : public Comm {
public:
  ThreadComm(ThreadHub &hub, int64_t rank) : hub(hub), self(rank) {}
  int64_t rank() const override { return self; }
  int64_t size() const override { return hub.n; }
  bool allGather(uint64_t value, std::vector<uint64_t> &all, std::string &error) override;
  using Comm::barrier;
  bool barrier(std::string &error) override;
  void abort(const std::string &error) override;
  bool rankLost() const override { return hub.rankLost(); }
  bool aborted() const override { return hub.aborted(); }
  bool ranksAreThreads() const override { return true; }

protected:
  CommStatus doSplit(int64_t color, int64_t key, std::unique_ptr<Group> &group) override;

private:
  ThreadHub &hub;
  int64_t self;
};

/// A group of thread ranks: its members wait only for each other, and each
/// reads what it receives straight from the sender's buffer.
class ThreadGroup : public Group {
public:
  ThreadGroup(ThreadHub &hub, std::shared_ptr<ThreadGroupState> state, std::vector<int64_t> members,
              int64_t index, double timeout);

protected:
  bool doAllGather(const BufferView &send, const BufferView &recv, std::string &error) override;
  bool doReduceScatter(const BufferView &send, const BufferView &recv, std::string &error) override;
  bool doAllReduce(const BufferView &send, const BufferView &recv, std::string &error) override;
  bool doAllToAll(const BufferView &send, const BufferView &recv, std::string &error) override;
  bool doExchange(const std::vector<BufferView> &sendTo, const std::vector<BufferView> &recvFrom,
                  std::string &error) override;

private:
  /// Runs `steps` once every member has posted, each step followed by a
  /// barrier; a step reads what the members posted and returns an error or
  /// "". An abort stops a collective before its steps, never in the middle:
  /// every member leaves only after every member has finished with its
  /// buffers. A timeout too stops it before its steps.
  template <typename... Steps> bool phases(std::string &error, Steps... steps);
  /// "" when every member posted `send` views of the same count and dtype.
  std::string sameSends() const;
  /// Copies `bytes` from member j's `from` to `to`, counted as j's traffic.
  void receive(int64_t j, const void *from, void *to, int64_t bytes);

  ThreadHub &hub;
  std::shared_ptr<ThreadGroupState> state;
  double timeout;
};

} // namespace shardline::rt

#endif
