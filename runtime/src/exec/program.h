//===- program.h - the plan decoded once into steps -------------*- C++ -*-===//
//
// At load the plan becomes a program: one step per op, each with the kernel
// that runs it (from a backend's kernel table), its tensors bound by the
// operand and result names the plan gives, its attributes read and
// type-checked, and the facts of this rank it needs (token positions, the
// exchange group in ring order, the vocabulary offset) resolved. Running a
// step is then a call through a function pointer: no names, no lookups, no
// defaults. The kernel table is the one list of the ops a backend runs.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_EXEC_PROGRAM_H
#define SHARDLINE_RUNTIME_EXEC_PROGRAM_H

#include "core/layout.h"
#include "core/plan.h"
#include "device/device.h"

#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace shardline::rt {

class Collectives;

/// Ends a rank's run: an error of its own, or the run was aborted by another.
struct Stop {
  std::string error;
  bool aborted = false;
};

/// A plan tensor with this rank's view of it.
struct TensorInfo {
  std::string name;
  std::vector<int64_t> shape, local;
  Layout layout;
  plan::Role role = plan::Role::Activation;
  DType dtype = DType::F32;
  int64_t count = 0; ///< elements of the local part
  int64_t arenaOffset = -1;
  /// Bytes of one element as the plan counts them.
  int64_t elementBytes() const { return dtypeSize(dtype); }
};

/// Strings: mesh axis names (checked against the mesh); Ints: a list of
/// integers (an array attribute); Name: one string that is not an axis (a
/// choice such as a policy's name).
enum class AttrKind { Int, Float, Strings, Ints, Name };

/// An attribute a kernel reads; `optional` only where the op itself has no
/// value for it (an ODS OptionalAttr, e.g. attention's scale).
struct AttrSpec {
  const char *name;
  AttrKind kind;
  bool optional = false;
};

/// What an attribute holds once read.
struct AttrValue {
  bool present = false;
  int64_t i = 0;
  double f = 0;
  std::vector<std::string> strings; ///< Strings; Name holds its one string here
  std::vector<int64_t> ints;        ///< Ints
};

/// The facts of this rank a step needs, resolved once at load.
struct RankFacts {
  /// Global token positions of the step's sequence operand (queries for
  /// attention), and of its keys.
  std::vector<int64_t> positions, keyPositions;
  /// The exchange group, in ring order from this rank.
  std::vector<int64_t> members;
  /// Each member's token positions (or chunks), in `members` order.
  std::vector<std::vector<int64_t>> memberPositions;
  /// First vocabulary entry of this rank's shard.
  int64_t vocabOffset = 0;
  /// A row of a point-to-point exchange (halo): the other rank (or this one),
  /// the row in the sender's local part, and the row's slot at the receiver.
  struct Row {
    int64_t rank, row, slot;
  };
  std::vector<Row> sends, receives;
};

struct Step;
struct Frame;
class Contract;
struct KernelSpec {
  /// Operand and result names, in the order the kernel reads them; a name
  /// ending in '?' is an operand the op may omit.
  std::vector<std::string> operands, results;
  std::vector<AttrSpec> attrs;
  void (*run)(const Step &, Frame &);
  /// Resolves the step's rank facts; nullptr when it needs none.
  void (*resolve)(Step &, const Frame &) = nullptr;
  /// States the shape and attribute relations `run` and `resolve` rely on
  /// (exec/verify.h), checked at load before anything runs; nullptr when the
  /// generic checks (dtypes, mesh axes, finite floats) are all it needs.
  void (*check)(Contract &) = nullptr;
  /// The kernel moves its operand into its result without computing on it (a
  /// layout transition), so the two may be i32 as well as float, one type for
  /// both: token ids, labels and expert indices change layout like
  /// activations.
  bool movesIntegers = false;
  /// Whether the kernel reads and writes this step's 16-bit float tensors in
  /// their storage type (Frame::stored), so the executor leaves its operands
  /// and results as they are instead of widening them to f32; nullptr:
  /// never. The CUDA backend's GEMMs keep every step's (the tensor cores
  /// take bf16 and f16 factors with f32 accumulation), its memory-bound
  /// kernels those whose types they have an instance for.
  bool (*keeps16)(const Step &, const Frame &) = nullptr;
};

/// A backend's kernels by op kind.
using KernelTable = std::map<std::string, KernelSpec>;

struct NcclLowering;

