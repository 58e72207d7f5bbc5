//===- executor_test.cpp - the executor's arena and comms on small plans ---===//

#include "comm/comm.h"
#include "exec/collectives.h"
#include "exec/executor.h"
#include "exec/program.h"
#include "kernels/cpu/kernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <thread>

using namespace shardline;
using namespace shardline::rt;
namespace fb = flatbuffers;
namespace plan = shardline::plan;

namespace {
/// The plan `root` built in `b`, loaded.
LoadedPlan finishPlan(fb::FlatBufferBuilder &b, fb::Offset<plan::Plan> root) {
  plan::FinishPlanBuffer(b, root);
  std::string error;
  auto loaded = loadPlan(wrapPlan(b.GetBufferPointer(), b.GetSize()), error);
  EXPECT_TRUE(loaded) << error;
  return *loaded;
}

/// Mesh tp=2; x (input, split over tp) -> `kind` -> y, at the given arena
/// offsets; 8 elements of `dtype`, so 16 bytes per rank each in f32.
/// `operandName` names x, `attrs` are the op's float attributes; the inputs
/// are tokens of a vocabulary of `vocab`, and x is an output too when
/// `outputX`.
LoadedPlan siluPlan(int64_t xOffset, int64_t yOffset, int64_t arenaBytes,
                    const std::string &kind = "silu", const std::string &operandName = "x",
                    const std::vector<std::pair<std::string, double>> &attrs = {},
                    plan::DType dtype = plan::DType::F32, int64_t vocab = 1, bool outputX = false) {
  fb::FlatBufferBuilder b;
  auto mesh = b.CreateVector({plan::CreateAxis(b, b.CreateString("tp"), 2)});
  auto layout = plan::CreateLayout(
      b, b.CreateVector({plan::CreateAxisList(b, b.CreateVectorOfStrings({"tp"}))}));
  auto shape = b.CreateVector<int64_t>({8});
  std::vector<fb::Offset<plan::Tensor>> tensors = {
      plan::CreateTensor(b, b.CreateString("x"), dtype, shape, layout, plan::Role::Input,
                         plan::Init::Normal, 0, 0, xOffset),
      plan::CreateTensor(b, b.CreateString("y"), dtype, shape, layout, plan::Role::Activation,
                         plan::Init::Normal, 0, 0, yOffset)};
  std::vector<fb::Offset<plan::Attr>> attrOffsets;
  for (const auto &[name, value] : attrs)
    attrOffsets.push_back(plan::CreateAttr(b, b.CreateString(name), 0, b.CreateVector({value})));
  auto op = plan::CreateOp(b, b.CreateString(kind), b.CreateVector<int32_t>({0}),
                           b.CreateVector<int32_t>({1}), b.CreateVectorOfStrings({operandName}),
                           b.CreateVectorOfStrings({"result"}), b.CreateVector(attrOffsets));
  auto root = plan::CreatePlan(
      b, b.CreateString("m"), mesh, b.CreateVector(tensors), b.CreateVector({op}),
      b.CreateVector<int32_t>({0}),
      b.CreateVector<int32_t>(outputX ? std::vector<int32_t>{0, 1} : std::vector<int32_t>{1}),
      arenaBytes, 0, plan::CreateModelFacts(b, vocab));
  return finishPlan(b, root);
}
/// One op of `kind` whose operands, named `names`, are tensors 1.. and whose
/// result `result` is tensor 0; every tensor is [8], replicated.
LoadedPlan oneOpPlan(const std::string &kind, const std::vector<std::string> &names) {
  fb::FlatBufferBuilder b;
  auto mesh = b.CreateVector({plan::CreateAxis(b, b.CreateString("tp"), 1)});
  std::vector<fb::Offset<plan::Tensor>> tensors;
  std::vector<int32_t> operands;
  for (size_t t = 0; t <= names.size(); ++t) {
    tensors.push_back(plan::CreateTensor(b, b.CreateString("t" + std::to_string(t)),
                                         plan::DType::F32, b.CreateVector<int64_t>({8}), 0,
                                         plan::Role::Weight));
    if (t)
      operands.push_back((int32_t)t);
  }
  auto op = plan::CreateOp(b, b.CreateString(kind), b.CreateVector(operands),
                           b.CreateVector<int32_t>({0}), b.CreateVectorOfStrings(names),
                           b.CreateVectorOfStrings({"result"}));
  auto root =
      plan::CreatePlan(b, b.CreateString("m"), mesh, b.CreateVector(tensors), b.CreateVector({op}),
                       b.CreateVector<int32_t>({}), b.CreateVector<int32_t>({0}), 0, 0);
  return finishPlan(b, root);
}
} // namespace

TEST(Program, BindsByNameInTheKernelsOrder) {
  // The plan lists bias before x; the kernel reads x, weight, bias, halo.
  LoadedPlan p = oneOpPlan("causal_conv1d", {"bias", "x", "weight"});
  std::string error;
  auto program = decodeProgram(*p.root(), cpuBackend().kernels, error);
  ASSERT_TRUE(program) << error;
  ASSERT_EQ(program->size(), 1u);
  const Step &step = (*program)[0];
  EXPECT_EQ(step.in, (std::vector<int32_t>{2, 3, 1, -1}));
  EXPECT_FALSE(step.has(3)); // no halo
  EXPECT_EQ(step.out, (std::vector<int32_t>{0}));
  auto withHalo = decodeProgram(*oneOpPlan("causal_conv1d", {"x", "weight", "bias", "halo"}).root(),
                                cpuBackend().kernels, error);
  ASSERT_TRUE(withHalo) << error;
  EXPECT_EQ((*withHalo)[0].in, (std::vector<int32_t>{1, 2, 3, 4}));
}

