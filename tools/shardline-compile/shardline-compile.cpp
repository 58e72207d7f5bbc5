//===- shardline-compile.cpp - model graph -> IR, report, plan ------------===//
//
// Reads a model spec (.json) or sl IR (.mlir), verifies it and writes what
// --emit asks for.
//
//===----------------------------------------------------------------------===//

#include "shardline/Analysis/Report.h"
#include "shardline/Dialect/SL/Transforms/Passes.h"
#include "shardline/InitAll.h"
#include "shardline/Model/BlockFamily.h"
#include "shardline/Model/ModelSpec.h"
#include "shardline/Plan/EmitPlan.h"

#include "core/plan.h"

#include "mlir/IR/AsmState.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/raw_ostream.h"

#include <map>

using namespace mlir;
namespace cl = llvm::cl;

namespace {
cl::OptionCategory category("shardline-compile options");
cl::OptionCategory parallelCategory(
    "Parallel strategy (model specs only; overrides the spec's \"parallel\" section)");

cl::opt<std::string> inputFile(cl::Positional, cl::desc("<MODEL.json | IR.mlir>"), cl::Required,
                               cl::cat(category));
cl::opt<std::string> outputFile("o", cl::desc("Output file (default: stdout)"),
                                cl::value_desc("FILE"), cl::init("-"), cl::cat(category));

enum class Emit { MLIR, Global, Rank, Summary, Report, Plan, Executable };
cl::opt<Emit>
    emit("emit", cl::desc("What to write:"), cl::init(Emit::MLIR),
         cl::values(clEnumValN(Emit::MLIR, "mlir",
                               "the sharded program after sl-shard-pipeline (default)"),
                    clEnumValN(Emit::Global, "global",
                               "the imported global-view program, before any pass"),
                    clEnumValN(Emit::Rank, "rank",
                               "the program of one rank (--rank) after sl-partition: local "
                               "shapes, upstream shard collectives, positions resolved"),
                    clEnumValN(Emit::Summary, "summary",
                               "a readable summary: mesh, blocks, ops, parameters, collectives"),
                    clEnumValN(Emit::Report, "report",
                               "the report as a table: every collective with its bytes per rank"),
                    clEnumValN(Emit::Plan, "plan",
                               "the plan for the runtime (binary, runtime/schema/plan.fbs; "
                               "needs -o)"),
                    clEnumValN(Emit::Executable, "exe",
                               "a standalone executable that runs the plan (shardline-run "
                               "with the plan inside; needs -o)")),
         cl::cat(category));
cl::opt<int64_t> rankOption("rank",
                            cl::desc("The rank whose program --emit rank writes (default 0)"),
                            cl::value_desc("R"), cl::init(0), cl::cat(category));
cl::opt<std::string>
    machineFile("machine",
                cl::desc("Machine description for --cp-comm auto (examples/machines/8xH100.json, "
                         "8xH200.json; default: 8xH100)"),
                cl::value_desc("FILE.json"), cl::cat(category));
cl::opt<std::string> reportFile("report",
                                cl::desc("Also write the JSON report (collectives, bytes, weights, "
                                         "peak activations per rank) to FILE"),
                                cl::value_desc("FILE.json"), cl::cat(category));
cl::opt<std::string> reportHtml("report-html",
                                cl::desc("Also write the report as an HTML page with a chart of "
                                         "bytes and residency per block"),
                                cl::value_desc("FILE.html"), cl::cat(category));

cl::opt<bool>
    train("train",
          cl::desc("Compile a training step: after the forward's collectives, "
                   "sl-autodiff appends the backward program, the global gradient "
                   "norm and an AdamW update of every parameter; the plan returns "
                   "the loss and every gradient (grad.<name>). shardline-run "
                   "--train runs it. f32 or bf16 models; a bf16 parameter trains through an "
                   "f32 main copy with f32 moments, as Megatron's --bf16 (f16 is "
                   "refused: no loss scaling)"),
          cl::cat(category));

cl::opt<bool> saveGathered(
    "save-gathered",
    cl::desc("With --train: keep the all-gathered inputs of column-parallel layers (and "
             "gathered K, V) for the backward instead of gathering them again from the saved "
             "shard, as Megatron does by default: fewer bytes, more activation memory"),
    cl::cat(category));

cl::opt<bool> gradReduceInBf16(
    "grad-reduce-in-bf16",
    cl::desc("With --train, for a bf16 model: compute and reduce the parameters' gradients in "
             "bf16, as Megatron's --grad-reduce-in-bf16 (their dp/cp/tp reductions move half "
             "the bytes; AdamW still updates the f32 main copies). By default they are f32, "
             "as Megatron accumulates and reduces them"),
    cl::cat(category));

cl::opt<int64_t> tp("tensor-model-parallel-size",
                    cl::desc("Tensor-parallel size (mesh axis tp); short form --tp"),
                    cl::cat(parallelCategory));
cl::alias tpA("tp", cl::desc("Alias for --tensor-model-parallel-size"), cl::aliasopt(tp));
cl::opt<bool> sp("sequence-parallel",
                 cl::desc("Keep activations between tensor-parallel regions sequence-sharded "
                          "over tp (short form --sp; --sp=false turns it off)"),
                 cl::cat(parallelCategory));
cl::alias spA("sp", cl::desc("Alias for --sequence-parallel"), cl::aliasopt(sp));
cl::opt<int64_t> cp("context-parallel-size",
                    cl::desc("Context-parallel size (mesh axis cp); short form --cp"),
                    cl::cat(parallelCategory));
cl::alias cpA("cp", cl::desc("Alias for --context-parallel-size"), cl::aliasopt(cp));
cl::opt<std::string> cpComm("cp-comm-type",
                            cl::desc("Attention under context parallelism: ring | allgather | "
                                     "a2a | auto; short form --cp-comm"),
                            cl::cat(parallelCategory));
cl::alias cpCommA("cp-comm", cl::desc("Alias for --cp-comm-type"), cl::aliasopt(cpComm));
cl::opt<std::string> cpOrder("cp-order",
                             cl::desc("Sequence chunk order under context parallelism: zigzag "
                                      "(default, balances causal attention) | contiguous"),
                             cl::cat(parallelCategory));
cl::opt<int64_t>
    ep("expert-model-parallel-size",
       cl::desc("Expert-parallel size, folded onto the dp*cp*tp ranks as in Megatron Core: "
                "the experts are split over groups of ep ranks next to the --etp group "
                "(with etp 1, ep consecutive ranks), taken from tp (under --sp), then cp, "
                "then dp; adds no ranks. Short form --ep"),
       cl::cat(parallelCategory));
cl::alias epA("ep", cl::desc("Alias for --expert-model-parallel-size"), cl::aliasopt(ep));
cl::opt<int64_t>
    etp("expert-tensor-parallel-size",
        cl::desc("Expert-tensor-parallel size, as in Megatron Core: the expert layers' own tp, "
                 "folded onto the innermost ranks that hold different tokens, with the ep group "
                 "next to it; the expert weights are split over it on ffn (w_gate, w_up "
                 "column-parallel, w_down row-parallel) and the dispatched rows gathered over it. "
                 "Default 1. Short form --etp"),
        cl::cat(parallelCategory));
cl::alias etpA("etp", cl::desc("Alias for --expert-tensor-parallel-size"), cl::aliasopt(etp));
cl::opt<int64_t> dp("data-parallel-size",
                    cl::desc("Data-parallel size (mesh axis dp); short form --dp"),
                    cl::cat(parallelCategory));
cl::alias dpA("dp", cl::desc("Alias for --data-parallel-size"), cl::aliasopt(dp));

cl::opt<double> moeCapacityFactor(
    "moe-expert-capacity-factor",
    cl::desc("Capacity mode of the MoE dispatch (sets moe.capacity_factor), as Megatron runs it "
             "with --moe-pad-expert-input-to-capacity: each group of tokens a rank holds sends "
             "at most ceil(F * top_k * tokens / experts) rows to each expert, in buffers "
             "always padded to that; the rest are dropped (the residual carries them). "
             "Without it the dispatch is dropless"),
    cl::value_desc("F"), cl::cat(parallelCategory));
cl::opt<std::string>
    moeTokenDropPolicy("moe-token-drop-policy",
                       cl::desc("Which rows capacity mode keeps (sets moe.token_drop_policy): "
                                "probs (default; the largest routing weights) | position (the "
                                "first tokens of the group)"),
                       cl::cat(parallelCategory));

cl::opt<bool> bf16("bf16",
                   cl::desc("Hold the model in bfloat16 (sets \"dtype\" to bf16), as "
                            "Megatron's --bf16: with --train each parameter trains "
                            "through an f32 main copy with f32 AdamW moments"),
                   cl::cat(category));
cl::opt<bool> fp16("fp16",
                   cl::desc("Hold the model in float16 (sets \"dtype\" to f16); its "
                            "forward only: training in f16, Megatron's --fp16, needs "
                            "loss scaling, which is not built"),
                   cl::cat(category));

bool anyParallelFlag() {
  return tp.getNumOccurrences() || sp.getNumOccurrences() || cp.getNumOccurrences() ||
         cpComm.getNumOccurrences() || cpOrder.getNumOccurrences() || ep.getNumOccurrences() ||
         etp.getNumOccurrences() || dp.getNumOccurrences() ||
         moeCapacityFactor.getNumOccurrences() || moeTokenDropPolicy.getNumOccurrences();
}

shardline::ParallelOverrides overrides() {
  shardline::ParallelOverrides o;
  if (tp.getNumOccurrences())
    o.tp = tp;
  if (sp.getNumOccurrences())
    o.sp = sp;
  if (cp.getNumOccurrences())
    o.cp = cp;
  if (cpComm.getNumOccurrences())
    o.cpComm = cpComm;
  if (cpOrder.getNumOccurrences())
    o.cpOrder = cpOrder;
  if (ep.getNumOccurrences())
    o.ep = ep;
  if (etp.getNumOccurrences())
    o.etp = etp;
  if (dp.getNumOccurrences())
    o.dp = dp;
  if (moeCapacityFactor.getNumOccurrences())
    o.moeCapacityFactor = moeCapacityFactor;
  if (moeTokenDropPolicy.getNumOccurrences())
    o.moeTokenDropPolicy = moeTokenDropPolicy;
  return o;
}

void printSummary(ModuleOp module, const shardline::ModelSpec *spec,
                  const shardline::Report &report, llvm::raw_ostream &os) {
  sl::MeshOp mesh;
  module.walk([&](sl::MeshOp m) {
    if (!mesh)
      mesh = m;
  });
  if (spec) {
    os << "model " << spec->name << ": pattern " << spec->pattern << " (" << spec->pattern.size()
       << " blocks), hidden " << spec->hidden << ", seq " << spec->seq << ", batch " << spec->batch
       << ", vocab " << spec->vocab << ", " << spec->dtype << "\n";
    const auto &p = spec->parallel;
    os << "strategy: dp=" << p.dp << " cp=" << p.cp << " tp=" << p.tp << " ep=" << p.ep;
    if (p.etp > 1)
      os << " etp=" << p.etp;
    os << ", sp " << (p.sp ? "on" : "off") << ", cp_comm " << p.cpComm << ", cp_order " << p.cpOrder
       << "\n";
    std::string error;
    if (auto folded = shardline::foldStrategyMesh(p, error); folded && (p.ep > 1 || p.etp > 1)) {
      // The expert-data ranks hold other tokens outside the expert and
      // expert-tensor groups: the expert weights' gradients are reduced over
      // them.
      std::vector<std::string> group = folded->parts["ep"], tensor = folded->parts["etp"], data;
      for (const char *axis : {"dp", "cp", "tp"})
        for (const std::string &part : folded->parts[axis])
          if ((std::string(axis) != "tp" || p.sp) && folded->size(part) > 1 &&
              llvm::find(group, part) == group.end() && llvm::find(tensor, part) == tensor.end())
            data.push_back(part);
      os << "experts: ep=" << p.ep;
      if (p.etp > 1)
        os << " etp=" << p.etp;
      os << " folded onto ";
      if (p.etp > 1 && p.ep > 1)
        os << "ep " << shardline::formatAxes(group) << " and etp " << shardline::formatAxes(tensor);
      else if (p.etp > 1)
        os << "etp " << shardline::formatAxes(tensor);
      else
        os << shardline::formatAxes(group);
      os << ", expert-data ranks " << (data.empty() ? "none" : shardline::formatAxes(data)) << "\n";
    }
    for (const shardline::BlockFamily *f : shardline::blockFamilies())
      if (const shardline::FamilySection *s = spec->section(f->letter());
          s && spec->pattern.find(f->letter()) != std::string::npos)
        if (std::string line = f->summary(*s, *spec); !line.empty())
          os << line << "\n";
  }
  shardline::Mesh m;
  if (mesh) {
    m = sl::toMesh(mesh);
    os << "mesh @" << mesh.getSymName() << ":";
    for (auto &[name, n] : m.axes)
      os << " " << name << "=" << n;
    os << " (" << m.numRanks() << " ranks)\n";
  }
  std::map<std::string, int64_t> opCounts;
  int64_t values = 0, annotated = 0, params = 0, paramsPerRank = 0, numWeights = 0;
  module.walk([&](Operation *op) {
    if (op->getDialect() && op->getDialect()->getNamespace() == "sl")
      ++opCounts[op->getName().getStringRef().str()];
    for (Value v : op->getResults()) {
      if (!isa<RankedTensorType>(v.getType()))
        continue;
      ++values;
      if (sl::getLayout(v))
        ++annotated;
    }
    if (auto w = dyn_cast<sl::WeightOp>(op)) {
      ++numWeights;
      auto t = w.getResult().getType();
      std::vector<int64_t> shape(t.getShape().begin(), t.getShape().end());
      params += shardline::numElements(shape);
      sl::LayoutAttr l = sl::getLayout(t);
      paramsPerRank += shardline::numElements(
          l && mesh ? shardline::localShape(sl::toLayout(l), m, shape) : shape);
    }
  });
  int64_t total = 0;
  for (auto &kv : opCounts)
    total += kv.second;
  os << "ops: " << total << " sl ops";
  for (auto &[name, n] : opCounts)
    os << "\n  " << name << " " << n;
  os << "\nparameters: " << numWeights << " tensors, " << params << " elements; " << paramsPerRank
     << " elements per rank\n";
  os << "layouts: " << annotated << " of " << values << " op results carry a layout\n";
  os << "collectives: " << report.collectives.size();
  for (const auto &[op, n] : report.collectiveCounts)
    os << ", " << op << " " << n;
  os << "; " << report.commBytesPerRank << " bytes sent per rank\n";
  os << "memory per rank: weights " << report.weightBytesPerRank << " bytes, peak activations "
     << report.peakActivationBytesPerRank << " bytes\n";
  os << "verified: ok\n";
}
} // namespace