/// What runs a program: a kernel table and the device of a rank. The CPU
/// reference backend is built in (exec/cpu_kernels.cpp); the others are
/// shared libraries loaded when a run asks for them (backends/registry.h).
struct Backend {
  const char *name;
  const KernelTable &kernels;
  /// The device of world rank `rank` (a backend with several devices a
  /// machine picks one by the rank).
  std::unique_ptr<Device> (*makeDevice)(int64_t rank);
  /// The most ranks a run on this backend may have when its values cross
  /// through the host collectives (0: any), and why not more, for the error
  /// that refuses a larger plan.
  int64_t maxRanks = 0;
  const char *whyMaxRanks = "";
  /// The device's own collectives, by the name a run asks for them with
  /// (RunOptions::deviceComm: "nccl"), or nullptr when it has none; with
  /// them a run has any number of ranks.
  const char *deviceComm = nullptr;
  /// Makes this rank's communicators for the program lowered to `lowering`
  /// (comm/nccl_plan.h), sharing what the ranks must agree on through
  /// `frame`'s host collectives, each wait at most `timeoutSeconds`; every
  /// rank calls it after its program's rank facts are resolved. Returns an
  /// error (a step whose exchange the device cannot run, a missing library,
  /// too few devices) or "".
  std::string (*connect)(Frame &frame, const NcclLowering &lowering,
                         double timeoutSeconds) = nullptr;
};
const Backend &cpuBackend();

/// The version of what the runtime and a backend library share (Backend,
/// KernelSpec, Step, Frame, Device, BufferView, Stop): a library built
/// against another version is refused at load.
inline constexpr int kBackendAbiVersion = 5;

/// What a backend library exports with C linkage as
/// `shardline_backend_<name>`: its backend, whose table entries take their
/// bindings, contracts and rank-fact resolvers from `reference` (the CPU
/// table) and bring their own `run`; or nullptr with the reason written to
/// `error` (`errorBytes` long), e.g. no device on this machine.
using BackendEntry = const Backend *(*)(int abiVersion, const KernelTable *reference, char *error,
                                        size_t errorBytes);

struct Step {
  const KernelSpec *kernel = nullptr;
  std::string kind, location;
  int64_t index = 0;
  /// Tensor indices in the kernel's operand and result order; -1 for an
  /// optional operand the op omits.
  std::vector<int32_t> in, out;
  std::vector<AttrValue> attrs; ///< in the kernel's attribute order
  RankFacts facts;
  bool has(size_t operand) const { return in[operand] >= 0; }
};

/// The plan's mesh, or the mesh collapsed to one rank (every axis of size 1)
/// for the single-device run.
Mesh meshOf(const plan::Plan &plan, bool singleDevice = false);

/// The plan's tensors as a rank of `mesh` sees them (their local shapes are
/// the same on every rank). The plan must have loaded (core/plan.h).
std::vector<TensorInfo> tensorInfos(const plan::Plan &plan, const Mesh &mesh);

/// A shape for messages: "[2, 64, 128]".
std::string shapeText(const std::vector<int64_t> &shape);

/// Decodes every op of `plan` against `table`; on failure returns nullopt and
/// says which op and which name, attribute or kind is missing in `error`.
std::optional<std::vector<Step>> decodeProgram(const plan::Plan &plan, const KernelTable &table,
                                               std::string &error);

/// The optimizer's hyperparameters, which come from the run rather than the
/// plan (sl.adamw reads them; docs/runtime.md).
struct TrainOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weightDecay = 0.01,
         clipGrad = 1.0; // Megatron's defaults, lr aside
  /// The learning-rate schedule, as Megatron's OptimizerParamScheduler runs
  /// it (--lr-warmup-iters, --lr-warmup-init, --lr-decay-style,
  /// --lr-decay-iters, --min-lr): a linear warmup from `warmupInit` to `lr`,
  /// then a decay to `minLr` over the steps up to `decaySteps`.
  enum class Decay { Constant, Linear, Cosine };
  Decay decay = Decay::Linear;
  int64_t warmupSteps = 0, decaySteps = 0; ///< decaySteps 0: the run's last step
  double warmupInit = 0, minLr = 0;
  /// The learning rate of the step after `done` steps (Megatron's get_lr of
  /// num_steps = done), with decaySteps resolved. Inline: the CUDA backend
  /// library, which links no runtime library, computes it too.
  double lrAt(int64_t done) const;
};

inline double TrainOptions::lrAt(int64_t done) const {
  if (warmupSteps > 0 && done <= warmupSteps)
    return warmupInit + (lr - warmupInit) * (double)done / (double)warmupSteps;
  // No span to decay over: a schedule built in code whose length the
  // executor has not resolved (the executor refuses such a run).
  if (decay == Decay::Constant || decaySteps <= warmupSteps)
    return lr;
  if (done > decaySteps)
    return minLr;
  double ratio = (double)(done - warmupSteps) / (double)(decaySteps - warmupSteps);
  double coeff = decay == Decay::Linear ? 1.0 - ratio : 0.5 * (std::cos(M_PI * ratio) + 1.0);
  return minLr + coeff * (lr - minLr);
}

