//===- ChooseCPComm.cpp - per-layer context-parallel exchange ------------===//

#include "shardline/Analysis/Machine.h"
#include "shardline/Dialect/SL/IR/SL.h"
#include "shardline/Dialect/SL/Transforms/Passes.h"

#include "mlir/Support/FileUtilities.h"
#include "llvm/Support/MemoryBuffer.h"

#include <map>

namespace mlir::sl {
#define GEN_PASS_DEF_SLCHOOSECPCOMM
#include "shardline/Dialect/SL/Transforms/Passes.h.inc"
} // namespace mlir::sl

using namespace mlir;
using namespace mlir::sl;

namespace {

std::string microseconds(double s) {
  char buf[32];
  snprintf(buf, sizeof(buf), "%.1f us", s * 1e6);
  return buf;
}

/// The size of a strategy axis: the mesh axis `name`, or the two parts
/// `<name>_outer` and `<name>_inner` the importer declares where expert
/// parallelism cuts it (docs/model-spec.md). The pass runs before layouts
/// are propagated, so the mesh is all it can read.
int64_t strategyAxisSize(const shardline::Mesh &m, const std::string &name) {
  int64_t n = m.size(name).value_or(1);
  for (const char *part : {"_outer", "_inner"})
    n *= m.size(name + part).value_or(1);
  return n;
}

struct SLChooseCPComm : mlir::sl::impl::SLChooseCPCommBase<SLChooseCPComm> {
  using SLChooseCPCommBase::SLChooseCPCommBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto mode = module->getAttrOfType<StringAttr>(kCPCommAttr);
    if (!mode || symbolizeCPComm(mode.getValue()) != CPComm::Auto)
      return;
    shardline::Machine machine = shardline::defaultMachine();
    if (!machineFile.empty()) {
      std::string error;
      auto file = openInputFile(machineFile, &error);
      if (!file) {
        module.emitError("sl-choose-cp-comm: ") << error;
        return signalPassFailure();
      }
      std::vector<std::string> errors;
      auto parsed = shardline::parseMachine(file->getBuffer(), machineFile, errors);
      if (!parsed) {
        for (const auto &e : errors)
          module.emitError("sl-choose-cp-comm: ") << e;
        return signalPassFailure();
      }
      machine = *parsed;
    }
    FailureOr<MeshOp> mesh = getModuleMesh(module, "sl-choose-cp-comm");
    if (failed(mesh))
      return signalPassFailure();
    shardline::Mesh m = *mesh ? toMesh(*mesh) : shardline::Mesh{};
    int64_t cp = strategyAxisSize(m, "cp"), tp = strategyAxisSize(m, "tp");
    std::map<std::string, int> votes;
    module.walk([&](AttentionOp op) {
      if (cp < 2)
        return;
      auto q = op.getQ().getType();
      shardline::AttentionShape shape;
      int64_t headDim = q.getShape()[2] / op.getHeads();
      shape.batch = q.getShape()[0];
      shape.seqLocal = q.getShape()[1] / cp;
      shape.heads = std::max<int64_t>(1, op.getHeads() / tp);
      shape.kvHeads = std::max<int64_t>(1, op.getKvHeads() / tp);
      shape.headDim = headDim;
      shape.elementBytes = (q.getElementTypeBitWidth() + 7) / 8;
      bool crossesNodes = cp * tp > machine.gpusPerNode;
      auto [choice, costs] =
          shardline::chooseCPComm(shape, cp, tp, op.getKvHeads(), machine, crossesNodes);
      op->setAttr(kCPCommAttr, StringAttr::get(op->getContext(), choice));
      ++votes[choice];
      std::string text = "cp_comm auto on " + machine.name + " (cp " + std::to_string(cp) +
                         (crossesNodes ? ", across nodes" : ", within a node") + "): ";
      for (size_t i = 0; i < costs.size(); ++i) {
        const auto &c = costs[i];
        text += (i ? "; " : "") + c.kind + " ";
        if (c.feasible)
          text += microseconds(c.seconds) + ", " + std::to_string(c.bytesPerRank) +
                  " bytes sent, " + std::to_string(c.residentBytes) + " bytes resident";
        else
          text += "infeasible: " + c.why;
      }
      text += "; chose " + choice;
      op->emitRemark() << text;
    });
    std::string most = "ring";
    int best = 0;
    for (const auto &[kind, n] : votes)
      if (n > best) {
        most = kind;
        best = n;
      }
    module->setAttr(kCPCommAttr, StringAttr::get(module.getContext(), most));
  }
};

} // namespace
