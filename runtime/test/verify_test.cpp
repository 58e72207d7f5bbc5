//===- verify_test.cpp - a plan that is well formed but not runnable -------===//
//
// A small valid plan (embedding, rms_norm, a tensor-parallel linear, rope,
// attention, a gather, the LM head and the loss on a mesh tp=2), written as
// the compiler would, then changed one field at a time: each change is a
// plan with a correct content hash that the loader or the verifier must
// refuse with a message naming the op and the field, before anything runs.
//
//===----------------------------------------------------------------------===//

#include "exec/executor.h"
#include "step_rig.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

using namespace shardline;
using namespace shardline::rt;
namespace fb = flatbuffers;
namespace plan = shardline::plan;

namespace {

struct TensorSpec {
  std::string name;
  plan::DType dtype;
  std::vector<int64_t> shape;
  std::vector<std::vector<std::string>> split; ///< axes per dimension; empty: replicated
  plan::Role role;
  int64_t arenaOffset = -1;
  std::vector<std::string> partial = {}; ///< pending-sum axes
};

struct AttrSpecT {
  std::string name;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strings;
};

struct OpSpec {
  std::string kind;
  std::vector<int32_t> operands;
  std::vector<std::string> operandNames;
  std::vector<int32_t> results;
  std::vector<std::string> resultNames;
  std::vector<AttrSpecT> attrs;
};

struct PlanSpec {
  std::vector<std::pair<std::string, int64_t>> mesh;
  std::vector<TensorSpec> tensors;
  std::vector<OpSpec> ops;
  std::vector<int32_t> inputs, outputs;
  int64_t arenaBytes = 0, vocab = 0;
  /// Lay the arena out anew from the shapes and layouts (every activation
  /// in bytes of its own), as a change of a shape or a layout would.
  bool layOutArena = true;

