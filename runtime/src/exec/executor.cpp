//===- executor.cpp - run a plan on ranks -----------------------------------===//

#include "exec/executor.h"

#include "comm/transfer.h"
#include "core/init.h"
#include "core/safetensors.h"
#include "kernels/cpu/kernels.h"

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <new>
#include <optional>
#include <set>
#include <thread>

namespace shardline::rt {

namespace {

/// Integer tensors (token ids, labels, expert indices) are held as floats,
/// exact below 2^24, so one data path moves every tensor.
std::vector<int32_t> asInts(const float *v, int64_t n) {
  std::vector<int32_t> out(n);
  for (int64_t i = 0; i < n; ++i)
    out[i] = (int32_t)v[i];
  return out;
}

/// Ends a rank's run: an error of its own, or the run was aborted by another.
struct Stop {
  std::string error;
  bool aborted = false;
};

struct TensorInfo {
  std::string name;
  std::vector<int64_t> shape;
  Layout layout;
  plan::Role role = plan::Role::Activation;
  InitSpec init;
  int64_t arenaOffset = -1;
  int64_t elementBytes = 4;
};

const std::set<std::string> kSupported = {
    "embedding",     "rms_norm",     "gated_rms_norm", "linear",        "lm_head",
    "rope",          "attention",    "ring_attention", "add",           "mul",
    "swiglu",        "silu",         "gelu",           "sigmoid",       "softplus",
    "cross_entropy", "all_gather",   "reduce_scatter", "all_reduce",    "all_to_all",
    "slice",         "reorder",      "relayout",       "causal_conv1d", "halo",
    "ssd_scan",      "ssd_correct",  "rglru_scan",     "rglru_correct", "scan_state_exchange",
    "router_topk",   "moe_dispatch", "moe_experts",    "moe_combine"};

const plan::Attr *findAttr(const plan::Op &op, const char *name) {
  if (op.attrs())
    for (const auto *a : *op.attrs())
      if (a->name()->str() == name)
        return a;
  return nullptr;
}
int64_t intAttr(const plan::Op &op, const char *name, int64_t fallback) {
  const plan::Attr *a = findAttr(op, name);
  return a && a->ints() && a->ints()->size() ? a->ints()->Get(0) : fallback;
}
double floatAttr(const plan::Op &op, const char *name, double fallback) {
  const plan::Attr *a = findAttr(op, name);
  return a && a->floats() && a->floats()->size() ? a->floats()->Get(0) : fallback;
}
std::vector<std::string> stringsAttr(const plan::Op &op, const char *name) {
  std::vector<std::string> out;
  if (const plan::Attr *a = findAttr(op, name); a && a->strings())
    for (const auto *s : *a->strings())
      out.push_back(s->str());
  return out;
}

std::string shapeText(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

/// One rank's run of the plan.
class RankRun {
public:
  RankRun(const LoadedPlan &loaded, const RunOptions &options, Comm &comm)
      : p(*loaded.root()), hash(loaded.hash), options(options), comm(comm), self(comm.rank()) {
    for (const auto *axis : *p.mesh())
      mesh.axes.emplace_back(axis->name()->str(), options.singleDevice ? 1 : axis->size());
    ranks = mesh.numRanks();
    for (const auto *t : *p.tensors()) {
      TensorInfo info;
      info.name = t->name() ? t->name()->str() : "";
      info.shape.assign(t->shape()->begin(), t->shape()->end());
      info.layout = layoutOf(*t);
      info.role = t->role();
      info.init = {t->init() == plan::Init::Uniform    ? InitKind::Uniform
                   : t->init() == plan::Init::Constant ? InitKind::Constant
                                                       : InitKind::Normal,
                   t->scale(), t->offset()};
      info.arenaOffset = t->arena_offset();
      info.elementBytes = elementBytes(t->dtype());
      tensors.push_back(std::move(info));
    }
    where.assign(tensors.size(), nullptr);
    own.assign(tensors.size(), {});
    count.assign(tensors.size(), 0);
    for (size_t t = 0; t < tensors.size(); ++t)
      count[t] = numElements(local((int32_t)t));
    // Last use of every value; the outputs stay live to the end of a step.
    int64_t numOps = (int64_t)p.ops()->size();
    lastUse.assign(tensors.size(), -1);
    for (int64_t i = 0; i < numOps; ++i) {
      const auto *op = p.ops()->Get(i);
      for (int32_t t : *op->operands())
        lastUse[t] = i;
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
    // The plan's arena is laid out for the partitioned shapes. The f32
    // reference holds 16-bit values at twice their size, so it scales every
    // offset by the same factor.
    useArena = !options.singleDevice;
    for (const auto &t : tensors)
      if (t.role != plan::Role::Weight && t.arenaOffset >= 0)
        arenaScale = std::max(arenaScale, 4 / t.elementBytes);
  }

  RunResult run();

private:
  [[noreturn]] void fail(const std::string &message) { throw Stop{message, false}; }

  std::vector<int64_t> local(int32_t t) const {
    return localShape(tensors[t].layout, mesh, tensors[t].shape);
  }
  std::vector<int64_t> owned(int32_t t, unsigned dim, int64_t rank) const {
    return ownedIndices(tensors[t].layout, mesh, tensors[t].shape, dim, rank);
  }
  std::vector<int64_t> globalOffsets(int32_t t, int64_t rank) const {
    return rt::globalOffsets(mesh, tensors[t].shape, tensors[t].layout, rank);
  }
  float *P(int32_t t) { return where[t]; }
  int64_t N(int32_t t) const { return count[t]; }

  /// Sends and receives through the comm; counts what this rank sends to
  /// other ranks as this step's traffic, each value at `bytesPerValue` (the
  /// size of the plan's element type: the f32 reference moves 16-bit values
  /// as f32).
  void trade(const std::vector<std::vector<float>> &sendTo,
             std::vector<std::vector<float>> &recvFrom, int64_t bytesPerValue) {
    std::string error;
    if (!comm.exchange(sendTo, recvFrom, error)) {
      if (!error.empty())
        fail(error);
      throw Stop{"", true};
    }
    for (int64_t m = 0; m < ranks; ++m)
      if (m != self)
        stepBytes += (int64_t)sendTo[m].size() * bytesPerValue;
  }
  std::vector<std::vector<float>> noMail() const { return std::vector<std::vector<float>>(ranks); }

  /// Every member of `members` sends this rank the same `n` values.
  std::vector<std::vector<float>> allGatherIn(const std::vector<int64_t> &members,
                                              const std::vector<float> &mine,
                                              int64_t bytesPerValue) {
    std::vector<std::vector<float>> sendTo = noMail(), recvFrom = noMail();
    for (int64_t m : members)
      if (m != self) {
        sendTo[m] = mine;
        recvFrom[m].resize(mine.size());
      }
    trade(sendTo, recvFrom, bytesPerValue);
    recvFrom[self] = mine;
    return recvFrom;
  }

  // -- storage ------------------------------------------------------------

  /// Places a value: at its planned arena offset (checked against every value
  /// still live there), or in a buffer of its own. Zero-filled.
  void place(int32_t t) {
    const TensorInfo &info = tensors[t];
    int64_t bytes = count[t] * info.elementBytes;
    if (useArena && info.arenaOffset >= 0) {
      int64_t begin = info.arenaOffset, end = begin + bytes;
      for (const auto &[other, range] : liveRanges)
        if (begin < range.second && range.first < end)
          fail("the plan places '" + info.name + "' at arena bytes [" + std::to_string(begin) +
               ", " + std::to_string(end) + ") over '" + tensors[other].name + "' at [" +
               std::to_string(range.first) + ", " + std::to_string(range.second) +
               "), which is still live");
      liveRanges[t] = {begin, end};
      where[t] = arena.data() + begin * arenaScale / 4;
      std::fill_n(where[t], count[t], 0.0f);
      arenaPeak = std::max(arenaPeak, begin + arenaSlotBytes(bytes));
    } else {
      own[t].assign(count[t], 0.0f);
      where[t] = own[t].data();
    }
    liveBytes += bytes;
  }
  void release(int32_t t) {
    if (!where[t])
      return;
    liveBytes -= count[t] * tensors[t].elementBytes;
    liveRanges.erase(t);
    std::vector<float>().swap(own[t]);
    where[t] = nullptr;
  }

  // -- setup ----------------------------------------------------------------

  void openWeights() {
    if (options.weightsFile.empty())
      return;
    std::string err;
    weights = SafeTensorsFile::open(options.weightsFile, err);
    if (!weights)
      fail(err);
    for (const auto &t : tensors) {
      if (t.role != plan::Role::Weight)
        continue;
      const SafeTensor *found = weights->find(t.name);
      if (!found)
        fail("weight '" + t.name + "' is not in " + options.weightsFile);
      if (found->shape != t.shape)
        fail("weight '" + t.name + "' in " + options.weightsFile + " has shape " +
             shapeText(found->shape) + ", the model needs " + shapeText(t.shape));
    }
  }

  /// Tokens and labels: uniform in [0, vocab) from the seed by global index;
  /// vocab is the embedding table's first dimension.
  void makeInputs() {
    int64_t vocab = 1;
    for (const auto &t : tensors)
      if (t.role == plan::Role::Weight && t.name == "embedding.table")
        vocab = t.shape[0];
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

  void makeWeight(int32_t t) {
    std::vector<std::vector<int64_t>> ownIdx;
    for (unsigned d = 0; d < tensors[t].shape.size(); ++d)
      ownIdx.push_back(owned(t, d, self));
    own[t].assign(count[t], 0.0f);
    where[t] = own[t].data();
    if (!weights) {
      fillShard(tensors[t].init, options.seed, tensors[t].name, tensors[t].shape, ownIdx,
                own[t].data());
      return;
    }
    // This rank's shard of the file's tensor, by global element index.
    const SafeTensor &found = *weights->find(tensors[t].name);
    std::vector<int64_t> offsets = globalOffsets(t, self);
    for (int64_t i = 0; i < count[t]; ++i)
      own[t][i] = weights->at(found, offsets[i]);
  }

  std::vector<uint64_t> gatherWord(uint64_t word) {
    std::vector<uint64_t> all;
    std::string err;
    if (!comm.allGather(word, all, err)) {
      if (!err.empty())
        fail(err);
      throw Stop{"", true};
    }
    return all;
  }

  /// Every rank must run the same plan with the same options that shape the
  /// run (ranks that disagree on the steps or on saving the weights would
  /// wait for each other in different collectives).
  void checkSamePlan() {
    std::vector<uint64_t> all = gatherWord(hash);
    for (size_t m = 0; m < all.size(); ++m)
      if (all[m] != hash) {
        char text[160];
        std::snprintf(text, sizeof text,
                      "rank %zu runs another plan (hash %016" PRIx64 ") than rank %lld (hash "
                      "%016" PRIx64 "): every rank must run the same model",
                      m, all[m], (long long)self, hash);
        fail(text);
      }
    uint64_t fields[4] = {options.seed, (uint64_t)options.steps,
                          (uint64_t)!options.weightsFile.empty(),
                          (uint64_t)!options.saveWeightsFile.empty()};
    uint64_t mine = fnv1a64(fields, sizeof fields);
    all = gatherWord(mine);
    for (size_t m = 0; m < all.size(); ++m)
      if (all[m] != mine)
        fail("rank " + std::to_string(m) + " runs with other options than rank " +
             std::to_string(self) +
             ": --seed, --steps, and whether --weights and --save-weights are given must agree "
             "on every rank");
  }

  /// The largest of a figure over the ranks.
  int64_t maxOverRanks(int64_t value) {
    std::vector<uint64_t> all = gatherWord((uint64_t)value);
    return (int64_t)*std::max_element(all.begin(), all.end());
  }

  /// A global tensor on rank 0 from every rank's part (pending sums are
  /// already whole); empty on the other ranks. Not counted as traffic.
  std::vector<float> gatherToFirst(int32_t t) {
    std::vector<std::vector<float>> sendTo = noMail(), recvFrom = noMail();
    std::vector<float> mine(P(t), P(t) + N(t));
    if (self != 0)
      sendTo[0] = mine;
    else
      for (int64_t m = 1; m < ranks; ++m)
        recvFrom[m].resize(N(t));
    trade(sendTo, recvFrom, 0);
    if (self != 0)
      return {};
    recvFrom[0] = std::move(mine);
    std::vector<float> global(numElements(tensors[t].shape), 0.0f);
    for (int64_t r = 0; r < ranks; ++r) {
      std::vector<int64_t> offsets = globalOffsets(t, r);
      for (size_t i = 0; i < offsets.size(); ++i)
        global[offsets[i]] = recvFrom[r][i];
    }
    return global;
  }

  void runStep() {
    stepBytes = 0;
    for (size_t t = 0; t < tensors.size(); ++t)
      if (tensors[t].role != plan::Role::Weight)
        release((int32_t)t);
    for (const auto &[t, values] : inputs) {
      place(t);
      std::copy(values.begin(), values.end(), where[t]);
    }
    for (int64_t i = 0; i < (int64_t)p.ops()->size(); ++i) {
      const plan::Op &op = *p.ops()->Get(i);
      opIndex = i;
      try {
        for (int32_t t : *op.results())
          if (tensors[t].role != plan::Role::Weight)
            place(t);
        liveBytesPeak = std::max(liveBytesPeak, liveBytes);
        auto start = std::chrono::steady_clock::now();
        runOp(op);
        if (timing)
          opSeconds[op.kind()->str()] +=
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      } catch (Stop &stop) {
        if (!stop.aborted)
          stop.error = "op " + op.kind()->str() + " at " +
                       (op.location() ? op.location()->str() : "?") + ": " + stop.error;
        throw;
      }
      for (int32_t t : dying[i])
        release(t);
    }
  }

  void runOp(const plan::Op &op);
  void layoutOp(const plan::Op &op);
  void runTransfer(int64_t key, const std::vector<int64_t> &shape, const Layout &from,
                   const Layout &to, const float *src, float *dst, int64_t bytesPerValue);
  void allReduce(int32_t t, float *dst);
  void attention(const plan::Op &op, bool ring);
  int64_t chunksOf(int32_t t) const {
    const Layout &l = tensors[t].layout;
    return !l.dims[1].empty() && l.dimOrder(1) == ChunkOrder::Zigzag ? 2 : 1;
  }
  /// Calls fn(row, b, c) for every sequence chunk c of every batch entry b of
  /// a local [batch, seq, ...] value: its chunks (two per rank in zigzag
  /// order when `chunked`, else the whole local sequence) and the first row
  /// of each. Chunk summaries (states, halos) are indexed by (b, c).
  template <typename Fn> void forEachChunk(int32_t x, bool chunked, Fn fn) const {
    std::vector<int64_t> xl = local(x);
    int64_t k = chunked ? chunksOf(x) : 1, length = xl[1] / k;
    for (int64_t b = 0; b < xl[0]; ++b)
      for (int64_t c = 0; c < k; ++c)
        fn(b * xl[1] + c * length, b, c);
  }
  void conv(const plan::Op &op);
  void halo(const plan::Op &op);
  void ssdPrelude(int32_t dt, int32_t aLog, int32_t dtBias, std::vector<float> &dtOut,
                  std::vector<float> &A);
  void ssd(const plan::Op &op, bool correct);
  void rglru(const plan::Op &op, bool correct);
  void stateExchange(const plan::Op &op);
  void moe(const plan::Op &op, const std::string &kind);
  void crossEntropy(const plan::Op &op);

  struct CachedTransfer {
    TransferPlan mine;
    /// What each other rank reads from this one, in its order.
    std::vector<std::vector<int64_t>> sends;
  };

  const plan::Plan &p;
  uint64_t hash;
  RunOptions options;
  Comm &comm;
  int64_t self;
  Mesh mesh;
  int64_t ranks = 1;
  std::vector<TensorInfo> tensors;
  std::vector<float *> where;
  std::vector<std::vector<float>> own;
  std::vector<int64_t> count, lastUse;
  std::vector<std::vector<int32_t>> dying;
  std::map<int32_t, std::vector<float>> inputs;
  bool useArena = false;
  int64_t arenaScale = 1;
  std::vector<float> arena;
  std::map<int32_t, std::pair<int64_t, int64_t>> liveRanges;
  int64_t arenaPeak = 0, liveBytes = 0, liveBytesPeak = 0, stepBytes = 0;
  int64_t opIndex = 0;
  /// Wall time per op kind over the timed steps (this rank's, exchanges
  /// included).
  bool timing = false;
  std::map<std::string, double> opSeconds;
  std::map<int64_t, CachedTransfer> transfers;
  std::optional<SafeTensorsFile> weights;
};

RunResult RankRun::run() {
  RunResult result;
  result.ranks = ranks;
  result.usedArena = useArena;
  try {
    if (!options.singleDevice && comm.size() != ranks)
      fail("the plan is for " + std::to_string(ranks) + " ranks, the run has " +
           std::to_string(comm.size()));
    if (options.singleDevice && comm.size() != 1)
      fail("the single-device run needs one rank, not " + std::to_string(comm.size()));
    for (const auto *op : *p.ops())
      if (!executorSupports(op->kind()->str()))
        fail("the executor does not run sl." + op->kind()->str() + " yet");
    checkSamePlan();
    if (useArena)
      arena.assign(p.arena_bytes() * arenaScale / 4 + 1, 0.0f);
    openWeights();
    makeInputs();
    for (size_t t = 0; t < tensors.size(); ++t)
      if (tensors[t].role == plan::Role::Weight)
        makeWeight((int32_t)t);
    // With more than one step, a first untimed step builds the transfer
    // plans, so the time per step is the steady state's.
    if (options.steps > 1)
      runStep();
    if (!comm.barrier())
      throw Stop{"", true};
    auto start = std::chrono::steady_clock::now();
    timing = true;
    for (int64_t step = 0; step < std::max<int64_t>(1, options.steps); ++step)
      runStep();
    timing = false;
    if (!comm.barrier())
      throw Stop{"", true};
    result.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    for (const auto &[kind, secs] : opSeconds)
      result.opSeconds.emplace_back(kind, secs / (double)std::max<int64_t>(1, options.steps));
    result.bytesSentPerRank = maxOverRanks(stepBytes);
    result.arenaPeak = maxOverRanks(arenaPeak);
    result.liveBytesPeak = maxOverRanks(liveBytesPeak);
    for (int32_t out : *p.outputs()) {
      std::vector<float> global = gatherToFirst(out);
      if (self == 0) {
        result.outputShapes.push_back(tensors[out].shape);
        result.outputs.push_back(std::move(global));
      }
    }
    if (!options.saveWeightsFile.empty()) {
      std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>> all;
      for (size_t t = 0; t < tensors.size(); ++t)
        if (tensors[t].role == plan::Role::Weight) {
          std::vector<float> global = gatherToFirst((int32_t)t);
          if (self == 0)
            all[tensors[t].name] = {tensors[t].shape, std::move(global)};
        }
      std::string err;
      if (self == 0 && !writeSafeTensors(options.saveWeightsFile, all, err))
        fail(err);
    }
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
  return result;
}

void RankRun::runOp(const plan::Op &op) {
  const std::string kind = op.kind()->str();
  auto in = [&](int i) { return op.operands()->Get(i); };
  int32_t out = op.results()->Get(0);
  if (kind == "add" || kind == "mul" || kind == "swiglu") {
    const float *a = P(in(0)), *b = P(in(1));
    if (kind == "add")
      cpu::add(a, b, N(out), P(out));
    else if (kind == "mul")
      cpu::mul(a, b, N(out), P(out));
    else
      cpu::swiglu(a, b, N(out), P(out));
    return;
  }
  if (kind == "silu" || kind == "gelu" || kind == "sigmoid" || kind == "softplus") {
    const float *x = P(in(0));
    if (kind == "silu")
      cpu::silu(x, N(out), P(out));
    else if (kind == "gelu")
      cpu::gelu(x, N(out), P(out));
    else if (kind == "sigmoid")
      cpu::sigmoid(x, N(out), P(out));
    else
      cpu::softplus(x, N(out), P(out));
    return;
  }
  if (kind == "embedding") {
    std::vector<int64_t> table = local(in(1));
    int64_t offset = owned(in(1), 0, self).front();
    std::vector<int32_t> ids = asInts(P(in(0)), N(in(0)));
    cpu::embedding(ids.data(), (int64_t)ids.size(), P(in(1)), table[0], table[1], offset, P(out));
    return;
  }
  if (kind == "rms_norm") {
    int64_t h = local(in(0)).back();
    cpu::rms_norm(P(in(0)), P(in(1)), N(out) / h, h, (float)floatAttr(op, "eps", 1e-5), P(out));
    return;
  }
  if (kind == "gated_rms_norm") {
    int64_t c = local(in(0)).back();
    int64_t groups = intAttr(op, "groups", 1) * c / tensors[in(0)].shape.back();
    cpu::gated_rms_norm(P(in(0)), P(in(1)), P(in(2)), N(out) / c, c, groups,
                        (float)floatAttr(op, "eps", 1e-5), P(out));
    return;
  }
  if (kind == "linear" || kind == "lm_head") {
    std::vector<int64_t> w = local(in(1));
    cpu::linear(P(in(0)), P(in(1)), N(out) / w[1], w[0], w[1], P(out));
    return;
  }
  if (kind == "rope") {
    std::vector<int64_t> x = local(in(0));
    int64_t d = intAttr(op, "head_dim", 1);
    std::vector<int64_t> pos = owned(in(0), 1, self);
    cpu::rope(P(in(0)), pos.data(), x[0], x[1], x[2] / d, d, (float)floatAttr(op, "theta", 10000.0),
              P(out));
    return;
  }
  if (kind == "attention" || kind == "ring_attention")
    return attention(op, kind == "ring_attention");
  if (kind == "causal_conv1d")
    return conv(op);
  if (kind == "halo")
    return halo(op);
  if (kind == "ssd_scan" || kind == "ssd_correct")
    return ssd(op, kind == "ssd_correct");
  if (kind == "rglru_scan" || kind == "rglru_correct")
    return rglru(op, kind == "rglru_correct");
  if (kind == "scan_state_exchange")
    return stateExchange(op);
  if (kind == "router_topk" || kind == "moe_dispatch" || kind == "moe_experts" ||
      kind == "moe_combine")
    return moe(op, kind);
  if (kind == "cross_entropy")
    return crossEntropy(op);
  layoutOp(op);
}

/// Layout transitions: all-gather, reduce-scatter, all-reduce, all-to-all,
/// slice, reorder, relayout.
void RankRun::layoutOp(const plan::Op &op) {
  int32_t x = op.operands()->Get(0), out = op.results()->Get(0);
  const Layout &from = tensors[x].layout, &to = tensors[out].layout;
  if (op.kind()->str() == "all_reduce" && !from.partial.empty())
    return allReduce(x, P(out));
  runTransfer(2 * opIndex, tensors[out].shape, from, to, P(x), P(out), tensors[x].elementBytes);
}

/// Moves a tensor between layouts: each rank sends every other rank exactly
/// the elements that rank reads from it (the plans of every rank are computed
/// once and kept for later steps).
void RankRun::runTransfer(int64_t key, const std::vector<int64_t> &shape, const Layout &from,
                          const Layout &to, const float *src, float *dst, int64_t bytesPerValue) {
  auto it = transfers.find(key);
  if (it == transfers.end()) {
    CachedTransfer c;
    c.mine = planTransfer(mesh, shape, from, to, self);
    if (!c.mine.error.empty())
      fail(c.mine.error);
    c.sends.assign(ranks, {});
    // A rank reads only from ranks that share its coordinates on every axis
    // the source layout does not use; only those can need this rank's values.
    std::vector<bool> used(mesh.axes.size(), false);
    for (const auto &dim : from.dims)
      for (const auto &a : dim)
        used[mesh.axisIndex(a)] = true;
    for (const auto &a : from.partial)
      used[mesh.axisIndex(a)] = true;
    std::vector<int64_t> me = mesh.coords(self);
    for (int64_t m = 0; m < ranks; ++m) {
      if (m == self)
        continue;
      std::vector<int64_t> theirs = mesh.coords(m);
      bool reachable = true;
      for (size_t i = 0; i < used.size(); ++i)
        if (!used[i] && theirs[i] != me[i])
          reachable = false;
      if (reachable)
        c.sends[m] = planTransfer(mesh, shape, from, to, m).reads[self];
    }
    it = transfers.emplace(key, std::move(c)).first;
  }
  const CachedTransfer &c = it->second;
  std::vector<std::vector<float>> sendTo = noMail(), recvFrom = noMail();
  for (int64_t m = 0; m < ranks; ++m) {
    if (m == self)
      continue;
    sendTo[m].reserve(c.sends[m].size());
    for (int64_t offset : c.sends[m])
      sendTo[m].push_back(src[offset]);
    recvFrom[m].resize(c.mine.reads[m].size());
  }
  trade(sendTo, recvFrom, bytesPerValue);
  applyTransfer(c.mine, self, src, recvFrom, dst);
}

/// Bandwidth-optimal: reduce-scatter onto the largest dimension the group
/// divides, then all-gather it back.
void RankRun::allReduce(int32_t t, float *dst) {
  const Layout &from = tensors[t].layout;
  Layout mid = from, to = from;
  to.partial.clear();
  mid.partial.clear();
  int64_t g = mesh.product(from.partial), eb = tensors[t].elementBytes;
  std::vector<int64_t> loc = local(t);
  int64_t dim = -1;
  for (size_t d = 0; d < loc.size(); ++d)
    if (loc[d] % g == 0 && (dim < 0 || loc[d] > loc[dim]))
      dim = (int64_t)d;
  if (dim < 0 || g == 1)
    return runTransfer(2 * opIndex, tensors[t].shape, from, to, P(t), dst, eb);
  mid.dims[dim].insert(mid.dims[dim].end(), from.partial.begin(), from.partial.end());
  if (mid.orderDim == dim && mid.dims[dim].size() == from.partial.size())
    mid.orderDim = -1;
  std::vector<float> half(numElements(localShape(mid, mesh, tensors[t].shape)));
  runTransfer(2 * opIndex, tensors[t].shape, from, mid, P(t), half.data(), eb);
  runTransfer(2 * opIndex + 1, tensors[t].shape, mid, to, half.data(), dst, eb);
}

void RankRun::attention(const plan::Op &op, bool ring) {
  int32_t q = op.operands()->Get(0), k = op.operands()->Get(1), v = op.operands()->Get(2);
  int32_t out = op.results()->Get(0);
  std::vector<int64_t> ql = local(q), kl = local(k);
  int64_t heads = intAttr(op, "heads", 1);
  int64_t d = tensors[q].shape[2] / heads;
  cpu::AttentionDims dims{ql[0], ql[1], kl[1], ql[2] / d, kl[2] / d, d};
  bool causal = intAttr(op, "causal", 1) != 0;
  float scale = (float)floatAttr(op, "scale", 1.0 / std::sqrt((double)d));
  float *y = P(out);
  std::vector<int64_t> qPos = owned(q, 1, self);
  if (!ring) {
    std::vector<int64_t> kPos = owned(k, 1, self);
    cpu::attention(P(q), P(k), P(v), qPos.data(), kPos.data(), dims, causal, scale, y, nullptr);
    return;
  }
  // Ring: every member's keys and values reach every other member once; the
  // partial results are merged by their log-sum-exp, own block first.
  std::vector<int64_t> members = mesh.group(self, stringsAttr(op, "axes"));
  std::vector<float> kv(P(k), P(k) + N(k));
  kv.insert(kv.end(), P(v), P(v) + N(v));
  std::vector<std::vector<float>> blocks = allGatherIn(members, kv, tensors[k].elementBytes);
  std::vector<float> lse(dims.B * dims.HQ * dims.Sq), part(N(out)), partLse(lse.size());
  bool first = true;
  std::rotate(members.begin(), std::find(members.begin(), members.end(), self), members.end());
  for (int64_t m : members) {
    std::vector<int64_t> kPos = owned(k, 1, m);
    const float *kb = blocks[m].data(), *vb = kb + N(k);
    cpu::attention(P(q), kb, vb, qPos.data(), kPos.data(), dims, causal, scale,
                   first ? y : part.data(), first ? lse.data() : partLse.data());
    if (!first)
      cpu::attention_merge(y, lse.data(), part.data(), partLse.data(), dims.B, dims.Sq, dims.HQ,
                           dims.D, y, lse.data());
    first = false;
  }
}

void RankRun::conv(const plan::Op &op) {
  int32_t x = op.operands()->Get(0), w = op.operands()->Get(1), b = op.operands()->Get(2);
  bool hasHalo = op.operands()->size() > 3;
  int32_t out = op.results()->Get(0);
  std::vector<int64_t> xl = local(x);
  int64_t W = local(w)[1], k = hasHalo ? chunksOf(x) : 1, S = xl[1] / k, C = xl[2];
  const float *hx = hasHalo ? P(op.operands()->Get(3)) : nullptr;
  forEachChunk(x, hasHalo, [&](int64_t rows, int64_t bi, int64_t c) {
    const float *haloRows = hx ? hx + (bi * k + c) * (W - 1) * C : nullptr;
    cpu::causal_conv1d(P(x) + rows * C, P(w), P(b), haloRows, 1, S, C, W, P(out) + rows * C);
  });
}

/// The width tokens before each local chunk, from whoever holds them: every
/// rank works out what each member of its group needs and sends those rows.
void RankRun::halo(const plan::Op &op) {
  int32_t x = op.operands()->Get(0), out = op.results()->Get(0);
  int64_t width = intAttr(op, "width", 1);
  std::vector<int64_t> xl = local(x);
  int64_t k = chunksOf(x), S = xl[1] / k, C = xl[2], B = xl[0];
  std::vector<int64_t> members = mesh.group(self, stringsAttr(op, "axes"));
  std::map<int64_t, std::vector<int64_t>> positions;
  for (int64_t m : members)
    positions[m] = owned(x, 1, m);
  struct Need {
    int64_t from, row, chunk, j;
  };
  // The rows rank `q` needs, in the order they travel.
  auto needs = [&](int64_t q) {
    std::vector<Need> out;
    const std::vector<int64_t> &mine = positions[q];
    for (int64_t c = 0; c < k; ++c)
      for (int64_t j = 0; j < width; ++j) {
        int64_t pos = mine[c * S] - width + j;
        if (pos < 0)
          continue;
        for (int64_t m : members) {
          const std::vector<int64_t> &theirs = positions[m];
          auto it = std::find(theirs.begin(), theirs.end(), pos);
          if (it != theirs.end()) {
            out.push_back({m, it - theirs.begin(), c, j});
            break;
          }
        }
      }
    return out;
  };
  std::vector<std::vector<float>> sendTo = noMail(), recvFrom = noMail();
  for (int64_t q : members)
    if (q != self)
      for (const Need &n : needs(q))
        if (n.from == self)
          for (int64_t bi = 0; bi < B; ++bi)
            sendTo[q].insert(sendTo[q].end(), P(x) + (bi * xl[1] + n.row) * C,
                             P(x) + (bi * xl[1] + n.row + 1) * C);
  std::vector<Need> mine = needs(self);
  for (const Need &n : mine)
    if (n.from != self)
      recvFrom[n.from].resize(recvFrom[n.from].size() + B * C);
  trade(sendTo, recvFrom, tensors[x].elementBytes);
  std::vector<size_t> next(ranks, 0);
  float *y = P(out);
  for (const Need &n : mine)
    for (int64_t bi = 0; bi < B; ++bi) {
      const float *row =
          n.from == self ? P(x) + (bi * xl[1] + n.row) * C : recvFrom[n.from].data() + next[n.from];
      if (n.from != self)
        next[n.from] += C;
      std::copy_n(row, C, y + ((bi * k + n.chunk) * width + n.j) * C);
    }
}

/// softplus(dt + dt_bias) and -exp(a_log) for the local heads.
void RankRun::ssdPrelude(int32_t dt, int32_t aLog, int32_t dtBias, std::vector<float> &dtOut,
                         std::vector<float> &A) {
  const float *d = P(dt), *bias = P(dtBias);
  int64_t nh = N(dtBias);
  dtOut.resize(N(dt));
  for (int64_t i = 0; i < N(dt); ++i)
    dtOut[i] = d[i] + bias[i % nh];
  cpu::softplus(dtOut.data(), (int64_t)dtOut.size(), dtOut.data());
  A.resize(nh);
  for (int64_t h = 0; h < nh; ++h)
    A[h] = -std::exp(P(aLog)[h]);
}

void RankRun::ssd(const plan::Op &op, bool correct) {
  auto in = [&](int i) { return op.operands()->Get(i); };
  int64_t heads = intAttr(op, "heads", 1), groups = intAttr(op, "groups", 1);
  // ssd_scan: x, dt, a_log, B, C, d, dt_bias[, state_in];
  // ssd_correct: y0, init, C, dt, a_log, dt_bias.
  int32_t x = in(0), dt = correct ? in(3) : in(1), aLog = correct ? in(4) : in(2),
          Cm = correct ? in(2) : in(4), dtBias = correct ? in(5) : in(6);
  std::vector<int64_t> xl = local(x), cl = local(Cm);
  int64_t nh = local(dt)[2], hp = tensors[x].shape[2] / heads;
  int64_t g = groups * cl[2] / tensors[Cm].shape[2], n = cl[2] / g;
  bool chunked = !stringsAttr(op, "chunk_axes").empty();
  int64_t k = chunked ? chunksOf(x) : 1, S = xl[1] / k, B = xl[0];
  std::vector<float> dtv, A;
  ssdPrelude(dt, aLog, dtBias, dtv, A);
  cpu::SsdDims dims{1, S, nh, hp, g, n};
  int32_t out = op.results()->Get(0);
  float *y = P(out);
  if (correct) {
    std::copy_n(P(x), N(x), y);
    std::vector<float> state(nh * hp * n);
    forEachChunk(x, chunked, [&](int64_t rows, int64_t bi, int64_t c) {
      cpu::ssd_state_correct(P(Cm) + rows * g * n, dtv.data() + rows * nh, A.data(),
                             P(in(1)) + (c * B + bi) * nh * hp * n, dims, y + rows * nh * hp,
                             state.data());
    });
    return;
  }
  float *state = P(op.results()->Get(1)), *decay = P(op.results()->Get(2));
  const float *stateIn = op.operands()->size() > 7 ? P(in(7)) : nullptr;
  forEachChunk(x, chunked, [&](int64_t rows, int64_t bi, int64_t c) {
    int64_t slot = c * B + bi;
    cpu::ssd_scan(P(x) + rows * nh * hp, dtv.data() + rows * nh, A.data(), P(in(3)) + rows * g * n,
                  P(Cm) + rows * g * n, P(in(5)), stateIn ? stateIn + slot * nh * hp * n : nullptr,
                  dims, y + rows * nh * hp, state + slot * nh * hp * n, decay + slot * nh);
  });
}

void RankRun::rglru(const plan::Op &op, bool correct) {
  auto in = [&](int i) { return op.operands()->Get(i); };
  // rglru_scan: x, wa, ba, wx, bx, lambda[, state_in];
  // rglru_correct: y0, init, x, wa, ba, lambda.
  int32_t x = correct ? in(2) : in(0), wa = correct ? in(3) : in(1), ba = correct ? in(4) : in(2),
          lambda = in(5);
  std::vector<int64_t> xl = local(x);
  bool chunked = !stringsAttr(op, "chunk_axes").empty();
  int64_t k = chunked ? chunksOf(x) : 1, S = xl[1] / k, B = xl[0], W = xl[2];
  const float *xv = P(x);
  std::vector<float> gateA(N(x)), gateX(N(x));
  for (int64_t i = 0; i < N(x); ++i) {
    int64_t c = i % W;
    gateA[i] = P(wa)[c] * xv[i] + P(ba)[c];
    if (!correct)
      gateX[i] = P(in(3))[c] * xv[i] + P(in(4))[c];
  }
  float *y = P(op.results()->Get(0));
  if (correct) {
    std::copy_n(P(in(0)), N(in(0)), y);
    std::vector<float> state(W);
    forEachChunk(x, chunked, [&](int64_t rows, int64_t bi, int64_t c) {
      cpu::rglru_state_correct(gateA.data() + rows * W, P(lambda), P(in(1)) + (c * B + bi) * W, 1,
                               S, W, y + rows * W, state.data());
    });
    return;
  }
  float *state = P(op.results()->Get(1)), *decay = P(op.results()->Get(2));
  const float *stateIn = op.operands()->size() > 6 ? P(in(6)) : nullptr;
  forEachChunk(x, chunked, [&](int64_t rows, int64_t bi, int64_t c) {
    int64_t slot = c * B + bi;
    cpu::rglru_scan(xv + rows * W, gateA.data() + rows * W, gateX.data() + rows * W, P(lambda),
                    stateIn ? stateIn + slot * W : nullptr, 1, S, W, y + rows * W, state + slot * W,
                    decay + slot * W);
  });
}

/// Every chunk's true initial state from all chunks' (state, decay)
/// summaries, in sequence order.
void RankRun::stateExchange(const plan::Op &op) {
  int32_t st = op.operands()->Get(0), dec = op.operands()->Get(1), out = op.results()->Get(0);
  int64_t chunks = tensors[st].shape[0];
  std::vector<int64_t> sl = local(st);
  int64_t stateSize = N(st) / sl[0], decaySize = N(dec) / sl[0];
  std::vector<int64_t> members = mesh.group(self, stringsAttr(op, "axes"));
  std::vector<float> mine(P(st), P(st) + N(st));
  mine.insert(mine.end(), P(dec), P(dec) + N(dec));
  std::vector<std::vector<float>> all = allGatherIn(members, mine, 0);
  stepBytes += ((int64_t)members.size() - 1) *
               (N(st) * tensors[st].elementBytes + N(dec) * tensors[dec].elementBytes);
  std::vector<float> allStates(chunks * stateSize), allDecays(chunks * decaySize);
  for (int64_t m : members) {
    std::vector<int64_t> theirs = owned(st, 0, m);
    for (size_t i = 0; i < theirs.size(); ++i) {
      std::copy_n(all[m].data() + i * stateSize, stateSize,
                  allStates.data() + theirs[i] * stateSize);
      std::copy_n(all[m].data() + N(st) + i * decaySize, decaySize,
                  allDecays.data() + theirs[i] * decaySize);
    }
  }
  std::vector<float> init(chunks * stateSize);
  cpu::scan_combine_states(allDecays.data(), allStates.data(), nullptr, chunks, decaySize,
                           stateSize / decaySize, init.data(), nullptr);
  std::vector<int64_t> ownChunks = owned(out, 0, self);
  for (size_t i = 0; i < ownChunks.size(); ++i)
    std::copy_n(init.data() + ownChunks[i] * stateSize, stateSize, P(out) + i * stateSize);
}

void RankRun::moe(const plan::Op &op, const std::string &kind) {
  auto in = [&](int i) { return op.operands()->Get(i); };
  int32_t out = op.results()->Get(0);
  float *y = P(out);
  if (kind == "router_topk") {
    std::vector<int64_t> l = local(in(0));
    int64_t k = intAttr(op, "k", 1), T = l[0] * l[1];
    std::vector<int32_t> idx(T * k);
    cpu::router_topk(P(in(0)), T, l[2], k, y, idx.data());
    std::copy(idx.begin(), idx.end(), P(op.results()->Get(1)));
    return;
  }
  if (kind == "moe_dispatch") {
    std::vector<int64_t> xl = local(in(0)), il = local(in(1));
    int64_t T = xl[0] * xl[1], H = xl[2], k = il[2];
    const float *x = P(in(0)), *idx = P(in(1));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < k; ++j) {
        int64_t e = (int64_t)idx[t * k + j];
        std::copy_n(x + t * H, H, y + (e * T + t) * H);
      }
    return;
  }
  if (kind == "moe_experts") {
    // The dispatch is dropless and static: each expert's slab holds a row per
    // token, zero where the router did not choose it. An expert maps a zero
    // row to zero (no biases), so only the other rows are computed: packed
    // per expert, then put back in place.
    std::vector<int64_t> tl = local(in(0)), gl = local(in(1));
    int64_t E = tl[0], rows = tl[1] * tl[2], H = tl[3];
    const float *x = P(in(0));
    std::vector<int32_t> counts(E, 0);
    std::vector<int64_t> where;
    std::vector<float> packed;
    for (int64_t e = 0; e < E; ++e)
      for (int64_t r = 0; r < rows; ++r) {
        const float *row = x + (e * rows + r) * H;
        if (std::all_of(row, row + H, [](float v) { return v == 0.0f; }))
          continue;
        ++counts[e];
        where.push_back(e * rows + r);
        packed.insert(packed.end(), row, row + H);
      }
    std::vector<float> out(packed.size());
    cpu::moe_experts(packed.data(), counts.data(), E, P(in(1)), P(in(2)), P(in(3)), gl[1], gl[2],
                     out.data());
    for (size_t i = 0; i < where.size(); ++i)
      std::copy_n(out.data() + i * H, H, y + where[i] * H);
    return;
  }
  // moe_combine: y[t] = sum_j weights[t, j] * expert_out[indices[t, j], t]
  std::vector<int64_t> el = local(in(0)), wl = local(in(1));
  int64_t T = el[1] * el[2], H = el[3], k = wl[2];
  const float *eo = P(in(0)), *w = P(in(1)), *idx = P(in(2));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < k; ++j) {
      int64_t e = (int64_t)idx[t * k + j];
      float weight = w[t * k + j];
      for (int64_t h = 0; h < H; ++h)
        y[t * H + h] += weight * eo[(e * T + t) * H + h];
    }
}

/// Vocabulary-parallel cross-entropy: per token, the maximum, then the sum of
/// exponentials and the target logit, each combined over the vocabulary's
/// shards.
void RankRun::crossEntropy(const plan::Op &op) {
  int32_t logits = op.operands()->Get(0), labels = op.operands()->Get(1);
  int32_t out = op.results()->Get(0);
  std::vector<int64_t> l = local(logits);
  int64_t T = l[0] * l[1], V = l[2];
  int64_t tokens = tensors[logits].shape[0] * tensors[logits].shape[1];
  int64_t offset = owned(logits, 2, self).front();
  std::vector<int64_t> members = mesh.group(self, stringsAttr(op, "vocab_axes"));
  const float *x = P(logits);
  std::vector<float> mx(T);
  cpu::xent_local_max(x, T, V, mx.data());
  // The per-token pieces are f32 whatever the logits are.
  std::vector<std::vector<float>> maxes = allGatherIn(members, mx, 4);
  std::vector<float> gmax(T, -std::numeric_limits<float>::infinity());
  for (int64_t m : members)
    for (int64_t t = 0; t < T; ++t)
      gmax[t] = std::max(gmax[t], maxes[m][t]);
  std::vector<float> sumTarget(2 * T);
  cpu::xent_local_sumexp(x, gmax.data(), T, V, sumTarget.data());
  std::vector<int32_t> labelIds = asInts(P(labels), N(labels));
  cpu::xent_local_target(x, labelIds.data(), T, V, offset, sumTarget.data() + T);
  std::vector<std::vector<float>> pieces = allGatherIn(members, sumTarget, 4);
  double loss = 0;
  for (int64_t t = 0; t < T; ++t) {
    double s = 0, tg = 0;
    for (int64_t m : members) {
      s += pieces[m][t];
      tg += pieces[m][T + t];
    }
    loss += std::log(s) + gmax[t] - tg;
  }
  P(out)[0] = (float)(loss / (double)tokens);
}

} // namespace

bool executorSupports(const std::string &kind) { return kSupported.count(kind) > 0; }

RunResult runPlanOnRank(const LoadedPlan &plan, const RunOptions &options, Comm &comm) {
  return RankRun(plan, options, comm).run();
}

RunResult runPlan(const LoadedPlan &plan, const RunOptions &options) {
  int64_t ranks = options.singleDevice ? 1 : plan.ranks();
  ThreadHub hub(ranks);
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
  return result;
}

} // namespace shardline::rt
