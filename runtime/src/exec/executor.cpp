//===- executor.cpp - run a plan on ranks that are threads -----------------===//

#include "exec/executor.h"

#include "comm/transfer.h"
#include "core/init.h"
#include "core/safetensors.h"
#include "kernels/cpu/kernels.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

namespace shardline::rt {

namespace {

/// Integer tensors (token ids, labels, expert indices) are held as floats,
/// exact below 2^24, so one data path moves every tensor.
std::vector<int32_t> asInts(const std::vector<float> &v) {
  std::vector<int32_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    out[i] = (int32_t)v[i];
  return out;
}

/// A reusable barrier that every waiting thread leaves when one rank fails.
class Barrier {
public:
  explicit Barrier(int64_t n) : n(n) {}
  bool wait() {
    std::unique_lock<std::mutex> lock(m);
    if (aborted)
      return false;
    int64_t gen = generation;
    if (++count == n) {
      count = 0;
      ++generation;
      cv.notify_all();
      return true;
    }
    cv.wait(lock, [&] { return gen != generation || aborted; });
    return !aborted;
  }
  void abort() {
    std::lock_guard<std::mutex> lock(m);
    aborted = true;
    cv.notify_all();
  }

private:
  std::mutex m;
  std::condition_variable cv;
  int64_t n, count = 0, generation = 0;
  bool aborted = false;
};

struct TensorInfo {
  std::string name;
  std::vector<int64_t> shape;
  Layout layout;
  bool isInt = false;
  plan::Role role = plan::Role::Activation;
  InitSpec init;
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

class Run {
public:
  Run(const LoadedPlan &loaded, const RunOptions &options) : p(*loaded.root()), options(options) {
    for (const auto *axis : *p.mesh())
      mesh.axes.emplace_back(axis->name()->str(), options.singleDevice ? 1 : axis->size());
    ranks = mesh.numRanks();
    for (const auto *t : *p.tensors()) {
      TensorInfo info;
      info.name = t->name() ? t->name()->str() : "";
      info.shape.assign(t->shape()->begin(), t->shape()->end());
      info.layout = layoutOf(*t);
      info.isInt = t->dtype() == plan::DType::I32;
      info.role = t->role();
      info.init = {t->init() == plan::Init::Uniform    ? InitKind::Uniform
                   : t->init() == plan::Init::Constant ? InitKind::Constant
                                                       : InitKind::Normal,
                   t->scale(), t->offset()};
      tensors.push_back(std::move(info));
    }
    data.assign(tensors.size(), std::vector<std::vector<float>>(ranks));
    bytes.assign(ranks, 0);
    scratch.assign(ranks, {});
    scratchCE.assign(ranks, {});
    barrier = std::make_unique<Barrier>(ranks);
  }

  RunResult run() {
    RunResult result;
    result.ranks = ranks;
    for (const auto *op : *p.ops())
      if (!executorSupports(op->kind()->str())) {
        result.error = "the executor does not run sl." + op->kind()->str() + " yet";
        return result;
      }
    if (!options.weightsFile.empty()) {
      std::string err;
      weights = SafeTensorsFile::open(options.weightsFile, err);
      if (!weights) {
        result.error = err;
        return result;
      }
      for (const auto &t : tensors) {
        if (t.role != plan::Role::Weight)
          continue;
        const SafeTensor *found = weights->find(t.name);
        if (!found) {
          result.error = "weight '" + t.name + "' is not in " + options.weightsFile;
          return result;
        }
        if (found->shape != t.shape) {
          result.error = "weight '" + t.name + "' in " + options.weightsFile + " has shape " +
                         shapeText(found->shape) + ", the model needs " + shapeText(t.shape);
          return result;
        }
      }
    }
    std::vector<std::thread> threads;
    for (int64_t r = 0; r < ranks; ++r)
      threads.emplace_back([this, r] { rankMain(r); });
    for (auto &t : threads)
      t.join();
    if (!error.empty()) {
      result.error = error;
      return result;
    }
    for (int32_t out : *p.outputs()) {
      result.outputShapes.push_back(tensors[out].shape);
      result.outputs.push_back(assemble(out));
    }
    result.bytesSentPerRank = *std::max_element(bytes.begin(), bytes.end());
    result.seconds = seconds;
    if (!options.saveWeightsFile.empty()) {
      std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>> all;
      for (size_t t = 0; t < tensors.size(); ++t)
        if (tensors[t].role == plan::Role::Weight)
          all[tensors[t].name] = {tensors[t].shape, assemble((int32_t)t)};
      std::string err;
      if (!writeSafeTensors(options.saveWeightsFile, all, err))
        result.error = err;
    }
    return result;
  }

private:
  void fail(const std::string &message) {
    {
      std::lock_guard<std::mutex> lock(errorMutex);
      if (error.empty())
        error = message;
    }
    failed = true;
    barrier->abort();
  }

