//===- comm.h - how ranks exchange values ----------------------------------===//
//
// The executor runs one rank's part of the program against a Comm: ranks are
// threads of one process (ThreadComm, sharing a ThreadHub) or processes under
// MPI (comm/mpi.h). Every collective is an exchange in which each rank sends
// every other rank exactly the values it needs; the program is the same on
// every rank (SPMD), so each side knows every count in advance and nothing
// else crosses the wire.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_COMM_COMM_H
#define SHARDLINE_RUNTIME_COMM_COMM_H

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace shardline::rt {

class Comm {
public:
  virtual ~Comm() = default;
  virtual int64_t rank() const = 0;
  virtual int64_t size() const = 0;
  /// Sends `sendTo[m]` to every rank m != rank() (empty: nothing) and fills
  /// `recvFrom[m]`, already sized to what m sends. Every rank calls it at the
  /// same point of the program. Returns false when the run was aborted
  /// (another rank failed); an error of this rank is in `error`.
  virtual bool exchange(const std::vector<std::vector<float>> &sendTo,
                        std::vector<std::vector<float>> &recvFrom, std::string &error) = 0;
  /// Every rank's 64-bit value, in rank order (plan hashes, measured figures).
  virtual bool allGather(uint64_t value, std::vector<uint64_t> &all, std::string &error) = 0;
  virtual bool barrier() = 0;
  /// Stops the run on every rank: this rank failed with `error`.
  virtual void abort(const std::string &error) = 0;
};

/// A barrier every waiting thread leaves as soon as one rank aborts.
class AbortableBarrier {
public:
  explicit AbortableBarrier(int64_t n) : n(n) {}
  bool wait();
  void abort();

private:
  std::mutex m;
  std::condition_variable cv;
  int64_t n, count = 0, generation = 0;
  bool isAborted = false;
};

/// What the ranks of one process share: a mailbox per (sender, receiver).
class ThreadHub {
public:
  explicit ThreadHub(int64_t ranks);
  /// The first error of any rank.
  std::string error() const;

private:
  friend class ThreadComm;
  int64_t n;
  AbortableBarrier barrier;
  std::vector<std::vector<std::vector<float>>> box; // [sender][receiver]
  std::vector<uint64_t> words;
  mutable std::mutex errorMutex;
  std::string firstError;
};

class ThreadComm : public Comm {
public:
  ThreadComm(ThreadHub &hub, int64_t rank) : hub(hub), self(rank) {}
  int64_t rank() const override { return self; }
  int64_t size() const override { return hub.n; }
  bool exchange(const std::vector<std::vector<float>> &sendTo,
                std::vector<std::vector<float>> &recvFrom, std::string &error) override;
  bool allGather(uint64_t value, std::vector<uint64_t> &all, std::string &error) override;
  bool barrier() override { return hub.barrier.wait(); }
  void abort(const std::string &error) override;

private:
  ThreadHub &hub;
  int64_t self;
};

} // namespace shardline::rt

#endif
