//===- nccl_plan.cpp - a program's collectives as NCCL calls ---------------===//
//
// Each op kind that exchanges values is lowered here the way its CPU kernel
// calls the host collectives (kernels/cpu/*.cpp): the same group, the same
// values, the same byte count. A kernel that starts exchanging values adds
// its lowering here; the CPU test that equates these bytes with the measured
// ones (runtime/test/nccl_plan_test.cpp) fails until it does.
//
//===----------------------------------------------------------------------===//

#include "comm/nccl_plan.h"

#include "comm/moe_routes.h"
#include "comm/movement.h"
#include "comm/nccl_kernels.h"
#include "comm/transfer.h"

#include <algorithm>
#include <map>
#include <sstream>

namespace shardline::rt {

bool sumsInOrder(DType dtype) { return dtype == DType::BF16 || dtype == DType::F16; }

const char *ncclOpName(NcclOp op) {
  switch (op) {
  case NcclOp::AllGather:
    return "ncclAllGather";
  case NcclOp::ReduceScatter:
    return "ncclReduceScatter";
  case NcclOp::AllReduce:
    return "ncclAllReduce";
  case NcclOp::SendRecv:
    return "ncclSend/ncclRecv";
  }
  return "?";
}

namespace {

using Axes = std::vector<std::string>;

/// The split of the world into the groups of `axes` as Collectives::group
/// makes it: color the group's first member, key the place in its order.
NcclCommunicator splitOf(const Mesh &mesh, const Axes &axes, int64_t self) {
  int64_t ranks = mesh.numRanks();
  NcclCommunicator c;
  c.axes = axes;
  c.color.resize(ranks);
  c.key.resize(ranks);
  for (int64_t r = 0; r < ranks; ++r) {
    Ring ring = ringOf(mesh, r, axes);
    c.color[r] = ring.members.front();
    c.key[r] = ring.position;
  }
  c.members = ringOf(mesh, self, axes).members;
  return c;
}

} // namespace

int64_t findCommunicator(const NcclLowering &lowering, const Mesh &mesh, const Axes &axes) {
  NcclCommunicator c = splitOf(mesh, axes, 0);
  for (size_t i = 0; i < lowering.communicators.size(); ++i)
    if (lowering.communicators[i].color == c.color && lowering.communicators[i].key == c.key)
      return (int64_t)i;
  return -1;
}

std::string firstStepOutside(const NcclLowering &lowering, const std::vector<std::string> &kinds) {
  for (const NcclStep &st : lowering.steps) {
    if (std::find(kinds.begin(), kinds.end(), st.kind) != kinds.end())
      continue;
    const NcclCall &c = st.calls.front();
    return "op #" + std::to_string(st.step) + " (sl." + st.kind + ") exchanges values (" +
           ncclOpName(c.op) + " over " + formatAxes(lowering.communicators[c.communicator].axes) +
           ") inside its kernel, which does not run over NCCL yet";
  }
  return "";
}

namespace {

/// Lowers the steps of one rank, adding communicators as they are first used.
class Lowerer {
public:
  Lowerer(const Mesh &mesh, const std::vector<TensorInfo> &tensors, int64_t self, NcclLowering &out)
      : mesh(mesh), tensors(tensors), self(self), out(out) {}

