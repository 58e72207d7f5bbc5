//===- Machine.cpp - machine descriptions and the cp_comm cost model ------===//

#include "shardline/Analysis/Machine.h"

#include "llvm/Support/JSON.h"

#include <algorithm>
#include <cmath>

namespace shardline {

namespace {
double number(const llvm::json::Object &o, llvm::StringRef key, llvm::StringRef path,
              std::vector<std::string> &errors, llvm::StringRef file) {
  const llvm::json::Value *v = o.get(key);
  std::optional<double> d = v ? v->getAsNumber() : std::nullopt;
  if (!d || *d <= 0) {
    errors.push_back(file.str() + ": " + path.str() + (path.empty() ? "" : ".") + key.str() +
                     (v ? ": expected a positive number" : ": missing required key"));
    return 0;
  }
  return *d;
}

Link link(const llvm::json::Object &root, llvm::StringRef key, std::vector<std::string> &errors,
          llvm::StringRef file) {
  const llvm::json::Object *o = root.getObject(key);
  if (!o) {
    errors.push_back(file.str() + ": " + key.str() +
                     ": missing object {\"bandwidth_GBps\": ..., \"latency_us\": ...}");
    return {};
  }
  return {number(*o, "bandwidth_GBps", key, errors, file) * 1e9,
          number(*o, "latency_us", key, errors, file) * 1e-6};
}
} // namespace

std::optional<Machine> parseMachine(llvm::StringRef text, llvm::StringRef file,
                                    std::vector<std::string> &errors) {
  llvm::Expected<llvm::json::Value> parsed = llvm::json::parse(text);
  if (!parsed) {
    errors.push_back(file.str() + ": malformed JSON " + llvm::toString(parsed.takeError()));
    return std::nullopt;
  }
  const llvm::json::Object *root = parsed->getAsObject();
  if (!root) {
    errors.push_back(file.str() + ": a machine description must be a JSON object");
    return std::nullopt;
  }
  size_t before = errors.size();
  Machine m;
  if (auto name = root->getString("name"))
    m.name = name->str();
  m.gpusPerNode = (int64_t)number(*root, "gpus_per_node", "", errors, file);
  m.intraNode = link(*root, "intra_node", errors, file);
  m.interNode = link(*root, "inter_node", errors, file);
  m.memoryBytes = number(*root, "memory_GB", "", errors, file) * 1e9;
  m.flopsPerSecond = number(*root, "tflops", "", errors, file) * 1e12;
  if (errors.size() != before)
    return std::nullopt;
  return m;
}

Machine defaultMachine() {
  Machine m;
  m.name = "8xH100-SXM";
  m.gpusPerNode = 8;
  m.intraNode = {400.0e9, 5.0e-6};
  m.interNode = {50.0e9, 10.0e-6};
  m.memoryBytes = 80.0e9;
  m.flopsPerSecond = 989.0e12;
  return m;
}

CPCommCost costOf(const std::string &kind, const AttentionShape &s, int64_t cp, int64_t tp,
                  int64_t kvHeadsGlobal, const Machine &machine, bool crossesNodes) {
  const Link &l = crossesNodes ? machine.interNode : machine.intraNode;
  double kv = 2.0 * s.batch * s.seqLocal * s.kvHeads * s.headDim * s.elementBytes;
  double qo = 2.0 * s.batch * s.seqLocal * s.heads * s.headDim * s.elementBytes;
  // Causal attention over the whole sequence for this rank's queries.
  double flops = 2.0 * s.batch * s.seqLocal * (double)(s.seqLocal * cp) * s.heads * s.headDim;
  double compute = flops / machine.flopsPerSecond;
  double treeLatency = std::ceil(std::log2((double)std::max<int64_t>(cp, 2))) * l.latencySeconds;
  CPCommCost c;
  c.kind = kind;
  if (kind == "ring") {
    // cp steps of compute, each overlapped with passing one K,V block on.
    double step = l.latencySeconds + kv / l.bandwidthBytesPerSecond;
    c.seconds = compute / cp + (cp - 1) * std::max(compute / cp, step);
    c.bytesPerRank = (int64_t)((cp - 1) * kv);
    c.residentBytes = (int64_t)(2 * kv);
  } else if (kind == "allgather") {
    c.seconds = treeLatency + (cp - 1) * kv / l.bandwidthBytesPerSecond + compute;
    c.bytesPerRank = (int64_t)((cp - 1) * kv);
    c.residentBytes = (int64_t)(cp * kv);
  } else {
    // Four all-to-alls: q, k, v in and the output back.
    double bytes = (double)(cp - 1) / cp * (qo + kv);
    c.seconds = 4 * treeLatency + bytes / l.bandwidthBytesPerSecond + compute;
    c.bytesPerRank = (int64_t)bytes;
    c.residentBytes = 0;
    if (kvHeadsGlobal % (tp * cp) != 0) {
      c.feasible = false;
      c.why = "kv_heads " + std::to_string(kvHeadsGlobal) + " not divisible by tp*cp " +
              std::to_string(tp * cp);
    }
  }
  if (c.feasible && c.residentBytes > kResidentBudget * machine.memoryBytes) {
    c.feasible = false;
    c.why = "keeps " + std::to_string(c.residentBytes) + " bytes of K,V resident, over " +
            std::to_string((int64_t)(kResidentBudget * machine.memoryBytes)) + " (" +
            std::to_string((int)(kResidentBudget * 100)) + "% of GPU memory)";
  }
  return c;
}

std::pair<std::string, std::vector<CPCommCost>>
chooseCPComm(const AttentionShape &shape, int64_t cp, int64_t tp, int64_t kvHeadsGlobal,
             const Machine &machine, bool crossesNodes) {
  std::vector<CPCommCost> costs;
  for (const char *kind : {"ring", "allgather", "a2a"})
    costs.push_back(costOf(kind, shape, cp, tp, kvHeadsGlobal, machine, crossesNodes));
  std::string best;
  double bestSeconds = 0;
  for (const auto &c : costs)
    if (c.feasible && (best.empty() || c.seconds < bestSeconds)) {
      best = c.kind;
      bestSeconds = c.seconds;
    }
  // Ring needs no resident copy and is always possible: the fallback.
  return {best.empty() ? "ring" : best, costs};
}

} // namespace shardline