TEST(Program, RefusesNamesNoKernelBinds) {
  EXPECT_EQ(checkProgram(oneOpPlan("causal_conv1d", {"x", "weight", "bias", "carry"})),
            "op #0 (sl.causal_conv1d) at ? has operand 'carry', which this runtime does not bind");
  EXPECT_EQ(checkProgram(oneOpPlan("add", {"lhs", "other"})),
            "op #0 (sl.add) at ? has no operand 'rhs'");
}

TEST(Executor, RunsInThePlannedArenaAndMeasuresItsPeak) {
  RunResult r = runPlan(siluPlan(0, 64, 128), RunOptions{});
  ASSERT_EQ(r.error, "");
  EXPECT_TRUE(r.usedArena);
  EXPECT_EQ(r.arenaPeak, 128);    // y ends at 64 + one 64-byte slot
  EXPECT_EQ(r.liveBytesPeak, 32); // x and y, 16 bytes each, live together
  EXPECT_EQ(r.bytesSentPerRank, 0);
  ASSERT_EQ(r.outputs.size(), 1u);
  ASSERT_EQ(r.outputs[0].size(), 8u);
  // With a vocabulary of one the inputs are all 0, and silu(0) = 0.
  for (float v : r.outputs[0])
    EXPECT_EQ(v, 0.0f);
}

TEST(Executor, RefusesAPlanThatPlacesAValueOverALiveOne) {
  RunResult r = runPlan(siluPlan(0, 0, 64), RunOptions{});
  EXPECT_EQ(r.error, "op #0 (sl.silu) at ?: the plan places 'y' at arena bytes [0, 16) over 'x' at "
                     "[0, 16), which is still live");
}

TEST(Executor, SingleDeviceRunDoesNotUseTheArena) {
  RunOptions options;
  options.singleDevice = true;
  RunResult r = runPlan(siluPlan(0, 0, 64), options);
  ASSERT_EQ(r.error, "");
  EXPECT_FALSE(r.usedArena);
  EXPECT_EQ(r.ranks, 1);
  EXPECT_EQ(r.liveBytesPeak, 64);
}

TEST(Device, ConvertsBetweenTypesRoundingToNearestEven) {
  CpuDevice device;
  EXPECT_EQ(device.storageType(DType::BF16), DType::BF16);
  EXPECT_EQ(device.storageType(DType::F16), DType::F16);
  // 1 + 2^-8 is halfway between two bf16 values and goes to the even one (1);
  // 1 + 3 * 2^-8 goes up to 1 + 2^-6; f16 keeps both exactly.
  std::vector<float> wide = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, -2.5f, 300.0f};
  std::vector<uint16_t> half(wide.size());
  BufferView bf16(half.data(), (int64_t)half.size(), DType::BF16);
  device.convert(BufferView(wide.data(), (int64_t)wide.size()), bf16);
  EXPECT_EQ(bf16.bytes(), 8);
  std::vector<float> back(wide.size());
  device.convert(bf16, BufferView(back.data(), (int64_t)back.size()));
  EXPECT_EQ(back, (std::vector<float>{1.0f, 1.0f + 0x1p-6f, -2.5f, 300.0f}));
  BufferView f16(half.data(), (int64_t)half.size(), DType::F16);
  device.convert(BufferView(wide.data(), (int64_t)wide.size()), f16);
  device.convert(f16, BufferView(back.data(), (int64_t)back.size()));
  EXPECT_EQ(back, wide);
  // bf16 -> int32 goes through f32; a count mismatch is refused.
  std::vector<uint16_t> ids = {floatToBf16(7.0f), floatToBf16(256.0f)};
  std::vector<int32_t> asInt(2);
  device.convert(BufferView(ids.data(), 2, DType::BF16), BufferView(asInt.data(), 2));
  EXPECT_EQ(asInt, (std::vector<int32_t>{7, 256}));
  EXPECT_THROW(device.convert(BufferView(ids.data(), 2, DType::BF16), BufferView(back.data(), 3)),
               std::invalid_argument);
}

TEST(Frame, AKernelReadsOnlyF32AndInt32Views) {
  shardline::Mesh mesh;
  std::vector<TensorInfo> tensors(2);
  tensors[0].name = "h";
  tensors[1].name = "ids";
  std::vector<uint16_t> half(4);
  std::vector<int32_t> ids(4);
  std::vector<BufferView> views = {BufferView(half.data(), 4, DType::BF16),
                                   BufferView(ids.data(), 4)};
  Frame frame{mesh, 0, tensors, views, nullptr};
  EXPECT_EQ(frame.ids(1), ids.data());
  try {
    frame.f(0);
    ADD_FAILURE() << "a bf16 view read as f32";
  } catch (Stop &stop) {
    EXPECT_EQ(stop.error, "tensor 'h' is held as bf16, the kernel reads it as f32");
  }
  EXPECT_THROW(frame.f(1), Stop);
  std::vector<float> wide(4);
  views[0] = BufferView(wide.data(), 4);
  EXPECT_EQ(frame.f(0), wide.data());
}