  void lower(const Step &s) {
    NcclStep st;
    st.step = s.index;
    st.kind = s.kind;
    auto it = kinds().find(s.kind);
    if (it != kinds().end())
      (this->*(it->second))(s, st);
    if (st.calls.empty())
      return;
    for (const NcclCall &c : st.calls)
      st.bytesSent += c.bytesSent;
    out.bytesSent += st.bytesSent;
    out.steps.push_back(std::move(st));
  }

private:
  using Lower = void (Lowerer::*)(const Step &, NcclStep &);
  static const std::map<std::string, Lower> &kinds() {
    static const std::map<std::string, Lower> table = {
        {"all_gather", &Lowerer::transitionStep},
        {"all_to_all", &Lowerer::transitionStep},
        {"slice", &Lowerer::transitionStep},
        {"reorder", &Lowerer::transitionStep},
        {"relayout", &Lowerer::transitionStep},
        {"reduce_scatter", &Lowerer::transitionStep},
        {"all_reduce", &Lowerer::allReduceStep},
        {"ring_attention", &Lowerer::ringAttention},
        {"ring_attention_grad", &Lowerer::ringAttentionGrad},
        {"cross_entropy", &Lowerer::crossEntropy},
        {"cross_entropy_grad", &Lowerer::crossEntropy},
        {"scan_state_exchange", &Lowerer::stateExchange},
        {"scan_state_exchange_grad", &Lowerer::stateExchange},
        {"halo", &Lowerer::halo},
        {"halo_add", &Lowerer::halo},
        {"moe_dropless", &Lowerer::moeDropless},
        {"moe_dropless_grad", &Lowerer::moeDropless},
    };
    return table;
  }

  const TensorInfo &tensor(int32_t t) const { return tensors[t]; }

  /// The step's attribute `name` (by default "axes"): the group its kernel
  /// exchanges over.
  static const Axes &axesOf(const Step &s, const char *name = "axes") {
    static const Axes none;
    for (size_t i = 0; i < s.kernel->attrs.size(); ++i)
      if (std::string(s.kernel->attrs[i].name) == name)
        return s.attrs[i].strings;
    return none;
  }

  /// The communicator of the groups of `axes`, or -1 for groups of one.
  int64_t communicator(const Axes &axes) {
    auto known = byAxes.find(axes);
    if (known != byAxes.end())
      return known->second;
    NcclCommunicator c = splitOf(mesh, axes, self);
    int64_t index = -1;
    if (c.members.size() > 1) {
      index = findCommunicator(out, mesh, axes);
      if (index < 0) {
        index = (int64_t)out.communicators.size();
        out.communicators.push_back(std::move(c));
      }
    }
    return byAxes[axes] = index;
  }

  int64_t groupSize(int64_t c) const { return (int64_t)out.communicators[c].members.size(); }

  /// Every member contributes `count` values; this rank's are counted at
  /// `bytes` in all.
  void allGather(NcclStep &st, const Axes &axes, int64_t count, int64_t bytes) {
    int64_t c = communicator(axes);
    if (c < 0)
      return;
    st.calls.push_back({NcclOp::AllGather, c, count, {}, (groupSize(c) - 1) * bytes});
  }

  /// Send and receive counts by world rank; each value sent counted at
  /// `bytesPerValue`. A member with no peers still has the call, so that
  /// every member of a communicator makes the same calls in the same order.
  void sendRecv(NcclStep &st, int64_t c, const std::map<int64_t, NcclPeer> &peers,
                int64_t bytesPerValue) {
    if (c < 0)
      return;
    NcclCall call{NcclOp::SendRecv, c, 0, {}, 0};
    for (const auto &[rank, peer] : peers) {
      call.peers.push_back(peer);
      call.bytesSent += peer.sendCount * bytesPerValue;
    }
    st.calls.push_back(std::move(call));
  }

  static void add(std::map<int64_t, NcclPeer> &peers, int64_t rank, int64_t send, int64_t recv) {
    NcclPeer &p = peers[rank];
    p.rank = rank;
    p.sendCount += send;
    p.recvCount += recv;
  }