/// sl.adamw's refusals, the same on every device: a training step below 1,
/// and a sum of squares of the gradients (the tensor `name`) that is not
/// finite, which would turn every weight into NaN for good.
inline Stop adamwStepStop(int64_t step) {
  return Stop{"sl.adamw at training step " + std::to_string(step) + ": the steps count from 1",
              false};
}
inline Stop adamwSumsqStop(const std::string &name, double sumsq, int64_t step) {
  return Stop{"the gradients' sum of squares " + (name.empty() ? "" : "'" + name + "' ") + "is " +
                  std::to_string(sumsq) + " at training step " + std::to_string(step) +
                  ": no update",
              false};
}

/// What one MoE layer routed from this rank's tokens: per expert, the choices
/// it kept (the rows the expert receives) and the ones capacity mode dropped.
struct ExpertLoad {
  std::vector<int64_t> kept, dropped;
};

/// What one step whose exchange depends on the data (dropless MoE) sent from
/// this rank: the bytes its counts imply, which the bytes measured must
/// equal, and the bytes at balanced routing, which the report states.
struct VariableBytes {
  int64_t implied = 0, balanced = 0;
};

/// What a kernel runs against: this rank's tensors, their buffers and the
/// collectives. Kernels compute in f32: while a step runs, the view of each
/// of its 16-bit operands and results is an f32 copy (the executor widens the
/// operands before the kernel and rounds the results into their storage
/// after it), so f() is the only way a kernel reads a float tensor; a kernel
/// whose entry keeps 16-bit tensors (KernelSpec::keeps16) reads them as
/// stored through stored().
struct Frame {
  const Mesh &mesh;
  int64_t self;
  const std::vector<TensorInfo> &tensors;
  std::vector<BufferView> &views;
  Collectives *collectives;
  /// The run's hyperparameters when it trains, else nullptr (sl.adamw then
  /// leaves the weights as they are), and the 1-based step being trained.
  const TrainOptions *train = nullptr;
  int64_t trainStep = 0;
  /// The rank's device: a backend's kernels launch on it (its stream, its
  /// library handles).
  Device *device = nullptr;
  /// Where the routing kernels (the dropless dispatch, capacity mode's
  /// slots) add the rows each expert kept and dropped, by step index; nullptr
  /// when nobody reads them (the verifier's frame, the tests').
  std::map<int64_t, ExpertLoad> *expertLoad = nullptr;
  /// Where the steps whose bytes depend on the data record them, by step
  /// index; nullptr when nobody checks them.
  std::map<int64_t, VariableBytes> *variableBytes = nullptr;

  float *f(int32_t t) const { return typed(t, DType::F32).f32(); }
  int32_t *ids(int32_t t) const { return typed(t, DType::I32).i32(); }
  /// A float tensor in its storage type (f32, bf16 or f16), for a kernel
  /// whose entry keeps 16-bit tensors (KernelSpec::keeps16); any other
  /// kernel sees f32 here, as from f().
  const BufferView &stored(int32_t t) const {
    DType type = views[t].dtype;
    if (type != DType::F32 && type != DType::BF16 && type != DType::F16)
      throw Stop{"tensor '" + tensors[t].name + "' is held as " + dtypeName(type) +
                     ", the kernel reads it as a float type",
                 false};
    return views[t];
  }
  /// A tensor a kernel moves without reading its values, as the step holds
  /// it: i32, f32 (a 16-bit tensor's widened copy), or 16-bit where the
  /// entry keeps the step's 16-bit tensors (KernelSpec::keeps16; the CUDA
  /// backend's transitions that sum nothing).
  const BufferView &moved(int32_t t) const { return views[t]; }
  int64_t n(int32_t t) const { return tensors[t].count; }
  const std::vector<int64_t> &local(int32_t t) const { return tensors[t].local; }
  const std::vector<int64_t> &global(int32_t t) const { return tensors[t].shape; }
  std::vector<int64_t> owned(int32_t t, unsigned dim, int64_t rank) const {
    return ownedIndices(tensors[t].layout, mesh, tensors[t].shape, dim, rank);
  }

private:
  /// A kernel that reads a tensor in another type than it is held in would
  /// read garbage: a step the executor did not widen, or a plan whose dtype
  /// the op does not take.
  const BufferView &typed(int32_t t, DType want) const {
    if (views[t].dtype != want)
      throw Stop{"tensor '" + tensors[t].name + "' is held as " + dtypeName(views[t].dtype) +
                     ", the kernel reads it as " + dtypeName(want),
                 false};
    return views[t];
  }
};

} // namespace shardline::rt

#endif