  std::vector<int64_t> local(int32_t t) const {
    return localShape(tensors[t].layout, mesh, tensors[t].shape);
  }
  std::vector<int64_t> owned(int32_t t, unsigned dim, int64_t rank) const {
    return ownedIndices(tensors[t].layout, mesh, tensors[t].shape, dim, rank);
  }
  std::vector<float> &buf(int32_t t, int64_t r) { return data[t][r]; }

  /// Every rank's part of a tensor, for collectives.
  std::vector<const float *> parts(int32_t t) {
    std::vector<const float *> out;
    for (int64_t r = 0; r < ranks; ++r)
      out.push_back(data[t][r].data());
    return out;
  }

  /// Ranks that differ from `rank` only in `axes`, in their linear order along
  /// those axes (the ring).
  std::vector<int64_t> group(int64_t rank, const std::vector<std::string> &axes) const {
    std::vector<int64_t> self = mesh.coords(rank), out;
    for (int64_t r = 0; r < ranks; ++r) {
      std::vector<int64_t> c = mesh.coords(r);
      bool same = true;
      for (size_t i = 0; i < mesh.axes.size(); ++i)
        if (c[i] != self[i] &&
            std::find(axes.begin(), axes.end(), mesh.axes[i].first) == axes.end())
          same = false;
      if (same)
        out.push_back(r);
    }
    return out;
  }

  void makeInputs(int64_t r) {
    // Tokens and labels: uniform in [0, vocab) from the seed by global index;
    // vocab is the embedding table's first dimension.
    int64_t vocab = 1;
    for (const auto &t : tensors)
      if (t.role == plan::Role::Weight && t.name == "embedding.table")
        vocab = t.shape[0];
    for (size_t i = 0; i < p.inputs()->size(); ++i) {
      int32_t t = p.inputs()->Get(i);
      std::vector<float> global(numElements(tensors[t].shape));
      InitSpec uniform{InitKind::Uniform, (double)vocab, 0.0};
      uint64_t stream = tensorStream(tensors[t].name);
      for (size_t k = 0; k < global.size(); ++k)
        global[k] = std::floor(initValue(uniform, options.seed, stream, k));
      for (auto &x : global)
        x = std::min<float>(x, (float)(vocab - 1));
      data[t][r] = extractLocal(mesh, tensors[t].shape, tensors[t].layout, global, r);
    }
  }

  static std::string shapeText(const std::vector<int64_t> &shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i)
      s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
  }

  void makeWeight(int32_t t, int64_t r) {
    std::vector<std::vector<int64_t>> own;
    for (unsigned d = 0; d < tensors[t].shape.size(); ++d)
      own.push_back(owned(t, d, r));
    data[t][r].resize(numElements(local(t)));
    if (weights) {
      // This rank's shard of the file's tensor, by global element index.
      const SafeTensor &found = *weights->find(tensors[t].name);
      const auto &shape = tensors[t].shape;
      std::vector<size_t> pos(shape.size(), 0);
      for (size_t i = 0; i < data[t][r].size(); ++i) {
        uint64_t g = 0;
        for (size_t d = 0; d < shape.size(); ++d)
          g = g * shape[d] + own[d][pos[d]];
        data[t][r][i] = weights->at(found, g);
        for (size_t d = shape.size(); d-- > 0;) {
          if (++pos[d] < own[d].size())
            break;
          pos[d] = 0;
        }
      }
      return;
    }
    fillShard(tensors[t].init, options.seed, tensors[t].name, tensors[t].shape, own,
              data[t][r].data());
  }