/// Diagnostics as "NAME at FILE:LINE:COL: error: message" (describeLocation).
static LogicalResult printDiagnostic(Diagnostic &diag) {
  llvm::errs() << shardline::describeLocation(diag.getLocation()) << ": ";
  switch (diag.getSeverity()) {
  case DiagnosticSeverity::Error:
    llvm::errs() << "error: ";
    break;
  case DiagnosticSeverity::Warning:
    llvm::errs() << "warning: ";
    break;
  case DiagnosticSeverity::Remark:
    llvm::errs() << "remark: ";
    break;
  case DiagnosticSeverity::Note:
    llvm::errs() << "note: ";
    break;
  }
  llvm::errs() << diag.str() << "\n";
  return success();
}

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  mlir::registerAsmPrinterCLOptions();
  mlir::registerMLIRContextCLOptions();
  cl::HideUnrelatedOptions({&category, &parallelCategory});
  cl::ParseCommandLineOptions(
      argc, argv,
      "shardline-compile: compile a hybrid model graph for sequence- and context-parallel "
      "training\n\n"
      "The input is a model spec (.json, see docs/model-spec.md) or sl IR (.mlir). A spec is\n"
      "imported into the global-view sl program with the parallel strategy of its \"parallel\"\n"
      "section, which the flags below override. The program is verified, then sl-shard-pipeline\n"
      "propagates layouts, inserts collectives and removes premature gathers (docs/passes.md);\n"
      "with --train, sl-autodiff appends the backward and the AdamW step (docs/training.md).\n"
      "The ranks are dp*cp*tp; ep and etp add none: as in Megatron Core, they fold onto them\n"
      "(docs/model-spec.md).\n\n"
      "  shardline-compile examples/models/nam56r-tiny.json --tp 2 --sp --cp 2 --dp 2 --ep 2 "
      "--emit summary\n"
      "  shardline-compile examples/models/gpt-dense.json --tp 2 --sp --report r.json "
      "--report-html "
      "r.html\n");

  if (saveGathered && !train) {
    llvm::errs() << "shardline-compile: error: --save-gathered chooses what a training step "
                    "keeps for its backward: give --train too\n";
    return 1;
  }
  if (gradReduceInBf16 && !train) {
    llvm::errs() << "shardline-compile: error: --grad-reduce-in-bf16 sets the type of a training "
                    "step's gradients: give --train too\n";
    return 1;
  }
  if (bf16 && fp16) {
    llvm::errs() << "shardline-compile: error: --bf16 and --fp16 each choose the model's type: "
                    "give one\n";
    return 1;
  }
  if (train && emit == Emit::Global) {
    llvm::errs() << "shardline-compile: error: --emit global writes the imported forward "
                    "program, before any pass: --train builds its backward in the pipeline\n";
    return 1;
  }

  DialectRegistry registry;
  shardline::registerAllDialects(registry);
  MLIRContext ctx(registry);
  ctx.loadAllAvailableDialects();

  std::string error;
  auto input = openInputFile(inputFile, &error);
  if (!input) {
    llvm::errs() << "shardline-compile: error: " << error << "\n";
    return 1;
  }

  OwningOpRef<ModuleOp> module;
  std::optional<shardline::ModelSpec> spec;
  bool isSpec = llvm::StringRef(inputFile).ends_with(".json");
  if (isSpec) {
    std::vector<std::string> errors;
    spec = shardline::parseModelSpec(input->getBuffer(), inputFile, overrides(), errors);
    if (!spec) {
      for (const auto &e : errors)
        llvm::errs() << e << "\n";
      llvm::errs() << "shardline-compile: error: invalid model spec (" << errors.size()
                   << " problem" << (errors.size() == 1 ? "" : "s") << ")\n";
      return 1;
    }
    if (bf16 || fp16) {
      spec->dtype = bf16 ? "bf16" : "f16";
      spec->fromFlags.emplace_back("dtype", bf16 ? "bf16" : "fp16");
    }
    if (train && spec->dtype == "f16") {
      // sl-autodiff refuses f16 parameters too; here the message can point
      // at the key or flag that chose them.
      llvm::errs() << (fp16 ? "shardline-compile: error: --fp16 with --train"
                            : shardline::specKeyLocation(*spec, "dtype") +
                                  "error: \"dtype\" is f16 with --train")
                   << ": training in f16 needs loss scaling (Megatron's --fp16), which is not "
                      "built; train the model in bf16 (--bf16: f32 main copies, as Megatron's) "
                      "or f32\n";
      return 1;
    }
    {
      // The importer's errors are at the spec's blocks: name them as the pipeline does.
      ScopedDiagnosticHandler diagnostics(&ctx, printDiagnostic);
      module = shardline::importModel(*spec, ctx);
    }
    if (!module) {
      llvm::errs() << "shardline-compile: error: the model spec cannot be imported\n";
      return 1;
    }
  } else {
    if (anyParallelFlag()) {
      llvm::errs() << "shardline-compile: error: the parallel strategy flags apply to model "
                      "specs (.json); IR states its layouts itself\n";
      return 1;
    }
    if (bf16 || fp16) {
      llvm::errs() << "shardline-compile: error: --" << (bf16 ? "bf16" : "fp16")
                   << " sets a model spec's \"dtype\" (.json); IR states its types itself\n";
      return 1;
    }
    llvm::SourceMgr sourceMgr;
    sourceMgr.AddNewSourceBuffer(std::move(input), llvm::SMLoc());
    SourceMgrDiagnosticHandler handler(sourceMgr, &ctx);
    module = parseSourceFile<ModuleOp>(sourceMgr, &ctx);
    if (!module)
      return 1;
  }
  if (failed(verify(*module))) {
    llvm::errs() << "shardline-compile: error: the program does not verify\n";
    return 1;
  }
  if (emit != Emit::Global) {
    // Remarks (sl-choose-cp-comm's choices) and warnings go to stderr too.
    ScopedDiagnosticHandler diagnostics(&ctx, printDiagnostic);
    PassManager pm(&ctx);
    sl::buildShardPipeline(pm, machineFile, train, saveGathered, gradReduceInBf16);
    if (failed(pm.run(*module))) {
      llvm::errs() << "shardline-compile: error: sl-shard-pipeline failed\n";
      return 1;
    }
  }
  if (rankOption.getNumOccurrences() && emit != Emit::Rank) {
    llvm::errs() << "shardline-compile: error: --rank goes with --emit rank\n";
    return 1;
  }
  auto writeFile = [&](const std::string &path, const std::string &text) {
    std::string err;
    auto file = openOutputFile(path, &err);
    if (!file) {
      llvm::errs() << "shardline-compile: error: " << err << "\n";
      return false;
    }
    file->os() << text;
    file->keep();
    return true;
  };
  // One analysis of the global view serves the summary, the table and the files.
  std::optional<shardline::Report> analysis;
  auto report = [&]() -> const shardline::Report & {
    if (!analysis)
      analysis = shardline::analyze(*module);
    return *analysis;
  };
  if (!reportFile.empty() && !writeFile(reportFile, shardline::toJson(report()) + "\n"))
    return 1;
  if (!reportHtml.empty() && !writeFile(reportHtml, shardline::toHtml(report())))
    return 1;

  if ((emit == Emit::Plan || emit == Emit::Executable) && outputFile == "-") {
    llvm::errs() << "shardline-compile: error: --emit " << (emit == Emit::Plan ? "plan" : "exe")
                 << " writes a binary file: give -o FILE\n";
    return 1;
  }
  auto output = openOutputFile(outputFile, &error);
  if (!output) {
    llvm::errs() << "shardline-compile: error: " << error << "\n";
    return 1;
  }
  if (emit == Emit::Rank) {
    // After the report (which reads the global view): one rank's program.
    PassManager pm(&ctx);
    sl::SLPartitionOptions options;
    options.rank = rankOption;
    pm.addPass(sl::createSLPartition(options));
    if (failed(pm.run(*module))) {
      llvm::errs() << "shardline-compile: error: sl-partition failed\n";
      return 1;
    }
  }
  switch (emit) {
  case Emit::MLIR:
  case Emit::Global:
  case Emit::Rank:
    module->print(output->os());
    output->os() << "\n";
    break;
  case Emit::Summary:
    printSummary(*module, spec ? &*spec : nullptr, report(), output->os());
    break;
  case Emit::Report:
    shardline::printTable(report(), output->os());
    break;
  case Emit::Plan:
  case Emit::Executable: {
    FailureOr<std::vector<uint8_t>> plan = shardline::emitPlan(*module, report());
    if (failed(plan))
      return 1;
    if (emit == Emit::Executable) {
      // shardline-run sits beside this tool; the plan rides at its end.
      std::string self = llvm::sys::fs::getMainExecutable(argv[0], (void *)&printSummary);
      llvm::SmallString<256> runner(llvm::sys::path::parent_path(self));
      llvm::sys::path::append(runner, "shardline-run");
      auto binary = llvm::MemoryBuffer::getFile(runner, /*IsText=*/false);
      if (!binary) {
        llvm::errs() << "shardline-compile: error: cannot read " << runner << " ("
                     << binary.getError().message() << "); it is built with the runtime\n";
        return 1;
      }
      output->os() << (*binary)->getBuffer();
      std::vector<uint8_t> tail = shardline::rt::executableTail(*plan);
      output->os().write(reinterpret_cast<const char *>(tail.data()), tail.size());
      output->keep();
      output->os().flush();
      llvm::sys::fs::setPermissions(outputFile, llvm::sys::fs::all_read | llvm::sys::fs::all_exe |
                                                    llvm::sys::fs::owner_write);
      return 0;
    }
    output->os().write(reinterpret_cast<const char *>(plan->data()), plan->size());
    break;
  }
  }
  output->keep();
  return 0;
}
