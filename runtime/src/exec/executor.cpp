//===- executor.cpp - run a plan on ranks -----------------------------------===//

#include "exec/executor.h"

#include "backends/registry.h"
#include "comm/nccl_plan.h"
#include "comm/transfer.h"
#include "core/init.h"
#include "core/safetensors.h"
#include "device/device.h"
#include "exec/collectives.h"
#include "exec/data.h"
#include "exec/program.h"
#include "exec/verify.h"
#include "kernels/cpu/kernels.h"

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <new>
#include <optional>
#include <set>
#include <thread>

namespace shardline::rt {

namespace {

/// A rank that SHARDLINE_FAULT makes die or stall, or whose figures it
/// falsifies so that --verify's checks fail (a test hook).
struct Fault {
  enum Kind { None, Kill, Stall, Bytes, Value, Drop } kind = None;
  int64_t rank = 0, step = 0;
};

/// SHARDLINE_FAULT as a Fault, or the error.
std::optional<Fault> faultFromEnvironment(std::string &error) {
  const char *text = std::getenv("SHARDLINE_FAULT");
  if (!text || !*text)
    return Fault{};
  std::string spec = text;
  Fault fault;
  size_t colon = spec.find(':');
  static const std::map<std::string, Fault::Kind> kinds = {{"kill", Fault::Kill},
                                                           {"stall", Fault::Stall},
                                                           {"bytes", Fault::Bytes},
                                                           {"value", Fault::Value},
                                                           {"drop", Fault::Drop}};
  auto kind = kinds.find(spec.substr(0, colon));
  long long rank = -1, step = -1;
  int used = 0;
  if (kind == kinds.end() || colon == std::string::npos ||
      std::sscanf(spec.c_str() + colon + 1, "%lld:%lld%n", &rank, &step, &used) != 2 ||
      spec[colon + 1 + used] != '\0' || rank < 0 || step < 0) {
    error = "SHARDLINE_FAULT (a test hook) must be KIND:RANK:STEP with KIND kill, stall, bytes, "
            "value or drop, got '" +
            spec + "'";
    return std::nullopt;
  }
  fault.kind = kind->second;
  fault.rank = rank;
  fault.step = step;
  return fault;
}

/// The first op of `plan` that `backend`, other than the reference, has no
/// kernel for, in words; empty when it has them all. (The reference's own
/// gaps are decodeProgram's to name.)
std::string missingKernel(const plan::Plan &plan, const Backend &backend) {
  if (&backend == &cpuBackend())
    return "";
  for (size_t i = 0; i < plan.ops()->size(); ++i) {
    const auto *op = plan.ops()->Get(i);
    std::string kind = op->kind()->str();
    if (!backend.kernels.count(kind))
      return "op #" + std::to_string(i) + " (sl." + kind + ")" +
             (op->location() ? " at " + op->location()->str() : std::string()) + ": the " +
             backend.name + " backend has no kernel for sl." + kind + " yet (--device cpu runs it)";
  }
  return "";
}

/// One rank's run of the plan: the program decoded at load, run step by step
/// over the device's arena.
class RankRun {
public:
  RankRun(const LoadedPlan &loaded, const RunOptions &options, Comm &comm)
      : p(*loaded.root()), hash(loaded.hash), options(options), comm(comm), self(comm.rank()),
        mesh(meshOf(p, options.singleDevice)), collectives(comm, mesh),
        tensors(tensorInfos(p, mesh)), frame{mesh, self, tensors, views, &collectives} {
    backend = findBackend(options.device, backendError);
    // A device that cannot start stops this rank's run, which run() reports.
    try {
      if (backend)
        device = backend->makeDevice(self);
    } catch (Stop &stop) {
      backendError = "--device " + options.device + ": " + stop.error;
    } catch (std::exception &e) {
      backendError = "--device " + options.device + ": " + e.what();
    }
    if (!device)
      backend = nullptr;
    frame.device = device.get();
    frame.expertLoad = &expertLoad;
    frame.variableBytes = &variableBytes;
    if (options.train) {
      train = *options.train;
      frame.train = &train;
    }
    ranks = mesh.numRanks();
    for (const auto *t : *p.tensors())
      inits.push_back({t->init() == plan::Init::Uniform    ? InitKind::Uniform
                       : t->init() == plan::Init::Constant ? InitKind::Constant
                                                           : InitKind::Normal,
                       t->scale(), t->offset()});
    views.assign(tensors.size(), {});
    own.assign(tensors.size(), nullptr);
    // Last use of every value; the outputs stay live to the end of a step.
    int64_t numOps = (int64_t)p.ops()->size();
    std::vector<int64_t> lastUse(tensors.size(), -1);
    for (int64_t i = 0; i < numOps; ++i) {
      const auto *op = p.ops()->Get(i);
      for (int32_t t : *op->operands())
        lastUse[t] = i;
      if (op->kind()->str() == "adamw" && op->operand_names())
        for (unsigned k = 0; k < op->operands()->size() && k < op->operand_names()->size(); ++k)
          if (std::string name = op->operand_names()->Get(k)->str();
              name == "m" || name == "v" || name == "main")
            optimizerState.insert(op->operands()->Get(k));
      for (int32_t t : *op->results())
        lastUse[t] = std::max(lastUse[t], i);
    }
    for (int32_t t : *p.inputs())
      lastUse[t] = std::max<int64_t>(lastUse[t], 0);
    for (int32_t t : *p.outputs())
      lastUse[t] = numOps;
    dying.assign(numOps + 1, {});
    for (size_t t = 0; t < tensors.size(); ++t)
      if (tensors[t].role != plan::Role::Weight && lastUse[t] >= 0)
        dying[lastUse[t]].push_back((int32_t)t);
    // The plan's arena is laid out for the partitioned shapes.
    useArena = !options.singleDevice;
  }

  ~RankRun() {
    if (!device)
      return;
    for (const Scratch &wide : scratch)
      device->release(wide.memory);
    for (void *memory : own)
      if (memory)
        device->release(memory);
    if (arena)
      device->release(arena);
  }

  RunResult run();

private:
  [[noreturn]] void fail(const std::string &message) { throw Stop{message, false}; }