  void rankMain(int64_t r) {
    makeInputs(r);
    for (size_t t = 0; t < tensors.size(); ++t)
      if (tensors[t].role == plan::Role::Weight)
        makeWeight((int32_t)t, r);
    if (!sync())
      return;
    auto start = std::chrono::steady_clock::now();
    for (int64_t step = 0; step < options.steps; ++step) {
      if (step > 0)
        bytes[r] = 0; // the bytes of one step
      for (const auto *op : *p.ops()) {
        if (failed)
          return;
        std::string err = runOp(*op, r);
        if (!err.empty()) {
          fail("op " + op->kind()->str() + " at " + (op->location() ? op->location()->str() : "?") +
               ": " + err);
          return;
        }
      }
    }
    if (!sync())
      return;
    if (r == 0)
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  /// Waits until every rank has produced everything so far.
  bool sync() { return barrier->wait(); }

  std::string runOp(const plan::Op &op, int64_t r) {
    const std::string kind = op.kind()->str();
    auto in = [&](int i) { return op.operands()->Get(i); };
    int32_t out = op.results()->Get(0);
    auto alloc = [&](int32_t t) -> std::vector<float> & {
      auto &b = data[t][r];
      b.assign(numElements(local(t)), 0.0f);
      return b;
    };
    if (kind == "add" || kind == "mul" || kind == "swiglu") {
      auto &y = alloc(out);
      const float *a = buf(in(0), r).data(), *b = buf(in(1), r).data();
      int64_t n = (int64_t)y.size();
      if (kind == "add")
        cpu::add(a, b, n, y.data());
      else if (kind == "mul")
        cpu::mul(a, b, n, y.data());
      else
        cpu::swiglu(a, b, n, y.data());
      return "";
    }
    if (kind == "silu" || kind == "gelu" || kind == "sigmoid" || kind == "softplus") {
      auto &y = alloc(out);
      const float *x = buf(in(0), r).data();
      int64_t n = (int64_t)y.size();
      if (kind == "silu")
        cpu::silu(x, n, y.data());
      else if (kind == "gelu")
        cpu::gelu(x, n, y.data());
      else if (kind == "sigmoid")
        cpu::sigmoid(x, n, y.data());
      else
        cpu::softplus(x, n, y.data());
      return "";
    }
    if (kind == "embedding") {
      auto &y = alloc(out);
      std::vector<int64_t> table = local(in(1));
      int64_t offset = owned(in(1), 0, r).front();
      std::vector<int32_t> ids = asInts(buf(in(0), r));
      cpu::embedding(ids.data(), (int64_t)ids.size(), buf(in(1), r).data(), table[0], table[1],
                     offset, y.data());
      return "";
    }
    if (kind == "rms_norm") {
      auto &y = alloc(out);
      int64_t h = local(in(0)).back();
      cpu::rms_norm(buf(in(0), r).data(), buf(in(1), r).data(), (int64_t)y.size() / h, h,
                    (float)floatAttr(op, "eps", 1e-5), y.data());
      return "";
    }
    if (kind == "gated_rms_norm") {
      auto &y = alloc(out);
      int64_t c = local(in(0)).back();
      int64_t groups = intAttr(op, "groups", 1) * c / tensors[in(0)].shape.back();
      cpu::gated_rms_norm(buf(in(0), r).data(), buf(in(1), r).data(), buf(in(2), r).data(),
                          (int64_t)y.size() / c, c, groups, (float)floatAttr(op, "eps", 1e-5),
                          y.data());
      return "";
    }
    if (kind == "linear" || kind == "lm_head") {
      auto &y = alloc(out);
      std::vector<int64_t> w = local(in(1));
      cpu::linear(buf(in(0), r).data(), buf(in(1), r).data(), (int64_t)y.size() / w[1], w[0], w[1],
                  y.data());
      return "";
    }
    if (kind == "rope") {
      auto &y = alloc(out);
      std::vector<int64_t> x = local(in(0));
      int64_t d = intAttr(op, "head_dim", 1);
      std::vector<int64_t> pos = owned(in(0), 1, r);
      cpu::rope(buf(in(0), r).data(), pos.data(), x[0], x[1], x[2] / d, d,
                (float)floatAttr(op, "theta", 10000.0), y.data());
      return "";
    }
    if (kind == "attention" || kind == "ring_attention")
      return attention(op, r, kind == "ring_attention");
    if (kind == "causal_conv1d")
      return conv(op, r);
    if (kind == "halo")
      return halo(op, r);
    if (kind == "ssd_scan" || kind == "ssd_correct")
      return ssd(op, r, kind == "ssd_correct");
    if (kind == "rglru_scan" || kind == "rglru_correct")
      return rglru(op, r, kind == "rglru_correct");
    if (kind == "scan_state_exchange")
      return stateExchange(op, r);
    if (kind == "router_topk" || kind == "moe_dispatch" || kind == "moe_experts" ||
        kind == "moe_combine")
      return moe(op, r, kind);
    if (kind == "cross_entropy")
      return crossEntropy(op, r);
    // Layout transitions: every rank has produced the operand first.
    if (!sync())
      return "";
    const Layout &from = tensors[in(0)].layout, &to = tensors[out].layout;
    auto &y = alloc(out);
    int64_t sent = 0;
    if (kind == "all_reduce" && !from.partial.empty()) {
      // Bandwidth-optimal: reduce-scatter onto the largest dimension the
      // group divides, then all-gather it back.
      TransferResult res = allReduce(in(0), r, y.data());
      if (!res.error.empty())
        return res.error;
      sent = res.bytesRead;
    } else {
      TransferResult res = transfer(mesh, tensors[out].shape, from, parts(in(0)), to, r, y.data());
      if (!res.error.empty())
        return res.error;
      sent = res.bytesRead;
    }
    bytes[r] += sent;
    return "";
  }

  TransferResult allReduce(int32_t t, int64_t r, float *dst) {
    const Layout &from = tensors[t].layout;
    Layout mid = from, to = from;
    to.partial.clear();
    mid.partial.clear();
    int64_t g = mesh.product(from.partial);
    std::vector<int64_t> loc = local(t);
    int64_t dim = -1;
    for (size_t d = 0; d < loc.size(); ++d)
      if (loc[d] % g == 0 && (dim < 0 || loc[d] > loc[dim]))
        dim = (int64_t)d;
    if (dim < 0 || g == 1)
      return transfer(mesh, tensors[t].shape, from, parts(t), to, r, dst);
    mid.dims[dim].insert(mid.dims[dim].end(), from.partial.begin(), from.partial.end());
    if (mid.orderDim == dim && mid.dims[dim].size() == from.partial.size())
      mid.orderDim = -1;
    auto &half = scratch[r];
    half.assign(numElements(localShape(mid, mesh, tensors[t].shape)), 0.0f);
    TransferResult a = transfer(mesh, tensors[t].shape, from, parts(t), mid, r, half.data());
    if (!a.error.empty())
      return a;
    if (!sync())
      return a;
    std::vector<const float *> halves;
    for (int64_t k = 0; k < ranks; ++k)
      halves.push_back(scratch[k].data());
    TransferResult b = transfer(mesh, tensors[t].shape, mid, halves, to, r, dst);
    b.bytesRead += a.bytesRead;
    // The scratch halves are reused by the next all-reduce only after this.
    sync();
    return b;
  }

  std::string attention(const plan::Op &op, int64_t r, bool ring) {
    int32_t q = op.operands()->Get(0), k = op.operands()->Get(1), v = op.operands()->Get(2);
    int32_t out = op.results()->Get(0);
    std::vector<int64_t> ql = local(q), kl = local(k);
    int64_t heads = intAttr(op, "heads", 1);
    int64_t d = tensors[q].shape[2] / heads;
    AttentionDimsFor dims{ql[0], ql[1], kl[1], ql[2] / d, kl[2] / d, d};
    bool causal = intAttr(op, "causal", 1) != 0;
    float scale = (float)floatAttr(op, "scale", 1.0 / std::sqrt((double)d));
    auto &y = data[out][r];
    y.assign(numElements(local(out)), 0.0f);
    std::vector<int64_t> qPos = owned(q, 1, r);
    if (!ring) {
      std::vector<int64_t> kPos = owned(k, 1, r);
      cpu::attention(buf(q, r).data(), buf(k, r).data(), buf(v, r).data(), qPos.data(), kPos.data(),
                     dims.cpu(), causal, scale, y.data(), nullptr);
      return "";
    }
    if (!sync())
      return "";
    // Ring: merge the partial results over every member's keys and values,
    // own block first; each member's block is sent once to each other member.
    std::vector<int64_t> members = group(r, stringsAttr(op, "axes"));
    std::vector<float> lse(dims.B * dims.HQ * dims.Sq), part(y.size()), partLse(lse.size());
    bool first = true;
    auto self = std::find(members.begin(), members.end(), r);
    std::rotate(members.begin(), self, members.end());
    for (int64_t m : members) {
      std::vector<int64_t> kPos = owned(k, 1, m);
      cpu::attention(buf(q, r).data(), data[k][m].data(), data[v][m].data(), qPos.data(),
                     kPos.data(), dims.cpu(), causal, scale, first ? y.data() : part.data(),
                     first ? lse.data() : partLse.data());
      if (!first)
        cpu::attention_merge(y.data(), lse.data(), part.data(), partLse.data(), dims.B, dims.Sq,
                             dims.HQ, dims.D, y.data(), lse.data());
      first = false;
    }
    bytes[r] += ((int64_t)members.size() - 1) * (int64_t)(data[k][r].size() + data[v][r].size()) *
                (int64_t)sizeof(float);
    return "";
  }

  /// The local sequence of a [b, s, ...] value in its chunks: k chunks of
  /// equal length (two per rank in zigzag order, else one).
  int64_t chunksOf(int32_t t) const {
    const Layout &l = tensors[t].layout;
    return !l.dims[1].empty() && l.dimOrder(1) == ChunkOrder::Zigzag ? 2 : 1;
  }

  std::string conv(const plan::Op &op, int64_t r) {
    int32_t x = op.operands()->Get(0), w = op.operands()->Get(1), b = op.operands()->Get(2);
    bool hasHalo = op.operands()->size() > 3;
    int32_t out = op.results()->Get(0);
    std::vector<int64_t> xl = local(x);
    int64_t W = local(w)[1], k = hasHalo ? chunksOf(x) : 1, S = xl[1] / k, C = xl[2];
    auto &y = data[out][r];
    y.assign(numElements(local(out)), 0.0f);
    const float *hx = hasHalo ? buf(op.operands()->Get(3), r).data() : nullptr;
    for (int64_t bi = 0; bi < xl[0]; ++bi)
      for (int64_t c = 0; c < k; ++c) {
        int64_t rows = bi * xl[1] + c * S;
        const float *haloRows = hx ? hx + (bi * k + c) * (W - 1) * C : nullptr;
        cpu::causal_conv1d(buf(x, r).data() + rows * C, buf(w, r).data(), buf(b, r).data(),
                           haloRows, 1, S, C, W, y.data() + rows * C);
      }
    return "";
  }

  /// The width tokens before each local chunk, read from whoever holds them.
  std::string halo(const plan::Op &op, int64_t r) {
    int32_t x = op.operands()->Get(0), out = op.results()->Get(0);
    if (!sync())
      return "";
    int64_t width = intAttr(op, "width", 1);
    std::vector<int64_t> xl = local(x);
    int64_t k = chunksOf(x), S = xl[1] / k, C = xl[2];
    std::vector<int64_t> mine = owned(x, 1, r);
    std::vector<int64_t> members = group(r, stringsAttr(op, "axes"));
    auto &y = data[out][r];
    y.assign(numElements(local(out)), 0.0f);
    for (int64_t c = 0; c < k; ++c) {
      int64_t start = mine[c * S];
      for (int64_t j = 0; j < width; ++j) {
        int64_t pos = start - width + j;
        if (pos < 0)
          continue;
        for (int64_t m : members) {
          std::vector<int64_t> theirs = owned(x, 1, m);
          auto it = std::find(theirs.begin(), theirs.end(), pos);
          if (it == theirs.end())
            continue;
          int64_t row = it - theirs.begin();
          for (int64_t bi = 0; bi < xl[0]; ++bi)
            std::copy_n(data[x][m].data() + (bi * xl[1] + row) * C, C,
                        y.data() + ((bi * k + c) * width + j) * C);
          if (m != r)
            bytes[r] += xl[0] * C * (int64_t)sizeof(float);
          break;
        }
      }
    }
    return "";
  }

  /// softplus(dt + dt_bias) and -exp(a_log) for the local heads.
  void ssdPrelude(int32_t dt, int32_t aLog, int32_t dtBias, int64_t r, std::vector<float> &dtOut,
                  std::vector<float> &A) {
    const auto &d = buf(dt, r);
    const auto &bias = buf(dtBias, r);
    int64_t nh = (int64_t)bias.size();
    dtOut.resize(d.size());
    for (size_t i = 0; i < d.size(); ++i)
      dtOut[i] = d[i] + bias[i % nh];
    cpu::softplus(dtOut.data(), (int64_t)dtOut.size(), dtOut.data());
    A.resize(nh);
    for (int64_t h = 0; h < nh; ++h)
      A[h] = -std::exp(buf(aLog, r)[h]);
  }

  std::string ssd(const plan::Op &op, int64_t r, bool correct) {
    auto in = [&](int i) { return op.operands()->Get(i); };
    int64_t heads = intAttr(op, "heads", 1), groups = intAttr(op, "groups", 1);
    // ssd_scan: x, dt, a_log, B, C, d, dt_bias[, state_in];
    // ssd_correct: y0, init, C, dt, a_log, dt_bias.
    int32_t x = in(0), dt = correct ? in(3) : in(1), aLog = correct ? in(4) : in(2),
            Cm = correct ? in(2) : in(4), dtBias = correct ? in(5) : in(6);
    std::vector<int64_t> xl = local(x), cl = local(Cm);
    int64_t nh = local(dt)[2], p = tensors[x].shape[2] / heads;
    int64_t g = groups * cl[2] / tensors[Cm].shape[2], n = cl[2] / g;
    bool chunked = !stringsAttr(op, "chunk_axes").empty();
    int64_t k = chunked ? chunksOf(x) : 1, S = xl[1] / k, B = xl[0];
    std::vector<float> dtv, A;
    ssdPrelude(dt, aLog, dtBias, r, dtv, A);
    cpu::SsdDims dims{1, S, nh, p, g, n};
    int32_t out = op.results()->Get(0);
    auto &y = data[out][r];
    y.assign(numElements(local(out)), 0.0f);
    if (correct) {
      y = buf(x, r);
      std::vector<float> state(nh * p * n);
      for (int64_t bi = 0; bi < B; ++bi)
        for (int64_t c = 0; c < k; ++c) {
          int64_t rows = bi * xl[1] + c * S;
          cpu::ssd_state_correct(buf(Cm, r).data() + rows * g * n, dtv.data() + rows * nh, A.data(),
                                 buf(in(1), r).data() + (c * B + bi) * nh * p * n, dims,
                                 y.data() + rows * nh * p, state.data());
        }
      return "";
    }
    int32_t stateT = op.results()->Get(1), decayT = op.results()->Get(2);
    auto &state = data[stateT][r];
    state.assign(numElements(local(stateT)), 0.0f);
    auto &decay = data[decayT][r];
    decay.assign(numElements(local(decayT)), 0.0f);
    const float *stateIn = op.operands()->size() > 7 ? buf(in(7), r).data() : nullptr;
    for (int64_t bi = 0; bi < B; ++bi)
      for (int64_t c = 0; c < k; ++c) {
        int64_t rows = bi * xl[1] + c * S, slot = c * B + bi;
        cpu::ssd_scan(buf(x, r).data() + rows * nh * p, dtv.data() + rows * nh, A.data(),
                      buf(in(3), r).data() + rows * g * n, buf(Cm, r).data() + rows * g * n,
                      buf(in(5), r).data(), stateIn ? stateIn + slot * nh * p * n : nullptr, dims,
                      y.data() + rows * nh * p, state.data() + slot * nh * p * n,
                      decay.data() + slot * nh);
      }
    return "";
  }

  std::string rglru(const plan::Op &op, int64_t r, bool correct) {
    auto in = [&](int i) { return op.operands()->Get(i); };
    // rglru_scan: x, wa, ba, wx, bx, lambda[, state_in];
    // rglru_correct: y0, init, x, wa, ba, lambda.
    int32_t x = correct ? in(2) : in(0), wa = correct ? in(3) : in(1), ba = correct ? in(4) : in(2),
            lambda = correct ? in(5) : in(5);
    std::vector<int64_t> xl = local(x);
    bool chunked = !stringsAttr(op, "chunk_axes").empty();
    int64_t k = chunked ? chunksOf(x) : 1, S = xl[1] / k, B = xl[0], W = xl[2];
    const auto &xv = buf(x, r);
    std::vector<float> gateA(xv.size()), gateX(xv.size());
    for (size_t i = 0; i < xv.size(); ++i) {
      int64_t c = (int64_t)i % W;
      gateA[i] = buf(wa, r)[c] * xv[i] + buf(ba, r)[c];
      if (!correct)
        gateX[i] = buf(in(3), r)[c] * xv[i] + buf(in(4), r)[c];
    }
    int32_t out = op.results()->Get(0);
    auto &y = data[out][r];
    if (correct) {
      y = buf(in(0), r);
      std::vector<float> state(W);
      for (int64_t bi = 0; bi < B; ++bi)
        for (int64_t c = 0; c < k; ++c) {
          int64_t rows = bi * xl[1] + c * S;
          cpu::rglru_state_correct(gateA.data() + rows * W, buf(lambda, r).data(),
                                   buf(in(1), r).data() + (c * B + bi) * W, 1, S, W,
                                   y.data() + rows * W, state.data());
        }
      return "";
    }
    y.assign(xv.size(), 0.0f);
    int32_t stateT = op.results()->Get(1), decayT = op.results()->Get(2);
    auto &state = data[stateT][r];
    state.assign(numElements(local(stateT)), 0.0f);
    auto &decay = data[decayT][r];
    decay.assign(numElements(local(decayT)), 0.0f);
    const float *stateIn = op.operands()->size() > 6 ? buf(in(6), r).data() : nullptr;
    for (int64_t bi = 0; bi < B; ++bi)
      for (int64_t c = 0; c < k; ++c) {
        int64_t rows = bi * xl[1] + c * S, slot = c * B + bi;
        cpu::rglru_scan(xv.data() + rows * W, gateA.data() + rows * W, gateX.data() + rows * W,
                        buf(lambda, r).data(), stateIn ? stateIn + slot * W : nullptr, 1, S, W,
                        y.data() + rows * W, state.data() + slot * W, decay.data() + slot * W);
      }
    return "";
  }

  /// Every chunk's true initial state from all chunks' (state, decay)
  /// summaries, in sequence order.
  std::string stateExchange(const plan::Op &op, int64_t r) {
    int32_t st = op.operands()->Get(0), dec = op.operands()->Get(1), out = op.results()->Get(0);
    if (!sync())
      return "";
    int64_t chunks = tensors[st].shape[0];
    std::vector<int64_t> sl = local(st);
    int64_t stateSize = numElements(sl) / sl[0], decaySize = numElements(local(dec)) / sl[0];
    std::vector<float> allStates(chunks * stateSize), allDecays(chunks * decaySize);
    for (int64_t m : group(r, stringsAttr(op, "axes"))) {
      std::vector<int64_t> theirs = owned(st, 0, m);
      for (size_t i = 0; i < theirs.size(); ++i) {
        std::copy_n(data[st][m].data() + i * stateSize, stateSize,
                    allStates.data() + theirs[i] * stateSize);
        std::copy_n(data[dec][m].data() + i * decaySize, decaySize,
                    allDecays.data() + theirs[i] * decaySize);
      }
      if (m != r)
        bytes[r] += (int64_t)(data[st][m].size() + data[dec][m].size()) * (int64_t)sizeof(float);
    }
    std::vector<float> init(chunks * stateSize);
    cpu::scan_combine_states(allDecays.data(), allStates.data(), nullptr, chunks, decaySize,
                             stateSize / decaySize, init.data(), nullptr);
    auto &y = data[out][r];
    y.assign(numElements(local(out)), 0.0f);
    std::vector<int64_t> mine = owned(out, 0, r);
    for (size_t i = 0; i < mine.size(); ++i)
      std::copy_n(init.data() + mine[i] * stateSize, stateSize, y.data() + i * stateSize);
    return "";
  }

  std::string moe(const plan::Op &op, int64_t r, const std::string &kind) {
    auto in = [&](int i) { return op.operands()->Get(i); };
    int32_t out = op.results()->Get(0);
    if (kind == "router_topk") {
      std::vector<int64_t> l = local(in(0));
      int64_t k = intAttr(op, "k", 1), T = l[0] * l[1];
      auto &w = data[out][r];
      w.assign(T * k, 0.0f);
      std::vector<int32_t> idx(T * k);
      cpu::router_topk(buf(in(0), r).data(), T, l[2], k, w.data(), idx.data());
      auto &iv = data[op.results()->Get(1)][r];
      iv.assign(idx.begin(), idx.end());
      return "";
    }
    if (kind == "moe_dispatch") {
      std::vector<int64_t> xl = local(in(0)), il = local(in(1));
      int64_t T = xl[0] * xl[1], H = xl[2], k = il[2];
      auto &y = data[out][r];
      y.assign(numElements(local(out)), 0.0f);
      const auto &x = buf(in(0), r);
      const auto &idx = buf(in(1), r);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < k; ++j) {
          int64_t e = (int64_t)idx[t * k + j];
          std::copy_n(x.data() + t * H, H, y.data() + (e * T + t) * H);
        }
      return "";
    }
    if (kind == "moe_experts") {
      std::vector<int64_t> tl = local(in(0)), gl = local(in(1));
      int64_t E = tl[0], rows = tl[1] * tl[2];
      std::vector<int32_t> counts(E, (int32_t)rows);
      auto &y = data[out][r];
      y.assign(numElements(local(out)), 0.0f);
      cpu::moe_experts(buf(in(0), r).data(), counts.data(), E, buf(in(1), r).data(),
                       buf(in(2), r).data(), buf(in(3), r).data(), gl[1], gl[2], y.data());
      return "";
    }
    // moe_combine: y[t] = sum_j weights[t, j] * expert_out[indices[t, j], t]
    std::vector<int64_t> el = local(in(0)), wl = local(in(1));
    int64_t T = el[1] * el[2], H = el[3], k = wl[2];
    auto &y = data[out][r];
    y.assign(T * H, 0.0f);
    const auto &eo = buf(in(0), r);
    const auto &w = buf(in(1), r);
    const auto &idx = buf(in(2), r);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < k; ++j) {
        int64_t e = (int64_t)idx[t * k + j];
        float weight = w[t * k + j];
        for (int64_t h = 0; h < H; ++h)
          y[t * H + h] += weight * eo[(e * T + t) * H + h];
      }
    return "";
  }

