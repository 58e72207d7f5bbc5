//===- comm.cpp - ranks that are threads of one process --------------------===//

#include "comm/comm.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>

namespace shardline::rt {

CommStatus Comm::split(int64_t color, int64_t key, std::unique_ptr<Group> &group) {
  group.reset();
  // MPI_Comm_split takes ints; the thread ranks keep to the same range.
  if (color != kNoGroup && (color < 0 || color > INT_MAX))
    return CommStatus::failed("split: color " + std::to_string(color) +
                              " is outside [0, 2^31), and not kNoGroup (-1)");
  if (key < INT_MIN || key > INT_MAX)
    return CommStatus::failed("split: key " + std::to_string(key) + " does not fit 32 bits");
  return doSplit(color, key, group);
}

std::chrono::steady_clock::time_point deadlineAfter(double seconds) {
  // About 30 years: far beyond any run, far within the clock's range.
  double capped = std::min(std::max(seconds, 0.0), 1e9);
  return std::chrono::steady_clock::now() +
         std::chrono::duration_cast<std::chrono::steady_clock::duration>(
             std::chrono::duration<double>(capped));
}

std::string rankList(const std::vector<int64_t> &ranks) {
  std::string text = ranks.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < ranks.size(); ++i)
    text += (i ? ", " : "") + std::to_string(ranks[i]);
  return text;
}

AbortableBarrier::Wait
AbortableBarrier::wait(int64_t member, std::chrono::steady_clock::time_point deadline,
                       const std::function<void(const std::vector<int64_t> &late)> &timedOut) {
  std::unique_lock<std::mutex> lock(m);
  if (isAborted)
    return Wait::Aborted;
  int64_t gen = generation;
  here[member] = 1;
  if (++count == n) {
    count = 0;
    ++generation;
    std::fill(here.begin(), here.end(), 0);
    cv.notify_all();
    return Wait::Passed;
  }
  if (cv.wait_until(lock, deadline, [&] { return gen != generation || isAborted; }))
    // A rank the barrier released before an abort has passed it.
    return gen != generation ? Wait::Passed : Wait::Aborted;
  std::vector<int64_t> late;
  for (int64_t j = 0; j < n; ++j)
    if (!here[j])
      late.push_back(j);
  timedOut(late);
  // No member passes this barrier any more; the others leave through the
  // abort that follows.
  isAborted = true;
  return Wait::TimedOut;
}

void AbortableBarrier::waitThrough() {
  std::unique_lock<std::mutex> lock(m);
  int64_t gen = generation;
  if (++count == n) {
    count = 0;
    ++generation;
    cv.notify_all();
    return;
  }
  cv.wait(lock, [&] { return gen != generation; });
}

void AbortableBarrier::abort() {
  std::lock_guard<std::mutex> lock(m);
  isAborted = true;
  cv.notify_all();
}

/// What the members of one thread group share.
struct ThreadGroupState {
  explicit ThreadGroupState(int64_t members) : barrier(members), posts(members) {}
  /// What a member passes to the collective it is in.
  struct Post {
    BufferView send, recv;
    const std::vector<BufferView> *sendTo = nullptr;
  };
  AbortableBarrier barrier;
  std::vector<Post> posts;
};

ThreadHub::ThreadHub(int64_t ranks)
    : n(ranks), barrier(ranks), words(ranks, 0), traffic(new std::atomic<int64_t>[ranks * ranks]),
      splitColor(ranks), splitKey(ranks), splitState(ranks), waiting(new std::atomic<bool>[ranks]),
      everyone(ranks) {
  for (int64_t i = 0; i < ranks * ranks; ++i)
    traffic[i] = 0;
  for (int64_t r = 0; r < ranks; ++r) {
    waiting[r] = false;
    everyone[r] = r;
  }
}

ThreadHub::~ThreadHub() = default;

int64_t ThreadHub::bytesCarried(int64_t sender, int64_t receiver) const {
  return traffic[sender * n + receiver].load(std::memory_order_relaxed);
}

void ThreadHub::carried(int64_t sender, int64_t receiver, int64_t bytes) {
  traffic[sender * n + receiver].fetch_add(bytes, std::memory_order_relaxed);
}

std::shared_ptr<ThreadGroupState> ThreadHub::newGroup(int64_t members) {
  auto state = std::make_shared<ThreadGroupState>(members);
  std::lock_guard<std::mutex> lock(groupsMutex);
  if (isAborted)
    state->barrier.abort();
  groups.erase(std::remove_if(groups.begin(), groups.end(),
                              [](const std::weak_ptr<ThreadGroupState> &g) { return g.expired(); }),
               groups.end());
  groups.push_back(state);
  return state;
}

void ThreadHub::abortAll() {
  std::lock_guard<std::mutex> lock(groupsMutex);
  isAborted = true;
  barrier.abort();
  for (const auto &weak : groups)
    if (auto group = weak.lock())
      group->barrier.abort();
}