  BufferView viewAt(int32_t t, void *memory) const {
    return {memory, tensors[t].count, device->storageType(tensors[t].dtype)};
  }

  /// A buffer of its own for a value outside the arena, zero-filled.
  void placeOwn(int32_t t) {
    BufferView v = viewAt(t, nullptr);
    own[t] = device->allocate(v.bytes());
    v.data = own[t];
    views[t] = v;
  }

  /// Places a value: at its planned arena offset (checked against every value
  /// still live there), or in a buffer of its own. Zero-filled.
  void place(int32_t t) {
    const TensorInfo &info = tensors[t];
    int64_t bytes = info.count * info.elementBytes();
    if (useArena && info.arenaOffset >= 0) {
      int64_t begin = info.arenaOffset, end = begin + bytes;
      for (const auto &[other, range] : liveRanges)
        if (begin < range.second && range.first < end)
          fail("the plan places '" + info.name + "' at arena bytes [" + std::to_string(begin) +
               ", " + std::to_string(end) + ") over '" + tensors[other].name + "' at [" +
               std::to_string(range.first) + ", " + std::to_string(range.second) +
               "), which is still live");
      liveRanges[t] = {begin, end};
      views[t] = viewAt(t, static_cast<char *>(arena) + begin);
      device->zero(views[t].data, views[t].bytes());
      arenaPeak = std::max(arenaPeak, begin + arenaSlotBytes(bytes));
    } else {
      placeOwn(t);
    }
    liveBytes += bytes;
  }
  void release(int32_t t) {
    if (!views[t].data)
      return;
    liveBytes -= tensors[t].count * tensors[t].elementBytes();
    liveRanges.erase(t);
    if (own[t])
      device->release(own[t]);
    own[t] = nullptr;
    views[t] = {};
  }

  // -- setup ----------------------------------------------------------------

  void openWeights() {
    if (options.weightsFile.empty())
      return;
    std::string err;
    weights = SafeTensorsFile::open(options.weightsFile, err);
    if (!weights)
      fail(err);
    const bool optimizerToo = options.loadOptimizer == LoadOptimizer::Yes;
    for (const auto &t : tensors) {
      if (t.role != plan::Role::Weight)
        continue;
      int32_t index = (int32_t)(&t - tensors.data());
      if (!optimizerToo && optimizerState.count(index))
        continue;
      const SafeTensor *found = weights->find(t.name);
      // A main copy the file does not hold is copied from its weight.
      if (!found && copyOf(index) >= 0)
        continue;
      if (!found && optimizerState.count(index))
        fail("'" + t.name + "' (AdamW's state) is not in " + options.weightsFile +
             ": to train from weights without the optimizer's state (a forward run's), give "
             "--no-load-optim or --finetune");
      if (!found)
        fail("weight '" + t.name + "' is not in " + options.weightsFile);
      if (found->shape != t.shape)
        fail("weight '" + t.name + "' in " + options.weightsFile + " has shape " +
             shapeText(found->shape) + ", the model needs " + shapeText(t.shape));
    }
    // Weights saved by a training run carry its step counts: training resumes
    // at the next step (the dataset's pass) and the optimizer at its next
    // (AdamW's bias correction, the schedule), unless told to start over.
    if (options.loadOptimizer != LoadOptimizer::Finetune)
      trainedBefore = stepsIn(kTrainedStepsKey, 0);
    if (optimizerToo)
      optimizerBefore = stepsIn(kOptimizerStepsKey, trainedBefore);
  }

  /// The number of steps the weights file records under `key`, or `absent`.
  int64_t stepsIn(const char *key, int64_t absent) {
    auto step = weights->metadata().find(key);
    if (step == weights->metadata().end())
      return absent;
    const std::string &text = step->second;
    char *end = nullptr;
    long long n = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || *end || n < 0)
      fail(options.weightsFile + ": " + key + " is '" + text + "', not a number of steps");
    return n;
  }

  /// The tokens and labels of forward pass `pass` from the dataset, only
  /// the positions this rank holds.
  void readInputs(int64_t pass) {
    for (int32_t t : *p.inputs()) {
      std::string err;
      if (!data->read(pass, tensors[t].name == "labels",
                      globalOffsets(mesh, tensors[t].shape, tensors[t].layout, self), inputs[t],
                      err))
        fail(err);
    }
  }

  /// Tokens and labels: uniform in [0, vocab) from the seed by global index,
  /// held as int32.
  void makeInputs() {
    int64_t vocab = p.facts() ? p.facts()->vocab() : 1;
    for (int32_t t : *p.inputs()) {
      std::vector<float> global(numElements(tensors[t].shape));
      InitSpec uniform{InitKind::Uniform, (double)vocab, 0.0};
      uint64_t stream = tensorStream(tensors[t].name);
      for (size_t k = 0; k < global.size(); ++k)
        global[k] = std::min<float>(std::floor(initValue(uniform, options.seed, stream, k)),
                                    (float)(vocab - 1));
      inputs[t] = extractLocal(mesh, tensors[t].shape, tensors[t].layout, global, self);
    }
  }
  void placeInputs() {
    for (auto &[t, values] : inputs) {
      place(t);
      device->upload(BufferView(values.data(), (int64_t)values.size()), views[t]);
    }
  }

  /// The weight that weight `t` copies (a 16-bit parameter's f32 main
  /// copy), or -1.
  int32_t copyOf(int64_t t) const {
    const auto *tensor = p.tensors()->Get(t);
    return tensor->init() == plan::Init::Copy ? tensor->copy_of() : -1;
  }