  /// A layout transition of a tensor of global `shape` whose values are
  /// `dtype`, as Collectives::transition runs it.
  void transition(NcclStep &st, const std::vector<int64_t> &shape, const Layout &from,
                  const Layout &to, DType dtype) {
    const int64_t bytesPerValue = dtypeSize(dtype);
    MoveShape m = planMoveShape(mesh, shape, from, to);
    if (!m.error.empty()) {
      fail(st, m.error);
      return;
    }
    if (m.kind == MovementKind::Identity || m.kind == MovementKind::Slice)
      return;
    int64_t c = communicator(m.axes);
    if (c < 0)
      return;
    int64_t g = groupSize(c);
    const std::vector<int64_t> &members = out.communicators[c].members;
    std::map<int64_t, NcclPeer> peers;
    switch (m.kind) {
    case MovementKind::AllGather:
      st.calls.push_back(
          {NcclOp::AllGather, c, m.inCount, {}, (g - 1) * m.inCount * bytesPerValue});
      return;
    case MovementKind::ReduceScatter:
      if (sumsInOrder(dtype)) {
        // Each member's piece to it, summed there in group order.
        for (int64_t r : members)
          if (r != self)
            add(peers, r, m.outCount, m.outCount);
        return sendRecv(st, c, peers, bytesPerValue);
      }
      st.calls.push_back(
          {NcclOp::ReduceScatter, c, m.outCount, {}, (g - 1) * m.outCount * bytesPerValue});
      return;
    case MovementKind::AllToAll:
      // NCCL has no all-to-all: an equal piece to and from every member.
      for (int64_t r : members)
        if (r != self)
          add(peers, r, m.inCount / g, m.inCount / g);
      return sendRecv(st, c, peers, bytesPerValue);
    default:
      break;
    }
    // A general transfer: what this rank reads from each member, and what
    // each member reads from it (Collectives::planMove).
    TransferPlan mine = planTransfer(mesh, shape, from, to, self);
    if (!mine.error.empty()) {
      fail(st, mine.error);
      return;
    }
    for (int64_t r : members) {
      if (r == self)
        continue;
      int64_t send = 0;
      if (mayRead(mesh, m, r, self))
        send = (int64_t)planTransfer(mesh, shape, from, to, r).reads[self].size();
      int64_t recv = (int64_t)mine.reads[r].size();
      if (send > 0 || recv > 0)
        add(peers, r, send, recv);
    }
    sendRecv(st, c, peers, bytesPerValue);
  }

  void transitionStep(const Step &s, NcclStep &st) {
    const TensorInfo &x = tensor(s.in[0]), &y = tensor(s.out[0]);
    transition(st, y.shape, x.layout, y.layout, x.dtype);
  }

  /// Collectives::allReduce: reduce-scatter then all-gather, which together
  /// are one ncclAllReduce of the whole part when both are plain on one
  /// group, the result keeps the operand's placement and the values are
  /// f32 (16-bit ones are summed in group order: the two halves).
  void allReduceStep(const Step &s, NcclStep &st) {
    const TensorInfo &x = tensor(s.in[0]), &y = tensor(s.out[0]);
    int64_t eb = x.elementBytes();
    Layout mid;
    if (x.layout.partial.empty() || !splitAllReduce(mesh, x.shape, x.layout, y.layout, mid))
      return transition(st, y.shape, x.layout, y.layout, x.dtype);
    MoveShape half = planMoveShape(mesh, x.shape, x.layout, mid),
              back = planMoveShape(mesh, x.shape, mid, y.layout);
    Layout kept = x.layout;
    kept.partial = y.layout.partial;
    if (!sumsInOrder(x.dtype) && half.kind == MovementKind::ReduceScatter &&
        back.kind == MovementKind::AllGather && half.axes == back.axes && kept == y.layout) {
      int64_t c = communicator(half.axes);
      if (c < 0)
        return;
      int64_t g = groupSize(c);
      st.calls.push_back(
          {NcclOp::AllReduce, c, half.inCount, {}, (g - 1) * (half.outCount + back.inCount) * eb});
      return;
    }
    transition(st, x.shape, x.layout, mid, x.dtype);
    transition(st, x.shape, mid, y.layout, x.dtype);
  }