TEST(Executor, Bf16TensorsLiveIn16BitsAtThePlannedOffsets) {
  // Each rank holds 4 bf16 values of x at arena bytes [0, 8) and of y right
  // after, at [8, 16): held as f32 there, y would overwrite half of x.
  LoadedPlan p = siluPlan(0, 8, 72, "silu", "x", {}, plan::DType::BF16, 8, true);
  RunResult r = runPlan(p, RunOptions{});
  ASSERT_EQ(r.error, "");
  EXPECT_TRUE(r.usedArena);
  EXPECT_EQ(r.arenaPeak, 72);     // y ends at 8 + one 64-byte slot
  EXPECT_EQ(r.liveBytesPeak, 16); // x and y, 4 x 2 bytes each, live together
  EXPECT_EQ(r.outputTypes, (std::vector<DType>{DType::BF16, DType::BF16}));
  RunOptions single;
  single.singleDevice = true;
  RunResult ref = runPlan(p, single);
  ASSERT_EQ(ref.error, "");
  ASSERT_EQ(r.outputs.size(), 2u);
  EXPECT_EQ(r.outputs, ref.outputs);
  // The kernel computes in f32 on the widened x, and y is that result
  // rounded to bf16: the f32 plan reads the same tokens (below 8, exact in
  // bf16), and its silu is not exact in bf16.
  RunResult f32 =
      runPlan(siluPlan(0, 64, 128, "silu", "x", {}, plan::DType::F32, 8, true), RunOptions{});
  ASSERT_EQ(f32.error, "");
  EXPECT_EQ(r.outputs[0], f32.outputs[0]);
  const std::vector<float> &x = r.outputs[0], &y = r.outputs[1], &exact = f32.outputs[1];
  int rounded = 0;
  for (size_t k = 0; k < x.size(); ++k) {
    EXPECT_EQ(y[k], bf16ToFloat(floatToBf16(exact[k]))) << k;
    rounded += y[k] != exact[k];
  }
  EXPECT_GT(*std::max_element(x.begin(), x.end()), 1.0f);
  EXPECT_GT(rounded, 0);
}

TEST(Executor, TheKernelTableIsTheListOfOps) {
  const KernelTable &table = cpuBackend().kernels;
  EXPECT_TRUE(table.count("silu") && table.count("ssd_scan") && table.count("scan_state_exchange"));
  EXPECT_FALSE(table.count("frobnicate"));
  EXPECT_EQ(checkProgram(siluPlan(0, 64, 128)), "");
  EXPECT_EQ(checkProgram(siluPlan(0, 64, 128, "frobnicate")),
            "the executor does not run sl.frobnicate yet");
  RunResult r = runPlan(siluPlan(0, 64, 128, "frobnicate"), RunOptions{});
  EXPECT_EQ(r.error, "the executor does not run sl.frobnicate yet");
}

TEST(Executor, OperandsAndAttributesAreBoundByName) {
  // silu reads its operand as x; a plan that names it otherwise is refused.
  EXPECT_EQ(checkProgram(siluPlan(0, 64, 128, "silu", "lhs")),
            "op #0 (sl.silu) at ? has no operand 'x'");
  // rms_norm needs eps in the plan (the runtime has no default) and a weight.
  EXPECT_EQ(checkProgram(siluPlan(0, 64, 128, "rms_norm", "x")),
            "op #0 (sl.rms_norm) at ? has no operand 'weight'");
  EXPECT_EQ(checkProgram(siluPlan(0, 64, 128, "rope", "x", {{"theta", 1.0}})),
            "op #0 (sl.rope) at ? has no attribute 'head_dim'");
  EXPECT_EQ(checkProgram(siluPlan(0, 64, 128, "rope", "x", {{"head_dim", 2.0}, {"theta", 1.0}})),
            "op #0 (sl.rope) at ? attribute 'head_dim' is not one integer");
}

TEST(Collectives, GroupGatherReachesOnlyTheGroupAndCountsWhatEachSends) {
  // Mesh cp2 x tp2; each cp group ({0, 2} and {1, 3}) gathers its members'
  // two values (at 2 bytes each, as a 16-bit plan counts them).
  const int64_t n = 4;
  shardline::Mesh mesh;
  mesh.axes = {{"cp", 2}, {"tp", 2}};
  ThreadHub hub(n);
  std::vector<std::vector<std::vector<float>>> got(n);
  std::vector<int64_t> sent(n);
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      ThreadComm comm(hub, r);
      Collectives collectives(comm, mesh);
      got[r] = collectives.allGather({"cp"}, {(float)r, (float)r + 0.5f}, 2);
      sent[r] = collectives.bytesSent();
    });
  for (auto &t : threads)
    t.join();
  EXPECT_EQ(got[0][2], (std::vector<float>{2.0f, 2.5f}));
  EXPECT_EQ(got[0][0], (std::vector<float>{0.0f, 0.5f}));
  EXPECT_TRUE(got[0][1].empty());
  EXPECT_TRUE(got[0][3].empty());
  EXPECT_EQ(got[3][1], (std::vector<float>{1.0f, 1.5f}));
  EXPECT_EQ(got[3][3], (std::vector<float>{3.0f, 3.5f}));
  EXPECT_EQ(sent, (std::vector<int64_t>{4, 4, 4, 4}));
  // The values travel as f32: two of 4 bytes to the one other member.
  for (int64_t s = 0; s < n; ++s)
    for (int64_t r = 0; r < n; ++r)
      EXPECT_EQ(hub.bytesCarried(s, r), (s ^ r) == 2 ? 8 : 0) << s << " -> " << r;
}