  /// A weight generated or loaded in f32, rounded to its type. A copy the
  /// weights file does not hold takes its weight's values, as they are held
  /// (the main copy of a bf16 weight starts at the bf16 values, as
  /// Megatron's does); its weight is made first.
  void makeWeight(int32_t t) {
    placeOwn(t);
    const bool fromFile = weights && weights->find(tensors[t].name) &&
                          !(options.loadOptimizer != LoadOptimizer::Yes && optimizerState.count(t));
    if (int32_t from = copyOf(t); from >= 0 && !fromFile) {
      device->convert(views[from], views[t]);
      return;
    }
    std::vector<float> values(tensors[t].count);
    if (!fromFile) {
      std::vector<std::vector<int64_t>> ownIdx;
      for (unsigned d = 0; d < tensors[t].shape.size(); ++d)
        ownIdx.push_back(frame.owned(t, d, self));
      fillShard(inits[t], options.seed, tensors[t].name, tensors[t].shape, ownIdx, values.data());
    } else {
      // This rank's shard of the file's tensor, by global element index.
      const SafeTensor &found = *weights->find(tensors[t].name);
      std::vector<int64_t> offsets = globalOffsets(mesh, tensors[t].shape, tensors[t].layout, self);
      for (int64_t i = 0; i < tensors[t].count; ++i)
        values[i] = weights->at(found, offsets[i]);
    }
    device->upload(BufferView(values.data(), tensors[t].count), views[t]);
  }

  /// Every rank must run the same plan with the same options that shape the
  /// run (ranks that disagree on the steps or on saving the weights would
  /// wait for each other in different collectives).
  void checkSamePlan() {
    std::vector<uint64_t> all = collectives.gatherWord(hash);
    for (size_t m = 0; m < all.size(); ++m)
      if (all[m] != hash) {
        char text[160];
        std::snprintf(text, sizeof text,
                      "rank %zu runs another plan (hash %016" PRIx64 ") than rank %lld (hash "
                      "%016" PRIx64 "): every rank must run the same model",
                      m, all[m], (long long)self, hash);
        fail(text);
      }
    uint64_t fields[8] = {options.seed,
                          (uint64_t)options.steps,
                          (uint64_t)!options.weightsFile.empty(),
                          (uint64_t)!options.saveWeightsFile.empty(),
                          (uint64_t)!options.dataFile.empty(),
                          (uint64_t)!options.saveOutputsFile.empty(),
                          (uint64_t)!!options.train,
                          (uint64_t)options.loadOptimizer};
    uint64_t mine = fnv1a64(fields, sizeof fields);
    all = collectives.gatherWord(mine);
    for (size_t m = 0; m < all.size(); ++m)
      if (all[m] != mine)
        fail("rank " + std::to_string(m) + " runs with other options than rank " +
             std::to_string(self) +
             ": --seed, --steps, --no-load-optim, --finetune, and whether --train, --weights, "
             "--save-weights, --data and --save-outputs are given must agree on every rank");
  }

  /// For the MoE layer whose routing op is `index`, layer.owner[e][r]: the
  /// rank whose experts receive the rows rank r's tokens route to expert e,
  /// and layer.expertTensorRanks. The experts' weights (operand 'gate' of the
  /// layer's sl.moe_dropless, or of the first sl.moe_experts after the
  /// routing op) split their first dimension over the expert group's axes:
  /// the rows go to the member of r's group that holds e; and their last
  /// (ffn) dimension over the expert-tensor group's. Costs experts x ranks,
  /// never tensor extents.
  void expertOwners(int64_t index, LayerLoad &layer) const {
    int64_t experts = (int64_t)layer.kept.size();
    std::vector<std::vector<int64_t>> &owner = layer.owner;
    owner.assign(experts, std::vector<int64_t>(ranks));
    for (int64_t e = 0; e < experts; ++e)
      for (int64_t r = 0; r < ranks; ++r)
        owner[e][r] = r;
    int32_t gate = -1;
    for (int64_t i = index; gate < 0 && i < (int64_t)p.ops()->size(); ++i) {
      const auto *op = p.ops()->Get((flatbuffers::uoffset_t)i);
      std::string kind = op->kind()->str();
      if (kind != "moe_dropless" && kind != "moe_experts")
        continue;
      for (flatbuffers::uoffset_t o = 0;
           op->operand_names() && o < op->operand_names()->size() && o < op->operands()->size();
           ++o)
        if (op->operand_names()->Get(o)->str() == "gate")
          gate = op->operands()->Get(o);
      if (gate < 0)
        break;
    }
    if (gate < 0 || tensors[gate].shape.empty() || tensors[gate].shape[0] != experts)
      return;
    const TensorInfo &weights = tensors[gate];
    layer.expertTensorRanks = (int64_t)mesh.group(0, weights.layout.dims.back()).size();
    const std::vector<std::string> &axes = weights.layout.dims[0];
    if (axes.empty())
      return;
    for (int64_t r = 0; r < ranks; ++r)
      for (int64_t member : mesh.group(r, axes))
        for (const TokenRun &run : tokenRuns(weights.layout, mesh, weights.shape, 0, member))
          for (int64_t e = run.start; e < run.end(); ++e)
            owner[e][r] = member;
  }

  /// The global tensor on the first rank, widened to f32.
  std::vector<float> gatherToFirst(int32_t t) {
    std::vector<float> mine(tensors[t].count);
    device->download(views[t], BufferView(mine.data(), tensors[t].count));
    return collectives.gatherToFirst(tensors[t].shape, tensors[t].layout, mine.data(),
                                     tensors[t].count);
  }

  /// Writes the tensors on the first rank.
  void save(const std::string &path, const std::map<std::string, TensorToWrite> &all,
            const std::map<std::string, std::string> &metadata = {}) {
    std::string err;
    if (self == 0 && !writeSafeTensors(path, all, err, metadata))
      fail(err);
  }

  /// The last pass's outputs and the inputs it ran on, whole, by name.
  void saveOutputs(const RunResult &result) {
    std::map<std::string, TensorToWrite> all;
    for (int32_t t : *p.inputs()) {
      std::vector<float> &mine = inputs[t];
      std::vector<float> global = collectives.gatherToFirst(tensors[t].shape, tensors[t].layout,
                                                            mine.data(), (int64_t)mine.size());
      if (self == 0)
        all[tensors[t].name] = {tensors[t].shape, std::move(global), true};
    }
    for (size_t i = 0; i < result.outputs.size(); ++i)
      all[result.outputNames[i]] = {result.outputShapes[i], result.outputs[i],
                                    result.outputTypes[i] == DType::I32};
    save(options.saveOutputsFile, all);
  }

