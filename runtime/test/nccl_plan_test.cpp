//===- nccl_plan_test.cpp - the NCCL lowering against the CPU collectives --===//
//
// Plans of equivalence-matrix entries, compiled by shardline-compile
// ($SHARDLINE_COMPILE) forward and for training, lowered to NCCL calls for
// every rank (comm/nccl_plan.h) and run on CPU thread ranks: the lowering
// sends exactly the bytes the CPU collectives measure and the report states;
// every communicator's split gives each rank the members, in order, that
// the host collectives' group of the same axes has; and each entry lowers
// to the NCCL calls its strategy implies. Also the strided copies that pack
// and unpack a plain collective's pieces, on the host and on a GPU alike,
// and the gathers a device runs in pieces under the linears that read them
// (comm/gather_overlap.h): which pair, their schedule, and their ring and
// per-piece GEMMs run on the host.
//
//===----------------------------------------------------------------------===//

#include "comm/nccl_plan.h"

#include "comm/moe_routes.h"
#include "comm/movement.h"
#include "comm/nccl_kernels.h"
#include "comm/scatter_overlap.h"
#include "exec/collectives.h"
#include "exec/executor.h"
#include "kernels/cpu/kernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <numeric>
#include <thread>
#include <unistd.h>

using namespace shardline;
using namespace shardline::rt;