namespace {
shardline::Layout lay(std::vector<std::vector<std::string>> dims,
                      std::vector<std::string> partial = {}, int64_t zigzagDim = -1) {
  shardline::Layout l;
  l.dims = std::move(dims);
  l.partial = std::move(partial);
  if (zigzagDim >= 0) {
    l.orderDim = zigzagDim;
    l.order = shardline::ChunkOrder::Zigzag;
  }
  return l;
}
/// One transition run on every thread rank: each rank's target part, the
/// bytes it counted and the collectives it ran by group size.
template <typename T> struct Moved {
  std::vector<std::vector<T>> parts;
  std::vector<int64_t> sent;
  std::vector<std::map<int64_t, int64_t>> groups;
};

/// Moves a tensor of global `shape` from `from` to `to` on every thread rank
/// of `mesh`, each rank's source part from `sources` (4 bytes per value).
template <typename T>
Moved<T> runTransition(const shardline::Mesh &mesh, const std::vector<int64_t> &shape,
                       const shardline::Layout &from, const shardline::Layout &to,
                       const std::vector<std::vector<T>> &sources) {
  const int64_t n = mesh.numRanks();
  int64_t outCount = numElements(localShape(to, mesh, shape));
  Moved<T> m{std::vector<std::vector<T>>(n, std::vector<T>(outCount)), std::vector<int64_t>(n, -1),
             std::vector<std::map<int64_t, int64_t>>(n)};
  ThreadHub hub(n);
  std::vector<std::string> errors(n);
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      ThreadComm comm(hub, r);
      Collectives collectives(comm, mesh);
      try {
        collectives.transition(
            0, shape, from, to,
            BufferView(const_cast<T *>(sources[r].data()), (int64_t)sources[r].size()),
            BufferView(m.parts[r].data(), outCount), 4);
      } catch (Stop &stop) {
        errors[r] = stop.error;
      }
      m.sent[r] = collectives.bytesSent();
      m.groups[r] = collectives.callsByGroupSize();
    });
  for (auto &t : threads)
    t.join();
  for (int64_t r = 0; r < n; ++r)
    EXPECT_EQ(errors[r], "") << "rank " << r;
  return m;
}
} // namespace

TEST(Collectives, TransitionsMatchTheTransferOnTheirGroups) {
  // Mesh tp2 x cp2 (tp major: tp groups {0, 2} and {1, 3}); every rank's
  // source part holds distinct values, pending sums included.
  using shardline::MovementKind;
  const shardline::Mesh mesh{{{"tp", 2}, {"cp", 2}}};
  const std::vector<int64_t> shape{4, 6, 8};
  struct Case {
    shardline::Layout from, to;
    MovementKind kind;
    std::map<int64_t, int64_t> groups;
  };
  const std::vector<Case> cases = {
      // Joined inside each row (dimension 1 is not the outermost).
      {lay({{}, {"tp"}, {}}), lay({{}, {}, {}}), MovementKind::AllGather, {{2, 1}}},
      {lay({{"cp"}, {}, {}}), lay({{}, {}, {}}), MovementKind::AllGather, {{2, 1}}},
      {lay({{}, {}, {}}, {"cp"}), lay({{}, {}, {"cp"}}), MovementKind::ReduceScatter, {{2, 1}}},
      {lay({{}, {}, {}}, {"tp", "cp"}),
       lay({{"tp", "cp"}, {}, {}}),
       MovementKind::ReduceScatter,
       {{4, 1}}},
      {lay({{}, {}, {}}), lay({{}, {"cp"}, {}}), MovementKind::Slice, {}},
      {lay({{}, {"tp"}, {}}), lay({{}, {}, {"tp"}}), MovementKind::AllToAll, {{2, 1}}},
      {lay({{"cp"}, {}, {}}), lay({{}, {}, {"cp"}}), MovementKind::AllToAll, {{2, 1}}},
      // Zigzag over the major axis and a reorder: the transfer, on the
      // group of the axes both layouts use.
      {lay({{}, {"tp", "cp"}, {}}, {}, 1),
       lay({{}, {"tp"}, {}}, {}, 1),
       MovementKind::General,
       {{4, 1}}},
      {lay({{}, {"cp"}, {}}), lay({{}, {"cp"}, {}}, {}, 1), MovementKind::General, {{2, 1}}},
  };
  const int64_t n = mesh.numRanks();
  for (const Case &c : cases) {
    SCOPED_TRACE(c.from.str() + " -> " + c.to.str());
    EXPECT_EQ(classifyMovement(c.from, c.to, mesh, shape).kind, c.kind);
    int64_t inCount = numElements(localShape(c.from, mesh, shape)),
            outCount = numElements(localShape(c.to, mesh, shape));
    std::vector<std::vector<float>> sources(n), want(n, std::vector<float>(outCount));
    std::vector<const float *> pointers;
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t i = 0; i < inCount; ++i)
        sources[r].push_back((float)(r * 1000 + i));
      pointers.push_back(sources[r].data());
    }
    for (int64_t r = 0; r < n; ++r)
      ASSERT_EQ(transfer(mesh, shape, c.from, pointers, c.to, r, want[r].data()).error, "");
    Moved<float> moved = runTransition(mesh, shape, c.from, c.to, sources);
    for (int64_t r = 0; r < n; ++r) {
      EXPECT_EQ(moved.parts[r], want[r]) << "rank " << r;
      EXPECT_EQ(moved.groups[r], c.groups) << "rank " << r;
    }
  }
}