  /// The K, V ring (comm/nccl_kernels.h, ringSteps): n - 1 grouped
  /// send/receives, each this rank's current K and V blocks to the previous
  /// member and the next member's from it; the CPU kernel all-gathers the
  /// same blocks, the same bytes.
  void ringAttention(const Step &s, NcclStep &st) {
    const TensorInfo &k = tensor(s.in[1]), &v = tensor(s.in[2]);
    int64_t c = communicator(axesOf(s));
    int64_t kv = k.count + v.count;
    for (const RingStep &r : ringSteps(s.facts)) {
      std::map<int64_t, NcclPeer> peers;
      add(peers, r.sendTo, kv, 0);
      add(peers, r.recvFrom, 0, kv);
      sendRecv(st, c, peers, k.elementBytes());
    }
  }

  /// Two passes around the ring and a last step home (ring_grad.cpp): the
  /// K, V blocks n - 1 times, then the blocks with their partial dK, dV
  /// n - 1 times, then the finished dK, dV once.
  void ringAttentionGrad(const Step &s, NcclStep &st) {
    const std::vector<int64_t> &members = s.facts.members;
    int64_t n = (int64_t)members.size();
    int64_t c = communicator(axesOf(s));
    if (n < 2 || c < 0)
      return;
    const TensorInfo &k = tensor(s.in[1]), &v = tensor(s.in[2]);
    int64_t kv = k.count + v.count, next = members[1], prev = members[n - 1];
    auto pass = [&](int64_t count) {
      std::map<int64_t, NcclPeer> peers;
      add(peers, next, count, 0);
      add(peers, prev, 0, count);
      sendRecv(st, c, peers, k.elementBytes());
    };
    for (int64_t i = 0; i + 1 < n; ++i)
      pass(kv);
    for (int64_t i = 0; i + 1 < n; ++i)
      pass(2 * kv);
    pass(kv);
  }

  /// Per token, the maxima, then the sums of exponentials (and, forward,
  /// the target logits) of every vocabulary shard, as f32.
  void crossEntropy(const Step &s, NcclStep &st) {
    const std::vector<int64_t> &l = tensor(s.in[0]).local;
    int64_t tokens = l[0] * l[1];
    int64_t second = s.kind == "cross_entropy" ? 2 * tokens : tokens;
    allGather(st, axesOf(s, "vocab_axes"), tokens, tokens * 4);
    allGather(st, axesOf(s, "vocab_axes"), second, second * 4);
  }

  /// Every member's chunk summaries (states or their gradients, and the
  /// decays), each tensor counted at its own element size.
  void stateExchange(const Step &s, NcclStep &st) {
    bool grad = s.kind == "scan_state_exchange_grad";
    const TensorInfo &gathered = tensor(s.in[grad ? 2 : 0]), &decays = tensor(s.in[grad ? 0 : 1]);
    allGather(st, axesOf(s), gathered.count + decays.count,
              gathered.count * gathered.elementBytes() + decays.count * decays.elementBytes());
  }

  /// The rows before each chunk from whoever holds them (halo), or back to
  /// them (halo_add), as comm/nccl_kernels.h routes them; a row is one
  /// token's channels of one batch entry.
  void halo(const Step &s, NcclStep &st) {
    bool back = s.kind == "halo_add";
    const TensorInfo &x = tensor(s.in[back ? 1 : 0]);
    int64_t C = x.local[2];
    HaloRoutes routes = haloRoutes(s.facts, self, x.local[0], x.local[1], 0, back);
    std::map<int64_t, NcclPeer> peers;
    for (const HaloPeer &p : routes.peers)
      add(peers, p.rank, (int64_t)p.sendRows.size() * C, (int64_t)p.recvRows.size() * C);
    sendRecv(st, communicator(axesOf(s)), peers, x.elementBytes());
  }