  TensorSpec &tensor(const std::string &name) {
    for (TensorSpec &t : tensors)
      if (t.name == name)
        return t;
    throw std::runtime_error("no tensor " + name);
  }
  AttrSpecT &attr(size_t op, const std::string &name) {
    for (AttrSpecT &a : ops[op].attrs)
      if (a.name == name)
        return a;
    throw std::runtime_error("no attribute " + name);
  }
};

enum : int32_t { Ids, Table, H, NormW, N, W1, A, R, Att, G, Lm, Logits, Labels, Loss };

/// The valid plan; every activation has arena bytes of its own, so the
/// arena is every activation side by side (as build() lays it out again).
PlanSpec validPlan() {
  using R_ = plan::Role;
  const auto f32 = plan::DType::F32, i32 = plan::DType::I32;
  PlanSpec p;
  p.mesh = {{"tp", 2}};
  std::vector<std::vector<std::string>> rep3(3), tp3 = {{}, {}, {"tp"}};
  p.tensors = {{"ids", i32, {2, 4}, {}, R_::Input, 0},
               {"table", f32, {16, 8}, {}, R_::Weight},
               {"h", f32, {2, 4, 8}, rep3, R_::Activation, 64},
               {"norm_w", f32, {8}, {}, R_::Weight},
               {"n", f32, {2, 4, 8}, rep3, R_::Activation, 320},
               {"w1", f32, {8, 8}, {{}, {"tp"}}, R_::Weight},
               {"a", f32, {2, 4, 8}, tp3, R_::Activation, 576},
               {"r", f32, {2, 4, 8}, tp3, R_::Activation, 704},
               {"att", f32, {2, 4, 8}, tp3, R_::Activation, 832},
               {"g", f32, {2, 4, 8}, rep3, R_::Activation, 960},
               {"lm", f32, {8, 16}, {}, R_::Weight},
               {"logits", f32, {2, 4, 16}, rep3, R_::Activation, 1216},
               {"labels", i32, {2, 4}, {}, R_::Input, 1728},
               {"loss", f32, {1}, {}, R_::Activation, 1792}};
  p.ops = {
      {"embedding", {Ids, Table}, {"ids", "table"}, {H}, {"result"}, {}},
      {"rms_norm", {H, NormW}, {"x", "weight"}, {N}, {"result"}, {{"eps", {}, {1e-5}, {}}}},
      {"linear", {N, W1}, {"x", "weight"}, {A}, {"result"}, {}},
      {"rope", {A}, {"x"}, {R}, {"result"}, {{"head_dim", {2}, {}, {}}, {"theta", {}, {1e4}, {}}}},
      {"attention",
       {R, R, R},
       {"q", "k", "v"},
       {Att},
       {"result"},
       {{"heads", {4}, {}, {}}, {"causal", {1}, {}, {}}}},
      {"all_gather", {Att}, {"x"}, {G}, {"result"}, {}},
      {"lm_head", {G, Lm}, {"x", "weight"}, {Logits}, {"logits"}, {}},
      {"cross_entropy", {Logits, Labels}, {"logits", "labels"}, {Loss}, {"loss"}, {}}};
  p.ops.back().attrs = {{"vocab_axes", {}, {}, {}}};
  p.inputs = {Ids, Labels};
  p.outputs = {Loss};
  p.arenaBytes = 1856;
  p.vocab = 16;
  return p;
}

/// The plan file of `p`: the payload as the compiler writes it, wrapped
/// with its content hash.
/// The FlatBuffers payload of `p` (build wraps it in the container).
std::vector<uint8_t> payload(PlanSpec p) {
  if (p.layOutArena) {
    p.arenaBytes = 0;
    for (TensorSpec &t : p.tensors) {
      if (t.arenaOffset < 0)
        continue;
      int64_t elements = 1;
      for (size_t d = 0; d < t.shape.size(); ++d) {
        int64_t parts = 1;
        for (const std::string &axis : d < t.split.size() ? t.split[d] : std::vector<std::string>{})
          for (const auto &[name, size] : p.mesh)
            parts *= name == axis ? size : 1;
        elements *= t.shape[d] / std::max<int64_t>(parts, 1);
      }
      t.arenaOffset = p.arenaBytes;
      p.arenaBytes += arenaSlotBytes(elements * 4);
    }
  }
  fb::FlatBufferBuilder b;
  std::vector<fb::Offset<plan::Axis>> axes;
  for (const auto &[name, size] : p.mesh)
    axes.push_back(plan::CreateAxis(b, b.CreateString(name), size));
  std::vector<fb::Offset<plan::Tensor>> tensors;
  for (const TensorSpec &t : p.tensors) {
    fb::Offset<plan::Layout> layout;
    if (!t.split.empty()) {
      std::vector<fb::Offset<plan::AxisList>> dims;
      for (const auto &list : t.split)
        dims.push_back(plan::CreateAxisList(b, b.CreateVectorOfStrings(list)));
      layout = plan::CreateLayout(b, b.CreateVector(dims), b.CreateVectorOfStrings(t.partial));
    }
    tensors.push_back(plan::CreateTensor(b, b.CreateString(t.name), t.dtype,
                                         b.CreateVector(t.shape), layout, t.role,
                                         plan::Init::Normal, 0.02, 0, t.arenaOffset));
  }
  std::vector<fb::Offset<plan::Op>> ops;
  for (const OpSpec &op : p.ops) {
    std::vector<fb::Offset<plan::Attr>> attrs;
    for (const AttrSpecT &a : op.attrs)
      attrs.push_back(plan::CreateAttr(b, b.CreateString(a.name), b.CreateVector(a.ints),
                                       b.CreateVector(a.floats),
                                       b.CreateVectorOfStrings(a.strings)));
    ops.push_back(plan::CreateOp(b, b.CreateString(op.kind), b.CreateVector(op.operands),
                                 b.CreateVector(op.results),
                                 b.CreateVectorOfStrings(op.operandNames),
                                 b.CreateVectorOfStrings(op.resultNames), b.CreateVector(attrs)));
  }
  auto root =
      plan::CreatePlan(b, b.CreateString("tiny"), b.CreateVector(axes), b.CreateVector(tensors),
                       b.CreateVector(ops), b.CreateVector(p.inputs), b.CreateVector(p.outputs),
                       p.arenaBytes, 0, plan::CreateModelFacts(b, p.vocab));
  plan::FinishPlanBuffer(b, root);
  return {b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize()};
}

std::vector<uint8_t> build(const PlanSpec &p) {
  std::vector<uint8_t> bytes = payload(p);
  return wrapPlan(bytes.data(), bytes.size());
}

/// Why the loader refuses `p`.
std::string loadError(const PlanSpec &p) {
  std::string error;
  EXPECT_FALSE(loadPlan(build(p), error).has_value());
  return error;
}

/// Why the verifier refuses `p`, which loads; runPlan says the same before
/// any rank runs a step.
std::string verifyError(const PlanSpec &p) {
  std::string error;
  std::optional<LoadedPlan> loaded = loadPlan(build(p), error);
  EXPECT_TRUE(loaded) << error;
  if (!loaded)
    return error;
  std::string why = checkProgram(*loaded);
  EXPECT_EQ(runPlan(*loaded, RunOptions{}).error, why);
  return why;
}

/// The run of `p`, which loads and verifies, with `options`.
RunResult runValid(const PlanSpec &p, const RunOptions &options = {}) {
  std::string error;
  std::optional<LoadedPlan> loaded = loadPlan(build(p), error);
  EXPECT_TRUE(loaded) << error;
  if (!loaded)
    return RunResult{};
  EXPECT_EQ(checkProgram(*loaded), "");
  return runPlan(*loaded, options);
}

} // namespace