bool ThreadHub::wait(AbortableBarrier &on, int64_t rank, int64_t member,
                     const std::vector<int64_t> &members, double timeout, std::string &error) {
  waiting[rank] = true;
  bool first = false;
  AbortableBarrier::Wait result =
      on.wait(member, deadlineAfter(timeout), [&](const std::vector<int64_t> &late) {
        // Only the first rank to give up reports: a later one would see the
        // first out of its wait and name it too.
        first = !lost.exchange(true);
        if (!first)
          return;
        // The ranks in no wait while every other one waits are the ones that
        // stalled or ended; a late rank that waits elsewhere waits for them.
        std::vector<int64_t> lateRanks, idle;
        for (int64_t j : late)
          lateRanks.push_back(members[j]);
        for (int64_t r = 0; r < n; ++r)
          if (r != rank && !waiting[r])
            idle.push_back(r);
        char seconds[32];
        std::snprintf(seconds, sizeof seconds, "%g", timeout);
        error = "rank " + std::to_string(rank) + " waited " + seconds + " s for " +
                rankList(lateRanks) + " (the call is on " + rankList(members) + "); " +
                (idle.empty() ? std::string("every rank waits in some call, so they wait in "
                                            "different ones: the ranks do not run the same "
                                            "program")
                              : "in no call: " + rankList(idle) +
                                    " (stalled, ended, or busy for longer than the timeout)");
      });
  waiting[rank] = false;
  // Release the others at once, before their own deadlines pass; the caller
  // aborts the run with the error as with any other.
  if (first)
    abortAll();
  return result == AbortableBarrier::Wait::Passed;
}

std::string ThreadHub::error() const {
  std::lock_guard<std::mutex> lock(errorMutex);
  return firstError;
}

bool ThreadComm::allGather(uint64_t value, std::vector<uint64_t> &all, std::string &error) {
  hub.words[self] = value;
  bool ok = barrier(error);
  if (ok)
    all = hub.words;
  ok = ok && barrier(error);
  if (!error.empty())
    error = "allGather of words: " + error;
  return ok;
}

bool ThreadComm::barrier(std::string &error) {
  return hub.wait(hub.barrier, self, self, hub.everyone, timeoutSeconds, error);
}

void ThreadComm::abort(const std::string &error) {
  {
    std::lock_guard<std::mutex> lock(hub.errorMutex);
    if (hub.firstError.empty())
      hub.firstError = error;
  }
  hub.abortAll();
}

CommStatus ThreadComm::doSplit(int64_t color, int64_t key, std::unique_ptr<Group> &group) {
  hub.splitColor[self] = color;
  hub.splitKey[self] = key;
  std::string error;
  auto failed = [&] { return CommStatus{false, error.empty() ? "" : "split: " + error, 0}; };
  if (!barrier(error))
    return failed();
  std::vector<int64_t> members;
  if (color != kNoGroup)
    for (int64_t r = 0; r < hub.n; ++r)
      if (hub.splitColor[r] == color)
        members.push_back(r);
  std::sort(members.begin(), members.end(), [&](int64_t a, int64_t b) {
    return std::make_pair(hub.splitKey[a], a) < std::make_pair(hub.splitKey[b], b);
  });
  int64_t index = std::find(members.begin(), members.end(), self) - members.begin();
  if (!members.empty() && index == 0)
    hub.splitState[self] = hub.newGroup((int64_t)members.size());
  if (!barrier(error))
    return failed();
  std::shared_ptr<ThreadGroupState> state;
  if (!members.empty())
    state = hub.splitState[members[0]];
  // The first member's post is cleared once every member holds the state.
  if (!barrier(error))
    return failed();
  if (!members.empty() && index == 0)
    hub.splitState[self].reset();
  if (state)
    group = std::make_unique<ThreadGroup>(hub, std::move(state), std::move(members), index,
                                          timeoutSeconds);
  return {};
}

ThreadGroup::ThreadGroup(ThreadHub &hub, std::shared_ptr<ThreadGroupState> state,
                         std::vector<int64_t> members, int64_t index, double timeout)
    : Group(std::move(members), index), hub(hub), state(std::move(state)), timeout(timeout) {}

template <typename... Steps> bool ThreadGroup::phases(std::string &error, Steps... steps) {
  // An abort or a timeout ends the wait for the members' posts. After it,
  // the steps only copy and add, so every member reaches every later barrier.
  if (!hub.wait(state->barrier, members()[index()], index(), members(), timeout, error))
    return false;
  auto step = [&](auto &run) {
    if (error.empty())
      error = run();
    state->barrier.waitThrough();
  };
  (step(steps), ...);
  return error.empty();
}

