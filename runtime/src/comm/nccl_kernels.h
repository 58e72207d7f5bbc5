//===- nccl_kernels.h - the kernels' own exchanges as NCCL routes -*- C++ -*-===//
//
// The exchanges that kernels make themselves (ring attention's K, V ring,
// the halos, the scans' state exchange), worked out on the host from a
// step's rank facts (exec/program.h, RankFacts) as the CPU kernels make them
// through the host collectives: which peer each grouped ncclSend/ncclRecv
// targets, in which order, and which rows or chunks travel. The NCCL
// lowering (comm/nccl_plan.h) counts its bytes from these routes and the
// CUDA backend runs them, so the CPU tests that check one check the other.
// Pure C++, no CUDA or NCCL header.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_COMM_NCCL_KERNELS_H
#define SHARDLINE_RUNTIME_COMM_NCCL_KERNELS_H

#include "exec/program.h"

#include <cstdint>
#include <string>
#include <vector>

namespace shardline::rt {

/// One step of ring attention's K, V ring: a grouped send of the block this
/// rank holds to `sendTo` and receive of the next one from `recvFrom`
/// (world ranks); afterwards the rank holds the K, V block of
/// `RankFacts::members[block]`.
struct RingStep {
  int64_t sendTo = 0, recvFrom = 0, block = 0;
};

/// The n - 1 steps of a ring of n members (RankFacts::members, in ring order
/// from this rank): each sends to the previous member and receives from the
/// next, so step i brings member i's block, the order in which the CPU
/// kernel merges the blocks (own first). Empty for a ring of one.
std::vector<RingStep> ringSteps(const RankFacts &facts);

/// What a halo (or its dual, halo_add) exchanges with one peer, in rows of
/// C values: the rows this rank sends, in the order it sends them, as
/// indices into its source, and where the rows it receives land, in the
/// order they arrive, as indices into its destination.
struct HaloPeer {
  int64_t rank = 0;
  std::vector<int64_t> sendRows, recvRows;
};

/// A halo step's routes. halo: the source is x's local rows [B, localRows]
/// and the destination the halo's [B, slots]; halo_add the other way, the
/// rows received added onto the destination. The rows this rank holds
/// itself move from selfFrom[i] to selfTo[i] without NCCL.
struct HaloRoutes {
  /// By world rank, ascending.
  std::vector<HaloPeer> peers;
  std::vector<int64_t> selfFrom, selfTo;
  int64_t rowsSent() const;
};

/// The routes of sl.halo (`back` false) or sl.halo_add (`back` true) for
/// `self` with the step's resolved facts, each fact row standing for its
/// B batch entries (batch innermost, as the CPU kernel packs them).
HaloRoutes haloRoutes(const RankFacts &facts, int64_t self, int64_t B, int64_t localRows,
                      int64_t slots, bool back);

/// Where each chunk's summaries lie in the all-gather of the state exchange:
/// every member contributes its states then its decays (localChunks chunks
/// of stateSize and decaySize values), members in communicator order.
/// stateAt[c] and decayAt[c] are offsets, in values, of global chunk c.
struct GatheredChunks {
  std::vector<int64_t> stateAt, decayAt;
  /// Empty, or why the facts do not cover every chunk exactly once.
  std::string error;
};

/// `commMembers`: the communicator's world ranks in its order; the facts'
/// members and memberPositions (chunk indices of each member's local chunks).
GatheredChunks gatheredChunks(const RankFacts &facts, const std::vector<int64_t> &commMembers,
                              int64_t chunks, int64_t localChunks, int64_t stateSize,
                              int64_t decaySize);

/// The lowered kinds (comm/nccl_plan.h) whose exchanges these routes give a
/// device: ring_attention, halo, scan_state_exchange and cross_entropy, and
/// their backward duals (ring_attention_grad, halo_add,
/// scan_state_exchange_grad, cross_entropy_grad), and dropless MoE forward and
/// backward (its routes: comm/moe_routes.h).
const std::vector<std::string> &kernelExchangeKinds();

/// The layout transitions, which lower to NCCL's collectives and point-to-point
/// calls without a kernel of their own (comm/nccl_plan.h).
const std::vector<std::string> &transitionKinds();

/// Every kind whose exchanges a device runs over NCCL: the transitions and
/// kernelExchangeKinds. A step of another kind that exchanges values is
/// refused at load (firstStepOutside).
const std::vector<std::string> &ncclDeviceKinds();

} // namespace shardline::rt

#endif
