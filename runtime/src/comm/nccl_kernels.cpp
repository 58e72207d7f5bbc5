//===- nccl_kernels.cpp - the kernels' own exchanges as NCCL routes --------===//

#include "comm/nccl_kernels.h"

#include <algorithm>
#include <map>
#include <string>

namespace shardline::rt {

std::vector<RingStep> ringSteps(const RankFacts &facts) {
  const std::vector<int64_t> &members = facts.members;
  int64_t n = (int64_t)members.size();
  std::vector<RingStep> steps;
  for (int64_t i = 1; i < n; ++i)
    steps.push_back({members[n - 1], members[1], i});
  return steps;
}

int64_t HaloRoutes::rowsSent() const {
  int64_t rows = 0;
  for (const HaloPeer &p : peers)
    rows += (int64_t)p.sendRows.size();
  return rows;
}

HaloRoutes haloRoutes(const RankFacts &facts, int64_t self, int64_t B, int64_t localRows,
                      int64_t slots, bool back) {
  std::map<int64_t, HaloPeer> peers;
  auto peer = [&](int64_t rank) -> HaloPeer & {
    HaloPeer &p = peers[rank];
    p.rank = rank;
    return p;
  };
  HaloRoutes out;
  // halo: `sends` are rows of x this rank sends, `receives` the slots it
  // fills (from itself or a peer). halo_add moves each the other way.
  for (const RankFacts::Row &r : facts.sends)
    for (int64_t bi = 0; bi < B; ++bi) {
      int64_t row = bi * localRows + r.row;
      std::vector<int64_t> &rows = back ? peer(r.rank).recvRows : peer(r.rank).sendRows;
      rows.push_back(row);
    }
  for (const RankFacts::Row &r : facts.receives)
    for (int64_t bi = 0; bi < B; ++bi) {
      int64_t row = bi * localRows + r.row, slot = bi * slots + r.slot;
      if (r.rank == self) {
        out.selfFrom.push_back(back ? slot : row);
        out.selfTo.push_back(back ? row : slot);
        continue;
      }
      std::vector<int64_t> &rows = back ? peer(r.rank).sendRows : peer(r.rank).recvRows;
      rows.push_back(slot);
    }
  for (auto &[rank, p] : peers)
    out.peers.push_back(std::move(p));
  return out;
}

GatheredChunks gatheredChunks(const RankFacts &facts, const std::vector<int64_t> &commMembers,
                              int64_t chunks, int64_t localChunks, int64_t stateSize,
                              int64_t decaySize) {
  GatheredChunks out;
  out.stateAt.assign(chunks, -1);
  out.decayAt.assign(chunks, -1);
  int64_t part = localChunks * (stateSize + decaySize);
  for (size_t i = 0; i < facts.members.size(); ++i) {
    auto at = std::find(commMembers.begin(), commMembers.end(), facts.members[i]);
    const std::vector<int64_t> &mine = facts.memberPositions[i];
    if (at == commMembers.end() || (int64_t)mine.size() != localChunks) {
      out.error = "rank " + std::to_string(facts.members[i]) +
                  " is not a member of the exchange's communicator with " +
                  std::to_string(localChunks) + " chunks";
      return out;
    }
    int64_t base = (at - commMembers.begin()) * part;
    for (int64_t j = 0; j < localChunks; ++j) {
      int64_t c = mine[j];
      if (c < 0 || c >= chunks || out.stateAt[c] >= 0) {
        out.error = "chunk " + std::to_string(c) + " is outside the " + std::to_string(chunks) +
                    " chunks or held twice";
        return out;
      }
      out.stateAt[c] = base + j * stateSize;
      out.decayAt[c] = base + localChunks * stateSize + j * decaySize;
    }
  }
  for (int64_t c = 0; c < chunks; ++c)
    if (out.stateAt[c] < 0) {
      out.error = "no member holds chunk " + std::to_string(c);
      return out;
    }
  return out;
}

const std::vector<std::string> &kernelExchangeKinds() {
  static const std::vector<std::string> kinds = {"ring_attention",
                                                 "halo",
                                                 "scan_state_exchange",
                                                 "cross_entropy",
                                                 "ring_attention_grad",
                                                 "halo_add",
                                                 "scan_state_exchange_grad",
                                                 "cross_entropy_grad",
                                                 "moe_dropless",
                                                 "moe_dropless_grad"};
  return kinds;
}

const std::vector<std::string> &transitionKinds() {
  static const std::vector<std::string> kinds = {
      "all_gather", "all_to_all", "slice", "reorder", "relayout", "reduce_scatter", "all_reduce"};
  return kinds;
}

const std::vector<std::string> &ncclDeviceKinds() {
  static const std::vector<std::string> kinds = [] {
    std::vector<std::string> all = transitionKinds();
    all.insert(all.end(), kernelExchangeKinds().begin(), kernelExchangeKinds().end());
    return all;
  }();
  return kinds;
}

} // namespace shardline::rt