TEST(Collectives, IntegerTransitionsMoveEveryValueExactly) {
  // Token ids, labels and expert indices change layout like activations. The
  // global tensor holds bit patterns that a trip through float arithmetic
  // would change (INT32_MIN is -0.0f, 0x7f800001 a signaling NaN, -1 a NaN,
  // 1 a denormal), then distinct values.
  const shardline::Mesh mesh{{{"cp", 2}, {"tp", 2}}};
  const std::vector<int64_t> shape{2, 8, 4};
  const int64_t n = mesh.numRanks(), total = numElements(shape);
  std::vector<int32_t> global = {INT32_MIN, 0x7f800001, -1, 1, INT32_MAX, 0x7fc00000, 0};
  for (int64_t k = (int64_t)global.size(); k < total; ++k)
    global.push_back((int32_t)(uint32_t)(k * 2654435761u));
  auto part = [&](const shardline::Layout &l, int64_t r) {
    std::vector<int32_t> out;
    for (int64_t offset : globalOffsets(mesh, shape, l, r))
      out.push_back(global[offset]);
    return out;
  };
  const std::vector<std::pair<shardline::Layout, shardline::Layout>> cases = {
      // all_gather: plain (within each row), and of zigzag over the major
      // axis (a transfer).
      {lay({{}, {}, {"tp"}}), lay({{}, {}, {}})},
      {lay({{}, {"cp"}, {}}), lay({{}, {}, {}})},
      {lay({{}, {"cp", "tp"}, {}}, {}, 1), lay({{}, {"cp"}, {}}, {}, 1)},
      {lay({{}, {"cp"}, {}}, {}, 1), lay({{}, {}, {}})},
      // slice
      {lay({{}, {}, {}}), lay({{}, {"cp"}, {"tp"}})},
      // all_to_all: sequence to batch, and sequence to the last dimension
      {lay({{}, {"cp"}, {}}), lay({{"cp"}, {}, {}})},
      {lay({{}, {"tp"}, {}}), lay({{}, {}, {"tp"}})},
      // reorder: zigzag <-> contiguous, alone and under sequence parallelism
      {lay({{}, {"cp"}, {}}, {}, 1), lay({{}, {"cp"}, {}})},
      {lay({{}, {"cp"}, {}}), lay({{}, {"cp"}, {}}, {}, 1)},
      {lay({{}, {"cp", "tp"}, {}}, {}, 1), lay({{}, {"cp", "tp"}, {}})},
  };
  for (const auto &[from, to] : cases) {
    SCOPED_TRACE(from.str() + " -> " + to.str());
    std::vector<std::vector<int32_t>> sources(n);
    std::vector<std::vector<float>> floats(n);
    for (int64_t r = 0; r < n; ++r) {
      sources[r] = part(from, r);
      for (int32_t v : sources[r])
        floats[r].push_back((float)v);
    }
    Moved<int32_t> moved = runTransition(mesh, shape, from, to, sources);
    for (int64_t r = 0; r < n; ++r)
      EXPECT_EQ(moved.parts[r], part(to, r)) << "rank " << r;
    // The same bytes and collectives as the f32 transition of the layouts.
    Moved<float> asFloats = runTransition(mesh, shape, from, to, floats);
    EXPECT_EQ(moved.sent, asFloats.sent);
    EXPECT_EQ(moved.groups, asFloats.groups);
  }
}

namespace {
/// Why the one rank of mesh tp=1 refuses to move 4 values of type T from
/// `from` to the whole layout; empty when it moves them.
template <typename T> std::string refusal(const shardline::Layout &from) {
  const shardline::Mesh mesh{{{"tp", 1}}};
  ThreadHub hub(1);
  ThreadComm comm(hub, 0);
  Collectives collectives(comm, mesh);
  std::vector<T> x(4, 1), y(4);
  try {
    collectives.transition(0, {4}, from, lay({{}}), BufferView(x.data(), 4),
                           BufferView(y.data(), 4), 4);
  } catch (Stop &stop) {
    return stop.error;
  }
  return "";
}
} // namespace

TEST(Collectives, AnIntegerPendingSumIsRefused) {
  EXPECT_EQ(refusal<int32_t>(lay({{}}, {"tp"})),
            "layout [[]], partial = [tp] is a pending sum of an i32 tensor; integers are never "
            "summed");
  EXPECT_EQ(refusal<float>(lay({{}}, {"tp"})), "");
}

TEST(Collectives, ATransitionOverAnAxisTheMeshLacksIsAnError) {
  EXPECT_EQ(refusal<float>(lay({{}}, {"dp"})),
            "layout [[]], partial = [dp] uses 'dp', which is not a mesh axis");
}

