//===- thread_ranks.h - A test's body on thread ranks of one hub -*- C++ -*-===//

#ifndef SHARDLINE_RUNTIME_TEST_THREAD_RANKS_H
#define SHARDLINE_RUNTIME_TEST_THREAD_RANKS_H

#include "comm/comm.h"
#include "exec/collectives.h"

#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace shardline::rt::test {

/// Runs fn(rank, collectives) on `n` thread ranks of one hub over `mesh`.
inline void onRanks(int64_t n, const shardline::Mesh &mesh,
                    const std::function<void(int64_t, Collectives &)> &fn) {
  ThreadHub hub(n);
  std::vector<std::thread> ranks;
  for (int64_t r = 0; r < n; ++r)
    ranks.emplace_back([&, r] {
      ThreadComm comm(hub, r);
      Collectives collectives(comm, mesh);
      fn(r, collectives);
    });
  for (std::thread &t : ranks)
    t.join();
}

} // namespace shardline::rt::test

#endif