namespace {

const char *kSmall = R"("vocab": 64, "hidden": 32, "seq": 32, "batch": 4, "dtype": "f32")";
const char *kAttention = R"("attention": {"heads": 8, "kv_heads": 4, "head_dim": 4})";

std::string spec(const std::string &pattern, const std::string &sections) {
  return "{\"name\": \"t\", \"pattern\": \"" + pattern + "\", " + kSmall + ", " + sections + "}";
}

struct Entry {
  std::string name, spec;
  std::vector<std::string> flags;
  /// The NCCL calls the strategy needs on some rank, at least one each.
  std::vector<NcclOp> expected;
  /// The NCCL calls no rank makes.
  std::vector<NcclOp> absent = {};
  /// Lowered forward only (16-bit plans do not train).
  bool forwardOnly = false;
};

std::vector<Entry> entries() {
  std::string mlp = spec("FF", R"("mlp": {"ffn_hidden": 64})");
  // One sequence: the gathers' pieces lie contiguous and travel in place.
  std::string mlp1 = mlp;
  mlp1.replace(mlp1.find("\"batch\": 4"), 10, "\"batch\": 1");
  std::string attention = spec("AA", kAttention);
  std::string dense = spec("AF", std::string(kAttention) + R"(, "mlp": {"ffn_hidden": 64})");
  std::string moe = spec("EE", R"("moe": {"experts": 4, "top_k": 2, "ffn_hidden": 48})");
  std::string mamba =
      spec("MM", R"("mamba": {"heads": 8, "head_dim": 4, "state": 8, "groups": 4, "conv": 4})");
  std::string recurrent = spec("RR", R"("recurrent": {"width": 32, "conv": 4})");
  std::string local =
      spec("LL", R"("local_attention": {"heads": 8, "kv_heads": 4, "head_dim": 4, "window": 6})");
  // 16-bit sums cross as stored, summed in group order (sumsInOrder): a
  // reduce-scatter, and an all-reduce's first half, are grouped
  // send/receives.
  auto sixteen = [](std::string s, const char *dtype) {
    return s.replace(s.find("\"f32\""), 5, std::string("\"") + dtype + "\"");
  };
  using O = NcclOp;
  return {
      {"mlp tp2 sp", mlp, {"--tp", "2", "--sp"}, {O::AllGather, O::ReduceScatter}},
      {"mlp tp4", mlp, {"--tp", "4", "--sp=false"}, {O::AllReduce, O::AllGather}},
      // A ring of four for the gathers run in pieces (comm/gather_overlap.h),
      // and pieces that travel in place.
      {"mlp tp4 sp", mlp, {"--tp", "4", "--sp"}, {O::AllGather, O::ReduceScatter}},
      {"mlp tp2 sp batch 1", mlp1, {"--tp", "2", "--sp"}, {O::AllGather, O::ReduceScatter}},
      {"attention cp2 ring zigzag",
       attention,
       {"--cp", "2", "--cp-comm", "ring", "--cp-order", "zigzag"},
       {O::SendRecv}},
      {"attention cp4 ring zigzag",
       attention,
       {"--cp", "4", "--cp-comm", "ring", "--cp-order", "zigzag"},
       {O::SendRecv}},
      {"attention cp2 ring contiguous",
       attention,
       {"--cp", "2", "--cp-comm", "ring", "--cp-order", "contiguous"},
       {O::SendRecv}},
      {"attention cp4 ring contiguous",
       attention,
       {"--cp", "4", "--cp-comm", "ring", "--cp-order", "contiguous"},
       {O::SendRecv}},
      {"attention cp4 allgather contiguous",
       attention,
       {"--cp", "4", "--cp-comm", "allgather", "--cp-order", "contiguous"},
       {O::AllGather}},
      {"attention cp2 a2a", attention, {"--cp", "2", "--cp-comm", "a2a"}, {O::SendRecv}},
      {"dense dp2", dense, {"--dp", "2"}, {}},
      // The vocabulary-parallel loss: its maxima, then its sums and target
      // logits, gathered over tp.
      {"dense tp2", dense, {"--tp", "2", "--sp=false"}, {O::AllGather, O::AllReduce}},
      {"dense tp2 bf16",
       sixteen(dense, "bf16"),
       {"--tp", "2", "--sp=false"},
       {O::AllGather, O::SendRecv},
       {O::AllReduce, O::ReduceScatter},
       true},
      {"mlp tp4 sp f16",
       sixteen(mlp, "f16"),
       {"--tp", "4", "--sp"},
       {O::AllGather, O::SendRecv},
       {O::AllReduce, O::ReduceScatter},
       true},
      {"dense tp2 sp cp2 dp2",
       dense,
       {"--tp", "2", "--sp", "--cp", "2", "--dp", "2"},
       {O::AllGather, O::ReduceScatter, O::SendRecv}},
      // Capacity mode: its all-to-alls are layout transitions.
      {"moe dp2 ep2",
       moe,
       {"--dp", "2", "--ep", "2", "--moe-expert-capacity-factor", "1.0"},
       {O::SendRecv}},
      {"moe tp2 sp ep2",
       moe,
       {"--tp", "2", "--sp", "--ep", "2", "--moe-expert-capacity-factor", "1.0"},
       {O::SendRecv}},
      // Dropless: rows by count inside the kernel (comm/moe_routes.h),
      // over the expert group and, with etp, the expert-tensor group.
      {"moe dropless dp2 ep2", moe, {"--dp", "2", "--ep", "2"}, {O::SendRecv}},
      {"moe dropless cp2 dp2 ep2 etp2",
       moe,
       {"--cp", "2", "--dp", "2", "--ep", "2", "--etp", "2"},
       {O::SendRecv}},
      {"mamba cp2", mamba, {"--cp", "2"}, {O::AllGather, O::SendRecv}},
      {"mamba tp2 sp cp2", mamba, {"--tp", "2", "--sp", "--cp", "2"}, {O::AllGather}},
      {"recurrent cp4 contiguous",
       recurrent,
       {"--cp", "4", "--cp-order", "contiguous"},
       {O::AllGather, O::SendRecv}},
      {"recurrent cp2", recurrent, {"--cp", "2"}, {O::AllGather, O::SendRecv}},
      {"local attention cp2", local, {"--cp", "2"}, {O::SendRecv}},
      {"local attention cp4 contiguous",
       local,
       {"--cp", "4", "--cp-order", "contiguous"},
       {O::SendRecv}},
  };
}

std::string compilerPath() {
  const char *path = std::getenv("SHARDLINE_COMPILE");
  return path ? path : "";
}

/// The entry's plan, compiled into a temporary file and loaded; or nullopt
/// with the failure recorded.
std::optional<LoadedPlan> compile(const Entry &e, bool train) {
  char dir[] = "/tmp/nccl-plan-XXXXXX";
  if (!mkdtemp(dir)) {
    ADD_FAILURE() << "mkdtemp failed";
    return std::nullopt;
  }
  std::string base = dir, specFile = base + "/model.json", planFile = base + "/plan.slp";
  std::ofstream(specFile) << e.spec;
  std::string command = "'" + compilerPath() + "' " + specFile;
  for (const std::string &f : e.flags)
    command += " " + f;
  command += " --emit plan -o " + planFile + (train ? " --train" : "") + " 2>&1";
  int status = std::system(command.c_str());
  std::string error;
  std::optional<LoadedPlan> plan;
  if (status != 0)
    ADD_FAILURE() << e.name << ": " << command << " exited with " << status;
  else if (!(plan = loadPlanFile(planFile, error)))
    ADD_FAILURE() << e.name << ": " << error;
  std::remove(specFile.c_str());
  std::remove(planFile.c_str());
  rmdir(dir);
  return plan;
}

/// The plan's program resolved for every rank and lowered; `resolved`
/// receives each rank's steps with their rank facts.
std::vector<NcclLowering> lowerEveryRank(const LoadedPlan &plan,
                                         std::vector<std::vector<Step>> &resolved) {
  std::string error;
  std::optional<std::vector<Step>> program =
      decodeProgram(*plan.root(), cpuBackend().kernels, error);
  EXPECT_TRUE(program) << error;
  if (!program)
    return {};
  Mesh mesh = meshOf(*plan.root());
  std::vector<TensorInfo> tensors = tensorInfos(*plan.root(), mesh);
  std::vector<NcclLowering> out;
  for (int64_t r = 0; r < mesh.numRanks(); ++r) {
    std::vector<Step> steps = *program;
    std::vector<BufferView> views(tensors.size());
    Frame frame{mesh, r, tensors, views, nullptr};
    for (Step &s : steps)
      if (s.kernel->resolve)
        s.kernel->resolve(s, frame);
    out.push_back(lowerToNccl(steps, mesh, tensors, r));
    EXPECT_EQ(out.back().error, "");
    resolved.push_back(std::move(steps));
  }
  return out;
}

/// What the CPU executor counts: each step at its busiest rank.
int64_t busiestSum(const std::vector<NcclLowering> &ranks) {
  std::map<int64_t, int64_t> byStep;
  for (const NcclLowering &l : ranks)
    for (const NcclStep &s : l.steps)
      byStep[s.step] = std::max(byStep[s.step], s.bytesSent);
  int64_t total = 0;
  for (const auto &[step, bytes] : byStep)
    total += bytes;
  return total;
}

/// An entry's plan and its lowering on every rank.
struct Lowered {
  const Entry *entry;
  LoadedPlan plan;
  std::vector<NcclLowering> ranks;
  /// Each rank's steps, rank facts resolved.
  std::vector<std::vector<Step>> programs;
};

/// Every entry compiled and lowered once per test suite run, forward or for
/// training (an entry that fails to compile has failed the test already).
const std::vector<Lowered> &lowered(bool train) {
  static std::map<bool, std::vector<Lowered>> cache;
  auto it = cache.find(train);
  if (it != cache.end())
    return it->second;
  static const std::vector<Entry> all = entries();
  std::vector<Lowered> out;
  for (const Entry &e : all) {
    if (train && e.forwardOnly)
      continue;
    if (std::optional<LoadedPlan> plan = compile(e, train)) {
      std::vector<std::vector<Step>> programs;
      std::vector<NcclLowering> ranks = lowerEveryRank(*plan, programs);
      out.push_back({&e, *plan, std::move(ranks), std::move(programs)});
    }
  }
  return cache[train] = std::move(out);
}

class NcclPlanTest : public ::testing::TestWithParam<bool> {
protected:
  void SetUp() override {
    if (compilerPath().empty())
      GTEST_SKIP() << "SHARDLINE_COMPILE is not set";
  }
  std::string trace(const Lowered &l) const {
    return l.entry->name + (GetParam() ? " (training)" : " (forward)");
  }
};

/// The bytes of the lowering, the CPU run's measure and the report agree.
TEST_P(NcclPlanTest, SendsWhatTheCpuCollectivesMeasure) {
  for (const Lowered &l : lowered(GetParam())) {
    SCOPED_TRACE(trace(l));
    const LoadedPlan *plan = &l.plan;
    const std::vector<NcclLowering> &ranks = l.ranks;
    RunResult run = runPlan(*plan, RunOptions{});
    ASSERT_EQ(run.error, "");
    // Dropless MoE's steps are lowered at balanced routing, the report's
    // figure; the run measures them at its routing's counts.
    int64_t sent = busiestSum(ranks);
    EXPECT_EQ(sent - run.variableBytesBalanced + run.variableBytesMeasured, run.bytesSentPerRank)
        << describe(ranks[0]);
    EXPECT_EQ(sent, plan->root()->comm_bytes_per_rank());
    // The strategy's own collectives are there.
    std::map<NcclOp, int64_t> calls;
    for (const NcclLowering &r : ranks)
      for (const NcclStep &s : r.steps)
        for (const NcclCall &c : s.calls)
          ++calls[c.op];
    for (NcclOp op : l.entry->expected)
      EXPECT_GT(calls[op], 0) << ncclOpName(op) << " missing\n" << describe(ranks[0]);
    for (NcclOp op : l.entry->absent)
      EXPECT_EQ(calls[op], 0) << ncclOpName(op) << " made\n" << describe(ranks[0]);
    // Training over dp sums every gradient over the replicas.
    if (GetParam() && l.entry->name == "dense dp2")
      EXPECT_GT(calls[NcclOp::AllReduce], 0) << describe(ranks[0]);
    // Every rank lowers the same steps onto the same splits (SPMD).
    for (const NcclLowering &r : ranks) {
      ASSERT_EQ(r.communicators.size(), ranks[0].communicators.size());
      for (size_t c = 0; c < r.communicators.size(); ++c) {
        EXPECT_EQ(r.communicators[c].color, ranks[0].communicators[c].color);
        EXPECT_EQ(r.communicators[c].key, ranks[0].communicators[c].key);
      }
    }
  }
}

/// Each communicator, split on thread ranks with its color and key, gives
/// every rank the group the host collectives use for the same axes, and the
/// lowering's members; a send/receive peer is always in that group.
TEST_P(NcclPlanTest, SplitsAsTheHostCollectivesDo) {
  for (const Lowered &l : lowered(GetParam())) {
    SCOPED_TRACE(trace(l));
    const LoadedPlan *plan = &l.plan;
    const std::vector<NcclLowering> &ranks = l.ranks;
    int64_t n = (int64_t)ranks.size();
    ASSERT_GT(n, 1);
    Mesh mesh = meshOf(*plan->root());
    ThreadHub hub(n);
    // Results by rank, checked on this thread once all have run.
    std::vector<std::vector<std::vector<int64_t>>> split(n), host(n);
    std::vector<std::thread> threads;
    for (int64_t r = 0; r < n; ++r)
      threads.emplace_back([&, r] {
        ThreadComm comm(hub, r);
        Collectives collectives(comm, mesh);
        for (const NcclCommunicator &c : ranks[r].communicators) {
          std::unique_ptr<Group> group;
          if (!comm.split(c.color[r], c.key[r], group) || !group)
            return;
          split[r].push_back(group->members());
          host[r].push_back(collectives.group(c.axes).members());
        }
      });
    for (auto &t : threads)
      t.join();
    ASSERT_EQ(hub.error(), "");
    for (int64_t r = 0; r < n; ++r) {
      const std::vector<NcclCommunicator> &comms = ranks[r].communicators;
      ASSERT_EQ(split[r].size(), comms.size());
      for (size_t c = 0; c < comms.size(); ++c) {
        EXPECT_EQ(split[r][c], comms[c].members) << "rank " << r << ", communicator " << c;
        EXPECT_EQ(host[r][c], comms[c].members) << "rank " << r << ", communicator " << c;
      }
      for (const NcclStep &s : ranks[r].steps)
        for (const NcclCall &c : s.calls)
          for (const NcclPeer &p : c.peers) {
            const std::vector<int64_t> &members = comms[c.communicator].members;
            EXPECT_NE(std::find(members.begin(), members.end(), p.rank), members.end())
                << "op #" << s.step << ": peer " << p.rank << " outside its communicator";
            EXPECT_NE(p.rank, r);
          }
    }
    // What one rank sends a peer, the peer receives from it, call by call.
    for (int64_t r = 0; r < n; ++r)
      for (size_t i = 0; i < ranks[r].steps.size(); ++i)
        for (size_t k = 0; k < ranks[r].steps[i].calls.size(); ++k)
          for (const NcclPeer &p : ranks[r].steps[i].calls[k].peers) {
            const NcclLowering &other = ranks[p.rank];
            int64_t step = ranks[r].steps[i].step, received = 0;
            for (const NcclStep &s : other.steps)
              if (s.step == step && k < s.calls.size())
                for (const NcclPeer &q : s.calls[k].peers)
                  if (q.rank == r)
                    received = q.recvCount;
            EXPECT_EQ(p.sendCount, received)
                << "op #" << step << " call " << k << ": rank " << r << " to " << p.rank;
          }
  }
}

/// One step of an entry's program on every rank (the ranks have the same
/// steps, each with its own rank facts), with the entry's mesh and tensors.
struct StepOnRanks {
  const Mesh &mesh;
  const std::vector<TensorInfo> &tensors;
  std::vector<const Step *> byRank;
  /// The entry's lowering on every rank.
  const std::vector<NcclLowering> &lowerings;
};

/// Calls `check` for every step of `kind` of every entry, forward or for
/// training; returns how many there were.
int64_t forEachStep(bool train, const std::string &kind,
                    const std::function<void(const StepOnRanks &)> &check) {
  int64_t count = 0;
  for (const Lowered &l : lowered(train)) {
    SCOPED_TRACE(l.entry->name + (train ? " (training)" : " (forward)"));
    Mesh mesh = meshOf(*l.plan.root());
    std::vector<TensorInfo> tensors = tensorInfos(*l.plan.root(), mesh);
    for (size_t i = 0; i < l.programs[0].size(); ++i) {
      if (l.programs[0][i].kind != kind)
        continue;
      std::vector<const Step *> byRank;
      for (const std::vector<Step> &program : l.programs)
        byRank.push_back(&program[i]);
      ++count;
      check({mesh, tensors, byRank, l.ranks});
    }
  }
  return count;
}

/// The general transfers a device runs as runs of elements (the CUDA
/// backend's copy_runs around one grouped send/receive): for every layout
/// transition that is a General move and sums nothing, on every rank, the
/// runs pack for and receive from each member of the communicator exactly
/// the elements the lowered call's peers state (the report's bytes);
/// transfer_test.cpp checks that the runs place the right values.
TEST_P(NcclPlanTest, GeneralTransfersRunAsTheLoweringsSendReceives) {
  int64_t general = 0;
  for (const char *kind : {"all_gather", "all_to_all", "reorder", "relayout", "reduce_scatter"})
    forEachStep(GetParam(), kind, [&](const StepOnRanks &st) {
      for (size_t r = 0; r < st.byRank.size(); ++r) {
        const Step &step = *st.byRank[r];
        const TensorInfo &x = st.tensors[step.in[0]], &y = st.tensors[step.out[0]];
        MoveShape move = planMoveShape(st.mesh, y.shape, x.layout, y.layout);
        if (move.kind != MovementKind::General)
          continue;
        std::vector<int64_t> members = st.mesh.group((int64_t)r, move.axes);
        TransferRuns runs =
            planTransferRuns(st.mesh, y.shape, x.layout, y.layout, (int64_t)r, members);
        ASSERT_EQ(runs.error, "");
        if (runs.sums)
          continue;
        ++general;
        std::map<int64_t, std::pair<int64_t, int64_t>> fromRuns, lowered;
        for (size_t j = 0; j < members.size(); ++j)
          if (runs.sendCounts[j] > 0 || runs.recvCounts[j] > 0)
            fromRuns[members[j]] = {runs.sendCounts[j], runs.recvCounts[j]};
        for (const NcclStep &ls : st.lowerings[r].steps)
          if (ls.step == step.index)
            for (const NcclCall &c : ls.calls)
              for (const NcclPeer &p : c.peers)
                lowered[p.rank] = {p.sendCount, p.recvCount};
        EXPECT_EQ(fromRuns, lowered)
            << "op #" << step.index << " (sl." << step.kind << "), rank " << r;
        int64_t placed = 0;
        for (const ElementRun &run : runs.place)
          placed += run.count;
        EXPECT_EQ(placed, y.count) << "op #" << step.index << ", rank " << r;
      }
    });
  if (!GetParam())
    EXPECT_GT(general, 0);
}

/// Ring attention's K, V ring, run on the host from every rank's routes:
/// each step's send meets its peer's receive, and step i brings each rank
/// the block of its i-th member, the order the CPU kernel merges in; every
/// rank ends having seen every member's block once.
TEST_P(NcclPlanTest, RingStepsBringEveryBlockInMergeOrder) {
  int64_t rings = forEachStep(GetParam(), "ring_attention", [](const StepOnRanks &st) {
    int64_t n = (int64_t)st.byRank.size();
    std::vector<std::vector<RingStep>> routes(n);
    for (int64_t r = 0; r < n; ++r)
      routes[r] = ringSteps(st.byRank[r]->facts);
    std::vector<int64_t> held(n);
    for (int64_t r = 0; r < n; ++r)
      held[r] = r;
    for (size_t i = 0; i < routes[0].size(); ++i) {
      std::vector<int64_t> next(n);
      for (int64_t r = 0; r < n; ++r) {
        ASSERT_EQ(routes[r].size(), routes[0].size());
        const RingStep &mine = routes[r][i];
        EXPECT_EQ(routes[mine.recvFrom][i].sendTo, r) << "step " << i << ", rank " << r;
        next[r] = held[mine.recvFrom];
        EXPECT_EQ(next[r], st.byRank[r]->facts.members[mine.block]);
        EXPECT_EQ(mine.block, (int64_t)i + 1);
      }
      held = next;
    }
    EXPECT_EQ(routes[0].size() + 1, st.byRank[0]->facts.members.size());
  });
  if (!GetParam())
    EXPECT_GT(rings, 0);
}

/// Every halo run on the host from every rank's routes, x's values coding
/// (batch entry, global position): each send meets its peer's receive row
/// for row, and each slot of each chunk's halo ends holding the token
/// `width - j` before the chunk, the slots before position 0 nothing; the
/// routes of halo_add are the same rows the other way.
TEST_P(NcclPlanTest, HaloRoutesFillEverySlotWithTheTokenBeforeItsChunk) {
  int64_t halos = forEachStep(GetParam(), "halo", [](const StepOnRanks &st) {
    int64_t n = (int64_t)st.byRank.size();
    const Step &s0 = *st.byRank[0];
    const TensorInfo &x = st.tensors[s0.in[0]];
    int64_t width = s0.attrs[1].i, B = x.local[0], rows = x.local[1];
    int64_t chunks = chunksPerRank(x.layout, 1), S = rows / chunks, slots = chunks * width;
    std::vector<std::vector<int64_t>> owned(n);
    std::vector<HaloRoutes> routes(n);
    for (int64_t r = 0; r < n; ++r) {
      owned[r] = ownedIndices(x.layout, st.mesh, x.shape, 1, r);
      routes[r] = haloRoutes(st.byRank[r]->facts, r, B, rows, slots, false);
    }
    auto code = [&](int64_t bi, int64_t pos) { return (double)(bi * 100000 + pos * 100); };
    for (int64_t q = 0; q < n; ++q) {
      std::vector<double> halo(B * slots, -1.0);
      for (size_t i = 0; i < routes[q].selfFrom.size(); ++i) {
        int64_t row = routes[q].selfFrom[i];
        halo[routes[q].selfTo[i]] = code(row / rows, owned[q][row % rows]);
      }
      for (const HaloPeer &p : routes[q].peers) {
        const HaloPeer *back = nullptr;
        for (const HaloPeer &o : routes[p.rank].peers)
          if (o.rank == q)
            back = &o;
        ASSERT_NE(back, nullptr) << "rank " << p.rank << " has no route to " << q;
        ASSERT_EQ(back->sendRows.size(), p.recvRows.size());
        for (size_t i = 0; i < p.recvRows.size(); ++i) {
          int64_t row = back->sendRows[i];
          halo[p.recvRows[i]] = code(row / rows, owned[p.rank][row % rows]);
        }
      }
      for (int64_t bi = 0; bi < B; ++bi)
        for (int64_t c = 0; c < chunks; ++c)
          for (int64_t j = 0; j < width; ++j) {
            int64_t pos = owned[q][c * S] - width + j;
            EXPECT_EQ(halo[bi * slots + c * width + j], pos < 0 ? -1.0 : code(bi, pos))
                << "rank " << q << ", batch " << bi << ", chunk " << c << ", slot " << j;
          }
    }
    for (int64_t r = 0; r < n; ++r) {
      HaloRoutes back = haloRoutes(st.byRank[r]->facts, r, B, rows, slots, true);
      ASSERT_EQ(back.peers.size(), routes[r].peers.size());
      for (size_t i = 0; i < back.peers.size(); ++i) {
        EXPECT_EQ(back.peers[i].sendRows, routes[r].peers[i].recvRows);
        EXPECT_EQ(back.peers[i].recvRows, routes[r].peers[i].sendRows);
      }
      EXPECT_EQ(back.selfFrom, routes[r].selfTo);
    }
  });
  if (!GetParam())
    EXPECT_GT(halos, 0);
}

/// The router whose indices `t` holds: the router_topk step of program
/// `steps` that writes it, through the layout transitions between, as its
/// place among the routers (the order RunOptions::routing records them in).
int64_t routerOf(const std::vector<Step> &steps, int32_t t) {
  for (size_t i = steps.size(); i-- > 0;) {
    const Step &s = steps[i];
    if (std::find(s.out.begin(), s.out.end(), t) == s.out.end())
      continue;
    if (s.kind != "router_topk")
      return routerOf(std::vector<Step>(steps.begin(), steps.begin() + i), s.in[0]);
    int64_t before = 0;
    for (size_t j = 0; j < i; ++j)
      before += steps[j].kind == "router_topk";
    return before;
  }
  return -1;
}

/// The rows of every rank's exchange run on the host (DroplessRoutes and
/// TensorRoutes of every rank; `counts[r]` rank r's rows per expert, El
/// experts a member, R routed rows a rank): see the test below.
void checkDroplessRuns(const std::vector<DroplessRoutes> &ex, const std::vector<TensorRoutes> &tgs,
                       const std::vector<std::vector<int32_t>> &counts, int64_t El, int64_t R) {
  int64_t n = (int64_t)ex.size();
  auto code = [](int64_t rank, int64_t row) { return (double)(rank * 1000000 + row); };
  std::vector<std::vector<double>> grouped(n), back(n, std::vector<double>(R, -1.0));
  for (int64_t r = 0; r < n; ++r) {
    const DroplessRoutes &e = ex[r];
    grouped[r].assign(e.total(), -1.0);
    for (int64_t m = 0; m < e.ep(); ++m) {
      int64_t q = e.members[m];
      // What member q sends this rank is what this rank expects from it.
      ASSERT_EQ(ex[q].rowsTo[e.me], e.rowsFrom(m)) << "rank " << q << " to " << r;
      for (const RowRun &run : e.runsOf(m))
        for (int64_t i = 0; i < run.rows; ++i)
          grouped[r][run.to + i] = code(q, ex[q].firstRow[e.me] + run.from + i);
    }
    // The CPU kernel's grouping: by local expert, then by sender, each
    // sender's rows of the expert in its sorted order.
    int64_t next = 0;
    for (int64_t l = 0; l < El; ++l)
      for (int64_t q : e.members) {
        int64_t expert = e.me * El + l, start = 0;
        for (int64_t x = 0; x < expert; ++x)
          start += counts[q][x];
        for (int64_t i = 0; i < counts[q][expert]; ++i)
          ASSERT_EQ(grouped[r][next++], code(q, start + i))
              << "rank " << r << ", expert " << expert << ", from " << q;
      }
    ASSERT_EQ(next, e.total());
    // The rows received lie one member after another, in member order.
    int64_t at = 0;
    for (int64_t m = 0; m < e.ep(); ++m)
      if (m != e.me) {
        EXPECT_EQ(e.arrival(m), at) << "rank " << r << ", member " << m;
        at += e.rowsFrom(m);
      }
    EXPECT_EQ(at, e.rowsIn());
    // The return, each run reversed into the sender's sorted rows.
    for (int64_t m = 0; m < e.ep(); ++m) {
      int64_t q = e.members[m];
      for (const RowRun &run : e.runsOf(m))
        for (int64_t i = 0; i < run.rows; ++i)
          back[q][ex[q].firstRow[e.me] + run.from + i] = grouped[r][run.to + i];
    }
  }
  for (int64_t q = 0; q < n; ++q)
    for (int64_t row = 0; row < R; ++row)
      ASSERT_EQ(back[q][row], code(q, row)) << "rank " << q << ", row " << row;
  // etp: the gather by local expert, then by member, and each member's part
  // packed back out of it.
  for (int64_t r = 0; r < n; ++r) {
    const TensorRoutes &tg = tgs[r];
    if (tg.etp() < 2)
      continue;
    std::vector<double> gathered(std::accumulate(tg.total.begin(), tg.total.end(), int64_t{0}),
                                 -1.0);
    for (int64_t t = 0; t < tg.etp(); ++t)
      for (const RowRun &run : tg.runsOf(t))
        for (int64_t i = 0; i < run.rows; ++i)
          gathered[run.to + i] = grouped[tg.members[t]][run.from + i];
    int64_t at = 0;
    for (int64_t t = 0; t < tg.etp(); ++t)
      if (t != tg.me) {
        EXPECT_EQ(tg.arrival(t), at) << "rank " << r << ", member " << t;
        at += tg.rowsOf(t);
      }
    int64_t next = 0;
    for (int64_t l = 0; l < El; ++l)
      for (int64_t t = 0; t < tg.etp(); ++t) {
        const std::vector<double> &theirs = grouped[tg.members[t]];
        int64_t start = 0;
        for (int64_t x = 0; x < l; ++x)
          start += tg.rows[t][x];
        for (int64_t i = 0; i < tg.rows[t][l]; ++i)
          ASSERT_EQ(gathered[next++], theirs[start + i]) << "rank " << r << ", member " << t;
      }
    for (int64_t t = 0; t < tg.etp(); ++t) {
      std::vector<double> packed(tg.rowsOf(t), -1.0);
      for (const RowRun &run : tg.runsOf(t))
        for (int64_t i = 0; i < run.rows; ++i)
          packed[run.from + i] = gathered[run.to + i];
      ASSERT_EQ(packed, grouped[tg.members[t]]) << "rank " << r << ", member " << t;
    }
  }
}

/// Dropless MoE's routes (comm/moe_routes.h), worked out for every rank from
/// the counts of the routing the CPU run recorded, send exactly the bytes
/// the CPU kernel measured, step by step at the busiest rank; their balanced
/// figure is the lowering's, which the report states. Run on the host with
/// rows coding (rank, sorted row), their transfers and row runs (as the CUDA
/// backend runs them) group every rank's received rows by local expert and
/// then by sender, as the CPU kernel does, bring every row back to its place
/// in its rank's sorted rows, and with etp gather the members' rows by local
/// expert and then by member and pack each member's own rows back.
TEST_P(NcclPlanTest, DroplessRoutesMoveEveryRowAndSendWhatTheCpuKernelMeasures) {
  int64_t steps = 0, etpSteps = 0;
  for (const Lowered &l : lowered(GetParam())) {
    SCOPED_TRACE(trace(l));
    Routing routing;
    RunOptions options;
    options.routing = &routing;
    options.routingUse = RoutingUse::Record;
    RunResult run = runPlan(l.plan, options);
    ASSERT_EQ(run.error, "");
    ASSERT_TRUE(run.variableBytesExact) << run.variableBytesMismatch;
    Mesh mesh = meshOf(*l.plan.root());
    std::vector<TensorInfo> tensors = tensorInfos(*l.plan.root(), mesh);
    int64_t n = mesh.numRanks(), measured = 0;
    for (size_t i = 0; i < l.programs[0].size(); ++i) {
      const Step &s0 = l.programs[0][i];
      bool grad = s0.kind == "moe_dropless_grad";
      if (s0.kind != "moe_dropless" && !grad)
        continue;
      ++steps;
      int64_t router = routerOf(l.programs[0], s0.in[2]);
      ASSERT_GE(router, 0);
      ASSERT_EQ(routing.choices.size(), 1u);
      const std::vector<int32_t> &global = routing.choices[0][router];
      const TensorInfo &x = tensors[s0.in[0]], &idx = tensors[s0.in[2]], &gate = tensors[s0.in[3]];
      int64_t E = gate.shape[0], El = gate.local[0], k = idx.shape[2];
      std::vector<std::string> expertAxes = s0.attrs[0].strings, tensorAxes;
      if (s0.attrs.size() > 1 && s0.attrs[1].present)
        tensorAxes = s0.attrs[1].strings;
      etpSteps += mesh.product(tensorAxes) > 1;
      // Every rank's counts per expert, from its part of the routing.
      std::vector<std::vector<int32_t>> counts(n, std::vector<int32_t>(E, 0));
      for (int64_t r = 0; r < n; ++r) {
        std::vector<int64_t> b = ownedIndices(idx.layout, mesh, idx.shape, 0, r),
                             q = ownedIndices(idx.layout, mesh, idx.shape, 1, r);
        for (int64_t bi : b)
          for (int64_t si : q)
            for (int64_t j = 0; j < k; ++j)
              ++counts[r][global[(bi * idx.shape[1] + si) * k + j]];
      }
      auto place = [&](const std::vector<int64_t> &members, int64_t r) {
        return (int64_t)(std::find(members.begin(), members.end(), r) - members.begin());
      };
      auto groupOf = [&](const std::vector<std::string> &axes, int64_t r) {
        return axes.empty() ? std::vector<int64_t>{r} : mesh.group(r, axes);
      };
      std::vector<DroplessRoutes> ex(n);
      for (int64_t r = 0; r < n; ++r) {
        std::vector<int64_t> members = groupOf(expertAxes, r);
        int64_t me = place(members, r);
        std::vector<std::vector<int32_t>> received(members.size());
        for (size_t m = 0; m < members.size(); ++m)
          received[m].assign(counts[members[m]].begin() + me * El,
                             counts[members[m]].begin() + (me + 1) * El);
        ex[r] = droplessRoutes(members, me, counts[r], received);
        int64_t sent = 0;
        for (int64_t m = 0; m < ex[r].ep(); ++m)
          sent += ex[r].rowsTo[m];
        EXPECT_EQ(sent, x.local[0] * x.local[1] * k) << "rank " << r;
      }
      int64_t busiest = 0;
      std::vector<TensorRoutes> tgs(n);
      for (int64_t r = 0; r < n; ++r) {
        std::vector<int64_t> members = groupOf(tensorAxes, r);
        std::vector<std::vector<int32_t>> rows;
        for (int64_t t : members)
          rows.emplace_back(ex[t].local.begin(), ex[t].local.end());
        TensorRoutes &tg = tgs[r] = tensorRoutes(members, place(members, r), rows);
        DroplessBytes bytes = droplessBytes(ex[r], tg, grad, x.local[0] * x.local[1], k, x.local[2],
                                            x.elementBytes(), tensors[s0.in[1]].elementBytes());
        busiest = std::max(busiest, bytes.implied);
        // The CUDA backend's row buffers, sized from these counts, hold
        // every row each exchange places (comm/moe_routes.h, DroplessRows).
        DroplessRows held = droplessRows(tg);
        EXPECT_EQ(held.own, ex[r].total()) << "rank " << r;
        for (int64_t m = 0; m < ex[r].ep(); ++m) {
          if (m != ex[r].me)
            EXPECT_LE(ex[r].arrival(m) + ex[r].rowsFrom(m), held.own) << "rank " << r;
          for (const RowRun &run : ex[r].runsOf(m))
            EXPECT_LE(run.to + run.rows, held.own) << "rank " << r << ", member " << m;
        }
        int64_t packed = 0;
        for (int64_t t = 0; t < tg.etp(); ++t) {
          if (t != tg.me)
            EXPECT_LE(tg.arrival(t) + tg.rowsOf(t), held.computed) << "rank " << r;
          for (const RowRun &run : tg.runsOf(t))
            EXPECT_LE(run.to + run.rows, held.computed) << "rank " << r << ", member " << t;
          packed += tg.rowsOf(t);
        }
        EXPECT_EQ(packed, held.computed) << "rank " << r;
        EXPECT_GE(held.raw, packed + tg.etp() * held.own) << "rank " << r;
        for (const NcclStep &st : l.ranks[r].steps)
          if (st.step == s0.index)
            EXPECT_EQ(st.bytesSent, bytes.balanced) << "rank " << r << ", op #" << st.step;
      }
      measured += busiest;
      checkDroplessRuns(ex, tgs, counts, El, x.local[0] * x.local[1] * k);
    }
    EXPECT_EQ(measured, run.variableBytesMeasured);
  }
  EXPECT_GT(steps, 0);
  EXPECT_GT(etpSteps, 0);
}

/// The state exchange's all-gather, run on the host from every rank's
/// summaries (values coding chunk and entry), puts every chunk's states
/// and decays where gatheredChunks says, members in the order of the
/// exchange's communicator.
TEST_P(NcclPlanTest, GatheredChunksLocateEveryChunksSummaries) {
  int64_t exchanges = forEachStep(GetParam(), "scan_state_exchange", [](const StepOnRanks &st) {
    const Step &s0 = *st.byRank[0];
    const TensorInfo &states = st.tensors[s0.in[0]], &decays = st.tensors[s0.in[1]];
    int64_t chunks = states.shape[0], local = states.local[0];
    int64_t stateSize = states.count / local, decaySize = decays.count / local;
    for (int64_t r = 0; r < (int64_t)st.byRank.size(); ++r) {
      std::vector<int64_t> comm = ringOf(st.mesh, r, s0.attrs[0].strings).members;
      std::vector<double> gathered;
      for (int64_t m : comm) {
        std::vector<int64_t> mine = ownedIndices(states.layout, st.mesh, states.shape, 0, m);
        for (int64_t c : mine)
          for (int64_t e = 0; e < stateSize; ++e)
            gathered.push_back((double)(c * 10000 + e));
        for (int64_t c : mine)
          for (int64_t e = 0; e < decaySize; ++e)
            gathered.push_back((double)(c * 10000 + 5000 + e));
      }
      GatheredChunks at =
          gatheredChunks(st.byRank[r]->facts, comm, chunks, local, stateSize, decaySize);
      ASSERT_EQ(at.error, "") << "rank " << r;
      for (int64_t c = 0; c < chunks; ++c) {
        EXPECT_EQ(gathered[at.stateAt[c] + stateSize - 1], (double)(c * 10000 + stateSize - 1));
        EXPECT_EQ(gathered[at.decayAt[c]], (double)(c * 10000 + 5000));
      }
    }
  });
  if (!GetParam())
    EXPECT_GT(exchanges, 0);
}

INSTANTIATE_TEST_SUITE_P(Plans, NcclPlanTest, ::testing::Bool(),
                         [](const auto &info) { return info.param ? "Training" : "Forward"; });

} // namespace