TEST(Verify, TheValidPlanRuns) {
  RunResult r = runValid(validPlan());
  ASSERT_EQ(r.error, "");
  ASSERT_EQ(r.outputs.size(), 1u);
  EXPECT_TRUE(std::isfinite(r.outputs[0][0]));
  RunOptions single;
  single.singleDevice = true;
  RunResult ref = runValid(validPlan(), single);
  ASSERT_EQ(ref.error, "");
  EXPECT_NEAR(r.outputs[0][0], ref.outputs[0][0], 1e-5);
}

TEST(Verify, ShapeDimensions) {
  PlanSpec p = validPlan();
  p.tensor("norm_w").shape = {6};
  EXPECT_EQ(verifyError(p),
            "op #1 (sl.rms_norm 'n') at ?: weight's last dimension is 6, x's last dimension is 8");
  p = validPlan();
  p.tensor("w1").shape = {6, 8};
  EXPECT_EQ(verifyError(p), "op #2 (sl.linear 'a') at ?: weight's dimension 0 is 6, x's last "
                            "dimension is 8");
  p = validPlan();
  p.tensor("labels").shape = {2, 2};
  EXPECT_EQ(verifyError(p), "op #7 (sl.cross_entropy 'loss') at ?: labels's last dimension is 2, "
                            "logits's dimension 1 is 4");
  p = validPlan();
  p.tensor("h").shape = {8, 8};
  p.tensor("h").split = {{}, {}};
  EXPECT_EQ(verifyError(p),
            "op #0 (sl.embedding 'h') at ?: result has rank 2, the kernel needs rank 3");
  p = validPlan();
  p.tensor("norm_w").shape = {0};
  EXPECT_EQ(loadError(p), "inconsistent plan: tensor 'norm_w' has a dimension of size 0");
  p = validPlan();
  p.tensor("table").shape = {int64_t(1) << 32, int64_t(1) << 32};
  EXPECT_EQ(loadError(p),
            "inconsistent plan: tensor 'table' has more than 9007199254740992 elements");
}

TEST(Verify, Dtypes) {
  PlanSpec p = validPlan();
  p.tensor("ids").dtype = plan::DType::F32;
  EXPECT_EQ(verifyError(p), "op #0 (sl.embedding 'h') at ?: ids is f32, the kernel reads i32");
  p = validPlan();
  p.tensor("n").dtype = plan::DType::I32;
  EXPECT_EQ(verifyError(p),
            "op #1 (sl.rms_norm 'n') at ?: result is i32, the kernel reads a float type");
  p = validPlan();
  p.tensor("n").dtype = (plan::DType)9;
  EXPECT_EQ(loadError(p), "inconsistent plan: tensor 'n' has unknown dtype 9");
}