namespace {
/// Mesh tp2 x cp2 x ep2; x [2, 8] split over tp on its last dimension, and y,
/// its all-gather over tp. Both are outputs; x is an input, so its values come
/// from the seed.
LoadedPlan tpGatherPlan(plan::DType dtype) {
  fb::FlatBufferBuilder b;
  auto mesh = b.CreateVector({plan::CreateAxis(b, b.CreateString("tp"), 2),
                              plan::CreateAxis(b, b.CreateString("cp"), 2),
                              plan::CreateAxis(b, b.CreateString("ep"), 2)});
  auto layout = [&](std::vector<std::string> last) {
    return plan::CreateLayout(
        b, b.CreateVector({plan::CreateAxisList(b, b.CreateVectorOfStrings({})),
                           plan::CreateAxisList(b, b.CreateVectorOfStrings(last))}));
  };
  auto shape = b.CreateVector<int64_t>({2, 8});
  std::vector<fb::Offset<plan::Tensor>> tensors = {
      plan::CreateTensor(b, b.CreateString("x"), dtype, shape, layout({"tp"}), plan::Role::Input,
                         plan::Init::Normal, 0, 0, 0),
      plan::CreateTensor(b, b.CreateString("y"), dtype, shape, layout({}), plan::Role::Activation,
                         plan::Init::Normal, 0, 0, 64)};
  auto op = plan::CreateOp(b, b.CreateString("all_gather"), b.CreateVector<int32_t>({0}),
                           b.CreateVector<int32_t>({1}), b.CreateVectorOfStrings({"x"}),
                           b.CreateVectorOfStrings({"result"}));
  auto root =
      plan::CreatePlan(b, b.CreateString("m"), mesh, b.CreateVector(tensors), b.CreateVector({op}),
                       b.CreateVector<int32_t>({0}), b.CreateVector<int32_t>({0, 1}), 128, 0,
                       plan::CreateModelFacts(b, 1000));
  return finishPlan(b, root);
}
} // namespace

TEST(Executor, ATpGatherRunsOnItsGroupAlone) {
  // An i32 tensor (token ids) is gathered like a float one.
  for (auto [dtype, bytesPerValue] :
       {std::pair{plan::DType::F32, 4}, {plan::DType::BF16, 2}, {plan::DType::I32, 4}}) {
    LoadedPlan p = tpGatherPlan(dtype);
    const int64_t n = 8;
    ThreadHub hub(n);
    const RunResult first = runPlan(p, RunOptions{}, hub);
    ASSERT_EQ(first.error, "");
    ASSERT_EQ(first.outputs.size(), 2u);
    // The gathered tensor is the input, every element in place.
    EXPECT_EQ(first.outputs[1], first.outputs[0]);
    EXPECT_GT(*std::max_element(first.outputs[0].begin(), first.outputs[0].end()), 0.0f);
    // One collective, on a group of two, sending the partner 2 x 4 values,
    // counted at the plan's element size.
    EXPECT_EQ(first.collectivesByGroupSize, (std::map<int64_t, int64_t>{{2, 1}}));
    EXPECT_EQ(first.bytesSentPerRank, 8 * bytesPerValue);
    // Ranks r and r + 4 form a tp group (tp is the major axis). Past the
    // gather, every rank sends every other its figures in one all-gather
    // (the one op's bytes, the arena's two peaks and the mismatch flag: 4
    // counts of 8 bytes), and rank 0 its parts of x and y (8 + 16 values)
    // to assemble the outputs.
    for (int64_t s = 0; s < n; ++s)
      for (int64_t r = 0; r < n; ++r) {
        int64_t gather = (s ^ r) == 4 ? 8 * 4 : 0, figures = s != r ? 4 * 8 : 0,
                outputs = r == 0 && s != 0 ? 24 * 4 : 0;
        EXPECT_EQ(hub.bytesCarried(s, r), gather + figures + outputs) << s << " -> " << r;
      }
  }
}

TEST(ThreadComm, AbortReleasesEveryWaitingRank) {
  ThreadHub hub(3);
  std::vector<int> results(3, -1);
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < 3; ++r)
    threads.emplace_back([&, r] {
      ThreadComm comm(hub, r);
      if (r == 1) {
        comm.abort("rank 1 failed");
        return;
      }
      results[r] = comm.barrier() ? 1 : 0;
    });
  for (auto &t : threads)
    t.join();
  EXPECT_EQ(results[0], 0);
  EXPECT_EQ(results[2], 0);
  EXPECT_EQ(hub.error(), "rank 1 failed");
}

TEST(Executor, AStalledRankEndsTheRunWithAnErrorNamingIt) {
  // Rank 1 of tp=2 stalls before its first forward pass (the test hook);
  // rank 0 runs its silu and waits for rank 1 at the barrier after the
  // step. runPlan returns the error within the timeout instead of hanging.
  ASSERT_EQ(setenv("SHARDLINE_FAULT", "stall:1:0", 1), 0);
  RunOptions options;
  options.timeoutSeconds = 0.25;
  auto start = std::chrono::steady_clock::now();
  RunResult r = runPlan(siluPlan(0, 64, 128), options);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  unsetenv("SHARDLINE_FAULT");
  EXPECT_EQ(r.error, "barrier: rank 0 waited 0.25 s for rank 1 (the call is on ranks 0, 1); in no "
                     "call: rank 1 (stalled, ended, or busy for longer than the timeout)");
  EXPECT_TRUE(r.rankLost);
  EXPECT_LT(seconds, 10);
  // The same plan without the fault runs, and a bad timeout or hook is refused.
  r = runPlan(siluPlan(0, 64, 128), options);
  EXPECT_EQ(r.error, "");
  EXPECT_FALSE(r.rankLost);
  options.timeoutSeconds = 0;
  EXPECT_EQ(runPlan(siluPlan(0, 64, 128), options).error,
            "the timeout must be a positive number of seconds, not 0");
  ASSERT_EQ(setenv("SHARDLINE_FAULT", "stall:one:0", 1), 0);
  r = runPlan(siluPlan(0, 64, 128), RunOptions{});
  unsetenv("SHARDLINE_FAULT");
  EXPECT_EQ(r.error, "SHARDLINE_FAULT (a test hook) must be KIND:RANK:STEP with KIND kill, stall, "
                     "bytes, value or drop, got 'stall:one:0'");
  EXPECT_FALSE(r.rankLost);
}