  /// Dropless MoE's exchange by count (comm/moe_routes.h), which depends on
  /// the routing: over the expert group the El counts to and from every
  /// other member, then the rows; over the expert-tensor group (etp > 1) the
  /// counts, then the gathered rows and the reduce-scatter. The rows' calls
  /// state the report's balanced routing (each member k·T/ep of this rank's
  /// rows, each row's values out and back); the step's bytes are those of
  /// droplessBalancedBytes.
  void moeDropless(const Step &s, NcclStep &st) {
    enum { kX, kWeights, kIndices, kGate };
    bool grad = s.kind == "moe_dropless_grad";
    const TensorInfo &x = tensor(s.in[kX]), &w = tensor(s.in[kWeights]);
    int64_t T = x.local[0] * x.local[1], H = x.local[2], k = tensor(s.in[kIndices]).local[2];
    int64_t El = tensor(s.in[kGate]).local[0], eb = x.elementBytes(), wb = w.elementBytes();
    // Values a row carries out and back.
    int64_t values = grad ? 3 * H + 2 : 2 * H;
    int64_t ce = communicator(axesOf(s, "expert_axes")),
            ct = communicator(axesOf(s, "tensor_axes"));
    int64_t ep = ce < 0 ? 1 : groupSize(ce), etp = ct < 0 ? 1 : groupSize(ct);
    auto exchange = [&](int64_t c, int64_t sendEach, int64_t recvEach, int64_t bytes) {
      std::map<int64_t, NcclPeer> peers;
      for (int64_t r : out.communicators[c].members)
        if (r != self)
          add(peers, r, sendEach, recvEach);
      sendRecv(st, c, peers, 0);
      st.calls.back().bytesSent = bytes;
    };
    int64_t rowBytes = droplessRowBytes(grad, T, k, H, eb, wb);
    if (ce >= 0) {
      exchange(ce, El, El, (ep - 1) * El * 4);
      exchange(ce, k * T / ep * values, k * T / ep * values, rowBytes * (ep - 1) / ep);
    }
    if (ct >= 0) {
      exchange(ct, El, El, (etp - 1) * El * 4);
      exchange(ct, k * T * values, k * T * values, rowBytes * (etp - 1));
    }
  }

  void fail(const NcclStep &st, const std::string &why) {
    if (out.error.empty())
      out.error = "op #" + std::to_string(st.step) + " (sl." + st.kind + "): " + why;
  }

  const Mesh &mesh;
  const std::vector<TensorInfo> &tensors;
  int64_t self;
  NcclLowering &out;
  std::map<Axes, int64_t> byAxes;
};

} // namespace

NcclLowering lowerToNccl(const std::vector<Step> &program, const Mesh &mesh,
                         const std::vector<TensorInfo> &tensors, int64_t rank) {
  NcclLowering out;
  Lowerer lowerer(mesh, tensors, rank, out);
  for (const Step &s : program) {
    lowerer.lower(s);
    if (!out.error.empty())
      return out;
  }
  out.overlaps = planGatherOverlaps(program, mesh, tensors, out, rank, &out.unpaired);
  out.scatters = planScatterOverlaps(program, mesh, tensors, out, rank, &out.unpairedScatters);
  return out;
}

std::string describe(const NcclLowering &lowering) {
  std::ostringstream os;
  for (size_t i = 0; i < lowering.communicators.size(); ++i) {
    const NcclCommunicator &c = lowering.communicators[i];
    os << "communicator " << i << ": " << formatAxes(c.axes) << ", this rank's group";
    for (size_t m = 0; m < c.members.size(); ++m)
      os << (m ? ", " : " ") << c.members[m];
    os << "\n";
  }
  for (const NcclStep &st : lowering.steps)
    for (const NcclCall &c : st.calls) {
      os << "op #" << st.step << " (sl." << st.kind << "): " << ncclOpName(c.op)
         << " on communicator " << c.communicator;
      if (c.op == NcclOp::SendRecv)
        for (const NcclPeer &p : c.peers)
          os << ", rank " << p.rank << " send " << p.sendCount << " recv " << p.recvCount;
      else
        os << ", " << c.count << " values";
      os << ", " << c.bytesSent << " bytes sent\n";
    }
  os << describe(lowering.overlaps, lowering.unpaired);
  os << describe(lowering.scatters, lowering.unpairedScatters);
  return os.str();
}

} // namespace shardline::rt