namespace {
/// Token ids split over tp, all-gathered, then looked up: the ids and their
/// gather are outputs.
PlanSpec idsGatherPlan() {
  using R_ = plan::Role;
  const auto f32 = plan::DType::F32, i32 = plan::DType::I32;
  PlanSpec p;
  p.mesh = {{"tp", 2}};
  p.tensors = {{"ids", i32, {2, 4}, {{}, {"tp"}}, R_::Input, 0},
               {"g", i32, {2, 4}, {{}, {}}, R_::Activation, 0},
               {"table", f32, {16, 8}, {}, R_::Weight},
               {"h", f32, {2, 4, 8}, {{}, {}, {}}, R_::Activation, 0}};
  p.ops = {{"all_gather", {0}, {"x"}, {1}, {"result"}, {}},
           {"embedding", {1, 2}, {"ids", "table"}, {3}, {"result"}, {}}};
  p.inputs = {0};
  p.outputs = {0, 1, 3};
  p.vocab = 16;
  return p;
}
} // namespace

TEST(Verify, IntegerTransitions) {
  // A layout transition moves i32 values: the gathered ids equal the ids.
  RunResult r = runValid(idsGatherPlan());
  ASSERT_EQ(r.error, "");
  ASSERT_EQ(r.outputs.size(), 3u);
  EXPECT_EQ(r.outputs[1], r.outputs[0]);
  EXPECT_EQ(r.outputTypes[1], DType::I32);
  EXPECT_EQ(r.bytesSentPerRank, 4 * 4);
  // It keeps the element type.
  PlanSpec p = idsGatherPlan();
  p.tensor("g").dtype = plan::DType::F32;
  EXPECT_EQ(verifyError(p), "op #0 (sl.all_gather 'g') at ?: x is i32, the result f32: a layout "
                            "transition keeps the element type");
  // Integers are never summed: a sum takes floats, and the loader refuses an
  // i32 pending sum.
  p = idsGatherPlan();
  p.ops[0].kind = "reduce_scatter";
  EXPECT_EQ(verifyError(p),
            "op #0 (sl.reduce_scatter 'g') at ?: x is i32, the kernel reads a float type");
  p = idsGatherPlan();
  p.ops[0].kind = "all_reduce";
  p.tensor("ids").split = {{}, {}};
  p.tensor("ids").partial = {"tp"};
  EXPECT_EQ(loadError(p), "inconsistent plan: tensor 'ids' is an i32 pending sum; integer "
                          "tensors carry no pending sums");
}

TEST(Verify, Attributes) {
  PlanSpec p = validPlan();
  p.attr(1, "eps").floats = {-1.0};
  EXPECT_EQ(verifyError(p), "op #1 (sl.rms_norm 'n') at ?: attribute 'eps' is negative");
  p = validPlan();
  p.attr(3, "theta").floats = {std::numeric_limits<double>::quiet_NaN()};
  EXPECT_EQ(verifyError(p), "op #3 (sl.rope 'r') at ?: attribute 'theta' is nan");
  p = validPlan();
  p.attr(3, "head_dim").ints = {3};
  EXPECT_EQ(verifyError(p), "op #3 (sl.rope 'r') at ?: attribute 'head_dim' is odd");
  p = validPlan();
  p.attr(3, "head_dim").ints = {0};
  EXPECT_EQ(verifyError(p), "op #3 (sl.rope 'r') at ?: attribute 'head_dim' is 0, not in [2, 4]");
  p = validPlan();
  p.attr(4, "heads").ints = {3};
  EXPECT_EQ(verifyError(p),
            "op #4 (sl.attention 'att') at ?: attribute 'heads' (3) does not divide q's width 8");
  p = validPlan();
  p.attr(4, "heads").ints = {0};
  EXPECT_EQ(verifyError(p),
            "op #4 (sl.attention 'att') at ?: attribute 'heads' is 0, not in [1, 8]");
  p = validPlan();
  p.attr(4, "heads").ints = {1};
  EXPECT_EQ(verifyError(p), "op #4 (sl.attention 'att') at ?: q's last dimension is 4 per rank "
                            "and k's last dimension is 4 per rank are not whole heads of 8");
}

// Local attention takes attention's contract and adds its window.
TEST(Verify, LocalAttention) {
  PlanSpec p = validPlan();
  p.ops[4].kind = "local_attention";
  p.ops[4].attrs = {{"heads", {4}, {}, {}}, {"window", {2}, {}, {}}};
  EXPECT_EQ(verifyError(p), "");
  p.attr(4, "window").ints = {0};
  EXPECT_EQ(verifyError(p),
            "op #4 (sl.local_attention 'att') at ?: attribute 'window' is 0, not in [1, 4]");
  p.attr(4, "window").ints = {2};
  p.attr(4, "heads").ints = {3};
  EXPECT_EQ(verifyError(p), "op #4 (sl.local_attention 'att') at ?: attribute 'heads' (3) does "
                            "not divide q's width 8");
}

