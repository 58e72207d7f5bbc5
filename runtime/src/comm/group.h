//===- group.h - collectives on a group of ranks ----------------*- C++ -*-===//
//
// A Group is a communicator over some of the world's ranks (as an MPI_Comm or
// an ncclComm_t): Comm::split makes one collectively, and its collectives
// involve only its members, so a tp group's gather never waits for the ranks
// of another tp group. The collectives work on buffer views (pointer, element
// count, dtype) and have NCCL's shapes: all-gather, reduce-scatter and
// all-reduce (sum), all-to-all, and a variable exchange for everything that is
// not a plain collective (layout transitions, ring steps, halos, MoE
// dispatch).
//
// Every member calls a group's collectives in the same order (SPMD). Each call
// returns a CommStatus: false when the run was aborted (error empty: another
// rank failed) or when this rank found an error (in `error`); on an error the
// caller aborts the run (Comm::abort), which releases the members waiting for
// it. A status also counts the bytes this rank sent; the algorithms are the
// bandwidth-optimal ones whose bytes DESIGN §4 states (core/layout.h), so the
// executor can equate what it measures with the report.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_COMM_GROUP_H
#define SHARDLINE_RUNTIME_COMM_GROUP_H

#include "core/buffer.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace shardline::rt {

/// What a communication call did.
struct CommStatus {
  /// False when the run was aborted or this rank found an error.
  bool ok = true;
  /// This rank's error; empty when another rank aborted the run.
  std::string error;
  /// Bytes of data this rank sent to other ranks.
  int64_t bytesSent = 0;

  explicit operator bool() const { return ok; }
  static CommStatus failed(std::string error) { return {false, std::move(error), 0}; }
};

/// `terms[j][k]` summed over j in order, for every k < count, into `dst` (which
/// may be one of the terms). The order is the group's, on every backend, so
/// every backend and every rank computes the same bits; 16-bit floats are
/// summed in f32 and rounded once, i32 wraps.
void sumTerms(DType dtype, const std::vector<const void *> &terms, int64_t count, void *dst);

class Group {
public:
  Group(const Group &) = delete;
  Group &operator=(const Group &) = delete;
  virtual ~Group() = default;
  /// The members' world ranks in group order.
  const std::vector<int64_t> &members() const { return ranks; }
  /// This rank's position in members().
  int64_t index() const { return self; }
  int64_t size() const { return (int64_t)ranks.size(); }

  /// recv (size() * send.count elements) gets every member's send in group
  /// order. send may be this member's part of recv (in place).
  CommStatus allGather(const BufferView &send, const BufferView &recv);
  /// recv gets the sum over the members of their send's part index() (send
  /// holds size() * recv.count elements). recv may be this member's part of
  /// send (in place).
  CommStatus reduceScatter(const BufferView &send, const BufferView &recv);
  /// recv gets the sum over the members of their send; recv may be send. Runs
  /// as reduce-scatter then all-gather, in parts of count / size() elements
  /// (the first count % size() parts one more).
  CommStatus allReduce(const BufferView &send, const BufferView &recv);
  /// Part j of send (count / size() elements) goes to member j; part j of recv
  /// comes from member j. send and recv are apart.
  CommStatus allToAll(const BufferView &send, const BufferView &recv);
  /// Sends sendTo[j] to every member j != index() and fills recvFrom[j], sized
  /// to what j sends (either may be empty); the entries of this member are not
  /// touched. Receive views are apart from each other and from the sends.
  CommStatus exchange(const std::vector<BufferView> &sendTo,
                      const std::vector<BufferView> &recvFrom);

protected:
  Group(std::vector<int64_t> members, int64_t index) : ranks(std::move(members)), self(index) {}

  /// The backends: arguments are checked and this member's own part of an
  /// all-gather or all-to-all is already in place. Return false when aborted
  /// or, with `error` set, on an error.
  virtual bool doAllGather(const BufferView &send, const BufferView &recv, std::string &error) = 0;
  virtual bool doReduceScatter(const BufferView &send, const BufferView &recv,
                               std::string &error) = 0;
  virtual bool doAllReduce(const BufferView &send, const BufferView &recv, std::string &error) = 0;
  virtual bool doAllToAll(const BufferView &send, const BufferView &recv, std::string &error) = 0;
  virtual bool doExchange(const std::vector<BufferView> &sendTo,
                          const std::vector<BufferView> &recvFrom, std::string &error) = 0;

  /// The elements of all-reduce part j: [partBegin(n, j), partBegin(n, j + 1)).
  int64_t partBegin(int64_t count, int64_t part) const;

private:
  /// The checks between one member's part and the whole of size() parts
  /// (all-gather, reduce-scatter): "" or the error.
  std::string checkPartOfWhole(const std::string &partName, const BufferView &part,
                               const std::string &wholeName, const BufferView &whole) const;

  std::vector<int64_t> ranks;
  int64_t self;
};

} // namespace shardline::rt

#endif