std::string ThreadGroup::sameSends() const {
  const auto &posts = state->posts;
  for (size_t j = 1; j < posts.size(); ++j)
    if (posts[j].send.count != posts[0].send.count || posts[j].send.dtype != posts[0].send.dtype)
      return "member 0 (rank " + std::to_string(members()[0]) + ") sends " +
             std::to_string(posts[0].send.count) + " " + dtypeName(posts[0].send.dtype) +
             " elements, member " + std::to_string(j) + " (rank " + std::to_string(members()[j]) +
             ") " + std::to_string(posts[j].send.count) + " " + dtypeName(posts[j].send.dtype);
  return "";
}

void ThreadGroup::receive(int64_t j, const void *from, void *to, int64_t bytes) {
  if (bytes == 0)
    return;
  std::memcpy(to, from, bytes);
  hub.carried(members()[j], members()[index()], bytes);
}

bool ThreadGroup::doAllGather(const BufferView &send, const BufferView &recv, std::string &error) {
  auto &posts = state->posts;
  posts[index()].send = send;
  return phases(error, [&] {
    std::string mismatch = sameSends();
    if (mismatch.empty())
      for (int64_t j = 0; j < size(); ++j)
        if (j != index())
          receive(j, posts[j].send.data, recv.slice(j * send.count, send.count).data, send.bytes());
    return mismatch;
  });
}

bool ThreadGroup::doReduceScatter(const BufferView &send, const BufferView &recv,
                                  std::string &error) {
  auto &posts = state->posts;
  posts[index()].send = send;
  return phases(error, [&] {
    std::string mismatch = sameSends();
    if (!mismatch.empty())
      return mismatch;
    std::vector<const void *> terms;
    for (int64_t j = 0; j < size(); ++j) {
      terms.push_back(posts[j].send.slice(index() * recv.count, recv.count).data);
      if (j != index())
        hub.carried(members()[j], members()[index()], recv.bytes());
    }
    sumTerms(recv.dtype, terms, recv.count, recv.data);
    return mismatch;
  });
}

bool ThreadGroup::doAllReduce(const BufferView &send, const BufferView &recv, std::string &error) {
  auto &posts = state->posts;
  posts[index()].send = send;
  posts[index()].recv = recv;
  auto part = [&](const BufferView &v, int64_t j) {
    int64_t begin = partBegin(v.count, j);
    return v.slice(begin, partBegin(v.count, j + 1) - begin);
  };
  auto reduceOwnPart = [&] {
    std::string mismatch = sameSends();
    if (!mismatch.empty())
      return mismatch;
    BufferView own = part(recv, index());
    std::vector<const void *> terms;
    for (int64_t j = 0; j < size(); ++j) {
      terms.push_back(part(posts[j].send, index()).data);
      if (j != index())
        hub.carried(members()[j], members()[index()], own.bytes());
    }
    sumTerms(recv.dtype, terms, own.count, own.data);
    return mismatch;
  };
  auto gatherParts = [&] {
    for (int64_t j = 0; j < size(); ++j)
      if (j != index()) {
        BufferView theirs = part(posts[j].recv, j);
        receive(j, theirs.data, part(recv, j).data, theirs.bytes());
      }
    return std::string();
  };
  return phases(error, reduceOwnPart, gatherParts);
}

bool ThreadGroup::doAllToAll(const BufferView &send, const BufferView &recv, std::string &error) {
  auto &posts = state->posts;
  posts[index()].send = send;
  return phases(error, [&] {
    std::string mismatch = sameSends();
    int64_t n = send.count / size();
    if (mismatch.empty())
      for (int64_t j = 0; j < size(); ++j)
        if (j != index())
          receive(j, posts[j].send.slice(index() * n, n).data, recv.slice(j * n, n).data,
                  n * dtypeSize(send.dtype));
    return mismatch;
  });
}

bool ThreadGroup::doExchange(const std::vector<BufferView> &sendTo,
                             const std::vector<BufferView> &recvFrom, std::string &error) {
  auto &posts = state->posts;
  posts[index()].sendTo = &sendTo;
  return phases(error, [&] {
    for (int64_t j = 0; j < size(); ++j) {
      if (j == index())
        continue;
      const BufferView &from = (*posts[j].sendTo)[index()];
      if (from.count != recvFrom[j].count || from.dtype != recvFrom[j].dtype)
        return "member " + std::to_string(j) + " (rank " + std::to_string(members()[j]) +
               ") sends " + std::to_string(from.count) + " " + dtypeName(from.dtype) +
               " elements, member " + std::to_string(index()) + " (rank " +
               std::to_string(members()[index()]) + ") expects " +
               std::to_string(recvFrom[j].count) + " " + dtypeName(recvFrom[j].dtype);
    }
    for (int64_t j = 0; j < size(); ++j)
      if (j != index())
        receive(j, (*posts[j].sendTo)[index()].data, recvFrom[j].data, recvFrom[j].bytes());
    return std::string();
  });
}

} // namespace shardline::rt