TEST(Verify, MeshAxesInAttributes) {
  PlanSpec p = validPlan();
  p.attr(7, "vocab_axes").strings = {"cp"};
  EXPECT_EQ(verifyError(p), "op #7 (sl.cross_entropy 'loss') at ?: attribute 'vocab_axes' names "
                            "'cp', which is not an axis of the mesh");
  p.attr(7, "vocab_axes").strings = {"tp", "tp"};
  EXPECT_EQ(verifyError(p), "op #7 (sl.cross_entropy 'loss') at ?: attribute 'vocab_axes' names "
                            "mesh axis 'tp' twice");
}

TEST(Verify, ArenaOffsets) {
  PlanSpec p = validPlan();
  p.layOutArena = false;
  p.tensor("loss").arenaOffset = 1856;
  EXPECT_EQ(loadError(p), "inconsistent plan: tensor 'loss' at arena offset 1856 (4 bytes) "
                          "exceeds the arena of 1856 bytes");
  p = validPlan();
  p.layOutArena = false;
  p.tensor("loss").arenaOffset = std::numeric_limits<int64_t>::max() - 3;
  EXPECT_EQ(loadError(p), "inconsistent plan: tensor 'loss' at arena offset 9223372036854775804 (4 "
                          "bytes) exceeds the arena of 1856 bytes");
  // Two values live at once in the same bytes: the executor refuses to
  // place the second.
  p = validPlan();
  p.layOutArena = false;
  p.tensor("n").arenaOffset = 64;
  std::string error;
  std::optional<LoadedPlan> loaded = loadPlan(build(p), error);
  ASSERT_TRUE(loaded) << error;
  EXPECT_EQ(
      runPlan(*loaded, RunOptions{}).error,
      "op #1 (sl.rms_norm) at ?: the plan places 'n' at arena bytes [64, 320) over 'h' at [64, "
      "320), which is still live");
}

TEST(Verify, Layouts) {
  PlanSpec p = validPlan();
  p.tensor("w1").split = {{}, {"cp"}};
  EXPECT_EQ(loadError(p), "inconsistent plan: tensor 'w1' is split over unknown mesh axis 'cp'");
  p = validPlan();
  p.tensor("w1").split = {{"tp"}, {"tp"}};
  EXPECT_EQ(loadError(p), "inconsistent plan: tensor 'w1' has an invalid layout: mesh axis 'tp' "
                          "is used twice (again in dimension 1)");
  p = validPlan();
  p.tensor("table").shape = {15, 8};
  p.tensor("table").split = {{"tp"}, {}};
  EXPECT_EQ(loadError(p), "inconsistent plan: tensor 'table' has an invalid layout: dimension 0 "
                          "of size 15 is not divisible by 2 (the size of [tp])");
  // Split where the kernel needs the whole dimension: rms_norm's weight is
  // whole, its x split.
  p = validPlan();
  p.tensor("h").split = {{}, {}, {"tp"}};
  p.tensor("n").split = {{}, {}, {"tp"}};
  EXPECT_EQ(verifyError(p), "op #0 (sl.embedding 'h') at ?: result's last dimension is 4 per "
                            "rank, table's last dimension is 8");
}

TEST(Verify, MeshSizes) {
  PlanSpec p = validPlan();
  p.mesh = {{"tp", 0}};
  EXPECT_EQ(loadError(p), "inconsistent plan: mesh axis 'tp' has size 0");
  p.mesh = {{"tp", 2}, {"dp", int64_t(1) << 40}};
  EXPECT_EQ(loadError(p), "inconsistent plan: the mesh [tp=2, dp=1099511627776] has more than "
                          "1048576 ranks");
  p.mesh = {{"tp", 2}, {"dp", 2}};
  std::string error;
  std::optional<LoadedPlan> loaded = loadPlan(build(p), error);
  ASSERT_TRUE(loaded) << error;
  ThreadHub hub(2);
  EXPECT_EQ(runPlan(*loaded, RunOptions{}, hub).error, "the plan is for 4 ranks, the run has 2");
}

