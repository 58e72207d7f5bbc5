//===- shardline-run.cpp - run a plan on thread ranks ----------------------===//

#include "core/plan.h"
#include "exec/executor.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

using namespace shardline::rt;

namespace {
void usage(FILE *out) {
  std::fprintf(out,
               "usage: shardline-run PLAN.slp [--ranks N] [--seed S] [--weights W.safetensors]\n"
               "                     [--save-weights W.safetensors] [--steps N] [--verify]\n"
               "       MODEL [--ranks N] [--seed S] [--verify]   (an executable from\n"
               "       shardline-compile -o MODEL, which carries its plan)\n\n"
               "Runs a plan from shardline-compile --emit plan on N ranks that are threads of\n"
               "this process (N must be the plan's mesh size; default: that size).\n\n"
               "  --ranks N   number of ranks; must equal the plan's mesh size\n"
               "  --seed S    seed of the weights, tokens and labels (default 1)\n"
               "  --weights W load the weights from a safetensors file (by name; shapes must\n"
               "              match) instead of generating them from the seed\n"
               "  --save-weights W  write the run's weights (whole, f32) to a safetensors file\n"
               "  --steps N   run N forward passes and print the time per step, tokens/s and\n"
               "              the time per op (default 1)\n"
               "  --verify    also run the single-device program of the same model and seed,\n"
               "              compare the outputs (logits and loss), print the largest absolute\n"
               "              and relative errors and PASS or FAIL, and the bytes sent per rank\n"
               "              beside the report's; exit 0 only on PASS\n");
}

bool parseInt(const char *text, int64_t &out) {
  char *end = nullptr;
  long long v = std::strtoll(text, &end, 10);
  if (!end || *end || v < 0 || end == text)
    return false;
  out = v;
  return true;
}
} // namespace

int main(int argc, char **argv) {
  std::string planPath;
  int64_t ranks = -1, seed = 1, steps = 1;
  bool verify = false;
  std::string weightsFile, saveWeightsFile;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    }
    if (a == "--ranks" || a == "--seed" || a == "--steps") {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "shardline-run: error: %s needs a value\n", a.c_str());
        return 1;
      }
      int64_t &target = a == "--ranks" ? ranks : a == "--seed" ? seed : steps;
      if (!parseInt(argv[++i], target)) {
        std::fprintf(stderr, "shardline-run: error: %s needs a non-negative integer, got '%s'\n",
                     a.c_str(), argv[i]);
        return 1;
      }
    } else if (a == "--verify") {
      verify = true;
    } else if (a == "--weights" || a == "--save-weights") {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "shardline-run: error: %s needs a file\n", a.c_str());
        return 1;
      }
      (a == "--weights" ? weightsFile : saveWeightsFile) = argv[++i];
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "shardline-run: error: unknown option '%s'\n", a.c_str());
      usage(stderr);
      return 1;
    } else if (planPath.empty()) {
      planPath = a;
    } else {
      std::fprintf(stderr, "shardline-run: error: one plan at a time ('%s' and '%s')\n",
                   planPath.c_str(), a.c_str());
      return 1;
    }
  }
  std::string error;
  std::optional<LoadedPlan> plan;
  if (planPath.empty()) {
    // A standalone executable carries its plan.
    std::vector<uint8_t> embedded = embeddedPlan("/proc/self/exe");
    if (embedded.empty()) {
      usage(stderr);
      return 1;
    }
    plan = loadPlan(std::move(embedded), error);
    if (!plan)
      error = "the embedded plan: " + error;
  } else {
    plan = loadPlanFile(planPath, error);
  }
  if (!plan) {
    std::fprintf(stderr, "shardline-run: error: %s\n", error.c_str());
    return 1;
  }
  if (ranks >= 0 && ranks != plan->ranks()) {
    std::fprintf(stderr, "shardline-run: error: the plan is for %lld ranks, --ranks says %lld\n",
                 (long long)plan->ranks(), (long long)ranks);
    return 1;
  }
  RunOptions options;
  options.seed = (uint64_t)seed;
  options.weightsFile = weightsFile;
  options.steps = std::max<int64_t>(1, steps);
  options.saveWeightsFile = saveWeightsFile;
  RunResult run = runPlan(*plan, options);
  if (!run.error.empty()) {
    std::fprintf(stderr, "shardline-run: error: %s\n", run.error.c_str());
    return 1;
  }
  std::printf("model %s on %lld ranks (threads), seed %lld\n", plan->root()->model()->c_str(),
              (long long)run.ranks, (long long)seed);
  for (size_t i = 0; i < run.outputs.size(); ++i)
    if (run.outputs[i].size() == 1)
      std::printf("output %zu: %.6f\n", i, run.outputs[i][0]);
  if (steps > 1) {
    const auto *tokensTensor = plan->root()->tensors()->Get(plan->root()->inputs()->Get(0));
    int64_t tokens = tokensTensor->shape()->Get(0) * tokensTensor->shape()->Get(1);
    double perStep = run.seconds / (double)options.steps;
    std::printf("%lld steps: %.3f ms per step, %.0f tokens/s, %.2f us per op\n",
                (long long)options.steps, perStep * 1e3, (double)tokens / perStep,
                perStep * 1e6 / (double)plan->root()->ops()->size());
  }
  std::printf("bytes sent per rank: %lld measured, %lld in the report\n",
              (long long)run.bytesSentPerRank, (long long)plan->root()->comm_bytes_per_rank());
  if (!verify)
    return 0;
  options.singleDevice = true;
  options.saveWeightsFile.clear();
  options.steps = 1;
  RunResult ref = runPlan(*plan, options);
  if (!ref.error.empty()) {
    std::fprintf(stderr, "shardline-run: error: single-device run: %s\n", ref.error.c_str());
    return 1;
  }
  // Relative error of an output: its largest absolute error over its largest
  // reference magnitude (elementwise ratios blow up on values near zero).
  double maxAbs = 0, maxRel = 0;
  for (size_t i = 0; i < run.outputs.size(); ++i) {
    double abs = 0, scale = 0;
    for (size_t k = 0; k < run.outputs[i].size(); ++k) {
      abs = std::max(abs, (double)std::fabs(run.outputs[i][k] - ref.outputs[i][k]));
      scale = std::max(scale, (double)std::fabs(ref.outputs[i][k]));
    }
    maxAbs = std::max(maxAbs, abs);
    maxRel = std::max(maxRel, scale > 0 ? abs / scale : abs);
  }
  bool bytesMatch = run.bytesSentPerRank == plan->root()->comm_bytes_per_rank();
  bool pass = maxRel <= 1e-4 && bytesMatch;
  std::printf("verify against the single-device run: max abs error %.3g, max rel error %.3g; "
              "bytes %s the report\n",
              maxAbs, maxRel, bytesMatch ? "match" : "DO NOT match");
  std::printf("%s\n", pass ? "PASS" : "FAIL");
  return pass ? 0 : 1;
}