  /// Points the step's 16-bit operands and results at f32 copies on the
  /// device, the operands widened, the results zeroed as placed (none for a
  /// kernel that keeps 16-bit tensors as stored). Each copy's memory is kept
  /// for the next step's.
  void widen(const Step &step) {
    widened.clear();
    if (step.kernel->keeps16 && step.kernel->keeps16(step, frame))
      return;
    auto add = [&](int32_t t, bool read) {
      if (t < 0 || (views[t].dtype != DType::BF16 && views[t].dtype != DType::F16))
        return;
      for (const auto &w : widened)
        if (w.first == t)
          return;
      size_t k = widened.size();
      if (scratch.size() <= k)
        scratch.emplace_back();
      int64_t bytes = views[t].count * (int64_t)sizeof(float);
      if (scratch[k].bytes < bytes) {
        if (scratch[k].memory)
          device->release(scratch[k].memory);
        scratch[k].memory = nullptr;
        scratch[k].memory = device->allocate(bytes);
        scratch[k].bytes = bytes;
      }
      BufferView wide(static_cast<float *>(scratch[k].memory), views[t].count);
      if (read)
        device->convert(views[t], wide);
      else
        device->zero(wide.data, bytes);
      widened.emplace_back(t, views[t]);
      views[t] = wide;
    };
    for (int32_t t : step.in)
      add(t, true);
    for (int32_t t : step.out)
      add(t, false);
  }
  /// Rounds the step's 16-bit results into their storage and points every
  /// view back at it.
  void narrow(const Step &step) {
    for (const auto &[t, stored] : widened) {
      if (std::find(step.out.begin(), step.out.end(), t) != step.out.end())
        device->convert(views[t], stored);
      views[t] = stored;
    }
    widened.clear();
  }

  /// The program's loss: its first scalar output (-1: none).
  int32_t lossOutput() const {
    for (int32_t out : *p.outputs())
      if (tensors[out].shape.empty())
        return out;
    return -1;
  }

  /// Why SHARDLINE_FAULT's kind cannot act in this run, or "": the kinds
  /// that falsify figures act only in --verify's partitioned run (its
  /// single-device run ignores them), in a pass the run has, and value and
  /// drop in a forward run only in its last pass (each pass recomputes the
  /// outputs and recounts the load, and --verify compares the last).
  std::string refusedFault() const {
    static const char *names[] = {"", "kill", "stall", "bytes", "value", "drop"};
    if ((fault.kind != Fault::Bytes && fault.kind != Fault::Value && fault.kind != Fault::Drop) ||
        options.singleDevice)
      return "";
    std::string hook = std::string("SHARDLINE_FAULT=") + names[fault.kind] + ":" +
                       std::to_string(fault.rank) + ":" + std::to_string(fault.step);
    if (!options.verify)
      return hook + " (a test hook) falsifies what the run measures so that --verify's checks "
                    "fail, and this run is not --verify's";
    int64_t last = options.train       ? std::max<int64_t>(1, options.steps) - 1
                   : options.steps > 1 ? options.steps
                                       : 0;
    if (fault.step > last)
      return hook + " (a test hook) names pass " + std::to_string(fault.step) +
             ", and the run's passes are 0 to " + std::to_string(last);
    if (!options.train && fault.kind != Fault::Bytes && fault.step != last)
      return hook + " (a test hook) acts only in the last forward pass, the one --verify " +
             "compares: pass " + std::to_string(last) +
             (options.steps > 1
                  ? " (the untimed pass 0, then 1 to " + std::to_string(options.steps) + ")"
                  : " (the run's only pass)");
    return "";
  }

  /// Dies or stalls here when SHARDLINE_FAULT says so.
  void injectFault() {
    if ((fault.kind != Fault::Kill && fault.kind != Fault::Stall) || fault.rank != self ||
        fault.step != stepsRun)
      return;
    if (fault.kind == Fault::Kill) {
      if (!comm.ranksAreThreads())
        std::raise(SIGKILL);
      // A thread rank ends as if it had died: it tells no one.
      throw Stop{"", true};
    }
    while (!comm.aborted())
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    throw Stop{"", true};
  }

  /// Records the result of the step, a router's choices or a capacity
  /// layer's slots (the `recorded`-th such step in program order), or
  /// replays the recorded one into it (RoutingUse). A training run gathers
  /// every step's as it goes; a forward run keeps this rank's part of the
  /// last pass's (the one --verify compares), gathered once the timed passes
  /// are over.
  void route(const Step &step, size_t recorded) {
    bool slots = step.kind == "moe_capacity_slots";
    int32_t result = slots ? step.out[0] : step.out[1];
    Routing &routing = *options.routing;
    size_t slot = options.train ? (size_t)stepsRun - 1 : 0;
    if (options.routingUse == RoutingUse::Record && !options.train) {
      // Only the last pass's (--steps N > 1 runs N + 1) are compared.
      if (stepsRun != (options.steps > 1 ? options.steps + 1 : 1))
        return;
      std::vector<float> mine(tensors[result].count);
      device->download(views[result], BufferView(mine.data(), (int64_t)mine.size()));
      lastChoices.emplace_back(result, std::move(mine));
      return;
    }
    if (options.routingUse == RoutingUse::Record) {
      std::vector<float> all = gatherToFirst(result);
      if (self == 0) {
        routing.choices.resize(slot + 1);
        routing.choices[slot].emplace_back(all.begin(), all.end());
      }
      return;
    }
    if (options.routingUse != RoutingUse::Replay)
      return;
    if (!options.singleDevice)
      fail("routing replay runs on a single device only");
    int64_t n = tensors[result].count;
    if (slot >= routing.choices.size() || recorded >= routing.choices[slot].size() ||
        (int64_t)routing.choices[slot][recorded].size() != n)
      fail(std::string("no recorded ") + (slots ? "capacity slots" : "choices") + " for op #" +
           std::to_string(step.index) + " (sl." + step.kind + ") at step " +
           std::to_string(stepsRun) + " (the recorded run routed differently)");
    std::vector<int32_t> want = routing.choices[slot][recorded];
    std::vector<int32_t> own(n);
    device->download(views[result], BufferView(own.data(), n));
    if (slots) {
      // Which choices keep a slot: the slots themselves follow from that
      // (position order within each expert and group).
      for (int64_t i = 0; i < n; ++i)
        routing.slotsDiffering += (own[i] >= 0) != (want[i] >= 0);
      routing.slotsChoices += n;
      device->upload(BufferView(want.data(), n), views[result]);
      return;
    }
    int32_t weights = step.out[0], logits = step.in[0];
    int64_t k = tensors[result].shape.back();
    int64_t experts = tensors[logits].shape.back(), tokens = n / k;
    for (int64_t t = 0; t < tokens; ++t) {
      std::sort(own.begin() + t * k, own.begin() + (t + 1) * k);
      std::vector<int32_t> theirs(want.begin() + t * k, want.begin() + (t + 1) * k);
      std::sort(theirs.begin(), theirs.end());
      routing.differing += !std::equal(theirs.begin(), theirs.end(), own.begin() + t * k);
    }
    routing.tokens += tokens;
    std::vector<float> l(tokens * experts), w(n);
    device->download(views[logits], BufferView(l.data(), (int64_t)l.size()));
    cpu::router_weights(l.data(), tokens, experts, k, want.data(), w.data());
    device->upload(BufferView(want.data(), n), views[result]);
    device->upload(BufferView(w.data(), n), views[weights]);
  }