namespace {

/// The CUDA backend runs the transitions over NCCL; a step that exchanges
/// values inside its kernel is named, with its call and group, before
/// anything runs; a split no step uses has no communicator.
TEST(NcclPlan, NamesTheFirstStepOutsideTheKindsADeviceRuns) {
  if (compilerPath().empty())
    GTEST_SKIP() << "SHARDLINE_COMPILE is not set";
  const std::vector<std::string> &transitions = transitionKinds();
  for (const Lowered &l : lowered(false)) {
    SCOPED_TRACE(l.entry->name);
    std::string why = firstStepOutside(l.ranks[0], transitions);
    if (l.entry->name == "dense dp2" || l.entry->name == "moe dp2 ep2" ||
        l.entry->name == "attention cp4 allgather contiguous" ||
        l.entry->name == "attention cp2 a2a") {
      // dp splits no vocabulary and no sequence, and attention over
      // all-gathered or all-to-all'd K, V computes on whole blocks: every
      // exchange is a transition.
      EXPECT_EQ(why, "");
      continue;
    }
    if (l.entry->name == "mlp tp2 sp")
      EXPECT_TRUE(why.find("(sl.cross_entropy) exchanges values (ncclAllGather over [tp]) inside "
                           "its kernel, which does not run over NCCL yet") != std::string::npos)
          << why;
    else
      EXPECT_NE(why, "");
  }
  const NcclLowering &tp = lowered(false)[0].ranks[0];
  EXPECT_EQ(findCommunicator(tp, meshOf(*lowered(false)[0].plan.root()), {"tp"}), 0);
  EXPECT_EQ(findCommunicator(tp, meshOf(*lowered(false)[0].plan.root()), {"dp"}), -1);
}

/// With the kernels' own exchanges and their backward duals
/// (comm/nccl_kernels.h) a device runs every entry over NCCL, forward and
/// for training: every step that exchanges values lowers to calls of a kind
/// the CUDA backend runs. Without the duals, training is refused at the
/// first of them (ring_attention_grad, halo_add, scan_state_exchange_grad,
/// cross_entropy_grad), by name, where a plan holds one.
TEST(NcclPlan, KernelExchangesCoverEveryEntry) {
  if (compilerPath().empty())
    GTEST_SKIP() << "SHARDLINE_COMPILE is not set";
  const std::vector<std::string> &kinds = ncclDeviceKinds();
  for (bool train : {false, true})
    for (const Lowered &l : lowered(train)) {
      SCOPED_TRACE(l.entry->name + (train ? " (training)" : " (forward)"));
      for (const NcclLowering &r : l.ranks)
        EXPECT_EQ(firstStepOutside(r, kinds), "");
    }
  const std::vector<std::string> duals = {"ring_attention_grad", "halo_add",
                                          "scan_state_exchange_grad", "cross_entropy_grad"};
  std::vector<std::string> forwardOnly;
  for (const std::string &kind : kinds)
    if (std::find(duals.begin(), duals.end(), kind) == duals.end())
      forwardOnly.push_back(kind);
  EXPECT_EQ(forwardOnly.size() + duals.size(), kinds.size());
  std::map<std::string, int64_t> refusedAt;
  for (const Lowered &l : lowered(true)) {
    SCOPED_TRACE(l.entry->name + " (training)");
    std::string why = firstStepOutside(l.ranks[0], forwardOnly);
    for (const std::string &dual : duals)
      if (why.find("(sl." + dual + ") exchanges values (") != std::string::npos)
        ++refusedAt[dual];
  }
  // Each dual is the first refusal of some entry: the vocabulary-parallel
  // loss (tp), the ring (cp), the halos and the scans' state exchange.
  for (const std::string &dual : duals)
    EXPECT_GT(refusedAt[dual], 0) << dual;
}

/// A run that asks for device collectives on a device without them is
/// refused before any step runs, naming both.
TEST(NcclPlan, RefusesDeviceCollectivesOnTheCpu) {
  if (compilerPath().empty())
    GTEST_SKIP() << "SHARDLINE_COMPILE is not set";
  RunOptions options;
  options.deviceComm = "nccl";
  RunResult run = runPlan(lowered(false)[0].plan, options);
  EXPECT_EQ(run.error, "--comm nccl moves values between the devices' own memories: the cpu device "
                       "has none, its ranks exchange through the host (--comm threads or mpi)");
}

} // namespace