  struct AttentionDimsFor {
    int64_t B, Sq, Sk, HQ, HKV, D;
    cpu::AttentionDims cpu() const { return {B, Sq, Sk, HQ, HKV, D}; }
  };

  std::string crossEntropy(const plan::Op &op, int64_t r) {
    int32_t logits = op.operands()->Get(0), labels = op.operands()->Get(1);
    int32_t out = op.results()->Get(0);
    std::vector<int64_t> l = local(logits);
    int64_t T = l[0] * l[1], V = l[2];
    int64_t tokens = tensors[logits].shape[0] * tensors[logits].shape[1];
    int64_t offset = owned(logits, 2, r).front();
    std::vector<std::string> axes = stringsAttr(op, "vocab_axes");
    std::vector<int64_t> members = group(r, axes);
    // Per-token pieces, combined over the vocabulary's shards.
    auto &mine = scratchCE[r];
    mine.assign(3 * T, 0.0f);
    float *mx = mine.data(), *sum = mx + T, *target = sum + T;
    const float *x = buf(logits, r).data();
    cpu::xent_local_max(x, T, V, mx);
    if (!sync())
      return "";
    std::vector<float> gmax(T, -std::numeric_limits<float>::infinity());
    for (int64_t m : members)
      for (int64_t t = 0; t < T; ++t)
        gmax[t] = std::max(gmax[t], scratchCE[m][t]);
    if (!sync())
      return "";
    cpu::xent_local_sumexp(x, gmax.data(), T, V, sum);
    std::vector<int32_t> labelIds = asInts(buf(labels, r));
    cpu::xent_local_target(x, labelIds.data(), T, V, offset, target);
    if (!sync())
      return "";
    double loss = 0;
    for (int64_t t = 0; t < T; ++t) {
      double s = 0, tg = 0;
      for (int64_t m : members) {
        s += scratchCE[m][T + t];
        tg += scratchCE[m][2 * T + t];
      }
      loss += std::log(s) + gmax[t] - tg;
    }
    if (!sync())
      return "";
    data[out][r] = {(float)(loss / (double)tokens)};
    // Read from every other member: its max, sum and target per token.
    bytes[r] += 3 * ((int64_t)members.size() - 1) * T * (int64_t)sizeof(float);
    return "";
  }

