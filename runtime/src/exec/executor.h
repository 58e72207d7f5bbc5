//===- executor.h - run a plan on ranks -------------------------------------===//
//
// Every rank decodes the plan once into a program of steps (exec/program.h:
// kernels from the backend's table, tensors bound by name, attributes and
// rank facts resolved) and runs it on its local parts of the tensors (global
// shapes and layouts from the plan, local parts from the mesh), each
// activation at its planned offset in the arena on the rank's device
// (device/device.h). Every exchange goes through the rank's Collectives
// (exec/collectives.h) over a Comm (comm/comm.h): ranks that are threads of
// one process or MPI processes, the same program either way. Weights come from the seed by
// global element index, tokens and labels too (or from files: --weights, --data), so a run on
// one rank with the mesh collapsed computes the single-device result of the same model.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_EXEC_EXECUTOR_H
#define SHARDLINE_RUNTIME_EXEC_EXECUTOR_H

#include "comm/comm.h"
#include "core/layout.h"
#include "core/plan.h"
#include "exec/program.h"

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace shardline::rt {

/// The safetensors metadata key under which --save-weights records the
/// training steps the weights have had; --weights resumes after them.
inline constexpr const char *kTrainedStepsKey = "shardline.trained_steps";
/// The key under which it records the steps the optimizer has taken (AdamW's
/// bias correction and the learning-rate schedule count them): the trained
/// steps, unless a run started the optimizer afresh (--no-load-optim). A
/// file without it has had as many optimizer steps as training steps.
inline constexpr const char *kOptimizerStepsKey = "shardline.optimizer_steps";

/// What --weights loads of a training plan's optimizer state (AdamW's
/// moments and the f32 main copies), as Megatron's flags choose.
enum class LoadOptimizer {
  /// Everything: training resumes where the file's run stopped.
  Yes,
  /// The weights only (--no-load-optim): the moments start at zero, the main
  /// copies from the weights, AdamW's bias correction and the schedule from
  /// step 1; the step count and the dataset's pass continue.
  No,
  /// The weights only, and the run starts over (--finetune): step 1, the
  /// dataset's first pass.
  Finetune,
};

/// The expert choices of a run's routers (sl.router_topk) and, in capacity
/// mode, which choices keep a slot (sl.moe_capacity_slots), whole, so that
/// --verify's single-device run can route as the partitioned run did: top-k
/// is discontinuous, and the rounding of a different summation order flips
/// near-ties, after which the two runs send different tokens to each expert;
/// and the "probs" drop policy ranks the choices of an expert by their
/// weights, whose near-ties flip which of them are dropped (never how many).
struct Routing {
  /// choices[step][i]: the i-th recorded step's result in program order, a
  /// router's indices or a capacity layer's slots [b, s, k], row-major;
  /// every step of a training run, the last pass of a forward run
  /// (choices[0]).
  std::vector<std::vector<std::vector<int32_t>>> choices;
  /// When replaying: tokens (per router and step) whose own k choices, as a
  /// set, differ from the replayed ones, and tokens routed.
  int64_t differing = 0, tokens = 0;
  /// When replaying, in capacity mode: routed choices (per layer and step)
  /// its own slots would keep where the replayed ones drop or the other way
  /// round, and the choices routed.
  int64_t slotsDiffering = 0, slotsChoices = 0;
};

/// What a run does with RunOptions::routing.
enum class RoutingUse {
  /// Routers choose on their own (every run that is not --verify's).
  Own,
  /// The first rank records every router's choices and every capacity
  /// layer's slots.
  Record,
  /// A single-device run: each router still chooses, counts where it
  /// differs, then continues with the recorded choices, its weights
  /// recomputed from its own logits; each capacity layer likewise counts
  /// the choices its own slots keep or drop otherwise, then continues with
  /// the recorded slots.
  Replay,
};

struct RunOptions {
  uint64_t seed = 1;
  /// The backend the ranks run on, by name (backends/registry.h): "cpu",
  /// the reference, or "cuda", loaded from its library when asked for.
  std::string device = "cpu";
  /// The device collectives values cross between ranks by ("nccl": the
  /// backend's own, Backend::deviceComm), or empty for the host's (the
  /// threads or MPI processes of the Comm).
  std::string deviceComm;
  /// Run every rank's part as if the mesh had one rank: the single-device
  /// reference of the same model. Its activations get buffers of their own
  /// (the plan's arena is laid out for the partitioned shapes).
  bool singleDevice = false;
  /// Load the weights from this safetensors file instead of generating them
  /// (every weight by name, with the plan's global shape).
  std::string weightsFile;
  /// What of a training plan's optimizer state `weightsFile` gives.
  LoadOptimizer loadOptimizer = LoadOptimizer::Yes;
  /// Write the weights of the run (whole, f32) to this safetensors file.
  std::string saveWeightsFile;
  /// Forward passes to run (the outputs are the last one's); training steps
  /// when `train` is set.
  int64_t steps = 1;
  /// Train: every step's sl.adamw ops update the weights with these
  /// hyperparameters (a plan compiled with --train). Unset, a training plan
  /// computes the loss and gradients and leaves the weights as they are.
  std::optional<TrainOptions> train;
  /// Return the weights after the run (whole, f32) in RunResult::weights.
  bool returnWeights = false;
  /// Called on the first rank with each training step's number (from 1) and
  /// loss as soon as the step ends (progress of a long run).
  std::function<void(int64_t, double)> onLoss;
  /// Read the tokens and labels from this dataset file instead of making
  /// them from the seed (exec/data.h: a flat binary of token ids, or a
  /// safetensors file with `tokens` and `labels`).
  std::string dataFile;
  /// The element type of a flat binary dataset: "u16" or "u32".
  std::string dataDType = "u16";
  /// The dataset's pass of the first forward pass (the passes after it read
  /// the next ones): a single-device run that checks the last of several
  /// passes reads that pass's tokens.
  int64_t dataFirstPass = 0;
  /// Write the last pass's outputs (whole, f32, by their plan names) and the
  /// inputs it ran on (i32) to this safetensors file.
  std::string saveOutputsFile;
  /// Seconds a rank waits for the others in any one collective before it
  /// stops the run with an error naming the ranks that did not arrive
  /// (RunResult::rankLost). Positive; a wait, not a step: ranks of a working
  /// run wait for each other only as long as they are out of step.
  double timeoutSeconds = kDefaultTimeoutSeconds;
  /// Record the routers' choices and the capacity layers' slots into
  /// `routing` or replay them from it
  /// (RoutingUse): a training run's step by step (its two runs step alike),
  /// a forward run's last pass, which its single-device run replays in its
  /// one pass.
  RoutingUse routingUse = RoutingUse::Own;
  Routing *routing = nullptr;
  /// The run is --verify's (the partitioned run or its single-device
  /// reference): the SHARDLINE_FAULT kinds that falsify figures are refused
  /// in any other run (runPlanOnRank).
  bool verify = false;
};

/// What one MoE layer routed in a run: per expert and rank, the choices the
/// rank's tokens sent to the expert (kept) and the ones capacity mode dropped,
/// over the last forward pass of a forward run or every step of a training
/// run. A rank that holds a copy of tokens another rank holds counts nothing.
struct LayerLoad {
  int64_t block = -1;    ///< the model block of the layer, or -1
  bool capacity = false; ///< capacity mode (else dropless: nothing dropped)
  std::vector<std::vector<int64_t>> kept, dropped; ///< [expert][rank]
  /// owner[expert][rank]: the rank that holds the expert for the rows of
  /// that rank's tokens (the member of its expert group whose part of the
  /// expert weights' first dimension holds the expert), where its kept rows
  /// go; the rank itself when the experts are not split.
  std::vector<std::vector<int64_t>> owner;
  /// The ranks of the expert-tensor group (etp) over which an owner gathers
  /// the rows it received before its experts run on them (each member on
  /// its ffn shard); 1 without expert tensor parallelism.
  int64_t expertTensorRanks = 1;
  int64_t total(const std::vector<std::vector<int64_t>> &counts) const {
    int64_t sum = 0;
    for (const auto &perRank : counts)
      for (int64_t n : perRank)
        sum += n;
    return sum;
  }
  /// [expert][rank] counts summed over the ranks (per expert) or over the
  /// experts (per rank).
  static std::vector<int64_t> perExpert(const std::vector<std::vector<int64_t>> &counts);
  static std::vector<int64_t> perRank(const std::vector<std::vector<int64_t>> &counts);
  /// Per rank, the kept rows its tokens sent to experts (`offRank`: only to
  /// experts other ranks hold) or its experts received over the expert group
  /// (`offRank`: only from other ranks' tokens), before any gather over the
  /// expert-tensor group: each row counts once, where it arrived.
  std::vector<int64_t> sentByRank(bool offRank = false) const;
  std::vector<int64_t> receivedByRank(bool offRank = false) const;
};

struct RunResult {
  /// Empty on success.
  std::string error;
  /// Whether the run stopped because a rank was lost: it stalled past the
  /// timeout or ended without a word (the error names it).
  bool rankLost = false;
  int64_t ranks = 1;
  /// The program's outputs assembled as global tensors (row-major); on the
  /// first rank only.
  std::vector<std::vector<float>> outputs;
  std::vector<std::vector<int64_t>> outputShapes;
  /// Each output's name in the plan ("output<i>" when it has none).
  std::vector<std::string> outputNames;
  /// The type each output is held in (its values above are widened to f32).
  std::vector<DType> outputTypes;
  /// The loss of every step (the program's first scalar output), on the
  /// first rank; empty when the program has no scalar output.
  std::vector<double> losses;
  /// With RunOptions::returnWeights: the weights after the run by name, whole
  /// (global shape, f32), on the first rank.
  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>> weights;
  /// Bytes each rank sent to other ranks in one step (largest over ranks),
  /// as the report counts them.
  int64_t bytesSentPerRank = 0;
  /// What each rank sent in one step (the last), by rank: bytesSentPerRank
  /// is the sum of each op's largest count, at least the largest of these.
  std::vector<int64_t> bytesSentByRank;
  /// Of bytesSentPerRank, what the steps whose exchange depends on the data
  /// (dropless MoE) sent, and what the report states for them (at balanced
  /// routing); whether every rank sent exactly what its counts implied in
  /// every such step, and if not, each rank's first step that did not (rank,
  /// pass, op, bytes sent and implied; every rank's, on every rank).
  int64_t variableBytesMeasured = 0, variableBytesBalanced = 0;
  bool variableBytesExact = true;
  std::string variableBytesMismatch;
  /// The arena's high-water mark: the end of the highest activation placed,
  /// in the plan's bytes and 64-byte slots (largest over ranks).
  int64_t arenaPeak = 0;
  /// The largest sum of the activation bytes live at once (largest over ranks).
  int64_t liveBytesPeak = 0;
  /// Each MoE layer's routing, in program order, on the first rank.
  std::vector<LayerLoad> expertLoad;
  /// Whether the activations lived in the plan's arena (not in the
  /// single-device run, whose shapes the arena was not laid out for).
  bool usedArena = false;
  /// Wall time of the steps, after the weights are in place.
  double seconds = 0;
  /// The first rank's wall time of each timed step (a training step's loss
  /// gathered included), in order.
  std::vector<double> stepTimes;
  /// The first rank's wall time per op kind in one step (waits for other
  /// ranks in exchanges included).
  std::vector<std::pair<std::string, double>> opSeconds;
  /// The first rank's collectives in one step by the size of the group they
  /// ran on (groups of one left out).
  std::map<int64_t, int64_t> collectivesByGroupSize;
};

/// Why the executor cannot run `plan` (an op kind it has no kernel for, an
/// operand, result or attribute a kernel binds that the plan lacks, an op
/// that breaks its kernel's contract: exec/verify.h), or an empty string.
/// runPlanOnRank checks the same before any step runs. `backend` is the one
/// that will run it (the CPU reference when not given).
std::string checkProgram(const LoadedPlan &plan, const Backend &backend = cpuBackend());

/// Whether the plan is a training step (shardline-compile --train: it updates
/// its weights with sl.adamw).
bool isTrainingPlan(const plan::Plan &plan);

/// Runs every rank of the plan's mesh as a thread of this process (one rank
/// when `options.singleDevice`).
RunResult runPlan(const LoadedPlan &plan, const RunOptions &options);
/// The same on the ranks of `hub` (which then holds what each pair carried).
RunResult runPlan(const LoadedPlan &plan, const RunOptions &options, ThreadHub &hub);

/// Runs this process's rank of the plan; every rank of `comm` calls it. The
/// ranks first check that they all run the same plan. Outputs are assembled on
/// rank 0.
///
/// A test hook: the environment variable SHARDLINE_FAULT=kill:RANK:STEP or
/// stall:RANK:STEP makes rank RANK die (an MPI process kills itself with
/// SIGKILL, a thread rank ends without a word) or stall (until the run is
/// aborted, or for ever) at the start of forward pass STEP (from 0, the
/// untimed first pass of --steps included). bytes:RANK:STEP, value:RANK:STEP
/// and drop:RANK:STEP falsify what rank RANK measures in pass STEP of a
/// partitioned run, so that --verify's checks fail: its first dropless MoE
/// exchange counts 4 bytes more than it sent, its first op that sends adds 1
/// to its first f32 result's first element, its first capacity-mode layer
/// counts one of its kept choices as dropped. These three are an error in a
/// run without RunOptions::verify, and value and drop in a forward run at a
/// pass other than the last (the one --verify compares).
RunResult runPlanOnRank(const LoadedPlan &plan, const RunOptions &options, Comm &comm);

} // namespace shardline::rt

#endif