namespace {

/// The strided copies both the host collectives and the CUDA backend run
/// (cudaMemcpy2DAsync): a split puts run j of every row into part j, rows
/// in order, a join undoes it, a slice keeps one part; every pitch is at
/// least its width, as cudaMemcpy2D requires.
TEST(StridedCopies, SplitJoinAndSliceAsTheirDefinitions) {
  const int64_t parts = 3, outer = 2, run = 4;
  std::vector<float> whole(parts * outer * run);
  for (size_t i = 0; i < whole.size(); ++i)
    whole[i] = (float)i;
  std::vector<float> split(whole.size(), -1.0f), joined(whole.size(), -1.0f);
  std::vector<StridedCopy> copies = splitCopies(parts, outer, run);
  ASSERT_EQ(copies.size(), (size_t)parts);
  for (const StridedCopy &c : copies) {
    EXPECT_GE(c.srcPitch, c.width);
    EXPECT_GE(c.dstPitch, c.width);
  }
  applyCopies(copies, whole.data(), split.data());
  for (int64_t j = 0; j < parts; ++j)
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t k = 0; k < run; ++k)
        EXPECT_EQ(split[(j * outer + o) * run + k], whole[(o * parts + j) * run + k])
            << "part " << j << " row " << o << " element " << k;
  applyCopies(joinCopies(parts, outer, run), split.data(), joined.data());
  EXPECT_EQ(joined, whole);