namespace {
/// Mesh cp=2 x tp=2; inputs weights (f32) and indices (i32) [1, 8, 2], the
/// sequence split over cp and copied over tp, whose values the seed draws
/// from [0, 4): four experts, and weights with many ties. One
/// moe_capacity_slots op (groups of 1 x 4 positions, one per rank, two rows
/// per expert) -> slots; indices and slots are the outputs.
LoadedPlan capacitySlotsPlan(const std::string &policy) {
  fb::FlatBufferBuilder b;
  auto mesh = b.CreateVector(
      {plan::CreateAxis(b, b.CreateString("cp"), 2), plan::CreateAxis(b, b.CreateString("tp"), 2)});
  auto layout = [&] {
    return plan::CreateLayout(
        b, b.CreateVector({plan::CreateAxisList(b, b.CreateVectorOfStrings({})),
                           plan::CreateAxisList(b, b.CreateVectorOfStrings({"cp"})),
                           plan::CreateAxisList(b, b.CreateVectorOfStrings({}))}));
  };
  auto tensor = [&](const char *name, plan::DType dtype, plan::Role role, int64_t offset) {
    return plan::CreateTensor(b, b.CreateString(name), dtype, b.CreateVector<int64_t>({1, 8, 2}),
                              layout(), role, plan::Init::Normal, 0, 0, offset);
  };
  std::vector<fb::Offset<plan::Tensor>> tensors = {
      tensor("weights", plan::DType::F32, plan::Role::Input, 0),
      tensor("indices", plan::DType::I32, plan::Role::Input, 64),
      tensor("slots", plan::DType::I32, plan::Role::Activation, 128)};
  std::vector<fb::Offset<plan::Attr>> attrs = {
      plan::CreateAttr(b, b.CreateString("experts"), b.CreateVector<int64_t>({4})),
      plan::CreateAttr(b, b.CreateString("capacity"), b.CreateVector<int64_t>({2})),
      plan::CreateAttr(b, b.CreateString("group"), b.CreateVector<int64_t>({1, 4})),
      plan::CreateAttr(b, b.CreateString("drop_policy"), 0, 0, b.CreateVectorOfStrings({policy}))};
  auto op =
      plan::CreateOp(b, b.CreateString("moe_capacity_slots"), b.CreateVector<int32_t>({0, 1}),
                     b.CreateVector<int32_t>({2}), b.CreateVectorOfStrings({"weights", "indices"}),
                     b.CreateVectorOfStrings({"slots"}), b.CreateVector(attrs));
  auto root =
      plan::CreatePlan(b, b.CreateString("m"), mesh, b.CreateVector(tensors), b.CreateVector({op}),
                       b.CreateVector<int32_t>({0, 1}), b.CreateVector<int32_t>({1, 2}), 192, 0,
                       plan::CreateModelFacts(b, 4));
  return finishPlan(b, root);
}

/// Mesh tp=2; logits [2, 4, 4] (input, sequence split over tp) ->
/// router_topk k=2 -> weights, indices [2, 4, 2]; all three are outputs.
LoadedPlan routerPlan() {
  fb::FlatBufferBuilder b;
  auto mesh = b.CreateVector({plan::CreateAxis(b, b.CreateString("tp"), 2)});
  auto none = [&] { return plan::CreateAxisList(b, b.CreateVectorOfStrings({})); };
  auto tp = [&] { return plan::CreateAxisList(b, b.CreateVectorOfStrings({"tp"})); };
  auto layout = [&] { return plan::CreateLayout(b, b.CreateVector({none(), tp(), none()})); };
  auto tensor = [&](const char *name, plan::DType dtype, std::vector<int64_t> shape,
                    plan::Role role, int64_t offset) {
    return plan::CreateTensor(b, b.CreateString(name), dtype, b.CreateVector(shape), layout(), role,
                              plan::Init::Normal, 0, 0, offset);
  };
  std::vector<fb::Offset<plan::Tensor>> tensors = {
      tensor("logits", plan::DType::F32, {2, 4, 4}, plan::Role::Input, 0),
      tensor("weights", plan::DType::F32, {2, 4, 2}, plan::Role::Activation, 64),
      tensor("indices", plan::DType::I32, {2, 4, 2}, plan::Role::Activation, 128)};
  auto k = plan::CreateAttr(b, b.CreateString("k"), b.CreateVector<int64_t>({2}));
  auto op = plan::CreateOp(b, b.CreateString("router_topk"), b.CreateVector<int32_t>({0}),
                           b.CreateVector<int32_t>({1, 2}), b.CreateVectorOfStrings({"logits"}),
                           b.CreateVectorOfStrings({"weights", "indices"}), b.CreateVector({k}));
  auto root =
      plan::CreatePlan(b, b.CreateString("m"), mesh, b.CreateVector(tensors), b.CreateVector({op}),
                       b.CreateVector<int32_t>({0}), b.CreateVector<int32_t>({0, 1, 2}), 192, 0,
                       plan::CreateModelFacts(b, 97));
  return finishPlan(b, root);
}
} // namespace

