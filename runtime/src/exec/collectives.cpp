//===- collectives.cpp - every exchange of a rank goes through here --------===//

#include "exec/collectives.h"
#include "exec/program.h"

namespace shardline::rt {

Collectives::Collectives(Comm &comm, const Mesh &mesh)
    : comm(comm), mesh(mesh), self(comm.rank()), ranks(mesh.numRanks()) {}

void Collectives::exchange(const Mail &sendTo, Mail &recvFrom, int64_t bytesPerValue) {
  std::string error;
  if (!comm.exchange(sendTo, recvFrom, error)) {
    if (!error.empty())
      throw Stop{error, false};
    throw Stop{"", true};
  }
  for (int64_t m = 0; m < ranks; ++m)
    if (m != self)
      sent += (int64_t)sendTo[m].size() * bytesPerValue;
}

Mail Collectives::allGather(const std::vector<int64_t> &members, const std::vector<float> &mine,
                            int64_t bytesPerValue) {
  Mail sendTo = noMail(), recvFrom = noMail();
  for (int64_t m : members)
    if (m != self) {
      sendTo[m] = mine;
      recvFrom[m].resize(mine.size());
    }
  exchange(sendTo, recvFrom, bytesPerValue);
  recvFrom[self] = mine;
  return recvFrom;
}

void Collectives::transition(int64_t key, const std::vector<int64_t> &shape, const Layout &from,
                             const Layout &to, const float *src, float *dst,
                             int64_t bytesPerValue) {
  auto it = transfers.find(key);
  if (it == transfers.end()) {
    CachedTransfer c;
    c.mine = planTransfer(mesh, shape, from, to, self);
    if (!c.mine.error.empty())
      throw Stop{c.mine.error, false};
    c.sends.assign(ranks, {});
    // A rank reads only from ranks that share its coordinates on every axis
    // the source layout does not use; only those can need this rank's values.
    std::vector<bool> used(mesh.axes.size(), false);
    for (const auto &dim : from.dims)
      for (const auto &a : dim)
        used[mesh.axisIndex(a)] = true;
    for (const auto &a : from.partial)
      used[mesh.axisIndex(a)] = true;
    std::vector<int64_t> me = mesh.coords(self);
    for (int64_t m = 0; m < ranks; ++m) {
      if (m == self)
        continue;
      std::vector<int64_t> theirs = mesh.coords(m);
      bool reachable = true;
      for (size_t i = 0; i < used.size(); ++i)
        if (!used[i] && theirs[i] != me[i])
          reachable = false;
      if (reachable)
        c.sends[m] = planTransfer(mesh, shape, from, to, m).reads[self];
    }
    it = transfers.emplace(key, std::move(c)).first;
  }
  const CachedTransfer &c = it->second;
  Mail sendTo = noMail(), recvFrom = noMail();
  for (int64_t m = 0; m < ranks; ++m) {
    if (m == self)
      continue;
    sendTo[m].reserve(c.sends[m].size());
    for (int64_t offset : c.sends[m])
      sendTo[m].push_back(src[offset]);
    recvFrom[m].resize(c.mine.reads[m].size());
  }
  exchange(sendTo, recvFrom, bytesPerValue);
  applyTransfer(c.mine, self, src, recvFrom, dst);
}

void Collectives::allReduce(int64_t step, const std::vector<int64_t> &shape, const Layout &from,
                            const float *src, float *dst, int64_t bytesPerValue) {
  Layout mid = from, to = from;
  to.partial.clear();
  mid.partial.clear();
  int64_t g = mesh.product(from.partial);
  std::vector<int64_t> loc = localShape(from, mesh, shape);
  int64_t dim = -1;
  for (size_t d = 0; d < loc.size(); ++d)
    if (loc[d] % g == 0 && (dim < 0 || loc[d] > loc[dim]))
      dim = (int64_t)d;
  if (dim < 0 || g == 1)
    return transition(2 * step, shape, from, to, src, dst, bytesPerValue);
  mid.dims[dim].insert(mid.dims[dim].end(), from.partial.begin(), from.partial.end());
  if (mid.orderDim == dim && mid.dims[dim].size() == from.partial.size())
    mid.orderDim = -1;
  std::vector<float> half(numElements(localShape(mid, mesh, shape)));
  transition(2 * step, shape, from, mid, src, half.data(), bytesPerValue);
  transition(2 * step + 1, shape, mid, to, half.data(), dst, bytesPerValue);
}

void Collectives::barrier() {
  if (!comm.barrier())
    throw Stop{"", true};
}

std::vector<uint64_t> Collectives::gatherWord(uint64_t word) {
  std::vector<uint64_t> all;
  std::string error;
  if (!comm.allGather(word, all, error)) {
    if (!error.empty())
      throw Stop{error, false};
    throw Stop{"", true};
  }
  return all;
}

std::vector<float> Collectives::gatherToFirst(const std::vector<int64_t> &shape,
                                              const Layout &layout, const float *mine,
                                              int64_t count) {
  Mail sendTo = noMail(), recvFrom = noMail();
  if (self != 0)
    sendTo[0].assign(mine, mine + count);
  else
    for (int64_t m = 1; m < ranks; ++m)
      recvFrom[m].resize(count);
  exchange(sendTo, recvFrom, 0);
  if (self != 0)
    return {};
  recvFrom[0].assign(mine, mine + count);
  std::vector<float> global(numElements(shape), 0.0f);
  for (int64_t r = 0; r < ranks; ++r) {
    std::vector<int64_t> offsets = globalOffsets(mesh, shape, layout, r);
    for (size_t i = 0; i < offsets.size(); ++i)
      global[offsets[i]] = recvFrom[r][i];
  }
  return global;
}

} // namespace shardline::rt