  /// A forward run's recorded choices: the last pass's, whole, on the first
  /// rank (route()).
  void gatherLastChoices() {
    if (!options.routing || options.routingUse != RoutingUse::Record || options.train)
      return;
    std::vector<std::vector<int32_t>> choices;
    for (const auto &[t, mine] : lastChoices) {
      std::vector<float> all = collectives.gatherToFirst(tensors[t].shape, tensors[t].layout,
                                                         mine.data(), (int64_t)mine.size());
      choices.emplace_back(all.begin(), all.end());
    }
    if (self == 0)
      options.routing->choices.assign(1, std::move(choices));
  }

  /// Whether SHARDLINE_FAULT falsifies a figure of this rank in the pass
  /// that runs (the partitioned run's only: --verify's reference is what
  /// the figures are checked against).
  bool falsify(Fault::Kind kind) {
    return fault.kind == kind && fault.rank == self && fault.step == stepsRun - 1 &&
           !options.singleDevice && !falsified;
  }

  /// SHARDLINE_FAULT=value: adds 1 to the first element of the step's first
  /// f32 result (widened, before it is rounded into its storage): a value
  /// an exchange got wrong.
  void falsifyValue(const Step &step) {
    int32_t t = step.out.empty() ? -1 : step.out[0];
    if (t < 0 || views[t].dtype != DType::F32 || views[t].count == 0)
      return;
    float first = 0;
    device->download(views[t].slice(0, 1), BufferView(&first, 1));
    first += 1;
    device->upload(BufferView(&first, 1), views[t].slice(0, 1));
    falsified = true;
  }

  void runStep() {
    injectFault();
    falsified = false;
    if (data)
      readInputs(options.dataFirstPass + (options.train ? trainedBefore : 0) + stepsRun);
    ++stepsRun;
    frame.trainStep = optimizerBefore + stepsRun;
    // A forward run reports the routing of its last pass, as its outputs; a
    // training run that of every step, as its losses.
    if (!options.train)
      for (auto &[index, load] : expertLoad) {
        std::fill(load.kept.begin(), load.kept.end(), 0);
        std::fill(load.dropped.begin(), load.dropped.end(), 0);
      }
    collectives.resetCount();
    size_t recorded = 0; // steps route() has recorded or replayed this pass
    for (size_t t = 0; t < tensors.size(); ++t)
      if (tensors[t].role != plan::Role::Weight)
        release((int32_t)t);
    placeInputs();
    for (const Step &step : program) {
      try {
        // An optional result the plan does not bind is -1.
        for (int32_t t : step.out)
          if (t >= 0 && tensors[t].role != plan::Role::Weight)
            place(t);
        liveBytesPeak = std::max(liveBytesPeak, liveBytes);
        auto start = std::chrono::steady_clock::now();
        int64_t sentBefore = collectives.bytesSent();
        widen(step);
        step.kernel->run(step, frame);
        if (falsify(Fault::Value) && collectives.bytesSent() > sentBefore)
          falsifyValue(step);
        narrow(step);
        stepBytes[step.index] = collectives.bytesSent() - sentBefore;
        // A step whose bytes depend on the data sends exactly what its
        // counts imply (SHARDLINE_FAULT=bytes: one count more).
        if (auto v = variableBytes.find(step.index); v != variableBytes.end()) {
          if (falsify(Fault::Bytes)) {
            stepBytes[step.index] += 4;
            falsified = true;
          }
          if (v->second.implied != stepBytes[step.index] && mismatch.pass < 0)
            mismatch = {stepsRun - 1, step.index, stepBytes[step.index], v->second.implied};
        }
        if (timing) {
          // An op's time is its kernels' own, not their launch's.
          device->synchronize();
          stepSeconds[step.index] +=
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        }
        if (options.routing && (step.kind == "router_topk" || step.kind == "moe_capacity_slots"))
          route(step, recorded++);
      } catch (Stop &stop) {
        narrow(step);
        if (!stop.aborted)
          stop.error = "op #" + std::to_string(step.index) + " (sl." + step.kind + ") at " +
                       step.location + ": " + stop.error;
        throw;
      }
      for (int32_t t : dying[step.index])
        release(t);
    }
    // SHARDLINE_FAULT=drop: the first capacity-mode layer counts one of
    // its kept choices as dropped (the routed choices stay k per token).
    if (falsify(Fault::Drop))
      for (auto &[index, load] : expertLoad) {
        if (p.ops()->Get(index)->kind()->str() != "moe_capacity_slots")
          continue;
        auto kept =
            std::find_if(load.kept.begin(), load.kept.end(), [](int64_t n) { return n > 0; });
        if (kept == load.kept.end() || (size_t)(kept - load.kept.begin()) >= load.dropped.size())
          continue;
        --*kept;
        ++load.dropped[kept - load.kept.begin()];
        falsified = true;
        break;
      }
  }