  /// A global tensor from every rank's part (pending sums are already whole).
  std::vector<float> assemble(int32_t t) {
    const TensorInfo &info = tensors[t];
    std::vector<float> global(numElements(info.shape), 0.0f);
    std::vector<int64_t> strides(info.shape.size(), 1);
    for (size_t d = info.shape.size(); d-- > 1;)
      strides[d - 1] = strides[d] * info.shape[d];
    for (int64_t r = 0; r < ranks; ++r) {
      std::vector<std::vector<int64_t>> own;
      for (unsigned d = 0; d < info.shape.size(); ++d)
        own.push_back(owned(t, d, r));
      std::vector<size_t> pos(info.shape.size(), 0);
      for (size_t i = 0; i < data[t][r].size(); ++i) {
        int64_t g = 0;
        for (size_t d = 0; d < pos.size(); ++d)
          g += own[d][pos[d]] * strides[d];
        global[g] = data[t][r][i];
        for (size_t d = pos.size(); d-- > 0;) {
          if (++pos[d] < own[d].size())
            break;
          pos[d] = 0;
        }
      }
    }
    return global;
  }

  const plan::Plan &p;
  RunOptions options;
  Mesh mesh;
  int64_t ranks = 1;
  std::vector<TensorInfo> tensors;
  std::vector<std::vector<std::vector<float>>> data;
  std::vector<int64_t> bytes;
  std::vector<std::vector<float>> scratch;
  std::vector<std::vector<float>> scratchCE;
  std::unique_ptr<Barrier> barrier;
  std::optional<SafeTensorsFile> weights;
  double seconds = 0;
  std::atomic<bool> failed{false};
  std::mutex errorMutex;
  std::string error;
};

} // namespace

bool executorSupports(const std::string &kind) { return kSupported.count(kind) > 0; }

RunResult runPlan(const LoadedPlan &plan, const RunOptions &options) {
  return Run(plan, options).run();
}

} // namespace shardline::rt