/// The expert load a run returns: each expert's kept and dropped choices
/// per rank, counted once over the tp copies, equal in sum to what the
/// output slots say and to the single-device run's.
TEST(Executor, ReturnsTheExpertLoadOfEveryRank) {
  for (const char *policy : {"probs", "position"}) {
    LoadedPlan p = capacitySlotsPlan(policy);
    RunOptions options;
    options.seed = 9;
    const RunResult run = runPlan(p, options);
    ASSERT_EQ(run.error, "") << policy;
    options.singleDevice = true;
    const RunResult single = runPlan(p, options);
    ASSERT_EQ(single.error, "") << policy;
    EXPECT_EQ(run.outputs, single.outputs) << policy;
    ASSERT_EQ(run.expertLoad.size(), 1u);
    ASSERT_EQ(single.expertLoad.size(), 1u);
    const LayerLoad &load = run.expertLoad[0], &whole = single.expertLoad[0];
    EXPECT_TRUE(load.capacity);
    EXPECT_EQ(load.block, -1);
    ASSERT_EQ(load.kept.size(), 4u);
    ASSERT_EQ(whole.kept.size(), 4u);
    std::vector<int64_t> kept(4, 0), dropped(4, 0);
    const std::vector<float> &idx = run.outputs[0], &slots = run.outputs[1];
    for (size_t i = 0; i < idx.size(); ++i)
      ++(slots[i] >= 0 ? kept : dropped)[(size_t)idx[i]];
    for (size_t e = 0; e < 4; ++e) {
      ASSERT_EQ(load.kept[e].size(), 4u);
      // Ranks 1 and 3 (tp coordinate 1) hold copies of ranks 0's and 2's
      // tokens and count nothing.
      EXPECT_EQ(load.kept[e][1] + load.dropped[e][1] + load.kept[e][3] + load.dropped[e][3], 0);
      EXPECT_EQ(load.kept[e][0] + load.kept[e][2], kept[e]) << policy << " expert " << e;
      EXPECT_EQ(load.dropped[e][0] + load.dropped[e][2], dropped[e]) << policy << " expert " << e;
      EXPECT_EQ(whole.kept[e], std::vector<int64_t>{kept[e]});
      EXPECT_EQ(whole.dropped[e], std::vector<int64_t>{dropped[e]});
    }
    EXPECT_EQ(load.total(load.kept) + load.total(load.dropped), 16);
    EXPECT_GT(load.total(load.dropped), 0) << "the seed must make drops";
  }
}

TEST(Executor, RoutingIsRecordedWholeAndReplayedOnOneDevice) {
  LoadedPlan plan = routerPlan();
  Routing routing;
  RunOptions options;
  options.routing = &routing;
  options.routingUse = RoutingUse::Record;
  RunResult run = runPlan(plan, options);
  ASSERT_EQ(run.error, "");
  ASSERT_EQ(run.ranks, 2);
  ASSERT_EQ(routing.choices.size(), 1u);
  ASSERT_EQ(routing.choices[0].size(), 1u);
  const std::vector<int32_t> recorded = routing.choices[0][0];
  ASSERT_EQ(recorded.size(), 16u);
  for (size_t i = 0; i < recorded.size(); ++i)
    EXPECT_EQ(recorded[i], (int32_t)run.outputs[2][i]) << i;

  // Tokens 0 and 5 get another pair of experts (one of them may stay: the
  // set still differs); token 3 its own two in the other order, which is no
  // different choice.
  std::vector<int32_t> altered = recorded;
  for (int t : {0, 5}) {
    bool hasLow = altered[2 * t] < 2 || altered[2 * t + 1] < 2;
    altered[2 * t] = hasLow ? 3 : 0;
    altered[2 * t + 1] = hasLow ? 2 : 1;
  }
  std::swap(altered[6], altered[7]);
  routing.choices[0][0] = altered;
  options.singleDevice = true;
  options.routingUse = RoutingUse::Replay;
  RunResult ref = runPlan(plan, options);
  ASSERT_EQ(ref.error, "");
  for (size_t i = 0; i < altered.size(); ++i)
    EXPECT_EQ((int32_t)ref.outputs[2][i], altered[i]) << i;
  std::vector<float> weights(16);
  cpu::router_weights(ref.outputs[0].data(), 8, 4, 2, altered.data(), weights.data());
  for (size_t i = 0; i < weights.size(); ++i)
    EXPECT_EQ(ref.outputs[1][i], weights[i]) << i;
  EXPECT_EQ(routing.tokens, 8);
  EXPECT_EQ(routing.differing, 2);

  // A replay without a record for the step is an error, not the own choice.
  routing.choices.clear();
  RunResult missing = runPlan(plan, options);
  EXPECT_NE(missing.error.find("no recorded choices for op #0 (sl.router_topk) at step 1"), std::string::npos)
      << missing.error;
}