  /// Every rank's first step that sent other than its counts imply, in
  /// words, on every rank (an all-gather): which rank, pass and op, what it
  /// sent and what its counts imply. Called on every rank of a run in which
  /// some rank found one.
  std::string variableMismatches() {
    std::vector<std::vector<int64_t>> all =
        collectives.gatherCounts({mismatch.pass, mismatch.op, mismatch.sent, mismatch.implied});
    std::string text;
    for (size_t r = 0; r < all.size(); ++r) {
      if (all[r][0] < 0)
        continue;
      const Step *at = nullptr;
      for (const Step &step : program)
        if (step.index == all[r][1])
          at = &step;
      text += (text.empty() ? "" : "; ") + std::string("rank ") + std::to_string(r) + ", pass " +
              std::to_string(all[r][0]) + ", op #" + std::to_string(all[r][1]) +
              (at ? " (sl." + at->kind + ") at " + at->location : std::string()) + ": sent " +
              std::to_string(all[r][2]) + " bytes, its counts imply " + std::to_string(all[r][3]);
    }
    return text;
  }

  const plan::Plan &p;
  uint64_t hash;
  RunOptions options;
  Comm &comm;
  int64_t self;
  Mesh mesh;
  /// The backend of options.device, or nullptr and why not.
  const Backend *backend = nullptr;
  std::string backendError;
  std::unique_ptr<Device> device;
  Collectives collectives;
  int64_t ranks = 1;
  std::vector<TensorInfo> tensors;
  std::vector<InitSpec> inits;
  std::vector<BufferView> views;
  Frame frame;
  std::vector<Step> program;
  /// Buffers of the values outside the arena.
  std::vector<void *> own;
  std::vector<std::vector<int32_t>> dying;
  std::map<int32_t, std::vector<float>> inputs;
  bool useArena = false;
  void *arena = nullptr;
  /// The device memory of the f32 copies of the running step's 16-bit
  /// tensors, and their views in storage.
  struct Scratch {
    void *memory = nullptr;
    int64_t bytes = 0;
  };
  std::vector<Scratch> scratch;
  std::vector<std::pair<int32_t, BufferView>> widened;
  std::map<int32_t, std::pair<int64_t, int64_t>> liveRanges;
  int64_t arenaPeak = 0, liveBytes = 0, liveBytesPeak = 0;
  /// Wall time per step over the timed steps (this rank's, exchanges
  /// included).
  bool timing = false;
  std::vector<double> stepSeconds;
  /// The bytes each op sent in the last step.
  std::vector<int64_t> stepBytes;
  std::optional<SafeTensorsFile> weights;
  std::optional<DataFile> data;
  Fault fault;
  /// Forward passes started.
  int64_t stepsRun = 0;
  /// What each MoE layer's routing kernel counted on this rank, by step.
  std::map<int64_t, ExpertLoad> expertLoad;
  /// What the steps whose bytes depend on the data should send, by step
  /// index: the bytes their counts imply and the balanced figure.
  std::map<int64_t, VariableBytes> variableBytes;
  /// The first such step of this rank that sent other than its counts
  /// imply: its pass (-1: none), op index, the bytes sent and implied.
  struct Mismatch {
    int64_t pass = -1, op = -1, sent = 0, implied = 0;
  } mismatch;
  /// Whether SHARDLINE_FAULT has falsified a figure in this pass.
  bool falsified = false;
  /// A forward run that records its routing: this rank's part of each
  /// router's indices in the last pass (tensor, values).
  std::vector<std::pair<int32_t, std::vector<float>>> lastChoices;
  /// Training steps the loaded weights have had (0: none, or generated).
  int64_t trainedBefore = 0;
  /// Optimizer steps they have had: AdamW's bias correction and the
  /// learning-rate schedule go on from there (0: a fresh optimizer).
  int64_t optimizerBefore = 0;
  /// The optimizer's state among the weights: every sl.adamw's moments and
  /// main copy.
  std::set<int32_t> optimizerState;
  /// The run's hyperparameters with the schedule's length resolved.
  TrainOptions train;
};

RunResult RankRun::run() {
  RunResult result;
  result.ranks = ranks;
  result.usedArena = useArena;
  try {
    if (!(options.timeoutSeconds > 0) || !std::isfinite(options.timeoutSeconds)) {
      char text[96];
      std::snprintf(text, sizeof text, "the timeout must be a positive number of seconds, not %g",
                    options.timeoutSeconds);
      fail(text);
    }
    comm.setTimeout(options.timeoutSeconds);
    if (!backend)
      fail(backendError);
    bool deviceComm = !options.deviceComm.empty();
    if (deviceComm && !(backend->deviceComm && options.deviceComm == backend->deviceComm))
      fail("--comm " + options.deviceComm +
           " moves values between the devices' own memories: "
           "the " +
           backend->name + " device has " +
           (backend->deviceComm ? backend->deviceComm
                                : std::string("none, its ranks exchange through the host "
                                              "(--comm threads or mpi)")));
    if (!deviceComm && backend->maxRanks > 0 && comm.size() > backend->maxRanks)
      fail("--device " + options.device + " runs at most " + std::to_string(backend->maxRanks) +
           (backend->maxRanks == 1 ? " rank" : " ranks") + ", the run has " +
           std::to_string(comm.size()) + ": " + backend->whyMaxRanks);
    std::string error;
    std::optional<Fault> injected = faultFromEnvironment(error);
    if (!injected)
      fail(error);
    fault = *injected;
    if (std::string why = refusedFault(); !why.empty())
      fail(why);
    if (!options.singleDevice && comm.size() != ranks)
      fail("the plan is for " + std::to_string(ranks) + " ranks, the run has " +
           std::to_string(comm.size()));
    if (options.singleDevice && comm.size() != 1)
      fail("the single-device run needs one rank, not " + std::to_string(comm.size()));
    if (std::string why = missingKernel(p, *backend); !why.empty())
      fail(why);
    std::optional<std::vector<Step>> decoded = decodeProgram(p, backend->kernels, error);
    if (!decoded)
      fail(error);
    program = std::move(*decoded);
    if (std::string why = verifyProgram(program, frame); !why.empty())
      fail(why);
    for (const TensorInfo &t : tensors)
      if (dtypeSize(device->storageType(t.dtype)) > t.elementBytes())
        fail(std::string("the ") + device->name() + " device holds " + dtypeName(t.dtype) +
             " in more bytes than the plan lays out for '" + t.name + "'");
    for (Step &step : program)
      if (step.kernel->resolve)
        step.kernel->resolve(step, frame);
    stepSeconds.assign(program.size(), 0.0);
    stepBytes.assign(program.size(), 0);
    checkSamePlan();
    // Every rank runs this plan: their lowerings split the world alike.
    if (deviceComm) {
      NcclLowering lowering = lowerToNccl(program, mesh, tensors, self);
      if (!lowering.error.empty())
        fail(lowering.error);
      if (std::string why = backend->connect(frame, lowering, options.timeoutSeconds); !why.empty())
        fail("--comm " + options.deviceComm + ": " + why);
    }
    if (useArena)
      arena = device->allocate(p.arena_bytes() + 4);
    openWeights();
    // The schedule decays over the steps up to the last of this run unless
    // told otherwise, as Megatron's over --train-iters.
    if (options.train && train.decaySteps == 0)
      train.decaySteps = trainedBefore + options.steps;
    if (options.train && train.decay != TrainOptions::Decay::Constant &&
        train.decaySteps <= train.warmupSteps)
      fail("the learning rate decays over steps " + std::to_string(train.warmupSteps) + " to " +
           std::to_string(train.decaySteps) +
           ": --lr-decay-iters must exceed --lr-warmup-iters (or use --lr-decay-style constant)");
    if (options.dataFile.empty()) {
      makeInputs();
    } else {
      if (p.inputs()->size() == 0)
        fail("--data gives a plan its tokens and labels, and this plan has no inputs");
      const auto &tokens = tensors[p.inputs()->Get(0)].shape;
      for (int32_t t : *p.inputs())
        if (tensors[t].shape.size() != 2 || tensors[t].shape != tokens)
          fail("--data fills inputs of one shape [batch, seq]; input '" + tensors[t].name +
               "' is " + shapeText(tensors[t].shape));
      data = DataFile::open(options.dataFile, options.dataDType, tokens[0], tokens[1],
                            p.facts() ? p.facts()->vocab() : 1, error);
      if (!data)
        fail(error);
    }
    for (bool copies : {false, true})
      for (size_t t = 0; t < tensors.size(); ++t)
        if (tensors[t].role == plan::Role::Weight && (copyOf((int64_t)t) >= 0) == copies)
          makeWeight((int32_t)t);
    // With more than one step, a first untimed step builds the transfer
    // plans, so the time per step is the steady state's. A training step
    // changes the weights: every one counts.
    if (options.steps > 1 && !options.train)
      runStep();
    collectives.barrier();
    auto start = std::chrono::steady_clock::now();
    timing = true;
    // A training run reports every step's loss (a forward run only the last
    // step's outputs).
    int32_t loss = options.train ? lossOutput() : -1;
    for (int64_t step = 0; step < std::max<int64_t>(1, options.steps); ++step) {
      auto stepStart = std::chrono::steady_clock::now();
      runStep();
      std::vector<float> value;
      if (loss >= 0)
        value = gatherToFirst(loss);
      if (self == 0)
        result.stepTimes.push_back(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - stepStart).count());
      if (loss >= 0) {
        if (self == 0) {
          result.losses.push_back(value[0]);
          if (options.onLoss)
            options.onLoss(trainedBefore + step + 1, value[0]);
        }
      }
    }
    timing = false;
    collectives.barrier();
    result.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::map<std::string, double> perKind;
    for (const Step &step : program)
      perKind[step.kind] += stepSeconds[step.index];
    for (const auto &[kind, secs] : perKind)
      result.opSeconds.emplace_back(kind, secs / (double)std::max<int64_t>(1, options.steps));
    result.collectivesByGroupSize = collectives.callsByGroupSize();
    gatherLastChoices();
    // The report prices each op at its busiest rank (a halo and its dual
    // send from different ranks), so the measure is the sum of each op's
    // largest count over the ranks.
    // Every rank's figures in one gather: each op's bytes, each dropless
    // op's balanced bytes, the arena's peaks and whether a step sent other
    // than its counts imply.
    std::vector<int64_t> figures = stepBytes;
    for (const auto &[index, bytes] : variableBytes)
      figures.push_back(bytes.balanced);
    figures.insert(figures.end(), {arenaPeak, liveBytesPeak, mismatch.pass >= 0 ? 1 : 0});
    std::vector<std::vector<int64_t>> everyRank = collectives.gatherCounts(figures);
    auto largest = [&](size_t k) {
      int64_t most = everyRank[0][k];
      for (const auto &rank : everyRank)
        most = std::max(most, rank[k]);
      return most;
    };
    result.bytesSentPerRank = 0;
    for (size_t index = 0; index < stepBytes.size(); ++index)
      result.bytesSentPerRank += largest(index);
    for (const auto &rank : everyRank) {
      int64_t sent = 0;
      for (size_t index = 0; index < stepBytes.size(); ++index)
        sent += rank[index];
      result.bytesSentByRank.push_back(sent);
    }
    size_t at = stepBytes.size();
    for (const auto &[index, bytes] : variableBytes) {
      result.variableBytesMeasured += largest(index);
      result.variableBytesBalanced += largest(at++);
    }
    result.arenaPeak = largest(at++);
    result.liveBytesPeak = largest(at++);
    result.variableBytesMismatch = largest(at) ? variableMismatches() : "";
    result.variableBytesExact = result.variableBytesMismatch.empty();
    // Every rank ran every step, so all hold the same entries: every
    // layer's kept and dropped counts, per expert, go to the first rank in
    // one gather.
    std::vector<int64_t> counts;
    for (const auto &[index, load] : expertLoad) {
      counts.insert(counts.end(), load.kept.begin(), load.kept.end());
      counts.insert(counts.end(), load.dropped.begin(), load.dropped.end());
    }
    std::vector<std::vector<int64_t>> allCounts;
    if (!expertLoad.empty())
      allCounts = collectives.gatherCounts(counts);
    at = 0;
    for (const auto &[index, load] : expertLoad) {
      LayerLoad layer;
      const auto *op = p.ops()->Get(index);
      layer.block = op->block();
      layer.capacity = op->kind()->str() == "moe_capacity_slots";
      size_t experts = load.kept.size();
      layer.kept.assign(experts, std::vector<int64_t>(allCounts.size()));
      layer.dropped = layer.kept;
      for (size_t r = 0; r < allCounts.size(); ++r)
        for (size_t e = 0; e < experts; ++e) {
          layer.kept[e][r] = allCounts[r][at + e];
          layer.dropped[e][r] = allCounts[r][at + experts + e];
        }
      at += 2 * experts;
      expertOwners(index, layer);
      if (self == 0)
        result.expertLoad.push_back(std::move(layer));
    }
    for (int32_t out : *p.outputs()) {
      std::vector<float> global = gatherToFirst(out);
      if (self == 0) {
        result.outputShapes.push_back(tensors[out].shape);
        result.outputTypes.push_back(tensors[out].dtype);
        result.outputNames.push_back(tensors[out].name.empty()
                                         ? "output" + std::to_string(result.outputs.size())
                                         : tensors[out].name);
        result.outputs.push_back(std::move(global));
      }
    }
    if (!options.saveWeightsFile.empty() || options.returnWeights) {
      std::map<std::string, TensorToWrite> all;
      for (size_t t = 0; t < tensors.size(); ++t)
        if (tensors[t].role == plan::Role::Weight) {
          std::vector<float> global = gatherToFirst((int32_t)t);
          if (self == 0)
            all[tensors[t].name] = {tensors[t].shape, std::move(global)};
        }
      if (!options.saveWeightsFile.empty())
        save(options.saveWeightsFile, all,
             {{kTrainedStepsKey, std::to_string(trainedBefore + (options.train ? stepsRun : 0))},
              {kOptimizerStepsKey,
               std::to_string(optimizerBefore + (options.train ? stepsRun : 0))}});
      if (options.returnWeights && self == 0)
        for (auto &[name, t] : all)
          result.weights[name] = {t.shape, std::move(t.values)};
    }
    if (!options.saveOutputsFile.empty())
      saveOutputs(result);
  } catch (Stop &stop) {
    if (!stop.aborted)
      comm.abort(stop.error);
    result.error = stop.aborted ? "aborted: another rank failed" : stop.error;
  } catch (std::bad_alloc &) {
    result.error = "rank " + std::to_string(self) + " is out of memory (arena of " +
                   std::to_string(p.arena_bytes()) + " bytes, weights and activations)";
    comm.abort(result.error);
  } catch (std::exception &e) {
    result.error = "rank " + std::to_string(self) + ": " + e.what();
    comm.abort(result.error);
  }
  result.rankLost = comm.rankLost();
  return result;
}

} // namespace

