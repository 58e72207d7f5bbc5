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
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_COMM_COMM_H
#define SHARDLINE_RUNTIME_COMM_COMM_H

#include "comm/group.h"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace shardline::rt {

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
  virtual bool barrier() = 0;
  /// Stops the run on every rank: this rank failed with `error`.
  virtual void abort(const std::string &error) = 0;

protected:
  /// split() with its arguments checked.
  virtual CommStatus doSplit(int64_t color, int64_t key, std::unique_ptr<Group> &group) = 0;
};

/// A barrier every waiting thread leaves as soon as one rank aborts.
class AbortableBarrier {
public:
  explicit AbortableBarrier(int64_t n) : n(n) {}
  bool wait();
  /// Waits for all n even after an abort: for threads that have all passed a
  /// wait() together and may be reading each other's buffers, so that none
  /// frees its buffers while another still reads them.
  void waitThrough();
  void abort();

private:
  std::mutex m;
  std::condition_variable cv;
  int64_t n, count = 0, generation = 0;
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

private:
  friend class ThreadComm;
  friend class ThreadGroup;
  void carried(int64_t sender, int64_t receiver, int64_t bytes);
  std::shared_ptr<ThreadGroupState> newGroup(int64_t members);
  /// Releases every rank waiting, in the world or in any group.
  void abortAll();

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
  bool aborted = false;
  std::vector<std::weak_ptr<ThreadGroupState>> groups;
};

class ThreadComm : public Comm {
public:
  ThreadComm(ThreadHub &hub, int64_t rank) : hub(hub), self(rank) {}
  int64_t rank() const override { return self; }
  int64_t size() const override { return hub.n; }
  bool allGather(uint64_t value, std::vector<uint64_t> &all, std::string &error) override;
  bool barrier() override { return hub.barrier.wait(); }
  void abort(const std::string &error) override;

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
              int64_t index);

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
  /// buffers.
  template <typename... Steps> bool phases(std::string &error, Steps... steps);
  /// "" when every member posted `send` views of the same count and dtype.
  std::string sameSends() const;
  /// Copies `bytes` from member j's `from` to `to`, counted as j's traffic.
  void receive(int64_t j, const void *from, void *to, int64_t bytes);

  ThreadHub &hub;
  std::shared_ptr<ThreadGroupState> state;
};

} // namespace shardline::rt

#endif