  MoveShape slice;
  slice.kind = MovementKind::Slice;
  slice.outer = outer;
  slice.splitRun = run;
  slice.parts = parts;
  std::vector<float> kept(outer * run, -1.0f);
  applyCopies({sliceCopy(slice, 1)}, whole.data(), kept.data());
  EXPECT_EQ(kept, (std::vector<float>{4, 5, 6, 7, 16, 17, 18, 19}));
}

} // namespace

namespace {

// -- the gathers run in pieces under their linears (comm/gather_overlap.h) --

/// Each entry's pairs and unpaired gathers, on rank 0.
std::string overlapText(const Lowered &l) {
  return describe(l.ranks[0].overlaps, l.ranks[0].unpaired);
}

/// The position of step `index` in `program`.
size_t positionOf(const std::vector<Step> &program, int64_t index) {
  for (size_t i = 0; i < program.size(); ++i)
    if (program[i].index == index)
      return i;
  ADD_FAILURE() << "no step " << index;
  return 0;
}

/// The rows a strided copy into a [T, K] matrix writes, one span a run.
std::vector<RowSpan> rowsWritten(const StridedCopy &c, int64_t K) {
  std::vector<RowSpan> rows;
  for (int64_t h = 0; h < c.height; ++h) {
    int64_t at = c.dstOffset + h * c.dstPitch;
    EXPECT_EQ(at % K, 0);
    EXPECT_EQ(c.width % K, 0);
    rows.push_back({at / K, c.width / K});
  }
  return rows;
}

/// The launches of pair `o` (comm/gather_overlap.h): the second stream
/// first follows the rank's; every copy, ring step and record on the second
/// stream, every wait and GEMM on the rank's; the GEMMs of piece k > 0 come
/// after the rank's stream waits for event k - 1, which the second stream
/// records after the ring step that brings piece k (and its placing into
/// x), and before any GEMM of a later piece; the GEMMs' spans are the
/// pieces' rows, in the pieces' order; an in-place ring step receives into
/// exactly the rows of its piece; the ring steps send the all-gather's
/// bytes; the own piece is packed before the first ring step when the
/// pieces travel through the landing buffer.
void checkLaunches(const GatherOverlap &o, int64_t elementBytes) {
  using L = OverlapLaunch;
  ASSERT_FALSE(o.launches.empty());
  EXPECT_EQ(o.launches[0].kind, L::Follow);
  EXPECT_EQ(o.inPlace, o.pieces[0].placement.height <= 1);
  EXPECT_EQ(o.landingCount, o.inPlace ? 0 : o.members * o.pieceCount);
  std::vector<std::vector<RowSpan>> gemmRows(o.pieces.size());
  std::vector<int> ringAt(o.pieces.size(), -1), placeAt(o.pieces.size(), -1),
      recordAt(o.pieces.size(), -1), waitAt(o.pieces.size(), -1);
  int packAt = -1;
  int64_t sent = 0, lastGemmPiece = 0;
  for (size_t at = 0; at < o.launches.size(); ++at) {
    const L &l = o.launches[at];
    SCOPED_TRACE("launch " + std::to_string(at));
    if (l.kind == L::Follow) {
      EXPECT_EQ(at, 0u);
      continue;
    }
    ASSERT_GE(l.piece, 0);
    ASSERT_LT(l.piece, (int64_t)o.pieces.size());
    const GatherPiece &p = o.pieces[l.piece];
    switch (l.kind) {
    case L::Pack:
      EXPECT_EQ(l.piece, 0);
      packAt = (int)at;
      break;
    case L::Ring:
      ringAt[l.piece] = (int)at;
      EXPECT_EQ(l.sendTo, p.sendTo);
      EXPECT_EQ(l.recvFrom, p.recvFrom);
      EXPECT_EQ(l.count, o.pieceCount);
      sent += l.count * elementBytes;
      if (o.inPlace) {
        ASSERT_EQ(p.rows.size(), 1u);
        EXPECT_EQ(l.recvAt, p.rows[0].first * o.rowWidth);
        EXPECT_EQ(l.count, p.rows[0].count * o.rowWidth);
      } else {
        EXPECT_EQ(l.recvAt, p.member * o.pieceCount);
        EXPECT_EQ(l.sendAt, p.sentMember * o.pieceCount);
      }
      break;
    case L::Place:
      placeAt[l.piece] = (int)at;
      EXPECT_GT(ringAt[l.piece], 0);
      EXPECT_EQ(l.copy.dstOffset, p.placement.dstOffset);
      break;
    case L::Record:
      recordAt[l.piece] = (int)at;
      EXPECT_EQ(l.event, p.event);
      EXPECT_GT(ringAt[l.piece], 0) << "recorded before its ring step";
      EXPECT_GT((int)at, placeAt[l.piece]);
      break;
    case L::Wait:
      waitAt[l.piece] = (int)at;
      EXPECT_EQ(l.event, p.event);
      EXPECT_GT(waitAt[l.piece], recordAt[l.piece]) << "waits for an event not yet recorded";
      EXPECT_GE(recordAt[l.piece], 0);
      break;
    case L::Gemm:
      EXPECT_GE(l.piece, lastGemmPiece) << "a GEMM of an earlier piece after a later one";
      lastGemmPiece = l.piece;
      if (l.piece > 0)
        EXPECT_GT(waitAt[l.piece], 0) << "a GEMM before its piece's wait";
      gemmRows[l.piece].push_back(l.rows);
      break;
    default:
      break;
    }
  }
  for (size_t k = 0; k < o.pieces.size(); ++k) {
    EXPECT_EQ(gemmRows[k], o.pieces[k].rows) << "piece " << k;
    if (k > 0) {
      EXPECT_GT(ringAt[k], 0) << "piece " << k;
      EXPECT_EQ(placeAt[k] >= 0, !o.inPlace) << "piece " << k;
    }
  }
  if (!o.inPlace && o.pieces.size() > 1)
    EXPECT_LT(packAt, ringAt[1]);
  EXPECT_EQ(packAt >= 0, !o.inPlace);
  EXPECT_EQ(sent, o.bytesSent);
}

/// Sequence parallelism's gathers pair with the column-parallel linears
/// that read them, on every rank alike; the schedule's pieces, own first
/// then in ring order, each with its ring step, event and rows; the rows of
/// the pieces' GEMMs are the whole GEMM's, each once, and lie where the
/// piece's placement writes it; the bytes are the all-gather's.
TEST(GatherOverlap, PairsSequenceParallelGathersWithTheirLinears) {
  if (compilerPath().empty())
    GTEST_SKIP() << "SHARDLINE_COMPILE is not set";
  std::map<std::string, size_t> pairs;
  for (bool train : {false, true})
    for (const Lowered &l : lowered(train)) {
      std::string name = l.entry->name + (train ? " (training)" : " (forward)");
      SCOPED_TRACE(name + "\n" + overlapText(l));
      pairs[name] = l.ranks[0].overlaps.size();
      Mesh mesh = meshOf(*l.plan.root());
      std::vector<TensorInfo> tensors = tensorInfos(*l.plan.root(), mesh);
      for (size_t r = 0; r < l.ranks.size(); ++r) {
        const NcclLowering &lowering = l.ranks[r];
        const std::vector<Step> &program = l.programs[r];
        ASSERT_EQ(lowering.overlaps.size(), l.ranks[0].overlaps.size()) << "rank " << r;
        for (size_t i = 0; i < lowering.overlaps.size(); ++i) {
          const GatherOverlap &o = lowering.overlaps[i];
          SCOPED_TRACE("rank " + std::to_string(r) + ", op #" + std::to_string(o.gatherStep));
          EXPECT_EQ(o.gatherStep, l.ranks[0].overlaps[i].gatherStep);
          EXPECT_EQ(o.linearStep, l.ranks[0].overlaps[i].linearStep);
          // The pair: the gather, its first reader a linear taking it as x.
          size_t g = positionOf(program, o.gatherStep), lin = positionOf(program, o.linearStep);
          const Step &gather = program[g], &linear = program[lin];
          EXPECT_EQ(gather.kind, "all_gather");
          EXPECT_TRUE(linear.kind == "linear" || linear.kind == "lm_head") << linear.kind;
          EXPECT_EQ(gather.out[0], o.gathered);
          EXPECT_EQ(linear.in[0], o.gathered);
          ASSERT_LT(g, lin);
          for (size_t between = g + 1; between < lin; ++between)
            for (int32_t t : program[between].in)
              EXPECT_NE(t, o.gathered) << "op #" << program[between].index << " reads it first";
          // The bytes: those of the ncclAllGather it replaces.
          auto st = std::find_if(lowering.steps.begin(), lowering.steps.end(),
                                 [&](const NcclStep &s) { return s.step == o.gatherStep; });
          ASSERT_NE(st, lowering.steps.end());
          ASSERT_EQ(st->calls.size(), 1u);
          EXPECT_EQ(st->calls[0].op, NcclOp::AllGather);
          EXPECT_EQ(st->calls[0].communicator, o.communicator);
          EXPECT_EQ(o.bytesSent, st->bytesSent);
          EXPECT_EQ(o.bytesSent,
                    (o.members - 1) * o.pieceCount * tensors[o.gathered].elementBytes());
          const std::vector<int64_t> &members = lowering.communicators[o.communicator].members;
          ASSERT_EQ(o.members, (int64_t)members.size());
          ASSERT_GT(o.members, 1);
          EXPECT_EQ(members[o.place], (int64_t)r);
          EXPECT_EQ(o.members * o.pieceCount, o.rows * o.rowWidth);
          // The pieces: own first, then ring step k brings the member k
          // places before, recording event k - 1.
          ASSERT_EQ((int64_t)o.pieces.size(), o.members);
          std::vector<int> covered(o.rows, 0), seen(o.members, 0);
          for (int64_t k = 0; k < o.members; ++k) {
            const GatherPiece &p = o.pieces[k];
            EXPECT_EQ(p.ringStep, k);
            EXPECT_EQ(p.event, k - 1);
            EXPECT_EQ(p.member, (o.place - k + o.members) % o.members);
            ++seen[p.member];
            if (k == 0) {
              EXPECT_EQ(p.sendTo, -1);
              EXPECT_EQ(p.recvFrom, -1);
            } else {
              EXPECT_EQ(p.sendTo, members[(o.place + 1) % o.members]);
              EXPECT_EQ(p.recvFrom, members[(o.place + o.members - 1) % o.members]);
              // It sends what it got one step before (its own at step 1).
              EXPECT_EQ(p.sentMember, o.pieces[k - 1].member);
            }
            EXPECT_EQ(p.rows, rowsWritten(p.placement, o.rowWidth));
            int64_t rows = 0;
            for (const RowSpan &span : p.rows) {
              rows += span.count;
              for (int64_t row = span.first; row < span.first + span.count; ++row) {
                ASSERT_GE(row, 0);
                ASSERT_LT(row, o.rows);
                ++covered[row];
              }
            }
            EXPECT_EQ(rows * o.rowWidth, o.pieceCount);
          }
          EXPECT_EQ(seen, std::vector<int>(o.members, 1));
          EXPECT_EQ(covered, std::vector<int>(o.rows, 1));
          checkLaunches(o, tensors[o.gathered].elementBytes());
        }
      }
    }
  // Sequence parallelism gathers before its column-parallel linears (and
  // lm_head), forward and in training's forward alike; the backward's gathers
  // (read by linear_grad, linear_grad_weight, embedding_grad) and every
  // other strategy's run whole, each with its reason.
  for (bool train : {false, true})
    for (const Lowered &l : lowered(train)) {
      std::string name = l.entry->name + (train ? " (training)" : " (forward)");
      bool sp = l.entry->name.find(" sp") != std::string::npos;
      if (sp)
        EXPECT_GT(pairs[name], 0u) << name;
      else
        EXPECT_EQ(pairs[name], 0u) << name;
      EXPECT_EQ(pairs[name], pairs[l.entry->name + " (forward)"]) << name;
      for (const UnpairedGather &u : l.ranks[0].unpaired) {
        EXPECT_NE(u.why, "") << name << " op #" << u.gatherStep;
        if (l.entry->name == "attention cp4 allgather contiguous")
          EXPECT_NE(u.why.find("(sl.attention"), std::string::npos) << u.why;
      }
    }
}

/// The g - 1 exchanges of a pair's launches run by every member in step:
/// `upTo(m)` runs member m's launches up to its next exchange and returns
/// it (a launch with sendTo, recvFrom, sendAt, recvAt and count; nullptr at
/// the end); `sendBase(m)` and `recvBase(m)` are where m's offsets count
/// from. Every member's send of an exchange is taken before any receive,
/// each receiver gets what the member it names sent it, and then every
/// member moves past its exchange (`pass(m)`).
template <typename UpTo, typename SendBase, typename RecvBase, typename Pass>
void exchangeInStep(const std::vector<int64_t> &members, int64_t g, UpTo upTo, SendBase sendBase,
                    RecvBase recvBase, Pass pass) {
  for (int64_t k = 1; k < g; ++k) {
    std::map<int64_t, decltype(upTo(0))> step;
    std::map<int64_t, std::vector<float>> sent;
    for (int64_t m : members) {
      step[m] = upTo(m);
      ASSERT_NE(step[m], nullptr) << "rank " << m << " has no exchange " << k;
      const float *from = sendBase(m) + step[m]->sendAt;
      sent[m].assign(from, from + step[m]->count);
    }
    for (int64_t m : members) {
      const auto &mine = *step[m], &peer = *step.at(mine.recvFrom);
      EXPECT_EQ(peer.sendTo, m);
      ASSERT_EQ(peer.count, mine.count);
      std::copy(sent[mine.recvFrom].begin(), sent[mine.recvFrom].end(), recvBase(m) + mine.recvAt);
    }
    for (int64_t m : members)
      pass(m);
  }
}

/// A rank's host run of a pair's launches: x (this rank's piece placed, as
/// the gather step leaves it), the landing buffer and the linear's result,
/// NaN where nothing was written; `next` is the next launch.
struct HostLaunches {
  std::vector<float> x, landing, y;
  size_t next = 0;
  float *staging(const GatherOverlap &o) { return o.inPlace ? x.data() : landing.data(); }
};

/// Each pair's launches run on the host by every member of its group, each
/// member's part coding its place, its weight the same on all: the copies
/// and GEMMs (the CPU kernel, one a row span) as queued, and each ring step
/// once every member has reached it, a member receiving what its sender's
/// launch sends. Then x is what the host collectives' all-gather makes
/// (joinCopies of the parts; a piece sent or read before it arrived would
/// leave NaN), and the result is the whole GEMM to 1e-5 relative (the BLAS
/// may block a GEMM of fewer rows otherwise). The launches' order of
/// streams and events is checked above; this checks their offsets.
TEST(GatherOverlap, LaunchesRunOnTheHostGatherAndComputeTheWholeGemm) {
  if (compilerPath().empty())
    GTEST_SKIP() << "SHARDLINE_COMPILE is not set";
  int64_t checked = 0, inPlace = 0, landed = 0;
  for (const Lowered &l : lowered(false)) {
    SCOPED_TRACE(l.entry->name);
    Mesh mesh = meshOf(*l.plan.root());
    std::vector<TensorInfo> tensors = tensorInfos(*l.plan.root(), mesh);
    for (size_t i = 0; i < l.ranks[0].overlaps.size(); ++i)
      for (size_t first = 0; first < l.ranks.size(); ++first) {
        const GatherOverlap &o0 = l.ranks[first].overlaps[i];
        if (o0.place != 0)
          continue;
        SCOPED_TRACE("group of rank " + std::to_string(first) + ", op #" +
                     std::to_string(o0.gatherStep));
        const std::vector<int64_t> &members = l.ranks[first].communicators[o0.communicator].members;
        int64_t g = o0.members, K = o0.rowWidth, count = o0.pieceCount;
        const Step &linear = l.programs[first][positionOf(l.programs[first], o0.linearStep)];
        const std::vector<int64_t> &wl = tensors[linear.in[1]].local;
        ASSERT_EQ(wl[0], K);
        int64_t N = wl[1];
        std::vector<float> w(K * N);
        for (int64_t e = 0; e < K * N; ++e)
          w[e] = (float)std::cos(0.11 * (double)e);
        auto part = [&](int64_t place) {
          std::vector<float> v(count);
          for (int64_t e = 0; e < count; ++e)
            v[e] = (float)std::sin(0.37 * (double)(place * count + e) + 0.1);
          return v;
        };
        std::map<int64_t, HostLaunches> runs;
        for (int64_t m : members) {
          const GatherOverlap &o = l.ranks[m].overlaps[i];
          HostLaunches &h = runs[m];
          h.x.assign(o.rows * K, NAN);
          h.landing.assign(o.landingCount, NAN);
          h.y.assign(o.rows * N, NAN);
          applyCopies({o.pieces[0].placement}, part(o.place).data(), h.x.data());
        }
        // Runs member m's launches up to its next ring step (or the end).
        auto runUpToRing = [&](int64_t m) {
          const GatherOverlap &o = l.ranks[m].overlaps[i];
          HostLaunches &h = runs[m];
          for (; h.next < o.launches.size(); ++h.next) {
            const OverlapLaunch &launch = o.launches[h.next];
            if (launch.kind == OverlapLaunch::Ring)
              return &launch;
            if (launch.kind == OverlapLaunch::Pack)
              applyCopies({launch.copy}, h.x.data(), h.landing.data());
            else if (launch.kind == OverlapLaunch::Place)
              applyCopies({launch.copy}, h.landing.data(), h.x.data());
            else if (launch.kind == OverlapLaunch::Gemm)
              cpu::linear(h.x.data() + launch.rows.first * K, w.data(), launch.rows.count, K, N,
                          h.y.data() + launch.rows.first * N, false);
          }
          return static_cast<const OverlapLaunch *>(nullptr);
        };
        auto staging = [&](int64_t m) { return runs[m].staging(l.ranks[m].overlaps[i]); };
        exchangeInStep(members, g, runUpToRing, staging, staging,
                       [&](int64_t m) { ++runs[m].next; });
        std::vector<float> whole, gathered(o0.rows * K, NAN), all(o0.rows * N);
        for (int64_t q = 0; q < g; ++q) {
          std::vector<float> v = part(q);
          whole.insert(whole.end(), v.begin(), v.end());
        }
        int64_t outer = o0.pieces[0].placement.height;
        applyCopies(joinCopies(g, outer, count / outer), whole.data(), gathered.data());
        cpu::linear(gathered.data(), w.data(), o0.rows, K, N, all.data(), false);
        for (int64_t m : members) {
          SCOPED_TRACE("rank " + std::to_string(m));
          EXPECT_EQ(runUpToRing(m), nullptr) << "a ring step left over";
          EXPECT_EQ(runs[m].x, gathered);
          for (int64_t e = 0; e < o0.rows * N; ++e)
            ASSERT_NEAR(runs[m].y[e], all[e], 1e-5 * (1 + std::fabs(all[e]))) << "element " << e;
          ++checked;
          ++(o0.inPlace ? inPlace : landed);
        }
      }
  }
  EXPECT_GT(checked, 0);
  // Both ways pieces travel: in place (one sequence) and through the landing
  // buffer.
  EXPECT_GT(inPlace, 0);
  EXPECT_GT(landed, 0);
}

/// Sequence parallelism's reduce-scatters pair with the row-parallel
/// linears right before them, on every rank alike (16-bit ones too, whose
/// lowering is a grouped send/receive; not the embedding's, nor MoE's); the bytes are the
/// reduce-scatter's; the pieces' rows are the whole result's, each once; and the launches: at step
/// k the GEMMs of the piece of the member k places after this one, then (strided) its pack, the
/// second stream following, one exchange that sends it there and receives the piece of the member k
/// places before, the own piece's GEMMs and copy last. Every other reduce-scatter runs whole, with
/// its reason.
TEST(ScatterOverlap, PairsSequenceParallelReduceScattersWithTheirLinears) {
  if (compilerPath().empty())
    GTEST_SKIP() << "SHARDLINE_COMPILE is not set";
  using L = ScatterLaunch;
  for (bool train : {false, true})
    for (const Lowered &l : lowered(train)) {
      std::string name = l.entry->name + (train ? " (training)" : " (forward)");
      SCOPED_TRACE(name + "\n" + describe(l.ranks[0].scatters, l.ranks[0].unpairedScatters));
      Mesh mesh = meshOf(*l.plan.root());
      std::vector<TensorInfo> tensors = tensorInfos(*l.plan.root(), mesh);
      // Sequence parallelism with row-parallel linears (not MoE alone,
      // whose experts are no linears): at least one pair.
      bool sp = l.entry->name.find(" sp") != std::string::npos,
           linears = l.entry->name.rfind("moe", 0) != 0;
      EXPECT_EQ(l.ranks[0].scatters.empty(), !(sp && linears));
      for (const UnpairedScatter &u : l.ranks[0].unpairedScatters)
        EXPECT_NE(u.why, "") << "op #" << u.scatterStep;
      for (size_t r = 0; r < l.ranks.size(); ++r) {
        const NcclLowering &lowering = l.ranks[r];
        const std::vector<Step> &program = l.programs[r];
        ASSERT_EQ(lowering.scatters.size(), l.ranks[0].scatters.size()) << "rank " << r;
        for (const ScatterOverlap &o : lowering.scatters) {
          SCOPED_TRACE("rank " + std::to_string(r) + ", op #" + std::to_string(o.scatterStep));
          size_t at = positionOf(program, o.scatterStep);
          ASSERT_GT(at, 0u);
          const Step &scatter = program[at], &linear = program[at - 1];
          EXPECT_EQ(scatter.kind, "reduce_scatter");
          EXPECT_EQ(linear.kind, "linear");
          EXPECT_EQ(linear.index, o.linearStep);
          EXPECT_EQ(linear.out[0], o.partial);
          EXPECT_EQ(scatter.in[0], o.partial);
          for (size_t later = at + 1; later < program.size(); ++later)
            for (int32_t t : program[later].in)
              EXPECT_NE(t, o.partial) << "op #" << program[later].index << " reads it too";
          auto st = std::find_if(lowering.steps.begin(), lowering.steps.end(),
                                 [&](const NcclStep &s) { return s.step == o.scatterStep; });
          ASSERT_NE(st, lowering.steps.end());
          ASSERT_EQ(st->calls.size(), 1u);
          EXPECT_EQ(st->calls[0].communicator, o.communicator);
          EXPECT_EQ(o.bytesSent, st->bytesSent);
          EXPECT_EQ(o.bytesSent,
                    (o.members - 1) * o.pieceCount * tensors[o.partial].elementBytes());
          const std::vector<int64_t> &members = lowering.communicators[o.communicator].members;
          ASSERT_EQ(o.members, (int64_t)members.size());
          ASSERT_GT(o.members, 1);
          EXPECT_EQ(members[o.place], (int64_t)r);
          EXPECT_EQ(o.members * o.pieceCount, o.rows * o.rowWidth);
          std::vector<int> covered(o.rows, 0);
          for (const std::vector<RowSpan> &piece : o.pieceRows) {
            int64_t rows = 0;
            for (const RowSpan &span : piece) {
              rows += span.count;
              for (int64_t row = span.first; row < span.first + span.count; ++row) {
                ASSERT_GE(row, 0);
                ASSERT_LT(row, o.rows);
                ++covered[row];
              }
            }
            EXPECT_EQ(rows * o.rowWidth, o.pieceCount);
          }
          EXPECT_EQ(covered, std::vector<int>(o.rows, 1));
          // The launches, step by step.
          size_t next = 0;
          auto take = [&](L::Kind kind, int64_t member) -> const L * {
            if (next >= o.launches.size()) {
              ADD_FAILURE() << "launch " << next << " missing";
              return nullptr;
            }
            const L &launch = o.launches[next++];
            EXPECT_EQ(launch.kind, kind) << "launch " << next - 1;
            EXPECT_EQ(launch.member, member) << "launch " << next - 1;
            return &launch;
          };
          auto gemms = [&](int64_t member) {
            for (const RowSpan &span : o.pieceRows[member])
              if (const L *g = take(L::Gemm, member))
                EXPECT_EQ(g->rows, span);
          };
          int64_t g = o.members, p = o.place, sent = 0;
          for (int64_t k = 1; k < g; ++k) {
            int64_t to = (p + k) % g, from = (p + g - k) % g;
            gemms(to);
            if (!o.inPlace)
              if (const L *pack = take(L::Pack, to))
                EXPECT_EQ(pack->copy.dstOffset, to * o.pieceCount);
            take(L::Follow, to);
            if (const L *x = take(L::Exchange, to)) {
              EXPECT_EQ(x->sendTo, members[to]);
              EXPECT_EQ(x->recvFrom, members[from]);
              EXPECT_EQ(x->sendAt, to * o.pieceCount);
              EXPECT_EQ(x->recvAt, from * o.pieceCount);
              EXPECT_EQ(x->count, o.pieceCount);
              sent += x->count * tensors[o.partial].elementBytes();
            }
          }
          gemms(p);
          if (const L *own = take(L::Own, p))
            EXPECT_EQ(own->copy.dstOffset, p * o.pieceCount);
          EXPECT_EQ(next, o.launches.size());
          EXPECT_EQ(sent, o.bytesSent);
        }
      }
    }
}

/// Each pair's launches run on the host by every member of its group, each
/// member with x and w of its own (its slice of the row-parallel product):
/// the GEMMs (the CPU kernel, one a row span), packs and own copy as
/// queued, and each exchange once every member has reached it, a member
/// receiving what its sender's launch sends. Then every slot m of a
/// member's landing buffer holds member m's piece of that member's chunk
/// (NaN would mark a slot not written), and each member's result is its
/// whole GEMM to 1e-5 relative; the reduce-scatter step's sum of the slots
/// in group order is then the host collectives' (sumTerms).
TEST(ScatterOverlap, LaunchesRunOnTheHostDeliverEveryPieceToItsMember) {
  if (compilerPath().empty())
    GTEST_SKIP() << "SHARDLINE_COMPILE is not set";
  int64_t checked = 0, inPlace = 0, staged = 0;
  for (const Lowered &l : lowered(false)) {
    SCOPED_TRACE(l.entry->name);
    Mesh mesh = meshOf(*l.plan.root());
    std::vector<TensorInfo> tensors = tensorInfos(*l.plan.root(), mesh);
    for (size_t i = 0; i < l.ranks[0].scatters.size(); ++i)
      for (size_t first = 0; first < l.ranks.size(); ++first) {
        const ScatterOverlap &o0 = l.ranks[first].scatters[i];
        if (o0.place != 0)
          continue;
        SCOPED_TRACE("group of rank " + std::to_string(first) + ", op #" +
                     std::to_string(o0.scatterStep));
        const std::vector<int64_t> &members = l.ranks[first].communicators[o0.communicator].members;
        int64_t g = o0.members, N = o0.rowWidth, rows = o0.rows;
        const Step &linear = l.programs[first][positionOf(l.programs[first], o0.linearStep)];
        int64_t K = tensors[linear.in[1]].local[0];
        ASSERT_EQ(tensors[linear.in[1]].local[1], N);
        struct Run {
          std::vector<float> x, w, y, staging, landing;
          size_t next = 0;
        };
        std::map<int64_t, Run> runs;
        for (int64_t m : members) {
          const ScatterOverlap &o = l.ranks[m].scatters[i];
          Run &h = runs[m];
          h.x.resize(rows * K);
          h.w.resize(K * N);
          for (int64_t e = 0; e < rows * K; ++e)
            h.x[e] = (float)std::sin(0.37 * (double)e + 0.5 * (double)o.place);
          for (int64_t e = 0; e < K * N; ++e)
            h.w[e] = (float)std::cos(0.11 * (double)e + 0.3 * (double)o.place);
          h.y.assign(rows * N, NAN);
          h.staging.assign(o.stagingCount(), NAN);
          h.landing.assign(o.landingCount(), NAN);
        }
        // Runs member m's launches up to its next exchange (or the end).
        auto runUpToExchange = [&](int64_t m) {
          const ScatterOverlap &o = l.ranks[m].scatters[i];
          Run &h = runs[m];
          for (; h.next < o.launches.size(); ++h.next) {
            const ScatterLaunch &launch = o.launches[h.next];
            if (launch.kind == ScatterLaunch::Exchange)
              return &launch;
            if (launch.kind == ScatterLaunch::Pack)
              applyCopies({launch.copy}, h.y.data(), h.staging.data());
            else if (launch.kind == ScatterLaunch::Own)
              applyCopies({launch.copy}, h.y.data(), h.landing.data());
            else if (launch.kind == ScatterLaunch::Gemm)
              cpu::linear(h.x.data() + launch.rows.first * K, h.w.data(), launch.rows.count, K, N,
                          h.y.data() + launch.rows.first * N, false);
          }
          return static_cast<const ScatterLaunch *>(nullptr);
        };
        exchangeInStep(
            members, g, runUpToExchange,
            [&](int64_t m) {
              return l.ranks[m].scatters[i].inPlace ? runs[m].y.data() : runs[m].staging.data();
            },
            [&](int64_t m) { return runs[m].landing.data(); }, [&](int64_t m) { ++runs[m].next; });
        int64_t outer = (int64_t)o0.pieceRows[0].size();
        std::vector<StridedCopy> pieces = splitCopies(g, outer, o0.pieceCount / outer);
        for (int64_t m : members) {
          SCOPED_TRACE("rank " + std::to_string(m));
          const ScatterOverlap &o = l.ranks[m].scatters[i];
          EXPECT_EQ(runUpToExchange(m), nullptr) << "an exchange left over";
          std::vector<float> whole(rows * N);
          cpu::linear(runs[m].x.data(), runs[m].w.data(), rows, K, N, whole.data(), false);
          for (int64_t e = 0; e < rows * N; ++e)
            ASSERT_NEAR(runs[m].y[e], whole[e], 1e-5 * (1 + std::fabs(whole[e])))
                << "element " << e;
          // Slot q holds member q's piece of this member's chunk.
          for (int64_t q = 0; q < g; ++q) {
            std::vector<float> piece(o.pieceCount, NAN);
            StridedCopy c = pieces[o.place];
            c.dstOffset = 0;
            applyCopies({c}, runs[members[q]].y.data(), piece.data());
            std::vector<float> slot(runs[m].landing.begin() + q * o.pieceCount,
                                    runs[m].landing.begin() + (q + 1) * o.pieceCount);
            EXPECT_EQ(slot, piece) << "slot " << q;
          }
          ++checked;
          ++(o.inPlace ? inPlace : staged);
        }
      }
  }
  EXPECT_GT(checked, 0);
  EXPECT_GT(inPlace, 0);
  EXPECT_GT(staged, 0);
}

} // namespace