TEST(Verify, OperandsAndResults) {
  PlanSpec p = validPlan();
  p.ops[1].operands = {A, NormW};
  EXPECT_EQ(loadError(p), "inconsistent plan: op #1 (rms_norm) reads tensor 'a', which no input, "
                          "weight or earlier op defines");
  p = validPlan();
  p.ops[2].results = {N};
  EXPECT_EQ(loadError(p),
            "inconsistent plan: op #2 (linear) defines tensor 'n', which is already defined");
  p = validPlan();
  p.outputs = {Att, Loss + 1};
  EXPECT_EQ(loadError(p), "inconsistent plan: the outputs refers to tensor 14 of 14");
  p = validPlan();
  p.ops[1].operandNames = {"x", "wieght"};
  EXPECT_EQ(verifyError(p), "op #1 (sl.rms_norm) at ? has no operand 'weight'");
}

TEST(Verify, TokenIdsAreCheckedWhenTheRunMakesThem) {
  // The plan's vocabulary is larger than the embedding table: the tokens the
  // run draws reach past the table's rows.
  PlanSpec p = validPlan();
  p.vocab = 1 << 20;
  std::string error;
  std::optional<LoadedPlan> loaded = loadPlan(build(p), error);
  ASSERT_TRUE(loaded) << error;
  EXPECT_EQ(checkProgram(*loaded), "");
  EXPECT_EQ(
      runPlan(*loaded, RunOptions{}).error,
      "op #0 (sl.embedding) at ?: 'ids' holds a value outside [0, 16), the embedding table's rows");
}

// What the plan fuzzer found, each a crash or a sanitizer report before.
TEST(Verify, FuzzerFindings) {
  // A float stored at an odd offset into the arena.
  PlanSpec p = validPlan();
  p.layOutArena = false;
  p.tensor("n").arenaOffset = 321;
  EXPECT_EQ(loadError(p), "inconsistent plan: tensor 'n' at arena offset 321 is not aligned to "
                          "its 4-byte elements");
  // Tokens drawn from a vocabulary past the i32 range.
  p = validPlan();
  p.vocab = int64_t(1) << 40;
  EXPECT_EQ(loadError(p),
            "inconsistent plan: the vocabulary of 1099511627776 entries does not fit the i32 "
            "tokens");
  // An integer weight, generated from a float distribution.
  p = validPlan();
  p.tensor("norm_w").dtype = plan::DType::I32;
  EXPECT_EQ(loadError(p),
            "inconsistent plan: tensor 'norm_w' is an i32 weight; weights are float tensors");
  // An 8-byte vector whose data is not 8-byte aligned: the schema verifier
  // checks only that its length field is 4-byte aligned and in bounds. The
  // first tensor's shape offset moved 4 bytes on makes its old first element
  // (low half: 2) the length field, and its data start 4 bytes off.
  std::vector<uint8_t> bytes = payload(validPlan());
  const auto *shapeField =
      reinterpret_cast<const fb::Table *>(plan::GetPlan(bytes.data())->tensors()->Get(0))
          ->GetAddressOf(plan::Tensor::VT_SHAPE);
  ASSERT_NE(shapeField, nullptr);
  uint32_t offset;
  std::memcpy(&offset, shapeField, 4);
  offset += 4;
  std::memcpy(bytes.data() + (shapeField - bytes.data()), &offset, 4);
  std::string error;
  EXPECT_FALSE(loadPlan(wrapPlan(bytes.data(), bytes.size()), error).has_value());
  EXPECT_EQ(error, "inconsistent plan: the shape of tensor 'ids' is not 8-byte aligned");
  // A halo of a rank-1 x: its contract read x's dimension 1 to bound the
  // width before it had refused the rank (a heap read past the shape, which
  // the sanitizer builds of scripts/sanitize.sh and scripts/fuzz.sh catch).
  for (const char *kind : {"halo", "halo_add"}) {
    SCOPED_TRACE(kind);
    std::vector<std::vector<int64_t>> in{{4}};
    if (std::string(kind) == "halo_add")
      in.insert(in.begin(), {4});
    test::StepRig rig(kind, in, {{4}}, {test::axesAttr({}), test::intAttr(1)});
    EXPECT_NE(rig.verify().find("rank 1"), std::string::npos) << rig.verify();
  }
}