std::vector<int64_t> LayerLoad::perExpert(const std::vector<std::vector<int64_t>> &counts) {
  std::vector<int64_t> sums(counts.size(), 0);
  for (size_t e = 0; e < counts.size(); ++e)
    for (int64_t n : counts[e])
      sums[e] += n;
  return sums;
}

std::vector<int64_t> LayerLoad::perRank(const std::vector<std::vector<int64_t>> &counts) {
  std::vector<int64_t> sums(counts.empty() ? 0 : counts[0].size(), 0);
  for (const auto &perRank : counts)
    for (size_t r = 0; r < perRank.size() && r < sums.size(); ++r)
      sums[r] += perRank[r];
  return sums;
}

std::vector<int64_t> LayerLoad::sentByRank(bool offRank) const {
  std::vector<int64_t> sent(kept.empty() ? 0 : kept[0].size(), 0);
  for (size_t e = 0; e < kept.size(); ++e)
    for (size_t r = 0; r < kept[e].size(); ++r)
      if (!offRank || (e < owner.size() && owner[e][r] != (int64_t)r))
        sent[r] += kept[e][r];
  return sent;
}

std::vector<int64_t> LayerLoad::receivedByRank(bool offRank) const {
  std::vector<int64_t> received(kept.empty() ? 0 : kept[0].size(), 0);
  for (size_t e = 0; e < kept.size(); ++e)
    for (size_t r = 0; r < kept[e].size(); ++r) {
      int64_t to = e < owner.size() ? owner[e][r] : (int64_t)r;
      if (!offRank || to != (int64_t)r)
        received[to] += kept[e][r];
    }
  return received;
}

