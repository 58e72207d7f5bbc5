//===- comm.cpp - ranks that are threads of one process --------------------===//

#include "comm/comm.h"

namespace shardline::rt {

bool AbortableBarrier::wait() {
  std::unique_lock<std::mutex> lock(m);
  if (isAborted)
    return false;
  int64_t gen = generation;
  if (++count == n) {
    count = 0;
    ++generation;
    cv.notify_all();
    return true;
  }
  cv.wait(lock, [&] { return gen != generation || isAborted; });
  return !isAborted;
}

void AbortableBarrier::abort() {
  std::lock_guard<std::mutex> lock(m);
  isAborted = true;
  cv.notify_all();
}

ThreadHub::ThreadHub(int64_t ranks)
    : n(ranks), barrier(ranks), box(ranks, std::vector<std::vector<float>>(ranks)),
      words(ranks, 0) {}

std::string ThreadHub::error() const {
  std::lock_guard<std::mutex> lock(errorMutex);
  return firstError;
}

bool ThreadComm::exchange(const std::vector<std::vector<float>> &sendTo,
                          std::vector<std::vector<float>> &recvFrom, std::string &error) {
  for (int64_t m = 0; m < hub.n; ++m)
    if (m != self)
      hub.box[self][m] = sendTo[m];
  if (!hub.barrier.wait())
    return false;
  for (int64_t m = 0; m < hub.n; ++m) {
    if (m == self)
      continue;
    if (hub.box[m][self].size() != recvFrom[m].size()) {
      error = "rank " + std::to_string(m) + " sent " + std::to_string(hub.box[m][self].size()) +
              " values, rank " + std::to_string(self) + " expected " +
              std::to_string(recvFrom[m].size());
      return false;
    }
    recvFrom[m] = hub.box[m][self];
  }
  // The mailboxes are refilled only after every rank has read its own.
  return hub.barrier.wait();
}

bool ThreadComm::allGather(uint64_t value, std::vector<uint64_t> &all, std::string &) {
  hub.words[self] = value;
  if (!hub.barrier.wait())
    return false;
  all = hub.words;
  return hub.barrier.wait();
}

void ThreadComm::abort(const std::string &error) {
  {
    std::lock_guard<std::mutex> lock(hub.errorMutex);
    if (hub.firstError.empty())
      hub.firstError = error;
  }
  hub.barrier.abort();
}

} // namespace shardline::rt