std::string checkProgram(const LoadedPlan &plan, const Backend &backend) {
  if (std::string why = missingKernel(*plan.root(), backend); !why.empty())
    return why;
  std::string error;
  std::optional<std::vector<Step>> program = decodeProgram(*plan.root(), backend.kernels, error);
  if (!program)
    return error;
  Mesh mesh = meshOf(*plan.root());
  std::vector<TensorInfo> tensors = tensorInfos(*plan.root(), mesh);
  std::vector<BufferView> views(tensors.size());
  return verifyProgram(*program, Frame{mesh, 0, tensors, views, nullptr});
}

bool isTrainingPlan(const plan::Plan &plan) {
  for (const auto *op : *plan.ops())
    if (op->kind()->str() == "adamw")
      return true;
  return false;
}

RunResult runPlanOnRank(const LoadedPlan &plan, const RunOptions &options, Comm &comm) {
  return RankRun(plan, options, comm).run();
}

RunResult runPlan(const LoadedPlan &plan, const RunOptions &options) {
  ThreadHub hub(options.singleDevice ? 1 : plan.ranks());
  return runPlan(plan, options, hub);
}

RunResult runPlan(const LoadedPlan &plan, const RunOptions &options, ThreadHub &hub) {
  int64_t ranks = hub.size();
  std::vector<RunResult> results(ranks);
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      ThreadComm comm(hub, r);
      results[r] = runPlanOnRank(plan, options, comm);
    });
  for (auto &t : threads)
    t.join();
  RunResult result = std::move(results[0]);
  if (!hub.error().empty())
    result.error = hub.error();
  result.rankLost = hub.rankLost();
  return result;
}

} // namespace shardline::rt
